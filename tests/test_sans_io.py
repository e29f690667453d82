"""The election core is sans-I/O (SPEC §3.1): no clock, no randomness of its own, no sockets, no threads.

Checked on the source: the core module and every library module it imports, transitively, import nothing
that does I/O or keeps time, and none of them is storage (the core names ``HardState`` only).
"""

from __future__ import annotations

import ast
from pathlib import Path

import raft_election

PACKAGE = Path(raft_election.__file__).parent

#: Standard modules a sans-I/O module has no business importing.
IO_MODULES = {"fcntl", "os", "select", "selectors", "socket", "subprocess", "tempfile", "threading", "time",
              "zmq", "pathlib", "queue", "signal"}


def _imports(module: str) -> set[str]:
    """The modules ``raft_election.<module>`` imports at run time (absolute names), from its source.

    Imports under ``if TYPE_CHECKING:`` are for the type checker only and are left out.
    """
    found: set[str] = set()
    todo: list[ast.AST] = [ast.parse((PACKAGE / f"{module}.py").read_text())]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            todo += node.orelse
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
        todo += ast.iter_child_nodes(node)
    return found


def _closure(start: str) -> dict[str, set[str]]:
    """Every library module reachable from ``raft_election.<start>`` by imports, with its imports."""
    seen: dict[str, set[str]] = {}
    todo = [start]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen[module] = _imports(module)
        todo += [name.removeprefix("raft_election.") for name in seen[module]
                 if name.startswith("raft_election.")]
    return seen


def test_the_core_and_what_it_imports_do_no_io():
    modules = _closure("core")
    assert "fastfailover" in modules and "hardstate" in modules  # the walk really followed the imports
    for module, imports in modules.items():
        top_level = {name.split(".")[0] for name in imports}
        assert not top_level & IO_MODULES, f"raft_election.{module} imports {sorted(top_level & IO_MODULES)}"
    assert "storage" not in modules and "node" not in modules and "config" not in modules


def test_the_core_draws_random_numbers_only_from_the_injected_generator():
    """``random`` is imported for its type only: no module-level draw such as ``random.random()``."""
    for module in _closure("core"):
        tree = ast.parse((PACKAGE / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "random":
                assert node.attr == "Random", f"raft_election.{module} uses random.{node.attr}"
