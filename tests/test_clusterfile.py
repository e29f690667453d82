"""Tests of cluster files: TOML and JSON loading, per-member configs, and every error a file can hold."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import attrs
import pytest

from raft_election.clusterfile import TRANSPORTS, ClusterFile, load_cluster_file
from raft_election.config import RaftConfig
from raft_election.errors import ConfigError

SECRET = b"0123456789abcdef0123456789abcdef"
MEMBERS = {1: "127.0.0.1:9001", 2: "127.0.0.1:9002", 3: "127.0.0.1:9003"}

EXAMPLE_TOML = """\
cluster = "scheduler"
transport = "udp"                 # "udp" | "zmq" | "memory"
election_timeout = [0.150, 0.300] # seconds
heartbeat_interval = 0.050
max_clock_drift = 0.05
pre_vote = true
secret_file = "raft.secret"       # relative to this file

[members]
1 = "127.0.0.1:9001"
2 = "127.0.0.1:9002"
3 = "127.0.0.1:9003"
"""

EXAMPLE: dict[str, Any] = {
    "cluster": "scheduler",
    "transport": "udp",
    "election_timeout": [0.150, 0.300],
    "heartbeat_interval": 0.050,
    "max_clock_drift": 0.05,
    "pre_vote": True,
    "secret_file": "raft.secret",
    "members": {"1": "127.0.0.1:9001", "2": "127.0.0.1:9002", "3": "127.0.0.1:9003"},
}


def write_toml(path: Path, document: dict[str, Any]) -> Path:
    """Write a flat settings dict (plus a members table) as TOML; enough for these tests."""
    lines = []
    for key, value in document.items():
        if key != "members":
            lines.append(f"{key} = {toml_value(value)}")
    if "members" in document:
        members = document["members"]
        if isinstance(members, dict):
            lines.append("[members]")
            lines.extend(f'"{key}" = {toml_value(value)}' for key, value in members.items())
        else:
            lines.append(f"members = {toml_value(members)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    return repr(value)


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Path:
    (tmp_path / "raft.secret").write_bytes(SECRET + b"\n")
    return tmp_path


def load_with(tmp_path: Path, **changes: Any) -> ClusterFile:
    """Load the example with some keys changed (a value of ``None`` removes the key)."""
    document = dict(EXAMPLE)
    for key, value in changes.items():
        if value is None:
            document.pop(key, None)
        else:
            document[key] = value
    return load_cluster_file(write_toml(tmp_path / "cluster.toml", document))


# --- loading ------------------------------------------------------------------------------------------


def test_the_documented_toml_example_loads(cluster_dir):
    path = cluster_dir / "cluster.toml"
    path.write_text(EXAMPLE_TOML, encoding="utf-8")
    loaded = load_cluster_file(path)
    assert loaded.path == str(path)
    assert loaded.cluster == "scheduler"
    assert loaded.transport == "udp"
    assert loaded.members == MEMBERS
    assert loaded.election_timeout == (0.150, 0.300)
    assert loaded.heartbeat_interval == 0.050
    assert loaded.max_clock_drift == 0.05
    assert loaded.pre_vote is True
    assert loaded.secret == SECRET


def test_toml_and_json_with_the_same_keys_load_equal(cluster_dir):
    toml_path = cluster_dir / "cluster.toml"
    toml_path.write_text(EXAMPLE_TOML, encoding="utf-8")
    json_path = cluster_dir / "cluster.json"
    json_path.write_text(json.dumps(EXAMPLE), encoding="utf-8")
    from_toml = load_cluster_file(toml_path)
    from_json = load_cluster_file(str(json_path))
    assert from_toml == from_json
    assert hash(from_toml) == hash(from_json)
    assert from_json.path == str(json_path)


def test_loaded_values_are_normalized(cluster_dir):
    loaded = load_with(
        cluster_dir,
        election_timeout=[1, 2],
        heartbeat_interval=0.25,
        max_clock_drift=0,
        secret_file=None,
        secret="s" * 16,
    )
    assert loaded.election_timeout == (1.0, 2.0)
    assert type(loaded.election_timeout) is tuple
    assert type(loaded.max_clock_drift) is float
    assert loaded.max_clock_drift == 0.0
    assert loaded.heartbeat_interval == 0.25
    assert loaded.secret == b"s" * 16


def test_heartbeat_zero_is_not_silently_accepted(cluster_dir):
    with pytest.raises(ConfigError) as caught:
        load_with(cluster_dir, heartbeat_interval=0)
    assert caught.value.field == "heartbeat_interval"


def test_missing_optional_keys_take_the_defaults(tmp_path):
    path = tmp_path / "minimal.toml"
    path.write_text('[members]\n1 = "a:1"\n2 = "b:2"\n3 = "c:3"\n', encoding="utf-8")
    loaded = load_cluster_file(path)
    default = RaftConfig(node_id=1, peers=loaded.members)
    assert loaded.transport == "udp"
    assert loaded.cluster == default.cluster
    assert loaded.election_timeout == default.election_timeout
    assert loaded.heartbeat_interval == default.heartbeat_interval
    assert loaded.max_clock_drift == default.max_clock_drift
    assert loaded.pre_vote is default.pre_vote
    assert loaded.secret is None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_every_transport_is_accepted(cluster_dir, transport):
    assert load_with(cluster_dir, transport=transport).transport == transport


def test_unknown_extension_is_read_as_toml(cluster_dir):
    path = cluster_dir / "cluster.conf"
    path.write_text(EXAMPLE_TOML, encoding="utf-8")
    assert load_cluster_file(path).members == MEMBERS


def test_an_inline_secret_is_encoded(cluster_dir):
    loaded = load_with(cluster_dir, secret_file=None, secret="пароль-пароль-пароль")
    assert loaded.secret == "пароль-пароль-пароль".encode()


def test_loaded_file_is_immutable_and_hides_its_secret(cluster_dir):
    loaded = load_with(cluster_dir)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        loaded.transport = "zmq"  # type: ignore[misc]
    with pytest.raises(TypeError):
        loaded.members[4] = "x"  # type: ignore[index]
    assert SECRET.decode() not in repr(loaded)
    assert "secret=<set>" in repr(loaded)
    assert pickle.loads(pickle.dumps(loaded)) == loaded


# --- secret_file --------------------------------------------------------------------------------------


def test_relative_secret_file_resolves_against_the_cluster_files_directory(tmp_path, monkeypatch):
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (config_dir / "raft.secret").write_bytes(SECRET)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "raft.secret").write_bytes(b"the wrong secret, from the cwd")
    monkeypatch.chdir(elsewhere)
    loaded = load_with(config_dir)
    assert loaded.secret == SECRET


def test_relative_secret_file_in_a_subdirectory_and_relative_cluster_path(tmp_path, monkeypatch):
    (tmp_path / "conf" / "keys").mkdir(parents=True)
    (tmp_path / "conf" / "keys" / "k").write_bytes(SECRET)
    write_toml(tmp_path / "conf" / "c.toml", {**EXAMPLE, "secret_file": "keys/k"})
    monkeypatch.chdir(tmp_path)
    assert load_cluster_file("conf/c.toml").secret == SECRET


def test_absolute_secret_file(tmp_path):
    key = tmp_path / "keys" / "raft.key"
    key.parent.mkdir()
    key.write_bytes(SECRET)
    (tmp_path / "conf").mkdir()
    assert load_with(tmp_path / "conf", secret_file=str(key)).secret == SECRET


@pytest.mark.parametrize(
    ("content", "secret"),
    [
        (SECRET, SECRET),
        (SECRET + b"\n", SECRET),
        (SECRET + b"\r\n", SECRET),
        (SECRET + b"\n\n", SECRET + b"\n"),
        (b" " + SECRET + b" \n", b" " + SECRET + b" "),
    ],
)
def test_secret_file_loses_exactly_one_trailing_newline(tmp_path, content, secret):
    (tmp_path / "raft.secret").write_bytes(content)
    assert load_with(tmp_path).secret == secret


# --- config_for ---------------------------------------------------------------------------------------


def test_config_for_gives_each_member_its_config(cluster_dir):
    loaded = load_with(cluster_dir)
    for node_id in MEMBERS:
        config = loaded.config_for(node_id)
        assert config.node_id == node_id
        assert config.peers == MEMBERS
        assert config.peer_ids == tuple(sorted(set(MEMBERS) - {node_id}))
        assert config.cluster == "scheduler"
        assert config.election_timeout == (0.150, 0.300)
        assert config.heartbeat_interval == 0.050
        assert config.max_clock_drift == 0.05
        assert config.pre_vote is True
        assert config.secret == SECRET


def test_config_for_applies_per_node_overrides(cluster_dir):
    loaded = load_with(cluster_dir, pre_vote=False)
    config = loaded.config_for(3, candidate=False, transfer_on_stop=False)
    assert (config.candidate, config.transfer_on_stop, config.pre_vote) == (False, False, False)
    assert loaded.config_for(3, heartbeat_interval=0.01).heartbeat_interval == 0.01


@pytest.mark.parametrize("node_id", [4, 0, -1, True, "1", None, 1.0])
def test_config_for_a_non_member_names_the_id_field(cluster_dir, node_id):
    loaded = load_with(cluster_dir)
    with pytest.raises(ConfigError) as caught:
        loaded.config_for(node_id)
    assert caught.value.field == "id"
    assert repr(node_id) in str(caught.value)


def test_config_for_a_non_member_lists_the_members(cluster_dir):
    with pytest.raises(ConfigError) as caught:
        load_with(cluster_dir).config_for(4)
    assert "1, 2, 3" in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"peers": {1: "a"}}, "peers"),
        ({"heartbeat": 0.01}, "heartbeat"),
        ({"candidate": "no"}, "candidate"),
        ({"heartbeat_interval": 1.0}, "heartbeat_interval"),
    ],
)
def test_config_for_rejects_bad_overrides(cluster_dir, overrides, field):
    with pytest.raises(ConfigError) as caught:
        load_with(cluster_dir).config_for(1, **overrides)
    assert caught.value.field == field


# --- errors -------------------------------------------------------------------------------------------

# (keys to change in the example, or None to remove, the field the error must name, a text it must contain)
BAD_SETTINGS: list[tuple[dict[str, Any], str, str]] = [
    ({"heartbeat": 0.05}, "heartbeat", "did you mean 'heartbeat_interval'?"),
    ({"election_timeout_ms": [150, 300]}, "election_timeout_ms", "did you mean 'election_timeout'?"),
    ({"colour": "blue"}, "colour", "'colour'"),
    ({"members": None}, "members", "no members table"),
    ({"members": ["a:1", "b:2"]}, "members", "['a:1', 'b:2']"),
    ({"members": {}}, "members", "{} is empty"),
    ({"members": {"0": "a:1"}}, "members", "'0'"),
    ({"members": {"-1": "a:1"}}, "members", "'-1'"),
    ({"members": {"one": "a:1"}}, "members", "'one'"),
    ({"members": {"01": "a:1", "1": "b:2"}}, "members", "'01'"),
    ({"members": {"1.5": "a:1"}}, "members", "'1.5'"),
    ({"members": {" 1": "a:1"}}, "members", "' 1'"),
    ({"members": {"4294967296": "a:1"}}, "members", "'4294967296'"),
    ({"members": {"1": "a:1", "2": "a:1"}}, "members", "'a:1' is given to both member 1 and member 2"),
    ({"members": {"1": "a:1", "2": ""}}, "members", "''"),
    ({"members": {"1": "a:1", "2": 9002}}, "members", "9002 (int)"),
    ({"members": {"1": "a:1", "2": " b:2"}}, "members", "' b:2'"),
    ({"transport": "tcp"}, "transport", "'tcp'"),
    ({"transport": "zeromq"}, "transport", "did you mean 'zmq'?"),
    ({"transport": 1}, "transport", "1 is not a known transport"),
    ({"secret": "s" * 16}, "secret", "both secret and secret_file"),
    ({"secret_file": "missing.secret"}, "secret_file", "missing.secret"),
    ({"secret_file": ""}, "secret_file", "''"),
    ({"secret_file": 7}, "secret_file", "7 must be a non-empty string"),
    ({"secret_file": None, "secret": "short"}, "secret", "5 bytes"),
    ({"secret_file": None, "secret": ""}, "secret", "0 bytes"),
    ({"secret_file": None, "secret": 1234}, "secret", "type int"),
    ({"election_timeout": [150, 300]}, "election_timeout", "milliseconds"),
    ({"election_timeout": [0.3, 0.15]}, "election_timeout", "[0.3, 0.15]"),
    ({"election_timeout": 0.15}, "election_timeout", "0.15 (float)"),
    ({"election_timeout": [0.15]}, "election_timeout", "[0.15]"),
    ({"heartbeat_interval": 0.1}, "heartbeat_interval", "0.1 s must be at most a third"),
    ({"heartbeat_interval": "fast"}, "heartbeat_interval", "'fast'"),
    ({"max_clock_drift": 0.5}, "max_clock_drift", "0.5 is outside"),
    ({"pre_vote": "yes"}, "pre_vote", "'yes'"),
    ({"pre_vote": 1}, "pre_vote", "1 (int)"),
    ({"cluster": ""}, "cluster", "''"),
    ({"cluster": "c" * 65}, "cluster", "65 characters"),
    ({"cluster": 5}, "cluster", "5 (int)"),
]


@pytest.mark.parametrize(
    ("changes", "field", "shown"), BAD_SETTINGS, ids=[repr(case[0])[:50] for case in BAD_SETTINGS]
)
@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_bad_setting_raises_config_error_naming_field_and_file(cluster_dir, changes, field, shown, fmt):
    document = dict(EXAMPLE)
    for key, value in changes.items():
        if value is None:
            document.pop(key)
        else:
            document[key] = value
    if fmt == "toml":
        path = write_toml(cluster_dir / "cluster.toml", document)
    else:
        path = cluster_dir / "cluster.json"
        path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_cluster_file(path)
    assert caught.value.field == field
    assert shown in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_short_secret_file_is_reported_against_secret_file(tmp_path):
    (tmp_path / "raft.secret").write_bytes(b"tooshort\n")
    with pytest.raises(ConfigError) as caught:
        load_with(tmp_path)
    assert caught.value.field == "secret_file"
    assert "8 bytes" in str(caught.value)
    assert "tooshort" not in str(caught.value)


def test_an_empty_secret_file_is_reported(tmp_path):
    (tmp_path / "raft.secret").write_bytes(b"\n")
    with pytest.raises(ConfigError) as caught:
        load_with(tmp_path)
    assert caught.value.field == "secret_file"
    assert "0 bytes" in str(caught.value)


def test_a_secret_file_that_is_a_directory_is_unreadable(tmp_path):
    (tmp_path / "raft.secret").mkdir()
    with pytest.raises(ConfigError) as caught:
        load_with(tmp_path)
    assert caught.value.field == "secret_file"


def test_missing_cluster_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_cluster_file(path)
    assert caught.value.field == "path"
    assert str(path) in str(caught.value)
    assert "No such file" in str(caught.value)


def test_cluster_file_that_is_a_directory(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_cluster_file(tmp_path)
    assert caught.value.field == "path"
    assert str(tmp_path) in str(caught.value)


def test_toml_syntax_error_carries_the_parsers_message(tmp_path):
    path = tmp_path / "cluster.toml"
    path.write_text('cluster = "scheduler\n[members]\n1 = "a:1"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_cluster_file(path)
    assert caught.value.field == "path"
    assert str(path) in str(caught.value)
    assert "not valid TOML" in str(caught.value)
    assert "line 1" in str(caught.value)


def test_json_syntax_error_carries_the_parsers_message(tmp_path):
    path = tmp_path / "cluster.json"
    path.write_text('{"members": {"1": "a:1",}}', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_cluster_file(path)
    assert caught.value.field == "path"
    assert "not valid JSON" in str(caught.value)
    assert "line 1 column" in str(caught.value)


def test_json_in_a_file_without_a_known_extension_is_reported_as_toml(tmp_path):
    path = tmp_path / "cluster.cfg"
    path.write_text(json.dumps({"members": {"1": "a:1"}}), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_cluster_file(path)
    assert caught.value.field == "path"
    assert "'.cfg' is neither .toml nor .json" in str(caught.value)


def test_json_duplicate_keys_are_refused(tmp_path):
    path = tmp_path / "cluster.json"
    path.write_text('{"members": {"1": "a:1", "1": "b:2"}}', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_cluster_file(path)
    assert caught.value.field == "path"
    assert "'1'" in str(caught.value)


def test_json_top_level_must_be_an_object(tmp_path):
    path = tmp_path / "cluster.json"
    path.write_text('[{"members": {"1": "a:1"}}]', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_cluster_file(path)
    assert caught.value.field == "path"
    assert "list" in str(caught.value)


def test_non_utf8_file(tmp_path):
    path = tmp_path / "cluster.toml"
    path.write_bytes(b'cluster = "\xff"\n')
    with pytest.raises(ConfigError) as caught:
        load_cluster_file(path)
    assert caught.value.field == "path"
    assert "UTF-8" in str(caught.value)


# --- direct construction ------------------------------------------------------------------------------


def test_constructing_a_cluster_file_directly_validates_it():
    built = ClusterFile(path="<test>", members=dict(MEMBERS), transport="memory")
    assert built.members == MEMBERS
    assert built.config_for(2).peer_ids == (1, 3)
    with pytest.raises(ConfigError) as caught:
        ClusterFile(path="<test>", members=dict(MEMBERS), heartbeat_interval=0.2)
    assert caught.value.field == "heartbeat_interval"
    assert "<test>" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        ClusterFile(path="<test>", members={1: "a", 2: "a"})
    assert caught.value.field == "members"
    with pytest.raises(ConfigError) as caught:
        ClusterFile(path="<test>", members=dict(MEMBERS), transport="carrier-pigeon")
    assert caught.value.field == "transport"


def test_members_are_copied_at_construction():
    members = dict(MEMBERS)
    built = ClusterFile(path="<test>", members=members)
    members[4] = "x:4"
    assert built.members == MEMBERS
