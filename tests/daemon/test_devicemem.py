"""Will the model fit the GPU: the analytic need against free memory (pure; no GPU needed)."""

from __future__ import annotations

import pytest

from edgeprof.daemon.devicemem import check_fits, load_need
from edgeprof.errors import DeviceMemoryError, EdgeprofError
from edgeprof.shape_loader import load_presets

QWEN = load_presets()["qwen2.5-7b"]


def test_kv_need_is_k_and_v_per_layer_for_the_kv_heads_in_bf16():
    # 2 (K, V) x 28 layers x 4 KV heads x 128 dims x 32768 tokens x 2 bytes
    need = load_need(QWEN, 32768, weights=False)
    assert need.weights == 0 and need.kv == 2 * 28 * 4 * 128 * 32768 * 2 == 1_879_048_192


def test_weight_need_is_the_bf16_checkpoint():
    # Qwen2.5-7B has 7.62e9 parameters (public config), 2 bytes each in bf16
    need = load_need(QWEN, 2048)
    assert 7.60e9 * 2 < need.weights < 7.63e9 * 2
    assert need.total == need.weights + need.kv


def test_a_model_too_big_gets_one_line_naming_bytes_needed_and_free():
    need = load_need(QWEN, 32768)
    with pytest.raises(DeviceMemoryError) as info:
        check_fits(need, free=10_000_000_000, total=80_000_000_000, device="cuda:0")
    msg = str(info.value)
    assert "\n" not in msg and isinstance(info.value, EdgeprofError)
    assert f"{need.total:,} bytes" in msg and "10,000,000,000 bytes (10.00 GB) free" in msg
    assert "KV cache 1.88 GB at 32768 tokens" in msg and "--max-ctx" in msg


def test_max_ctx_beyond_memory_after_the_weights_are_loaded():
    need = load_need(QWEN, 32768, weights=False)
    with pytest.raises(DeviceMemoryError, match="KV cache 1.88 GB at 32768 tokens"):
        check_fits(need, free=need.kv - 1, total=80_000_000_000, device="cuda:0")
    check_fits(need, free=need.kv, total=80_000_000_000, device="cuda:0")  # exactly enough: no error


def test_faults_classify_torch_oom_and_cuda_errors_but_not_other_bugs():
    import torch

    from edgeprof.daemon.faults import device_fault_code

    assert device_fault_code(torch.OutOfMemoryError("CUDA out of memory")) == "out_of_memory"
    assert device_fault_code(RuntimeError("CUDA error: device-side assert triggered")) == "device_error"
    assert device_fault_code(RuntimeError("shape mismatch")) is None
    assert device_fault_code(ValueError("CUDA error")) is None
