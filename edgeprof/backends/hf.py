"""Hugging Face transformers decode backends: eager, static, CUDA graph, torch.compile.

All four share `HFDecoder`; they differ in the KV cache and in how a step runs:

| backend    | cache                     | a decode step                                        |
|------------|---------------------------|------------------------------------------------------|
| hf-eager   | DynamicCache (grows)      | `model(...)` + argmax, op by op (the paper's setup)  |
| hf-static  | StaticCache(max_ctx)      | same, but the cache is preallocated and updated in place |
| hf-graph   | StaticCache(max_ctx)      | one step captured as a CUDA graph, replayed          |
| hf-compile | StaticCache(max_ctx)      | `torch.compile(mode="reduce-overhead")` (CUDA graphs inside) |

A step reads its input token and position from two device buffers, `_tok` [1,1] and
`_pos` [1,1], and writes the greedy next token back into `_tok` and `_pos += 1` on the
device, so consecutive steps never copy anything from the host. That is what makes a
step capturable: the graph replays the whole step, buffer updates included.

On the CPU, hf-compile uses `torch.compile` default mode (Inductor C++ kernels, no
graphs: CUDA graphs do not exist there); the record's notes say so.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from typing import Any

from edgeprof.backends.base import Decoder, DecoderInfo
from edgeprof.errors import BackendUnavailableError, MeasurementError

WARM_RUNS = 2  # eager runs on a side stream before capture (lazy inits, cuBLAS handles)
COMPILE_RUNS = 3  # compile, then record the cudagraph tree, then one replay
CAPTURE_SLACK = 4  # positions the capture/compile warm runs borrow (and give back)


def module_bytes(model) -> int:
    """Bytes of every parameter and buffer the model keeps resident (a tied table once),
    including bitsandbytes' quantisation state (absmax, codes), which are not parameters."""
    seen: set[int] = set()
    total = 0

    def add(t) -> None:
        nonlocal total
        if t is None or not hasattr(t, "untyped_storage"):
            return
        key = t.untyped_storage().data_ptr()
        if key in seen or t.device.type == "meta":
            return
        seen.add(key)
        total += t.untyped_storage().nbytes()

    for t in [*model.parameters(), *model.buffers()]:
        add(t)
        qs = getattr(t, "quant_state", None)  # bnb 4-bit
        if qs is not None:
            add(getattr(qs, "absmax", None))
            add(getattr(qs, "code", None))
            s2 = getattr(qs, "state2", None)
            if s2 is not None:
                add(getattr(s2, "absmax", None))
                add(getattr(s2, "code", None))
        add(getattr(t, "SCB", None))  # bnb int8 row scales
    return total


def new_static_cache(model, max_ctx: int):
    from transformers import StaticCache

    try:
        return StaticCache(config=model.config, max_cache_len=max_ctx)
    except TypeError:  # transformers 4.x signature
        return StaticCache(config=model.config, max_batch_size=1, max_cache_len=max_ctx,
                           device=model.device, dtype=model.dtype)


def rewind_static_cache(cache, n: int) -> None:
    """Move a StaticCache's write position back by `n` (stale entries beyond it are masked
    out and overwritten later). transformers >= 5 keeps a device counter per layer."""
    for layer in getattr(cache, "layers", []):
        counter = getattr(layer, "cumulative_length", None)
        if counter is not None and hasattr(counter, "sub_"):
            counter.sub_(n)
        elif isinstance(counter, int):
            layer.cumulative_length = counter - n


class HFDecoder(Decoder):
    """One batch-1 session over a transformers causal LM (see the module doc)."""

    def __init__(self, loaded, device: str, max_ctx: int, *, backend_name: str, weights: str,
                 cache: str = "static", runner: str = "eager", prefill_chunk: int | None = None,
                 graph_fallback: bool = False, notes: dict[str, Any] | None = None) -> None:
        import torch

        super().__init__(max_ctx, device)
        if runner == "graph" and self.device_kind != "cuda":
            raise BackendUnavailableError(backend_name, "CUDA graphs need a CUDA device")
        self.backend_name = backend_name
        self.loaded = loaded
        self.model = loaded.model
        self.weights = weights
        self.cache_kind = cache
        self.runner = runner
        self.graph_fallback = graph_fallback
        self.notes: dict[str, Any] = dict(notes or {})
        self.prefill_chunk = prefill_chunk or (2048 if self.device_kind == "cuda" else 512)
        self._capture_s = 0.0
        self._graph = None
        self._g_out: tuple[Any, Any] | None = None
        self._compiled = None
        self._logits = None
        params = inspect.signature(self.model.forward).parameters
        self._pass_cache_position = "cache_position" in params  # transformers 4.x
        with torch.no_grad():
            self._tok = torch.zeros((1, 1), dtype=torch.long, device=device)  # next input token
            self._pos = torch.zeros((1, 1), dtype=torch.long, device=device)  # its position
        self._cache = self._new_cache()
        self.notes.setdefault("cache", cache)
        self.notes.setdefault("runner", runner)

    # --- the model call ---------------------------------------------------------------
    def _new_cache(self):
        from transformers import DynamicCache

        if self.cache_kind == "dynamic":
            return DynamicCache(config=self.model.config)
        return new_static_cache(self.model, self.max_ctx)

    def _forward(self, ids, pos):
        """ids, pos: [1, n] long on the device -> next-token logits [1, vocab]."""
        kw: dict[str, Any] = dict(input_ids=ids, position_ids=pos, past_key_values=self._cache,
                                  use_cache=True, logits_to_keep=1)
        if self._pass_cache_position:
            kw["cache_position"] = pos[0]
        return self.model(**kw).logits[:, -1, :]

    def _body(self):
        """One decode step entirely on the device: read _tok/_pos, write them back."""
        logits = self._forward(self._tok, self._pos)  # [1, vocab]
        nxt = logits.argmax(dim=-1)  # [1] greedy, on the device
        self._tok.copy_(nxt.view(1, 1))
        self._pos.add_(1)
        return nxt, logits

    # --- Decoder interface --------------------------------------------------------------
    def _launch_prefill(self, token_ids: Sequence[int]):
        import torch

        n = len(token_ids)
        with torch.no_grad():
            ids = torch.tensor(list(token_ids), dtype=torch.long).view(1, n).to(self.device)  # [1, n]
            logits = None
            for s in range(0, n, self.prefill_chunk):
                e = min(n, s + self.prefill_chunk)
                pos = torch.arange(self.position + s, self.position + e, device=self.device).view(1, -1)
                logits = self._forward(ids[:, s:e], pos)
            nxt = logits.argmax(dim=-1)  # [1]
            self._tok.copy_(nxt.view(1, 1))
            self._pos.fill_(self.position + n)
        self.position += n
        self._logits = logits[0]
        return nxt

    def _launch_step(self):
        import torch

        if self._graph is not None:
            self._graph.replay()
            nxt, logits = self._g_out
        elif self._compiled is not None:
            if self.device_kind == "cuda":
                torch.compiler.cudagraph_mark_step_begin()
            with torch.no_grad():
                nxt, logits = self._compiled(self._tok, self._pos)
                self._tok.copy_(nxt.view(1, 1))
                self._pos.add_(1)
        else:
            with torch.no_grad():
                nxt, logits = self._body()
        self.position += 1
        self._logits = logits[0]
        return nxt

    def set_next_input(self, token_id: int) -> None:
        self._tok.fill_(int(token_id))

    def last_logits(self):
        return self._logits

    def reset(self) -> None:
        import torch

        with torch.no_grad():
            if self.cache_kind == "dynamic":
                self._cache = self._new_cache()
            else:
                self._cache.reset()  # zeroes in place: the captured graph's addresses stay valid
            self._pos.zero_()
            self._tok.zero_()
        self.position = 0
        self._logits = None

    def warmup(self, steps: int = 3) -> float:
        """Capture the graph / compile the step (once). Leaves the session exactly where it
        was: the runs it needs are rewound. Returns the seconds this call spent."""
        if self.runner == "graph" and self._graph is None:
            return self._capture()
        if self.runner == "compile" and self._compiled is None:
            return self._compile()
        return 0.0

    def info(self) -> DecoderInfo:
        return DecoderInfo(self.backend_name, self.weights, self.device, module_bytes(self.model),
                           bool(self.loaded.synthetic), self._capture_s, dict(self.notes))

    def close(self) -> None:
        self._graph = None
        self._g_out = None
        self._compiled = None
        self._cache = None

    # --- capture / compile ------------------------------------------------------------------
    def _need_prefilled(self, runs: int) -> None:
        if self.position == 0:
            raise MeasurementError(f"{self.backend_name}: prefill before warmup (the capture needs a filled cache)")
        if self.position + runs > self.max_ctx:
            raise MeasurementError(f"{self.backend_name}: no room to capture; start with max_ctx >= "
                                   f"{self.position + runs}")

    def _rewind(self, runs: int, tok_before) -> None:
        self._pos.sub_(runs)
        self._tok.copy_(tok_before)
        rewind_static_cache(self._cache, runs)

    def _capture(self) -> float:
        import torch

        self._need_prefilled(WARM_RUNS)
        t0 = time.perf_counter()
        tok_before = self._tok.clone()
        try:
            with torch.no_grad():
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(WARM_RUNS):  # real steps: lazy inits, cuBLAS workspaces
                        self._body()
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):  # recorded, not executed: state moves only by WARM_RUNS
                    out = self._body()
                torch.cuda.synchronize()
            self._graph, self._g_out = graph, out
            self.notes["graph"] = "one decode step captured with torch.cuda.CUDAGraph"
        except Exception as exc:
            if not self.graph_fallback:
                raise MeasurementError(f"{self.backend_name}: CUDA graph capture failed: "
                                       f"{type(exc).__name__}: {exc}") from exc
            self.runner = "eager"
            self.notes["graph"] = f"capture failed, runs without a graph: {type(exc).__name__}: {exc}"[:300]
        finally:
            with torch.no_grad():
                self._rewind(WARM_RUNS, tok_before)
        self._capture_s = time.perf_counter() - t0
        return self._capture_s

    def _compile(self) -> float:
        import torch

        self._need_prefilled(COMPILE_RUNS)
        torch._dynamo.reset()  # one compiled decoder per process: no stale graphs, no recompile limit
        cuda = self.device_kind == "cuda"
        mode = "reduce-overhead" if cuda else "default"
        self.notes["compile"] = f"torch.compile mode={mode}" + ("" if cuda else " (CPU: no CUDA graphs)")
        for buf in (self._tok, self._pos):
            torch._dynamo.mark_static_address(buf)

        def step_fn(tok, pos):
            logits = self._forward(tok, pos)
            return logits.argmax(dim=-1), logits

        t0 = time.perf_counter()
        tok_before = self._tok.clone()
        self._compiled = torch.compile(step_fn, mode=mode, fullgraph=False, dynamic=False)
        try:
            for _ in range(COMPILE_RUNS):  # 1: compile, 2: record the graph tree, 3: replay
                self._launch_step()
                self.position -= 1
            if cuda:
                torch.cuda.synchronize()
        except Exception as exc:
            self._compiled = None
            raise MeasurementError(f"{self.backend_name}: torch.compile failed: {type(exc).__name__}: {exc}") from exc
        finally:
            with torch.no_grad():
                self._rewind(COMPILE_RUNS, tok_before)
            self._logits = None
        self._capture_s = time.perf_counter() - t0
        return self._capture_s


def _check_device(loaded, device: str) -> None:
    dev = str(next(loaded.model.parameters()).device)
    if dev.split(":")[0] != device.split(":")[0]:
        raise MeasurementError(f"the model is on {dev} but the backend was asked for {device}; "
                               "load it with the same --device")


def make_eager(loaded, device: str, max_ctx: int, **options) -> HFDecoder:
    _check_device(loaded, device)
    return HFDecoder(loaded, device, max_ctx, backend_name="hf-eager", weights="bf16",
                     cache="dynamic", runner="eager", **options)


def make_static(loaded, device: str, max_ctx: int, **options) -> HFDecoder:
    _check_device(loaded, device)
    return HFDecoder(loaded, device, max_ctx, backend_name="hf-static", weights="bf16",
                     cache="static", runner="eager", **options)


def make_graph(loaded, device: str, max_ctx: int, **options) -> HFDecoder:
    _check_device(loaded, device)
    return HFDecoder(loaded, device, max_ctx, backend_name="hf-graph", weights="bf16",
                     cache="static", runner="graph", **options)


def make_compile(loaded, device: str, max_ctx: int, **options) -> HFDecoder:
    _check_device(loaded, device)
    return HFDecoder(loaded, device, max_ctx, backend_name="hf-compile", weights="bf16",
                     cache="static", runner="compile", **options)
