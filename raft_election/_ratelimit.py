"""Rate-limited logging for events that a peer (or an attacker) can make happen at wire speed."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Logs each key at most once per ``interval`` seconds, reporting how many were suppressed meanwhile.

    A flood of garbage datagrams must not turn into a flood of log lines.
    """

    def __init__(self, logger: logging.Logger, interval: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        """Log ``message % args`` at WARNING unless ``key`` was logged within the interval."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            self._logger.warning(message + " (%d more like it suppressed)", *args, suppressed)
        else:
            self._logger.warning(message, *args)
