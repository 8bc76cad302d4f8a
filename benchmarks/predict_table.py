#!/usr/bin/env python3
"""Validation table of `edgeprof predict` from committed profiles (offline, no GPU).

    PYTHONPATH=. python3 benchmarks/predict_table.py --out results/h200/2026-11-28-qwen-backends/predict-validation.jsonl
    (the first table, without the H200 -> L4 quantized rows: results/h200/2026-11-28-predict-calibration/validation.jsonl)

Rows (one per cell; every prediction is labelled PREDICTED):
* H200 -> H100: the H200 profiles of results/h200/2026-11-28-predict-calibration (full
  explain records for edgeprof-fast(-int4), summary cells for the rest) against the H100
  cells measured in results/h100 (2026-11-22-profile-cells, 2026-11-22-fast-decode).
* H100 -> H200: the H100 explain records of results/h100/2026-11-22-explain (ctx 2048, per-class
  groups) against the H200 cells measured in the same calibration run.
* H100 -> L4: the paper's L4 cells (measured_by paper). The paper's host is faster than
  this project's VMs: its host-CPU factor is fitted on the paper's H100 cells (hf-eager
  0.27 of the floor), never on an L4 cell.
A naive bandwidth-ratio prediction (source step x BW_src / BW_tgt) is given beside each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

H200_DIR = REPO / "results/h200/2026-11-28-predict-calibration"
MODEL = "qwen2.5-7b"
WEIGHTS = {"torchao-int4": "gptq4-g128", "edgeprof-fast-int4": "gptq4-g128"}
PAPER_L4 = {"hf-eager": 62.32, "bnb-nf4": 59.36, "exllamav2": 17.36, "awq-marlin": 45.24}
PAPER_GRAPH_SPEEDUP = {"l4": 1.028, "h100-sxm": 1.259}
PAPER_H100_EAGER_FRACTION = 0.27  # paper floor 4.5817 ms (H100, ctx 2048) / step


def h100_measured() -> dict[tuple[str, int], tuple[float, str]]:
    out = {}
    for rel in ("results/h100/2026-11-22-profile-cells/cells.jsonl", "results/h100/2026-11-22-fast-decode/cells.jsonl"):
        for line in (REPO / rel).read_text().splitlines():
            r = json.loads(line)
            # fast_decode records carry no gpu field: that run's PROVENANCE.md names the H100
            if r.get("status") == "ok" and r.get("gpu", "h100-sxm") == "h100-sxm":
                out.setdefault((r["backend"], int(r["ctx"])), (r["stats"]["wall"]["p50"], rel))
    return out


def row(pred, measured: float | None, measured_by: str, source: str, detail: str, **extra) -> dict:
    from edgeprof.predict_data import card

    src, tgt = card(pred.from_gpu), card(pred.to_gpu)
    naive = pred.measured_from_ms * src.bandwidth_gbs / tgt.bandwidth_gbs
    r = {"label": "PREDICTED", "backend": pred.backend, "ctx": pred.ctx, "from_gpu": pred.from_gpu,
         "to_gpu": pred.to_gpu, "predicted_ms": round(pred.predicted_ms, 3),
         "band_ms": [round(x, 3) for x in pred.band_ms], "bound": pred.bound, "measured_ms": measured,
         "measured_by": measured_by, "measured_source": source, "source_step_ms": round(pred.measured_from_ms, 3),
         "naive_bw_ratio_ms": round(naive, 3), "host_cpu_factor": pred.host_cpu_factor, "profile_detail": detail}
    if measured:
        r["error_rel"] = round(pred.predicted_ms / measured - 1, 4)
        r["naive_error_rel"] = round(naive / measured - 1, 4)
        r["in_band"] = pred.band_ms[0] <= measured <= pred.band_ms[1]
    r.update(extra)
    return r


def cross_card(p) -> list[dict]:
    from edgeprof.predict import predict
    from edgeprof.predict_data import card, load_explains, profile, profile_from_summary

    rows = []
    h100, h200 = card("h100-sxm"), card("h200")
    meas = h100_measured()
    summary = json.loads((H200_DIR / "summary.json").read_text())
    full = {(r["backend"], int(r["ctx"])): r for r in load_explains(H200_DIR / "explain")}
    for cell in summary["cells"]:
        key = (cell["backend"], int(cell["ctx"]))
        if key in full:
            prof, detail = profile(full[key]), "per-kernel (explain record)"
        else:
            prof = profile_from_summary(cell, "h200", MODEL, WEIGHTS.get(cell["backend"], "bf16"),
                                        str(H200_DIR / "summary.json"))
            detail = "aggregate (summary cell: per-kernel file lost to the device tool's file limit)"
        m, src = meas.get(key, (None, ""))
        rows.append(row(predict(prof, h200, h100, p), m, "edgeprof", src + " (H100)", detail))
    h200_meas = {(c["backend"], int(c["ctx"])): c["step_ms"] for c in summary["cells"]}
    for r in load_explains(REPO / "results/h100/2026-11-22-explain"):
        key = (r["backend"], int(r["ctx"]))
        rows.append(row(predict(profile(r), h100, h200, p), h200_meas.get(key), "edgeprof",
                        str((H200_DIR / "summary.json").relative_to(REPO)) + " (H200)",
                        "per-class (older explain record)"))
    return rows


def paper_host_factor(p) -> float:
    """Host-CPU factor of the paper's machine: the one that makes our H100 hf-eager profile
    hit the paper's H100 eager step (fraction 0.27 of its 4.5817 ms floor)."""
    from edgeprof.predict_data import load_explains, profile

    return _fit_paper_host(p, profile(load_explains(REPO / "results/h100/2026-11-22-explain/explain-hf-eager.json")[0]),
                           "h100-sxm")


def _fit_paper_host(p, eager_profile, src_gpu: str) -> float:
    """The host-CPU factor that makes `eager_profile` (hf-eager, ctx 2048, measured on `src_gpu`) predict the
    paper's H100 eager step on the H100 (bisection; the prediction grows with the factor)."""
    from edgeprof.predict import predict
    from edgeprof.predict_data import card

    target = 4.5817 / PAPER_H100_EAGER_FRACTION
    src, h100 = card(src_gpu), card("h100-sxm")
    lo, hi = 0.01, 2.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if predict(eager_profile, src, h100, p, mid).predicted_ms < target else (lo, mid)
    return (lo + hi) / 2


def paper_rows(p) -> list[dict]:
    from edgeprof.predict import predict
    from edgeprof.predict_data import card, load_explains, profile

    factor = paper_host_factor(p)
    h100, l4 = card("h100-sxm"), card("l4")
    profs = {r["backend"]: profile(r) for r in load_explains(REPO / "results/h100/2026-11-22-explain")}
    note = (f"host-CPU factor {factor:.3f}: fitted on the paper's H100 hf-eager cell (0.27 of floor), "
            "not on an L4 cell")
    rows = [row(predict(profs["hf-eager"], h100, l4, p, factor), PAPER_L4["hf-eager"], "paper",
                "arXiv 2605.30571 (L4 bf16 eager)", "per-class (older explain record)", note=note)]
    rows += quantized_l4_rows(p)
    rows.append({"label": "PREDICTED", "backend": "awq-marlin", "ctx": 2048, "from_gpu": "-", "to_gpu": "l4",
                 "predicted_ms": None, "measured_ms": PAPER_L4["awq-marlin"], "measured_by": "paper",
                 "measured_source": "arXiv 2605.30571 (L4)",
                 "note": "not predicted: no AWQ runtime installs here (AutoAWQ is archived; no maintained AWQ+Marlin "
                         "wheel for this torch), so there is no profile of a matching backend"})
    for gpu in ("l4", "h100-sxm"):
        tgt = card(gpu)
        eager = predict(profs["hf-eager"], h100, tgt, p, factor)
        graph = predict(profs["hf-graph"], h100, tgt, p, factor)
        rows.append({"label": "PREDICTED", "backend": "cuda-graph speed-up (hf-eager / hf-graph)", "ctx": 2048,
                     "from_gpu": "h100-sxm", "to_gpu": gpu, "predicted_ms": None,
                     "predicted_ratio": round(eager.predicted_ms / graph.predicted_ms, 3),
                     "measured_ratio": PAPER_GRAPH_SPEEDUP[gpu], "measured_ms": None, "measured_by": "paper",
                     "measured_source": "arXiv 2605.30571", "eager_ms": round(eager.predicted_ms, 3),
                     "graph_ms": round(graph.predicted_ms, 3), "eager_bound": eager.bound,
                     "host_cpu_factor": factor, "note": note})
    return rows


def h200_host_factor(p) -> float:
    """The paper host's CPU factor relative to the H200 machines' host: makes this project's H200
    hf-eager profile hit the paper's H100 eager step (0.27 of the floor) on the H100. Fitted on that
    paper H100 cell only, never on an L4 cell (same rule as paper_host_factor)."""
    return _fit_paper_host(p, _h200_eager_profile(), "h200")


def quantized_l4_rows(p) -> list[dict]:
    """bnb-nf4 and ExLlamaV2 on the L4 from their H200 explain profiles (results/h200/2026-11-28-qwen-backends;
    no H100 was lent in that session). ExLlamaV2 here is the dynamic generator on the rtn4 weights: the same
    runtime and layout as the paper's GPTQ+ExLlamaV2, not the same (calibrated GPTQ) values."""
    from edgeprof.predict import predict
    from edgeprof.predict_data import card, load_explains, profile

    factor = h200_host_factor(p)
    h200, l4 = card("h200"), card("l4")
    src = REPO / "results/h200/2026-11-28-qwen-backends/explain-nf4-exl2-int8.jsonl"
    profs = {r["backend"]: profile(r) for r in load_explains(src) if int(r["ctx"]) == 2048}
    note = (f"host-CPU factor {factor:.3f}: fitted on the paper's H100 hf-eager cell from this project's H200 "
            "hf-eager profile, not on an L4 cell")
    rows = [row(predict(profs[name], h200, l4, p, factor), PAPER_L4[name], "paper", "arXiv 2605.30571 (L4)",
                f"per-kernel (explain record, {src.relative_to(REPO)})", note=note)
            for name in ("bnb-nf4", "exllamav2")]
    # The paper ran bnb-nf4 in transformers' eager loop; edgeprof's bnb-nf4 replays a graph. Runner swap: the
    # same nf4 kernels, launched with the host cost per kernel of this project's H200 hf-eager profile.
    eager = _h200_eager_profile()
    from edgeprof.predict import host_per_kernel

    h = host_per_kernel(eager)
    swapped = predict(profs["bnb-nf4"], h200, l4, p, factor, eager_host_per_kernel_ms=h)
    r = row(swapped, PAPER_L4["bnb-nf4"], "paper", "arXiv 2605.30571 (L4)",
            f"per-kernel (explain record, {src.relative_to(REPO)}), run eager", note=note +
            f"; runner swap: nf4 kernels launched eagerly at hf-eager's {h * 1e3:.1f} us host time per kernel "
            "(H200 host, then scaled by the factor)")
    r["backend"] = "bnb-nf4 (eager, as the paper ran it)"
    return rows + [r]


def _h200_eager_profile():
    from edgeprof.predict_data import profile_from_summary

    cell = next(c for c in json.loads((H200_DIR / "summary.json").read_text())["cells"]
                if c["backend"] == "hf-eager" and int(c["ctx"]) == 2048)
    return profile_from_summary(cell, "h200", MODEL, "bf16", str(H200_DIR / "summary.json"))


def summarize(rows: list[dict]) -> str:
    lines = [f"{'backend':<42}{'ctx':>6} {'from':<9}{'to':<9}{'PRED ms':>9}{'meas ms':>9}{'err':>8}"
             f"{'naive':>8}{'bound':>7} band"]
    for r in rows:
        if r.get("predicted_ratio") is not None:
            lines.append(f"{r['backend']:<42}{r['ctx']:>6} {r['from_gpu']:<9}{r['to_gpu']:<9}"
                         f"{r['predicted_ratio']:>8.3f}x{r['measured_ratio']:>8.3f}x  (eager {r['eager_bound']}-bound)")
            continue
        pm = "-" if r["predicted_ms"] is None else f"{r['predicted_ms']:.2f}"
        err = f"{r['error_rel']:+.1%}" if r.get("error_rel") is not None else "-"
        nv = f"{r['naive_error_rel']:+.1%}" if r.get("naive_error_rel") is not None else "-"
        band = "" if r["predicted_ms"] is None else f"[{r['band_ms'][0]:.2f}, {r['band_ms'][1]:.2f}]"
        meas = "-" if r["measured_ms"] is None else f"{r['measured_ms']:.2f}"
        lines.append(f"{r['backend']:<42}{r['ctx']:>6} {r['from_gpu']:<9}{r['to_gpu']:<9}{pm:>9}{meas:>9}{err:>8}"
                     f"{nv:>8}{r.get('bound', '-'):>7} {band}")
    dev = [r for r in rows if r.get("error_rel") is not None and r["backend"] != "hf-eager"
           and r["measured_by"] == "edgeprof"]
    if dev:
        errs = [abs(r["error_rel"]) for r in dev]
        naive = [abs(r["naive_error_rel"]) for r in dev]
        lines.append(f"cross-card device-bound cells: n={len(dev)}, median |err| {statistics.median(errs):.1%}, "
                     f"worst {max(errs):.1%}; naive bandwidth ratio: median {statistics.median(naive):.1%}, "
                     f"worst {max(naive):.1%}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the table here (JSONL)")
    args = ap.parse_args()
    from edgeprof.predict_data import params

    p = params()
    rows = cross_card(p) + paper_rows(p)
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(summarize(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
