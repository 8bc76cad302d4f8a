"""The one thread that touches the model: load, warm-up, every decode step, release.

Why one thread: on the CPU, torch's OpenMP worker pool is fast only for the first thread
that runs a parallel op; another thread gets a pool whose workers sleep between ops. On the
2-core development machine a decode step of the same decoder measured 1.3 ms (tiny-test)
and 61 ms (SmolLM2-135M) on the thread that loaded the model, 3.1 ms and 69 ms on a second
thread. The daemon used to load on the main thread and decode on a worker; now both happen
here. On CUDA it changes nothing measurable, and CUDA graphs are captured and replayed on
the same thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class ModelThread:
    """A long-lived thread that runs submitted callables in order."""

    def __init__(self, name: str = "edgeprof-model") -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future] | None] = queue.SimpleQueue()
        # daemon: a decode loop that never returns must not keep the process alive after shutdown
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the caller, who decides
                fut.set_exception(exc)

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        if not self._thread.is_alive():
            raise RuntimeError("the model thread is closed")
        fut: Future[T] = Future()
        self._jobs.put((fn, fut))
        return fut

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the model thread and return its result (or raise its exception)."""
        if threading.current_thread() is self._thread:
            return fn()
        return self.submit(fn).result()

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def close(self, timeout: float = 30.0) -> None:
        """Finish queued work, then end the thread."""
        self._jobs.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
