// Helpers shared by edgeprof's batch-1 GEMV kernels (w4a16_gemv.cu, bf16_gemv.cu).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cstdint>
#include <map>
#include <mutex>
#include <utility>

namespace edgeprof_gemv {

__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
  uint4 r;  // weights are read once per step: keep them out of L1
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
}

// cp.async (sm_80+): a copy from global to shared memory that holds no register while in flight. The
// pipelined W4 kernels keep several chunks of weights in flight per thread this way (a register double
// buffer holds two and costs 24 registers each). Each lane later reads only what it copied itself, so a
// lane's own wait_group is all the synchronisation it needs.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {  // 16 bytes, L2 only (streamed)
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem) : "memory");
}
template <int BYTES>  // 4 or 8 bytes (the group scales)
__device__ __forceinline__ void cp_async_small(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2;" ::"r"(s), "l"(gmem), "n"(BYTES) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int PENDING>  // wait until at most PENDING of this thread's committed groups are still in flight
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(PENDING) : "memory"); }

// The bulk copy engine (TMA, sm_90+): one instruction copies a contiguous block of global memory into this CTA's
// shared memory and counts its bytes on an mbarrier, holding no register and costing no per-16-byte instruction.
// The staged W4 variants (st, clst) issue their weight slice this way BEFORE the PDL wait, so a CTA that starts
// during the previous kernel's drain streams its weights there. Below sm_90 these compile to nothing (the host
// refuses those variants there). Addresses 16-byte aligned, sizes multiples of 16.
__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
// one thread: an mbarrier of one arrival that expects `bytes` of bulk copies (visible to the copy engine)
__device__ __forceinline__ void mbar_arm(uint64_t* bar, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(bar)) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
#endif
}
__device__ __forceinline__ void bulk_g2s(void* dst, const void* src, unsigned bytes, uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
               ::"r"(smem_addr(dst)), "l"(src), "r"(bytes), "r"(smem_addr(bar)) : "memory");
#endif
}
// every thread that reads the staged bytes: until the mbarrier's phase `parity` has completed
__device__ __forceinline__ void mbar_wait(uint64_t* bar, unsigned parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  unsigned done = 0;
  while (!done)
    asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                 : "=r"(done) : "r"(smem_addr(bar)), "r"(parity) : "memory");
#endif
}

// Thread-block cluster messaging (sm_90+; below, nothing): the gather finish of the W4 variant "clscxg".
// The cluster barrier split in two: every thread of every CTA of the cluster arrives (release: what this thread wrote
// before, e.g. an mbarrier's init, is visible to a CTA past the matching wait) and later waits (acquire).
__device__ __forceinline__ void cluster_arrive() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
#endif
}
__device__ __forceinline__ void cluster_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}
// the shared::cluster address of `p` (in this CTA's shared memory) in the cluster's CTA `rank`
__device__ __forceinline__ unsigned cluster_addr(const void* p, unsigned rank) {
  unsigned a = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(a) : "r"(smem_addr(p)), "r"(rank));
#endif
  return a;
}
// A store into another CTA's shared memory (cluster addresses) that counts its bytes on that CTA's mbarrier `bar`:
// the sender does not wait for it, and may exit before it lands.
__device__ __forceinline__ void st_async_f32x2(unsigned addr, float a, float b, unsigned bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.f32 [%0], {%1, %2}, [%3];"
               ::"r"(addr), "f"(a), "f"(b), "r"(bar) : "memory");
#endif
}
__device__ __forceinline__ void st_async_f32(unsigned addr, float a, unsigned bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.f32 [%0], %1, [%2];"
               ::"r"(addr), "f"(a), "r"(bar) : "memory");
#endif
}
// mbar_wait for bytes that other CTAs of the cluster stored (st_async_*): acquire at cluster scope
__device__ __forceinline__ bool mbar_try_wait_cluster(uint64_t* bar, unsigned parity) {
  unsigned done = 1;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "{ .reg .pred p; mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
      : "=r"(done) : "r"(smem_addr(bar)), "r"(parity) : "memory");
#endif
  return done != 0;
}
// every thread of a CTA that reads what other CTAs of its cluster stored with st_async_*: until the mbarrier's phase
// `parity` completes. Bounded: a miscounted mbarrier fails the launch after 2 s instead of hanging the GPU.
__device__ __forceinline__ void mbar_wait_cluster(uint64_t* bar, unsigned parity) {
  uint64_t t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  while (!mbar_try_wait_cluster(bar, parity)) {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    if (t - t0 > 2000000000ull) __trap();
  }
}

// A split-K ticket: atomic add at GPU scope with release (orders what this thread, and through a CTA barrier before it
// the whole CTA, wrote before it) and acquire (what the earlier arrivals wrote is visible after it). sm_70+.
__device__ __forceinline__ int atom_add_acq_rel_gpu(int* p, int v) {
  int old;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
  asm volatile("atom.add.acq_rel.gpu.global.s32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory");
#else
  __threadfence();
  old = atomicAdd(p, v);
  __threadfence();
#endif
  return old;
}

__device__ __forceinline__ float bf_lo(uint32_t v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float bf_hi(uint32_t v) { return __uint_as_float(v & 0xffff0000u); }

// A float published to another CTA as one 64-bit word, (1 << 32) | its bits: written and read single-copy atomic, so
// the reader needs no flag, fence or acquire round trip before the value (the stream-K tails, w4a16_sk.cu). The
// reader resets the word to 0 for the next launch.
__device__ __forceinline__ unsigned long long ld_relaxed_u64(const unsigned long long* p) {
  unsigned long long v;
  asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void st_relaxed_u64(unsigned long long* p, unsigned long long v) {
  asm volatile("st.relaxed.gpu.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
__device__ __forceinline__ unsigned long long tag_float(float v) { return (1ull << 32) | __float_as_uint(v); }
__device__ __forceinline__ bool tagged(unsigned long long w) { return (w >> 32) == 1ull; }
// A wait for a word that never comes is a bug (a value nobody publishes): trap after ~2^26 polls (seconds), so the
// launch fails with an error instead of hanging the process
constexpr long long kTagSpinMax = 1ll << 26;

// Programmatic dependent launch (PDL, sm_90+). A decode step is a chain of ~180 short kernels; with PDL
// the next kernel's CTAs start while this one drains, issue their weight loads (which depend on nothing
// earlier in the chain), and only then wait for the previous kernel's outputs. Every kernel launched with
// the PDL attribute calls pdl_wait() before it reads or writes anything an earlier kernel touches, so the
// wait is transitive along the chain. Both are no-ops when the kernel was launched without the attribute.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Lets the next kernel launch once every CTA of this one has called it (or exited): called right after
// pdl_wait, so at most two kernels of the chain hold SM slots at a time.
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// L2 prefetch of [p, p + bytes) by the 32 lanes of a warp, one 128-byte line per lane and instruction. With PDL
// a kernel's CTAs start while the previous kernel drains: prefetching the first part of their weight slice
// before pdl_wait moves that part of the stream into the previous kernel's tail (a small GEMV's whole slice).
__device__ __forceinline__ void prefetch_l2(const void* p, long bytes, int lane) {
  const char* c = static_cast<const char*>(p);
  for (long off = 128L * lane; off < bytes; off += 32 * 128) asm volatile("prefetch.global.L2 [%0];" ::"l"(c + off));
}

// Host switches (edgeprof_gemv_set_pdl, from the binding), one for every GEMV of the extension: PDL on or off,
// and how many 512-byte weight tiles per warp a PDL launch prefetches into L2 before it waits.
inline bool& pdl_enabled() {
  static bool on = false;
  return on;
}
// PDL for the down projection's GEMV (the W4 launches with SiLU*up fused), separately: a chain of down GEMVs ran
// slower with PDL than without (H200, results/h200/2026-11-28-pdl r11), the one large shape that did
inline bool& pdl_act_enabled() {
  static bool on = true;
  return on;
}
inline int& pdl_prefetch_tiles() {
  static int tiles = 0;
  return tiles;
}
// the prefetch a launch passes to its kernel: only with PDL (without it the loads follow at once)
inline int prefetch_tiles_now() { return pdl_enabled() ? pdl_prefetch_tiles() : 0; }

// `kern`'s attributes on the current device (cudaFuncGetAttributes), or nullptr where they cannot be read. Asked once
// per kernel and device: cudaFuncGetAttributes costs host time, and eager launches (prefill, warm-up) would pay it on
// every call.
inline const cudaFuncAttributes* func_attrs(const void* kern) {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return nullptr;
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, std::pair<bool, cudaFuncAttributes>> known;
  const std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(kern, dev);
  auto it = known.find(key);
  if (it == known.end()) {
    cudaFuncAttributes fa{};
    const bool ok = cudaFuncGetAttributes(&fa, kern) == cudaSuccess;
    it = known.emplace(key, std::make_pair(ok, fa)).first;
  }
  return it->second.first ? &it->second.second : nullptr;  // map nodes stay put: the pointer outlives the lock
}

// Whether `kern`'s binary for the current device was built for sm_90+ (only then does it contain the
// griddepcontrol.wait that makes an early start safe).
inline bool binary_has_pdl(const void* kern) {
  const cudaFuncAttributes* fa = func_attrs(kern);
  return fa != nullptr && fa->binaryVersion >= 90;
}

// Lets `kern` launch with `dynamic` bytes of dynamic shared memory: above the 48 KB a launch gets without asking,
// counting the kernel's static shared memory too (a launch of 47 KB dynamic beside 2 KB static fails with "invalid
// argument" unless it asks; the wk variants' first run, results/h200/2026-11-29-wk r80).
template <typename Kern>
cudaError_t allow_smem(Kern kern, size_t dynamic) {
  const cudaFuncAttributes* fa = func_attrs(reinterpret_cast<const void*>(kern));
  if (dynamic + (fa ? fa->sharedSizeBytes : 0) <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)dynamic);
}

// Appends the PDL launch attribute to cfg (whose attrs point at room for it) when `pdl` and `kern`'s binary was built
// for sm_90+ (binary_has_pdl)
inline void add_pdl_attr(cudaLaunchConfig_t& cfg, bool pdl, const void* kern) {
  if (!pdl || !binary_has_pdl(kern)) return;
  cudaLaunchAttribute& a = cfg.attrs[cfg.numAttrs++];
  a.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  a.val.programmaticStreamSerializationAllowed = 1;
}

// Appends a thread-block cluster dimension to cfg (whose attrs point at room for it); sm_90+
inline void add_cluster_attr(cudaLaunchConfig_t& cfg, dim3 cluster) {
  cudaLaunchAttribute& a = cfg.attrs[cfg.numAttrs++];
  a.id = cudaLaunchAttributeClusterDimension;
  a.val.clusterDim.x = cluster.x;
  a.val.clusterDim.y = cluster.y;
  a.val.clusterDim.z = cluster.z;
}

// How many clusters of `kern`, launched as cfg (grid, block, shared memory and its cluster attribute), the GPU holds
// at once (cudaOccupancyMaxActiveClusters; clusters above 8 CTAs allowed): a cluster's CTAs must share one GPC, so a
// launch of more clusters than this runs in waves. Negative: a cudaError_t.
template <typename Kern>
int max_active_clusters(Kern kern, const cudaLaunchConfig_t& cfg) {
  cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  if (e == cudaSuccess) e = allow_smem(kern, cfg.dynamicSmemBytes);
  int n = 0;
  if (e == cudaSuccess) e = cudaOccupancyMaxActiveClusters(&n, kern, &cfg);
  return e == cudaSuccess ? n : -(int)e;
}

// Launch `kern` on `stream`, with the PDL attribute when it is switched on, `pdl_ok` (the caller's own switch) AND
// the kernel's binary was built for sm_90+ (binary_has_pdl). cluster_y > 0: thread-block clusters of (1, cluster_y, 1)
// CTAs (sm_90+; grid.y must be a multiple).
template <typename... KArgs, typename... Args>
cudaError_t launch_ex(bool pdl_ok, int cluster_y, void (*kern)(KArgs...), dim3 grid, dim3 block, size_t smem,
                      cudaStream_t stream, Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[2];
  cfg.attrs = attr;
  if (cluster_y > 0) add_cluster_attr(cfg, dim3(1, cluster_y, 1));
  add_pdl_attr(cfg, pdl_ok && pdl_enabled(), reinterpret_cast<const void*>(kern));
  return cudaLaunchKernelEx(&cfg, kern, static_cast<KArgs>(args)...);
}
template <typename... KArgs, typename... Args>
cudaError_t launch_opt(bool pdl_ok, void (*kern)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                       Args... args) {
  return launch_ex(pdl_ok, 0, kern, grid, block, smem, stream, args...);
}
template <typename... KArgs, typename... Args>
cudaError_t launch(void (*kern)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args... args) {
  return launch_opt(true, kern, grid, block, smem, stream, args...);
}

}  // namespace edgeprof_gemv
