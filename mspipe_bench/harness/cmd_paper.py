"""``mspipe-bench paper``: regenerate the whole figure set.

TGN, JODIE and APAN x the datasets (default: the embedded synthetic dataset plus every folder with an
``events.npz`` under ``../shared/datasets/``) x every trainer -- ``fixed-staleness`` with K = 1, 2, 3, 4 and
``mspipe`` with and without staleness mitigation -- for each seed; interleaved like ``sweep``, into a run
directory of its own (a new ``runs/paper-<YYYYmmdd-HHMMSS>/`` unless ``--results-dir``; ``--resume DIR``
continues an interrupted invocation), then every figure into ``DIR/figures/`` (or ``--plots-dir``). This is a
long job on real datasets: use ``--dry-run`` to see the plan and ``--max-iterations`` / ``--epochs`` to
bound it.
"""

from __future__ import annotations

import os
from pathlib import Path

from mspipe_bench.errors import UserError

PAPER_MODELS = ("tgn", "jodie", "apan")  # the models of the MSPipe paper's figures
# the fields a trainer is swept over (the other trainers run once per model, dataset and seed)
PAPER_TRAINER_AXES = {"fixed-staleness": {"staleness": [1, 2, 3, 4]}, "mspipe": {"mitigation": [True, False]}}
PAPER_FIELDS = ("epochs", "max_iterations", "torch_threads")
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
    """A dataset argument: ``synthetic[:opts]``, an existing path, a dataset name known to ``datasets fetch``
    (resolved from the data cache by the run, like ``--dataset``), or the name of a shared dataset folder."""
    from mspipe_bench.data.fetch import KNOWN

    if name.startswith("synthetic") or Path(name).exists() or name in KNOWN:
        return name
    root = shared_dataset_root()
    if root is not None and (root / name).is_dir():
        return _path_text(root / name)
    raise UserError(f"--datasets: {name!r} is neither 'synthetic', an existing path, nor a folder of "
                     f"{root or SHARED_DATASETS}")


def paper_spec(args) -> dict:
    """The sweep spec of the options (each checked by RunSpec, errors naming the option)."""
    from mspipe_bench.harness.cmd_bench import _seeds
    from mspipe_bench.harness.cmd_run import spec_from_args
    from mspipe_bench.trainers.rules import TRAINERS

    base = spec_from_args(args)
    datasets = ([resolve_dataset(d.strip()) for d in args.datasets.split(",") if d.strip()]
                if args.datasets else discover_datasets())
    spec = {name: getattr(base, name) for name in PAPER_FIELDS}
    spec.update(
        models=[m.strip() for m in args.models.split(",") if m.strip()],
        datasets=datasets,
        trainers=[{"trainer": t, **PAPER_TRAINER_AXES.get(t, {})} for t in TRAINERS],
        seeds=_seeds(args.seeds),
    )
    return spec


def _cmd(args) -> int:
    from mspipe_bench.harness import sweep
    from mspipe_bench.harness.cmd_bench import run_and_report

    runs = sweep.expand(paper_spec(args), "paper",
                        options={"seeds": "--seeds", "models": "--models", "datasets": "--datasets"})
    return run_and_report(runs, args, "paper")


def register(sub) -> None:
    from mspipe_bench.harness.cmd_bench import add_run_dir_arguments
    from mspipe_bench.harness.cmd_run import add_run_arguments

    p = sub.add_parser(
        "paper",
        help="regenerate the whole figure set (3 models x datasets x trainers, staleness sweep, ablation)",
        description="Run TGN, JODIE and APAN on the datasets (default: synthetic plus those under "
        "../shared/datasets/) under sequential, presample, fixed-staleness K=1..4 and mspipe with and "
        "without mitigation, interleaved like `sweep`, into a new run directory (runs/paper-<YYYYmmdd-HHMMSS>/ "
        "by default; --resume DIR continues an interrupted invocation), then draw every figure.",
    )
    p.add_argument("--datasets", default=None,
                   help="comma-separated datasets: 'synthetic[:opts]', paths, names fetched with 'datasets "
                   "fetch', or names of folders under ../shared/datasets (default: synthetic plus every shared "
                   "dataset)")
    p.add_argument("--models", default=",".join(PAPER_MODELS),
                   help=f"comma-separated models (default: {','.join(PAPER_MODELS)})")
    add_run_arguments(p, PAPER_FIELDS, defaults={"epochs": 5})
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    add_run_dir_arguments(p, "paper")
    p.add_argument("--plots-dir", default=None, metavar="DIR", help="figures (default: RUN_DIR/figures)")
    p.add_argument("--jobs", type=int, default=1, help="concurrent runs (default 1; more makes timings compete)")
    p.add_argument("--no-plots", action="store_true", help="do not draw figures")
    p.set_defaults(func=_cmd)
