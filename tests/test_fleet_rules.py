"""The fleet rules and Prometheus configs (dashboards/fleet/) through the real promtool:
`promtool check rules`, `promtool test rules` (each alert a firing and a quiet case), and
`promtool check config` for the three Prometheus roles."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from edgeprof.paths import REPO_ROOT

FLEET = REPO_ROOT / "dashboards" / "fleet"
ALERTS = {"EdgeprofDeadlineMissRateHigh", "EdgeprofStepLatencyP99AboveSLO", "EdgeprofFloorFractionRegression",
          "EdgeprofGpuThrottledWhileDecoding", "EdgeprofDaemonDown", "EdgeprofTargetDown", "EdgeprofBridgeDisconnected"}

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None,
                                reason="promtool comes with the Prometheus server: apt-get install -y prometheus")


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, cwd=FLEET)


def test_check_rules():
    out = promtool("check", "rules", "edgeprof.rules.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 13 rules found" in out.stdout


def test_rule_unit_tests_pass():
    out = promtool("test", "rules", "edgeprof.rules.test.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_has_a_firing_and_a_quiet_case():
    rules = yaml.safe_load((FLEET / "edgeprof.rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == ALERTS
    tests = yaml.safe_load((FLEET / "edgeprof.rules.test.yml").read_text())["tests"]
    for name in alerts:
        cases = [(t, c) for t in tests for c in t.get("alert_rule_test", []) if c["alertname"] == name]
        assert cases, f"{name}: no promtool test"
        fired_for = {a["exp_labels"].get("robot") or a["exp_labels"].get("instance")
                     for _, c in cases for a in c["exp_alerts"]}
        series = " ".join(s["series"] for t, _ in cases for s in t["input_series"])
        # the case fires for one robot/instance, and the same test feeds at least one more that must stay quiet
        assert fired_for, f"{name}: no firing case"
        fed = {v for v in ("a", "b", "c", "10.0.0.1:9464", "10.0.0.2:9464") if f'"{v}"' in series}
        assert fed - fired_for, f"{name}: no quiet robot in its test"


def test_a_broken_threshold_fails_the_unit_tests(tmp_path):
    # the quiet cases bite: loosen the deadline-miss threshold and promtool must fail
    rules = (FLEET / "edgeprof.rules.yml").read_text().replace("ratio_rate5m > 0.01", "ratio_rate5m > 0.001")
    (tmp_path / "edgeprof.rules.yml").write_text(rules)
    shutil.copy(FLEET / "edgeprof.rules.test.yml", tmp_path)
    out = subprocess.run(["promtool", "test", "rules", "edgeprof.rules.test.yml"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode != 0 and "EdgeprofDeadlineMissRateHigh" in out.stdout + out.stderr


@pytest.mark.parametrize("config, flags", [("central-pull.yml", []), ("central-push.yml", []),
                                           ("agent.yml", ["--agent"])])
def test_prometheus_configs_are_valid(config, flags):
    out = promtool("check", "config", *flags, config)
    assert out.returncode == 0, out.stdout + out.stderr


def test_configs_listen_on_loopback_with_explicit_ports():
    for name in ("central-pull.yml", "central-push.yml", "agent.yml"):
        text = (FLEET / name).read_text()
        assert "--web.listen-address=127.0.0.1:909" in text, name
    agent = yaml.safe_load((FLEET / "agent.yml").read_text())
    assert agent["remote_write"][0]["url"] == "http://127.0.0.1:9095/api/v1/write"
    assert agent["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9464"]
    pull = yaml.safe_load((FLEET / "central-pull.yml").read_text())
    assert pull["scrape_configs"][0]["file_sd_configs"][0]["files"] == ["robots/*.yml"]
    for entry in yaml.safe_load((FLEET / "robots" / "example.yml").read_text()):
        assert not {"robot", "site"} & set(entry.get("labels", {})), "identity comes from the daemon"
