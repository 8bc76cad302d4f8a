"""The one exception tree of edgeprof.

Every error a user can cause is an `EdgeprofError`: the CLI prints its message on
one line and exits non-zero, with no traceback. Messages name the bad value and say
what to do next. Subclasses group errors by the stage that raises them, so callers
can catch exactly what they can handle (the daemon, for example, turns a
`RequestError` into an error record and keeps serving).
"""

from __future__ import annotations

from collections.abc import Iterable


class EdgeprofError(Exception):
    """Base of every error edgeprof raises on purpose. `exit_code` is for the CLI."""

    exit_code = 2


class ConfigError(EdgeprofError):
    """A user-supplied value (CLI flag, YAML field, catalog entry) is invalid."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class UnknownChoiceError(ConfigError):
    """A value is not one of a fixed set; the message lists the valid ones."""

    def __init__(self, field: str, value: object, choices: Iterable[str]) -> None:
        self.value = value
        self.choices = sorted(choices)
        super().__init__(field, f"unknown value {value!r}; valid choices: {', '.join(self.choices)}")


class ContextLengthError(ConfigError):
    """A context length is negative, zero or beyond the model's maximum."""


class ModelLoadError(EdgeprofError):
    """Weights or a tokenizer could not be obtained or loaded."""


class BackendUnavailableError(EdgeprofError):
    """A registered backend cannot run on this machine (missing package, no GPU...)."""

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        self.reason = reason
        super().__init__(f"backend {backend!r} is unavailable here: {reason}")


class CorrectnessError(EdgeprofError):
    """A backend disagrees with the bf16 reference; its timings must not count."""


class MeasurementError(EdgeprofError):
    """A timing or telemetry measurement failed or is not meaningful."""


class BridgeError(EdgeprofError):
    """The ROS bridge connection failed (connect timeout, drop, protocol error)."""


class BridgeTimeoutError(BridgeError):
    """A bridge operation did not finish within its timeout."""


class RequestError(EdgeprofError):
    """A robot's request is malformed or cannot be served. Carries a stable code."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class DaemonStateError(EdgeprofError):
    """A lifecycle transition was asked for in the wrong state."""


class RunLogError(EdgeprofError):
    """The run log cannot be opened, written or read."""


class MetricsError(EdgeprofError):
    """The metrics endpoint cannot start (port in use, bad bind address...)."""


class DeviceMemoryError(EdgeprofError):
    """The model (weights + KV cache at the asked context) does not fit the GPU's free memory."""
