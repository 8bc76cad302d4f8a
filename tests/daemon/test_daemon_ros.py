"""The real daemon over the real bridge: a rosbridge process, `edgeprof serve` as a
subprocess (tiny-test preset, synthetic weights, hf-static on CPU) and a real rclpy
node (RobotProcess) talking to it over DDS through the bridge.

One daemon + bridge + robot is shared by the module; the SIGTERM test runs last on
it. kill -9 gets its own daemon."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeprof.daemon.runlog import summarize
from edgeprof.errors import BridgeTimeoutError
from edgeprof.ros.robot import RobotProcess
from edgeprof.ros.rosbridge import free_port, start_rosbridge

from .test_requests import MALFORMED

pytestmark = pytest.mark.slow
DOMAIN = random.randint(1, 200)
REPO = Path(__file__).resolve().parents[2]
STARTUP_S = 180  # model load on a busy 2-core machine


class DaemonProc:
    def __init__(self, port: int, runlog: Path, *extra: str) -> None:
        self.runlog = runlog
        self.log_path = runlog.with_suffix(".stderr")
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "edgeprof.cli", "serve", "--model", "tiny-test", "--backend", "hf-static",
               "--device", "cpu", "--port", str(port), "--metrics-port", str(free_port()),
               "--runlog", str(runlog), *extra]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)

    def tail(self) -> str:
        return self.log_path.read_text()[-3000:]

    def stop(self, sig=signal.SIGTERM, timeout=30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self._log.close()
        return rc


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("daemon")
    with start_rosbridge(0, domain_id=DOMAIN, log_path=tmp / "rosbridge.log") as rb:
        d = DaemonProc(rb.port, tmp / "run.db", "--max-ctx", "128", "--config", str(_config(tmp)))
        robot = RobotProcess(DOMAIN)
        try:
            robot.wait_ready(STARTUP_S)
        except BridgeTimeoutError:
            robot.close()
            d.stop(signal.SIGKILL)
            pytest.fail(f"daemon did not come up:\n{d.tail()}")
        yield rb, d, robot
        robot.close()
        if d.proc.poll() is None:
            d.stop(signal.SIGKILL)


def _config(tmp: Path) -> Path:
    p = tmp / "daemon.yaml"
    p.write_text("warmup_steps: 1\nsession:\n  max_queue: 2\n  max_new_tokens_limit: 200\nstatus:\n  period_s: 0.2\n")
    return p


def _status(robot, timeout_s: float = 10.0) -> dict:
    """The latest status record; the status topic's DDS match can complete after the services'
    (robot.wait_ready waits for those), so a fast first test may otherwise find none yet."""
    deadline = time.monotonic() + timeout_s
    while (status := robot.last_status()) is None:
        assert time.monotonic() < deadline, f"no status message within {timeout_s} s"
        time.sleep(0.1)
    return status


def _tokens(records):
    return [r for r in records if "index" in r]


def test_generate(stack):
    _, _, robot = stack
    recs = robot.send_request(prompt="hello robot", max_new_tokens=6, request_id="gen-1", reset=True, timeout_s=60)
    toks, done = _tokens(recs), recs[-1]
    assert [t["index"] for t in toks] == list(range(6))
    assert done["done"] and done["reason"] == "length" and done["n_tokens"] == 6
    assert all(t["floor_ms"] > 0 and t["latency_ms"] > 0 and t["fraction"] > 0 for t in toks)
    assert [t["position"] for t in toks] == list(range(len("hello robot"), len("hello robot") + 6))
    status = _status(robot)
    assert status["state"] == "active" and status["model"] == "tiny-test" and status["backend"] == "hf-static"
    assert status["gpu"] == "cpu" and status["floor_ms"] > 0 and "position" in status


def test_conversation_continues_then_next_token_then_reset(stack):
    _, _, robot = stack
    a = _tokens(robot.send_request(prompt="one", max_new_tokens=3, request_id="conv-1", reset=True, timeout_s=60))
    b = _tokens(robot.send_request(prompt="two", max_new_tokens=2, request_id="conv-2", timeout_s=60))
    # the second turn is prefilled after the first: its pending token + 3 prompt bytes
    assert b[0]["position"] == a[-1]["position"] + 1 + len("two")
    nt = robot.next_token(30)
    assert nt["_success"] and nt["id"] == "conv-2" and nt["index"] == 2 and nt["position"] == b[-1]["position"] + 1
    reset = robot.reset(30)
    assert reset["_success"] and reset["position"] == 0
    nt = robot.next_token(30)
    assert not nt["_success"] and nt["error"]["code"] == "no_session"


def test_malformed_requests_get_error_records_and_the_daemon_keeps_serving(stack):
    _, _, robot = stack
    seen = {}
    for label, raw, _code in MALFORMED:
        since = robot.send_raw(raw)
        rec = robot.wait_record({"has": ["error"]}, 20, since=since)
        seen[label] = rec["error"]["code"]
        assert rec["error"]["message"]
    assert seen == {label: code for label, _, code in MALFORMED}
    robot.send_request(prompt="x", max_new_tokens=1, request_id="dup-1", reset=True, timeout_s=60)
    since = robot.send({"id": "dup-1", "prompt": "again", "max_new_tokens": 1})
    dup = robot.wait_record({"rejected_id": "dup-1"}, 20, since)
    assert dup["error"]["code"] == "duplicate_id" and dup["id"] is None
    since = robot.send({"cancel": "never-sent", "id": "c-unknown"})
    assert robot.wait_record({"id": "c-unknown"}, 20, since)["error"]["code"] == "unknown_id"
    since = robot.send({"id": "long-1", "prompt": "y" * 200, "max_new_tokens": 1})
    assert robot.wait_record({"id": "long-1"}, 20, since)["error"]["code"] == "prompt_too_long"
    done = robot.send_request(prompt="still here", max_new_tokens=2, request_id="after-bad", reset=True,
                              timeout_s=60)[-1]
    assert done["done"] and done["n_tokens"] == 2


def test_queue_full_gives_busy(stack):
    _, _, robot = stack
    since = robot.send({"id": "q-0", "prompt": "a", "max_new_tokens": 120, "reset": True})
    robot.wait_record({"id": "q-0", "index": 0}, 30, since)
    for i in (1, 2, 3):
        robot.send({"id": f"q-{i}", "prompt": "b", "max_new_tokens": 1, "reset": True})
    finals = {i: robot.collect(f"q-{i}", 60, since)[-1] for i in (0, 1, 2, 3)}
    assert finals[3]["error"]["code"] == "busy"
    assert finals[0]["reason"] == "length" and finals[1]["done"] and finals[2]["done"]


def test_cancel(stack):
    _, _, robot = stack
    since = robot.send({"id": "cx-1", "prompt": "a", "max_new_tokens": 120, "reset": True})
    robot.wait_record({"id": "cx-1", "index": 1}, 30, since)
    robot.send({"cancel": "cx-1"})
    done = robot.collect("cx-1", 30, since)[-1]
    assert done["reason"] == "cancelled" and done["n_tokens"] < 120


def test_context_overflow(stack):
    _, _, robot = stack
    recs = robot.send_request(prompt="z" * 100, max_new_tokens=60, request_id="ovf-1", reset=True, timeout_s=60)
    assert recs[-1]["error"]["code"] == "context_overflow"
    assert "reset" in recs[-1]["error"]["message"]
    assert len(_tokens(recs)) == 128 - 100 + 1  # tokens up to a full cache, then the clear error
    done = robot.send_request(prompt="fresh", max_new_tokens=2, request_id="ovf-2", reset=True, timeout_s=60)[-1]
    assert done["done"]


def test_bridge_restart_serves_again_within_5_s(stack):
    rb, _, robot = stack
    rb.restart()
    t0 = time.monotonic()
    attempt, done = 0, None
    while time.monotonic() - t0 < 5 and done is None:
        attempt += 1
        try:
            recs = robot.send_request(prompt="back?", max_new_tokens=2, request_id=f"rs-{attempt}", reset=True,
                                      timeout_s=1.0)
            done = recs[-1] if recs[-1].get("done") else None
        except BridgeTimeoutError:
            continue
    elapsed = time.monotonic() - t0
    assert done is not None, "the daemon did not serve within 5 s of the bridge restart"
    assert elapsed < 5


def test_sigterm_ends_the_request_with_shutdown_and_the_log_is_complete(stack):
    _, d, robot = stack
    since = robot.send({"id": "term-1", "prompt": "a", "max_new_tokens": 120, "reset": True})
    robot.wait_record({"id": "term-1", "index": 2}, 30, since)
    assert d.stop(signal.SIGTERM) == 0, d.tail()
    recs = robot.collect("term-1", 10, since)
    assert recs[-1]["reason"] == "shutdown"
    s = summarize(d.runlog)
    run = s["runs"][-1]
    assert run["end_reason"] == "shutdown" and run["model_label"].endswith("[SYNTHETIC random weights]")
    assert s["requests_by_reason"].get("shutdown") == 1
    conn = sqlite3.connect(d.runlog)
    logged = conn.execute("SELECT COUNT(*) FROM tokens WHERE request_id='term-1'").fetchone()[0]
    assert logged == len(_tokens(recs))  # every token the robot got is in the log
    # every malformed request of the earlier test was logged as an error
    assert s["errors_by_code"].get("busy") == 1 and s["errors"] >= len(MALFORMED) + 4
    events = {r[0] for r in conn.execute("SELECT kind FROM events")}
    assert {"state", "bridge_lost", "bridge_connected"} <= events


def test_kill_9_leaves_a_readable_log_missing_at_most_about_1_s(tmp_path):
    with start_rosbridge(0, domain_id=DOMAIN, log_path=tmp_path / "rb.log") as rb:
        d = DaemonProc(rb.port, tmp_path / "k.db", "--config", str(_config(tmp_path)))
        with RobotProcess(DOMAIN) as robot:
            try:
                robot.wait_ready(STARTUP_S)
            except BridgeTimeoutError:
                d.stop(signal.SIGKILL)
                pytest.fail(f"daemon did not come up:\n{d.tail()}")
            since = robot.send({"id": "k-1", "prompt": "a", "max_new_tokens": 200, "reset": True})
            robot.wait_record({"id": "k-1", "index": 5}, 30, since)
            time.sleep(0.5)
            killed_at = time.monotonic()
            os.kill(d.proc.pid, signal.SIGKILL)
            d.stop()
            received = [r for r in robot.records(since) if r.get("id") == "k-1" and "index" in r]
    s = summarize(tmp_path / "k.db")
    assert s["runs"][0]["end_reason"] is None  # not a clean end
    conn = sqlite3.connect(tmp_path / "k.db")
    rows = conn.execute("SELECT idx, t_mono FROM tokens WHERE request_id='k-1' ORDER BY idx").fetchall()
    assert rows and [r[0] for r in rows] == list(range(len(rows)))  # a prefix, no holes
    last_received = max(r["index"] for r in received)
    if last_received >= len(rows):  # tokens produced after the last commit were lost
        assert killed_at - rows[-1][1] < 1.0, f"lost {killed_at - rows[-1][1]:.2f} s of tokens"
    assert json.dumps(s)
