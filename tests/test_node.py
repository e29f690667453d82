"""RaftNode: lifecycle, queries, commands, callbacks, persist-before-send, failures and bad input."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import pytest

from raft_election import (
    FileStorage,
    NoTransferTargetError,
    RaftConfig,
    RaftElectionError,
    RaftNode,
    Role,
    StorageError,
)
from raft_election.codec import Codec
from raft_election.messages import Envelope, Heartbeat, VoteRequest, VoteResponse
from raft_election.oracle import ElectionOracle
from raft_election.storage import HardState
from raft_election.testing import PATIENCE, OracleStorage, ThreadedCluster
from raft_election.transport import DeliverFn, Transport
from transports.memory import InMemoryNetwork


@pytest.fixture
def cluster():
    made: list[ThreadedCluster] = []

    def make(size: int = 3, **kwargs: Any) -> ThreadedCluster:
        made.append(ThreadedCluster(size, **kwargs))
        return made[-1]

    yield make
    for each in made:
        each.close()


# ---------------------------------------------------------------------------- lifecycle and queries


def test_three_members_agree_on_one_leader(cluster):
    c = cluster(3)
    c.start_all()
    leader = c.wait_for_stable_leader()
    assert all(node.wait_for_leader(timeout=PATIENCE) == leader for node in c.nodes.values())
    assert c.nodes[leader].role is Role.LEADER and c.nodes[leader].is_leader
    status = c.nodes[leader].status()
    assert status.is_leader and status.leader_id == leader and status.lease_remaining > 0
    assert status.counters["became_leader"] == 1
    assert status.counters["messages_sent"] > 0
    followers = [node for node_id, node in c.nodes.items() if node_id != leader]
    assert all(not node.is_leader and node.role is Role.FOLLOWER for node in followers)
    assert all(node.term == c.nodes[leader].term for node in followers)


def test_start_and_stop_are_idempotent_and_a_stopped_node_cannot_restart():
    with InMemoryNetwork(seed=1) as net:
        node = RaftNode(RaftConfig(node_id=1, peers={1: "a"}), net.transport(1))
        assert node.start() is node
        assert node.start() is node
        assert node.wait_for_leader(timeout=PATIENCE) == 1
        node.stop()
        node.stop()
        assert not node.status().running
        assert not node.is_leader
        with pytest.raises(RaftElectionError, match="stopped"):
            node.start()


def test_context_manager_starts_and_stops_and_repr_shows_state():
    with InMemoryNetwork(seed=1) as net:
        node = RaftNode(RaftConfig(node_id=1, peers={1: "a"}), net.transport(1))
        assert "not started" in repr(node)
        with node:
            node.wait_for_leader(timeout=PATIENCE)
            text = repr(node)
            assert "id=1" in text and "role=leader" in text and "term=1" in text
        assert not node.status().running


def test_wait_for_leader_times_out_without_a_quorum():
    with InMemoryNetwork(seed=2) as net:
        config = RaftConfig(node_id=1, peers={1: "a", 2: "b", 3: "c"})
        with RaftNode(config, net.transport(1)) as node, pytest.raises(TimeoutError, match="no leader"):
            node.wait_for_leader(timeout=0.5)


def test_wait_for_leader_on_a_node_that_is_not_running_raises():
    with InMemoryNetwork(seed=2) as net:
        node = RaftNode(RaftConfig(node_id=1, peers={1: "a"}), net.transport(1))
        with pytest.raises(RaftElectionError, match="not running"):
            node.wait_for_leader(timeout=1)


def test_status_is_an_immutable_snapshot(cluster):
    c = cluster(3)
    c.start_all()
    leader = c.wait_for_stable_leader()
    status = c.nodes[leader].status()
    with pytest.raises(AttributeError):
        status.term = 99  # type: ignore[misc]
    with pytest.raises(TypeError):
        status.counters["became_leader"] = 5  # type: ignore[index]
    assert status.role is Role.LEADER and status.voted_for == leader
    assert status.counters["elections_started"] >= 1


# ---------------------------------------------------------------------------- commands


def test_transfer_leadership_hands_over_to_the_chosen_target(cluster):
    c = cluster(3)
    c.start_all()
    leader = c.wait_for_stable_leader()
    target = next(node_id for node_id in c.nodes if node_id != leader)
    term = c.nodes[leader].term
    assert c.nodes[leader].transfer_leadership(target) == target
    assert not c.nodes[leader].is_leader  # the lease is given up before TimeoutNow leaves
    c.wait_for(lambda: c.stable_leader() == target, what=f"{target} leading")
    assert c.nodes[target].term == term + 1


def test_transfer_leadership_on_a_follower_raises(cluster):
    c = cluster(3)
    c.start_all()
    leader = c.wait_for_stable_leader()
    follower = next(node for node_id, node in c.nodes.items() if node_id != leader)
    with pytest.raises(RaftElectionError, match="not leader"):
        follower.transfer_leadership()


def test_transfer_without_any_candidate_peer_raises(cluster):
    c = cluster(3)
    c.start_all()
    leader = c.wait_for_stable_leader()
    for node_id, node in c.nodes.items():
        if node_id != leader:
            node.set_candidate(False)
    # Heartbeat answers carry candidacy: wait for two more rounds of them, then the leader knows.
    answers = c.nodes[leader].status().counters["messages_received"]
    c.wait_for(lambda: c.nodes[leader].status().counters["messages_received"] >= answers + 4,
               what="two rounds of heartbeat answers")
    with pytest.raises(NoTransferTargetError):
        c.nodes[leader].transfer_leadership()
    assert c.nodes[leader].is_leader  # a refused transfer changes nothing


def test_step_down_from_inside_on_become_leader_does_not_deadlock(cluster):
    c = cluster(3)
    stepped = threading.Event()
    first: list[int] = []

    def on_become_leader(term: int) -> None:
        if not first:
            first.append(term)
            nodes[0].step_down()  # calls back into the node from its callback thread
            stepped.set()

    nodes: list[RaftNode] = []
    for node_id in c.peers:
        if node_id == 1:
            nodes.append(c.start(1, on_become_leader=on_become_leader))
        else:
            c.start(node_id)
    # Make node 1 the only possible candidate so its callback runs.
    for node_id in (2, 3):
        c.nodes[node_id].set_candidate(False)
    assert stepped.wait(PATIENCE)
    c.wait_for(lambda: c.stable_leader() == 1 and c.nodes[1].term > first[0],
               what="node 1 re-elected after stepping down")
    assert c.nodes[1].status().counters["step_downs_step_down"] == 1


def test_callbacks_run_in_order_and_a_raising_callback_does_not_kill_the_node(cluster, caplog):
    c = cluster(3)
    calls: list[tuple[str, Any]] = []

    def explode(term: int) -> None:
        calls.append(("leader", term))
        raise RuntimeError("application bug")

    def lost(term: int) -> None:
        calls.append(("lost", term))

    def changed(leader: Any, term: int) -> None:
        calls.append(("changed", (leader, term)))

    caplog.set_level(logging.ERROR, logger="raft_election.node")
    node = c.start(1, on_become_leader=explode, on_lose_leadership=lost, on_leader_change=changed)
    c.start(2)
    c.start(3)
    for node_id in (2, 3):
        c.nodes[node_id].set_candidate(False)
    c.wait_for(lambda: c.stable_leader() == 1, what="1 leading")
    node.step_down()
    c.wait_for(lambda: ("lost", 1) in calls or any(k == "lost" for k, _ in calls), what="lost callback")
    c.wait_for(lambda: node.status().counters.get("callback_errors", 0) >= 1, what="callback error counted")
    leader_term = next(term for kind, term in calls if kind == "leader")
    # became leader, then leader changed to itself, then lost, then leader unknown: in this order.
    kinds = [kind for kind, _ in calls]
    assert kinds.index("leader") < kinds.index("lost")
    assert ("changed", (1, leader_term)) in calls
    assert calls.index(("changed", (1, leader_term))) < kinds.index("lost")
    assert "a callback raised" in caplog.text
    c.wait_for(lambda: c.stable_leader() == 1, what="1 leading again after the failing callback")


def test_set_candidate_false_keeps_a_member_from_leading(cluster):
    c = cluster(3)
    c.start_all()
    c.nodes[1].set_candidate(False)
    c.nodes[2].set_candidate(False)
    leader = c.wait_for_stable_leader()
    assert leader == 3
    c.nodes[3].step_down()
    # Nobody else stands: 3 wins again.
    c.wait_for(lambda: c.stable_leader() == 3 and c.nodes[3].status().counters["became_leader"] >= 2,
               what="3 re-elected")
    assert c.nodes[1].status().counters.get("elections_started", 0) == 0
    assert c.nodes[2].status().counters.get("elections_started", 0) == 0


# ---------------------------------------------------------------------------- persist before send


class RecordingTransport(Transport):
    """Wraps a transport and logs every message sent, in the same log as the storage's saves."""

    def __init__(
        self, inner: Transport, codec: Codec, log: list[tuple[str, Any]], lock: threading.Lock
    ) -> None:
        self._inner = inner
        self._codec = codec
        self._log = log
        self._lock = lock

    def start(self, node_id: int, peers: Any, deliver: DeliverFn) -> None:
        self._inner.start(node_id, peers, deliver)

    def send(self, peer_id: int, data: bytes) -> None:
        envelope = self._codec.decode(data)
        with self._lock:
            self._log.append(("sent", envelope.sender, envelope.message))
        self._inner.send(peer_id, data)

    def close(self) -> None:
        self._inner.close()


class SlowStorage(OracleStorage):
    """Saves take a while, so a send racing ahead of its save would show up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slow = threading.Event()

    def save(self, state: HardState) -> None:
        self._slow.wait(0.005)
        super().save(state)


def test_no_message_leaves_before_the_term_and_vote_it_depends_on_are_saved():
    """Raft §5.2 / Figure 2: persist currentTerm and votedFor before responding to RPCs."""
    log: list[tuple[str, Any]] = []
    lock = threading.Lock()
    oracle = ElectionOracle()
    peers = {1: "a", 2: "b", 3: "c"}
    codec = Codec("default")
    elected: queue.Queue[int] = queue.Queue()
    with InMemoryNetwork(seed=5, delay=(0.0, 0.001)) as net:
        nodes = {i: RaftNode(RaftConfig(node_id=i, peers=peers),
                             RecordingTransport(net.transport(i), codec, log, lock),
                             SlowStorage(i, oracle, log, lock),
                             on_become_leader=lambda term, i=i: elected.put(i)) for i in peers}
        for node in nodes.values():
            node.start()
        for _ in range(4):  # the first election, then three more: the leader steps down each time
            nodes[elected.get(timeout=PATIENCE)].step_down()
        for node in nodes.values():
            node.stop()
    saved: dict[int, HardState] = {i: HardState() for i in peers}
    checked = 0
    for kind, node_id, item in log:
        if kind == "saved":
            saved[node_id] = item
            continue
        state = saved[node_id]
        if isinstance(item, VoteRequest) and not item.pre_vote:
            assert state.term == item.term and state.voted_for == node_id, (item, state)
            checked += 1
        elif isinstance(item, VoteResponse) and item.granted and not item.pre_vote:
            assert state.term == item.term, (item, state)
            checked += 1
        elif isinstance(item, Heartbeat):
            assert state.term == item.term, (item, state)
    assert checked >= 4 * 2  # four campaigns, each with a vote request and a granted vote, were checked


def test_a_node_whose_storage_fails_halts_and_sends_nothing_more(cluster):
    class FailingStorage(OracleStorage):
        fail = False

        def save(self, state: HardState) -> None:
            if self.fail:
                raise OSError(28, "No space left on device")
            super().save(state)

    c = cluster(3)
    failing = FailingStorage(1, c.oracle)
    c.storages[1] = failing
    c.start_all()
    c.nodes[2].set_candidate(False)
    c.nodes[3].set_candidate(False)
    c.wait_for(lambda: c.stable_leader() == 1, what="1 leading")
    term = c.nodes[1].term
    failing.fail = True
    c.nodes[1].step_down()  # 1 is the only candidate: it campaigns again, which needs a save first
    c.wait_for(lambda: c.nodes[1].failure is not None, what="node 1 halted")
    assert isinstance(c.nodes[1].failure, OSError)
    assert not c.nodes[1].is_leader and not c.nodes[1].status().running
    with pytest.raises(RaftElectionError, match="halted"):
        c.nodes[1].wait_for_leader(timeout=1)
    c.wait_for(lambda: c.network.stats.in_flight == 0, what="network drained")
    # The vote requests of the unsaved term never left: the peers never heard of term + 1.
    assert c.nodes[2].term == term and c.nodes[3].term == term


def test_a_corrupt_state_file_stops_the_node_from_starting(tmp_path):
    with FileStorage(tmp_path) as storage:
        storage.save(HardState(term=7, voted_for=1))
    state_file = next(p for p in tmp_path.iterdir() if p.name.startswith("state"))
    state_file.write_text(state_file.read_text().replace("7", "8"))
    with InMemoryNetwork(seed=1) as net:
        node = RaftNode(RaftConfig(node_id=1, peers={1: "a"}), net.transport(1), FileStorage(tmp_path))
        with pytest.raises(StorageError):
            node.start()
        assert not node.status().running


def test_a_node_restarted_from_file_storage_keeps_its_term(tmp_path):
    with InMemoryNetwork(seed=1) as net:
        config = RaftConfig(node_id=1, peers={1: "a"})
        with RaftNode(config, net.transport(1), FileStorage(tmp_path)) as node:
            node.wait_for_leader(timeout=PATIENCE)
            term = node.term
        with RaftNode(config, net.transport(1), FileStorage(tmp_path)) as node:
            node.wait_for_leader(timeout=PATIENCE)
            assert node.term == term + 1


# ---------------------------------------------------------------------------- bad input


def test_garbage_and_forged_messages_are_counted_and_change_nothing(cluster):
    c = cluster(3)
    c.start_all()
    leader = c.wait_for_stable_leader()
    node = c.nodes[leader]
    term = node.term
    before = node.status().counters
    forged_term = term + 1000
    wrong_cluster = Codec("another-cluster").encode(
        Envelope(sender=2, recipient=leader, message=Heartbeat(term=forged_term, round=1)))
    wrong_secret = Codec("default", b"0123456789abcdef-other").encode(
        Envelope(sender=2, recipient=leader, message=Heartbeat(term=forged_term, round=1)))
    unknown_sender = Codec("default").encode(
        Envelope(sender=99, recipient=leader, message=Heartbeat(term=forged_term, round=1)))
    wrong_recipient = Codec("default").encode(
        Envelope(sender=2, recipient=42, message=Heartbeat(term=forged_term, round=1)))
    garbage = [b"", b"\x00", b"RE", b"x" * 5000, bytes(range(256)), b"RE\x01\x07" + b"\x00" * 40]
    for data in [wrong_cluster, wrong_secret, unknown_sender, wrong_recipient, *garbage]:
        c.network.inject(leader, data)
    c.wait_for(lambda: node.status().rejected() - _rejected(before) >= 10, what="all rejections counted")
    after = node.status()
    assert after.term == term and after.is_leader
    assert after.counters["rejected_wrong_cluster"] - before.get("rejected_wrong_cluster", 0) == 1
    assert after.counters["rejected_unexpected_mac"] - before.get("rejected_unexpected_mac", 0) == 1
    assert after.counters["rejected_unknown_sender"] - before.get("rejected_unknown_sender", 0) == 1
    assert after.counters["rejected_wrong_recipient"] - before.get("rejected_wrong_recipient", 0) == 1


def _rejected(counters: Any) -> int:
    return sum(count for name, count in counters.items() if name.startswith("rejected_"))


def test_with_a_secret_unauthenticated_and_wrongly_keyed_messages_are_rejected(cluster):
    secret = b"a shared secret of 32 bytes....."
    c = cluster(3, secret=secret)
    c.start_all()
    leader = c.wait_for_stable_leader()
    node = c.nodes[leader]
    term = node.term
    forged = Heartbeat(term=term + 5, round=1)
    c.network.inject(leader, Codec("default").encode(Envelope(sender=2, recipient=leader, message=forged)))
    c.network.inject(leader, Codec("default", b"the wrong secret, 32 bytes......").encode(
        Envelope(sender=2, recipient=leader, message=forged)))
    c.wait_for(lambda: node.status().counters.get("rejected_missing_mac", 0) == 1
               and node.status().counters.get("rejected_bad_mac", 0) == 1, what="rejections")
    assert node.term == term and node.is_leader


# ---------------------------------------------------------------------------- leader-only work: lead()


@pytest.mark.parametrize("ending", ["until", "stop"])
def test_lead_waiting_for_the_next_leadership_returns_when_until_is_set_or_the_node_stops(cluster, ending):
    """lead() waits on the node's condition, not a polling loop: ``until`` and ``stop()`` must wake it."""
    c = cluster(1)
    node = c.start(1)
    worked = threading.Event()
    until = threading.Event()

    def work(leadership: Any) -> None:
        worked.set()  # returns at once: lead() then waits for the next leadership, which never comes

    worker = threading.Thread(target=node.lead, args=(work,), kwargs={"until": until})
    worker.start()
    assert worked.wait(PATIENCE)
    worker.join(0.05)
    assert worker.is_alive()  # still leading term 1: waiting for another leadership
    if ending == "until":
        until.set()
    else:
        node.stop()
    worker.join(PATIENCE)
    assert not worker.is_alive()
