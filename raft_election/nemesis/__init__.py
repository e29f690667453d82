"""Nemesis: a seeded fault-injection soak runner for member processes, and a checker of their histories.

``raft-election nemesis`` starts N members (``raft-election run --json``), applies a random but seeded
schedule of faults (kills, restart storms, pauses, partitions, loss and delay, garbage floods, CPU
starvation and, with ``--faults all``, membership changes through the leader's admin channel: a fresh member
added, one removed, one replaced) and then checks everything the members reported against the guarantees.
"""
