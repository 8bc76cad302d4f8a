"""The per-shape choice between cuBLAS and edgeprof's bf16 GEMV (pure; the kernel itself runs on the GPU in
benchmarks/bf16_gemv.py and in the decoder's load check)."""

from __future__ import annotations

import json

import pytest

from edgeprof.fast import bf16cuda


def test_default_is_cublas_without_a_measurement(monkeypatch):
    monkeypatch.delenv(bf16cuda.ENV, raising=False)
    assert bf16cuda.choose(4608, 3584) == "cublas"
    assert bf16cuda.choose(4608, 3584, {(4608, 3584): "r2u8"}) == "r2u8"
    assert bf16cuda.choose(3584, 3584, {(4608, 3584): "r2u8"}) == "cublas"


def test_env_overrides_the_plan(monkeypatch, tmp_path):
    monkeypatch.setenv(bf16cuda.ENV, "cublas")
    assert bf16cuda.choose(4608, 3584, {(4608, 3584): "r2u8"}) == "cublas"
    monkeypatch.setenv(bf16cuda.ENV, "r4u4")
    assert bf16cuda.choose(1, 8) == "r4u4"
    bench = tmp_path / "bf16.json"
    bench.write_text(json.dumps({"faster": [{"n": 3584, "k": 3584, "variant": "r1u8"}]}))
    monkeypatch.setenv(bf16cuda.ENV, str(bench))
    assert bf16cuda.choose(3584, 3584) == "r1u8"
    assert bf16cuda.choose(4608, 3584) == "cublas"


@pytest.mark.parametrize("value", ["fast", "r3u3", "/nonexistent/bf16.json"])
def test_bad_env_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(bf16cuda.ENV, value)
    with pytest.raises(ValueError, match=bf16cuda.ENV):
        bf16cuda.choose(4608, 3584)


def test_shipped_plans_name_compiled_variants():
    from edgeprof.fast import w4cuda
    from edgeprof.fast.plans import card_entries, cards

    for card in cards():
        for e in card_entries(card, "bf16"):
            assert e["variant"] in bf16cuda.VARIANTS and e["k"] % 8 == 0, (card, e)
        for e in card_entries(card, "w4a16"):
            # a decoder variant: a tuning one would build the tuning module and lose the fused norm
            assert e["variant"] in w4cuda.DECODER_VARIANTS, (card, e)
            assert w4cuda.split_plan(e["k"], 128, e["splits"])[0] == e["splits"], (card, e)  # a launchable split
