"""Throughput ratios of the pipelined trainers to ``sequential`` from *paired blocks* in one process.

Why: on a shared machine the speed of this CPU drifts by 20-40% within minutes (the same sequential TGN run
measured 5,600-7,900 events/s a minute apart), so ratios of separate runs, even interleaved, carry a std of
±0.1-0.2. Here every trainer trains the *same model and memory* in turn, one block of ``--block``
consecutive training iterations each, rounds after rounds (the trainer order rotates every round), so each
ratio compares blocks measured seconds apart. Within a round every trainer trains the *same* batches from
the *same* memory state (restored from a snapshot before each block), so the blocks differ only in the
schedule; the next round moves on to the next batches. Per round: events/s of each trainer's block ÷
events/s of the sequential block of the same round; reported: the median and quartiles over rounds.

Efficiency = measured events/s ÷ simulated events/s, where the simulation replays the per-iteration stage
times of the round's *sequential* block (uncontended) under the trainer's rules (``trainers.simulator``).
It splits into two factors, efficiency = stage speed × schedule efficiency:

- *stage speed* = the trainer's rules replayed with the block's **own** measured stage times ÷ with the
  sequential block's: below 1 when the stages themselves ran slower because they ran concurrently (GIL,
  the two vCPUs' shared caches and memory bandwidth);
- *schedule efficiency* = measured ÷ the replay of its own stage times: below 1 when the executor lost time
  between stages (hand-offs, wake-ups, waits the rules do not impose).

The model keeps training across blocks (its parameters are not restored: irrelevant to speed). Memory is
reset when the epoch's batches run out. Each pipelined block starts its worker threads
and drains them, like an epoch does. mspipe runs with mitigation, the others without; mspipe's stage-time
estimates carry over between its blocks.

Run from the repository root (needs ``../shared/datasets/wikipedia``):

    .venv/bin/python benchmarks/paired_ratios.py --models tgn,jodie,apan --rounds 8 \\
        --json results/reference/<machine>/paired/paired_ratios.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mspipe_bench.trainers.rules import TRAINERS

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "wikipedia"
DEFAULT_BLOCK = {"tgn": 20, "apan": 40, "jodie": 120}  # ~2 s of sequential training each


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="tgn,jodie,apan", help="comma-separated presets (default: tgn,jodie,apan)")
    p.add_argument("--dataset", default=str(DEFAULT_DATA), help="dataset path (default: ../shared/datasets/wikipedia)")
    p.add_argument("--rounds", type=int, default=8, help="rounds of one block per trainer (default: 8)")
    p.add_argument("--block", type=int, default=None,
                   help=f"iterations per block (default per model: {DEFAULT_BLOCK})")
    p.add_argument("--staleness", type=int, default=2, help="fixed-staleness bound K (default: 2)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--default-allocator", action="store_true",
                   help="leave glibc malloc at its defaults (runs tune it, as mspipe-bench run does)")
    p.add_argument("--edge-features", metavar="SPEC", default=None,
                   help="none | random:D[:SEED], as for mspipe-bench run (default: the dataset's own)")
    p.add_argument("--node-features", metavar="SPEC", default=None,
                   help="none | random:D[:SEED], as for mspipe-bench run (default: the dataset's own)")
    p.add_argument("--json", metavar="FILE", help="write rounds and summary as JSON to FILE")
    return p.parse_args(argv)


def next_block(ctx, split, cursor: dict, n: int) -> tuple[int, int, int]:
    """Event range and epoch of the next ``n`` training batches; wraps to a new epoch with a reset memory
    when the training split runs out."""
    bs = ctx.cfg.train.batch_size
    lo = split.train.start + cursor["i"] * bs
    if lo + n * bs > split.train.stop:
        cursor["i"], cursor["epoch"] = 0, cursor["epoch"] + 1
        ctx.store.reset()
        lo = split.train.start
    cursor["i"] += n
    return lo, min(lo + n * bs, split.train.stop), cursor["epoch"]


def block_batches(ctx, block: tuple[int, int, int]):
    """The block's batches, numbered from 0 as the executor expects (observed staleness counted from here)."""
    ctx.version_base = ctx.store.version
    return ctx.batches("train", block[0], block[1], block[2])


def measure_model(graph, model: str, args) -> dict:
    from mspipe_bench.models.config import load_config
    from mspipe_bench.models.mitigation import MitigationConfig
    from mspipe_bench.stages import make_context
    from mspipe_bench.trainers.executor import Executor
    from mspipe_bench.trainers.rules import STAGES, StageEstimator, make_schedule
    from mspipe_bench.trainers.simulator import simulate

    ctx = make_context(graph, load_config(model), seed=args.seed)
    split = graph.split()
    n = args.block or DEFAULT_BLOCK.get(model, 40)
    schedules = {t: make_schedule(t, staleness=args.staleness if t == "fixed-staleness" else 1) for t in TRAINERS}
    estimators = {t: StageEstimator() for t in TRAINERS}
    cursor = {"i": 0, "epoch": 0}
    # warm-up: one untimed block per trainer (allocator, caches, mspipe's estimates)
    for t in TRAINERS:
        ctx.mitigation = MitigationConfig(enabled=(t == "mspipe"))
        Executor(ctx, schedules[t], estimators[t]).run_epoch(block_batches(ctx, next_block(ctx, split, cursor, n)))
    rounds = []
    for r in range(args.rounds):
        order = TRAINERS[r % len(TRAINERS):] + TRAINERS[: r % len(TRAINERS)]
        block = next_block(ctx, split, cursor, n)
        state = ctx.store.snapshot()
        row = {}
        for t in order:
            ctx.mitigation = MitigationConfig(enabled=(t == "mspipe"))
            ctx.store.restore(state)
            batches = block_batches(ctx, block)
            t0 = time.perf_counter()
            records = Executor(ctx, schedules[t], estimators[t]).run_epoch(batches)
            seconds = time.perf_counter() - t0
            events = sum(b.size for b in batches)
            row[t] = {
                "events_per_s": events / seconds,
                "iterations": len(batches),
                "stage_ms": {s: 1000 * float(np.median([x.times[s][1] - x.times[s][0] for x in records])) for s in STAGES},
                "mean_k": float(np.mean([x.k for x in records])),
                "mean_observed_staleness": float(np.mean([x.observed_staleness for x in records])),
                "_tau": {s: [x.times[s][1] - x.times[s][0] for x in records] for s in STAGES},
                "_events": events,
            }
        seq_tau = row["sequential"]["_tau"]
        batch = row["sequential"]["_events"] / row["sequential"]["iterations"]
        sim = {t: simulate(seq_tau, schedules[t], batch_size=batch).events_per_s for t in TRAINERS}
        # the same rules replayed with the block's *own* stage times (as slowed by running concurrently)
        own = {t: simulate(row[t]["_tau"], schedules[t], batch_size=batch).events_per_s for t in TRAINERS}
        for t in TRAINERS:
            row[t]["simulated_events_per_s"] = sim[t]
            row[t]["ratio"] = row[t]["events_per_s"] / row["sequential"]["events_per_s"]
            row[t]["simulated_ratio"] = sim[t] / sim["sequential"]
            row[t]["efficiency"] = row[t]["events_per_s"] / sim[t]
            row[t]["stage_speed"] = own[t] / sim[t]
            row[t]["schedule_efficiency"] = row[t]["events_per_s"] / own[t]
        for t in TRAINERS:
            del row[t]["_tau"], row[t]["_events"]
        rounds.append(row)
        print(f"  {model} round {r + 1}/{args.rounds}: "
              + "  ".join(f"{t} {row[t]['events_per_s']:,.0f} ({row[t]['ratio']:.2f}x)" for t in TRAINERS), flush=True)
    summary = {}
    for t in TRAINERS:
        q = lambda key: [float(x) for x in np.percentile([row[t][key] for row in rounds], [25, 50, 75])]
        summary[t] = {"ratio_q25_median_q75": q("ratio"), "simulated_ratio_median": q("simulated_ratio")[1],
                      "efficiency_q25_median_q75": q("efficiency"),
                      "stage_speed_median": q("stage_speed")[1],
                      "schedule_efficiency_median": q("schedule_efficiency")[1],
                      "events_per_s_median": float(np.median([row[t]["events_per_s"] for row in rounds]))}
    return {"model": model, "block_iterations": n, "rounds": rounds, "summary": summary}


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    from mspipe_bench.data import features, load_dataset
    from mspipe_bench.harness.run import environment, tune_allocator, write_json_atomic

    if not Path(args.dataset).exists():
        sys.exit(f"paired_ratios: dataset not found: {args.dataset}")
    torch.set_num_threads(args.threads)
    if not args.default_allocator:
        tune_allocator()
    graph = load_dataset(args.dataset)
    features.apply(graph, args.edge_features, args.node_features)
    out = {"dataset": args.dataset, "rounds": args.rounds, "staleness": args.staleness, "threads": args.threads,
           "seed": args.seed, "edge_features": args.edge_features, "node_features": args.node_features, "env": environment(), "models": []}
    for model in args.models.split(","):
        out["models"].append(measure_model(graph, model.strip(), args))
    print("\nmodel  trainer              ratio to sequential (q25 / median / q75)   simulated   efficiency"
          "   stage speed x schedule efficiency (medians)")
    for m in out["models"]:
        for t, s in m["summary"].items():
            a, b, c = s["ratio_q25_median_q75"]
            print(f"{m['model']:<6} {t:<20} {a:5.2f} / {b:5.2f} / {c:5.2f}x                 {s['simulated_ratio_median']:5.2f}x"
                  f"      {s['efficiency_q25_median_q75'][1]:.2f}         {s['stage_speed_median']:.2f} x"
                  f" {s['schedule_efficiency_median']:.2f}")
    if args.json:
        write_json_atomic(args.json, out)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
