"""benchmarks/plot_step_ab.py: the rows and table drawn from a step_ab record (pure; no GPU)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import plot_step_ab  # noqa: E402

REC = {"model": "llama-3.1-8b", "backend": "edgeprof-fast-int4-cuda", "ctx": 2048, "gpu": "h200", "synthetic": True,
       "arms": {"rule": {}, "base": {"EDGEPROF_W4_DEFAULT": "base"}},
       "arm_notes": {"rule": {"int4_launch": {"qkv": "clscxg s6"}}, "base": {"int4_launch": {"qkv": "base s6"}}},
       "ratios": {"base": {"gpu_p50": {"median": 1.1328, "ci": [1.1316, 1.1338]},
                           "gpu_p50_ms": {"rule": 2.003, "base": 2.268}}}}


def test_rows_put_the_first_arm_at_ratio_one_and_keep_each_arms_launch():
    rows = plot_step_ab.rows_of(REC)
    assert [r["arm"] for r in rows] == ["rule", "base"]
    assert rows[0]["ms"] == 2.003 and rows[0]["ratio"] == 1.0
    assert rows[1]["ms"] == 2.268 and rows[1]["ci"] == (1.1316, 1.1338) and rows[1]["launch"] == "qkv base s6"


def test_table_names_model_backend_context_card_and_synthetic_weights(tmp_path):
    txt = plot_step_ab.table([(tmp_path / "r128" / "ab.json", REC)])
    assert "llama-3.1-8b · edgeprof-fast-int4-cuda · ctx 2048 · h200 (SYNTHETIC weights); r128/ab.json" in txt
    assert "EDGEPROF_W4_DEFAULT=base; qkv base s6" in txt and "1.1328 [1.1316, 1.1338]" in txt
