"""Kernel correctness of the greedy tail (csrc/bf16_gemv.cu: bf16_gemv_greedy_kernel + gemv_greedy_finish_kernel),
on a CUDA device.

Against the unfused path on the same inputs: the logits bitwise the plain GEMV's, the token torch.argmax's pick
(ties to the smaller row), history[pos], pos + 1, the next input row embed[token], the mapped host pair and the
host's wait for it, and the scratch back at zero for the next step. Run by benchmarks/int4_gemv.py before it times
a step, and by tests/fast/test_greedy_tail.py where a GPU is present.
"""

from __future__ import annotations

import torch

from edgeprof.fast.model import SLOTS
from edgeprof.fast.readback import PAIRS

# how the logits are made: random; the maximum repeated before and after its row (ties: the first wins);
# every logit negative; every logit zero (all equal: row 0)
CASES = ("random", "ties", "negative", "zeros")


def _inputs(case: str, n: int, k: int, gen: torch.Generator, dev) -> tuple[torch.Tensor, torch.Tensor]:
    """(w [n, k], x [1, k]) bf16 whose logits W x show `case`."""
    w = torch.randn(n, k, generator=gen, device=dev).to(torch.bfloat16)
    x = torch.randn(1, k, generator=gen, device=dev).to(torch.bfloat16)
    if case == "ties":  # the best row copied to rows after it and before it: the earliest copy must win
        best = int((x.float() @ w.float().t()).argmax())
        for r in (best // 2, min(n - 1, best + 7), n - 1):
            w[r] = w[best]
    elif case == "negative":
        w = -w.abs()
        x = x.abs()
    elif case == "zeros":
        w = torch.zeros_like(w)
    return w.contiguous(), x.contiguous()


def check_case(case: str, variant: str, n: int = 5003, k: int = 512, vocab_extra: int = 3) -> dict:
    """One case on one (rows, unroll) variant; n not a multiple of a CTA's rows, so its last CTA is partial."""
    from edgeprof.fast.bf16cuda import Bf16CudaLinear

    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(CASES.index(case))
    w, x = _inputs(case, n, k, gen, dev)
    lin = Bf16CudaLinear(w, None, variant)
    ref_logits = lin(x)  # [1, n], the plain GEMV
    ref_tok = int(torch.argmax(ref_logits, dim=-1))
    embed = torch.randn(n + vocab_extra, 64, generator=gen, device=dev).to(torch.bfloat16)  # a table with V >= n
    out = torch.empty(1, n, device=dev, dtype=torch.bfloat16)
    scratch = torch.zeros(SLOTS + 1, device=dev, dtype=torch.long)
    token = torch.full((1,), -5, device=dev, dtype=torch.long)
    history = torch.full((16,), -1, device=dev, dtype=torch.long)
    x0 = torch.zeros(1, 64, device=dev, dtype=torch.bfloat16)
    host = torch.full((2 * PAIRS,), -1, dtype=torch.long, pin_memory=True)
    mapped = bool(lin.ext.mapped_address(host))
    res = {"case": case, "variant": variant, "n": n, "k": k, "mapped": mapped, "ref_token": ref_tok}
    for step, p in enumerate((3, 4)):  # two steps: the second sees the scratch the first reset
        pos = torch.full((1,), p, device=dev, dtype=torch.long)
        lin.into_greedy(x, out, scratch, token, pos, history, embed, x0, host if mapped else torch.empty(0))
        torch.cuda.synchronize()
        tok = int(token)
        ok = {"logits_bitwise": torch.equal(out, ref_logits), "token": tok == ref_tok,
              "history": int(history[p]) == ref_tok, "pos": int(pos) == p + 1,
              "x0": torch.equal(x0[0], embed[ref_tok]), "scratch_reset": not scratch[:SLOTS].any().item(),
              "host": (not mapped) or host.view(PAIRS, 2)[(step + 1) % PAIRS].tolist() == [ref_tok, step + 1],
              # the host's wait (GIL released): this step's token; -1 for a step that never comes (stream idle)
              "wait_mapped": (not mapped) or (lin.ext.wait_mapped(host, step + 1) == ref_tok
                                              and lin.ext.wait_mapped(host, 99) == -1)}
        res[f"step{step}"] = ok
    res["passed"] = all(all(res[f"step{s}"].values()) for s in (0, 1))
    return res


def check_all() -> list[dict]:
    """Every case on every compiled (rows, unroll) variant."""
    from edgeprof.fast.bf16cuda import VARIANTS

    return [check_case(case, v) for v in VARIANTS for case in CASES]
