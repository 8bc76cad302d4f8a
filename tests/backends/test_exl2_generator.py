"""Pieces of the exllamav2 generator backend that run without a GPU (the backend itself is
covered on the GPU by tests/backends/test_hf.py::test_gpu_backends)."""

from __future__ import annotations

from edgeprof.backends import registry
from edgeprof.backends.exl2 import ensure_tokenizer_json


def test_synthetic_tokenizer_json_has_one_piece_per_token(tmp_path) -> None:
    from tokenizers import Tokenizer

    note = ensure_tokenizer_json(tmp_path, 300)
    assert "SYNTHETIC" in note
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert tok.get_vocab_size() == 300 and tok.id_to_token(299) == "<t299>"
    # exllamav2's HF tokenizer wrapper derives pieces by decoding [prefix, id]: both must work
    assert tok.encode(" ", add_special_tokens=False).ids and tok.decode([0, 7]).endswith("<t7>")
    assert ensure_tokenizer_json(tmp_path, 300) == "the model's tokenizer.json"  # never overwrites one


def test_both_exllamav2_paths_are_registered() -> None:
    assert registry.get("exllamav2").factory.endswith(":make")  # the generator, as users run it
    assert registry.get("exllamav2-forward").factory.endswith(":make_forward")
    assert registry.get("exllamav2").needs_gpu and registry.get("exllamav2-forward").needs_gpu
