"""Rate-limited logging for events that a peer (or an attacker) can make happen at wire speed.

Public, for the library and for transports, the project's own and anyone else's: a transport that logs what
it drops (oversized datagrams, a failing ``deliver`` callback, refused sends) logs through a
:class:`RateLimitedLog`, so a flood of bad input costs one log line per kind every few seconds, not one per
datagram.  The node uses one for the bad input the codec rejects.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Logs each key at most once per ``interval`` seconds, reporting how many were suppressed meanwhile.

    A flood of garbage datagrams must not turn into a flood of log lines.  Keys name a kind of event (for
    example ``"rejected_oversized"``, or ``f"send_{errno}"``); events of different keys never suppress each
    other.  The first event of a key is logged at once; later ones within ``interval`` seconds of the last
    logged one are only counted, and the next one logged after that says how many were suppressed.

    Args:
        logger: where the lines go (their records carry this logger's name).
        interval: the shortest time between two lines of one key, in seconds.
        clock: the time source, ``time.monotonic`` unless a test injects another.

    Safe to call from any thread; the lock is never held while logging.
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
