"""The decode service in-process: records, queue bound, cancel, next_token, reset,
shutdown and bridge loss. The bridge is replaced by a list (the real bridge path is
tests/daemon/test_daemon_ros.py)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from edgeprof.daemon.config import SessionConfig
from edgeprof.daemon.runlog import RunLog, summarize
from edgeprof.daemon.service import DecodeService
from edgeprof.daemon.session import FloorModel, Session
from edgeprof.daemon.text import ByteCodec
from edgeprof.floor import parse_format
from edgeprof.hardware_loader import gpu
from edgeprof.shape_loader import preset

from .scripted import ScriptedDecoder

TOKEN_FIELDS = {"id", "index", "token_id", "text", "latency_ms", "gpu_ms", "floor_ms", "fraction",
                "deadline_missed", "position", "ready_unix_ns"}
DONE_FIELDS = {"id", "done", "reason", "n_tokens", "ttft_ms", "p50_ms", "p99_ms", "fraction_median",
               "deadline_misses"}


class ListSink:
    def __init__(self) -> None:
        self.connected = True
        self.records: list[dict] = []
        self.cv = threading.Condition()

    def publish_token(self, s: str) -> None:
        with self.cv:
            self.records.append(json.loads(s))
            self.cv.notify_all()

    def wait(self, pred, timeout=5.0):
        end = time.monotonic() + timeout
        with self.cv:
            while not pred(self.records):
                left = end - time.monotonic()
                assert left > 0, f"timed out; records: {self.records[-5:]}"
                self.cv.wait(left)

    def terminal(self, rid):
        return [r for r in self.records if r.get("id") == rid and ("done" in r or "error" in r)]


@pytest.fixture
def svc(tmp_path):
    gate = threading.Event()
    gate.set()
    dec = ScriptedDecoder(max_ctx=64, gate=gate)
    floor = FloorModel(preset("tiny-test"), parse_format("bf16"), gpu("cpu"))
    cfg = SessionConfig(max_queue=2, reply_timeout_s=5)
    log = RunLog(tmp_path / "run.db", 0.05)
    log.start_run({"model": "scripted"})
    sink = ListSink()
    s = DecodeService(Session(dec, ByteCodec(256), floor, cfg), cfg, sink=sink, runlog=log)
    s.gate, s.log = gate, log  # handles for the tests
    s.start()
    yield s
    gate.set()
    s.stop()
    log.close()


def _req(rid, n=3, **kw):
    return json.dumps({"id": rid, "prompt": kw.pop("prompt", "hi"), "max_new_tokens": n, **kw})


def test_generate_publishes_tokens_then_done(svc):
    svc.submit(_req("a", 4, deadline_ms=1.5))
    sink = svc.sink
    sink.wait(lambda r: any(x.get("done") for x in r))
    toks = [r for r in sink.records if "index" in r]
    assert [t["index"] for t in toks] == [0, 1, 2, 3]
    assert all(set(t) == TOKEN_FIELDS for t in toks)
    assert toks[0]["deadline_missed"] is True and toks[1]["deadline_missed"] is False  # prefill 2 ms > 1.5
    done = sink.records[-1]
    assert set(done) == DONE_FIELDS and done["reason"] == "length" and done["n_tokens"] == 4
    assert done["ttft_ms"] == 2.0 and done["deadline_misses"] == 1


def test_malformed_then_valid_and_everything_is_logged(svc):
    svc.submit("{nope")
    svc.submit(_req("a", 0))
    svc.submit(b"\xff")
    svc.submit(_req("b", 2))
    svc.sink.wait(lambda r: any(x.get("done") and x["id"] == "b" for x in r))
    errs = [r["error"]["code"] for r in svc.sink.records if "error" in r]
    assert errs == ["invalid_json", "invalid_max_new_tokens", "invalid_utf8"]
    assert svc.sink.records[1]["id"] == "a"  # the id is echoed when it could be read
    assert svc.log.flush()
    s = summarize(svc.log.path)
    assert s["errors_by_code"] == {"invalid_json": 1, "invalid_max_new_tokens": 1, "invalid_utf8": 1}
    assert s["requests"] == 1 and s["tokens"] == 2


def test_queue_bound_gives_busy_and_duplicate_id(svc):
    svc.gate.clear()  # hold the worker inside request "a"
    svc.submit(_req("a", 5))
    time.sleep(0.1)
    svc.submit(_req("b"))
    svc.submit(_req("c"))
    svc.submit(_req("d"))
    svc.submit(_req("a"))
    assert svc.sink.terminal("d")[0]["error"]["code"] == "busy"
    assert svc.snapshot()["queue"] == 2
    svc.gate.set()
    svc.sink.wait(lambda r: len([x for x in r if x.get("done")]) == 3)
    codes = [r["error"]["code"] for r in svc.sink.records if "error" in r]
    assert codes == ["busy", "duplicate_id"]
    # the duplicate's record must not read as the end of the running "a": id null, rejected_id "a"
    dup = next(r for r in svc.sink.records if "error" in r and r["error"]["code"] == "duplicate_id")
    assert dup["id"] is None and dup["rejected_id"] == "a" and "goes on" in dup["error"]["message"]
    assert svc.sink.terminal("a")[0]["done"] and svc.sink.terminal("a")[0]["reason"] == "length"
    svc.submit(_req("d"))  # a busy id may be retried
    svc.sink.wait(lambda r: any(x.get("done") and x["id"] == "d" for x in r))


def test_cancel_running_queued_and_unknown(svc):
    svc.gate.clear()
    svc.submit(_req("a", 50))
    time.sleep(0.1)
    svc.submit(_req("b", 5))
    svc.submit(json.dumps({"cancel": "b"}))
    svc.submit(json.dumps({"cancel": "a"}))
    svc.submit(json.dumps({"cancel": "zzz", "id": "c9"}))
    svc.gate.set()
    svc.sink.wait(lambda r: len(svc.sink.terminal("a")) == 1)
    assert svc.sink.terminal("b")[0]["reason"] == "cancelled" and svc.sink.terminal("b")[0]["n_tokens"] == 0
    assert svc.sink.terminal("a")[0]["reason"] == "cancelled" and svc.sink.terminal("a")[0]["n_tokens"] < 50
    assert svc.sink.terminal("c9")[0]["error"]["code"] == "unknown_id"


def test_next_token_and_reset(svc):
    reply = json.loads(svc.next_token())
    assert reply["error"]["code"] == "no_session"
    svc.submit(_req("a", 2))
    svc.sink.wait(lambda r: any(x.get("done") for x in r))
    last = [r for r in svc.sink.records if "index" in r][-1]
    nt = json.loads(svc.next_token())
    assert set(nt) == TOKEN_FIELDS and nt["id"] == "a" and nt["index"] == 2
    assert nt["position"] == last["position"] + 1
    assert json.loads(svc.reset()) == {"reset": True, "position": 0}
    assert json.loads(svc.next_token())["error"]["code"] == "no_session"


def test_shutdown_ends_the_current_request_and_fails_the_queue(svc):
    svc.gate.clear()
    svc.submit(_req("a", 50))
    time.sleep(0.1)
    svc.submit(_req("b"))
    threading.Timer(0.2, svc.gate.set).start()
    svc.stop("shutdown")
    assert svc.sink.terminal("a")[0]["reason"] == "shutdown"
    assert svc.sink.terminal("b")[0]["error"]["code"] == "shutdown"
    svc.submit(_req("c"))
    assert svc.sink.terminal("c")[0]["error"]["code"] == "shutdown"


def test_bridge_drop_turns_the_request_into_an_error_delivered_on_reconnect(svc):
    svc.gate.clear()
    svc.submit(_req("a", 50))
    time.sleep(0.1)
    svc.sink.connected = False
    svc.gate.set()
    deadline = time.monotonic() + 5
    while svc.snapshot()["current"] is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not svc.sink.terminal("a")  # nothing could be sent while down
    svc.sink.connected = True
    assert svc.flush_outbox() == 1
    err = svc.sink.terminal("a")[0]["error"]
    assert err["code"] == "bridge_lost" and "tokens published" in err["message"]  # not "sent": unknown


@pytest.mark.parametrize("rec", [
    {"id": 'r\u00e9"1', "index": 0, "token_id": 5, "text": "a\n\ufffd\U0001f600", "latency_ms": 5.96081,
     "gpu_ms": None, "floor_ms": 1e-05, "fraction": None, "deadline_missed": True, "position": 7,
     "ready_unix_ns": 1795000000123456789},
    {"id": None, "index": 3, "token_id": 151000, "text": "", "latency_ms": 1500000.0, "gpu_ms": 1.5,
     "floor_ms": float("nan"), "fraction": float("inf"), "deadline_missed": False, "position": 2047,
     "ready_unix_ns": 0},
])
def test_token_json_is_json_dumps_byte_for_byte(rec):
    from edgeprof.daemon.service import token_json

    assert token_json(rec) == json.dumps(rec)


class OOMDecoder(ScriptedDecoder):
    """A decoder whose device runs out of memory at its `fail_at`-th decode step (what a
    CUDA backend raises when the KV cache or a workspace can't be allocated)."""

    def __init__(self, fail_at: int, exc: type[BaseException] | None = None, **kw) -> None:
        super().__init__(**kw)
        self.fail_at = fail_at
        self.steps = 0
        self.exc = exc

    def step_async(self):
        import torch

        self.steps += 1
        if self.steps == self.fail_at:
            raise (self.exc or torch.OutOfMemoryError)("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().step_async()


def _oom_service(tmp_path, exc=None):
    from edgeprof.metrics import MetricsPublisher

    dec = OOMDecoder(fail_at=3, exc=exc, max_ctx=64)
    floor = FloorModel(preset("tiny-test"), parse_format("bf16"), gpu("cpu"))
    cfg = SessionConfig(max_queue=4, reply_timeout_s=5)
    log = RunLog(tmp_path / "run.db", 0.05)
    log.start_run({"model": "oom"})
    metrics = MetricsPublisher({"model": "m", "backend": "b", "gpu": "cpu", "weights": "bf16"})
    s = DecodeService(Session(dec, ByteCodec(256), floor, cfg), cfg, sink=ListSink(), runlog=log, metrics=metrics)
    s.start()
    return s, log, metrics


def _healthy_gauge(metrics) -> float:
    line = next(x for x in metrics.exposition().decode().splitlines() if x.startswith("edgeprof_healthy{"))
    return float(line.rsplit(" ", 1)[1])


def test_out_of_memory_mid_request_ends_it_with_a_code_and_the_daemon_turns_unhealthy(tmp_path):
    svc, log, metrics = _oom_service(tmp_path)
    try:
        assert _healthy_gauge(metrics) == 1 and svc.snapshot()["healthy"] is True
        svc.submit(_req("a", 10))
        svc.sink.wait(lambda r: svc.sink.terminal("a"))
        end = svc.sink.terminal("a")[0]
        assert end["error"]["code"] == "out_of_memory" and "unhealthy" in end["error"]["message"]
        # prefill + 2 good steps; with session.overlap_host the last one is launched-ahead work
        # that never finished, so 2 or 3 tokens, and never one from the failed step
        idx = [r["index"] for r in svc.sink.records if r.get("id") == "a" and "index" in r]
        assert idx in ([0, 1], [0, 1, 2])
        snap = svc.snapshot()
        assert snap["healthy"] is False and snap["unhealthy_reason"].startswith("out_of_memory: OutOfMemoryError")
        assert _healthy_gauge(metrics) == 0
        # nothing more is served: no garbage tokens from a broken device
        svc.submit(_req("b", 2))
        assert svc.sink.terminal("b")[0]["error"]["code"] == "unhealthy"
        assert json.loads(svc.next_token())["error"]["code"] == "unhealthy"
        assert not [r for r in svc.sink.records if r.get("id") == "b" and "index" in r]
        assert log.flush()
        s = summarize(log.path)
        assert s["errors_by_code"].get("out_of_memory") == 1
    finally:
        svc.stop()
        log.close()


def test_a_cuda_runtime_error_is_a_device_error(tmp_path):
    svc, log, metrics = _oom_service(tmp_path, exc=RuntimeError)
    svc.session.decoder.exc = lambda msg: RuntimeError("CUDA error: an illegal memory access was encountered")
    try:
        svc.submit(_req("a", 10))
        svc.sink.wait(lambda r: svc.sink.terminal("a"))
        assert svc.sink.terminal("a")[0]["error"]["code"] == "device_error"
        assert svc.snapshot()["healthy"] is False and _healthy_gauge(metrics) == 0
    finally:
        svc.stop()
        log.close()


def test_an_ordinary_bug_is_internal_and_the_daemon_stays_healthy(tmp_path):
    svc, log, metrics = _oom_service(tmp_path, exc=ValueError)
    try:
        svc.submit(_req("a", 10))
        svc.sink.wait(lambda r: svc.sink.terminal("a"))
        assert svc.sink.terminal("a")[0]["error"]["code"] == "internal"
        assert svc.snapshot()["healthy"] is True and _healthy_gauge(metrics) == 1
        svc.submit(_req("b", 2))
        svc.sink.wait(lambda r: svc.sink.terminal("b"))
        assert svc.sink.terminal("b")[0]["done"]
    finally:
        svc.stop()
        log.close()


def test_run_on_worker_runs_on_the_decode_thread_between_jobs_and_resets_the_session(svc):
    svc.submit(_req("a", 3))
    svc.sink.wait(lambda r: any(x.get("done") for x in r))
    seen = svc.run_on_worker(lambda s: (threading.current_thread().name, s.position, s.pending is not None))
    assert seen[0] == "edgeprof-decode" and seen[1] > 0 and seen[2]  # the conversation was there
    assert svc.session.position == 0 and svc.session.pending is None  # and is gone after
    assert json.loads(svc.next_token())["error"]["code"] == "no_session"


def test_ping_is_answered_at_once_and_is_not_a_request(svc):
    """A robot's readiness probe (ros/robot.py wait_ready): pong with the same token, even while a request
    is being decoded, and nothing in the run log or the request metrics."""
    svc.gate.clear()  # the decode thread is busy with "a"
    svc.submit(_req("a", 3))
    svc.submit(json.dumps({"ping": "p7"}))
    svc.sink.wait(lambda r: {"pong": "p7"} in r, timeout=2.0)
    svc.gate.set()
    svc.sink.wait(lambda r: len(svc.sink.terminal("a")) == 1)
    assert svc.log.flush()
    s = summarize(svc.log.path)
    assert s["requests"] == 1 and s["errors"] == 0, s
