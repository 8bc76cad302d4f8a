"""The token of a graphed decode step, read back through mapped host memory instead of a copy and a sync.

Unfused, a step's token reaches the host by `.item()`: a device-to-host copy enqueued after the graph, then a
stream synchronisation. With the greedy tail (csrc/bf16_gemv.cu) the step's last kernel writes the token and the
step's number into a pinned host pair [token, seq] through its mapped device address; the host polls the pair
(the extension's `wait_mapped`, with the GIL released as torch's .item() releases it while it waits: a poll in
Python held the GIL, and the daemon's bridge thread, sending the previous token meanwhile, waited for it).

Why a step number and not a flag: the host counts the steps it launched (`arm`) and waits for exactly that
number, and overwrites the number of the step's pair before each launch, so a pair left from an earlier step can
never pass for this one. Should a step run outside the count (it would never write the awaited number), the wait
returns once the stream has finished; the token is then read from the device by copy, and the count restarts from
the device's number (`rebase`).

Why PAIRS pairs: the decoder may queue step n + 1 before the host has read step n (the daemon's `session.speculate`,
the pipelined timing loop). Step n writes pair n % PAIRS, so the step behind it writes the other pair, and arming it
does not invalidate the one the host is still waiting on. With one step queued at most, a pair is armed again only
after the host read it.
"""

from __future__ import annotations

from collections.abc import Callable

PAIRS = 2  # mapped [token, step] pairs (csrc/greedy_tail.h, kPairs): steps the host may have on the device at once


class MappedReadback:
    """The host half of the mapped readback: PAIRS pinned [token, seq] pairs, the count of launched steps, and
    `wait(n)` -> the token of step n from pair n % PAIRS, or None when the device finished without step n writing
    it."""

    def __init__(self, host, device_seq, wait: Callable[[int], int | None]):
        # host: pinned CPU int64 [2 * PAIRS]; device_seq: the device's step count (a CUDA int64 [1] view)
        self.host, self.device_seq, self.wait = host, device_seq, wait
        self.pairs = host.numpy().reshape(PAIRS, 2)
        self.pairs[:] = (0, -1)
        self.launched = 0

    def arm(self) -> int:
        """Before a launch: the number the launched step will write. Invalidates that step's pair first."""
        self.launched += 1
        self.pairs[self.launched % PAIRS, 1] = -1
        return self.launched

    def rebase(self) -> None:
        """Count from the device's number (after steps this reader did not launch: warm-up, a lost count)."""
        self.launched = int(self.device_seq.item())  # a sync: never inside a timed step

    def token(self, n: int, device_token) -> int:
        """Step `n`'s token: from its pair, or (out of count) by copy from `device_token` (the step's history slot,
        which a step queued behind it does not touch), then rebase."""
        tok = self.wait(n)
        if tok is None:
            tok = int(device_token.item())
            self.rebase()
        return tok


class PendingToken:
    """What `FastDecoder._launch_step` returns with the mapped readback: `int()` waits for the token
    (the timing module's host read, `edgeprof.timing._read_token`)."""

    __slots__ = ("device_token", "n", "reader")

    def __init__(self, reader: MappedReadback, n: int, device_token):
        self.reader, self.n, self.device_token = reader, n, device_token

    def __int__(self) -> int:
        return self.reader.token(self.n, self.device_token)
