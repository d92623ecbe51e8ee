"""`SharedCheck`: concurrent queries share index reads, and no query is verified by a read sent
before it began (the guarantee the per-query check gave)."""

from __future__ import annotations

import threading

import pytest
from osneural.plugin.index_check import SharedCheck


class Reads:
    """fetch(): the n-th read returns n; reads listed in `hold` block until released."""

    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()
        self.gates: dict[int, threading.Event] = {}
        self.entered: dict[int, threading.Event] = {}

    def hold(self, n: int) -> threading.Event:
        self.gates[n] = threading.Event()
        self.entered[n] = threading.Event()
        return self.gates[n]

    def __call__(self) -> int:
        with self.lock:
            self.n += 1
            n = self.n
        if n in self.gates:
            self.entered[n].set()
            assert self.gates[n].wait(10)
        return n


def test_a_lone_caller_reads_once_per_query_concurrently_with_its_stages() -> None:
    reads = Reads()
    check = SharedCheck(reads)
    for i in range(1, 4):
        t = check.begin()
        assert t.lead  # nothing in flight: it leads
        check.lead(t)  # sent right after the stages, before waiting for them
        assert check.settle(t) == i
    assert check.sent == 3


def test_a_read_in_flight_when_a_query_began_never_verifies_it() -> None:
    reads = Reads()
    gate = reads.hold(1)
    check = SharedCheck(reads)
    a = check.begin()
    ta = threading.Thread(target=check.lead, args=(a,))
    ta.start()
    assert reads.entered[1].wait(10)
    b = check.begin()  # read 1 is in flight: sent before b began
    assert not b.lead and b.flight is None
    gate.set()
    ta.join()
    assert check.settle(a) == 1
    assert check.settle(b) == 2  # its own, newer read
    assert check.sent == 2


def test_queries_that_wait_join_the_newest_read_sent_after_they_began() -> None:
    reads = Reads()
    gate1, gate2 = reads.hold(1), reads.hold(2)
    check = SharedCheck(reads)
    a = check.begin()
    ta = threading.Thread(target=check.lead, args=(a,))
    ta.start()
    assert reads.entered[1].wait(10)
    b, c = check.begin(), check.begin()  # both began while read 1 was in flight
    gate1.set()
    ta.join()
    out: dict[str, int] = {}
    tb = threading.Thread(target=lambda: out.__setitem__("b", check.settle(b)))
    tb.start()
    assert reads.entered[2].wait(10)  # b had to send read 2
    tc = threading.Thread(target=lambda: out.__setitem__("c", check.settle(c)))
    tc.start()  # c joins read 2: created after c began
    gate2.set()
    tb.join()
    tc.join()
    assert out == {"b": 2, "c": 2}
    assert check.sent == 2  # three queries, two reads
    assert check.settle(a) == 1
    d = check.begin()  # alone now, and began after read 2 was created: it leads read 3  # began after read 2 was created: it may not use it either
    assert d.lead
    check.lead(d)
    assert check.settle(d) == 3


def test_a_failed_read_reaches_every_query_that_joined_it() -> None:
    calls = []

    def fetch() -> int:
        calls.append(1)
        raise ConnectionError("node gone")

    check = SharedCheck(fetch)
    t = check.begin()
    check.lead(t)
    got = check.settle(t)
    assert isinstance(got, ConnectionError) and str(got) == "node gone"
    with pytest.raises(ConnectionError):
        raise got
    assert check.settle(check.begin()).__class__ is ConnectionError and len(calls) == 2


def test_a_query_that_fails_before_settling_does_not_hold_the_others_back() -> None:
    reads = Reads()
    check = SharedCheck(reads)
    failed = check.begin()  # leads read 1, then its stages raise before it sends it
    assert failed.lead
    other = check.begin()  # another query is running: defers
    assert not other.lead
    check.release(failed)
    check.release(failed)  # idempotent (a `finally` after a settle)
    assert check.settle(other) == 1  # the unsent read was created before `other` began: its own
    alone = check.begin()
    assert alone.lead  # nobody is running any more
    check.lead(alone)
    assert check.settle(alone) == 2 and check.sent == 2
