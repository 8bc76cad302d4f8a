"""ROS 2 launch file: the stock rosbridge websocket + `edgeprof serve`, from one params YAML.

For robots with a ROS 2 install (Humble or later) and the rosbridge_server package:

    ros2 launch launch/edgeprof.launch.py
    ros2 launch launch/edgeprof.launch.py params:=/path/to/my_params.yaml port:=9091

`edgeprof` must be on PATH (or pass edgeprof:=/path/to/venv/bin/edgeprof). The daemon is
not a ROS node: it reaches ROS through rosbridge, so it only needs the websocket port.
Robots without ROS 2 use launch/run_local.py instead (same YAML).
"""

from __future__ import annotations

import os

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PARAMS = os.path.join(HERE, "edgeprof_params.yaml")

# params key -> `edgeprof serve` flag (keys missing from the YAML keep the daemon config's value)
SERVE_FLAGS = {
    "config": "--config",
    "model": "--model",
    "backend": "--backend",
    "device": "--device",
    "gpu": "--gpu",
    "metrics_port": "--metrics-port",
    "runlog": "--runlog",
    "max_ctx": "--max-ctx",
    "robot": "--robot",
    "site": "--site",
}


def load_params(path: str) -> tuple[dict, dict]:
    """(rosbridge parameters, edgeprof parameters) from a ROS 2 params YAML."""
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f) or {}
    rosbridge = (data.get("rosbridge_websocket") or {}).get("ros__parameters") or {}
    edgeprof = (data.get("edgeprof") or {}).get("ros__parameters") or {}
    unknown = sorted(set(edgeprof) - set(SERVE_FLAGS) - {"ros_domain_id"})
    if unknown:
        raise ValueError(f"{path}: edgeprof.ros__parameters: unknown keys {unknown}; valid: {sorted(SERVE_FLAGS)}")
    return rosbridge, edgeprof


def serve_command(edgeprof_exe: str | list[str], edgeprof: dict, host: str, port: int) -> list[str]:
    """The `edgeprof serve` command line for these parameters, pointed at rosbridge host:port."""
    cmd = ([edgeprof_exe] if isinstance(edgeprof_exe, str) else list(edgeprof_exe)) + ["serve"]
    for key, flag in SERVE_FLAGS.items():
        if edgeprof.get(key) not in (None, ""):
            cmd += [flag, str(edgeprof[key])]
    return cmd + ["--host", str(host), "--port", str(port)]


def generate_launch_description():
    from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, Shutdown
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from launch import LaunchDescription

    def _setup(context):
        params = LaunchConfiguration("params").perform(context)
        rosbridge, edgeprof = load_params(params)
        port = int(LaunchConfiguration("port").perform(context) or rosbridge.get("port", 9091))
        host = rosbridge.get("address") or "127.0.0.1"
        exe = LaunchConfiguration("edgeprof").perform(context)
        return [
            Node(
                package="rosbridge_server",
                executable="rosbridge_websocket",
                name="rosbridge_websocket",
                output="screen",
                parameters=[params, {"port": port}],
            ),
            ExecuteProcess(
                cmd=serve_command(exe, edgeprof, host, port),
                name="edgeprof_serve",
                output="screen",
                # The daemon retries the bridge itself; if it exits, take the launch down with it.
                on_exit=Shutdown(reason="edgeprof serve exited"),
                sigterm_timeout="15",  # let it end the current request and flush the run log
            ),
        ]

    return LaunchDescription([
        DeclareLaunchArgument("params", default_value=DEFAULT_PARAMS, description="params YAML"),
        DeclareLaunchArgument("port", default_value="", description="rosbridge port (default: from params)"),
        DeclareLaunchArgument("edgeprof", default_value="edgeprof", description="the edgeprof executable"),
        OpaqueFunction(function=_setup),
    ])
