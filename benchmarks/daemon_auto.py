"""What `edgeprof serve --backend auto` picks on this machine, and that it then serves: the daemon's own
lifecycle (configure, load on its model thread, auto's candidates with their kernel checks) on the
given model, then one request through the daemon's Session on the model thread, per-token latency
against the floor. The ROS bridge is left out here (it does not depend on the backend; the bridge
path is measured by benchmarks/robot_latency.py), so this runs where the ROS wheels are absent.

    python benchmarks/daemon_auto.py --model qwen2.5-7b --device cuda --out $OUT/daemon_auto.json
    python benchmarks/daemon_auto.py --model smollm2-135m --device cpu --tokens 8 --out /tmp/da.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path


def main() -> int:
    from edgeprof.daemon.config import DaemonConfig
    from edgeprof.daemon.lifecycle import Daemon
    from edgeprof.daemon.requests import GenerateRequest
    from edgeprof.daemon.session import Session

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-7b")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--max-ctx", type=int, default=2048)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    lines: list[str] = []

    def log(msg: str) -> None:
        lines.append(msg)
        print(f"daemon: {msg}", flush=True)

    base = DaemonConfig()
    cfg = replace(base, model=args.model, backend="auto", device=args.device,
                  session=replace(base.session, max_ctx=args.max_ctx), runlog=replace(base.runlog, enabled=False),
                  metrics=replace(base.metrics, enabled=False))
    d = Daemon(cfg, log=log)
    t0 = time.perf_counter()
    d.configure()
    d._load()  # activate's load step (model thread); the bridge and metrics are not started here
    load_s = time.perf_counter() - t0
    session = Session(d.decoder, d.codec, d.floor, cfg.session)
    req = GenerateRequest(id="auto-1", max_new_tokens=args.tokens, prompt="List three colours.", reset=True)

    def serve() -> list:
        return list(session.generate(req, session.encode(req), lambda: None))

    events = d._model_thread.call(serve)
    lat = [e.latency_ms for e in events[1:]]  # token 1 includes the prefill
    rec = {"benchmark": "daemon_auto", "command": " ".join(sys.argv), "model": args.model,
           "model_label": d.loaded.label, "synthetic": d.loaded.synthetic, "device": d.device,
           "gpu": d.gpu_spec.key, "gpu_name": d.detected.nvml_name, "backend_chosen": d.backend,
           "weights": d.weights, "kernel_correctness": d.kernel_correctness, "load_s": load_s,
           "warmup_s": d.warmup_s, "tokens": len(events), "end_reason": session.end_reason,
           "step_ms_p50": statistics.median(lat) if lat else None, "step_ms_max": max(lat) if lat else None,
           "floor_ms": events[-1].floor_ms if events else None, "latency_ms": [e.latency_ms for e in events],
           "log": lines, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if rec["step_ms_p50"] and rec["floor_ms"]:
        rec["fraction_of_floor_p50"] = rec["floor_ms"] / rec["step_ms_p50"]
    d.shutdown("benchmark done")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rec, indent=1, default=str))
    print(f"auto chose {rec['backend_chosen']} ({rec['weights']}) on {rec['gpu_name'] or rec['device']}; "
          f"{rec['tokens']} tokens, p50 {rec['step_ms_p50']} ms/token, floor {rec['floor_ms']} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
