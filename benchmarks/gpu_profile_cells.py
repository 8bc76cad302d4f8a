"""Profile the Qwen2.5-7B-shape decode cells on one H100/H200 in one go (about 7 minutes).

    PYTHONPATH=.:$PYTHONPATH python3 benchmarks/gpu_profile_cells.py --out $OUT/cells.jsonl --budget-s 520

For each backend (default order: hf-eager, hf-graph, bnb-nf4, torchao-int4, exllamav2,
hf-compile) and each ctx (2048, 4096, 8192, 16384) it runs `edgeprof.bench.run_cell`
(correctness gate, fill to ctx-1, warm-up, 30 timed steps after 5 warm-up steps) and
appends one JSON record per cell to --out as soon as it is done, so a timeout keeps every
finished cell. A failing cell is recorded (status "failed") and the run goes on; cells
past --budget-s are recorded as status "skipped".

The weights are SYNTHETIC (random, exact Qwen2.5-7B shapes, fixed seed), so correctness
is the logits comparison with bf16 hf-eager on the same weights (computed once; every
fresh load of the seeded model has identical weights, which the script checks). When
$EDGEPROF_DEFAULT_MODEL_DIR names a converted SmolLM2 directory, every backend is also
gated on those real weights (token agreement) and the results go to gates.jsonl beside
--out.

A model is loaded once per weight format and reused across contexts: bf16 for hf-eager,
hf-graph, exllamav2 (which writes its GPTQ checkpoint once from those weights) and
hf-compile; a fresh bf16 load is quantised in place for bnb-nf4 and for torchao-int4.
ExLlamaV2 JIT-builds its CUDA extension at first import (~95 s): set
MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULT_BACKENDS = ["hf-eager", "hf-graph", "bnb-nf4", "torchao-int4", "exllamav2", "hf-compile"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def checksum(loaded) -> float:
    """A cheap fingerprint of the weights: sum of the first layer's q_proj (same seed -> same value)."""
    w = loaded.model.model.layers[0].self_attn.q_proj.weight
    return float(w.float().sum())


class Models:
    """Hands out the seeded synthetic model; loads a fresh copy when the last one was quantised."""

    def __init__(self, name: str, device: str) -> None:
        self.name, self.device = name, device
        self.current = None
        self.fingerprint: float | None = None

    def get(self, fresh: bool):
        from edgeprof.sources import load_model

        if self.current is not None and not fresh:
            return self.current
        self.current = None
        free()
        t0 = time.perf_counter()
        loaded = load_model(self.name, self.device, synthetic=True)
        fp = checksum(loaded)
        if self.fingerprint is None:
            self.fingerprint = fp
        elif fp != self.fingerprint:
            log(f"WARNING: a fresh load has different weights ({fp} != {self.fingerprint}); gate results differ")
        log(f"loaded {loaded.label} in {time.perf_counter() - t0:.1f} s")
        self.current = loaded
        return loaded

    def drop(self) -> None:
        self.current = None
        free()


def short(rec: dict) -> str:
    if rec["status"] != "ok":
        return f"{rec['backend']:<13} {rec['ctx']:>6}  {rec['status'].upper()}: {str(rec.get('error'))[:90]}"
    w, g, f = rec["stats"]["wall"], rec["stats"]["gpu"], rec["floor"]
    c = rec.get("correctness") or {}
    err = (c.get("logit_rel_error") or {}).get("mean")
    gate_txt = "ref" if "agreement" not in c else f"{'ok' if c['passed'] else 'FLAG'} err={err:.3f}" if err is not None \
        else f"{'ok' if c['passed'] else 'FLAG'} agr={c['agreement']:.2f}"
    return (f"{rec['backend']:<13} {rec['ctx']:>6}  p50 {w['p50']:8.3f}  p99 {w['p99']:8.3f}  "
            f"gpu {g['p50'] if g else float('nan'):8.3f}  floor {f['floor_ms']:6.3f}  frac {f['fraction']:6.1%}  "
            f"touched {f['touched_fraction']:6.1%}  cap {rec['capture_s'] or 0:5.1f}s  gate {gate_txt}")


def append(path: Path, rec: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(rec, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def skipped(model: str, backend: str, ctx: int, steps: int, warmup: int, why: str) -> dict:
    from edgeprof.bench import CellSpec, _empty_record

    rec = _empty_record(CellSpec(model, backend, ctx, steps, warmup, device="cuda", synthetic=True), None)
    rec.update(status="skipped", error=why)
    return rec


def smollm2_gates(out_dir: Path, backends: list[str], deadline: float) -> None:
    """Token-agreement gate of every backend on the real SmolLM2 weights, if present."""
    from edgeprof import gate
    from edgeprof.backends import registry
    from edgeprof.sources import load_model

    path = os.environ.get("EDGEPROF_DEFAULT_MODEL_DIR")
    if not path or not Path(path, "config.json").exists():
        log("real-weight gate: skipped ($EDGEPROF_DEFAULT_MODEL_DIR names no converted SmolLM2 directory; "
            "the synthetic logits gate runs per cell instead)")
        return
    ref_model = load_model(path, "cuda")
    ref = gate.reference(ref_model, "cuda", gate.GATE_STEPS)
    for backend in backends:
        if time.monotonic() > deadline:
            break
        rec = {"kind": "gate", "model": path, "backend": backend}
        try:
            loaded = load_model(path, "cuda") if registry.get(backend).mutates_weights else ref_model
            dec = registry.create(backend, loaded, "cuda", len(ref.prompt) + gate.GATE_STEPS + 16)
            info = registry.get(backend)
            rec["correctness"] = gate.check(dec, ref, gate.Thresholds.for_weights(info.weights))
            dec.close()
            rec["status"] = "ok"
        except Exception as exc:
            rec.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:400])
        append(out_dir / "gates.jsonl", rec)
        c = rec.get("correctness") or {}
        log(f"SmolLM2 gate {backend}: {rec['status']} agreement={c.get('agreement')} passed={c.get('passed')}")
        free()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSONL file, one record per cell (appended)")
    ap.add_argument("--model", default="qwen2.5-7b")
    ap.add_argument("--ctx", default="2048,4096,8192,16384")
    ap.add_argument("--backends", default=",".join(DEFAULT_BACKENDS))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--budget-s", type=float, default=520.0, help="skip cells that would start after this")
    ap.add_argument("--device", default="cuda", help="cuda (default); cpu only to dry-run this script's logic")
    args = ap.parse_args()

    import torch

    from edgeprof import gate
    from edgeprof.backends import registry
    from edgeprof.bench import CellSpec, run_cell

    t_start = time.monotonic()
    deadline = t_start + args.budget_s
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ctxs = [int(c) for c in args.ctx.split(",")]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        log("no CUDA device visible: this script is for the GPU machine")
        return 2
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU (dry run)"
    log(f"{name} | torch {torch.__version__} | backends {backends} | ctx {ctxs}")
    for b in backends:
        ok, why = registry.get(b).availability()
        log(f"  {b}: {'available' if ok else 'UNAVAILABLE: ' + why}")

    models = Models(args.model, args.device)
    base = models.get(fresh=True)
    log("bf16 reference for the gate (hf-eager, teacher-forced logits) ...")
    ref = gate.reference(base, args.device, gate.GATE_STEPS)
    records: list[dict] = []
    last_kind = "bf16"
    for backend in backends:
        ok, why = registry.get(backend).availability()
        # bf16 backends share one load; each quantising backend gets a fresh bf16 load it then keeps.
        kind = backend if registry.get(backend).mutates_weights else "bf16"
        loaded = None
        for ctx in ctxs:
            # allow_mismatch: a flagged backend is still timed here; its record keeps correctness.passed false
            spec = CellSpec(args.model, backend, ctx, args.steps, args.warmup, device=args.device, synthetic=True,
                            allow_mismatch=True)
            command = (f"python3 benchmarks/gpu_profile_cells.py --model {args.model} --backends {backend} "
                       f"--ctx {ctx} --steps {args.steps} --warmup {args.warmup}")
            if time.monotonic() > deadline:
                rec = skipped(args.model, backend, ctx, args.steps, args.warmup,
                              f"time budget of {args.budget_s:.0f} s used up")
            elif not ok:
                rec = run_cell(spec, command)  # records the reason it is unavailable
            else:
                if loaded is None:
                    loaded = models.get(fresh=(kind != last_kind or kind != "bf16"))
                    last_kind = kind
                t0 = time.perf_counter()
                log(f"{backend} ctx {ctx} ...")
                rec = run_cell(spec, command, loaded=loaded, reference=ref)
                rec["cell_wall_s"] = round(time.perf_counter() - t0, 1)
            records.append(rec)
            append(out, rec)
            log(short(rec))
            free()
        if backend == "exllamav2" and "exllamav2" in sys.modules:
            from edgeprof.backends.exl2 import unload_all

            unload_all()
        if kind != "bf16":
            models.drop()
            last_kind = "none"
    models.drop()
    if args.device.startswith("cuda"):
        smollm2_gates(out.parent, backends, deadline + 60)

    log(f"done in {time.monotonic() - t_start:.0f} s; {len(records)} records in {out}")
    print("\nbackend          ctx  p50 ms/step  (wall)  gpu-event p50, floor (paper def.), fraction of floor")
    for rec in records:
        print(short(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
