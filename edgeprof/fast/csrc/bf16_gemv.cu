// edgeprof's bf16 batch-1 GEMV: y[N] = W[N, K] x[K] (+ bias), W row-major bf16 (nn.Linear's [out, in]).
//
// Why not cuBLAS: on the H200 cuBLAS streams the two large Qwen2.5-7B shapes at 0.84-0.91 of copy
// bandwidth but q/k/v and o (4608 and 3584 rows of 3584) at 0.54-0.66 (results/h200/
// 2026-11-28-int4-kernel-r2): a small GEMV is latency-bound, and what helps there is having every
// weight load of a warp in flight at once. Here each warp owns ROWS consecutive rows over the whole of
// K; lane L reads 16-byte vectors L, L + 32, ... of each row (a warp reads 512 contiguous bytes per row
// per step), U vectors per row in flight before any is used. x comes through L1/L2 (7-37 KB, read by
// every warp); fp32 accumulation; one warp-shuffle reduction per row; the bias is added in fp32 and
// the output rounded to bf16 once, as cuBLAS's epilogue does. No split-K: the shapes of interest have
// >= 3584 rows, >= 896 warps at ROWS = 4, enough to fill 132 SMs.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cstdint>

#include "gemv_common.cuh"
#include "greedy_tail.h"

namespace edgeprof_bf16 {

using edgeprof_gemv::bf_hi;
using edgeprof_gemv::bf_lo;
using edgeprof_gemv::ld_stream;
using edgeprof_gemv::pdl_launch_dependents;
using edgeprof_gemv::pdl_wait;

constexpr int kWarps = 4;  // warps per CTA

// acc += dot(w, x) over one 16-byte vector: 8 bf16 weights against 8 fp32 inputs
__device__ __forceinline__ float dot8(const uint4& w, const float (&x)[8], float acc) {
  const uint32_t ws[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    acc = fmaf(bf_lo(ws[i]), x[2 * i], acc);
    acc = fmaf(bf_hi(ws[i]), x[2 * i + 1], acc);
  }
  return acc;
}

// The work of one warp: s[r] = this lane's part of W[row0 + r] . x for its ROWS rows, in fp32 (warp_sum adds the
// lanes' parts). Returns false for a warp wholly past N, which computes nothing. Holds the PDL wait: the first step's
// weight loads are issued before it.
template <int ROWS, int U>
__device__ __forceinline__ bool warp_rows(const uint4* __restrict__ w, const uint4* __restrict__ x, int N, int K,
                                          int pf_bytes, int row0, int lane, float (&s)[ROWS]) {
  const int nv = K / 8;  // 16-byte vectors per row
  const uint4* wr[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) wr[r] = w + (size_t)min(row0 + r, N - 1) * nv;  // rows past N: re-read the last
  // One step: U vectors per row from v0 on; all of its weight loads are issued before the first is used.
  uint4 wv[U][ROWS];
  auto load_w = [&](int v0) {
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (v0 + 32 * u < nv) {
#pragma unroll
        for (int r = 0; r < ROWS; ++r) wv[u][r] = ld_stream(wr[r] + v0 + 32 * u);
      }
  };
  // the first step's weights depend on no earlier kernel: in flight before the PDL wait (gemv_common.cuh)
  if (row0 < N) load_w(lane);
  if (row0 < N && pf_bytes > 0) {  // PDL: the next part of each row into L2 while the previous kernel drains
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
      edgeprof_gemv::prefetch_l2(wr[r] + 32 * U, min((long)pf_bytes, 16L * (nv - 32 * U)), lane);
  }
  pdl_wait();
  pdl_launch_dependents();
  if (row0 >= N) return false;  // warp-uniform
#pragma unroll
  for (int r = 0; r < ROWS; ++r) s[r] = 0.f;
  for (int v0 = lane; v0 < nv; v0 += 32 * U) {
    if (v0 != lane) load_w(v0);
    uint4 xv[U];
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (v0 + 32 * u < nv) xv[u] = __ldg(x + v0 + 32 * u);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (v0 + 32 * u >= nv) break;
      const uint32_t xs[4] = {xv[u].x, xv[u].y, xv[u].z, xv[u].w};
      float xf[8];
#pragma unroll
      for (int i = 0; i < 4; ++i) xf[2 * i] = bf_lo(xs[i]), xf[2 * i + 1] = bf_hi(xs[i]);
#pragma unroll
      for (int r = 0; r < ROWS; ++r) s[r] = dot8(wv[u][r], xf, s[r]);
    }
  }
  return true;
}

// a lane's partial sum of a row, summed over the warp (every lane gets the sum)
__device__ __forceinline__ float warp_sum(float s) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  return s;
}

// row's output: the bias added in fp32, rounded to bf16 once (cuBLAS's epilogue)
__device__ __forceinline__ __nv_bfloat16 out_of(float s, const __nv_bfloat16* __restrict__ bias, int row) {
  return __float2bfloat16(s + (bias ? __bfloat162float(bias[row]) : 0.f));
}

template <int ROWS, int U>
__global__ void __launch_bounds__(kWarps * 32)
bf16_gemv_kernel(const uint4* __restrict__ w, const uint4* __restrict__ x, const __nv_bfloat16* __restrict__ bias,
                 __nv_bfloat16* __restrict__ y, int N, int K, int pf_bytes) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * kWarps + warp) * ROWS;
  float s[ROWS];
  if (!warp_rows<ROWS, U>(w, x, N, K, pf_bytes, row0, lane, s)) return;  // warp-uniform; no barriers here
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    const float sum = warp_sum(s[r]);
    if (lane == 0 && row0 + r < N) y[row0 + r] = out_of(sum, bias, row0 + r);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The head GEMV with the decode step's greedy tail (edgeprof/fast/model.py, GreedyTail). Unfused, the step ends
// in torch's argmax over the logits and three small kernels (history[pos] = token = argmax; pos += 1), then the
// next step starts with an embedding lookup: five launches after the head, ~20 us of a 1.7 ms step on an H200
// (explain, results/h200/2026-11-29-boundaries r97). Here each CTA of the head folds its rows into one 64-bit
// key and reduces it into one of kSlots slots with a fire-and-forget atomic max (RED: the CTA does not wait for
// it), and one small PDL-launched kernel finishes: token, history, pos, the next step's input row
// x0 = embed[token], and optionally the token into mapped host memory, where the host reads it without a copy or
// a stream sync (edgeprof/fast/readback.py). A first form finished in the head's last CTA (a fence and a counter
// in every CTA): its head ran 25 us slower, more than the five launches cost (H200, r101 of 2026-11-29-tail).

// Orders (logit, row) as torch.argmax picks: the larger value, among equal values the smaller row; -0 equals +0
// and NaN beats everything (torch propagates it). The float's bits made unsigned-monotone, the row inverted.
__device__ __forceinline__ unsigned long long greedy_key(__nv_bfloat16 v, int row) {
  const float f = __bfloat162float(v);
  uint32_t u = f == 0.f ? 0u : __float_as_uint(f);
  u = (f != f) ? 0xffffffffu : ((u & 0x80000000u) ? ~u : (u | 0x80000000u));
  return ((unsigned long long)u << 32) | (0xffffffffu - (uint32_t)row);
}

// ("gemv" in both kernels' names: `edgeprof explain` books kernels by name, and the head's epilogue is its work; as
// bf16_head_greedy_kernel and greedy_finish_kernel they went under other, H200 r104)
template <int ROWS, int U>
__global__ void __launch_bounds__(kWarps * 32)
bf16_gemv_greedy_kernel(const uint4* __restrict__ w, const uint4* __restrict__ x,
                        const __nv_bfloat16* __restrict__ bias, __nv_bfloat16* __restrict__ y, int N, int K,
                        int pf_bytes, edgeprof_greedy::Tail t) {
  __shared__ unsigned long long warp_best[kWarps];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * kWarps + warp) * ROWS;
  float s[ROWS];
  unsigned long long best = 0ull;  // below every key
  if (warp_rows<ROWS, U>(w, x, N, K, pf_bytes, row0, lane, s)) {
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      const float sum = warp_sum(s[r]);
      if (row0 + r >= N) break;
      const __nv_bfloat16 v = out_of(sum, bias, row0 + r);
      if (lane == 0) y[row0 + r] = v;
      best = max(best, greedy_key(v, row0 + r));
    }
  }
  if (lane == 0) warp_best[warp] = best;
  __syncthreads();
  if (threadIdx.x == 0) {
#pragma unroll
    for (int i = 1; i < kWarps; ++i) best = max(best, warp_best[i]);
    atomicMax(t.best + (blockIdx.x % edgeprof_greedy::kSlots), best);  // result unused: a RED, no round trip
  }
}

// One CTA after the head (PDL: it waits for the head's completion, its atomics included): the winner of the
// slots, the step's bookkeeping, the slots back at zero, then the next step's input row.
// pos and seq are read before the PDL wait: only the previous step's finish (or the host, between steps) writes them,
// and that is complete before this step's first kernel starts (a graph launch waits for the one before it); the head
// does not touch them. Read after the wait they were two more dependent L2 round trips before the token is out.
__global__ void __launch_bounds__(128) gemv_greedy_finish_kernel(edgeprof_greedy::Tail t) {
  __shared__ long long tok;
  long long p = 0, n = 0;
  if (threadIdx.x == 0) p = *t.pos, n = t.host != nullptr ? *t.seq + 1 : 0;
  pdl_wait();
  pdl_launch_dependents();
  if (threadIdx.x < 32) {
    static_assert(edgeprof_greedy::kSlots == 32, "one slot per lane of the first warp");
    unsigned long long best = t.best[threadIdx.x];
    t.best[threadIdx.x] = 0ull;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
    if (threadIdx.x == 0) {
      tok = (long long)(0xffffffffu - (uint32_t)(best & 0xffffffffu));
      if (p >= 0 && p < t.max_ctx) t.history[p] = tok;
      *t.token = tok;
      *t.pos = p + 1;
      if (t.host != nullptr) {  // token first, then the step's number: the host polls the number
        volatile long long* pair = t.host + 2 * (n % edgeprof_greedy::kPairs);
        *t.seq = n;
        pair[0] = tok;
        __threadfence_system();
        pair[1] = n;
      }
    }
  }
  __syncthreads();
  if (t.x0 == nullptr) return;
  const uint4* row = reinterpret_cast<const uint4*>(t.embed) + tok * t.h_vec;
  uint4* x0 = reinterpret_cast<uint4*>(t.x0);
  for (int i = threadIdx.x; i < t.h_vec; i += blockDim.x) x0[i] = row[i];
}

template <int ROWS, int U>
cudaError_t launch(const void* w, const void* x, const void* bias, void* y, int N, int K, cudaStream_t stream) {
  const int warps = (N + ROWS - 1) / ROWS;
  return edgeprof_gemv::launch(bf16_gemv_kernel<ROWS, U>, dim3((warps + kWarps - 1) / kWarps), dim3(kWarps * 32), 0,
                               stream, reinterpret_cast<const uint4*>(w), reinterpret_cast<const uint4*>(x),
                               reinterpret_cast<const __nv_bfloat16*>(bias), reinterpret_cast<__nv_bfloat16*>(y), N, K,
                               512 * edgeprof_gemv::prefetch_tiles_now());
}

template <int ROWS, int U>
cudaError_t launch_greedy(const void* w, const void* x, const void* bias, void* y, int N, int K,
                          const edgeprof_greedy::Tail& t, cudaStream_t stream) {
  const int warps = (N + ROWS - 1) / ROWS;
  const cudaError_t e = edgeprof_gemv::launch(bf16_gemv_greedy_kernel<ROWS, U>, dim3((warps + kWarps - 1) / kWarps),
                               dim3(kWarps * 32), 0, stream, reinterpret_cast<const uint4*>(w),
                               reinterpret_cast<const uint4*>(x), reinterpret_cast<const __nv_bfloat16*>(bias),
                               reinterpret_cast<__nv_bfloat16*>(y), N, K, 512 * edgeprof_gemv::prefetch_tiles_now(), t);
  if (e != cudaSuccess) return e;
  return edgeprof_gemv::launch(gemv_greedy_finish_kernel, dim3(1), dim3(128), 0, stream, t);
}

}  // namespace edgeprof_bf16

// C entry point for the torch binding; returns a cudaError_t as int. (rows, unroll) per warp, one of
// the compiled pairs (edgeprof/fast/bf16cuda.py:VARIANTS).
int edgeprof_bf16_gemv_launch(int rows, int unroll, const void* w, const void* x, const void* bias, void* y, int N,
                              int K, cudaStream_t stream) {
  using namespace edgeprof_bf16;
  if (rows == 1 && unroll == 8) return launch<1, 8>(w, x, bias, y, N, K, stream);
  if (rows == 2 && unroll == 4) return launch<2, 4>(w, x, bias, y, N, K, stream);
  if (rows == 2 && unroll == 8) return launch<2, 8>(w, x, bias, y, N, K, stream);
  if (rows == 4 && unroll == 2) return launch<4, 2>(w, x, bias, y, N, K, stream);
  if (rows == 4 && unroll == 4) return launch<4, 4>(w, x, bias, y, N, K, stream);
  return (int)cudaErrorInvalidValue;
}

// The head GEMV with the greedy tail (bf16_gemv_greedy_kernel, then gemv_greedy_finish_kernel); the same (rows, unroll)
// pairs.
int edgeprof_bf16_greedy_launch(int rows, int unroll, const void* w, const void* x, const void* bias, void* y, int N,
                                int K, const edgeprof_greedy::Tail& t, cudaStream_t stream) {
  using namespace edgeprof_bf16;
  if (rows == 1 && unroll == 8) return launch_greedy<1, 8>(w, x, bias, y, N, K, t, stream);
  if (rows == 2 && unroll == 4) return launch_greedy<2, 4>(w, x, bias, y, N, K, t, stream);
  if (rows == 2 && unroll == 8) return launch_greedy<2, 8>(w, x, bias, y, N, K, t, stream);
  if (rows == 4 && unroll == 2) return launch_greedy<4, 2>(w, x, bias, y, N, K, t, stream);
  if (rows == 4 && unroll == 4) return launch_greedy<4, 4>(w, x, bias, y, N, K, t, stream);
  return (int)cudaErrorInvalidValue;
}
