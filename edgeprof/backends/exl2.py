"""exllamav2: a GPTQ 4-bit g128 checkpoint through ExLlamaV2's kernels.

The loaded model's weights (real or synthetic) are written as a GPTQ v1 checkpoint by
`edgeprof.quant.gptq.write_checkpoint` (RTN, symmetric, group 128, desc_act false),
which ExLlamaV2 loads like any GPTQ model. Each step is a plain `model.forward(ids,
cache)` on one token, as in ExLlamaV2's own examples; the cache is `ExLlamaV2Cache`
(fp16) sized to the session's max context.

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

from edgeprof.backends.base import Decoder, DecoderInfo
from edgeprof.errors import BackendUnavailableError, ModelLoadError
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
    backend_name = "exllamav2"

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

        self.loaded = loaded
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
        return DecoderInfo("exllamav2", f"rtn4-g{self.group}", self.device, self._resident, bool(self.loaded.synthetic),
                           0.0, dict(self.notes))

    def close(self) -> None:
        self.cache = None  # the model stays loaded for the next session (see unload_all)


def make(loaded, device: str, max_ctx: int, **options) -> ExLlamaV2Decoder:
    return ExLlamaV2Decoder(loaded, device, max_ctx, **options)
