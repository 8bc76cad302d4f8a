"""Prometheus metrics: every token against the memory floor, plus what the GPU was doing.

Stats are plain dataclasses (`TokenStats`, `MetricLabels`); `MetricsPublisher` is a
thin adapter that turns them into prometheus-client metrics in its **own**
`CollectorRegistry` (never the global one, so tests and several publishers in one
process don't collide). `DisabledPublisher` has the same API and does nothing, so
callers never branch on "metrics on?".

Hot path vs scrape path. `observe_token` only touches pre-bound metric children and a
deque (a few microseconds; `benchmarks/metrics_overhead.py` measures it). Everything
slow happens at scrape time, in the HTTP server's thread: NVML is read through a
`telemetry.CachedReader` with a deadline, so a hung driver call delays one scrape by
at most `nvml_timeout_s` and never the decode loop; failed reads are counted in
`edgeprof_telemetry_errors_total`, not raised.

Names carry units and counters end in `_total`; labels are bounded to
model, backend, gpu, weights (+ `definition`, `outcome`, `reason`, `source` from fixed
sets). A daemon adds constant identity labels (`robot`, `site`, from its config) to
every sample at scrape time, so one Prometheus can hold a fleet (docs/fleet.md). The
full list with meanings is in docs/metrics.md.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import logging
import platform
import socket
import statistics
import sys
import threading
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from edgeprof import __version__, telemetry
from edgeprof.errors import ConfigError, MetricsError

log = logging.getLogger("edgeprof.metrics")

DEFAULT_HOST = "127.0.0.1"
# Not 9090: rosbridge and Prometheus both default to it. 9464 is the port the
# OpenTelemetry Prometheus exporter uses by convention.
DEFAULT_PORT = 9464

LABELS = ("model", "backend", "gpu", "weights")
OUTCOMES = ("ok", "error", "cancelled", "timeout", "rejected")
FLOOR_DEFINITIONS = ("paper", "touched")
# Extra labels of edgeprof_info (one series per run, so unbounded values are fine there).
INFO_KEYS = ("versions", "floor_ms", "touched_floor_ms", "synthetic", "device")
TELEMETRY_SOURCES = ("nvml", "nvml_timeout", "psutil")
# Constant labels a publisher may add to every sample (values checked by the daemon config).
IDENTITY_LABELS = ("robot", "site")


# Daemon finish reasons and RequestError codes -> outcome. Anything unknown is "error".
_OK_REASONS = frozenset({"ok", "length", "eos", "stop", "max_tokens", "max_new_tokens"})
_CANCELLED_REASONS = frozenset({"cancelled", "canceled", "shutdown"})
_TIMEOUT_REASONS = frozenset({"timeout", "reply_timeout", "deadline"})
_REJECTED_REASONS = frozenset({"rejected", "busy", "request_too_large", "id_too_long", "context_overflow",
                               "no_session"})
_REJECTED_PREFIXES = ("invalid_", "missing_", "duplicate_", "unknown_")


def outcome_of(reason: str | None) -> str:
    """Fold a finish reason or error code into the fixed OUTCOMES set.

    ok: finished normally (length, eos); cancelled: cancel or daemon shutdown; timeout;
    rejected: the request could not be served as sent (bad input, busy, context overflow);
    error: everything else (the daemon's fault, e.g. bridge_lost).
    """
    r = (reason or "").strip().lower()
    if r in _OK_REASONS:
        return "ok"
    if r in _CANCELLED_REASONS:
        return "cancelled"
    if r in _TIMEOUT_REASONS:
        return "timeout"
    if r in _REJECTED_REASONS or r.startswith(_REJECTED_PREFIXES):
        return "rejected"
    return "error"


def _decade(scale: float) -> list[float]:
    # 15 bounds per decade, <= 25 % apart (<= 12 % above 4x): a 3 ms token lands in a
    # bucket 0.5 ms wide, a 60 ms one in a 10 ms wide one.
    return [round(m * scale, 6) for m in (1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7, 8, 9)]


# Per-token wall/GPU time: 0.5 ms .. 1 s, dense between 1 and 100 ms. vLLM's
# inter-token buckets start at 10 ms, useless for a 3 ms batch-1 step.
STEP_BUCKETS: tuple[float, ...] = tuple(
    [0.0005, 0.0006, 0.0007, 0.0008, 0.0009] + _decade(0.001) + _decade(0.01)
    + [0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0])
# Prefill of a long context can take seconds.
TTFT_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
                                   0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
# Handing a token to the bridge should take tens of microseconds.
PUBLISH_BUCKETS: tuple[float, ...] = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                      0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

# Exported series names (histograms and counters by family name). Dashboards may only
# use these; metrics read from NVML or CUDA events exist only on a GPU host.
GPU_METRICS = ("edgeprof_gpu_sm_clock_hertz", "edgeprof_gpu_mem_clock_hertz", "edgeprof_gpu_power_watts",
               "edgeprof_gpu_energy_joules_total", "edgeprof_gpu_temperature_celsius",
               "edgeprof_gpu_memory_used_bytes", "edgeprof_gpu_utilization_ratio",
               "edgeprof_gpu_clock_event_reason", "edgeprof_decode_step_gpu_seconds")
METRIC_NAMES = ("edgeprof_decode_step_seconds", "edgeprof_time_to_first_token_seconds",
                "edgeprof_memory_floor_seconds", "edgeprof_floor_fraction", "edgeprof_tokens_total",
                "edgeprof_requests_total", "edgeprof_deadline_misses_total", "edgeprof_bridge_publish_seconds",
                "edgeprof_telemetry_errors_total", "edgeprof_nvml_up", "edgeprof_process_cpu_seconds_total",
                "edgeprof_process_resident_memory_bytes", "edgeprof_bridge_connected", "edgeprof_info") + GPU_METRICS


def is_gpu_metric(name: str) -> bool:
    """True for series that exist only with NVML / CUDA events (`_bucket` etc. included)."""
    return any(name == m or name.startswith(m + "_") for m in GPU_METRICS)


# ---------------------------------------------------------------- stats (plain data)


@dataclass(frozen=True)
class MetricLabels:
    """The bounded label set every edgeprof series carries."""

    model: str
    backend: str
    gpu: str
    weights: str

    @classmethod
    def of(cls, labels: Mapping[str, Any] | MetricLabels) -> MetricLabels:
        if isinstance(labels, MetricLabels):
            return labels
        extra = set(labels) - set(LABELS)
        if extra:
            raise ConfigError("metrics.labels", f"unknown label(s) {sorted(extra)}; allowed: {', '.join(LABELS)}")
        missing = [k for k in LABELS if not str(labels.get(k) or "").strip()]
        if missing:
            raise ConfigError(f"metrics.labels.{missing[0]}", "missing or empty; every series needs model, backend, gpu, weights")
        return cls(**{k: str(labels[k]) for k in LABELS})

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class TokenStats:
    """One decode step. `fraction` = floor / step time (paper definition), None if unknown."""

    wall_s: float
    gpu_s: float | None = None
    deadline_missed: bool = False
    fraction: float | None = None


# ---------------------------------------------------------------- the registry


def _identity(identity: Mapping[str, Any] | None) -> dict[str, str]:
    from edgeprof.daemon.config import IDENTITY_RE, IDENTITY_RULE

    out = {}
    for key, value in (identity or {}).items():
        if key not in IDENTITY_LABELS:
            raise ConfigError("metrics.identity", f"unknown label {key!r}; allowed: {', '.join(IDENTITY_LABELS)}")
        if value in (None, ""):
            continue  # an unset site: no label at all
        if not IDENTITY_RE.match(str(value)):
            raise ConfigError(f"identity.{key}", f"must be {IDENTITY_RULE}, got {value!r}")
        out[key] = str(value)
    return out


class _IdentityRegistry(CollectorRegistry):
    """A registry that adds constant identity labels to every sample it collects.

    Applied at scrape time, so the hot path and the bound children keep their short
    label sets; the label values are fixed for the process (bounded cardinality)."""

    def __init__(self, identity: Mapping[str, str]) -> None:
        super().__init__(auto_describe=True)
        self.identity = dict(identity)

    def collect(self) -> Iterable[Any]:
        for metric in super().collect():
            if self.identity:  # collectors build fresh Metric objects per scrape: safe to rewrite
                metric.samples = [s._replace(labels={**self.identity, **s.labels}) for s in metric.samples]
            yield metric


class _Families:
    """Metric families of one registry, shared by every publisher (label set) on it."""

    def __init__(self, fraction_window: int, nvml_timeout_s: float, gpu_index: int | None,
                 gpu_read: Callable[[], dict | None] | None = None,
                 identity: Mapping[str, str] | None = None) -> None:
        self.registry = _IdentityRegistry(identity or {})
        r, lab = self.registry, list(LABELS)
        self.ttft = Histogram("edgeprof_time_to_first_token_seconds", "Request received to first token handed over.",
                              lab, buckets=TTFT_BUCKETS, registry=r)
        self.floor = Gauge("edgeprof_memory_floor_seconds", "Analytic memory floor of one step, by definition.",
                           [*lab, "definition"], registry=r)
        self.requests = Counter("edgeprof_requests", "Requests finished, by outcome.", [*lab, "outcome"], registry=r)
        self.healthy = Gauge("edgeprof_healthy", "1 while the daemon serves; 0 after a device failure "
                             "(CUDA out of memory or error) until it is restarted.", lab, registry=r)
        self.fraction_window = fraction_window
        self.publishers: list[MetricsPublisher] = []
        self.lock = threading.Lock()
        read = gpu_read or (lambda: telemetry.gpu_snapshot(gpu_index))
        self.gpu_reader = telemetry.CachedReader(read, "nvml",
                                                 max_age_s=0.5, timeout_s=nvml_timeout_s)
        self.server: Any = None
        self.thread: threading.Thread | None = None
        self.bridge_probe: Callable[[], bool] | None = None  # the daemon's bridge: connected?
        r.register(_ScrapeCollector(self))


def _gauge(name: str, doc: str, labels: Mapping[str, str], value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=list(labels))
    g.add_metric(list(labels.values()), value)
    return g


class _ScrapeCollector(Collector):
    """Series computed when Prometheus scrapes (HTTP server thread, never the decode loop)."""

    def __init__(self, fam: _Families) -> None:
        self.fam = fam

    def describe(self) -> Iterable[Any]:
        return []  # values are only known at scrape time; nothing to pre-register

    def collect(self) -> Iterable[Any]:
        with self.fam.lock:
            pubs = list(self.fam.publishers)
        info = GaugeMetricFamily("edgeprof_info", "Constant 1; labels describe the run.",
                                 labels=[*LABELS, *INFO_KEYS])
        frac = GaugeMetricFamily("edgeprof_floor_fraction",
                                 "Rolling median over recent tokens of floor / step time (paper floor).",
                                 labels=list(LABELS))
        for p in pubs:
            info.add_metric([*p.labels.as_dict().values(), *(p.info.get(k, "") for k in INFO_KEYS)], 1)
            median = p._fraction_median()
            if median is not None:  # no tokens yet: no series, not a fake 0
                frac.add_metric(list(p.labels.as_dict().values()), median)
        yield info
        yield frac
        yield from _token_families(pubs)
        gpu_key = pubs[0].labels.gpu if pubs else "unknown"
        yield from _gpu_families(self.fam.gpu_reader.get(), gpu_key)
        yield from _process_families()
        probe = self.fam.bridge_probe
        if probe is not None:
            try:
                up = 1.0 if probe() else 0.0
            except Exception:  # noqa: BLE001 - a scrape must never fail on the probe
                up = 0.0
            yield _gauge("edgeprof_bridge_connected", "1 while the daemon is connected to rosbridge.", {}, up)
        errors = CounterMetricFamily("edgeprof_telemetry_errors", "Failed telemetry reads (counted, not raised).",
                                     labels=["source"])
        counts = telemetry.error_counts()
        for source in sorted(set(TELEMETRY_SOURCES) | set(counts)):
            errors.add_metric([source], counts.get(source, 0))
        yield errors



class _TokenSeries:
    """Per-token histograms and counters of one label set: bucket counts as plain ints.

    observe() is a bisect and a few integer increments under one uncontended lock;
    the scrape thread copies the lists under the same lock and builds cumulative buckets.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.step = [0] * (len(STEP_BUCKETS) + 1)  # last slot: above the top bound (+Inf only)
        self.step_sum = 0.0
        self.gpu: list[int] | None = None  # created on the first GPU time: no empty GPU histogram on a CPU
        self.gpu_sum = 0.0
        self.publish = [0] * (len(PUBLISH_BUCKETS) + 1)
        self.publish_sum = 0.0
        self.tokens = 0
        self.misses = 0

    def observe(self, wall_s: float, gpu_s: float | None, missed: bool, step: bool = True) -> None:
        i = bisect_left(STEP_BUCKETS, wall_s)  # first bound >= value: Prometheus's `le`
        with self.lock:
            self.tokens += 1
            if missed:
                self.misses += 1
            if not step:  # a request's first token: counted, but its time is TTFT, not a step
                return
            self.step[i] += 1
            self.step_sum += wall_s
            if gpu_s is not None:
                if self.gpu is None:
                    self.gpu = [0] * (len(STEP_BUCKETS) + 1)
                self.gpu[bisect_left(STEP_BUCKETS, gpu_s)] += 1
                self.gpu_sum += gpu_s

    def observe_publish(self, seconds: float) -> None:
        i = bisect_left(PUBLISH_BUCKETS, seconds)
        with self.lock:
            self.publish[i] += 1
            self.publish_sum += seconds

    def snapshot(self) -> dict:
        with self.lock:
            return {"step": (list(self.step), self.step_sum), "publish": (list(self.publish), self.publish_sum),
                    "gpu": None if self.gpu is None else (list(self.gpu), self.gpu_sum),
                    "tokens": self.tokens, "misses": self.misses}


def _buckets(counts: list[int], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    out, total = [], 0
    for bound, c in zip((*bounds, float("inf")), counts, strict=True):
        total += c
        out.append((floatToGoString(bound), total))
    return out


def _token_families(pubs: list[MetricsPublisher]) -> Iterable[Any]:
    step = HistogramMetricFamily("edgeprof_decode_step_seconds",
                                 "Wall time of one decode step (one token): from its launch, or from the previous "
                                 "token's read where it was queued behind it.", labels=list(LABELS))
    gpu = HistogramMetricFamily("edgeprof_decode_step_gpu_seconds", "GPU (CUDA event) time of one decode step.",
                                labels=list(LABELS))
    pub_h = HistogramMetricFamily("edgeprof_bridge_publish_seconds", "Time to hand one token to the ROS bridge.",
                                  labels=list(LABELS))
    tokens = CounterMetricFamily("edgeprof_tokens", "Tokens decoded.", labels=list(LABELS))
    misses = CounterMetricFamily("edgeprof_deadline_misses", "Tokens that missed their deadline.", labels=list(LABELS))
    for p in pubs:
        lv = list(p.labels.as_dict().values())
        snap = p._tok.snapshot()
        step.add_metric(lv, _buckets(snap["step"][0], STEP_BUCKETS), snap["step"][1])
        pub_h.add_metric(lv, _buckets(snap["publish"][0], PUBLISH_BUCKETS), snap["publish"][1])
        if snap["gpu"] is not None:
            gpu.add_metric(lv, _buckets(snap["gpu"][0], STEP_BUCKETS), snap["gpu"][1])
        tokens.add_metric(lv, snap["tokens"])
        misses.add_metric(lv, snap["misses"])
    yield from (step, gpu, pub_h, tokens, misses)


def _gpu_families(snap: dict | None, gpu_key: str) -> Iterable[Any]:
    yield _gauge("edgeprof_nvml_up", "1 when the last NVML reading succeeded.", {"gpu": gpu_key},
                 0.0 if snap is None else 1.0)
    if snap is None:  # no NVML here (or it failed): omit, never fake
        return
    lab = {"gpu": gpu_key}
    scaled = (("edgeprof_gpu_sm_clock_hertz", "SM clock.", "sm_clock_mhz", 1e6),
              ("edgeprof_gpu_mem_clock_hertz", "Memory clock.", "mem_clock_mhz", 1e6),
              ("edgeprof_gpu_power_watts", "Board power draw.", "power_w", 1.0),
              ("edgeprof_gpu_temperature_celsius", "GPU temperature.", "temp_c", 1.0),
              ("edgeprof_gpu_memory_used_bytes", "Device memory in use (all processes).", "mem_used_bytes", 1.0),
              ("edgeprof_gpu_utilization_ratio", "Fraction of time a kernel was running (NVML).", "util_pct", 0.01))
    for name, doc, key, scale in scaled:
        if snap.get(key) is not None:
            yield _gauge(name, doc, lab, float(snap[key]) * scale)
    if snap.get("energy_j") is not None:
        c = CounterMetricFamily("edgeprof_gpu_energy_joules", "Energy since the driver loaded (NVML).", labels=["gpu"])
        c.add_metric([gpu_key], float(snap["energy_j"]))
        yield c
    if snap.get("throttle_reasons") is not None:
        g = GaugeMetricFamily("edgeprof_gpu_clock_event_reason", "1 while NVML reports this clock-event reason.",
                              labels=["gpu", "reason"])
        for reason, on in sorted(snap["throttle_reasons"].items()):
            g.add_metric([gpu_key, reason], float(on))
        yield g


def _process_families() -> Iterable[Any]:
    snap = telemetry.process_snapshot()
    if snap is None:
        return
    c = CounterMetricFamily("edgeprof_process_cpu_seconds", "User+system CPU time of this process (psutil).")
    c.add_metric([], snap["cpu_seconds"])
    yield c
    yield _gauge("edgeprof_process_resident_memory_bytes", "Resident set size of this process (psutil).", {},
                 float(snap["rss_bytes"]))


# ---------------------------------------------------------------- publishers


def _versions() -> str:
    parts = {"edgeprof": __version__, "python": platform.python_version()}
    for mod in ("torch", "transformers"):  # only if already imported: never pay an import here
        if mod in sys.modules:
            parts[mod] = getattr(sys.modules[mod], "__version__", "?")
    return ",".join(f"{k}={v}" for k, v in parts.items())


def _info_values(info: Mapping[str, Any] | None) -> dict[str, str]:
    info = dict(info or {})
    unknown = set(info) - set(INFO_KEYS)
    if unknown:
        raise ConfigError("metrics.info", f"unknown key(s) {sorted(unknown)}; allowed: {', '.join(INFO_KEYS)}")
    versions = info.get("versions") or _versions()
    if isinstance(versions, Mapping):
        versions = ",".join(f"{k}={v}" for k, v in versions.items())
    out = {k: "" if info.get(k) is None else str(info[k]) for k in INFO_KEYS}
    out["versions"] = str(versions)
    return out


class MetricsPublisher:
    """Publishes one run's stats (one label set) to Prometheus.

    >>> pub = MetricsPublisher({"model": "smollm2-135m", "backend": "hf-eager", "gpu": "cpu", "weights": "bf16"})
    >>> port = pub.start_server(port=0)          # 127.0.0.1, a free port
    >>> pub.observe_token(0.021, None, deadline_missed=False, fraction=None)
    """

    enabled = True

    def __init__(self, labels: Mapping[str, Any] | MetricLabels, info: Mapping[str, Any] | None = None, *,
                 fraction_window: int = 64, nvml_timeout_s: float = 1.0, gpu_index: int | None = None,
                 gpu_read: Callable[[], dict | None] | None = None, identity: Mapping[str, Any] | None = None,
                 _families: _Families | None = None) -> None:
        """`gpu_read` replaces `telemetry.gpu_snapshot` as the scrape-time GPU source (same
        dict shape; e.g. a Jetson tegrastats reader). It runs off the hot path with a
        `nvml_timeout_s` deadline like NVML does. `identity` ({"robot": ..., "site": ...})
        is added to every sample of this publisher's registry."""
        if fraction_window < 1:
            raise ConfigError("metrics.fraction_window", f"must be >= 1, got {fraction_window}")
        self.labels = MetricLabels.of(labels)
        self.info = _info_values(info)
        self._fam = _families or _Families(fraction_window, nvml_timeout_s, gpu_index, gpu_read, _identity(identity))
        lv = self.labels.as_dict()
        # Bind children once: `.labels()` per token would cost a dict lookup + lock each.
        f = self._fam
        self._ttft = f.ttft.labels(**lv)
        # Per-token series live in _TokenSeries (plain ints under one lock, exported at scrape
        # time): prometheus-client's Histogram costs ~10 us per observe with 45 buckets.
        self._tok = _TokenSeries()
        self._requests = {o: f.requests.labels(**lv, outcome=o) for o in OUTCOMES}  # all outcomes start at 0
        self._floors = {d: f.floor.labels(**lv, definition=d) for d in FLOOR_DEFINITIONS}
        self._healthy = f.healthy.labels(**lv)
        self._healthy.set(1)
        self._paper_floor_s: float | None = None
        self._fractions: deque[float] = deque(maxlen=f.fraction_window)
        with f.lock:
            f.publishers.append(self)

    # -- server

    @property
    def registry(self) -> CollectorRegistry:
        return self._fam.registry

    @property
    def port(self) -> int | None:
        return None if self._fam.server is None else int(self._fam.server.server_port)

    @property
    def url(self) -> str | None:
        if self._fam.server is None:
            return None
        host = self._fam.server.server_address[0]
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}/metrics"

    def start_server(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, allow_non_loopback: bool = False) -> int:
        """Serve /metrics on host:port (port 0: any free port). Returns the bound port."""
        if self._fam.server is not None:
            raise MetricsError(f"metrics endpoint already running on port {self.port}")
        if not 0 <= int(port) <= 65535:
            raise ConfigError("metrics_port", f"{port} is not a TCP port (0..65535)")
        check_bind_host(host, allow_non_loopback)
        from prometheus_client import start_http_server

        try:
            server, thread = start_http_server(int(port), addr=host, registry=self._fam.registry)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise MetricsError(f"metrics port {port} on {host} is already in use; pick another with "
                                   "--metrics-port (0 = any free port) or stop the process holding it") from None
            if exc.errno == errno.EACCES:
                raise MetricsError(f"metrics port {port} on {host}: permission denied; use a port >= 1024") from None
            raise MetricsError(f"metrics endpoint cannot bind {host}:{port}: {exc.strerror or exc}") from None
        self._fam.server, self._fam.thread = server, thread
        log.info("metrics on %s", self.url)
        return self.port or 0

    def set_bridge_probe(self, probe: Callable[[], bool] | None) -> None:
        """Export `edgeprof_bridge_connected` from `probe()` at scrape time (None: not exported)."""
        self._fam.bridge_probe = probe

    def exposition(self) -> bytes:
        """The text Prometheus would scrape now (tests, debugging)."""
        return generate_latest(self._fam.registry)

    def with_labels(self, labels: Mapping[str, Any] | MetricLabels, info: Mapping[str, Any] | None = None
                    ) -> MetricsPublisher:
        """A publisher for another label set on the same registry and server (sweep cells)."""
        return MetricsPublisher(labels, info, _families=self._fam)

    def close(self) -> None:
        """Stop the HTTP server (idempotent). Observations after close are kept in memory only."""
        server, self._fam.server = self._fam.server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            if self._fam.thread is not None:
                self._fam.thread.join(timeout=5)

    # -- hot path

    def observe_token(self, wall_s: float, gpu_s: float | None = None, deadline_missed: bool = False,
                      fraction: float | None = None, step: bool = True) -> None:
        """One decoded token. Cheap: no I/O, no NVML. `fraction` defaults to paper floor / wall_s.
        `step=False` (a request's first token, produced by the prompt's prefill) counts the token
        and a deadline miss but keeps its time out of the decode-step histograms and fraction."""
        self._tok.observe(wall_s, gpu_s, deadline_missed, step)
        if not step:
            return
        if fraction is None and self._paper_floor_s is not None and wall_s > 0:
            fraction = self._paper_floor_s / wall_s
        if fraction is not None:
            self._fractions.append(fraction)

    def record_token(self, stats: TokenStats) -> None:
        self.observe_token(stats.wall_s, stats.gpu_s, stats.deadline_missed, stats.fraction)

    def observe_ttft(self, seconds: float) -> None:
        self._ttft.observe(seconds)

    def observe_bridge_publish(self, seconds: float) -> None:
        self._tok.observe_publish(seconds)

    def request_done(self, outcome: str) -> None:
        """One finished request. `outcome` is one of OUTCOMES or a daemon finish reason /
        error code, folded into OUTCOMES by `outcome_of` (never raises: the label stays bounded)."""
        self._requests[outcome_of(outcome)].inc()

    def set_healthy(self, healthy: bool) -> None:
        """edgeprof_healthy: 0 once the daemon stops serving after a device failure."""
        self._healthy.set(1 if healthy else 0)

    def set_floor(self, paper_s: float | None, touched_s: float | None = None) -> None:
        """The analytic floor of one step (seconds), both definitions (edgeprof.floor)."""
        for definition, value in (("paper", paper_s), ("touched", touched_s)):
            if value is not None:
                if not value > 0:
                    raise ConfigError(f"floor.{definition}", f"must be > 0 seconds, got {value}")
                self._floors[definition].set(value)
        if paper_s is not None:
            self._paper_floor_s = paper_s
            self.info["floor_ms"] = f"{paper_s * 1e3:.4g}"
        if touched_s is not None:
            self.info["touched_floor_ms"] = f"{touched_s * 1e3:.4g}"

    def _fraction_median(self) -> float | None:
        window = list(self._fractions)  # a C-level copy: atomic under the GIL
        return statistics.median(window) if window else None


class DisabledPublisher:
    """Same API as MetricsPublisher; does nothing (metrics off)."""

    enabled = False
    port = None
    url = None

    def __init__(self, labels: Any = None, info: Any = None, **_: Any) -> None:
        self.labels = labels

    def start_server(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, allow_non_loopback: bool = False) -> int:
        return 0

    def with_labels(self, labels: Any, info: Any = None) -> DisabledPublisher:
        return self

    def observe_token(self, wall_s: float, gpu_s: float | None = None, deadline_missed: bool = False,
                      fraction: float | None = None, step: bool = True) -> None:
        pass

    def record_token(self, stats: TokenStats) -> None:
        pass

    def observe_ttft(self, seconds: float) -> None:
        pass

    def observe_bridge_publish(self, seconds: float) -> None:
        pass

    def request_done(self, outcome: str) -> None:
        pass

    def set_floor(self, paper_s: float | None, touched_s: float | None = None) -> None:
        pass

    def set_healthy(self, healthy: bool) -> None:
        pass

    def set_bridge_probe(self, probe: Any) -> None:
        pass

    def close(self) -> None:
        pass


Publisher = MetricsPublisher | DisabledPublisher


def check_bind_host(host: str, allow_non_loopback: bool) -> None:
    """Refuse a non-loopback bind unless explicitly allowed; warn when it is."""
    if _is_loopback(host):
        return
    if not allow_non_loopback:
        raise MetricsError(f"metrics host {host!r} is not a loopback address and /metrics has no authentication; "
                           "to expose it anyway set allow_non_loopback=True (CLI: --metrics-allow-remote)")
    log.warning("metrics endpoint bound to non-loopback address %s: anyone who can reach it can read run "
                "metadata; put it behind a firewall or a reverse proxy", host)


def _is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        raise ConfigError("metrics_host", f"{host!r} does not resolve; use an IP address such as 127.0.0.1") from None
    return all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


# ---------------------------------------------------------------- wiring for commands


def add_metrics_arguments(parser: argparse.ArgumentParser) -> None:
    """--metrics-port/--metrics-host/--metrics-allow-remote for serve, bench, sweep."""
    g = parser.add_argument_group("metrics")
    g.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help=f"serve Prometheus metrics on this port (0 = any free port; off by default; "
                        f"the daemon's usual port is {DEFAULT_PORT})")
    g.add_argument("--metrics-host", default=DEFAULT_HOST, help="bind address for metrics (default 127.0.0.1)")
    g.add_argument("--metrics-allow-remote", action="store_true",
                   help="allow a non-loopback --metrics-host (the endpoint has no authentication)")


def publisher_from_args(args: argparse.Namespace, labels: Mapping[str, Any] | MetricLabels,
                        info: Mapping[str, Any] | None = None) -> Publisher:
    """A started MetricsPublisher when --metrics-port was given, else a DisabledPublisher."""
    port = getattr(args, "metrics_port", None)
    if port is None:
        return DisabledPublisher(labels, info)
    pub = MetricsPublisher(labels, info)
    try:
        pub.start_server(getattr(args, "metrics_host", DEFAULT_HOST), port,
                         getattr(args, "metrics_allow_remote", False))
    except Exception:
        pub.close()
        raise
    return pub


def observe_bench_record(publisher: Publisher, record: Mapping[str, Any]) -> Publisher:
    """Feed one `bench.run_cell` record (raw per-step ms) into a publisher for its label set.

    Returns the publisher used (a `with_labels` sibling when the record's labels differ),
    so a sweep can call this once per cell against one server.
    """
    if not publisher.enabled or record.get("status") != "ok":
        return publisher
    labels = {"model": record["model"], "backend": record["backend"], "gpu": record.get("gpu") or "cpu",
              "weights": record.get("weights") or "unknown"}
    pub = publisher if publisher.labels.as_dict() == labels else publisher.with_labels(
        labels, {"versions": record.get("versions") or None, "synthetic": record.get("synthetic"),
                 "device": record.get("device")})
    floor = record.get("floor") or {}
    if floor.get("floor_ms"):
        pub.set_floor(floor["floor_ms"] / 1e3, (floor.get("touched_floor_ms") or 0) / 1e3 or None)
    gpu_ms = record.get("gpu_ms") or [None] * len(record.get("wall_ms", []))
    for wall, gpu in zip(record.get("wall_ms", []), gpu_ms, strict=False):
        pub.observe_token(wall / 1e3, None if gpu is None else gpu / 1e3)
    return pub
