"""A user's leader-dependent service: the leader keeps a counter in a store that checks fencing tokens.

Every member runs a :class:`CounterService`; only the one that leads increments the counter, in two
steps, as real services do: it reads the counter and decides the next value while it leads, then writes it
(with a network call, a disk write, ... in between, modelled as the next tick).  A member can be paused
between the two steps (a GC pause, SIGSTOP, a frozen VM) while another member is elected and writes; when
it resumes it completes its write.  That stale write is what fencing tokens are for: the
:class:`FencedStore` refuses a read or a write whose token (the term of the leadership) is lower than one it
has seen, so the counter never goes back.  Reads carry the token too: a new leader that reads the counter
has shown the store its token, so the old leader's write still in flight is refused instead of landing
between the new leader's read and its write (which would count one increment twice).

:class:`UnfencedCounterService` is the same service with the classic bug: it does not pass its token, so
the store cannot tell a stale writer, and the counter goes back.  ``tests`` beside this file check both
with the library's testing kit; the broken one fails with a short, replayable counterexample.
"""

from __future__ import annotations

from typing import Optional


class StaleTokenError(Exception):
    """The store refused a write from a leader whose token is older than one it accepted."""


class FencedStore:
    """The protected resource: a counter, and every value it accepted in order (for the tests)."""

    def __init__(self) -> None:
        self.value = 0
        self.highest_token = 0
        self.accepted: list[int] = []

    def _fence(self, token: Optional[int]) -> None:
        if token is not None:
            if token < self.highest_token:
                raise StaleTokenError(f"token {token} < {self.highest_token}")
            self.highest_token = token

    def read(self, token: Optional[int]) -> int:
        """The counter; with a ``token``, refused if a higher token was seen before."""
        self._fence(token)
        return self.value

    def write(self, value: int, token: Optional[int]) -> None:
        """Store ``value``; with a ``token``, refused if a higher token was seen before."""
        self._fence(token)
        self.value = value
        self.accepted.append(value)


class CounterService:
    """One member's service: while its member leads, it increments the store's counter."""

    fenced = True

    def __init__(self, store: FencedStore) -> None:
        self.store = store
        self.pending: Optional[tuple[int, int]] = None  # (value, token) decided, not yet written
        self.refused = 0

    def tick(self, *, leads: bool, token: int) -> None:
        """One step of the service: finish the write decided last time, then, if leading, decide the next."""
        try:
            if self.pending is not None:
                value, decided_with = self.pending
                self.pending = None
                self.store.write(value, decided_with if self.fenced else None)
            if leads:
                self.pending = (self.store.read(token if self.fenced else None) + 1, token)
        except StaleTokenError:
            self.refused += 1  # another member leads now: nothing to do


class UnfencedCounterService(CounterService):
    """The bug: the write does not carry the fencing token."""

    fenced = False
