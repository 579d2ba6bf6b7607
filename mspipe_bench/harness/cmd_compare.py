"""``mspipe-bench compare``: check a results directory against a baseline (exit 1 on a regression)."""

from __future__ import annotations

import sys


def _cmd(args) -> int:
    from mspipe_bench.harness.compare import compare_dirs, find_tolerances, format_comparison, load_tolerances

    tol_path = args.tolerances or find_tolerances(args.baseline)
    tol = load_tolerances(tol_path)
    print(f"results {args.results} vs baseline {args.baseline}; tolerances from "
          f"{tol_path if tol_path else 'built-in defaults'}")
    comp = compare_dirs(args.results, args.baseline, tol, strict=args.strict,
                        on_skip=lambda msg: print(f"warning: {msg}", file=sys.stderr))
    print(format_comparison(comp))
    return 1 if comp.failed else 0


def register(sub) -> None:
    from mspipe_bench.harness.compare import tolerances_help

    tol_text = tolerances_help().replace("%", "%%")
    p = sub.add_parser(
        "compare",
        help="compare results with a baseline; exit 1 on a regression",
        description="Match runs by configuration (model, dataset, trainer, staleness, mitigation, seed, epochs, "
        "batch size, max iterations) and compare test AP, the speedup over the same-seed sequential run of "
        "the same directory, and the mean observed staleness (plus the bound invariant). Absolute times are "
        "never compared. Exit status: 0 no regression, 1 a regression, 2 bad input. Tolerances: " + tol_text,
    )
    p.add_argument("results", metavar="RESULTS_DIR", help="directory (or file) of current result files")
    p.add_argument("--baseline", required=True, metavar="PATH", help="directory of baseline result files")
    p.add_argument("--tolerances", default=None, metavar="FILE",
                   help="tolerances YAML (default: tolerances.yaml next to the baseline or in its parent, "
                   "else baselines/tolerances.yaml, else built-in defaults)")
    p.add_argument("--strict", action="store_true", help="baseline runs missing from the results are regressions")
    p.set_defaults(func=_cmd)
