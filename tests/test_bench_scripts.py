"""benchmarks/fast_decode.py and benchmarks/gpu_profile_cells.py on the CPU with the tiny-test
preset: they measure through edgeprof.bench / edgeprof.sweep and write the one cell record.
Not timed: it checks the scripts run and their records hold what the GPU runs are read for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeprof.records import load_records, read_jsonl

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
# the keys results/h100/*/cells.jsonl (fast_decode) are read for
FAST_DECODE_KEYS = {"backend", "ctx", "weights", "model", "model_label", "synthetic", "wall_ms", "gpu_ms", "stats",
                    "floor", "capture_s", "prefill_s", "resident_weight_bytes", "peak_mem_bytes", "notes", "status"}


def _run(*argv: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_fast_decode_on_the_cpu(tmp_path):
    out = tmp_path / "fast"
    proc = _run("benchmarks/fast_decode.py", "--device", "cpu", "--model", "tiny-test", "--ctx", "32,48",
                "--backends", "edgeprof-fast,edgeprof-fast-int4", "--steps", "3", "--warmup", "1", "--out", str(out))
    cells = read_jsonl(out / "cells.jsonl")
    assert [(c["backend"], c["ctx"], c["status"]) for c in cells] == [
        ("edgeprof-fast", 32, "ok"), ("edgeprof-fast", 48, "ok"),
        ("edgeprof-fast-int4", 32, "ok"), ("edgeprof-fast-int4", 48, "ok")]
    assert all(c.keys() >= FAST_DECODE_KEYS and c["prefill_tokens"] == c["ctx"] - 1 for c in cells)
    assert cells[0]["session_max_ctx"] == cells[1]["session_max_ctx"]  # one decoder for every ctx
    summary = json.loads((out / "summary.json").read_text())
    assert summary["check_bf16_vs_hf[eager+torch]"]["top1_agreement"] == 1.0
    assert summary["check_int4_vs_dequantized_hf"]["top1_agreement"] >= 0.5
    assert len(summary["cells"]) == 4 and "wall_ms" not in summary["cells"][0]
    assert "edgeprof-fast-int4" in proc.stdout.splitlines()[-1]  # the table comes last


def test_gpu_profile_cells_on_the_cpu_resumes(tmp_path):
    argv = ["benchmarks/gpu_profile_cells.py", "--device", "cpu", "--model", "tiny-test", "--backends",
            "hf-eager,hf-static", "--ctx", "32", "--steps", "3", "--warmup", "1", "--out",
            str(tmp_path / "cells.jsonl")]
    _run(*argv, "--budget-s", "0")
    assert {r["status"] for r in read_jsonl(tmp_path / "cells.jsonl")} == {"skipped"}
    _run(*argv)
    recs = {r["backend"]: r for r in load_records(tmp_path)}
    assert {r["status"] for r in recs.values()} == {"ok"}
    assert recs["hf-static"]["kernel_correctness"]["passed"] and recs["hf-static"]["cell_wall_s"] > 0
    assert recs["hf-eager"]["sweep"]["name"] == "gpu_profile_cells"


def test_step_ab_on_the_cpu(tmp_path):
    # the paired A/B's plumbing (arms built once, alternating blocks, ratios with CIs, the token check); on the CPU
    # both arms run torch's argmax, so their tokens must agree
    out = tmp_path / "ab.json"
    proc = _run("benchmarks/step_ab.py", "--device", "cpu", "--model", "tiny-test", "--backend", "edgeprof-fast",
                "--arms", "base:;off:EDGEPROF_GREEDY_TAIL=off", "--ctx", "24", "--blocks", "3", "--steps", "2",
                "--out", str(out))
    rec = json.loads(out.read_text())
    assert len(rec["per_block"]) == 3 and set(rec["per_block"][0]) == {"base", "off"}
    entry = rec["ratios"]["off"]
    assert entry["tokens_equal_to_base"] is True
    assert "gpu_p50" not in entry and entry["wall_p50"]["ci"][0] <= entry["wall_p50"]["median"] <= entry["wall_p50"]["ci"][1]
    assert "off / base at ctx 24" in proc.stdout
    # each arm's decoder says what it ran, and the cache the arms were built with is recorded
    assert set(rec["arm_notes"]) == {"base", "off"} and "attention" in rec["arm_notes"]["base"]
    assert rec["cache_tokens"] == 24 + 3 * 2 + 64
