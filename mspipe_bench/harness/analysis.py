"""The numbers behind the figures and the text summary of ``mspipe-bench plot``, from result files only.

- :class:`ResultCache`: full result dicts, loaded once per path;
- :func:`model_dataset_groups`, :func:`pick_runs`: which runs a figure shows;
- :func:`stage_times`: per model x dataset, each stage's share of the summed stage time and its mean time
  per iteration (sequential runs, where nothing overlaps);
- :func:`timeline_rows`: a run's measured stage intervals of one training epoch;
- :func:`simulated_events_per_s`, :func:`measured_vs_simulated_table`: measured events/s beside the events/s
  the schedule simulator predicts from the same-seed sequential run's stage times (pipeline efficiency);
- :func:`summary_text`: the trainer table and the pipeline efficiencies as text.

No matplotlib here; pandas and the results store are imported by the functions that use them, so that
importing this module (for the figure registry in ``--help``) stays cheap.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable

import numpy as np

from mspipe_bench.trainers.rules import STAGES

if TYPE_CHECKING:
    import pandas as pd

MODEL_ORDER = ("tgn", "jodie", "apan")  # order of the model x dataset groups in figures


class ResultCache:
    """Full result dicts by path, each file read once."""

    def __init__(self):
        self._cache: dict[str, dict] = {}

    def __call__(self, path: str) -> dict:
        if path not in self._cache:
            from mspipe_bench.harness.results import load_result

            self._cache[path] = load_result(path)
        return self._cache[path]


def model_dataset_groups(df: pd.DataFrame) -> list[tuple[str, str]]:
    """The (model, dataset label) pairs of ``df``: models in :data:`MODEL_ORDER`, then by name."""
    g = df[["config.model", "dataset_label"]].drop_duplicates()
    order = {m: n for n, m in enumerate(MODEL_ORDER)}
    rows = sorted(g.itertuples(index=False), key=lambda r: (order.get(r[0], 9), r[0], r[1]))
    return [(m, d) for m, d in rows]


def pick_runs(df: pd.DataFrame, variants: Iterable[str]) -> dict[str, pd.Series]:
    """One representative run per variant: the model x dataset of the first mspipe run (TGN preferred),
    lowest seed."""
    if df.empty:
        return {}
    ref = df[df["config.trainer"] == "mspipe"]
    ref = ref if len(ref) else df
    g = model_dataset_groups(ref)[0]
    sub = df[(df["config.model"] == g[0]) & (df["dataset_label"] == g[1])]
    out = {}
    for v in variants:
        cand = sub[sub["variant"] == v].sort_values("config.seed")
        if len(cand):
            out[v] = cand.iloc[0]
    return out


def stage_times(seq: pd.DataFrame, results: ResultCache) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray]:
    """Per model x dataset group of the (sequential) runs ``seq``: the groups, each stage's share of the
    summed stage time ``[groups, STAGES]`` and its mean time per training iteration in ms."""
    groups = model_dataset_groups(seq)
    shares, per_iter = [], []
    for g in groups:
        sub = seq[(seq["config.model"] == g[0]) & (seq["dataset_label"] == g[1])]
        tot = np.zeros(len(STAGES))
        iters = 0
        for path in sub["path"]:
            r = results(path)
            tot += np.array([r["stages"].get(s, 0.0) for s in STAGES])
            iters += len(r["iterations"])
        shares.append(tot / tot.sum() if tot.sum() else tot)
        per_iter.append(tot / max(1, iters) * 1e3)
    return groups, np.array(shares), np.array(per_iter)


def timeline_rows(result: dict, epoch: int) -> list[tuple]:
    """``(i, stage, start, end, thread)`` of the training stages of ``epoch`` in a result's timeline."""
    cols = result["timeline"]["columns"]
    ix = {c: n for n, c in enumerate(cols)}
    return [(r[ix["i"]], r[ix["stage"]], float(r[ix["start"]]), float(r[ix["end"]]), str(r[ix["thread"]]))
            for r in result["timeline"]["rows"] if r[ix["phase"]] == "train" and r[ix["epoch"]] == epoch]


def simulated_events_per_s(seq_result: dict, trainer: str, staleness: int = 2, max_staleness: int = 4,
                           prefetch: int = 2) -> float:
    """Simulated training events/s of ``trainer`` replaying a (sequential) run's per-iteration stage times,
    epoch by epoch (the pipeline restarts every epoch, as in the real trainers); events counted as in the
    measurement."""
    from mspipe_bench.trainers.rules import make_schedule
    from mspipe_bench.trainers.simulator import simulate, timeline_from_result

    schedule = make_schedule(trainer, staleness=staleness, max_staleness=max_staleness, prefetch=prefetch)
    epochs = list(dict.fromkeys(it["epoch"] for it in seq_result["iterations"]))
    # mspipe's estimator starts empty in the first epoch (k = max until every stage was timed once) and
    # keeps its estimates afterwards, as in the executor
    makespan = sum(simulate(timeline_from_result(seq_result, ep), schedule,
                            warmup="cold" if n == 0 else "first").makespan_s for n, ep in enumerate(epochs))
    m = seq_result["metrics"]
    events = m["train_events_per_s"] * m["train_seconds"]
    return events / makespan if makespan > 0 else math.nan


def measured_vs_simulated_table(df: pd.DataFrame, results: ResultCache) -> pd.DataFrame:
    """Per run: measured events/s and the events/s simulated from the stage times of the sequential run of the
    same workload (the one :func:`results.speedups` divides by: same directory, CPU and workload keys)."""
    import pandas as pd

    from mspipe_bench.harness.results import WORKLOAD_KEYS, _group_key_frame
    from mspipe_bench.harness.run import default

    rows = []
    gid = _group_key_frame(df, ("dir", "env.cpu", *WORKLOAD_KEYS)).apply(lambda r: "\x1f".join(r), axis=1)
    seq = df["config.trainer"].eq("sequential")
    ref_path = df.loc[seq, "path"].groupby(gid[seq]).first()
    for idx, run in df.iterrows():
        if gid[idx] not in ref_path.index:
            continue
        seq_result = results(ref_path[gid[idx]])
        sim = simulated_events_per_s(seq_result, run["config.trainer"], int(run["config.staleness"] or 1),
                                     int(run.get("config.max_staleness") or default("max_staleness")),
                                     int(run.get("config.prefetch") or default("prefetch")))
        rows.append({"model": run["config.model"], "dataset": run["dataset_label"], "variant": run["variant"],
                     "seed": run["config.seed"], "measured": run["metrics.train_events_per_s"], "simulated": sim,
                     "efficiency": run["metrics.train_events_per_s"] / sim if sim else math.nan})
    return pd.DataFrame(rows)


def summary_text(source) -> str:
    """The trainer table (events/s, speedup, test AP, staleness, bubbles) and, per trainer, the measured
    versus simulated events/s (simulation replaying the same-seed sequential run's stage times) as text."""
    from mspipe_bench.harness.results import load_results, speedups, text_table, trainer_table

    df = speedups(load_results(source, on_skip=lambda *a: None))
    df = df[df["status"] == "complete"]
    parts = ["Measured (one row per trainer, mean ± std over seeds):", trainer_table(df)]
    table = measured_vs_simulated_table(df, ResultCache())
    if not table.empty:
        g = table.groupby(["model", "dataset", "variant"], sort=False)
        agg = g.agg(runs=("measured", "size"), measured=("measured", "median"), simulated=("simulated", "median"),
                    efficiency=("efficiency", "median")).reset_index()
        rows = [(r["model"], r["dataset"], r["variant"], r["runs"], f"{r['measured']:,.0f}",
                 f"{r['simulated']:,.0f}", f"{r['efficiency']:.2f}") for _, r in agg.iterrows()]
        parts += ["", "Pipeline efficiency = measured / simulated events/s (simulated: the same-seed sequential "
                  "run's stage times replayed under each trainer's rules; medians over seeds):",
                  text_table(rows, ("model", "dataset", "trainer", "runs", "measured", "simulated", "efficiency"),
                             "lllrrrr")]
    return "\n".join(parts)
