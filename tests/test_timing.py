"""The clock: statistics over samples, and timing real decode steps on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

from edgeprof.errors import MeasurementError
from edgeprof.timing import LatencyStats, time_launch, time_steps


@pytest.fixture(scope="module")
def tiny_loaded():
    from edgeprof.sources import load_model

    return load_model("tiny-test", "cpu")


def test_stats_match_numpy_percentiles() -> None:
    xs = [5.0, 1.0, 3.0, 2.0, 4.0, 100.0]
    s = LatencyStats.of(xs)
    assert s.n == 6
    assert s.p50 == pytest.approx(np.percentile(xs, 50))
    assert s.p90 == pytest.approx(np.percentile(xs, 90))
    assert s.p99 == pytest.approx(np.percentile(xs, 99))
    assert s.max == 100.0 and s.mean == pytest.approx(sum(xs) / 6)
    assert s.raw == xs  # raw samples kept in order
    d = s.to_dict()
    assert set(d) == {"n", "p50", "p90", "p99", "max", "mean"}
    assert "raw" in s.to_dict(raw=True)


@pytest.mark.parametrize("bad", [[], [1.0, -2.0], [float("nan")]])
def test_stats_reject_bad_samples(bad) -> None:
    with pytest.raises(MeasurementError):
        LatencyStats.of(bad)


def test_time_launch_on_cpu_reads_the_token() -> None:
    import torch

    r = time_launch(lambda: torch.tensor([7]), position=3, device_kind="cpu")
    assert r.token_id == 7 and r.position == 3 and r.gpu_ms is None and r.wall_ms >= 0


def test_time_steps_on_a_real_decoder(tiny_loaded) -> None:
    from edgeprof.backends import registry

    dec = registry.create("hf-static", tiny_loaded, "cpu", 64)
    first = dec.prefill(list(range(1, 17)))
    assert first.position == 0 and dec.position == 16
    times = dec.time_steps(5)
    assert times.positions == [16, 17, 18, 19, 20] and dec.position == 21
    assert len(times.wall_ms) == 5 and all(w > 0 for w in times.wall_ms)
    assert times.gpu_ms is None and times.gpu is None
    assert times.wall.n == 5
    # the same tokens through Decoder.step (the single-step path)
    dec.reset()
    dec.prefill(list(range(1, 17)))
    assert [dec.step().token_id for _ in range(5)] == times.tokens
    with pytest.raises(MeasurementError):
        dec.time_steps(0)


def test_time_steps_times_any_launch_callable() -> None:
    import torch

    ids = iter(range(10, 20))
    times = time_steps(lambda: torch.tensor([next(ids)]), 4, "cpu", first_position=7)
    assert times.tokens == [10, 11, 12, 13] and times.positions == [7, 8, 9, 10]
    with pytest.raises(MeasurementError):
        time_steps(lambda: torch.tensor([0]), 0, "cpu", 0)


def test_pipelined_steps_launch_one_ahead_and_time_from_the_previous_read() -> None:
    import time

    import torch

    events = []  # ("launch", i) / ("read", i) in the order they happen

    class Out:
        def __init__(self, i):
            self.i = i

        def __int__(self):
            events.append(("read", self.i))
            time.sleep(0.004)  # the wait for this step's token
            return 100 + self.i

    launched = iter(range(4))

    def launch():
        i = next(launched)
        events.append(("launch", i))
        return Out(i)

    times = time_steps(launch, 4, "cpu", first_position=0, ahead=1)
    assert times.tokens == [100, 101, 102, 103]
    # step i + 1 is on the device before step i is read; nothing past the n steps asked for
    assert events == [("launch", 0), ("launch", 1), ("read", 0), ("launch", 2), ("read", 1), ("launch", 3),
                      ("read", 2), ("read", 3)]
    # each wall time is one wait (from the previous read), not two (from its own, earlier launch)
    assert all(3.5 < w < 7.5 for w in times.wall_ms), times.wall_ms
    with pytest.raises(MeasurementError, match="ahead"):
        time_steps(lambda: torch.tensor([0]), 2, "cpu", 0, ahead=2)


def test_a_queued_step_is_timed_from_the_previous_read() -> None:
    import time

    import torch

    from edgeprof.timing import launch_timed

    step = launch_timed(lambda: torch.tensor([5]), 9, "cpu")
    time.sleep(0.01)
    since = time.perf_counter()  # the previous token was read after this step was launched
    r = step.finish(since=since)
    assert r.token_id == 5 and r.wall_ms < 5 and r.t_read >= since
    assert launch_timed(lambda: torch.tensor([5]), 9, "cpu").finish(since=0.0).wall_ms < 5


def test_time_graph_needs_calls_and_repeats():
    from edgeprof.timing import time_graph

    with pytest.raises(MeasurementError, match="at least one call"):
        time_graph([], 5)
    with pytest.raises(MeasurementError, match="one repeat"):
        time_graph([lambda: None], 0)
