"""A global safety oracle: records what every server did and flags any violation of the guarantees.

Used by the deterministic simulation (:mod:`raft_election.sim`) and by tests of threaded nodes; usable in
an application's own tests too.  It checks, across crashes and restarts, the rules of
:mod:`raft_election.invariants` as they happen:

* **election safety** (Raft §5.2): at most one server wins each term (at each ``became_leader``);
* **lease safety** (thesis §6.4.1): at no instant do two servers believe they lead with a valid lease (at
  each :meth:`~ElectionOracle.lease_holders`, and over the recorded intervals by
  :meth:`~ElectionOracle.check_intervals`), and leases never go back to a lower term (so a leader whose
  lease comes back after a gap had no other lease holder in between);
* **one vote per term**: no server persists two different votes in one term, even across restarts;
* **monotonic terms**: no server's persisted term ever decreases;
* **membership** (thesis ch. 4): single-server changes, one uncommitted change at a time, and committed
  configuration entries never rolled back (a leader's entry, when its lease begins, descends from every
  entry committed before).

The oracle keeps every leadership it saw, so a failure report can show the whole history.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from raft_election.events import (
    BecameLeader,
    Event,
    LeaseLost,
    LeaseRegained,
    LostLeadership,
    MembershipChanged,
)
from raft_election.hardstate import HardState
from raft_election.invariants import Finding, LeaseInterval, SafetyChecker, Version, lease_order

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
        self._stored: dict[int, Version] = {}  # each server's latest durable configuration entry
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

    def record(self, node: int, event: Event, clock: Callable[[float], float] = float) -> None:
        """Record whatever core ``event`` of ``node`` says about its leases (other events are ignored).

        ``clock`` turns the node's own times into the oracle's common clock (default: they are the same).
        """
        if isinstance(event, BecameLeader):
            self.became_leader(node, event.term, clock(event.at))
            with self._lock:
                stored = self._stored.get(node, (0, 0))
                self._report(self._safety.leader_configuration(node, event.term, stored, clock(event.at)))
        elif isinstance(event, MembershipChanged):
            self.membership_changed(node, event, clock(event.at))
        elif isinstance(event, LeaseRegained):
            self.lease_regained(node, event.term, clock(event.at))
            with self._lock:
                stored = self._stored.get(node, (0, 0))
                self._report(self._safety.leader_configuration(node, event.term, stored, clock(event.at)))
        elif isinstance(event, LeaseLost):
            self.lease_lost(node, event.term, clock(event.lease_end))
        elif isinstance(event, LostLeadership):
            self.lost_leadership(node, event.term, clock(event.lease_end))

    def seed(self, members: Iterable[int]) -> None:
        """Every server started from the seed configuration listing ``members``."""
        with self._lock:
            self._safety.seed_configuration(members)

    def membership_changed(self, node: int, event: MembershipChanged, at: float) -> None:
        """Record an entry ``node`` created (``event.parent`` set) or learned is committed, at ``at``."""
        config = event.configuration
        with self._lock:
            if event.parent is not None:
                self._report(self._safety.configuration_created(node, config.version, event.parent,
                                                                config.members, at))
            if event.committed:
                self._report(self._safety.configuration_committed(node, config.version, at))

    def became_leader(self, node: int, term: int, at: float) -> None:
        """``node`` won ``term`` and believes it leads from ``at``."""
        with self._lock:
            self._report(self._safety.became_leader(node, term, at))
        # Overlap with other leaderships is checked by lease_holders() at every instant (simulation) or by
        # check_intervals() once every leadership has ended: an open leadership may already have lapsed
        # (a paused leader learns only when it next runs), so it cannot be judged here.

    def lost_leadership(self, node: int, term: int, lease_end: float) -> None:
        """``node`` left the office of ``term``; it stopped believing it leads at ``lease_end``."""
        with self._lock:
            self._safety.lost_leadership(node, term, lease_end)

    def lease_lost(self, node: int, term: int, lease_end: float) -> None:
        """``node``'s lease of ``term`` ran out at ``lease_end``; it keeps office."""
        with self._lock:
            self._safety.lease_lost(node, term, lease_end)

    def lease_regained(self, node: int, term: int, at: float) -> None:
        """``node``, in office in ``term`` since before a lease gap, believes it leads again from ``at``."""
        with self._lock:
            self._report(self._safety.lease_regained(node, term, at))

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
            self._stored[node] = state.config.version if state.config is not None else (0, 0)
            self._report(self._safety.persisted_term(node, state.term))
            if state.voted_for is not None:
                self._report(self._safety.voted(node, state.term, state.voted_for, source="persisted"))

    def check_lease_order(self) -> None:
        """Check, at any moment, that no lease began in a lower term than an earlier one of another server.

        Unlike overlaps, this needs no leadership to have ended, so a running simulation can check it.
        """
        with self._lock:
            self._report(lease_order(self._safety.intervals()))

    def check_intervals(self) -> None:
        """Check the recorded leaderships after the fact: no overlaps, no lease going back a term.

        No two leaderships of different servers share a moment, and none began in a lower term than an
        earlier one of another server.
        """
        with self._lock:
            self._report(self._safety.check_intervals())
