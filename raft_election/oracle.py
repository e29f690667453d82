"""A global safety oracle: records what every server did and flags any violation of the guarantees.

Used by the deterministic simulation (:mod:`raft_election.sim`) and by tests of threaded nodes; usable in
an application's own tests too.  It checks, across crashes and restarts:

* **election safety** (Raft §5.2): at most one server wins each term;
* **lease safety** (thesis §6.4.1): at no instant do two servers believe they lead with a valid lease;
* **one vote per term**: no server persists two different votes in one term, even across restarts;
* **monotonic terms**: no server's persisted term ever decreases.

The oracle keeps every leadership it saw, so a failure report can show the whole history.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Optional

import attrs

from raft_election.storage import HardState

__all__ = ["ElectionOracle", "Leadership", "SafetyViolation"]


class SafetyViolation(AssertionError):  # noqa: N818 (it reads as a finding, not a failure to handle)
    """One of the guarantees was broken.  An AssertionError so test frameworks report it as a failure."""


@attrs.define
class Leadership:
    """One server's belief that it leads ``term``, from ``start`` until ``end`` (None: still leading)."""

    node: int
    term: int
    start: float
    end: Optional[float] = None


class ElectionOracle:
    """Collects leaderships, votes and terms; raises :class:`SafetyViolation` on the first violation.

    All times are on one common clock (the simulation's virtual time, or ``time.monotonic`` for threads in
    one process).  Thread-safe.

    Args:
        raise_on_violation: raise at once (default) or only collect into :attr:`violations`.
    """

    def __init__(self, *, raise_on_violation: bool = True) -> None:
        self._lock = threading.Lock()
        self._raise = raise_on_violation
        self.violations: list[str] = []
        self.leader_of_term: dict[int, int] = {}
        self.leaderships: list[Leadership] = []
        self._open: dict[int, Leadership] = {}
        self._votes: dict[tuple[int, int], int] = {}
        self._terms: dict[int, int] = {}

    def _violation(self, text: str) -> None:
        self.violations.append(text)
        if self._raise:
            raise SafetyViolation(text)

    def became_leader(self, node: int, term: int, at: float) -> None:
        """``node`` won ``term`` and believes it leads from ``at``."""
        with self._lock:
            winner = self.leader_of_term.setdefault(term, node)
            if winner != node:
                self._violation(f"two leaders in term {term}: {winner} and {node}")
            previous = self._open.pop(node, None)
            if previous is not None:
                previous.end = at
            leadership = Leadership(node=node, term=term, start=at)
            self.leaderships.append(leadership)
            self._open[node] = leadership
        # Overlap with other leaderships is checked by lease_holders() at every instant (simulation) or by
        # check_intervals() once every leadership has ended: an open leadership may already have lapsed
        # (a paused leader learns only when it next runs), so it cannot be judged here.

    def lost_leadership(self, node: int, term: int, lease_end: float) -> None:
        """``node`` stopped believing it leads ``term`` at ``lease_end``."""
        with self._lock:
            leadership = self._open.pop(node, None)
            if leadership is not None and leadership.term == term:
                leadership.end = lease_end

    def node_crashed(self, node: int, at: float) -> None:
        """A crashed process believes nothing any more."""
        with self._lock:
            leadership = self._open.pop(node, None)
            if leadership is not None:
                leadership.end = min(at, leadership.end) if leadership.end is not None else at

    def lease_holders(self, at: float, holders: Iterable[int]) -> None:
        """At instant ``at`` exactly ``holders`` believe they lead: there must be at most one."""
        found = sorted(holders)
        if len(found) > 1:
            with self._lock:
                self._violation(f"{len(found)} lease holders at {at:.6f}: {found}")

    def persisted(self, node: int, state: HardState) -> None:
        """``node`` made ``state`` durable: check one vote per term and monotonic terms."""
        with self._lock:
            last = self._terms.get(node, 0)
            if state.term < last:
                self._violation(f"{node}'s term went back from {last} to {state.term}")
            self._terms[node] = state.term
            if state.voted_for is None:
                return
            key = (node, state.term)
            earlier = self._votes.setdefault(key, state.voted_for)
            if earlier != state.voted_for:
                self._violation(f"{node} voted twice in term {state.term}: for {earlier} and "
                                f"for {state.voted_for}")

    def check_intervals(self) -> None:
        """Check, after the fact, that no two recorded leaderships overlap in time."""
        with self._lock:
            ordered = sorted(self.leaderships, key=lambda leadership: leadership.start)
            latest: Optional[Leadership] = None  # the leadership seen so far that ends last
            for current in ordered:
                if latest is not None:
                    end = latest.end if latest.end is not None else float("inf")
                    if end > current.start and latest.node != current.node:
                        self._violation(
                            f"leaderships overlap: {latest.node} (term {latest.term}, {latest.start:.6f}-"
                            f"{end:.6f}) and {current.node} (term {current.term}, from {current.start:.6f})")
                current_end = current.end if current.end is not None else float("inf")
                if latest is None or current_end > (latest.end if latest.end is not None else float("inf")):
                    latest = current
