"""The GPTQ v1 tensor layout (storage only) and the checkpoint writer ExLlamaV2 reads.

The values come from the one int4 quantizer, `edgeprof.quant.rtn` (round-to-nearest,
label `rtn4-gN`); this module only stores them the way GPTQ checkpoints do. Nothing here
is GPTQ's calibrated algorithm. Per linear layer W [out, in], group g, G = in/g:

Stored exactly as GPTQ checkpoints and ExLlamaV2 read them:

    qweight int32 [in/8, out]   nibble j (bits 4j..4j+3) of row r = q[:, 8r + j]
    qzeros  int32 [G, out/8]    nibble j of column c = zero(8c + j) - 1 = 7   (GPTQ v1: the
                                kernel adds the 1 back; "gptq_v2" checkpoints store 8)
    scales  fp16  [G, out]
    g_idx   int32 [in]          = i // g  (no act-order)

No calibration: RTN on the loaded weights, labelled `rtn4-gN` in every record, unless a calibrated
`edgeprof.quant.gptq4.GPTQResult` is passed as `quantized`: then its tensors are stored unchanged (static
act-order keeps g_idx = i // g, so desc_act stays false and every GPTQ reader takes them).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from edgeprof.errors import ModelLoadError
from edgeprof.quant.layout import BITS, PACK, ZERO, GPTQTensors, pack_nibbles, unpack_nibbles  # noqa: F401

LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def quantize_int(w: torch.Tensor, group: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """RTN (`edgeprof.quant.rtn`, symmetric): w [out, in] -> (q uint8 [out, in] 0..15, scales fp16 [G, out])."""
    from edgeprof.quant.rtn import quantize_qzs

    q, _, s = quantize_qzs(w, group, sym=True)
    return q.to(torch.uint8), s.t().to(torch.float16).contiguous()


def quantize_linear(w: torch.Tensor, group: int = 128, sym: bool = True) -> GPTQTensors:
    """Quantise one weight matrix [out, in] with `edgeprof.quant.rtn.quantize_rtn4`."""
    from edgeprof.quant.rtn import quantize_rtn4

    return quantize_rtn4(w, group, sym)


def unpack_qweight(t: GPTQTensors) -> torch.Tensor:
    """q values int64 [out, in] (0..15) from qweight [in/8, out]."""
    in_f, out_f = t.in_features, t.out_features
    v = unpack_nibbles(t.qweight.unsqueeze(-1))  # [in/8, out, 8]
    return v.permute(0, 2, 1).reshape(in_f, out_f).t().contiguous()


def unpack_zeros(t: GPTQTensors) -> torch.Tensor:
    """Zero points int64 [G, out] as the kernel uses them (stored value + 1)."""
    return unpack_nibbles(t.qzeros) + 1


def dequantize_linear(t: GPTQTensors) -> torch.Tensor:
    """Exact float32 W_hat [out, in] = (q - zero[g_idx]) * scale[g_idx]."""
    q = unpack_qweight(t).float()  # [out, in]
    gi = t.g_idx.long()
    zeros = unpack_zeros(t).float()[gi].t()  # [out, in]
    scales = t.scales.float()[gi].t()  # [out, in]
    return (q - zeros) * scales


# --- checkpoint writer for ExLlamaV2 --------------------------------------------------------------
def _is_quantized_linear(name: str) -> bool:
    return ".layers." in name and name.rsplit(".", 1)[-1] in LINEAR_NAMES


def _config_json(model, group: int, quantized=None) -> dict[str, Any]:
    cfg = model.config.to_dict()
    rope = cfg.get("rope_parameters") or {}
    # ExLlamaV2 reads the pre-v5 keys: rope_theta at top level, llama3 scaling under rope_scaling.
    cfg["rope_theta"] = float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    if rope.get("rope_type", "default") not in ("default", None):
        cfg["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    cfg["architectures"] = [type(model).__name__]
    cfg["torch_dtype"] = "float16"
    cfg["quantization_config"] = {
        "quant_method": "gptq", "bits": BITS, "group_size": group, "sym": True, "desc_act": False,
        "checkpoint_format": "gptq",
        "note": "edgeprof rtn4 (round-to-nearest, no calibration; edgeprof.quant.rtn) in GPTQ v1 layout",
    }
    if quantized is not None:
        m = quantized.meta
        cfg["quantization_config"]["note"] = (
            f"GPTQ ({m.get('library')} {m.get('library_version')}, {m.get('label')}, act-order "
            f"{m.get('actorder') or 'off'}, damp {m.get('dampening_frac')}, {m.get('calibration_tokens')} calibration "
            "tokens of edgeprof/data/calibration.txt; edgeprof.quant.gptq4) in GPTQ v1 layout")
    return cfg


def checkpoint_tensors(model, group: int = 128, progress: Callable[[str], None] | None = None,
                       quantized=None) -> dict[str, torch.Tensor]:
    """All tensors of a GPTQ checkpoint of `model` (CPU, contiguous), by safetensors key; the block
    linears from `quantized` (a gptq4.GPTQResult) when given, else rtn4 of the loaded weights."""
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    state = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    n_done = 0
    for key, value in state.items():
        if tied and key == "lm_head.weight":
            continue  # ExLlamaV2 maps lm_head to model.embed_tokens when tied
        module, leaf = key.rsplit(".", 1)
        if _is_quantized_linear(module) and leaf == "weight":
            t = quantized.tensors[module] if quantized is not None else quantize_linear(value.detach(), group)
            for name in ("qweight", "qzeros", "scales", "g_idx"):
                out[f"{module}.{name}"] = getattr(t, name).cpu().contiguous()
            n_done += 1
            if progress and n_done % 32 == 0:
                progress(f"quantised {n_done} linear layers")
        elif _is_quantized_linear(module) and leaf == "bias":
            b = value.detach().to(torch.float16).cpu().contiguous()
            if not torch.any(b != 0):
                # ExLlamaV2 drops an all-zero bias and then fails on Qwen2's q/k/v; the smallest
                # fp16 subnormal in one slot keeps it without changing any result measurably.
                b[0] = 2.0**-24
            out[key] = b
        else:
            out[key] = value.detach().to(torch.float16).cpu().contiguous()
    return out


def write_checkpoint(loaded, out_dir: str | Path, group: int = 128,
                     progress: Callable[[str], None] | None = None, quantized=None) -> Path:
    """Write `loaded.model` as a GPTQ 4-bit checkpoint (config.json with quantization_config,
    model.safetensors, tokenizer files when present) into `out_dir`, atomically."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    try:
        with torch.no_grad():
            tensors = checkpoint_tensors(loaded.model, group, progress, quantized)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(_config_json(loaded.model, group, quantized), indent=2, default=str))
        src = getattr(loaded, "path", None)
        if loaded.tokenizer is not None:
            with contextlib.suppress(Exception):  # tokenizer files are optional for a latency checkpoint
                loaded.tokenizer.save_pretrained(str(tmp))
        elif src is not None and Path(src).is_dir():
            for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"):
                if (Path(src) / name).exists():
                    shutil.copy(Path(src) / name, tmp / name)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelLoadError(f"could not write the GPTQ checkpoint to {out_dir}: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
