"""benchmarks/robot_latency.py end to end on the CPU with tiny settings: the real bridge
(`edgeprof bridge`), the daemon and an rclpy robot. Not timed: it checks the script runs and
its record holds what the GPU runs are read for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_robot_latency_runs_end_to_end(tmp_path):
    out = tmp_path / "rl"
    proc = subprocess.run(
        [sys.executable, "benchmarks/robot_latency.py", "--model", "tiny-test", "--backends", "hf-static",
         "--device", "cpu", "--tokens", "6", "--requests", "2", "--rounds", "1", "--trigger-n", "3",
         "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rec = json.loads((out / "robot_latency.json").read_text())
    (b,) = rec["backends"]
    assert b["backend"] == "hf-static" and b["synthetic"] and "SYNTHETIC" in rec["model_label"]
    r = b["rounds"][0]
    assert len(r["raw_step_ms"]) == 2 * (6 - 2)  # steps 2.. of each request, as the robot's periods
    assert len(r["period_ms"]) == 2 * (6 - 2) and len(r["hop_ms"]) == 2 * 6
    assert all(h > 0 for h in r["hop_ms"])  # receipt after the daemon's ready stamp, one clock
    for kind in ("trigger", "topic", "prearmed"):
        assert len(r[kind]["rtt_ms"]) == 3 and all(x > 0 for x in r[kind]["rtt_ms"])
    assert set(b["summary"]["meets"]) >= {"period_within_1pct_p50", "hop_p50_le_1ms", "hop_p99_le_3ms",
                                          "trigger_rtt_le_step_plus_1ms", "first_token_not_a_step_late"}
    assert (out / "robot_latency.png").stat().st_size > 10_000
