"""Batch-1 int4 GEMV kernels at the Qwen2.5-7B layer shapes: cuBLAS bf16 vs torch's tinygemm
vs gemlite (Triton) vs edgeprof's own Triton W4 GEMV at several tiles, each checked against the
exact dequantized weights first.

Every kernel gets enough weight copies to exceed the L2 cache several times, chained in one
CUDA graph (`edgeprof.timing.time_graph`), so each call streams its weights from HBM as in a
decode step. Prints us per call and the bytes moved per second (weights + scales).

    python benchmarks/int4_gemv.py --out results/h100/<date>-int4-gemv/int4_gemv.json

`--suite kernel` (issue 12) checks and times edgeprof's own CUDA W4A16 GEMV (edgeprof/fast/w4cuda.py):
measures the device-to-device copy bandwidth in the same run, checks the kernel on every
Qwen2.5-7B / Llama-3.1-8B / Mistral-7B layer shape (sym/asym, g32/64/128, fused bias and SiLU*up; the
decoders' other variants k2 / k4 / cl at one and two K splits)
against float64 on the dequantized weights, times it next to tinygemm, gemlite (if installed)
and cuBLAS bf16 as GB/s and fraction of the copy bandwidth, then (with --step-ctx) the full
decode step of edgeprof-fast / -int4 (tinygemm) / -int4-cuda and `edgeprof explain` of the new path:

    python benchmarks/int4_gemv.py --suite kernel --step-ctx 2048,16384 --out-dir $OUT

`--suite tune` sweeps the CUDA kernel's launch shape per Qwen2.5-7B shape (qkv, o, gate_up, down):
K splits {1,2,3,4,6,8} (group-aligned) x variant (base: the default kernel; w8: 8 warps per CTA;
persist: fewer CTAs walking the row-block columns, x staged once, next row block prefetched),
each checked before it is timed, and writes tune.json (table, best config per shape):

    python benchmarks/int4_gemv.py --suite tune --repeats 30 --out-dir $OUT
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from w4gemv import W4Linear, W4LinearSplitK  # beside this script: measured, used by no backend

from edgeprof.fast.int4 import INT4_KERNELS, dequantize, quantize_rtn
from edgeprof.fast.w4cuda import VARIANTS
from edgeprof.timing import time_graph

# (name, in K, out N) of one Qwen2.5-7B layer with edgeprof-fast's fusions
SHAPES = [("qkv", 3584, 4608), ("o", 3584, 3584), ("gate_up", 3584, 37888), ("down", 18944, 3584)]
GROUP = 128
SPLITK_CONFIGS = [(32, 256, 1, 4), (32, 256, 2, 4), (64, 256, 2, 4), (16, 512, 1, 4), (32, 512, 1, 4),
                  (64, 128, 4, 4), (128, 128, 2, 8), (16, 256, 4, 2), (64, 512, 1, 8), (128, 256, 1, 8)]
W4_CONFIGS = [(8, 256, 4), (16, 256, 4), (16, 512, 4), (32, 256, 4), (32, 512, 8), (64, 256, 8), (8, 512, 2),
              (4, 1024, 2), (16, 1024, 8), (2, 2048, 4)]
STREAM_BYTES = 400 << 20  # copies per kernel: at least this many weight bytes (H100 L2: 50 MB)


def _copies(nbytes_one: int) -> int:
    return max(2, -(-STREAM_BYTES // nbytes_one))


def bench_shape(name: str, k: int, n: int, repeats: int) -> list[dict]:
    g = torch.Generator(device="cuda").manual_seed(0)
    w = (torch.randn(n, k, device="cuda", generator=g) * 0.02).to(torch.bfloat16)
    x = torch.randn(1, k, device="cuda", generator=g).to(torch.bfloat16)
    q, z, s = quantize_rtn(w, GROUP)
    s = s.to(torch.bfloat16).float()
    ref = (x.float() @ dequantize(q, z, s, GROUP).t())  # [1, N] exact int4 function in fp32
    rows = []
    dense_bytes = n * k * 2
    dense = [w] + [w.clone() for _ in range(_copies(dense_bytes) - 1)]
    rows.append(_row(name, k, n, "cublas-bf16", [lambda wi=wi: F.linear(x, wi) for wi in dense],
                     dense_bytes, F.linear(x, w.to(torch.bfloat16)), x.float() @ w.float().t(), repeats))
    del dense
    builders = dict(INT4_KERNELS)
    for bn, bk, nw in W4_CONFIGS:  # edgeprof's Triton GEMV (benchmarks/w4gemv.py) at several tile shapes
        if k % bk == 0:
            builders[f"triton-{bn}x{bk}w{nw}"] = lambda q, z, s, g, bn=bn, bk=bk, nw=nw: W4Linear(q, s, g, bn, bk, nw)
    for bn, bk, it, nw in SPLITK_CONFIGS:
        if k % bk == 0:
            builders[f"tritonsk-{bn}x{bk}i{it}w{nw}"] = (
                lambda q, z, s, g, bn=bn, bk=bk, it=it, nw=nw: W4LinearSplitK(q, s, g, bn, bk, it, nw))
    for kernel, build in builders.items():
        try:
            first = build(q, z, s, GROUP)
            first(x)  # compiles
        except Exception as exc:  # not installed / unsupported / does not compile: recorded, not fatal
            rows.append({"shape": name, "k": k, "n": n, "kernel": kernel, "status": f"{type(exc).__name__}: {exc}"})
            continue
        layers = [first] + [build(q, z, s, GROUP) for _ in range(_copies(first.nbytes) - 1)]
        rows.append(_row(name, k, n, kernel, [lambda li=li: li(x) for li in layers], first.nbytes, first(x), ref,
                         repeats))
        del layers
    return rows


# A timed row's own output check: max |y - ref| / max |ref| against the float64 product of the weights it read. bf16
# output rounding and the fp32 accumulation order give 2e-3 to 4e-3 on these shapes; a wrong kernel gives O(1).
ROW_BOUND = 1e-2


def row_check(err: float) -> str:
    """The per-shape table's check column for a row's max-rel error."""
    return "PASS" if err <= ROW_BOUND else f"FAIL (> {ROW_BOUND:.0e})"


def _row(name, k, n, kernel, calls, nbytes, out, ref, repeats) -> dict:
    err = float((out.float() - ref).abs().max() / ref.abs().max())
    try:
        st = time_graph(calls, repeats)
    except Exception as exc:  # e.g. a kernel that cannot be captured in a CUDA graph
        return {"shape": name, "k": k, "n": n, "kernel": kernel, "status": f"timing failed: {exc}", "rel_err": err}
    return {"shape": name, "k": k, "n": n, "kernel": kernel, "status": "ok", "rel_err": err, "bytes": nbytes,
            "copies": len(calls), "us_p50": st.p50 * 1e3, "us_p90": st.p90 * 1e3,
            "gb_per_s": nbytes / (st.p50 * 1e-3) / 1e9}


# ---------------------------------------------------------------- issue 12: edgeprof's CUDA kernel
# (model, name, in K, out N) with edgeprof-fast's fusions (qkv and gate_up concatenated)
KERNEL_SHAPES = [("qwen2.5-7b", "qkv", 3584, 4608), ("qwen2.5-7b", "o", 3584, 3584),
                 ("qwen2.5-7b", "gate_up", 3584, 37888), ("qwen2.5-7b", "down", 18944, 3584),
                 ("qwen2.5-7b", "lm_head", 3584, 152064),
                 ("llama-3.1-8b", "qkv", 4096, 6144), ("llama-3.1-8b", "o", 4096, 4096),
                 ("llama-3.1-8b", "gate_up", 4096, 28672), ("llama-3.1-8b", "down", 14336, 4096),
                 ("mistral-7b", "lm_head", 4096, 32768)]
# (model, hidden H, intermediate I): the MLPs whose gate_up [2I, H] and down [H, I] are in KERNEL_SHAPES
MLP_SHAPES = [("qwen2.5-7b", 3584, 18944), ("llama-3.1-8b", 4096, 14336)]
REL_BOUND = 2e-3  # fp32 accumulation of exact products; the bf16 output rounding alone is ~2e-3 max-rel


def copy_bandwidth(nbytes: int = 1 << 30, repeats: int = 20) -> float:
    """Device-to-device copy, bytes read + written per second (the measured ceiling)."""
    a = torch.empty(nbytes // 2, device="cuda", dtype=torch.bfloat16).normal_()
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
    for e0, e1 in ev:
        e0.record()
        b.copy_(a)
        e1.record()
    torch.cuda.synchronize()
    ms = sorted(e0.elapsed_time(e1) for e0, e1 in ev)[repeats // 2]
    return 2 * nbytes / (ms * 1e-3)


def _quant(n: int, k: int, group: int, asym: bool, g: torch.Generator):
    w = torch.randn(n, k, device="cuda", generator=g) * 0.02
    q, z, s = quantize_rtn(w, group)
    if asym:  # asymmetric: random integer zeros 0..15 per group
        z = torch.randint(0, 16, z.shape, device="cuda", generator=g, dtype=torch.int32)
    return q, z, s.to(torch.bfloat16).float()


def check_inputs(n: int, k: int, group: int, asym: bool) -> dict:
    """check_cuda_kernel's weights: packed int4, the float64 dequantized matrix, a bias, and the
    generator that then draws the trial inputs (reused across launch configs by --suite tune)."""
    from edgeprof.fast.w4cuda import pack_w4

    g = torch.Generator(device="cuda").manual_seed(n * 7 + k + group + asym)
    q, z, s = _quant(n, k, group, asym, g)
    w64 = dequantize(q, z, s, group).double()  # [N, K]
    bias = torch.randn(n, device="cuda", generator=g).to(torch.bfloat16)
    return {"packed": pack_w4(q, z, s, group), "w64": w64, "bias": bias, "g": g}


def check_cuda_kernel(model: str, name: str, k: int, n: int, group: int, asym: bool, trials: int = 3,
                      launch: dict | None = None, prep: dict | None = None) -> dict:
    """Fresh random inputs per trial; output memory poisoned with NaN first; float64 reference on the
    dequantized weights; split-K determinism (two calls bitwise equal); fused bias and SiLU*up.
    `launch`: W4CudaLinear's launch keywords (splits, variant, grid_x); `prep`: check_inputs()."""
    from edgeprof.fast.w4cuda import W4CudaLinear

    prep = prep or check_inputs(n, k, group, asym)
    g, w64, bias = prep["g"], prep["w64"], prep["bias"]
    lin = W4CudaLinear(prep["packed"], **(launch or {}))
    worst, deterministic, unwritten = 0.0, True, 0
    for trial in range(trials):
        x = torch.randn(1, k, device="cuda", generator=g).to(torch.bfloat16) * (1 + trial)
        torch.full((1, n), float("nan"), device="cuda", dtype=torch.bfloat16)  # freed block: poison for y
        y = lin(x)
        y2 = lin(x)
        deterministic &= bool(torch.equal(y, y2))
        unwritten += int(torch.isnan(y).sum())
        ref = x.double() @ w64.t()
        worst = max(worst, float((y.double() - ref).norm() / ref.norm()))
    # fused epilogue bias and fused SiLU*up input (as edgeprof-fast uses them)
    lin.bias = bias
    gu = torch.randn(1, 2 * k, device="cuda", generator=g).to(torch.bfloat16)
    gate, up = gu.float().chunk(2, dim=-1)
    act = (gate / (1 + torch.exp(-gate))).to(torch.bfloat16).float() * up
    xr = act.to(torch.bfloat16).double()
    ref = xr @ w64.t() + bias.double()
    yf = lin.fused_silu(gu)
    fused = float((yf.double() - ref).norm() / ref.norm())
    norm_err, res_exact = check_fused_norm(lin, w64, bias, g) if lin.fuses_norm else (0.0, True)
    ok = (worst < REL_BOUND and fused < REL_BOUND and norm_err < REL_BOUND and res_exact and deterministic
          and unwritten == 0)
    return {"model": model, "shape": name, "k": k, "n": n, "group": group, "asym": asym, "rel_err": worst,
            "rel_err_fused_bias_silu": fused, "rel_err_fused_norm": norm_err, "fused_norm_residual_exact": res_exact,
            "deterministic": deterministic, "unwritten": unwritten, "splits": lin.splits, "passed": ok}


def _deferred_norm_ref(h: torch.Tensor, nw: torch.Tensor, w64: torch.Tensor, eps: float) -> torch.Tensor:
    """The deferred norm's math (w4cuda.NORMS "deferred") in float64: rstd * (W bf16(h * w)), h = bf16(x + res). The
    product of two bf16 values is exact in fp32, so its rounding to bf16 is the kernel's staged value, bit for bit."""
    staged = (h.float() * nw.float()).to(torch.bfloat16).double()
    rstd = 1.0 / torch.sqrt(h.double().pow(2).mean() + eps)
    return rstd * (staged @ w64.t())


def check_fused_norm(lin, w64: torch.Tensor, bias: torch.Tensor, g: torch.Generator,
                     deferred: bool = False) -> tuple[float, bool]:
    """The fused residual add + RMSNorm input (with and without a residual) against add_rmsnorm's rounding in
    torch (deferred: the deferred norm's, _deferred_norm_ref), then float64 on the dequantized weights; the written
    residual must equal bf16(x + res) exactly."""
    from edgeprof.fast.kernels import add_rmsnorm

    k = w64.shape[1]
    worst, exact = 0.0, True
    for with_res in (True, False):
        x = torch.randn(1, k, device="cuda", generator=g).to(torch.bfloat16)
        res = torch.randn(1, k, device="cuda", generator=g).to(torch.bfloat16) if with_res else None
        nw = (1 + 0.1 * torch.randn(k, device="cuda", generator=g)).to(torch.bfloat16)
        h_ref, res_ref = add_rmsnorm(x, res, nw, 1e-6)
        ref = ((_deferred_norm_ref(res_ref, nw, w64, 1e-6) if deferred else h_ref.double() @ w64.t())
               + bias.double())
        y, res_out = lin.fused_norm(x, res, nw, 1e-6)
        worst = max(worst, float((y.double() - ref).norm() / ref.norm()))
        exact &= bool(torch.equal(res_out, res_ref))
    return worst, exact


def check_act_epilogue(model: str, h: int, i: int, asym: bool, norm: str = "loop") -> dict:
    """An MLP's gate_up as an act-epilogue variant (w4cuda.ACT_EPILOGUE_VARIANTS: it writes silu(gate) * up) feeding a
    plain down, against the same gate_up's fused_norm feeding down.fused_silu: the act values must be the ones down
    stages itself, so both y are bitwise equal; with and without a residual (whose written sum must match too), and
    on a plain input (act_of against the un-permuted y = W x). `norm`: the fused norm's mode (w4cuda.NORMS) of both."""
    from edgeprof.fast.w4cuda import ACT_EPILOGUE_VARIANTS, W4CudaLinear, pack_w4, use_norm

    g = torch.Generator(device="cuda").manual_seed(11 + asym)
    gate_up = W4CudaLinear(pack_w4(*_quant(2 * i, h, GROUP, asym, g), GROUP), variant=next(iter(ACT_EPILOGUE_VARIANTS)))
    down = W4CudaLinear(pack_w4(*_quant(h, i, GROUP, asym, g), GROUP))
    same = True
    use_norm(norm)
    try:
        for with_res in (True, False):
            x = torch.randn(1, h, device="cuda", generator=g).to(torch.bfloat16)
            res = torch.randn(1, h, device="cuda", generator=g).to(torch.bfloat16) if with_res else None
            nw = (1 + 0.1 * torch.randn(h, device="cuda", generator=g)).to(torch.bfloat16)
            act, res_a = gate_up.fused_norm_silu(x, res, nw, 1e-6)
            gu, res_b = gate_up.fused_norm(x, res, nw, 1e-6)
            same &= bool(torch.equal(down(act), down.fused_silu(gu)) and torch.equal(res_a, res_b))
    finally:
        use_norm("loop")
    x = torch.randn(1, h, device="cuda", generator=g).to(torch.bfloat16)
    same &= bool(torch.equal(down(gate_up.act_of(x)), down.fused_silu(gate_up(x))))
    return {"model": model, "shape": "gate_up act epilogue", "k": h, "n": 2 * i, "group": GROUP, "asym": asym,
            "variant": gate_up.variant, "norm": norm, "bitwise_equal": same, "passed": same}


# (variant, K splits) of the launches that take the deferred norm: one split, or a cluster's splits (their sums of
# h^2 meet in the cluster finish); None: the variant's own (one split)
DEFERRED_NORM_LAUNCHES = [("scx", 1), ("scxa", None), ("clscx", 7), ("clscxg", 7)]


def check_deferred_norm(model: str, name: str, k: int, n: int, asym: bool, variant: str,
                        splits: int | None) -> dict:
    """A launch of `variant` at `splits` (DEFERRED_NORM_LAUNCHES) with the deferred norm (w4cuda.NORMS): against its
    own math in float64 (check_fused_norm, deferred), deterministic, and NOT bitwise the loop's y on the same inputs
    (else the switch did not reach the launch: the two round differently)."""
    from edgeprof.fast.w4cuda import W4CudaLinear, use_norm

    prep = check_inputs(n, k, GROUP, asym)
    lin = W4CudaLinear(prep["packed"], variant=variant, splits=splits)
    lin.bias = prep["bias"]
    x = torch.randn(1, k, device="cuda", generator=prep["g"]).to(torch.bfloat16)
    res = torch.randn(1, k, device="cuda", generator=prep["g"]).to(torch.bfloat16)
    nw = (1 + 0.1 * torch.randn(k, device="cuda", generator=prep["g"])).to(torch.bfloat16)
    try:
        use_norm("deferred")
        err, exact = check_fused_norm(lin, prep["w64"], prep["bias"], prep["g"], deferred=True)
        y1, y2 = lin.fused_norm(x, res, nw, 1e-6)[0], lin.fused_norm(x, res, nw, 1e-6)[0]
        use_norm("loop")
        y_loop = lin.fused_norm(x, res, nw, 1e-6)[0]
    finally:
        use_norm("loop")
    det, differs = bool(torch.equal(y1, y2)), not bool(torch.equal(y1, y_loop))
    return {"model": model, "shape": name, "k": k, "n": n, "group": GROUP, "asym": asym, "variant": variant,
            "check": "norm_deferred", "splits": lin.splits, "rel_err_fused_norm": err,
            "fused_norm_residual_exact": exact, "deterministic": det, "differs_from_loop": differs,
            "passed": err < REL_BOUND and exact and det and differs}


PROJECTION_ROLES = ("qkv", "o", "gate_up", "down")  # the shapes the decoder builds with a role (weights._int4)


def decoder_launch(name: str, k: int, n: int) -> tuple[dict, str]:
    """(launch kwargs, "plan" | "rule" | "rule-sm80" | "base") the decoder takes for this shape on this card:
    w4cuda.plan_launch with the projection's role, so a shape without a plan entry gets the rule's launch for its
    role (Llama's gate_up as scxa, its o as wk6), not the role-less default. lm_head has no role (the decoder's head
    is bf16; the int4 row is a large-shape reference)."""
    from edgeprof.fast.w4cuda import plan_launch

    role = name if name in PROJECTION_ROLES else None
    return plan_launch(k, n, GROUP, torch.device("cuda"), role)


def _mlp_pair(h: int, i: int, group: int, asym: bool, g: torch.Generator):
    """gate_up [2I, H] and down [H, I] at the splits the decoder launches them with on this card (launch_plan, else
    choose_splits), on the default kernel: the fused MLP runs only that one, so a plan's other variant (e.g. cl) is
    checked here at its splits on base (the decoder itself does not fuse it: w4cuda.mlp_unfusable)."""
    from edgeprof.fast.w4cuda import W4CudaLinear, launch_plan, pack_w4

    plan = launch_plan()
    gu = W4CudaLinear(pack_w4(*_quant(2 * i, h, group, asym, g), group), **_on_base(plan.get((h, 2 * i), {})))
    dn = W4CudaLinear(pack_w4(*_quant(h, i, group, asym, g), group), **_on_base(plan.get((i, h), {})))
    return gu, dn


def _on_base(launch: dict) -> dict:
    """A plan launch's splits on base. A one-split variant's entry (wk*, scxa, sk*: one CTA per row block, or SiLU*up
    in the epilogue) says nothing about split-K, so it becomes base at choose_splits: base at its one split would be
    a different launch than anything the decoder runs (r152 timed Llama's wk8 down that way: 100.9 us per MLP)."""
    from edgeprof.fast.w4cuda import ONE_SPLIT_VARIANTS

    if not launch or launch.get("variant") in ONE_SPLIT_VARIANTS:
        return {}
    return {**launch, "variant": "base"}


def check_fused_mlp(model: str, h: int, i: int, group: int, asym: bool, trials: int = 2) -> dict:
    """The fused MLP (one launch, w4cuda.W4CudaMLP) against the decoder's two launches (gate_up with the norm, then
    down with SiLU*up) on the same weights and inputs: y, the gate_up output and the residual must be BITWISE equal
    (the same math in the same split order; gate_up unsplit, as the fused launch runs it). Each input runs twice, and afterwards the launch's ticket and slice
    counters must all be back at 0 (they reset themselves, so graph replays start clean). Trial 0 has no residual
    (the first layer)."""
    from edgeprof.fast.w4cuda import W4CudaLinear, W4CudaMLP, mlp_unfusable

    g = torch.Generator(device="cuda").manual_seed(h + i + group + asym)
    gu, dn = _mlp_pair(h, i, group, asym, g)
    rec = {"model": model, "shape": "gate_up+down", "k": h, "n": i, "group": group, "asym": asym,
           "splits": [gu.splits, dn.splits]}
    why = mlp_unfusable(gu, dn)
    if why:
        return {**rec, "passed": False, "status": f"not fusable: {why}"}
    mlp = W4CudaMLP(gu, dn)
    ref_gu_lin = gu if gu.splits == 1 else W4CudaLinear(gu.p, splits=1)  # the fused launch runs gate_up unsplit
    equal, counters_reset = True, True
    for trial in range(trials):
        x = torch.randn(1, h, device="cuda", generator=g).to(torch.bfloat16) * (1 + trial)
        res = torch.randn(1, h, device="cuda", generator=g).to(torch.bfloat16) if trial else None
        nw = (1 + 0.1 * torch.randn(h, device="cuda", generator=g)).to(torch.bfloat16)
        ref_gu, ref_res = ref_gu_lin.fused_norm(x, res, nw, 1e-6)
        ref = dn.fused_silu(ref_gu)
        for _ in range(2):
            mlp.gu.fill_(float("nan"))
            y, r = mlp(x, res, nw, 1e-6)
            equal &= bool(torch.equal(y, ref) and torch.equal(r, ref_res) and torch.equal(mlp.gu, ref_gu))
            counters_reset &= int(mlp.ws.abs().sum()) == 0
    return {**rec, "bitwise_equal": equal, "counters_reset": counters_reset, "passed": equal and counters_reset}


def time_mlp(model: str, h: int, i: int, copy_bw: float, repeats: int) -> list[dict]:
    """One layer's int4 MLP on the default kernel at the decoder's splits: two launches (gate_up with the norm, down
    with SiLU*up) against
    the fused one-launch MLP, each without and with PDL, as a chain over enough layers to stream from HBM.
    Bytes: both weight matrices with their scales. The error is against the two launches (bitwise: 0)."""
    from edgeprof.fast.kernels import pdl_prefetch_tiles
    from edgeprof.fast.w4cuda import W4CudaMLP, mlp_unfusable, use_pdl

    g = torch.Generator(device="cuda").manual_seed(3)
    first = _mlp_pair(h, i, GROUP, False, g)
    nbytes = first[0].nbytes + first[1].nbytes
    base = {"model": model, "shape": "gate_up+down", "k": h, "n": i}
    why = mlp_unfusable(*first)
    if why:
        return [{**base, "kernel": "edgeprof-cuda-mlp", "status": f"not fusable: {why}"}]
    pairs = [first] + [_mlp_pair(h, i, GROUP, False, g) for _ in range(_copies(nbytes) - 1)]
    mlps = [W4CudaMLP(gu, dn) for gu, dn in pairs]
    x = torch.randn(1, h, device="cuda", generator=g).to(torch.bfloat16)
    res = torch.randn(1, h, device="cuda", generator=g).to(torch.bfloat16)
    nw = (1 + 0.1 * torch.randn(h, device="cuda", generator=g)).to(torch.bfloat16)
    two = [lambda gu=gu, dn=dn: dn.fused_silu(gu.fused_norm(x, res, nw, 1e-6)[0]) for gu, dn in pairs]
    one = [lambda m=m: m(x, res, nw, 1e-6)[0] for m in mlps]
    ref = two[0]().double()
    rows = []
    for label, calls in (("edgeprof-cuda-2launch", two), ("edgeprof-cuda-mlp", one)):
        for pdl in (False, True) if torch.cuda.get_device_capability() >= (9, 0) else (False,):
            use_pdl(pdl, pdl_prefetch_tiles() if pdl else 0)
            try:
                row = _row("gate_up+down", h, i, label + ("+pdl" if pdl else ""), calls, nbytes, calls[0](), ref,
                           repeats)
            finally:
                use_pdl(False)
            row.update(base)
            if row.get("status") == "ok":
                row["frac_copy_bw"] = row["gb_per_s"] * 1e9 / copy_bw
            rows.append(row)
    del pairs, mlps
    torch.cuda.empty_cache()
    return rows


def _gemv_call(layer):
    """The launch the decoder makes of this layer: an act-epilogue variant's (w4cuda.ACT_EPILOGUE_VARIANTS) writes
    silu(gate) * up [1, N/2] (act_of); its plain __call__ would add a reorder of y that the decoder never runs (r89
    timed that: gate_up 25.9 us). Every other layer: y = W x."""
    return layer.act_of if getattr(layer, "fuses_norm_silu", False) else layer


def _act_ref(ref: torch.Tensor) -> torch.Tensor:
    """silu(g) * u of a float64 [1, 2I] reference [g | u]: what an act-epilogue launch writes."""
    g, u = ref.chunk(2, dim=-1)
    return g / (1 + torch.exp(-g)) * u


def time_kernel_shape(model: str, name: str, k: int, n: int, copy_bw: float, repeats: int, gemlite: bool) -> list[dict]:
    from edgeprof.fast.w4cuda import ACT_EPILOGUE_VARIANTS, W4CudaLinear, pack_w4

    g = torch.Generator(device="cuda").manual_seed(1)
    q, z, s = _quant(n, k, GROUP, False, g)
    x = torch.randn(1, k, device="cuda", generator=g).to(torch.bfloat16)
    ref = x.double() @ dequantize(q, z, s, GROUP).double().t()
    w = (torch.randn(n, k, device="cuda", generator=g) * 0.02).to(torch.bfloat16)
    plan, source = decoder_launch(name, k, n)
    builders = {"edgeprof-cuda": lambda: W4CudaLinear(pack_w4(q, z, s, GROUP), **plan),
                "tinygemm": lambda: INT4_KERNELS["tinygemm"](q, z, s, GROUP)}
    if gemlite:
        builders["gemlite"] = lambda: INT4_KERNELS["gemlite"](q, z, s, GROUP)
    rows = []
    dense_bytes = n * k * 2
    dense = [w] + [w.clone() for _ in range(_copies(dense_bytes) - 1)]
    rows.append(_row(name, k, n, "cublas-bf16", [lambda wi=wi: F.linear(x, wi) for wi in dense], dense_bytes,
                     F.linear(x, w), x.double() @ w.double().t(), repeats))
    del dense
    for kernel, build in builders.items():
        try:
            first = build()
            first(x)
        except Exception as exc:
            rows.append({"shape": name, "k": k, "n": n, "kernel": kernel, "status": f"{type(exc).__name__}: {exc}"})
            continue
        layers = [first] + [build() for _ in range(_copies(first.nbytes) - 1)]
        kref = ref if _gemv_call(first) is first else _act_ref(ref)
        rows.append(_row(name, k, n, kernel, [lambda li=li: _gemv_call(li)(x) for li in layers], first.nbytes,
                         _gemv_call(first)(x), kref, repeats))
        if kernel == "edgeprof-cuda":  # the same launches with the fp16 mma, and with PDL (sm_90+)
            pdl_ok = torch.cuda.get_device_capability() >= (9, 0)
            for mma, pdl in [("fp16", False)] + ([("bf16", True), ("fp16", True)] if pdl_ok else []):
                rows.append(_switched_row(name, k, n, layers, x, kref, repeats, mma=mma, pdl=pdl))
        del layers
    for r in rows:
        r["model"] = model
        if r["kernel"].startswith("edgeprof-cuda"):
            r["launch"], r["launch_source"] = plan or "base (choose_splits)", source
            if plan.get("variant") in ACT_EPILOGUE_VARIANTS:
                r["writes"] = "silu(gate) * up [N/2] (the act epilogue, as the decoder launches it)"
        if r.get("status") == "ok":
            r["frac_copy_bw"] = r["gb_per_s"] * 1e9 / copy_bw
    torch.cuda.empty_cache()
    return rows


def _switched_row(name, k, n, layers, x, ref, repeats, *, mma: str, pdl: bool) -> dict:
    """The edgeprof-cuda chain with its mma on fp16 ("+f16") and/or captured with programmatic dependent launch
    ("+pdl", sm_90+: each call's weight loads start while the previous call drains, as inside a decode step
    with PDL on). Its own row, labelled; the plain "edgeprof-cuda" row is the bf16 mma without PDL."""
    from edgeprof.fast.kernels import pdl_prefetch_tiles
    from edgeprof.fast.w4cuda import use_mma, use_pdl

    use_pdl(pdl, pdl_prefetch_tiles() if pdl else 0)
    use_mma(mma)
    label = "edgeprof-cuda" + ("+f16" if mma == "fp16" else "") + ("+pdl" if pdl else "")
    try:
        return _row(name, k, n, label, [lambda li=li: _gemv_call(li)(x) for li in layers], layers[0].nbytes,
                    _gemv_call(layers[0])(x), ref, repeats)
    finally:
        use_pdl(False)
        use_mma("bf16")


def check_norm_batch(model: str, name: str, k: int, n: int, group: int, asym: bool) -> dict:
    """The fused-norm launch with its loads batched ($EDGEPROF_W4_NORM=batched) gives bitwise the output and the
    residual of the loop it replaces (the sums run in the same order), with and without a residual."""
    from edgeprof.fast.w4cuda import W4CudaLinear, use_norm

    prep = check_inputs(n, k, group, asym)
    lin, g = W4CudaLinear(prep["packed"]), prep["g"]
    equal = True
    for with_res in (True, False):
        x = torch.randn(1, k, device="cuda", generator=g).to(torch.bfloat16)
        res = torch.randn(1, k, device="cuda", generator=g).to(torch.bfloat16) if with_res else None
        nw = (1 + 0.1 * torch.randn(k, device="cuda", generator=g)).to(torch.bfloat16)
        got = {}
        for norm in ("loop", "batched"):
            use_norm(norm)
            torch.full((1, n), float("nan"), device="cuda", dtype=torch.bfloat16)  # freed block: poison for y
            got[norm] = lin.fused_norm(x, res, nw, 1e-6)
        use_norm("loop")
        equal &= all(torch.equal(a, b) for a, b in zip(got["loop"], got["batched"], strict=True))
    return {"model": model, "shape": name, "k": k, "n": n, "group": group, "asym": asym, "check": "norm_batch",
            "splits": lin.splits, "bitwise_equal": equal, "passed": equal}


def _check_line(c: dict, what: str) -> str:
    """One line of the kernel suite's log for a check_cuda_kernel result; `what`: the mma type or the variant."""
    return (f"check {c['model']:13s} {c['shape']:8s} g{c['group']:<3d} {'asym' if c['asym'] else 'sym '} {what} "
            f"rel {c['rel_err']:.2e} fused {c['rel_err_fused_bias_silu']:.2e} norm {c['rel_err_fused_norm']:.2e} "
            f"res {'exact' if c['fused_norm_residual_exact'] else 'DIFFERS'} det {c['deterministic']} "
            f"splits {c['splits']} {'PASS' if c['passed'] else 'FAIL'}")


def kernel_checks(which: str = "all") -> list[dict]:
    """The kernel checks of the suite (each printed as it ends). "all": the default launch at every shape, group size
    and mma; the fused MLP; the act epilogue; the deferred norm; the bitwise twins; the batched norm; the decoder
    variants. "decoder": the decoder variants alone, those a card's plan or rule ships first (SHIPPED_FIRST), e.g.
    under compute-sanitizer, where a run may end early (r155: out of memory after 78 checks)."""
    from edgeprof.fast import w4cuda

    # the checks' fused norm rounds as add_rmsnorm (their reference); check_deferred_norm checks "deferred" itself.
    # r159 ran "decoder" without this: every deferring launch (clscxg) failed its norm check against the loop's
    # rounding (2.7e-3 to 3.6e-3 against the 2e-3 bound) while its plain and fused outputs passed.
    w4cuda.use_norm("loop")
    if which == "decoder":  # decoder_variant_checks runs (and leaves) the bf16 mma
        return decoder_variant_checks(decoder_variants_shipped_first())
    checks = []
    for model, name, k, n in KERNEL_SHAPES:
        for group, asym in [(128, False), (128, True)] + ([(64, False), (32, True)] if model != "mistral-7b" else []):
            for mma in w4cuda.MMAS:  # both mma types of the default launch (w4cuda.MMA_ENV)
                w4cuda.use_mma(mma)
                checks.append({**check_cuda_kernel(model, name, k, n, group, asym), "mma": mma})
                print(_check_line(checks[-1], mma), flush=True)
    for model, h, i in MLP_SHAPES:  # the fused MLP: bitwise the two launches, for both mma types
        for group, asym in [(128, False), (128, True), (64, False), (32, True)]:
            for mma in w4cuda.MMAS:
                w4cuda.use_mma(mma)
                checks.append({**check_fused_mlp(model, h, i, group, asym), "mma": mma})
                c = checks[-1]
                print(f"check {model:13s} mlp      g{group:<3d} {'asym' if asym else 'sym '} {mma} "
                      f"bitwise {c.get('bitwise_equal')} counters reset {c.get('counters_reset')} "
                      f"splits {c['splits']} {c.get('status', '')} {'PASS' if c['passed'] else 'FAIL'}", flush=True)
    for model, h, i in MLP_SHAPES:  # SiLU*up in gate_up's epilogue: bitwise the down-side staging
        for asym, norm in [(a, m) for a in (False, True) for m in ("loop", "deferred")]:
            checks.append(check_act_epilogue(model, h, i, asym, norm))
            c = checks[-1]
            print(f"check {model:13s} gate_up act epilogue {'asym' if asym else 'sym '} norm {norm:8s} bitwise "
                  f"{c['bitwise_equal']} {'PASS' if c['passed'] else 'FAIL'}", flush=True)
    for model, name, k, n in KERNEL_SHAPES:  # the deferred norm: the launches that take it
        if name in ("qkv", "gate_up"):  # the shapes the decoder fuses a norm into
            for (variant, splits), asym in [(v, a) for v in DEFERRED_NORM_LAUNCHES for a in (False, True)]:
                checks.append(check_deferred_norm(model, name, k, n, asym, variant, splits))
                c = checks[-1]
                print(f"check {model:13s} {name:8s} g128 {'asym' if asym else 'sym '} {variant} norm deferred rel "
                      f"{c['rel_err_fused_norm']:.2e} res {'exact' if c['fused_norm_residual_exact'] else 'DIFFERS'} "
                      f"det {c['deterministic']} differs from loop {c['differs_from_loop']} "
                      f"{'PASS' if c['passed'] else 'FAIL'}", flush=True)
    for model, name, k, n in KERNEL_SHAPES:  # another finish of a twin's sums: bitwise the twin's y
        if name != "lm_head":
            for variant, splits, asym in [(v, sp, a) for v in w4cuda.BITWISE_TWINS for sp in (7, 10)
                                          for a in (False, True)]:
                checks.append(check_bitwise_twin(model, name, k, n, asym, variant, splits))
                c = checks[-1]
                print(f"check {model:13s} {name:8s} g128 {'asym' if asym else 'sym '} {variant} s{splits} bitwise "
                      f"{c['twin']} {c['bitwise_equal']} {'PASS' if c['passed'] else 'FAIL'}", flush=True)
    for model, name, k, n in KERNEL_SHAPES:  # the batched norm loads change no output
        if model != "mistral-7b" and name != "lm_head":
            for group, asym in [(128, False), (128, True), (64, False), (32, True)]:
                checks.append(check_norm_batch(model, name, k, n, group, asym))
                c = checks[-1]
                print(f"check {model:13s} {name:8s} g{group:<3d} {'asym' if asym else 'sym '} norm batched bitwise "
                      f"{c['bitwise_equal']} {'PASS' if c['passed'] else 'FAIL'}", flush=True)
    checks += decoder_variant_checks([v for v in w4cuda.DECODER_VARIANTS if v != "base"])
    w4cuda.use_mma("bf16")  # the plain rows run the bf16 mma; _switched_row labels the others
    return checks


SHIPPED_FIRST = ("clscxg", "wk6", "scxa", "wk8", "clscx", "scx")  # the H200 plan's and the rule's launches


def decoder_variants_shipped_first() -> list[str]:
    """The decoder variants but base, those the H200 plan and the rule launch first."""
    from edgeprof.fast.w4cuda import DECODER_VARIANTS

    rest = [v for v in DECODER_VARIANTS if v != "base" and v not in SHIPPED_FIRST]
    return [v for v in SHIPPED_FIRST if v in DECODER_VARIANTS] + rest


def decoder_variant_checks(variants: list[str]) -> list[dict]:
    """The latency variants (group 128, bf16 mma) at every shape, variant by variant: whole K and 2 splits (a wk or
    act-epilogue variant runs one split: both forms there)."""
    from edgeprof.fast import w4cuda

    w4cuda.use_mma("bf16")
    checks = []
    for variant in variants:
        for model, name, k, n in KERNEL_SHAPES:
            for splits, asym in [(1, False), (1 if variant in w4cuda.ONE_SPLIT_VARIANTS else 2, True)]:
                checks.append({**check_cuda_kernel(model, name, k, n, GROUP, asym,
                                                   launch={"variant": variant, "splits": splits}),
                               "variant": variant, "mma": "bf16"})
                print(_check_line(checks[-1], variant), flush=True)
    return checks


def kernel_suite(args) -> int:
    import importlib.util

    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    rec: dict = {"benchmark": "int4_gemv --suite kernel", "gpu": torch.cuda.get_device_name(),
                 "torch": torch.__version__, "cuda": torch.version.cuda, "command": " ".join(sys.argv),
                 "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    t0 = time.time()
    from edgeprof.fast import w4cuda

    if w4cuda.load_extension() is None:
        print("edgeprof CUDA W4 kernel unavailable:", w4cuda.build_error())
        rec["build_error"] = w4cuda.build_error()
        (out / "kernel.json").write_text(json.dumps(rec, indent=1))
        return 1
    rec["build_s"] = time.time() - t0
    rec["copy_bw_bytes_per_s"] = bw = copy_bandwidth()
    print(f"build {rec['build_s']:.1f} s; measured copy bandwidth {bw / 1e12:.3f} TB/s (read + write)", flush=True)
    if args.rows_only:  # the per-shape rows check their own output (row_check); the kernel checks ran elsewhere
        rec["checks"], rec["checks_passed"] = [], True
    else:
        rec["checks"] = checks = kernel_checks(args.checks)
        rec["checks_passed"] = all(c["passed"] for c in checks)
    (out / "kernel.json").write_text(json.dumps(rec, indent=1))
    if args.checks_only:  # e.g. under compute-sanitizer (benchmarks/gpu_sanitize_round.sh): nothing timed
        print(f"checks: {sum(c['passed'] for c in rec['checks'])} of {len(rec['checks'])} passed", flush=True)
        return 0 if rec["checks_passed"] else 1
    gem = importlib.util.find_spec("gemlite") is not None
    rows = []
    for model, name, k, n in KERNEL_SHAPES:
        if model == "qwen2.5-7b" or args.all_shapes:
            rows += time_kernel_shape(model, name, k, n, bw, args.repeats, gem)
    for model, h, i in MLP_SHAPES:
        if model == "qwen2.5-7b" or args.all_shapes:
            rows += time_mlp(model, h, i, bw, args.repeats)
    rec["rows"] = rows
    (out / "kernel.json").write_text(json.dumps(rec, indent=1))
    lines = [f"GEMV per shape ({rec['gpu']}; copy bw {bw / 1e12:.3f} TB/s measured in this run)",
             f"{'model':12s} {'shape':8s} {'kernel':22s} {'rel err':>8s} {'us':>8s} {'GB/s':>7s} {'of copy':>7s} check"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"{r['model']:12s} {r['shape']:8s} {r['kernel']:22s} {r['status'][:60]}")
            continue
        lines.append(f"{r['model']:12s} {r['shape']:8s} {r['kernel']:22s} {r['rel_err']:8.1e} {r['us_p50']:8.1f} "
                     f"{r['gb_per_s']:7.0f} {r['frac_copy_bw']:7.3f} {row_check(r['rel_err'])}"
                     f"{' (writes silu(gate)*up)' if r.get('writes') else ''}")
    table = "\n".join(lines)
    print(table, flush=True)
    if args.step_ctx:
        rec["steps"] = step_table(args, out, bw)
        (out / "kernel.json").write_text(json.dumps(rec, indent=1))
    print(table)
    return 0 if rec["checks_passed"] else 1


def step_table(args, out: Path, copy_bw: float) -> dict:
    """Full decode steps (fast_decode.measure), int4-cuda logits vs dequantized HF, then explain."""
    import subprocess

    sys.path.insert(0, str(Path(__file__).parent))
    import fast_decode as fd

    from edgeprof import hardware_loader as hardware
    from edgeprof.backends import registry
    from edgeprof.sources import load_model

    ctxs = [int(c) for c in args.step_ctx.split(",")]
    res: dict = {"greedy_tail_checks": greedy_tail_checks()}
    det = hardware.detect()
    bw = det.spec.bandwidth_bytes_per_s
    # the cache holds ctx + warm-up + timed steps (r8 of 2026-11-28-decode-step ran 60 steps past a 64-token pad)
    cache = max(ctxs) + max(fd.PAD, args.steps + 5 + 8)
    loaded = load_model("qwen2.5-7b", "cuda", max_ctx=cache)
    shape = loaded.shape
    res.update({"datasheet_bw": bw, "cells": []})
    default = ["edgeprof-fast", "edgeprof-fast-int4", "edgeprof-fast-int4-cuda"]
    variants = parse_step_backends(args.step_backends) if args.step_backends else \
        [(b, {}) for b in (default if not args.steps_only else default[-1:])]
    for name, env in variants:
        label = name + "".join(f" {k.removeprefix('EDGEPROF_')}={v}" for k, v in env.items())
        print(f"  building {label}", flush=True)
        with env_set(env):  # read when the decoder is built (attention plan, bf16 GEMV choice, fusions)
            dec = registry.create(name, loaded, device="cuda", max_ctx=cache)
        for ctx in ctxs:
            cell = fd.measure(dec, loaded, name, ctx, args.steps, 5, model="qwen2.5-7b", device="cuda")
            cell.pop("wall_ms", None), cell.pop("gpu_ms", None)
            cell["label"], cell["env"] = label, env
            res["cells"].append(cell)
            st = (cell.get("stats") or {}).get("wall") or {}
            print(f"  {label:40s} ctx {ctx:6d} {st.get('p50', float('nan')):.3f} ms "
                  f"frac {(cell.get('floor') or {}).get('fraction', float('nan')):.3f} "
                  f"{_kernel_note(cell)}", flush=True)
        del dec
        torch.cuda.empty_cache()
    # correctness of the whole int4-cuda decoder: teacher-forced logits vs HF on the dequantized weights
    prompt = torch.randint(0, shape.vocab, (64,), generator=torch.Generator().manual_seed(1)).tolist()
    forced = torch.randint(0, shape.vocab, (16,), generator=torch.Generator().manual_seed(2)).tolist()
    got = {}
    bf16_env = next((env for name, env in variants if name == "edgeprof-fast" and env.get("EDGEPROF_BF16_GEMV")
                     not in (None, "cublas")), None)
    if bf16_env is not None:  # edgeprof's bf16 GEMV in the whole decoder vs HF on the same bf16 weights
        with env_set(bf16_env):
            dec = registry.create("edgeprof-fast", loaded, device="cuda", max_ctx=256)
        mine = fd.teacher_forced_logits(dec, prompt, forced)
        del dec
        hf = registry.create("hf-eager", loaded, device="cuda", max_ctx=256)
        res["check_vs_hf[edgeprof-fast bf16 gemv]"] = fd.compare(mine, fd.teacher_forced_logits(hf, prompt, forced))
        print("  edgeprof-fast (edgeprof bf16 GEMV) vs HF bf16:", json.dumps(res["check_vs_hf[edgeprof-fast bf16 gemv]"]),
              flush=True)
        del hf
    # the int4 decoders, and each int4-cuda setting timed above (e.g. EDGEPROF_FUSE_ROPE=1), on the same inputs
    checked = [("edgeprof-fast-int4", {}), ("edgeprof-fast-int4-cuda", {})]
    checked += [(n, e) for n, e in variants if n == "edgeprof-fast-int4-cuda" and e and (n, e) not in checked]
    greedy = {}  # free-running greedy tokens: the host's reads and the decoder's history, per setting
    for name, env in checked:
        with env_set(env):
            dec = registry.create(name, loaded, device="cuda", max_ctx=256)
        label = name + "".join(f" {k.removeprefix('EDGEPROF_')}={v}" for k, v in env.items())
        got[label] = fd.teacher_forced_logits(dec, prompt, forced)
        greedy[label] = fd.free_greedy(dec, prompt, 32)
        res[f"pipelined[{label}]"] = fd.pipelined_agreement(dec, prompt, 24)
        print(f"  {label}: pipelined steps {json.dumps(res[f'pipelined[{label}]'])}", flush=True)
        res[f"greedy_tail[{label}]"] = dec.info().notes.get("greedy_tail")
        del dec
    res["greedy_tokens"] = greedy_agreement(greedy, "edgeprof-fast-int4-cuda")
    from edgeprof.fast.weights import dequantized_copy_

    dequantized_copy_(loaded.model, 128)
    hf = registry.create("hf-eager", loaded, device="cuda", max_ctx=256)
    ref = fd.teacher_forced_logits(hf, prompt, forced)
    for name, logits in got.items():
        res[f"check_vs_dequantized_hf[{name}]"] = fd.compare(logits, ref)
        print(f"  {name} vs dequantized HF:", json.dumps(res[f"check_vs_dequantized_hf[{name}]"]), flush=True)
    base = got.get("edgeprof-fast-int4-cuda")
    # Information, not a gate: a setting meant to leave every bit as it is (a prefetch hint, a sum moved to another
    # launch in the same order) shows here whether it did; one that rounds differently (EDGEPROF_W4_NORM=loop) is False
    for name, logits in got.items():
        if name.startswith("edgeprof-fast-int4-cuda ") and base is not None:
            same = all(torch.equal(a, b) for a, b in zip(logits, base, strict=True))
            res[f"bitwise_vs_default[{name}]"] = same
            print(f"  {name} logits bitwise equal to the default int4-cuda's: {same}", flush=True)
    del hf, loaded
    torch.cuda.empty_cache()
    lines = [f"full step, Qwen2.5-7B synthetic, {det.nvml_name}; fraction = floor / p50 at datasheet "
             f"{bw / 1e12:.2f} TB/s (and at the measured copy bw {copy_bw / 1e12:.2f} TB/s)",
             f"{'backend':40s} {'ctx':>6s} {'p50 ms':>8s} {'floor':>7s} {'frac':>6s} {'frac@copy':>9s} kernel"]
    for c in res["cells"]:
        label = c.get("label", c["backend"])
        if c.get("status") != "ok":
            lines.append(f"{label:40s} {c['ctx']:6d} {c['status']}: {str(c.get('error'))[:60]}")
            continue
        p50, f = c["stats"]["wall"]["p50"], c["floor"]
        lines.append(f"{label:40s} {c['ctx']:6d} {p50:8.3f} {f['floor_ms']:7.3f} {f['fraction']:6.3f} "
                     f"{f['fraction'] * bw / copy_bw:9.3f} {_kernel_note(c)}")
    res["table"] = "\n".join(lines)
    print(res["table"], flush=True)
    for backend in args.explain_backends.split(",") if args.explain else ():
        tag = backend.removeprefix("edgeprof-fast").lstrip("-") or "bf16"
        cmd = [sys.executable, "-m", "edgeprof.cli", "explain", "--model", "qwen2.5-7b", "--backend",
               backend, "--ctx", str(ctxs[0]), "--out", str(out / f"explain-{tag}.json")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
        res[f"explain[{backend}]"] = proc.stdout[-4000:] + proc.stderr[-1000:]
        (out / f"explain-{tag}.txt").write_text(res[f"explain[{backend}]"])
        print(res[f"explain[{backend}]"], flush=True)
    return res


def greedy_tail_checks() -> list[dict]:
    """The fused greedy tail against torch.argmax on every bf16 GEMV variant (edgeprof.fast.greedy_check)."""
    from edgeprof.fast import greedy_check

    checks = greedy_check.check_all()
    print(f"  greedy tail kernel checks: {sum(c['passed'] for c in checks)} of {len(checks)} passed "
          f"(mapped readback {'on' if checks[0]['mapped'] else 'unavailable'})", flush=True)
    for c in checks:
        if not c["passed"]:
            print("  FAIL greedy tail", json.dumps(c), flush=True)
    return checks


def greedy_agreement(greedy: dict[str, dict], base: str) -> dict:
    """Per setting: its host reads equal its history, and (for `base`'s settings, the same kernels) its tokens
    equal `base`'s (32 free-running steps); None where the kernels differ (tinygemm rounds otherwise)."""
    out = {}
    for label, g in greedy.items():
        same_kernels = label.split(" ")[0] == base
        out[label] = {"reads_equal_history": g["read"] == g["history"],
                      "equal_to_default": g["read"] == greedy.get(base, {}).get("read") if same_kernels else None}
        print(f"  {label}: greedy reads == history {out[label]['reads_equal_history']}, tokens == the default's "
              f"{out[label]['equal_to_default']}", flush=True)
    return out


@contextlib.contextmanager
def env_set(env: dict[str, str]):
    """Set `env` for the block (a decoder reads its EDGEPROF_* settings when it is built), then restore."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def parse_step_backends(text: str) -> list[tuple[str, dict[str, str]]]:
    """'edgeprof-fast@EDGEPROF_BF16_GEMV=cublas;edgeprof-fast-int4-cuda' -> [(backend, {env}), ...]:
    the same backend can be timed under several settings read at build time."""
    from edgeprof.backends import registry

    out = []
    for item in filter(None, (t.strip() for t in text.split(";"))):
        name, _, envs = item.partition("@")
        if name not in registry.names():
            raise SystemExit(f"--step-backends: {name!r} is not a backend ({', '.join(registry.names())})")
        env = {}
        for kv in filter(None, envs.split("+")):
            k, eq, v = kv.partition("=")
            if not eq or not k.startswith("EDGEPROF_"):
                raise SystemExit(f"--step-backends: {kv!r} is not EDGEPROF_NAME=value")
            env[k] = v
        out.append((name, env))
    return out


def _kernel_note(cell: dict) -> str:
    notes = cell.get("notes") or {}
    if "int4_kernel" in notes:
        return str(notes["int4_kernel"])
    gemv = notes.get("bf16_gemv")
    return "bf16 " + (" ".join(sorted(set(gemv.values()))) if isinstance(gemv, dict) else "cublas")


# ---------------------------------------------------------------- issue 12: launch-shape tuning
TUNE_MODELS = ("qwen2.5-7b", "llama-3.1-8b")  # --tune-model: KERNEL_SHAPES has all four layer shapes of these


def tune_shapes(model: str = "qwen2.5-7b") -> list[tuple[str, str, int, int]]:
    """The four layer shapes (qkv, o, gate_up, down) a tune times for `model` (TUNE_SHAPES for Qwen2.5-7B)."""
    return [sh for sh in KERNEL_SHAPES if sh[0] == model and sh[1] in DECODER_FORMS]


TUNE_FIELDS = ("variant", "splits", "tiles_per_split", "grid_x", "ctas")
# --tune-form decoder: each shape in the form edgeprof-fast's int4 step launches it with this kernel (FastModel.step):
# q/k/v and gate_up with the residual add + RMSNorm fused into their input, down with SiLU*up fused (plain where the
# plan's gate_up already wrote SiLU*up: shape_form), o plain. The plain form (the default) times every shape as
# y = W x, which cannot see what the fusions cost a launch.
DECODER_FORMS = {"qkv": "norm", "o": "plain", "gate_up": "norm", "down": "silu"}
TUNE_FORMS = ("plain", "decoder")
TUNE_SHAPES = tune_shapes("qwen2.5-7b")  # the default tune: Qwen2.5-7B's q/k/v, o, gate_up, down
CONTEXT_LOST = ("illegal memory access", "unspecified launch failure", "misaligned address", "illegal instruction")


def parse_int_list(text: str, field: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4); a clear error naming the option otherwise."""
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise SystemExit(f"{field}: {text!r} is not a comma-separated list of integers (e.g. 1,2,3,4,6,8)") from None
    if not vals or min(vals) < 1:
        raise SystemExit(f"{field}: {text!r} needs at least one integer >= 1")
    return vals


DIAGNOSTIC = "diagnostic"  # a tune row's status for a diagnostic variant: timed, not checked, never a best


def tune_label(cfg: dict) -> str:
    """'persist s4 g132': variant, splits and (persistent) CTAs per split of one launch config."""
    return f"{cfg['variant']} s{cfg['splits']}" + (f" g{cfg['grid_x']}" if cfg.get("grid_x") else "")


def best_per_shape(rows: list[dict]) -> dict[str, dict]:
    """Per shape: the fastest config that passed its check and was timed, next to the default one."""
    best: dict[str, dict] = {}
    for shape in dict.fromkeys(r["shape"] for r in rows):
        timed = [r for r in rows if r["shape"] == shape and r.get("status") == "ok"]
        default = next((r for r in timed if r.get("default")), None)
        if not timed:
            best[shape] = {"best": None, "default": default}
            continue
        top = max(timed, key=lambda r: r["gb_per_s"])
        entry = {"best": {f: top[f] for f in ("k", "n", *TUNE_FIELDS, "us_p50", "gb_per_s", "frac_copy_bw")},
                 "default": {f: default[f] for f in (*TUNE_FIELDS, "us_p50", "gb_per_s", "frac_copy_bw")}
                 if default else None}
        if default:
            entry["speedup_vs_default"] = default["us_p50"] / top["us_p50"]
        best[shape] = entry
    return best


def format_tune_table(rows: list[dict], copy_bw: float, gpu: str) -> str:
    """One line per (shape, launch config); FAILED / SKIPPED rows carry their reason instead of a time."""
    lines = [f"W4A16 GEMV launch tuning ({gpu}; copy bw {copy_bw / 1e12:.3f} TB/s measured in this run; "
             "* = default launch)",
             f"{'shape':8s} {'variant':8s} {'splits':>6s} {'tps':>4s} {'grid_x':>6s} {'CTAs':>5s} {'us':>8s} "
             f"{'GB/s':>7s} {'of copy':>7s} check"]
    for r in rows:
        head = (f"{r['shape']:8s} {r['variant']:8s} {r['splits']:6d} {r['tiles_per_split']:4d} "
                f"{r['grid_x'] or '-':>6} {r['ctas']:5d}")
        mark = "*" if r.get("default") else ""
        if r.get("status") == "ok":
            lines.append(f"{head} {r['us_p50']:8.2f} {r['gb_per_s']:7.0f} {r['frac_copy_bw']:7.3f} PASS{mark}")
        elif r.get("status") == DIAGNOSTIC:
            lines.append(f"{head} {r['us_p50']:8.2f} {r['gb_per_s']:7.0f} {r['frac_copy_bw']:7.3f} DIAGNOSTIC "
                         "(no math: not a GEMV)")
        else:
            lines.append(f"{head} {'-':>8s} {'-':>7s} {'-':>7s} {str(r.get('status'))[:70]}{mark}")
    lines.append("best per shape (fastest config that passed; default = choose_splits, base variant):")
    for shape, b in best_per_shape(rows).items():
        if not b["best"]:
            lines.append(f"  {shape:8s} no config passed and was timed")
            continue
        t, d = b["best"], b["default"]
        dtxt = (f"; default {tune_label(d)} {d['us_p50']:.2f} us {d['frac_copy_bw']:.3f} -> x{b['speedup_vs_default']:.2f}"
                if d else "; default not timed")
        lines.append(f"  {shape:8s} {tune_label(t):22s} {t['us_p50']:8.2f} us {t['gb_per_s']:7.0f} GB/s "
                     f"{t['frac_copy_bw']:.3f} of copy{dtxt}")
    return "\n".join(lines)


def tune_suite(args) -> int:
    """Every launch config of every shape: checked against the dequantized reference (sym and
    asym, group 128, fused bias and SiLU*up) before it is timed; a failing one is FAILED, not timed."""
    from edgeprof.fast import w4cuda

    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    path = out / "tune.json"
    rec: dict = {"benchmark": "int4_gemv --suite tune", "gpu": torch.cuda.get_device_name(),
                 "torch": torch.__version__, "cuda": torch.version.cuda, "command": " ".join(sys.argv),
                 "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "group": GROUP, "weights": "SYNTHETIC RTN int4",
                 "pdl": args.tune_pdl, "form": args.tune_form}
    t0 = time.time()
    ext = w4cuda.load_extension()
    if ext is None:
        print("edgeprof CUDA W4 kernel unavailable:", w4cuda.build_error())
        rec["build_error"] = w4cuda.build_error()
        path.write_text(json.dumps(rec, indent=1))
        return 1
    rec["build_s"] = time.time() - t0
    ext.set_f16(False)  # "base" is the bf16 mma here; "f16" is the fp16 one
    # the checks' fused norm rounds as add_rmsnorm (their reference); a norm form is timed as the decoder loads it
    w4cuda.use_norm("loop")
    rec["norm_timed"] = w4cuda.norm_wanted() if args.tune_form == "decoder" else None
    rec["copy_bw_bytes_per_s"] = bw = copy_bandwidth()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rec["sms"] = sms
    print(f"build {rec['build_s']:.1f} s; copy bandwidth {bw / 1e12:.3f} TB/s; {sms} SMs", flush=True)
    shapes = [sh for sh in tune_shapes(args.tune_model) if sh[1] in args.tune_shapes]
    rec["model"] = args.tune_model
    for _, name, k, n in shapes:  # every shape's inputs once, before any config (time_graph warms each chain)
        _tune_cache(name, k, n)
    deadline = t0 + args.time_budget
    rows: list[dict] = []
    lost = ""  # a launch that broke the CUDA context: nothing after it can be trusted
    for variant in args.tune_variants:  # variant-major: a crashing variant cannot hide the others' data
        for model, name, k, n in shapes:
            cache = _tune_cache(name, k, n)
            for cfg in w4cuda.tune_configs(n, k, GROUP, sms, args.tune_splits, (variant,)):
                row = {"model": model, "shape": name, "k": k, "n": n, **cfg}
                if lost or time.time() > deadline:
                    row["status"] = f"SKIPPED ({lost or 'time budget --time-budget spent'})"
                else:
                    row.update(_tune_one(name, k, n, cfg, cache, bw, args.repeats, model, args.tune_pdl,
                                         shape_form(name, args.tune_form, model)))
                    if any(m in str(row.get("status")) for m in CONTEXT_LOST):
                        lost = f"CUDA context lost at {name} {tune_label(cfg)}"
                rows.append(row)
                waves = (f" clusters {row['clusters']} at once {row['clusters_at_once']} waves {row['cluster_waves']}"
                         if "clusters_at_once" in row else "")
                print(f"{name:8s} {tune_label(cfg):24s} ctas {cfg['ctas']:5d} "
                      + (f"{row['us_p50']:8.2f} us {row['frac_copy_bw']:.3f}" if row.get("status") in ("ok", DIAGNOSTIC)
                         else str(row.get("status"))[:90]) + waves, flush=True)
            rec["rows"] = rows
            path.write_text(json.dumps(rec, indent=1, default=str))
    rec["best"] = best_per_shape(rows)
    rec["wall_s"] = time.time() - t0
    path.write_text(json.dumps(rec, indent=1, default=str))
    print(format_tune_table(rows, bw, rec["gpu"] + (", timed with PDL" if args.tune_pdl else "")
                            + (", each shape in the decoder's form" if args.tune_form == "decoder" else "")),
          flush=True)
    print(f"wrote {path} ({rec['wall_s']:.0f} s)")
    return 0 if all(r.get("status") in ("ok", DIAGNOSTIC) or "SKIPPED" in str(r.get("status")) for r in rows) \
        and not lost else 1


_TUNE_CACHE: dict = {}


def _tune_cache(name: str, k: int, n: int) -> dict:
    """Per shape, built once: check inputs (sym, asym), the timing input and reference, and weight
    copies (packed once, cloned) that together exceed L2 so every timed call streams from HBM."""
    from edgeprof.fast.w4cuda import W4Packed

    if (name, k, n) in _TUNE_CACHE:  # kept for the whole tune: ~4 GB for Qwen2.5-7B's four shapes (float64 refs)
        return _TUNE_CACHE[(name, k, n)]
    sym, asym = check_inputs(n, k, GROUP, False), check_inputs(n, k, GROUP, True)
    p = sym["packed"]
    copies = [p] + [W4Packed(p.qw.clone(), p.sz.clone(), p.n, p.k, p.group, p.asym)
                    for _ in range(_copies(p.nbytes) - 1)]
    gen = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(1, k, device="cuda", generator=gen).to(torch.bfloat16)
    _TUNE_CACHE[(name, k, n)] = {"sym": sym, "asym": asym, "copies": copies, "x": x, "ref": x.double() @ sym["w64"].t(),
                         **form_inputs(x, sym["w64"], gen)}
    return _TUNE_CACHE[(name, k, n)]


def form_inputs(x: torch.Tensor, w64: torch.Tensor, gen: torch.Generator) -> dict:
    """The decoder forms' timing inputs and float64 references (--tune-form decoder): gate_up's output for SiLU*up
    ("gu", "ref_silu"), a residual and norm weight for the fused norm ("res", "nw", "ref_norm"), rounded as the
    unfused kernels round (check_cuda_kernel, check_fused_norm), and the deferred norm's ("ref_norm_deferred")."""
    from edgeprof.fast.kernels import add_rmsnorm

    k = x.shape[1]
    gu = torch.randn(1, 2 * k, device="cuda", generator=gen).to(torch.bfloat16)
    gate, up = gu.float().chunk(2, dim=-1)
    act = ((gate / (1 + torch.exp(-gate))).to(torch.bfloat16).float() * up).to(torch.bfloat16)
    res = torch.randn(1, k, device="cuda", generator=gen).to(torch.bfloat16)
    nw = (1 + 0.1 * torch.randn(k, device="cuda", generator=gen)).to(torch.bfloat16)
    h, h_res = add_rmsnorm(x, res, nw, 1e-6)
    return {"gu": gu, "ref_silu": act.double() @ w64.t(), "res": res, "nw": nw, "ref_norm": h.double() @ w64.t(),
            "ref_norm_deferred": _deferred_norm_ref(h_res, nw, w64, 1e-6)}


def shape_form(name: str, tune_form: str, model: str = "qwen2.5-7b") -> str:
    """The form a shape is timed in: "plain" for --tune-form plain, else the decoder's (DECODER_FORMS). Where the
    decoder runs `model`'s gate_up as an act-epilogue variant (w4cuda.ACT_EPILOGUE_VARIANTS: it writes silu(gate) * up),
    its down takes that as a plain input, so down is timed plain."""
    if tune_form == "plain":
        return "plain"
    return "plain" if name == "down" and plan_gate_up_writes_act(model) else DECODER_FORMS[name]


def plan_gate_up_writes_act(model: str = "qwen2.5-7b") -> bool:
    """Whether the decoder runs `model`'s gate_up as an act-epilogue variant (w4cuda.plan_launch: the launch plan's
    entry, $EDGEPROF_W4_PLAN or the card's, else the default launch)."""
    from edgeprof.fast.w4cuda import ACT_EPILOGUE_VARIANTS, plan_launch

    k, n = next((k, n) for _, name, k, n in tune_shapes(model) if name == "gate_up")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # cpu: the plan's entry, else base
    return plan_launch(k, n, GROUP, device, "gate_up")[0].get("variant") in ACT_EPILOGUE_VARIANTS


def form_call(lin, form: str, cache: dict, norm: str = "loop"):
    """(the call that times `lin` in `form`, the float64 reference of its output): y = W x ("plain"), W silu(g) * u
    ("silu") or W rmsnorm(x + res) * w ("norm", under `norm`, w4cuda.NORMS: the deferred norm's math where the launch
    defers it; the residual it also writes is not part of the reference). A gate_up built with an act-epilogue
    variant (`fuses_norm_silu`) is timed as the decoder launches it, writing silu(g) * u (fused_norm_silu, act_of):
    its fused_norm / __call__ would time the plain launch plus a torch reorder of y (twenty-second pass, r145)."""
    from edgeprof.fast.w4cuda import defers_norm

    act = getattr(lin, "fuses_norm_silu", False)
    if form == "silu":
        return (lambda: lin.fused_silu(cache["gu"])), cache["ref_silu"]
    if form == "norm":
        deferred = norm == "deferred" and defers_norm(lin.variant, lin.splits)
        ref = cache["ref_norm_deferred" if deferred else "ref_norm"]
        if act:
            return (lambda: lin.fused_norm_silu(cache["x"], cache["res"], cache["nw"], 1e-6)[0]), _act_ref(ref)
        return (lambda: lin.fused_norm(cache["x"], cache["res"], cache["nw"], 1e-6)[0]), ref
    if act:
        return (lambda: lin.act_of(cache["x"])), _act_ref(cache["ref"])
    return (lambda: lin(cache["x"])), cache["ref"]


def same_as(prep: dict, launch: dict, ref_launch: dict, norms: tuple[str, ...] = ()) -> bool:
    """Whether `launch` gives bitwise the y of `ref_launch` (W4CudaLinear's launch keywords): plain, SiLU*up fused and
    (where it fuses) the norm fused, under each of `norms` (w4cuda.NORMS; none: the current one, as set), on fresh
    inputs (prep: check_inputs())."""
    from edgeprof.fast.w4cuda import W4CudaLinear, use_norm

    g = prep["g"]
    var = W4CudaLinear(prep["packed"], prep["bias"], **launch)
    ref = W4CudaLinear(prep["packed"], prep["bias"], **ref_launch)
    k = prep["packed"].k
    x = torch.randn(1, k, device="cuda", generator=g).to(torch.bfloat16)
    gu = torch.randn(1, 2 * k, device="cuda", generator=g).to(torch.bfloat16)
    same = torch.equal(var(x), ref(x)) and torch.equal(var.fused_silu(gu), ref.fused_silu(gu))
    if var.fuses_norm:
        res, w = torch.randn_like(x), torch.randn(k, device="cuda", generator=g).to(torch.bfloat16)
        try:
            for norm in norms or (None,):
                if norm:
                    use_norm(norm)
                pairs = zip(var.fused_norm(x, res, w, 1e-6), ref.fused_norm(x, res, w, 1e-6), strict=True)
                same &= all(torch.equal(a, b) for a, b in pairs)  # (y, res_out)
        finally:
            if norms:
                use_norm("loop")  # the suite's and the tune's setting between checks
    return bool(same)


def same_as_base(prep: dict, launch: dict) -> bool:
    """Whether a variant's launch gives bitwise the y of base at the same splits (same_as)."""
    return same_as(prep, launch, {"splits": launch["splits"]})


def check_bitwise_twin(model: str, name: str, k: int, n: int, asym: bool, variant: str, splits: int) -> dict:
    """A variant of w4cuda.BITWISE_TWINS (the same sums, another finish) against its twin at the same splits: bitwise
    the same y plain, SiLU*up fused and with the fused norm under both the loop and the deferred norm."""
    from edgeprof.fast.w4cuda import BITWISE_TWINS

    launch = {"variant": variant, "splits": splits}
    same = same_as(check_inputs(n, k, GROUP, asym), launch, {**launch, "variant": BITWISE_TWINS[variant]},
                   norms=("loop", "deferred"))
    return {"model": model, "shape": name, "k": k, "n": n, "group": GROUP, "asym": asym, "variant": variant,
            "twin": BITWISE_TWINS[variant], "splits": splits, "check": "bitwise_twin", "bitwise_equal": same,
            "passed": same}


def _tune_one(name: str, k: int, n: int, cfg: dict, cache: dict, copy_bw: float, repeats: int, model: str,
              pdl: bool = False, form: str = "plain") -> dict:
    """Check one launch config (sym and asym), then time it as a chain of weight copies; `pdl`: captured with
    programmatic dependent launch, as a decode step on sm_90+ runs it (else plain launches); `form`: the call
    timed (form_call; every config is checked in all its forms either way)."""
    from edgeprof.fast import w4cuda
    from edgeprof.fast.w4cuda import BITWISE_BASE_VARIANTS, DIAGNOSTIC_VARIANTS, cluster_waves

    launch = {"splits": cfg["splits"], "variant": cfg["variant"], "grid_x": cfg["grid_x"]}
    if cfg["variant"] in DIAGNOSTIC_VARIANTS:  # not a GEMV: timed only, never checked, never a best
        return _time_diagnostic(name, k, n, cfg, launch, cache, copy_bw, repeats, pdl)
    res: dict = {}
    try:
        for kind in ("sym", "asym"):
            c = check_cuda_kernel(model, name, k, n, GROUP, kind == "asym", launch=launch, prep=cache[kind])
            res[f"check_{kind}"] = {f: c[f] for f in ("rel_err", "rel_err_fused_bias_silu", "rel_err_fused_norm",
                                                       "fused_norm_residual_exact", "deterministic", "unwritten",
                                                       "splits", "passed")}
            if c["splits"] != cfg["splits"]:
                res["status"] = f"FAILED (built {c['splits']} splits, config says {cfg['splits']})"
                return res
            if not c["passed"]:
                res["status"] = (f"FAILED ({kind}: rel {c['rel_err']:.1e} fused {c['rel_err_fused_bias_silu']:.1e} "
                                 f"norm {c['rel_err_fused_norm']:.1e} res "
                                 f"{'exact' if c['fused_norm_residual_exact'] else 'DIFFERS'} "
                                 f"det {c['deterministic']} unwritten {c['unwritten']})")
                return res
        if cfg["variant"] in BITWISE_BASE_VARIANTS:  # base's sums in base's order: bitwise base's y
            res["bitwise_base"] = same_as_base(cache["sym"], launch)
            if not res["bitwise_base"]:
                res["status"] = "FAILED (differs from base at the same splits)"
                return res
        if cfg["variant"] in w4cuda.BITWISE_TWINS:  # another finish of the twin's sums: bitwise the twin's y
            twin = w4cuda.BITWISE_TWINS[cfg["variant"]]
            res["bitwise_twin"] = all(same_as(cache[kind], launch, {**launch, "variant": twin},
                                              norms=("loop", "deferred")) for kind in ("sym", "asym"))
            if not res["bitwise_twin"]:
                res["status"] = f"FAILED (differs from {twin} at the same splits)"
                return res
        if form == "norm" and cfg["variant"] not in w4cuda.DECODER_VARIANTS:
            return {**res, "status": f"SKIPPED (form norm: {cfg['variant']} does not fuse the norm)"}
        row = _time_chain(name, k, n, cfg, launch, cache, repeats, pdl, form=form)
    except Exception as exc:  # a launch error is a FAILED config, reported with its message
        res["status"] = f"FAILED ({type(exc).__name__}: {str(exc)[:200]})"
        return res
    res.update({f: row[f] for f in ("status", "rel_err", "bytes", "copies", "us_p50", "us_p90", "gb_per_s")
                if f in row}, form=form)
    if cfg["variant"] == "cl":  # a cluster's CTAs share one GPC: how many of the launch's clusters run at once
        res.update(cluster_waves(n, cfg["splits"], cfg["tiles_per_split"]))  # plain launch, as timed
    if row.get("status") == "ok":
        res["frac_copy_bw"] = row["gb_per_s"] * 1e9 / copy_bw
    return res


def _time_chain(name: str, k: int, n: int, cfg: dict, launch: dict, cache: dict, repeats: int, pdl: bool,
                form: str = "plain", **build) -> dict:
    """_row of one launch config, timed as a chain over the shape's weight copies, each called in `form` (form_call;
    the fused norm as the decoder loads it, w4cuda.norm_wanted(), the checks' "loop" again after);
    `pdl`: captured with programmatic dependent launch (set on every module loaded by now: a tuning variant's module
    is built off)."""
    from edgeprof.fast.w4cuda import W4CudaLinear, norm_wanted, use_norm, use_pdl

    norm = norm_wanted() if form == "norm" else "loop"
    layers = [W4CudaLinear(p, **build, **launch) for p in cache["copies"]]
    calls = [form_call(li, form, cache, norm)[0] for li in layers]
    first, ref = form_call(layers[0], form, cache, norm)
    use_pdl(pdl)
    use_norm(norm)
    try:
        return _row(name, k, n, tune_label(cfg), calls, layers[0].nbytes, first(), ref, repeats)
    finally:
        use_pdl(False)
        use_norm("loop")


def _time_diagnostic(name: str, k: int, n: int, cfg: dict, launch: dict, cache: dict, copy_bw: float, repeats: int,
                     pdl: bool) -> dict:
    """Time a diagnostic variant (the GEMV without its math) as _tune_one times a GEMV. Its status is "diagnostic",
    so best_per_shape and the plans never take it."""
    try:
        row = _time_chain(name, k, n, cfg, launch, cache, repeats, pdl, diagnostic=True)
    except Exception as exc:
        return {"status": f"FAILED ({type(exc).__name__}: {str(exc)[:200]})"}
    if row.get("status") != "ok":
        return {"status": row.get("status")}
    return {"status": DIAGNOSTIC, **{f: row[f] for f in ("bytes", "copies", "us_p50", "us_p90", "gb_per_s")},
            "frac_copy_bw": row["gb_per_s"] * 1e9 / copy_bw}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--suite", choices=["all", "kernel", "tune"], default="all",
                    help="all: every kernel incl. Triton tile sweeps; kernel: issue 12's CUDA kernel suite; "
                         "tune: launch-shape sweep of the CUDA kernel (splits x variant) per Qwen2.5-7B shape")
    ap.add_argument("--out-dir", type=Path, default=Path("int4_kernel_out"), help="--suite kernel: where JSON goes")
    ap.add_argument("--all-shapes", action="store_true", help="--suite kernel: time Llama/Mistral shapes too")
    ap.add_argument("--step-ctx", default="", help="--suite kernel: also time full steps at these contexts")
    ap.add_argument("--steps", type=int, default=30, help="timed decode steps per cell")
    ap.add_argument("--steps-only", action="store_true", help="--suite kernel: only the full-step table")
    ap.add_argument("--rows-only", action="store_true",
                    help="--suite kernel: only the per-shape rows (each checked against its float64 product), no "
                         "kernel checks: for a second call on a commit whose checks already ran")
    ap.add_argument("--checks-only", action="store_true",
                    help="--suite kernel: only the kernel checks, nothing timed (e.g. under compute-sanitizer)")
    ap.add_argument("--checks", choices=("all", "decoder"), default="all",
                    help="--suite kernel: which kernel checks: all, or the decoder variants alone, the shipped "
                         "launches first (for compute-sanitizer runs that may end early)")
    ap.add_argument("--step-backends", default="",
                    help="--suite kernel: ';'-separated backend[@EDGEPROF_X=v[+EDGEPROF_Y=w]] to time in the step "
                         "table (default: edgeprof-fast, -int4, -int4-cuda; --steps-only: -int4-cuda)")
    ap.add_argument("--explain", action="store_true", help="--suite kernel: run `edgeprof explain` on the new path")
    ap.add_argument("--explain-backends", default="edgeprof-fast-int4-cuda",
                    help="--explain: comma-separated backends to explain (with this process's EDGEPROF_* settings)")
    ap.add_argument("--tune-splits", type=lambda v: parse_int_list(v, "--tune-splits"), default=(1, 2, 3, 4, 6, 8),
                    help="--suite tune: K splits to try (each made group-aligned; the default launch's is added)")
    ap.add_argument("--tune-variants", type=_variant_list, default=tuple(VARIANTS),
                    help=f"--suite tune: kernel variants, comma-separated, from {','.join(VARIANTS)}")
    ap.add_argument("--tune-model", choices=TUNE_MODELS, default="qwen2.5-7b",
                    help="--suite tune: whose four layer shapes to tune (default qwen2.5-7b)")
    ap.add_argument("--tune-shapes", type=_shape_list, default=tuple(sh[1] for sh in TUNE_SHAPES),
                    help="--suite tune: shapes, comma-separated, from qkv,o,gate_up,down")
    ap.add_argument("--tune-pdl", action="store_true",
                    help="--suite tune: time every config with programmatic dependent launch (sm_90+), as the decode "
                         "step runs it; the checks run plain either way")
    ap.add_argument("--tune-form", choices=TUNE_FORMS, default="plain",
                    help="--suite tune: plain times every shape as y = W x; decoder times each in the form edgeprof-fast's "
                         "int4 step launches it (q/k/v and gate_up with the fused norm, down with SiLU*up, o plain)")
    ap.add_argument("--time-budget", type=float, default=170.0,
                    help="--suite tune: seconds (build included) after which remaining configs are SKIPPED")
    return ap


def _variant_list(text: str) -> tuple[str, ...]:
    from edgeprof.fast.w4cuda import VARIANTS

    vals = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [v for v in vals if v not in VARIANTS]
    if bad or not vals:
        raise argparse.ArgumentTypeError(f"--tune-variants: {bad or text!r} not in {','.join(VARIANTS)}")
    return vals


def _shape_list(text: str) -> tuple[str, ...]:
    names = [sh[1] for sh in TUNE_SHAPES]
    vals = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [v for v in vals if v not in names]
    if bad or not vals:
        raise argparse.ArgumentTypeError(f"--tune-shapes: {bad or text!r} not in {','.join(names)}")
    return vals


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.rows_only and (args.checks_only or args.steps_only):
        ap.error("--rows-only times the per-shape rows without the checks: not with --checks-only or --steps-only")
    if not torch.cuda.is_available():
        print("int4_gemv needs an NVIDIA GPU", file=sys.stderr)
        return 2
    if args.suite == "tune":
        import faulthandler

        faulthandler.enable()
        return tune_suite(args)
    if args.suite == "kernel":
        import faulthandler

        faulthandler.enable()  # a crash inside the extension still leaves a Python stack in the log
        if args.steps_only:
            args.out_dir.mkdir(parents=True, exist_ok=True)
            res = step_table(args, args.out_dir, copy_bandwidth())
            (args.out_dir / "steps.json").write_text(json.dumps(res, indent=1, default=str))
            return 0
        return kernel_suite(args)
    rows = [r for name, k, n in SHAPES for r in bench_shape(name, k, n, args.repeats)]
    print(f"{'shape':<8} {'kernel':<22} {'rel err':>8} {'us/call':>8} {'GB/s':>7}")
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['shape']:<8} {r['kernel']:<22} {r['status'][:80]}")
            continue
        print(f"{r['shape']:<8} {r['kernel']:<22} {r['rel_err']:8.4f} {r['us_p50']:8.1f} {r['gb_per_s']:7.0f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        rec = {"benchmark": "int4_gemv", "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
               "command": " ".join(sys.argv), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}
        args.out.write_text(json.dumps(rec, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
