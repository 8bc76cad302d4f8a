"""edgeprof.fast.weights: the record's int4 notes, from the layers a decoder built (pure; stand-in layers)."""

from types import SimpleNamespace

import torch

from edgeprof.fast.weights import BiasedInt4, LayerWeights, int4_kernels_used


def _w4(variant: str, splits: int, source: str):
    return SimpleNamespace(kernel_name="edgeprof-w4a16-cuda", variant=variant, splits=splits, launch_source=source)


def test_int4_notes_say_each_launch_and_where_it_came_from():
    norm = torch.ones(4)
    layer = LayerWeights(norm, BiasedInt4(_w4("clscxg", 6, "rule"), None), _w4("wk6", 1, "rule"), norm,
                         _w4("scxa", 1, "plan"), _w4("base", 9, "base"))
    notes = int4_kernels_used([layer])
    assert notes["int4_kernel"] == "edgeprof-w4a16-cuda"
    assert notes["int4_launch"] == {"qkv": "clscxg s6", "o": "wk6 s1", "gate_up": "scxa s1", "down": "base s9"}
    assert notes["int4_launch_source"] == {"qkv": "rule", "o": "rule", "gate_up": "plan", "down": "base"}
    assert "int4_fallback_reason" not in notes


def test_tinygemm_layers_have_no_launch_notes():
    norm = torch.ones(4)
    tg = SimpleNamespace(kernel_name="tinygemm")
    notes = int4_kernels_used([LayerWeights(norm, tg, tg, norm, tg, tg)])
    assert notes == {"int4_kernel": "tinygemm"}
