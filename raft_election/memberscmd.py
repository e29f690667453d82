"""``raft-election members``: list, add and remove the members of a running cluster, through its leader.

Only the leader changes the configuration (thesis §4.1), so every subcommand first **finds the leader**
among the members of the cluster file that have an admin address (``[admin]``; see
:mod:`raft_election.admin`), authenticated with the cluster's secret when it has one.  It asks them for
``members`` in the file's order; a member that follows another names it (``leader_id``), and that one is
asked next (a redirect); a member answers as the leader only while it leads with a lease.  While an
election is under way nobody may lead for a moment, so the round is repeated for up to ``patience``
seconds.  A leader that has no admin address in the file cannot be asked: the error says to add one.

* ``list``: the configuration the leader uses (members, the entry's index and term, whether it is
  committed); members the file lacks, and file members outside the configuration, are pointed out.
* ``add ID ADDRESS``: the new member must be running, started with ``raft-election run --join`` and a
  cluster file that lists the current members and itself; the leader has it answer a heartbeat round, then
  creates the configuration entry that lists it and answers once a majority of the new member set stored
  it (thesis §4.2.1).
* ``remove ID``: the leader creates the entry without ``ID`` and answers once it is committed; stop the
  removed member's process afterwards.  The leader may remove itself (§4.2.2): it hands leadership over.

A change that meets a member that lost leadership meanwhile (``not_leader``) is sent again to the leader
found next: adding a member already there at that address, or removing one that is gone, changes nothing,
so a repeated request is harmless.  Every other refusal ends the command with a
:class:`MembersCommandError` that names the reason and what to do.

:func:`list_members` and :func:`change_members` are the library's side (return JSON data);
:func:`run_members` is the command (prints it, human-readable or ``--json``, and returns the exit status:
0 done, 1 refused or failed).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Optional, TextIO

import attrs

from raft_election.admin import DEFAULT_CHANGE_TIMEOUT, MAX_CHANGE_TIMEOUT, AdminError, query
from raft_election.clusterfile import ClusterFile
from raft_election.errors import ConfigError, RaftElectionError
from raft_election.messages import MAX_NODE_ID
from raft_election.peers import freeze_peers

__all__ = ["ACTIONS", "FIND_PATIENCE", "LeaderFound", "MembersCommandError", "change_members", "find_leader",
           "list_members", "render", "run_members"]

logger = logging.getLogger(__name__)

#: The subcommands.
ACTIONS = ("list", "add", "remove")
#: Seconds to keep looking for a leader (an election may be under way).
FIND_PATIENCE = 5.0
#: Seconds to wait for each member's answer to a query.
QUERY_TIMEOUT = 2.0
#: Seconds between two rounds of asking the members for the leader.
RETRY_INTERVAL = 0.1
#: How many times a change follows a ``not_leader`` answer to the next leader.
MAX_REDIRECTS = 3


class MembersCommandError(RaftElectionError):
    """``members`` could not do what was asked; the message says why and what to do.

    Attributes:
        reason: a short code: ``no_answer`` (no member answered), ``no_leader``, ``leader_unlisted`` (the
            leader has no admin address in the file), ``unauthenticated``, ``clock`` (the clocks differ
            too much), ``lost_answer`` (the connection broke during a change: it may have been made), or
            the leader's own error kind (``not_leader``, ``membership_change``, ``timeout``, ``config``,
            ``not_running``, ...).
        leader_id: the leader, when one was known.
    """

    def __init__(self, message: str, reason: str, leader_id: Optional[int] = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.leader_id = leader_id


@attrs.frozen(kw_only=True)
class LeaderFound:
    """The leader and its answer to ``members``.

    Attributes:
        node_id: the leader's id.
        admin: its admin address.
        record: its ``members`` answer (:func:`raft_election.admin.members_record`).
        asked: the members asked, in order, redirects included (for the curious and for tests).
    """

    node_id: int
    admin: str
    record: Mapping[str, Any]
    asked: tuple[int, ...]


def _check_admin(cluster: ClusterFile) -> None:
    if not cluster.admin:
        raise ConfigError("admin", f"{cluster.path} has no [admin] table: list each member's admin address "
                                   '(e.g. [admin] 1 = "127.0.0.1:9101") and start the members with it')


def _refusal(exc: AdminError, node: int, cluster: ClusterFile) -> Optional[MembersCommandError]:
    """The error that ends the search at once for a refusal asking again cannot cure, else None."""
    if exc.kind == "bad_mac":
        return MembersCommandError(
            f"member {node} refused the request: it is not authenticated with the cluster's secret; give "
            f"the cluster's secret (secret or secret_file in {cluster.path}, or --secret-file)",
            "unauthenticated")
    if exc.kind == "stale":
        return MembersCommandError(
            f"member {node} refused the request: {exc.detail}; the clocks of this host and the member differ "
            "by more than 30 s: synchronise them (NTP)", "clock")
    if exc.kind == "unauthenticated":
        return MembersCommandError(f"member {node} refused the change: {exc.detail}", "unauthenticated")
    return None


def find_leader(cluster: ClusterFile, *, secret: Optional[bytes] = None, patience: float = FIND_PATIENCE,
                timeout: float = QUERY_TIMEOUT, prefer: Optional[int] = None,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], object] = time.sleep) -> LeaderFound:
    """Find the member that leads now, among those with an admin address in ``cluster`` (module docstring).

    Args:
        cluster: the cluster file (its ``[admin]`` table says where to ask).
        secret: the cluster secret, if it has one.
        patience: seconds to keep asking while no member leads (an election under way).
        timeout: seconds to wait for each member's answer.
        prefer: ask this member first (a leader named by an earlier answer).
        clock: monotonic time source, for the patience.
        sleep: waits between two rounds.

    Raises:
        ConfigError: the file has no ``[admin]`` table.
        MembersCommandError: no leader found within ``patience`` (the message says what the members said),
            or a member refused the request for a reason asking again cannot cure (the secret, the clock).
    """
    _check_admin(cluster)
    deadline = clock() + patience
    asked: list[int] = []
    while True:
        errors: dict[int, str] = {}
        followers: dict[int, Optional[int]] = {}  # member -> the leader it named
        unlisted: set[int] = set()
        queue = [member for member in cluster.admin if member != prefer]
        if prefer is not None and prefer in cluster.admin:
            queue.insert(0, prefer)
        visited: set[int] = set()
        while queue:
            node = queue.pop(0)
            if node in visited:
                continue
            visited.add(node)
            asked.append(node)
            admin = cluster.admin[node]
            try:
                record = _ask_members(admin, secret, timeout)
            except AdminError as exc:
                refusal = _refusal(exc, node, cluster)
                if refusal is not None:
                    raise refusal from None
                errors[node] = str(exc)
                continue
            answered = record.get("node_id")
            leader = record.get("leader_id")
            if type(answered) is int and leader == answered:
                logger.info("member %d at %s leads (asked %s)", answered, admin, asked)
                return LeaderFound(node_id=answered, admin=admin, record=record, asked=tuple(asked))
            followers[node] = leader if type(leader) is int else None
            if type(leader) is int and leader not in visited:
                if leader in cluster.admin:
                    queue.insert(0, leader)  # the redirect: ask the leader it names next
                else:
                    unlisted.add(leader)
        if clock() >= deadline:
            raise _not_found(cluster, errors, followers, unlisted, patience)
        sleep(RETRY_INTERVAL)


def _ask_members(admin: str, secret: Optional[bytes], timeout: float) -> dict[str, Any]:
    """A member's ``members`` answer; a member of an older version is asked for its ``status`` instead."""
    try:
        return query(admin, "members", secret=secret, timeout=timeout)
    except AdminError as exc:
        if exc.kind != "unknown_op":
            raise
    status = query(admin, "status", secret=secret, timeout=timeout)
    return {"node_id": status.get("node"), "leader_id": status.get("leader"), "term": status.get("term"),
            "members": status.get("members", {}), "configuration": status.get("configuration")}


def _not_found(cluster: ClusterFile, errors: Mapping[int, str], followers: Mapping[int, Optional[int]],
               unlisted: set[int], patience: float) -> MembersCommandError:
    if unlisted:
        leader = min(unlisted)
        return MembersCommandError(
            f"member {leader} leads, but {cluster.path} has no admin address for it: add its admin address "
            "to the [admin] table (a member added with 'members add' needs one there too), then retry",
            "leader_unlisted", leader)
    unreachable = "; ".join(f"member {node}: {error}" for node, error in sorted(errors.items()))
    if not followers:
        return MembersCommandError(
            f"no member answered at its admin address in {cluster.path} ({unreachable}); are the members "
            "running, with these admin addresses (run --admin or the [admin] table)?", "no_answer")
    said = ", ".join(f"{node} knows no leader" if leader is None else f"{node} names {leader}"
                     for node, leader in sorted(followers.items()))
    text = (f"no member leads after {patience:g} s (members {said}): an election may be under way, or too "
            "few members run for a majority; check with raft-election status, then retry")
    if unreachable:
        text += f"; unreachable: {unreachable}"
    return MembersCommandError(text, "no_leader")


def _configuration(record: Mapping[str, Any]) -> dict[str, Any]:
    configuration = record.get("configuration")
    return dict(configuration) if isinstance(configuration, Mapping) else {}


def list_members(cluster: ClusterFile, *, secret: Optional[bytes] = None, patience: float = FIND_PATIENCE,
                 timeout: float = QUERY_TIMEOUT) -> dict[str, Any]:
    """The configuration the leader uses now, as JSON data.

    Returns:
        ``{"leader": id, "term": int, "members": {"<id>": "<address>"}, "configuration": {"index",
        "term", "committed"}, "membership_change": str|None, "not_in_file": [ids], "not_members":
        [ids], "asked": [ids]}``: ``not_in_file`` are members the cluster file does not list,
        ``not_members`` file members outside the configuration (removed, or joining).

    Raises:
        ConfigError: the file has no ``[admin]`` table.
        MembersCommandError: no leader found (see :func:`find_leader`).
    """
    found = find_leader(cluster, secret=secret, patience=patience, timeout=timeout)
    members = {str(member): str(address) for member, address in dict(found.record.get("members", {})).items()}
    return {"leader": found.node_id, "term": found.record.get("term"), "members": members,
            "configuration": _configuration(found.record),
            "membership_change": found.record.get("membership_change"),
            "not_in_file": sorted(int(member) for member in members if int(member) not in cluster.members),
            "not_members": sorted(member for member in cluster.members if str(member) not in members),
            "asked": list(found.asked)}


def _check_change(action: str, node_id: object, address: Optional[str], timeout: object) -> None:
    if action not in ("add", "remove"):
        raise ConfigError("action", f"{action!r} is not a change: use 'add' or 'remove'")
    if type(node_id) is not int or not 1 <= node_id <= MAX_NODE_ID:
        raise ConfigError("id", f"{node_id!r} is not a member id: use an integer from 1 to {MAX_NODE_ID}")
    if action == "add":
        if address is None:
            raise ConfigError("address", "add needs the new member's address, e.g. "
                                         "members add 4 10.0.0.4:9004")
        freeze_peers({node_id: address}, "address")  # the rules of every member list
    elif address is not None:
        raise ConfigError("address", "remove takes only the member's id, e.g. members remove 4")
    if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
            or not 0 < timeout <= MAX_CHANGE_TIMEOUT):
        raise ConfigError("timeout", f"{timeout!r} must be a number of seconds, more than 0 and at most "
                                     f"{MAX_CHANGE_TIMEOUT:g}")


def change_members(cluster: ClusterFile, action: str, node_id: int, address: Optional[str] = None, *,
                   secret: Optional[bytes] = None, timeout: float = DEFAULT_CHANGE_TIMEOUT,
                   patience: float = FIND_PATIENCE) -> dict[str, Any]:
    """Add (``action="add"``, with ``address``) or remove (``"remove"``) member ``node_id``, on the leader.

    Returns once the change is committed (or nothing had to change), with JSON data:
    ``{"action", "id", "address", "changed": bool, "index": int, "members": {...}, "leader": id,
    "asked": [ids]}``; ``index`` is the committed configuration entry's (the current one when nothing
    changed).

    Args:
        cluster: the cluster file (its ``[admin]`` table says where to find the leader).
        action: ``"add"`` or ``"remove"``.
        node_id: the member to add or remove.
        address: the new member's transport address (``add`` only).
        secret: the cluster secret, if it has one.
        timeout: seconds the leader waits for the commit (0 < timeout <= 60).
        patience: seconds to look for the leader (see :func:`find_leader`).

    Raises:
        ConfigError: a bad action, id, address or timeout, or no ``[admin]`` table.
        MembersCommandError: no leader found, or the leader refused or failed the change (``reason`` is its
            error kind, the message says what to do).
    """
    _check_change(action, node_id, address, timeout)
    found = find_leader(cluster, secret=secret, patience=patience)
    asked = list(found.asked)
    redirects = 0
    while True:
        members = dict(found.record.get("members", {}))
        unchanged = _unchanged(action, node_id, address, members)
        if unchanged is not None and _configuration(found.record).get("committed"):
            # Done and committed.  If not committed yet, the leader is asked anyway: it answers once it is.
            return {"action": action, "id": node_id, "address": address, "changed": False,
                    "reason": unchanged, "index": _configuration(found.record).get("index"),
                    "members": members, "leader": found.node_id, "asked": asked}
        op = "add_member" if action == "add" else "remove_member"
        params: dict[str, Any] = {"id": node_id, "timeout": timeout}
        if action == "add":
            params["address"] = address
        try:
            result = query(found.admin, op, secret=secret, timeout=QUERY_TIMEOUT, params=params)
        except AdminError as exc:
            if exc.kind == "not_leader" and redirects < MAX_REDIRECTS:
                redirects += 1
                logger.info("member %d no longer leads; looking for the leader again", found.node_id)
                found = find_leader(cluster, secret=secret, patience=patience, prefer=exc.leader_id)
                asked.extend(found.asked)
                continue
            raise _change_failed(exc, action, node_id, found, cluster) from None
        return {"action": action, "id": node_id, "address": address, "changed": True,
                "index": result.get("index"), "members": dict(result.get("members", {})),
                "leader": found.node_id, "asked": asked}


def _unchanged(action: str, node_id: int, address: Optional[str],
               members: Mapping[str, Any]) -> Optional[str]:
    """Why the change is already done (as text), or None; MembersCommandError if it can never be made."""
    present = members.get(str(node_id))
    if action == "remove":
        return None if present is not None else f"member {node_id} is not a member"
    if present == address:
        return f"member {node_id} is already a member at {address}"
    if present is not None:
        raise MembersCommandError(
            f"member {node_id} is already a member, at {present}: remove it first (raft-election members "
            f"remove {node_id}), or add the new process under a new id", "membership_change")
    return None


def _change_failed(exc: AdminError, action: str, node_id: int, found: LeaderFound,
                   cluster: ClusterFile) -> MembersCommandError:
    """The error for a change the leader refused or failed, saying what to do."""
    what = f"{'adding' if action == 'add' else 'removing'} member {node_id}"
    detail = exc.detail or str(exc)
    check = "run raft-election members list to see whether it went through"
    refusal = _refusal(exc, found.node_id, cluster)
    if refusal is not None:
        return refusal
    if exc.kind == "not_leader":
        text = (f"{what}: the leader kept changing ({detail}); it may still be committed by the next "
                f"leader: {check}, then retry")
    elif exc.kind == "membership_change":
        text = (f"{what} refused by leader {found.node_id}: {detail}; one change at a time: wait until "
                "raft-election members list shows the configuration committed, then retry")
    elif exc.kind == "timeout":
        hint = ("; is the new member running, started with raft-election run --join and a cluster file "
                "that lists the current members and itself?" if action == "add" and "--join" not in detail
                else "")
        text = f"leader {found.node_id}: {detail}{hint}"
        if "nothing was changed" not in detail:  # else the entry may still commit: say how to see it
            text += f"; {check}"
    elif exc.kind == "config":
        text = f"{what} refused by leader {found.node_id}: {detail}; check the address"
    elif exc.kind == "not_running":
        text = f"{what}: leader {found.node_id} is stopping or halted ({detail}); {check}, then retry"
    elif exc.kind in ("unreachable", "bad_answer"):
        return MembersCommandError(
            f"{what}: no valid answer from leader {found.node_id} ({exc}); the change may or may not have "
            f"been made: {check}", "lost_answer", found.node_id)
    else:
        text = f"{what} refused by leader {found.node_id}: {exc}"
    return MembersCommandError(text, exc.kind or "refused", found.node_id)


def render(action: str, result: Mapping[str, Any], cluster: ClusterFile) -> str:
    """``result`` (of :func:`list_members` or :func:`change_members`) as the command prints it."""
    members = result.get("members", {})
    if action == "list":
        configuration = result.get("configuration", {})
        state = "committed" if configuration.get("committed") else "NOT committed yet"
        lines = [f"configuration {configuration.get('index')} (term {configuration.get('term')}, {state}), "
                 f"from leader {result['leader']}:"]
        width = max(len(member) for member in members) if members else 1
        for member, address in sorted(members.items(), key=lambda item: int(item[0])):
            notes = []
            if int(member) == result["leader"]:
                notes.append("leader")
            if int(member) not in cluster.members:
                notes.append(f"not in {cluster.path}")
            lines.append(f"  {member.rjust(width)}  {address}" + (f"  ({', '.join(notes)})" if notes else ""))
        if result.get("membership_change"):
            lines.append(f"a change is under way: {result['membership_change']}")
        if result.get("not_members"):
            ids = ", ".join(str(member) for member in result["not_members"])
            lines.append(f"listed in {cluster.path} but not members: {ids}")
        return "\n".join(lines)
    names = ", ".join(sorted(members, key=int))
    if not result.get("changed"):
        return f"{result.get('reason')}: nothing to do (members {names}; leader {result['leader']})"
    if action == "add":
        return (f"added member {result['id']} at {result['address']}: configuration {result['index']} "
                f"committed, members {names} (leader {result['leader']})")
    return (f"removed member {result['id']}: configuration {result['index']} committed, members {names} "
            f"(leader {result['leader']}); stop its process now")


def run_members(cluster: ClusterFile, action: str, node_id: Optional[int] = None,
                address: Optional[str] = None, *, secret: Optional[bytes] = None,
                timeout: Optional[float] = None, json_output: bool = False,
                stream: TextIO = sys.stdout, errors: TextIO = sys.stderr) -> int:
    """The ``members`` command: do ``action``, print the outcome; return 0 (done) or 1 (refused/failed).

    ``timeout``: for ``add`` and ``remove`` the seconds the leader waits for the commit (default
    :data:`~raft_election.admin.DEFAULT_CHANGE_TIMEOUT`); for ``list`` the seconds to look for a leader
    (default :data:`FIND_PATIENCE`).

    A failure is printed to ``errors`` as one line naming the reason and what to do (and, with
    ``json_output``, also as ``{"ok": false, "error": reason, "detail": message}`` on ``stream``).

    Raises:
        ConfigError: bad arguments, or a cluster file without ``[admin]`` (the command line exits 2).
    """
    if action not in ACTIONS:
        raise ConfigError("action", f"{action!r} is not one of {', '.join(ACTIONS)}")
    try:
        if action == "list":
            if timeout is not None and not 0 < timeout <= MAX_CHANGE_TIMEOUT:
                raise ConfigError("timeout", f"{timeout!r} must be a number of seconds, more than 0 and at "
                                             f"most {MAX_CHANGE_TIMEOUT:g}")
            result = list_members(cluster, secret=secret,
                                  patience=FIND_PATIENCE if timeout is None else timeout)
        else:
            if node_id is None:
                raise ConfigError("id", f"{action} needs the member's id")
            result = change_members(cluster, action, node_id, address, secret=secret,
                                    timeout=DEFAULT_CHANGE_TIMEOUT if timeout is None else timeout)
    except MembersCommandError as exc:
        errors.write(f"raft-election members {action}: {exc}\n")
        errors.flush()
        if json_output:
            stream.write(json.dumps({"ok": False, "error": exc.reason, "detail": str(exc),
                                     "leader": exc.leader_id}) + "\n")
            stream.flush()
        return 1
    if json_output:
        stream.write(json.dumps({"ok": True, **result}) + "\n")
    else:
        stream.write(render(action, result, cluster) + "\n")
    stream.flush()
    return 0
