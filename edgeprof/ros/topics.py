"""ROS names and stock types of the edgeprof interface.

Everything a robot needs is a stock type (std_msgs/String carrying JSON, std_srvs/Trigger),
so any ROS 2 robot can talk to the daemon without building an extra package. The
`interfaces/edgeprof_msgs` package holds typed equivalents for robots that do build one.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields

from edgeprof.errors import ConfigError

STRING_TYPE = "std_msgs/msg/String"
TRIGGER_TYPE = "std_srvs/srv/Trigger"

# A ROS 2 fully qualified name: /token(/token)*, tokens of letters, digits and _, not starting with a digit.
_NAME_RE = re.compile(r"^(/[A-Za-z_][A-Za-z0-9_]*)+$")


@dataclass(frozen=True)
class TopicNames:
    """Fully qualified topic and service names (all configurable, e.g. under a robot namespace)."""

    request: str = "/edgeprof/request"  # topic, std_msgs/String, robot -> daemon, JSON request
    tokens: str = "/edgeprof/tokens"  # topic, std_msgs/String, daemon -> robot, one JSON record per token
    next_token: str = "/edgeprof/next_token"  # service, std_srvs/Trigger: decode one more token
    reset: str = "/edgeprof/reset"  # service, std_srvs/Trigger: clear the session's KV cache
    status: str = "/edgeprof/status"  # topic, std_msgs/String, daemon -> robot, periodic JSON

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str) and value and not value.startswith("/"):
                # Relative names resolve against rosbridge's root namespace: make that explicit.
                value = "/" + value
                object.__setattr__(self, f.name, value)
            if not isinstance(value, str) or not _NAME_RE.match(value):
                raise ConfigError(
                    f"topics.{f.name}",
                    f"{value!r} is not a fully qualified ROS name; use something like '/edgeprof/{f.name}'",
                )
        names = [getattr(self, f.name) for f in fields(self)]
        if len(set(names)) != len(names):
            raise ConfigError("topics", f"names must be distinct, got {names}")

    @classmethod
    def with_prefix(cls, prefix: str) -> TopicNames:
        """All five names under `prefix` (e.g. '/robot1/llm' -> '/robot1/llm/request', ...)."""
        prefix = "/" + prefix.strip("/")
        return cls(**{f.name: f"{prefix}/{f.name}" for f in fields(cls)})

    @classmethod
    def from_dict(cls, data: dict | None) -> TopicNames:
        """Build from a config mapping; unknown keys are an error naming the key."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(f"topics.{key}", f"unknown name; valid keys: {', '.join(sorted(known))}")
        return cls(**data)

    def as_dict(self) -> dict[str, str]:
        return asdict(self)
