"""The configuration of one node: validated once, at construction, then immutable.

:class:`RaftConfig` is a frozen value object.  Every rule is checked when it is built (and again by
:meth:`RaftConfig.evolve`), so a node never starts with settings that would break the algorithm's safety or
liveness, and every mistake is reported as a :class:`~raft_election.errors.ConfigError` that names the
field, shows the offending value and says how to fix it, in the manner of hashicorp/raft's
``ValidateConfig``.  Wrong *types* are configuration mistakes too: they raise ``ConfigError``, never a
``TypeError`` from deep inside the library.

The defaults are the advice of the Raft paper (§5.6, §9.3): an election timeout drawn from
150-300 ms and a heartbeat several times shorter than the shortest timeout.
"""

from __future__ import annotations

import difflib
import math
import numbers
import reprlib
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Tuple, Union

import attrs

from raft_election.errors import ConfigError
from raft_election.messages import MAX_NODE_ID, MAX_VALUE_SIZE
from raft_election.peers import PeerMap, freeze_peers, show_value, type_name

__all__ = [
    "DEFAULT_CLUSTER",
    "DEFAULT_ELECTION_TIMEOUT",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_MAX_CLOCK_DRIFT",
    "MAX_CLUSTER_NAME_LENGTH",
    "MAX_ELECTION_TIMEOUT",
    "MIN_SECRET_BYTES",
    "PeerMap",
    "RaftConfig",
    "check_field_names",
    "check_settings",
    "leader_value",
    "value_text",
    "freeze_peers",
]

#: Seconds; the Raft paper's advice (§9.3): wide enough that split votes are rare, short enough to fail over
#: fast on a LAN.
DEFAULT_ELECTION_TIMEOUT: Tuple[float, float] = (0.150, 0.300)
#: Seconds; a third of the minimum election timeout, so two heartbeats may be lost before anyone campaigns.
DEFAULT_HEARTBEAT_INTERVAL = 0.050
#: The fraction by which two clocks' rates may differ; shortens the leader lease (thesis §6.4.1).
DEFAULT_MAX_CLOCK_DRIFT = 0.05
DEFAULT_CLUSTER = "default"

#: Seconds.  Larger values are almost always milliseconds passed by mistake.
MAX_ELECTION_TIMEOUT = 60.0
#: HMAC-SHA256 keys shorter than 128 bits can be brute-forced offline from one captured message.
MIN_SECRET_BYTES = 16
MAX_CLUSTER_NAME_LENGTH = 64

# The heartbeat may equal a third of the minimum timeout; 0.05 * 3 > 0.15 in binary floating point, so the
# comparison allows this much relative slack (far below anything that matters on a real clock).
_RELATIVE_TOLERANCE = 1e-9

_EXAMPLE_TIMEOUT = "e.g. (0.15, 0.3)"

def _seconds(field: str, value: object, what: str) -> float:
    """Convert a real number (not ``bool``) to a finite ``float``, or raise ``ConfigError(field)``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(field, f"{show_value(value)} ({type_name(value)}) is not a number; {what}")
    try:
        seconds = float(value)
    except (OverflowError, TypeError, ValueError):
        seconds = math.inf
    if not math.isfinite(seconds):
        raise ConfigError(field, f"{show_value(value)} is not finite; {what}")
    return seconds


def _convert_election_timeout(value: Sequence[float]) -> tuple[float, float]:
    """Check the ``(min, max)`` election timeout range and return it as a tuple of floats.

    The timeout is drawn at random from the range so that servers rarely time out together and split
    the vote (Raft §5.2), hence ``min < max``.
    """
    raw: object = value
    what = f"give (min, max) in seconds, {_EXAMPLE_TIMEOUT}"
    if isinstance(raw, (str, bytes, bytearray)) or not isinstance(raw, Sequence):
        raise ConfigError(
            "election_timeout",
            f"{show_value(raw)} ({type_name(raw)}) must be a pair (min, max) of seconds, {_EXAMPLE_TIMEOUT}",
        )
    if len(raw) != 2:
        raise ConfigError(
            "election_timeout",
            f"{show_value(raw)} has {len(raw)} items; it must be a pair (min, max) of seconds, "
            f"{_EXAMPLE_TIMEOUT}",
        )
    low = _seconds("election_timeout", raw[0], f"{show_value(raw)}: {what}")
    high = _seconds("election_timeout", raw[1], f"{show_value(raw)}: {what}")
    if low <= 0:
        raise ConfigError(
            "election_timeout", f"{show_value(raw)}: the minimum ({low!r} s) must be positive; {what}"
        )
    if low >= high:
        raise ConfigError(
            "election_timeout",
            f"{show_value(raw)}: the minimum ({low!r} s) must be less than the maximum ({high!r} s), because "
            "the "
            "timeout is drawn at random from the range so that servers rarely time out together and split "
            f"the vote (Raft §5.2); {_EXAMPLE_TIMEOUT}",
        )
    if high > MAX_ELECTION_TIMEOUT:
        raise ConfigError(
            "election_timeout",
            f"{show_value(raw)}: the maximum ({high!r} s) is over {MAX_ELECTION_TIMEOUT:g} s; did you pass "
            f"milliseconds? The timeouts are in seconds, {_EXAMPLE_TIMEOUT}",
        )
    return (low, high)


def _convert_heartbeat_interval(value: float) -> float:
    """Check that the heartbeat interval is a positive, finite number of seconds."""
    what = "give the interval between leader heartbeats in seconds, e.g. 0.05"
    interval = _seconds("heartbeat_interval", value, what)
    if interval <= 0:
        raise ConfigError("heartbeat_interval", f"{show_value(value)} s must be positive; {what}")
    return interval


def _convert_max_clock_drift(value: float) -> float:
    """Check that the clock drift bound is a fraction in ``[0, 0.5)``."""
    what = (
        "give the fraction by which two clocks' rates may differ, in [0, 0.5), e.g. 0.05; the leader "
        "lease is shortened by it (thesis §6.4.1)"
    )
    drift = _seconds("max_clock_drift", value, what)
    if not 0 <= drift < 0.5:
        raise ConfigError("max_clock_drift", f"{show_value(value)} is outside [0, 0.5); {what}")
    return drift


def _check_bool(instance: object, attribute: attrs.Attribute[bool], value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(attribute.name, f"{show_value(value)} ({type_name(value)}) must be True or False")


def _convert_secret(value: Union[bytes, str, None]) -> Optional[bytes]:
    """Check the shared HMAC secret and return it as bytes (a ``str`` is encoded as UTF-8).

    Error messages show the secret's length, never its content: they end up in logs.
    """
    raw: object = value
    if raw is None:
        return None
    if isinstance(raw, str):
        secret = raw.encode("utf-8")
    elif isinstance(raw, (bytes, bytearray, memoryview)):
        secret = bytes(raw)
    else:
        raise ConfigError(
            "secret",
            f"a value of type {type_name(raw)} was given; the secret must be bytes, str or None "
            "(None disables message authentication)",
        )
    if not secret:
        raise ConfigError(
            "secret",
            "is empty (0 bytes); use None to disable message authentication, or give at least "
            f"{MIN_SECRET_BYTES} random bytes, e.g. secrets.token_hex(32)",
        )
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            "secret",
            f"is only {len(secret)} bytes long; an HMAC-SHA256 key needs at least {MIN_SECRET_BYTES} bytes "
            "(128 bits) to resist brute-force guessing; generate one with secrets.token_hex(32)",
        )
    return secret


def _check_node_id(instance: RaftConfig, attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            "node_id",
            f"{show_value(value)} ({type_name(value)}) must be an int in [1, {MAX_NODE_ID}], e.g. node_id=1",
        )
    if not 1 <= value <= MAX_NODE_ID:
        raise ConfigError(
            "node_id", f"{value} is out of range; node ids are integers from 1 to {MAX_NODE_ID}"
        )
    if value not in instance.peers:
        members = ", ".join(str(member) for member in instance.peers)
        raise ConfigError(
            "node_id",
            f"{value} is not one of the members ({members}); peers must include this node itself, so add "
            f"{value} to peers with its own address, or use one of those ids",
        )


def _check_heartbeat_fits(instance: RaftConfig, attribute: attrs.Attribute[float], value: float) -> None:
    minimum = instance.election_timeout[0]
    if value * 3 > minimum * (1 + _RELATIVE_TOLERANCE):
        raise ConfigError(
            "heartbeat_interval",
            f"{value!r} s must be at most a third of the minimum election timeout ({minimum!r} s) so the "
            "leader renews its lease before it runs out; lower heartbeat_interval or raise "
            "election_timeout",
        )


def _check_cluster(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str):
        raise ConfigError(
            "cluster",
            f"{show_value(value)} ({type_name(value)}) must be a string naming the cluster, e.g. 'scheduler'",
        )
    if not 1 <= len(value) <= MAX_CLUSTER_NAME_LENGTH:
        raise ConfigError(
            "cluster",
            f"{show_value(value)} is {len(value)} characters long; use 1 to {MAX_CLUSTER_NAME_LENGTH} "
            "printable characters, e.g. 'scheduler'",
        )
    if not value.isprintable():
        raise ConfigError(
            "cluster",
            f"{show_value(value)} contains non-printable characters; use letters, digits and "
            "punctuation, e.g. 'scheduler'",
        )


def _check_join(instance: RaftConfig, attribute: attrs.Attribute[bool], value: object) -> None:
    _check_bool(instance, attribute, value)
    if value and len(instance.peers) < 2:
        raise ConfigError(
            "join",
            "a joining node needs the address of at least one current member besides its own in peers, to "
            "hear from the leader; list the cluster's members and this node, e.g. "
            "{1: '10.0.0.1:9001', 2: '10.0.0.2:9002', 3: '10.0.0.3:9003', 4: '10.0.0.4:9004'}",
        )


def _show_secret(secret: Optional[bytes]) -> str:
    return "None" if secret is None else "<set>"


@attrs.frozen(kw_only=True)
class RaftConfig:
    """The settings of one member of a cluster; valid by construction, immutable afterwards.

    Args:
        node_id: this node's id, an ``int`` in ``[1, 2**32 - 1]``; must be a key of ``peers``.
        peers: ``{node id: transport address}`` for every member, this node included.  A copy is kept.
        election_timeout: ``(min, max)`` seconds; each election timer is drawn afresh from the range
            (Raft §5.2).  ``0 < min < max <= 60``.
        heartbeat_interval: seconds between a leader's heartbeats; at most a third of the minimum timeout.
        max_clock_drift: the fraction, in ``[0, 0.5)``, by which clock rates may differ; the leader lease
            lasts ``election_timeout_min * (1 - max_clock_drift)`` (thesis §6.4.1).
        pre_vote: run a pre-vote before raising the term (thesis §9.6).
        candidate: whether this node stands for election; ``False`` makes it a voter only.
        transfer_on_stop: whether a leader's ``stop()`` hands leadership over first (thesis §3.10).
        fast_failover: replace a leader whose process died without waiting out an election timeout, on
            death evidence from the transport confirmed by a majority of voters (see the README, "Fast
            failover"); transports without the capability simply take the timeout path.
        secret: shared HMAC-SHA256 key (a ``str`` is encoded as UTF-8), at least 16 bytes; ``None``
            disables message authentication.  Never shown by ``repr``.
        cluster: the cluster's name, 1 to 64 printable characters; messages of other clusters are dropped.
        join: this node is a new member joining a running cluster (thesis §4.2.1): ``peers`` lists the
            current members (to find the leader) and this node; it is a non-voting catch-up member, never
            campaigning nor counting itself, until the leader adds it (``add_member``) and a configuration
            that lists it arrives.  A configuration stored by an earlier run takes precedence.
        balance_groups: move the leaderships of election groups this member leads to their preferred
            members by leadership transfer, slowly and only while every member answers (see
            :mod:`raft_election.placement` and the README, "Many locks and leaderships").

    Raises:
        ConfigError: when any value breaks a rule; ``.field`` names the field and the message shows the
            value and the fix.
    """

    node_id: int = attrs.field(validator=_check_node_id)
    peers: Mapping[int, str] = attrs.field(converter=freeze_peers)
    election_timeout: tuple[float, float] = attrs.field(
        default=DEFAULT_ELECTION_TIMEOUT, converter=_convert_election_timeout
    )
    heartbeat_interval: float = attrs.field(
        default=DEFAULT_HEARTBEAT_INTERVAL,
        converter=_convert_heartbeat_interval,
        validator=_check_heartbeat_fits,
    )
    max_clock_drift: float = attrs.field(default=DEFAULT_MAX_CLOCK_DRIFT, converter=_convert_max_clock_drift)
    pre_vote: bool = attrs.field(default=True, validator=_check_bool)
    candidate: bool = attrs.field(default=True, validator=_check_bool)
    transfer_on_stop: bool = attrs.field(default=True, validator=_check_bool)
    fast_failover: bool = attrs.field(default=True, validator=_check_bool)
    secret: Optional[bytes] = attrs.field(default=None, converter=_convert_secret, repr=_show_secret)
    cluster: str = attrs.field(default=DEFAULT_CLUSTER, validator=_check_cluster)
    join: bool = attrs.field(default=False, validator=_check_join)
    balance_groups: bool = attrs.field(default=True, validator=_check_bool)

    @property
    def election_timeout_min(self) -> float:
        """The shortest election timeout, in seconds; also the stickiness window and lease base."""
        return self.election_timeout[0]

    @property
    def election_timeout_max(self) -> float:
        """The longest election timeout, in seconds."""
        return self.election_timeout[1]

    @property
    def members(self) -> tuple[int, ...]:
        """Every member's id, this node included, in increasing order."""
        return tuple(self.peers)

    @property
    def peer_ids(self) -> tuple[int, ...]:
        """The other members' ids, in increasing order."""
        return tuple(member for member in self.peers if member != self.node_id)

    @property
    def quorum(self) -> int:
        """The number of members that make a strict majority (Raft §5.2): ``len(peers) // 2 + 1``."""
        return len(self.peers) // 2 + 1

    def evolve(self, **changes: Any) -> RaftConfig:
        """Return a copy with ``changes`` applied, validated like a new config.

        Raises:
            ConfigError: if a change names no field of ``RaftConfig`` or the result is invalid.
        """
        check_field_names(changes, "RaftConfig field")
        return attrs.evolve(self, **changes)


_FIELD_NAMES = tuple(field.name for field in attrs.fields(RaftConfig))


def check_field_names(names: Mapping[str, object], what: str) -> None:
    """Raise ``ConfigError`` for the first name in ``names`` that is not a :class:`RaftConfig` field.

    The error suggests the closest field name, so a typo is a clear configuration error rather than a
    ``TypeError`` about an unexpected keyword argument.
    """
    for name in names:
        if name not in _FIELD_NAMES:
            close = difflib.get_close_matches(name, _FIELD_NAMES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(name, f"is not a {what}; {hint}the fields are {', '.join(_FIELD_NAMES)}")


def check_settings(members: int = 1, **settings: Any) -> None:
    """Raise ``ConfigError`` (naming the field and the fix) unless ``settings`` suit a ``members`` cluster.

    The commands that start members (demo, bench, nemesis) call it first, so bad settings fail with one
    clear line before any process or thread exists.
    """
    RaftConfig(node_id=1, peers={node_id: f"check:{node_id}" for node_id in range(1, members + 1)},
               **settings)


def leader_value(value: Union[bytes, str, None], field: str = "value") -> bytes:
    """A leader's value as the bytes its heartbeats carry: ``str`` as UTF-8, ``None`` as empty.

    Raises:
        ConfigError: ``value`` is of another type, or longer than ``MAX_VALUE_SIZE`` bytes.
    """
    if value is None:
        return b""
    if isinstance(value, str):
        data = value.encode("utf-8")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    else:
        raise ConfigError(field, f"must be bytes or str (an address, an identifier), got {type_name(value)}")
    if len(data) > MAX_VALUE_SIZE:
        raise ConfigError(field, f"is {len(data)} bytes ({reprlib.repr(value)}); a leader's value "
                                 f"travels with every heartbeat, so it may be at most {MAX_VALUE_SIZE} "
                                 "bytes: publish an address or a key, not the data itself")
    return data


def value_text(value: Optional[bytes]) -> Optional[str]:
    """A leader's value as text, for events and status: UTF-8, undecodable bytes backslash-escaped."""
    return None if value is None else value.decode("utf-8", "backslashreplace")
