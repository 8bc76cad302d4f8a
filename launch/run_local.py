#!/usr/bin/env python3
"""Plain launcher (no ROS 2 install): `edgeprof bridge` + `edgeprof serve`, from the same params YAML
as launch/edgeprof.launch.py. Ctrl-C (or SIGTERM) stops the daemon first, then the bridge.

    python launch/run_local.py                                  # bridge on 9091 + daemon
    python launch/run_local.py --port 0 --domain-id 42          # any free port, private DDS domain
    python launch/run_local.py --robot "Name three colors."     # ... then run the sample robot once
    python launch/run_local.py --no-serve                       # the bridge alone
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _launch_helpers():
    # Shared with the ROS 2 launch file (whose name has dots, so load it by path).
    spec = importlib.util.spec_from_file_location("edgeprof_launch", os.path.join(HERE, "edgeprof.launch.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _edgeprof_exe() -> list[str]:
    beside = os.path.join(os.path.dirname(sys.executable), "edgeprof")
    if os.access(beside, os.X_OK):
        return [beside]
    found = shutil.which("edgeprof")
    return [found] if found else [sys.executable, "-m", "edgeprof.cli"]


def _stop(proc: subprocess.Popen | None, name: str, timeout_s: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    print(f"run_local: stopping {name}", flush=True)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="edgeprof bridge + edgeprof serve, without ROS 2")
    p.add_argument("--params", default=os.path.join(HERE, "edgeprof_params.yaml"))
    p.add_argument("--port", type=int, default=None, help="rosbridge port (default: from params; 0 = free port)")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: params, else environment)")
    p.add_argument("--no-serve", action="store_true", help="run the bridge only")
    p.add_argument("--robot", metavar="PROMPT", help="once the daemon is up, run the sample robot with PROMPT")
    p.add_argument("--next-tokens", type=int, default=3, help="next_token calls the sample robot makes")
    args = p.parse_args(argv)

    helpers = _launch_helpers()
    rosbridge_params, edgeprof_params = helpers.load_params(args.params)
    host = rosbridge_params.get("address") or "127.0.0.1"
    port = rosbridge_params.get("port", 9091) if args.port is None else args.port
    if port == 0:
        from edgeprof.ros.rosbridge import free_port

        port = free_port(host)
    domain = args.domain_id
    if domain is None and int(edgeprof_params.get("ros_domain_id", -1)) >= 0:
        domain = int(edgeprof_params["ros_domain_id"])
    exe = _edgeprof_exe()

    # SIGTERM behaves like Ctrl-C so both children are stopped in order.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    bridge_cmd = exe + ["bridge", "--host", host, "--port", str(port)]
    if domain is not None:
        bridge_cmd += ["--domain-id", str(domain)]
    bridge = serve = robot = None
    code = 0
    try:
        bridge = subprocess.Popen(bridge_cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
        line = bridge.stdout.readline()  # "rosbridge listening on ws://..." once it accepts
        sys.stdout.write(line)
        if not re.search(r"listening on ws://", line):
            print("run_local: the bridge did not start (see above)", file=sys.stderr)
            return bridge.wait() or 1
        children = {"bridge": bridge}
        if not args.no_serve:
            env = dict(os.environ)
            if domain is not None:
                env["ROS_DOMAIN_ID"] = str(domain)
            serve = subprocess.Popen(helpers.serve_command(exe, edgeprof_params, host, port), env=env)
            children["serve"] = serve
        if args.robot is not None:
            robot_cmd = [sys.executable, "-m", "edgeprof.ros.robot", "--prompt", args.robot,
                         "--next-tokens", str(args.next_tokens), "--wait-s", "180"]
            if domain is not None:
                robot_cmd += ["--domain-id", str(domain)]
            robot = subprocess.Popen(robot_cmd)
        while True:
            if robot is not None and robot.poll() is not None:
                code = robot.returncode
                break
            ended = [name for name, proc in children.items() if proc.poll() is not None]
            if ended:
                code = children[ended[0]].returncode or 1
                print(f"run_local: {ended[0]} exited with code {children[ended[0]].returncode}", file=sys.stderr)
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        code = 0
    finally:
        _stop(robot, "robot", 5)
        _stop(serve, "edgeprof serve", 20)  # it ends the current request and flushes the run log
        _stop(bridge, "rosbridge", 10)
    return code


if __name__ == "__main__":
    sys.exit(main())
