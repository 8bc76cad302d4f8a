"""The traffic model against hand calculations, and the 7-8B floors against published
parameter counts. Every expected number below is worked out in the comments."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeprof.errors import ConfigError, ContextLengthError, UnknownChoiceError
from edgeprof.floor import compute_floor, format_names, kv_cache_bytes, parse_format, step_traffic
from edgeprof.hardware_loader import gpu
from edgeprof.shape_loader import preset
from edgeprof.shapes import ModelShape

# A small hand-checkable shape: hidden 256, 4 heads of 64 (q_dim 256), 2 KV heads (kv_dim 128),
# MLP 512, vocab 1000, 2 layers. Its linear layers per block:
#   q  [in 256, out 256]  n = 65536        k, v [in 256, out 128]  n = 32768 each
#   o  [in 256, out 256]  n = 65536        gate, up [in 256, out 512]  n = 131072 each
#   down [in 512, out 256] n = 131072
HAND = ModelShape(name="hand", arch="llama", n_layers=2, hidden=256, n_heads=4, n_kv_heads=2, head_dim=64,
                  intermediate=512, vocab=1000, qkv_bias=False, tied=False, max_ctx=4096)
LAYERS = 2
NORMS = 2 * 256 * (2 * LAYERS + 1)  # two RMSNorms per layer + the final one, bf16: 2560
TABLE = 2 * 1000 * 256  # embedding (or lm_head) table in bf16: 512000
ROW = 2 * 256  # one embedding row: 512
KV_100 = 2 * LAYERS * 128 * 100 * 2  # K and V x layers x kv_dim x ctx 100 x 2 B: 102400


def per_layer(q: int, k: int, o: int, gate: int, down: int) -> tuple[int, int]:
    """(attention, mlp) bytes of all layers from the per-matrix bytes (v = k, up = gate)."""
    return LAYERS * (q + 2 * k + o), LAYERS * (2 * gate + down)


# Per-matrix bytes for each format, by hand.
HAND_BYTES = {
    # bf16 / fp16: 2 bytes per element.
    "bf16": per_layer(q=65536 * 2, k=32768 * 2, o=65536 * 2, gate=131072 * 2, down=131072 * 2),
    "fp16": per_layer(q=131072, k=65536, o=131072, gate=262144, down=262144),
    # LLM.int8: 1 byte per element + fp32 absmax per output row.
    #   q: 65536 + 4*256 = 66560; k: 32768 + 4*128 = 33280; gate: 131072 + 4*512 = 133120;
    #   down: 131072 + 4*256 = 132096
    "int8": per_layer(q=66560, k=33280, o=66560, gate=133120, down=132096),
    # NF4/FP4 with double quant: n/2 data + 64 B quant_map + n/64 uint8 absmax
    #   + 4 * ceil(n/64/256) fp32 second-level absmax + 4 B offset + 1024 B nested code table.
    #   n=65536:  32768 + 64 + 1024 + 16 + 4 + 1024 = 34900
    #   n=32768:  16384 + 64 +  512 +  8 + 4 + 1024 = 17996
    #   n=131072: 65536 + 64 + 2048 + 32 + 4 + 1024 = 68708
    "nf4": per_layer(q=34900, k=17996, o=34900, gate=68708, down=68708),
    "fp4": per_layer(q=34900, k=17996, o=34900, gate=68708, down=68708),
    # Without double quant: n/2 + 64 + 4 * n/64 fp32 absmax.
    #   n=65536: 32768 + 64 + 4096 = 36928; n=32768: 16384 + 64 + 2048 = 18496;
    #   n=131072: 65536 + 64 + 8192 = 73792
    "nf4-nodq": per_layer(q=36928, k=18496, o=36928, gate=73792, down=73792),
    "fp4-nodq": per_layer(q=36928, k=18496, o=36928, gate=73792, down=73792),
    # GPTQ g128: qweight in*out/2 + fp16 scales (in/128)*out*2 + int4 zeros (in/128)*(out/8)*4 + g_idx 4*in.
    #   q    [256,256]: 32768 + 2*256*2 (1024) + 2*32*4 (256) + 1024 = 35072
    #   k    [256,128]: 16384 + 2*128*2 (512)  + 2*16*4 (128) + 1024 = 18048
    #   gate [256,512]: 65536 + 2*512*2 (2048) + 2*64*4 (512) + 1024 = 69120
    #   down [512,256]: 65536 + 4*256*2 (2048) + 4*32*4 (512) + 2048 = 70144
    "gptq4-g128": per_layer(q=35072, k=18048, o=35072, gate=69120, down=70144),
    # GPTQ g64: groups double.
    #   q    : 32768 + 4*256*2 (2048) + 4*32*4 (512)  + 1024 = 36352
    #   k    : 16384 + 4*128*2 (1024) + 4*16*4 (256)  + 1024 = 18688
    #   gate : 65536 + 4*512*2 (4096) + 4*64*4 (1024) + 1024 = 71680
    #   down : 65536 + 8*256*2 (4096) + 8*32*4 (1024) + 2048 = 72704
    "gptq4-g64": per_layer(q=36352, k=18688, o=36352, gate=71680, down=72704),
    # AWQ g128: as GPTQ g128 without g_idx.
    #   q: 35072 - 1024 = 34048; k: 18048 - 1024 = 17024; gate: 69120 - 1024 = 68096; down: 70144 - 2048 = 68096
    "awq4": per_layer(q=34048, k=17024, o=34048, gate=68096, down=68096),
    # EXL2 4.65 bits/weight (overheads included in the average): ceil(n * 4.65 / 8).
    #   n=65536: 38092.8 -> 38093; n=32768: 19046.4 -> 19047; n=131072: 76185.6 -> 76186
    "exl2-4.65": per_layer(q=38093, k=19047, o=38093, gate=76186, down=76186),
}


@pytest.mark.parametrize("fmt", sorted(HAND_BYTES))
def test_every_format_against_hand_calculation(fmt: str) -> None:
    attention, mlp = HAND_BYTES[fmt]
    t = step_traffic(HAND, parse_format(fmt), ctx=100)
    assert t.paper["attention"] == attention
    assert t.paper["mlp"] == mlp
    # Unquantized parts stay 16-bit in every format (as real checkpoints keep them).
    assert t.paper["norms"] == NORMS
    assert t.paper["embedding"] == TABLE
    assert t.paper["lm_head"] == TABLE
    assert t.paper["kv_cache"] == KV_100
    assert t.paper_bytes == attention + mlp + NORMS + 2 * TABLE + KV_100
    # Touched: one embedding row instead of the table; blocks, head and KV the same.
    assert t.touched == {**t.paper, "embedding": ROW}
    assert t.touched_bytes == attention + mlp + NORMS + ROW + TABLE + KV_100
    assert t.weight_bytes == attention + mlp + NORMS + 2 * TABLE
    assert t.kv_bytes == KV_100


def test_hand_table_covers_every_documented_format() -> None:
    documented = {"bf16", "fp16", "int8", "nf4", "fp4", "nf4-nodq", "fp4-nodq"}
    assert documented <= set(format_names())
    assert documented <= set(HAND_BYTES)
    for param in ("gptq4-g128", "gptq4-g64", "awq4", "exl2-4.65"):
        assert param in HAND_BYTES


def test_format_spellings() -> None:
    assert parse_format("gptq4").name == "gptq4-g128"
    assert parse_format("GPTQ4-G64").group_size == 64
    assert parse_format("awq4").g_idx is False
    assert parse_format("gptq4").g_idx is True
    assert parse_format("exl2-4.65").bits == 4.65
    assert parse_format("nf4").double_quant and not parse_format("nf4-nodq").double_quant


@pytest.mark.parametrize("bad", ["q4_k_m", "int3", "exl2-0.5", "exl2-20", "gptq4-g0", ""])
def test_bad_formats_raise_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_format(bad)
    if isinstance(err.value, UnknownChoiceError):
        assert "bf16" in str(err.value)  # lists the valid choices


def test_tied_vs_untied_under_both_definitions() -> None:
    tied = dataclasses.replace(HAND, tied=True)
    t = step_traffic(tied, parse_format("bf16"), ctx=100)
    # Paper: the one shared table counted once (as the embedding), no separate head.
    assert t.paper["embedding"] == TABLE and t.paper["lm_head"] == 0
    # Touched: one row gathered + the shared table read once as the head.
    assert t.touched["embedding"] == ROW and t.touched["lm_head"] == TABLE
    untied = step_traffic(HAND, parse_format("bf16"), ctx=100)
    assert untied.paper_bytes - t.paper_bytes == TABLE  # the untied model stores one more table
    assert untied.touched_bytes == t.touched_bytes  # ...but one step reads the same bytes


def test_gqa_vs_mha_kv_cache() -> None:
    # GQA (2 KV heads of 64): 2 (K,V) x 2 layers x 128 x 100 tokens x 2 B = 102400
    assert kv_cache_bytes(HAND, 100) == 102400
    # MHA (4 KV heads of 64 = kv_dim 256): twice that
    mha = dataclasses.replace(HAND, n_kv_heads=4)
    assert kv_cache_bytes(mha, 100) == 2 * 2 * 256 * 100 * 2 == 204800
    assert step_traffic(mha, parse_format("bf16"), 100).paper["kv_cache"] == 204800
    # MHA's k/v projections are also wider: [256, 256] instead of [256, 128], 2 B each
    gqa_attn = step_traffic(HAND, parse_format("bf16"), 100).paper["attention"]
    mha_attn = step_traffic(mha, parse_format("bf16"), 100).paper["attention"]
    assert mha_attn - gqa_attn == LAYERS * 2 * (65536 - 32768) * 2
    # An fp8 cache halves the KV bytes.
    assert kv_cache_bytes(HAND, 100, kv_bytes_per_elem=1) == 51200


def test_qkv_bias_is_counted_in_16_bit() -> None:
    biased = dataclasses.replace(HAND, qkv_bias=True)
    for fmt in ("bf16", "gptq4", "nf4"):
        plain = step_traffic(HAND, parse_format(fmt), 10).paper["attention"]
        with_bias = step_traffic(biased, parse_format(fmt), 10).paper["attention"]
        assert with_bias - plain == LAYERS * 2 * (256 + 128 + 128)  # q, k, v biases, bf16


def test_both_floor_definitions_and_fractions() -> None:
    f = compute_floor(HAND, parse_format("bf16"), 100, bandwidth_bytes_per_s=1e9, measured_ms=4.0)
    paper = 786432 + 1572864 + NORMS + 2 * TABLE + KV_100  # 3488256 bytes
    touched = 786432 + 1572864 + NORMS + ROW + TABLE + KV_100  # 2976768 bytes
    assert f.traffic.paper_bytes == paper == 3488256
    assert f.traffic.touched_bytes == touched == 2976768
    assert f.floor_ms == pytest.approx(3.488256)  # bytes / 1e9 B/s, in ms
    assert f.touched_floor_ms == pytest.approx(2.976768)
    assert f.fraction == pytest.approx(3.488256 / 4.0)
    assert f.touched_fraction == pytest.approx(2.976768 / 4.0)
    d = f.to_dict()
    for key in ("model", "weights", "ctx", "weight_bytes", "kv_bytes", "peak_bytes_per_s", "floor_ms",
                "touched_floor_ms", "fraction", "touched_fraction"):
        assert key in d
    assert "fraction" not in compute_floor(HAND, parse_format("bf16"), 100, 1e9).to_dict()


def test_bad_ctx_bandwidth_and_time() -> None:
    fmt = parse_format("bf16")
    with pytest.raises(ContextLengthError, match="positive"):
        step_traffic(HAND, fmt, 0)
    with pytest.raises(ContextLengthError, match="4096"):
        step_traffic(HAND, fmt, 4097)
    with pytest.raises(ConfigError, match="bandwidth"):
        compute_floor(HAND, fmt, 10, 0)
    with pytest.raises(ConfigError, match="measured-ms"):
        compute_floor(HAND, fmt, 10, 1e9, measured_ms=-1)


# ---------------------------------------------------------------------------
# The three 7-8B models against an independent calculation: published parameter
# counts (Hugging Face safetensors metadata) x 2 bytes, plus the KV cache.
#
# Qwen2.5-7B, 7,615,616,512 params, by hand:
#   per layer: q 3584*3584 + 3584 bias = 12,848,640; k, v 3584*512 + 512 = 1,835,520 each;
#              o 12,845,056; MLP 3 * 3584*18944 = 203,685,888; 2 norms 7,168  -> 233,057,792
#   28 layers = 6,525,618,176; + embedding & lm_head 2 * 152064*3584 = 1,089,994,752; + final norm 3,584
#   = 7,615,616,512  (matches the published count)
# Mistral-7B-v0.3: 7,248,023,552 params.  Llama-3.1-8B: 8,030,261,248 params.
PUBLISHED = {
    # name: (params, layers, kv_heads * head_dim, vocab, hidden)
    "qwen2.5-7b": (7_615_616_512, 28, 4 * 128, 152064, 3584),
    "mistral-7b-v0.3": (7_248_023_552, 32, 8 * 128, 32768, 4096),
    "llama-3.1-8b": (8_030_261_248, 32, 8 * 128, 128256, 4096),
}
BANDWIDTH = {"l4": 300e9, "h100-sxm": 3350e9}


@pytest.mark.parametrize("model", sorted(PUBLISHED))
@pytest.mark.parametrize("ctx", [2048, 16384])
@pytest.mark.parametrize("gpu_key", sorted(BANDWIDTH))
def test_7_8b_floors_match_independent_calculation(model: str, ctx: int, gpu_key: str) -> None:
    params, layers, kv_dim, vocab, hidden = PUBLISHED[model]
    kv = 2 * layers * kv_dim * ctx * 2  # K and V, bf16
    paper_bytes = 2 * params + kv
    # Touched: the (untied) input table is replaced by one of its rows.
    touched_bytes = paper_bytes - 2 * vocab * hidden + 2 * hidden
    f = compute_floor(preset(model), parse_format("bf16"), ctx, gpu(gpu_key).bandwidth_bytes_per_s)
    assert f.traffic.paper_bytes == paper_bytes
    assert f.traffic.touched_bytes == touched_bytes
    assert f.floor_ms == pytest.approx(1e3 * paper_bytes / BANDWIDTH[gpu_key], rel=1e-12)
    assert f.touched_floor_ms == pytest.approx(1e3 * touched_bytes / BANDWIDTH[gpu_key], rel=1e-12)


def test_paper_headline_cells() -> None:
    qwen = preset("qwen2.5-7b")
    # L4, ctx 2048, 62.32 ms measured: (15,231,233,024 + 117,440,512) B / 300e9 B/s = 51.162 ms -> 0.821
    l4 = compute_floor(qwen, parse_format("bf16"), 2048, gpu("l4").bandwidth_bytes_per_s, measured_ms=62.32)
    assert l4.floor_ms == pytest.approx(15_348_673_536 / 300e9 * 1e3)
    assert l4.fraction == pytest.approx(0.821, abs=0.001)
    # H200 reference: bf16 floor 3.20 ms, GPTQ 4-bit g128 about 1.19 ms.
    h200 = gpu("h200").bandwidth_bytes_per_s
    assert compute_floor(qwen, parse_format("bf16"), 2048, h200).floor_ms == pytest.approx(3.20, abs=0.005)
    assert compute_floor(qwen, parse_format("gptq4-g128"), 2048, h200).floor_ms == pytest.approx(1.19, abs=0.01)


# ---------------------------------------------------------------------------
# Properties over random shapes (hypothesis): the relations between the groups.

FORMATS = ["bf16", "int8", "nf4", "nf4-nodq", "gptq4-g128", "gptq4-g64", "awq4", "exl2-4.65"]


@st.composite
def shapes(draw) -> ModelShape:
    head_dim = draw(st.sampled_from([64, 128]))
    n_kv = draw(st.integers(1, 8))
    n_heads = n_kv * draw(st.integers(1, 8))
    return ModelShape(name="h", arch="llama", n_layers=draw(st.integers(1, 80)), hidden=128 * draw(st.integers(1, 64)),
                      n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim,
                      intermediate=128 * draw(st.integers(1, 200)), vocab=draw(st.integers(1000, 200_000)),
                      qkv_bias=draw(st.booleans()), tied=draw(st.booleans()), max_ctx=1 << 20)


@settings(max_examples=60, deadline=None)
@given(shape=shapes(), fmt=st.sampled_from(FORMATS), ctx=st.integers(1, 1 << 17))
def test_definitions_relate_as_documented(shape: ModelShape, fmt: str, ctx: int) -> None:
    t = step_traffic(shape, parse_format(fmt), ctx)
    table, row = 2 * shape.vocab * shape.hidden, 2 * shape.hidden
    if shape.tied:  # the shared table is counted once by both; touched adds the gathered row
        assert t.touched_bytes == t.paper_bytes + row
    else:  # touched drops the input table, keeps one of its rows
        assert t.touched_bytes == t.paper_bytes - table + row
    # KV is linear in ctx and the only ctx-dependent group.
    t2 = step_traffic(shape, parse_format(fmt), 2 * ctx) if 2 * ctx <= shape.max_ctx else None
    if t2 is not None:
        assert t2.kv_bytes == 2 * t.kv_bytes and t2.weight_bytes == t.weight_bytes


@settings(max_examples=40, deadline=None)
@given(shape=shapes())
def test_fewer_bits_never_read_more(shape: ModelShape) -> None:
    blocks = {f: sum(step_traffic(shape, parse_format(f), 1).paper[g] for g in ("attention", "mlp"))
              for f in ("bf16", "int8", "nf4", "gptq4-g128", "awq4")}
    assert blocks["bf16"] > blocks["int8"] > max(blocks["nf4"], blocks["gptq4-g128"])
    assert blocks["gptq4-g128"] > blocks["awq4"]  # g_idx costs 4 B per input channel


def test_gguf_block_formats_by_hand() -> None:
    """GGUF blocks: Q4_0 = 32 weights in 16 B of nibbles + an fp16 scale (18 B); Q4_1 adds an fp16 min (20 B);
    Q8_0 = 32 B + scale (34 B)."""
    from edgeprof.errors import ConfigError, UnknownChoiceError
    from edgeprof.floor import parse_format

    assert parse_format("gguf-q4_0").linear_bytes(576, 1536) == 576 * 1536 // 32 * 18
    assert parse_format("gguf-q4_1").linear_bytes(576, 1536) == 576 * 1536 // 32 * 20
    assert parse_format("GGUF-Q8_0").linear_bytes(64, 64) == 64 * 64 // 32 * 34
    assert parse_format("gguf-f16").linear_bytes(64, 64) == 64 * 64 * 2
    assert parse_format("gguf").kind == "gguf"  # the registry's label: no size until the file says its type
    with pytest.raises(ConfigError, match="gguf-q4_1"):
        parse_format("gguf").linear_bytes(64, 64)
    with pytest.raises(UnknownChoiceError, match="gguf-q4_0"):
        parse_format("gguf-q3_xs")
