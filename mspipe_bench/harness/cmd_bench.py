"""``mspipe-bench bench``: the main job -- all four trainers on one model and dataset, interleaved, then a
summary table and the figures.

Trainers: ``sequential``, ``presample``, ``fixed-staleness`` (K=2) and ``mspipe`` (mitigation on), each run
for every seed, interleaved (for each seed, the four trainers in turn). It is a sweep
(:mod:`mspipe_bench.harness.sweep`): result files go to ``--results-dir`` (one per run, written when the run
finishes) and a rerun skips the complete ones (``--fresh`` reruns everything). Figures go to ``--plots-dir``.

Defaults (TGN, the embedded synthetic dataset, 5 epochs, seed 0): about 3-4 minutes on an idle 2-core CPU
(42k training events per epoch at ~5k events/s with one thread, plus ~1 s of evaluation per epoch).

``--threads 1`` (default): one torch intra-op thread per run. On a shared 2-core machine, two OpenMP threads
per run make the measured T stage of ``sequential`` many times slower whenever another process holds a core,
while the pipelined trainers are hit far less, which inflates their measured speedups; with one thread all
trainers compute T the same way and the pipelined trainers can overlap S/F/M/U with it on the second core.
"""

from __future__ import annotations

BENCH_TRAINERS = ("sequential", "presample", "fixed-staleness", "mspipe")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise ValueError(f"--seeds: expected comma-separated integers, got {text!r}") from None
    if not seeds:
        raise ValueError("--seeds: give at least one seed")
    return list(dict.fromkeys(seeds))


def bench_spec(args) -> dict:
    spec = {
        "models": [args.model],
        "datasets": [args.dataset],
        "trainers": list(BENCH_TRAINERS),
        "staleness": args.staleness,
        "seeds": _seeds(args.seeds),
        "epochs": args.epochs,
    }
    if args.max_iterations is not None:
        spec["max_iterations"] = args.max_iterations
    if args.batch_size is not None:
        spec["batch_size"] = args.batch_size
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    spec["torch_threads"] = args.threads
    return spec


def run_and_report(runs, args, title: str) -> int:
    """Run (resumably, with progress bars), print the trainer table, draw the figures."""
    from pathlib import Path

    from tqdm import tqdm

    from mspipe_bench.harness import sweep
    from mspipe_bench.harness.plots import make_plots
    from mspipe_bench.harness.results import load_results, speedups, trainer_table

    results_dir = Path(args.results_dir)
    print(f"{title}: {sweep.describe_plan(runs)}", flush=True)
    print(f"results -> {results_dir}/   figures -> {args.plots_dir}/", flush=True)
    if getattr(args, "dry_run", False):
        sweep.run_sweep(runs, results_dir, dry_run=True, fresh=args.fresh, log=print)
        return 0
    bar = tqdm(total=len(runs), desc="runs", unit="run", position=0, dynamic_ncols=True)
    try:
        report = sweep.run_sweep(
            runs, results_dir, jobs=getattr(args, "jobs", 1), fresh=args.fresh, warmup=not args.no_warmup,
            log=lambda line: tqdm.write(line), run_progress=True,
            on_run_done=lambda: bar.update(1),
        )
    finally:
        bar.close()
    paths = report.paths()
    if report.failed:
        for spec, err in report.failed:
            print(f"FAILED {spec.label()} ({spec.key()}): {err}")
    if not paths:
        print("no complete results to summarize")
        return report.exit_code or 1
    df = speedups(load_results(paths))
    table = trainer_table(df)
    print()
    print("Summary (mean over seeds ± std; speedup = events/s over the same-seed sequential run of this directory;"
          " obs. stal. = observed staleness; bubble = share of training time T waited)")
    print(table)
    plots_dir = Path(args.plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    (plots_dir / "summary.txt").write_text(table + "\n")
    if not args.no_plots:
        print(f"\ndrawing figures to {plots_dir}/ ...", flush=True)
        rep = make_plots(df, plots_dir, log=print)
        for line in rep.lines():
            print(line)
    if report.interrupted:
        print("interrupted: rerun the same command to resume")
    return report.exit_code


def _cmd(args) -> int:
    from mspipe_bench.harness import sweep

    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    runs = sweep.expand(bench_spec(args), "bench")
    return run_and_report(runs, args, "bench")


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="main job: the four trainers on TGN / synthetic, interleaved; summary table and figures",
        description="Run sequential, presample, fixed-staleness (K=2) and mspipe on one model and dataset "
        "(default TGN on the embedded synthetic dataset, 5 epochs: about 3-4 minutes on 2 idle CPU cores), "
        "interleaved per seed, with progress bars; then print a summary table (events/s, speedup over "
        "sequential, test AP, observed staleness, bubble share) and draw the figures. Resumable: complete "
        "runs in --results-dir are skipped (--fresh reruns them).",
    )
    p.add_argument("--model", default="tgn", help="model preset or YAML (default: tgn)")
    p.add_argument("--dataset", default="synthetic", help="dataset (default: the embedded synthetic one)")
    p.add_argument("--epochs", type=int, default=5, help="epochs per run (default: 5)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2 for a spread (default: 0)")
    p.add_argument("--staleness", type=int, default=2, metavar="K", help="fixed-staleness bound (default: 2)")
    p.add_argument("--max-iterations", type=int, default=None, help="cap iterations per epoch (quick checks)")
    p.add_argument("--batch-size", type=int, default=None, help="events per batch (default: the model config's)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads per run, the same for every trainer (default: 1: with two "
                   "OpenMP threads per run, a shared 2-core machine slows sequential's T stage far more than the "
                   "pipelined trainers')")
    p.add_argument("--results-dir", default="results/bench", help="result files (default: results/bench)")
    p.add_argument("--plots-dir", default="plots/bench", help="figures (default: plots/bench)")
    p.add_argument("--fresh", action="store_true", help="rerun runs that already have a complete result")
    p.add_argument("--no-warmup", action="store_true", help="skip the throwaway warm-up run")
    p.add_argument("--no-plots", action="store_true", help="do not draw figures")
    p.add_argument("--dry-run", action="store_true", help="list the runs, run nothing")
    p.set_defaults(func=_cmd)
