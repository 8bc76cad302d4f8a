"""benchmarks/cells_table.py: every row keyed by model/backend/ctx/card, a failed check marked, never hidden."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("cells_table", REPO / "benchmarks" / "cells_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rec(backend: str, passed: bool | None, p50: float) -> dict:
    kc = {"passed": passed, "value": 0.5 if passed is False else 0.01, "bound": 0.1, "positions": [2040, 2047]}
    return {"model": "qwen2.5-7b", "backend": backend, "weights": "rtn4-g128", "ctx": 2048, "gpu": "h200",
            "stats": {"wall": {"p50": p50, "p99": p50 * 1.1}}, "floor": {"fraction": 0.4},
            "kernel_correctness": kc if passed is not None else {"passed": None}}


def test_failed_rows_are_marked_and_all_rows_shown() -> None:
    t = _module().table([_rec("good", True, 3.0), _rec("broken", False, 2.0), _rec("unchecked", None, 4.0)])
    lines = t.splitlines()
    assert len(lines) == 2 + 3
    assert "| broken |" in lines[2] and "**FAIL** 0.5000 <= 0.1" in lines[2]  # fastest first, still marked
    assert "pass 0.0100" in lines[3] and "not checked" in lines[4]
    assert all("| h200 |" in line and "| 2048 |" in line for line in lines[2:])


def test_failed_cell_without_timings_is_a_row() -> None:
    r = {"model": "m", "backend": "b", "weights": "bf16", "ctx": 64, "gpu": "cpu", "status": "failed", "error": "boom"}
    assert "FAILED: boom" in _module().table([r])
