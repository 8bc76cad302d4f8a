"""The decode service: one worker thread owns the Session; everything else enqueues.

Bridge callbacks (`submit`, `next_token`, `reset`) run on the bridge's threads. They
validate, put a job on a bounded queue and, for the services, wait on a future with
a timeout. Only the worker thread calls the decoder, so there is no locking around
the model and no callback can stall decoding.

Every request ends with exactly one terminal record on the tokens topic: a `done`
record (reason length | eos | cancelled | shutdown) or an error record. Every token,
request, error and event also goes to the run log.
"""

from __future__ import annotations

import collections
import contextlib
import json
import json.encoder
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgeprof.daemon.config import SessionConfig
from edgeprof.daemon.faults import device_fault_code
from edgeprof.daemon.modelthread import ModelThread
from edgeprof.daemon.requests import CancelRequest, GenerateRequest, PingRequest, error_record, parse_request
from edgeprof.daemon.session import RequestStats, Session, TokenEvent
from edgeprof.errors import BridgeError, ContextLengthError, RequestError

MAX_REMEMBERED_IDS = 100_000  # duplicate-id detection window (ids of accepted requests)
MAX_OUTBOX = 1000  # terminal records kept for a bridge that is down
# Errors that refuse a request before it runs (the metrics "rejected" outcome).
REJECT_CODES = frozenset({"busy", "duplicate_id", "prompt_too_long", "empty_prompt", "shutdown", "unhealthy"})


class Sink(Protocol):
    """Where records go: the bridge client (publish_token) in the daemon, a list in tests."""

    @property
    def connected(self) -> bool: ...

    def publish_token(self, json_str: str) -> None: ...


class NullMetrics:
    """Same API as edgeprof.metrics.MetricsPublisher, does nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


@dataclass
class _Job:
    kind: str  # "generate" | "next_token" | "reset"
    received: float
    request: GenerateRequest | None = None
    raw: str | None = None
    future: Future | None = field(default=None)
    abandoned: bool = False  # the caller timed out; skip it if not started
    fn: Callable[[Session], Any] | None = None  # kind "call": run_on_worker


class DecodeService:
    def __init__(self, session: Session, cfg: SessionConfig, sink: Sink | None = None, runlog: Any = None,
                 metrics: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.cfg = cfg
        self.sink = sink
        self.runlog = runlog
        self.metrics = metrics or NullMetrics()
        self.clock = clock
        self._cv = threading.Condition()
        self._queue: collections.deque[_Job] = collections.deque()
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._current: _Job | None = None
        self._cancel_current = False
        self._stop_reason: str | None = None
        self._outbox: collections.deque[str] = collections.deque(maxlen=MAX_OUTBOX)
        self._thread: threading.Thread | None = None
        self._loop_done: Future | None = None  # the worker loop, when it runs on a ModelThread
        self.requests_total = 0
        self.tokens_total = 0
        self.errors_total = 0
        # False after a device failure (CUDA OOM or error): nothing is served any more, since the
        # model's state can't be trusted; status and the edgeprof_healthy gauge say so.
        self.healthy = True
        self.unhealthy_reason: str | None = None
        # For benchmarks/daemon_overhead.py: per request token, (request id, index, perf_counter when
        # the session handed it over, seconds of host work for it here).
        self.token_times: list[tuple[str, int, float, float]] = []
        self.record_overhead = False

    # --- lifecycle --------------------------------------------------------------------------
    def start(self, on: ModelThread | None = None) -> None:
        """Run the worker loop on `on` (the thread that loaded the model: see modelthread.py),
        or on a thread of its own."""
        self._stop_reason = None
        if on is not None:
            self._loop_done = on.submit(self._worker)
            return
        self._thread = threading.Thread(target=self._worker, name="edgeprof-decode", daemon=True)
        self._thread.start()

    def stop(self, reason: str = "shutdown", timeout: float = 30.0) -> None:
        """End the current request with `reason`, fail queued work, wait for the worker loop."""
        with self._cv:
            self._stop_reason = reason
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        elif self._loop_done is not None:
            with contextlib.suppress(FutureTimeout):  # a wedged step: shutdown goes on without it
                self._loop_done.result(timeout)
        self._thread = None
        self._loop_done = None

    @property
    def running(self) -> bool:
        if self._loop_done is not None:
            return not self._loop_done.done()
        return self._thread is not None and self._thread.is_alive()

    # --- bridge callbacks (any thread) ----------------------------------------------------
    def submit(self, raw: str | bytes) -> None:
        """on_request: validate and enqueue, or publish an error record. Never raises."""
        now = self.clock()
        try:
            req = parse_request(raw, self.cfg.max_new_tokens_limit, self.cfg.max_request_bytes)
            if isinstance(req, PingRequest):  # readiness probe: answered at once, not a request
                self._publish(json.dumps({"pong": req.token}))
                return
            if isinstance(req, CancelRequest):
                self._cancel(req)
            else:
                self._enqueue(_Job("generate", now, request=req, raw=raw if isinstance(raw, str) else None))
        except RequestError as exc:
            if exc.code == "duplicate_id":
                self._reject_duplicate(_best_id(raw), str(exc), raw)
            else:
                self._error(_best_id(raw), exc.code, str(exc), raw=raw)
            self.metrics.request_done("rejected")
        except Exception as exc:  # never let a callback bug kill the bridge thread
            self._error(_best_id(raw), "internal", f"{type(exc).__name__}: {exc}", raw=raw)
            self.metrics.request_done("error")

    def next_token(self) -> str:
        """on_next_token: one more token in the current session -> its JSON record."""
        return self._call("next_token")

    def reset(self) -> str:
        """on_reset: empty the KV cache (after the work already queued)."""
        return self._call("reset")

    def run_on_worker(self, fn: Callable[[Session], Any], timeout_s: float = 600.0) -> Any:
        """Run `fn(session)` on the decode thread between jobs and return its result (for
        benchmarks/robot_latency.py: the raw decoder step timed on the daemon's own decoder and
        thread, paired with what the robot sees). The session is reset afterwards."""
        job = _Job("call", self.clock(), future=Future(), fn=fn)
        self._enqueue(job)
        assert job.future is not None
        return job.future.result(timeout=timeout_s)

    def _call(self, kind: str) -> str:
        job = _Job(kind, self.clock(), future=Future())
        try:
            self._enqueue(job)
        except RequestError as exc:
            return json.dumps(error_record(None, exc.code, str(exc)))
        assert job.future is not None
        try:
            return job.future.result(timeout=self.cfg.reply_timeout_s)
        except FutureTimeout:
            job.abandoned = True
            msg = f"{kind} got no answer within {self.cfg.reply_timeout_s:g} s (session.reply_timeout_s)"
            self._log_error(None, "timeout", msg)
            return json.dumps(error_record(None, "timeout", msg))

    def _enqueue(self, job: _Job) -> None:
        with self._cv:
            if self._stop_reason is not None:
                raise RequestError("shutdown", "the daemon is shutting down; retry when it is back")
            if not self.healthy:
                raise RequestError("unhealthy", self._unhealthy_message())
            if job.request is not None and job.request.id in self._seen:
                raise RequestError("duplicate_id", f"id {job.request.id!r} was already used; this message was "
                                   "ignored (a request running under that id goes on); give each request a new id")
            if len(self._queue) >= self.cfg.max_queue:
                raise RequestError("busy", f"{len(self._queue)} requests are already waiting "
                                   f"(session.max_queue {self.cfg.max_queue}); retry after a done record")
            if job.request is not None:
                rid = job.request.id
                self._seen[rid] = None
                if len(self._seen) > MAX_REMEMBERED_IDS:
                    self._seen.popitem(last=False)
            self._queue.append(job)
            self._cv.notify_all()

    def _cancel(self, c: CancelRequest) -> None:
        with self._cv:
            queued = next((j for j in self._queue if j.request is not None and j.request.id == c.target), None)
            if queued is not None:
                self._queue.remove(queued)
            running = self._current is not None and self._current.request is not None \
                and self._current.request.id == c.target
            if running:
                self._cancel_current = True
        if queued is not None:
            assert queued.request is not None
            self._log_event("cancel", {"id": c.target, "while": "queued"})
            self._finish(queued, RequestStats(), "cancelled", log_start=True)
        elif running:
            self._log_event("cancel", {"id": c.target, "while": "running"})
        else:
            raise RequestError("unknown_id", f"cannot cancel {c.target!r}: no request with that id is queued or "
                               "running (it may have finished already)")

    # --- status -----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self._cv:
            cur = self._current.request.id if self._current and self._current.request else None
            return {"position": self.session.position, "max_ctx": self.session.max_ctx, "queue": len(self._queue),
                    "current": cur, "requests_total": self.requests_total, "tokens_total": self.tokens_total,
                    "errors_total": self.errors_total, "healthy": self.healthy,
                    "unhealthy_reason": self.unhealthy_reason}

    def flush_outbox(self) -> int:
        """Resend terminal records that failed while the bridge was down; returns how many went out."""
        sent = 0
        while self._outbox and self._sink_ok():
            msg = self._outbox[0]
            try:
                self.sink.publish_token(msg)  # type: ignore[union-attr]
            except BridgeError:
                break
            self._outbox.popleft()
            sent += 1
        return sent

    # --- worker -----------------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            with self._cv:
                while not self._queue and self._stop_reason is None:
                    self._cv.wait(0.5)
                if self._stop_reason is not None:
                    pending, self._queue = list(self._queue), collections.deque()
                    break
                job = self._queue.popleft()
                if job.abandoned:
                    continue
                self._current, self._cancel_current = job, False
            try:
                if not self.healthy:  # queued before the device failed
                    raise RequestError("unhealthy", self._unhealthy_message())
                self._run_job(job)
            except RequestError as exc:
                self._fail_job(job, exc.code, str(exc))
            except ContextLengthError as exc:
                self._fail_job(job, "context_overflow", str(exc))
            except Exception as exc:  # keep serving; the failure is a record, not a dead thread
                code = device_fault_code(exc)
                if code is not None:  # the GPU failed: end this request, then serve nothing more
                    self._mark_unhealthy(code, exc)
                    self._fail_job(job, code, f"{self.unhealthy_reason}; the daemon is now unhealthy and "
                                   "serves nothing until it is restarted")
                else:
                    self._fail_job(job, "internal", f"{type(exc).__name__}: {exc}")
            finally:
                with self._cv:
                    self._current = None
        for job in pending:  # shutting down: nobody goes silent
            self._fail_job(job, "shutdown", f"the daemon stopped ({self._stop_reason}) before this ran; retry later")

    def _mark_unhealthy(self, code: str, exc: BaseException) -> None:
        text = str(exc).strip()
        first = text.splitlines()[0][:300] if text else ""
        self.unhealthy_reason = f"{code}: {type(exc).__name__}: {first}"
        self.healthy = False
        self.metrics.set_healthy(False)
        self._log_event("unhealthy", {"code": code, "error": self.unhealthy_reason})

    def _unhealthy_message(self) -> str:
        return (f"the daemon is unhealthy after a device failure ({self.unhealthy_reason}); "
                "restart it (edgeprof serve) before sending more work")

    def _run_job(self, job: _Job) -> None:
        if job.kind == "generate":
            self._generate(job)
        elif job.kind == "next_token":
            self._next_token(job)
        elif job.kind == "call":
            assert job.fn is not None
            try:
                result = job.fn(self.session)
            finally:
                self.session.reset()
            assert job.future is not None
            job.future.set_result(result)
        else:
            self.session.reset()
            self._log_event("reset", {"by": "service"})
            self._resolve(job, json.dumps({"reset": True, "position": self.session.position}))

    def _fail_job(self, job: _Job, code: str, message: str) -> None:
        if job.request is not None:
            self._finish(job, RequestStats(), None, error=(code, message), log_start=job is not self._current)
        else:  # a service call: the error is its reply
            self._log_error(None, code, message)
            self._resolve(job, json.dumps(error_record(None, code, message)))

    @staticmethod
    def _resolve(job: _Job, msg: str) -> None:
        if job.future is not None and not job.future.done():
            job.future.set_result(msg)

    def _should_stop(self) -> str | None:
        if self._stop_reason is not None:
            return self._stop_reason
        if self._cancel_current:
            return "cancelled"
        if self.sink is not None and not self._sink_ok():
            return "bridge_lost"
        return None

    def _generate(self, job: _Job) -> None:
        req = job.request
        assert req is not None
        self.requests_total += 1
        try:
            ids = self.session.encode(req)
        except RequestError as exc:
            self._log_request_start(req, job.received, None)
            self._finish(job, RequestStats(), None, error=(exc.code, str(exc)))
            return
        self._log_request_start(req, job.received, len(ids))
        stats = RequestStats()
        try:
            # closing(): an exception here closes the generator at once, so a step it launched
            # ahead is accounted for before the next request touches the session.
            with contextlib.closing(self.session.generate(req, ids, self._should_stop)) as tokens:
                for i, ev in enumerate(tokens):
                    t_got = time.perf_counter()
                    if i == 0:
                        self.metrics.observe_ttft(ev.t_mono - job.received)
                    self._emit_token(req.id, i, ev, req.deadline_ms, stats, "request")
                    if self.record_overhead:
                        self.token_times.append((req.id, i, t_got, time.perf_counter() - t_got))
        except RequestError as exc:
            self._finish(job, stats, None, error=(exc.code, str(exc)))
            return
        except ContextLengthError as exc:  # the decoder's own guard: same meaning as an overflow
            self._finish(job, stats, None, error=("context_overflow", str(exc)))
            return
        reason = self.session.end_reason
        if reason == "bridge_lost":
            # "published": handed to rosbridge; how many reached the robot is not known here
            self._finish(job, stats, None, error=("bridge_lost", "the bridge dropped while this request was "
                                                  f"generating ({len(stats.latencies_ms)} tokens published); "
                                                  "resend it"))
            return
        self._finish(job, stats, reason)

    def _next_token(self, job: _Job) -> None:
        s = self.session
        req = s.last_request
        if req is None or s.pending is None:
            raise RequestError("no_session", "there is nothing to continue from; send a request with a prompt first")
        ev = s.step()
        rec = self._emit_token(req.id, s.last_index, ev, req.deadline_ms, None, "next_token", publish=False)
        self._resolve(job, json.dumps(rec))

    def _emit_token(self, rid: str, index: int, ev: TokenEvent, deadline_ms: float | None,
                    stats: RequestStats | None, source: str, publish: bool = True) -> dict[str, Any]:
        missed = deadline_ms is not None and ev.latency_ms > deadline_ms
        fraction = ev.fraction
        rec = {"id": rid, "index": index, "token_id": ev.token_id, "text": ev.text,
               "latency_ms": _sig(ev.latency_ms), "gpu_ms": _sig(ev.gpu_ms), "floor_ms": _sig(ev.floor_ms),
               "fraction": _sig(fraction), "deadline_missed": missed, "position": ev.position,
               "ready_unix_ns": ev.ready_unix_ns}
        if stats is not None:
            stats.add(ev, missed)
        self.tokens_total += 1
        if publish:
            self._publish(token_json(rec))
        if self.runlog is not None:
            self.runlog.token(rec, ev.t_mono, source, ev.context_event)
            if ev.context_event:
                self.runlog.event("context_" + ev.context_event, {"id": rid, "position": ev.position})
        # A request's token 0 comes out of the prompt's prefill: it counts as a token, but its
        # time is TTFT, not a decode step (the run log's decode figures leave it out too).
        self.metrics.observe_token(ev.latency_ms / 1e3, None if ev.gpu_ms is None else ev.gpu_ms / 1e3,
                                   missed, fraction, step=index > 0 or source != "request")
        return rec

    def _finish(self, job: _Job, stats: RequestStats, reason: str | None, error: tuple[str, str] | None = None,
                log_start: bool = False) -> None:
        req = job.request
        assert req is not None
        if log_start:
            self._log_request_start(req, job.received, None)
        summary = stats.summary()
        if error is not None:
            code, message = error
            self._error(req.id, code, message, terminal=True)
            done = {"reason": code, **summary}
        else:
            tail = self.session.stream.flush() if self.session.stream is not None and stats.latencies_ms else ""
            done = {"id": req.id, "done": True, "reason": reason, **summary}
            if tail:
                done["text_tail"] = tail
            self._publish(json.dumps(done), terminal=True)
        if self.runlog is not None:
            self.runlog.request_end(req.id, done)
        self.metrics.request_done(outcome(done["reason"]))

    # --- output -----------------------------------------------------------------------------
    def _sink_ok(self) -> bool:
        return self.sink is not None and bool(getattr(self.sink, "connected", True))

    def _publish(self, msg: str, terminal: bool = False) -> None:
        if self.sink is None:
            return
        t = time.perf_counter()
        try:
            if not self._sink_ok():
                raise BridgeError("bridge not connected")
            self.sink.publish_token(msg)
            self.metrics.observe_bridge_publish(time.perf_counter() - t)
        except BridgeError:
            if terminal:  # a terminal record must reach the robot: keep it for the reconnect
                self._outbox.append(msg)

    def _reject_duplicate(self, rid: str | None, message: str, raw: Any) -> None:
        """A duplicate id's error record has id null and names the id in rejected_id: an error
        record whose id is a running request's would read as that request's end."""
        self._log_error(rid, "duplicate_id", message, raw)
        rec = {"id": None, "rejected_id": rid, "error": {"code": "duplicate_id", "message": message}}
        self._publish(json.dumps(rec), terminal=True)

    def _error(self, rid: str | None, code: str, message: str, raw: Any = None, terminal: bool = True) -> None:
        self._log_error(rid, code, message, raw)
        self._publish(json.dumps(error_record(rid, code, message)), terminal=terminal)

    def _log_error(self, rid: str | None, code: str, message: str, raw: Any = None) -> None:
        self.errors_total += 1
        if self.runlog is not None:
            self.runlog.error(rid, code, message, raw)

    def _log_event(self, kind: str, detail: dict[str, Any]) -> None:
        if self.runlog is not None:
            self.runlog.event(kind, detail)

    def _log_request_start(self, req: GenerateRequest, received: float, n_prompt: int | None) -> None:
        if self.runlog is not None:
            self.runlog.request_start(req.id, "messages" if req.messages else "prompt", received, n_prompt,
                                      req.max_new_tokens, req.deadline_ms, req.reset, req.to_json_dict())


def _num(x: float | None) -> str:
    if x is None:
        return "null"
    return repr(x) if -_INF < x < _INF else json.dumps(x)  # NaN/inf: spelled as json.dumps does


_INF = float("inf")
_esc = json.encoder.encode_basestring_ascii  # what json.dumps uses (ensure_ascii=True), in C


def token_json(rec: dict[str, Any]) -> str:
    """`json.dumps(rec)` for a token record, byte for byte, in about half the time: the
    encoder's generic dict walk is a measurable share of the per-token budget."""
    r = rec
    rid = "null" if r["id"] is None else _esc(r["id"])
    return (f'{{"id": {rid}, "index": {int(r["index"])}, "token_id": {int(r["token_id"])}, "text": {_esc(r["text"])}, '
            f'"latency_ms": {_num(r["latency_ms"])}, "gpu_ms": {_num(r["gpu_ms"])}, "floor_ms": {_num(r["floor_ms"])}, '
            f'"fraction": {_num(r["fraction"])}, "deadline_missed": {"true" if r["deadline_missed"] else "false"}, '
            f'"position": {int(r["position"])}, "ready_unix_ns": {int(r["ready_unix_ns"])}}}')


def _sig(x: float | None, digits: int = 6) -> float | None:
    """Round to significant digits: floors of tiny models are microseconds, big ones tens of ms."""
    return None if x is None else float(f"{x:.{digits}g}")


def outcome(reason: str) -> str:
    """A done reason or error code -> the bounded `outcome` label of edgeprof_requests_total."""
    if reason in ("length", "eos"):
        return "ok"
    if reason in ("cancelled", "shutdown"):
        return "cancelled"
    if reason == "timeout":
        return "timeout"
    if reason in REJECT_CODES:
        return "rejected"
    return "error"


def _best_id(raw: Any) -> str | None:
    """The id of a rejected request, when one can be read, so the robot can match the error."""
    try:
        obj = json.loads(raw)
    except Exception:
        return None
    if isinstance(obj, dict):
        v = obj.get("id", obj.get("cancel"))
        if isinstance(v, str) and 0 < len(v) <= 128 and v.isprintable():
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return None
            return v
    return None
