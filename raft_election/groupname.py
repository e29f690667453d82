"""Names of election groups: what a valid one looks like, checked in one place.

A member hosts any number of named election groups (see :mod:`raft_election.groups`), each an independent
election over the member set the cluster shares.  The name travels in every message of its group and is
kept in storage, so it is short and plain: 1 to :data:`MAX_GROUP_NAME` characters from ASCII letters,
digits and ``. _ - : / @``.  The empty name is the default group, the cluster's single election of old; its
messages carry no name at all, so a one-group cluster's wire format is what it always was.
"""

from __future__ import annotations

import re

from raft_election.errors import ConfigError

__all__ = ["DEFAULT_GROUP", "MAX_GROUP_NAME", "check_group_name", "is_group_name"]

#: The default group: the cluster's one election when nobody names another.
DEFAULT_GROUP = ""
#: The longest group name, in characters (= bytes: names are ASCII).
MAX_GROUP_NAME = 64

_NAME = re.compile(rf"[A-Za-z0-9._:/@-]{{1,{MAX_GROUP_NAME}}}")


def is_group_name(name: object) -> bool:
    """Whether ``name`` is a valid group name (the default group ``""`` included)."""
    return isinstance(name, str) and (name == DEFAULT_GROUP or _NAME.fullmatch(name) is not None)


def check_group_name(name: object, field: str = "name") -> str:
    """Return ``name`` if it names a group (``None`` means the default group ``""``), else raise.

    Raises:
        ConfigError: ``name`` is not a str, is too long, or has a character outside the allowed set; the
            message names ``field``, the value and the rule.
    """
    if name is None:
        return DEFAULT_GROUP
    if not isinstance(name, str):
        raise ConfigError(field, f"a group name must be a str, got {type(name).__name__} ({name!r})")
    if is_group_name(name):
        return name
    if len(name) > MAX_GROUP_NAME:
        raise ConfigError(field, f"group name {name[:20]!r}... is {len(name)} characters long; "
                                 f"use at most {MAX_GROUP_NAME}")
    bad = sorted({char for char in name if _NAME.fullmatch(char) is None})
    raise ConfigError(field, f"group name {name!r} contains {''.join(bad)!r}; use only ASCII letters, "
                             "digits and . _ - : / @")
