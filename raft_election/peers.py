"""A cluster's member list: ``{node id: address}``, checked once and then immutable.

Shared by :class:`~raft_election.config.RaftConfig` (the seed list), the cluster file, and the
configuration entries of membership changes (:mod:`raft_election.membership`), so one set of rules (and
one wording of every mistake) covers every member list.  No I/O: the election core uses it.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterator, Mapping
from typing import Any

from raft_election.errors import ConfigError
from raft_election.messages import MAX_ADDRESS_SIZE, MAX_MEMBERS, MAX_NODE_ID

__all__ = ["PeerMap", "freeze_peers", "show_value", "type_name"]

_EXAMPLE_PEERS = "{1: '127.0.0.1:9001', 2: '127.0.0.1:9002', 3: '127.0.0.1:9003'}"

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxdict = 8
_repr.maxlist = 8
_repr.maxtuple = 8


def show_value(value: object) -> str:
    """Return ``repr(value)``, shortened if huge, for use in an error message."""
    return _repr.repr(value)


def type_name(value: object) -> str:
    return type(value).__name__


class PeerMap(Mapping[int, str]):
    """An immutable, hashable, picklable ``{node id: transport address}`` mapping, ordered by id.

    :class:`RaftConfig` keeps its peers in one of these (a fresh copy of what it was given), so a frozen
    config cannot change behind the node's back when the caller later edits its own dict.  It compares
    equal to any mapping with the same items, e.g. a plain ``dict``.
    """

    __slots__ = ("_items",)

    _items: dict[int, str]

    def __init__(self, items: Mapping[int, str]) -> None:
        """Copy ``items`` (unvalidated; use :func:`freeze_peers` for checked construction)."""
        object.__setattr__(self, "_items", {key: items[key] for key in sorted(items)})

    def __getitem__(self, key: int) -> str:
        """Return the address of member ``key``."""
        return self._items[key]

    def __iter__(self) -> Iterator[int]:
        """Iterate over the member ids in increasing order."""
        return iter(self._items)

    def __len__(self) -> int:
        """Return the number of members."""
        return len(self._items)

    def __hash__(self) -> int:
        """Hash the items, so that a config holding this mapping is hashable."""
        return hash(frozenset(self._items.items()))

    def __eq__(self, other: object) -> bool:
        """Compare equal to any mapping with the same items."""
        if isinstance(other, Mapping):
            return dict(self._items.items()) == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        """Show the items as a dict literal, so a config's repr reads like its constructor call."""
        return repr(self._items)

    def __setattr__(self, name: str, value: object) -> None:
        """Refuse: the mapping is immutable."""
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        """Refuse: the mapping is immutable."""
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as a call to the constructor (configs travel to worker processes in tests)."""
        return (type(self), (dict(self._items),))


def freeze_peers(value: object, field: str = "peers") -> PeerMap:
    """Check a ``{node id: address}`` mapping and return an immutable copy of it.

    Rules: a non-empty mapping of at most ``MAX_MEMBERS`` (16) members; ids are ``int`` (not ``bool``) in
    ``[1, 2**32 - 1]``; addresses are non-empty printable strings of at most ``MAX_ADDRESS_SIZE`` (200)
    UTF-8 bytes without surrounding whitespace, and no two members share one.  (Every member and its
    address travel in one message when the configuration changes, so both are bounded.)

    Args:
        value: the mapping to check (anything: wrong types are reported, not raised as ``TypeError``).
        field: the name reported in errors (``"peers"`` for :class:`RaftConfig`, ``"members"`` for a
            cluster file).

    Raises:
        ConfigError: naming ``field``, when a rule is broken.
    """
    if not isinstance(value, Mapping):
        raise ConfigError(
            field,
            f"{show_value(value)} ({type_name(value)}) must be a mapping of node id to transport address, "
            f"this node included, e.g. {_EXAMPLE_PEERS}",
        )
    if not value:
        raise ConfigError(
            field,
            f"{show_value(value)} is empty; list every member of the cluster, this node included, "
            f"e.g. {_EXAMPLE_PEERS}",
        )
    if len(value) > MAX_MEMBERS:
        raise ConfigError(
            field,
            f"has {len(value)} members; a cluster may have at most {MAX_MEMBERS} (every member travels in "
            "one message when the configuration changes); elect among fewer members, e.g. 3, 5 or 7",
        )
    owner_of: dict[str, int] = {}
    for node_id, address in value.items():
        if isinstance(node_id, bool) or not isinstance(node_id, int):
            raise ConfigError(
                field,
                f"member id {show_value(node_id)} ({type_name(node_id)}) must be an int in "
                f"[1, {MAX_NODE_ID}]; "
                f"use integer keys, e.g. {_EXAMPLE_PEERS}",
            )
        if not 1 <= node_id <= MAX_NODE_ID:
            raise ConfigError(
                field, f"member id {node_id} is out of range; node ids are integers from 1 to {MAX_NODE_ID}"
            )
        if not isinstance(address, str):
            raise ConfigError(
                field,
                f"address of member {node_id} is {show_value(address)} ({type_name(address)}); it must be a "
                "string such as '127.0.0.1:9001'",
            )
        if not address:
            raise ConfigError(
                field,
                f"address of member {node_id} is empty (''); give its transport address, "
                "e.g. '127.0.0.1:9001'",
            )
        if len(address.encode("utf-8", "surrogatepass")) > MAX_ADDRESS_SIZE:
            raise ConfigError(
                field,
                f"address of member {node_id} ({show_value(address)}) is longer than {MAX_ADDRESS_SIZE} "
                "bytes; "
                "use a shorter host name",
            )
        try:
            address.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(
                field, f"address of member {node_id} ({show_value(address)}) cannot be encoded as UTF-8"
            ) from None
        if not address.isprintable():
            raise ConfigError(
                field,
                f"address of member {node_id} ({show_value(address)}) contains non-printable characters; "
                "use host:port, e.g. '127.0.0.1:9001'",
            )
        if address.strip() != address:
            raise ConfigError(
                field,
                f"address of member {node_id} ({show_value(address)}) has leading or trailing whitespace; "
                "remove it",
            )
        if address in owner_of:
            raise ConfigError(
                field,
                f"address {show_value(address)} is given to both member {owner_of[address]} and member "
                f"{node_id}; every member needs an address of its own",
            )
        owner_of[address] = node_id
    return PeerMap({node_id: address for address, node_id in owner_of.items()})


