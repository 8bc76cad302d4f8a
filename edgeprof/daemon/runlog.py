"""The durable run log: SQLite in WAL mode, written by one background thread.

Callers (the decode worker) only put rows on a queue; the writer thread batches
them and commits at least every `flush_interval_s` (0.25 s by default). In WAL mode
a committed transaction survives the process being killed (`synchronous=NORMAL`
only risks the last commits on an OS crash / power loss), so a `kill -9` loses at
most the rows of the last interval plus one commit: about 0.3 s.

Tables (all rows carry `run_id`; one file may hold several runs):
  run       model, backend, gpu, versions, floors, config, start/end
  requests  one row per accepted request, updated when it ends
  tokens    every token record field + monotonic and wall timestamps
  errors    every error record sent (bad requests included)
  events    lifecycle transitions, overflow actions, bridge drops...
"""

from __future__ import annotations

import contextlib
import json
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeprof.errors import RunLogError

SCHEMA = """
CREATE TABLE IF NOT EXISTS run (
  run_id INTEGER PRIMARY KEY AUTOINCREMENT,
  started_wall REAL, started_mono REAL, ended_wall REAL, end_reason TEXT,
  model TEXT, model_label TEXT, synthetic INTEGER, backend TEXT, weights TEXT, device TEXT,
  gpu TEXT, gpu_name TEXT, max_ctx INTEGER, versions TEXT, floors TEXT, config TEXT, host TEXT
);
CREATE TABLE IF NOT EXISTS requests (
  run_id INTEGER, id TEXT, kind TEXT, received_mono REAL, started_mono REAL, ended_mono REAL,
  prompt_tokens INTEGER, max_new_tokens INTEGER, deadline_ms REAL, reset INTEGER,
  reason TEXT, n_tokens INTEGER, ttft_ms REAL, p50_ms REAL, p99_ms REAL, fraction_median REAL,
  deadline_misses INTEGER, request TEXT,
  PRIMARY KEY (run_id, id)
);
CREATE TABLE IF NOT EXISTS tokens (
  run_id INTEGER, request_id TEXT, idx INTEGER, token_id INTEGER, text TEXT,
  latency_ms REAL, gpu_ms REAL, floor_ms REAL, fraction REAL, deadline_missed INTEGER, position INTEGER,
  source TEXT, context_event TEXT, t_mono REAL, t_wall REAL
);
CREATE TABLE IF NOT EXISTS errors (
  run_id INTEGER, request_id TEXT, code TEXT, message TEXT, raw TEXT, t_mono REAL, t_wall REAL
);
CREATE TABLE IF NOT EXISTS events (
  run_id INTEGER, kind TEXT, detail TEXT, t_mono REAL, t_wall REAL
);
CREATE INDEX IF NOT EXISTS tokens_by_request ON tokens (run_id, request_id);
"""

_STOP = object()
MAX_RAW_CHARS = 2048  # a malformed request is kept, truncated, so the log stays bounded


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(str(path), timeout=10, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
    except sqlite3.Error as exc:
        raise RunLogError(f"run log {path}: cannot open ({exc}); check the path and that the disk is writable") from None
    return conn


class RunLog:
    """Append-only writer. Thread-safe: any thread may call the log_* methods."""

    enabled = True

    def __init__(self, path: str | Path, flush_interval_s: float = 0.25) -> None:
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.flush_interval_s = flush_interval_s
        self._conn = _connect(self.path)
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.run_id: int | None = None
        self.rows_written = 0
        self.write_error: str | None = None
        self._flushed = threading.Condition()
        self._enqueued = 0
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._writer, name="edgeprof-runlog", daemon=True)
        self._thread.start()

    # --- run ------------------------------------------------------------------------------
    def start_run(self, info: dict[str, Any]) -> int:
        """Insert the run row synchronously (its id keys every other row)."""
        cols = ("model", "model_label", "synthetic", "backend", "weights", "device", "gpu", "gpu_name",
                "max_ctx", "versions", "floors", "config", "host")
        vals = [_sql_value(info.get(c)) for c in cols]
        with self._flushed:  # the writer thread uses the same connection; serialise
            cur = self._conn.execute(
                f"INSERT INTO run (started_wall, started_mono, {', '.join(cols)}) VALUES (?, ?, {', '.join('?' * len(cols))})",
                [time.time(), time.monotonic(), *vals])
        self.run_id = int(cur.lastrowid)
        return self.run_id

    def end_run(self, reason: str) -> None:
        self._put("UPDATE run SET ended_wall=?, end_reason=? WHERE run_id=?", (time.time(), reason, self.run_id))

    # --- rows -----------------------------------------------------------------------------
    def request_start(self, req_id: str, kind: str, received_mono: float, prompt_tokens: int | None,
                      max_new_tokens: int | None, deadline_ms: float | None, reset: bool, request: dict | None) -> None:
        self._put("INSERT OR REPLACE INTO requests (run_id, id, kind, received_mono, started_mono, prompt_tokens, "
                  "max_new_tokens, deadline_ms, reset, request) VALUES (?,?,?,?,?,?,?,?,?,?)",
                  (self.run_id, req_id, kind, received_mono, time.monotonic(), prompt_tokens, max_new_tokens,
                   deadline_ms, int(reset), _sql_value(request)))

    def request_end(self, req_id: str, done: dict[str, Any]) -> None:
        self._put("UPDATE requests SET ended_mono=?, reason=?, n_tokens=?, ttft_ms=?, p50_ms=?, p99_ms=?, "
                  "fraction_median=?, deadline_misses=? WHERE run_id=? AND id=?",
                  (time.monotonic(), done.get("reason"), done.get("n_tokens"), done.get("ttft_ms"),
                   done.get("p50_ms"), done.get("p99_ms"), done.get("fraction_median"),
                   done.get("deadline_misses"), self.run_id, req_id))

    def token(self, rec: dict[str, Any], t_mono: float, source: str = "request",
              context_event: str | None = None) -> None:
        self._put("INSERT INTO tokens VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                  (self.run_id, rec["id"], rec["index"], rec["token_id"], rec["text"], rec["latency_ms"],
                   rec["gpu_ms"], rec["floor_ms"], rec["fraction"], int(bool(rec["deadline_missed"])),
                   rec["position"], source, context_event, t_mono, time.time()))

    def error(self, req_id: str | None, code: str, message: str, raw: Any = None) -> None:
        raw_s = None if raw is None else _truncate(raw)
        self._put("INSERT INTO errors VALUES (?,?,?,?,?,?,?)",
                  (self.run_id, req_id, code, message, raw_s, time.monotonic(), time.time()))

    def event(self, kind: str, detail: dict[str, Any] | None = None) -> None:
        self._put("INSERT INTO events VALUES (?,?,?,?,?)",
                  (self.run_id, kind, _sql_value(detail or {}), time.monotonic(), time.time()))

    # --- writer ---------------------------------------------------------------------------
    def _put(self, sql: str, params: tuple) -> None:
        with self._flushed:
            self._enqueued += 1
        self._q.put((sql, params))

    def _writer(self) -> None:
        # Sleep a flush interval (or until flush/close wakes us), then drain and commit.
        # Blocking in q.get() instead would wake this thread on every token row: a thread
        # hand-off and a GIL fight with the decode worker per token (the daemon's hot path).
        stopping = False
        while not stopping:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            batch: list[tuple[str, tuple]] = []
            while True:
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._commit(batch)

    def _commit(self, batch: list[tuple[str, tuple]]) -> None:
        if batch:
            with self._flushed:
                try:
                    self._conn.execute("BEGIN")
                    for sql, params in batch:
                        self._conn.execute(sql, params)
                    self._conn.execute("COMMIT")
                    self.rows_written += len(batch)
                except sqlite3.Error as exc:  # keep serving; the error is visible in status and close()
                    self.write_error = str(exc)
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                    self.rows_written += len(batch)  # counted as handled, so flush() does not hang
        with self._flushed:
            self._flushed.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Block until every row queued so far is committed."""
        end = time.monotonic() + timeout
        self._wake.set()  # commit now, not at the end of the interval
        with self._flushed:
            target = self._enqueued
            while self.rows_written < target:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._flushed.wait(left)
        return True

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._q.put(_STOP)
        self._wake.set()
        self._thread.join(timeout=10)
        with self._flushed:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()


class NullRunLog:
    """Same API, records nothing (runlog.enabled: false)."""

    enabled = False
    run_id = None
    write_error = None

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


def _sql_value(v: Any) -> Any:
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, default=str)
    if isinstance(v, bool):
        return int(v)
    return v


def _truncate(raw: Any) -> str:
    s = raw if isinstance(raw, str) else (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else repr(raw))
    s = s.encode("utf-8", "replace").decode("utf-8")  # lone surrogates cannot be stored as TEXT
    return s if len(s) <= MAX_RAW_CHARS else s[:MAX_RAW_CHARS] + "...[truncated]"


# --- reading ----------------------------------------------------------------------------------
def _pct(xs: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q)) if xs else None


def summarize(path: str | Path, run_id: int | None = None) -> dict[str, Any]:
    """Summary of a run log (all runs, or one): the `edgeprof runlog` output and the
    report command's input. Works on a log left by a killed daemon."""
    path = Path(path)
    if not path.exists():
        raise RunLogError(f"{path} does not exist; pass the runlog.path of an `edgeprof serve` run")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        return _summarize(conn, run_id, path)
    except sqlite3.DatabaseError as exc:
        raise RunLogError(f"{path} is not a readable edgeprof run log ({exc})") from None


def _summarize(conn: sqlite3.Connection, run_id: int | None, path: Path) -> dict[str, Any]:
    where, args = ("WHERE run_id=?", (run_id,)) if run_id is not None else ("", ())
    runs = [dict(r) for r in conn.execute(f"SELECT * FROM run {where} ORDER BY run_id", args)]
    if run_id is not None and not runs:
        raise RunLogError(f"{path} has no run {run_id}")
    for r in runs:
        for k in ("versions", "floors", "config"):
            r[k] = json.loads(r[k]) if r.get(k) else None
    tok = conn.execute(f"SELECT latency_ms, fraction, deadline_missed, idx, source, t_mono FROM tokens {where}", args)
    rows = tok.fetchall()
    decode = [r["latency_ms"] for r in rows if r["idx"] > 0 or r["source"] != "request"]
    fr = [r["fraction"] for r in rows if r["fraction"] is not None and (r["idx"] > 0 or r["source"] != "request")]
    reqs = conn.execute(f"SELECT reason, ttft_ms FROM requests {where}", args).fetchall()
    reasons: dict[str, int] = {}
    for r in reqs:
        key = r["reason"] or "unfinished"
        reasons[key] = reasons.get(key, 0) + 1
    errs = {r[0]: r[1] for r in conn.execute(f"SELECT code, COUNT(*) FROM errors {where} GROUP BY code", args)}
    ttft = [r["ttft_ms"] for r in reqs if r["ttft_ms"] is not None]
    t = [r["t_mono"] for r in rows]
    return {
        "path": str(path),
        "runs": [{k: r[k] for k in ("run_id", "model", "model_label", "synthetic", "backend", "weights", "device",
                                     "gpu", "gpu_name", "max_ctx", "started_wall", "ended_wall", "end_reason",
                                     "versions", "floors")} for r in runs],
        "requests": len(reqs),
        "requests_by_reason": reasons,
        "tokens": len(rows),
        "decode_tokens": len(decode),
        "p50_ms": _pct(decode, 50),
        "p99_ms": _pct(decode, 99),
        "ttft_p50_ms": _pct(ttft, 50),
        "fraction_median": _pct(fr, 50),
        "deadline_misses": int(sum(r["deadline_missed"] or 0 for r in rows)),
        "errors": sum(errs.values()),
        "errors_by_code": errs,
        "token_span_s": (max(t) - min(t)) if t else 0.0,
    }


def format_summary(s: dict[str, Any]) -> str:
    """Human-readable lines for `edgeprof runlog`."""
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f} ms"

    lines = [f"run log {s['path']}"]
    for r in s["runs"]:
        label = r["model_label"] or r["model"]
        floors = r.get("floors") or {}
        lines.append(f"  run {r['run_id']}: {label} | backend {r['backend']} ({r['weights']}) | {r['device']} | "
                     f"gpu {r['gpu']} | floor at ctx 1 {ms(floors.get('floor_ms'))} | "
                     f"ended: {r['end_reason'] or 'not cleanly (killed?)'}")
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["requests_by_reason"].items())) or "none"
    lines += [
        f"  requests: {s['requests']} ({reasons})",
        f"  tokens: {s['tokens']} ({s['decode_tokens']} decode steps)",
        f"  decode latency: p50 {ms(s['p50_ms'])}, p99 {ms(s['p99_ms'])}; ttft p50 {ms(s['ttft_p50_ms'])}",
        "  fraction of floor (median): " + ("-" if s["fraction_median"] is None else f"{s['fraction_median']:.3f}"),
        f"  deadline misses: {s['deadline_misses']}",
        f"  errors: {s['errors']}" + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(s["errors_by_code"].items()))
                                       + ")" if s["errors"] else ""),
    ]
    return "\n".join(lines)
