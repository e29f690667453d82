"""Tests for transports.socketbase: what the UDP and ZeroMQ transports share, on a minimal transport.

The two real transports are tested end to end in test_udp_transport.py, test_zmq_transport.py and
test_death_probe.py; these tests pin the shared pieces down one by one, so a change to one of them fails
here, named, rather than somewhere in a socket test.
"""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Iterator, Mapping

import pytest

from raft_election.transport import DeliverFn
from transports.socketbase import CLOSED, Counters, SocketTransport, WakeUp

TIMEOUT = 10.0  # only to keep a broken test from hanging
LOGGER = "tests.fake_transport"
NAMES = ("delivered", "deliver_errors", "receive_errors", "death_evidence", "rejected_bad")


def readable(wakeup: WakeUp) -> bool:
    return bool(select.select([wakeup], [], [], 0)[0])


class FakeTransport(SocketTransport):
    """A socket transport with no socket: just the shared machinery, driven by the test."""

    _running = "running"
    _evidence_kind = "test_kind"
    _evidence_how = "a test"
    _delivered = "delivered"

    def __init__(self) -> None:
        super().__init__(logging.getLogger(LOGGER), NAMES)

    def start(self, node_id: int, peers: Mapping[int, str], deliver: DeliverFn) -> None:
        with self._lock:
            self._state = self._running
            self._node_id = node_id
        self._deliver = deliver
        self._wakeup = WakeUp()

    def send(self, peer_id: int, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        with self._lock:
            self._state = CLOSED
            thread = self._thread
        self._stop_receiving(thread)

    def _label(self) -> str:
        return f"fake {self._node_id}"

    def _can_probe(self, peer_id: int) -> bool:
        return peer_id in (2, 3)


@pytest.fixture
def wakeup() -> Iterator[WakeUp]:
    pair = WakeUp()
    yield pair
    pair.close()


@pytest.fixture
def transport() -> Iterator[FakeTransport]:
    fake = FakeTransport()
    yield fake
    fake.close()
    if fake._wakeup is not None:
        fake._wakeup.close()


def logged(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= level]


# ---------------------------------------------------------------------------------------- the wake-up pair


def test_wake_makes_the_read_end_readable_and_drain_empties_it(wakeup):
    assert not readable(wakeup)
    for _ in range(3):
        wakeup.wake()
    assert readable(wakeup)
    wakeup.drain()
    assert not readable(wakeup)


def test_wake_never_blocks_when_the_pair_is_full(wakeup):
    errors: list[BaseException] = []

    def flood() -> None:
        try:
            for _ in range(100_000):  # far more than the pair's buffer holds
                wakeup.wake()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert errors == []
    wakeup.drain()
    assert not readable(wakeup)
    wakeup.wake()
    assert readable(wakeup)


def test_wake_after_close_does_nothing_and_close_is_idempotent():
    pair = WakeUp()
    pair.close()
    pair.wake()  # must not raise, nor write to a closed (perhaps reused) descriptor
    pair.close()


# ---------------------------------------------------------------------------------------- counters


def test_counters_start_at_zero_and_a_snapshot_is_a_copy():
    counters = Counters(("a", "b"))
    counters.add("a")
    counters.add("a")
    snapshot = counters.snapshot()
    assert snapshot == {"a": 2, "b": 0}
    counters.add("b")
    assert snapshot == {"a": 2, "b": 0}
    assert counters.snapshot() == {"a": 2, "b": 1}


def test_an_unknown_counter_is_a_bug_not_a_new_key():
    counters = Counters(("a",))
    with pytest.raises(KeyError):
        counters.add("typo")
    assert counters.snapshot() == {"a": 0}


def test_counters_lose_no_update_under_concurrent_threads():
    counters = Counters(("n",))
    threads = [threading.Thread(target=lambda: [counters.add("n") for _ in range(10_000)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert counters.snapshot() == {"n": 40_000}


# ---------------------------------------------------------------------------------------- receive guards


def test_a_deliver_call_that_raises_is_counted_logged_once_and_receiving_goes_on(transport, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    delivered: list[bytes] = []

    def deliver(data: bytes) -> None:
        if data.startswith(b"boom"):
            raise RuntimeError(data.decode())
        delivered.append(data)

    transport.start(1, {1: "x"}, deliver)
    transport._deliver_many([b"boom 1", b"boom 2", b"fine"])  # a plain callable: one guarded call each
    assert delivered == [b"fine"]
    assert transport.counters() == {"delivered": 3, "deliver_errors": 2, "receive_errors": 0,
                                    "death_evidence": 0, "rejected_bad": 0}
    assert logged(caplog) == ["fake 1: deliver callback raised RuntimeError('boom 1'); receiving goes on"]


def test_rejected_input_is_counted_under_its_reason_and_logged_with_its_arguments(transport, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    transport.start(4, {4: "x"}, lambda data: None)
    transport._reject("bad", "a %d-byte thing from %s", 9, "somewhere")
    transport._reject("bad", "a %d-byte thing from %s", 10, "elsewhere")
    assert transport.counters()["rejected_bad"] == 2
    assert logged(caplog) == ["fake 4: dropped a 9-byte thing from somewhere"]


def test_evidence_is_reported_counted_and_a_raising_callback_does_not_stop_the_rest(transport, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    reports: list[tuple[int, str]] = []

    def report(peer_id: int, kind: str) -> None:
        reports.append((peer_id, kind))
        if peer_id == 2:
            raise ValueError("callback bug")

    transport.start(1, {1: "x", 2: "y", 3: "z"}, lambda data: None)
    transport.watch(report)
    transport._report_evidence([2, 3])
    assert reports == [(2, "test_kind"), (3, "test_kind")]
    assert transport.counters()["death_evidence"] == 2
    lines = logged(caplog)
    assert "fake 1: a test of node 2: its process is gone" in lines
    assert "fake 1: the death evidence callback raised ValueError('callback bug'); receiving goes on" in lines


def test_evidence_without_a_callback_is_still_counted(transport):
    transport.start(1, {1: "x", 2: "y"}, lambda data: None)
    transport._report_evidence([2])
    assert transport.counters()["death_evidence"] == 1


def test_no_evidence_is_reported_once_the_transport_is_closing(transport):
    reports: list[tuple[int, str]] = []
    transport.start(1, {1: "x", 2: "y"}, lambda data: None)
    transport.watch(lambda peer_id, kind: reports.append((peer_id, kind)))
    transport.close()
    transport._report_evidence([2])
    assert reports == []
    assert transport.counters()["death_evidence"] == 0


def test_receive_errors_are_counted_and_logged(transport, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    transport.start(1, {1: "x"}, lambda data: None)
    transport._receive_error(OSError("broken"), 0.0)
    transport._receive_error(OSError("broken"), 0.0)
    assert transport.counters()["receive_errors"] == 2
    assert logged(caplog) == ["fake 1: receive error (OSError('broken')); receiving goes on"]


def test_a_receive_loop_that_ends_before_close_marks_the_transport_failed(transport, caplog):
    caplog.set_level(logging.ERROR, logger=LOGGER)
    transport.start(5, {5: "x"}, lambda data: None)
    assert not transport.failed
    transport._receive_ended("the socket broke")
    assert transport.failed
    assert logged(caplog, logging.ERROR) == [
        "fake 5: the receive thread ended before close() (the socket broke); this node receives nothing more"]


def test_a_receive_loop_that_ends_after_close_is_not_a_failure(transport, caplog):
    caplog.set_level(logging.ERROR, logger=LOGGER)
    transport.start(5, {5: "x"}, lambda data: None)
    transport.close()
    transport._receive_ended()
    assert not transport.failed
    assert transport.closed
    assert logged(caplog, logging.ERROR) == []


def test_stop_receiving_wakes_the_waiting_receive_thread_and_joins_it(transport):
    transport.start(1, {1: "x"}, lambda data: None)
    wakeup = transport._wakeup
    assert wakeup is not None

    def receive_loop() -> None:
        while not transport._stopping.is_set():
            select.select([wakeup], [], [])  # no timeout: only a wake-up ends this wait
            wakeup.drain()

    thread = threading.Thread(target=receive_loop, daemon=True)
    thread.start()
    results: list[bool] = []
    stopper = threading.Thread(target=lambda: results.append(transport._stop_receiving(thread)), daemon=True)
    stopper.start()
    stopper.join(TIMEOUT)
    assert not stopper.is_alive(), "the receive thread was not woken"
    assert results == [True]
    assert not thread.is_alive()


def test_stop_receiving_on_the_receive_thread_itself_does_not_wait_for_itself(transport):
    transport.start(1, {1: "x"}, lambda data: None)
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(transport._stop_receiving(thread)), daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert results == [False]
    assert transport._stopping.is_set()


# ---------------------------------------------------------------------------------------- probe requests


def test_probe_requests_are_queued_in_order_once_each_and_wake_the_receive_thread(transport):
    transport.probe(2)  # before start: ignored
    transport.start(1, {1: "x", 2: "y", 3: "z"}, lambda data: None)
    assert transport._wakeup is not None
    assert not readable(transport._wakeup)
    for peer_id in (3, 2, 3, 7, 1):  # 7 and 1 (this node) cannot be probed
        transport.probe(peer_id)
    assert readable(transport._wakeup)
    assert transport._take_probe_requests() == [3, 2]
    assert transport._take_probe_requests() == []
    transport.close()
    transport.probe(2)  # after close: ignored
    assert transport._take_probe_requests() == []
