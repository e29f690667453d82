"""The lock's guarantees on the deterministic simulation (virtual time, exact and replayable).

A member wants the lock = it stands for election (and campaigns at once); it holds the lock while it leads
with a valid lease; releasing = no longer standing, then handing leadership to a waiting member or
resigning.  This is exactly what DistributedLock does with a RaftNode.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from raft_election.core import NoTransferTargetError
from raft_election.events import BecameLeader
from raft_election.sim import SimulatedCluster
from tests.conftest import examples

TIMEOUT = (0.150, 0.300)
DRIFT = 0.05


def acquire(cluster: SimulatedCluster, node_id: int) -> None:
    cluster.set_candidate(node_id, True)
    cluster.campaign(node_id)


def release(cluster: SimulatedCluster, node_id: int) -> None:
    cluster.set_candidate(node_id, False)
    if cluster.leader() == node_id:
        try:
            cluster.transfer_leadership(node_id)
        except NoTransferTargetError:
            cluster.step_down(node_id)


def lock_cluster(size: int, seed: int, **kwargs: object) -> SimulatedCluster:
    return SimulatedCluster(size, seed=seed, candidate=False, election_timeout=TIMEOUT,
                            max_clock_drift=DRIFT, **kwargs)  # type: ignore[arg-type]


def holders_in_time_order(cluster: SimulatedCluster) -> list[tuple[float, int, int]]:
    won = [(at, node_id, event.term) for node_id in cluster.nodes
           for at, event in cluster.events(node_id) if isinstance(event, BecameLeader)]
    return sorted(won)


def test_nobody_holds_the_lock_until_somebody_wants_it():
    cluster = lock_cluster(3, seed=1)
    cluster.run_for(5.0)
    assert cluster.lease_holders() == []
    acquire(cluster, 2)
    cluster.run_until(lambda: cluster.leader() == 2, timeout=3 * TIMEOUT[1])


def test_a_released_lock_goes_to_a_waiting_member_within_a_round_trip():
    """The waiter holds the lock long before any election timeout could have fired (thesis §3.10)."""
    for seed in range(5):
        _handover(lock_cluster(5, seed=seed, delay=(0.001, 0.003)))


def _handover(cluster: SimulatedCluster) -> None:
    acquire(cluster, 1)
    cluster.run_until(lambda: cluster.leader() == 1, timeout=3 * TIMEOUT[1])
    acquire(cluster, 4)  # waits: 1 leads, so 4's campaign is refused by sticky voters
    cluster.run_for(1.0)
    assert cluster.leader() == 1
    released_at, token = cluster.now, cluster.terms[1]
    release(cluster, 1)
    cluster.run_until(lambda: cluster.leader() == 4, timeout=TIMEOUT[0])
    assert cluster.now - released_at < 0.02  # a few message delays, not an election timeout
    assert cluster.terms[4] == token + 1  # handed over directly: one campaign, no split


def test_an_idle_release_lets_the_next_acquire_win_without_waiting_out_stickiness():
    cluster = lock_cluster(5, seed=3, delay=(0.001, 0.003))
    acquire(cluster, 1)
    cluster.run_until(lambda: cluster.leader() == 1, timeout=3 * TIMEOUT[1])
    cluster.run_for(0.5)
    release(cluster, 1)  # nobody waits: 1 resigns, followers drop their stickiness
    cluster.run_for(0.005)
    started = cluster.now
    acquire(cluster, 3)
    cluster.run_until(lambda: cluster.leader() == 3, timeout=TIMEOUT[0])
    assert cluster.now - started < 0.02


class LockMachine(RuleBasedStateMachine):
    """Members acquire and release at random under partitions, crashes, pauses and clock drift."""

    @initialize(size=st.sampled_from([3, 5]), seed=st.integers(0, 2**32 - 1),
                drift=st.sampled_from([0.0, DRIFT]))
    def start(self, size: int, seed: int, drift: float) -> None:
        self.size = size
        self.cluster = lock_cluster(size, seed, clock_drift=drift, delay=(0.0005, 0.01))
        acquire(self.cluster, 1)  # every schedule starts with a holder and another member waiting
        self.cluster.run_until(lambda: self.cluster.leader() == 1, timeout=3 * TIMEOUT[1])
        acquire(self.cluster, 2)

    def _id(self, raw: int) -> int:
        return (raw - 1) % self.size + 1

    @rule(node=st.integers(1, 5))
    def acquire(self, node: int) -> None:
        node_id = self._id(node)
        if self.cluster.nodes[node_id].alive:
            acquire(self.cluster, node_id)

    @rule(node=st.integers(1, 5))
    def release(self, node: int) -> None:
        node_id = self._id(node)
        if self.cluster.nodes[node_id].alive and not self.cluster.nodes[node_id].paused:
            release(self.cluster, node_id)

    @rule(duration=st.sampled_from([0.01, 0.1, 0.3, 1.0]))
    def run(self, duration: float) -> None:
        self.cluster.run_for(duration)

    @rule(data=st.data())
    def partition(self, data: st.DataObject) -> None:
        groups = data.draw(st.lists(st.integers(0, 1), min_size=self.size, max_size=self.size))
        self.cluster.partition(*({i + 1 for i, g in enumerate(groups) if g == k} for k in (0, 1)))

    @rule()
    def heal(self) -> None:
        self.cluster.heal()

    @rule(node=st.integers(1, 5), fault=st.sampled_from(["crash", "restart", "pause", "resume"]))
    def fault(self, node: int, fault: str) -> None:
        node_id = self._id(node)
        if fault == "crash":
            self.cluster.crash(node_id)
        elif fault == "restart":
            self.cluster.restart(node_id)
            self.cluster.set_candidate(node_id, False)  # a restarted process has not asked for the lock
        elif fault == "pause":
            self.cluster.pause(node_id)
        else:
            self.cluster.resume(node_id)

    @rule(fault=st.sampled_from(["pause", "crash", "isolate"]), waiter=st.integers(1, 5))
    def hit_the_holder(self, fault: str, waiter: int) -> None:
        """The interesting case: the holder stops or is cut off while another member wants the lock."""
        holder = self.cluster.leader()
        if holder is None:
            return
        getattr(self.cluster, fault)(holder)
        waiter_id = self._id(waiter)
        if waiter_id != holder and self.cluster.nodes[waiter_id].alive:
            acquire(self.cluster, waiter_id)

    @invariant()
    def one_holder_and_increasing_tokens(self) -> None:
        if not hasattr(self, "cluster"):
            return
        assert len(self.cluster.lease_holders()) <= 1
        tokens = [term for _, _, term in holders_in_time_order(self.cluster)]
        assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens), tokens


LockMachine.TestCase.settings = settings(max_examples=examples(100, 2000), stateful_step_count=40)
TestLockSimulation = LockMachine.TestCase


def test_regression_a_waiter_that_just_voted_for_the_holder_does_not_campaign_against_its_lease():
    """Found by the thorough profile: seed 0, 3 members; the waiter had granted the holder its vote, had not
    yet heard a heartbeat, and campaigned at once when asked to acquire: two lease holders at 0.294 s."""
    cluster = lock_cluster(3, seed=0, clock_drift=0.0, delay=(0.0005, 0.01))
    acquire(cluster, 1)
    cluster.run_until(lambda: cluster.leader() == 1, timeout=3 * TIMEOUT[1])
    acquire(cluster, 2)
    cluster.isolate(1)
    cluster.run_for(1.0)  # the oracle raises on two lease holders at any instant
    assert cluster.leader() == 2
