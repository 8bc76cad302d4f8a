"""GPTQ v1 packing: round trips, the exact nibble layout ExLlamaV2 reads, and the checkpoint writer."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeprof.errors import ConfigError
from edgeprof.quant.gptq import (
    GPTQTensors,
    dequantize_linear,
    pack_nibbles,
    quantize_int,
    quantize_linear,
    unpack_nibbles,
    unpack_qweight,
    unpack_zeros,
    write_checkpoint,
)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 5), words=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_pack_unpack_round_trip(rows: int, words: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    v = torch.randint(0, 16, (rows, words * 8), generator=g)
    packed = pack_nibbles(v)
    assert packed.dtype == torch.int32 and packed.shape == (rows, words)
    assert torch.equal(unpack_nibbles(packed), v)


def test_nibble_order_is_low_bits_first() -> None:
    v = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 15]])
    word = int(pack_nibbles(v)[0, 0]) & 0xFFFFFFFF
    assert word == 0xF7654321


def test_layout_shapes_and_v1_zeros() -> None:
    w = torch.randn(64, 256) * 0.02  # [out, in]
    t = quantize_linear(w, 128)
    assert t.qweight.shape == (256 // 8, 64) and t.qweight.dtype == torch.int32
    assert t.qzeros.shape == (2, 64 // 8) and t.qzeros.dtype == torch.int32
    assert t.scales.shape == (2, 64) and t.scales.dtype == torch.float16
    assert t.g_idx.tolist() == [i // 128 for i in range(256)]
    # GPTQ v1 stores zero-1 = 7 in every nibble; the kernel adds the 1 back
    assert all((int(x) & 0xFFFFFFFF) == 0x77777777 for x in t.qzeros.flatten())
    assert torch.all(unpack_zeros(t) == 8)


def test_qweight_packs_input_channels() -> None:
    w = torch.randn(16, 64)
    t = quantize_linear(w, 32)
    q, _ = quantize_int(w, 32)
    r, j, o = 3, 5, 7  # nibble j of qweight[r, o] is q[o, 8r + j]
    assert ((int(t.qweight[r, o]) & 0xFFFFFFFF) >> (4 * j)) & 0xF == int(q[o, 8 * r + j])
    assert torch.equal(unpack_qweight(t), q.long())


@pytest.mark.parametrize("group,in_f", [(128, 256), (32, 96), (64, 576)])  # 576: SmolLM2 (g64)
def test_dequantize_is_exact_inverse_and_close(group: int, in_f: int) -> None:
    torch.manual_seed(0)
    w = torch.randn(48, in_f) * 0.02
    t = quantize_linear(w, group)
    q, scales = quantize_int(w, group)
    gi = torch.arange(in_f) // group
    expected = (q.float() - 8) * scales.float()[gi].t()
    assert torch.equal(dequantize_linear(t), expected)
    rel = float((dequantize_linear(t) - w).norm() / w.norm())
    assert 0.0 < rel < 0.15  # 4-bit RTN on Gaussian weights: about 0.1


def test_bad_shapes_are_named() -> None:
    with pytest.raises(ConfigError, match="divisible by 8"):
        quantize_linear(torch.randn(10, 64), 32)
    with pytest.raises(ConfigError, match="2-D"):
        quantize_int(torch.randn(4, 4, 4))


def test_write_checkpoint_qwen2_shapes(tmp_path) -> None:
    from safetensors import safe_open

    from edgeprof.shapes import ModelShape
    from edgeprof.sources import SYNTHETIC_TAG, LoadedModel, build_synthetic

    shape = ModelShape("tiny-qwen", "qwen2", n_layers=2, hidden=128, n_heads=4, n_kv_heads=2, head_dim=32,
                       intermediate=256, vocab=320, qkv_bias=True, tied=False, max_ctx=256, rope_theta=1e6)
    model = build_synthetic(shape, "cpu")
    with torch.no_grad():
        model.model.layers[0].self_attn.k_proj.bias.zero_()  # ExLlamaV2 would drop an all-zero bias
    loaded = LoadedModel(shape, model, None, True, f"tiny-qwen {SYNTHETIC_TAG}", None, "tiny-qwen")
    out = write_checkpoint(loaded, tmp_path / "ckpt", group=64)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForCausalLM"]
    assert cfg["rope_theta"] == 1e6
    assert cfg["quantization_config"] == {**cfg["quantization_config"], "quant_method": "gptq", "bits": 4,
                                          "group_size": 64, "sym": True, "desc_act": False}
    assert not list(tmp_path.glob(".ckpt-*"))  # atomic: no temporary left behind
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        assert "model.layers.0.self_attn.q_proj.weight" not in keys
        assert f.get_tensor("model.layers.0.mlp.down_proj.qweight").shape == (256 // 8, 128)
        assert f.get_tensor("model.layers.0.mlp.down_proj.scales").shape == (256 // 64, 128)
        assert f.get_tensor("model.layers.1.self_attn.k_proj.qzeros").shape == (128 // 64, 64 // 8)
        assert torch.any(f.get_tensor("model.layers.0.self_attn.k_proj.bias") != 0)
        assert f.get_tensor("lm_head.weight").dtype == torch.float16
        # the stored tensors dequantize back to the model's own weight (RTN)
        t = GPTQTensors(*(f.get_tensor(f"model.layers.1.mlp.up_proj.{n}") for n in ("qweight", "qzeros", "scales",
                                                                                      "g_idx")), group=64)
    w = model.model.layers[1].mlp.up_proj.weight.float()
    assert float((dequantize_linear(t) - w).norm() / w.norm()) < 0.15
