"""A sample robot: a real rclpy (ROS 2, DDS) node using the edgeprof interface.

It publishes request JSON on the request topic, listens to the tokens topic, and calls the
next_token and reset services (std_srvs/Trigger) -- through rosbridge to the daemon.

rclpy needs the ROS 2 library environment when its process starts, so there are two layers:

* `RobotClient` -- the rclpy node itself; use it inside a process started with `ros_env()`.
* `RobotProcess` -- starts `python -m edgeprof.ros.robot --rpc` with `ros_env(domain_id)`
  and drives a `RobotClient` there over JSON lines on stdin/stdout. Tests, the demo and the
  benchmark use this from an ordinary Python process.

CLI (re-executes itself with the ROS environment when needed):

    python -m edgeprof.ros.robot --prompt "Name three colors." --next-tokens 3
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import itertools
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from edgeprof.errors import BridgeError, BridgeTimeoutError, EdgeprofError
from edgeprof.ros.topics import TopicNames

ENV_MARK = "EDGEPROF_ROS_ENV"  # set in processes started with ros_env() by this module
RPC_PREFIX = "@@edgeprof-rpc "  # marks our lines on stdout; anything else there (DDS chatter) is ignored
RECV_KEY = "_recv_ns"  # added to each received record: CLOCK_MONOTONIC ns at receipt (robot side)
# Also added: time.time_ns() at receipt, the clock of the daemon's `ready_unix_ns` token stamp,
# so `_recv_unix_ns - ready_unix_ns` is the one-way hop daemon -> robot on one host.
RECV_UNIX_KEY = "_recv_unix_ns"
SENT_UNIX_KEY = "_sent_unix_ns"  # time.time_ns() just before the request was published / the call sent


def monotonic_ns() -> int:
    """CLOCK_MONOTONIC in ns: one clock for all processes on a host, so cross-process deltas are valid."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def _matches(record: dict, match: dict) -> bool:
    """`match` holds key -> value equalities; the special key 'has' lists keys that must be present."""
    for key, value in match.items():
        if key == "has":
            if not any(k in record for k in value):
                return False
        elif record.get(key) != value:
            return False
    return True


def is_final(record: dict) -> bool:
    return bool(record.get("done")) or "error" in record


# ============================================================================ the robot API, written once

# The robot API is RobotClient's methods marked @exposed: RobotProcess forwards exactly these
# (generated below, with their signatures and docstrings) and the --rpc loop serves exactly these.
DEFAULT_WAIT_S = 60.0  # parent-side wait for a call that has no timeout of its own
_WAIT_ATTR = "_robot_api_wait"
_F = TypeVar("_F", bound=Callable[..., Any])


def _by_timeout(args: dict[str, Any]) -> float:
    return args["timeout_s"]


def _per_call(args: dict[str, Any]) -> float:
    return args["timeout_s"] * args["n"]


def exposed(wait: Callable[[dict[str, Any]], float] | None = None) -> Callable[[_F], _F]:
    """Mark a RobotClient method as part of the robot API. `wait(args)` is how long RobotProcess
    waits for the answer, from the call's bound arguments (the robot enforces its own timeout_s
    first, so this only catches a robot process that stopped answering)."""

    def mark(method: _F) -> _F:
        setattr(method, _WAIT_ATTR, wait or (lambda _args: DEFAULT_WAIT_S))
        return method

    return mark


# ============================================================================ the rclpy node


class RobotClient:
    """An rclpy node speaking the edgeprof interface. Needs a process started with `ros_env()`."""

    def __init__(
        self,
        names: TopicNames | None = None,
        node_name: str = "edgeprof_robot",
        domain_id: int | None = None,
    ) -> None:
        try:
            import rclpy
            from rclpy.executors import SingleThreadedExecutor
            from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
            from std_msgs.msg import String
            from std_srvs.srv import Trigger
        except ImportError as exc:
            raise BridgeError(
                f"rclpy cannot be imported ({exc}); install 'edgeprof[ros]' and start this process with "
                "edgeprof.ros.rosbridge.ros_env() (or use RobotProcess)"
            ) from exc
        self.names = names or TopicNames()
        self._String, self._Trigger = String, Trigger
        self._context = rclpy.Context()
        rclpy.init(context=self._context, domain_id=domain_id)
        self.node = rclpy.create_node(node_name, context=self._context)
        reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self._request_pub = self.node.create_publisher(String, self.names.request, reliable)
        # transient_local: records published before this node matched a (restarted) rosbridge
        # still arrive, e.g. the final record of a request the restart interrupted (docs/ros.md)
        durable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._tokens_sub = self.node.create_subscription(String, self.names.tokens, self._on_token, durable)
        self.node.create_subscription(String, self.names.status, self._on_status, 10)
        self._next_client = self.node.create_client(Trigger, self.names.next_token)
        self._reset_client = self.node.create_client(Trigger, self.names.reset)
        self._cond = threading.Condition()
        self._records: list[dict] = []
        self._last_status: dict | None = None
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self.node)
        self._spin = threading.Thread(target=self._spin_forever, name="edgeprof-robot-spin", daemon=True)
        self._spin.start()

    def _spin_forever(self) -> None:
        import rclpy

        while rclpy.ok(context=self._context):
            try:
                self._executor.spin_once(timeout_sec=0.1)
            except Exception:  # shutdown races
                if not rclpy.ok(context=self._context):
                    return
                raise

    # ------------------------------------------------------------------ receiving

    def _on_token(self, msg) -> None:
        recv = monotonic_ns()  # first thing: this is the robot's receipt time
        recv_unix = time.time_ns()
        try:
            record = json.loads(msg.data)
        except ValueError:
            record = {"error": {"code": "robot_bad_json", "message": msg.data[:200]}}
        if not isinstance(record, dict):
            record = {"value": record}
        record[RECV_KEY] = recv
        record[RECV_UNIX_KEY] = recv_unix
        with self._cond:
            self._records.append(record)
            self._cond.notify_all()

    def _on_status(self, msg) -> None:
        try:
            self._last_status = json.loads(msg.data)
        except ValueError:
            self._last_status = {"raw": msg.data}

    @exposed()
    def last_status(self) -> dict | None:
        """The daemon's latest status message (None until one arrived)."""
        return self._last_status

    @exposed()
    def records(self, since: int = 0) -> list[dict]:
        with self._cond:
            return list(self._records[since:])

    @exposed()
    def count(self) -> int:
        with self._cond:
            return len(self._records)

    @exposed(_by_timeout)
    def wait_record(self, match: dict, timeout_s: float, since: int = 0) -> dict:
        """The first record (index >= since) matching `match`; BridgeTimeoutError after timeout_s."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for record in self._records[since:]:
                    if _matches(record, match):
                        return record
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BridgeTimeoutError(f"no token record matching {match} within {timeout_s:g} s")
                self._cond.wait(left)

    @exposed(_by_timeout)
    def collect(self, request_id: Any, timeout_s: float, since: int = 0) -> list[dict]:
        """All records of `request_id` up to and including its done/error record."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                mine = [r for r in self._records[since:] if r.get("id") == request_id]
                if mine and is_final(mine[-1]):
                    return mine
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BridgeTimeoutError(
                        f"request {request_id!r}: no done/error record within {timeout_s:g} s ({len(mine)} records)"
                    )
                self._cond.wait(left)

    # ------------------------------------------------------------------ sending

    @exposed(_by_timeout)
    def wait_ready(self, timeout_s: float = 10.0, services: bool = True, ping: bool = True) -> None:
        """Wait until the daemon side is visible in the ROS graph (request subscriber, tokens
        publisher, and with `services` both Trigger services), then (with `ping`) until it answers
        a ping on the request topic."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # Matched endpoints, not just graph entries: a message published before the DDS
            # match completes is lost (volatile durability), so wait for the match itself.
            ok = self._request_pub.get_subscription_count() > 0 and self._tokens_sub.get_publisher_count() > 0
            if ok and services:
                ok = self._next_client.service_is_ready() and self._reset_client.service_is_ready()
            if ok:
                if ping:
                    self._ping_until_answered(deadline)
                return
            time.sleep(0.02)
        raise BridgeTimeoutError(
            f"the edgeprof daemon is not visible on {self.names.request} / {self.names.tokens} within {timeout_s:g} s; "
            "is rosbridge running with the same ROS_DOMAIN_ID, and the daemon connected to it?"
        )

    def _ping_until_answered(self, deadline: float) -> None:
        """Our publisher seeing the bridge's subscriber does not mean the subscriber has matched our
        publisher yet: a request published in between is dropped, and a robot's first request was lost
        that way (the demo test's intermittent). So ping, every 0.25 s, until the pong comes back."""
        token, since = f"ping-{uuid.uuid4().hex[:12]}", self.count()
        while True:
            self.send({"ping": token})
            try:
                self.wait_record({"pong": token}, min(0.25, max(0.01, deadline - time.monotonic())), since)
                return
            except BridgeTimeoutError:
                if time.monotonic() >= deadline:
                    raise BridgeTimeoutError(
                        f"the edgeprof daemon is visible on {self.names.request} but did not answer a ping before "
                        "the wait ran out; is it an edgeprof daemon, and is it still loading its model?"
                    ) from None

    @exposed()
    def send_raw(self, text: str) -> int:
        """Publish `text` as is on the request topic; returns the record index to wait from."""
        since = self.count()
        self._request_pub.publish(self._String(data=text))
        return since

    @exposed()
    def send(self, request: dict) -> int:
        return self.send_raw(json.dumps(request))

    @exposed(_by_timeout)
    def send_request(
        self,
        prompt: str | None = None,
        messages: list[dict] | None = None,
        max_new_tokens: int = 16,
        request_id: str | None = None,
        timeout_s: float = 120.0,
        **fields: Any,
    ) -> list[dict]:
        """Send one request and return its token records up to the done or error record."""
        request: dict[str, Any] = {"id": request_id or uuid.uuid4().hex[:12], "max_new_tokens": max_new_tokens}
        if prompt is not None:
            request["prompt"] = prompt
        if messages is not None:
            request["messages"] = messages
        request.update(fields)
        sent = time.time_ns()
        since = self.send(request)
        records = self.collect(request["id"], timeout_s, since)
        for record in records:
            record.setdefault(SENT_UNIX_KEY, sent)
        return records

    def _trigger(self, client, timeout_s: float) -> dict:
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise BridgeTimeoutError(f"service {client.srv_name} is not available within {timeout_s:g} s")
        done = threading.Event()
        got: list[int] = []

        def _on_done(_f) -> None:  # on the spin thread, as soon as the response is in
            got.append(time.time_ns())
            done.set()

        t0, t0_unix = monotonic_ns(), time.time_ns()
        future = client.call_async(self._Trigger.Request())
        future.add_done_callback(_on_done)
        if not done.wait(timeout_s):
            client.remove_pending_request(future)
            raise BridgeTimeoutError(f"service {client.srv_name} did not answer within {timeout_s:g} s")
        rtt_ns = monotonic_ns() - t0
        response = future.result()
        try:
            record = json.loads(response.message)
        except ValueError:
            record = {"raw": response.message}
        if not isinstance(record, dict):
            record = {"value": record}
        record["_success"] = bool(response.success)
        record["_rtt_ms"] = rtt_ns / 1e6
        record[SENT_UNIX_KEY] = t0_unix
        record[RECV_UNIX_KEY] = got[0] if got else time.time_ns()
        return record

    @exposed(_by_timeout)
    def next_token(self, timeout_s: float = 30.0) -> dict:
        """Call the next_token service: the daemon decodes one more token and answers its record."""
        return self._trigger(self._next_client, timeout_s)

    @exposed(_by_timeout)
    def reset(self, timeout_s: float = 30.0) -> dict:
        return self._trigger(self._reset_client, timeout_s)

    @exposed(_per_call)
    def trigger_rtts(self, service: str, n: int, timeout_s: float = 10.0) -> list[float]:
        """n sequential calls of a Trigger service; robot-side round trips in ms (benchmark helper)."""
        client = self._next_client if service == "next_token" else self._reset_client
        return [self._trigger(client, timeout_s)["_rtt_ms"] for _ in range(n)]

    @exposed(_per_call)
    def trigger_records(self, service: str, n: int, timeout_s: float = 10.0) -> list[dict]:
        """n sequential calls of a Trigger service; each answer's record with its robot-side stamps."""
        client = self._next_client if service == "next_token" else self._reset_client
        return [self._trigger(client, timeout_s) for _ in range(n)]

    @exposed(lambda a: (a["timeout_s"] + a["pause_s"]) * (a["n"] + 1))
    def topic_round_trips(self, request_topic: str, reply_topic: str, n: int, timeout_s: float = 10.0,
                          body: str = "next", pause_s: float = 0.0) -> list[dict]:
        """n sequential request/reply pairs over two std_msgs/String topics (the alternative to a
        Trigger service: publish `body` on request_topic, wait for one message on reply_topic),
        `pause_s` apart (a robot acting on each token before it pulls the next).
        Returns each reply's JSON record with `_rtt_ms`, `_sent_unix_ns` and `_recv_unix_ns`."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        got: queue.SimpleQueue = queue.SimpleQueue()
        pub = self.node.create_publisher(self._String, request_topic, reliable)
        sub = self.node.create_subscription(
            self._String, reply_topic, lambda m: got.put((monotonic_ns(), time.time_ns(), m.data)), reliable)
        try:
            deadline = time.monotonic() + timeout_s
            while pub.get_subscription_count() == 0 or sub.get_publisher_count() == 0:
                if time.monotonic() > deadline:
                    raise BridgeTimeoutError(f"nobody serves {request_topic} -> {reply_topic} within {timeout_s:g} s")
                time.sleep(0.02)
            time.sleep(0.5)  # matched on our side; give the far side's match a moment too
            out = []
            for _ in range(n):
                if pause_s > 0:
                    time.sleep(pause_s)
                t0, t0_unix = monotonic_ns(), time.time_ns()
                pub.publish(self._String(data=body))
                try:
                    t1, t1_unix, data = got.get(timeout=timeout_s)
                except queue.Empty:
                    raise BridgeTimeoutError(f"no reply on {reply_topic} within {timeout_s:g} s") from None
                record = json.loads(data)
                record.update({"_rtt_ms": (t1 - t0) / 1e6, SENT_UNIX_KEY: t0_unix, RECV_UNIX_KEY: t1_unix})
                out.append(record)
            return out
        finally:
            self.node.destroy_subscription(sub)
            self.node.destroy_publisher(pub)

    @exposed(_by_timeout)
    def token_delays(self, field: str, n: int, timeout_s: float, since: int = 0) -> list[float]:
        """Receipt minus the daemon's CLOCK_MONOTONIC ns stamp `field`, in ms, for the first n stamped records."""
        deadline = time.monotonic() + timeout_s
        scanned, stamped = since, []
        with self._cond:
            while True:
                # Incremental scan: a full rescan per received token would compete with the
                # subscription callback for the GIL and distort the measurement.
                stamped += [r for r in self._records[scanned:] if field in r]
                scanned = len(self._records)
                if len(stamped) >= n or time.monotonic() >= deadline:
                    return [(r[RECV_KEY] - r[field]) / 1e6 for r in stamped[:n]]
                self._cond.wait(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        import rclpy

        if rclpy.ok(context=self._context):
            rclpy.shutdown(context=self._context)
        self._spin.join(2)
        self.node.destroy_node()


# ============================================================================ the subprocess wrapper


class RobotProcess:
    """A `RobotClient` in its own process (with `ros_env(domain_id)`), driven over JSON lines.

    Has every method of the robot API (`ROBOT_API`: RobotClient's @exposed methods, forwarders
    generated below with the same signatures); errors raised in the robot process come back as
    BridgeError/BridgeTimeoutError.
    """

    def __init__(
        self,
        domain_id: int | None,
        names: TopicNames | None = None,
        node_name: str = "edgeprof_robot",
        start_timeout_s: float = 30.0,
    ) -> None:
        from edgeprof.ros.rosbridge import ros_env

        self.names = names or TopicNames()
        env = ros_env(domain_id)
        env[ENV_MARK] = "1"
        cmd = [sys.executable, "-u", "-m", "edgeprof.ros.robot", "--rpc", "--node-name", node_name,
               "--names", json.dumps(self.names.as_dict())]
        self._proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        self._replies: queue.Queue = queue.Queue()
        self._stderr: list[str] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self._call("ping", start_timeout_s)

    def _read_stdout(self) -> None:
        for line in self._proc.stdout:
            if line.startswith(RPC_PREFIX):
                self._replies.put(json.loads(line[len(RPC_PREFIX):]))
        self._replies.put(None)  # EOF: the process ended

    def _read_stderr(self) -> None:
        for line in self._proc.stderr:
            self._stderr.append(line.rstrip())
            del self._stderr[:-200]

    def stderr_tail(self, n: int = 20) -> str:
        return "\n".join(self._stderr[-n:])

    def _call(self, op: str, wait_s: float = DEFAULT_WAIT_S, args: dict[str, Any] | None = None) -> Any:
        with self._lock:
            call_id = next(self._ids)
            try:
                self._proc.stdin.write(json.dumps({"call": call_id, "op": op, "args": args or {}}) + "\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError) as exc:
                raise BridgeError(f"the robot process has exited; stderr:\n{self.stderr_tail()}") from exc
            deadline = time.monotonic() + wait_s + 5.0  # the robot enforces its own timeout_s first
            while True:
                try:
                    reply = self._replies.get(timeout=max(0.01, deadline - time.monotonic()))
                except queue.Empty:
                    raise BridgeTimeoutError(f"robot process: no answer to {op!r} within {wait_s:g} s") from None
                if reply is None:
                    raise BridgeError(f"the robot process exited during {op!r}; stderr:\n{self.stderr_tail()}")
                if reply.get("call") == call_id:
                    break
        if "error" in reply:
            cls = BridgeTimeoutError if reply["error"]["type"] == "BridgeTimeoutError" else BridgeError
            raise cls(reply["error"]["message"])
        return reply["result"]

    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(EdgeprofError):
                self._call("close", 5.0)
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            with contextlib.suppress(OSError):
                stream.close()

    def __enter__(self) -> RobotProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# The robot API as a name -> RobotClient method table: the one list both sides use.
ROBOT_API: dict[str, Callable[..., Any]] = {
    name: member for name, member in vars(RobotClient).items() if hasattr(member, _WAIT_ATTR)
}
_PROTOCOL_OPS = ("ping", "close")  # the pipe's own calls, beside the API
if clash := set(ROBOT_API) & set(_PROTOCOL_OPS):
    raise TypeError(f"RobotClient methods {sorted(clash)} clash with the robot pipe's own calls")


def _call_args(signature: inspect.Signature, bound: inspect.BoundArguments) -> dict[str, Any]:
    """The keyword arguments of a bound call, defaults filled in and **fields spread (self left out)."""
    out: dict[str, Any] = {}
    for name, value in list(bound.arguments.items())[1:]:
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        else:
            out[name] = value
    return out


def _forwarder(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """A RobotProcess method with `method`'s signature and docstring that runs it in the robot process."""
    signature = inspect.signature(method)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in signature.parameters.values()):
        raise TypeError(f"RobotClient.{name}: *args cannot travel as JSON keyword arguments")
    wait = getattr(method, _WAIT_ATTR)

    @functools.wraps(method)  # keeps the name, docstring and (via __wrapped__) the signature
    def forward(self: RobotProcess, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)  # a wrong call fails here, as it would on RobotClient
        bound.apply_defaults()
        call_args = _call_args(signature, bound)
        return self._call(name, wait(call_args), call_args)

    forward.__qualname__ = f"RobotProcess.{name}"
    return forward


for _name, _method in ROBOT_API.items():
    setattr(RobotProcess, _name, _forwarder(_name, _method))


def _serve_rpc(client: RobotClient) -> None:
    """The --rpc loop: one JSON call per stdin line, one prefixed JSON reply per call on stdout."""
    ops: dict[str, Callable[..., Any]] = {name: getattr(client, name) for name in ROBOT_API}
    ops.update(ping=lambda: "pong", close=lambda: None)
    out = sys.stdout
    for line in sys.stdin:
        call = json.loads(line)
        try:
            reply = {"call": call["call"], "result": ops[call["op"]](**call.get("args", {}))}
        except Exception as exc:
            reply = {"call": call["call"], "error": {"type": type(exc).__name__, "message": str(exc)}}
        out.write(RPC_PREFIX + json.dumps(reply) + "\n")
        out.flush()
        if call["op"] == "close":
            break


# ============================================================================ CLI


def _fmt(x: Any, spec: str, unit: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{unit}"


def format_token(record: dict) -> str:
    """One line per token: latency against the memory floor."""
    return (
        f"[{record.get('index', '?'):>3}] {record.get('text', '')!r:<14} "
        f"latency {_fmt(record.get('latency_ms'), '7.2f', ' ms')}  floor {_fmt(record.get('floor_ms'), '6.3f', ' ms')}  "
        f"fraction {_fmt(record.get('fraction'), '5.3f')}"
        + ("  DEADLINE MISSED" if record.get("deadline_missed") else "")
    )


def format_done(record: dict) -> str:
    return (
        f"done ({record.get('reason')}): {record.get('n_tokens')} tokens, ttft {_fmt(record.get('ttft_ms'), '.1f', ' ms')}, "
        f"p50 {_fmt(record.get('p50_ms'), '.2f', ' ms')}, p99 {_fmt(record.get('p99_ms'), '.2f', ' ms')}, "
        f"median fraction of floor {_fmt(record.get('fraction_median'), '.3f')}, "
        f"deadline misses {record.get('deadline_misses', 0)}"
    )


def format_record(record: dict) -> tuple[str, bool]:
    """One printable line for a record of a request's stream, and whether it is an error
    (the sample robot's CLI and `edgeprof demo` print streams the same way)."""
    if "error" in record:
        return f"error {record['error'].get('code')}: {record['error'].get('message')}", True
    if record.get("done"):
        return format_done(record), False
    return format_token(record), False


def run_session(
    robot: RobotClient | RobotProcess,
    prompt: str | None,
    max_new_tokens: int,
    next_tokens: int,
    timeout_s: float,
    reset: bool = False,
    chat: bool = False,
    request_id: str | None = None,
    say: Callable[[str], None] = print,
    **fields: Any,
) -> int:
    """The sample robot's session, printed line by line through `say`: optionally reset, send
    `prompt` (as a chat message with `chat`) and print its stream and reply, then call next_token
    `next_tokens` times. Returns 0, or 1 if the daemon answered an error. The robot CLI and
    `edgeprof demo` both run this."""
    status = 0
    if reset:
        say("reset: " + json.dumps({k: v for k, v in robot.reset(timeout_s).items() if not k.startswith("_")}))
    if prompt is not None:
        say(f"robot -> request: {prompt!r} (max_new_tokens {max_new_tokens})")
        sent = {"messages": [{"role": "user", "content": prompt}]} if chat else {"prompt": prompt}
        records = robot.send_request(**sent, max_new_tokens=max_new_tokens, request_id=request_id,
                                     timeout_s=timeout_s, **fields)
        for record in records:
            line, failed = format_record(record)
            say(line)
            status = 1 if failed else status
        say(f"reply: {''.join(r.get('text', '') for r in records if not is_final(r))!r}")
    rtts = []
    for _ in range(next_tokens):
        record = robot.next_token(timeout_s)
        if "error" in record:  # e.g. no session yet: the next calls would answer the same
            say(f"next_token error {record['error'].get('code')}: {record['error'].get('message')}")
            status = 1
            break
        rtts.append(record["_rtt_ms"])
        say(format_token(record) + f"  (next_token round trip {record['_rtt_ms']:.2f} ms)")
    if rtts:
        say(f"next_token: {len(rtts)} calls, median round trip {statistics.median(rtts):.2f} ms")
    return status


def _run_cli(args: argparse.Namespace, client: RobotClient) -> int:
    client.wait_ready(args.wait_s)
    return run_session(client, args.prompt, args.max_new_tokens, args.next_tokens, args.timeout_s, reset=args.reset)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgeprof.ros.robot", description="Sample rclpy robot for edgeprof.")
    p.add_argument("--prompt", help="send this prompt on the request topic and print its tokens")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--next-tokens", type=int, default=0, help="then call the next_token service this many times")
    p.add_argument("--reset", action="store_true", help="call the reset service first")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: the environment's)")
    p.add_argument("--prefix", default=None, help="topic prefix (default /edgeprof)")
    p.add_argument("--names", default=None, help=argparse.SUPPRESS)  # JSON TopicNames (RobotProcess)
    p.add_argument("--node-name", default="edgeprof_robot")
    p.add_argument("--wait-s", type=float, default=15.0, help="how long to wait for the daemon to appear")
    p.add_argument("--timeout-s", type=float, default=120.0, help="per-request timeout")
    p.add_argument("--rpc", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if os.environ.get(ENV_MARK) != "1":
        # rclpy needs the ROS library environment at process start: re-execute with it.
        from edgeprof.ros.rosbridge import ros_env

        try:
            env = ros_env(args.domain_id)
        except EdgeprofError as exc:
            print(f"robot: error: {exc}", file=sys.stderr)
            return 2
        env[ENV_MARK] = "1"
        argv_full = [sys.executable, "-m", "edgeprof.ros.robot", *(sys.argv[1:] if argv is None else argv)]
        os.execve(sys.executable, argv_full, env)

    if args.names:
        names = TopicNames.from_dict(json.loads(args.names))
    elif args.prefix:
        names = TopicNames.with_prefix(args.prefix)
    else:
        names = TopicNames()
    try:
        client = RobotClient(names, node_name=args.node_name, domain_id=args.domain_id)
    except EdgeprofError as exc:
        print(f"robot: error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.rpc:
            _serve_rpc(client)
            return 0
        return _run_cli(args, client)
    except EdgeprofError as exc:
        print(f"robot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
