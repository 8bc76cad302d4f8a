"""edgeprof.ab: the statistics, the protocol helpers, and real fresh-process sessions on CPU.

`cpu-smoke` (hf-eager vs hf-static on tiny-test) exists to exercise the machinery here:
fresh processes, alternated order, per-session ratios, scipy's bootstrap. It is not a
finding. `cuda-graphs` must refuse to run on a CPU-only machine, saying why.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from edgeprof.ab import INTERVENTIONS, bootstrap_median_ci, format_result, parse_pair, session_ratio
from edgeprof.errors import ConfigError, MeasurementError, UnknownChoiceError


def test_session_ratio_uses_medians() -> None:
    # one huge outlier in the control arm does not move a median ratio
    assert session_ratio([10, 10, 10, 1000], [5, 5, 5, 5]) == pytest.approx(2.0)


def test_bootstrap_matches_scipy_and_contains_the_median() -> None:
    ratios = [1.25, 1.26, 1.27, 1.255, 1.262, 1.258, 1.249, 1.266, 1.251, 1.259]
    out = bootstrap_median_ci(ratios, seed=3)
    assert out["median"] == pytest.approx(np.median(ratios))
    lo, hi = out["ci"]
    assert lo <= out["median"] <= hi and lo < hi
    ref = stats.bootstrap((np.asarray(ratios),), np.median, confidence_level=0.95, n_resamples=10_000,
                          method=out["method"], vectorized=True, rng=np.random.default_rng(3))
    assert (lo, hi) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    assert bootstrap_median_ci(ratios, seed=3)["ci"] == out["ci"]  # seeded: reproducible


def test_bootstrap_small_and_degenerate_samples() -> None:
    three = bootstrap_median_ci([1.0, 1.1, 1.3])
    assert np.isfinite(three["ci"]).all() and three["ci"][0] <= 1.1 <= three["ci"][1]
    assert bootstrap_median_ci([1.2, 1.2, 1.2])["ci"] == [1.2, 1.2]
    with pytest.raises(MeasurementError, match="at least 2"):
        bootstrap_median_ci([1.2])


def test_interventions_and_pairs() -> None:
    assert (INTERVENTIONS["cuda-graphs"].control, INTERVENTIONS["cuda-graphs"].treatment) == ("hf-static", "hf-graph")
    assert INTERVENTIONS["cpu-smoke"].machinery_only
    assert parse_pair("hf-static,hf-graph") == ("hf-static", "hf-graph")
    with pytest.raises(ConfigError, match="backend-pair"):
        parse_pair("hf-static")
    with pytest.raises(UnknownChoiceError, match="backend"):
        parse_pair("hf-static,nope")


def test_cuda_graphs_refuse_cpu_with_a_reason(run_edgeprof) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    proc = run_edgeprof("ab", "--intervention", "cuda-graphs", "--model", "tiny-test", "--ctx", "64",
                        "--sessions", "3")
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "unavailable" in err and "NVIDIA GPU" in err and "cpu-smoke" in err


def test_bad_input(run_edgeprof) -> None:
    proc = run_edgeprof("ab", "--intervention", "warp-drive", "--model", "tiny-test", "--ctx", "64")
    assert proc.returncode == 2 and "intervention" in proc.stderr and "cpu-smoke" in proc.stderr
    proc = run_edgeprof("ab", "--intervention", "cpu-smoke", "--model", "tiny-test", "--ctx", "100000")
    assert proc.returncode == 2 and "ctx" in proc.stderr and "512" in proc.stderr


@pytest.mark.slow
def test_cpu_smoke_fresh_sessions(run_edgeprof, tmp_path) -> None:
    out = tmp_path / "ab.json"
    proc = run_edgeprof("ab", "--intervention", "cpu-smoke", "--model", "tiny-test", "--ctx", "64",
                        "--sessions", "3", "--steps", "6", "--warmup", "2", "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["n_sessions"] == 3 and r["machinery_only"] and r["synthetic"]
    sessions = r["sessions"]
    assert len({s["pid"] for s in sessions}) == 3  # each session its own process
    assert [s["order"][0] for s in sessions] == ["hf-eager", "hf-static", "hf-eager"]  # alternated
    assert sessions[0]["control"]["kernel_correctness"]["passed"]
    assert sessions[0]["treatment"]["kernel_correctness"]["passed"]
    assert sessions[1]["control"]["kernel_correctness"]["passed"] is None  # checked in the first session only
    for s in sessions:
        assert s["control"]["prefill_tokens"] == 63  # bench's protocol: fill to ctx-1
        assert len(s["control"]["wall_ms"]) == 6 and len(s["treatment"]["wall_ms"]) == 6
        assert s["ratio"] == pytest.approx(np.median(s["control"]["wall_ms"]) / np.median(s["treatment"]["wall_ms"]))
    assert r["median_ratio"] == pytest.approx(np.median([s["ratio"] for s in sessions]))
    lo, hi = r["ci"]
    assert lo <= r["median_ratio"] <= hi
    assert "machinery test" in proc.stdout and "bootstrap" in proc.stdout
    assert "machinery test" in format_result(r)
