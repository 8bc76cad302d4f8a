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

template <int ROWS, int U>
__global__ void __launch_bounds__(kWarps * 32)
bf16_gemv_kernel(const uint4* __restrict__ w, const uint4* __restrict__ x, const __nv_bfloat16* __restrict__ bias,
                 __nv_bfloat16* __restrict__ y, int N, int K, int pf_bytes) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * kWarps + warp) * ROWS;
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
  if (row0 >= N) return;  // warp-uniform; no barriers below
  float acc[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) acc[r] = 0.f;
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
      for (int r = 0; r < ROWS; ++r) acc[r] = dot8(wv[u][r], xf, acc[r]);
    }
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    float s = acc[r];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0 && row0 + r < N) y[row0 + r] = __float2bfloat16(s + (bias ? __bfloat162float(bias[row0 + r]) : 0.f));
  }
}

template <int ROWS, int U>
cudaError_t launch(const void* w, const void* x, const void* bias, void* y, int N, int K, cudaStream_t stream) {
  const int warps = (N + ROWS - 1) / ROWS;
  return edgeprof_gemv::launch(bf16_gemv_kernel<ROWS, U>, dim3((warps + kWarps - 1) / kWarps), dim3(kWarps * 32), 0,
                               stream, reinterpret_cast<const uint4*>(w), reinterpret_cast<const uint4*>(x),
                               reinterpret_cast<const __nv_bfloat16*>(bias), reinterpret_cast<__nv_bfloat16*>(y), N, K,
                               512 * edgeprof_gemv::prefetch_tiles_now());
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
