"""Read-only streaming at the int4 GEMV's access patterns: is the weight layout what holds edgeprof's
W4A16 kernel at ~0.6 of copy bandwidth (issue 12)?

Each kernel only loads the packed weights (16 bytes per lane, U loads in flight per thread, XOR-folded so
nothing is optimised away) with the same grid as the GEMV: one warp per 16-row block, 4 warps per CTA.
  rowblock  pack_w4's layout: warp nb reads its K/64 tiles of 512 B, contiguous per warp, so the
            N/16 warps of a launch read N/16 streams that start K/2 * 16 bytes apart
  tile      to_tile_major's layout: tile t of every row block side by side, so the warps, which run
            roughly in step along K, read neighbouring 512 B tiles
  flat      a grid-stride copy-like read of the same bytes (the pattern's ceiling)
  split     rowblock with the K splits of the H200's shipped launch plan (data/gemv_plans.yaml: q/k/v 7, o 10,
            gate_up 1, down 10): grid (N/64, S), warp nb reads tiles [s tps, (s + 1) tps) of its row block, as
            the GEMV's CTAs do
A read of the weights alone is what a GEMV must at least do; if `rowblock` reads slower than `tile`,
the layout costs bandwidth before any math. Prints GB/s and the fraction of the measured copy bandwidth.
--pdl launches every read with programmatic dependent launch, as the GEMV rows of int4_gemv.py are timed
(`--tune-pdl`, the kernel suite's per-shape rows): the first loads are issued before griddepcontrol.wait, and
launch_dependents follows the wait, as in the GEMV. So a GEMV row and a `split` row with --pdl compare the GEMV
with a pure read of its bytes at its grid, under the same timing.

    python benchmarks/stream_pattern.py --out $OUT/stream_pattern.json [--pdl]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.cpp_extension import load_inline

sys.path.insert(0, str(Path(__file__).parent))
from int4_gemv import copy_bandwidth  # noqa: E402

# (name, K, N) of the Qwen2.5-7B GEMVs (edgeprof-fast's fused qkv / gate_up)
SHAPES = [("qkv", 3584, 4608), ("o", 3584, 3584), ("gate_up", 3584, 37888), ("down", 18944, 3584)]
STREAM_BYTES = 400 << 20  # per timed pass: copies together well over L2 (50-60 MB), as in int4_gemv.py

CUDA_SRC = r"""
#include <cstdint>
__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
}
__device__ __forceinline__ void pdl_wait_launch() {  // what the GEMV does after its first loads (PDL launches only)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// PATTERN 0 rowblock (blockIdx.y: K split of TPS tiles), 1 tile, 2 flat; words: uint4 [NB, T, 32] (0) or
// [T, NB, 32] (1) or flat (2)
template <int PATTERN, int U>
__global__ void read_kernel(const uint4* __restrict__ w, int NB, int T, int TPS, unsigned* __restrict__ sink) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  uint32_t acc = 0;
  bool waited = false;
  if (PATTERN == 2) {
    const size_t n = (size_t)NB * T * 32, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride * U) {
      uint4 v[U];
#pragma unroll
      for (int u = 0; u < U; ++u) if (i + u * stride < n) v[u] = ld_stream(w + i + u * stride);
#pragma unroll
      if (!waited) { pdl_wait_launch(); waited = true; }
#pragma unroll
      for (int u = 0; u < U; ++u) if (i + u * stride < n) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
  } else {
    const int nb = blockIdx.x * (blockDim.x >> 5) + warp;
    const int t0 = blockIdx.y * TPS, t1 = min(T, t0 + TPS);
    if (nb < NB)
      for (int t = t0; t < t1; t += U) {
        uint4 v[U];
#pragma unroll
        for (int u = 0; u < U; ++u)
          if (t + u < t1)
            v[u] = ld_stream(w + (PATTERN == 0 ? (size_t)nb * T + t + u : (size_t)(t + u) * NB + nb) * 32 + lane);
        if (!waited) { pdl_wait_launch(); waited = true; }
#pragma unroll
        for (int u = 0; u < U; ++u) if (t + u < t1) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
      }
  }
  if (!waited) pdl_wait_launch();
  if (acc == 0x9e3779b9u) sink[0] = acc;  // practically never: keeps the loads live
}

template <typename K>
void launch_one(K kern, dim3 grid, bool pdl, int smem, cudaStream_t st, const uint4* p, int NB, int T, int TPS,
                unsigned* s) {
  if (smem > 0)  // the largest carveout, so the padding alone sets the CTAs per SM
    TORCH_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributePreferredSharedMemoryCarveout, 100) == cudaSuccess &&
                cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) == cudaSuccess,
                "read kernel: shared-memory padding refused");
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(128);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = st;
  cudaLaunchAttribute a[1];
  a[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  a[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = a;
  cfg.numAttrs = pdl ? 1 : 0;
  TORCH_CHECK(cudaLaunchKernelEx(&cfg, kern, p, NB, T, TPS, s) == cudaSuccess, "read kernel launch failed");
}

// pattern 3 = rowblock at `splits` K splits (grid.y); smem: unused dynamic shared memory per CTA (0: none), which caps
// the CTAs an SM holds
void launch_read(torch::Tensor w, int64_t NB, int64_t T, int64_t pattern, int64_t unroll, int64_t ctas,
                 int64_t splits, bool pdl, int64_t smem, torch::Tensor sink) {
  auto p = reinterpret_cast<const uint4*>(w.data_ptr());
  auto s = reinterpret_cast<unsigned*>(sink.data_ptr());
  auto st = at::cuda::getCurrentCUDAStream().stream();
  const int S = pattern == 3 ? (int)splits : 1, tps = (int)((T + S - 1) / S);
  const dim3 grid = pattern == 2 ? dim3((int)ctas) : dim3((int)((NB + 3) / 4), S);
  const int pat = pattern == 3 ? 0 : (int)pattern;
#define L(P, U) launch_one(read_kernel<P, U>, grid, pdl, (int)smem, st, p, (int)NB, (int)T, tps, s)
  if (unroll == 6) { if (pat == 0) L(0, 6); else if (pat == 1) L(1, 6); else L(2, 6); }
  else { if (pat == 0) L(0, 12); else if (pat == 1) L(1, 12); else L(2, 12); }
#undef L
}
"""
CPP_SRC = "void launch_read(torch::Tensor w, int64_t NB, int64_t T, int64_t pattern, int64_t unroll, int64_t ctas, " \
          "int64_t splits, bool pdl, int64_t smem, torch::Tensor sink);"
PATTERNS = {"rowblock": 0, "tile": 1, "flat": 2, "split": 3}
# the K splits of the H200's shipped int4 launch plan (edgeprof/data/gemv_plans.yaml), the `split` pattern's grid
PLAN_SPLITS = {"qkv": 7, "o": 10, "gate_up": 1, "down": 10}


def build():
    return load_inline("edgeprof_stream_pattern", cpp_sources=CPP_SRC,
                       cuda_sources="#include <torch/extension.h>\n#include <ATen/cuda/CUDAContext.h>\n" + CUDA_SRC,
                       functions=["launch_read"], extra_cuda_cflags=["-O3"], verbose=False)


def time_pattern(ext, k: int, n: int, pattern: str, unroll: int, repeats: int, splits: int = 1,
                 pdl: bool = False, smem: int = 0) -> dict:
    from edgeprof.timing import time_graph

    nb, t = n // 16, k // 64
    nbytes = n * k // 2
    copies = max(2, -(-STREAM_BYTES // nbytes))
    bufs = [torch.randint(-2**31, 2**31 - 1, (nbytes // 4,), device="cuda", dtype=torch.int32) for _ in range(copies)]
    sink = torch.zeros(1, device="cuda", dtype=torch.int32)
    ctas = 4 * torch.cuda.get_device_properties(0).multi_processor_count * 4
    calls = [lambda b=b: ext.launch_read(b, nb, t, PATTERNS[pattern], unroll, ctas, splits, pdl, smem, sink)
             for b in bufs]
    st = time_graph(calls, repeats)
    return {"pattern": pattern, "unroll": unroll, "splits": splits if pattern == "split" else 1, "pdl": pdl,
            "cta_smem": smem,
            "bytes": nbytes, "copies": copies, "us_p50": st.p50 * 1e3, "gb_per_s": nbytes / (st.p50 * 1e-3) / 1e9}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--pdl", action="store_true", help="launch with programmatic dependent launch (sm_90+), as the "
                    "GEMV rows are timed")
    ap.add_argument("--ctas-per-sm", type=int, default=0,
                    help="pad each CTA with unused shared memory so an SM holds at most this many (the GEMV's 5: its "
                    "registers allow no more), so the next launch of a PDL chain finds as few free slots; 0: no padding")
    args = ap.parse_args()
    t0 = time.time()
    ext = build()
    bw = copy_bandwidth()
    smem = 0
    if args.ctas_per_sm > 0:  # per SM: 228 KB of shared memory, 1 KB of it reserved per CTA
        smem = (228 * 1024 // args.ctas_per_sm - 1024) // 1024 * 1024
    rec = {"benchmark": "stream_pattern", "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
           "command": " ".join(sys.argv), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "copy_bw_bytes_per_s": bw, "build_s": time.time() - t0, "pdl": args.pdl,
           "ctas_per_sm": args.ctas_per_sm or None, "cta_smem": smem, "rows": []}
    print(f"{rec['gpu']}: copy bandwidth {bw / 1e12:.3f} TB/s (read + write)")
    print(f"PDL: {'on' if args.pdl else 'off'}; " + (f"{smem} B of padding per CTA (at most {args.ctas_per_sm} per SM)"
                                                      if smem else "no padding"))
    print("| shape | K x N | pattern | splits | loads in flight / thread | us | GB/s | of copy bw |\n"
          "|---|---|---|---|---|---|---|---|")
    for name, k, n in SHAPES:
        for pattern in PATTERNS:
            for unroll in (6, 12):
                r = {"shape": name, "k": k, "n": n, **time_pattern(ext, k, n, pattern, unroll, args.repeats,
                                                                   PLAN_SPLITS[name], args.pdl, smem)}
                r["frac_copy_bw"] = r["gb_per_s"] * 1e9 / bw
                rec["rows"].append(r)
                print(f"| {name} | {k}x{n} | {pattern} | {r['splits']} | {unroll} | {r['us_p50']:.2f} | "
                      f"{r['gb_per_s']:.0f} | {r['frac_copy_bw']:.3f} |", flush=True)
        torch.cuda.empty_cache()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rec, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
