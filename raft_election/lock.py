"""DistributedLock: an exclusive lock across processes, held by whichever member leads with a lease.

The lock is the leadership: ``acquire()`` makes this member stand for election and waits until it leads
with a valid lease; the fencing token is the term.  Holding the lock means holding the lease, so the
leases' guarantee carries over: **at no instant do two members believe they hold the lock**, provided
their clocks run at rates within ``max_clock_drift`` of each other (thesis §6.4.1).  A holder that was
paused or cut off still finds ``held`` False the moment its lease lapses; whatever it does after having
checked ``held`` must carry the token, so the protected resource can refuse a stale holder (Kleppmann,
"How to do distributed locking", 2016).

From the moment a member gets a DistributedLock it stands for election only while ``acquire()`` waits or
the lock is held; otherwise it just votes.  Every member of a lock cluster must use a DistributedLock (or
run with ``candidate=False``): a member that stands for election without wanting the lock would win
leaderships nobody can use, and keep others from acquiring.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Optional

from raft_election.core import NoTransferTargetError
from raft_election.errors import RaftElectionError
from raft_election.events import Event, LostLeadership
from raft_election.leadership import Leadership
from raft_election.node import RaftNode

__all__ = ["DistributedLock", "LockError"]


class LockError(RaftElectionError):
    """The lock was used wrongly: re-entrant acquire, or release of a lock that is not held."""


class DistributedLock:
    """An exclusive lock across the members of one cluster.

    Args:
        node: this process's member; it must not be used for anything that makes it stand for election.
        on_lost: called with the token when a held lock is lost without :meth:`release` (on the node's
            callback thread; it may block).
    """

    def __init__(self, node: RaftNode, *, on_lost: Optional[Callable[[int], object]] = None) -> None:
        self._node = node
        self._on_lost = on_lost
        self._lock = threading.Lock()
        self._leadership: Optional[Leadership] = None
        self._acquiring = False
        #: Set when a held lock is lost without release (cleared by the next acquire()).
        self.lost = threading.Event()
        node.set_candidate(False)
        node.add_listener(self._on_event)

    @property
    def held(self) -> bool:
        """True while this member holds the lock: computed against the lease and the clock right now."""
        with self._lock:
            leadership = self._leadership
        return leadership is not None and leadership.valid()

    @property
    def token(self) -> Optional[int]:
        """The fencing token of the current hold (the term), or None when not held."""
        with self._lock:
            leadership = self._leadership
        return leadership.term if leadership is not None and leadership.valid() else None

    def acquire(self, timeout: Optional[float] = None) -> int:
        """Block until this member holds the lock; return the fencing token.

        Args:
            timeout: seconds to wait; None means wait forever.

        Returns:
            The fencing token: the term of the leadership, strictly greater than every earlier holder's.

        Raises:
            TimeoutError: not acquired within ``timeout``; the member then stops standing for election.
            LockError: this lock is already held or being acquired by this member (it is not re-entrant).
            RaftElectionError: the node is not running.
        """
        with self._lock:
            if self._acquiring:
                raise LockError(f"member {self._node.node_id} is already acquiring this lock")
            if self._leadership is not None and self._leadership.valid():
                raise LockError(f"member {self._node.node_id} already holds this lock (token "
                                f"{self._leadership.term}); it is not re-entrant")
            self._acquiring = True
            self._leadership = None
            self.lost.clear()
        try:
            try:
                self._node.set_candidate(True)
                self._node.campaign()
                leadership = self._node.wait_for_leadership(timeout)
            except BaseException:
                self._node.set_candidate(False)
                raise
            with self._lock:
                self._leadership = leadership
            return leadership.term
        finally:
            with self._lock:
                self._acquiring = False

    def release(self) -> None:
        """Give the lock up and stop standing for election.

        The lease is dropped first.  If a member is waiting in ``acquire()`` (the leader knows: followers
        report their candidacy with every heartbeat answer), leadership is handed straight to it
        (TimeoutNow, thesis §3.10), so it holds the lock about one round trip later; otherwise this member
        resigns, so the next ``acquire()`` anywhere need not wait out the stickiness window.

        Raises:
            LockError: the lock is not held (never acquired, already released, or lost).
        """
        with self._lock:
            leadership, self._leadership = self._leadership, None
        if leadership is None or leadership.lost.is_set():
            raise LockError(f"member {self._node.node_id} does not hold this lock"
                            + (" (it was lost)" if leadership is not None else ""))
        self._node.set_candidate(False)
        try:
            self._node.transfer_leadership()
        except NoTransferTargetError:
            self._node.step_down()
        except RaftElectionError:
            pass  # the lease lapsed meanwhile: nothing left to give up

    def __enter__(self) -> int:
        return self.acquire()

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        with self._lock:
            leadership = self._leadership
        if leadership is not None and not leadership.lost.is_set():
            self.release()
        else:  # lost meanwhile: nothing to release, but stop standing
            with self._lock:
                self._leadership = None
            self._node.set_candidate(False)

    def _on_event(self, event: Event) -> None:
        """Node listener: a leadership that ends while held (not released) means the lock was lost."""
        if not isinstance(event, LostLeadership):
            return
        with self._lock:
            leadership = self._leadership
            lost = leadership is not None and leadership.term == event.term
        if not lost:
            return
        self.lost.set()
        with contextlib.suppress(RaftElectionError):  # the node may be stopping
            self._node.set_candidate(False)
        if self._on_lost is not None:
            self._on_lost(event.term)

    def __repr__(self) -> str:
        token = self.token
        return f"<DistributedLock member={self._node.node_id} " + (
            f"held token={token}>" if token is not None else "not held>")
