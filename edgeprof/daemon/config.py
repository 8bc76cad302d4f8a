"""The daemon's configuration: `configs/daemon.yaml`, validated at load.

Every field has a default, so an empty file is a valid config. A bad value stops
`edgeprof serve` before anything starts, with an error naming the file and the
field, e.g. ``daemon.yaml: session.max_queue: must be a positive integer, got -1``.
Pure: no torch, no sockets.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from edgeprof.errors import ConfigError

OVERFLOW_POLICIES = ("error", "reset", "sliding_window")
_TOPIC_RE = re.compile(r"^/?[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*$")
# Identity label values (`robot`, `site`): a bounded charset and length, so a fleet's label
# values stay short, safe in PromQL regexes and file names, and cannot grow per request.
IDENTITY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
IDENTITY_RULE = "1-63 characters from A-Z a-z 0-9 _ . -, starting with a letter or digit"


@dataclass(frozen=True)
class BridgeConfig:
    host: str = "127.0.0.1"
    port: int = 9091  # `edgeprof bridge`'s default; rosbridge and Prometheus both default to 9090, so metrics do not
    connect_timeout_s: float = 5.0


@dataclass(frozen=True)
class TopicsConfig:
    """ROS names; stock types only (std_msgs/String, std_srvs/Trigger)."""

    request: str = "/edgeprof/request"
    tokens: str = "/edgeprof/tokens"
    next_token: str = "/edgeprof/next_token"
    reset: str = "/edgeprof/reset"
    status: str = "/edgeprof/status"


@dataclass(frozen=True)
class SessionConfig:
    max_ctx: int = 2048  # KV-cache capacity of the one session (capped by the model's own maximum)
    max_queue: int = 8  # requests waiting while one generates; one more gets "busy"
    on_overflow: str = "error"  # error | reset | sliding_window
    sliding_window: int = 512  # tokens kept after a slide (on_overflow: sliding_window); <= max_ctx / 2
    max_new_tokens_limit: int = 1024  # largest max_new_tokens a request may ask for
    max_request_bytes: int = 65536  # a request message larger than this is refused unparsed
    stop_at_eos: bool = True
    reply_timeout_s: float = 30.0  # a next_token / reset service call waits at most this long
    # Launch step N+1 before the host work for token N (record, publish, run log, metrics),
    # so that work overlaps the device step instead of adding to it (Session.generate).
    overlap_host: bool = True
    # With overlap_host, also queue step N+2 behind N+1 where the decoder can (edgeprof-fast with the mapped
    # readback): the device never waits for the host's turn-around; a step queued past a reply's end is rolled back.
    speculate: bool = True


@dataclass(frozen=True)
class StatusConfig:
    period_s: float = 1.0


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9464  # not 9090: that is rosbridge's and Prometheus' own default
    # A central Prometheus scraping robots (docs/fleet.md, pull) needs a non-loopback host;
    # /metrics has no authentication, so that must be asked for explicitly.
    allow_remote: bool = False


@dataclass(frozen=True)
class IdentityConfig:
    """Constant labels on every metric this daemon exports (one Prometheus for a fleet)."""

    robot: str = "auto"  # auto = this machine's host name (sanitised into IDENTITY_RE)
    site: str = ""  # empty = no site label


@dataclass(frozen=True)
class RunLogConfig:
    enabled: bool = True
    path: str = ""  # "": edgeprof.paths.default_runlog_path() (the XDG state dir)
    flush_interval_s: float = 0.25  # a kill -9 loses at most about this much plus one commit

    @property
    def resolved_path(self) -> str:
        from edgeprof.paths import default_runlog_path

        return self.path or str(default_runlog_path())


@dataclass(frozen=True)
class DaemonConfig:
    model: str = "smollm2-135m"  # preset name, local HF dir, .gguf file or hub id
    backend: str = "auto"  # a registry name, or auto (lifecycle.AUTO_BACKENDS: int4 edgeprof-fast where it pays on a GPU; llamacpp first on a CPU)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    gpu: str = "auto"  # catalog key used for the floor; auto = the detected device
    dtype: str = "bfloat16"
    warmup_steps: int = 3
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    runlog: RunLogConfig = field(default_factory=RunLogConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_SECTIONS = {
    "bridge": BridgeConfig, "topics": TopicsConfig, "session": SessionConfig,
    "status": StatusConfig, "metrics": MetricsConfig, "identity": IdentityConfig, "runlog": RunLogConfig,
}


class _Checker:
    """Type and range checks that name `<file>: <field>` in every error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, name: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {name}" if self.source else name, message)

    def string(self, name: str, v: Any) -> str:
        if not isinstance(v, str) or not v.strip():
            raise self.fail(name, f"must be a non-empty string, got {v!r}")
        return v.strip()

    def boolean(self, name: str, v: Any) -> bool:
        if not isinstance(v, bool):
            raise self.fail(name, f"must be true or false, got {v!r}")
        return v

    def positive_int(self, name: str, v: Any, maximum: int | None = None) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise self.fail(name, f"must be a positive integer, got {v!r}")
        if maximum is not None and v > maximum:
            raise self.fail(name, f"must be at most {maximum}, got {v}")
        return v

    def non_negative_int(self, name: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise self.fail(name, f"must be an integer >= 0, got {v!r}")
        return v

    def port(self, name: str, v: Any, allow_zero: bool = False) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not (0 if allow_zero else 1) <= v <= 65535:
            raise self.fail(name, f"must be a TCP port number 1..65535, got {v!r}")
        return v

    def positive_float(self, name: str, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise self.fail(name, f"must be a positive number, got {v!r}")
        return float(v)

    def identity(self, name: str, v: Any, allow_empty: bool = False) -> str:
        if allow_empty and (v is None or v == ""):
            return ""
        if not isinstance(v, str) or not IDENTITY_RE.match(v):
            raise self.fail(name, f"must be {IDENTITY_RULE}, got {v!r}"
                            + ("; leave it empty for no label" if allow_empty else ""))
        return v

    def topic(self, name: str, v: Any) -> str:
        s = self.string(name, v)
        if not _TOPIC_RE.match(s):
            raise self.fail(name, f"{s!r} is not a valid ROS name (letters, digits, _ and / separators)")
        return s if s.startswith("/") else "/" + s


def _check_section(chk: _Checker, section: str, raw: Any) -> dict[str, Any]:
    cls = _SECTIONS[section]
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise chk.fail(section, f"must be a mapping of settings, got {type(raw).__name__}")
    known = {f.name for f in fields(cls)}
    for key in raw:
        if key not in known:
            raise chk.fail(f"{section}.{key}", f"unknown setting; valid ones: {', '.join(sorted(known))}")
    out: dict[str, Any] = {}
    for key, v in raw.items():
        name = f"{section}.{key}"
        out[key] = _check_value(chk, section, key, name, v)
    return out


def _check_value(chk: _Checker, section: str, key: str, name: str, v: Any) -> Any:  # noqa: C901 - a table
    if section == "topics":
        return chk.topic(name, v)
    if section == "identity":
        return chk.identity(name, v, allow_empty=key == "site")
    if key in ("host",):
        return chk.string(name, v)
    if key == "port":
        return chk.port(name, v)
    if key in ("connect_timeout_s", "reply_timeout_s", "period_s", "flush_interval_s"):
        return chk.positive_float(name, v)
    if key in ("enabled", "stop_at_eos", "overlap_host", "speculate", "allow_remote"):
        return chk.boolean(name, v)
    if key == "max_ctx":
        return chk.positive_int(name, v, maximum=1 << 20)
    if key in ("max_queue", "sliding_window", "max_new_tokens_limit", "max_request_bytes"):
        return chk.positive_int(name, v)
    if key == "on_overflow":
        if v not in OVERFLOW_POLICIES:
            raise chk.fail(name, f"must be one of {', '.join(OVERFLOW_POLICIES)}, got {v!r}")
        return v
    if key == "path":
        return chk.string(name, v)
    raise chk.fail(name, "unknown setting")  # pragma: no cover - guarded by the known-keys check


def config_from_dict(raw: Any, source: str = "daemon.yaml") -> DaemonConfig:
    """Validate a parsed YAML mapping into a `DaemonConfig`."""
    chk = _Checker(source)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise chk.fail("(top level)", f"must be a mapping of settings, got {type(raw).__name__}")
    top = {f.name for f in fields(DaemonConfig)}
    kwargs: dict[str, Any] = {}
    for key, v in raw.items():
        if key not in top:
            raise chk.fail(str(key), f"unknown setting; valid ones: {', '.join(sorted(top))}")
        if key in _SECTIONS:
            kwargs[key] = _SECTIONS[key](**_check_section(chk, key, v))
            if key == "session" and "sliding_window" in (v or {}):
                s = kwargs[key]
                if s.sliding_window >= s.max_ctx:  # unset, the window is clamped to max_ctx / 2 instead
                    raise chk.fail("session.sliding_window",
                                   f"must be smaller than session.max_ctx ({s.max_ctx}), got {s.sliding_window}")
        elif key == "warmup_steps":
            kwargs[key] = chk.non_negative_int(key, v)
        else:
            kwargs[key] = chk.string(key, v)
    cfg = DaemonConfig(**kwargs)
    return check_consistency(cfg, source)


def check_consistency(cfg: DaemonConfig, source: str = "daemon.yaml") -> DaemonConfig:
    """Checks across fields (run again after command-line overrides)."""
    chk = _Checker(source)
    if cfg.device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", cfg.device):
        raise chk.fail("device", f"must be auto, cpu, cuda or cuda:N, got {cfg.device!r}")
    if cfg.metrics.enabled and cfg.metrics.port == cfg.bridge.port and cfg.metrics.host == cfg.bridge.host:
        raise chk.fail("metrics.port", f"{cfg.metrics.port} is also bridge.port; give the metrics endpoint its own port")
    topics = list(asdict(cfg.topics).values())
    if len(set(topics)) != len(topics):
        raise chk.fail("topics", "every topic/service name must be different")
    return cfg


def load_config(path: str | Path | None) -> DaemonConfig:
    """Read and validate a daemon YAML file; None gives the defaults."""
    if path is None:
        return DaemonConfig()
    path = Path(path)
    if not path.exists():
        raise ConfigError("--config", f"{path} does not exist; pass a YAML file such as configs/daemon.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(path.name, f"is not valid YAML{where}; fix the syntax") from None
    return config_from_dict(raw, path.name)


def apply_overrides(cfg: DaemonConfig, **overrides: Any) -> DaemonConfig:
    """Command-line overrides (None = keep). Keys: model, backend, device, gpu, host, port,
    metrics_port (0 disables metrics), runlog ("" or "none" disables the run log), max_ctx, robot, site."""
    chk = _Checker("command line")
    o = {k: v for k, v in overrides.items() if v is not None}
    top = {k: chk.string(f"--{k}", o[k]) for k in ("model", "backend", "device", "gpu") if k in o}
    cfg = replace(cfg, **top)
    if "host" in o:
        cfg = replace(cfg, bridge=replace(cfg.bridge, host=chk.string("--host", o["host"])))
    if "port" in o:
        cfg = replace(cfg, bridge=replace(cfg.bridge, port=chk.port("--port", o["port"])))
    if "metrics_port" in o:
        port = chk.port("--metrics-port", o["metrics_port"], allow_zero=True)
        cfg = replace(cfg, metrics=replace(cfg.metrics, port=port or cfg.metrics.port, enabled=port != 0))
    if "runlog" in o:
        off = str(o["runlog"]).strip().lower() in ("", "none", "off")
        cfg = replace(cfg, runlog=replace(cfg.runlog, enabled=not off, path=cfg.runlog.path if off else o["runlog"]))
    if "max_ctx" in o:
        cfg = replace(cfg, session=replace(cfg.session, max_ctx=chk.positive_int("--max-ctx", o["max_ctx"])))
    if "robot" in o:
        cfg = replace(cfg, identity=replace(cfg.identity, robot=chk.identity("--robot", o["robot"])))
    if "site" in o:
        cfg = replace(cfg, identity=replace(cfg.identity, site=chk.identity("--site", o["site"], allow_empty=True)))
    return check_consistency(cfg, "command line")


def identity_labels(identity: IdentityConfig, hostname: str | None = None) -> dict[str, str]:
    """The constant labels for the metrics: {"robot": ..., "site": ...} (site only when set).
    `robot: auto` becomes the host name, cut to IDENTITY_RE (a fleet should name robots itself)."""
    robot = identity.robot
    if robot == "auto":
        import socket

        raw = (hostname if hostname is not None else socket.gethostname()).split(".")[0]
        robot = re.sub(r"[^A-Za-z0-9_.-]", "-", raw).lstrip("_.-")[:63] or "robot"
    out = {"robot": robot}
    if identity.site:
        out["site"] = identity.site
    return out
