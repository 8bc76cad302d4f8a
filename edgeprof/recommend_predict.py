"""`recommend --gpu TARGET` on an unmeasured GPU: rank by the PREDICTED step (with its band)
from explain profiles instead of by the floor bound. A backend whose cell record failed
correctness (the gate, `kernel_correctness` or `gate`) is never recommended."""

from __future__ import annotations

from typing import Any

from edgeprof.recommend import Verdict, _ms, correctness_problem, memory_of


def predicted_verdicts(profiles: list[dict[str, Any]], records: list[dict[str, Any]], gpu_key: str, slo_ms: float,
                       budget: int | None, host_cpu: float, model: str | None, ctx: int | None) -> list[Verdict]:
    from edgeprof.predict import predict
    from edgeprof.predict_data import card, params, profile

    tgt, p = card(gpu_key), params()
    out = []
    for r in profiles:
        if (model and str(r.get("model")).lower() != model.lower()) or (ctx and int(r["ctx"]) != ctx):
            continue
        q = predict(profile(r), card(str(r["gpu"])), tgt, p, host_cpu)
        v = Verdict(model=str(r["model"]), backend=str(r["backend"]), weights=r.get("weights"), ctx=int(r["ctx"]),
                    gpu=tgt.key, accepted=False, measured=False, predicted_ms=q.predicted_ms, band_ms=q.band_ms)
        v.notes.append(f"PREDICTED from {q.from_gpu} ({q.bound}-bound), not measured")
        v.notes += q.caveats
        cells = [c for c in records if c.get("backend") == v.backend and str(c.get("model")) == v.model]
        problems = {pr for c in cells if (pr := correctness_problem(c))}
        v.reasons += sorted(problems)
        if not cells:
            v.notes.append("no cell record for this backend: correctness unknown")
        else:
            v.mem_bytes, v.mem_source = memory_of(cells[0])
        # The SLO is on p99; a prediction is a p50, so its band's upper edge is what must fit.
        if q.band_ms[1] > slo_ms:
            v.reasons.append(f"PREDICTED {_ms(q.predicted_ms)} ms (band up to {_ms(q.band_ms[1])}) > SLO {slo_ms:g} ms")
        if budget is not None and v.mem_bytes is not None and v.mem_bytes > budget:
            v.reasons.append(f"needs {v.mem_bytes / 1e9:.2f} GB ({v.mem_source}) > budget {budget / 1e9:g} GB")
        v.accepted = not v.reasons
        out.append(v)
    return out


def format_group(g: dict[str, Any]) -> list[str]:
    lines = [f"{g['model']} on {g['gpu']}, ctx {g['ctx']}  [PREDICTED, NOT MEASURED]"]
    if g["accepted"]:
        lines.append(f"  {'rank':<5}{'backend':<20}{'weights':<12}{'PREDICTED':>10}  band")
        for i, v in enumerate(g["accepted"], 1):
            lo, hi = v["band_ms"]
            lines.append(f"  {i:<5}{v['backend']:<20}{str(v['weights']):<12}{_ms(v['predicted_ms']):>10}  "
                         f"[{_ms(lo)}, {_ms(hi)}]")
            lines += [f"       note: {n}" for n in v["notes"]]
    else:
        lines.append("  no backend meets the constraints")
    for v in g["rejected"]:
        lines.append(f"  rejected {v['backend']}: {'; '.join(v['reasons'])}")
    return lines
