"""A Hypothesis state machine for testing leader-dependent code under random faults (needs ``hypothesis``).

Subclass :class:`LeaderDependentMachine`, put your service on every member in :meth:`~LeaderDependentMachine.
setup`, let it act in :meth:`~LeaderDependentMachine.on_step` (and, if it cares, in
:meth:`~LeaderDependentMachine.on_leader`), and state what must always hold as Hypothesis ``@invariant``
methods; add ``@rule`` methods of your own for what your users do.  The machine owns a deterministic
:class:`~raft_election.sim.SimulatedCluster` (virtual time, a seed Hypothesis draws) and brings the faults:
time passing, partitions, one-way blocks, isolations, heals, message loss, crashes, restarts and pauses,
some aimed at the current leader.  The cluster's own oracle checks the library's guarantees at every step;
your invariants check your service.  A failure shrinks to a short sequence of steps and replays exactly::

    class CounterMachine(LeaderDependentMachine):
        def setup(self):
            self.store = FencedStore()
            self.services = {node: CounterService(self.store) for node in self.cluster.nodes}

        def on_step(self, now):
            for node, service in self.services.items():
                if self.running(node):
                    service.tick(leads=self.leads(node), token=self.term(node))

        @invariant()
        def the_counter_never_goes_back(self):
            assert self.store.values == sorted(self.store.values)

    TestCounter = CounterMachine.TestCase

Time passes in slices of :attr:`LeaderDependentMachine.step_seconds`; after each slice the machine calls
:meth:`on_leader` for every lease that began in it and then :meth:`on_step`.  A paused or crashed member
does nothing (:meth:`running` is False): code that decided something before a pause acts on it after
the pause, which is exactly what fencing tokens are for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Optional

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from raft_election.events import BecameLeader, LeaseRegained
from raft_election.sim import SimulatedCluster

__all__ = ["LeaderDependentMachine"]


class LeaderDependentMachine(RuleBasedStateMachine):
    """The base of a user's state machine (see the module docstring).

    Class attributes to override: :attr:`nodes` (members, default 5), :attr:`config` (``RaftConfig``
    settings, e.g. ``{"election_timeout": (0.15, 0.3)}``), :attr:`step_seconds` (the slice of virtual time
    between two :meth:`on_step` calls, default 10 ms) and :attr:`network_delay` (one-way message delays).
    """

    nodes: ClassVar[int] = 5
    config: ClassVar[Mapping[str, Any]] = {}
    step_seconds: ClassVar[float] = 0.01
    network_delay: ClassVar[tuple[float, float]] = (0.0005, 0.005)

    cluster: SimulatedCluster

    def __init__(self) -> None:
        super().__init__()
        self._cursor: dict[int, int] = {}

    # ---------------------------------------------------------------- hooks for subclasses

    def setup(self) -> None:
        """Called once the cluster exists, before anything runs: create the services here."""

    def on_leader(self, node_id: int, term: int) -> None:
        """Called when ``node_id`` begins to hold a lease in ``term`` (a win, or the end of a lease gap)."""

    def on_step(self, now: float) -> None:
        """Called after every slice of virtual time (``now``: the cluster's time): let services act."""

    def on_restart(self, node_id: int) -> None:
        """Called when member ``node_id``'s process starts again (after a crash, or restarted).

        A process forgets what it held in memory, so create its service afresh here (keeping only what the
        service persisted).
        """

    # ---------------------------------------------------------------- what services may ask

    def running(self, node_id: int) -> bool:
        """Whether member ``node_id`` runs (not crashed, not paused): only then may its service act."""
        node = self.cluster.nodes[node_id]
        return node.alive and not node.paused

    def leads(self, node_id: int) -> bool:
        """Whether member ``node_id`` believes, on its own clock right now, that it leads with a lease."""
        node = self.cluster.nodes[node_id]
        return node.core is not None and node.core.is_leader(node.local(self.cluster.now))

    def term(self, node_id: int) -> int:
        """Member ``node_id``'s current term: while it leads, its fencing token (0 when crashed)."""
        core = self.cluster.nodes[node_id].core
        return core.term if core is not None else 0

    def leader(self) -> Optional[int]:
        """The one member holding a lease now, or None."""
        return self.cluster.leader()

    # ---------------------------------------------------------------- the machine

    @initialize(seed=st.integers(min_value=0, max_value=2**32 - 1))
    def start_cluster(self, seed: int) -> None:
        """A fresh cluster (seeded by Hypothesis), the user's services, and its first leader."""
        self.cluster = SimulatedCluster(self.nodes, seed=seed, delay=self.network_delay, **self.config)
        self._cursor = dict.fromkeys(self.cluster.nodes, 0)
        self.setup()
        for _ in range(int(3.0 / self.step_seconds)):
            if self.cluster.stable_leader() is not None:
                break
            self._advance(self.step_seconds)

    def _advance(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass, slice by slice, calling the hooks after each slice."""
        remaining = seconds
        while remaining > 1e-12:
            piece = min(self.step_seconds, remaining)
            self.cluster.run_for(piece)
            remaining -= piece
            for node_id, node in self.cluster.nodes.items():
                events, self._cursor[node_id] = node.events[self._cursor[node_id]:], len(node.events)
                for _, event in events:
                    if isinstance(event, (BecameLeader, LeaseRegained)):
                        self.on_leader(node_id, event.term)
            self.on_step(self.cluster.now)

    def _member(self, raw: int) -> int:
        return (raw - 1) % self.nodes + 1

    @rule(seconds=st.sampled_from([0.01, 0.05, 0.2, 0.5, 1.0]))
    def time_passes(self, seconds: float) -> None:
        """Virtual time passes, with the services acting."""
        self._advance(seconds)

    @rule(data=st.data())
    def partition(self, data: st.DataObject) -> None:
        """Split the network into up to three groups."""
        sides = data.draw(st.lists(st.integers(0, 2), min_size=self.nodes, max_size=self.nodes),
                          label="sides")
        groups = ({i + 1 for i, side in enumerate(sides) if side == group} for group in range(3))
        self.cluster.partition(*groups)

    @rule(node=st.integers(1, 9))
    def isolate(self, node: int) -> None:
        """Cut one member off, both ways."""
        self.cluster.isolate(self._member(node))

    @rule(src=st.integers(1, 9), dst=st.integers(1, 9))
    def block(self, src: int, dst: int) -> None:
        """Lose what one member sends to another (one way)."""
        self.cluster.block(self._member(src), self._member(dst))

    @rule()
    def heal(self) -> None:
        """Every cut ends."""
        self.cluster.heal()

    @rule(rate=st.sampled_from([0.0, 0.1, 0.3]))
    def loss(self, rate: float) -> None:
        """Lose this share of all messages."""
        self.cluster.drop_rate = rate

    @rule(node=st.integers(1, 9))
    def crash(self, node: int) -> None:
        """A member's process dies (its storage survives)."""
        self.cluster.crash(self._member(node))

    @rule(node=st.integers(1, 9))
    def restart(self, node: int) -> None:
        """A member starts again (or is restarted) with its stored term and vote."""
        member = self._member(node)
        self.cluster.restart(member)
        self.on_restart(member)

    @rule(node=st.integers(1, 9))
    def pause(self, node: int) -> None:
        """A member freezes (SIGSTOP, a long GC pause): it and its service do nothing until resumed."""
        self.cluster.pause(self._member(node))

    @rule(node=st.integers(1, 9))
    def resume(self, node: int) -> None:
        """A frozen member runs again."""
        self.cluster.resume(self._member(node))

    @rule()
    def resume_all(self) -> None:
        """Every frozen member runs again (a VM that was frozen whole, say)."""
        for node_id in self.cluster.nodes:
            self.cluster.resume(node_id)

    @precondition(lambda self: self.cluster.leader() is not None)
    @rule(fault=st.sampled_from(["pause", "crash", "isolate"]))
    def hit_the_leader(self, fault: str) -> None:
        """The interesting faults: aimed at the member that leads now."""
        leader = self.cluster.leader()
        assert leader is not None
        actions = {"pause": self.cluster.pause, "crash": self.cluster.crash, "isolate": self.cluster.isolate}
        actions[fault](leader)

    @precondition(lambda self: self.cluster.leader() is not None)
    @rule(seconds=st.sampled_from([0.05, 0.2, 0.5, 1.0]))
    def stall_the_leader(self, seconds: float) -> None:
        """The leader freezes for ``seconds`` (a long GC pause, a frozen VM) and then runs on.

        Shorter than an election timeout it keeps its office; longer, the others elect a new leader
        meanwhile, and whatever the old one decided before the stall it carries out after it.
        """
        leader = self.cluster.leader()
        assert leader is not None
        self.cluster.pause(leader)
        self._advance(seconds)
        self.cluster.resume(leader)
        self._advance(self.step_seconds)

    @invariant()
    def the_library_keeps_its_guarantees(self) -> None:
        """One leader per term, one lease holder at a time, leases never back a term, one vote per term."""
        if hasattr(self, "cluster"):
            self.cluster.oracle.check_lease_order()
            assert not self.cluster.oracle.violations, self.cluster.oracle.violations
