"""`edgeprof serve`: run the daemon (one decode session served to a robot over rosbridge)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

HELP = "serve next-token requests to a robot over a ROS 2 bridge, every token timed against the floor"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from edgeprof.paths import configs_dir

    p.add_argument("--config", default=str(configs_dir() / "daemon.yaml"),
                   help="daemon YAML (default: configs/daemon.yaml); the flags below override it")
    p.add_argument("--model", help="preset, local HF dir, .gguf file or hub id")
    p.add_argument("--backend", help="backend name (see `edgeprof backends`) or auto")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--gpu", help="GPU catalog key whose bandwidth sets the floor (default: detected)")
    p.add_argument("--host", help="rosbridge host (bridge.host)")
    p.add_argument("--port", type=int, help="rosbridge websocket port (bridge.port)")
    p.add_argument("--metrics-port", type=int, help="Prometheus endpoint port; 0 turns metrics off")
    p.add_argument("--runlog", help="run log path (SQLite); 'none' turns the run log off")
    p.add_argument("--max-ctx", type=int, help="session context (session.max_ctx)")
    p.add_argument("--robot", help="metric label robot (identity.robot; auto = host name)")
    p.add_argument("--site", help="metric label site (identity.site)")


def _log(msg: str) -> None:
    print(f"edgeprof serve: {msg}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from edgeprof.daemon.config import apply_overrides, load_config
    from edgeprof.daemon.lifecycle import Daemon

    cfg = apply_overrides(load_config(args.config), model=args.model, backend=args.backend, device=args.device,
                          gpu=args.gpu, host=args.host, port=args.port, metrics_port=args.metrics_port,
                          runlog=args.runlog, max_ctx=args.max_ctx, robot=args.robot, site=args.site)
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    daemon = Daemon(cfg, log=_log)
    try:
        daemon.configure()
        if not stop.is_set():
            daemon.activate()
        while not stop.wait(0.5):
            if daemon.service is not None and not daemon.service.running:
                _log("decode worker stopped unexpectedly; shutting down")
                break
    finally:
        reason = "shutdown"
        if received:
            _log(f"{received[0]} received; shutting down")
        daemon.shutdown(reason)
        for s, h in old.items():
            signal.signal(s, h)
    return 0
