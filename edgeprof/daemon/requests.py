"""Parse and validate a robot's JSON request. Pure: no torch, no I/O.

A request arrives as the `data` of a std_msgs/String on /edgeprof/request:

    {"id": "r1", "prompt": "..." | "messages": [{"role", "content"}, ...],
     "max_new_tokens": 32, "reset": false?, "deadline_ms": 50?}
    {"cancel": "r1", "id": "c1"?}
    {"ping": "p1"}                      (answered by {"pong": "p1"} on the tokens topic)

`parse_request` returns a `GenerateRequest`, `CancelRequest` or `PingRequest`, or raises a
`RequestError` whose `code` is stable (robots may switch on it) and whose message
says what to fix. It never raises anything else, whatever the input (fuzzed with
hypothesis in tests/daemon/test_requests.py). Checks that need the session (a
duplicate id, a prompt longer than the context, a cancel of an unknown id, a full
queue) happen in the service, with codes from the same table.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from edgeprof.errors import RequestError

MAX_ID_CHARS = 128
MAX_DEADLINE_MS = 600_000.0  # ten minutes per token is certainly a mistake
MAX_MESSAGES = 256
ROLES = ("system", "user", "assistant", "tool")
FIELDS = ("id", "prompt", "messages", "max_new_tokens", "reset", "deadline_ms", "cancel", "ping")

# Every error code the daemon sends, and what it means. Stable: robots switch on these.
ERROR_CODES: dict[str, str] = {
    "request_too_large": "the message is larger than session.max_request_bytes",
    "invalid_utf8": "the message is not valid UTF-8 or holds a lone surrogate",
    "invalid_json": "the message is not JSON (or uses NaN/Infinity, or nests too deep)",
    "not_object": "the JSON is not an object",
    "duplicate_key": "a key appears twice in the object",
    "unknown_field": "a field the daemon does not know",
    "missing_id": "no id",
    "invalid_id": "id is not a non-empty string of printable characters",
    "id_too_long": f"id is longer than {MAX_ID_CHARS} characters",
    "missing_prompt": "neither prompt nor messages",
    "conflicting_fields": "fields that exclude each other (prompt and messages, cancel and prompt)",
    "invalid_type": "a field has the wrong JSON type",
    "empty_prompt": "prompt is empty or only whitespace",
    "invalid_messages": "messages is not a list of {role, content} objects",
    "missing_field": "max_new_tokens is missing",
    "invalid_max_new_tokens": "max_new_tokens is zero or negative",
    "max_new_tokens_too_large": "max_new_tokens is above the daemon's limit",
    "invalid_deadline": "deadline_ms is not a positive finite number of milliseconds",
    "duplicate_id": "the id was already used by an earlier request (the record's id is null; "
                    "rejected_id names it: the request already running under that id goes on)",
    "unknown_id": "cancel names an id that is neither queued nor running",
    "prompt_too_long": "the prompt has more tokens than the session's context",
    "context_overflow": "the conversation no longer fits the context (on_overflow: error)",
    "busy": "the request queue is full",
    "no_session": "next_token with nothing to continue from",
    "shutdown": "the daemon is shutting down",
    "bridge_lost": "the bridge dropped while the request was generating",
    "timeout": "the decode worker did not answer in time",
    "out_of_memory": "the GPU ran out of memory during this request; the daemon turns unhealthy",
    "device_error": "the GPU (CUDA) failed during this request; the daemon turns unhealthy",
    "unhealthy": "the daemon had a device failure earlier and serves nothing until it is restarted",
    "internal": "an unexpected failure in the daemon (see its log); the daemon keeps serving",
}


@dataclass(frozen=True)
class GenerateRequest:
    id: str
    max_new_tokens: int
    prompt: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None  # ((role, content), ...)
    reset: bool = False
    deadline_ms: float | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """The canonical JSON form (parse_request(json.dumps(x.to_json_dict())) == x)."""
        out: dict[str, Any] = {"id": self.id, "max_new_tokens": self.max_new_tokens}
        if self.prompt is not None:
            out["prompt"] = self.prompt
        if self.messages is not None:
            out["messages"] = [{"role": r, "content": c} for r, c in self.messages]
        if self.reset:
            out["reset"] = True
        if self.deadline_ms is not None:
            out["deadline_ms"] = self.deadline_ms
        return out


@dataclass(frozen=True)
class CancelRequest:
    target: str  # the id to cancel
    id: str | None = None  # the cancel message's own id, if it gave one

    def to_json_dict(self) -> dict[str, Any]:
        return {"cancel": self.target, **({"id": self.id} if self.id is not None else {})}


def error_record(req_id: str | None, code: str, message: str) -> dict[str, Any]:
    """The error record published on the tokens topic."""
    return {"id": req_id, "error": {"code": code, "message": message}}


def _reject_constant(name: str) -> Any:
    raise RequestError("invalid_json", f"JSON constant {name} is not allowed; send finite numbers")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise RequestError("duplicate_key", f"key {k!r} appears more than once; send each field once")
        out[k] = v
    return out


def _decode(raw: str | bytes, max_bytes: int) -> Any:
    if isinstance(raw, (bytes, bytearray)):
        if len(raw) > max_bytes:
            raise RequestError("request_too_large", f"request is {len(raw)} bytes; the limit is {max_bytes}")
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError("invalid_utf8", f"request is not valid UTF-8 (byte {exc.start}); "
                               "encode the JSON as UTF-8") from None
    elif not isinstance(raw, str):
        raise RequestError("invalid_json", f"request must be a JSON string, got {type(raw).__name__}")
    elif len(raw) > max_bytes:  # chars <= bytes, so this is a cheap lower bound before encoding
        raise RequestError("request_too_large", f"request is over {max_bytes} bytes; send a shorter prompt")
    _check_text("request", raw)
    if len(raw.encode("utf-8")) > max_bytes:
        raise RequestError("request_too_large", f"request is over {max_bytes} bytes; send a shorter prompt")
    try:
        return json.loads(raw, object_pairs_hook=_pairs, parse_constant=_reject_constant)
    except RequestError:
        raise
    except RecursionError:
        raise RequestError("invalid_json", "JSON nests too deeply; send a flat request object") from None
    except (ValueError, TypeError) as exc:
        msg = str(exc).split(":")[0]
        raise RequestError("invalid_json", f"request is not valid JSON ({msg}); send one JSON object") from None


def _check_text(name: str, s: str) -> None:
    """Reject lone surrogates (valid in JSON escapes, not in UTF-8 text)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError("invalid_utf8", f"{name} holds a lone surrogate at character {exc.start}; "
                           "send valid Unicode text") from None


def _id(obj: dict[str, Any], key: str = "id", required: bool = True) -> str | None:
    if key not in obj:
        if required:
            raise RequestError("missing_id", 'request has no "id"; give every request a unique string id')
        return None
    v = obj[key]
    if not isinstance(v, str):
        raise RequestError("invalid_id", f'"{key}" must be a string, got {_json_type(v)}')
    _check_text(key, v)  # first: a lone surrogate is also "unprintable", and the table promises invalid_utf8
    if not v.strip() or not v.isprintable():
        raise RequestError("invalid_id", f'"{key}" must be a non-empty string of printable characters')
    if len(v) > MAX_ID_CHARS:
        raise RequestError("id_too_long", f'"{key}" has {len(v)} characters; the limit is {MAX_ID_CHARS}')
    return v


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def _messages(v: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(v, list) or not v:
        raise RequestError("invalid_messages", '"messages" must be a non-empty array of {"role", "content"} objects')
    if len(v) > MAX_MESSAGES:
        raise RequestError("invalid_messages", f'"messages" has {len(v)} entries; the limit is {MAX_MESSAGES}')
    out = []
    for i, m in enumerate(v):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise RequestError("invalid_messages", f'messages[{i}] must be an object with exactly "role" and "content"')
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise RequestError("invalid_messages", f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise RequestError("invalid_messages", f"messages[{i}].content must be a string, got {_json_type(content)}")
        _check_text(f"messages[{i}].content", content)
        out.append((role, content))
    if not any(c.strip() for _, c in out):
        raise RequestError("empty_prompt", "every message content is empty; say something")
    return tuple(out)


def _max_new_tokens(obj: dict[str, Any], limit: int) -> int:
    if "max_new_tokens" not in obj:
        raise RequestError("missing_field", 'request has no "max_new_tokens"; give the most tokens to generate')
    v = obj["max_new_tokens"]
    if isinstance(v, bool) or not isinstance(v, int):
        raise RequestError("invalid_type", f'"max_new_tokens" must be an integer, got {_json_type(v)}')
    if v <= 0:
        raise RequestError("invalid_max_new_tokens", f'"max_new_tokens" must be at least 1, got {v}')
    if v > limit:
        raise RequestError("max_new_tokens_too_large",
                           f'"max_new_tokens" is {v}; this daemon allows at most {limit} (session.max_new_tokens_limit)')
    return v


def _deadline(obj: dict[str, Any]) -> float | None:
    v = obj.get("deadline_ms")
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise RequestError("invalid_deadline", f'"deadline_ms" must be a number of milliseconds, got {_json_type(v)}')
    if not math.isfinite(v) or v <= 0 or v > MAX_DEADLINE_MS:
        raise RequestError("invalid_deadline",
                           f'"deadline_ms" must be > 0 and <= {MAX_DEADLINE_MS:g} ms per token, got {v!r}')
    return float(v)


@dataclass(frozen=True)
class PingRequest:
    """A robot's readiness probe. Seeing the daemon in the ROS graph is not enough: a message published
    before the bridge's subscriber has matched the robot's publisher is dropped (volatile QoS), so a robot
    pings until the pong comes back before its first real request (ros/robot.py wait_ready)."""

    token: str

    def to_json_dict(self) -> dict[str, Any]:
        return {"ping": self.token}


def _ping(obj: dict[str, Any]) -> PingRequest:
    extra = set(obj) - {"ping"}
    if extra:
        raise RequestError("conflicting_fields", f'a ping message takes only "ping"; drop {", ".join(sorted(extra))}')
    token = _id(obj, "ping")
    assert token is not None
    return PingRequest(token=token)


def _cancel(obj: dict[str, Any]) -> CancelRequest:
    extra = set(obj) - {"cancel", "id"}
    if extra:
        raise RequestError("conflicting_fields", f'a cancel message takes only "cancel" and "id"; '
                           f"drop {', '.join(sorted(extra))}")
    target = _id(obj, "cancel")
    assert target is not None
    return CancelRequest(target=target, id=_id(obj, "id", required=False))


def parse_request(raw: str | bytes, max_new_tokens_limit: int = 1024,
                  max_bytes: int = 65536) -> GenerateRequest | CancelRequest | PingRequest:
    """Validate one request message; raise RequestError(code, message) on any defect."""
    try:
        obj = _decode(raw, max_bytes)
        return _parse_object(obj, max_new_tokens_limit)
    except RequestError:
        raise
    except Exception as exc:  # a validator bug must not take the daemon down
        raise RequestError("internal", f"request could not be validated ({type(exc).__name__})") from exc


def _parse_object(obj: Any, limit: int) -> GenerateRequest | CancelRequest | PingRequest:
    if not isinstance(obj, dict):
        raise RequestError("not_object", f"request must be a JSON object, got {_json_type(obj)}")
    unknown = sorted(k for k in obj if k not in FIELDS)
    if unknown:
        raise RequestError("unknown_field", f"unknown field(s) {', '.join(map(repr, unknown))}; "
                           f"valid fields: {', '.join(FIELDS)}")
    if "cancel" in obj:
        return _cancel(obj)
    if "ping" in obj:
        return _ping(obj)
    req_id = _id(obj)
    assert req_id is not None
    has_p, has_m = "prompt" in obj, "messages" in obj
    if has_p and has_m:
        raise RequestError("conflicting_fields", 'give either "prompt" or "messages", not both')
    if not (has_p or has_m):
        raise RequestError("missing_prompt", 'request needs a "prompt" string or a "messages" array')
    prompt = messages = None
    if has_p:
        prompt = obj["prompt"]
        if not isinstance(prompt, str):
            raise RequestError("invalid_type", f'"prompt" must be a string, got {_json_type(prompt)}')
        _check_text("prompt", prompt)
        if not prompt.strip():
            raise RequestError("empty_prompt", '"prompt" is empty; send some text')
    else:
        messages = _messages(obj["messages"])
    reset = obj.get("reset", False)
    if not isinstance(reset, bool):
        raise RequestError("invalid_type", f'"reset" must be true or false, got {_json_type(reset)}')
    return GenerateRequest(id=req_id, max_new_tokens=_max_new_tokens(obj, limit), prompt=prompt,
                           messages=messages, reset=reset, deadline_ms=_deadline(obj))
