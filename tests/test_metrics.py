"""edgeprof.metrics: names, buckets, labels, the scrape-time collector, the HTTP endpoint."""

from __future__ import annotations

import argparse
import inspect
import logging
import socket
import threading
import time
import urllib.request

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from edgeprof import metrics, telemetry
from edgeprof.errors import ConfigError, MetricsError
from edgeprof.metrics import (
    OUTCOMES,
    STEP_BUCKETS,
    DisabledPublisher,
    MetricsPublisher,
    TokenStats,
    observe_bench_record,
    outcome_of,
    publisher_from_args,
)

LABELS = {"model": "smollm2-135m", "backend": "hf-eager", "gpu": "cpu", "weights": "bf16"}


def samples(pub: MetricsPublisher) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} from the publisher's exposition text."""
    out = {}
    for fam in text_string_to_metric_families(pub.exposition().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(pub, name, **labels) -> float | None:
    want = {**LABELS, **labels} if not name.startswith(("edgeprof_process", "edgeprof_telemetry", "edgeprof_nvml",
                                                          "edgeprof_gpu")) else labels
    return samples(pub).get((name, tuple(sorted(want.items()))))


def names(pub) -> set[str]:
    return {k[0] for k in samples(pub)}


def test_step_buckets_cover_half_ms_to_one_s_dense_between_1_and_100_ms():
    assert STEP_BUCKETS[0] == 0.0005 and STEP_BUCKETS[-1] == 1.0
    assert list(STEP_BUCKETS) == sorted(set(STEP_BUCKETS))
    dense = [b for b in STEP_BUCKETS if 0.001 <= b <= 0.1]
    assert len(dense) >= 25
    assert max(b / a for a, b in zip(dense, dense[1:], strict=False)) <= 1.25 + 1e-9


def test_token_histogram_counters_and_floor():
    pub = MetricsPublisher(LABELS)
    pub.set_floor(0.002, 0.0015)
    for wall in (0.0031, 0.0032, 0.0045, 0.012):
        pub.observe_token(wall, None, deadline_missed=wall > 0.01)
    assert value(pub, "edgeprof_decode_step_seconds_count") == 4
    assert value(pub, "edgeprof_decode_step_seconds_bucket", le="0.0035") == 2
    assert value(pub, "edgeprof_decode_step_seconds_bucket", le="0.005") == 3
    assert value(pub, "edgeprof_tokens_total") == 4
    assert value(pub, "edgeprof_deadline_misses_total") == 1
    assert value(pub, "edgeprof_memory_floor_seconds", definition="paper") == 0.002
    assert value(pub, "edgeprof_memory_floor_seconds", definition="touched") == 0.0015
    # fraction defaults to paper floor / wall; the gauge is the median of the window
    assert value(pub, "edgeprof_floor_fraction") == pytest.approx((0.002 / 0.0032 + 0.002 / 0.0045) / 2)


def test_no_gpu_histogram_or_fraction_until_there_is_data():
    pub = MetricsPublisher(LABELS)
    assert "edgeprof_floor_fraction" not in names(pub)
    pub.observe_token(0.01)
    assert not any(n.startswith("edgeprof_decode_step_gpu_seconds") for n in names(pub))
    assert "edgeprof_floor_fraction" not in names(pub)  # no floor, no fraction given: none, not 0
    pub.record_token(TokenStats(0.01, gpu_s=0.008, fraction=0.5))
    assert value(pub, "edgeprof_decode_step_gpu_seconds_count") == 1
    assert value(pub, "edgeprof_floor_fraction") == 0.5


def test_fraction_is_a_rolling_median():
    pub = MetricsPublisher(LABELS, fraction_window=3)
    for f in (0.9, 0.9, 0.9, 0.1, 0.2, 0.3):
        pub.observe_token(0.01, fraction=f)
    assert value(pub, "edgeprof_floor_fraction") == 0.2


def test_requests_by_outcome_are_bounded_and_start_at_zero():
    pub = MetricsPublisher(LABELS)
    assert {value(pub, "edgeprof_requests_total", outcome=o) for o in OUTCOMES} == {0.0}
    for reason in ("eos", "length", "busy", "invalid_json", "cancelled", "bridge_lost", "something new"):
        pub.request_done(reason)
    got = {o: value(pub, "edgeprof_requests_total", outcome=o) for o in OUTCOMES}
    assert got == {"ok": 2, "rejected": 2, "cancelled": 1, "error": 2, "timeout": 0}


def test_outcome_of():
    assert outcome_of("eos") == "ok" and outcome_of("shutdown") == "cancelled"
    assert outcome_of("context_overflow") == "rejected" and outcome_of("missing_id") == "rejected"
    assert outcome_of("timeout") == "timeout" and outcome_of(None) == "error"


def test_info_carries_run_description():
    pub = MetricsPublisher(LABELS, {"versions": {"torch": "2.13"}, "synthetic": False, "device": "cpu"})
    pub.set_floor(0.00321, None)
    (info,) = [k for k in samples(pub) if k[0] == "edgeprof_info"]
    lab = dict(info[1])
    assert lab["versions"] == "torch=2.13" and lab["floor_ms"] == "3.21" and lab["synthetic"] == "False"
    assert {k: lab[k] for k in LABELS} == LABELS
    assert samples(pub)[info] == 1


def test_labels_are_validated():
    with pytest.raises(ConfigError, match="metrics.labels.weights"):
        MetricsPublisher({**LABELS, "weights": ""})
    with pytest.raises(ConfigError, match="unknown label"):
        MetricsPublisher({**LABELS, "request_id": "abc"})
    with pytest.raises(ConfigError, match="metrics.info"):
        MetricsPublisher(LABELS, {"prompt": "hello"})
    with pytest.raises(ConfigError, match="floor.paper"):
        MetricsPublisher(LABELS).set_floor(0.0, None)


def test_own_registry_not_the_global_one():
    a, b = MetricsPublisher(LABELS), MetricsPublisher(LABELS)
    a.observe_token(0.01)
    assert value(b, "edgeprof_tokens_total") == 0
    assert REGISTRY.get_sample_value("edgeprof_tokens_total", LABELS) is None


def test_process_and_telemetry_error_series():
    pub = MetricsPublisher(LABELS)
    assert value(pub, "edgeprof_process_resident_memory_bytes") > 1e6
    assert value(pub, "edgeprof_process_cpu_seconds_total") > 0
    assert value(pub, "edgeprof_telemetry_errors_total", source="nvml_timeout") is not None


@pytest.mark.skipif(telemetry.nvml_unavailable_reason() is None, reason="this host has NVML")
def test_gpu_series_absent_without_nvml_not_faked():
    pub = MetricsPublisher(LABELS)
    pub.observe_token(0.01)
    assert value(pub, "edgeprof_nvml_up", gpu="cpu") == 0
    assert not [n for n in names(pub) if n.startswith("edgeprof_gpu_")]


def test_gpu_series_from_a_snapshot_source():
    snap = {"sm_clock_mhz": 1980, "mem_clock_mhz": 2619, "power_w": 312.5, "energy_j": 1.5e6, "temp_c": 61,
            "mem_used_bytes": 2**30, "util_pct": 87.0, "throttle_reasons": telemetry.decode_clock_event_reasons(0x4)}
    pub = MetricsPublisher({**LABELS, "gpu": "h100-sxm"}, gpu_read=lambda: snap)
    g = {"gpu": "h100-sxm"}
    assert value(pub, "edgeprof_gpu_sm_clock_hertz", **g) == 1.98e9
    assert value(pub, "edgeprof_gpu_energy_joules_total", **g) == 1.5e6
    assert value(pub, "edgeprof_gpu_utilization_ratio", **g) == pytest.approx(0.87)
    assert value(pub, "edgeprof_gpu_clock_event_reason", reason="sw_power_cap", **g) == 1
    assert value(pub, "edgeprof_gpu_clock_event_reason", reason="hw_slowdown", **g) == 0
    assert value(pub, "edgeprof_nvml_up", **g) == 1


def test_hung_gpu_read_never_blocks_tokens_and_bounds_the_scrape():
    release = threading.Event()
    pub = MetricsPublisher(LABELS, gpu_read=lambda: release.wait(30) and None, nvml_timeout_s=0.3)
    port = pub.start_server(port=0)
    try:
        t0 = time.monotonic()
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert time.monotonic() - t0 < 3
        assert 'edgeprof_telemetry_errors_total{source="nvml_timeout"}' in body
        # tokens recorded while a scrape is stuck on the GPU read
        stuck = threading.Thread(target=urllib.request.urlopen, args=(pub.url,), kwargs={"timeout": 10})
        stuck.start()
        t1 = time.perf_counter()
        for _ in range(1000):
            pub.observe_token(0.003)
        assert time.perf_counter() - t1 < 0.25  # 1000 tokens, nowhere near the 0.3 s NVML wait
        stuck.join()
        assert value(pub, "edgeprof_tokens_total") == 1000
    finally:
        release.set()
        pub.close()


def test_server_serves_and_closes():
    pub = MetricsPublisher(LABELS)
    port = pub.start_server("127.0.0.1", 0)
    pub.observe_token(0.004)
    body = urllib.request.urlopen(pub.url, timeout=10).read().decode()
    assert "edgeprof_tokens_total" in body and pub.url == f"http://127.0.0.1:{port}/metrics"
    pub.close()
    pub.close()  # idempotent
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_port_in_use_names_the_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(MetricsError, match=f"port {port} .*already in use"):
            MetricsPublisher(LABELS).start_server("127.0.0.1", port)


def test_non_loopback_needs_the_explicit_setting_and_warns(caplog):
    with pytest.raises(MetricsError, match="allow_non_loopback"):
        MetricsPublisher(LABELS).start_server("0.0.0.0", 0)
    pub = MetricsPublisher(LABELS)
    with caplog.at_level(logging.WARNING, logger="edgeprof.metrics"):
        port = pub.start_server("0.0.0.0", 0, allow_non_loopback=True)
    try:
        assert any("non-loopback" in r.message for r in caplog.records)
        assert b"edgeprof_info" in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    finally:
        pub.close()


def test_disabled_publisher_has_the_same_api():
    public = {n for n, v in inspect.getmembers(MetricsPublisher) if callable(v) and not n.startswith("_")}
    public -= {"exposition"}  # debugging aid, only meaningful with a registry
    d = DisabledPublisher(LABELS)
    for name in public:
        assert hasattr(d, name), name
        sig_a = inspect.signature(getattr(MetricsPublisher, name))
        sig_b = inspect.signature(getattr(DisabledPublisher, name))
        assert list(sig_a.parameters) == list(sig_b.parameters), name
    d.observe_token(0.01, None, True, 0.5)
    d.request_done("eos")
    assert d.start_server(port=0) == 0 and d.port is None


def test_publisher_from_args_and_bench_records():
    p = argparse.ArgumentParser()
    metrics.add_metrics_arguments(p)
    assert not publisher_from_args(p.parse_args([]), LABELS).enabled
    pub = publisher_from_args(p.parse_args(["--metrics-port", "0"]), LABELS)
    try:
        assert pub.enabled and pub.port
        record = {"status": "ok", "model": "qwen2.5-7b", "backend": "hf-static", "gpu": "h100-sxm",
                  "weights": "bf16", "wall_ms": [8.1, 8.3, 8.2], "gpu_ms": [8.0, 8.1, 8.0],
                  "floor": {"floor_ms": 4.6, "touched_floor_ms": 4.3}, "synthetic": True, "device": "cuda"}
        cell = observe_bench_record(pub, record)
        assert cell is not pub and cell.labels.model == "qwen2.5-7b"
        s = samples(pub)  # same registry: both label sets are exposed
        key = dict(model="qwen2.5-7b", backend="hf-static", gpu="h100-sxm", weights="bf16")
        assert s[("edgeprof_decode_step_seconds_count", tuple(sorted(key.items())))] == 3
        assert s[("edgeprof_decode_step_gpu_seconds_count", tuple(sorted(key.items())))] == 3
        assert s[("edgeprof_memory_floor_seconds", tuple(sorted({**key, "definition": "paper"}.items())))] == 0.0046
    finally:
        pub.close()


def test_identity_labels_on_every_sample_and_validated():
    pub = MetricsPublisher(LABELS, identity={"robot": "arm-01", "site": "lab.b"})
    pub.set_floor(0.002)
    pub.observe_token(0.003)
    pub.request_done("ok")
    pub.set_bridge_probe(lambda: True)
    fams = list(text_string_to_metric_families(pub.exposition().decode()))
    all_samples = [s for f in fams for s in f.samples]
    assert {f.name for f in fams} >= {"edgeprof_decode_step_seconds", "edgeprof_info", "edgeprof_telemetry_errors",
                                      "edgeprof_process_cpu_seconds", "edgeprof_bridge_connected"}
    # every sample, the prometheus-client families (requests, TTFT) and the scrape-time ones alike
    assert all(s.labels.get("robot") == "arm-01" and s.labels.get("site") == "lab.b" for s in all_samples)
    sibling = pub.with_labels({**LABELS, "backend": "hf-static"})
    sibling.observe_token(0.004)
    assert value(sibling, "edgeprof_tokens_total", backend="hf-static", robot="arm-01", site="lab.b") == 1
    assert MetricsPublisher(LABELS, identity={"robot": "r1", "site": ""}).exposition().count(b'site="') == 0
    with pytest.raises(ConfigError, match="identity.robot"):
        MetricsPublisher(LABELS, identity={"robot": "bad label!"})
    with pytest.raises(ConfigError, match="unknown label 'team'"):
        MetricsPublisher(LABELS, identity={"team": "x"})


def test_bridge_connected_follows_the_probe():
    pub = MetricsPublisher(LABELS)
    assert "edgeprof_bridge_connected" not in names(pub)  # no bridge (bench, sweep): no series
    state = {"up": True}
    pub.set_bridge_probe(lambda: state["up"])
    connected = ("edgeprof_bridge_connected", ())  # one per process: no run labels
    assert samples(pub)[connected] == 1
    state["up"] = False
    assert samples(pub)[connected] == 0
    pub.set_bridge_probe(lambda: 1 / 0)  # a broken probe reads as disconnected, the scrape survives
    assert samples(pub)[connected] == 0
