"""Profile the Qwen2.5-7B-shape decode cells on one H100/H200 in one go (about 7 minutes).

    PYTHONPATH=.:$PYTHONPATH python3 benchmarks/gpu_profile_cells.py --out $OUT/cells.jsonl --budget-s 520

For each backend (default order: hf-eager, hf-graph, bnb-nf4, torchao-int4, exllamav2,
hf-compile) and each ctx (2048, 4096, 8192, 16384) it runs `edgeprof.bench.run_cell`
(correctness gate, fill to ctx-1, warm-up, 30 timed steps after 5 warm-up steps), the
cells as one `edgeprof.sweep.run_sweep`: one record per cell is appended to
DIR/cells.jsonl (--out names DIR or DIR/cells.jsonl) as soon as it is done, so a timeout
keeps every finished cell, and a rerun with the same --out resumes. A failing cell is
recorded (status "failed") and the run goes on; cells past --budget-s are recorded as
status "skipped" (a rerun runs them).

On the CPU, to try this script's logic (no timings worth keeping):

    python benchmarks/gpu_profile_cells.py --device cpu --model tiny-test --backends hf-eager,hf-static \
        --ctx 32,64 --steps 3 --warmup 1 --out /tmp/cells

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
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgeprof.records import CELLS_JSONL, append_jsonl  # noqa: E402 (after the checkout is on the path)
from edgeprof.sweep import SweepCell, SweepOptions  # noqa: E402

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
    c = rec.get("kernel_correctness") or {}
    gate_txt = (f"{'ok' if c.get('passed') else 'FAIL'} {c.get('value', float('nan')):.3f}<={c.get('bound')}"
                if "value" in c else str(c.get("reason") or "not checked"))
    return (f"{rec['backend']:<13} {rec['ctx']:>6}  p50 {w['p50']:8.3f}  p99 {w['p99']:8.3f}  "
            f"gpu {g['p50'] if g else float('nan'):8.3f}  floor {f['floor_ms']:6.3f}  frac {f['fraction']:6.1%}  "
            f"touched {f['touched_fraction']:6.1%}  cap {rec['capture_s'] or 0:5.1f}s  kernel {gate_txt}")


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
        append_jsonl(out_dir / "gates.jsonl", rec)
        c = rec.get("correctness") or {}
        log(f"SmolLM2 gate {backend}: {rec['status']} agreement={c.get('agreement')} passed={c.get('passed')}")
        free()


class Cells:
    """The sweep's cell runner: `edgeprof.bench.run_cell` on a model loaded once per weight
    format (bf16 backends share one load; each quantising backend gets a fresh bf16 load it
    then keeps for its contexts) and the one bf16 gate reference."""

    def __init__(self, models: Models, reference) -> None:
        self.models, self.reference = models, reference
        self.backend: str | None = None
        self.loaded = None
        self.last_kind = "bf16"

    def __call__(self, cell: SweepCell, opts: SweepOptions) -> dict:
        from edgeprof.backends import registry
        from edgeprof.bench import CellSpec, run_cell

        backend, ctx = cell.key.backend, cell.key.ctx
        if backend != self.backend:
            self.end_backend()
            self.backend = backend
        # allow_mismatch: a flagged backend is still timed here; its record keeps correctness.passed false
        spec = CellSpec(cell.key.model, backend, ctx, cell.steps, cell.warmup, device=opts.device, synthetic=True,
                        allow_mismatch=True)
        command = (f"python3 benchmarks/gpu_profile_cells.py --model {cell.key.model} --backends {backend} "
                   f"--ctx {ctx} --steps {cell.steps} --warmup {cell.warmup}")
        if not registry.get(backend).availability()[0]:
            return run_cell(spec, command)  # records the reason it is unavailable
        kind = backend if registry.get(backend).mutates_weights else "bf16"
        if self.loaded is None:
            self.loaded = self.models.get(fresh=(kind != self.last_kind or kind != "bf16"))
            self.last_kind = kind
        t0 = time.perf_counter()
        log(f"{backend} ctx {ctx} ...")
        rec = run_cell(spec, command, loaded=self.loaded, reference=self.reference)
        rec["cell_wall_s"] = round(time.perf_counter() - t0, 1)
        free()
        return rec

    def end_backend(self) -> None:
        """After a backend's last context: unload ExLlamaV2, drop a quantised model."""
        from edgeprof.backends import registry

        if self.backend == "exllamav2" and "exllamav2" in sys.modules:
            from edgeprof.backends.exl2 import unload_all

            unload_all()
        if self.backend is not None and self.backend in registry.BACKENDS \
                and registry.get(self.backend).mutates_weights:
            self.models.drop()
            self.last_kind = "none"
        self.loaded = None  # the next backend asks Models, which keeps a bf16 load for bf16 backends


def sweep_dir(out: str) -> Path:
    """The sweep folder of --out: a folder, or its cells.jsonl (the form the provenance files use)."""
    path = Path(out)
    if path.suffix != ".jsonl":
        return path
    if path.name != CELLS_JSONL:
        raise SystemExit(f"--out {out}: the sweep writes {CELLS_JSONL} in its folder; pass the folder or "
                         f"{path.parent / CELLS_JSONL}")
    return path.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="DIR or DIR/cells.jsonl: one record per cell (a rerun resumes)")
    ap.add_argument("--model", default="qwen2.5-7b")
    ap.add_argument("--ctx", default="2048,4096,8192,16384")
    ap.add_argument("--backends", default=",".join(DEFAULT_BACKENDS))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--budget-s", type=float, default=520.0, help="skip cells that would start after this")
    ap.add_argument("--device", default="cuda", help="cuda (default); cpu only to dry-run this script's logic")
    args = ap.parse_args()

    import torch

    from edgeprof.backends import registry
    from edgeprof.sweep import grid_config, run_sweep

    t_start = time.monotonic()
    out = sweep_dir(args.out)
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
    models.get(fresh=True)
    # Kernel correctness (bench.run_cell) builds each cell's reference from the backend's own
    # dequantized weights at that ctx, before any in-place quantisation: nothing shared here.
    ref = None
    # Backend-major order: each backend's contexts run on one load of its weight format.
    config = grid_config("gpu_profile_cells", [args.model], backends, ctxs, args.steps, args.warmup,
                         device=args.device, synthetic=True, source="benchmarks/gpu_profile_cells.py")
    opts = SweepOptions(out=out, device=args.device, synthetic=True, progress=False, plots=False,
                        budget_s=max(0.0, args.budget_s - (time.monotonic() - t_start)))
    cells = Cells(models, ref)
    records: list[dict] = []

    def on_record(rec: dict) -> None:
        records.append(rec)
        log(short(rec))

    try:
        run_sweep(config, opts, runner=cells, log=log, on_record=on_record)
    finally:
        cells.end_backend()
        models.drop()
    if args.device.startswith("cuda"):
        smollm2_gates(out, backends, t_start + args.budget_s + 60)

    log(f"done in {time.monotonic() - t_start:.0f} s; {len(records)} new records in {out / CELLS_JSONL}")
    print("\nbackend          ctx  p50 ms/step  (wall)  gpu-event p50, floor (paper def.), fraction of floor")
    for rec in records:
        print(short(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
