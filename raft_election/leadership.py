"""Leadership handles: one object per leadership (per term won), for leader-only work.

A blocking application does its leader-only work in a loop that checks :meth:`Leadership.valid` before
each step and passes :attr:`Leadership.term` to whatever it writes to, as the fencing token::

    def work(leadership: Leadership) -> None:
        while leadership.valid():
            do_one_step(fencing_token=leadership.term)

    node.lead(work)          # blocks: runs work() each time this node becomes leader

``valid()`` is computed against the clock at the moment it is called (the lease may lapse between two
ticks of the node's timer); :attr:`Leadership.lost` is set as soon as the node notices the leadership
ended, so a worker blocked elsewhere can wait on it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Leadership"]


class Leadership:
    """This node's leadership of one term.

    Attributes:
        term: the term led; also the fencing token, strictly increasing from one leadership to the next.
        lost: set when the leadership ends (lease lapsed, stepped down, deposed, node stopped).
    """

    def __init__(self, term: int, is_valid: Callable[[int], bool]) -> None:
        self.term = term
        self.lost = threading.Event()
        self._is_valid = is_valid

    def valid(self) -> bool:
        """True while this node still leads ``term`` with a valid lease, checked against the clock now."""
        return not self.lost.is_set() and self._is_valid(self.term)

    def __repr__(self) -> str:
        state = "lost" if self.lost.is_set() else ("valid" if self._is_valid(self.term) else "lapsed")
        return f"<Leadership term={self.term} {state}>"
