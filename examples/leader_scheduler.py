"""A leader-only scheduler whose followers send their clients to the leader.

Each process is one member of the cluster (``--cluster FILE --id N``) and an HTTP server (``--http``).  The
member publishes its HTTP address as the leader's value, so every member knows where the leader's
application is:

* ``GET /`` on the leader (while it holds a lease): ``200`` and one JSON object: the leader, its term (the
  fencing token) and how many jobs it has run;
* on a follower: ``307 Temporary Redirect`` to the same path on the leader (the leader's value), or ``503``
  while no leader is known.

The leader runs a job every 200 ms while its lease holds, each with the fencing token, and stops the
moment its lease lapses.  SIGTERM or SIGINT stop the process gracefully (a leader hands over first)::

    python examples/leader_scheduler.py --cluster cluster.toml --id 1 --http 127.0.0.1:8081
    python examples/leader_scheduler.py --cluster cluster.toml --id 2 --http 127.0.0.1:8082
    python examples/leader_scheduler.py --cluster cluster.toml --id 3 --http 127.0.0.1:8083
    curl -si http://127.0.0.1:8082/      # a follower: 307, Location: the leader's address
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from raft_election import FileStorage, Leadership, RaftNode, load_cluster_file
from raft_election.member import make_transport


class Scheduler:
    """The application: jobs run only by the leader, with the fencing token."""

    def __init__(self, stop: threading.Event) -> None:
        self.jobs = 0
        self.token = 0
        self._stop = stop
        self._lock = threading.Lock()

    def work(self, leadership: Leadership) -> None:
        """Run jobs while this lease holds (``node.lead`` calls it at each lease) and until told to stop."""
        while leadership.valid() and not self._stop.is_set():
            with self._lock:
                self.jobs += 1
                self.token = leadership.term  # hand this to whatever the job writes to
            leadership.lost.wait(0.2)


def handler(node: RaftNode, scheduler: Scheduler) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if node.is_leader:
                state = {"leader": node.node_id, "term": node.term, "jobs": scheduler.jobs}
                body = json.dumps(state).encode()
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            leader = node.leader_value
            if leader is None:
                self.send_error(HTTPStatus.SERVICE_UNAVAILABLE, "no leader known yet")
                return
            self.send_response(HTTPStatus.TEMPORARY_REDIRECT)
            self.send_header("Location", leader.decode() + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the member's own log says what matters."""

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--http", required=True, metavar="HOST:PORT")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    cluster = load_cluster_file(args.cluster)
    host, port = args.http.rsplit(":", 1)
    stop = threading.Event()
    scheduler = Scheduler(stop)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    node = RaftNode(cluster.config_for(args.id), make_transport(cluster.transport),
                    FileStorage(args.data_dir or f"scheduler-data-{args.id}"), value=f"http://{args.http}")
    server = ThreadingHTTPServer((host, int(port)), handler(node, scheduler))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with node:
        print(json.dumps({"member": args.id, "http": args.http, "ready": True}), flush=True)
        node.lead(scheduler.work, until=stop)
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
