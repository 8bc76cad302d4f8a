"""Model shapes: the exact tensor dimensions a decode step streams.

A `ModelShape` is plain data, built here from plain dicts: a preset catalog entry,
a Hugging Face `config.json`, or GGUF metadata. This module reads no file: finding and
reading those (YAML, JSON, GGUF headers) is `edgeprof.shape_loader`'s job. The analytic
floor (`edgeprof.floor`) needs nothing else about a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgeprof.errors import ConfigError, UnknownChoiceError


@dataclass(frozen=True)
class ModelShape:
    """Dimensions of a Llama/Qwen2/Mistral-family decoder (RMSNorm, SwiGLU, RoPE, GQA)."""

    name: str
    arch: str  # "llama" | "qwen2" | "mistral": picks the HF config class
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    qkv_bias: bool
    tied: bool
    max_ctx: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    rope_scaling: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    hub_id: str | None = None

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of K (or V) per token per layer: only the KV heads are stored (GQA)."""
        return self.n_kv_heads * self.head_dim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_REQUIRED = ("arch", "n_layers", "hidden", "n_heads", "n_kv_heads", "intermediate", "vocab", "max_ctx")


def shape_from_dict(name: str, data: dict[str, Any]) -> ModelShape:
    """Build a shape from a catalog entry; a missing field is named in the error."""
    for key in _REQUIRED:
        if key not in data:
            raise ConfigError(f"models.{name}.{key}", "missing; see configs/models.yaml for the fields")
    head_dim = int(data.get("head_dim") or data["hidden"] // data["n_heads"])
    return ModelShape(
        name=name,
        arch=str(data["arch"]),
        n_layers=int(data["n_layers"]),
        hidden=int(data["hidden"]),
        n_heads=int(data["n_heads"]),
        n_kv_heads=int(data["n_kv_heads"]),
        head_dim=head_dim,
        intermediate=int(data["intermediate"]),
        vocab=int(data["vocab"]),
        qkv_bias=bool(data.get("qkv_bias", False)),
        tied=bool(data.get("tied", False)),
        max_ctx=int(data["max_ctx"]),
        rope_theta=float(data.get("rope_theta", 10000.0)),
        norm_eps=float(data.get("norm_eps", 1e-5)),
        rope_scaling=data.get("rope_scaling"),
        hub_id=data.get("hub_id"),
    )


_ARCH_FROM_MODEL_TYPE = {"llama": "llama", "qwen2": "qwen2", "mistral": "mistral"}


def shape_from_hf_config(cfg: dict[str, Any], name: str = "custom") -> ModelShape:
    """Shape from a Hugging Face `config.json` dict (Llama, Qwen2, Mistral families)."""
    model_type = cfg.get("model_type", "")
    if model_type not in _ARCH_FROM_MODEL_TYPE:
        raise UnknownChoiceError("config.json model_type", model_type, _ARCH_FROM_MODEL_TYPE)
    for k in ("num_attention_heads", "hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size"):
        if k not in cfg:
            raise ConfigError(f"config.json {k}", "missing; is this a Llama/Qwen2/Mistral config.json?")
    n_heads = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    return ModelShape(
        name=name,
        arch=_ARCH_FROM_MODEL_TYPE[model_type],
        n_layers=int(cfg["num_hidden_layers"]),
        hidden=hidden,
        n_heads=n_heads,
        n_kv_heads=int(cfg.get("num_key_value_heads") or n_heads),
        head_dim=int(cfg.get("head_dim") or hidden // n_heads),
        intermediate=int(cfg["intermediate_size"]),
        vocab=int(cfg["vocab_size"]),
        # Qwen2 always has q/k/v biases; Llama/Mistral say so with attention_bias.
        qkv_bias=model_type == "qwen2" or bool(cfg.get("attention_bias", False)),
        tied=bool(cfg.get("tie_word_embeddings", False)),
        max_ctx=int(cfg.get("max_position_embeddings", 4096)),
        rope_theta=float(cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)),
        norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
        rope_scaling=cfg.get("rope_scaling"),
    )


def shape_from_gguf_metadata(meta: dict[str, Any], name: str = "gguf") -> ModelShape:
    """Shape from GGUF key/value metadata (`general.architecture`, `{arch}.*` keys)."""
    arch = meta.get("general.architecture", "")
    if arch not in _ARCH_FROM_MODEL_TYPE:
        raise UnknownChoiceError("gguf general.architecture", arch, _ARCH_FROM_MODEL_TYPE)

    def key(k: str, default: Any = None) -> Any:
        value = meta.get(f"{arch}.{k}", default)
        if value is None:
            raise ConfigError(f"gguf {arch}.{k}", "missing from the GGUF metadata")
        return value

    hidden = int(key("embedding_length"))
    n_heads = int(key("attention.head_count"))
    vocab = meta.get(f"{arch}.vocab_size") or len(meta.get("tokenizer.ggml.tokens", []))
    return ModelShape(
        name=name,
        arch=_ARCH_FROM_MODEL_TYPE[arch],
        n_layers=int(key("block_count")),
        hidden=hidden,
        n_heads=n_heads,
        n_kv_heads=int(key("attention.head_count_kv", n_heads)),
        head_dim=int(key("attention.key_length", hidden // n_heads)),
        intermediate=int(key("feed_forward_length")),
        vocab=int(vocab),
        qkv_bias=arch == "qwen2",
        # A GGUF without a separate output.weight tensor ties the head to the embedding.
        tied=not bool(meta.get("_has_output_weight", True)),
        max_ctx=int(key("context_length")),
        rope_theta=float(key("rope.freq_base", 10000.0)),
        norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
    )
