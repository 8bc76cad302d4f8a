"""SYNTHETIC GGUF writer (edgeprof.synthetic_gguf): the file holds what llama.cpp expects for the
arch, and llama.cpp (llama-cpp-python, CPU build) loads it and decodes greedy tokens, for a
llama-arch shape (tied head) and a qwen2-arch shape (q/k/v biases, untied head, vocab larger than
the tile so the repeated-rows path runs). Shapes are tiny: the 7B preset is never written here."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest

from edgeprof.errors import ModelLoadError
from edgeprof.shape_loader import load_presets

needs_gguf = pytest.mark.skipif(importlib.util.find_spec("gguf") is None,
                                reason="the gguf package (gguf-py) is not installed: pip install gguf")
needs_llama = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed: it is the edgeprof[llamacpp] extra, built from source by "
           "`bash scripts/setup.sh` (skipped with --no-llamacpp)")

TILE = 256  # random rows per tall matrix here: both vocabs (640, 1000) end in a partial tile


def _shapes() -> dict:
    p = load_presets()
    llama = dataclasses.replace(p["tiny-test"], name="tiny-llama-tied", tied=True, vocab=640)
    # qwen2.5-7b's arch and options (qkv bias, untied head, rope 1e6) at a tiny size
    qwen2 = dataclasses.replace(p["qwen2.5-7b"], name="tiny-qwen2", n_layers=2, hidden=128, n_heads=4,
                                n_kv_heads=2, head_dim=32, intermediate=256, vocab=1000, max_ctx=512)
    return {"llama": llama, "qwen2": qwen2}


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def written(request, tmp_path_factory):
    pytest.importorskip("gguf", reason="the gguf package (gguf-py) is not installed: pip install gguf")
    from edgeprof import synthetic_gguf

    shape = _shapes()[request.param]
    path = synthetic_gguf.write(shape, tmp_path_factory.mktemp("gguf") / f"{shape.name}.gguf", tile_rows=TILE)
    return shape, path


@needs_gguf
def test_file_holds_what_llama_cpp_expects(written) -> None:
    import gguf

    shape, path = written
    r = gguf.GGUFReader(str(path))
    kv = {f.name: f for f in r.fields.values()}
    arch = bytes(kv["general.architecture"].parts[-1]).decode()
    assert arch == shape.arch
    assert bytes(kv["tokenizer.ggml.model"].parts[-1]).decode() == "none"
    assert int(kv[f"{arch}.vocab_size"].parts[-1][0]) == shape.vocab
    assert "SYNTHETIC" in bytes(kv["general.name"].parts[-1]).decode()
    t = {x.name: x for x in r.tensors}
    q4, f32 = gguf.GGMLQuantizationType.Q4_0, gguf.GGMLQuantizationType.F32
    # gguf shapes are ggml's [ne0 = row length, ne1 = rows]
    assert t["token_embd.weight"].tensor_type == q4 and list(t["token_embd.weight"].shape) == [shape.hidden, shape.vocab]
    assert ("output.weight" in t) == (not shape.tied)
    assert list(t["blk.1.attn_k.weight"].shape) == [shape.hidden, shape.kv_dim]
    assert list(t["blk.1.ffn_down.weight"].shape) == [shape.intermediate, shape.hidden]
    assert ("blk.0.attn_q.bias" in t) == shape.qkv_bias
    assert t["output_norm.weight"].tensor_type == f32
    assert len(path.read_bytes()) == path.stat().st_size > 0


@needs_gguf
def test_vocab_rows_repeat_the_tile_exactly(written) -> None:
    import gguf

    shape, path = written
    emb = next(x for x in gguf.GGUFReader(str(path)).tensors if x.name == "token_embd.weight").data
    rows = emb.reshape(shape.vocab, -1)  # [vocab, hidden/32*18] Q4_0 blocks
    for start in range(TILE, shape.vocab, TILE):  # every later tile (the last one partial) repeats the first
        n = min(TILE, shape.vocab - start)
        assert (rows[start:start + n] == rows[:n]).all()
    assert not (rows[1] == rows[0]).all()  # random within a tile


@needs_gguf
def test_bad_shapes_are_refused_with_the_field() -> None:
    from edgeprof import synthetic_gguf

    tiny = load_presets()["tiny-test"]
    with pytest.raises(ModelLoadError, match="multiple of 32"):
        synthetic_gguf.write(dataclasses.replace(tiny, hidden=48), "/nonexistent/x.gguf")
    with pytest.raises(ModelLoadError, match="arch 'gpt2'"):
        synthetic_gguf.write(dataclasses.replace(tiny, arch="gpt2"), "/nonexistent/x.gguf")


@needs_llama
def test_llama_cpp_loads_it_and_decodes_deterministically(written) -> None:
    from edgeprof.backends.llamacpp import LlamaCppDecoder

    shape, path = written
    dec = LlamaCppDecoder(path, "cpu", 64, synthetic=True, n_threads=1)
    try:
        assert dec.n_vocab == shape.vocab and dec.desc.startswith(shape.arch) and "Q4_0" in dec.desc
        prompt = [3, 17, 250, shape.vocab - 1, 42, 7, 999 % shape.vocab, 1]

        def run() -> list[int]:
            dec.reset()
            first = dec.prefill(prompt).token_id
            return [first] + [dec.step().token_id for _ in range(6)]

        a = run()
        assert all(0 <= t < shape.vocab for t in a)
        assert run() == a
        assert dec.info().weights == "gguf-q4_0"
    finally:
        dec.close()


def test_a_synthetic_gguf_is_labelled_synthetic_and_the_embedded_one_real(written) -> None:
    from edgeprof.embedded import ensure_default_gguf
    from edgeprof.sources import gguf_is_synthetic

    _, path = written
    assert gguf_is_synthetic(path)
    assert not gguf_is_synthetic(ensure_default_gguf())
