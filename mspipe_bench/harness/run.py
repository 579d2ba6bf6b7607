"""One benchmark run: the run specification (:class:`RunSpec`, a pydantic model that also drives the
command-line options of ``run``/``bench``/``paper`` and the sweep-spec keys), loading the dataset, assembling
the model from its config, training under a trainer, and writing one JSON result file (atomically: temp file,
then rename; plain JSON, or gzip when the name ends in ``.json.gz`` -- runs write plain JSON, the committed
reference results under ``results/reference/`` are gzipped where large, and every reader takes both).

Result schema (``schema: mspipe-bench/result/1``): ``config`` (what was run: the resolved :class:`RunSpec`
fields, with the batch size and epochs the model config gave, ``key``, ``label`` and ``model_config``),
``env`` (where), ``status`` (``complete`` / ``interrupted``), ``metrics``, ``epochs``, ``stages`` (seconds
per stage over the training iterations), ``iterations`` (per training iteration: ``epoch, i, k,
observed_staleness, mitigated_nodes, mitigation_s, bubble_s, loss, durations{S,F,M,T,U}``), ``timeline``
(every stage of every iteration, training and evaluation: ``phase, epoch, i, stage, start, end, thread``,
seconds from the run's start) and ``dataset`` (the dataset summary).
"""

from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mspipe_bench.errors import UserError
from mspipe_bench.trainers.rules import TRAINERS

SCHEMA = "mspipe-bench/result/1"


def _opt(description: str, cli: str | None = None, metavar: str | None = None, **constraints) -> Any:
    """A RunSpec field's constraints and its command-line face (option name when not ``--<field-name>``,
    metavar); ``description`` is the option's help text."""
    extra = {k: v for k, v in (("cli", cli), ("metavar", metavar)) if v is not None}
    return Field(description=description, json_schema_extra=extra or None, **constraints)


class RunSpec(BaseModel):
    """What one run is: every field is a ``run`` option (see :func:`cli_option`) and a sweep-spec key.
    Invalid values raise ``pydantic.ValidationError`` (:func:`spec_from_options` turns it into a
    :class:`UserError` naming the option)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = _opt("model preset (e.g. tgn, jodie, apan) or a model YAML file", default="tgn", min_length=1)
    dataset: str = _opt("dataset path (TGL folder, JODIE/DyGLib CSV, SNAP text, .npz), a fetched dataset's "
                        "name (wikipedia, reddit, mooc, lastfm, gdelt; see 'datasets fetch') or "
                        "'synthetic[:opts]'",
                        default="synthetic", min_length=1)
    trainer: Literal[TRAINERS] = _opt("schedule", default="sequential")
    epochs: int | None = _opt("epochs (default: the model config's train.epochs)", metavar="N", default=None, ge=1)
    seed: int = _opt("seed for parameters, sampling, negatives, dropout", metavar="S", default=0, ge=0)
    batch_size: int | None = _opt("events per batch (default: the model config's, 600)", metavar="B", default=None,
                                  ge=1)
    staleness: int = _opt("fixed-staleness bound K", metavar="K", default=2, ge=1)
    max_staleness: int = _opt("mspipe's cap on k(i)", metavar="K", default=4, ge=1)
    prefetch: int = _opt("run-ahead depth of S/F", metavar="D", default=2, ge=1)
    mitigation: bool | None = _opt("turn staleness mitigation on (default: on for mspipe only)", default=None)
    mitigation_quantile: float = _opt("fraction of fetched nodes treated as stalest", metavar="Q", default=0.01,
                                      gt=0, le=1)
    mitigation_neighbors: int = _opt("similar nodes averaged, n", metavar="N", default=10, ge=1)
    mitigation_lambda: float = _opt("mitigation λ, in [0, 1]", metavar="L", default=0.1, ge=0, le=1)
    overrides: list[str] = _opt("override a model-config field, e.g. --set gnn.heads=4 (repeatable)",
                                cli="--set", metavar="SECTION.KEY=VALUE", default_factory=list)
    max_iterations: int | None = _opt("train only the first N iterations of each epoch (quick comparisons)",
                                      metavar="N", default=None, ge=1)
    negatives: Literal["all", "dst"] = _opt(
        "negative destinations: all = every node (TGL's convention); dst = the destination side of a bipartite "
        "graph (DyGLib / TGN paper; harder)", default="all")
    val_ratio: float = _opt("validation share of the events (datasets without ext_roll)", metavar="R", default=0.15,
                             ge=0, lt=1)
    test_ratio: float = _opt("test share of the events (datasets without ext_roll)", metavar="R", default=0.15,
                              ge=0, lt=1)
    # 1 by default: the pipelined trainers' sampler/loader/updater threads use the second core, and on a
    # shared 2-core machine a 2-thread OpenMP team spin-waits whenever another thread holds a core.
    torch_threads: int = _opt("torch intra-op threads, the same for every trainer (so presample stays "
                              "bit-identical to sequential; docs/performance.md, threads)", cli="--threads", metavar="N", default=1,
                              ge=1)
    nprocs: int = _opt("data-parallel processes (ranks) on this machine, each with --threads intra-op threads; "
                       "--batch-size stays the global batch (docs/design.md §7). Under torchrun the world "
                       "size comes from torchrun", metavar="W", default=1, ge=1)
    edge_features: str | None = _opt("edge features: none, or random:D[:SEED] = seeded random D-dim features "
                                     "(TGL's convention for MOOC/LASTFM; default: the dataset's own)",
                                     metavar="SPEC", default=None)
    node_features: str | None = _opt("node features: none, or random:D[:SEED] (default: the dataset's own)",
                                     metavar="SPEC", default=None)

    @field_validator("edge_features", "node_features")
    @classmethod
    def _feature_spec(cls, value: str | None) -> str | None:
        from mspipe_bench.data.features import FEATURE_SPEC_HELP, parse_spec

        try:
            parse_spec(value)
        except ValueError:
            raise ValueError(f"expected {FEATURE_SPEC_HELP.split(' (')[0]}") from None
        return value

    @model_validator(mode="after")
    def _split_leaves_training_events(self) -> "RunSpec":
        if self.val_ratio + self.test_ratio >= 1:
            raise ValueError(f"val_ratio + test_ratio must be < 1, got {self.val_ratio} + {self.test_ratio}")
        return self

    def resolved(self) -> "RunSpec":
        update: dict[str, Any] = {}
        if self.mitigation is None:
            update["mitigation"] = self.trainer == "mspipe"
        # fields a trainer does not use are normalised, so they change neither the key nor the label
        if self.trainer != "fixed-staleness":
            update["staleness"] = 1
        if self.trainer != "mspipe":
            update["max_staleness"] = default("max_staleness")
        return self.model_copy(update=update, deep=True)

    def key(self) -> str:
        """Identity of a run (for resuming sweeps and matching baselines): a hash of the resolved spec."""
        # fields added later count only when set, so the keys of earlier runs stay what they were
        dump = {k: v for k, v in self.resolved().model_dump().items()
                if not (k in _KEY_IF_SET and v in (None, default(k)))}
        blob = json.dumps(dump, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    def variant(self) -> str:
        r = self.resolved()
        return variant_name(r.trainer, r.staleness, r.mitigation, r.max_staleness, r.prefetch, r.negatives,
                            r.torch_threads, r.nprocs)

    def label(self) -> str:
        r = self.resolved()
        name = self.variant()
        ds = Path(r.dataset).name if r.dataset != "synthetic" else "synthetic"
        ds = ds.split(":")[0]
        feats = "".join(f"_{p}{v.replace(':', '')}" for p, v in (("ef", r.edge_features), ("nf", r.node_features))
                        if v is not None)
        return f"{r.model}_{ds}{feats}_{name}_s{r.seed}"


_KEY_IF_SET = ("edge_features", "node_features", "nprocs")


def default(name: str) -> Any:
    """The default value of the RunSpec field ``name``."""
    return RunSpec.model_fields[name].get_default(call_default_factory=True)


def cli_option(name: str) -> str:
    """The command-line option of the RunSpec field ``name`` (``--threads`` for ``torch_threads``)."""
    extra = RunSpec.model_fields[name].json_schema_extra or {}
    return extra.get("cli") or "--" + name.replace("_", "-")


def validation_message(exc: ValidationError, where: Callable[[tuple], str]) -> str:
    """One line for the first error of ``exc``: ``where(loc)`` names the option or file and key."""
    err = exc.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{where(err['loc'])}: unknown key"
    if err["type"] in ("model_type", "model_attributes_type") or not err["loc"]:
        return f"{where(err['loc'])}: {msg}"
    return f"{where(err['loc'])}: {msg[:1].lower() + msg[1:]}, got {err['input']!r}"


def spec_from_options(values: dict[str, Any]) -> RunSpec:
    """A RunSpec from command-line values (keyed by field name); a bad value is a :class:`UserError` naming
    its option."""
    try:
        return RunSpec(**values)
    except ValidationError as exc:
        def where(loc: tuple) -> str:
            return cli_option(str(loc[0])) if loc else "options"

        raise UserError(validation_message(exc, where)) from None


def variant_name(trainer: str, staleness=None, mitigation=None, max_staleness=None, prefetch=None,
                 negatives=None, torch_threads=None, nprocs=None) -> str:
    """The trainer plus whatever makes it a different schedule or numerics than the defaults:
    ``fixed-staleness-k3``, ``mspipe-kmax3``, ``presample-d3`` (prefetch depth), ``mspipe-nomit`` /
    ``sequential-mit`` (mitigation off for mspipe / on for another trainer), ``-negdst`` (negatives other than
    ``all``), ``-t2`` (torch threads other than 1), ``-w2`` (data-parallel processes other than 1). ``None``
    means "not recorded": the default."""
    name = trainer
    if trainer == "fixed-staleness":
        name += f"-k{staleness}"
    if trainer == "mspipe" and max_staleness not in (None, default("max_staleness")):
        name += f"-kmax{max_staleness}"
    if trainer != "sequential" and prefetch not in (None, default("prefetch")):
        name += f"-d{prefetch}"
    if trainer == "mspipe" and mitigation is not None and not mitigation:
        name += "-nomit"
    elif trainer != "mspipe" and mitigation:
        name += "-mit"
    if negatives not in (None, default("negatives")):
        name += f"-neg{negatives}"
    if torch_threads not in (None, default("torch_threads")):
        name += f"-t{torch_threads}"
    if nprocs not in (None, default("nprocs")):
        name += f"-w{nprocs}"
    return name


# glibc malloc: keep freed memory in the process instead of returning it to the kernel. By default a large
# tensor is an mmap of its own until glibc's dynamic threshold has risen past its size, and the heap top is
# trimmed after frees; the next iteration then page-faults the same memory in again
# (benchmarks/allocator_faults.py measures it; docs/performance.md, "Allocator").
MALLOC_MMAP_THRESHOLD = 1 << 30
MALLOC_TRIM_THRESHOLD = 1 << 30  # mallopt takes a C int
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers (malloc.h)
_allocator = "default"  # what tune_allocator did in this process (reported in the result's env)


def tune_allocator() -> str:
    """Make glibc reuse freed tensor memory instead of unmapping it (see the constants above). Leaves the
    allocator alone where the user chose its settings (``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``
    in the environment) or where the C library is not glibc. Returns what was done (also in ``environment()``)."""
    import ctypes
    import ctypes.util

    global _allocator
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        _allocator = "glibc settings from the environment"
    elif platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        _allocator = "default (not glibc)"
    else:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD) == 1 and libc.mallopt(
            _M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD) == 1
        _allocator = (f"glibc mmap_threshold={MALLOC_MMAP_THRESHOLD} trim_threshold={MALLOC_TRIM_THRESHOLD}"
                      if ok else "default (mallopt refused)")
    return _allocator


def environment() -> dict:
    import dgl
    import numpy
    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    commit = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "dgl": dgl.__version__,
        "numpy": numpy.__version__,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "allocator": _allocator,
        "platform": platform.platform(),
        "hostname": platform.node(),
        "git_commit": commit,
    }


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temp file in the same directory and a rename, so a reader never
    sees half a file; gzip-compressed (reproducibly: no name or time in the header) when the name ends in
    ``.gz``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if path.name.endswith(".gz"):
                with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
                    gz.write(text.encode())
            else:
                fh.write(text.encode())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; result files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, data: dict) -> Path:
    """:func:`write_text_atomic` of ``data`` as indented JSON (``.json`` or ``.json.gz``)."""
    return write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe_writable(directory: Path, what: str) -> None:
    """Create ``directory`` (and its parents) and a throwaway file in it: the real test, also for root."""
    base = _nearest_existing(directory)
    if base.exists() and not base.is_dir():
        raise UserError(f"{what}: {base} is a file, not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{what}: cannot write in {directory}: {exc.strerror or exc}") from None


def check_output_file(path: str | Path, what: str) -> Path:
    """Check, before any work, that ``path`` can be written as a file: it is not a directory and its
    directory exists or can be created and is writable. ``what`` names the option (``--out``)."""
    text, path = str(path), Path(path)
    if path.is_dir() or not path.name or text.endswith(os.sep):
        raise UserError(f"{what}: {text!r} is a directory; give a file name (e.g. {path / 'result.json'})")
    _probe_writable(path.parent, f"{what} {path}")
    return path


def check_output_dir(path: str | Path, what: str) -> Path:
    """Check, before any work, that ``path`` is a directory or can be created as one, and is writable
    (it is created). ``what`` names the option (``--results-dir``)."""
    path = Path(path)
    _probe_writable(path, f"{what} {path}")
    return path


def config_overrides(spec: RunSpec) -> list[str]:
    """The model-config overrides of a run: its own, then its batch size and epochs when given."""
    overrides = list(spec.overrides)
    if spec.batch_size is not None:
        overrides.append(f"train.batch_size={spec.batch_size}")
    if spec.epochs is not None:
        overrides.append(f"train.epochs={spec.epochs}")
    return overrides


def check_inputs(specs: Iterable[RunSpec]) -> None:
    """Before any run starts: every model config loads with its overrides and every dataset that is a path
    exists, so a typo fails at once (:class:`UserError` / FileNotFoundError naming it) instead of run after
    run."""
    from mspipe_bench.data.fetch import resolve as resolve_dataset
    from mspipe_bench.data.loaders import REGISTRY
    from mspipe_bench.models.config import load_config

    configs, datasets = set(), set()
    for spec in specs:
        key = (spec.model, tuple(config_overrides(spec)))
        if key not in configs:
            configs.add(key)
            load_config(spec.model, list(key[1]))
        if spec.dataset not in datasets:
            datasets.add(spec.dataset)
            generated = any(f.by_spec and f.by_spec(spec.dataset) for f in REGISTRY.values())
            if not generated and not Path(resolve_dataset(spec.dataset)).expanduser().exists():
                raise FileNotFoundError(f"dataset {spec.dataset!r}: no such file or directory")


def run(spec: RunSpec, progress: bool = False, hook=None, checkpoints=None) -> dict:
    """Run one experiment and return its result dict (not written). ``hook`` is the test-only stage hook."""
    return run_context(spec, progress, hook, checkpoints=checkpoints)[1]


def run_context(spec: RunSpec, progress: bool = False, hook=None, dist=None, checkpoints=None):
    """:func:`run`, also returning the trained :class:`StageContext` (model, optimiser, memory) for checks.
    ``dist``: this process's :class:`~mspipe_bench.trainers.distributed.DistRank` in a data-parallel run
    (``harness/launch.py``); rank 0's result then holds every rank's stage totals and timeline.
    ``checkpoints``: a :class:`~mspipe_bench.trainers.checkpoint.Checkpointer` (``run --checkpoint-dir`` /
    ``--resume``); not part of the spec or its key: where a run is saved does not change what is measured."""
    import torch

    from mspipe_bench.data import features
    from mspipe_bench.data.loaders import load_dataset
    from mspipe_bench.models.config import load_config
    from mspipe_bench.models.mitigation import MitigationConfig
    from mspipe_bench.stages import make_context
    from mspipe_bench.trainers.rules import make_schedule
    from mspipe_bench.trainers.train import train

    spec = spec.resolved()
    torch.set_num_threads(spec.torch_threads)
    tune_allocator()
    cfg = load_config(spec.model, config_overrides(spec))
    mitigation = MitigationConfig(
        enabled=bool(spec.mitigation),
        quantile=spec.mitigation_quantile,
        neighbors=spec.mitigation_neighbors,
        lam=spec.mitigation_lambda,
    )
    graph = load_dataset(spec.dataset)
    features.apply(graph, spec.edge_features, spec.node_features)
    split = graph.split(spec.val_ratio, spec.test_ratio)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    ctx = make_context(graph, cfg, seed=spec.seed, mitigation=mitigation, negatives=spec.negatives)
    ctx.hook = hook
    schedule = make_schedule(spec.trainer, spec.staleness, spec.max_staleness, spec.prefetch,
                             delay_fetch=ctx.model.has_memory)
    if dist is not None:
        if checkpoints is not None:
            raise UserError("--checkpoint-dir/--resume: not supported in data-parallel runs (--nprocs > 1)")
        dist.attach(ctx)
    if checkpoints is not None:
        checkpoints.bind(spec, cfg, graph)  # a resumed checkpoint of another run is refused here
    res = train(ctx, schedule, split, cfg.train.epochs, progress=progress, max_iterations=spec.max_iterations,
                checkpoints=checkpoints)
    config = spec.model_dump()
    config.update(batch_size=cfg.train.batch_size, epochs=cfg.train.epochs, key=spec.key(), label=spec.label(),
                  model_config=cfg.to_dict(), world_size=1 if dist is None else dist.world_size)
    metrics = dict(res.metrics)
    stages = metrics.pop("stage_seconds")
    result = {
        "schema": SCHEMA,
        "status": "interrupted" if res.interrupted else "complete",
        "started_at": started,
        "wall_s": time.perf_counter() - t0,
        "config": config,
        "env": environment(),
        "dataset": graph.summary(spec.val_ratio, spec.test_ratio),
        "metrics": metrics,
        "epochs": res.epochs,
        "stages": stages,
        "iterations": [r.to_dict() for r in res.iterations],
        "timeline": {
            "columns": ["phase", "epoch", "i", "stage", "start", "end", "thread"],
            "rows": [list(r) for r in ctx.timeline.rows],
        },
    }
    if checkpoints is not None:  # where it was saved and resumed from (timings of a resumed run are its own)
        result["checkpoint"] = checkpoints.record()
    if dist is not None:
        dist.complete_result(result, res.iterations, ctx.timeline.rows, res.interrupted)
    return ctx, result


def default_result_path(spec: RunSpec, results_dir: str | Path) -> Path:
    """``RESULTS_DIR/<label>_<key>.json``."""
    return Path(results_dir) / f"{spec.label()}_{spec.key()}.json"
