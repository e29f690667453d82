"""Datagrams read together are handled together (``raft_election.transport.batch_of``).

A transport that reads several datagrams at once hands them to the batch form of ``deliver`` in one call;
the node handles them as one batch: one output, so one durable write for the votes they hold and one
datagram per peer for the answers.  When a member that led many groups dies, each survivor receives the
others' vote requests close together; handled one datagram at a time, each paid its own fsync.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence

import pytest

from raft_election import MemoryStorage, RaftConfig, RaftNode
from raft_election.codec import Codec
from raft_election.messages import Envelope, VoteRequest, VoteResponse
from raft_election.processes import free_ports
from raft_election.transport import DeliverFn, Transport, batch_of
from transports.udp import UdpTransport
from transports.zeromq import ZmqTransport

TIMEOUT = 10.0  # only to keep a broken test from hanging; never reached when the code works


class Gate:
    """A ``deliver`` with a batch form.  Once ``armed``, its next call blocks until ``release``: what arrives
    meanwhile waits in the socket and is read together afterwards."""

    def __init__(self) -> None:
        self.calls: list[list[bytes]] = []
        self.armed = False
        self.blocked = threading.Event()
        self.released = threading.Event()
        self._changed = threading.Condition()

    def __call__(self, data: bytes) -> None:
        self._take([data])

    def batch(self, datas: Sequence[bytes]) -> None:
        self._take(list(datas))

    def _take(self, datas: list[bytes]) -> None:
        with self._changed:
            self.calls.append(datas)
            block, self.armed = self.armed, False
            self._changed.notify_all()
        if block:
            self.blocked.set()
            self.released.wait(TIMEOUT)

    def until(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
        """Wait until ``predicate()`` (evaluated under the gate's lock) holds; False on timeout."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def wait_for(self, count: int) -> list[bytes]:
        """Every datagram delivered, in order, once there are ``count`` of them."""
        assert self.until(lambda: sum(map(len, self.calls)) >= count)
        with self._changed:
            return [data for call in self.calls for data in call]


@contextlib.contextmanager
def started_pair(make: Callable[[], Transport], kind: str, scheme: str) -> Iterator[tuple[Transport, Gate]]:
    """Transport 1 sends to transport 2, whose ``deliver`` is a :class:`Gate`; both closed at the end."""
    ports = free_ports(2, kind=kind)
    peers = {1: f"{scheme}127.0.0.1:{ports[0]}", 2: f"{scheme}127.0.0.1:{ports[1]}"}
    sender, receiver, gate = make(), make(), Gate()
    try:
        sender.start(1, peers, lambda data: None)
        receiver.start(2, peers, gate)
        yield sender, gate
    finally:
        gate.released.set()
        sender.close()
        receiver.close()


@pytest.fixture
def udp_pair() -> Iterator[tuple[Transport, Gate]]:
    with started_pair(UdpTransport, "udp", "") as pair:
        yield pair


def test_udp_hands_datagrams_that_waited_together_to_the_batch_form_in_order(udp_pair) -> None:
    sender, gate = udp_pair
    gate.armed = True
    sender.send(2, b"first")
    assert gate.blocked.wait(TIMEOUT)  # the receive thread is inside deliver now
    later = [b"m%d" % k for k in range(5)]
    for data in later:
        sender.send(2, data)  # on loopback each is in the receiver's socket buffer when send returns
    gate.released.set()
    assert gate.wait_for(6) == [b"first", *later]
    assert gate.calls == [[b"first"], later]  # one call for the five that waited


@pytest.fixture
def zmq_pair() -> Iterator[tuple[Transport, Gate]]:
    """As ``udp_pair`` over ZeroMQ, once the connection carries messages."""
    with started_pair(ZmqTransport, "tcp", "tcp://") as (sender, gate):
        while not gate.calls:  # the connection is made in the background: send until one arrives
            sender.send(2, b"hello")
            gate.until(lambda: bool(gate.calls), 0.05)
        sender.send(2, b"sync")  # after every hello on the one connection: once it is in, they all are
        assert gate.until(lambda: any(b"sync" in call for call in gate.calls))
        yield sender, gate


def test_zeromq_hands_frames_that_waited_together_to_the_batch_form_in_order(zmq_pair) -> None:
    """As over UDP; libzmq's I/O thread moves frames into the socket in the background, so a round may see
    them arrive one by one, but not round after round."""
    sender, gate = zmq_pair
    assert set(gate.wait_for(1)) == {b"hello", b"sync"}
    together = False
    for attempt in range(20):
        gate.blocked.clear()
        gate.released.clear()
        delivered = len(gate.wait_for(1))
        start = len(gate.calls)
        gate.armed = True
        sender.send(2, b"first")
        assert gate.blocked.wait(TIMEOUT)  # the receive thread is inside deliver now
        later = [b"%d:%d" % (attempt, k) for k in range(6)]  # within SEND_HWM // 2: never dropped
        for data in later:
            sender.send(2, data)
        gate.released.set()
        assert gate.wait_for(delivered + 7)[delivered:] == [b"first", *later]  # all, in order
        assert gate.calls[start] == [b"first"]
        if any(len(call) > 1 for call in gate.calls[start + 1:]):
            together = True
            break
    assert together  # frames read together are handed over in one call


def test_a_deliver_without_a_batch_form_gets_one_call_per_datagram() -> None:
    calls: list[bytes] = []
    assert batch_of(calls.append) is None
    gate = Gate()
    assert batch_of(gate) == gate.batch


class Recorder(Transport):
    """A transport that keeps the node's ``deliver`` and records what the node sends."""

    def __init__(self) -> None:
        self.deliver: DeliverFn = lambda data: None
        self.sent: list[tuple[int, bytes]] = []

    def start(self, node_id: int, peers: Mapping[int, str], deliver: DeliverFn) -> None:
        self.deliver = deliver

    def send(self, peer_id: int, data: bytes) -> None:
        self.sent.append((peer_id, data))

    def close(self) -> None:
        pass


def test_the_node_answers_datagrams_delivered_together_in_one_datagram_per_peer() -> None:
    peers = {1: "127.0.0.1:9001", 2: "127.0.0.1:9002", 3: "127.0.0.1:9003"}
    transport = Recorder()
    node = RaftNode(RaftConfig(node_id=1, peers=peers), transport=transport, storage=MemoryStorage())
    node.start()
    try:
        batch = batch_of(transport.deliver)
        assert batch is not None
        codec = Codec("default")
        requests = [codec.encode(Envelope(sender=2, recipient=1, group=group,
                                          message=VoteRequest(term=4, round=7, pre_vote=True)))
                    for group in ("jobs", "cache")]
        transport.sent.clear()
        batch(requests)
        answers = [(peer, envelope) for peer, data in transport.sent if peer == 2
                   for envelope in codec.decode_frame(data) if isinstance(envelope, Envelope)
                   and isinstance(envelope.message, VoteResponse)]
        assert sorted(envelope.group for _, envelope in answers) == ["cache", "jobs"]
        assert len({id(data) for peer, data in transport.sent if peer == 2}) == 1  # one datagram for both
        assert set(node.groups) >= {"jobs", "cache"}
    finally:
        node.stop()
