"""`edgeprof gpus` and `edgeprof models`: list the hardware and model catalogs.

Both read the YAML catalogs under `configs/`; `--json` prints a list of objects.
"""

from __future__ import annotations

import argparse
import json

from edgeprof.floor import compute_floor, parse_format
from edgeprof.hardware_loader import detect, load_calibrations, load_catalog
from edgeprof.shape_loader import load_presets

HELPS = {
    "gpus": "list the GPU catalog (datasheet bandwidth, NVML names, calibrated bandwidth if measured)",
    "models": "list the model presets with their exact shapes",
}
HELP = HELPS["gpus"]


def add_arguments_for(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def run_for(name: str, args: argparse.Namespace) -> int:
    rows = gpu_rows() if name == "gpus" else model_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(render_gpus(rows) if name == "gpus" else render_models(rows))
    return 0


def gpu_rows() -> list[dict]:
    detected = detect().spec.key
    calib = load_calibrations()
    rows = []
    for key, spec in load_catalog().items():
        measured = calib.get(key, {}).get("bytes_per_s")
        rows.append({
            "key": key, "name": spec.name, "arch": spec.arch, "bandwidth_gbs": spec.bandwidth_gbs,
            "memory_gb": spec.memory_gb, "unified_memory": spec.unified_memory, "nvml": list(spec.nvml),
            "calibrated_gbs": None if measured is None else float(measured) / 1e9, "detected": key == detected,
        })
    return rows


def render_gpus(rows: list[dict]) -> str:
    lines = [f"  {'key':<12}{'name':<42}{'arch':<8}{'GB/s':>8}{'mem GB':>8}{'calib GB/s':>12}  nvml names"]
    for r in rows:
        calib = "-" if r["calibrated_gbs"] is None else f"{r['calibrated_gbs']:.1f}"
        mark = "*" if r["detected"] else " "
        lines.append(f"{mark} {r['key']:<12}{r['name']:<42}{r['arch']:<8}{r['bandwidth_gbs']:>8g}"
                     f"{r['memory_gb']:>8g}{calib:>12}  {', '.join(r['nvml']) or '-'}")
    lines.append("* = the device detected here. GB/s = datasheet peak (1 GB = 1e9 B); "
                 "calib = `edgeprof calibrate` copy bandwidth.")
    return "\n".join(lines)


def model_rows() -> list[dict]:
    bf16 = parse_format("bf16")
    rows = []
    for shape in load_presets().values():
        weights = compute_floor(shape, bf16, 1, 1.0).traffic.weight_bytes
        rows.append({**shape.to_dict(), "bf16_weight_bytes": weights})
    return rows


def render_models(rows: list[dict]) -> str:
    head = (f"{'name':<17}{'arch':<8}{'layers':>7}{'hidden':>7}{'heads':>6}{'kv':>4}{'hd':>5}{'mlp':>7}"
            f"{'vocab':>8}{'tied':>6}{'bias':>6}{'max ctx':>9}{'bf16 GB':>9}  hub id")
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['name']:<17}{r['arch']:<8}{r['n_layers']:>7}{r['hidden']:>7}{r['n_heads']:>6}{r['n_kv_heads']:>4}"
            f"{r['head_dim']:>5}{r['intermediate']:>7}{r['vocab']:>8}{'yes' if r['tied'] else 'no':>6}"
            f"{'yes' if r['qkv_bias'] else 'no':>6}{r['max_ctx']:>9}{r['bf16_weight_bytes'] / 1e9:>9.2f}"
            f"  {r['hub_id'] or '-'}"
        )
    lines.append("bias = q/k/v biases; bf16 GB = every weight byte in bf16 (1 GB = 1e9 B). "
                 "tiny-test is not a real model (fast CPU tests).")
    return "\n".join(lines)
