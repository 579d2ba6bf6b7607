"""``mspipe-bench run``: one training run, one JSON result file."""

from __future__ import annotations

import argparse

TRAINER_CHOICES = ("sequential", "presample", "fixed-staleness", "mspipe")


def add_run_arguments(p: argparse.ArgumentParser, single: bool = True) -> None:
    """Arguments shared by ``run`` and the commands that launch runs."""
    if single:
        p.add_argument("--model", default="tgn", help="preset (tgn, jodie, apan) or a model YAML file (default: tgn)")
        p.add_argument("--dataset", default="synthetic",
                       help="dataset path (TGL folder, JODIE/DyGLib CSV, SNAP text, .npz) or 'synthetic[:opts]' "
                            "(default: synthetic)")
        p.add_argument("--trainer", default="sequential", choices=TRAINER_CHOICES, help="schedule (default: sequential)")
        p.add_argument("--seed", type=int, default=0, help="seed for parameters, sampling, negatives, dropout (default: 0)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: the model config's train.epochs)")
    p.add_argument("--batch-size", type=int, default=None, help="events per batch (default: the config's, 600)")
    p.add_argument("--staleness", type=int, default=2, metavar="K", help="fixed-staleness bound K (default: 2)")
    p.add_argument("--max-staleness", type=int, default=4, metavar="K", help="mspipe's cap on k(i) (default: 4)")
    p.add_argument("--prefetch", type=int, default=2, metavar="D", help="run-ahead depth of S/F (default: 2)")
    mit = p.add_mutually_exclusive_group()
    mit.add_argument("--no-mitigation", dest="mitigation", action="store_false", default=None,
                     help="turn staleness mitigation off (ablation; default: on for mspipe only)")
    mit.add_argument("--mitigation", dest="mitigation", action="store_true", help="turn staleness mitigation on")
    p.add_argument("--mitigation-lambda", type=float, default=0.1, help="mitigation λ (default: 0.1)")
    p.add_argument("--mitigation-quantile", type=float, default=0.01,
                   help="fraction of fetched nodes treated as stalest (default: 0.01)")
    p.add_argument("--mitigation-neighbors", type=int, default=10, help="similar nodes averaged, n (default: 10)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a model-config field, e.g. --set gnn.heads=4 (repeatable)")
    p.add_argument("--negatives", choices=("all", "dst"), default="all",
                   help="negative destinations: all = every node (TGL's convention, default); dst = the "
                        "destination side of a bipartite graph (DyGLib / TGN paper; harder)")
    p.add_argument("--max-iterations", type=int, default=None,
                   help="train only the first N iterations of each epoch (quick comparisons)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads, the same for every trainer (default: 1; see README)")


def spec_from_args(args, **fixed):
    from mspipe_bench.harness.run import RunSpec

    fields = dict(
        epochs=args.epochs,
        batch_size=args.batch_size,
        staleness=args.staleness,
        max_staleness=args.max_staleness,
        prefetch=args.prefetch,
        mitigation=args.mitigation,
        mitigation_lambda=args.mitigation_lambda,
        mitigation_quantile=args.mitigation_quantile,
        mitigation_neighbors=args.mitigation_neighbors,
        overrides=list(args.overrides),
        max_iterations=args.max_iterations,
        negatives=args.negatives,
        torch_threads=args.threads,
    )
    for name in ("model", "dataset", "trainer", "seed"):
        if hasattr(args, name):
            fields[name] = getattr(args, name)
    fields.update(fixed)
    return RunSpec(**fields)


def format_summary(result: dict) -> str:
    m = result["metrics"]
    c = result["config"]
    lines = [
        f"{c['label']}  [{result['status']}]",
        f"  train events/s     {m.get('train_events_per_s', 0):,.0f}",
        f"  test AP / AUC      {m.get('test_ap', float('nan')):.4f} / {m.get('test_auc', float('nan')):.4f}"
        f"  (global {m.get('test_ap_global', float('nan')):.4f} / {m.get('test_auc_global', float('nan')):.4f})",
        f"  val AP (best ep.)  {m.get('val_ap', float('nan')):.4f}  (epoch {m.get('best_epoch', '-')})",
        f"  staleness          mean {m['mean_observed_staleness']:.2f}, max {m['max_observed_staleness']}, "
        f"k mean {m['mean_k']:.2f}, max {m['max_k']}",
        f"  bubble share       {m['bubble_share']:.1%}",
    ]
    lines.append(f"  work / iteration   {m['mean_roots']:,.0f} roots, {m['mean_sampled_edges']:,.0f} sampled edges, "
                 f"{m['mean_unique_nodes']:,.0f} unique nodes")
    total = sum(result["stages"].values()) or 1.0
    lines.append("  stage share        " + "  ".join(f"{s} {v / total:.1%}" for s, v in result["stages"].items()))
    return "\n".join(lines)


def _cmd(args) -> int:
    from mspipe_bench.harness.run import default_result_path, run, write_json_atomic

    spec = spec_from_args(args)
    result = run(spec, progress=not args.quiet)
    out = args.out or default_result_path(spec, args.results_dir)
    write_json_atomic(out, result)
    print(format_summary(result))
    print(f"result written to {out}")
    return 130 if result["status"] == "interrupted" else 0


def register(sub) -> None:
    p = sub.add_parser(
        "run",
        help="train one model under one trainer and write a JSON result",
        description="Train a memory-based TGNN under one trainer (schedule) and write one JSON result file "
        "with config, environment, metrics (throughput, AP/AUC, staleness, bubbles), per-epoch and "
        "per-iteration records and the stage timeline. Ctrl-C stops cleanly and keeps the partial result "
        "(status 'interrupted'). glibc malloc is tuned to keep freed memory (env.allocator in the result; "
        "MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ in the environment take precedence).",
    )
    add_run_arguments(p)
    p.add_argument("--out", default=None, help="result file (default: RESULTS_DIR/<label>_<key>.json)")
    p.add_argument("--results-dir", default="results", help="directory for the default result path (default: results)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd)
