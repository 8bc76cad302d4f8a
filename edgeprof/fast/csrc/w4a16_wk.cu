// The W4A16 GEMV with one 16-row block per CTA and K split over the CTA's warps: the decoder variants "wk4", "wk6",
// "wk8" and "wk10" (issue 12, thirteenth pass). At least 2 CTAs per SM (__launch_bounds__): down's 224 CTAs then
// fit an H200's 132 SMs in one wave. A translation unit of its own in the decoders' module, so the JIT build
// compiles it beside the others.
//
// Why: down (K = 18944, N = 3584) has 224 row blocks. The default CTA holds 4 of them, so 56 CTAs: to stream from
// every SM the launch splits K 10 ways, and the splits' sums meet after the last weight arrives, through a ticket
// and L2 (finish_rows) or a thread-block cluster (finish_rows_cluster). On an H200 either costs ~1-2 us of a
// 11.5 us launch (results/h200/2026-11-29-groupsums). Here one CTA owns one row block (224 CTAs) and its WK warps
// each stream a whole-group part of K; their sums meet in shared memory behind one CTA barrier, so the launch is a
// plain one without fp32 partials, ticket or cluster.
//
// The cost it trades for that: each CTA reads all of x (16 rows per CTA read it, where base's 64 rows per CTA and
// split read a slice), 4x base's L2 reads of x. Staged up front, as gemv_cta stages its slice, that would be ~9
// dependent 16-byte loads per thread after the PDL wait while only the first weight chunk streams. So x is
// streamed instead: each warp loads the x of its NEXT chunk with that chunk's weights (in flight beside them) and
// writes it into shared memory (permuted for the B fragments, as stage_x, with the group sums added by shuffles as
// stage_x's XG) just before the chunk's math. The only L2 round trip of x the weights wait on is the first chunk's.
// The group scales come in one cp.async burst per warp before the PDL wait (as sc). Group 128, bf16 mma.
#include "w4a16_kernels.cuh"

namespace edgeprof_w4 {

// the x of one chunk: XR 16-byte vectors per lane (lane + 32 r), of x (and of up for ACT; of res and the norm
// weight for NORM)
template <int XR, bool ACT, bool NORM>
struct WkX {
  uint4 x[XR];
  uint4 u[(ACT || NORM) ? XR : 1];  // ACT: up; NORM: the residual
  uint4 w[NORM ? XR : 1];           // NORM: the norm weight
};

template <int G, bool ASYM>
__host__ __device__ constexpr int wk_scale_bytes(int K, int WK) {  // one warp's group scales, 16-byte multiple
  return ((K / G + WK - 1) / WK) * 8 * (ASYM ? 8 : 4);
}

// y [N] = W x for one row block per CTA (blockIdx.x), warp w on groups [w NG / WK, (w + 1) NG / WK) of K.
// ACT: x [2K] is gate | up and the input is silu(gate) * up (rounded as act_pair); NORM: the input is
// rmsnorm(x + res) * w (na; CTA 0 writes x + res to na.res_out), rstd over all K first (norm_rstd).
// Shared memory: [WK][gmax][8] scales, then x [K] bf16 (the stage_x permutation), then the group sums [K / G].
template <int G, bool ASYM, bool ACT, bool NORM, int WK>
__global__ void __launch_bounds__(WK * 32, 16 / WK > 2 ? 16 / WK : 2)
w4a16_gemv_wk_kernel(W4Args a, NormArgs na, int pf_tiles) {
  static_assert(G % 64 == 0 && !(ACT && NORM), "whole tiles per group; SiLU*up or the norm, not both");
  constexpr int U = chunk_tiles<G, 0>();  // tiles (16-byte loads per lane) per chunk
  constexpr int GPC = U * 64 / G, TPG = G / 64;
  constexpr int XR = (U * 8 + 31) / 32;  // x vectors per lane and chunk (U * 8 per warp)
  using ST = typename std::conditional<ASYM, uint2, uint32_t>::type;
  extern __shared__ uint4 smem_raw[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, c = lane & 3;
  const int K = a.K, T = K / 64, NG = K / G, nb = blockIdx.x;
  const int gw0 = warp * NG / WK, ng = (warp + 1) * NG / WK - gw0;  // this warp's groups
  const int tw = gw0 * TPG, nt = ng * TPG;                           // and tiles [tw, tw + nt)
  ST* my_sc = reinterpret_cast<ST*>(reinterpret_cast<char*>(smem_raw) + warp * wk_scale_bytes<G, ASYM>(K, WK));
  uint32_t* xs = reinterpret_cast<uint32_t*>(reinterpret_cast<char*>(smem_raw) + WK * wk_scale_bytes<G, ASYM>(K, WK));
  float* sxs = reinterpret_cast<float*>(xs + K / 2) + gw0;  // this warp's group sums
  const uint4* wp = a.qw + ((size_t)nb * T + tw) * 32 + lane;
  const ST* sp = reinterpret_cast<const ST*>(a.sz) + ((size_t)nb * NG + gw0) * 8;
  const int k0 = tw * 64;  // this warp's first input

  auto load_w = [&](int t, uint4 (&wv)[U]) {
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (t + u < nt) wv[u] = ld_stream(wp + (size_t)(t + u) * 32);
  };
  auto load_x = [&](int t, WkX<XR, ACT, NORM>& xv) {  // vector v of chunk t: inputs k0 + 64 t + 8 v ..
    const int nv = 8 * min(U, nt - t);
#pragma unroll
    for (int r = 0; r < XR; ++r) {
      const int v = lane + 32 * r, k = k0 + 64 * t + 8 * v;
      if (v >= nv) continue;
      xv.x[r] = ld_x16(a.x + k);
      if constexpr (ACT) xv.u[r] = ld_x16(a.x + K + k);
      if constexpr (NORM) {
        xv.u[r] = na.res ? ld_x16(na.res + k) : make_uint4(0, 0, 0, 0);
        xv.w[r] = ld_x16(na.w + k);
      }
    }
  };
  // chunk t's inputs into shared memory, and their group sums (a group's G / 8 vectors sit in G / 8 neighbouring
  // lanes of one r: chunks start at 8 U vectors, a multiple of G / 8)
  auto store_x = [&](int t, const WkX<XR, ACT, NORM>& xv, float rstd) {
    const int nv = 8 * min(U, nt - t);
#pragma unroll
    for (int r = 0; r < XR; ++r) {
      if (32 * r >= nv) break;  // warp-uniform
      const int v = lane + 32 * r, vk = (k0 >> 3) + 8 * t + v;  // vk: the vector's index in x
      const bool in = v < nv;
      const float s = stage_vec<ACT, NORM ? 1 : 0>(xv.x[r], xv.u[(ACT || NORM) ? r : 0], xv.w[NORM ? r : 0],
                                                   xs + 8 * (vk >> 1) + (vk & 1), in, rstd);
      const float gs = group_sum<G>(s, in);
      if (in && (v & (G / 8 - 1)) == 0) sxs[(8 * t + v) / (G / 8)] = gs;
    }
  };

  uint4 wa[U];
  load_w(0, wa);  // the first chunk streams across the PDL wait
  {               // the warp's scales, contiguous in the row-block layout: one burst, 16 bytes per lane and copy
    const int sbytes = ng * 8 * (int)sizeof(ST);
    for (int off = 16 * lane; off < sbytes; off += 32 * 16)
      edgeprof_gemv::cp_async16(reinterpret_cast<char*>(my_sc) + off, reinterpret_cast<const char*>(sp) + off);
    edgeprof_gemv::cp_async_commit();
  }
  if (pf_tiles > 0) edgeprof_gemv::prefetch_l2(wp - lane, 512L * min(nt, pf_tiles), lane);
  edgeprof_gemv::pdl_wait();  // x (and res) come from earlier kernels
  edgeprof_gemv::pdl_launch_dependents();

  float rstd = 0.f;
  if constexpr (NORM) rstd = norm_rstd<WK>(a.x, na, K, nb == 0);
  WkX<XR, ACT, NORM> xa;
  load_x(0, xa);
  edgeprof_gemv::cp_async_wait<0>();  // this lane's scales; the warp's others after the first __syncwarp
  const uint2* xq = reinterpret_cast<const uint2*>(xs) + c + tw * 16;  // 16 uint2 (64 bf16) per tile
  float y0 = 0.f, y1 = 0.f;  // rows 16 nb + gq and + 8
  for (int t = 0; t < nt; t += U) {
    uint4 wb[U];
    WkX<XR, ACT, NORM> xb;
    if (t + U < nt) {  // the next chunk's weights and x in flight during this one's math
      load_w(t + U, wb);
      load_x(t + U, xb);
    }
    store_x(t, xa, rstd);
    __syncwarp();  // chunk t's x and group sums, written by other lanes
    ST sa[GPC];
#pragma unroll
    for (int gi = 0; gi < GPC; ++gi)
      if ((t * 64) / G + gi < ng) sa[gi] = my_sc[((t * 64) / G + gi) * 8 + gq];
    chunk_math<G, ASYM, true>(wa, sa, t, nt, true, xq, sxs, 0x43004300u, y0, y1);
#pragma unroll
    for (int u = 0; u < U; ++u) wa[u] = wb[u];
    xa = xb;
  }

  __shared__ float2 red[WK][32];  // the warps' sums, added in warp order (deterministic)
  red[warp][lane] = make_float2(y0, y1);
  __syncthreads();
  if (warp != 0) return;
#pragma unroll
  for (int w = 1; w < WK; ++w) {
    y0 += red[w][lane].x;
    y1 += red[w][lane].y;
  }
  if (c != 0) return;
  const int row = 16 * nb + gq;
  a.y[row] = __float2bfloat16(y0 + (a.bias ? __bfloat162float(a.bias[row]) : 0.f));
  a.y[row + 8] = __float2bfloat16(y1 + (a.bias ? __bfloat162float(a.bias[row + 8]) : 0.f));
}

template <int G, bool ASYM, bool ACT, bool NORM, int WK>
cudaError_t wk_launch_t(const void* qw, const void* sz, const void* x, const void* bias, void* y, int N, int K,
                        cudaStream_t s, const NormArgs& na) {
  const size_t smem = (size_t)WK * wk_scale_bytes<G, ASYM>(K, WK) + (size_t)K * 2 + (size_t)(K / G) * 4;
  auto kern = w4a16_gemv_wk_kernel<G, ASYM, ACT, NORM, WK>;
  if (const cudaError_t e = edgeprof_gemv::allow_smem(kern, smem); e != cudaSuccess) return e;
  const W4Args a = w4_args(qw, sz, x, bias, y, nullptr, nullptr, N, K, K / 64);
  return edgeprof_gemv::launch_ex(!ACT || edgeprof_gemv::pdl_act_enabled(), 0, kern, dim3(N / 16), dim3(WK * 32),
                                 smem, s, a, na, edgeprof_gemv::prefetch_tiles_now());
}

template <int WK>
cudaError_t wk_launch_w(bool asym, bool act, bool norm, const void* qw, const void* sz, const void* x,
                        const void* bias, void* y, int N, int K, cudaStream_t s, const NormArgs& na) {
#define EDGEPROF_WK(A, C, M) wk_launch_t<128, A, C, M, WK>(qw, sz, x, bias, y, N, K, s, na)
  if (norm) return asym ? EDGEPROF_WK(true, false, true) : EDGEPROF_WK(false, false, true);
  if (asym) return act ? EDGEPROF_WK(true, true, false) : EDGEPROF_WK(true, false, false);
  return act ? EDGEPROF_WK(false, true, false) : EDGEPROF_WK(false, false, false);
#undef EDGEPROF_WK
}

}  // namespace edgeprof_w4

// warps per CTA of the wk variants (w4cuda.VARIANTS: 44 "wk4", 45 "wk6", 46 "wk8", 47 "wk10"); 0 for any other id
int edgeprof_w4a16_wk_warps(int variant) {
  return variant == 44 ? 4 : variant == 45 ? 6 : variant == 46 ? 8 : variant == 47 ? 10 : 0;
}

// The wk launch of `variant` (edgeprof_w4a16_wk_warps), group 128, one K split (the CTA's warps split K): as
// edgeprof_w4a16_lat_launch's arguments, without the split-K workspace. cudaErrorInvalidValue for another variant,
// group or split count, or K not a multiple of 128.
int edgeprof_w4a16_wk_launch(int variant, int group, bool asym, bool act, bool norm, const void* qw, const void* sz,
                             const void* x, const void* bias, void* y, int N, int K, int splits, cudaStream_t s,
                             const edgeprof_w4::NormArgs& na) {
  using namespace edgeprof_w4;
  if (group != 128 || splits != 1 || K % 128 != 0 || (norm && act)) return (int)cudaErrorInvalidValue;
  switch (edgeprof_w4a16_wk_warps(variant)) {
    case 4: return wk_launch_w<4>(asym, act, norm, qw, sz, x, bias, y, N, K, s, na);
    case 6: return wk_launch_w<6>(asym, act, norm, qw, sz, x, bias, y, N, K, s, na);
    case 8: return wk_launch_w<8>(asym, act, norm, qw, sz, x, bias, y, N, K, s, na);
    case 10: return wk_launch_w<10>(asym, act, norm, qw, sz, x, bias, y, N, K, s, na);
    default: return (int)cudaErrorInvalidValue;
  }
}
