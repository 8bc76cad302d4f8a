"""Per-card GEMV launch choices shipped as package data (edgeprof/data/gemv_plans.yaml): what a
benchmark on that card measured faster. Read once; keyed by the CUDA device name."""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def _doc() -> dict:
    import yaml

    return yaml.safe_load((resources.files("edgeprof") / "data" / "gemv_plans.yaml").read_text()) or {}


def cards() -> dict[str, dict]:
    return dict(_doc().get("cards") or {})


def card_entries(card: str, kind: str) -> list[dict]:
    """The `kind` ("bf16" | "w4a16") entries of `card`; [] for a card without measurements."""
    return list((cards().get(card) or {}).get(kind) or [])
