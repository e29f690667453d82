"""Network namespaces for members: real links to cut with the kernel's own routing (root and iproute2).

Topology, all inside namespaces created here (nothing touches the host's network): a "switch" namespace
holding a bridge, and one namespace per member whose ``eth0`` is one end of a veth pair plugged into the
bridge.  Members get addresses in a /24 that exists only inside these namespaces.  A blackhole route in a
member's namespace drops everything it sends to one peer: one direction of a link, as a real one-way
failure would; both directions make a partition.  Every name carries a random tag, and
:meth:`NetnsLab.destroy` deletes exactly the namespaces this lab created.
"""

from __future__ import annotations

import random
import subprocess
import uuid

__all__ = ["NetnsLab", "netns_permitted"]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def netns_permitted() -> str:
    """Empty if network namespaces can be made here, else the reason they cannot."""
    probe = f"re-probe-{uuid.uuid4().hex[:8]}"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        return f"cannot create network namespaces here ({detail}); run as root with iproute2"
    subprocess.run(["ip", "netns", "del", probe], check=False, capture_output=True, timeout=30)
    return ""


class NetnsLab:
    """Namespaces for ``size`` members (ids 1..size) and a switch."""

    def __init__(self, size: int) -> None:
        tag = uuid.uuid4().hex[:6]
        self.switch = f"re{tag}sw"
        self.hosts = {i: f"re{tag}h{i}" for i in range(1, size + 1)}
        self.subnet = f"10.231.{random.randint(1, 254)}"
        self.created: list[str] = []
        self.blackholes: set[tuple[int, int]] = set()

    def address(self, node_id: int) -> str:
        """Member ``node_id``'s IPv4 address (inside the namespaces only)."""
        return f"{self.subnet}.{node_id}"

    def build(self) -> None:
        """Create the switch, the member namespaces and their cables; :meth:`destroy` even after a failure."""
        _ip("netns", "add", self.switch)
        self.created.append(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for node_id, host in self.hosts.items():
            _ip("netns", "add", host)
            self.created.append(host)
            _ip("-n", host, "link", "set", "lo", "up")
            _ip("-n", host, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{node_id}",
                "netns", self.switch)
            _ip("-n", host, "addr", "add", f"{self.address(node_id)}/24", "dev", "eth0")
            _ip("-n", host, "link", "set", "eth0", "up")
            _ip("-n", self.switch, "link", "set", f"p{node_id}", "master", "br0")
            _ip("-n", self.switch, "link", "set", f"p{node_id}", "up")

    def destroy(self) -> None:
        """Delete every namespace this lab created (their links go with them)."""
        for name in reversed(self.created):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=30)
        self.created.clear()

    def link(self, node_id: int, up: bool) -> None:
        """Plug (``up``) or unplug member ``node_id``'s cable."""
        _ip("-n", self.hosts[node_id], "link", "set", "eth0", "up" if up else "down")

    def blackhole(self, src: int, dst: int, present: bool) -> None:
        """Drop everything ``src`` sends to ``dst`` (one way), or stop dropping it."""
        action = "add" if present else "del"
        _ip("-n", self.hosts[src], "route", action, "blackhole", f"{self.address(dst)}/32")
        if present:
            self.blackholes.add((src, dst))
        else:
            self.blackholes.discard((src, dst))

    def set_cuts(self, cuts: set[tuple[int, int]]) -> None:
        """Make the blackholes exactly ``cuts``: each ``(src, dst)`` drops what ``src`` sends to ``dst``."""
        for src, dst in sorted(self.blackholes - cuts):
            self.blackhole(src, dst, present=False)
        for src, dst in sorted(cuts - self.blackholes):
            self.blackhole(src, dst, present=True)

    def prefix(self, node_id: int) -> list[str]:
        """The words that run a command in member ``node_id``'s namespace (they exec it: same PID)."""
        return ["ip", "netns", "exec", self.hosts[node_id]]
