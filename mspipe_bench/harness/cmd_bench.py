"""``mspipe-bench bench``: the main job -- every trainer on one model and dataset, interleaved, measured now,
then a summary table and the figures.

Trainers: all of :data:`mspipe_bench.trainers.rules.TRAINERS` -- ``sequential``, ``presample``,
``fixed-staleness`` (K = ``--staleness``, 2) and ``mspipe`` (mitigation on) -- each run for every seed,
interleaved (for each seed, the trainers in turn). It is a sweep (:mod:`mspipe_bench.harness.sweep`) into a
run directory of its own: a new ``runs/bench-<YYYYmmdd-HHMMSS>/`` (or ``--results-dir``, which must be new or
empty), one result file per run written when the run finishes, so every number printed was measured by this
invocation; ``--resume DIR`` continues an interrupted invocation in DIR, skipping only the runs it completed
there. Figures go to ``DIR/figures/`` (or ``--plots-dir``), the table also to ``DIR/summary.txt``.

Defaults: TGN, the embedded synthetic dataset (42k training events per epoch), 5 epochs, seed 0; a few
minutes on a 2-core CPU (docs/results.md has measured times).

``--threads 1`` (default): one torch intra-op thread per run. On a shared 2-core machine, two OpenMP threads
per run make the measured T stage of ``sequential`` many times slower whenever another process holds a core,
while the pipelined trainers are hit far less, which inflates their measured speedups; with one thread all
trainers compute T the same way and the pipelined trainers can overlap S/F/M/U with it on the second core.
"""

from __future__ import annotations

import argparse

from mspipe_bench.errors import UserError

# the RunSpec fields bench takes as options (one value each; the trainers and seeds are its grid)
BENCH_FIELDS = ("model", "dataset", "epochs", "staleness", "max_iterations", "batch_size", "torch_threads")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise UserError(f"--seeds: expected comma-separated integers, got {text!r}") from None
    if not seeds:
        raise UserError("--seeds: give at least one seed")
    return list(dict.fromkeys(seeds))


def bench_spec(args) -> dict:
    """The sweep spec of the options (each checked by RunSpec, errors naming the option)."""
    from mspipe_bench.harness.cmd_run import spec_from_args
    from mspipe_bench.trainers.rules import TRAINERS

    base = spec_from_args(args)
    spec = {name: getattr(base, name) for name in BENCH_FIELDS if name not in ("model", "dataset")}
    spec.update(models=[base.model], datasets=[base.dataset], trainers=list(TRAINERS), seeds=_seeds(args.seeds))
    return spec


def add_run_dir_arguments(p: argparse.ArgumentParser, command: str) -> None:
    """Where an invocation of bench / sweep / paper writes (shared by the three commands)."""
    where = p.add_mutually_exclusive_group()
    where.add_argument("--results-dir", default=None, metavar="DIR",
                       help=f"this invocation's run directory, which must be new or empty (default: a new "
                       f"runs/{command}-<YYYYmmdd-HHMMSS>/; runs/ is git-ignored)")
    where.add_argument("--resume", default=None, metavar="DIR",
                       help="continue an interrupted invocation in its run directory DIR (same options): the runs "
                       "it completed there are skipped, the others run")
    p.add_argument("--no-warmup", action="store_true", help="skip the throwaway tiny warm-up run")
    p.add_argument("--dry-run", action="store_true", help="list the runs (and, with --resume, which are complete), "
                   "run nothing, create nothing")


def command_line(args) -> str:
    import shlex

    return "mspipe-bench " + shlex.join(getattr(args, "argv", None) or [args.command])


def open_run_dir(runs, args, command: str):
    """The invocation's :class:`~mspipe_bench.harness.sweep.RunDir`: resumed (``--resume``) or new."""
    from mspipe_bench.harness import sweep

    if args.resume:
        return sweep.RunDir.resume(args.resume, runs)
    return sweep.RunDir.create(runs, command, args.results_dir, command_line=command_line(args))


def check_plan(runs, args, title: str, command: str) -> bool:
    """Before anything runs: the options that are not run fields, every model config and dataset path;
    print the plan, and with ``--dry-run`` its table (and, resuming, what is complete). True on a dry run."""
    from mspipe_bench.harness import sweep
    from mspipe_bench.harness.run import check_inputs

    if getattr(args, "jobs", 1) < 1:
        raise UserError(f"--jobs: must be >= 1, got {args.jobs}")
    check_inputs(runs)
    print(f"{title}: {sweep.describe_plan(runs)}", flush=True)
    if args.dry_run:
        rd = sweep.RunDir.resume(args.resume, runs) if args.resume else None
        print(sweep.plan_table(runs, rd))
        where = args.resume or args.results_dir or f"a new runs/{command}-<YYYYmmdd-HHMMSS>/"
        print(f"dry run: nothing run; results would go to {where}")
    return args.dry_run


def run_and_report(runs, args, title: str) -> int:
    """Run into the invocation's run directory (with progress bars), print the trainer table, draw the
    figures."""
    from pathlib import Path

    from tqdm import tqdm

    from mspipe_bench.harness import sweep
    from mspipe_bench.harness.run import check_output_dir

    if check_plan(runs, args, title, title):
        return 0
    if args.plots_dir and not args.no_plots:
        check_output_dir(args.plots_dir, "--plots-dir")  # before any run: a bad path must not cost the runs
    rd = open_run_dir(runs, args, title)
    plots_dir = Path(args.plots_dir) if args.plots_dir else rd.path / "figures"
    print(f"run directory: {rd.path}/" + ("" if args.no_plots else f"   figures -> {plots_dir}/"), flush=True)
    bar = tqdm(total=len(runs), desc="runs", unit="run", position=0, dynamic_ncols=True)
    try:
        report = sweep.run_sweep(
            runs, rd, jobs=getattr(args, "jobs", 1), warmup=not args.no_warmup,
            log=lambda line: tqdm.write(line), run_progress=True,
            on_run_done=lambda: bar.update(1),
        )
    finally:
        bar.close()
    for spec, err in report.failed:
        print(f"FAILED {spec.label()} ({spec.key()}): {err}")
    paths = report.paths()
    if paths:
        _summarize(paths, rd.path, None if args.no_plots else plots_dir)
    else:
        print("no complete results to summarize")
    print(f"\nrun directory: {rd.path}/ ({len(report.ran)} runs measured now, {len(report.skipped)} completed "
          "there earlier)")
    if report.interrupted:
        print(f"interrupted: continue with the same options and --resume {rd.path}")
    return report.exit_code or (0 if paths else 1)


def _summarize(paths, run_dir, plots_dir) -> None:
    from mspipe_bench.harness.plots import make_plots
    from mspipe_bench.harness.results import load_results, speedups, trainer_table

    df = speedups(load_results(paths))
    table = trainer_table(df)
    machines = ", ".join(sorted(df["env.machine"].dropna().unique()))
    print(f"\nSummary, measured on {machines} (mean over seeds ± std; speedup = events/s over the same-seed "
          "sequential run of this directory; obs. stal. = observed staleness; bubble = share of training time T "
          "waited)")
    print(table)
    (run_dir / "summary.txt").write_text(table + "\n")
    if plots_dir is not None:
        print(f"\ndrawing figures to {plots_dir}/ ...", flush=True)
        rep = make_plots(df, plots_dir, log=print)
        for line in rep.lines():
            print(line)


def _cmd(args) -> int:
    from mspipe_bench.harness import sweep

    runs = sweep.expand(bench_spec(args), "bench", options={"seeds": "--seeds"})
    return run_and_report(runs, args, "bench")


def register(sub) -> None:
    from mspipe_bench.harness.cmd_run import add_run_arguments

    p = sub.add_parser(
        "bench",
        help="main job: every trainer on TGN / synthetic, interleaved, measured now; summary table and figures",
        description="Run sequential, presample, fixed-staleness (K = --staleness, default 2) and mspipe on one model and dataset "
        "(default TGN on the embedded synthetic dataset, 5 epochs: a few minutes on 2 CPU cores), "
        "interleaved per seed, with progress bars; then print a summary table (events/s, speedup over "
        "sequential, test AP, observed staleness, bubble share) and draw the figures. Every invocation measures: "
        "it writes into a new run directory (runs/bench-<YYYYmmdd-HHMMSS>/ by default) and never reuses result "
        "files it did not write; --resume DIR continues an interrupted one. Option values are checked before "
        "anything runs.",
    )
    add_run_arguments(p, BENCH_FIELDS, defaults={"epochs": 5})
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2 for a spread (default: 0)")
    add_run_dir_arguments(p, "bench")
    p.add_argument("--plots-dir", default=None, metavar="DIR", help="figures (default: RUN_DIR/figures)")
    p.add_argument("--no-plots", action="store_true", help="do not draw figures")
    p.set_defaults(func=_cmd)
