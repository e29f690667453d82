"""Leadership handles: one object per unbroken lease, for leader-only work.

A blocking application does its leader-only work in a loop that checks :meth:`Leadership.valid` before
each step and passes :attr:`Leadership.term` to whatever it writes to, as the fencing token::

    def work(leadership: Leadership) -> None:
        while leadership.valid():
            do_one_step(fencing_token=leadership.term)

    node.lead(work)          # blocks: runs work() each time this node becomes leader

``valid()`` is computed against the clock at the moment it is called (the lease may lapse between two
ticks of the node's timer); :attr:`Leadership.lost` is set as soon as the node notices the lease ended, so a
worker blocked elsewhere can wait on it.

A handle stands for one unbroken lease, not for the whole term: when the lease runs out while the node keeps
office (a lease gap: a slow round of heartbeats, a busy host), the handle is lost for good, even if the
lease comes back a moment later.  So code that checked ``valid()`` before a gap always learns of it.  The
lease that comes back is a new handle of the same term: the same fencing token, and no other member held a
lease in between (:mod:`raft_election.lease`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Leadership"]


class Leadership:
    """One unbroken lease of this node, in one term.

    Args:
        term: the term led.
        is_valid: whether that lease still holds, unbroken, checked against the clock when called.

    Attributes:
        term: the term led; also the fencing token, never lower than any earlier leadership's and shared
            only by the leases of one office (before and after a gap).
        lost: set when the lease ends (a gap, stepped down, deposed, node stopped).
    """

    def __init__(self, term: int, is_valid: Callable[[], bool]) -> None:
        self.term = term
        self.lost = threading.Event()
        self._is_valid = is_valid

    def valid(self) -> bool:
        """True while this node still holds this lease of ``term``, checked against the clock now."""
        return not self.lost.is_set() and self._is_valid()

    def __repr__(self) -> str:
        state = "lost" if self.lost.is_set() else ("valid" if self._is_valid() else "lapsed")
        return f"<Leadership term={self.term} {state}>"
