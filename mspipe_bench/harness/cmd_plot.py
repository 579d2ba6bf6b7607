"""``mspipe-bench plot``: draw the figure set from result files."""

from __future__ import annotations

import argparse
import textwrap


def _cmd(args) -> int:
    import datetime as _dt
    from pathlib import Path

    from mspipe_bench.harness.analysis import summary_text
    from mspipe_bench.harness.plots import make_plots
    out = args.out or f"runs/plots-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    only = [f.strip() for f in args.only.split(",")] if args.only else None
    report = make_plots(args.results, out, formats=formats, only=only, log=print)
    print(f"figures in {report.out_dir} ({len(report.written)} written, {len(report.skipped)} skipped):")
    for line in report.lines():
        print(line)
    if report.written:
        text = summary_text(args.results)
        (Path(report.out_dir) / "summary.txt").write_text(text + "\n")
        print(text)
    return 0 if report.written else 1


def register(sub) -> None:
    from mspipe_bench.harness.plots import FIGURES

    width = 100
    description = textwrap.fill(
        "Draw figures from result files only (one file per format each). A figure whose data is absent is "
        "skipped with the reason. Only complete runs are used; speedups are ratios to the sequential run of the "
        "same seed in the same directory. Also prints (and writes to OUT/summary.txt) the trainer table and the "
        "measured-versus-simulated throughput per trainer.", width)
    name_width = max(len(n) for n in FIGURES) + 2
    figures = "\n".join(textwrap.fill(kind.description, width, initial_indent=f"  {name:<{name_width}}",
                                      subsequent_indent=" " * (name_width + 2), break_on_hyphens=False)
                         for name, kind in FIGURES.items())
    p = sub.add_parser(
        "plot",
        help="draw the figures (throughput, accuracy, staleness, Gantt, ...) from result files",
        description=description,
        epilog="figures:\n" + figures.replace("%", "%%"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("results", nargs="+", metavar="RESULTS", help="result directories or files")
    p.add_argument("-o", "--out", default=None,
                   help="output directory (default: a new runs/plots-<YYYYmmdd-HHMMSS>/; runs/ is git-ignored)")
    p.add_argument("--formats", default="png,pdf", help="comma-separated formats (default: png,pdf)")
    p.add_argument("--only", default=None, metavar="FIGURES",
                   help="comma-separated subset of the figures: " + ", ".join(FIGURES))
    p.set_defaults(func=_cmd)
