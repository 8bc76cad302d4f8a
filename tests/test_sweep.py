"""edgeprof.sweep: config validation with line numbers, atomic JSONL, resume, failed cells,
CSV and plots, and real sweeps on the CPU (tiny-test preset), in-process and isolated."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from edgeprof.errors import ConfigError
from edgeprof.paths import configs_dir
from edgeprof.records import read_jsonl
from edgeprof.sweep import (
    CSV_COLUMNS,
    SweepOptions,
    csv_text,
    grid_config,
    load_config,
    run_sweep,
)


def test_shipped_configs() -> None:
    paper = load_config(configs_dir() / "sweeps" / "paper.yaml")
    models = {c.key.model for c in paper.cells}
    assert models == {"qwen2.5-7b", "mistral-7b-v0.3", "llama-3.1-8b"}
    assert {c.key.ctx for c in paper.cells} == {2048, 4096, 8192, 16384}
    assert all((c.steps, c.warmup) == (30, 5) for c in paper.cells)  # the paper's protocol
    eager = [c for c in paper.cells if c.key.backend == "hf-eager"]
    assert len(eager) == 12
    quant = {c.key.backend for c in paper.cells if c.key.model == "qwen2.5-7b"}
    assert {"bnb-nf4", "torchao-int4", "exllamav2", "hf-graph"} <= quant
    assert len({c.key for c in paper.cells}) == len(paper.cells)
    tiny = load_config(configs_dir() / "sweeps" / "ci-tiny.yaml")
    assert tiny.device == "cpu" and {c.key.model for c in tiny.cells} == {"tiny-test"}


GOOD = "name: t\nsteps: 4\nwarmup: 1\nmodels: [tiny-test]\nbackends: [hf-eager]\ncontexts: [32]\n"


@pytest.mark.parametrize("text, where", [
    (GOOD.replace("warmup: 1", "warmpu: 1"), "x.yaml:3: key 'warmpu': unknown key"),
    (GOOD.replace("[hf-eager]", "[hf-eager, hf-nope]"), "x.yaml:5: key 'backends': unknown backend 'hf-nope'"),
    (GOOD.replace("[32]", "[32, 4096]"), "x.yaml:6: key 'contexts': 4096 exceeds the maximum context"),
    (GOOD.replace("[32]", "[32, -1]"), "x.yaml:6: key 'contexts': must be an integer >= 1"),
    (GOOD.replace("steps: 4", "steps: many"), "x.yaml:2: key 'steps': must be an integer"),
    (GOOD.replace("[tiny-test]", "[no-such-model]"), "x.yaml:4: key 'models': unknown value 'no-such-model'"),
    (GOOD.replace("contexts: [32]\n", ""), "key 'contexts': missing"),
    (GOOD.replace("models: [tiny-test]", "models: [tiny-test"), "x.yaml:5: malformed YAML (expected ',' or ']', but got ':'; while parsing a flow sequence started on line 4)"),
    (GOOD + "grids:\n  - models: [tiny-test]\n", "key 'models': give either"),
    ("name: t\ngrids:\n  - models: [tiny-test]\n    backends: [hf-eager]\n    contexts: [32]\n    colour: red\n",
     "x.yaml:6: key 'colour': unknown key"),
    ("", "x.yaml:1: the file is empty"),
    ("- a\n- b\n", "x.yaml:1: key '(top level)': must be a mapping"),
])
def test_bad_configs_name_line_and_key(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert where in str(info.value)
    assert "\n" not in str(info.value)


def test_grids_deduplicate_cells(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("grids:\n  - {models: [tiny-test], backends: [hf-eager], contexts: [32, 64]}\n"
                    "  - {models: [tiny-test], backends: [hf-eager, hf-static], contexts: [64], steps: 3}\n")
    cells = load_config(path).cells
    assert [(c.key.backend, c.key.ctx, c.steps) for c in cells] == [
        ("hf-eager", 32, 30), ("hf-eager", 64, 30), ("hf-static", 64, 3)]


def test_csv_has_percentiles_and_floors() -> None:
    from analysis_records import make_record

    text = csv_text([make_record(samples=[float(i) for i in range(1, 101)]),
                     make_record(backend="exllamav2", status="failed", error="boom, with a comma")])
    rows = list(csv.DictReader(text.splitlines()))
    assert list(rows[0]) == CSV_COLUMNS
    assert float(rows[0]["wall_p99_ms"]) == pytest.approx(99.01)
    assert float(rows[0]["fraction"]) > 0
    assert rows[1]["status"] == "failed" and rows[1]["error"] == "boom, with a comma"


def _tmp_config(tmp_path: Path, backends: str, contexts: str) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(f"name: t\nsteps: 4\nwarmup: 1\ndevice: cpu\nquality_tokens: 0\nmodels: [tiny-test]\n"
                    f"backends: {backends}\ncontexts: {contexts}\n")
    return path


def test_quality_tokens_reach_the_cells(tmp_path: Path) -> None:
    from edgeprof.sweep import bench_argv

    cfg = load_config(_tmp_config(tmp_path, "[hf-static]", "[64]"))
    assert cfg.quality_tokens == 0
    cell = cfg.cells[0]
    assert "--no-quality" in bench_argv(cell, SweepOptions(out=tmp_path, quality_tokens=0))
    argv = bench_argv(cell, SweepOptions(out=tmp_path, quality_tokens=128))
    assert argv[argv.index("--quality-tokens") + 1] == "128"
    assert "--quality-tokens" not in bench_argv(cell, SweepOptions(out=tmp_path))


@pytest.mark.slow
def test_sweep_in_process_resumes_and_records_failures(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs hf-graph to be unavailable (a CPU-only machine)")
    out = tmp_path / "out"
    cfg = load_config(_tmp_config(tmp_path, "[hf-eager, hf-graph]", "[64]"))
    logs: list[str] = []
    summary = run_sweep(cfg, SweepOptions(out=out, device="cpu", progress=False, quality_tokens=0), log=logs.append)
    assert summary["ran"] == 2 and summary["failed_now"] == 1
    recs = {r["backend"]: r for r in read_jsonl(out / "cells.jsonl")}
    assert recs["hf-eager"]["status"] == "ok" and recs["hf-eager"]["stats"]["wall"]["p99"] > 0
    assert len(recs["hf-eager"]["wall_ms"]) == 4 and recs["hf-eager"]["floor"]["floor_ms"] > 0
    assert recs["hf-graph"]["status"] == "failed" and "unavailable" in recs["hf-graph"]["error"]
    assert any("failed" in m for m in logs)
    for name in ("cells.csv", "ms_per_step.png", "fraction_of_floor.png"):
        assert (out / name).stat().st_size > 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left

    again = run_sweep(cfg, SweepOptions(out=out, device="cpu", progress=False, quality_tokens=0), log=logs.append)
    assert again["ran"] == 0 and again["skipped"] == 2  # ok and failed cells are both finished


@pytest.mark.slow
def test_sweep_isolated_cli(tmp_path: Path, run_edgeprof) -> None:
    out = tmp_path / "out"
    cfg = _tmp_config(tmp_path, "[hf-static]", "[64]")
    proc = run_edgeprof("sweep", str(cfg), "--out", str(out), "--isolate", "--no-progress", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["ran"] == 1
    (rec,) = read_jsonl(out / "cells.jsonl")
    assert rec["status"] == "ok" and rec["sweep"]["isolated"] and rec["backend"] == "hf-static"
    # a cell whose process is killed (here: by the timeout) is recorded as failed, the sweep goes on
    cfg = _tmp_config(tmp_path, "[hf-static]", "[64, 80]")
    proc = run_edgeprof("sweep", str(cfg), "--out", str(out), "--isolate", "--cell-timeout", "0.5",
                        "--no-progress", timeout=300)
    assert proc.returncode == 0, proc.stderr
    recs = read_jsonl(out / "cells.jsonl")
    assert [r["ctx"] for r in recs] == [64, 80]  # ctx 64 was not run again
    assert recs[1]["status"] == "failed" and "cell-timeout" in recs[1]["error"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_cli_bad_config_is_one_line(tmp_path: Path, run_edgeprof) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("backends:", "backendz:"))
    proc = run_edgeprof("sweep", str(path), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("edgeprof sweep: error: bad.yaml:5: key 'backendz': unknown key; valid keys "
                                   "here: backends, contexts, description, device, gpu, grids, models, name, quality_tokens, "
                                   "steps, synthetic, warmup")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_time_budget_skips_cells_and_a_rerun_runs_them(tmp_path: Path) -> None:
    cfg = grid_config("budget", ["tiny-test"], ["hf-eager", "hf-static"], [32, 48], steps=2, warmup=0, device="cpu")
    assert [(c.key.backend, c.key.ctx) for c in cfg.cells] == [("hf-eager", 32), ("hf-eager", 48),
                                                                ("hf-static", 32), ("hf-static", 48)]
    opts = SweepOptions(out=tmp_path, device="cpu", progress=False, plots=False, budget_s=0.0)
    logs: list[str] = []
    first = run_sweep(cfg, opts, log=logs.append)
    assert first["ran"] == 0 and first["left_by_budget"] == 4 and first["failed_now"] == 0
    recs = read_jsonl(tmp_path / "cells.jsonl")
    assert {r["status"] for r in recs} == {"skipped"} and "time budget" in recs[0]["error"]
    assert any("run again to resume" in m for m in logs)

    opts.budget_s = None
    again = run_sweep(cfg, opts, log=logs.append)
    assert again["ran"] == 4 and again["skipped"] == 0
    assert [r["status"] for r in read_jsonl(tmp_path / "cells.jsonl")[4:]] == ["ok"] * 4
