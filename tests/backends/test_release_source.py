"""release_source: a backend with its own copy of the weights lets the HF source go, and still decodes."""

from __future__ import annotations

import gc
import weakref

from edgeprof.backends import registry
from edgeprof.backends.base import release_source
from edgeprof.sources import load_model


def _greedy(decoder, n: int = 6) -> list[int]:
    decoder.reset()
    out = [decoder.prefill([1, 2, 3, 4]).token_id]
    out += [decoder.step().token_id for _ in range(n)]
    return out


def test_fast_decoder_frees_the_hf_module_and_decodes_the_same() -> None:
    loaded = load_model("tiny-test", "cpu")
    dec = registry.create("edgeprof-fast", loaded, "cpu", 64)
    before = _greedy(dec)
    module = weakref.ref(loaded.model)
    slim = release_source(loaded, dec)
    del loaded
    gc.collect()
    assert slim.model is None and slim.shape.name == "tiny-test"
    assert module() is None  # nothing else held the bf16 source
    assert _greedy(dec) == before


def test_hf_backend_keeps_its_module() -> None:
    loaded = load_model("tiny-test", "cpu")
    dec = registry.create("hf-eager", loaded, "cpu", 64)
    assert release_source(loaded, dec) is loaded and loaded.model is not None
