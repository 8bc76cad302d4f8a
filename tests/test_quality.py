"""edgeprof.quality: the held-out text ships with the package; quality needs real weights."""

from __future__ import annotations

from importlib import resources

import pytest

from edgeprof import quality
from edgeprof.errors import ConfigError
from edgeprof.sources import load_model


def test_held_text_is_package_data_with_its_sources() -> None:
    raw = resources.files("edgeprof").joinpath("data/heldout.txt").read_text(encoding="utf-8")
    header = [ln for ln in raw.splitlines() if ln.startswith("#")]
    assert any("public domain" in ln for ln in header) and any("1776" in ln for ln in header)
    text = quality.held_text()
    assert "#" not in text.splitlines()[0] and len(text.split()) > 2000  # a few thousand tokens


def test_synthetic_weights_are_refused_with_a_reason(tmp_cache) -> None:
    with pytest.raises(ConfigError, match="real weights"):
        quality.measure("hf-eager", "tiny-test", "cpu", 16, loaded_factory=lambda: load_model("tiny-test", "cpu"))


@pytest.mark.slow
def test_quality_of_the_reference_is_perfect_agreement_and_is_cached(tmp_cache) -> None:
    q = quality.measure("hf-eager", "default", "cpu", 24)
    assert q["agreement"] == 1.0 and q["perplexity"] == pytest.approx(q["reference_perplexity"])
    assert 1 < q["perplexity"] < 100 and q["tokens"] == 24 and not q["cached"]
    assert quality.measure("hf-eager", "default", "cpu", 24)["cached"]
