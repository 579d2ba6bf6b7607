"""Figure of ``simulate --sweep-contention``: simulated speedup over sequential against the contention factor,
with the speedup range a paper reports drawn as a band."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
MARKERS = ("o", "s", "^", "D", "v", "P")


def plot_contention_sweep(series: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: str | Path,
                          band: tuple[float, float] | None = None, trainers: Sequence[str] = ("presample", "mspipe"),
                          band_label: str = "MSPipe paper: 1.5-2.45x over its baselines (reported, measured)"
                          ) -> Path:
    """``series``: ``(label, rows)`` per set of stage times, ``rows`` as
    :func:`mspipe_bench.trainers.simulator.sweep_contention` returns them. Colour = trainer, line style and
    marker = stage-time set. Writes ``path`` (matplotlib, Agg) and returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mspipe_bench.harness.variants import variant_color

    path = Path(path)
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    if band is not None:
        ax.axhspan(band[0], band[1], color="0.85", zorder=0, label=band_label)
    ax.axhline(1.0, color="0.4", lw=0.8, zorder=1)
    for n, (label, rows) in enumerate(series):
        xs = [r["factor"] for r in rows]
        for t in trainers:
            ax.plot(xs, [r[t] for r in rows], color=variant_color(t), ls=LINESTYLES[n % len(LINESTYLES)],
                    marker=MARKERS[n % len(MARKERS)], ms=4, lw=1.6, label=f"{t}: {label}")
    ax.set_xlabel("contention factor (a stage overlapping another takes factor x as long while they overlap)")
    ax.set_ylabel("speedup over sequential (simulated)")
    ax.set_title("SIMULATED speedup vs contention factor", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
