"""Security defaults: every listening socket binds loopback unless configured, no remote code
runs from a checkpoint, and the request limits exist. Real sockets, real processes."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from edgeprof.daemon.config import DaemonConfig, SessionConfig
from edgeprof.daemon.requests import parse_request
from edgeprof.errors import EdgeprofError, RequestError


def _listening(pid: int) -> list[str]:
    return [c.laddr.ip for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]


def test_config_defaults_bind_loopback():
    cfg = DaemonConfig()
    assert cfg.bridge.host == "127.0.0.1" and cfg.metrics.host == "127.0.0.1"


def test_the_metrics_endpoint_listens_on_loopback_only_and_refuses_a_public_address_unless_allowed():
    from edgeprof.metrics import MetricsPublisher

    pub = MetricsPublisher({"model": "m", "backend": "b", "gpu": "cpu", "weights": "bf16"})
    try:
        port = pub.start_server(port=0)  # the daemon's default host
        mine = [c for c in psutil.Process().net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
        assert [c.laddr.ip for c in mine] == ["127.0.0.1"]
    finally:
        pub.close()
    with pytest.raises(EdgeprofError, match="not a loopback address"):
        MetricsPublisher({"model": "m", "backend": "b", "gpu": "cpu", "weights": "bf16"}).start_server("0.0.0.0", 0)


@pytest.mark.slow
def test_edgeprof_bridge_listens_on_loopback_only_by_default():
    proc = subprocess.Popen([sys.executable, "-m", "edgeprof.cli", "bridge", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        pid = int(re.search(r"pid (\d+)", line).group(1))
        deadline = time.monotonic() + 10
        while not (ips := _listening(pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ips and set(ips) == {"127.0.0.1"}, ips
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        proc.stdout.close()


def test_a_checkpoint_with_remote_code_is_refused_and_its_code_never_runs(tmp_path):
    from edgeprof.sources import load_pretrained

    marker = tmp_path / "ran"
    (tmp_path / "config.json").write_text(
        '{"model_type": "edgeprof_evil", "architectures": ["EvilForCausalLM"], '
        '"auto_map": {"AutoConfig": "modeling_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}}')
    (tmp_path / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    with pytest.raises(EdgeprofError):
        load_pretrained(str(tmp_path), "cpu")
    assert not marker.exists()  # trust_remote_code stays off: the checkpoint's Python never ran


def test_request_limits_exist_and_are_enforced():
    cfg = SessionConfig()
    assert 0 < cfg.max_request_bytes <= 1 << 20 and 0 < cfg.max_new_tokens_limit <= 1 << 16
    assert 0 < cfg.max_queue <= 1024 and cfg.max_ctx > 0
    big = '{"id": "a", "prompt": "' + "x" * cfg.max_request_bytes + '", "max_new_tokens": 1}'
    with pytest.raises(RequestError) as info:
        parse_request(big, cfg.max_new_tokens_limit, cfg.max_request_bytes)
    assert info.value.code == "request_too_large"
    many = f'{{"id": "a", "prompt": "x", "max_new_tokens": {cfg.max_new_tokens_limit + 1}}}'
    with pytest.raises(RequestError) as info:
        parse_request(many, cfg.max_new_tokens_limit, cfg.max_request_bytes)
    assert info.value.code == "max_new_tokens_too_large"
    # queue depth (busy) and prompt tokens (prompt_too_long) need the session: they are checked
    # in tests/daemon/test_service.py and over the real bridge in tests/daemon/test_daemon_ros.py
