"""launch/: the params YAML -> `edgeprof serve` command, and the plain launcher with a real bridge."""

from __future__ import annotations

import importlib.util
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeprof.ros.rosbridge import _websocket_ready

LAUNCH = Path(__file__).resolve().parents[2] / "launch"
DOMAIN = random.randint(1, 200)


def _launch_module():
    spec = importlib.util.spec_from_file_location("edgeprof_launch", LAUNCH / "edgeprof.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # must not need ROS 2: launch imports are inside the function
    return module


def test_default_params_give_rosbridge_port_9091_and_a_serve_command():
    mod = _launch_module()
    rosbridge, edgeprof = mod.load_params(str(LAUNCH / "edgeprof_params.yaml"))
    assert rosbridge["port"] == 9091 and rosbridge["address"] == "127.0.0.1"
    cmd = mod.serve_command("edgeprof", edgeprof, "127.0.0.1", 9091)
    assert cmd[:2] == ["edgeprof", "serve"]
    assert cmd[-4:] == ["--host", "127.0.0.1", "--port", "9091"]
    assert cmd[cmd.index("--model") + 1] == "smollm2-135m"
    assert cmd[cmd.index("--metrics-port") + 1] == "9464"


def test_serve_command_flags_exist_in_edgeprof_serve():
    from edgeprof.cli import build_parser

    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    known = {s for a in serve._actions for s in a.option_strings}
    mod = _launch_module()
    assert set(mod.SERVE_FLAGS.values()) | {"--host", "--port"} <= known


def test_unknown_edgeprof_param_is_rejected(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("edgeprof:\n  ros__parameters:\n    modle: x\n")
    with pytest.raises(ValueError, match="modle"):
        _launch_module().load_params(str(bad))


@pytest.mark.slow
def test_run_local_starts_the_bridge_and_stops_on_sigterm():
    proc = subprocess.Popen(
        [sys.executable, str(LAUNCH / "run_local.py"), "--no-serve", "--port", "0", "--domain-id", str(DOMAIN)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        line = proc.stdout.readline()
        port = int(re.search(r"ws://127\.0\.0\.1:(\d+)", line).group(1))
        assert _websocket_ready("127.0.0.1", port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        time.sleep(0.2)
        assert not _websocket_ready("127.0.0.1", port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_run_local_end_to_end_bridge_daemon_and_robot(tmp_path):
    """The plain launcher as a user runs it: a real rosbridge, `edgeprof serve` and the sample rclpy
    robot, from a params YAML; the robot's request ends with a done record and the launcher exits 0
    after stopping the daemon and the bridge (in that order)."""
    params = tmp_path / "params.yaml"
    params.write_text(
        "rosbridge_websocket:\n  ros__parameters:\n    port: 0\n    address: 127.0.0.1\n"
        "edgeprof:\n  ros__parameters:\n    model: tiny-test\n    backend: hf-eager\n    device: cpu\n"
        f"    metrics_port: 0\n    runlog: {tmp_path / 'run.db'}\n")
    proc = subprocess.run(
        [sys.executable, str(LAUNCH / "run_local.py"), "--params", str(params), "--port", "0",
         "--domain-id", str(DOMAIN + 1), "--robot", "hello robot", "--next-tokens", "2"],
        capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "robot -> request: 'hello robot'" in out
    assert re.search(r"done \((eos|length)\)", out), out[-3000:]
    assert out.count("next_token round trip") == 2
    assert out.index("stopping edgeprof serve") < out.index("stopping rosbridge")
    from edgeprof.daemon.runlog import summarize

    assert summarize(tmp_path / "run.db")["tokens"] > 0
