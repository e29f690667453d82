"""Hypothesis-generated partition schedules against threaded RaftNodes over InMemoryNetwork, in real time.

The same global oracle as the simulation checks every run: one leader per term, one vote per term, terms
never decrease (via the members' storage), and, after the fact, that no two members' lease-holding
intervals overlapped (from their own ``time.monotonic`` event timestamps).  After the schedule the network
heals and one stable leader must emerge.  Few examples (real time is slow); the thorough profile runs more.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raft_election.testing import ThreadedCluster, apply, calm, fault_schedules
from tests.conftest import examples

SIZE = 5
#: The network faults of the earlier hand-written schedules, drawn by the testing kit's strategy.
KINDS = ("heal", "partition", "isolate", "block")


@settings(max_examples=examples(15, 100))
@given(schedule=fault_schedules(SIZE, kinds=KINDS, max_steps=6, durations=(0.02, 0.1, 0.25, 0.5)),
       seed=st.integers(0, 2**16))
def test_partition_schedules_never_break_safety_and_heal_to_one_leader(schedule, seed):
    cluster = ThreadedCluster(SIZE, seed=seed, delay=(0.0002, 0.003))
    try:
        cluster.start_all()
        cluster.wait_for_stable_leader()
        apply(schedule, cluster)
        calm(cluster)
        cluster.wait_for_stable_leader()
    finally:
        cluster.close()  # stops every member, then checks that no lease intervals overlapped
    assert not cluster.oracle.violations
    assert cluster.oracle.leaderships, "no leadership was recorded at all"
