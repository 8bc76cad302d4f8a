"""The daemon serving with llama.cpp end to end: a real rosbridge, `edgeprof serve --backend auto
--device cpu` on the embedded SmolLM2 GGUF as a subprocess, and a real rclpy robot over DDS.
On this CPU-only machine auto must pick llamacpp after its kernel-correctness check passes."""

from __future__ import annotations

import importlib.util
import json
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edgeprof.errors import BridgeTimeoutError
from edgeprof.ros.robot import RobotProcess
from edgeprof.ros.rosbridge import free_port, start_rosbridge

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python is not installed: it is the edgeprof[llamacpp] extra, built from "
                              "source by `bash scripts/setup.sh` (skipped with --no-llamacpp)"),
]
DOMAIN = random.randint(1, 200)
REPO = Path(__file__).resolve().parents[2]
STARTUP_S = 240  # model load + the kernel-correctness check on a busy 2-core machine
COLOURS = ("red", "blue", "green", "yellow", "orange", "purple", "pink", "black", "white", "brown", "violet",
           "indigo", "gray", "grey")


def test_daemon_serves_with_llamacpp_through_ros(tmp_path) -> None:
    runlog = tmp_path / "run.db"
    log_path = tmp_path / "daemon.log"
    with start_rosbridge(0, domain_id=DOMAIN, log_path=tmp_path / "rosbridge.log") as rb, \
            open(log_path, "w") as log:
        cmd = [sys.executable, "-m", "edgeprof.cli", "serve", "--model", "default", "--backend", "auto",
               "--device", "cpu", "--port", str(rb.port), "--metrics-port", str(free_port()), "--max-ctx", "256",
               "--runlog", str(runlog)]
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        robot = RobotProcess(DOMAIN)
        try:
            try:
                robot.wait_ready(STARTUP_S)
            except BridgeTimeoutError:
                pytest.fail(f"daemon did not come up:\n{log_path.read_text()[-3000:]}")
            recs = robot.send_request(messages=[{"role": "user", "content": "Name three colors."}],
                                      max_new_tokens=24, request_id="colours", reset=True, timeout_s=120)
            status = robot.last_status()
        finally:
            robot.close()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, log_path.read_text()[-3000:]
    tokens = [r for r in recs if "index" in r]
    done = recs[-1]
    assert done.get("done") and tokens, recs[-3:]
    reply = "".join(t.get("text", "") for t in tokens).lower()
    assert any(c in reply for c in COLOURS), reply
    assert all(t["latency_ms"] > 0 and t["floor_ms"] > 0 for t in tokens)
    if status is not None:  # the status topic may match later than the services
        assert status["backend"] == "llamacpp"
    with sqlite3.connect(runlog) as db:
        backend, weights, config = db.execute("SELECT backend, weights, config FROM run").fetchone()
    assert backend == "llamacpp" and weights == "gguf-q4_1"
    check = json.loads(config)["kernel_correctness"]
    assert check["passed"] and check["mode"] == "teacher-forced", check
    assert "auto: llamacpp kernel correctness passed" in log_path.read_text()
