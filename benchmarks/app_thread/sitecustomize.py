"""An application beside every RaftNode of a process, as users run members (SPEC §8): a ``sitecustomize``.

A member measured alone (only its node's threads) hides what users see: a real application shares the
interpreter, the GIL and the cores with the node.  Put this directory first on ``PYTHONPATH`` of a member
process and Python imports this module at start-up; with the variables below set, every
:class:`~raft_election.node.RaftNode` the process starts gets, once started:

* ``RE_APP_READ_MS=1``: a thread that reads ``node.is_leader`` every that many milliseconds, as an
  application that checks its leadership before each step does;
* ``RE_APP_GIL_MS=120``: a thread that, at random moments, holds the GIL for about that many milliseconds in
  one C call (a big-integer multiplication, sized at start-up to take that long), as an application doing a
  long computation in a C extension; ``RE_APP_GIL_EVERY=1-2`` gives the range of seconds between two holds
  (default 1-2) and ``RE_APP_SEED`` seeds their moments (default: the process id).

With none of them set (or set to 0) nothing is loaded, so the variables decide and the same directory can
stay on the path.  It changes nothing in the library: it wraps ``RaftNode.start`` and ``RaftNode.stop`` of
whichever ``raft_election`` the process imports, so one tree and another are measured with the same
application.  :mod:`benchmarks.appload` builds the environment.
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any, Callable

#: Reads of ``is_leader`` made so far by every reader thread of this process (for tests).
reads = 0
#: How long each GIL hold took, in seconds (for tests and logs).
holds: list[float] = []


def _setting(name: str, default: float = 0.0) -> float:
    text = os.environ.get(name, "").strip()
    return float(text) if text else default


def _every() -> tuple[float, float]:
    text = os.environ.get("RE_APP_GIL_EVERY", "").strip() or "1-2"
    low, _, high = text.partition("-")
    return float(low), float(high or low)


def _operand(hold_seconds: float) -> int:
    """An integer whose square takes about ``hold_seconds`` to compute, measured on this machine."""
    bits = 1 << 16
    while True:
        value = (1 << bits) - 1
        began = time.perf_counter()
        _ = value * value
        took = time.perf_counter() - began
        if took >= hold_seconds / 8 or bits >= 1 << 30:
            break
        bits *= 2
    for _ in range(2):  # Karatsuba: the time grows as bits ** log2(3); two steps towards the target
        bits = max(64, int(bits * (hold_seconds / max(took, 1e-9)) ** (1 / 1.585)))
        value = (1 << bits) - 1
        began = time.perf_counter()
        _ = value * value
        took = time.perf_counter() - began
    return value


#: The kernel name these threads take (Linux), so that a benchmark can tell their CPU time from the member's
#: (``raft_election.bench.procstat.APPLICATION_THREAD``).
THREAD_NAME = "re-application"


def _name_thread() -> None:
    """Give the calling thread the kernel name :data:`THREAD_NAME` (``prctl(PR_SET_NAME)``; Linux only)."""
    try:
        import ctypes  # noqa: PLC0415 (only here)

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, THREAD_NAME.encode("ascii"), 0, 0, 0)  # 15: PR_SET_NAME
    except (OSError, AttributeError):
        pass  # not Linux: the thread keeps the process's name, and its CPU counts as the member's


def _read_leadership(node: Any, period: float, stopped: threading.Event) -> None:
    global reads  # noqa: PLW0603 (a process-wide figure)
    _name_thread()
    while not stopped.is_set():
        _ = node.is_leader
        reads += 1
        time.sleep(period)


def _hold_gil(hold: float, every: tuple[float, float], seed: int, stopped: threading.Event) -> None:
    _name_thread()
    operand = _operand(hold)
    rng = random.Random(seed)
    while not stopped.wait(rng.uniform(*every)):
        began = time.perf_counter()
        _ = operand * operand  # one C call: no other thread of this process runs meanwhile
        holds.append(time.perf_counter() - began)


def _install() -> None:
    read_ms = _setting("RE_APP_READ_MS")
    gil_ms = _setting("RE_APP_GIL_MS")
    if read_ms <= 0 and gil_ms <= 0:
        return
    every = _every()
    seed = int(_setting("RE_APP_SEED", float(os.getpid())))
    from raft_election.node import RaftNode  # noqa: PLC0415 (only when an application is asked for)

    original_start: Callable[..., Any] = RaftNode.start
    original_stop: Callable[..., Any] = RaftNode.stop
    stops: dict[int, threading.Event] = {}

    def start(self: Any) -> Any:
        result = original_start(self)
        if id(self) not in stops:
            stopped = stops[id(self)] = threading.Event()
            if read_ms > 0:
                threading.Thread(target=_read_leadership, args=(self, read_ms / 1000, stopped), daemon=True,
                                 name="app-reader").start()
            if gil_ms > 0:
                threading.Thread(target=_hold_gil, args=(gil_ms / 1000, every, seed, stopped), daemon=True,
                                 name="app-gil").start()
        return result

    def stop(self: Any) -> Any:
        stopped = stops.get(id(self))
        if stopped is not None:
            stopped.set()
        return original_stop(self)

    RaftNode.start = start  # type: ignore[method-assign]
    RaftNode.stop = stop  # type: ignore[method-assign]


_install()
