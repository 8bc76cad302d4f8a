"""Real GPTQ int4 (label `gptq4-gN`, with static act-order `gptq4ao-gN`), from llmcompressor.

GPTQ (Frantar et al., 2022) quantizes each weight column by column and pushes every rounding
error onto the columns not yet quantized, weighted by the inverse Hessian H = 2 X X^T of the
layer's calibration inputs X. It is calibrated: the activations come from running the model on
`edgeprof/data/calibration.txt` (public domain, never the held-out quality text). The algorithm
is llmcompressor's `GPTQModifier` (Apache-2.0, maintained by the vLLM project); edgeprof only
feeds it calibration tokens and reads back, per linear layer W [N, K], group g, G = K/g:

    q int32 [N, K] 0..15,  z int32 [N, G] (= 8, symmetric),  s float32 [N, G]  (W_hat = (q - z) * s)

the same triple `edgeprof.quant.rtn.quantize_qzs` returns, so every int4 runtime that packs from
(q, z, s) runs GPTQ weights unchanged. llmcompressor stores symmetric int4 as q' in -8..7 with
zero point 0 and the fake-quantized weight (q' * s in the model's dtype); q = q' + 8 is recovered
exactly from it (checked per layer: the rounding residue is < 0.1 of a step).

Act-order: llmcompressor's maintained mode is "static" (= "weight"): columns are *processed* in
order of decreasing Hessian diagonal, but each column keeps the group of its own index, so g_idx
stays i // g and every runtime reads it. The deprecated "group"/"dynamic" mode needs a permuted
g_idx that tinygemm and the fused runtimes cannot read: it is refused (`ActOrderError`).

Results are cached (`cache_dir()/gptq4/`) in GPTQ v1 layout (`edgeprof.quant.layout`) by the model's
weights fingerprint and every setting, so the correctness reference, the decoder and the quality run
read the same tensors; calibrating SmolLM2-135M takes about a minute on a 2-core CPU.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import torch

from edgeprof.errors import ConfigError
from edgeprof.quant.layout import GPTQTensors

LIBRARY = "llmcompressor"
DEFAULT_DAMP = 0.01  # llmcompressor's default dampening_frac: lambda = 0.01 * mean(diag H)
DEFAULT_SAMPLES = 16
DEFAULT_SEQ_LEN = 128  # 16 x 128 = 2048 calibration tokens (the text holds ~2300 SmolLM2 tokens)
BLOCK_SIZE = 128  # GPTQ's lazy-batch width (the paper's B)
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
INSTALL_HINT = "pip install 'edgeprof[gptq]' (llmcompressor; scripts/setup.sh installs it)"


class ActOrderError(ConfigError):
    """An act-order mode whose permuted g_idx the int4 runtimes cannot read."""


def label(group: int, actorder: bool = False) -> str:
    """The weight-format name records carry: `gptq4-g128`, or `gptq4ao-g128` with static act-order."""
    return f"gptq4{'ao' if actorder else ''}-g{group}"


def parse_label(weights: str) -> bool:
    """`gptq4[-gN]` -> False, `gptq4ao[-gN]` -> True (act-order); anything else is a ConfigError."""
    w = weights.lower()
    if w.startswith("gptq4ao"):
        return True
    if w.startswith("gptq4"):
        return False
    raise ConfigError("weights", f"{weights!r} is not a GPTQ label (gptq4-gN or gptq4ao-gN)")


def available() -> tuple[bool, str]:
    import importlib.util

    if importlib.util.find_spec(LIBRARY) is None:
        return False, f"{LIBRARY} is not installed ({INSTALL_HINT})"
    return True, "available"


def library_version() -> str | None:
    try:
        return metadata.version(LIBRARY)
    except metadata.PackageNotFoundError:
        return None


# --- calibration data -----------------------------------------------------------------------------
def calibration_text() -> str:
    raw = resources.files("edgeprof").joinpath("data/calibration.txt").read_text(encoding="utf-8")
    return "\n".join(ln for ln in raw.splitlines() if not ln.startswith("#")).strip()


def calibration_ids(tokenizer, n_samples: int, seq_len: int, vocab: int | None = None) -> torch.Tensor:
    """int64 [n, seq_len]: consecutive windows of the calibration text (cycled if the text is short).
    Without a tokenizer (a synthetic model) the text's bytes mod `vocab` stand in: still fixed, not random."""
    if n_samples < 1 or seq_len < 2:
        raise ConfigError("gptq calibration", f"need >= 1 sample of >= 2 tokens, got {n_samples} x {seq_len}")
    text = calibration_text()
    if tokenizer is not None:
        ids = [int(i) for i in tokenizer(text)["input_ids"]]
    else:
        if not vocab:
            raise ConfigError("gptq calibration", "a model without a tokenizer needs its vocab size")
        ids = [b % vocab for b in text.encode()]
    need = n_samples * seq_len
    ids = (ids * (need // len(ids) + 1))[:need]
    return torch.tensor(ids, dtype=torch.int64).reshape(n_samples, seq_len)


# --- settings, fingerprint, cache -----------------------------------------------------------------
@dataclass(frozen=True)
class GPTQSettings:
    group: int
    actorder: bool = False
    damp: float = DEFAULT_DAMP
    n_samples: int = DEFAULT_SAMPLES
    seq_len: int = DEFAULT_SEQ_LEN

    def asdict(self) -> dict[str, Any]:
        return {"group": self.group, "actorder": "static" if self.actorder else None, "dampening_frac": self.damp,
                "calibration_samples": self.n_samples, "calibration_seq_len": self.seq_len,
                "calibration_tokens": self.n_samples * self.seq_len, "block_size": BLOCK_SIZE, "symmetric": True}


@dataclass
class GPTQResult:
    """Per linear module name (e.g. `model.layers.0.self_attn.q_proj`), its GPTQ tensors."""

    tensors: dict[str, GPTQTensors]
    meta: dict[str, Any] = field(default_factory=dict)

    def qzs(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from edgeprof.quant.rtn import to_qzs

        if name not in self.tensors:
            raise ConfigError("gptq", f"no GPTQ tensors for {name!r}; the cached result is for another model")
        return to_qzs(self.tensors[name])


def quantized_linears(model) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if ".layers." in n and n.rsplit(".", 1)[-1] in LINEAR_NAMES]


def fingerprint(model) -> str:
    """Cheap identity of the weights GPTQ starts from: shapes and the first 4096 values of every block linear."""
    h = hashlib.sha256()
    for name, mod in quantized_linears(model):
        w = mod.weight.detach()
        h.update(f"{name}{tuple(w.shape)}".encode())
        h.update(w.reshape(-1)[:4096].float().cpu().numpy().tobytes())
    return h.hexdigest()[:20]


def _text_hash() -> str:
    return hashlib.sha256(calibration_text().encode()).hexdigest()[:16]


def _cache_key(model, settings: GPTQSettings) -> dict[str, Any]:
    return {"weights": fingerprint(model), **settings.asdict(), "text": _text_hash(), "library": LIBRARY,
            "library_version": library_version(), "schema": 1}


def _cache_dir(key: dict[str, Any]) -> Path:
    from edgeprof.paths import cache_dir

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "gptq4" / digest  # ("gptq/" holds exllamav2's checkpoints)


def _save(path: Path, result: GPTQResult) -> None:
    from safetensors.torch import save_file

    from edgeprof.records import write_json_atomic

    path.mkdir(parents=True, exist_ok=True)
    flat = {f"{n}.{k}": getattr(t, k).contiguous() for n, t in result.tensors.items()
            for k in ("qweight", "qzeros", "scales", "g_idx")}
    with tempfile.NamedTemporaryFile(dir=path, suffix=".tmp", delete=False) as f:
        tmp = Path(f.name)
    save_file(flat, str(tmp))
    tmp.replace(path / "tensors.safetensors")
    write_json_atomic(path / "meta.json", result.meta)  # written last: its presence marks a complete entry


def _load(path: Path, key: dict[str, Any]) -> GPTQResult | None:
    from safetensors.torch import load_file

    meta_path = path / "meta.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("key") != key:
        return None
    flat = load_file(str(path / "tensors.safetensors"))
    names = sorted({k.rsplit(".", 1)[0] for k in flat})
    group = int(key["group"])
    tensors = {n: GPTQTensors(flat[f"{n}.qweight"], flat[f"{n}.qzeros"], flat[f"{n}.scales"], flat[f"{n}.g_idx"],
                              group) for n in names}
    return GPTQResult(tensors, {**meta, "cached": True})


# --- running llmcompressor ------------------------------------------------------------------------
def _modifier(settings: GPTQSettings):
    from llmcompressor.modifiers.quantization import GPTQModifier

    weights = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": settings.group}
    return GPTQModifier(config_groups={"edgeprof_int4": {"targets": ["Linear"], "weights": weights}},
                        ignore=["lm_head"], dampening_frac=settings.damp, block_size=BLOCK_SIZE,
                        actorder="static" if settings.actorder else None)


def _extract(name: str, mod: torch.nn.Module, group: int) -> GPTQTensors:
    """One GPTQ-quantized Linear (llmcompressor's frozen fake-quant state) -> GPTQ v1 tensors."""
    from edgeprof.quant.rtn import FP16_MIN_NORMAL, from_qzs

    w = mod.weight.detach().float()  # [N, K] = q' * s rounded to the model dtype
    s = mod.weight_scale.detach().float()  # [N, G]
    zp = mod.weight_zero_point.detach().to(torch.int32)  # [N, G], 0 for symmetric
    n, k = w.shape
    if s.shape != (n, k // group):
        raise ConfigError("gptq", f"{name}: scales {tuple(s.shape)} do not match group {group} of [{n}, {k}]")
    g_idx = getattr(mod, "weight_g_idx", None)
    if g_idx is not None and not torch.equal(g_idx.detach().long().cpu(), torch.arange(k) // group):
        raise ActOrderError("actorder", f"{name} has a permuted g_idx (group act-order); edgeprof's int4 runtimes "
                            "need contiguous groups: use static act-order (--actorder)")
    if bool((s < FP16_MIN_NORMAL).any()) or bool((s > 65504).any()):
        raise ConfigError("gptq", f"{name}: a scale outside fp16's normal range; the GPTQ layout stores fp16 scales")
    qf = w / s.repeat_interleave(group, dim=1) + zp.repeat_interleave(group, dim=1).float()  # q' + zp
    q = torch.round(qf)
    residue = float((qf - q).abs().max())
    if residue > 0.1:  # q' * s in bf16 is within 8 * 2^-9 of the integer grid; more means another format
        raise ConfigError("gptq", f"{name}: weights are not on the int4 grid (residue {residue:.3f}); "
                          f"{LIBRARY}'s output format changed?")
    q = (q.to(torch.int32) + 8)  # llmcompressor's symmetric -8..7 -> GPTQ's 0..15 with zero point 8
    z = zp + 8
    if int(q.min()) < 0 or int(q.max()) > 15:
        raise ConfigError("gptq", f"{name}: codes outside 0..15 after the zero shift")
    return from_qzs(q, z, s, group)


def _calibration_loader(ids: torch.Tensor):
    from torch.utils.data import DataLoader

    rows = [{"input_ids": r[None], "attention_mask": torch.ones_like(r)[None]} for r in ids]
    return DataLoader(rows, batch_size=None)  # llmcompressor takes a DataLoader as-is (no datasets hashing)


def run_gptq(model, tokenizer, settings: GPTQSettings, progress=None) -> GPTQResult:
    """GPTQ every block linear of a COPY of `model` with llmcompressor; `model` is left unchanged."""
    ok, why = available()
    if not ok:
        from edgeprof.errors import BackendUnavailableError

        raise BackendUnavailableError("gptq4", why)
    import os

    # llmcompressor logs every module at INFO; its documented switch, read when it is first imported
    os.environ.setdefault("LLM_COMPRESSOR_LOG_LEVEL", "WARNING")
    from llmcompressor import oneshot

    ids = calibration_ids(tokenizer, settings.n_samples, settings.seq_len, model.config.vocab_size)
    work = copy.deepcopy(model).to("cpu")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeprof-gptq-") as tmp:
        # llmcompressor re-reads the config from name_or_path (to refuse already-quantized checkpoints);
        # an in-memory or GGUF-derived model gets a plain config.json to read.
        work.config.save_pretrained(tmp)
        work.config._name_or_path = tmp
        oneshot(model=work, dataset=_calibration_loader(ids), processor=tokenizer or _NoProcessor(),
                recipe=[_modifier(settings)], num_calibration_samples=settings.n_samples,
                max_seq_length=settings.seq_len)
    seconds = time.perf_counter() - t0
    tensors = {}
    with torch.no_grad():
        for name, mod in quantized_linears(work):
            tensors[name] = _extract(name, mod, settings.group)
    if progress:
        progress(f"GPTQ ({LIBRARY} {library_version()}): {len(tensors)} linears in {seconds:.1f} s")
    del work
    meta = {"label": label(settings.group, settings.actorder), "library": LIBRARY,
            "library_version": library_version(), **settings.asdict(), "calibration_text": "edgeprof/data/calibration.txt",
            "quantize_s": round(seconds, 2), "linears": len(tensors)}
    return GPTQResult(tensors, meta)


class _NoProcessor:
    """llmcompressor asks for a processor when given data; ours is pre-tokenized, so it is never used."""

    def save_pretrained(self, *_a, **_k) -> None:  # pragma: no cover - only reached when saving
        return None


def gptq_for(loaded, group: int, actorder: bool = False, use_cache: bool = True, progress=None,
             **overrides) -> GPTQResult:
    """The GPTQ tensors of `loaded.model` (an edgeprof.sources.LoadedModel), from the cache when present."""
    settings = GPTQSettings(group, actorder, **overrides)
    key = _cache_key(loaded.model, settings)
    path = _cache_dir(key)
    if use_cache:
        hit = _load(path, key)
        if hit is not None:
            return hit
    result = run_gptq(loaded.model, getattr(loaded, "tokenizer", None), settings, progress)
    result.meta["key"] = key
    if use_cache:
        _save(path, result)
    return result
