"""`edgeprof bench` / `run_cell`: the record contract, bad input, and the CLI on the CPU."""

from __future__ import annotations

import json

import pytest

from edgeprof.bench import CellSpec, plan, run_cell
from edgeprof.errors import BackendUnavailableError, ContextLengthError, UnknownChoiceError

CONTRACT_KEYS = {
    "model", "model_label", "synthetic", "backend", "weights", "ctx", "steps", "warmup", "device", "gpu",
    "gpu_name", "wall_ms", "gpu_ms", "stats", "floor", "resident_weight_bytes", "peak_mem_bytes", "capture_s",
    "kernel_correctness", "quality", "steady_state_mem_bytes", "load_peak_mem_bytes", "telemetry_before", "telemetry_after", "host_cpu", "versions", "command", "timestamp",
    "status", "error",
}
FLOOR_KEYS = {"peak_bytes_per_s", "floor_ms", "touched_floor_ms", "fraction", "touched_fraction", "calibrated"}


def test_plan_fills_to_ctx_minus_one() -> None:
    prefill, max_ctx = plan(2048, 30, 5, 32768)
    assert prefill == 2047 and max_ctx >= 2047 + 35
    prefill, max_ctx = plan(512, 30, 5, 512)  # at the model limit: fill less, every step still fits
    assert max_ctx <= 512 and prefill == 512 - (max_ctx - prefill)


def test_plan_leaves_room_for_the_gate() -> None:
    # The gate (prompt + its decode steps) runs on the cell's decoder first: max_ctx covers both runs.
    prefill, max_ctx = plan(32, 6, 2, 512, gate_tokens=32 + 20)
    assert prefill == 31 and max_ctx >= 32 + 20 and max_ctx >= prefill + 6 + 2
    assert plan(2048, 30, 5, 32768, gate_tokens=52) == plan(2048, 30, 5, 32768)  # long cells: unchanged


def test_short_ctx_cell_checks_the_last_positions() -> None:
    rec = run_cell(CellSpec("tiny-test", "hf-static", 32, steps=6, warmup=2, device="cpu", quality=False))
    assert rec["status"] == "ok", rec["error"]
    c = rec["kernel_correctness"]
    assert c["passed"] and c["steps"] == 8 and c["positions"] == [24, 31]  # the 8 positions before ctx
    assert rec["prefill_tokens"] == 31 and rec["positions"][0] == 31 + 2


def test_run_cell_tiny_static_record() -> None:
    rec = run_cell(CellSpec("tiny-test", "hf-static", 96, steps=6, warmup=2, device="cpu", quality=False), "test")
    assert rec["status"] == "ok", rec["error"]
    assert set(rec) >= CONTRACT_KEYS
    json.dumps(rec)  # JSON-able
    assert rec["synthetic"] is True and "SYNTHETIC" in rec["model_label"]
    assert rec["weights"] == "bf16" and rec["gpu"] == "cpu" and rec["device"] == "cpu"
    assert len(rec["wall_ms"]) == 6 and rec["gpu_ms"] is None and rec["stats"]["gpu"] is None
    assert set(rec["stats"]["wall"]) == {"n", "p50", "p90", "p99", "max", "mean"}
    f = rec["floor"]
    assert set(f) >= FLOOR_KEYS
    assert f["fraction"] == pytest.approx(f["floor_ms"] / rec["stats"]["wall"]["p50"])
    assert f["touched_fraction"] == pytest.approx(f["touched_floor_ms"] / rec["stats"]["wall"]["p50"])
    assert rec["prefill_tokens"] == 95 and rec["positions"][0] == 95 + 2  # ctx-1 filled, then 2 warm-up steps
    c = rec["kernel_correctness"]
    assert c["passed"] and c["value"] < c["bound"] and c["bound_reason"] and c["positions"] == [88, 95]
    assert rec["quality"] is None  # quality=False
    assert rec["resident_weight_bytes"] > 0 and rec["versions"]["torch"]
    assert rec["steady_state_mem_bytes"] > 0 and rec["mem_source"].startswith("cpu")


def test_eager_bf16_is_checked_against_fp32_on_the_cpu() -> None:
    rec = run_cell(CellSpec("tiny-test", "hf-eager", 64, steps=3, warmup=1, device="cpu", quality=False))
    assert rec["status"] == "ok" and rec["kernel_correctness"]["passed"]
    assert "float32" in rec["kernel_correctness"]["reference"]
    assert rec["command"].startswith("edgeprof bench --model tiny-test --backend hf-eager")


def test_failing_kernel_check_refuses_timings(monkeypatch) -> None:
    from edgeprof import correctness

    monkeypatch.setattr(correctness, "WEIGHT_ONLY", correctness.Bound(1e-9, "nothing passes"))
    rec = run_cell(CellSpec("tiny-test", "hf-static", 64, steps=3, warmup=1, device="cpu", quality=False))
    assert rec["status"] == "failed" and "--allow-mismatch" in rec["error"] and rec["wall_ms"] == []
    assert rec["kernel_correctness"]["passed"] is False
    rec = run_cell(CellSpec("tiny-test", "hf-static", 64, steps=3, warmup=1, device="cpu", allow_mismatch=True,
                            quality=False))
    assert rec["status"] == "ok" and rec["kernel_correctness"]["passed"] is False and len(rec["wall_ms"]) == 3


@pytest.mark.parametrize("spec,exc", [
    (CellSpec("tiny-test", "no-such-backend", 64), UnknownChoiceError),
    (CellSpec("no-such-model", "hf-eager", 64), UnknownChoiceError),
    (CellSpec("tiny-test", "hf-eager", 4096, device="cpu"), ContextLengthError),
    (CellSpec("tiny-test", "awq", 64), BackendUnavailableError),
])
def test_bad_input_raises_or_is_recorded(spec, exc) -> None:
    with pytest.raises(exc):
        run_cell(spec, raise_invalid=True)
    rec = run_cell(spec)
    assert rec["status"] == "failed" and rec["error"]


def test_gpu_only_backend_on_cpu_is_refused() -> None:
    with pytest.raises(BackendUnavailableError, match="GPU"):
        run_cell(CellSpec("tiny-test", "hf-graph", 64, device="cpu"), raise_invalid=True)


@pytest.mark.slow
def test_real_smollm2_on_cpu_with_quality(tmp_cache) -> None:
    rec = run_cell(CellSpec("default", "edgeprof-fast-int4", 128, steps=4, warmup=1, device="cpu",
                            quality_tokens=48))
    assert rec["status"] == "ok", rec["error"]
    assert rec["synthetic"] is False and "real weights" in rec["model_label"]
    assert rec["kernel_correctness"]["passed"] and rec["weights"] == "rtn4-g64"
    q = rec["quality"]
    assert q["model"] == "default" and q["tokens"] == 48 and not q["cached"]
    # quality is reported, not judged: 4-bit RTN on a 135M model matches bf16 on about 0.43 of the tokens
    assert 0.0 < q["agreement"] < 1.0
    assert q["perplexity"] > q["reference_perplexity"] > 1


def test_cli_bench_and_backends(run_edgeprof, tmp_path) -> None:
    out = tmp_path / "cell.json"
    r = run_edgeprof("bench", "--model", "tiny-test", "--backend", "hf-static", "--ctx", "64", "--steps", "4",
                     "--warmup", "1", "--device", "cpu", "--no-quality", "--out", str(out), timeout=300)
    assert r.returncode == 0, r.stderr
    assert "tiny-test [SYNTHETIC random weights]" in r.stdout and "p50" in r.stdout
    rec = json.loads(out.read_text())
    assert rec["status"] == "ok" and rec["command"].startswith("edgeprof bench --model tiny-test")
    assert [p.name for p in tmp_path.iterdir()] == ["cell.json"]  # atomic: nothing else left

    r = run_edgeprof("bench", "--model", "tiny-test", "--backend", "hf-eager", "--ctx", "100000", timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "ctx" in r.stderr and "512" in r.stderr and "Traceback" not in r.stderr

    r = run_edgeprof("backends", "--json", timeout=300)
    table = {row["name"]: row for row in json.loads(r.stdout)}
    assert table["hf-eager"]["available"] and table["awq"]["available"] is False and table["awq"]["reason"]


def test_run_cell_reuses_a_given_decoder_across_cells() -> None:
    from edgeprof.backends import registry
    from edgeprof.sources import load_model

    loaded = load_model("tiny-test", "cpu")
    dec = registry.create("hf-static", loaded, "cpu", 140)
    recs = [run_cell(CellSpec("tiny-test", "hf-static", ctx, steps=3, warmup=1, device="cpu", gate=False),
                     loaded=loaded, decoder=dec) for ctx in (64, 128)]
    assert [r["status"] for r in recs] == ["ok", "ok"], [r["error"] for r in recs]
    assert [r["session_max_ctx"] for r in recs] == [140, 140]
    # the second cell starts from an emptied cache: filled to ctx-1 again, then 1 warm-up step
    assert [r["prefill_tokens"] for r in recs] == [63, 127] and recs[1]["positions"][0] == 127 + 1
    too_long = run_cell(CellSpec("tiny-test", "hf-static", 200, steps=3, warmup=1, device="cpu", gate=False),
                        loaded=loaded, decoder=dec)
    assert too_long["status"] == "failed" and "max_ctx >= 211" in too_long["error"]
    again = run_cell(CellSpec("tiny-test", "hf-static", 32, steps=3, warmup=1, device="cpu", gate=False),
                     loaded=loaded, decoder=dec)  # still open and usable: its owner closes it
    assert again["status"] == "ok" and again["prefill_tokens"] == 31
