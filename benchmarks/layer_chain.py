"""Where does the int4 decode step spend the time its GEMVs, timed one shape at a time, do not account for (issue 12)?

On an H200 the per-shape PDL chains of the shipped launches add up to ~1.20 ms of GEMV per Qwen2.5-7B step, while
the step takes ~2.0 ms with ~0.2 ms of attention (results/h200/2026-11-29-groupsums). This benchmark times, in one
process on the decoder's own weights and launch plan, chains that add one piece of the step at a time. Each chain
runs all 28 layers inside one captured CUDA graph, with the decoder's kernel flags (PDL as the step runs it):

  shape chains  one projection of every layer in a row: qkv, o, gate_up, down (plain input), and qkv and gate_up
                with the fused residual add + RMSNorm, down with the fused SiLU*up
  layers        per layer qkv, o, gate_up, down, plain inputs: the shapes alternate as in the step
  +fusions      the same with the step's fusions (norm into qkv and gate_up, SiLU*up into down, or into gate_up's
                epilogue where the plan's gate_up variant has one; then "gate_up" times that launch and "down" and
                "down+silu" the plain down it feeds)
  +attention    the same with the step's RoPE + KV write + attention before o, at the timed context
  step          the decoder's whole step (edgeprof.bench cell at the same context: embedding, final norm, lm_head
                and argmax included), device time p50

`decompose` turns the times into the step's parts: what alternating the shapes costs over the shape chains, what
the fusions cost, what attention adds, and the rest of the step.

    python benchmarks/layer_chain.py --ctx 2048 --out $OUT/layer_chain.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

BACKEND = "edgeprof-fast-int4-cuda"
PLAIN_SHAPES = ("qkv", "o", "gate_up", "down")


def decompose(ms: dict[str, float]) -> dict[str, float]:
    """The step's parts, in ms per step, from the chain times (keys as `chains` names them, plus "step")."""
    plain = sum(ms[s] for s in PLAIN_SHAPES)
    fused = ms["qkv+norm"] + ms["o"] + ms["gate_up+norm"] + ms["down+silu"]
    return {
        "shape chains, plain": plain,
        "alternating shapes": ms["layers"] - plain,
        "fusions (alone)": fused - plain,
        "fusions (in the layer chain)": ms["layers+fusions"] - ms["layers"],
        "attention (in the layer chain)": ms["layers+fusions+attention"] - ms["layers+fusions"],
        "rest of the step": ms["step"] - ms["layers+fusions+attention"],
        "step": ms["step"],
    }


def chains(model, ctx: int) -> dict[str, Callable[[], None]]:
    """One callable per chain, each running every layer of `model` (an int4 FastModel on edgeprof's CUDA GEMV)."""
    layers, eps, dev = model.w.layers, model.shape.norm_eps, model.device
    h, i = model.shape.hidden, model.shape.intermediate
    g = torch.Generator(device=dev).manual_seed(0)

    def rnd(n: int) -> torch.Tensor:
        return torch.randn(1, n, device=dev, generator=g).to(torch.bfloat16)

    x, res, a, hi, gu = rnd(h), rnd(h), rnd(h), rnd(i), rnd(2 * i)
    model.pos.fill_(ctx - 1)  # attention reads ctx cached positions at every replay

    def layer(lw, idx: int, fusions: bool, attention: bool) -> None:
        if not fusions:
            lw.qkv(x)
            lw.o(a)
            gate_up(lw, False)
            down(lw, False)
            return
        qkv, r = lw.qkv.fused_norm(x, res, lw.attn_norm, eps)
        y = lw.o(model.ops.rope_attention(qkv, model.pos, model.k[idx], model.v[idx]) if attention else a)
        mlp_fused(lw, y, r)

    def epilogue(lw) -> bool:  # the plan's gate_up writes silu(gate) * up itself (w4cuda.ACT_EPILOGUE_VARIANTS)
        return getattr(lw.gate_up, "fuses_norm_silu", False)

    def mlp_fused(lw, y: torch.Tensor, r: torch.Tensor) -> None:  # as FastModel.step: SiLU*up in gate_up or in down
        if epilogue(lw):
            lw.down(lw.gate_up.fused_norm_silu(y, r, lw.mlp_norm, eps)[0])
        else:
            lw.down.fused_silu(lw.gate_up.fused_norm(y, r, lw.mlp_norm, eps)[0])

    def gate_up(lw, norm: bool):  # gate_up as the step launches it (its SiLU*up epilogue where the plan has one)
        if epilogue(lw):
            return lw.gate_up.fused_norm_silu(x, res, lw.mlp_norm, eps) if norm else lw.gate_up.act_of(x)
        return lw.gate_up.fused_norm(x, res, lw.mlp_norm, eps) if norm else lw.gate_up(x)

    def down(lw, silu: bool):  # down as the step launches it: SiLU*up staged unless gate_up wrote it
        return lw.down.fused_silu(gu) if silu and not epilogue(lw) else lw.down(hi)

    def every(fn: Callable) -> Callable[[], None]:  # fn on every layer's projection
        def run() -> None:
            for lw in layers:
                fn(lw)
        return run

    def stack(fusions: bool, attention: bool) -> Callable[[], None]:  # whole layers, in order
        def run() -> None:
            for n, lw in enumerate(layers):
                layer(lw, n, fusions, attention)
        return run

    return {
        "qkv": every(lambda lw: lw.qkv(x)),
        "o": every(lambda lw: lw.o(a)),
        "gate_up": every(lambda lw: gate_up(lw, False)),
        "down": every(lambda lw: down(lw, False)),
        "qkv+norm": every(lambda lw: lw.qkv.fused_norm(x, res, lw.attn_norm, eps)),
        "gate_up+norm": every(lambda lw: gate_up(lw, True)),
        "down+silu": every(lambda lw: down(lw, True)),
        "layers": stack(False, False),
        "layers+fusions": stack(True, False),
        "layers+fusions+attention": stack(True, True),
    }


def check_cuda_layers(model) -> None:
    from edgeprof.errors import ConfigError
    from edgeprof.fast.w4cuda import W4CudaLinear

    for name in PLAIN_SHAPES:
        lin = getattr(model.w.layers[0], name)
        if not isinstance(lin, W4CudaLinear):
            raise ConfigError("backend", f"{BACKEND} built {name} as {type(lin).__name__}, not edgeprof's CUDA GEMV "
                              f"(its record's int4_fallback_reason says why); this benchmark needs the CUDA kernel")


def run(ctx: int, steps: int, repeats: int, rounds: int) -> dict:
    from fast_decode import measure, provenance

    from edgeprof import hardware_loader
    from edgeprof.backends import registry
    from edgeprof.sources import load_model
    from edgeprof.timing import time_graph

    loaded = load_model("qwen2.5-7b", "cuda", synthetic=True)
    dec = registry.create(BACKEND, loaded, device="cuda", max_ctx=ctx + 64)
    model = dec.model
    check_cuda_layers(model)
    out: dict = {"benchmark": "layer_chain", **provenance(hardware_loader.detect(), "cuda"), "ctx": ctx,
                 "backend": BACKEND,
                 "launches": dec.info().notes.get("int4_launch"), "rounds": []}
    for _ in range(rounds):
        rec = measure(dec, loaded, BACKEND, ctx, steps, 5, model="qwen2.5-7b", device="cuda")
        model.set_kernel_flags()
        ms = {name: time_graph([fn], repeats).p50 for name, fn in chains(model, ctx).items()}
        if rec.get("status") != "ok":
            raise RuntimeError(f"the step cell failed: {rec.get('error') or rec.get('status')}")
        ms["step"] = (rec["stats"]["gpu"] or rec["stats"]["wall"])["p50"]  # device time where the cell has it
        out["rounds"].append({"ms": ms, "step_wall_p50_ms": rec["stats"]["wall"]["p50"], "parts": decompose(ms)})
    return out


def table(out: dict) -> str:
    lines = [f"{out['backend']} at ctx {out['ctx']} on {out.get('gpu', '?')}: ms per step (28 layers), p50"]
    names = list(out["rounds"][0]["ms"]) + list(out["rounds"][0]["parts"])
    for name in dict.fromkeys(names):
        vals = [r["ms"].get(name, r["parts"].get(name)) for r in out["rounds"]]
        lines.append(f"  {name:32s} " + " ".join(f"{v:7.3f}" for v in vals))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ctx", type=int, default=2048, help="context of the step and of the attention chain")
    ap.add_argument("--steps", type=int, default=30, help="timed steps of the step cell")
    ap.add_argument("--repeats", type=int, default=30, help="timed replays of each chain's graph")
    ap.add_argument("--rounds", type=int, default=2, help="the step and every chain again, in the same process")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("layer_chain.py needs a CUDA GPU (edgeprof's CUDA W4 GEMV)", file=sys.stderr)
        return 2
    out = run(args.ctx, args.steps, args.repeats, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(table(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
