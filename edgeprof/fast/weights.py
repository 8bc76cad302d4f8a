"""Fused decode weights taken from a loaded HF model (Llama/Qwen2/Mistral layout).

Per layer, bf16 (nn.Linear convention, [out, in]):
  wqkv [Q + 2*KV, H] (+ bqkv [Q + 2*KV] when the model has qkv biases)  one GEMV instead of three
  wo   [H, Q]
  wgu  [2*I, H]   gate rows first, then up rows: one GEMV instead of two
  wd   [H, I]
Int4 replaces each weight matrix by an int4 layer (tinygemm, or gemlite where installed)
built from (q, z, s) tensors, group `group`: `edgeprof.quant.rtn` (round-to-nearest, `rtn4-gN`)
by default, or a GPTQ result (`edgeprof.quant.gptq4`, `gptq4-gN`) passed as `qzs_source`. A fused
matrix takes each part's own tensors stacked along N (groups never cross rows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from edgeprof.fast.int4 import INT4_KERNELS, Int4Linear, quantize_rtn
from edgeprof.quant.rtn import label as rtn_label


class DenseLinear:
    """bf16 [out, in] weight with optional bias; `__call__` maps [1, in] -> [1, out]."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor | None = None):
        self.w, self.b = w.contiguous(), b

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.w, self.b)

    @property
    def kernel_name(self) -> str:
        return "cublas" if self.w.is_cuda else "torch-cpu"

    @property
    def nbytes(self) -> int:
        return self.w.numel() * self.w.element_size() + (0 if self.b is None else self.b.numel() * self.b.element_size())


class BiasedInt4:
    """Int4 GEMV plus a 16-bit bias (Qwen2's q/k/v)."""

    def __init__(self, lin: Int4Linear, b: torch.Tensor | None):
        self.lin, self.b = lin, b
        self.kernel_name = getattr(lin, "kernel_name", "?")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        return y if self.b is None else y + self.b

    @property
    def nbytes(self) -> int:
        return self.lin.nbytes + (0 if self.b is None else self.b.numel() * 2)


Linear = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class LayerWeights:
    attn_norm: torch.Tensor  # [H]
    qkv: Linear
    o: Linear
    mlp_norm: torch.Tensor  # [H]
    gate_up: Linear
    down: Linear


@dataclass
class FastWeights:
    embed: torch.Tensor  # [V, H]
    layers: list[LayerWeights]
    final_norm: torch.Tensor  # [H]
    lm_head: torch.Tensor  # [V, H]; the embedding itself when tied
    fmt: str  # "bf16" | "rtn4-gN"
    tied: bool
    extra: dict[str, object] = field(default_factory=dict)
    head: Linear | None = None  # the GEMV over lm_head (edgeprof's bf16 kernel where measured faster); None: torch.mm

    def nbytes(self) -> int:
        """Resident weight bytes (a tied table counted once)."""
        per_layer = sum(
            lw.attn_norm.numel() * 2 + lw.mlp_norm.numel() * 2
            + sum(lin.nbytes for lin in (lw.qkv, lw.o, lw.gate_up, lw.down))  # type: ignore[attr-defined]
            for lw in self.layers
        )
        table = self.embed.numel() * self.embed.element_size()
        return per_layer + table * (1 if self.tied else 2) + self.final_norm.numel() * 2


def _cat(*ts: torch.Tensor | None) -> torch.Tensor | None:
    return None if ts[0] is None else torch.cat([t for t in ts if t is not None], dim=0)


# Load-time kernel check of every int4 projection: the kernel's GEMV on one random input against the same
# dequantized weights in fp32. Sound kernels differ by bf16 output rounding and summation order only (the
# CUDA kernel measured 1.6-1.7e-3 vs float64 on every Qwen2.5-7B shape, results/h200/2026-11-28-int4-tune);
# a swapped nibble or a wrong scale changes the output by O(1). Bound 1e-2 sits between the two.
LOAD_CHECK_BOUND = 1e-2


@torch.no_grad()
def gemv_error(lin, q: torch.Tensor, z: torch.Tensor, s: torch.Tensor, group: int) -> float:
    """||lin(x) - x W_deq^T|| / ||x W_deq^T|| for one fixed random x [1, K] (bf16, as decode feeds it)."""
    from edgeprof.fast.int4 import dequantize

    g = torch.Generator(device=q.device).manual_seed(0)
    x = torch.randn(1, q.shape[1], generator=g, device=q.device).to(torch.bfloat16)  # [1, K]
    ref = x.float() @ dequantize(q, z, s, group).float().t()  # [1, N]
    got = lin(x).float()[..., : ref.shape[-1]]
    return float((got - ref).norm() / ref.norm().clamp(min=1e-12))


def _dense(w: torch.Tensor, b: torch.Tensor | None, errors: list[float]):
    """A bf16 projection: edgeprof's CUDA GEMV where `bf16cuda.choose` picks it for this shape (checked
    here against fp32 on one random input), else cuBLAS (DenseLinear)."""
    from edgeprof.fast import bf16cuda

    if w.device.type != "cuda":
        return DenseLinear(w, b)
    variant = bf16cuda.choose(w.shape[0], w.shape[1], bf16cuda.plan_for_device(w.device))
    if variant == "cublas":
        return DenseLinear(w, b)
    try:
        lin = bf16cuda.Bf16CudaLinear(w, b, variant)
    except RuntimeError as exc:  # no compiler / no extension: cuBLAS, and the record says why
        dense = DenseLinear(w, b)
        dense.fallback_reason = str(exc)  # type: ignore[attr-defined]
        return dense
    g = torch.Generator(device=w.device).manual_seed(0)
    x = torch.randn(1, w.shape[1], generator=g, device=w.device).to(torch.bfloat16)  # [1, K]
    # fp32 reference in row chunks: a whole fp32 copy of lm_head would be 2.2 GB (Qwen2.5-7B)
    ref = torch.cat([x.float() @ w[i:i + 16384].float().t() for i in range(0, w.shape[0], 16384)], dim=1)  # [1, N]
    ref = ref + (0 if b is None else b.float())
    errors.append(float((lin(x).float() - ref).norm() / ref.norm().clamp(min=1e-12)))
    return lin


def bf16_kernels_used(layers: list[LayerWeights], errors: list[float], head=None) -> dict[str, object]:
    """The record's `bf16_gemv`: which GEMV each bf16 projection ran (and the load check of edgeprof's)."""
    lins = {name: getattr(layers[0], name) for name in ("qkv", "o", "gate_up", "down")} if layers else {}
    if head is not None:
        lins["lm_head"] = head
    used = {name: (f"{lin.kernel_name} {lin.variant}" if hasattr(lin, "variant") else lin.kernel_name)
            for name, lin in lins.items()}
    out: dict[str, object] = {"bf16_gemv": used}
    reasons = {getattr(getattr(lw, n), "fallback_reason", None) for lw in layers for n in ("qkv", "o", "gate_up", "down")}
    reasons.add(getattr(head, "fallback_reason", None))
    reasons.discard(None)
    if reasons:
        out["bf16_gemv_fallback_reason"] = "; ".join(sorted(reasons))  # type: ignore[arg-type]
    if errors:
        out["bf16_load_check"] = {**load_check(errors), "what": "each edgeprof bf16 GEMV on a random x vs x @ W^T "
                                  "in fp32, at load"}
    return out


QZS = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # q int32 [N, K], z int32 [N, K/g], s float32 [N, K/g]


def _int4(w: torch.Tensor | QZS, group: int, kernel: str = "tinygemm", errors: list[float] | None = None,
          role: str | None = None) -> Int4Linear:
    """An int4 layer from a weight [N, K] (quantized here with rtn4) or a ready (q, z, s) triple; `role` names the
    projection (w4cuda.ROLES) for the CUDA kernel's default launch."""
    q, z, s = w if isinstance(w, tuple) else quantize_rtn(w, group)  # s is exact in bf16 and fp16
    lin = INT4_KERNELS[kernel](q, z, s, group, role=role)
    if errors is not None:
        errors.append(gemv_error(lin, q, z, s, group))
    return lin


def load_check(errors: list[float]) -> dict[str, object]:
    """The record's `int4_load_check`: every int4 projection's kernel against its dequantized weights."""
    worst = max(errors) if errors else None
    return {"passed": worst is not None and worst <= LOAD_CHECK_BOUND, "max_rel_err": worst,
            "bound": LOAD_CHECK_BOUND, "projections": len(errors),
            "what": "each int4 GEMV on a random x vs x @ dequantized(W)^T in fp32, at load"}


def _int4_biased(w: torch.Tensor | QZS, b: torch.Tensor | None, group: int, kernel: str,
                 errors: list[float] | None = None):
    """q/k/v: the CUDA kernel adds the bias in its epilogue (no extra launch); others add it after."""
    lin = _int4(w, group, kernel, errors, role="qkv")  # checked before a bias is attached
    if b is not None and hasattr(lin, "bias") and hasattr(lin, "fused_silu"):
        lin.bias = b.to(torch.bfloat16).contiguous()
        return lin
    return BiasedInt4(lin, b)


def int4_kernels_used(layers: list[LayerWeights]) -> dict[str, object]:
    """Which int4 GEMV ran for each projection, and why a fallback happened: the record's `int4_kernel`."""
    used: dict[str, str] = {}
    reasons: set[str] = set()
    for lw in layers:
        for name in ("qkv", "o", "gate_up", "down"):
            lin = getattr(lw, name)
            inner = getattr(lin, "lin", lin)
            used.setdefault(name, getattr(lin, "kernel_name", "?"))
            if getattr(inner, "fallback_reason", None):
                reasons.add(inner.fallback_reason)
    kinds = set(used.values())
    out: dict[str, object] = {"int4_kernel": kinds.pop() if len(kinds) == 1 else used}
    launches, sources = _cuda_launches(layers[0]) if layers else ({}, {})
    if launches:  # edgeprof's CUDA kernel: which launch (variant, K splits) each projection got, and from where
        out["int4_launch"], out["int4_launch_source"] = launches, sources
    if reasons:
        out["int4_fallback_reason"] = "; ".join(sorted(reasons))
    return out


def _cuda_launches(layer: LayerWeights) -> tuple[dict[str, str], dict[str, str]]:
    """({projection: "variant sN"}, {projection: "plan" | "rule" | "rule-sm80" | "base"}) for the projections of
    `layer` that run edgeprof's CUDA W4 kernel: which launch each got, and where it came from (int4.to_cuda_w4)."""
    launches, sources = {}, {}
    for name in ("qkv", "o", "gate_up", "down"):
        lin = getattr(layer, name)
        inner = getattr(lin, "lin", lin)
        if hasattr(inner, "variant") and hasattr(inner, "splits"):
            launches[name] = f"{inner.variant} s{inner.splits}"
            sources[name] = getattr(inner, "launch_source", "plan")
    return launches, sources


def deferred_norm_projections(layer: LayerWeights) -> list[str]:
    """The projections of `layer` whose fused norm is deferred under EDGEPROF_W4_NORM=deferred (w4cuda.defers_norm):
    the record says where the switch took effect, since every other launch loops."""
    from edgeprof.fast.w4cuda import defers_norm

    out = []
    for name in ("qkv", "gate_up"):  # the projections a norm is fused into
        inner = getattr(getattr(layer, name), "lin", getattr(layer, name))
        if hasattr(inner, "variant") and hasattr(inner, "splits") and defers_norm(inner.variant, inner.splits):
            out.append(name)
    return out


def _stacked_qzs(source, prefix: str, parts: tuple[str, ...], device) -> QZS:
    """(q, z, s) of several projections from `source` (a GPTQResult), stacked along N, on `device`."""
    trip = [source.qzs(f"{prefix}.{p}") for p in parts]
    return tuple(torch.cat([t[i] for t in trip], dim=0).to(device) for i in range(3))  # type: ignore[return-value]


def from_hf(model, fmt: str = "bf16", group: int = 128, kernel: str = "tinygemm", qzs_source=None,
            int4_label: str | None = None) -> FastWeights:
    """Fuse the weights of an HF causal LM (already on its device, bf16). For int4, `qzs_source`
    (an `edgeprof.quant.gptq4.GPTQResult`) supplies calibrated tensors instead of rtn4, and
    `int4_label` names them (`gptq4-g64`)."""
    inner = model.model
    layers = []
    errors: list[float] = []  # load-time kernel check of every int4 projection
    if fmt != "bf16" and kernel == "cuda":  # check the mma the decoder will run ($EDGEPROF_W4_MMA)
        from edgeprof.fast import w4cuda

        w4cuda.use_mma(w4cuda.mma_wanted())
    for i, layer in enumerate(inner.layers):
        a, m = layer.self_attn, layer.mlp
        wqkv = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight], dim=0)
        bqkv = _cat(a.q_proj.bias, a.k_proj.bias, a.v_proj.bias)
        wgu = torch.cat([m.gate_proj.weight, m.up_proj.weight], dim=0)
        if fmt == "bf16":
            qkv, o = _dense(wqkv, bqkv, errors), _dense(a.o_proj.weight, None, errors)
            gu, d = _dense(wgu, None, errors), _dense(m.down_proj.weight, None, errors)
        elif qzs_source is not None:
            dev, pa, pm = wqkv.device, f"model.layers.{i}.self_attn", f"model.layers.{i}.mlp"
            qkv = _int4_biased(_stacked_qzs(qzs_source, pa, ("q_proj", "k_proj", "v_proj"), dev), bqkv, group,
                               kernel, errors)
            o = _int4(_stacked_qzs(qzs_source, pa, ("o_proj",), dev), group, kernel, errors, "o")
            gu = _int4(_stacked_qzs(qzs_source, pm, ("gate_proj", "up_proj"), dev), group, kernel, errors, "gate_up")
            d = _int4(_stacked_qzs(qzs_source, pm, ("down_proj",), dev), group, kernel, errors, "down")
        else:
            qkv = _int4_biased(wqkv, bqkv, group, kernel, errors)
            o = _int4(a.o_proj.weight, group, kernel, errors, "o")
            gu, d = _int4(wgu, group, kernel, errors, "gate_up"), _int4(m.down_proj.weight, group, kernel, errors, "down")
        layers.append(LayerWeights(layer.input_layernorm.weight, qkv, o, layer.post_attention_layernorm.weight, gu, d))
    tied = model.lm_head.weight.data_ptr() == inner.embed_tokens.weight.data_ptr()
    extra: dict[str, object] = {"group": group}
    head_errors: list[float] = []  # the head stays bf16 in every format
    head = _dense(model.lm_head.weight, None, head_errors)
    if fmt == "bf16":
        extra.update(bf16_kernels_used(layers, errors + head_errors, head))
    else:
        extra.update(bf16_kernels_used([], head_errors, head))
        extra.update(int4_kernels_used(layers))
        extra["int4_load_check"] = load_check(errors)
        if qzs_source is not None:
            extra["int4_quantizer"] = {k: v for k, v in qzs_source.meta.items() if k != "key"}
    fmt_label = "bf16" if fmt == "bf16" else (int4_label or rtn_label(group))
    return FastWeights(inner.embed_tokens.weight, layers, inner.norm.weight, model.lm_head.weight, fmt_label, tied,
                       extra, head)


def dequantized_copy_(model, group: int = 128) -> None:
    """Replace every block linear weight of `model` by its int4 round trip, in place:
    the int4 reference that edgeprof-fast-int4 must agree with."""
    from edgeprof.fast.int4 import dequantize

    for layer in model.model.layers:
        for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.o_proj,
                    layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
            q, z, s = quantize_rtn(lin.weight.data, group)
            lin.weight.data.copy_(dequantize(q, z, s, group).to(lin.weight.dtype))
