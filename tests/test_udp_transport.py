"""Tests for transports.udp: real datagram sockets on loopback (127.0.0.1 and [::1]) only.

Nothing here synchronises on sleeps.  Deliveries land in queues and tests wait on them; to prove that
earlier datagrams were *dropped*, a valid datagram is sent after them from the same socket (loopback keeps
one sender's datagrams in order, and the transport counts a datagram before it reads the next one), so
once it arrives the counters are final.  Timeouts only keep a broken test from hanging.

Free ports are found by binding port 0; the short window before the transport binds the port again is
covered by retrying on "in use".
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Optional

import pytest

from raft_election import MemoryStorage, RaftConfig, RaftNode
from raft_election.codec import MAX_FRAME_SIZE, MAX_MESSAGE_SIZE
from raft_election.errors import TransportError
from raft_election.processes import free_ports as free_udp_ports
from tests.transporttools import needs_ipv6, received_until
from transports.udp import UdpTransport, parse_address
from transports.udp import addresses as udp_addresses
from transports.udp import transport as udp

TIMEOUT = 10.0  # only to keep a broken test from hanging; never reached when the code works
CLOSE_BOUND = 2.0  # close() wakes the receive thread at once; this only absorbs a loaded CI machine
ATTEMPTS = 5  # retries when a port picked as free was taken before the transport bound it
REPO = Path(__file__).resolve().parent.parent


HOSTS = [pytest.param("127.0.0.1", id="ipv4"), pytest.param("::1", id="ipv6", marks=needs_ipv6)]


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def fmt(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct UDP ports that are free on ``host`` right now."""
    return free_udp_ports(count, kind="udp", host=host)


def thread_alive(name: str) -> bool:
    return any(t.name == name for t in threading.enumerate())


class Inbox:
    """A deliver callback that puts each datagram in a queue."""

    def __init__(self) -> None:
        self.queue: queue.Queue[bytes] = queue.Queue()

    def __call__(self, data: bytes) -> None:
        self.queue.put(data)

    def get(self) -> bytes:
        return self.queue.get(timeout=TIMEOUT)

    def until(self, marker: bytes) -> list[bytes]:
        """Everything delivered before ``marker``."""
        return received_until(self.get, marker)


class Cluster:
    """Started transports on one loopback host, closed at teardown."""

    def __init__(self) -> None:
        self.transports: list[UdpTransport] = []

    def start(self, host: str, delivers: dict[int, Callable[[bytes], None]],
              extra_peers: Optional[dict[int, str]] = None) -> tuple[dict[int, UdpTransport], dict[int, str]]:
        """Start one transport per id in ``delivers``, on free ports of ``host``."""
        for attempt in range(ATTEMPTS):
            ports = free_ports(host, len(delivers))
            peers = {node_id: fmt(host, port) for node_id, port in zip(delivers, ports)}
            peers.update(extra_peers or {})
            started: dict[int, UdpTransport] = {}
            try:
                for node_id, deliver in delivers.items():
                    transport = UdpTransport()
                    self.transports.append(transport)
                    transport.start(node_id, peers, deliver)
                    started[node_id] = transport
            except TransportError as exc:
                for transport in started.values():
                    transport.close()
                if "in use" not in str(exc) or attempt == ATTEMPTS - 1:
                    raise
                continue
            return started, peers
        raise AssertionError("unreachable")

    def close(self) -> None:
        for transport in self.transports:
            transport.close()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    yield c
    c.close()


@pytest.fixture
def raw() -> Iterator[Callable[[str], socket.socket]]:
    """Plain sockets (to send bytes the transport itself would never send), closed at teardown."""
    sockets: list[socket.socket] = []

    def make(host: str) -> socket.socket:
        sock = socket.socket(family_of(host), socket.SOCK_DGRAM)
        sockets.append(sock)
        return sock

    yield make
    for sock in sockets:
        sock.close()


# ---------------------------------------------------------------------------------------- delivery


@pytest.mark.parametrize("host", HOSTS)
def test_two_transports_exchange_datagrams_both_ways(cluster, host):
    inbox1, inbox2 = Inbox(), Inbox()
    (t, peers) = cluster.start(host, {1: inbox1, 2: inbox2})
    t[1].send(2, b"ping")
    assert inbox2.get() == b"ping"
    t[2].send(1, b"pong")
    got = inbox1.get()
    assert got == b"pong"
    assert type(got) is bytes
    for node_id in (1, 2):
        assert t[node_id].counters()["datagrams_received"] == 1
        assert t[node_id].address == parse_address(peers[node_id])
        assert t[node_id].node_id == node_id
        assert repr(t[node_id]) == f"<UdpTransport node_id={node_id} {peers[node_id]} running>"


def test_a_datagram_of_exactly_the_maximum_size_is_delivered(cluster):
    inbox = Inbox()
    t, _ = cluster.start("127.0.0.1", {1: Inbox(), 2: inbox})
    data = bytes(i % 256 for i in range(MAX_FRAME_SIZE))
    t[1].send(2, data)
    assert inbox.get() == data


def test_host_names_are_resolved_at_start(cluster):
    inbox1, inbox2 = Inbox(), Inbox()
    for attempt in range(ATTEMPTS):
        ports = free_ports("127.0.0.1", 2)
        peers = {1: f"localhost:{ports[0]}", 2: f"localhost:{ports[1]}"}
        a, b = UdpTransport(), UdpTransport()
        cluster.transports += [a, b]
        try:
            a.start(1, peers, inbox1)
            b.start(2, peers, inbox2)
            break
        except TransportError as exc:
            a.close()
            if "in use" not in str(exc) or attempt == ATTEMPTS - 1:
                raise
    assert a.address is not None
    assert a.address[0] in ("127.0.0.1", "::1")
    a.send(2, b"by name")
    assert inbox2.get() == b"by name"
    b.send(1, b"and back")
    assert inbox1.get() == b"and back"


class Names:
    """A stand-in for the resolver: ``peer-two.test`` resolves to whatever the test says, others as usual."""

    NAME = "peer-two.test"

    def __init__(self) -> None:
        self.port: Optional[int] = None  # None: the name does not resolve
        self._real = udp_addresses.resolve

    def resolve(self, host: str, port: int) -> list[tuple[int, tuple[str, int]]]:
        if host != self.NAME:
            return self._real(host, port)
        if self.port is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, ("127.0.0.1", self.port))]


def test_a_peer_name_that_did_not_resolve_or_now_resolves_elsewhere_is_followed(cluster, monkeypatch):
    """A member whose host name does not resolve at start (its container is not up yet) is reached once it
    does, and again at its new address after it moved; the probe socket follows it."""
    names = Names()
    monkeypatch.setattr(udp_addresses, "resolve", names.resolve)
    port_a, port_b, port_c = free_ports("127.0.0.1", 3)
    peers = {1: f"127.0.0.1:{port_a}", 2: f"{Names.NAME}:{port_b}"}
    a = UdpTransport(resolve_interval=0.05)
    cluster.transports.append(a)
    a.start(1, peers, Inbox())
    assert thread_alive("udp-1-resolve")
    first = Inbox()
    b = UdpTransport()
    cluster.transports.append(b)
    b.start(2, {1: peers[1], 2: f"127.0.0.1:{port_b}"}, first)
    a.send(2, b"before it resolves")  # dropped: no address yet
    names.port = port_b
    deadline = time.monotonic() + TIMEOUT
    while a.counters()["address_changes"] < 1 and time.monotonic() < deadline:
        a.send(2, b"x")
        time.sleep(0.01)
    a.send(2, b"resolved")
    assert b"before it resolves" not in first.until(b"resolved")
    # The receive thread points the probe socket at the new address on its next turn, not at once.
    while a.probe_address(2) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert a.probe_address(2) is not None
    # The member moves to another port (a new container, a new address): the name follows it.
    b.close()
    second = Inbox()
    c = UdpTransport()
    cluster.transports.append(c)
    c.start(2, {1: peers[1], 2: f"127.0.0.1:{port_c}"}, second)
    names.port = port_c
    while a.counters()["address_changes"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    a.send(2, b"moved")
    assert second.until(b"moved") == []
    assert a.counters()["address_changes"] == 2
    # Death probes go to the new address: closing it there is evidence again.
    evidence: queue.Queue[tuple[int, str]] = queue.Queue()
    a.watch(lambda peer, kind: evidence.put((peer, kind)))
    c.close()
    a.probe(2)
    assert evidence.get(timeout=TIMEOUT) == (2, "port_unreachable")


def test_numeric_addresses_are_never_resolved_again(cluster):
    cluster.start("127.0.0.1", {1: Inbox(), 2: Inbox()})
    assert not thread_alive("udp-1-resolve") and not thread_alive("udp-2-resolve")


ECHO_CHILD = textwrap.dedent("""
    import os, sys, threading
    from transports.udp import UdpTransport

    peers = {1: sys.argv[1], 2: sys.argv[2]}
    transport = UdpTransport()
    done = threading.Event()

    def deliver(data):
        if data == b"quit":
            done.set()
        else:
            transport.send(1, b"echo:" + data)

    transport.start(2, peers, deliver)
    transport.send(1, b"ready:%d" % os.getpid())
    done.wait(60)
    transport.close()
    print("closed", transport.counters()["datagrams_received"], flush=True)
""")


def test_exchanges_datagrams_with_a_transport_in_another_process(cluster, tmp_path, request):
    inbox = Inbox()

    def wait(proc: subprocess.Popen[bytes], log: Path) -> bytes:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                return inbox.queue.get(timeout=0.05)
            except queue.Empty:
                if proc.poll() is not None:
                    break
        return b"child failed: " + log.read_bytes()

    for attempt in range(ATTEMPTS):
        child_address = fmt("127.0.0.1", free_ports("127.0.0.1", 1)[0])
        t, peers = cluster.start("127.0.0.1", {1: inbox}, extra_peers={2: child_address})
        log = tmp_path / f"child-{attempt}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", ECHO_CHILD, peers[1], peers[2]], cwd=REPO, stdout=subprocess.PIPE,
                stderr=err, env={**os.environ, "PYTHONPATH": str(REPO)},
            )

        def kill(pid: int = proc.pid, proc: subprocess.Popen[bytes] = proc) -> None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait(TIMEOUT)
            assert proc.stdout is not None
            proc.stdout.close()

        request.addfinalizer(kill)
        ready = wait(proc, log)
        if ready.startswith(b"ready:"):
            break
        assert b"in use" in ready and attempt < ATTEMPTS - 1, ready.decode(errors="replace")
        t[1].close()

    assert int(ready.split(b":")[1]) == proc.pid != os.getpid()
    for i in range(5):
        t[1].send(2, b"hello %d" % i)
        assert wait(proc, log) == b"echo:hello %d" % i
    t[1].send(2, b"quit")
    stdout, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, log.read_text()
    assert stdout.split() == [b"closed", b"6"]


# ---------------------------------------------------------------------------------------- bad input


def test_oversized_and_empty_datagrams_are_dropped_and_counted(cluster, raw, caplog):
    """Empty datagrams are peers' death probes: counted as ``probes_received``, dropped, not logged."""
    inbox = Inbox()
    t, peers = cluster.start("127.0.0.1", {1: inbox})
    sender = raw("127.0.0.1")
    target = parse_address(peers[1])
    for data in (b"", b"x" * (MAX_FRAME_SIZE + 1), b"", b"y" * 65000, b"z" * MAX_FRAME_SIZE, b"valid"):
        sender.sendto(data, target)
    assert inbox.until(b"valid") == [b"z" * MAX_FRAME_SIZE]
    assert t[1].counters() == {
        "datagrams_received": 2, "rejected_oversized": 2, "probes_received": 2, "send_dropped": 0,
        "receive_errors": 0, "deliver_errors": 0, "probes_sent": 0, "death_evidence": 0,
        "evidence_ignored": 0, "probe_errors": 0, "address_changes": 0,
    }
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "transports.udp" and r.levelno >= logging.WARNING]
    # Logged, at a limited rate: once, naming the sender; probes (empty datagrams) are not logged.
    assert len([m for m in warnings if "oversized" in m]) == 1
    assert len(warnings) == 1
    assert all(f"127.0.0.1:{sender.getsockname()[1]}" in m for m in warnings)


def test_a_flood_of_random_datagrams_is_fully_counted_and_the_transport_keeps_working(cluster, raw):
    inbox = Inbox()
    t, peers = cluster.start("127.0.0.1", {1: Inbox(), 2: inbox})
    sender = raw("127.0.0.1")
    target = parse_address(peers[2])
    rng = random.Random(2024)
    flood = [rng.randbytes(rng.randrange(3 * MAX_MESSAGE_SIZE)) for _ in range(5000)]
    flood[::250] = [b""] * len(flood[::250])  # empty datagrams (death probes' echoes) among them too
    # ... and oversized ones, between the largest datagram and the largest UDP payload.
    flood[125::250] = [rng.randbytes(rng.randint(MAX_FRAME_SIZE + 1, 65507)) for _ in flood[125::250]]
    # Small enough that the socket buffer (about 200 KiB by default) never overflows between two markers,
    # even with an oversized datagram in the batch and every other one of the largest size drawn.
    batch = max(1, 64 * 1024 // (3 * MAX_MESSAGE_SIZE))
    delivered: list[bytes] = []
    for start in range(0, len(flood), batch):
        for data in flood[start:start + batch]:
            sender.sendto(data, target)
        marker = b"marker %d" % start
        sender.sendto(marker, target)
        delivered += inbox.until(marker)
    markers = len(flood) // batch
    valid = [data for data in flood if 0 < len(data) <= MAX_FRAME_SIZE]
    counters = t[2].counters()
    assert counters["probes_received"] == sum(1 for data in flood if not data) > 0
    assert counters["rejected_oversized"] == sum(1 for data in flood if len(data) > MAX_FRAME_SIZE) > 0
    assert counters["datagrams_received"] == len(valid) + markers
    assert collections.Counter(delivered) == collections.Counter(valid)
    t[1].send(2, b"still alive")
    assert inbox.get() == b"still alive"


def test_a_deliver_callback_that_raises_does_not_stop_the_receive_loop(cluster, caplog):
    inbox = Inbox()

    def deliver(data: bytes) -> None:
        if data.startswith(b"boom"):
            raise RuntimeError(data.decode())
        inbox(data)

    t, _ = cluster.start("127.0.0.1", {1: Inbox(), 2: deliver})
    for data in (b"boom 1", b"boom 2", b"boom 3", b"after"):
        t[1].send(2, data)
    assert inbox.get() == b"after"
    counters = t[2].counters()
    assert (counters["deliver_errors"], counters["datagrams_received"]) == (3, 4)
    assert thread_alive("udp-2")
    logged = [r.getMessage() for r in caplog.records if "deliver callback raised" in r.getMessage()]
    assert len(logged) == 1  # rate-limited
    assert "boom 1" in logged[0]


def test_socket_errors_in_the_receive_loop_are_counted_and_receiving_goes_on(cluster, monkeypatch):
    """ECONNREFUSED (an ICMP error for an earlier send, as some systems report it on receive) and the like."""
    failures = {"left": 3}

    class RefusingSocket(socket.socket):
        def recvfrom(self, *args, **kwargs):
            if failures["left"] > 0:
                failures["left"] -= 1
                raise ConnectionRefusedError(errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED))
            return super().recvfrom(*args, **kwargs)

    monkeypatch.setattr(udp.socket, "socket", RefusingSocket)
    inbox = Inbox()
    t, _ = cluster.start("127.0.0.1", {1: Inbox(), 2: inbox})
    t[1].send(2, b"first")
    assert inbox.get() == b"first"
    assert t[2].counters()["receive_errors"] == 3
    t[1].send(2, b"second")
    assert inbox.get() == b"second"


# ---------------------------------------------------------------------------------------- sending


def test_sending_to_a_port_without_a_listener_never_raises_and_the_transport_keeps_working(cluster):
    inbox1, inbox2 = Inbox(), Inbox()
    silent = fmt("127.0.0.1", free_ports("127.0.0.1", 1)[0])
    t, _ = cluster.start("127.0.0.1", {1: inbox1, 2: inbox2}, extra_peers={3: silent})
    for _ in range(20):
        t[1].send(3, b"anyone?")
    t[1].send(2, b"still sending")
    assert inbox2.get() == b"still sending"
    t[2].send(1, b"still receiving")
    assert inbox1.get() == b"still receiving"


@pytest.mark.parametrize("code", [errno.EAGAIN, errno.ENOBUFS, errno.ECONNREFUSED, errno.EHOSTUNREACH,
                                  errno.ENETUNREACH, errno.EPERM])
def test_send_errors_are_dropped_and_counted_never_raised(cluster, monkeypatch, caplog, code):
    """The socket errors a send can meet (full buffer, an ICMP error of an earlier send, no route, ...)."""
    failures = {"left": 3}

    class FailingSocket(socket.socket):
        def sendto(self, *args, **kwargs):
            if failures["left"] > 0:
                failures["left"] -= 1
                raise OSError(code, os.strerror(code))
            return super().sendto(*args, **kwargs)

    monkeypatch.setattr(udp.socket, "socket", FailingSocket)
    inbox = Inbox()
    t, _ = cluster.start("127.0.0.1", {1: Inbox(), 2: inbox})
    for _ in range(3):
        t[1].send(2, b"lost")
    assert t[1].counters()["send_dropped"] == 3
    t[1].send(2, b"delivered")
    assert inbox.get() == b"delivered"
    logged = [r.getMessage() for r in caplog.records if "dropped a datagram to node 2" in r.getMessage()]
    assert len(logged) == 1  # rate-limited
    assert os.strerror(code) in logged[0]


def test_unknown_and_other_family_peers_are_dropped_and_counted(cluster, caplog):
    caplog.set_level(logging.WARNING, logger="transports.udp")
    inbox = Inbox()
    t, _ = cluster.start("127.0.0.1", {1: Inbox(), 2: inbox}, extra_peers={3: "[::1]:9"})
    assert any("node 3" in r.getMessage() and "IPv4" in r.getMessage() for r in caplog.records)
    t[1].send(3, b"other family")
    t[1].send(42, b"not a member")
    assert t[1].counters()["send_dropped"] == 2
    t[1].send(2, b"fine")
    assert inbox.get() == b"fine"


def test_sending_more_than_the_maximum_datagram_size_is_a_value_error(cluster):
    t, _ = cluster.start("127.0.0.1", {1: Inbox(), 2: Inbox()})
    with pytest.raises(ValueError, match=str(MAX_FRAME_SIZE)):
        t[1].send(2, b"x" * (MAX_FRAME_SIZE + 1))
    assert t[1].counters()["send_dropped"] == 0


def test_sends_before_start_and_after_close_are_dropped_silently(cluster):
    transport = UdpTransport()
    transport.send(1, b"too early")
    assert transport.counters()["send_dropped"] == 1
    inbox = Inbox()
    t, _ = cluster.start("127.0.0.1", {1: Inbox(), 2: inbox})
    t[1].close()
    t[1].send(2, b"too late")
    assert t[1].counters()["send_dropped"] == 1
    t[2].send(2, b"to myself")  # the peer is unaffected
    assert inbox.get() == b"to myself"
    assert t[2].counters()["datagrams_received"] == 1


# ---------------------------------------------------------------------------------------- start errors


def test_binding_a_port_in_use_names_the_address_and_the_reason(raw):
    squatter = raw("127.0.0.1")
    squatter.bind(("127.0.0.1", 0))
    address = fmt("127.0.0.1", squatter.getsockname()[1])
    transport = UdpTransport()
    with pytest.raises(TransportError, match="in use") as info:
        transport.start(1, {1: address}, Inbox())
    assert address in str(info.value)
    assert "Errno" in str(info.value)
    assert not thread_alive("udp-1")
    # A failed start leaves the transport as it was: it can start once the port is free.
    squatter.close()
    transport.start(1, {1: address}, Inbox())
    transport.close()


@pytest.mark.parametrize("host", HOSTS)
def test_two_transports_cannot_share_a_port(cluster, host):
    _, peers = cluster.start(host, {1: Inbox()})
    with pytest.raises(TransportError, match="in use"):
        UdpTransport().start(2, {1: peers[1], 2: peers[1]}, Inbox())
    assert not thread_alive("udp-2")


@pytest.mark.skipif(Path("/proc/sys/net/ipv4/ip_nonlocal_bind").exists()
                    and Path("/proc/sys/net/ipv4/ip_nonlocal_bind").read_text().strip() != "0",
                    reason="net.ipv4.ip_nonlocal_bind is on: this host lets any address be bound")
def test_binding_an_address_that_is_not_local_names_the_address_and_the_reason():
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): no host has it, and bind fails locally; nothing is sent.
    with pytest.raises(TransportError, match="not local") as info:
        UdpTransport().start(1, {1: "192.0.2.1:9001"}, Inbox())
    assert "'192.0.2.1:9001'" in str(info.value)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.0.0.1:", "127.0.0.1:70000", "127.0.0.1:0", "127.0.0.1:port", "[::1", "[::1]",
    "[::1]9001", "::1:9001", ":9001",
])
def test_a_malformed_own_address_is_a_transport_error_naming_it(address):
    with pytest.raises(TransportError) as info:
        UdpTransport().start(1, {1: address}, Inbox())
    assert repr(address) in str(info.value)


def test_a_malformed_peer_address_fails_the_start_and_names_the_peer():
    with pytest.raises(TransportError, match="node 2") as info:
        UdpTransport().start(1, {1: "127.0.0.1:9001", 2: "127.0.0.1:70000"}, Inbox())
    assert "'127.0.0.1:70000'" in str(info.value)
    assert "out of range" in str(info.value)


def test_a_node_without_an_address_cannot_start():
    with pytest.raises(TransportError, match="node 3 has no address"):
        UdpTransport().start(3, {1: "127.0.0.1:9001"}, Inbox())


def test_an_unresolvable_own_host_is_a_transport_error():
    with pytest.raises(TransportError, match="cannot resolve") as info:
        UdpTransport().start(1, {1: "no-such-host.invalid:9001"}, Inbox())
    assert "'no-such-host.invalid:9001'" in str(info.value)


def test_a_transport_starts_only_once(cluster):
    t, peers = cluster.start("127.0.0.1", {1: Inbox()})
    with pytest.raises(TransportError, match="already started"):
        t[1].start(1, peers, Inbox())
    t[1].close()
    with pytest.raises(TransportError, match="closed"):
        t[1].start(1, peers, Inbox())


# ---------------------------------------------------------------------------------------- close


def test_close_wakes_and_joins_the_receive_thread_promptly(cluster):
    t, peers = cluster.start("127.0.0.1", {7: Inbox()})
    assert thread_alive("udp-7")
    closer = threading.Thread(target=t[7].close)
    started = time.monotonic()
    closer.start()
    closer.join(TIMEOUT)
    assert not closer.is_alive(), "close() did not return"
    assert time.monotonic() - started < CLOSE_BOUND
    assert not thread_alive("udp-7")
    assert t[7].closed
    assert repr(t[7]) == f"<UdpTransport node_id=7 {peers[7]} closed>"
    # The socket is closed: the port can be bound again.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(parse_address(peers[7]))


def test_close_is_idempotent_and_works_before_start():
    never_started = UdpTransport()
    never_started.close()
    never_started.close()
    assert never_started.closed
    assert repr(never_started) == "<UdpTransport node_id=None unbound closed>"
    with UdpTransport() as transport:
        transport.start(1, {1: fmt("127.0.0.1", free_ports("127.0.0.1", 1)[0])}, Inbox())
    transport.close()
    assert transport.closed
    assert not thread_alive("udp-1")


def test_close_from_inside_a_deliver_callback_does_not_deadlock(cluster):
    closed = threading.Event()
    holder: dict[str, UdpTransport] = {}

    def deliver(data: bytes) -> None:
        holder["t"].close()
        closed.set()

    t, _ = cluster.start("127.0.0.1", {1: Inbox(), 2: deliver})
    holder["t"] = t[2]
    t[1].send(2, b"close yourself")
    assert closed.wait(TIMEOUT)
    thread = next((th for th in threading.enumerate() if th.name == "udp-2"), None)
    if thread is not None:
        thread.join(TIMEOUT)
        assert not thread.is_alive()


# ---------------------------------------------------------------------------------------- with RaftNode


def test_three_raft_nodes_over_udp_elect_one_leader_and_stop_cleanly():
    nodes: list[RaftNode] = []
    try:
        for attempt in range(ATTEMPTS):
            ports = free_ports("127.0.0.1", 3)
            peers = {node_id: fmt("127.0.0.1", port) for node_id, port in zip((1, 2, 3), ports)}
            nodes = [RaftNode(RaftConfig(node_id=i, peers=peers), transport=UdpTransport(),
                              storage=MemoryStorage()) for i in peers]
            try:
                for node in nodes:
                    node.start()
                break
            except TransportError as exc:
                for node in nodes:
                    node.stop()
                if "in use" not in str(exc) or attempt == ATTEMPTS - 1:
                    raise
        leader = nodes[0].wait_for_leader(timeout=TIMEOUT)
        assert leader in peers
        assert {node.wait_for_leader(timeout=TIMEOUT) for node in nodes} == {leader}
        # The transport's counters are part of the node's status.
        assert all(node.status().counters["datagrams_received"] > 0 for node in nodes)
    finally:
        for node in nodes:
            node.stop()
    assert not any(thread_alive(f"udp-{i}") for i in (1, 2, 3))
