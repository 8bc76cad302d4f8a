// Batch-1 decode attention in one launch (sm_90+): flash-decoding whose splits merge in a thread-block cluster.
//
// The Triton path (kernels.py) runs two launches per layer: a split kernel writes fp32 partials of every
// (kv head, split) to global memory, and a reduce kernel reads them back. On the H200 the pair takes 8-12 us per
// layer at ctx 2048, for ~1 us of KV reads (Qwen2.5-7B: 4 kv heads x 2048 x 128 x 2 x 2 bytes = 4 MB).
// Here one cluster of CL CTAs (8 or 16) takes one kv head:
//   1. each of a CTA's W warps streams 16-token blocks of K and V (blocks rank W + warp, then every CL W-th) into
//      registers.
//      The first block's loads are issued BEFORE the PDL wait: the cache rows < pos were written by earlier
//      steps (every earlier step is complete before this step's first PDL kernel starts), and pos is written only
//      after the step's last PDL kernel. So the KV stream overlaps the q/k/v GEMV's tail;
//   2. after the wait, each CTA stages its G query heads (RoPE applied and rounded to bf16, as the Triton kernels
//      round) and this step's k and v in shared memory; rank 0 writes them into the cache at pos. The lane whose
//      block holds row pos takes k/v from shared memory instead of its (stale) loaded registers;
//   3. q.K^T and P.V on the tensor cores (mma.m16n8k16 bf16, fp32 accumulate), with an online softmax per warp.
//      P is rounded to bf16 for the P.V mma, as FlashAttention-2 rounds it;
//   4. the warps of a CTA merge in shared memory, then the CTAs of the cluster merge through distributed shared
//      memory (DSMEM), in a fixed order: no fp32 partial goes to global memory, there is no second launch, and the
//      result is deterministic. PULL: every rank reads its slice of the outputs from every CTA's shared memory after
//      a cluster barrier, and a second barrier keeps each CTA alive until the others have read it. PUSH: every CTA
//      sends each rank its slice (st.async into that rank's shared memory, counted on its mbarrier) and waits only
//      for its own slice to arrive: one one-way DSMEM trip instead of a round trip, and no second barrier. The same
//      values are merged in the same order, so the output is bitwise the same.
//
// Fragment layouts (lane = 4 r + c; m16n8k16, A row-major 16 x 16, B col-major 16 x 8, C 16 x 8):
//   q.K^T: A = q [heads (G <= 8 real, rows 8..15 zero) x 16 dims], B = K^T [16 dims x 8 tokens], C = scores.
//     Lane (r, c) loads 16 bytes of token slot r (and 8 + r): dims 32 j + 8 c .. + 7, j < HD / 32. Dot products
//     do not depend on the order of the dims, so k-step 2 j + e takes dims 32 j + 8 c + 4 e + {0, 1} as its
//     (k = 2 c, 2 c + 1) and + {2, 3} as (k = 8 + 2 c, ...); q's A fragment reads the same dims of q.
//   P.V: A = P [heads x 16 tokens] straight from the two score tiles' C fragments (FA2's register reuse),
//     B = V [16 tokens x 8 dims]: n-tile nt = 8 h + t (h < HD / 64) takes dims 64 h + 8 n + t, so lane (r, c)
//     loads 16 bytes of token slots 2 c, 2 c + 1, 8 + 2 c, 9 + 2 c at dims 64 h + 8 r .. + 7 and interleaves two
//     slots per register (PRMT). C = out: lane (r, c) holds head r, dims 64 h + 16 c + t and + 8.
#include "gemv_common.cuh"

#include <cooperative_groups.h>

namespace {

namespace cg = cooperative_groups;
using edgeprof_gemv::add_pdl_attr;
using edgeprof_gemv::pdl_launch_dependents;
using edgeprof_gemv::pdl_wait;

constexpr int kMaxG = 8;   // query heads per kv head: the 8 real rows of the m16 tile

template <int HD, int W>  // head dim, warps per CTA
struct AttnSmem {
  __nv_bfloat16 q[kMaxG][HD];  // rotated q, rows >= G zero
  __nv_bfloat16 knew[HD];      // this step's k (rotated) and v
  __nv_bfloat16 vnew[HD];
  float wm[W][kMaxG];  // per warp: running max (log2 units), sum, unnormalised output
  float wl[W][kMaxG];
  float wacc[W][kMaxG][HD + 4];  // + 4: the fragment-order stores hit 8 banks, not 2
  float m[kMaxG];                     // the CTA's merge of its warps (what the other CTAs read)
  float l[kMaxG];
  float acc[kMaxG][HD];
};

__device__ __forceinline__ void mma_q(float (&c)[4], uint32_t a0, uint32_t a2, uint32_t b0, uint32_t b1) {
  // rows 8..15 of A (a1, a3) are zero: at most 8 query heads share a kv head
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

__device__ __forceinline__ uint4 ld_kv(const __nv_bfloat16* p, bool ok) {
  // ld.global.cs (read once: evict first), not the .nc path of the weight loads: this kernel also writes the cache
  // (row pos, whose loaded value the reader replaces)
  return ok ? __ldcs(reinterpret_cast<const uint4*>(p)) : make_uint4(0, 0, 0, 0);
}

template <int HD>
struct Block {  // one warp's registers for a 16-token block
  uint4 k[2][HD / 32];  // token slots r, 8 + r
  uint4 v[4][HD / 64];  // token slots 2c, 2c + 1, 8 + 2c, 9 + 2c

  __device__ __forceinline__ void load(const __nv_bfloat16* kh, const __nv_bfloat16* vh, int base, int n_live, int r,
                                       int c) {
    load_k(kh, base, n_live, r, c);
    load_v(vh, base, n_live, r, c);
  }
  __device__ __forceinline__ void load_k(const __nv_bfloat16* kh, int base, int n_live, int r, int c) {
#pragma unroll
    for (int t = 0; t < 2; ++t) {
      const int tok = base + 8 * t + r;
#pragma unroll
      for (int j = 0; j < HD / 32; ++j) k[t][j] = ld_kv(kh + (size_t)tok * HD + 32 * j + 8 * c, tok < n_live);
    }
  }
  __device__ __forceinline__ void load_v(const __nv_bfloat16* vh, int base, int n_live, int r, int c) {
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const int tok = base + 8 * (s >> 1) + 2 * c + (s & 1);
#pragma unroll
      for (int h = 0; h < HD / 64; ++h) v[s][h] = ld_kv(vh + (size_t)tok * HD + 64 * h + 8 * r, tok < n_live);
    }
  }

  // the lanes whose slot is row pos take this step's k / v from shared memory (their loads may predate the write)
  template <typename Smem>
  __device__ __forceinline__ void substitute(const Smem& sm, int base, int pos, int r, int c) {
#pragma unroll
    for (int t = 0; t < 2; ++t)
      if (base + 8 * t + r == pos)
#pragma unroll
        for (int j = 0; j < HD / 32; ++j) k[t][j] = *reinterpret_cast<const uint4*>(&sm.knew[32 * j + 8 * c]);
#pragma unroll
    for (int s = 0; s < 4; ++s)
      if (base + 8 * (s >> 1) + 2 * c + (s & 1) == pos)
#pragma unroll
        for (int h = 0; h < HD / 64; ++h) v[s][h] = *reinterpret_cast<const uint4*>(&sm.vnew[64 * h + 8 * r]);
  }
};

template <int HD>
struct WarpState {  // online softmax of one warp: head r of lane (r, c), log2 units
  float m = -INFINITY, l = 0.f;
  float acc[HD / 8][4] = {};

  // scores of the block's 16 tokens (q.K^T): tokens base + 8 t + 2 c + i are s[t][i], i < 2 (s[t][2..3]: padding)
  __device__ __forceinline__ void scores(float (&s)[2][4], const Block<HD>& b, const uint32_t (&qa)[HD / 16][2]) {
#pragma unroll
    for (int t = 0; t < 2; ++t)
#pragma unroll
      for (int j = 0; j < HD / 32; ++j) {
        mma_q(s[t], qa[2 * j][0], qa[2 * j][1], b.k[t][j].x, b.k[t][j].y);
        mma_q(s[t], qa[2 * j + 1][0], qa[2 * j + 1][1], b.k[t][j].z, b.k[t][j].w);
      }
  }

  // the online softmax update with the block's scores, then P.V
  __device__ __forceinline__ void update(float (&s)[2][4], const Block<HD>& b, int base, int n_live, float scale_log2,
                                         int c) {
    float mx = m;
#pragma unroll
    for (int t = 0; t < 2; ++t)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        s[t][i] = base + 8 * t + 2 * c + i < n_live ? s[t][i] * scale_log2 : -INFINITY;
        mx = fmaxf(mx, s[t][i]);
      }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));  // finite: every block has a live token
    const float alpha = exp2f(m - mx);
    float p[2][2];
#pragma unroll
    for (int t = 0; t < 2; ++t)
#pragma unroll
      for (int i = 0; i < 2; ++i) p[t][i] = exp2f(s[t][i] - mx);
    l = l * alpha + (p[0][0] + p[0][1]) + (p[1][0] + p[1][1]);
    m = mx;
    const uint32_t pa0 = pack_bf16(p[0][0], p[0][1]), pa2 = pack_bf16(p[1][0], p[1][1]);
#pragma unroll
    for (int h = 0; h < HD / 64; ++h)
#pragma unroll
      for (int t = 0; t < 8; ++t) {
        const unsigned sel = (t & 1) ? 0x7632u : 0x5410u;  // bf16 t of each 16-byte load, two slots per register
        const uint32_t b0 = __byte_perm(word(b.v[0][h], t >> 1), word(b.v[1][h], t >> 1), sel);
        const uint32_t b1 = __byte_perm(word(b.v[2][h], t >> 1), word(b.v[3][h], t >> 1), sel);
        float(&a)[4] = acc[8 * h + t];
        a[0] *= alpha;
        a[1] *= alpha;
        mma_q(a, pa0, pa2, b0, b1);
      }
  }
};

// exp2(m_i - M), 0 for a part that saw no token (m_i = -inf; M may be -inf too)
__device__ __forceinline__ float part_weight(float mi, float M) { return mi == -INFINITY ? 0.f : exp2f(mi - M); }

template <int HD, bool ROPE, typename Smem>
__device__ __forceinline__ void stage_inputs(Smem& sm, const __nv_bfloat16* __restrict__ qkv,
                                             const __nv_bfloat16* __restrict__ cos, const __nv_bfloat16* __restrict__ sin,
                                             int pos, int kvh, int G, int NH, int NKV) {
  // ROPE: qkv = the q/k/v GEMV's output [NH + 2 NKV, HD]; rotate-half RoPE as HF (and _rope_rows) compute it:
  // y[d] = x[d] cos[d] + sign(d) x[(d + HD/2) % HD] sin[d], sign -1 in the first half, in fp32, rounded to bf16.
  // Else qkv = q [NH, HD], already rotated, and the cache already holds row pos.
  for (int e = threadIdx.x; e < (kMaxG + 2) * HD; e += blockDim.x) {
    const int row = e / HD, d = e % HD;
    __nv_bfloat16 out = __float2bfloat16(0.f);
    const __nv_bfloat16* src = nullptr;
    if (row < G) src = qkv + (size_t)(kvh * G + row) * HD;
    else if (ROPE && row == kMaxG) src = qkv + (size_t)(NH + kvh) * HD;
    else if (ROPE && row == kMaxG + 1) src = qkv + (size_t)(NH + NKV + kvh) * HD;
    if (src != nullptr && (!ROPE || row == kMaxG + 1)) out = src[d];
    else if (src != nullptr) {
      const float x = __bfloat162float(src[d]), xr = __bfloat162float(src[(d + HD / 2) % HD]);
      const float cs = __bfloat162float(cos[(size_t)pos * HD + d]), sn = __bfloat162float(sin[(size_t)pos * HD + d]);
      out = __float2bfloat16(x * cs + (d < HD / 2 ? -xr : xr) * sn);
    }
    if (row < kMaxG) sm.q[row][d] = out;
    else if (row == kMaxG) sm.knew[d] = out;
    else sm.vnew[d] = out;
  }
}

template <int HD, int W>
__device__ __forceinline__ void merge_warps(AttnSmem<HD, W>& sm, int G) {
  for (int e = threadIdx.x; e < G * HD; e += blockDim.x) {
    const int h = e / HD, d = e % HD;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < W; ++w) M = fmaxf(M, sm.wm[w][h]);
    float a = 0.f, L = 0.f;
#pragma unroll
    for (int w = 0; w < W; ++w) {
      const float f = part_weight(sm.wm[w][h], M);
      a += f * sm.wacc[w][h][d];
      L += f * sm.wl[w][h];
    }
    sm.acc[h][d] = a;
    if (d == 0) {
      sm.m[h] = M;
      sm.l[h] = L;
    }
  }
}

struct MultiCluster {  // several clusters per kv head (a long cache): where their results meet in global memory
  float* acc;     // [NKV, S, G * HD] each cluster's merged, unnormalised output
  float* ml;      // [NKV, S, CL, kMaxG, 2] its (max, sum) per head, one copy per CTA rank
  int* tickets;   // [NKV, CL] zeros; the last of the S CTAs of one rank merges that rank's slice and resets it
  int tpc;        // the fewest cache tokens a cluster takes (a multiple of 16): min(S_max, ceil(n_live / tpc))
                  // clusters take part, each an equal share (a multiple of 16 tokens) of the live cache
};

// The merge of CL parts of one output element, (max, unnormalised sum, softmax denominator) each, in part order:
// deterministic, and the same arithmetic for the pull and the push merge
template <int CL>
__device__ __forceinline__ void merge_parts(const float (&m)[CL], const float (&a)[CL], const float (&l)[CL], float& M,
                                            float& A, float& L) {
  M = -INFINITY;
#pragma unroll
  for (int q = 0; q < CL; ++q) M = fmaxf(M, m[q]);
  A = 0.f;
  L = 0.f;
#pragma unroll
  for (int q = 0; q < CL; ++q) {  // fixed order: deterministic
    const float f = part_weight(m[q], M);
    A += f * a[q];
    L += f * l[q];
  }
}

// The cluster's merge of its CTAs for this CTA's slice of the G x HD outputs (e = rank + CL i), through DSMEM:
// (max, unnormalised sum, softmax denominator) of element e. Cluster: cg::cluster_group, a template parameter so the
// signature names no sm_90 type: cooperative_groups declares cluster_group only when compiling for sm_90+, and this
// translation unit must also compile for sm_80-sm_89 (the module's other kernels run there; this body is unused).
template <int HD, int W, int CL, typename Cluster>
__device__ __forceinline__ void cluster_merge(const AttnSmem<HD, W>& sm, Cluster& cluster, int h, int d, float& M,
                                              float& A, float& L) {
  float m[CL], a[CL], l[CL];  // all CL remote loads of each kind issued together: a DSMEM read is ~an L2 round trip
#pragma unroll
  for (int q = 0; q < CL; ++q) {
    const AttnSmem<HD, W>* o = cluster.map_shared_rank(&sm, q);
    m[q] = o->m[h];
    a[q] = o->acc[h][d];
    l[q] = o->l[h];
  }
  merge_parts<CL>(m, a, l, M, A, L);
}

// PUSH: each rank's receive buffer holds one slot per source rank q: q's values of the rank's G HD / CL outputs
// (element e = rank + CL i at i), then q's (max, sum) of every head h at push_ml() + 2 h (8-byte aligned pairs).
template <int HD, int CL>
__host__ __device__ constexpr int push_ml() { return kMaxG * HD / CL; }
template <int HD, int CL>
__host__ __device__ constexpr int push_slot() { return push_ml<HD, CL>() + 2 * kMaxG; }

// PUSH: send rank `rank`'s merged warps (sm.acc, sm.m, sm.l, complete: the caller's __syncthreads) to every rank's
// buffer (its own by plain stores), each counted on the receiver's mbarrier `bar`
template <int HD, int W, int CL>
__device__ __forceinline__ void push_slices(const AttnSmem<HD, W>& sm, float* recv, uint64_t* bar, int rank, int G) {
  using edgeprof_gemv::cluster_addr;
  for (int e = threadIdx.x; e < G * HD; e += blockDim.x) {
    const int owner = e % CL;
    float* dst = recv + rank * push_slot<HD, CL>() + e / CL;
    const float v = sm.acc[e / HD][e % HD];
    if (owner == rank) *dst = v;
    else edgeprof_gemv::st_async_f32(cluster_addr(dst, owner), v, cluster_addr(bar, owner));
  }
  for (int t = threadIdx.x; t < G * CL; t += blockDim.x) {
    const int h = t % G, owner = t / G;
    float* dst = recv + rank * push_slot<HD, CL>() + push_ml<HD, CL>() + 2 * h;
    if (owner == rank) {
      dst[0] = sm.m[h];
      dst[1] = sm.l[h];
    } else {
      edgeprof_gemv::st_async_f32x2(cluster_addr(dst, owner), sm.m[h], sm.l[h], cluster_addr(bar, owner));
    }
  }
}

// PUSH: cluster_merge's arithmetic for element e (slot i = e / CL of this rank) over the received slots, in the same
// order: bitwise the same (M, A, L)
template <int HD, int CL>
__device__ __forceinline__ void push_merge(const float* recv, int h, int i, float& M, float& A, float& L) {
  float m[CL], a[CL], l[CL];
#pragma unroll
  for (int q = 0; q < CL; ++q) {
    const float* slot = recv + q * push_slot<HD, CL>();
    m[q] = slot[push_ml<HD, CL>() + 2 * h];
    l[q] = slot[push_ml<HD, CL>() + 2 * h + 1];
    a[q] = slot[i];
  }
  merge_parts<CL>(m, a, l, M, A, L);
}

// Several clusters: the last CTA of each rank to arrive merges that rank's slice over the S clusters, in cluster
// order (deterministic), from L2. All S partials of an element are loaded together (unrolled to kMaxClusters,
// predicated): a loop that used each load before issuing the next cost S L2 round trips twice per element.
constexpr int kMaxClusters = 8;  // clusters per kv head at most (kernels.attn_clusters_per_head caps it)
template <int HD, int CL>
__device__ __forceinline__ void global_merge(const MultiCluster& mc, __nv_bfloat16* __restrict__ out, int kvh,
                                             int rank, int S, int S_max, int G, int* flag) {
  __threadfence();  // this thread's partials are visible before the ticket
  __syncthreads();
  if (threadIdx.x == 0) *flag = atomicAdd(&mc.tickets[kvh * CL + rank], 1) == S - 1;
  __syncthreads();
  if (!*flag) return;
  __threadfence();
  for (int e = rank + CL * (int)threadIdx.x; e < G * HD; e += CL * (int)blockDim.x) {
    const int h = e / HD;
    float m[kMaxClusters], l[kMaxClusters], a[kMaxClusters];
#pragma unroll
    for (int s = 0; s < kMaxClusters; ++s)
      if (s < S) {
        const float* ml = &mc.ml[((((size_t)kvh * S_max + s) * CL + rank) * kMaxG + h) * 2];
        m[s] = __ldcg(ml);
        l[s] = __ldcg(ml + 1);
        a[s] = __ldcg(&mc.acc[((size_t)kvh * S_max + s) * G * HD + e]);
      }
    float M = -INFINITY;
#pragma unroll
    for (int s = 0; s < kMaxClusters; ++s)
      if (s < S) M = fmaxf(M, m[s]);
    float A = 0.f, L = 0.f;
#pragma unroll
    for (int s = 0; s < kMaxClusters; ++s)
      if (s < S) {  // cluster order: deterministic
        const float f = part_weight(m[s], M);
        A += f * a[s];
        L += f * l[s];
      }
    out[(size_t)kvh * G * HD + e] = __float2bfloat16(A / L);
  }
  if (threadIdx.x == 0) mc.tickets[kvh * CL + rank] = 0;  // for the next launch (graph replays included)
}

template <int HD, bool ROPE, int W, int CL, bool PUSH>  // CL: CTAs per cluster (the launch's cluster dimension)
__global__ void __launch_bounds__(W * 32, 1)
    attn_decode_kernel(const __nv_bfloat16* __restrict__ qkv, __nv_bfloat16* kc, __nv_bfloat16* vc,
                       const int64_t* __restrict__ pos_p, const __nv_bfloat16* __restrict__ cos,
                       const __nv_bfloat16* __restrict__ sin, __nv_bfloat16* __restrict__ out, int max_ctx,
                       float scale_log2, int G, int NH, int NKV, MultiCluster mc) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  __shared__ __align__(16) AttnSmem<HD, W> sm;
  __shared__ int last_flag;
  __shared__ __align__(16) float recv[PUSH ? CL * push_slot<HD, CL>() : 4];  // PUSH: this rank's slots
  __shared__ __align__(8) uint64_t push_bar;
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = (int)cluster.block_rank();
  const int kvh = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32, r = lane / 4, c = lane % 4;
  __nv_bfloat16* kh = kc + (size_t)kvh * max_ctx * HD;  // this layer's cache of kv head kvh [max_ctx, HD]
  __nv_bfloat16* vh = vc + (size_t)kvh * max_ctx * HD;
  const int pos = (int)*pos_p, n_live = pos + 1;
  // cluster z of the S taking part covers tokens [z seg, (z + 1) seg): seg a multiple of 16, so no block straddles
  const int S = gridDim.z == 1 ? 1 : min((int)gridDim.z, (n_live + mc.tpc - 1) / mc.tpc), z = blockIdx.z;
  if (z >= S) return;  // the whole cluster leaves: no cluster barrier waits for it
  if constexpr (PUSH) {  // the other ranks' slots of this rank's outputs, counted before any can be sent; the
    // cluster barrier's arrive now, its wait before the sends
    if (threadIdx.x == 0)
      edgeprof_gemv::mbar_arm(&push_bar, (unsigned)((CL - 1) * (G * HD / CL + 2 * G) * sizeof(float)));
    edgeprof_gemv::cluster_arrive();
  }
  const int seg = ((n_live + S - 1) / S + 15) / 16 * 16;
  const int b_end = min((z + 1) * seg, n_live + 15) / 16;
  int b = z * seg / 16 + rank * W + warp;
  Block<HD> blk;
  if (b < b_end) blk.load(kh, vh, 16 * b, n_live, r, c);  // in flight across the wait
  pdl_wait();
  pdl_launch_dependents();
  stage_inputs<HD, ROPE>(sm, qkv, cos, sin, pos, kvh, G, NH, NKV);
  __syncthreads();
  if (ROPE && rank == 0 && z == 0)
    for (int d = threadIdx.x; d < HD; d += blockDim.x) {
      kh[(size_t)pos * HD + d] = sm.knew[d];
      vh[(size_t)pos * HD + d] = sm.vnew[d];
    }
  uint32_t qa[HD / 16][2];  // q's A fragment per k-step (rows r < 8; see the header for the dim order)
#pragma unroll
  for (int ks = 0; ks < HD / 16; ++ks) {
    const uint2 v = *reinterpret_cast<const uint2*>(&sm.q[r][32 * (ks / 2) + 8 * c + 4 * (ks % 2)]);
    qa[ks][0] = v.x;
    qa[ks][1] = v.y;
  }
  WarpState<HD> st;
  while (b < b_end) {
    if (ROPE) blk.substitute(sm, 16 * b, pos, r, c);
    float s[2][4] = {};
    st.scores(s, blk, qa);
    const int next = b + CL * W;  // the next block's K streams in during this one's softmax and P.V, its V after
    if (next < b_end) blk.load_k(kh, 16 * next, n_live, r, c);
    st.update(s, blk, 16 * b, n_live, scale_log2, c);
    if (next < b_end) blk.load_v(vh, 16 * next, n_live, r, c);
    b = next;
  }
  st.l += __shfl_xor_sync(0xffffffffu, st.l, 1);
  st.l += __shfl_xor_sync(0xffffffffu, st.l, 2);
  if (r < G) {  // rows >= G are padding
    if (c == 0) {
      sm.wm[warp][r] = st.m;
      sm.wl[warp][r] = st.l;
    }
#pragma unroll
    for (int h = 0; h < HD / 64; ++h)
#pragma unroll
      for (int t = 0; t < 8; ++t) {
        sm.wacc[warp][r][64 * h + 16 * c + t] = st.acc[8 * h + t][0];
        sm.wacc[warp][r][64 * h + 16 * c + 8 + t] = st.acc[8 * h + t][1];
      }
  }
  __syncthreads();
  merge_warps(sm, G);
  if constexpr (PUSH) {
    __syncthreads();                 // this CTA's (m, l, acc)
    edgeprof_gemv::cluster_wait();   // every rank's mbarrier is armed (arrived at the start)
    push_slices<HD, W, CL>(sm, recv, &push_bar, rank, G);
    edgeprof_gemv::mbar_wait_cluster(&push_bar, 0);  // the other ranks' slots of this rank's outputs
    __syncthreads();                 // and this rank's own slot
  } else {
    cluster.sync();  // every CTA's (m, l, acc) is ready to be read through DSMEM
  }
  for (int e = rank + CL * (int)threadIdx.x; e < G * HD; e += CL * (int)blockDim.x) {
    const int h = e / HD, d = e % HD;
    float M, A, L;
    if constexpr (PUSH) push_merge<HD, CL>(recv, h, e / CL, M, A, L);
    else cluster_merge<HD, W, CL>(sm, cluster, h, d, M, A, L);
    if (S == 1) {
      out[(size_t)(kvh * G + h) * HD + d] = __float2bfloat16(A / L);
    } else {
      mc.acc[((size_t)kvh * gridDim.z + z) * G * HD + e] = A;
      if (d == rank) {  // one thread per head (HD % CL == 0); every rank keeps its own copy for its own merger
        float* ml = &mc.ml[((((size_t)kvh * gridDim.z + z) * CL + rank) * kMaxG + h) * 2];
        ml[0] = M;
        ml[1] = L;
      }
    }
  }
  if constexpr (!PUSH) cluster.sync();  // no CTA leaves while another still reads its shared memory
  if (S > 1) global_merge<HD, CL>(mc, out, kvh, rank, S, gridDim.z, G, &last_flag);
#endif
}

template <int HD, bool ROPE, int W, int CL, bool PUSH>
int launch_attn(const void* qkv, void* kc, void* vc, const int64_t* pos, const void* cos, const void* sin, void* out,
                int max_ctx, float scale_log2, int G, int NH, int NKV, MultiCluster mc, int clusters, bool pdl,
                cudaStream_t stream) {
  auto kern = attn_decode_kernel<HD, ROPE, W, CL, PUSH>;
  static const cudaError_t attr = cudaFuncSetAttribute(kern, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  if (attr != cudaSuccess) return (int)attr;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(CL, NKV, clusters);
  cfg.blockDim = dim3(W * 32);
  cfg.stream = stream;
  cudaLaunchAttribute at[2];
  cfg.attrs = at;
  edgeprof_gemv::add_cluster_attr(cfg, dim3(CL, 1, 1));
  add_pdl_attr(cfg, pdl, reinterpret_cast<const void*>(kern));
  return (int)cudaLaunchKernelEx(&cfg, kern, static_cast<const __nv_bfloat16*>(qkv), static_cast<__nv_bfloat16*>(kc),
                                 static_cast<__nv_bfloat16*>(vc), pos, static_cast<const __nv_bfloat16*>(cos),
                                 static_cast<const __nv_bfloat16*>(sin), static_cast<__nv_bfloat16*>(out), max_ctx,
                                 scale_log2, G, NH, NKV, mc);
}

// Clusters of this kernel the GPU holds at once (cudaOccupancyMaxActiveClusters; its CTAs per SM in *per_sm): a
// cluster's CTAs must share one GPC, so this can be fewer than the CTA slots over CL. Asked of the PUSH kernel, whose
// receive buffer makes it the larger of the two merges: a count that holds for both.
template <int HD, bool ROPE, int W, int CL>
int attn_fit(int* per_sm) {
  auto kern = attn_decode_kernel<HD, ROPE, W, CL, true>;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(per_sm, kern, W * 32, 0) != cudaSuccess) *per_sm = 0;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(CL, 1);
  cfg.blockDim = dim3(W * 32);
  cudaLaunchAttribute at[1];
  cfg.attrs = at;
  edgeprof_gemv::add_cluster_attr(cfg, dim3(CL, 1, 1));
  return edgeprof_gemv::max_active_clusters(kern, cfg);
}

}  // namespace

// The clusters (and CTAs per SM) of the attention kernel for head_dim hd, `cluster` CTAs of `warps` warps, that the
// current GPU holds at once; a negative cudaError_t on error (below sm_90: cudaErrorNotSupported)
int edgeprof_attn_cluster_fit(int hd, bool rope, int cluster, int warps, int* per_sm) {
  using Fn = int (*)(int*);
#define EDGEPROF_FIT_CL(HD, ROPE, W) {attn_fit<HD, ROPE, W, 8>, attn_fit<HD, ROPE, W, 16>}
#define EDGEPROF_FIT_W(HD, ROPE) {EDGEPROF_FIT_CL(HD, ROPE, 4), EDGEPROF_FIT_CL(HD, ROPE, 8)}
  static const Fn table[2][2][2][2] = {{EDGEPROF_FIT_W(64, false), EDGEPROF_FIT_W(64, true)},
                                       {EDGEPROF_FIT_W(128, false), EDGEPROF_FIT_W(128, true)}};
#undef EDGEPROF_FIT_W
#undef EDGEPROF_FIT_CL
  if ((hd != 64 && hd != 128) || (warps != 4 && warps != 8) || (cluster != 8 && cluster != 16))
    return -(int)cudaErrorInvalidValue;
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) !=
                                               cudaSuccess || major < 9)
    return -(int)cudaErrorNotSupported;
  return table[hd == 128][rope][warps == 8][cluster == 16](per_sm);
}

// head_dim 64 or 128, G <= 8 query heads per kv head, clusters of 8 or 16 CTAs of `warps` (4 or 8) warps, up to
// `clusters` clusters per kv head (> 1: the live cache spread over min(clusters, ceil(live / tokens_per_cluster))
// of them; ws_acc, ws_ml, tickets as in MultiCluster); push: the cluster's merge sends each rank its slice (else each
// rank reads it; the header's step 4); returns a cudaError_t
int edgeprof_attn_decode_launch(int hd, bool rope, const void* qkv, void* kc, void* vc, const int64_t* pos,
                                const void* cos, const void* sin, void* out, int max_ctx, float scale, int G, int NH,
                                int NKV, int cluster, int warps, int clusters, int tokens_per_cluster, float* ws_acc,
                                float* ws_ml, int* tickets, bool pdl, bool push, cudaStream_t stream) {
  using Fn = int (*)(const void*, void*, void*, const int64_t*, const void*, const void*, void*, int, float, int, int,
                     int, MultiCluster, int, bool, cudaStream_t);
#define EDGEPROF_ATTN_P(HD, ROPE, W, CL) {launch_attn<HD, ROPE, W, CL, false>, launch_attn<HD, ROPE, W, CL, true>}
#define EDGEPROF_ATTN_CL(HD, ROPE, W) {EDGEPROF_ATTN_P(HD, ROPE, W, 8), EDGEPROF_ATTN_P(HD, ROPE, W, 16)}
#define EDGEPROF_ATTN_W(HD, ROPE) {EDGEPROF_ATTN_CL(HD, ROPE, 4), EDGEPROF_ATTN_CL(HD, ROPE, 8)}
  // [hd 128?][rope?][8 warps?][16 CTAs?][push?]
  static const Fn table[2][2][2][2][2] = {{EDGEPROF_ATTN_W(64, false), EDGEPROF_ATTN_W(64, true)},
                                          {EDGEPROF_ATTN_W(128, false), EDGEPROF_ATTN_W(128, true)}};
#undef EDGEPROF_ATTN_W
#undef EDGEPROF_ATTN_CL
#undef EDGEPROF_ATTN_P
  if ((hd != 64 && hd != 128) || (warps != 4 && warps != 8) || (cluster != 8 && cluster != 16) || clusters < 1 ||
      clusters > kMaxClusters ||
      (clusters > 1 && (tokens_per_cluster < 16 || tokens_per_cluster % 16 || !ws_acc || !ws_ml || !tickets)))
    return (int)cudaErrorInvalidValue;
  const MultiCluster mc{ws_acc, ws_ml, tickets, tokens_per_cluster};
  int dev = 0, major = 0;  // clusters and DSMEM: sm_90+ (the kernel body is empty below that)
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) !=
                                               cudaSuccess || major < 9)
    return (int)cudaErrorNotSupported;
  const float scale_log2 = scale * 1.4426950408889634f;  // exp(x) = exp2(x log2 e)
  return table[hd == 128][rope][warps == 8][cluster == 16][push](qkv, kc, vc, pos, cos, sin, out, max_ctx, scale_log2,
                                                                G, NH, NKV, mc, clusters, pdl, stream);
}
