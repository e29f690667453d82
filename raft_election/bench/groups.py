"""The election-groups benchmark behind ``raft-election bench --groups N``: many groups over one member set.

For each ``N``, ``nodes`` member processes on loopback (``raft-election run --shards N``: every member
hosts and stands in the groups ``shard-0`` .. ``shard-{N-1}``) start, elect a leader in every group and
settle (the balancer spreads the leaderships).  Then:

* **idle**: each member's CPU time (``/proc/<pid>/stat``) and messages sent (its ``status`` counter
  ``messages_sent``) over a window of ``window``
  seconds, per second; and the leaders per member at the end of it;
* **re-lead** (``trials`` times, for ``N`` of at least ``failover_from``): SIGKILL the member that leads
  the most groups; for every group it led, the time from the kill until another member reported holding
  that group's lease (its ``group_leader`` event; one clock on one machine).  The killed member is started
  again and the cluster given ``settle`` seconds (the balancer moves its groups back) before the next trial.

With ``compare`` (an ``N``), the same idle window is measured for ``compare`` separate clusters of one
election each (``compare`` times as many processes, each running ``raft-election run``), summed per member
index: what running ``compare`` singletons costs without groups.

Every lease interval of every group, over the whole run, is checked at the end
(:func:`~raft_election.processes.group_lease_findings`): the guarantees are part of the result.  Members
run as users run them only if the environment gives them an application (``RE_APP_READ_MS=1
PYTHONPATH=benchmarks/app_thread:.``, see ``benchmarks/appload.py``): it is inherited.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from raft_election.bench.procstat import APPLICATION_THREAD, cpu_seconds, threads_cpu_seconds
from raft_election.errors import ConfigError
from raft_election.processes import (
    MemberEvent,
    MemberProcesses,
    free_ports,
    group_lease_findings,
    group_lease_holders,
    write_cluster_file,
)

__all__ = ["GroupsResult", "GroupsSettings", "groups_table", "run_groups_bench"]

#: Seconds to wait for what should take well under a second (a broken build fails instead of hanging).
PATIENCE = 120.0


@attrs.frozen(kw_only=True)
class GroupsSettings:
    """What to measure.  Times in seconds."""

    groups: tuple[int, ...] = (1, 10, 100, 1000)
    transport: str = "zmq"
    nodes: int = 5
    election_timeout: tuple[float, float] = (0.150, 0.300)
    window: float = 10.0
    settle: float = 10.0
    trials: int = 5
    failover_from: int = 10
    compare: int = 10

    def check(self) -> None:
        """Raise ConfigError (naming the field) before starting anything."""
        if self.transport not in ("udp", "zmq"):
            raise ConfigError("transport", f"the groups benchmark runs processes over udp or zmq, not "
                                           f"{self.transport!r}")
        if not self.groups or any(not 1 <= n <= 10_000 for n in self.groups):
            raise ConfigError("groups", f"each --groups N must be 1 to 10000, got {list(self.groups)}")
        if self.nodes < 3:
            raise ConfigError("nodes", f"a failover needs at least 3 members, got {self.nodes}")
        if self.window <= 0 or self.settle < 0 or self.trials < 0 or self.compare < 0:
            raise ConfigError("window", "window must be positive; settle, trials and compare not negative")


@attrs.frozen(kw_only=True)
class GroupsResult:
    """One ``N``: idle costs per member, leaders per member, re-lead times, and what the checker found."""

    groups: int
    cpu: Mapping[int, float]  #: per member: percent of one core over the idle window (the whole process)
    #: per member: of ``cpu``, what the application threads beside the node took (benchmarks/app_thread)
    app_cpu: Mapping[int, float] = attrs.field(factory=dict)
    messages: Mapping[int, float]  #: per member: messages sent per second over the idle window
    leaders: Mapping[int, int]  #: per member: groups whose lease it held at the end of the window
    #: Seconds from a SIGKILL until a new holder, one per group the killed member led, over all trials.
    relead: tuple[float, ...] = ()
    #: The same groups, in the same order: seconds from the SIGKILL until the new holder's application heard
    #: of its lease (the event line was made; the lease itself began earlier, at ``relead``).
    relead_heard: tuple[float, ...] = ()
    killed_led: tuple[int, ...] = ()  #: how many groups the killed member led, per trial
    violations: tuple[str, ...] = ()  #: findings of the per-group safety checker (empty: none)
    separate: bool = False  #: a comparison row: ``groups`` separate clusters of one election each


def _sent(status: Mapping[str, Any]) -> float:
    return float(status.get("counters", {}).get("messages_sent", 0))


def _idle(processes: Sequence[MemberProcesses], ids: Sequence[int], window: float
          ) -> tuple[dict[int, float], dict[int, float], dict[int, float]]:
    """Per member id over ``window``, summed over ``processes``: CPU and application CPU, messages sent.

    CPU in percent of one core (the whole process); of it, the application threads' (see
    :data:`~raft_election.bench.procstat.APPLICATION_THREAD`); messages sent per second.
    """
    keys = [(k, i) for k in range(len(processes)) for i in ids]
    before_cpu = {(k, i): cpu_seconds(processes[k].pid(i)) for k, i in keys}
    before_app = {(k, i): threads_cpu_seconds(processes[k].pid(i), APPLICATION_THREAD) for k, i in keys}
    before = {(k, i): _sent(processes[k].status(i)) for k, i in keys}
    start = time.monotonic()
    time.sleep(window)  # the idle window itself: nothing to wait for, the members just run
    after_cpu = {(k, i): cpu_seconds(processes[k].pid(i)) for k, i in keys}
    after_app = {(k, i): threads_cpu_seconds(processes[k].pid(i), APPLICATION_THREAD) for k, i in keys}
    elapsed = time.monotonic() - start
    after = {(k, i): _sent(processes[k].status(i)) for k, i in keys}

    def per_member(end: Mapping[tuple[int, int], float], begin: Mapping[tuple[int, int], float],
                   scale: float) -> dict[int, float]:
        return {i: scale * sum(end[(k, i)] - begin[(k, i)] for k in range(len(processes))) / elapsed
                for i in ids}

    return (per_member(after_cpu, before_cpu, 100.0), per_member(after_app, before_app, 100.0),
            per_member(after, before, 1.0))


def _cluster_file(directory: str, settings: GroupsSettings, tag: str) -> tuple[str, list[int]]:
    ids = list(range(1, settings.nodes + 1))
    kind = "udp" if settings.transport == "udp" else "tcp"
    ports = free_ports(settings.nodes, kind=kind)
    members = {i: (f"127.0.0.1:{port}" if settings.transport == "udp" else f"tcp://127.0.0.1:{port}")
               for i, port in zip(ids, ports)}
    path = write_cluster_file(os.path.join(directory, f"cluster-{tag}.json"), members,
                              transport=settings.transport, cluster=f"bench-groups-{tag}",
                              election_timeout=list(settings.election_timeout))
    return path, ids


def _all_led(n: int, processes: MemberProcesses) -> Callable[[Sequence[MemberEvent]], bool]:
    names = {f"shard-{k}" for k in range(n)}

    def check(events: Sequence[MemberEvent]) -> bool:
        holders = group_lease_holders(events, kills=processes.kills)
        return names <= holders.keys()

    return check


def _relead_trial(processes: MemberProcesses, ids: Sequence[int]) -> tuple[int, list[float], list[float]]:
    """Kill the member leading the most groups; return how many it led and, per group, two times.

    From the SIGKILL until a new holder's lease began, and until that holder's application heard of it.
    """
    holders = group_lease_holders(processes.events, kills=processes.kills)
    per_member = {i: sorted(g for g, holder in holders.items() if holder == i) for i in ids}
    victim = max(ids, key=lambda i: len(per_member[i]))
    led = set(per_member[victim])
    mark = len(processes.events)
    killed_at = processes.kill(victim)

    def releaded(events: Sequence[MemberEvent]) -> bool:
        fresh = {e.record.get("group") for e in events[mark:]
                 if e.event == "group_leader" and e.node != victim and e.monotonic > killed_at}
        return led <= fresh

    processes.log.wait_until(releaded, timeout=PATIENCE, what=f"every group {victim} led re-led")
    firsts: dict[str, tuple[float, float]] = {}
    for event in processes.events[mark:]:
        group = event.record.get("group")
        if (event.event == "group_leader" and group in led and event.node != victim
                and event.monotonic > killed_at and group not in firsts):
            heard = float(event.record.get("reported", event.monotonic))
            firsts[group] = (event.monotonic - killed_at, heard - killed_at)
    processes.start(victim)
    ordered = [firsts[group] for group in sorted(led)]
    return len(led), [began for began, _ in ordered], [heard for _, heard in ordered]


def run_groups_bench(settings: GroupsSettings, *, progress: Callable[[str], object] = lambda text: None
                     ) -> list[GroupsResult]:
    """Run everything :class:`GroupsSettings` asks for; see the module docstring."""
    settings.check()
    results = []
    with tempfile.TemporaryDirectory(prefix="raft-bench-groups-") as directory:
        for n in settings.groups:
            progress(f"{n} groups: starting {settings.nodes} members")
            path, ids = _cluster_file(directory, settings, f"{n}")
            workdir = os.path.join(directory, f"groups-{n}")
            os.makedirs(workdir)
            with MemberProcesses(path, workdir, ids, shards=n) as processes:
                processes.start_all()
                processes.log.wait_until(_all_led(n, processes), timeout=PATIENCE,
                                         what=f"a lease holder in each of {n} groups")
                time.sleep(settings.settle)  # the balancer spreads the leaderships: nothing to wait on
                progress(f"{n} groups: idle window")
                cpu, app_cpu, messages = _idle([processes], ids, settings.window)
                holders = group_lease_holders(processes.events, kills=processes.kills)
                leaders = {i: sum(1 for holder in holders.values() if holder == i) for i in ids}
                relead: list[float] = []
                heard: list[float] = []
                killed: list[int] = []
                if n >= settings.failover_from:
                    for trial in range(settings.trials):
                        progress(f"{n} groups: SIGKILL {trial + 1}/{settings.trials}")
                        count, times, heard_times = _relead_trial(processes, ids)
                        killed.append(count)
                        relead.extend(times)
                        heard.extend(heard_times)
                        processes.log.wait_until(_all_led(n, processes), timeout=PATIENCE,
                                                 what=f"a lease holder in each of {n} groups")
                        time.sleep(settings.settle)  # the balancer moves groups back, a few per second
                for i in ids:  # stopped members report every lease's end: judge a finished run
                    if processes.alive(i):
                        processes.terminate(i)
                findings = group_lease_findings(processes.events, kills=processes.kills)
            violations = tuple(f"{group}: {finding}" for group, found in findings.items()
                               for finding in found)
            results.append(GroupsResult(groups=n, cpu=cpu, app_cpu=app_cpu, messages=messages,
                                        leaders=leaders, relead=tuple(relead), relead_heard=tuple(heard),
                                        killed_led=tuple(killed),
                                        violations=violations))
        if settings.compare:
            progress(f"{settings.compare} separate clusters: starting {settings.compare * settings.nodes} "
                     "members")
            clusters = []
            try:
                for k in range(settings.compare):
                    path, ids = _cluster_file(directory, settings, f"separate-{k}")
                    workdir = os.path.join(directory, f"separate-{k}")
                    os.makedirs(workdir)
                    cluster = MemberProcesses(path, workdir, ids)
                    clusters.append(cluster)
                    cluster.start_all()
                for cluster in clusters:
                    cluster.wait_for(lambda e: e.event == "became_leader", timeout=PATIENCE)
                time.sleep(settings.settle)
                progress(f"{settings.compare} separate clusters: idle window")
                cpu, app_cpu, messages = _idle(clusters, ids, settings.window)
                results.append(GroupsResult(groups=settings.compare, cpu=cpu, app_cpu=app_cpu,
                                            messages=messages,
                                            leaders={}, separate=True))
            finally:
                for cluster in clusters:
                    cluster.close()
    return results


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def groups_table(results: Sequence[GroupsResult]) -> str:
    """The results as a markdown table (times in ms, CPU in percent of one core)."""
    header = ("groups", "CPU per member % (median, max)", "of it the application's % (median)",
              "CPU without the application % (median, max)", "messages/s per member",
              "leaders per member", "re-led after SIGKILL ms (median, p99, max; groups)",
              "new holder's application heard ms (median, p99)", "violations")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        cpu = sorted(result.cpu.values())
        app = [result.app_cpu.get(i, 0.0) for i in result.cpu]
        member = sorted(result.cpu[i] - result.app_cpu.get(i, 0.0) for i in result.cpu)
        label = f"{result.groups} separate clusters" if result.separate else str(result.groups)
        if result.relead:
            relead = (f"{statistics.median(result.relead) * 1000:.0f}, "
                      f"{_percentile(result.relead, 0.99) * 1000:.0f}, {max(result.relead) * 1000:.0f}; "
                      f"{len(result.relead)} (killed member led {', '.join(map(str, result.killed_led))})")
        else:
            relead = "-"
        if result.relead_heard:
            heard = (f"{statistics.median(result.relead_heard) * 1000:.0f}, "
                     f"{_percentile(result.relead_heard, 0.99) * 1000:.0f}")
        else:
            heard = "-"
        leaders = " ".join(f"{i}:{count}" for i, count in sorted(result.leaders.items())) or "-"
        lines.append("| " + " | ".join((
            label, f"{statistics.median(cpu):.1f}, {max(cpu):.1f}", f"{statistics.median(app):.1f}",
            f"{statistics.median(member):.1f}, {max(member):.1f}",
            f"{statistics.median(result.messages.values()):.0f}",
            leaders, relead, heard,
            str(len(result.violations)) if not result.separate else "-")) + " |")
    return "\n".join(lines)
