"""What one call into the election core asks the node to do (etcd's ``Ready``, in small).

Every entry point of :class:`~raft_election.core.RaftCore` returns an :class:`Output`; whoever drives the
core (the threaded node, the simulation) carries it out in order: persist, then send, then report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

import attrs

from raft_election.events import Event
from raft_election.hardstate import HardState
from raft_election.messages import Message

__all__ = ["Outgoing", "Output"]


@attrs.frozen(kw_only=True)
class Outgoing:
    """A message for one peer."""

    to: int
    message: Message


@attrs.frozen(kw_only=True)
class Output:
    """What one call into the core asks the node to do, in this order.

    1. Persist ``hard_state`` (if not None) durably.
    2. Hand the transport ``peers`` (if not None): the addresses of the members it may now exchange
       messages with, changed by a membership change.
    3. Only then send ``messages``: they may depend on it (a granted vote must be on disk first, and a
       message to a new member needs its address).
    4. Report ``events``.
    """

    hard_state: Optional[HardState] = None
    messages: tuple[Outgoing, ...] = ()
    events: tuple[Event, ...] = ()
    #: Peers to probe for death evidence (see :class:`~raft_election.transport.DeathProbe`), after sending.
    probes: tuple[int, ...] = ()
    #: The new ``{node id: address}`` map for the transport, when the members it may reach changed.
    peers: Optional[Mapping[int, str]] = None

    @property
    def empty(self) -> bool:
        """True if there is nothing to do."""
        return (self.hard_state is None and not self.messages and not self.events and not self.probes
                and self.peers is None)
