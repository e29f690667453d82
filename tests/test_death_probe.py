"""Tests for the transports' death probes (issue 7, ``raft_election.transport.DeathProbe``).

Peers are real OS processes (``tests/probe_peer.py``) on loopback, killed with SIGKILL or paused with
SIGSTOP by their PID; a fixture finalizer kills every one of them, also when a test fails.

Synchronisation: reports land in a list guarded by a condition, and tests wait on it.  To show that a
probe of a live or paused peer yields *nothing*, a dead peer is probed in the same rounds as a positive
control: the transport answers probes in order on one thread, so once the dead peer's answer to a probe
sent after them has been reported (and one more round after that, so that a round's reports are all in),
an answer about the live peer would have been reported too.  Deadlines only keep a broken test from
hanging.  The one sleep (``EVIDENCE_WINDOW`` in the forged-ICMP test) is the scenario itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

import pytest
import zmq

from raft_election.errors import TransportError
from raft_election.processes import free_ports
from raft_election.transport import EVIDENCE_WINDOW, DeathProbe
from tests.transporttools import needs_ipv6
from transports.udp import UdpTransport
from transports.zeromq import ZmqTransport

TIMEOUT = 10.0  # only to keep a broken test from hanging; never reached when the code works
ROOT = Path(__file__).resolve().parents[1]
KIND = {"udp": "port_unreachable", "zmq": "connection_refused"}
ME = 1  # the node id of the transport under test; peers are 2, 3, ...

AnyTransport = Union[UdpTransport, ZmqTransport]


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="forging ICMP needs a raw socket (run as root)")
BOTH = pytest.mark.parametrize("transport_kind", ["udp", "zmq"])


# ---------------------------------------------------------------------------------------- helpers


def free_port(transport_kind: str, host: str = "127.0.0.1") -> int:
    """A port free on ``host`` right now, for a datagram (udp) or stream (zmq) socket."""
    return free_ports(1, kind="udp" if transport_kind == "udp" else "tcp", host=host)[0]


def fmt(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` (cheap: a counter or a flag) until it holds; fail after ``TIMEOUT``."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


class Peer:
    """A peer process bound to ``address``."""

    def __init__(self, transport_kind: str, address: str) -> None:
        self.address = address
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.probe_peer", transport_kind, address], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def wait_ready(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        readable, _, _ = select.select([stdout], [], [], TIMEOUT)
        line = stdout.readline() if readable else b""
        if line != b"ready\n":
            self.kill()
            stderr = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            raise AssertionError(f"peer on {self.address} did not start: {line!r} {stderr}")

    def kill(self) -> None:
        """SIGKILL the process (resuming it first if paused) and reap it: its sockets are gone after this."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=TIMEOUT)

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)
        wait_until(lambda: _state(self.proc.pid) == "T", f"process {self.proc.pid} to stop")

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)
        self.kill()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()[0]


class Reports:
    """The ``report`` callback: records ``(peer_id, kind)`` pairs; tests wait for them."""

    def __init__(self) -> None:
        self.items: List[Tuple[int, str]] = []
        self.changed = threading.Condition()
        #: Called (in the transport's thread) after recording; may raise or close the transport.
        self.then: Optional[Callable[[int, str], None]] = None

    def __call__(self, peer_id: int, kind: str) -> None:
        with self.changed:
            self.items.append((peer_id, kind))
            self.changed.notify_all()
        if self.then is not None:
            self.then(peer_id, kind)

    def count(self, peer_id: int) -> int:
        with self.changed:
            return sum(1 for reported, _ in self.items if reported == peer_id)

    def wait_for(self, peer_id: int, count: int) -> None:
        """Wait until ``peer_id`` was reported at least ``count`` times."""
        with self.changed:
            if not self.changed.wait_for(lambda: self.count(peer_id) >= count, TIMEOUT):
                raise AssertionError(f"node {peer_id} reported {self.count(peer_id)} times, not {count}: "
                                     f"{self.items}")


class World:
    """Peer processes and transports under test, all cleaned up by the fixture."""

    def __init__(self) -> None:
        self.peers: List[Peer] = []
        self.transports: List[AnyTransport] = []

    def spawn(self, transport_kind: str, count: int, host: str = "127.0.0.1") -> List[Peer]:
        """Start ``count`` peer processes (in parallel) on free ports and wait until they are bound."""
        started = [Peer(transport_kind, fmt(host, free_port(transport_kind, host))) for _ in range(count)]
        self.peers += started
        for peer in started:
            peer.wait_ready()
        return started

    def restart(self, transport_kind: str, peer: Peer) -> Peer:
        """A new process bound to the address of ``peer`` (which must be dead)."""
        new = Peer(transport_kind, peer.address)
        self.peers.append(new)
        new.wait_ready()
        return new

    def node(self, transport_kind: str, peers: List[str], host: str = "127.0.0.1",
             deliver: Callable[[bytes], None] = lambda data: None,
             transport: Optional[AnyTransport] = None) -> Tuple[AnyTransport, Reports]:
        """Start the transport under test as node 1 with the peer addresses ``peers`` as nodes 2, 3, ...

        Its death evidence goes to the :class:`Reports` returned with it.
        """
        for _ in range(5):  # a port picked as free may be taken before the transport binds it
            members = {ME: fmt(host, free_port(transport_kind, host))}
            members.update({2 + index: address for index, address in enumerate(peers)})
            node = transport or (UdpTransport() if transport_kind == "udp" else ZmqTransport())
            self.transports.append(node)
            try:
                node.start(ME, members, deliver)
            except TransportError as exc:
                if transport is not None or "in use" not in str(exc):
                    raise
                continue
            reports = Reports()
            assert isinstance(node, DeathProbe)
            node.watch(reports)
            return node, reports
        raise AssertionError("no free port for the node")

    def close(self) -> None:
        for transport in self.transports:
            transport.close()
        for peer in self.peers:
            peer.close()


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    try:
        yield w
    finally:
        w.close()


def wait_connected(node: AnyTransport, peer_id: int) -> None:
    """ZeroMQ only: wait until the PUSH connection to ``peer_id`` is up (a send is then accepted)."""
    if not isinstance(node, ZmqTransport):
        return
    deadline = time.monotonic() + TIMEOUT
    while True:
        before = node.counters()["frames_sent"]
        node.send(peer_id, b"hello")
        if node.counters()["frames_sent"] > before:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"never connected to node {peer_id}")
        time.sleep(0.005)


def kill_and_confirm(node: AnyTransport, reports: Reports, peer_id: int, peer: Peer) -> None:
    """Kill a peer the node is connected to and wait until all the evidence it causes is in.

    ZeroMQ reports the dropped connection by itself, once; then one explicit probe gets one more report.
    """
    before = reports.count(peer_id)
    peer.kill()
    if isinstance(node, ZmqTransport):
        before += 1
        reports.wait_for(peer_id, before)
    node.probe(peer_id)
    reports.wait_for(peer_id, before + 1)


def addresses(*peers: Peer) -> List[str]:
    return [peer.address for peer in peers]


def receive_thread(node: AnyTransport) -> threading.Thread:
    thread = node._thread  # white box: the thread that calls report
    assert thread is not None
    return thread


# ---------------------------------------------------------------------------------------- evidence


@pytest.mark.parametrize("transport_kind, host", [
    pytest.param("udp", "127.0.0.1", id="udp-ipv4"),
    pytest.param("udp", "::1", id="udp-ipv6", marks=needs_ipv6),
    pytest.param("zmq", "127.0.0.1", id="zmq-ipv4"),
    pytest.param("zmq", "::1", id="zmq-ipv6", marks=needs_ipv6),
])
def test_a_probe_of_a_killed_peer_process_reports_its_death(world: World, transport_kind: str,
                                                           host: str) -> None:
    peer, = world.spawn(transport_kind, 1, host)
    node, reports = world.node(transport_kind, addresses(peer), host)
    wait_connected(node, 2)
    kill_and_confirm(node, reports, 2, peer)
    assert set(reports.items) == {(2, KIND[transport_kind])}
    counters = node.counters()
    assert counters["death_evidence"] == len(reports.items)
    assert counters["evidence_ignored"] == 0
    assert not node.failed


def test_zmq_reports_a_killed_peer_without_any_probe_call(world: World) -> None:
    """The dropped connection makes the transport probe by itself: failover needs no timeout at all."""
    peer, = world.spawn("zmq", 1)
    node, reports = world.node("zmq", addresses(peer))
    wait_connected(node, 2)
    assert node.counters()["probes_sent"] == 0
    peer.kill()
    reports.wait_for(2, 1)
    assert reports.items == [(2, "connection_refused")]
    counters = node.counters()
    assert counters["disconnects"] == 1
    assert counters["probes_sent"] >= 1


@BOTH
def test_a_probe_reports_a_peer_that_died_before_it_was_ever_connected(world: World,
                                                                        transport_kind: str) -> None:
    peer, = world.spawn(transport_kind, 1)
    peer.kill()
    node, reports = world.node(transport_kind, addresses(peer))
    node.probe(2)
    reports.wait_for(2, 1)
    assert reports.items == [(2, KIND[transport_kind])]
    assert node.counters()["probes_sent"] == 1


@BOTH
def test_live_and_paused_peers_yield_no_evidence(world: World, transport_kind: str) -> None:
    live, paused, dead = world.spawn(transport_kind, 3)
    dead.kill()  # before the node starts: its evidence can only answer the node's probes
    node, reports = world.node(transport_kind, addresses(live, paused, dead))
    wait_connected(node, 2)
    wait_connected(node, 3)
    paused.pause()
    for round_number, probed in enumerate(([2, 3, 4], [2, 3, 2, 3, 2, 3, 4], [4]), 1):
        for peer_id in probed:
            node.probe(peer_id)
        reports.wait_for(4, round_number)
    assert reports.items == [(4, KIND[transport_kind])] * 3
    assert node.counters()["death_evidence"] == 3


@BOTH
def test_a_peer_restarted_on_the_same_port_yields_no_evidence(world: World, transport_kind: str) -> None:
    peer, control = world.spawn(transport_kind, 2)
    control.kill()
    node, reports = world.node(transport_kind, addresses(peer, control))
    wait_connected(node, 2)
    kill_and_confirm(node, reports, 2, peer)
    dead_reports = reports.count(2)
    world.restart(transport_kind, peer)
    wait_connected(node, 2)  # ZeroMQ reconnected to the new process
    for round_number, probed in enumerate(([2, 2, 2, 3], [3]), 1):
        for peer_id in probed:
            node.probe(peer_id)
        reports.wait_for(3, round_number)
    assert reports.count(2) == dead_reports


def test_zmq_probes_resolve_a_dns_name_without_blocking(world: World) -> None:
    peer, = world.spawn("zmq", 1)
    peer.kill()
    node, reports = world.node("zmq", [peer.address.replace("127.0.0.1", "localhost")])
    node.probe(2)
    reports.wait_for(2, 1)
    assert reports.items == [(2, "connection_refused")]


# ---------------------------------------------------------------------------------------- forged ICMP


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def port_unreachable(source: Tuple[str, int], destination: Tuple[str, int]) -> bytes:
    """An ICMP "port unreachable" quoting a UDP datagram from ``source`` to ``destination``.

    The kernel matches it to the socket bound to ``source`` and (if connected) connected to ``destination``.
    """
    quoted_udp = struct.pack("!HHHH", source[1], destination[1], 8, 0)
    quoted_ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0x4000, 64, socket.IPPROTO_UDP, 0,
                            socket.inet_aton(source[0]), socket.inet_aton(destination[0]))
    quoted_ip = quoted_ip[:10] + struct.pack("!H", _checksum(quoted_ip)) + quoted_ip[12:]
    body = quoted_ip + quoted_udp
    header = struct.pack("!BBHI", 3, 3, 0, 0)
    return struct.pack("!BBHI", 3, 3, _checksum(header + body), 0) + body


@pytest.fixture
def raw_icmp() -> Iterator[socket.socket]:
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except PermissionError as exc:
        pytest.skip(f"raw ICMP sockets are not permitted here ({exc})")
    with sock:
        yield sock


def forge(raw: socket.socket, source: Tuple[str, int], destination: Tuple[str, int]) -> None:
    raw.sendto(port_unreachable(source, destination), (source[0], 0))


def probe_and_forge(node: UdpTransport, raw: socket.socket, peer_id: int,
                    forgeries: List[Tuple[Tuple[str, int], Tuple[str, int]]]) -> bool:
    """Probe ``peer_id`` (alive: no real answer), then forge ICMP errors at once, within the evidence window.

    Returns whether the last forgery was taken as evidence (False: the machine was so slow that it came
    after ``EVIDENCE_WINDOW`` and was ignored; the caller tries again).
    """
    before = node.counters()
    node.probe(peer_id)
    wait_until(lambda: node.counters()["probes_sent"] > before["probes_sent"], "the probe")
    for source, destination in forgeries:
        forge(raw, source, destination)

    def answered() -> bool:
        now = node.counters()
        return (now["death_evidence"], now["evidence_ignored"]) != (before["death_evidence"],
                                                                    before["evidence_ignored"])

    wait_until(answered, "the forged error to be read")
    return node.counters()["death_evidence"] > before["death_evidence"]


@needs_root
def test_udp_a_forged_port_unreachable_for_another_port_is_not_evidence(world: World,
                                                                        raw_icmp: socket.socket) -> None:
    live, = world.spawn("udp", 1)
    node, reports = world.node("udp", addresses(live))
    assert isinstance(node, UdpTransport)
    mine = node.probe_address(2)
    assert mine is not None
    host, port = mine
    theirs = (host, int(live.address.rpartition(":")[2]))
    wrong = [((host, port ^ 1), theirs), ((host, port), (host, theirs[1] ^ 1))]
    # The wrong ones go first; the right one after them (a positive control: forging works, and once it is
    # reported the wrong ones, sent before it on the same path, have been handled).
    for _ in range(5):
        ignored = node.counters()["evidence_ignored"]
        if probe_and_forge(node, raw_icmp, 2, [*wrong, (mine, theirs)]):
            break
        assert node.counters()["evidence_ignored"] == ignored + 1  # the right one, late: a slow machine
    reports.wait_for(2, 1)
    assert reports.items == [(2, "port_unreachable")]
    assert node.counters()["death_evidence"] == 1


@needs_root
@pytest.mark.parametrize("last_probe", ["never", "expired"])
def test_udp_a_port_unreachable_without_a_recent_probe_is_ignored(world: World, raw_icmp: socket.socket,
                                                                  last_probe: str) -> None:
    live, = world.spawn("udp", 1)
    node, reports = world.node("udp", addresses(live))
    assert isinstance(node, UdpTransport)
    mine = node.probe_address(2)
    assert mine is not None
    theirs = (mine[0], int(live.address.rpartition(":")[2]))
    if last_probe == "expired":
        node.probe(2)
        wait_until(lambda: node.counters()["probes_sent"] == 1, "the probe")
        time.sleep(EVIDENCE_WINDOW + 0.1)  # the scenario: the probe's window has passed
    forge(raw_icmp, mine, theirs)
    wait_until(lambda: node.counters()["evidence_ignored"] == 1, "the forged error to be read")
    assert node.counters()["death_evidence"] == 0
    # Not banked: a later probe of the live peer yields nothing by itself; only a new error within the
    # window counts (the positive control shows the forgery would have been evidence then).
    for _ in range(5):
        if probe_and_forge(node, raw_icmp, 2, [(mine, theirs)]):
            break
    assert reports.items == [(2, "port_unreachable")]


# ---------------------------------------------------------------------------------------- lifecycle


@BOTH
def test_no_evidence_is_reported_after_close(world: World, transport_kind: str) -> None:
    first, second, third = world.spawn(transport_kind, 3)
    for peer in (first, second, third):
        peer.kill()
    # Closed from inside the callback: the evidence still to report in that round is dropped.  The first
    # report (of node 4) holds the receive thread until nodes 2 and 3 are both asked for, so that their
    # answers come in one round; the callback closes the transport on the first of them.
    node, reports = world.node(transport_kind, addresses(first, second, third))
    asked = threading.Event()

    def hold_then_close(peer_id: int, kind: str) -> None:
        if peer_id == 4:
            assert asked.wait(TIMEOUT)
        else:
            node.close()

    reports.then = hold_then_close
    thread = receive_thread(node)
    node.probe(4)
    reports.wait_for(4, 1)
    node.probe(2)
    node.probe(3)
    asked.set()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert len(reports.items) == 2, reports.items
    assert reports.items[1] in ((2, KIND[transport_kind]), (3, KIND[transport_kind]))
    probes = node.counters()["probes_sent"]
    node.probe(3)  # ignored after close
    assert node.counters()["probes_sent"] == probes
    assert not node.failed
    # Closed by another thread with a probe just asked for: close() joins the thread that reports.
    other, other_reports = world.node(transport_kind, addresses(first, second, third))
    other_thread = receive_thread(other)
    other.probe(2)
    other.close()
    assert not other_thread.is_alive()
    reported = list(other_reports.items)
    other.probe(2)
    assert other_reports.items == reported


@BOTH
def test_a_report_callback_that_raises_does_not_stop_the_receive_loop(
        world: World, transport_kind: str, caplog: pytest.LogCaptureFixture) -> None:
    dead, = world.spawn(transport_kind, 1)
    dead.kill()
    node, reports = world.node(transport_kind, addresses(dead))

    def boom(peer_id: int, kind: str) -> None:
        raise RuntimeError(f"boom {peer_id}")

    reports.then = boom
    with caplog.at_level(logging.WARNING):
        for count in (1, 2, 3):
            node.probe(2)
            reports.wait_for(2, count)
    assert not node.failed
    assert receive_thread(node).is_alive()
    logged = [r.getMessage() for r in caplog.records if "callback" in r.getMessage()]
    assert len(logged) == 1 and "boom 2" in logged[0]  # rate-limited


def test_udp_an_empty_datagram_is_a_probe_counted_and_never_delivered(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    delivered: List[bytes] = []
    got = threading.Event()

    def deliver(data: bytes) -> None:
        delivered.append(data)
        got.set()

    with caplog.at_level(logging.WARNING, logger="transports.udp"):
        node, _ = world.node("udp", [], deliver=deliver)
        assert isinstance(node, UdpTransport)
        address = node.address
        assert address is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"", address)
            sender.sendto(b"marker", address)  # in order on loopback: once it is here, so was the probe
        assert got.wait(TIMEOUT)
    assert delivered == [b"marker"]
    counters = node.counters()
    assert (counters["probes_received"], counters["datagrams_received"]) == (1, 1)
    assert "rejected_empty" not in counters
    assert not [r for r in caplog.records if r.name == "transports.udp" and r.levelno >= logging.WARNING]


def test_udp_a_probe_from_a_peer_transport_arrives_as_probes_received(world: World) -> None:
    peer = UdpTransport()
    world.node("udp", [], transport=peer)
    assert peer.address is not None
    node, _ = world.node("udp", [fmt(*peer.address)])
    node.probe(2)
    # The prober counts its probe right after sending it, on its own thread: the peer may count first.
    wait_until(lambda: peer.counters()["probes_received"] == 1 and node.counters()["probes_sent"] == 1,
               "the probe to be sent and to arrive")
    assert peer.counters()["datagrams_received"] == 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_udp_failed_when_the_receive_thread_ends_before_close(world: World) -> None:
    def deliver(data: bytes) -> None:
        raise SystemExit  # escapes the loop's handler for Exception, as nothing should

    node, _ = world.node("udp", [], deliver=deliver)
    assert not node.failed
    node.send(ME, b"hello")
    wait_until(lambda: node.failed, "the transport to fail")
    node.close()
    assert node.failed


def test_zmq_failed_when_the_context_is_terminated_under_it(world: World) -> None:
    context = zmq.Context()
    node, _ = world.node("zmq", [], transport=ZmqTransport(context))
    assert not node.failed
    terminator = threading.Thread(target=context.term, daemon=True)
    terminator.start()
    wait_until(lambda: node.failed, "the transport to fail")
    node.close()  # closes the sockets, so term() can finish
    terminator.join(TIMEOUT)
    assert not terminator.is_alive()
    assert node.failed
