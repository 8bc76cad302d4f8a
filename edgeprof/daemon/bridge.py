"""The daemon's side of the ROS bridge: a roslibpy client of a rosbridge (v2) websocket.

What it does, in ROS terms (names from `TopicNames`, all stock types):

- subscribes to the request topic (std_msgs/String)       -> `on_request(raw_json)`
- advertises the tokens and status topics (std_msgs/String) <- `publish_token()`, `publish_status()`
- advertises the next_token and reset services (std_srvs/Trigger) -> `on_next_token()`, `on_reset()`

Design choices (and why):

* roslibpy's connection (its Twisted/Autobahn transport and reconnecting factory) is used, but
  the rosbridge operations are sent directly on each new connection instead of through
  `roslibpy.Topic`/`roslibpy.Service`: those re-send their advertise 1 s after a drop (a publish
  can beat it after a fast reconnect), buffer publishes without bound while disconnected, and
  run service handlers on the reactor thread.
* Threads. roslibpy delivers every message on the single Twisted reactor thread. A service
  handler that decodes a token (a few ms to ~100 ms) must not run there: it would stall every
  other message, and a handler that waits on something the reactor must deliver would deadlock.
  So callbacks run on two bridge worker threads: one runs `on_request` calls in arrival order,
  the other runs `on_next_token`/`on_reset` calls in arrival order and sends each response
  from there. `on_connection_change(connected: bool)` runs on the request worker.
* Reconnect. After a drop the factory retries with exponential backoff (`reconnect_initial_s`,
  doubling, capped at `reconnect_max_s`). Every (re)connection re-subscribes and re-advertises
  all topics and services before `connected` turns true, so nothing is published on a topic the
  new rosbridge does not know. Websocket pings detect a peer that hangs without closing.
* Disconnected publishes raise `BridgeError` (no buffering): a stale token is worse than a
  missing one for a control loop, and the daemon, which owns the request state, turns the
  interrupted request into an error record once `on_connection_change(True)` fires.
  A publish that returned normally can still be lost if the socket drops in the same
  instant (websockets have no per-message acknowledgement); `stats().lost_on_drop` counts
  those we can see.
* `publish_token()` returns the seconds it spent (serialise + hand-off to the reactor), the
  value for the edgeprof_bridge_publish_seconds metric.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from edgeprof.errors import BridgeError, BridgeTimeoutError, ConfigError, EdgeprofError, RequestError
from edgeprof.ros.topics import STRING_TYPE, TRIGGER_TYPE, TopicNames

LOG = logging.getLogger("edgeprof.bridge")
# Records rosbridge keeps for late-matching transient_local subscribers of the tokens topic.
# It must cover what the daemon publishes between a rosbridge restart and the robot's DDS
# match (up to ~4 s after a kill -9): the interrupted requests' final records first.
TOKENS_HISTORY = 100

_reactor_lock = threading.Lock()
_reactor_thread: threading.Thread | None = None


def _reactor():
    """The process' Twisted reactor, running on a daemon thread (started once, shared by all clients)."""
    global _reactor_thread
    try:
        from roslibpy.comm import select_factory

        select_factory("twisted")  # installs the reactor roslibpy uses
        from twisted.internet import reactor
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BridgeError(
            f"roslibpy is not installed ({exc}); install the ROS extras: pip install 'edgeprof[ros]'"
        ) from exc
    with _reactor_lock:
        if not reactor.running and (_reactor_thread is None or not _reactor_thread.is_alive()):
            # installSignalHandlers=False: the daemon's main thread owns SIGINT/SIGTERM.
            _reactor_thread = threading.Thread(
                target=reactor.run, kwargs={"installSignalHandlers": False}, name="edgeprof-reactor", daemon=True
            )
            _reactor_thread.start()
    return reactor


@dataclass
class BridgeStats:
    connects: int = 0  # successful (re)connections
    disconnects: int = 0
    published: int = 0  # token + status messages handed to the socket
    publish_refused: int = 0  # publish attempts while disconnected (BridgeError raised)
    lost_on_drop: int = 0  # publishes accepted but overtaken by a disconnect before sending
    requests: int = 0  # request-topic messages delivered to on_request
    service_calls: int = 0
    service_errors: int = 0  # handler raised or returned an error record
    rosbridge_errors: int = 0  # 'status' error ops sent by rosbridge
    last_publish_s: float = 0.0
    last_rosbridge_error: str = ""


def _set_tcp_nodelay(proto) -> None:
    """Turn Nagle off on the websocket's TCP socket (reactor thread).

    autobahn (26.10) means to, but calls `setTcpNoDelay(self.tcpNoDelay)` before it copies the
    factory options onto the protocol, so the AttributeError is swallowed and Nagle stays on.
    With Nagle on, every websocket ping (whose pong puts rosbridge's socket into delayed-ACK
    mode) held the following token frames in our kernel until rosbridge's ~40 ms delayed ACK:
    a 40-50 ms stall every ping interval, the whole p99 of publish -> robot receipt.
    """
    transport = getattr(proto, "transport", None)
    try:
        transport.setTcpNoDelay(True)
    except (AttributeError, OSError) as exc:  # not a TCP transport (tests, unix sockets)
        LOG.debug("could not set TCP_NODELAY on the rosbridge socket: %s", exc)


def _error_json(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message}})


class BridgeClient:
    """roslibpy client of rosbridge serving the edgeprof ROS interface (see module docstring)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9091,
        names: TopicNames | None = None,
        connect_timeout_s: float = 5.0,
        on_request: Callable[[str], None] | None = None,
        on_next_token: Callable[[], str] | None = None,
        on_reset: Callable[[], str] | None = None,
        on_connection_change: Callable[[bool], None] | None = None,
        reconnect_initial_s: float = 0.1,
        reconnect_max_s: float = 0.5,
        ping_interval_s: float = 2.0,
        ping_timeout_s: float = 2.0,
    ) -> None:
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError("bridge.port", f"{port!r} is not a TCP port; use 1..65535")
        if connect_timeout_s <= 0:
            raise ConfigError("bridge.connect_timeout_s", f"{connect_timeout_s!r} must be > 0 seconds")
        if not 0 < reconnect_initial_s <= reconnect_max_s:
            raise ConfigError("bridge.reconnect_initial_s", "must be > 0 and <= reconnect_max_s")
        self.host = host
        self.port = port
        self.names = names or TopicNames()
        self.connect_timeout_s = connect_timeout_s
        self.on_request = on_request
        self.on_next_token = on_next_token
        self.on_reset = on_reset
        self.on_connection_change = on_connection_change
        self._reconnect = (reconnect_initial_s, reconnect_max_s)
        self._ping = (ping_interval_s, ping_timeout_s)

        self._ros = None
        self._reactor = None
        self._proto = None  # the open protocol instance, None while disconnected
        self._connected = threading.Event()
        self._closed = False
        self._lock = threading.Lock()  # guards _stats
        self._stats = BridgeStats()
        self._request_pool = ThreadPoolExecutor(1, thread_name_prefix="edgeprof-bridge-req")
        self._service_pool = ThreadPoolExecutor(1, thread_name_prefix="edgeprof-bridge-srv")
        # Pre-encoded message heads: publish is on the per-token path, keep it cheap.
        self._token_head = '{"op":"publish","topic":' + json.dumps(self.names.tokens) + ',"msg":{"data":'
        self._status_head = '{"op":"publish","topic":' + json.dumps(self.names.status) + ',"msg":{"data":'

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> BridgeClient:
        """Connect and set up topics and services; BridgeTimeoutError after `connect_timeout_s`."""
        if self._ros is not None:
            return self
        self._reactor = _reactor()
        import roslibpy

        self._ros = roslibpy.Ros(self.host, self.port, transport="twisted")
        factory = self._ros.factory
        # Instance attributes: roslibpy's set_max_delay() & co. change the class for every client.
        factory.initialDelay, factory.maxDelay = self._reconnect
        factory.delay = factory.initialDelay
        factory.factor = 2.0
        if self._ping[0] > 0:
            factory.setProtocolOptions(autoPingInterval=self._ping[0], autoPingTimeout=self._ping[1])
        factory.on("ready", self._on_ready)
        factory.on("close", self._on_close)
        factory.on(self.names.request, self._on_request_msg)
        factory.on(self.names.next_token, self._on_service_call)
        factory.on(self.names.reset, self._on_service_call)
        # roslibpy.Ros() starts connecting at once on the running reactor, so on a loaded machine the first
        # "ready" can fire before the handler above exists (seen: a daemon waiting 30 s on an open websocket).
        # Looked at in the reactor thread, where events are serialized: either ready is still to come (the
        # handler gets it) or it has been and the factory holds the protocol.
        self._reactor.callFromThread(self._ready_if_missed, factory)
        if not self._connected.wait(self.connect_timeout_s):
            self.close()
            raise BridgeTimeoutError(
                f"could not connect to rosbridge at {self.url} within {self.connect_timeout_s:g} s; "
                "start one with `edgeprof bridge --port PORT` or check bridge.host/bridge.port"
            )
        return self

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop reconnecting, close the websocket, stop the worker threads. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._ros is not None:
            factory = self._ros.factory
            done = threading.Event()

            def _shutdown() -> None:
                factory.stopTrying()
                proto = self._proto
                if proto is not None:
                    proto._manual_disconnect = True
                    proto.sendClose()
                done.set()

            self._reactor.callFromThread(_shutdown)
            done.wait(timeout_s)
            deadline = time.monotonic() + timeout_s
            while self._proto is not None and time.monotonic() < deadline:
                time.sleep(0.01)
        self._connected.clear()
        self._request_pool.shutdown(wait=False, cancel_futures=True)
        self._service_pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> BridgeClient:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def stats(self) -> BridgeStats:
        with self._lock:
            return replace(self._stats)

    # ------------------------------------------------------------------ publishing (any thread)

    def publish_token(self, json_str: str) -> float:
        """Publish one token record on the tokens topic. Returns seconds spent; BridgeError if disconnected."""
        return self._publish(self._token_head, json_str)

    def publish_status(self, json_str: str) -> float:
        """Publish a status JSON on the status topic. Returns seconds spent; BridgeError if disconnected."""
        return self._publish(self._status_head, json_str)

    def _publish(self, head: str, json_str: str) -> float:
        t0 = time.perf_counter()
        if not isinstance(json_str, str):
            raise TypeError(f"publish needs a JSON str, got {type(json_str).__name__}")
        proto = self._proto
        if proto is None or not self._connected.is_set():
            with self._lock:
                self._stats.publish_refused += 1
            raise BridgeError(f"not connected to rosbridge at {self.url}; the message was not sent")
        payload = (head + json.dumps(json_str) + "}}").encode()
        self._reactor.callFromThread(self._send, proto, payload)
        dt = time.perf_counter() - t0
        with self._lock:
            self._stats.published += 1
            self._stats.last_publish_s = dt
        return dt

    def _send(self, proto, payload: bytes) -> None:
        # Reactor thread. A publish queued just before a drop finds a different (or no) protocol.
        if proto is not self._proto:
            with self._lock:
                self._stats.lost_on_drop += 1
            return
        proto.sendMessage(payload, isBinary=False)

    # ------------------------------------------------------------------ connection events (reactor thread)

    def _setup_ops(self) -> list[dict]:
        n = self.names
        return [
            {"op": "subscribe", "id": f"edgeprof:sub:{n.request}", "topic": n.request, "type": STRING_TYPE},
            # latch -> transient_local, queue_size -> its depth: a robot subscribing transient_local
            # gets the records published before its DDS match with a restarted rosbridge, among
            # them the final record of a request the restart interrupted (docs/ros.md). Both
            # rosbridge-server-rs and the stock rosbridge_server read these two fields.
            {"op": "advertise", "id": f"edgeprof:adv:{n.tokens}", "topic": n.tokens, "type": STRING_TYPE,
             "latch": True, "queue_size": TOKENS_HISTORY},
            {"op": "advertise", "id": f"edgeprof:adv:{n.status}", "topic": n.status, "type": STRING_TYPE,
             "latch": True, "queue_size": 1},
            {"op": "advertise_service", "service": n.next_token, "type": TRIGGER_TYPE},
            {"op": "advertise_service", "service": n.reset, "type": TRIGGER_TYPE},
        ]

    def _ready_if_missed(self, factory) -> None:
        proto = getattr(factory, "_proto", None)
        if proto is not None and self._proto is None:
            self._on_ready(proto)

    def _on_ready(self, proto) -> None:
        if self._closed:
            proto.sendClose()
            return
        _set_tcp_nodelay(proto)
        # rosbridge reports failed operations with op 'status'; roslibpy has no handler for it.
        proto._message_handlers["status"] = self._on_status
        for op in self._setup_ops():
            proto.sendMessage(json.dumps(op).encode(), isBinary=False)
        self._proto = proto
        with self._lock:
            self._stats.connects += 1
        self._connected.set()
        LOG.info("connected to rosbridge at %s", self.url)
        self._notify(True)

    def _on_close(self, proto) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._proto = None
        if was_connected:
            with self._lock:
                self._stats.disconnects += 1
            if not self._closed:
                LOG.warning("lost rosbridge at %s; reconnecting", self.url)
            self._notify(False)

    def _notify(self, connected: bool) -> None:
        if self.on_connection_change is not None and not self._closed:
            self._submit(self._request_pool, self._call_user, self.on_connection_change, connected)

    def _on_status(self, message) -> None:
        if message.get("level") in ("error", "warning"):
            text = f"{message.get('level')}: {message.get('msg')} (id={message.get('id')})"
            with self._lock:
                self._stats.rosbridge_errors += 1
                self._stats.last_rosbridge_error = text
            LOG.warning("rosbridge reported %s", text)

    def _on_request_msg(self, msg) -> None:
        data = msg.get("data") if isinstance(msg, dict) else None
        raw = data if isinstance(data, str) else ""
        with self._lock:
            self._stats.requests += 1
        if self.on_request is not None:
            self._submit(self._request_pool, self._call_user, self.on_request, raw)

    def _on_service_call(self, message) -> None:
        proto = self._proto
        self._submit(self._service_pool, self._serve, message, proto)

    @staticmethod
    def _submit(pool: ThreadPoolExecutor, fn, *args) -> None:
        with contextlib.suppress(RuntimeError):  # pool shut down: the client is closing
            pool.submit(fn, *args)

    @staticmethod
    def _call_user(fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # a callback bug must not kill the worker thread
            LOG.exception("bridge callback %r failed", getattr(fn, "__name__", fn))

    # ------------------------------------------------------------------ services (service worker thread)

    def _serve(self, message, proto) -> None:
        service = message.get("service")
        handler = self.on_next_token if service == self.names.next_token else self.on_reset
        text, success = self._run_handler(service, handler)
        response = {
            "op": "service_response",
            "service": service,
            "values": {"success": success, "message": text},
            "result": True,
        }
        if "id" in message:
            response["id"] = message["id"]
        with self._lock:
            self._stats.service_calls += 1
            self._stats.service_errors += not success
        if self._reactor is not None:
            # Same connection only: a request id means nothing to a restarted rosbridge.
            self._reactor.callFromThread(self._send, proto, json.dumps(response).encode())

    def _run_handler(self, service: str, handler) -> tuple[str, bool]:
        if handler is None:
            return _error_json("unavailable", f"{service} has no handler in this daemon"), False
        try:
            text = handler()
        except RequestError as exc:
            return _error_json(exc.code, str(exc)), False
        except EdgeprofError as exc:
            return _error_json(type(exc).__name__, str(exc)), False
        except Exception as exc:
            LOG.exception("service handler for %s failed", service)
            return _error_json("internal", f"{type(exc).__name__}: {exc}"), False
        if not isinstance(text, str):
            return _error_json("internal", f"handler returned {type(text).__name__}, not a JSON str"), False
        # Trigger.success mirrors the record: False when the daemon answered with an error record.
        try:
            record = json.loads(text)
        except ValueError:
            return text, True
        return text, not (isinstance(record, dict) and "error" in record)
