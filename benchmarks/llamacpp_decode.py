"""llama.cpp (the `llamacpp` backend) per-token decode, side by side with edgeprof's own backends.

Every backend runs through the same `Decoder` interface and the same clock
(`edgeprof.timing.time_steps`: perf_counter around launch + token read, raw samples kept):
prefill to ctx-1 tokens, `--warmup` untimed steps, then `--steps` timed steps.

CPU (this machine): the embedded SmolLM2-135M-Instruct. llama.cpp reads its Q4_1 GGUF as is;
edgeprof-fast (the demo's backend before llama.cpp) and hf-eager run the same GGUF's weights
dequantized to bf16 by `edgeprof.embedded`. A kernel-correctness check (llama.cpp's greedy
tokens vs hf-eager on those dequantized weights, teacher-forced, edgeprof.gate) runs first.

    python benchmarks/llamacpp_decode.py --out results/cpu/2026-11-28-llamacpp-vs-edgeprof

GPU: a SYNTHETIC Q4_0 GGUF of a preset's shape (edgeprof.synthetic_gguf), llama.cpp only
(benchmarks/llamacpp_cuda_build.sh builds the CUDA library and calls this):

    python benchmarks/llamacpp_decode.py --synthetic qwen2.5-7b --device cuda --ctx 2048,16384 --out $OUT/x

Prints a table last; writes cells.json (every raw sample) and summary.json under --out.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
import traceback
from pathlib import Path


def _host() -> dict:
    info = {"python": platform.python_version(), "machine": platform.machine(), "node": platform.node()}
    try:
        import os

        info["cpus"] = len(os.sched_getaffinity(0))
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def _gpu() -> dict | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(h)
        return {"name": name if isinstance(name, str) else name.decode(),
                "driver": pynvml.nvmlSystemGetDriverVersion()}
    except Exception:  # no NVML / no GPU
        return None


def time_decoder(dec, fill: list[int], ctx: int, steps: int, warmup: int) -> dict:
    """Prefill ctx-1 tokens, warm up, time `steps` steps; the record keeps every sample."""
    dec.reset()
    t0 = time.perf_counter()
    dec.prefill(fill[: ctx - 1])
    prefill_s = time.perf_counter() - t0
    for _ in range(warmup):
        dec.step()
    st = dec.time_steps(steps)
    wall = st.wall
    return {"ctx": ctx, "prefill_tokens": ctx - 1, "prefill_s": round(prefill_s, 3), "steps": steps,
            "warmup": warmup, "p50_ms": wall.p50, "p90_ms": wall.p90, "p99_ms": wall.p99, "mean_ms": wall.mean,
            "wall_ms": st.wall_ms, "tokens": st.tokens[:8]}


def cpu_compare(args) -> list[dict]:
    """SmolLM2 GGUF: llamacpp vs the HF-side backends on its dequantized weights. Every backend is
    built once; then `--rounds` rounds time each one in turn (the machine is shared: interleaving
    keeps a burst of load from landing on one backend only)."""
    from edgeprof import gate
    from edgeprof.backends import registry
    from edgeprof.bench import fill_tokens
    from edgeprof.sources import load_model

    loaded = load_model("default", "cpu")
    max_ctx = max(args.ctx) + args.warmup + args.steps + 8
    fill = fill_tokens(loaded, max(args.ctx))
    recs: list[dict] = []
    decoders = {}
    for name in args.backends:
        rec: dict = {"backend": name, "model": loaded.label, "cells": []}
        try:
            dec = registry.create(name, loaded, "cpu", max_ctx)
            info = dec.info()
            rec.update(weights=info.weights, resident_weight_bytes=info.resident_weight_bytes,
                       notes={k: v for k, v in info.notes.items() if k != "system_info"})
            if name == "llamacpp":
                rec["system_info"] = info.notes.get("system_info")
                ref = gate.reference(loaded, "cpu", args.check_steps)
                c = gate.check(dec, ref, gate.Thresholds.for_weights(info.weights))
                rec["kernel_correctness"] = {k: c[k] for k in ("passed", "rule", "agreement", "greedy_prefix",
                                                                  "logit_rel_error", "steps", "mode", "reference")}
            dec.warmup()
            decoders[name] = dec
        except Exception as exc:  # one backend failing must not lose the others' numbers
            rec["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        recs.append(rec)
    for r in range(args.rounds):
        for rec in recs:
            dec = decoders.get(rec["backend"])
            if dec is None:
                continue
            for ctx in args.ctx:
                cell = time_decoder(dec, fill, ctx, args.steps, args.warmup)
                cell["round"] = r
                rec["cells"].append(cell)
    for dec in decoders.values():
        dec.close()
    gc.collect()
    return recs


def synthetic_run(args) -> list[dict]:
    """A SYNTHETIC GGUF of a preset's shape through llamacpp only (no HF model needed)."""
    import numpy as np

    from edgeprof import synthetic_gguf
    from edgeprof.backends.llamacpp import LlamaCppDecoder
    from edgeprof.shape_loader import load_presets

    shape = load_presets()[args.synthetic]
    path = Path(args.gguf_dir) / f"{shape.name}-synthetic-q4_0.gguf"
    t0 = time.perf_counter()
    if not path.is_file():
        synthetic_gguf.write(shape, path)
    write_s = time.perf_counter() - t0
    max_ctx = max(args.ctx) + args.warmup + args.steps + 8
    rec: dict = {"backend": "llamacpp", "model": f"{shape.name} [SYNTHETIC random weights, Q4_0 GGUF]",
                 "gguf": str(path), "gguf_bytes": path.stat().st_size, "gguf_write_s": round(write_s, 1)}
    try:
        dec = LlamaCppDecoder(path, args.device, max_ctx, synthetic=True, label=rec["model"])
        info = dec.info()
        rec.update(weights=info.weights, resident_weight_bytes=info.resident_weight_bytes,
                   notes={k: v for k, v in info.notes.items() if k != "system_info"},
                   system_info=info.notes.get("system_info"))
        fill = [int(x) for x in np.random.default_rng(0).integers(0, shape.vocab, size=max(args.ctx))]
        rec["cells"] = [time_decoder(dec, fill, ctx, args.steps, args.warmup) for ctx in args.ctx]
        rec["floor"] = _floors(shape, info.weights, args.ctx, args.gpu_key)
        dec.close()
    except Exception as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    return [rec]


def _floors(shape, weights: str, ctxs: list[int], gpu_key: str | None) -> dict | None:
    """Datasheet floor per ctx (paper definition, fp16 KV as llama.cpp keeps it) for the named card."""
    if not gpu_key:
        return None
    from edgeprof import hardware_loader as hardware
    from edgeprof.floor import parse_format, step_traffic

    spec = hardware.gpu(gpu_key)
    out = {}
    for ctx in ctxs:
        t = step_traffic(shape, parse_format(weights), ctx)
        out[str(ctx)] = {"gpu": spec.key, "paper_ms": t.paper_bytes / (spec.bandwidth_gbs * 1e9) * 1e3,
                         "touched_ms": t.touched_bytes / (spec.bandwidth_gbs * 1e9) * 1e3}
    return out


def table(cells: list[dict]) -> str:
    """One row per backend and ctx: the median over rounds of each round's p50 (and the range)."""
    import statistics

    rows = ["| backend | weights | ctx | rounds | p50 ms (median of rounds) | round p50 range | p99 ms (worst) | tok/s |",
            "|---|---|---|---|---|---|---|---|"]
    for rec in cells:
        if "error" in rec:
            rows.append(f"| {rec['backend']} | - | - | - | failed: {rec['error'][:80]} | | | |")
            continue
        for ctx in sorted({c["ctx"] for c in rec["cells"]}):
            cs = [c for c in rec["cells"] if c["ctx"] == ctx]
            p50s = [c["p50_ms"] for c in cs]
            med = statistics.median(p50s)
            rows.append(f"| {rec['backend']} | {rec.get('weights')} | {ctx} | {len(cs)} | {med:.2f} | "
                        f"{min(p50s):.2f}-{max(p50s):.2f} | {max(c['p99_ms'] for c in cs):.2f} | {1e3 / med:.1f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for cells.json + summary.json")
    ap.add_argument("--ctx", default="64,512", help="comma-separated contexts (prefill ctx-1, then time)")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--backends", default="llamacpp,edgeprof-fast,hf-eager", help="CPU comparison backends")
    ap.add_argument("--check-steps", type=int, default=20, help="kernel-correctness steps (CPU)")
    ap.add_argument("--rounds", type=int, default=3, help="CPU: times each backend this many times, interleaved")
    ap.add_argument("--synthetic", default=None, help="preset name: time a SYNTHETIC Q4_0 GGUF of its shape")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gguf-dir", default="/tmp/edgeprof-gguf", help="where the synthetic GGUF is written")
    ap.add_argument("--gpu-key", default=None, help="catalog key for the floor (h100-sxm, h200, ...)")
    args = ap.parse_args()
    args.ctx = [int(x) for x in args.ctx.split(",")]
    args.backends = args.backends.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    cells = synthetic_run(args) if args.synthetic else cpu_compare(args)
    summary = {"started": started, "host": _host(), "gpu": _gpu(), "args": vars(args),
               "cells": [{k: v for k, v in r.items() if k != "cells"} | {"round_p50_ms": [
                          {"ctx": c["ctx"], "round": c.get("round", 0), "p50_ms": c["p50_ms"]}
                          for c in r.get("cells", [])]} for r in cells],
               "table": table(cells)}
    (out / "cells.json").write_text(json.dumps(cells, indent=1) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(table(cells))


if __name__ == "__main__":
    main()
