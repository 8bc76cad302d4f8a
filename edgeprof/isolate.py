"""One fresh-process runner: `python -m MODULE ARGS...` in a new interpreter.

Measurements that must not share state with their parent (a new CUDA context and
allocator per A/B session; a sweep cell whose OOM or segfault must not take the sweep
down) run through `run_fresh`. The child writes its result as JSON to a file the parent
names; stdout/stderr are kept for the error message when it does not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class FreshResult:
    returncode: int
    stdout: str
    stderr: str
    output: Any  # the JSON the child wrote to its output file; None if it wrote none (or a torn one)

    def reason(self) -> str:
        """One line saying why the child produced no output (its last stderr line, else stdout's)."""
        for text in (self.stderr, self.stdout):
            lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
            if lines:
                return lines[-1]
        return f"exit status {self.returncode}"


def child_env() -> dict[str, str]:
    """The environment of a fresh worker process: this one's, with the directory holding
    the `edgeprof` package first on PYTHONPATH (so a checkout runs its own code, installed or not)."""
    root = str(Path(__file__).resolve().parent.parent)
    paths = [root, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def run_fresh(module: str, args: list[str], out_file: Path, timeout_s: float | None) -> FreshResult:
    """Run `python -m module *args` and read the JSON it leaves in `out_file`.
    A timeout raises `subprocess.TimeoutExpired` (the child is killed): the caller words it."""
    cmd = [sys.executable, "-m", module, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=child_env())
    output = None
    if Path(out_file).exists():
        try:
            output = json.loads(Path(out_file).read_text())
        except json.JSONDecodeError:
            output = None
    return FreshResult(proc.returncode, proc.stdout, proc.stderr, output)
