"""Model shapes: presets, HF config.json and GGUF metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeprof.errors import ConfigError, UnknownChoiceError
from edgeprof.gguf_header import read_gguf_metadata
from edgeprof.shape_loader import load_gguf_shape, load_hf_config_shape, preset, resolve_shape

# The public config.json figures (see the project's reference facts).
# name: layers, hidden, heads, kv heads, head dim, intermediate, vocab, qkv bias, tied, rope theta
REFERENCE = {
    "qwen2.5-7b": (28, 3584, 28, 4, 128, 18944, 152064, True, False, 1e6),
    "mistral-7b-v0.3": (32, 4096, 32, 8, 128, 14336, 32768, False, False, 1e6),
    "llama-3.1-8b": (32, 4096, 32, 8, 128, 14336, 128256, False, False, 5e5),
    "smollm2-135m": (30, 576, 9, 3, 64, 1536, 49152, False, True, 1e5),
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_presets_match_reference_shapes(name: str) -> None:
    s = preset(name)
    got = (s.n_layers, s.hidden, s.n_heads, s.n_kv_heads, s.head_dim, s.intermediate, s.vocab, s.qkv_bias,
           s.tied, s.rope_theta)
    assert got == REFERENCE[name]


def test_llama31_rope_scaling_and_unknown_preset() -> None:
    assert preset("llama-3.1-8b").rope_scaling["rope_type"] == "llama3"
    with pytest.raises(UnknownChoiceError, match="qwen2.5-7b"):
        preset("gpt-5")


QWEN_CONFIG = {  # the fields of Qwen/Qwen2.5-7B-Instruct's config.json that matter
    "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_attention_heads": 28,
    "num_hidden_layers": 28, "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False,
    "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-06,
}


def test_hf_config_json_file_and_dir(tmp_path: Path) -> None:
    d = tmp_path / "Qwen2.5-7B"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(QWEN_CONFIG))
    from_dir = load_hf_config_shape(d)
    from_file = load_hf_config_shape(d / "config.json")
    assert from_dir == from_file
    assert from_dir.name == "Qwen2.5-7B"
    want = preset("qwen2.5-7b")
    for f in ("n_layers", "hidden", "n_heads", "n_kv_heads", "head_dim", "intermediate", "vocab", "qkv_bias",
              "tied", "max_ctx", "rope_theta"):
        assert getattr(from_dir, f) == getattr(want, f), f


def test_hf_config_transformers5_rope_parameters(tmp_path: Path) -> None:
    cfg = {**QWEN_CONFIG, "rope_parameters": {"rope_theta": 5e5, "rope_type": "default"}}
    del cfg["rope_theta"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert load_hf_config_shape(tmp_path).rope_theta == 5e5


def test_hf_config_errors(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({**QWEN_CONFIG, "model_type": "gpt2"}))
    with pytest.raises(UnknownChoiceError, match="gpt2"):
        load_hf_config_shape(tmp_path)
    cfg = dict(QWEN_CONFIG)
    del cfg["vocab_size"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="vocab_size"):
        load_hf_config_shape(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_hf_config_shape(tmp_path)
    with pytest.raises(ConfigError, match="no config.json"):
        load_hf_config_shape(tmp_path / "missing")


def write_gguf(path: Path, tied: bool, arch: str = "llama") -> Path:
    """A small real GGUF file (metadata + tiny tensors) written with the gguf package."""
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), arch)
    w.add_block_count(2)
    w.add_context_length(512)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(256)
    w.add_tensor("token_embd.weight", np.zeros((256, 64), dtype=np.float32))
    if not tied:
        w.add_tensor("output.weight", np.zeros((256, 64), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("tied", [True, False])
def test_gguf_metadata_shape(tmp_path: Path, tied: bool) -> None:
    s = load_gguf_shape(write_gguf(tmp_path / "tiny.gguf", tied))
    want = preset("tiny-test")
    assert (s.n_layers, s.hidden, s.n_heads, s.n_kv_heads, s.head_dim, s.intermediate, s.vocab, s.max_ctx) == (
        want.n_layers, want.hidden, want.n_heads, want.n_kv_heads, want.head_dim, want.intermediate, want.vocab,
        want.max_ctx)
    assert s.tied is tied
    assert s.arch == "llama" and s.name == "tiny"


def test_gguf_header_reader_agrees_with_the_gguf_package(tmp_path: Path) -> None:
    from gguf import GGUFReader, GGUFWriter

    path = tmp_path / "kv.gguf"
    w = GGUFWriter(str(path), "qwen2")
    w.add_block_count(3)
    w.add_string("general.name", "kv test")
    w.add_array("tokenizer.ggml.tokens", ["a", "bb", "ccc"])
    w.add_array("some.floats", [1.0, 2.0])
    w.add_bool("some.flag", True)
    w.add_float64("some.f64", 0.25)
    w.add_int64("some.i64", -7)
    w.add_tensor("output.weight", np.zeros((4, 4), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    ours = read_gguf_metadata(path)
    theirs = GGUFReader(str(path))
    for key, fld in theirs.fields.items():
        if key.startswith("GGUF."):
            continue
        want = fld.contents()
        assert (len(ours[key]) == len(want)) if isinstance(want, list) else ours[key] == want, key
    assert ours["_has_output_weight"] is True


def test_gguf_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no GGUF file"):
        load_gguf_shape(tmp_path / "missing.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"this is not a gguf file at all" * 10)
    with pytest.raises(ConfigError, match="not a readable GGUF"):
        load_gguf_shape(bad)
    with pytest.raises(UnknownChoiceError, match="falcon"):
        load_gguf_shape(write_gguf(tmp_path / "falcon.gguf", tied=True, arch="falcon"))


def test_resolve_shape_dispatch(tmp_path: Path) -> None:
    assert resolve_shape("Qwen2.5-7B").name == "qwen2.5-7b"
    (tmp_path / "config.json").write_text(json.dumps(QWEN_CONFIG))
    assert resolve_shape(str(tmp_path)).hidden == 3584
    assert resolve_shape(str(write_gguf(tmp_path / "m.gguf", tied=True))).tied
    with pytest.raises(UnknownChoiceError, match="config.json or model directory"):
        resolve_shape("no-such-model")
