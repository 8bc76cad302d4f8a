"""The prediction model on hand-made traces (pure, no GPU), the CLI, and recommend on predictions."""

from __future__ import annotations

import json

import pytest

from edgeprof.cli import main
from edgeprof.predict import (
    Card,
    KernelGroup,
    Params,
    Profile,
    fit_host_per_kernel,
    interleave,
    predict,
    profile_from_explain,
    retime_group,
    simulate_eager,
)

A = Card("a", bandwidth_gbs=1000, sm_count=100, sm_mhz=2000)
B2X = Card("b", bandwidth_gbs=2000, sm_count=100, sm_mhz=2000)  # twice the bandwidth, same SMs
P = Params(attainable_fraction=1.0, fixed_us=2.0, device_band=0.1, host_spread=(0.5, 2.0))


def test_bandwidth_bound_kernel_scales_with_bandwidth_only() -> None:
    # 10 launches, 1 GB at exactly the attainable 1000 GB/s: 1 ms streaming + 10 x 2 us fixed
    g = KernelGroup("gemv", "gemv/gemm", 10, 1.0 + 0.02, 1e9)
    assert retime_group(g, A, B2X, P) == pytest.approx(0.02 + 0.5)


def test_sm_bound_kernel_does_not_scale_with_bandwidth() -> None:
    g = KernelGroup("dequant", "gemv/gemm", 10, 1.02, 0.0)  # moves no bytes: all SM-limited
    assert retime_group(g, A, B2X, P) == pytest.approx(1.02)
    half_sms = Card("c", 2000, 50, 2000)
    assert retime_group(g, A, half_sms, P) == pytest.approx(0.02 + 2.0)


def test_half_bandwidth_kernel_splits_between_memory_and_sm() -> None:
    g = KernelGroup("k", "gemv/gemm", 1, 0.002 + 1.0, 0.5e9)  # 500 GB/s = f 0.5
    assert retime_group(g, A, B2X, P) == pytest.approx(0.002 + 0.5 * 0.5 + 0.5 * 1.0)


def test_fixed_cost_scales_with_clock() -> None:
    g = KernelGroup("tiny", "norm/elementwise", 100, 0.2, 0.0)  # 2 us each: all fixed
    assert retime_group(g, A, Card("slow", 1000, 100, 1000), P) == pytest.approx(0.4)


def test_eager_simulation_host_bound_and_device_bound() -> None:
    assert simulate_eager([0.001] * 10, 0.1)[0] == pytest.approx(1.001)  # host-bound: 10 launches x 0.1
    assert simulate_eager([1.0] * 10, 0.01)[0] == pytest.approx(10.01)  # device-bound: kernels back to back
    h = fit_host_per_kernel([0.001] * 10, 2.0)
    assert simulate_eager([0.001] * 10, h)[0] == pytest.approx(2.0, rel=1e-6)
    assert fit_host_per_kernel([1.0] * 10, 5.0) == 0.0


def test_interleave_keeps_every_launch_and_total() -> None:
    gs = (KernelGroup("a", "x", 3, 3.0, 0), KernelGroup("b", "y", 2, 1.0, 0))
    seq = interleave(gs, [3.0, 1.0])
    assert len(seq) == 5 and sum(seq) == pytest.approx(4.0)


def _eager(host_ms_total: float) -> Profile:
    # 100 kernels of 0.05 ms moving 50 MB each at 1000 GB/s; step = host-bound 20 ms
    g = KernelGroup("gemv", "gemv/gemm", 100, 5.0, 100 * 0.048e9)
    return Profile("eager", 2048, "a", host_ms_total, 5.0, (g,), graph=False)


def test_host_bound_vs_device_bound_comes_out_of_the_model() -> None:
    fast_gpu_slow_host = predict(_eager(20.0), A, B2X, P)
    assert fast_gpu_slow_host.bound == "host" and fast_gpu_slow_host.predicted_ms == pytest.approx(20.0, rel=0.01)
    slow_gpu = Card("slow", 100, 100, 2000)  # 10x less bandwidth: device 48 ms > host 20 ms
    q = predict(_eager(20.0), A, slow_gpu, P)
    assert q.bound == "device" and q.predicted_ms > 45
    # a faster host makes the same cell device-bound on the same GPU
    assert predict(_eager(20.0), A, A, P, host_cpu_factor=0.1).bound == "device"


def test_graph_step_is_rest_plus_device_and_band_brackets_it() -> None:
    g = KernelGroup("gemv", "gemv/gemm", 10, 10.0, 10e9)
    prof = Profile("graph", 2048, "a", 10.5, 10.0, (g,), graph=True, step_spread=0.01)
    q = predict(prof, A, B2X, P)
    assert q.predicted_ms == pytest.approx(0.5 + 0.02 + 4.99)
    assert q.band_ms[0] < q.predicted_ms < q.band_ms[1] and q.label == "PREDICTED"


def test_unmeasured_and_unified_memory_targets_carry_a_caveat() -> None:
    prof = Profile("graph", 2048, "a", 1.0, 1.0, (KernelGroup("k", "x", 1, 1.0, 1e9),), graph=True)
    jetson = Card("orin", 204.8, 16, 1300, unified_memory=True)
    assert any("unified memory" in c for c in predict(prof, A, jetson, P).caveats)
    assert predict(prof, A, A, P, measured_gpus=("a",)).caveats == []


def _explain_record(gpu: str = "h100-sxm") -> dict:
    return {"kind": "explain", "backend": "edgeprof-fast", "model": "qwen2.5-7b", "weights": "bf16", "ctx": 2048,
            "gpu": gpu, "capture_s": 0.5, "unprofiled_wall_ms": {"median": 6.0, "raw": [5.9, 6.0, 6.1]},
            "per_step": {"busy_ms": 5.7, "class_ms": {"gemv/gemm": 5.2, "attention": 0.3, "other": 0.2},
                         "class_kernels": {"gemv/gemm": 200, "attention": 28, "other": 100},
                         "class_bytes": {"gemv/gemm": 14.1e9, "attention": 1.2e8, "other": 0}},
            "exact": {"device_time_scale": 1.0}}


def test_profile_from_older_explain_record_has_one_group_per_class() -> None:
    prof = profile_from_explain(_explain_record())
    assert {g.cls for g in prof.groups} == {"gemv/gemm", "attention", "other"} and prof.graph
    assert prof.step_ms == 6.0 and 0 < prof.step_spread < 0.02


def test_cli_predict_json_and_text(tmp_path, capsys) -> None:
    f = tmp_path / "explain-edgeprof-fast.json"
    f.write_text(json.dumps(_explain_record()))
    assert main(["predict", "--from", str(f), "--gpu", "h200", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    q = out["predictions"][0]
    assert out["label"] == q["label"] == "PREDICTED" and q["to_gpu"] == "h200"
    assert 6.0 * 3350 / 4800 < q["predicted_ms"] < 6.0  # better than bandwidth alone, faster than the source
    assert main(["predict", "--from", str(f), "--gpu", "orin-agx-64"]) == 0
    text = capsys.readouterr().out
    assert "PREDICTED" in text and "no measurement backs" in text
    assert main(["predict", "--from", str(f), "--gpu", "h200", "--host-cpu", "0"]) == 2
    assert "host-cpu" in capsys.readouterr().err


def test_recommend_ranks_by_prediction_and_drops_failed_kernels(tmp_path, capsys) -> None:
    from edgeprof.recommend import recommend

    fast, int4 = _explain_record(), _explain_record()
    int4.update(backend="edgeprof-fast-int4", weights="gptq4-g128")
    cells = [{"model": "qwen2.5-7b", "backend": "edgeprof-fast", "ctx": 2048, "gpu": "h100-sxm", "status": "ok"},
             {"model": "qwen2.5-7b", "backend": "edgeprof-fast-int4", "ctx": 2048, "gpu": "h100-sxm", "status": "ok",
              "kernel_correctness": {"passed": False, "reason": "max abs diff 3.1"}}]
    rec = recommend(cells, slo_ms=100, gpu="l4", profiles=[fast, int4]).to_dict()
    g = rec["groups"][0]
    assert g["predicted"] and [v["backend"] for v in g["accepted"]] == ["edgeprof-fast"]
    assert "kernel correctness" in g["rejected"][0]["reasons"][0]
    cells[1].pop("kernel_correctness")
    cells[1]["gate"] = {"passed": False}
    g = recommend(cells, slo_ms=100, gpu="l4", profiles=[fast, int4]).to_dict()["groups"][0]
    assert [v["backend"] for v in g["accepted"]] == ["edgeprof-fast"]


def test_runner_swap_launches_graph_kernels_eagerly_at_the_given_host_cost() -> None:
    from edgeprof.predict import host_per_kernel

    # a replayed graph: 100 kernels, 5 ms of device work, 5.5 ms step
    g = KernelGroup("gemv", "gemv/gemm", 100, 5.0, 100 * 0.048e9)
    graph = Profile("graph", 2048, "a", 5.5, 5.0, (g,), graph=True)
    assert predict(graph, A, A, P).predicted_ms == pytest.approx(5.5, rel=0.01)
    eager = _eager(20.0)
    h = host_per_kernel(eager)
    assert h == pytest.approx(0.2, rel=0.01)  # hand: 100 launches in a host-bound 20 ms step
    swapped = predict(graph, A, A, P, eager_host_per_kernel_ms=h)
    assert swapped.bound == "host" and swapped.predicted_ms == pytest.approx(20.0, rel=0.02)
    assert predict(graph, A, A, P, host_cpu_factor=0.5, eager_host_per_kernel_ms=h).predicted_ms == pytest.approx(
        10.0, rel=0.06)
