"""Tests for transports.memory: delivery, fault injection, counters and lifecycle of InMemoryNetwork.

Nothing here synchronises on sleeps.  To prove a message was *not* delivered, a marker is sent afterwards
on a path that is delivered in order (delay 0, no reordering: ``inject`` or a reachable peer) and the test
waits for the marker; or the counters, which are updated before a message is handed over, are checked.
To hold a message in flight for as long as a test needs, the delivery thread is stalled inside a
callback of a helper node (``stalled``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time

import attrs
import pytest

from raft_election.errors import TransportError
from tests.transporttools import received_until
from transports.memory import InMemoryNetwork, MemoryTransport, NetworkStats

TIMEOUT = 5.0  # only to keep a broken test from hanging; never reached when the code works
MARKER = b"--marker--"
STALL_ID = 999


class Inbox:
    """A started transport whose deliveries land in a queue, with the thread each one ran on."""

    def __init__(self, net: InMemoryNetwork, node_id: int) -> None:
        self.net = net
        self.node_id = node_id
        self.received: queue.Queue[bytes] = queue.Queue()
        self.threads: list[threading.Thread] = []
        self.transport = net.transport(node_id)
        self.transport.start(node_id, {node_id: f"mem:{node_id}"}, self.deliver)

    def deliver(self, data: bytes) -> None:
        self.threads.append(threading.current_thread())
        self.received.put(data)

    def send(self, dst: int, data: bytes) -> None:
        self.transport.send(dst, data)

    def get(self) -> bytes:
        return self.received.get(timeout=TIMEOUT)

    def drain(self) -> list[bytes]:
        """Everything delivered before a marker injected now (valid while delay is 0 and no reordering)."""
        self.net.inject(self.node_id, MARKER)
        return self.until(MARKER)

    def until(self, marker: bytes) -> list[bytes]:
        return received_until(self.get, marker)


@contextlib.contextmanager
def stalled(net: InMemoryNetwork):
    """Keep the delivery thread busy in a callback until the block exits, so messages stay in flight."""
    entered, release = threading.Event(), threading.Event()

    def deliver(data: bytes) -> None:
        entered.set()
        release.wait(TIMEOUT)

    net.transport(STALL_ID).start(STALL_ID, {}, deliver)
    net.inject(STALL_ID, b"stall")
    assert entered.wait(TIMEOUT)
    try:
        yield
    finally:
        release.set()


@pytest.fixture
def net():
    network = InMemoryNetwork(seed=1)
    yield network
    network.close()


def thread_names() -> set[str]:
    return {t.name for t in threading.enumerate()}


# ---------------------------------------------------------------------------------------- plain delivery


def test_delivers_both_ways_between_two_transports(net):
    a, b = Inbox(net, 1), Inbox(net, 2)
    a.send(2, b"hello")
    assert b.get() == b"hello"
    b.send(1, b"world")
    assert a.get() == b"world"
    stats = net.stats
    assert (stats.sent, stats.delivered, stats.in_flight) == (2, 2, 0)


def test_delivers_among_three_transports(net):
    inboxes = {i: Inbox(net, i) for i in (1, 2, 3)}
    for src, sender in inboxes.items():
        for dst in inboxes:
            if src != dst:
                sender.send(dst, f"{src}->{dst}".encode())
    for dst, inbox in inboxes.items():
        got = {inbox.get(), inbox.get()}
        assert got == {f"{src}->{dst}".encode() for src in inboxes if src != dst}


def test_without_delay_or_reordering_delivery_is_in_send_order(net):
    a, b = Inbox(net, 1), Inbox(net, 2)
    sent = [str(i).encode() for i in range(100)]
    for data in sent:
        a.send(2, data)
    assert b.drain() == sent


def test_delay_holds_messages_back():
    with InMemoryNetwork(seed=1, delay=(0.05, 0.05)) as net:
        a, b = Inbox(net, 1), Inbox(net, 2)
        start = time.monotonic()
        a.send(2, b"x")
        assert b.get() == b"x"
        assert time.monotonic() - start >= 0.05


def test_send_copies_bytearray_and_memoryview(net):
    a, b = Inbox(net, 1), Inbox(net, 2)
    buf, backing = bytearray(b"abc"), bytearray(b"xyz")
    with stalled(net):
        a.send(2, buf)  # type: ignore[arg-type]
        a.send(2, memoryview(backing))  # type: ignore[arg-type]
        buf[:] = b"ABC"
        backing[:] = b"XYZ"
    got = [b.get(), b.get()]
    assert got == [b"abc", b"xyz"]
    assert all(type(data) is bytes for data in got)


def test_send_rejects_data_that_is_not_bytes(net):
    a = Inbox(net, 1)
    with pytest.raises(TypeError, match="bytes"):
        a.send(2, "text")  # type: ignore[arg-type]


def test_send_to_unknown_or_unstarted_peer_is_dropped_and_counted(net):
    a = Inbox(net, 1)
    net.transport(2)  # created, never started
    a.send(42, b"nobody")
    a.send(2, b"not listening")
    assert net.stats.dropped_closed == 2
    assert net.stats.in_flight == 0


# ---------------------------------------------------------------------------------------- threading


def test_deliver_runs_on_the_network_thread_never_inside_send(net):
    send_returned = threading.Event()
    seen: queue.Queue[tuple[threading.Thread, bool]] = queue.Queue()

    def deliver(data: bytes) -> None:
        # If send() delivered re-entrantly, send_returned could not be set yet: this wait would time out.
        seen.put((threading.current_thread(), send_returned.wait(TIMEOUT)))

    net.transport(2).start(2, {}, deliver)
    a = Inbox(net, 1)
    a.send(2, b"x")
    send_returned.set()
    thread, send_had_returned = seen.get(timeout=TIMEOUT)
    assert send_had_returned
    assert thread is not threading.current_thread()
    assert thread.name == net.name


def test_deliver_runs_outside_the_lock_so_callbacks_can_send_and_change_faults(net):
    a = Inbox(net, 1)
    replier = net.transport(2)

    def deliver(data: bytes) -> None:
        net.block(3, 1)  # would deadlock if called with the network's lock held
        replier.send(1, b"re:" + data)

    replier.start(2, {}, deliver)
    a.send(2, b"ping")
    assert a.get() == b"re:ping"
    assert not net.can_reach(3, 1)


def test_raising_deliver_callback_is_logged_and_does_not_stop_delivery(net, caplog):
    caplog.set_level(logging.ERROR, logger="transports.memory")
    received: queue.Queue[bytes] = queue.Queue()

    def deliver(data: bytes) -> None:
        if data == b"boom":
            raise RuntimeError("callback failed")
        received.put(data)

    net.transport(2).start(2, {}, deliver)
    a = Inbox(net, 1)
    a.send(2, b"boom")
    a.send(2, b"after")
    assert received.get(timeout=TIMEOUT) == b"after"
    assert net.stats.deliver_errors == 1
    [record] = [r for r in caplog.records if r.name == "transports.memory"]
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    assert "node 2" in record.getMessage()


# ---------------------------------------------------------------------------------------- inject


def test_inject_delivers_raw_bytes_on_the_network_thread(net):
    b = Inbox(net, 2)
    garbage = b"\x00\xff\xfe not a message"
    net.inject(2, garbage)
    net.inject(2, bytearray(b"\x01\x02"))
    assert b.get() == garbage
    second = b.get()
    assert second == b"\x01\x02" and type(second) is bytes
    assert all(t.name == net.name for t in b.threads)
    assert net.stats.injected == 2


def test_inject_bypasses_faults_but_not_a_missing_receiver(net):
    b = Inbox(net, 2)
    net.isolate(2)
    net.drop_rate = 1.0
    net.inject(2, b"raw")
    assert b.get() == b"raw"
    net.inject(7, b"raw")
    assert net.stats.dropped_closed == 1


# ---------------------------------------------------------------------------------------- partitions


def test_partition_cuts_both_directions_and_keeps_groups_connected(net):
    a, b, c = Inbox(net, 1), Inbox(net, 2), Inbox(net, 3)
    net.partition({1, 2}, [3])
    assert net.can_reach(1, 2) and net.can_reach(2, 1)
    assert not net.can_reach(1, 3) and not net.can_reach(3, 1)
    a.send(3, b"1->3")
    c.send(1, b"3->1")
    a.send(2, b"1->2")
    b.send(1, b"2->1")
    assert c.drain() == []
    assert a.drain() == [b"2->1"]
    assert b.drain() == [b"1->2"]
    assert net.stats.dropped_partition == 2


def test_ids_in_no_group_are_cut_off_from_everyone(net):
    a, b, c = Inbox(net, 1), Inbox(net, 2), Inbox(net, 3)
    net.partition({1, 2})
    c.send(1, b"3->1")
    c.send(2, b"3->2")
    a.send(3, b"1->3")
    a.send(2, b"1->2")
    assert c.drain() == []
    assert a.drain() == []
    assert b.drain() == [b"1->2"]
    assert net.stats.dropped_partition == 3


def test_partition_replaces_the_previous_one(net):
    a, b = Inbox(net, 1), Inbox(net, 2)
    net.partition({1}, {2})
    assert not net.can_reach(1, 2)
    net.partition({1, 2})
    a.send(2, b"x")
    assert b.drain() == [b"x"]


def test_partition_rejects_a_node_in_two_groups(net):
    with pytest.raises(ValueError, match="partition"):
        net.partition({1, 2}, {2, 3})


def test_isolate_cuts_a_node_both_ways_and_keeps_other_cuts(net):
    a, b, c = Inbox(net, 1), Inbox(net, 2), Inbox(net, 3)
    net.block(1, 2)
    net.isolate(3)
    c.send(1, b"3->1")
    a.send(3, b"1->3")
    a.send(2, b"1->2")  # still blocked
    b.send(1, b"2->1")
    assert a.drain() == [b"2->1"]
    assert b.drain() == []
    assert c.drain() == []
    assert net.stats.dropped_partition == 3
    net.rejoin(3)
    c.send(1, b"back")
    assert a.drain() == [b"back"]
    assert not net.can_reach(1, 2)


def test_block_is_one_way_and_unblock_restores(net):
    a, b = Inbox(net, 1), Inbox(net, 2)
    net.block(1, 2)
    assert not net.can_reach(1, 2)
    assert net.can_reach(2, 1)
    a.send(2, b"1->2")
    b.send(1, b"2->1")
    assert b.drain() == []
    assert a.drain() == [b"2->1"]
    net.unblock(1, 2)
    a.send(2, b"again")
    assert b.drain() == [b"again"]


def test_heal_removes_every_cut_but_keeps_random_settings(net):
    inboxes = {i: Inbox(net, i) for i in (1, 2, 3)}
    net.partition({1}, {2, 3})
    net.isolate(2)
    net.block(3, 1)
    net.drop_rate = 0.25
    net.heal()
    assert net.drop_rate == 0.25
    net.drop_rate = 0.0
    for src, sender in inboxes.items():
        for dst in inboxes:
            if src != dst:
                assert net.can_reach(src, dst)
                sender.send(dst, b"x")
    for inbox in inboxes.values():
        assert inbox.drain() == [b"x", b"x"]
    assert net.stats.dropped_partition == 0


@pytest.mark.parametrize("delay", [(0.0, 0.0), (0.01, 0.01)])
def test_message_in_flight_when_a_partition_starts_is_dropped(delay):
    with InMemoryNetwork(seed=1, delay=delay) as net:
        a, b, c = Inbox(net, 1), Inbox(net, 2), Inbox(net, 3)
        with stalled(net):
            a.send(2, b"in flight")
            assert net.stats.in_flight == 1
            net.partition({1}, {2, 3})
            c.send(2, b"marker")  # same delay, sent later: due after the message above
        assert b.until(b"marker") == []
        assert net.stats.dropped_partition == 1


def test_message_in_flight_is_delivered_if_the_partition_heals_first(net):
    a, b = Inbox(net, 1), Inbox(net, 2)
    with stalled(net):
        a.send(2, b"survivor")
        net.isolate(2)
        net.heal()
    assert b.drain() == [b"survivor"]


# ---------------------------------------------------------------------------------------- random faults


def test_drop_rate_one_drops_everything():
    with InMemoryNetwork(seed=5, drop_rate=1.0) as net:
        a, b = Inbox(net, 1), Inbox(net, 2)
        for i in range(20):
            a.send(2, str(i).encode())
        assert net.stats.dropped_random == 20
        assert b.drain() == []


def run_with_drops(seed: int) -> tuple[int, list[bytes]]:
    with InMemoryNetwork(seed=seed, drop_rate=0.5) as net:
        a, b = Inbox(net, 1), Inbox(net, 2)
        for i in range(1000):
            a.send(2, str(i).encode())
        return net.stats.dropped_random, b.drain()


def test_drop_rate_half_drops_a_plausible_fraction_reproducibly_with_a_seed():
    dropped, delivered = run_with_drops(11)
    assert 400 <= dropped <= 600  # binomial(1000, 0.5): more than 6 standard deviations of slack
    assert dropped + len(delivered) == 1000
    assert run_with_drops(11) == (dropped, delivered)  # same seed: exactly the same messages dropped
    assert run_with_drops(12)[1] != delivered


def test_changing_drop_rate_takes_effect_immediately(net):
    a, b = Inbox(net, 1), Inbox(net, 2)
    a.send(2, b"kept")
    net.drop_rate = 1.0
    a.send(2, b"dropped")
    net.drop_rate = 0.0
    a.send(2, b"kept again")
    assert b.drain() == [b"kept", b"kept again"]


def test_duplicate_rate_one_delivers_two_copies():
    with InMemoryNetwork(seed=3, duplicate_rate=1.0) as net:
        a, b = Inbox(net, 1), Inbox(net, 2)
        a.send(2, b"twice")
        assert b.drain() == [b"twice", b"twice"]
        assert net.stats.duplicated == 1


def test_reorder_lets_later_messages_overtake_for_a_fixed_seed():
    # With delay 0 and no reordering delivery is FIFO (tested above), so any inversion comes from reordering.
    with InMemoryNetwork(seed=4, reorder_rate=1.0) as net:
        a, b = Inbox(net, 1), Inbox(net, 2)
        sent = [str(i).encode() for i in range(30)]
        for data in sent:
            a.send(2, data)
        got = [b.get() for _ in sent]
        assert sorted(got) == sorted(sent)
        assert got != sent


def test_counters_account_for_every_copy():
    with InMemoryNetwork(seed=8, drop_rate=0.3, duplicate_rate=0.3) as net:
        inboxes = {i: Inbox(net, i) for i in (1, 2, 3)}
        net.block(1, 3)
        for n in range(60):
            for src, sender in inboxes.items():
                for dst in inboxes:
                    if src != dst:
                        sender.send(dst, str(n).encode())
        for inbox in inboxes.values():
            inbox.drain()
        s = net.stats
        assert s.in_flight == 0
        assert s.dropped_partition == 60 and s.dropped_random > 0 and s.duplicated > 0
        assert s.sent + s.injected + s.duplicated == (
            s.delivered + s.dropped_partition + s.dropped_random + s.dropped_closed + s.in_flight
        )


# ---------------------------------------------------------------------------------------- lifecycle


def test_closed_transport_gets_nothing_and_sends_to_it_are_dropped_and_counted(net):
    a, b, c = Inbox(net, 1), Inbox(net, 2), Inbox(net, 3)
    with stalled(net):
        a.send(2, b"in flight to 2")
        b.transport.close()  # the delivery thread is busy elsewhere: must not wait for it
        a.send(3, b"marker")
    assert c.until(b"marker") == []
    assert net.stats.dropped_closed == 1  # dropped at delivery time
    a.send(2, b"after close")
    assert net.stats.dropped_closed == 2  # dropped at send time
    b.transport.send(1, b"from a closed transport")
    assert net.stats.dropped_closed == 3
    assert a.drain() == []
    assert b.received.empty()
    b.transport.close()  # idempotent
    assert b.transport.closed


def test_transport_close_waits_for_a_running_deliver_call(net):
    entered, release = threading.Event(), threading.Event()
    finished: list[bool] = []

    def deliver(data: bytes) -> None:
        entered.set()
        release.wait(TIMEOUT)
        finished.append(True)

    target = net.transport(2)
    target.start(2, {}, deliver)
    Inbox(net, 1).send(2, b"x")
    assert entered.wait(TIMEOUT)
    closed = threading.Event()
    finished_when_close_returned: list[bool] = []

    def closer() -> None:
        target.close()
        finished_when_close_returned.append(bool(finished))
        closed.set()

    thread = threading.Thread(target=closer)
    thread.start()
    assert not closed.wait(0.05)  # still inside close(), waiting for the callback
    release.set()
    assert closed.wait(TIMEOUT)
    thread.join(TIMEOUT)
    assert finished_when_close_returned == [True]


def test_transport_can_close_itself_from_its_own_callback(net):
    got: queue.Queue[bytes] = queue.Queue()
    target = net.transport(2)

    def deliver(data: bytes) -> None:
        target.close()
        got.put(data)

    target.start(2, {}, deliver)
    a = Inbox(net, 1)
    a.send(2, b"last")
    assert got.get(timeout=TIMEOUT) == b"last"
    a.send(2, b"too late")
    assert net.stats.dropped_closed == 1


def test_restarted_node_receives_messages_in_flight_to_its_id(net):
    a, old = Inbox(net, 1), Inbox(net, 2)
    with stalled(net):
        a.send(2, b"for whoever is node 2")
        old.transport.close()
        new = Inbox(net, 2)
    assert new.get() == b"for whoever is node 2"
    assert old.received.empty()


def test_message_in_flight_to_a_restarting_node_not_yet_started_is_dropped(net):
    a, old = Inbox(net, 1), Inbox(net, 2)
    with stalled(net):
        a.send(2, b"for node 2")
        old.transport.close()
        new = net.transport(2)  # created but not started: not listening yet
    a.send(1, b"marker")  # to itself: never cut off, same delay, sent later
    assert a.until(b"marker") == []
    assert net.stats.dropped_closed == 1
    assert net.stats.deliver_errors == 0
    assert "created" in repr(new)


def test_second_live_transport_for_an_id_is_rejected(net):
    first = net.transport(1)
    with pytest.raises(TransportError, match="node 1"):
        net.transport(1)
    first.close()
    assert isinstance(net.transport(1), MemoryTransport)


def test_start_checks_the_node_id_and_runs_once(net):
    transport = net.transport(1)
    with pytest.raises(TransportError, match="node 1"):
        transport.start(2, {}, lambda data: None)
    transport.start(1, {1: "ignored"}, lambda data: None)
    with pytest.raises(TransportError, match="already started"):
        transport.start(1, {}, lambda data: None)
    transport.close()
    with pytest.raises(TransportError, match="closed"):
        transport.start(1, {}, lambda data: None)


def test_network_close_joins_its_thread_and_discards_messages_in_flight():
    net = InMemoryNetwork(seed=1)
    a, b = Inbox(net, 1), Inbox(net, 2)
    a.send(2, b"x")
    assert b.get() == b"x"
    assert net.name in thread_names()
    net.delay = (60.0, 60.0)
    a.send(2, b"never")
    assert net.stats.in_flight == 1
    net.close()
    assert net.name not in thread_names()
    stats = net.stats
    assert (stats.in_flight, stats.dropped_closed) == (0, 1)
    net.close()  # idempotent
    a.send(2, b"after")
    assert net.stats.dropped_closed == 2
    with pytest.raises(TransportError, match="closed"):
        net.transport(3)
    assert net.closed


def test_network_is_a_context_manager_that_leaves_no_thread():
    with InMemoryNetwork() as net:
        a, b = Inbox(net, 1), Inbox(net, 2)
        a.send(2, b"x")
        assert b.get() == b"x"
    assert net.closed
    assert net.name not in thread_names()


def test_network_close_from_a_deliver_callback_does_not_hang():
    net = InMemoryNetwork()
    done = threading.Event()

    def deliver(data: bytes) -> None:
        net.close()
        done.set()

    net.transport(1).start(1, {}, deliver)
    net.inject(1, b"x")
    assert done.wait(TIMEOUT)
    for thread in [t for t in threading.enumerate() if t.name == net.name]:
        thread.join(TIMEOUT)  # the thread exits once the callback that closed the network returns
    assert net.name not in thread_names()


# ---------------------------------------------------------------------------------------- settings


INVALID_SETTINGS = [
    ("drop_rate", -0.1),
    ("drop_rate", 1.5),
    ("drop_rate", math.nan),
    ("drop_rate", "0.5"),
    ("duplicate_rate", 2),
    ("duplicate_rate", True),
    ("reorder_rate", -1),
    ("delay", (-0.1, 0.1)),
    ("delay", (0.2, 0.1)),
    ("delay", (0.1,)),
    ("delay", (0.0, math.inf)),
    ("delay", 0.1),
]


@pytest.mark.parametrize(("field", "value"), INVALID_SETTINGS)
def test_invalid_settings_raise_value_error_naming_the_field(net, field, value):
    with pytest.raises(ValueError, match=field):
        InMemoryNetwork(**{field: value})
    before = getattr(net, field)
    with pytest.raises(ValueError, match=field):
        setattr(net, field, value)
    assert getattr(net, field) == before


def test_valid_settings_are_stored():
    settings = {"delay": [0, 1], "drop_rate": 1, "duplicate_rate": 0.5, "reorder_rate": 0}
    with InMemoryNetwork(**settings) as net:  # ints and a list are accepted and normalised
        assert net.delay == (0.0, 1.0)
        assert (net.drop_rate, net.duplicate_rate, net.reorder_rate) == (1.0, 0.5, 0.0)


def test_stats_is_an_immutable_snapshot(net):
    a, b = Inbox(net, 1), Inbox(net, 2)
    snapshot = net.stats
    assert isinstance(snapshot, NetworkStats)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        snapshot.sent = 5  # type: ignore[misc]
    a.send(2, b"x")
    assert b.get() == b"x"
    assert snapshot.sent == 0
    assert net.stats.sent == 1


def test_reprs_show_ids_and_state(net):
    a = Inbox(net, 1)
    created = net.transport(2)
    net.partition({1}, {2})
    text = repr(net)
    assert net.name in text and "nodes=[1, 2]" in text and "partition=[[1], [2]]" in text
    assert "node_id=1" in repr(a.transport) and "started" in repr(a.transport)
    assert "created" in repr(created)
    created.close()
    assert "closed" in repr(created)
    net.close()
    assert "closed" in repr(net)
