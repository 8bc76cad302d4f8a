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
    # Until 2026-11-28 the robot's first request was lost in about 2 of 6 loaded full-suite runs: the runlog
    # then held no request at all: it never reached the daemon. The likely cause: the robot's publisher saw
    # the bridge's subscriber before that subscriber had matched the publisher, and a message in between is
    # dropped. wait_ready now pings the daemon until it answers, so this test no longer runs the demo twice.
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    out = res.stdout
    tokens = re.findall(r"latency +[\d.]+ ms +floor +[\d.]+ ms +fraction +[\d.]+", out)
    assert len(tokens) >= 3  # reply tokens + next_token calls, each against the floor
    assert "done (" in out and "next_token round trip" in out
    assert "requests: 1" in out and "SmolLM2-135M-Instruct, real weights" in out
    assert "state finalized" in out
