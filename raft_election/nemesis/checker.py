"""The nemesis checker: what a recorded nemesis :class:`~raft_election.nemesis.history.History` shows.

:func:`check` reads only the history (member events, faults, kills, fenced writes), so a history saved with
:func:`history_to_json` can be checked again later with :func:`history_from_json`, and tests can build
histories by hand.  It looks for violations of the guarantees (SPEC §4) and measures how the cluster
coped with the faults:

Violations (each one line, times in seconds since the run started) are those of
:mod:`raft_election.invariants`, whose module docstring has every rule (how a leadership's lease-held
interval is reconstructed from the events and kills, what counts as an overlap), checked on the whole run:

* ``election_safety``: two different members became leader in the same term;
* ``lease_overlap``: the lease-held intervals of leaderships of two different members overlap in time;
* ``fencing``: the fenced resource accepted a write with a token lower than one it had accepted before, or
  accepted the same token from two different members;
* ``double_vote``: a member voted for two different candidates in one term (``voted`` events, and the vote
  a restarted member reported as stored for its term in ``started``);
* with membership changes (:mod:`raft_election.nemesis.configcheck`): ``single_server``,
  ``uncommitted_change``, ``config_conflict``, ``config_rollback`` (the configuration entries members
  reported break a rule of thesis ch. 4) and ``non_member_leader`` (a member led while outside its own
  configuration).  Members come and go, but every rule above covers every member that ever ran: a removed
  member's leaderships, votes and entries count like anyone's;

and one of its own, about recovering from the faults:

* ``liveness``: after the last fault was healed, no lease was held at any moment of the next
  ``3 × election_timeout_max``.

A leadership that nothing else ended ends at ``History.ended`` (``end_of_run``).

Statistics are explained in :class:`CheckResult`; ``W = 2 × election_timeout_max`` is the window used to
attribute leaderless gaps and elections to faults.  A fault **touches** the window ``[t - W, t]`` when it
was active at some moment of it: ``fault.start <= t`` and ``fault.end >= t - W`` (applied before ``t``
and not healed more than ``W`` before it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import attrs

from raft_election.bench.report import Summary, summarize
from raft_election.invariants import Finding, LeaseInterval, SafetyChecker, replay_member_events
from raft_election.nemesis.configcheck import ChangeStats, change_stats, check_configurations
from raft_election.nemesis.history import ALL_KINDS, FAULT_KINDS, FaultRecord, History, LockRecord
from raft_election.processes import MemberEvent

__all__ = ["CheckResult", "FaultStats", "Finding", "Gap", "VIOLATION_KINDS", "check",
           "format_report", "history_from_json", "history_to_json", "leaderships", "replay_command",
           "result_to_json"]

logger = logging.getLogger(__name__)

#: Violation kinds, in the order :func:`check` reports them.
VIOLATION_KINDS = ("election_safety", "lease_overlap", "lease_order", "fencing", "double_vote",
                   "term_regression", "single_server", "uncommitted_change", "config_conflict",
                   "config_rollback", "non_member_leader", "liveness")

#: Unavailability of the gap before the first leadership of the run (the initial election).
STARTUP = "startup"
#: Unavailability of a gap no fault touches.
NONE = "none"

#: Version of the JSON documents written by :func:`history_to_json` and :func:`result_to_json`.
JSON_VERSION = 1


@attrs.frozen(kw_only=True)
class Gap:
    """A maximal leaderless period within ``[History.started, History.ended]``, and what it is blamed on."""

    start: float
    end: float
    #: The fault kinds touching ``[start - W, start]``; ``("startup",)`` for the gap before the first
    #: leadership, ``("none",)`` when no fault touches it.
    kinds: tuple[str, ...]
    #: Some leadership held a lease before the gap (else it is the initial election).
    after_leader: bool
    #: Some leadership held a lease after the gap (else the run ended without a leader).
    before_leader: bool
    #: The leadership after the gap is the one before it, resumed: a lease gap inside one office.
    lease_gap: bool = False

    @property
    def seconds(self) -> float:
        """How long no member held a lease."""
        return self.end - self.start

    @property
    def failover(self) -> bool:
        """A leaderless period between two different leaderships (not a lease gap): a failover time."""
        return self.after_leader and self.before_leader and not self.lease_gap


@attrs.frozen(kw_only=True)
class FaultStats:
    """The faults of one kind: how many, how long they lasted, the unavailability blamed on them."""

    kind: str
    count: int
    seconds: float
    unavailable_seconds: float


@attrs.frozen(kw_only=True)
class CheckResult:
    """What :func:`check` found in a history: the violations and the statistics of the run.

    Statistics (``W = 2 × election_timeout_max``; "during the run" means within ``[started, ended]``):

    * ``faults``: per kind applied, the count, the total seconds (``end - start``) and the unavailability
      blamed on it (below);
    * ``elections``: ``became_leader`` events during the run (a lease regained after a gap is none);
    * ``fast_elections``: those of them won by fast failover (on death evidence; the event's ``fast``);
    * ``leader_changes``: leaderships during the run, in order of start, whose member differs from the
      previous leadership's (the first leadership is not a change);
    * ``highest_term``: the highest term in any member event;
    * ``unavailable_seconds``: total time during the run when no lease interval covers it (the sum of the
      ``gaps``);
    * ``unavailable_by_kind``: each gap's length added to every kind in its ``kinds`` (so one gap may count
      for several kinds, and the per-kind figures may add up to more than the total);
    * ``failover``: the summary (seconds) of the lengths of the gaps between two leaderships (the gap before
      the first leader is ``first_leader``; a gap at the end of the run without a following leader, and a
      leader's own lease gap, count as unavailability only);
    * ``first_leader``: seconds from the start of the run to the first lease (None: no leader at all);
    * ``spurious``: the leaderships that started during the run, other than its first and other than leases
      regained after a gap, with no fault touching ``[start - W, start]``: "a leader change with no fault in
      the preceding window of 2 × election_timeout_max";
    * ``changes``: per operation (``add``, ``remove``), the membership changes made: committed, failed (and
      why), the seconds from request to committed answer (:class:`~raft_election.nemesis.configcheck.
      ChangeStats`).
    """

    findings: tuple[Finding, ...]
    leaderships: tuple[LeaseInterval, ...]
    gaps: tuple[Gap, ...]
    faults: Mapping[str, FaultStats]
    elections: int
    leader_changes: int
    highest_term: int
    duration: float
    unavailable_seconds: float
    unavailable_by_kind: Mapping[str, float]
    failover: Optional[Summary]
    first_leader: Optional[float]
    spurious: tuple[LeaseInterval, ...]
    fast_elections: int = 0
    changes: Mapping[str, ChangeStats] = attrs.field(factory=dict)

    @property
    def violations(self) -> tuple[str, ...]:
        """Every violation, one line each."""
        return tuple(finding.message for finding in self.findings)

    @property
    def ok(self) -> bool:
        """No violation was found."""
        return not self.findings

    @property
    def spurious_elections(self) -> int:
        """How many elections came with no fault in the preceding window."""
        return len(self.spurious)

    @property
    def stats(self) -> dict[str, Any]:
        """The statistics as a JSON-friendly dict (seconds)."""
        return {
            "duration": self.duration,
            "faults": {kind: {"count": s.count, "seconds": s.seconds,
                              "unavailable_seconds": s.unavailable_seconds}
                       for kind, s in self.faults.items()},
            "elections": self.elections,
            "fast_elections": self.fast_elections,
            "leader_changes": self.leader_changes,
            "highest_term": self.highest_term,
            "unavailable_seconds": self.unavailable_seconds,
            "unavailable_by_kind": dict(self.unavailable_by_kind),
            "gaps": len(self.gaps),
            "failover": attrs.asdict(self.failover) if self.failover is not None else None,
            "first_leader": self.first_leader,
            "spurious_elections": self.spurious_elections,
            "changes": {op: stats.to_json() for op, stats in self.changes.items()},
        }


# ---------------------------------------------------------------------------------------------- checking


def check(history: History) -> CheckResult:
    """Check ``history`` against the guarantees and measure the run (see :class:`CheckResult`)."""
    safety = _replay(history)
    held = safety.intervals(end_of_run=history.ended)  # in order of start
    window = 2 * history.election_timeout[1]
    for write in sorted(history.locks, key=lambda lock: lock.at):
        safety.wrote(write.node, write.token, write.at, accepted=write.accepted)
    found = [*safety.findings, *safety.check_intervals(end_of_run=history.ended)]
    found += check_configurations(history.events, SafetyChecker(time_format=lambda at: _t(history, at)),
                                  range(1, history.nodes + 1), lambda at: _t(history, at))
    findings = sorted(found, key=_violation_order)  # stable: in order within a kind
    findings += _liveness(history, held)
    gaps = _gaps(history, held, window)
    unavailable_by_kind: dict[str, float] = {}
    for gap in gaps:
        for kind in gap.kinds:
            unavailable_by_kind[kind] = unavailable_by_kind.get(kind, 0.0) + gap.seconds
    during = [lead for lead in held if history.started <= lead.start <= history.ended]
    first = held[0] if held else None
    spurious = tuple(lead for lead in during if lead is not first and not lead.resumed
                     and not _touching(history.faults, lead.start, window))
    changes = sum(1 for before, after in zip(during, during[1:]) if before.node != after.node)
    terms = [event.term for event in history.events]
    covered = [max(lead.start, history.started) for lead in held
               if min(lead.held_until, history.ended) > max(lead.start, history.started)]
    first_leader = min(covered) - history.started if covered else None
    result = CheckResult(
        findings=tuple(findings),
        leaderships=held,
        gaps=gaps,
        faults=_fault_stats(history.faults, unavailable_by_kind),
        elections=sum(1 for lead in during if not lead.resumed),
        leader_changes=changes,
        highest_term=max(terms, default=0),
        duration=history.ended - history.started,
        unavailable_seconds=sum(gap.seconds for gap in gaps),
        unavailable_by_kind=unavailable_by_kind,
        failover=summarize([gap.seconds for gap in gaps if gap.failover]),
        first_leader=first_leader,
        spurious=spurious,
        fast_elections=sum(1 for event in history.events
                           if event.event == "became_leader" and event.record.get("fast")
                           and history.started <= event.monotonic <= history.ended),
        changes=change_stats(history.faults),
    )
    logger.info("nemesis check: %d leaderships, %d violations", len(held), len(findings))
    for finding in result.findings:
        logger.debug("nemesis violation: %s", finding.message)
    return result


def _violation_order(finding: Finding) -> int:
    """Sort key: the order of ``VIOLATION_KINDS`` (an unknown kind last)."""
    kind = finding.kind
    return VIOLATION_KINDS.index(kind) if kind in VIOLATION_KINDS else len(VIOLATION_KINDS)


def leaderships(history: History) -> tuple[LeaseInterval, ...]:
    """Every ``became_leader`` of ``history`` with its lease-held interval, by start (rules: invariants)."""
    return _replay(history).intervals(end_of_run=history.ended)


def _replay(history: History) -> SafetyChecker:
    """The member events and kills of ``history`` fed to one checker, times relative to the run's start."""
    return replay_member_events(history.events, kills=history.kills, time_format=lambda at: _t(history, at))


def _t(history: History, at: float) -> str:
    """``at`` as seconds since the start of the run, for messages."""
    return f"t={at - history.started:.3f}s"


def _liveness(history: History, held: Sequence[LeaseInterval]) -> list[Finding]:
    """After the last heal, some lease must be held at some moment of ``[healed, healed + 3 × max]``."""
    if history.healed is None:
        return []
    start = history.healed
    end = start + 3 * history.election_timeout[1]
    if any(lead.start <= end and lead.held_until > start and lead.held_until > lead.start for lead in held):
        return []
    note = ""
    if history.ended < end:
        note = f" (the run ended {history.ended - start:.3f} s after the heal)"
    return [Finding(kind="liveness", at=start, until=end,
                    message=(f"liveness: no member held a lease in "
                             f"[{_t(history, start)}, {_t(history, end)}] "
                             f"after the last fault was healed{note}"))]


def _touching(faults: Sequence[FaultRecord], at: float, window: float) -> tuple[str, ...]:
    """The kinds (in ``ALL_KINDS`` order) of the faults active at some moment of ``[at - window, at]``."""
    kinds = {fault.kind for fault in faults if fault.start <= at and fault.end >= at - window}
    return tuple(sorted(kinds, key=_kind_order))


def _kind_order(kind: str) -> tuple[int, str]:
    """Sort key: the order of ``ALL_KINDS``, then unknown kinds alphabetically."""
    return (ALL_KINDS.index(kind) if kind in ALL_KINDS else len(ALL_KINDS), kind)


def _gaps(history: History, held: Sequence[LeaseInterval], window: float) -> tuple[Gap, ...]:
    """The maximal periods of ``[started, ended]`` no lease interval covers, each blamed on fault kinds."""
    spans = sorted((max(lead.start, history.started), min(lead.held_until, history.ended), lead.resumed)
                   for lead in held)
    spans = [(start, end, resumed) for start, end, resumed in spans if end > start]
    raw: list[tuple[float, float, bool, bool, bool]] = []
    cursor = history.started
    seen = False  # some lease interval ended before the cursor
    for start, end, resumed in spans:
        if start > cursor:
            raw.append((cursor, start, seen, True, resumed and seen))
        cursor = max(cursor, end)
        seen = True
    if history.ended > cursor:
        raw.append((cursor, history.ended, seen, False, False))
    gaps: list[Gap] = []
    for start, end, after_leader, before_leader, lease_gap in raw:
        if not after_leader:
            kinds: tuple[str, ...] = (STARTUP,)
        else:
            kinds = _touching(history.faults, start, window) or (NONE,)
        gaps.append(Gap(start=start, end=end, kinds=kinds, after_leader=after_leader,
                        before_leader=before_leader, lease_gap=lease_gap))
    return tuple(gaps)


def _fault_stats(faults: Sequence[FaultRecord], unavailable: Mapping[str, float]) -> dict[str, FaultStats]:
    """Count, total seconds and blamed unavailability per fault kind applied (``ALL_KINDS`` order)."""
    kinds = sorted({fault.kind for fault in faults}, key=_kind_order)
    return {kind: FaultStats(kind=kind, count=sum(1 for f in faults if f.kind == kind),
                             seconds=sum(f.end - f.start for f in faults if f.kind == kind),
                             unavailable_seconds=unavailable.get(kind, 0.0))
            for kind in kinds}


# ---------------------------------------------------------------------------------------------- reporting


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def replay_command(history: History) -> str:
    """The command line that replays the run's fault schedule."""
    kinds = ""
    if history.kinds and history.kinds != FAULT_KINDS:
        kinds = f" --faults {','.join(history.kinds)}"
    return (f"raft-election nemesis --seed {history.seed} --nodes {history.nodes} "
            f"--transport {history.transport}{kinds}")


def format_report(history: History, result: CheckResult) -> str:
    """A readable markdown report of ``result`` for ``history``: settings, faults, elections, violations."""
    low, high = history.election_timeout
    lines = [
        "# Nemesis report",
        "",
        (f"settings: {history.nodes} nodes, transport {history.transport}, seed {history.seed}, "
         f"election timeout {low * 1000:g}-{high * 1000:g} ms, "
         f"heartbeat {history.heartbeat_interval * 1000:g} ms, "
         f"duration {result.duration:.1f} s"),
        "",
        "| fault | count | seconds | unavailable s |",
        "|---|---|---|---|",
    ]
    for stats in result.faults.values():
        lines.append(f"| {stats.kind} | {stats.count} | {stats.seconds:.2f} "
                     f"| {stats.unavailable_seconds:.3f} |")
    for kind in (STARTUP, NONE):
        if kind in result.unavailable_by_kind:
            lines.append(f"| ({kind}) | - | - | {result.unavailable_by_kind[kind]:.3f} |")
    if not result.faults:
        lines.append("| (no faults) | 0 | 0 | - |")
    share = result.unavailable_seconds / result.duration if result.duration > 0 else 0.0
    failover = result.failover
    lines += [
        "",
        f"- elections: {result.elections} ({result.fast_elections} by fast failover), leader changes: "
        f"{result.leader_changes}, highest term: {result.highest_term}",
        f"- first leader after: {_ms(result.first_leader)} ms",
        f"- unavailable: {result.unavailable_seconds:.3f} s of {result.duration:.1f} s ({share:.1%}), "
        f"{len(result.gaps)} leaderless gaps",
        ("- failover ms (no failovers)" if failover is None else
         f"- failover ms ({failover.count}): min {_ms(failover.min)}, median {_ms(failover.median)}, "
         f"p90 {_ms(failover.p90)}, p99 {_ms(failover.p99)}, max {_ms(failover.max)}"),
        f"- spurious elections (no fault within 2 × {high * 1000:g} ms before): {result.spurious_elections}"
        + "".join(f"; member {lead.node} term {lead.term} at {_t(history, lead.start)}"
                  for lead in result.spurious[:10]),
    ]
    for change in result.changes.values():
        took = change.seconds
        errors = ", ".join(f"{error} {count}" for error, count in sorted(change.errors.items()))
        lines.append(
            f"- membership {change.op}: {change.committed} committed, {change.failed} failed"
            + (f" ({errors})" if errors else "")
            + ("" if took is None else
               f"; ms from request to committed answer: median {_ms(took.median)}, p99 {_ms(took.p99)}, "
               f"max {_ms(took.max)}"))
    members = [fault.detail["members"] for fault in history.faults if "members" in fault.detail]
    if members:
        lines.append(f"- members at the end: {', '.join(str(member) for member in members[-1])}")
    lines.append("")
    if result.ok:
        lines.append("no violations")
    else:
        lines.append(f"## {len(result.findings)} violations")
        lines.append("")
        lines += [f"- {message}" for message in result.violations]
        lines += ["", f"replay: {replay_command(history)}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- JSON


def result_to_json(history: History, result: CheckResult) -> dict[str, Any]:
    """``result`` as a JSON-friendly dict; times are seconds since the start of the run."""

    def rel(at: Optional[float]) -> Optional[float]:
        return None if at is None else at - history.started

    return {
        "version": JSON_VERSION,
        "settings": {"nodes": history.nodes, "transport": history.transport, "seed": history.seed,
                     "election_timeout": list(history.election_timeout),
                     "heartbeat_interval": history.heartbeat_interval},
        "ok": result.ok,
        "violations": list(result.violations),
        "findings": [{"kind": f.kind, "message": f.message, "at": rel(f.at), "until": rel(f.until),
                      "nodes": list(f.nodes)} for f in result.findings],
        "stats": result.stats,
        "leaderships": [{"node": lead.node, "term": lead.term, "start": rel(lead.start), "end": rel(lead.end),
                         "ended_by": lead.ended_by} for lead in result.leaderships],
        "gaps": [{"start": rel(gap.start), "end": rel(gap.end), "seconds": gap.seconds,
                  "kinds": list(gap.kinds), "failover": gap.failover} for gap in result.gaps],
        "spurious": [{"node": lead.node, "term": lead.term, "at": rel(lead.start)}
                     for lead in result.spurious],
        "replay": replay_command(history),
    }


def history_to_json(history: History) -> dict[str, Any]:
    """``history`` as a JSON-friendly dict that :func:`history_from_json` turns back into an equal history."""
    return {
        "version": JSON_VERSION,
        "nodes": history.nodes,
        "transport": history.transport,
        "seed": history.seed,
        "election_timeout": list(history.election_timeout),
        "heartbeat_interval": history.heartbeat_interval,
        "started": history.started,
        "ended": history.ended,
        "healed": history.healed,
        "kinds": list(history.kinds),
        "events": [{"node": e.node, "event": e.event, "term": e.term, "leader": e.leader,
                    "monotonic": e.monotonic, "received": e.received, "record": dict(e.record)}
                   for e in history.events],
        "faults": [{"kind": f.kind, "start": f.start, "end": f.end, "targets": list(f.targets),
                    "detail": dict(f.detail)} for f in history.faults],
        "kills": {str(node): list(times) for node, times in history.kills.items()},
        "locks": [{"at": w.at, "node": w.node, "token": w.token, "accepted": w.accepted}
                  for w in history.locks],
    }


def history_from_json(document: Mapping[str, Any]) -> History:
    """The history saved by :func:`history_to_json`.

    Raises:
        ValueError: the document is of an unknown version or misses a field.
    """
    version = document.get("version", JSON_VERSION)
    if version != JSON_VERSION:
        raise ValueError(f"unknown nemesis history version {version!r} (expected {JSON_VERSION})")
    try:
        low, high = document["election_timeout"]
        healed = document.get("healed")
        return History(
            nodes=int(document["nodes"]),
            transport=str(document["transport"]),
            seed=int(document["seed"]),
            election_timeout=(float(low), float(high)),
            heartbeat_interval=float(document["heartbeat_interval"]),
            started=float(document["started"]),
            ended=float(document["ended"]),
            healed=None if healed is None else float(healed),
            kinds=tuple(str(kind) for kind in document.get("kinds", ())),
            events=tuple(
                MemberEvent(node=int(e["node"]), event=str(e["event"]), term=int(e["term"]),
                            leader=None if e["leader"] is None else int(e["leader"]),
                            monotonic=float(e["monotonic"]), received=float(e["received"]),
                            record=dict(e["record"]))
                for e in document["events"]),
            faults=tuple(
                FaultRecord(kind=str(f["kind"]), start=float(f["start"]), end=float(f["end"]),
                            targets=tuple(int(t) for t in f["targets"]), detail=dict(f.get("detail", {})))
                for f in document["faults"]),
            kills={int(node): tuple(float(t) for t in times)
                   for node, times in document.get("kills", {}).items()},
            locks=tuple(LockRecord(at=float(w["at"]), node=int(w["node"]), token=int(w["token"]),
                                   accepted=bool(w["accepted"]))
                        for w in document.get("locks", ())),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed nemesis history: {exc!r}") from exc
