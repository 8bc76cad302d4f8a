"""edgeprof's own bf16 GEMV (csrc/bf16_gemv.cu) for batch-1 decode, and the choice against cuBLAS.

The kernel is built into the same extension as the W4A16 GEMV (`w4cuda.load_extension`). A layer
keeps the plain nn.Linear weight [N, K]; prefill (M > 1) goes to cuBLAS, which is a GEMM there.

Which kernel a decoder uses per projection: edgeprof's only for shapes where a measurement on that
card showed it faster than cuBLAS (edgeprof/data/gemv_plans.yaml, from `benchmarks/bf16_gemv.py`),
cuBLAS everywhere else. $EDGEPROF_BF16_GEMV overrides it for A/B runs: "cublas", a variant name (every
shape), or a bf16_gemv.py JSON (its `faster` shapes).
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

from edgeprof.fast.w4cuda import aligned16

# variant -> (rows per warp, 16-byte loads in flight per row); the pairs compiled in bf16_gemv.cu
VARIANTS = {"r1u8": (1, 8), "r2u4": (2, 4), "r2u8": (2, 8), "r4u2": (4, 2), "r4u4": (4, 4)}
DEFAULT_VARIANT = "r2u8"
ENV = "EDGEPROF_BF16_GEMV"


class Bf16CudaLinear:
    """y [1, N] = x [1, K] @ w^T (+ b) with edgeprof's bf16 GEMV; `__call__` maps [M, K] -> [M, N]."""

    kernel_name = "edgeprof-bf16-cuda"

    def __init__(self, w: torch.Tensor, b: torch.Tensor | None = None, variant: str = DEFAULT_VARIANT, ext=None):
        from edgeprof.fast.w4cuda import build_error, load_extension

        if variant not in VARIANTS:
            raise ValueError(f"variant: {variant!r} is not one of {sorted(VARIANTS)}")
        if w.dtype != torch.bfloat16 or w.dim() != 2 or w.shape[1] % 8:
            raise ValueError(f"w: needs a bf16 [N, K] weight with K % 8 == 0, got {tuple(w.shape)} {w.dtype}")
        self.ext = ext or load_extension()
        if self.ext is None:
            raise RuntimeError(f"edgeprof GEMV extension unavailable: {build_error()}")
        self.w, self.b = w.contiguous(), b
        self.bias = b.to(torch.bfloat16).contiguous() if b is not None else torch.empty(0, device=w.device,
                                                                                         dtype=torch.bfloat16)
        self.variant = variant
        self.rows, self.unroll = VARIANTS[variant]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != 1:  # prefill: a GEMM, cuBLAS's job
            return F.linear(x, self.w, self.b)
        return self.ext.gemv_bf16(aligned16(x), self.w, self.bias, self.rows, self.unroll)

    def into(self, x: torch.Tensor, out: torch.Tensor) -> None:
        """x [1, K] -> out [1, N] in place (a static buffer a CUDA graph replays into)."""
        self.ext.gemv_bf16(aligned16(x), self.w, self.bias, self.rows, self.unroll, out)

    def into_greedy(self, x: torch.Tensor, out: torch.Tensor, scratch: torch.Tensor, token: torch.Tensor,
                    pos: torch.Tensor, history: torch.Tensor, embed: torch.Tensor, x0: torch.Tensor,
                    host: torch.Tensor) -> None:
        """`into`, plus the decode step's greedy tail in the same launch (edgeprof.fast.model.GreedyTail):
        token <- argmax(out), history[pos] <- token, pos += 1, x0 <- embed[token], and host <- (token, step
        count) when `host` is a mapped pinned pair."""
        self.ext.gemv_bf16_greedy(aligned16(x), self.w, self.bias, self.rows, self.unroll, out, scratch, token, pos,
                                  history, embed, x0, host)

    @property
    def nbytes(self) -> int:
        return self.w.numel() * 2 + self.bias.numel() * 2


def choose(n: int, k: int, plan: dict[tuple[int, int], str] | None = None) -> str:
    """'cublas' or an edgeprof variant for one projection shape [N, K]: $EDGEPROF_BF16_GEMV if set,
    else `plan` (measured per card), else cuBLAS."""
    forced = os.environ.get(ENV, "").strip()
    if forced.endswith(".json"):  # a benchmarks/bf16_gemv.py result: its `faster` shapes
        return _json_plan(forced).get((n, k), "cublas")
    if forced:
        if forced != "cublas" and forced not in VARIANTS:
            raise ValueError(f"{ENV}: {forced!r} is not 'cublas', one of {sorted(VARIANTS)} or a bf16_gemv.py "
                             f"JSON; unset it for the measured per-shape choice")
        return forced
    return (plan or {}).get((n, k), "cublas")


@functools.lru_cache(maxsize=4)
def _json_plan(path: str) -> dict[tuple[int, int], str]:
    import json

    try:
        with open(path) as f:
            return {(int(e["n"]), int(e["k"])): str(e["variant"]) for e in json.load(f)["faster"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{ENV}: {path} is not a readable benchmarks/bf16_gemv.py JSON with a `faster` list "
                         f"({type(exc).__name__}: {exc})") from exc


def plan_for_device(device) -> dict[tuple[int, int], str]:
    """{(N, K): variant} measured faster than cuBLAS on this card (data/gemv_plans.yaml, `bf16`); {} for a
    card without measurements (cuBLAS everywhere)."""
    return _card_plan(torch.cuda.get_device_name(device))


@functools.lru_cache(maxsize=4)
def _card_plan(card: str) -> dict[tuple[int, int], str]:  # built once per card, asked once per projection
    from edgeprof.fast.plans import card_entries

    return {(int(e["n"]), int(e["k"])): str(e["variant"]) for e in card_entries(card, "bf16")}
