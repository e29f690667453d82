"""Prometheus metrics of threaded members (raft_election.metrics): scraped over HTTP and parsed with
prometheus_client's own parser, through a failover."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from raft_election.metrics import FAILOVER_BUCKETS, serve
from raft_election.testing import ThreadedCluster

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def cluster() -> Iterator[ThreadedCluster]:
    c = ThreadedCluster(3)
    c.start_all()
    yield c
    c.close()


def scrape(port: int) -> Samples:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_metrics_follow_the_members_status_and_a_failover(cluster):
    leader = cluster.wait_for_stable_leader()
    follower = next(node for node in cluster.peers if node != leader)
    servers = {node: serve(cluster.nodes[node], 0, "127.0.0.1") for node in (leader, follower)}
    try:
        led = scrape(servers[leader].port)
        assert led[("raft_election_is_leader", ())] == 1.0
        assert led[("raft_election_role", (("role", "leader"),))] == 1.0
        assert led[("raft_election_role", (("role", "follower"),))] == 0.0
        assert led[("raft_election_term", ())] == cluster.nodes[leader].term
        assert 0 < led[("raft_election_lease_remaining_seconds", ())] <= 0.15
        assert led[("raft_election_elections_total", (("outcome", "won"),))] == 1.0
        sent = led[("raft_election_messages_sent_total", (("type", "heartbeats"),))]
        assert sent > 0
        peers = {labels[0][1] for name, labels in led if name == "raft_election_peer_last_contact_seconds"}
        assert peers == {str(node) for node in cluster.peers if node != leader}
        followed = scrape(servers[follower].port)
        assert followed[("raft_election_is_leader", ())] == 0.0
        assert followed[("raft_election_messages_received_total", (("type", "heartbeats"),))] > 0
        assert followed[("raft_election_failover_seconds_count", ())] == 0.0

        servers.pop(leader).close()
        cluster.crash(leader)
        cluster.wait_for(lambda: cluster.stable_leader() not in (None, leader), what="a new leader")
        after = scrape(servers[follower].port)
        assert after[("raft_election_leader_changes_total", ())] >= 1
        count = after[("raft_election_failover_seconds_count", ())]
        assert count >= 1  # it knew no leader for a while, then learned of the new one
        assert 0 < after[("raft_election_failover_seconds_sum", ())] < 10 * count
        buckets = [after[("raft_election_failover_seconds_bucket", (("le", str(bound)),))]
                   for bound in FAILOVER_BUCKETS]
        assert buckets == sorted(buckets) and buckets[-1] == count
    finally:
        for server in servers.values():
            server.close()
