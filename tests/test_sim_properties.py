"""Hypothesis stateful tests of the election core on a deterministic simulated cluster (SPEC §9).

A RuleBasedStateMachine throws partitions, one-way cuts, message loss, duplication, reordering (random
delays), crashes, restarts, pauses, slow servers (every input handled late, as on a loaded host: lease gaps
without a lost office), clock drift, step-downs, transfers and candidacy changes at a
simulated cluster with fast failover on: probes of crashed servers yield death evidence (delayed, or lost
with the messages), crashes may hand evidence out unasked (ZeroMQ-like), and false evidence about live
servers, the leader included, is forged at a minority of members.  The cluster's ElectionOracle checks
after every simulated step that

* at most one server wins each term,
* never two servers hold a lease at the same virtual instant,
* leases never go back to a lower term (so a lease regained after a gap had no other holder in between),
* no server persists two different votes in one term, across restarts,
* no server's persisted term decreases,

and the machine's own rules check liveness (after the network heals and faults stop, one stable leader
within 3 × election_timeout_max) and that pre-vote keeps a rejoining server from raising terms.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from raft_election.roles import Role
from raft_election.sim import SimulatedCluster
from tests.conftest import examples
from tests.simfaults import end_faults

TIMEOUT = (0.150, 0.300)
HEARTBEAT = 0.050
MAX_DRIFT = 0.05
#: The liveness bound of the issue: one leader within 3 × election_timeout_max after the network heals.
LIVENESS_BOUND = 3 * TIMEOUT[1]

node_ids = st.integers(min_value=1, max_value=5)


class ClusterMachine(RuleBasedStateMachine):
    """Random fault schedules against a simulated 3- or 5-member cluster."""

    cluster: SimulatedCluster
    size: int

    @initialize(
        size=st.sampled_from([3, 5]),
        seed=st.integers(min_value=0, max_value=2**32 - 1),
        drift=st.sampled_from([0.0, MAX_DRIFT / 2, MAX_DRIFT]),
        max_delay=st.sampled_from([0.002, 0.010, 0.040]),
        evidence_on_crash=st.booleans(),
    )
    def start(self, size: int, seed: int, drift: float, max_delay: float, evidence_on_crash: bool) -> None:
        self.size = size
        self.cluster = SimulatedCluster(
            size, seed=seed, delay=(0.0005, max_delay), clock_drift=drift,
            evidence_on_crash=evidence_on_crash, election_timeout=TIMEOUT, heartbeat_interval=HEARTBEAT,
            max_clock_drift=MAX_DRIFT)
        self.cluster.wait_for_leader(timeout=LIVENESS_BOUND)  # every schedule starts from a working cluster

    def _id(self, raw: int) -> int:
        return (raw - 1) % self.size + 1

    # ---------------------------------------------------------------- time passes

    @rule(duration=st.sampled_from([0.002, 0.02, 0.1, 0.2, 0.5, 1.0, 2.0]))
    def run(self, duration: float) -> None:
        self.cluster.run_for(duration)

    # ---------------------------------------------------------------- network faults

    @rule(data=st.data())
    def partition(self, data: st.DataObject) -> None:
        ids = list(self.cluster.nodes)
        groups = data.draw(st.lists(st.integers(0, 2), min_size=len(ids), max_size=len(ids)), label="groups")
        self.cluster.partition(*({i for i, g in zip(ids, groups) if g == k} for k in range(3)))

    @rule(node=node_ids)
    def isolate(self, node: int) -> None:
        self.cluster.isolate(self._id(node))

    @rule(src=node_ids, dst=node_ids)
    def block(self, src: int, dst: int) -> None:
        self.cluster.block(self._id(src), self._id(dst))

    @rule()
    def heal(self) -> None:
        self.cluster.heal()

    @rule(drop=st.sampled_from([0.0, 0.1, 0.3]), duplicate=st.sampled_from([0.0, 0.1, 0.3]))
    def lossy(self, drop: float, duplicate: float) -> None:
        self.cluster.drop_rate = drop
        self.cluster.duplicate_rate = duplicate

    # ---------------------------------------------------------------- process faults

    @rule(node=node_ids)
    def crash(self, node: int) -> None:
        self.cluster.crash(self._id(node))

    @rule(node=node_ids)
    def restart(self, node: int) -> None:
        self.cluster.restart(self._id(node))

    @rule(node=node_ids)
    def pause(self, node: int) -> None:
        self.cluster.pause(self._id(node))

    @rule(node=node_ids)
    def resume(self, node: int) -> None:
        self.cluster.resume(self._id(node))

    @rule(node=node_ids, lag=st.sampled_from([None, (0.0, 0.01), (0.005, 0.05), (0.02, 0.12), (0.1, 0.2)]))
    def slow(self, node: int, lag: tuple[float, float] | None) -> None:
        """A loaded host: the server handles its messages and timers late (lags around a lease, too)."""
        self.cluster.slow(self._id(node), lag)

    @rule(fault=st.sampled_from(["pause", "crash", "isolate", "slow"]))
    def hit_the_leader(self, fault: str) -> None:
        """Faults aimed at the current leader: the interesting case for leases and failover."""
        leader = self.cluster.leader()
        if leader is None:
            return
        if fault == "pause":
            self.cluster.pause(leader)
        elif fault == "slow":
            self.cluster.slow(leader, (0.02, 0.12))
        elif fault == "crash":
            self.cluster.crash(leader)
        else:
            self.cluster.isolate(leader)

    @rule(node=node_ids, about=node_ids, at_leader=st.booleans())
    def forge_evidence(self, node: int, about: int, at_leader: bool) -> None:
        """False (or stale) death evidence, at members 1 .. quorum - 1 only: a minority of fooled members.

        The lease guarantee must survive it (thesis §6.4.1 with the majority rule of fast campaigns); it
        may cost availability.
        """
        forger = (self._id(node) - 1) % (self.size // 2) + 1
        leader = self.cluster.leader()
        target = leader if at_leader and leader is not None else self._id(about)
        self.cluster.forge_evidence(forger, target)

    # ---------------------------------------------------------------- commands

    @rule()
    def step_down(self) -> None:
        leader = self.cluster.leader()
        if leader is not None and not self.cluster.nodes[leader].paused:
            self.cluster.step_down(leader)

    @rule()
    def transfer(self) -> None:
        leader = self.cluster.leader()
        if leader is None or self.cluster.nodes[leader].paused:
            return
        try:
            self.cluster.transfer_leadership(leader)
        except Exception as exc:  # only "no eligible target" is acceptable
            assert type(exc).__name__ == "NoTransferTargetError", exc

    @rule(node=node_ids, candidate=st.booleans())
    def candidacy(self, node: int, candidate: bool) -> None:
        node_id = self._id(node)
        if self.cluster.nodes[node_id].alive:
            self.cluster.set_candidate(node_id, candidate)

    # ---------------------------------------------------------------- liveness and pre-vote

    def _calm(self) -> None:
        """End every fault: heal, no loss, loopback delays, everyone running, unpaused and a candidate."""
        end_faults(self.cluster)
        for node_id in self.cluster.nodes:
            self.cluster.set_candidate(node_id, True)

    @rule()
    def heal_and_elect(self) -> None:
        """After the last fault heals, one stable leader within 3 × election_timeout_max."""
        self._calm()
        started = self.cluster.now
        elected = self.cluster.run_until(lambda: self.cluster.stable_leader() is not None, LIVENESS_BOUND,
                                         raise_on_timeout=False)
        assert elected, (f"no stable leader {LIVENESS_BOUND} s after healing at {started:.3f}: "
                         f"{sorted(self.cluster.nodes.values(), key=lambda n: n.node_id)}")

    @rule(node=node_ids, away=st.floats(min_value=0.5, max_value=5.0))
    def isolated_follower_rejoins(self, node: int, away: float) -> None:
        """Pre-vote (thesis §9.6): a follower cut off for many timeouts comes back without raising terms."""
        self.heal_and_elect()
        # The leader found right after healing may be one whose lease lapses a moment later (it was cut
        # off until now): let the calm cluster settle, so the leader below is one that renews its lease.
        self.cluster.run_for(2 * TIMEOUT[1])
        self.heal_and_elect()
        leader = self.cluster.stable_leader()
        assert leader is not None
        follower = self._id(node)
        if follower == leader:
            follower = follower % self.size + 1
        term = self.cluster.terms[leader]
        self.cluster.isolate(follower)
        self.cluster.run_for(away)
        assert self.cluster.terms[follower] == term, "an isolated follower raised its term"
        self.cluster.heal()
        self.cluster.run_for(2 * HEARTBEAT)
        assert self.cluster.leader() == leader
        assert self.cluster.terms[leader] == term, "the rejoining follower disturbed the leader's term"
        assert self.cluster.nodes[follower].core is not None
        assert self.cluster.nodes[follower].core.role is Role.FOLLOWER

    # ---------------------------------------------------------------- safety (also checked on every step)

    @invariant()
    def at_most_one_lease_holder(self) -> None:
        if hasattr(self, "cluster"):
            assert len(self.cluster.lease_holders()) <= 1
            self.cluster.oracle.check_lease_order()
            assert not self.cluster.oracle.violations


ClusterMachine.TestCase.settings = settings(max_examples=examples(200, 5000), stateful_step_count=50)
TestSimulatedCluster = ClusterMachine.TestCase
