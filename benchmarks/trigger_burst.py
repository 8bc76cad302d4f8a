"""How many of N concurrent std_srvs/Trigger calls come back through rosbridge-server-rs?

Server: `--server roslibpy` is a plain roslibpy Trigger service (no edgeprof code, ~20 lines
below); `--server daemon` is `edgeprof serve` (tiny-test, CPU) answering next_token after one
request. Client: an rclpy node (own process, ros_env) fires N call_async at once and counts
answers within --wait-s. Several runs; client QoS depth 10 (the rclpy default) and 100.

    python benchmarks/trigger_burst.py --server roslibpy --n 50 --runs 4
    python benchmarks/trigger_burst.py --server daemon --n 50 --runs 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

CLIENT = r"""
import json, sys, time, threading, rclpy
from rclpy.qos import QoSProfile
from std_srvs.srv import Trigger
n, wait_s, depth, name, domain = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
rclpy.init(domain_id=domain)
node = rclpy.create_node("burst_client")
cli = node.create_client(Trigger, name, qos_profile=QoSProfile(depth=depth))
assert cli.wait_for_service(timeout_sec=30), "service not visible"
time.sleep(1.0)  # let the match settle
futs = [cli.call_async(Trigger.Request()) for _ in range(n)]
end = time.monotonic() + wait_s
while time.monotonic() < end and not all(f.done() for f in futs):
    rclpy.spin_once(node, timeout_sec=0.05)
print(json.dumps({"answered": sum(f.done() for f in futs)}), flush=True)
"""


def roslibpy_server(port: int, name: str) -> None:
    """The whole server: a Trigger service on rosbridge, nothing from edgeprof."""
    import roslibpy

    ros = roslibpy.Ros("127.0.0.1", port)
    ros.run()
    count = [0]

    def handler(request, response):
        count[0] += 1
        response["success"] = True
        response["message"] = f"call {count[0]}"
        return True

    service = roslibpy.Service(ros, name, "std_srvs/Trigger")
    service.advertise(handler)
    while True:
        time.sleep(1)


def run_client(n: int, wait_s: float, depth: int, name: str, domain: int) -> int:
    from edgeprof.ros.rosbridge import ros_env

    p = subprocess.run([sys.executable, "-c", CLIENT, str(n), str(wait_s), str(depth), name, str(domain)],
                       env=ros_env(domain), capture_output=True, text=True, timeout=wait_s + 90)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not line:
        raise RuntimeError(f"client failed: {p.stderr[-1500:]}")
    return json.loads(line[-1])["answered"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", choices=("roslibpy", "daemon"), default="roslibpy")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--wait-s", type=float, default=20.0)
    ap.add_argument("--depths", default="10,100")
    ap.add_argument("--out", default=os.environ.get("OUT", "results/trigger_burst.json"))
    ap.add_argument("--_serve", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._serve:
        port, name = args._serve.split(",")
        roslibpy_server(int(port), name)
        return 0
    from edgeprof.ros.robot import RobotProcess
    from edgeprof.ros.rosbridge import free_port, start_rosbridge

    domain = random.randint(1, 200)
    name = "/burst/trigger" if args.server == "roslibpy" else "/edgeprof/next_token"
    rows = []
    with start_rosbridge(0, domain_id=domain) as rb:
        if args.server == "roslibpy":
            server = subprocess.Popen([sys.executable, __file__, "--_serve", f"{rb.port},{name}"])
        else:
            server = subprocess.Popen([sys.executable, "-m", "edgeprof.cli", "serve", "--model", "tiny-test",
                                       "--backend", "hf-static", "--device", "cpu", "--port", str(rb.port),
                                       "--metrics-port", str(free_port()), "--runlog", "/tmp/edgeprof-burst.db"])
            with RobotProcess(domain) as robot:  # a session for next_token to continue
                robot.wait_ready(240)
                robot.send_request(prompt="burst", max_new_tokens=2, reset=True, timeout_s=60)
        try:
            for depth in [int(x) for x in args.depths.split(",")]:
                for r in range(args.runs):
                    got = run_client(args.n, args.wait_s, depth, name, domain)
                    rows.append({"server": args.server, "client_depth": depth, "run": r, "n": args.n,
                                 "answered": got})
                    print(f"{args.server} depth {depth} run {r}: {got}/{args.n}", flush=True)
        finally:
            server.terminate()
            server.wait(30)
    out = {"rows": rows, "loadavg": os.getloadavg(), "note": "CPU machine; see docs/ros.md"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print("| server | client depth | answered per run |\n|---|---|---|")
    for depth in sorted({r["client_depth"] for r in rows}):
        got = [r["answered"] for r in rows if r["client_depth"] == depth]
        print(f"| {args.server} | {depth} | {' '.join(f'{g}/{args.n}' for g in got)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
