"""benchmarks/plot_tune.py on a small synthetic run folder: each round's best config per shape, the rows that were not
timed listed with their reason (and left out of the plot), and the PNG written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _row(shape: str, variant: str, splits: int, us: float | None) -> dict:
    row = {"shape": shape, "variant": variant, "splits": splits, "grid_x": 0,
           "status": "ok" if us else "FAILED (differs from base at the same splits)"}
    if us:
        row["us_p50"] = us
    return row


def test_summary_lists_best_and_untimed_rows_and_plots(tmp_path, run_benchmark):
    (tmp_path / "r7" / "tune").mkdir(parents=True)
    rows = [_row("down", "base", 10, 13.3), _row("down", "cl", 10, 12.2), _row("down", "cl", 12, None),
            _row("o", "cl", 4, 4.7)]
    best = {"down": {"best": {"variant": "cl", "splits": 10, "us_p50": 12.2, "frac_copy_bw": 0.68}},
            "o": {"best": None}}
    rec = {"gpu": "NVIDIA H200", "copy_bw_bytes_per_s": 4.23e12, "pdl": True, "rows": rows, "best": best}
    (tmp_path / "r7" / "tune" / "tune.json").write_text(json.dumps(rec))
    run_benchmark("plot_tune.py", str(tmp_path))
    text = (tmp_path / "tune-summary.md").read_text()
    assert "## r7: NVIDIA H200, copy bw 4.230 TB/s, timed with PDL" in text
    assert "| down | cl s10 | 12.20 | 0.680 |" in text
    assert "| o | none passed | - | - |" in text
    assert "- not timed: down cl s12: FAILED (differs from base at the same splits)" in text
    assert (tmp_path / "tune_us_by_splits.png").stat().st_size > 10_000


def test_a_rounds_pure_read_is_set_against_its_gemv_with_the_same_pdl_setting(tmp_path, run_benchmark):
    for sub, pdl, us in (("tune-pdl1", True, 12.3), ("tune-pdl0", False, 14.1)):
        (tmp_path / "r9" / sub).mkdir(parents=True)
        best = {"down": {"best": {"variant": "cl", "splits": 10, "us_p50": us, "frac_copy_bw": 0.6}}}
        diag = {**_row("down", "clnomath", 10, us - 3), "status": "diagnostic"}  # timed, never a best
        rec = {"gpu": "NVIDIA H200", "pdl": pdl, "rows": [_row("down", "cl", 10, us), diag], "best": best}
        (tmp_path / "r9" / sub / "tune.json").write_text(json.dumps(rec))
    reads = [{"shape": "down", "pattern": "split", "splits": 10, "us_p50": us, "frac_copy_bw": f}
             for us, f in ((9.2, 0.87), (8.8, 0.91))] + [{"shape": "down", "pattern": "flat", "splits": 1,
                                                           "us_p50": 8.0, "frac_copy_bw": 0.99}]
    (tmp_path / "r9" / "stream_pattern-pdl.json").write_text(json.dumps({"gpu": "NVIDIA H200", "pdl": True,
                                                                          "rows": reads}))
    run_benchmark("plot_tune.py", str(tmp_path))
    text = (tmp_path / "tune-summary.md").read_text()
    assert "## r9 tune-pdl1: NVIDIA H200" in text and "## r9 tune-pdl0: NVIDIA H200" in text
    # the faster of the split reads, against the PDL tune's best (not the plain one's 14.1)
    assert "| down | s10 8.80, 0.910 | cl s10 12.30, 0.600 | 0.72 | clnomath 9.30 | - | - | - |" in text
    assert "not timed" not in text  # a diagnostic row is timed, not a failure


def test_a_folder_without_tunes_is_named(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "plot_tune.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no r*/tune*/tune.json" in proc.stderr
