"""Group: the application's handle on one election group of a running node (see :meth:`RaftNode.group`).

A group is an independent election over the node's cluster - its own term (the fencing token), vote, lease
and leader - and the handle offers what the node offers for its own election: ``is_leader``, ``term``,
``leader_id``, ``leader_value``, ``lead(work)``, ``leadership()``, ``wait_for_leadership()``,
``step_down()`` and ``transfer_leadership()``.  The same guarantee holds per group: at no instant do two
members believe they lead one group with a valid lease (thesis §6.4.1), and a group's fencing tokens
increase strictly from one leadership to the next.  Two different groups are unrelated: one member may lead
both.

A handle is cheap and holds no state of its own: every read goes to the node, under its lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Optional

from raft_election.events import Event
from raft_election.leadership import Leadership
from raft_election.roles import Role

if TYPE_CHECKING:
    from raft_election.core import RaftCore
    from raft_election.node import RaftNode
    from raft_election.output import Output

__all__ = ["Group"]


class Group:
    """One election group hosted by ``node`` (get it with ``node.group(name)``).

    Commands on a group the node no longer hosts (dropped with ``node.drop_group``) raise
    :class:`~raft_election.errors.RaftElectionError`; reads answer as for a group nobody leads.
    """

    __slots__ = ("_name", "_node")

    def __init__(self, node: RaftNode, name: str) -> None:
        self._node = node
        self._name = name

    @property
    def name(self) -> str:
        """The group's name (``""``: the default group, the node's own election)."""
        return self._name

    @property
    def node(self) -> RaftNode:
        """The node that hosts the group."""
        return self._node

    @property
    def node_id(self) -> int:
        """This member's id."""
        return self._node.node_id

    @property
    def role(self) -> Role:
        """This member's role in the group (FOLLOWER when not hosted)."""
        return self._node._read_group(self._name, lambda core, now: core.role, Role.FOLLOWER)

    @property
    def term(self) -> int:
        """The group's current term on this member (0 when not hosted); a leadership's fencing token."""
        return self._node._read_group(self._name, lambda core, now: core.term, 0)

    @property
    def is_leader(self) -> bool:
        """True only while this member leads the group with a valid lease, against the clock right now."""
        node = self._node
        with node._lock:
            return node._is_leader_locked(node._clock(), self._name)

    @property
    def leader_id(self) -> Optional[int]:
        """The group's leader this member knows of, or None (its own id only while it holds the lease)."""
        node = self._node
        with node._lock:
            return node._leader_locked(node._clock(), self._name)

    @property
    def leader_value(self) -> Optional[bytes]:
        """The value the group's leader publishes (the leading member's ``value``), or None if unknown."""
        node = self._node
        with node._lock:
            return node._leader_value_locked(node._clock(), self._name)

    @property
    def candidate(self) -> bool:
        """Whether this member stands for election in the group."""
        return self._node._read_group(self._name, lambda core, now: core.candidate, False)

    def leadership(self) -> Optional[Leadership]:
        """The current leadership of the group while this member holds its lease, else None.

        As :meth:`RaftNode.leadership`: a handle stands for one unbroken lease.
        """
        node = self._node
        with node._lock:
            return node._leadership_locked(node._clock(), self._name)

    def wait_for_leadership(self, timeout: Optional[float] = None) -> Leadership:
        """Block until this member leads the group with a valid lease; return that leadership.

        Raises:
            TimeoutError: not leader within ``timeout`` (None: wait forever).
            RaftElectionError: the node is not running.
        """
        return self._node._wait_for_leadership(self._name, timeout)

    def lead(self, work: Callable[[Leadership], object], *, until: Optional[threading.Event] = None) -> None:
        """Run ``work(leadership)`` at each lease of the group this member begins (as ``RaftNode.lead``)."""
        self._node._lead(self._name, work, until)

    def step_down(self) -> None:
        """Give up the group's leadership now (lease first, then tell followers).  No-op unless leader."""
        self._node._command(lambda core, now: core.step_down(now), self._name)

    def transfer_leadership(self, target: Optional[int] = None) -> int:
        """Hand the group's leadership to ``target`` (default: the most responsive candidate); return it.

        Raises:
            RaftElectionError: not the group's leader, or ``target`` is not a peer.
            NoTransferTargetError: no peer stands for election in the group and answered recently.
        """
        chosen: list[int] = []

        def transfer(core: RaftCore, now: float) -> Output:
            target_id, output = core.transfer_leadership(now, target)
            chosen.append(target_id)
            return output

        self._node._command(transfer, self._name)
        return chosen[0]

    def set_candidate(self, candidate: bool) -> None:
        """Stand for election in the group or not (a non-candidate still votes); keeps a current leadership.

        May be called before the node starts.  A member whose ``config.candidate`` is False never stands.
        """
        self._node._set_group_candidate(self._name, candidate)

    def campaign(self) -> None:
        """Stand now rather than at the next election timeout (see ``RaftCore.campaign``)."""
        self._node._command(lambda core, now: core.campaign(now), self._name)

    def add_listener(self, listener: Callable[[Event], object]) -> None:
        """Call ``listener`` with every core event of this group, on the node's callback thread."""
        name = self._name

        def hears(group: str, event: Event) -> None:
            if group == name:
                listener(event)

        self._node.add_group_listener(hears)

    def __repr__(self) -> str:
        return (f"<Group {self._name!r} of node {self.node_id} role={self.role} term={self.term} "
                f"leader={self.leader_id}>")
