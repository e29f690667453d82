"""Shards: split work into numbered shards, each an election group, and work on the ones this member leads.

A sharded worker (one consumer per partition, one scheduler per tenant range, ...) needs every shard to be
worked on by exactly one member at a time, and the shards spread over the members.  :class:`Shards` makes
shard ``k`` the election group ``f"{prefix}{k}"`` on every member: the group's leader owns the shard, its
lease says for how long, and its term is the shard's fencing token (strictly increasing from one owner to
the next, so the shard's storage can refuse a stale owner).  The groups' preferred leaders spread over
the members by rendezvous hashing (:mod:`raft_election.placement`), so with all members up each leads about
``count / n`` shards, and a dead member's shards move to the others at once (fast failover) and come back
gradually (the balancer) when it returns.

Typical use::

    shards = Shards(node, count=64)
    while running:
        for shard, token in shards:          # the shards this member leads now, with their tokens
            process(shard, token)            # pass the token on: storage rejects a stale one
        shards.wait_for_change(timeout=1.0)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Optional

from raft_election.errors import ConfigError
from raft_election.events import Event
from raft_election.groupname import MAX_GROUP_NAME, check_group_name
from raft_election.leadership import Leadership

if TYPE_CHECKING:
    from raft_election.group import Group
    from raft_election.node import RaftNode

__all__ = ["Shards"]


class Shards:
    """Shards ``0 .. count - 1`` of ``node``'s cluster, one election group each (see the module docstring).

    Every member that works on the shards creates ``Shards`` with the same ``count`` and ``prefix``; it
    then stands for election in every shard's group.

    Args:
        node: this member.
        count: how many shards (1 to 10,000).
        prefix: the groups' names are ``prefix`` followed by the shard number.

    Raises:
        ConfigError: ``count`` is out of range or ``prefix`` makes invalid group names.
    """

    def __init__(self, node: RaftNode, count: int = 64, *, prefix: str = "shard-") -> None:
        if type(count) is not int or not 1 <= count <= 10_000:
            raise ConfigError("count", f"count must be an int from 1 to 10000, got {count!r}")
        if not prefix or len(prefix) + len(str(count - 1)) > MAX_GROUP_NAME:
            room = MAX_GROUP_NAME - len(str(count - 1))
            raise ConfigError("prefix", f"prefix {prefix!r} must be 1 to {room} characters (the shard number "
                                        "follows it in the group's name)")
        check_group_name(f"{prefix}0", "prefix")
        self._node = node
        self._prefix = prefix
        self._changed = threading.Condition()
        self._version = 0
        self._groups: tuple[Group, ...] = tuple(node.group(f"{prefix}{shard}") for shard in range(count))
        names = {group.name: shard for shard, group in enumerate(self._groups)}
        node.add_group_listener(lambda group, event: self._heard(names.get(group), event))

    @property
    def count(self) -> int:
        """How many shards there are."""
        return len(self._groups)

    def group(self, shard: int) -> Group:
        """The election group of ``shard``."""
        return self._groups[shard]

    def leaderships(self) -> dict[int, Leadership]:
        """The shards this member leads now with a valid lease, each with its leadership handle.

        A handle's ``valid()`` turns False for good the moment that lease ends; work on a shard should
        check it (or carry the handle's ``term`` as fencing token) before each step.
        """
        found = {}
        for shard, group in enumerate(self._groups):
            leadership = group.leadership()
            if leadership is not None:
                found[shard] = leadership
        return found

    def owned(self) -> list[int]:
        """The shard numbers this member leads now, in order."""
        return sorted(self.leaderships())

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """``(shard, fencing token)`` of every shard this member leads now, in shard order."""
        for shard, leadership in sorted(self.leaderships().items()):
            yield shard, leadership.term

    def __len__(self) -> int:
        return self.count

    def wait_for_change(self, timeout: Optional[float] = None) -> bool:
        """Block until some shard's leadership changes here (any member's), or ``timeout``; True if it did."""
        with self._changed:
            seen = self._version
            return self._changed.wait_for(lambda: self._version != seen, timeout)

    def _heard(self, shard: Optional[int], event: Event) -> None:
        if shard is None:
            return
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def __repr__(self) -> str:
        return f"<Shards count={self.count} prefix={self._prefix!r} owned={self.owned()}>"
