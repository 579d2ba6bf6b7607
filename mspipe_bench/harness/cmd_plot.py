"""``mspipe-bench plot``: draw the figure set from result files."""

from __future__ import annotations


def _cmd(args) -> int:
    from mspipe_bench.harness.plots import make_plots

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    only = [f.strip() for f in args.only.split(",")] if args.only else None
    report = make_plots(args.results, args.out, formats=formats, only=only, log=print)
    print(f"figures in {report.out_dir} ({len(report.written)} written, {len(report.skipped)} skipped):")
    for line in report.lines():
        print(line)
    if report.written:
        from pathlib import Path

        from mspipe_bench.harness.plots import summary_text

        text = summary_text(args.results)
        (Path(report.out_dir) / "summary.txt").write_text(text + "\n")
        print(text)
    return 0 if report.written else 1


# the figure names of mspipe_bench.harness.plots.FIGURES (not imported here: it pulls in pandas/matplotlib)
FIGURES = ("throughput", "accuracy", "staleness_sweep", "convergence", "stage_breakdown", "gantt", "staleness",
           "measured_vs_simulated")


def register(sub) -> None:
    p = sub.add_parser(
        "plot",
        help="draw the figures (throughput, accuracy, staleness, Gantt, ...) from result files",
        description="Draw figures from result files only (PNG and PDF each): " + ", ".join(FIGURES)
        + ". A figure whose data is absent is skipped with the reason. Only complete runs are used; speedups "
        "are ratios to the sequential run of the same seed in the same directory. Also prints (and writes to "
        "OUT/summary.txt) the trainer table and the measured-versus-simulated throughput per trainer.",
    )
    p.add_argument("results", nargs="+", metavar="RESULTS", help="result directories or files")
    p.add_argument("-o", "--out", default="plots", help="output directory (default: plots)")
    p.add_argument("--formats", default="png,pdf", help="comma-separated formats (default: png,pdf)")
    p.add_argument("--only", default=None, help="comma-separated subset of the figures")
    p.set_defaults(func=_cmd)
