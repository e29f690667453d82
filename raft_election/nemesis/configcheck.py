"""The membership half of the nemesis checker: configuration entries from member events, and the changes made.

Members report every configuration entry they take as a ``membership`` event (``members``, ``index``,
``configuration_term``, ``committed``, ``parent`` when they created it as leader; see
:mod:`raft_election.member`).  :func:`check_configurations` feeds them, in time order, to the run's
:class:`~raft_election.invariants.SafetyChecker`, whose membership rules (thesis ch. 4) then apply to the
whole run: single-server changes, at most one uncommitted change, committed entries never rolled back, one
entry per version, and the entry a leader holds when its lease begins descending from every committed one.

One rule is checked here, because only a history of member processes shows it: **a member leads only
while it is in its own configuration** (thesis §4.2.2 and §4.2.3: a server outside its latest entry never
stands; a catch-up member never campaigns): a ``became_leader`` from a member whose latest entry (from its
``membership`` events, or the ``members`` its ``started`` event reports) does not list it is a violation,
kind ``non_member_leader``.

A member's entry version is known from its ``membership`` events only; a restarted member's is unknown
until its next one (unless ``started`` reports ``index`` and ``configuration_term``), since a member may
have stored an entry it was killed before reporting; the lease rule is checked only where it is known.

:func:`change_stats` summarizes the changes the nemesis made, from its fault records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable, Optional

import attrs

from raft_election.bench.report import Summary, summarize
from raft_election.invariants import Finding, SafetyChecker
from raft_election.nemesis.history import MEMBERSHIP_KINDS, FaultRecord
from raft_election.processes import MemberEvent

__all__ = ["ChangeStats", "change_stats", "check_configurations"]

#: A configuration entry's ``(term, index)``.
Version = tuple[int, int]


def _version(record: Mapping[str, Any]) -> Optional[Version]:
    term, index = record.get("configuration_term"), record.get("index")
    if isinstance(term, int) and isinstance(index, int):
        return (term, index)
    return None


def _members(record: Mapping[str, Any]) -> Optional[frozenset[int]]:
    members = record.get("members")
    if isinstance(members, Mapping):
        return frozenset(int(member) for member in members)
    return None


def check_configurations(events: Iterable[MemberEvent], safety: SafetyChecker, initial: Iterable[int],
                         time_format: Callable[[float], str]) -> list[Finding]:
    """Feed the configuration facts of ``events`` to ``safety``; return what it found, and this module's rule.

    ``initial``: the members of the seed configuration every original member started from.
    """
    safety.seed_configuration(initial)
    version: dict[int, Optional[Version]] = {}
    members: dict[int, Optional[frozenset[int]]] = {}
    facts: list[tuple[float, int, str, MemberEvent, Optional[Version]]] = []
    findings: list[Finding] = []
    for sequence, event in enumerate(events):  # each member's events in the order it reported them
        node, record = event.node, event.record
        if event.event == "started":
            version[node] = _version(record)
            members[node] = _members(record)
        elif event.event == "membership":
            version[node] = _version(record)
            members[node] = _members(record)
            facts.append((event.monotonic, sequence, "membership", event, version[node]))
        elif event.event == "became_leader":
            facts.append((event.monotonic, sequence, "leader", event, version.get(node)))
            listed = members.get(node)
            if listed is not None and node not in listed:
                findings.append(Finding(
                    kind="non_member_leader", at=event.monotonic, nodes=(node,),
                    message=(f"non_member_leader: member {node} became leader of term {event.term} at "
                             f"{time_format(event.monotonic)} while its configuration was "
                             f"{sorted(listed)}, without it")))
    facts.sort(key=lambda fact: (fact[0], fact[1]))
    for at, _, what, event, held in facts:
        if what == "leader":
            if held is not None:
                findings += safety.leader_configuration(event.node, event.term, held, at)
            continue
        parent = event.record.get("parent")
        listed = _members(event.record)
        if held is None or listed is None:
            continue
        if isinstance(parent, (list, tuple)) and len(parent) == 2:
            findings += safety.configuration_created(event.node, held, (int(parent[0]), int(parent[1])),
                                                     listed, at)
        if event.record.get("committed"):
            findings += safety.configuration_committed(event.node, held, at)
    return findings


@attrs.frozen(kw_only=True)
class ChangeStats:
    """The membership changes of one kind of operation (``add`` or ``remove``) the nemesis asked for."""

    op: str
    committed: int
    failed: int
    #: Seconds from the first request to the committed answer, of the committed changes.
    seconds: Optional[Summary]
    #: How many changes ended with each error (``timeout``, ``not_leader``, ...).
    errors: Mapping[str, int]
    #: Requests made, with those asked again of another leader.
    attempts: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return {"op": self.op, "committed": self.committed, "failed": self.failed,
                "seconds": None if self.seconds is None else attrs.asdict(self.seconds),
                "errors": dict(self.errors), "attempts": self.attempts}


def change_stats(faults: Sequence[FaultRecord]) -> dict[str, ChangeStats]:
    """Per operation, the changes recorded in the ``changes`` of membership fault records."""
    outcomes: dict[str, list[Mapping[str, Any]]] = {"add": [], "remove": []}
    for fault in faults:
        if fault.kind in MEMBERSHIP_KINDS:
            for change in fault.detail.get("changes", ()):
                outcomes.setdefault(str(change.get("op")), []).append(change)
    stats: dict[str, ChangeStats] = {}
    for op, changes in outcomes.items():
        if not changes:
            continue
        done = [change for change in changes if change.get("ok")]
        stats[op] = ChangeStats(
            op=op, committed=len(done), failed=len(changes) - len(done),
            seconds=summarize([float(change.get("seconds", 0.0)) for change in done]),
            errors=dict(Counter(str(change.get("error")) for change in changes if not change.get("ok"))),
            attempts=sum(int(change.get("attempts", 0)) for change in changes))
    return stats
