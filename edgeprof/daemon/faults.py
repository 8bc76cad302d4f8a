"""Device faults during decoding: which exceptions mean the GPU (not the request) failed.

Pure: torch is looked up in `sys.modules` only, so this module never imports it (a CPU-only
daemon without torch loaded has no device faults to classify).
"""

from __future__ import annotations

import sys

# Substrings of RuntimeError messages that torch raises for a failed CUDA call (older torch
# versions have no AcceleratorError class; cuBLAS/cuDNN failures stay plain RuntimeErrors).
_DEVICE_MARKERS = ("CUDA error", "CUBLAS_STATUS", "cuDNN error", "CUDA driver error", "device-side assert")


def device_fault_code(exc: BaseException) -> str | None:
    """'out_of_memory' or 'device_error' when `exc` is a GPU failure, else None.

    After either, the model's state (KV cache, CUDA graphs, the context itself after a
    device-side assert) can no longer be trusted, so the daemon stops serving rather than
    decode garbage; an out-of-memory is treated the same because a step that ran out once
    at this context will run out again on the next token."""
    torch = sys.modules.get("torch")
    if torch is not None:
        oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
        if oom is not None and isinstance(exc, oom):
            return "out_of_memory"
        accel = getattr(torch, "AcceleratorError", None)
        if accel is not None and isinstance(exc, accel):
            return "device_error"
    if isinstance(exc, RuntimeError):
        text = str(exc)
        if "out of memory" in text and "CUDA" in text:
            return "out_of_memory"
        if any(m in text for m in _DEVICE_MARKERS):
            return "device_error"
    return None
