"""The step's greedy tail: the host half of the mapped readback (pure logic, here) and the fused kernel
against torch's argmax path (on a CUDA device only: edgeprof.fast.greedy_check)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from edgeprof.fast.readback import PAIRS, MappedReadback, PendingToken  # noqa: E402


def pair_wait(host):
    """A stand-in for the extension's wait_mapped, on plain CPU pairs: the token once step n's pair holds its
    number, else None (as if the stream had finished without it)."""
    pairs = host.view(PAIRS, 2)
    return lambda n: int(pairs[n % PAIRS, 0]) if int(pairs[n % PAIRS, 1]) == n else None


def _host(*pairs):
    return torch.tensor([v for p in pairs for v in p])


def test_arm_invalidates_the_steps_pair_and_counts():
    host, seq = _host((11, 1), (12, 2)), torch.tensor([1])
    rb = MappedReadback(host, seq, pair_wait(host))
    assert host.tolist() == [0, -1] * PAIRS  # a fresh reader trusts nothing in the pairs
    host[:] = _host((12, 2), (11, 1))
    assert rb.arm() == 1 and host.view(PAIRS, 2)[1, 1] == -1  # an earlier step's pair cannot pass for the armed one
    host.view(PAIRS, 2)[1] = torch.tensor([12, 1])  # the device wrote step 1
    assert int(PendingToken(rb, 1, torch.tensor([12]))) == 12


def test_a_step_queued_behind_an_unread_one_leaves_its_pair_alone():
    host, seq = _host((0, -1), (0, -1)), torch.tensor([0])
    rb = MappedReadback(host, seq, pair_wait(host))
    first = rb.arm()
    host.view(PAIRS, 2)[first % PAIRS] = torch.tensor([40, first])  # step 1 done, its token not read yet
    second = rb.arm()  # step 2 queued behind it (pipelined)
    assert rb.token(first, torch.tensor([-9])) == 40  # still from its pair, not by copy
    host.view(PAIRS, 2)[second % PAIRS] = torch.tensor([41, second])
    assert rb.token(second, torch.tensor([-9])) == 41 and rb.launched == 2


def test_a_lost_count_falls_back_to_the_device_token_and_rebases():
    host, seq = _host((0, -1), (0, -1)), torch.tensor([5])  # the device ran 5 steps; this reader launched none
    rb = MappedReadback(host, seq, pair_wait(host))
    n = rb.arm()  # awaits 1, the device writes 6
    host.view(PAIRS, 2)[6 % PAIRS] = torch.tensor([77, 6])
    assert rb.token(n, torch.tensor([77])) == 77  # by copy
    assert rb.launched == 5  # counts from the device's number again
    assert rb.arm() == 6


def test_the_wait_is_asked_for_the_armed_step():
    host, seq = _host((0, -1), (0, -1)), torch.tensor([4])
    asked = []
    rb = MappedReadback(host, seq, lambda n: asked.append(n) or (31 if n == 1 else None))
    assert rb.token(rb.arm(), torch.tensor([0])) == 31 and asked == [1]
    assert rb.token(rb.arm(), torch.tensor([8])) == 8 and rb.launched == 4


def test_bad_settings_name_the_variable(monkeypatch):
    from edgeprof.fast import model

    monkeypatch.setenv(model.TAIL_ENV, "maybe")
    with pytest.raises(ValueError, match=model.TAIL_ENV):
        model.greedy_tail(None)
    monkeypatch.setenv(model.TAIL_ENV, "off")
    monkeypatch.setenv(model.READBACK_ENV, "dma")
    with pytest.raises(ValueError, match=model.READBACK_ENV):
        model.greedy_tail(None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused kernel needs a CUDA device")
def test_fused_tail_matches_torch_argmax_on_every_variant():
    from edgeprof.fast import greedy_check, w4cuda

    if w4cuda.load_extension() is None:
        pytest.skip(f"edgeprof CUDA extension unavailable: {w4cuda.build_error()}")
    failed = [r for r in greedy_check.check_all() if not r["passed"]]
    assert not failed, failed


def test_the_slot_count_matches_the_kernels():
    # the decoder allocates SLOTS + 1 int64 of scratch; the binding checks kSlots + 1 and the finish kernel reads one
    # slot per lane of a warp
    import re

    from edgeprof.fast import model
    from edgeprof.fast.w4cuda import CSRC

    src = (CSRC / "greedy_tail.h").read_text()
    assert int(re.search(r"constexpr int kSlots = (\d+);", src).group(1)) == model.SLOTS == 32
    assert int(re.search(r"constexpr int kPairs = (\d+);", src).group(1)) == PAIRS  # the mapped pairs' ring

