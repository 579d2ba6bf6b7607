"""``mspipe-bench sweep``: run a grid of runs from a YAML spec (interleaved across trainers) into a new run
directory; ``--resume DIR`` continues an interrupted invocation."""

from __future__ import annotations

from pathlib import Path


def _cmd(args) -> int:
    from mspipe_bench.harness import sweep
    from mspipe_bench.harness.cmd_bench import check_plan, open_run_dir

    runs, opts = sweep.load_runs(args.spec)
    command = f"sweep-{Path(args.spec).stem}"
    if check_plan(runs, args, f"sweep {args.spec}", command):
        return 0
    rd = open_run_dir(runs, args, command)
    print(f"run directory: {rd.path}/", flush=True)
    report = sweep.run_sweep(
        runs,
        rd,
        jobs=args.jobs,
        warmup=opts["warmup"] and not args.no_warmup,
        log=lambda line: print(line, flush=True),
        run_progress=args.progress,
    )
    print(f"sweep finished: {len(report.ran)} ran, {len(report.skipped)} completed there earlier, "
          f"{len(report.failed)} failed" + (", interrupted" if report.interrupted else ""))
    for spec, err in report.failed:
        print(f"  FAILED {spec.label()} ({spec.key()}): {err}")
    print(f"run directory: {rd.path}/")
    if report.interrupted or report.failed:
        print(f"to continue: mspipe-bench sweep {args.spec} --resume {rd.path}")
    return report.exit_code


def register(sub) -> None:
    from mspipe_bench.harness.cmd_bench import add_run_dir_arguments

    p = sub.add_parser(
        "sweep",
        help="run a grid of runs from a YAML spec (interleaved) into a new run directory",
        description="Run every combination of a sweep spec (models, datasets, trainers (fixed-staleness "
        "expanded over `staleness`, mspipe over a `mitigation` list), seeds, epochs, batch_size, "
        "max_iterations and any other `run` option), one result file per run at RUN_DIR/<label>_<key>.json, "
        "written when the run finishes. Every invocation writes into a new run directory "
        "(runs/sweep-<spec>-<YYYYmmdd-HHMMSS>/ by default, with manifest.yaml) and never reuses result files it "
        "did not write; --resume DIR continues an interrupted invocation, skipping the runs it completed there. "
        "Runs are interleaved (for each seed and model x dataset, every trainer in turn) so trainers are "
        "compared under the same machine conditions. The spec is checked (keys, types, ranges) before anything "
        "runs. Examples: mspipe_bench/harness/specs/*.yaml.",
    )
    p.add_argument("spec", metavar="SPEC.yaml", help="sweep spec (see mspipe_bench/harness/specs/)")
    add_run_dir_arguments(p, "sweep-<spec>")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs executed concurrently (default 1; more makes their timings compete for the CPU)")
    p.add_argument("--progress", action="store_true", help="per-epoch progress bars inside each run")
    p.set_defaults(func=_cmd)
