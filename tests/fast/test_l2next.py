"""The attention's L2 prefetch of later weights: spec parsing and ranges (pure), and the decoder's record on the
CPU, where nothing prefetches."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgeprof.fast import l2next

CSRC = Path(l2next.__file__).parent / "csrc"


def test_parse_items_and_combinations():
    assert l2next.parse("none").empty and l2next.parse("").label() == l2next.DEFAULT
    spec = l2next.parse("o, gu:8,lines")
    assert (spec.o, spec.gate_up_tiles, spec.lines) == (True, 8, True)
    assert spec.label() == "o,gu:8,lines"
    assert l2next.parse("gu:16").label() == "gu:16"


@pytest.mark.parametrize("bad", ["gu:0", "gu:x", "up", "o;gu:8"])
def test_parse_rejects_with_the_variable_named(bad):
    with pytest.raises(ValueError, match=r"EDGEPROF_ATTN_L2: .* unset it"):
        l2next.parse(bad)


def test_parse_reads_the_environment(monkeypatch):
    monkeypatch.setenv(l2next.ENV, "o")
    assert l2next.parse().o
    monkeypatch.delenv(l2next.ENV)
    assert l2next.parse().empty


def test_whole_buffer_pieces_by_hand():
    # Qwen2.5-7B o at int4: 3584 x 3584 / 2 = 6,422,528 bytes = 392 pieces of 16 KiB exactly
    assert l2next.whole(4096, 6_422_528, 16 << 10) == (4096, 16384, 392, 16384, 16384)
    # 40,000 bytes in 16 KiB pieces: 2 whole ones and 7232 left
    assert l2next.whole(0, 40_000, 16 << 10) == (0, 16384, 3, 16384, 40_000 - 2 * 16384)


def test_row_block_ranges_by_hand():
    # gate_up 3584 -> 37888: 2368 row blocks of 56 tiles (28,672 bytes); the first 8 tiles are 4096 bytes
    assert l2next.row_block_ranges(1 << 20, 37888, 3584, 8) == (1 << 20, 28672, 2368, 4096, 4096)
    assert l2next.row_block_ranges(0, 32, 128, 99)[3] == 2 * 512  # never past a row block's own tiles


def test_misaligned_ranges_are_refused():
    with pytest.raises(ValueError, match="16-byte"):
        l2next.whole(8, 4096, 1024)
    with pytest.raises(ValueError, match="16-byte"):
        l2next.strided(0, 4, 1000, 512)


def test_layer_ranges_skip_what_is_not_edgeprofs_int4():
    flat, why = l2next.layer_ranges(l2next.parse("o,gu:8"), object(), object())
    assert flat == [] and "o is not" in why and "gate_up is not" in why


def test_range_limit_matches_the_kernel():
    src = (CSRC / "attn_decode.cu").read_text()
    assert int(re.search(r"constexpr int kL2Ranges = (\d+);", src).group(1)) == l2next.MAX_RANGES
    # "o" takes two ranges (weights, scales) and "gu:T" one: every spec fits
    assert l2next.MAX_RANGES >= 2 + 1


def test_cpu_decoder_records_that_nothing_prefetches(monkeypatch):
    pytest.importorskip("torch")
    from edgeprof.backends import registry
    from edgeprof.sources import load_model

    monkeypatch.setenv(l2next.ENV, "o")
    dec = registry.create("edgeprof-fast-int4", load_model("tiny-test", "cpu"), device="cpu", max_ctx=32)
    note = dec.info().notes["attn_l2_prefetch"]
    assert note.startswith("none (o asked")
    assert all(r == [] for r in dec.model.l2)
    dec.prefill([1, 2, 3])
    dec.step()  # the step passes each layer's (empty) ranges through TorchOps
