"""What a leader knows of its followers during one term: the lease, check-quorum and transfer targets.

The core keeps one :class:`Lease` for as long as it holds the office of leader, and drops it when it
leaves office.  It records the *send* time of each heartbeat round and, per follower, the newest round it
acknowledged, when it last answered, and whether it stands for election.  From that follow:

* the lease (thesis §6.4.1): valid until ``t + election_timeout_min * (1 - max_clock_drift)``, where ``t``
  is the send time of the latest round a majority acknowledged (the leader acknowledges its own rounds at
  once).  A follower resets its stickiness window when it answers a round, which is no earlier than the
  round's send time, so no member of that majority grants a vote before the lease has run out;
* whether the leader holds its lease (:meth:`Lease.observe`): office and lease are separate.  A lease
  runs out whenever no majority acknowledged a recent enough round (a slow round trip, a busy host) and
  comes back as soon as one does; only check-quorum, a higher term, a step-down or a transfer end the
  office;
* check-quorum (thesis §6.2): how many members answered within ``quorum_window``;
* the peer to hand leadership to (thesis §3.10): the candidate heard from most recently within
  ``election_timeout_min``.

Majorities are counted in the configuration the leader uses now (thesis §4.1: its latest entry), which a
membership change replaces (:meth:`Lease.reconfigure`): only its members' acknowledgements count, and the
leader itself only while it is one (§4.2.2).  Why a lease stays exclusive across a change is in
:mod:`raft_election.membership`.

The winning vote round counts as the first round: it was "sent" when the campaign started, and every voter
that granted it reset its stickiness no earlier than that.  If the votes took longer than a lease, the
leader takes office without one and holds its first lease once a majority acknowledges a heartbeat round.

**At most one lease holder, across gaps.**  Whenever this leader of term ``T`` holds a lease at instant
``u``, some majority ``M`` acknowledged a round sent at ``s > u - election_timeout_min * (1 - drift)``,
each member at a moment ``a >= s`` at which it was in term ``T``.  A leader of another term ``T'`` holding
a lease at ``u`` needs the votes (or, for its own later rounds, acknowledgements) of a majority ``M'``, and
``M`` and ``M'`` share a member ``m``.  If ``T' > T``, ``m`` voted in ``T'`` after ``a`` (before it, ``m``
would have been past ``T`` and refused the round): inside its stickiness window only for a leadership
transfer (whose leader gave up this lease first) or on death evidence about this leader (see
:mod:`raft_election.fastfailover`), otherwise no earlier than ``a + election_timeout_min``,
which on any clock running within the drift bound is after ``s + election_timeout_min * (1 - drift)``:
after this lease ran out.  If ``T' < T`` the same argument runs the other way.  A gap changes nothing in
it: every claim rests on its own acknowledged round, whichever came before.  It also shows that a leader
holding a lease again in the same term after a gap had no other lease holder in between: a later term's
lease would have to end before the regained one began, and then no majority acknowledges term ``T`` any
more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Optional

__all__ = ["Lease"]

#: How many heartbeat rounds a leader remembers the send time of; acknowledgements of older rounds
#: cannot extend the lease any more and are ignored.
ROUNDS_KEPT = 64


class Lease:
    """One leadership's view of its followers (see the module docstring).

    Args:
        quorum: the strict majority of the configuration in use.
        members: the other members of that configuration (whose acknowledgements count).
        counts_self: whether this server is itself a member (it acknowledges its own rounds).
        duration: how long a lease lasts from its start, ``election_timeout_min * (1 - max_clock_drift)``.
        window: ``election_timeout_min``, the window within which an answer makes a peer a follower.
        quorum_window: the check-quorum window (``election_timeout_max``, see the core).
        won_round: the round number of the winning vote round, and ``started``, when that campaign began.
        voters: each peer that granted the winning round, with whether it stands for election itself.
        now: when the election was won (the voters count as just heard from).
    """

    def __init__(self, *, quorum: int, members: Iterable[int], counts_self: bool, duration: float,
                 window: float, quorum_window: float, won_round: int, started: float,
                 voters: Mapping[int, bool], now: float) -> None:
        self._quorum = quorum
        self._members = frozenset(members)
        self._counts_self = counts_self
        self._duration = duration
        self._window = window
        self._quorum_window = quorum_window
        self._round_sent: dict[int, float] = {won_round: started}
        self._acked_at: dict[int, float] = dict.fromkeys(voters, started)
        self._last_heard: dict[int, float] = dict.fromkeys(voters, now)
        self._candidacy: dict[int, bool] = dict(voters)
        self._start = started
        #: The votes took longer than a lease: the office began without one.
        self.late = now >= started + duration
        #: Whether the leader held the lease when last observed (:meth:`observe`).
        self.held = False
        #: How many leases have begun in this office: the first, then one per gap that ended.
        self.begun = 0
        #: When the leader last stopped holding a lease (the lease's end), or took office without one.
        self.unheld_since = now

    @property
    def expiry(self) -> float:
        """When the lease runs out unless a newer round is acknowledged by a majority."""
        return self._start + self._duration

    def observe(self, now: float) -> Optional[bool]:
        """Whether the lease began (True) or ran out (False) since the last call; None if neither."""
        valid = now < self.expiry
        if valid == self.held:
            return None
        self.held = valid
        if valid:
            self.begun += 1
        else:
            self.unheld_since = self.expiry
        return valid

    def reconfigure(self, *, quorum: int, members: Iterable[int], counts_self: bool) -> None:
        """Count majorities in a new configuration from now on (the latest entry changed, thesis §4.1).

        The lease already held stays: it rests on a majority of the old member set, which shares a member
        with every majority of the new one (a single-server change).
        """
        self._quorum = quorum
        self._members = frozenset(members)
        self._counts_self = counts_self
        self._extend()

    def sent(self, round_: int, now: float) -> None:
        """A heartbeat round numbered ``round_`` left at ``now`` (the leader acknowledges it itself)."""
        self._round_sent[round_] = now
        if len(self._round_sent) > ROUNDS_KEPT:
            del self._round_sent[next(iter(self._round_sent))]
        self._extend()  # a one-member cluster is its own majority

    def acknowledged(self, peer: int, round_: int, candidate: bool, now: float) -> bool:
        """``peer`` answered round ``round_`` at ``now``; False, recording nothing, for an unknown round."""
        sent_at = self._round_sent.get(round_)
        if sent_at is None:
            return False
        self._last_heard[peer] = max(self._last_heard.get(peer, -float("inf")), now)
        self._candidacy[peer] = candidate
        if sent_at > self._acked_at.get(peer, -float("inf")):
            self._acked_at[peer] = sent_at
            self._extend()
        return True

    def carried(self, start: float, heard: Mapping[int, float]) -> None:
        """Rounds sent on this leadership's behalf (a member's coalesced rounds, see the core's ``carry``).

        ``start`` is the send time of the latest such round a majority acknowledged (-inf: none) and
        ``heard`` when each peer last answered one.  The lease moves forward only, as for its own rounds.
        """
        self._start = max(self._start, start)
        for peer, at in heard.items():
            if at > self._last_heard.get(peer, -float("inf")):
                self._last_heard[peer] = at

    def stands(self, peer: int) -> bool:
        """Whether ``peer`` said it stands for election, in its latest answer or vote (False if unknown)."""
        return self._candidacy.get(peer, False)

    def heard(self, now: float) -> int:
        """How many members, the leader included if it is one, answered within the check-quorum window."""
        return int(self._counts_self) + sum(1 for peer, heard in self._last_heard.items()
                                            if peer in self._members and now - heard < self._quorum_window)

    def followers(self, now: float) -> tuple[int, ...]:
        """The members that answered within ``election_timeout_min`` before ``now``, in id order."""
        return tuple(sorted(peer for peer, heard in self._last_heard.items()
                            if peer in self._members and now - heard < self._window))

    def transfer_target(self, now: float) -> Optional[int]:
        """The member that stands for election and answered most recently within the window, or None."""
        eligible = [(heard, peer) for peer, heard in self._last_heard.items() if peer in self._members
                    and self._candidacy.get(peer, False) and now - heard < self._window]
        return max(eligible)[1] if eligible else None

    def _extend(self) -> None:
        """Move the lease start to the latest round a majority acknowledged (thesis §6.4.1)."""
        acked = [sent for peer, sent in self._acked_at.items() if peer in self._members]
        if self._counts_self:
            acked.append(max(self._round_sent.values(), default=self._start))
        acked.sort(reverse=True)
        if len(acked) >= self._quorum:
            self._start = max(self._start, acked[self._quorum - 1])
