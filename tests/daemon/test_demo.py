"""`edgeprof demo` end to end on this CPU machine: real SmolLM2, rosbridge, daemon, rclpy robot."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_and_stops_everything(run_edgeprof, tmp_path):
    def demo(n: int):
        return run_edgeprof("demo", "--max-new-tokens", "6", "--next-tokens", "2", "--runlog",
                            str(tmp_path / f"d{n}.db"), timeout=600)

    res = demo(1)
    # KNOWN INTERMITTENT (open, closing note of 2026-11-28): in 2 of ~6 full-suite runs on a loaded
    # 2-core VM the robot's first request got no record at all within 300 s, while the demo alone passed
    # every time. Until the cause is found the test allows one more run, and only for that symptom.
    if res.returncode != 0 and "no done/error record within" in res.stdout + res.stderr:
        print("first demo run lost its request (known intermittent); running it once more")
        res = demo(2)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    out = res.stdout
    tokens = re.findall(r"latency +[\d.]+ ms +floor +[\d.]+ ms +fraction +[\d.]+", out)
    assert len(tokens) >= 3  # reply tokens + next_token calls, each against the floor
    assert "done (" in out and "next_token round trip" in out
    assert "requests: 1" in out and "SmolLM2-135M-Instruct, real weights" in out
    assert "state finalized" in out
