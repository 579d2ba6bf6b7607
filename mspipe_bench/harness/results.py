"""The results store: read result files (``mspipe-bench/result/1``, written by :mod:`.run`; plain ``.json``
or gzip-compressed ``.json.gz``, read alike) into one pandas DataFrame, and derive speedups.

- :func:`load_result` reads one file and checks its schema (:class:`UserError` naming the file when it is
  malformed, :class:`NotAResult` when the file is valid JSON but not a result at all);
- :func:`load_results` reads files and directories (recursively, ``*.json`` and ``*.json.gz``) into one row
  per run: the run's ``config.*`` fields, ``metrics.*``, ``status``, ``env.cpu``, ``env.machine`` (the
  :func:`machine_tag`), ``dataset.name``, ``path`` and ``dir`` (the directory holding the file: one sweep),
  plus ``variant`` (trainer with its bound / mitigation, e.g. ``fixed-staleness-k2``, ``mspipe-nomit``) and
  ``dataset_label`` (a short dataset name for plots). JSON files that are not results (traces, simulator
  output) are skipped with a warning;
- :func:`speedups` adds ``speedup_vs_sequential``: a run's training events/s over the ``sequential`` run of
  the same workload (model, dataset, seed, epochs, batch size, iteration cap, config overrides, threads),
  **in the same directory and on the same CPU** -- ratios are never formed across sweeps or machines
  (docs/design.md §4);
- :func:`text_table` is the one text-table formatter of the harness (trainer table, run summary, sweep plan).
"""

from __future__ import annotations

import gzip
import json
import math
import re
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from mspipe_bench.errors import UserError
from mspipe_bench.harness.run import variant_name

SCHEMA_PREFIX = "mspipe-bench/result/"
SUPPORTED_SCHEMAS = ("mspipe-bench/result/1",)
REQUIRED = {
    "status": str,
    "config": dict,
    "env": dict,
    "metrics": dict,
    "epochs": list,
    "stages": dict,
    "iterations": list,
    "timeline": dict,
}
REQUIRED_CONFIG = ("model", "dataset", "trainer", "seed", "epochs", "batch_size", "staleness", "mitigation",
                   "key", "label")
REQUIRED_METRICS = ("train_events_per_s", "mean_observed_staleness", "max_observed_staleness", "mean_k",
                    "max_k", "bubble_share")
STATUSES = ("complete", "interrupted")
TIMELINE_COLUMNS = ["phase", "epoch", "i", "stage", "start", "end", "thread"]

# config fields that make two runs the same workload (everything but the schedule)
WORKLOAD_KEYS = ("config.model", "config.dataset", "config.seed", "config.epochs", "config.batch_size",
                 "config.max_iterations", "config.overrides", "config.negatives", "config.val_ratio",
                 "config.test_ratio", "config.torch_threads", "config.world_size")
# identity of a run for comparisons (not its absolute time)
MATCH_KEYS = ("config.model", "config.dataset", "config.trainer", "config.staleness", "config.mitigation",
              "config.seed", "config.epochs", "config.batch_size", "config.max_iterations", "config.negatives",
              "config.world_size")
CONFIG_COLUMNS = ("model", "dataset", "trainer", "staleness", "max_staleness", "prefetch", "mitigation", "seed",
                  "epochs", "batch_size", "max_iterations", "overrides", "negatives", "val_ratio", "test_ratio",
                  "torch_threads", "world_size", "key", "label")
CONFIG_DEFAULTS = {"negatives": "all", "world_size": 1}  # fields added to the schema later: their value in older files


RESULT_PATTERNS = ("*.json", "*.json.gz")


class NotAResult(UserError):
    """A JSON file that is not a result file (no ``schema: mspipe-bench/result/...``)."""


def _fail(path: Path, problem: str) -> UserError:
    return UserError(f"{path}: malformed result file: {problem}")


def machine_tag(env: dict) -> str:
    """A short name of the machine a result was measured on, from its ``env.cpu`` and ``env.cpu_count``:
    ``Intel(R) Xeon(R) Processor`` with 2 CPUs -> ``intel-xeon-2cpu`` (trademarks, "CPU"/"Processor" and the
    clock dropped). Names the directories of ``results/reference/`` and labels runs in tables and figures."""
    cpu = str(env.get("cpu") or "")
    cpu = re.sub(r"\((r|tm|c)\)", " ", cpu, flags=re.IGNORECASE)
    cpu = re.sub(r"@.*$", " ", cpu)
    cpu = re.sub(r"\b(cpu|processor|\d+-core)\b", " ", cpu, flags=re.IGNORECASE)
    slug = re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-") or "unknown-cpu"
    count = env.get("cpu_count")
    return f"{slug}-{count}cpu" if count else slug


def read_json(path: str | Path):
    """The JSON document in ``path`` (gunzipped when the name ends in ``.gz``); unreadable -> UserError."""
    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                return json.load(fh)
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, gzip.BadGzipFile, EOFError) as exc:
        raise _fail(path, f"not valid {'gzip-compressed ' if path.name.endswith('.gz') else ''}JSON ({exc})") from None


def validate_result(data, path: str | Path = "<result>") -> dict:
    """Check the structure of a result dict; raise :class:`UserError` naming ``path`` and the problem."""
    path = Path(path)
    if not isinstance(data, dict) or "schema" not in data:
        raise NotAResult(f"{path}: not a result file (no 'schema' key)")
    schema = data["schema"]
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_PREFIX):
        raise NotAResult(f"{path}: not a result file (schema {schema!r})")
    if schema not in SUPPORTED_SCHEMAS:
        raise _fail(path, f"unsupported schema {schema!r} (supported: {', '.join(SUPPORTED_SCHEMAS)})")
    for key, kind in REQUIRED.items():
        if key not in data:
            raise _fail(path, f"missing key {key!r}")
        if not isinstance(data[key], kind):
            raise _fail(path, f"key {key!r} must be a {kind.__name__}, got {type(data[key]).__name__}")
    if data["status"] not in STATUSES:
        raise _fail(path, f"status must be one of {', '.join(STATUSES)}, got {data['status']!r}")
    for key in REQUIRED_CONFIG:
        if key not in data["config"]:
            raise _fail(path, f"missing key 'config.{key}'")
    for key in REQUIRED_METRICS:
        if key not in data["metrics"]:
            raise _fail(path, f"missing key 'metrics.{key}'")
        v = data["metrics"][key]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _fail(path, f"metrics.{key} must be a number, got {v!r}")
    tl = data["timeline"]
    if tl.get("columns") != TIMELINE_COLUMNS or not isinstance(tl.get("rows"), list):
        raise _fail(path, f"timeline must have columns {TIMELINE_COLUMNS} and a list of rows")
    for n, it in enumerate(data["iterations"]):
        if not isinstance(it, dict) or not isinstance(it.get("durations"), dict):
            raise _fail(path, f"iterations[{n}] has no 'durations' object")
    return data


def load_result(path: str | Path) -> dict:
    """Read and schema-check one result file (``.json`` or ``.json.gz``). Unreadable or malformed →
    :class:`UserError` naming the file; valid JSON that is not a result file → :class:`NotAResult`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"result file {path} not found")
    return validate_result(read_json(path), path)


def result_files(paths_or_dirs: str | Path | Iterable[str | Path]) -> list[Path]:
    """Files given directly, or ``*.json`` / ``*.json.gz`` found (recursively) under the given directories,
    sorted."""
    if isinstance(paths_or_dirs, (str, Path)):
        paths_or_dirs = [paths_or_dirs]
    files: list[Path] = []
    for p in map(Path, paths_or_dirs):
        if p.is_dir():
            files.extend(sorted(q for pattern in RESULT_PATTERNS for q in p.rglob(pattern) if q.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return list(dict.fromkeys(files))


def dataset_label(spec: str, name: str | None = None) -> str:
    """Short dataset name for plots: the dataset's name, with synthetic options kept (they change it)."""
    s = str(spec)
    if s.startswith("synthetic"):
        return s
    return name or Path(s.rstrip("/")).name


def row_of(result: dict, path: str | Path) -> dict:
    """One DataFrame row of a result dict."""
    path = Path(path)
    c = result["config"]
    row: dict = {}
    for key in CONFIG_COLUMNS:
        v = c.get(key, CONFIG_DEFAULTS.get(key))
        if key == "overrides":
            v = ",".join(v or [])
        row[f"config.{key}"] = v
    for key, v in result["metrics"].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            row[f"metrics.{key}"] = v
    ds = result.get("dataset") or {}
    row["dataset.name"] = ds.get("name")
    row["status"] = result["status"]
    row["env.cpu"] = result["env"].get("cpu")
    row["env.cpu_count"] = result["env"].get("cpu_count")
    row["env.machine"] = machine_tag(result["env"])
    row["env.git_commit"] = result["env"].get("git_commit")
    row["started_at"] = result.get("started_at")
    row["wall_s"] = result.get("wall_s")
    row["n_epochs_done"] = len(result["epochs"])
    row["n_iterations"] = len(result["iterations"])
    row["variant"] = variant_name(c["trainer"], c.get("staleness"), c.get("mitigation"), c.get("max_staleness"),
                                  c.get("prefetch"), c.get("negatives"), c.get("torch_threads"),
                                  c.get("world_size"))
    row["dataset_label"] = dataset_label(c["dataset"], ds.get("name"))
    row["path"] = str(path)
    row["dir"] = str(path.resolve().parent)
    return row


def load_results(paths_or_dirs: str | Path | Iterable[str | Path], *, warn: bool = True,
                 on_skip=None) -> pd.DataFrame:
    """One row per result file found under ``paths_or_dirs`` (files or directories, searched recursively).

    Non-result JSON files are skipped (with a warning when ``warn``); a malformed result file raises
    ValueError naming it. Columns: ``config.*`` (model, dataset, trainer, staleness, mitigation, seed,
    epochs, batch_size, max_iterations, key, label, ...), ``metrics.*``, ``status``, ``env.cpu``,
    ``dataset.name``, ``variant``, ``dataset_label``, ``path``, ``dir``. ``on_skip(message)`` replaces the
    warning for skipped files.
    """
    rows = []
    for f in result_files(paths_or_dirs):
        try:
            result = load_result(f)
        except NotAResult as exc:
            if on_skip is not None:
                on_skip(f"skipping {exc}")
            elif warn:
                warnings.warn(f"skipping {exc}", stacklevel=2)
            continue
        rows.append(row_of(result, f))
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(columns=[f"config.{k}" for k in CONFIG_COLUMNS]
                          + ["status", "env.cpu", "env.machine", "variant", "dataset_label", "path", "dir"])
    return df


def _group_key_frame(df: pd.DataFrame, keys: Iterable[str]) -> pd.DataFrame:
    cols = [k for k in keys if k in df.columns]
    # NaN/None never equal in groupby: make them a visible token
    return df[cols].astype(object).where(df[cols].notna(), "<none>").astype(str)


def speedups(df: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``df`` with ``speedup_vs_sequential`` = ``metrics.train_events_per_s`` over the mean of the
    complete ``sequential`` runs of the same workload (model, dataset, seed, epochs, batch_size,
    max_iterations, overrides, split, threads) in the same directory on the same CPU, and
    ``test_ap_delta_vs_sequential`` = ``metrics.test_ap`` minus theirs (paired by seed, so the seed-to-seed
    spread cancels). NaN when there is no such sequential run or the run is not complete."""
    out = df.copy()
    out["speedup_vs_sequential"] = math.nan
    out["test_ap_delta_vs_sequential"] = math.nan
    if out.empty or "metrics.train_events_per_s" not in out.columns:
        return out
    keys = _group_key_frame(out, ("dir", "env.cpu", *WORKLOAD_KEYS))
    gid = keys.apply(lambda r: "\x1f".join(r), axis=1)
    complete = out["status"] == "complete"
    seq = out["config.trainer"].eq("sequential") & complete
    ref = out.loc[seq, "metrics.train_events_per_s"].groupby(gid[seq]).mean()
    base = gid.map(ref)
    ratio = out["metrics.train_events_per_s"] / base
    out["speedup_vs_sequential"] = ratio.where(complete & base.notna() & (base > 0))
    if "metrics.test_ap" in out.columns:
        ref_ap = out.loc[seq, "metrics.test_ap"].groupby(gid[seq]).mean()
        delta = out["metrics.test_ap"] - gid.map(ref_ap)
        out["test_ap_delta_vs_sequential"] = delta.where(complete)
    return out


def trainer_table(df: pd.DataFrame) -> str:
    """Per model x dataset x trainer variant, mean over seeds: events/s, speedup over sequential (mean of the
    per-seed ratios), test AP, mean / max observed staleness, bubble share (``df`` after :func:`speedups`)."""
    if df.empty:
        return "(no results)"
    from mspipe_bench.harness.variants import order_variants

    header = ("model", "dataset", "trainer", "seeds", "events/s", "speedup", "test AP", "obs. stal. mean/max",
              "bubble")
    rows = []
    groups = list(dict.fromkeys(zip(df["config.model"], df["dataset_label"])))
    for model, ds in groups:
        sub = df[(df["config.model"] == model) & (df["dataset_label"] == ds)]
        for v in order_variants(sub["variant"]):
            r = sub[sub["variant"] == v]
            sp = r["speedup_vs_sequential"].dropna()
            ap = r["metrics.test_ap"].dropna() if "metrics.test_ap" in r else pd.Series(dtype=float)
            eps = r["metrics.train_events_per_s"]

            def pm(series, fmt):
                if series.empty:
                    return "n/a"
                text = fmt.format(series.mean())
                if len(series) > 1:
                    text += " ±" + fmt.format(series.std(ddof=1)).lstrip()
                return text

            rows.append((
                str(model), str(ds), v, str(len(r)),
                pm(eps, "{:,.0f}"),
                (pm(sp, "{:.2f}") + "x") if not sp.empty else "n/a",
                pm(ap, "{:.4f}"),
                f"{r['metrics.mean_observed_staleness'].mean():.2f} / {int(r['metrics.max_observed_staleness'].max())}",
                f"{100 * r['metrics.bubble_share'].mean():.1f}%",
            ))
    return text_table(rows, header, align="lllrrrrrr")


def text_table(rows: Sequence[Sequence], headers: Sequence[str] = (), align: str | None = None) -> str:
    """The harness's text tables: ``rows`` under ``headers`` (none: a borderless key/value listing), columns
    aligned per letter of ``align`` (``l``/``r``/``c``; default: tabulate's, numbers right). Cells are
    printed as given (format numbers before)."""
    from tabulate import tabulate

    colalign = None
    if align:
        names = {"l": "left", "r": "right", "c": "center"}
        colalign = tuple(names[a] for a in align)
    return tabulate([list(r) for r in rows], headers=list(headers), tablefmt="simple" if headers else "plain",
                    colalign=colalign, disable_numparse=True)
