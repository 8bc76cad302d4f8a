"""edgeprof.records: the cell record's fields, atomic writes, torn JSONL lines, versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeprof.errors import ConfigError
from edgeprof.records import (
    RECORD_VERSION,
    CellRecord,
    append_jsonl,
    atomic_write_text,
    dig,
    load_records,
    read_jsonl,
    write_json_atomic,
)


def test_jsonl_torn_last_line_is_repaired(tmp_path: Path) -> None:
    path = tmp_path / "cells.jsonl"
    append_jsonl(path, {"a": 1})
    append_jsonl(path, {"a": 2})
    with open(path, "ab") as f:
        f.write(b'{"a": 3, "trunc')  # a crash in the middle of a write
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    read_jsonl(path, repair=True)
    append_jsonl(path, {"a": 4})
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}, {"a": 4}]


def test_a_new_record_is_failed_until_measured_and_carries_its_version() -> None:
    rec = CellRecord(model="tiny-test", backend="hf-eager", ctx=64, steps=3, warmup=1).to_dict()
    assert rec["status"] == "failed" and rec["error"] is None
    assert rec["record_version"] == RECORD_VERSION
    assert rec["stats"] == {"wall": None, "gpu": None} and rec["wall_ms"] == []
    other = CellRecord(model="m", backend="b", ctx=1, steps=1, warmup=0).to_dict()
    other["stats"]["wall"] = {"p50": 1.0}
    assert rec["stats"]["wall"] is None  # no shared mutable defaults between records


def test_atomic_writes_leave_no_temp_files(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "sub" / "r.json", {"x": Path("/a"), "n": 1})
    atomic_write_text(tmp_path / "t.txt", "hello")
    assert json.loads((tmp_path / "sub" / "r.json").read_text()) == {"x": "/a", "n": 1}
    assert (tmp_path / "t.txt").read_text() == "hello"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["r.json", "t.txt"]


def test_jsonl_refuses_what_json_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        append_jsonl(tmp_path / "c.jsonl", {"x": object()})
    with pytest.raises(ValueError):
        append_jsonl(tmp_path / "c.jsonl", {"x": float("nan")})


def test_load_records_keeps_the_last_record_of_each_cell(tmp_path: Path) -> None:
    base = CellRecord(model="m", backend="hf-eager", ctx=64, steps=1, warmup=0).to_dict()
    append_jsonl(tmp_path / "cells.jsonl", base)
    append_jsonl(tmp_path / "cells.jsonl", {**base, "status": "ok"})
    append_jsonl(tmp_path / "cells.jsonl", {**base, "ctx": 128})
    recs = load_records(tmp_path)
    assert [(r["ctx"], r["status"]) for r in recs] == [(64, "ok"), (128, "failed")]


def test_load_records_refuses_a_newer_version_and_says_what_to_do(tmp_path: Path) -> None:
    rec = CellRecord(model="m", backend="b", ctx=1, steps=1, warmup=0).to_dict()
    write_json_atomic(tmp_path / "r.json", {**rec, "record_version": RECORD_VERSION + 1})
    with pytest.raises(ConfigError, match="record_version.*upgrade edgeprof"):
        load_records(tmp_path / "r.json")


def test_load_records_of_a_missing_path_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_records(tmp_path / "nope")


def test_dig() -> None:
    assert dig({"a": {"b": 2}}, "a", "b") == 2
    assert dig({"a": 1}, "a", "b") is None
    assert dig(None, "a") is None
