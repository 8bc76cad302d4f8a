"""The one decode session: a `Decoder` whose KV cache persists across requests, the
overflow policy, and per-token records timed against the floor.

Only the service's worker thread touches a `Session` (it is not thread-safe).

Cache bookkeeping: a decoder's `step()` feeds the *last produced* token. So after a
request ends, its last token (often EOS) is `pending`: produced but not yet in the
cache. The next request prefills `[pending] + new prompt tokens` after the current
position, which is how a conversation continues.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeprof.daemon.config import SessionConfig
from edgeprof.daemon.requests import GenerateRequest
from edgeprof.daemon.text import TextStream
from edgeprof.errors import RequestError
from edgeprof.floor import WeightFormat, kv_cache_bytes, step_traffic
from edgeprof.hardware import GPUSpec
from edgeprof.shapes import ModelShape

# (StepResult, ids fed to the cache, context event, time.time_ns() when the token was read)
_Read = tuple[Any, list[int], "str | None", int]


class FloorModel:
    """floor_ms(ctx) for one model x weight format x GPU. Linear in ctx, so it is
    computed from two byte counts once, not per token (the daemon's hot path)."""

    def __init__(self, shape: ModelShape, fmt: WeightFormat, spec: GPUSpec) -> None:
        t1 = step_traffic(shape, fmt, 1)
        self.kv_per_token = kv_cache_bytes(shape, 1)
        self.paper_fixed = t1.paper_bytes - t1.kv_bytes
        self.touched_fixed = t1.touched_bytes - t1.kv_bytes
        self.bandwidth = spec.bandwidth_bytes_per_s
        self.gpu = spec.key
        self.weights = fmt.name

    def floor_ms(self, ctx: int) -> float:
        return 1e3 * (self.paper_fixed + self.kv_per_token * max(ctx, 1)) / self.bandwidth

    def touched_floor_ms(self, ctx: int) -> float:
        return 1e3 * (self.touched_fixed + self.kv_per_token * max(ctx, 1)) / self.bandwidth

    def describe(self, ctx: int) -> dict[str, Any]:
        return {"gpu": self.gpu, "weights": self.weights, "bandwidth_bytes_per_s": self.bandwidth,
                "ctx": ctx, "floor_ms": self.floor_ms(ctx), "touched_floor_ms": self.touched_floor_ms(ctx)}


@dataclass
class TokenEvent:
    """One produced token, before it becomes a JSON record."""

    token_id: int
    text: str
    latency_ms: float
    gpu_ms: float | None
    floor_ms: float
    position: int  # tokens in the KV cache after this step (the context the step attended over)
    t_mono: float  # time.monotonic() when the token was handed over (after the bookkeeping)
    context_event: str | None = None  # "reset" / "slid" when the overflow policy acted before it
    # Wall-clock epoch ns (time.time_ns(), CLOCK_REALTIME) taken right after the token was read
    # from the device: the "ready" stamp of the token record. A robot on the same host stamps
    # its receipt with the same clock, so receipt - ready is the one-way hop it sees.
    ready_unix_ns: int = 0

    @property
    def fraction(self) -> float | None:
        return self.floor_ms / self.latency_ms if self.latency_ms > 0 else None


@dataclass
class RequestStats:
    """What the final `done` record reports."""

    latencies_ms: list[float] = field(default_factory=list)
    fractions: list[float] = field(default_factory=list)
    deadline_misses: int = 0

    def add(self, ev: TokenEvent, missed: bool) -> None:
        self.latencies_ms.append(ev.latency_ms)
        if ev.fraction is not None:
            self.fractions.append(ev.fraction)
        self.deadline_misses += int(missed)

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms
        # p50/p99 are over decode steps; the first token (prefill) is reported as ttft.
        steps = lat[1:] if len(lat) > 1 else lat
        fr = self.fractions[1:] if len(self.fractions) > 1 else self.fractions
        return {
            "n_tokens": len(lat),
            "ttft_ms": lat[0] if lat else None,
            "p50_ms": _pct(steps, 50),
            "p99_ms": _pct(steps, 99),
            "fraction_median": _pct(fr, 50),
            "deadline_misses": self.deadline_misses,
        }


def _read(result: Any, fed: list[int], event: str | None) -> _Read:
    """Stamp a token the moment its step returned (the token was read from the device)."""
    return result, fed, event, time.time_ns()


def _pct(xs: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q)) if len(xs) else None


class Session:
    """One batch-1 conversation over a Decoder. See the module docstring for `pending`."""

    end_reason = "length"

    def __init__(self, decoder: Any, codec: Any, floor: FloorModel, cfg: SessionConfig) -> None:
        self.decoder = decoder
        self.codec = codec
        self.floor = floor
        self.cfg = cfg
        self.max_ctx = int(decoder.max_ctx)
        # A window must leave room for at least one new token after the slide.
        self.window = max(1, min(cfg.sliding_window, self.max_ctx // 2))
        self.history: list[int] = []  # token ids in the KV cache, in order
        self.pending: int | None = None
        self.last_request: GenerateRequest | None = None
        self.last_index = -1  # index of the last token record of last_request
        self.turn: list[int] = []  # last request's prompt + produced ids (what on_overflow=reset keeps)
        self.stream: TextStream | None = None
        self._last_read = 0.0  # perf_counter of the last token read in generate (a queued step's wall starts there)

    # --- state --------------------------------------------------------------------------
    @property
    def position(self) -> int:
        return int(self.decoder.position)

    def reset(self) -> None:
        self.decoder.reset()
        self.history.clear()
        self.pending = None
        self.last_request = None
        self.last_index = -1
        self.turn = []
        self.stream = None

    # --- prompt -------------------------------------------------------------------------
    def encode(self, req: GenerateRequest) -> list[int]:
        """Prompt token ids for `req` as they will follow the current cache."""
        continuing = self.position > 0 and not req.reset
        text = self.codec.render(req.messages, continuing) if req.messages is not None else req.prompt
        assert text is not None
        ids = self.codec.encode(text, first=not continuing)
        if not ids:
            raise RequestError("empty_prompt", "the prompt encodes to no tokens; send some text")
        if len(ids) >= self.max_ctx:
            raise RequestError("prompt_too_long", f"the prompt is {len(ids)} tokens; this session's context holds "
                               f"{self.max_ctx} including the reply, so send at most {self.max_ctx - 1} tokens")
        return ids

    # --- decoding -----------------------------------------------------------------------
    def begin(self, req: GenerateRequest, ids: list[int]) -> TokenEvent:
        """Prefill the request's prompt (after the conversation so far) -> its first token."""
        return self._account(*self._begin_parts(req, ids))

    def _begin_parts(self, req: GenerateRequest, ids: list[int]) -> _Read:
        if req.reset:
            self.reset()
        feed = ([self.pending] if self.pending is not None else []) + ids
        event = None
        if self.position + len(feed) > self.max_ctx:
            event = self._make_room(feed, current=ids)
            feed = ([self.pending] if self.pending is not None else []) + ids if event == "slid" else ids
        self.last_request = req
        self.last_index = -1
        self.turn = list(ids)
        self.stream = TextStream(self.codec)
        return _read(self.decoder.prefill(feed), feed, event)

    def step(self) -> TokenEvent:
        """One more token after `pending` (a request's loop, or the next_token service)."""
        return self._account(*self._step_parts())

    def _step_parts(self) -> _Read:
        if self.pending is None:
            raise RequestError("no_session", "there is nothing to continue from; send a request with a prompt first")
        if self.position + 1 > self.max_ctx:
            return self._overflow_parts()
        return _read(self.decoder.step(), [self.pending], None)

    def _overflow_parts(self) -> _Read:
        policy = self.cfg.on_overflow
        if policy == "error":
            raise self._overflow_error()
        if policy == "reset":
            keep = list(self.turn)  # this request's prompt + what it produced; pending is the last
            if not keep or len(keep) >= self.max_ctx:
                raise self._overflow_error()
            self.decoder.reset()
            self.history.clear()
            return _read(self.decoder.prefill(keep), keep, "reset")
        feed = self._slide()
        return _read(self.decoder.prefill(feed), feed, "slid")

    def _make_room(self, feed: list[int], current: list[int]) -> str:
        """The new prompt does not fit after the conversation: apply the policy."""
        policy = self.cfg.on_overflow
        if policy == "error":
            raise self._overflow_error(len(feed))
        if policy == "sliding_window" and len(feed) < self.window:
            self.history = self.history[-(self.window - len(feed)):]
            tail = self.history
            self.decoder.reset()
            # re-prefill the kept tail now (its own cost, not billed to the new request's ttft)
            if tail:
                self.decoder.prefill(tail)
            return "slid"
        # reset (or a prompt too long for the window): the cache restarts with the new prompt alone
        self.decoder.reset()
        self.history.clear()
        self.pending = None
        return "reset"

    def _slide(self) -> list[int]:
        """Keep the last `window` tokens (pending included), re-prefilled from an empty cache."""
        assert self.pending is not None
        tail = (self.history + [self.pending])[-self.window:]
        self.decoder.reset()
        self.history.clear()
        return tail

    def _overflow_error(self, n_new: int = 1) -> RequestError:
        return RequestError(
            "context_overflow",
            f"the session holds {self.position} tokens and {n_new} more exceed its context of {self.max_ctx}; "
            'send "reset": true (or call the reset service), or run the daemon with session.on_overflow '
            "reset or sliding_window",
        )

    def _account(self, result: Any, fed: list[int], event: str | None, ready_ns: int) -> TokenEvent:
        """Host bookkeeping of one read token: cache history, detokenization, the event.

        `fed` went into the cache with the step that produced `result`. The decoder's
        position may already be one further (the next step launched ahead), so the
        token's position comes from `result`, not from the decoder."""
        self.history.extend(fed)
        self.pending = int(result.token_id)
        self.turn.append(self.pending)
        pos = int(result.position) + len(fed)
        text = self.stream.push(self.pending) if self.stream is not None else ""
        self.last_index += 1
        return TokenEvent(token_id=self.pending, text=text, latency_ms=float(result.wall_ms),
                          gpu_ms=None if result.gpu_ms is None else float(result.gpu_ms),
                          floor_ms=self.floor.floor_ms(pos), position=pos, t_mono=time.monotonic(),
                          context_event=event, ready_unix_ns=ready_ns)

    def _overlaps(self) -> bool:
        """Whether the next step may be launched before the current token is accounted for:
        only where the launch is asynchronous (CUDA; on the CPU the launch *is* the step, so
        token N would reach the robot a whole step late), and not where the next step must
        take the overflow path (which resets or re-prefills the cache)."""
        return (self.cfg.overlap_host and bool(getattr(self.decoder, "launch_is_async", False))
                and self.position + 1 <= self.max_ctx)

    def _depth(self, queued: int, left: int) -> int:
        """Steps to have on the device while a token is with the caller: the next one (overlap_host), and with
        `speculate` one more queued behind it where the decoder can read it alone and roll it back; never more
        than the `left` tokens the request still wants, nor past the context (the decoder's position already
        counts the `queued` steps)."""
        ahead = getattr(self.decoder, "steps_ahead", 0) if self.cfg.speculate else 0
        return max(0, min(1 + ahead, left, self.max_ctx - self.position + queued))

    def _launch_ahead(self, queue: deque, left: int) -> None:
        while len(queue) < self._depth(len(queue), left):
            queue.append(self.decoder.step_async())  # [1] a token after the last read one, on the device

    def _finish(self, queue: deque, fed: int) -> _Read:
        """The first queued step's token; its wall time starts at the previous read where it was queued before it."""
        return _read(queue.popleft().finish(since=self._last_read), [fed], None)

    def _drop(self, queue: deque) -> None:
        """Roll back the queued steps nobody will read (the reply ended before them); `pending` feeds next."""
        if queue:
            self.decoder.rollback(len(queue), self.pending)
            queue.clear()

    def is_eos(self, token_id: int) -> bool:
        return self.cfg.stop_at_eos and token_id in self.codec.eos_ids

    def generate(self, req: GenerateRequest, ids: list[int],
                 should_stop: Callable[[], str | None]) -> Iterator[TokenEvent]:
        """Prefill `ids` (from `encode`) then step until max_new_tokens, EOS or
        `should_stop()` returns a reason. The end reason is in `self.end_reason` after.

        With `overlap_host` on a decoder whose launch is asynchronous (CUDA), token N is read, step N+1 is launched,
        and only then is N accounted for and yielded: the caller's per-token work (record, publish, run log, metrics)
        runs while the device computes N+1 instead of leaving it idle. With `speculate` on a decoder that can queue
        a step behind an unread one (`steps_ahead`), step N+2 is queued then too, so the device does not wait for
        the host's turn-around between N+1 and N+2 either; where the reply ends at N+1 (EOS, a stop), N+2 is rolled
        back unread. The stop check comes before the launches, so a cancel arriving during the work takes effect
        after the one step already on the device whose token is next, which is still emitted (nothing is lost)."""
        self.end_reason = "length"
        parts = self._begin_parts(req, ids)
        queue: deque = deque()  # launched steps, unread, in order; queue[0] makes the next token
        for made in range(1, req.max_new_tokens + 1):
            token = int(parts[0].token_id)
            self._last_read = parts[0].t_read or time.perf_counter()  # None where the decoder did not stamp it
            more = made < req.max_new_tokens and not self.is_eos(token)
            stop = None
            if more and (queue or self._overlaps()):
                stop = should_stop()
                if not stop:
                    self._launch_ahead(queue, req.max_new_tokens - made)
            try:
                yield self._account(*parts)
            except GeneratorExit:  # the caller stopped early: keep the cache and `pending` in step
                if queue:
                    self._account(*self._finish(queue, token))
                self._drop(queue)
                raise
            stop = stop or (should_stop() if more and not queue else None)
            if not more or stop:
                self.end_reason = stop or ("eos" if self.is_eos(token) else "length")
                self._drop(queue)
                return
            parts = self._step_parts() if not queue else self._finish(queue, token)
