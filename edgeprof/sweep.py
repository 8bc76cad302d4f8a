"""Sweeps: a grid of decode cells (model x backend x ctx) run one after another.

A sweep config is YAML. The short form is one grid::

    name: ci-tiny
    steps: 30          # timed decode steps per cell (the paper: 30)
    warmup: 5          # untimed steps first (the paper: 5)
    device: cpu        # optional: cuda | cpu (default: cuda when visible)
    models: [tiny-test]
    backends: [hf-eager, hf-static]
    contexts: [64, 128]

and the long form is a list of grids (`grids:`), each with its own models,
backends and contexts, and optionally its own steps/warmup.

Results go to `DIR/cells.jsonl`, one record per line (the record of
`edgeprof.bench.run_cell`, plus a `sweep_cell` key naming the cell). A cell that
is already in `cells.jsonl` (ok or failed) is skipped, so an interrupted sweep
resumes where it stopped (cells skipped by a time budget, `SweepOptions.budget_s`,
run then). A cell that raises (OOM, unavailable backend, crash in
an isolated subprocess) is written as `status: failed` with its reason, and the
sweep goes on. After every cell `cells.csv` and the PNG plots are rewritten
(temp file + rename, so nothing half-written is ever left in DIR).
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgeprof.errors import ConfigError, EdgeprofError
from edgeprof.records import (
    CELLS_JSONL,
    CellRecord,
    append_jsonl,
    atomic_write_bytes,
    atomic_write_text,
    cell_identity,
    dig,
    latest_records,
    read_jsonl,
)

CELLS_CSV = "cells.csv"
SKIPPED = "skipped"  # status of a cell left for later (time budget); not done for resuming

_TOP_KEYS = {
    "name": "a label for this sweep",
    "description": "free text",
    "steps": "timed decode steps per cell (positive integer)",
    "warmup": "untimed warm-up steps per cell (integer >= 0)",
    "device": "cuda or cpu",
    "gpu": "GPU catalog key for the floor (default: detected)",
    "synthetic": "true to force synthetic weights, false to forbid them",
    "quality_tokens": "tokens of the held-out text scored for quality per backend (integer >= 2; 0 skips quality)",
    "models": "list of model specs (preset names, local dirs, .gguf files, hub ids)",
    "backends": "list of backend names (see `edgeprof backends`)",
    "contexts": "list of context lengths in tokens",
    "grids": "list of grids, each with models, backends, contexts",
}
_GRID_KEYS = {k: _TOP_KEYS[k] for k in ("models", "backends", "contexts", "steps", "warmup", "description")}


# --------------------------------------------------------------------------------------
# Config: parsed from YAML with line numbers kept for every error
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CellKey:
    """Identity of a cell for resuming: one (model, backend, ctx)."""

    model: str
    backend: str
    ctx: int

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "backend": self.backend, "ctx": self.ctx}

    def __str__(self) -> str:
        return f"{self.model} / {self.backend} / ctx {self.ctx}"


@dataclass(frozen=True)
class SweepCell:
    key: CellKey
    steps: int
    warmup: int


@dataclass
class SweepConfig:
    path: Path
    name: str
    cells: list[SweepCell]
    device: str | None = None
    gpu: str | None = None
    synthetic: bool | None = None
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    quality_tokens: int | None = None


class _Located:
    """A YAML mapping's values with the line each key and value sits on."""

    def __init__(self, path: Path, node: yaml.Node, where: str) -> None:
        self.path, self.node, self.where = path, node, where

    def line(self, node: yaml.Node) -> int:
        return node.start_mark.line + 1

    def error(self, node: yaml.Node, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path.name}:{self.line(node)}: key {key!r}", message)


def _compose(path: Path) -> yaml.Node:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}; pass an existing sweep YAML") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        context = getattr(exc, "context_mark", None)
        if mark is not None and context is not None and mark.line >= len(text.splitlines()):
            mark = context  # hit the end of the file: the unclosed construct starts here
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if context is not None and context.line + 1 != line and getattr(exc, "context", None):
            problem += f"; {exc.context} started on line {context.line + 1}"
        raise ConfigError(f"{path.name}:{line}", f"malformed YAML ({problem}); fix the syntax there") from exc
    if node is None:
        raise ConfigError(f"{path.name}:1", "the file is empty; see configs/sweeps/ci-tiny.yaml for an example")
    return node


def _value(node: yaml.Node) -> Any:
    return yaml.SafeLoader("").construct_object(node, deep=True) if node is not None else None


def _mapping(loc: _Located, node: yaml.Node, key: str, allowed: dict[str, str]) -> dict[str, tuple[yaml.Node, Any]]:
    """{key: (value node, python value)} of a mapping node; an unknown key is an error."""
    if not isinstance(node, yaml.MappingNode):
        raise loc.error(node, key, f"must be a mapping of {', '.join(allowed)}")
    out: dict[str, tuple[yaml.Node, Any]] = {}
    for knode, vnode in node.value:
        name = str(_value(knode))
        if name not in allowed:
            raise loc.error(knode, name, f"unknown key; valid keys here: {', '.join(sorted(allowed))}")
        if name in out:
            raise loc.error(knode, name, "appears twice; keep one")
        out[name] = (vnode, _value(vnode))
    return out


def _int(loc: _Located, node: yaml.Node, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise loc.error(node, key, f"must be an integer >= {minimum}, got {value!r}")
    return value


def _str_list(loc: _Located, node: yaml.Node, key: str, value: Any) -> list[tuple[yaml.Node, str]]:
    if isinstance(value, str):  # a single value is fine: `backends: hf-eager`
        return [(node, value)]
    if not isinstance(node, yaml.SequenceNode) or not value:
        raise loc.error(node, key, "must be a non-empty list")
    out = []
    for item in node.value:
        v = _value(item)
        if not isinstance(v, str | int) or isinstance(v, bool) or str(v).strip() == "":
            raise loc.error(item, key, f"entries must be names, got {v!r}")
        out.append((item, str(v)))
    return out


def _check_backend(loc: _Located, node: yaml.Node, name: str) -> None:
    from edgeprof.backends import registry

    if name not in registry.BACKENDS:
        raise loc.error(node, "backends", f"unknown backend {name!r}; valid choices: {', '.join(registry.names())}")


def _check_model(loc: _Located, node: yaml.Node, model: str, synthetic: bool | None,
                 ctx_nodes: list[tuple[yaml.Node, int]]) -> None:
    """An unknown model, or a ctx beyond its maximum, is caught now, not after an hour of sweeping."""
    from edgeprof.errors import ModelLoadError, UnknownChoiceError
    from edgeprof.shape_loader import resolve_shape

    try:
        shape = resolve_shape(model, synthetic)
    except UnknownChoiceError as exc:
        raise loc.error(node, "models", str(exc).split(": ", 1)[-1]) from exc
    except ModelLoadError:  # a hub id: its shape is known only after loading
        return
    for item, ctx in ctx_nodes:
        if ctx > shape.max_ctx:
            raise loc.error(item, "contexts",
                            f"{ctx} exceeds the maximum context of {model} ({shape.max_ctx} tokens)")


def load_config(path: str | Path) -> SweepConfig:
    """Parse and validate a sweep YAML. Every error names FILE:LINE and the key."""
    path = Path(path)
    root = _compose(path)
    loc = _Located(path, root, "top")
    top = _mapping(loc, root, "(top level)", _TOP_KEYS)

    steps = _int(loc, top["steps"][0], "steps", top["steps"][1], 1) if "steps" in top else 30
    warmup = _int(loc, top["warmup"][0], "warmup", top["warmup"][1], 0) if "warmup" in top else 5
    device = None
    if "device" in top:
        device = top["device"][1]
        if device not in ("cuda", "cpu") and not (isinstance(device, str) and device.startswith("cuda:")):
            raise loc.error(top["device"][0], "device", f"must be cuda, cuda:N or cpu, got {device!r}")
    gpu = None
    if "gpu" in top:
        from edgeprof.hardware_loader import load_catalog

        gpu = str(top["gpu"][1])
        if gpu.lower() not in load_catalog():
            raise loc.error(top["gpu"][0], "gpu",
                            f"unknown GPU {gpu!r}; valid choices: {', '.join(sorted(load_catalog()))}")
    synthetic = None
    if "synthetic" in top:
        synthetic = top["synthetic"][1]
        if not isinstance(synthetic, bool):
            raise loc.error(top["synthetic"][0], "synthetic", f"must be true or false, got {synthetic!r}")

    grid_keys = {"models", "backends", "contexts"}
    if "grids" in top:
        if grid_keys & top.keys():
            first = min(grid_keys & top.keys(), key=lambda k: loc.line(top[k][0]))
            raise loc.error(top[first][0], first, "give either top-level models/backends/contexts or `grids:`, "
                            "not both")
        gnode = top["grids"][0]
        if not isinstance(gnode, yaml.SequenceNode) or not gnode.value:
            raise loc.error(gnode, "grids", "must be a non-empty list of mappings")
        grids = [(g, _mapping(loc, g, "grids", _GRID_KEYS)) for g in gnode.value]
    else:
        grids = [(root, {k: v for k, v in top.items() if k in grid_keys})]

    cells: list[SweepCell] = []
    seen: set[CellKey] = set()
    for gnode, grid in grids:
        for k in ("models", "backends", "contexts"):
            if k not in grid:
                raise loc.error(gnode, k, f"missing; every grid needs models, backends and contexts ({_TOP_KEYS[k]})")
        g_steps = _int(loc, grid["steps"][0], "steps", grid["steps"][1], 1) if "steps" in grid else steps
        g_warm = _int(loc, grid["warmup"][0], "warmup", grid["warmup"][1], 0) if "warmup" in grid else warmup
        models = _str_list(loc, grid["models"][0], "models", grid["models"][1])
        backends = _str_list(loc, grid["backends"][0], "backends", grid["backends"][1])
        for bnode, b in backends:
            _check_backend(loc, bnode, b)
        cnode, cval = grid["contexts"]
        if not isinstance(cnode, yaml.SequenceNode) or not cval:
            raise loc.error(cnode, "contexts", "must be a non-empty list of token counts")
        ctxs = [(item, _int(loc, item, "contexts", _value(item), 1)) for item in cnode.value]
        for mnode, m in models:
            _check_model(loc, mnode, m, synthetic, ctxs)
            for _bnode, b in backends:
                for _item, c in ctxs:
                    key = CellKey(m, b, c)
                    if key not in seen:  # the same cell listed by two grids runs once
                        seen.add(key)
                        cells.append(SweepCell(key, g_steps, g_warm))
    name = str(top["name"][1]) if "name" in top else path.stem
    desc = str(top["description"][1]) if "description" in top else ""
    qt = _int(loc, top["quality_tokens"][0], "quality_tokens", top["quality_tokens"][1], 0) \
        if "quality_tokens" in top else None
    return SweepConfig(path, name, cells, device, gpu, synthetic, desc, _value(root), qt)


def grid_config(name: str, models: Iterable[str], backends: Iterable[str], contexts: Iterable[int],
                steps: int = 30, warmup: int = 5, device: str | None = None, synthetic: bool | None = None,
                source: str | Path | None = None) -> SweepConfig:
    """A one-grid sweep built in code (benchmark scripts), cells in the YAML form's order:
    model, then backend, then ctx. `source` names what defined it (kept in each record's `sweep`)."""
    cells = [SweepCell(CellKey(m, b, int(c)), steps, warmup) for m in models for b in backends for c in contexts]
    return SweepConfig(Path(source or name), name, list(dict.fromkeys(cells)), device, None, synthetic)


# --------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------
def cell_key_of(record: dict[str, Any]) -> CellKey | None:
    ident = cell_identity(record)
    return CellKey(*ident) if ident else None


def failed_record(cell: SweepCell, reason: str, device: str | None, gpu: str | None,
                  command: str | None) -> dict[str, Any]:
    """A record with the bench contract's keys for a cell that produced no timings."""
    from datetime import datetime, timezone

    weights = None
    try:
        from edgeprof.backends import registry

        weights = registry.get(cell.key.backend).weights
    except EdgeprofError:
        pass
    return CellRecord(model=cell.key.model, model_label=cell.key.model, backend=cell.key.backend, weights=weights,
                      ctx=cell.key.ctx, steps=cell.steps, warmup=cell.warmup, device=device, gpu=gpu,
                      command=command, timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      error=reason).to_dict()


def skipped_record(cell: SweepCell, reason: str, device: str | None, gpu: str | None,
                   command: str | None) -> dict[str, Any]:
    """The record of a cell not run (past the sweep's time budget): a resume runs it."""
    return {**failed_record(cell, reason, device, gpu, command), "status": SKIPPED}


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_exception(exc: BaseException) -> str:
    """A one-line reason; an out-of-memory error says so plainly."""
    msg = _one_line(str(exc)) or type(exc).__name__
    if "out of memory" in msg.lower() or type(exc).__name__ == "OutOfMemoryError":
        return f"out of memory: {msg}"
    if isinstance(exc, EdgeprofError):
        return msg
    return f"{type(exc).__name__}: {msg}"


# --------------------------------------------------------------------------------------
# Running cells
# --------------------------------------------------------------------------------------
CellRunner = Callable[[SweepCell, "SweepOptions"], dict[str, Any]]


@dataclass
class SweepOptions:
    out: Path
    device: str | None = None
    gpu: str | None = None
    synthetic: bool | None = None
    isolate: bool = False
    cell_timeout_s: float | None = None
    retry_failed: bool = False
    progress: bool = True
    plots: bool = True
    budget_s: float | None = None  # cells that would start later than this after the sweep began are skipped
    quality_tokens: int | None = None  # None: bench's default; 0: no quality measurement
    allow_mismatch: bool = False  # time cells that fail kernel correctness (marked passed=false)


def bench_argv(cell: SweepCell, opts: SweepOptions, out_file: Path | None = None) -> list[str]:
    """The `edgeprof bench` arguments that measure `cell` (for --isolate and provenance)."""
    argv = ["bench", "--model", cell.key.model, "--backend", cell.key.backend, "--ctx", str(cell.key.ctx),
            "--steps", str(cell.steps), "--warmup", str(cell.warmup)]
    if opts.device:
        argv += ["--device", opts.device]
    if opts.gpu:
        argv += ["--gpu", opts.gpu]
    if opts.synthetic is not None:
        argv += ["--synthetic" if opts.synthetic else "--real"]
    if opts.quality_tokens == 0:
        argv += ["--no-quality"]
    elif opts.quality_tokens:
        argv += ["--quality-tokens", str(opts.quality_tokens)]
    if opts.allow_mismatch:
        argv += ["--allow-mismatch"]
    argv += ["--json"]
    if out_file is not None:
        argv += ["--out", str(out_file)]
    return argv


def run_in_process(cell: SweepCell, opts: SweepOptions) -> dict[str, Any]:
    from edgeprof.bench import CellSpec, run_cell

    spec = CellSpec(model=cell.key.model, backend=cell.key.backend, ctx=cell.key.ctx, steps=cell.steps,
                    warmup=cell.warmup, device=opts.device, gpu=opts.gpu, synthetic=opts.synthetic,
                    quality=opts.quality_tokens != 0, quality_tokens=opts.quality_tokens or 512,
                    allow_mismatch=opts.allow_mismatch)
    command = "edgeprof " + " ".join(bench_argv(cell, opts))
    try:
        return run_cell(spec, command)
    finally:
        _free_memory()


def _free_memory() -> None:
    """Drop the last cell's model before the next one loads (matters for 7B models)."""
    from edgeprof.backends.base import free_memory

    free_memory()


def run_isolated(cell: SweepCell, opts: SweepOptions) -> dict[str, Any]:
    """Run the cell as `python -m edgeprof.cli bench ... --json --out TMP` in a fresh process,
    so an OOM, a segfault or a leaked CUDA context cannot take the sweep down."""
    from edgeprof.isolate import run_fresh

    with tempfile.TemporaryDirectory(prefix=".cell-", dir=opts.out) as tmp:
        out_file = Path(tmp) / "cell.json"
        try:
            res = run_fresh("edgeprof.cli", bench_argv(cell, opts, out_file), out_file, opts.cell_timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise EdgeprofError(f"the cell's subprocess ran past --cell-timeout ({exc.timeout:.0f} s) and was killed") \
                from exc
        if res.output is not None:
            return res.output
        if res.returncode < 0:
            raise EdgeprofError(f"the cell's subprocess was killed by signal {-res.returncode}"
                                f" (the kernel OOM killer sends 9); {_tail(res.stderr)}")
        raise EdgeprofError(f"exit status {res.returncode}: {_tail(res.stderr) or _tail(res.stdout)}")


def _tail(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return _one_line(lines[-1]) if lines else ""


def run_sweep(config: SweepConfig, opts: SweepOptions, runner: CellRunner | None = None,
              log: Callable[[str], None] | None = None,
              on_record: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run every cell of `config` not yet in `opts.out/cells.jsonl`. Returns a summary.
    `on_record` sees each new record once it is saved (e.g. `bench.CellMetrics.observe`)."""
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / CELLS_JSONL
    records = read_jsonl(jsonl, repair=True)
    done = {}
    for r in records:
        key = cell_key_of(r)
        if key is not None:
            done[key] = r.get("status")
    todo = [c for c in config.cells
            if c.key not in done or done[c.key] == SKIPPED or (opts.retry_failed and done[c.key] != "ok")]
    runner = runner or (run_isolated if opts.isolate else run_in_process)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    skipped = len(config.cells) - len(todo)
    if skipped:
        log(f"resuming: {skipped} of {len(config.cells)} cells already in {jsonl}")

    bar = _progress(todo, opts.progress)
    ran, failed, left = 0, 0, 0
    deadline = time.monotonic() + opts.budget_s if opts.budget_s is not None else None
    for cell in bar:
        if hasattr(bar, "set_description"):
            bar.set_description(str(cell.key))
        command = "edgeprof " + " ".join(bench_argv(cell, opts))
        t0 = time.perf_counter()
        try:
            if deadline is not None and time.monotonic() >= deadline:
                record = skipped_record(cell, f"time budget of {opts.budget_s:.0f} s used up", opts.device,
                                        opts.gpu, command)
            else:
                record = runner(cell, opts)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - any cell failure is data, not a crash
            record = failed_record(cell, describe_exception(exc), opts.device, opts.gpu, command)
        record = dict(record)
        record.setdefault("status", "ok")
        record["sweep_cell"] = cell.key.to_dict()
        record["sweep"] = {"name": config.name, "config": str(config.path), "isolated": opts.isolate,
                           "cell_s": round(time.perf_counter() - t0, 3)}
        append_jsonl(jsonl, record)
        records.append(record)
        if on_record is not None:
            on_record(record)
        if record["status"] == SKIPPED:
            left += 1
        else:
            ran += 1
        if record["status"] not in ("ok", SKIPPED):
            failed += 1
            log(f"cell {cell.key} failed: {record.get('error')}")
        write_outputs(out, records, plots=opts.plots)
    if not todo:
        write_outputs(out, records, plots=opts.plots)
    if left:
        log(f"{left} cells skipped: the time budget of {opts.budget_s:.0f} s was used up (run again to resume)")
    return {"cells": len(config.cells), "ran": ran, "skipped": skipped, "failed_now": failed,
            "left_by_budget": left, "out": str(out), "records": len(records)}


def _progress(items: list, enabled: bool) -> Iterable:
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items

    return tqdm(items, unit="cell", file=sys.stderr, dynamic_ncols=True)


# --------------------------------------------------------------------------------------
# CSV and plots
# --------------------------------------------------------------------------------------
CSV_COLUMNS = [
    "model", "model_label", "synthetic", "backend", "weights", "ctx", "steps", "warmup", "device", "gpu",
    "gpu_name", "status", "error", "wall_p50_ms", "wall_p90_ms", "wall_p99_ms", "wall_max_ms", "wall_mean_ms",
    "gpu_p50_ms", "gpu_p99_ms", "floor_ms", "touched_floor_ms", "fraction", "touched_fraction",
    "calibrated_fraction", "resident_weight_bytes", "steady_state_mem_bytes", "load_peak_mem_bytes",
    "peak_mem_bytes", "capture_s", "kernel_passed", "kernel_value", "kernel_bound", "quality_agreement",
    "quality_perplexity", "quality_model", "timestamp",
]


def flat_row(record: dict[str, Any]) -> dict[str, Any]:
    """One CSV row of a record: identity, latency percentiles, floors and fractions."""
    row = {k: record.get(k) for k in ("model", "model_label", "synthetic", "backend", "weights", "ctx", "steps",
                                       "warmup", "device", "gpu", "gpu_name", "status", "error",
                                       "resident_weight_bytes", "steady_state_mem_bytes", "load_peak_mem_bytes",
                                       "peak_mem_bytes", "capture_s", "timestamp")}
    for k in ("passed", "value", "bound"):
        row[f"kernel_{k}"] = dig(record, "kernel_correctness", k)
    for k in ("agreement", "perplexity", "model"):
        row[f"quality_{k}"] = dig(record, "quality", k)
    for stat in ("p50", "p90", "p99", "max", "mean"):
        row[f"wall_{stat}_ms"] = dig(record, "stats", "wall", stat)
    row["gpu_p50_ms"] = dig(record, "stats", "gpu", "p50")
    row["gpu_p99_ms"] = dig(record, "stats", "gpu", "p99")
    for k in ("floor_ms", "touched_floor_ms", "fraction", "touched_fraction"):
        row[k] = dig(record, "floor", k)
    row["calibrated_fraction"] = dig(record, "floor", "calibrated", "fraction")
    return row


def csv_text(records: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({k: ("" if v is None else v) for k, v in flat_row(r).items()})
    return buf.getvalue()


def write_outputs(out: Path, records: list[dict[str, Any]], plots: bool = True) -> list[Path]:
    """Rewrite cells.csv and the plots from all records (each file atomically)."""
    records = latest_records(records)
    atomic_write_text(out / CELLS_CSV, csv_text(records))
    written = [out / CELLS_CSV]
    if plots:
        try:
            from edgeprof import plots as plotting
        except ImportError:  # e.g. an offline GPU box without matplotlib: `edgeprof report` can plot later
            return written
        for name, png in plotting.sweep_pngs(records).items():
            atomic_write_bytes(out / name, png)
            written.append(out / name)
    return written
