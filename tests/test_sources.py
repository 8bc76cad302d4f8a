"""Model sources: synthetic presets (shapes, labels, determinism), real SmolLM2, bad specs."""

from __future__ import annotations

import pytest
import torch

from edgeprof.errors import ContextLengthError, ModelLoadError, UnknownChoiceError
from edgeprof.shape_loader import preset, resolve_shape
from edgeprof.sources import SYNTHETIC_TAG, hf_config_for, load_model


@pytest.mark.parametrize("name", ["qwen2.5-7b", "mistral-7b-v0.3", "llama-3.1-8b", "smollm2-135m", "tiny-test"])
def test_configs_have_the_preset_shape(name: str) -> None:
    from edgeprof.shapes import shape_from_hf_config

    shape = preset(name)
    cfg = hf_config_for(shape)
    back = shape_from_hf_config(cfg.to_dict(), name)
    for f in ("arch", "n_layers", "hidden", "n_heads", "n_kv_heads", "head_dim", "intermediate", "vocab",
              "qkv_bias", "tied", "max_ctx", "rope_theta"):
        assert getattr(back, f) == getattr(shape, f), f
    assert getattr(cfg, "sliding_window", None) is None  # full attention everywhere
    if name == "llama-3.1-8b":
        assert cfg.rope_parameters["rope_type"] == "llama3" and cfg.rope_parameters["factor"] == 8.0


def test_synthetic_tiny_is_labelled_and_deterministic() -> None:
    a = load_model("tiny-test", "cpu")
    b = load_model("tiny-test", "cpu")
    assert a.synthetic and SYNTHETIC_TAG in a.label and a.tokenizer is None and a.path is None
    assert a.model.dtype == torch.bfloat16 and a.model.config._attn_implementation == "sdpa"
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    layer = a.model.model.layers[0]
    w = layer.self_attn.q_proj.weight.float()
    assert abs(float(w.std()) - 64 ** -0.5) < 0.01  # N(0, 1/sqrt(fan_in)): hidden 64
    o = layer.self_attn.o_proj.weight.float()  # residual writes: 1/sqrt(fan_in * 2L), L = 2
    assert abs(float(o.std()) - (64 * 4) ** -0.5) < 0.01
    assert torch.all(a.model.model.norm.weight == 1)
    logits = a.model(torch.arange(8).view(1, 8)).logits.float()
    assert float(logits.std()) > 0.05  # not degenerate


def test_max_ctx_and_unknown_model_errors() -> None:
    with pytest.raises(ContextLengthError, match="512"):
        load_model("tiny-test", "cpu", max_ctx=513)
    with pytest.raises(UnknownChoiceError, match="qwen2.5-7b"):
        resolve_shape("no-such-model")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model("/nonexistent/model.gguf", "cpu")
    assert resolve_shape("someorg/some-model") is None  # a hub id: shape known after loading


@pytest.mark.slow
def test_default_is_real_smollm2() -> None:
    loaded = load_model("default", "cpu")
    assert not loaded.synthetic and "real weights" in loaded.label and "SYNTHETIC" not in loaded.label
    assert loaded.tokenizer is not None and loaded.path is not None
    assert (loaded.shape.n_layers, loaded.shape.hidden, loaded.shape.vocab, loaded.shape.tied) == (30, 576, 49152, True)
    ids = loaded.tokenizer("Name three colors.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        nxt = loaded.model(ids).logits[0, -1].argmax()
    assert 0 <= int(nxt) < loaded.shape.vocab
    # a local directory loads the same way, and its shape resolves without loading
    assert resolve_shape(str(loaded.path)).n_layers == 30


def test_synthetic_std_scales_fan_in_and_residual_writes() -> None:
    from edgeprof.sources import synthetic_std

    assert synthetic_std("model.layers.3.mlp.up_proj.weight", 3584, 28) == 3584 ** -0.5
    assert synthetic_std("model.layers.3.mlp.down_proj.weight", 18944, 28) == 18944 ** -0.5 / 56 ** 0.5
    assert synthetic_std("model.layers.0.self_attn.o_proj.weight", 3584, 28) == 3584 ** -0.5 / 56 ** 0.5
    assert synthetic_std("model.embed_tokens.weight", 3584, 28) == 1.0
