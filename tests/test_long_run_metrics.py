"""`edgeprof bench` / `edgeprof sweep` with --metrics-port: the real CLI serves Prometheus
metrics over HTTP while it runs, and --metrics-linger-s keeps the endpoint up for a last scrape."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _samples(text: str, name: str) -> dict[str, float]:
    """{label text: value} of one series name in a Prometheus exposition."""
    out = {}
    for m in re.finditer(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.M):
        out[m.group(1) or ""] = float(m.group(2))
    return out


def _scrape_until(proc: subprocess.Popen, port: int, name: str, want: int, timeout: float = 240) -> str:
    """Poll /metrics until the `name` series sum to `want` (or the run ends without it)."""
    url, text, deadline = f"http://127.0.0.1:{port}/metrics", "", time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                text = r.read().decode()
            if sum(_samples(text, name).values()) >= want:
                return text
        except OSError:
            pass  # not up yet (the CLI is still importing torch)
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    out, err = proc.communicate(timeout=30) if proc.poll() is not None else ("", "")
    pytest.fail(f"no {name} >= {want} at {url}; exit {proc.poll()}; last scrape:\n{text[-2000:]}\n{err[-2000:]}")


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeprof.cli", *args], cwd=REPO, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[str, str]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out, err


def test_bench_serves_metrics_while_it_runs() -> None:
    port = _free_port()
    proc = _start("bench", "--model", "tiny-test", "--backend", "hf-static", "--ctx", "64", "--no-quality", "--steps", "7",
                  "--warmup", "1", "--device", "cpu", "--metrics-port", str(port), "--metrics-linger-s", "30")
    try:
        text = _scrape_until(proc, port, "edgeprof_decode_step_seconds_count", 7)
        labels = '{backend="hf-static",gpu="cpu",model="tiny-test",weights="bf16"}'
        assert _samples(text, "edgeprof_decode_step_seconds_count") == {labels: 7.0}  # one series, per step
        assert _samples(text, "edgeprof_tokens_total") == {labels: 7.0}
        assert _samples(text, "edgeprof_time_to_first_token_seconds_count") == {labels: 1.0}  # the fill
        floors = _samples(text, "edgeprof_memory_floor_seconds")
        assert len(floors) == 2 and all(v > 0 for v in floors.values())  # paper + touched
        assert _samples(text, "edgeprof_floor_fraction")[labels] > 0
        assert not any(line.startswith("edgeprof_gpu_") for line in text.splitlines())  # CPU: omitted
    finally:
        proc.terminate()  # cut the linger short
        proc.communicate(timeout=30)


def test_sweep_serves_one_series_per_label_set(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("name: metrics-tiny\nsteps: 5\nwarmup: 1\ndevice: cpu\nquality_tokens: 0\nmodels: [tiny-test]\n"
                   "backends: [hf-eager, hf-static]\ncontexts: [48, 64]\n")
    port = _free_port()
    proc = _start("sweep", str(cfg), "--out", str(tmp_path / "out"), "--no-plots", "--no-progress",
                  "--metrics-port", str(port), "--metrics-linger-s", "30")
    try:
        text = _scrape_until(proc, port, "edgeprof_decode_step_seconds_count", 4 * 5)
        counts = _samples(text, "edgeprof_decode_step_seconds_count")
        # two ctx cells per backend share one label set: 2 series x (2 cells x 5 steps), no duplicates
        assert sorted(counts.values()) == [10.0, 10.0] and len(counts) == 2
        assert {re.search(r'backend="([^"]+)"', k).group(1) for k in counts} == {"hf-eager", "hf-static"}
        assert sum(_samples(text, "edgeprof_time_to_first_token_seconds_count").values()) == 4
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_metrics_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "edgeprof.cli", "bench", "--model", "tiny-test", "--backend",
                            "hf-eager", "--ctx", "32", "--steps", "2", "--warmup", "0", "--device", "cpu",
                            "--metrics-port", str(port)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert str(port) in r.stderr and "in use" in r.stderr and len(r.stderr.strip().splitlines()) == 1
