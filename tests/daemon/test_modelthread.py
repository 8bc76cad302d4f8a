"""ModelThread: one long-lived thread runs load, warm-up and the decode loop in order."""

from __future__ import annotations

import threading

import pytest

from edgeprof.daemon.modelthread import ModelThread


def test_calls_run_in_order_on_one_thread_and_return_results():
    mt = ModelThread()
    try:
        seen = [mt.call(lambda i=i: (i, threading.get_ident())) for i in range(5)]
        assert [i for i, _ in seen] == list(range(5))
        assert {ident for _, ident in seen} == {mt.ident} and mt.ident != threading.get_ident()
    finally:
        mt.close()


def test_exceptions_reach_the_caller_and_the_thread_goes_on():
    mt = ModelThread()
    try:
        with pytest.raises(ValueError, match="bad weights"):
            mt.call(lambda: (_ for _ in ()).throw(ValueError("bad weights")))
        assert mt.call(lambda: 7) == 7
    finally:
        mt.close()


def test_a_call_from_the_thread_itself_does_not_deadlock():
    mt = ModelThread()
    try:
        assert mt.call(lambda: mt.call(lambda: "inner")) == "inner"
    finally:
        mt.close()


def test_close_finishes_queued_work_then_refuses_more():
    mt = ModelThread()
    gate, done = threading.Event(), []
    mt.submit(lambda: gate.wait(5))
    fut = mt.submit(lambda: done.append(1))
    gate.set()
    mt.close()
    assert fut.result(1) is None and done == [1]
    with pytest.raises(RuntimeError, match="closed"):
        mt.submit(lambda: None)
