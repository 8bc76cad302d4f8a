"""Lifecycle transitions (ros2/demos style): order enforced, shutdown from anywhere."""

from __future__ import annotations

import threading

import pytest

from edgeprof.daemon.config import DaemonConfig, apply_overrides
from edgeprof.daemon.lifecycle import Daemon, State, choose_backend
from edgeprof.daemon.runlog import summarize
from edgeprof.errors import BackendUnavailableError, DaemonStateError, UnknownChoiceError


def test_transitions_in_the_wrong_state_are_refused(tmp_path):
    d = Daemon(apply_overrides(DaemonConfig(), model="tiny-test", device="cpu", runlog=str(tmp_path / "r.db")))
    assert d.state is State.UNCONFIGURED and d.status()["state"] == "unconfigured"
    for wrong in (d.activate, d.deactivate, d.cleanup):
        with pytest.raises(DaemonStateError, match="unconfigured"):
            wrong()
    d.configure()
    assert d.state is State.INACTIVE and d.backend == "edgeprof-fast" and d.gpu_spec.key == "cpu"
    with pytest.raises(DaemonStateError):
        d.configure()
    d.cleanup()
    assert d.state is State.UNCONFIGURED
    d.shutdown()
    assert d.state is State.FINALIZED
    with pytest.raises(DaemonStateError, match="finalized"):
        d.configure()
    d.shutdown()  # idempotent


def test_backend_choice():
    import importlib.util

    # tiny-test has no GGUF, so llama.cpp is no candidate for it; the embedded SmolLM2 has one
    assert choose_backend("auto", "cpu", "tiny-test") == "edgeprof-fast"
    has_llamacpp = importlib.util.find_spec("llama_cpp") is not None
    assert choose_backend("auto", "cpu", "default") == ("llamacpp" if has_llamacpp else "edgeprof-fast")
    assert choose_backend("auto", "cuda", "default") == "edgeprof-fast"  # llama.cpp is a CPU auto choice only
    assert choose_backend("hf-eager", "cpu") == "hf-eager"
    with pytest.raises(UnknownChoiceError):
        choose_backend("nope", "cpu")
    with pytest.raises((DaemonStateError, BackendUnavailableError)):
        choose_backend("hf-graph", "cpu")


def test_in_process_activation_without_a_bridge_fails_cleanly(tmp_path):
    from edgeprof.errors import BridgeTimeoutError
    from edgeprof.ros.rosbridge import free_port

    cfg = apply_overrides(DaemonConfig(), model="tiny-test", device="cpu", runlog=str(tmp_path / "r.db"),
                          port=free_port(), metrics_port=0)
    d = Daemon(cfg)
    d.configure()
    d.config = d.config.__class__(**{**d.config.__dict__, "warmup_steps": 0})
    with pytest.raises(BridgeTimeoutError, match="edgeprof bridge"):
        d.activate()
    assert d.state is State.INACTIVE
    loader = d._model_thread  # loaded the model; the decode loop ran there until the bridge failed
    assert loader is not None and d.service is not None and not d.service.running
    assert d.decoder.position == 0  # warm-up left an empty cache
    d.shutdown()
    assert d._model_thread is None and not any(t.ident == loader.ident for t in threading.enumerate())
    s = summarize(tmp_path / "r.db")
    assert s["runs"][0]["end_reason"] == "shutdown"


class InProcessBridge:
    """A bridge that lives in this process: what the robot side would receive, as a list.
    Built by the daemon with BridgeClient's arguments (the injected-bridge seam)."""

    def __init__(self, host, port, *, names, connect_timeout_s, on_request, on_next_token, on_reset,
                 on_connection_change) -> None:
        self.names, self.on_request, self.on_connection_change = names, on_request, on_connection_change
        self.connected, self.tokens, self.statuses = False, [], []
        self.done = threading.Event()

    def start(self) -> None:
        self.connected = True
        self.on_connection_change(True)

    def close(self) -> None:
        self.connected = False

    def publish_token(self, msg: str) -> None:
        self.tokens.append(msg)
        if '"done": true' in msg:
            self.done.set()

    def publish_status(self, msg: str) -> None:
        self.statuses.append(msg)


def test_activation_with_an_injected_bridge_serves_a_request(tmp_path):
    import json

    bridges: list[InProcessBridge] = []

    def factory(*args, **kwargs):
        bridges.append(InProcessBridge(*args, **kwargs))
        return bridges[-1]

    cfg = apply_overrides(DaemonConfig(), model="tiny-test", device="cpu", runlog=str(tmp_path / "r.db"),
                          metrics_port=0)
    d = Daemon(cfg, bridge_factory=factory)
    try:
        d.configure()
        d.activate()
        assert d.state is State.ACTIVE and d.status()["bridge_connected"]
        (bridge,) = bridges
        assert bridge.names.request == cfg.topics.request  # the configured topic names reach the bridge
        bridge.on_request(json.dumps({"id": "r1", "prompt": "hello", "max_new_tokens": 4}))
        assert bridge.done.wait(60), bridge.tokens
        done = json.loads(bridge.tokens[-1])
        assert done["id"] == "r1" and done["done"] is True
        assert bridge.statuses  # the daemon publishes its status through the injected bridge too
    finally:
        d.shutdown()
    assert not bridges[0].connected


def test_auto_tries_int4_only_where_the_bf16_weights_take_long_to_stream() -> None:
    from edgeprof.daemon.lifecycle import AUTO_BACKENDS, AUTO_INT4, QUANTIZE_WHEN_WEIGHT_MS, quantize_pays
    from edgeprof.floor import parse_format, step_traffic
    from edgeprof.shape_loader import load_presets

    presets = load_presets()
    qwen = presets["qwen2.5-7b"]
    ms = step_traffic(qwen, parse_format("bf16"), 1).weight_bytes / 4800e9 * 1e3  # hand: bytes / (4.8 TB/s)
    assert quantize_pays(qwen, 4800.0) == (True, ms) and 3.0 < ms < 3.3  # 15.2 GB at 4.8 TB/s
    small, small_ms = quantize_pays(presets["smollm2-135m"], 4800.0)
    assert not small and small_ms < QUANTIZE_WHEN_WEIGHT_MS  # 0.27 GB: bf16 stays
    assert AUTO_BACKENDS["cuda"][:2] == ("edgeprof-fast-int4-cuda", "edgeprof-fast-int4")
    assert set(AUTO_BACKENDS["cuda"][:2]) == AUTO_INT4 and "edgeprof-fast" in AUTO_BACKENDS["cuda"]
