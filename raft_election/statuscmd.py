"""``raft-election status``: the health of a running cluster, from every member's admin channel.

Every member listed in the cluster file's ``[admin]`` table is asked for its status at once (see
:mod:`raft_election.admin`; authenticated with the cluster's secret when it has one).  The answers make one
row per member: id, address, whether it answered, role, term, the leader it follows, the lease it has left
(leaders only), how long ago it last heard from each peer, how many messages it rejected and why, and its
version.  A ``!`` marks a member that names a different leader than the others do; an unanswered member is
shown as unreachable.

The cluster is **healthy** when one member leads with a lease and a majority of the configured members
(itself included) name it as their leader; the command then exits 0, and 1 otherwise, so it serves as a
health check.  ``--json`` prints the rows and the verdict as one JSON document, ``--watch SECONDS``
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

    def verdict(self) -> str:
        unreachable = [row.node for row in self.rows if not row.reachable]
        if self.healthy:
            text = (f"healthy: member {self.leader} leads term {self.term} with a lease, followed by "
                    f"{self.supporters} of {len(self.rows)} members")
        elif self.leader is not None and not self.lease_held:
            text = (f"UNHEALTHY: member {self.leader} is named leader by {self.supporters} of "
                    f"{len(self.rows)} members but does not say it holds a lease")
        elif self.leader is not None:
            text = (f"UNHEALTHY: member {self.leader} leads with a lease, but only {self.supporters} of "
                    f"{len(self.rows)} members follow it; a majority is {self.quorum}")
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
        rows = tuple(pool.map(ask, sorted(cluster.members)))
    named = collections.Counter(row.leader for row in rows if row.leader is not None)
    leader = named.most_common(1)[0][0] if named else None
    quorum = len(cluster.members) // 2 + 1
    by_node = {row.node: row for row in rows}
    holder = by_node.get(leader) if leader is not None else None
    leads = holder is not None and holder.status is not None and bool(holder.status.get("is_leader"))
    term = holder.status.get("term") if holder is not None and holder.status is not None else None
    supporters = named.get(leader, 0) if leader is not None else 0
    disagreeing = tuple(row.node for row in rows if row.leader is not None and row.leader != leader)
    return ClusterHealth(rows=rows, leader=leader, term=term, lease_held=leads, supporters=supporters,
                         quorum=quorum, healthy=leads and supporters >= quorum, disagreeing=disagreeing)


def _seconds(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}"


def render(health: ClusterHealth) -> str:
    """The table and the verdict, as ``raft-election status`` prints them."""
    header = ("id", "address", "reachable", "role", "term", "leader", "lease left", "last contact (s ago)",
              "rejected", "version")
    lines = []
    for row in health.rows:
        status = row.status
        if status is None:
            lines.append((str(row.node), row.address, "NO", "-", "-", "-", "-", "-", "-", "-"))
            continue
        leader = "-" if row.leader is None else str(row.leader)
        if row.node in health.disagreeing:
            leader += " !"
        contact = " ".join(f"{peer}:{_seconds(seconds)}" for peer, seconds in
                           sorted(status.get("last_contact", {}).items(), key=lambda item: int(item[0])))
        rejected = ", ".join(f"{reason} {count}" for reason, count in row.rejected().items()) or "0"
        lines.append((str(row.node), row.address, "yes", str(status.get("role")), str(status.get("term")),
                      leader, _seconds(status.get("lease_remaining")) if status.get("is_leader") else "-",
                      contact or "-", rejected, str(status.get("version"))))
    widths = [max(len(header[i]), *(len(line[i]) for line in lines)) for i in range(len(header))]
    text = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip()
            for line in (header, *lines)]
    for row in health.rows:
        if row.error is not None:
            text.append(f"member {row.node}: {row.error}")
    text.append(health.verdict())
    return "\n".join(text)


def to_json(health: ClusterHealth) -> dict[str, Any]:
    """The rows and the verdict as JSON data."""
    return {"healthy": health.healthy, "leader": health.leader, "term": health.term,
            "lease_held": health.lease_held, "supporters": health.supporters, "quorum": health.quorum,
            "disagreeing": list(health.disagreeing),
            "verdict": health.verdict(),
            "members": [{"node": row.node, "address": row.address, "admin": row.admin,
                         "reachable": row.reachable, "error": row.error, "status": row.status}
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

