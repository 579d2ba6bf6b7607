"""``mspipe-bench simulate``: predict each trainer's throughput, staleness and bubbles from stage times.

Three sources of stage times (exactly one):

- ``--tau S=1,F=1,M=2,T=10,U=2``: constants in seconds (a value may end in ``ms``);
- ``--from RESULT.json``: the measured per-iteration stage times of a run (replayed; design.md §4 "ideal
  speedup");
- ``--profile FILE.yaml``: what-if profiles (e.g. ``mspipe_bench/harness/profiles/gpu_example.yaml``).

Every number printed is SIMULATED by :mod:`mspipe_bench.trainers.simulator`, never measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EPILOG = (
    "events/s = iterations x batch size / simulated makespan (warm-up and drain included); "
    "speedup = events/s over sequential's; period = mean interval between T starts in steady state "
    "(after the first quarter of the iterations). All numbers are simulated, not measured."
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate the trainers' schedules from stage times (constants, a result file or a profile)",
        description=__doc__.split("\n\n")[0] + " " + EPILOG,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tau", metavar="S=..,F=..,M=..,T=..,U=..",
                     help="constant stage times in seconds (suffix ms allowed), e.g. S=1,F=1,M=2,T=10,U=2")
    src.add_argument("--from", dest="from_result", metavar="RESULT.json",
                     help="replay the measured per-iteration stage times of a result file")
    src.add_argument("--profile", metavar="FILE.yaml", help="what-if profile (one table per entry)")
    p.add_argument("--iterations", type=int, default=None,
                   help="iterations to simulate (default 200; with --from: every iteration of the epoch)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="events per batch (default 600; with --from / --profile: the file's)")
    p.add_argument("--trainers", default="sequential,presample,fixed-staleness,mspipe",
                   help="comma-separated trainers (default: all four)")
    p.add_argument("--staleness", type=int, default=2, help="fixed-staleness bound k (default 2)")
    p.add_argument("--max-staleness", type=int, default=4, help="mspipe cap on k (default 4)")
    p.add_argument("--prefetch", type=int, default=2, help="run-ahead depth D of S/F (default 2)")
    p.add_argument("--epoch", default="first",
                   help="with --from: 'first' (first complete epoch, default), 'all', or an epoch number")
    p.add_argument("--warmup", choices=("first", "cold"), default="first",
                   help="mspipe before estimates exist: seed them with iteration 0's times (first) or, as the "
                   "executor's first epoch, k = 2 without delay until every stage has been seen (cold)")
    p.add_argument("--json", action="store_true", help="print one JSON object (a list for --profile)")
    p.add_argument("--per-iteration", action="store_true",
                   help="with --json: include per-iteration k, observed staleness and bubbles")
    p.set_defaults(func=run)


# --------------------------------------------------------------------------------------------------------


def _trainers(text: str) -> list[str]:
    from mspipe_bench.trainers.rules import TRAINERS

    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError("--trainers: give at least one trainer")
    for t in names:
        if t not in TRAINERS:
            raise ValueError(f"--trainers: {t!r} is not one of {', '.join(TRAINERS)}")
    return list(dict.fromkeys(names))


def _epoch(text: str) -> str | int:
    if text in ("first", "all"):
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--epoch: expected 'first', 'all' or an epoch number, got {text!r}") from None


def _fmt_time(sec: float) -> str:
    if sec >= 1.0 or sec == 0:
        return f"{sec:.3f} s"
    if sec >= 1e-3:
        return f"{sec * 1e3:.3f} ms"
    return f"{sec * 1e6:.1f} us"


def _fmt_tau(tau: dict[str, float]) -> str:
    return ", ".join(f"{s}={_fmt_time(v)}" for s, v in tau.items())


def _one(tau: Any, args: argparse.Namespace, trainers: list[str], iterations: int | None,
         batch_size: int | None, input_desc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    from mspipe_bench.trainers import simulator
    from mspipe_bench.trainers.rules import k_min_steady_state

    results = simulator.simulate_trainers(
        tau,
        trainers,
        iterations=iterations,
        batch_size=batch_size,
        staleness=args.staleness,
        max_staleness=args.max_staleness,
        prefetch=args.prefetch,
        warmup=args.warmup,
    )
    first = next(iter(results.values()))
    mean_tau = simulator.stage_times(tau, iterations).mean()
    desc = dict(input_desc)
    desc.update(
        {
            "iterations": first.iterations,
            "batch_size": first.batch_size,
            "trainers": trainers,
            "staleness": args.staleness,
            "max_staleness": args.max_staleness,
            "prefetch": args.prefetch,
            "warmup": args.warmup,
            "k_min_steady_state": k_min_steady_state(mean_tau["M"], mean_tau["U"], mean_tau["T"])
            if mean_tau["T"] > 0
            else None,
            "simulated": True,
        }
    )
    summary = simulator.summarize(results, trainers, values=args.per_iteration)
    return {"input": desc, "trainers": summary}, results


def _table(obj: dict[str, Any]) -> str:
    rows = [("trainer", "events/s", "speedup", "period", "k min-max (mean)", "obs. staleness mean/max",
             "bubble share")]
    for name, d in obj["trainers"].items():
        k = d["k"]
        rows.append(
            (
                name,
                f"{d['events_per_s']:.2f}",
                f"{d['speedup_vs_sequential']:.2f}x",
                _fmt_time(d["period_s"]),
                f"{k['min']}-{k['max']} ({k['mean']:.2f})",
                f"{d['mean_observed_staleness']:.2f} / {d['max_observed_staleness']}",
                f"{100 * d['bubble_share']:.1f}%",
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [r[c].rjust(widths[c]) for c in range(1, len(r))]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = []
    for name, d in obj["trainers"].items():
        if d.get("infeasible_iterations"):
            notes.append(f"{name}: in {d['infeasible_iterations']} iterations no k <= {obj['input']['max_staleness']}"
                         " avoided a wait of T (bubbles)")
        for note in d.get("notes", []):
            notes.append(f"{name}: {note}")
    return "\n".join(lines + [f"  note: {n}" for n in notes])


def _header(obj: dict[str, Any], title: str, extra: list[str]) -> str:
    inp = obj["input"]
    out = [f"SIMULATED ({title}) -- not a measurement"]
    out += [f"  {e}" for e in extra]
    out.append(
        f"  iterations {inp['iterations']}, batch {inp['batch_size']}, fixed-staleness k={inp['staleness']}, "
        f"mspipe k_max={inp['max_staleness']}, prefetch {inp['prefetch']}; "
        f"k_min (steady state, design.md §2) = {inp['k_min_steady_state']}"
    )
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from mspipe_bench.trainers import simulator

    trainers = _trainers(args.trainers)
    for name, v in (("--iterations", args.iterations), ("--batch-size", args.batch_size)):
        if v is not None and v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")

    if args.tau is not None:
        tau = simulator.parse_tau(args.tau)
        iterations = args.iterations or 200
        batch = args.batch_size or 600
        obj, _ = _one(tau, args, trainers, iterations, batch, {"source": "--tau", "tau_s": tau})
        if args.json:
            print(json.dumps(obj, indent=2))
        else:
            print(_header(obj, "constant stage times from --tau", [f"tau: {_fmt_tau(tau)}"]))
            print()
            print(_table(obj))
            print(f"\n{EPILOG}")
        return 0

    if args.from_result is not None:
        path = Path(args.from_result)
        if not path.is_file():
            raise FileNotFoundError(f"result file {path} not found")
        try:
            result = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from None
        st = simulator.timeline_from_result(result, _epoch(args.epoch))
        batch = args.batch_size or st.batch_size
        desc = {"source": str(path), "stage_times": st.source, "mean_tau_s": st.mean()}
        obj, _ = _one(st, args, trainers, args.iterations, batch, desc)
        if args.json:
            print(json.dumps(obj, indent=2))
        else:
            print(_header(obj, f"replay of {st.source} from {path}",
                          [f"mean tau: {_fmt_tau(st.mean())}",
                           "compare with the run's measured throughput for pipeline efficiency (design.md §4)"]))
            print()
            print(_table(obj))
            print(f"\n{EPILOG}")
        return 0

    profiles = simulator.load_profile(args.profile)
    objs = []
    for n, prof in enumerate(profiles):
        iterations = args.iterations or 200
        batch = args.batch_size or prof.batch_size
        obj, _ = _one(prof.tau, args, trainers, iterations, batch, prof.describe())
        objs.append(obj)
        if not args.json:
            if n:
                print()
            print(_header(obj, f"profile {prof.path}: {prof.model} / {prof.dataset}",
                          [f"source: {prof.source}", f"note: {prof.note}", f"tau: {_fmt_tau(prof.tau)}"]))
            print()
            print(_table(obj))
    if args.json:
        print(json.dumps(objs, indent=2))
    else:
        print(f"\n{EPILOG}")
    sys.stdout.flush()
    return 0
