"""Model shapes: the exact tensor dimensions a decode step streams.

A `ModelShape` is plain data. It comes from the preset catalog
(`configs/models.yaml`), from any Hugging Face `config.json`, or from GGUF metadata.
The analytic floor (`edgeprof.floor`) needs nothing else about a model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgeprof.errors import ConfigError, UnknownChoiceError
from edgeprof.paths import configs_dir


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


def load_presets(path: Path | None = None) -> dict[str, ModelShape]:
    """All presets of `configs/models.yaml`, by name."""
    path = path or configs_dir() / "models.yaml"
    raw = yaml.safe_load(path.read_text())["models"]
    return {name: shape_from_dict(name, entry) for name, entry in raw.items()}


def preset(name: str) -> ModelShape:
    """One preset by name; an unknown name lists the valid ones."""
    presets = load_presets()
    key = name.lower()
    if key not in presets:
        raise UnknownChoiceError("model", name, presets)
    return presets[key]


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


def load_hf_config_shape(path: Path, name: str | None = None) -> ModelShape:
    """Shape from a `config.json` file or a model directory holding one."""
    path = Path(path)
    cfg_path = path / "config.json" if path.is_dir() else path
    if not cfg_path.exists():
        raise ConfigError("model", f"no config.json at {cfg_path}; pass a preset name or a model directory")
    try:
        cfg = json.loads(cfg_path.read_text())
    except ValueError as exc:
        raise ConfigError("model", f"{cfg_path} is not valid JSON ({exc}); pass a Hugging Face config.json") from exc
    return shape_from_hf_config(cfg, name or cfg_path.parent.name)


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


_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


class _GGUFHeader:
    """Streams a GGUF header: key/values, then tensor names. Arrays are skipped and
    summarised by their length, so a 100k-token vocabulary costs milliseconds (the
    `gguf` package's GGUFReader decodes every element, ~10 s for SmolLM2)."""

    def __init__(self, fh: Any) -> None:
        import struct

        self.fh, self.struct = fh, struct
        magic = fh.read(4)
        if magic != b"GGUF":
            raise ValueError(f"bad magic {magic!r}")
        version = struct.unpack("<I", fh.read(4))[0]
        self.order = "<" if version & 0xFFFF else ">"  # a big-endian file reads as a huge version
        self.n_tensors, self.n_kv = self._unpack("QQ")

    def _unpack(self, fmt: str) -> tuple:
        size = self.struct.calcsize(self.order + fmt)
        data = self.fh.read(size)
        if len(data) != size:
            raise ValueError("truncated header")
        return self.struct.unpack(self.order + fmt, data)

    def _string(self) -> str:
        (n,) = self._unpack("Q")
        return self.fh.read(n).decode("utf-8", errors="replace")

    def _value(self, vtype: int) -> Any:
        if vtype == _GGUF_STRING:
            return self._string()
        if vtype == _GGUF_ARRAY:
            etype, count = self._unpack("IQ")
            if etype == _GGUF_STRING:
                for _ in range(count):
                    (n,) = self._unpack("Q")
                    self.fh.seek(n, 1)
            elif etype in _GGUF_SCALARS:
                self.fh.seek(count * self.struct.calcsize(self.order + _GGUF_SCALARS[etype]), 1)
            else:
                raise ValueError(f"unsupported array element type {etype}")
            return range(count)  # only the length is needed (e.g. vocabulary size)
        if vtype not in _GGUF_SCALARS:
            raise ValueError(f"unknown value type {vtype}")
        return self._unpack(_GGUF_SCALARS[vtype])[0]

    def metadata(self) -> dict[str, Any]:
        meta = {}
        for _ in range(self.n_kv):
            key = self._string()
            (vtype,) = self._unpack("I")
            meta[key] = self._value(vtype)
        return meta

    def tensor_names(self) -> list[str]:
        names = []
        for _ in range(self.n_tensors):
            names.append(self._string())
            (n_dims,) = self._unpack("I")
            self.fh.seek(8 * n_dims + 4 + 8, 1)  # dims (u64 each), ggml type (u32), data offset (u64)
        return names


def read_gguf_metadata(path: Path) -> dict[str, Any]:
    """Key/value metadata of a GGUF file (arrays summarised by length), plus
    `_has_output_weight`: whether the file stores a separate `output.weight` (untied head)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("model", f"no GGUF file at {path}; pass a preset name, a model directory or a .gguf file")
    try:
        with open(path, "rb") as fh:
            header = _GGUFHeader(fh)
            meta = header.metadata()
            meta["_has_output_weight"] = "output.weight" in header.tensor_names()
    except (ValueError, OverflowError, MemoryError) as exc:
        raise ConfigError("model", f"{path} is not a readable GGUF file ({exc})") from exc
    return meta


def load_gguf_shape(path: Path, name: str | None = None) -> ModelShape:
    """Shape from a `.gguf` file's metadata (no weights are read)."""
    path = Path(path)
    return shape_from_gguf_metadata(read_gguf_metadata(path), name or path.stem)


def resolve_shape(spec: str) -> ModelShape:
    """A `--model` value: a preset name, a `config.json` / model directory, or a `.gguf` file."""
    path = Path(spec).expanduser()
    if spec.lower().endswith(".gguf"):
        return load_gguf_shape(path)
    if path.exists():
        return load_hf_config_shape(path)
    presets = load_presets()
    if spec.lower() in presets:
        return presets[spec.lower()]
    raise UnknownChoiceError("model", spec, [*presets, "<path to a config.json, model directory or .gguf>"])
