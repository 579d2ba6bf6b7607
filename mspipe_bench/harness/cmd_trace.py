"""``mspipe-bench trace``: export a run's measured stage timeline as a Chrome trace (Perfetto)."""

from __future__ import annotations

from pathlib import Path


def _cmd(args) -> int:
    from mspipe_bench.harness.run import check_output_file
    from mspipe_bench.harness.trace import export_trace

    name = Path(args.results[0]).name.removesuffix(".gz").removesuffix(".json")
    out = check_output_file(args.out or f"{name}.trace.json", "--out")
    path, n = export_trace(args.results, out)
    print(f"{n} stage events of {len(args.results)} run(s) written to {path} "
          "(open in https://ui.perfetto.dev or chrome://tracing)")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "trace",
        help="export a run's stage timeline as a Chrome trace (Perfetto / chrome://tracing)",
        description="Export the measured timeline of one or more result files in Chrome trace-event format: "
        "one process per run, one track per thread, one event per stage and iteration (named like T#12, "
        "args: phase, epoch, iteration, k, observed staleness), plus counter tracks for k and the observed "
        "staleness. Open the file in https://ui.perfetto.dev or chrome://tracing.",
    )
    p.add_argument("results", nargs="+", metavar="RESULT.json",
                   help="result file(s) written by run / sweep / bench (.json or .json.gz)")
    p.add_argument("-o", "--out", default=None,
                   help="trace file to write (default: <first result's name>.trace.json in the current directory, "
                   "not next to the results, so result directories hold result files only)")
    p.set_defaults(func=_cmd)
