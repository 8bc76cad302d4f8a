// torch binding of edgeprof's GEMVs (w4a16_gemv.cu, bf16_gemv.cu). Checks every argument, launches on the
// current stream (so it is captured by CUDA graphs) and raises on any launch error.
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include "greedy_tail.h"

int edgeprof_w4a16_launch(int group, bool asym, bool act, const void* qw, const void* sz, const void* x,
                          const void* bias, void* y, float* partial, int* counters, int N, int K, int splits,
                          int tiles_per_split, int variant, int grid_x, cudaStream_t stream);
int edgeprof_w4a16_norm_launch(int group, bool asym, const void* qw, const void* sz, const void* x, const void* res,
                               const void* nw, void* res_out, float eps, const void* bias, void* y, float* partial,
                               int* counters, int N, int K, int splits, int tiles_per_split, int variant,
                               cudaStream_t stream);
int edgeprof_w4a16_mlp_launch(int group, bool asym, const void* gu_qw, const void* gu_sz, const void* gu_bias,
                              const void* x, const void* res, const void* nw, void* res_out, float eps, void* gu,
                              const void* d_qw, const void* d_sz, const void* d_bias, void* y, float* partial,
                              int* counters, int* ws, int I, int H, int splits, int tiles_per_split,
                              cudaStream_t stream);
int edgeprof_bf16_gemv_launch(int rows, int unroll, const void* w, const void* x, const void* bias, void* y, int N,
                              int K, cudaStream_t stream);
int edgeprof_bf16_greedy_launch(int rows, int unroll, const void* w, const void* x, const void* bias, void* y, int N,
                                int K, const edgeprof_greedy::Tail& t, cudaStream_t stream);
void edgeprof_gemv_set_pdl(bool on, int prefetch_tiles, bool down);
int edgeprof_attn_decode_launch(int hd, bool rope, const void* qkv, void* kc, void* vc, const int64_t* pos,
                                const void* cos, const void* sin, void* out, int max_ctx, float scale, int G, int NH,
                                int NKV, int cluster, int warps, int clusters, int tokens_per_cluster, float* ws_acc,
                                float* ws_ml, int* tickets, bool pdl, bool push, cudaStream_t stream);
void edgeprof_w4a16_set_f16(bool on);
int edgeprof_w4a16_cluster_fit(bool asym, bool act, bool norm, int N, int splits, int tps);
int edgeprof_attn_cluster_fit(int hd, bool rope, int cluster, int warps, int* per_sm);
void edgeprof_w4a16_set_norm_batch(bool on);
void edgeprof_w4a16_set_norm_deferred(bool on);
bool edgeprof_w4a16_is_lat_variant(int variant);

// The message of a launch that failed before it ran (an invalid configuration). Such a failure also stays as the
// thread's last CUDA error: cleared here, so the next torch kernel's launch check does not report it as its own (a
// tune that times configs in turn then fails only the one that is invalid). TORCH_CHECK evaluates it only on failure.
static const char* launch_error(int err) {
  (void)cudaGetLastError();
  return cudaGetErrorString((cudaError_t)err);
}

// The outputs of one call: N, or N / 2 for the variant "scxa" (48), which writes silu(gate) * up of its gate | up rows.
static int64_t out_rows(int64_t variant, int64_t N) { return variant == 48 ? N / 2 : N; }

// The packed weights, bias and split-K workspace of one W4 GEMV call (both entry points).
static void check_w4_operands(const torch::Tensor& qw, const torch::Tensor& sz, const torch::Tensor& bias,
                              const torch::Tensor& partial, const torch::Tensor& counters, int64_t N, int64_t K,
                              int64_t group, bool asym, int64_t splits, int64_t tiles_per_split) {
  TORCH_CHECK(N % 16 == 0 && K % 64 == 0 && K % group == 0, "N % 16, K % 64 and K % group must be 0");
  TORCH_CHECK(qw.scalar_type() == torch::kInt32 && qw.numel() == N * K / 8 && qw.is_contiguous(), "qw: int32 N*K/8");
  TORCH_CHECK(sz.scalar_type() == torch::kBFloat16 && sz.is_contiguous(), "sz: contiguous bf16");
  TORCH_CHECK(sz.numel() == (N / 16) * (K / group) * 8 * (asym ? 4 : 2), "sz: wrong size");
  TORCH_CHECK(!bias.defined() || bias.numel() == 0 || (bias.numel() == N && bias.scalar_type() == torch::kBFloat16),
              "bias: bf16 [N] or empty");
  // the tickets (counters) are one per CTA column: the caller checks their number for its CTA's warps
  TORCH_CHECK(splits == 1 || (partial.numel() >= splits * N && partial.scalar_type() == torch::kFloat32 &&
                              counters.scalar_type() == torch::kInt32),
              "split-K workspace too small");
  TORCH_CHECK(splits >= 1 && tiles_per_split >= 1 && (splits - 1) * tiles_per_split < K / 64 &&
                  splits * tiles_per_split >= K / 64 && (tiles_per_split * 64) % group == 0,
              "splits x tiles_per_split must cover K / 64 tiles, start on group boundaries, leave no split empty");
}

// One split-K ticket per CTA column, i.e. per `row blocks per CTA`: 8 for w8 / tm8, 2 for w2 and k2 (2 warps on each
// of 2 row blocks), 1 for w1, k4 and wk4 / wk6 / wk8 / wk10 (which run one split: no tickets used), else 4.
static int64_t row_blocks_per_cta(int64_t variant) {
  if (variant == 1 || variant == 4) return 8;
  if (variant == 20 || variant == 22) return 2;
  if (variant == 21 || variant == 23 || variant == 44 || variant == 45 || variant == 46 || variant == 47) return 1;
  return 4;
}

static void check_tickets(const torch::Tensor& counters, int64_t N, int64_t splits, int64_t variant) {
  const int64_t rb = row_blocks_per_cta(variant);
  TORCH_CHECK(splits == 1 || counters.numel() >= (N / 16 + rb - 1) / rb,
              "counters: variant ", variant, " needs one ticket per CTA column of ", rb, " row blocks");
}

// x [1, K] bf16 (act: [1, 2K] gate|up); qw int32 [N/16 * K/64 * 128]; sz bf16 [N/16 * K/g * 8 * (2|4)];
// bias [N] bf16 or empty; partial fp32 [splits * N] and counters int32 [ceil(N/64)] (zeros) when splits > 1.
// variant 0: the default kernel; 1 "w8", 2 "persist", 3 "tm", 4 "tm8", 5 "o8", 6 "o6", 7 "u8", 8 "xscalar", 9 "l3", 10 "lean", 11 "lean4", 12 "u14", 13 "u10", 14-18 "cp4s4", "cp6s3", "cp4s6", "cp8s3", "cp2s8", 19 "f16", 20 "w2", 21 "w1",
// 22, 23, 24 the latency variants "k2", "k4", "cl", 25, 26 "cl6", "cl8", 27-29 the staged "st", "clst", "clst6",
// 30-35 the diagnostic "nomath", "clnomath", "nomathx", "clnomathx", "nomathxs", "clnomathxs" (wrong y by design),
// 36, 37 the scale-staged "sc", "clsc", 38, 39 the diagnostic "nomathxsf", "clnomathxsf", 40, 41 "scf", "clscf",
// 42, 43 "scx", "clscx" (sc / clsc with the group sums in the staging pass), 44-47 "wk4", "wk6", "wk8", "wk10" (one row
// block per CTA, its warps split K; one split), 48 "scxa" (scx writing silu(gate) * up: N / 2 outputs; one split),
// 49 "clscxg" (clscx, its splits' sums gathered into the cluster's rank 0), 50-56 the timeline variants "clscxt",
// "clscxgt", "scxt", "nomathxsft", "clnomathxsft", "clnomatht", "clscft" (each CTA records its phases: partial fp32 [splits * N + 16 * CTAs],
// benchmarks/gemv_timeline.py), 57-59 the stream-K "sk16" and its diagnostics "sk16n", "sk16nx" (one split, grid_x CTAs, 0 = one per SM; partial fp32 [2N]
// of zeros: the published tails) (group 128 only; cl*, st: sm_90+, at most 16 splits, no workspace used; grid_x: persist's CTAs per split, 0 = all). 3 and 4 read the tile-major layout (w4cuda.to_tile_major).
torch::Tensor gemv_variant(torch::Tensor x, torch::Tensor qw, torch::Tensor sz, torch::Tensor bias,
                           torch::Tensor partial, torch::Tensor counters, int64_t N, int64_t K, int64_t group, bool asym,
                           bool act, int64_t splits, int64_t tiles_per_split, int64_t variant, int64_t grid_x) {
  TORCH_CHECK(x.is_cuda() && x.scalar_type() == torch::kBFloat16 && x.is_contiguous(), "x: contiguous bf16 CUDA");
  TORCH_CHECK(x.numel() == (act ? 2 * K : K), "x: expected ", act ? 2 * K : K, " values, got ", x.numel());
  TORCH_CHECK(reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0, "x: must be 16-byte aligned (clone it)");
  check_w4_operands(qw, sz, bias, partial, counters, N, K, group, asym, splits, tiles_per_split);
  TORCH_CHECK(variant == 0 || (group == 128 && variant >= 1 && variant <= 59),
              "variant: 0 (any group), 1-59 (group 128 only)");
  check_tickets(counters, N, splits, variant);
  const bool trace = variant >= 50 && variant <= 56;  // the timeline variants: 8 uint64 per CTA after the workspace
  const int64_t ctas = splits * ((N / 16 + row_blocks_per_cta(variant) - 1) / row_blocks_per_cta(variant));
  TORCH_CHECK(!trace || (partial.scalar_type() == torch::kFloat32 && partial.numel() >= splits * N + 16 * ctas),
              "partial: a timeline variant records 8 uint64 per CTA after the split-K workspace: needs ",
              splits * N + 16 * ctas, " fp32 (W4CudaLinear sizes it), got ", partial.numel());
  const bool stream_k = variant >= 57 && variant <= 59;  // its published tails: 16 uint64 per row block, zeros
  TORCH_CHECK(!stream_k || (partial.scalar_type() == torch::kFloat32 && partial.numel() >= 2 * N),
              "partial: a stream-K variant publishes 16 uint64 per row block: needs ", 2 * N,
              " fp32 of zeros (W4CudaLinear sizes it), got ", partial.numel());
  const c10::cuda::CUDAGuard guard(x.device());
  auto y = torch::empty({1, out_rows(variant, N)}, x.options());
  const void* b = (bias.defined() && bias.numel() == N) ? bias.data_ptr() : nullptr;
  int err = edgeprof_w4a16_launch((int)group, asym, act, qw.data_ptr(), sz.data_ptr(), x.data_ptr(), b, y.data_ptr(),
                                  splits > 1 || trace || stream_k ? partial.data_ptr<float>() : nullptr,
                                  splits > 1 ? counters.data_ptr<int>() : nullptr, (int)N, (int)K, (int)splits,
                                  (int)tiles_per_split, (int)variant, (int)grid_x,
                                  c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == 0, "w4a16 GEMV launch failed: ", launch_error(err));
  return y;
}

torch::Tensor gemv(torch::Tensor x, torch::Tensor qw, torch::Tensor sz, torch::Tensor bias, torch::Tensor partial,
                   torch::Tensor counters, int64_t N, int64_t K, int64_t group, bool asym, bool act, int64_t splits,
                   int64_t tiles_per_split) {
  return gemv_variant(x, qw, sz, bias, partial, counters, N, K, group, asym, act, splits, tiles_per_split, 0, 0);
}

static void check_vec16(const torch::Tensor& t, int64_t K, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.scalar_type() == torch::kBFloat16 && t.is_contiguous() && t.numel() == K, name,
              ": contiguous bf16 CUDA with K = ", K, " values");
  TORCH_CHECK(reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0, name, ": must be 16-byte aligned (clone it)");
}

// The fused norm's inputs (gemv_norm, mlp): x, res (may be empty: h = x), the norm weight and res_out, K values each;
// res_out must not alias x or res (other CTAs still read them). Returns whether there is a residual.
static bool check_norm_inputs(const torch::Tensor& x, const torch::Tensor& res, const torch::Tensor& nw,
                              const torch::Tensor& res_out, int64_t K) {
  check_vec16(x, K, "x");
  check_vec16(nw, K, "nw");
  check_vec16(res_out, K, "res_out");
  const bool has_res = res.defined() && res.numel() > 0;
  if (has_res) check_vec16(res, K, "res");
  TORCH_CHECK(res_out.data_ptr() != x.data_ptr() && (!has_res || res_out.data_ptr() != res.data_ptr()),
              "res_out: must not alias x or res");
  return has_res;
}

// The fused-norm GEMV: y = W (rmsnorm(x + res) * nw) (+ bias); res_out <- x + res (bf16); variant 0 (the default
// launch) or a decoder variant (edgeprof_w4a16_is_lat_variant, group 128). res may be empty (h = x). res_out must not alias x or res (other CTAs still read them). K % 8 == 0 for the 16-byte loads.
torch::Tensor gemv_norm(torch::Tensor x, torch::Tensor res, torch::Tensor nw, double eps, torch::Tensor res_out,
                        torch::Tensor qw, torch::Tensor sz, torch::Tensor bias, torch::Tensor partial,
                        torch::Tensor counters, int64_t N, int64_t K, int64_t group, bool asym, int64_t splits,
                        int64_t tiles_per_split, int64_t variant) {
  const bool has_res = check_norm_inputs(x, res, nw, res_out, K);
  check_w4_operands(qw, sz, bias, partial, counters, N, K, group, asym, splits, tiles_per_split);
  TORCH_CHECK(variant == 0 || (group == 128 && edgeprof_w4a16_is_lat_variant((int)variant)),
              "variant: 0 (the default launch, any group) or a decoder variant (w4cuda.DECODER_VARIANTS; group 128)");
  check_tickets(counters, N, splits, variant);
  const c10::cuda::CUDAGuard guard(x.device());
  auto y = torch::empty({1, out_rows(variant, N)}, x.options());
  const void* b = (bias.defined() && bias.numel() == N) ? bias.data_ptr() : nullptr;
  int err = edgeprof_w4a16_norm_launch((int)group, asym, qw.data_ptr(), sz.data_ptr(), x.data_ptr(),
                                       has_res ? res.data_ptr() : nullptr, nw.data_ptr(), res_out.data_ptr(), (float)eps,
                                       b, y.data_ptr(), splits > 1 ? partial.data_ptr<float>() : nullptr,
                                       splits > 1 ? counters.data_ptr<int>() : nullptr, (int)N, (int)K, (int)splits,
                                       (int)tiles_per_split, (int)variant, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == 0, "w4a16 fused-norm GEMV launch failed: ", launch_error(err));
  return y;
}

// The fused MLP (one launch): y [1, H] = down(silu(g) * u) with [g | u] = gate_up(rmsnorm(x + res) * nw) written to
// gu [1, 2I] (a workspace the down items read), res_out <- x + res. gate_up runs unsplit, down with its split plan
// (partial / counters as for gemv). ws: int32 [1 + 2 * splits] zeros, this MLP's own (its counters reset themselves).
torch::Tensor mlp(torch::Tensor x, torch::Tensor res, torch::Tensor nw, double eps, torch::Tensor res_out,
                  torch::Tensor gu, torch::Tensor gu_qw, torch::Tensor gu_sz, torch::Tensor gu_bias, torch::Tensor d_qw,
                  torch::Tensor d_sz, torch::Tensor d_bias, torch::Tensor partial, torch::Tensor counters,
                  torch::Tensor ws, int64_t I, int64_t H, int64_t group, bool asym, int64_t splits,
                  int64_t tiles_per_split) {
  const bool has_res = check_norm_inputs(x, res, nw, res_out, H);
  check_vec16(gu, 2 * I, "gu");
  TORCH_CHECK(I % 64 == 0, "I = ", I, ": the fused MLP needs the intermediate size to be a multiple of 64");
  const torch::Tensor none;
  check_w4_operands(gu_qw, gu_sz, gu_bias, none, none, 2 * I, H, group, asym, 1, H / 64);
  check_w4_operands(d_qw, d_sz, d_bias, partial, counters, H, I, group, asym, splits, tiles_per_split);
  TORCH_CHECK(splits == 1 || counters.numel() >= (H / 16 + 3) / 4, "counters: one ticket per 4-warp CTA column");
  TORCH_CHECK(ws.is_cuda() && ws.scalar_type() == torch::kInt32 && ws.numel() >= 1 + 2 * splits,
              "ws: int32 [1 + 2 * splits] zeros");
  const c10::cuda::CUDAGuard guard(x.device());
  auto y = torch::empty({1, H}, x.options());
  auto ptr = [](const torch::Tensor& t, int64_t n) { return (t.defined() && t.numel() == n) ? t.data_ptr() : nullptr; };
  int err = edgeprof_w4a16_mlp_launch(
      (int)group, asym, gu_qw.data_ptr(), gu_sz.data_ptr(), ptr(gu_bias, 2 * I), x.data_ptr(),
      has_res ? res.data_ptr() : nullptr, nw.data_ptr(), res_out.data_ptr(), (float)eps, gu.data_ptr(), d_qw.data_ptr(),
      d_sz.data_ptr(), ptr(d_bias, H), y.data_ptr(), splits > 1 ? partial.data_ptr<float>() : nullptr,
      splits > 1 ? counters.data_ptr<int>() : nullptr, ws.data_ptr<int>(), (int)I, (int)H, (int)splits,
      (int)tiles_per_split, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == 0, "w4a16 fused MLP launch failed: ", launch_error(err));
  return y;
}

// x [1, K] bf16, w [N, K] bf16 row-major (K % 8 == 0, 16-byte aligned), bias [N] bf16 or empty -> y [1, N]
// out: an optional preallocated [1, N] bf16 (the decoder's static logits buffer, so a graph replays into it)
// The bf16 GEMV's operands, checked (gemv_bf16, gemv_bf16_greedy); returns (N, K)
static std::pair<int64_t, int64_t> check_bf16_gemv(const torch::Tensor& x, const torch::Tensor& w,
                                                   const torch::Tensor& bias) {
  TORCH_CHECK(x.is_cuda() && x.scalar_type() == torch::kBFloat16 && x.is_contiguous(), "x: contiguous bf16 CUDA");
  TORCH_CHECK(w.is_cuda() && w.scalar_type() == torch::kBFloat16 && w.is_contiguous() && w.dim() == 2,
              "w: contiguous bf16 CUDA [N, K]");
  const int64_t N = w.size(0), K = w.size(1);
  TORCH_CHECK(x.numel() == K, "x: expected ", K, " values, got ", x.numel());
  TORCH_CHECK(K % 8 == 0, "w: K = ", K, " must be a multiple of 8 (16-byte rows)");
  TORCH_CHECK(reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0 && reinterpret_cast<uintptr_t>(w.data_ptr()) % 16 == 0,
              "x and w must be 16-byte aligned (clone them)");
  TORCH_CHECK(!bias.defined() || bias.numel() == 0 || (bias.numel() == N && bias.scalar_type() == torch::kBFloat16),
              "bias: bf16 [N] or empty");
  return {N, K};
}

torch::Tensor gemv_bf16(torch::Tensor x, torch::Tensor w, torch::Tensor bias, int64_t rows, int64_t unroll,
                        std::optional<torch::Tensor> out) {
  const auto [N, K] = check_bf16_gemv(x, w, bias);
  const c10::cuda::CUDAGuard guard(x.device());
  if (out.has_value())
    TORCH_CHECK(out->is_cuda() && out->scalar_type() == torch::kBFloat16 && out->is_contiguous() && out->numel() == N,
                "out: contiguous bf16 CUDA with N = ", N, " values");
  auto y = out.has_value() ? *out : torch::empty({1, N}, x.options());
  const void* b = (bias.defined() && bias.numel() == N) ? bias.data_ptr() : nullptr;
  int err = edgeprof_bf16_gemv_launch((int)rows, (int)unroll, w.data_ptr(), x.data_ptr(), b, y.data_ptr(), (int)N,
                                      (int)K, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == 0, "bf16 GEMV launch failed (rows ", rows, ", unroll ", unroll, "): ",
              launch_error(err));
  return y;
}

// The device address of pinned host memory (mapped under unified addressing), or 0 where it has none: lets the
// decoder choose the copy readback up front instead of failing inside a graph capture.
int64_t mapped_address(torch::Tensor host) {
  if (host.is_cuda() || !host.is_pinned()) return 0;
  void* dev = nullptr;
  if (cudaHostGetDevicePointer(&dev, host.data_ptr(), 0) != cudaSuccess) {
    (void)cudaGetLastError();  // not this thread's next launch's error
    return 0;
  }
  return reinterpret_cast<int64_t>(dev);
}

// The mapped pairs of the greedy tail: pinned CPU int64 [2 * kPairs] (wait_mapped, gemv_bf16_greedy)
static void check_host_pairs(const torch::Tensor& host) {
  TORCH_CHECK(!host.is_cuda() && host.is_pinned() && host.scalar_type() == torch::kLong &&
                  host.numel() == 2 * edgeprof_greedy::kPairs,
              "host: pinned CPU int64 [", 2 * edgeprof_greedy::kPairs, "] (the mapped pairs; gemv_bf16_greedy also "
              "takes an empty tensor for no mapped readback)");
}

// The host's wait for a step's token in its mapped pair [token, step number] (pair n % kPairs;
// edgeprof/fast/readback.py): polls until the number is n and returns the token, or -1 when the current stream has
// finished (or failed) without step n writing it; the caller then reads the device token by copy, which also raises
// a CUDA error. The GIL is released while it polls, as torch's .item() releases it while it waits for its copy: the
// daemon's bridge thread must be able to send the previous token meanwhile (a Python poll held the GIL for up to the
// 5 ms switch interval).
int64_t wait_mapped(torch::Tensor host, int64_t n) {
  check_host_pairs(host);
  TORCH_CHECK(n >= 0, "n: a step number (>= 0)");
  const volatile int64_t* pair = host.data_ptr<int64_t>() + 2 * (n % edgeprof_greedy::kPairs);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  py::gil_scoped_release no_gil;
  for (uint64_t polls = 1;; ++polls) {
    if (pair[1] == n) return pair[0];  // volatile loads stay in program order (and x86 keeps loads in order)
    if (polls % 1024 == 0 && cudaStreamQuery(stream) != cudaErrorNotReady) return pair[1] == n ? pair[0] : -1;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();  // a spin-wait hint to the core (and its hyperthread sibling)
#endif
  }
}

// The head GEMV with the step's greedy tail: logits into `out` as gemv_bf16 does, then (a second, one-CTA launch) token <-
// argmax(logits) (torch.argmax's pick), history[pos] <- token, pos += 1, x0 <- embed[token]; with a pinned `host`
// [2 * kPairs] int64, also its pair (steps finished % kPairs) <- (token, steps finished), written through its mapped
// device address.
// scratch: int64 [kSlots + 1] zeros (the argmax keys, the step count); token, pos int64 [1]; history int64
// [max_ctx]; embed bf16 [V, H]; x0 bf16 [1, H], 16-byte aligned; host: pinned CPU int64 [2 * kPairs] or empty.
void gemv_bf16_greedy(torch::Tensor x, torch::Tensor w, torch::Tensor bias, int64_t rows, int64_t unroll,
                      torch::Tensor out, torch::Tensor scratch, torch::Tensor token, torch::Tensor pos,
                      torch::Tensor history, torch::Tensor embed, torch::Tensor x0, torch::Tensor host) {
  const auto [N, K] = check_bf16_gemv(x, w, bias);
  TORCH_CHECK(N < (int64_t{1} << 31), "w: N = ", N, " rows do not fit the argmax key's 32-bit row");
  TORCH_CHECK(out.is_cuda() && out.scalar_type() == torch::kBFloat16 && out.is_contiguous() && out.numel() == N,
              "out: contiguous bf16 CUDA with N = ", N, " values");
  for (const auto* t : {&scratch, &token, &pos, &history})
    TORCH_CHECK(t->is_cuda() && t->scalar_type() == torch::kLong && t->is_contiguous(),
                "scratch, token, pos, history: contiguous int64 CUDA");
  TORCH_CHECK(scratch.numel() == edgeprof_greedy::kSlots + 1 && token.numel() == 1 && pos.numel() == 1,
              "scratch [", edgeprof_greedy::kSlots + 1, "], token [1], pos [1]");
  TORCH_CHECK(embed.is_cuda() && embed.scalar_type() == torch::kBFloat16 && embed.is_contiguous() && embed.dim() == 2 &&
                  embed.size(0) >= N && embed.size(1) % 8 == 0 && reinterpret_cast<uintptr_t>(embed.data_ptr()) % 16 == 0,
              "embed: contiguous 16-byte aligned bf16 CUDA [V >= N, H], H a multiple of 8");
  TORCH_CHECK(x0.is_cuda() && x0.scalar_type() == torch::kBFloat16 && x0.numel() == embed.size(1) &&
                  reinterpret_cast<uintptr_t>(x0.data_ptr()) % 16 == 0,
              "x0: 16-byte aligned bf16 CUDA with H = ", embed.size(1), " values");
  const c10::cuda::CUDAGuard guard(x.device());
  edgeprof_greedy::Tail t{};
  t.best = reinterpret_cast<unsigned long long*>(scratch.data_ptr<int64_t>());
  t.seq = reinterpret_cast<long long*>(scratch.data_ptr<int64_t>() + edgeprof_greedy::kSlots);
  t.token = reinterpret_cast<long long*>(token.data_ptr<int64_t>());
  t.pos = reinterpret_cast<long long*>(pos.data_ptr<int64_t>());
  t.history = reinterpret_cast<long long*>(history.data_ptr<int64_t>());
  t.max_ctx = history.numel();
  t.embed = embed.data_ptr();
  t.x0 = x0.data_ptr();
  t.h_vec = (int)(embed.size(1) / 8);
  if (host.defined() && host.numel() > 0) {
    check_host_pairs(host);
    const int64_t dev = mapped_address(host);
    TORCH_CHECK(dev != 0, "host: this pinned buffer has no device address (no mapped readback here); pass an "
                "empty tensor to read the token back by copy");
    t.host = reinterpret_cast<volatile long long*>(dev);
  }
  const void* b = (bias.defined() && bias.numel() == N) ? bias.data_ptr() : nullptr;
  int err = edgeprof_bf16_greedy_launch((int)rows, (int)unroll, w.data_ptr(), x.data_ptr(), b, out.data_ptr(),
                                        (int)N, (int)K, t, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == 0, "bf16 greedy head launch failed (rows ", rows, ", unroll ", unroll, "): ", launch_error(err));
}

static void check_bf16(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.scalar_type() == torch::kBFloat16 && t.is_contiguous(), name, ": contiguous bf16 CUDA");
}

// Decode attention of one layer in one launch (attn_decode.cu; sm_90+: thread-block clusters).
// k_cache, v_cache [NKV, max_ctx, HD] bf16 (HD 64 or 128); pos int64 [1] (the live length is pos + 1);
// rope: qkv is the q/k/v GEMV output [1, (NH + 2 NKV) HD]: q and k are rotated with cos/sin [>= max_ctx, HD] at pos,
// and this step's k and v are written into the caches at pos; else qkv is q [NH HD], rotated, and the caches already
// hold row pos. out [1, NH HD] bf16. cluster: CTAs per cluster (8 or 16) of `warps` warps (4 or 8); clusters: up to
// that many per kv head (> 1: the live cache is spread over min(clusters, ceil(live / tokens_per_cluster)) of them,
// which merge through ws_acc fp32
// [NKV * clusters * NH / NKV * HD], ws_ml fp32 [NKV * clusters * cluster * 16] and tickets int32 [NKV * cluster], zeros).
// push_merge: the cluster's CTAs send each rank its slice of the outputs (else each rank reads it; attn_decode.cu).
void attn_decode(torch::Tensor qkv, torch::Tensor k_cache, torch::Tensor v_cache, torch::Tensor pos,
                 torch::Tensor cos, torch::Tensor sin, torch::Tensor out, int64_t n_heads, double scale, bool rope,
                 int64_t cluster, int64_t warps, int64_t clusters, int64_t tokens_per_cluster, torch::Tensor ws_acc,
                 torch::Tensor ws_ml, torch::Tensor tickets, bool pdl, bool push_merge) {
  for (const auto* t : {&qkv, &k_cache, &v_cache, &cos, &sin, &out}) check_bf16(*t, "attention operands");
  TORCH_CHECK(k_cache.dim() == 3 && v_cache.sizes() == k_cache.sizes(), "k_cache, v_cache: [NKV, max_ctx, HD]");
  const int64_t NKV = k_cache.size(0), max_ctx = k_cache.size(1), HD = k_cache.size(2), NH = n_heads;
  TORCH_CHECK(HD == 64 || HD == 128, "head_dim ", HD, ": the CUDA decode attention takes 64 or 128");
  TORCH_CHECK(NH % NKV == 0 && NH / NKV <= 8, "n_heads / n_kv_heads = ", NH, " / ", NKV,
              ": the CUDA decode attention takes up to 8 query heads per kv head");
  TORCH_CHECK(qkv.numel() == (rope ? NH + 2 * NKV : NH) * HD, "qkv: expected ", (rope ? NH + 2 * NKV : NH) * HD,
              " values, got ", qkv.numel());
  TORCH_CHECK(out.numel() == NH * HD, "out: expected ", NH * HD, " values");
  TORCH_CHECK(cos.dim() == 2 && cos.size(1) == HD && cos.size(0) >= max_ctx && sin.sizes() == cos.sizes(),
              "cos, sin: [>= max_ctx, HD]");
  TORCH_CHECK(pos.is_cuda() && pos.scalar_type() == torch::kInt64 && pos.numel() == 1, "pos: int64 CUDA [1]");
  TORCH_CHECK(cluster == 8 || cluster == 16, "cluster: 8 or 16 CTAs per kv head");
  TORCH_CHECK(warps == 4 || warps == 8, "warps: 4 or 8 per CTA");
  TORCH_CHECK(clusters >= 1 && clusters <= 8 &&
                  (clusters == 1 || (tokens_per_cluster >= 16 && tokens_per_cluster % 16 == 0)),
              "clusters: 1 to 8 per kv head; with more than one, tokens_per_cluster (the fewest a cluster takes) a "
              "multiple of 16");
  if (clusters > 1) {
    const bool ok = ws_acc.is_cuda() && ws_acc.scalar_type() == torch::kFloat32 && ws_ml.is_cuda() &&
                    ws_ml.scalar_type() == torch::kFloat32 && tickets.is_cuda() &&
                    tickets.scalar_type() == torch::kInt32 && ws_acc.numel() >= clusters * NH * HD &&
                    ws_ml.numel() >= NKV * clusters * cluster * 16 && tickets.numel() >= NKV * cluster;
    TORCH_CHECK(ok, "ws_acc, ws_ml (fp32) and tickets (int32 zeros) too small for ", clusters, " clusters per kv head");
  }
  const c10::cuda::CUDAGuard guard(qkv.device());
  int err = edgeprof_attn_decode_launch((int)HD, rope, qkv.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(),
                                        pos.data_ptr<int64_t>(), cos.data_ptr(), sin.data_ptr(), out.data_ptr(),
                                        (int)max_ctx, (float)scale, (int)(NH / NKV), (int)NH, (int)NKV, (int)cluster,
                                        (int)warps, (int)clusters, (int)tokens_per_cluster,
                                        clusters > 1 ? ws_acc.data_ptr<float>() : nullptr,
                                        clusters > 1 ? ws_ml.data_ptr<float>() : nullptr,
                                        clusters > 1 ? tickets.data_ptr<int>() : nullptr, pdl, push_merge,
                                        c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == 0, "decode attention launch failed (cluster ", cluster, "): ",
              launch_error(err));
}

// Clusters of the W4 variant "cl" (group 128) the current GPU holds at once for N outputs at `splits` x `tps`
// (cudaOccupancyMaxActiveClusters): the launch's ceil(N / 64) clusters run in ceil(that / this) waves.
int64_t cluster_fit(bool asym, bool act, bool norm, int64_t N, int64_t splits, int64_t tiles_per_split) {
  TORCH_CHECK(N % 16 == 0 && N > 0, "N: a positive multiple of 16");
  TORCH_CHECK(!(act && norm), "act and norm: a launch fuses one input transform, not both");
  const int n = edgeprof_w4a16_cluster_fit(asym, act, norm, (int)N, (int)splits, (int)tiles_per_split);
  TORCH_CHECK(n >= 0, "cluster_fit: ", cudaGetErrorString((cudaError_t)(-n)), " (splits ", splits,
              "; the cluster variant needs sm_90+ and 1-16 splits)");
  return n;
}

// (clusters held at once, CTAs per SM) of the decode attention kernel at this head_dim and cluster shape
std::pair<int64_t, int64_t> attn_cluster_fit(int64_t head_dim, bool rope, int64_t cluster, int64_t warps) {
  int per_sm = 0;
  const int n = edgeprof_attn_cluster_fit((int)head_dim, rope, (int)cluster, (int)warps, &per_sm);
  TORCH_CHECK(n >= 0, "attn_cluster_fit: ", cudaGetErrorString((cudaError_t)(-n)),
              " (head_dim 64 or 128, cluster 8 or 16, warps 4 or 8, sm_90+)");
  return {n, per_sm};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gemv", &gemv, "edgeprof W4A16 batch-1 GEMV");
  m.def("gemv_bf16", &gemv_bf16, "edgeprof bf16 batch-1 GEMV (rows per warp, loads in flight per row)",
        py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("rows"), py::arg("unroll"), py::arg("out") = py::none());
  m.def("gemv_bf16_greedy", &gemv_bf16_greedy,
        "edgeprof bf16 head GEMV with the decode step's greedy tail (argmax, token, history, pos, next input row, and "
        "optionally the token into mapped host memory) in one small launch after it",
        py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("rows"), py::arg("unroll"), py::arg("out"),
        py::arg("scratch"), py::arg("token"), py::arg("pos"), py::arg("history"), py::arg("embed"), py::arg("x0"),
        py::arg("host"));
  m.def("wait_mapped", &wait_mapped,
        "the token of step n from a mapped [token, step] pair, polled with the GIL released; -1 if the stream "
        "finished without step n writing it", py::arg("host"), py::arg("n"));
  m.def("mapped_address", &mapped_address,
        "the device address of a pinned CPU tensor (0: none; the greedy tail then reads back by copy)",
        py::arg("host"));
  m.def("gemv_norm", &gemv_norm, "edgeprof W4A16 GEMV with the input's residual add + RMSNorm fused in");
  m.def("mlp", &mlp, "edgeprof W4A16 fused MLP: norm, gate_up, SiLU*up and down in one launch");
  m.def("set_pdl", &edgeprof_gemv_set_pdl,
        "programmatic dependent launch (sm_90+) for every GEMV launched from now on (captured graphs keep theirs), "
        "the 512-byte weight tiles per warp each prefetches into L2 before its wait, and whether the down "
        "projection (the W4 launches with SiLU*up fused) takes part",
        py::arg("on"), py::arg("prefetch_tiles") = 0, py::arg("down") = true);
  m.def("set_f16", &edgeprof_w4a16_set_f16,
        "the default W4 GEMV runs its mma on fp16 (x staged as fp16 with a power-of-two scale) instead of bf16, for "
        "every launch from now on (captured graphs keep theirs)", py::arg("on"));
  m.def("set_norm_batch", &edgeprof_w4a16_set_norm_batch,
        "the fused-norm W4 launches (bf16 mma) issue the norm's loads in batches (fewer L2 round trips, the same "
        "values), for every launch from now on (captured graphs keep theirs)", py::arg("on"));
  m.def("set_norm_deferred", &edgeprof_w4a16_set_norm_deferred,
        "the fused-norm launches of scx (one split), scxa and clscx stage bf16((x + res) * w) and scale their rows by "
        "rstd, computed in the same pass (no rstd pass first), for every launch from now on (captured graphs keep "
        "theirs)",
        py::arg("on"));
  m.def("attn_decode", &attn_decode, "edgeprof decode attention: one launch per layer, splits merged in a cluster",
        py::arg("qkv"), py::arg("k_cache"), py::arg("v_cache"), py::arg("pos"), py::arg("cos"), py::arg("sin"),
        py::arg("out"), py::arg("n_heads"), py::arg("scale"), py::arg("rope"), py::arg("cluster"), py::arg("warps"), py::arg("clusters"), py::arg("tokens_per_cluster"), py::arg("ws_acc"),
        py::arg("ws_ml"), py::arg("tickets"), py::arg("pdl"), py::arg("push_merge"));
  m.def("gemv_variant", &gemv_variant, "edgeprof W4A16 GEMV, tuning variant and launch shape chosen by the caller");
  m.def("attn_cluster_fit", &attn_cluster_fit, "(clusters held at once, CTAs per SM) of the decode attention kernel",
        py::arg("head_dim"), py::arg("rope"), py::arg("cluster"), py::arg("warps"));
  m.def("cluster_fit", &cluster_fit, "clusters of the W4 variant cl the GPU holds at once for this launch shape",
        py::arg("asym"), py::arg("act"), py::arg("norm"), py::arg("N"), py::arg("splits"), py::arg("tiles_per_split"));
}
