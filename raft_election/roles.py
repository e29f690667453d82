"""Server roles (Raft §5.1, plus the pre-candidate role of thesis §9.6)."""

from __future__ import annotations

import enum

__all__ = ["Role"]


class Role(enum.Enum):
    """What a server currently is.

    ``PRE_CANDIDATE`` exists only with pre-vote on: the server asks whether it *would* win an election
    before it raises its term (thesis §9.6).
    """

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"

    def __str__(self) -> str:
        return self.value
