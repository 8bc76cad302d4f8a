// edgeprof's W4A16 batch-1 GEMV: y[N] = W[N, K] x[K], W int4 with a bf16 scale (and, asymmetric,
// an integer zero) per row and group of G in {32, 64, 128} input columns. sm_80+ (mma.sync bf16).
//
// Packed layout (built by edgeprof/fast/w4cuda.py:pack_w4; shapes in 32-bit words):
//   qw [N/16, K/64, 32 lanes, 4 words]  one 16-row x 64-column tile is 512 contiguous bytes; lane L
//       loads its 16 bytes with one 128-bit load, so a warp streaming a row block along K reads
//       contiguous memory. Word j of a lane covers columns 16j..16j+15 of the tile and holds exactly
//       the 8 bf16 values that lane owns in the A operand of one mma.m16n8k16 (row r = L/4 (+8),
//       column 2(L%4) (+1, +8, +9)), nibble p at bits 4p, ordered so that
//       ((word >> 4r) & 0x000f000f) | 0x43004300 is A register r = {128 + q, 128 + q'} as bf16x2.
//   sz sym : [N/16, K/G, 8, 2] bf16  (s[r], s[r+8]) for r = L/4: one 32-bit load per group
//   sz asym: [N/16, K/G, 8, 4] bf16  (s[r], s[r+8], 128+z[r], 128+z[r+8]): one 64-bit load
// Math: the tensor core sums x * (128 + q) exactly in fp32 over each group; the zero point
// comes out afterwards: y += s * (acc - (128 + z) * sum(x over the group)). The scale is applied
// once per group after the partial dot product, never per weight.
// Split-K: blockIdx.y takes a slice of K tiles; partials go to an fp32 workspace and the last CTA
// of a row-block column (atomic ticket) adds them in split order: deterministic.
#include "w4a16_kernels.cuh"

// the tuning variants' entry point (w4a16_tune.cu). The decoders' module is built without them
// (EDGEPROF_W4_NO_TUNE, w4cuda.load_extension): there a variant launch fails with "operation not supported".
#ifdef EDGEPROF_W4_NO_TUNE
static int edgeprof_w4a16_tune_launch(int, bool, bool, const void*, const void*, const void*, const void*, void*,
                                      float*, int*, int, int, int, int, int, int, cudaStream_t) {
  return (int)cudaErrorNotSupported;
}
#else
int edgeprof_w4a16_tune_launch(int group, bool asym, bool act, const void* qw, const void* sz, const void* x,
                               const void* bias, void* y, float* partial, int* counters, int N, int K,
                               int splits, int tiles_per_split, int variant, int grid_x, cudaStream_t stream);
#endif

// the latency variants' entry point and their ids (w4a16_lat.cu; in both modules)
bool edgeprof_w4a16_is_lat_variant(int variant);
int edgeprof_w4a16_lat_launch(int variant, int group, bool asym, bool act, bool norm, const void* qw, const void* sz,
                              const void* x, const void* bias, void* y, float* partial, int* counters, int N, int K,
                              int splits, int tps, cudaStream_t s, const void* res, const void* nw, void* res_out,
                              float eps);

// the stream-K variants' entry point (w4a16_sk.cu; in both modules)
int edgeprof_w4a16_sk_launch(int variant, int group, bool asym, bool act, const void* qw, const void* sz, const void* x,
                             const void* bias, void* y, float* partial, int N, int K, int splits, int grid_x,
                             cudaStream_t s);

// PDL on or off, the L2 prefetch before its wait (512-byte tiles per warp), and PDL for the down projection (the
// W4 launches with SiLU*up fused), for every GEMV this extension launches from now on (the binding's set_pdl)
void edgeprof_gemv_set_pdl(bool on, int prefetch_tiles, bool down) {
  edgeprof_gemv::pdl_enabled() = on;
  edgeprof_gemv::pdl_act_enabled() = down;
  edgeprof_gemv::pdl_prefetch_tiles() = prefetch_tiles < 0 ? 0 : prefetch_tiles;
}

// the fp16 mma (F16) on or off for every default W4 launch from now on (the binding's set_f16)
void edgeprof_w4a16_set_f16(bool on) { edgeprof_w4::f16_enabled() = on; }

// the fused norm's batched loads on or off for every bf16-mma fused-norm launch from now on (set_norm_batch)
void edgeprof_w4a16_set_norm_batch(bool on) { edgeprof_w4::norm_batch_enabled() = on; }
// the deferred norm (NORM 3) on or off for the fused-norm launches of scx (one split), scxa and clscx from now on
void edgeprof_w4a16_set_norm_deferred(bool on) { edgeprof_w4::norm_deferred_enabled() = on; }

// C entry point of the fused-norm GEMV: y = W rmsnorm(x + res) * nw (+ bias), res_out = x + res. variant 0: the
// default launch; else a decoder variant (edgeprof_w4a16_is_lat_variant: w4a16_lat.cu, group 128).
int edgeprof_w4a16_norm_launch(int group, bool asym, const void* qw, const void* sz, const void* x, const void* res,
                               const void* nw, void* res_out, float eps, const void* bias, void* y, float* partial,
                               int* counters, int N, int K, int splits, int tiles_per_split, int variant,
                               cudaStream_t stream) {
  using namespace edgeprof_w4;
  if (variant != 0)
    return edgeprof_w4a16_lat_launch(variant, group, asym, false, true, qw, sz, x, bias, y, partial, counters, N, K,
                                     splits, tiles_per_split, stream, res, nw, res_out, eps);
  const NormArgs na{reinterpret_cast<const __nv_bfloat16*>(res), reinterpret_cast<const __nv_bfloat16*>(nw),
                    reinterpret_cast<__nv_bfloat16*>(res_out), eps};
  const int tps = tiles_per_split;
  switch (group) {
    case 32: return launch_norm_default<32>(asym, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, stream, na);
    case 64: return launch_norm_default<64>(asym, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, stream, na);
    case 128: return launch_norm_default<128>(asym, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, stream, na);
    default: return (int)cudaErrorInvalidValue;
  }
}

// C entry point of the fused MLP (one launch): y = down(silu(g) * u), [g | u] = gate_up(rmsnorm(x + res) * nw) written
// to gu (the workspace down's items read); res_out = x + res. gate_up runs unsplit; down with splits x tps.
int edgeprof_w4a16_mlp_launch(int group, bool asym, const void* gu_qw, const void* gu_sz, const void* gu_bias,
                              const void* x, const void* res, const void* nw, void* res_out, float eps, void* gu,
                              const void* d_qw, const void* d_sz, const void* d_bias, void* y, float* partial,
                              int* counters, int* ws, int I, int H, int splits, int tiles_per_split,
                              cudaStream_t stream) {
  using namespace edgeprof_w4;
  MlpArgs m;
  m.gu = w4_args(gu_qw, gu_sz, x, gu_bias, gu, nullptr, nullptr, 2 * I, H, H / 64);
  m.down = w4_args(d_qw, d_sz, gu, d_bias, y, partial, counters, H, I, tiles_per_split);
  m.na = NormArgs{reinterpret_cast<const __nv_bfloat16*>(res), reinterpret_cast<const __nv_bfloat16*>(nw),
                  reinterpret_cast<__nv_bfloat16*>(res_out), eps};
  m.ws = ws;
  m.gu_items = 2 * I / 64;
  m.down_items = ((H / 16 + kWarps - 1) / kWarps) * splits;
  switch (group) {
    case 32: return launch_mlp_default<32>(asym, m, stream);
    case 64: return launch_mlp_default<64>(asym, m, stream);
    case 128: return launch_mlp_default<128>(asym, m, stream);
    default: return (int)cudaErrorInvalidValue;
  }
}

// C entry point for the torch binding (w4a16_binding.cpp); returns a cudaError_t as int.
// variant 0: the default kernel (4 warps, one CTA per row-block column) for every group size;
// variant 1 ("w8", 8 warps per CTA), 2 ("persist", grid_x CTAs per split walk the columns), 3 ("tm", the
// tile-major layout), 4 ("tm8", tile-major with 8 warps), 5-7 ("o8", "o6", "u8": loads per chunk and
// CTAs per SM), 8 ("xscalar": the default kernel with its first, scalar x staging), 9 ("l3": one LOP3 per
// dequantized register), 10 ("lean": l3 with two chunks per loop iteration, no register copies, no bound
// checks on full chunks; 5 CTAs/SM), 11 ("lean4": the same at 4 CTAs/SM), 12 / 13 ("u14" / "u10": 14 / 10 loads per
// chunk), 14-18 ("cp4s4", "cp6s3", "cp4s6", "cp8s3", "cp2s8": the default kernel streaming through a cp.async
// ring of S chunks of U tiles; measured slower than base on every shape, results/h200/2026-11-28-dequant r15),
// 19 ("f16": the fp16 mma), 20 / 21 ("w2" / "w1": CTAs of 2 / 1 warps) are tuning variants instantiated for
// group 128 only (keeps the JIT build short); 22-24 ("k2", "k4", "cl") are the latency variants (w4a16_lat.cu, group
// 128), which the decoders' module has too; 25, 26 ("cl6", "cl8": cl at 6 and 8 CTAs per SM) and 27-29 ("st",
// "clst", "clst6": base and cl with the first tiles of each warp's slice bulk-copied into shared memory before the
// PDL wait) are tuning variants; 30-35 ("nomath", "clnomath", "nomathx", "clnomathx", "nomathxs", "clnomathxs") are
// diagnostic ones: base and cl without the math (x: nor the x staging; xs: nor the scale loads), for timing only (y
// is wrong by design); 36, 37 ("sc", "clsc": base and cl with the scales staged in shared memory) and 42, 43 ("scx",
// "clscx": sc and clsc with the group sums of x in the staging pass) are decoder variants (w4a16_lat.cu); 38-41 are in
// w4a16_tune.cu's list.
int edgeprof_w4a16_launch(int group, bool asym, bool act, const void* qw, const void* sz, const void* x,
                          const void* bias, void* y, float* partial, int* counters, int N, int K, int splits,
                          int tiles_per_split, int variant, int grid_x, cudaStream_t stream) {
  using namespace edgeprof_w4;
  // the stream-K variants 57-59 (w4a16_sk.cu; both modules): partial = their published tails
  if (variant == 57 || variant == 58 || variant == 59)
    return edgeprof_w4a16_sk_launch(variant, group, asym, act, qw, sz, x, bias, y, partial, N, K, splits, grid_x,
                                    stream);
  if (edgeprof_w4a16_is_lat_variant(variant))  // the decoder variants (w4a16_lat.cu)
    return edgeprof_w4a16_lat_launch(variant, group, asym, act, false, qw, sz, x, bias, y, partial, counters, N, K,
                                     splits, tiles_per_split, stream, nullptr, nullptr, nullptr, 0.f);
  if (variant != 0)  // the tuning variants: w4a16_tune.cu (its own translation unit, compiled in parallel)
    return edgeprof_w4a16_tune_launch(group, asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits,
                                      tiles_per_split, variant, grid_x, stream);
  const int tps = tiles_per_split;
  switch (group) {
    case 32: return launch_default<32>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, stream);
    case 64: return launch_default<64>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, stream);
    case 128: return launch_default<128>(asym, act, qw, sz, x, bias, y, partial, counters, N, K, splits, tps, stream);
    default: return (int)cudaErrorInvalidValue;
  }
}
