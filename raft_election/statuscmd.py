"""``raft-election status``: the health of a running cluster, from every member's admin channel.

Every member listed in the cluster file's ``[admin]`` table is asked for its status at once (see
:mod:`raft_election.admin`; authenticated with the cluster's secret when it has one).  The answers make one
row per member: id, address, whether it answered, role, term, the leader it follows, the lease it has left
(leaders only), how many of the election groups it hosts it leads with a lease (``groups led``, e.g.
``203/1000``; ``-`` when it hosts none besides the default group), how long ago it last heard from each
peer, how many messages it rejected and why, and its version, and the configuration entry it uses (its
index; ``pending`` while it does not know it committed).
A ``!`` marks a member that names a different leader than the others do, or uses another configuration
than the leader; an unanswered member is shown as unreachable.

The members are those of the **current configuration** (thesis §4.1), as the leader reports it (or, without
a leader, the newest entry any member reports), not only the cluster file's: after ``raft-election members
add|remove`` the file is just the seed list.  A member of the configuration that the file lacks gets a row
(unreachable: the file has no admin address for it), and file members outside the configuration (removed,
or joining) are named.

The cluster is **healthy** when one member leads with a lease and a majority of the configuration's
members (itself included) name it as their leader; the command then exits 0, and 1 otherwise, so it serves
as a health check.  ``--json`` prints the rows and the verdict as one JSON document, ``--watch SECONDS``
redraws the table in place every so many seconds until interrupted.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import sys
import time
from collections.abc import Mapping
from typing import Any, Optional, TextIO

import attrs

from raft_election.admin import AdminError, query
from raft_election.clusterfile import ClusterFile
from raft_election.errors import ConfigError

__all__ = ["ClusterHealth", "MemberRow", "check_cluster", "render", "run_status", "to_json"]


@attrs.frozen(kw_only=True)
class MemberRow:
    """One member as it answered (``status`` None when it did not, with ``error`` saying why)."""

    node: int
    address: str
    admin: str
    status: Optional[Mapping[str, Any]] = None
    error: Optional[str] = None

    @property
    def reachable(self) -> bool:
        return self.status is not None

    @property
    def leader(self) -> Optional[int]:
        return None if self.status is None else self.status.get("leader")

    @property
    def groups_led(self) -> Optional[tuple[int, int]]:
        """``(leading, hosted)``: the named election groups this member leads with a lease, of those it hosts.

        None when it did not answer, hosts no named group, or is of a version that does not say.
        """
        if self.status is None:
            return None
        leading, hosted = self.status.get("groups_leading"), self.status.get("groups_hosted")
        if type(leading) is not int or type(hosted) is not int or hosted <= 0:
            return None
        return leading, hosted

    def rejected(self) -> dict[str, int]:
        """Messages this member rejected, by reason."""
        counters = {} if self.status is None else self.status.get("counters", {})
        return {name[len("rejected_"):]: count for name, count in sorted(counters.items())
                if name.startswith("rejected_") and count}


@attrs.frozen(kw_only=True)
class ClusterHealth:
    """Every member's row and the verdict."""

    rows: tuple[MemberRow, ...]
    leader: Optional[int]
    term: Optional[int]
    #: Whether ``leader`` itself answered that it holds a lease.
    lease_held: bool
    #: How many members name ``leader`` as theirs (the leader included).
    supporters: int
    quorum: int
    healthy: bool
    #: Members naming another leader than the most named one.
    disagreeing: tuple[int, ...]
    #: The configuration judged by: ``{"members": {"<id>": address}, "index", "term", "committed",
    #: "source": <the member that reported it>}``; None when no member reported one (older versions).
    configuration: Optional[Mapping[str, Any]] = None
    #: Members of the configuration that the cluster file does not list.
    not_in_file: tuple[int, ...] = ()
    #: Members of the cluster file outside the configuration (removed, or joining).
    not_members: tuple[int, ...] = ()

    @property
    def members(self) -> tuple[int, ...]:
        """The members the verdict counts: the configuration's, or every row's without one."""
        if self.configuration is None:
            return tuple(row.node for row in self.rows)
        return tuple(sorted(int(member) for member in self.configuration["members"]))

    def verdict(self) -> str:
        unreachable = [row.node for row in self.rows if not row.reachable]
        count = len(self.members)
        if self.healthy:
            text = (f"healthy: member {self.leader} leads term {self.term} with a lease, followed by "
                    f"{self.supporters} of {count} members")
        elif self.leader is not None and not self.lease_held:
            text = (f"UNHEALTHY: member {self.leader} is named leader by {self.supporters} of "
                    f"{count} members but does not say it holds a lease")
        elif self.leader is not None:
            text = (f"UNHEALTHY: member {self.leader} leads with a lease, but only {self.supporters} of "
                    f"{count} members follow it; a majority is {self.quorum}")
        else:
            text = "UNHEALTHY: no member knows a leader"
        if unreachable:
            text += f"; unreachable: {', '.join(str(node) for node in unreachable)}"
        if self.disagreeing:
            text += f"; naming another leader: {', '.join(str(node) for node in self.disagreeing)}"
        return text


def check_cluster(cluster: ClusterFile, *, timeout: float = 2.0) -> ClusterHealth:
    """Ask every member of ``cluster`` with an admin address, at once; judge the cluster's health.

    Raises:
        ConfigError: the cluster file lists no admin address.
    """
    if not cluster.admin:
        raise ConfigError("admin", f"{cluster.path} has no [admin] table: list each member's admin address "
                                   '(e.g. [admin] 1 = "127.0.0.1:9101") and start the members with it')

    def ask(node: int) -> MemberRow:
        address, admin = cluster.members[node], cluster.admin.get(node)
        if admin is None:
            return MemberRow(node=node, address=address, admin="-", error="no admin address in the file")
        try:
            return MemberRow(node=node, address=address, admin=admin,
                             status=query(admin, secret=cluster.secret, timeout=timeout))
        except AdminError as exc:
            return MemberRow(node=node, address=address, admin=admin, error=str(exc))

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(cluster.members)) as pool:
        asked = list(pool.map(ask, sorted(cluster.members)))
    named = collections.Counter(row.leader for row in asked if row.leader is not None)
    leader = named.most_common(1)[0][0] if named else None
    by_node = {row.node: row for row in asked}
    holder = by_node.get(leader) if leader is not None else None
    configuration = _configuration(asked, holder)
    members = (tuple(sorted(int(member) for member in configuration["members"])) if configuration is not None
               else tuple(sorted(cluster.members)))
    not_in_file = tuple(member for member in members if member not in cluster.members)
    unlisted = [MemberRow(node=member, address=str(configuration["members"][str(member)]), admin="-",
                          error=f"not in {cluster.path}: no admin address to ask")
                for member in not_in_file if configuration is not None]
    rows = tuple(sorted([*asked, *unlisted], key=lambda row: row.node))
    named = collections.Counter(row.leader for row in rows if row.leader is not None and row.node in members)
    quorum = len(members) // 2 + 1
    leads = holder is not None and holder.status is not None and bool(holder.status.get("is_leader"))
    term = holder.status.get("term") if holder is not None and holder.status is not None else None
    supporters = named.get(leader, 0) if leader is not None else 0
    disagreeing = tuple(row.node for row in rows if row.leader is not None and row.leader != leader)
    return ClusterHealth(rows=rows, leader=leader, term=term, lease_held=leads, supporters=supporters,
                         quorum=quorum, healthy=leads and supporters >= quorum, disagreeing=disagreeing,
                         configuration=configuration, not_in_file=not_in_file,
                         not_members=tuple(member for member in sorted(cluster.members)
                                           if member not in members))


def _configuration(rows: list[MemberRow], holder: Optional[MemberRow]) -> Optional[dict[str, Any]]:
    """The configuration to judge by: the leader's, else the newest ``(term, index)`` any member reported."""
    reported = []
    for row in rows:
        status = row.status
        if status is None or not isinstance(status.get("configuration"), Mapping) \
                or not isinstance(status.get("members"), Mapping):
            continue
        entry = status["configuration"]
        reported.append(((entry.get("term", 0), entry.get("index", 0)), row is holder, row.node, status))
    if not reported:
        return None
    chosen = next((item for item in reported if item[1]), None) or max(reported, key=lambda item: item[0])
    status = chosen[3]
    return {"members": dict(status["members"]), "index": status["configuration"].get("index"),
            "term": status["configuration"].get("term"),
            "committed": bool(status["configuration"].get("committed")), "source": chosen[2]}


def _seconds(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}"


def render(health: ClusterHealth) -> str:
    """The table and the verdict, as ``raft-election status`` prints them."""
    header = ("id", "address", "reachable", "role", "term", "leader", "config", "lease left", "groups led",
              "last contact (s ago)", "rejected", "version")
    lines = []
    for row in health.rows:
        status = row.status
        if status is None:
            lines.append((str(row.node), row.address, "NO", "-", "-", "-", "-", "-", "-", "-", "-", "-"))
            continue
        groups = row.groups_led
        leader = "-" if row.leader is None else str(row.leader)
        if row.node in health.disagreeing:
            leader += " !"
        role = str(status.get("role")) + (" (not a member)" if status.get("voter") is False else "")
        contact = " ".join(f"{peer}:{_seconds(seconds)}" for peer, seconds in
                           sorted(status.get("last_contact", {}).items(), key=lambda item: int(item[0])))
        rejected = ", ".join(f"{reason} {count}" for reason, count in row.rejected().items()) or "0"
        lines.append((str(row.node), row.address, "yes", role, str(status.get("term")), leader,
                      _config_cell(status, health.configuration),
                      _seconds(status.get("lease_remaining")) if status.get("is_leader") else "-",
                      "-" if groups is None else f"{groups[0]}/{groups[1]}",
                      contact or "-", rejected, str(status.get("version"))))
    widths = [max(len(header[i]), *(len(line[i]) for line in lines)) for i in range(len(header))]
    text = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip()
            for line in (header, *lines)]
    for row in health.rows:
        if row.error is not None:
            text.append(f"member {row.node}: {row.error}")
    configuration = health.configuration
    if configuration is not None:
        state = "committed" if configuration["committed"] else "not committed yet"
        source = (f"leader {configuration['source']}" if configuration["source"] == health.leader
                  else f"member {configuration['source']}")
        text.append(f"configuration {configuration['index']} (term {configuration['term']}, {state}, as "
                    f"{source} knows it): members {', '.join(str(member) for member in health.members)}")
    if health.not_members:
        text.append(f"in the cluster file but not members: {', '.join(map(str, health.not_members))} "
                    "(removed, or joining)")
    text.append(health.verdict())
    return "\n".join(text)


def _config_cell(status: Mapping[str, Any], configuration: Optional[Mapping[str, Any]]) -> str:
    """A row's configuration entry: its index; ``pending`` unless committed, ``!`` unless the verdict's."""
    entry = status.get("configuration")
    if not isinstance(entry, Mapping):
        return "-"
    cell = str(entry.get("index"))
    if not entry.get("committed"):
        cell += " pending"
    if configuration is not None and (entry.get("term"), entry.get("index")) != (
            configuration["term"], configuration["index"]):
        cell += " !"
    return cell


def to_json(health: ClusterHealth) -> dict[str, Any]:
    """The rows and the verdict as JSON data.

    Each member's ``groups_led`` is the ``groups led`` column: ``{"leading": n, "hosted": m}``, or None
    (unreachable, or no named group hosted).
    """
    return {"healthy": health.healthy, "leader": health.leader, "term": health.term,
            "lease_held": health.lease_held, "supporters": health.supporters, "quorum": health.quorum,
            "disagreeing": list(health.disagreeing),
            "configuration": None if health.configuration is None else dict(health.configuration),
            "not_in_file": list(health.not_in_file), "not_members": list(health.not_members),
            "verdict": health.verdict(),
            "members": [{"node": row.node, "address": row.address, "admin": row.admin,
                         "reachable": row.reachable, "error": row.error,
                         "groups_led": None if row.groups_led is None else {
                             "leading": row.groups_led[0], "hosted": row.groups_led[1]},
                         "status": row.status}
                        for row in health.rows]}


def run_status(cluster: ClusterFile, *, json_output: bool = False, watch: Optional[float] = None,
               timeout: float = 2.0, stream: TextIO = sys.stdout, rounds: Optional[int] = None) -> int:
    """Print the cluster's status (once, or every ``watch`` seconds); return 0 if healthy, else 1.

    ``rounds`` bounds how many times ``--watch`` redraws (for tests); None: until interrupted.
    """
    count = 0
    while True:
        health = check_cluster(cluster, timeout=timeout)
        if json_output:
            stream.write(json.dumps(to_json(health)) + "\n")
        else:
            if watch is not None:
                stream.write("\x1b[H\x1b[2J")  # to the top left, clear the screen: redraw in place
                stream.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  every {watch:g} s  {cluster.path}\n")
            stream.write(render(health) + "\n")
        stream.flush()
        count += 1
        if watch is None or (rounds is not None and count >= rounds):
            return 0 if health.healthy else 1
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            return 0 if health.healthy else 1

