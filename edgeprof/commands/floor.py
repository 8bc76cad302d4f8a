"""`edgeprof floor`: the analytic memory floor of one decode step, with its derivation.

For one model x weight format x GPU and one or more contexts it prints the bytes a
batch-1 decode step reads per tensor group under both definitions (paper: every
weight byte; touched: what one step really reads), the floor in ms, and, given a
measured step time, the fraction of the floor reached.

`--json` prints one object for one `--ctx`, and a list of objects (one per ctx, in
the order given) when several are given.
"""

from __future__ import annotations

import argparse
import json
import re

from edgeprof import hardware_loader
from edgeprof.errors import ConfigError, ContextLengthError
from edgeprof.floor import GROUPS, Floor, compute_floor, format_help, parse_format
from edgeprof.hardware import GPUSpec
from edgeprof.shape_loader import require_shape
from edgeprof.shapes import ModelShape

HELP = "the analytic memory floor of a decode step (byte breakdown, floor ms, fraction of floor)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="M",
                   help="preset (see `edgeprof models`; 'default' = smollm2-135m), a config.json, "
                        "a model directory or a .gguf file")
    p.add_argument("--gpu", metavar="G",
                   help="catalog key (see `edgeprof gpus`) or an NVML name; default: the detected device "
                        "(the host CPU entry when there is no GPU)")
    p.add_argument("--ctx", default="2048", metavar="N[,N...]",
                   help="context length(s) in tokens, e.g. 2048 or 2048,4096,8192,16384 (16k works too); "
                        "default 2048")
    formats = "; ".join(f"{k}: {v}" for k, v in format_help().items())
    p.add_argument("--weights", default="bf16", metavar="FORMAT", help=f"weight format (default bf16). {formats}")
    p.add_argument("--measured-ms", metavar="X[,X...]",
                   help="measured ms per decode step, one per --ctx value; adds fraction and touched_fraction")
    p.add_argument("--bandwidth", choices=("datasheet", "calibrated"), default="datasheet",
                   help="datasheet peak (default) or the copy bandwidth measured by `edgeprof calibrate`")
    p.add_argument("--json", action="store_true", help="machine-readable output (an object, or a list for several ctx)")


def parse_ctx_list(text: str) -> list[int]:
    """'2048,4096' or '2k,16k' -> [2048, 4096]; bad tokens name themselves in the error."""
    out = []
    for token in (t.strip() for t in str(text).split(",")):
        m = re.fullmatch(r"(-?\d+)([kK]?)", token)
        if not m:
            raise ContextLengthError("ctx", f"{token!r} is not a token count; give integers like 2048 or 2048,4096")
        out.append(int(m.group(1)) * (1024 if m.group(2) else 1))
    return out


def parse_measured(text: str | None, n_ctx: int) -> list[float | None]:
    if text is None:
        return [None] * n_ctx
    values = []
    for token in (t.strip() for t in text.split(",")):
        try:
            values.append(float(token))
        except ValueError:
            raise ConfigError("measured-ms", f"{token!r} is not a number of milliseconds") from None
    if len(values) != n_ctx:
        raise ConfigError("measured-ms", f"got {len(values)} value(s) for {n_ctx} --ctx value(s); give one per ctx")
    return values


def resolve_model(spec: str) -> ModelShape:
    return require_shape(spec)


def resolve_gpu(key: str | None) -> GPUSpec:
    """--gpu, else the detected device (the host CPU entry when there is no GPU)."""
    return hardware_loader.resolve_gpu("cuda", key)[0]


def floors(args: argparse.Namespace) -> tuple[ModelShape, GPUSpec, list[Floor]]:
    shape = resolve_model(args.model)
    spec = resolve_gpu(args.gpu)
    fmt = parse_format(args.weights)
    ctxs = parse_ctx_list(args.ctx)
    measured = parse_measured(args.measured_ms, len(ctxs))
    bandwidth = hardware_loader.bandwidth_of(spec, args.bandwidth)
    return shape, spec, [compute_floor(shape, fmt, c, bandwidth, m) for c, m in zip(ctxs, measured, strict=True)]


def to_record(f: Floor, spec: GPUSpec, source: str) -> dict:
    return {**f.to_dict(), "gpu": spec.key, "gpu_name": spec.name, "bandwidth": source,
            "datasheet_bytes_per_s": spec.bandwidth_bytes_per_s}


def _mb(n: float) -> str:
    return f"{n / 1e6:,.2f}"


def render(shape: ModelShape, spec: GPUSpec, items: list[Floor], source: str) -> str:
    first = items[0]
    bw = first.bandwidth_bytes_per_s
    mha = "MHA" if shape.n_kv_heads == shape.n_heads else "GQA"
    lines = [
        f"model   {shape.name}" + (f" ({shape.hub_id})" if shape.hub_id else ""),
        f"shape   {shape.n_layers} layers, hidden {shape.hidden}, {shape.n_heads} heads / {shape.n_kv_heads} KV heads "
        f"x {shape.head_dim} ({mha}), MLP {shape.intermediate}, vocab {shape.vocab}, "
        f"{'tied' if shape.tied else 'untied'} lm_head{', qkv bias' if shape.qkv_bias else ''}",
        f"weights {first.weights}",
        f"device  {spec.name} [{spec.key}], {source} bandwidth {bw / 1e9:,.1f} GB/s",
        "",
        "bytes read per decode step (MB = 1e6 B)",
        f"{'group':<12}{'paper':>14}{'touched':>14}",
    ]
    # Weight groups do not depend on ctx; the KV cache does and gets its own table.
    for g in GROUPS[:-1]:
        lines.append(f"{g:<12}{_mb(first.traffic.paper[g]):>14}{_mb(first.traffic.touched[g]):>14}")
    lines.append(f"{'weights':<12}{_mb(first.traffic.weight_bytes):>14}"
                 f"{_mb(first.traffic.touched_bytes - first.traffic.kv_bytes):>14}")
    lines += ["", _ctx_header(items)]
    for f in items:
        row = (f"{f.ctx:>7}{_mb(f.traffic.kv_bytes):>12}{_mb(f.traffic.paper_bytes):>14}{f.floor_ms:>10.3f}"
               f"{_mb(f.traffic.touched_bytes):>14}{f.touched_floor_ms:>10.3f}")
        if any(i.measured_ms for i in items):
            row += f"{f.measured_ms:>10.2f}{f.fraction:>10.3f}{f.touched_fraction:>10.3f}"
        lines.append(row)
    lines += ["", "paper: every weight byte (embedding table included; a tied table once) + KV at ctx, / bandwidth.",
              "touched: what one step reads: one embedding row, the lm_head once, all block weights + KV."]
    if any(i.measured_ms for i in items):
        lines.append("fraction = floor / measured step time (1.0 = at the floor).")
    return "\n".join(lines)


def _ctx_header(items: list[Floor]) -> str:
    head = f"{'ctx':>7}{'KV MB':>12}{'paper MB':>14}{'floor ms':>10}{'touched MB':>14}{'t.floor':>10}"
    if any(i.measured_ms for i in items):
        head += f"{'measured':>10}{'fraction':>10}{'t.frac':>10}"
    return head


def run(args: argparse.Namespace) -> int:
    shape, spec, items = floors(args)
    if args.json:
        records = [to_record(f, spec, args.bandwidth) for f in items]
        print(json.dumps(records[0] if len(records) == 1 else records, indent=2))
    else:
        print(render(shape, spec, items, args.bandwidth))
    return 0
