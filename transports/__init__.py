"""Transport implementations for raft_election: ``memory``, ``udp`` and ``zeromq``.

Each module is imported on its own (``from transports.memory import InMemoryNetwork``) so that a
deployment pays only for the transport it uses.
"""
