"""What the core reports to the node: leadership and term changes, as small frozen value objects.

The node turns these into user callbacks (``on_become_leader``, ``on_lose_leadership``,
``on_leader_change``) on its callback thread, in the order the core produced them.
"""

from __future__ import annotations

from typing import Optional, Union

import attrs

from raft_election.roles import Role

__all__ = ["BecameLeader", "DeathEvidence", "Event", "LeaderChanged", "LostLeadership", "RoleChanged",
           "TermChanged", "VoteGranted"]


@attrs.frozen(kw_only=True)
class BecameLeader:
    """This server won the election for ``term`` at local time ``at``; it holds a lease from then on.

    ``fast`` is True when the election was a fast failover: won on death evidence about the old leader,
    before the voters' stickiness windows ran out.
    """

    term: int
    at: float
    fast: bool = False


@attrs.frozen(kw_only=True)
class LostLeadership:
    """This server stopped leading ``term`` at local time ``at``.

    ``lease_end`` is when it stopped *believing* it leads: the earlier of ``at`` and its lease expiry
    (a lease can run out between two ticks; ``is_leader`` is false from that instant).  ``reason`` is one
    of ``"lease_expired"``, ``"check_quorum"``, ``"higher_term"``, ``"step_down"``, ``"transfer"``,
    ``"stopped"``.
    """

    term: int
    at: float
    lease_end: float
    reason: str


@attrs.frozen(kw_only=True)
class LeaderChanged:
    """The leader this server knows of changed (``None``: it knows of none)."""

    leader_id: Optional[int]
    term: int


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


Event = Union[BecameLeader, LostLeadership, LeaderChanged, TermChanged, RoleChanged, VoteGranted,
              DeathEvidence]
