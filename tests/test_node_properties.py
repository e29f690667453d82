"""Hypothesis-generated partition schedules against threaded RaftNodes over InMemoryNetwork, in real time.

The same global oracle as the simulation checks every run: one leader per term, one vote per term, terms
never decrease (via the members' storage), and, after the fact, that no two members' lease-holding
intervals overlapped (from their own ``time.monotonic`` event timestamps).  After the schedule the network
heals and one stable leader must emerge.  Few examples (real time is slow); the thorough profile runs more.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import examples
from tests.nodetools import ThreadedCluster

SIZE = 5
members = st.integers(min_value=1, max_value=SIZE)
faults = st.one_of(
    st.tuples(st.just("partition"), st.lists(st.integers(0, 1), min_size=SIZE, max_size=SIZE)),
    st.tuples(st.just("isolate"), members),
    st.tuples(st.just("block"), st.tuples(members, members)),
    st.tuples(st.just("heal"), st.none()),
)
steps = st.lists(st.tuples(faults, st.sampled_from([0.02, 0.1, 0.25, 0.5])), min_size=1, max_size=6)


def _wait(cluster: ThreadedCluster, seconds: float) -> None:
    """Let the schedule's time pass: a fault must stay in place for a while to matter.

    This is the schedule itself (the system under test runs meanwhile), not synchronisation: nothing is
    asserted about what happened by then.
    """
    cluster.changed.acquire()
    try:
        cluster.changed.wait(seconds)
    finally:
        cluster.changed.release()


@settings(max_examples=examples(15, 100))
@given(schedule=steps, seed=st.integers(0, 2**16))
def test_partition_schedules_never_break_safety_and_heal_to_one_leader(schedule, seed):
    cluster = ThreadedCluster(SIZE, seed=seed, delay=(0.0002, 0.003))
    try:
        cluster.start_all()
        cluster.wait_for_stable_leader()
        for (kind, argument), duration in schedule:
            if kind == "partition":
                groups = ({i + 1 for i, g in enumerate(argument) if g == k} for k in (0, 1))
                cluster.network.partition(*groups)
            elif kind == "isolate":
                cluster.network.isolate(argument)
            elif kind == "block":
                cluster.network.block(*argument)
            else:
                cluster.network.heal()
            _wait(cluster, duration)
        cluster.network.heal()
        for node_id in cluster.nodes:
            cluster.network.rejoin(node_id)
        cluster.wait_for_stable_leader()
    finally:
        cluster.close()  # stops every member, then checks that no lease intervals overlapped
    assert not cluster.oracle.violations
    assert cluster.oracle.leaderships, "no leadership was recorded at all"
