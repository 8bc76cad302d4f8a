// The W4A16 GEMV's latency variants (issue 12, seventh pass): the default kernel (w4a16_kernels.cuh: gemv_cta)
// with a shorter chain from its launch to its last output, for the small GEMVs (q/k/v, o) and the split-K down
// projection. Group 128, bf16 mma; plain, SiLU*up fused, and with the norm fused (the decoder's q/k/v and
// gate_up launch). A translation unit of its own, in the decoders' module, so the JIT build compiles it beside
// the default kernels.
//   KW (k2, k4): KW warps share one 16-row block, each on a whole-group part of the CTA's K slice; their sums
//       meet in shared memory. A K split this way needs no fp32 partials in global memory, no ticket and no
//       second pass by the column's last CTA (finish_rows), which cost the small GEMVs an L2 round trip or two.
//   E2 (e2): the first two chunks of every warp's weights are in flight before pdl_wait (else one): under PDL
//       they load while the previous kernel drains, so a 14-tile q/k/v slice needs no second DRAM round trip.
#include "w4a16_kernels.cuh"

namespace edgeprof_w4 {

template <int KW, bool E2>
cudaError_t lat_launch_t(bool asym, bool act, bool norm, const void* qw, const void* sz, const void* x,
                         const void* bias, void* y, float* partial, int* counters, int N, int K, int splits, int tps,
                         cudaStream_t s, NormArgs na) {
#define EDGEPROF_LL(A, C, NORM) launch_t<128, A, C, true, NORM, 0, 0, 5, false, KW, E2>(qw, sz, x, bias, y, partial, \
                                                                                       counters, N, K, splits, tps, s, na)
  if (norm) return asym ? EDGEPROF_LL(true, false, 1) : EDGEPROF_LL(false, false, 1);
  if (asym) return act ? EDGEPROF_LL(true, true, 0) : EDGEPROF_LL(true, false, 0);
  return act ? EDGEPROF_LL(false, true, 0) : EDGEPROF_LL(false, false, 0);
#undef EDGEPROF_LL
}

}  // namespace edgeprof_w4

// variant 22 "e2", 23 "k2", 24 "k2e2", 25 "k4", 26 "k4e2" (w4cuda.VARIANTS), group 128; norm: the fused-norm launch
// (na holds its operands; act must be false). cudaErrorInvalidValue for any other variant or group.
int edgeprof_w4a16_lat_launch(int variant, int group, bool asym, bool act, bool norm, const void* qw, const void* sz,
                              const void* x, const void* bias, void* y, float* partial, int* counters, int N, int K,
                              int splits, int tps, cudaStream_t s, const void* res, const void* nw, void* res_out,
                              float eps) {
  using namespace edgeprof_w4;
  if (group != 128 || (norm && act)) return (int)cudaErrorInvalidValue;
  const NormArgs na{reinterpret_cast<const __nv_bfloat16*>(res), reinterpret_cast<const __nv_bfloat16*>(nw),
                    reinterpret_cast<__nv_bfloat16*>(res_out), eps};
  switch (variant) {
    case 22: return lat_launch_t<1, true>(asym, act, norm, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, s, na);
    case 23: return lat_launch_t<2, false>(asym, act, norm, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, s, na);
    case 24: return lat_launch_t<2, true>(asym, act, norm, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, s, na);
    case 25: return lat_launch_t<4, false>(asym, act, norm, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, s, na);
    case 26: return lat_launch_t<4, true>(asym, act, norm, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, s, na);
    default: return (int)cudaErrorInvalidValue;
  }
}
