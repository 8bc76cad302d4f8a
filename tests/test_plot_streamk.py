"""benchmarks/plot_streamk.py on a small synthetic run folder: every row keeps its check status (PASS, DIAGNOSTIC, or
the FAILED / SKIPPED reason, without a time), the launch that 0.85 of the round's copy bandwidth allows is computed
from the row's bytes, and the PNG is written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import plot_streamk  # noqa: E402


def _row(variant: str, splits: int, status: str, us: float | None = None) -> dict:
    row = {"model": "qwen2.5-7b", "shape": "down", "variant": variant, "splits": splits, "ctas": 132,
           "status": status, "bytes": 35_008_512}
    if us is not None:
        row.update(us_p50=us, frac_copy_bw=0.7)
    return row


def _tune(tmp_path: Path) -> Path:
    (tmp_path / "r7" / "tune-qwen-pdl").mkdir(parents=True)
    rec = {"gpu": "NVIDIA H200", "copy_bw_bytes_per_s": 4.2e12, "pdl": True,
           "rows": [_row("sk16", 1, "ok", 12.0), _row("clscx", 10, "ok", 11.6), _row("sk16n", 1, "diagnostic", 11.1),
                    _row("sk8", 1, "FAILED (asym: rel 3.1e-02)")]}
    (tmp_path / "r7" / "tune-qwen-pdl" / "tune.json").write_text(json.dumps(rec))
    return tmp_path


def test_rows_keep_their_status_and_the_target_comes_from_the_bytes(tmp_path):
    rows = plot_streamk.summary_rows(plot_streamk.read_tunes(_tune(tmp_path)))
    by = {r["launch"]: r for r in rows}
    assert set(by) == {"sk16", "clscx s10", "sk16n", "sk8"}  # one split: no "s1"
    assert by["sk16"]["status"] == "PASS" and by["sk16n"]["status"] == "DIAGNOSTIC"
    assert by["sk8"]["status"].startswith("FAILED") and by["sk8"]["us"] is None and by["sk8"]["frac"] is None
    # 0.85 of 4.2 TB/s for 35.0 MB: 9.807 us
    assert abs(by["sk16"]["target_us"] - 35_008_512 / (0.85 * 4.2e12) * 1e6) < 1e-9
    md = plot_streamk.summary_markdown(rows)
    assert "| r7 tune-qwen-pdl | NVIDIA H200 | qwen2.5-7b | down | sk16 | 132 | on | 12.00 | 0.700 | 9.81 | PASS |" in md
    assert "| sk8 | 132 | on | - | - | 9.81 | FAILED (asym: rel 3.1e-02) |" in md


def test_main_writes_the_summary_and_the_png(tmp_path):
    run = _tune(tmp_path)
    assert plot_streamk.main([str(run)]) == 0
    assert "sk16n" in (run / "streamk-summary.md").read_text()
    assert (run / "streamk_us.png").stat().st_size > 10_000


def test_a_folder_without_tunes_says_so(tmp_path, capsys):
    assert plot_streamk.main([str(tmp_path)]) == 1
    assert "no r*/tune*/tune.json" in capsys.readouterr().err
