"""The daemon's lifecycle, in the style of ROS 2 managed nodes (ros2/demos lifecycle):

    unconfigured --configure--> inactive --activate--> active
    active --deactivate--> inactive --cleanup--> unconfigured
    any --shutdown--> finalized

* configure: check the config, pick the device, GPU spec and backend, open the run log.
* activate: load the model and backend, warm up (captures graphs), start the decode
  worker, start the metrics endpoint, connect the bridge, start the status timer.
* deactivate: end the current request (reason given), fail queued work, close the
  bridge and the metrics endpoint. The model stays loaded.
* cleanup: release the model.
* shutdown: whatever is needed of the above, then flush and close the run log.

A transition asked for in the wrong state raises `DaemonStateError`. The state (and
transitional states such as "activating") is published on the status topic.
"""

from __future__ import annotations

import contextlib
import json
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from enum import Enum
from typing import Any

from edgeprof.daemon.config import DaemonConfig, check_consistency
from edgeprof.daemon.devicemem import oom_error
from edgeprof.daemon.faults import device_fault_code
from edgeprof.errors import BridgeError, DaemonStateError, EdgeprofError


class State(str, Enum):
    UNCONFIGURED = "unconfigured"
    INACTIVE = "inactive"
    ACTIVE = "active"
    FINALIZED = "finalized"


# transition -> (allowed from, to, transitional state shown on the status topic)
TRANSITIONS: dict[str, tuple[tuple[State, ...], State, str]] = {
    "configure": ((State.UNCONFIGURED,), State.INACTIVE, "configuring"),
    "activate": ((State.INACTIVE,), State.ACTIVE, "activating"),
    "deactivate": ((State.ACTIVE,), State.INACTIVE, "deactivating"),
    "cleanup": ((State.INACTIVE,), State.UNCONFIGURED, "cleaningup"),
    "shutdown": ((State.UNCONFIGURED, State.INACTIVE, State.ACTIVE), State.FINALIZED, "shuttingdown"),
}

CLOSE_LINGER_S = 0.5  # wait between the last publish and closing the bridge
UNLOAD_TIMEOUT_S = 30.0  # releasing the model waits at most this long for the model thread

# Backends tried, in order, when config.backend is "auto": fastest first, as measured. On the CPU, llama.cpp
# decodes the embedded SmolLM2 GGUF about 4x faster than edgeprof-fast's eager path
# (results/cpu/2026-11-28-llamacpp-vs-edgeprof); it needs a GGUF behind the model and llama-cpp-python.
# On a GPU the int4 paths come first: in the H200 backend sweep (results/h200/2026-11-28-qwen-backends,
# Qwen2.5-7B shape) edgeprof-fast-int4-cuda took 2.64 ms, edgeprof-fast-int4 3.10, bf16 edgeprof-fast 4.70,
# all passing kernel correctness; they are taken only where int4 pays (quantize_pays) and after their
# load-time kernel check (fast/weights.py `int4_load_check`).
AUTO_BACKENDS = {"cuda": ("edgeprof-fast-int4-cuda", "edgeprof-fast-int4", "edgeprof-fast", "hf-graph", "hf-static"),
                 "cpu": ("llamacpp", "edgeprof-fast", "hf-eager", "hf-static")}
# Auto candidates that run their own kernels on other weights than the bf16 reference's (edgeprof.gate):
# they are used only after their kernel-correctness check passes at load; otherwise auto moves on.
AUTO_CHECKED = frozenset({"llamacpp"})
# Auto int4 candidates: used only if every int4 projection passed the load-time kernel check.
AUTO_INT4 = frozenset({"edgeprof-fast-int4-cuda", "edgeprof-fast-int4"})
# int4 cuts the bytes a step streams, nothing else. Where the bf16 weights stream in under ~1 ms at the
# datasheet bandwidth, the step is dominated by what int4 cannot shrink (on the H100, attention, norms and
# the host gap took 0.71 ms of edgeprof-fast-int4's step: results/h100 explain), so auto keeps bf16 there
# and the model's weights are not re-quantized for nothing (rtn4 costs quality: SmolLM2 agreement 0.43).
QUANTIZE_WHEN_WEIGHT_MS = 1.0


def quantize_pays(shape: Any, bandwidth_gbs: float) -> tuple[bool, float]:
    """(whether auto should try int4 first, ms to stream the bf16 weights once at `bandwidth_gbs`)."""
    from edgeprof.floor import parse_format, step_traffic

    weights = step_traffic(shape, parse_format("bf16"), 1).weight_bytes
    ms = weights / (bandwidth_gbs * 1e9) * 1e3
    return ms >= QUANTIZE_WHEN_WEIGHT_MS, ms


def auto_candidates(device_kind: str, model: str | None = None) -> list[str]:
    """The auto backends that can run here for `model`, fastest first."""
    import importlib.util

    from edgeprof.backends import registry

    out = []
    for name in AUTO_BACKENDS[device_kind]:
        info = registry.get(name)
        module = info.factory.split(":")[0]
        ok, _ = info.availability()
        if not ok or importlib.util.find_spec(module) is None:
            continue
        if name == "llamacpp" and model is not None:
            from edgeprof.backends.llamacpp import spec_has_gguf

            if not spec_has_gguf(model):
                continue  # llama.cpp reads GGUF files only
        out.append(name)
    return out


def choose_backend(requested: str, device_kind: str, model: str | None = None) -> str:
    """`auto` -> the first available of AUTO_BACKENDS[device] for `model` that needs no loaded model to decide on
    (the int4 candidates are decided at load: `Daemon._int4_if_it_pays`); a name -> checked against the registry."""
    from edgeprof.backends import registry

    if requested != "auto":
        info = registry.require(requested)
        if info.needs_gpu and device_kind != "cuda":
            raise DaemonStateError(f"backend {requested!r} needs a GPU but the daemon runs on {device_kind}; "
                                   "pick a CPU backend (hf-static, hf-eager) or --device cuda")
        return requested
    found = auto_candidates(device_kind, model)
    settled = [name for name in found if name not in AUTO_INT4]
    if settled or found:
        return (settled or found)[0]
    raise DaemonStateError(f"no backend of {', '.join(AUTO_BACKENDS[device_kind])} is available on {device_kind}; "
                           "see `edgeprof backends`")


def kernel_correctness(loaded, decoder, device: str) -> dict[str, Any]:
    """`decoder` against hf-eager bf16 on the same weights (edgeprof.gate: teacher-forced greedy tokens,
    thresholds by weight format); the dict has `passed`."""
    from edgeprof import gate

    ref = gate.reference(loaded, device)
    return gate.check(decoder, ref, gate.Thresholds.for_weights(decoder.info().weights))


def _versions(backend: str) -> dict[str, str]:
    import importlib.metadata as md

    from edgeprof import __version__

    out = {"edgeprof": __version__, "python": platform.python_version()}
    for pkg in ("torch", "transformers", "roslibpy", "exllamav2", "bitsandbytes", "torchao", "llama_cpp_python"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    out["backend"] = backend
    return out


class Daemon:
    """The edgeprof daemon. Drive it with the transition methods; `state` says where it is."""

    def __init__(self, config: DaemonConfig, log: Callable[[str], None] | None = None,
                 bridge_factory: Callable[..., Any] | None = None) -> None:
        """`bridge_factory` builds the robot-side bridge with `BridgeClient`'s arguments
        (default: `BridgeClient`, a real rosbridge connection); a test or an embedding
        application may pass its own (start, close, connected, publish_token, publish_status)."""
        self.config = config
        self.bridge_factory = bridge_factory
        self.state = State.UNCONFIGURED
        self.transition: str | None = None  # transitional state while a transition runs
        self.log = log or (lambda msg: None)
        self.started = time.monotonic()
        self.device: str | None = None
        self.detected: Any = None
        self.gpu_spec: Any = None
        self.backend: str | None = None
        self.runlog: Any = None
        self.loaded: Any = None
        self.decoder: Any = None
        self._model_thread: Any = None  # loads, warms up and decodes (modelthread.py)
        self.session: Any = None
        self.service: Any = None
        self.metrics: Any = None
        self.bridge: Any = None
        self.floor: Any = None
        self.capture_s = 0.0
        self.warmup_s = 0.0
        self.kernel_correctness: dict[str, Any] | None = None  # when auto checked the backend it picked
        self._status_stop = threading.Event()
        self._status_thread: threading.Thread | None = None
        self._lock = threading.RLock()

    # --- transitions --------------------------------------------------------------------------
    def _enter(self, name: str) -> None:
        allowed, _, shown = TRANSITIONS[name]
        if self.state not in allowed:
            raise DaemonStateError(f"cannot {name} in state {self.state.value}; allowed from "
                                   f"{', '.join(s.value for s in allowed)}")
        self.transition = shown
        self._event("transition", {"name": name, "from": self.state.value})

    def _leave(self, name: str) -> None:
        self.state = TRANSITIONS[name][1]
        self.transition = None
        self.log(f"state {self.state.value}")
        self._event("state", {"state": self.state.value})
        self.publish_status()

    def configure(self) -> None:
        with self._lock:
            self._enter("configure")
            try:
                self._configure()
            except BaseException:
                self.transition = None
                self._close_runlog("configure failed")
                raise
            self._leave("configure")

    def _configure(self) -> None:
        from edgeprof import hardware_loader
        from edgeprof.daemon.runlog import NullRunLog, RunLog

        cfg = check_consistency(self.config)
        self.detected = hardware_loader.detect()
        self.device = self.detected.device if cfg.device == "auto" else cfg.device
        if self.device.startswith("cuda") and self.detected.device != "cuda":
            raise DaemonStateError(f"device {self.device!r} was asked for but no NVIDIA GPU is visible; use --device cpu")
        self.gpu_spec = self.detected.spec if cfg.gpu == "auto" else hardware_loader.gpu(cfg.gpu)
        self.backend = choose_backend(cfg.backend, self.device.split(":")[0], cfg.model)
        self.runlog = RunLog(cfg.runlog.resolved_path, cfg.runlog.flush_interval_s) if cfg.runlog.enabled else NullRunLog()
        self.log(f"configured: model {cfg.model}, backend {self.backend}, device {self.device}, "
                 f"floor GPU {self.gpu_spec.key} ({self.gpu_spec.bandwidth_gbs:g} GB/s)")

    def activate(self) -> None:
        with self._lock:
            self._enter("activate")
            try:
                self._activate()
            except BaseException:
                self.transition = None
                self._stop_serving("activate failed")
                raise
            self._leave("activate")

    def _activate(self) -> None:
        cfg = self.config
        if self.decoder is None:
            self._load()
        self._start_run()
        self._start_service()
        self._start_metrics()
        self._start_bridge()
        self._status_stop.clear()
        self._status_thread = threading.Thread(target=self._status_loop, name="edgeprof-status", daemon=True)
        self._status_thread.start()
        where = f"ws://{cfg.bridge.host}:{cfg.bridge.port}"
        murl = getattr(self.metrics, "url", None)
        self.log(f"serving on {where}" + (f"; metrics at {murl}" if murl else "; metrics off"))

    def deactivate(self, reason: str = "deactivated") -> None:
        with self._lock:
            self._enter("deactivate")
            self._stop_serving(reason)
            self._leave("deactivate")

    def cleanup(self) -> None:
        with self._lock:
            self._enter("cleanup")
            self._unload()
            self._close_runlog("cleanup")
            self._leave("cleanup")

    def shutdown(self, reason: str = "shutdown") -> None:
        """From any state but finalized: end the current request with `reason`, flush, close."""
        with self._lock:
            if self.state is State.FINALIZED:
                return
            was = self.state
            self._enter("shutdown")
            if was is State.ACTIVE:
                self._stop_serving(reason)
            self._unload()
            self._close_runlog(reason)
            self._leave("shutdown")

    # --- activate pieces ----------------------------------------------------------------------
    def _load(self) -> None:
        """Load, build and warm up on the model thread, which then also decodes (modelthread.py)."""
        from edgeprof.daemon.modelthread import ModelThread

        if self._model_thread is None:
            self._model_thread = ModelThread()
        self._model_thread.call(self._load_here)

    def _load_here(self) -> None:
        from edgeprof.backends.base import release_source
        from edgeprof.daemon.session import FloorModel
        from edgeprof.daemon.text import ByteCodec, TextCodec
        from edgeprof.floor import parse_format
        from edgeprof.sources import load_model

        cfg = self.config
        cuda = self.device.startswith("cuda")
        need = self._precheck_memory(None) if cuda else None
        t0 = time.perf_counter()
        try:
            self.loaded = load_model(cfg.model, self.device, dtype=cfg.dtype)
            max_ctx = min(cfg.session.max_ctx, self.loaded.shape.max_ctx)
            self.log(f"loaded {self.loaded.label} in {time.perf_counter() - t0:.1f} s")
            if max_ctx < cfg.session.max_ctx:
                self.log(f"session.max_ctx {cfg.session.max_ctx} capped to the model's maximum, {max_ctx}")
            if cuda:  # the weights are in place: does the KV cache at max_ctx fit what is left?
                need = self._precheck_memory(self.loaded.shape, max_ctx)
            t0 = time.perf_counter()
            self.decoder = self._create_decoder(max_ctx)
            # edgeprof-fast, ExLlamaV2 and llama.cpp compute with their own copy: free the HF source
            self.loaded = release_source(self.loaded, self.decoder)
            info = self.decoder.info()
            self.capture_s = float(info.capture_s or 0.0)
            self._warmup()
        except Exception as exc:
            # load_pretrained wraps torch's OOM in a ModelLoadError: look at the cause too
            if cuda and "out_of_memory" in (device_fault_code(exc), device_fault_code(exc.__cause__ or exc)):
                self.loaded = self.decoder = None
                raise oom_error(need, self.device, exc) from None
            raise
        self.warmup_s = time.perf_counter() - t0
        tok = self.loaded.tokenizer
        self.codec = TextCodec(tok) if tok is not None else ByteCodec(self.loaded.shape.vocab)
        self.weights = info.weights
        self.floor = FloorModel(self.loaded.shape, parse_format(info.weights), self.gpu_spec)
        self.log(f"backend {self.backend} ready ({info.weights}, max ctx {max_ctx}); warm-up and capture "
                 f"{self.warmup_s:.1f} s")

    def _precheck_memory(self, shape: Any, max_ctx: int | None = None) -> Any:
        """Before loading (shape None: a catalog preset's shape, if the model is one): weights +
        KV cache at max_ctx against CUDA's free memory. After loading: the KV cache alone.
        Raises DeviceMemoryError naming the bytes needed and free."""
        from edgeprof.daemon.devicemem import check_fits, free_memory, load_need
        from edgeprof.shape_loader import load_presets

        before = shape is None
        if before:
            shape = load_presets().get(self.config.model.lower())
            if shape is None:  # a path or hub id: its shape is known only once loaded
                return None
            max_ctx = min(self.config.session.max_ctx, shape.max_ctx)
        need = load_need(shape, max_ctx, weights=before)
        free, total = free_memory(self.device)
        check_fits(need, free, total, self.device)
        return need

    def _create_decoder(self, max_ctx: int):
        """The configured backend; under auto, a checked candidate that fails kernel correctness (or
        cannot load this model) gives way to the next candidate, and the log says why."""
        from edgeprof.backends import registry

        if self.config.backend != "auto":
            return registry.create(self.backend, self.loaded, self.device, max_ctx)
        # every candidate from the first: the int4 ones precede the pre-load choice (self.backend) on a GPU
        candidates = self._int4_if_it_pays(auto_candidates(self.device.split(":")[0], self.config.model))
        for name in candidates:
            try:
                decoder = registry.create(name, self.loaded, self.device, max_ctx)
            except EdgeprofError as exc:
                self.log(f"auto: {name} cannot run this model ({exc}); trying the next backend")
                continue
            if name in AUTO_CHECKED:
                t0 = time.perf_counter()
                try:
                    check = kernel_correctness(self.loaded, decoder, self.device)
                except EdgeprofError as exc:  # e.g. a session too short for the check's prompt + steps
                    self.log(f"auto: {name} kernel correctness could not run ({exc}); trying the next backend")
                    decoder.close()
                    continue
                self.log(f"auto: {name} kernel correctness {'passed' if check['passed'] else 'FAILED'} "
                         f"({check['rule']}; agreement {check['agreement']:.2f} over {check['steps']} steps, "
                         f"{time.perf_counter() - t0:.1f} s)")
                if not check["passed"]:
                    decoder.close()
                    continue
                self.kernel_correctness = check
            if name in AUTO_INT4:
                check = decoder.info().notes.get("int4_load_check") or {}
                self.log(f"auto: {name} load-time kernel check {'passed' if check.get('passed') else 'FAILED'} "
                         f"(worst {check.get('max_rel_err')} <= {check.get('bound')} over "
                         f"{check.get('projections')} int4 projections)")
                if not check.get("passed"):
                    decoder.close()
                    continue
                self.kernel_correctness = check
            bf16 = decoder.info().notes.get("bf16_load_check")  # edgeprof's bf16 GEMV, where the card plan uses it
            if bf16 and not bf16.get("passed"):
                self.log(f"auto: {name} bf16 GEMV load-time check FAILED (worst {bf16.get('max_rel_err')} > "
                         f"{bf16.get('bound')}); trying the next backend")
                decoder.close()
                continue
            self.backend = name
            return decoder
        raise DaemonStateError(f"auto: none of {', '.join(candidates)} could serve {self.config.model}; "
                               "see the log above, or pick one with --backend")

    def _int4_if_it_pays(self, candidates: list[str]) -> list[str]:
        """Drop the auto int4 candidates where int4 would save little (quantize_pays), and say why."""
        if not AUTO_INT4 & set(candidates):
            return candidates
        pays, ms = quantize_pays(self.loaded.shape, self.gpu_spec.bandwidth_gbs)
        if pays:
            self.log(f"auto: bf16 weights stream in {ms:.2f} ms at {self.gpu_spec.bandwidth_gbs:g} GB/s: trying int4 "
                     "(rtn4) first; --backend edgeprof-fast keeps bf16 (int4 costs quality: see `edgeprof recommend`)")
            return candidates
        self.log(f"auto: bf16 weights stream in {ms:.2f} ms at {self.gpu_spec.bandwidth_gbs:g} GB/s "
                 f"(< {QUANTIZE_WHEN_WEIGHT_MS:g} ms): int4 would save little here; keeping bf16")
        return [c for c in candidates if c not in AUTO_INT4]

    def _warmup(self) -> None:
        """Backend warm-up (graph capture), then a few real steps so first-call costs are
        not billed to the robot's first token; the cache is emptied afterwards."""
        steps = self.config.warmup_steps
        self.decoder.warmup(steps)
        self.decoder.reset()
        if steps > 0:
            self.decoder.prefill([1, 2, 3, 4])
            for _ in range(steps):
                self.decoder.step()
            self.decoder.reset()

    def _start_run(self) -> None:
        shape = self.loaded.shape
        floors = {**self.floor.describe(1), "at_max_ctx": self.floor.describe(self.decoder.max_ctx)}
        self.runlog.start_run({
            "model": self.config.model, "model_label": self.loaded.label, "synthetic": self.loaded.synthetic,
            "backend": self.backend, "weights": self.weights, "device": self.device, "gpu": self.gpu_spec.key,
            "gpu_name": self.detected.nvml_name or self.gpu_spec.name, "max_ctx": self.decoder.max_ctx,
            "versions": _versions(self.backend), "floors": floors,
            "config": {**asdict(self.config), "shape": shape.to_dict(), "capture_s": self.capture_s,
                       "warmup_s": self.warmup_s, "kernel_correctness": self.kernel_correctness},
            "host": platform.node(),
        })

    def _start_service(self) -> None:
        from edgeprof.daemon.service import DecodeService
        from edgeprof.daemon.session import Session

        if self.session is None:
            self.session = Session(self.decoder, self.codec, self.floor, self.config.session)
        self.service = DecodeService(self.session, self.config.session, sink=None, runlog=self.runlog)
        self.service.start(on=self._model_thread)

    def _start_metrics(self) -> None:
        from edgeprof.daemon.config import identity_labels
        from edgeprof.metrics import DisabledPublisher, MetricsPublisher

        m = self.config.metrics
        labels = {"model": self.config.model, "backend": self.backend, "gpu": self.gpu_spec.key,
                  "weights": self.weights}
        info = {"synthetic": self.loaded.synthetic, "device": self.device}
        identity = identity_labels(self.config.identity)
        self.metrics = (MetricsPublisher(labels, info, identity=identity) if m.enabled
                        else DisabledPublisher(labels, info))
        self.metrics.set_floor(self.floor.floor_ms(1) / 1e3, self.floor.touched_floor_ms(1) / 1e3)
        if m.enabled:
            self.metrics.start_server(m.host, m.port, m.allow_remote)
        self.service.metrics = self.metrics

    def _start_bridge(self) -> None:
        from edgeprof.daemon.bridge import BridgeClient
        from edgeprof.ros.topics import TopicNames

        b = self.config.bridge
        self.bridge = (self.bridge_factory or BridgeClient)(
            b.host, b.port, names=TopicNames(**asdict(self.config.topics)), connect_timeout_s=b.connect_timeout_s,
            on_request=self.service.submit, on_next_token=self.service.next_token, on_reset=self.service.reset,
            on_connection_change=self._on_connection_change,
        )
        self.metrics.set_bridge_probe(lambda: self.bridge is not None and self.bridge.connected)
        self.bridge.start()
        self.service.sink = self.bridge

    def _on_connection_change(self, connected: bool) -> None:
        self._event("bridge_connected" if connected else "bridge_lost", {})
        self.log("bridge " + ("connected" if connected else "lost; reconnecting"))
        if connected and self.service is not None:
            self.service.flush_outbox()
            self.publish_status()

    # --- teardown -----------------------------------------------------------------------------
    def _stop_serving(self, reason: str) -> None:
        self._status_stop.set()
        if self._status_thread is not None:
            self._status_thread.join(timeout=5)
            self._status_thread = None
        self.publish_status()
        if self.service is not None:
            self.service.stop(reason)  # the current request ends with `reason`; queued ones get errors
            self.service.flush_outbox()
        if self.bridge is not None:
            if self.bridge.connected:
                # rosbridge tears down its DDS publishers when the websocket closes; give the final
                # records time to reach the robots first
                time.sleep(CLOSE_LINGER_S)
            self.bridge.close()
            self.bridge = None
        if self.metrics is not None:
            self.metrics.close()
        if self.runlog is not None:
            self.runlog.flush()

    def _unload(self) -> None:
        decoder, thread = self.decoder, self._model_thread
        if decoder is not None:
            try:
                if thread is not None:  # behind the decode loop, which has ended or is wedged
                    thread.submit(decoder.close).result(timeout=UNLOAD_TIMEOUT_S)
                else:
                    decoder.close()
            except Exception as exc:  # releasing memory must not block shutdown
                self.log(f"decoder close failed: {exc}")
        if thread is not None:
            thread.close()
        self.decoder = self.loaded = self.session = self._model_thread = None

    def _close_runlog(self, reason: str) -> None:
        if self.runlog is not None:
            if self.runlog.run_id is not None:
                self.runlog.end_run(reason)
            self.runlog.close()
            if self.runlog.write_error:
                self.log(f"run log write error: {self.runlog.write_error}")
            self.runlog = None

    def _event(self, kind: str, detail: dict[str, Any]) -> None:
        if self.runlog is not None and self.runlog.run_id is not None:
            self.runlog.event(kind, detail)

    # --- status -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The status record (also published periodically on the status topic)."""
        out: dict[str, Any] = {
            "state": self.transition or self.state.value,
            "model": self.config.model, "backend": self.backend, "device": self.device,
            "gpu": None if self.gpu_spec is None else self.gpu_spec.key,
            "gpu_name": None if self.detected is None else (self.detected.nvml_name or self.gpu_spec.name),
            "uptime_s": round(time.monotonic() - self.started, 3),
        }
        if self.loaded is not None:
            out.update(model_label=self.loaded.label, synthetic=self.loaded.synthetic, weights=self.weights)
        if self.service is not None:
            snap = self.service.snapshot()
            out.update(snap)
            ctx = max(snap["position"], 1)
            out["floor_ms"] = float(f"{self.floor.floor_ms(ctx):.6g}")
            out["touched_floor_ms"] = float(f"{self.floor.touched_floor_ms(ctx):.6g}")
        out["bridge_connected"] = bool(self.bridge is not None and self.bridge.connected)
        if self.runlog is not None and self.runlog.write_error:
            out["runlog_error"] = self.runlog.write_error
        return out

    def publish_status(self) -> None:
        bridge = self.bridge
        if bridge is None or not bridge.connected:
            return
        with contextlib.suppress(BridgeError, EdgeprofError):  # the next period tries again
            bridge.publish_status(json.dumps(self.status()))

    def _status_loop(self) -> None:
        period = self.config.status.period_s
        while not self._status_stop.wait(period):
            try:
                self.publish_status()
                if self.service is not None:
                    self.service.flush_outbox()
            except Exception as exc:  # a status bug must not end the status topic for the daemon's life
                self.log(f"status publish failed: {type(exc).__name__}: {exc}")
