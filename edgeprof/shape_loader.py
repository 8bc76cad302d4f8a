"""Finding model shapes: the preset catalog (models.yaml), config.json files, GGUF
headers, and the one resolver of a `--model` value (`resolve_shape`).

`edgeprof.shapes` holds the plain data and the dict -> shape math; this module does
the reading.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from edgeprof.errors import ConfigError, UnknownChoiceError
from edgeprof.gguf_header import read_gguf_metadata
from edgeprof.paths import config_file
from edgeprof.shapes import ModelShape, shape_from_dict, shape_from_gguf_metadata, shape_from_hf_config

# The embedded real model (SmolLM2-135M-Instruct, edgeprof.embedded) and its alias.
DEFAULT_PRESET = "smollm2-135m"
DEFAULT_ALIASES = ("default", DEFAULT_PRESET)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_default(spec: str) -> bool:
    """Whether `spec` names the embedded default model ("default" or "smollm2-135m")."""
    return spec.lower() in DEFAULT_ALIASES


def is_hub_id(spec: str) -> bool:
    return bool(_HUB_ID.match(spec)) and not Path(spec).expanduser().exists()


def load_presets(path: Path | None = None) -> dict[str, ModelShape]:
    """All presets of `configs/models.yaml`, by name."""
    path = path or config_file("models.yaml")
    raw = yaml.safe_load(path.read_text())["models"]
    return {name: shape_from_dict(name, entry) for name, entry in raw.items()}


def preset(name: str) -> ModelShape:
    """One preset by name; an unknown name lists the valid ones."""
    presets = load_presets()
    key = name.lower()
    if key not in presets:
        raise UnknownChoiceError("model", name, presets)
    return presets[key]


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


def load_gguf_shape(path: Path, name: str | None = None) -> ModelShape:
    """Shape from a `.gguf` file's metadata (no weights are read)."""
    path = Path(path)
    return shape_from_gguf_metadata(read_gguf_metadata(path), name or path.stem)


MODEL_CHOICES = ("default", "<config.json or model directory>", "<file.gguf>", "<hub id>")


def resolve_shape(spec: str, synthetic: bool | None = None) -> ModelShape | None:
    """The shape of a `--model` value without loading weights, or None for a hub id (its
    shape is known only after loading). In order: the default alias (unless
    `synthetic` is forced), a preset, a `.gguf` file, a config.json or model directory,
    a hub id."""
    presets = load_presets()
    key = spec.lower()
    if is_default(spec) and synthetic is not True:
        return presets[DEFAULT_PRESET]
    if key in presets:
        return presets[key]
    path = Path(spec).expanduser()
    if key.endswith(".gguf"):
        return load_gguf_shape(path)
    if path.exists():
        return load_hf_config_shape(path, path.name if path.is_dir() else None)
    if _HUB_ID.match(spec):
        return None
    raise UnknownChoiceError("model", spec, [*presets, *MODEL_CHOICES])


def require_shape(spec: str) -> ModelShape:
    """`resolve_shape` for commands that never load weights (`edgeprof floor`): a hub id is an error."""
    shape = resolve_shape(spec)
    if shape is None:
        raise ConfigError("model", f"{spec!r} looks like a hub id, whose shape is known only after loading it; "
                          "pass a preset (`edgeprof models`), a config.json, a model directory or a .gguf file")
    return shape
