"""The one clock of edgeprof.

Two times per decode step:

* **wall** (`time.perf_counter`): from the moment the step is launched (or, where the step
  was queued behind one whose token was still unread, from that token's read) until its
  token is readable on the host. This is what a robot waiting for the token experiences:
  the time since it got the previous one, or since it asked.
* **gpu** (CUDA events): from an event recorded just before the step's first kernel
  to one recorded just after its last, on the current stream. None on the CPU.

What synchronises, and why
--------------------------
A step's token must be read on the host: the robot needs it, and for greedy decoding
it is the step's result. That host read (`.item()`) is the *only* synchronisation
inside a measured step; it sits at the end, so wall time = launch + device work +
read. Nothing else syncs inside a step: event timestamps are read after the loop
(`time_steps`) or, for a single step, after the token read (`time_launch`). A token read
from mapped host memory (edgeprof.fast.readback) may arrive before the stream has finished
the step; the end event is waited for only after the wall clock has stopped. The daemon may split a step into `launch_timed()` and
`LaunchedStep.finish()` to do its host work for the previous token in between; the
wall time then still runs from launch to token read.

Pipelined steps (`time_steps(..., ahead=1)`, the daemon's `session.speculate`): a decoder whose
step inputs stay on the device can have step N+1 queued before token N is read, so the device
never waits for the host's turn-around (read, Python, the next launch). Step N+1's wall time then
runs from token N's read, not from its own launch: the token-to-token interval, with nothing
counted twice. Its GPU time is its own event pair as always. The device-side token itself feeds the next step without a
copy. Warm-up is the caller's business; graph capture / compile time is reported
apart by `Decoder.warmup()`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgeprof.errors import MeasurementError


@dataclass
class StepResult:
    """One generated token and how long it took."""

    token_id: int
    position: int  # KV position the token was produced at (= tokens in cache before it)
    wall_ms: float  # perf_counter around launch + the host read of the token (see the module doc)
    gpu_ms: float | None  # CUDA-event time of the device work; None on CPU
    t_read: float | None = None  # perf_counter when the token was read (the next queued step's wall starts here)


@dataclass
class LatencyStats:
    """Summary of latency samples in milliseconds; `raw` keeps every sample."""

    n: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float
    raw: list[float] = field(default_factory=list, repr=False)

    @classmethod
    def of(cls, samples_ms) -> LatencyStats:
        xs = np.asarray(list(samples_ms), dtype=float)
        if xs.size == 0:
            raise MeasurementError("no latency samples to summarise; run at least one step")
        if not np.all(np.isfinite(xs)) or np.any(xs < 0):
            raise MeasurementError(f"latency samples must be finite and non-negative, got {xs.tolist()[:5]}...")
        p50, p90, p99 = np.percentile(xs, [50, 90, 99])  # linear interpolation between order statistics
        return cls(int(xs.size), float(p50), float(p90), float(p99), float(xs.max()), float(xs.mean()),
                   [float(x) for x in xs])

    def to_dict(self, raw: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not raw:
            d.pop("raw")
        return d


def _cuda():
    import torch

    return torch.cuda


def _read_token(out: Any) -> int:
    """The host read that ends a step (a device sync on CUDA; see the module doc)."""
    return int(out.reshape(-1)[-1].item()) if hasattr(out, "reshape") else int(out)


_EVENTS = threading.local()


EVENT_RING = 3  # reusable event pairs per thread: a step being read, one queued behind it, one spare


def _event_pair():
    """A reusable (start, end) CUDA event pair, the next of the thread's EVENT_RING: creating and
    destroying two events per token costs more than the daemon's whole bookkeeping. Safe to reuse
    because at most two steps per thread are unread at once (the one being read and one queued
    behind it), and each reads its elapsed time when it is finished."""
    ring = getattr(_EVENTS, "ring", None)
    if ring is None:
        cuda = _cuda()
        ring = _EVENTS.ring = [(cuda.Event(enable_timing=True), cuda.Event(enable_timing=True))
                               for _ in range(EVENT_RING)]
        _EVENTS.next = 0
    _EVENTS.next = (_EVENTS.next + 1) % EVENT_RING
    return ring[_EVENTS.next]


@dataclass
class LaunchedStep:
    """A step enqueued on the device whose token has not been read yet.

    Lets the daemon overlap its host bookkeeping of token N with the device work of step
    N+1: launch N+1, account for N, then `finish()` N+1. At most two may be outstanding
    per thread (one queued behind the other), because they share the thread's event ring."""

    out: Any  # the next-token device tensor, shape [1] or []
    position: int
    t0: float  # perf_counter at launch
    events: tuple[Any, Any] | None  # (start, end) CUDA events, None on the CPU

    def finish(self, since: float | None = None) -> StepResult:
        """Read the token (the step's one sync) and return its times. `since`: the perf_counter time the
        previous token was read, where this step was queued before that (the wall time starts at the later
        of the two)."""
        token = _read_token(self.out)
        t1 = time.perf_counter()
        gpu_ms = None if self.events is None else _elapsed_ms(*self.events)
        return StepResult(token, self.position, (t1 - max(self.t0, since or 0.0)) * 1e3, gpu_ms, t1)


def launch_timed(fn: Callable[[], Any], position: int, device_kind: str) -> LaunchedStep:
    """Enqueue one launch (`fn` enqueues work and returns the next-token device tensor)
    between CUDA events, without reading its token."""
    if device_kind == "cuda":
        start, end = _event_pair()
        t0 = time.perf_counter()
        start.record()
        out = fn()
        end.record()
        return LaunchedStep(out, position, t0, (start, end))
    t0 = time.perf_counter()
    return LaunchedStep(fn(), position, t0, None)


def time_launch(fn: Callable[[], Any], position: int, device_kind: str) -> StepResult:
    """Run one launch, read the token, and time it. Used by `Decoder.prefill` and `Decoder.step`."""
    return launch_timed(fn, position, device_kind).finish()


@dataclass
class StepTimes:
    """Per-step samples of a timed run of decode steps."""

    wall_ms: list[float]
    gpu_ms: list[float] | None
    tokens: list[int]
    positions: list[int]

    @property
    def wall(self) -> LatencyStats:
        return LatencyStats.of(self.wall_ms)

    @property
    def gpu(self) -> LatencyStats | None:
        return LatencyStats.of(self.gpu_ms) if self.gpu_ms else None


def time_steps(launch: Callable[[], Any], n: int, device_kind: str, first_position: int,
               ahead: int = 0) -> StepTimes:
    """Time `n` consecutive calls of `launch` (one decode step each: it enqueues the step
    and returns the next-token device tensor unread), the first at KV position
    `first_position`. `Decoder.time_steps` passes its own launcher, room already checked.
    ahead: steps queued behind the one being read (1: pipelined, see the module doc; 0: each
    step launched after the previous token's read).

    Events are pre-allocated and only read after the loop; each step's single sync is
    its token read (see the module doc)."""
    if n <= 0:
        raise MeasurementError(f"steps must be positive, got {n}")
    if ahead not in (0, 1):
        raise MeasurementError(f"ahead must be 0 or 1 (steps queued behind the one being read), got {ahead}")
    events = None
    if device_kind == "cuda":
        cuda = _cuda()
        events = [(cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)) for _ in range(n)]
    outs: list[Any] = []
    t_launch: list[float] = []
    wall: list[float] = []
    tokens: list[int] = []
    t_prev = 0.0
    for i in range(n):
        while len(outs) < min(n, i + 1 + ahead):  # launch what may be on the device before reading step i
            t_launch.append(time.perf_counter())
            if events is not None:
                events[len(outs)][0].record()
            outs.append(launch())
            if events is not None:
                events[len(outs) - 1][1].record()
        tokens.append(_read_token(outs[i]))
        t = time.perf_counter()
        wall.append((t - max(t_launch[i], t_prev)) * 1e3)
        t_prev = t
    gpu = [_elapsed_ms(a, b) for a, b in events] if events is not None else None
    return StepTimes(wall, gpu, tokens, [first_position + i for i in range(n)])


def _elapsed_ms(start, end) -> float:
    """CUDA-event time of a step whose token was already read. A token read from mapped host memory
    (edgeprof.fast.readback) can arrive before the step's `end` event has completed: wait for it here, after the
    wall clock has stopped."""
    end.synchronize()
    return float(start.elapsed_time(end))


GRAPH_WARM_S = 0.05  # replays of the captured graph before its timed ones (see time_graph)


def time_graph(calls: list[Callable[[], Any]], repeats: int, warmup: int = 3) -> LatencyStats:
    """Per-call device time of kernels too short to time one by one (CUDA only).

    `calls` run in order inside one captured CUDA graph (no launch gaps); each replay is
    timed with a CUDA event pair and divided by `len(calls)`. Give each call its own
    weights, together larger than the L2 cache, so that every call streams from memory as
    in a decode step. Warm-up (autotuning, lazy init) runs eagerly before capture; then the
    graph replays for GRAPH_WARM_S before the timed replays: on an H200 a chain timed right
    after a large allocation or free ran ~12% slower for a few ms (results/h200/2026-11-29-readgap)."""
    if not calls or repeats <= 0:
        raise MeasurementError("time_graph needs at least one call and one repeat")
    cuda = _cuda()
    side = cuda.Stream()
    side.wait_stream(cuda.current_stream())
    with cuda.stream(side):
        for _ in range(warmup):
            for fn in calls:
                fn()
    cuda.current_stream().wait_stream(side)
    graph = cuda.CUDAGraph()
    with cuda.graph(graph):
        for fn in calls:
            fn()
    events = [(cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)) for _ in range(repeats)]
    graph.replay()  # first replay uploads the graph
    cuda.synchronize()
    warm_until = time.perf_counter() + GRAPH_WARM_S
    while time.perf_counter() < warm_until:  # by time, not count: the slow window is milliseconds long
        graph.replay()
        cuda.synchronize()
    for start, end in events:
        start.record()
        graph.replay()
        end.record()
    cuda.synchronize()
    return LatencyStats.of([a.elapsed_time(b) / len(calls) for a, b in events])
