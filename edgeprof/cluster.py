"""Sweeps on a pool of GPUs: the cells of a sweep as tasks of a Dask distributed cluster.

`edgeprof sweep CONFIG --out DIR --cluster ADDRESS|local` keeps the serial sweep's semantics
(`edgeprof.sweep.run_sweep`) and only changes where cells run:

* one GPU per task: every worker declares the resource `GPU=1` and every cell asks for it, so a
  worker runs one cell at a time; start one worker per GPU
  (`CUDA_VISIBLE_DEVICES=i dask worker ADDRESS --nthreads 1 --resources GPU=1`). `local` starts a
  `LocalCluster` with one such worker per visible GPU (or `--workers N`);
* a fresh process per cell, through the serial sweep's own isolated runner
  (`sweep.run_isolated`: `python -m edgeprof.cli bench ... --json --out`);
* resumable (cells already in DIR/cells.jsonl are skipped), the same records plus `host` and
  `gpu_index`, a progress bar, a crash or OOM recorded as a failed cell;
* one results folder: workers return records to this process, which alone writes DIR, so workers
  need no shared file system and a cell is written once. A worker that dies mid-cell has its cell
  rescheduled by Dask on another worker (up to `distributed.scheduler.allowed-failures` times);
  past that the cell is recorded as failed and the sweep goes on.

Why Dask and not Ray: both run here, but Ray 2.60 is one 79 MB wheel, over the 64 MiB a device
call may carry, while dask and distributed are small pure-Python wheels (docs/fleet.md has the
commands). Dask's worker resources give the one-GPU-per-task rule directly.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgeprof.errors import ConfigError
from edgeprof.records import CELLS_JSONL, append_jsonl, read_jsonl
from edgeprof.sweep import (
    SweepCell,
    SweepConfig,
    SweepOptions,
    bench_argv,
    cell_key_of,
    describe_exception,
    failed_record,
    run_isolated,
    write_outputs,
)

GPU_RESOURCE = "GPU"


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ConfigError("--cluster", "needs Dask distributed; pip install 'edgeprof[cluster]'") from None
    return distributed


def visible_gpus() -> int:
    """GPUs this machine would give a local cluster (CUDA_VISIBLE_DEVICES, else nvidia-smi)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return len([d for d in env.split(",") if d.strip()])
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return 0
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines())


@contextmanager
def connect(address: str, workers: int | None = None, device: str | None = None) -> Iterator[Any]:
    """A Dask client: to the scheduler at `address`, or to a new LocalCluster for "local"
    (one single-threaded worker per GPU, each with GPU=1; on a CPU, `workers` or 2)."""
    distributed = _distributed()
    if address != "local":
        with distributed.Client(address, timeout="30s") as client:
            yield client
        return
    n = workers or (visible_gpus() if device != "cpu" else 0) or 2
    if n < 1:
        raise ConfigError("--workers", f"must be >= 1, got {n}")
    # processes: a worker is its own process (its cells' processes are its children);
    # memory_limit 0: the cell's own process holds the memory, not the worker.
    with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, resources={GPU_RESOURCE: 1},
                                  memory_limit=0, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def worker_gpu_index(device: str | None) -> int | None:
    """The GPU this worker owns: its CUDA_VISIBLE_DEVICES when that names one device, else the
    local cluster's worker number (0, 1, ...). None on a CPU sweep."""
    if device == "cpu":
        return None
    env = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if env.isdigit():
        return int(env)
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return None
    if not str(name).isdigit():
        return None
    listed = [d.strip() for d in env.split(",") if d.strip()]  # the local cluster's parent saw these
    return int(listed[int(name)]) if int(name) < len(listed) and listed[int(name)].isdigit() else int(name)


def run_cell_on_worker(cell: SweepCell, opts: SweepOptions) -> dict[str, Any]:
    """The task: one cell in a fresh process on this worker's GPU. Never raises for the cell's
    own failure (crash, OOM, timeout): those come back as a failed record, as in the serial sweep."""
    gpu_index = worker_gpu_index(opts.device)
    if gpu_index is not None and not os.environ.get("CUDA_VISIBLE_DEVICES", "").strip().isdigit():
        # the worker runs one task at a time (nthreads 1, GPU=1), so its environment is the cell's
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_index)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeprof-cell-") as tmp:
        # run_isolated keeps its scratch under opts.out: a worker-local folder, not the results one
        local = replace(opts, out=Path(tmp), isolate=True, progress=False, plots=False)
        try:
            record = dict(run_isolated(cell, local))
            record.setdefault("status", "ok")
        except Exception as exc:  # noqa: BLE001 - any cell failure is data, not a crash
            record = failed_record(cell, describe_exception(exc), opts.device, opts.gpu,
                                   "edgeprof " + " ".join(bench_argv(cell, opts)))
    record["host"] = socket.gethostname()
    record["gpu_index"] = gpu_index
    record["_cell_s"] = round(time.perf_counter() - t0, 3)
    return record


def _todo(config: SweepConfig, opts: SweepOptions, records: list[dict[str, Any]]) -> list[SweepCell]:
    done = {}
    for r in records:
        key = cell_key_of(r)
        if key is not None:
            done[key] = r.get("status")
    return [c for c in config.cells if c.key not in done or (opts.retry_failed and done[c.key] != "ok")]


def run_cluster_sweep(config: SweepConfig, opts: SweepOptions, client: Any,
                      log: Callable[[str], None] | None = None,
                      on_record: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run every cell of `config` not yet in `opts.out/cells.jsonl` as tasks on `client`'s
    cluster. Records are written here, one per cell, as tasks finish. Returns a summary."""
    distributed = _distributed()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / CELLS_JSONL
    records = read_jsonl(jsonl, repair=True)
    todo = _todo(config, opts, records)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    skipped = len(config.cells) - len(todo)
    if skipped:
        log(f"resuming: {skipped} of {len(config.cells)} cells already in {jsonl}")
    address = getattr(client.scheduler, "address", "?")
    futures = {client.submit(run_cell_on_worker, cell, opts, resources={GPU_RESOURCE: 1}, pure=False,
                             key=f"edgeprof-cell-{i}-{cell.key.model}-{cell.key.backend}-{cell.key.ctx}"): cell
               for i, cell in enumerate(todo)}
    bar = _bar(len(todo), opts.progress)
    ran, failed, written = 0, 0, set()
    try:
        for fut in distributed.as_completed(list(futures)):
            cell = futures[fut]
            if cell.key in written:  # as_completed yields each future once; belt and braces
                continue
            try:
                record = fut.result()
            except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: the cell's workers kept dying
                record = failed_record(cell, f"cluster: {describe_exception(exc)}", opts.device, opts.gpu,
                                       "edgeprof " + " ".join(bench_argv(cell, opts)))
                record.update(host=None, gpu_index=None)
            cell_s = record.pop("_cell_s", None)
            record["sweep_cell"] = cell.key.to_dict()
            record["sweep"] = {"name": config.name, "config": str(config.path), "isolated": True, "cell_s": cell_s,
                               "cluster": address}
            append_jsonl(jsonl, record)
            written.add(cell.key)
            records.append(record)
            if on_record is not None:
                on_record(record)
            ran += 1
            if record["status"] != "ok":
                failed += 1
                log(f"cell {cell.key} failed: {record.get('error')}")
            if bar is not None:
                bar.set_description(str(cell.key))
                bar.update(1)
            write_outputs(out, records, plots=opts.plots)
    finally:
        if bar is not None:
            bar.close()
        client.cancel(list(futures))  # Ctrl-C: nothing keeps running on the pool
    if not todo:
        write_outputs(out, records, plots=opts.plots)
    return {"cells": len(config.cells), "ran": ran, "skipped": skipped, "failed_now": failed,
            "out": str(out), "records": len(records), "cluster": address}


def _bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="cell", file=sys.stderr, dynamic_ncols=True)
