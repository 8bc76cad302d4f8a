"""A batch-1 int4 GEMV in Triton: y[1, N] = x[1, K] @ W^T, GPTQ symmetric int4, group g.

Written because measurement showed the installable int4 kernels well below cuBLAS bf16 at
Qwen2.5-7B shapes on the H100 (benchmarks/int4_gemv.py: tinygemm 1.06-1.84 TB/s, gemlite
0.73-1.43, cuBLAS bf16 2.19-2.68), worst on the narrow qkv and o projections.

Result on the H100 (results/h100/2026-11-22-int4-gemv-triton/, 2026-11-22-int4-gemv-splitk/): the whole-K kernel is slower than tinygemm at
every shape (best tile 8x512, 2 warps: 0.65-1.70 TB/s): a narrow layer has too few programs,
each walking all of K, to keep enough bytes in flight. The split-K kernel (fp32 atomics into a
zeroed output, `W4LinearSplitK`) fixes that and reaches tinygemm's level, not more (best tiles:
qkv 0.98 vs 1.06 TB/s, o 0.88 vs 1.08, gate_up 1.82 vs 1.85, down 1.52 vs 1.52), the
dequantisation arithmetic now being the limit. So no backend uses either; the benchmark keeps
measuring them.

Layout: `packed` int32 [N, K/8], word j of row n holds q[n, 8j + i] in nibble i, so one row's
words are contiguous along K; `scales` [N, K/g] bf16. Each program owns BLOCK_N rows and walks
the whole K (no split-K: no atomics, no zeroing or conversion kernels around it).
Dequantisation without int->float conversions: (q | 0x4B000000) read as float32 is 2^23 + q
exactly, so q - 8 = that - (2^23 + 8). The "- 8" is folded into the group sums:
sum_k (q-8) x = sum_k q x - 8 sum_k x.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - depends on the install
    HAVE_TRITON = False

if HAVE_TRITON:
    MAGIC = tl.constexpr(0x4B000000)  # float32 bits of 2^23

    @triton.jit
    def _w4_block(x_ptr, w_ptr, s_ptr, rn, mask_n, k0, stride_wn, stride_sn,
                  GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """sum over k in [k0, k0 + BLOCK_K) of W[rn, k] x[k] -> [BN] fp32."""
        WORDS: tl.constexpr = BLOCK_K // 8  # int32 words per row per block
        GPB: tl.constexpr = BLOCK_K // GROUP  # groups per block
        WPG: tl.constexpr = GROUP // 8  # words per group
        rj = tl.arange(0, WORDS)  # [W]
        w = tl.load(w_ptr + rn[:, None] * stride_wn + (k0 // 8 + rj)[None, :], mask=mask_n[:, None], other=0)
        part = tl.zeros([BLOCK_N, WORDS], dtype=tl.float32)  # sum_i q[8j+i] x[8j+i] per word
        xsum = tl.zeros([WORDS], dtype=tl.float32)
        for i in tl.static_range(8):
            xi = tl.load(x_ptr + k0 + rj * 8 + i).to(tl.float32)  # [W], x at k = 8j + i
            qi = (((w >> (4 * i)) & 0xF) | MAGIC).to(tl.float32, bitcast=True) - 8388608.0  # exact q
            part += qi * xi[None, :]
            xsum += xi
        part = tl.sum(tl.reshape(part, [BLOCK_N, GPB, WPG]), axis=2)  # [BN, GPB]
        xg = tl.sum(tl.reshape(xsum, [GPB, WPG]), axis=1)  # [GPB]
        rg = k0 // GROUP + tl.arange(0, GPB)
        s = tl.load(s_ptr + rn[:, None] * stride_sn + rg[None, :], mask=mask_n[:, None], other=0.0)
        return tl.sum((part - 8.0 * xg[None, :]) * s.to(tl.float32), axis=1)

    @triton.jit
    def _w4_gemv_kernel(x_ptr, w_ptr, s_ptr, y_ptr, N, K: tl.constexpr, stride_wn, stride_sn,
                        GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """Whole K per program: rows [pid * BN, ...) written once."""
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
        mask_n = rn < N
        acc = tl.zeros([BLOCK_N], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            acc += _w4_block(x_ptr, w_ptr, s_ptr, rn, mask_n, k0, stride_wn, stride_sn, GROUP, BLOCK_N, BLOCK_K)
        tl.store(y_ptr + rn, acc.to(y_ptr.dtype.element_ty), mask=mask_n)

    @triton.jit
    def _w4_gemv_splitk_kernel(x_ptr, w_ptr, s_ptr, y_ptr, N, K: tl.constexpr, stride_wn, stride_sn,
                               GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                               ITERS: tl.constexpr):
        """Split-K: program (n, k) covers ITERS blocks of K and adds its partial sums to y (fp32)."""
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = rn < N
        acc = tl.zeros([BLOCK_N], dtype=tl.float32)
        for it in tl.static_range(ITERS):
            k0 = (tl.program_id(1) * ITERS + it) * BLOCK_K
            if k0 < K:
                acc += _w4_block(x_ptr, w_ptr, s_ptr, rn, mask_n, k0, stride_wn, stride_sn, GROUP, BLOCK_N, BLOCK_K)
        tl.atomic_add(y_ptr + rn, acc, mask=mask_n, sem="relaxed")


class _W4Base:
    """Packing shared by both kernels: int32 [N, K/8] words, bf16 [N, K/g] scales."""

    def __init__(self, q: torch.Tensor, s: torch.Tensor, group: int, block_n: int, block_k: int, num_warps: int):
        n, k = q.shape
        if k % block_k or block_k % group:
            raise ValueError(f"the W4 GEMV needs K ({k}) divisible by {block_k} and {block_k} by the group ({group})")
        self.packed = _pack(q.to(torch.int32).reshape(n, k // 8, 8),
                            torch.arange(0, 32, 4, device=q.device, dtype=torch.int32))  # [N, K/8]
        self.scales = s.to(torch.bfloat16).contiguous()  # [N, K/g]
        self.n_out, self.k, self.group = n, k, group
        self.block_n, self.block_k, self.num_warps = block_n, block_k, num_warps

    @property
    def nbytes(self) -> int:
        return self.packed.numel() * 4 + self.scales.numel() * 2


class W4Linear(_W4Base):
    """Whole-K kernel. `__call__` maps [1, K] -> [1, N] in x's dtype."""

    def __init__(self, q: torch.Tensor, s: torch.Tensor, group: int, block_n: int = 16, block_k: int = 256,
                 num_warps: int = 4):
        super().__init__(q, s, group, block_n, block_k, num_warps)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.empty(1, self.n_out, device=x.device, dtype=x.dtype)
        grid = (triton.cdiv(self.n_out, self.block_n),)
        _w4_gemv_kernel[grid](x, self.packed, self.scales, y, self.n_out, self.k, self.packed.stride(0),
                              self.scales.stride(0), GROUP=self.group, BLOCK_N=self.block_n, BLOCK_K=self.block_k,
                              num_warps=self.num_warps)
        return y


class W4LinearSplitK(_W4Base):
    """Split-K kernel: `__call__` zeroes an fp32 [1, N] output and the programs add into it
    (two graph nodes per GEMV; the fp32 result is what a consumer would read)."""

    def __init__(self, q: torch.Tensor, s: torch.Tensor, group: int, block_n: int = 32, block_k: int = 256,
                 iters: int = 2, num_warps: int = 4):
        super().__init__(q, s, group, block_n, block_k, num_warps)
        self.iters = iters
        self.y = torch.zeros(1, self.n_out, device=q.device, dtype=torch.float32)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.y.zero_()
        grid = (triton.cdiv(self.n_out, self.block_n), triton.cdiv(self.k // self.block_k, self.iters))
        _w4_gemv_splitk_kernel[grid](x, self.packed, self.scales, self.y, self.n_out, self.k, self.packed.stride(0),
                                     self.scales.stride(0), GROUP=self.group, BLOCK_N=self.block_n,
                                     BLOCK_K=self.block_k, ITERS=self.iters, num_warps=self.num_warps)
        return self.y


def _pack(q8: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """q8 [N, K/8, 8] in 0..15 -> int32 [N, K/8], nibble i of word j = q8[:, j, i]."""
    words = torch.zeros(q8.shape[:2], dtype=torch.int32, device=q8.device)
    for i in range(8):  # bitwise OR keeps it in int32 (nibble 7 sets the sign bit, as intended)
        words |= q8[:, :, i] << shifts[i]
    return words
