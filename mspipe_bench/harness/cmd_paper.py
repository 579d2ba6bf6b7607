"""``mspipe-bench paper``: regenerate the whole figure set.

TGN, JODIE and APAN x the datasets (default: the embedded synthetic dataset plus every folder with an
``events.npz`` under ``../shared/datasets/``) x the trainers ``sequential``, ``presample``,
``fixed-staleness`` with K = 1, 2, 3, 4 and ``mspipe`` with and without staleness mitigation, for each seed;
interleaved and resumable like ``sweep`` (one result file per run in ``--results-dir``), then every figure
into ``--plots-dir``. This is a long job on real datasets: use ``--dry-run`` to see the plan and
``--max-iterations`` / ``--epochs`` to bound it.
"""

from __future__ import annotations

import os
from pathlib import Path

PAPER_MODELS = ("tgn", "jodie", "apan")
PAPER_TRAINERS = (
    "sequential",
    "presample",
    {"trainer": "fixed-staleness", "staleness": [1, 2, 3, 4]},
    {"trainer": "mspipe", "mitigation": [True, False]},
)
SHARED_DATASETS = Path("..") / "shared" / "datasets"


def shared_dataset_root() -> Path | None:
    """``../shared/datasets`` relative to the current directory, else relative to the repository root."""
    repo = Path(__file__).resolve().parents[2]
    for cand in (SHARED_DATASETS, repo / SHARED_DATASETS):
        if cand.is_dir():
            return cand
    return None


def discover_datasets() -> list[str]:
    """``synthetic`` plus every ``../shared/datasets/<name>/`` holding ``events.npz`` (sorted by name)."""
    out = ["synthetic"]
    root = shared_dataset_root()
    if root is not None:
        for d in sorted(root.iterdir()):
            if d.is_dir() and (d / "events.npz").is_file():
                out.append(_path_text(d))
    return out


def _path_text(p: Path) -> str:
    """A stable spelling for a dataset path (it is part of the run key): relative to the current directory
    when below or beside it, else absolute."""
    try:
        return os.path.relpath(p)
    except ValueError:  # pragma: no cover - other drive on Windows
        return str(p.resolve())


def resolve_dataset(name: str) -> str:
    """A dataset argument: ``synthetic[:opts]``, an existing path, or the name of a shared dataset folder."""
    if name.startswith("synthetic") or Path(name).exists():
        return name
    root = shared_dataset_root()
    if root is not None and (root / name).is_dir():
        return _path_text(root / name)
    raise ValueError(f"--datasets: {name!r} is neither 'synthetic', an existing path, nor a folder of "
                     f"{root or SHARED_DATASETS}")


def paper_spec(args) -> dict:
    from mspipe_bench.harness.cmd_bench import _seeds

    datasets = ([resolve_dataset(d.strip()) for d in args.datasets.split(",") if d.strip()]
                if args.datasets else discover_datasets())
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    spec = {
        "models": models,
        "datasets": datasets,
        "trainers": [dict(t) if isinstance(t, dict) else t for t in PAPER_TRAINERS],
        "seeds": _seeds(args.seeds),
        "epochs": args.epochs,
    }
    if args.max_iterations is not None:
        spec["max_iterations"] = args.max_iterations
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    spec["torch_threads"] = args.threads
    return spec


def _cmd(args) -> int:
    from mspipe_bench.harness import sweep
    from mspipe_bench.harness.cmd_bench import run_and_report

    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    runs = sweep.expand(paper_spec(args), "paper")
    return run_and_report(runs, args, "paper")


def register(sub) -> None:
    p = sub.add_parser(
        "paper",
        help="regenerate the whole figure set (3 models x datasets x trainers, staleness sweep, ablation)",
        description="Run TGN, JODIE and APAN on the datasets (default: synthetic plus those under "
        "../shared/datasets/) under sequential, presample, fixed-staleness K=1..4 and mspipe with and "
        "without mitigation, interleaved and resumable like `sweep`, then draw every figure.",
    )
    p.add_argument("--datasets", default=None,
                   help="comma-separated datasets: 'synthetic[:opts]', paths, or names of folders under "
                   "../shared/datasets (default: synthetic plus every shared dataset)")
    p.add_argument("--models", default=",".join(PAPER_MODELS), help="comma-separated models (default: tgn,jodie,apan)")
    p.add_argument("--epochs", type=int, default=5, help="epochs per run (default: 5)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    p.add_argument("--max-iterations", type=int, default=None, help="cap iterations per epoch")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads per run, the same for every trainer (default: 1)")
    p.add_argument("--results-dir", default="results/paper", help="result files (default: results/paper)")
    p.add_argument("--plots-dir", default="plots/paper", help="figures (default: plots/paper)")
    p.add_argument("--jobs", type=int, default=1, help="concurrent runs (default 1; more makes timings compete)")
    p.add_argument("--fresh", action="store_true", help="rerun runs that already have a complete result")
    p.add_argument("--no-warmup", action="store_true", help="skip the throwaway warm-up run")
    p.add_argument("--no-plots", action="store_true", help="do not draw figures")
    p.add_argument("--dry-run", action="store_true", help="list the runs, run nothing")
    p.set_defaults(func=_cmd)
