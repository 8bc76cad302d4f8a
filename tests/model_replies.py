"""What a real model's reply must contain, never its exact words (the words change
with a tokenizer or transformers release; a colour word in an answer about colours does not)."""

from __future__ import annotations

import re

COLOURS = ("red", "blue", "green", "yellow", "orange", "purple", "violet", "pink", "black", "white", "brown",
           "gray", "grey", "cyan", "magenta", "indigo")
_COLOUR = re.compile(r"\b(" + "|".join(COLOURS) + r")\b", re.IGNORECASE)


def colour_words(text: str) -> list[str]:
    """The colour words of `text`, lower case, in order (case-insensitive whole words)."""
    return [m.lower() for m in _COLOUR.findall(text)]
