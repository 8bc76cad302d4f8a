"""Real GPTQ (edgeprof.quant.gptq4, llmcompressor): the same (q, z, s) every int4 runtime packs from,
lossless through the layouts, and a lower layer-output error than round-to-nearest on the calibration
activations (what GPTQ exists for). Library tests skip with the reason when llmcompressor is absent."""

from __future__ import annotations

import pytest
import torch

from edgeprof.errors import ConfigError
from edgeprof.floor import parse_format
from edgeprof.quant import gptq4
from edgeprof.quant.rtn import dequantize, dequantize_qzs, from_qzs, quantize_qzs, to_qzs

needs_lib = pytest.mark.skipif(not gptq4.available()[0], reason=gptq4.available()[1])


# --- pure: labels, calibration data -----------------------------------------------------------------
def test_labels_name_the_quantizer_and_parse_as_gptq_formats() -> None:
    assert gptq4.label(128) == "gptq4-g128" and gptq4.label(64, actorder=True) == "gptq4ao-g64"
    assert gptq4.parse_label("gptq4-g64") is False and gptq4.parse_label("gptq4ao-g128") is True
    with pytest.raises(ConfigError, match="not a GPTQ label"):
        gptq4.parse_label("rtn4-g128")
    fmt = parse_format("gptq4ao-g64")
    assert fmt.group_size == 64 and fmt.g_idx and "act-order" in fmt.description


def test_calibration_text_never_overlaps_the_held_out_quality_text() -> None:
    from edgeprof.quality import held_text

    calib = {ln.strip() for ln in gptq4.calibration_text().splitlines() if ln.strip()}
    held = held_text()
    assert len(gptq4.calibration_text()) > 5000
    assert not [ln for ln in calib if ln in held], "a calibration paragraph also appears in heldout.txt"


def test_calibration_ids_are_fixed_windows_of_the_text() -> None:
    a = gptq4.calibration_ids(None, 4, 32, vocab=256)
    assert a.shape == (4, 32) and a.dtype == torch.int64 and int(a.max()) < 256
    assert torch.equal(a, gptq4.calibration_ids(None, 4, 32, vocab=256))
    with pytest.raises(ConfigError, match="calibration"):
        gptq4.calibration_ids(None, 0, 32, vocab=256)


# --- with llmcompressor -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    from edgeprof.sources import load_model

    return load_model("tiny-test", "cpu", synthetic=True)


@pytest.fixture(scope="module")
def gptq_tiny(tiny):
    return gptq4.gptq_for(tiny, 64, use_cache=False)


@needs_lib
def test_every_linear_gets_int4_codes_symmetric_zeros_and_exact_scales(tiny, gptq_tiny) -> None:
    names = [n for n, _ in gptq4.quantized_linears(tiny.model)]
    assert sorted(gptq_tiny.tensors) == sorted(names) and len(names) == 14
    for name in names:
        q, z, s = gptq_tiny.qzs(name)
        w = dict(tiny.model.named_modules())[name].weight
        assert q.shape == w.shape and z.shape == s.shape == (w.shape[0], w.shape[1] // 64)
        assert int(q.min()) >= 0 and int(q.max()) <= 15 and bool((z == 8).all())
        assert torch.equal(s.to(torch.bfloat16).float(), s) and torch.equal(s.to(torch.float16).float(), s)
    meta = gptq_tiny.meta
    assert meta["library"] == "llmcompressor" and meta["library_version"] and meta["dampening_frac"] == 0.01
    assert meta["calibration_tokens"] == meta["calibration_samples"] * meta["calibration_seq_len"] > 0


@needs_lib
def test_gptq_tensors_round_trip_through_every_layout(gptq_tiny) -> None:
    from edgeprof.fast.int4 import to_tinygemm, unpack_gptq
    from edgeprof.fast.weights import gemv_error
    from edgeprof.quant.gptq import dequantize_linear, unpack_qweight, unpack_zeros

    for t in gptq_tiny.tensors.values():
        q, z, s = to_qzs(t)
        again = from_qzs(q, z, s, 64)  # output-major triple -> GPTQ v1 tensors: bit-identical
        for k in ("qweight", "qzeros", "scales", "g_idx"):
            assert torch.equal(getattr(again, k), getattr(t, k))
        assert torch.equal(t.g_idx.long(), torch.arange(q.shape[1]) // 64)  # contiguous groups: no act-order g_idx
        assert torch.equal(unpack_qweight(t), q.long())  # the ExLlamaV2 checkpoint's reading
        assert torch.equal(unpack_zeros(t).t(), z.long())
        assert torch.equal(dequantize_linear(t), dequantize_qzs(q, z, s, 64))
        q2, z2, s2 = unpack_gptq(t.qweight, t.qzeros, t.scales)  # edgeprof-fast's reading of the checkpoint
        assert torch.equal(q2, q) and torch.equal(z2, z) and torch.equal(s2, s)
        assert gemv_error(to_tinygemm(q, z, s, 64), q, z, s, 64) < 1e-2  # tinygemm computes these weights


def _calibration_inputs(model, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each block linear's inputs [tokens, K] when the unquantized model runs the calibration ids."""
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = [mod.register_forward_hook(lambda _m, inp, _o, n=name: seen.setdefault(n, []).append(
        inp[0].detach().float().reshape(-1, inp[0].shape[-1]))) for name, mod in gptq4.quantized_linears(model)]
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for h in hooks:
            h.remove()
    return {n: torch.cat(v) for n, v in seen.items()}


@needs_lib
def test_gptq_reconstructs_layer_outputs_better_than_round_to_nearest(tiny, gptq_tiny) -> None:
    ids = gptq4.calibration_ids(tiny.tokenizer, 4, 128, tiny.model.config.vocab_size)
    xs = _calibration_inputs(tiny.model, ids)
    better, err_gptq, err_rtn = 0, 0.0, 0.0
    for name, mod in gptq4.quantized_linears(tiny.model):
        w, x = mod.weight.detach().float(), xs[name]
        ref = x @ w.t()
        e_g = float((x @ dequantize(gptq_tiny.tensors[name]).t() - ref).norm())
        e_r = float((x @ dequantize_qzs(*quantize_qzs(w, 64), 64).t() - ref).norm())
        better += e_g < e_r
        err_gptq, err_rtn = err_gptq + e_g, err_rtn + e_r
    assert err_gptq < 0.9 * err_rtn, (err_gptq, err_rtn)
    assert better >= 12, f"GPTQ beat RTN on only {better} of 14 layers"


@needs_lib
def test_static_act_order_keeps_contiguous_groups_and_changes_the_codes(tiny, gptq_tiny) -> None:
    ao = gptq4.gptq_for(tiny, 64, actorder=True, use_cache=False)
    assert ao.meta["label"] == "gptq4ao-g64" and ao.meta["actorder"] == "static"
    name = "model.layers.0.mlp.down_proj"
    assert torch.equal(ao.tensors[name].g_idx.long(), torch.arange(128) // 64)
    assert not torch.equal(ao.tensors[name].qweight, gptq_tiny.tensors[name].qweight)


@needs_lib
def test_results_are_cached_by_weights_and_settings(tiny, tmp_cache) -> None:
    first = gptq4.gptq_for(tiny, 64)
    again = gptq4.gptq_for(tiny, 64)
    assert "cached" not in first.meta and again.meta["cached"] is True
    for n, t in first.tensors.items():
        assert torch.equal(t.qweight, again.tensors[n].qweight) and torch.equal(t.scales, again.tensors[n].scales)
    assert len(list((tmp_cache / "gptq4").iterdir())) == 1


@needs_lib
def test_fast_int4_on_gptq_weights_passes_correctness_against_its_own_weights_only(tiny, tmp_cache) -> None:
    from edgeprof import correctness
    from edgeprof.backends import registry

    fill = list(range(1, 40))
    own = correctness.reference(tiny, "gptq4-g128", "cpu", fill)
    dec = registry.create("edgeprof-fast-int4-gptq", tiny, "cpu", 64)
    assert dec.info().weights == "gptq4-g64" and own.weights == "gptq4-g64"
    assert dec.info().notes["int4_quantizer"]["library"] == "llmcompressor"
    bound = correctness.bound_for(own.weights)
    assert correctness.check(dec, own, bound)["passed"]
    rtn = correctness.reference(tiny, "rtn4-g128", "cpu", fill)  # other weights: the check must tell them apart
    assert correctness.check(dec, rtn, bound)["value"] > 3 * correctness.check(dec, own, bound)["value"]


@needs_lib
def test_the_gptq_checkpoint_writer_stores_the_gptq_tensors(tiny, gptq_tiny) -> None:
    """The checkpoint ExLlamaV2 loads carries the calibrated tensors bit for bit, and says so."""
    from edgeprof.quant.gptq import _config_json, checkpoint_tensors

    out = checkpoint_tensors(tiny.model, 64, quantized=gptq_tiny)
    for name, t in gptq_tiny.tensors.items():
        for k in ("qweight", "qzeros", "scales", "g_idx"):
            assert torch.equal(out[f"{name}.{k}"], getattr(t, k))
    qc = _config_json(tiny.model, 64, quantized=gptq_tiny)["quantization_config"]
    assert qc["desc_act"] is False and "llmcompressor" in qc["note"] and "GPTQ" in qc["note"]
