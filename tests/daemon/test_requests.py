"""Request validation: every malformed kind gets its stable code; the parser never
raises anything but RequestError (hypothesis); valid requests round-trip."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeprof.daemon.requests import (
    ERROR_CODES,
    MAX_ID_CHARS,
    CancelRequest,
    GenerateRequest,
    PingRequest,
    parse_request,
)
from edgeprof.errors import RequestError

OK = {"id": "r1", "prompt": "hello", "max_new_tokens": 8}


def _with(**kw):
    d = dict(OK)
    for k, v in kw.items():
        if v is _DROP:
            d.pop(k, None)
        else:
            d[k] = v
    return json.dumps(d)


_DROP = object()

# (label, raw message, expected code). Each is a distinct way a robot can get it wrong.
MALFORMED = [
    ("not json", "{id: r1", "invalid_json"),
    ("empty message", "", "invalid_json"),
    ("NaN constant", '{"id":"a","prompt":"x","max_new_tokens":1,"deadline_ms":NaN}', "invalid_json"),
    ("deep nesting", "[" * 30_000 + "]" * 30_000, "invalid_json"),
    ("trailing data", _with() + " {}", "invalid_json"),
    ("array not object", '["id","prompt"]', "not_object"),
    ("string not object", '"hello"', "not_object"),
    ("duplicate key", '{"id":"a","id":"b","prompt":"x","max_new_tokens":1}', "duplicate_key"),
    ("unknown field", _with(temperature=0.7), "unknown_field"),
    ("missing id", _with(id=_DROP), "missing_id"),
    ("id not a string", _with(id=17), "invalid_id"),
    ("id empty", _with(id=""), "invalid_id"),
    ("id with control chars", _with(id="a\nb"), "invalid_id"),
    ("id too long", _with(id="x" * (MAX_ID_CHARS + 1)), "id_too_long"),
    ("no prompt or messages", _with(prompt=_DROP), "missing_prompt"),
    ("prompt and messages", _with(messages=[{"role": "user", "content": "hi"}]), "conflicting_fields"),
    ("prompt not a string", _with(prompt=["hello"]), "invalid_type"),
    ("prompt empty", _with(prompt="   "), "empty_prompt"),
    ("lone surrogate in prompt", '{"id":"a","prompt":"x\\ud800y","max_new_tokens":1}', "invalid_utf8"),
    ("lone surrogate in id", '{"id":"a\\udc80","prompt":"x","max_new_tokens":1}', "invalid_utf8"),
    ("lone surrogate in cancel", '{"cancel":"\\ud800"}', "invalid_utf8"),
    ("messages not a list", _with(prompt=_DROP, messages="hi"), "invalid_messages"),
    ("messages empty", _with(prompt=_DROP, messages=[]), "invalid_messages"),
    ("message bad role", _with(prompt=_DROP, messages=[{"role": "robot", "content": "hi"}]), "invalid_messages"),
    ("message missing content", _with(prompt=_DROP, messages=[{"role": "user"}]), "invalid_messages"),
    ("message content not text", _with(prompt=_DROP, messages=[{"role": "user", "content": 3}]), "invalid_messages"),
    ("missing max_new_tokens", _with(max_new_tokens=_DROP), "missing_field"),
    ("max_new_tokens a string", _with(max_new_tokens="8"), "invalid_type"),
    ("max_new_tokens a float", _with(max_new_tokens=8.5), "invalid_type"),
    ("max_new_tokens a boolean", _with(max_new_tokens=True), "invalid_type"),
    ("max_new_tokens zero", _with(max_new_tokens=0), "invalid_max_new_tokens"),
    ("max_new_tokens negative", _with(max_new_tokens=-5), "invalid_max_new_tokens"),
    ("max_new_tokens huge", _with(max_new_tokens=10**12), "max_new_tokens_too_large"),
    ("reset not a boolean", _with(reset="yes"), "invalid_type"),
    ("deadline a string", _with(deadline_ms="fast"), "invalid_deadline"),
    ("deadline negative", _with(deadline_ms=-1), "invalid_deadline"),
    ("deadline absurd", _with(deadline_ms=1e12), "invalid_deadline"),
    ("cancel not a string", json.dumps({"cancel": 5}), "invalid_id"),
    ("cancel with a prompt", json.dumps({"cancel": "r1", "prompt": "x"}), "conflicting_fields"),
    ("too large", _with(prompt="x" * 70_000), "request_too_large"),
]


@pytest.mark.parametrize("label,raw,code", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_request_gets_its_code(label, raw, code):
    with pytest.raises(RequestError) as info:
        parse_request(raw, max_new_tokens_limit=1024)
    assert info.value.code == code, f"{label}: {info.value.code}: {info.value}"
    assert code in ERROR_CODES
    msg = str(info.value)
    assert msg and "\n" not in msg and len(msg) < 300


def test_there_are_at_least_15_distinct_codes_for_malformed_requests():
    assert len({code for _, _, code in MALFORMED}) >= 15


def test_invalid_utf8_bytes():
    with pytest.raises(RequestError) as info:
        parse_request(b'{"id":"a","prompt":"\xff\xfe","max_new_tokens":1}')
    assert info.value.code == "invalid_utf8"


def test_messages_that_name_the_field():
    with pytest.raises(RequestError, match="max_new_tokens"):
        parse_request(_with(max_new_tokens=-5))
    with pytest.raises(RequestError, match=r"messages\[1\]\.role"):
        parse_request(_with(prompt=_DROP, messages=[{"role": "user", "content": "a"}, {"role": "x", "content": "b"}]))


def test_valid_forms():
    r = parse_request(json.dumps({"id": "a", "messages": [{"role": "system", "content": "be brief"},
                                                          {"role": "user", "content": "héllo ✓"}],
                                  "max_new_tokens": 4, "reset": True, "deadline_ms": 25}))
    assert isinstance(r, GenerateRequest)
    assert r.messages == (("system", "be brief"), ("user", "héllo ✓")) and r.reset and r.deadline_ms == 25.0
    c = parse_request('{"cancel": "a", "id": "c1"}')
    assert c == CancelRequest(target="a", id="c1")
    assert parse_request(b'{"id":"b","prompt":"x","max_new_tokens":1}').prompt == "x"
    assert parse_request('{"ping": "p1"}') == PingRequest(token="p1")


def test_ping_takes_only_its_token():
    with pytest.raises(RequestError, match="ping") as e:
        parse_request('{"ping": "p1", "id": "x"}')
    assert e.value.code == "conflicting_fields"
    with pytest.raises(RequestError, match='"ping"') as e:
        parse_request('{"ping": 3}')
    assert e.value.code == "invalid_id"


# --- fuzzing -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
field_values = {
    "id": st.one_of(st.text(max_size=140), st.integers(), st.none()),
    "prompt": st.one_of(st.text(max_size=50), st.integers(), st.lists(st.text(max_size=3), max_size=2)),
    "messages": st.one_of(json_values, st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "bot", 3]), "content": st.one_of(st.text(max_size=10), st.none())}),
        max_size=3)),
    "max_new_tokens": st.one_of(st.integers(-5, 2000), st.floats(allow_nan=False), st.text(max_size=3), st.booleans()),
    "reset": json_values,
    "deadline_ms": st.one_of(st.floats(allow_nan=False), st.integers(), st.text(max_size=3)),
    "cancel": st.one_of(st.text(max_size=10), st.integers()),
    "extra": json_values,
}
request_like = st.dictionaries(st.sampled_from(sorted(field_values)), st.nothing(), max_size=0).flatmap(
    lambda _: st.sets(st.sampled_from(sorted(field_values)), max_size=6)).flatmap(
    lambda keys: st.fixed_dictionaries({k: field_values[k] for k in keys}))


def _parse_or_error(raw):
    try:
        return parse_request(raw, max_new_tokens_limit=1024)
    except RequestError as exc:
        assert exc.code in ERROR_CODES
        return None


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.binary()))
def test_fuzz_arbitrary_text_and_bytes(raw):
    _parse_or_error(raw)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_fuzz_arbitrary_json(value):
    _parse_or_error(json.dumps(value))


@settings(max_examples=300, deadline=None)
@given(request_like)
def test_fuzz_request_shaped_objects(obj):
    r = _parse_or_error(json.dumps(obj))
    if r is not None:  # accepted: its canonical form parses back to the same request
        assert parse_request(json.dumps(r.to_json_dict())) == r


@settings(max_examples=200, deadline=None)
@given(st.builds(
    GenerateRequest,
    id=st.text(st.characters(codec="utf-8", categories=["L", "N", "P"]), min_size=1, max_size=MAX_ID_CHARS),
    max_new_tokens=st.integers(1, 1024),
    prompt=st.text(st.characters(codec="utf-8"), max_size=40).filter(lambda s: s.strip()),
    reset=st.booleans(),
    deadline_ms=st.one_of(st.none(), st.floats(0.001, 600_000)),
))
def test_valid_requests_round_trip(req):
    assert parse_request(json.dumps(req.to_json_dict())) == req
    assert parse_request(json.dumps(req.to_json_dict(), ensure_ascii=False).encode()) == req
