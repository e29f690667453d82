"""The member-level messages Beat and BeatAck: validation, wire layout, strict decoding, counting.

A member leading many election groups heartbeats them per peer in *chunks*: one :class:`Beat` per chunk
(listing the chunk's ``(group, term)`` entries only while the peer has not acknowledged the chunk's version)
answered by one :class:`BeatAck`.  They travel in the default group's envelope; the core never sees them.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raft_election.codec import (
    HEADER_SIZE,
    MAC_SIZE,
    MAX_MESSAGE_SIZE,
    WIRE_VERSION,
    Codec,
    cluster_id,
)
from raft_election.errors import DecodeError
from raft_election.groupname import MAX_GROUP_NAME
from raft_election.messages import (
    MAX_ENTRIES_SIZE,
    MAX_ROUND,
    MAX_TERM,
    MAX_VALUE_SIZE,
    MESSAGE_TYPES,
    WIRE_MESSAGE_TYPES,
    Beat,
    BeatAck,
    Envelope,
    Heartbeat,
    HeartbeatResponse,
    entry_size,
)
from raft_election.output import Outgoing
from raft_election.stats import MESSAGE_KINDS, MessageStats
from tests.test_codec import messages as core_messages
from tests.test_codec import node_ids
from tests.test_codec_groups import REASONS, check_results, mutated_frames

SECRET = b"beat secret"
PLAIN = Codec("beats")
SIGNED = Codec("beats", SECRET)
CODECS = [pytest.param(PLAIN, id="plain"), pytest.param(SIGNED, id="signed")]

#: The wire type codes, written out independently of the codec's table.
BEAT_CODE, BEAT_ACK_CODE = 7, 8
#: Fixed body of both: round, chunk and version as u32, the configuration version as two u64, one flags
#: byte.
FIXED_SIZE = 29
#: A configuration version of (0, 0) as the fixed body writes it.
CONFIG_ZERO = "0000000000000000" "0000000000000000"
#: What a Beat costs beyond its entries: header, fixed body, value length, entry count.
BEAT_OVERHEAD = HEADER_SIZE + FIXED_SIZE + 2 + 2
#: Likewise for a BeatAck, which has no value.
BEAT_ACK_OVERHEAD = HEADER_SIZE + FIXED_SIZE + 2

# ---------------------------------------------------------------------------------------------- strategies

u32 = st.integers(0, MAX_ROUND)
#: Valid non-empty group names, written out independently of raft_election.groupname.
group_names = st.from_regex(rf"[A-Za-z0-9._:/@-]{{1,{MAX_GROUP_NAME}}}", fullmatch=True)


def entries_size(entries: tuple[tuple[str, int], ...]) -> int:
    """The encoded size of an entry list beyond its count: a length byte, the name, a u64 term each."""
    return sum(1 + len(name) + 8 for name, _ in entries)


@st.composite
def entry_lists(draw: Callable, minimum_term: int = 1) -> tuple[tuple[str, int], ...]:
    """Entry lists of distinct names, anywhere from empty to filling the byte budget."""
    names = draw(st.lists(group_names, unique=True, max_size=draw(st.sampled_from([3, 20, 120]))))
    entries: list[tuple[str, int]] = []
    size = 0
    for name in names:
        if size + entry_size(name) > MAX_ENTRIES_SIZE:
            break
        entries.append((name, draw(st.integers(minimum_term, MAX_TERM))))
        size += entry_size(name)
    return tuple(entries)


listed_beats = st.builds(Beat, term=st.just(0) | st.integers(0, MAX_TERM), round=u32, chunk=u32,
                         version=u32, listed=st.just(True), value=st.binary(max_size=MAX_VALUE_SIZE),
                         entries=entry_lists())
unlisted_beats = st.builds(Beat, round=u32, chunk=u32, version=u32, value=st.binary(max_size=8))
beat_acks = st.builds(BeatAck, term=st.just(0) | st.integers(0, MAX_TERM), round=u32, chunk=u32,
                      version=u32, need=st.booleans(), refused=entry_lists(minimum_term=0))
member_messages = listed_beats | unlisted_beats | beat_acks


def member_envelopes(recipient: Optional[int] = None) -> st.SearchStrategy[Envelope]:
    recipients = node_ids if recipient is None else st.just(recipient)
    return st.builds(Envelope, sender=node_ids, recipient=recipients, message=member_messages)


def group_envelopes(recipient: int) -> st.SearchStrategy[Envelope]:
    """Core messages of any group, the default one included."""
    return st.builds(Envelope, sender=node_ids, recipient=st.just(recipient), message=core_messages,
                     group=st.just("") | group_names)


def reason_of(codec: Codec, data: object) -> str:
    with pytest.raises(DecodeError) as info:
        codec.decode(data)  # type: ignore[arg-type]
    return info.value.reason


def hand_built(type_code: int, body: bytes, *, flags: int = 0, term: int = 0,
               secret: Optional[bytes] = None, trailing: bytes = b"") -> bytes:
    """A message built by hand from the documented layout: header, ``body``, ``trailing``, MAC."""
    data = (b"RE" + bytes([WIRE_VERSION, type_code, flags | (0x01 if secret else 0)]) + cluster_id("beats")
            + struct.pack(">IIQ", 1, 2, term) + body + trailing)
    if secret is not None:
        data += hmac.new(secret, data, hashlib.sha256).digest()
    return data


def entry(name: bytes, term: int) -> bytes:
    return bytes([len(name)]) + name + struct.pack(">Q", term)


def beat_body(entries: bytes = b"", count: int = 0, *, flags: int = 1, value: bytes = b"") -> bytes:
    """A Beat's body: round 1, chunk 2, version 3, ``flags`` (listed by default), ``value``, ``count``, then
    ``entries``."""
    return (struct.pack(">IIIQQB", 1, 2, 3, 0, 0, flags) + struct.pack(">H", len(value)) + value
            + struct.pack(">H", count) + entries)


def ack_body(entries: bytes = b"", count: int = 0, *, flags: int = 0) -> bytes:
    """A BeatAck's body: round 1, chunk 2, version 3, ``flags``, a count and ``entries``."""
    return struct.pack(">IIIQQB", 1, 2, 3, 0, 0, flags) + struct.pack(">H", count) + entries


# ---------------------------------------------------------------------------------------------- type codes


def test_beats_take_the_next_type_codes_and_the_core_types_keep_theirs():
    assert WIRE_MESSAGE_TYPES[:6] == MESSAGE_TYPES
    assert WIRE_MESSAGE_TYPES.index(Beat) + 1 == BEAT_CODE
    assert WIRE_MESSAGE_TYPES.index(BeatAck) + 1 == BEAT_ACK_CODE
    assert Beat not in MESSAGE_TYPES and BeatAck not in MESSAGE_TYPES  # the core never receives them
    beat = PLAIN.encode(Envelope(sender=1, recipient=2, message=Beat(round=1, chunk=0, version=0)))
    ack = PLAIN.encode(Envelope(sender=1, recipient=2, message=BeatAck(round=1, chunk=0, version=0)))
    assert (beat[3], ack[3]) == (BEAT_CODE, BEAT_ACK_CODE)


# ---------------------------------------------------------------------------------------------- golden bytes

GOLDEN = [
    (Beat(round=7, chunk=2, version=9),
     "00000007" "00000002" "00000009" + CONFIG_ZERO + "00" "0000" "0000"),
    (Beat(round=7, chunk=2, version=9, listed=True),
     "00000007" "00000002" "00000009" + CONFIG_ZERO + "01" "0000" "0000"),
    (Beat(round=1, chunk=0, version=MAX_ROUND, listed=True, value=b"app:1", config_term=3, config_index=4,
          entries=(("jobs", 5), ("a", MAX_TERM))),
     "00000001" "00000000" "ffffffff" "0000000000000003" "0000000000000004" "01" "0005" + b"app:1".hex()
     + "0002" + "04" + b"jobs".hex() + "0000000000000005" + "01" + b"a".hex() + "7fffffffffffffff"),
    (BeatAck(round=7, chunk=2, version=9),
     "00000007" "00000002" "00000009" + CONFIG_ZERO + "00" "0000"),
    (BeatAck(round=7, chunk=2, version=9, need=True, stands=True, config_term=1, config_index=2,
             refused=(("x", 0), ("y.z", 12))),
     "00000007" "00000002" "00000009" "0000000000000001" "0000000000000002" "03" "0002" + "01"
     + b"x".hex() + "0000000000000000" + "03" + b"y.z".hex() + "000000000000000c"),
]


@pytest.mark.parametrize(("message", "body_hex"), GOLDEN, ids=repr)
def test_golden_encoding(message, body_hex):
    envelope = Envelope(sender=1, recipient=2, message=message)
    code = BEAT_CODE if type(message) is Beat else BEAT_ACK_CODE
    plain = hand_built(code, bytes.fromhex(body_hex))
    signed = hand_built(code, bytes.fromhex(body_hex), secret=SECRET)
    assert PLAIN.encode(envelope) == plain
    assert SIGNED.encode(envelope) == signed
    assert PLAIN.decode(plain) == envelope
    assert SIGNED.decode(signed) == envelope


# ---------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=200)
@given(envelope=member_envelopes())
def test_round_trip(codec, envelope):
    data = codec.encode(envelope)
    assert codec.decode(data) == envelope
    assert codec.encode(codec.decode(data)) == data
    assert codec.decode_frame(data) == [envelope]
    message = envelope.message
    if isinstance(message, Beat):
        expected = BEAT_OVERHEAD + len(message.value) + entries_size(message.entries)
    else:
        expected = BEAT_ACK_OVERHEAD + entries_size(message.refused)
    assert len(data) == expected + (MAC_SIZE if codec.authenticated else 0) <= MAX_MESSAGE_SIZE
    assert not data[4] & 0x02  # never a group part


@settings(max_examples=50)
@given(cluster=st.text(max_size=20), secret=st.none() | st.binary(min_size=1, max_size=40),
       envelope=member_envelopes())
def test_round_trip_any_cluster_and_secret(cluster, secret, envelope):
    codec = Codec(cluster, secret)
    assert Codec(cluster, secret).decode(codec.encode(envelope)) == envelope


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=40)
@given(beats=st.lists(member_envelopes(recipient=3), max_size=30),
       groups=st.lists(group_envelopes(recipient=3), max_size=30), seed=st.randoms(use_true_random=False))
def test_frames_mixing_beats_and_group_messages_round_trip(codec, beats, groups, seed):
    envelopes = beats + groups
    seed.shuffle(envelopes)
    datagrams = codec.encode_frames(envelopes)
    assert [item for datagram in datagrams for item in codec.decode_frame(datagram)] == envelopes


# ------------------------------------------------------------------------------------------- size budget


def test_entry_size_is_a_length_byte_the_name_and_a_u64():
    assert entry_size("a") == 10
    assert entry_size("g" * MAX_GROUP_NAME) == 73
    entries = (("a", 1), ("bc", 2))
    assert PLAIN.encode(Envelope(sender=1, recipient=2, message=Beat(
        round=0, chunk=0, version=0, listed=True, entries=entries))).endswith(
        b"\0\2" + entry(b"a", 1) + entry(b"bc", 2))
    assert entries_size(entries) == entry_size("a") + entry_size("bc")


def test_the_budget_leaves_room_for_header_fixed_body_value_count_and_mac():
    assert (MAX_ENTRIES_SIZE
            <= MAX_MESSAGE_SIZE - HEADER_SIZE - FIXED_SIZE - 2 - MAX_VALUE_SIZE - 2 - MAC_SIZE)
    assert MAX_ENTRIES_SIZE // entry_size("g" * MAX_GROUP_NAME) >= 50  # 50 groups even with the longest names


def full_entries(minimum_term: int = 1) -> tuple[tuple[str, int], ...]:
    """Longest names up to the budget, and one shorter name that fills it to the byte."""
    longest = entry_size("g" * MAX_GROUP_NAME)
    count, rest = divmod(MAX_ENTRIES_SIZE, longest)
    entries = [(f"{i:04d}".ljust(MAX_GROUP_NAME, "g"), MAX_TERM) for i in range(count)]
    if rest:
        assert rest >= entry_size("x"), "the filler needs at least one character"
        entries.append(("f" * (rest - entry_size("")), minimum_term))
    assert entries_size(tuple(entries)) == MAX_ENTRIES_SIZE
    return tuple(entries)


@pytest.mark.parametrize("codec", CODECS)
def test_the_largest_valid_beat_fits_the_message_limit(codec):
    biggest = Beat(term=MAX_TERM, round=MAX_ROUND, chunk=MAX_ROUND, version=MAX_ROUND, listed=True,
                   value=b"v" * MAX_VALUE_SIZE, entries=full_entries())
    data = codec.encode(Envelope(sender=1, recipient=2, message=biggest))
    assert len(data) == (BEAT_OVERHEAD + MAX_VALUE_SIZE + MAX_ENTRIES_SIZE
                         + (MAC_SIZE if codec.authenticated else 0))
    assert len(data) <= MAX_MESSAGE_SIZE
    assert codec.decode(data).message == biggest


@pytest.mark.parametrize("codec", CODECS)
def test_the_largest_valid_beat_ack_fits_the_message_limit(codec):
    biggest = BeatAck(round=MAX_ROUND, chunk=MAX_ROUND, version=MAX_ROUND, need=True,
                      refused=full_entries(minimum_term=0))
    data = codec.encode(Envelope(sender=1, recipient=2, message=biggest))
    assert len(data) == BEAT_ACK_OVERHEAD + MAX_ENTRIES_SIZE + (MAC_SIZE if codec.authenticated else 0)
    assert codec.decode(data).message == biggest


def test_one_byte_over_the_budget_is_refused():
    entries = full_entries()
    name, term = entries[-1]
    with pytest.raises(ValueError, match=f"at most {MAX_ENTRIES_SIZE}"):
        Beat(round=0, chunk=0, version=0, listed=True, entries=(*entries[:-1], (name + "f", term)))
    with pytest.raises(ValueError, match=f"at most {MAX_ENTRIES_SIZE}"):
        BeatAck(round=0, chunk=0, version=0, refused=(*entries[:-1], (name + "f", term)))


# ---------------------------------------------------------------------------------------------- validation

BAD_ENTRIES = [
    ("empty-name", (("", 1),)),
    ("space", (("a b", 1),)),
    ("too-long", (("x" * (MAX_GROUP_NAME + 1), 1),)),
    ("not-ascii", (("é", 1),)),
    ("name-not-str", ((5, 1),)),
    ("name-bytes", ((b"a", 1),)),
    ("duplicate", (("a", 1), ("b", 2), ("a", 3))),
    ("term-above-max", (("a", MAX_TERM + 1),)),
    ("term-negative", (("a", -1),)),
    ("term-bool", (("a", True),)),
    ("term-float", (("a", 1.0),)),
    ("not-a-pair", (("a", 1, 2),)),
    ("pair-is-list", (["a", 1],)),
    ("list-not-tuple", [("a", 1)]),
]


@pytest.mark.parametrize("entries", [case[1] for case in BAD_ENTRIES], ids=[case[0] for case in BAD_ENTRIES])
def test_bad_entries_are_a_value_error(entries):
    with pytest.raises(ValueError, match="entries"):
        Beat(round=0, chunk=0, version=0, listed=True, entries=entries)
    with pytest.raises(ValueError, match="refused"):
        BeatAck(round=0, chunk=0, version=0, refused=entries)


def test_a_beat_entry_needs_a_term_a_refusal_may_name_term_0():
    with pytest.raises(ValueError, match="entries"):
        Beat(round=0, chunk=0, version=0, listed=True, entries=(("a", 0),))
    assert BeatAck(round=0, chunk=0, version=0, refused=(("a", 0),)).refused == (("a", 0),)


def test_entries_travel_only_when_listed():
    with pytest.raises(ValueError, match="listed"):
        Beat(round=0, chunk=0, version=0, entries=(("a", 1),))
    assert Beat(round=0, chunk=0, version=0, listed=True).entries == ()  # an empty list, listed


@pytest.mark.parametrize("cls", [Beat, BeatAck], ids=lambda cls: cls.__name__)
@pytest.mark.parametrize(("field", "value"), [
    ("round", -1), ("round", MAX_ROUND + 1), ("round", True), ("chunk", -1), ("chunk", MAX_ROUND + 1),
    ("chunk", "1"), ("version", -1), ("version", MAX_ROUND + 1), ("version", 1.0), ("term", -1),
    ("term", MAX_TERM + 1),
])
def test_bad_numbers_are_a_value_error(cls, field, value):
    fields: dict[str, object] = {"round": 0, "chunk": 0, "version": 0, field: value}
    with pytest.raises(ValueError, match=field):
        cls(**fields)


def test_bad_flags_and_values_are_a_value_error():
    with pytest.raises(ValueError, match="value"):
        Beat(round=0, chunk=0, version=0, listed=True, value=b"v" * (MAX_VALUE_SIZE + 1))
    with pytest.raises(ValueError, match="value"):
        Beat(round=0, chunk=0, version=0, value="text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Beat(round=0, chunk=0, version=0, listed=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        BeatAck(round=0, chunk=0, version=0, need=None)  # type: ignore[arg-type]


def test_the_fields_are_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        Beat(0, 1, 2, 3)  # type: ignore[misc]
    beat = Beat(round=0, chunk=0, version=0)
    with pytest.raises(AttributeError):
        beat.round = 1  # type: ignore[misc]


@pytest.mark.parametrize("message", [Beat(round=0, chunk=0, version=0), BeatAck(round=0, chunk=0, version=0)],
                         ids=repr)
def test_a_beat_travels_in_the_default_groups_envelope_only(message):
    assert Envelope(sender=1, recipient=2, message=message).group == ""
    with pytest.raises(ValueError, match="belongs to no election group"):
        Envelope(sender=1, recipient=2, message=message, group="jobs")


# ---------------------------------------------------------------------------------------------- rejections

FULL = b"".join(entry(name.encode(), term) for name, term in full_entries())
OVER = b"".join(entry(b"%04d" % i + b"g" * (MAX_GROUP_NAME - 4), 1) for i in range(51))  # 3,723 bytes

DECODE_CASES = [
    # (id, codec, data, reason); None: decodes (the unspoilt versions of the cases around it).
    ("valid", PLAIN, hand_built(7, beat_body(entry(b"a", 1), 1)), None),
    ("valid-full", PLAIN, hand_built(7, beat_body(FULL, len(full_entries()), value=b"v" * MAX_VALUE_SIZE)),
     None),
    ("valid-signed", SIGNED, hand_built(7, beat_body(entry(b"a", 1), 1), secret=SECRET), None),
    ("valid-ack-term-0", PLAIN, hand_built(8, ack_body(entry(b"a", 0), 1)), None),
    ("valid-ack-need", PLAIN, hand_built(8, ack_body(flags=1)), None),
    # A Beat or BeatAck belongs to no group.
    ("beat-group-flag", PLAIN, hand_built(7, b"\x01a" + beat_body(), flags=0x02), "bad_group"),
    ("ack-group-flag", PLAIN, hand_built(8, b"\x01a" + ack_body(), flags=0x02), "bad_group"),
    ("beat-group-flag-signed", SIGNED, hand_built(7, b"\x01a" + beat_body(), flags=0x02, secret=SECRET),
     "bad_group"),
    ("beat-group-flag-bad-name", PLAIN, hand_built(7, b"\x00" + beat_body(), flags=0x02), "bad_group"),
    ("bad-mac-before-bad-group", SIGNED, hand_built(7, b"\x01a" + beat_body(), flags=0x02, secret=b"wrong"),
     "bad_mac"),
    # Entries.
    ("name-length-0", PLAIN, hand_built(7, beat_body(b"\0" + bytes(8), 1)), "bad_field"),
    ("name-length-65", PLAIN, hand_built(7, beat_body(entry(b"x" * 65, 1), 1)), "bad_field"),
    ("name-length-255", PLAIN, hand_built(7, beat_body(b"\xff" + b"x" * 255 + bytes(8), 1)), "bad_field"),
    ("name-space", PLAIN, hand_built(7, beat_body(entry(b"a b", 1), 1)), "bad_field"),
    ("name-not-ascii", PLAIN, hand_built(7, beat_body(entry("é".encode(), 1), 1)), "bad_field"),
    ("name-nul", PLAIN, hand_built(8, ack_body(entry(b"\0", 1), 1)), "bad_field"),
    ("duplicate", PLAIN, hand_built(7, beat_body(entry(b"a", 1) + entry(b"b", 1) + entry(b"a", 2), 3)),
     "bad_field"),
    ("duplicate-refused", PLAIN, hand_built(8, ack_body(entry(b"a", 1) + entry(b"a", 1), 2)), "bad_field"),
    ("beat-term-0", PLAIN, hand_built(7, beat_body(entry(b"a", 0), 1)), "bad_field"),
    ("beat-term-above-max", PLAIN, hand_built(7, beat_body(entry(b"a", MAX_TERM + 1), 1)), "bad_field"),
    ("ack-term-u64-max", PLAIN, hand_built(8, ack_body(entry(b"a", 2**64 - 1), 1)), "bad_field"),
    ("over-budget", PLAIN, hand_built(7, beat_body(OVER, 51)), "bad_field"),
    ("over-budget-refused", PLAIN, hand_built(8, ack_body(OVER, 51)), "bad_field"),
    ("count-absurd", PLAIN, hand_built(7, beat_body(entry(b"a", 1), 0xFFFF)), "bad_field"),
    ("count-371", PLAIN, hand_built(8, ack_body(entry(b"a", 1), 371)), "bad_field"),
    ("entries-not-listed", PLAIN, hand_built(7, beat_body(entry(b"a", 1), 1, flags=0)), "bad_field"),
    ("beat-flag-bit1", PLAIN, hand_built(7, beat_body(flags=0x03)), "bad_field"),
    ("ack-flag-bit2", PLAIN, hand_built(8, ack_body(flags=0x04)), "bad_field"),
    ("value-too-long", PLAIN, hand_built(7, beat_body(value=b"v" * (MAX_VALUE_SIZE + 1))), "bad_field"),
    ("term-above-max-header", PLAIN, hand_built(7, beat_body(), term=MAX_TERM + 1), "bad_field"),
    # Cut short.
    ("no-entry-count", PLAIN, hand_built(7, beat_body()[:-2]), "truncated"),
    ("half-entry-count", PLAIN, hand_built(8, ack_body()[:-1]), "truncated"),
    ("fixed-body-short", PLAIN, hand_built(8, ack_body()[:10]), "truncated"),
    ("no-value-length", PLAIN, hand_built(7, beat_body()[:FIXED_SIZE]), "truncated"),
    ("entry-missing", PLAIN, hand_built(7, beat_body(entry(b"a", 1), 2)), "truncated"),
    ("name-cut", PLAIN, hand_built(7, beat_body(b"\x05abc", 1)), "truncated"),
    ("term-cut", PLAIN, hand_built(7, beat_body(entry(b"a", 1)[:-1], 1)), "truncated"),
    ("signed-term-cut", SIGNED, hand_built(7, beat_body(entry(b"a", 1)[:-1], 1), secret=SECRET), "truncated"),
    # Too long.
    ("trailing", PLAIN, hand_built(7, beat_body(entry(b"a", 1), 1), trailing=b"\0"), "bad_length"),
    ("trailing-ack", PLAIN, hand_built(8, ack_body(), trailing=b"\0" * 9), "bad_length"),
    ("signed-trailing", SIGNED, hand_built(8, ack_body(), trailing=b"\0", secret=SECRET), "bad_length"),
    # Two faults: the earlier in the documented order wins.
    ("entry-before-trailing", PLAIN, hand_built(7, beat_body(entry(b"a", 0), 1), trailing=b"\0"),
     "bad_field"),
    ("truncated-entry-before-not-listed", PLAIN, hand_built(7, beat_body(entry(b"a", 1), 2, flags=0)),
     "truncated"),
    ("trailing-before-not-listed", PLAIN, hand_built(7, beat_body(entry(b"a", 1), 1, flags=0),
                                                     trailing=b"\0"), "bad_length"),
]


@pytest.mark.parametrize(("codec", "data", "reason"), [case[1:] for case in DECODE_CASES],
                         ids=[case[0] for case in DECODE_CASES])
def test_decode_rejections(codec, data, reason):
    if reason is None:
        envelope = codec.decode(data)
        assert isinstance(envelope.message, (Beat, BeatAck))
        assert codec.encode(envelope) == data
    else:
        assert reason_of(codec, data) == reason
        (only,) = codec.decode_frame(data)
        assert isinstance(only, DecodeError) and only.reason == reason


def test_the_over_budget_case_is_within_the_message_limit():
    # So it is rejected for its entries, not for its size.
    assert len(hand_built(7, beat_body(OVER, 51))) < MAX_MESSAGE_SIZE
    assert entries_size(tuple((f"{i:04d}".ljust(MAX_GROUP_NAME, "g"), 1) for i in range(51))) == len(OVER)
    assert len(OVER) > MAX_ENTRIES_SIZE


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=30)
@given(envelope=member_envelopes())
def test_every_truncation_and_extension_is_rejected(codec, envelope):
    data = codec.encode(envelope)
    for size in range(len(data)):
        with pytest.raises(DecodeError) as info:
            codec.decode(data[:size])
        assert info.value.reason in REASONS
    for extra in (b"\0", bytes(8), b"\x01a" + bytes(8)):
        assert reason_of(codec, data + extra) == ("bad_mac" if codec.authenticated else "bad_length")


@settings(max_examples=30)
@given(envelope=member_envelopes())
def test_every_single_bit_flip_of_a_signed_beat_is_rejected(envelope):
    data = bytearray(SIGNED.encode(envelope))
    for bit in range(0, len(data) * 8, 3):  # every third bit keeps this fast; the MAC covers all alike
        data[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(DecodeError):
            SIGNED.decode(bytes(data))
        data[bit // 8] ^= 1 << (bit % 8)


# ---------------------------------------------------------------------------------------------- fuzzing


def decode_or_reject(codec: Codec, data: bytes) -> None:
    """Decode; a rejection is a known DecodeError, an acceptance re-encodes to the same bytes."""
    try:
        envelope = codec.decode(data)
    except DecodeError as exc:
        assert exc.reason in REASONS, exc.reason
        return
    assert codec.encode(envelope) == data


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=300)
@given(type_code=st.sampled_from([BEAT_CODE, BEAT_ACK_CODE]), flags=st.sampled_from([0, 1, 2, 3, 4]),
       body=st.binary(max_size=200) | st.builds(
           lambda head, count, rest: head + struct.pack(">H", count) + rest,
           st.binary(min_size=13, max_size=15), st.integers(0, 5), st.binary(max_size=120)))
def test_random_bodies_of_beats_are_rejected_or_canonical(codec, type_code, flags, body):
    decode_or_reject(codec, hand_built(type_code, body, flags=flags & ~1,
                                       secret=SECRET if codec.authenticated else None))


#: A frame mixing Beats, BeatAcks and group messages (spoilt by mutated_frames of test_codec_groups).
MIXED = member_envelopes(recipient=2) | group_envelopes(recipient=2)


@settings(max_examples=200)
@given(case=mutated_frames(PLAIN, MIXED))
def test_decode_frame_never_raises_on_mutated_frames_of_beats(case):
    _envelopes, data = case
    check_results(PLAIN, data)


@settings(max_examples=200)
@given(case=mutated_frames(SIGNED, MIXED))
def test_mutated_signed_frames_of_beats_yield_only_what_was_sent(case):
    envelopes, data = case
    check_results(SIGNED, data, genuine=envelopes)


# ---------------------------------------------------------------------------------------------- statistics


def test_every_wire_message_type_has_a_kind():
    assert set(MESSAGE_KINDS) == set(WIRE_MESSAGE_TYPES)
    assert (MESSAGE_KINDS[Beat], MESSAGE_KINDS[BeatAck]) == ("beats", "beat_acks")
    assert len(set(MESSAGE_KINDS.values())) == len(MESSAGE_KINDS)


def test_beats_are_counted_sent_and_received():
    stats = MessageStats()
    beat = Beat(round=4, chunk=0, version=1, listed=True, entries=(("a", 2),))
    ack = BeatAck(round=4, chunk=0, version=1)
    stats.sent([Envelope(sender=1, recipient=2, message=beat), Envelope(sender=1, recipient=3, message=beat),
                Outgoing(to=2, message=Heartbeat(term=1, round=9))], 1.0)
    stats.received(2, ack, 1.5)
    stats.received(3, beat, 2.0)
    assert stats.counters == {"messages_sent": 3, "beats_sent": 2, "heartbeats_sent": 1,
                              "beat_acks_received": 1, "beats_received": 1}
    assert stats.last_heard == {2: 1.5, 3: 2.0}


def test_a_beats_round_is_no_heartbeat_round_trip():
    stats = MessageStats()
    stats.sent([Envelope(sender=1, recipient=2, message=Beat(round=4, chunk=0, version=1))], 1.0)
    stats.received(2, HeartbeatResponse(term=1, round=4, candidate=True), 1.5)
    assert stats.round_trip() is None
