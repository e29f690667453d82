"""Deterministic simulation: test the library, and your own leader-dependent logic, on virtual time.

:class:`SimulatedCluster` runs the real election core of every server on one virtual clock over a seeded
simulated network with partitions, loss, delays, duplicates, reordering, crashes, restarts, pauses and
per-server clock drift, checked at every step by the safety oracle; seconds of cluster life take
milliseconds and equal seeds replay exactly, which is what Hypothesis tests need::

    cluster = SimulatedCluster(5, seed=7)
    leader = cluster.wait_for_leader()          # runs virtual time until one server holds a lease
    cluster.isolate(leader)
    cluster.run_for(1.0)                        # one virtual second, in a few milliseconds of real time
    assert cluster.leader() not in (None, leader)

With election groups, every server also hosts the named groups, each with its own oracle::

    cluster = SimulatedCluster(3, seed=7, groups=("jobs", "cron"))
    leader = cluster.wait_for_leader(group="jobs")
    cluster.step_down(leader, group="jobs")
    cluster.run_for(1.0)
    assert not cluster.oracles["jobs"].violations
"""

from raft_election.sim.cluster import SimNode, SimulatedCluster

__all__ = ["SimNode", "SimulatedCluster"]
