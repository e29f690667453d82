"""The benchmark's trial loop: crash a stable leader at a random moment, time the failover, restart.

Each trial waits until every running member follows the same leader, lets the cluster run for ``settle``
seconds (plus ``idle`` more, for clusters that change when left alone), then crashes the leader at a
uniformly random moment within one heartbeat interval (the Raft paper's §9.3 method) and waits for another
member to take office.  The failover time runs from the crash (the caller's ``time.monotonic()`` just
before the signal) to the new leader's ``became_leader`` event: for our members the moment its lease
began, on the same clock.  The crashed member is then restarted with its stored term and vote and must
rejoin as a follower.  A leader elected while the old one was healthy (after a restart, say) is counted as
a deposition.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Optional

import attrs

from raft_election.bench.clusters import BenchCluster
from raft_election.processes import MemberEvent

__all__ = ["Failover", "RangeResult", "run_range"]


@attrs.frozen(kw_only=True)
class Failover:
    """One leader change caused by the benchmark."""

    old_leader: int
    new_leader: int
    old_term: int
    new_term: int
    seconds: float
    #: Election messages (vote and pre-vote requests and answers, repeats too) sent meanwhile, if known.
    messages: Optional[int] = None
    #: The old leader's median heartbeat round trip just before the crash, in seconds, if known.
    round_trip: Optional[float] = None
    #: No leader within the run's ``censor`` time: the crashed member was restarted to end the split votes,
    #: so ``seconds`` only says the failover took at least that long.
    censored: bool = False
    #: Whether the new leader won by fast failover (on death evidence), if the members say.
    fast: Optional[bool] = None

    @property
    def terms(self) -> int:
        """How many terms the election took (more than one: a split vote or a lost round)."""
        return self.new_term - self.old_term


@attrs.frozen(kw_only=True)
class RangeResult:
    """Everything measured for one election-timeout range."""

    election_timeout: tuple[float, float]
    heartbeat_interval: float
    nodes: int
    #: From the moment a quorum of members had started until the first leader took office (seconds).
    initial_election: float
    failovers: tuple[Failover, ...]
    handovers: tuple[Failover, ...]
    #: Leaders elected that the benchmark did not cause: the previous leader was alive and connected
    #: (a restarted member deposed it, or a follower timed out spuriously).
    unprovoked: int
    #: Members restarted (after each crash and graceful stop).
    restarts: int
    #: Whether the members had fast failover on (None: not our members, or not recorded).
    fast_failover: Optional[bool] = None


def run_range(cluster: BenchCluster, *, trials: int, handovers: int, heartbeat_interval: float,
              election_timeout: tuple[float, float], rng: random.Random, settle: float = 0.0,
              idle: float = 0.0, patience: float = 60.0, censor: float = 30.0,
              fast_failover: Optional[bool] = None,
              progress: Callable[[], object] = lambda: None) -> RangeResult:
    """Start ``cluster`` and run ``trials`` crash failovers and then ``handovers`` graceful stops on it.

    Args:
        cluster: a cluster not yet started; the caller closes it.
        trials: leader crashes.
        handovers: graceful stops of the leader, after the crashes.
        heartbeat_interval: the members' heartbeat interval: each crash comes at a uniformly random
            moment within one.
        election_timeout: the members' range (reported with the results).
        rng: draws the crash moments.
        settle: seconds a stable cluster runs before each crash (besides the random moment).
        idle: more seconds of that, for clusters whose behaviour changes when idle.
        patience: the longest any one wait may take before the run is abandoned (TimeoutError).
        censor: after this many seconds without a new leader the crashed member is restarted (the trial
            is marked censored): split votes can go on for ever when the range has almost no randomness.
        fast_failover: the members' setting, reported with the results.
        progress: called after every trial and handover.
    """
    log = cluster.log
    ready = cluster.start()
    first = log.wait_for(lambda e: e.event == "became_leader", patience)
    results: dict[str, list[Failover]] = {"crash": [], "stop": []}
    discarded = 0
    for kind in ["crash"] * trials + ["stop"] * handovers:
        while True:
            cluster.wait_stable(patience)
            time.sleep(settle + (idle if kind == "crash" else 0.0) + rng.uniform(0.0, heartbeat_interval))
            leader, term = cluster.wait_stable(patience)
            before = cluster.election_messages() if kind == "crash" else None
            round_trip = cluster.round_trip(leader) if kind == "crash" else None
            since = log.mark()
            at = cluster.crash(leader) if kind == "crash" else cluster.stop_gracefully(leader)
            cluster.wait_stopped(leader)
            censored = False
            try:
                won = log.wait_for(_new_leader(leader, term), censor, since)
            except TimeoutError:
                # Split votes for ever (timeout ranges with almost no randomness): bring the member back,
                # whose different timer phase breaks the tie, and record the trial as censored.
                censored = True
                cluster.restart(leader)
                won = log.wait_for(_new_leader(leader, term), patience, since)
            cluster.wait_stable(patience)
            after = cluster.election_messages() if kind == "crash" else None
            if not censored:
                cluster.restart(leader)
            if won.monotonic >= at:
                break
            discarded += 1  # another member had taken over just before: not a failover we caused
        messages = None
        if before is not None and after is not None:
            # What the survivors sent; the crashed member sent nothing, unless a censored trial restarted
            # it, and then its counters started again from zero.
            messages = sum(after[m] - (0 if m == leader else before[m]) for m in after)
        results[kind].append(Failover(old_leader=leader, new_leader=won.node, old_term=term,
                                      new_term=won.term, seconds=won.monotonic - at, round_trip=round_trip,
                                      messages=messages, censored=censored, fast=won.record.get("fast")))
        progress()
    cluster.wait_stable(patience)
    caused = {(f.new_leader, f.new_term) for f in results["crash"] + results["stop"]}
    caused.add((first.node, first.term))
    elected = [e for e in log.events if e.event == "became_leader"]
    return RangeResult(election_timeout=election_timeout, heartbeat_interval=heartbeat_interval,
                       nodes=len(cluster.members), initial_election=max(0.0, first.monotonic - ready),
                       failovers=tuple(results["crash"]), handovers=tuple(results["stop"]),
                       unprovoked=sum((e.node, e.term) not in caused for e in elected),
                       restarts=len(results["crash"]) + len(results["stop"]) + discarded,
                       fast_failover=fast_failover)


def _new_leader(old: int, term: int) -> Callable[[MemberEvent], bool]:
    """Matches a member other than ``old`` taking office in a term above ``term``."""
    return lambda event: event.event == "became_leader" and event.node != old and event.term > term
