"""bitsandbytes backends: NF4 (4-bit) and LLM.int8 (8-bit).

The decoder-block linears (q, k, v, o, gate, up, down) of the loaded bf16 model are
replaced in place by bitsandbytes layers, exactly what transformers does for
`BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)` (blocksize 64,
lm_head and embeddings left in bf16) or `load_in_8bit=True` (outlier threshold 6.0). Doing
it on the loaded model works the same for real checkpoints and synthetic weights.

* bnb-nf4: static cache + one decode step in a CUDA graph; if capture fails it runs
  without a graph and the record's notes say why.
* bnb-int8: static cache, no graph: LLM.int8's outlier decomposition looks at the
  activations on the host side, which a graph cannot capture.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeprof.backends.hf import HFDecoder, _check_device
from edgeprof.quant.gptq import LINEAR_NAMES

NF4_BLOCKSIZE = 64
INT8_THRESHOLD = 6.0


def _targets(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(name, mod) for name, mod in model.named_modules()
            if type(mod) is nn.Linear and ".layers." in name and name.rsplit(".", 1)[-1] in LINEAR_NAMES]


def _nf4_layer(mod: nn.Linear, device: torch.device):
    import bitsandbytes as bnb

    new = bnb.nn.Linear4bit(mod.in_features, mod.out_features, bias=mod.bias is not None,
                            compute_dtype=torch.bfloat16, compress_statistics=True, quant_type="nf4",
                            device="meta")
    # moving an unquantised Params4bit to a device quantises it (there, on the GPU)
    new.weight = bnb.nn.Params4bit(mod.weight.data, requires_grad=False, quant_type="nf4",
                                   blocksize=NF4_BLOCKSIZE, compress_statistics=True, module=new).to(device)
    if mod.bias is not None:
        new.bias = nn.Parameter(mod.bias.data.to(torch.bfloat16), requires_grad=False)
    return new


def _int8_layer(mod: nn.Linear, device: torch.device):
    import bitsandbytes as bnb

    new = bnb.nn.Linear8bitLt(mod.in_features, mod.out_features, bias=mod.bias is not None,
                              has_fp16_weights=False, threshold=INT8_THRESHOLD, device="meta")
    # Int8Params quantises when moved to the device
    new.weight = bnb.nn.Int8Params(mod.weight.data.to(torch.float16).cpu(), requires_grad=False,
                                   has_fp16_weights=False).to(device)
    if mod.bias is not None:
        new.bias = nn.Parameter(mod.bias.data.to(torch.float16), requires_grad=False)
    return new


def quantize_model_(model: nn.Module, kind: str) -> int:
    """Replace the block linears of `model` in place ("nf4" or "int8"); returns the count."""
    device = next(model.parameters()).device
    make = _nf4_layer if kind == "nf4" else _int8_layer
    targets = _targets(model)
    with torch.no_grad():
        for name, mod in targets:
            parent_name, leaf = name.rsplit(".", 1)
            setattr(model.get_submodule(parent_name), leaf, make(mod, device))
            del mod
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return len(targets)


def make_nf4(loaded, device: str, max_ctx: int, **options) -> HFDecoder:
    """Quantises `loaded.model` IN PLACE (load a fresh model for other backends)."""
    _check_device(loaded, device)
    n = quantize_model_(loaded.model, "nf4")
    loaded.dtype = "nf4"
    runner = "graph" if device.startswith("cuda") else "eager"
    return HFDecoder(loaded, device, max_ctx, backend_name="bnb-nf4", weights="nf4", cache="static",
                     runner=runner, graph_fallback=True,
                     notes={"bnb": f"{n} linears NF4, blocksize {NF4_BLOCKSIZE}, double-quant, bf16 compute"},
                     **options)


def make_int8(loaded, device: str, max_ctx: int, **options) -> HFDecoder:
    """Quantises `loaded.model` IN PLACE (load a fresh model for other backends)."""
    _check_device(loaded, device)
    n = quantize_model_(loaded.model, "int8")
    loaded.dtype = "int8"
    return HFDecoder(loaded, device, max_ctx, backend_name="bnb-int8", weights="int8", cache="static",
                     runner="eager", notes={"bnb": f"{n} linears LLM.int8, threshold {INT8_THRESHOLD}"}, **options)
