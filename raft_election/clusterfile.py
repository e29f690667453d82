"""Cluster files: one TOML or JSON file that describes a whole cluster and serves every member.

A cluster file lists the members (id → transport address) and the settings all members must share::

    cluster = "scheduler"
    transport = "udp"                 # "udp" | "zmq" | "memory"
    election_timeout = [0.150, 0.300] # seconds
    heartbeat_interval = 0.050
    max_clock_drift = 0.05
    pre_vote = true
    fast_failover = true              # replace a dead leader on transport evidence (README)
    secret_file = "raft.secret"       # relative to this file; or: secret = "..." (not both)

    [members]
    1 = "127.0.0.1:9001"
    2 = "127.0.0.1:9002"
    3 = "127.0.0.1:9003"

    [admin]                           # optional: where each member answers raft-election status
    1 = "127.0.0.1:9101"
    2 = "127.0.0.1:9102"
    3 = "127.0.0.1:9103"

Each process then picks its own identity with :meth:`ClusterFile.config_for`.  The file is validated in full
when it is loaded (every :class:`~raft_election.config.RaftConfig` rule included), so a mistake stops every
member at start-up with a :class:`~raft_election.errors.ConfigError` naming the key, the file and the fix,
instead of surfacing later as a node that cannot join.

With membership changes (``raft-election members add|remove``, thesis ch. 4) the file's ``[members]`` is
the **seed list**: the configuration a member starts with when its data directory holds none.  A member
keeps every configuration entry it receives in its data directory (with its term and vote), and one
stored there takes precedence over the file at the next start, so a member restarted from an old file
still uses the current configuration; a member started afresh from an old file learns the current one
from the leader's heartbeats as long as the leader's configuration lists it.  A new member runs with
``run --join`` and a file that lists the current members and itself.  Keep the file up to date after each
change all the same (members, and ``[admin]`` for ``raft-election status`` and ``members``).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
from collections.abc import Mapping
from typing import Any, Optional, Tuple

import attrs

from raft_election.config import (
    DEFAULT_CLUSTER,
    DEFAULT_ELECTION_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MAX_CLOCK_DRIFT,
    MIN_SECRET_BYTES,
    PeerMap,
    RaftConfig,
    check_field_names,
    freeze_peers,
)
from raft_election.errors import ConfigError
from raft_election.messages import MAX_NODE_ID

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

__all__ = ["KNOWN_KEYS", "TRANSPORTS", "ClusterFile", "load_cluster_file", "read_secret_file"]

#: The transports a cluster file may name (``transports.udp``, ``transports.zeromq``, ``transports.memory``).
TRANSPORTS = ("udp", "zmq", "memory")
DEFAULT_TRANSPORT = "udp"

#: The :class:`RaftConfig` settings a cluster file gives every member alike.
_SHARED_SETTINGS = (
    "cluster",
    "election_timeout",
    "heartbeat_interval",
    "max_clock_drift",
    "pre_vote",
    "fast_failover",
    "secret",
)
#: Every top-level key a cluster file may contain.
KNOWN_KEYS = (*_SHARED_SETTINGS, "transport", "secret_file", "members", "admin")

# Settings that the file fixes for every member; config_for() must not override them per node.
_FROM_FILE_ONLY = ("node_id", "peers")

# A member id as written in the file: a positive decimal integer in canonical form.  Leading zeros are
# refused so that "1" and "01" cannot silently name the same member.
_MEMBER_ID = re.compile(r"[1-9][0-9]*")

_EXAMPLE_MEMBERS = '[members] 1 = "127.0.0.1:9001", 2 = "127.0.0.1:9002", 3 = "127.0.0.1:9003"'


def _show_secret(secret: Optional[bytes]) -> str:
    return "None" if secret is None else "<set>"


def _message_of(error: ConfigError) -> str:
    """Return the message of ``error`` without the ``"field: "`` prefix that ``ConfigError`` adds."""
    text = str(error)
    prefix = f"{error.field}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def _check_transport(instance: ClusterFile, attribute: attrs.Attribute[str], value: object) -> None:
    if value in TRANSPORTS:
        return
    choices = ", ".join(repr(name) for name in TRANSPORTS)
    close = difflib.get_close_matches(str(value).lower(), TRANSPORTS, n=1) if isinstance(value, str) else []
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(
        "transport", f"{value!r} is not a known transport; {hint}use one of {choices} (in {instance.path})"
    )


@attrs.frozen(kw_only=True)
class ClusterFile:
    """The validated contents of a cluster file.

    Two cluster files are equal when they describe the same cluster, wherever they are stored: ``path`` is
    kept for error messages and does not take part in comparisons.  Constructing one directly validates it
    exactly as :func:`load_cluster_file` does.

    Raises:
        ConfigError: when a value breaks a rule of the file or of :class:`RaftConfig`.
    """

    path: str = attrs.field(eq=False)
    cluster: str = DEFAULT_CLUSTER
    transport: str = attrs.field(default=DEFAULT_TRANSPORT, validator=_check_transport)
    members: Mapping[int, str]
    election_timeout: Tuple[float, float] = DEFAULT_ELECTION_TIMEOUT
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    max_clock_drift: float = DEFAULT_MAX_CLOCK_DRIFT
    pre_vote: bool = True
    fast_failover: bool = True
    secret: Optional[bytes] = attrs.field(default=None, repr=_show_secret)
    #: Each member's admin address (see :mod:`raft_election.admin`), for the members that have one.
    admin: Mapping[int, str] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        """Validate the shared settings as a config of the first member, and keep their normalized form.

        Failing here, at load time, makes a bad file stop every member at once; keeping the normalized
        values (floats, a tuple, bytes) makes a TOML file and an equivalent JSON file load equal.
        """
        try:
            object.__setattr__(self, "members", freeze_peers(self.members, "members"))
            config = self.config_for(next(iter(self.members)))
        except ConfigError as error:
            raise ConfigError(error.field, f"{_message_of(error)} (in {self.path})") from None
        for name in _SHARED_SETTINGS:
            object.__setattr__(self, name, getattr(config, name))
        object.__setattr__(self, "admin", self._checked_admin())

    def _checked_admin(self) -> Mapping[int, str]:
        from raft_election.admin import parse_address  # noqa: PLC0415 (admin imports the node)

        if not isinstance(self.admin, Mapping):
            raise ConfigError("admin", f"{self.admin!r} must be a table of member id to host:port, e.g. "
                                       f'[admin] 1 = "127.0.0.1:9101" (in {self.path})')
        admin = freeze_peers(self.admin, "admin") if self.admin else PeerMap({})
        for node_id, address in admin.items():
            if node_id not in self.members:
                raise ConfigError("admin", f"{node_id} has an admin address but is not a member; list it in "
                                           f"[members] too, or remove it from [admin] (in {self.path})")
            try:
                parse_address(address)
            except ConfigError as error:
                raise ConfigError("admin", f"member {node_id}: {_message_of(error)} (in {self.path})") \
                    from None
        return admin

    def config_for(self, node_id: int, **overrides: Any) -> RaftConfig:
        """Return the :class:`RaftConfig` of member ``node_id``.

        Args:
            node_id: this process's member id; must be a key of ``members``.
            overrides: per-node settings, e.g. ``candidate=False`` or ``transfer_on_stop=False``; any
                :class:`RaftConfig` field except ``node_id`` and ``peers``, which the file fixes.

        Raises:
            ConfigError: ``field == "id"`` if ``node_id`` is not a member; the override's name if it is not a
                field or may not be overridden; a field's name if the resulting config is invalid.
        """
        if isinstance(node_id, bool) or not isinstance(node_id, int):
            raise ConfigError(
                "id",
                f"{node_id!r} ({type(node_id).__name__}) must be an int member id, e.g. 1 (in {self.path})",
            )
        if node_id not in self.members:
            members = ", ".join(str(member) for member in self.members)
            raise ConfigError(
                "id",
                f"{node_id!r} is not a member of cluster {self.cluster!r} in {self.path}; use one of "
                f"{members}, or add it to the file's [members] table",
            )
        check_field_names(overrides, "RaftConfig field")
        for name in _FROM_FILE_ONLY:
            if name in overrides:
                raise ConfigError(
                    name, f"cannot be overridden per node: it is set by the cluster file {self.path}"
                )
        settings: dict[str, Any] = {
            "cluster": self.cluster,
            "election_timeout": self.election_timeout,
            "heartbeat_interval": self.heartbeat_interval,
            "max_clock_drift": self.max_clock_drift,
            "pre_vote": self.pre_vote,
            "fast_failover": self.fast_failover,
            "secret": self.secret,
        }
        settings.update(overrides)
        return RaftConfig(node_id=node_id, peers=self.members, **settings)


class _DuplicateKeyError(Exception):
    """A JSON object repeats a key (``json`` would silently keep the last value)."""


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def _parse(path: str, text: str) -> object:
    """Parse ``text`` as JSON or TOML according to the extension of ``path``."""
    extension = os.path.splitext(path)[1].lower()
    if extension == ".json":
        try:
            return json.loads(text, object_pairs_hook=_json_object)
        except json.JSONDecodeError as error:
            raise ConfigError("path", f"{path} is not valid JSON: {error}; fix the syntax") from None
        except _DuplicateKeyError as error:
            raise ConfigError(
                "path", f"{path} repeats the key {error.args[0]!r} in one object; keep only one"
            ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        if extension == ".toml":
            raise ConfigError("path", f"{path} is not valid TOML: {error}; fix the syntax") from None
        raise ConfigError(
            "path",
            f"{path} is not valid TOML: {error}; its extension {extension or '(none)'!r} is neither .toml "
            "nor .json, so it was read as TOML; fix the syntax, or name it *.json if it is JSON",
        ) from None


def _member_id(key: object, path: str) -> int:
    """Convert a member key of the file (always a string in TOML and JSON) to a node id."""
    text = key if isinstance(key, str) else str(key)
    if _MEMBER_ID.fullmatch(text) and int(text) <= MAX_NODE_ID:
        return int(text)
    raise ConfigError(
        "members",
        f"member id {text!r} is not a positive integer; write ids as plain decimal integers from 1 to "
        f"{MAX_NODE_ID} without sign, spaces or leading zeros, e.g. {_EXAMPLE_MEMBERS} (in {path})",
    )


def _read_secret_file(value: object, path: str) -> bytes:
    """Read the secret file named by ``value``, relative to the directory of the cluster file ``path``."""
    if not isinstance(value, str) or not value:
        raise ConfigError(
            "secret_file",
            f"{value!r} must be a non-empty string naming the file that holds the secret, "
            f"e.g. 'raft.secret' (in {path})",
        )
    secret_path = os.path.join(os.path.dirname(os.path.abspath(path)), value)
    return _load_secret(secret_path, f" (in {path})",
                        " (a relative secret_file is relative to the cluster file)")


def read_secret_file(path: str | os.PathLike[str]) -> bytes:
    """Read a cluster secret from the file ``path``, by the rules of a cluster file's ``secret_file``.

    For commands that take the secret apart from the cluster file (``--secret-file``): one trailing
    newline (LF or CR LF) is removed, and the rest must be at least ``MIN_SECRET_BYTES`` bytes.

    Raises:
        ConfigError: ``field == "secret_file"``: the file cannot be read or holds too short a secret.
    """
    return _load_secret(os.fspath(path), "", "")


def _load_secret(secret_path: str, where: str, relative: str) -> bytes:
    """Read ``secret_path``; ``where`` ends each message (the cluster file), ``relative`` hints at paths.

    One trailing newline (LF or CR LF) is removed, since editors and ``echo`` add one.
    """
    try:
        with open(secret_path, "rb") as stream:
            secret = stream.read()
    except OSError as error:
        raise ConfigError(
            "secret_file",
            f"cannot read the secret file {secret_path!r}: {error.strerror or error}; check that it exists "
            f"and is readable{relative}{where}",
        ) from None
    if secret.endswith(b"\r\n"):
        secret = secret[:-2]
    elif secret.endswith(b"\n"):
        secret = secret[:-1]
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            "secret_file",
            f"the secret file {secret_path!r} holds only {len(secret)} bytes (not counting one trailing "
            f"newline); an HMAC-SHA256 key needs at least {MIN_SECRET_BYTES} bytes (128 bits) to resist "
            "brute-force guessing; fill it with e.g. the output of "
            f"python3 -c 'import secrets; print(secrets.token_hex(32))'{where}",
        )
    return secret


def load_cluster_file(path: str | os.PathLike[str]) -> ClusterFile:
    """Load and validate a cluster file.

    The format follows the extension: ``.json`` is JSON, ``.toml`` and anything else TOML.  Missing optional
    keys take :class:`RaftConfig`'s defaults (``transport`` defaults to ``"udp"``).

    Args:
        path: the cluster file.  A relative ``secret_file`` in it is relative to this file's directory.

    Returns:
        The validated file; call :meth:`ClusterFile.config_for` with a member id to get a node's config.

    Raises:
        ConfigError: if the file cannot be read or parsed, has an unknown key, lacks ``members``, or breaks
            any rule; ``.field`` names the key at fault (``"path"`` for the file itself), and the message
            names the file.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as stream:
            raw = stream.read()
    except OSError as error:
        raise ConfigError(
            "path", f"cannot read the cluster file {path!r}: {error.strerror or error}; check the path"
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError("path", f"{path} is not UTF-8 text ({error}); save it as UTF-8") from None

    document = _parse(path, text)
    if not isinstance(document, dict):
        raise ConfigError(
            "path", f"{path} must hold a table of settings at the top level, not a {type(document).__name__}"
        )
    for key in document:
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                key, f"unknown key {key!r} in {path}; {hint}the known keys are {', '.join(KNOWN_KEYS)}"
            )

    if "members" not in document:
        raise ConfigError(
            "members",
            f"{path} has no members table; list every member's id and address, e.g. {_EXAMPLE_MEMBERS}",
        )
    table = document["members"]
    if not isinstance(table, dict):
        raise ConfigError(
            "members",
            f"{table!r} must be a table of member id to address, e.g. {_EXAMPLE_MEMBERS} (in {path})",
        )
    members = {_member_id(key, path): address for key, address in table.items()}

    settings = {key: value for key, value in document.items()
                if key not in ("members", "secret_file", "admin")}
    table = document.get("admin", {})
    if not isinstance(table, dict):
        raise ConfigError("admin", f"{table!r} must be a table of member id to host:port, e.g. "
                                   f'[admin] 1 = "127.0.0.1:9101" (in {path})')
    settings["admin"] = {_member_id(key, path): address for key, address in table.items()}
    if "secret_file" in document:
        if "secret" in document:
            raise ConfigError(
                "secret",
                f"{path} sets both secret and secret_file; keep only one of them "
                "(secret_file keeps the secret out of the cluster file)",
            )
        settings["secret"] = _read_secret_file(document["secret_file"], path)

    return ClusterFile(path=path, members=members, **settings)
