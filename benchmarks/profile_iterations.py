"""Where an iteration's time goes: ``torch.profiler`` over training iterations of all five stages, run in
order on one thread (the sequential trainer's work), on the shared Wikipedia set.

Run from the repository root (needs ``../shared/datasets/wikipedia``):

    .venv/bin/python benchmarks/profile_iterations.py tgn [--threads 1] [--shapes]

Warms up for ``--warmup`` iterations, profiles the next ``--iterations``, then times as many again without the
profiler (the profiler's overhead shows in the difference). Prints the ops by self CPU time (``--shapes``:
grouped by input shapes too).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", default="tgn", help="preset (default: tgn)")
    p.add_argument("--dataset", default=str(REPO.parent / "shared" / "datasets" / "wikipedia"))
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--rows", type=int, default=35, help="ops to list (default: 35)")
    p.add_argument("--shapes", action="store_true", help="group the ops by input shapes as well")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from torch.profiler import ProfilerActivity, profile

    from mspipe_bench.data import load_dataset
    from mspipe_bench.harness.run import tune_allocator
    from mspipe_bench.models.config import load_config
    from mspipe_bench.stages import make_context, run_stage

    if not Path(args.dataset).exists():
        sys.exit(f"profile_iterations: dataset not found: {args.dataset}")
    tune_allocator()
    torch.set_num_threads(args.threads)
    graph = load_dataset(args.dataset)
    ctx = make_context(graph, load_config(args.model), seed=0)
    split = graph.split()
    n = args.warmup + 2 * args.iterations
    batches = ctx.batches("train", split.train.start, split.train.stop)
    if len(batches) < n:
        sys.exit(f"profile_iterations: the training split has {len(batches)} batches, fewer than {n}")
    batches = batches[:n]

    def iteration(b):
        for stage in "SFMTU":
            run_stage(ctx, stage, b)

    for b in batches[: args.warmup]:
        iteration(b)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
        for b in batches[args.warmup : args.warmup + args.iterations]:
            iteration(b)
    plain = []
    for b in batches[args.warmup + args.iterations :]:
        t0 = time.perf_counter()
        iteration(b)
        plain.append(time.perf_counter() - t0)
    stage_ms = {s: 1e3 * float(np.median([b.times[s][1] - b.times[s][0] for b in batches[-args.iterations:]]))
                for s in "SFMTU"}
    print(f"{args.model}: iteration {1e3 * float(np.median(plain)):.1f} ms without the profiler (median); stages "
          + ", ".join(f"{s} {v:.1f}" for s, v in stage_ms.items()) + " ms")
    table = prof.key_averages(group_by_input_shape=args.shapes)
    print(table.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
