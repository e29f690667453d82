"""DistributedLock: an exclusive lock across processes, held by whichever member leads with a lease.

The lock is the leadership: ``acquire()`` makes this member stand for election and waits until it leads
with a valid lease; the fencing token is the term.  Holding the lock means holding the lease, so the
leases' guarantee carries over: **at no instant do two members believe they hold the lock**, provided
their clocks run at rates within ``max_clock_drift`` of each other (thesis §6.4.1).  A holder that was
paused or cut off still finds ``held`` False the moment its lease lapses; whatever it does after having
checked ``held`` must carry the token, so the protected resource can refuse a stale holder (Kleppmann,
"How to do distributed locking", 2016).

A hold lasts from ``acquire()`` until ``release()``, or until the member leaves the leader's office
(deposed by a higher term, check-quorum, stopped), which sets :attr:`DistributedLock.lost` and calls
``on_lost``.  Inside a hold the lease may lapse for a moment and come back (a **lease gap**: a slow round of
heartbeats on a loaded host): ``held`` is False during the gap, ``on_lease_lost`` and
``on_lease_regained`` are called, and the :class:`~raft_election.leadership.Leadership` handle of the lease
before the gap (:meth:`DistributedLock.leadership`) stays invalid for good, so code that checked before the
gap learns of it.  The token stays the same across the gap, and no other member held the lock in between
(:mod:`raft_election.lease`); ``acquire()`` during a gap waits for the lease to come back.

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
from typing import Optional, Union

from raft_election.core import NoTransferTargetError
from raft_election.errors import RaftElectionError
from raft_election.events import Event, LeaseLost, LeaseRegained, LostLeadership
from raft_election.group import Group
from raft_election.groupname import DEFAULT_GROUP, check_group_name
from raft_election.leadership import Leadership
from raft_election.node import RaftNode

__all__ = ["DistributedLock", "LockError"]


class LockError(RaftElectionError):
    """The lock was used wrongly: re-entrant acquire, or release of a lock that is not held."""


class DistributedLock:
    """An exclusive lock across the members of one cluster.

    Args:
        node: this process's member; it must not be used for anything that makes it stand for election
            (in the lock's group: other groups of the node are free for other uses).
        name: the lock's name: None or ``""`` is the node's own election (the default group), and any
            other name is the election group of that name (see :meth:`RaftNode.group`), so one member set
            can hold any number of independent locks, each with its own fencing tokens.  Every member
            that contends for a name uses ``DistributedLock(node, name=...)`` with that name.
        on_lost: called with the token when a held lock is lost without :meth:`release` (on the node's
            callback thread, like the two below; it may block).
        on_lease_lost: called with the token when the lease lapses inside a hold (a lease gap).
        on_lease_regained: called with the token when the lease comes back after a gap.
    """

    def __init__(self, node: RaftNode, *, name: Optional[str] = None,
                 on_lost: Optional[Callable[[int], object]] = None,
                 on_lease_lost: Optional[Callable[[int], object]] = None,
                 on_lease_regained: Optional[Callable[[int], object]] = None) -> None:
        self._node = node
        self._name = check_group_name(name)
        # The election this lock is: the node's own (the default group) or the group named ``name``.
        self._target: Union[RaftNode, Group] = (
            node if self._name == DEFAULT_GROUP else node.group(self._name, candidate=False))
        self._on_lost = on_lost
        self._on_lease_lost = on_lease_lost
        self._on_lease_regained = on_lease_regained
        self._lock = threading.Lock()
        self._term: Optional[int] = None  # the token of the current hold
        self._acquiring = False
        #: Set when a held lock is lost without release (cleared by the next acquire()).
        self.lost = threading.Event()
        node.set_candidate(False)
        self._target.add_listener(self._on_event)

    def leadership(self) -> Optional[Leadership]:
        """The handle of the unbroken lease this hold has now, or None (not held, or in a lease gap).

        Its ``valid()`` turns False for good at the first gap, even if the lease comes back.
        """
        with self._lock:
            term = None if self.lost.is_set() else self._term
        leadership = self._target.leadership() if term is not None else None
        return leadership if leadership is not None and leadership.term == term else None

    @property
    def held(self) -> bool:
        """True while this member holds the lock with a valid lease, against the clock right now."""
        return self.leadership() is not None

    @property
    def token(self) -> Optional[int]:
        """The fencing token of the current hold (the term) while it is held with a lease, else None."""
        leadership = self.leadership()
        return leadership.term if leadership is not None else None

    def acquire(self, timeout: Optional[float] = None) -> int:
        """Block until this member holds the lock; return the fencing token.

        Args:
            timeout: seconds to wait; None means wait forever.

        During a lease gap of a hold this waits for the lease to come back (the same token), or for a new
        leadership if the office is lost meanwhile.

        Returns:
            The fencing token: the term of the leadership, greater than every earlier holder's.

        Raises:
            TimeoutError: not acquired within ``timeout``; the member then stops standing for election
                (unless it is in a hold's lease gap, which only ``release()`` or the office's loss ends).
            LockError: this lock is already held or being acquired by this member (it is not re-entrant).
            RaftElectionError: the node is not running.
        """
        with self._lock:
            if self._acquiring:
                raise LockError(f"member {self._node.node_id} is already acquiring this lock")
            in_gap = self._term is not None and not self.lost.is_set()
            self._acquiring = True
        try:
            if self.held:
                raise LockError(f"member {self._node.node_id} already holds this lock (token "
                                f"{self._term}); it is not re-entrant")
            if not in_gap:
                with self._lock:
                    self._term = None
                    self.lost.clear()
            try:
                self._target.set_candidate(True)
                self._target.campaign()
                leadership = self._target.wait_for_leadership(timeout)
            except BaseException:
                if not in_gap:
                    self._target.set_candidate(False)
                raise
            with self._lock:
                self._term = leadership.term
                self.lost.clear()
            return leadership.term
        finally:
            with self._lock:
                self._acquiring = False

    def release(self) -> None:
        """Give the lock up and stop standing for election.

        The lease is dropped first.  If a member is waiting in ``acquire()`` (the leader knows: followers
        report their candidacy with every heartbeat answer), leadership is handed straight to it
        (TimeoutNow, thesis §3.10), so it holds the lock about one round trip later; otherwise this member
        resigns, so the next ``acquire()`` anywhere need not wait out the stickiness window.  A hold in a
        lease gap is released the same way (the member still holds the office).

        Raises:
            LockError: the lock is not held (never acquired, already released, or lost).
        """
        with self._lock:
            term, self._term = self._term, None
            lost = self.lost.is_set()
        if term is None or lost:
            raise LockError(f"member {self._node.node_id} does not hold this lock"
                            + (" (it was lost)" if term is not None else ""))
        self._target.set_candidate(False)
        try:
            self._target.transfer_leadership()
        except NoTransferTargetError:
            self._target.step_down()
        except RaftElectionError:
            pass  # the lease lapsed meanwhile: nothing left to give up

    def __enter__(self) -> int:
        return self.acquire()

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        with self._lock:
            releasable = self._term is not None and not self.lost.is_set()
        if releasable:
            with contextlib.suppress(LockError):  # lost in the meantime
                self.release()
                return
        with self._lock:  # lost: nothing to release, but stop standing
            self._term = None
        self._target.set_candidate(False)

    def _on_event(self, event: Event) -> None:
        """Node listener: the end of the hold's office, or a gap in its lease.

        The office of the hold's term ending (not by release) means the lock was lost; its lease lapsing or
        coming back calls the gap callbacks.
        """
        if not isinstance(event, (LostLeadership, LeaseLost, LeaseRegained)):
            return
        with self._lock:
            ours = self._term == event.term and not self.lost.is_set()
            if ours and isinstance(event, LostLeadership):
                self.lost.set()
        if not ours:
            return
        if isinstance(event, LeaseLost):
            if self._on_lease_lost is not None:
                self._on_lease_lost(event.term)
        elif isinstance(event, LeaseRegained):
            if self._on_lease_regained is not None:
                self._on_lease_regained(event.term)
        else:
            with contextlib.suppress(RaftElectionError):  # the node may be stopping
                self._target.set_candidate(False)
            if self._on_lost is not None:
                self._on_lost(event.term)

    def __repr__(self) -> str:
        token = self.token
        return f"<DistributedLock {self._name!r} member={self._node.node_id} " + (
            f"held token={token}>" if token is not None else "not held>")
