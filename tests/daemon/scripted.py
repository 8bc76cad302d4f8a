"""A deterministic Decoder for the daemon's pure-logic tests (session policy, service
queueing): the next token is a function of the last token fed, and every fed id is
recorded, so tests can check exactly what reached the KV cache. The real backends are
exercised by tests/daemon/test_daemon_ros.py."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from edgeprof.backends.base import Decoder, DecoderInfo
from edgeprof.timing import StepResult


class _Done:
    def __init__(self, result: StepResult) -> None:
        self.result = result

    def finish(self, since: float | None = None) -> StepResult:
        return self.result


class ScriptedDecoder(Decoder):
    backend_name = "scripted"

    def __init__(self, max_ctx: int = 64, vocab: int = 256, step_ms: float = 1.0, eos_after: int | None = None,
                 gate: threading.Event | None = None, async_launch: bool = True, ahead: int = 0) -> None:
        super().__init__(max_ctx, "cpu")
        # Behave as a CUDA decoder for the session's overlap logic (its launch is asynchronous),
        # unless a test asks for a CPU-like one.
        self.async_launch = async_launch
        self.vocab = vocab
        self.step_ms = step_ms
        self.cache: list[int] = []  # ids fed, in order (what a KV cache would hold)
        self.last = 0
        self.eos_after = eos_after  # produce token 0 after this many tokens of one cache
        self.gate = gate  # when set, each step waits for it (lets tests hold the worker mid-request)
        self.prefills: list[list[int]] = []
        self.ahead = ahead  # steps_ahead: 1 lets the session queue a step behind an unread one
        self.rolled_back: list[int] = []  # steps undone per rollback

    @property
    def launch_is_async(self) -> bool:
        return self.async_launch

    @property
    def steps_ahead(self) -> int:
        return self.ahead

    def rollback(self, steps: int, token_id: int) -> None:
        # the fed ids leave the cache; the next step feeds token_id (as a device-side token buffer would)
        del self.cache[len(self.cache) - steps:]
        self.position -= steps
        self.last = token_id
        self.rolled_back.append(steps)

    def info(self) -> DecoderInfo:
        return DecoderInfo("scripted", "bf16", "cpu", 0, True)

    def _next(self) -> int:
        if self.eos_after is not None and len(self.cache) >= self.eos_after:
            return 0
        return 65 + (self.cache[-1] + 1) % 26  # letters A..Z: printable bytes

    def prefill(self, token_ids: Sequence[int]) -> StepResult:
        self._check_room(len(token_ids))
        pos = self.position
        self.prefills.append(list(token_ids))
        self.cache.extend(token_ids)
        self.position += len(token_ids)
        self.last = self._next()
        return StepResult(self.last, pos, self.step_ms * 2, None)

    def step_async(self) -> _Done:
        # Like a CPU backend: the work happens at launch and finish() only hands the result over.
        if self.gate is not None:
            self.gate.wait(10)
        self._check_room(1)
        pos = self.position
        self.cache.append(self.last)
        self.position += 1
        self.last = self._next()
        return _Done(StepResult(self.last, pos, self.step_ms, None))

    def _launch_prefill(self, token_ids):  # pragma: no cover - prefill is overridden
        raise NotImplementedError

    def _launch_step(self):  # pragma: no cover - step_async is overridden
        raise NotImplementedError

    def reset(self) -> None:
        self.cache.clear()
        self.position = 0
