"""Compare a results directory with a baseline directory: regressions beyond tolerances.

Runs are matched by configuration -- model, dataset, trainer, staleness bound, mitigation, seed, epochs,
batch size, iteration cap (:data:`~mspipe_bench.harness.results.MATCH_KEYS`) -- never by time. Compared
per matched run (several runs with the same configuration on one side are averaged):

``test AP``
    ``metrics.test_ap``; a regression when it drops by more than ``ap_drop`` (absolute).
``speedup over sequential``
    ``metrics.train_events_per_s`` over the same-seed ``sequential`` run **of the same directory**
    (:func:`~mspipe_bench.harness.results.speedups`), so machines and noisy periods cancel; a regression
    when it falls by more than ``speedup_drop`` (relative). Not checked for
    ``sequential`` itself (always 1) nor when a directory has no sequential run for the seed.
    Absolute times and events/s are never compared.
``mean observed staleness``
    ``metrics.mean_observed_staleness``; a regression when it rises by more than ``staleness_rise``
    (absolute, in iterations). Independently of the baseline, a run whose
    ``max_observed_staleness`` exceeds its bound minus one (``K - 1`` for fixed-staleness, ``k_max - 1`` for
    mspipe, 0 for sequential / presample) is a regression (the bound was violated).

A current run that is not ``complete`` is a regression. Baseline runs missing from the results are reported
(a regression only with ``strict``); runs without a baseline are listed as new. The tolerances and their
defaults are the fields of :class:`Tolerances`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mspipe_bench.errors import UserError, read_yaml

if TYPE_CHECKING:  # pandas is imported by the functions that need it (keeps `--help` fast)
    import pandas as pd


def _tolerance(default: float, description: str):
    return Field(default, ge=0, allow_inf_nan=False, strict=True, description=description)


class Tolerances(BaseModel):
    """How far a result may fall behind its baseline before it is a regression (a tolerances YAML file holds
    any of these keys; the others keep their default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ap_drop: float = _tolerance(0.01, "largest allowed drop of test AP (absolute)")
    speedup_drop: float = _tolerance(0.10, "largest allowed relative drop of the speedup over sequential "
                                           "(0.10 = 10%)")
    staleness_rise: float = _tolerance(0.5, "largest allowed rise of the mean observed staleness "
                                            "(iterations, absolute)")


def tolerances_help() -> str:
    """``key (default v): description`` for every tolerance (the ``compare`` help)."""
    return "; ".join(f"{name} (default {f.default:g}): {f.description}" for name, f in Tolerances.model_fields.items())


def load_tolerances(path: str | Path | None) -> Tolerances:
    """Tolerances from a YAML mapping of :class:`Tolerances` keys (missing keys keep the default); a bad file
    is a UserError naming the file, the key and the value."""
    if path is None:
        return Tolerances()
    p = Path(path)
    doc = read_yaml(p, "tolerances file") or {}
    if not isinstance(doc, dict):
        raise UserError(f"{p}: expected a mapping of tolerances ({', '.join(Tolerances.model_fields)}), "
                        f"found {type(doc).__name__}")
    try:
        return Tolerances(**{str(k): v for k, v in doc.items()})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            raise UserError(f"{p}: unknown key {key!r} = {err['input']!r} (allowed: "
                            f"{', '.join(Tolerances.model_fields)})") from None
        raise UserError(f"{p}: key {key!r} = {err['input']!r}: must be a number >= 0 ({err['msg']})") from None


def find_tolerances(baseline: str | Path) -> Path | None:
    """Default tolerances file: next to the baseline runs, in their parent (``baselines/``), or
    ``baselines/tolerances.yaml`` under the current directory."""
    b = Path(baseline)
    for cand in (b / "tolerances.yaml", b.parent / "tolerances.yaml", Path("baselines") / "tolerances.yaml"):
        if cand.is_file():
            return cand
    return None


@dataclass
class Check:
    metric: str
    run: str
    baseline: float
    current: float
    change: str
    limit: str
    regression: bool
    note: str = ""


@dataclass
class Comparison:
    tolerances: Tolerances
    checks: list[Check] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the baseline, not in the results
    new: list[str] = field(default_factory=list)  # in the results, not in the baseline
    incomplete: list[str] = field(default_factory=list)
    strict: bool = False

    @property
    def regressions(self) -> list[Check]:
        return [c for c in self.checks if c.regression]

    @property
    def failed(self) -> bool:
        return bool(self.regressions or self.incomplete or (self.strict and self.missing))


def _norm(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


def _isna(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _key_frame(df: pd.DataFrame) -> pd.Series:
    """A string identifying each run's configuration (MATCH_KEYS; ints and integral floats alike)."""
    from mspipe_bench.harness.results import MATCH_KEYS

    cols = [c for c in MATCH_KEYS if c in df.columns]
    return df[cols].astype(object).apply(lambda r: "|".join(_norm(v) for v in r), axis=1)


def _run_name(row: pd.Series) -> str:
    name = str(row["config.label"])
    extra = [f"e{int(row['config.epochs'])}"]
    if not _isna(row.get("config.max_iterations")):
        extra.append(f"it{int(row['config.max_iterations'])}")
    extra.append(f"b{int(row['config.batch_size'])}")
    return f"{name} ({' '.join(extra)})"


def _bound(row: pd.Series) -> int:
    trainer = row["config.trainer"]
    if trainer == "mspipe":
        return int(row.get("config.max_staleness") or row.get("metrics.max_k") or 1)
    if trainer == "fixed-staleness":
        return int(row["config.staleness"])
    return 1


def _aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (mean of numeric metrics over duplicates)."""
    from mspipe_bench.harness.results import speedups

    df = speedups(df)
    df = df.assign(_key=_key_frame(df))
    numeric = [c for c in ("metrics.test_ap", "speedup_vs_sequential", "metrics.mean_observed_staleness",
                           "metrics.max_observed_staleness") if c in df.columns]
    first = df.groupby("_key", sort=False).first()
    means = df.groupby("_key", sort=False)[numeric].mean()
    maxes = df.groupby("_key", sort=False)["metrics.max_observed_staleness"].max()
    statuses = df.groupby("_key", sort=False)["status"].agg(lambda s: "complete" if (s == "complete").all()
                                                              else "incomplete")
    first[numeric] = means
    first["metrics.max_observed_staleness"] = maxes
    first["status"] = statuses
    first["n_runs"] = df.groupby("_key", sort=False).size()
    return first


def compare(current: pd.DataFrame, baseline: pd.DataFrame, tolerances: Tolerances | None = None,
            strict: bool = False) -> Comparison:
    tol = tolerances or Tolerances()
    result = Comparison(tolerances=tol, strict=strict)
    if baseline.empty:
        raise UserError("the baseline holds no result files")
    cur = _aggregate(current) if not current.empty else None
    base = _aggregate(baseline)
    for key, b in base.iterrows():
        name = _run_name(b)
        if cur is None or key not in cur.index:
            result.missing.append(name)
            continue
        c = cur.loc[key]
        if c["status"] != "complete":
            result.incomplete.append(name)
            continue
        # test AP
        bap, cap = b.get("metrics.test_ap"), c.get("metrics.test_ap")
        if not (_isna(bap) or _isna(cap)):
            d = cap - bap
            result.checks.append(Check("test AP", name, bap, cap, f"{d:+.4f}", f">= {bap - tol.ap_drop:.4f}",
                                       d < -tol.ap_drop - 1e-12))
        # speedup over sequential
        if c["config.trainer"] != "sequential":
            bs, cs = b.get("speedup_vs_sequential"), c.get("speedup_vs_sequential")
            if _isna(bs) or _isna(cs):
                side = "baseline" if _isna(bs) else "results"
                result.checks.append(Check("speedup over sequential", name, bs, cs, "n/a", "n/a", False,
                                           f"no same-seed sequential run in the {side}"))
            else:
                rel = cs / bs - 1.0
                result.checks.append(Check("speedup over sequential", name, bs, cs, f"{rel:+.1%}",
                                           f">= {bs * (1 - tol.speedup_drop):.3f}",
                                           rel < -tol.speedup_drop - 1e-12))
        # staleness
        bst, cst = b.get("metrics.mean_observed_staleness"), c.get("metrics.mean_observed_staleness")
        if not (_isna(bst) or _isna(cst)):
            d = cst - bst
            bound = _bound(c)
            violated = c["metrics.max_observed_staleness"] > bound - 1
            note = (f"max observed {int(c['metrics.max_observed_staleness'])} > bound {bound} - 1"
                    if violated else "")
            result.checks.append(Check("mean observed staleness", name, bst, cst, f"{d:+.2f}",
                                       f"<= {bst + tol.staleness_rise:.2f}, max <= {bound - 1}",
                                       d > tol.staleness_rise + 1e-12 or violated, note))
    if cur is not None:
        result.new = [_run_name(r) for k, r in cur.iterrows() if k not in base.index]
    return result


def _fmt(v, metric: str) -> str:
    if v is None or _isna(v):
        return "n/a"
    if metric == "speedup over sequential":
        return f"{v:.3f}x"
    if metric == "test AP":
        return f"{v:.4f}"
    return f"{v:.2f}"


def format_comparison(comp: Comparison) -> str:
    from mspipe_bench.harness.results import text_table

    lines = []
    metrics = list(dict.fromkeys(c.metric for c in comp.checks))
    for metric in metrics:
        rows = []
        for c in (c for c in comp.checks if c.metric == metric):
            verdict = "REGRESSION" if c.regression else ("n/a" if c.change == "n/a" else "ok")
            if c.note:
                verdict += f" ({c.note})"
            rows.append((c.run, _fmt(c.baseline, metric), _fmt(c.current, metric), c.change, c.limit, verdict))
        lines.append(f"== {metric} ==")
        lines.append(text_table(rows, ("run", "baseline", "current", "change", "allowed", "verdict"), "lrrrrl"))
        lines.append("")
    if comp.incomplete:
        lines.append(f"REGRESSION: {len(comp.incomplete)} run(s) not complete in the results: "
                     + ", ".join(comp.incomplete))
    if comp.missing:
        lines.append(f"{'REGRESSION' if comp.strict else 'note'}: {len(comp.missing)} baseline run(s) missing from "
                     "the results: " + ", ".join(comp.missing))
    if comp.new:
        lines.append(f"note: {len(comp.new)} run(s) without a baseline (not compared): " + ", ".join(comp.new))
    n = len(comp.regressions) + len(comp.incomplete) + (len(comp.missing) if comp.strict else 0)
    tol = ", ".join(f"{k}={v:g}" for k, v in comp.tolerances.model_dump().items())
    lines.append(f"{'FAIL' if comp.failed else 'OK'}: {n} regression(s) in {len(comp.checks)} checks "
                 f"(tolerances: {tol})")
    return "\n".join(lines)


def compare_dirs(results: str | Path, baseline: str | Path, tolerances: Tolerances | None = None,
                 strict: bool = False, on_skip=None) -> Comparison:
    from mspipe_bench.harness.results import load_results

    cur = load_results(results, on_skip=on_skip)
    base = load_results(baseline, on_skip=on_skip)
    if base.empty:
        raise UserError(f"{baseline}: no result files in the baseline")
    return compare(cur, base, tolerances, strict)
