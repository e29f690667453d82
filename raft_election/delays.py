"""Waiting for the first due entry of a time-ordered heap: the loop of an in-process delay scheduler.

A fault injector that delays messages (the in-memory network, the nemesis's fault-injecting transport,
or one of your own) holds them in a heap ordered by due time and sends each from one scheduler thread
when it is due.  :func:`wait_until_due` is that thread's wait: it sleeps on the injector's condition until
the earliest entry is due, is woken early by whoever adds an entry or closes, and never polls.

A scheduler thread looks like this (``cond`` guards ``heap`` and ``closed``)::

    while True:
        with cond:
            now = wait_until_due(cond, heap, lambda: closed)
            if now is None:
                return                                  # closed
            due = []
            while heap and heap[0][0] <= now:
                due.append(heapq.heappop(heap))
        for entry in due:
            send(entry)                                 # outside the lock

and a sender pushes ``(due_at, sequence, ...)`` and calls ``cond.notify_all()``, with ``cond`` held.
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

    Args:
        cond: the condition that guards ``heap``; the caller holds it (it is released while waiting).
        heap: a heap (``heapq``) of tuples whose first item is the due time, in ``time.monotonic()``
            seconds; put a unique sequence number second, so later items are never compared.
        closed: called with ``cond`` held; once it returns true the wait ends.

    Returns:
        ``time.monotonic()`` at the moment the first entry is due (entries due by then may all be taken),
        or None as soon as ``closed()`` is true.

    Waits on ``cond`` while the heap is empty or its first entry is not due yet, so whoever adds an entry
    or closes must notify it.
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
