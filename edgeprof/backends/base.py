"""The one interface every decode backend implements.

A `Decoder` owns one single-sequence session (batch 1): a KV cache, a position and
a maximum context. The clock belongs to `edgeprof.timing`; a backend only exposes
`_launch_step()`, which enqueues one decode step on the device and returns the next
token as a device tensor *without* synchronising, so the timer can wrap it with
CUDA events and `perf_counter`. The timer never reaches into a decoder: it gets the
launch callable from `Decoder.step_launcher` (this module imports timing, not the
other way round).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeprof.errors import ContextLengthError
from edgeprof.timing import LaunchedStep, StepResult, StepTimes, launch_timed, time_launch, time_steps

__all__ = ["Decoder", "DecoderInfo", "LaunchedStep", "StepResult", "free_memory", "release_source"]


def free_memory(sync: bool = False) -> None:
    """Collect garbage and hand cached CUDA blocks back (after a model or decoder is dropped); `sync` waits
    for queued GPU work first. A no-op for CUDA where torch was never imported."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        if sync:
            torch.cuda.synchronize()
        torch.cuda.empty_cache()


def without_module(loaded: Any) -> Any:
    """`loaded` (a sources.LoadedModel) minus its HF module: shape, tokenizer and provenance stay."""
    import dataclasses

    return dataclasses.replace(loaded, model=None) if getattr(loaded, "model", None) is not None else loaded


def release_source(loaded: Any, decoder: Decoder) -> Any:
    """After a backend that computes with its OWN copy of the weights is built (edgeprof-fast's
    fused tensors, an ExLlamaV2 checkpoint, a GGUF), the HF model it was made from is a load
    transient: return `loaded` without it and free the memory, so steady-state memory (and a daemon
    on a 24 GB L4) does not carry a second, bf16 copy. Rebind the result: `loaded = release_source(...)`.
    Backends that compute with the HF module itself (hf-*, bnb, torchao) keep it."""
    if not getattr(decoder, "copies_weights", False):
        return loaded
    slim = without_module(loaded)
    free_memory()
    return slim


@dataclass
class DecoderInfo:
    """What a decoder reports about itself for records and the floor."""

    backend: str
    weights: str  # weight format name understood by edgeprof.floor.parse_format
    device: str
    resident_weight_bytes: int
    synthetic: bool
    capture_s: float = 0.0  # graph capture / compile time, reported apart from steps
    notes: dict[str, Any] = field(default_factory=dict)


class Decoder(ABC):
    """Batch-1 decode session. Subclasses implement the four abstract methods."""

    backend_name: str = "?"
    copies_weights: bool = False  # True: computes with its own copy, not the loaded HF module (release_source)

    def __init__(self, max_ctx: int, device: str) -> None:
        self.max_ctx = max_ctx
        self.device = device  # "cuda", "cuda:0" or "cpu"
        self.position = 0  # tokens currently in the KV cache; _launch_* advance it

    @abstractmethod
    def info(self) -> DecoderInfo: ...

    @abstractmethod
    def _launch_prefill(self, token_ids: Sequence[int]) -> Any:
        """Fill the cache with `token_ids` after the current position; return the
        next-token device tensor (shape [1] or [], int64) without a host sync."""

    @abstractmethod
    def _launch_step(self) -> Any:
        """Feed the last produced token, advance one position, return the next-token
        device tensor without a host sync."""

    @abstractmethod
    def reset(self) -> None:
        """Empty the KV cache; position returns to 0."""

    def warmup(self, steps: int = 3) -> float:
        """Run a few throw-away steps (and capture graphs); return seconds spent.
        The default does nothing; graph/compile backends override it."""
        return 0.0

    def close(self) -> None:  # noqa: B027 (optional hook, deliberately a no-op)
        """Release device memory. Optional."""

    # --- hooks for the correctness gate (edgeprof.gate) -----------------------------------
    def set_next_input(self, token_id: int) -> None:
        """Make the next `step()` feed `token_id` instead of the last produced token
        (teacher forcing: the gate feeds the reference's tokens so both paths see the
        same context). Backends that cannot do it raise NotImplementedError."""
        raise NotImplementedError(f"{self.backend_name} cannot be teacher-forced")

    def last_logits(self) -> Any:
        """Logits [vocab] of the most recent prefill/step as a device tensor, or None
        when the backend does not expose them (the gate then compares tokens only)."""
        return None

    # --- shared behaviour: the timing module owns the clock -----------------------------
    def prefill(self, token_ids: Sequence[int]) -> StepResult:
        if not token_ids:
            raise ValueError("prefill needs at least one token")
        self._check_room(len(token_ids))
        pos = self.position
        return time_launch(lambda: self._launch_prefill(token_ids), pos, self.device_kind)

    def step(self) -> StepResult:
        return self.step_async().finish()

    def step_async(self) -> LaunchedStep:
        """Enqueue one decode step and return its `edgeprof.timing.LaunchedStep` unread:
        the caller may do host work while the device runs it, then `finish()` it."""
        self._check_room(1)
        return launch_timed(self._launch_step, self.position, self.device_kind)

    def step_launcher(self, n: int) -> Callable[[], Any]:
        """The launch callable of the next `n` steps, once room for all of them is checked
        (so the timed loop holds no per-step check)."""
        self._check_room(n)
        return self._launch_step

    def time_steps(self, n: int) -> StepTimes:
        """Time `n` consecutive decode steps (prefilled and warmed up first: the caller's job), pipelined
        where the decoder can queue a step behind an unread one (`steps_ahead`; edgeprof.timing)."""
        return time_steps(self.step_launcher(n), n, self.device_kind, self.position, ahead=self.steps_ahead)

    @property
    def steps_ahead(self) -> int:
        """Steps that may be queued behind one whose token is still unread: 1 where a step's inputs stay on the
        device and a queued step can be read on its own and rolled back (`rollback`), else 0."""
        return 0

    def rollback(self, steps: int, token_id: int) -> None:
        """Undo the last `steps` launched steps, whose tokens nobody will read (queued behind a reply's last
        token): the position goes back, and the next step is fed `token_id`. Their KV rows are rewritten by
        whatever is fed at those positions next. Only decoders with `steps_ahead` > 0 can."""
        raise NotImplementedError(f"{self.backend_name} queues no steps ahead, so it has none to roll back")

    @property
    def device_kind(self) -> str:
        """"cuda" or "cpu"; the timer uses CUDA events only on "cuda"."""
        return self.device.split(":")[0]

    @property
    def launch_is_async(self) -> bool:
        """Whether `step_async()` returns before the step's work is done. Only a CUDA launch
        is: a CPU step computes the token inside the launch, so launching step N+1 before
        handing token N over would hold token N back by a whole step (the daemon's
        `session.overlap_host` applies only where this is true)."""
        return self.device_kind == "cuda"

    def _check_room(self, n: int) -> None:
        if self.position + n > self.max_ctx:
            raise ContextLengthError(
                "ctx", f"{self.position} + {n} tokens exceed this session's maximum context of {self.max_ctx}; "
                "reset the session or start it with a larger max context",
            )
