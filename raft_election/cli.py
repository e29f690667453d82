"""The ``raft-election`` command line (also ``python -m raft_election``).

Subcommands:

* ``demo`` — a 5-member cluster of real member processes on UDP loopback (or ZeroMQ, or threads over the
  in-memory network): the first election, three leader crashes (SIGKILL) with their failover times, a
  graceful handover, and a summary table.  No arguments needed.
* ``run --cluster FILE --id N [--data-dir DIR] [--json] [--voter-only] [--join] [--shards N]`` — one member
  as a process; SIGTERM/SIGINT stop it gracefully (a leader hands over first) with exit status 0; SIGUSR1
  reports a status snapshot.  ``--join``: a new member joining a running cluster (its file lists the
  current members and itself), a voter once ``members add`` made it one.  ``--shards N``: it also hosts
  and stands in the election groups ``shard-0`` .. ``shard-{N-1}`` (see :mod:`raft_election.member`).
* ``lock --cluster FILE --id N [--timeout S] -- COMMAND [ARGS...]`` — run COMMAND while holding the
  cluster's lock (see :mod:`raft_election.lockcmd`).
* ``status --cluster FILE [--secret-file F] [--json] [--watch SECONDS]`` — every member's status over its
  admin channel and whether the cluster is healthy (exit 0) or not (exit 1); see
  :mod:`raft_election.statuscmd`.
* ``members list|add ID ADDRESS|remove ID --cluster FILE [--secret-file F] [--timeout S] [--json]`` — the
  configuration of the running cluster, or a single-server change made by its leader, found through the
  admin channels (exit 0 done, 1 refused or failed); see :mod:`raft_election.memberscmd`.

Errors in the cluster file or the arguments end the command with one line naming the problem and exit
status 2; a member that cannot start (storage unreadable, address in use) exits with status 1.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Optional

from raft_election._version import __version__
from raft_election.errors import ConfigError, RaftElectionError
from raft_election.lockcmd import EXIT_LOST, EXIT_TIMEOUT

if TYPE_CHECKING:
    from raft_election.clusterfile import ClusterFile

__all__ = ["main"]


_SECRET_FILE_HELP = ("read the cluster secret from F (one trailing newline ignored) instead of the cluster "
                     "file's secret or secret_file")


def _parse_timeout(text: str) -> tuple[float, float]:
    """Parse ``MIN-MAX`` in milliseconds, e.g. ``150-300``."""
    try:
        low, high = (float(part) / 1000.0 for part in text.split("-", 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected MIN-MAX in milliseconds, like 150-300, got {text!r}") from None
    return low, high


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raft-election",
        description="Raft leader election and an exclusive distributed lock for Python programs.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log the library's decisions (-v: info, -vv: debug)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="run a local cluster, crash its leader a few times and show the failover times",
        description="Start a local cluster (threads over the in-memory network), show the first election, "
                    "crash the leader FAILOVERS times (restarting it each time) and print each failover "
                    "time, then hand leadership over gracefully.")
    demo.add_argument("--nodes", type=int, default=5, help="cluster size (default 5)")
    demo.add_argument("--failovers", type=int, default=3, help="leader crashes (default 3)")
    demo.add_argument("--timeout", type=_parse_timeout, default=(0.150, 0.300), metavar="MIN-MAX",
                      help="election timeout range in ms (default 150-300)")
    demo.add_argument("--heartbeat", type=float, default=50.0, metavar="MS",
                      help="heartbeat interval in ms (default 50)")
    demo.add_argument("--transport", choices=("udp", "zmq", "memory"), default="udp",
                      help="member processes over UDP (default) or ZeroMQ on loopback, or threads over the "
                           "in-memory network")
    demo.add_argument("--seed", type=int, default=None, help="seed for the in-memory network's delays")

    run = commands.add_parser(
        "run", help="run one cluster member as a process",
        description="Run one member of the cluster described by FILE until SIGTERM or SIGINT (a leader "
                    "hands over first). SIGUSR1 reports a status snapshot.")
    run.add_argument("--cluster", required=True, metavar="FILE", help="cluster file (TOML or JSON)")
    run.add_argument("--id", required=True, type=int, metavar="N", help="this member's id in the file")
    run.add_argument("--data-dir", metavar="DIR",
                     help="where the term and vote are kept (default: raft-data/CLUSTER-N)")
    run.add_argument("--json", action="store_true",
                     help="print one JSON object per line for each event instead of human-readable lines")
    run.add_argument("--voter-only", action="store_true",
                     help="vote, but never stand for election (for the always-on members of a lock cluster)")
    run.add_argument("--faults", metavar="DIR",
                     help="testing: read link faults from DIR/<id>.json at start and again on SIGUSR2")
    run.add_argument("--admin", metavar="ADDR",
                     help="answer admin requests (raft-election status) on host:port (default: this member's "
                          "address in the file's [admin] table, if any)")
    run.add_argument("--admin-allow-remote", action="store_true",
                     help="without a cluster secret, accept a non-loopback --admin address anyway")
    run.add_argument("--metrics", metavar="ADDR:PORT",
                     help="serve Prometheus metrics at http://ADDR:PORT/metrics (needs the metrics extra: "
                          "pip install 'raft-election[metrics]')")
    run.add_argument("--value", metavar="TEXT",
                     help="the value this member publishes while it leads (its application's address, say; "
                          "at most 256 bytes); every member reports the leader's value")
    run.add_argument("--join", action="store_true",
                     help="join a running cluster as a new member: FILE lists the current members and this "
                          "one; it votes and stands for election only once 'raft-election members add' made "
                          "it a member (a configuration stored by an earlier run takes precedence)")
    run.add_argument("--shards", type=int, default=0, metavar="N",
                     help="also host and stand for election in the election groups shard-0 .. shard-{N-1} "
                          "(0 to 10000; default 0: none); with --json each group's leadership here is "
                          "reported (group_leader, group_lost), else a summary every few seconds")

    status = commands.add_parser(
        "status", help="show every member's status and whether the cluster is healthy",
        description="Ask every member listed in the cluster file's [admin] table for its status (with the "
                    "cluster's secret, if it has one) and print one row per member. Exit status 0 when a "
                    "member leads with a lease and a majority follows it, 1 otherwise.")
    status.add_argument("--cluster", required=True, metavar="FILE", help="cluster file (TOML or JSON)")
    status.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    status.add_argument("--watch", type=float, metavar="SECONDS",
                        help="redraw every SECONDS until interrupted")
    status.add_argument("--timeout", type=float, default=2.0, metavar="S",
                        help="seconds to wait for each member (default 2)")
    status.add_argument("--secret-file", metavar="F", help=_SECRET_FILE_HELP)

    _add_members_parser(commands)

    lock = commands.add_parser(
        "lock", help="run a command while holding the cluster's lock (like flock, across machines)",
        description="Join the cluster as member N, acquire the lock, run COMMAND with RAFT_FENCING_TOKEN set "
                    "to the fencing token, release when it exits, and exit with its status. If the lock is "
                    "lost meanwhile, COMMAND is terminated (SIGTERM, then SIGKILL after --grace seconds). "
                    f"Exit status {EXIT_TIMEOUT}: not acquired within --timeout; {EXIT_LOST}: lock lost.")
    lock.add_argument("--cluster", required=True, metavar="FILE", help="cluster file (TOML or JSON)")
    lock.add_argument("--id", required=True, type=int, metavar="N", help="this member's id in the file")
    lock.add_argument("--data-dir", metavar="DIR",
                      help="where the term and vote are kept (default: raft-data/CLUSTER-N)")
    lock.add_argument("--timeout", type=float, default=None, metavar="S",
                      help="give up after S seconds (default: wait forever)")
    lock.add_argument("--grace", type=float, default=5.0, metavar="S",
                      help="seconds between SIGTERM and SIGKILL when the lock is lost (default 5)")
    lock.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")

    bench = commands.add_parser(
        "bench", help="measure failover times: crash the leader many times for each timeout range",
        description="For each --timeout range, start a fresh cluster, SIGKILL its leader --trials times at "
                    "random moments (restarting it each time), time each failover from the kill until a new "
                    "leader holds a lease, then stop the leader --handovers times gracefully; print a "
                    "markdown table with the distribution, split votes and the ideal model "
                    "a + (b-a)/n - h/2 + 2r.  Needs the bench extra: pip install 'raft-election[bench]'.")
    bench.add_argument("--transport", choices=("udp", "zmq", "memory"), default="udp",
                       help="member processes over UDP (default) or ZeroMQ on loopback, or threads over the "
                            "in-memory network")
    bench.add_argument("--nodes", type=int, default=5, help="cluster size (default 5)")
    bench.add_argument("--timeout", type=_parse_timeout, action="append", metavar="MIN-MAX",
                       help="election timeout range in ms; repeat for a family of ranges (default 150-300)")
    bench.add_argument("--heartbeat", type=float, default=None, metavar="MS",
                       help="heartbeat interval in ms (default: a third of each range's minimum)")
    bench.add_argument("--trials", type=int, default=30, help="leader crashes per range (default 30)")
    bench.add_argument("--handovers", type=int, default=10,
                       help="graceful stops of the leader per range (default 10)")
    bench.add_argument("--seed", type=int, default=0, help="seeds the random crash moments (default 0)")
    bench.add_argument("--no-fast-failover", dest="fast_failover", action="store_false",
                       help="members wait out an election timeout even for a dead leader (the timeout path)")
    bench.add_argument("--json", metavar="FILE", help="also write every result and sample to FILE")
    bench.add_argument("--plot", metavar="FILE.png",
                       help="draw the cumulative distribution per range, like the Raft paper's Figure 16")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.add_argument("--groups", type=int, action="append", metavar="N",
                       help="instead: the election-groups benchmark (raft_election.bench.groups) for N "
                            "groups over --nodes members (repeat: --groups 1 --groups 10 ...): idle CPU and "
                            "messages per member, leaders per member, and the time until every group a "
                            "SIGKILLed member led has a new leader (--trials kills per N >= 10); --transport "
                            "udp or zmq")
    bench.add_argument("--window", type=float, default=10.0,
                       help="--groups: seconds of the idle window (default 10)")
    bench.add_argument("--settle", type=float, default=10.0,
                       help="--groups: seconds to settle before the window and after each kill (default 10)")
    bench.add_argument("--compare", type=int, default=10, metavar="K",
                       help="--groups: also measure K separate one-election clusters (default 10; 0: not)")

    nemesis = commands.add_parser(
        "nemesis", help="soak-test member processes under a seeded random schedule of faults",
        description="Start --nodes member processes on 127.0.0.1 and, for --duration seconds, apply a "
                    "random schedule of faults drawn from --seed: SIGKILL and restart, restart storms, "
                    "SIGSTOP/SIGCONT pauses shorter and longer than the lease, partitions, one-way and "
                    "partial cuts, packet loss and delay (a fault-injecting transport in each member), "
                    "garbage floods and CPU starvation.  Then check every member's events: one leader per "
                    "term, no overlapping leases, one vote per term, a leader again soon after the last "
                    "fault; print a report.  Exit status 0: no violation; 1: violations (the report says "
                    "how to replay them).")
    nemesis.add_argument("--nodes", type=int, default=5, help="members, 3 to 9 (default 5)")
    nemesis.add_argument("--transport", choices=("udp", "zmq"), default="udp", help="default udp")
    nemesis.add_argument("--duration", type=float, default=60.0, metavar="S",
                         help="seconds of faults and the quiet gaps between them (default 60)")
    nemesis.add_argument("--rounds", type=int, default=None, metavar="N",
                         help="exactly N faults instead, however long they take")
    nemesis.add_argument("--seed", type=int, default=1, help="draws the fault schedule (default 1)")
    nemesis.add_argument("--timeout", type=_parse_timeout, default=(0.150, 0.300), metavar="MIN-MAX",
                         help="election timeout range in ms (default 150-300)")
    nemesis.add_argument("--heartbeat", type=float, default=50.0, metavar="MS",
                         help="heartbeat interval in ms (default 50)")
    nemesis.add_argument("--faults", metavar="KIND,...",
                         help="only these fault kinds (default: all of kill, storm, pause, partition, "
                              "one_way, partial, loss, delay, flood, starve); 'all': those and the "
                              "membership changes add_member, remove_member, replace_member, made "
                              "through the leader's admin channel with 3 to 7 members ('membership': the "
                              "three alone)")
    nemesis.add_argument("--netns", action="store_true",
                         help="run members in network namespaces and cut links with blackhole routes (root "
                              "and iproute2); loss and delay still go through the members' fault injector")
    nemesis.add_argument("--json", metavar="FILE", help="write the report's figures and the whole history")
    nemesis.add_argument("--plot", metavar="FILE.png", help="draw a timeline: members, leaderships, faults")
    return parser


def _member_id(text: str) -> int:
    """Parse a member id for ``members``: a positive decimal integer."""
    if not text.isdigit() or not 1 <= int(text) <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a member id: use an integer from 1 to {2**32 - 1}")
    return int(text)


def _add_members_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``members list|add|remove``, each taking the same options after its arguments."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cluster", required=True, metavar="FILE",
                        help="cluster file (TOML or JSON) whose [admin] table says where to ask the members")
    common.add_argument("--secret-file", metavar="F", help=_SECRET_FILE_HELP)
    common.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    members = commands.add_parser(
        "members", help="list, add or remove the members of a running cluster",
        description="Find the leader among the members with an admin address in FILE (following the "
                    "leader each one names; authenticated with the cluster's secret when it has one) and "
                    "list the configuration it uses, or have it add or remove one member; a change returns "
                    "once committed (stored by a majority of the new member set). Exit status 0: done; 1: "
                    "refused or failed (the message says why and what to do); 2: bad arguments.",
        epilog="To replace a dead member: start a new one with 'raft-election run --join' (its cluster file "
               "lists the current members and itself), 'members add' it, then 'members remove' the dead "
               "one; update the cluster file afterwards.")
    actions = members.add_subparsers(dest="action", metavar="{list,add,remove}", required=True)
    listing = actions.add_parser(
        "list", parents=[common], help="show the members of the configuration the leader uses",
        description="Show the configuration the leader uses: members, the entry's index and term, and "
                    "whether it is committed.")
    listing.add_argument("--timeout", type=float, default=None, metavar="S",
                         help="seconds to look for a leader, e.g. during an election (default 5)")
    add = actions.add_parser(
        "add", parents=[common], help="add a new member (started with run --join) to the cluster",
        description="Have the leader add member ID at ADDRESS (its transport address). The new member must "
                    "be running, started with 'raft-election run --join' and a cluster file that lists the "
                    "current members and itself: the leader has it answer a heartbeat round first.")
    add.add_argument("id", type=_member_id, metavar="ID", help="the new member's id (a fresh one)")
    add.add_argument("address", metavar="ADDRESS", help="its transport address, e.g. 10.0.0.4:9004")
    remove = actions.add_parser(
        "remove", parents=[common], help="remove a member from the cluster",
        description="Have the leader remove member ID (it may be the leader itself: it hands over once the "
                    "change is committed). Stop the removed member's process afterwards.")
    remove.add_argument("id", type=_member_id, metavar="ID", help="the member to remove")
    for change in (add, remove):
        change.add_argument("--timeout", type=float, default=None, metavar="S",
                            help="seconds the leader waits for the change to commit (default 10, at most 60)")


def _demo(args: argparse.Namespace) -> int:
    from raft_election.config import check_settings  # noqa: PLC0415 (keeps `--help` fast)
    from raft_election.demo import run_memory_demo, run_process_demo  # noqa: PLC0415

    if args.nodes < 1:
        print("raft-election demo: --nodes must be at least 1", file=sys.stderr)
        return 2
    if args.nodes < 2 and args.failovers:
        print("raft-election demo: crashing the leader needs at least 2 nodes", file=sys.stderr)
        return 2
    settings = {"election_timeout": args.timeout, "heartbeat_interval": args.heartbeat / 1000.0}
    check_settings(**settings)
    where = {"udp": "member processes over UDP on loopback",
             "zmq": "member processes over ZeroMQ on loopback",
             "memory": "threads over the in-memory network"}[args.transport]
    print(f"raft-election {__version__} demo: {args.nodes} members, {where}, "
          f"election timeout {args.timeout[0] * 1000:g}-{args.timeout[1] * 1000:g} ms, "
          f"heartbeat {args.heartbeat:g} ms", flush=True)
    report = lambda line: print(line, flush=True)  # noqa: E731
    if args.transport == "memory":
        result = run_memory_demo(args.nodes, args.failovers, seed=args.seed, report=report, **settings)
    else:
        result = run_process_demo(args.nodes, args.failovers, transport=args.transport, report=report,
                                  election_timeout=args.timeout, heartbeat_interval=args.heartbeat / 1000.0)
    rows = [("first election", result.first_election)]
    rows += [(f"crash {number}", crash) for number, crash in enumerate(result.crashes, 1)]
    rows.append(("graceful stop", result.handover))
    print()
    print(f"{'what':<16} {'old leader':>10} {'new leader':>10} {'term':>6} {'ms':>9}")
    for label, row in rows:
        old = str(row.old_leader) if row.old_leader else "-"
        print(f"{label:<16} {old:>10} {row.new_leader:>10} {row.term:>6} {row.seconds * 1000:>9.1f}")
    if result.crashes:
        times = [crash.seconds * 1000 for crash in result.crashes]
        print(f"\ncrash failover: median {statistics.median(times):.1f} ms, max {max(times):.1f} ms "
              f"over {len(times)} crashes")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "lock":
            return _lock(args)
        if args.command == "status":
            return _status(args)
        if args.command == "members":
            return _members(args)
        if args.command == "bench":
            return _bench(args)
        if args.command == "nemesis":
            return _nemesis(args)
        return _demo(args)
    except ConfigError as exc:
        print(f"raft-election {args.command}: {exc}", file=sys.stderr)
        return 2
    except RaftElectionError as exc:
        print(f"raft-election {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _load_member(args: argparse.Namespace) -> ClusterFile:
    """The cluster file of ``--cluster``, checked to list ``--id``."""
    from raft_election.clusterfile import load_cluster_file  # noqa: PLC0415

    cluster = load_cluster_file(args.cluster)
    if args.id not in cluster.members:
        raise ConfigError("id", f"{args.id} is not a member of {args.cluster} (members: "
                                f"{', '.join(str(i) for i in sorted(cluster.members))})")
    return cluster


def _run(args: argparse.Namespace) -> int:
    from raft_election.member import run_member  # noqa: PLC0415

    cluster = _load_member(args)
    return run_member(cluster, args.id, args.data_dir, json_lines=args.json, candidate=not args.voter_only,
                      faults_dir=args.faults, value=args.value,
                      admin=args.admin if args.admin else cluster.admin.get(args.id),
                      admin_allow_remote=args.admin_allow_remote, metrics=args.metrics, join=args.join,
                      shards=args.shards)


def _admin_cluster(args: argparse.Namespace) -> ClusterFile:
    """The cluster file of ``--cluster``, with the secret of ``--secret-file`` if given."""
    import attrs  # noqa: PLC0415

    from raft_election.clusterfile import load_cluster_file, read_secret_file  # noqa: PLC0415

    cluster = load_cluster_file(args.cluster)
    if args.secret_file is not None:
        cluster = attrs.evolve(cluster, secret=read_secret_file(args.secret_file))
    return cluster


def _status(args: argparse.Namespace) -> int:
    from raft_election.statuscmd import run_status  # noqa: PLC0415

    if args.watch is not None and args.watch <= 0:
        raise ConfigError("watch", f"{args.watch} must be a positive number of seconds")
    return run_status(_admin_cluster(args), json_output=args.json, watch=args.watch, timeout=args.timeout)


def _members(args: argparse.Namespace) -> int:
    from raft_election.memberscmd import run_members  # noqa: PLC0415

    cluster = _admin_cluster(args)
    return run_members(cluster, args.action, getattr(args, "id", None), getattr(args, "address", None),
                       secret=cluster.secret, timeout=args.timeout, json_output=args.json)


def _lock(args: argparse.Namespace) -> int:
    from raft_election.lockcmd import run_locked  # noqa: PLC0415

    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
        raise ConfigError("command", "nothing to run: give it after --, e.g. raft-election lock --cluster "
                                     "cluster.toml --id 4 -- backup.sh")
    cluster = _load_member(args)
    return run_locked(cluster, args.id, command, data_dir=args.data_dir, timeout=args.timeout,
                      grace=args.grace)


def _bench(args: argparse.Namespace) -> int:
    if args.groups:
        return _bench_groups(args)
    import contextlib  # noqa: PLC0415
    import json  # noqa: PLC0415

    import attrs  # noqa: PLC0415

    from raft_election.bench import BenchSettings, describe, run_bench, steps  # noqa: PLC0415
    from raft_election.bench.report import markdown_table, to_json  # noqa: PLC0415

    settings = BenchSettings(transport=args.transport, nodes=args.nodes,
                             timeouts=tuple(args.timeout or [(0.150, 0.300)]),
                             heartbeat=None if args.heartbeat is None else args.heartbeat / 1000.0,
                             trials=args.trials, handovers=args.handovers, seed=args.seed,
                             fast_failover=args.fast_failover)
    settings.check()
    print(f"raft-election {__version__} bench: {describe(settings)}", flush=True)
    with contextlib.ExitStack() as stack:
        progress: Callable[[], object] = lambda: None  # noqa: E731
        if not args.no_progress:
            try:
                from tqdm import tqdm  # noqa: PLC0415
            except ImportError:
                raise ConfigError("progress", "the progress bar needs tqdm: pip install "
                                              "'raft-election[bench]', or pass --no-progress") from None
            progress = stack.enter_context(tqdm(total=steps(settings), unit="trial", file=sys.stderr)).update
        results = run_bench(settings, progress=progress)
    print()
    print(markdown_table(results))
    print("\nTimes in ms.  Failover: SIGKILL of the leader until another member's lease began.  fast path: "
          "failovers won on death evidence (fast failover), or off.  split votes: "
          "failovers that took more than one term.  r: the leader's median heartbeat round trip.  ideal: "
          "a + (b-a)/n - h/2 + 2r, the timeout path's model (shown with fast failover off).  first "
          "election: from a quorum of members started until a leader.  "
          "unprovoked: leaders elected while the old one was alive (a restarted member deposing it, or a "
          "spurious timeout) / members restarted.")
    if args.json:
        document = to_json(results, {**attrs.asdict(settings), "command": ["raft-election", *sys.argv[1:]]})
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(document, file, indent=1)
            file.write("\n")
    if args.plot:
        from raft_election.bench.plot import plot_cdf  # noqa: PLC0415

        plot_cdf(args.plot, [(describe(settings), results)])
    return 0


def _bench_groups(args: argparse.Namespace) -> int:
    """``bench --groups N ...``: the election-groups benchmark (see raft_election.bench.groups)."""
    import json  # noqa: PLC0415

    import attrs  # noqa: PLC0415

    from raft_election.bench.groups import GroupsSettings, groups_table, run_groups_bench  # noqa: PLC0415

    timeout = (args.timeout or [(0.150, 0.300)])[0]
    settings = GroupsSettings(groups=tuple(args.groups), transport=args.transport, nodes=args.nodes,
                              election_timeout=timeout, window=args.window, settle=args.settle,
                              trials=args.trials, compare=args.compare)
    settings.check()
    print(f"raft-election {__version__} bench --groups: {', '.join(map(str, settings.groups))} groups over "
          f"{settings.nodes} members ({settings.transport}), election timeout "
          f"{timeout[0] * 1000:g}-{timeout[1] * 1000:g} ms", flush=True)
    say = (lambda text: None) if args.no_progress else (lambda text: print(f"  {text}", file=sys.stderr,
                                                                             flush=True))
    results = run_groups_bench(settings, progress=say)
    print()
    print(groups_table(results))
    print("\nCPU: percent of one core per member process over the idle window (the separate clusters' row: "
          "summed over the K processes of one member id); of it, the application's: the threads that "
          "benchmarks/app_thread starts beside each node (RE_APP_READ_MS, RE_APP_GIL_MS), and without "
          "it: the member's own cost.  Messages sent per second per "
          "member.  Leaders per member: groups whose lease each member held at the end of the window.  "
          "Re-led: from the SIGKILL of the member leading the most groups until another member held each "
          "of its groups' leases (member events, one clock; a lease begins when the vote round that won it "
          "began, thesis §6.4.1), and until the new holder's application heard of it (the event line was "
          "made); the killed member is restarted between trials. "
          " Violations: per-group safety findings over the whole run (two leaders in a term, overlapping "
          "leases, fencing tokens going back).")
    if args.json:
        document = {"settings": attrs.asdict(settings), "command": ["raft-election", *sys.argv[1:]],
                    "results": [attrs.asdict(result) for result in results]}
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(document, file, indent=1, default=str)
            file.write("\n")
    return 0 if not any(result.violations for result in results) else 1


def _nemesis(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    from raft_election.config import check_settings  # noqa: PLC0415
    from raft_election.nemesis.checker import (  # noqa: PLC0415
        check,
        format_report,
        history_to_json,
        result_to_json,
    )
    from raft_election.nemesis.history import FAULT_KINDS  # noqa: PLC0415
    from raft_election.nemesis.runner import NemesisSettings, run_nemesis  # noqa: PLC0415
    from raft_election.nemesis.schedule import check_kinds  # noqa: PLC0415

    if not 3 <= args.nodes <= 9:
        raise ConfigError("nodes", f"the nemesis runs 3 to 9 members, not {args.nodes}")
    kinds = tuple(FAULT_KINDS if args.faults is None else (k.strip() for k in args.faults.split(",")))
    check_kinds(kinds)
    if args.duration <= 0:
        raise ConfigError("duration", f"must be more than 0 seconds, not {args.duration}")
    if args.rounds is not None and args.rounds < 1:
        raise ConfigError("rounds", f"must be at least 1, not {args.rounds}")
    if args.netns:
        from raft_election.nemesis.netns import netns_permitted  # noqa: PLC0415

        reason = netns_permitted()
        if reason:
            raise ConfigError("netns", f"{reason}; or leave out --netns to cut links inside the members")
    settings = NemesisSettings(nodes=args.nodes, transport=args.transport, duration=args.duration,
                               seed=args.seed, election_timeout=args.timeout,
                               heartbeat_interval=args.heartbeat / 1000.0, kinds=kinds, rounds=args.rounds,
                               netns=args.netns)
    check_settings(args.nodes, election_timeout=args.timeout, heartbeat_interval=args.heartbeat / 1000.0)
    print(f"raft-election {__version__} nemesis: {args.nodes} {args.transport} members, "
          f"{args.duration:g} s of faults, seed {args.seed}", flush=True)
    report = lambda fault: print(f"  {fault.kind}", file=sys.stderr, flush=True)  # noqa: E731
    history = run_nemesis(settings, progress=report)
    result = check(history)
    print(format_report(history, result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump({"result": result_to_json(history, result), "history": history_to_json(history)}, file)
            file.write("\n")
    if args.plot:
        from raft_election.nemesis.timeline import plot_timeline  # noqa: PLC0415

        plot_timeline(history, result, args.plot)
    return 0 if result.ok else 1
