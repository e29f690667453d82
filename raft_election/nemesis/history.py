"""What a nemesis run recorded: every member event, every fault applied, and the run's settings.

The checker (:mod:`raft_election.nemesis.checker`) needs nothing else, so a history saved as JSON can be
checked again later, and tests can build histories by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import attrs

from raft_election.processes import MemberEvent

__all__ = ["ALL_KINDS", "FAULT_KINDS", "MEMBERSHIP_KINDS", "FaultRecord", "History", "LockRecord"]

#: Fault kinds, as they appear in reports: the default schedule draws from these.
FAULT_KINDS = ("kill", "storm", "pause", "partition", "one_way", "partial", "loss", "delay", "flood",
               "starve")
#: Membership changes made through the leader's admin channel while the faults go on (thesis ch. 4): add a
#: fresh member, remove one, replace one.  Chosen with ``--faults all`` (or by name, or ``membership``).
MEMBERSHIP_KINDS = ("add_member", "remove_member", "replace_member")
#: Every kind the schedule knows, in report order.
ALL_KINDS = FAULT_KINDS + MEMBERSHIP_KINDS


@attrs.frozen(kw_only=True)
class FaultRecord:
    """One fault, from the moment it was applied to the moment it was healed (``time.monotonic()``)."""

    kind: str
    start: float
    #: When it was healed: the member restarted, resumed, the links restored, the flood or load stopped.
    end: float
    #: The members it was aimed at (for a partition: the minority side).
    targets: tuple[int, ...]
    detail: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class LockRecord:
    """A write accepted or refused by the fenced resource: who wrote, with which token, when."""

    at: float
    node: int
    token: int
    accepted: bool


@attrs.frozen(kw_only=True)
class History:
    """A whole run: settings, member events in arrival order, faults, kills, fenced writes."""

    nodes: int
    transport: str
    seed: int
    election_timeout: tuple[float, float]
    heartbeat_interval: float
    started: float
    ended: float
    events: tuple[MemberEvent, ...]
    faults: tuple[FaultRecord, ...]
    #: SIGKILL times per member: a killed member's beliefs (a lease it held) end there at the latest.
    kills: Mapping[int, tuple[float, ...]] = attrs.field(factory=dict)
    locks: tuple[LockRecord, ...] = ()
    #: When the last fault was healed (None: no fault was applied).
    healed: Optional[float] = None
    #: The kinds the schedule drew from (empty: not recorded, the default kinds).
    kinds: tuple[str, ...] = ()
