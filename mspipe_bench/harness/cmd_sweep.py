"""``mspipe-bench sweep``: run a grid of runs from a YAML spec (resumable, interleaved across trainers)."""

from __future__ import annotations


def _cmd(args) -> int:
    from mspipe_bench.harness import sweep

    runs, opts = sweep.load_runs(args.spec)
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    print(f"sweep {args.spec}: {sweep.describe_plan(runs)}; results in {args.results_dir}", flush=True)
    report = sweep.run_sweep(
        runs,
        args.results_dir,
        jobs=args.jobs,
        dry_run=args.dry_run,
        fresh=args.fresh,
        warmup=opts["warmup"] and not args.no_warmup,
        log=lambda line: print(line, flush=True),
        run_progress=args.progress,
    )
    if not args.dry_run:
        print(f"sweep finished: {len(report.ran)} ran, {len(report.skipped)} skipped (complete), "
              f"{len(report.failed)} failed" + (", interrupted" if report.interrupted else ""))
        for spec, err in report.failed:
            print(f"  FAILED {spec.label()} ({spec.key()}): {err}")
    return report.exit_code


def register(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid of runs from a YAML spec (resumable, interleaved)",
        description="Run every combination of a sweep spec (models, datasets, trainers (fixed-staleness "
        "expanded over `staleness`, mspipe over a `mitigation` list), seeds, epochs, batch_size, "
        "max_iterations and any other `run` option), one result file per run at "
        "RESULTS_DIR/<label>_<key>.json. Runs are interleaved (for each seed and model x dataset, every "
        "trainer in turn) so trainers are compared under the same machine conditions. Resumable: runs whose "
        "result file exists with status complete are skipped; each result is written atomically when its "
        "run finishes. Examples: mspipe_bench/harness/specs/*.yaml.",
    )
    p.add_argument("spec", metavar="SPEC.yaml", help="sweep spec (see mspipe_bench/harness/specs/)")
    p.add_argument("--results-dir", default="results", help="directory for result files (default: results)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs executed concurrently (default 1; more makes their timings compete for the CPU)")
    p.add_argument("--dry-run", action="store_true", help="list the runs that would run / be skipped, run nothing")
    p.add_argument("--fresh", action="store_true", help="rerun every run, even those with a complete result")
    p.add_argument("--no-warmup", action="store_true",
                   help="skip the throwaway tiny warm-up run before the first measured run")
    p.add_argument("--progress", action="store_true", help="per-epoch progress bars inside each run")
    p.set_defaults(func=_cmd)
