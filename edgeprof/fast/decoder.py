"""The registered `edgeprof-fast` decoders: one CUDA graph per session, replayed per token.

The graph is captured once at warm-up. Its inputs (last token, position) and outputs
(next token, position + 1, the history slot) are device buffers updated inside the
graph, so a step is exactly one `graph.replay()`: no host sync, no argument copies.
On the CPU the same `FastModel.step` runs eagerly (no graphs), which is what CI tests.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from edgeprof.backends.base import Decoder, DecoderInfo, without_module
from edgeprof.fast import w4cuda
from edgeprof.fast.model import FastModel, rope_tables
from edgeprof.fast.readback import PendingToken
from edgeprof.fast.weights import deferred_norm_projections, from_hf

AHEAD_ENV = "EDGEPROF_STEPS_AHEAD"  # "1" (default): a step may be queued behind an unread one; "0": never


class FastDecoder(Decoder):
    backend_name = "edgeprof-fast"
    copies_weights = True

    def __init__(self, loaded, device: str, max_ctx: int, fmt: str = "bf16", group: int = 128,
                 use_graph: bool | None = None, ops: str | None = None, int4_kernel: str = "tinygemm",
                 name: str | None = None, gptq=None):
        super().__init__(max_ctx, device)
        shape = loaded.shape
        if max_ctx > shape.max_ctx:
            from edgeprof.errors import ContextLengthError

            raise ContextLengthError("max_ctx", f"{max_ctx} exceeds {shape.name}'s maximum of {shape.max_ctx}")
        self.loaded = loaded
        self.backend_name = name or ("edgeprof-fast" if fmt == "bf16" else "edgeprof-fast-int4")
        with torch.no_grad():
            # gptq: an edgeprof.quant.gptq4.GPTQResult (calibrated tensors) in place of rtn4
            self.weights = from_hf(loaded.model, fmt, group, int4_kernel, qzs_source=gptq,
                                   int4_label=None if gptq is None else gptq.meta["label"])
            cos, sin = rope_tables(loaded.model, max_ctx, device, self.weights.embed.dtype)
        self.model = FastModel(shape, self.weights, cos, sin, max_ctx, device, ops)
        self.loaded = without_module(loaded)  # the HF module is not needed any more (base.release_source)
        self.use_graph = torch.device(device).type == "cuda" if use_graph is None else use_graph
        self.graph: torch.cuda.CUDAGraph | None = None
        self.capture_s = 0.0
        # pipelined steps (steps_ahead) unless $EDGEPROF_STEPS_AHEAD=0 (A/B runs; the daemon's session.speculate)
        self.pipelined = w4cuda.env_choice(AHEAD_ENV, ("1", "0"), "1") == "1"

    def info(self) -> DecoderInfo:
        return DecoderInfo(self.backend_name, self.weights.fmt, self.device, self.weights.nbytes(),
                           bool(getattr(self.loaded, "synthetic", False)), self.capture_s,
                           {"cuda_graph": self.graph is not None, "attention": _attention_note(self.model.ops),
                            "greedy_tail": self.model.tail_note,
                            "steps_ahead": self.steps_ahead,
                            "pdl": {"gemv": self.model.pdl, "triton": bool(getattr(self.model.ops, "pdl", False)),
                                    "prefetch_tiles": self.model.pdl_prefetch, "down": self.model.pdl_down},
                            **({"int4_mma": self.model.w4_mma, "int4_norm": self.model.w4_norm,
                                "int4_norm_deferred": (deferred_norm_projections(self.weights.layers[0])
                                                       if self.model.w4_norm == "deferred" else []),
                                "int4_mlp": self.model.mlp_note}
                               if "int4_launch" in self.weights.extra else {}),
                            **{k: v for k, v in self.weights.extra.items() if k.startswith(("int4", "bf16"))}})

    # -------------------------------------------------------------- Decoder hooks
    @torch.no_grad()
    def _launch_prefill(self, token_ids: Sequence[int]):
        out = self.model.prefill(token_ids)
        self.position += len(token_ids)
        return out

    @torch.no_grad()
    def _launch_step(self):
        if self.use_graph and self.graph is None:
            self.warmup()
        reader = self._reader()
        n = reader.arm() if reader is not None else 0
        if self.graph is not None:
            self.graph.replay()
        else:
            self.model.step()
        self.position += 1
        # this step's history slot [1], which a step queued behind it leaves alone (model.token it overwrites); with
        # the mapped readback, int() of the result waits for the token in host memory (edgeprof.fast.readback) and
        # reads the slot only as its fallback
        slot = self.model.history[self.position - 1:self.position]
        return PendingToken(reader, n, slot) if reader is not None else slot

    def _reader(self):
        tail = self.model.tail
        return tail.readback if tail is not None else None

    @property
    def steps_ahead(self) -> int:
        """1 with a graph and the mapped readback: a step can be queued behind an unread one and its token read
        alone (a copy would wait for the whole stream), else 0 (edgeprof.timing, pipelined steps)."""
        return 1 if self.pipelined and self.use_graph and self._reader() is not None else 0

    def rollback(self, steps: int, token_id: int) -> None:
        """Stream-ordered after the queued steps: pos back by `steps`, the next input `token_id` (x0 with it). The
        rolled-back steps still write their mapped pairs and count on the device; the host counted them too."""
        if not 0 < steps <= self.position:
            raise ValueError(f"steps: {steps} is not between 1 and the position {self.position}")
        self.position -= steps
        self.model.pos.fill_(self.position)
        self.model.set_token(int(token_id))

    def reset(self) -> None:
        self.model.reset()
        self.position = 0

    def set_next_input(self, token_id: int) -> None:
        """Teacher forcing (correctness gate): the next step is fed `token_id`."""
        self.model.set_token(int(token_id))

    def last_logits(self):
        """[V] logits of the last prefill or step (a device tensor; the graph writes it)."""
        return self.model.logits[0]

    def tokens(self, start: int, end: int) -> list[int]:
        """Tokens produced at positions [start, end): one host read for many steps."""
        return self.model.history[start:end].tolist()

    @torch.no_grad()
    def warmup(self, steps: int = 3) -> float:
        """Compile the Triton kernels and capture the step graph; returns seconds spent.
        Runs real steps from the current state and restores it, so the session is unchanged."""
        if not self.use_graph or self.graph is not None:
            return 0.0
        t0 = time.perf_counter()
        m = self.model
        saved = (m.token.clone(), m.pos.clone(), m.logits.clone())
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(steps):  # compiles kernels, warms cuBLAS handles
                m.pos.copy_(saved[1])
                m.set_token(saved[0])
                m.step()
        torch.cuda.current_stream().wait_stream(side)
        m.set_token(saved[0])
        m.pos.copy_(saved[1])
        m.logits.copy_(saved[2])  # the warm-up steps overwrote the prefill's logits
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            m.step()
        # Capture does not execute; the buffers still hold the saved state.
        torch.cuda.synchronize()
        if self._reader() is not None:  # the warm-up steps counted on the device, not here
            self._reader().rebase()
        self.graph = graph
        self.capture_s = time.perf_counter() - t0
        return self.capture_s

    def close(self) -> None:
        self.graph = None


def _attention_note(ops) -> str:
    """What the decode attention runs as: TorchOps on the CPU, else TritonOps and its attention kernel."""
    kernel = getattr(ops, "attn_kernel", None)
    note = type(ops).__name__ + (f": {kernel.label()}" if kernel is not None else "")
    ws = getattr(ops, "_attn_ws", None)
    if kernel is not None and kernel.kind == "cuda" and ws and ws[0] > 1:
        note += f"; up to {ws[0]} clusters per kv head, >= {ws[1]} tokens each, merged in global memory"
    return note


def make_bf16(loaded, device: str, max_ctx: int, **options) -> FastDecoder:
    return FastDecoder(loaded, device, max_ctx, fmt="bf16", **options)


def make_int4(loaded, device: str, max_ctx: int, group: int | None = None, **options) -> FastDecoder:
    from edgeprof.quant.rtn import model_group

    # one group per model for every int4 runtime: 128, or 64 where a width needs it (SmolLM2's 576)
    group = group or model_group(loaded.shape)
    return FastDecoder(loaded, device, max_ctx, fmt="int4", group=group, **options)


def make_int4_gemlite(loaded, device: str, max_ctx: int, group: int | None = None, **options) -> FastDecoder:
    """edgeprof-fast-int4 with gemlite's Triton GEMV in place of tinygemm (CUDA only)."""
    return make_int4(loaded, device, max_ctx, group, int4_kernel="gemlite", name="edgeprof-fast-int4-gemlite",
                     **options)


def make_int4_cuda(loaded, device: str, max_ctx: int, group: int | None = None, **options) -> FastDecoder:
    """edgeprof-fast-int4 with edgeprof's own CUDA W4A16 GEMV (fused bias and SiLU*up); falls back
    to tinygemm per layer where it cannot build or run, and `info().notes["int4_kernel"]` says which ran."""
    return make_int4(loaded, device, max_ctx, group, int4_kernel="cuda", name="edgeprof-fast-int4-cuda", **options)


def make_int4_gptq(loaded, device: str, max_ctx: int, group: int | None = None, actorder: bool = False,
                   **options) -> FastDecoder:
    """edgeprof-fast-int4 on real GPTQ weights (`edgeprof.quant.gptq4`, llmcompressor, calibrated on
    edgeprof/data/calibration.txt); the record's weights read `gptq4-gN` (`gptq4ao-gN` with act-order)."""
    from edgeprof.quant import gptq4
    from edgeprof.quant.rtn import model_group

    group = group or model_group(loaded.shape)
    result = gptq4.gptq_for(loaded, group, actorder=actorder)
    name = "edgeprof-fast-int4-gptq" + ("-actorder" if actorder else "")
    return make_int4(loaded, device, max_ctx, group, name=name, gptq=result, **options)


def make_int4_gptq_actorder(loaded, device: str, max_ctx: int, group: int | None = None, **options) -> FastDecoder:
    """`make_int4_gptq` with llmcompressor's static act-order (columns in Hessian order, contiguous groups)."""
    return make_int4_gptq(loaded, device, max_ctx, group, actorder=True, **options)
