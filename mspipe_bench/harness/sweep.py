"""Sweeps: a grid of runs from a YAML spec, one result file per run, resumable and interleaved.

Spec keys (unknown keys are an error naming the key)::

    models: [tgn, jodie]            # or model: tgn            (presets or model YAML files)
    datasets: [synthetic]           # or dataset: ...          (anything `run --dataset` accepts)
    trainers:                       # or trainer: ...
      - sequential
      - presample
      - fixed-staleness             # expands over the top-level `staleness` list
      - mspipe                      # expands over the top-level `mitigation` list
      - {trainer: mspipe, mitigation: false, max_staleness: 3}   # an entry with its own fields
      - fixed-staleness: {staleness: [1, 2]}                       # same, short form
    staleness: [2, 3, 4]            # fixed-staleness bounds K (applies to fixed-staleness entries only)
    mitigation: [true, false]       # a list expands mspipe entries only; a scalar applies to every run
    seeds: [0, 1]                   # or seed: 0
    epochs: 3                       # a scalar, or a list (another grid axis)
    batch_size: 600
    max_iterations: null
    <any other RunSpec field>: value   # max_staleness, prefetch, mitigation_lambda, overrides: [...], ...
    warmup: true                    # sweep option: one throwaway tiny run before the first real run

Order (interleaving, design.md §4): for each seed, for each model x dataset (x other list-valued axes), every
trainer in turn -- so the trainers compared with each other ran close together under the same machine
conditions, and a killed sweep leaves complete comparisons behind.

Resuming: a run is identified by :meth:`RunSpec.key`; its result file ``RESULTS_DIR/<label>_<key>.json``
(:func:`~mspipe_bench.harness.run.default_result_path`) is written atomically when the run finishes. A rerun
skips every run whose file exists with ``status: complete`` (``fresh=True`` reruns everything); interrupted or
failed runs are run again.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from mspipe_bench.errors import UserError
from mspipe_bench.harness.run import RunSpec, default_result_path, write_json_atomic

TRAINER_NAMES = ("sequential", "presample", "fixed-staleness", "mspipe")
GRID_KEYS = {"models": "model", "datasets": "dataset", "trainers": "trainer", "seeds": "seed"}
SWEEP_OPTIONS = ("warmup",)
RUNSPEC_FIELDS = {f.name: f for f in dataclasses.fields(RunSpec)}
# top-level list-valued fields that expand only some trainers (the others keep the default)
TRAINER_AXES = {"staleness": ("fixed-staleness",), "mitigation": ("mspipe",)}
WARMUP_DATASET = "synthetic:nodes=200,events=3000"


class SpecError(UserError):
    """An invalid sweep spec (message names the file and the key)."""


# ------------------------------------------------------------------------------------------ validation
def _check_value(name: str, value: Any, where: str) -> Any:
    """Check ``value`` against the RunSpec field ``name``'s type; return it (normalised)."""
    kind = str(RUNSPEC_FIELDS[name].type).replace(" ", "")
    optional = kind.endswith("|None")
    base = kind.removesuffix("|None")
    if value is None:
        if optional:
            return None
        raise SpecError(f"{where}: key {name!r} may not be null")
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where}: key {name!r} must be an integer, got {value!r}")
        if name in ("epochs", "batch_size", "max_iterations", "staleness", "max_staleness", "prefetch",
                    "torch_threads", "mitigation_neighbors") and value < 1:
            raise SpecError(f"{where}: key {name!r} must be >= 1, got {value!r}")
        return value
    if base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{where}: key {name!r} must be a number, got {value!r}")
        return float(value)
    if base == "bool":
        if not isinstance(value, bool):
            raise SpecError(f"{where}: key {name!r} must be true or false, got {value!r}")
        return value
    if base == "str":
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise SpecError(f"{where}: key {name!r} must be a string, got {value!r}")
        value = str(value)
        if name == "trainer" and value not in TRAINER_NAMES:
            raise SpecError(f"{where}: trainer {value!r} is not one of {', '.join(TRAINER_NAMES)}")
        return value
    if base == "list[str]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SpecError(f"{where}: key {name!r} must be a list of strings, got {value!r}")
        return list(value)
    raise SpecError(f"{where}: key {name!r} has unsupported type {kind}")  # pragma: no cover


def _values(name: str, value: Any, where: str) -> list:
    """A field's value(s) as a non-empty list (lists are axes; ``overrides`` is itself a list)."""
    if name == "overrides":
        return [_check_value(name, value, where)]
    if isinstance(value, list):
        if not value:
            raise SpecError(f"{where}: key {name!r} is an empty list")
        return [_check_value(name, v, where) for v in value]
    return [_check_value(name, value, where)]


def _trainer_entries(raw: Any, where: str) -> list[tuple[str, dict[str, list]]]:
    """Trainer entries as (name, {field: [values]})."""
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise SpecError(f"{where}: key 'trainers' must be a non-empty list")
    out = []
    for n, entry in enumerate(raw):
        w = f"{where}: trainers[{n}]"
        if isinstance(entry, str):
            name, fields = entry, {}
        elif isinstance(entry, dict) and "trainer" in entry:
            fields = dict(entry)
            name = fields.pop("trainer")
        elif isinstance(entry, dict) and len(entry) == 1:
            (name, fields), = entry.items()
            fields = dict(fields or {})
        else:
            raise SpecError(f"{w}: expected a trainer name, {{trainer: NAME, ...}} or {{NAME: {{...}}}}, "
                            f"got {entry!r}")
        if not isinstance(fields, dict):
            raise SpecError(f"{w}: fields of trainer {name!r} must be a mapping")
        name = _check_value("trainer", name, w)
        checked = {}
        for key, value in fields.items():
            if key not in RUNSPEC_FIELDS or key in ("trainer", "model", "dataset", "seed"):
                allowed = sorted(set(RUNSPEC_FIELDS) - {"trainer", "model", "dataset", "seed"})
                raise SpecError(f"{w}: unknown key {key!r} (allowed: {', '.join(allowed)})")
            checked[key] = _values(key, value, w)
        out.append((name, checked))
    return out


def load_spec(path: str | Path) -> dict:
    """Read a sweep spec YAML into a dict (checked by :func:`expand`)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"sweep spec {p} not found")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise SpecError(f"{p}: a sweep spec must be a mapping of keys (models, datasets, trainers, ...)")
    return doc


def sweep_options(doc: dict) -> dict:
    """The sweep options (not RunSpec fields) of a spec, with defaults."""
    opts = {"warmup": True}
    for key in SWEEP_OPTIONS:
        if key in doc:
            if not isinstance(doc[key], bool):
                raise SpecError(f"key {key!r} must be true or false, got {doc[key]!r}")
            opts[key] = doc[key]
    return opts


def expand(doc: dict, where: str = "sweep spec") -> list[RunSpec]:
    """The runs of a spec, in interleaved order (see module docstring), duplicates (same key) removed."""
    allowed = set(GRID_KEYS) | set(RUNSPEC_FIELDS) | set(SWEEP_OPTIONS)
    for key in doc:
        if key not in allowed:
            raise SpecError(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")
    for plural, single in GRID_KEYS.items():
        if plural in doc and single in doc:
            raise SpecError(f"{where}: give either {plural!r} or {single!r}, not both")
    sweep_options({k: doc[k] for k in SWEEP_OPTIONS if k in doc})

    def axis(plural: str, default: Any) -> list:
        single = GRID_KEYS[plural]
        value = doc.get(plural, doc.get(single, default))
        key = plural if plural in doc else single
        if single == "trainer":
            return _trainer_entries(value, where)
        if isinstance(value, list):
            if not value:
                raise SpecError(f"{where}: key {key!r} is an empty list")
            return [_check_value(single, v, f"{where}: {key}") for v in value]
        return [_check_value(single, value, f"{where}: {key}")]

    models = axis("models", "tgn")
    datasets = axis("datasets", "synthetic")
    seeds = axis("seeds", 0)
    trainers = axis("trainers", list(TRAINER_NAMES))

    shared: dict[str, list] = {}
    for name in RUNSPEC_FIELDS:
        if name in doc and name not in GRID_KEYS.values():
            shared[name] = _values(name, doc[name], where)
    # `staleness` always applies to fixed-staleness entries only; `mitigation` as a list expands mspipe
    # entries only (as a scalar it applies to every run)
    trainer_axes = {}
    if "staleness" in shared:
        trainer_axes["staleness"] = shared.pop("staleness")
    if isinstance(doc.get("mitigation"), list):
        trainer_axes["mitigation"] = shared.pop("mitigation")
    axes = list(shared.items())
    combos = [dict(zip([k for k, _ in axes], vals)) for vals in itertools.product(*[v for _, v in axes])]

    runs: list[RunSpec] = []
    seen: set[str] = set()
    for seed in seeds:
        for model in models:
            for dataset in datasets:
                for combo in combos:
                    for name, fields in trainers:
                        own = {}
                        for k, vals in trainer_axes.items():
                            if name in TRAINER_AXES[k]:
                                own[k] = vals
                        own.update(fields)  # entry fields win over top-level ones
                        keys = list(own)
                        for vals in itertools.product(*[own[k] for k in keys]):
                            spec = RunSpec(model=model, dataset=dataset, trainer=name, seed=seed,
                                           **{**combo, **dict(zip(keys, vals))})
                            key = spec.key()
                            if key not in seen:
                                seen.add(key)
                                runs.append(spec)
    return runs


def load_runs(path: str | Path) -> tuple[list[RunSpec], dict]:
    """Runs and sweep options of a spec file (errors name the file)."""
    doc = load_spec(path)
    return expand(doc, str(path)), sweep_options(doc)


# ------------------------------------------------------------------------------------------- resuming
def existing_result(spec: RunSpec, results_dir: str | Path) -> Path | None:
    """The complete result file of ``spec`` in ``results_dir`` (matched by key) measured on this machine
    (``env.hostname``), or None. Results committed from another machine are redone, so the main job on a
    fresh clone measures the machine it runs on."""
    key = spec.key()
    d = Path(results_dir)
    if not d.is_dir():
        return None
    candidates = [default_result_path(spec, d)] + sorted(d.glob(f"*_{key}.json"))
    for p in dict.fromkeys(candidates):
        if not p.is_file():
            continue
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            warnings.warn(f"{p}: unreadable result file, the run will be redone", stacklevel=2)
            continue
        if (isinstance(data, dict) and data.get("status") == "complete"
                and data.get("config", {}).get("key") == key
                and data.get("env", {}).get("hostname", platform.node()) == platform.node()):
            return p
    return None


# -------------------------------------------------------------------------------------------- running
def run_one(spec: RunSpec, results_dir: str | Path, progress: bool = False) -> tuple[Path, dict]:
    """Run one spec and write its result atomically to its default path. An interrupted run is written
    (status ``interrupted``, so a resumed sweep redoes it) and then KeyboardInterrupt is raised."""
    from mspipe_bench.harness.run import run

    result = run(spec, progress=progress)
    path = write_json_atomic(default_result_path(spec, results_dir), result)
    if result["status"] != "complete":
        raise KeyboardInterrupt
    return path, result


def _run_one_in_worker(spec: RunSpec, results_dir: str) -> tuple[str, dict]:
    path, result = run_one(spec, results_dir)
    return str(path), {"metrics": result["metrics"], "status": result["status"]}


def warmup_run(model: str = "tgn", torch_threads: int | None = None) -> None:
    """One tiny throwaway run: pays the process's one-time costs (imports, kernel selection, allocator
    growth) so that the first measured run of a sweep is not penalised."""
    from mspipe_bench.harness.run import run

    extra = {} if torch_threads is None else {"torch_threads": torch_threads}
    run(RunSpec(model=model, dataset=WARMUP_DATASET, trainer="sequential", epochs=1, max_iterations=3, **extra))


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


@dataclass
class SweepReport:
    planned: list[RunSpec]
    skipped: list[tuple[RunSpec, Path]] = field(default_factory=list)
    ran: list[tuple[RunSpec, Path, float]] = field(default_factory=list)
    failed: list[tuple[RunSpec, str]] = field(default_factory=list)
    interrupted: bool = False

    def paths(self) -> list[Path]:
        """Result files of the planned runs that are complete (skipped or ran now), in plan order."""
        by_key = {s.key(): p for s, p in self.skipped}
        by_key.update({s.key(): p for s, p, _ in self.ran})
        return [by_key[s.key()] for s in self.planned if s.key() in by_key]

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else (1 if self.failed else 0)


def _describe(result: dict | None) -> str:
    if not result:
        return ""
    m = result.get("metrics", {})
    parts = [f"{m.get('train_events_per_s', 0):,.0f} ev/s"]
    if "test_ap" in m:
        parts.append(f"test AP {m['test_ap']:.4f}")
    return ", ".join(parts)


def run_sweep(
    runs: list[RunSpec],
    results_dir: str | Path = "results",
    *,
    jobs: int = 1,
    dry_run: bool = False,
    fresh: bool = False,
    warmup: bool = True,
    runner: Callable[[RunSpec, Path], tuple[Path, dict]] | None = None,
    log: Callable[[str], None] = print,
    run_progress: bool = False,
    on_run_done: Callable[[], None] | None = None,
) -> SweepReport:
    """Run ``runs`` in order, skipping complete ones (unless ``fresh``), one result file each.

    ``runner(spec, results_dir) -> (path, result)`` defaults to :func:`run_one` (tests replace it).
    ``log`` gets one line per run (with elapsed time and ETA). ``jobs > 1`` runs in worker processes (the
    timings then compete for the CPU). ``on_run_done`` is called after each run or skip (progress bars).
    """
    results_dir = Path(results_dir)
    report = SweepReport(planned=list(runs))
    n = len(runs)
    width = len(str(n))
    todo: list[tuple[int, RunSpec]] = []
    for idx, spec in enumerate(runs, 1):
        found = None if fresh else existing_result(spec, results_dir)
        if found is not None:
            report.skipped.append((spec, found))
            log(f"[{idx:>{width}}/{n}] skip {spec.label()} ({spec.key()}): complete result {found}")
            if on_run_done:
                on_run_done()
        else:
            todo.append((idx, spec))
    if dry_run:
        for idx, spec in todo:
            log(f"[{idx:>{width}}/{n}] would run {spec.label()} ({spec.key()}) -> "
                f"{default_result_path(spec, results_dir)}")
        log(f"dry run: {len(todo)} to run, {len(report.skipped)} already complete, results dir {results_dir}")
        return report
    if not todo:
        log(f"nothing to run: all {n} runs complete in {results_dir}")
        return report

    clock = {"t0": time.perf_counter(), "finished": 0}

    def done_line(idx: int, spec: RunSpec, what: str, remaining: int) -> None:
        clock["finished"] += 1
        elapsed = time.perf_counter() - clock["t0"]
        eta = elapsed / clock["finished"] * remaining
        log(f"[{idx:>{width}}/{n}] {what} | elapsed {fmt_seconds(elapsed)}, ETA {fmt_seconds(eta)}")

    if jobs > 1:
        log(f"WARNING: --jobs {jobs}: runs execute concurrently and their timings compete for the CPU; "
            "throughput and speedup numbers of this sweep are not comparable with runs made one at a time")
        return _run_parallel(todo, results_dir, jobs, report, log, done_line, on_run_done)

    runner = runner or (lambda spec, d: run_one(spec, d, progress=run_progress))
    if warmup:
        w0 = time.perf_counter()
        log(f"warm-up: one throwaway tiny run ({WARMUP_DATASET}) before the first measured run")
        warmup_run(todo[0][1].model, todo[0][1].torch_threads)
        log(f"warm-up done in {fmt_seconds(time.perf_counter() - w0)}")
        clock["t0"] = time.perf_counter()
    for pos, (idx, spec) in enumerate(todo):
        remaining = len(todo) - pos - 1
        log(f"[{idx:>{width}}/{n}] run  {spec.label()} ({spec.key()}) ...")
        r0 = time.perf_counter()
        try:
            path, result = runner(spec, results_dir)
        except KeyboardInterrupt:
            report.interrupted = True
            log(f"[{idx:>{width}}/{n}] interrupted {spec.label()}: finished runs are kept; rerun to resume")
            break
        except Exception as exc:  # noqa: BLE001 - one failed run does not stop the sweep
            dt = time.perf_counter() - r0
            report.failed.append((spec, f"{type(exc).__name__}: {exc}"))
            done_line(idx, spec, f"FAILED {spec.label()} after {fmt_seconds(dt)}: {type(exc).__name__}: {exc}",
                      remaining)
        else:
            dt = time.perf_counter() - r0
            report.ran.append((spec, Path(path), dt))
            done_line(idx, spec, f"done {spec.label()} in {dt:.1f} s ({_describe(result)}) -> {path}", remaining)
        if on_run_done:
            on_run_done()
    return report


def _run_parallel(todo, results_dir, jobs, report, log, done_line, on_run_done) -> SweepReport:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx)
    try:
        futures = {pool.submit(_run_one_in_worker, spec, str(results_dir)): (idx, spec) for idx, spec in todo}
        remaining = len(futures)
        for fut in as_completed(futures):
            idx, spec = futures[fut]
            remaining -= 1
            try:
                path, result = fut.result()
            except Exception as exc:  # noqa: BLE001
                report.failed.append((spec, f"{type(exc).__name__}: {exc}"))
                done_line(idx, spec, f"FAILED {spec.label()}: {type(exc).__name__}: {exc}", remaining)
            else:
                report.ran.append((spec, Path(path), float("nan")))
                done_line(idx, spec, f"done {spec.label()} ({_describe(result)}) -> {path}", remaining)
            if on_run_done:
                on_run_done()
    except KeyboardInterrupt:
        report.interrupted = True
        log("interrupted: finished runs are kept; rerun to resume")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return report


def describe_plan(runs: Iterable[RunSpec]) -> str:
    runs = list(runs)
    models = sorted({r.model for r in runs})
    datasets = sorted({r.dataset for r in runs})
    seeds = sorted({r.seed for r in runs})
    variants = list(dict.fromkeys(r.variant() for r in runs))
    return (f"{len(runs)} runs: models {', '.join(models)}; datasets {', '.join(datasets)}; "
            f"trainers {', '.join(variants)}; seeds {', '.join(map(str, seeds))}")
