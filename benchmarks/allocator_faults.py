"""Run from the repository root: .venv/bin/python benchmarks/allocator_faults.py [--models tgn,jodie,apan]
(needs ../shared/datasets/wikipedia).

Why ``mspipe-bench run`` tunes glibc malloc (``harness.run.tune_allocator``): sequential training of each model
in fresh processes, alternately with glibc's default allocator and with the tuned one, reporting per
iteration the wall time and the minor page faults (memory the kernel hands in again because it was unmapped or
trimmed after the previous iteration freed it). Medians over ``--pairs`` alternations."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import resource, sys, time, torch
torch.set_num_threads(1)
from mspipe_bench.harness.run import tune_allocator
if sys.argv[2] == "tuned":
    tune_allocator()
from mspipe_bench.data.loaders import load_dataset
from mspipe_bench.models.config import load_config
from mspipe_bench.stages import make_context, run_stage
g = load_dataset(sys.argv[3])
ctx = make_context(g, load_config(sys.argv[1]), seed=0)
bs = ctx.batches("train", 0, g.split().train_end)
warm, n = 20, int(sys.argv[4])
for b in bs[:warm]:
    for s in "SFMTU": run_stage(ctx, s, b)
faults, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
for b in bs[warm:warm + n]:
    for s in "SFMTU": run_stage(ctx, s, b)
print((time.perf_counter() - t0) / n * 1e3, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / n)
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="tgn,jodie,apan")
    p.add_argument("--dataset", default=str(REPO.parent / "shared" / "datasets" / "wikipedia"))
    p.add_argument("--pairs", type=int, default=3, help="alternations default/tuned per model (default: 3)")
    p.add_argument("--iterations", type=int, default=50, help="timed iterations per process (default: 50)")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    if not Path(args.dataset).exists():
        sys.exit(f"allocator_faults: dataset not found: {args.dataset}")
    out = {}
    for model in args.models.split(","):
        rows = {"default": [], "tuned": []}
        for _ in range(args.pairs):
            for mode in rows:
                r = subprocess.run([sys.executable, "-c", CHILD, model, mode, args.dataset, str(args.iterations)],
                                   capture_output=True, text=True, check=True, cwd=REPO)
                ms, faults = map(float, r.stdout.split()[-2:])
                rows[mode].append({"ms_per_iteration": ms, "minor_faults_per_iteration": faults})
                print(f"{model:6s} {mode:8s} {ms:7.2f} ms/it  {faults:7.0f} faults/it", flush=True)
        med = {m: {k: float(np.median([x[k] for x in v])) for k in v[0]} for m, v in rows.items()}
        ratio = float(np.median([d["ms_per_iteration"] / t["ms_per_iteration"]
                                 for d, t in zip(rows["default"], rows["tuned"])]))
        out[model] = {"runs": rows, "median": med, "speedup_tuned_over_default_median_of_pairs": ratio}
        print(f"{model}: median {med['default']['ms_per_iteration']:.2f} -> {med['tuned']['ms_per_iteration']:.2f}"
              f" ms/it, faults {med['default']['minor_faults_per_iteration']:.0f} -> "
              f"{med['tuned']['minor_faults_per_iteration']:.0f}; speedup (median of pairs) {ratio:.2f}x")
    if args.json:
        sys.path.insert(0, str(REPO))
        from mspipe_bench.harness.run import write_json_atomic
        write_json_atomic(args.json, {"dataset": args.dataset, "iterations": args.iterations, "models": out})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
