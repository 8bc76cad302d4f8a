// The W4A16 GEMV's latency variants (issue 12, seventh pass): the default kernel (w4a16_kernels.cuh: gemv_cta)
// with a shorter chain from its launch to its last output, for the small GEMVs (q/k/v, o). Group 128, bf16 mma;
// plain, SiLU*up fused, and with the norm fused (the decoder's q/k/v and gate_up launch). A translation unit of
// its own, in the decoders' module, so the JIT build compiles it beside the default kernels.
//   k2 / k4 (KW = 2 / 4): KW warps share one 16-row block, each on a whole-group part of the CTA's K slice; their
//   sums meet in shared memory. A K split this way needs no fp32 partials in global memory, no ticket and no
//   second pass by the column's last CTA (finish_rows): that chain costs a small GEMV L2 round trips after its
//   last weight arrives. k4 at one K split gives q/k/v and o as many streaming warps as base at 4 splits.
//   cl (sm_90+): base's CTAs, but the K splits of a row-block column are one thread-block cluster and add their sums
//   through distributed shared memory (finish_rows_cluster): split-K at any count up to 16 without the global
//   partials, fence, ticket and second pass; bitwise base's result at the same splits.
//   sc / clsc (SCS): base / cl with each warp's group scales for its whole K slice copied into shared memory in one
//   cp.async burst before the PDL wait, instead of a 32-byte load per group inside the weight loop; bitwise base's /
//   cl's result. Tuned on an H200 with PDL (results/h200/2026-11-29-readgap, r66 / r68): gate_up s1 19.96 / 19.82 µs
//   against base's 20.7 / 20.53, down s10 clsc 11.99 / 11.92 against cl's 12.34 / 12.30.
//   scx / clscx (SCS and XSUM): sc / clsc with the group sums of x added in the staging pass itself (shuffles
//   within the vector loads' warp) instead of a second pass over shared memory behind a CTA barrier: after the PDL
//   wait every CTA of a one-wave launch stages x while only its first chunk streams, so that pass is DRAM idle
//   time. The sums run in another order, so y is checked against the reference, not bitwise against base.
//   scxa (EACT): scx on an MLP's gate_up packed as gate, gate, up, up row blocks per CTA (w4cuda), writing
//   silu(gate) * up for its 32 inputs of the down projection instead of its 64 rows (finish_act): down then stages a
//   plain x, and SiLU*up runs once per input instead of once per down CTA that reads it. One K split.
//   clscxg (GATHER, sm_90+): clscx whose cluster finish gathers the splits' sums into rank 0 (st.async into its shared
//   memory, counted on an mbarrier) so the other ranks exit as soon as they have sent, instead of two cluster barriers
//   that hold every rank until all have read (finish_rows_gather); bitwise clscx's y at the same splits.
//   wk4 / wk6 / wk8 / wk10 (w4a16_wk.cu, its own translation unit): one row block per CTA of 4 / 6 / 8 / 10 warps
//   that split all of K, x streamed chunk by chunk beside the weights; one K split, no split-K finish.
#include "w4a16_kernels.cuh"

// the wk variants' launch (w4a16_wk.cu)
int edgeprof_w4a16_wk_warps(int variant);
int edgeprof_w4a16_wk_launch(int variant, int group, bool asym, bool act, bool norm, const void* qw, const void* sz,
                             const void* x, const void* bias, void* y, int N, int K, int splits, cudaStream_t s,
                             const edgeprof_w4::NormArgs& na);

namespace edgeprof_w4 {

// the plain / SiLU*up launch (launch_g) or the fused-norm one (launch_norm_g) at KW warps per row block; CLU: the
// splits as one cluster
template <int KW, bool CLU = false, bool SCS = false, bool XSUM = false, bool GATHER = false>
cudaError_t lat_launch_t(bool asym, bool act, bool norm, const void* qw, const void* sz, const void* x,
                         const void* bias, void* y, float* partial, int* counters, int N, int K, int splits, int tps,
                         cudaStream_t s, NormArgs na) {
  // scx at one split and clscx (its splits add their sums of h^2 in the cluster finish): the deferred norm where on
  if constexpr (KW == 1 && XSUM) {
    if (norm && (splits == 1 || CLU) && norm_deferred_enabled())
      return launch_norm_g<128, false, 3, KW, CLU, 0, SCS, XSUM, false, GATHER>(asym, qw, sz, x, bias, y, partial,
                                                                                counters, N, K, splits, tps, s, na);
  }
  if (norm)
    return launch_norm_g<128, false, 1, KW, CLU, 0, SCS, XSUM, false, GATHER>(asym, qw, sz, x, bias, y, partial,
                                                                              counters, N, K, splits, tps, s, na);
  return launch_g<128, true, 0, 0, 5, false, KW, CLU, 0, 0, SCS, XSUM, false, GATHER>(
      asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, s);
}


// scxa: the plain or fused-norm launch of scx with the SiLU*up epilogue (no SiLU*up input: that is down's form); the
// fused norm deferred (NORM 3) where it is on, as scx's
template <bool ASYM>
cudaError_t act_epilogue_launch_t(bool norm, const void* qw, const void* sz, const void* x, const void* bias, void* y,
                                  int N, int K, int tps, cudaStream_t s, NormArgs na) {
  if (norm && norm_deferred_enabled())
    return launch_t<128, ASYM, false, true, 3, 0, 0, 5, false, 1, false, 0, 0, true, true, true>(
        qw, sz, x, bias, y, nullptr, nullptr, N, K, 1, tps, s, na);
  if (norm)
    return launch_t<128, ASYM, false, true, 1, 0, 0, 5, false, 1, false, 0, 0, true, true, true>(
        qw, sz, x, bias, y, nullptr, nullptr, N, K, 1, tps, s, na);
  return launch_t<128, ASYM, false, true, 0, 0, 0, 5, false, 1, false, 0, 0, true, true, true>(
      qw, sz, x, bias, y, nullptr, nullptr, N, K, 1, tps, s);
}

}  // namespace edgeprof_w4

// Whether `variant` is one of this file's (the decoder variants, w4cuda.DECODER_VARIANTS but base): the one list the
// default entry point's dispatch (w4a16_gemv.cu) and the binding's checks read, so they cannot drift from the switch.
bool edgeprof_w4a16_is_lat_variant(int variant) {
  return (variant >= 22 && variant <= 24) || variant == 36 || variant == 37 || variant == 42 || variant == 43 ||
         edgeprof_w4a16_wk_warps(variant) > 0 || variant == 48 || variant == 49;
}

// variant 22 "k2", 23 "k4", 24 "cl", 36 "sc", 37 "clsc", 42 "scx", 43 "clscx", 44-47 "wk4", "wk6", "wk8", "wk10",
// 48 "scxa", 49 "clscxg" (w4cuda.VARIANTS), group 128; norm: the fused-norm launch (na's operands; act must be false);
// scxa writes N / 2 outputs. cudaErrorInvalidValue for any other variant or group (and the cl* variants above 16
// splits, wk and scxa above 1, scxa with a SiLU*up input or N not a multiple of 64), cudaErrorNotSupported for the
// cl* variants below sm_90.
int edgeprof_w4a16_lat_launch(int variant, int group, bool asym, bool act, bool norm, const void* qw, const void* sz,
                              const void* x, const void* bias, void* y, float* partial, int* counters, int N, int K,
                              int splits, int tps, cudaStream_t s, const void* res, const void* nw, void* res_out,
                              float eps) {
  using namespace edgeprof_w4;
  if (group != 128 || (norm && act)) return (int)cudaErrorInvalidValue;
  const NormArgs na{reinterpret_cast<const __nv_bfloat16*>(res), reinterpret_cast<const __nv_bfloat16*>(nw),
                    reinterpret_cast<__nv_bfloat16*>(res_out), eps};
  switch (variant) {
    case 22: return lat_launch_t<2>(asym, act, norm, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, s, na);
    case 23: return lat_launch_t<4>(asym, act, norm, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, s, na);
    case 24:
      if (!has_clusters()) return (int)cudaErrorNotSupported;
      return lat_launch_t<1, true>(asym, act, norm, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, s, na);
    case 36:
      return lat_launch_t<1, false, true>(asym, act, norm, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, s,
                                          na);
    case 37:
      if (!has_clusters()) return (int)cudaErrorNotSupported;
      return lat_launch_t<1, true, true>(asym, act, norm, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, s,
                                         na);
    case 42:
      return lat_launch_t<1, false, true, true>(asym, act, norm, qw, sz, x, bias, y, partial, counters, N, K, splits,
                                                tps, s, na);
    case 43:
      if (!has_clusters()) return (int)cudaErrorNotSupported;
      return lat_launch_t<1, true, true, true>(asym, act, norm, qw, sz, x, bias, y, partial, counters, N, K, splits,
                                               tps, s, na);
    case 49:
      if (!has_clusters()) return (int)cudaErrorNotSupported;
      return lat_launch_t<1, true, true, true, true>(asym, act, norm, qw, sz, x, bias, y, partial, counters, N, K,
                                                     splits, tps, s, na);
    case 44: return edgeprof_w4a16_wk_launch(44, group, asym, act, norm, qw, sz, x, bias, y, N, K, splits, s, na);
    case 45: return edgeprof_w4a16_wk_launch(45, group, asym, act, norm, qw, sz, x, bias, y, N, K, splits, s, na);
    case 46: return edgeprof_w4a16_wk_launch(46, group, asym, act, norm, qw, sz, x, bias, y, N, K, splits, s, na);
    case 47: return edgeprof_w4a16_wk_launch(47, group, asym, act, norm, qw, sz, x, bias, y, N, K, splits, s, na);
    case 48:
      if (act || splits != 1) return (int)cudaErrorInvalidValue;
      return asym ? act_epilogue_launch_t<true>(norm, qw, sz, x, bias, y, N, K, tps, s, na)
                  : act_epilogue_launch_t<false>(norm, qw, sz, x, bias, y, N, K, tps, s, na);
    default: return (int)cudaErrorInvalidValue;
  }
}

// The clusters of variant "cl" (group 128) that fit the GPU at once for this launch shape (max_active_clusters_t);
// cudaErrorNotSupported (negated) below sm_90.
int edgeprof_w4a16_cluster_fit(bool asym, bool act, bool norm, int N, int splits, int tps) {
  using namespace edgeprof_w4;
  if (!has_clusters()) return -(int)cudaErrorNotSupported;
  if (splits < 1 || splits > kClusterMax) return -(int)cudaErrorInvalidValue;
  const size_t smem = cta_smem<128, false>(tps);  // the symmetric and asymmetric kernels stage the same x slice
  if (norm) return asym ? max_active_clusters_t<128, true, false, 1>(N, splits, smem)
                        : max_active_clusters_t<128, false, false, 1>(N, splits, smem);
  if (act) return asym ? max_active_clusters_t<128, true, true, 0>(N, splits, smem)
                       : max_active_clusters_t<128, false, true, 0>(N, splits, smem);
  return asym ? max_active_clusters_t<128, true, false, 0>(N, splits, smem)
              : max_active_clusters_t<128, false, false, 0>(N, splits, smem);
}
