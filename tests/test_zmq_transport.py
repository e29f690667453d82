"""Tests for transports.zeromq: delivery, stale-message dropping, bad input, lifecycle, real processes.

Everything runs on loopback (127.0.0.1, and [::1] when it can be bound).  Nothing synchronises on sleeps:
a test waits on a queue or an event.  To prove that something was *not* delivered, a marker is sent
afterwards on the same path - one TCP connection, which ZeroMQ delivers in order - and the test waits for
the marker; everything sent before it has arrived by then or never will.  Because a message sent while a
connection is being set up is dropped (that is the point of the transport), "send until received" loops
are used to wait for a connection; they resend every few milliseconds.

Pauses in the stale-delivery tests (a peer down for ~2 s while messages keep coming) and in the CURVE
impostor test (a second of reconnection attempts) are the scenario itself, not synchronisation; one test
leaves a 50 ms window after close() in which a buggy receive thread would deliver.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable, Optional

import pytest
import zmq
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from raft_election import MemoryStorage, RaftConfig, RaftNode
from raft_election.codec import MAX_FRAME_SIZE, MAX_MESSAGE_SIZE
from raft_election.errors import TransportError
from raft_election.processes import free_ports
from tests.transporttools import received_until
from transports.zeromq import SEND_HWM, ZmqTransport, normalize_address
from transports.zeromq.options import ZMQ_MAX_MESSAGE

TIMEOUT = 10.0  # only to keep a broken test from hanging; never reached when the code works
RESEND = 0.005  # pause between resends while waiting for a connection
MARKER = b"--marker--"
DOWN_FOR = 2.0  # how long a peer stays down in the stale-delivery tests
ROOT = Path(__file__).resolve().parents[1]

#: A peer in another OS process.  Prints "ready", then the hex of every frame it receives, one per line,
#: and echoes each frame back to node 1 prefixed with b"echo:".  Exits when its stdin closes.
CHILD = """
import sys, threading
from transports.zeromq import ZmqTransport
node_id, peers = int(sys.argv[1]), {1: sys.argv[2], 2: sys.argv[3]}
lock = threading.Lock()
transport = ZmqTransport()
def deliver(data):
    with lock:
        sys.stdout.write(data.hex() + "\\n")
        sys.stdout.flush()
    transport.send(1, b"echo:" + data[:100])
transport.start(node_id, peers, deliver)
sys.stdout.write("ready\\n")
sys.stdout.flush()
sys.stdin.read()
transport.close()
"""


# ---------------------------------------------------------------------------- helpers


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now, outside the range outgoing connections take theirs from."""
    return free_ports(1, kind="tcp", host=host)[0]


def ipv6_loopback_available() -> bool:
    try:
        free_port("::1")
    except OSError:
        return False
    return True


class Inbox:
    """A ZmqTransport whose deliveries land in a queue."""

    def __init__(self, node_id: int, peers: dict[int, str], deliver: Optional[Callable[[bytes], None]] = None,
                 transport: Optional[ZmqTransport] = None) -> None:
        self.node_id = node_id
        self.received: queue.Queue[bytes] = queue.Queue()
        self.transport = transport or ZmqTransport()
        self.transport.start(node_id, peers, deliver or self.received.put)

    def send(self, peer_id: int, data: bytes) -> None:
        self.transport.send(peer_id, data)

    def get(self, timeout: float = TIMEOUT) -> bytes:
        return self.received.get(timeout=timeout)

    def until(self, marker: bytes) -> list[bytes]:
        """Everything received before ``marker``."""
        return received_until(self.get, marker)

    def close(self) -> None:
        self.transport.close()


def send_until_received(send: Callable[[bytes], None], receive: Callable[[float], bytes],
                        payload: bytes) -> list[bytes]:
    """Send ``payload`` again and again until it arrives; return what arrived before it (in order)."""
    deadline = time.monotonic() + TIMEOUT
    before = []
    while time.monotonic() < deadline:
        send(payload)
        try:
            data = receive(RESEND)
        except queue.Empty:
            continue
        if data == payload:
            return before
        before.append(data)
    raise AssertionError(f"{payload!r} never arrived")


def connect(a: Inbox, b: Inbox) -> None:
    """Wait until ``a`` reaches ``b``: resend a marker until it arrives, then drain its duplicates."""
    marker = b"connect:%d" % random.getrandbits(32)
    send_until_received(lambda data: a.send(b.node_id, data), b.get, marker)
    a.send(b.node_id, MARKER)
    assert all(data == marker for data in b.until(MARKER))


@pytest.fixture
def inboxes() -> Iterator[list[Inbox]]:
    """Transports registered here are closed after the test, even when it fails."""
    made: list[Inbox] = []
    yield made
    for inbox in made:
        inbox.close()


@pytest.fixture
def pair(inboxes: list[Inbox]) -> tuple[Inbox, Inbox]:
    peers = {1: f"127.0.0.1:{free_port()}", 2: f"tcp://127.0.0.1:{free_port()}"}
    a, b = Inbox(1, peers), Inbox(2, peers)
    inboxes += [a, b]
    connect(a, b)
    connect(b, a)
    return a, b


@pytest.fixture
def transports() -> Iterator[list[ZmqTransport]]:
    """Bare transports registered here are closed after the test, even when it fails."""
    made: list[ZmqTransport] = []
    yield made
    for transport in made:
        transport.close()


@pytest.fixture
def sender(inboxes: list[Inbox]) -> tuple[Inbox, dict[int, str]]:
    """Node 1, started, with the address of a node 3 that the test starts itself."""
    peers = {1: f"127.0.0.1:{free_port()}", 3: f"127.0.0.1:{free_port()}"}
    a = Inbox(1, peers)
    inboxes.append(a)
    return a, peers


class Child:
    """A peer in another process (see CHILD); its printed frames land in ``lines``."""

    def __init__(self, node_id: int, peers: dict[int, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(node_id), peers[1], peers[2]],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, text=True,
        )
        self.pid = self.process.pid
        self.lines: queue.Queue[str] = queue.Queue()
        stdout = self.process.stdout
        assert stdout is not None
        self._reader = threading.Thread(target=self._read, args=(stdout,), daemon=True)
        self._reader.start()
        assert self.lines.get(timeout=TIMEOUT) == "ready"

    def _read(self, stdout: object) -> None:
        for line in stdout:  # type: ignore[attr-defined]
            self.lines.put(line.strip())

    def get(self, timeout: float = TIMEOUT) -> bytes:
        return bytes.fromhex(self.lines.get(timeout=timeout))

    def until(self, marker: bytes) -> list[bytes]:
        return received_until(self.get, marker)

    def kill(self) -> None:
        """SIGKILL by PID (also works on a stopped process) and reap it."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(TIMEOUT)
        self._reader.join(TIMEOUT)  # it reaches EOF now; only then may stdout be closed


@pytest.fixture
def children() -> Iterator[Callable[[int, dict[int, str]], Child]]:
    """Start peer processes; every one is killed by PID when the test ends, whatever happened."""
    started: list[Child] = []

    def spawn(node_id: int, peers: dict[int, str]) -> Child:
        child = Child(node_id, peers)
        started.append(child)
        return child

    yield spawn
    for child in started:
        child.kill()
        for stream in (child.process.stdin, child.process.stdout):
            if stream is not None:
                stream.close()


def receive_threads(transport: ZmqTransport) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(transport.name + "-")]


# ---------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(("address", "endpoint"), [
    ("127.0.0.1:9001", "tcp://127.0.0.1:9001"),
    ("tcp://127.0.0.1:9001", "tcp://127.0.0.1:9001"),
    ("node-3.example.com:65535", "tcp://node-3.example.com:65535"),
    ("[::1]:9001", "tcp://[::1]:9001"),
    ("tcp://[fe80::1%eth0]:1", "tcp://[fe80::1%eth0]:1"),
])
def test_normalize_address_accepts_tcp_host_port_forms(address: str, endpoint: str) -> None:
    assert normalize_address(address) == endpoint


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.0.0.1:", ":9001", "127.0.0.1:0", "127.0.0.1:65536", "::1:9001", "[nonsense]:9001",
    "ipc:///tmp/raft", "udp://127.0.0.1:9001", "tcp://127.0.0.1:9001/x", "127.0.0.1:9001 ", "",
])
def test_normalize_address_rejects_other_forms(address: str) -> None:
    with pytest.raises(ValueError, match=r"port|TCP address|IPv6"):
        normalize_address(address)


def test_start_names_the_node_with_a_malformed_address() -> None:
    transport = ZmqTransport()
    with pytest.raises(TransportError, match=r"node 2.*'nowhere'"):
        transport.start(1, {1: f"127.0.0.1:{free_port()}", 2: "nowhere"}, lambda data: None)
    transport.close()


# ---------------------------------------------------------------------------- delivery


def test_two_transports_exchange_messages_both_ways(pair: tuple[Inbox, Inbox]) -> None:
    a, b = pair
    received_before = a.transport.counters()["frames_received"], b.transport.counters()["frames_received"]
    for i in range(20):
        a.send(2, b"a->b %d" % i)
        assert b.get() == b"a->b %d" % i
        b.send(1, b"b->a %d" % i)
        assert a.get() == b"b->a %d" % i
    # Frames are opaque bytes: any content up to MAX_MESSAGE_SIZE passes unchanged, bytearray included.
    payload = bytes(range(256))[:MAX_MESSAGE_SIZE]
    a.send(2, bytearray(payload))
    assert b.get() == payload
    assert a.transport.counters()["frames_received"] - received_before[0] == 20
    assert b.transport.counters()["frames_received"] - received_before[1] == 21


def test_a_peer_that_keeps_up_gets_every_message_of_quick_small_bursts(pair: tuple[Inbox, Inbox]) -> None:
    """Bursts of half the high-water mark, each one read before the next, are never dropped.

    (Half: libzmq's reader acknowledges what it read in batches of half the high-water mark, so up to
    that many delivered messages can still count against it.)

    libzmq tells a socket that its pipe was drained through internal commands that the send path processes
    at most about once a millisecond; without ZmqTransport._send_now's ZMQ_EVENTS check, a quick sequence of
    bursts finds the pipe "full" although it is empty.
    """
    a, b = pair
    for burst in range(200):
        sent = [b"%d:%d" % (burst, i) for i in range(SEND_HWM // 2)]
        for data in sent:
            a.send(2, data)
        assert [b.get() for _ in sent] == sent


def test_three_transports_each_reach_the_other_two(inboxes: list[Inbox]) -> None:
    peers = {node_id: f"127.0.0.1:{free_port()}" for node_id in (1, 2, 3)}
    nodes = {node_id: Inbox(node_id, peers) for node_id in peers}
    inboxes += nodes.values()
    for src in nodes.values():
        for dst in nodes.values():
            if src is not dst:
                connect(src, dst)
    for src in nodes.values():
        for dst in nodes.values():
            if src is not dst:
                src.send(dst.node_id, b"%d->%d" % (src.node_id, dst.node_id))
    for dst in nodes.values():
        got = sorted(dst.get() for _ in range(2))
        assert got == sorted(b"%d->%d" % (src, dst.node_id) for src in peers if src != dst.node_id)


@pytest.mark.skipif(not ipv6_loopback_available(), reason="[::1] cannot be bound here")
def test_exchange_over_ipv6_loopback(inboxes: list[Inbox]) -> None:
    peers = {1: f"[::1]:{free_port('::1')}", 2: f"tcp://[::1]:{free_port('::1')}"}
    a, b = Inbox(1, peers), Inbox(2, peers)
    inboxes += [a, b]
    assert a.transport.address == normalize_address(peers[1])
    assert b.transport.address == normalize_address(peers[2])
    connect(a, b)
    connect(b, a)


@pytest.mark.parametrize(("host", "ipv6"), [("localhost", None), ("127.0.0.1", True)])
def test_exchange_by_host_name_and_with_ipv6_forced_on(inboxes: list[Inbox], host: str,
                                                       ipv6: Optional[bool]) -> None:
    peers = {1: f"{host}:{free_port()}", 2: f"{host}:{free_port()}"}
    a = Inbox(1, peers, transport=ZmqTransport(ipv6=ipv6))
    b = Inbox(2, peers, transport=ZmqTransport(ipv6=ipv6))
    inboxes += [a, b]
    connect(a, b)
    connect(b, a)


def test_exchange_with_another_process(inboxes: list[Inbox], children: Callable[..., Child]) -> None:
    peers = {1: f"127.0.0.1:{free_port()}", 2: f"127.0.0.1:{free_port()}"}
    a = Inbox(1, peers)
    inboxes.append(a)
    child = children(2, peers)
    send_until_received(lambda data: a.send(2, data), child.get, b"hello")
    a.send(2, MARKER)
    child.until(MARKER)
    # The child echoes everything back to us, over its own connection.
    assert b"echo:hello" in a.until(b"echo:" + MARKER)
    for i in range(10):
        a.send(2, b"ping %d" % i)
        assert child.get() == b"ping %d" % i
        assert a.get() == b"echo:ping %d" % i


def test_counters_are_a_snapshot_with_every_key(pair: tuple[Inbox, Inbox]) -> None:
    a, _ = pair
    counters = a.transport.counters()
    assert set(counters) == {
        "frames_received", "frames_sent", "rejected_oversized", "rejected_multipart", "rejected_empty",
        "rejected_unauthenticated", "send_dropped", "send_errors", "receive_errors", "deliver_errors",
        "disconnects", "probes_sent", "death_evidence", "evidence_ignored", "probe_errors",
    }
    assert all(isinstance(value, int) for value in counters.values())
    counters["frames_sent"] = -1  # a snapshot: changing it changes nothing
    assert a.transport.counters()["frames_sent"] >= 0


# ---------------------------------------------------------------------------- stale delivery


def send_while_down(inbox: Inbox, peer_id: int, seconds: float) -> int:
    """Send numbered b"old:<n>" messages to a peer that is down, for ``seconds``; return how many."""
    count = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(10):
            count += 1
            inbox.send(peer_id, b"old:%d" % count)
        time.sleep(0.002)
    return count


def receive_after_restart(send: Callable[[bytes], None], receive: Callable[[float], bytes]) -> list[bytes]:
    """Send numbered b"new:<n>" messages until one arrives, then a marker; return all that arrived."""
    deadline = time.monotonic() + TIMEOUT
    got: list[bytes] = []
    sequence = 0
    while not got:
        assert time.monotonic() < deadline, "the restarted peer was never reached"
        sequence += 1
        send(b"new:%d" % sequence)
        with contextlib.suppress(queue.Empty):
            got.append(receive(RESEND))
    got += send_until_received(send, receive, MARKER)
    return got


def assert_only_new(got: list[bytes]) -> None:
    assert got, "nothing arrived after the restart"
    stale = [data for data in got if not data.startswith(b"new:")]
    assert not stale, f"{len(stale)} messages sent while the peer was down were delivered late: {stale[:5]}"
    numbers = [int(data[4:]) for data in got]
    assert numbers == sorted(set(numbers))  # each once, in order


@pytest.mark.parametrize("down", ["never_started", "closed"])
def test_messages_sent_while_the_peer_is_down_are_dropped_not_delivered_late(
        inboxes: list[Inbox], down: str) -> None:
    peers = {1: f"127.0.0.1:{free_port()}", 2: f"127.0.0.1:{free_port()}"}
    a = Inbox(1, peers)
    inboxes.append(a)
    if down == "closed":
        b = Inbox(2, peers)
        inboxes.append(b)
        connect(a, b)  # a live connection whose pipe could hold messages across the outage
        b.close()
    dropped_before = a.transport.counters()["send_dropped"]

    sent = send_while_down(a, 2, DOWN_FOR)

    dropped = a.transport.counters()["send_dropped"] - dropped_before
    if down == "never_started":
        assert dropped == sent  # nothing was even queued
    else:
        assert dropped >= sent - 50  # all but the few sent before the disconnection was noticed
    restarted = Inbox(2, peers)
    inboxes.append(restarted)
    assert_only_new(receive_after_restart(lambda data: a.send(2, data), restarted.get))


def test_messages_sent_while_a_peer_process_is_killed_are_not_delivered_to_its_successor(
        inboxes: list[Inbox], children: Callable[..., Child]) -> None:
    peers = {1: f"127.0.0.1:{free_port()}", 2: f"127.0.0.1:{free_port()}"}
    a = Inbox(1, peers)
    inboxes.append(a)
    first = children(2, peers)
    send_until_received(lambda data: a.send(2, data), first.get, b"hello")
    first.kill()

    send_while_down(a, 2, DOWN_FOR)

    second = children(2, peers)  # same address
    assert_only_new(receive_after_restart(lambda data: a.send(2, data), second.get))


def test_a_paused_peer_receives_only_a_bounded_backlog(inboxes: list[Inbox],
                                                       children: Callable[..., Child]) -> None:
    """The documented residual: a SIGSTOPped peer keeps its connection and gets what the kernels hold.

    Thousands of messages are sent while it is stopped; only a small, bounded number (what its kernel had
    accepted, plus at most the send high-water mark) may reach it when it resumes.
    """
    peers = {1: f"127.0.0.1:{free_port()}", 2: f"127.0.0.1:{free_port()}"}
    a = Inbox(1, peers)
    inboxes.append(a)
    child = children(2, peers)
    send_until_received(lambda data: a.send(2, data), child.get, b"hello")
    os.kill(child.pid, signal.SIGSTOP)
    try:
        count = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            for _ in range(10):
                count += 1
                a.send(2, (b"old:%d:" % count).ljust(100, b"."))
            time.sleep(0.001)
    finally:
        os.kill(child.pid, signal.SIGCONT)
    got = receive_after_restart(lambda data: a.send(2, data), child.get)
    stale = [data for data in got if data.startswith(b"old:")]
    assert count > 1000
    assert len(stale) <= 300, f"{len(stale)} of {count} stale messages reached the resumed peer"


# ---------------------------------------------------------------------------- sends never block


def test_a_burst_to_a_down_peer_returns_at_once_and_is_counted(inboxes: list[Inbox]) -> None:
    peers = {1: f"127.0.0.1:{free_port()}", 2: f"127.0.0.1:{free_port()}"}
    a = Inbox(1, peers)
    inboxes.append(a)
    started = time.monotonic()
    for i in range(10_000):
        a.send(2, b"x%d" % i)
    assert time.monotonic() - started < 5.0
    assert a.transport.counters()["send_dropped"] == 10_000
    assert a.transport.counters()["frames_sent"] == 0


def test_a_burst_to_a_peer_that_does_not_read_returns_at_once_and_drops(inboxes: list[Inbox]) -> None:
    peers = {1: f"127.0.0.1:{free_port()}", 2: f"127.0.0.1:{free_port()}"}
    a = Inbox(1, peers)
    inboxes.append(a)
    stuck, release = threading.Event(), threading.Event()
    late: queue.Queue[bytes] = queue.Queue()

    def slow_deliver(data: bytes) -> None:
        if not stuck.is_set():
            stuck.set()
            release.wait(TIMEOUT)
        late.put(data)

    b = Inbox(2, peers, deliver=slow_deliver)
    inboxes.append(b)
    deadline = time.monotonic() + TIMEOUT
    while not stuck.is_set():  # connect; b's receive thread then hangs in deliver
        assert time.monotonic() < deadline
        a.send(2, b"first")
        stuck.wait(RESEND)
    before = a.transport.counters()
    try:
        started = time.monotonic()
        for i in range(10_000):
            a.send(2, (b"burst:%d:" % i).ljust(100, b"."))
        elapsed = time.monotonic() - started
    finally:
        release.set()
    after = a.transport.counters()
    assert elapsed < 5.0
    dropped = after["send_dropped"] - before["send_dropped"]
    queued = after["frames_sent"] - before["frames_sent"]
    assert dropped + queued == 10_000
    assert dropped > 8_000  # only what libzmq and the kernels buffer gets through
    backlog = send_until_received(lambda data: a.send(2, data), lambda t: late.get(timeout=t), MARKER)
    burst = [data for data in backlog if data.startswith(b"burst:")]
    assert len(burst) <= queued


# ---------------------------------------------------------------------------- reconnection


def test_reconnects_by_itself_when_a_peer_restarts(pair: tuple[Inbox, Inbox], inboxes: list[Inbox]) -> None:
    a, b = pair
    peers = {1: str(a.transport.address), 2: str(b.transport.address)}
    b.close()
    restarted = Inbox(2, peers)
    inboxes.append(restarted)
    connect(a, restarted)
    connect(restarted, a)
    a.send(2, b"after restart")
    assert restarted.get() == b"after restart"


# ---------------------------------------------------------------------------- untrusted input


@pytest.fixture
def raw_context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


def raw_push(context: zmq.Context[zmq.Socket[bytes]], address: str) -> zmq.Socket[bytes]:
    sock = context.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    return sock


def test_multipart_empty_and_oversized_frames_are_dropped_and_counted(
        inboxes: list[Inbox], raw_context: zmq.Context[zmq.Socket[bytes]]) -> None:
    peers = {1: f"127.0.0.1:{free_port()}"}
    target = Inbox(1, peers)
    inboxes.append(target)
    rng = random.Random(20240601)
    sock = raw_push(raw_context, str(target.transport.address))
    expected: list[bytes] = []
    counts = {"rejected_empty": 0, "rejected_multipart": 0, "rejected_oversized": 0}
    fixed: list[list[bytes]] = [
        [b""], [b"a", b"b", b"c"], [b"", b""], [b"x" * (MAX_FRAME_SIZE + 1)], [b"y" * ZMQ_MAX_MESSAGE],
        [b"z" * MAX_FRAME_SIZE], [b"\x00"],
    ]
    randomised = [
        [rng.randbytes(rng.choice([0, rng.randint(1, MAX_MESSAGE_SIZE), rng.randint(0, ZMQ_MAX_MESSAGE)]))
         for _ in range(rng.choice([1, 1, 1, 2, 3]))]
        for _ in range(300)
    ]
    for frames in fixed + randomised:
        if len(frames) > 1:
            counts["rejected_multipart"] += 1
        elif not frames[0]:
            counts["rejected_empty"] += 1
        elif len(frames[0]) > MAX_FRAME_SIZE:
            counts["rejected_oversized"] += 1
        else:
            expected.append(frames[0])
        sock.send_multipart(frames)
    sock.send(MARKER)

    assert target.until(MARKER) == expected
    counters = target.transport.counters()
    assert {name: counters[name] for name in counts} == counts
    assert counters["frames_received"] == len(expected) + 1
    assert counters["receive_errors"] == 0
    # The transport is unharmed: a proper peer still gets through.
    assert counts["rejected_empty"] and counts["rejected_multipart"] and counts["rejected_oversized"]
    sock.send(b"still alive")
    assert target.get() == b"still alive"


def test_a_frame_above_the_size_limit_gets_the_sender_disconnected(
        inboxes: list[Inbox], raw_context: zmq.Context[zmq.Socket[bytes]]) -> None:
    target = Inbox(1, {1: f"127.0.0.1:{free_port()}"})
    inboxes.append(target)
    sock = raw_push(raw_context, str(target.transport.address))
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
    monitor.setsockopt(zmq.RCVTIMEO, int(TIMEOUT * 1000))
    assert recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
    sock.send(b"q" * (ZMQ_MAX_MESSAGE + 1))
    assert recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
    # The raw socket reconnects by itself; the oversized frame died with the old connection.
    assert recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
    sock.send(b"after")
    assert target.get() == b"after"
    assert target.transport.counters()["rejected_oversized"] == 0
    sock.disable_monitor()
    monitor.close(linger=0)


def zmtp_greeting() -> bytes:
    """A ZMTP 3.0 greeting for the NULL mechanism (RFC 23): signature, version, mechanism, as-server."""
    return b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" + b"\x00" * 31


def zmtp_ready_push() -> bytes:
    """A READY command announcing a PUSH socket."""
    prop = b"\x0bSocket-Type" + struct.pack(">I", 4) + b"PUSH"
    body = b"\x05READY" + prop
    return bytes([0x04, len(body)]) + body


def write(data: bytes, address: tuple[str, int]) -> None:
    """Write ``data`` on a new TCP connection and hang up."""
    # ConnectionResetError, BrokenPipeError: the server gave up on us first.
    with socket.create_connection(address, timeout=TIMEOUT) as conn, \
            contextlib.suppress(ConnectionResetError, BrokenPipeError):
        conn.sendall(data)


def server_hangs_up(data: bytes, address: tuple[str, int]) -> bool:
    """Write ``data`` on a new TCP connection; return whether the server closed it (within TIMEOUT)."""
    with socket.create_connection(address, timeout=TIMEOUT) as conn:
        try:
            conn.sendall(data)
            while conn.recv(4096):  # the server's greeting, then EOF when it gives up on us
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass
        except socket.timeout:
            return False
    return True


def test_raw_tcp_garbage_does_not_break_the_transport(pair: tuple[Inbox, Inbox]) -> None:
    a, b = pair
    host, port = str(b.transport.address)[len("tcp://"):].rsplit(":", 1)
    address = (host, int(port))
    rng = random.Random(7)
    for size in (1, 10, 64, 1000, 65536):
        write(rng.randbytes(size), address)
    # Past the greeting: garbage where the handshake should be, then a READY followed by garbage frames.
    write(zmtp_greeting() + rng.randbytes(500), address)
    write(zmtp_greeting() + zmtp_ready_push() + rng.randbytes(2000), address)
    # A well-formed peer announcing a 2**40-byte frame: refused by ZMQ_MAXMSGSIZE before any allocation.
    assert server_hangs_up(zmtp_greeting() + zmtp_ready_push() + b"\x02" + struct.pack(">Q", 2**40), address)
    # A client that connects and never speaks does not stand in anyone's way.  (Bytes that do not start
    # with the ZMTP 3 signature are read as legacy ZMTP 1.0 frames, so some garbage may have been delivered
    # as frames: opaque bytes for the codec to reject, like any other.)
    with socket.create_connection(address, timeout=TIMEOUT):
        send_until_received(lambda data: a.send(2, data), b.get, b"through")
    counters = b.transport.counters()
    assert counters["receive_errors"] == 0
    assert counters["deliver_errors"] == 0


# ---------------------------------------------------------------------------- binding


def test_binding_a_port_in_use_raises_a_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        transport = ZmqTransport()
        with pytest.raises(TransportError, match=rf"tcp://127\.0\.0\.1:{port}.*in use") as failure:
            transport.start(1, {1: f"127.0.0.1:{port}"}, lambda data: None)
        assert isinstance(failure.value.__cause__, zmq.ZMQError)
        assert failure.value.__cause__.errno == errno.EADDRINUSE
        assert transport.closed  # cleaned up; a new transport is needed to try again
        transport.close()


def test_a_second_transport_cannot_take_the_address_of_a_live_one(pair: tuple[Inbox, Inbox]) -> None:
    a, _ = pair
    intruder = ZmqTransport()
    with pytest.raises(TransportError, match="in use"):
        intruder.start(1, {1: str(a.transport.address)}, lambda data: None)


def test_binding_an_address_that_is_not_local_raises_a_clear_error() -> None:
    transport = ZmqTransport()  # 192.0.2.0/24 is TEST-NET-1: never assigned, never contacted
    with pytest.raises(TransportError, match=r"192\.0\.2\.1:9.*not local"):
        transport.start(1, {1: "192.0.2.1:9"}, lambda data: None)
    assert transport.closed


def test_start_requires_an_address_for_this_node() -> None:
    with pytest.raises(TransportError, match="node 3 has no address"):
        ZmqTransport().start(3, {1: "127.0.0.1:9"}, lambda data: None)


# ---------------------------------------------------------------------------- lifecycle


def test_close_joins_the_receive_thread_promptly_and_is_idempotent() -> None:
    transport = ZmqTransport()
    transport.start(5, {5: f"127.0.0.1:{free_port()}", 6: f"127.0.0.1:{free_port()}"}, lambda data: None)
    threads = receive_threads(transport)
    assert len(threads) == 1 and threads[0].is_alive()
    assert "started" in repr(transport) and "node_id=5" in repr(transport)
    started = time.monotonic()
    transport.close()
    assert time.monotonic() - started < 1.0
    assert not threads[0].is_alive()
    assert transport.closed and "closed" in repr(transport)
    transport.close()
    transport.close()


def test_close_before_start_and_start_after_close() -> None:
    transport = ZmqTransport()
    transport.close()
    with pytest.raises(TransportError, match="closed"):
        transport.start(1, {1: f"127.0.0.1:{free_port()}"}, lambda data: None)


def test_start_twice_raises(pair: tuple[Inbox, Inbox]) -> None:
    a, _ = pair
    with pytest.raises(TransportError, match="already started"):
        a.transport.start(1, {1: f"127.0.0.1:{free_port()}"}, lambda data: None)


def test_a_given_context_is_left_running() -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        transport = ZmqTransport(context)
        transport.start(1, {1: f"127.0.0.1:{free_port()}", 2: f"127.0.0.1:{free_port()}"}, lambda data: None)
        transport.close()
        assert not context.closed
        context.socket(zmq.PUSH).close()  # still usable
    finally:
        context.term()


def test_sends_before_start_and_after_close_are_dropped_silently(pair: tuple[Inbox, Inbox]) -> None:
    unstarted = ZmqTransport()
    unstarted.send(2, b"early")
    assert unstarted.counters()["send_dropped"] == 1
    a, b = pair
    before = a.transport.counters()["send_dropped"]
    a.close()
    a.send(2, b"late")
    a.send(99, b"unknown peer")
    assert a.transport.counters()["send_dropped"] == before + 2
    b.send(1, b"to a closed peer")


def test_sends_to_unknown_peers_are_dropped(pair: tuple[Inbox, Inbox]) -> None:
    a, _ = pair
    before = a.transport.counters()["send_dropped"]
    a.send(42, b"nobody")
    a.send(1, b"myself")
    assert a.transport.counters()["send_dropped"] == before + 2


def test_send_rejects_what_no_peer_would_accept(pair: tuple[Inbox, Inbox]) -> None:
    a, _ = pair
    with pytest.raises(TypeError):
        a.send(2, "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1 to"):
        a.send(2, b"")
    with pytest.raises(ValueError, match="1 to"):
        a.send(2, b"x" * (MAX_FRAME_SIZE + 1))


def test_nothing_is_delivered_after_close_returns(sender: tuple[Inbox, dict[int, str]],
                                                  transports: list[ZmqTransport]) -> None:
    a, peers = sender
    closed = threading.Event()
    late: list[bytes] = []
    arrived = threading.Event()

    def deliver(data: bytes) -> None:
        arrived.set()
        if closed.is_set():
            late.append(data)

    c = ZmqTransport()
    transports.append(c)
    c.start(3, peers, deliver)
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            a.send(3, b"flood")

    sender = threading.Thread(target=flood)
    sender.start()
    try:
        assert arrived.wait(TIMEOUT)
        c.close()
        closed.set()
        time.sleep(0.05)  # give a (buggy) receive thread the chance to deliver late
    finally:
        stop.set()
        sender.join()
    assert late == []


def test_close_from_inside_deliver_does_not_deadlock(sender: tuple[Inbox, dict[int, str]],
                                                     transports: list[ZmqTransport]) -> None:
    a, peers = sender
    calls: list[bytes] = []
    returned = threading.Event()
    c = ZmqTransport()
    transports.append(c)

    def deliver(data: bytes) -> None:
        calls.append(data)
        c.close()
        returned.set()

    c.start(3, peers, deliver)
    thread = receive_threads(c)[0]
    deadline = time.monotonic() + TIMEOUT
    while not returned.is_set():
        assert time.monotonic() < deadline
        a.send(3, b"close yourself")
        returned.wait(RESEND)
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert len(calls) == 1 and c.closed


def test_a_raising_deliver_is_counted_and_delivery_goes_on(sender: tuple[Inbox, dict[int, str]],
                                                           inboxes: list[Inbox]) -> None:
    a, peers = sender
    received: queue.Queue[bytes] = queue.Queue()

    def deliver(data: bytes) -> None:
        if data.startswith(b"boom"):
            raise RuntimeError("a bug in the node")
        received.put(data)

    c = Inbox(3, peers, deliver=deliver)
    inboxes.append(c)
    send_until_received(lambda data: a.send(3, data), lambda t: received.get(timeout=t), b"hello")
    a.send(3, b"boom")
    a.send(3, b"boom")
    a.send(3, b"after")
    assert received.get(timeout=TIMEOUT) == b"after"
    assert c.transport.counters()["deliver_errors"] == 2


def test_the_receive_loop_survives_unexpected_errors(pair: tuple[Inbox, Inbox],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = pair
    original = b.transport._receive_batch
    failures = [zmq.ZMQError(errno.EINTR), RuntimeError("unexpected")]

    def flaky(pull: zmq.Socket[bytes]) -> None:
        if failures:
            raise failures.pop(0)
        original(pull)

    monkeypatch.setattr(b.transport, "_receive_batch", flaky)
    send_until_received(lambda data: a.send(2, data), b.get, b"survived")
    assert b.transport.counters()["receive_errors"] == 2


# ---------------------------------------------------------------------------- CURVE


@pytest.fixture
def curve_cluster(inboxes: list[Inbox]) -> tuple[dict[int, Inbox], dict[int, tuple[bytes, bytes]]]:
    """Three members with CURVE keys, all connected both ways; also returns every key pair."""
    pairs = {node_id: zmq.curve_keypair() for node_id in (1, 2, 3)}
    public = {node_id: key for node_id, (key, _) in pairs.items()}
    peers = {node_id: f"127.0.0.1:{free_port()}" for node_id in pairs}
    nodes = {node_id: Inbox(node_id, peers, transport=ZmqTransport(curve_secret_key=pairs[node_id][1],
                                                                   curve_public_keys=public))
             for node_id in pairs}
    inboxes += nodes.values()
    for src in nodes.values():
        for dst in nodes.values():
            if src is not dst:
                connect(src, dst)
    return nodes, pairs


def handshake_outcome(monitor: zmq.Socket[bytes]) -> int:
    """The first handshake event (success or failure) a monitored socket reports."""
    outcomes = (zmq.EVENT_HANDSHAKE_SUCCEEDED, zmq.EVENT_HANDSHAKE_FAILED_AUTH,
                zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
    while True:
        event: int = recv_monitor_message(monitor)["event"]
        if event in outcomes:
            return event


def test_curve_members_exchange_messages(curve_cluster: tuple[dict[int, Inbox], dict]) -> None:
    nodes, _ = curve_cluster
    assert "curve" in repr(nodes[1].transport)
    nodes[1].send(3, b"secret ballot")
    assert nodes[3].get() == b"secret ballot"
    assert all(inbox.transport.counters()["rejected_unauthenticated"] == 0 for inbox in nodes.values())


def test_curve_lets_no_raw_tcp_garbage_through(
        curve_cluster: tuple[dict[int, Inbox], dict[int, tuple[bytes, bytes]]]) -> None:
    nodes, _ = curve_cluster
    target = nodes[2]
    before = target.transport.counters()["frames_received"]
    host, port = str(target.transport.address)[len("tcp://"):].rsplit(":", 1)
    rng = random.Random(11)
    # Without CURVE some of this would be read as ZMTP 1.0 frames; with it the server hangs up on each.
    for data in [rng.randbytes(size) for size in (1, 10, 64, 1000, 65536)] + [
            zmtp_greeting() + zmtp_ready_push() + rng.randbytes(2000)]:
        assert server_hangs_up(data, (host, int(port)))
    for marker in (MARKER, MARKER + b"2"):
        nodes[1].send(2, marker)
        assert target.until(marker) == []
    assert target.transport.counters()["frames_received"] - before == 2


@pytest.mark.parametrize("client", ["plain", "stranger"])
def test_curve_refuses_clients_that_are_not_members(
        curve_cluster: tuple[dict[int, Inbox], dict[int, tuple[bytes, bytes]]],
        raw_context: zmq.Context[zmq.Socket[bytes]], client: str) -> None:
    nodes, pairs = curve_cluster
    target = nodes[2]
    sock = raw_context.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    if client == "stranger":  # knows the server's public key, but its own key is no member's
        stranger_public, stranger_secret = zmq.curve_keypair()
        sock.setsockopt(zmq.CURVE_SERVERKEY, pairs[2][0])
        sock.setsockopt(zmq.CURVE_PUBLICKEY, stranger_public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, stranger_secret)
    monitor = sock.get_monitor_socket()
    monitor.setsockopt(zmq.RCVTIMEO, int(TIMEOUT * 1000))
    sock.connect(str(target.transport.address))
    sock.send(b"let me in")
    outcome = handshake_outcome(monitor)
    if client == "stranger":
        assert outcome == zmq.EVENT_HANDSHAKE_FAILED_AUTH  # the ZAP handler said no
    else:  # the server hangs up on a NULL-mechanism greeting
        assert outcome in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
    # The members' own traffic is unaffected, and the intruder's message never arrived before it.
    nodes[1].send(2, MARKER)
    assert target.until(MARKER) == []
    rejected = target.transport.counters()["rejected_unauthenticated"]
    assert rejected >= 1 if client == "stranger" else rejected == 0
    sock.disable_monitor()
    monitor.close(linger=0)


def test_curve_does_not_connect_to_a_peer_with_the_wrong_key(inboxes: list[Inbox]) -> None:
    """A process squatting on a member's address without its secret key gets nothing."""
    pairs = {node_id: zmq.curve_keypair() for node_id in (1, 2)}
    impostor_public, impostor_secret = zmq.curve_keypair()
    peers = {1: f"127.0.0.1:{free_port()}", 2: f"127.0.0.1:{free_port()}"}
    public = {node_id: key for node_id, (key, _) in pairs.items()}
    a = Inbox(1, peers, transport=ZmqTransport(curve_secret_key=pairs[1][1], curve_public_keys=public))
    impostor = Inbox(2, peers, transport=ZmqTransport(
        curve_secret_key=impostor_secret, curve_public_keys={1: public[1], 2: impostor_public}))
    inboxes += [a, impostor]
    deadline = time.monotonic() + 1.0  # several reconnection attempts
    while time.monotonic() < deadline:
        a.send(2, b"for node 2 only")
        time.sleep(RESEND)
    counters = a.transport.counters()
    assert counters["frames_sent"] == 0 and counters["send_dropped"] > 0
    impostor.close()
    real = Inbox(2, peers, transport=ZmqTransport(curve_secret_key=pairs[2][1], curve_public_keys=public))
    inboxes.append(real)
    connect(a, real)
    assert impostor.received.empty()


def test_curve_settings_are_checked() -> None:
    public, secret = zmq.curve_keypair()
    other_public, _ = zmq.curve_keypair()
    with pytest.raises(ValueError, match="both or neither"):
        ZmqTransport(curve_secret_key=secret)
    with pytest.raises(ValueError, match=r"curve_public_keys\[2\] is not a CURVE key"):
        ZmqTransport(curve_secret_key=secret, curve_public_keys={1: public, 2: b"short"})
    with pytest.raises(ValueError, match="curve_secret_key is not a CURVE key"):
        ZmqTransport(curve_secret_key="x" * 40 + "\u00e9", curve_public_keys={1: public})
    raw = ZmqTransport(curve_secret_key=z85.decode(secret), curve_public_keys={1: public.decode()})
    assert "curve" in repr(raw)
    with pytest.raises(TransportError, match=r"no key for node\(s\) \[2\]"):
        ZmqTransport(curve_secret_key=secret, curve_public_keys={1: public}).start(
            1, {1: f"127.0.0.1:{free_port()}", 2: f"127.0.0.1:{free_port()}"}, lambda data: None)
    with pytest.raises(TransportError, match="someone else's key pair"):
        ZmqTransport(curve_secret_key=secret, curve_public_keys={1: other_public}).start(
            1, {1: f"127.0.0.1:{free_port()}"}, lambda data: None)


def test_curve_needs_a_context_of_its_own() -> None:
    public, secret = zmq.curve_keypair()
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    first = ZmqTransport(context, curve_secret_key=secret, curve_public_keys={1: public})
    second = ZmqTransport(context, curve_secret_key=secret, curve_public_keys={1: public})
    try:
        first.start(1, {1: f"127.0.0.1:{free_port()}"}, lambda data: None)
        with pytest.raises(TransportError, match="ZAP handler"):
            second.start(1, {1: f"127.0.0.1:{free_port()}"}, lambda data: None)
    finally:
        first.close()
        second.close()
        context.term()


# ---------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("curve", [False, True])
def test_three_raft_nodes_elect_one_leader_over_zeromq(curve: bool) -> None:
    peers = {node_id: f"127.0.0.1:{free_port()}" for node_id in (1, 2, 3)}
    pairs = {node_id: zmq.curve_keypair() for node_id in peers}
    public = {node_id: key for node_id, (key, _) in pairs.items()}
    transports = {node_id: ZmqTransport(curve_secret_key=pairs[node_id][1] if curve else None,
                                        curve_public_keys=public if curve else None)
                  for node_id in peers}
    nodes = [RaftNode(RaftConfig(node_id=node_id, peers=peers), transports[node_id], MemoryStorage())
             for node_id in peers]
    try:
        for node in nodes:
            node.start()
        deadline = time.monotonic() + TIMEOUT
        while True:
            leaders = {node.leader_id for node in nodes}
            holders = [node.node_id for node in nodes if node.is_leader]
            if len(leaders) == 1 and None not in leaders and len(holders) == 1:
                break
            assert time.monotonic() < deadline, f"no agreed leader: {nodes}"
            time.sleep(0.01)
        assert holders == list(leaders)
        status = nodes[holders[0] - 1].status()
        assert status.counters["frames_received"] > 0
        assert status.counters["messages_received"] > 0
    finally:
        for node in nodes:
            node.stop()
    for transport in transports.values():
        assert transport.closed
        assert receive_threads(transport) == []


def test_messages_sent_just_before_close_still_reach_a_connected_peer(pair: tuple[Inbox, Inbox]) -> None:
    """A leader that stops sends TimeoutNow and Resign, then closes its transport at once; both must arrive.

    Closing with ``ZMQ_LINGER=0`` discarded whatever the I/O thread had not written yet, so the last messages
    of a stopping node were often lost and its successor waited out an election timeout instead.
    """
    a, b = pair
    last = [b"last:%d" % i for i in range(SEND_HWM // 2)]
    for data in last:
        a.send(2, data)
    a.close()
    assert [b.get() for _ in last] == last
