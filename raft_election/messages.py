"""The messages servers exchange, as small frozen value objects.

Raft's leader election needs two RPCs (RequestVote and an empty AppendEntries, the heartbeat; Raft §5.2).
The extensions add: pre-vote requests (thesis §9.6, a flag on the vote request), TimeoutNow for
leadership transfer (thesis §3.10) and Resign, which tells followers that their leader gave up its lease
and will not lead again in this term, so they need not wait out their stickiness window.

Every message carries the sender's ``term``.  ``round`` numbers tie a response to the request it answers:
a server numbers its heartbeat rounds and campaigns from one increasing counter and ignores responses whose
round is not one it is waiting for, so a delayed or duplicated response is never counted twice or for the
wrong campaign.  Who sent a message, to whom, and the election group it belongs to (the default group ``""``
unless a member hosts several) are carried by the :class:`Envelope`, not the message.

Two *member-level* messages serve a member that leads many election groups: instead of one heartbeat per
group, it sends each peer, per heartbeat interval, one :class:`Beat` per *chunk* of the groups it leads,
and the peer answers each with one :class:`BeatAck`.  They belong to no group (they travel in the default
group's envelope) and the election core never receives them: the node turns them into, and out of, the
per-group traffic the cores understand.  :data:`Message` stays the core's union; :data:`WireMessage` is
everything the codec carries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

import attrs

from raft_election.groupname import MAX_GROUP_NAME, is_group_name

__all__ = [
    "MAX_ADDRESS_SIZE",
    "MAX_ENTRIES_SIZE",
    "MAX_INDEX",
    "MAX_MEMBERS",
    "MAX_NODE_ID",
    "MAX_ROUND",
    "MAX_TERM",
    "MAX_VALUE_SIZE",
    "MEMBER_MESSAGE_TYPES",
    "MESSAGE_TYPES",
    "WIRE_MESSAGE_TYPES",
    "Beat",
    "BeatAck",
    "Envelope",
    "Heartbeat",
    "HeartbeatResponse",
    "Message",
    "Resign",
    "TimeoutNow",
    "VoteRequest",
    "VoteResponse",
    "WireMessage",
    "check_index",
    "check_members",
    "check_term",
    "check_value",
    "entry_size",
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
#: The byte budget of the encoded ``(group, term)`` entries of one :class:`Beat` (or :class:`BeatAck`), each
#: costing :func:`entry_size` bytes.  A message is at most 4,096 bytes (``codec.MAX_MESSAGE_SIZE``); the
#: 29-byte header, a Beat's 13-byte fixed body, the largest value (2 + ``MAX_VALUE_SIZE``), the entries' u16
#: count and a 32-byte MAC leave 3,762, rounded down to 3,700 so a field added later need not shrink it.
#: The codec checks at import that the largest Beat fits.
MAX_ENTRIES_SIZE = 3700


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


def entry_size(name: str) -> int:
    """The bytes one ``(name, term)`` entry of a :class:`Beat` or :class:`BeatAck` takes on the wire.

    A length byte, the ASCII name and a u64 term: a sender fills a chunk with groups while the sum stays
    within :data:`MAX_ENTRIES_SIZE`.
    """
    return 1 + len(name) + 8


def _check_entries(minimum_term: int) -> Callable[[object, attrs.Attribute[tuple[tuple[str, int], ...]],
                                                   tuple[tuple[str, int], ...]], None]:
    """An attrs validator of ``(group name, term)`` pairs whose terms are at least ``minimum_term``.

    Names are valid non-empty group names (:func:`~raft_election.groupname.is_group_name`), each at most
    once; terms are ints in ``[minimum_term, MAX_TERM]``; the encoded size is within
    :data:`MAX_ENTRIES_SIZE`.  Else ValueError.
    """

    def check(instance: object, attribute: attrs.Attribute[tuple[tuple[str, int], ...]],
              value: tuple[tuple[str, int], ...]) -> None:
        if type(value) is not tuple:
            raise ValueError(f"{attribute.name} must be a tuple of (group, term) pairs, got {value!r:.80}")
        seen: set[str] = set()
        size = 0
        for pair in value:
            if type(pair) is not tuple or len(pair) != 2:
                raise ValueError(f"{attribute.name} must hold (group, term) pairs, got {pair!r:.80}")
            name, term = pair
            if type(name) is not str or name == "" or not is_group_name(name):
                raise ValueError(f"{attribute.name}: {name!r:.80} is not a group name (1 to {MAX_GROUP_NAME} "
                                 "ASCII letters, digits and . _ - : / @)")
            if name in seen:
                raise ValueError(f"{attribute.name}: group {name!r} is listed twice")
            if type(term) is not int or not minimum_term <= term <= MAX_TERM:
                raise ValueError(f"{attribute.name}: the term of {name!r} must be an int in "
                                 f"[{minimum_term}, 2**63 - 1], got {term!r}")
            seen.add(name)
            size += entry_size(name)
        if size > MAX_ENTRIES_SIZE:
            raise ValueError(f"{attribute.name}: {len(value)} entries take {size} bytes, at most "
                             f"{MAX_ENTRIES_SIZE} fit one message")

    return check


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


@attrs.frozen(kw_only=True)
class Beat:
    """Member → member: one heartbeat round for one *chunk* of the election groups the sender leads.

    A member leading many groups sends each peer, per heartbeat interval, one Beat per chunk instead of one
    :class:`Heartbeat` per group; the peer answers with one :class:`BeatAck`.  ``round`` numbers the
    sender's rounds (it ties the answer to the send time, as a heartbeat's round does), ``chunk`` says which
    of the sender's chunks this is and ``version`` which version of that chunk's list: the sender changes
    the version whenever the chunk's list changes.

    The list itself travels only while the receiver has not acknowledged that version: then ``listed`` is
    True and ``entries`` is the chunk's whole list (possibly empty), ``(group name, term)`` pairs saying
    "I lead this group in this term", and ``value`` is the sender's value (as a heartbeat's).  Otherwise
    ``entries`` is empty and the receiver uses the list it holds for ``(chunk, version)``.  ``term`` is
    unused (0): every entry carries its own.
    """

    term: int = attrs.field(default=0, validator=check_term)
    round: int = attrs.field(validator=_check_round)
    chunk: int = attrs.field(validator=_check_round)
    version: int = attrs.field(validator=_check_round)
    listed: bool = attrs.field(default=False, validator=_bool)
    #: The sender's configuration version (the default group's latest entry, thesis §4.1).
    config_term: int = attrs.field(default=0, validator=check_term)
    config_index: int = attrs.field(default=0, validator=check_index)
    value: bytes = attrs.field(default=b"", validator=check_value)
    entries: tuple[tuple[str, int], ...] = attrs.field(default=(), validator=_check_entries(1))

    def __attrs_post_init__(self) -> None:
        """Entries travel only with the whole list: a partial list would be taken for a whole one."""
        if self.entries and not self.listed:
            raise ValueError("entries travel only when listed is True (the chunk's whole list)")


@attrs.frozen(kw_only=True)
class BeatAck:
    """Member → member: the answer to the :class:`Beat` with the same ``round``, ``chunk`` and ``version``.

    ``need`` asks for that version's list: the answering member does not hold it (it missed the Beat that
    carried it, or restarted), so the next Beat of the chunk must be ``listed``.  ``refused`` names the
    groups of the chunk it does not follow at the listed term, each with its own term for that group
    (higher than the sender's: the sender is deposed there; or it voted elsewhere): every group of the
    chunk not named is acknowledged as a heartbeat of that group would be.  ``term`` is unused (0).
    """

    term: int = attrs.field(default=0, validator=check_term)
    round: int = attrs.field(validator=_check_round)
    chunk: int = attrs.field(validator=_check_round)
    version: int = attrs.field(validator=_check_round)
    need: bool = attrs.field(default=False, validator=_bool)
    #: The answering member's configuration version: a leader counts no answer of a newer one (a member
    #: that took a change the leader's server missed may already belong to a majority that elects another).
    config_term: int = attrs.field(default=0, validator=check_term)
    config_index: int = attrs.field(default=0, validator=check_index)
    #: The answering member stands for election in every group of the chunk it follows (so the leader may
    #: hand it any of them: the balancer's leadership transfers).
    stands: bool = attrs.field(default=False, validator=_bool)
    refused: tuple[tuple[str, int], ...] = attrs.field(default=(), validator=_check_entries(0))


#: What the election core sends and receives.
Message = Union[Heartbeat, HeartbeatResponse, VoteRequest, VoteResponse, TimeoutNow, Resign]
#: Everything the codec carries: the core's messages and the member-level ones.
WireMessage = Union[Message, Beat, BeatAck]

#: The core's message classes, in wire type-code order (the codec numbers them 1, 2, 3, ...).
MESSAGE_TYPES: tuple[type[Message], ...] = (
    Heartbeat,
    HeartbeatResponse,
    VoteRequest,
    VoteResponse,
    TimeoutNow,
    Resign,
)
#: The member-level message classes: they belong to no election group, and the core never sees them.
MEMBER_MESSAGE_TYPES: tuple[type[Union[Beat, BeatAck]], ...] = (Beat, BeatAck)
#: Every class the codec carries, in wire type-code order: the core's, then the member-level ones (7, 8),
#: so adding these changed no existing code.
WIRE_MESSAGE_TYPES: tuple[type[WireMessage], ...] = (*MESSAGE_TYPES, *MEMBER_MESSAGE_TYPES)


def _check_group(instance: Envelope, attribute: attrs.Attribute[str], value: str) -> None:
    if not is_group_name(value):
        raise ValueError(f"{attribute.name} must be a group name: \"\" (the default group) or 1 to "
                         f"{MAX_GROUP_NAME} ASCII letters, digits and . _ - : / @, got {value!r:.80}")
    if value and isinstance(instance.message, MEMBER_MESSAGE_TYPES):
        raise ValueError(f"a {type(instance.message).__name__} belongs to no election group: it travels in "
                         f"the default group's envelope (group \"\"), got group {value!r}")


@attrs.frozen(kw_only=True)
class Envelope:
    """A message with its addressing: what the codec puts on the wire and takes off it.

    ``group`` names the election group the message belongs to (see :mod:`raft_election.groupname`); the
    default group ``""`` is the cluster's single election of old, and its messages are encoded exactly as
    they were before groups existed.  A member-level message (:class:`Beat`, :class:`BeatAck`) belongs to no
    group: its envelope's group is always ``""`` (else ValueError).
    """

    sender: int = attrs.field(validator=_check_node_id)
    recipient: int = attrs.field(validator=_check_node_id)
    message: WireMessage
    group: str = attrs.field(default="", validator=_check_group)
