// The W4A16 GEMV's tuning variants (benchmarks/int4_gemv.py --suite tune; w4cuda.VARIANTS): same math and
// layout as the default kernel, other launch shapes. A translation unit of their own so the JIT build
// compiles them beside the default kernels (w4a16_gemv.cu) instead of after them.
#include "w4a16_kernels.cuh"

namespace edgeprof_w4 {

// Tuning variants of the kernel above (same math, same layout), selected at run time by
// edgeprof_w4a16_launch's `variant`; the default path above is left exactly as it was measured.
// WARPS: warps per CTA (8: variant "w8", half the CTAs, each x stage shared by 8 row blocks).
// PERSIST ("persist" variant): grid.x may be smaller than the number of row-block columns; each CTA
// walks columns bx = blockIdx.x, + gridDim.x, ... with its split's x slice staged ONCE, and during
// the last chunk of one row block a warp already loads the first chunk of its next one, so its
// weight stream never drains between row blocks. Per-row arithmetic and the split order are the
// same in every variant, so all variants give bitwise the same y for the same splits.
// UL: 16-byte loads per chunk (0: the base kernel's choice); MINB: CTAs per SM the register budget must
// allow (__launch_bounds__), i.e. more resident warps to hide the dequant + mma latency with.
template <int G, bool ASYM, bool ACT, int WARPS, bool PERSIST, bool TM, int UL = 0, int MINB = 0, bool FUSED = false,
          bool LEAN = false>
__global__ void __launch_bounds__(WARPS * 32, MINB ? MINB : (PERSIST ? 4 : 2))
w4a16_gemv_tune_kernel(const uint4* __restrict__ qw, const void* __restrict__ sz, const __nv_bfloat16* __restrict__ x,
                  const __nv_bfloat16* __restrict__ bias, __nv_bfloat16* __restrict__ y, float* __restrict__ partial,
                  int* __restrict__ counters, int N, int K, int tiles_per_split) {
  constexpr int U = UL ? UL : (G == 32 ? 4 : 6);  // 16-byte loads per chunk; two chunks in flight per thread
  constexpr int GPC = U * 64 / G;          // groups per chunk of U tiles
  static_assert(GPC >= 1 && (U * 64) % G == 0, "a chunk holds whole groups");
  using ST = typename std::conditional<ASYM, uint2, uint32_t>::type;
  extern __shared__ uint4 smem_raw[];
  uint32_t* xs = reinterpret_cast<uint32_t*>(smem_raw);  // x slice, permuted per 16 columns, bf16 pairs
  __shared__ int last;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int T = K / 64, NG = K / G, NB = N / 16, NBX = (NB + WARPS - 1) / WARPS;
  const int bx_step = PERSIST ? (int)gridDim.x : NBX;  // not persistent: one row-block column per CTA
  const int t0 = blockIdx.y * tiles_per_split;
  const int nt = min(T, t0 + tiles_per_split) - t0;
  const int klen = nt * 64, k0 = t0 * 64, g0 = k0 / G, ng = klen / G;
  float* sxs = reinterpret_cast<float*>(xs + klen / 2);  // sum of x over each group of the slice
  const uint32_t magic = 0x43004300u;  // bf16 128.0 in both halves (dq_reg)
  const int gq = lane >> 2, c = lane & 3;
  // TM (tile-major layout, variants "tm"/"tm8"): qw [K/64, N/16, 32, 4] and sz [K/G, N/16, 8, 2|4], so the
  // warps of one launch, which run roughly in step along K, read neighbouring 512-byte tiles instead
  // of N/16 streams that each start K/2 * 16 bytes apart (the row-block layout).
  const size_t wstride = TM ? (size_t)NB * 32 : 32;  // uint4 between consecutive K tiles of one row block
  const size_t sstride = TM ? (size_t)NB * 8 : 8;    // ST between consecutive groups of one row block
  auto wptr = [&](int nb) {
    const size_t b = min(nb, NB - 1);
    return qw + (TM ? (size_t)t0 * NB + b : b * T + t0) * 32 + lane;
  };
  auto sptr = [&](int nb) {
    const size_t b = min(nb, NB - 1);
    return reinterpret_cast<const ST*>(sz) + (TM ? (size_t)g0 * NB + b : b * NG + g0) * 8 + gq;
  };

  // One chunk = U tiles of 64 columns: U 16-byte weight loads and the chunk's group scales.
  auto load_chunk = [&](const uint4* wp, const ST* sp, int t, uint4 (&wv)[U], ST (&sv)[GPC]) {
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (t + u < nt) wv[u] = ld_stream(wp + (size_t)(t + u) * wstride);
#pragma unroll
    for (int gi = 0; gi < GPC; ++gi)
      if ((t * 64) / G + gi < ng) sv[gi] = __ldg(sp + (size_t)((t * 64) / G + gi) * sstride);
  };
  // The first chunk is in flight while the CTA stages x: the prologue costs no memory time.
  int nb = blockIdx.x * WARPS + warp;
  const uint4* wp = wptr(nb);
  const ST* sp = sptr(nb);
  uint4 wa[U];
  ST sa[GPC];
  if (nb < NB) load_chunk(wp, sp, 0, wa, sa);
  pdl_wait();
  pdl_launch_dependents();

  stage_x_sums<G, WARPS, ACT, true>(x, K, k0, klen, ng, xs, sxs);

  // bx is CTA-uniform, so every __syncthreads below is reached by the whole CTA
  for (int bx = blockIdx.x; bx < NBX; bx += bx_step) {
    nb = bx * WARPS + warp;
    const int nb_next = nb + bx_step * WARPS;  // this warp's next row block (PERSIST only)
    const bool prefetch_next = PERSIST && bx + bx_step < NBX && nb_next < NB;  // warp-uniform
    const uint4* wp_next = wptr(nb_next);
    const ST* sp_next = sptr(nb_next);
    float y0 = 0.f, y1 = 0.f;  // rows 16nb + gq and 16nb + gq + 8
    if (nb < NB) {
      const uint2* xq = reinterpret_cast<const uint2*>(xs) + c;
      auto math = [&](const uint4 (&w)[U], const ST (&sv)[GPC], int t, bool checked) {
        chunk_math<G, ASYM, FUSED>(w, sv, t, nt, checked, xq, sxs, magic, y0, y1);
      };
      constexpr bool Checked = true, Full = false;
      if constexpr (LEAN && !PERSIST) {
        // Two chunks per iteration, buffers wa / wb in turn (no register copies), no bound checks while
        // two full chunks remain; then at most two checked chunks. wa holds the chunk at t on entry.
        uint4 wb[U];
        ST sb[GPC];
        int t = 0;
        for (; t + 2 * U <= nt; t += 2 * U) {
          load_chunk(wp, sp, t + U, wb, sb);  // full: t + 2U <= nt
          math(wa, sa, t, Full);
          if (t + 2 * U < nt) load_chunk(wp, sp, t + 2 * U, wa, sa);  // the next iteration's (or the tail's) first
          math(wb, sb, t + U, Full);
        }
        if (t < nt) {
          if (t + U < nt) load_chunk(wp, sp, t + U, wb, sb);
          math(wa, sa, t, Checked);
          if (t + U < nt) math(wb, sb, t + U, Checked);
        }
      } else {
        for (int t = 0; t < nt; t += U) {
          uint4 wb[U];
          ST sb[GPC];
          if (t + U < nt) {
            load_chunk(wp, sp, t + U, wb, sb);  // next chunk in flight during this one's math
          } else if (prefetch_next) {
            load_chunk(wp_next, sp_next, 0, wb, sb);  // persistent: the next row block's first chunk
          }
          math(wa, sa, t, Checked);
#pragma unroll
          for (int u = 0; u < U; ++u) wa[u] = wb[u];
#pragma unroll
          for (int gi = 0; gi < GPC; ++gi) sa[gi] = sb[gi];
        }
      }
    }
    if constexpr (PERSIST) {
      // a warp whose row block was past N prefetched nothing: load its next first chunk now
      if (!(nb < NB) && bx + bx_step < NBX && nb_next < NB) load_chunk(wp_next, sp_next, 0, wa, sa);
      wp = wp_next;
      sp = sp_next;
    }

    // bx is CTA-uniform: the whole CTA reaches finish_rows' barriers; every thread has read `last`
    // before any reaches the next column's ticket barrier
    finish_rows<WARPS>(bx, blockIdx.y, gridDim.y, nb, NB, N, gq, c, y0, y1, bias, y, partial, counters, last);
  }
}

template <int G, bool ASYM, bool ACT, int WARPS, bool PERSIST, bool TM, int UL, int MINB, bool FUSED, bool LEAN>
cudaError_t tune_launch_t(const void* qw, const void* sz, const void* x, const void* bias, void* y, float* partial,
                     int* counters, int N, int K, int splits, int tiles_per_split, int grid_x, cudaStream_t stream) {
  const int nbx = (N / 16 + WARPS - 1) / WARPS;
  // persistent: grid_x CTAs per split walk the nbx row-block columns; otherwise one CTA per column
  const int gx = (PERSIST && grid_x > 0) ? min(grid_x, nbx) : nbx;
  const size_t smem = (size_t)tiles_per_split * 64 * 2 + (size_t)(tiles_per_split * 64 / G) * 4;
  auto kern = w4a16_gemv_tune_kernel<G, ASYM, ACT, WARPS, PERSIST, TM, UL, MINB, FUSED, LEAN>;
  if (const cudaError_t e = edgeprof_gemv::allow_smem(kern, smem); e != cudaSuccess) return e;
  return edgeprof_gemv::launch(kern, dim3(gx, splits), dim3(WARPS * 32), smem, stream,
      reinterpret_cast<const uint4*>(qw), sz, reinterpret_cast<const __nv_bfloat16*>(x),
      reinterpret_cast<const __nv_bfloat16*>(bias), reinterpret_cast<__nv_bfloat16*>(y), partial, counters, N, K,
      tiles_per_split);
}

template <int G, int WARPS, bool PERSIST, bool TM, int UL = 0, int MINB = 0, bool FUSED = false, bool LEAN = false>
cudaError_t tune_launch_g(bool asym, bool act, const void* qw, const void* sz, const void* x, const void* bias, void* y,
                     float* partial, int* counters, int N, int K, int splits, int tps, int gx, cudaStream_t s) {
#define EDGEPROF_TL(A, C) tune_launch_t<G, A, C, WARPS, PERSIST, TM, UL, MINB, FUSED, LEAN>(qw, sz, x, bias, y, partial, counters, \
                                                                          N, K, splits, tps, gx, s)
  if (asym) return act ? EDGEPROF_TL(true, true) : EDGEPROF_TL(true, false);
  return act ? EDGEPROF_TL(false, true) : EDGEPROF_TL(false, false);
#undef EDGEPROF_TL
}

// the diagnostic variants (gemv_cta's NOMATH), group 128; CLU: the cluster launch (sm_90+, else cudaErrorNotSupported)
template <bool CLU, int NOMATH>
int diag_launch(bool asym, bool act, const void* qw, const void* sz, const void* x, const void* bias, void* y,
                float* partial, int* counters, int N, int K, int splits, int tps, cudaStream_t s) {
  if (CLU && !has_clusters()) return (int)cudaErrorNotSupported;
  return launch_g<128, true, 0, 0, 5, false, 1, CLU, 0, NOMATH>(asym, act, qw, sz, x, bias, y, partial, counters, N, K,
                                                                splits, tps, s);
}

}  // namespace edgeprof_w4

// variant 1-21, 25-35, 38-41, 50-56 of edgeprof_w4a16_launch (its comment lists them); cudaErrorInvalidValue for any other
int edgeprof_w4a16_tune_launch(int group, bool asym, bool act, const void* qw, const void* sz, const void* x,
                               const void* bias, void* y, float* partial, int* counters, int N, int K,
                               int splits, int tiles_per_split, int variant, int grid_x, cudaStream_t stream) {
  using namespace edgeprof_w4;
  const int tps = tiles_per_split;
  if (variant == 1 && group == 128)
    return tune_launch_g<128, 8, false, false>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, 0, stream);
  if (variant == 2 && group == 128)
    return tune_launch_g<128, 4, true, false>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, grid_x, stream);
  if (variant == 3 && group == 128)  // "tm": the tile-major layout
    return tune_launch_g<128, 4, false, true>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, 0, stream);
  if (variant == 4 && group == 128)  // "tm8": tile-major, 8 warps per CTA
    return tune_launch_g<128, 8, false, true>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, 0, stream);
  // occupancy variants: "o8" 4 loads per chunk, 8 CTAs (32 warps) per SM; "o6" 4 loads, 6 CTAs; "u8" 8 loads, 4 CTAs
  if (variant == 9 && group == 128)  // "l3": base's launch (4 warps, 6 loads, 5 CTAs/SM) with the one-LOP3 dequant
    return tune_launch_g<128, 4, false, false, 6, 5, true>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, 0, stream);
  if (variant == 10 && group == 128)  // "lean": l3 + two chunks per iteration without copies or bound checks
    return tune_launch_g<128, 4, false, false, 6, 5, true, true>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, 0, stream);
  if (variant == 11 && group == 128)  // "lean4": lean with 4 CTAs per SM (128 registers: fewer spills)
    return tune_launch_g<128, 4, false, false, 6, 4, true, true>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, 0, stream);
  // "u14" / "u10": the default dequant with 14 / 10 loads per chunk (3 / 4 CTAs/SM: u14's two 14-load buffers
  // spill at 4): at 4 splits a K = 3584 slice is 14 tiles, so "u14" has all of a thread's weight loads in flight
  // before it stages x (one DRAM round trip)
  if (variant == 12 && group == 128)
    return tune_launch_g<128, 4, false, false, 14, 3, true>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, 0, stream);
  if (variant == 13 && group == 128)
    return tune_launch_g<128, 4, false, false, 10, 4, true>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, 0, stream);
  if (variant == 8 && group == 128)  // "xscalar": the default kernel with its first x staging (32-bit loads)
    return launch_g<128, false>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, stream);
  if (variant == 5 && group == 128)
    return tune_launch_g<128, 4, false, false, 4, 8>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, 0, stream);
  if (variant == 6 && group == 128)
    return tune_launch_g<128, 4, false, false, 4, 6>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, 0, stream);
  if (variant == 7 && group == 128)
    return tune_launch_g<128, 4, false, false, 8, 4>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, 0, stream);
  // "cp<U>s<S>": the default kernel (x staging, dequant and math as base) with its weights and scales streamed
  // through a cp.async ring of S chunks of U tiles per warp (S - 1 in flight), the CTAs per SM its registers allow
  if (variant == 14 && group == 128)  // "cp4s4"
    return launch_g<128, true, 4, 4, 5>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, stream);
  if (variant == 15 && group == 128)  // "cp6s3"
    return launch_g<128, true, 3, 6, 4>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, stream);
  if (variant == 16 && group == 128)  // "cp4s6"
    return launch_g<128, true, 6, 4, 4>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, stream);
  if (variant == 17 && group == 128)  // "cp8s3"
    return launch_g<128, true, 3, 8, 3>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, stream);
  if (variant == 18 && group == 128)  // "cp2s8": one group per chunk, 7 in flight
    return launch_g<128, true, 8, 2, 5>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, stream);
  // "w2" / "w1": base's math (one-LOP3 dequant) in CTAs of 2 / 1 warps, 10 / 20 CTAs per SM: a one-wave grid of
  // 4-warp CTAs puts 5 CTAs on some SMs and 4 on others (gate_up: 592 CTAs on 132 SMs); smaller CTAs even that out
  if (variant == 20 && group == 128)
    return tune_launch_g<128, 2, false, false, 6, 10, true>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, 0, stream);
  if (variant == 21 && group == 128)
    return tune_launch_g<128, 1, false, false, 6, 20, true>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, 0, stream);
  // "cl6" / "cl8": the cluster variant "cl" (w4a16_lat.cu) with the registers of 6 CTAs per SM, and with 4 loads per
  // chunk at 8 CTAs per SM, so that more K splits (more CTAs) still fit in one wave. sm_90+ (clusters).
  if (variant == 25 && group == 128)
    return has_clusters() ? launch_g<128, true, 0, 0, 6, false, 1, true>(asym, act, qw, sz, x, bias, y, partial,
                                                                         counters, N, K, splits, tps, stream)
                          : (int)cudaErrorNotSupported;
  if (variant == 26 && group == 128)
    return has_clusters() ? launch_g<128, true, 0, 4, 8, false, 1, true>(asym, act, qw, sz, x, bias, y, partial,
                                                                         counters, N, K, splits, tps, stream)
                          : (int)cudaErrorNotSupported;
  // "st" / "clst" / "clst6": base / cl with the first 12 (clst6: 6) tiles of each warp's K slice (a small GEMV's whole
  // slice) bulk-copied into shared memory BEFORE the PDL wait (gemv_cta's BT), so a CTA that starts while the previous
  // kernel drains streams them there. sm_90+ (the bulk copy engine; clusters). Bitwise base's / cl's y.
  if (variant >= 27 && variant <= 29 && group == 128 && !has_clusters()) return (int)cudaErrorNotSupported;
  if (variant == 27 && group == 128)
    return launch_g<128, true, 0, 0, 5, false, 1, false, 12>(asym, act, qw, sz, x, bias, y, partial, counters, N, K,
                                                             splits, tps, stream);
  if (variant == 28 && group == 128)
    return launch_g<128, true, 0, 0, 5, false, 1, true, 12>(asym, act, qw, sz, x, bias, y, partial, counters, N, K,
                                                            splits, tps, stream);
  if (variant == 29 && group == 128)
    return launch_g<128, true, 0, 0, 5, false, 1, true, 6>(asym, act, qw, sz, x, bias, y, partial, counters, N, K,
                                                           splits, tps, stream);
  // DIAGNOSTIC, not GEMVs (gemv_cta's NOMATH; y is wrong by design), base / cl: "nomath" / "clnomath" (30, 31) with each
  // chunk's dequant and mma replaced by an XOR of its words, every load and the split-K finish kept; "nomathx" /
  // "clnomathx" (32, 33) without the x staging too; "nomathxs" / "clnomathxs" (34, 35) nor the group scales' loads;
  // "nomathxsf" / "clnomathxsf" (38, 39) nor the finish (no y, no split-K reduction): the weight loads alone, in the
  // GEMV's kernel and harness (stream_pattern.py's read, timed as a GEMV row). "sc" / "clsc" (36, 37) are decoder
  // variants: w4a16_lat.cu, in both modules.
#define EDGEPROF_DIAG_ARGS asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, stream
  if (variant == 30 && group == 128) return diag_launch<false, 1>(EDGEPROF_DIAG_ARGS);
  if (variant == 31 && group == 128) return diag_launch<true, 1>(EDGEPROF_DIAG_ARGS);
  if (variant == 32 && group == 128) return diag_launch<false, 2>(EDGEPROF_DIAG_ARGS);
  if (variant == 33 && group == 128) return diag_launch<true, 2>(EDGEPROF_DIAG_ARGS);
  if (variant == 34 && group == 128) return diag_launch<false, 3>(EDGEPROF_DIAG_ARGS);
  if (variant == 35 && group == 128) return diag_launch<true, 3>(EDGEPROF_DIAG_ARGS);
  if (variant == 38 && group == 128) return diag_launch<false, 4>(EDGEPROF_DIAG_ARGS);
  if (variant == 39 && group == 128) return diag_launch<true, 4>(EDGEPROF_DIAG_ARGS);
#undef EDGEPROF_DIAG_ARGS
  // "scf" / "clscf": sc / clsc with the fp16 mma (f16's dequant): the scale burst and the fp16 mma together
  if (variant == 40 && group == 128)
    return launch_g<128, true, 0, 0, 5, true, 1, false, 0, 0, true>(asym, act, qw, sz, x, bias, y, partial, counters,
                                                                    N, K, splits, tps, stream);
  if (variant == 41 && group == 128)
    return has_clusters() ? launch_g<128, true, 0, 0, 5, true, 1, true, 0, 0, true>(asym, act, qw, sz, x, bias, y,
                                                                                    partial, counters, N, K, splits,
                                                                                    tps, stream)
                          : (int)cudaErrorNotSupported;
  // TIMELINE (gemv_cta's TRACE; benchmarks/gemv_timeline.py): "clscxt" / "clscxgt" / "scxt" (50-52) are clscx / clscxg
  // / scx, "nomathxsft" / "clnomathxsft" (53, 54) nomathxsf / clnomathxsf, "clnomatht" (55) clnomath (no dequant or
  // mma: the SM clock without the math) and "clscft" (56) clscf (the fp16 mma), each CTA also recording its phases
  // after the split-K workspace. The GEMVs' y is theirs (checked as theirs); the trace is the point.
  if (variant >= 50 && variant <= 56 && variant != 52 && variant != 53 && group == 128 && !has_clusters())
    return (int)cudaErrorNotSupported;  // the cluster ones
#define EDGEPROF_TRACE_ARGS asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, stream
  if (variant == 50 && group == 128)
    return launch_g<128, true, 0, 0, 5, false, 1, true, 0, 0, true, true, false, false, true>(EDGEPROF_TRACE_ARGS);
  if (variant == 51 && group == 128)
    return launch_g<128, true, 0, 0, 5, false, 1, true, 0, 0, true, true, false, true, true>(EDGEPROF_TRACE_ARGS);
  if (variant == 52 && group == 128)
    return launch_g<128, true, 0, 0, 5, false, 1, false, 0, 0, true, true, false, false, true>(EDGEPROF_TRACE_ARGS);
  if (variant == 53 && group == 128)
    return launch_g<128, true, 0, 0, 5, false, 1, false, 0, 4, false, false, false, false, true>(EDGEPROF_TRACE_ARGS);
  if (variant == 54 && group == 128)
    return launch_g<128, true, 0, 0, 5, false, 1, true, 0, 4, false, false, false, false, true>(EDGEPROF_TRACE_ARGS);
  if (variant == 55 && group == 128)
    return launch_g<128, true, 0, 0, 5, false, 1, true, 0, 1, false, false, false, false, true>(EDGEPROF_TRACE_ARGS);
  if (variant == 56 && group == 128)
    return launch_g<128, true, 0, 0, 5, true, 1, true, 0, 0, true, false, false, false, true>(EDGEPROF_TRACE_ARGS);
#undef EDGEPROF_TRACE_ARGS
  if (variant == 19 && group == 128)  // "f16": the default kernel with the fp16 mma (what set_f16 switches on)
    return launch_g<128, true, 0, 0, 5, true>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, stream);
  return (int)cudaErrorInvalidValue;
}
