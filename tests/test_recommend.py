"""edgeprof.recommend: p99 (not mean) against the SLO, memory budget, reasons, floor bounds."""

from __future__ import annotations

import json

import pytest
from analysis_records import make_record

from edgeprof.errors import ConfigError
from edgeprof.recommend import format_recommendation, recommend
from edgeprof.records import append_jsonl


def _records():
    tail = [8.0] * 97 + [40.0] * 3  # p50 8 ms, mean ~9 ms, p99 40 ms: a spiky backend
    return [
        make_record(backend="hf-eager", samples=[75.0] * 30, peak_mem_bytes=int(17e9)),
        make_record(backend="hf-graph", samples=[8.2] * 29 + [8.6], peak_mem_bytes=int(17e9)),
        make_record(backend="hf-compile", samples=tail, peak_mem_bytes=int(17e9)),
        make_record(backend="torchao-int4", weights="gptq4-g128", samples=[6.3] * 30, peak_mem_bytes=int(6e9)),
        make_record(backend="bnb-nf4", weights="nf4", samples=[7.6] * 30, resident_weight_bytes=int(5.5e9)),
        make_record(backend="exllamav2", weights="gptq4-g128", status="failed",
                    error="out of memory: CUDA out of memory"),
        make_record(backend="bnb-int8", weights="int8", samples=[9.0] * 30, peak_mem_bytes=int(9e9),
                    correctness={"passed": False, "agreement": 0.62, "threshold": 0.9}),
    ]


def test_ranks_by_p99_and_rejects_with_reasons() -> None:
    rec = recommend(_records(), slo_ms=10.0)
    (group,) = rec.groups
    assert group["measured"] and group["gpu"] == "h100-sxm" and group["ctx"] == 2048
    assert [v["backend"] for v in group["accepted"]] == ["torchao-int4", "bnb-nf4", "hf-graph"]
    rejected = {v["backend"]: " ".join(v["reasons"]) for v in group["rejected"]}
    assert "p99 40.00 ms > SLO 10 ms" in rejected["hf-compile"]  # its mean and p50 are under the SLO
    assert "p99 75.00" in rejected["hf-eager"]
    assert "failed" in rejected["exllamav2"] and "out of memory" in rejected["exllamav2"]
    assert "correctness" in rejected["bnb-int8"]
    assert all(v["reasons"] for v in group["rejected"])


def test_memory_budget_uses_peak_or_weights_plus_kv() -> None:
    rec = recommend(_records(), slo_ms=10.0, mem_gb=7.0)
    (group,) = rec.groups
    assert [v["backend"] for v in group["accepted"]] == ["torchao-int4", "bnb-nf4"]
    by = {v["backend"]: v for v in group["rejected"] + group["accepted"]}
    assert "17.00 GB (measured peak) > budget 7 GB" in " ".join(by["hf-graph"]["reasons"])
    # no peak: resident weights + the KV cache at ctx 2048 (qwen2.5-7b: 2*28*512*2048*2 B = 117 MB)
    assert by["bnb-nf4"]["mem_source"] == "estimated weights + KV"
    assert by["bnb-nf4"]["mem_bytes"] == int(5.5e9) + 2 * 28 * 512 * 2048 * 2


def test_unmeasured_gpu_shows_only_a_labelled_bound() -> None:
    rec = recommend(_records(), slo_ms=30.0, gpu="l4")
    (group,) = rec.groups
    assert not group["measured"] and group["gpu"] == "l4"
    every = group["accepted"] + group["rejected"]
    assert all(not v["measured"] for v in every)
    by = {v["backend"]: v for v in every}
    # bf16 Qwen2.5-7B on L4 (300 GB/s): the touched floor is ~50 ms > 30 ms: impossible
    assert not by["hf-eager"]["accepted"] and "floor bound" in by["hf-eager"]["reasons"][0]
    assert by["torchao-int4"]["accepted"]
    assert "bound, not measured" in by["torchao-int4"]["notes"][0]
    text = format_recommendation(rec)
    assert "BOUND, NOT MEASURED" in text


def test_bad_input() -> None:
    with pytest.raises(ConfigError, match="slo-ms"):
        recommend(_records(), slo_ms=0)
    with pytest.raises(ConfigError, match="results"):
        recommend([], slo_ms=10)
    with pytest.raises(ConfigError, match="ctx"):
        recommend(_records(), slo_ms=10, ctx=999)


def test_cli_on_a_results_dir(run_edgeprof, tmp_path) -> None:
    for r in _records():
        append_jsonl(tmp_path / "cells.jsonl", r)
    proc = run_edgeprof("recommend", "--results", str(tmp_path), "--slo-ms", "10", "--mem-gb", "7", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["groups"][0]["accepted"][0]["backend"] == "torchao-int4"
    proc = run_edgeprof("recommend", "--results", str(tmp_path), "--slo-ms", "10")
    assert "rejected hf-eager: p99 75.00 ms > SLO 10 ms" in proc.stdout
    proc = run_edgeprof("recommend", "--results", str(tmp_path / "nope"), "--slo-ms", "10")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
