"""What the core reports to the node: leadership and term changes, as small frozen value objects.

The node turns these into user callbacks (``on_become_leader``, ``on_lose_leadership``,
``on_leader_change``) on its callback thread, in the order the core produced them.

A leader's **office** (its role and term) and its **lease** (the right to claim leadership, thesis §6.4.1)
are reported apart.  Within one term a leader holds a lease over one or more intervals: the first begins
with :class:`BecameLeader`, each later one with :class:`LeaseRegained`; each ends with :class:`LeaseLost`
(a lease gap: the leader keeps office) or with :class:`LostLeadership` (it leaves office) when it still
held the lease then (``had_lease``).  A win whose votes came too late to carry a lease takes office
silently (:class:`RoleChanged` and :class:`LeaderChanged` only) and reports :class:`BecameLeader` with
``late`` True once a majority acknowledges one of its heartbeat rounds.
"""

from __future__ import annotations

from typing import Optional, Union

import attrs

from raft_election.membership import Configuration, Version
from raft_election.roles import Role

__all__ = ["BecameLeader", "DeathEvidence", "Event", "LeaderChanged", "LeaderValue", "LeaseLost",
           "LeaseRegained", "LostLeadership", "MembershipChanged", "RoleChanged", "TermChanged",
           "VoteGranted"]


@attrs.frozen(kw_only=True)
class BecameLeader:
    """This server leads ``term`` and holds its first lease of that term from local time ``at`` on.

    ``fast`` is True when the election was a fast failover: won on death evidence about the old leader,
    before the voters' stickiness windows ran out.  ``late`` is True when the votes came too late to carry
    a lease: the server took office earlier, without one, and ``at`` is when a majority first acknowledged
    one of its heartbeat rounds.
    """

    term: int
    at: float
    fast: bool = False
    late: bool = False


@attrs.frozen(kw_only=True)
class LeaseLost:
    """The lease of this leader of ``term`` ran out at ``lease_end``; it noticed at local time ``at``.

    A lease gap, not a lost election: the server keeps office and heartbeats on, and claims leadership
    again (:class:`LeaseRegained`) once a majority acknowledges a round whose lease has not run out.
    ``is_leader`` was already false from ``lease_end`` on.
    """

    term: int
    at: float
    lease_end: float


@attrs.frozen(kw_only=True)
class LeaseRegained:
    """This leader of ``term``, in office through a lease gap, holds a lease again from local time ``at``."""

    term: int
    at: float


@attrs.frozen(kw_only=True)
class LostLeadership:
    """This server left the office of leader of ``term`` at local time ``at``.

    ``lease_end`` is when it stopped *believing* it leads: the earlier of ``at`` and its lease expiry.
    ``had_lease`` says whether it still held a lease when it left office; if not, a :class:`LeaseLost`
    (or a late win that never held one) already ended its claim.  ``reason`` is one of
    ``"check_quorum"``, ``"higher_term"``, ``"step_down"``, ``"transfer"``, ``"stopped"``.
    """

    term: int
    at: float
    lease_end: float
    reason: str
    had_lease: bool = True


@attrs.frozen(kw_only=True)
class LeaderChanged:
    """The leader this server knows of changed (``None``: it knows of none)."""

    leader_id: Optional[int]
    term: int


@attrs.frozen(kw_only=True)
class LeaderValue:
    """The leader this server knows of, with the value it publishes, changed.

    Reported when a leader's value is first heard (from its heartbeats; a leader's own at taking office) or
    changes, and as ``(None, term, None)`` when no leader is known any more.  A new leader whose value has
    not been heard yet is not reported until it has.
    """

    leader_id: Optional[int]
    term: int
    value: Optional[bytes]


@attrs.frozen(kw_only=True)
class TermChanged:
    """This server's current term increased."""

    term: int


@attrs.frozen(kw_only=True)
class RoleChanged:
    """This server's role changed (useful for logs and tests; not a user callback)."""

    role: Role
    term: int


@attrs.frozen(kw_only=True)
class VoteGranted:
    """This server voted for ``candidate`` in ``term``: itself when it campaigns, or a peer.

    Reported again for a repeated request it grants again, and only after the vote is durable; for audits
    such as the nemesis checker's "never two votes in one term".
    """

    term: int
    candidate: int


@attrs.frozen(kw_only=True)
class DeathEvidence:
    """The transport reported evidence that ``peer``'s process is gone (``kind``: how it knows).

    Reported for every piece of evidence the core accepts, whether or not it acts on it, with this server's
    current ``term``; ``leader`` says whether ``peer`` was the leader this server followed.
    """

    term: int
    peer: int
    kind: str
    leader: bool


@attrs.frozen(kw_only=True)
class MembershipChanged:
    """The configuration entry this server uses changed, or it learned that the entry is committed.

    Reported, after the entry is durable, when this server creates an entry as leader (``parent`` is then
    the version of the entry it replaced), takes one from its leader (``parent`` None), or learns that its
    latest entry is ``committed`` (a majority of its members stored it, thesis §4.1).  ``term`` is this
    server's current term, ``at`` its local time.
    """

    term: int
    at: float
    configuration: Configuration
    committed: bool
    parent: Optional[Version] = None


Event = Union[BecameLeader, LeaseLost, LeaseRegained, LostLeadership, LeaderChanged, LeaderValue, TermChanged,
              RoleChanged, VoteGranted, DeathEvidence, MembershipChanged]
