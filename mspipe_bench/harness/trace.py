"""Export a run's measured timeline as a Chrome trace (trace-event format), for Perfetto
(https://ui.perfetto.dev) or chrome://tracing.

One process per result file (named by its label), one track (``tid``) per thread of the run (``sampler``,
``loader``, ``trainer``, ``updater``, ``MainThread``) with ``thread_name`` metadata, and one complete event
(``"ph": "X"``, microseconds from the run's start) per timeline row: a stage of one iteration, named
``T#12`` (stage ``T`` of iteration 12) for training and ``val T#3`` / ``test T#3`` for evaluation. Its args
hold ``phase``, ``epoch``, ``iteration``, ``stage`` and, for training iterations, the bound ``k`` and the
``observed_staleness`` (from ``result["iterations"]``). Counter tracks ``k`` and ``observed staleness`` show
the same per-iteration values over time (at the start of each M).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from mspipe_bench.errors import UserError
from mspipe_bench.trainers.rules import thread_sort_key

STAGE_COLORS = {  # chrome://tracing reserved colour names
    "S": "thread_state_runnable",
    "F": "cq_build_attempt_passed",
    "M": "thread_state_iowait",
    "T": "good",
    "U": "terrible",
}


def trace_events(result: dict, pid: int = 1) -> list[dict]:
    """The trace events of one result dict (see module docstring)."""
    tl = result["timeline"]
    cols = tl["columns"]
    idx = {c: n for n, c in enumerate(cols)}
    for c in ("phase", "epoch", "i", "stage", "start", "end", "thread"):
        if c not in idx:
            raise UserError(f"{result.get('config', {}).get('label', 'result')}: timeline has no column {c!r} "
                            f"(columns: {cols})")
    rows = tl["rows"]
    iters = {(it.get("epoch"), it.get("i")): it for it in result.get("iterations", [])}

    threads = sorted({str(r[idx["thread"]]) for r in rows}, key=thread_sort_key)
    tids = {name: n + 1 for n, name in enumerate(threads)}
    label = result.get("config", {}).get("label", "run")
    events: list[dict] = [
        {"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": label}},
        {"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0, "args": {"sort_index": pid}},
    ]
    for name, tid in tids.items():
        events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}})
        events.append({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tid,
                       "args": {"sort_index": tid}})

    counters = []
    for r in rows:
        phase, epoch, i, stage = r[idx["phase"]], r[idx["epoch"]], r[idx["i"]], r[idx["stage"]]
        start, end, thread = float(r[idx["start"]]), float(r[idx["end"]]), str(r[idx["thread"]])
        args = {"phase": phase, "epoch": epoch, "iteration": i, "stage": stage}
        if phase == "train":
            it = iters.get((epoch, i))
            if it is not None:
                args["k"] = it.get("k")
                args["observed_staleness"] = it.get("observed_staleness")
                if stage == "M" and it.get("mitigated_nodes"):
                    args["mitigated_nodes"] = it.get("mitigated_nodes")
                if stage == "T" and it.get("bubble_s"):
                    args["bubble_before_ms"] = round(1e3 * it["bubble_s"], 3)
                if stage == "M":
                    counters.append((start, it.get("k"), it.get("observed_staleness")))
        name = f"{stage}#{i}" if phase == "train" else f"{phase} {stage}#{i}"
        ev = {
            "name": name,
            "cat": phase,
            "ph": "X",
            "ts": start * 1e6,
            "dur": max(0.0, end - start) * 1e6,
            "pid": pid,
            "tid": tids[thread],
            "args": args,
        }
        if stage in STAGE_COLORS:
            ev["cname"] = STAGE_COLORS[stage]
        events.append(ev)
    for ts, k, obs in counters:
        if k is not None:
            events.append({"name": "k", "ph": "C", "pid": pid, "ts": ts * 1e6, "args": {"k": k}})
        if obs is not None:
            events.append({"name": "observed staleness", "ph": "C", "pid": pid, "ts": ts * 1e6,
                           "args": {"observed": obs}})
    return events


def to_chrome_trace(results: dict | Iterable[dict]) -> dict:
    """A Chrome trace object (``{"traceEvents": [...], ...}``) of one or several result dicts (one process
    per result)."""
    if isinstance(results, dict):
        results = [results]
    events: list[dict] = []
    labels = []
    for pid, result in enumerate(results, start=1):
        events.extend(trace_events(result, pid))
        labels.append(result.get("config", {}).get("label"))
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "source": "mspipe-bench trace",
            "runs": labels,
            "note": "measured stage timeline; ts/dur in microseconds from each run's start",
        },
    }


def export_trace(result_paths: Iterable[str | Path], out: str | Path) -> tuple[Path, int]:
    """Write the trace of the given result files to ``out``; return (path, number of stage events)."""
    from mspipe_bench.harness.results import load_result
    from mspipe_bench.harness.run import write_json_atomic

    results = [load_result(p) for p in result_paths]
    trace = to_chrome_trace(results)
    n = sum(1 for e in trace["traceEvents"] if e["ph"] == "X")
    return write_json_atomic(out, trace), n
