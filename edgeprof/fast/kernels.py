"""The small fused ops of a decode step, in two implementations with one interface.

`TritonOps` runs on CUDA and reads the position from a device tensor, so one captured
CUDA graph serves every position: attention reads only the live part of the KV cache.
`TorchOps` is the CPU fallback: the same math written with torch ops in the order HF
transformers uses, so CPU tests can compare tokens with the HF reference.

Shapes (batch 1, one token): x/res [1, H]; qkv [1, Q + 2*KV] with Q = nh*hd, KV = nkv*hd;
k_cache/v_cache per layer [nkv, max_ctx, hd]; q [nh, hd]; attention out [1, Q].
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import torch
import torch.nn.functional as F

try:  # Triton is only needed on CUDA; the CPU path never touches it.
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - depends on the install
    HAVE_TRITON = False


def _triton_has_pdl() -> bool:
    """Triton can launch with programmatic dependent launch (`launch_pdl`, `gdc_wait`; Triton >= 3.4)."""
    if not HAVE_TRITON:
        return False
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
        from triton.language.extra import cuda as tl_cuda
    except ImportError:  # pragma: no cover - depends on the install
        return False
    return "launch_pdl" in CUDAOptions.__dataclass_fields__ and hasattr(tl_cuda, "gdc_wait")


TRITON_PDL = _triton_has_pdl()
PDL_ENV = "EDGEPROF_PDL"
PDL_PARTS = ("gemv", "triton")


def pdl_wanted(device, part: str = "gemv") -> bool:
    """Programmatic dependent launch (PDL) for one part of a decode step's kernels on `device` ("gemv": the CUDA
    GEMVs of csrc/, "triton": the Triton norms and attention): each kernel of the chain starts while the one
    before it drains and waits on the device for its inputs (csrc/gemv_common.cuh). On for both parts on CUDA
    sm_90+ (griddepcontrol is Hopper's) where this Triton can launch with PDL; $EDGEPROF_PDL=0 turns it off,
    =gemv keeps it for the GEMVs only, =nodown for all but the int4 down projection's GEMV (pdl_down_wanted). Not
    for the GEMVs alone by default: on the H200 that bought nothing (results/h200/2026-11-28-pdl r11: the gain
    needs the Triton kernels in the chain too)."""
    if part not in PDL_PARTS:
        raise ValueError(f"part: {part!r} is not one of {PDL_PARTS}")
    val = _pdl_env()
    dev = torch.device(device)
    if val == "0" or dev.type != "cuda" or not torch.cuda.is_available():
        return False
    wanted = part == "gemv" if val == "gemv" else TRITON_PDL  # default and "1": both parts or neither
    return wanted and torch.cuda.get_device_capability(dev) >= (9, 0)


PDL_VALUES = ("", "0", "1", "gemv", "nodown")


def _pdl_env() -> str:
    val = os.environ.get(PDL_ENV, "").strip()
    if val not in PDL_VALUES:
        raise ValueError(f"{PDL_ENV}: {val!r} is not 0, 1, gemv or nodown; unset it for the default (on for sm_90+)")
    return val


def pdl_down_wanted() -> bool:
    """Whether the int4 down projection's GEMV (the W4 launch with SiLU*up fused) takes part in PDL when the other
    GEMVs do: yes, unless $EDGEPROF_PDL=nodown. A chain of down GEMVs ran slower with PDL (results/h200/
    2026-11-28-pdl r11), but leaving it out of the step did not give a consistent gain. On one H200, two A/Bs
    of the int4 step with the down GEMV left out gave these changes (results/h200/2026-11-28-dequant r21, r22):
    - r21: -3.3% at ctx 2048 and -1.4% at 16384;
    - r22: +1.9% and -0.5%.
    Both are within the machine's run-to-run spread, so the option is not the default."""
    return _pdl_env() != "nodown"


PREFETCH_ENV = "EDGEPROF_PDL_PREFETCH"
# Off by default: every CTA prefetches, also the many that start after the previous kernel has ended, and on
# the H200 that cost more than the overlap gained (r10, one machine: int4 step 2.107 ms without, 2.199 with 16
# tiles, 2.507 with 64; bf16 4.27 ms with 16 against 4.05 without PDL)
PDL_PREFETCH_TILES = 0


def pdl_prefetch_tiles() -> int:
    """512-byte weight tiles per warp a GEMV launched with PDL prefetches into L2 before it waits for the
    previous kernel ($EDGEPROF_PDL_PREFETCH; default PDL_PREFETCH_TILES = none)."""
    val = os.environ.get(PREFETCH_ENV, "").strip()
    if not val:
        return PDL_PREFETCH_TILES
    if not val.isdigit():
        raise ValueError(f"{PREFETCH_ENV}: {val!r} is not a tile count (0 = no prefetch); unset it for "
                         f"{PDL_PREFETCH_TILES}")
    return int(val)


ATTN_KERNEL_ENV = "EDGEPROF_ATTN_KERNEL"
# The CUDA kernel's default shape: CTAs per kv head (one cluster), warps per CTA. H200, Qwen2.5-7B, ctx 2048
# (results/h200/2026-11-28-attention r39): the int4 step 1.992 / 1.981 ms against 2.041 / 2.006 with Triton;
# 16x8 (2.011 / 2.065) and 16x4 (2.047 / 2.071) were not faster, though 16x8 is the fastest alone (8.71 us/layer).
ATTN_CUDA_DEFAULT = (8, 8)
# One cluster per kv head up to this cache length. One cluster per kv head (32 CTAs for Qwen2.5-7B at 8x8) streams a
# long cache with too few SMs (26.3 us/layer at ctx 16384 against Triton's 16.8, r39).
ATTN_ONE_CLUSTER_MAX_CTX = 4096
# "auto" takes the CUDA kernel up to this cache length only. With several clusters per kv head beyond
# ATTN_ONE_CLUSTER_MAX_CTX and the pull merge, it took 18.3-19.5 us/layer (results/h200/2026-11-28-cluster r54) and
# the int4 step 1.5-2% longer at 16384 than Triton, so "auto" stopped at 4096 tokens; with the push merge the int4 step
# is 2.5% / 2.3% faster than with Triton at ctx 8192 / 16384 (step_ab 0.9746 / 0.9766, results/h200/2026-11-29-gather
# r117). Longer caches (not measured) keep Triton.
ATTN_CUDA_MAX_CTX = 16384 + 64
# Beyond ATTN_ONE_CLUSTER_MAX_CTX several clusters per kv head share the live cache, each at least this many tokens, and merge through
# global memory (csrc/attn_decode.cu: MultiCluster). How many: as many as the GPU holds at once for all kv heads
# (attn_cluster_fit), since a cluster's CTAs must share one GPC and a second wave doubles the time (r42/r43 against
# results/h200/2026-11-28-cluster r52). $EDGEPROF_ATTN_TPC overrides the minimum (a multiple of 16) for benchmarks.
ATTN_TOKENS_PER_CLUSTER = 512
ATTN_MAX_CLUSTERS = 8  # per kv head (csrc/attn_decode.cu kMaxClusters: the merge's loads are unrolled to it)
ATTN_TPC_ENV = "EDGEPROF_ATTN_TPC"
# How the CUDA kernel's cluster merges its CTAs (csrc/attn_decode.cu, step 4): "pull", each rank reads its slice of
# the outputs from every CTA's shared memory between two cluster barriers, or "push", every CTA sends each rank its
# slice (st.async into the rank's shared memory) and waits only for its own. The same sums in the same order: the
# output is bitwise the same either way. H200, Qwen2.5-7B int4 step at ctx 2048 (results/h200/2026-11-29-gather r114):
# push / pull GPU p50 0.9815 [0.9801, 0.9821] in step_ab (1.673 -> 1.642 ms), the logits bitwise equal.
ATTN_MERGE_ENV = "EDGEPROF_ATTN_MERGE"
ATTN_MERGES = ("pull", "push")
ATTN_MERGE_DEFAULT = "push"


def attn_merge() -> str:
    """$EDGEPROF_ATTN_MERGE (ATTN_MERGES); unset: ATTN_MERGE_DEFAULT."""
    val = os.environ.get(ATTN_MERGE_ENV, "").strip() or ATTN_MERGE_DEFAULT
    if val not in ATTN_MERGES:
        raise ValueError(f"{ATTN_MERGE_ENV}: {val!r} is not one of {', '.join(ATTN_MERGES)}; unset it for "
                         f"{ATTN_MERGE_DEFAULT}")
    return val


def attn_tokens_per_cluster() -> int:
    val = os.environ.get(ATTN_TPC_ENV, "").strip()
    if not val:
        return ATTN_TOKENS_PER_CLUSTER
    if not val.isdigit() or int(val) < 16 or int(val) % 16:
        raise ValueError(f"{ATTN_TPC_ENV}: {val!r} is not a multiple of 16 (the fewest cache tokens per cluster); "
                         f"unset it for {ATTN_TOKENS_PER_CLUSTER}")
    return int(val)


def attn_clusters_per_head(max_ctx: int, n_kv: int, fits: int, tpc: int) -> int:
    """Clusters per kv head of the CUDA attention for a cache of max_ctx tokens: one up to ATTN_ONE_CLUSTER_MAX_CTX,
    else as many as fit the GPU at once for all n_kv heads (`fits` clusters) and still take `tpc` tokens each."""
    if max_ctx <= ATTN_ONE_CLUSTER_MAX_CTX:
        return 1
    return max(1, min(fits // n_kv, -(-max_ctx // tpc), ATTN_MAX_CLUSTERS))


class AttnKernel(NamedTuple):
    """Which decode attention a TritonOps runs (attn_kernel): edgeprof's one-launch CUDA kernel (csrc/attn_decode.cu,
    `cluster` CTAs of `warps` warps per kv head) or the Triton split + reduce pair, and why."""

    kind: str  # "cuda" or "triton"
    cluster: int = 0
    warps: int = 0
    why: str = ""  # for "triton": why not the CUDA kernel
    merge: str = "pull"  # for "cuda": how its cluster merges (ATTN_MERGES)

    def label(self) -> str:
        if self.kind == "cuda":
            return (f"cuda (one launch, cluster of {self.cluster} CTAs x {self.warps} warps per kv head"
                    + (", merged by push)" if self.merge == "push" else ")"))
        return "triton (split + reduce)" + (f": {self.why}" if self.why else "")


def parse_attn_kernel(spec: str) -> tuple[str, int, int]:
    """$EDGEPROF_ATTN_KERNEL: "auto" (the default: the CUDA kernel in its default shape up to ATTN_CUDA_MAX_CTX,
    else Triton), "cuda" (ATTN_CUDA_DEFAULT at any length), "cuda:CLxW" (cluster size 8 or 16, warps 4 or 8) or
    "triton". Returns (kind, cluster, warps); kind "auto" comes with the default shape."""
    spec = spec.strip() or "auto"
    kind, _, shape = spec.partition(":")
    if kind in ("triton", "auto") and not shape:
        return (kind, *ATTN_CUDA_DEFAULT) if kind == "auto" else ("triton", 0, 0)
    if kind == "cuda":
        if not shape:
            return ("cuda", *ATTN_CUDA_DEFAULT)
        cl, _, w = shape.partition("x")
        if cl.isdigit() and w.isdigit() and int(cl) in (8, 16) and int(w) in (4, 8):
            return "cuda", int(cl), int(w)
    raise ValueError(f"{ATTN_KERNEL_ENV}: {spec!r} is not auto, cuda, cuda:CLxW (CL 8 or 16 CTAs per kv head, W 4 or "
                     f"8 warps) or triton; unset it for auto")


def attn_kernel(n_heads: int, n_kv: int, head_dim: int, device, max_ctx: int, spec: str | None = None,
                fuse_rope: bool = True) -> AttnKernel:
    """The decode attention for this model on `device` with a cache of max_ctx tokens: the CUDA kernel where it was
    asked for ($EDGEPROF_ATTN_KERNEL; "auto", the default, asks up to ATTN_CUDA_MAX_CTX) and can run (sm_90+ for
    clusters, head_dim 64 or 128, at most 8 query heads per kv head, the extension built, `fuse_rope`: the rope
    folded into attention, which the CUDA kernel always does), else Triton with the reason."""
    kind, cluster, warps = parse_attn_kernel(os.environ.get(ATTN_KERNEL_ENV, "") if spec is None else spec)
    merge = attn_merge()  # a bad value is an error wherever it is set, not only where the CUDA kernel runs
    if kind == "triton":
        return AttnKernel("triton", why=f"${ATTN_KERNEL_ENV}=triton")
    dev = torch.device(device)
    why = None
    if kind == "auto" and max_ctx > ATTN_CUDA_MAX_CTX:
        why = (f"max_ctx {max_ctx} > {ATTN_CUDA_MAX_CTX}: the CUDA kernel was not measured on a cache this long "
               f"(${ATTN_KERNEL_ENV}=cuda forces it)")
    elif dev.type != "cuda":
        why = "not a CUDA device"
    elif torch.cuda.get_device_capability(dev) < (9, 0):
        why = "thread-block clusters need sm_90+"
    elif head_dim not in (64, 128) or n_heads % n_kv or n_heads // n_kv > 8:
        why = f"head_dim {head_dim} and {n_heads // n_kv} query heads per kv head (the kernel: 64/128 and <= 8)"
    elif not fuse_rope:
        why = "$EDGEPROF_FUSE_ROPE=0 (the CUDA kernel always rotates q and k itself)"
    elif _extension() is None:
        from edgeprof.fast import w4cuda

        why = f"the CUDA extension did not build: {w4cuda.build_error()}"
    return AttnKernel("triton", why=why) if why else AttnKernel("cuda", cluster, warps, merge=merge)


def _extension():
    """edgeprof's CUDA extension (csrc/: the GEMVs and the decode attention), built on first use; None if it cannot."""
    from edgeprof.fast import w4cuda  # not at import: w4cuda's build needs nvcc, and the CPU path never asks for it

    return w4cuda.load_extension()


# --------------------------------------------------------------------------- torch (CPU)
class TorchOps:
    """Reference ops; follow HF's bf16 rounding points so greedy tokens match."""

    def __init__(self, n_heads: int, n_kv: int, head_dim: int, eps: float, cos: torch.Tensor, sin: torch.Tensor):
        self.nh, self.nkv, self.hd, self.eps = n_heads, n_kv, head_dim, eps
        self.cos, self.sin = cos, sin  # [max_ctx, hd] in the model dtype, as HF computes them

    def add_rmsnorm(self, x: torch.Tensor, res: torch.Tensor | None, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return add_rmsnorm(x, res, w, self.eps)

    def rope_write_kv(self, qkv: torch.Tensor, pos: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> torch.Tensor:
        p = int(pos.item())  # CPU: reading the position is free
        q_dim, kv_dim = self.nh * self.hd, self.nkv * self.hd
        q = qkv[0, :q_dim].view(self.nh, self.hd)
        k = qkv[0, q_dim:q_dim + kv_dim].view(self.nkv, self.hd)
        v = qkv[0, q_dim + kv_dim:].view(self.nkv, self.hd)
        cos, sin = self.cos[p], self.sin[p]  # [hd]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k_cache[:, p] = k
        v_cache[:, p] = v
        return q

    def attention(self, q: torch.Tensor, pos: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> torch.Tensor:
        n = int(pos.item()) + 1  # live length, the current token included
        out = F.scaled_dot_product_attention(
            q.view(1, self.nh, 1, self.hd), k_cache[None, :, :n], v_cache[None, :, :n], enable_gqa=True
        )  # [1, nh, 1, hd]
        return out.reshape(1, self.nh * self.hd)

    def rope_attention(self, qkv: torch.Tensor, pos: torch.Tensor, k_cache: torch.Tensor,
                       v_cache: torch.Tensor) -> torch.Tensor:
        return self.attention(self.rope_write_kv(qkv, pos, k_cache, v_cache), pos, k_cache, v_cache)

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        g, u = gate_up.chunk(2, dim=-1)
        return F.silu(g) * u


def add_rmsnorm(x: torch.Tensor, res: torch.Tensor | None, w: torch.Tensor, eps: float):
    """(norm(res + x) * w, res + x) for rows of x; rounds where HF's RMSNorm rounds."""
    h = x if res is None else res + x  # the new residual, in the model dtype
    hf = h.float()
    hf = hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps)
    return w * hf.to(h.dtype), h


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """HF's rotate-half RoPE: x [..., hd] with cos/sin broadcastable to it."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


# --------------------------------------------------------------------------- triton (GPU)
if HAVE_TRITON:

    @triton.jit
    def _pdl_wait(PDL: tl.constexpr):
        # launched with PDL: wait for the previous kernel's outputs, then let the next kernel launch
        # (the same protocol as csrc/gemv_common.cuh; nothing is read or written before the wait)
        if PDL:
            tl.extra.cuda.gdc_wait()
            tl.extra.cuda.gdc_launch_dependents()

    @triton.jit
    def _add_rmsnorm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, N, eps,
                            HAS_RES: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr):
        _pdl_wait(PDL)
        offs = tl.arange(0, BLOCK)
        mask = offs < N
        h = tl.load(x_ptr + offs, mask=mask, other=0.0)
        if HAS_RES:
            h = (h.to(tl.float32) + tl.load(res_ptr + offs, mask=mask, other=0.0).to(tl.float32)).to(h.dtype)
        tl.store(res_out_ptr + offs, h, mask=mask)
        hf = h.to(tl.float32)
        rstd = 1.0 / tl.sqrt(tl.sum(hf * hf, axis=0) / N + eps)
        w = tl.load(w_ptr + offs, mask=mask, other=0.0)
        y = (hf * rstd).to(h.dtype).to(tl.float32) * w.to(tl.float32)
        tl.store(out_ptr + offs, y.to(h.dtype), mask=mask)

    @triton.jit
    def _rope_kv_kernel(qkv_ptr, cos_ptr, sin_ptr, pos_ptr, q_out_ptr, k_cache_ptr, v_cache_ptr,
                        max_ctx, NH: tl.constexpr, NKV: tl.constexpr, HD: tl.constexpr, PDL: tl.constexpr):
        # one program per head: [0, NH) q heads, [NH, NH+NKV) k heads, then v heads
        _pdl_wait(PDL)
        head = tl.program_id(0)
        pos = tl.load(pos_ptr)
        half = tl.arange(0, HD // 2)
        base = qkv_ptr + head * HD
        if head < NH + NKV:
            x1 = tl.load(base + half).to(tl.float32)
            x2 = tl.load(base + HD // 2 + half).to(tl.float32)
            c = tl.load(cos_ptr + pos * HD + half).to(tl.float32)
            s = tl.load(sin_ptr + pos * HD + half).to(tl.float32)
            y1 = x1 * c - x2 * s
            y2 = x2 * c + x1 * s
            if head < NH:  # noqa: SIM108 (a runtime branch inside a Triton kernel)
                dst = q_out_ptr + head * HD
            else:
                dst = k_cache_ptr + (head - NH) * max_ctx * HD + pos * HD
            tl.store(dst + half, y1.to(q_out_ptr.dtype.element_ty))
            tl.store(dst + HD // 2 + half, y2.to(q_out_ptr.dtype.element_ty))
        else:
            full = tl.arange(0, HD)
            v = tl.load(base + full)
            tl.store(v_cache_ptr + (head - NH - NKV) * max_ctx * HD + pos * HD + full, v)

    @triton.jit
    def _pow2_floor(v, BITS: tl.constexpr):
        # the largest power of two <= v (v >= 1), for v < 2**BITS
        p = v * 0 + 1
        for _ in tl.static_range(BITS):
            p = tl.where(p * 2 <= v, p * 2, p)
        return p

    @triton.jit
    def _attn_chunk(n_live, CHUNK: tl.constexpr, BLOCK_N: tl.constexpr, S_MAX: tl.constexpr, LIVE: tl.constexpr):
        # cache tokens per split (read on the device: graph-safe): CHUNK if > 0 (fixed); else with LIVE > 0,
        # BLOCK_N times the largest power of two <= cdiv(n_live, LIVE * BLOCK_N), which keeps about LIVE / 2 to
        # 2 * LIVE splits live; else -CHUNK is the minimum and the live length is spread over all S_MAX splits
        if CHUNK > 0:
            chunk = n_live * 0 + CHUNK
        elif LIVE > 0:
            chunk = BLOCK_N * _pow2_floor(tl.cdiv(n_live, LIVE * BLOCK_N), 24)
        else:
            chunk = tl.maximum(tl.cdiv(tl.cdiv(n_live, S_MAX), BLOCK_N) * BLOCK_N, -CHUNK)
        return chunk

    @triton.jit
    def _rope_rows(ptr, rows, d, pos, cos_ptr, sin_ptr, HD: tl.constexpr, mask):
        # HF's rotate-half RoPE of rows [R] x HD at `pos`, in fp32, rounded to bf16 as _rope_kv_kernel rounds:
        # y[d] = x[d] cos[d] + sign(d) x[(d + HD/2) % HD] sin[d], sign = -1 in the first half
        x = tl.load(ptr + rows[:, None] * HD + d[None, :], mask=mask, other=0.0).to(tl.float32)
        xr = tl.load(ptr + rows[:, None] * HD + ((d + HD // 2) % HD)[None, :], mask=mask, other=0.0).to(tl.float32)
        c = tl.load(cos_ptr + pos * HD + d).to(tl.float32)
        s = tl.load(sin_ptr + pos * HD + d).to(tl.float32)
        sign = tl.where(d < HD // 2, -1.0, 1.0)
        return (x * c[None, :] + (sign[None, :] * xr) * s[None, :]).to(tl.bfloat16)

    @triton.jit
    def _attn_split_kernel(q_ptr, k_ptr, v_ptr, pos_ptr, part_ptr, lse_ptr, max_ctx, scale, cos_ptr, sin_ptr,
                           G: tl.constexpr, G_PAD: tl.constexpr, HD: tl.constexpr,
                           CHUNK: tl.constexpr, BLOCK_N: tl.constexpr, S_MAX: tl.constexpr, LIVE: tl.constexpr,
                           ROPE: tl.constexpr, NH: tl.constexpr, NKV: tl.constexpr, PDL: tl.constexpr):
        # Flash-decoding: program (kv head, split) attends its G query heads over one chunk
        # of the live cache. Splits past the live length exit at once.
        # ROPE: q_ptr is the q/k/v GEMV output [NH + 2 NKV, HD]; q and the new k are rotated here, and the
        # split holding position pos writes the new k and v into the cache before its loop reads them (no
        # other program reads row pos in this step), so the separate rope launch goes away.
        _pdl_wait(PDL)
        kvh = tl.program_id(0)
        split = tl.program_id(1)
        pos = tl.load(pos_ptr)
        n_live = pos + 1
        chunk = _attn_chunk(n_live, CHUNK, BLOCK_N, S_MAX, LIVE)
        start = split * chunk
        if start < n_live:
            end = tl.minimum(start + chunk, n_live)
            g = tl.arange(0, G_PAD)
            d = tl.arange(0, HD)
            kv_base = kvh * max_ctx * HD
            if ROPE:
                q = _rope_rows(q_ptr, kvh * G + g, d, pos, cos_ptr, sin_ptr, HD, (g < G)[:, None])
                one = tl.arange(0, 1)
                k_new = _rope_rows(q_ptr, NH + kvh + one, d, pos, cos_ptr, sin_ptr, HD, (one >= 0)[:, None])  # [1, HD]
                v_new = tl.load(q_ptr + (NH + NKV + kvh + one)[:, None] * HD + d[None, :])  # [1, HD]
                owner = (d[None, :] * 0 + end) == n_live  # [1, HD]: this split holds position pos
                tl.store(k_ptr + kv_base + pos * HD + d[None, :], k_new, mask=owner)
                tl.store(v_ptr + kv_base + pos * HD + d[None, :], v_new, mask=owner)
                # the loop below reads row pos back from the cache: the barrier orders this CTA's stores before
                # its loads (CTA scope). Substituting k_new / v_new inside the loop instead (tl.where) measured
                # 1.5-2x slower attention on the H200 (r7: a layout conversion per loop iteration)
                tl.debug_barrier()
            else:
                q = tl.load(q_ptr + (kvh * G + g)[:, None] * HD + d[None, :], mask=(g < G)[:, None], other=0.0)
            m = tl.full([G_PAD], float("-inf"), tl.float32)
            l_sum = tl.zeros([G_PAD], tl.float32)
            acc = tl.zeros([G_PAD, HD], tl.float32)
            for i in range(0, tl.cdiv(end - start, BLOCK_N)):  # the last block is masked
                n = start + i * BLOCK_N + tl.arange(0, BLOCK_N)
                live = n < end
                k = tl.load(k_ptr + kv_base + n[:, None] * HD + d[None, :], mask=live[:, None], other=0.0)
                v = tl.load(v_ptr + kv_base + n[:, None] * HD + d[None, :], mask=live[:, None], other=0.0)
                s = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32))) * scale  # [G_PAD, BLOCK_N]
                s = tl.where(live[None, :], s, float("-inf"))
                m_new = tl.maximum(m, tl.max(s, axis=1))
                p = tl.exp(s - m_new[:, None])
                alpha = tl.exp(m - m_new)
                l_sum = l_sum * alpha + tl.sum(p, axis=1)
                acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32))
                m = m_new
            row = (kvh * S_MAX + split) * G_PAD + g
            # only the G real query rows: the padding rows (tl.dot needs 16) would double the partials' traffic
            tl.store(part_ptr + row[:, None] * HD + d[None, :], acc / l_sum[:, None], mask=(g < G)[:, None])
            tl.store(lse_ptr + row, m + tl.log(l_sum), mask=g < G)

    @triton.jit
    def _attn_reduce_kernel(part_ptr, lse_ptr, pos_ptr, out_ptr, G: tl.constexpr, G_PAD: tl.constexpr,
                            HD: tl.constexpr, CHUNK: tl.constexpr, BLOCK_N: tl.constexpr, S_MAX: tl.constexpr,
                            LIVE: tl.constexpr, PDL: tl.constexpr):
        _pdl_wait(PDL)
        kvh = tl.program_id(0)
        gi = tl.program_id(1)
        n_live = tl.load(pos_ptr) + 1
        n_split = tl.cdiv(n_live, _attn_chunk(n_live, CHUNK, BLOCK_N, S_MAX, LIVE))
        s = tl.arange(0, S_MAX)
        live = s < n_split
        row = (kvh * S_MAX + s) * G_PAD + gi
        lse = tl.load(lse_ptr + row, mask=live, other=float("-inf"))
        w = tl.exp(lse - tl.max(lse, axis=0))
        w = tl.where(live, w, 0.0)
        w = w / tl.sum(w, axis=0)
        d = tl.arange(0, HD)
        part = tl.load(part_ptr + row[:, None] * HD + d[None, :], mask=live[:, None], other=0.0)
        out = tl.sum(part * w[:, None], axis=0)
        tl.store(out_ptr + (kvh * G + gi) * HD + d, out.to(out_ptr.dtype.element_ty))

    @triton.jit
    def _silu_mul_kernel(gu_ptr, out_ptr, N, BLOCK: tl.constexpr, PDL: tl.constexpr):
        _pdl_wait(PDL)
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        g = tl.load(gu_ptr + offs, mask=mask, other=0.0)
        u = tl.load(gu_ptr + N + offs, mask=mask, other=0.0)
        gf = g.to(tl.float32)
        act = (gf / (1.0 + tl.exp(-gf))).to(g.dtype)  # HF rounds silu to the model dtype
        tl.store(out_ptr + offs, (act.to(tl.float32) * u.to(tl.float32)).to(g.dtype), mask=mask)


ATTN_ENV = "EDGEPROF_ATTN"


class AttnPlan(NamedTuple):
    """How the decode attention splits the live cache (attn_plan)."""

    chunk: int  # > 0: every split takes that many cache tokens; <= 0: -chunk is the adaptive minimum
    block: int  # BLOCK_N, cache rows per loop iteration
    splits: int  # S_MAX, the splits per kv head the launch (and the partials' scratch) is sized for
    live: int = 0  # > 0: chunk = BLOCK_N * pow2_floor(cdiv(n_live, live * BLOCK_N)): about live/2..2*live splits


def attn_plan(max_ctx: int, n_kv: int, sms: int, spec: str | None = None) -> AttnPlan:
    """The decode attention's split plan (AttnPlan).

    Default (adaptive): about one CTA per SM (n_kv * splits >= SMs), at least 128 tokens per split. Measured
    on the H200 at Qwen2.5-7B's shape (results/h200/2026-11-28-decode-step, r4: benchmarks/attn_decode.py),
    us per layer at ctx 2048 / 16384: fixed 256-token chunks (the first version) 10.8 / 15.9; 64-token
    chunks over 128 splits 8.5 / 19.6 (at long context each split writes a padded [16, 128] fp32 partial
    the reduce reads back); 128-token chunks 8.2 at ctx 2048.
    `spec` ($EDGEPROF_ATTN) overrides: "chunk:256" (fixed), "min:64" (the adaptive minimum), "splits:64",
    "block:32", "live:64" (about 64 live splits per kv head, the chunk a power of two times the block: r5's
    best chunk at both ctx 2048 and 16384), several joined by commas."""
    pow2 = triton.next_power_of_2 if HAVE_TRITON else (lambda v: 1 << max(0, (int(v) - 1).bit_length()))
    opts = {"chunk": 0, "min": 128, "splits": 0, "block": 64, "live": 0}
    spec = os.environ.get(ATTN_ENV, "") if spec is None else spec
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, _, val = part.partition(":")
        if key not in opts or not val.isdigit() or int(val) < 1:
            raise ValueError(f"{ATTN_ENV}: {part!r} is not chunk:N, min:N, splits:N, block:N or live:N (N >= 1); "
                             f"unset it for the adaptive default")
        opts[key] = int(val)
    block = opts["block"]
    if block not in (16, 32, 64, 128):
        raise ValueError(f"{ATTN_ENV}: block:{block} must be 16, 32, 64 or 128")
    if opts["chunk"]:
        chunk = -(-opts["chunk"] // block) * block
        return AttnPlan(chunk, block, pow2(-(-max_ctx // chunk)))
    if opts["live"]:  # chunk > n_live / (2 live): at most 2 * live - 1 splits, and at most one per block
        return AttnPlan(0, block, min(pow2(2 * opts["live"]), pow2(-(-max_ctx // block))), opts["live"])
    least = -(-opts["min"] // block) * block
    splits = pow2(opts["splits"] or -(-sms // n_kv))
    return AttnPlan(-least, block, min(splits, pow2(-(-max_ctx // least))))  # more splits than min-size chunks stay empty


class TritonOps:
    """CUDA ops; every position is read from a device tensor (graph-safe, no host sync)."""

    def __init__(self, n_heads: int, n_kv: int, head_dim: int, eps: float, cos: torch.Tensor, sin: torch.Tensor,
                 max_ctx: int, hidden: int, intermediate: int, pdl: bool = False):
        if not HAVE_TRITON:
            raise RuntimeError("Triton is not installed; it ships with torch on Linux CUDA builds")
        self.nh, self.nkv, self.hd, self.eps = n_heads, n_kv, head_dim, eps
        self.cos, self.sin, self.max_ctx = cos.contiguous(), sin.contiguous(), max_ctx
        self.g = n_heads // n_kv
        self.g_pad = max(16, triton.next_power_of_2(self.g))  # tl.dot needs M >= 16
        # (the Triton interpreter runs these kernels on the CPU in tests: 8 "SMs" there)
        sms = torch.cuda.get_device_properties(cos.device).multi_processor_count if cos.device.type == "cuda" else 8
        self.chunk, self.block_n, self.s_max, self.live = attn_plan(max_ctx, n_kv, sms)
        self.fuse_rope = os.environ.get("EDGEPROF_FUSE_ROPE", "1") != "0"
        # the decode attention: edgeprof's one-launch CUDA kernel (its extension module here) or Triton split + reduce
        self.attn_kernel = attn_kernel(n_heads, n_kv, head_dim, cos.device, max_ctx, fuse_rope=self.fuse_rope)
        self._attn_ext = _extension() if self.attn_kernel.kind == "cuda" else None
        self.attn_pdl = pdl  # the CUDA attention's own PDL switch (it does not need Triton's launch_pdl)
        self._attn_ws = self._attn_workspace(max_ctx, cos.device)
        # programmatic dependent launch (pdl_wanted), where this Triton can launch with it
        self.pdl = pdl and TRITON_PDL
        self._launch = {"launch_pdl": True} if self.pdl else {}  # extra launch options of every kernel here
        dev, dt = cos.device, cos.dtype
        # Static scratch so the captured graph always sees the same addresses.
        self.q = torch.empty(n_heads * head_dim, device=dev, dtype=dt)
        self.part = torch.empty(n_kv * self.s_max * self.g_pad * head_dim, device=dev, dtype=torch.float32)
        self.lse = torch.empty(n_kv * self.s_max * self.g_pad, device=dev, dtype=torch.float32)
        self.attn_out = torch.empty(1, n_heads * head_dim, device=dev, dtype=dt)
        self.norm_out = torch.empty(1, hidden, device=dev, dtype=dt)
        self.res = torch.empty(1, hidden, device=dev, dtype=dt)
        self.act = torch.empty(1, intermediate, device=dev, dtype=dt)
        self.h_block = triton.next_power_of_2(hidden)

    def _attn_workspace(self, max_ctx: int, dev) -> tuple:
        """(clusters per kv head, the fewest tokens per cluster, acc, ml, tickets) of the CUDA attention
        (attn_clusters_per_head; one cluster needs no workspace)."""
        tpc = attn_tokens_per_cluster()
        none = torch.empty(0, device=dev)
        if self.attn_kernel.kind != "cuda":
            return 1, tpc, none, none, none.int()
        cl, w = self.attn_kernel.cluster, self.attn_kernel.warps
        fits = self._attn_ext.attn_cluster_fit(self.hd, True, cl, w)[0] if max_ctx > ATTN_ONE_CLUSTER_MAX_CTX else 0
        clusters = attn_clusters_per_head(max_ctx, self.nkv, fits, tpc)
        if clusters == 1:
            return 1, tpc, none, none, none.int()
        return (clusters, tpc,
                torch.empty(clusters * self.nh * self.hd, device=dev, dtype=torch.float32),
                torch.empty(self.nkv * clusters * cl * 16, device=dev, dtype=torch.float32),
                torch.zeros(self.nkv * cl, device=dev, dtype=torch.int32))

    def add_rmsnorm(self, x, res, w):
        out = torch.empty_like(self.norm_out)
        res_out = torch.empty_like(self.res)
        _add_rmsnorm_kernel[(1,)](x, res if res is not None else x, w, out, res_out, x.shape[-1], self.eps,
                                  HAS_RES=res is not None, BLOCK=self.h_block, PDL=self.pdl, num_warps=8,
                                  **self._launch)
        return out, res_out

    def rope_write_kv(self, qkv, pos, k_cache, v_cache):
        _rope_kv_kernel[(self.nh + 2 * self.nkv,)](qkv, self.cos, self.sin, pos, self.q, k_cache, v_cache,
                                                   self.max_ctx, NH=self.nh, NKV=self.nkv, HD=self.hd, PDL=self.pdl,
                                                   **self._launch)
        return self.q

    def attention(self, q, pos, k_cache, v_cache, rope: bool = False):
        """Attention of q [nh * hd] over the live cache; rope=True: q is the q/k/v GEMV output [1, Q + 2KV]
        and the kernel also rotates q and k and writes this step's k and v (rope_attention)."""
        scale = 1.0 / math.sqrt(self.hd)
        if self._attn_ext is not None:
            self._attn_ext.attn_decode(q, k_cache, v_cache, pos, self.cos, self.sin, self.attn_out, self.nh, scale,
                                       rope, self.attn_kernel.cluster, self.attn_kernel.warps, *self._attn_ws,
                                       self.attn_pdl, self.attn_kernel.merge == "push")
            return self.attn_out
        _attn_split_kernel[(self.nkv, self.s_max)](
            q, k_cache, v_cache, pos, self.part, self.lse, self.max_ctx, scale, self.cos, self.sin,
            G=self.g, G_PAD=self.g_pad, HD=self.hd, CHUNK=self.chunk, BLOCK_N=self.block_n, S_MAX=self.s_max,
            LIVE=self.live, ROPE=rope, NH=self.nh, NKV=self.nkv, PDL=self.pdl, num_warps=4, **self._launch)
        _attn_reduce_kernel[(self.nkv, self.g)](self.part, self.lse, pos, self.attn_out, G=self.g,
                                               G_PAD=self.g_pad, HD=self.hd, CHUNK=self.chunk, BLOCK_N=self.block_n,
                                               S_MAX=self.s_max, LIVE=self.live, PDL=self.pdl, **self._launch)
        return self.attn_out

    def rope_attention(self, qkv, pos, k_cache, v_cache):
        """rope_write_kv + attention: two launches (the split kernel does the rope), or three with
        $EDGEPROF_FUSE_ROPE=0 (A/B). H200, same machine (results/h200/2026-11-28-decode-step r9): fused
        equal at ctx 2048, 1-3.5% faster at 16384."""
        if self.fuse_rope:
            return self.attention(qkv, pos, k_cache, v_cache, rope=True)
        return self.attention(self.rope_write_kv(qkv, pos, k_cache, v_cache), pos, k_cache, v_cache)

    def silu_mul(self, gate_up):
        n = gate_up.shape[-1] // 2
        out = torch.empty(1, n, device=gate_up.device, dtype=gate_up.dtype)
        block = 1024
        _silu_mul_kernel[(triton.cdiv(n, block),)](gate_up, out, n, BLOCK=block, PDL=self.pdl, **self._launch)
        return out
