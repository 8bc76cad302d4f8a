"""What the GPU, the host CPU and this process were doing: NVML, /proc/cpuinfo, psutil.

Every reader here is best-effort and **never raises**: a failed read gives `None`
(or leaves a field `None`) and is counted in `error_counts()`, because telemetry is
context for a latency figure, never a reason to lose one. NVML is reached through
nvidia-ml-py (`pynvml`); on a machine without the NVIDIA driver `gpu_snapshot()`
returns `None` and nothing is faked.

Fields of `gpu_snapshot()` (NVML units converted to SI-ish ones named in the key):
name, driver, index, sm_clock_mhz, mem_clock_mhz, power_w, energy_j (total since the
driver loaded), temp_c, mem_used_bytes, mem_total_bytes, util_pct,
throttle_reasons {reason: 0|1}. `python -m edgeprof.telemetry` prints all three
snapshots as JSON (handy on a GPU box).
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

# Clock-event ("throttle") reason bits, from nvml.h (nvmlClocksEventReason*). Kept
# here rather than read from pynvml so decoding stays pure and testable on a CPU
# box, and so old pynvml releases (which only had the ThrottleReason names) agree.
CLOCK_EVENT_REASONS: dict[str, int] = {
    "gpu_idle": 0x1,
    "applications_clocks_setting": 0x2,
    "sw_power_cap": 0x4,
    "hw_slowdown": 0x8,
    "sync_boost": 0x10,
    "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40,
    "hw_power_brake_slowdown": 0x80,
    "display_clock_setting": 0x100,
}

_ERRORS: Counter[str] = Counter()
_ERRORS_LOCK = threading.Lock()


def count_error(source: str) -> None:
    """Count one failed telemetry read (`source`: nvml, nvml_timeout, psutil, cpuinfo)."""
    with _ERRORS_LOCK:
        _ERRORS[source] += 1


def error_counts() -> dict[str, int]:
    """Failed telemetry reads so far in this process, by source."""
    with _ERRORS_LOCK:
        return dict(_ERRORS)


def decode_clock_event_reasons(mask: int) -> dict[str, int]:
    """NVML clock-event bit mask -> {reason: 0|1} over every known reason."""
    return {name: int(bool(mask & bit)) for name, bit in CLOCK_EVENT_REASONS.items()}


# ---------------------------------------------------------------- NVML


class _Nvml:
    """Lazy, process-wide NVML session. `unavailable` is sticky: no driver stays no driver."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pynvml: Any = None
        self.unavailable: str | None = None
        self.driver: str | None = None

    def init(self) -> Any:
        with self.lock:
            if self.pynvml is not None or self.unavailable is not None:
                return self.pynvml
            try:
                import pynvml

                pynvml.nvmlInit()
                self.driver = _text(pynvml.nvmlSystemGetDriverVersion())
                self.pynvml = pynvml
            except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, DriverNotLoaded...
                self.unavailable = f"{type(exc).__name__}: {exc}"
            return self.pynvml


_NVML = _Nvml()


def nvml_unavailable_reason() -> str | None:
    """Why NVML cannot be used here (None when it can). Initialises NVML if needed."""
    _NVML.init()
    return _NVML.unavailable


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _device_handle(pynvml: Any, index: int | None) -> tuple[Any, int | None]:
    """The NVML handle of the GPU this process uses.

    NVML ignores CUDA_VISIBLE_DEVICES, so map its first entry (an index or a UUID)
    to NVML's numbering; an explicit `index` wins.
    """
    if index is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        if visible.startswith(("GPU-", "MIG-")):
            return pynvml.nvmlDeviceGetHandleByUUID(visible), None
        index = int(visible) if visible.isdigit() else 0
    return pynvml.nvmlDeviceGetHandleByIndex(index), index


def _field(pynvml: Any, read: Callable[[], Any]) -> Any:
    """One NVML read: NOT_SUPPORTED is a capability (None, not counted); other errors count."""
    try:
        return read()
    except pynvml.NVMLError as exc:
        if getattr(exc, "value", None) != getattr(pynvml, "NVML_ERROR_NOT_SUPPORTED", -1):
            count_error("nvml")
        return None
    except Exception:
        count_error("nvml")
        return None


def _clock_event_mask(pynvml: Any, handle: Any) -> int:
    # Newer drivers/bindings renamed "throttle reasons" to "clock event reasons".
    fn = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or pynvml.nvmlDeviceGetCurrentClocksThrottleReasons
    return int(fn(handle))


def gpu_snapshot(index: int | None = None) -> dict | None:
    """One NVML reading of the GPU in use, or None without NVML/GPU. Never raises."""
    try:
        pynvml = _NVML.init()
        if pynvml is None:
            return None
        handle, idx = _device_handle(pynvml, index)
        f = lambda read: _field(pynvml, read)  # noqa: E731 - keeps the table below readable
        power_mw = f(lambda: pynvml.nvmlDeviceGetPowerUsage(handle))
        energy_mj = f(lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        mem = f(lambda: pynvml.nvmlDeviceGetMemoryInfo(handle))
        util = f(lambda: pynvml.nvmlDeviceGetUtilizationRates(handle))
        mask = f(lambda: _clock_event_mask(pynvml, handle))
        return {
            "name": f(lambda: _text(pynvml.nvmlDeviceGetName(handle))),
            "driver": _NVML.driver,
            "index": idx,
            "sm_clock_mhz": f(lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)),
            "mem_clock_mhz": f(lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM)),
            "power_w": None if power_mw is None else power_mw / 1000.0,
            "energy_j": None if energy_mj is None else energy_mj / 1000.0,
            "temp_c": f(lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
            "mem_used_bytes": None if mem is None else int(mem.used),
            "mem_total_bytes": None if mem is None else int(mem.total),
            "util_pct": None if util is None else float(util.gpu),
            "throttle_reasons": None if mask is None else decode_clock_event_reasons(mask),
        }
    except Exception:
        count_error("nvml")
        return None


class CachedReader:
    """Read something slow (NVML) off the caller's thread, with a deadline and a cache.

    `get()` returns the cached value when it is younger than `max_age_s`; otherwise it
    asks one worker thread for a fresh read and waits at most `timeout_s`. A read that
    overruns is counted (`<source>_timeout`) and the caller gets the last good value
    (or None). Only one read is ever in flight, so a hung driver call costs one stuck
    daemon thread, not one per scrape.
    """

    def __init__(self, read: Callable[[], Any], source: str = "nvml", max_age_s: float = 0.5,
                 timeout_s: float = 1.0) -> None:
        self._read = read
        self._source = source
        self.max_age_s = max_age_s
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._value: Any = None
        self._stamp = float("-inf")
        self._done: threading.Event | None = None  # set when the in-flight read ends

    def _worker(self, done: threading.Event) -> None:
        try:
            value = self._read()
        except Exception:  # the reader should not raise; count it if it does
            count_error(self._source)
            value = None
        with self._lock:
            self._value, self._stamp = value, time.monotonic()
            self._done = None
        done.set()

    def get(self) -> Any:
        with self._lock:
            if time.monotonic() - self._stamp <= self.max_age_s:
                return self._value
            done = self._done
            if done is None:
                done = self._done = threading.Event()
                threading.Thread(target=self._worker, args=(done,), name=f"edgeprof-{self._source}",
                                 daemon=True).start()
        if not done.wait(self.timeout_s):
            count_error(f"{self._source}_timeout")
        with self._lock:
            return self._value


# ---------------------------------------------------------------- host CPU / process


def _cpuinfo_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                # x86: "model name"; many arm64 kernels: "Hardware"/"Model" instead.
                if key.strip() in ("model name", "Hardware", "Model", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return None


def host_cpu() -> dict:
    """The host CPU: model name, logical/physical cores, frequency (MHz), load. Never raises."""
    out: dict[str, Any] = {"model": _cpuinfo_model() or platform.processor() or platform.machine(),
                           "arch": platform.machine(), "logical_cores": os.cpu_count(),
                           "physical_cores": None, "freq_mhz": None, "freq_max_mhz": None, "load_1m": None}
    try:
        import psutil

        out["physical_cores"] = psutil.cpu_count(logical=False)
        freq = psutil.cpu_freq()
        if freq is not None:
            out["freq_mhz"], out["freq_max_mhz"] = float(freq.current), float(freq.max) or None
        out["load_1m"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    except Exception:
        count_error("psutil")
    return out


_PROCESS: Any = None


def process_snapshot() -> dict | None:
    """This process: cpu_seconds (user+system), cpu_percent since the previous call
    (100 = one core), rss_bytes, threads. None if psutil fails. Never raises."""
    global _PROCESS
    try:
        import psutil

        if _PROCESS is None:
            _PROCESS = psutil.Process()
            _PROCESS.cpu_percent(None)  # primes the interval; the first figure is since now
        p = _PROCESS
        with p.oneshot():
            times = p.cpu_times()
            return {"cpu_seconds": float(times.user + times.system), "cpu_percent": float(p.cpu_percent(None)),
                    "rss_bytes": int(p.memory_info().rss), "threads": int(p.num_threads())}
    except Exception:
        count_error("psutil")
        return None


def main() -> int:
    print(json.dumps({"gpu": gpu_snapshot(), "nvml_unavailable": nvml_unavailable_reason(),
                      "host_cpu": host_cpu(), "process": process_snapshot(), "errors": error_counts()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
