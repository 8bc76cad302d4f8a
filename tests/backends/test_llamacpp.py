"""The llamacpp backend (llama-cpp-python, CPU build): a SYNTHETIC tiny GGUF for the session
mechanics, the embedded SmolLM2 GGUF for kernel correctness against hf-eager on the same
(dequantized) weights. Skips with the reason when the extra is not installed."""

from __future__ import annotations

import importlib.util

import pytest

from edgeprof.errors import BackendUnavailableError, ContextLengthError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed: it is the edgeprof[llamacpp] extra, built from source by "
           "`bash scripts/setup.sh` (skipped with --no-llamacpp)")

PROMPT = list(range(3, 30))


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    from edgeprof import synthetic_gguf
    from edgeprof.shape_loader import load_presets

    return synthetic_gguf.write(load_presets()["tiny-test"], tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def _decoder(path, max_ctx=64):
    from edgeprof.backends.llamacpp import LlamaCppDecoder

    return LlamaCppDecoder(path, "cpu", max_ctx, synthetic=True, n_threads=1)


def _tokens(dec, n=6):
    first = dec.prefill(PROMPT)
    return [first.token_id] + [dec.step().token_id for _ in range(n)]


def test_session_is_deterministic_and_resets(tiny_gguf) -> None:
    dec = _decoder(tiny_gguf)
    a = _tokens(dec)
    assert dec.position == len(PROMPT) + 6
    dec.reset()
    assert dec.position == 0 and _tokens(dec) == a
    assert all(0 <= t < 256 for t in a)
    info = dec.info()
    assert info.backend == "llamacpp" and info.weights == "gguf-q4_0" and info.synthetic
    assert info.resident_weight_bytes > 0 and info.notes["n_gpu_layers"] == 0


def test_steps_are_timed_on_the_host_clock(tiny_gguf) -> None:
    dec = _decoder(tiny_gguf)
    dec.prefill(PROMPT)
    st = dec.time_steps(5)
    assert st.gpu_ms is None and len(st.wall_ms) == 5 and all(w > 0 for w in st.wall_ms)
    assert st.positions == list(range(len(PROMPT), len(PROMPT) + 5))


def test_teacher_forcing_feeds_the_given_token(tiny_gguf) -> None:
    dec = _decoder(tiny_gguf)
    dec.prefill(PROMPT)
    dec.set_next_input(5)
    forced = dec.step().token_id
    forced_logits = dec.last_logits()
    dec.reset()
    dec.prefill(PROMPT + [5])  # the same context through prefill
    assert dec.last_logits().argmax().item() == forced
    assert float((dec.last_logits() - forced_logits).abs().max()) < 1e-3


def test_context_limit(tiny_gguf) -> None:
    dec = _decoder(tiny_gguf, max_ctx=len(PROMPT) + 1)
    dec.prefill(PROMPT)
    dec.step()
    with pytest.raises(ContextLengthError, match="maximum context"):
        dec.step()


def test_a_model_without_gguf_is_refused_with_the_reason() -> None:
    from edgeprof.backends import registry
    from edgeprof.sources import load_model

    with pytest.raises(BackendUnavailableError, match="GGUF"):
        registry.create("llamacpp", load_model("tiny-test", "cpu"), "cpu", 64)


def test_a_bench_cell_on_a_synthetic_preset_runs_its_synthetic_gguf(tmp_path, monkeypatch) -> None:
    """`edgeprof bench --model tiny-test --backend llamacpp`: the preset's SYNTHETIC Q4_0 GGUF (cached),
    loaded as the model too, so kernel correctness compares against that file's dequantized weights."""
    pytest.importorskip("gguf", reason="writing a GGUF needs the gguf package")
    from edgeprof.bench import CellSpec, run_cell

    monkeypatch.setenv("EDGEPROF_CACHE", str(tmp_path))
    rec = run_cell(CellSpec(model="tiny-test", backend="llamacpp", ctx=48, steps=3, warmup=1, device="cpu",
                            quality=False))
    assert rec["status"] == "ok", rec["error"]
    assert rec["model"] == "tiny-test" and rec["synthetic"] and "SYNTHETIC" in rec["model_label"]
    assert rec["kernel_correctness"]["passed"] and rec["weights"] == "gguf-q4_0"
    assert (tmp_path / "gguf" / "tiny-test-synthetic-q4_0.gguf").is_file()


# --- the embedded SmolLM2 GGUF, read directly ------------------------------------------------------
@pytest.fixture(scope="module")
def smollm2():
    from edgeprof.sources import load_model

    return load_model("default", "cpu")


@pytest.fixture(scope="module")
def reference(smollm2):
    from edgeprof import gate

    return gate.reference(smollm2, "cpu")


@pytest.mark.slow
def test_smollm2_gguf_passes_kernel_correctness(smollm2, reference) -> None:
    """llama.cpp on the Q4_1 file vs hf-eager on the same values dequantized to bf16: top-1 agreement,
    teacher-forced, at the gguf bound (edgeprof.gate.DEFAULTS says why it is that)."""
    from edgeprof import embedded, gate
    from edgeprof.backends import registry

    dec = registry.create("llamacpp", smollm2, "cpu", 128)
    assert dec.gguf == embedded.gguf_path()  # the embedded file itself, no conversion
    assert dec.info().weights == "gguf-q4_1"
    c = gate.check(dec, reference, gate.Thresholds.for_weights(dec.info().weights))
    assert c["mode"] == "teacher-forced"
    assert c["passed"], c


@pytest.mark.slow
def test_kernel_correctness_catches_a_broken_llamacpp(smollm2, reference) -> None:
    """A deliberately broken step (feeds the neighbouring token id, as an embedding-lookup bug would)
    must fail the same check."""
    from edgeprof import gate
    from edgeprof.backends.llamacpp import LlamaCppDecoder, gguf_for

    class OffByOne(LlamaCppDecoder):
        def _launch_step(self) -> int:
            self._next = (self._next + 1) % self.n_vocab
            return super()._launch_step()

    dec = OffByOne(gguf_for(smollm2), "cpu", 128, synthetic=False)
    c = gate.check(dec, reference, gate.Thresholds.for_weights(dec.info().weights))
    assert not c["passed"], c
