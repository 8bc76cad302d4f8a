"""Which backend to deploy: rank measured cells against a per-token SLO and a memory budget.

* A cell meets the SLO when its **p99** wall ms/step is within it (a robot misses
  deadlines on the tail, not on the mean).
* Memory is the measured peak (`peak_mem_bytes`) when the record has it, else the
  resident weights plus the KV cache at ctx (labelled "estimated").
* A cell is also rejected when it failed, or when its correctness gate flagged it.
* For a GPU with no measured cells in the results, only the analytic floor can be
  shown: the touched-bytes floor on that GPU is a lower bound on any backend's step
  time with that weight format. It is labelled "bound, not measured".

Every rejection carries its reason(s).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from edgeprof.errors import ConfigError


@dataclass
class Verdict:
    model: str
    backend: str
    weights: str | None
    ctx: int
    gpu: str
    accepted: bool
    p99_ms: float | None = None
    p50_ms: float | None = None
    mem_bytes: int | None = None
    mem_source: str | None = None  # "measured peak" | "estimated weights + KV" | "analytic" | None
    measured: bool = True
    bound_ms: float | None = None  # unmeasured GPU: touched-bytes floor (a lower bound)
    paper_floor_ms: float | None = None
    predicted_ms: float | None = None  # PREDICTED p50 (edgeprof predict), not measured
    band_ms: tuple[float, float] | None = None
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _shape(model: str):
    """Shape of a model spec when it can be known without loading anything, else None."""
    from edgeprof.errors import EdgeprofError
    from edgeprof.shape_loader import resolve_shape

    try:
        return resolve_shape(str(model))
    except EdgeprofError:
        return None


def _kv_bytes(model: str, ctx: int) -> int | None:
    from edgeprof.floor import kv_cache_bytes

    shape = _shape(model)
    return kv_cache_bytes(shape, ctx) if shape else None


def memory_of(r: dict[str, Any]) -> tuple[int | None, str | None]:
    if r.get("peak_mem_bytes"):
        return int(r["peak_mem_bytes"]), "measured peak"
    kv = _kv_bytes(r["model"], int(r["ctx"]))
    if r.get("resident_weight_bytes") and kv is not None:
        return int(r["resident_weight_bytes"]) + kv, "estimated weights + KV"
    return None, None


def _steady_hint(r: dict[str, Any], peak: int) -> str:
    """When a measured peak is far above weights + KV (it then holds load, quantise or
    compile transients, e.g. a bf16 copy quantised on the GPU), say what decoding needs,
    so the reader can tell a load-path problem from a model that does not fit."""
    kv = _kv_bytes(r["model"], int(r["ctx"]))
    if not r.get("resident_weight_bytes") or kv is None:
        return ""
    steady = int(r["resident_weight_bytes"]) + kv
    if peak < 1.5 * steady:
        return ""
    return f" (weights + KV alone {steady / 1e9:.2f} GB: the peak also holds load/quantise/compile transients)"


def correctness_problem(r: dict[str, Any]) -> str | None:
    """A reason when the record's correctness gate flagged the backend, else None.
    Reads `correctness` (the gate), `kernel_correctness` ({passed: ...}) and `gate`."""
    for key in ("kernel_correctness", "gate"):
        k = r.get(key)
        if isinstance(k, dict) and (k.get("passed") is False or k.get("ok") is False):
            return f"failed {key.replace('_', ' ')}" + (f" ({k['reason']})" if k.get("reason") else "")
    c = r.get("correctness")
    if not isinstance(c, dict):
        return None
    flagged = c.get("flagged") is True or c.get("passed") is False or c.get("ok") is False
    if not flagged:
        return None
    parts = [f"{k} {c[k]}" for k in ("agreement", "top1_agreement", "threshold", "max_abs_diff")
             if k in c and c[k] is not None]
    err = c.get("logit_rel_error")
    if isinstance(err, dict) and err.get("mean") is not None:
        parts.append(f"logit rel-error {err['mean']:.3g}")
    if c.get("rule"):
        parts.append(f"rule: {c['rule']}")
    detail = ", ".join(parts)
    return "failed the correctness gate against the bf16 reference" + (f" ({detail})" if detail else "")


def judge(r: dict[str, Any], slo_ms: float, mem_budget: int | None) -> Verdict:
    wall = (r.get("stats") or {}).get("wall") or {}
    v = Verdict(model=str(r.get("model")), backend=str(r.get("backend")), weights=r.get("weights"),
                ctx=int(r.get("ctx") or 0), gpu=str(r.get("gpu") or r.get("device") or "?"), accepted=False,
                p99_ms=wall.get("p99"), p50_ms=wall.get("p50"))
    v.mem_bytes, v.mem_source = memory_of(r)
    if r.get("status") != "ok":
        v.reasons.append(f"cell failed: {r.get('error') or 'no reason recorded'}")
        return v
    if v.p99_ms is None:
        v.reasons.append("no p99 in the record (no timed steps)")
        return v
    if v.p99_ms > slo_ms:
        v.reasons.append(f"p99 {_ms(v.p99_ms)} ms > SLO {slo_ms:g} ms (p50 {_ms(v.p50_ms)} ms)")
    if mem_budget is not None:
        if v.mem_bytes is None:
            v.notes.append("memory not known for this cell (no peak, no shape for the KV estimate)")
        elif v.mem_bytes > mem_budget:
            v.reasons.append(f"needs {v.mem_bytes / 1e9:.2f} GB ({v.mem_source}) > budget {mem_budget / 1e9:g} GB"
                             + _steady_hint(r, v.mem_bytes))
    problem = correctness_problem(r)
    if problem:
        v.reasons.append(problem)
    if r.get("synthetic"):
        v.notes.append("synthetic weights: timings only, no output quality")
    v.accepted = not v.reasons
    return v


def bound_verdicts(records: list[dict[str, Any]], gpu_key: str, slo_ms: float,
                   mem_budget: int | None) -> list[Verdict]:
    """Floor-based bounds on an unmeasured GPU for every (model, backend, ctx) in the results."""
    from edgeprof.floor import compute_floor, parse_format
    from edgeprof.hardware_loader import gpu

    spec = gpu(gpu_key)
    budget = mem_budget if mem_budget is not None else (int(spec.memory_gb * 1e9) if spec.memory_gb else None)
    seen, out = set(), []
    for r in records:
        key = (str(r.get("model")), str(r.get("backend")), int(r.get("ctx") or 0))
        if key in seen or not r.get("weights"):
            continue
        seen.add(key)
        shape = _shape(key[0])
        v = Verdict(model=key[0], backend=key[1], weights=r["weights"], ctx=key[2], gpu=spec.key, accepted=False,
                    measured=False, mem_source="analytic")
        if shape is None:
            v.reasons.append("model shape unknown without loading it; no bound computed")
            out.append(v)
            continue
        fl = compute_floor(shape, parse_format(r["weights"]), key[2], spec.bandwidth_bytes_per_s)
        bound = fl.touched_floor_ms
        v.bound_ms, v.paper_floor_ms = bound, fl.floor_ms
        v.mem_bytes = fl.traffic.weight_bytes + fl.traffic.kv_bytes
        v.notes.append(f"bound, not measured: no {r['weights']} step can beat the touched-bytes floor "
                       f"{_ms(bound)} ms on {spec.name} ({spec.bandwidth_gbs:g} GB/s); real steps are slower")
        if bound > slo_ms:
            v.reasons.append(f"even the floor bound {_ms(bound)} ms > SLO {slo_ms:g} ms: impossible on {spec.key}")
        if budget is not None and v.mem_bytes > budget:
            v.reasons.append(f"weights + KV {v.mem_bytes / 1e9:.2f} GB (analytic) > budget {budget / 1e9:g} GB")
        v.accepted = not v.reasons
        out.append(v)
    return out


@dataclass
class Recommendation:
    slo_ms: float
    mem_gb: float | None
    gpu: str | None
    groups: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "recommend", "slo_ms": self.slo_ms, "mem_gb": self.mem_gb, "gpu": self.gpu,
                "groups": self.groups}


def recommend(records: list[dict[str, Any]], slo_ms: float, mem_gb: float | None = None, gpu: str | None = None,
              model: str | None = None, ctx: int | None = None, profiles: list[dict[str, Any]] | None = None,
              host_cpu: float = 1.0) -> Recommendation:
    if slo_ms <= 0:
        raise ConfigError("slo-ms", f"must be a positive per-token latency in ms, got {slo_ms}")
    if mem_gb is not None and mem_gb <= 0:
        raise ConfigError("mem-gb", f"must be a positive memory budget in GB, got {mem_gb}")
    if not records:
        raise ConfigError("results", "holds no cell records; run `edgeprof sweep` or `edgeprof bench --out` first")
    if model:
        records = [r for r in records if str(r.get("model")).lower() == model.lower()]
        if not records:
            raise ConfigError("model", f"no cells for {model!r} in the results")
    if ctx:
        records = [r for r in records if int(r.get("ctx") or 0) == ctx]
        if not records:
            raise ConfigError("ctx", f"no cells at ctx {ctx} in the results")
    budget = int(mem_gb * 1e9) if mem_gb else None
    gpu_key = None
    if gpu:
        from edgeprof.hardware_loader import gpu as gpu_spec

        gpu_key = gpu_spec(gpu).key
        measured = [r for r in records if str(r.get("gpu") or "").lower() == gpu_key]
        if measured:
            verdicts = [judge(r, slo_ms, budget) for r in measured]
        elif profiles:  # PREDICTED from explain profiles (edgeprof/predict.py) instead of the bound
            from edgeprof.recommend_predict import predicted_verdicts

            verdicts = predicted_verdicts(profiles, records, gpu_key, slo_ms, budget, host_cpu, model, ctx)
        else:
            verdicts = bound_verdicts(records, gpu_key, slo_ms, budget)
    else:
        verdicts = [judge(r, slo_ms, budget) for r in records]
    groups: dict[tuple[str, str, int], list[Verdict]] = defaultdict(list)
    for v in verdicts:
        groups[(v.model, v.gpu, v.ctx)].append(v)
    out = []
    for (m, g, c), vs in sorted(groups.items()):
        acc = sorted((v for v in vs if v.accepted),
                     key=lambda v: (v.p99_ms if v.measured else
                                    (v.predicted_ms if v.predicted_ms is not None else v.bound_ms), v.mem_bytes or 0))
        rej = sorted((v for v in vs if not v.accepted), key=lambda v: v.backend)
        out.append({"model": m, "gpu": g, "ctx": c, "measured": all(v.measured for v in vs),
                    "predicted": any(v.predicted_ms is not None for v in vs),
                    "accepted": [v.to_dict() for v in acc], "rejected": [v.to_dict() for v in rej]})
    return Recommendation(slo_ms, mem_gb, gpu_key, out)


def _ms(v: float | None) -> str:
    """Milliseconds with 2 decimals, or 3 significant digits below 0.1 ms (tiny models)."""
    if v is None:
        return "-"
    return f"{v:.2f}" if abs(v) >= 0.1 else f"{v:.3g}"


def format_recommendation(rec: Recommendation) -> str:
    budget = f", memory <= {rec.mem_gb:g} GB" if rec.mem_gb else ""
    lines = [f"SLO: p99 <= {rec.slo_ms:g} ms per token{budget}"]
    for g in rec.groups:
        lines.append("")
        if g.get("predicted"):
            from edgeprof.recommend_predict import format_group

            lines += format_group(g)
            continue
        if g["measured"]:
            lines.append(f"{g['model']} on {g['gpu']}, ctx {g['ctx']}")
            head = f"  {'rank':<5}{'backend':<20}{'weights':<12}{'p99 ms':>9}{'p50 ms':>9}{'mem GB':>8}"
        else:
            lines.append(f"{g['model']} on {g['gpu']}, ctx {g['ctx']}  [BOUND, NOT MEASURED: analytic floor only]")
            head = f"  {'rank':<5}{'backend':<20}{'weights':<12}{'bound ms':>9}{'paper fl':>9}{'mem GB':>8}"
        if g["accepted"]:
            lines.append(head)
            for i, v in enumerate(g["accepted"], 1):
                mem = f"{v['mem_bytes'] / 1e9:.2f}" if v["mem_bytes"] else "?"
                a, b = (v["p99_ms"], v["p50_ms"]) if g["measured"] else (v["bound_ms"], v["paper_floor_ms"])
                lines.append(f"  {i:<5}{v['backend']:<20}{str(v['weights']):<12}{_ms(a):>9}{_ms(b):>9}{mem:>8}")
                lines += [f"       note: {n}" for n in v["notes"]]
        else:
            lines.append("  no backend meets the constraints")
        for v in g["rejected"]:
            lines.append(f"  rejected {v['backend']}: {'; '.join(v['reasons'])}")
    return "\n".join(lines)
