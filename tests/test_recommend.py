"""edgeprof.recommend: p99 (not mean) against the SLO, memory budget, reasons, floor bounds."""

from __future__ import annotations

import json

import pytest
from analysis_records import make_record

from edgeprof.errors import ConfigError
from edgeprof.recommend import format_recommendation, recommend
from edgeprof.records import append_jsonl


def _kc(passed: bool, value: float = 0.01) -> dict:
    return {"passed": passed, "metric": "max rel logit error", "value": value, "bound": 0.1,
            "bound_reason": "test", "positions": [2040, 2047]}


def _q(agreement: float, ppl: float) -> dict:
    return {"agreement": agreement, "perplexity": ppl, "model": "smollm2-135m"}


def _records():
    tail = [8.0] * 97 + [40.0] * 3  # p50 8 ms, mean ~9 ms, p99 40 ms: a spiky backend
    ok = {"kernel_correctness": _kc(True)}
    return [
        make_record(backend="hf-eager", samples=[75.0] * 30, steady_state_mem_bytes=int(17e9), **ok,
                    quality=_q(1.0, 9.1)),
        make_record(backend="hf-graph", samples=[8.2] * 29 + [8.6], steady_state_mem_bytes=int(17e9), **ok,
                    quality=_q(0.99, 9.1)),
        make_record(backend="hf-compile", samples=tail, steady_state_mem_bytes=int(17e9), **ok),
        make_record(backend="torchao-int4", weights="rtn4-g128", samples=[6.3] * 30,
                    steady_state_mem_bytes=int(6e9), peak_mem_bytes=int(30e9), load_peak_mem_bytes=int(31e9), **ok,
                    quality=_q(0.86, 10.4)),
        make_record(backend="bnb-nf4", weights="nf4", samples=[7.6] * 30, resident_weight_bytes=int(5.5e9), **ok,
                    quality=_q(0.91, 9.9)),
        make_record(backend="exllamav2", weights="rtn4-g128", status="failed",
                    error="out of memory: CUDA out of memory"),
        make_record(backend="bnb-int8", weights="int8", samples=[9.0] * 30, steady_state_mem_bytes=int(9e9),
                    kernel_correctness=_kc(False, 0.9)),
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
    assert "fails kernel correctness" in rejected["bnb-int8"]
    assert all(v["reasons"] for v in group["rejected"])
    text = format_recommendation(rec)
    assert "agree" in text and "0.860" in text and "10.40" in text  # quality beside latency


def test_quality_floor_rejects_and_unknown_quality_is_not_assumed_good() -> None:
    (group,) = recommend(_records(), slo_ms=10.0, min_agreement=0.9).groups
    assert [v["backend"] for v in group["accepted"]] == ["bnb-nf4", "hf-graph"]
    rejected = {v["backend"]: " ".join(v["reasons"]) for v in group["rejected"]}
    assert "agreement with bf16 0.860 < --min-agreement 0.9" in rejected["torchao-int4"]
    with pytest.raises(ConfigError, match="min-agreement"):
        recommend(_records(), slo_ms=10.0, min_agreement=2)


def test_memory_budget_uses_steady_state_or_weights_plus_kv() -> None:
    rec = recommend(_records(), slo_ms=10.0, mem_gb=7.0)
    (group,) = rec.groups
    # torchao-int4's 30 GB serving peak and 31 GB load peak do not count: it decodes in 6 GB
    assert [v["backend"] for v in group["accepted"]] == ["torchao-int4", "bnb-nf4"]
    by = {v["backend"]: v for v in group["rejected"] + group["accepted"]}
    assert "17.00 GB (measured steady state) > budget 7 GB" in " ".join(by["hf-graph"]["reasons"])
    assert any("load peak 31.00 GB" in n for n in by["torchao-int4"]["notes"])
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
    assert any("bound, not measured" in n for n in by["torchao-int4"]["notes"])
    text = format_recommendation(rec)
    assert "BOUND, NOT MEASURED" in text
    # a failing kernel is never recommended, not even from a floor bound
    assert not by["bnb-int8"]["accepted"] and "kernel correctness" in " ".join(by["bnb-int8"]["reasons"])


def test_unmeasured_gpu_ranks_by_measured_efficiency_not_by_the_floor() -> None:
    """nf4's floor is below rtn4's (no g_idx), but a backend reaching 10% of its floor is no fast path."""
    recs = [make_record(backend="torchao-int4", weights="rtn4-g128", samples=[3.0] * 30,
                        kernel_correctness=_kc(True)),
            make_record(backend="bnb-nf4", weights="nf4", samples=[20.0] * 30, kernel_correctness=_kc(True))]
    (group,) = recommend(recs, slo_ms=1000.0, gpu="l4").groups
    order = [v["backend"] for v in group["accepted"]]
    assert order == ["torchao-int4", "bnb-nf4"]
    nf4 = group["accepted"][1]
    assert nf4["bound_ms"] < group["accepted"][0]["bound_ms"] and nf4["projected_ms"] > nf4["bound_ms"]
    assert any("an estimate, not a measurement" in n for n in nf4["notes"])


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


def test_borrow_quality_same_backend_then_same_quantizer_and_names_the_donor() -> None:
    from edgeprof.recommend import borrow_quality

    donors = [
        {"backend": "torchao-int4", "weights": "rtn4-g64", "quality": {"agreement": 0.43, "perplexity": 21.9}},
        {"backend": "hf-eager", "weights": "bf16", "quality": {"agreement": 1.0, "perplexity": 9.7}},
        {"backend": "bnb-nf4", "weights": "nf4", "quality": {"agreement": None}},  # not measured: never a donor
    ]
    cells = [
        {"backend": "torchao-int4", "weights": "rtn4-g128"},  # same backend
        {"backend": "exllamav2", "weights": "rtn4-g128"},  # same quantizer (rtn4, another group)
        {"backend": "bnb-nf4", "weights": "nf4"},  # donor has none: stays unknown
        {"backend": "hf-graph", "weights": "bf16", "quality": {"agreement": 0.99, "perplexity": 9.8}},  # kept
    ]
    out = borrow_quality(cells, donors, "cpu-run")
    assert out[0]["quality"]["agreement"] == 0.43 and out[0]["quality"]["borrowed_from"] == "torchao-int4 (rtn4-g64) in cpu-run"
    assert out[1]["quality"]["borrowed_from"].startswith("torchao-int4")
    assert (out[2].get("quality") or {}).get("agreement") is None
    assert out[3]["quality"] == {"agreement": 0.99, "perplexity": 9.8}
    assert "quality" not in cells[0]  # inputs untouched
