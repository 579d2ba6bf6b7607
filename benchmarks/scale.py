"""Cost against graph size: synthetic graphs of 150 k, 10 M and 50 M events, one subprocess per size.

Per size (a fresh process, so the peak resident memory is that size's own, from ``getrusage``):

- ``load_s``: generating (or loading) the graph; ``index_s``: building the sampler's index;
  ``peak_rss_index_mb``: the peak resident memory after both (imports included: ``base_rss_mb``);
- ``sampler_ms``: median time of stage S (negatives, two-way temporal sampling, DGL blocks) per batch, over
  ``--batches`` batches spread evenly over the training events (late batches meet full histories);
- ``train_events_per_s``: sequential training over the first ``--iterations`` iterations of the first epoch
  (stages S F M T U; no evaluation), and ``peak_rss_train_mb`` at its end (the model's memory and mailbox of
  every node included).

Writes ``OUT/scale.json`` and ``OUT/scale.png`` (cost against events, log-log; default OUT:
``runs/scale-<time>/``, which git ignores).

    .venv/bin/python benchmarks/scale.py --sizes 150k,10m [--model tgn] [--iterations 30]
    .venv/bin/python benchmarks/scale.py --sizes 50m            # heavy: about 10 GB, minutes
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = {
    "150k": "synthetic:events=150000,nodes=15000",
    "10m": "synthetic:events=10000000,nodes=1000000",
    "50m": "synthetic:events=50000000,nodes=5000000",
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(spec: str, model: str, iterations: int, batches: int, edge_features: str | None) -> dict:
    """One size, in this process."""
    import numpy as np
    import torch

    from mspipe_bench.data import features, load_dataset
    from mspipe_bench.harness.run import tune_allocator
    from mspipe_bench.models.config import load_config
    from mspipe_bench.sampling import TemporalSampler
    from mspipe_bench.stages import make_context
    from mspipe_bench.stages import stages as stages_mod
    from mspipe_bench.trainers.executor import Executor
    from mspipe_bench.trainers.rules import make_schedule

    torch.set_num_threads(1)
    tune_allocator()
    out = {"spec": spec, "model": model, "base_rss_mb": _rss_mb()}
    t0 = time.perf_counter()
    graph = load_dataset(spec)
    features.apply(graph, edge_features, None)
    out["load_s"] = time.perf_counter() - t0
    out.update(events=graph.num_events, nodes=graph.num_nodes, edge_feat_dim=graph.edge_feat_dim)
    t0 = time.perf_counter()
    sampler = TemporalSampler(graph)
    out["index_s"] = time.perf_counter() - t0
    out["peak_rss_index_mb"] = _rss_mb()

    stages_mod.TemporalSampler = lambda g: sampler  # make_context reuses the index timed above
    ctx = make_context(graph, load_config(model), seed=0)
    split = graph.split()
    train = ctx.batches("train", split.train.start, split.train.stop)
    picks = np.unique(np.linspace(0, len(train) - 1, batches).astype(int))
    times = []
    for j in picks:
        b = train[j]
        t0 = time.perf_counter()
        stages_mod.run_stage(ctx, "S", b)
        times.append(time.perf_counter() - t0)
        b.sampled = None
    out["sampler_ms"] = 1000 * float(np.median(times))
    out["sampler_ms_q25_q75"] = [1000 * float(x) for x in np.percentile(times, [25, 75])]

    first = train[:iterations]
    t0 = time.perf_counter()
    Executor(ctx, make_schedule("sequential")).run_epoch(first)
    seconds = time.perf_counter() - t0
    out["train_iterations"] = len(first)
    out["train_events_per_s"] = sum(b.size for b in first) / seconds
    out["peak_rss_train_mb"] = _rss_mb()
    return out


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["events"] for r in rows]
    panels = [
        ("generate + index (s)", [r["load_s"] + r["index_s"] for r in rows]),
        ("peak RSS (GB)", [r["peak_rss_index_mb"] / 1024 for r in rows], [r["peak_rss_train_mb"] / 1024 for r in rows]),
        ("sampler, stage S (ms / batch)", [r["sampler_ms"] for r in rows]),
        ("training (events / s)", [r["train_events_per_s"] for r in rows]),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    for ax, (title, *series) in zip(axes, panels):
        labels = ["generate + index", "training"] if len(series) == 2 else [None]
        for ys, label in zip(series, labels):
            ax.plot(x, ys, "o-", label=label)
        if len(series) == 1 and title.startswith("generate"):
            ax.plot(x, [series[0][0] * e / x[0] for e in x], "--", color="grey", label="linear in events")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("events")
        if any(lbl for lbl in labels) or title.startswith("generate"):
            ax.legend(fontsize=8)
    fig.suptitle(f"cost against graph size ({rows[0]['model']}, synthetic, 10 events per node)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="150k,10m", help=f"comma-separated, of {', '.join(SIZES)} or any dataset "
                   "spec (default: 150k,10m; 50m is heavy)")
    p.add_argument("--model", default="tgn")
    p.add_argument("--iterations", type=int, default=30, help="training iterations measured (default: 30)")
    p.add_argument("--batches", type=int, default=20, help="batches the sampler is timed on (default: 20)")
    p.add_argument("--edge-features", default=None, metavar="SPEC", help="none | random:D (default: none)")
    p.add_argument("--out", default=None, help="output folder (default: runs/scale-<time>)")
    p.add_argument("--merge", nargs="*", default=[], metavar="JSON",
                   help="earlier scale.json files whose sizes join the table and figure (a heavy size run once)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.model, args.iterations, args.batches, args.edge_features)))
        return 0
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or REPO / "runs" / f"scale-{stamp}")
    rows = [r for f in args.merge for r in json.loads(Path(f).read_text())["rows"]]
    for size in args.sizes.split(","):
        spec = SIZES.get(size, size)
        cmd = [sys.executable, __file__, "--child", spec, "--model", args.model, "--iterations",
               str(args.iterations), "--batches", str(args.batches)]
        if args.edge_features:
            cmd += ["--edge-features", args.edge_features]
        print(f"{size}: {spec} ...", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row.update(size=size, wall_s=time.perf_counter() - t0)
        rows = [r for r in rows if r["spec"] != row["spec"]] + [row]
        print(f"  load {row['load_s']:.1f} s, index {row['index_s']:.1f} s, peak RSS {row['peak_rss_index_mb']:,.0f} MB"
              f" (training {row['peak_rss_train_mb']:,.0f} MB), S {row['sampler_ms']:.1f} ms/batch, "
              f"{row['train_events_per_s']:,.0f} events/s", flush=True)
    rows.sort(key=lambda r: r["events"])
    from mspipe_bench.harness.results import text_table

    table = text_table([(f"{r['events']:,}", f"{r['nodes']:,}", f"{r['load_s']:.1f}", f"{r['index_s']:.1f}",
                         f"{r['peak_rss_index_mb']:,.0f}", f"{r['peak_rss_train_mb']:,.0f}", f"{r['sampler_ms']:.1f}",
                         f"{r['train_events_per_s']:,.0f}") for r in rows],
                       ("events", "nodes", "generate s", "index s", "peak RSS MB", "train RSS MB", "S ms/batch",
                        "train events/s"), "rrrrrrrr")
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    figure(rows, out / "scale.png")
    print(f"wrote {out / 'scale.json'} and {out / 'scale.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
