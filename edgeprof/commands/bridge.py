"""`edgeprof bridge`: run a local rosbridge (websocket) in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import time

HELP = "run a local rosbridge websocket server (rosbridge-server-rs + ROS 2 wheels) until Ctrl-C"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", type=int, default=None, help="websocket port (default 9091, not 9090: Prometheus uses it; 0 = any free)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: loopback only)")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: the environment's, else 0)")
    parser.add_argument("--log", default=None, help="rosbridge log file (default: in the edgeprof cache)")


def run(args: argparse.Namespace) -> int:
    from edgeprof.ros.rosbridge import DEFAULT_PORT, start_rosbridge

    port = DEFAULT_PORT if args.port is None else args.port
    rb = start_rosbridge(port=port, host=args.host, domain_id=args.domain_id, log_path=args.log)
    # SIGTERM (systemd, launch files) ends the loop like Ctrl-C does. SIGINT too, also where the shell started
    # us as a background job (`cmd &` in a script): such a process inherits SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler, so Ctrl-C / kill -INT would do nothing.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    domain = "from environment" if args.domain_id is None else args.domain_id
    print(f"rosbridge listening on {rb.url} (ROS_DOMAIN_ID {domain}, pid {rb.pid}); log: {rb.log_path}", flush=True)
    print("Ctrl-C to stop.", flush=True)
    try:
        while rb.running():
            time.sleep(0.2)
        print(f"rosbridge exited unexpectedly; log tail:\n{rb.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping rosbridge", flush=True)
        return 0
    finally:
        rb.stop()
