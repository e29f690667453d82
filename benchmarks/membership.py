"""Membership changes on a running cluster: time to commit an add and a remove, and failover mid-change.

Member processes on loopback (``raft-election run``, with a cluster secret and an admin channel each), each
an ordinary application (``benchmarks/app_thread``: a thread reads ``is_leader`` every millisecond), as
users run them.  Changes are made as an operator makes them (``raft-election members add|remove``): an
``add_member`` or ``remove_member`` request to the leader's admin channel, answered once the new
configuration entry is committed (thesis §4.1; :mod:`raft_election.nemesis.changes`).  Per transport:

* **add**: a fresh member (new id, new port, ``run --join`` with a cluster file listing the members and
  itself) is started and reports ``started``; then the time from sending the leader the request to its
  committed answer.  That covers the leader's first entry of its term if it has none yet, the new
  member's catch-up round (§4.2.1) and the commit of the entry that lists it;
* **remove**: the same member is removed again: from the request to the committed answer (then the
  removed process is stopped);
* **failover during a pending change**: a fresh member is started and the leader asked to add it; as soon
  as the leader reports creating the entry that lists it (its ``membership`` event), it is SIGKILLed.
  Measured: from the SIGKILL until another member's lease began (its ``became_leader``); reported besides:
  whether the entry was still uncommitted at the leader when it died, whether the new leader had it (its
  latest entry when it took office lists the member), and how the change ended for the operator (the
  driver asks the new leader again, as ``NotLeaderError`` advises).  The old leader is then restarted, the
  member removed and stopped, before the next trial.

Every trial has a fresh member; between trials the cluster is back at ``--nodes`` members.  Times are the
caller's ``time.monotonic()`` around each request, and the members' own event times for the failover (one
clock on one machine).  Run::

    python -m benchmarks.membership --transport udp --transport zmq --trials 30 \\
        --json benchmarks/results/membership.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import attrs

from benchmarks.appload import app_env, describe
from benchmarks.resources import parse_timeout
from raft_election.bench.report import Summary, summarize
from raft_election.nemesis.changes import ChangeOutcome
from raft_election.nemesis.cluster import ChangingCluster, entry_created
from raft_election.processes import MemberEvent

SECRET = "membership benchmark: members and operators authenticate"
#: Seconds to wait for anything that should take milliseconds (a broken build fails instead of hanging).
PATIENCE = 60.0


@attrs.frozen(kw_only=True)
class FailoverTrial:
    """One SIGKILL of a leader that had just created an entry adding a member."""

    seconds: float
    fast: bool
    #: The leader had not reported the entry committed when it was killed.
    pending: bool
    #: The new leader's entry, when it took office, listed the member being added.
    kept: bool
    #: How the operator's change ended (asked again of the new leader).
    change: Mapping[str, Any]


@attrs.frozen(kw_only=True)
class Result:
    """One transport's figures (seconds)."""

    transport: str
    nodes: int
    election_timeout: tuple[float, float]
    heartbeat_interval: float
    application: str
    adds: tuple[Mapping[str, Any], ...]
    removes: tuple[Mapping[str, Any], ...]
    failovers: tuple[FailoverTrial, ...]
    #: Failover trials in which no leader created the entry (the add failed before that).
    skipped: int = 0

    def summary(self, which: str) -> Optional[Summary]:
        """Order statistics of the committed ``add`` or ``remove`` times, or of the ``failover`` times."""
        if which == "failover":
            return summarize([trial.seconds for trial in self.failovers])
        changes = self.adds if which == "add" else self.removes
        return summarize([float(change["seconds"]) for change in changes if change["ok"]])

    def to_json(self) -> dict[str, Any]:
        """Every sample and summary, JSON-ready."""
        document = attrs.asdict(self)
        summaries: dict[str, Any] = {}
        for which in ("add", "remove", "failover"):
            summary = self.summary(which)
            summaries[which] = None if summary is None else attrs.asdict(summary)
        document["summaries"] = summaries
        return document


def _outcome(outcome: ChangeOutcome) -> dict[str, Any]:
    return outcome.to_json()


def _latest_members(events: Sequence[MemberEvent], node: int, until: int) -> Optional[set[int]]:
    """The members of ``node``'s latest entry reported among ``events[:until]`` (None: none reported)."""
    for event in reversed(events[:until]):
        if event.node == node and event.event in ("membership", "started") and "members" in event.record:
            return {int(member) for member in event.record["members"]}
    return None


def _wait_ready(cluster: ChangingCluster) -> int:
    """The leader, once the leader holds a lease and its configuration stands (nothing pending)."""
    deadline = time.monotonic() + PATIENCE
    members = cluster.changes.committed_members(deadline)
    leader = cluster.changes.wait_leader(deadline)
    if members is None or leader is None:
        raise TimeoutError(f"no leader with a standing configuration within {PATIENCE} s")
    return leader


def add_remove_trial(cluster: ChangingCluster) -> tuple[ChangeOutcome, ChangeOutcome]:
    """Start a fresh member, add it, remove it, stop it; the two changes' outcomes."""
    node = cluster.spawn()
    leader = _wait_ready(cluster)
    added = cluster.changes.change("add", node, cluster.addresses[node], first=leader)
    removed = cluster.changes.change("remove", node)
    cluster.stop(node)
    return added, removed


def failover_trial(cluster: ChangingCluster) -> Optional[FailoverTrial]:
    """SIGKILL the leader as soon as it created the entry adding a fresh member (see the module docstring).

    None if no leader created the entry (the change failed before it: the trial is skipped and the
    cluster put back).
    """
    node = cluster.spawn()
    leader = _wait_ready(cluster)
    since = cluster.processes.mark()
    outcome: list[ChangeOutcome] = []
    worker = threading.Thread(target=lambda: outcome.append(
        cluster.changes.change("add", node, cluster.addresses[node], first=leader)), daemon=True)
    worker.start()
    try:  # the leader asked first, or the one it named
        leader = cluster.processes.wait_for(entry_created(None, node), PATIENCE, since).node
    except TimeoutError:
        worker.join(PATIENCE)
        _wait_ready(cluster)
        cluster.changes.change("remove", node)
        cluster.stop(node)
        return None
    after = cluster.processes.mark()  # before the kill: the next leader may report before the kill returns
    killed = cluster.kill(leader)
    elected = cluster.processes.wait_for(lambda e: e.event == "became_leader" and e.node != leader,
                                         PATIENCE, after)
    events = cluster.processes.events
    before_kill = [e for e in events[since:after] if e.node == leader and e.event == "membership"
                   and e.monotonic <= killed and str(node) in (e.record.get("members") or {})]
    pending = not any(e.record.get("committed") for e in before_kill)
    position = events.index(elected)
    kept = node in (_latest_members(events, elected.node, position) or set())
    worker.join(PATIENCE)
    restarted = cluster.processes.mark()
    cluster.start(leader)
    cluster.wait_started(leader, restarted)
    _wait_ready(cluster)
    cluster.changes.change("remove", node)
    cluster.stop(node)
    return FailoverTrial(seconds=elected.monotonic - killed, fast=bool(elected.record.get("fast")),
                         pending=pending, kept=kept, change=_outcome(outcome[0]) if outcome else {})


def run_transport(*, transport: str, nodes: int, timeout: tuple[float, float], heartbeat: float, trials: int,
                  failovers: int, read_ms: float, seed: int,
                  progress: Any = lambda text: None) -> Result:
    """Every trial on one fresh cluster of ``transport`` members."""
    rng = random.Random(seed)
    adds: list[dict[str, Any]] = []
    removes: list[dict[str, Any]] = []
    killed: list[FailoverTrial] = []
    skipped = 0
    with tempfile.TemporaryDirectory(prefix="membership-") as workdir:
        cluster = ChangingCluster(workdir, transport=transport, election_timeout=timeout,
                                  heartbeat_interval=heartbeat, nodes=nodes, secret=SECRET, name="membership",
                                  env=app_env(read_ms=read_ms))
        try:
            cluster.start_all()
            _wait_ready(cluster)
            for trial in range(trials):
                time.sleep(rng.uniform(0.0, heartbeat))  # any phase of the heartbeat
                added, removed = add_remove_trial(cluster)
                adds.append(_outcome(added))
                removes.append(_outcome(removed))
                progress(f"{transport} add/remove {trial + 1}/{trials}: {added.seconds * 1000:.1f} / "
                         f"{removed.seconds * 1000:.1f} ms")
            for trial in range(failovers):
                time.sleep(rng.uniform(0.0, heartbeat))
                result = failover_trial(cluster)
                if result is None:
                    skipped += 1
                    progress(f"{transport} failover {trial + 1}/{failovers}: skipped, no entry was created")
                    continue
                killed.append(result)
                progress(f"{transport} failover {trial + 1}/{failovers}: {result.seconds * 1000:.1f} ms "
                         f"(pending {result.pending}, kept {result.kept})")
        finally:
            cluster.close()
    return Result(transport=transport, nodes=nodes, election_timeout=timeout, heartbeat_interval=heartbeat,
                  application=describe(read_ms=read_ms, gil_ms=0.0, gil_every=(1.0, 2.0)),
                  adds=tuple(adds), removes=tuple(removes), failovers=tuple(killed), skipped=skipped)


def _ms(summary: Optional[Summary]) -> str:
    if summary is None:
        return "-"
    return f"{summary.median * 1000:.1f} / {summary.p99 * 1000:.1f} / {summary.max * 1000:.1f}"


def table(results: Sequence[Result]) -> str:
    """A markdown table of ``results``: one row per transport."""
    lines = ["| transport | add: median / p99 / max ms | remove: median / p99 / max ms "
             "| failed adds / removes | failover mid-add: median / p99 / max ms | fast "
             "| entry uncommitted at the kill | new leader had the entry "
             "| change committed after the failover (median ms) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        failed = (f"{sum(1 for c in r.adds if not c['ok'])} / {sum(1 for c in r.removes if not c['ok'])} "
                  f"of {len(r.adds)}")
        committed = [t.change["seconds"] for t in r.failovers if t.change.get("ok")]
        changed = summarize(committed)
        n = len(r.failovers)
        lines.append(
            f"| {r.transport} | {_ms(r.summary('add'))} | {_ms(r.summary('remove'))} | {failed} "
            f"| {_ms(r.summary('failover'))} | {sum(t.fast for t in r.failovers)} / {n} "
            f"| {sum(t.pending for t in r.failovers)} / {n} | {sum(t.kept for t in r.failovers)} / {n} "
            f"| {len(committed)} / {n}"
            + ("" if changed is None else f" ({changed.median * 1000:.1f})") + " |"
            + ("" if not r.skipped else f" ({r.skipped} skipped: no entry created)"))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.membership",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--transport", choices=("udp", "zmq"), action="append",
                        help="repeatable (default udp)")
    parser.add_argument("--nodes", type=int, default=5, help="members between trials (default 5)")
    parser.add_argument("--timeout", type=parse_timeout, default=(0.150, 0.300), metavar="MIN-MAX",
                        help="election timeout in ms (default 150-300)")
    parser.add_argument("--heartbeat", type=float, default=50.0, metavar="MS", help="default 50")
    parser.add_argument("--trials", type=int, default=30,
                        help="adds and removes per transport, and failovers unless --failovers (default 30)")
    parser.add_argument("--failovers", type=int, default=None,
                        help="leader kills during a pending add per transport (default: --trials)")
    parser.add_argument("--app-read-ms", type=float, default=1.0,
                        help="the application reads is_leader every MS (default 1; 0: idle members)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the pauses between trials")
    parser.add_argument("--json", metavar="FILE", help="also write every sample to FILE")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    failovers = args.trials if args.failovers is None else args.failovers
    if args.nodes < 3 or args.trials < 1 or failovers < 0:
        parser.error("--nodes must be at least 3, --trials at least 1, --failovers not negative")
    progress = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    results = [run_transport(transport=transport, nodes=args.nodes, timeout=args.timeout,
                             heartbeat=args.heartbeat / 1000.0, trials=args.trials, failovers=failovers,
                             read_ms=args.app_read_ms, seed=args.seed, progress=progress)
               for transport in args.transport or ["udp"]]
    load = os.getloadavg()
    low, high = args.timeout
    print(f"{args.nodes} member processes on loopback (a fresh one added and removed per trial), election "
          f"timeout {low * 1000:g}-{high * 1000:g} ms, heartbeat {args.heartbeat:g} ms; application: "
          f"{results[0].application}; {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load {load[0]:.2f} at the end\n")
    print(table(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump({"argv": sys.argv[1:] if argv is None else list(argv),
                       "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                   "platform": platform.platform()},
                       "results": [result.to_json() for result in results]}, file, indent=1)
            file.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
