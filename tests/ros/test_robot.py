"""The sample rclpy robot: its CLI and RobotProcess against a scripted daemon over the real bridge."""

from __future__ import annotations

import inspect
import json
import os
import random
import subprocess
import sys
import threading

import pytest

from edgeprof.daemon.bridge import BridgeClient
from edgeprof.errors import BridgeTimeoutError
from edgeprof.ros.robot import (
    DEFAULT_WAIT_S,
    ROBOT_API,
    RobotClient,
    RobotProcess,
    _matches,
    format_done,
    format_token,
    is_final,
)
from edgeprof.ros.rosbridge import start_rosbridge
from edgeprof.ros.topics import TopicNames

DOMAIN = random.randint(1, 200)


# ----------------------------------------------------------------------------- pure helpers


def test_matches_equalities_and_has():
    record = {"id": "a", "done": True}
    assert _matches(record, {"id": "a"})
    assert not _matches(record, {"id": "b"})
    assert _matches(record, {"has": ["error", "done"]})
    assert not _matches(record, {"has": ["error"]})


def test_final_records():
    assert is_final({"id": 1, "done": True})
    assert is_final({"id": 1, "error": {"code": "x", "message": "y"}})
    assert not is_final({"id": 1, "index": 0})


def test_token_line_shows_latency_against_floor():
    line = format_token(
        {"index": 3, "text": " blue", "latency_ms": 21.5, "floor_ms": 0.452, "fraction": 0.021, "deadline_missed": True}
    )
    assert "[  3]" in line and "' blue'" in line
    assert "latency   21.50 ms" in line and "floor  0.452 ms" in line and "fraction 0.021" in line
    assert "DEADLINE MISSED" in line
    assert "latency -  floor -" in format_token({"index": 0, "text": "x"})  # missing fields print as '-'


def test_done_line_summarises():
    line = format_done({"reason": "max_new_tokens", "n_tokens": 8, "ttft_ms": 40.0, "p50_ms": 20.1, "p99_ms": 25.0,
                        "fraction_median": 0.02, "deadline_misses": 1})
    assert "8 tokens" in line and "p50 20.10 ms" in line and "deadline misses 1" in line


class _PipeRecorder(RobotProcess):
    """RobotProcess with its pipe replaced by a list of the calls it would send (no process)."""

    def __init__(self) -> None:  # no robot process: only the forwarding is under test
        self.calls: list[tuple] = []

    def _call(self, op, wait_s=DEFAULT_WAIT_S, args=None):
        self.calls.append((op, wait_s, args))
        return op


def test_robot_api_is_robot_client_methods_and_robot_process_has_each_with_its_signature():
    assert {"send_request", "send", "send_raw", "next_token", "reset", "wait_ready", "wait_record", "collect",
            "records", "count", "last_status", "trigger_rtts", "trigger_records", "topic_round_trips",
            "token_delays"} <= ROBOT_API.keys()
    for name, method in ROBOT_API.items():
        assert method is vars(RobotClient)[name]
        forwarded = getattr(RobotProcess, name)
        assert inspect.signature(forwarded) == inspect.signature(method), name
        assert forwarded.__doc__ == method.__doc__ and forwarded.__qualname__ == f"RobotProcess.{name}"


def test_robot_process_forwards_bound_arguments_with_the_calls_own_wait():
    r = _PipeRecorder()
    assert r.send_request("hi", max_new_tokens=4, request_id="c1", deadline_ms=50.0) == "send_request"
    assert r.calls[-1] == ("send_request", 120.0, {"prompt": "hi", "messages": None, "max_new_tokens": 4,
                                                   "request_id": "c1", "timeout_s": 120.0, "deadline_ms": 50.0})
    r.trigger_rtts("next_token", 3, timeout_s=2.0)
    assert r.calls[-1] == ("trigger_rtts", 6.0, {"service": "next_token", "n": 3, "timeout_s": 2.0})
    r.topic_round_trips("/a", "/b", 4, timeout_s=1.0, pause_s=0.5)
    assert r.calls[-1][1] == pytest.approx(7.5)
    r.count()
    assert r.calls[-1] == ("count", DEFAULT_WAIT_S, {})
    with pytest.raises(TypeError):  # a wrong call fails on this side, as on RobotClient
        r.next_token(1.0, 2.0)
    assert len(r.calls) == 4


# ----------------------------------------------------------------------------- real processes


class ScriptedDaemon:
    """Answers each request with n tokens + a done record, like the daemon's wire format."""

    def __init__(self, port: int, names: TopicNames) -> None:
        self.position = 0
        self.client = BridgeClient(
            "127.0.0.1", port, names, on_request=self.on_request, on_next_token=self.on_next, on_reset=self.on_reset
        )

    def record(self, rid, index):
        self.position += 1
        return {"id": rid, "index": index, "token_id": 100 + index, "text": f" w{index}", "latency_ms": 20.0 + index,
                "gpu_ms": None, "floor_ms": 0.45, "fraction": 0.45 / (20.0 + index), "deadline_missed": False,
                "position": self.position}

    def on_request(self, raw: str) -> None:
        try:
            req = json.loads(raw)
        except ValueError:
            self.client.publish_token(json.dumps({"id": None, "error": {"code": "bad_json", "message": "not JSON"}}))
            return
        if "ping" in req:  # the robot's readiness probe, as the daemon answers it
            self.client.publish_token(json.dumps({"pong": req["ping"]}))
            return
        n = req.get("max_new_tokens", 1)
        for i in range(n):
            self.client.publish_token(json.dumps(self.record(req["id"], i)))
        self.client.publish_token(json.dumps({"id": req["id"], "done": True, "reason": "max_new_tokens",
                                              "n_tokens": n, "ttft_ms": 20.0, "p50_ms": 21.0, "p99_ms": 22.0,
                                              "fraction_median": 0.021, "deadline_misses": 0}))

    def on_next(self) -> str:
        return json.dumps(self.record("next", 0))

    def on_reset(self) -> str:
        self.position = 0
        return json.dumps({"reset": True, "position": 0})


@pytest.fixture(scope="module")
def daemon():
    names = TopicNames.with_prefix(f"/edgeprof_r{os.getpid()}")
    with start_rosbridge(domain_id=DOMAIN) as rb:
        d = ScriptedDaemon(rb.port, names)
        d.client.start()
        yield d, names
        d.client.close()


@pytest.mark.slow
def test_robot_cli_prints_tokens_against_floor(daemon):
    _, names = daemon
    out = subprocess.run(
        [sys.executable, "-m", "edgeprof.ros.robot", "--prompt", "Name three colors.", "--max-new-tokens", "3",
         "--next-tokens", "2", "--reset", "--domain-id", str(DOMAIN), "--prefix", names.request.rsplit("/", 1)[0]],
        capture_output=True, text=True, timeout=90,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    token_lines = [x for x in lines if "latency" in x and "floor" in x]
    assert len(token_lines) == 5  # 3 streamed + 2 next_token
    assert sum("next_token round trip" in x for x in token_lines) == 2
    assert any(x.startswith("done (max_new_tokens): 3 tokens") for x in lines)
    assert lines[0].startswith("reset:")
    assert "median round trip" in lines[-1]


@pytest.mark.slow
def test_robot_process_request_conversation_and_bad_input(daemon):
    d, names = daemon
    with RobotProcess(DOMAIN, names) as robot:
        robot.wait_ready(20)
        records = robot.send_request("hi", max_new_tokens=4, request_id="c1")
        assert [r.get("index") for r in records[:-1]] == [0, 1, 2, 3] and records[-1]["done"]
        positions = [r["position"] for r in records[:-1]]
        more = robot.send_request("and?", max_new_tokens=2, request_id="c2")
        assert [r["position"] for r in more[:-1]] == [positions[-1] + 1, positions[-1] + 2]
        since = robot.send_raw("{{ nope")
        err = robot.wait_record({"has": ["error"]}, 10, since)
        assert err["error"]["code"] == "bad_json"
        assert robot.reset()["reset"] is True
        nxt = robot.next_token()
        assert nxt["_success"] and nxt["position"] == 1 and nxt["_rtt_ms"] > 0


@pytest.mark.slow
def test_robot_without_daemon_times_out_with_advice():
    names = TopicNames.with_prefix(f"/edgeprof_nobody{os.getpid()}")
    with RobotProcess(DOMAIN, names) as robot, pytest.raises(BridgeTimeoutError, match="ROS_DOMAIN_ID"):
        robot.wait_ready(1.0)


@pytest.mark.slow
def test_robot_processes_are_independent(daemon):
    """Two robots at once each get only their own request's stream end (records are per-id)."""
    _, names = daemon
    results: dict = {}
    with RobotProcess(DOMAIN, names, node_name="robot_a") as a, RobotProcess(DOMAIN, names, node_name="robot_b") as b:
        a.wait_ready(20)
        b.wait_ready(20)
        ta = threading.Thread(target=lambda: results.update(a=a.send_request("x", max_new_tokens=2, request_id="ra")))
        ta.start()
        results["b"] = b.send_request("y", max_new_tokens=3, request_id="rb")
        ta.join(30)
    assert len(results["a"]) == 3 and len(results["b"]) == 4
