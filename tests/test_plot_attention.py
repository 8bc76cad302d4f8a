"""benchmarks/plot_attention.py on a small synthetic run folder: micro rows with their check status (a failed row is
listed as FAIL and not timed), the rope checks' count, and the step table lines of a steps.log with the card the log
names."""

from __future__ import annotations

import json


def _row(ctx: int, plan: str, us: float | None) -> dict:
    row = {"ctx": ctx, "plan": plan, "rel_err": 2e-3 if us else 0.3, "passed": us is not None}
    if us:
        row.update(us_per_layer_p50=us, gb_per_s=400.0)
    return row


def test_summary_and_plot(tmp_path, run_benchmark):
    rnd = tmp_path / "r1"
    rnd.mkdir()
    rec = {"gpu": "NVIDIA H200", "rows": [_row(2048, "triton adaptive", 9.5), _row(2048, "cuda 8x8", 9.0),
                                          _row(16384, "triton adaptive", 16.8), _row(16384, "cuda 8x8", None)],
           "rope_checks": [{"ctx": 1, "plan": "cuda 8x8", "passed": True},
                           {"ctx": 17, "plan": "cuda 8x8", "passed": False}]}
    (rnd / "attn.json").write_text(json.dumps(rec))
    (rnd / "steps.log").write_text(
        "full step, Qwen2.5-7B synthetic, NVIDIA H200; fraction = floor / p50 at datasheet 4.80 TB/s\n"
        "backend                                     ctx   p50 ms   floor   frac frac@copy kernel\n"
        "edgeprof-fast-int4-cuda ATTN_KERNEL=triton   2048    2.041   1.186  0.581     0.660 edgeprof-w4a16-cuda\n"
        "edgeprof-fast-int4-cuda                    2048    1.992   1.186  0.595     0.676 edgeprof-w4a16-cuda\n")
    run_benchmark("plot_attention.py", str(tmp_path))
    text = (tmp_path / "attention-summary.md").read_text()
    assert "| 2048 | cuda 8x8 | PASS (2.0e-03) | 9.00 | 400 |" in text
    assert "| 16384 | cuda 8x8 | **FAIL** (not timed) (3.0e-01) | - | - |" in text
    assert "1 of 2 passed; FAILED: [(17, 'cuda 8x8')]" in text
    assert "## r1: full steps (NVIDIA H200, same run, in the order run)" in text
    assert "| edgeprof-fast-int4-cuda ATTN_KERNEL=triton | 2048 | 2.041 | 0.581 |" in text
    assert "| edgeprof-fast-int4-cuda | 2048 | 1.992 | 0.595 |" in text
    assert (tmp_path / "attention_us_per_layer.png").stat().st_size > 10_000
