"""A picture of a nemesis run: who held a lease when, which faults were applied, where the violations are.

Needs matplotlib (the ``bench`` extra); it is imported only when a plot is asked for, so the checker works
without it.
"""

from __future__ import annotations

import logging
from typing import Any

from raft_election.nemesis.checker import CheckResult
from raft_election.nemesis.history import ALL_KINDS, History
from raft_election.plotting import pyplot

__all__ = ["plot_timeline"]

logger = logging.getLogger(__name__)

#: Height of a member's row, of its lease bars, and of the rows' spacing (data units of the y axis).
_ROW = 1.0
_BAR = 0.6


def plot_timeline(history: History, result: CheckResult, path: str) -> None:
    """Write a PNG timeline of ``history`` to ``path``.

    One row per member (x: seconds since the start of the run): lease-held intervals as bars coloured and
    labelled by term, kills as black crosses, faults as translucent spans coloured by kind (over their
    targets' rows, or over every row when they have no targets), violations as red lines and spans.

    Raises:
        RuntimeError: matplotlib is not installed (install the ``bench`` extra).
    """
    plt = pyplot()
    from matplotlib.patches import Patch  # noqa: PLC0415


    origin = history.started
    members = sorted({*range(1, history.nodes + 1), *(lead.node for lead in result.leaderships),
                      *(event.node for event in history.events), *history.kills})
    row = {member: index * _ROW for index, member in enumerate(members)}
    width = max(8.0, min(24.0, (history.ended - history.started) / 5))
    figure, axis = plt.subplots(figsize=(width, 1.2 + 0.55 * len(members)))

    kind_colors: dict[str, Any] = {}
    applied = sorted({fault.kind for fault in history.faults},
                     key=lambda k: (ALL_KINDS.index(k) if k in ALL_KINDS else 99, k))
    colors = 10 if len(applied) <= 10 else 20  # membership changes too: more colours than tab10 has
    palette = plt.get_cmap(f"tab{colors}")
    for index, kind in enumerate(applied):
        kind_colors[kind] = palette(index % colors)
    for fault in history.faults:
        targets = [member for member in fault.targets if member in row] or members
        for member in targets:
            axis.axvspan(fault.start - origin, fault.end - origin,
                         ymin=_fraction(row[member] - _ROW / 2, members),
                         ymax=_fraction(row[member] + _ROW / 2, members),
                         color=kind_colors[fault.kind], alpha=0.18, linewidth=0)

    terms = plt.get_cmap("tab20")
    for lead in result.leaderships:
        start, length = lead.start - origin, max(lead.seconds, 0.0)
        y = row[lead.node] - _BAR / 2
        axis.broken_barh([(start, length)], (y, _BAR), facecolors=terms(lead.term % 20), edgecolors="black",
                         linewidth=0.4)
        axis.text(start + length / 2, row[lead.node], str(lead.term), ha="center", va="center",
                  fontsize="small", clip_on=True)

    for member, times in history.kills.items():
        axis.plot([at - origin for at in times], [row[member]] * len(times), linestyle="none", marker="x",
                  color="black", markersize=7, markeredgewidth=1.5)

    for finding in result.findings:
        if finding.at is None:  # the checker times every finding; a hand-made one may not be
            continue
        axis.axvline(finding.at - origin, color="red", linewidth=1.2)
        if finding.until is not None and finding.until > finding.at:
            axis.axvspan(finding.at - origin, finding.until - origin, color="red", alpha=0.25, linewidth=0)

    if history.healed is not None:
        axis.axvline(history.healed - origin, color="grey", linestyle="--", linewidth=0.8)

    handles: list[Any] = [Patch(facecolor=color, alpha=0.35, label=kind)
                          for kind, color in kind_colors.items()]
    handles.append(axis.plot([], [], linestyle="none", marker="x", color="black", label="SIGKILL")[0])
    if result.findings:
        handles.append(Patch(facecolor="red", alpha=0.5, label=f"violation ({len(result.findings)})"))
    axis.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axis.set_yticks([row[member] for member in members])
    axis.set_yticklabels([f"member {member}" for member in members])
    axis.set_ylim(-0.5 * _ROW, (len(members) - 0.5) * _ROW)
    axis.set_xlim(0.0, max(history.ended - origin, 1e-3))
    axis.set_xlabel("seconds since start (bars: lease held, labelled with the term)")
    axis.grid(True, axis="x", alpha=0.3)
    low, high = history.election_timeout
    verdict = "no violations" if result.ok else f"{len(result.findings)} VIOLATIONS"
    axis.set_title(f"nemesis: {history.nodes} nodes, {history.transport}, seed {history.seed}, "
                   f"timeout {low * 1000:g}-{high * 1000:g} ms: {verdict}", fontsize="medium")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    logger.info("nemesis timeline written to %s", path)


def _fraction(y: float, members: list[int]) -> float:
    """``y`` (data units) as a fraction of the y axis, which spans the rows of ``members``."""
    low, high = -0.5 * _ROW, (len(members) - 0.5) * _ROW
    return min(1.0, max(0.0, (y - low) / (high - low)))
