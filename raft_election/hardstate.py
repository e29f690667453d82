"""The state a server must persist: its term, its vote and its configuration entry.

``(current_term, voted_for)`` as in Raft §5.2 (Figure 2), and the configuration (thesis §4.1).

A value type with no I/O of its own, so the sans-I/O core can name it without importing storage.  Where it
is kept between runs is :mod:`raft_election.storage`'s job.
"""

from __future__ import annotations

from typing import Optional

import attrs

from raft_election.membership import Configuration
from raft_election.messages import MAX_NODE_ID, check_term

__all__ = ["HardState"]


def _check_config(instance: object, attribute: attrs.Attribute[Optional[Configuration]],
                  value: Optional[Configuration]) -> None:
    if value is not None and not isinstance(value, Configuration):
        raise ValueError(f"{attribute.name} must be None or a Configuration, got {type(value).__name__}")


def _check_voted_for(
    instance: object, attribute: attrs.Attribute[Optional[int]], value: Optional[int]
) -> None:
    if value is not None and (type(value) is not int or not 1 <= value <= MAX_NODE_ID):
        raise ValueError(f"{attribute.name} must be None or an int in [1, 2**32 - 1], got {value!r}")


@attrs.frozen(kw_only=True)
class HardState:
    """The state a server must persist before answering or campaigning (Raft §5.2, Figure 2).

    Attributes:
        term: the latest term the server has seen (``currentTerm``), an int in ``[0, 2**63 - 1]``.
        voted_for: the node id it voted for in ``term`` (``votedFor``), or ``None`` if it has not voted.
        config: the latest configuration entry it has (thesis §4.1), or ``None`` if it never had one other
            than the seed from ``RaftConfig.peers``.  Stored in the same atomic write as the term and
            vote, before any message that reports it leaves.

    Raises:
        ValueError: a field has the wrong type (including ``bool``, which is not accepted as an int) or is
            out of range.  The library raises ``ValueError`` for both, as :mod:`raft_election.messages`
            does, so one ``except ValueError`` covers every invalid value.
    """

    term: int = attrs.field(default=0, validator=check_term)
    voted_for: Optional[int] = attrs.field(default=None, validator=_check_voted_for)
    config: Optional[Configuration] = attrs.field(default=None, validator=_check_config)
