"""Text <-> token ids for the daemon: the model's tokenizer (with its chat template)
or, for synthetic models that have none, a byte-level codec, plus incremental
detokenization that never emits half a multi-byte character.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

REPLACEMENT = "\ufffd"


class TextCodec:
    """Wraps a Hugging Face tokenizer. `render` uses its chat template when it has one."""

    synthetic = False

    def __init__(self, tokenizer: Any, extra_eos: Sequence[int] = ()) -> None:
        self.tok = tokenizer
        eos = getattr(tokenizer, "eos_token_id", None)
        ids = eos if isinstance(eos, (list, tuple)) else [eos]
        self.eos_ids = frozenset(int(i) for i in [*ids, *extra_eos] if i is not None)
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))

    def encode(self, text: str, first: bool) -> list[int]:
        # Special tokens (BOS) only at the very start of the cache; a continuation must not repeat them.
        return list(self.tok.encode(text, add_special_tokens=first))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)

    def render(self, messages: Sequence[tuple[str, str]], continuing: bool) -> str:
        """Chat text for `messages`, ending with the assistant's generation prompt.

        When the session already holds a conversation, only the new turns are wanted;
        templates often prepend a default system prompt, so the text is taken as the
        difference between [probe] + messages and [probe] alone.
        """
        msgs = [{"role": r, "content": c} for r, c in messages]
        if not self.has_chat_template:
            return plain_render(messages)
        if not continuing:
            return self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        probe = [{"role": "user", "content": "\x00probe"}]
        base = self.tok.apply_chat_template(probe, tokenize=False)
        full = self.tok.apply_chat_template(probe + msgs, tokenize=False, add_generation_prompt=True)
        return full[len(base):] if full.startswith(base) else full


class ByteCodec:
    """UTF-8 bytes as token ids 0..255: lets synthetic models (no tokenizer) run the whole
    daemon path, multi-byte characters included. Output of random weights is noise."""

    synthetic = True
    has_chat_template = False
    eos_ids: frozenset[int] = frozenset()

    def __init__(self, vocab: int) -> None:
        if vocab < 256:
            raise ValueError(f"a byte codec needs a vocabulary of at least 256, the model has {vocab}")
        self.vocab = vocab

    def encode(self, text: str, first: bool) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        try:
            raw = bytes(ids)  # C fast path: every id is a byte
        except (ValueError, TypeError):
            raw = bytes(i for i in ids if 0 <= i < 256)
        return raw.decode("utf-8", errors="replace")

    @staticmethod
    def is_text(token_id: int) -> bool:
        """Ids outside 0..255 decode to nothing, alone or in any company."""
        return 0 <= token_id < 256

    def render(self, messages: Sequence[tuple[str, str]], continuing: bool) -> str:
        return plain_render(messages)


def plain_render(messages: Sequence[tuple[str, str]]) -> str:
    """Fallback chat format for tokenizers without a template."""
    return "".join(f"{role}: {content}\n" for role, content in messages) + "assistant:"


class TextStream:
    """Incremental detokenization (the vLLM/TGI method): decode a short window of
    recent ids and emit only the new suffix, holding text back while it ends in a
    replacement character (an incomplete multi-byte sequence or byte-fallback piece)."""

    def __init__(self, codec: Any) -> None:
        self.codec = codec
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        # A codec may say which ids can never produce text (ByteCodec: >= 256). Keeping them
        # out of the window changes no output and stops it growing per token (random weights
        # of a big vocabulary emit almost only such ids, and nothing is ever flushed).
        self._is_text = getattr(codec, "is_text", None)

    def push(self, token_id: int) -> str:
        if self._is_text is not None and not self._is_text(token_id):
            return ""
        self.ids.append(token_id)
        prefix = self.codec.decode(self.ids[self.prefix_offset:self.read_offset])
        full = self.codec.decode(self.ids[self.prefix_offset:])
        if len(full) > len(prefix) and not full.endswith(REPLACEMENT):
            delta = full[len(prefix):]
            # the next window starts at the ids just emitted, so a piece is always decoded with
            # left context (SentencePiece drops a leading space on a piece decoded alone)
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            return delta
        return ""

    def flush(self) -> str:
        """Whatever is still held back at the end of a stream (may end in U+FFFD)."""
        prefix = self.codec.decode(self.ids[self.prefix_offset:self.read_offset])
        full = self.codec.decode(self.ids[self.prefix_offset:])
        self.prefix_offset = self.read_offset = len(self.ids)
        return full[len(prefix):] if full.startswith(prefix) else ""
