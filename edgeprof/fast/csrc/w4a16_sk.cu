// The W4A16 GEMV as a stream-K launch: the variant "sk16" and its diagnostics "sk16n", "sk16nx" (issue 12, twenty-first
// pass; in both modules). Measured on an H200 (results/h200/2026-11-29-streamk): no faster than split-K on down, since
// its own stream is slower (see docs/int4-kernel.md, "Twenty-first pass"). The forms measured slower still (sk8, sk16u8,
// sk16p, sk16x, sk16xu8) and the tagged split-K finish (scxw) were removed; their code is in commit 552b418.
//
// Why: down (K = 18944, N = 3584) on an H200 streams its weights for ~9.6 us as a plain split-K launch and then spends
// 1.5 us in the ticket and the second pass over the splits' partials (results/h200/2026-11-29-timeline r121, r124): the
// splits of a column all end together, so their sums can only meet after the last weight arrived. Stream-K (Osama et
// al., "Stream-K: Work-centric Parallel Decomposition for Dense Matrix-Matrix Multiplication", 2023) cuts the work
// instead: the NB x NG (row block, group) units in row-block order are split into P equal contiguous ranges, one per
// CTA, P = the SM count. A CTA's range is longer than a row block (host-checked), so each row block is cut between at
// most two CTAs: CTA i ends with the HEAD of a row block whose TAIL CTA i + 1 computes FIRST. The tail's sums are
// published a long time before CTA i needs them, so the end of the launch has no ticket and no wait: the owner adds
// one published value per row (ld.relaxed, usually a hit on its first try) to its own sums.
//
// Inside a CTA the WARPS warps take the range's chunks (U tiles, whole groups, never across a row block) round robin,
// so the CTA moves through its range in order and its first row block (a tail) is done early. A warp's sums go into a
// shared-memory slot per (row block, warp) when it moves on to the next row block; the last warp to arrive at a row
// block (a shared-memory counter) adds the slots in warp order and then publishes the tail, writes a row block it owns
// whole, or adds the published tail to its head and writes it. Every sum runs in a fixed order, so y is deterministic
// (not bitwise split-K's: the partition differs).
//
// The published tail is one 64-bit word per row, (1 << 32) | float bits, written and read with single-copy-atomic
// 64-bit accesses: no flag, no fence, no acquire round trip before the value. The owner resets it to 0 for the next
// launch (which writes only after its PDL wait, i.e. after this launch ended). Workspace: 16 words per row block,
// zeros at the start (W4CudaLinear allocates it so).
//
// x: the whole of K staged in shared memory once per CTA (every range spans all of K), with the group sums in the
// staging pass (stage_x's XG), while the warps' first chunks stream across the PDL wait. Group 128, bf16 mma.
#include "w4a16_kernels.cuh"

namespace edgeprof_w4 {

constexpr int kSkRowBlocksMax = 8;  // row blocks one CTA's range may touch (host-checked)

using edgeprof_gemv::kTagSpinMax;
using edgeprof_gemv::ld_relaxed_u64;
using edgeprof_gemv::st_relaxed_u64;

// The published tail of row block nb, rows 16 nb + lane (lane < 16): waits until CTA i + 1 has published it, then
// resets the word for the next launch.
__device__ __forceinline__ float sk_take_tail(unsigned long long* pub, int nb, int lane) {
  unsigned long long* p = pub + (size_t)nb * 16 + lane;
  unsigned long long v = ld_relaxed_u64(p);
  for (long long n = 0; !edgeprof_gemv::tagged(v); v = ld_relaxed_u64(p))  // CTA i + 1 published it at its start
    if (++n > kTagSpinMax) __trap();
  st_relaxed_u64(p, 0ull);
  return __uint_as_float((uint32_t)v);
}

// One CTA of the stream-K launch (see the file's header). G = 128 here; U tiles per chunk; a CTA of WARPS warps.
// MODE 0: the GEMV; 1 (the diagnostic "sk16n"): each chunk's dequant and mma replaced by an XOR of its words, every load,
// the x staging and the finish kept (y wrong by design: the stream's own limit in this launch structure); 2 (the
// diagnostic "sk16nx"): MODE 1 without the x staging and its group sums either.
template <int G, bool ASYM, bool ACT, int WARPS, int U, int MODE = 0>
__global__ void __launch_bounds__(WARPS * 32, 1) w4a16_gemv_sk_kernel(W4Args a) {
  constexpr int TPG = G / 64, CG = U / TPG, GPC = U * 64 / G;  // tiles per group, groups per chunk
  static_assert(U % TPG == 0 && CG >= 1, "a chunk holds whole groups");
  using ST = typename std::conditional<ASYM, uint2, uint32_t>::type;
  extern __shared__ uint4 smem_raw[];
  const int K = a.K, NG = K / G, NB = a.N / 16;
  uint32_t* xs = reinterpret_cast<uint32_t*>(smem_raw);  // x [K] bf16, stage_x's permutation
  float* sxs = reinterpret_cast<float*>(xs + K / 2);      // sum of x over each group [NG]
  __shared__ float slot[kSkRowBlocksMax][WARPS][16];      // each warp's sums per row block of the range
  __shared__ int arrived[kSkRowBlocksMax];
  __shared__ float tail_in[16];  // the last row block's published tail, fetched by its first warp to arrive
  __shared__ volatile int tail_ready;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, c = lane & 3;
  // this CTA's range: chunks [c_lo, c_hi) of CG groups (units u = nb * NG + g, row-block order)
  const long long nch = (long long)NB * NG / CG;
  const long long c_lo = (long long)blockIdx.x * nch / gridDim.x, c_hi = (long long)(blockIdx.x + 1) * nch / gridDim.x;
  const long long u_lo = c_lo * CG, u_hi = c_hi * CG;
  const int nb0 = (int)(u_lo / NG), rbs = (int)((u_hi - 1) / NG) - nb0 + 1;  // row blocks nb0 .. nb0 + rbs - 1
  const int nc = (int)(c_hi - c_lo);
  const bool head_last = (long long)(nb0 + rbs) * NG > u_hi;  // the last row block continues in CTA i + 1
  unsigned long long* pub = reinterpret_cast<unsigned long long*>(a.partial);

  for (int e = threadIdx.x; e < kSkRowBlocksMax * WARPS * 16; e += blockDim.x) (&slot[0][0][0])[e] = 0.f;
  if (threadIdx.x < kSkRowBlocksMax) arrived[threadIdx.x] = 0;
  if (threadIdx.x == 0) tail_ready = 0;

  // the row-block layout makes unit u's tiles the linear tiles u * TPG ..: qw [NB * T][32] uint4, sz [NB * NG][8] ST
  auto load_chunk = [&](int j, uint4 (&wv)[U], ST (&sv)[GPC]) {
    const long long u = (c_lo + j) * CG;
    const uint4* wp = a.qw + (size_t)u * TPG * 32 + lane;
    const ST* sp = reinterpret_cast<const ST*>(a.sz) + (size_t)u * 8 + gq;
#pragma unroll
    for (int t = 0; t < U; ++t) wv[t] = ld_stream(wp + t * 32);
#pragma unroll
    for (int gi = 0; gi < GPC; ++gi) sv[gi] = __ldg(sp + gi * 8);
  };
  uint4 wa[U];
  ST sa[GPC];
  if (warp < nc) load_chunk(warp, wa, sa);  // the first chunk streams across the PDL wait
  pdl_wait();  // x comes from an earlier kernel
  pdl_launch_dependents();
  if constexpr (MODE != 2) stage_x<ACT, true, 0, false, G>(a.x, K, 0, K, xs, nullptr, 0.f, sxs);
  __syncthreads();  // x, its group sums, the zeroed slots and counters

  // row block r of the range is done in this CTA: one warp adds the warps' slots in warp order (lane < 16: row
  // 16 nb + lane) and publishes a tail, writes a row block it owns whole, or adds the published tail to its head
  auto finish_block = [&](int r) {
    const int nb = nb0 + r;
    const bool starts_here = (long long)nb * NG >= u_lo, ends_here = (long long)(nb + 1) * NG <= u_hi;
    if (!ends_here)
      for (long long n = 0; !tail_ready;)
        if (++n > kTagSpinMax) __trap();
    __threadfence_block();
    if (lane >= 16) return;
    const volatile float* sl = &slot[r][0][0];
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) s += sl[w * 16 + lane];
    const int row = 16 * nb + lane;
    if (!starts_here) {  // a tail: CTA i - 1 owns the row block
      st_relaxed_u64(pub + (size_t)nb * 16 + lane, edgeprof_gemv::tag_float(s));
      return;
    }
    if (!ends_here) s += tail_in[lane];  // head + tail, in this order
    a.y[row] = __float2bfloat16(s + (a.bias ? __bfloat162float(a.bias[row]) : 0.f));
  };
  // this warp is past row block r: count it; the last warp to arrive finishes it. The first to arrive at a last row
  // block that continues in CTA i + 1 fetches that CTA's published tail meanwhile.
  auto arrive = [&](int r) {
    __syncwarp();
    int old = 0;
    if (lane == 0) {
      __threadfence_block();
      old = atomicAdd(&arrived[r], 1);
    }
    old = __shfl_sync(0xffffffffu, old, 0);
    if (old == 0 && head_last && r == rbs - 1) {
      if (lane < 16) tail_in[lane] = sk_take_tail(pub, nb0 + r, lane);
      __syncwarp();
      if (lane == 0) {
        __threadfence_block();
        tail_ready = 1;
      }
    }
    if (old == WARPS - 1) finish_block(r);
  };
  auto flush = [&](int r, float y0, float y1) {
    if (c == 0) {
      slot[r][warp][gq] = y0;
      slot[r][warp][gq + 8] = y1;
    }
  };

  constexpr uint32_t magic = 0x43004300u;  // bf16 128.0 in both halves (dq_reg)
  const uint2* xq = reinterpret_cast<const uint2*>(xs) + c;
  float y0 = 0.f, y1 = 0.f;  // rows 16 nb + gq and + 8 of the warp's current row block
  int r_cur = 0;
  uint32_t junk = 0;  // MODE 1, 2
  for (int j = warp; j < nc; j += WARPS) {
    uint4 wb[U];
    ST sb[GPC];
    if (j + WARPS < nc) load_chunk(j + WARPS, wb, sb);  // the warp's next chunk in flight during this one's math
    const long long u = (c_lo + j) * CG;
    const int nb = (int)(u / NG), g = (int)(u - (long long)nb * NG), r = nb - nb0;
    if (r != r_cur) {  // past row block r_cur (and any it skipped)
      flush(r_cur, y0, y1);
      for (int q = r_cur; q < r; ++q) arrive(q);
      r_cur = r;
      y0 = y1 = 0.f;
    }
    if constexpr (MODE != 0) {
#pragma unroll
      for (int t = 0; t < U; ++t) junk ^= wa[t].x ^ wa[t].y ^ wa[t].z ^ wa[t].w;
#pragma unroll
      for (int gi = 0; gi < GPC; ++gi) junk ^= reinterpret_cast<const uint32_t*>(&sa[gi])[0];
      y0 = __uint_as_float(junk & 0x3f7fffffu);  // stands for the sums (keeps every load live)
    } else {
      chunk_math<G, ASYM, true>(wa, sa, g * TPG, NG * TPG, false, xq, sxs, magic, y0, y1);
    }
#pragma unroll
    for (int t = 0; t < U; ++t) wa[t] = wb[t];
#pragma unroll
    for (int gi = 0; gi < GPC; ++gi) sa[gi] = sb[gi];
  }
  flush(r_cur, y0, y1);
  for (int q = r_cur; q < rbs; ++q) arrive(q);
}

// Whether the stream-K launch of P CTAs covers N x K with every row block cut between at most two CTAs (every range
// at least a row block long) and every range within kSkRowBlocksMax row blocks
inline bool sk_fits(int N, int K, int G, int CG, int P) {
  if (N % 16 || K % G || P < 1) return false;
  const long long NG = K / G, nch = (long long)(N / 16) * NG / CG;
  if (NG % CG) return false;
  const long long shortest = nch / P * CG, longest = (nch + P - 1) / P * CG;
  return shortest >= NG && (longest + NG - 1) / NG + 1 <= kSkRowBlocksMax;
}

template <bool ASYM, bool ACT, int WARPS, int U, int MODE>
cudaError_t sk_launch_t(const void* qw, const void* sz, const void* x, const void* bias, void* y, float* partial, int N,
                        int K, int P, cudaStream_t s) {
  const size_t smem = (size_t)K * 2 + (size_t)(K / 128) * 4;  // x and its group sums
  auto kern = w4a16_gemv_sk_kernel<128, ASYM, ACT, WARPS, U, MODE>;
  if (const cudaError_t e = edgeprof_gemv::allow_smem(kern, smem); e != cudaSuccess) return e;
  const W4Args a = w4_args(qw, sz, x, bias, y, partial, nullptr, N, K, K / 64);
  return edgeprof_gemv::launch_opt(!ACT || edgeprof_gemv::pdl_act_enabled(), kern, dim3(P), dim3(WARPS * 32), smem,
                                   s, a);
}

template <int WARPS, int U, int MODE = 0>
cudaError_t sk_launch_w(bool asym, bool act, const void* qw, const void* sz, const void* x, const void* bias, void* y,
                        float* partial, int N, int K, int P, cudaStream_t s) {
#define EDGEPROF_SK(A, C) sk_launch_t<A, C, WARPS, U, MODE>(qw, sz, x, bias, y, partial, N, K, P, s)
  if (asym) return act ? EDGEPROF_SK(true, true) : EDGEPROF_SK(true, false);
  return act ? EDGEPROF_SK(false, true) : EDGEPROF_SK(false, false);
#undef EDGEPROF_SK
}

}  // namespace edgeprof_w4

// The stream-K launch of `variant`, group 128, one K split, grid_x CTAs (0: the SM count; at most the SM count, so that
// every CTA is resident while another waits for its tail): 57 "sk16" (16 warps, 4 tiles per chunk), 58 "sk16n" (sk16
// without its math) and 59 "sk16nx" (nor its x staging): diagnostics, y wrong by design. partial: 16 uint64 per row
// block, zeros. cudaErrorInvalidValue where the shape does not fit (sk_fits) or for another variant, group or split count.
int edgeprof_w4a16_sk_launch(int variant, int group, bool asym, bool act, const void* qw, const void* sz, const void* x,
                             const void* bias, void* y, float* partial, int N, int K, int splits, int grid_x,
                             cudaStream_t s) {
  using namespace edgeprof_w4;
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return (int)cudaErrorInvalidValue;
  const int P = grid_x > 0 ? grid_x : sms;
  const bool known = variant == 57 || variant == 58 || variant == 59;
  if (!known || group != 128 || splits != 1 || partial == nullptr || P > sms || !sk_fits(N, K, 128, 2, P))
    return (int)cudaErrorInvalidValue;
#define EDGEPROF_SK_ARGS asym, act, qw, sz, x, bias, y, partial, N, K, P, s
  switch (variant) {
    case 57: return sk_launch_w<16, 4>(EDGEPROF_SK_ARGS);
    case 58: return sk_launch_w<16, 4, 1>(EDGEPROF_SK_ARGS);
    default: return sk_launch_w<16, 4, 2>(EDGEPROF_SK_ARGS);  // 59
  }
#undef EDGEPROF_SK_ARGS
}
