"""The SQLite run log: schema, batching, summary, and durability under kill -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from edgeprof.cli import main
from edgeprof.daemon.runlog import RunLog, format_summary, summarize
from edgeprof.errors import RunLogError


def _tok(rid, i, lat, fr=0.5, missed=False):
    return {"id": rid, "index": i, "token_id": 65 + i, "text": "A", "latency_ms": lat, "gpu_ms": None,
            "floor_ms": lat * fr, "fraction": fr, "deadline_missed": missed, "position": 10 + i}


def _write_log(path):
    log = RunLog(path, 0.05)
    log.start_run({"model": "m", "model_label": "m [SYNTHETIC]", "backend": "hf-static", "weights": "bf16",
                   "device": "cpu", "gpu": "cpu", "floors": {"floor_ms": 0.5}, "versions": {"python": "3"}})
    log.request_start("r1", "prompt", time.monotonic(), 5, 8, 20.0, False, {"id": "r1"})
    for i, lat in enumerate([30.0, 10.0, 11.0, 12.0, 50.0]):
        log.token(_tok("r1", i, lat, missed=lat > 20), time.monotonic())
    log.request_end("r1", {"reason": "length", "n_tokens": 5, "ttft_ms": 30.0})
    log.error("r2", "busy", "queue full", raw='{"id":"r2"}')
    log.error(None, "invalid_json", "bad", raw="\ud800 not storable as is")
    log.event("state", {"state": "active"})
    log.end_run("shutdown")
    log.close()
    return log


def test_wal_mode_and_tables(tmp_path):
    _write_log(tmp_path / "r.db")
    conn = sqlite3.connect(tmp_path / "r.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"run", "requests", "tokens", "errors", "events"} <= tables
    cols = {r[1] for r in conn.execute("PRAGMA table_info(tokens)")}
    assert {"latency_ms", "gpu_ms", "floor_ms", "fraction", "deadline_missed", "position", "t_mono"} <= cols


def test_summary(tmp_path):
    _write_log(tmp_path / "r.db")
    s = summarize(tmp_path / "r.db")
    assert s["requests"] == 1 and s["requests_by_reason"] == {"length": 1}
    assert s["tokens"] == 5 and s["decode_tokens"] == 4
    assert s["p50_ms"] == pytest.approx(11.5)  # decode steps only; the prefill token is ttft
    assert s["ttft_p50_ms"] == 30.0 and s["deadline_misses"] == 2
    assert s["errors_by_code"] == {"busy": 1, "invalid_json": 1} and s["fraction_median"] == 0.5
    assert s["runs"][0]["end_reason"] == "shutdown" and s["runs"][0]["floors"] == {"floor_ms": 0.5}
    text = format_summary(s)
    assert "p50 11.500 ms" in text and "busy 1" in text


def test_cli(tmp_path, capsys):
    _write_log(tmp_path / "r.db")
    assert main(["runlog", str(tmp_path / "r.db"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == 5
    assert main(["runlog", str(tmp_path / "missing.db")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "junk.db").write_text("not sqlite at all" * 100)
    with pytest.raises(RunLogError, match="not a readable"):
        summarize(tmp_path / "junk.db")


def test_kill_9_loses_at_most_about_a_second(tmp_path):
    path = tmp_path / "k.db"
    child = textwrap.dedent(f"""
        import time
        from edgeprof.daemon.runlog import RunLog
        log = RunLog({str(path)!r}, 0.25)
        log.start_run({{"model": "m"}})
        print("ready", flush=True)
        i = 0
        while True:
            log.token({{"id": "r", "index": i, "token_id": 1, "text": "x", "latency_ms": 1.0, "gpu_ms": None,
                       "floor_ms": 0.1, "fraction": 0.1, "deadline_missed": False, "position": i}}, time.monotonic())
            i += 1
            time.sleep(0.002)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.5)
    killed_at = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)
    s = summarize(path)  # readable after the kill
    conn = sqlite3.connect(path)
    last = conn.execute("SELECT MAX(t_mono) FROM tokens").fetchone()[0]
    assert s["tokens"] > 100
    assert killed_at - last < 1.0, f"lost {killed_at - last:.2f} s of records"


def test_flush_commits_now_and_rows_are_batched(tmp_path):
    # The writer sleeps a whole interval between commits (no wake-up per token); flush() cuts it short.
    log = RunLog(tmp_path / "b.db", flush_interval_s=30.0)
    log.start_run({"model": "m", "backend": "hf-static"})
    for i in range(50):
        log.token(_tok("r1", i, 10.0), time.monotonic())
    t0 = time.monotonic()
    assert log.flush(timeout=5.0) and time.monotonic() - t0 < 5.0
    assert log.rows_written >= 50
    log.token(_tok("r1", 50, 10.0), time.monotonic())
    log.close()  # commits the last row
    n = sqlite3.connect(tmp_path / "b.db").execute("SELECT COUNT(*) FROM tokens").fetchone()[0]
    assert n == 51
