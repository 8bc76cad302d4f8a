"""Per-token overhead of the daemon around the decoder step, with metrics and run log
on vs off (in-process; target: <= 1% of the step time on the GPU).

Overhead = wall time between two decoder calls that is not the decoder's own measured
step: the session's bookkeeping (cache history, incremental detokenization, floor),
the token record (JSON), the publish hand-off (a null sink here: the bridge's own cost
is measured by the bridge benchmark), the run-log enqueue and the Prometheus update.

    python benchmarks/daemon_overhead.py                       # tiny-test, hf-static, CPU
    python benchmarks/daemon_overhead.py --model qwen2.5-7b --backend edgeprof-fast --device cuda \
        --out results/daemon_overhead_h100.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


class NullSink:
    connected = True

    def publish_token(self, s: str) -> None:
        pass


def _build(model: str, backend: str, device: str, max_ctx: int):
    from edgeprof import hardware
    from edgeprof.backends import registry
    from edgeprof.daemon.lifecycle import choose_backend
    from edgeprof.daemon.session import FloorModel
    from edgeprof.daemon.text import ByteCodec, TextCodec
    from edgeprof.floor import parse_format
    from edgeprof.sources import load_model

    det = hardware.detect()
    device = det.device if device == "auto" else device
    backend = choose_backend(backend, device.split(":")[0])
    loaded = load_model(model, device)
    max_ctx = min(max_ctx, loaded.shape.max_ctx)
    dec = registry.create(backend, loaded, device, max_ctx)
    dec.warmup(3)
    dec.reset()
    info = dec.info()
    codec = TextCodec(loaded.tokenizer) if loaded.tokenizer is not None else ByteCodec(loaded.shape.vocab)
    floor = FloorModel(loaded.shape, parse_format(info.weights), det.spec)
    return loaded, dec, codec, floor, backend, det, device


def _run_config(dec, codec, floor, on: bool, tokens: int, requests: int, tmp: Path, labels: dict) -> dict:
    from edgeprof.daemon.config import SessionConfig
    from edgeprof.daemon.runlog import NullRunLog, RunLog
    from edgeprof.daemon.service import DecodeService
    from edgeprof.daemon.session import Session
    from edgeprof.metrics import DisabledPublisher, MetricsPublisher

    cfg = SessionConfig(max_ctx=dec.max_ctx, max_queue=requests + 1, max_new_tokens_limit=tokens,
                        stop_at_eos=False, sliding_window=max(1, dec.max_ctx // 4))
    runlog = RunLog(tmp / f"overhead-{time.time_ns()}.db", 0.25) if on else NullRunLog()
    if on:
        runlog.start_run({"model": labels["model"], "backend": labels["backend"]})
    metrics = MetricsPublisher(labels) if on else DisabledPublisher(labels)
    dec.reset()
    svc = DecodeService(Session(dec, codec, floor, cfg), cfg, sink=NullSink(), runlog=runlog, metrics=metrics)
    svc.record_overhead = True
    done = threading.Event()
    orig_finish = svc._finish

    def finish(*a, **k):  # count terminal records to know when the batch is over
        orig_finish(*a, **k)
        finish.n += 1
        if finish.n == requests:
            done.set()

    finish.n = 0
    svc._finish = finish
    svc.start()
    for i in range(requests):
        svc.submit(json.dumps({"id": f"r{i}-{time.time_ns()}", "prompt": "The robot arm moves to the",
                               "max_new_tokens": tokens, "reset": True}))
    done.wait(600)
    svc.stop()
    if on:
        runlog.close()
    metrics.close()
    # the first token of each request is the prefill: exclude from the step statistic
    over = np.asarray(svc.overhead_s) * 1e6
    steps = _decode_steps(svc)
    return {"metrics_and_runlog": on, "tokens": len(over), "overhead_us": _stats(over), "step_ms": _stats(steps)}


def _decode_steps(svc) -> np.ndarray:
    return np.asarray(svc._step_ms) if hasattr(svc, "_step_ms") else np.asarray([])


def _stats(x: np.ndarray) -> dict:
    if len(x) == 0:
        return {}
    return {"n": int(len(x)), "p50": float(np.percentile(x, 50)), "p90": float(np.percentile(x, 90)),
            "p99": float(np.percentile(x, 99)), "mean": float(x.mean()), "max": float(x.max())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-test")
    p.add_argument("--backend", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-ctx", type=int, default=512)
    p.add_argument("--tokens", type=int, default=64, help="tokens per request")
    p.add_argument("--requests", type=int, default=8, help="requests per configuration and round")
    p.add_argument("--rounds", type=int, default=3, help="alternating off/on rounds (drift cancels out)")
    p.add_argument("--out", help="write the result JSON here (e.g. results/daemon_overhead.json)")
    args = p.parse_args(argv)

    from edgeprof.daemon.service import DecodeService

    # record the decoder's own step times alongside the overhead (benchmark-only instrumentation)
    orig_emit = DecodeService._emit_token

    def emit(self, rid, index, ev, *a, **k):
        if ev.context_event is None and index > 0:
            self.__dict__.setdefault("_step_ms", []).append(ev.latency_ms)
        return orig_emit(self, rid, index, ev, *a, **k)

    DecodeService._emit_token = emit
    loaded, dec, codec, floor, backend, det, device = _build(args.model, args.backend, args.device, args.max_ctx)
    info = dec.info()
    labels = {"model": args.model, "backend": backend, "gpu": det.spec.key, "weights": info.weights}
    results: dict[str, list] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for key, on in (("off", False), ("on", True)):
                results[key].append(_run_config(dec, codec, floor, on, args.tokens, args.requests, Path(tmp), labels))
    summary = {}
    for key, runs in results.items():
        over = [r["overhead_us"]["p50"] for r in runs]
        mean = [r["overhead_us"]["mean"] for r in runs]
        p99 = [r["overhead_us"]["p99"] for r in runs]
        step = [r["step_ms"]["p50"] for r in runs if r["step_ms"]]
        step_p50 = statistics.median(step) if step else None
        summary[key] = {"overhead_p50_us": statistics.median(over), "overhead_mean_us": statistics.median(mean),
                        "overhead_p99_us": statistics.median(p99), "step_p50_ms": step_p50,
                        "overhead_fraction_of_step": (statistics.median(mean) / 1e3 / step_p50) if step_p50 else None}
    record = {
        "benchmark": "daemon_overhead", "model": args.model, "model_label": loaded.label,
        "synthetic": loaded.synthetic, "backend": backend, "weights": info.weights, "device": device,
        "gpu": det.spec.key, "gpu_name": det.name, "tokens_per_request": args.tokens, "requests": args.requests,
        "rounds": args.rounds, "summary": summary, "runs": results, "command": " ".join(sys.argv),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print(f"daemon per-token overhead: {loaded.label}, {backend} ({info.weights}) on {device} [{det.name}]")
    for key in ("off", "on"):
        s = summary[key]
        frac = s["overhead_fraction_of_step"]
        share = f"; mean overhead = {100 * frac:.2f}% of the step" if frac is not None else ""
        print(f"  metrics+runlog {key:>3}: overhead p50 {s['overhead_p50_us']:.1f} us, mean {s['overhead_mean_us']:.1f} us,"
              f" p99 {s['overhead_p99_us']:.1f} us; step p50 {s['step_p50_ms']:.3f} ms{share}")
    extra = summary["on"]["overhead_mean_us"] - summary["off"]["overhead_mean_us"]
    print(f"  metrics + run log add {extra:.1f} us per token")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
