"""Will the model fit the GPU? A check before loading, from the analytic byte counts, and
the same one-line message when CUDA runs out of memory anyway during the load.

`load_need` and `check_fits` are pure (no torch). `free_memory` asks CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeprof.errors import DeviceMemoryError
from edgeprof.floor import kv_cache_bytes, parse_format, step_traffic
from edgeprof.shapes import ModelShape


@dataclass(frozen=True)
class LoadNeed:
    """Bytes the daemon must place on the GPU: bf16 weights (what load_model builds, before
    any backend quantises them) and the KV cache at max_ctx."""

    model: str
    max_ctx: int
    weights: int
    kv: int

    @property
    def total(self) -> int:
        return self.weights + self.kv


def load_need(shape: ModelShape, max_ctx: int, weights: bool = True) -> LoadNeed:
    """The bytes of `shape` at `max_ctx`; weights=False counts the KV cache only (weights loaded)."""
    w = step_traffic(shape, parse_format("bf16"), 1).weight_bytes if weights else 0
    return LoadNeed(shape.name, max_ctx, w, kv_cache_bytes(shape, max_ctx))


def _gb(n: int) -> str:
    return f"{n:,} bytes ({n / 1e9:.2f} GB)"


def fits_message(need: LoadNeed, free: int, total: int, device: str) -> str:
    parts = [f"weights {need.weights / 1e9:.2f} GB"] if need.weights else []
    parts.append(f"KV cache {need.kv / 1e9:.2f} GB at {need.max_ctx} tokens")
    return (f"not enough GPU memory on {device} for {need.model}: needs {_gb(need.total)} "
            f"({' + '.join(parts)}), {_gb(free)} free of {total / 1e9:.1f} GB; "
            "lower --max-ctx, pick a smaller model or free the GPU")


def check_fits(need: LoadNeed, free: int, total: int, device: str) -> None:
    """DeviceMemoryError (one line, bytes needed and free) when `need` is over `free`.
    The analytic count leaves out the CUDA context and workspaces, so passing this is
    necessary, not sufficient; a load that still runs out is caught by `oom_error`."""
    if need.total > free:
        raise DeviceMemoryError(fits_message(need, free, total, device))


def free_memory(device: str) -> tuple[int, int]:
    """(free, total) bytes of `device` as CUDA reports them now."""
    import torch

    return torch.cuda.mem_get_info(torch.device(device))


def oom_error(need: LoadNeed | None, device: str, exc: BaseException) -> DeviceMemoryError:
    """The one-line error for a torch.OutOfMemoryError raised while loading."""
    free, total = free_memory(device)
    if need is not None:
        return DeviceMemoryError(fits_message(need, free, total, device) + " (CUDA ran out of memory while loading)")
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "out of memory"
    return DeviceMemoryError(f"not enough GPU memory on {device} while loading: {first}; {_gb(free)} free of "
                             f"{total / 1e9:.1f} GB; lower --max-ctx, pick a smaller model or free the GPU")
