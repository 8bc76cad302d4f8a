"""The W4 GEMV with the mma's unused B columns zero against x in every column, per shape (issue 12, twenty-second pass).

mma.m16n8k16 computes 8 output columns and a batch-1 GEMV writes column 0 only. Until now every lane loaded x, so
the tensor core multiplied 8 copies of it; with $EDGEPROF_W4_BCOLS=zero (csrc: W4Args::bz) lanes 4-31 read zeros:
the same instructions, bitwise the same y. The nineteenth pass found the loop's math lowering the SM clock 7-10%
under the power limit; this asks whether zero operands give that back.

Per config (shape:variant:splits, in the decoder's form as the tune's --tune-form decoder): y under "zero" must be
bitwise y under "x" (else FAILED, not timed); then the chain over the weight copies (PDL) is timed in both modes,
interleaved for --rounds rounds (each round's order alternates), and replayed for --hold-s per mode while nvidia-smi
samples the SM clock and the power draw.

    python benchmarks/bcols_ab.py --model qwen2.5-7b --out results/.../bcols.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODES = ("x", "zero")
DEFAULT_CONFIGS = {
    "qwen2.5-7b": "qkv:clscxg:7,o:wk6:1,gate_up:scxa:1,down:clscxg:10,down:clscx:10,down:scx:10",
    "llama-3.1-8b": "qkv:clscxg:6,o:wk6:1,gate_up:scxa:1,down:wk8:1",
}
SMI_FIELDS = "timestamp,clocks.sm,power.draw"


def parse_configs(text: str) -> list[tuple[str, str, int]]:
    """"shape:variant:splits,..." -> [(shape, variant, splits)]; a ValueError naming the bad entry."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        bits = part.split(":")
        if len(bits) != 3 or not bits[2].isdigit() or int(bits[2]) < 1:
            raise ValueError(f"--configs: {part!r} is not shape:variant:splits (splits a positive integer)")
        out.append((bits[0], bits[1], int(bits[2])))
    if not out:
        raise ValueError("--configs: give at least one shape:variant:splits")
    return out


def parse_smi(text: str) -> dict:
    """nvidia-smi's csv lines (timestamp, SM clock MHz, power W; no header, no units) -> mean / min clock and mean /
    max power over the samples; lines that do not parse are skipped (nvidia-smi prints [N/A] at times)."""
    clocks, powers = [], []
    for line in text.splitlines():
        bits = [b.strip() for b in line.split(",")]
        if len(bits) < 3:
            continue
        try:
            clock, power = float(bits[1]), float(bits[2])
        except ValueError:
            continue
        clocks.append(clock)
        powers.append(power)
    if not clocks:
        return {"samples": 0}
    return {"samples": len(clocks), "sm_mhz_mean": statistics.fmean(clocks), "sm_mhz_min": min(clocks),
            "power_w_mean": statistics.fmean(powers), "power_w_max": max(powers)}


def summarise(times: dict[str, list[float]]) -> dict:
    """Per mode the median of the rounds' p50 (us), and zero / x per round (paired: same round) with its median,
    min and max. A ratio < 1: zero is faster."""
    ratios = [z / x for x, z in zip(times["x"], times["zero"], strict=True)]
    return {"us_x": statistics.median(times["x"]), "us_zero": statistics.median(times["zero"]),
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "rounds": len(ratios)}


# ---------------------------------------------------------------- on the GPU

def _sampled_hold(calls: list, seconds: float) -> dict:
    """Replay the chain for `seconds` while nvidia-smi samples every 20 ms; its summary (parse_smi)."""
    from gemv_timeline import hold

    smi = subprocess.Popen(["nvidia-smi", f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits", "-lms", "20"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(0.2)  # nvidia-smi's first sample
        hold(calls, seconds, True, 0)
    finally:
        smi.terminate()
        out, _ = smi.communicate(timeout=5)
    return parse_smi(out)


def run_config(model: str, shape: str, variant: str, splits: int, rounds: int, repeats: int, hold_s: float) -> dict:
    import torch
    from int4_gemv import _tune_cache, form_call, shape_form, tune_shapes

    from edgeprof.fast.w4cuda import W4CudaLinear, norm_wanted, use_bcols, use_norm, use_pdl
    from edgeprof.timing import time_graph

    shapes = {name: (k, n) for _, name, k, n in tune_shapes(model)}
    if shape not in shapes:
        raise ValueError(f"--configs: shape {shape!r} is not one of {sorted(shapes)}")
    k, n = shapes[shape]
    form = shape_form(shape, "decoder", model)
    norm = norm_wanted() if form == "norm" else "loop"
    cache = _tune_cache(shape, k, n)
    layers = [W4CudaLinear(p, splits=splits, variant=variant) for p in cache["copies"]]
    calls = [form_call(li, form, cache, norm)[0] for li in layers]
    first, ref = form_call(layers[0], form, cache, norm)
    row = {"model": model, "shape": shape, "k": k, "n": n, "variant": variant, "splits": layers[0].splits,
           "form": form, "bytes": layers[0].nbytes, "copies": len(calls)}
    use_pdl(True)
    use_norm(norm)
    try:
        outs = {}
        for mode in MODES:
            use_bcols(mode)
            outs[mode] = first().clone()
            torch.cuda.synchronize()
        row["bitwise"] = bool(torch.equal(outs["x"], outs["zero"]))
        row["rel_err"] = float((outs["zero"].double() - ref).abs().max() / ref.abs().max())
        if not row["bitwise"]:
            row["status"] = "FAILED (zero B columns change y)"
            return row
        times: dict[str, list[float]] = {m: [] for m in MODES}
        for r in range(rounds):
            for mode in (MODES if r % 2 == 0 else MODES[::-1]):
                use_bcols(mode)
                times[mode].append(time_graph(calls, repeats).p50 * 1e3)
        row.update(status="ok", us=times, **summarise(times))
        if hold_s > 0:
            for mode in MODES:
                use_bcols(mode)
                row[f"smi_{mode}"] = _sampled_hold(calls, hold_s)
    finally:
        use_bcols("x")
        use_pdl(False)
        use_norm("loop")
    return row


def format_row(r: dict, copy_bw: float) -> str:
    if r.get("status") != "ok":
        return f"| {r.get('shape')} | {r.get('variant')} s{r.get('splits')} | {r.get('status')} |"
    fx, fz = (r["bytes"] / (r[f"us_{m}"] * 1e-6) / copy_bw for m in MODES)
    clk = " / ".join(f"{r[f'smi_{m}'].get('sm_mhz_mean', float('nan')):.0f}" for m in MODES if f"smi_{m}" in r)
    pw = " / ".join(f"{r[f'smi_{m}'].get('power_w_mean', float('nan')):.0f}" for m in MODES if f"smi_{m}" in r)
    return (f"| {r['shape']} | {r['variant']} s{r['splits']} ({r['form']}) | bitwise | {r['us_x']:.2f} ({fx:.3f}) | "
            f"{r['us_zero']:.2f} ({fz:.3f}) | {r['ratio_median']:.4f} [{r['ratio_min']:.4f}, {r['ratio_max']:.4f}] | "
            f"{clk or '-'} | {pw or '-'} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-7b", choices=sorted(DEFAULT_CONFIGS))
    ap.add_argument("--configs", help="shape:variant:splits, comma-separated (default: the model's H200 plan)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--hold-s", type=float, default=1.5, help="per mode: replay the chain this long under nvidia-smi")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    try:
        configs = parse_configs(args.configs or DEFAULT_CONFIGS[args.model])
    except ValueError as exc:
        ap.error(str(exc))
    import torch
    from int4_gemv import copy_bandwidth

    copy_bw = copy_bandwidth()
    gpu = torch.cuda.get_device_name()
    print(f"{gpu}: copy bandwidth {copy_bw / 1e12:.2f} TB/s; PDL on; {args.rounds} rounds x {args.repeats} replays",
          flush=True)
    print("| shape | launch (form) | check | x: us (of copy) | zero: us (of copy) | zero / x, median [min, max] | "
          "SM MHz x / zero | W x / zero |\n|---|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for shape, variant, splits in configs:
        try:
            rows.append(run_config(args.model, shape, variant, splits, args.rounds, args.repeats, args.hold_s))
        except Exception as exc:  # a failed config is a row that says why
            rows.append({"shape": shape, "variant": variant, "splits": splits,
                         "status": f"FAILED ({type(exc).__name__}: {str(exc)[:200]})"})
        print(format_row(rows[-1], copy_bw), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"gpu": gpu, "model": args.model, "copy_bw": copy_bw, "rows": rows}, indent=1))
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
