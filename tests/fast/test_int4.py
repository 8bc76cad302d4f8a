"""Int4 packing: the GPTQ round trip and the kernels' clear refusals (CPU)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from edgeprof.backends import registry  # noqa: E402
from edgeprof.fast.int4 import INT4_KERNELS, dequantize, quantize_rtn, to_gemlite, to_tinygemm  # noqa: E402


def test_rtn_round_trip_is_within_half_a_step():
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(0)) * 0.02
    q, z, s = quantize_rtn(w, 128)
    assert q.min() >= 0 and q.max() <= 15 and bool((z == 8).all())
    err = (dequantize(q, z, s, 128) - w).abs()
    assert bool((err <= s.repeat_interleave(128, dim=1) / 2 + 1e-7).all())


def test_tinygemm_on_cpu_matches_the_dequantized_matrix():
    w = torch.randn(96, 256, generator=torch.Generator().manual_seed(1)) * 0.02
    q, z, s = quantize_rtn(w, 128)
    s = s.to(torch.bfloat16).float()
    x = torch.randn(1, 256, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    got = to_tinygemm(q, z, s, 128)(x).float()
    ref = x.float() @ dequantize(q, z, s, 128).t()
    assert float((got - ref).abs().max() / ref.abs().max()) < 0.02


def test_gemlite_refuses_the_cpu_with_what_to_use_instead():
    q, z, s = quantize_rtn(torch.randn(32, 128), 128)
    with pytest.raises(ValueError, match="CUDA.*edgeprof-fast-int4"):
        to_gemlite(q, z, s, 128)


def test_every_int4_kernel_has_a_registered_backend():
    names = registry.names()
    assert set(INT4_KERNELS) == {"tinygemm", "gemlite", "cuda"}
    assert "edgeprof-fast-int4-cuda" in names
    assert "edgeprof-fast-int4" in names and "edgeprof-fast-int4-gemlite" in names
    ok, why = registry.get("edgeprof-fast-int4-gemlite").availability()
    if not torch.cuda.is_available():
        assert not ok and ("gemlite" in why or "GPU" in why)


def test_load_check_passes_sound_kernels_and_catches_broken_ones() -> None:
    from edgeprof.fast.int4 import INT4_KERNELS, quantize_rtn
    from edgeprof.fast.weights import LOAD_CHECK_BOUND, gemv_error, load_check

    g = torch.Generator().manual_seed(3)
    w = (torch.randn(256, 512, generator=g) * 0.05).to(torch.bfloat16)  # [N, K]
    q, z, s = quantize_rtn(w, 64)
    sound = gemv_error(INT4_KERNELS["tinygemm"](q, z, s, 64), q, z, s, 64)
    swapped = q.view(q.shape[0], -1, 2).flip(-1).reshape(q.shape).contiguous()  # a packing bug
    broken = gemv_error(INT4_KERNELS["tinygemm"](swapped, z, s, 64), q, z, s, 64)
    scaled = gemv_error(INT4_KERNELS["tinygemm"](q, z, s * 1.1, 64), q, z, s, 64)  # a scale bug
    assert sound < LOAD_CHECK_BOUND < scaled < broken
    assert load_check([sound, sound])["passed"] and not load_check([sound, broken])["passed"]
    assert not load_check([])["passed"]  # nothing checked is not a pass
