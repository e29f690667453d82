"""Waiting for the first due entry of a time-ordered heap: the core of the in-process delay schedulers.

The in-memory network and the nemesis fault injector each hold delayed messages in a heap ordered by due
time, and one scheduler thread per heap sends them when due.  Both wait the same way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

__all__ = ["wait_until_due"]


def wait_until_due(cond: threading.Condition, heap: Sequence[tuple[Any, ...]],
                   closed: Callable[[], bool]) -> Optional[float]:
    """With ``cond`` held, wait until the first entry of ``heap`` is due; return ``time.monotonic()`` then.

    Entries are tuples whose first item is the due time (``time.monotonic()`` seconds).  Waits on ``cond``
    while the heap is empty or its first entry is not due yet, so whoever adds an entry or closes must
    notify it.  Returns None as soon as ``closed()`` is true.
    """
    while not closed():
        if not heap:
            cond.wait()
            continue
        now = time.monotonic()
        wait = heap[0][0] - now
        if wait <= 0:
            return now
        cond.wait(wait)
    return None
