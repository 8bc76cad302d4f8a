"""Issue 6 benchmark: edgeprof-fast next to hf-graph, hf-compile and exllamav2.

One run on an H100/H200 (Qwen2.5-7B shapes, synthetic random weights, batch 1):
  1. checks: Triton step kernels vs the torch reference ops; edgeprof-fast bf16 logits vs
     HF bf16 (teacher-forced); edgeprof-fast-int4 logits vs HF on the dequantized weights;
  2. times every backend at each context as one sweep (edgeprof.sweep.run_sweep) of
     edgeprof.bench.run_cell cells: fill to ctx-1, warm up (graph capture / compile reported
     apart as capture_s), then `--steps` steps; the per-cell gate is off (step 1 checks);
     one edgeprof-fast* decoder serves every ctx (attention reads the live length only);
  3. prints ms/step and fraction of the datasheet floor (paper and touched definitions),
     writes cells.jsonl (the bench record, edgeprof.records; a rerun into the same --out
     resumes, cells past --budget-s are recorded as skipped), cells.csv and summary.json.

    python benchmarks/fast_decode.py --out results/fast --ctx 2048,4096,8192,16384

On the CPU (the torch ops, no Triton check, no CUDA graphs), to try this script's logic:

    python benchmarks/fast_decode.py --device cpu --model tiny-test --ctx 64,128 \
        --backends edgeprof-fast,edgeprof-fast-int4,hf-eager --steps 5 --warmup 1 --out /tmp/fast

Plots and tables: `python benchmarks/plot_results.py` (runs on the CPU machine).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from edgeprof import bench, hardware_loader
from edgeprof.backends import registry
from edgeprof.records import CELLS_JSONL, latest_records, read_jsonl, write_json_atomic
from edgeprof.sources import load_model
from edgeprof.sweep import SweepCell, SweepOptions, cell_key_of, grid_config, run_sweep

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


def _fresh(dec, prompt: list[int]) -> int:
    """The decoder reset, prefilled with `prompt` and warmed up (graph captured); returns the prefill's token."""
    dec.reset()
    first = dec.prefill(prompt).token_id
    dec.warmup()
    return first


def free_greedy(dec, prompt: list[int], n: int) -> dict:
    """Greedy tokens of prefill + n steps, as the host read them and as the decoder's history holds them."""
    read = [_fresh(dec, prompt)] + [dec.step().token_id for _ in range(n)]
    return {"read": read, "history": dec.tokens(len(prompt) - 1, len(prompt) + n)}


def pipelined_agreement(dec, prompt: list[int], n: int) -> dict:
    """Pipelined steps against one-at-a-time on the same prompt (the same greedy tokens must come out):
    `time_steps` with a step queued behind each unread one, and a queued step rolled back (as the daemon does when a
    reply ends before it) followed by more steps. Meaningful where `dec.steps_ahead` > 0."""
    serial = free_greedy(dec, prompt, n)["read"]  # [prefill's token] + n steps'
    _fresh(dec, prompt)
    piped = dec.time_steps(n).tokens
    _fresh(dec, prompt)
    a, b = dec.step_async(), dec.step_async()  # b queued behind a, then undone unread
    tok = a.finish().token_id
    dec.rollback(1, tok)
    del b
    rolled = [tok] + [dec.step().token_id for _ in range(n - 1)]
    out = {"steps_ahead": dec.steps_ahead, "time_steps_equal": piped == serial[1:],
           "rollback_equal": rolled == serial[1:],
           "history_equal": dec.tokens(len(prompt) - 1, len(prompt) + n) == serial}
    out["passed"] = all(v for k, v in out.items() if k.endswith("_equal"))
    return out


def compare(a: list[torch.Tensor], b: list[torch.Tensor]) -> dict:
    errs = [float((x - y).norm() / y.norm()) for x, y in zip(a, b, strict=True)]
    agree = sum(int(x.argmax()) == int(y.argmax()) for x, y in zip(a, b, strict=True)) / len(a)
    return {"logit_rel_error_max": max(errs), "logit_rel_error_mean": sum(errs) / len(errs), "top1_agreement": agree,
            "per_step": [round(e, 5) for e in errs]}


def measure(dec, loaded, backend: str, ctx: int, steps: int, warmup: int, model: str | None = None,
            device: str | None = None, command: str | None = None) -> dict[str, Any]:
    """One cell through edgeprof.bench.run_cell (the bench record; status "failed" with the
    reason when it fails), on `dec` when given (reused across ctxs) else on a decoder built for
    the cell. No per-cell gate: this script checks logits once per run (step 1)."""
    spec = bench.CellSpec(model or loaded.shape.name, backend, ctx, steps, warmup,
                          device=device or (dec.device if dec is not None else None),
                          synthetic=loaded.synthetic, gate=False)
    rec = bench.run_cell(spec, command, loaded=loaded, decoder=dec)
    if rec.get("prefill_ms") is not None:
        rec["prefill_s"] = rec["prefill_ms"] / 1e3  # the key this script's earlier records have
    return rec


def provenance(det, device: str) -> dict:
    import transformers

    return {"gpu": det.spec.key, "gpu_name": det.nvml_name, "driver": det.driver, "device": device,
            "torch": torch.__version__,
            "cuda": torch.version.cuda, "transformers": transformers.__version__, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join([sys.executable, *sys.argv])}


class Cells:
    """The sweep's cell runner: edgeprof-fast* decoders are built once per backend with room for
    the largest ctx and reused; the other backends get a decoder per cell (bench's own)."""

    def __init__(self, loaded, max_ctx: int) -> None:
        self.loaded, self.max_ctx = loaded, max_ctx
        self.backend: str | None = None
        self.decoder = None

    def __call__(self, cell: SweepCell, opts: SweepOptions) -> dict[str, Any]:
        name = cell.key.backend
        if name != self.backend:
            self.release()
            self.backend = name
            if name.startswith("edgeprof-fast") and registry.get(name).availability()[0]:
                self.decoder = registry.create(name, self.loaded, device=opts.device, max_ctx=self.max_ctx)
        command = " ".join([sys.executable, *sys.argv])
        rec = measure(self.decoder, self.loaded, name, cell.key.ctx, cell.steps, cell.warmup, model=cell.key.model,
                      device=opts.device, command=command)
        wall = (rec.get("stats") or {}).get("wall") or {}
        print(f"  {name:20s} ctx {cell.key.ctx:6d}: {rec['status']} {wall.get('p50', float('nan')):.3f} ms",
              flush=True)
        return rec

    def release(self) -> None:
        if self.decoder is not None:
            self.decoder.close()
        self.decoder = None
        free()


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def table(rows: list[dict]) -> str:
    lines = [f"{'backend':20s} {'ctx':>6s} {'p50 ms':>8s} {'p99 ms':>8s} {'gpu ms':>8s} {'floor':>7s} "
             f"{'frac':>6s} {'touched':>7s} {'capture s':>9s}"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"{r['backend']:20s} {r['ctx']:6d}  {r['status']}: {str(r.get('error'))[:60]}")
            continue
        w, f, g = r["stats"]["wall"], r["floor"], r["stats"]["gpu"] or {}
        lines.append(f"{r['backend']:20s} {r['ctx']:6d} {w['p50']:8.3f} {w['p99']:8.3f} {g.get('p50', 0):8.3f} "
                     f"{f['floor_ms']:7.3f} {f['fraction']:6.3f} {f['touched_fraction']:7.3f} {r['capture_s'] or 0:9.1f}")
    return "\n".join(lines)


def bf16_checks(loaded, device: str, prompt: list[int], forced: list[int], ref) -> dict[str, dict]:
    """edgeprof-fast (graph/eager, Triton/torch ops) and hf-graph logits vs hf-eager, teacher-forced."""
    variants = [("graph+triton", {}), ("eager+triton", {"use_graph": False}),
                ("eager+torch", {"use_graph": False, "ops": "torch"})]
    if not device.startswith("cuda"):  # no Triton kernels and no CUDA graphs on the CPU
        variants = variants[-1:]
    out = {}
    for label, opts in variants:
        fast = registry.create("edgeprof-fast", loaded, device=device, max_ctx=256, **opts)
        out[f"check_bf16_vs_hf[{label}]"] = compare(teacher_forced_logits(fast, prompt, forced), ref)
        del fast
        print(f"bf16 vs HF [{label}]:", json.dumps(out[f"check_bf16_vs_hf[{label}]"]), flush=True)
    if registry.get("hf-graph").availability()[0]:
        hf_static = registry.create("hf-graph", loaded, device=device, max_ctx=256)
        out["check_hf_graph_vs_hf_eager"] = compare(teacher_forced_logits(hf_static, prompt, forced), ref)
        print("hf-graph vs hf-eager:", json.dumps(out["check_hf_graph_vs_hf_eager"]), flush=True)
        del hf_static
    return out


def int4_checks(loaded, device: str, backends: list[str], hf, prompt: list[int], forced: list[int]) -> dict:
    """edgeprof-fast-int4* logits vs HF on the dequantized int4 weights. Run last: it rewrites
    the HF weights in place with their int4 round trip."""
    from edgeprof.fast.weights import dequantized_copy_

    int4 = [n for n in ["edgeprof-fast-int4", *backends]
            if n.startswith("edgeprof-fast-int4") and n in registry.BACKENDS and registry.get(n).availability()[0]]
    got, groups = {}, set()
    for name in dict.fromkeys(int4):
        dec4 = registry.create(name, loaded, device=device, max_ctx=256)
        got[name] = teacher_forced_logits(dec4, prompt, forced)
        groups.add(dec4.weights.extra["group"])  # 128, or 64 where 128 does not divide the widths
        del dec4
    if not got:
        return {}
    if len(groups) != 1:
        raise ValueError(f"the int4 backends quantised with different groups {sorted(groups)}; check one at a time")
    dequantized_copy_(loaded.model, groups.pop())
    ref4 = teacher_forced_logits(hf, prompt, forced)
    out = {}
    for name, logits in got.items():
        key = "check_int4_vs_dequantized_hf" + ("" if name == "edgeprof-fast-int4" else f"[{name}]")
        out[key] = compare(logits, ref4)
        print(f"int4 vs dequantized HF [{name}]:", json.dumps(out[key]), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-7b")
    ap.add_argument("--ctx", default="2048,4096,8192,16384")
    ap.add_argument("--backends", default="edgeprof-fast,edgeprof-fast-int4,hf-graph,hf-compile,exllamav2")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--budget-s", type=float, default=480, help="cells that would start after this are skipped")
    ap.add_argument("--device", default="cuda", help="cuda (default); cpu to try this script on a tiny model")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    t_start = time.monotonic()
    ctxs = [int(c) for c in args.ctx.split(",")]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    det = hardware_loader.detect()
    if args.device.startswith("cuda") and det.device != "cuda":
        print("this benchmark needs an NVIDIA GPU (or --device cpu with a tiny model, to try it)", file=sys.stderr)
        return 2
    device = args.device
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"provenance": provenance(det, device)}
    if device.startswith("cuda"):
        summary["kernels"] = check_kernels(device)
    else:
        summary["kernels"] = {"skipped": "the Triton kernels need CUDA"}
    print("kernel check:", json.dumps(summary["kernels"]), flush=True)

    loaded = load_model(args.model, device, max_ctx=max(ctxs) + PAD)
    shape = loaded.shape
    prompt = torch.randint(0, shape.vocab, (64,), generator=torch.Generator().manual_seed(1)).tolist()
    hf = registry.create("hf-eager", loaded, device=device, max_ctx=256)
    forced = torch.randint(0, shape.vocab, (16,), generator=torch.Generator().manual_seed(2)).tolist()
    summary.update(bf16_checks(loaded, device, prompt, forced, teacher_forced_logits(hf, prompt, forced)))

    config = grid_config("fast_decode", [args.model], backends, ctxs, args.steps, args.warmup, device=device,
                         source="benchmarks/fast_decode.py")
    opts = SweepOptions(out=args.out, device=device, progress=False, plots=False,
                        budget_s=max(0.0, args.budget_s - (time.monotonic() - t_start)))
    # a shared decoder holds the largest cell as bench plans it (fill to ctx-1, warm-up, steps, slack)
    cells = Cells(loaded, bench.plan(max(ctxs), args.steps, args.warmup, shape.max_ctx)[1])
    try:
        run_sweep(config, opts, runner=cells, log=print)
    finally:
        cells.release()
    keys = {c.key for c in config.cells}  # a resumed --out may hold other cells too
    rows = [r for r in latest_records(read_jsonl(args.out / CELLS_JSONL)) if cell_key_of(r) in keys]

    summary.update(int4_checks(loaded, device, backends, hf, prompt, forced))
    summary["cells"] = [{k: v for k, v in r.items() if k not in ("wall_ms", "gpu_ms")} for r in rows]
    write_json_atomic(args.out / "summary.json", summary, indent=1)
    print(json.dumps(summary["provenance"]))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
