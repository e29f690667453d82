"""The messages servers exchange, as small frozen value objects.

Raft's leader election needs two RPCs (RequestVote and an empty AppendEntries, the heartbeat; Raft §5.2).
The extensions add: pre-vote requests (thesis §9.6, a flag on the vote request), TimeoutNow for
leadership transfer (thesis §3.10) and Resign, which tells followers that their leader gave up its lease
and will not lead again in this term, so they need not wait out their stickiness window.

Every message carries the sender's ``term``.  ``round`` numbers tie a response to the request it answers:
a server numbers its heartbeat rounds and campaigns from one increasing counter and ignores responses whose
round is not one it is waiting for, so a delayed or duplicated response is never counted twice or for the
wrong campaign.  Who sent a message and to whom is carried by the :class:`Envelope`, not the message.
"""

from __future__ import annotations

from typing import Union

import attrs

__all__ = [
    "MAX_ADDRESS_SIZE",
    "MAX_INDEX",
    "MAX_MEMBERS",
    "MAX_NODE_ID",
    "MAX_ROUND",
    "MAX_TERM",
    "MAX_VALUE_SIZE",
    "Envelope",
    "Heartbeat",
    "HeartbeatResponse",
    "Message",
    "Resign",
    "TimeoutNow",
    "VoteRequest",
    "VoteResponse",
    "check_index",
    "check_members",
    "check_term",
    "check_value",
]

#: Terms are unsigned 63-bit on the wire: large enough to never wrap, small enough to be an int64 anywhere.
MAX_TERM = 2**63 - 1
#: Node ids are positive 32-bit integers.
MAX_NODE_ID = 2**32 - 1
#: Rounds are 32-bit and compared for equality only, so wrap-around is harmless.
MAX_ROUND = 2**32 - 1
#: The largest leader's value a heartbeat carries, in bytes: room for an address or a short identifier (etcd's
#: ``Campaign(value)``, kazoo's ``Election(identifier)``), not for data.
MAX_VALUE_SIZE = 256
#: Configuration indexes are unsigned 63-bit, like terms.
MAX_INDEX = 2**63 - 1
#: The most members a configuration may have: every one travels, with its address, in one message.
MAX_MEMBERS = 16
#: The longest member address, in UTF-8 bytes (``host:port``, a host name included).
MAX_ADDRESS_SIZE = 200


def check_term(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    """Validate a term (an attrs validator): an int, not a bool, in ``[0, MAX_TERM]``, else ValueError."""
    if type(value) is not int or not 0 <= value <= MAX_TERM:
        raise ValueError(f"{attribute.name} must be an int in [0, 2**63 - 1], got {value!r}")


def check_index(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    """Validate a configuration index (an attrs validator): an int, not a bool, in ``[0, MAX_INDEX]``."""
    if type(value) is not int or not 0 <= value <= MAX_INDEX:
        raise ValueError(f"{attribute.name} must be an int in [0, 2**63 - 1], got {value!r}")


def check_members(instance: object, attribute: attrs.Attribute[tuple[tuple[int, str], ...]],
                  value: tuple[tuple[int, str], ...]) -> None:
    """Validate a member list as messages carry it: ``(id, address)`` pairs in increasing id order.

    At most :data:`MAX_MEMBERS` pairs; ids in ``[1, MAX_NODE_ID]``; addresses non-empty ``str`` of at
    most :data:`MAX_ADDRESS_SIZE` UTF-8 bytes.  Empty means "not included".  Else ValueError.
    """
    if type(value) is not tuple or len(value) > MAX_MEMBERS:
        raise ValueError(f"{attribute.name} must be a tuple of at most {MAX_MEMBERS} (id, address) pairs")
    previous = 0
    for pair in value:
        if type(pair) is not tuple or len(pair) != 2:
            raise ValueError(f"{attribute.name} must hold (id, address) pairs, got {pair!r:.80}")
        node_id, address = pair
        if type(node_id) is not int or not previous < node_id <= MAX_NODE_ID:
            raise ValueError(f"{attribute.name}: ids must be increasing ints in [1, 2**32 - 1], "
                             f"got {node_id!r} after {previous}")
        try:
            size = len(address.encode("utf-8")) if type(address) is str else 0
        except UnicodeEncodeError:
            size = 0
        if not 0 < size <= MAX_ADDRESS_SIZE:
            raise ValueError(f"{attribute.name}: the address of {node_id} must be a non-empty str of at "
                             f"most {MAX_ADDRESS_SIZE} bytes, got {address!r:.80}")
        previous = node_id


def _check_round(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or not 0 <= value <= MAX_ROUND:
        raise ValueError(f"{attribute.name} must be an int in [0, 2**32 - 1], got {value!r}")


def _check_node_id(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or not 1 <= value <= MAX_NODE_ID:
        raise ValueError(f"{attribute.name} must be an int in [1, 2**32 - 1], got {value!r}")


_bool = attrs.validators.instance_of(bool)


def check_value(instance: object, attribute: attrs.Attribute[bytes], value: bytes) -> None:
    """Validate a leader's value: ``bytes`` of at most :data:`MAX_VALUE_SIZE`, else ValueError."""
    if type(value) is not bytes or len(value) > MAX_VALUE_SIZE:
        raise ValueError(f"{attribute.name} must be bytes of at most {MAX_VALUE_SIZE}, got {value!r:.80}")


def _check_optional_node_id(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or not 0 <= value <= MAX_NODE_ID:
        raise ValueError(f"{attribute.name} must be 0 (none) or a node id, got {value!r}")


@attrs.frozen(kw_only=True)
class Heartbeat:
    """Leader → follower: "I lead ``term``" (the empty AppendEntries of Raft §5.2).

    ``round`` numbers the heartbeat round so the leader can match acknowledgements to the time it sent the
    round, which is what its lease is measured from (thesis §6.4.1).  ``value`` is the leader's value (its
    application's address, say; empty when it has none): followers learn where the leader's application is
    from the same messages that tell them who leads.

    ``config_term`` and ``config_index`` name the leader's latest configuration entry (thesis §4.1: the
    configuration is a log of one entry here), ``committed`` says whether a majority of its members stored
    it, and ``members`` carries the entry itself, ``(id, address)`` pairs, to followers that have not
    reported storing it yet (empty otherwise: most heartbeats stay small).
    """

    term: int = attrs.field(validator=check_term)
    round: int = attrs.field(validator=_check_round)
    value: bytes = attrs.field(default=b"", validator=check_value)
    config_term: int = attrs.field(default=0, validator=check_term)
    config_index: int = attrs.field(default=0, validator=check_index)
    committed: bool = attrs.field(default=False, validator=_bool)
    members: tuple[tuple[int, str], ...] = attrs.field(default=(), validator=check_members)


@attrs.frozen(kw_only=True)
class HeartbeatResponse:
    """Follower → leader: acknowledges heartbeat ``round`` (or, with a higher term, deposes a stale leader).

    ``candidate`` tells the leader whether this server stands for election, so a leadership transfer
    picks a target that will actually campaign.  ``config_term`` and ``config_index`` name the
    configuration entry this server has stored (persisted before this answer left): the leader counts it
    toward committing that entry, and sends the entry to a follower that reports another one.
    """

    term: int = attrs.field(validator=check_term)
    round: int = attrs.field(validator=_check_round)
    candidate: bool = attrs.field(validator=_bool)
    config_term: int = attrs.field(default=0, validator=check_term)
    config_index: int = attrs.field(default=0, validator=check_index)


@attrs.frozen(kw_only=True)
class VoteRequest:
    """Candidate → voter: RequestVote (Raft §5.2), or a pre-vote request when ``pre_vote`` (thesis §9.6).

    For a pre-vote, ``term`` is the term the sender *would* campaign in; receivers never adopt it.
    ``transfer`` marks a campaign started by TimeoutNow: voters grant it even inside their stickiness
    window (thesis §4.2.3, §3.10), because the old leader gave up its lease before asking for it.
    ``suspect`` (0: none) marks a fast-failover campaign: the sender holds evidence that the leader
    ``suspect`` is dead.  A voter that follows ``suspect`` grants it inside its stickiness window only with
    death evidence of its own (it probes the suspect when asked), and says so in its answer.
    ``config_term`` and ``config_index`` name the candidate's configuration entry: a voter whose own entry
    is newer refuses (the log up-to-date rule of Raft §5.4.1 for a log of one entry, thesis §4.1).
    """

    term: int = attrs.field(validator=check_term)
    round: int = attrs.field(validator=_check_round)
    pre_vote: bool = attrs.field(default=False, validator=_bool)
    transfer: bool = attrs.field(default=False, validator=_bool)
    suspect: int = attrs.field(default=0, validator=_check_optional_node_id)
    config_term: int = attrs.field(default=0, validator=check_term)
    config_index: int = attrs.field(default=0, validator=check_index)


@attrs.frozen(kw_only=True)
class VoteResponse:
    """Voter → candidate: the answer to a :class:`VoteRequest` with the same ``round`` and ``pre_vote``.

    A granted pre-vote echoes the request's term; a rejection carries the voter's own current term.
    ``candidate`` tells the candidate whether this voter stands for election itself, so a new leader can
    hand over (a leadership transfer) before its first heartbeat round has been answered.
    ``evidence`` says that the voter holds death evidence of its own about the request's ``suspect``; a
    fast-failover campaign wins only with a majority of such grants.  ``config_term`` and ``config_index``
    name the voter's configuration entry; a voter that refuses because its entry is newer than the
    candidate's sends the entry itself in ``members``, so a candidate that missed a change learns it and
    can win at its next try (a candidate holds entries only a leader created, so taking the newer one is
    as safe as having received it from that leader).
    """

    term: int = attrs.field(validator=check_term)
    round: int = attrs.field(validator=_check_round)
    granted: bool = attrs.field(validator=_bool)
    pre_vote: bool = attrs.field(default=False, validator=_bool)
    candidate: bool = attrs.field(default=False, validator=_bool)
    evidence: bool = attrs.field(default=False, validator=_bool)
    config_term: int = attrs.field(default=0, validator=check_term)
    config_index: int = attrs.field(default=0, validator=check_index)
    members: tuple[tuple[int, str], ...] = attrs.field(default=(), validator=check_members)


@attrs.frozen(kw_only=True)
class TimeoutNow:
    """Leader → chosen follower: campaign at once (leadership transfer, thesis §3.10)."""

    term: int = attrs.field(validator=check_term)


@attrs.frozen(kw_only=True)
class Resign:
    """Leader → followers: I gave up my lease and will not lead again in ``term``.

    ``successor`` is 0 for a plain resignation (followers may elect at once, without waiting out their
    stickiness window), or the target of a leadership transfer, whose campaign is on its way: followers
    then only forget the old leader, so nobody keeps naming a leader that is gone.
    """

    term: int = attrs.field(validator=check_term)
    successor: int = attrs.field(default=0, validator=_check_optional_node_id)


Message = Union[Heartbeat, HeartbeatResponse, VoteRequest, VoteResponse, TimeoutNow, Resign]

#: Every message class, in wire type-code order (the codec numbers them 1, 2, 3, ...).
MESSAGE_TYPES: tuple[type[Message], ...] = (
    Heartbeat,
    HeartbeatResponse,
    VoteRequest,
    VoteResponse,
    TimeoutNow,
    Resign,
)


@attrs.frozen(kw_only=True)
class Envelope:
    """A message with its addressing: what the codec puts on the wire and takes off it."""

    sender: int = attrs.field(validator=_check_node_id)
    recipient: int = attrs.field(validator=_check_node_id)
    message: Message
