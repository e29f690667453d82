"""One cluster member as a process: what ``raft-election run`` does.

It loads the cluster file, builds a :class:`~raft_election.node.RaftNode` with the file's transport and a
:class:`~raft_election.storage.FileStorage` in the data directory, and reports events until SIGTERM or
SIGINT, which stop it gracefully (a leader hands over first) with exit status 0.  SIGUSR1 reports a status
snapshot (with every counter) as one more event.

For fault-injection tests, ``faults_dir`` (``run --faults DIR``) wraps the transport in a
:class:`~raft_election.nemesis.faults.FaultyTransport` whose link faults are read from ``DIR/<id>.json`` at
start and again on every SIGUSR2, after which a ``faults`` event reports the faults now applied (or, when
the file is bad, an ``error`` and the faults kept).

Events are reported either as human-readable lines or, with ``json_lines``, as exactly one JSON object per
line, flushed at once, with at least the keys ``event`` (``started``, ``became_leader``, ``lease_lost``,
``lease_regained``, ``lost_leadership``, ``leader_changed``, ``leader_value``, ``voted``, ``evidence``,
``membership``, ``status``, ``faults``, ``stopped``; with ``shards`` also ``group_leader`` and
``group_lost``), ``node``, ``term``, ``leader``, ``monotonic`` (``time.monotonic()``, comparable across
processes on one machine), ``wall`` (``time.time()``) and ``reported`` (``time.monotonic()`` when the line
was made: when the application's listener heard of the event, which for a leadership is after the instant
its lease began, given as ``monotonic``).
``started`` is the first line (events of the node before it are held back until it is written) and
carries the member's own ``value``, ``members`` (the configuration it starts with, as
``{"<id>": "<address>"}``: the one stored by an earlier run, else the cluster file's) and ``voter`` (False
for a member started with ``join`` that no configuration lists yet).  ``became_leader`` carries the
instant its first lease of the term began as ``monotonic``, ``fast`` (won by fast failover) and ``late``
(the votes came too late for a lease: it took office earlier and holds one from ``monotonic``);
``lease_lost`` (a lease gap: the member keeps office) carries ``lease_end``, and ``lease_regained`` the
instant the lease came back as ``monotonic``; ``leader_value`` (the leader this member knows of and the
value it publishes changed; ``leader`` None when no leader is known) carries ``value`` as text (UTF-8,
undecodable bytes backslash-escaped); ``evidence`` carries ``peer``, ``kind`` and ``about_leader`` (the
transport found ``peer``'s process gone); ``lost_leadership`` (the member left office) carries
``lease_end`` (when it stopped believing it leads), ``reason`` and ``had_lease`` (False when a
``lease_lost`` came first); ``membership`` (the configuration entry this member uses changed, or it
learned that the entry is committed: thesis §4.1) carries ``members`` (``{"<id>": "<address>"}``),
``index`` and ``configuration_term`` (the entry's), ``committed``, ``parent`` (``[term, index]`` of the
entry it replaced when this member created it as leader, else null) and ``voter`` (whether this member is
in it); ``faults`` carries ``faults`` (``drop_to``, ``loss``, ``delay``), ``path`` and, when the file was
bad, ``error``.

With ``join`` (``run --join``) the member is a new one joining a running cluster (thesis §4.2.1): its
cluster file lists the current members and itself; it stands for nothing until the leader adds it
(``raft-election members add``) and a configuration listing it arrives.

With ``shards`` (``run --shards N``, 1 to 10,000) the member also hosts, and stands for election in, the
election groups ``shard-0`` .. ``shard-{N-1}`` (a :class:`~raft_election.shards.Shards` of ``N``), and
``started`` carries ``shards`` (N).  With ``json_lines`` it reports its leadership of each named group as
events with ``group`` (the group's name) and the group's ``term`` (its fencing token): ``group_leader``
when it begins to hold a lease in the group (a win, or the end of a lease gap), with ``monotonic`` the
instant the lease began, ``regained`` (True after a lease gap of the same term) and ``fast`` (won by fast
failover), and ``leader`` this member; ``group_lost`` when it stops holding one (a lease gap, or leaving
office while holding the lease), with ``monotonic`` the instant it noticed, ``lease_end`` (when it stopped
believing it leads), ``reason`` (``lease_lost`` for a gap, else the reason of ``lost_leadership``) and
``leader`` None.  Human-readable output has no line per group, only a summary ("member 3 leads 8 of 40
shards") at most every :data:`SUMMARY_PERIOD` seconds, when the number changed.  The ``status``
event carries ``groups_hosted`` (the named groups this member hosts: its shards and any a peer's election
message created) and ``groups_leading`` (how many of those it leads with a valid lease now; the default
group is not counted, ``is_leader`` tells about it).

Like the command line, this module is an application of the library: it picks a transport by name.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Optional, TextIO

from raft_election.admin import members_json, parse_address
from raft_election.clusterfile import ClusterFile
from raft_election.config import leader_value, value_text
from raft_election.errors import ConfigError
from raft_election.events import (
    BecameLeader,
    DeathEvidence,
    Event,
    LeaderChanged,
    LeaderValue,
    LeaseLost,
    LeaseRegained,
    LostLeadership,
    MembershipChanged,
    VoteGranted,
)
from raft_election.groupname import DEFAULT_GROUP
from raft_election.node import RaftNode
from raft_election.shards import Shards
from raft_election.storage import FileStorage
from raft_election.transport import Transport

if TYPE_CHECKING:
    from raft_election.metrics import MetricsServer
    from raft_election.nemesis.faults import FaultyTransport, LinkFaults

__all__ = ["MAX_SHARDS", "SUMMARY_PERIOD", "EventReporter", "default_data_dir", "make_transport",
           "report_status", "run_member"]

logger = logging.getLogger(__name__)

#: The most shards (election groups) ``run --shards`` hosts, as :class:`~raft_election.shards.Shards` allows.
MAX_SHARDS = 10_000
#: Seconds between two human-readable ``shards`` summary lines at most (``run --shards`` without ``--json``).
SUMMARY_PERIOD = 5.0


def make_transport(name: str) -> Transport:
    """A new transport of the kind a cluster file names (``udp`` or ``zmq``).

    Raises:
        ConfigError: the in-memory transport (it connects threads of one process, not processes) or an
            unknown name.
    """
    if name == "udp":
        from transports.udp import UdpTransport  # noqa: PLC0415 (only the transport in use is imported)

        return UdpTransport()
    if name == "zmq":
        from transports.zeromq import ZmqTransport  # noqa: PLC0415

        return ZmqTransport()
    if name == "memory":
        raise ConfigError("transport", "'memory' connects nodes inside one process and cannot run as a "
                                       "separate member process; use 'udp' or 'zmq' in the cluster file")
    raise ConfigError("transport", f"unknown transport {name!r}; use 'udp' or 'zmq'")


def default_data_dir(cluster: ClusterFile, node_id: int) -> str:
    """Where a member keeps its term and vote when ``--data-dir`` is not given."""
    return os.path.join("raft-data", f"{cluster.cluster}-{node_id}")


class EventReporter:
    """Writes member events to a stream, as JSON lines or as human-readable lines; thread-safe."""

    def __init__(self, node_id: int, stream: TextIO, *, json_lines: bool) -> None:
        self._node_id = node_id
        self._stream = stream
        self._json = json_lines
        self._lock = threading.Lock()
        self._held: Optional[list[str]] = None

    def report(self, event: str, *, term: int, leader: Optional[int], monotonic: Optional[float] = None,
               **extra: Any) -> None:
        """Write one event now, unless held back (:meth:`hold`); ``monotonic`` defaults to now."""
        line = self._line(event, term, leader, monotonic, extra)
        with self._lock:
            if self._held is not None:
                self._held.append(line)
                return
            self._stream.write(line + "\n")
            self._stream.flush()

    def hold(self) -> None:
        """Keep every event back, in order, until :meth:`report_first` writes the one that must come first.

        A member's ``started`` line is reported once its node runs, but the node's threads may report
        events before that (a win, under load); held back, they follow ``started``, so that a reader
        replaying the lines never sees a process's events before its ``started``.
        """
        with self._lock:
            if self._held is None:
                self._held = []

    def report_first(self, event: str, *, term: int, leader: Optional[int],
                     monotonic: Optional[float] = None, **extra: Any) -> None:
        """Write this event, then every event held back since :meth:`hold`; stop holding them back."""
        line = self._line(event, term, leader, monotonic, extra)
        with self._lock:
            held, self._held = self._held or [], None
            for each in (line, *held):
                self._stream.write(each + "\n")
            self._stream.flush()

    def _line(self, event: str, term: int, leader: Optional[int], monotonic: Optional[float],
              extra: dict[str, Any]) -> str:
        record: dict[str, Any] = {
            "event": event, "node": self._node_id, "term": term, "leader": leader,
            "monotonic": time.monotonic() if monotonic is None else monotonic, "wall": time.time(),
            "reported": time.monotonic(),
        }
        record.update(extra)
        return json.dumps(record, sort_keys=False) if self._json else self._human(record)

    def _human(self, record: dict[str, Any]) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["wall"]))
        node, term, leader, event = record["node"], record["term"], record["leader"], record["event"]
        text = {
            "started": f"member {node} started at term {term}",
            "became_leader": (f"member {node} became leader of term {term} (fencing token {term})"
                              + (", fast failover" if record.get("fast") else "")
                              + (", its lease only now: its votes came late" if record.get("late") else "")),
            "lease_lost": (f"member {node} lost its lease in term {term}: it stays leader but does not "
                           f"claim it until a majority answers"),
            "lease_regained": f"member {node} holds its lease of term {term} again (fencing token {term})",
            "leader_value": (f"member {node} knows no leader in term {term}" if leader is None
                             else f"member {node}: leader {leader} publishes {record.get('value')!r}"),
            "evidence": (f"member {node} has evidence ({record.get('kind')}) that member "
                         f"{record.get('peer')} is gone"),
            "lost_leadership": f"member {node} no longer leads term {term} ({record.get('reason')})",
            "leader_changed": (f"member {node} follows {leader} in term {term}" if leader is not None
                               else f"member {node} knows no leader in term {term}"),
            "stopped": f"member {node} stopped at term {term}",
            "group_leader": (f"member {node} leads group {record.get('group')!r} in term {term} (fencing "
                             f"token {term})"),
            "group_lost": (f"member {node} no longer holds the lease of group {record.get('group')!r} in "
                           f"term {term} ({record.get('reason')})"),
            "shards": f"member {node} leads {record.get('leading')} of {record.get('count')} shards",
            "membership": (f"member {node} uses configuration {record.get('index')} "
                           f"({'committed' if record.get('committed') else 'not committed yet'}): members "
                           f"{', '.join(record.get('members') or ())}"
                           + ("" if record.get("voter", True) else f" ({node} is not one of them)")),
        }.get(event)
        if text is None:
            details = {k: v for k, v in record.items()
                       if k not in ("event", "node", "monotonic", "wall", "reported")}
            text = f"member {node} {event}: {json.dumps(details)}"
        return f"{stamp} {text}"

    def core_event(self, event: Event) -> None:
        """Report one core event (the node's ``observer`` callback)."""
        if isinstance(event, BecameLeader):
            self.report("became_leader", term=event.term, leader=self._node_id, monotonic=event.at,
                        fast=event.fast, late=event.late)
        elif isinstance(event, LeaseLost):
            self.report("lease_lost", term=event.term, leader=None, monotonic=event.at,
                        lease_end=event.lease_end)
        elif isinstance(event, LeaseRegained):
            self.report("lease_regained", term=event.term, leader=self._node_id, monotonic=event.at)
        elif isinstance(event, LostLeadership):
            self.report("lost_leadership", term=event.term, leader=None, monotonic=event.at,
                        lease_end=event.lease_end, reason=event.reason, had_lease=event.had_lease)
        elif isinstance(event, LeaderChanged):
            self.report("leader_changed", term=event.term, leader=event.leader_id)
        elif isinstance(event, LeaderValue):
            self.report("leader_value", term=event.term, leader=event.leader_id,
                        value=value_text(event.value))
        elif isinstance(event, VoteGranted):
            self.report("voted", term=event.term, leader=None, candidate=event.candidate)
        elif isinstance(event, DeathEvidence):
            self.report("evidence", term=event.term, leader=None, peer=event.peer, kind=event.kind,
                        about_leader=event.leader)
        elif isinstance(event, MembershipChanged):
            configuration = event.configuration
            self.report("membership", term=event.term, leader=None, monotonic=event.at,
                        members=members_json(configuration.members), index=configuration.index,
                        configuration_term=configuration.term, committed=event.committed,
                        parent=None if event.parent is None else list(event.parent),
                        voter=self._node_id in configuration.members)


    def group_event(self, group: str, event: Event) -> None:
        """Report when this member begins or stops holding a lease in a named group (a group listener).

        ``group_leader`` for a win (BecameLeader) or the end of a lease gap (LeaseRegained);
        ``group_lost`` for a lease gap (LeaseLost) or leaving office with the lease (LostLeadership with
        ``had_lease``: without it a ``group_lost`` came already).  Other events, and every event of the
        default group (reported by :meth:`core_event`), are not reported.
        """
        if group == DEFAULT_GROUP:
            return
        if isinstance(event, BecameLeader):
            self.report("group_leader", term=event.term, leader=self._node_id, monotonic=event.at,
                        group=group, regained=False, fast=event.fast)
        elif isinstance(event, LeaseRegained):
            self.report("group_leader", term=event.term, leader=self._node_id, monotonic=event.at,
                        group=group, regained=True, fast=False)
        elif isinstance(event, LeaseLost):
            self.report("group_lost", term=event.term, leader=None, monotonic=event.at, group=group,
                        lease_end=event.lease_end, reason="lease_lost")
        elif isinstance(event, LostLeadership) and event.had_lease:
            self.report("group_lost", term=event.term, leader=None, monotonic=event.at, group=group,
                        lease_end=event.lease_end, reason=event.reason)


#: Signals a member handles: SIGTERM and SIGINT stop it gracefully, SIGUSR1 reports its status.
_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGUSR1})
#: Handled as well with ``faults_dir``: reload the link faults.  Without it SIGUSR2 keeps its default.
_FAULT_SIGNAL = signal.SIGUSR2


def run_member(cluster: ClusterFile, node_id: int, data_dir: Optional[str] = None, *,
               json_lines: bool = False, stream: TextIO = sys.stdout, candidate: bool = True,
               faults_dir: Optional[str] = None, value: Optional[str] = None, admin: Optional[str] = None,
               admin_allow_remote: bool = False, metrics: Optional[str] = None, join: bool = False,
               shards: int = 0) -> int:
    """Run member ``node_id`` of ``cluster`` until SIGTERM or SIGINT; return the exit status (0).

    Must be called from the main thread before any other thread starts: the signals are blocked in every
    thread and taken synchronously with ``sigwait`` by the main thread, so no signal handler ever runs in
    the middle of code holding a lock (a handler that takes a lock the interrupted code holds deadlocks).

    With ``faults_dir`` (for testing), outbound messages go through a
    :class:`~raft_election.nemesis.faults.FaultyTransport` (seeded with ``node_id``) whose faults are read
    from ``faults_dir/<id>.json`` now and again on each SIGUSR2; each reload is reported as a ``faults``
    event.  A bad file at a reload is logged and reported (``error``) and the previous faults are kept.
    With ``admin`` (``host:port``) the member answers admin requests there (``raft-election status``,
    ``raft-election members``); with ``metrics`` (``host:port``) it serves Prometheus metrics at
    ``http://host:port/metrics``.  With ``join`` it is a new member joining the running cluster
    (``RaftConfig.join``): the cluster file lists the current members and ``node_id``.  With ``shards``
    (1 to :data:`MAX_SHARDS`) it hosts and stands in the groups of ``Shards(node, count=shards)`` and
    reports their leadership (see the module docstring).

    Raises:
        ConfigError: ``node_id`` is not a member, the transport cannot run as a process, the faults
            file is invalid at start, ``value`` is too long, or ``shards`` is out of range.
        StorageError: the data directory's state cannot be read (the member does not start).
        TransportError: the member's address cannot be bound.
    """
    config = cluster.config_for(node_id, candidate=candidate, join=join)
    published = leader_value(value)  # a bad value stops the member before anything starts
    if type(shards) is not int or not 0 <= shards <= MAX_SHARDS:
        raise ConfigError("shards", f"shards must be an int from 0 (none) to {MAX_SHARDS}, got {shards!r}")
    metrics_at = parse_address(metrics, "metrics") if metrics is not None else None
    reporter = EventReporter(node_id, stream, json_lines=json_lines)
    signals = _SIGNALS if faults_dir is None else _SIGNALS | {_FAULT_SIGNAL}
    faults_file: Optional[str] = None
    initial_faults: Optional[LinkFaults] = None
    if faults_dir is not None:
        from raft_election.nemesis.faults import faults_path, load_faults  # noqa: PLC0415 (testing only)

        faults_file = faults_path(faults_dir, node_id)
        initial_faults = load_faults(faults_file)  # a bad file stops the member before anything starts
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)  # inherited by every thread started from here on
    transport = make_transport(cluster.transport)
    faulty: Optional[FaultyTransport] = None
    if initial_faults is not None:
        from raft_election.nemesis.faults import FaultyTransport  # noqa: PLC0415

        faulty = FaultyTransport(transport, seed=node_id)
        faulty.set_faults(initial_faults)
        transport = faulty
    storage = FileStorage(data_dir if data_dir is not None else default_data_dir(cluster, node_id))
    try:
        node = RaftNode(config, transport, storage, observer=reporter.core_event, value=published,
                        admin=admin, admin_allow_remote=admin_allow_remote)
        if shards and json_lines:
            node.add_group_listener(reporter.group_event)
        # Before start: the node then creates every shard's group at once when it starts.
        sharded = Shards(node, count=shards) if shards else None
        reporter.hold()  # until "started" is written: no event line of this process comes before it
        node.start()
    except BaseException:
        storage.close()
        transport.close()
        raise
    server: Optional[MetricsServer] = None
    if metrics_at is not None:
        from raft_election.metrics import serve  # noqa: PLC0415 (an optional dependency)

        try:
            server = serve(node, metrics_at[1], metrics_at[0])
        except BaseException:
            node.stop()
            raise
    extra: dict[str, Any] = {} if faulty is None else {"faults": faulty.faults.to_json()}
    if server is not None:
        extra["metrics_port"] = server.port
    if sharded is not None:
        extra["shards"] = sharded.count
    status = node.status()
    reporter.report_first("started", term=status.term, leader=None, pid=os.getpid(),
                          address=config.peers[node_id], transport=cluster.transport,
                          voted_for=status.voted_for, value=value_text(published), admin=node.admin_address,
                          members=members_json(status.members), voter=status.voter, join=join, **extra)
    summary = _ShardSummary(reporter, node, sharded) if sharded is not None and not json_lines else None
    try:
        while True:
            if summary is None:
                signum = signal.sigwait(signals)
            else:
                received = signal.sigtimedwait(signals, summary.wait())
                if received is None:
                    summary.report()
                    continue
                signum = received.si_signo
            if signum == signal.SIGUSR1:
                report_status(reporter, node)
            elif signum == _FAULT_SIGNAL and faulty is not None and faults_file is not None:
                _reload_faults(reporter, node, faulty, faults_file)
            else:
                return 0
    finally:
        node.stop()
        if server is not None:
            server.close()
        status = node.status()
        reporter.report("stopped", term=status.term, leader=None, counters=dict(status.counters))


class _ShardSummary:
    """The human-readable summary of a sharded member: how many shards it leads, at most every period.

    A line is written only when the number changed since the last one (the first check always writes one),
    so a member with a thousand shards writes a line every few seconds at most instead of one per group.
    """

    def __init__(self, reporter: EventReporter, node: RaftNode, shards: Shards,
                 period: float = SUMMARY_PERIOD) -> None:
        self._reporter = reporter
        self._node = node
        self._shards = shards
        self._period = period
        self._due = time.monotonic() + period
        self._reported: Optional[int] = None

    def wait(self) -> float:
        """Seconds until the next check is due (at least 0)."""
        return max(0.0, self._due - time.monotonic())

    def report(self) -> None:
        """Check now (if due); write a ``shards`` line if the number of shards led changed."""
        now = time.monotonic()
        if now < self._due:
            return
        self._due = now + self._period
        leading = len(self._shards.owned())
        if leading != self._reported:
            self._reported = leading
            self._reporter.report("shards", term=self._node.term, leader=self._node.leader_id,
                                  leading=leading, count=self._shards.count)


def _reload_faults(reporter: EventReporter, node: RaftNode, faulty: FaultyTransport, path: str) -> None:
    """Read ``path`` again and apply its faults; report a ``faults`` event either way, never raise.

    A file that cannot be read or is invalid keeps the previous faults: the event then has ``error`` (the
    reason) and the faults still applied, so the controller waiting for it learns the change failed.
    """
    from raft_election.nemesis.faults import load_faults  # noqa: PLC0415

    error: Optional[str] = None
    try:
        faulty.set_faults(load_faults(path))
    except ConfigError as exc:
        error = str(exc)
        logger.error("member %d: keeping the previous link faults: %s", node.node_id, error)
    except Exception as exc:  # a member under test must survive whatever the controller writes
        error = f"{type(exc).__name__}: {exc}"
        logger.exception("member %d: keeping the previous link faults", node.node_id)
    extra: dict[str, Any] = {"faults": faulty.faults.to_json(), "path": path}
    if error is not None:
        extra["error"] = error
    reporter.report("faults", term=node.term, leader=node.leader_id, **extra)


def report_status(reporter: EventReporter, node: RaftNode) -> None:
    """A ``status`` event: role, term, lease, members, configuration, groups and every counter (SIGUSR1)."""
    status = node.status()
    reporter.report("status", term=status.term, leader=status.leader_id, role=str(status.role),
                    is_leader=status.is_leader, voted_for=status.voted_for,
                    lease_remaining=status.lease_remaining, followers=list(status.followers),
                    candidate=status.candidate, round_trip=status.round_trip,
                    lease_gap_seconds=status.lease_gap_seconds, members=members_json(status.members),
                    configuration={"index": status.configuration_index, "term": status.configuration_term,
                                   "committed": status.configuration_committed},
                    voter=status.voter, membership_change=status.membership_change,
                    groups_hosted=status.groups_hosted, groups_leading=status.groups_leading,
                    counters=dict(status.counters))



