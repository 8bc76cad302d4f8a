"""Incremental detokenization never splits a multi-byte character."""

from __future__ import annotations

import pytest

from edgeprof.daemon.text import ByteCodec, TextStream, plain_render


def test_byte_stream_holds_back_partial_characters():
    codec = ByteCodec(256)
    text = "añ✓🙂 ok"
    stream = TextStream(codec)
    pieces = [stream.push(b) for b in text.encode("utf-8")]
    assert "".join(pieces) + stream.flush() == text
    # no piece is half a character, and the 4-byte emoji arrives in one piece
    assert all("\ufffd" not in p for p in pieces)
    assert "🙂" in pieces


def test_flush_returns_an_incomplete_tail():
    stream = TextStream(ByteCodec(256))
    assert stream.push(0xE2) == "" and stream.push(0x9C) == ""
    assert stream.flush() == "\ufffd"


def test_plain_render():
    assert plain_render([("user", "hi")]) == "user: hi\nassistant:"


def test_real_tokenizer_stream_matches_full_decode():
    from edgeprof import embedded

    if not embedded.is_ready():
        pytest.skip("the embedded SmolLM2 is not converted yet (run `edgeprof fetch-default`)")
    from transformers import AutoTokenizer

    from edgeprof.daemon.text import TextCodec

    codec = TextCodec(AutoTokenizer.from_pretrained(embedded.model_dir()))
    text = " Robots: déjà vu ✓ 東京 🙂 end"
    ids = codec.encode(text, first=False)
    stream = TextStream(codec)
    out = "".join(stream.push(i) for i in ids) + stream.flush()
    assert out == codec.decode(ids)
    rendered = codec.render([("user", "hi")], continuing=True)
    assert rendered.startswith("<|im_start|>user") and "system" not in rendered
    assert codec.eos_ids


def test_byte_stream_ignores_ids_that_are_never_text():
    # A synthetic model with a large vocabulary emits mostly ids >= 256: they add no text and
    # must not pile up in the decode window (it would grow by one id per token).
    codec = ByteCodec(152064)
    assert codec.decode([104, 300, 105]) == codec.decode([104, 105]) == "hi"
    stream = TextStream(codec)
    out = [stream.push(i) for i in (104, 70000, 300, 105, 151000)]
    assert "".join(out) == "hi" and stream.ids == [104, 105]
