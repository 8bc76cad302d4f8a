// The W4A16 GEMV's device code and launch templates (see w4a16_gemv.cu's header for the layout and math),
// shared by the default launches (w4a16_gemv.cu) and the tuning variants (w4a16_tune.cu): two translation
// units, so the JIT build compiles them in parallel.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cooperative_groups.h>
#include <cuda_runtime.h>
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "gemv_common.cuh"

namespace edgeprof_w4 {

constexpr int kWarps = 4;  // warps per CTA; each owns one 16-row block, all share one K slice

using edgeprof_gemv::bf_hi;
using edgeprof_gemv::bf_lo;
using edgeprof_gemv::ld_stream;
using edgeprof_gemv::pdl_launch_dependents;
using edgeprof_gemv::pdl_wait;

// c += A B on the tensor core, m16n8k16, fp32 accumulators; the operands are bf16 (the default kernels) or fp16
// (F16 kernels: x staged as fp16 with a power-of-two scale, weights 1024 + q). One asm text for both.
#define EDGEPROF_MMA_M16N8K16(T)                                                                          \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." T "." T ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, " \
               "{%0,%1,%2,%3};"                                                                            \
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                                            \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  EDGEPROF_MMA_M16N8K16("bf16");
}
__device__ __forceinline__ void mma_f16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  EDGEPROF_MMA_M16N8K16("f16");
}
#undef EDGEPROF_MMA_M16N8K16

// F16 dequantization of one packed word into the 4 A registers of its mma, Marlin's fp16 trick: fp16 has 10
// mantissa bits, so a nibble at bits 0-3 OR at bits 4-7 of a half ORed into 1024.0 (0x6400) is exact. Registers
// 0 and 2 (row g of the fragment) get {1024 + q, 1024 + q'}; registers 1 and 3 (row g + 8) are masked in place
// without a shift and get {1024 + 16 q, 1024 + 16 q'}: the epilogue divides that row's sum by 16. 4 LOP3 + 1 SHF
// per word, where bf16 (7 mantissa bits: a nibble at bits 4-7 would reach the exponent) needs 4 LOP3 + 3 SHF.
__device__ __forceinline__ void dq_word_f16(uint32_t w, uint32_t (&a)[4], uint32_t magic) {
  const uint32_t w8 = w >> 8;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(a[0]) : "r"(w), "n"(0x000f000f), "r"(magic));
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(a[1]) : "r"(w), "n"(0x00f000f0), "r"(magic));
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(a[2]) : "r"(w8), "n"(0x000f000f), "r"(magic));
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(a[3]) : "r"(w8), "n"(0x00f000f0), "r"(magic));
}

__device__ __forceinline__ float round_bf16(float v) { return __bfloat162float(__float2bfloat16(v)); }

// A register r of one mma from a packed word: {128 + q, 128 + q'} as bf16x2 = ((w >> 4r) & 0x000f000f) | 0x43004300.
// FUSED: one 3-input LOP3 ((a & b) | c, LUT 0xEA) with the magic in a register; written as C, the compiler
// emits two (an AND and an OR: a LOP3 takes one 32-bit immediate), 16 extra instructions per 64-column tile
// (76 instead of 63 per tile; SASS, sm_90, nvcc 13.0). The default kernel uses FUSED since it measured
// 1.12-1.19x faster as the tune variant "l3" (H200, results/h200/2026-11-28-decode-step: gate_up 0.606 ->
// 0.702 of copy bandwidth, down 0.480 -> 0.571); the unfused form is kept for the tune variants that measured it.
template <bool FUSED>
__device__ __forceinline__ uint32_t dq_reg(uint32_t w, int r, uint32_t magic) {
  const uint32_t sh = w >> (4 * r);
  if constexpr (FUSED) {
    uint32_t d;
    asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(sh), "n"(0x000f000f), "r"(magic));
    return d;
  } else {
    return (sh & 0x000f000fu) | magic;
  }
}

// Input value k of the GEMV; ACT: silu(gate[k]) * up[k] rounded as the unfused silu_mul kernel does
template <bool ACT>
__device__ __forceinline__ uint32_t load_x_pair(const __nv_bfloat16* x, int K, int k) {
  if constexpr (!ACT) {
    return *reinterpret_cast<const uint32_t*>(x + k);
  } else {
    uint32_t g2 = *reinterpret_cast<const uint32_t*>(x + k);
    uint32_t u2 = *reinterpret_cast<const uint32_t*>(x + K + k);
    float g[2] = {bf_lo(g2), bf_hi(g2)}, u[2] = {bf_lo(u2), bf_hi(u2)};
    __nv_bfloat16 o[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float act = round_bf16(g[i] / (1.0f + __expf(-g[i])));
      o[i] = __float2bfloat16(act * u[i]);
    }
    return *reinterpret_cast<uint32_t*>(o);
  }
}

// 8 bf16 of x (L2-resident). CG: through L2 only, for an input written by other CTAs of the same launch (the
// fused MLP's down items read the gate_up output): the non-coherent path may only read what is constant for the
// whole launch.
template <bool CG = false>
__device__ __forceinline__ uint4 ld_x16(const __nv_bfloat16* p) {
  if constexpr (CG) return __ldcg(reinterpret_cast<const uint4*>(p));
  return __ldg(reinterpret_cast<const uint4*>(p));
}

// silu(g) * u for a bf16 pair of each, rounded as the unfused silu_mul kernel does
__device__ __forceinline__ uint32_t act_pair(uint32_t g2, uint32_t u2) {
  float g[2] = {bf_lo(g2), bf_hi(g2)}, u[2] = {bf_lo(u2), bf_hi(u2)};
  __nv_bfloat16 o[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) o[i] = __float2bfloat16(round_bf16(g[i] / (1.0f + __expf(-g[i]))) * u[i]);
  return *reinterpret_cast<uint32_t*>(o);
}

// The fused RMSNorm input (NORM kernels): the GEMV's input is rmsnorm(x + res) * w, computed while x is
// staged, so the separate add_rmsnorm launch goes away. Rounding as edgeprof-fast's Triton add_rmsnorm
// (and HF): h = bf16(x + res); out = bf16(bf16(h * rstd) * w), rstd = 1 / sqrt(mean(h^2) + eps) in fp32.
// res may be null (the first layer: h = x). CTA (0, 0) also writes h to res_out, the next residual.
struct NormArgs {
  const __nv_bfloat16* res;  // [K] or nullptr
  const __nv_bfloat16* w;    // [K] the norm weight
  __nv_bfloat16* res_out;    // [K] h, written by CTA (0, 0)
  float eps;
};

__device__ __forceinline__ uint32_t bf16x2(float lo, float hi) {
  __nv_bfloat16 o[2] = {__float2bfloat16(lo), __float2bfloat16(hi)};
  return *reinterpret_cast<uint32_t*>(o);
}

// h = bf16(x + r) for a bf16 pair of each
__device__ __forceinline__ uint32_t add_pair(uint32_t x2, uint32_t r2) {
  return bf16x2(bf_lo(x2) + bf_lo(r2), bf_hi(x2) + bf_hi(r2));
}

// bf16(bf16(h * rstd) * w) for a bf16 pair of each
__device__ __forceinline__ uint32_t norm_pair(uint32_t h2, uint32_t w2, float rstd) {
  return bf16x2(round_bf16(bf_lo(h2) * rstd) * bf_lo(w2), round_bf16(bf_hi(h2) * rstd) * bf_hi(w2));
}

// The CTA's sum of each thread's ss (norm_rstd's or NORM 3's stage_x's sums of h^2): warps by shuffles, then the
// CTA's warps in order, behind one CTA barrier (every thread calls it; every thread gets the sum). The same
// thread-to-vector map in every CTA, so CTAs over the same inputs get bitwise the same sum.
template <int WARPS>
__device__ __forceinline__ float cta_sum(float ss) {
  __shared__ float red[WARPS];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < WARPS; ++w) total += red[w];
  return total;
}

// rstd = 1 / sqrt(mean(h^2) + eps) from the sum of h^2 over all K inputs
__device__ __forceinline__ float rstd_of(float sum_h2, int K, float eps) {
  return 1.0f / sqrtf(sum_h2 / (float)K + eps);
}

// rstd of h = x + res over all K inputs (every CTA computes it: 2K bf16 from L2); the writer CTA (the one of
// row-block column 0, split 0) writes h. Every thread of the CTA calls it (it has barriers).
// RV: 16-byte vectors of x (and of res) each thread has in flight before it uses any. RV = 1 is the loop as first
// measured: one L2 round trip per vector, ~3.5 in a row at K = 3584 while only the first weight chunk streams. The
// sums run in the same order for every RV, so rstd is bitwise the same.
template <int WARPS, int RV = 1>
__device__ __forceinline__ float norm_rstd(const __nv_bfloat16* __restrict__ x, const NormArgs& na, int K,
                                           bool writer) {
  float ss = 0.f;
  for (int v0 = threadIdx.x; v0 < K / 8; v0 += blockDim.x * RV) {
    uint4 a[RV], r[RV];
#pragma unroll
    for (int e = 0; e < RV; ++e) {
      const int v = v0 + e * blockDim.x;
      if (v < K / 8) {
        a[e] = ld_x16(x + 8 * v);
        r[e] = na.res ? ld_x16(na.res + 8 * v) : make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int e = 0; e < RV; ++e) {
      const int v = v0 + e * blockDim.x;
      if (v >= K / 8) break;
      const uint32_t aw[4] = {a[e].x, a[e].y, a[e].z, a[e].w}, rw[4] = {r[e].x, r[e].y, r[e].z, r[e].w};
      uint32_t hw[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        hw[q] = add_pair(aw[q], rw[q]);
        ss = fmaf(bf_lo(hw[q]), bf_lo(hw[q]), ss);
        ss = fmaf(bf_hi(hw[q]), bf_hi(hw[q]), ss);
      }
      if (writer) *reinterpret_cast<uint4*>(na.res_out + 8 * v) = make_uint4(hw[0], hw[1], hw[2], hw[3]);
    }
  }
  return rstd_of(cta_sum<WARPS>(ss), K, na.eps);
}

// One 16-byte vector of the GEMV's input, 8 values: x (g), silu(gate) * up (ACT: g gate, u up) or
// rmsnorm(x + res) * w (NORM 1 / 2: g x, u res, nw the norm weight), as its 4 bf16 pairs into the staged slice at
// dst[0], dst[2], dst[4], dst[6] (the permutation of stage_x, when `in`). Returns the sum of its 8 values (the group
// sums; unused, it compiles away).
// NORM 3 (the deferred norm, stage_x_sums): stages bf16(h * w) without rstd, adds the squares of h = bf16(x + res)
// to *ss and, where h_out is set, writes h there (the next residual).
template <bool ACT, int NORM>
__device__ __forceinline__ float stage_vec(const uint4& g, const uint4& u, const uint4& nw, uint32_t* dst, bool in,
                                           float rstd, float* ss = nullptr, uint4* h_out = nullptr) {
  const uint32_t gw[4] = {g.x, g.y, g.z, g.w};
  uint32_t hw[4];
  float s = 0.f;
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    uint32_t o = gw[q];
    if constexpr (ACT) {  // u and nw are read only where this form uses them (the caller may leave them unset)
      const uint32_t uw[4] = {u.x, u.y, u.z, u.w};
      o = act_pair(gw[q], uw[q]);
    } else if constexpr (NORM == 3) {
      const uint32_t uw[4] = {u.x, u.y, u.z, u.w}, ww[4] = {nw.x, nw.y, nw.z, nw.w};
      hw[q] = add_pair(gw[q], uw[q]);
      if (in) {  // a lane past the slice's end holds no vector (stage_x's XG pass keeps it in the loop)
        *ss = fmaf(bf_lo(hw[q]), bf_lo(hw[q]), *ss);
        *ss = fmaf(bf_hi(hw[q]), bf_hi(hw[q]), *ss);
      }
      o = bf16x2(bf_lo(hw[q]) * bf_lo(ww[q]), bf_hi(hw[q]) * bf_hi(ww[q]));
    } else if constexpr (NORM != 0) {
      const uint32_t uw[4] = {u.x, u.y, u.z, u.w}, ww[4] = {nw.x, nw.y, nw.z, nw.w};
      o = norm_pair(add_pair(gw[q], uw[q]), ww[q], rstd);
    }
    if (in) dst[2 * q] = o;
    s += bf_lo(o) + bf_hi(o);
  }
  if constexpr (NORM == 3)
    if (in && h_out) *h_out = make_uint4(hw[0], hw[1], hw[2], hw[3]);
  return s;
}

// The sum over a group of XG inputs of the per-vector sums `s` (stage_vec) of XG / 8 neighbouring lanes: every lane
// of the warp calls it (shuffles); a lane without a vector passes in = false. The group's first lane (v % (XG / 8) ==
// 0) gets the sum.
template <int XG>
__device__ __forceinline__ float group_sum(float s, bool in) {
  if (!in) s = 0.f;
#pragma unroll
  for (int off = XG / 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  return s;
}

// Stage the x slice [k0, k0 + klen) in shared memory, permuted: pair i of 16-column block b holds
// columns 2c, 2c+1 (i = 8b + 2c) and 2c+8, 2c+9 (i = 8b + 2c + 1), so lane c later reads its whole
// B fragment with one 64-bit load. XVEC: 16-byte loads, XV of them in flight per thread before any is
// used (one L2 round trip for the whole slice); else one 32-bit load per pair, a round trip per
// loop iteration (the kernel as first measured, kept as variant "xscalar").
// NORM: 0 no norm; 1 the fused norm as first measured; 2 the same with its loads batched (norm_rstd's RV = 4,
// 4 vectors of x, res and weight in flight here): the same values, fewer L2 round trips before the weight loop.
// XG (the variants scx / clscx): also the sum of x over each group of XG columns into sxs, in this same pass: each
// thread adds its vector's 8 staged values, the XG / 8 lanes of a group add theirs with shuffles (a group never
// straddles a warp: a warp's 32 vectors start at a multiple of 32), so the separate group-sum pass over shared
// memory and one CTA barrier go away. The sums run in another order than that pass's (not bitwise base's).
// NORM 3 (the deferred norm): stages bf16(h * w) of the slice, returns this thread's sum of h^2 over it (the caller
// adds the CTA's, and a cluster's splits, into rstd), and a writer CTA writes the slice's h to na->res_out.
template <bool ACT, bool XVEC, int NORM = 0, bool CG = false, int XG = 0>
__device__ __forceinline__ float stage_x(const __nv_bfloat16* __restrict__ x, int K, int k0, int klen,
                                         uint32_t* __restrict__ xs, const NormArgs* na = nullptr, float rstd = 0.f,
                                         float* __restrict__ sxs = nullptr, bool writer = false) {
  static_assert(!(NORM && (ACT || !XVEC)), "the fused norm stages with 16-byte loads, without SiLU*up");
  static_assert(XG == 0 || (XVEC && XG % 8 == 0 && XG <= 256), "group sums in the vector pass: whole vectors, one warp");
  float ss = 0.f;  // NORM 3: this thread's sum of h^2
  if constexpr (!XVEC) {
    for (int i = threadIdx.x; i < klen / 2; i += blockDim.x) {
      const int b = i >> 3, j = i & 7;
      xs[i] = load_x_pair<ACT>(x, K, k0 + b * 16 + ((j >> 1) << 1) + ((j & 1) << 3));
    }
  } else {
    constexpr int XV = NORM == 1 ? 2 : 4;  // NORM 1 loads three vectors per step (x, res, weight): fewer in flight
    static_assert(NORM != 3 || XG != 0, "the deferred norm stages in the group-sum pass (scx / scxa / clscx)");
    const int nvec = klen / 8;  // vector v = columns 8v..8v+7 of the slice: block v/2, half h = v%2
    // XG: warp-uniform trip counts (every lane must reach the shuffles); a lane past the end adds 0
    const int lane0 = XG ? (int)(threadIdx.x & 31) : 0;
    for (int v0 = threadIdx.x; v0 - lane0 < nvec; v0 += blockDim.x * XV) {
      uint4 g[XV], u[XV], nw[XV];
#pragma unroll
      for (int e = 0; e < XV; ++e) {
        const int v = v0 + e * blockDim.x;
        if (v < nvec) {
          g[e] = ld_x16<CG>(x + k0 + 8 * v);
          if constexpr (ACT) u[e] = ld_x16<CG>(x + K + k0 + 8 * v);
          if constexpr (NORM != 0) {
            u[e] = na->res ? ld_x16(na->res + k0 + 8 * v) : make_uint4(0, 0, 0, 0);
            nw[e] = ld_x16(na->w + k0 + 8 * v);
          }
        }
      }
#pragma unroll
      for (int e = 0; e < XV; ++e) {
        const int v = v0 + e * blockDim.x;
        if (v - lane0 >= nvec) break;  // XG: the whole warp is past the end (warp-uniform)
        const bool in = v < nvec;
        uint32_t* dst = xs + 8 * (v >> 1) + (v & 1);  // pair p (columns 8h + 2p, +1) -> i = 8b + 2p + h
        uint4* h_out = NORM == 3 && writer ? reinterpret_cast<uint4*>(na->res_out + k0 + 8 * v) : nullptr;
        const float s = stage_vec<ACT, NORM>(g[e], u[e], nw[e], dst, in, rstd, &ss, h_out);  // XG: this vector's sum
        if constexpr (XG != 0) {
          const float gs = group_sum<XG>(s, in);
          if (in && (v & (XG / 8 - 1)) == 0) sxs[v / (XG / 8)] = gs;
        }
      }
    }
  }
  return ss;
}

// The CTA's x slice in shared memory (stage_x), then the sum of x over each of its ng groups (sxs,
// for the zero point: y += s * (acc - (128 + z) * sum x)); one warp per group, the CTA's WARPS warps in turn.
// F16: the slice is then rewritten as fp16 times 2^-e, e chosen from the slice's largest |x| so that every value
// fits fp16 (|x| 2^-e < 2^15) with bf16's 8 significant bits intact (exact unless it falls below fp16's normal
// range, 2^-14 of the largest); sxs is scaled the same way. Returns the factor the CTA's sums are multiplied by
// at the end (2^e; 1 without F16). Every thread of the CTA calls it (it has barriers).
// XSUM: the group sums are added in stage_x's own pass (its XG), not in a second pass over shared memory.
// NORM 3, the deferred norm (XSUM): no rstd pass before the staging. The slice is staged as bf16(h * w),
// h = bf16(x + res), the same pass adds h^2, and it returns the CTA's sum of h^2 over its slice (not a factor): the
// caller scales its row sums by rstd, a per-row scale of a linear map (gemv_cta; a cluster's K splits add their sums
// in finish_rows_cluster first). One L2 pass over x and res and one barrier fewer than NORM 1; rounding: the product
// h * w is rounded once instead of bf16(bf16(h * rstd) * w).
template <int G, int WARPS, bool ACT, bool XVEC, int NORM = 0, bool F16 = false, bool CG = false, bool XSUM = false>
__device__ __forceinline__ float stage_x_sums(const __nv_bfloat16* __restrict__ x, int K, int k0, int klen, int ng,
                                              uint32_t* __restrict__ xs, float* __restrict__ sxs,
                                              const NormArgs* na = nullptr, bool norm_writer = false) {
  static_assert(!(XSUM && F16), "the fp16 staging needs the slice's largest |x|: the group-sum pass finds it");
  static_assert(NORM != 3 || XSUM, "the deferred norm: the group sums in the staging pass");
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if constexpr (NORM == 3) {  // the CTA's sum of h^2 over its slice; the writer writes the slice's h
    return cta_sum<WARPS>(stage_x<ACT, XVEC, NORM, CG, G>(x, K, k0, klen, xs, na, 0.f, sxs, norm_writer));
  } else {
    float rstd = 0.f;
    if constexpr (NORM != 0) rstd = norm_rstd<WARPS, NORM == 2 ? 4 : 1>(x, *na, K, norm_writer);
    if constexpr (XSUM) {
      stage_x<ACT, XVEC, NORM, CG, G>(x, K, k0, klen, xs, na, rstd, sxs);
      __syncthreads();
      return 1.f;
    }
    stage_x<ACT, XVEC, NORM, CG>(x, K, k0, klen, xs, na, rstd);
    __syncthreads();
    float m = 0.f;  // F16: this lane's largest |x|
    for (int gi = warp; gi < ng; gi += WARPS) {
      const __nv_bfloat16* xg = reinterpret_cast<const __nv_bfloat16*>(xs) + gi * G;
      float s = 0.f;
#pragma unroll
      for (int e = 0; e < G / 32; ++e) {
        const float v = __bfloat162float(xg[lane * (G / 32) + e]);
        s += v;
        if constexpr (F16) m = fmaxf(m, fabsf(v));
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      if (lane == 0) sxs[gi] = s;
    }
    if constexpr (!F16) {
      __syncthreads();
      return 1.f;
    } else {
      __shared__ float wmax[WARPS];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
      if (lane == 0) wmax[warp] = m;
      __syncthreads();
#pragma unroll
      for (int w = 0; w < WARPS; ++w) m = fmaxf(m, wmax[w]);
      const int ex = m > 0.f ? (int)((__float_as_uint(m) >> 23) & 0xff) - 127 : 0;  // m in [2^ex, 2^(ex+1))
      const int e = max(ex - 14, -100);  // m 2^-e < 2^15 <= 65504; both 2^e and 2^-e stay normal fp32
      const float down = __uint_as_float((uint32_t)(127 - e) << 23);
      for (int i = threadIdx.x; i < klen / 2; i += blockDim.x) {
        const __half2 h = __floats2half2_rn(bf_lo(xs[i]) * down, bf_hi(xs[i]) * down);
        xs[i] = *reinterpret_cast<const uint32_t*>(&h);
      }
      for (int i = threadIdx.x; i < ng; i += blockDim.x) sxs[i] *= down;
      __syncthreads();
      return __uint_as_float((uint32_t)(127 + e) << 23);
    }
  }
}

// The outputs of one CTA column bx (WARPS row blocks of 16 rows; this lane holds rows 16nb + gq and
// +8 in y0, y1 when c == 0), split `by` of `nsplit`. Without split-K they are written directly; else each split writes its
// partial sums and the last split of the column to arrive (atomic ticket in counters[bx]) adds them in
// split order (deterministic) and resets the ticket for the next call (graph replays). Every thread of
// the CTA calls it (it has barriers); `last` is a __shared__ int of the caller.
// The ticket is one acq_rel atomic by thread 0 behind a CTA barrier (the pattern of CUTLASS's split-K semaphore): the
// barrier orders the CTA's partial stores before thread 0's release, and the last CTA's acquire, passed on by the
// second barrier, makes every split's partials visible to all its threads. The last CTA then loads up to 16 splits'
// partials at once and adds them in split order from 0.f, as one load per split did: y is bitwise the same. Before
// (r120-r123, gemv_timeline.py) every thread fenced, and the loads waited on the sum split by split: the finish took
// 2.1-2.6 us of a plain down launch's period at 10 splits, the cluster finish 0.8-1.0.
template <int WARPS>
__device__ __forceinline__ void finish_rows(int bx, int by, int nsplit, int nb, int NB, int N, int gq, int c, float y0,
                                            float y1,
                                            const __nv_bfloat16* __restrict__ bias, __nv_bfloat16* __restrict__ y,
                                            float* __restrict__ partial, int* __restrict__ counters, int& last) {
  const int row = nb * 16 + gq;
  if (nsplit == 1) {
    if (nb < NB && c == 0) {
      y[row] = __float2bfloat16(y0 + (bias ? __bfloat162float(bias[row]) : 0.f));
      y[row + 8] = __float2bfloat16(y1 + (bias ? __bfloat162float(bias[row + 8]) : 0.f));
    }
    return;
  }
  if (nb < NB && c == 0) {
    partial[(size_t)by * N + row] = y0;
    partial[(size_t)by * N + row + 8] = y1;
  }
  __syncthreads();
  if (threadIdx.x == 0) last = edgeprof_gemv::atom_add_acq_rel_gpu(counters + bx, 1) == nsplit - 1;
  __syncthreads();
  if (!last) return;
  constexpr int B = 16;  // splits' partials in flight per thread
  for (int i = threadIdx.x; i < WARPS * 16; i += blockDim.x) {
    const int r = bx * WARPS * 16 + i;
    if (r >= N) break;
    float s = 0.f;
    for (int k0 = 0; k0 < nsplit; k0 += B) {
      float v[B];
#pragma unroll
      for (int j = 0; j < B; ++j) v[j] = k0 + j < nsplit ? __ldcg(partial + (size_t)(k0 + j) * N + r) : 0.f;
#pragma unroll
      for (int j = 0; j < B; ++j)
        if (k0 + j < nsplit) s += v[j];  // fixed order
    }
    y[r] = __float2bfloat16(s + (bias ? __bfloat162float(bias[r]) : 0.f));
  }
  if (threadIdx.x == 0) counters[bx] = 0;  // ready for the next call (graph replays)
}

// The outputs of CTA column bx of a gate_up whose row blocks are packed gate, gate, up, up (w4cuda: the act
// epilogue's layout; one K split): silu(g) * u for MLP inputs 32 bx .. 32 bx + 31 into y [N / 2]. g and u are first
// rounded to bf16 as finish_rows writes them, then combined exactly as act_pair does when the down projection stages
// them: the value is bitwise the two-launch path's. Every thread of the CTA calls it (it has a barrier).
__device__ __forceinline__ void finish_act(int bx, int gq, int c, float y0, float y1,
                                           const __nv_bfloat16* __restrict__ bias, __nv_bfloat16* __restrict__ y) {
  __shared__ float gu[64];  // this CTA's 64 rows as bf16 values: gate 0-31, then up 0-31
  const int w = threadIdx.x >> 5, r = 16 * w + gq, row = 64 * bx + r;  // packed row
  if (c == 0) {
    gu[r] = round_bf16(y0 + (bias ? __bfloat162float(bias[row]) : 0.f));
    gu[r + 8] = round_bf16(y1 + (bias ? __bfloat162float(bias[row + 8]) : 0.f));
  }
  __syncthreads();
  if (threadIdx.x < 32) {
    const float g = gu[threadIdx.x], u = gu[32 + threadIdx.x];
    y[32 * bx + threadIdx.x] = __float2bfloat16(round_bf16(g / (1.0f + __expf(-g))) * u);
  }
}

// finish_rows for the cluster variant "cl" (sm_90+): the nsplit CTAs of a row-block column are one thread-block
// cluster of (1, nsplit, 1), split `by` = cluster rank `by`. Each CTA leaves its partial row sums in shared memory;
// after a cluster barrier, rank r adds rows r, r + nsplit, ... over the ranks in split order through distributed
// shared memory (all of a row's remote loads issued together) and writes them. The sums are finish_rows': y is
// bitwise base's at the same splits, without the fp32 workspace, fence, ticket and L2 round trips of the global
// path. The second barrier keeps every CTA (and its shared memory) alive until the reads are done. Every thread of
// the CTA calls it; one warp per 16-row block (KW = 1).
// thread-block clusters and distributed shared memory: sm_90+ (below, finish_rows_cluster compiles to nothing, so
// the host refuses the cluster variants there)
inline bool has_clusters() {
  int dev = 0, major = 0;
  return cudaGetDevice(&dev) == cudaSuccess &&
         cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major >= 9;
}
constexpr int kClusterMax = 16;  // CTAs per cluster (above 8: the non-portable size, allowed per kernel at launch)
// DEFER (the deferred norm, NORM 3): each split also holds its slice's sum of h^2 (sum_h2); the rows are scaled by
// rstd of the splits' sums, added in split order, before the bias.
template <int WARPS, bool DEFER = false>
__device__ __forceinline__ void finish_rows_cluster(int bx, int by, int nsplit, int nb, int NB, int N, int gq, int c,
                                                    float y0, float y1, const __nv_bfloat16* __restrict__ bias,
                                                    __nv_bfloat16* __restrict__ y, float sum_h2 = 0.f, int K = 0,
                                                    float eps = 0.f) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  __shared__ float part[WARPS * 16 + (DEFER ? 1 : 0)];  // this split's sums of the CTA's rows, row block w at 16 w
  const int w = threadIdx.x >> 5;
  if (nb < NB && c == 0) {
    part[16 * w + gq] = y0;
    part[16 * w + gq + 8] = y1;
  }
  if (DEFER && threadIdx.x == 0) part[WARPS * 16] = sum_h2;  // then this split's sum of h^2
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();  // every split's partials are in its shared memory
  const int i = by + nsplit * (int)threadIdx.x, row = bx * WARPS * 16 + i;
  if (i < WARPS * 16 && row < N) {
    float v[kClusterMax], h2[DEFER ? kClusterMax : 1];
#pragma unroll
    for (int q = 0; q < kClusterMax; ++q)
      if (q < nsplit) {
        v[q] = *cluster.map_shared_rank(part + i, q);
        if constexpr (DEFER) h2[q] = *cluster.map_shared_rank(part + WARPS * 16, q);
      }
    float s = 0.f, t = 0.f;
#pragma unroll
    for (int q = 0; q < kClusterMax; ++q)  // split order, as finish_rows
      if (q < nsplit) {
        s += v[q];
        if constexpr (DEFER) t += h2[q];
      }
    if constexpr (DEFER) s *= rstd_of(t, K, eps);
    y[row] = __float2bfloat16(s + (bias ? __bfloat162float(bias[row]) : 0.f));
  }
  // No CTA leaves while another still reads its shared memory. Relaxed: this barrier orders no memory (the reads
  // above completed before their sum was stored), so it needs no gpu-scope fence before the arrive (cluster.sync's
  // release emits MEMBAR.ALL.GPU, which would wait for the y store).
  asm volatile("barrier.cluster.arrive.relaxed.aligned;\n\tbarrier.cluster.wait.aligned;" ::: "memory");
#endif
}

// The gather finish of the cluster variant "clscxg": the cluster's split CTAs of a row-block column send their partial
// row sums into rank 0's shared memory (st.async, counted on rank 0's mbarrier) and exit at once; rank 0 waits for
// them, adds them in split order and writes y. finish_rows_cluster's pull instead keeps every CTA alive through two
// cluster barriers: the first until the slowest split's partials are in, the second until every rank has read them,
// so the column's CTAs hold their SM slots (which the next kernel's CTAs wait for under PDL) a DSMEM round trip and
// a barrier longer. The sums run in finish_rows_cluster's order from 0.f: y is bitwise clscx's at the same splits.
// gather_floats: one split's slot in rank 0's buffer, rows as (gq, gq + 8) pairs per row block (one 8-byte store per
// lane), then (DEFER) its sum of h^2; 4 floats of padding keep the slots 16-byte aligned.
template <int WARPS, bool DEFER>
__host__ __device__ constexpr int gather_floats() { return WARPS * 16 + (DEFER ? 4 : 0); }
template <int WARPS, bool DEFER>
__host__ __device__ constexpr unsigned gather_bytes() { return WARPS * 16 * 4 + (DEFER ? 4 : 0); }  // sent per split

// rank 0 (one thread): the mbarrier that counts the other splits' bytes. Every thread of every CTA then arrives on the
// cluster barrier (finish_rows_gather waits on it before sending: the mbarrier is initialised by then).
template <int WARPS, bool DEFER>
__device__ __forceinline__ void gather_arm(int by, int nsplit, uint64_t* bar) {
  if (by == 0 && threadIdx.x == 0) edgeprof_gemv::mbar_arm(bar, (unsigned)(nsplit - 1) * gather_bytes<WARPS, DEFER>());
  edgeprof_gemv::cluster_arrive();
}

template <int WARPS, bool DEFER = false>
__device__ __forceinline__ void finish_rows_gather(int bx, int by, int nsplit, int N, int gq, int c, float y0, float y1,
                                                   const __nv_bfloat16* __restrict__ bias,
                                                   __nv_bfloat16* __restrict__ y, float* buf, uint64_t* bar,
                                                   float sum_h2 = 0.f, int K = 0, float eps = 0.f) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int S = gather_floats<WARPS, DEFER>();
  const int w = threadIdx.x >> 5;
  edgeprof_gemv::cluster_wait();  // rank 0's mbarrier is armed (gather_arm, at the kernel's start: long done)
  if (by != 0) {  // send this split's sums to rank 0, and leave
    using edgeprof_gemv::cluster_addr;
    const unsigned rbar = cluster_addr(bar, 0);
    if (c == 0) edgeprof_gemv::st_async_f32x2(cluster_addr(buf + by * S + 16 * w + 2 * gq, 0), y0, y1, rbar);
    if (DEFER && threadIdx.x == 0) edgeprof_gemv::st_async_f32(cluster_addr(buf + by * S + WARPS * 16, 0), sum_h2, rbar);
    return;
  }
  if (c == 0) {
    buf[16 * w + 2 * gq] = y0;
    buf[16 * w + 2 * gq + 1] = y1;
  }
  if (DEFER && threadIdx.x == 0) buf[WARPS * 16] = sum_h2;
  edgeprof_gemv::mbar_wait_cluster(bar, 0);  // every thread acquires the other splits' sums
  __syncthreads();                            // and this CTA's own
  for (int i = threadIdx.x; i < WARPS * 16; i += blockDim.x) {
    const int row = bx * WARPS * 16 + i;
    if (row >= N) break;
    const int j = 16 * (i >> 4) + 2 * (i & 7) + ((i >> 3) & 1);  // row i = 16 w + gq (+ 8): its slot
    float s = 0.f, t = 0.f;
    for (int q = 0; q < nsplit; ++q) {  // split order, as finish_rows_cluster
      s += buf[q * S + j];
      if constexpr (DEFER) t += buf[q * S + WARPS * 16];
    }
    if constexpr (DEFER) s *= rstd_of(t, K, eps);
    y[row] = __float2bfloat16(s + (bias ? __bfloat162float(bias[row]) : 0.f));
  }
#endif
}

// The math of one chunk: U tiles of 64 columns from tile t, weights w [U] (16 bytes per lane each) and the
// chunk's group scales sv [U*64/G], into this lane's two rows y0 (row gq) and y1 (row gq + 8). x comes
// from the CTA's permuted shared-memory slice (xq: this lane's B fragments) and its group sums sxs.
// CHECKED: the chunk may run past the slice's nt tiles (a full chunk needs no per-tile check).
template <int G, bool ASYM, bool FUSED, bool F16 = false, int U, typename ST>
__device__ __forceinline__ void chunk_math(const uint4 (&w)[U], const ST (&sv)[U * 64 / G], int t, int nt, bool checked,
                                           const uint2* xq, const float* sxs, uint32_t magic, float& y0, float& y1) {
  // two accumulator chains (even / odd 16-column step) halve the dependent mma latency
  float acc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
  for (int u = 0; u < U; ++u) {
    if (checked && t + u >= nt) break;  // warp-uniform
    const uint32_t words[4] = {w[u].x, w[u].y, w[u].z, w[u].w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      uint32_t a[4];
      const uint2 xb = xq[((t + u) * 4 + j) * 4];
      if constexpr (F16) {
        dq_word_f16(words[j], a, magic);
        mma_f16(acc[j & 1], a, xb.x, xb.y);
      } else {
#pragma unroll
        for (int r = 0; r < 4; ++r) a[r] = dq_reg<FUSED>(words[j], r, magic);
        mma_bf16(acc[j & 1], a, xb.x, xb.y);
      }
      if (((u * 64 + j * 16 + 16) % G) == 0) {  // a group ends here (compile-time)
        const int gi = (u * 64 + j * 16) / G;
        const float sx = sxs[(t * 64) / G + gi];
        float s0, s1, z0 = 136.f, z1 = 136.f;  // symmetric: z = 8
        if constexpr (ASYM) {
          s0 = bf_lo(sv[gi].x); s1 = bf_hi(sv[gi].x); z0 = bf_lo(sv[gi].y); z1 = bf_hi(sv[gi].y);
        } else {
          s0 = bf_lo(sv[gi]); s1 = bf_hi(sv[gi]);
        }
        if constexpr (F16) {  // row g summed x (1024 + q), row g + 8 summed x (1024 + 16 q): z0, z1 held 128 + z
          z0 += 896.f;
          z1 = 16.f * z1 - 1024.f;
          s1 *= 0.0625f;
        }
        y0 = fmaf(s0, fmaf(-z0, sx, acc[0][0] + acc[1][0]), y0);
        y1 = fmaf(s1, fmaf(-z1, sx, acc[0][2] + acc[1][2]), y1);
#pragma unroll
        for (int h = 0; h < 2; ++h) acc[h][0] = acc[h][1] = acc[h][2] = acc[h][3] = 0.f;
      }
    }
  }
}

// The cp.async pipeline of the W4 kernel (PS > 0): PS chunks of PU tiles per warp in a shared-memory ring,
// PS - 1 of them in flight while the warp computes one. PS = 0: the register double buffer.
template <int G, int PU>
__host__ __device__ constexpr int chunk_tiles() { return PU ? PU : (G == 32 ? 4 : 6); }
template <int G, bool ASYM, int PS, int PU>
__host__ __device__ constexpr size_t ring_bytes() {  // [kWarps][PS][U][32] uint4 of weights, then [kWarps][PS][GPC][32] scales
  return (size_t)kWarps * PS * 32 * (chunk_tiles<G, PU>() * 16 + (chunk_tiles<G, PU>() * 64 / G) * (ASYM ? 8 : 4));
}

// The staged variants (BT > 0, sm_90+): the first min(BT, slice) tiles of each warp's slice (and their group scales)
// come into shared memory through one bulk copy per warp, issued BEFORE the PDL wait: [kWarps][cap][32] uint4 of
// weights, then [kWarps][cap groups][8] scales, then one mbarrier per warp; cap = min(BT, tiles_per_split). BT is a
// multiple of the chunk.
template <int BT>
__host__ __device__ constexpr int stage_cap(int tiles_per_split) { return BT < tiles_per_split ? BT : tiles_per_split; }
template <int G, bool ASYM, int BT>
__host__ __device__ constexpr size_t stage_bytes(int tiles_per_split) {
  return BT == 0 ? 0
                 : (size_t)kWarps * (stage_cap<BT>(tiles_per_split) * 512 +
                                     ((stage_cap<BT>(tiles_per_split) * 64 + G - 1) / G) * 8 * (ASYM ? 8 : 4) +
                                     16);
}

// The scale-staged variants (SCS, sm_80+): each warp's group scales for its whole slice, [kWarps][groups][8] ST, copied
// into shared memory in one coalesced cp.async burst before the PDL wait (instead of a 32-byte load per group).
template <int G, bool ASYM, bool SCS>
__host__ __device__ constexpr size_t scale_stage_bytes(int tiles_per_split) {
  return SCS ? (size_t)kWarps * (tiles_per_split * 64 / G) * 8 * (ASYM ? 8 : 4) : 0;
}

// The operands of one W4 GEMV launch (the kernel's arguments; the fused MLP kernel takes two).
struct W4Args {
  const uint4* __restrict__ qw;
  const void* __restrict__ sz;
  const __nv_bfloat16* __restrict__ x;
  const __nv_bfloat16* __restrict__ bias;
  __nv_bfloat16* __restrict__ y;
  float* __restrict__ partial;
  int* __restrict__ counters;
  int N, K, tiles_per_split;
};

// TRACE's record (benchmarks/gemv_timeline.py reads it): thread 0 of each CTA keeps the global time (%globaltimer, ns)
// of its phases 0 start, 1 past the PDL wait, 2 x staged, 3 its warp's last chunk done, 4 leaving (after the finish),
// and at the end writes them with its SM id and its SM clock (clock64) at start and end: 8 uint64 per CTA at
// (uint64*)(partial + nsplit * N) + (by * gridDim.x + bx) * 8, after the split-K workspace (W4CudaLinear sizes it).
// mark's `dep` is a value the phase computed: an input of the timer read, so the read cannot move above that work.
// TRACE false: empty, no code.
template <bool TRACE>
struct CtaTrace {
  __device__ __forceinline__ CtaTrace(float*, int, int, int, int) {}
  __device__ __forceinline__ void mark(int, uint32_t) {}
  __device__ __forceinline__ void done() {}
};
template <>
struct CtaTrace<true> {
  uint64_t* out;
  uint64_t t[4];
  uint64_t c0;
  __device__ __forceinline__ static uint64_t now(uint32_t dep) {
    uint64_t v;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(v) : "r"(dep) : "memory");
    return v;
  }
  __device__ __forceinline__ CtaTrace(float* partial, int N, int bx, int by, int nsplit)
      : out(reinterpret_cast<uint64_t*>(partial + (size_t)nsplit * N) + ((size_t)by * gridDim.x + bx) * 8) {
    c0 = clock64();
    t[0] = now(0u);
  }
  __device__ __forceinline__ void mark(int i, uint32_t dep) { t[i] = now(dep); }
  __device__ __forceinline__ void done() {
    const uint64_t t4 = now(0u), c1 = clock64();
    if (threadIdx.x != 0) return;
    unsigned sm;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
    out[0] = sm;
#pragma unroll
    for (int i = 0; i < 4; ++i) out[1 + i] = t[i];
    out[5] = t4;
    out[6] = c0;
    out[7] = c1;
  }
};

struct NoWait {  // gemv_cta's hook for a standalone launch: the inputs are ready once pdl_wait returns
  __device__ __forceinline__ void operator()() const {}
};

// One CTA's work: row-block column bx (kWarps / KW row blocks of 16 rows) over K slice `by` of `nsplit`. `ready`
// runs after pdl_wait, before the CTA reads x: the fused MLP's down items wait there for the gate_up rows they read.
// F16: the mma runs on fp16 (x staged as fp16 with a power-of-two scale, dq_word_f16), else on bf16.
// CG: x is read through L2 only (it was written during this launch).
// KW (the latency variants k2 / k4, w4a16_lat.cu): KW warps share one row block, each on a whole-group part of the
// CTA's K slice, and add their sums in shared memory in warp order: a K split without split-K's global partials,
// ticket and second pass.
// BT (the staged variants st / clst): the first min(BT, nt) tiles of the warp's slice come through shared memory,
// bulk-copied before the PDL wait (stage_bytes); the rest stream as in base. The sums run in base's order: y is
// bitwise base's (cl's with CLU) at the same splits.
// NOMATH (the diagnostic variants, tuning module): 1 (nomath / clnomath): every load, the x staging, the group sums
// and the split-K finish as above, but each chunk's dequant and mma replaced by an XOR of its words into y, so y is
// wrong by design; 2 (nomathx / clnomathx): the same without the x staging and group sums either; 3 (nomathxs /
// clnomathxs): nor the group scales' loads; 4 (nomathxsf / clnomathxsf): nor the finish (no y written, no split-K
// reduction, no cluster barrier): the loop's loads alone, in the GEMV's kernel and harness. Timed beside the kernel and a pure read of the same bytes, they tell the
// math's, the staging's and the scale loads' costs from the rest's.
// SCS (the tune variants sc / clsc): the warp's group scales come through shared memory (scale_stage_bytes), copied in
// one burst before the PDL wait; the sums are base's, so y is bitwise base's (cl's) at the same splits.
// XSUM (scx / clscx: sc / clsc with it): the group sums of x in the staging pass (stage_x's XG), one barrier less.
// EACT (scxa: scx with it; one K split): the CTA's 4 row blocks are gate rows 32 bx.. and up rows 32 bx.. of an MLP's
// gate_up (w4cuda packs them so), and it writes silu(gate) * up for its 32 outputs (finish_act) instead of its rows.
// GATHER (clscxg: clscx with it; CLU): the splits send their row sums into the cluster's rank 0 and leave
// (finish_rows_gather) instead of finish_rows_cluster's two barriers; bitwise the same y.
// TRACE (the timeline variants, tuning module; benchmarks/gemv_timeline.py): the same kernel, and thread 0 of each CTA
// records its phases (CtaTrace) after the split-K workspace. A diagnostic of where a launch's time goes under PDL.
template <int G, bool ASYM, bool ACT, bool XVEC = true, int NORM = 0, int PS = 0, int PU = 0, bool F16 = false,
          bool CG = false, typename Ready = NoWait, int KW = 1, bool CLU = false, int BT = 0, int NOMATH = 0,
          bool SCS = false, bool XSUM = false, bool EACT = false, bool GATHER = false, bool TRACE = false>
__device__ __forceinline__ void gemv_cta(const W4Args& a, const NormArgs& na, int pf_tiles, int bx, int by, int nsplit,
                                         Ready ready = {}) {
  static_assert(kWarps % KW == 0, "KW divides the CTA's warps");
  static_assert(BT == 0 || (PS == 0 && KW == 1), "the staged variants use base's register double buffer");
  static_assert(!NOMATH || (PS == 0 && BT == 0), "the diagnostic variants are base's loop without its math");
  static_assert(!SCS || (PS == 0 && BT == 0 && KW == 1 && !NOMATH), "the scale-staged variants are base's loop");
  static_assert(!GATHER || (CLU && KW == 1 && !NOMATH), "the gather finish is a cluster's, one warp per row block");
  constexpr int RB = kWarps / KW;  // row blocks per CTA
  const uint4* __restrict__ qw = a.qw;
  const void* __restrict__ sz = a.sz;
  const __nv_bfloat16* __restrict__ x = a.x;
  const int N = a.N, K = a.K, tiles_per_split = a.tiles_per_split;
  constexpr int U = chunk_tiles<G, PU>();  // 16-byte loads per chunk
  constexpr int GPC = U * 64 / G;          // groups per chunk of U tiles
  static_assert(GPC >= 1 && (U * 64) % G == 0, "a chunk holds whole groups");
  static_assert(BT % U == 0, "whole chunks staged");
  using ST = typename std::conditional<ASYM, uint2, uint32_t>::type;
  extern __shared__ uint4 smem_raw[];
  uint4* ring_w = smem_raw;  // PS > 0 only: the weight ring, then the scale ring
  ST* ring_s = reinterpret_cast<ST*>(smem_raw + kWarps * PS * U * 32);
  // x slice, permuted per 16 columns, bf16 pairs (after the rings, or the staged tiles)
  uint32_t* xs = reinterpret_cast<uint32_t*>(reinterpret_cast<char*>(smem_raw) + ring_bytes<G, ASYM, PS, PU>() +
                                             stage_bytes<G, ASYM, BT>(tiles_per_split) +
                                             scale_stage_bytes<G, ASYM, SCS>(tiles_per_split));

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int T = K / 64, NG = K / G, NB = N / 16;
  const int nb = bx * RB + warp / KW;
  const int t0 = by * tiles_per_split;
  const int cnt = min(T, t0 + tiles_per_split) - t0;  // the CTA's slice: cnt tiles (x staging)
  const int klen = cnt * 64, k0 = t0 * 64, g0 = k0 / G, cng = klen / G;
  float* sxs_cta = reinterpret_cast<float*>(xs + klen / 2);  // sum of x over each group of the slice
  // this warp's part of the slice: tiles [tw, tw + nt) (KW = 1: all of it), whole groups
  constexpr int TPG = G > 64 ? G / 64 : 1;
  const int part = KW == 1 ? cnt : ((cnt + KW - 1) / KW + TPG - 1) / TPG * TPG;
  const int tw = KW == 1 ? 0 : min(cnt, (warp % KW) * part);
  const int nt = KW == 1 ? cnt : min(cnt, tw + part) - tw, ng = nt * 64 / G;
  float* sxs = sxs_cta + tw * 64 / G;
  const int gq = lane >> 2, c = lane & 3;
  const uint4* wp = qw + ((size_t)min(nb, NB - 1) * T + t0 + tw) * 32 + lane;
  const ST* sp = reinterpret_cast<const ST*>(sz) + ((size_t)min(nb, NB - 1) * NG + g0 + tw * 64 / G) * 8 + gq;
  // GATHER: rank 0's buffer for the other splits' row sums, and the mbarrier that counts them (finish_rows_gather)
  __shared__ alignas(16) float gather_buf[GATHER ? kClusterMax * gather_floats<RB, NORM == 3>() : 4];
  __shared__ alignas(8) uint64_t gather_bar;
  if constexpr (GATHER) gather_arm<RB, NORM == 3>(by, nsplit, &gather_bar);
  CtaTrace<TRACE> trace(a.partial, N, bx, by, nsplit);  // TRACE: phase 0, the CTA's start

  // One chunk = U tiles of 64 columns: U 16-byte weight loads and the chunk's group scales.
  auto load_chunk = [&](int t, uint4 (&wv)[U], ST (&sv)[GPC]) {
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (t + u < nt) wv[u] = ld_stream(wp + (size_t)(t + u) * 32);
#pragma unroll
    for (int gi = 0; gi < GPC; ++gi)
      if (!SCS && NOMATH < 3 && (t * 64) / G + gi < ng) sv[gi] = __ldg(sp + (size_t)((t * 64) / G + gi) * 8);
  };
  // SCS: this warp's scales [ng groups][8] in shared memory (after the staged tiles), group g: my_sc[g * 8]
  const ST* my_sc = reinterpret_cast<const ST*>(reinterpret_cast<char*>(smem_raw) + ring_bytes<G, ASYM, PS, PU>() +
                                                stage_bytes<G, ASYM, BT>(tiles_per_split)) +
                    (size_t)warp * (tiles_per_split * 64 / G) * 8 + gq;
  // PS > 0: chunk t / U goes through ring slot `slot` with cp.async (one commit group per chunk, also when empty)
  uint4* my_w = ring_w + warp * PS * U * 32 + lane;  // slot s, tile u: my_w[(s * U + u) * 32]
  ST* my_s = ring_s + warp * PS * GPC * 32 + lane;   // slot s, group gi: my_s[(s * GPC + gi) * 32]
  auto issue_chunk = [&](int t, int slot) {
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (t + u < nt) edgeprof_gemv::cp_async16(my_w + (slot * U + u) * 32, wp + (size_t)(t + u) * 32);
#pragma unroll
    for (int gi = 0; gi < GPC; ++gi)
      if ((t * 64) / G + gi < ng)
        edgeprof_gemv::cp_async_small<sizeof(ST)>(my_s + (slot * GPC + gi) * 32, sp + (size_t)((t * 64) / G + gi) * 8);
    edgeprof_gemv::cp_async_commit();
  };
  // BT > 0: tiles [0, bt) of this warp's slice go into shared memory with one bulk copy of their weights and one of
  // their scales (contiguous in the row-block layout), in flight across the PDL wait; the loads start at tile bt.
  const int bt = BT == 0 ? 0 : min(nt, BT);
  const int cap = stage_cap<BT>(tiles_per_split);
  const uint4* stg_w = smem_raw + (size_t)warp * cap * 32 + lane;  // tile t: stg_w[t * 32]
  const int cap_g = (cap * 64 + G - 1) / G;
  const ST* stg_s = reinterpret_cast<const ST*>(smem_raw + (size_t)kWarps * cap * 32) + (size_t)warp * cap_g * 8 +
                    gq;  // group g: stg_s[g * 8]
  // one mbarrier per warp after the scales (16 bytes per warp in stage_bytes: the regions stay 16-byte aligned)
  uint64_t* stage_bar = reinterpret_cast<uint64_t*>(reinterpret_cast<ST*>(smem_raw + (size_t)kWarps * cap * 32) +
                                                    (size_t)kWarps * cap_g * 8);
  if (BT > 0 && nb < NB && bt > 0 && lane == 0) {
    const unsigned wbytes = 512u * bt, sbytes = (unsigned)(((bt * 64 + G - 1) / G) * 8 * sizeof(ST));
    edgeprof_gemv::mbar_arm(stage_bar + 2 * warp, wbytes + sbytes);
    edgeprof_gemv::bulk_g2s(const_cast<uint4*>(stg_w - lane), wp - lane, wbytes, stage_bar + 2 * warp);
    edgeprof_gemv::bulk_g2s(const_cast<ST*>(stg_s - gq), sp - gq, sbytes, stage_bar + 2 * warp);
  }
  // The first chunk(s) are in flight while the CTA stages x: the prologue costs no memory time.
  uint4 wa[U];
  ST sa[GPC];
  if constexpr (PS == 0) {
    if (nb < NB && (BT == 0 || bt < nt)) load_chunk(bt, wa, sa);
  } else {
    if (nb < NB)
#pragma unroll
      for (int s = 0; s < PS - 1; ++s) issue_chunk(s * U, s);
  }
  if (SCS && nb < NB) {  // the slice's scales, contiguous in the row-block layout: 16 bytes per lane and copy
    const int sbytes = ng * 8 * (int)sizeof(ST);
    const char* src = reinterpret_cast<const char*>(sp - gq);
    char* dst = const_cast<char*>(reinterpret_cast<const char*>(my_sc - gq));
    for (int off = 16 * lane; off < sbytes; off += 32 * 16) edgeprof_gemv::cp_async16(dst + off, src + off);
    edgeprof_gemv::cp_async_commit();
  }
  if (nb < NB && pf_tiles > 0) {  // PDL: more of this warp's slice into L2 while the previous kernel drains
    const int pt = min(nt, pf_tiles);
    edgeprof_gemv::prefetch_l2(wp - lane, 512L * pt, lane);  // a row block's tiles are contiguous, 512 B each
    edgeprof_gemv::prefetch_l2(sp - gq, (long)sizeof(ST) * 8 * ((pt * 64 + G - 1) / G), lane);
  }
  pdl_wait();  // x, the residual and the split-K workspace come from earlier kernels (PDL: gemv_common.cuh)
  trace.mark(1, 0u);
  pdl_launch_dependents();
  ready();

  // NORM 3: column 0's CTA of each split writes that split's slice of h (the others write all of it from norm_rstd)
  float yscale = NOMATH >= 2 ? 1.f
                             : stage_x_sums<G, kWarps, ACT, XVEC, NORM, F16, CG, XSUM>(
                                   x, K, k0, klen, cng, xs, sxs_cta, &na, bx == 0 && (NORM == 3 || by == 0));
  trace.mark(2, __float_as_uint(yscale));
  // NORM 3 (the deferred norm): stage_x_sums returned this CTA's sum of h^2 over its slice. One split: rstd scales the
  // rows here; a cluster's splits add their sums in finish_rows_cluster, which scales the rows there.
  float sum_h2 = 0.f;
  if constexpr (NORM == 3) {  // the host launches it at one split or as a cluster (w4a16_lat.cu), never split-K else
    sum_h2 = yscale;
    yscale = CLU ? 1.f : rstd_of(sum_h2, K, na.eps);
  }
  constexpr uint32_t magic = F16 ? 0x64006400u : 0x43004300u;  // 1024.0 in fp16, 128.0 in bf16, in both halves

  float y0 = 0.f, y1 = 0.f;  // rows 16nb + gq and 16nb + gq + 8
  const uint2* xq = reinterpret_cast<const uint2*>(xs) + c + tw * 16;  // 16 uint2 (64 bf16) per tile
  if (BT > 0 && nb < NB && bt > 0) {  // the staged tiles, from shared memory once their bulk copy has landed
    edgeprof_gemv::mbar_wait(stage_bar + 2 * warp, 0);
    for (int t = 0; t < bt; t += U) {
      uint4 wc[U];
      ST sc[GPC];
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (t + u < bt) wc[u] = stg_w[(t + u) * 32];
#pragma unroll
      for (int gi = 0; gi < GPC; ++gi)
        if ((t * 64) / G + gi < ng) sc[gi] = stg_s[((t * 64) / G + gi) * 8];
      chunk_math<G, ASYM, true, F16>(wc, sc, t, nt, true, xq, sxs, magic, y0, y1);
    }
  }
  uint32_t junk = 0;  // NOMATH: what stands for the math (keeps every load live)
  if (SCS && nb < NB) {  // this lane's copies have landed; the warp's others after the __syncwarp
    edgeprof_gemv::cp_async_wait<0>();
    __syncwarp();
  }
  if (nb < NB && PS == 0) {
    for (int t = bt; t < nt; t += U) {
      uint4 wb[U];
      ST sb[GPC];
      if (t + U < nt) load_chunk(t + U, wb, sb);  // next chunk in flight during this one's math
      if constexpr (NOMATH) {
#pragma unroll
        for (int u = 0; u < U; ++u)
          if (t + u < nt) junk ^= wa[u].x ^ wa[u].y ^ wa[u].z ^ wa[u].w;
#pragma unroll
        for (int gi = 0; gi < GPC; ++gi)
          if (NOMATH < 3 && (t * 64) / G + gi < ng) junk ^= reinterpret_cast<const uint32_t*>(&sa[gi])[0];
      } else {
        if constexpr (SCS)
#pragma unroll
          for (int gi = 0; gi < GPC; ++gi)
            if ((t * 64) / G + gi < ng) sa[gi] = my_sc[((t * 64) / G + gi) * 8];
        chunk_math<G, ASYM, true, F16>(wa, sa, t, nt, true, xq, sxs, magic, y0, y1);
      }
#pragma unroll
      for (int u = 0; u < U; ++u) wa[u] = wb[u];
#pragma unroll
      for (int gi = 0; gi < GPC; ++gi) sa[gi] = sb[gi];
    }
  }
  if (nb < NB && PS > 0) {
    // the chunk PS - 1 ahead goes into the slot read last iteration (its values are in registers by now)
    for (int t = 0, slot = 0; t < nt; t += U, slot = slot + 1 == PS ? 0 : slot + 1) {
      issue_chunk(t + (PS - 1) * U, slot == 0 ? PS - 1 : slot - 1);
      edgeprof_gemv::cp_async_wait<PS - 1>();  // this thread's copies of chunk t have landed
#pragma unroll
      for (int u = 0; u < U; ++u) wa[u] = my_w[(slot * U + u) * 32];
#pragma unroll
      for (int gi = 0; gi < GPC; ++gi) sa[gi] = my_s[(slot * GPC + gi) * 32];
      chunk_math<G, ASYM, true, F16>(wa, sa, t, nt, true, xq, sxs, magic, y0, y1);
    }
  }
  trace.mark(3, __float_as_uint(y0) ^ __float_as_uint(y1) ^ junk);  // after the last chunk's math
  y0 *= yscale;  // F16: back from the staged slice's 2^-e; NORM 3: rstd (the deferred norm)
  y1 *= yscale;
  if constexpr (NOMATH == 4) {  // no finish: the loads alone, as benchmarks/stream_pattern.py's read kernel
    if (junk == 0x9e3779b9u) a.y[0] = __float2bfloat16(1.f);  // practically never: keeps the loads live
    trace.done();
    return;
  }
  if constexpr (NOMATH) y0 = __uint_as_float(junk & 0x3f7fffffu);  // < 2: the finish adds it like a partial sum
  if constexpr (KW > 1) {  // the row block's KW parts, added in warp order (deterministic)
    __shared__ float2 red[kWarps][32];
    red[warp][lane] = make_float2(y0, y1);
    __syncthreads();
    if (warp % KW == 0)
#pragma unroll
      for (int j = 1; j < KW; ++j) {
        y0 += red[warp + j][lane].x;
        y1 += red[warp + j][lane].y;
      }
  }

  if constexpr (EACT) {  // the variant "scxa": silu(gate) * up of the CTA's rows
    static_assert(KW == 1 && !CLU && kWarps == 4, "one row block per warp: two of gate rows, two of up rows");
    finish_act(bx, gq, c, y0, y1, a.bias, a.y);
    trace.done();
    return;
  }
  if constexpr (GATHER) {  // the variant "clscxg": the splits' sums gathered into the cluster's rank 0
    finish_rows_gather<RB, NORM == 3>(bx, by, nsplit, N, gq, c, y0, y1, a.bias, a.y, gather_buf, &gather_bar, sum_h2,
                                      K, na.eps);
    trace.done();
    return;
  }
  if constexpr (CLU) {  // the variant "cl": the splits are one cluster
    static_assert(KW == 1, "the cluster variant has one warp per row block");
    finish_rows_cluster<RB, NORM == 3>(bx, by, nsplit, nb, NB, N, gq, c, y0, y1, a.bias, a.y, sum_h2, K, na.eps);
    trace.done();
    return;
  }
  __shared__ int last;
  // KW > 1: the first warp of each row block writes it (the others pass NB: no rows)
  finish_rows<RB>(bx, by, nsplit, warp % KW == 0 ? nb : NB, NB, N, gq, c, y0, y1, a.bias, a.y, a.partial, a.counters,
                  last);
  trace.done();
}

template <int G, bool ASYM, bool ACT, bool XVEC = true, int NORM = 0, int PS = 0, int PU = 0, int MINB = 5,
          bool F16 = false, int KW = 1, bool CLU = false, int BT = 0, int NOMATH = 0, bool SCS = false, bool XSUM = false,
          bool EACT = false, bool GATHER = false, bool TRACE = false>
__global__ void __launch_bounds__(kWarps * 32, MINB) w4a16_gemv_kernel(W4Args a, NormArgs na, int pf_tiles) {
  gemv_cta<G, ASYM, ACT, XVEC, NORM, PS, PU, F16, false, NoWait, KW, CLU, BT, NOMATH, SCS, XSUM, EACT, GATHER, TRACE>(
      a, na, pf_tiles, blockIdx.x, blockIdx.y, gridDim.y);
}

inline W4Args w4_args(const void* qw, const void* sz, const void* x, const void* bias, void* y, float* partial,
                      int* counters, int N, int K, int tiles_per_split) {
  return W4Args{reinterpret_cast<const uint4*>(qw), sz, reinterpret_cast<const __nv_bfloat16*>(x),
                reinterpret_cast<const __nv_bfloat16*>(bias), reinterpret_cast<__nv_bfloat16*>(y), partial, counters,
                N, K, tiles_per_split};
}

// Dynamic shared memory of one CTA: the cp.async ring (PS > 0) or the staged tiles (BT > 0), the x slice (bf16) and
// its group sums (fp32)
template <int G, bool ASYM, int PS = 0, int PU = 0, int BT = 0, bool SCS = false>
size_t cta_smem(int tiles_per_split) {
  return ring_bytes<G, ASYM, PS, PU>() + stage_bytes<G, ASYM, BT>(tiles_per_split) +
         scale_stage_bytes<G, ASYM, SCS>(tiles_per_split) +
         (size_t)tiles_per_split * 64 * 2 + (size_t)(tiles_per_split * 64 / G) * 4;
}

template <int G, bool ASYM, bool ACT, bool XVEC = true, int NORM = 0, int PS = 0, int PU = 0, int MINB = 5,
          bool F16 = false, int KW = 1, bool CLU = false, int BT = 0, int NOMATH = 0, bool SCS = false, bool XSUM = false,
          bool EACT = false, bool GATHER = false, bool TRACE = false>
cudaError_t launch_t(const void* qw, const void* sz, const void* x, const void* bias, void* y, float* partial,
                     int* counters, int N, int K, int splits, int tiles_per_split, cudaStream_t stream,
                     NormArgs na = {nullptr, nullptr, nullptr, 0.f}) {
  constexpr int RB = kWarps / KW;  // row blocks per CTA
  const int nbx = (N / 16 + RB - 1) / RB;
  const size_t smem = cta_smem<G, ASYM, PS, PU, BT, SCS>(tiles_per_split);
  if (EACT && (splits != 1 || N % 64 != 0)) return cudaErrorInvalidValue;  // whole gate / up row-block pairs
  auto kern = w4a16_gemv_kernel<G, ASYM, ACT, XVEC, NORM, PS, PU, MINB, F16, KW, CLU, BT, NOMATH, SCS, XSUM, EACT,
                                GATHER, TRACE>;
  if constexpr (CLU) {  // the splits are one cluster: at most kClusterMax CTAs, above 8 the non-portable size
    if (splits > kClusterMax) return cudaErrorInvalidValue;
    static const cudaError_t np = cudaFuncSetAttribute(kern, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    if (np != cudaSuccess) return np;
  }
  if (const cudaError_t e = edgeprof_gemv::allow_smem(kern, smem); e != cudaSuccess) return e;
  if (PS > 0) {  // the ring lives in shared memory: ask for the largest carveout, so 5 CTAs of ~41 KB fit per SM
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributePreferredSharedMemoryCarveout,
                                         (int)cudaSharedmemCarveoutMaxShared);
    if (e != cudaSuccess) return e;
  }
  const W4Args a = w4_args(qw, sz, x, bias, y, partial, counters, N, K, tiles_per_split);
  return edgeprof_gemv::launch_ex(!ACT || edgeprof_gemv::pdl_act_enabled(), CLU ? splits : 0, kern,
                                 dim3(nbx, splits), dim3(kWarps * 32), smem, stream, a, na,
                                 edgeprof_gemv::prefetch_tiles_now());
}

// How many clusters of the cluster variant's launch (splits CTAs each, `smem` bytes of dynamic shared memory) the
// GPU holds at once (cudaOccupancyMaxActiveClusters): the launch's nbx clusters run in ceil(nbx / that) waves. A
// cluster's CTAs share one GPC, so the count is not simply the CTA slots over the splits. Negative: a CUDA error.
template <int G, bool ASYM, bool ACT, int NORM>
int max_active_clusters_t(int N, int splits, size_t smem) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((N / 16 + kWarps - 1) / kWarps, splits);
  cfg.blockDim = dim3(kWarps * 32);
  cfg.dynamicSmemBytes = smem;
  cudaLaunchAttribute a[1];
  cfg.attrs = a;
  edgeprof_gemv::add_cluster_attr(cfg, dim3(1, splits, 1));
  return edgeprof_gemv::max_active_clusters(w4a16_gemv_kernel<G, ASYM, ACT, true, NORM, 0, 0, 5, false, 1, true>, cfg);
}

// The default launch's mma type: bf16 (as measured through issue 12's fourth pass) or fp16 (F16), switched per
// extension by edgeprof_w4a16_set_f16 (the binding's set_f16). The tune variant "f16" times it per shape.
inline bool& f16_enabled() {
  static bool on = false;
  return on;
}

// The fused-norm launches (bf16 mma) with the norm's loads batched (NORM = 2), switched per extension by
// edgeprof_w4a16_set_norm_batch (the binding's set_norm_batch); off: NORM = 1, the kernel as measured through r25.
inline bool& norm_batch_enabled() {
  static bool on = false;
  return on;
}

// The fused-norm launches of scx (one split), scxa and clscx with the deferred norm (NORM = 3: stage_x_sums), switched
// per extension by edgeprof_w4a16_set_norm_deferred (the binding's set_norm_deferred); off: NORM = 1.
inline bool& norm_deferred_enabled() {
  static bool on = false;
  return on;
}

// The fused MLP (issue 12, sixth pass): down(silu(gate) * up) of gate_up(rmsnorm(x + res) * w) in ONE launch, so the
// down GEMV's launch, ramp and drain overlap gate_up's tail instead of following it (the per-launch fixed cost,
// about 4 us on an H200, is what keeps the large W4 GEMVs under copy bandwidth: results/h200/2026-11-28-dequant).
// The grid has one CTA per work item: gate_up's row-block columns (split 1), then down's (column, split) items.
// A CTA takes its item from a ticket (atomicInc), so an item is only handed out once every item before it is
// held by a running CTA; down items wait only on gate_up items, which wait on nothing: no deadlock, whatever
// order the hardware starts CTAs in. Down's split s reads inputs [64 tps s, 64 tps (s + 1)) of silu(gate) * up,
// i.e. gate_up's columns tps s.. (gate rows) and T + tps s.. (up rows), T = I / 64: gate_up items run slice by
// slice, each adds 1 to ready[s] once its rows are written, and a down item of split s waits (after its first
// weight loads, like a PDL wait) until ready[s] counts all of them. The math of every item is gemv_cta's, the
// split order the same: y is bitwise the two-launch result.
struct MlpArgs {
  W4Args gu;     // gate_up: N = 2I (gate rows, then up rows), K = H, one split; y = the gate_up workspace
  W4Args down;   // down: N = H, K = I, its split plan; x = gu.y
  NormArgs na;   // the MLP norm fused into gate_up's input
  int* ws;       // int32 [1 + 2S] zeros: the ticket, ready[S], consumed[S] (each resets itself: graph replays)
  int gu_items;  // gate_up CTAs: 2I / 64
  int down_items;
};

__device__ __forceinline__ int ld_acquire_gpu(const int* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ uint64_t globaltimer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

template <int G, bool ASYM, bool F16>
__global__ void __launch_bounds__(kWarps * 32, 5) w4a16_mlp_kernel(MlpArgs m, int pf_tiles) {
  __shared__ int item;
  if (threadIdx.x == 0)  // wraps to 0 after the last item: the next call starts from 0 without a reset
    item = (int)atomicInc(reinterpret_cast<unsigned*>(m.ws), (unsigned)(m.gu_items + m.down_items - 1));
  __syncthreads();
  const int it = item;
  const int tps = m.down.tiles_per_split, T = m.down.K / 64, S = (T + tps - 1) / tps;
  int* ready = m.ws + 1;
  if (it < m.gu_items) {
    const int s = it / (2 * tps), r = it - s * 2 * tps, cols = min(tps, T - s * tps);  // slice s: 2 cols items
    const int bx = s * tps + (r < cols ? r : T + r - cols);
    gemv_cta<G, ASYM, false, true, 1, 0, 0, F16>(m.gu, m.na, pf_tiles, bx, 0, 1);
    __threadfence();  // this CTA's rows (written by its c == 0 lanes) before the count that publishes them
    __syncthreads();
    if (threadIdx.x == 0) atomicAdd(ready + s, 1);
    return;
  }
  const int d = it - m.gu_items, nbx = (m.down.N / 16 + kWarps - 1) / kWarps;
  const int by = d / nbx, bx = d - by * nbx, need = 2 * min(tps, T - by * tps);
  auto wait_slice = [&]() {
    if (threadIdx.x == 0) {
      // bounded: a miscounted slice would otherwise hang the GPU; 2 s is ~10^5 times the wait of a healthy launch
      const uint64_t t_end = globaltimer_ns() + 2000000000ull;
      while (ld_acquire_gpu(ready + by) < need) {
        __nanosleep(32);
        if (globaltimer_ns() > t_end) __trap();  // the launch fails with an error instead
      }
      // the slice's last reader resets its count: every reader has passed the wait, and the next call's
      // gate_up items count only after their pdl_wait, i.e. after this launch has ended
      if (atomicInc(reinterpret_cast<unsigned*>(m.ws + 1 + S + by), (unsigned)(nbx - 1)) == (unsigned)(nbx - 1))
        atomicExch(ready + by, 0);
    }
    __syncthreads();
  };
  gemv_cta<G, ASYM, true, true, 0, 0, 0, F16, true>(m.down, NormArgs{nullptr, nullptr, nullptr, 0.f}, pf_tiles,
                                                       bx, by, S, wait_slice);
}

template <int G, bool F16>
cudaError_t launch_mlp_g(bool asym, const MlpArgs& m, cudaStream_t stream) {
  const size_t smem = std::max(cta_smem<G, false>(m.gu.tiles_per_split), cta_smem<G, false>(m.down.tiles_per_split));
  auto kern = asym ? w4a16_mlp_kernel<G, true, F16> : w4a16_mlp_kernel<G, false, F16>;
  if (const cudaError_t e = edgeprof_gemv::allow_smem(kern, smem); e != cudaSuccess) return e;
  return edgeprof_gemv::launch(kern, dim3(m.gu_items + m.down_items), dim3(kWarps * 32), smem, stream, m,
                               edgeprof_gemv::prefetch_tiles_now());
}

template <int G>
cudaError_t launch_mlp_default(bool asym, const MlpArgs& m, cudaStream_t s) {
  return f16_enabled() ? launch_mlp_g<G, true>(asym, m, s) : launch_mlp_g<G, false>(asym, m, s);
}

// the fused-norm kernel for one group size (the default launch; KW > 1: a latency variant, w4a16_lat.cu)
template <int G, bool F16 = false, int NORM = 1, int KW = 1, bool CLU = false, int BT = 0, bool SCS = false,
          bool XSUM = false, bool EACT = false, bool GATHER = false>
cudaError_t launch_norm_g(bool asym, const void* qw, const void* sz, const void* x, const void* bias, void* y,
                          float* partial, int* counters, int N, int K, int splits, int tps, cudaStream_t s,
                          NormArgs na) {
#define EDGEPROF_LN(A) launch_t<G, A, false, true, NORM, 0, 0, 5, F16, KW, CLU, BT, 0, SCS, XSUM, EACT, GATHER>( \
    qw, sz, x, bias, y, partial, counters, N, K, splits, tps, s, na)
  return asym ? EDGEPROF_LN(true) : EDGEPROF_LN(false);
#undef EDGEPROF_LN
}

template <int G, bool XVEC = true, int PS = 0, int PU = 0, int MINB = 5, bool F16 = false, int KW = 1,
          bool CLU = false, int BT = 0, int NOMATH = 0, bool SCS = false, bool XSUM = false, bool EACT = false,
          bool GATHER = false, bool TRACE = false>
cudaError_t launch_g(bool asym, bool act, const void* qw, const void* sz, const void* x, const void* bias, void* y,
                     float* partial, int* counters, int N, int K, int splits, int tps, cudaStream_t s) {
#define EDGEPROF_LG(A, C) launch_t<G, A, C, XVEC, 0, PS, PU, MINB, F16, KW, CLU, BT, NOMATH, SCS, XSUM, EACT, GATHER, \
                                   TRACE>( \
    qw, sz, x, bias, y, partial, counters, N, K, splits, tps, s)
  if (asym) return act ? EDGEPROF_LG(true, true) : EDGEPROF_LG(true, false);
  return act ? EDGEPROF_LG(false, true) : EDGEPROF_LG(false, false);
#undef EDGEPROF_LG
}

// the default launch of one group size, with the switched mma type
template <int G>
cudaError_t launch_default(bool asym, bool act, const void* qw, const void* sz, const void* x, const void* bias,
                           void* y, float* partial, int* counters, int N, int K, int splits, int tps, cudaStream_t s) {
  if (f16_enabled())
    return launch_g<G, true, 0, 0, 5, true>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, s);
  return launch_g<G>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, s);
}
template <int G>
cudaError_t launch_norm_default(bool asym, const void* qw, const void* sz, const void* x, const void* bias, void* y,
                                float* partial, int* counters, int N, int K, int splits, int tps, cudaStream_t s,
                                NormArgs na) {
  if (f16_enabled())
    return launch_norm_g<G, true>(asym, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, s, na);
  if (norm_batch_enabled())
    return launch_norm_g<G, false, 2>(asym, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, s, na);
  return launch_norm_g<G>(asym, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, s, na);
}

}  // namespace edgeprof_w4
