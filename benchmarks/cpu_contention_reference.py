"""The contention factor that the CPU's measured *stage speed* corresponds to (the reference point for the GPU
what-ifs of ``mspipe-bench simulate --contention``).

``benchmarks/paired_ratios.py`` splits each pipelined trainer's efficiency into *stage speed* (the trainer's
rules replayed with its block's own, concurrently slowed stage times / replayed with the sequential block's)
and schedule efficiency. Stage speed is what contention costs: here, per model and trainer, the global
contention factor ``c`` at which the simulator, fed with the sequential block's stage times, loses the same
share, i.e. ``simulated speedup(c) / simulated speedup(1) = measured stage speed`` (bisection). A measured
stage speed >= 1 (stages no slower beside each other, within noise) corresponds to ``c = 1``.

Approximation: the paired file keeps each round's per-stage *medians* only, so the stage times simulated here
are the medians over rounds of the sequential blocks' medians, constant over a block of the benchmark's
length; the measured stage speed is the median over rounds.

    .venv/bin/python benchmarks/cpu_contention_reference.py \\
        results/reference/intel-xeon-2cpu/paired/paired_ratios.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "results" / "reference" / "intel-xeon-2cpu" / "paired" / "paired_ratios.json"


def reference(paired: dict) -> list[dict]:
    from mspipe_bench.trainers.rules import STAGES
    from mspipe_bench.trainers.simulator import contention_for_speedup, sweep_contention

    rows = []
    staleness = paired.get("staleness", 2)
    for m in paired["models"]:
        seq = [r["sequential"]["stage_ms"] for r in m["rounds"]]
        tau = {s: statistics.median(x[s] for x in seq) / 1000 for s in STAGES}
        n = m["block_iterations"]
        for t, summary in m["summary"].items():
            if t == "sequential":
                continue
            kw = {"iterations": n, "staleness": staleness}
            free = sweep_contention(tau, [1.0], [t], **kw)[0][t]
            speed = summary["stage_speed_median"]
            if speed >= 1:
                factor = 1.0
            else:
                factor = contention_for_speedup(tau, t, speed * free, tol=1e-4, **kw)
            rows.append({"model": m["model"], "trainer": t, "block_iterations": n,
                         "sequential_stage_ms": {s: 1000 * v for s, v in tau.items()},
                         "measured_stage_speed": speed, "simulated_speedup_at_1": free, "contention_factor": factor})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("paired", nargs="?", default=str(DEFAULT), help=f"paired_ratios JSON (default {DEFAULT})")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from mspipe_bench.harness.results import text_table

    path = Path(args.paired)
    if not path.is_file():
        sys.exit(f"cpu_contention_reference: {path} not found")
    rows = reference(json.loads(path.read_text()))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"CPU stage speed (measured, {path}) as a contention factor (simulated)\n")
    table = [(r["model"], r["trainer"], " ".join(f"{s}={v:.2f}" for s, v in r["sequential_stage_ms"].items()),
              f"{r['measured_stage_speed']:.3f}", f"{r['simulated_speedup_at_1']:.3f}x",
              "n/a" if r["contention_factor"] is None else f"{r['contention_factor']:.3f}") for r in rows]
    print(text_table(table, ("model", "trainer", "sequential stage ms (median)", "stage speed (measured)",
                             "simulated speedup at c=1", "contention factor c"), align="llrrrr"))
    print("\nc: the global factor at which simulated speedup(c) / speedup(1) equals the measured stage speed "
          "(c = 1 where the measured stage speed is >= 1).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
