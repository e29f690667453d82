"""Run a fault schedule against member processes and record the history the checker reads.

Members are ``raft-election run --json --faults DIR`` processes on 127.0.0.1 (UDP or ZeroMQ), with a shared
secret, so forged or mutated messages are refused as they would be in production.  Faults:

* ``kill`` / ``storm``: SIGKILL and restart with the data directory (a storm: the same members again and
  again, each time within a fraction of an election timeout);
* ``pause``: SIGSTOP/SIGCONT, shorter or longer than the lease;
* ``partition``, ``one_way``, ``partial``, ``loss``, ``delay``: described once for the cluster as a
  :class:`~raft_election.netfaults.NetworkFaults`; each member's share of it is written to
  ``DIR/<id>.json`` and applied by its fault-injecting transport on SIGUSR2 (see
  :mod:`raft_election.nemesis.faults`); the runner waits for every running member's ``faults``
  acknowledgement (with ``netns``, the cuts become blackhole routes instead);
* ``flood``: mutated and random datagrams or frames at a member's port;
* ``starve``: one busy process per core;
* ``add_member``, ``remove_member``, ``replace_member``: membership changes (thesis ch. 4) through the
  leader's admin channel (:mod:`raft_election.nemesis.changes`), as an operator makes them.  A fresh member
  gets a new id and new ports and is started with ``run --join`` and a cluster file of its own listing the
  current members and itself; it must be running before the leader is asked to add it.  After every
  change the runner asks the leader for its committed configuration and makes the processes match it:
  members of it that are not running are started again (a dead member whose removal failed), processes
  outside it are stopped, after the removed member lingered ``linger`` seconds (SIGTERM or SIGKILL).  So
  the runner's member list is always the cluster's, and the member count stays within
  ``min_members..max_members`` (an add at the most members is made a remove, and the other way round).
  Membership changes need an admin channel on every member, so they are on only when chosen
  (``--faults all`` or ``--faults membership``, or by name), and not with ``netns``.

Every process started here (members and busy loops) is ended by PID when the run ends, also on error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Optional

import attrs

from raft_election.codec import Codec
from raft_election.errors import ConfigError
from raft_election.garbage import flood, garbage_messages
from raft_election.nemesis.changes import ChangeOutcome
from raft_election.nemesis.cluster import ChangingCluster, entry_created
from raft_election.nemesis.faults import LinkFaults, faults_path, write_faults
from raft_election.nemesis.history import FAULT_KINDS, MEMBERSHIP_KINDS, FaultRecord, History
from raft_election.nemesis.netns import NetnsLab
from raft_election.nemesis.schedule import PlannedFault, expand_kinds, plan
from raft_election.netfaults import NO_NETWORK_FAULTS, NetworkFaults
from raft_election.processes import member_event

__all__ = ["NemesisSettings", "run_nemesis"]

logger = logging.getLogger(__name__)

SECRET = "nemesis: members authenticate every message"
#: Every member's port in network-namespace mode (each has an address of its own).
NETNS_PORT = 9400


@attrs.frozen(kw_only=True)
class NemesisSettings:
    """What to run (seconds)."""

    nodes: int = 5
    transport: str = "udp"
    duration: float = 60.0
    seed: int = 1
    election_timeout: tuple[float, float] = (0.150, 0.300)
    heartbeat_interval: float = 0.050
    #: Fault kinds and groups (``all``, ``membership``), expanded to kinds.
    kinds: tuple[str, ...] = attrs.field(default=FAULT_KINDS, converter=expand_kinds)
    #: Exactly this many faults, whatever the duration (None: as many as fit in ``duration``).
    rounds: Optional[int] = None
    #: Members in network namespaces, links cut by blackhole routes (root); else by the members' transport.
    netns: bool = False
    #: Membership changes keep the member count within ``min_members..max_members``.
    min_members: int = 3
    max_members: int = 7
    #: Seconds the leader is given to commit each change request (its admin ``timeout``); a refused change
    #: is asked again, of the next leader, for up to three times that.
    change_timeout: float = 10.0

    @property
    def membership(self) -> bool:
        """Whether membership changes are among the kinds (members then answer on an admin channel)."""
        return any(kind in MEMBERSHIP_KINDS for kind in self.kinds)


class _Run(ChangingCluster):
    """One run's processes, link faults and records."""

    def __init__(self, settings: NemesisSettings, workdir: str) -> None:
        self.settings = settings
        self.rng = random.Random(settings.seed ^ 0x5EED)
        self.membership = settings.membership
        if self.membership and settings.netns:
            raise ConfigError("faults", "membership changes start fresh members on new ports of 127.0.0.1, "
                                        "which network-namespace mode does not do; leave out --netns or the "
                                        "membership kinds")
        if self.membership and not 1 <= settings.min_members < settings.max_members:
            raise ConfigError("min_members", f"need 1 <= min_members < max_members, got "
                                             f"{settings.min_members} and {settings.max_members}")
        self.faults_dir = os.path.join(workdir, "faults")
        os.makedirs(self.faults_dir)
        self.lab: Optional[NetnsLab] = None
        prefix: Optional[Callable[[int], list[str]]] = None
        addresses: Optional[dict[int, str]] = None
        if settings.netns:
            self.lab = lab = NetnsLab(settings.nodes)
            prefix = lab.prefix
            try:
                lab.build()
            except BaseException:
                lab.destroy()
                raise
            addresses = {i: f"{lab.address(i)}:{NETNS_PORT}" for i in lab.hosts}
        try:
            super().__init__(workdir, transport=settings.transport,
                             election_timeout=settings.election_timeout,
                             heartbeat_interval=settings.heartbeat_interval, nodes=settings.nodes,
                             addresses=addresses, admin=self.membership, secret=SECRET, name="nemesis",
                             run_args=["--faults", self.faults_dir], command_prefix=prefix,
                             change_timeout=settings.change_timeout)
        except BaseException:
            if self.lab is not None:
                self.lab.destroy()
            raise
        self.codec = Codec("nemesis", SECRET.encode())
        self.records: list[FaultRecord] = []
        self.busy: list[subprocess.Popen[bytes]] = []

    # ------------------------------------------------------------------ helpers

    def aim(self, fault: PlannedFault, count: int = 1) -> list[int]:
        """``count`` distinct targets: the leader first when the fault aims at it, then random members."""
        targets: list[int] = []
        leader = self.leader()
        if fault.aim_leader and leader is not None and leader in self.members:
            targets.append(leader)
        others = [m for m in self.members if m not in targets]
        self.rng.shuffle(others)
        return targets + others[:count - len(targets)]

    def minority(self, wanted: int) -> int:
        """``wanted`` members, but at most a minority of the members there are now (at least one)."""
        return max(1, min(wanted, (len(self.members) - 1) // 2))

    def set_links(self, faults: NetworkFaults, also: Iterable[int] = ()) -> None:
        """Write each member (and ``also``) its share of ``faults``; wait until each running one took it."""
        members = [*self.members, *(node for node in also if node not in self.members)]
        for member in members:
            write_faults(faults_path(self.faults_dir, member), LinkFaults.of(faults, member, members))
        since = self.processes.mark()
        waiting = []
        for member in members:
            if self.processes.alive(member):
                with self.lock:
                    mark = self.start_marks[member]
                self.processes.wait_for(member_event(member, "started"), 30.0, mark)
                self.processes.signal(member, signal.SIGUSR2)
                waiting.append(member)
        for member in waiting:
            self.processes.wait_for(member_event(member, "faults"), 30.0, since)

    def record(self, kind: str, start: float, targets: Iterable[int], **detail: Any) -> None:
        self.records.append(FaultRecord(kind=kind, start=start, end=time.monotonic(), targets=tuple(targets),
                                        detail=detail))

    # ------------------------------------------------------------------ membership

    def settle(self, changes: Sequence[ChangeOutcome], *, linger: float = 0.0,
               stop: str = "term") -> dict[str, Any]:
        """Make the processes match the committed configuration the leader reports; return what was done.

        Members of it that are not running are started again; processes outside it (a removed member, a
        fresh one whose add failed) are stopped after ``linger`` seconds, by SIGTERM (``stop`` ``term``) or
        SIGKILL.  If no leader reports a committed configuration in time, the runner keeps its member list,
        changed by the changes that were committed, and stops nothing.
        """
        deadline = time.monotonic() + 3 * self.settings.change_timeout
        committed = self.changes.committed_members(deadline)
        if committed is None:
            members = set(self.members)
            for change in changes:
                if change.ok:
                    (members.add if change.op == "add" else members.discard)(change.node)
            self.members = tuple(sorted(members))
            logger.warning("no leader reported a committed configuration; assuming members %s", self.members)
            return {"members": list(self.members), "settled": False}
        self.members = tuple(sorted(committed))
        restarted = [node for node in self.members if not self.processes.alive(node)]
        for node in restarted:
            self.start(node)
        outside = [node for node in self.running() if node not in committed]
        if outside:
            time.sleep(linger)
        for node in outside:
            self.stop(node, stop)
        return {"members": list(self.members), "settled": True, "restarted": restarted, "stopped": outside}

    def committed_now(self) -> Mapping[int, str]:
        """The committed configuration's members now (the runner's list if no leader reports one)."""
        committed = self.changes.committed_members(time.monotonic() + 3 * self.settings.change_timeout)
        return committed if committed is not None else {m: self.addresses[m] for m in self.members}

    # ------------------------------------------------------------------ faults

    def apply(self, fault: PlannedFault) -> None:
        getattr(self, f"_{fault.kind}")(fault)

    def _kill(self, fault: PlannedFault) -> None:
        (target,) = self.aim(fault)
        start = self.kill(target)
        time.sleep(fault.duration)
        self.start(target)
        self.record("kill", start, [target])

    def _storm(self, fault: PlannedFault) -> None:
        targets = self.aim(fault, self.minority(int(fault.params["members"])))
        start = time.monotonic()
        for _ in range(int(fault.params["rounds"])):
            for target in targets:
                self.kill(target)
            time.sleep(float(fault.params["down"]))
            for target in targets:
                self.start(target)
            time.sleep(float(fault.params["up"]))
        self.record("storm", start, targets, rounds=fault.params["rounds"])

    def _pause(self, fault: PlannedFault) -> None:
        (target,) = self.aim(fault)
        start = self.processes.pause(target)
        time.sleep(fault.duration)
        self.processes.resume(target)
        self.record("pause", start, [target], seconds=fault.duration)

    def _links(self, fault: PlannedFault, faults: NetworkFaults, targets: Sequence[int],
               **extra: Any) -> None:
        """Cut the links ``faults`` cuts while the fault lasts."""
        start = time.monotonic()
        cuts = faults.cuts(self.members)
        if self.lab is not None:  # real links: blackhole routes in the senders' namespaces
            self.lab.set_cuts(set(cuts))
            time.sleep(fault.duration)
            self.lab.set_cuts(set())
        else:
            self.set_links(faults)
            time.sleep(fault.duration)
            self.set_links(NO_NETWORK_FAULTS)
        self.record(fault.kind, start, targets, cuts=sorted(cuts), **extra)

    def _partition(self, fault: PlannedFault) -> None:
        minority = set(self.aim(fault, self.minority(int(fault.params["minority"]))))
        majority = set(self.members) - minority
        self._links(fault, NO_NETWORK_FAULTS.partitioned(minority, majority), sorted(minority))

    def _one_way(self, fault: PlannedFault) -> None:
        (center,) = self.aim(fault)
        others = [m for m in self.members if m != center]
        self.rng.shuffle(others)
        chosen = others[:int(fault.params["cuts"])]  # at most every other member
        outbound = bool(fault.params["outbound"])
        cuts = {(center, b) if outbound else (b, center) for b in chosen}
        self._links(fault, NetworkFaults(blocked=cuts), [center], outbound=outbound)

    def _partial(self, fault: PlannedFault) -> None:
        share = float(fault.params["link_cut"])
        pairs = [(a, b) for a in self.members for b in self.members if a < b]
        cut = [pair for pair in pairs if self.rng.random() < share] or [self.rng.choice(pairs)]
        cuts = {(a, b) for a, b in cut} | {(b, a) for a, b in cut}
        self._links(fault, NetworkFaults(blocked=cuts), sorted({m for pair in cut for m in pair}))

    def _everywhere(self, fault: PlannedFault, faults: NetworkFaults, **detail: Any) -> None:
        start = time.monotonic()
        self.set_links(faults)
        time.sleep(fault.duration)
        self.set_links(NO_NETWORK_FAULTS)
        self.record(fault.kind, start, self.members, **detail)

    def _loss(self, fault: PlannedFault) -> None:
        self._everywhere(fault, NetworkFaults(drop_rate=fault.params["loss"]), loss=fault.params["loss"])

    def _delay(self, fault: PlannedFault) -> None:
        low, high = fault.params["delay"]
        self._everywhere(fault, NetworkFaults(delay=(low, high)), delay=[low, high])

    def _flood(self, fault: PlannedFault) -> None:
        (target,) = self.aim(fault)
        host, port = self.addresses[target].rsplit(":", 1)
        count = int(fault.params["messages"])
        seed = self.rng.getrandbits(32)
        start = time.monotonic()
        if self.lab is not None:  # the members' addresses exist only inside the namespaces: flood from one
            source = next(m for m in self.members if m != target)
            script = ("import sys; from raft_election.codec import Codec; "
                      "from raft_election.garbage import flood, garbage_messages; a = sys.argv; "
                      "print(flood(a[1], a[2], int(a[3]), garbage_messages(int(a[4]), "
                      "Codec('nemesis', a[6].encode()), int(a[5]), seed=int(a[7]))))")
            command = [*self.lab.prefix(source), sys.executable, "-c", script, self.settings.transport, host,
                       port, str(count), str(target), SECRET, str(seed)]
            done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
            sent = int(done.stdout.strip())
        else:
            sent = flood(self.settings.transport, host, int(port),
                         garbage_messages(count, self.codec, target, seed=seed))
        self.record("flood", start, [target], messages=sent)

    def _starve(self, fault: PlannedFault) -> None:
        start = time.monotonic()
        for _ in range(os.cpu_count() or 2):
            self.busy.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        time.sleep(fault.duration)
        self.stop_busy()
        self.record("starve", start, self.members, processes=os.cpu_count() or 2)

    def _add_member(self, fault: PlannedFault, instead_of: Optional[str] = None) -> None:
        """Start a fresh member and have the leader add it; maybe SIGKILL the leader right after it began.

        The kill comes as soon as the leader reports the entry that lists the new member (``crash_at``
        ``entry``: the change is pending, or just committed), or ``crash_after`` seconds after the request
        (``delay``: anywhere from before the catch-up round to after the commit).  The crashed leader is
        restarted ``duration`` seconds later; the change is asked again of the next leader meanwhile.
        """
        if len(self.members) >= self.settings.max_members and instead_of is None:
            self._remove_member(fault, instead_of="add_member")
            return
        start = time.monotonic()
        node = self.spawn()
        crashed: Optional[int] = None
        if fault.params.get("crash_leader"):
            leader = self.changes.wait_leader(time.monotonic() + 3 * self.settings.change_timeout)
            since = self.processes.mark()
            change = _Background(lambda: self.changes.change("add", node, self.addresses[node], first=leader))
            if fault.params.get("crash_at") == "entry" and leader is not None:
                with contextlib.suppress(TimeoutError):
                    self.processes.wait_for(entry_created(leader, node), self.settings.change_timeout, since)
            else:
                time.sleep(float(fault.params["crash_after"]))
            if leader is not None and self.processes.alive(leader):
                self.kill(leader)
                crashed = leader
            time.sleep(fault.duration)
            if crashed is not None:
                self.start(crashed)
            outcome = change.result()
        else:
            outcome = self.changes.change("add", node, self.addresses[node])
        after = self.settle([outcome])
        self.record("add_member", start, [node], changes=[outcome.to_json()], crashed_leader=crashed,
                    instead_of=instead_of, **after)

    def _remove_member(self, fault: PlannedFault, instead_of: Optional[str] = None) -> None:
        """Have the leader remove a member (itself, when aimed at it), which then lingers and is stopped.

        Sometimes the member is first cut off from every message, so it never learns of its removal and
        lingers as a disruptive server (thesis §4.2.3) until it is stopped.
        """
        if len(self.members) <= self.settings.min_members and instead_of is None:
            self._add_member(fault, instead_of="remove_member")
            return
        (target,) = self.aim(fault)
        isolate = bool(fault.params.get("isolate", False))
        start = time.monotonic()
        if isolate:
            self.set_links(NetworkFaults(blocked={(member, target) for member in self.members
                                                  if member != target}))
        outcome = self.changes.change("remove", target)
        after = self.settle([outcome], linger=float(fault.params.get("linger", 0.0)),
                            stop=str(fault.params.get("stop", "term")))
        if isolate:
            self.set_links(NO_NETWORK_FAULTS, also=[target] if self.processes.alive(target) else [])
        self.record("remove_member", start, [target], changes=[outcome.to_json()], isolated=isolate,
                    instead_of=instead_of, **after)

    def _replace_member(self, fault: PlannedFault) -> None:
        """Replace a member (maybe SIGKILLed first: a dead host) by a fresh one on new ports.

        The member count stays within bounds: remove first, then add, unless the cluster is at its
        fewest members, when the fresh member is added first; the second change is made only if the
        committed configuration after the first leaves room for it.
        """
        (target,) = self.aim(fault)
        start = time.monotonic()
        dead = bool(fault.params.get("dead", False))
        if dead:
            self.kill(target)
        outcomes: list[ChangeOutcome] = []
        fresh: Optional[int] = None
        if len(self.members) > self.settings.min_members:
            outcomes.append(self.changes.change("remove", target))
            members = self.committed_now()
            if len(members) < self.settings.max_members:
                fresh = self.spawn(members)
                outcomes.append(self.changes.change("add", fresh, self.addresses[fresh]))
        else:
            fresh = self.spawn()
            outcomes.append(self.changes.change("add", fresh, self.addresses[fresh]))
            if len(self.committed_now()) > self.settings.min_members:
                outcomes.append(self.changes.change("remove", target))
        after = self.settle(outcomes, linger=float(fault.params.get("linger", 0.0)),
                            stop=str(fault.params.get("stop", "term")))
        self.record("replace_member", start, [target] if fresh is None else [target, fresh],
                    changes=[outcome.to_json() for outcome in outcomes], dead=dead, **after)

    def stop_busy(self) -> None:
        for process in self.busy:
            if process.poll() is None:
                process.kill()
            process.wait()
        self.busy.clear()

    def close(self) -> None:
        self.stop_busy()
        super().close()
        if self.lab is not None:
            self.lab.destroy()


class _Background:
    """A call on a thread of its own, whose result (or exception) :meth:`result` hands back."""

    def __init__(self, call: Callable[[], ChangeOutcome]) -> None:
        self._call = call
        self._outcome: Optional[ChangeOutcome] = None
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="nemesis-change", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._outcome = self._call()
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def result(self) -> ChangeOutcome:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._outcome is not None
        return self._outcome


def run_nemesis(settings: NemesisSettings, *,
                progress: Callable[[PlannedFault], object] = lambda fault: None) -> History:
    """Start the members, apply the schedule of ``settings.seed``, wait for recovery, return the history."""
    low, high = settings.election_timeout
    schedule = plan(seed=settings.seed, duration=settings.duration, nodes=settings.nodes,
                    election_timeout=settings.election_timeout,
                    heartbeat_interval=settings.heartbeat_interval, kinds=settings.kinds,
                    rounds=settings.rounds)
    with tempfile.TemporaryDirectory(prefix="raft-election-nemesis-") as workdir:
        run = _Run(settings, workdir)
        try:
            started = time.monotonic()
            run.start_all()
            run.processes.wait_for(lambda e: e.event == "became_leader", 30.0)
            time.sleep(2 * high)
            for fault in schedule:
                run.apply(fault)
                progress(fault)
                time.sleep(fault.gap)
            healed = run.records[-1].end if run.records else None
            time.sleep(3 * high + 0.5)  # the liveness window after the last heal, and a margin
            ended = time.monotonic()
        finally:
            run.close()
        return History(nodes=settings.nodes, transport=settings.transport, seed=settings.seed,
                       election_timeout=(low, high), heartbeat_interval=settings.heartbeat_interval,
                       started=started, ended=ended, events=tuple(run.processes.events),
                       faults=tuple(run.records), kills={k: tuple(v) for k, v in run.kills.items()},
                       healed=healed, kinds=settings.kinds)

