"""Link faults inside member processes: LinkFaults, the faults file, FaultyTransport, and ``run --faults``.

The transport tests run over a recording fake transport (or the in-memory network) and synchronise on
conditions with generous deadlines; the sleeps that appear only check that something did *not* happen
too early.  The process test isolates a real leader among three UDP members by writing faults files and
sending SIGUSR2, then heals the cut.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Optional

import pytest

from raft_election.errors import ConfigError
from raft_election.nemesis.faults import (
    NO_FAULTS,
    FaultyTransport,
    LinkFaults,
    faults_path,
    load_faults,
    write_faults,
)
from raft_election.processes import (
    MemberEvent,
    MemberProcesses,
    free_ports,
    member_follows,
    write_cluster_file,
)
from raft_election.transport import DeliverFn, Transport
from transports.memory import InMemoryNetwork

#: Only there so a broken build fails instead of hanging.
PATIENCE = 30.0


class RecordingTransport(Transport):
    """Records every send as ``(monotonic, peer, data)``; waiters can wait for a number of sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, int, bytes]] = []
        self.started: Optional[tuple[int, Mapping[int, str], DeliverFn]] = None
        self.closed = False
        self.raise_on: set[int] = set()
        self._cond = threading.Condition()

    def start(self, node_id: int, peers: Mapping[int, str], deliver: DeliverFn) -> None:
        self.started = (node_id, peers, deliver)

    def send(self, peer_id: int, data: bytes) -> None:
        with self._cond:
            self.sent.append((time.monotonic(), peer_id, data))
            self._cond.notify_all()
        if peer_id in self.raise_on:
            raise RuntimeError(f"send to {peer_id} failed")

    def close(self) -> None:
        self.closed = True

    def counters(self) -> Mapping[str, int]:
        return {"inner_sends": len(self.sent)}

    def wait_sent(self, count: int, timeout: float = PATIENCE) -> list[tuple[float, int, bytes]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.sent) < count:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"only {len(self.sent)} of {count} sends within {timeout} s"
                self._cond.wait(remaining)
            return list(self.sent)

    def payloads(self, peer: Optional[int] = None) -> list[bytes]:
        with self._cond:
            return [data for _, p, data in self.sent if peer is None or p == peer]


@pytest.fixture
def wrapped() -> Iterator[tuple[FaultyTransport, RecordingTransport]]:
    inner = RecordingTransport()
    faulty = FaultyTransport(inner, seed=7)
    faulty.start(1, {1: "a", 2: "b", 3: "c"}, lambda data: None)
    yield faulty, inner
    faulty.close()


def fault_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("faults-")]


# ---------------------------------------------------------------------------- LinkFaults and the file


def test_probes_go_through_the_cut_and_evidence_comes_back():
    """A probe of a peer behind a cut is never sent (a real partition gives no evidence either)."""
    with InMemoryNetwork(seed=1) as network:
        for dead in (2, 3):
            network.transport(dead).close()  # nothing listens for 2 and 3: probes of them find them gone
        faulty = FaultyTransport(network.transport(1), seed=1)
        faulty.start(1, {1: "memory:1", 2: "memory:2", 3: "memory:3"}, lambda data: None)
        reports: list[tuple[int, str]] = []
        arrived = threading.Event()
        faulty.watch(lambda peer, kind: (reports.append((peer, kind)), arrived.set()))
        faulty.set_faults(LinkFaults(drop_to=frozenset({3})))
        faulty.probe(3)
        faulty.probe(2)
        assert arrived.wait(10.0)
        assert reports == [(2, "closed")] and network.stats.probes == 1
        faulty.set_faults(LinkFaults(loss=1.0))
        faulty.probe(2)
        assert network.stats.probes == 1  # lost like a message
        faulty.close()


def test_default_faults_are_none():
    faults = LinkFaults()
    assert faults == NO_FAULTS
    assert faults.drop_to == frozenset() and faults.loss == 0.0 and faults.delay == (0.0, 0.0)
    assert not faults.active
    assert LinkFaults(loss=0.1).active and LinkFaults(drop_to=[2]).active
    assert LinkFaults(delay=(0, 0.1)).active


def test_fields_are_normalised():
    faults = LinkFaults(drop_to=[3, 2, 2], loss=1, delay=[0, 1])
    assert faults.drop_to == frozenset({2, 3})
    assert isinstance(faults.loss, float) and faults.loss == 1.0
    assert faults.delay == (0.0, 1.0) and all(isinstance(x, float) for x in faults.delay)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"drop_to": "23"}, "drop_to"),
    ({"drop_to": 2}, "drop_to"),
    ({"drop_to": [2, "3"]}, "drop_to"),
    ({"drop_to": [True]}, "drop_to"),
    ({"drop_to": [0]}, "drop_to"),
    ({"loss": -0.1}, "loss"),
    ({"loss": 1.5}, "loss"),
    ({"loss": float("nan")}, "loss"),
    ({"loss": True}, "loss"),
    ({"loss": "0.5"}, "loss"),
    ({"delay": (0.2, 0.1)}, "delay"),
    ({"delay": (-1, 0)}, "delay"),
    ({"delay": (0, float("inf"))}, "delay"),
    ({"delay": 0.1}, "delay"),
    ({"delay": (0.1,)}, "delay"),
    ({"delay": (0, 0, 0)}, "delay"),
])
def test_invalid_fields_are_refused_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError) as info:
        LinkFaults(**kwargs)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_json_round_trip():
    faults = LinkFaults(drop_to={4, 2}, loss=0.25, delay=(0.01, 0.05))
    document = faults.to_json()
    assert document == {"drop_to": [2, 4], "loss": 0.25, "delay": [0.01, 0.05]}
    assert LinkFaults.from_json(json.loads(json.dumps(document))) == faults
    assert LinkFaults.from_json({}) == NO_FAULTS
    assert LinkFaults.from_json(None) == NO_FAULTS
    assert LinkFaults.from_json({"loss": 0.5}) == LinkFaults(loss=0.5)


@pytest.mark.parametrize(("document", "words"), [
    ([1, 2], "JSON object"),
    ({"drop": [2]}, "unknown key(s) drop"),
    ({"loss": 2}, "loss"),
    ({"delay": [1]}, "delay"),
])
def test_from_json_refuses_bad_documents(document, words):
    with pytest.raises(ConfigError) as info:
        LinkFaults.from_json(document)
    assert words in str(info.value)


def test_load_faults_missing_or_empty_file_is_no_faults(tmp_path):
    assert load_faults(tmp_path / "absent.json") == NO_FAULTS
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    assert load_faults(empty) == NO_FAULTS
    null = tmp_path / "null.json"
    null.write_text("null")
    assert load_faults(null) == NO_FAULTS


def test_write_then_load_faults(tmp_path):
    faults = LinkFaults(drop_to={1}, loss=0.5, delay=(0.0, 0.2))
    path = faults_path(tmp_path, 3)
    assert path == str(tmp_path / "3.json")
    write_faults(path, faults)
    assert load_faults(path) == faults
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3.json"]  # no temporary file left behind


@pytest.mark.parametrize(("content", "words"), [
    (b"{not json", "not valid JSON"),
    (b'{"loss": 7}', "loss"),
    (b'{"drop_to": [2], "extra": 1}', "unknown key(s) extra"),
    (b"\xff\xfe", "cannot read"),
])
def test_load_faults_bad_file_names_the_file(tmp_path, content, words):
    path = tmp_path / "2.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_faults(path)
    assert str(path) in str(info.value)
    assert words in str(info.value)


def test_load_faults_unreadable_path_names_the_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_faults(tmp_path)  # a directory
    assert str(tmp_path) in str(info.value)


# ---------------------------------------------------------------------------- FaultyTransport


def test_no_faults_passes_everything_at_once_and_delegates(wrapped):
    faulty, inner = wrapped
    assert inner.started is not None and inner.started[0] == 1
    for peer in (2, 3, 2):
        faulty.send(peer, bytearray(b"m%d" % peer))
    assert [(p, d) for _, p, d in inner.sent] == [(2, b"m2"), (3, b"m3"), (2, b"m2")]
    assert all(isinstance(d, bytes) for _, _, d in inner.sent)
    assert faulty.counters() == {"inner_sends": 3, "fault_dropped": 0, "fault_delayed": 0}
    assert fault_threads() == []  # the scheduler starts only for a delayed message
    with pytest.raises(TypeError):
        faulty.send(2, "text")  # type: ignore[arg-type]


def test_set_peers_passes_a_membership_change_to_the_inner_transport_and_faults_apply_to_new_peers(wrapped):
    faulty, inner = wrapped
    with pytest.raises(NotImplementedError, match="RecordingTransport"):
        faulty.set_peers({1: "a", 2: "b", 4: "d"})  # an inner transport that cannot change its peers
    changes: list[Mapping[int, str]] = []
    inner.set_peers = changes.append  # type: ignore[method-assign]
    faulty.set_peers({1: "a", 2: "b", 4: "d"})
    assert changes == [{1: "a", 2: "b", 4: "d"}]
    faulty.set_faults(LinkFaults(drop_to={4}))
    faulty.send(4, b"to the new member")
    faulty.send(2, b"to an old one")
    assert [(p, d) for _, p, d in inner.sent] == [(2, b"to an old one")]


def test_drop_to_drops_only_those_peers(wrapped):
    faulty, inner = wrapped
    faulty.set_faults(LinkFaults(drop_to={2}))
    for i in range(10):
        faulty.send(2, b"to-2-%d" % i)
        faulty.send(3, b"to-3-%d" % i)
    assert inner.payloads(2) == []
    assert inner.payloads(3) == [b"to-3-%d" % i for i in range(10)]
    assert faulty.counters()["fault_dropped"] == 10
    faulty.set_faults(NO_FAULTS)
    faulty.send(2, b"healed")
    assert inner.payloads(2) == [b"healed"]


def test_loss_one_drops_everything_and_zero_nothing(wrapped):
    faulty, inner = wrapped
    faulty.set_faults(LinkFaults(loss=1.0))
    for _ in range(200):
        faulty.send(2, b"x")
    assert inner.sent == []
    faulty.set_faults(LinkFaults(loss=0.0))
    for _ in range(200):
        faulty.send(2, b"y")
    assert len(inner.sent) == 200
    assert faulty.counters()["fault_dropped"] == 200


def test_loss_half_is_deterministic_for_a_seed():
    def run(seed: int) -> list[bytes]:
        inner = RecordingTransport()
        with FaultyTransport(inner, seed=seed) as faulty:
            faulty.set_faults(LinkFaults(loss=0.5))
            for i in range(1000):
                faulty.send(2, b"%d" % i)
            dropped = faulty.counters()["fault_dropped"]
        assert dropped + len(inner.sent) == 1000
        return inner.payloads()

    kept = run(42)
    # One draw of random.Random(seed) per message; kept when the draw is >= loss.
    draws = random.Random(42)
    expected = [b"%d" % i for i in range(1000) if draws.random() >= 0.5]
    assert kept == expected
    assert 400 <= len(kept) <= 600
    assert run(42) == kept
    assert run(43) != kept


def test_delay_holds_messages_at_least_the_minimum_and_never_blocks(wrapped):
    faulty, inner = wrapped
    faulty.set_faults(LinkFaults(delay=(0.2, 0.3)))
    sent_at = {}
    for i in range(5):
        sent_at[i] = time.monotonic()
        faulty.send(2, b"%d" % i)
    assert time.monotonic() - sent_at[0] < 0.15  # the caller never waited for the delay
    assert inner.sent == []  # nothing can be due yet (checked well before the minimum)
    records = inner.wait_sent(5)
    for at, peer, data in records:
        assert peer == 2
        assert at - sent_at[int(data)] >= 0.2
    counters = faulty.counters()
    assert counters["fault_delayed"] == 5 and counters["fault_dropped"] == 0
    assert faulty.pending == 0
    assert [t.name for t in fault_threads()] == ["faults-1"]


def test_delayed_messages_follow_their_own_random_times():
    inner = RecordingTransport()
    with FaultyTransport(inner, seed=1) as faulty:
        faulty.set_faults(LinkFaults(delay=(0.0, 0.3)))
        for i in range(20):
            faulty.send(2, b"%d" % i)
        records = inner.wait_sent(20)
    order = [int(data) for _, _, data in records]
    assert sorted(order) == list(range(20))
    assert order != list(range(20))  # uniform delays reorder (the seed is fixed, so this is not a flake)


def test_set_faults_while_messages_are_pending(wrapped):
    faulty, inner = wrapped
    faulty.set_faults(LinkFaults(delay=(0.3, 0.3)))
    start = time.monotonic()
    faulty.send(2, b"old-2")
    faulty.send(3, b"old-3")
    assert faulty.pending == 2
    # Cut 2 and remove the delay: new messages go at once, the queued one to 3 keeps its time, the
    # queued one to 2 is dropped when due.
    faulty.set_faults(LinkFaults(drop_to={2}))
    faulty.send(3, b"new-3")
    faulty.send(2, b"new-2")
    assert inner.payloads() == [b"new-3"]
    records = inner.wait_sent(2)
    at, peer, data = records[1]
    assert (peer, data) == (3, b"old-3")
    assert at - start >= 0.3
    deadline = time.monotonic() + PATIENCE
    while faulty.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert faulty.pending == 0
    assert inner.payloads(2) == []
    counters = faulty.counters()
    assert counters["fault_delayed"] == 2
    assert counters["fault_dropped"] == 2  # new-2 at send time, old-2 when due


def test_set_faults_refuses_other_types(wrapped):
    faulty, _ = wrapped
    with pytest.raises(TypeError):
        faulty.set_faults({"loss": 0.5})  # type: ignore[arg-type]
    assert faulty.faults == NO_FAULTS


def test_close_discards_pending_joins_the_thread_and_ignores_later_sends():
    inner = RecordingTransport()
    faulty = FaultyTransport(inner, seed=3)
    faulty.start(5, {5: "a", 6: "b"}, lambda data: None)
    faulty.set_faults(LinkFaults(delay=(30.0, 30.0)))
    faulty.send(6, b"held")
    assert [t.name for t in fault_threads()] == ["faults-5"]
    thread = fault_threads()[0]
    started = time.monotonic()
    faulty.close()
    assert time.monotonic() - started < 5.0  # did not wait out the delay
    assert not thread.is_alive()
    assert inner.closed
    assert faulty.pending == 0
    faulty.set_faults(NO_FAULTS)
    faulty.send(6, b"after close")
    assert inner.sent == []
    assert faulty.counters() == {"inner_sends": 0, "fault_dropped": 0, "fault_delayed": 1}
    faulty.close()  # idempotent


def test_close_without_any_delayed_message_starts_no_thread():
    inner = RecordingTransport()
    faulty = FaultyTransport(inner, seed=3)
    faulty.close()
    assert inner.closed and fault_threads() == []


def test_a_failing_inner_send_on_the_scheduler_thread_is_logged_and_not_fatal(wrapped, caplog):
    faulty, inner = wrapped
    inner.raise_on = {2}
    faulty.set_faults(LinkFaults(delay=(0.01, 0.01)))
    faulty.send(2, b"fails")
    inner.wait_sent(1)
    faulty.send(3, b"still works")
    records = inner.wait_sent(2)
    assert records[1][1:] == (3, b"still works")
    assert any("delayed message to 2" in r.getMessage() for r in caplog.records)


def test_concurrent_senders_account_for_every_message(wrapped):
    faulty, inner = wrapped
    faulty.set_faults(LinkFaults(loss=0.5, delay=(0.0, 0.005)))
    threads = [threading.Thread(target=lambda: [faulty.send(2, b"x") for _ in range(250)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counters = faulty.counters()
    dropped, delayed = counters["fault_dropped"], counters["fault_delayed"]
    assert dropped + delayed == 1000
    inner.wait_sent(delayed)


def test_over_the_in_memory_network():
    received: list[bytes] = []
    arrived = threading.Event()

    def deliver(data: bytes) -> None:
        received.append(data)
        if data == b"last":
            arrived.set()

    with InMemoryNetwork(seed=1) as net:
        faulty = FaultyTransport(net.transport(1), seed=1)
        peer = net.transport(2)
        peer.start(2, {}, deliver)
        faulty.start(1, {}, lambda data: None)
        faulty.set_faults(LinkFaults(drop_to={2}))
        faulty.send(2, b"cut")
        faulty.set_faults(LinkFaults(delay=(0.05, 0.05)))
        faulty.send(2, b"last")
        assert arrived.wait(PATIENCE)
        assert received == [b"last"]
        assert net.stats.sent == 1
        faulty.close()
        peer.close()


# ---------------------------------------------------------------------------- member processes


def test_run_with_a_bad_faults_file_gives_one_clear_line(tmp_path):
    members = {1: "127.0.0.1:1", 2: "127.0.0.1:2", 3: "127.0.0.1:3"}
    cluster_file = write_cluster_file(str(tmp_path / "cluster.json"), members)
    (tmp_path / "1.json").write_text('{"delay": [1, 0]}')
    result = subprocess.run(
        [sys.executable, "-m", "raft_election", "run", "--cluster", cluster_file, "--id", "1", "--data-dir",
         str(tmp_path / "data"), "--json", "--faults", str(tmp_path)],
        capture_output=True, text=True, timeout=PATIENCE, check=False)
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "1.json") in lines[0] and "delay" in lines[0], lines


@pytest.fixture
def member_processes(tmp_path) -> Iterator[list[MemberProcesses]]:
    made: list[MemberProcesses] = []
    yield made
    for processes in made:
        processes.close()


def _set_faults_and_reload(p: MemberProcesses, faults_dir: str, faults: Mapping[int, LinkFaults]) -> None:
    """Write every member's faults file, SIGUSR2 each, and wait until each reported the new faults."""
    for node, node_faults in faults.items():
        write_faults(faults_path(faults_dir, node), node_faults)
    since = p.mark()
    for node in faults:
        p.signal(node, signal.SIGUSR2)
    for node, node_faults in faults.items():
        event = p.wait_for(lambda e, n=node: e.node == n and e.event == "faults", PATIENCE, since)
        assert "error" not in event.record, event.record
        assert LinkFaults.from_json(event.record["faults"]) == node_faults


def test_isolating_the_leader_with_faults_files_and_healing_it(tmp_path, member_processes):
    members = {i: f"127.0.0.1:{port}" for i, port in enumerate(free_ports(3), 1)}
    cluster_file = write_cluster_file(str(tmp_path / "cluster.json"), members, transport="udp",
                                      cluster="faults-test", election_timeout=(0.150, 0.300))
    faults_dir = tmp_path / "faults"
    faults_dir.mkdir()
    p = MemberProcesses(cluster_file, str(tmp_path), members, run_args=["--faults", str(faults_dir)])
    member_processes.append(p)
    p.start_all()
    for node in members:  # SIGUSR2 is only taken once the member reported it started
        started = p.wait_for(lambda e, n=node: e.node == n and e.event == "started", PATIENCE)
        assert started.record["faults"] == NO_FAULTS.to_json()
    first = p.wait_for(lambda e: e.event == "became_leader", PATIENCE)
    old = first.node
    others = [n for n in members if n != old]

    # Isolate the leader both ways: it drops to everyone, everyone drops to it.
    since = p.mark()
    isolation = {old: LinkFaults(drop_to=others), **{n: LinkFaults(drop_to=[old]) for n in others}}
    _set_faults_and_reload(p, str(faults_dir), isolation)
    second: MemberEvent = p.wait_for(
        lambda e: e.event == "became_leader" and e.node != old and e.term > first.term, PATIENCE, since)
    p.wait_for(lambda e: e.node == old and e.event == "lost_leadership" and e.term == first.term,
               PATIENCE, since)
    assert p.status(old)["counters"]["fault_dropped"] > 0

    # A bad file at a reload is reported and keeps the previous faults; the member carries on.
    bad = faults_path(faults_dir, old)
    with open(bad, "w", encoding="utf-8") as file:
        file.write('{"loss": "lots"}')
    mark = p.mark()
    p.signal(old, signal.SIGUSR2)
    event = p.wait_for(lambda e: e.node == old and e.event == "faults", PATIENCE, mark)
    assert "loss" in event.record["error"] and bad in event.record["error"]
    assert LinkFaults.from_json(event.record["faults"]) == isolation[old]
    assert p.alive(old)

    # Heal: clear every file; the old leader follows the new one.
    since = p.mark()
    _set_faults_and_reload(p, str(faults_dir), dict.fromkeys(members, NO_FAULTS))
    p.wait_for(member_follows(old, second.node), PATIENCE, since)
    assert p.status(old)["term"] >= second.term
    assert all(p.alive(n) for n in members)
