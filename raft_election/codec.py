"""The wire codec: envelopes to compact, versioned, optionally authenticated bytes and back (SPEC §6).

Every transport carries the output of one :class:`Codec`, so framing, versioning, cluster separation and
authentication are the same whatever moves the bytes.  A transport moves one *datagram* at a time: either
one plain message, or a *frame* that coalesces several messages to the same peer (see
:meth:`Codec.encode_frames` and :meth:`Codec.decode_frame`), at most :data:`MAX_FRAME_SIZE` bytes.  The
format is fixed-width ``struct`` fields only: decoding never unpickles, never evaluates, and never
allocates more than the (bounded) input, so a hostile sender cannot make a receiver do anything but reject
its bytes.

Layout, all integers big-endian::

    header (29 bytes)
        magic      2s   b"RE"
        version    u8   4 (version 3 had no configuration fields; version 2 no Heartbeat value; version 1
                        no VoteRequest.suspect and no VoteResponse evidence bit)
        type       u8   1-based index into messages.WIRE_MESSAGE_TYPES (1-6 the election core's messages,
                        7-8 the member-level Beat and BeatAck)
        flags      u8   bit 0: a MAC follows the body; bit 1: a group name follows the header; every
                        other bit must be zero
        cluster    8s   cluster_id(cluster name)
        sender     u32  1 .. 2**32 - 1
        recipient  u32  1 .. 2**32 - 1
        term       u64  0 .. 2**63 - 1
    group (only when header flag bit 1 is set: the message belongs to an election group other than the
    default group "", whose messages have neither the bit nor this part, so a one-group cluster's bytes
    are those of before election groups existed; never for a Beat or BeatAck, which belong to no group)
        length     u8   1 .. MAX_GROUP_NAME
        name       the group name, that many ASCII bytes, a name groupname.is_group_name accepts
    body (per type, see _LAYOUTS): its u32 fields, then its u64 fields, then one u8 of boolean flags, then
    its variable parts
        Heartbeat          round u32, config_term u64, config_index u64, flags u8 (bit 0 committed),
                           value: length u16 then that many bytes (at most MAX_VALUE_SIZE),
                           members: count u8 (at most MAX_MEMBERS), then per member id u32, address
                           length u8 and that many UTF-8 bytes (at most MAX_ADDRESS_SIZE), ids increasing
        HeartbeatResponse  round u32, config_term u64, config_index u64, flags u8 (bit 0 candidate)
        VoteRequest        round u32, suspect u32, config_term u64, config_index u64, flags u8 (bit 0
                           pre_vote, bit 1 transfer)
        VoteResponse       round u32, config_term u64, config_index u64, flags u8 (bit 0 granted,
                           bit 1 pre_vote, bit 2 candidate, bit 3 evidence), members (as in a Heartbeat)
        TimeoutNow         (empty)
        Resign             successor u32 (0: none)
        Beat               round u32, chunk u32, version u32, config_term u64, config_index u64, flags u8
                           (bit 0 listed),
                           value (as in a Heartbeat),
                           entries: count u16, then per entry a group name's length u8 (1 ..
                           MAX_GROUP_NAME), the name (that many ASCII bytes, a non-empty group name, no
                           name twice) and its term u64 (1 .. 2**63 - 1); the entries take at most
                           messages.MAX_ENTRIES_SIZE bytes, and there are none unless listed
        BeatAck            round u32, chunk u32, version u32, config_term u64, config_index u64, flags u8
                           (bit 0 need, bit 1 stands),
                           refused: entries as in a Beat, with terms 0 .. 2**63 - 1
    mac (32 bytes, only when header flag bit 0 is set)
        HMAC-SHA256 keyed with the shared secret over every byte before it (the group name included)

A frame coalesces two or more messages to one recipient into one datagram (at most MAX_FRAME_SIZE bytes
in all); it has no MAC of its own, each message in it is complete with its own header and MAC::

    frame header (5 bytes)
        magic      2s   b"RF"
        version    u8   WIRE_VERSION
        count      u16  2 .. : the number of messages that follow
    then per message
        length     u16  the message's size in bytes
        message    that many bytes: one plain message as above (never a frame)

Decoding is strict: a message has exactly one valid encoding, so ``encode(decode(data)) == data`` whenever
``decode`` succeeds, and every rejection carries a stable :attr:`DecodeError.reason` that the node counts.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Sequence
from typing import Any, NamedTuple, Union

from raft_election.errors import DecodeError
from raft_election.groupname import MAX_GROUP_NAME, is_group_name
from raft_election.messages import (
    MAX_ADDRESS_SIZE,
    MAX_ENTRIES_SIZE,
    MAX_MEMBERS,
    MAX_TERM,
    MAX_VALUE_SIZE,
    MEMBER_MESSAGE_TYPES,
    WIRE_MESSAGE_TYPES,
    Beat,
    BeatAck,
    Envelope,
    Heartbeat,
    HeartbeatResponse,
    Resign,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
    WireMessage,
    entry_size,
)

__all__ = [
    "BytesLike",
    "FRAME_HEADER_SIZE",
    "HEADER_SIZE",
    "MAC_SIZE",
    "MAX_FRAME_SIZE",
    "MAX_MESSAGE_SIZE",
    "WIRE_VERSION",
    "Codec",
    "cluster_id",
]

#: The two bytes every message starts with; anything else is not ours (another protocol, or noise).
MAGIC = b"RE"
#: The format version this codec writes and the only one it accepts.
WIRE_VERSION = 4
#: Header flag bit 0: an HMAC-SHA256 tag follows the body.
FLAG_MAC = 0x01
#: Header flag bit 1: the name of the message's election group follows the header (never set for the
#: default group ``""``).
FLAG_GROUP = 0x02
#: Length of the HMAC-SHA256 tag.
MAC_SIZE = 32
#: The largest input :meth:`Codec.decode` even looks at: the limit of one plain message.  The largest valid
#: message is 4,034 bytes (a Beat with the largest value and MAX_ENTRIES_SIZE bytes of entries, plus its
#: MAC; the largest Heartbeat, of a group with the longest name, the largest value and a configuration of
#: MAX_MEMBERS members with the longest addresses, is 3,686); most are under 100.  A bigger message is
#: rejected before a single field is parsed.
MAX_MESSAGE_SIZE = 4096
#: The largest datagram (or ZeroMQ message) a transport carries and :meth:`Codec.decode_frame` looks at: a
#: frame of coalesced messages is at most this long.  Below UDP's 65,507-byte payload limit, with room to
#: spare for IPv6 and its extension headers.
MAX_FRAME_SIZE = 60000
#: The two bytes every frame starts with.
FRAME_MAGIC = b"RF"

_LENGTH = struct.Struct(">H")
_COUNT = struct.Struct(">B")
_MEMBER = struct.Struct(">IB")
_TERM = struct.Struct(">Q")

_HEADER = struct.Struct(">2sBBB8sIIQ")
#: Size of the fixed header that precedes every body.
HEADER_SIZE = _HEADER.size

_FRAME_HEADER = struct.Struct(">2sBH")
#: Size of a frame's header (magic, version, count); every message in the frame adds a u16 length.
FRAME_HEADER_SIZE = _FRAME_HEADER.size

#: What :meth:`Codec.decode` accepts; anything else is rejected with reason ``"bad_type"``.
BytesLike = Union[bytes, bytearray, memoryview]


class _Layout(NamedTuple):
    """How one message class is laid out after the header.

    The fixed body is the ``int_fields`` as u32 each, then the ``long_fields`` as u64 each, then, if
    ``flag_fields`` is not empty, one u8 whose bit ``i`` is the boolean field ``flag_fields[i]``.  The
    variable parts follow: if ``bytes_field`` is set, that field as a u16 length and its bytes (at most
    :data:`~raft_election.messages.MAX_VALUE_SIZE`); if ``members_field`` is set, that field as a u8 count
    and, per member, its id (u32), its address's length (u8) and the address in UTF-8; if ``entries_field``
    is set, that field as a u16 count and, per ``(group, term)`` entry, the name's length (u8), the ASCII
    name and the term (u64), each term at least ``entries_min_term``.  The term is in the header, not here.
    """

    code: int
    body: struct.Struct
    int_fields: tuple[str, ...]
    long_fields: tuple[str, ...]
    flag_fields: tuple[str, ...]
    bytes_field: str = ""
    members_field: str = ""
    entries_field: str = ""
    entries_min_term: int = 0


def _layout(cls: type[WireMessage], int_fields: tuple[str, ...], flag_fields: tuple[str, ...], *,
            long_fields: tuple[str, ...] = (), bytes_field: str = "", members_field: str = "",
            entries_field: str = "", entries_min_term: int = 0) -> _Layout:
    """Build the layout of ``cls``: its type code is its 1-based position in ``WIRE_MESSAGE_TYPES``."""
    fmt = ">" + "I" * len(int_fields) + "Q" * len(long_fields) + ("B" if flag_fields else "")
    return _Layout(WIRE_MESSAGE_TYPES.index(cls) + 1, struct.Struct(fmt), int_fields, long_fields,
                   flag_fields, bytes_field, members_field, entries_field, entries_min_term)


_CONFIG = ("config_term", "config_index")

#: The whole wire format of the bodies, as data.  Adding a message type means adding a row here
#: (and to ``WIRE_MESSAGE_TYPES``); the encode and decode paths are generic over it.
_LAYOUTS: dict[type[WireMessage], _Layout] = {
    Heartbeat: _layout(Heartbeat, ("round",), ("committed",), long_fields=_CONFIG, bytes_field="value",
                       members_field="members"),
    HeartbeatResponse: _layout(HeartbeatResponse, ("round",), ("candidate",), long_fields=_CONFIG),
    VoteRequest: _layout(VoteRequest, ("round", "suspect"), ("pre_vote", "transfer"), long_fields=_CONFIG),
    VoteResponse: _layout(VoteResponse, ("round",), ("granted", "pre_vote", "candidate", "evidence"),
                          long_fields=_CONFIG, members_field="members"),
    TimeoutNow: _layout(TimeoutNow, (), ()),
    Resign: _layout(Resign, ("successor",), ()),
    Beat: _layout(Beat, ("round", "chunk", "version"), ("listed",), long_fields=_CONFIG, bytes_field="value",
                  entries_field="entries", entries_min_term=1),
    BeatAck: _layout(BeatAck, ("round", "chunk", "version"), ("need", "stands"), long_fields=_CONFIG,
                     entries_field="refused"),
}
if set(_LAYOUTS) != set(WIRE_MESSAGE_TYPES) or any(len(lay.flag_fields) > 8 for lay in _LAYOUTS.values()):
    # Guards future edits to messages.py or to the table above: fail at import, not on the wire.
    raise ImportError("raft_election.codec: _LAYOUTS must describe exactly messages.WIRE_MESSAGE_TYPES")
if any(HEADER_SIZE + lay.body.size + (_LENGTH.size + MAX_VALUE_SIZE if lay.bytes_field else 0)
       + _LENGTH.size + MAX_ENTRIES_SIZE + MAC_SIZE > MAX_MESSAGE_SIZE
       for lay in _LAYOUTS.values() if lay.entries_field):
    raise ImportError("raft_election.codec: messages.MAX_ENTRIES_SIZE is too big for MAX_MESSAGE_SIZE")

#: Reverse index for decoding: type code -> (class, layout).
_BY_CODE: dict[int, tuple[type[WireMessage], _Layout]] = {
    layout.code: (cls, layout) for cls, layout in _LAYOUTS.items()
}


def cluster_id(cluster: str) -> bytes:
    """Return the 8-byte wire identifier of the cluster named ``cluster`` (BLAKE2b-64 of its UTF-8 name).

    Every message carries it, so two clusters sharing a network (or a port reused by another deployment)
    reject each other's traffic as ``"wrong_cluster"`` instead of voting in each other's elections.  It is
    a separator, not a secret: use :class:`Codec`'s ``secret`` to keep out senders that mean harm.

    Raises:
        TypeError: ``cluster`` is not a ``str``.
        ValueError: ``cluster`` cannot be encoded as UTF-8 (it contains lone surrogates).
    """
    if not isinstance(cluster, str):
        raise TypeError(f"cluster must be a str, got {type(cluster).__name__}")
    return hashlib.blake2b(cluster.encode("utf-8"), digest_size=8).digest()


class Codec:
    """Encodes and decodes the :class:`~raft_election.messages.Envelope` s of one cluster.

    With a ``secret`` every encoded message carries an HMAC-SHA256 tag and every decoded message must
    carry a valid one: a node configured with a secret drops unauthenticated traffic (SPEC §6).  Without a
    secret, messages carry no tag and a tagged message is rejected (the two ends are misconfigured, and
    silently ignoring the tag would hide it).

    A codec holds no mutable state, so one instance may be used from any number of threads at once.
    """

    __slots__ = ("_cluster", "_cluster_id", "_secret")

    def __init__(self, cluster: str, secret: bytes | None = None) -> None:
        """Create the codec of cluster ``cluster``, authenticating with ``secret`` when it is given.

        Raises:
            TypeError: ``cluster`` is not a ``str`` or ``secret`` is not ``bytes``/``bytearray``/``None``.
            ValueError: ``secret`` is empty (an empty key authenticates nothing), or ``cluster`` cannot
                be encoded as UTF-8.
        """
        self._cluster = cluster
        self._cluster_id = cluster_id(cluster)
        if secret is not None:
            if not isinstance(secret, (bytes, bytearray)):
                raise TypeError(
                    f"secret must be bytes or None, got {type(secret).__name__} "
                    "(encode a text secret first, e.g. secret.encode())"
                )
            if not secret:
                raise ValueError("secret must not be empty; pass None to disable authentication")
            secret = bytes(secret)
        self._secret: bytes | None = secret

    @property
    def cluster(self) -> str:
        """The cluster name this codec was created for."""
        return self._cluster

    @property
    def authenticated(self) -> bool:
        """Whether this codec signs what it encodes and requires a valid MAC on what it decodes."""
        return self._secret is not None

    def __repr__(self) -> str:
        """Show the cluster and whether messages are authenticated, never the secret itself."""
        return f"Codec(cluster={self._cluster!r}, authenticated={self.authenticated})"

    def encode(self, envelope: Envelope) -> bytes:
        """Return the wire form of ``envelope`` (at most :data:`MAX_MESSAGE_SIZE` bytes).

        An envelope of the default group ``""`` is encoded without a group part (the bytes of before
        election groups existed); any other group sets header flag bit 1 and carries its name.

        Raises:
            TypeError: ``envelope`` is not an :class:`Envelope`, or its message is not one of
                ``messages.WIRE_MESSAGE_TYPES``.
        """
        if not isinstance(envelope, Envelope):
            raise TypeError(f"encode() takes an Envelope, got {type(envelope).__name__}")
        message = envelope.message
        layout = _LAYOUTS.get(type(message))
        if layout is None:
            raise TypeError(f"cannot encode message of type {type(message).__name__}")
        flags = FLAG_MAC if self._secret is not None else 0
        group = envelope.group.encode("ascii")  # is_group_name() allows ASCII only
        if group:
            flags |= FLAG_GROUP
        header = _HEADER.pack(
            MAGIC,
            WIRE_VERSION,
            layout.code,
            flags,
            self._cluster_id,
            envelope.sender,
            envelope.recipient,
            message.term,
        )
        fields = [getattr(message, name) for name in (*layout.int_fields, *layout.long_fields)]
        if layout.flag_fields:
            bits = 0
            for bit, name in enumerate(layout.flag_fields):
                if getattr(message, name):
                    bits |= 1 << bit
            fields.append(bits)
        tail = b""
        if layout.bytes_field:
            value = getattr(message, layout.bytes_field)
            tail += _LENGTH.pack(len(value)) + value
        if layout.members_field:
            members = getattr(message, layout.members_field)
            tail += _COUNT.pack(len(members))
            for node_id, address in members:
                encoded = address.encode("utf-8")
                tail += _MEMBER.pack(node_id, len(encoded)) + encoded
        if layout.entries_field:
            entries = getattr(message, layout.entries_field)
            tail += _LENGTH.pack(len(entries))
            for name, term in entries:
                tail += _COUNT.pack(len(name)) + name.encode("ascii") + _TERM.pack(term)
        if group:
            header += _COUNT.pack(len(group)) + group
        data = header + layout.body.pack(*fields) + tail
        if self._secret is not None:
            data += hmac.new(self._secret, data, hashlib.sha256).digest()
        return data

    def decode(self, data: BytesLike) -> Envelope:
        """Parse ``data`` received from the network into an :class:`Envelope`.

        Only a plain message is accepted here; a frame of several (see :meth:`decode_frame`) is
        ``bad_magic``.  The input is untrusted.  Checks run in a fixed order and the first failure is
        reported: ``oversized`` (more than :data:`MAX_MESSAGE_SIZE` bytes), ``truncated``, ``bad_magic``,
        ``bad_version``, ``unknown_type``, ``wrong_cluster``, ``missing_mac``, ``unexpected_mac``,
        ``truncated`` (shorter than the type's fixed body, the group name's length byte when header flag bit
        1 is set, and the MAC), ``bad_mac``, then, when flag bit 1 is set, the group name: ``bad_group``
        (the message is a Beat or BeatAck, which belong to no group; or the name's length is 0 or over
        :data:`~raft_election.groupname.MAX_GROUP_NAME`), ``truncated`` (shorter than it says, or than the
        fixed body after it), ``bad_group`` (not a valid group name), then for each variable part in order
        (a value, a member list and each member, an entry list and each entry) ``bad_field`` (a length or
        count over its limit, an address not UTF-8; an entry's name length 0 or over ``MAX_GROUP_NAME``,
        the entries over :data:`~raft_election.messages.MAX_ENTRIES_SIZE` bytes, a name that is no group
        name or is listed twice, a term out of range) or ``truncated`` (shorter than it says), then
        ``bad_length`` (trailing bytes), ``bad_field`` (unknown header flag bits, a Beat with entries but
        not ``listed``, among others).  The MAC,
        when present, is the last 32 bytes of ``data`` and covers everything before them; it is verified
        before any field after the header is interpreted, so unauthenticated bytes never reach a message
        constructor.

        ``data`` is copied to immutable ``bytes`` once its size is known to be small, so a caller's
        buffer changing during the call cannot make the checked bytes differ from the parsed ones.

        Raises:
            DecodeError: for any bad input, with a stable ``reason`` (the list above, or ``bad_type``
                when ``data`` is not ``bytes``, ``bytearray`` or ``memoryview``).  Never anything else.
        """
        raw = _bounded_bytes(data)
        size = len(raw)
        if size < HEADER_SIZE:
            raise DecodeError("truncated", f"{size} bytes, the header alone is {HEADER_SIZE}")
        magic, version, code, flags, cid, sender, recipient, term = _HEADER.unpack_from(raw)
        if magic != MAGIC:
            raise DecodeError("bad_magic", f"starts with {magic!r}, expected {MAGIC!r}")
        if version != WIRE_VERSION:
            raise DecodeError("bad_version", f"version {version}, this codec speaks {WIRE_VERSION}")
        entry = _BY_CODE.get(code)
        if entry is None:
            raise DecodeError("unknown_type", f"type code {code}")
        cls, layout = entry
        if cid != self._cluster_id:
            raise DecodeError("wrong_cluster", f"cluster id {cid.hex()}, expected {self._cluster_id.hex()}")
        has_mac = bool(flags & FLAG_MAC)
        if self._secret is not None and not has_mac:
            raise DecodeError("missing_mac", "this node requires authenticated messages")
        if self._secret is None and has_mac:
            raise DecodeError("unexpected_mac", "message is authenticated but this node has no secret")
        has_group = bool(flags & FLAG_GROUP)
        end = size - (MAC_SIZE if has_mac else 0)
        minimum = (HEADER_SIZE + (_COUNT.size if has_group else 0) + layout.body.size
                   + (_LENGTH.size if layout.bytes_field else 0)
                   + (_COUNT.size if layout.members_field else 0)
                   + (_LENGTH.size if layout.entries_field else 0) + (MAC_SIZE if has_mac else 0))
        if size < minimum:
            raise DecodeError("truncated", f"{size} bytes, a {cls.__name__} takes at least {minimum}")
        if self._secret is not None:
            tag = hmac.new(self._secret, raw[:-MAC_SIZE], hashlib.sha256).digest()
            if not hmac.compare_digest(tag, raw[-MAC_SIZE:]):
                raise DecodeError("bad_mac", "authentication tag does not match")
        reader = _Reader(raw, HEADER_SIZE, end, cls.__name__)
        if has_group and cls in MEMBER_MESSAGE_TYPES:
            raise DecodeError("bad_group", f"a {cls.__name__} belongs to no election group")
        group = reader.group() if has_group else ""
        body_offset = reader.offset
        reader.skip(layout.body.size)
        variable: dict[str, Any] = {}
        if layout.bytes_field:
            variable[layout.bytes_field] = reader.value(layout.bytes_field)
        if layout.members_field:
            variable[layout.members_field] = reader.members(layout.members_field)
        if layout.entries_field:
            variable[layout.entries_field] = reader.entries(layout.entries_field, layout.entries_min_term)
        if reader.offset != end:
            raise DecodeError("bad_length", f"{size} bytes, this {cls.__name__} takes exactly "
                                            f"{size - (end - reader.offset)}")
        return _parse(cls, layout, raw, body_offset, variable, flags=flags, sender=sender,
                      recipient=recipient, term=term, group=group)

    def encode_frames(self, envelopes: Sequence[Envelope]) -> list[bytes]:
        """Return the datagrams that carry ``envelopes`` (all to one recipient) to it, in order.

        Coalescing: one datagram per peer carries what would otherwise be many (every group's heartbeat,
        say), so the traffic of a member hosting many election groups grows with its peers, not its groups.
        The messages are packed, in order, into as few frames as possible, each at most
        :data:`MAX_FRAME_SIZE` bytes; a datagram that would hold a single message is that plain message
        (what :meth:`encode` returns), so one envelope gives ``[encode(envelope)]`` and none gives ``[]``.

        Raises:
            ValueError: the envelopes are not all to the same recipient.
            TypeError: as :meth:`encode`.
        """
        if len(envelopes) > 1:
            recipients = {envelope.recipient for envelope in envelopes if isinstance(envelope, Envelope)}
            if len(recipients) > 1:
                raise ValueError(f"a frame goes to one recipient; these envelopes go to {sorted(recipients)}")
        datagrams: list[bytes] = []
        batch: list[bytes] = []
        room = MAX_FRAME_SIZE - FRAME_HEADER_SIZE
        for envelope in envelopes:
            data = self.encode(envelope)
            cost = _LENGTH.size + len(data)
            if cost > room:
                datagrams.append(_frame(batch))
                batch, room = [], MAX_FRAME_SIZE - FRAME_HEADER_SIZE
            batch.append(data)
            room -= cost
        if batch:
            datagrams.append(_frame(batch))
        return datagrams

    def decode_frame(self, data: BytesLike) -> list[Union[Envelope, DecodeError]]:
        """Parse a datagram from the network: one plain message or a frame of several.  Never raises.

        Returns one entry per message the datagram holds, in order: its :class:`Envelope`, or the
        :class:`DecodeError` that :meth:`decode` gives it (one bad message in a frame spoils only itself;
        each is authenticated by its own MAC).  A datagram that is not even a well-formed frame is a single
        :class:`DecodeError`, and nothing of it is used.  The checks run in this order: ``bad_type``,
        ``oversized`` (more than :data:`MAX_FRAME_SIZE` bytes); a datagram starting with ``b"RE"`` is then
        one plain message (``[decode(data)]``, with :meth:`decode`'s checks); one starting with
        ``b"RF"`` is a frame: ``truncated`` (shorter than the frame header), ``bad_version``, ``bad_field``
        (a count below 2), ``truncated`` (a length, or the message it announces, cut short), ``bad_length``
        (bytes after the last message); anything else is ``bad_magic``.  A message in a frame that is
        itself a frame is rejected as :meth:`decode` rejects any frame (``bad_magic``, or ``truncated`` if
        it is shorter than a message's header).
        """
        try:
            raw = _bounded_bytes(data, MAX_FRAME_SIZE)
        except DecodeError as exc:
            return [exc]
        if raw[:len(MAGIC)] == MAGIC:
            try:
                return [self.decode(raw)]
            except DecodeError as exc:
                return [exc]
        if raw[:len(FRAME_MAGIC)] != FRAME_MAGIC:
            return [DecodeError("bad_magic", f"starts with {raw[:2]!r}, expected {MAGIC!r} or "
                                             f"{FRAME_MAGIC!r}")]
        try:
            parts = _frame_parts(raw)
        except DecodeError as exc:
            return [exc]
        results: list[Union[Envelope, DecodeError]] = []
        for part in parts:
            try:
                results.append(self.decode(part))
            except DecodeError as exc:
                results.append(exc)
        return results


def _frame(messages: list[bytes]) -> bytes:
    """One datagram holding ``messages`` (encoded, at least one): a frame, or the message if it is alone."""
    if len(messages) == 1:
        return messages[0]
    return _FRAME_HEADER.pack(FRAME_MAGIC, WIRE_VERSION, len(messages)) + b"".join(
        _LENGTH.pack(len(message)) + message for message in messages)


def _frame_parts(raw: bytes) -> list[bytes]:
    """The messages of the frame ``raw`` (which starts with ``FRAME_MAGIC``), each as bytes, unparsed.

    Raises:
        DecodeError: ``truncated``, ``bad_version``, ``bad_field`` (a count below 2), ``truncated``,
            ``bad_length``, in this order (see :meth:`Codec.decode_frame`).
    """
    size = len(raw)
    if size < FRAME_HEADER_SIZE:
        raise DecodeError("truncated", f"{size} bytes, a frame's header alone is {FRAME_HEADER_SIZE}")
    _, version, count = _FRAME_HEADER.unpack_from(raw)
    if version != WIRE_VERSION:
        raise DecodeError("bad_version", f"frame version {version}, this codec speaks {WIRE_VERSION}")
    if count < 2:
        raise DecodeError("bad_field", f"a frame of {count} messages; a frame holds at least 2")
    parts = []
    offset = FRAME_HEADER_SIZE
    for index in range(count):
        if offset + _LENGTH.size > size:
            raise DecodeError("truncated", f"the frame ends before the length of message {index + 1} of "
                                           f"{count}")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > size:
            raise DecodeError("truncated", f"message {index + 1} of {count} ends "
                                           f"{offset + length - size} bytes after the frame")
        parts.append(raw[offset:offset + length])
        offset += length
    if offset != size:
        raise DecodeError("bad_length", f"{size - offset} bytes after the last of the frame's {count} "
                                        "messages")
    return parts


class _Reader:
    """Reads the variable parts of a body, in order, from ``raw[offset:end]`` (``end``: before the MAC).

    Every length is checked against its limit before it is used (``bad_field``) and against the bytes
    left (``truncated``), so hostile lengths never make the decoder read or allocate more than it was
    given.
    """

    def __init__(self, raw: bytes, offset: int, end: int, kind: str) -> None:
        self._raw = raw
        self.offset = offset
        self._end = end
        self._kind = kind

    def _take(self, count: int) -> bytes:
        if self.offset + count > self._end:
            raise DecodeError("truncated", f"this {self._kind} ends {self.offset + count - self._end} bytes "
                                           "early")
        data = self._raw[self.offset:self.offset + count]
        self.offset += count
        return data

    def skip(self, count: int) -> None:
        """Step over ``count`` bytes (a fixed body, parsed later from its offset)."""
        self._take(count)

    def group(self) -> str:
        """A u8 length (1 to ``MAX_GROUP_NAME``), then the group's name in ASCII (else ``bad_group``)."""
        (length,) = _COUNT.unpack(self._take(_COUNT.size))
        if not 0 < length <= MAX_GROUP_NAME:
            raise DecodeError("bad_group", f"a {length}-byte group name, it takes 1 to {MAX_GROUP_NAME}")
        try:
            name = self._take(length).decode("ascii")
        except UnicodeDecodeError:
            raise DecodeError("bad_group", "the group name is not ASCII") from None
        if not is_group_name(name):
            raise DecodeError("bad_group", f"{name!r} is not a group name")
        return name

    def value(self, name: str) -> bytes:
        """A u16 length, then that many bytes (at most ``MAX_VALUE_SIZE``)."""
        (length,) = _LENGTH.unpack(self._take(_LENGTH.size))
        if length > MAX_VALUE_SIZE:
            raise DecodeError("bad_field", f"a {length}-byte {name}, at most {MAX_VALUE_SIZE}")
        return self._take(length)

    def members(self, name: str) -> tuple[tuple[int, str], ...]:
        """A u8 count, then per member its id (u32), its address's length (u8) and the UTF-8 address."""
        (count,) = _COUNT.unpack(self._take(_COUNT.size))
        if count > MAX_MEMBERS:
            raise DecodeError("bad_field", f"{count} {name}, at most {MAX_MEMBERS}")
        members = []
        for _ in range(count):
            node_id, length = _MEMBER.unpack(self._take(_MEMBER.size))
            if length > MAX_ADDRESS_SIZE:
                raise DecodeError("bad_field", f"a {length}-byte address of {node_id}, at most "
                                               f"{MAX_ADDRESS_SIZE}")
            try:
                address = self._take(length).decode("utf-8")
            except UnicodeDecodeError:
                raise DecodeError("bad_field", f"the address of {node_id} is not UTF-8") from None
            members.append((node_id, address))
        return tuple(members)

    def entries(self, name: str, minimum_term: int) -> tuple[tuple[str, int], ...]:
        """A u16 count, then per entry a group name's length (u8), the ASCII name and its term (u64).

        Each name is a non-empty group name listed once, each term in ``[minimum_term, MAX_TERM]``, and the
        entries take at most ``MAX_ENTRIES_SIZE`` bytes; else ``bad_field``.
        """
        (count,) = _LENGTH.unpack(self._take(_LENGTH.size))
        if count > MAX_ENTRIES_SIZE // entry_size("g"):
            raise DecodeError("bad_field", f"{count} {name}, more than {MAX_ENTRIES_SIZE} bytes can hold")
        entries = []
        seen: set[str] = set()
        size = 0
        for _ in range(count):
            (length,) = _COUNT.unpack(self._take(_COUNT.size))
            if not 0 < length <= MAX_GROUP_NAME:
                raise DecodeError("bad_field", f"a {length}-byte group name in {name}, it takes 1 to "
                                               f"{MAX_GROUP_NAME}")
            size += _COUNT.size + length + _TERM.size
            if size > MAX_ENTRIES_SIZE:
                raise DecodeError("bad_field", f"the {name} take more than {MAX_ENTRIES_SIZE} bytes")
            try:
                group = self._take(length).decode("ascii")
            except UnicodeDecodeError:
                raise DecodeError("bad_field", f"a group name in {name} is not ASCII") from None
            if not is_group_name(group):
                raise DecodeError("bad_field", f"{group!r} in {name} is not a group name")
            if group in seen:
                raise DecodeError("bad_field", f"group {group!r} is listed twice in {name}")
            seen.add(group)
            (term,) = _TERM.unpack(self._take(_TERM.size))
            if not minimum_term <= term <= MAX_TERM:
                raise DecodeError("bad_field", f"the term {term} of {group!r} in {name} is not in "
                                               f"[{minimum_term}, 2**63 - 1]")
            entries.append((group, term))
        return tuple(entries)


def _bounded_bytes(data: object, limit: int = MAX_MESSAGE_SIZE) -> bytes:
    """Return ``data`` as immutable ``bytes``; refuse wrong types, and input over ``limit`` before copying."""
    if type(data) is bytes:
        raw = data
    elif isinstance(data, (bytes, bytearray, memoryview)):
        try:
            with memoryview(data) as view:
                if view.nbytes > limit:
                    raise DecodeError("oversized", f"{view.nbytes} bytes, the limit is {limit}")
                raw = view.tobytes()
        except (ValueError, TypeError) as exc:  # a released memoryview, or an unusual buffer
            raise DecodeError("bad_type", f"unreadable buffer: {exc}") from None
    else:
        raise DecodeError("bad_type", f"expected bytes, bytearray or memoryview, got {type(data).__name__}")
    if len(raw) > limit:
        raise DecodeError("oversized", f"{len(raw)} bytes, the limit is {limit}")
    return raw


def _parse(
    cls: type[WireMessage], layout: _Layout, raw: bytes, body_offset: int, variable: dict[str, Any], *,
    flags: int, sender: int, recipient: int, term: int, group: str
) -> Envelope:
    """Validate the authenticated, correctly sized fields and build the envelope (else ``bad_field``)."""
    if flags & ~(FLAG_MAC | FLAG_GROUP):
        raise DecodeError("bad_field", f"unknown header flag bits {flags & ~(FLAG_MAC | FLAG_GROUP):#04x}")
    if sender == 0 or recipient == 0:
        raise DecodeError("bad_field", f"node ids must be positive: sender={sender} recipient={recipient}")
    if term > MAX_TERM:
        raise DecodeError("bad_field", f"term {term} exceeds 2**63 - 1")
    values = layout.body.unpack_from(raw, body_offset)
    kwargs: dict[str, Any] = dict(zip((*layout.int_fields, *layout.long_fields), values))
    kwargs.update(variable)
    if layout.flag_fields:
        bits = values[-1]
        unknown = bits >> len(layout.flag_fields)
        if unknown:
            raise DecodeError("bad_field", f"unknown {cls.__name__} flag bits {bits:#04x}")
        for bit, name in enumerate(layout.flag_fields):
            kwargs[name] = bool(bits >> bit & 1)
    try:
        return Envelope(sender=sender, recipient=recipient, message=cls(term=term, **kwargs), group=group)
    except (ValueError, TypeError) as exc:
        raise DecodeError("bad_field", str(exc)) from None
