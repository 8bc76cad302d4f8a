"""A fleet of two robots in one Prometheus, both topologies, with the real binaries.

Two robots = two rosbridges (own DDS domains), two real `edgeprof serve` daemons (tiny-test
preset, synthetic weights, hf-static on the CPU) with their own `robot`/`site` identity, and
two rclpy robot nodes sending requests. Watching them (configs from dashboards/fleet/, only
ports, paths and intervals changed):
  pull: a central Prometheus finds both daemons through file_sd_configs;
  push: each robot runs Prometheus in agent mode (--enable-feature=agent) remote_writing to
        a central Prometheus with --web.enable-remote-write-receiver.
Asserted on both centrals: every dashboard query answers per robot (the `robot` variable set
to each), the recording rules give one series per robot, and both centrals agree.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml
from prom_helpers import Prom, wait_until

from edgeprof import dashboards
from edgeprof.paths import REPO_ROOT
from edgeprof.ros.robot import RobotProcess
from edgeprof.ros.rosbridge import free_port, start_rosbridge

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("prometheus") is None,
                                 reason="needs the Prometheus server: apt-get install -y prometheus")]
FLEET = REPO_ROOT / "dashboards" / "fleet"
ROBOTS = {"robot-a": "lab-1", "robot-b": "lab-2"}  # robot -> site
STARTUP_S = 240  # two model loads on a busy 2-core machine


def shipped(name: str) -> dict:
    cfg = yaml.safe_load((FLEET / name).read_text())
    cfg.setdefault("global", {}).update(scrape_interval="1s", evaluation_interval="1s")  # a fast test
    if "rule_files" in cfg:
        cfg["rule_files"] = [str(FLEET / f) for f in cfg["rule_files"]]
    return cfg


def central_pull(tmp: Path, targets: list[str]) -> Prom:
    sd = tmp / "robots"
    sd.mkdir()
    example = yaml.safe_load((FLEET / "robots" / "example.yml").read_text())
    (sd / "fleet.yml").write_text(yaml.safe_dump([{**example[0], "targets": targets}]))
    cfg = shipped("central-pull.yml")
    sdc = cfg["scrape_configs"][0]["file_sd_configs"][0]
    sdc["files"], sdc["refresh_interval"] = [str(sd / "*.yml")], "1s"
    return Prom(tmp, "central-pull", cfg)


def agent(tmp: Path, robot: str, target: str, central: Prom) -> Prom:
    cfg = shipped("agent.yml")
    cfg["global"].pop("evaluation_interval")  # agents evaluate no rules
    cfg["scrape_configs"][0]["static_configs"][0]["targets"] = [target]
    cfg["remote_write"][0]["url"] = central.url + "/api/v1/write"
    cfg["remote_write"][0]["queue_config"]["batch_send_deadline"] = "1s"
    return Prom(tmp, f"agent-{robot}", cfg, "--enable-feature=agent", agent=True)


class Daemon:
    def __init__(self, tmp: Path, robot: str, site: str, bridge_port: int) -> None:
        self.metrics_port = free_port()
        cfg = tmp / f"{robot}.yaml"
        # a generous connect timeout: two daemons, two bridges and four Prometheus start at once
        cfg.write_text(yaml.safe_dump({"warmup_steps": 1, "identity": {"robot": robot, "site": site},
                                       "bridge": {"connect_timeout_s": 30.0}}))
        self.log_path = tmp / f"{robot}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgeprof.cli", "serve", "--config", str(cfg), "--model", "tiny-test",
             "--backend", "hf-static", "--device", "cpu", "--port", str(bridge_port), "--max-ctx", "128",
             "--metrics-port", str(self.metrics_port), "--runlog", str(tmp / f"{robot}.db")],
            cwd=REPO_ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fleet")
    domains = random.sample(range(1, 200), len(ROBOTS))
    with ExitStack() as stack:
        daemons, robots = {}, {}
        for (robot, site), domain in zip(ROBOTS.items(), domains, strict=True):
            rb = stack.enter_context(start_rosbridge(0, domain_id=domain, log_path=tmp / f"rosbridge-{robot}.log"))
            daemons[robot] = Daemon(tmp, robot, site, rb.port)
            stack.callback(daemons[robot].stop)
        targets = {r: f"127.0.0.1:{d.metrics_port}" for r, d in daemons.items()}
        pull = central_pull(tmp, list(targets.values()))
        stack.callback(pull.stop)
        push = Prom(tmp, "central-push", shipped("central-push.yml"), "--web.enable-remote-write-receiver")
        stack.callback(push.stop)
        for robot, target in targets.items():
            stack.callback(agent(tmp, robot, target, push).stop)
        for (robot, d), domain in zip(daemons.items(), domains, strict=True):
            robots[robot] = RobotProcess(domain)
            stack.callback(robots[robot].close)
            try:
                robots[robot].wait_ready(STARTUP_S)
            except Exception:
                pytest.fail(f"{robot}'s daemon did not come up:\n{d.log_path.read_text()[-3000:]}")
        # counters seen at zero by both centrals first, so rate() covers every token
        for central in (pull, push):
            wait_until(lambda c=central: set(c.by_robot("edgeprof_tokens_total")) == set(ROBOTS), 60,
                       f"{central.name} to see both robots")
        sent = {}
        for robot, node in robots.items():
            sent[robot] = 0
            for i, prompt in enumerate(("hello fleet", "second request")):
                recs = node.send_request(prompt=prompt, max_new_tokens=12, request_id=f"{robot}-{i}", reset=True,
                                         timeout_s=120)
                assert recs[-1].get("done"), recs[-1]
                sent[robot] += recs[-1]["n_tokens"]
        for central in (pull, push):
            wait_until(lambda c=central: c.by_robot("sum by (robot) (edgeprof_tokens_total)") == sent, 60,
                       f"{central.name} to count every token")
            wait_until(lambda c=central: set(c.by_robot(dashboards.RECORDED[1])) == set(ROBOTS), 60,
                       f"{central.name}'s recording rules")
        time.sleep(2.5)  # a few more scrapes and evaluations after the last token
        yield {"pull": pull, "push": push}, sent


@pytest.mark.parametrize("topology", ["pull", "push"])
@pytest.mark.parametrize("robot", sorted(ROBOTS))
def test_every_dashboard_query_answers_per_robot(fleet, topology, robot):
    central = fleet[0][topology]
    results = dashboards.check(central.url, json.loads(dashboards.DASHBOARD_PATH.read_text()), window="5m",
                               variables={"robot": robot})
    failed = [(r.panel, r.ref, r.status, r.expr) for r in results if r.failed]
    assert not failed, failed
    assert sum(r.status == "ok" for r in results) >= 20
    assert all("no NVML" in r.detail or r.detail == "no alert firing" for r in results if r.status == "optional")
    # the robot filter really selects: this robot's run only, with its site
    info = central.query(f'edgeprof_info{{robot="{robot}"}}')
    assert len(info) == 1 and info[0]["metric"]["site"] == ROBOTS[robot]


@pytest.mark.parametrize("topology", ["pull", "push"])
def test_recorded_series_one_per_robot_and_every_series_has_identity(fleet, topology):
    central = fleet[0][topology]
    for name in dashboards.RECORDED[:3]:
        got = {r["metric"]["robot"]: r["metric"]["site"] for r in central.query(name)}
        assert got == ROBOTS, name
    assert central.query('{__name__=~"edgeprof_.+", robot=""}') == []  # no series without a robot
    assert all(r["value"][1] == "1" for r in central.query("edgeprof_bridge_connected"))
    rules = central.api("/api/v1/rules")["groups"]
    assert {g["name"] for g in rules} == {"edgeprof-recording", "edgeprof-alerts"}
    assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules


def test_pull_finds_robots_by_file_sd_and_push_receives_without_scraping(fleet):
    (centrals, sent) = fleet
    pull, push = centrals["pull"], centrals["push"]
    pull_targets = pull.api("/api/v1/targets")["activeTargets"]
    assert len(pull_targets) == 2 and all(t["health"] == "up" for t in pull_targets)
    assert all(t["discoveredLabels"]["__meta_filepath"].endswith("fleet.yml") for t in pull_targets)
    assert push.api("/api/v1/targets")["activeTargets"] == []  # everything arrived by remote_write
    assert len(push.query('up{job="edgeprof"}')) == 2  # the agents' scrape health came along
    for central in (pull, push):
        assert central.by_robot("sum by (robot) (edgeprof_tokens_total)") == sent
