"""One index check shared by concurrent queries, never older than the query it verifies.

Every answer is verified against the index's fingerprint (uuid + codec generation, see
`osneural.plugin.resources`) read by a request *sent after the query began*, so an index rebuilt
before a query started can never be answered with the old build's codecs. Reading it once per
query is one extra request per query, which on a saturated query node cost about a fifth of
the throughput (8 clients on 2 cores, dense spec: 162 against 196 queries/s without the check).

`SharedCheck` keeps that guarantee with fewer requests. A query that starts alone (no other
query running, no check in flight) sends one at once, concurrently with its first stages, exactly
as before: a lone client sees no change. A query that starts while others run (a check in flight
then was sent before it began, so it cannot be used) runs its stages first and then joins the
newest check sent after it began -- one that another query sent meanwhile -- or, when there is
none, sends its own. Under load the checks then come at the rate of one per round trip instead of
one per query.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Flight(Generic[T]):
    order: int  # position in the check order, taken under the lock when the read is created
    done: threading.Event = field(default_factory=threading.Event)
    claimed: bool = False  # someone is sending it (its leader, or a joiner if the leader never did)
    result: T | BaseException | None = None


@dataclass
class Ticket:
    """A query's place in the check order, and the read it got at once (if it sent one)."""

    order: int
    flight: _Flight | None = None
    lead: bool = False  # began alone: sends `flight` itself, beside its stages
    released: bool = False


class SharedCheck(Generic[T]):
    """Reads `fetch()` for many concurrent callers; see the module docstring for the rule.

    Order is a counter taken under one lock, not a clock: a read joins a query only when it was
    created strictly after the query's `begin`, so it is sent after the query began."""

    def __init__(self, fetch: Callable[[], T]) -> None:
        self._fetch = fetch
        self._lock = threading.Lock()
        self._order = 0
        self._latest: _Flight[T] | None = None
        self._active = 0  # queries between begin and settle
        self.sent = 0  # reads actually sent, for tests and stats

    def _new_flight(self) -> _Flight[T]:  # under the lock
        self._order += 1
        self._latest = _Flight(order=self._order)
        return self._latest

    def _run(self, flight: _Flight[T]) -> T | BaseException:
        with self._lock:
            self.sent += 1
        try:
            flight.result = self._fetch()
        except Exception as exc:  # noqa: BLE001 - handed to every caller that joined
            flight.result = exc
        finally:
            flight.done.set()
        return flight.result

    def begin(self) -> Ticket:
        """At the start of a query, before its stages are sent: when no read is in flight, the
        query leads a new one (`lead` sends it); else it will `settle` for a later one."""
        with self._lock:
            self._order += 1
            self._active += 1
            ticket = Ticket(order=self._order)
            latest = self._latest
            if self._active == 1 and (latest is None or latest.done.is_set()):
                ticket.flight, ticket.lead = self._new_flight(), True
            # else other queries are running: one of them, settling after this one began, will
            # send a read this one can join (or this one sends it when it settles)
            return ticket

    def _claim(self, flight: _Flight[T]) -> bool:
        with self._lock:
            if flight.claimed:
                return False
            flight.claimed = True
            return True

    def lead(self, ticket: Ticket) -> None:
        """Send the read this query leads (call it once the stages are on their way)."""
        if ticket.lead and ticket.flight is not None and self._claim(ticket.flight):
            self._run(ticket.flight)

    def settle(self, ticket: Ticket) -> T | BaseException:
        """The fingerprint for this query (or the error reading it): its own read, else the
        newest read created after it began (waited for if still in flight), else a new read."""
        if ticket.flight is None:
            with self._lock:
                latest = self._latest
                if latest is not None and latest.order > ticket.order:
                    ticket.flight = latest
                else:
                    ticket.flight = self._new_flight()  # none: this query sends its own now
        if self._claim(ticket.flight):  # its leader never sent it (it failed before): send it
            self._run(ticket.flight)
        ticket.flight.done.wait()
        self.release(ticket)
        return ticket.flight.result  # type: ignore[return-value]

    def release(self, ticket: Ticket) -> None:
        """The query is over (settled, or failed before it could): it no longer counts as
        running. Idempotent; call it in a `finally`."""
        with self._lock:
            if not ticket.released:
                ticket.released = True
                self._active -= 1
