"""Cumulative distributions of failover times per timeout range, drawn like the Raft paper's Figure 16.

Needs matplotlib (the ``bench`` extra); it is imported only when a plot is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

from raft_election.bench.trials import RangeResult
from raft_election.plotting import pyplot

__all__ = ["plot_cdf"]


def plot_cdf(path: str, families: Sequence[tuple[str, Sequence[RangeResult]]], *, title: str = "") -> None:
    """Write a PNG to ``path``: one panel per family, one curve per range (percent of trials against ms).

    Raises:
        RuntimeError: matplotlib is not installed (install the ``bench`` extra).
    """
    plt = pyplot()
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter  # noqa: PLC0415

    figure, axes = plt.subplots(len(families), 1, figsize=(7, 3.2 * len(families)), squeeze=False)
    for axis, (label, results) in zip(axes[:, 0], families):
        for result in results:
            times = sorted(failover.seconds * 1000 for failover in result.failovers)
            if not times:
                continue
            low, high = result.election_timeout
            percent = [100.0 * (index + 1) / len(times) for index in range(len(times))]
            axis.step(times, percent, where="post", label=f"{low * 1000:g}-{high * 1000:g} ms")
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(ScalarFormatter())
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("time without leader (ms)")
        axis.set_ylabel("cumulative percent")
        axis.set_ylim(0, 100)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="small", loc="lower right")
        axis.set_title(label, fontsize="medium")
    if title:
        figure.suptitle(title, fontsize="medium")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
