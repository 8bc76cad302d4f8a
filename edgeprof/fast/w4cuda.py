"""edgeprof's own W4A16 GEMV (CUDA C++, csrc/w4a16_gemv.cu): packing, JIT build, fallback.

Packed layout (the kernel's header comment has the bit-level detail):
  qw int32 [N/16, K/64, 32, 4]  one 16-row x 64-column tile = 512 contiguous bytes; lane L of a warp
       reads its 16 bytes with one 128-bit load; word j, nibble p of lane L holds
       q[16*nb + L//4 + 8*rh, 64*t + 16*j + 2*(L%4) + 8*kh + e] with p = rh + 2*kh + 4*e,
       which is the lane's A fragment of one bf16 mma.m16n8k16 after one lop3 per register.
  sz bf16  [N/16, K/g, 8, 2]    (s[r], s[r+8]) per lane row r = L//4        (symmetric, z = 8)
           [N/16, K/g, 8, 4]    (s[r], s[r+8], 128+z[r], 128+z[r+8])       (asymmetric)
The function is exactly the GPTQ one, w = (q - z) * s with s rounded to bf16, accumulated in fp32.

`pack_w4` / `unpack_w4` are pure torch (CPU or GPU); `load_extension` JIT-builds the kernel with
torch.utils.cpp_extension (needs nvcc and an sm_80+ GPU) and returns None with a reason otherwise,
so callers fall back to tinygemm.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch

CSRC = Path(__file__).parent / "csrc"
GROUPS = (32, 64, 128)
TARGET_CTAS_PER_SM = 4  # 4 warps each: 16 streaming warps per SM keep ~32 KB of loads in flight
MAX_SLICE_TILES = 320  # a split's x slice (tiles * 64 bf16 + group sums) stays within 40 KB of shared memory
# launch variants of the kernel (csrc/w4a16_gemv.cu), name -> (id, row blocks per CTA, persistent) (a row block is
# 16 output rows; one warp streams each, except in the k variants);
# "base" is the default path for every group size, the others are tuning variants for group 128 only
# (o8 / o6 / u8: 16-byte loads per chunk and CTAs per SM the registers must allow: 4 and 8, 4 and 6, 8 and 4;
# xscalar: base with its first x staging, one 32-bit load and L2 round trip per pair per loop iteration;
# l3: base's launch with one 3-input LOP3 per dequantized register instead of an AND and an OR -- measured
# 1.08-1.19x faster than base on the H200, so base has used the same dequant since (l3 and base are now the
# same kernel); lean: l3 with two chunks per loop iteration, no register copies between chunks, no bound checks
# on full chunks, 5 CTAs/SM; lean4: lean at 4 CTAs/SM. lean / lean4 measured slower than l3 (0.61 / 0.57 of copy
# on gate_up against 0.70): their loops are shorter in SASS but they spill or run fewer warps;
# u14 / u10: the default dequant with 14 / 10 loads per chunk at 3 / 4 CTAs/SM -- at 4 splits of K = 3584 a thread
# issues all 14 of its weight loads before staging x: the small q/k/v and o GEMVs are latency chains;
# cp<U>s<S>: the default kernel with its weights and scales streamed through a cp.async shared-memory ring of S
# chunks of U tiles per warp, S - 1 chunks in flight without holding registers (measured slower on every shape);
# f16: the default kernel with its mma on fp16, what $EDGEPROF_W4_MMA=fp16 switches the default launch to;
# w2 / w1: l3's math in CTAs of 2 / 1 warps, so a one-wave grid spreads evenly over the SMs;
# the latency variants (csrc/w4a16_lat.cu; in the decoders' module too, with the fused norm): k2 / k4: 2 / 4 warps
# share one row block, each on a part of the CTA's K slice, their sums added in shared memory (a K split without
# split-K's global partials, ticket and second pass); cl (sm_90+): base's CTAs with the K splits of each row-block
# column as one thread-block cluster, their sums added through distributed shared memory (split-K at up to
# CL_MAX_SPLITS splits without the global workspace, fence and ticket; bitwise base's y at the same splits);
# cl6 / cl8: cl with the registers of 6 CTAs per SM, and with 4 loads per chunk at 8 CTAs per SM (tuning only);
# st / clst / clst6 (sm_90+, tuning only): base / cl with the first 12 (clst6: 6) tiles of each warp's K slice (a
# small GEMV's whole slice) bulk-copied into shared memory BEFORE the PDL wait, so a CTA that starts while the
# previous kernel drains streams them there (bitwise base's / cl's y);
# nomath / clnomath (DIAGNOSTIC_VARIANTS): not GEMVs. base / cl with each chunk's dequant and mma replaced by an XOR
# of its words, every load, the x staging and the split-K finish kept: timed beside the GEMV and a pure read of the
# same bytes (benchmarks/stream_pattern.py), they tell the math's share of a launch from the rest's; nomathx /
# clnomathx leave out the x staging and group sums too, nomathxs / clnomathxs the scale loads as well, nomathxsf /
# clnomathxsf the finish as well (the weight loads alone, a read in the GEMV's harness). y is wrong by
# design, so W4CudaLinear builds them only when asked with diagnostic=True (the tune), never from a plan;
# sc / clsc (in the decoders' module, w4a16_lat.cu): base / cl with each warp's group scales copied into shared memory in one cp.async burst
# before the PDL wait, instead of a 32-byte load per group in the loop (bitwise base's / cl's y); scf / clscf: the
# same with the fp16 mma (f16's dequant); scx / clscx (decoders' module): sc / clsc with the group sums of x added in
# the staging pass (shuffles within a warp) instead of a second pass over shared memory behind a CTA barrier (the
# sums in another order: checked against the reference, not bitwise against base); wk4 / wk6 / wk8 / wk10 (decoders'
# module, csrc/w4a16_wk.cu): one row block per CTA of 4 / 6 / 8 / 10 warps that split all of K among them and add their
# sums in shared memory, x streamed into shared memory chunk by chunk beside the weights: one K split, no split-K finish
# (down's ticket or cluster finish was ~2 us of 11.5 on an H200); clscxg (decoders' module, sm_90+): clscx whose
# cluster finish gathers the splits' sums into the cluster's rank 0 (st.async, counted on its mbarrier), so the other
# ranks leave as soon as they have sent instead of waiting through two cluster barriers (bitwise clscx's y);
# the timeline variants (TRACE_VARIANTS, tuning module): clscx / clscxg / scx / nomathxsf / clnomathxsf / clnomath /
# clscf whose CTAs also record when they started, passed the PDL wait, staged x, ended their loop and left
# (benchmarks/gemv_timeline.py); sk16 (both modules, csrc/w4a16_sk.cu): stream-K, one CTA of 16 warps per SM
# on an equal range of (row block, group) units, a row block cut between two CTAs finished by the head's CTA with the
# tail the other published at the start of its range (no ticket, no wait at the end; SK_VARIANTS).
# Variants measured slower and removed: "e2" (two chunks per warp in flight before the PDL wait; results/h200/
# 2026-11-28-latency r31); "pp" / "clpp" / "ppf" / "clppf" / "scpp" / "scppf" (a ping-pong weight loop, two chunks in
# flight; 2026-11-29-readgap r68, code in 105b469) and "pfw" / "scpfw" / "clscpfw" (the 6 tiles after the first chunk
# asked of L2 right after the PDL wait; r71, code in 29714e1); "sk8", "sk16u8", "sk16p", "sk16x", "sk16xu8" (stream-K
# forms) and "scxw" (scx finished by tagged words owned by split 0; 2026-11-29-streamk r137-r142, code in 552b418);
# "sk16d3" (two chunks per warp in flight; r144, code in d883c10))
VARIANTS = {"base": (0, 4, False), "w8": (1, 8, False), "persist": (2, 4, True), "tm": (3, 4, False),
            "tm8": (4, 8, False), "o8": (5, 4, False), "o6": (6, 4, False), "u8": (7, 4, False),
            "xscalar": (8, 4, False), "l3": (9, 4, False), "lean": (10, 4, False),
            "lean4": (11, 4, False), "u14": (12, 4, False), "u10": (13, 4, False),
            "cp4s4": (14, 4, False), "cp6s3": (15, 4, False), "cp4s6": (16, 4, False), "cp8s3": (17, 4, False),
            "cp2s8": (18, 4, False), "f16": (19, 4, False), "w2": (20, 2, False), "w1": (21, 1, False),
            "k2": (22, 2, False), "k4": (23, 1, False), "cl": (24, 4, False), "cl6": (25, 4, False),
            "cl8": (26, 4, False), "st": (27, 4, False), "clst": (28, 4, False), "clst6": (29, 4, False),
            "nomath": (30, 4, False), "clnomath": (31, 4, False), "nomathx": (32, 4, False),
            "clnomathx": (33, 4, False), "nomathxs": (34, 4, False), "clnomathxs": (35, 4, False),
            "sc": (36, 4, False), "clsc": (37, 4, False), "nomathxsf": (38, 4, False), "clnomathxsf": (39, 4, False),
            "scf": (40, 4, False), "clscf": (41, 4, False), "scx": (42, 4, False), "clscx": (43, 4, False),
            "wk4": (44, 1, False), "wk6": (45, 1, False), "wk8": (46, 1, False), "wk10": (47, 1, False),
            "scxa": (48, 4, False), "clscxg": (49, 4, False), "clscxt": (50, 4, False), "clscxgt": (51, 4, False),
            "scxt": (52, 4, False), "nomathxsft": (53, 4, False), "clnomathxsft": (54, 4, False),
            "clnomatht": (55, 4, False), "clscft": (56, 4, False), "sk16": (57, 4, False), "sk16n": (58, 4, False),
            "sk16nx": (59, 4, False)}
CLUSTER_VARIANTS = ("cl", "cl6", "cl8", "clst", "clst6", "clnomath", "clnomathx", "clnomathxs", "clsc",
                    "clnomathxsf", "clscf", "clscx", "clscxg", "clscxt", "clscxgt", "clnomathxsft", "clnomatht", "clscft")
DIAGNOSTIC_VARIANTS = ("nomath", "clnomath", "nomathx", "clnomathx", "nomathxs", "clnomathxs", "nomathxsf",
                       "clnomathxsf", "nomathxsft", "clnomathxsft", "clnomatht", "sk16n", "sk16nx")
# the timeline variants and the variant each one is (the same launch, its CTAs also recording their phases: 8 uint64
# per CTA after the split-K workspace, read by trace_of). benchmarks/gemv_timeline.py checks each one's y bitwise
# against its twin's before it reads a trace; the tune does not offer them.
TRACE_VARIANTS = {"clscxt": "clscx", "clscxgt": "clscxg", "scxt": "scx", "nomathxsft": "nomathxsf",
                  "clnomathxsft": "clnomathxsf", "clnomatht": "clnomath", "clscft": "clscf"}
TRACE_FIELDS = ("sm", "t_start", "t_waited", "t_staged", "t_looped", "t_left", "clock_start", "clock_left")
# the variants whose sums run in base's order, so their y is bitwise base's at the same splits (the tune checks it)
BITWISE_BASE_VARIANTS = tuple(v for v in CLUSTER_VARIANTS + ("st", "sc")
                              if v not in DIAGNOSTIC_VARIANTS + ("clscf", "clscx", "clscxg") + tuple(TRACE_VARIANTS))
# variants whose sums run in another variant's order (a different finish, the same additions): y is bitwise that
# twin's at the same splits, in every form (the tune and the kernel suite check it)
BITWISE_TWINS = {"clscxg": "clscx"}
# the variants that need sm_90+ (thread-block clusters, or the bulk copy engine)
SM90_VARIANTS = CLUSTER_VARIANTS + ("st",)
# the cluster variant's limit: one cluster holds all splits of a column (16: the non-portable cluster size)
CL_MAX_SPLITS = 16
# the variants the decoders' module has (load_extension(tune=False)); all but base are group 128 only, and all of
# them can fuse the input's residual add + RMSNorm (W4CudaLinear.fuses_norm)
DECODER_VARIANTS = ("base", "k2", "k4", "cl", "sc", "clsc", "scx", "clscx", "wk4", "wk6", "wk8", "wk10", "scxa",
                    "clscxg")
# the variants whose CTA's warps split all of K (one row block per CTA, csrc/w4a16_wk.cu): one K split only
WK_VARIANTS = ("wk4", "wk6", "wk8", "wk10")
# the variants that write an MLP's down input, silu(gate) * up, from its gate_up (csrc: finish_act): their weights are
# packed gate, gate, up, up row blocks per CTA (act_epilogue_order), and the variant named here runs their plain
# calls (y = W x, the rows put back in order) on those weights. One K split.
ACT_EPILOGUE_VARIANTS = {"scxa": "scx"}
# the stream-K variants (csrc/w4a16_sk.cu, both modules; no fused norm): warps per CTA and tiles per chunk. One CTA per
# SM (grid_x: fewer) takes an equal contiguous range of the (row block, group) units; a row block cut between two CTAs
# is finished by the one holding its head, with the tail the other CTA published at the START of its range. One K
# split. sk16n / sk16nx: sk16 without its math / nor its x staging (DIAGNOSTIC_VARIANTS). Measured on an H200
# (results/h200/2026-11-29-streamk): no faster than split-K on down. The forms measured slower still (sk8, sk16u8,
# sk16p, sk16x, sk16xu8) and scxw (split-K finished by tagged words owned by split 0) were removed; their code is in
# commit 552b418.
SK_VARIANTS = {"sk16": (16, 4), "sk16n": (16, 4), "sk16nx": (16, 4)}
SK_ROW_BLOCKS_MAX = 8  # row blocks one CTA's range may touch (csrc: kSkRowBlocksMax)
# the variants the decoders' module (load_extension(tune=False)) launches: the decoder variants and stream-K
MODULE_VARIANTS = DECODER_VARIANTS + tuple(SK_VARIANTS)
# the variants that run one K split only
ONE_SPLIT_VARIANTS = WK_VARIANTS + tuple(ACT_EPILOGUE_VARIANTS) + tuple(SK_VARIANTS)
VARIANT_GROUPS = {name: (GROUPS if name == "base" else (128,)) for name in VARIANTS}
# the weight layout each variant reads: "tile" (to_tile_major) for tm / tm8, else "rowblock" (pack_w4)
VARIANT_LAYOUT = {name: ("tile" if name.startswith("tm") else "rowblock") for name in VARIANTS}


@dataclass
class W4Packed:
    qw: torch.Tensor  # int32 [N/16, K/64, 32, 4]
    sz: torch.Tensor  # bf16 [N/16, K/g, 8, 2 | 4]
    n: int
    k: int
    group: int
    asym: bool
    layout: str = "rowblock"  # "tile": qw [K/64, N/16, 32, 4], sz [K/g, N/16, 8, 2 | 4] (to_tile_major)

    @property
    def nbytes(self) -> int:
        return self.qw.numel() * 4 + self.sz.numel() * 2


def supported(n: int, k: int, group: int) -> str | None:
    """None when the kernel takes this shape, else why not (the caller falls back)."""
    if group not in GROUPS:
        return f"group {group} not in {GROUPS}"
    if n % 16 or k % 64 or k % group:
        return f"shape {n}x{k}: needs out % 16 == 0, in % 64 == 0 and in % group == 0"
    return None


def pack_w4(q: torch.Tensor, z: torch.Tensor, s: torch.Tensor, group: int) -> W4Packed:
    """q [N, K] ints 0..15, z [N, K/g] ints, s [N, K/g] float (the quantizer's output) -> W4Packed.
    The one place that knows the kernel layout: a new quantizer only has to give (q, z, s)."""
    n, k = q.shape
    why = supported(n, k, group)
    if why:
        raise ValueError(f"edgeprof W4 kernel: {why}")
    nb, t = n // 16, k // 64
    # [nb, rh, gq, t, j, kh, c, e] -> [nb, t, gq, c, j, e, kh, rh]; the last three make nibble p
    q8 = q.to(torch.int64).reshape(nb, 2, 8, t, 4, 2, 4, 2).permute(0, 3, 2, 6, 4, 7, 5, 1)
    q8 = q8.reshape(nb, t, 32, 4, 8)
    shifts = torch.arange(0, 32, 4, device=q.device, dtype=torch.int64)
    words = (q8 << shifts).sum(dim=-1)  # [nb, t, 32, 4], nibbles never overlap so sum == or
    words = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)
    ng = k // group
    s16 = s.to(torch.bfloat16).reshape(nb, 2, 8, ng).permute(0, 3, 2, 1)  # [nb, ng, 8, rh]
    asym = not bool((z == 8).all())
    if asym:
        zz = (z.to(torch.float32) + 128).to(torch.bfloat16).reshape(nb, 2, 8, ng).permute(0, 3, 2, 1)
        sz = torch.cat([s16, zz], dim=-1)  # [nb, ng, 8, 4]
    else:
        sz = s16
    return W4Packed(words.contiguous(), sz.contiguous(), n, k, group, asym)


def to_tile_major(p: W4Packed) -> W4Packed:
    """The same tiles in K-major order (the "tm" variants): qw [N/16, K/64, 32, 4] -> [K/64, N/16, 32, 4]
    and sz [N/16, K/g, 8, c] -> [K/g, N/16, 8, c]. Why: in the row-block layout the warps of a launch
    read N/16 streams that start K/2 * 16 bytes apart; tile-major puts what they read together side by side."""
    if p.layout == "tile":
        return p
    return W4Packed(p.qw.transpose(0, 1).contiguous(), p.sz.transpose(0, 1).contiguous(), p.n, p.k, p.group, p.asym,
                    "tile")


def to_row_block(p: W4Packed) -> W4Packed:
    """Inverse of to_tile_major (pack_w4's layout)."""
    if p.layout == "rowblock":
        return p
    return W4Packed(p.qw.transpose(0, 1).contiguous(), p.sz.transpose(0, 1).contiguous(), p.n, p.k, p.group, p.asym)


def unpack_w4(p: W4Packed) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of pack_w4: (q int32 [N, K], z int32 [N, K/g], s float32 [N, K/g]) (s as bf16 values)."""
    p = to_row_block(p)
    nb, t, ng = p.n // 16, p.k // 64, p.k // p.group
    w = p.qw.to(torch.int64) & 0xFFFFFFFF
    shifts = torch.arange(0, 32, 4, device=w.device, dtype=torch.int64)
    nib = (w[..., None] >> shifts) & 0xF  # [nb, t, 32, 4, 8]
    nib = nib.reshape(nb, t, 8, 4, 4, 2, 2, 2)  # [nb, t, gq, c, j, e, kh, rh]
    q = nib.permute(0, 7, 2, 1, 4, 6, 3, 5).reshape(p.n, p.k)  # -> [nb, rh, gq, t, j, kh, c, e]
    s = p.sz[..., :2].float().permute(0, 3, 2, 1).reshape(p.n, ng)
    z = p.sz[..., 2:].float().permute(0, 3, 2, 1).reshape(p.n, ng) - 128 if p.asym else torch.full_like(s, 8)
    return q.to(torch.int32), z.to(torch.int32), s


# ---------------------------------------------------------------- build
_BUILD_ERROR: list[str] = []


_LOADED: dict[bool, object] = {}  # load_extension's modules by `tune` (None where the build failed)


def load_extension(tune: bool = False):
    """The compiled module, or None (reason in `build_error()`). Built once per process; torch
    caches the build under ~/.cache/torch_extensions, keyed by the sources.

    tune=False (what decoders use): the default launches and the latency variants (DECODER_VARIANTS), the fused norm
    and MLP, the bf16 GEMV. The ~80 tuning variants (w4a16_tune.cu) are left out: a decoder never launches them, and
    they were half of the first-use build. tune=True: a second module with everything (W4CudaLinear takes it for a
    variant not in DECODER_VARIANTS; --suite tune)."""
    if tune not in _LOADED:
        _LOADED[tune] = _build(tune)
    return _LOADED[tune]


# The decoders' module (load_extension(tune=False)) and what the complete module adds. Every .cu here compiles for
# sm_80 and sm_89 as well as sm_90 (tests/fast/test_csrc_archs.py): the JIT build compiles them all for the GPU it
# runs on, and one translation unit that fails there (attn_decode.cu did, through a cluster type, until the
# twenty-second pass) takes the whole module down on an A100, L4, L40S or Jetson Orin: every W4 / bf16 GEMV of
# edgeprof's own then falls back.
MODULE_SOURCES = ("w4a16_binding.cpp", "w4a16_gemv.cu", "w4a16_lat.cu", "w4a16_wk.cu", "w4a16_sk.cu", "bf16_gemv.cu",
                  "attn_decode.cu")
TUNE_SOURCES = ("w4a16_tune.cu",)


def cuda_flags(tune: bool) -> list[str]:
    """nvcc flags of the module's .cu files (torch's own flags come on top)."""
    return ["-O3", "-std=c++17"] + ([] if tune else ["-DEDGEPROF_W4_NO_TUNE"])


def _build(tune: bool):
    reason = _unavailable_reason()
    if reason:
        _BUILD_ERROR.append(reason)
        return None
    try:
        from torch.utils.cpp_extension import load

        major, minor = torch.cuda.get_device_capability()
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", f"{major}.{minor}")
        names = MODULE_SOURCES + (TUNE_SOURCES if tune else ())
        ext = load(name=f"edgeprof_gemv{'_tune' if tune else ''}_{_csrc_digest()}",
                   sources=[str(CSRC / n) for n in names], extra_cuda_cflags=cuda_flags(tune),
                   extra_cflags=["-O3"], extra_include_paths=[str(CSRC)], verbose=False)
        ext.set_pdl(False)  # plain launches until a decoder asks for PDL (use_pdl)
        ext.set_f16(mma_wanted() == "fp16")  # the load checks run the mma a decoder will use (FastModel sets its own)
        _set_norm(ext, norm_wanted())
        return ext
    except Exception as exc:  # no compiler, wrong toolkit, ...: the decoder falls back to tinygemm
        _BUILD_ERROR.append(build_failure(exc))
        return None


def _loaded() -> list:
    """The modules built so far in this process (the switches below are per module: set them on each)."""
    return [ext for ext in _LOADED.values() if ext is not None]


def _csrc_digest() -> str:
    """8 hex digits over every file in csrc/: torch keys its build cache on the listed sources only, so
    an edited header (gemv_common.cuh) would otherwise reuse a stale build."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(CSRC.iterdir()):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:8]


def use_pdl(on: bool, prefetch_tiles: int = 0, down: bool = True) -> None:
    """Programmatic dependent launch on or off for the GEMVs launched (or graph-captured) from now on, the
    512-byte weight tiles per warp each prefetches into L2 before its wait, and whether the down projection (the
    W4 launch with SiLU*up fused) takes part: the decoder sets its own choice (kernels.pdl_wanted,
    pdl_prefetch_tiles, pdl_down_wanted) before every step. A no-op where the extension was never loaded:
    nothing of it runs then."""
    for ext in _loaded():
        ext.set_pdl(bool(on), int(prefetch_tiles), bool(down))


MMA_ENV = "EDGEPROF_W4_MMA"
MMAS = ("bf16", "fp16")
# The default launch's mma type. fp16 dequantizes with fewer instructions (csrc: dq_word_f16) and stages x as fp16
# with a power-of-two scale per CTA; bf16 is the kernel measured through issue 12's fourth pass.
MMA_DEFAULT = "bf16"


def env_choice(env: str, choices: tuple[str, ...], default: str) -> str:
    """$env if it is one of `choices`, `default` where it is unset; a ValueError naming the variable otherwise."""
    val = os.environ.get(env, "").strip()
    if val and val not in choices:
        raise ValueError(f"{env}: {val!r} is not one of {', '.join(choices)}; unset it for the default ({default})")
    return val or default


def mma_wanted() -> str:
    """The default W4 launch's mma type: $EDGEPROF_W4_MMA (bf16 or fp16); unset: MMA_DEFAULT."""
    return env_choice(MMA_ENV, MMAS, MMA_DEFAULT)


def use_mma(mma: str) -> None:
    """The default W4 launches (and graph captures) from now on run their mma on `mma` (MMAS); a decoder sets its
    own choice before every step, as use_pdl. A no-op where the extension was never loaded."""
    if mma not in MMAS:
        raise ValueError(f"mma: {mma!r} is not one of {', '.join(MMAS)}")
    for ext in _loaded():
        ext.set_f16(mma == "fp16")


NORM_ENV = "EDGEPROF_W4_NORM"
NORMS = ("loop", "batched", "deferred")
# The fused norm in the int4 GEMVs that stage rmsnorm(x + res) * w:
# - "loop": every CTA first computes rstd over all K, one 16-byte vector of x and res per L2 round trip (as measured
#   through issue 12's sixth pass), then stages its slice;
# - "batched": the same with four vectors in flight per thread, the same values. The default launch only: the
#   decoder variants always loop (batched measured no gain for them, results/h200/2026-11-29-groupsums r79);
# - "deferred" (the default): the fused-norm launches of scx at one split, scxa (gate_up in the H200 plan) and clscx
#   (q/k/v: a cluster's K splits add their sums of h^2 in the cluster finish) stage bf16((x + res) * w) without a
#   pass for rstd first, add the squares in the same pass and scale their rows by rstd at the end. One product
#   rounded instead of add_rmsnorm's two, so not bitwise "loop"; checked against its own float64 math. Every other
#   launch loops. results/h200/2026-11-29-scxa: on gate_up alone (r90) the int4 step's GPU time -1.4% at ctx 2048
#   and -2.1% at 16384 against "loop", interleaved three times; with q/k/v too (r93) -4.6% at ctx 2048.
NORM_DEFAULT = "deferred"
# The variants whose fused-norm launch takes the deferred norm: those that add the group sums in the staging pass
# (XSUM), at one K split or as a cluster, whose finish adds the splits' sums of h^2 (w4a16_lat.cu: lat_launch_t,
# act_epilogue_launch_t). A split-K launch through global partials would scale its rows by one slice's rstd.
DEFERRED_NORM_VARIANTS = ("scx", "clscx", "scxa", "clscxg")


def defers_norm(variant: str, splits: int) -> bool:
    """Whether a launch of `variant` at `splits` K splits defers its fused norm when the norm is "deferred"."""
    return variant in DEFERRED_NORM_VARIANTS and (splits == 1 or variant in CLUSTER_VARIANTS)


def norm_wanted() -> str:
    """$EDGEPROF_W4_NORM (loop, batched or deferred); unset: NORM_DEFAULT."""
    return env_choice(NORM_ENV, NORMS, NORM_DEFAULT)


def use_norm(norm: str) -> None:
    """The fused-norm W4 launches (and graph captures) from now on load as `norm` (NORMS); a decoder sets its own
    choice before every step, as use_mma. A no-op where the extension was never loaded."""
    if norm not in NORMS:
        raise ValueError(f"norm: {norm!r} is not one of {', '.join(NORMS)}")
    for ext in _loaded():
        _set_norm(ext, norm)


def _set_norm(ext, norm: str) -> None:
    ext.set_norm_batch(norm == "batched")
    ext.set_norm_deferred(norm == "deferred")


def build_failure(exc: BaseException, limit: int = 400) -> str:
    """The record's reason for a failed JIT build: the compiler's first error lines (which file, which line, what),
    not the end of ninja's log, which only says that a subcommand failed (r148: the record named
    w4a16_binding.cpp's command line while attn_decode.cu had failed). The message's tail where no line says error."""
    text = str(exc)
    errors = [ln.strip() for ln in text.splitlines() if " error" in ln.lower() or ln.lower().startswith("error")]
    errors = [ln for ln in errors if not ln.lower().startswith(("ninja:", "1 error detected", "subprocess"))] or errors
    detail = " | ".join(dict.fromkeys(errors))[:limit] if errors else text[-limit:]
    return f"build failed: {type(exc).__name__}: {detail}"


def build_error() -> str | None:
    return _BUILD_ERROR[-1] if _BUILD_ERROR else None


def _unavailable_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    if torch.cuda.get_device_capability() < (8, 0):
        return f"GPU sm_{''.join(map(str, torch.cuda.get_device_capability()))} lacks bf16 mma (needs sm_80+)"
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is None:
        return "no CUDA toolkit (nvcc) found"
    return None


# ---------------------------------------------------------------- the layer
def aligned16(t: torch.Tensor) -> torch.Tensor:
    """`t` contiguous and 16-byte aligned (the GEMV kernels read their vectors with 16-byte loads); a copy
    only when it is not already."""
    t = t.contiguous()
    return t if t.data_ptr() % 16 == 0 else t.clone()


def choose_splits(n: int, k: int, group: int, sms: int) -> tuple[int, int]:
    """(splits, tiles per split) so that about TARGET_CTAS_PER_SM CTAs per SM stream weights.
    Splits start on group boundaries; a slice keeps >= 4 tiles (256 inputs) and its x slice
    fits 40 KB of shared memory."""
    tiles, tpg = k // 64, max(1, group // 64)
    ctas = -(-(n // 16) // 4)
    want = max(1, -(-TARGET_CTAS_PER_SM * sms // ctas), -(-tiles // 320))
    tps = max(4, -(-tiles // want))
    tps = -(-tps // tpg) * tpg
    return -(-tiles // tps), tps


def split_plan(k: int, group: int, splits: int) -> tuple[int, int]:
    """(splits, tiles per split) for a requested number of K splits: slices start on group
    boundaries and none is empty, so the result can have FEWER splits than asked (K = 3584 has
    56 tiles: 8 splits of 7 tiles would cut a 2-tile group, so it becomes 7 splits of 8)."""
    if splits < 1:
        raise ValueError(f"splits: {splits} must be >= 1")
    tiles, tpg = k // 64, max(1, group // 64)
    tps = -(-tiles // splits)
    tps = -(-tps // tpg) * tpg
    if tps > MAX_SLICE_TILES:
        raise ValueError(f"splits: {splits} leaves {tps} tiles per split for in={k}; the x slice must fit "
                         f"{MAX_SLICE_TILES} tiles of shared memory, use more splits")
    return -(-tiles // tps), tps


def wk_plan(k: int, splits: int | None, variant: str) -> tuple[int, int]:
    """(1, all K tiles): a wk variant's CTA splits K among its own warps, and a stream-K variant (SK_VARIANTS) splits
    it among its CTAs' ranges, so either launch has one K split; its x is the whole of K in shared memory (2 bytes per
    input, no MAX_SLICE_TILES bound below the GPU's per-CTA limit)."""
    if splits not in (None, 1):
        raise ValueError(f"splits: variant {variant!r} runs one K split (it splits K inside its launch), not {splits}; "
                         f"leave splits unset or use a split-K variant such as 'clscx'")
    return 1, k // 64


def sk_fits(n: int, k: int, group: int, ctas: int, variant: str) -> bool:
    """Whether a stream-K variant's launch of `ctas` CTAs fits the shape (csrc/w4a16_sk.cu: sk_fits): whole chunks per
    row block, every CTA's range at least a row block long (so a row block is cut between at most two CTAs) and at
    most SK_ROW_BLOCKS_MAX - 1 row blocks long. Pure."""
    chunk_groups = SK_VARIANTS[variant][1] * 64 // group
    if group != 128 or n % 16 or k % group or ctas < 1 or chunk_groups < 1:
        return False
    ng = k // group
    if ng % chunk_groups:
        return False
    chunks = (n // 16) * ng // chunk_groups
    shortest, longest = chunks // ctas * chunk_groups, -(-chunks // ctas) * chunk_groups
    return shortest >= ng and -(-longest // ng) + 1 <= SK_ROW_BLOCKS_MAX


def sk_ranges(n: int, k: int, group: int, ctas: int, variant: str) -> list[tuple[int, int]]:
    """Each CTA's range of (row block, group) units [lo, hi), row-block order, as the stream-K kernel cuts them. Pure."""
    chunk_groups = SK_VARIANTS[variant][1] * 64 // group
    chunks = (n // 16) * (k // group) // chunk_groups
    return [(i * chunks // ctas * chunk_groups, (i + 1) * chunks // ctas * chunk_groups) for i in range(ctas)]


def act_epilogue_order(n: int) -> torch.Tensor:
    """The row blocks of a gate_up [n = 2I, H] in the act epilogue's packed order, new -> old: CTA j holds gate blocks
    2j, 2j + 1 and up blocks I/16 + 2j, I/16 + 2j + 1, i.e. gate rows 32j.. and the same 32 up rows, so it can write
    silu(gate) * up for MLP inputs 32j .. 32j + 31 (csrc: finish_act)."""
    if n % 64:
        raise ValueError(f"out: {n} rows cannot be packed for the SiLU*up epilogue (a multiple of 64 is needed: each "
                         f"CTA takes 32 gate and 32 up rows); use variant 'scx'")
    j, half = torch.arange(n // 64), n // 32
    return torch.stack([2 * j, 2 * j + 1, half + 2 * j, half + 2 * j + 1], dim=1).reshape(-1)


def launch_ctas(n: int, splits: int, variant: str = "base", grid_x: int = 0) -> int:
    """CTAs one call launches (grid.x * grid.y), as csrc/w4a16_gemv.cu computes its grid."""
    _, warps, persist = VARIANTS[variant]
    nbx = -(-(n // 16) // warps)
    gx = min(grid_x, nbx) if persist and grid_x > 0 else nbx
    return gx * splits


def tune_configs(n: int, k: int, group: int, sms: int, splits: tuple[int, ...] = (1, 2, 3, 4, 6, 8),
                 variants: tuple[str, ...] = ("base", "w8", "persist"),
                 ctas_per_sm: tuple[int, ...] = (1, 2, 3, 4)) -> list[dict]:
    """Launch configurations to time for one shape: every requested split count (as split_plan
    makes it, duplicates dropped, plus the default choose_splits one) for each variant; the
    persistent variant at grids of `ctas_per_sm` CTAs per SM in all and at ceil(columns / m) CTAs
    per split (m = 2, 3, 4: every CTA walks exactly m columns); a wk variant at its one split (wk_plan), whatever
    `splits` asks. Pure: no GPU needed."""
    default = choose_splits(n, k, group, sms)
    plans: list[tuple[int, int]] = []
    for s in splits:
        try:
            plan = split_plan(k, group, s)
        except ValueError:  # x slice too large for shared memory at this few splits: not a config
            continue
        if plan not in plans:
            plans.append(plan)
    if default not in plans:
        plans.append(default)
    plans.sort()
    configs = []
    for variant in variants:
        if group not in VARIANT_GROUPS[variant]:
            continue
        _, warps, persist = VARIANTS[variant]
        nbx = -(-(n // 16) // warps)
        if variant in ACT_EPILOGUE_VARIANTS:  # its output is not y = W x: the plan A/B of the step times it
            continue
        if variant in SK_VARIANTS:  # one split, one CTA per SM
            if sk_fits(n, k, group, sms, variant):
                configs.append({"variant": variant, "splits": 1, "tiles_per_split": k // 64, "grid_x": sms,
                                "ctas": sms, "default": False})
            continue
        for sp, tps in (plans if variant not in WK_VARIANTS else [wk_plan(k, None, variant)]):
            if variant in CLUSTER_VARIANTS and not 1 < sp <= CL_MAX_SPLITS:  # 1 split: no cluster; at most 16
                continue
            grids = [0]
            if persist:  # grid_x < nbx only: at nbx the persistent kernel is the one-CTA-per-column launch
                cand = [max(1, sms * b // sp) for b in ctas_per_sm] + [-(-nbx // m) for m in (2, 3, 4)]
                grids = sorted({g for g in cand if g < nbx})
            for gx in grids:
                configs.append({"variant": variant, "splits": sp, "tiles_per_split": tps, "grid_x": gx,
                                "ctas": launch_ctas(n, sp, variant, gx),
                                "default": variant == "base" and (sp, tps) == default})
    return configs


PLAN_ENV = "EDGEPROF_W4_PLAN"
NO_PLAN = "none"  # $EDGEPROF_W4_PLAN=none: ignore the card's shipped plan (every shape takes the default launch)
DEFAULT_ENV = "EDGEPROF_W4_DEFAULT"
# What a shape gets where no plan names it (another card, another model):
# - "rule" (the default): rule_launch, the H200 plans' choices written as rules of the shape, the card's SM count and
#   its compute capability;
# - "rule-sm80": the same rule as an sm_80 / sm_89 card (an A100, an L4) gets it: no cluster launches. An A/B on an
#   sm_90 card, not a claim about those cards;
# - "base": the launch every such shape got until the rule (base at choose_splits).
DEFAULT_LAUNCHES = ("rule", "rule-sm80", "base")
DEFAULT_LAUNCH = "rule"
# the roles a decoder builds its projections for (weights.from_hf); the rule reads "o" and "gate_up", the cluster fit
# "qkv" (its launch fuses the norm)
ROLES = ("qkv", "o", "gate_up", "down")


def default_wanted() -> str:
    """$EDGEPROF_W4_DEFAULT (DEFAULT_LAUNCHES); unset: DEFAULT_LAUNCH."""
    return env_choice(DEFAULT_ENV, DEFAULT_LAUNCHES, DEFAULT_LAUNCH)


def rule_launch(k: int, n: int, group: int, sms: int, cc: tuple[int, int], role: str | None = None) -> dict:
    """The launch {variant, splits} of a [n, k] int4 projection that no measured plan names. Pure: the H200's plan
    (data/gemv_plans.yaml; results/h200/2026-11-29-*) as rules, so another model's shapes and another card get the
    same kinds of launch at splits from choose_splits (which gives the H200 plan's own splits for Qwen2.5-7B: q/k/v 7,
    down 10). {} where the variants do not apply (group != 128): base at choose_splits.
    - gate_up (role) with a CTA or more per SM at one split: scxa, SiLU*up in its epilogue (scxa r88: -2.5% step);
    - any other shape that choose_splits leaves at one split: scx (the group sums of x while x is staged; r72, r73);
    - o (role; no fused norm) when one row block per CTA fills 1 to 2 CTAs per SM in one wave, and k <= n: wk6, its
      warps splitting K, no split-K finish (wk r81-r84: o 3.67 against 4.51 us, the step -2% to -7%);
    - else split-K: on sm_90+ clscxg at up to CL_MAX_SPLITS splits (the splits add through the cluster, rank 0
      gathers; gather r113: -2% step), on older cards scx with the split-K ticket.
    The caller still checks that a cluster launch fits the GPU in one wave (cluster_waves)."""
    if group != 128:
        return {}
    splits, _ = choose_splits(n, k, group, sms)
    ctas = -(-(n // 16) // VARIANTS["scx"][1])  # one split: CTAs of 4 row blocks
    if role == "gate_up" and n % 64 == 0 and ctas >= sms:
        return {"variant": "scxa"}
    if splits == 1:
        return {"variant": "scx", "splits": 1}
    if role == "o" and k <= n and sms <= n // 16 <= 2 * sms:
        return {"variant": "wk6"}
    if cc >= (9, 0) and splits <= CL_MAX_SPLITS:
        return {"variant": "clscxg", "splits": splits}
    return {"variant": "scx", "splits": splits}


def one_wave_splits(splits: int, fits) -> int | None:
    """The K splits of a cluster launch that rule_launch asked at `splits`: `splits`, else one fewer, the first whose
    clusters the GPU holds at once (`fits(s)`); None where neither does (the launch then runs as scx at `splits`).
    A second wave of clusters measured 20-25% slower (cluster r51). One fewer, not any fewer: on Llama-3.1-8B's down
    (H200, r127) clscxg s8 was 1.1% faster in the step than scx s9 (64 clusters of 9 need two waves), s7 0.9% slower."""
    for s in (splits, splits - 1):
        if s >= 2 and fits(s):
            return s
    return None


def default_launch(k: int, n: int, group: int, device, role: str | None = None, ext=None) -> tuple[dict, str]:
    """(launch kwargs for W4CudaLinear, where it came from: "rule", "rule-sm80" or "base") of a shape no plan names,
    as $EDGEPROF_W4_DEFAULT asks. A cluster launch takes the splits one_wave_splits gives (cluster_waves on this
    GPU), else runs as scx."""
    how = default_wanted()
    if how == "base" or device.type != "cuda":
        return {}, "base"
    props = torch.cuda.get_device_properties(device)
    cc = (props.major, props.minor) if how == "rule" else min((props.major, props.minor), (8, 9))
    launch = rule_launch(k, n, group, props.multi_processor_count, cc, role)
    if not launch:  # the rule leaves this shape to base (group != 128)
        return {}, "base"
    if launch["variant"] in CLUSTER_VARIANTS:
        def fits(s: int) -> bool:  # down: a plain x (gate_up's scxa wrote silu(gate) * up)
            return cluster_waves(n, s, split_plan(k, group, s)[1], norm=role == "qkv", ext=ext)["cluster_waves"] == 1

        s = one_wave_splits(launch["splits"], fits)
        launch = {"variant": "scx", "splits": launch["splits"]} if s is None else {**launch, "splits": s}
    return launch, how


def gate_up_writes_act(k_down: int, n_down: int, group: int, device, ext=None) -> bool:
    """Whether the decoder's gate_up feeding a down [n_down, k_down] (gate_up [2 k_down, n_down]) runs an act-epilogue
    variant, i.e. writes silu(gate) * up so that down stages a plain x: its plan entry, else its default launch."""
    return plan_launch(n_down, 2 * k_down, group, device, "gate_up", ext)[0].get("variant") in ACT_EPILOGUE_VARIANTS


def plan_launch(k: int, n: int, group: int, device, role: str | None = None, ext=None) -> tuple[dict, str]:
    """(launch kwargs for W4CudaLinear, "plan" | "rule" | "rule-sm80" | "base") of one projection: the plan's entry
    for its shape, else default_launch. A wk down from the plan stands only behind a gate_up that writes silu(gate) * up:
    otherwise each of its CTAs would compute SiLU*up over all of K (2.5x slower per launch, wk r87), so it takes the
    default launch instead."""
    launch = launch_plan().get((k, n)) if group == 128 else None
    if launch is not None and role == "down" and launch["variant"] in WK_VARIANTS \
            and not gate_up_writes_act(k, n, group, device, ext):
        launch = None
    if launch is None:
        return default_launch(k, n, group, device, role, ext)
    return launch, "plan"


def launch_plan(path: str | os.PathLike | None = None) -> dict[tuple[int, int], dict]:
    """Per-shape launch {(K, N): {"variant", "splits"}} from a `int4_gemv.py --suite tune` JSON (its
    `best` configs, all checked before they were timed), named by `path` or $EDGEPROF_W4_PLAN; without
    either, the card's measured plan shipped in data/gemv_plans.yaml (`w4a16`), or {} (every shape then
    takes the default launch, default_launch); "none": {}, the shipped plan ignored. Group 128 only, as the variants.
    Read once per file version (the decoder asks for every projection it builds)."""
    path = path or os.environ.get(PLAN_ENV)
    if not path:
        return shipped_plan(torch.cuda.get_device_name()) if torch.cuda.is_available() else {}
    if str(path) == NO_PLAN:
        return {}
    try:
        st = os.stat(path)
        return _read_plan(str(path), st.st_mtime_ns, st.st_size)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{PLAN_ENV}: {path} is not a readable `int4_gemv.py --suite tune` tune.json with k and n "
                         f"in its best configs ({type(exc).__name__}: {exc}); unset it for the default launch") from exc


def shipped_plan(card: str) -> dict[tuple[int, int], dict]:
    from edgeprof.fast.plans import card_entries

    return {(int(e["k"]), int(e["n"])): {"variant": str(e["variant"]), "splits": int(e["splits"])}
            for e in card_entries(card, "w4a16")}


@functools.lru_cache(maxsize=8)
def _read_plan(path: str, _mtime_ns: int, _size: int) -> dict[tuple[int, int], dict]:
    import json

    rec = json.loads(Path(path).read_text())
    best = [b["best"] for b in rec["best"].values() if b.get("best")]
    return {(int(b["k"]), int(b["n"])): {"variant": b["variant"], "splits": int(b["splits"])} for b in best}


def cluster_waves(n: int, splits: int, tps: int, act: bool = False, norm: bool = False, ext=None) -> dict:
    """The cl launch of N outputs at splits x tps: its clusters (one per row-block column) against those the GPU holds
    at once (cudaOccupancyMaxActiveClusters; a cluster's CTAs share one GPC), {"clusters", "clusters_at_once",
    "cluster_waves"}. sm_90+."""
    fit = (ext or load_extension()).cluster_fit(False, act, norm, n, splits, tps)
    clusters = -(-(n // 16) // VARIANTS["cl"][1])
    return {"clusters": clusters, "clusters_at_once": fit, "cluster_waves": -(-clusters // fit) if fit else None}


def _check_sm90_launch(packed: W4Packed, splits: int | None, variant: str) -> None:
    """An sm_90+ variant's launch limits, checked before anything is built: sm_90+ (clusters, the bulk copy engine),
    and for a cluster variant, one cluster holds a column's splits."""
    dev = packed.qw.device
    if dev.type == "cuda" and torch.cuda.get_device_capability(dev) < (9, 0):
        need = "thread-block clusters" if variant in CLUSTER_VARIANTS else "the bulk copy engine"
        raise ValueError(f"variant: {variant!r} needs {need} (sm_90+), this GPU is sm_"
                         f"{''.join(map(str, torch.cuda.get_device_capability(dev)))}; use variant='base'")
    if variant in CLUSTER_VARIANTS and splits is not None and not 1 <= splits <= CL_MAX_SPLITS:
        raise ValueError(f"splits: variant {variant!r} runs 1 to {CL_MAX_SPLITS} K splits (one cluster per "
                         f"row-block column), not {splits}; use variant='base' for more")


class W4CudaLinear:
    """y [1, N] = x [1, K] @ W^T (+ bias); `fused_silu(gate_up [1, 2K])` applies silu(g) * u first.

    Launch shape (tuning; the defaults are the measured default path): `splits` overrides
    choose_splits (through split_plan), `variant` picks a compiled variant of VARIANTS, `grid_x`
    is the persistent variant's CTAs per split (0: one per 64-row column, as base)."""

    kernel_name = "edgeprof-w4a16-cuda"

    def __init__(self, packed: W4Packed, bias: torch.Tensor | None = None, ext=None, *, splits: int | None = None,
                 variant: str = "base", grid_x: int = 0, diagnostic: bool = False):
        if variant not in VARIANTS:
            raise ValueError(f"variant: {variant!r} is not one of {sorted(VARIANTS)}")
        if variant in DIAGNOSTIC_VARIANTS and not diagnostic:
            raise ValueError(f"variant: {variant!r} is a timing diagnostic whose output is wrong by design (the GEMV "
                             f"without its math); pick a GEMV variant, e.g. 'base' or 'cl'")
        if packed.group not in VARIANT_GROUPS[variant]:
            raise ValueError(f"variant: {variant!r} is compiled for group {VARIANT_GROUPS[variant]} only, "
                             f"not {packed.group}; use variant='base'")
        if variant in SM90_VARIANTS:
            _check_sm90_launch(packed, splits, variant)  # before the build; the planned splits again below
        if variant in WK_VARIANTS or variant in SK_VARIANTS:
            wk_plan(packed.k, splits, variant)  # before the build: one K split
        if variant in ACT_EPILOGUE_VARIANTS:
            act_epilogue_order(packed.n)  # before the build: the row count must allow it
            if splits not in (None, 1):
                raise ValueError(f"splits: variant {variant!r} runs one K split (its epilogue needs whole rows), not "
                                 f"{splits}; leave splits unset")
        # the layout this variant reads (one copy: callers that time several variants pass the right one)
        packed = to_tile_major(packed) if VARIANT_LAYOUT[variant] == "tile" else to_row_block(packed)
        # the act epilogue's packed order: packed row r is original row _rows[r]; original row i is packed row
        # _unperm[i] (both None: the original order)
        self._rows = self._unperm = None
        if variant in ACT_EPILOGUE_VARIANTS:
            packed, self._rows, self._unperm = self._act_epilogue_pack(packed)
        self.p, self.ext = packed, ext or load_extension(tune=variant not in MODULE_VARIANTS)
        if self.ext is None:
            raise RuntimeError(f"edgeprof W4 kernel unavailable: {build_error()}")
        self.bias = bias
        dev = packed.qw.device
        self.variant, self.variant_id, self.grid_x = variant, VARIANTS[variant][0], max(0, int(grid_x))
        self.act_variant_id = None  # the launch that writes silu(gate) * up (fused_norm_silu)
        if variant in ACT_EPILOGUE_VARIANTS:
            self.act_variant_id, self.variant_id = self.variant_id, VARIANTS[ACT_EPILOGUE_VARIANTS[variant]][0]
        if variant in ACT_EPILOGUE_VARIANTS:
            self.splits, self.tps = split_plan(packed.k, packed.group, 1)
        elif variant in WK_VARIANTS or variant in SK_VARIANTS:
            self.splits, self.tps = wk_plan(packed.k, splits, variant)
        elif splits is None:
            sms = torch.cuda.get_device_properties(dev).multi_processor_count
            self.splits, self.tps = choose_splits(packed.n, packed.k, packed.group, sms)
        else:
            self.splits, self.tps = split_plan(packed.k, packed.group, splits)
        if variant in SM90_VARIANTS:
            _check_sm90_launch(packed, self.splits, variant)
        # split-K workspace of this layer: partial sums and the per-CTA-column tickets (start at 0,
        # the last CTA resets them), so graph replays and layers never share state
        # (a timeline variant: and its CTAs' records after it, TRACE_FIELDS as 8 uint64 per CTA)
        trace = 2 * len(TRACE_FIELDS) * launch_ctas(packed.n, self.splits, variant) if variant in TRACE_VARIANTS else 0
        self.partial = torch.empty((self.splits * packed.n if self.splits > 1 or trace else 0) + trace, device=dev,
                                   dtype=torch.float32)
        if variant in SK_VARIANTS:  # the published tails: 16 uint64 per row block, zeros (the owner resets them)
            ctas = self.grid_x or torch.cuda.get_device_properties(dev).multi_processor_count
            if not sk_fits(packed.n, packed.k, packed.group, ctas, variant):
                raise ValueError(f"variant: {variant!r} does not fit out={packed.n} in={packed.k} on {ctas} CTAs "
                                 f"(each CTA's range must hold a whole row block); use 'clscx' or 'scx'")
            self.partial = torch.zeros(2 * packed.n, device=dev, dtype=torch.float32)
        # one ticket per CTA column of VARIANTS[variant]'s row blocks per CTA
        self.counters = torch.zeros(-(-(packed.n // 16) // VARIANTS[variant][1]), device=dev, dtype=torch.int32)
        self.n_out = packed.n
        self._no_res = torch.empty(0, device=dev, dtype=torch.bfloat16)  # fused_norm's "no residual" (first layer)

    @staticmethod
    def _act_epilogue_pack(packed: W4Packed) -> tuple[W4Packed, torch.Tensor, torch.Tensor]:
        """(`packed` with its row blocks in act_epilogue_order, for each packed row its original row, and for each
        original row its packed row: y_original = y_packed[..., that])."""
        blocks = act_epilogue_order(packed.n).to(packed.qw.device)
        out = W4Packed(packed.qw.index_select(0, blocks).contiguous(), packed.sz.index_select(0, blocks).contiguous(),
                       packed.n, packed.k, packed.group, packed.asym)
        rows = (blocks[:, None] * 16 + torch.arange(16, device=blocks.device)).reshape(-1)  # packed row -> original
        return out, rows, torch.argsort(rows)

    @property
    def bias(self) -> torch.Tensor:
        """The epilogue's bias [N] in the packed row order (empty: none)."""
        return self._bias

    @bias.setter
    def bias(self, bias: torch.Tensor | None) -> None:
        """`bias` [N] in the original row order, or None. A setter, not a field: callers attach a bias after the
        build (weights._int4_biased, the kernel checks), and an act-epilogue variant must store it in its packed
        order (r88's checks of scxa's biased forms failed where the field took it unpermuted)."""
        dev = self.p.qw.device
        if bias is None:
            self._bias = torch.empty(0, device=dev, dtype=torch.bfloat16)
            return
        if bias.shape != (self.p.n,):
            raise ValueError(f"bias: shape {tuple(bias.shape)}, expected ({self.p.n},) (one per output row)")
        bias = bias.to(device=dev, dtype=torch.bfloat16)
        self._bias = (bias if self._rows is None else bias.index_select(0, self._rows)).contiguous()

    def _in_order(self, y: torch.Tensor) -> torch.Tensor:
        """y's columns in the original row order (the act epilogue's packed order otherwise)."""
        return y if self._unperm is None else y.index_select(-1, self._unperm)

    def _run(self, x: torch.Tensor, act: bool) -> torch.Tensor:
        p = self.p
        x = aligned16(x)
        if self.variant_id == 0 and self.grid_x == 0:  # the default path, as the decoder uses it
            return self.ext.gemv(x, p.qw, p.sz, self.bias, self.partial, self.counters, p.n, p.k,
                                 p.group, p.asym, act, self.splits, self.tps)
        return self._in_order(self.ext.gemv_variant(x, p.qw, p.sz, self.bias, self.partial, self.counters, p.n, p.k,
                                                    p.group, p.asym, act, self.splits, self.tps, self.variant_id,
                                                    self.grid_x))

    def trace(self) -> torch.Tensor:
        """A timeline variant's CTA records of its last call (TRACE_VARIANTS): int64 [CTAs, 8], columns TRACE_FIELDS
        (global times in ns, SM clocks in cycles), on the host. Call after the GPU is done with that call."""
        if self.variant not in TRACE_VARIANTS:
            raise ValueError(f"variant: {self.variant!r} records no timeline; use one of {sorted(TRACE_VARIANTS)}")
        return self.partial[self.splits * self.p.n:].view(torch.int64).reshape(-1, len(TRACE_FIELDS)).cpu()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != 1:  # prefill (M > 1): not a GEMV; dequantize this layer once per call
            return self._dense(x)
        return self._run(x, False)

    @property
    def fuses_norm(self) -> bool:
        """The launch also computes its input as rmsnorm(x + res) * w (one launch fewer): the default launch and the
        latency variants."""
        return self.variant in DECODER_VARIANTS and self.grid_x == 0 and self.p.k % 8 == 0  # not stream-K

    def fused_norm(self, x: torch.Tensor, res: torch.Tensor | None, norm_w: torch.Tensor,
                   eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(W rmsnorm(x + res) * norm_w (+ bias), x + res) for x, res [1, K] (res None: the first layer);
        the same rounding as kernels.add_rmsnorm followed by this GEMV."""
        p = self.p
        x, norm_w = aligned16(x), aligned16(norm_w)
        res_out = torch.empty(1, p.k, device=x.device, dtype=torch.bfloat16)  # the next residual (fresh: no aliasing)
        y = self.ext.gemv_norm(x, self._no_res if res is None else res, norm_w, float(eps), res_out, p.qw, p.sz, self.bias,
                               self.partial, self.counters, p.n, p.k, p.group, p.asym, self.splits, self.tps,
                               self.variant_id)
        return self._in_order(y), res_out

    @property
    def fuses_norm_silu(self) -> bool:
        """fused_norm_silu is available: an MLP's gate_up built with an act-epilogue variant (ACT_EPILOGUE_VARIANTS)."""
        return self.act_variant_id is not None and self.p.k % 8 == 0

    def _need_act_epilogue(self) -> None:
        if not self.fuses_norm_silu:
            raise ValueError(f"variant: {self.variant!r} does not write silu(gate) * up; build the gate_up with one of "
                             f"{sorted(ACT_EPILOGUE_VARIANTS)}")

    def act_of(self, x: torch.Tensor) -> torch.Tensor:
        """silu(g) * u [1, N/2] for [g | u] = W x (+ bias), x [1, K]: the epilogue on a plain input (checks, layer
        chains); fused_norm_silu is the decoder's form."""
        self._need_act_epilogue()
        p = self.p
        return self.ext.gemv_variant(aligned16(x), p.qw, p.sz, self.bias, self.partial, self.counters, p.n, p.k,
                                     p.group, p.asym, False, self.splits, self.tps, self.act_variant_id, 0)

    def fused_norm_silu(self, x: torch.Tensor, res: torch.Tensor | None, norm_w: torch.Tensor,
                        eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(silu(g) * u [1, N/2], x + res) for [g | u] = this gate_up's fused_norm(x, res, norm_w, eps): the down
        projection's input, written by this launch's epilogue, so down stages a plain x. Bitwise what
        down.fused_silu stages from fused_norm's output (the same rounding, the same intrinsics)."""
        self._need_act_epilogue()
        p = self.p
        x, norm_w = aligned16(x), aligned16(norm_w)
        res_out = torch.empty(1, p.k, device=x.device, dtype=torch.bfloat16)
        act = self.ext.gemv_norm(x, self._no_res if res is None else res, norm_w, float(eps), res_out, p.qw, p.sz,
                                 self.bias, self.partial, self.counters, p.n, p.k, p.group, p.asym, self.splits,
                                 self.tps, self.act_variant_id)
        return act, res_out

    def fused_silu(self, gate_up: torch.Tensor) -> torch.Tensor:
        return self._run(gate_up, True)

    def _dense(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, K] -> [M, N] through the dequantized bf16 weights (the same int4 function; prefill only)."""
        from edgeprof.quant.rtn import dequantize_qzs

        q, z, s = unpack_w4(self.p)
        w = dequantize_qzs(q, z, s, self.p.group).to(x.dtype)  # [N, K]
        y = x @ w.t()
        return self._in_order(y + self.bias if self.bias.numel() else y)

    fuses_silu = True

    @property
    def nbytes(self) -> int:
        return self.p.nbytes + self.bias.numel() * 2


# ---------------------------------------------------------------- the fused MLP
MLP_ENV = "EDGEPROF_W4_MLP"
MLP_MODES = ("fused", "split")
# "fused": the int4 MLP (norm, gate_up, SiLU*up, down) is one launch (csrc: w4a16_mlp_kernel), so the down GEMV's
# launch, ramp and drain overlap gate_up's tail; "split": two launches (gate_up with the norm, down with SiLU*up).
MLP_DEFAULT = "split"


def mlp_wanted() -> str:
    """$EDGEPROF_W4_MLP (fused or split); unset: MLP_DEFAULT."""
    return env_choice(MLP_ENV, MLP_MODES, MLP_DEFAULT)


def mlp_unfusable(gate_up: W4CudaLinear, down: W4CudaLinear) -> str | None:
    """Why these two layers cannot run as one fused-MLP launch, or None when they can: both the default launch,
    gate_up [2I, H] with its norm fused, down [H, I], the same group and zero-point kind, I % 64 == 0, no bias.
    (The fused launch runs gate_up unsplit whatever its own plan: down's items fill the GPU beside it.)"""
    g, d = gate_up.p, down.p
    if not (gate_up.fuses_norm and gate_up.variant_id == 0 and down.variant_id == 0 and down.grid_x == 0):
        return "a tuning or latency variant (the fused MLP runs the default launch only)"
    if g.n != 2 * d.k or d.n != g.k:
        return f"shapes: gate_up [{g.n}, {g.k}] and down [{d.n}, {d.k}] are not [2I, H] and [H, I]"
    if (g.group, g.asym) != (d.group, d.asym):
        return "gate_up and down differ in group size or zero points"
    if d.k % 64:
        return f"intermediate size {d.k} is not a multiple of 64"
    if gate_up.bias.numel() or down.bias.numel():
        return "a bias on gate_up or down"
    return None


class W4CudaMLP:
    """One layer's int4 MLP in one launch: (down(silu(g) * u), x + res) with [g | u] = gate_up(rmsnorm(x + res) * w).
    Bitwise the result of an unsplit gate_up.fused_norm followed by down.fused_silu (same math, same split order);
    where gate_up's own plan splits K, the two-launch result differs from it by fp32 summation order only."""

    def __init__(self, gate_up: W4CudaLinear, down: W4CudaLinear):
        why = mlp_unfusable(gate_up, down)
        if why:
            raise ValueError(f"fused MLP: {why}; use the two launches ({MLP_ENV}=split)")
        self.gate_up, self.down, self.ext = gate_up, down, gate_up.ext
        dev = gate_up.p.qw.device
        # gate_up's output, read by the down items of the same launch (a static buffer: graph replays reuse it)
        self.gu = torch.empty(1, gate_up.p.n, device=dev, dtype=torch.bfloat16)  # [1, 2I]
        # the ticket, ready[splits], consumed[splits]: this layer's own, each resets itself
        self.ws = torch.zeros(1 + 2 * down.splits, device=dev, dtype=torch.int32)

    def __call__(self, x: torch.Tensor, res: torch.Tensor | None, norm_w: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        g, d = self.gate_up, self.down
        x, norm_w = aligned16(x), aligned16(norm_w)
        res_out = torch.empty(1, g.p.k, device=x.device, dtype=torch.bfloat16)  # the next residual
        y = self.ext.mlp(x, g._no_res if res is None else res, norm_w, float(eps), res_out, self.gu, g.p.qw, g.p.sz,
                         g.bias, d.p.qw, d.p.sz, d.bias, d.partial, d.counters, self.ws, d.p.k, g.p.k, g.p.group,
                         g.p.asym, d.splits, d.tps)
        return y, res_out

