"""One invariant checker: who led when, and whether the guarantees of SPEC §4 held.

Every check of the project's safety guarantees goes through this module: the simulation's live oracle
(:class:`~raft_election.oracle.ElectionOracle`, which raises at the first violation as it happens), the
nemesis checker (:func:`raft_election.nemesis.checker.check`, on a recorded history) and the process and
lock tests (at the end of a test).  It is pure: no clock, no I/O, no threads.

A **history** is what the members did, as facts on one common clock (the simulation's virtual time, or
``time.monotonic()``, which is one clock for all processes on a machine): a member became leader of a term
(at the moment its lease began), lost its lease in a gap and regained it (keeping the office), lost the
leadership of a term (with the ``lease_end`` it reports: when it stopped believing it leads), was killed or
crashed, (re)started, stopped; it voted or persisted a term; the fenced resource accepted or refused a
write.  Each member's facts must be given in the order that member
produced them; facts of different members may interleave in any order.  :class:`SafetyChecker` takes them
one at a time; :func:`replay_member_events` feeds it the event lines of ``raft-election run --json``.

Rules (where earlier copies of this code disagreed, the rule chosen is the one written here):

**Lease intervals.**  A *leadership* begins with a ``became_leader`` and, after a lease gap in the same
office, again with a ``lease_regained`` (same node, same term); its lease interval (a
:class:`LeaseInterval`) is ``[start, end)`` from the lease start to the first that applies of:

1. the ``lease_end`` of the same process's ``lease_lost`` or ``lost_leadership`` *of that term*, if it
   reported one before anything below ended the leadership (a paused leader reports it late, but with the
   real lease end).  One of another term is ignored, and so is one of a later process of the node;
2. the same process's ``stopped``, or the node's next ``became_leader``, whichever it reported first: a
   node holds one leadership at a time, so one node's leaderships never overlap each other;
3. the node's first kill (or crash) at or after ``start`` and no later than its next ``started``: the
   process believed nothing after it died;
4. the node's next ``started`` (the process had ended before, without a recorded kill);
5. the end of the history (``end_of_run``) when one is given; otherwise the interval is *open*
   (``end`` None), which counts as lasting for ever.

An end before the start is taken as the start: an empty interval, a leadership that never held a lease.

**No overlapping leases** (thesis §6.4.1; SPEC §4 "at any instant at most one node believes it is
leader"): two leaderships of *different* nodes overlap when they share a moment of positive length,
``min(ends) > max(starts)``; touching (one ends where the next begins) is fine.  Every overlapping pair is
reported, once.  At a single instant (:meth:`SafetyChecker.lease_holders`), at most one node holds a lease.

**Leases follow terms** (thesis §6.4.1 with Raft §5.1): in order of their starts, lease intervals of
different nodes never go back to a lower term.  This is what makes a fencing token shared by a gap and its
recovery mean "the same holder, and no other holder in between": another node's lease between the two
would be of a higher term.  Every such pair is reported once (kind ``lease_order``).

**One leader per term** (Raft §5.2, Election Safety): a second node's ``became_leader`` (or
``lease_regained``) in a term another node won is a violation, reported once per (term, node).

**One vote per term** (Raft §5.2, Figure 2: ``votedFor`` is persistent): every record of a node's vote
in one term (a persisted ``votedFor``, a ``voted`` event, the vote a restarted member reports as stored in
``started``) names one candidate, across restarts.  Each new candidate is reported once, against each
different candidate recorded before it in that term.

**Terms never go back** (Raft Figure 2: ``currentTerm`` increases monotonically): a node's persisted term
never decreases, across restarts.

**Membership** (thesis ch. 4; the configuration is a log of one entry, versions ``(term, index)``): from
the entries leaders created (each with its parent, the entry it replaced) and the ones reported
committed:

* every entry changes at most one member against its parent (single-server changes, §4.1);
* an entry that changes the members is created only from a committed parent: at most one uncommitted
  change at any time (§4.1);
* committed entries are never rolled back (kind ``config_rollback``): the committed entries form one chain
  (of any two, one descends from the other: a leader may learn late that an older entry committed, never
  that a sibling did); every entry created with a greater version than an entry committed before
  descends from it (a deposed leader that has not heard of it yet may still create an entry of its
  older term, which can never commit: Raft §5.4.2 for a log of one entry); and the entry of every leader
  when its lease begins, or begins again after a gap, descends from every entry committed before;
* one version names one entry (``config_conflict``).

**Fencing tokens increase** (SPEC §4; Kleppmann, "How to do distributed locking"): in order of acceptance,
the fenced resource must not accept a write with a token lower than one it accepted before, nor the same
token from two different nodes.  Refused writes, and repeats by the same node, are fine.

Violations are :class:`Finding` records whose ``message`` starts with the kind (``election_safety: ...``);
times in messages are formatted by the ``time_format`` the caller passes in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Optional

import attrs

if TYPE_CHECKING:
    from raft_election.processes import MemberEvent

__all__ = ["Finding", "LeaseInterval", "SafetyChecker", "current_holder", "lease_order", "lease_overlaps",
           "replay_member_events"]

#: Formats a time for a message.
TimeFormat = Callable[[float], str]
#: A configuration entry's ``(term, index)``.
Version = tuple[int, int]


def _seconds(at: float) -> str:
    return f"{at:.6f}"


@attrs.frozen(kw_only=True)
class LeaseInterval:
    """One leadership of one node and the interval its lease was held: ``[start, end)``.

    ``end`` and ``ended_by`` are None while the interval is open.
    """

    node: int
    term: int
    start: float
    end: Optional[float] = None
    #: The rule that ended the interval (module docstring): ``lease_lost``, ``lost_leadership``,
    #: ``stopped``, ``next_leadership``, ``kill``, ``restarted`` or ``end_of_run``.
    ended_by: Optional[str] = None
    #: It began with ``lease_regained``: the same office as the node's previous interval, after a gap.
    resumed: bool = False

    @property
    def open(self) -> bool:
        """The node may still believe it leads: nothing ended the interval yet."""
        return self.end is None

    @property
    def held_until(self) -> float:
        """``end``, or +infinity while open."""
        return math.inf if self.end is None else self.end

    @property
    def seconds(self) -> float:
        """How long the lease was held (+infinity while open)."""
        return self.held_until - self.start


@attrs.frozen(kw_only=True)
class Finding:
    """One violation, with what a timeline needs to mark it."""

    kind: str
    message: str
    #: The moment (or the start of the period) of the violation; None when it is not known (a vote
    #: persisted without a time).
    at: Optional[float] = None
    #: The end of the period, when it is one (an overlap, a liveness window).
    until: Optional[float] = None
    nodes: tuple[int, ...] = ()


@attrs.frozen
class _Vote:
    candidate: int
    source: str
    at: Optional[float]


@attrs.frozen
class _Write:
    node: int
    token: int
    at: float


class SafetyChecker:
    """Takes a history one fact at a time; rebuilds the lease intervals and checks every guarantee.

    Methods that can reveal a violation at once return the findings it revealed (also kept in
    :attr:`findings`); overlaps of lease intervals are judged by :meth:`overlaps`, once the intervals
    are known (an open interval may already have lapsed, which its node reports only later).  Not
    thread-safe: a caller shared by threads holds a lock around it.

    Args:
        time_format: how times appear in messages (default: seconds with six decimals).
    """

    def __init__(self, *, time_format: TimeFormat = _seconds) -> None:
        self._format = time_format
        self.findings: list[Finding] = []
        self._intervals: list[LeaseInterval] = []
        self._open: dict[int, int] = {}  # node -> index of its open interval
        self._winners: dict[int, tuple[int, float]] = {}  # term -> (first winner, when)
        self._reported: set[tuple[int, int]] = set()  # (term, node) already reported as a second winner
        self._votes: dict[tuple[int, int], list[_Vote]] = {}  # (node, term) -> each different vote
        self._terms: dict[int, int] = {}
        self._highest: Optional[_Write] = None
        self._by_token: dict[int, _Write] = {}
        self._entries: dict[Version, tuple[Optional[Version], frozenset[int]]] = {}  # parent, members
        self._committed: dict[Version, float] = {}  # first time each entry was reported committed

    def _found(self, finding: Finding) -> list[Finding]:
        self.findings.append(finding)
        return [finding]

    def _close(self, node: int, end: float, ended_by: str) -> None:
        index = self._open.pop(node, None)
        if index is not None:
            interval = self._intervals[index]
            self._intervals[index] = attrs.evolve(interval, end=max(interval.start, end), ended_by=ended_by)

    # ------------------------------------------------------------------ leaderships

    def became_leader(self, node: int, term: int, at: float) -> list[Finding]:
        """``node`` won ``term``; its lease began at ``at``.  Checks one leader per term."""
        return self._began(node, term, at, resumed=False)

    def lease_regained(self, node: int, term: int, at: float) -> list[Finding]:
        """``node``, still in office in ``term`` after a lease gap, holds a lease again from ``at``."""
        return self._began(node, term, at, resumed=True)

    def lease_lost(self, node: int, term: int, lease_end: float) -> None:
        """``node``'s lease of ``term`` ran out at ``lease_end``; it keeps office (another term: ignored)."""
        self._ended(node, term, lease_end, "lease_lost")

    def _began(self, node: int, term: int, at: float, *, resumed: bool) -> list[Finding]:
        self._close(node, at, "next_leadership")
        self._open[node] = len(self._intervals)
        self._intervals.append(LeaseInterval(node=node, term=term, start=at, resumed=resumed))
        winner, won_at = self._winners.setdefault(term, (node, at))
        if winner == node or (term, node) in self._reported:
            return []
        self._reported.add((term, node))
        return self._found(Finding(
            kind="election_safety", at=min(won_at, at), until=max(won_at, at), nodes=(winner, node),
            message=(f"election_safety: two leaders in term {term}: member {winner} at "
                     f"{self._format(won_at)} and member {node} at {self._format(at)}")))

    def winners(self) -> dict[int, int]:
        """The first node seen to win each term."""
        return {term: node for term, (node, _) in self._winners.items()}

    def lost_leadership(self, node: int, term: int, lease_end: float) -> None:
        """``node`` left the office of ``term``, claiming it until ``lease_end`` (another term: ignored)."""
        self._ended(node, term, lease_end, "lost_leadership")

    def _ended(self, node: int, term: int, lease_end: float, ended_by: str) -> None:
        index = self._open.get(node)
        if index is not None and self._intervals[index].term == term:
            self._close(node, lease_end, ended_by)

    def stopped(self, node: int, at: float) -> None:
        """``node``'s process stopped (after giving up any leadership)."""
        self._close(node, at, "stopped")

    def killed(self, node: int, at: float) -> None:
        """``node``'s process was killed or crashed at ``at``: its open leadership ends there, if it began."""
        index = self._open.get(node)
        if index is not None and self._intervals[index].start <= at:
            self._close(node, at, "kill")

    def started(self, node: int, at: float) -> None:
        """A new process of ``node`` started: whatever the old one believed ended before."""
        self._close(node, at, "restarted")

    def intervals(self, end_of_run: Optional[float] = None) -> tuple[LeaseInterval, ...]:
        """Every leadership so far, by start; open ones end at ``end_of_run`` if given (else stay open)."""
        result = list(self._intervals)
        if end_of_run is not None:
            for index in self._open.values():
                interval = result[index]
                result[index] = attrs.evolve(interval, end=max(interval.start, end_of_run),
                                             ended_by="end_of_run")
        return tuple(sorted(result, key=lambda interval: (interval.start, interval.node)))

    def overlaps(self, end_of_run: Optional[float] = None) -> list[Finding]:
        """Every pair of different nodes' lease intervals that share a moment (see :func:`lease_overlaps`)."""
        return lease_overlaps(self.intervals(end_of_run), time_format=self._format)

    def check_intervals(self, end_of_run: Optional[float] = None) -> list[Finding]:
        """Everything judged on the lease intervals: overlaps, then leases going back to a lower term."""
        intervals = self.intervals(end_of_run)
        return (lease_overlaps(intervals, time_format=self._format)
                + lease_order(intervals, time_format=self._format))

    def lease_holders(self, at: float, holders: Iterable[int]) -> list[Finding]:
        """At instant ``at`` exactly ``holders`` believe they lead with a valid lease: at most one may."""
        found = tuple(sorted(holders))
        if len(found) <= 1:
            return []
        return self._found(Finding(kind="lease_overlap", at=at, nodes=found,
                                   message=(f"lease_overlap: {len(found)} lease holders at "
                                            f"{self._format(at)}: {list(found)}")))

    # ------------------------------------------------------------------ votes and terms

    def voted(self, node: int, term: int, candidate: int, *, source: str,
              at: Optional[float] = None) -> list[Finding]:
        """``node`` recorded a vote for ``candidate`` in ``term`` (``source``: how it was seen)."""
        votes = self._votes.setdefault((node, term), [])
        if any(vote.candidate == candidate for vote in votes):
            return []
        findings: list[Finding] = []
        for earlier in votes:
            findings += self._found(Finding(
                kind="double_vote", at=at, nodes=(node,),
                message=(f"double_vote: member {node} voted in term {term} for {earlier.candidate} "
                         f"({self._when(earlier.source, earlier.at)}) and for {candidate} "
                         f"({self._when(source, at)}): it voted twice in term {term}")))
        votes.append(_Vote(candidate, source, at))
        return findings

    def _when(self, source: str, at: Optional[float]) -> str:
        return source if at is None else f"{source} at {self._format(at)}"

    def persisted_term(self, node: int, term: int, at: Optional[float] = None) -> list[Finding]:
        """``node`` made ``term`` durable: it must not be lower than the last one it made durable."""
        last = self._terms.get(node, 0)
        self._terms[node] = term
        if term >= last:
            return []
        return self._found(Finding(kind="term_regression", at=at, nodes=(node,),
                                   message=f"term_regression: member {node}'s term went back from {last} "
                                           f"to {term}"))

    # ------------------------------------------------------------------ membership

    def configuration_created(self, node: int, version: Version, parent: Version, members: Iterable[int],
                              at: float) -> list[Finding]:
        """Leader ``node`` created the entry ``version`` listing ``members`` from the entry ``parent``."""
        members = frozenset(members)
        known = self._entries.get(version)
        if known is not None:
            if known == (parent, members):
                return []
            return self._found(Finding(
                kind="config_conflict", at=at, nodes=(node,),
                message=(f"config_conflict: member {node} created entry {version} with members "
                         f"{sorted(members)} from {parent}, but {version} was already {sorted(known[1])} "
                         f"from {known[0]}")))
        self._entries[version] = (parent, members)
        findings: list[Finding] = []
        before = self._entries.get(parent)
        if before is not None and members != before[1]:
            if len(members ^ before[1]) > 1:
                findings += self._found(Finding(
                    kind="single_server", at=at, nodes=(node,),
                    message=(f"single_server: member {node} created entry {version} ({sorted(members)}) from "
                             f"{parent} ({sorted(before[1])}): more than one member changed")))
            if parent not in self._committed:
                findings += self._found(Finding(
                    kind="uncommitted_change", at=at, nodes=(node,),
                    message=(f"uncommitted_change: member {node} changed the members in entry {version} "
                             f"while its parent {parent} was not committed")))
        return findings + self._descends(node, version, at, "created", older_only=True)

    def configuration_committed(self, node: int, version: Version, at: float) -> list[Finding]:
        """``node`` reported the entry ``version`` committed (the first report counts as its commit).

        It must lie on one chain with every entry committed before: descend from the older ones, and be an
        ancestor of the newer ones (a leader that learns late, after a pause, that its entry committed).
        """
        if version in self._committed:
            return []
        findings: list[Finding] = []
        for committed, when in self._committed.items():
            older, newer = sorted((committed, version))
            if self._ancestry(newer, older) is False:
                findings += self._found(Finding(
                    kind="config_rollback", at=at, nodes=(node,),
                    message=(f"config_rollback: entry {version} committed at {self._format(at)} (member "
                             f"{node}) and entry {committed}, committed at {self._format(when)}, are on "
                             f"different branches: neither descends from the other")))
        self._committed[version] = at
        return findings

    def leader_configuration(self, node: int, term: int, version: Version, at: float) -> list[Finding]:
        """``node``'s lease of ``term`` began at ``at`` while it held the entry ``version``."""
        return self._descends(node, version, at, f"held by the leader of term {term}")

    def seed_configuration(self, members: Iterable[int]) -> None:
        """Every member started from the same seed entry ``(0, 0)`` listing ``members`` (committed)."""
        self._entries.setdefault((0, 0), (None, frozenset(members)))
        self._committed.setdefault((0, 0), -math.inf)

    def _descends(self, node: int, version: Version, at: float, what: str, *,
                  older_only: bool = False) -> list[Finding]:
        """Check that ``version`` descends from every entry committed before ``at``.

        With ``older_only``, only from those with a smaller version (see the module docstring).
        """
        findings: list[Finding] = []
        for committed, when in self._committed.items():
            if older_only and committed >= version:
                continue
            if when < at and self._ancestry(version, committed) is False:
                findings += self._found(Finding(
                    kind="config_rollback", at=at, nodes=(node,),
                    message=(f"config_rollback: entry {version} {what} at {self._format(at)} (member {node}) "
                             f"does not descend from entry {committed}, committed at {self._format(when)}")))
        return findings

    def _ancestry(self, version: Version, ancestor: Version) -> Optional[bool]:
        """Whether ``ancestor`` is ``version`` or one of its ancestors; None if the chain is not known."""
        current: Optional[Version] = version
        while current is not None and current >= ancestor:
            if current == ancestor:
                return True
            entry = self._entries.get(current)
            if entry is None:
                return None
            current = entry[0]
        return False

    # ------------------------------------------------------------------ fencing

    def wrote(self, node: int, token: int, at: float, *, accepted: bool) -> list[Finding]:
        """The fenced resource accepted (or refused) ``node``'s write with ``token``; give them in order."""
        if not accepted:
            return []
        write = _Write(node, token, at)
        findings: list[Finding] = []
        highest = self._highest
        if highest is not None and token < highest.token:
            findings += self._found(Finding(
                kind="fencing", at=at, nodes=(highest.node, node),
                message=(f"fencing: write by member {node} with token {token} accepted at {self._format(at)} "
                         f"after token {highest.token} (member {highest.node}) was accepted at "
                         f"{self._format(highest.at)}")))
        same = self._by_token.setdefault(token, write)
        if same.node != node:
            findings += self._found(Finding(
                kind="fencing", at=at, nodes=(same.node, node),
                message=(f"fencing: token {token} accepted from member {same.node} at "
                         f"{self._format(same.at)} and from member {node} at {self._format(at)}")))
        if highest is None or token > highest.token:
            self._highest = write
        return findings


def lease_overlaps(intervals: Iterable[LeaseInterval], *,
                   time_format: TimeFormat = _seconds) -> list[Finding]:
    """Every pair of lease intervals of different nodes sharing a moment of positive length, by start.

    Open intervals count as lasting for ever.
    """
    ordered = sorted(intervals, key=lambda interval: (interval.start, interval.node))
    findings: list[Finding] = []
    for index, first in enumerate(ordered):
        for second in ordered[index + 1:]:
            if second.start >= first.held_until:
                break  # sorted by start: no later interval begins before ``first`` ends
            shared_end = min(first.held_until, second.held_until)
            if first.node == second.node or shared_end <= second.start:
                continue
            if math.isinf(shared_end):
                length = f"from {time_format(second.start)} on"
            else:
                length = f"for {(shared_end - second.start) * 1000:.1f} ms"
            findings.append(Finding(
                kind="lease_overlap", at=second.start, until=None if math.isinf(shared_end) else shared_end,
                nodes=(first.node, second.node),
                message=(f"lease_overlap: {_describe(first, time_format)} and "
                         f"{_describe(second, time_format)} both held a lease {length}")))
    return findings


def lease_order(intervals: Iterable[LeaseInterval], *, time_format: TimeFormat = _seconds) -> list[Finding]:
    """Every pair of different nodes' lease intervals where the later-starting one has the lower term."""
    ordered = sorted(intervals, key=lambda interval: (interval.start, interval.node))
    findings: list[Finding] = []
    highest: Optional[LeaseInterval] = None  # the highest-term interval started so far
    for interval in ordered:
        if highest is not None and interval.term < highest.term and interval.node != highest.node:
            findings.append(Finding(
                kind="lease_order", at=interval.start, nodes=(highest.node, interval.node),
                message=(f"lease_order: {_describe(interval, time_format)} began after "
                         f"{_describe(highest, time_format)}, of a higher term")))
        if highest is None or interval.term > highest.term:
            highest = interval
    return findings


def _describe(interval: LeaseInterval, time_format: TimeFormat) -> str:
    end = "open" if interval.end is None else time_format(interval.end)
    return (f"member {interval.node} term {interval.term} [{time_format(interval.start)}, {end}) "
            f"({interval.ended_by or 'still held'})")


def replay_member_events(events: Iterable[MemberEvent], *,
                         kills: Optional[Mapping[int, Iterable[float]]] = None,
                         time_format: TimeFormat = _seconds) -> SafetyChecker:
    """A checker fed with member event lines (``raft-election run --json``) and kill times.

    ``events`` must be in the order they were read (each member's in the order it wrote them); ``kills``
    gives the times each member was sent SIGKILL.  A kill is taken into account just before the member's
    next ``started`` event (or at the end), so it ends the leadership of the process it killed.
    Uses ``became_leader``, ``lease_lost`` and ``lost_leadership`` (their ``lease_end``),
    ``lease_regained``, ``stopped``, ``started`` (and the ``voted_for`` it reports) and ``voted`` (its
    ``candidate``); other events are ignored.
    """
    safety = SafetyChecker(time_format=time_format)
    pending = {node: sorted(times) for node, times in (kills or {}).items()}

    def apply_kills(node: int, until: float) -> None:
        times = pending.get(node, [])
        while times and times[0] <= until:
            safety.killed(node, times.pop(0))

    for event in events:
        node, at = event.node, event.monotonic
        lease_end = event.record.get("lease_end")
        if event.event == "became_leader":
            safety.became_leader(node, event.term, at)
        elif event.event == "lease_regained":
            safety.lease_regained(node, event.term, at)
        elif event.event == "lease_lost":
            safety.lease_lost(node, event.term, at if lease_end is None else float(lease_end))
        elif event.event == "lost_leadership":
            safety.lost_leadership(node, event.term, at if lease_end is None else float(lease_end))
        elif event.event == "stopped":
            safety.stopped(node, at)
        elif event.event == "started":
            apply_kills(node, at)
            safety.started(node, at)
            stored = event.record.get("voted_for")
            if stored is not None:
                safety.voted(node, event.term, int(stored), source="started", at=at)
        elif event.event == "voted":
            candidate = event.record.get("candidate")
            if candidate is not None:
                safety.voted(node, event.term, int(candidate), source="voted", at=at)
    for node in pending:
        apply_kills(node, math.inf)
    return safety


def current_holder(intervals: Sequence[LeaseInterval], alive: Callable[[int], bool]) -> Optional[int]:
    """Who leads now: the node of the latest leadership, if that one is still open and its node alive."""
    if not intervals:
        return None
    latest = max(intervals, key=lambda interval: interval.start)
    return latest.node if latest.open and alive(latest.node) else None
