"""Issue 6 benchmark: edgeprof-fast next to hf-graph, hf-compile and exllamav2.

One run on an H100/H200 (Qwen2.5-7B shapes, synthetic random weights, batch 1):
  1. checks: Triton step kernels vs the torch reference ops; edgeprof-fast bf16 logits vs
     HF bf16 (teacher-forced); edgeprof-fast-int4 logits vs HF on the dequantized weights;
  2. times every backend at each context: prefill ctx tokens, warm up (graph capture /
     compile reported apart), then `--steps` steps through edgeprof.timing;
  3. prints ms/step and fraction of the datasheet floor (paper and touched definitions),
     writes cells.jsonl + summary.json under --out.

    python benchmarks/fast_decode.py --out results/fast --ctx 2048,4096,8192,16384

Plots: `python benchmarks/plot_fast.py results/fast` (runs on the CPU machine).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

from edgeprof import floor as fl
from edgeprof import hardware_loader
from edgeprof.backends import registry
from edgeprof.sources import load_model

PAD = 64  # room past the timed ctx for warm-up and steps


def check_kernels(device: str) -> dict:
    """Triton ops against the torch ops on random data at Qwen2.5-7B head shapes."""
    from edgeprof.fast.kernels import TorchOps, TritonOps

    g = torch.Generator(device=device).manual_seed(0)
    nh, nkv, hd, hidden, inter, max_ctx = 28, 4, 128, 3584, 18944, 4096
    dt = torch.bfloat16
    half = torch.randn(max_ctx, hd // 2, device=device, generator=g)
    cos, sin = torch.cat([half.cos()] * 2, 1).to(dt), torch.cat([half.sin()] * 2, 1).to(dt)
    ref, tri = TorchOps(nh, nkv, hd, 1e-6, cos, sin), TritonOps(nh, nkv, hd, 1e-6, cos, sin, max_ctx, hidden, inter)

    def rnd(*s):
        return torch.randn(*s, device=device, generator=g).to(dt)

    def rel(a, b):
        return float((a.float() - b.float()).norm() / b.float().norm())

    x, r, w = rnd(1, hidden), rnd(1, hidden), rnd(hidden)
    out = {"rmsnorm": rel(tri.add_rmsnorm(x, r, w)[0], ref.add_rmsnorm(x, r, w)[0])}
    kc, vc = rnd(nkv, max_ctx, hd), rnd(nkv, max_ctx, hd)
    kc2, vc2 = kc.clone(), vc.clone()
    qkv = rnd(1, (nh + 2 * nkv) * hd)
    worst_rope, worst_attn = 0.0, 0.0
    for p in (0, 1, 255, 256, 1000, max_ctx - 1):  # chunk edges of the split attention
        pos = torch.tensor([p], device=device)
        qa = ref.rope_write_kv(qkv, pos, kc, vc).clone()
        qb = tri.rope_write_kv(qkv, pos, kc2, vc2).clone()
        worst_rope = max(worst_rope, rel(qb.view(nh, hd), qa), rel(kc2, kc), rel(vc2, vc))
        worst_attn = max(worst_attn, rel(tri.attention(qa.reshape(-1).contiguous(), pos, kc, vc),
                                         ref.attention(qa, pos, kc, vc)))
    gu = rnd(1, 2 * inter)
    out.update(rope_kv=worst_rope, attention=worst_attn, silu_mul=rel(tri.silu_mul(gu), ref.silu_mul(gu)))
    out["passed"] = all(v < 1e-2 for v in out.values())
    return out


def teacher_forced_logits(dec, prompt: list[int], forced: list[int]) -> list[torch.Tensor]:
    """Logits of prefill + one step per forced token."""
    dec.reset()
    dec.prefill(prompt)
    dec.warmup()
    logits = [dec.last_logits().float().clone()]
    for t in forced[:-1]:
        dec.set_next_input(t)
        dec.step()
        logits.append(dec.last_logits().float().clone())
    return logits


def compare(a: list[torch.Tensor], b: list[torch.Tensor]) -> dict:
    errs = [float((x - y).norm() / y.norm()) for x, y in zip(a, b, strict=True)]
    agree = sum(int(x.argmax()) == int(y.argmax()) for x, y in zip(a, b, strict=True)) / len(a)
    return {"logit_rel_error_max": max(errs), "logit_rel_error_mean": sum(errs) / len(errs), "top1_agreement": agree,
            "per_step": [round(e, 5) for e in errs]}


def measure(dec, backend: str, ctx: int, steps: int, warmup: int, shape, bw: float, loaded) -> dict:
    """One cell: fill the cache to ctx, warm up (captures), time `steps` steps."""
    gen = torch.Generator().manual_seed(ctx)
    prompt = torch.randint(0, shape.vocab, (ctx,), generator=gen).tolist()
    dec.reset()
    t0 = time.perf_counter()
    dec.prefill(prompt)
    torch.cuda.synchronize()
    prefill_s = time.perf_counter() - t0
    capture_s = dec.warmup() or dec.info().capture_s
    dec.time_steps(warmup)
    torch.cuda.reset_peak_memory_stats()
    times = dec.time_steps(steps)
    info = dec.info()
    wall, gpu = times.wall, times.gpu
    f = fl.compute_floor(shape, fl.parse_format(info.weights), ctx, bw, measured_ms=wall.p50)
    return {
        "backend": backend, "ctx": ctx, "weights": info.weights, "model": shape.name,
        "model_label": loaded.label, "synthetic": loaded.synthetic,
        "wall_ms": wall.raw, "gpu_ms": gpu.raw if gpu else None,
        "stats": {"wall": wall.to_dict(), "gpu": gpu.to_dict() if gpu else None},
        "floor": {"peak_bytes_per_s": bw, "floor_ms": f.floor_ms, "touched_floor_ms": f.touched_floor_ms,
                  "fraction": f.fraction, "touched_fraction": f.touched_fraction},
        "capture_s": capture_s, "prefill_s": prefill_s, "resident_weight_bytes": info.resident_weight_bytes,
        "peak_mem_bytes": torch.cuda.max_memory_allocated(), "notes": info.notes, "status": "ok",
    }


def provenance(det) -> dict:
    import transformers

    return {"gpu": det.spec.key, "gpu_name": det.nvml_name, "driver": det.driver, "torch": torch.__version__,
            "cuda": torch.version.cuda, "transformers": transformers.__version__, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join([sys.executable, *sys.argv])}


def run_backend(name, loaded, ctxs, args, shape, bw, out_f, deadline) -> list[dict]:
    rows = []
    if name.startswith("edgeprof-fast"):  # one decoder serves every ctx: attention reads the live length only
        dec = registry.create(name, loaded, device="cuda", max_ctx=max(ctxs) + PAD)
        makers = [(c, lambda d=dec: d) for c in ctxs]
    else:
        makers = [(c, lambda c=c: registry.create(name, loaded, device="cuda", max_ctx=c + PAD)) for c in ctxs]
    for ctx, make in makers:
        if time.time() > deadline:
            rec = {"backend": name, "ctx": ctx, "status": "skipped", "error": "time budget exhausted"}
        else:
            try:
                rec = measure(make(), name, ctx, args.steps, args.warmup, shape, bw, loaded)
            except Exception as exc:  # record and go on: one failing cell must not end the run
                traceback.print_exc()
                rec = {"backend": name, "ctx": ctx, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        out_f.write(json.dumps(rec) + "\n")
        out_f.flush()
        rows.append(rec)
        print(f"  {name:20s} ctx {ctx:6d}: {rec.get('status')} "
              f"{rec.get('stats', {}).get('wall', {}).get('p50', float('nan')):.3f} ms", flush=True)
    gc.collect()
    torch.cuda.empty_cache()
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'backend':20s} {'ctx':>6s} {'p50 ms':>8s} {'p99 ms':>8s} {'gpu ms':>8s} {'floor':>7s} "
             f"{'frac':>6s} {'touched':>7s} {'capture s':>9s}"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"{r['backend']:20s} {r['ctx']:6d}  {r['status']}: {r.get('error', '')[:60]}")
            continue
        w, f, g = r["stats"]["wall"], r["floor"], r["stats"]["gpu"] or {}
        lines.append(f"{r['backend']:20s} {r['ctx']:6d} {w['p50']:8.3f} {w['p99']:8.3f} {g.get('p50', 0):8.3f} "
                     f"{f['floor_ms']:7.3f} {f['fraction']:6.3f} {f['touched_fraction']:7.3f} {r['capture_s']:9.1f}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-7b")
    ap.add_argument("--ctx", default="2048,4096,8192,16384")
    ap.add_argument("--backends", default="edgeprof-fast,edgeprof-fast-int4,hf-graph,hf-compile,exllamav2")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--budget-s", type=float, default=480)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    deadline = time.time() + args.budget_s
    ctxs = [int(c) for c in args.ctx.split(",")]
    det = hardware_loader.detect()
    if det.device != "cuda":
        print("this benchmark needs an NVIDIA GPU", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"provenance": provenance(det)}
    bw = det.spec.bandwidth_bytes_per_s
    summary["kernels"] = check_kernels("cuda")
    print("kernel check:", json.dumps(summary["kernels"]), flush=True)

    loaded = load_model(args.model, "cuda", max_ctx=max(ctxs) + PAD)
    shape = loaded.shape
    prompt = torch.randint(0, shape.vocab, (64,), generator=torch.Generator().manual_seed(1)).tolist()
    hf = registry.create("hf-eager", loaded, device="cuda", max_ctx=256)
    forced = torch.randint(0, shape.vocab, (16,), generator=torch.Generator().manual_seed(2)).tolist()
    ref = teacher_forced_logits(hf, prompt, forced)
    for label, opts in [("graph+triton", {}), ("eager+triton", {"use_graph": False}),
                        ("eager+torch", {"use_graph": False, "ops": "torch"})]:
        fast = registry.create("edgeprof-fast", loaded, device="cuda", max_ctx=256, **opts)
        summary[f"check_bf16_vs_hf[{label}]"] = compare(teacher_forced_logits(fast, prompt, forced), ref)
        del fast
        print(f"bf16 vs HF [{label}]:", json.dumps(summary[f"check_bf16_vs_hf[{label}]"]), flush=True)
    hf_static = registry.create("hf-graph", loaded, device="cuda", max_ctx=256)
    summary["check_hf_graph_vs_hf_eager"] = compare(teacher_forced_logits(hf_static, prompt, forced), ref)
    print("hf-graph vs hf-eager:", json.dumps(summary["check_hf_graph_vs_hf_eager"]), flush=True)
    del hf_static

    rows: list[dict] = []
    with open(args.out / "cells.jsonl", "w") as out_f:
        for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
            ok, why = registry.get(name).availability()
            if not ok:
                rows += [{"backend": name, "ctx": c, "status": "unavailable", "error": why} for c in ctxs]
                continue
            rows += run_backend(name, loaded, ctxs, args, shape, bw, out_f, deadline)

    # int4 checks last: they rewrite the HF weights in place with their int4 round trip.
    from edgeprof.fast.weights import dequantized_copy_

    int4 = [n for n in ["edgeprof-fast-int4", *args.backends.split(",")]
            if n.startswith("edgeprof-fast-int4") and registry.get(n).availability()[0]]
    got = {}
    for name in dict.fromkeys(int4):
        dec4 = registry.create(name, loaded, device="cuda", max_ctx=256)
        got[name] = teacher_forced_logits(dec4, prompt, forced)
        del dec4
    dequantized_copy_(loaded.model, 128)
    ref4 = teacher_forced_logits(hf, prompt, forced)
    for name, logits in got.items():
        key = "check_int4_vs_dequantized_hf" + ("" if name == "edgeprof-fast-int4" else f"[{name}]")
        summary[key] = compare(logits, ref4)
        print(f"int4 vs dequantized HF [{name}]:", json.dumps(summary[key]), flush=True)
    summary["cells"] = [{k: v for k, v in r.items() if k not in ("wall_ms", "gpu_ms")} for r in rows]
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary["provenance"]))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
