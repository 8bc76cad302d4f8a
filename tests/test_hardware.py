"""The GPU catalog, NVML name matching, device detection and the calibration cache."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

from edgeprof import hardware, hardware_loader
from edgeprof.errors import ConfigError, UnknownChoiceError

# Datasheet GB/s from the project's reference facts.
REFERENCE_GBS = {
    "l4": 300, "l40s": 864, "a100-sxm": 2039, "a100-pcie": 1935, "h100-sxm": 3350, "h100-pcie": 2000,
    "h200": 4800, "rtx4090": 1008, "orin-agx-64": 204.8, "orin-nx-16": 102.4,
}


def test_catalog_covers_reference_gpus_and_cpu() -> None:
    catalog = hardware_loader.load_catalog()
    for key, gbs in REFERENCE_GBS.items():
        assert catalog[key].bandwidth_gbs == gbs
        assert catalog[key].bandwidth_bytes_per_s == gbs * 1e9
    assert catalog["cpu"].is_cpu and catalog["cpu"].bandwidth_gbs > 0
    assert catalog["orin-agx-64"].unified_memory


@pytest.mark.parametrize(("nvml", "key"), [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"),  # seen on the development machine
    ("NVIDIA H200", "h200"),  # seen on the development machine
    ("NVIDIA L4", "l4"),
    ("NVIDIA L40S", "l40s"),  # contains "L4" but is not an L4
    ("NVIDIA A100-SXM4-80GB", "a100-sxm"),
    ("NVIDIA A100 80GB PCIe", "a100-pcie"),
    ("NVIDIA H100 PCIe", "h100-pcie"),
    ("NVIDIA GeForce RTX 4090", "rtx4090"),
    ("NVIDIA L40", None),  # a different GPU (not catalogued); must not be taken for an L4
    ("Tesla T4", None),
])
def test_nvml_name_matching(nvml: str, key: str | None) -> None:
    spec = hardware.match_nvml_name(nvml, hardware_loader.load_catalog())
    assert (spec.key if spec else None) == key


def test_gpu_lookup_by_key_or_nvml_name() -> None:
    assert hardware_loader.gpu("L4").key == "l4"
    assert hardware_loader.gpu("NVIDIA H100 80GB HBM3").key == "h100-sxm"
    with pytest.raises(UnknownChoiceError) as err:
        hardware_loader.gpu("tpu-v5")
    assert "'tpu-v5'" in str(err.value) and "h100-sxm" in str(err.value)


def test_detect_on_this_machine() -> None:
    found = hardware_loader.detect()
    assert found.device in ("cuda", "cpu")
    if shutil.which("nvidia-smi") is None:
        assert found.device == "cpu" and found.spec.key == "cpu" and found.nvml_name is None
        assert found.name == hardware_loader.cpu_model_name() and found.name


def test_detect_honours_hidden_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert hardware_loader.detect().device == "cpu"


def test_nvml_derived_bandwidth_formula() -> None:
    # bus width x max memory clock x 2 (DDR): H100 SXM 5120 bit x 2619 MHz -> 3352 GB/s
    fake = SimpleNamespace(
        NVML_CLOCK_MEM=2,
        nvmlDeviceGetMemoryBusWidth=lambda h: 5120,
        nvmlDeviceGetMaxClockInfo=lambda h, kind: 2619,
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(total=80e9),
    )
    spec = hardware_loader._nvml_derived_spec(fake, None, "NVIDIA H100 Future")
    assert spec.bandwidth_gbs == pytest.approx(5120 / 8 * 2619e6 * 2 / 1e9)
    assert spec.key == "nvml:NVIDIA H100 Future" and "not in catalog" in spec.name


def test_calibration_cache_roundtrip(tmp_cache) -> None:
    assert hardware_loader.calibrated_bandwidth("cpu") is None
    hardware_loader.save_calibration("cpu", {"bytes_per_s": 12.5e9, "device_name": "test"})
    hardware_loader.save_calibration("l4", {"bytes_per_s": 250e9})
    assert hardware_loader.calibrated_bandwidth("cpu") == 12.5e9
    assert hardware_loader.calibrated_bandwidth("l4") == 250e9
    assert hardware_loader.load_calibrations()["cpu"]["device_name"] == "test"
    with pytest.raises(ConfigError, match="positive"):
        hardware_loader.save_calibration("cpu", {"bytes_per_s": 0})
    hardware_loader.calibration_path().write_text("{corrupt")
    assert hardware_loader.calibrated_bandwidth("cpu") is None
