"""The decode step of edgeprof-fast: token in, next token out, entirely on the device.

State lives in static device buffers so one CUDA graph can replay every step:
  token  int64 [1]   the last produced token (input of the next step)
  pos    int64 [1]   its position = tokens already in the KV cache
  k, v   bf16  [L, nkv, max_ctx, hd]
  history int64 [max_ctx]  produced tokens by position, read back without a sync per step
A step (per layer: norm, qkv GEMV, rope+KV write, attention split+reduce, o GEMV,
add+norm, gate_up GEMV, silu*mul, down GEMV; the CUDA int4 GEMV fuses both norms and the
silu*mul into its input staging) ends with the head GEMV, argmax on the device, and in-place
updates of token/pos/history. Nothing is read back to the host. Where the head GEMV is edgeprof's
(csrc/bf16_gemv.cu), the argmax folds into it and one small kernel after it does those updates
(GreedyTail), leaves the next step's input row x0 = embed[token] and can write the token to mapped
host memory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from edgeprof.fast import w4cuda
from edgeprof.fast.kernels import (
    TorchOps,
    TritonOps,
    add_rmsnorm,
    apply_rope,
    pdl_down_wanted,
    pdl_prefetch_tiles,
    pdl_wanted,
)
from edgeprof.fast.readback import PAIRS, MappedReadback
from edgeprof.fast.weights import FastWeights
from edgeprof.shapes import ModelShape


def rope_tables(model, max_ctx: int, device: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [max_ctx, hd] exactly as the HF model's own rotary embedding computes them
    (so llama3 scaling and every rope variant HF supports come for free)."""
    rotary = model.model.rotary_emb
    pos = torch.arange(max_ctx, device=device)[None, :]
    probe = torch.zeros(1, device=device, dtype=dtype)
    cos, sin = rotary(probe, pos)  # [1, max_ctx, hd] in dtype
    return cos[0].contiguous(), sin[0].contiguous()


class FastModel:
    def __init__(self, shape: ModelShape, weights: FastWeights, cos: torch.Tensor, sin: torch.Tensor,
                 max_ctx: int, device: str, ops: str | None = None):
        self.shape, self.w, self.max_ctx, self.device = shape, weights, max_ctx, device
        dt = weights.embed.dtype
        n, nkv, hd = shape.n_layers, shape.n_kv_heads, shape.head_dim
        self.k = torch.zeros(n, nkv, max_ctx, hd, device=device, dtype=dt)
        self.v = torch.zeros(n, nkv, max_ctx, hd, device=device, dtype=dt)
        self.token = torch.zeros(1, device=device, dtype=torch.long)
        self.pos = torch.zeros(1, device=device, dtype=torch.long)
        self.history = torch.zeros(max_ctx, device=device, dtype=torch.long)
        self.cos, self.sin = cos, sin
        # [1, V] logits of the last step or prefill; one static buffer the graph writes into
        self.logits = torch.zeros(1, weights.lm_head.shape[0], device=device, dtype=dt)
        args = (shape.n_heads, nkv, hd, shape.norm_eps, cos, sin)
        # ops: "triton" on CUDA by default, "torch" on the CPU (or to cross-check on a GPU)
        ops = ops or ("triton" if torch.device(device).type == "cuda" else "torch")
        # programmatic dependent launch between the step's kernels (sm_90+; $EDGEPROF_PDL=0 turns it off)
        self.pdl = pdl_wanted(device, "gemv")
        self.pdl_prefetch = pdl_prefetch_tiles() if self.pdl else 0
        self.pdl_down = self.pdl and pdl_down_wanted()  # the down projection's GEMV in the PDL chain too
        self.w4_mma = w4cuda.mma_wanted()  # the int4 GEMVs' mma type ($EDGEPROF_W4_MMA)
        self.w4_norm = w4cuda.norm_wanted()  # how the fused norm loads its inputs ($EDGEPROF_W4_NORM)
        self.ops = (TritonOps(*args, max_ctx, shape.hidden, shape.intermediate, pdl=pdl_wanted(device, "triton"))
                    if ops == "triton" else TorchOps(*args))
        # A/B of the norm fused into the int4 GEMV (benchmarks): $EDGEPROF_FUSE_NORM=0 keeps it a separate
        # launch. H200 (results/h200/2026-11-28-decode-step r6): fused 2% faster. ($EDGEPROF_FUSE_ROPE: TritonOps)
        self.fuse_norm = os.environ.get("EDGEPROF_FUSE_NORM", "1") != "0"
        # the int4 MLP as one launch per layer ($EDGEPROF_W4_MLP=fused), where edgeprof's CUDA kernel runs both GEMVs
        self.mlp_note, self.mlps = self._fused_mlps()
        # argmax in the head GEMV, token/history/pos and the next input row in one launch after it (edgeprof's GEMV)
        self.tail_note, self.tail = greedy_tail(self)

    def _fused_mlps(self) -> tuple[str, list]:
        """(what the MLPs run as, for the decoder's record; one W4CudaMLP or None per layer). Fused where
        $EDGEPROF_W4_MLP asks for it and w4cuda.mlp_unfusable finds nothing against it; the note says why not."""
        layers = self.w.layers
        if w4cuda.mlp_wanted() != "fused":
            return "split", [None] * len(layers)
        whys = [self._why_not_fused(lw) for lw in layers]
        mlps = [None if why else w4cuda.W4CudaMLP(lw.gate_up, lw.down) for lw, why in zip(layers, whys, strict=True)]
        fused = sum(m is not None for m in mlps)
        if fused == len(layers):
            return "fused", mlps
        why = next(w for w in whys if w)
        return (f"fused in {fused} of {len(layers)} layers" if fused else "split") + f" ({why})", mlps

    def _why_not_fused(self, lw) -> str | None:
        """Why one layer's MLP cannot run as one launch, or None when it can."""
        if not (isinstance(lw.gate_up, w4cuda.W4CudaLinear) and isinstance(lw.down, w4cuda.W4CudaLinear)):
            return "not edgeprof's CUDA int4 kernel"
        if not self.fuse_norm:
            return "the norm is not fused ($EDGEPROF_FUSE_NORM=0)"
        return w4cuda.mlp_unfusable(lw.gate_up, lw.down)

    # ------------------------------------------------------------------ one token
    def step(self) -> torch.Tensor:
        """Decode one token from the `token`/`pos` buffers; updates them in place."""
        ops, w = self.ops, self.w
        self.set_kernel_flags()
        # [1, H]: the greedy tail leaves embed[token] in x0; set_token keeps it so when the host sets the token
        x = self.tail.x0 if self.tail is not None else F.embedding(self.token, w.embed)
        res = None
        for i, lw in enumerate(w.layers):
            qkv, res = self._norm_gemv(lw.qkv, x, res, lw.attn_norm)  # qkv [1, Q+2KV]
            x = lw.o(ops.rope_attention(qkv, self.pos, self.k[i], self.v[i]))  # [1, H]
            if self.mlps[i] is not None:  # norm, gate_up, SiLU*up and down in one launch
                x, res = self.mlps[i](x, res, lw.mlp_norm, self.shape.norm_eps)  # [1, H]
                continue
            if getattr(lw.gate_up, "fuses_norm_silu", False) and self.fuse_norm:  # SiLU*up in gate_up's epilogue
                act, res = lw.gate_up.fused_norm_silu(x, res, lw.mlp_norm, self.shape.norm_eps)  # [1, I]
                x = lw.down(act)  # [1, H]
                continue
            gu, res = self._norm_gemv(lw.gate_up, x, res, lw.mlp_norm)  # [1, 2I]
            # the CUDA int4 GEMV computes silu(g) * u while staging its input: one launch fewer
            fused = getattr(lw.down, "fuses_silu", False)
            x = lw.down.fused_silu(gu) if fused else lw.down(ops.silu_mul(gu))  # [1, H]
        h, _ = ops.add_rmsnorm(x, res, w.final_norm)
        if self.tail is not None:  # logits, argmax and the bookkeeping below in one launch
            self.tail.launch(w.head, h, self)
            return self.token
        if hasattr(w.head, "into"):  # edgeprof's bf16 GEMV, writing the static logits buffer
            w.head.into(h, self.logits)  # [1, V]; kept for correctness checks
        else:
            torch.mm(h, w.lm_head.t(), out=self.logits)
        nxt = torch.argmax(self.logits, dim=-1)  # [1], greedy on the device
        self.history.index_copy_(0, self.pos, nxt)
        self.token.copy_(nxt)
        self.pos.add_(1)
        return self.token

    def set_kernel_flags(self) -> None:
        """The W4 extension's launch flags are global to the process: set this decoder's before launching its kernels
        (PDL, its L2 prefetch and the down projection's share of it, the mma type, the norm's loads)."""
        w4cuda.use_pdl(self.pdl, self.pdl_prefetch, self.pdl_down)
        w4cuda.use_mma(self.w4_mma)
        w4cuda.use_norm(self.w4_norm)

    def _norm_gemv(self, lin, x: torch.Tensor, res: torch.Tensor | None, norm_w: torch.Tensor):
        """(lin(rmsnorm(x + res) * norm_w), x + res): one launch where the CUDA int4 GEMV fuses the residual
        add and the norm into staging its input ($EDGEPROF_FUSE_NORM=0 keeps them apart), else two."""
        if getattr(lin, "fuses_norm", False) and self.fuse_norm:
            return lin.fused_norm(x, res, norm_w, self.shape.norm_eps)
        h, res = self.ops.add_rmsnorm(x, res, norm_w)
        return lin(h), res

    # ------------------------------------------------------------------ prompt
    @torch.no_grad()
    def prefill(self, token_ids: Sequence[int], chunk: int = 2048) -> torch.Tensor:
        """Append `token_ids` to the cache (host ints are fine here: prefill is not graphed);
        leaves the next token in `token`. Attention runs causally in chunks with SDPA."""
        start = int(self.pos.item())
        ids = torch.tensor(list(token_ids), device=self.device, dtype=torch.long)
        for c0 in range(0, len(ids), chunk):
            self.logits.copy_(self._prefill_chunk(ids[c0:c0 + chunk], start + c0))
        nxt = torch.argmax(self.logits, dim=-1)  # [1]
        self.set_token(nxt)
        self.pos.fill_(start + len(ids))
        self.history[start + len(ids) - 1] = nxt[0]
        return self.token

    def set_token(self, token) -> None:
        """The next step's input token (a device [1] tensor or an int), with the greedy tail's input row."""
        if isinstance(token, int):
            self.token.fill_(token)
        else:
            self.token.copy_(token)
        if self.tail is not None:
            self.tail.follow(self)

    def _prefill_chunk(self, ids: torch.Tensor, p0: int) -> torch.Tensor:
        s, w = self.shape, self.w
        t, nh, nkv, hd = len(ids), s.n_heads, s.n_kv_heads, s.head_dim
        q_dim, kv_dim = nh * hd, nkv * hd
        cos, sin = self.cos[p0:p0 + t, None, :], self.sin[p0:p0 + t, None, :]  # [t, 1, hd]
        # query i (absolute p0 + i) may see keys 0 .. p0 + i
        mask = torch.arange(p0 + t, device=self.device)[None, :] <= (p0 + torch.arange(t, device=self.device))[:, None]
        x = F.embedding(ids, w.embed)  # [t, H]
        res = None
        for i, lw in enumerate(w.layers):
            h, res = add_rmsnorm(x, res, lw.attn_norm, s.norm_eps)
            qkv = lw.qkv(h)  # [t, Q + 2KV]
            q = apply_rope(qkv[:, :q_dim].view(t, nh, hd), cos, sin)
            k = apply_rope(qkv[:, q_dim:q_dim + kv_dim].view(t, nkv, hd), cos, sin)
            self.k[i, :, p0:p0 + t] = k.transpose(0, 1)
            self.v[i, :, p0:p0 + t] = qkv[:, q_dim + kv_dim:].view(t, nkv, hd).transpose(0, 1)
            att = F.scaled_dot_product_attention(
                q.transpose(0, 1)[None], self.k[i, None, :, :p0 + t], self.v[i, None, :, :p0 + t],
                attn_mask=mask, enable_gqa=True)  # [1, nh, t, hd]
            x = lw.o(att[0].transpose(0, 1).reshape(t, q_dim))
            h, res = add_rmsnorm(x, res, lw.mlp_norm, s.norm_eps)
            g, u = lw.gate_up(h).chunk(2, dim=-1)
            x = lw.down(F.silu(g) * u)
        h, _ = add_rmsnorm(x[-1:], res[-1:], w.final_norm, s.norm_eps)
        return F.linear(h, w.lm_head)  # [1, V]

    def reset(self) -> None:
        self.pos.zero_()
        self.set_token(0)


class GreedyTail:
    """The step's greedy tail (csrc/bf16_gemv.cu: bf16_gemv_greedy_kernel, gemv_greedy_finish_kernel): its device
    scratch [SLOTS argmax keys, step count], the next step's input row x0 [1, H] = embed[token], and the mapped
    readback of the token (edgeprof/fast/readback.py) or None, where the token is read back by copy."""

    def __init__(self, model: FastModel, mapped: bool):
        dev, h = model.device, model.shape.hidden
        self.scratch = torch.zeros(SLOTS + 1, device=dev, dtype=torch.long)
        self.x0 = torch.zeros(1, h, device=dev, dtype=model.w.embed.dtype)
        self.host = torch.empty(0, dtype=torch.long)
        self.readback: MappedReadback | None = None
        if mapped:
            host = torch.zeros(2 * PAIRS, dtype=torch.long, pin_memory=True)
            ext = model.w.head.ext
            if ext.mapped_address(host):
                self.host, self.readback = host, MappedReadback(host, self.scratch[SLOTS:],
                                                                lambda n: _found(ext.wait_mapped(host, n)))
        self.follow(model)

    def launch(self, head, h: torch.Tensor, m: FastModel) -> None:
        """h [1, H] (the final norm's output) -> logits [1, V]; token, history[pos], pos and x0 updated."""
        head.into_greedy(h, m.logits, self.scratch, m.token, m.pos, m.history, m.w.embed, self.x0, self.host)

    def follow(self, m: FastModel) -> None:
        """x0 = embed[token] after the host set the token; clears the argmax scratch a failed launch may have left."""
        self.x0.copy_(F.embedding(m.token, m.w.embed))
        self.scratch[:SLOTS].zero_()


def _found(token: int) -> int | None:
    """wait_mapped's -1 (the step never wrote the pair) as MappedReadback's None."""
    return None if token < 0 else token


SLOTS = 32  # the head's CTAs spread their argmax over this many keys (csrc/greedy_tail.h, kSlots)
TAIL_ENV = "EDGEPROF_GREEDY_TAIL"  # "fused" (default), "off" (torch argmax, 3 small kernels, an embedding lookup)
READBACK_ENV = "EDGEPROF_READBACK"  # "mapped" (default), "copy" (the token by .item())


def greedy_tail(model: FastModel) -> tuple[str, GreedyTail | None]:
    """(what the step's tail runs as, for the decoder's record; the GreedyTail or None)."""
    fused = w4cuda.env_choice(TAIL_ENV, ("fused", "off"), "fused") == "fused"  # a bad value fails on any device
    mapped = w4cuda.env_choice(READBACK_ENV, ("mapped", "copy"), "mapped") == "mapped"
    if torch.device(model.device).type != "cuda":
        return "torch argmax (CPU)", None
    if not hasattr(model.w.head, "into_greedy"):
        return "torch argmax (the head GEMV is cuBLAS's)", None
    if not fused:
        return f"torch argmax (${TAIL_ENV}=off)", None
    embed = model.w.embed
    if not embed.is_contiguous() or embed.data_ptr() % 16 or embed.shape[0] < model.w.lm_head.shape[0]:
        return "torch argmax (the embedding is not a contiguous, 16-byte aligned [>= V, H] table)", None
    tail = GreedyTail(model, mapped)
    how = "token read from mapped host memory" if tail.readback else (
        "token read back by copy" + ("" if not mapped else " (pinned memory has no device address here)"))
    return f"argmax fused into the head GEMV, the bookkeeping in one launch after it; {how}", tail

