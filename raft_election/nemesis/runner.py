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
* ``starve``: one busy process per core.

Every process started here (members and busy loops) is ended by PID when the run ends, also on error.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Optional

import attrs

from raft_election.codec import Codec
from raft_election.garbage import flood, garbage_messages
from raft_election.invariants import current_holder, replay_member_events
from raft_election.nemesis.faults import LinkFaults, faults_path, write_faults
from raft_election.nemesis.history import FAULT_KINDS, FaultRecord, History
from raft_election.nemesis.netns import NetnsLab
from raft_election.nemesis.schedule import PlannedFault, plan
from raft_election.netfaults import NO_NETWORK_FAULTS, NetworkFaults
from raft_election.processes import MemberProcesses, free_ports, member_event, write_cluster_file

__all__ = ["NemesisSettings", "run_nemesis"]

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
    kinds: tuple[str, ...] = FAULT_KINDS
    #: Exactly this many faults, whatever the duration (None: as many as fit in ``duration``).
    rounds: Optional[int] = None
    #: Members in network namespaces, links cut by blackhole routes (root); else by the members' transport.
    netns: bool = False


class _Run:
    """One run's processes, link faults and records."""

    def __init__(self, settings: NemesisSettings, workdir: str) -> None:
        self.settings = settings
        self.rng = random.Random(settings.seed ^ 0x5EED)
        self.lab: Optional[NetnsLab] = None
        prefix: Optional[Callable[[int], list[str]]] = None
        if settings.netns:
            self.lab = lab = NetnsLab(settings.nodes)
            prefix = lab.prefix
            try:
                lab.build()
            except BaseException:
                lab.destroy()
                raise
            self.addresses = {i: f"{lab.address(i)}:{NETNS_PORT}" for i in lab.hosts}
        else:
            kind = "udp" if settings.transport == "udp" else "tcp"
            self.addresses = {i: f"127.0.0.1:{port}" for i, port in
                              enumerate(free_ports(settings.nodes, kind=kind), 1)}
        self.members = tuple(self.addresses)
        self.faults_dir = os.path.join(workdir, "faults")
        os.makedirs(self.faults_dir)
        path = write_cluster_file(os.path.join(workdir, "cluster.json"), self.addresses,
                                  transport=settings.transport, cluster="nemesis", secret=SECRET,
                                  election_timeout=settings.election_timeout,
                                  heartbeat_interval=settings.heartbeat_interval)
        self.processes = MemberProcesses(path, workdir, self.members, run_args=["--faults", self.faults_dir],
                                         command_prefix=prefix)
        self.codec = Codec("nemesis", SECRET.encode())
        self.records: list[FaultRecord] = []
        self.kills: dict[int, list[float]] = {}
        self.busy: list[subprocess.Popen[bytes]] = []
        #: Event index at each member's latest start: SIGUSR2 may only go to a member that reported it
        #: started (before that the signal's default action would end it).
        self.start_marks = dict.fromkeys(self.members, 0)

    def start(self, node: int) -> None:
        self.start_marks[node] = self.processes.mark()
        self.processes.start(node)

    # ------------------------------------------------------------------ helpers

    def leader(self) -> Optional[int]:
        """The member that most recently took office, if it still runs and its lease interval is open."""
        intervals = replay_member_events(self.processes.events, kills=self.kills).intervals()
        return current_holder(intervals, self.processes.alive)

    def aim(self, fault: PlannedFault, count: int = 1) -> list[int]:
        """``count`` distinct targets: the leader first when the fault aims at it, then random members."""
        targets: list[int] = []
        leader = self.leader()
        if fault.aim_leader and leader is not None:
            targets.append(leader)
        others = [m for m in self.members if m not in targets]
        self.rng.shuffle(others)
        return targets + others[:count - len(targets)]

    def kill(self, node: int) -> float:
        at = self.processes.kill(node)
        self.kills.setdefault(node, []).append(at)
        return at

    def set_links(self, faults: NetworkFaults) -> None:
        """Write every member its share of ``faults`` and wait until each running one applied it."""
        for member in self.members:
            write_faults(faults_path(self.faults_dir, member), LinkFaults.of(faults, member, self.members))
        since = self.processes.mark()
        waiting = []
        for member in self.members:
            if self.processes.alive(member):
                self.processes.wait_for(member_event(member, "started"), 30.0, self.start_marks[member])
                self.processes.signal(member, signal.SIGUSR2)
                waiting.append(member)
        for member in waiting:
            self.processes.wait_for(member_event(member, "faults"), 30.0, since)

    def record(self, kind: str, start: float, targets: Iterable[int], **detail: Any) -> None:
        self.records.append(FaultRecord(kind=kind, start=start, end=time.monotonic(), targets=tuple(targets),
                                        detail=detail))

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
        targets = self.aim(fault, int(fault.params["members"]))
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
        minority = set(self.aim(fault, int(fault.params["minority"])))
        majority = set(self.members) - minority
        self._links(fault, NO_NETWORK_FAULTS.partitioned(minority, majority), sorted(minority))

    def _one_way(self, fault: PlannedFault) -> None:
        (center,) = self.aim(fault)
        others = [m for m in self.members if m != center]
        self.rng.shuffle(others)
        chosen = others[:int(fault.params["cuts"])]
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

    def stop_busy(self) -> None:
        for process in self.busy:
            if process.poll() is None:
                process.kill()
            process.wait()
        self.busy.clear()

    def close(self) -> None:
        self.stop_busy()
        self.processes.close()
        if self.lab is not None:
            self.lab.destroy()


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
            run.processes.start_all()
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
                       healed=healed)

