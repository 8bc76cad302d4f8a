"""benchmarks/layer_chain.py's pure part: the step's parts from the chain times (hand-computed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
layer_chain = pytest.importorskip("layer_chain")


def test_decompose_splits_the_step_into_its_parts():
    ms = {"qkv": 0.14, "o": 0.13, "gate_up": 0.54, "down": 0.33,  # shape chains: 1.14
          "qkv+norm": 0.17, "gate_up+norm": 0.58, "down+silu": 0.36,  # fused: 0.17 + 0.13 + 0.58 + 0.36 = 1.24
          "layers": 1.30, "layers+fusions": 1.45, "layers+fusions+attention": 1.75, "step": 2.00}
    parts = layer_chain.decompose(ms)
    assert parts["shape chains, plain"] == pytest.approx(1.14)
    assert parts["alternating shapes"] == pytest.approx(0.16)
    assert parts["fusions (alone)"] == pytest.approx(0.10)
    assert parts["fusions (in the layer chain)"] == pytest.approx(0.15)
    assert parts["attention (in the layer chain)"] == pytest.approx(0.30)
    assert parts["rest of the step"] == pytest.approx(0.25)
    # the chain-built parts add back up to the step
    built = ("shape chains, plain", "alternating shapes", "fusions (in the layer chain)",
             "attention (in the layer chain)", "rest of the step")
    assert sum(parts[k] for k in built) == pytest.approx(parts["step"])


def test_table_lists_every_chain_and_part_per_round():
    ms = {k: 1.0 for k in ("qkv", "o", "gate_up", "down", "qkv+norm", "gate_up+norm", "down+silu", "layers",
                          "layers+fusions", "layers+fusions+attention", "step")}
    out = {"backend": "edgeprof-fast-int4-cuda", "ctx": 2048, "gpu": "h200",
           "rounds": [{"ms": ms, "parts": layer_chain.decompose(ms)}] * 2}
    text = layer_chain.table(out)
    assert "ctx 2048 on h200" in text and "alternating shapes" in text and "layers+fusions+attention" in text
    assert len(text.splitlines()) == 1 + len(ms) + 6  # header, chains and step, parts (step once)
