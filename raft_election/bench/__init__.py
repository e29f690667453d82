"""Election-latency benchmark behind ``raft-election bench`` (SPEC §8).

For each election-timeout range it starts a fresh cluster (member processes over UDP or ZeroMQ on
loopback, or threads over the in-memory network), crashes the leader ``trials`` times at random moments,
times each failover from the crash to the moment a new leader's lease began, and reports the distribution
against the ideal model ``a + (b - a) / n - h / 2 + 2r`` (see :mod:`raft_election.bench.trials` for the
method and :mod:`raft_election.bench.report` for the figures).
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from typing import Optional

import attrs

from raft_election.bench.clusters import BenchCluster, MemberCommand, MemoryCluster, ProcessCluster
from raft_election.bench.trials import Failover, RangeResult, run_range
from raft_election.config import check_settings
from raft_election.errors import ConfigError

__all__ = ["BenchSettings", "Failover", "MemoryCluster", "ProcessCluster", "RangeResult", "default_heartbeat",
           "run_bench", "run_one_range", "run_range"]

TRANSPORTS = ("udp", "zmq", "memory")


def default_heartbeat(election_timeout: tuple[float, float]) -> float:
    """A third of the minimum election timeout: 50 ms for 150-300 ms, 4 ms for 12-24 ms."""
    return election_timeout[0] / 3


@attrs.frozen(kw_only=True)
class BenchSettings:
    """What to measure.  Times in seconds."""

    transport: str = "udp"
    nodes: int = 5
    timeouts: tuple[tuple[float, float], ...] = ((0.150, 0.300),)
    #: None: :func:`default_heartbeat` of each range.
    heartbeat: Optional[float] = None
    trials: int = 30
    handovers: int = 10
    seed: int = 0
    settle: float = 0.0
    idle: float = 0.0
    #: The members' ``fast_failover`` setting (other member programs ignore it).
    fast_failover: bool = True

    def heartbeat_for(self, election_timeout: tuple[float, float]) -> float:
        """The heartbeat interval used with ``election_timeout``."""
        return self.heartbeat if self.heartbeat is not None else default_heartbeat(election_timeout)

    def check(self) -> None:
        """Raise ConfigError (naming the field) for settings no member would accept, before starting any."""
        if self.transport not in TRANSPORTS:
            raise ConfigError("transport", f"must be one of {', '.join(TRANSPORTS)}, not {self.transport!r}")
        if self.nodes < 2:
            raise ConfigError("nodes", f"crashing a leader needs at least 2 nodes, not {self.nodes}")
        for field in ("trials", "handovers"):
            if getattr(self, field) < 0:
                raise ConfigError(field, f"must be 0 or more, not {getattr(self, field)}")
        for timeout in self.timeouts:
            check_settings(self.nodes, election_timeout=timeout,
                           heartbeat_interval=self.heartbeat_for(timeout), fast_failover=self.fast_failover)


def run_one_range(settings: BenchSettings, election_timeout: tuple[float, float], rng: random.Random, *,
                  member_command: Optional[MemberCommand] = None,
                  progress: Callable[[], object] = lambda: None) -> RangeResult:
    """Measure one range on a fresh cluster (``member_command``: another member program, processes only)."""
    heartbeat = settings.heartbeat_for(election_timeout)
    with tempfile.TemporaryDirectory(prefix="raft-election-bench-") as workdir:
        cluster: BenchCluster
        if settings.transport == "memory":
            cluster = MemoryCluster(settings.nodes, election_timeout=election_timeout,
                                    heartbeat_interval=heartbeat, seed=rng.getrandbits(32),
                                    fast_failover=settings.fast_failover)
        else:
            cluster = ProcessCluster(settings.nodes, workdir, transport=settings.transport,
                                     election_timeout=election_timeout, heartbeat_interval=heartbeat,
                                     member_command=member_command, fast_failover=settings.fast_failover)
        with cluster:
            handovers = settings.handovers if member_command is None else 0
            return run_range(cluster, trials=settings.trials, handovers=handovers,
                             heartbeat_interval=heartbeat, election_timeout=election_timeout, rng=rng,
                             settle=settings.settle, idle=settings.idle, progress=progress,
                             fast_failover=settings.fast_failover if member_command is None else None)


def run_bench(settings: BenchSettings, *, progress: Callable[[], object] = lambda: None) -> list[RangeResult]:
    """Measure every range of ``settings``, one fresh cluster each, in order."""
    settings.check()
    rng = random.Random(settings.seed)
    return [run_one_range(settings, timeout, rng, progress=progress) for timeout in settings.timeouts]


def steps(settings: BenchSettings) -> int:
    """How many times ``progress`` is called by :func:`run_bench` (for a progress bar)."""
    return len(settings.timeouts) * (settings.trials + settings.handovers)


def describe(settings: BenchSettings) -> str:
    """One line: what was measured, for the report's heading."""
    where = {"udp": "member processes over UDP on 127.0.0.1",
             "zmq": "member processes over ZeroMQ on 127.0.0.1",
             "memory": "threads over the in-memory network (0.2-1 ms delay)"}[settings.transport]
    heartbeat = "min/3" if settings.heartbeat is None else f"{settings.heartbeat * 1000:g} ms"
    fast = "on" if settings.fast_failover else "off"
    return (f"{settings.nodes} members, {where}; heartbeat {heartbeat}; fast failover {fast}; "
            f"{settings.trials} crash trials and {settings.handovers} graceful handovers per range; "
            f"seed {settings.seed}")

