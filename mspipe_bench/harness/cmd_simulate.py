"""``mspipe-bench simulate``: predict each trainer's throughput, staleness and bubbles from stage times.

Three sources of stage times (exactly one):

- ``--tau S=1,F=1,M=2,T=10,U=2``: constants in seconds (a value may end in ``ms``);
- ``--from RESULT.json``: the measured per-iteration stage times of a run (replayed; docs/design.md "ideal
  speedup");
- ``--profile FILE.yaml``: what-if profiles that carry their source, e.g. the published GPU measurements in
  ``mspipe_bench/harness/profiles/gnnflow_tgn_gdelt_4xa100.yaml`` (printed with the table).

``--contention`` slows stages that overlap on the device; ``--sweep-contention`` simulates a list of factors
and draws the speedups against the factor. Every number printed is SIMULATED by
:mod:`mspipe_bench.trainers.simulator`, never measured.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mspipe_bench.errors import UserError

EPILOG = (
    "events/s = iterations x batch size / simulated makespan (warm-up and drain included); "
    "speedup = events/s over sequential's; period = mean interval between T starts in steady state "
    "(after the first quarter of the iterations). All numbers are simulated, not measured."
)
# the MSPipe paper's reported speedups over its baselines (Sheng et al., KDD 2024, abstract: "up to 2.45x";
# the lower end as stated in the issue that asked for the comparison), drawn as a band
PAPER_RANGE = (1.5, 2.45)
DEFAULT_FIGURE = "contention_sweep.png"
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


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
    src.add_argument("--profile", metavar="FILE.yaml",
                     help="what-if profile (one table per entry; its source, hardware and caveats are printed)")
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
    p.add_argument("--contention", metavar="FACTOR[,X+Y=F,...]",
                   help="slowdown of stages that overlap on the device: a stage running beside any other "
                   "takes FACTOR x as long (while they overlap); optional per-pair factors such as F+T=2 "
                   "(default: the profile's, else 1 = no slowdown)")
    p.add_argument("--sweep-contention", metavar="F1,F2,...",
                   help="simulate at each global contention factor (>= 1, e.g. 1,1.2,1.5,2): a table of "
                   "speedups over sequential per trainer, the factors at which mspipe and presample fall to "
                   "the paper's 1.5x and 2.45x, and a figure (--figure)")
    p.add_argument("--figure", metavar="FILE",
                   help=f"with --sweep-contention: where to write the figure (.png/.pdf/.svg; default "
                   f"{DEFAULT_FIGURE} in the current directory)")
    p.add_argument("--nprocs", type=int, default=1, metavar="W",
                   help="predict a W-rank data-parallel run from these (single-process) stage times: S, F, M, T "
                   "take 1/W of their time, T adds the gradient all-reduce, U (the merged write of the whole "
                   "batch) the all-gather (--comm); docs/design.md §7 (default 1)")
    p.add_argument("--comm", metavar="AR=..,AG=..[,KA=..] | RESULT.json",
                   help="with --nprocs: communication seconds per iteration (suffix ms allowed), or a data-parallel "
                   "result file whose measured means to use (default: none, the ideal)")
    p.add_argument("--json", action="store_true", help="print one JSON object (a list for --profile or a sweep)")
    p.add_argument("--per-iteration", action="store_true",
                   help="with --json: include per-iteration k, observed staleness and bubbles")
    p.set_defaults(func=run)


# --------------------------------------------------------------------------------------------------------


@dataclass
class _Input:
    """One set of stage times to simulate, with what the header says about it."""

    tau: Any
    iterations: int | None
    batch_size: int | None
    desc: dict[str, Any]
    title: str
    lines: list[str]
    label: str  # short name in the sweep table and figure
    per_epoch_sums: bool = False
    contention: Any = None  # the profile's, unless --contention
    file_lines: list[str] = field(default_factory=list)  # printed once per file (source, caveats)


def _trainers(text: str) -> list[str]:
    from mspipe_bench.trainers.rules import TRAINERS

    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise UserError("--trainers: give at least one trainer")
    for t in names:
        if t not in TRAINERS:
            raise UserError(f"--trainers: {t!r} is not one of {', '.join(TRAINERS)}")
    return list(dict.fromkeys(names))


def _epoch(text: str) -> str | int:
    if text in ("first", "all"):
        return text
    try:
        return int(text)
    except ValueError:
        raise UserError(f"--epoch: expected 'first', 'all' or an epoch number, got {text!r}") from None


def _fmt_time(sec: float) -> str:
    if sec >= 1.0 or sec == 0:
        return f"{sec:.3f} s"
    if sec >= 1e-3:
        return f"{sec * 1e3:.3f} ms"
    return f"{sec * 1e6:.1f} us"


def _fmt_tau(tau: dict[str, float]) -> str:
    return ", ".join(f"{s}={_fmt_time(v)}" for s, v in tau.items())


def _wrap(text: str, indent: str = "  ", first: str = "") -> list[str]:
    return textwrap.wrap(text, width=110, initial_indent=indent + first,
                         subsequent_indent=indent + " " * len(first)) or [indent + first]


def _one(inp: _Input, args: argparse.Namespace, trainers: list[str], contention: Any
         ) -> tuple[dict[str, Any], dict[str, Any]]:
    from mspipe_bench.trainers import simulator
    from mspipe_bench.trainers.rules import k_min_steady_state

    results = simulator.simulate_trainers(
        inp.tau,
        trainers,
        iterations=inp.iterations,
        batch_size=inp.batch_size,
        staleness=args.staleness,
        max_staleness=args.max_staleness,
        prefetch=args.prefetch,
        warmup=args.warmup,
        contention=contention,
    )
    first = next(iter(results.values()))
    mean_tau = simulator.stage_times(inp.tau, inp.iterations).mean()
    desc = dict(inp.desc)
    desc.update(
        {
            "iterations": first.iterations,
            "batch_size": first.batch_size,
            "trainers": trainers,
            "staleness": args.staleness,
            "max_staleness": args.max_staleness,
            "prefetch": args.prefetch,
            "warmup": args.warmup,
            "contention": contention.model_dump() if contention is not None else None,
            "k_min_steady_state": k_min_steady_state(mean_tau["M"], mean_tau["U"], mean_tau["T"])
            if mean_tau["T"] > 0
            else None,
            "simulated": True,
        }
    )
    summary = simulator.summarize(results, trainers, values=args.per_iteration)
    return {"input": desc, "trainers": summary}, results


def _table(obj: dict[str, Any], per_epoch_sums: bool = False) -> str:
    from mspipe_bench.harness.results import text_table

    headers = ("trainer", "events/s", "speedup", "epoch time" if per_epoch_sums else "period",
               "k min-max (mean)", "obs. staleness mean/max", "bubble share")
    rows = []
    for name, d in obj["trainers"].items():
        k = d["k"]
        rows.append((
            name,
            "n/a" if per_epoch_sums else f"{d['events_per_s']:.2f}",
            f"{d['speedup_vs_sequential']:.2f}x",
            _fmt_time(d["period_s"]),
            f"{k['min']}-{k['max']} ({k['mean']:.2f})",
            f"{d['mean_observed_staleness']:.2f} / {d['max_observed_staleness']}",
            f"{100 * d['bubble_share']:.1f}%",
        ))
    notes = []
    for name, d in obj["trainers"].items():
        if d.get("infeasible_iterations"):
            notes.append(f"{name}: in {d['infeasible_iterations']} iterations no k <= {obj['input']['max_staleness']}"
                         " avoided a wait of T (bubbles)")
        for note in d.get("notes", []):
            notes.append(f"{name}: {note}")
    return "\n".join([text_table(rows, headers, align="lrrrrrr")] + [f"  note: {n}" for n in notes])


def _contention_text(contention: Any, origin: str) -> str:
    if contention is None or contention.trivial:
        return "contention: none (factor 1: overlapping stages run at full speed)"
    return (f"contention ({origin}): {contention.describe()} -- a stage overlapping another runs that many times "
            "slower while they overlap")


def _header(obj: dict[str, Any], inp: _Input, contention_line: str) -> str:
    d = obj["input"]
    out = [f"SIMULATED ({inp.title}) -- not a measurement"]
    out += inp.lines
    out.append(f"  {contention_line}")
    out.append(
        f"  iterations {d['iterations']}, batch {d['batch_size']}, fixed-staleness k={d['staleness']}, "
        f"mspipe k_max={d['max_staleness']}, prefetch {d['prefetch']}; "
        f"k_min (steady state, docs/design.md) = {d['k_min_steady_state']}"
    )
    return "\n".join(out)


# -------------------------------------------------------------------------------- inputs


def _inputs(args: argparse.Namespace) -> list[_Input]:
    from mspipe_bench.trainers import simulator

    if args.tau is not None:
        tau = simulator.parse_tau(args.tau)
        return [_Input(tau, args.iterations or 200, args.batch_size or 600, {"source": "--tau", "tau_s": tau},
                       "constant stage times from --tau", [f"  tau: {_fmt_tau(tau)}"], "--tau")]

    if args.from_result is not None:
        from mspipe_bench.harness.results import read_json

        path = Path(args.from_result)
        if not path.is_file():
            raise FileNotFoundError(f"result file {path} not found")
        result = read_json(path)  # .json or .json.gz
        try:
            st = simulator.timeline_from_result(result, _epoch(args.epoch))
        except UserError as exc:
            raise UserError(f"{path}: {exc}") from None
        desc = {"source": str(path), "stage_times": st.source, "mean_tau_s": st.mean()}
        return [_Input(st, args.iterations, args.batch_size or st.batch_size, desc,
                       f"replay of {st.source} from {path}",
                       [f"  mean tau: {_fmt_tau(st.mean())}",
                        "  compare with the run's measured throughput for pipeline efficiency (docs/design.md)"],
                       path.stem)]

    profiles = simulator.load_profile(args.profile)
    out = []
    for n, prof in enumerate(profiles):
        file_lines = []
        if n == 0:
            file_lines += _wrap(prof.source, first="source: ")
            file_lines += _wrap(prof.hardware, first="hardware: ")
            if prof.per_epoch_sums:
                file_lines += _wrap("per-epoch sums, simulated as one iteration's times (column 'epoch time': "
                                    "the simulated steady-state seconds per epoch; events/s: n/a)",
                                    first="stage times: ")
            for c in prof.caveats:
                file_lines += _wrap(c, first="caveat: ")
        lines = []
        if prof.note:
            lines += _wrap(prof.note, first="note: ")
        lines.append(f"  tau: {_fmt_tau(prof.tau)}")
        batch = args.batch_size or prof.batch_size
        out.append(_Input(prof.tau, args.iterations or 200, batch, prof.describe(),
                          f"profile {prof.path}: {prof.title()}", lines,
                          f"{prof.model}/{prof.dataset}" + (f" {prof.variant}" if prof.variant else ""),
                          per_epoch_sums=prof.per_epoch_sums, contention=prof.contention, file_lines=file_lines))
    return out


def _data_parallel(inp: _Input, args: argparse.Namespace) -> _Input:
    """``--nprocs W``: the input's stage times as one rank of a W-rank run would see them."""
    from mspipe_bench.trainers import simulator

    if args.nprocs < 1:
        raise UserError(f"--nprocs must be >= 1, got {args.nprocs}")
    if args.comm is None:
        comm = simulator.parse_comm("")
    elif Path(args.comm).is_file():
        from mspipe_bench.harness.results import read_json

        try:
            comm = simulator.comm_from_result(read_json(Path(args.comm)))
        except UserError as exc:
            raise UserError(f"--comm {args.comm}: {exc}") from None
    else:
        comm = simulator.parse_comm(args.comm)
    st = simulator.data_parallel(simulator.stage_times(inp.tau, inp.iterations), args.nprocs, comm)
    desc = dict(inp.desc, nprocs=args.nprocs, comm_s=comm)
    return _Input(st, inp.iterations, inp.batch_size, desc, f"{inp.title}, as {args.nprocs} data-parallel ranks",
                  [*inp.lines, f"  per rank: {_fmt_tau(st.mean())}"], f"{inp.label} W={args.nprocs}",
                  inp.per_epoch_sums, inp.contention, inp.file_lines)


def _figure_path(args: argparse.Namespace) -> Path | None:
    """Validated before anything is simulated."""
    if args.sweep_contention is None:
        if args.figure is not None:
            raise UserError("--figure: only with --sweep-contention")
        return None
    path = Path(args.figure or DEFAULT_FIGURE)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise UserError(f"--figure: {str(path)!r} must end in {', '.join(FIGURE_SUFFIXES)}")
    from mspipe_bench.harness.run import check_output_file

    return check_output_file(path, "--figure")


# -------------------------------------------------------------------------------- sweep


def _sweep(inputs: list[_Input], args: argparse.Namespace, trainers: list[str], factors: list[float],
           cli_contention: Any, figure: Path) -> int:
    from mspipe_bench.harness.contention_figure import plot_contention_sweep
    from mspipe_bench.harness.results import text_table
    from mspipe_bench.trainers import simulator

    pipelined = [t for t in trainers if t != "sequential"] or ["presample", "mspipe"]
    drawn = [t for t in pipelined if t in ("presample", "mspipe")] or pipelined
    kw = dict(iterations=None, batch_size=None, staleness=args.staleness, max_staleness=args.max_staleness,
              prefetch=args.prefetch, warmup=args.warmup)
    objs, series = [], []
    for n, inp in enumerate(inputs):
        base = cli_contention if cli_contention is not None else inp.contention
        kw.update(iterations=inp.iterations, batch_size=inp.batch_size)
        rows = simulator.sweep_contention(inp.tau, factors, pipelined, base=base, **kw)
        crossing = {
            t: {f"{target:g}": simulator.contention_for_speedup(inp.tau, t, target, base=base, tol=1e-3, **kw)
                for target in PAPER_RANGE}
            for t in drawn
        }
        desc = dict(inp.desc)
        desc.update({"trainers": pipelined, "staleness": args.staleness, "max_staleness": args.max_staleness,
                     "prefetch": args.prefetch, "warmup": args.warmup, "simulated": True,
                     "pair_factors": dict(base.pairs) if base is not None else {}})
        objs.append({"input": desc, "sweep": rows, "factor_at_speedup": crossing})
        series.append((inp.label, rows))
        if args.json:
            continue
        if n:
            print()
        print(f"SIMULATED ({inp.title}) -- speedup over sequential vs contention factor, not a measurement")
        for line in inp.file_lines + inp.lines:
            print(line)
        if base is not None and base.pairs:
            print(f"  pair factors kept at every global factor: {base.describe().split(' ', 1)[1]}")
        print()
        table = [(f"{r['factor']:g}", *(f"{r[t]:.2f}x" for t in pipelined)) for r in rows]
        print(text_table(table, ("contention factor", *pipelined), align="r" * (1 + len(pipelined))))
        for t, found in crossing.items():
            free = simulator.sweep_contention(inp.tau, [1.0], [t], base=base, **kw)[0][t]
            parts = []
            for target, f in sorted(found.items(), key=lambda kv: -float(kv[0])):
                if f is not None:
                    parts.append(f"{target}x at factor {f:.2f}")
                elif float(target) > free:
                    parts.append(f"never {target}x ({free:.2f}x at factor 1)")
                else:
                    parts.append(f"still above {target}x at factor 8")
            print(f"  {t} speedup: " + ", ".join(parts))
    plot_contention_sweep(series, figure, band=PAPER_RANGE, trainers=drawn)
    if args.json:
        print(json.dumps(objs, indent=2))
    else:
        print(f"\nspeedup = simulated events/s over sequential's (sequential runs one stage at a time, so "
              f"contention never changes it); the paper reports {PAPER_RANGE[0]}-{PAPER_RANGE[1]}x (measured, "
              f"its own testbed). All other numbers are simulated.")
        print(f"wrote {figure}")
    return 0


# -------------------------------------------------------------------------------- command


def run(args: argparse.Namespace) -> int:
    from mspipe_bench.trainers import simulator

    trainers = _trainers(args.trainers)
    for name, v in (("--iterations", args.iterations), ("--batch-size", args.batch_size),
                    ("--staleness", args.staleness), ("--max-staleness", args.max_staleness),
                    ("--prefetch", args.prefetch)):
        if v is not None and v < 1:
            raise UserError(f"{name} must be >= 1, got {v}")
    cli_contention = simulator.parse_contention(args.contention) if args.contention is not None else None
    factors = simulator.parse_factors(args.sweep_contention) if args.sweep_contention is not None else None
    figure = _figure_path(args)
    inputs = _inputs(args)
    if args.nprocs != 1 or args.comm is not None:
        inputs = [_data_parallel(inp, args) for inp in inputs]

    if factors is not None:
        return _sweep(inputs, args, trainers, factors, cli_contention, figure)

    objs = []
    for n, inp in enumerate(inputs):
        contention = cli_contention if cli_contention is not None else inp.contention
        origin = "--contention" if cli_contention is not None else "from the profile"
        obj, _ = _one(inp, args, trainers, contention)
        objs.append(obj)
        if args.json:
            continue
        if n:
            print()
        if inp.file_lines:
            print(f"PROFILE {inp.desc['profile']}")
            print("\n".join(inp.file_lines))
            print()
        print(_header(obj, inp, _contention_text(contention, origin)))
        print()
        print(_table(obj, inp.per_epoch_sums))
    if args.json:
        print(json.dumps(objs if args.profile is not None else objs[0], indent=2))
    else:
        print(f"\n{EPILOG}")
    return 0
