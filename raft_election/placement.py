"""Where election groups' leaderships belong: rendezvous hashing of group names over the members.

Every member computes, for each group, the same order of preference over the members of the configuration
it uses (highest random weight, Thaler and Ravishankar 1998): the weight of member ``m`` for group ``g`` is
a hash of ``(g, m)``, and the members are ranked by weight.  The first is the group's *preferred leader*.
Each group gets an independent, uniformly random order, so the preferred leaderships of many groups spread
evenly over the members, and a membership change moves only the groups whose first choice it adds or
removes.

The order is a matter of efficiency, never of safety: it shifts election timers (a member waits its rank
times the spread of the election timeout before campaigning, so the preferred member normally stands
alone and one campaign per group suffices, even when a thousand groups start at once), orders fast
failover's staggered campaigns (the groups of a dead leader spread over the survivors instead of all going
to the lowest id), and tells the optional balancer where to transfer leadership.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["preference", "preferred_leader"]


def _weight(name: str, member: int) -> bytes:
    return hashlib.blake2b(f"{member}\x00{name}".encode(), digest_size=8).digest()


def preference(name: str, members: Iterable[int]) -> tuple[int, ...]:
    """``members`` in group ``name``'s order of preference, the preferred leader first (rendezvous)."""
    return tuple(sorted(members, key=lambda member: (_weight(name, member), member), reverse=True))


def preferred_leader(name: str, members: Iterable[int]) -> int:
    """The member that should lead group ``name`` when every member is healthy.

    Raises:
        ValueError: ``members`` is empty.
    """
    order = preference(name, members)
    if not order:
        raise ValueError("a group needs at least one member to prefer")
    return order[0]
