"""Kernel correctness on the CPU: every backend that runs here passes against its own dequantized
weights at positions near ctx, and deliberately broken int4 kernels are caught."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from edgeprof import correctness  # noqa: E402
from edgeprof.backends import registry  # noqa: E402
from edgeprof.bench import fill_tokens  # noqa: E402
from edgeprof.sources import load_model  # noqa: E402

CTX = 96


def cpu_backends() -> list[str]:
    """Every registered backend that can run on this CPU (no GPU needed, packages present)."""
    out = []
    for name, info in registry.BACKENDS.items():
        if info.needs_gpu or info.unavailable_reason:
            continue
        if info.availability()[0]:
            out.append(name)
    return out


def _ref(loaded, weights: str):
    fill = fill_tokens(loaded, correctness.plan_positions(CTX, CTX + 16))
    return correctness.reference(loaded, weights, "cpu", fill)


def test_cpu_backends_include_every_int4_and_bnb_path() -> None:
    names = cpu_backends()
    assert {"hf-eager", "hf-static", "edgeprof-fast", "edgeprof-fast-int4", "torchao-int4"} <= set(names)


@pytest.mark.slow
@pytest.mark.parametrize("name", cpu_backends())
def test_every_cpu_backend_passes_at_ctx(name: str) -> None:
    # llama.cpp reads GGUF files only: it is checked on the embedded SmolLM2 GGUF (real weights)
    gguf = registry.get(name).weights == "gguf"
    loaded = load_model("default" if gguf else "tiny-test", "cpu")
    if gguf:  # reads the file, leaves `loaded` alone: its weights name the file's type, e.g. gguf-q4_1
        dec = registry.create(name, loaded, "cpu", CTX + 16)
        ref = _ref(loaded, dec.info().weights)
    else:  # the reference first: quantising backends replace the loaded weights in place
        ref = _ref(loaded, registry.get(name).weights)
        dec = registry.create(name, loaded, "cpu", CTX + 16)
    c = correctness.check(dec, ref, correctness.bound_for(dec.info().weights))
    assert c["passed"], c
    assert c["value"] <= c["bound"] and c["bound_reason"]
    assert c["positions"] == [CTX - correctness.CHECK_STEPS, CTX - 1]  # the last positions before ctx
    assert c["mode"] == "teacher-forced" and len(c["per_step"]) == correctness.CHECK_STEPS


@pytest.mark.slow
@pytest.mark.parametrize("bug", ["nibbles", "scale"])
def test_a_broken_int4_kernel_is_caught(bug: str) -> None:
    from broken_kernels import BrokenInt4Decoder

    loaded = load_model("tiny-test", "cpu")
    weights = registry.get("edgeprof-fast-int4").weights
    ref = _ref(loaded, weights)
    good = correctness.check(registry.create("edgeprof-fast-int4", loaded, "cpu", CTX + 16), ref,
                             correctness.bound_for(weights))
    bad = correctness.check(BrokenInt4Decoder(loaded, "cpu", CTX + 16, bug), ref, correctness.bound_for(weights))
    assert good["passed"] and not bad["passed"]
    assert bad["value"] > 3 * good["value"]


def test_reference_weights_are_the_backends_dequantized_weights() -> None:
    from edgeprof.quant.rtn import dequantize, model_group, quantize_rtn4

    loaded = load_model("tiny-test", "cpu")
    w = loaded.model.model.layers[0].mlp.down_proj.weight.detach()
    ref = correctness.reference_model(loaded, "rtn4-g128", "cpu")
    got = ref.model.model.layers[0].mlp.down_proj.weight
    assert got.dtype == torch.float32
    assert torch.equal(got, dequantize(quantize_rtn4(w, model_group(loaded.shape))))
    assert torch.equal(loaded.model.model.layers[0].mlp.down_proj.weight, w)  # the original is untouched
    same = correctness.reference_model(loaded, "bf16", "cpu")
    assert torch.equal(same.model.model.layers[0].mlp.down_proj.weight, w.float())


def test_unknown_format_names_the_file_to_extend() -> None:
    from edgeprof.errors import ConfigError

    with pytest.raises(ConfigError, match="correctness.py"):
        correctness.transform_for("exl2-4.65", None)
    with pytest.raises(ConfigError, match="ctx"):
        correctness.plan_positions(4, 100)


def test_gguf_block_formats_round_trip_through_gguf_py() -> None:
    """llama.cpp's formats (the llamacpp backend's weights) get their reference from gguf-py's quantizer."""
    pytest.importorskip("gguf")
    loaded = load_model("tiny-test", "cpu")
    w = loaded.model.model.layers[0].mlp.up_proj.weight.detach()
    err = {}
    assert correctness.transform_for("gguf", loaded) is None  # the model was loaded from that GGUF
    for kind in ("q8_0", "gguf-q4_1"):
        rt = correctness.transform_for(kind, loaded)
        err[kind] = float((rt(w) - w.float()).norm() / w.float().norm())
    assert 0 < err["q8_0"] < err["gguf-q4_1"] < 0.2
