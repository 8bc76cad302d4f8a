"""Session policy: conversation continuation, reset, overflow policies, EOS, the floor."""

from __future__ import annotations

import pytest

from edgeprof.daemon.config import SessionConfig
from edgeprof.daemon.requests import GenerateRequest
from edgeprof.daemon.session import FloorModel, RequestStats, Session
from edgeprof.daemon.text import ByteCodec
from edgeprof.errors import RequestError
from edgeprof.floor import compute_floor, parse_format
from edgeprof.hardware_loader import gpu
from edgeprof.shape_loader import preset

from .scripted import ScriptedDecoder


def _session(max_ctx=64, eos_after=None, async_launch=True, ahead=0, **cfg) -> Session:
    dec = ScriptedDecoder(max_ctx=max_ctx, eos_after=eos_after, async_launch=async_launch, ahead=ahead)
    codec = ByteCodec(256)
    codec.eos_ids = frozenset({0})
    floor = FloorModel(preset("tiny-test"), parse_format("bf16"), gpu("cpu"))
    return Session(dec, codec, floor, SessionConfig(**cfg))


def _run(s: Session, rid: str, prompt: str, n: int, reset: bool = False):
    req = GenerateRequest(id=rid, max_new_tokens=n, prompt=prompt, reset=reset)
    return list(s.generate(req, s.encode(req), lambda: None))


def test_floor_model_matches_edgeprof_floor():
    shape, fmt, spec = preset("smollm2-135m"), parse_format("gptq4-g128"), gpu("l4")
    fm = FloorModel(shape, fmt, spec)
    for ctx in (1, 100, 2048, 8192):
        ref = compute_floor(shape, fmt, ctx, spec.bandwidth_bytes_per_s)
        assert fm.floor_ms(ctx) == pytest.approx(ref.floor_ms, rel=1e-12)
        assert fm.touched_floor_ms(ctx) == pytest.approx(ref.touched_floor_ms, rel=1e-12)


def test_generate_records_positions_and_floor():
    s = _session()
    evs = _run(s, "a", "hi", 4)
    assert len(evs) == 4 and s.end_reason == "length"
    assert [e.position for e in evs] == [2, 3, 4, 5]
    assert evs[1].floor_ms == pytest.approx(s.floor.floor_ms(3))
    assert evs[0].fraction == pytest.approx(evs[0].floor_ms / evs[0].latency_ms)
    assert "".join(e.text for e in evs) == "".join(chr(e.token_id) for e in evs)


def test_conversation_continues_after_the_pending_token():
    s = _session()
    first = _run(s, "a", "hi", 3)
    dec = s.decoder
    assert s.pending == first[-1].token_id and dec.position == 2 + 2  # last token not yet fed
    _run(s, "b", "yo", 2)
    # the second prefill starts with the first request's last token, then the new prompt
    assert dec.prefills[-1] == [first[-1].token_id, ord("y"), ord("o")]
    assert dec.cache[:4] == [ord("h"), ord("i"), first[0].token_id, first[1].token_id]
    assert s.history == dec.cache


def test_reset_flag_starts_from_an_empty_cache():
    s = _session()
    _run(s, "a", "hi", 3)
    _run(s, "b", "yo", 2, reset=True)
    assert s.decoder.prefills[-1] == [ord("y"), ord("o")]
    assert s.decoder.cache[:2] == [ord("y"), ord("o")]


def test_eos_stops_generation():
    s = _session(eos_after=4)
    evs = _run(s, "a", "hi", 10)
    assert s.end_reason == "eos" and evs[-1].token_id == 0 and len(evs) == 3


def test_prompt_longer_than_context():
    s = _session(max_ctx=16)
    with pytest.raises(RequestError) as info:
        s.encode(GenerateRequest(id="a", max_new_tokens=1, prompt="x" * 16))
    assert info.value.code == "prompt_too_long"


def test_overflow_error_is_clear_and_keeps_the_session():
    s = _session(max_ctx=16)
    with pytest.raises(RequestError) as info:
        _run(s, "a", "x" * 10, 10)
    assert info.value.code == "context_overflow" and "reset" in str(info.value)
    assert s.position == 16
    with pytest.raises(RequestError) as info:  # a new prompt that does not fit
        _run(s, "b", "more", 2)
    assert info.value.code == "context_overflow"
    assert len(_run(s, "c", "fresh", 2, reset=True)) == 2


def test_overflow_reset_restarts_from_the_current_request():
    s = _session(max_ctx=16, on_overflow="reset")
    _run(s, "a", "abcdefgh", 4)  # 8 prompt + 3 steps in the cache, 1 pending
    assert s.position == 11
    evs = _run(s, "c", "klmno", 3)  # 1 + 5 more do not fit -> the cache restarts with this prompt
    assert evs[0].context_event == "reset" and s.decoder.prefills[-1] == list(b"klmno")
    # mid-generation overflow: restart from this request's prompt + output
    s2 = _session(max_ctx=16, on_overflow="reset")
    _run(s2, "a", "abcdefghij", 3)
    evs = _run(s2, "b", "kl", 6)
    assert [e.context_event for e in evs].count("reset") == 1
    assert s2.decoder.cache[:2] == list(b"kl")


def test_overflow_sliding_window_keeps_the_last_tokens():
    s = _session(max_ctx=16, on_overflow="sliding_window", sliding_window=6)
    evs = _run(s, "a", "abcdefghij", 12)
    assert len(evs) == 12
    slid = [e for e in evs if e.context_event == "slid"]
    assert slid and all(e.position <= 16 for e in evs)
    # after a slide the cache holds exactly the window (the tail of the conversation)
    i = evs.index(slid[0])
    assert slid[0].position == 6 and evs[i - 1].position == 16
    assert s.history == s.decoder.cache


def test_request_stats_summary():
    st = RequestStats()
    s = _session()
    for ev in _run(s, "a", "hi", 5):
        st.add(ev, missed=ev.latency_ms > 1.5)
    out = st.summary()
    assert out["n_tokens"] == 5 and out["ttft_ms"] == 2.0 and out["p50_ms"] == 1.0
    assert out["deadline_misses"] == 1 and out["fraction_median"] > 0


# --- overlap_host: step N+1 is launched before token N is handed over ------------------------
def _records(evs):
    return [(e.token_id, e.position, e.text, e.context_event) for e in evs]


def test_overlap_launches_the_next_step_before_yielding():
    s = _session()
    req = GenerateRequest(id="a", max_new_tokens=4, prompt="hi")
    seen = [(ev.position, s.decoder.position) for ev in s.generate(req, s.encode(req), lambda: None)]
    # while token N is with the caller, step N+1 is already on the device; not after the last
    assert seen == [(2, 3), (3, 4), (4, 5), (5, 5)]


def test_no_overlap_where_the_launch_is_synchronous():
    # On the CPU the launch computes the step: launching N+1 first would hold token N back a step.
    s = _session(async_launch=False, overlap_host=True)
    req = GenerateRequest(id="a", max_new_tokens=4, prompt="hi")
    seen = [(ev.position, s.decoder.position) for ev in s.generate(req, s.encode(req), lambda: None)]
    assert seen == [(2, 2), (3, 3), (4, 4), (5, 5)]


def test_each_token_is_stamped_when_read_in_wall_clock_ns():
    import time

    s = _session()
    t0 = time.time_ns()
    evs = _run(s, "a", "hi", 4)
    stamps = [e.ready_unix_ns for e in evs]
    assert t0 <= stamps[0] and stamps == sorted(stamps) and stamps[-1] <= time.time_ns()


@pytest.mark.parametrize("policy", ["error", "reset", "sliding_window"])
def test_overlap_on_and_off_give_the_same_records_and_cache(policy):
    # the second request overflows the 16-token context for the two other policies
    runs = [_conversation(_session(max_ctx=16, on_overflow=policy, sliding_window=6, overlap_host=overlap),
                          [("a", "hello", 6, False), ("b", "abc", 8, False)]) for overlap in (True, False)]
    assert runs[0] == runs[1]


def _conversation(s: Session, requests) -> tuple:
    """Requests (id, prompt, max_new_tokens, reset) in turn -> what a run must reproduce: the records, the error codes,
    the cache, history, pending token and prefills."""
    evs = []
    for rid, prompt, n, reset in requests:
        try:
            evs += _run(s, rid, prompt, n, reset=reset)
        except RequestError as exc:
            evs.append(exc.code)
    return (_records(e for e in evs if not isinstance(e, str)), [e for e in evs if isinstance(e, str)],
            s.decoder.cache, s.history, s.pending, s.decoder.prefills)


def test_closing_the_generator_early_keeps_cache_and_pending_consistent():
    s = _session()
    req = GenerateRequest(id="a", max_new_tokens=10, prompt="hi")
    gen = s.generate(req, s.encode(req), lambda: None)
    next(gen), next(gen)
    gen.close()  # step 3 was already launched: it is accounted for, not lost
    assert s.history == s.decoder.cache and s.pending == s.decoder.last
    assert s.position == len(s.history) == 2 + 2  # prompt, then tokens 1 and 2 fed; token 3 pending
    pending = s.pending
    _run(s, "b", "yo", 2)
    assert s.decoder.prefills[-1] == [pending, ord("y"), ord("o")]  # the conversation continues from it
    assert s.history == s.decoder.cache


@pytest.mark.parametrize(("overlap", "emitted"), [(False, 3), (True, 4)])
def test_a_cancel_during_host_work_stops_after_the_step_on_the_device(overlap, emitted):
    s = _session(overlap_host=overlap)
    req = GenerateRequest(id="a", max_new_tokens=10, prompt="hi")
    cancelled = []
    evs = []
    for ev in s.generate(req, s.encode(req), lambda: "cancelled" if cancelled else None):
        evs.append(ev)
        if len(evs) == 3:
            cancelled.append(True)  # arrives while the caller publishes token 3
    assert len(evs) == emitted and s.end_reason == "cancelled"
    assert s.history == s.decoder.cache and s.pending == evs[-1].token_id


# --- speculate: step N+2 queued behind N+1 where the decoder can read it alone and roll it back ----------------
def test_speculation_keeps_two_steps_on_the_device_within_the_request():
    s = _session(ahead=1)
    req = GenerateRequest(id="a", max_new_tokens=5, prompt="hi")
    seen = [(ev.position, s.decoder.position) for ev in s.generate(req, s.encode(req), lambda: None)]
    # while token N is with the caller, N+1 and N+2 are launched; never past the 5 tokens asked for
    assert seen == [(2, 4), (3, 5), (4, 6), (5, 6), (6, 6)]
    assert s.decoder.rolled_back == []  # a reply that ends at its length queued nothing past it


def test_speculation_is_off_without_the_decoder_or_the_setting():
    for s in (_session(ahead=0), _session(ahead=1, speculate=False)):
        req = GenerateRequest(id="a", max_new_tokens=3, prompt="hi")
        assert [s.decoder.position for _ in s.generate(req, s.encode(req), lambda: None)] == [3, 4, 4]


@pytest.mark.parametrize("policy", ["error", "reset", "sliding_window"])
@pytest.mark.parametrize("eos_after", [None, 9])
def test_speculation_on_and_off_give_the_same_records_and_cache(policy, eos_after):
    requests = [("a", "hello", 6, False), ("b", "abc", 8, False), ("c", "x", 3, eos_after is not None)]
    runs = [_conversation(_session(max_ctx=16, on_overflow=policy, sliding_window=6, eos_after=eos_after, ahead=ahead),
                          requests) for ahead in (1, 0)]
    assert runs[0] == runs[1]


def test_a_reply_ending_at_eos_rolls_back_the_step_queued_behind_it():
    s = _session(eos_after=5, ahead=1)
    evs = _run(s, "a", "hi", 10)  # the cache reaches 5 after the prompt and 3 fed tokens: the 4th token is EOS
    assert [e.token_id for e in evs][-1] == 0 and s.end_reason == "eos"
    assert s.decoder.rolled_back == [1]  # the step queued behind the EOS, unread
    assert s.history == s.decoder.cache and s.position == len(s.history) and s.pending == 0
    _run(s, "b", "yo", 2)  # the conversation continues from the EOS, as without speculation
    assert s.decoder.prefills[-1] == [0, ord("y"), ord("o")]


def test_a_cancel_with_speculation_emits_the_next_token_and_rolls_back_the_one_behind():
    s = _session(ahead=1)
    req = GenerateRequest(id="a", max_new_tokens=10, prompt="hi")
    cancelled, evs = [], []
    for ev in s.generate(req, s.encode(req), lambda: "cancelled" if cancelled else None):
        evs.append(ev)
        if len(evs) == 3:
            cancelled.append(True)
    assert len(evs) == 4 and s.end_reason == "cancelled"  # as with overlap_host alone
    assert s.decoder.rolled_back == [1]
    assert s.history == s.decoder.cache and s.pending == evs[-1].token_id and s.position == len(s.history)


def test_closing_early_with_speculation_accounts_the_next_step_and_rolls_back_the_rest():
    s = _session(ahead=1)
    req = GenerateRequest(id="a", max_new_tokens=10, prompt="hi")
    gen = s.generate(req, s.encode(req), lambda: None)
    next(gen), next(gen)
    gen.close()
    assert s.decoder.rolled_back == [1]
    assert s.history == s.decoder.cache and s.pending == s.decoder.last and s.position == 2 + 2
