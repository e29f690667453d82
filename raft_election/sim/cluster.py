"""The simulated cluster: the real core of every server on one virtual clock and a seeded network.

Every server runs a :class:`~raft_election.groups.GroupSet`: the default election group ``""`` (the
cluster's one election of old, whose core is ``SimNode.core``) and any named *election groups* the
simulation hosts (``SimulatedCluster(groups=("a", "b"))``: every server hosts and stands in each from the
start).  Every message goes through the real wire codec with its group (``Envelope.group``); the messages
one output sends to one peer go together in one datagram, a frame (``Codec.encode_frames``), as a node
sends them.  Every group has its own :class:`~raft_election.oracle.ElectionOracle` (``cluster.oracles``;
``cluster.oracle`` is the default group's), which watches every step and raises
:class:`~raft_election.oracle.SafetyViolation` (naming the group) the moment a guarantee of that group
breaks: one leader per term, no two lease holders at an instant, leases never going back a term, one vote
per term and terms never going back, each across restarts.  Each server's durable state is kept per group
and survives crashes (a dropped group's too), as storage keeps it.

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
ask a leader's core to change the configuration, exactly as ``RaftNode.add_member`` does.  Only the default
group keeps the configuration (every group uses its server's entry, so a change applies to all groups), so
only the default group's oracle checks the configuration rules; a group's leases are checked directly.

Election groups: the commands (:meth:`SimulatedCluster.step_down`, ``transfer_leadership``,
``set_candidate``, ``campaign``) and queries (``leader``, ``lease_holders``, ``stable_leader``,
``wait_for_leader``, ``events``) take a ``group`` keyword (default ``""``);
:meth:`SimulatedCluster.ensure_group` and :meth:`SimulatedCluster.drop_group` make a server's application
start or stop using a group (a server keeps using its groups across restarts, as an application would ask
for them again).  A peer's election traffic makes a server host a group it does not use, as a voter only.

A **slow** server (:meth:`SimulatedCluster.slow`) models a loaded host: it handles each of its inputs
(messages, timer ticks, evidence) late, by a random lag, in the order they came, so its heartbeats, answers
and votes leave late and its clock has moved on when it handles them.  A pause is the extreme case.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Optional, Union

from raft_election.codec import Codec
from raft_election.config import RaftConfig
from raft_election.core import RaftCore
from raft_election.errors import ConfigError, DecodeError
from raft_election.events import Event
from raft_election.groupname import DEFAULT_GROUP, check_group_name
from raft_election.groups import GroupOutput, GroupSet
from raft_election.hardstate import HardState
from raft_election.messages import Envelope
from raft_election.netfaults import FaultControls, NetworkFaults
from raft_election.oracle import ElectionOracle, SafetyViolation
from raft_election.output import Output
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
    """One simulated server: its groups (None while crashed), its durable state and its clock."""

    def __init__(self, node_id: int, config: RaftConfig, rate: float, offset: float) -> None:
        self.node_id = node_id
        self.config = config
        self.rate = rate
        self.offset = offset
        #: The server's election groups while it runs (None while crashed).
        self.groups: Optional[GroupSet] = None
        #: The default group's durable state (term, vote, configuration entry).
        self.stored = HardState()
        #: Every other group's durable state (term and vote), by name; a dropped group's stays.
        self.stored_groups: dict[str, HardState] = {}
        #: The groups the application on this server uses, and whether it stands in each: hosted (and
        #: asked for again) at every start.
        self.uses: dict[str, bool] = {}
        self.paused = False
        #: What arrived while paused: ``(sender, datagram bytes)``, or ``(peer, evidence kind)``.
        self.pending: list[tuple[int, Union[bytes, str]]] = []
        #: Bumped at every start: evidence answers a probe of one incarnation only.
        self.incarnation = 0
        self.tick_generation = 0
        self.scheduled_deadline = math.nan
        #: The default group's events (all incarnations), with the global time they were reported.
        self.events: list[tuple[float, Event]] = []
        #: Every other group's events, by name.
        self.group_events: dict[str, list[tuple[float, Event]]] = {}
        #: The range of lags with which a slow server handles its inputs (None: at once).
        self.lag: Optional[tuple[float, float]] = None
        #: When its latest lagged input is handled: the next one is not handled before (inputs stay in order).
        self.lagged_until = -math.inf

    @property
    def core(self) -> Optional[RaftCore]:
        """The default group's core while the server runs, else None."""
        return self.groups.default if self.groups is not None else None

    def group(self, name: str) -> Optional[RaftCore]:
        """The core of group ``name`` if the server runs and hosts it now, else None."""
        return self.groups.core(name) if self.groups is not None else None

    @property
    def alive(self) -> bool:
        """Running (possibly paused), not crashed."""
        return self.groups is not None

    def local(self, now: float) -> float:
        """This server's clock reading at global time ``now``."""
        return self.rate * now + self.offset

    def to_global(self, local_time: float) -> float:
        """The global time at which this server's clock reads ``local_time``."""
        return (local_time - self.offset) / self.rate

    def __repr__(self) -> str:
        core = self.core
        state = "crashed" if core is None else ("paused" if self.paused else repr(core))
        return f"<SimNode {self.node_id} {state}>"


class SimulatedCluster(FaultControls):
    """A cluster of servers, each a :class:`~raft_election.groups.GroupSet`, on a virtual clock and network.

    The network's faults are a :class:`~raft_election.netfaults.NetworkFaults` value with the controls of
    :class:`~raft_election.netfaults.FaultControls` (``partition``, ``isolate``/``rejoin``,
    ``block``/``unblock``, ``heal``, ``can_reach``, the random settings and ``faults`` itself): the same
    model and semantics as :class:`transports.memory.InMemoryNetwork`'s (see :mod:`raft_election.netfaults`;
    a partition replaces the previous partition, isolations and blocks stay until undone or healed).

    Args:
        members: how many servers (ids 1..n), or an iterable of ids.
        seed: seeds every random choice (network faults, timeouts, clock rates): equal seeds replay equally.
        delay: range of one-way message delays, seconds.
        drop_rate, duplicate_rate: probability that a datagram is lost / delivered twice.
        reorder_rate: probability that a copy is held back so that later messages overtake it (random
            delays reorder messages too).
        clock_drift: servers' clock rates are drawn from ``[1 - clock_drift, 1]``; keep it at most the
            configured ``max_clock_drift`` for the lease guarantee to hold.
        persist: if False, a restart loses the server's terms and votes, of every group (models storage
            that does not survive a crash, like MemoryStorage across processes); used to show the oracles
            catch it.
        death_evidence: whether probes are answered (a transport with the DeathProbe capability).
        evidence_on_crash: whether a crash also hands evidence to every server it could reach.
        oracle: the default group's oracle (a fresh raising one by default).
        stamp_first: a new leader commits an entry of its own term before a membership change (thesis
            §4.1 erratum); False only to show the bug it prevents.
        groups: the named election groups every server hosts and stands in from the start (validated
            names; the default group ``""`` is always there and is not listed).
        oracles: oracles for named groups (a fresh raising one for any group not given).
        coalesce: send the messages of one output to one peer in one datagram (a frame of the codec), as a
            node does; False sends one datagram per message.
        carry: passed to every server's :class:`~raft_election.groups.GroupSet`: the named groups' steady
            state rides in member rounds; False gives every group its own heartbeats (for comparison).
        config: extra :class:`RaftConfig` settings for every server (``election_timeout`` etc.).

    Raises:
        ConfigError: a name in ``groups`` is not a valid group name.
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
        groups: Iterable[str] = (),
        oracles: Optional[Mapping[str, ElectionOracle]] = None,
        coalesce: bool = True,
        carry: bool = True,
        **config: Any,
    ) -> None:
        ids = list(range(1, members + 1)) if isinstance(members, int) else sorted(members)
        names = tuple(dict.fromkeys(check_group_name(name, "groups") for name in groups if name))
        self._rng = random.Random(seed)
        self._settings = config
        self._stamp_first = stamp_first
        self._clock_drift = clock_drift
        self._coalesce = coalesce
        self._carry = carry
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
        #: The named election groups every server hosts from the start.
        self.groups: tuple[str, ...] = names
        #: Evidence handed to servers: ``(global time, to, about, kind)``.
        self.evidence_log: list[tuple[float, int, int, str]] = []
        self._given_oracles = dict(oracles or {})
        self.oracle = oracle if oracle is not None else ElectionOracle()
        self.oracle.seed(ids)
        #: One oracle per election group (the default group ``""``'s is :attr:`oracle`), created for every
        #: group the moment a server first hosts it.
        self.oracles: dict[str, ElectionOracle] = {DEFAULT_GROUP: self.oracle}
        for name in names:
            self._oracle(name)
        self.nodes: dict[int, SimNode] = {}
        for node_id in ids:
            rate = 1.0 - self._rng.uniform(0.0, clock_drift)
            offset = self._rng.uniform(0.0, 1000.0)
            self.nodes[node_id] = SimNode(node_id, self.configs[node_id], rate, offset)
            self.nodes[node_id].uses = dict.fromkeys(names, True)
        self._queue: list[tuple[float, int, int, int, Any]] = []
        self._seq = 0
        self.delivered = 0
        self.dropped = 0
        for node_id in ids:
            self.start(node_id)

    def _oracle(self, name: str) -> ElectionOracle:
        """The oracle of group ``name`` (created the first time a server hosts the group)."""
        oracle = self.oracles.get(name)
        if oracle is None:
            oracle = self._given_oracles.get(name)
            if oracle is None:
                oracle = ElectionOracle()
            self.oracles[name] = oracle
        return oracle

    @staticmethod
    @contextlib.contextmanager
    def _blame(name: str) -> Iterator[None]:
        """Name the group in a violation its oracle raises (the default group's are raised as they are)."""
        try:
            yield
        except SafetyViolation as exc:
            if name == DEFAULT_GROUP:
                raise
            raise SafetyViolation(f"group {name!r}: {exc}") from exc

    # ------------------------------------------------------------------ lifecycle faults

    def start(self, node_id: int) -> None:
        """Start (or restart) a crashed server from its durable state; it hosts the groups it uses."""
        node = self.nodes[node_id]
        if node.alive:
            raise ValueError(f"node {node_id} is already running")
        rng = random.Random(self._rng.getrandbits(64))
        now = node.local(self.now)
        node.groups = GroupSet(node.config, node.stored, node.stored_groups, now, rng,
                               stamp_first=self._stamp_first, carry=self._carry)
        node.incarnation += 1
        node.paused = False
        node.pending.clear()
        for name, stand in node.uses.items():
            self._oracle(name)
            self._apply(node, node.groups.ensure(name, now, stand=stand))
        self._schedule_tick(node)

    def crash(self, node_id: int) -> None:
        """Kill a server: it forgets everything but its durable state (nothing, with ``persist=False``)."""
        node = self.nodes[node_id]
        groups = node.groups
        if groups is None:
            return
        for name in groups.names:
            core = groups.core(name)
            if core is not None and core.role is Role.LEADER:
                # What the process believed ends with it, or earlier if its lease had run out meanwhile (a
                # paused or slow leader had not noticed yet): tell the oracle, whose lease intervals would
                # otherwise last until the kill.
                believed_until = min(groups.lease_expiry(name), node.local(self.now))
                self._oracle(name).lost_leadership(node_id, core.term, node.to_global(believed_until))
        node.groups = None
        node.paused = False
        node.pending.clear()
        node.tick_generation += 1
        node.scheduled_deadline = math.nan
        if not self.persist:
            node.stored = HardState()
            node.stored_groups = {}
        for oracle in self.oracles.values():
            oracle.node_crashed(node_id, self.now)
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

    def step_down(self, node_id: int, *, group: str = DEFAULT_GROUP) -> None:
        """Ask a server to give up leadership of ``group`` (no-op unless it leads it)."""
        self._command(node_id, group, lambda core, now: core.step_down(now))

    def transfer_leadership(self, node_id: int, target: Optional[int] = None, *,
                            group: str = DEFAULT_GROUP) -> int:
        """Ask the leader ``node_id`` of ``group`` to hand over; returns the target.

        See RaftCore.transfer_leadership, whose errors pass through.
        """
        chosen: list[int] = []

        def transfer(core: RaftCore, now: float) -> Output:
            picked, output = core.transfer_leadership(now, target)
            chosen.append(picked)
            return output

        self._command(node_id, group, transfer)
        return chosen[0]

    def set_candidate(self, node_id: int, candidate: bool, *, group: str = DEFAULT_GROUP) -> None:
        """Make a server stand for election in ``group`` or not."""
        self._command(node_id, group, lambda core, now: core.set_candidate(candidate, now))

    def campaign(self, node_id: int, *, group: str = DEFAULT_GROUP) -> None:
        """Ask a server to stand in ``group`` now (see RaftCore.campaign)."""
        self._command(node_id, group, lambda core, now: core.campaign(now))

    def ensure_group(self, node_id: int, name: str, stand: bool = True) -> None:
        """The application on ``node_id`` uses group ``name`` from now on (across restarts too).

        The running server hosts it (creating it if need be) and, with ``stand``, stands in it
        (``GroupSet.ensure``); a crashed one will when it starts.

        Raises:
            ConfigError: ``name`` is not a valid group name.
        """
        name = check_group_name(name)
        node = self.nodes[node_id]
        if name != DEFAULT_GROUP:
            node.uses[name] = node.uses.get(name, False) or stand
        self._oracle(name)
        if node.groups is not None:
            self._apply(node, node.groups.ensure(name, node.local(self.now), stand=stand))

    def drop_group(self, node_id: int, name: str) -> None:
        """The application on ``node_id`` stops using group ``name`` (not across restarts either).

        The running server retires it (``GroupSet.drop``: resigns a leadership, keeps the term and vote)
        and does not host it at its next start.  A peer's election traffic may make the server host it
        again, as a voter.

        Raises:
            ConfigError: ``name`` is the default group, which cannot be dropped.
        """
        node = self.nodes[node_id]
        node.uses.pop(name, None)
        if node.groups is not None:
            self._apply(node, node.groups.drop(name, node.local(self.now)))
        elif name == DEFAULT_GROUP:
            raise ConfigError("name", "the default group \"\" cannot be dropped; stop the node instead")

    def add_server(self, node_id: int, knows: Optional[Iterable[int]] = None) -> None:
        """Start a brand-new server ``node_id`` that joins the cluster (``RaftConfig(join=True)``).

        It knows the members ``knows`` (default: every server the simulation has), as a new member started
        with the current cluster file would; it stays a non-voting catch-up member until a leader adds it.
        It uses the simulation's groups (:attr:`groups`).

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
        self.nodes[node_id].uses = dict.fromkeys(self.groups, True)
        self.start(node_id)

    def add_member(self, leader: int, node_id: int) -> None:
        """Ask ``leader`` to add ``node_id`` (see RaftCore.add_member; its errors pass through)."""
        self._command(leader, DEFAULT_GROUP,
                      lambda core, now: core.add_member(node_id, address(node_id), now))

    def remove_member(self, leader: int, node_id: int) -> None:
        """Ask ``leader`` to remove ``node_id`` (see RaftCore.remove_member; its errors pass through)."""
        self._command(leader, DEFAULT_GROUP, lambda core, now: core.remove_member(node_id, now))

    def abandon_change(self, leader: int, node_id: int) -> None:
        """Ask ``leader`` to give up a change of ``node_id`` not made yet (see RaftCore.abandon_change)."""
        self._command(leader, DEFAULT_GROUP, lambda core, now: core.abandon_change(node_id, now))

    def members(self, node_id: int) -> frozenset[int]:
        """The members of the configuration a running server uses (in every group)."""
        return frozenset(self._core(node_id).configuration.members)

    def _core(self, node_id: int, group: str = DEFAULT_GROUP) -> RaftCore:
        node = self.nodes[node_id]
        if node.groups is None:
            raise ValueError(f"node {node_id} is not running")
        core = node.groups.core(group)
        if core is None:
            raise ValueError(f"node {node_id} does not host group {group!r}")
        return core

    def _command(self, node_id: int, group: str, action: Callable[[RaftCore, float], Output]) -> None:
        """Run ``action`` on the core of ``group`` at ``node_id`` and carry out what it asks."""
        self._core(node_id, group)
        node = self.nodes[node_id]
        assert node.groups is not None
        self._apply(node, node.groups.command(group, action, node.local(self.now)))

    # ------------------------------------------------------------------ queries

    def lease_holders(self, group: str = DEFAULT_GROUP) -> list[int]:
        """Servers that believe, right now, that they lead ``group`` with a valid lease."""
        return [node.node_id for node in self.nodes.values()
                if node.groups is not None and node.groups.is_leader(group, node.local(self.now))]

    def leader(self, group: str = DEFAULT_GROUP) -> Optional[int]:
        """The one lease holder of ``group``, or None."""
        holders = self.lease_holders(group)
        return holders[0] if len(holders) == 1 else None

    def stable_leader(self, group: str = DEFAULT_GROUP) -> Optional[int]:
        """The lease holder of ``group`` that every running, unpaused member of its configuration follows.

        None if there is no one lease holder, or a member does not host the group or follows another.
        """
        leader = self.leader(group)
        if leader is None:
            return None
        members = self.members(leader)
        for node in self.nodes.values():
            if node.node_id in members and node.alive and not node.paused:
                core = node.group(group)
                if core is None or core.leader_id != leader:
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

    def wait_for_leader(self, timeout: float = 10.0, *, group: str = DEFAULT_GROUP) -> int:
        """Run until one server leads ``group`` and every running member follows it; return its id."""
        self.run_until(lambda: self.stable_leader(group) is not None, timeout)
        leader = self.stable_leader(group)
        assert leader is not None
        return leader

    def _step(self) -> None:
        at, _, kind, node_id, payload = heapq.heappop(self._queue)
        self.now = at
        self._handle(self.nodes[node_id], kind, payload)
        for name, oracle in self.oracles.items():
            with self._blame(name):
                oracle.lease_holders(self.now, self.lease_holders(name))

    def _handle(self, node: SimNode, kind: int, payload: Any) -> None:
        """One input of ``node`` falls due now: a tick, a message, evidence, or a slow server's late input."""
        if kind == _LAGGED:
            kind, payload, incarnation = payload
            if incarnation != node.incarnation:  # what a crashed process had not handled died with it
                return
        elif node.lag is not None and node.alive:
            node.lagged_until = max(self.now + self._rng.uniform(*node.lag), node.lagged_until)
            self._push(node.lagged_until, _LAGGED, node.node_id, (kind, payload, node.incarnation))
            return
        if kind == _TICK:
            if payload == node.tick_generation and node.alive and not node.paused:
                node.scheduled_deadline = math.nan
                self._tick(node)
        elif kind == _EVIDENCE:
            incarnation, about, evidence_kind = payload
            if node.alive and incarnation == node.incarnation:
                if node.paused:
                    node.pending.append((about, evidence_kind))
                else:
                    self._evidence_now(node, about, evidence_kind)
        else:
            sender, data = payload
            if not self.can_reach(sender, node.node_id) or not node.alive:
                self.dropped += 1
            elif node.paused:
                node.pending.append((sender, data))
            else:
                self._deliver_now(node, sender, data)

    def _tick(self, node: SimNode) -> None:
        assert node.groups is not None
        self._apply(node, node.groups.tick(node.local(self.now)))

    def _deliver_now(self, node: SimNode, sender: int, data: bytes) -> None:
        """Hand a datagram (one message, or a frame of several, together) to the server."""
        assert node.groups is not None
        messages = []
        for envelope in self._codec.decode_frame(data):
            if isinstance(envelope, DecodeError):
                raise envelope  # the simulation sends only what the codec encoded: a codec bug
            messages.append((envelope.sender, envelope.group, envelope.message))
        self.delivered += len(messages)
        self._apply(node, node.groups.receive_many(messages, node.local(self.now)))

    def _evidence_now(self, node: SimNode, about: int, kind: str) -> None:
        assert node.groups is not None
        self.evidence_log.append((self.now, node.node_id, about, kind))
        self._apply(node, node.groups.evidence(about, kind, node.local(self.now)))

    def _answer_probe(self, src: int, dst: int, kind: str, round_trips: int = 2) -> None:
        """Evidence for ``src`` if ``dst`` is crashed and reachable both ways (subject to random loss)."""
        if (self.nodes[dst].alive or not self.can_reach(src, dst) or not self.can_reach(dst, src)
                or self._rng.random() < self.drop_rate):
            return
        delay = sum(self._rng.uniform(*self.delay) for _ in range(round_trips))
        self._push(self.now + delay, _EVIDENCE, src, (self.nodes[src].incarnation, dst, kind))

    def _apply(self, node: SimNode, output: GroupOutput) -> None:
        """Carry out a group set's output in the required order: persist, then send, then report."""
        node_id = node.node_id
        for name, state in output.hard_states.items():
            if name == DEFAULT_GROUP:
                node.stored = state
                self.oracle.persisted(node_id, state)
            else:
                node.stored_groups[name] = state
                with self._blame(name):
                    self._oracle(name).persisted(node_id, state)
        by_peer: dict[int, list[Envelope]] = {}
        for group, outgoing in output.messages:
            envelope = Envelope(sender=node_id, recipient=outgoing.to, message=outgoing.message, group=group)
            if self._coalesce:
                by_peer.setdefault(outgoing.to, []).append(envelope)
            else:
                self._send(node_id, outgoing.to, self._codec.encode(envelope))
        for to, envelopes in by_peer.items():
            for data in self._codec.encode_frames(envelopes):
                self._send(node_id, to, data)
        for group, event in output.events:
            self._report(node, group, event)
        if self.death_evidence:
            for peer in output.probes:
                self._answer_probe(node_id, peer, "port_unreachable")
        self._schedule_tick(node)

    def _report(self, node: SimNode, group: str, event: Event) -> None:
        """Keep ``event`` of ``group`` and tell the group's oracle."""
        if group == DEFAULT_GROUP:
            node.events.append((self.now, event))
        else:
            node.group_events.setdefault(group, []).append((self.now, event))
        with self._blame(group):
            self._oracle(group).record(node.node_id, event, node.to_global)

    def _send(self, src: int, dst: int, data: bytes) -> None:
        delays = self._faults.copy_delays(self._rng) if self._faults.can_reach(src, dst) else ()
        if not delays:
            self.dropped += 1
            return
        for delay in delays:
            self._push(self.now + delay, _DELIVER, dst, (src, data))

    def _schedule_tick(self, node: SimNode) -> None:
        if node.groups is None:
            return
        deadline = node.groups.next_deadline
        if deadline == node.scheduled_deadline:
            return  # the pending tick event is still the right one
        node.tick_generation += 1
        node.scheduled_deadline = deadline
        if math.isinf(deadline):
            return  # nothing is timed (not possible with the default group; kept for safety)
        at = node.to_global(deadline)
        while node.local(at) < deadline:  # never wake a server a rounding error before its deadline
            at = math.nextafter(at, math.inf)
        self._push(max(self.now, at), _TICK, node.node_id, node.tick_generation)

    def _push(self, at: float, kind: int, node_id: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, node_id, payload))

    def events(self, node_id: int, group: str = DEFAULT_GROUP) -> list[tuple[float, Event]]:
        """Every event a server reported in ``group`` (all incarnations), with its global time."""
        node = self.nodes[node_id]
        return list(node.events if group == DEFAULT_GROUP else node.group_events.get(group, ()))

    @property
    def terms(self) -> Mapping[int, int]:
        """Each running server's current term in the default group."""
        return self.group_terms(DEFAULT_GROUP)

    def group_terms(self, group: str) -> Mapping[int, int]:
        """Each running server's current term in ``group`` (the servers that host it)."""
        terms = {}
        for node_id, node in self.nodes.items():
            core = node.group(group)
            if core is not None:
                terms[node_id] = core.term
        return terms
