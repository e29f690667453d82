"""The wire codec: envelopes to compact, versioned, optionally authenticated bytes and back (SPEC §6).

Every transport carries the output of one :class:`Codec`, so framing, versioning, cluster separation and
authentication are the same whatever moves the bytes.  The format is fixed-width ``struct`` fields only:
decoding never unpickles, never evaluates, and never allocates more than the (small, bounded) input, so a
hostile sender cannot make a receiver do anything but reject its bytes.

Layout, all integers big-endian::

    header (29 bytes)
        magic      2s   b"RE"
        version    u8   4 (version 3 had no configuration fields; version 2 no Heartbeat value; version 1
                        no VoteRequest.suspect and no VoteResponse evidence bit)
        type       u8   1-based index into messages.MESSAGE_TYPES
        flags      u8   bit 0: a MAC follows the body; every other bit must be zero
        cluster    8s   cluster_id(cluster name)
        sender     u32  1 .. 2**32 - 1
        recipient  u32  1 .. 2**32 - 1
        term       u64  0 .. 2**63 - 1
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
    mac (32 bytes, only when header flag bit 0 is set)
        HMAC-SHA256 keyed with the shared secret over every byte before it

Decoding is strict: a message has exactly one valid encoding, so ``encode(decode(data)) == data`` whenever
``decode`` succeeds, and every rejection carries a stable :attr:`DecodeError.reason` that the node counts.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Any, NamedTuple, Union

from raft_election.errors import DecodeError
from raft_election.messages import (
    MAX_ADDRESS_SIZE,
    MAX_MEMBERS,
    MAX_TERM,
    MAX_VALUE_SIZE,
    MESSAGE_TYPES,
    Envelope,
    Heartbeat,
    HeartbeatResponse,
    Message,
    Resign,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)

__all__ = [
    "BytesLike",
    "HEADER_SIZE",
    "MAC_SIZE",
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
#: Length of the HMAC-SHA256 tag.
MAC_SIZE = 32
#: The largest input :meth:`Codec.decode` even looks at.  The largest valid message is 3,621 bytes (a
#: heartbeat with the largest value and a configuration of MAX_MEMBERS members with the longest
#: addresses, plus its MAC); most are under 100.  A receiver sizes its buffer once, and a bigger datagram is
#: rejected before a single field is parsed.
MAX_MESSAGE_SIZE = 4096

_LENGTH = struct.Struct(">H")
_COUNT = struct.Struct(">B")
_MEMBER = struct.Struct(">IB")

_HEADER = struct.Struct(">2sBBB8sIIQ")
#: Size of the fixed header that precedes every body.
HEADER_SIZE = _HEADER.size

#: What :meth:`Codec.decode` accepts; anything else is rejected with reason ``"bad_type"``.
BytesLike = Union[bytes, bytearray, memoryview]


class _Layout(NamedTuple):
    """How one message class is laid out after the header.

    The fixed body is the ``int_fields`` as u32 each, then the ``long_fields`` as u64 each, then, if
    ``flag_fields`` is not empty, one u8 whose bit ``i`` is the boolean field ``flag_fields[i]``.  The
    variable parts follow: if ``bytes_field`` is set, that field as a u16 length and its bytes (at most
    :data:`~raft_election.messages.MAX_VALUE_SIZE`); if ``members_field`` is set, that field as a u8 count
    and, per member, its id (u32), its address's length (u8) and the address in UTF-8.  The term is in the
    header, not here.
    """

    code: int
    body: struct.Struct
    int_fields: tuple[str, ...]
    long_fields: tuple[str, ...]
    flag_fields: tuple[str, ...]
    bytes_field: str = ""
    members_field: str = ""


def _layout(cls: type[Message], int_fields: tuple[str, ...], flag_fields: tuple[str, ...], *,
            long_fields: tuple[str, ...] = (), bytes_field: str = "", members_field: str = "") -> _Layout:
    """Build the layout of ``cls``: its type code is its 1-based position in ``MESSAGE_TYPES``."""
    fmt = ">" + "I" * len(int_fields) + "Q" * len(long_fields) + ("B" if flag_fields else "")
    return _Layout(MESSAGE_TYPES.index(cls) + 1, struct.Struct(fmt), int_fields, long_fields, flag_fields,
                   bytes_field, members_field)


_CONFIG = ("config_term", "config_index")

#: The whole wire format of the bodies, as data.  Adding a message type means adding a row here
#: (and to ``MESSAGE_TYPES``); the encode and decode paths are generic over it.
_LAYOUTS: dict[type[Message], _Layout] = {
    Heartbeat: _layout(Heartbeat, ("round",), ("committed",), long_fields=_CONFIG, bytes_field="value",
                       members_field="members"),
    HeartbeatResponse: _layout(HeartbeatResponse, ("round",), ("candidate",), long_fields=_CONFIG),
    VoteRequest: _layout(VoteRequest, ("round", "suspect"), ("pre_vote", "transfer"), long_fields=_CONFIG),
    VoteResponse: _layout(VoteResponse, ("round",), ("granted", "pre_vote", "candidate", "evidence"),
                          long_fields=_CONFIG, members_field="members"),
    TimeoutNow: _layout(TimeoutNow, (), ()),
    Resign: _layout(Resign, ("successor",), ()),
}
if set(_LAYOUTS) != set(MESSAGE_TYPES) or any(len(lay.flag_fields) > 8 for lay in _LAYOUTS.values()):
    # Guards future edits to messages.py or to the table above: fail at import, not on the wire.
    raise ImportError("raft_election.codec: _LAYOUTS must describe exactly messages.MESSAGE_TYPES")

#: Reverse index for decoding: type code -> (class, layout).
_BY_CODE: dict[int, tuple[type[Message], _Layout]] = {
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

        Raises:
            TypeError: ``envelope`` is not an :class:`Envelope`, or its message is not one of
                ``messages.MESSAGE_TYPES``.
        """
        if not isinstance(envelope, Envelope):
            raise TypeError(f"encode() takes an Envelope, got {type(envelope).__name__}")
        message = envelope.message
        layout = _LAYOUTS.get(type(message))
        if layout is None:
            raise TypeError(f"cannot encode message of type {type(message).__name__}")
        flags = FLAG_MAC if self._secret is not None else 0
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
        data = header + layout.body.pack(*fields) + tail
        if self._secret is not None:
            data += hmac.new(self._secret, data, hashlib.sha256).digest()
        return data

    def decode(self, data: BytesLike) -> Envelope:
        """Parse ``data`` received from the network into an :class:`Envelope`.

        The input is untrusted.  Checks run in a fixed order and the first failure is reported:
        ``oversized``, ``truncated``, ``bad_magic``, ``bad_version``, ``unknown_type``, ``wrong_cluster``,
        ``missing_mac``, ``unexpected_mac``, ``truncated`` (shorter than the type's fixed body and MAC),
        ``bad_mac``, then for each variable part in order (a value, a member list and each member)
        ``bad_field`` (a length or count over its limit, an address not UTF-8) or ``truncated`` (shorter
        than it says), then ``bad_length`` (trailing bytes), ``bad_field``.  The MAC, when
        present, is the last 32 bytes of ``data`` and covers everything before them; it is verified before
        any field of the body is interpreted, so unauthenticated bytes never reach a message constructor.

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
        end = size - (MAC_SIZE if has_mac else 0)
        offset = HEADER_SIZE + layout.body.size
        minimum = (offset + (_LENGTH.size if layout.bytes_field else 0)
                   + (_COUNT.size if layout.members_field else 0) + (MAC_SIZE if has_mac else 0))
        if size < minimum:
            raise DecodeError("truncated", f"{size} bytes, a {cls.__name__} takes at least {minimum}")
        if self._secret is not None:
            tag = hmac.new(self._secret, raw[:-MAC_SIZE], hashlib.sha256).digest()
            if not hmac.compare_digest(tag, raw[-MAC_SIZE:]):
                raise DecodeError("bad_mac", "authentication tag does not match")
        reader = _Reader(raw, offset, end, cls.__name__)
        variable: dict[str, Any] = {}
        if layout.bytes_field:
            variable[layout.bytes_field] = reader.value(layout.bytes_field)
        if layout.members_field:
            variable[layout.members_field] = reader.members(layout.members_field)
        if reader.offset != end:
            raise DecodeError("bad_length", f"{size} bytes, this {cls.__name__} takes exactly "
                                            f"{size - (end - reader.offset)}")
        return _parse(cls, layout, raw, variable, flags=flags, sender=sender, recipient=recipient, term=term)


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


def _bounded_bytes(data: object) -> bytes:
    """Return ``data`` as immutable ``bytes``, refusing wrong types and oversized input before copying."""
    if type(data) is bytes:
        raw = data
    elif isinstance(data, (bytes, bytearray, memoryview)):
        try:
            with memoryview(data) as view:
                if view.nbytes > MAX_MESSAGE_SIZE:
                    raise DecodeError("oversized", f"{view.nbytes} bytes, the limit is {MAX_MESSAGE_SIZE}")
                raw = view.tobytes()
        except (ValueError, TypeError) as exc:  # a released memoryview, or an unusual buffer
            raise DecodeError("bad_type", f"unreadable buffer: {exc}") from None
    else:
        raise DecodeError("bad_type", f"expected bytes, bytearray or memoryview, got {type(data).__name__}")
    if len(raw) > MAX_MESSAGE_SIZE:
        raise DecodeError("oversized", f"{len(raw)} bytes, the limit is {MAX_MESSAGE_SIZE}")
    return raw


def _parse(
    cls: type[Message], layout: _Layout, raw: bytes, variable: dict[str, Any], *, flags: int, sender: int,
    recipient: int, term: int
) -> Envelope:
    """Validate the authenticated, correctly sized fields and build the envelope (else ``bad_field``)."""
    if flags & ~FLAG_MAC:
        raise DecodeError("bad_field", f"unknown header flag bits {flags & ~FLAG_MAC:#04x}")
    if sender == 0 or recipient == 0:
        raise DecodeError("bad_field", f"node ids must be positive: sender={sender} recipient={recipient}")
    if term > MAX_TERM:
        raise DecodeError("bad_field", f"term {term} exceeds 2**63 - 1")
    values = layout.body.unpack_from(raw, HEADER_SIZE)
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
        return Envelope(sender=sender, recipient=recipient, message=cls(term=term, **kwargs))
    except (ValueError, TypeError) as exc:
        raise DecodeError("bad_field", str(exc)) from None
