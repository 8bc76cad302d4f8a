"""The correctness gate: thresholds, a passing bf16 path, a failing wrong model, real SmolLM2."""

from __future__ import annotations

import pytest

from edgeprof import gate
from edgeprof.errors import ConfigError


@pytest.fixture(scope="module")
def tiny():
    from edgeprof.sources import load_model

    return load_model("tiny-test", "cpu")


def test_thresholds_by_format() -> None:
    assert gate.Thresholds.for_weights("bf16").min_agreement == 0.9
    assert gate.Thresholds.for_weights("nf4").min_agreement < gate.Thresholds.for_weights("int8").min_agreement
    assert gate.Thresholds.for_weights("gptq4-g128").max_logit_error > gate.Thresholds.for_weights("bf16").max_logit_error
    assert gate.Thresholds.for_weights("bf16", min_agreement=0.5).min_agreement == 0.5
    with pytest.raises(ConfigError, match="min-agreement"):
        gate.Thresholds.for_weights("bf16", min_agreement=1.5)


def test_static_path_passes_against_eager(tiny) -> None:
    from edgeprof.backends import registry

    ref = gate.reference(tiny, "cpu", steps=8)
    assert len(ref.tokens) == 8 and tuple(ref.logits.shape) == (8, tiny.shape.vocab)
    dec = registry.create("hf-static", tiny, "cpu", 128)
    c = gate.check(dec, ref, gate.Thresholds.for_weights("bf16"))
    assert c["passed"] and c["synthetic"] and c["mode"] == "teacher-forced"
    assert c["logit_rel_error"]["mean"] < 0.05
    assert dec.position == 0  # left reset for the bench


def test_different_weights_fail(tiny) -> None:
    """A decoder over other weights (another seed) must be flagged: the gate can fail."""
    from edgeprof.backends import registry
    from edgeprof.sources import LoadedModel, build_synthetic

    ref = gate.reference(tiny, "cpu", steps=6)
    other = LoadedModel(tiny.shape, build_synthetic(tiny.shape, "cpu", seed=99), None, True, "other", None, "x")
    dec = registry.create("hf-static", other, "cpu", 128)
    c = gate.check(dec, ref, gate.Thresholds.for_weights("bf16"))
    assert not c["passed"] and c["logit_rel_error"]["mean"] > 0.5


@pytest.mark.slow
def test_real_smollm2_static_agrees() -> None:
    from edgeprof.backends import registry
    from edgeprof.sources import load_model

    loaded = load_model("default", "cpu")
    ref = gate.reference(loaded, "cpu", steps=10)
    dec = registry.create("hf-static", loaded, "cpu", 128)
    c = gate.check(dec, ref, gate.Thresholds.for_weights("bf16"))
    assert not c["synthetic"] and c["rule"].startswith("top-1 agreement")
    assert c["agreement"] >= 0.9 and c["passed"]
