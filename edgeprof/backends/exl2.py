"""exllamav2: a GPTQ 4-bit g128 checkpoint through ExLlamaV2's kernels, two ways.

* `exllamav2` runs it the way its users do: through `ExLlamaV2DynamicGenerator`, one
  `generator.iterate()` per token (ExLlamaV2's own examples/inference_stream.py and
  doc/dynamic.md, exllamav2 0.3.2). See `ExLlamaV2GenDecoder`.
* `exllamav2-forward` is the plain per-token `model.forward(ids, cache)` loop below (a
  diagnostic: it skips the generator's host work, sampler and page bookkeeping).

The loaded model's weights (real or synthetic) are written as a GPTQ v1 checkpoint by
`edgeprof.quant.gptq.write_checkpoint` (RTN, symmetric, group 128, desc_act false),
which ExLlamaV2 loads like any GPTQ model. In `exllamav2-forward` each step is a plain
`model.forward(ids, cache)` on one token; the cache is `ExLlamaV2Cache` (fp16) sized to
the session's max context. Both paths keep ExLlamaV2's per-module CUDA graphs on (its
default; `config.no_graphs` / EXLLAMA_NO_GRAPHS turn them off), which it uses for
single-token attention and MLP launches.

What syncs: ExLlamaV2 keeps the embedding table in host memory, so each step's input
token must be on the host: the previous step's token read (the step's one sync) is
also what feeds the next step. ExLlamaV2 runs on its own CUDA stream; the timer's
events are recorded on the current stream, which ExLlamaV2 sets to its own after the
first forward (done in `__init__`), so GPU times are measured on the right stream.

The first `import exllamav2` JIT-builds its CUDA extension (about 95 s on 16 cores with
MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0); later processes reuse the build.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from edgeprof.backends.base import Decoder, DecoderInfo, without_module
from edgeprof.errors import BackendUnavailableError, MeasurementError, ModelLoadError
from edgeprof.paths import cache_dir
from edgeprof.quant.gptq import write_checkpoint

MARKER = "edgeprof-gptq.json"
PAGE = 256  # cache length is rounded up to this (attention cost follows the tokens present, not the size)


def _say(msg: str) -> None:
    print(f"[edgeprof] {msg}", file=sys.stderr, flush=True)


def import_exllamav2():
    """Import exllamav2, announcing the one-time JIT build of its extension."""
    if "exllamav2" in sys.modules:
        return sys.modules["exllamav2"], 0.0
    _say("exllamav2: importing; the first import JIT-builds its CUDA extension (about 95 s with "
         "MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0; later runs reuse the build) ...")
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 4))
    t0 = time.perf_counter()
    try:
        import exllamav2
    except Exception as exc:  # build failures surface as ImportError/RuntimeError
        raise BackendUnavailableError("exllamav2", f"import failed: {type(exc).__name__}: {exc}") from exc
    dt = time.perf_counter() - t0
    _say(f"exllamav2 ready after {dt:.1f} s")
    return exllamav2, dt


def checkpoint_key(loaded, group: int) -> dict[str, object]:
    """What decides the checkpoint's contents: a cached one is reused only when it matches."""
    return {"label": loaded.label, "spec": str(loaded.spec), "synthetic": bool(loaded.synthetic),
            "path": str(loaded.path) if loaded.path else None, "group": group,
            "format": "gptq-v1-layout-rtn4-sym-bf16scales"}


def ensure_checkpoint(loaded, group: int = 128, out_dir: str | Path | None = None) -> Path:
    """The GPTQ checkpoint of `loaded`, written once into the cache and reused after."""
    key = checkpoint_key(loaded, group)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    target = Path(out_dir) if out_dir else cache_dir() / "gptq" / f"{loaded.shape.name}-{digest}"
    marker = target / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == key:
        _say(f"exllamav2: reusing GPTQ checkpoint {target}")
        return target
    _say(f"exllamav2: writing a GPTQ 4-bit g{group} checkpoint (RTN) of {loaded.label} to {target} ...")
    t0 = time.perf_counter()
    write_checkpoint(loaded, target, group, progress=_say)
    marker.write_text(json.dumps(key))
    _say(f"checkpoint written in {time.perf_counter() - t0:.1f} s")
    return target


def gpu_weight_bytes(ckpt: Path, tied: bool) -> int:
    """Bytes of the checkpoint's tensors that ExLlamaV2 keeps on the GPU: everything but
    the input embedding, which it keeps in host memory (unless tied: then it is the head)."""
    from safetensors import safe_open

    total = 0
    for f in sorted(ckpt.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():  # noqa: SIM118 (safe_open is not iterable)
                if name == "model.embed_tokens.weight" and not tied:
                    continue
                sl = st.get_slice(name)
                n = 1
                for d in sl.get_shape():
                    n *= d
                total += n * {"I32": 4, "F16": 2, "BF16": 2, "F32": 4}.get(sl.get_dtype(), 2)
    return total


# Loaded ExLlamaV2 models by checkpoint: sessions of several contexts share one load (each
# gets its own cache). `unload_all()` frees them.
_MODELS: dict[str, object] = {}


def _load_model(ckpt: Path, max_seq_len: int, ExLlamaV2, ExLlamaV2Config):  # noqa: N803 (classes)
    model = _MODELS.get(str(ckpt))
    if model is not None and model.config.max_seq_len >= max_seq_len:
        return model
    if model is not None:
        model.unload()
    config = ExLlamaV2Config(str(ckpt))
    # RoPE tables follow max_seq_len; the KV cache is sized per session, so this costs little.
    config.max_seq_len = -(-max_seq_len // PAGE) * PAGE
    model = ExLlamaV2(config)
    model.load()
    _MODELS[str(ckpt)] = model
    return model


def unload_all() -> None:
    for model in _MODELS.values():
        with contextlib.suppress(Exception):
            model.unload()
    _MODELS.clear()


class ExLlamaV2Decoder(Decoder):
    backend_name = "exllamav2-forward"
    copies_weights = True  # its own GPTQ-layout checkpoint

    def __init__(self, loaded, device: str, max_ctx: int, group: int = 128,
                 checkpoint_dir: str | Path | None = None) -> None:
        from edgeprof.quant.rtn import model_group

        super().__init__(max_ctx, device)
        group = model_group(loaded.shape, group)  # the same rtn4 tensors as every other int4 runtime
        self.group = group
        if not device.startswith("cuda"):
            raise BackendUnavailableError("exllamav2", "ExLlamaV2's kernels need a CUDA device")
        import torch

        _, build_s = import_exllamav2()
        from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config

        self.loaded = without_module(loaded)  # the checkpoint is written from `loaded` below; then not needed
        self.ckpt = ensure_checkpoint(loaded, group, checkpoint_dir)
        self.cache_len = -(-max_ctx // PAGE) * PAGE
        try:
            self.model = _load_model(self.ckpt, max(self.cache_len, loaded.shape.max_ctx), ExLlamaV2, ExLlamaV2Config)
            self.cache = ExLlamaV2Cache(self.model, max_seq_len=self.cache_len, batch_size=1)
        except Exception as exc:
            raise ModelLoadError(f"ExLlamaV2 could not load {self.ckpt}: {type(exc).__name__}: {exc}") from exc
        self._next = torch.zeros((1, 1), dtype=torch.long)  # host-side input token [1, 1]
        self._logits = None
        self.notes = {"checkpoint": str(self.ckpt), "extension_import_s": round(build_s, 1),
                      "cache": f"ExLlamaV2Cache fp16, {self.cache_len} tokens",
                      "sync": "input token read on the host each step (embedding lives in host memory)"}
        self._resident = gpu_weight_bytes(self.ckpt, bool(loaded.shape.tied))
        # One throw-away forward so ExLlamaV2 has set its stream as the current one before timing.
        self._forward(torch.zeros((1, 1), dtype=torch.long))
        self.reset()

    def _forward(self, ids):
        """ids: host long [1, n] -> next-token logits [vocab] (fp16, on the GPU)."""
        logits = self.model.forward(ids, self.cache, last_id_only=True)  # [1, 1, vocab]
        return logits[0, -1]

    def _launch_prefill(self, token_ids: Sequence[int]):
        import torch

        ids = torch.tensor([list(token_ids)], dtype=torch.long)
        self._logits = self._forward(ids)  # ExLlamaV2 chunks long inputs itself (max_input_len)
        self.position += len(token_ids)
        nxt = self._logits.argmax()
        self._pending = nxt
        return nxt

    def _launch_step(self):
        if self._pending is not None:  # the previous step's token, already read: a tiny D2H copy
            self._next[0, 0] = int(self._pending.item())
            self._pending = None
        self._logits = self._forward(self._next)
        self.position += 1
        nxt = self._logits.argmax()
        self._pending = nxt
        return nxt

    def set_next_input(self, token_id: int) -> None:
        self._pending = None
        self._next[0, 0] = int(token_id)

    def last_logits(self):
        return self._logits

    def reset(self) -> None:
        self.cache.current_seq_len = 0
        self.position = 0
        self._pending = None
        self._logits = None

    def info(self) -> DecoderInfo:
        from edgeprof.quant.rtn import label

        return DecoderInfo(self.backend_name, label(self.group), self.device, self._resident, bool(self.loaded.synthetic),
                           0.0, dict(self.notes))

    def close(self) -> None:
        self.cache = None  # the model stays loaded for the next session (see unload_all)


def make_forward(loaded, device: str, max_ctx: int, **options) -> ExLlamaV2Decoder:
    return ExLlamaV2Decoder(loaded, device, max_ctx, **options)


# --- the generator path: what ExLlamaV2's users run ---------------------------------------------

def ensure_tokenizer_json(ckpt: Path, vocab: int) -> str:
    """ExLlamaV2Tokenizer needs a tokenizer.json (exllamav2/tokenizer/tokenizer.py). A real model's
    checkpoint has one; for SYNTHETIC weights write a word-level stand-in with `vocab` pieces
    "<tN>", so the generator can stream text. Returns what the checkpoint holds."""
    path = ckpt / "tokenizer.json"
    if path.is_file():
        return "the model's tokenizer.json"
    from tokenizers import Tokenizer, models

    tok = Tokenizer(models.WordLevel({f"<t{i}>": i for i in range(vocab)}, unk_token="<t0>"))
    tmp = path.with_suffix(".json.part")
    tok.save(str(tmp))
    os.replace(tmp, path)
    return "SYNTHETIC word-level tokenizer.json (<tN> pieces), written for the generator's text stream"


class ExLlamaV2GenDecoder(Decoder):
    """exllamav2 driven by ExLlamaV2DynamicGenerator, one `iterate()` per token.

    Followed: exllamav2 0.3.2 examples/inference_stream.py (enqueue an ExLlamaV2DynamicJob, call
    `generator.iterate()` until EOS, each call streams one token) and doc/dynamic.md; generator
    options from exllamav2/generator/dynamic.py. Settings, and why:

    * greedy sampling: `ExLlamaV2Sampler.Settings.greedy()` (top_k=1), like every edgeprof backend;
    * `paged=True` when flash-attn >= 2.5.7 is importable (the generator's default and fastest mode,
      paged attention over 256-token pages), else `paged=False` (its documented fallback for batch 1);
    * `max_batch_size=1, max_q_size=1`: batch-1 decode; this also keeps the generator's pinned logits
      buffer at one row instead of max_input_len // 8 rows;
    * no stop conditions (a session decodes until its budget, as the other backends do); the job's
      `max_new_tokens` covers the session's whole context;
    * the cache is `ExLlamaV2Cache` (fp16) of max_ctx rounded up to 256 (the generator's page size);
      CUDA graphs stay on (ExLlamaV2's default).

    A step is one `iterate()`: the generator builds the step's attention parameters, runs
    `model.forward_chunk`, copies the logits to host memory, samples on the host and streams the
    token's text. The sampled token is read from the job's sequence (`sequences[0].sequence_ids`),
    because the stream holds tokens back while their text is an incomplete UTF-8 sequence. For the
    correctness gate, `set_next_input` overwrites that last sampled token (teacher forcing), and
    `last_logits` reads the step's logits from the generator's host buffer.
    """

    backend_name = "exllamav2"
    copies_weights = True  # its own GPTQ-layout checkpoint

    def __init__(self, loaded, device: str, max_ctx: int, group: int = 128,
                 checkpoint_dir: str | Path | None = None) -> None:
        super().__init__(max_ctx, device)
        if not device.startswith("cuda"):
            raise BackendUnavailableError("exllamav2", "ExLlamaV2's kernels need a CUDA device")
        _, build_s = import_exllamav2()
        from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config, ExLlamaV2Tokenizer
        from exllamav2 import attn as exl2_attn
        from exllamav2.generator import ExLlamaV2DynamicGenerator, ExLlamaV2Sampler

        from edgeprof.quant.rtn import model_group

        self.loaded = without_module(loaded)  # the checkpoint is written from `loaded` below; then not needed
        self.group = model_group(loaded.shape, group)  # the same rtn4 tensors as every other int4 runtime
        self.ckpt = ensure_checkpoint(loaded, self.group, checkpoint_dir)
        tokenizer_note = ensure_tokenizer_json(self.ckpt, loaded.shape.vocab)
        self.cache_len = -(-max_ctx // PAGE) * PAGE
        self.paged = bool(getattr(exl2_attn, "has_flash_attn_with_paged", False))
        try:
            self.model = _load_model(self.ckpt, max(self.cache_len, loaded.shape.max_ctx), ExLlamaV2, ExLlamaV2Config)
            self.cache = ExLlamaV2Cache(self.model, max_seq_len=self.cache_len, batch_size=1)
            self.tokenizer = ExLlamaV2Tokenizer(self.model.config)
            self.generator = ExLlamaV2DynamicGenerator(
                model=self.model, cache=self.cache, tokenizer=self.tokenizer, max_batch_size=1, max_q_size=1,
                max_seq_len=self.cache_len, paged=self.paged)
        except Exception as exc:
            raise ModelLoadError(f"ExLlamaV2 could not load {self.ckpt} into its generator: "
                                 f"{type(exc).__name__}: {exc}") from exc
        self._settings = ExLlamaV2Sampler.Settings.greedy()
        self._job = None
        self._vocab = loaded.shape.vocab
        self.notes = {"checkpoint": str(self.ckpt), "extension_import_s": round(build_s, 1),
                      "runner": "ExLlamaV2DynamicGenerator.iterate() per token (examples/inference_stream.py)",
                      "paged": self.paged, "paged_reason": "flash-attn >= 2.5.7 present" if self.paged else
                      "no flash-attn >= 2.5.7: the generator's unpaged batch-1 mode",
                      "sampling": "greedy (ExLlamaV2Sampler.Settings.greedy, host-side)",
                      "cache": f"ExLlamaV2Cache fp16, {self.cache_len} tokens", "cuda_graphs": "ExLlamaV2 default (on)",
                      "tokenizer": tokenizer_note}
        self._resident = gpu_weight_bytes(self.ckpt, bool(loaded.shape.tied))
        self.generator.warmup()  # ExLlamaV2's own warm-up pass (kernels, stream set as current)
        self.reset()

    def _new_job(self, token_ids: Sequence[int]):
        import torch
        from exllamav2.generator import ExLlamaV2DynamicJob

        ids = torch.tensor([list(token_ids)], dtype=torch.long)  # [1, n] host tensor, as the generator requires
        budget = max(1, self.max_ctx - len(token_ids))  # never ends before the session does
        return ExLlamaV2DynamicJob(input_ids=ids, max_new_tokens=budget, gen_settings=self._settings,
                                   stop_conditions=None, decode_special_tokens=True)

    def _sampled(self) -> int:
        return int(self._job.sequences[0].sequence_ids.torch()[0, -1])

    def _iterate_until_token(self, max_calls: int) -> int:
        """Call iterate() until the job has sampled one more token (one call once prefill is done)."""
        before = self._job.new_tokens
        for _ in range(max_calls):
            self.generator.iterate()
            if self._job.new_tokens > before:
                return self._sampled()
        raise MeasurementError(f"exllamav2: the generator sampled no token in {max_calls} iterate() calls")

    def _launch_prefill(self, token_ids: Sequence[int]) -> int:
        """A new job over what is in the cache plus `token_ids`. A later turn is a new job whose
        prompt repeats the history, as a chat client does: the generator's prefix cache reuses
        the pages it already holds for that history (doc/dynamic.md, "Prompt caching")."""
        history: list[int] = []
        if self._job is not None:
            history = [int(t) for t in self._job.sequences[0].sequence_ids.torch()[0, :self.position]]
            self.generator.cancel(self._job)
        ids = history + list(token_ids)
        self._job = self._new_job(ids)
        self.generator.enqueue(self._job)
        chunk = max(1, self.generator.max_chunk_size)
        nxt = self._iterate_until_token(len(ids) // chunk + 4)  # prefill chunks, then the first token
        self.position += len(token_ids)
        return nxt

    def _launch_step(self) -> int:
        nxt = self._iterate_until_token(1)
        self.position += 1
        return nxt

    def set_next_input(self, token_id: int) -> None:
        """Teacher forcing for the correctness gate only: the generator's next input is the job's last
        sampled token (`get_input_ids_list` slices `sequence_ids` from the cache position), so that
        entry is overwritten before the next iterate(). Timed steps never call this."""
        if self._job is None:
            raise MeasurementError("exllamav2: prefill before forcing an input")
        import torch

        ids = self._job.sequences[0].sequence_ids
        # the generator made this tensor under inference_mode: writing it outside that mode raises
        with torch.inference_mode():
            ids.tensor[0, ids.seq_len - 1] = int(token_id)  # SeqTensor [1, cap]; torch() views it

    def last_logits(self):
        if self._job is None:
            return None
        # [vocab] float32 on the host: the step's logits as the generator copied them for sampling
        return self.generator.logits_pinned[0, 0, :self._vocab].clone()

    def reset(self) -> None:
        self.generator.clear_queue()
        self._job = None
        self.position = 0

    def info(self) -> DecoderInfo:
        from edgeprof.quant.rtn import label

        return DecoderInfo("exllamav2", label(self.group), self.device, self._resident, bool(self.loaded.synthetic),
                           0.0, dict(self.notes))

    def close(self) -> None:
        if getattr(self, "generator", None) is not None:
            self.generator.clear_queue()
        self.generator = None
        self.cache = None  # the model stays loaded for the next session (see unload_all)


def make(loaded, device: str, max_ctx: int, **options) -> ExLlamaV2GenDecoder:
    return ExLlamaV2GenDecoder(loaded, device, max_ctx, **options)
