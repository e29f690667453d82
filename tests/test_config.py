"""Tests of RaftConfig: the defaults, every validation rule, immutability and the derived properties."""

from __future__ import annotations

import math
import pickle
from fractions import Fraction
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raft_election.config import (
    DEFAULT_ELECTION_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MAX_CLOCK_DRIFT,
    PeerMap,
    RaftConfig,
    freeze_peers,
)
from raft_election.errors import ConfigError, RaftElectionError

PEERS = {1: "127.0.0.1:9001", 2: "127.0.0.1:9002", 3: "127.0.0.1:9003"}
SECRET = "correct horse battery staple"


def make(**changes: Any) -> RaftConfig:
    settings: dict[str, Any] = {"node_id": 1, "peers": dict(PEERS)}
    settings.update(changes)
    return RaftConfig(**settings)


# --- defaults -----------------------------------------------------------------------------------------


def test_defaults_are_valid_and_follow_the_papers_advice():
    config = RaftConfig(node_id=1, peers=PEERS)
    # SPEC §5: election_timeout=(0.150, 0.300), heartbeat_interval=0.050, max_clock_drift=0.05, pre_vote=True,
    # secret=None, cluster="default".
    assert config.election_timeout == (0.150, 0.300)
    assert config.heartbeat_interval == 0.050
    assert config.max_clock_drift == 0.05
    assert config.pre_vote is True
    assert config.candidate is True
    assert config.transfer_on_stop is True
    assert config.secret is None
    assert config.cluster == "default"
    assert (DEFAULT_ELECTION_TIMEOUT, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_MAX_CLOCK_DRIFT) == (
        (0.150, 0.300),
        0.050,
        0.05,
    )


def test_the_spec_example_call_is_valid():
    config = RaftConfig(
        node_id=1,
        peers=PEERS,
        election_timeout=(0.150, 0.300),
        heartbeat_interval=0.050,
        max_clock_drift=0.05,
        pre_vote=True,
        secret=None,
        cluster="default",
    )
    assert config == RaftConfig(node_id=1, peers=PEERS)


def test_derived_properties():
    config = make(node_id=2, election_timeout=(0.2, 0.5))
    assert config.election_timeout_min == 0.2
    assert config.election_timeout_max == 0.5
    assert config.members == (1, 2, 3)
    assert config.peer_ids == (1, 3)


def test_members_and_peer_ids_are_sorted_whatever_the_input_order():
    config = RaftConfig(node_id=5, peers={9: "c", 5: "a", 2: "b"})
    assert config.members == (2, 5, 9)
    assert config.peer_ids == (2, 9)
    assert list(config.peers) == [2, 5, 9]


@pytest.mark.parametrize(("size", "quorum"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)])
def test_quorum_is_a_strict_majority(size, quorum):
    config = RaftConfig(node_id=1, peers={i: f"10.0.0.{i}:9000" for i in range(1, size + 1)})
    assert config.quorum == quorum
    assert 2 * config.quorum > size  # any two quorums intersect (Raft §5.2)
    assert 2 * (config.quorum - 1) <= size  # and it is the smallest such number


def test_election_timeout_accepts_any_pair_of_reals_and_stores_floats():
    for value in ([0.15, 0.3], (Fraction(3, 20), Fraction(3, 10)), range(1, 3)):
        config = make(election_timeout=value, heartbeat_interval=0.01)
        assert isinstance(config.election_timeout, tuple)
        assert all(type(bound) is float for bound in config.election_timeout)
    assert make(election_timeout=[1, 2]).election_timeout == (1.0, 2.0)


def test_heartbeat_of_exactly_a_third_of_the_minimum_timeout_is_accepted():
    # 0.05 * 3 > 0.15 in binary floating point; the rule must still accept the paper's defaults.
    assert 0.05 * 3 > 0.15
    assert make(election_timeout=(0.15, 0.3), heartbeat_interval=0.05).heartbeat_interval == 0.05
    assert make(election_timeout=(0.3, 0.6), heartbeat_interval=0.1).heartbeat_interval == 0.1
    assert make(election_timeout=(0.15, 0.3), heartbeat_interval=0.04).heartbeat_interval == 0.04


def test_numbers_are_stored_as_floats():
    config = make(election_timeout=(3, 6), heartbeat_interval=1, max_clock_drift=0)
    assert type(config.heartbeat_interval) is float
    assert type(config.max_clock_drift) is float


def test_single_member_cluster_is_valid():
    config = RaftConfig(node_id=7, peers={7: "solo"})
    assert config.quorum == 1
    assert config.peer_ids == ()


def test_node_ids_at_the_bounds_are_valid():
    config = RaftConfig(node_id=2**32 - 1, peers={1: "a", 2**32 - 1: "b"})
    assert config.members == (1, 2**32 - 1)


# --- secret -------------------------------------------------------------------------------------------


def test_str_secret_is_encoded_as_utf8():
    assert make(secret=SECRET).secret == SECRET.encode("utf-8")
    assert make(secret="ключ-шестнадцать-байт").secret == "ключ-шестнадцать-байт".encode()


def test_bytes_like_secret_is_stored_as_bytes():
    config = make(secret=bytearray(b"k" * 16))
    assert type(config.secret) is bytes
    assert config.secret == b"k" * 16


def test_secret_is_never_in_repr():
    config = make(secret=SECRET)
    text = repr(config)
    assert SECRET not in text
    assert repr(SECRET.encode()) not in text
    assert "secret=<set>" in text
    assert SECRET not in str(config)
    assert "secret=None" in repr(make())


def test_secret_errors_show_the_length_but_never_the_secret():
    with pytest.raises(ConfigError) as caught:
        make(secret="hunter2-short")
    assert caught.value.field == "secret"
    assert "13 bytes" in str(caught.value)
    assert "hunter2" not in str(caught.value)


# --- invalid values -----------------------------------------------------------------------------------

# (changes to a valid config, the field the error must name, a text the message must contain)
INVALID: list[tuple[dict[str, Any], str, str]] = [
    # node_id
    ({"node_id": 0}, "node_id", "0 is out of range"),
    ({"node_id": -3}, "node_id", "-3 is out of range"),
    ({"node_id": 2**32}, "node_id", str(2**32)),
    ({"node_id": True}, "node_id", "True"),
    ({"node_id": 1.0}, "node_id", "1.0"),
    ({"node_id": "1"}, "node_id", "'1' (str)"),
    ({"node_id": None}, "node_id", "None"),
    ({"node_id": 4}, "node_id", "4 is not one of the members"),
    # peers
    ({"peers": {}}, "peers", "{}"),
    ({"peers": "x"}, "peers", "'x'"),
    ({"peers": [(1, "a")]}, "peers", "[(1, 'a')]"),
    ({"peers": None}, "peers", "None"),
    ({"peers": {"1": "a"}}, "peers", "member id '1' (str)"),
    ({"peers": {True: "a"}}, "peers", "member id True (bool)"),
    ({"peers": {1: "a", 1.5: "b"}}, "peers", "1.5"),
    ({"peers": {1: "a", 0: "b"}}, "peers", "member id 0 "),
    ({"peers": {1: "a", 2**32: "b"}}, "peers", str(2**32)),
    ({"peers": {1: "a", 2: ""}}, "peers", "''"),
    ({"peers": {1: "a", 2: 9002}}, "peers", "9002 (int)"),
    ({"peers": {1: "a", 2: None}}, "peers", "None (NoneType)"),
    ({"peers": {1: "a", 2: " host:1"}}, "peers", "' host:1'"),
    ({"peers": {1: "a", 2: "host:1\n"}}, "peers", "'host:1\\n'"),
    ({"peers": {1: "host:9", 2: "host:9"}}, "peers", "'host:9'"),
    # election_timeout
    ({"election_timeout": 0.15}, "election_timeout", "0.15"),
    ({"election_timeout": None}, "election_timeout", "None"),
    ({"election_timeout": "0.15,0.3"}, "election_timeout", "'0.15,0.3'"),
    ({"election_timeout": (0.15,)}, "election_timeout", "(0.15,)"),
    ({"election_timeout": (0.15, 0.3, 0.45)}, "election_timeout", "(0.15, 0.3, 0.45)"),
    ({"election_timeout": ("0.15", 0.3)}, "election_timeout", "'0.15'"),
    ({"election_timeout": (0.15, True)}, "election_timeout", "True"),
    ({"election_timeout": (0.0, 0.3)}, "election_timeout", "(0.0, 0.3)"),
    ({"election_timeout": (-0.15, 0.3)}, "election_timeout", "-0.15"),
    ({"election_timeout": (0.3, 0.15)}, "election_timeout", "(0.3, 0.15)"),
    ({"election_timeout": (0.15, 0.15)}, "election_timeout", "(0.15, 0.15)"),
    ({"election_timeout": (0.15, math.inf)}, "election_timeout", "inf"),
    ({"election_timeout": (math.nan, 0.3)}, "election_timeout", "nan"),
    ({"election_timeout": (150, 300)}, "election_timeout", "(150, 300)"),
    ({"election_timeout": (1, 61)}, "election_timeout", "(1, 61)"),
    # heartbeat_interval
    ({"heartbeat_interval": 0}, "heartbeat_interval", "0 s must be positive"),
    ({"heartbeat_interval": -0.05}, "heartbeat_interval", "-0.05"),
    ({"heartbeat_interval": math.inf}, "heartbeat_interval", "inf"),
    ({"heartbeat_interval": math.nan}, "heartbeat_interval", "nan"),
    ({"heartbeat_interval": 10**400}, "heartbeat_interval", "1000000"),
    ({"heartbeat_interval": "0.05"}, "heartbeat_interval", "'0.05'"),
    ({"heartbeat_interval": None}, "heartbeat_interval", "None"),
    ({"heartbeat_interval": False}, "heartbeat_interval", "False"),
    ({"heartbeat_interval": 0.1}, "heartbeat_interval", "0.1"),
    ({"heartbeat_interval": 0.0501}, "heartbeat_interval", "0.0501"),
    ({"heartbeat_interval": 50}, "heartbeat_interval", "50.0 s"),
    # max_clock_drift
    ({"max_clock_drift": -0.01}, "max_clock_drift", "-0.01"),
    ({"max_clock_drift": 0.5}, "max_clock_drift", "0.5 is outside"),
    ({"max_clock_drift": 5}, "max_clock_drift", "5 is outside"),
    ({"max_clock_drift": math.nan}, "max_clock_drift", "nan"),
    ({"max_clock_drift": "0.05"}, "max_clock_drift", "'0.05'"),
    ({"max_clock_drift": True}, "max_clock_drift", "True"),
    # the flags
    ({"pre_vote": 1}, "pre_vote", "1 (int)"),
    ({"pre_vote": "yes"}, "pre_vote", "'yes'"),
    ({"pre_vote": None}, "pre_vote", "None"),
    ({"candidate": 0}, "candidate", "0 (int)"),
    ({"candidate": "false"}, "candidate", "'false'"),
    ({"transfer_on_stop": 1}, "transfer_on_stop", "1 (int)"),
    ({"transfer_on_stop": "true"}, "transfer_on_stop", "'true'"),
    # secret: the message shows its length or type, never the value
    ({"secret": b""}, "secret", "0 bytes"),
    ({"secret": ""}, "secret", "0 bytes"),
    ({"secret": b"k" * 15}, "secret", "15 bytes"),
    ({"secret": "k" * 15}, "secret", "15 bytes"),
    ({"secret": 1234567890123456789}, "secret", "int"),
    ({"secret": ["k" * 16]}, "secret", "list"),
    # cluster
    ({"cluster": ""}, "cluster", "''"),
    ({"cluster": "c" * 65}, "cluster", "65 characters"),
    ({"cluster": "tab\there"}, "cluster", "'tab\\there'"),
    ({"cluster": "new\nline"}, "cluster", "'new\\nline'"),
    ({"cluster": None}, "cluster", "None"),
    ({"cluster": b"scheduler"}, "cluster", "b'scheduler'"),
]


@pytest.mark.parametrize(("changes", "field", "shown"), INVALID, ids=[repr(case[0])[:60] for case in INVALID])
def test_invalid_value_raises_config_error_naming_field_and_value(changes, field, shown):
    with pytest.raises(ConfigError) as caught:
        make(**changes)
    assert caught.value.field == field
    assert shown in str(caught.value)
    assert str(caught.value).startswith(f"{field}: ")


@pytest.mark.parametrize(("changes", "field", "shown"), INVALID, ids=[repr(case[0])[:60] for case in INVALID])
def test_evolve_revalidates(changes, field, shown):
    with pytest.raises(ConfigError) as caught:
        make().evolve(**changes)
    assert caught.value.field == field


def test_config_error_is_a_value_error_and_a_library_error():
    with pytest.raises(ValueError):
        make(node_id=0)
    with pytest.raises(RaftElectionError):
        make(node_id=0)


def test_heartbeat_message_names_both_values_and_the_fix():
    with pytest.raises(ConfigError) as caught:
        make(heartbeat_interval=0.1)
    message = str(caught.value)
    assert "0.1 s" in message
    assert "0.15 s" in message
    assert "lower heartbeat_interval or raise election_timeout" in message


def test_election_timeout_in_milliseconds_is_diagnosed():
    with pytest.raises(ConfigError, match="milliseconds"):
        make(election_timeout=(150, 300))


def test_node_id_not_in_peers_lists_the_members():
    with pytest.raises(ConfigError) as caught:
        make(node_id=4)
    assert caught.value.field == "node_id"
    assert "1, 2, 3" in str(caught.value)


def test_duplicate_address_names_both_members():
    with pytest.raises(ConfigError) as caught:
        make(peers={1: "a", 2: "host:9", 3: "host:9"})
    assert "member 2" in str(caught.value)
    assert "member 3" in str(caught.value)


def test_evolve_rejects_unknown_fields_with_a_suggestion():
    with pytest.raises(ConfigError) as caught:
        make().evolve(heartbeat=0.01)
    assert caught.value.field == "heartbeat"
    assert "heartbeat_interval" in str(caught.value)


def test_evolve_applies_changes_and_leaves_the_original_alone():
    config = make()
    changed = config.evolve(node_id=2, pre_vote=False, secret=SECRET)
    assert (changed.node_id, changed.pre_vote, changed.secret) == (2, False, SECRET.encode())
    assert (config.node_id, config.pre_vote, config.secret) == (1, True, None)


# --- immutability -------------------------------------------------------------------------------------


def test_mutating_the_callers_dict_does_not_change_the_config():
    peers = dict(PEERS)
    config = RaftConfig(node_id=1, peers=peers)
    peers[4] = "127.0.0.1:9004"
    peers[2] = "evil:1"
    del peers[3]
    assert dict(config.peers) == PEERS
    assert config.quorum == 2


def test_peers_cannot_be_mutated_through_the_config():
    config = make()
    with pytest.raises(TypeError):
        config.peers[4] = "x"  # type: ignore[index]
    with pytest.raises((TypeError, AttributeError)):
        config.peers.pop(1)  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        config.peers._items = {}  # type: ignore[attr-defined]
    assert dict(config.peers) == PEERS


def test_attribute_assignment_raises():
    config = make()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.node_id = 2  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.heartbeat_interval = 1.0  # type: ignore[misc]
    assert config.node_id == 1


def test_equal_configs_are_equal_hashable_and_picklable():
    first = make(secret=SECRET)
    second = RaftConfig(node_id=1, peers={3: PEERS[3], 2: PEERS[2], 1: PEERS[1]}, secret=SECRET.encode())
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second}) == 1
    assert first != make(secret=SECRET, cluster="other")
    restored = pickle.loads(pickle.dumps(first))
    assert restored == first
    assert isinstance(restored.peers, PeerMap)


def test_peer_map_compares_like_a_mapping():
    peers = freeze_peers(PEERS)
    assert peers == PEERS
    assert PEERS == peers  # noqa: SIM300 - dict.__eq__ must defer to PeerMap.__eq__
    assert peers != {1: "127.0.0.1:9001"}
    assert peers != [1, 2, 3]
    assert repr(peers) == repr(PEERS)


# --- property -----------------------------------------------------------------------------------------

addresses = st.text(min_size=1, max_size=30).filter(lambda text: text.strip() == text and text.isprintable())
printable_names = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=1, max_size=64
).filter(str.isprintable)


@st.composite
def valid_settings(draw: st.DrawFn) -> dict[str, Any]:
    ids = draw(st.lists(st.integers(1, 2**32 - 1), min_size=1, max_size=7, unique=True))
    addrs = draw(st.lists(addresses, min_size=len(ids), max_size=len(ids), unique=True))
    low = draw(st.floats(min_value=1e-3, max_value=59.0))
    high = draw(st.floats(min_value=low, max_value=60.0, exclude_min=True))
    heartbeat = draw(st.floats(min_value=1e-6, max_value=low / 3))
    timeout = draw(st.sampled_from([tuple, list]))((low, high))
    return {
        "node_id": draw(st.sampled_from(ids)),
        "peers": dict(zip(ids, addrs)),
        "election_timeout": timeout,
        "heartbeat_interval": heartbeat,
        "max_clock_drift": draw(st.floats(min_value=0.0, max_value=0.5, exclude_max=True)),
        "pre_vote": draw(st.booleans()),
        "candidate": draw(st.booleans()),
        "transfer_on_stop": draw(st.booleans()),
        "secret": draw(st.none() | st.binary(min_size=16, max_size=64) | st.text(min_size=16, max_size=32)),
        "cluster": draw(printable_names),
    }


@given(valid_settings())
def test_any_valid_settings_validate_and_round_trip_evolve(settings):
    config = RaftConfig(**settings)
    assert attrs.evolve(config) == config
    assert config.evolve() == config
    assert RaftConfig(**attrs.asdict(config, recurse=False)) == config
    assert hash(attrs.evolve(config)) == hash(config)
    assert config.members == tuple(sorted(settings["peers"]))
    assert config.node_id in config.members
    assert config.node_id not in config.peer_ids
    assert len(config.peer_ids) == len(config.members) - 1
    assert config.quorum * 2 > len(config.members) >= 2 * (config.quorum - 1)
    assert config.election_timeout == (
        float(settings["election_timeout"][0]),
        float(settings["election_timeout"][1]),
    )
    assert 3 * config.heartbeat_interval <= config.election_timeout_min * (1 + 1e-9)
    if config.secret is not None:
        assert len(config.secret) >= 16
        assert repr(config.secret) not in repr(config)
