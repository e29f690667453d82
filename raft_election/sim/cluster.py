"""The simulated cluster: the real core of every server on one virtual clock and a seeded network.

Every message goes through the real wire codec.  An :class:`~raft_election.oracle.ElectionOracle` watches
every step and raises :class:`~raft_election.oracle.SafetyViolation` the moment a guarantee breaks.

Death evidence (fast failover): a probe a server asks for is answered like a transport would answer it.
It yields evidence after a round trip only if the probed server is crashed and the path both ways is up
(a paused server keeps its sockets; a partition or a lost packet says nothing).  With
``evidence_on_crash`` a crash also hands evidence to every server it could reach, as a ZeroMQ connection
reset would.  :meth:`SimulatedCluster.forge_evidence` injects false evidence about a live server.

Time model: one global virtual time (``cluster.now``); each server's clock runs at its own rate
(``local = rate * global + offset``, rates within ``clock_drift`` of each other), which is what the lease's
``max_clock_drift`` allowance has to absorb.

Membership changes (thesis ch. 4): :meth:`SimulatedCluster.add_server` starts a new server that joins
(``RaftConfig(join=True)``), and :meth:`SimulatedCluster.add_member` / :meth:`SimulatedCluster.remove_member`
ask a leader's core to change the configuration, exactly as ``RaftNode.add_member`` does.

A **slow** server (:meth:`SimulatedCluster.slow`) models a loaded host: it handles each of its inputs
(messages, timer ticks, evidence) late, by a random lag, in the order they came, so its heartbeats, answers
and votes leave late and its clock has moved on when it handles them.  A pause is the extreme case.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Optional, Union

from raft_election.codec import Codec
from raft_election.config import RaftConfig
from raft_election.core import Output, RaftCore
from raft_election.events import Event
from raft_election.hardstate import HardState
from raft_election.messages import Envelope
from raft_election.netfaults import FaultControls, NetworkFaults
from raft_election.oracle import ElectionOracle
from raft_election.roles import Role

__all__ = ["SimNode", "SimulatedCluster"]

_TICK = 0
_DELIVER = 1
_EVIDENCE = 2
#: An input of a slow server, due now after its lag: payload ``(kind, payload, incarnation)``.
_LAGGED = 3


def address(node_id: int) -> str:
    """A simulated server's address (the simulation routes by id; the address only has to be unique)."""
    return f"sim:{node_id}"


class SimNode:
    """One simulated server: its core (None while crashed), its durable state and its clock."""

    def __init__(self, node_id: int, config: RaftConfig, rate: float, offset: float) -> None:
        self.node_id = node_id
        self.config = config
        self.rate = rate
        self.offset = offset
        self.core: Optional[RaftCore] = None
        self.stored = HardState()
        self.paused = False
        #: What arrived while paused: ``(sender, message bytes)``, or ``(peer, evidence kind)``.
        self.pending: list[tuple[int, Union[bytes, str]]] = []
        #: Bumped at every start: evidence answers a probe of one incarnation only.
        self.incarnation = 0
        self.tick_generation = 0
        self.scheduled_deadline = math.nan
        self.events: list[tuple[float, Event]] = []
        #: The range of lags with which a slow server handles its inputs (None: at once).
        self.lag: Optional[tuple[float, float]] = None
        #: When its latest lagged input is handled: the next one is not handled before (inputs stay in order).
        self.lagged_until = -math.inf

    @property
    def alive(self) -> bool:
        """Running (possibly paused), not crashed."""
        return self.core is not None

    def local(self, now: float) -> float:
        """This server's clock reading at global time ``now``."""
        return self.rate * now + self.offset

    def to_global(self, local_time: float) -> float:
        """The global time at which this server's clock reads ``local_time``."""
        return (local_time - self.offset) / self.rate

    def __repr__(self) -> str:
        state = "crashed" if self.core is None else ("paused" if self.paused else repr(self.core))
        return f"<SimNode {self.node_id} {state}>"


class SimulatedCluster(FaultControls):
    """A cluster of :class:`~raft_election.core.RaftCore` servers on a virtual clock and network.

    The network's faults are a :class:`~raft_election.netfaults.NetworkFaults` value with the controls of
    :class:`~raft_election.netfaults.FaultControls` (``partition``, ``isolate``/``rejoin``,
    ``block``/``unblock``, ``heal``, ``can_reach``, the random settings and ``faults`` itself): the same
    model and semantics as :class:`transports.memory.InMemoryNetwork`'s (see :mod:`raft_election.netfaults`;
    a partition replaces the previous partition, isolations and blocks stay until undone or healed).

    Args:
        members: how many servers (ids 1..n), or an iterable of ids.
        seed: seeds every random choice (network faults, timeouts, clock rates): equal seeds replay equally.
        delay: range of one-way message delays, seconds.
        drop_rate, duplicate_rate: probability that a message is lost / delivered twice.
        reorder_rate: probability that a copy is held back so that later messages overtake it (random
            delays reorder messages too).
        clock_drift: servers' clock rates are drawn from ``[1 - clock_drift, 1]``; keep it at most the
            configured ``max_clock_drift`` for the lease guarantee to hold.
        persist: if False, a restart loses the server's term and vote (models storage that does not
            survive a crash, like MemoryStorage across processes); used to show the oracle catches it.
        death_evidence: whether probes are answered (a transport with the DeathProbe capability).
        evidence_on_crash: whether a crash also hands evidence to every server it could reach.
        oracle: the oracle to report to (a fresh raising one by default).
        stamp_first: a new leader commits an entry of its own term before a membership change (thesis
            §4.1 erratum); False only to show the bug it prevents.
        config: extra :class:`RaftConfig` settings for every server (``election_timeout`` etc.).
    """

    def __init__(
        self,
        members: Union[int, Iterable[int]] = 5,
        *,
        seed: int = 0,
        delay: tuple[float, float] = (0.001, 0.005),
        drop_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        reorder_rate: float = 0.0,
        clock_drift: float = 0.0,
        persist: bool = True,
        death_evidence: bool = True,
        evidence_on_crash: bool = False,
        oracle: Optional[ElectionOracle] = None,
        stamp_first: bool = True,
        **config: Any,
    ) -> None:
        ids = list(range(1, members + 1)) if isinstance(members, int) else sorted(members)
        self._rng = random.Random(seed)
        self._settings = config
        self._stamp_first = stamp_first
        self._clock_drift = clock_drift
        peers = {node_id: address(node_id) for node_id in ids}
        self.configs: dict[int, RaftConfig] = {
            node_id: RaftConfig(node_id=node_id, peers=peers, **config) for node_id in ids}
        first = self.configs[ids[0]]
        self._codec = Codec(first.cluster, first.secret)
        self.now = 0.0
        self._faults = NetworkFaults(delay=delay, drop_rate=drop_rate, duplicate_rate=duplicate_rate,
                                     reorder_rate=reorder_rate)
        self.persist = persist
        self.death_evidence = death_evidence
        self.evidence_on_crash = evidence_on_crash
        #: Evidence handed to servers: ``(global time, to, about, kind)``.
        self.evidence_log: list[tuple[float, int, int, str]] = []
        self.oracle = oracle if oracle is not None else ElectionOracle()
        self.oracle.seed(ids)
        self.nodes: dict[int, SimNode] = {}
        for node_id in ids:
            rate = 1.0 - self._rng.uniform(0.0, clock_drift)
            offset = self._rng.uniform(0.0, 1000.0)
            self.nodes[node_id] = SimNode(node_id, self.configs[node_id], rate, offset)
        self._queue: list[tuple[float, int, int, int, Any]] = []
        self._seq = 0
        self.delivered = 0
        self.dropped = 0
        for node_id in ids:
            self.start(node_id)

    # ------------------------------------------------------------------ lifecycle faults

    def start(self, node_id: int) -> None:
        """Start (or restart) a crashed server from its durable state."""
        node = self.nodes[node_id]
        if node.alive:
            raise ValueError(f"node {node_id} is already running")
        rng = random.Random(self._rng.getrandbits(64))
        node.core = RaftCore(node.config, node.stored, node.local(self.now), rng,
                             stamp_first=self._stamp_first)
        node.incarnation += 1
        node.paused = False
        node.pending.clear()
        self._schedule_tick(node)

    def crash(self, node_id: int) -> None:
        """Kill a server: it forgets everything but its durable state (nothing, with ``persist=False``)."""
        node = self.nodes[node_id]
        core = node.core
        if core is None:
            return
        if core.role is Role.LEADER:
            # What the process believed ends with it, or earlier if its lease had run out meanwhile (a
            # paused or slow leader had not noticed yet): tell the oracle, whose lease intervals would
            # otherwise last until the kill.
            believed_until = min(core.lease_expiry, node.local(self.now))
            self.oracle.lost_leadership(node_id, core.term, node.to_global(believed_until))
        node.core = None
        node.paused = False
        node.pending.clear()
        node.tick_generation += 1
        node.scheduled_deadline = math.nan
        if not self.persist:
            node.stored = HardState()
        self.oracle.node_crashed(node_id, self.now)
        if self.death_evidence and self.evidence_on_crash:
            for other in self.nodes.values():
                if other.alive and other.node_id != node_id:
                    self._answer_probe(other.node_id, node_id, "connection_refused", round_trips=1)

    def restart(self, node_id: int) -> None:
        """Crash (if running) and start again."""
        self.crash(node_id)
        self.start(node_id)

    def pause(self, node_id: int) -> None:
        """Freeze a server (like SIGSTOP): its clock runs on, it handles nothing until :meth:`resume`."""
        node = self.nodes[node_id]
        if node.alive:
            node.paused = True

    def resume(self, node_id: int) -> None:
        """Unfreeze a paused server: it first handles whatever arrived meanwhile, then its timers."""
        node = self.nodes[node_id]
        if not node.alive or not node.paused:
            return
        node.paused = False
        node.scheduled_deadline = math.nan
        pending, node.pending = node.pending, []
        for sender, data in pending:
            if isinstance(data, str):
                self._evidence_now(node, sender, data)
            else:
                self._deliver_now(node, sender, data)
        self._tick(node)

    def slow(self, node_id: int, lag: Optional[tuple[float, float]]) -> None:
        """Make a server handle every input late by a lag drawn from ``lag`` (seconds), in order; None: not.

        Raises:
            ValueError: ``lag`` is not a range ``0 <= low <= high``.
        """
        if lag is not None and not 0.0 <= lag[0] <= lag[1]:
            raise ValueError(f"lag must be a range 0 <= low <= high, got {lag!r}")
        self.nodes[node_id].lag = lag

    # ------------------------------------------------------------------ network faults

    def _current_faults(self) -> NetworkFaults:
        return self._faults

    def _change_faults(self, change: Callable[[NetworkFaults], NetworkFaults]) -> None:
        self._faults = change(self._faults)

    def forge_evidence(self, node_id: int, about: int, kind: str = "forged") -> None:
        """Hand ``node_id`` death evidence about ``about`` now, true or not (a forged ICMP error)."""
        node = self.nodes[node_id]
        if node.alive:
            self._push(self.now, _EVIDENCE, node_id, (node.incarnation, about, kind))

    # ------------------------------------------------------------------ commands

    def step_down(self, node_id: int) -> None:
        """Ask a server to give up leadership (no-op unless it leads)."""
        core = self._core(node_id)
        self._apply(self.nodes[node_id], core.step_down(self.nodes[node_id].local(self.now)))

    def transfer_leadership(self, node_id: int, target: Optional[int] = None) -> int:
        """Ask the leader ``node_id`` to hand over; returns the target (see RaftCore.transfer_leadership)."""
        node = self.nodes[node_id]
        target, output = self._core(node_id).transfer_leadership(node.local(self.now), target)
        self._apply(node, output)
        return target

    def set_candidate(self, node_id: int, candidate: bool) -> None:
        """Make a server stand for election or not."""
        node = self.nodes[node_id]
        self._apply(node, self._core(node_id).set_candidate(candidate, node.local(self.now)))

    def campaign(self, node_id: int) -> None:
        """Ask a server to stand now (see RaftCore.campaign)."""
        node = self.nodes[node_id]
        self._apply(node, self._core(node_id).campaign(node.local(self.now)))

    def add_server(self, node_id: int, knows: Optional[Iterable[int]] = None) -> None:
        """Start a brand-new server ``node_id`` that joins the cluster (``RaftConfig(join=True)``).

        It knows the members ``knows`` (default: every server the simulation has), as a new member started
        with the current cluster file would; it stays a non-voting catch-up member until a leader adds it.

        Raises:
            ValueError: ``node_id`` is already a server of the simulation.
        """
        if node_id in self.nodes:
            raise ValueError(f"node {node_id} already exists")
        known = sorted(self.nodes if knows is None else knows)
        peers = {member: address(member) for member in [*known, node_id]}
        config = RaftConfig(node_id=node_id, peers=peers, join=True, **self._settings)
        self.configs[node_id] = config
        rate = 1.0 - self._rng.uniform(0.0, self._clock_drift)
        offset = self._rng.uniform(0.0, 1000.0)
        self.nodes[node_id] = SimNode(node_id, config, rate, offset)
        self.start(node_id)

    def add_member(self, leader: int, node_id: int) -> None:
        """Ask ``leader`` to add ``node_id`` (see RaftCore.add_member; its errors pass through)."""
        node = self.nodes[leader]
        self._apply(node, self._core(leader).add_member(node_id, address(node_id), node.local(self.now)))

    def remove_member(self, leader: int, node_id: int) -> None:
        """Ask ``leader`` to remove ``node_id`` (see RaftCore.remove_member; its errors pass through)."""
        node = self.nodes[leader]
        self._apply(node, self._core(leader).remove_member(node_id, node.local(self.now)))

    def abandon_change(self, leader: int, node_id: int) -> None:
        """Ask ``leader`` to give up a change of ``node_id`` not made yet (see RaftCore.abandon_change)."""
        node = self.nodes[leader]
        self._apply(node, self._core(leader).abandon_change(node_id, node.local(self.now)))

    def members(self, node_id: int) -> frozenset[int]:
        """The members of the configuration a running server uses."""
        return frozenset(self._core(node_id).configuration.members)

    def _core(self, node_id: int) -> RaftCore:
        core = self.nodes[node_id].core
        if core is None:
            raise ValueError(f"node {node_id} is not running")
        return core

    # ------------------------------------------------------------------ queries

    def lease_holders(self) -> list[int]:
        """Servers that believe, right now, that they lead with a valid lease."""
        return [node.node_id for node in self.nodes.values()
                if node.core is not None and node.core.is_leader(node.local(self.now))]

    def leader(self) -> Optional[int]:
        """The one lease holder, or None."""
        holders = self.lease_holders()
        return holders[0] if len(holders) == 1 else None

    def stable_leader(self) -> Optional[int]:
        """The lease holder that every running, unpaused member of its configuration follows, or None."""
        leader = self.leader()
        if leader is None:
            return None
        members = self.members(leader)
        for node in self.nodes.values():
            if (node.node_id in members and node.core is not None and not node.paused
                    and node.core.leader_id != leader):
                return None
        return leader

    # ------------------------------------------------------------------ running

    def run_for(self, duration: float) -> None:
        """Advance virtual time by ``duration`` seconds, handling everything due meanwhile."""
        self.run_until(lambda: False, timeout=duration, raise_on_timeout=False)

    def run_until(
        self, predicate: Callable[[], bool], timeout: float, *, raise_on_timeout: bool = True
    ) -> bool:
        """Run until ``predicate()`` holds (checked after every step) or ``timeout`` virtual seconds pass.

        Raises:
            TimeoutError: the predicate did not hold in time and ``raise_on_timeout``.
        """
        end = self.now + timeout
        if predicate():
            return True
        while self._queue and self._queue[0][0] <= end:
            self._step()
            if predicate():
                return True
        self.now = max(self.now, end)
        if raise_on_timeout:
            raise TimeoutError(f"condition not reached within {timeout} s of virtual time")
        return False

    def wait_for_leader(self, timeout: float = 10.0) -> int:
        """Run until one server leads and every running server follows it; return its id."""
        self.run_until(lambda: self.stable_leader() is not None, timeout)
        leader = self.stable_leader()
        assert leader is not None
        return leader

    def _step(self) -> None:
        at, _, kind, node_id, payload = heapq.heappop(self._queue)
        self.now = at
        self._handle(self.nodes[node_id], kind, payload)
        self.oracle.lease_holders(self.now, self.lease_holders())

    def _handle(self, node: SimNode, kind: int, payload: Any) -> None:
        """One input of ``node`` falls due now: a tick, a message, evidence, or a slow server's late input."""
        if kind == _LAGGED:
            kind, payload, incarnation = payload
            if incarnation != node.incarnation:  # what a crashed process had not handled died with it
                return
        elif node.lag is not None and node.core is not None:
            node.lagged_until = max(self.now + self._rng.uniform(*node.lag), node.lagged_until)
            self._push(node.lagged_until, _LAGGED, node.node_id, (kind, payload, node.incarnation))
            return
        if kind == _TICK:
            if payload == node.tick_generation and node.core is not None and not node.paused:
                node.scheduled_deadline = math.nan
                self._tick(node)
        elif kind == _EVIDENCE:
            incarnation, about, evidence_kind = payload
            if node.core is not None and incarnation == node.incarnation:
                if node.paused:
                    node.pending.append((about, evidence_kind))
                else:
                    self._evidence_now(node, about, evidence_kind)
        else:
            sender, data = payload
            if not self.can_reach(sender, node.node_id) or node.core is None:
                self.dropped += 1
            elif node.paused:
                node.pending.append((sender, data))
            else:
                self._deliver_now(node, sender, data)

    def _tick(self, node: SimNode) -> None:
        assert node.core is not None
        self._apply(node, node.core.tick(node.local(self.now)))

    def _deliver_now(self, node: SimNode, sender: int, data: bytes) -> None:
        assert node.core is not None
        envelope = self._codec.decode(data)
        self.delivered += 1
        self._apply(node, node.core.receive(envelope.sender, envelope.message, node.local(self.now)))

    def _evidence_now(self, node: SimNode, about: int, kind: str) -> None:
        assert node.core is not None
        self.evidence_log.append((self.now, node.node_id, about, kind))
        self._apply(node, node.core.evidence(about, kind, node.local(self.now)))

    def _answer_probe(self, src: int, dst: int, kind: str, round_trips: int = 2) -> None:
        """Evidence for ``src`` if ``dst`` is crashed and reachable both ways (subject to random loss)."""
        if (self.nodes[dst].alive or not self.can_reach(src, dst) or not self.can_reach(dst, src)
                or self._rng.random() < self.drop_rate):
            return
        delay = sum(self._rng.uniform(*self.delay) for _ in range(round_trips))
        self._push(self.now + delay, _EVIDENCE, src, (self.nodes[src].incarnation, dst, kind))

    def _apply(self, node: SimNode, output: Output) -> None:
        """Carry out a core output in the required order: persist, then send, then report."""
        if output.hard_state is not None:
            node.stored = output.hard_state
            self.oracle.persisted(node.node_id, output.hard_state)
        for outgoing in output.messages:
            data = self._codec.encode(Envelope(sender=node.node_id, recipient=outgoing.to,
                                               message=outgoing.message))
            self._send(node.node_id, outgoing.to, data)
        for event in output.events:
            node.events.append((self.now, event))
            self.oracle.record(node.node_id, event, node.to_global)
        if self.death_evidence:
            for peer in output.probes:
                self._answer_probe(node.node_id, peer, "port_unreachable")
        self._schedule_tick(node)

    def _send(self, src: int, dst: int, data: bytes) -> None:
        delays = self._faults.copy_delays(self._rng) if self._faults.can_reach(src, dst) else ()
        if not delays:
            self.dropped += 1
            return
        for delay in delays:
            self._push(self.now + delay, _DELIVER, dst, (src, data))

    def _schedule_tick(self, node: SimNode) -> None:
        if node.core is None:
            return
        deadline = node.core.next_deadline
        if deadline == node.scheduled_deadline:
            return  # the pending tick event is still the right one
        node.tick_generation += 1
        node.scheduled_deadline = deadline
        at = node.to_global(deadline)
        while node.local(at) < deadline:  # never wake a server a rounding error before its deadline
            at = math.nextafter(at, math.inf)
        self._push(max(self.now, at), _TICK, node.node_id, node.tick_generation)

    def _push(self, at: float, kind: int, node_id: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, node_id, payload))

    def events(self, node_id: int) -> list[tuple[float, Event]]:
        """Every event a server reported (all incarnations), with the global time it was reported."""
        return list(self.nodes[node_id].events)

    @property
    def terms(self) -> Mapping[int, int]:
        """Each running server's current term."""
        return {node_id: node.core.term for node_id, node in self.nodes.items() if node.core is not None}
