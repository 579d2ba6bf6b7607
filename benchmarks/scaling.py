"""Data-parallel scaling (docs/design.md §7): events/s and test AP of W ranks against one process, interleaved.

Per model, round after round, the configurations run one after another (a fresh ``mspipe-bench run`` each, so
every one pays the same start-up and none inherits another's warm caches), so machine drift hits all of them
alike; the table gives, per configuration, the median events/s over rounds and the ratios of the medians:

- ``w1t1``: sequential, one process, one intra-op thread (the reference);
- ``w1t2``: sequential, one process, two intra-op threads (the fastest single-process configuration on 2 cores);
- ``w2t1``: sequential, two ranks of one thread each;
- ``w2t1-mspipe``: mspipe, two ranks of one thread each.

For the W=2 runs it also reports rank 0's communication share of the training time (all-reduce, all-gather,
k agreement) and the test AP difference to ``w1t1`` (percentage points; same global batch, same seed).

    .venv/bin/python benchmarks/scaling.py --dataset ../shared/datasets/wikipedia --models tgn,apan \\
        --epochs 1 --rounds 2 [--max-iterations N]

Results (JSON per run, ``scaling.json`` with the table) go to ``--out`` (default ``runs/scaling-<time>/``,
which git ignores).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import subprocess
import sys
from pathlib import Path

from mspipe_bench.harness.results import load_result, text_table

CONFIGS = {
    "w1t1": ["--trainer", "sequential", "--threads", "1"],
    "w1t2": ["--trainer", "sequential", "--threads", "2"],
    "w2t1": ["--trainer", "sequential", "--threads", "1", "--nprocs", "2"],
    "w2t1-mspipe": ["--trainer", "mspipe", "--threads", "1", "--nprocs", "2"],
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="../shared/datasets/wikipedia")
    p.add_argument("--models", default="tgn,apan")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {', '.join(CONFIGS)}")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=600)
    p.add_argument("--max-iterations", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    out = args.out or Path("runs") / f"scaling-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    configs = args.configs.split(",")
    runs = []
    for model in args.models.split(","):
        for rnd in range(args.rounds):
            for name in configs:
                path = out / f"{model}_{name}_r{rnd}.json"
                cmd = [sys.executable, "-m", "mspipe_bench", "run", "--model", model, "--dataset", args.dataset,
                       "--batch-size", str(args.batch_size), "--epochs", str(args.epochs), "--seed", str(args.seed),
                       "--quiet", "--out", str(path), *CONFIGS[name]]
                if args.max_iterations:
                    cmd += ["--max-iterations", str(args.max_iterations)]
                print(" ".join(cmd), flush=True)
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                r = load_result(path)
                m = r["metrics"]
                runs.append({"model": model, "config": name, "round": rnd, "events_per_s": m["train_events_per_s"],
                             "test_ap": m.get("test_ap"), "comm_share": m.get("comm_share"),
                             "comm_seconds": m.get("comm_seconds"), "train_seconds": m["train_seconds"],
                             "stages": r["stages"], "ranks": [{k: v for k, v in rk.items() if k in
                                                               ("rank", "stages", "comm", "events")}
                                                              for rk in r.get("ranks", [])]})
                print(f"  {model} {name} round {rnd}: {m['train_events_per_s']:,.0f} events/s, "
                      f"test AP {m.get('test_ap', float('nan')):.4f}", flush=True)
    table = summarize(runs, configs)
    (out / "scaling.json").write_text(json.dumps({"args": vars(args) | {"out": str(out)}, "runs": runs,
                                                  "table": table}, indent=1))
    print_table(table)
    print(f"results in {out}")
    return 0


def summarize(runs: list[dict], configs: list[str]) -> list[dict]:
    rows = []
    for model in dict.fromkeys(r["model"] for r in runs):
        med = {c: statistics.median(r["events_per_s"] for r in runs if r["model"] == model and r["config"] == c)
               for c in configs}
        ap = {c: statistics.mean(r["test_ap"] for r in runs if r["model"] == model and r["config"] == c)
              for c in configs}
        for c in configs:
            mine = [r for r in runs if r["model"] == model and r["config"] == c]
            shares = [r["comm_share"] for r in mine if r["comm_share"] is not None]
            rows.append({"model": model, "config": c, "events_per_s": med[c],
                         "vs_w1t1": med[c] / med["w1t1"] if "w1t1" in med else None,
                         "vs_w1t2": med[c] / med["w1t2"] if "w1t2" in med else None,
                         "vs_w2t1": med[c] / med["w2t1"] if "w2t1" in med else None,
                         "test_ap": ap[c], "ap_delta_pp": 100 * (ap[c] - ap["w1t1"]) if "w1t1" in ap else None,
                         "comm_share": statistics.mean(shares) if shares else None,
                         "events_per_s_rounds": [r["events_per_s"] for r in mine]})
    return rows


def print_table(rows: list[dict]) -> None:
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    print(text_table([(r["model"], r["config"], f(r["events_per_s"], ",.0f"), f(r["vs_w1t1"], ".2f"),
                     f(r["vs_w1t2"], ".2f"), f(r["vs_w2t1"], ".2f"), f(r["test_ap"], ".4f"),
                     f(r["ap_delta_pp"], "+.2f"), f(r["comm_share"], ".1%")) for r in rows],
                     ("model", "config", "events/s", "x w1t1", "x w1t2", "x w2t1", "test AP",
                      "ΔAP pp", "comm share")))


if __name__ == "__main__":
    raise SystemExit(main())
