"""Quantization quality on real weights: perplexity and top-1 agreement with bf16.

Kernel correctness (`edgeprof.correctness`) asks whether a backend computes what its
weights define; this asks what the weights cost. Both run the backend's own decode path,
teacher-forced over a held-out public-domain text shipped with the package
(`edgeprof/data/heldout.txt`, sources in its header):

* `perplexity`: exp(mean negative log-likelihood) of the text's next tokens;
* `agreement`: fraction of positions whose top-1 token equals the bf16 reference's
  (transformers eager, bf16, the unquantized weights) at the same position;
* `reference_perplexity`: the bf16 reference's own perplexity, for scale.

It is measured on real weights only: on a synthetic model it is computed on the embedded
SmolLM2-135M (real weights) with the same backend, and the record says which model
(`quality.model`). A quality number is never a pass/fail on synthetic weights; `recommend`
applies a user-set floor (`--min-agreement`).

Results are cached (`cache_dir()/quality/`) by everything that decides them: backend,
model, device, token count, the text's hash, and the torch/transformers/edgeprof versions.
"""

from __future__ import annotations

import hashlib
import json
import math
from importlib import metadata, resources
from typing import Any

from edgeprof.errors import ConfigError

QUALITY_MODEL = "smollm2-135m"
DEFAULT_TOKENS = 512
REFERENCE_BACKEND = "hf-eager"


def held_text() -> str:
    raw = resources.files("edgeprof").joinpath("data/heldout.txt").read_text(encoding="utf-8")
    return "\n".join(ln for ln in raw.splitlines() if not ln.startswith("#")).strip()


def text_tokens(tokenizer, n: int) -> list[int]:
    ids = [int(i) for i in tokenizer(held_text())["input_ids"]]
    if n < 2:
        raise ConfigError("quality-tokens", f"must be at least 2, got {n}")
    return ids[:n]


def score(decoder, tokens: list[int]) -> tuple[list[float], list[int]]:
    """Teacher-force `decoder` through `tokens`: (NLL of tokens[1:], argmax at each of those positions)."""
    import torch

    decoder.reset()
    decoder.prefill(tokens[:1])
    nll, top1 = [], []
    for i in range(1, len(tokens)):
        lg = decoder.last_logits()
        if lg is None:
            raise ConfigError("backend", f"{decoder.backend_name} exposes no logits; quality cannot be measured")
        lg = lg.float().cpu()
        nll.append(float(torch.logsumexp(lg, -1) - lg[tokens[i]]))
        top1.append(int(lg.argmax()))
        if i == len(tokens) - 1:
            break
        decoder.set_next_input(tokens[i])
        decoder.step()
    decoder.reset()
    return nll, top1


def _cache_key(backend: str, model: str, device: str, n: int) -> dict[str, Any]:
    def v(p: str) -> str | None:
        try:
            return metadata.version(p)
        except metadata.PackageNotFoundError:
            return None
    text_hash = hashlib.sha256(held_text().encode()).hexdigest()[:16]
    return {"backend": backend, "model": model, "device": device.split(":")[0], "tokens": n, "text": text_hash,
            "torch": v("torch"), "transformers": v("transformers"), "edgeprof": v("edgeprof"), "schema": 1}


def _cache_path(key: dict[str, Any]):
    from edgeprof.paths import cache_dir

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "quality" / f"{digest}.json"


def _run(backend: str, model: str, device: str, n: int, loaded_factory=None) -> tuple[list[float], list[int], str]:
    import gc

    from edgeprof.backends import registry
    from edgeprof.sources import load_model

    load = loaded_factory or (lambda: load_model(model, device, synthetic=False))
    loaded = load()
    if loaded.synthetic or loaded.tokenizer is None:
        raise ConfigError("model", f"quality needs real weights and a tokenizer; {model} has none")
    tokens = text_tokens(loaded.tokenizer, n)
    dec = registry.create(backend, loaded, device, len(tokens) + 16)
    try:
        nll, top1 = score(dec, tokens)
        label = loaded.label
    finally:
        dec.close()
        del dec, loaded
        gc.collect()
    return nll, top1, label


def measure(backend: str, model: str = QUALITY_MODEL, device: str = "cpu", n_tokens: int = DEFAULT_TOKENS,
            use_cache: bool = True, loaded_factory=None) -> dict[str, Any]:
    """The record's `quality` block for `backend` on the real model `model` (see the module doc)."""
    key = _cache_key(backend, model, device, n_tokens)
    path = _cache_path(key)
    if use_cache and loaded_factory is None and path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return {**cached["quality"], "cached": True}
    ref_nll, ref_top1, label = _run(REFERENCE_BACKEND, model, device, n_tokens, loaded_factory)
    if backend == REFERENCE_BACKEND:
        nll, top1 = ref_nll, ref_top1
    else:
        nll, top1, _ = _run(backend, model, device, n_tokens, loaded_factory)
    out = {
        "model": model, "model_label": label, "tokens": len(nll) + 1, "device": device,
        "text": "edgeprof/data/heldout.txt (public domain: Declaration of Independence, Gettysburg Address, "
                "Pride and Prejudice ch. 1)",
        "perplexity": math.exp(sum(nll) / len(nll)),
        "reference_perplexity": math.exp(sum(ref_nll) / len(ref_nll)),
        "agreement": sum(a == b for a, b in zip(top1, ref_top1, strict=True)) / len(top1),
        "reference": f"{REFERENCE_BACKEND} bf16, unquantized weights",
        "teacher_forced": True,
    }
    if use_cache and loaded_factory is None:
        from edgeprof.records import write_json_atomic

        write_json_atomic(path, {"key": key, "quality": out})
    return {**out, "cached": False}


def not_measured(reason: str) -> dict[str, Any]:
    return {"perplexity": None, "agreement": None, "model": None, "reason": reason}
