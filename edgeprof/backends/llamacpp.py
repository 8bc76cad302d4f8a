"""llama.cpp through llama-cpp-python's low-level API: a GGUF file, read as it is.

This is the runtime most ROS users deploy (llama_ros is built on it), and GGUF is the
format of the embedded SmolLM2 model, so the backend reads that very file (no
conversion). It is an extra: `pip install 'edgeprof[llamacpp]'` builds llama-cpp-python
from source (PyPI has no wheel); `scripts/setup.sh` builds the wheel once into
~/.cache/edgeprof/wheels and reuses it.

One decode step = `llama_decode` of a one-token batch (the token at `position`, logits
requested for it), then a greedy argmax over `llama_get_logits_ith(ctx, -1)` on the host.
That is what llama.cpp's own `examples/simple` loop does per token, without the sampler
chain (greedy needs none), so the step is comparable with every other backend's.

Clock: `llama_get_logits_ith` waits for the backend (CPU threads or llama.cpp's own CUDA
streams) to finish, so the step's token is on the host when `_launch_step` returns; the
timer's wall time (perf_counter) covers launch + compute + read. There are no CUDA-event
times: llama.cpp's streams are not torch's, so events on torch's stream would time
nothing. `device_kind` is therefore always "cpu" for the timer and `gpu_ms` is None.

Where it runs: device "cpu" keeps every layer on the host (n_gpu_layers=0); "cuda"
offloads all of them (n_gpu_layers=-1, what `-ngl 99` does), which needs a CUDA build
(GGML_CUDA=ON; see benchmarks/llamacpp_cuda_build.sh).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeprof.backends.base import Decoder, DecoderInfo
from edgeprof.errors import BackendUnavailableError, MeasurementError, ModelLoadError

BACKEND = "llamacpp"
PREFILL_BATCH = 512  # tokens per llama_decode call during prefill (llama.cpp's default n_batch)
# llama_model_desc() ends with the file type, e.g. "llama 135M Q4_1"; edgeprof.floor names it "gguf-q4_1".
_FTYPE = re.compile(r"\b(Q\d_[01K](?:_[SML])?|Q8_0|F16|BF16|F32)\b")

_LOG_CALLBACK: Any = None  # kept alive: llama.cpp calls it for every log line
_BACKEND_READY = False


def promote_cxx_runtime() -> str | None:
    """Put the C++ runtime (libstdc++) into the process's global symbol scope before llama.cpp loads.

    Why: a CUDA build's libggml-cuda exports its own instantiations of libstdc++ templates (e.g.
    std::ostream::_M_insert<long>). With torch imported first (as edgeprof always does), llama.cpp's
    libllama bound those names to libggml-cuda's copies and crashed inside llama_model_load's
    print_info (H200, llama-cpp-python 0.3.36 built with CUDA 13.0: backtrace in
    results/h200/2026-11-28-llamacpp-cuda). Loading libstdc++ RTLD_GLOBAL first makes every later lookup
    find the real one. Returns the library's name, or None where there is none to promote (not glibc)."""
    import ctypes.util

    name = ctypes.util.find_library("stdc++") or "libstdc++.so.6"
    try:
        ctypes.CDLL(name, mode=getattr(os, "RTLD_GLOBAL", 0) | getattr(os, "RTLD_NOLOAD", 0))
    except OSError:  # not loaded yet (no torch): nothing can shadow it; or not a glibc system
        try:
            ctypes.CDLL(name, mode=getattr(os, "RTLD_GLOBAL", 0))
        except OSError:
            return None
    return name


def _lib():
    """Import llama_cpp (the ctypes bindings) or say how to get it."""
    try:
        promote_cxx_runtime()
        import llama_cpp
    except ImportError as exc:
        raise BackendUnavailableError(
            BACKEND, "llama-cpp-python is not installed; run `bash scripts/setup.sh --llamacpp` or "
            "`pip install 'edgeprof[llamacpp]'` (builds from source, ~5-10 min on 2 cores)") from exc
    return llama_cpp


def _init_backend(lib) -> None:
    """Once per process: quiet llama.cpp's log (errors still reach stderr), init its backends."""
    global _LOG_CALLBACK, _BACKEND_READY
    if _BACKEND_READY:
        return
    if os.environ.get("EDGEPROF_LLAMACPP_VERBOSE") != "1":
        def quiet(level: int, text: bytes, _user: Any) -> None:
            if level == 4:  # GGML_LOG_LEVEL_ERROR (ggml.h: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5)
                os.write(2, text)

        _LOG_CALLBACK = lib.llama_log_callback(quiet)
        lib.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
    lib.llama_backend_init()
    _BACKEND_READY = True


def gguf_for(loaded) -> Path | None:
    """The GGUF file behind `loaded`, if there is one: a .gguf spec, or the embedded default."""
    from edgeprof.shape_loader import DEFAULT_ALIASES

    if loaded is None:
        return None
    if loaded.path is not None and Path(loaded.path).suffix == ".gguf":
        return Path(loaded.path)
    if str(loaded.spec).lower() in DEFAULT_ALIASES and not loaded.synthetic:
        from edgeprof.embedded import ensure_default_gguf

        return ensure_default_gguf()
    return None


def spec_has_gguf(spec: str, synthetic: bool | None = None) -> bool:
    """Cheap, before loading: will `load_model(spec)` have a GGUF behind it?"""
    from edgeprof.shape_loader import DEFAULT_ALIASES

    if spec.lower() in DEFAULT_ALIASES:
        return synthetic is not True
    return spec.endswith(".gguf") and Path(spec).expanduser().is_file()


def weights_name(desc: str) -> str:
    """'llama 135M Q4_1' -> 'gguf-q4_1' (the floor's format name); 'gguf' when unknown."""
    m = _FTYPE.search(desc)
    return f"gguf-{m.group(1).lower()}" if m else "gguf"


def default_threads() -> int:
    """One thread per core this process may use: llama.cpp's decode is compute-bound on few cores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class LlamaCppDecoder(Decoder):
    """One batch-1 llama.cpp session over a GGUF file (see the module doc)."""

    backend_name = BACKEND
    copies_weights = True  # reads the GGUF file, never the HF module

    def __init__(self, gguf: str | Path, device: str, max_ctx: int, *, synthetic: bool, label: str = "",
                 n_threads: int | None = None, flash_attn: bool | None = None) -> None:
        super().__init__(max_ctx, device)
        lib = self.lib = _lib()
        _init_backend(lib)
        self.gguf = Path(gguf)
        if not self.gguf.is_file():
            raise ModelLoadError(f"GGUF file {self.gguf} does not exist")
        on_gpu = device.startswith("cuda")
        if on_gpu and not lib.llama_supports_gpu_offload():
            raise BackendUnavailableError(BACKEND, "this llama-cpp-python build has no GPU support; rebuild it "
                                          "with CMAKE_ARGS=-DGGML_CUDA=ON (benchmarks/llamacpp_cuda_build.sh)")
        self.synthetic, self.label = synthetic, label or self.gguf.name
        self.n_threads = n_threads or default_threads()
        self.flash_attn = "llama.cpp default (auto)" if flash_attn is None else ("on" if flash_attn else "off")
        t0 = time.perf_counter()
        mparams = lib.llama_model_default_params()
        mparams.n_gpu_layers = -1 if on_gpu else 0  # -1: every layer, as `-ngl 99` does
        self.model = lib.llama_model_load_from_file(str(self.gguf).encode(), mparams)
        if not self.model:
            raise ModelLoadError(f"llama.cpp could not load {self.gguf} (see its error above)")
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = max_ctx
        cparams.n_batch = cparams.n_ubatch = min(PREFILL_BATCH, max_ctx)
        cparams.n_seq_max = 1
        cparams.n_threads = cparams.n_threads_batch = self.n_threads
        if flash_attn is not None:
            cparams.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else \
                lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cparams.no_perf = True
        self.ctx = lib.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            lib.llama_model_free(self.model)
            raise ModelLoadError(f"llama.cpp could not create a context of {max_ctx} tokens for {self.gguf}")
        self.load_s = time.perf_counter() - t0
        self.n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self.model))
        desc = ctypes.create_string_buffer(256)
        lib.llama_model_desc(self.model, desc, len(desc))
        self.desc = desc.value.decode(errors="replace")
        self.batch = lib.llama_batch_init(cparams.n_batch, 0, 1)
        self._mem = lib.llama_get_memory(self.ctx)
        self._next = 0  # the token the next step feeds
        self._logits_ptr: Any = None  # llama.cpp's buffer for the last decoded position [n_vocab]

    # --- llama.cpp calls ---------------------------------------------------------------
    def _decode(self, tokens: Sequence[int], start: int) -> None:
        """Decode `tokens` at positions start.. as one batch; logits only for the last one."""
        b, n = self.batch, len(tokens)
        b.n_tokens = n
        for i, t in enumerate(tokens):
            b.token[i] = int(t)
            b.pos[i] = start + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = i == n - 1
        rc = self.lib.llama_decode(self.ctx, b)
        if rc != 0:
            raise MeasurementError(f"llama_decode returned {rc} at position {start} ({n} tokens); "
                                   "1 means the KV cache is full: start the session with a larger max context")

    def _greedy(self) -> int:
        """Argmax over the last position's logits (waits for the backend to finish)."""
        self._logits_ptr = self.lib.llama_get_logits_ith(self.ctx, -1)
        logits = np.ctypeslib.as_array(self._logits_ptr, shape=(self.n_vocab,))  # [n_vocab] float32, no copy
        return int(logits.argmax())

    # --- Decoder interface --------------------------------------------------------------
    @property
    def device_kind(self) -> str:
        return "cpu"  # host clock only: llama.cpp's CUDA streams are not torch's (module doc)

    def _launch_prefill(self, token_ids: Sequence[int]) -> int:
        ids = list(token_ids)
        step = self.batch_capacity
        for s in range(0, len(ids), step):
            self._decode(ids[s:s + step], self.position + s)
        self.position += len(ids)
        self._next = self._greedy()
        return self._next

    def _launch_step(self) -> int:
        self._decode((self._next,), self.position)
        self.position += 1
        self._next = self._greedy()
        return self._next

    @property
    def batch_capacity(self) -> int:
        return min(PREFILL_BATCH, self.max_ctx)

    def set_next_input(self, token_id: int) -> None:
        self._next = int(token_id)

    def last_logits(self):
        """A copy of the last logits as a float32 torch tensor [n_vocab] (for the correctness check)."""
        if self._logits_ptr is None:
            return None
        import torch

        return torch.from_numpy(np.ctypeslib.as_array(self._logits_ptr, shape=(self.n_vocab,)).copy())

    def reset(self) -> None:
        self.lib.llama_memory_clear(self._mem, True)
        self.position = 0
        self._next = 0
        self._logits_ptr = None

    def info(self) -> DecoderInfo:
        size = int(self.lib.llama_model_size(self.model))  # bytes of every tensor in the file
        notes = {"gguf": str(self.gguf), "model_desc": self.desc, "n_threads": self.n_threads,
                 "n_gpu_layers": "all" if self.device.startswith("cuda") else 0, "load_s": round(self.load_s, 2),
                 "flash_attn": self.flash_attn, "n_ctx": self.max_ctx, "n_batch": self.batch_capacity,
                 "step": "llama_decode of one token + host argmax of llama_get_logits_ith",
                 "llama_cpp_python": getattr(self.lib, "__version__", "?"),
                 "system_info": self.lib.llama_print_system_info().decode(errors="replace").strip()}
        return DecoderInfo(BACKEND, weights_name(self.desc), self.device, size, self.synthetic, 0.0, notes)

    def close(self) -> None:
        if getattr(self, "ctx", None):
            self.lib.llama_batch_free(self.batch)
            self.lib.llama_free(self.ctx)
            self.lib.llama_model_free(self.model)
            self.ctx = self.model = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: the library may already be gone
            self.close()


def make(loaded, device: str, max_ctx: int, gguf: str | Path | None = None, **options) -> LlamaCppDecoder:
    """Registry factory: the GGUF behind `loaded` (or `gguf=`), read directly by llama.cpp."""
    path = Path(gguf) if gguf else gguf_for(loaded)
    if path is None:
        raise BackendUnavailableError(
            BACKEND, f"{getattr(loaded, 'label', 'this model')} has no GGUF file; llama.cpp reads GGUF only: pass "
            "--model default (the embedded SmolLM2 GGUF) or --model path/to/model.gguf (`edgeprof bench` and `sweep` "
            "run a synthetic preset's SYNTHETIC GGUF themselves)")
    synthetic = bool(getattr(loaded, "synthetic", False))
    return LlamaCppDecoder(path, device, max_ctx, synthetic=synthetic, label=getattr(loaded, "label", ""),
                           **options)
