"""The Grafana dashboard, generated from code with grafana-foundation-sdk.

`python -m edgeprof.dashboards --write` regenerates `dashboards/edgeprof.json`;
`--check` exits non-zero when the committed file differs (tests/test_dashboards.py
asserts the same). Panels are declared as plain data below (`ROWS`), so the layout
reads top to bottom as an operator scans it: latency against the floor, jitter and
deadlines, throughput, the GPU beside the latency it caused, the process.

PromQL conventions: every selector filters on the dashboard variables `$robot`,
`$instance`, `$model`, `$backend` (all default to "All" = `.*`), rates use
`$__rate_interval`. `edgeprof metrics-check` substitutes both and runs each expression
against Prometheus. The fleet row reads the recording rules of
dashboards/fleet/edgeprof.rules.yml (`RECORDED`), so the Prometheus behind it must load
that file (docs/fleet.md).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from edgeprof.paths import REPO_ROOT

DASHBOARD_PATH = REPO_ROOT / "dashboards" / "edgeprof.json"
RULES_PATH = REPO_ROOT / "dashboards" / "fleet" / "edgeprof.rules.yml"
DASHBOARD_UID = "edgeprof-decode"
DATASOURCE_UID = "${datasource}"

RUN = '{robot=~"$robot", instance=~"$instance", model=~"$model", backend=~"$backend"}'  # decode-side series
HOST = '{robot=~"$robot", instance=~"$instance"}'  # process and GPU series (one per scraped process)
ROBOT = '{robot=~"$robot"}'  # recorded per-robot series
# Series the fleet row reads: recording rules (dashboards/fleet/edgeprof.rules.yml), and
# Prometheus's own ALERTS (present only while an alert fires).
RECORDED = ("robot:edgeprof_decode_step_seconds:p50_5m", "robot:edgeprof_decode_step_seconds:p99_5m",
            "robot:edgeprof_floor_fraction:median", "robot:edgeprof_gpu_energy_joules_total:per_token_rate5m")
ALERTS_EXPR = 'ALERTS{alertstate="firing", alertname=~"Edgeprof.+", robot=~"$robot"}'
RI = "[$__rate_interval]"


def quantile(q: float, metric: str, sel: str = RUN) -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{sel}{RI})))"


def step_q(q: float) -> str:
    return quantile(q, "edgeprof_decode_step_seconds")


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str
    right_axis_unit: str | None = None  # plot on a right-hand axis in this unit (clocks beside latency)
    instant_table: bool = False


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    unit: str
    targets: tuple[Target, ...]
    width: int = 12
    height: int = 8
    kind: str = "timeseries"  # "timeseries" | "state-timeline" | "table"
    min_zero: bool = True


@dataclass(frozen=True)
class RowSpec:
    title: str
    panels: tuple[PanelSpec, ...] = field(default_factory=tuple)


ROWS: tuple[RowSpec, ...] = (
    RowSpec("Fleet overview (one line per robot)", (
        PanelSpec("Fleet: p99 step latency per robot",
                  "5-minute p99 (and p50) of the decode step per robot, from the recording rules "
                  "robot:edgeprof_decode_step_seconds:p99_5m / :p50_5m.", "s",
                  (Target(f"{RECORDED[1]}{ROBOT}", "{{robot}} p99"),
                   Target(f"{RECORDED[0]}{ROBOT}", "{{robot}} p50")), width=9),
        PanelSpec("Fleet: fraction of floor per robot",
                  "Rolling-median fraction of the memory floor per robot (robot:edgeprof_floor_fraction:median); "
                  "a drop of more than 20 % from its 1-hour baseline raises EdgeprofFloorFractionRegression.",
                  "percentunit", (Target(f"{RECORDED[2]}{ROBOT}", "{{robot}}"),
                                  Target(f"{RECORDED[3]}{ROBOT}", "{{robot}} J/token", right_axis_unit="joule")),
                  width=9),
        PanelSpec("Fleet: active alerts", "edgeprof alerts firing now (dashboards/fleet/edgeprof.rules.yml).",
                  "none", (Target(ALERTS_EXPR, "", instant_table=True),), kind="table", width=6),
    )),
    RowSpec("Token latency vs the memory floor", (
        PanelSpec("Token latency p50/p90/p99 vs memory floor",
                  "Per-token decode wall time from edgeprof_decode_step_seconds, against the analytic memory floor "
                  "(paper: all weights + KV; touched: bytes one step really reads). GPU-event time where available.",
                  "s", (Target(step_q(0.5), "p50"), Target(step_q(0.9), "p90"), Target(step_q(0.99), "p99"),
                        Target(f'max(edgeprof_memory_floor_seconds{RUN[:-1]}, definition="paper"}})', "floor (paper)"),
                        Target(f'max(edgeprof_memory_floor_seconds{RUN[:-1]}, definition="touched"}})', "floor (touched)"),
                        Target(quantile(0.5, "edgeprof_decode_step_gpu_seconds"), "GPU-event p50")),
                  width=16),
        PanelSpec("Fraction of floor",
                  "floor / step time: 1.0 means the step streams memory at datasheet peak. Rolling median over recent "
                  "tokens (edgeprof_floor_fraction) and at the window's p50.",
                  "percentunit", (Target(f"edgeprof_floor_fraction{RUN}", "rolling median {{model}} {{backend}}"),
                                  Target(f'max(edgeprof_memory_floor_seconds{RUN[:-1]}, definition="paper"}}) / {step_q(0.5)}',
                                         "at window p50")),
                  width=8),
    )),
    RowSpec("Jitter and deadlines", (
        PanelSpec("Jitter (tail minus median)", "How far the tail sits above the median token time.", "s",
                  (Target(f"{step_q(0.99)} - {step_q(0.5)}", "p99 - p50"),
                   Target(f"{step_q(0.9)} - {step_q(0.5)}", "p90 - p50"))),
        PanelSpec("Deadline misses", "Tokens that missed the robot's per-token deadline: rate and share of tokens.",
                  "short", (Target(f"sum(rate(edgeprof_deadline_misses_total{RUN}{RI}))", "misses/s"),
                            Target(f"sum(rate(edgeprof_deadline_misses_total{RUN}{RI})) / "
                                   f"sum(rate(edgeprof_tokens_total{RUN}{RI}))", "miss ratio"))),
    )),
    RowSpec("Throughput and requests", (
        PanelSpec("Time to first token", "Request received to first token handed to the bridge.", "s",
                  tuple(Target(quantile(q, "edgeprof_time_to_first_token_seconds"), f"p{round(q * 100)}")
                        for q in (0.5, 0.9, 0.99)), width=8),
        PanelSpec("Tokens/s", "Decoded tokens per second.", "short",
                  (Target(f"sum(rate(edgeprof_tokens_total{RUN}{RI}))", "tokens/s"),), width=8),
        PanelSpec("Requests by outcome", "Finished requests per second, by outcome.", "reqps",
                  (Target(f"sum by (outcome) (rate(edgeprof_requests_total{RUN}{RI}))", "{{outcome}}"),), width=8),
        PanelSpec("Bridge publish time", "Time to hand one token to the ROS bridge.", "s",
                  (Target(quantile(0.5, "edgeprof_bridge_publish_seconds"), "p50"),
                   Target(quantile(0.99, "edgeprof_bridge_publish_seconds"), "p99"))),
        PanelSpec("Run info", "edgeprof_info: model, backend, GPU, weights, versions, floor.", "none",
                  (Target(f"edgeprof_info{RUN}", "", instant_table=True),), kind="table"),
    )),
    RowSpec("GPU (NVML; absent on CPU-only hosts)", (
        PanelSpec("Latency p99 beside SM clock",
                  "A throttling episode shows as the SM clock dropping while p99 rises.", "s",
                  (Target(step_q(0.99), "p99 step"),
                   Target(f"max(edgeprof_gpu_sm_clock_hertz{HOST})", "SM clock", right_axis_unit="hertz"))),
        PanelSpec("Clock-event (throttle) reasons", "1 while NVML reports the reason (power cap, thermal, ...).",
                  "none", (Target(f"max by (reason) (edgeprof_gpu_clock_event_reason{HOST})", "{{reason}}"),),
                  kind="state-timeline"),
        PanelSpec("GPU clocks", "SM and memory clocks.", "hertz",
                  (Target(f"max(edgeprof_gpu_sm_clock_hertz{HOST})", "SM"),
                   Target(f"max(edgeprof_gpu_mem_clock_hertz{HOST})", "memory")), width=8),
        PanelSpec("Power and joules per token",
                  "Board power; joules per token = rate(energy counter) / rate(tokens) (whole GPU).", "watt",
                  (Target(f"max(edgeprof_gpu_power_watts{HOST})", "power"),
                   Target(f"sum(rate(edgeprof_gpu_energy_joules_total{HOST}{RI})) / "
                          f"sum(rate(edgeprof_tokens_total{RUN}{RI}))", "J/token", right_axis_unit="joule")), width=8),
        PanelSpec("Temperature, memory, utilisation", "GPU temperature, device memory used, NVML utilisation.",
                  "celsius", (Target(f"max(edgeprof_gpu_temperature_celsius{HOST})", "temperature"),
                              Target(f"max(edgeprof_gpu_memory_used_bytes{HOST})", "memory used",
                                     right_axis_unit="bytes"),
                              Target(f"max(edgeprof_gpu_utilization_ratio{HOST}) * 100", "utilisation %")),
                  width=8),
    )),
    RowSpec("Process", (
        PanelSpec("Process CPU", "CPU of the edgeprof process (1.0 = one core busy).", "percentunit",
                  (Target(f"rate(edgeprof_process_cpu_seconds_total{HOST}{RI})", "{{instance}}"),), width=8),
        PanelSpec("Process RSS", "Resident memory of the edgeprof process.", "bytes",
                  (Target(f"edgeprof_process_resident_memory_bytes{HOST}", "{{instance}}"),), width=8),
        PanelSpec("Telemetry errors", "Failed or timed-out telemetry reads (counted, never raised); NVML up.",
                  "short", (Target(f"sum by (source) (increase(edgeprof_telemetry_errors_total{HOST}{RI}))",
                                   "{{source}}"),
                            Target(f"max(edgeprof_nvml_up{HOST})", "nvml up")), width=8),
    )),
)


def _sdk():
    try:
        from grafana_foundation_sdk.builders import dashboard, prometheus, statetimeline, table, timeseries
        from grafana_foundation_sdk.cog.encoder import JSONEncoder
        from grafana_foundation_sdk.models import dashboard as dm
        from grafana_foundation_sdk.models import prometheus as pm
    except ImportError:
        from edgeprof.errors import ConfigError

        raise ConfigError("dashboards", "grafana-foundation-sdk is not installed; "
                          "pip install 'edgeprof[dashboards]'") from None
    return dashboard, prometheus, statetimeline, table, timeseries, JSONEncoder, dm, pm


def _panel(spec: PanelSpec, sdk) -> object:
    dashboard, prometheus, statetimeline, table, timeseries, _, dm, pm = sdk
    ds = dm.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
    builder = {"timeseries": timeseries.Panel, "state-timeline": statetimeline.Panel, "table": table.Panel}[spec.kind]()
    p = builder.title(spec.title).description(spec.description).datasource(ds).unit(spec.unit)
    p = p.height(spec.height).span(spec.width)
    if spec.min_zero and spec.kind == "timeseries":
        p = p.min(0)
    for i, t in enumerate(spec.targets):
        ref = chr(ord("A") + i)
        q = prometheus.Dataquery().expr(t.expr).ref_id(ref).datasource(ds)
        q = q.instant().format(pm.PromQueryFormat.TABLE) if t.instant_table else q.legend_format(t.legend or "__auto")
        p = p.with_target(q)
        if t.right_axis_unit:
            p = p.override_by_query(ref, [dm.DynamicConfigValue("custom.axisPlacement", "right"),
                                          dm.DynamicConfigValue("unit", t.right_axis_unit)])
    return p


def _query_variable(name: str, label: str, query: str, sdk) -> object:
    dashboard, *_, dm, _pm = sdk
    return (dashboard.QueryVariable(name).label(label).query(query)
            .datasource(dm.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID))
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).multi(True).include_all(True).all_value(".*")
            .current(dm.VariableOption(selected=True, text="All", value="$__all")))


def build() -> dict:
    """The dashboard as a JSON-able dict."""
    sdk = _sdk()
    dashboard, *_rest, JSONEncoder, dm, _pm = sdk
    d = (dashboard.Dashboard("edgeprof: batch-1 decode vs the memory floor").uid(DASHBOARD_UID)
         .description("Every token against the analytic memory floor, with jitter, deadlines and what the GPU "
                      "was doing. Generated by `python -m edgeprof.dashboards --write`; do not edit by hand.")
         .tags(["edgeprof", "llm", "latency"]).refresh("5s").time("now-15m", "now").timezone("browser")
         .tooltip(dm.DashboardCursorSync.CROSSHAIR)
         .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
         .with_variable(_query_variable("robot", "Robot", "label_values(edgeprof_info, robot)", sdk))
         .with_variable(_query_variable("instance", "Instance", 'label_values(edgeprof_info{robot=~"$robot"}, instance)',
                                        sdk))
         .with_variable(_query_variable("model", "Model", 'label_values(edgeprof_info{instance=~"$instance"}, model)', sdk))
         .with_variable(_query_variable("backend", "Backend",
                                        'label_values(edgeprof_info{instance=~"$instance", model=~"$model"}, backend)',
                                        sdk)))
    for row in ROWS:
        d = d.with_row(dashboard.Row(row.title))
        for spec in row.panels:
            d = d.with_panel(_panel(spec, sdk))
    return json.loads(JSONEncoder(sort_keys=True).encode(d.build()))


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def expressions(dash: dict) -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) for every PromQL target of a dashboard JSON, rows included."""
    out = []

    def walk(panels: list) -> None:
        for p in panels or []:
            for t in p.get("targets") or []:
                if t.get("expr"):
                    out.append((p.get("title", "?"), t.get("refId", "?"), t["expr"]))
            walk(p.get("panels") or [])  # collapsed rows nest their panels

    walk(dash.get("panels") or [])
    return out


# ---------------------------------------------------------------- checking against Prometheus

_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_TIME_VARS = ("__rate_interval", "__interval", "__range")
_METRIC = re.compile(r"\b(edgeprof_[a-z0-9_]+)\b")


def substitute(expr: str, window: str = "5m", variables: dict[str, str] | None = None) -> str:
    """Replace Grafana template variables: time ones by `window`, the rest by their
    value in `variables` or ".*" (the dashboard's "All")."""
    variables = variables or {}

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        return window if name in _TIME_VARS else variables.get(name, ".*")

    return _VAR.sub(repl, expr)


def metric_names(expr: str) -> set[str]:
    """edgeprof series names an expression reads (`_bucket` etc. folded to the family)."""
    out = set()
    for name in _METRIC.findall(expr):
        for suffix in ("_bucket", "_count", "_sum"):
            if name.endswith(suffix) and not name.endswith("_seconds_total"):
                name = name[: -len(suffix)]
        out.add(name)
    return out


@dataclass
class ExprResult:
    panel: str
    ref: str
    expr: str
    status: str  # "ok" | "empty" | "nan" | "error" | "optional"
    series: int = 0
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status in ("empty", "nan", "error")


def _is_alerts(expr: str) -> bool:
    return expr.lstrip().startswith("ALERTS")


def prom_query(base_url: str, expr: str, timeout_s: float = 10.0) -> list[dict]:
    """Instant query through Prometheus's HTTP API; the `result` vector. Raises MetricsError."""
    from edgeprof.errors import MetricsError

    url = base_url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as exc:  # 400/422: a PromQL error, with Prometheus's message
        try:
            body = json.load(exc)
        except ValueError:
            raise MetricsError(f"prometheus {base_url}: HTTP {exc.code} for {expr!r}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise MetricsError(f"cannot query Prometheus at {base_url} ({getattr(exc, 'reason', exc)}); "
                           "is it running? pass its address with --prometheus") from None
    if body.get("status") != "success":
        raise MetricsError(f"PromQL error: {body.get('error', body)}")
    result = body["data"]["result"]
    return result if isinstance(result, list) else [{"value": result}]


def gpu_optional_reason(base_url: str) -> str | None:
    """Why GPU-only series may be absent (None: they must be present).

    Rule: if every scraped edgeprof process says gpu="cpu" in edgeprof_info, or none
    of them has a working NVML (edgeprof_nvml_up == 0), GPU panels may show no data.
    """
    gpus = {r["metric"].get("gpu") for r in prom_query(base_url, "edgeprof_info")}
    if gpus and gpus <= {"cpu"}:
        return "no NVML on this host: edgeprof_info says gpu=cpu"
    up = prom_query(base_url, "max(edgeprof_nvml_up)")
    if up and float(up[0]["value"][1]) == 0:
        return "NVML unavailable on this host: edgeprof_nvml_up=0"
    return None


def check(base_url: str, dash: dict, window: str = "5m", variables: dict[str, str] | None = None) -> list[ExprResult]:
    """Run every panel expression against Prometheus and classify the answers."""
    from edgeprof.errors import MetricsError
    from edgeprof.metrics import is_gpu_metric

    optional = gpu_optional_reason(base_url)
    out = []
    for panel, ref, expr in expressions(dash):
        q = substitute(expr, window, variables)
        r = ExprResult(panel, ref, q, "ok")
        try:
            result = prom_query(base_url, q)
        except MetricsError as exc:
            if "cannot query" in str(exc):
                raise
            r.status, r.detail = "error", str(exc)
            out.append(r)
            continue
        values = [float(s["value"][1]) for s in result if "value" in s]
        r.series = len(result)
        if not result:
            r.status = "empty"
        elif values and all(math.isnan(v) for v in values):
            r.status, r.detail = "nan", "only NaN (no events in the window?)"
        if r.status != "ok" and optional and any(is_gpu_metric(m) for m in metric_names(expr)):
            r.status, r.detail = "optional", f"no data ({optional})"
        elif r.status == "empty" and _is_alerts(expr):  # no alert firing is the good case
            r.status, r.detail = "optional", "no alert firing"
        out.append(r)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeprof.dashboards", description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help=f"write {DASHBOARD_PATH.relative_to(REPO_ROOT)}")
    ap.add_argument("--check", action="store_true", help="exit 1 when the committed JSON is out of date")
    ap.add_argument("--out", type=Path, default=DASHBOARD_PATH)
    args = ap.parse_args(argv)
    text = render()
    if args.write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out} ({len(expressions(json.loads(text)))} PromQL expressions)")
    elif args.check:
        same = args.out.exists() and args.out.read_text() == text
        print(f"{args.out}: {'up to date' if same else 'OUT OF DATE; run python -m edgeprof.dashboards --write'}")
        return 0 if same else 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
