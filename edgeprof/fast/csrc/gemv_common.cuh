// Helpers shared by edgeprof's batch-1 GEMV kernels (w4a16_gemv.cu, bf16_gemv.cu).
#pragma once
#include <cuda_bf16.h>
#include <cstdint>

namespace edgeprof_gemv {

__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
  uint4 r;  // weights are read once per step: keep them out of L1
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
}

__device__ __forceinline__ float bf_lo(uint32_t v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float bf_hi(uint32_t v) { return __uint_as_float(v & 0xffff0000u); }

}  // namespace edgeprof_gemv
