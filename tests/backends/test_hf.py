"""transformers backends on the CPU; GPU-only ones skip with the registry's reason."""

from __future__ import annotations

import os

import pytest

from edgeprof.backends import registry
from edgeprof.errors import ContextLengthError

PROMPT = list(range(3, 30))


@pytest.fixture(scope="module")
def tiny():
    from edgeprof.sources import load_model

    return load_model("tiny-test", "cpu")


def _tokens(dec, n=6):
    first = dec.prefill(PROMPT)
    return [first.token_id] + [dec.step().token_id for _ in range(n)]


def test_eager_and_static_agree_and_reset(tiny) -> None:
    eager = registry.create("hf-eager", tiny, "cpu", 64)
    static = registry.create("hf-static", tiny, "cpu", 64)
    a, b = _tokens(eager), _tokens(static)
    assert a == b
    static.reset()
    assert static.position == 0 and _tokens(static) == b
    info = static.info()
    assert info.weights == "bf16" and info.synthetic and info.resident_weight_bytes > 0
    assert info.notes["cache"] == "static"


def test_teacher_forcing_changes_the_input(tiny) -> None:
    dec = registry.create("hf-static", tiny, "cpu", 64)
    dec.prefill(PROMPT)
    dec.set_next_input(5)
    forced = dec.step().token_id
    dec.reset()
    dec.prefill(PROMPT + [5])  # same context through prefill
    assert dec.last_logits().argmax().item() == forced


def test_context_limit(tiny) -> None:
    dec = registry.create("hf-static", tiny, "cpu", len(PROMPT) + 1)
    dec.prefill(PROMPT)
    dec.step()
    with pytest.raises(ContextLengthError, match="maximum context"):
        dec.step()


@pytest.mark.parametrize("name", ["hf-graph", "bnb-nf4", "bnb-int8", "torchao-int4", "exllamav2", "exllamav2-forward"])
def test_gpu_backends(name: str) -> None:
    """On a GPU: the backend over tiny-test passes the synthetic-logits gate against hf-eager."""
    import torch

    from edgeprof import gate
    from edgeprof.sources import load_model

    ok, reason = registry.get(name).availability()
    if not ok:
        pytest.skip(f"{name}: {reason}")
    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU (the CPU paths are checked in tests/test_correctness.py)")
    loaded = load_model("tiny-test", "cuda")
    ref = gate.reference(loaded, "cuda", steps=8)
    dec = registry.create(name, loaded, "cuda", 128)
    c = gate.check(dec, ref, gate.Thresholds.for_weights(registry.get(name).weights))
    assert c["passed"], c


@pytest.mark.skipif(os.environ.get("EDGEPROF_TEST_COMPILE") != "1",
                    reason="hf-compile on this 2-core CPU spends ~140 s in torch.compile (Inductor C++); "
                           "set EDGEPROF_TEST_COMPILE=1 to run it")
def test_compile_matches_static_on_cpu(tiny) -> None:
    static = registry.create("hf-static", tiny, "cpu", 64)
    comp = registry.create("hf-compile", tiny, "cpu", 64)
    want = _tokens(static)
    first = comp.prefill(PROMPT)
    capture = comp.warmup()
    assert capture > 0 and comp.position == len(PROMPT)  # compile runs are rewound
    assert [first.token_id] + [comp.step().token_id for _ in range(6)] == want
