"""A global safety oracle: records what every server did and flags any violation of the guarantees.

Used by the deterministic simulation (:mod:`raft_election.sim`) and by tests of threaded nodes; usable in
an application's own tests too.  It checks, across crashes and restarts, the rules of
:mod:`raft_election.invariants` as they happen:

* **election safety** (Raft §5.2): at most one server wins each term (at each ``became_leader``);
* **lease safety** (thesis §6.4.1): at no instant do two servers believe they lead with a valid lease (at
  each :meth:`~ElectionOracle.lease_holders`, and over the recorded intervals by
  :meth:`~ElectionOracle.check_intervals`);
* **one vote per term**: no server persists two different votes in one term, even across restarts;
* **monotonic terms**: no server's persisted term ever decreases.

The oracle keeps every leadership it saw, so a failure report can show the whole history.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from raft_election.hardstate import HardState
from raft_election.invariants import Finding, LeaseInterval, SafetyChecker

__all__ = ["ElectionOracle", "SafetyViolation"]


class SafetyViolation(AssertionError):  # noqa: N818 (it reads as a finding, not a failure to handle)
    """One of the guarantees was broken.  An AssertionError so test frameworks report it as a failure."""


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
        self._safety = SafetyChecker()
        self.violations: list[str] = []

    def _report(self, findings: Iterable[Finding]) -> None:
        for finding in findings:
            self.violations.append(finding.message)
            if self._raise:
                raise SafetyViolation(finding.message)

    @property
    def leaderships(self) -> list[LeaseInterval]:
        """Every leadership seen so far, by start (open ones have ``end`` None)."""
        with self._lock:
            return list(self._safety.intervals())

    @property
    def leader_of_term(self) -> dict[int, int]:
        """The first server seen to win each term."""
        with self._lock:
            return self._safety.winners()

    def became_leader(self, node: int, term: int, at: float) -> None:
        """``node`` won ``term`` and believes it leads from ``at``."""
        with self._lock:
            self._report(self._safety.became_leader(node, term, at))
        # Overlap with other leaderships is checked by lease_holders() at every instant (simulation) or by
        # check_intervals() once every leadership has ended: an open leadership may already have lapsed
        # (a paused leader learns only when it next runs), so it cannot be judged here.

    def lost_leadership(self, node: int, term: int, lease_end: float) -> None:
        """``node`` stopped believing it leads ``term`` at ``lease_end``."""
        with self._lock:
            self._safety.lost_leadership(node, term, lease_end)

    def node_crashed(self, node: int, at: float) -> None:
        """A crashed process believes nothing any more."""
        with self._lock:
            self._safety.killed(node, at)

    def lease_holders(self, at: float, holders: Iterable[int]) -> None:
        """At instant ``at`` exactly ``holders`` believe they lead: there must be at most one."""
        found = list(holders)
        if len(found) > 1:
            with self._lock:
                self._report(self._safety.lease_holders(at, found))

    def persisted(self, node: int, state: HardState) -> None:
        """``node`` made ``state`` durable: check one vote per term and monotonic terms."""
        with self._lock:
            self._report(self._safety.persisted_term(node, state.term))
            if state.voted_for is not None:
                self._report(self._safety.voted(node, state.term, state.voted_for, source="persisted"))

    def check_intervals(self) -> None:
        """Check, after the fact, that no two recorded leaderships of different servers overlap in time."""
        with self._lock:
            self._report(self._safety.overlaps())
