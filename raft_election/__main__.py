"""``python -m raft_election``: the same command line as ``raft-election``."""

from raft_election.cli import main

raise SystemExit(main())
