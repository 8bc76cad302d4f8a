"""The local rosbridge: environment recipe, binary, process lifecycle, `edgeprof bridge` (real processes)."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeprof.errors import BridgeError, BridgeTimeoutError, ConfigError
from edgeprof.ros import rosbridge
from edgeprof.ros.rosbridge import RosbridgeProcess, free_port, ros_env, start_rosbridge

pytestmark = pytest.mark.slow
DOMAIN = random.randint(1, 200)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_ros_env_meets_the_four_conditions_for_the_wheels():
    env = ros_env(DOMAIN)
    ld = env["LD_LIBRARY_PATH"].split(os.pathsep)
    # 1. the venv's lib/ and every site-packages/ros_*.libs folder
    assert str(Path(sys.prefix) / "lib") in ld
    site_libs = sorted(str(p) for sp in rosbridge._site_dirs() for p in sp.glob("ros_*.libs"))
    assert site_libs, "the ROS wheels should ship ros_*.libs folders"
    assert set(site_libs) <= set(ld)
    # 2. a folder whose librmw_implementation.so resolves to the FastDDS rmw
    shims = [Path(d) / "librmw_implementation.so" for d in ld if (Path(d) / "librmw_implementation.so").exists()]
    assert shims and shims[0].resolve() == (Path(sys.prefix) / "lib" / "librmw_fastrtps_cpp.so").resolve()
    # 3. libpython preloaded, and 4 is a flag (checked by the process tests)
    preload = env["LD_PRELOAD"].split()[0]
    assert re.search(r"libpython3\.\d+\.so", preload) and Path(preload).exists()
    assert env["RMW_IMPLEMENTATION"] == "rmw_fastrtps_cpp"
    assert env["ROS_DOMAIN_ID"] == str(DOMAIN)


def test_ros_env_keeps_the_callers_paths_and_domain():
    base = {"LD_LIBRARY_PATH": "/opt/mine", "LD_PRELOAD": "/opt/pre.so", "ROS_DOMAIN_ID": "7"}
    env = ros_env(None, base=base)
    assert env["LD_LIBRARY_PATH"].endswith(os.pathsep + "/opt/mine")
    assert env["LD_PRELOAD"].split()[-1] == "/opt/pre.so"
    assert env["ROS_DOMAIN_ID"] == "7"


@pytest.mark.parametrize("bad", [-1, 233, "3", 1.5, True])
def test_bad_domain_id_names_the_field(bad):
    with pytest.raises(ConfigError, match="domain_id"):
        ros_env(bad)


def test_binary_is_the_jazzy_build_and_executable():
    binary = rosbridge.find_binary()
    assert "jazzy" in binary.name
    assert os.access(binary, os.X_OK)


def test_missing_package_says_how_to_install(monkeypatch):
    real = rosbridge.importlib.util.find_spec
    monkeypatch.setattr(
        rosbridge.importlib.util, "find_spec", lambda name: None if name == "rosbridge_server_rs" else real(name)
    )
    with pytest.raises(BridgeError, match=r"pip install 'edgeprof\[ros\]'"):
        rosbridge.find_binary()


def test_start_accepts_websocket_then_restart_keeps_the_port(tmp_path):
    log = tmp_path / "rb.log"
    with start_rosbridge(domain_id=DOMAIN, log_path=log) as rb:
        assert rb.running() and rb.url == f"ws://127.0.0.1:{rb.port}"
        assert rosbridge._websocket_ready("127.0.0.1", rb.port)
        first_pid = rb.pid
        rb.restart()
        assert rb.running() and rb.pid != first_pid
        assert rosbridge._websocket_ready("127.0.0.1", rb.port)
        port = rb.port
    assert not rb.running()
    assert not _accepts(port)
    text = log.read_text()
    assert text.count("--no-rosapi") == 2  # started twice, with the recipe's flags
    assert "listening" in text


def test_port_in_use_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(BridgeError, match=f"port {port} .* already in use"):
            start_rosbridge(port=port, domain_id=DOMAIN)


def test_startup_timeout_raises_with_log_tail(tmp_path):
    rb = RosbridgeProcess(free_port(), domain_id=DOMAIN, log_path=tmp_path / "rb.log", startup_timeout_s=0.0)
    with pytest.raises(BridgeTimeoutError, match="log tail"):
        rb.start()
    assert not rb.running()


def test_bad_port_names_the_field():
    with pytest.raises(ConfigError, match="port"):
        RosbridgeProcess(70000)


def test_edgeprof_bridge_runs_in_the_foreground_until_interrupted():
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeprof.cli", "bridge", "--port", "0", "--domain-id", str(DOMAIN)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"ws://127\.0\.0\.1:(\d+)", line)
        assert match, f"no URL in {line!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        port = int(match.group(1))
        assert rosbridge._websocket_ready("127.0.0.1", port)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        deadline = time.monotonic() + 5
        while _accepts(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _accepts(port), "rosbridge must stop with the command"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_edgeprof_bridge_bad_domain_is_one_line_error():
    out = subprocess.run(
        [sys.executable, "-m", "edgeprof.cli", "bridge", "--domain-id", "999"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "domain_id" in out.stderr and "Traceback" not in out.stderr
