"""Network namespaces for members: real links to cut with the kernel's own routing (root and iproute2).

Topology, all inside namespaces created here (nothing touches the host's network): a "switch" namespace
holding a bridge, and one namespace per member whose ``eth0`` is one end of a veth pair plugged into the
bridge.  Members get addresses in a /24 that exists only inside these namespaces.  A blackhole route in a
member's namespace drops everything it sends to one peer: one direction of a link, as a real one-way
failure would; both directions make a partition.  Every name carries a random tag, and
:meth:`NetnsLab.destroy` deletes exactly the namespaces this lab created.

Members can also reach each other by host name: :meth:`NetnsLab.name_hosts` writes a hosts file for each
member namespace (``/etc/netns/<namespace>/hosts``, which ``ip netns exec`` shows its commands as
``/etc/hosts``), and :meth:`NetnsLab.move` gives a member a new address and points its name there, as a
replaced host or container would get.
"""

from __future__ import annotations

import os
import random
import shutil
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
        self._last_octet = {i: i for i in self.hosts}
        #: Each member's host name, once :meth:`name_hosts` gave them names.
        self.names: dict[int, str] = {}
        self._hosts_dirs: list[str] = []

    def address(self, node_id: int) -> str:
        """Member ``node_id``'s IPv4 address (inside the namespaces only)."""
        return f"{self.subnet}.{self._last_octet[node_id]}"

    def name_hosts(self) -> dict[int, str]:
        """Give every member a host name, resolvable in every member namespace; return id -> name."""
        self.names = {node_id: f"{host}.test" for node_id, host in self.hosts.items()}
        self._write_hosts()
        return dict(self.names)

    def _write_hosts(self) -> None:
        lines = ["127.0.0.1 localhost", *(f"{self.address(i)} {name}" for i, name in self.names.items())]
        for host in self.hosts.values():
            folder = os.path.join("/etc/netns", host)
            if folder not in self._hosts_dirs:
                os.makedirs(folder, exist_ok=True)
                self._hosts_dirs.append(folder)
            # Rewritten in place, not replaced: ``ip netns exec`` bind-mounts this very file (its inode) over
            # /etc/hosts for the processes it starts, and running members must see the new addresses.
            with open(os.path.join(folder, "hosts"), "w", encoding="ascii") as file:
                file.write("\n".join(lines) + "\n")

    def move(self, node_id: int, last_octet: int) -> None:
        """Give member ``node_id`` the address ``subnet.last_octet`` instead, and point its name there."""
        host, old = self.hosts[node_id], self.address(node_id)
        _ip("-n", host, "addr", "del", f"{old}/24", "dev", "eth0")
        self._last_octet[node_id] = last_octet
        _ip("-n", host, "addr", "add", f"{self.address(node_id)}/24", "dev", "eth0")
        if self.names:
            self._write_hosts()

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
        """Delete every namespace this lab created (their links go with them), and its hosts files."""
        for name in reversed(self.created):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=30)
        self.created.clear()
        for folder in self._hosts_dirs:
            shutil.rmtree(folder, ignore_errors=True)
        self._hosts_dirs.clear()

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
