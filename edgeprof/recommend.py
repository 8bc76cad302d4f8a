"""Which backend to deploy: rank measured cells against a per-token SLO and a memory budget.

* A cell meets the SLO when its **p99** wall ms/step is within it (a robot misses
  deadlines on the tail, not on the mean).
* Memory is the measured steady state while decoding (`steady_state_mem_bytes`, after
  load/quantize/compile transients are freed) when the record has it, else the resident
  weights plus the KV cache at ctx (labelled "estimated"). The load peak is shown as a
  note: it matters for how a robot starts the model, not for what it runs in.
* A backend whose kernels fail correctness (`kernel_correctness.passed` false, in any cell
  of the results) is never recommended, on any GPU.
* Quality (`quality.agreement`, `quality.perplexity`, on real weights) is shown beside the
  latency; `min_agreement` rejects backends below a user-set floor.
* For a GPU with no measured cells in the results and explain profiles given
  (`profiles`), backends are ranked by the PREDICTED p50 step (`edgeprof/predict.py`)
  with its band; the band's upper edge must fit the SLO (the SLO is on p99).
* For a GPU with no measured cells and no profiles, only the analytic floor can be
  shown: the touched-bytes floor on that GPU is a lower bound on any backend's step
  time with that weight format ("bound, not measured"). Backends are ranked by a
  projection, the bound divided by the fraction of the floor the backend reached where
  it was measured (labelled with that source), since a 4-bit format's smaller floor says
  nothing about how close its kernels get to it.

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
    projected_ms: float | None = None  # unmeasured GPU: bound / measured fraction elsewhere
    agreement: float | None = None  # quality: top-1 agreement with bf16 on real weights
    perplexity: float | None = None
    kernel_ok: bool | None = None
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
    if r.get("steady_state_mem_bytes"):
        return int(r["steady_state_mem_bytes"]), "measured steady state"
    kv = _kv_bytes(r["model"], int(r["ctx"]))
    if r.get("resident_weight_bytes") and kv is not None:
        return int(r["resident_weight_bytes"]) + kv, "estimated weights + KV"
    return None, None


def kernel_status(r: dict[str, Any]) -> bool | None:
    """True/False from `kernel_correctness` (or an older record's `correctness`), None when not checked."""
    c = r.get("kernel_correctness")
    if not isinstance(c, dict) and isinstance(r.get("gate"), dict):
        c = r["gate"]  # a hand-written or external record's gate block: {passed: ...}
    if not isinstance(c, dict):
        c = r.get("correctness")  # records written before kernel_correctness existed
        if not isinstance(c, dict) or c.get("gated") is False:
            return None
        return False if (c.get("passed") is False or c.get("flagged") is True) else (True if c.get("passed") else None)
    return c.get("passed")


def correctness_problem(r: dict[str, Any]) -> str | None:
    """A reason when the record's kernels failed correctness, else None."""
    if kernel_status(r) is not False:
        return None
    if isinstance(r.get("kernel_correctness") or r.get("gate"), dict):
        c = r.get("kernel_correctness") or r["gate"]
        if "metric" in c:
            return (f"fails kernel correctness: {c.get('metric')} = {c.get('value')} > bound {c.get('bound')} "
                    f"at positions {c.get('positions')}")
        return f"fails kernel correctness ({c.get('reason') or 'no detail recorded'})"
    c = r.get("correctness") or {}
    return f"failed the old correctness gate ({c.get('rule') or 'no rule recorded'})"


def _family(weights: str | None) -> str:
    """rtn4-g128 and rtn4-g64 are one quantizer (group sizes differ with the model's widths)."""
    return (weights or "?").lower().split("-g")[0]


def borrow_quality(records: list[dict[str, Any]], donors: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """Records without a measured quality get one from `donors` (a run on REAL weights): the same
    backend's, else a backend with the same weight quantizer (`_family`), so synthetic-weight GPU cells
    show quality beside latency. The copy names its donor (`borrowed_from`); measured quality is kept."""
    measured = [d for d in donors if (d.get("quality") or {}).get("agreement") is not None]
    by_backend = {d["backend"]: d for d in reversed(measured)}  # first record of a backend wins
    by_family = {_family(d.get("weights")): d for d in reversed(measured)}
    out = []
    for r in records:
        q = r.get("quality") or {}
        donor = None if q.get("agreement") is not None else (
            by_backend.get(r.get("backend")) or by_family.get(_family(r.get("weights"))))
        if donor is not None:
            r = {**r, "quality": {**donor["quality"], "borrowed_from": f"{donor['backend']} ({donor.get('weights')}) "
                                  f"in {source}"}}
        out.append(r)
    return out


def quality_of(r: dict[str, Any]) -> tuple[float | None, float | None]:
    q = r.get("quality") or {}
    return q.get("agreement"), q.get("perplexity")


def judge(r: dict[str, Any], slo_ms: float, mem_budget: int | None, min_agreement: float | None = None,
          failed_kernels: set[str] | None = None) -> Verdict:
    wall = (r.get("stats") or {}).get("wall") or {}
    v = Verdict(model=str(r.get("model")), backend=str(r.get("backend")), weights=r.get("weights"),
                ctx=int(r.get("ctx") or 0), gpu=str(r.get("gpu") or r.get("device") or "?"), accepted=False,
                p99_ms=wall.get("p99"), p50_ms=wall.get("p50"))
    v.mem_bytes, v.mem_source = memory_of(r)
    v.agreement, v.perplexity = quality_of(r)
    v.kernel_ok = kernel_status(r)
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
            v.reasons.append(f"needs {v.mem_bytes / 1e9:.2f} GB ({v.mem_source}) > budget {mem_budget / 1e9:g} GB")
    if r.get("load_peak_mem_bytes"):
        v.notes.append(f"load peak {r['load_peak_mem_bytes'] / 1e9:.2f} GB (loading/quantizing, before decoding)")
    _judge_checks(v, r, min_agreement, failed_kernels)
    if r.get("synthetic"):
        q = r.get("quality") or {}
        src = f"; quality measured on {q['model']} (real weights)" if q.get("model") else ""
        if q.get("borrowed_from"):
            src += f", from {q['borrowed_from']}"
        v.notes.append("synthetic weights: timings only" + src)
    v.accepted = not v.reasons
    return v


def _judge_checks(v: Verdict, r: dict[str, Any], min_agreement: float | None, failed_kernels: set[str] | None) -> None:
    """Kernel correctness (never recommend a failing kernel) and the user's quality floor."""
    problem = correctness_problem(r)
    if problem:
        v.reasons.append(problem)
    elif failed_kernels and v.backend in failed_kernels:
        v.reasons.append("its kernels fail correctness in another cell of these results")
    elif v.kernel_ok is None:
        v.notes.append("kernel correctness not checked for this cell")
    if min_agreement is not None:
        if v.agreement is None:
            v.reasons.append(f"quality unknown; --min-agreement {min_agreement:g} needs a measured agreement")
        elif v.agreement < min_agreement:
            v.reasons.append(f"agreement with bf16 {v.agreement:.3f} < --min-agreement {min_agreement:g}")


def _measured_fraction(records: list[dict[str, Any]], model: str, backend: str, ctx: int) -> tuple[float, str] | None:
    """(touched fraction, where) of this backend measured on another device: same model and ctx if
    there is one, else the median over its cells."""
    import statistics

    cells = [r for r in records if r.get("status") == "ok" and r.get("backend") == backend
             and (r.get("floor") or {}).get("touched_fraction")]
    same = [r for r in cells if str(r.get("model")) == model and int(r.get("ctx") or 0) == ctx]
    pick = same or cells
    if not pick:
        return None
    frac = statistics.median(float(r["floor"]["touched_fraction"]) for r in pick)
    where = ", ".join(sorted({str(r.get("gpu")) for r in pick}))
    return frac, where


def bound_verdicts(records: list[dict[str, Any]], gpu_key: str, slo_ms: float,
                   mem_budget: int | None, min_agreement: float | None = None,
                   failed_kernels: set[str] | None = None) -> list[Verdict]:
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
        v.agreement, v.perplexity = quality_of(r)
        v.kernel_ok = kernel_status(r)
        mf = _measured_fraction(records, key[0], key[1], key[2])
        if mf:
            v.projected_ms = bound / mf[0]
            v.notes.append(f"projected {_ms(v.projected_ms)} ms = bound / touched fraction {mf[0]:.3f} measured on "
                           f"{mf[1]}: an estimate, not a measurement")
        v.mem_bytes = fl.traffic.weight_bytes + fl.traffic.kv_bytes
        v.notes.append(f"bound, not measured: no {r['weights']} step can beat the touched-bytes floor "
                       f"{_ms(bound)} ms on {spec.name} ({spec.bandwidth_gbs:g} GB/s); real steps are slower")
        if bound > slo_ms:
            v.reasons.append(f"even the floor bound {_ms(bound)} ms > SLO {slo_ms:g} ms: impossible on {spec.key}")
        if budget is not None and v.mem_bytes > budget:
            v.reasons.append(f"weights + KV {v.mem_bytes / 1e9:.2f} GB (analytic) > budget {budget / 1e9:g} GB")
        _judge_checks(v, r, min_agreement, failed_kernels)
        v.accepted = not v.reasons
        out.append(v)
    return out


def predicted_verdicts(profiles: list[dict[str, Any]], records: list[dict[str, Any]], gpu_key: str, slo_ms: float,
                       budget: int | None, host_cpu: float, model: str | None, ctx: int | None,
                       min_agreement: float | None = None, failed_kernels: set[str] | None = None) -> list[Verdict]:
    """PREDICTED steps on an unmeasured GPU from explain profiles measured elsewhere."""
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
        if cells:
            v.mem_bytes, v.mem_source = memory_of(cells[0])
            v.agreement, v.perplexity = quality_of(cells[0])
            v.kernel_ok = kernel_status(cells[0])
            _judge_checks(v, cells[0], min_agreement, failed_kernels)
        else:
            v.notes.append("no cell record for this backend: kernel correctness unknown")
        if q.band_ms[1] > slo_ms:
            v.reasons.append(f"PREDICTED {_ms(q.predicted_ms)} ms (band up to {_ms(q.band_ms[1])}) > SLO {slo_ms:g} ms")
        if budget is not None and v.mem_bytes is not None and v.mem_bytes > budget:
            v.reasons.append(f"needs {v.mem_bytes / 1e9:.2f} GB ({v.mem_source}) > budget {budget / 1e9:g} GB")
        v.accepted = not v.reasons
        out.append(v)
    return out


@dataclass
class Recommendation:
    slo_ms: float
    mem_gb: float | None
    gpu: str | None
    groups: list[dict[str, Any]]
    min_agreement: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "recommend", "slo_ms": self.slo_ms, "mem_gb": self.mem_gb, "gpu": self.gpu,
                "min_agreement": self.min_agreement, "groups": self.groups}


def recommend(records: list[dict[str, Any]], slo_ms: float, mem_gb: float | None = None, gpu: str | None = None,
              model: str | None = None, ctx: int | None = None, profiles: list[dict[str, Any]] | None = None,
              host_cpu: float = 1.0, min_agreement: float | None = None) -> Recommendation:
    if slo_ms <= 0:
        raise ConfigError("slo-ms", f"must be a positive per-token latency in ms, got {slo_ms}")
    if mem_gb is not None and mem_gb <= 0:
        raise ConfigError("mem-gb", f"must be a positive memory budget in GB, got {mem_gb}")
    if min_agreement is not None and not 0.0 <= min_agreement <= 1.0:
        raise ConfigError("min-agreement", f"must be within 0..1 (a fraction of tokens), got {min_agreement}")
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
    failed = {str(r.get("backend")) for r in records if kernel_status(r) is False}
    gpu_key = None
    if gpu:
        from edgeprof.hardware_loader import gpu as gpu_spec

        gpu_key = gpu_spec(gpu).key
        measured = [r for r in records if str(r.get("gpu") or "").lower() == gpu_key]
        if measured:
            verdicts = [judge(r, slo_ms, budget, min_agreement, failed) for r in measured]
        elif profiles:  # PREDICTED from explain profiles instead of the bound
            verdicts = predicted_verdicts(profiles, records, gpu_key, slo_ms, budget, host_cpu, model, ctx,
                                          min_agreement, failed)
        else:
            verdicts = bound_verdicts(records, gpu_key, slo_ms, budget, min_agreement, failed)
    else:
        verdicts = [judge(r, slo_ms, budget, min_agreement, failed) for r in records]
    groups: dict[tuple[str, str, int], list[Verdict]] = defaultdict(list)
    for v in verdicts:
        groups[(v.model, v.gpu, v.ctx)].append(v)
    out = []
    for (m, g, c), vs in sorted(groups.items()):
        acc = sorted((v for v in vs if v.accepted),
                     key=lambda v: (v.p99_ms if v.measured else (v.predicted_ms or v.projected_ms or float("inf")),
                                    v.bound_ms or 0, v.mem_bytes or 0))
        rej = sorted((v for v in vs if not v.accepted), key=lambda v: v.backend)
        out.append({"model": m, "gpu": g, "ctx": c, "measured": all(v.measured for v in vs),
                    "predicted": any(v.predicted_ms is not None for v in vs),
                    "accepted": [v.to_dict() for v in acc], "rejected": [v.to_dict() for v in rej]})
    return Recommendation(slo_ms, mem_gb, gpu_key, out, min_agreement)


def _ms(v: float | None) -> str:
    """Milliseconds with 2 decimals, or 3 significant digits below 0.1 ms (tiny models)."""
    if v is None:
        return "-"
    return f"{v:.2f}" if abs(v) >= 0.1 else f"{v:.3g}"


def format_recommendation(rec: Recommendation) -> str:
    budget = f", memory <= {rec.mem_gb:g} GB (steady state while decoding)" if rec.mem_gb else ""
    floor = f", agreement with bf16 >= {rec.min_agreement:g}" if rec.min_agreement is not None else ""
    lines = [f"SLO: p99 <= {rec.slo_ms:g} ms per token{budget}{floor}",
             "kernel: correctness against the backend's own dequantized weights; agree/ppl: quality on real weights"]
    for g in rec.groups:
        lines.append("")
        if g.get("predicted"):
            lines += _format_predicted(g)
            continue
        if g["measured"]:
            lines.append(f"{g['model']} on {g['gpu']}, ctx {g['ctx']}")
            head = (f"  {'rank':<5}{'backend':<24}{'weights':<12}{'p99 ms':>9}{'p50 ms':>9}{'mem GB':>8}"
                    f"{'kernel':>8}{'agree':>7}{'ppl':>8}")
        else:
            lines.append(f"{g['model']} on {g['gpu']}, ctx {g['ctx']}  [BOUND, NOT MEASURED: analytic floor only]")
            head = (f"  {'rank':<5}{'backend':<24}{'weights':<12}{'proj ms':>9}{'bound ms':>9}{'mem GB':>8}"
                    f"{'kernel':>8}{'agree':>7}{'ppl':>8}")
        if g["accepted"]:
            lines.append(head)
            for i, v in enumerate(g["accepted"], 1):
                mem = f"{v['mem_bytes'] / 1e9:.2f}" if v["mem_bytes"] else "?"
                a, b = (v["p99_ms"], v["p50_ms"]) if g["measured"] else (v["projected_ms"], v["bound_ms"])
                kern, agree, ppl = _check_cells(v)
                lines.append(f"  {i:<5}{v['backend']:<24}{str(v['weights']):<12}{_ms(a):>9}{_ms(b):>9}{mem:>8}"
                             f"{kern:>8}{agree:>7}{ppl:>8}")
                lines += _notes(v)
        lines += _rejections(g)
    return "\n".join(lines)


def _check_cells(v: dict[str, Any]) -> tuple[str, str, str]:
    """The kernel-correctness, agreement and perplexity columns of one verdict."""
    kern = {True: "ok", False: "FAIL", None: "-"}[v["kernel_ok"]]
    agree = f"{v['agreement']:.3f}" if v["agreement"] is not None else "-"
    ppl = f"{v['perplexity']:.2f}" if v["perplexity"] is not None else "-"
    return kern, agree, ppl


def _notes(v: dict[str, Any]) -> list[str]:
    return [f"       note: {n}" for n in v["notes"]]


def _rejections(g: dict[str, Any]) -> list[str]:
    lines = [] if g["accepted"] else ["  no backend meets the constraints"]
    return lines + [f"  rejected {v['backend']}: {'; '.join(v['reasons'])}" for v in g["rejected"]]


def _format_predicted(g: dict[str, Any]) -> list[str]:
    lines = [f"{g['model']} on {g['gpu']}, ctx {g['ctx']}  [PREDICTED, NOT MEASURED]"]
    if g["accepted"]:
        lines.append(f"  {'rank':<5}{'backend':<24}{'weights':<12}{'PREDICTED':>10}  band{'':<12}{'kernel':>8}{'agree':>7}")
        for i, v in enumerate(g["accepted"], 1):
            lo, hi = v["band_ms"]
            kern, agree, _ = _check_cells(v)
            band = f"[{_ms(lo)}, {_ms(hi)}]"
            lines.append(f"  {i:<5}{v['backend']:<24}{str(v['weights']):<12}{_ms(v['predicted_ms']):>10}  {band:<16}"
                         f"{kern:>8}{agree:>7}")
            lines += _notes(v)
    return lines + _rejections(g)
