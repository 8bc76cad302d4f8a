"""edgeprof.report on a folder of runs (DIR/RUN/cells.jsonl), as results/h100 is laid out."""

from __future__ import annotations

import json

from analysis_records import make_record

from edgeprof.records import append_jsonl
from edgeprof.report import build_report, load_runs, primary_records

_PROV = {"gpu": "h100-sxm", "gpu_name": "NVIDIA H100 80GB HBM3", "torch": "2.11.0+cu130", "python": "3.12.3",
         "command": "python3 benchmarks/fast_decode.py --out X"}


def _fast_record(backend: str, ctx: int, ms: float) -> dict:
    """The fast_decode.py shape: no gpu, gpu_name, device, versions, command or correctness."""
    r = make_record(backend=backend, ctx=ctx, samples=[ms] * 30)
    for k in ("gpu", "gpu_name", "device", "versions", "command", "correctness", "host_cpu", "timestamp",
              "steps", "warmup", "error", "telemetry_before", "telemetry_after", "gpu_ms"):
        r.pop(k)
    return r


def _runs_dir(tmp_path):
    cells = tmp_path / "profile_cells"
    cells.mkdir()
    gated = {"reference": "hf-eager", "agreement": 0.8, "logit_rel_error": {"mean": 0.02}, "passed": True}
    append_jsonl(cells / "cells.jsonl", make_record(backend="hf-graph", ctx=2048, samples=[9.8] * 30,
                                                    correctness=gated))
    fast = tmp_path / "fast_decode"
    fast.mkdir()
    for backend, ms in (("hf-graph", 9.7), ("edgeprof-fast", 6.0)):
        append_jsonl(fast / "cells.jsonl", _fast_record(backend, 2048, ms))
    (fast / "summary.json").write_text(json.dumps({
        "provenance": _PROV, "check_bf16_vs_hf": {"top1_agreement": 0.81, "logit_rel_error_mean": 0.137}}))
    return tmp_path


def test_runs_fill_provenance_and_pick_the_gated_record(tmp_path) -> None:
    runs = load_runs(_runs_dir(tmp_path))
    assert [r.name for r in runs] == ["fast_decode", "profile_cells"]
    fast = runs[0]
    assert all(r["gpu_name"] == "NVIDIA H100 80GB HBM3" and r["versions"]["torch"] == "2.11.0+cu130"
               for r in fast.records)
    assert "check_bf16_vs_hf" in fast.checks
    chosen = {r["backend"]: r for r in primary_records(runs)}
    assert chosen["hf-graph"]["run"] == "profile_cells"  # gated beats ungated
    assert chosen["edgeprof-fast"]["run"] == "fast_decode"


def test_report_of_a_folder_of_runs(tmp_path) -> None:
    page = build_report(_runs_dir(tmp_path))
    assert "3 cells" in page and "2 runs: fast_decode, profile_cells" in page
    assert "<th class=\"l\">run</th>" in page and "Run-level checks" in page and "check_bf16_vs_hf" in page
    assert "NVIDIA H100 80GB HBM3" in page and "benchmarks/fast_decode.py" in page
