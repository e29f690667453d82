"""Tests for ``Transport.set_peers``: the transports follow a membership change while they run (thesis ch. 4).

Every transport is checked end to end: after ``set_peers`` a message reaches a peer that was added (a
second real transport, started on loopback at the new address), a removed peer gets nothing more (and the
drop is counted), a changed address is followed (the peer restarted on another port receives there), this
node's own address never changes, a malformed address raises and changes nothing, calls before start and
after close are ignored, and the death probes follow the peers.  The UDP and ZeroMQ transports run the same
tests (parametrised by ``kind``); the in-memory network has its own, below.

Synchronisation: deliveries and death evidence land in lists guarded by a condition, and tests wait on it.
While a connection is being set up (ZeroMQ drops what is sent meanwhile; a host name is being resolved)
a message is resent each time a short wait for it ends empty.  To prove that something was *not*
delivered, a marker is sent afterwards on the same path (one socket to one peer: delivered in order), and
once it is in, nothing sent before it can still come.  To prove that a probe yields nothing, a dead peer
is probed in the same rounds as a positive control, twice (see tests/test_death_probe.py).  Deadlines
only keep a broken test from hanging.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Mapping
from typing import Callable, Optional, Union

import pytest
import zmq

from raft_election.errors import TransportError
from raft_election.transport import Transport
from transports.memory import InMemoryNetwork, MemoryTransport
from transports.socketbase import PeerChanges
from transports.udp import UdpTransport
from transports.udp import addresses as udp_addresses
from transports.zeromq import ZmqTransport

TIMEOUT = 10.0  # only to keep a broken test from hanging; never reached when the code works
RESEND = 0.01  # how long to wait for a message before sending it again, while a connection is set up
ATTEMPTS = 5  # retries when a port picked as free was taken before the transport bound it
HOST = "127.0.0.1"

SocketKind = Union[UdpTransport, ZmqTransport]


# ---------------------------------------------------------------------------------------- helpers


class Inbox:
    """A ``deliver`` callback that keeps every message; tests wait for the one they expect."""

    def __init__(self) -> None:
        self.items: list[bytes] = []
        self.seen: set[bytes] = set()
        self.changed = threading.Condition()

    def __call__(self, data: bytes) -> None:
        with self.changed:
            self.items.append(data)
            self.seen.add(data)
            self.changed.notify_all()

    def wait_for(self, data: bytes, timeout: float = TIMEOUT) -> bool:
        """Whether ``data`` arrived (or arrives within ``timeout`` seconds)."""
        with self.changed:
            return self.changed.wait_for(lambda: data in self.seen, timeout)

    def since(self, mark: int) -> list[bytes]:
        """What arrived after the first ``mark`` messages."""
        with self.changed:
            return self.items[mark:]

    def count(self) -> int:
        with self.changed:
            return len(self.items)


class Reports:
    """The death-evidence callback: records ``(peer_id, kind)``; tests wait for a number of reports."""

    def __init__(self) -> None:
        self.items: list[tuple[int, str]] = []
        self.changed = threading.Condition()

    def __call__(self, peer_id: int, kind: str) -> None:
        with self.changed:
            self.items.append((peer_id, kind))
            self.changed.notify_all()

    def count(self, peer_id: int) -> int:
        with self.changed:
            return sum(1 for reported, _ in self.items if reported == peer_id)

    def wait_for(self, peer_id: int, count: int) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: self.count(peer_id) >= count, TIMEOUT):
                raise AssertionError(f"node {peer_id} reported {self.count(peer_id)} times, not {count}: "
                                     f"{self.items}")


class Kind:
    """How to make, and address, a transport of one kind (``udp`` or ``zmq``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.evidence = "port_unreachable" if name == "udp" else "connection_refused"

    def make(self) -> SocketKind:
        return UdpTransport() if self.name == "udp" else ZmqTransport()

    def free_address(self) -> str:
        """An address of a port on loopback that nothing is bound to right now."""
        kind = socket.SOCK_DGRAM if self.name == "udp" else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind((HOST, 0))
            return f"{HOST}:{sock.getsockname()[1]}"

    def canonical(self, address: str) -> str:
        """``address`` as the transport reports it in ``peers``."""
        return address if self.name == "udp" else f"tcp://{address}"

    def __repr__(self) -> str:
        return self.name


class Node:
    """A started transport with its address and inbox."""

    def __init__(self, node_id: int, address: str, transport: SocketKind, inbox: Inbox) -> None:
        self.node_id = node_id
        self.address = address
        self.transport = transport
        self.inbox = inbox


class Loopback:
    """Starts transports on loopback; the fixture's finalizer closes every one of them."""

    def __init__(self) -> None:
        self.transports: list[Transport] = []

    def start(self, kind: Kind, node_id: int, others: Mapping[int, str],
              make: Optional[Callable[[], SocketKind]] = None) -> Node:
        """Start node ``node_id`` on a free port, knowing the peers ``others``."""
        for attempt in range(ATTEMPTS):
            address = kind.free_address()
            transport = make() if make is not None else kind.make()
            self.transports.append(transport)
            inbox = Inbox()
            try:
                transport.start(node_id, {node_id: address, **others}, inbox)
            except TransportError as exc:
                if "in use" not in str(exc) or attempt == ATTEMPTS - 1:
                    raise
                continue
            return Node(node_id, address, transport, inbox)
        raise AssertionError("unreachable")

    def close(self) -> None:
        for transport in self.transports:
            transport.close()


@pytest.fixture
def loopback(request: pytest.FixtureRequest) -> Loopback:
    made = Loopback()
    request.addfinalizer(made.close)
    return made


KINDS = [pytest.param(Kind("udp"), id="udp"), pytest.param(Kind("zmq"), id="zmq")]


def reach(sender: Node, receiver: Node, payload: bytes) -> None:
    """Send ``payload`` until ``receiver`` has it (a new connection, or a name, may take a moment)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        sender.transport.send(receiver.node_id, payload)
        if receiver.inbox.wait_for(payload, RESEND):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{payload!r} never reached node {receiver.node_id}")


def settle(sender: Node, receiver: Node, tag: str) -> int:
    """Wait until ``sender`` reaches ``receiver``, and until every copy resent meanwhile is in.

    Returns how many messages ``receiver`` has by then: what arrives later was sent later.
    """
    reach(sender, receiver, f"{tag}: hello".encode())
    marker = f"{tag}: marker".encode()
    sender.transport.send(receiver.node_id, marker)  # connected: sent once, it arrives after the resends
    assert receiver.inbox.wait_for(marker)
    return receiver.inbox.count()


def probe_in_rounds(node: Node, reports: Reports, quiet: int, dead: int) -> None:
    """Probe ``quiet`` and the dead peer ``dead`` together, two rounds, until both rounds' evidence is in.

    Probes are served in order on one thread, so by then an answer about ``quiet`` would be in too.
    """
    start = reports.count(dead)
    for round_number in (1, 2):
        node.transport.probe(quiet)
        node.transport.probe(dead)
        reports.wait_for(dead, start + round_number)


# ---------------------------------------------------------------------------------------- shared logic


def test_peer_changes_tell_who_was_added_removed_and_moved() -> None:
    changes = PeerChanges.between(1, {1: "a:1", 2: "b:2", 3: "c:3"}, {1: "x:9", 2: "b:2", 3: "d:4", 4: "e:5"})
    assert changes.added == {4: "e:5"}
    assert changes.removed == {}
    assert changes.moved == {3: ("c:3", "d:4")}  # the node's own id is never part of a change
    assert changes.targets == {3: "d:4", 4: "e:5"}
    assert changes.describe() == "added node 4 (e:5); node 3 moved from c:3 to d:4"
    gone = PeerChanges.between(1, {1: "a:1", 2: "b:2"}, {1: "a:1"})
    assert gone.removed == {2: "b:2"} and not gone.empty
    assert PeerChanges.between(1, {1: "a:1"}, {1: "a:1"}).empty


def test_the_base_transport_says_it_cannot_change_its_peers() -> None:
    class Fixed(Transport):
        def start(self, node_id: int, peers: Mapping[int, str], deliver: Callable[[bytes], None]) -> None:
            pass

        def send(self, peer_id: int, data: bytes) -> None:
            pass

        def close(self) -> None:
            pass

    with pytest.raises(NotImplementedError, match="Fixed cannot change its peers"):
        Fixed().set_peers({1: "x"})


# ---------------------------------------------------------------------------------------- UDP and ZeroMQ


@pytest.mark.parametrize("kind", KINDS)
def test_a_peer_added_while_running_receives_and_answers(loopback: Loopback, kind: Kind,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    a = loopback.start(kind, 1, {})
    c = loopback.start(kind, 3, {1: a.address})
    before = a.transport.counters()["send_dropped"]
    a.transport.send(3, b"not a member yet")
    assert a.transport.counters()["send_dropped"] == before + 1
    with caplog.at_level(logging.INFO, logger="transports"):
        a.transport.set_peers({1: a.address, 3: c.address})
    assert a.transport.peers == {1: kind.canonical(a.address), 3: kind.canonical(c.address)}
    assert any(f"added node 3 ({kind.canonical(c.address)})" in record.getMessage()
               for record in caplog.records)
    reach(a, c, b"welcome")
    reach(c, a, b"thanks")
    assert b"not a member yet" not in c.inbox.since(0)


@pytest.mark.parametrize("kind", KINDS)
def test_a_removed_peer_gets_nothing_more_and_the_drop_is_counted(loopback: Loopback, kind: Kind) -> None:
    a = loopback.start(kind, 1, {2: kind.free_address()})
    b = loopback.start(kind, 2, {1: a.address})
    a.transport.set_peers({1: a.address, 2: b.address})
    settle(a, b, "before")
    mark = b.inbox.count()
    a.transport.set_peers({1: a.address})
    assert 2 not in a.transport.peers
    counters = a.transport.counters()
    a.transport.send(2, b"after removal")
    after = a.transport.counters()
    assert after["send_dropped"] == counters["send_dropped"] + 1
    # Back again: the first thing node 2 hears from node 1 is what was sent after it was re-added.
    a.transport.set_peers({1: a.address, 2: b.address})
    reach(a, b, b"back")
    assert b"after removal" not in b.inbox.since(mark)


@pytest.mark.parametrize("kind", KINDS)
def test_a_changed_address_is_followed_by_messages_and_probes(loopback: Loopback, kind: Kind) -> None:
    """Node 2 restarts on another port; node 1 is told, sends there, and probes there, not at the old one."""
    dead = kind.free_address()  # node 3: nothing listens there, the positive control of the probes
    a = loopback.start(kind, 1, {2: kind.free_address(), 3: dead})
    old = loopback.start(kind, 2, {1: a.address})
    a.transport.set_peers({1: a.address, 2: old.address, 3: dead})
    settle(a, old, "old")
    mark = old.inbox.count()
    new = loopback.start(kind, 2, {1: a.address})
    a.transport.set_peers({1: a.address, 2: new.address, 3: dead})
    assert a.transport.peers[2] == kind.canonical(new.address)
    old.transport.close()  # nothing listens on the old address any more
    reach(a, new, b"at the new address")
    reach(new, a, b"from the new address")
    assert old.inbox.since(mark) == []
    # A probe of node 2 goes to its new address, where it is alive: no evidence, while node 3 gives some.
    reports = Reports()
    a.transport.watch(reports)
    probe_in_rounds(a, reports, quiet=2, dead=3)
    assert reports.count(2) == 0
    assert (3, kind.evidence) in reports.items


@pytest.mark.parametrize("kind", KINDS)
def test_this_nodes_own_address_never_changes(loopback: Loopback, kind: Kind,
                                              caplog: pytest.LogCaptureFixture) -> None:
    a = loopback.start(kind, 1, {2: kind.free_address()})
    b = loopback.start(kind, 2, {1: a.address})
    elsewhere = kind.free_address()
    with caplog.at_level(logging.WARNING, logger="transports"):
        a.transport.set_peers({1: elsewhere, 2: b.address})
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any(kind.canonical(elsewhere) in line and "never rebinds" in line for line in warnings), warnings
    assert a.transport.peers[1] == kind.canonical(a.address)
    # The own id need not be listed at all: it keeps its address.
    a.transport.set_peers({2: b.address})
    assert a.transport.peers == {1: kind.canonical(a.address), 2: kind.canonical(b.address)}
    reach(a, b, b"sent from the old address")
    reach(b, a, b"received at the old address")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", ["no-port", "127.0.0.1:99999", "[::1:9001", ""])
def test_a_malformed_address_raises_naming_the_member_and_changes_nothing(loopback: Loopback, kind: Kind,
                                                                          bad: str) -> None:
    a = loopback.start(kind, 1, {2: kind.free_address()})
    b = loopback.start(kind, 2, {1: a.address})
    a.transport.set_peers({1: a.address, 2: b.address})
    before = a.transport.peers
    # Node 2 would be removed and node 4 added: neither happens, as node 3's address is malformed.
    with pytest.raises(TransportError, match=rf"node 3: .*{re.escape(repr(bad))}"):
        a.transport.set_peers({1: a.address, 3: bad, 4: kind.free_address()})
    with pytest.raises(TransportError, match="node 1"):
        a.transport.set_peers({1: bad, 2: b.address})
    assert a.transport.peers == before
    reach(a, b, b"still a member")
    dropped = a.transport.counters()["send_dropped"]
    a.transport.send(4, b"never added")
    assert a.transport.counters()["send_dropped"] == dropped + 1


@pytest.mark.parametrize("kind", KINDS)
def test_calls_before_start_and_after_close_are_ignored(loopback: Loopback, kind: Kind) -> None:
    transport = kind.make()
    transport.set_peers({1: "not even an address", 2: kind.free_address()})  # ignored: not started
    assert transport.peers == {}
    a = loopback.start(kind, 1, {}, make=lambda: transport)
    assert a.transport.peers == {1: kind.canonical(a.address)}
    a.transport.close()
    a.transport.set_peers({1: a.address, 2: kind.free_address()})  # ignored: closed
    a.transport.set_peers({1: "garbage"})
    assert a.transport.peers == {1: kind.canonical(a.address)}


@pytest.mark.parametrize("kind", KINDS)
def test_an_added_peer_can_be_probed_and_its_death_is_evidence(loopback: Loopback, kind: Kind) -> None:
    a = loopback.start(kind, 1, {})
    reports = Reports()
    a.transport.watch(reports)
    c = loopback.start(kind, 3, {1: a.address})
    a.transport.set_peers({1: a.address, 3: c.address})
    reach(a, c, b"alive")
    c.transport.close()  # its socket is gone: nothing listens on node 3's port
    a.transport.probe(3)
    reports.wait_for(3, 1)  # ZeroMQ may report it first by itself: its connection dropped
    assert set(reports.items) == {(3, kind.evidence)}


@pytest.mark.parametrize("kind", KINDS)
def test_a_removed_peer_is_probed_no_more(loopback: Loopback, kind: Kind) -> None:
    dead = kind.free_address()
    a = loopback.start(kind, 1, {2: kind.free_address(), 3: dead})
    reports = Reports()
    a.transport.watch(reports)
    a.transport.set_peers({1: a.address, 3: dead})  # node 2 (nothing listens there either) leaves
    probe_in_rounds(a, reports, quiet=2, dead=3)
    assert reports.count(2) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_set_peers_is_safe_against_concurrent_sends_and_probes(loopback: Loopback, kind: Kind) -> None:
    a = loopback.start(kind, 1, {2: kind.free_address()})
    b = loopback.start(kind, 2, {1: a.address})
    stop = threading.Event()
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            while not stop.is_set():
                a.transport.send(2, b"noise")
                a.transport.probe(2)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=hammer, name=f"hammer-{n}") for n in range(2)]
    for worker in workers:
        worker.start()
    try:
        for round_number in range(60):
            members = {1: a.address, 2: b.address} if round_number % 2 else {1: a.address}
            a.transport.set_peers(members)
    finally:
        stop.set()
        for worker in workers:
            worker.join(TIMEOUT)
    assert errors == []
    assert not a.transport.failed
    a.transport.set_peers({1: a.address, 2: b.address})
    reach(a, b, b"after the storm")


# ---------------------------------------------------------------------------------------- UDP only


class SlowNames:
    """A stand-in for the resolver: ``peer-four.test`` resolves to loopback once the test allows it.

    It records the threads that asked, so a test can check that the caller of set_peers never did.
    """

    NAME = "peer-four.test"

    def __init__(self, port: int) -> None:
        self.port = port
        self.asked = threading.Event()
        self.release = threading.Event()
        self.threads: list[str] = []
        self._real = udp_addresses.resolve

    def resolve(self, host: str, port: int) -> list[tuple[int, tuple[str, int]]]:
        if host != self.NAME:
            return self._real(host, port)
        self.threads.append(threading.current_thread().name)
        self.asked.set()
        self.release.wait(TIMEOUT)
        return [(socket.AF_INET, (HOST, self.port))]


def test_udp_a_host_name_is_resolved_in_the_background_never_by_the_caller(
        loopback: Loopback, monkeypatch: pytest.MonkeyPatch) -> None:
    kind = Kind("udp")
    a = loopback.start(kind, 1, {})
    d = loopback.start(kind, 4, {1: a.address})
    names = SlowNames(int(d.address.rsplit(":", 1)[1]))
    monkeypatch.setattr(udp_addresses, "resolve", names.resolve)
    a.transport.set_peers({1: a.address, 4: f"{SlowNames.NAME}:{names.port}"})  # returns: DNS is slow
    assert names.asked.wait(TIMEOUT)
    assert names.threads == ["udp-1-resolve"]
    before = a.transport.counters()["send_dropped"]
    a.transport.send(4, b"before it resolves")
    assert a.transport.counters()["send_dropped"] == before + 1
    names.release.set()
    reach(a, d, b"resolved")
    assert b"before it resolves" not in d.inbox.since(0)
    assert a.transport.counters()["address_changes"] == 0  # a first resolution is not a change


def test_udp_a_peer_of_the_other_address_family_is_dropped_with_a_warning(
        loopback: Loopback, caplog: pytest.LogCaptureFixture) -> None:
    kind = Kind("udp")
    a = loopback.start(kind, 1, {})
    with caplog.at_level(logging.WARNING, logger="transports"):
        a.transport.set_peers({1: a.address, 5: "[::1]:9005"})
    assert any("node 5" in record.getMessage() and "no IPv4 address" in record.getMessage()
               for record in caplog.records)
    before = a.transport.counters()["send_dropped"]
    a.transport.send(5, b"unreachable from an IPv4 socket")
    assert a.transport.counters()["send_dropped"] == before + 1


# ---------------------------------------------------------------------------------------- ZeroMQ with CURVE


@pytest.fixture
def keys() -> dict[int, tuple[bytes, bytes]]:
    """Key pairs of nodes 1 to 3: node 3 is a future member whose key every node knows from the start."""
    return {node_id: zmq.curve_keypair() for node_id in (1, 2, 3)}


def curve_node(loopback: Loopback, keys: dict[int, tuple[bytes, bytes]], node_id: int,
               others: Mapping[int, str]) -> Node:
    public = {peer_id: pair[0] for peer_id, pair in keys.items()}
    return loopback.start(Kind("zmq"), node_id, others, make=lambda: ZmqTransport(
        curve_secret_key=keys[node_id][1], curve_public_keys=public))


def test_zmq_curve_a_member_whose_key_was_given_up_front_can_be_added(
        loopback: Loopback, keys: dict[int, tuple[bytes, bytes]]) -> None:
    a = curve_node(loopback, keys, 1, {})
    c = curve_node(loopback, keys, 3, {1: a.address})
    a.transport.set_peers({1: a.address, 3: c.address})
    reach(a, c, b"secret welcome")
    reach(c, a, b"secret thanks")
    assert a.transport.counters()["rejected_unauthenticated"] == 0


def test_zmq_curve_a_member_without_a_key_cannot_be_added(
        loopback: Loopback, keys: dict[int, tuple[bytes, bytes]]) -> None:
    b_address = Kind("zmq").free_address()
    a = curve_node(loopback, keys, 1, {2: b_address})
    before = a.transport.peers
    with pytest.raises(TransportError, match=r"node\(s\) \[4\].*curve_public_keys") as raised:
        a.transport.set_peers({1: a.address, 2: b_address, 4: Kind("zmq").free_address()})
    assert "up front" in str(raised.value)  # it says how to provide the key
    assert a.transport.peers == before
    # Removing node 2 in the same call did not happen either.
    with pytest.raises(TransportError, match=r"\[4\]"):
        a.transport.set_peers({1: a.address, 4: Kind("zmq").free_address()})
    assert a.transport.peers == before


# ---------------------------------------------------------------------------------------- in memory


@pytest.fixture
def network(request: pytest.FixtureRequest) -> InMemoryNetwork:
    net = InMemoryNetwork(seed=7)
    request.addfinalizer(net.close)
    return net


def memory_node(net: InMemoryNetwork, node_id: int) -> tuple[MemoryTransport, Inbox]:
    inbox = Inbox()
    transport = net.transport(node_id)
    transport.start(node_id, {node_id: f"mem:{node_id}"}, inbox)
    return transport, inbox


def test_memory_a_member_that_joins_while_messages_flow_gets_an_endpoint_and_messages(
        network: InMemoryNetwork) -> None:
    one, inbox1 = memory_node(network, 1)
    _, inbox2 = memory_node(network, 2)
    one.send(2, b"while running")
    assert inbox2.wait_for(b"while running")
    three, inbox3 = memory_node(network, 3)  # a new id, on a network that is delivering
    one.set_peers({1: "mem:1", 2: "mem:2", 3: "mem:3"})
    one.send(3, b"welcome")
    three.send(1, b"thanks")
    assert inbox3.wait_for(b"welcome")
    assert inbox1.wait_for(b"thanks")
    assert "nodes=[1, 2, 3]" in repr(network)


def test_memory_a_removed_member_gets_nothing_more_and_the_drop_is_counted(network: InMemoryNetwork) -> None:
    one, _ = memory_node(network, 1)
    _, inbox2 = memory_node(network, 2)
    three, _ = memory_node(network, 3)
    one.set_peers({1: "mem:1", 3: "mem:3"})
    before = network.stats
    one.send(2, b"after removal")
    after = network.stats
    assert after.dropped_closed == before.dropped_closed + 1
    three.send(2, b"marker")  # delay 0, one delivery thread: what node 1 had sent would be in by now
    assert inbox2.wait_for(b"marker")
    assert inbox2.since(0) == [b"marker"]


def test_memory_an_added_member_can_be_probed_and_a_removed_one_cannot(network: InMemoryNetwork) -> None:
    one, _ = memory_node(network, 1)
    reports = Reports()
    one.watch(reports)
    two, _ = memory_node(network, 2)
    three, _ = memory_node(network, 3)
    one.set_peers({1: "mem:1", 2: "mem:2"})
    two.close()
    three.close()
    one.probe(3)  # not a member: ignored
    one.probe(2)
    reports.wait_for(2, 1)
    assert reports.items == [(2, "closed")]
    one.set_peers({1: "mem:1", 3: "mem:3"})
    one.probe(2)  # no longer a member: ignored
    one.probe(3)
    reports.wait_for(3, 1)
    assert reports.items == [(2, "closed"), (3, "closed")]


def test_memory_calls_before_start_and_after_close_are_ignored(network: InMemoryNetwork) -> None:
    endpoint = network.transport(1)
    endpoint.set_peers({1: "mem:1"})  # before start: ignored, so node 2 stays reachable
    inbox = Inbox()
    endpoint.start(1, {}, inbox)
    _, inbox2 = memory_node(network, 2)
    endpoint.send(2, b"reachable")
    assert inbox2.wait_for(b"reachable")
    endpoint.close()
    endpoint.set_peers({1: "mem:1", 2: "mem:2"})  # after close: ignored, and nothing raised
    assert endpoint.closed
