"""Inputs of `edgeprof predict`: records and catalog entries turned into the pure model's
types (edgeprof/predict.py stays free of I/O). Reads configs/predict.yaml."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from edgeprof.errors import ConfigError
from edgeprof.paths import config_file
from edgeprof.predict import Card, KernelGroup, Params, Profile, card_from_spec, params_from_dict, profile_from_explain


def config() -> dict[str, Any]:
    return yaml.safe_load(config_file("predict.yaml").read_text())


def params() -> Params:
    return params_from_dict(config()["model"])


def card(key: str) -> Card:
    from edgeprof import hardware_loader as hardware

    spec = hardware.gpu(key)
    try:
        return card_from_spec(spec)
    except ValueError as exc:
        raise ConfigError("gpu", str(exc)) from exc


def is_graph(backend: str) -> bool:
    return backend in set(config().get("graph_backends", []))


def load_explains(path: str | Path) -> list[dict[str, Any]]:
    """Explain records from a file (JSON or JSONL) or a directory of explain*.json / *.jsonl."""
    p = Path(path)
    if not p.exists():
        raise ConfigError("from", f"{p} does not exist; pass an `edgeprof explain --out` file or its directory")
    files = sorted(p.glob("**/explain*.json")) + sorted(p.glob("**/explain*.jsonl")) if p.is_dir() else [p]
    out: list[dict[str, Any]] = []
    for f in files:
        text = f.read_text()
        recs = [json.loads(x) for x in text.splitlines() if x.strip()] if f.suffix == ".jsonl" else [json.loads(text)]
        for r in recs:
            if r.get("kind") == "explain":
                r.setdefault("source", str(f))
                out.append(r)
    if not out:
        raise ConfigError("from", f"{p} holds no explain records; run `edgeprof explain --out FILE` first")
    return out


def profile(r: dict[str, Any]) -> Profile:
    return profile_from_explain(r, graph=is_graph(str(r["backend"])))


def profile_from_summary(cell: dict[str, Any], gpu: str, model: str, weights: str, source: str) -> Profile:
    """A one-group Profile from a benchmark summary cell (step, busy, kernels, no per-kernel
    records): bytes are the touched bytes from the shapes and the format."""
    from edgeprof.floor import parse_format, step_traffic
    from edgeprof.shape_loader import resolve_shape

    traffic = step_traffic(resolve_shape(model), parse_format(weights), int(cell["ctx"]))
    group = KernelGroup("all kernels (aggregate)", "all", float(cell["kernels"]), float(cell["busy_ms"]),
                        float(traffic.touched_bytes))
    return Profile(str(cell["backend"]), int(cell["ctx"]), gpu, float(cell["step_ms"]), float(cell["busy_ms"]),
                   (group,), is_graph(str(cell["backend"])), 0.0, source)
