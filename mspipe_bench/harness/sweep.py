"""Sweeps: a grid of runs from a YAML spec, one result file per run, in a run directory of its own,
interleaved and resumable.

Spec keys (checked by a pydantic model derived from :class:`~mspipe_bench.harness.run.RunSpec`: an unknown
key or a bad value is a :class:`SpecError` naming the file, the key and the value)::

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

Order (interleaving, docs/design.md §4): for each seed, for each model x dataset (x other list-valued axes), every
trainer in turn -- so the trainers compared with each other ran close together under the same machine
conditions, and a killed sweep leaves complete comparisons behind.

Run directories: every invocation of ``sweep``, ``bench`` or ``paper`` writes into a new directory
(:class:`RunDir`; by default ``runs/<command>-<YYYYmmdd-HHMMSS>/``) holding ``manifest.yaml`` (the command
line, the planned runs and the runs it completed) and one result file ``<label>_<key>.json`` per run
(:func:`~mspipe_bench.harness.run.default_result_path`), written atomically when the run finishes. Result
files from elsewhere -- committed references, other invocations -- are never taken for measurements of this
one. Resuming (``--resume DIR``): the same plan again in DIR, skipping the runs that DIR's manifest records
as completed there (interrupted or failed runs are run again).
"""

from __future__ import annotations

import datetime as _dt
import itertools
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from mspipe_bench.errors import UserError, read_yaml
from mspipe_bench.harness.run import (RunSpec, check_output_dir, default_result_path, validation_message,
                                      write_json_atomic, write_text_atomic)
from mspipe_bench.trainers.rules import TRAINERS

GRID_KEYS = {"models": "model", "datasets": "dataset", "trainers": "trainer", "seeds": "seed"}
# RunSpec fields a spec may give at the top level and per trainer entry (the grid keys are separate axes)
FIELD_KEYS = tuple(n for n in RunSpec.model_fields if n not in GRID_KEYS.values())
# top-level list-valued fields that expand only some trainers (the others keep the default)
TRAINER_AXES = {"staleness": ("fixed-staleness",), "mitigation": ("mspipe",)}
WARMUP_DATASET = "synthetic:nodes=200,events=3000"
RUNS_ROOT = Path("runs")
MANIFEST = "manifest.yaml"
MANIFEST_SCHEMA = "mspipe-bench/run-dir/1"


class SpecError(UserError):
    """An invalid sweep spec (message names the file and the key)."""


# ------------------------------------------------------------------------------------------ validation
def _value_type(name: str) -> Any:
    """A RunSpec field's type with its constraints (``int >= 1``, a trainer name, ...)."""
    info = RunSpec.model_fields[name]
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def _axis_fields(names: Iterable[str]) -> dict[str, Any]:
    """Each field as a non-empty list of values (a grid axis; scalars are wrapped by :func:`_wrap_axes`);
    ``overrides`` is itself one list of strings."""
    out: dict[str, Any] = {}
    for name in names:
        if name == "overrides":
            out[name] = (list[str] | None, None)
        else:
            out[name] = (list[_value_type(name)] | None, Field(None, min_length=1))
    return out


def _wrap_axes(data: dict, names: Iterable[str]) -> dict:
    return {k: [v] if k in names and k != "overrides" and not isinstance(v, list) else v for k, v in data.items()}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _EntryBase(_Strict):
    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        """``NAME``, ``{trainer: NAME, field: ...}`` or ``{NAME: {field: ...}}`` -> ``{trainer: NAME, ...}``."""
        if isinstance(data, str):
            return {"trainer": data}
        if not isinstance(data, dict):
            raise ValueError("expected a trainer name, {trainer: NAME, ...} or {NAME: {...}}")
        if "trainer" not in data and len(data) == 1:
            ((name, fields),) = data.items()
            fields = {} if fields is None else fields
            if not isinstance(fields, dict):
                raise ValueError(f"the fields of trainer {name!r} must be a mapping")
            data = {"trainer": name, **fields}
        return _wrap_axes(data, FIELD_KEYS)


TrainerEntry = create_model("TrainerEntry", __base__=_EntryBase, trainer=(_value_type("trainer"), ...),
                            **_axis_fields(FIELD_KEYS))


class _SpecBase(_Strict):
    @model_validator(mode="before")
    @classmethod
    def _grid_keys(cls, data: Any) -> Any:
        """``model: x`` -> ``models: [x]`` (likewise dataset, trainer, seed); scalars of fields -> lists."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for plural, single in GRID_KEYS.items():
            if single in data:
                if plural in data:
                    raise ValueError(f"give either {plural!r} or {single!r}, not both")
                data[plural] = data.pop(single)
            if plural in data and not isinstance(data[plural], list):
                data[plural] = [data[plural]]
        return _wrap_axes(data, FIELD_KEYS)


SweepSpec = create_model(
    "SweepSpec", __base__=_SpecBase,
    models=(list[_value_type("model")], Field(["tgn"], min_length=1)),
    datasets=(list[_value_type("dataset")], Field(["synthetic"], min_length=1)),
    trainers=(list[TrainerEntry], Field(default_factory=lambda: [TrainerEntry(trainer=t) for t in TRAINERS],
                                        min_length=1)),
    seeds=(list[_value_type("seed")], Field([0], min_length=1)),
    warmup=(bool, True),
    **_axis_fields(FIELD_KEYS),
)


def _spec_error(exc: ValidationError, doc: dict, where: str, options: dict[str, str] | None) -> SpecError:
    """One line naming ``where`` (the file), the key as the user wrote it, and the value; or the option
    (``options`` maps spec keys to the options of a command that built the spec)."""
    err = exc.errors()[0]
    loc = list(err["loc"])
    if loc and loc[0] in GRID_KEYS and loc[0] not in doc and GRID_KEYS[loc[0]] in doc:
        loc[0] = GRID_KEYS[loc[0]]  # the user wrote the singular key
    if len(loc) >= 2 and loc[1] == 0 and loc[0] in doc and not isinstance(doc[loc[0]], list):
        del loc[1]  # a scalar the schema wrapped into a one-element list
    if options and loc and loc[0] in options:
        return SpecError(validation_message(exc, lambda _: options[loc[0]]))
    text = "".join(f"[{x}]" if isinstance(x, int) else (f".{x}" if n else str(x)) for n, x in enumerate(loc))
    if err["type"] == "extra_forbidden":
        entry = len(loc) > 1
        allowed = sorted(("trainer", *FIELD_KEYS) if entry else (*SweepSpec.model_fields, *GRID_KEYS.values()))
        return SpecError(f"{where}: unknown key {text!r} (allowed{' in a trainer entry' if entry else ''}: "
                         f"{', '.join(allowed)})")
    return SpecError(validation_message(exc, lambda _: f"{where}: key {text!r}" if text else where))


def load_spec(path: str | Path) -> dict:
    """Read a sweep spec YAML into a dict (checked by :func:`expand`)."""
    p = Path(path)
    doc = read_yaml(p, "sweep spec")
    if not isinstance(doc, dict):
        raise SpecError(f"{p}: a sweep spec must be a mapping of keys (models, datasets, trainers, ...)")
    return doc


def validate(doc: dict, where: str = "sweep spec", options: dict[str, str] | None = None):
    """The :data:`SweepSpec` of ``doc``; a bad key or value is a :class:`SpecError` naming ``where`` and the
    key (or the command-line option, through ``options``)."""
    try:
        return SweepSpec.model_validate(doc)
    except ValidationError as exc:
        raise _spec_error(exc, doc, where, options) from None


def sweep_options(doc: dict, where: str = "sweep spec") -> dict:
    """The sweep options (not RunSpec fields) of a spec, with defaults."""
    return {"warmup": validate(doc, where).warmup}


def expand(doc: dict, where: str = "sweep spec", options: dict[str, str] | None = None) -> list[RunSpec]:
    """The runs of a spec, in interleaved order (see module docstring), duplicates (same key) removed."""
    spec = validate(doc, where, options)
    shared = {name: getattr(spec, name) for name in FIELD_KEYS if getattr(spec, name) is not None}
    if "overrides" in shared:
        shared["overrides"] = [shared["overrides"]]  # one value, not an axis
    # `staleness` always applies to fixed-staleness entries only; `mitigation` as a list expands mspipe
    # entries only (as a scalar it applies to every run)
    trainer_axes = {}
    if "staleness" in shared:
        trainer_axes["staleness"] = shared.pop("staleness")
    if isinstance(doc.get("mitigation"), list):
        trainer_axes["mitigation"] = shared.pop("mitigation")
    axes = list(shared.items())
    combos = [dict(zip([k for k, _ in axes], vals)) for vals in itertools.product(*[v for _, v in axes])]
    entries = []
    for entry in spec.trainers:
        fields = {k: getattr(entry, k) for k in FIELD_KEYS if getattr(entry, k) is not None}
        if "overrides" in fields:
            fields["overrides"] = [fields["overrides"]]
        entries.append((entry.trainer, fields))

    runs: list[RunSpec] = []
    seen: set[str] = set()
    for seed in spec.seeds:
        for model in spec.models:
            for dataset in spec.datasets:
                for combo in combos:
                    for name, fields in entries:
                        own = {k: vals for k, vals in trainer_axes.items() if name in TRAINER_AXES[k]}
                        own.update(fields)  # entry fields win over top-level ones
                        keys = list(own)
                        for vals in itertools.product(*[own[k] for k in keys]):
                            try:
                                run = RunSpec(model=model, dataset=dataset, trainer=name, seed=seed,
                                              **{**combo, **dict(zip(keys, vals))})
                            except ValidationError as exc:  # a rule across fields (val + test ratio)
                                raise SpecError(validation_message(exc, lambda _: where)) from None
                            key = run.key()
                            if key not in seen:
                                seen.add(key)
                                runs.append(run)
    return runs


def load_runs(path: str | Path) -> tuple[list[RunSpec], dict]:
    """Runs and sweep options of a spec file (errors name the file)."""
    doc = load_spec(path)
    return expand(doc, str(path)), sweep_options(doc, str(path))


# ------------------------------------------------------------------------------------- run directories
@dataclass
class RunDir:
    """The directory of one invocation of ``bench`` / ``sweep`` / ``paper``: its result files and
    ``manifest.yaml`` (schema, command line, creation time, the planned runs' labels and keys, and the keys of
    the runs completed here with their file names). Only the runs its manifest records are ever skipped."""

    path: Path
    manifest: dict

    @classmethod
    def create(cls, runs: list[RunSpec], command: str, path: str | Path | None = None,
               command_line: str = "", option: str = "--results-dir") -> "RunDir":
        """A new run directory: ``path`` when given (it must not exist, or be empty), else
        ``runs/<command>-<YYYYmmdd-HHMMSS>`` (a suffix when that exists). Checked writable at once."""
        if path is None:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            for n in itertools.count(1):
                path = RUNS_ROOT / (f"{command}-{stamp}" + (f"-{n}" if n > 1 else ""))
                if not path.exists():
                    break
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise UserError(f"{option} {path}: exists and is not empty; an invocation never reuses results it "
                            f"did not write: give a new directory, or --resume {path} to continue the "
                            "invocation that wrote it")
        check_output_dir(path, option)
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "command": command_line or f"mspipe-bench {command}",
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "runs": [{"label": s.label(), "key": s.key()} for s in runs],
            "completed": {},
        }
        rd = cls(path, manifest)
        rd.save()
        return rd

    @classmethod
    def resume(cls, path: str | Path, runs: list[RunSpec], option: str = "--resume") -> "RunDir":
        """An existing run directory whose manifest plans the same runs as ``runs``."""
        import yaml

        path = Path(path)
        if not path.is_dir():
            raise UserError(f"{option} {path}: no such directory")
        mf = path / MANIFEST
        if not mf.is_file():
            raise UserError(f"{option} {path}: not a run directory of bench/sweep/paper (no {MANIFEST}); "
                            "results this suite did not write there are never reused")
        try:
            manifest = yaml.safe_load(mf.read_text())
            planned = [r["key"] for r in manifest["runs"]]
            if manifest.get("schema") != MANIFEST_SCHEMA or not isinstance(manifest.get("completed"), dict):
                raise TypeError
        except (yaml.YAMLError, TypeError, KeyError):
            raise UserError(f"{option} {path}: {MANIFEST} is damaged (expected schema {MANIFEST_SCHEMA} with "
                            "runs and completed)") from None
        if sorted(planned) != sorted(s.key() for s in runs):
            command = manifest.get("command")
            raise UserError(f"{option} {path}: it holds the runs of `{command}`, a different plan than this "
                            f"command's; resume with that command's options: {command} {option} {path}")
        check_output_dir(path, option)
        return cls(path, manifest)

    def save(self) -> None:
        import yaml

        write_text_atomic(self.path / MANIFEST, yaml.safe_dump(self.manifest, sort_keys=False))

    def completed(self, spec: RunSpec) -> Path | None:
        """The result file of ``spec`` that this directory's invocation completed, or None."""
        from mspipe_bench.harness.results import read_json

        name = self.manifest["completed"].get(spec.key())
        if not name or not (self.path / name).is_file():
            return None
        p = self.path / name
        try:
            data = read_json(p)
        except (OSError, UserError):
            warnings.warn(f"{p}: unreadable result file, the run will be redone", stacklevel=2)
            return None
        ok = isinstance(data, dict) and data.get("status") == "complete" and data.get("config", {}).get("key") == spec.key()
        return p if ok else None

    def record(self, spec: RunSpec, path: str | Path) -> None:
        self.manifest["completed"][spec.key()] = Path(path).name
        self.save()


def plan_table(runs: list[RunSpec], run_dir: RunDir | None = None) -> str:
    """The plan as a table: position, run label, key, and whether it would run or is complete in
    ``run_dir`` (resuming)."""
    from mspipe_bench.harness.results import text_table

    rows = []
    for idx, spec in enumerate(runs, 1):
        done = run_dir.completed(spec) if run_dir is not None else None
        rows.append((str(idx), spec.label(), spec.key(), "complete (skip)" if done else "would run"))
    return text_table(rows, ("#", "run", "key", "action"), align="rllll")


# -------------------------------------------------------------------------------------------- running
def run_one(spec: RunSpec, results_dir: str | Path, progress: bool = False) -> tuple[Path, dict]:
    """Run one spec and write its result atomically to its default path. An interrupted run is written
    (status ``interrupted``, so a resumed sweep redoes it) and then KeyboardInterrupt is raised."""
    from mspipe_bench.harness.run import run

    path = default_result_path(spec, results_dir)
    if spec.nprocs > 1:  # data-parallel ranks (harness/launch.py): rank 0 writes the result
        from mspipe_bench.harness.launch import run_spawned
        from mspipe_bench.harness.results import load_result

        if run_spawned(spec, str(path), progress)[0] is None:
            raise KeyboardInterrupt
        result = load_result(path)
    else:
        result = run(spec, progress=progress)
        path = write_json_atomic(path, result)
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
    run_dir: RunDir,
    *,
    jobs: int = 1,
    warmup: bool = True,
    runner: Callable[[RunSpec, Path], tuple[Path, dict]] | None = None,
    log: Callable[[str], None] = print,
    run_progress: bool = False,
    on_run_done: Callable[[], None] | None = None,
) -> SweepReport:
    """Run ``runs`` in order into ``run_dir``, one result file each, skipping the runs ``run_dir`` already
    completed (a resumed invocation); each completed run is recorded in its manifest.

    ``runner(spec, results_dir) -> (path, result)`` defaults to :func:`run_one` (tests replace it).
    ``log`` gets one line per run (with elapsed time and ETA). ``jobs > 1`` runs in worker processes (the
    timings then compete for the CPU). ``on_run_done`` is called after each run or skip (progress bars).
    """
    report = SweepReport(planned=list(runs))
    n = len(runs)
    width = len(str(n))
    todo: list[tuple[int, RunSpec]] = []
    for idx, spec in enumerate(runs, 1):
        found = run_dir.completed(spec)
        if found is not None:
            report.skipped.append((spec, found))
            log(f"[{idx:>{width}}/{n}] skip {spec.label()} ({spec.key()}): completed earlier in {run_dir.path}")
            if on_run_done:
                on_run_done()
        else:
            todo.append((idx, spec))
    if not todo:
        log(f"nothing to run: all {n} runs completed in {run_dir.path}")
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
        return _run_parallel(todo, run_dir, jobs, report, log, done_line, on_run_done)

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
            path, result = runner(spec, run_dir.path)
        except KeyboardInterrupt:
            report.interrupted = True
            log(f"[{idx:>{width}}/{n}] interrupted {spec.label()}: finished runs are kept; "
                f"--resume {run_dir.path} continues")
            break
        except Exception as exc:  # noqa: BLE001 - one failed run does not stop the sweep
            dt = time.perf_counter() - r0
            report.failed.append((spec, f"{type(exc).__name__}: {exc}"))
            done_line(idx, spec, f"FAILED {spec.label()} after {fmt_seconds(dt)}: {type(exc).__name__}: {exc}",
                      remaining)
        else:
            dt = time.perf_counter() - r0
            run_dir.record(spec, path)
            report.ran.append((spec, Path(path), dt))
            done_line(idx, spec, f"done {spec.label()} in {dt:.1f} s ({_describe(result)}) -> {path}", remaining)
        if on_run_done:
            on_run_done()
    return report


def _run_parallel(todo, run_dir: RunDir, jobs, report, log, done_line, on_run_done) -> SweepReport:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx)
    try:
        futures = {pool.submit(_run_one_in_worker, spec, str(run_dir.path)): (idx, spec) for idx, spec in todo}
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
                run_dir.record(spec, path)
                report.ran.append((spec, Path(path), float("nan")))
                done_line(idx, spec, f"done {spec.label()} ({_describe(result)}) -> {path}", remaining)
            if on_run_done:
                on_run_done()
    except KeyboardInterrupt:
        report.interrupted = True
        log(f"interrupted: finished runs are kept; --resume {run_dir.path} continues")
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
