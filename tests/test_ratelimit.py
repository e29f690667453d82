"""Tests for raft_election.ratelimit: a flood of one kind of event is one log line per interval."""

from __future__ import annotations

import logging

import pytest

from raft_election.ratelimit import RateLimitedLog

LOGGER = "tests.ratelimit"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_a_key_is_logged_once_per_interval_and_the_next_line_counts_the_suppressed(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    clock = Clock()
    limited = RateLimitedLog(logging.getLogger(LOGGER), interval=5.0, clock=clock)
    limited.warning("bad", "dropped %d", 1)
    for n in range(2, 5):
        clock.now += 1.0
        limited.warning("bad", "dropped %d", n)
    assert lines(caplog) == ["dropped 1"]
    clock.now = 105.0  # five seconds after the last logged line
    limited.warning("bad", "dropped %d", 5)
    assert lines(caplog) == ["dropped 1", "dropped 5 (3 more like it suppressed)"]
    clock.now += 4.9
    limited.warning("bad", "dropped %d", 6)
    assert len(lines(caplog)) == 2


def test_keys_never_suppress_each_other(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    limited = RateLimitedLog(logging.getLogger(LOGGER), interval=5.0, clock=Clock())
    limited.warning("oversized", "oversized from %s", "a")
    limited.warning("deliver", "deliver raised %r", ValueError("x"))
    limited.warning("oversized", "oversized from %s", "b")
    assert lines(caplog) == ["oversized from a", "deliver raised ValueError('x')"]
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == LOGGER)
