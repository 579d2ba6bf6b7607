"""One benchmark run: load the dataset, assemble the model from its config, train under a trainer, and write
one JSON result file (atomically: temp file, then rename).

Result schema (``schema: mspipe-bench/result/1``): ``config`` (what was run), ``env`` (where), ``status``
(``complete`` / ``interrupted``), ``metrics``, ``epochs``, ``stages`` (seconds per stage over the training
iterations), ``iterations`` (per training iteration: ``epoch, i, k, observed_staleness, mitigated_nodes,
mitigation_s, bubble_s, loss, durations{S,F,M,T,U}``), ``timeline`` (every stage of every iteration, training
and evaluation: ``phase, epoch, i, stage, start, end, thread``, seconds from the run's start) and
``dataset`` (the dataset summary).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCHEMA = "mspipe-bench/result/1"


@dataclass
class RunSpec:
    model: str = "tgn"
    dataset: str = "synthetic"
    trainer: str = "sequential"
    epochs: int | None = None  # None: the model config's train.epochs
    seed: int = 0
    batch_size: int | None = None  # None: the model config's train.batch_size
    staleness: int = 2  # fixed-staleness K
    max_staleness: int = 4  # mspipe cap
    prefetch: int = 2
    mitigation: bool | None = None  # None: on for mspipe, off otherwise
    mitigation_quantile: float = 0.01
    mitigation_neighbors: int = 10
    mitigation_lambda: float = 0.1
    overrides: list[str] = field(default_factory=list)  # model config overrides section.key=value
    max_iterations: int | None = None  # train only the first N iterations of each epoch (quick comparisons)
    negatives: str = "all"  # all: every node (TGL); dst: the destination side of a bipartite graph
    val_ratio: float = 0.15
    test_ratio: float = 0.15
    # torch intra-op threads, the same for every trainer (so presample stays bit-identical to sequential).
    # 1 by default: the pipelined trainers' sampler/loader/updater threads use the second core, and on a
    # shared 2-core machine a 2-thread OpenMP team spin-waits whenever another thread holds a core.
    torch_threads: int = 1

    def resolved(self) -> "RunSpec":
        spec = RunSpec(**asdict(self))
        if spec.mitigation is None:
            spec.mitigation = spec.trainer == "mspipe"
        # fields a trainer does not use are normalised, so they change neither the key nor the label
        if spec.trainer != "fixed-staleness":
            spec.staleness = 1
        if spec.trainer != "mspipe":
            spec.max_staleness = RunSpec.max_staleness
        return spec

    def key(self) -> str:
        """Identity of a run (for resuming sweeps and matching baselines): a hash of the resolved spec."""
        d = asdict(self.resolved())
        blob = json.dumps(d, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    def variant(self) -> str:
        r = self.resolved()
        return variant_name(r.trainer, r.staleness, r.mitigation, r.max_staleness, r.prefetch, r.negatives,
                            r.torch_threads)

    def label(self) -> str:
        r = self.resolved()
        name = self.variant()
        ds = Path(r.dataset).name if r.dataset != "synthetic" else "synthetic"
        ds = ds.split(":")[0]
        return f"{r.model}_{ds}_{name}_s{r.seed}"


def variant_name(trainer: str, staleness=None, mitigation=None, max_staleness=None, prefetch=None,
                 negatives=None, torch_threads=None) -> str:
    """The trainer plus whatever makes it a different schedule or numerics than the defaults:
    ``fixed-staleness-k3``, ``mspipe-kmax3``, ``presample-d3`` (prefetch depth), ``mspipe-nomit`` /
    ``sequential-mit`` (mitigation off for mspipe / on for another trainer), ``-negdst`` (negatives other than
    ``all``), ``-t2`` (torch threads other than 1). ``None`` means "not recorded": the default."""
    name = trainer
    if trainer == "fixed-staleness":
        name += f"-k{staleness}"
    if trainer == "mspipe" and max_staleness not in (None, RunSpec.max_staleness):
        name += f"-kmax{max_staleness}"
    if trainer != "sequential" and prefetch not in (None, RunSpec.prefetch):
        name += f"-d{prefetch}"
    if trainer == "mspipe" and mitigation is not None and not mitigation:
        name += "-nomit"
    elif trainer != "mspipe" and mitigation:
        name += "-mit"
    if negatives not in (None, RunSpec.negatives):
        name += f"-neg{negatives}"
    if torch_threads not in (None, RunSpec.torch_threads):
        name += f"-t{torch_threads}"
    return name


# glibc malloc: keep freed memory in the process instead of returning it to the kernel. By default a large
# tensor is an mmap of its own until glibc's dynamic threshold has risen past its size, and the heap top is
# trimmed after frees; the next iteration then page-faults the same memory in again. Measured on
# TGN/Wikipedia, B=600 (benchmarks/allocator_faults.py): 1,900-3,000 minor faults per sequential iteration
# by default, ~300 tuned, the iteration 1.08x faster; JODIE/APAN sequential unchanged. Pipelined efficiency
# rose for all three models (benchmarks/paired_ratios.py with and without --default-allocator; README,
# "Allocator").
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


def write_json_atomic(path: str | Path, data: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; result files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def run(spec: RunSpec, progress: bool = False, hook=None) -> dict:
    """Run one experiment and return its result dict (not written). ``hook`` is the test-only stage hook."""
    return run_context(spec, progress, hook)[1]


def run_context(spec: RunSpec, progress: bool = False, hook=None):
    """:func:`run`, also returning the trained :class:`StageContext` (model, optimiser, memory) for checks."""
    import torch

    from mspipe_bench.data.loaders import load_dataset
    from mspipe_bench.models.config import load_config
    from mspipe_bench.models.mitigation import MitigationConfig
    from mspipe_bench.stages import make_context
    from mspipe_bench.trainers.rules import make_schedule
    from mspipe_bench.trainers.train import train

    spec = spec.resolved()
    torch.set_num_threads(spec.torch_threads)
    tune_allocator()
    overrides = list(spec.overrides)
    if spec.batch_size is not None:
        overrides.append(f"train.batch_size={spec.batch_size}")
    if spec.epochs is not None:
        overrides.append(f"train.epochs={spec.epochs}")
    cfg = load_config(spec.model, overrides)
    schedule = make_schedule(spec.trainer, spec.staleness, spec.max_staleness, spec.prefetch)
    mitigation = MitigationConfig(
        enabled=bool(spec.mitigation),
        quantile=spec.mitigation_quantile,
        neighbors=spec.mitigation_neighbors,
        lam=spec.mitigation_lambda,
    )
    graph = load_dataset(spec.dataset)
    split = graph.split(spec.val_ratio, spec.test_ratio)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    ctx = make_context(graph, cfg, seed=spec.seed, mitigation=mitigation, negatives=spec.negatives)
    ctx.hook = hook
    res = train(ctx, schedule, split, cfg.train.epochs, progress=progress, max_iterations=spec.max_iterations)
    config = asdict(spec)
    config.update(batch_size=cfg.train.batch_size, epochs=cfg.train.epochs, key=spec.key(), label=spec.label(),
                  model_config=cfg.to_dict())
    metrics = dict(res.metrics)
    stages = metrics.pop("stage_seconds")
    return ctx, {
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


def default_result_path(spec: RunSpec, results_dir: str | Path = "results") -> Path:
    return Path(results_dir) / f"{spec.label()}_{spec.key()}.json"
