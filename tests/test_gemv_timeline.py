"""benchmarks/gemv_timeline.py: its pure parts (the configs, a launch's phases from CTA records, the chain's medians),
checked against hand-made records. The records themselves come from the timeline variants on a GPU."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
gemv_timeline = pytest.importorskip("gemv_timeline")


def _rec(sm, start, waited, staged, looped, left, cycles_per_ns=2.0):
    return [sm, start, waited, staged, looped, left, 1000, 1000 + int((left - start) * cycles_per_ns)]


def test_configs_parse_and_a_bad_one_names_the_option():
    assert gemv_timeline.parse_configs("down:clscxt:10, qkv:clscxgt:7") == [[("down", "clscxt", 10)],
                                                                          [("qkv", "clscxgt", 7)]]
    assert gemv_timeline.parse_configs("gate_up:scxt:1+down:clscxt:10") == [[("gate_up", "scxt", 1),
                                                                           ("down", "clscxt", 10)]]
    for bad in ("down:clscxt", "down:clscxt:x", "down:clscxt:0", " , ", "gate_up:scxt:1+down"):
        with pytest.raises(ValueError, match="--configs"):
            gemv_timeline.parse_configs(bad)


def test_the_fields_are_the_ones_the_kernel_writes():
    from edgeprof.fast import w4cuda

    assert gemv_timeline.FIELDS == w4cuda.TRACE_FIELDS
    assert set(w4cuda.TRACE_VARIANTS) <= set(w4cuda.VARIANTS)
    assert all(twin in w4cuda.VARIANTS and w4cuda.VARIANTS[v][1:] == w4cuda.VARIANTS[twin][1:]
               for v, twin in w4cuda.TRACE_VARIANTS.items())
    assert not set(w4cuda.TRACE_VARIANTS) & set(w4cuda.BITWISE_BASE_VARIANTS + w4cuda.DECODER_VARIANTS)


def test_a_launch_splits_into_release_stream_and_tail():
    # previous launch ended at t = 1000; two CTAs: one started before that (PDL), one only after the wait released
    rec = np.array([_rec(3, 900, 1200, 1500, 9000, 9400), _rec(7, 1300, 1300, 1700, 8000, 10000)], dtype=np.int64)
    s = gemv_timeline.launch_summary(rec, 1000.0)
    assert s["period_ns"] == 9000 and s["release_ns"] == 200  # 10000 - 1000, 1200 - 1000
    assert s["started_before_prev_end"] == 1 and s["started_after_first_wait"] == 1  # 1300 > 1200
    assert s["started_after_prev_end"] == 1  # the CTA that started at 1300 > 1000
    assert s["stream_ns"] == 9000 - 1200 and s["tail_ns"] == 10000 - 9000
    assert s["stage_ns_p50"] == pytest.approx((300 + 400) / 2)
    assert s["loop_ns_max"] == 7500 and s["last_loop_sm"] == 3
    assert s["period_ns"] == s["release_ns"] + s["stream_ns"] + s["tail_ns"]  # the three parts add up


def test_the_first_launch_has_no_period_and_the_chain_takes_steady_medians():
    def launch(t0):  # every launch: 2 us of release, 8 of stream, 1 of tail after the previous end t0
        return np.array([_rec(0, t0 - 500, t0 + 2000, t0 + 2500, t0 + 10000, t0 + 11000),
                         _rec(1, t0 - 400, t0 + 2100, t0 + 2600, t0 + 9000, t0 + 9500)], dtype=np.int64)

    ends, traces = [0], []
    for _ in range(5):
        traces.append(launch(ends[-1]))
        ends.append(ends[-1] + 11000)
    s = gemv_timeline.chain_summary(traces)
    assert s["launches"][0]["period_ns"] is None and s["steady_launches"] == 5 - gemv_timeline.SKIP_FIRST
    m = s["steady_median"]
    assert m["period_ns"] == 11000 and m["release_ns"] == 2000 and m["tail_ns"] == 1000
    assert s["sm_clock_ghz"] == pytest.approx(2.0, rel=1e-3) and s["last_loop_sms"] == [0]
    assert s["timer_step_ns"] == 100  # the closest two recorded times: t0 + 2000 and t0 + 2100 (and -500 / -400)


def test_the_table_marks_a_failed_config_and_keeps_the_others():
    rows = [{"config": "down:clscxt:10", "check": "FAILED", "error": "x"},
            {"config": "down:clscxgt:10", "check": "bitwise", "chain_us": 11.5,
             "summary": {"steady_median": {"period_ns": 11500.0, "release_ns": 900.0, "started_after_prev_end": 97}}}]
    out = gemv_timeline.format_table(rows)
    assert "FAILED" in out and "11.50" in out and "0.90" in out and " 97 " in out


def test_a_chain_of_two_configs_gives_each_its_own_launches_medians():
    def launch(t0, stream):  # a launch that ends `stream` ns after the previous one
        return np.array([_rec(0, t0 - 100, t0 + 500, t0 + 900, t0 + stream - 300, t0 + stream)], dtype=np.int64)

    traces, t = [], 0
    for _ in range(4):  # gate_up (20 us), then down (10 us), in turn
        for stream in (20000, 10000):
            traces.append(launch(t, stream))
            t += stream
    per = gemv_timeline.chain_summary(traces)["launches"]
    gu, down = (gemv_timeline.member_medians(per, j, 2) for j in (0, 1))
    assert gu["period_ns"] == 20000 and down["period_ns"] == 10000 and down["tail_ns"] == 300


def test_a_kept_run_is_read_back_gzipped_and_redrawn_without_a_gpu(tmp_path, capsys):
    import gzip
    import json

    traces = [[_rec(s, t, t + 400, t + 800, t + 9000, t + 9500) for s in range(3)] for t in range(0, 40000, 10000)]
    rec = {"gpu": "NVIDIA H200", "pdl": True, "copy_bw": 4.23e12, "fields": list(gemv_timeline.FIELDS),
           "rows": [{"config": "down:clscxt:10", "check": "bitwise", "card": "NVIDIA H200", "chain_us": 10.0,
                     "traces": traces,
                     "summary": gemv_timeline.chain_summary([np.array(t, dtype=np.int64) for t in traces])}]}
    path = tmp_path / "gemv_timeline.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump(rec, f)
    assert gemv_timeline.main(["--from", str(path), "--out-dir", str(tmp_path / "plot")]) == 0
    assert "down:clscxt:10" in capsys.readouterr().out and (tmp_path / "plot" / "gemv_timeline.png").stat().st_size


def test_phases_keep_nanoseconds_at_real_global_times():
    # %globaltimer counts ns since the epoch (~1.8e18), where a float64 steps by 256 ns: subtract first
    base = 1_800_000_000_000_000_000
    rec = np.array([_rec(0, base + 1000, base + 1032, base + 1100, base + 9000, base + 9064)], dtype=np.int64)
    s = gemv_timeline.launch_summary(rec, base + 1000)
    assert s["release_ns"] == 32 and s["tail_ns"] == 64 and s["stage_ns_p50"] == 68
    chain = gemv_timeline.chain_summary([rec, rec + 10_000, rec + 20_000, rec + 30_000])
    assert chain["steady_median"]["period_ns"] == 10_000 and chain["steady_median"]["release_ns"] == 1032 + 10_000 - 9064
