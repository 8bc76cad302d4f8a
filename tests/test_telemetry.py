"""edgeprof.telemetry: NVML decoding, never-raising readers, the deadline/caching reader."""

from __future__ import annotations

import threading
import time

import pynvml
import pytest

from edgeprof import telemetry


def test_clock_event_bits_match_nvml_headers():
    # The names are ours; the bit values must be NVML's (as shipped in nvidia-ml-py).
    nvml_names = {"gpu_idle": "GpuIdle", "applications_clocks_setting": "ApplicationsClocksSetting",
                  "sw_power_cap": "SwPowerCap", "hw_slowdown": "HwSlowdown", "sync_boost": "SyncBoost",
                  "sw_thermal_slowdown": "SwThermalSlowdown", "hw_thermal_slowdown": "HwThermalSlowdown",
                  "hw_power_brake_slowdown": "HwPowerBrakeSlowdown", "display_clock_setting": "DisplayClockSetting"}
    for ours, theirs in nvml_names.items():
        assert telemetry.CLOCK_EVENT_REASONS[ours] == getattr(pynvml, f"nvmlClocksThrottleReason{theirs}")


def test_decode_clock_event_reasons():
    assert set(telemetry.decode_clock_event_reasons(0).values()) == {0}
    on = telemetry.decode_clock_event_reasons(0x4 | 0x40)
    assert {k for k, v in on.items() if v} == {"sw_power_cap", "hw_thermal_slowdown"}
    assert len(on) == len(telemetry.CLOCK_EVENT_REASONS)


def test_gpu_snapshot_is_none_without_nvml_or_complete_with_it():
    snap = telemetry.gpu_snapshot()  # must not raise on any machine
    if telemetry.nvml_unavailable_reason() is not None:
        assert snap is None
    else:
        assert snap is not None
        for key in ("name", "driver", "sm_clock_mhz", "mem_clock_mhz", "power_w", "energy_j", "temp_c",
                    "mem_used_bytes", "util_pct", "throttle_reasons"):
            assert key in snap
        assert snap["sm_clock_mhz"] > 0 and snap["mem_used_bytes"] > 0


def test_host_cpu_and_process():
    cpu = telemetry.host_cpu()
    assert cpu["model"] and cpu["logical_cores"] >= 1
    first = telemetry.process_snapshot()
    t = time.process_time() + 0.05
    while time.process_time() < t:  # burn CPU so the counter must move
        pass
    second = telemetry.process_snapshot()
    assert second["rss_bytes"] > 0
    assert second["cpu_seconds"] >= first["cpu_seconds"] + 0.03


def test_cached_reader_caches_within_max_age():
    calls = []
    reader = telemetry.CachedReader(lambda: calls.append(1) or len(calls), "test", max_age_s=10, timeout_s=1)
    assert reader.get() == 1
    assert reader.get() == 1 and len(calls) == 1


def test_cached_reader_times_out_counts_and_never_piles_up_threads():
    release = threading.Event()
    started = []

    def hung_read():
        started.append(1)
        release.wait(10)
        return {"value": 1}

    reader = telemetry.CachedReader(hung_read, "hungtest", max_age_s=0.0, timeout_s=0.2)
    before = telemetry.error_counts().get("hungtest_timeout", 0)
    t0 = time.monotonic()
    assert reader.get() is None  # no value yet: None, after the deadline, not a hang
    assert reader.get() is None
    assert time.monotonic() - t0 < 2.0
    assert len(started) == 1  # the second get waited on the same in-flight read
    assert telemetry.error_counts()["hungtest_timeout"] == before + 2
    release.set()
    time.sleep(0.1)
    assert reader.get() in ({"value": 1}, None)  # the finished read is now the cached value
    assert reader._value == {"value": 1}


def test_cached_reader_counts_a_raising_reader():
    def boom():
        raise RuntimeError("driver fell over")

    before = telemetry.error_counts().get("boomtest", 0)
    assert telemetry.CachedReader(boom, "boomtest", timeout_s=1).get() is None
    assert telemetry.error_counts()["boomtest"] == before + 1


@pytest.mark.gpu
def test_gpu_snapshot_on_gpu():
    if telemetry.nvml_unavailable_reason() is not None:
        pytest.skip(f"no NVML here: {telemetry.nvml_unavailable_reason()}")
    snap = telemetry.gpu_snapshot()
    assert snap["power_w"] > 0 and snap["energy_j"] > 0 and snap["temp_c"] > 0
    assert set(snap["throttle_reasons"]) == set(telemetry.CLOCK_EVENT_REASONS)
