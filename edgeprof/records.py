"""The results store: the cell record and every file write of a result.

One cell record per measured (model, backend, ctx): `CellRecord` names its fields and
their types once, and `RECORD_VERSION` says which layout a stored record has (records
written before versioning have no `record_version` key and read as version 1: the
layout is the same).

Writes are atomic (temp file beside the target, fsync, rename) so a crash never leaves
a half-written result; JSONL appends are one write per line, and a torn last line (a
crash mid-append) is dropped on read and repaired on resume.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from edgeprof.errors import ConfigError

RECORD_VERSION = 2  # 2: kernel_correctness, quality, steady_state/load_peak memory replace `correctness`
CELLS_JSONL = "cells.jsonl"


# --------------------------------------------------------------------------------------
# The cell record
# --------------------------------------------------------------------------------------
@dataclass
class CellRecord:
    """One decode cell's record (the `edgeprof bench --json` contract, docs/profiler-backends.md).
    Producers build it here and then fill the measured blocks in its dict form."""

    model: str
    backend: str
    ctx: int
    steps: int
    warmup: int
    model_label: str | None = None
    synthetic: bool | None = None
    weights: str | None = None  # weight format (edgeprof.floor.parse_format)
    device: str | None = None
    gpu: str | None = None  # catalog key of the floor's GPU
    gpu_name: str | None = None  # NVML name (or the CPU's model name)
    wall_ms: list[float] = field(default_factory=list)
    gpu_ms: list[float] | None = None
    stats: dict[str, Any] = field(default_factory=lambda: {"wall": None, "gpu": None})
    floor: dict[str, Any] | None = None
    resident_weight_bytes: int | None = None
    peak_mem_bytes: int | None = None
    capture_s: float | None = None
    # two separate checks (docs/profiler-backends.md): the backend against a reference running its own
    # dequantized weights near ctx, and quantisation quality measured on real weights
    kernel_correctness: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None
    steady_state_mem_bytes: int | None = None  # device (CPU: RSS) bytes held while decoding, after transients
    load_peak_mem_bytes: int | None = None  # peak while loading/quantising, a separate figure
    mem_source: str | None = None  # how the two memory figures were measured
    telemetry_before: Any = None
    telemetry_after: Any = None
    host_cpu: Any = None
    versions: dict[str, Any] | None = None
    command: str | None = None
    timestamp: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    status: str = "failed"  # "ok" once measured; a record that is never finished says failed
    error: str | None = None
    prefill_tokens: int | None = None
    session_max_ctx: int | None = None
    prefill_ms: float | None = None
    positions: list[int] | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    record_version: int = RECORD_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_version(record: dict[str, Any]) -> int:
    """The layout version of a stored record (pre-versioning records are version 1)."""
    return int(record.get("record_version", 1))


# --------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------
def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(f)` on a temp file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """`obj` as JSON (plus a final newline) at `path`, never half-written."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, default=_json_or_str) + "\n")


def json_default(obj: Any) -> Any:
    """JSON for the non-JSON values records hold: dataclasses with to_dict, numpy/torch scalars, paths."""
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def _json_or_str(obj: Any) -> Any:
    """A whole-file record is written even when a note holds an odd object (as its str)."""
    try:
        return json_default(obj)
    except TypeError:
        return str(obj)


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """One line, one write, flushed and fsynced: a crash leaves whole lines only
    (at worst a torn last line, which `read_jsonl` repairs)."""
    line = (json.dumps(record, default=json_default, allow_nan=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------
def read_jsonl(path: str | Path, repair: bool = False) -> list[dict[str, Any]]:
    """All complete records of a JSONL file. A torn last line (a crash mid-write)
    is dropped, and with `repair` removed from the file so appends stay aligned."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    records, good_end = [], 0
    for raw in data.splitlines(keepends=True):
        if not raw.endswith(b"\n"):
            break
        try:
            records.append(json.loads(raw))
        except json.JSONDecodeError:
            break
        good_end += len(raw)
    if repair and good_end != len(data):
        atomic_write_bytes(path, data[:good_end])
    return records


def dig(d: Any, *path: str) -> Any:
    """d[path[0]][path[1]]..., or None where a level is missing or not a dict."""
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def cell_identity(record: dict[str, Any]) -> tuple[str, str, int] | None:
    """(model, backend, ctx) of a record: its sweep cell's, else its own; None if it has none."""
    k = record.get("sweep_cell")
    if k:
        return str(k["model"]), str(k["backend"]), int(k["ctx"])
    if {"model", "backend", "ctx"} <= record.keys():
        return str(record["model"]), str(record["backend"]), int(record["ctx"])
    return None


def latest_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last record of each cell (a retried cell appears twice in the JSONL)."""
    latest: dict[Any, dict[str, Any]] = {}
    for i, r in enumerate(records):
        latest[cell_identity(r) or i] = r
    return list(latest.values())


def _check_version(records: list[dict[str, Any]], where: Path) -> list[dict[str, Any]]:
    for r in records:
        if isinstance(r, dict) and record_version(r) > RECORD_VERSION:
            raise ConfigError("record_version", f"{where} holds records of version {record_version(r)}; this "
                              f"edgeprof reads up to {RECORD_VERSION}: upgrade edgeprof to read them")
    return records


def load_records(results: str | Path) -> list[dict[str, Any]]:
    """Records of a results directory (cells.jsonl plus any bench *.json records),
    or of a single JSONL / JSON file."""
    path = Path(results)
    if not path.exists():
        raise ConfigError("results", f"{path} does not exist; pass a sweep output directory (holding cells.jsonl)")
    if path.is_file():
        if path.suffix == ".jsonl":
            return _check_version(latest_records(read_jsonl(path)), path)
        data = json.loads(path.read_text())
        return _check_version([data] if isinstance(data, dict) else list(data), path)
    records = read_jsonl(path / CELLS_JSONL)
    for f in sorted(path.glob("*.json")):
        try:
            data = json.loads(f.read_text())
        except (json.JSONDecodeError, OSError):
            continue
        if isinstance(data, dict) and {"backend", "ctx", "stats"} <= data.keys():
            records.append(data)
    return _check_version(latest_records(records), path)
