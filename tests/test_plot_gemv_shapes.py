"""benchmarks/plot_gemv_shapes.py on a small synthetic run folder: per-shape rows with their status (a failed row is
listed as FAILED, not plotted), and the ncu SM-cycle table from a metrics CSV."""

from __future__ import annotations

import csv
import json


def _row(shape: str, kernel: str, frac: float | None) -> dict:
    if frac is None:
        return {"shape": shape, "kernel": kernel, "status": "check failed: rel err 0.3"}
    return {"shape": shape, "kernel": kernel, "status": "ok", "rel_err": 2e-3, "us_p50": 20.0, "gb_per_s": 3000.0,
            "frac_copy_bw": frac}


def test_summary_and_plots(tmp_path, run_benchmark):
    steps = tmp_path / "r1" / "steps"
    steps.mkdir(parents=True)
    rec = {"gpu": "NVIDIA H200", "copy_bw_bytes_per_s": 4.2e12, "checks_passed": True, "checks": [{}] * 3,
           "rows": [_row("gate_up", "edgeprof-cuda", 0.74), _row("gate_up", "edgeprof-cuda+f16", None),
                    _row("down", "edgeprof-cuda", 0.58)]}
    (steps / "kernel.json").write_text(json.dumps(rec))
    ncu = tmp_path / "r2-ncu"
    ncu.mkdir()
    (ncu / "ncu-sections.txt").write_text("gate_up:base:1: rel err 1.7e-03 (ok)\n")
    metrics = {"gpu__time_duration.sum": "23,776", "sm__cycles_active.min": "33,000", "sm__cycles_active.avg": "36,000",
               "sm__cycles_active.max": "39,000", "gpc__cycles_elapsed.max": "42,000",
               "smsp__issue_active.avg.per_cycle_active": "0.50",
               "smsp__average_warps_active_per_issue_active.ratio": "8.7",
               "smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio": "2.7"}
    with (ncu / "ncu-metrics.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Process ID", "Process Name", "Host Name", "Kernel Name", "Context", "Stream", "Block Size",
                    "Grid Size", "Device", "CC", "Section Name", "Metric Name", "Metric Unit", "Metric Value"])
        for launch in ("0", "1"):  # the check launch, then the timed one
            for k, v in metrics.items():
                w.writerow([launch, "1", "python3", "h", "w4a16", "1", "7", "128", "592", "0", "9.0", "", k, "", v])
    run_benchmark("plot_gemv_shapes.py", str(tmp_path))
    text = (tmp_path / "gemv-summary.md").read_text()
    assert "| qwen2.5-7b | gate_up | edgeprof-cuda | - | ok | 2.0e-03 | 20.0 | 3000 | 0.740 |" in text
    assert "| qwen2.5-7b | gate_up | edgeprof-cuda+f16 | - | FAILED: check failed: rel err 0.3 |" in text
    assert "| gate_up:base:1 | 23.8 | 33000 / 36000 / 39000 | 42000 | 0.86 | 0.50 | long_scoreboard 2.70 |" in text
    for png in ("gemv_per_shape.png", "ncu_sm_cycles.png"):
        assert (tmp_path / png).stat().st_size > 10_000


def test_rows_of_several_models_and_folders_keep_apart(tmp_path, run_benchmark):
    def rec(rows):
        return {"gpu": "NVIDIA H200", "copy_bw_bytes_per_s": 4.2e12, "checks_passed": True, "checks": [], "rows": rows}

    llama = {**_row("down", "edgeprof-cuda+pdl", 0.74), "model": "llama-3.1-8b",
             "launch": {"variant": "wk8", "splits": 1}, "launch_source": "plan"}
    qwen = {**_row("down", "edgeprof-cuda+pdl", 0.59), "model": "qwen2.5-7b",
            "launch": {"variant": "clscxg", "splits": 10}, "launch_source": "plan"}
    for sub in ("kernel", "rows"):  # two kernel.json in one round: both kept, named by their folder
        (tmp_path / "r9" / sub).mkdir(parents=True)
        (tmp_path / "r9" / sub / "kernel.json").write_text(json.dumps(rec([qwen, llama])))
    run_benchmark("plot_gemv_shapes.py", str(tmp_path))
    text = (tmp_path / "gemv-summary.md").read_text()
    assert "### r9/kernel:" in text and "### r9/rows:" in text
    assert "| llama-3.1-8b | down | edgeprof-cuda+pdl | wk8 s1 (plan) | ok |" in text
    assert "| qwen2.5-7b | down | edgeprof-cuda+pdl | clscxg s10 (plan) | ok |" in text
    assert (tmp_path / "gemv_per_shape.png").stat().st_size > 10_000
