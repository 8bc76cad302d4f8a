"""The generated Grafana dashboard, its provisioning files and the PromQL helpers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from edgeprof import dashboards
from edgeprof.metrics import DEFAULT_PORT, METRIC_NAMES, is_gpu_metric
from edgeprof.paths import REPO_ROOT

DASH_DIR = REPO_ROOT / "dashboards"


def committed() -> dict:
    return json.loads(dashboards.DASHBOARD_PATH.read_text())


def test_committed_json_equals_generated():
    pytest.importorskip("grafana_foundation_sdk", reason="pip install 'edgeprof[dashboards]'")
    assert dashboards.DASHBOARD_PATH.read_text() == dashboards.render(), \
        "dashboards/edgeprof.json is stale: run python -m edgeprof.dashboards --write"


def test_every_expression_reads_only_exported_metrics():
    exprs = dashboards.expressions(committed())
    assert len(exprs) >= 25
    for panel, _ref, expr in exprs:
        if expr == dashboards.ALERTS_EXPR:  # Prometheus's own series of firing alerts
            continue
        used = dashboards.metric_names(expr)
        assert used, (panel, expr)
        assert used <= set(METRIC_NAMES), (panel, used - set(METRIC_NAMES))


def test_required_panels_are_present():
    titles = " | ".join(p.get("title", "") for p in committed()["panels"]).lower()
    for word in ("p50/p90/p99 vs memory floor", "fraction of floor", "jitter", "deadline", "time to first token",
                 "tokens/s", "sm clock", "throttle", "power and joules per token", "process cpu", "process rss"):
        assert word in titles, word
    floor_panel = next(p for p in committed()["panels"] if p.get("title") == "Token latency p50/p90/p99 vs memory floor")
    exprs = [t["expr"] for t in floor_panel["targets"]]
    assert any("histogram_quantile(0.99" in e for e in exprs)
    assert any('definition="paper"' in e for e in exprs)


def test_gpu_panel_sits_beside_latency():
    # the clock-vs-latency panel plots both, so a throttling episode lines up with its latency
    p = next(p for p in committed()["panels"] if p.get("title") == "Latency p99 beside SM clock")
    used = set().union(*(dashboards.metric_names(t["expr"]) for t in p["targets"]))
    assert {"edgeprof_decode_step_seconds", "edgeprof_gpu_sm_clock_hertz"} <= used


def test_substitute_leaves_no_template_variables():
    for _panel, _ref, expr in dashboards.expressions(committed()):
        q = dashboards.substitute(expr, "2m", {"model": "smollm2-135m"})
        assert "$" not in q and "[[" not in q
    assert dashboards.substitute('x{model=~"$model"}[$__rate_interval]', "1m") == 'x{model=~".*"}[1m]'
    assert dashboards.substitute('x{m=~"${model}"}', "1m", {"model": "a"}) == 'x{m=~"a"}'


def test_metric_names_folds_histogram_series():
    assert dashboards.metric_names("rate(edgeprof_decode_step_seconds_bucket[1m])") == {"edgeprof_decode_step_seconds"}
    assert dashboards.metric_names("edgeprof_process_cpu_seconds_total") == {"edgeprof_process_cpu_seconds_total"}
    assert is_gpu_metric("edgeprof_decode_step_gpu_seconds") and is_gpu_metric("edgeprof_gpu_power_watts")
    assert not is_gpu_metric("edgeprof_decode_step_seconds")


def test_provisioning_points_at_each_other():
    ds = yaml.safe_load((DASH_DIR / "provisioning/datasources/prometheus.yaml").read_text())["datasources"][0]
    prov = yaml.safe_load((DASH_DIR / "provisioning/dashboards/edgeprof.yaml").read_text())["providers"][0]
    prom = yaml.safe_load((DASH_DIR / "prometheus.yml").read_text())
    assert ds["type"] == "prometheus" and ds["isDefault"] is True
    assert prov["type"] == "file" and prov["options"]["path"]
    targets = prom["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"127.0.0.1:{DEFAULT_PORT}"]
    assert not ds["url"].endswith(":9090"), "Prometheus must not sit on rosbridge's port"
    dash = committed()
    assert {v["name"] for v in dash["templating"]["list"]} >= {"datasource", "robot", "instance", "model", "backend"}
    assert prom["rule_files"] == ["fleet/edgeprof.rules.yml"]  # the fleet row reads its recording rules


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool comes with apt-get install prometheus")
def test_prometheus_yml_is_valid():
    out = subprocess.run(["promtool", "check", "config", str(DASH_DIR / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_check_mode_detects_a_stale_file(tmp_path):
    pytest.importorskip("grafana_foundation_sdk")
    stale = tmp_path / "edgeprof.json"
    stale.write_text("{}\n")
    assert dashboards.main(["--check", "--out", str(stale)]) == 1
    assert dashboards.main(["--write", "--out", str(stale)]) == 0
    assert dashboards.main(["--check", "--out", str(stale)]) == 0


def test_fleet_row_reads_recording_rules_that_exist_and_every_selector_filters_on_robot():
    rules = yaml.safe_load(dashboards.RULES_PATH.read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    assert set(dashboards.RECORDED) <= recorded
    panels = committed()["panels"]
    assert panels[0]["type"] == "row" and "fleet" in panels[0]["title"].lower()
    fleet = {p["title"]: p for p in panels[1:4]}
    exprs = {t["expr"] for p in fleet.values() for t in p["targets"]}
    assert any(e.startswith("robot:edgeprof_decode_step_seconds:p99_5m") for e in exprs)
    assert any(e.startswith("robot:edgeprof_floor_fraction:median") for e in exprs)
    assert dashboards.ALERTS_EXPR in exprs
    assert all("{{robot}}" in t["legendFormat"] for p in fleet.values() for t in p["targets"] if "legendFormat" in t)
    for _panel, _ref, expr in dashboards.expressions(committed()):
        for selector in re.findall(r"\b[a-zA-Z_:]+\{[^}]*\}", expr):
            assert 'robot=~"$robot"' in selector, (expr, selector)
