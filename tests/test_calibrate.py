"""`edgeprof calibrate` for real on this machine's CPU, and the calibrated floor."""

from __future__ import annotations

import json

import pytest

from edgeprof import hardware_loader
from edgeprof.calibrate import calibrate, default_size_mb, llc_bytes
from edgeprof.errors import ConfigError


def test_default_cpu_buffer_is_far_beyond_the_last_level_cache() -> None:
    assert default_size_mb("cpu") * 2**20 >= max(4 * llc_bytes(), 256 * 2**20)
    assert default_size_mb("cuda") >= 1024


def test_calibrate_cpu_measures_and_stores(tmp_cache) -> None:
    result = calibrate("cpu", size_mb=64, repeats=3)
    assert result.device == "cpu" and result.spec_key == "cpu"
    assert len(result.samples_s) == 3 and all(s > 0 for s in result.samples_s)
    # 2 x 64 MiB moved per copy; any real host lies between 0.1 GB/s and 10 TB/s.
    assert 1e8 < result.bytes_per_s < 1e13
    assert result.best_bytes_per_s >= result.bytes_per_s
    assert hardware_loader.calibrated_bandwidth("cpu") == pytest.approx(result.bytes_per_s)


def test_calibrate_bad_input(tmp_cache) -> None:
    with pytest.raises(ConfigError, match="size-mb"):
        calibrate("cpu", size_mb=0)
    with pytest.raises(ConfigError, match="device"):
        calibrate("tpu", size_mb=1)


def test_cli_calibrate_then_calibrated_floor(tmp_cache, run_edgeprof) -> None:
    out = run_edgeprof("calibrate", "--device", "cpu", "--size-mb", "64", "--repeats", "3", "--json")
    assert out.returncode == 0, out.stderr
    measured = json.loads(out.stdout)["bytes_per_s"]
    floor = run_edgeprof("floor", "--model", "smollm2-135m", "--gpu", "cpu", "--ctx", "1024",
                         "--bandwidth", "calibrated", "--json")
    assert floor.returncode == 0, floor.stderr
    rec = json.loads(floor.stdout)
    assert rec["bandwidth"] == "calibrated"
    assert rec["peak_bytes_per_s"] == pytest.approx(measured)
    assert rec["floor_ms"] == pytest.approx(1e3 * rec["paper_bytes"] / measured)
    assert rec["datasheet_bytes_per_s"] == hardware_loader.gpu("cpu").bandwidth_bytes_per_s


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs an NVIDIA GPU with CUDA (none visible here)")
def test_calibrate_cuda_is_a_sane_fraction_of_the_datasheet(tmp_cache) -> None:
    result = calibrate("cuda", size_mb=512, repeats=10)
    assert result.device == "cuda"
    if result.datasheet_bytes_per_s:  # a catalogued GPU: copies reach 50-100% of the peak
        assert 0.5 < result.fraction_of_datasheet < 1.05, result.to_dict()
    assert hardware_loader.calibrated_bandwidth(result.spec_key) == pytest.approx(result.bytes_per_s)
