"""A real rosbridge (v2 protocol, websocket) on machines with no ROS 2 install.

It runs the Rust `rosbridge-server-rs` binary against the ROS 2 wheels from PyPI
(`pip install 'edgeprof[ros]'`). The Jazzy build runs against the wheels' (Kilted)
libraries under four conditions, which `ros_env()` arranges:

1. LD_LIBRARY_PATH holds the venv's lib/ and every site-packages/ros_*.libs folder;
2. it also holds a private folder with librmw_implementation.so -> the venv's
   librmw_fastrtps_cpp.so (the wheels ship no rmw_implementation proxy);
3. LD_PRELOAD names the interpreter's libpython3.X.so (typesupport needs Python symbols);
4. --no-rosapi (the wheels lack rosapi_msgs).

`ros_env()` is also the environment for rclpy subprocesses (the sample robot node).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import site
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from edgeprof.errors import BridgeError, BridgeTimeoutError, ConfigError
from edgeprof.paths import cache_dir

# rosbridge's usual port is 9090, which is also Prometheus' default: edgeprof uses 9091.
DEFAULT_PORT = 9091
DEFAULT_HOST = "127.0.0.1"
RMW = "rmw_fastrtps_cpp"
INSTALL_HINT = "install the ROS extras: pip install 'edgeprof[ros]'"
# Preferred first: the Jazzy build is the one checked against the Kilted wheels.
_DISTROS = ("jazzy", "humble")


# ----------------------------------------------------------------------------- environment


def _site_dirs() -> list[Path]:
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()]
    out: list[Path] = []
    for d in dirs:
        p = Path(d)
        if p.is_dir() and p not in out:
            out.append(p)
    return out


def _ros_lib_dirs() -> list[Path]:
    """The venv's lib/ plus every site-packages/ros_*.libs folder (condition 1)."""
    dirs = [Path(sys.prefix) / "lib"]
    for sp in _site_dirs():
        dirs.extend(sorted(p for p in sp.glob("ros_*.libs") if p.is_dir()))
    return dirs


def _rmw_shim_dir() -> Path:
    """A private folder holding librmw_implementation.so -> librmw_fastrtps_cpp.so (condition 2)."""
    target = Path(sys.prefix) / "lib" / f"lib{RMW}.so"
    if not target.exists():
        raise BridgeError(f"{target} is missing: the ROS 2 FastDDS middleware wheel is not installed; {INSTALL_HINT}")
    shim = cache_dir() / "ros" / f"rmw-{hashlib.sha1(str(target).encode()).hexdigest()[:10]}"
    shim.mkdir(parents=True, exist_ok=True)
    link = shim / "librmw_implementation.so"
    if not (link.is_symlink() and os.readlink(link) == str(target)):
        # Atomic replace: several processes (tests, helpers) may prepare the shim at once.
        tmp = shim / f".tmp-{os.getpid()}-{time.monotonic_ns()}"
        os.symlink(target, tmp)
        os.replace(tmp, link)
    return shim


def _libpython() -> Path:
    """The interpreter's shared libpython (condition 3)."""
    name = sysconfig.get_config_var("LDLIBRARY") or ""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    path = Path(libdir) / name
    if (not name.endswith(".so") and ".so." not in name) or not path.exists():
        raise BridgeError(
            f"this Python ({sys.executable}) has no shared libpython (LDLIBRARY={name!r}); the ROS 2 typesupport "
            "libraries need one: use a Python built with --enable-shared (pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared)"
        )
    return path


def check_domain_id(domain_id: int | None) -> None:
    if domain_id is None:
        return
    if isinstance(domain_id, bool) or not isinstance(domain_id, int) or not 0 <= domain_id <= 232:
        raise ConfigError("domain_id", f"{domain_id!r} is not a ROS_DOMAIN_ID; use an integer in 0..232")


def ros_env(domain_id: int | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for processes that load the ROS 2 wheels' libraries (rosbridge, rclpy nodes).

    The variables must be present when the process starts (the dynamic loader reads them once),
    so pass this as `env=` to a subprocess. `domain_id` None keeps the caller's ROS_DOMAIN_ID.
    """
    check_domain_id(domain_id)
    env = dict(os.environ if base is None else base)
    dirs = [str(d) for d in _ros_lib_dirs()] + [str(_rmw_shim_dir())]
    old = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p not in dirs]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(dirs + old)
    libpython = str(_libpython())
    preload = [p for p in env.get("LD_PRELOAD", "").split() if p and p != libpython]
    env["LD_PRELOAD"] = " ".join([libpython, *preload])
    env["RMW_IMPLEMENTATION"] = RMW
    # The venv's ros_wheels_bootstrapper re-executes Python to set LD_LIBRARY_PATH; ours is complete.
    env["_ROS_WHEELS_BOOTSTRAP_COMPLETE"] = "1"
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    return env


# ----------------------------------------------------------------------------- binary


def find_binary() -> Path:
    """The rosbridge-server-rs executable (Jazzy build preferred), made executable if the wheel lost the bit."""
    spec = importlib.util.find_spec("rosbridge_server_rs")
    if spec is None or not spec.submodule_search_locations:
        raise BridgeError(f"the rosbridge-server-rs package is not installed; {INSTALL_HINT}")
    pkg = Path(next(iter(spec.submodule_search_locations)))
    for distro in _DISTROS:
        binary = pkg / f"rosbridge_server_rs_{distro}"
        if binary.is_file():
            return _executable(binary)
    raise BridgeError(f"no rosbridge_server_rs_{{{','.join(_DISTROS)}}} binary in {pkg}; reinstall: {INSTALL_HINT}")


def _executable(binary: Path) -> Path:
    if os.access(binary, os.X_OK):
        return binary
    # Wheels do not keep the executable bit: run a private copy instead of touching the install.
    st = binary.stat()
    copy = cache_dir() / "ros" / "bin" / f"{binary.name}-{st.st_size}-{int(st.st_mtime)}"
    if not os.access(copy, os.X_OK):
        copy.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=copy.parent)
        os.close(fd)
        shutil.copyfile(binary, tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, copy)
    return copy


# ----------------------------------------------------------------------------- ports


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port free right now on `host` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _websocket_ready(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True once the server answers a websocket upgrade with 101 (TCP accept alone is not enough)."""
    request = (
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: ZWRnZXByb2YtcHJvYmUtMQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.settimeout(timeout_s)
            s.sendall(request)
            head = s.recv(64)
            if not head.startswith(b"HTTP/1.1 101"):
                return False
            # Close politely (masked empty close frame) so the server logs no reset-by-peer.
            s.sendall(b"\x88\x80\x00\x00\x00\x00")
            return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- process


class RosbridgeProcess:
    """A running rosbridge-server-rs. Context manager; `.stop()`, `.restart()` (same port)."""

    def __init__(
        self,
        port: int,
        host: str = DEFAULT_HOST,
        domain_id: int | None = None,
        log_path: Path | str | None = None,
        startup_timeout_s: float = 15.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        check_domain_id(domain_id)
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError("port", f"{port!r} is not a TCP port; use 1..65535 (or 0 to pick a free one)")
        self.host = host
        self.port = port
        self.domain_id = domain_id
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = tuple(extra_args)
        self.binary = find_binary()
        if log_path is None:
            log_dir = cache_dir() / "logs"
            log_dir.mkdir(parents=True, exist_ok=True)
            log_path = log_dir / f"rosbridge-{port}-{os.getpid()}.log"
        self.log_path = Path(log_path)
        self._proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "--bind",
            f"{self.host}:{self.port}",
            "--no-rosapi",
            "--log-ansi",
            "false",
            *self.extra_args,
        ]

    def start(self) -> RosbridgeProcess:
        if self.running():
            return self
        if _accepts(self.host, self.port):
            raise BridgeError(
                f"port {self.port} on {self.host} is already in use; pick another with --port (or 0 for a free one)"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process' lifetime
        self._log.write(f"--- edgeprof: starting {' '.join(self.command())}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            self.command(),
            env=ros_env(self.domain_id),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it cleanly
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._close_log()
                raise BridgeError(f"rosbridge exited with code {code} during start-up; log tail:\n{self.log_tail()}")
            if _websocket_ready(self.host, self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise BridgeTimeoutError(
            f"rosbridge did not accept websocket connections on {self.url} within {self.startup_timeout_s:.0f} s; "
            f"log tail:\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        self._close_log()

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests use it to check reconnects)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)
        self._proc = None
        self._close_log()

    def restart(self) -> RosbridgeProcess:
        """Stop and start again on the same port (clients must reconnect and re-advertise)."""
        self.stop()
        # The port can linger for a moment after the old process exits.
        deadline = time.monotonic() + 5.0
        while _accepts(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.start()

    def wait(self) -> int:
        """Block until the process exits; returns its exit code."""
        if self._proc is None:
            return 0
        return self._proc.wait()

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def _close_log(self) -> None:
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None

    def __enter__(self) -> RosbridgeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running() else "stopped"
        return f"RosbridgeProcess({self.url}, domain_id={self.domain_id}, {state}, log={self.log_path})"


def start_rosbridge(
    port: int = 0,
    host: str = DEFAULT_HOST,
    domain_id: int | None = None,
    log_path: Path | str | None = None,
    startup_timeout_s: float = 15.0,
) -> RosbridgeProcess:
    """Start rosbridge and wait until its websocket accepts. `port=0` picks a free port."""
    return RosbridgeProcess(
        port or free_port(host),
        host=host,
        domain_id=domain_id,
        log_path=log_path,
        startup_timeout_s=startup_timeout_s,
    ).start()
