"""edgeprof.isolate: a fresh interpreter runs the module and its JSON comes back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgeprof.isolate import run_fresh


def _module(tmp_path: Path, body: str) -> str:
    (tmp_path / "fresh_child.py").write_text(body)
    sys.path.insert(0, str(tmp_path))
    return "fresh_child"


def test_child_output_comes_back_from_another_process(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    _module(tmp_path, "import json, os, sys\njson.dump({'pid': os.getpid()}, open(sys.argv[1], 'w'))\n")
    import os

    res = run_fresh("fresh_child", [str(tmp_path / "o.json")], tmp_path / "o.json", timeout_s=60)
    assert res.returncode == 0 and res.output["pid"] != os.getpid()


def test_a_failing_child_gives_its_last_error_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    _module(tmp_path, "import sys\nprint('warming up', file=sys.stderr)\nprint('error: boom', file=sys.stderr)\n"
            "sys.exit(3)\n")
    res = run_fresh("fresh_child", [], tmp_path / "o.json", timeout_s=60)
    assert (res.returncode, res.output, res.reason()) == (3, None, "error: boom")


def test_a_child_past_its_timeout_is_killed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    _module(tmp_path, "import time\ntime.sleep(60)\n")
    with pytest.raises(subprocess.TimeoutExpired):
        run_fresh("fresh_child", [], tmp_path / "o.json", timeout_s=1)
