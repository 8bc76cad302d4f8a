"""benchmarks/plot_readgap.py on a small synthetic run folder: the table has one column per kernel and one row per
(round, shape, data), a missing kernel shows as "-", and both PNGs are written."""

from __future__ import annotations

import json


def _row(shape: str, data: str, kernel: str, us: float) -> dict:
    return {"shape": shape, "k": 3584, "n": 37888, "splits": 1, "data": data, "kernel": kernel, "copies": 7,
            "us_p50": us}


def test_table_and_plots(tmp_path, run_benchmark):
    (tmp_path / "r4").mkdir()
    rows = [_row("gate_up", "int4", "read", 16.95), _row("gate_up", "int4", "nomathxsf", 17.25),
            _row("gate_up", "int4", "base", 20.7), _row("gate_up", "tune", "read", 19.21)]
    (tmp_path / "r4" / "read_vs_gemv.json").write_text(json.dumps({"gpu": "NVIDIA H200", "rows": rows}))
    trans = {"gpu": "NVIDIA H200", "transient": {"before": [[0.0, 16.9, 1980]],
                                                  "alloc": [[0.0, 19.18, 1980], [0.02, 16.86, 1980]]}}
    (tmp_path / "r4" / "transient.json").write_text(json.dumps(trans))
    out = run_benchmark("plot_readgap.py", str(tmp_path))
    assert "| round | card | shape | splits | data | copies | base | nomathxsf | read |" in out
    assert "| r4 | NVIDIA H200 | gate_up | 1 | int4 | 7 | 20.70 | 17.25 | 16.95 |" in out
    assert "| r4 | NVIDIA H200 | gate_up | 1 | tune | 7 | - | - | 19.21 |" in out
    assert (tmp_path / "read_vs_gemv.png").stat().st_size > 0
    assert (tmp_path / "transient.png").stat().st_size > 0
