"""benchmarks/plot_decode_step.py on a small synthetic round folder: failed cells are listed as FAILED
(never plotted), ungated step cells say so, gated sweep cells carry their check."""

from __future__ import annotations

import json


def _cell(backend: str, ctx: int, ok: bool, passed: bool | None) -> dict:
    cell = {"backend": backend, "ctx": ctx, "status": "ok" if ok else "failed", "gpu_name": "NVIDIA H200",
            "kernel_correctness": {"passed": passed}, "error": None if ok else "ctx: cache too small"}
    if ok:
        cell.update(stats={"wall": {"p50": 2.0}}, floor={"fraction": 0.55})
    return cell


def test_summary_marks_failed_and_ungated_cells(tmp_path, run_benchmark):
    rnd = tmp_path / "r1"
    (rnd / "steps").mkdir(parents=True)
    (rnd / "sweep").mkdir()
    cells = [dict(_cell("edgeprof-fast-int4-cuda", 2048, True, None), label="edgeprof-fast-int4-cuda X=1"),
             _cell("edgeprof-fast", 16384, False, None)]
    (rnd / "steps" / "steps.json").write_text(json.dumps({"cells": cells}))
    (rnd / "sweep" / "cells.jsonl").write_text(json.dumps(_cell("edgeprof-fast", 2048, True, True)) + "\n")
    run_benchmark("plot_decode_step.py", str(tmp_path))
    table = (tmp_path / "steps-summary.md").read_text()
    assert "| r1 | steps | qwen2.5-7b | edgeprof-fast-int4-cuda X=1 | 2048 | NVIDIA H200 | 2.000 | 0.550 | not gated |" in table
    assert "| r1 | steps | qwen2.5-7b | edgeprof-fast | 16384 | NVIDIA H200 | FAILED | - | ctx: cache too small |" in table
    assert "| r1 | sweep | qwen2.5-7b | edgeprof-fast | 2048 | NVIDIA H200 | 2.000 | 0.550 | passed |" in table
    assert (tmp_path / "fraction_of_floor.png").stat().st_size > 10_000


def test_a_step_cell_shows_its_settings_decoder_check(tmp_path, run_benchmark):
    rnd = tmp_path / "r2"
    (rnd / "steps").mkdir(parents=True)
    label = "edgeprof-fast-int4-cuda W4_MMA=fp16"
    rec = {"cells": [dict(_cell("edgeprof-fast-int4-cuda", 2048, True, None), label=label)],
           f"check_vs_dequantized_hf[{label}]": {"top1_agreement": 0.9375, "logit_rel_error_max": 0.01177}}
    (rnd / "steps" / "kernel.json").write_text(json.dumps({"steps": rec}))
    run_benchmark("plot_decode_step.py", str(tmp_path))
    assert f"| r2 | steps | qwen2.5-7b | {label} | 2048 | NVIDIA H200 | 2.000 | 0.550 | vs HF: top1 0.94, logit err 0.0118 |" in \
        (tmp_path / "steps-summary.md").read_text()
