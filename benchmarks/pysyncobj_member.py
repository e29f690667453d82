"""One PySyncObj cluster member as a process that prints the event lines of ``raft-election run --json``.

The benchmarks run a PySyncObj cluster through :class:`raft_election.processes.MemberProcesses` (its
``command=`` parameter) and measure kill-the-leader failover exactly as for our own members::

    python benchmarks/pysyncobj_member.py --cluster FILE --id N [--tick S] [--connection-timeout S]
    python benchmarks/pysyncobj_member.py --cluster FILE --id N --defaults

``FILE`` is our JSON cluster file (:func:`raft_election.processes.write_cluster_file`); every member's
``host:port`` is used as its PySyncObj TCP address.  The member runs a bare :class:`pysyncobj.SyncObj`
with no replicated methods and no consumers (leader election only; no entry is ever appended apart from
PySyncObj's own no-op per new leader), with the journal in memory and no dump file, so nothing touches
the disk: like any in-memory PySyncObj member, a restarted member starts again at term 0.

Settings (:class:`pysyncobj.SyncObjConf`):

* default, tuned to the cluster file: ``raftMinTimeout`` and ``raftMaxTimeout`` = the file's
  ``election_timeout`` ``[MIN, MAX]``, ``appendEntriesPeriod`` = its ``heartbeat_interval``,
  ``autoTickPeriod`` = ``--tick`` and ``connectionTimeout`` = ``--connection-timeout`` when given (else
  PySyncObj's defaults).  PySyncObj requires ``raftMinTimeout > 3 * appendEntriesPeriod`` strictly; when
  the file has them equal (``[0.15, 0.3]`` with ``0.05``) the period is lowered to the largest float that
  passes, a change of about 1e-17 s, with a warning.  Settings apart by more are refused (exit status 2).
* ``--defaults``: ``SyncObjConf()`` as users run it; the file's timings are ignored, and so only its
  members are read.  Only the observation callback below is added (it does not change behaviour).

The settings in force are in the ``started`` line (``settings``).

Events: one JSON object per line on stdout, flushed at once, written under one lock (lines come from the
main thread and from PySyncObj's tick thread), each with ``event``, ``node``, ``term`` (PySyncObj's
``raftCurrentTerm``), ``leader`` (our member id, or null), ``monotonic`` (``time.monotonic()`` at the
moment of observation) and ``wall`` (``time.time()``).  How each moment is observed:

* ``started``: in the main thread, right after the ``SyncObj`` constructor returned (its port is bound or
  being retried, and its tick thread has started).
* ``became_leader``: PySyncObj has no leader leases, so a member leads from the moment its raft state
  becomes LEADER.  ``SyncObjConf.onStateChanged(old, new)`` is called by PySyncObj in its tick thread
  inside that very state change (after the term and the leader were set, before the first append_entries
  of the term is sent); ``monotonic`` is taken first thing in that callback and ``term`` is the term it
  leads.
* ``lost_leadership``: the same callback, when the state goes from LEADER to something else; ``term`` is
  the term it led (``current_term`` is the term by then), ``lease_end`` = ``monotonic`` = the moment of
  the callback, ``reason`` is ``higher_term`` (it saw a higher term) or ``no_majority`` (no answer from a
  majority for ``leaderFallbackTimeout``).  A member stopped by SIGTERM/SIGINT while leading also reports
  ``lost_leadership`` (``reason`` ``stopped``), once its ``SyncObj`` is destroyed.
* ``leader_changed``: whenever the leader this member knows (``SyncObj._getLeader()``, mapped to our id by
  its ``host:port``) changes, or stays the same node in a new term.  PySyncObj has no callback for it, but
  it sets its leader only in the body of a tick and while handling a received message, so it is checked at
  three points, all in the tick thread and without delay: in ``onStateChanged``; after every received
  message (the TCP transport's message callback, wrapped); and at the end of every tick's body through
  ``SyncObj.addOnTickCallback`` (before the tick waits on its sockets).  Between the two moments a
  demoted leader still names itself as leader; a member that is not in the LEADER state is never reported
  as its own leader.
* ``status``: on SIGUSR1, in the main thread (``is_leader`` and a few ``getStatus()`` values: ``role``,
  ``has_quorum``, ``connected`` partners, ...).
* ``stopped``: on SIGTERM or SIGINT, after ``SyncObj.destroy_synchronous()`` returned; exit status 0.

Signals are blocked in every thread (the mask is set before any thread starts) and taken by the main
thread with ``signal.sigwait``, so no signal handler ever runs.  Diagnostics go to stderr via ``logging``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, Callable, Optional, TextIO

from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.syncobj import _RAFT_STATE
from pysyncobj.transport import TCPTransport
from pysyncobj.version import VERSION as PYSYNCOBJ_VERSION

logger = logging.getLogger("pysyncobj_member")

#: SIGTERM and SIGINT stop the member, SIGUSR1 asks for a status line.
_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGUSR1})

_ROLES = {_RAFT_STATE.FOLLOWER: "follower", _RAFT_STATE.CANDIDATE: "candidate", _RAFT_STATE.LEADER: "leader"}

#: The SyncObjConf fields reported in the ``started`` line.
_REPORTED_SETTINGS = ("raftMinTimeout", "raftMaxTimeout", "appendEntriesPeriod", "autoTick", "autoTickPeriod",
                      "connectionTimeout", "connectionRetryTime", "leaderFallbackTimeout", "journalFile",
                      "fullDumpFile", "dynamicMembershipChange")


class SettingsError(Exception):
    """The cluster file or the flags give settings this member cannot run with."""


# ---------------------------------------------------------------------- cluster file and settings


def _address_key(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]").lower(), int(port)


def load_cluster(path: str) -> tuple[dict[int, str], dict[str, Any]]:
    """The members (id -> ``host:port``) and the whole document of our JSON cluster file ``path``."""
    with open(path, encoding="utf-8") as file:
        document = json.load(file)
    if not isinstance(document, dict) or not isinstance(document.get("members"), dict):
        raise SettingsError(f"{path}: not a cluster file with a 'members' table")
    members: dict[int, str] = {}
    for key, address in document["members"].items():
        if not isinstance(address, str) or ":" not in address:
            raise SettingsError(f"{path}: member {key}: address {address!r} is not host:port")
        try:
            _address_key(address)
            members[int(key)] = address
        except ValueError as error:
            raise SettingsError(f"{path}: member {key!r} {address!r}: {error}") from None
    return members, document


def _heartbeat_below(minimum: float, heartbeat: float) -> float:
    """``heartbeat``; if ``3 * heartbeat`` equals ``minimum``, the largest float below ``minimum / 3``."""
    if minimum > 3 * heartbeat:
        return heartbeat
    if not math.isclose(3 * heartbeat, minimum, rel_tol=1e-9):
        raise SettingsError(f"PySyncObj needs election_timeout min > 3 * heartbeat_interval; "
                            f"got {minimum} and {heartbeat}")
    period = minimum / 3
    while not minimum > 3 * period:
        period = math.nextafter(period, 0.0)
    logger.warning("heartbeat_interval %r lowered to %r: PySyncObj requires raftMinTimeout (%r) > "
                   "3 * appendEntriesPeriod", heartbeat, period, minimum)
    return period


def make_conf(document: Mapping[str, Any], *, defaults: bool, tick: Optional[float],
              connection_timeout: Optional[float]) -> SyncObjConf:
    """The ``SyncObjConf`` for this member (without the observation callback)."""
    settings: dict[str, Any] = {"journalFile": None, "fullDumpFile": None}  # in memory, as by default
    if not defaults:
        if "election_timeout" in document:
            minimum, maximum = (float(value) for value in document["election_timeout"])
            settings["raftMinTimeout"] = minimum
            settings["raftMaxTimeout"] = maximum
        if "heartbeat_interval" in document:
            minimum = settings.get("raftMinTimeout", SyncObjConf().raftMinTimeout)
            settings["appendEntriesPeriod"] = _heartbeat_below(minimum, float(document["heartbeat_interval"]))
        if tick is not None:
            settings["autoTickPeriod"] = tick
        if connection_timeout is not None:
            settings["connectionTimeout"] = connection_timeout
    conf = SyncObjConf(**settings)
    try:
        conf.validate()
    except AssertionError:
        shown = {name: getattr(conf, name) for name in _REPORTED_SETTINGS}
        raise SettingsError(f"PySyncObj refuses these settings: {shown}") from None
    return conf


# ---------------------------------------------------------------------- observation and output


class MemberObserver:
    """Turns PySyncObj's state changes and known leader into our event lines; thread-safe.

    One lock guards both what was last reported and the writing of lines, so lines are written whole and
    in the order the facts were observed.
    """

    def __init__(self, node_id: int, members: Mapping[int, str], stream: TextIO) -> None:
        self.node_id = node_id
        self._members = dict(members)
        self._ids = {_address_key(address): member for member, address in members.items()}
        self._stream = stream
        self.lock = threading.Lock()
        self._syncobj: Optional[SyncObj] = None
        self._leader: Optional[int] = None
        self._leader_term: Optional[int] = None
        self._led_term: Optional[int] = None
        self._closed = False

    def attach(self, syncobj: SyncObj) -> None:
        """Observe ``syncobj`` (call with :attr:`lock` held, before any callback can run)."""
        self._syncobj = syncobj

    # -- output (lock held)

    def emit(self, event: str, *, term: int, leader: Optional[int], monotonic: Optional[float] = None,
             **extra: Any) -> None:
        """Write one event line now; the caller holds :attr:`lock`."""
        record: dict[str, Any] = {"event": event, "node": self.node_id, "term": int(term), "leader": leader,
                                  "monotonic": time.monotonic() if monotonic is None else monotonic,
                                  "wall": time.time()}
        record.update(extra)
        try:
            self._stream.write(json.dumps(record) + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            logger.warning("cannot write the %s event line", event, exc_info=True)

    # -- callbacks, in PySyncObj's tick thread

    def on_state_changed(self, old: int, new: int) -> None:
        """``SyncObjConf.onStateChanged``: called inside PySyncObj's raft state change."""
        now = time.monotonic()
        with self.lock:
            syncobj = self._syncobj
            if syncobj is None or self._closed:
                return
            term = syncobj.raftCurrentTerm
            if new == _RAFT_STATE.LEADER:
                self._led_term = term
                self.emit("became_leader", term=term, leader=self.node_id, monotonic=now,
                          previous_role=_ROLES.get(old, str(old)))
            elif old == _RAFT_STATE.LEADER:
                led = term if self._led_term is None else self._led_term
                self._led_term = None
                self.emit("lost_leadership", term=led, leader=None, monotonic=now, lease_end=now,
                          reason="higher_term" if term > led else "no_majority", current_term=term,
                          role=_ROLES.get(new, str(new)))
            self._check_leader(syncobj, now)

    def check_leader(self) -> None:
        """Report the known leader if it changed (after a received message, at the end of a tick's body)."""
        now = time.monotonic()
        with self.lock:
            if self._syncobj is not None and not self._closed:
                self._check_leader(self._syncobj, now)

    def _check_leader(self, syncobj: SyncObj, now: float) -> None:
        leader = self.member_id(syncobj._getLeader())
        if leader == self.node_id and not syncobj._isLeader():
            leader = None  # a demoted leader, a moment before PySyncObj forgets itself as leader
        term = syncobj.raftCurrentTerm
        if leader != self._leader or (leader is not None and term != self._leader_term):
            self._leader = leader
            self._leader_term = term
            self.emit("leader_changed", term=term, leader=leader, monotonic=now)

    def member_id(self, node: Any) -> Optional[int]:
        """Our id of PySyncObj node ``node`` (a ``TCPNode``), or None."""
        if node is None:
            return None
        address = getattr(node, "address", None) or getattr(node, "id", None)
        try:
            return self._ids.get(_address_key(str(address)))
        except ValueError:
            logger.warning("leader %r is not a cluster member", node)
            return None

    # -- main thread

    def started(self, **extra: Any) -> None:
        """The ``started`` line (lock held by the caller)."""
        assert self._syncobj is not None
        self.emit("started", term=self._syncobj.raftCurrentTerm, leader=None, **extra)

    def status(self) -> None:
        """The ``status`` line (SIGUSR1)."""
        syncobj = self._syncobj
        assert syncobj is not None
        details: dict[str, Any] = {}
        for _ in range(3):  # getStatus() iterates the tick thread's dicts: retry if one changed meanwhile
            try:
                status = syncobj.getStatus()
            except RuntimeError:
                continue
            details = {key: status.get(key) for key in ("has_quorum", "log_len", "commit_idx", "uptime")}
            details["role"] = _ROLES.get(status.get("state"), str(status.get("state")))
            details["connected"] = sorted(
                member for member, address in self._members.items()
                if status.get(f"partner_node_status_server_{address}") == 2)
            break
        with self.lock:
            is_leader = bool(syncobj._isLeader())
            leader = self.member_id(syncobj._getLeader())
            if leader == self.node_id and not is_leader:
                leader = None
            self.emit("status", term=syncobj.raftCurrentTerm, leader=leader, is_leader=is_leader, **details)

    def stopped(self) -> None:
        """After the ``SyncObj`` was destroyed: ``lost_leadership`` if it led, then ``stopped``."""
        now = time.monotonic()
        with self.lock:
            syncobj = self._syncobj
            assert syncobj is not None
            self._closed = True
            term = syncobj.raftCurrentTerm
            if self._led_term is not None:
                self.emit("lost_leadership", term=self._led_term, leader=None, monotonic=now, lease_end=now,
                          reason="stopped", current_term=term)
                self._led_term = None
            self.emit("stopped", term=term, leader=None)


class ObservedTCPTransport(TCPTransport):
    """PySyncObj's TCP transport, calling ``after_message`` once each received message was handled."""

    def __init__(self, syncobj: SyncObj, self_node: Any, other_nodes: Any, *,
                 after_message: Callable[[], None]) -> None:
        super().__init__(syncobj, self_node, other_nodes)
        self._after_message = after_message

    def _onMessageReceived(self, node: Any, message: Any) -> None:  # noqa: N802 (PySyncObj's name)
        super()._onMessageReceived(node, message)
        self._after_message()


# ---------------------------------------------------------------------- main


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run one PySyncObj cluster member; print JSON event lines.")
    parser.add_argument("--cluster", required=True, metavar="FILE", help="our JSON cluster file")
    parser.add_argument("--id", required=True, type=int, help="this member's id in the cluster file")
    parser.add_argument("--tick", type=_positive, metavar="SECONDS",
                        help="SyncObjConf.autoTickPeriod (default: PySyncObj's)")
    parser.add_argument("--connection-timeout", type=_positive, metavar="SECONDS",
                        help="SyncObjConf.connectionTimeout (default: PySyncObj's)")
    parser.add_argument("--defaults", action="store_true",
                        help="SyncObjConf() defaults: ignore the cluster file's timings (not with --tick or "
                             "--connection-timeout)")
    args = parser.parse_args(argv)
    if args.defaults and (args.tick is not None or args.connection_timeout is not None):
        parser.error("--defaults runs PySyncObj's own settings: leave out --tick and --connection-timeout")
    return args


def run(args: argparse.Namespace, stream: TextIO = sys.stdout) -> int:
    """Run the member until SIGTERM or SIGINT; return the exit status."""
    try:
        members, document = load_cluster(args.cluster)
        if args.id not in members:
            raise SettingsError(f"member {args.id} is not in {args.cluster} (members {sorted(members)})")
        conf = make_conf(document, defaults=args.defaults, tick=args.tick,
                         connection_timeout=args.connection_timeout)
    except (OSError, ValueError, TypeError, SettingsError) as error:
        logger.error("%s", error)
        return 2

    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)  # before any thread: every thread inherits the mask
    observer = MemberObserver(args.id, members, stream)
    conf.onStateChanged = observer.on_state_changed
    address = members[args.id]
    others = [other for member, other in sorted(members.items()) if member != args.id]

    def transport_class(syncobj: SyncObj, self_node: Any, other_nodes: Any) -> ObservedTCPTransport:
        return ObservedTCPTransport(syncobj, self_node, other_nodes, after_message=observer.check_leader)

    # Hold the lock until ``started`` is written: no callback reports anything before it.
    with observer.lock:
        syncobj = SyncObj(address, others, conf=conf, transportClass=transport_class)
        observer.attach(syncobj)
        observer.started(pid=os.getpid(), address=address, transport="tcp", implementation="pysyncobj",
                         pysyncobj_version=PYSYNCOBJ_VERSION, mode="defaults" if args.defaults else "tuned",
                         settings={name: getattr(conf, name) for name in _REPORTED_SETTINGS})
    syncobj.addOnTickCallback(observer.check_leader)
    logger.info("member %d (%s) started, partners %s", args.id, address, others)
    try:
        while signal.sigwait(_SIGNALS) == signal.SIGUSR1:
            observer.status()
    finally:
        syncobj.destroy_synchronous()
        observer.stopped()
        logger.info("member %d stopped", args.id)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
