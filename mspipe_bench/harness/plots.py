"""Figures from result files only (matplotlib, Agg backend; each figure written in every requested format).

The figure kinds are the entries of :data:`FIGURES` (name, what it shows, drawing function): ``make_plots``,
the ``plot`` command's ``--only`` and its help take them from there. The numbers behind the figures come from
:mod:`~mspipe_bench.harness.analysis`, variant order and colours from :mod:`~mspipe_bench.harness.variants`.
A figure whose data is absent is skipped with a reason (:class:`PlotReport`). Only complete runs are used.
pandas and matplotlib are imported when figures are drawn, so that the registry is cheap to import.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from mspipe_bench.errors import UserError
from mspipe_bench.harness.analysis import (ResultCache, measured_vs_simulated_table, model_dataset_groups, pick_runs,
                                           stage_times, timeline_rows)
from mspipe_bench.harness.variants import order_variants, variant_color
from mspipe_bench.trainers.rules import COMM_NAMES, STAGE_NAMES, STAGES, THREAD_ORDER, thread_sort_key

if TYPE_CHECKING:
    import pandas as pd

STAGE_COLORS = {"S": "#4C72B0", "F": "#64B5CD", "M": "#C44E52", "T": "#8172B2", "U": "#DD8452"}
GANTT_ITERATIONS = 8


class Skip(Exception):
    """A figure cannot be drawn from the available results (the message says why)."""


@dataclass
class PlotReport:
    out_dir: Path
    written: dict[str, list[Path]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = []
        for name, files in self.written.items():
            out.append(f"  {name}: " + ", ".join(str(f) for f in files))
        for name, why in self.skipped.items():
            out.append(f"  {name}: skipped -- {why}")
        return out


@dataclass
class PlotData:
    """What every figure draws from: the complete runs (one row each, with speedups) and their full results."""

    df: pd.DataFrame
    results: ResultCache


def _stage_label(s: str) -> str:
    """``S sample``: the stage letter and its name."""
    return f"{s} {STAGE_NAMES[s]}"


# --------------------------------------------------------------------------------------------- styling
def _setup():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "figure.dpi": 110,
        "savefig.dpi": 130,
        "font.size": 9.5,
        "axes.titlesize": 10.5,
        "axes.labelsize": 9.5,
        "legend.fontsize": 8.5,
        "xtick.labelsize": 8.5,
        "ytick.labelsize": 8.5,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
    })
    return plt


def _short(v: str) -> str:
    """Compact variant label for tick labels."""
    return v.replace("fixed-staleness-", "fixed ").replace("fixed-staleness", "fixed")


def _save(plt, fig, out_dir: Path, name: str, formats: Iterable[str]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for fmt in formats:
        p = out_dir / f"{name}.{fmt}"
        fig.savefig(p, bbox_inches="tight")
        files.append(p)
    plt.close(fig)
    return files


def _group_title(model: str, dataset: str, wrap: int | None = None) -> str:
    """``TGN / wikipedia``; with ``wrap``: model on one line, the dataset wrapped (at commas) below."""
    if wrap is None:
        return f"{model.upper()} / {dataset}"
    lines, cur = [], ""
    for part in re.split(r"(?<=[,:])", str(dataset)):
        if cur and len(cur) + len(part) > wrap:
            lines.append(cur)
            cur = ""
        cur += part
    lines.append(cur)
    return model.upper() + "\n" + "\n".join(lines)


def _label_groups(ax, centers, groups, slots_per_group) -> None:
    """Bold group titles above the clusters of a grouped bar/point chart, wrapped to the cluster width."""
    for c, g, n in zip(centers, groups, slots_per_group):
        ax.annotate(_group_title(*g, wrap=max(12, int(n * 7))), (c, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(0, 4), textcoords="offset points", ha="center", va="bottom", fontweight="bold",
                    fontsize=8.5)


def _spread(values: np.ndarray) -> tuple[float, float, float]:
    return float(np.mean(values)), float(np.min(values)), float(np.max(values))


# -------------------------------------------------------------------------------------- bar-type plots
def _grouped_positions(groups, variants_of):
    """x positions: one cluster per group, one slot per variant present in it."""
    pos, centers, x = {}, [], 0.0
    for g in groups:
        vs = variants_of(g)
        start = x
        for v in vs:
            pos[(g, v)] = x
            x += 1.0
        centers.append((start + x - 1.0) / 2.0)
        x += 0.8
    return pos, centers


def _grouped_bars_layout(plt, df: pd.DataFrame, nrows: int, row_height: float, extra_height: float):
    """Bars grouped by model x dataset, one bar per trainer variant: the groups, the variants of a group,
    bar positions, group centres, and a figure with ``nrows`` stacked axes sharing x."""
    groups = model_dataset_groups(df)
    variants = order_variants(df["variant"])

    def variants_of(g):
        sub = df[(df["config.model"] == g[0]) & (df["dataset_label"] == g[1])]
        return [v for v in variants if v in set(sub["variant"])]

    pos, centers = _grouped_positions(groups, variants_of)
    width = max(7.0, 1.6 + 0.55 * len(pos) + 0.4 * len(groups))
    fig, axes = plt.subplots(nrows, 1, figsize=(width, row_height * nrows + extra_height), sharex=True,
                             squeeze=False)
    return groups, variants_of, pos, centers, fig, axes[:, 0]


def plot_throughput(plt, data: PlotData) -> Any:
    df = data.df
    if df.empty:
        raise Skip("no complete runs")
    has_speedup = df["speedup_vs_sequential"].notna().any()
    nrows = 2 if has_speedup else 1
    groups, variants_of, pos, centers, fig, axes = _grouped_bars_layout(plt, df, nrows, 3.4, 0.6)
    metrics = [("metrics.train_events_per_s", "training events/s (measured)", "{:,.0f}")]
    if has_speedup:
        metrics.append(("speedup_vs_sequential", "speedup over sequential\n(same seed, same sweep)", "{:.2f}x"))
    for ax, (col, ylabel, fmt) in zip(axes, metrics):
        for (g, v), x in pos.items():
            sub = df[(df["config.model"] == g[0]) & (df["dataset_label"] == g[1]) & (df["variant"] == v)]
            vals = sub[col].dropna().to_numpy(dtype=float)
            if not len(vals):
                continue
            mean, lo, hi = _spread(vals)
            ax.bar(x, mean, width=0.8, color=variant_color(v), edgecolor="black", linewidth=0.5)
            if len(vals) > 1:
                ax.errorbar(x, mean, yerr=[[mean - lo], [hi - mean]], color="black", capsize=3, linewidth=1)
                ax.scatter(np.full(len(vals), x) + np.linspace(-0.15, 0.15, len(vals)), vals, s=9, color="black",
                           zorder=3)
            ax.annotate(fmt.format(mean), (x, hi), xytext=(0, 3), textcoords="offset points", ha="center",
                        va="bottom", fontsize=7.5)
        ax.set_ylabel(ylabel)
        ax.margins(y=0.15)
        if col == "speedup_vs_sequential":
            ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
    axes[-1].set_xticks(list(pos.values()))
    axes[-1].set_xticklabels([_short(v) for (_, v) in pos], rotation=35, ha="right")
    _label_groups(axes[0], centers, groups, [len(variants_of(g)) for g in groups])
    nseeds = df.groupby(["config.model", "dataset_label", "variant"]).size().max()
    fig.suptitle("Training throughput by trainer (evaluation excluded)"
                 + (f"; bars: mean of up to {nseeds} seeds, whiskers: min-max, dots: seeds" if nseeds > 1 else ""),
                 y=1.0)
    fig.tight_layout()
    return fig


SEED_MARKERS = "o^sDvP*X"


def plot_accuracy(plt, data: PlotData) -> Any:
    df = data.df
    df = df[df["metrics.test_ap"].notna()] if "metrics.test_ap" in df.columns else df.iloc[0:0]
    if df.empty:
        raise Skip("no complete run with metrics.test_ap")
    has_delta = df["test_ap_delta_vs_sequential"].notna().any()
    nrows = 2 if has_delta else 1
    groups, variants_of, pos, centers, fig, axes = _grouped_bars_layout(plt, df, nrows, 3.3, 0.9)
    seeds = sorted(df["config.seed"].unique())
    panels = [("metrics.test_ap", "test AP\n(mean of per-batch AP)", "{:.3f}")]
    if has_delta:
        panels.append(("test_ap_delta_vs_sequential", "test AP minus sequential's\n(same seed, same sweep)",
                       "{:+.3f}"))
    for ax, (col, ylabel, fmt) in zip(axes, panels):
        for (g, v), x in pos.items():
            sub = df[(df["config.model"] == g[0]) & (df["dataset_label"] == g[1]) & (df["variant"] == v)]
            sub = sub[sub[col].notna()]
            if sub.empty:
                continue
            vals = sub[col].to_numpy(dtype=float)
            mean = float(np.mean(vals))
            ax.hlines(mean, x - 0.35, x + 0.35, color=variant_color(v), linewidth=3, zorder=2)
            for seed, val in zip(sub["config.seed"], vals):
                ax.plot(x, val, marker=SEED_MARKERS[seeds.index(seed) % len(SEED_MARKERS)], markersize=6,
                        color=variant_color(v), markeredgecolor="black", linestyle="none", zorder=3)
            ax.annotate(fmt.format(mean), (x, max(vals)), xytext=(0, 6), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7.5)
        ax.set_ylabel(ylabel)
        ax.margins(y=0.2)
        if col == "test_ap_delta_vs_sequential":
            ax.axhline(0.0, color="black", linestyle="--", linewidth=0.8)
    axes[-1].set_xticks(list(pos.values()))
    axes[-1].set_xticklabels([_short(v) for (_, v) in pos], rotation=35, ha="right")
    _label_groups(axes[0], centers, groups, [len(variants_of(g)) for g in groups])
    if len(seeds) > 1:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], marker=SEED_MARKERS[n % len(SEED_MARKERS)], color="grey", markeredgecolor="black",
                          linestyle="none", label=f"seed {sd}") for n, sd in enumerate(seeds)]
        handles.append(Line2D([], [], color="grey", linewidth=3, label="mean over seeds"))
        axes[0].legend(handles=handles, loc="lower left", ncol=len(handles), fontsize=7.5)
    fig.suptitle("Test AP by trainer (parameters of the best-validation epoch)", y=1.0)
    fig.tight_layout()
    return fig


def plot_staleness_sweep(plt, data: PlotData) -> Any:
    from matplotlib.lines import Line2D

    df = data.df
    fs = df[df["config.trainer"] == "fixed-staleness"]
    if fs.empty:
        raise Skip("no fixed-staleness runs")
    groups = [g for g in model_dataset_groups(df)
              if ((fs["config.model"] == g[0]) & (fs["dataset_label"] == g[1])).any()]
    use_speedup = df["speedup_vs_sequential"].notna().any()
    use_delta = df["test_ap_delta_vs_sequential"].notna().any()
    acol = "test_ap_delta_vs_sequential" if use_delta else "metrics.test_ap"
    alabel = "test AP minus sequential's (same seed)" if use_delta else "test AP (mean of per-batch AP)"
    tcol = "speedup_vs_sequential" if use_speedup else "metrics.train_events_per_s"
    tlabel = "speedup over sequential (measured, same seed)" if use_speedup else "training events/s (measured)"
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.4))
    multi = len(groups) > 1
    for gi, g in enumerate(groups):
        sub = df[(df["config.model"] == g[0]) & (df["dataset_label"] == g[1])]
        f = sub[sub["config.trainer"] == "fixed-staleness"]
        color = plt.cm.tab10(gi % 10) if multi else variant_color("fixed-staleness-k3")
        for ax, col in zip(axes, (acol, tcol)):
            agg = f.groupby("config.staleness")[col].agg(["mean", "min", "max"]).sort_index().dropna()
            if agg.empty:
                continue
            ax.errorbar(agg.index, agg["mean"], yerr=[agg["mean"] - agg["min"], agg["max"] - agg["mean"]],
                        marker="o", color=color, capsize=3)
            for name, fill in (("mspipe", True), ("mspipe-nomit", False)):
                vals = sub[sub["variant"] == name][[col, "metrics.mean_k"]].dropna()
                if vals.empty:
                    continue
                x, y = vals["metrics.mean_k"].mean(), vals[col].mean()
                mcolor = color if multi else variant_color(name)
                ax.plot(x, y, marker="*", markersize=15, linestyle="none", color=mcolor,
                        markerfacecolor=mcolor if fill else "white", markeredgecolor="black")
                if not multi:
                    ax.annotate(name, (x, y), xytext=(8, 4), textcoords="offset points", fontsize=8)
            p = sub[sub["variant"] == "presample"][col].dropna()
            if len(p):
                ax.plot(1, p.mean(), marker="s", markersize=8, linestyle="none",
                        color=color if multi else variant_color("presample"), markerfacecolor="white",
                        markeredgewidth=1.5)
    for ax, ylabel in zip(axes, (alabel, tlabel)):
        ax.set_xlabel("staleness bound K (fixed-staleness) or mean k(i) (mspipe)")
        ax.set_ylabel(ylabel)
        ks = sorted(set(int(k) for k in fs["config.staleness"].dropna()) | {1})
        ax.set_xticks(range(1, max(ks) + 1))
        ax.margins(x=0.08, y=0.15)
    if use_delta:
        axes[0].axhline(0.0, color="black", linestyle="--", linewidth=0.8)
    if use_speedup:
        axes[1].axhline(1.0, color="black", linestyle="--", linewidth=0.8)
    axes[0].set_title("Accuracy vs staleness bound")
    axes[1].set_title("Throughput vs staleness bound")
    grey = "#555555"
    handles = [
        Line2D([], [], marker="o", color=grey if multi else variant_color("fixed-staleness-k3"),
               label="fixed-staleness at bound K"),
        Line2D([], [], marker="*", markersize=12, linestyle="none", color=grey if multi else variant_color("mspipe"),
               markeredgecolor="black", label="mspipe, at its mean k(i)"),
        Line2D([], [], marker="*", markersize=12, linestyle="none", color=grey, markerfacecolor="white",
               markeredgecolor="black", label="mspipe without mitigation"),
        Line2D([], [], marker="s", linestyle="none", color=grey if multi else variant_color("presample"),
               markerfacecolor="white", label="presample (its rule is K = 1)"),
    ]
    if multi:
        handles += [Line2D([], [], color=plt.cm.tab10(gi % 10), linewidth=4, label=_group_title(*g))
                    for gi, g in enumerate(groups)]
    ncol = 4
    fig.legend(handles=handles, loc="lower center", ncol=ncol, bbox_to_anchor=(0.5, 0.0), frameon=False)
    title = "Staleness sweep: mean over seeds, whiskers min-max"
    if not multi:
        title += f" -- {_group_title(*groups[0])}"
    fig.suptitle(title)
    height = 4.4
    rows = math.ceil(len(handles) / ncol)
    fig.tight_layout(rect=(0, (0.1 + 0.25 * rows) / height, 1, 1))
    return fig


def plot_convergence(plt, data: PlotData) -> Any:
    df, results = data.df, data.results
    if df.empty or df["n_epochs_done"].max() < 2:
        raise Skip("needs runs with at least 2 epochs (validation AP per epoch)")
    groups = model_dataset_groups(df)
    fig, axes = plt.subplots(len(groups), 2, figsize=(11.0, 3.3 * len(groups) + 0.8), squeeze=False)
    for row, g in enumerate(groups):
        sub = df[(df["config.model"] == g[0]) & (df["dataset_label"] == g[1])]
        for v in order_variants(sub["variant"]):
            curves = []
            for path in sub[sub["variant"] == v]["path"]:
                eps = results(path)["epochs"]
                curves.append([(e["epoch"] + 1, e["val_ap"], e.get("wall_end_s", math.nan)) for e in eps])
            n = min(len(c) for c in curves)
            arr = np.array([c[:n] for c in curves], dtype=float)  # seeds x epochs x 3
            ep, ap, wall = arr[0, :, 0], arr[:, :, 1].mean(0), arr[:, :, 2].mean(0)
            color = variant_color(v)
            # sequential drawn wide underneath: presample (same numerics) lies exactly on it
            style = dict(linewidth=4, alpha=0.45, zorder=1) if v == "sequential" else dict(linewidth=1.5, zorder=2)
            axes[row, 0].plot(ep, ap, marker="o", markersize=4, color=color, label=v, **style)
            if len(arr) > 1:
                axes[row, 0].fill_between(ep, arr[:, :, 1].min(0), arr[:, :, 1].max(0), color=color, alpha=0.15)
            axes[row, 1].plot(wall, ap, marker="o", markersize=4, color=color, label=v, **style)
        axes[row, 0].set_xlabel("epoch")
        axes[row, 0].xaxis.get_major_locator().set_params(integer=True)
        axes[row, 1].set_xlabel("wall-clock time since run start (s, evaluation included)")
        for ax in axes[row]:
            ax.set_ylabel("validation AP")
        axes[row, 0].set_title(f"{_group_title(*g)}", loc="left", fontweight="bold", fontsize=9.5)
        axes[row, 1].set_title("same, over wall-clock time", loc="left", fontsize=9.5)
        axes[row, 1].legend(loc="best", fontsize=7.5)
    height = 3.3 * len(groups) + 0.8
    fig.suptitle("Convergence: validation AP (mean over seeds; band: min-max over seeds)")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / height))
    return fig


def plot_stage_breakdown(plt, data: PlotData) -> Any:
    seq = data.df[data.df["config.trainer"] == "sequential"]
    if seq.empty:
        raise Skip("no sequential runs (stage times are taken from sequential runs, where nothing overlaps)")
    groups, shares, per_iter = stage_times(seq, data.results)
    labels = [_group_title(*g) for g in groups]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12.0, 1.9 + 0.75 * len(groups)),
                                   gridspec_kw={"width_ratios": [1.5, 1]})
    y = np.arange(len(groups))
    left = np.zeros(len(groups))
    for si, s in enumerate(STAGES):
        ax1.barh(y, shares[:, si] * 100, left=left * 100, color=STAGE_COLORS[s], edgecolor="white",
                 label=_stage_label(s), height=0.6)
        for yi in range(len(groups)):
            w = shares[yi, si] * 100
            if w >= 6:
                ax1.text((left[yi] + shares[yi, si] / 2) * 100, yi, f"{s} {w:.1f}%", ha="center", va="center",
                         color="white", fontsize=8, fontweight="bold")
        left += shares[:, si]
    for yi in range(len(groups)):
        small = ", ".join(f"{s} {shares[yi, si] * 100:.1f}%" for si, s in enumerate(STAGES) if shares[yi, si] < 0.06)
        if small:
            ax1.text(1, yi + 0.42, "small: " + small, va="center", fontsize=7.5)
    ax1.set_yticks(y)
    ax1.set_yticklabels(labels)
    ax1.set_xlim(0, 100)
    ax1.set_ylim(len(groups) - 0.3, -0.5)
    ax1.set_xlabel("share of the summed stage time (%)")
    ax1.set_title("Share of each stage (sequential runs, measured)")
    ax1.grid(axis="y", visible=False)
    bar_h = 0.8 / len(STAGES)
    for si, s in enumerate(STAGES):
        ax2.barh(y - 0.4 + bar_h * (si + 0.5), per_iter[:, si], height=bar_h, color=STAGE_COLORS[s])
        for yi in range(len(groups)):
            ax2.text(per_iter[yi, si], y[yi] - 0.4 + bar_h * (si + 0.5), f" {s} {per_iter[yi, si]:.3g}",
                     va="center", fontsize=7)
    ax2.set_xscale("log")
    ax2.set_xlim(right=ax2.get_xlim()[1] * 8)
    ax2.set_yticks(y)
    ax2.set_yticklabels([])
    ax2.invert_yaxis()
    ax2.set_xlabel("mean time per training iteration (ms, log scale)")
    ax2.set_title("Mean stage time per iteration")
    ax2.grid(axis="y", visible=False)
    fig.legend(*ax1.get_legend_handles_labels(), loc="lower center", ncol=5, frameon=False,
               bbox_to_anchor=(0.5, -0.01))
    fig.tight_layout(rect=(0, 0.08 if len(groups) > 2 else 0.14, 1, 1))
    return fig


# ----------------------------------------------------------------------------------------------- gantt
def _draw_lanes(ax, rows, n_show: int, t0: float, lanes: list[str], xmax: float) -> None:
    lane_y = {name: n for n, name in enumerate(lanes)}
    min_label = xmax * 0.018
    for i, s, start, end, thread in rows:
        if thread not in lane_y:
            continue
        x0, w = (start - t0) * 1e3, max(0.0, end - start) * 1e3
        if x0 > xmax:
            continue
        faded = i >= n_show
        ax.barh(lane_y[thread], w, left=x0, height=0.7, color=STAGE_COLORS.get(s, "grey"),
                alpha=0.25 if faded else 1.0, edgecolor="black" if not faded else "none", linewidth=0.4)
        if not faded and w >= min_label:
            ax.text(x0 + w / 2, lane_y[thread], str(i), ha="center", va="center", fontsize=7.5, color="white",
                    fontweight="bold", clip_on=True)
    ax.set_yticks(range(len(lanes)))
    ax.set_yticklabels(lanes)
    ax.set_ylim(len(lanes) - 0.5, -0.5)
    ax.set_xlim(0, xmax)
    ax.grid(axis="y", visible=False)


def plot_gantt(plt, data: PlotData, row: pd.Series, n_show: int = GANTT_ITERATIONS) -> Any:
    from matplotlib.patches import Patch

    from mspipe_bench.trainers.rules import make_schedule
    from mspipe_bench.trainers.simulator import simulate, timeline_from_result

    r = data.results(row["path"])
    c = r["config"]
    epochs = sorted({it["epoch"] for it in r["iterations"]})
    if not epochs:
        raise Skip(f"{row['path']}: no training iterations")
    epoch = epochs[0]
    measured = timeline_rows(r, epoch)
    if not measured:
        raise Skip(f"{row['path']}: no training rows in the timeline")
    t0 = min(start for _, _, start, _, _ in measured)
    n_iter = len([it for it in r["iterations"] if it["epoch"] == epoch])
    n_show = min(n_show, n_iter)
    schedule = make_schedule(c["trainer"], staleness=c.get("staleness") or 1,
                             max_staleness=c.get("max_staleness") or 4, prefetch=c.get("prefetch") or 2)
    # the trainers keep their stage-time estimates across epochs: epoch 0 starts without estimates
    sim = simulate(timeline_from_result(r, epoch), schedule, warmup="cold" if epoch == epochs[0] else "first")
    simulated = [(i, s, start, end, worker) for i, s, start, end, worker in sim.timeline]
    end_meas = max(end for i, _, _, end, _ in measured if i < n_show) - t0
    end_sim = max(end for i, _, _, end, _ in simulated if i < n_show)
    xmax = max(end_meas, end_sim) * 1e3 * 1.02
    if any("/" in t for *_, t in measured):  # data-parallel: rank 0's stage times simulated, every rank measured
        simulated = [(i, s, start, end, f"r0/{worker}") for i, s, start, end, worker in simulated]
    lanes = sorted({t for *_, t in measured} | {w for *_, w in simulated}, key=thread_sort_key)
    lanes = [ln for ln in lanes if thread_sort_key(ln)[1] < len(THREAD_ORDER)]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12.0, 1.2 + 2 * (0.42 * len(lanes) + 0.9)), sharex=True)
    _draw_lanes(ax1, measured, n_show, t0, lanes, xmax)
    _draw_lanes(ax2, simulated, n_show, 0.0, lanes, xmax)
    its = {it["i"]: it for it in r["iterations"] if it["epoch"] == epoch}
    ks = ", ".join(str(its[i]["k"]) for i in range(n_show) if i in its)
    ax1.set_title(f"MEASURED timeline of this run (epoch {epoch}, iterations 0-{n_show - 1}: "
                  f"{end_meas * 1e3:.0f} ms; k(i) = {ks})", loc="left")
    ax2.set_title(f"SIMULATED: schedule simulator replaying this run's per-iteration stage times "
                  f"({end_sim * 1e3:.0f} ms; k(i) = {', '.join(map(str, sim.k[:n_show]))})", loc="left")
    ax2.set_xlabel("time since the epoch's first stage (ms); numbers on bars = iteration; faded = later iterations")
    handles = [Patch(color=STAGE_COLORS[s], label=_stage_label(s)) for s in STAGES]
    if any(s in COMM_NAMES for _, s, *_ in measured):  # data-parallel: collectives, drawn inside their stage
        handles.append(Patch(color="grey", label="communication (" + ", ".join(COMM_NAMES.values()) + ")"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), frameon=False,
               bbox_to_anchor=(0.5, -0.01))
    fig.suptitle(f"Pipeline Gantt chart: {c['label']} ({row['variant']}, {row['dataset_label']})")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


# ------------------------------------------------------------------------------------------- staleness
def plot_staleness(plt, data: PlotData) -> Any:
    stale = [v for v in order_variants(data.df["variant"]) if v.startswith(("mspipe", "fixed-staleness"))]
    picks = pick_runs(data.df, [v for v in stale if v.startswith("mspipe")]
                      + [v for v in stale if not v.startswith("mspipe")])
    if not picks:
        raise Skip("no mspipe or fixed-staleness runs")
    n = len(picks)
    fig, axes = plt.subplots(n, 2, figsize=(12.0, 2.5 * n + 0.9), squeeze=False,
                             gridspec_kw={"width_ratios": [2.6, 1]})
    for row, (v, run) in enumerate(picks.items()):
        r = data.results(run["path"])
        its = r["iterations"]
        x = np.arange(len(its))
        k = np.array([it["k"] for it in its])
        obs = np.array([it["observed_staleness"] for it in its])
        ax = axes[row, 0]
        ax.step(x, k, where="mid", color="black", linewidth=1.3, label="bound k(i)")
        ax.bar(x, obs, width=0.8, color=variant_color(v), edgecolor="black", linewidth=0.3,
               label="observed staleness")
        bounds = [n_ for n_ in range(1, len(its)) if its[n_]["epoch"] != its[n_ - 1]["epoch"]]
        for b in bounds:
            ax.axvline(b - 0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_ylim(0, max(int(k.max()), int(obs.max()), 1) + 0.6)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("iterations")
        ax.set_title(f"{v} (seed {run['config.seed']}): bound k(i) and observed staleness per iteration",
                     loc="left")
        hx = axes[row, 1]
        vals, counts = np.unique(obs, return_counts=True)
        hx.bar(vals, counts / len(obs) * 100, color=variant_color(v), edgecolor="black", width=0.7)
        for a, b in zip(vals, counts):
            hx.text(a, b / len(obs) * 100, f"{b / len(obs) * 100:.0f}%", ha="center", va="bottom", fontsize=7.5)
        hx.set_xticks(range(0, int(max(k.max() - 1, obs.max())) + 1))
        hx.set_xlabel("observed staleness (iterations)")
        hx.set_ylabel("% of iterations")
        hx.set_ylim(0, 115)
        hx.set_title(f"histogram: mean {obs.mean():.2f}, max {obs.max()}", loc="left")
    axes[-1, 0].set_xlabel("training iteration (all epochs in order; dotted lines: epoch boundaries)")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Line2D([], [], color="black", linewidth=1.3, label="bound k(i)"),
               Patch(facecolor="#bbbbbb", edgecolor="black", label="observed staleness (bar per iteration)")]
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False, bbox_to_anchor=(0.5, 0.0))
    first = next(iter(picks.values()))
    fig.suptitle(f"Staleness per iteration, {_group_title(first['config.model'], first['dataset_label'])}: "
                 "observed = number of earlier memory updates M(i) did not see (always <= k(i) - 1)")
    height = 2.5 * n + 0.9
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1 - 0.25 / height))
    return fig


# ------------------------------------------------------------------------------ measured vs simulated
def plot_measured_vs_simulated(plt, data: PlotData) -> Any:
    df = data.df
    table = measured_vs_simulated_table(df, data.results)
    if table.empty:
        raise Skip("no sequential run to take stage times from")
    present = set(zip(table["model"], table["dataset"]))
    groups = [g for g in model_dataset_groups(df) if g in present]
    ncols = min(2, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    nvar = table.groupby(["model", "dataset"])["variant"].nunique().max()
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(6.5, 1.3 * nvar + 1.5) * ncols, 4.2 * nrows + 0.9),
                             squeeze=False)
    for ax, g in zip(axes.flat, groups):
        sub = table[(table["model"] == g[0]) & (table["dataset"] == g[1])]
        variants = order_variants(sub["variant"])
        for xi, v in enumerate(variants):
            s = sub[sub["variant"] == v]
            for off, col, hatch, alpha in ((-0.2, "measured", None, 1.0), (0.2, "simulated", "///", 0.45)):
                vals = s[col].to_numpy(dtype=float)
                mean = float(np.mean(vals))
                ax.bar(xi + off, mean, width=0.38, color=variant_color(v), alpha=alpha, hatch=hatch,
                       edgecolor="black", linewidth=0.5)
                if len(vals) > 1:
                    ax.errorbar(xi + off, mean, yerr=[[mean - vals.min()], [vals.max() - mean]], color="black",
                                capsize=2, linewidth=0.8)
            top = max(s["measured"].max(), s["simulated"].max())
            ax.annotate(f"eff. {s['efficiency'].mean():.0%}", (xi, top), xytext=(0, 3),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8)
        ticks = [x for xi in range(len(variants)) for x in (xi - 0.2, xi + 0.2)]
        ax.set_xticks(ticks)
        ax.set_xticklabels(["meas.", "sim."] * len(variants), fontsize=7.5)
        for xi, v in enumerate(variants):
            ax.annotate(_short(v), (xi, 0), xycoords=("data", "axes fraction"), xytext=(0, -20),
                        textcoords="offset points", ha="center", va="top", fontsize=8.5, fontweight="bold")
        ax.grid(axis="x", visible=False)
        ax.set_ylabel("training events/s")
        ax.margins(y=0.22)
        ax.set_title(_group_title(*g))
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    from matplotlib.patches import Patch

    handles = [Patch(facecolor="#bbbbbb", edgecolor="black", label="measured (this machine)"),
               Patch(facecolor="#bbbbbb", alpha=0.45, hatch="///", edgecolor="black",
                     label="simulated from the same-seed sequential run's stage times")]
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False, bbox_to_anchor=(0.5, -0.01))
    fig.suptitle("Measured vs simulated training throughput per trainer (mean over seeds)\n"
                 "pipeline efficiency (eff.) = measured / simulated")
    height = 4.2 * nrows + 0.9
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1 - 0.45 / height))
    return fig





# ------------------------------------------------------------------------------------------- registry
def _gantt_runs(data: PlotData) -> dict[str, pd.Series]:
    """One run per pipelined variant, mspipe first."""
    pipelined = [v for v in order_variants(data.df["variant"]) if not v.startswith("sequential")]
    return pick_runs(data.df, [v for v in pipelined if v.startswith("mspipe")]
                     + [v for v in pipelined if not v.startswith("mspipe")])


# ------------------------------------------------------------------------------------------- scaling
def plot_scaling(plt, data: PlotData) -> Any:
    """Data-parallel scaling (docs/design.md §7): per model x dataset, events/s and scaling efficiency
    (events/s at W over W x events/s of the same trainer and threads at W=1) against the number of ranks W;
    a configuration measured at one W only (e.g. one process with two intra-op threads) is a dashed level."""
    df = data.df
    if df.empty or "config.world_size" not in df or df["config.world_size"].nunique() < 2:
        raise Skip("no runs with different numbers of ranks (run --nprocs W)")
    df = df.assign(**{"config.world_size": df["config.world_size"].fillna(1).astype(int)})
    groups = list(df.groupby(["config.model", "dataset_label"]).groups)
    fig, axes = plt.subplots(len(groups), 2, figsize=(11.0, 3.4 * len(groups) + 0.6), squeeze=False)
    styles = ["-", "--", ":", "-."]
    for row, (model, ds) in enumerate(groups):
        sub = df[(df["config.model"] == model) & (df["dataset_label"] == ds)]
        ws = sorted(sub["config.world_size"].unique())
        for trainer in order_variants(sub["config.trainer"].unique()):
            for n, threads in enumerate(sorted(sub["config.torch_threads"].unique())):
                sel = sub[(sub["config.trainer"] == trainer) & (sub["config.torch_threads"] == threads)]
                t = sel.groupby("config.world_size")["metrics.train_events_per_s"].median()
                if t.empty:
                    continue
                label = f"{trainer}, {threads} thread{'s' if threads != 1 else ''}/rank"
                color = variant_color(trainer)
                if len(t) == 1 and t.index[0] == 1:  # a single-process reference level
                    axes[row, 0].axhline(t.iloc[0], color=color, linestyle=styles[n % 4], linewidth=1,
                                         label=f"{label} (W=1)")
                    continue
                axes[row, 0].plot(t.index, t.values, marker="o", color=color, linestyle=styles[n % 4], label=label)
                if 1 in t.index:
                    eff = t / (t.index.to_numpy() * t.loc[1])
                    axes[row, 1].plot(eff.index, eff.values * 100, marker="o", color=color,
                                      linestyle=styles[n % 4], label=label)
        axes[row, 0].set_ylabel("training events/s (median)")
        axes[row, 1].set_ylabel("scaling efficiency (%)")
        axes[row, 1].axhline(100, color="black", linestyle="--", linewidth=0.8)
        for ax in axes[row]:
            ax.set_xlabel("data-parallel ranks W")
            ax.set_xticks(ws)
            ax.set_title(f"{model} / {ds}", loc="left")
        axes[row, 0].legend(fontsize=7.5)
    fig.suptitle("Data-parallel scaling: events/s, and efficiency = events/s(W) / (W x events/s(1)) per trainer")
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class FigureKind:
    name: str
    description: str  # what it shows (the plot command's help)
    draw: Callable[..., Any]  # draw(plt, data) -> figure; with parts: draw(plt, data, part)
    parts: Callable[[PlotData], dict[str, Any]] | None = None  # one figure per part, named <name>_<part>
    no_parts: str = ""  # why the figure is skipped when there is no part


# every figure kind, in drawing order
FIGURES: dict[str, FigureKind] = {f.name: f for f in (
    FigureKind("throughput", "training events/s and speedup over sequential (same seed, same directory) by "
               "trainer, grouped by model x dataset; bars = mean over seeds, whiskers = min..max, dots = seeds",
               plot_throughput),
    FigureKind("accuracy", "test AP by trainer, same grouping and seed spread", plot_accuracy),
    FigureKind("staleness_sweep", "test AP and throughput versus the fixed-staleness bound K, mspipe marked at "
               "its mean k(i)", plot_staleness_sweep),
    FigureKind("convergence", "validation AP versus epoch and versus wall-clock time", plot_convergence),
    FigureKind("stage_breakdown", "S/F/M/T/U share of the iteration time and mean time per stage (sequential "
               "runs)", plot_stage_breakdown),
    FigureKind("gantt", "gantt_<trainer>: the first iterations of a pipelined run, measured timeline beside the "
               "simulated one (the schedule simulator replaying the run's per-iteration stage times)", plot_gantt,
               parts=_gantt_runs, no_parts="no pipelined (presample / fixed-staleness / mspipe) runs"),
    FigureKind("staleness", "k(i) and observed staleness per iteration and the observed-staleness histogram "
               "(mspipe and fixed-staleness runs)", plot_staleness),
    FigureKind("measured_vs_simulated", "per trainer, measured events/s next to the events/s simulated from the "
               "same-seed sequential run's stage times; pipeline efficiency = measured / simulated",
               plot_measured_vs_simulated),
    FigureKind("scaling", "data-parallel runs (--nprocs W): events/s and scaling efficiency against W per trainer",
               plot_scaling),
)}


# ------------------------------------------------------------------------------------------- driver
def _safe_name(v: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", v)


def make_plots(source: Any, out_dir: str | Path, formats: Iterable[str] = ("png", "pdf"),
               only: Iterable[str] | None = None, log: Callable[[str], None] | None = None) -> PlotReport:
    """Draw every figure kind in ``only`` (default: all of :data:`FIGURES`) whose data exists, from result
    files (paths / directories) or a DataFrame from :func:`~mspipe_bench.harness.results.load_results`."""
    import pandas as pd

    from mspipe_bench.harness.results import load_results, speedups

    only = set(only) if only else set(FIGURES)
    unknown = only - set(FIGURES)
    if unknown:
        raise UserError(f"unknown figure(s) {', '.join(sorted(unknown))} (figures: {', '.join(FIGURES)})")
    from matplotlib.backend_bases import FigureCanvasBase

    formats = tuple(formats)
    supported = FigureCanvasBase.get_supported_filetypes()
    bad = [f for f in formats if f.lower() not in supported]
    if bad or not formats:
        raise UserError(f"formats {','.join(formats)!r}: {', '.join(bad) or 'none given'} not supported "
                        f"(supported: {', '.join(sorted(supported))})")
    from mspipe_bench.harness.run import check_output_dir

    out_dir = check_output_dir(out_dir, "figure directory")  # before any result is read or figure drawn
    plt = _setup()
    on_skip = (lambda msg: log(f"warning: {msg}")) if log else None
    df = source if isinstance(source, pd.DataFrame) else load_results(source, on_skip=on_skip)
    report = PlotReport(out_dir)
    if df.empty:
        for name in FIGURES:
            if name in only:
                report.skipped[name] = "no result files"
        return report
    if "speedup_vs_sequential" not in df.columns:
        df = speedups(df)
    n_all = len(df)
    df = df[df["status"] == "complete"].copy()
    if len(df) < n_all and log:
        log(f"ignoring {n_all - len(df)} incomplete (interrupted) run(s)")
    data = PlotData(df, ResultCache())

    def draw(name: str, fn: Callable[[], Any]) -> None:
        try:
            fig = fn()
        except Skip as why:
            report.skipped[name] = str(why)
            return
        report.written[name] = _save(plt, fig, out_dir, name, formats)

    for kind in FIGURES.values():
        if kind.name not in only:
            continue
        if kind.parts is None:
            draw(kind.name, lambda: kind.draw(plt, data))
            continue
        parts = kind.parts(data)
        if not parts:
            report.skipped[kind.name] = kind.no_parts
        for part, arg in parts.items():
            draw(f"{kind.name}_{_safe_name(part)}", lambda: kind.draw(plt, data, arg))
    _write_index(report, df)
    return report


def _write_index(report: PlotReport, df: pd.DataFrame) -> None:
    lines = ["# Figures", "", f"Drawn by `mspipe-bench plot` from {len(df)} complete result file(s) in "
             + ", ".join(sorted(set(df["dir"]))) + ".", ""]
    for name, files in report.written.items():
        lines.append(f"- `{name}`: " + ", ".join(f"[{f.suffix[1:]}]({f.name})" for f in files))
    for name, why in report.skipped.items():
        lines.append(f"- `{name}`: skipped -- {why}")
    report.out_dir.mkdir(parents=True, exist_ok=True)
    (report.out_dir / "index.md").write_text("\n".join(lines) + "\n")
