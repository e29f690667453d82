"""Prometheus metrics of a member: ``serve(node, port)``, or ``raft-election run --metrics ADDR:PORT``.

Needs the optional ``prometheus_client`` package (``pip install 'raft-election[metrics]'``).  The values are
read from :meth:`RaftNode.status` when Prometheus scrapes, so they cost nothing in between; the two that
need events (leader changes, and how long the member knew no leader) are counted from the moment the
collector is created.

==============================================  =========  ==============================================
metric                                          type       meaning
==============================================  =========  ==============================================
``raft_election_term``                          gauge      the member's current term
``raft_election_is_leader``                     gauge      1 while it leads with a valid lease, else 0
``raft_election_role{role}``                    gauge      1 for its current role, 0 for the others
``raft_election_lease_remaining_seconds``       gauge      lease left while leading, else 0
``raft_election_leader_changes_total``          counter    leaders it came to know (its own leadership too)
``raft_election_elections_total{outcome}``      counter    elections it started: ``won`` or ``not_won``
                                                           (lost, abandoned or still under way)
``raft_election_messages_sent_total{type}``     counter    messages sent, by type
``raft_election_messages_received_total{type}`` counter    valid messages received from peers, by type
``raft_election_messages_rejected_total``       counter    bad or stale input dropped, by ``reason``
``raft_election_failover_seconds``              histogram  how long it knew no leader before it learned
                                                           of the next one
``raft_election_peer_last_contact_seconds``     gauge      seconds since each ``peer`` was last heard from
``raft_election_lease_gaps_total``              counter    leases that lapsed while it kept office
``raft_election_lease_gap_seconds_total``       counter    time it spent as leader without a lease
==============================================  =========  ==============================================
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Optional

from raft_election.errors import ConfigError
from raft_election.events import Event, LeaderChanged
from raft_election.roles import Role
from raft_election.stats import MESSAGE_KINDS

if TYPE_CHECKING:
    from raft_election.node import RaftNode

__all__ = ["FAILOVER_BUCKETS", "MetricsServer", "NodeCollector", "serve"]

#: Upper bounds (seconds) of the failover histogram's buckets: from a fast failover to a slow election.
FAILOVER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _prometheus() -> Any:
    try:
        import prometheus_client  # noqa: PLC0415 (an optional dependency)
        import prometheus_client.core  # noqa: PLC0415
    except ImportError:
        raise ConfigError("metrics", "needs the prometheus_client package: "
                                     "pip install 'raft-election[metrics]'") from None
    return prometheus_client


class NodeCollector:
    """A ``prometheus_client`` collector of one member's metrics (see the module docstring).

    Register it with a ``CollectorRegistry``; :func:`serve` does that and serves the registry over HTTP.
    """

    def __init__(self, node: RaftNode) -> None:
        _prometheus()
        self._node = node
        self._lock = threading.Lock()
        self._leader_changes = 0
        self._leaderless_since: Optional[float] = None
        self._buckets = [0] * (len(FAILOVER_BUCKETS) + 1)
        self._failover_sum = 0.0
        node.add_listener(self._on_event)

    def _on_event(self, event: Event) -> None:
        if not isinstance(event, LeaderChanged):
            return
        now = time.monotonic()
        with self._lock:
            if event.leader_id is None:
                if self._leaderless_since is None:
                    self._leaderless_since = now
                return
            self._leader_changes += 1
            if self._leaderless_since is not None:
                seconds = now - self._leaderless_since
                self._leaderless_since = None
                self._buckets[bisect.bisect_left(FAILOVER_BUCKETS, seconds)] += 1
                self._failover_sum += seconds

    def collect(self) -> Iterator[Any]:
        """The metric families, read now (called by ``prometheus_client`` at each scrape)."""
        core = _prometheus().core
        status = self._node.status()
        counters = status.counters

        def gauge(name: str, text: str, value: float) -> Any:
            return core.GaugeMetricFamily(f"raft_election_{name}", text, value=value)

        def counter(name: str, text: str, value: float) -> Any:
            return core.CounterMetricFamily(f"raft_election_{name}", text, value=value)

        yield gauge("term", "The member's current term.", status.term)
        yield gauge("is_leader", "1 while it leads with a valid lease, else 0.", int(status.is_leader))
        role = core.GaugeMetricFamily("raft_election_role", "1 for the member's role.", labels=["role"])
        for each in Role:
            role.add_metric([str(each)], int(status.role is each))
        yield role
        yield gauge("lease_remaining_seconds", "Lease left while leading, else 0.", status.lease_remaining)
        with self._lock:
            changes, buckets, total = self._leader_changes, list(self._buckets), self._failover_sum
        yield counter("leader_changes", "Leaders the member came to know.", changes)
        elections = core.CounterMetricFamily("raft_election_elections", "Elections the member started.",
                                             labels=["outcome"])
        won = counters.get("became_leader", 0)
        elections.add_metric(["won"], won)
        elections.add_metric(["not_won"], max(0, counters.get("elections_started", 0) - won))
        yield elections
        for direction in ("sent", "received"):
            family = core.CounterMetricFamily(f"raft_election_messages_{direction}",
                                              f"Messages {direction}, by type.", labels=["type"])
            for kind in MESSAGE_KINDS.values():
                family.add_metric([kind], counters.get(f"{kind}_{direction}", 0))
            yield family
        rejected = core.CounterMetricFamily("raft_election_messages_rejected",
                                            "Bad or stale input dropped, by reason.", labels=["reason"])
        for name, value in sorted(counters.items()):
            if name.startswith("rejected_"):
                rejected.add_metric([name[len("rejected_"):]], value)
        yield rejected
        cumulative, running = [], 0
        for bound, count in zip((*map(str, FAILOVER_BUCKETS), "+Inf"), buckets):
            running += count
            cumulative.append((bound, running))
        yield core.HistogramMetricFamily("raft_election_failover_seconds",
                                         "How long the member knew no leader before learning of the next.",
                                         buckets=cumulative, sum_value=total)
        contact = core.GaugeMetricFamily("raft_election_peer_last_contact_seconds",
                                         "Seconds since each peer was last heard from.", labels=["peer"])
        for peer, seconds in sorted(status.last_contact.items()):
            if seconds is not None:
                contact.add_metric([str(peer)], seconds)
        yield contact
        yield counter("lease_gaps", "Leases that lapsed while the member kept office.",
                      counters.get("lease_gaps", 0))
        yield counter("lease_gap_seconds", "Time spent as leader without a lease.", status.lease_gap_seconds)


class MetricsServer:
    """An HTTP server of one member's metrics (``/metrics``), on a thread of its own."""

    def __init__(self, node: RaftNode, port: int, addr: str) -> None:
        prometheus = _prometheus()
        self.registry = prometheus.CollectorRegistry()
        self.registry.register(NodeCollector(node))
        try:
            self._server, self._thread = prometheus.start_http_server(port, addr, registry=self.registry)
        except OSError as exc:
            raise ConfigError("metrics", f"cannot listen on {addr}:{port}: {exc.strerror or exc}") from None

    @property
    def port(self) -> int:
        """The port it listens on (the real one when 0 was asked for)."""
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def serve(node: RaftNode, port: int, addr: str = "0.0.0.0") -> MetricsServer:
    """Serve ``node``'s metrics at ``http://addr:port/metrics`` until :meth:`MetricsServer.close`.

    The default address is every interface, as Prometheus scrapes from elsewhere; give ``127.0.0.1`` to
    keep them on the host.

    Raises:
        ConfigError: ``prometheus_client`` is not installed, or the address cannot be bound.
    """
    return MetricsServer(node, port, addr)
