"""Discrete-event model of the five stages S, F, M, T, U under each trainer's rules (design.md §2, §4).

The simulator answers "what would this trainer do with these stage times?": give it stage times (constants,
per-iteration lists, a result file's measured iterations, or a what-if profile) and a
:class:`~mspipe_bench.trainers.rules.Schedule`, and it returns the simulated timeline, throughput,
staleness bounds, observed staleness and bubbles. Everything here is **simulated**, never measured.

Model
-----
- Which stage may start when comes *only* from :mod:`mspipe_bench.trainers.rules` (``prerequisites``,
  ``choose_staleness``, ``delayed_fetch_start``, ``TimelineView``, ``StageEstimator``): there is no second
  copy of the rules here.
- Workers (``rules.workers``, the executor's threads): with a bound k >= 2 a ``sampler`` thread (S), a
  ``loader`` thread (F and M, in the order F(0), M(0), F(1), M(1), ...), a ``trainer`` thread (T) and an
  ``updater`` thread (U); with k = 1 (presample, fixed-staleness K=1) ``sampler`` (S and F) and ``trainer``
  (M, T, U); ``sequential`` runs everything on one ``main`` thread. Each worker runs one stage
  at a time, in iteration order.
  ``X(i)`` starts at ``max(end of its prerequisites, moment its worker is free)``.
- ``mspipe``: when F(i) ends the loader picks ``k(i)`` (``choose_staleness``) and the start of M(i)
  (``delayed_fetch_start``) from a :class:`TimelineView` holding only what is known at that moment (stages
  started / finished no later than the end of F(i); the rest predicted from their prerequisites), with stage
  times from a :class:`StageEstimator` (EMA) fed with the durations of the stages finished so far. M(i) also
  waits for its actual prerequisite U(i-k). Other trainers use ``Schedule.fixed_k()``.
- Observed staleness of iteration i = ``(i-1) - j`` with ``j`` the newest iteration whose U had finished
  when M(i) started (an update finishing exactly at that moment counts as visible). It never exceeds
  ``k(i) - 1`` (asserted).
- Bubble of iteration i >= 1 = how long T(i) waited after T(i-1) ended (0 for iteration 0).

Metrics
-------
- ``events_per_s``: ``iterations * batch_size / makespan`` where the makespan runs from 0 (start of S(0)) to
  the end of the last stage (U of the last iteration): whole-run throughput, warm-up and drain included.
- ``period_s``: the mean interval between consecutive T starts in steady state (iterations after the
  first quarter: ``(start T(n-1) - start T(q)) / (n-1-q)``); ``steady_events_per_s = batch_size / period_s``
  is the steady-state throughput. (Mean, not median: schedules repeating every k iterations have
  alternating intervals whose median is not the period.)
- ``bubble_share``: total bubble time / makespan.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mspipe_bench.trainers.rules import (
    WARMUP_STALENESS,
    STAGES,
    TRAINERS,
    Schedule,
    StageEstimator,
    TimelineView,
    choose_staleness,
    delayed_fetch_start,
    make_schedule,
    prerequisites,
    stage_workers,
)

WARMUP_MODES = ("first", "cold")


# --------------------------------------------------------------------------------------------------------
# Stage-time input
# --------------------------------------------------------------------------------------------------------


def _check_seconds(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what}: stage time must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{what}: stage time must be a finite number >= 0, got {value!r}")
    return v


def _check_stage_keys(keys: Iterable[str], what: str) -> None:
    keys = list(keys)
    unknown = [k for k in keys if k not in STAGES]
    if unknown:
        raise ValueError(f"{what}: unknown stage {unknown[0]!r} (stages are {', '.join(STAGES)})")
    missing = [s for s in STAGES if s not in keys]
    if missing:
        raise ValueError(f"{what}: missing stage {missing[0]!r} (need all of {', '.join(STAGES)})")


@dataclass
class StageTimes:
    """Per-iteration stage times in seconds: ``per_iteration[i][stage]``."""

    per_iteration: list[dict[str, float]]
    batch_size: int | None = None
    source: str = ""
    constant: dict[str, float] | None = None  # set when every iteration has the same times

    def __len__(self) -> int:
        return len(self.per_iteration)

    def mean(self) -> dict[str, float]:
        n = max(1, len(self.per_iteration))
        return {s: sum(it[s] for it in self.per_iteration) / n for s in STAGES}

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "iterations": len(self)}
        if self.constant is not None:
            out["tau_s"] = dict(self.constant)
        else:
            out["mean_tau_s"] = self.mean()
        if self.batch_size is not None:
            out["batch_size"] = self.batch_size
        return out


def stage_times(tau: Mapping[str, Any] | StageTimes, iterations: int | None = None) -> StageTimes:
    """Normalize stage-time input to :class:`StageTimes`.

    ``tau`` is ``{"S": 1.0, ...}`` (constants; ``iterations`` required), ``{"S": [..], ...}`` (per-iteration
    lists of equal length; the first ``iterations`` are used), or a :class:`StageTimes`.
    """
    if isinstance(tau, StageTimes):
        st = tau
    else:
        if not isinstance(tau, Mapping):
            raise ValueError(f"stage times must be a mapping stage -> seconds, got {type(tau).__name__}")
        _check_stage_keys(tau.keys(), "stage times")
        lists = {s: v for s, v in tau.items() if isinstance(v, (list, tuple))}
        if lists and len(lists) != len(STAGES):
            raise ValueError("stage times: give either constants for every stage or lists for every stage")
        if lists:
            lengths = {s: len(v) for s, v in lists.items()}
            if len(set(lengths.values())) != 1:
                raise ValueError(f"stage times: per-iteration lists differ in length: {lengths}")
            n = next(iter(lengths.values()))
            per = [
                {s: _check_seconds(tau[s][i], f"stage times {s}[{i}]") for s in STAGES} for i in range(n)
            ]
            st = StageTimes(per, source="per-iteration lists")
        else:
            const = {s: _check_seconds(tau[s], f"stage times {s}") for s in STAGES}
            if iterations is None:
                raise ValueError("stage times: constants need a number of iterations")
            st = StageTimes([dict(const) for _ in range(iterations)], source="constants", constant=const)
    if iterations is not None:
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        if iterations > len(st):
            raise ValueError(f"asked for {iterations} iterations but the stage times cover only {len(st)}")
        if iterations < len(st):
            st = StageTimes(st.per_iteration[:iterations], st.batch_size, st.source, st.constant)
    if len(st) < 1:
        raise ValueError("stage times cover no iteration")
    if not any(v > 0 for it in st.per_iteration for v in it.values()):
        raise ValueError("stage times are all zero: nothing to simulate")
    return st


def parse_tau(text: str) -> dict[str, float]:
    """Parse ``"S=1,F=1,M=2,T=10,U=2"`` (seconds; a value may end in ``ms`` or ``s``) into seconds."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"--tau: expected STAGE=SECONDS, got {part!r}")
        key, raw = (x.strip() for x in part.split("=", 1))
        if key not in STAGES:
            raise ValueError(f"--tau: unknown stage {key!r} (stages are {', '.join(STAGES)})")
        if key in out:
            raise ValueError(f"--tau: stage {key!r} given twice")
        scale = 1.0
        num = raw
        if raw.endswith("ms"):
            scale, num = 1e-3, raw[:-2]
        elif raw.endswith("s"):
            num = raw[:-1]
        try:
            value = float(num)
        except ValueError:
            raise ValueError(f"--tau: stage {key!r} time {raw!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"--tau: stage {key!r} time must be a finite number >= 0, got {raw!r}")
        out[key] = value * scale
    missing = [s for s in STAGES if s not in out]
    if missing:
        raise ValueError(f"--tau: missing stage {missing[0]!r} (need all of {', '.join(STAGES)})")
    return out


# --------------------------------------------------------------------------------------------------------
# Result-file input
# --------------------------------------------------------------------------------------------------------


def timeline_from_result(result: Mapping[str, Any], epochs: str | int = "first") -> StageTimes:
    """Measured per-iteration stage times of a result JSON, ready for :func:`simulate`.

    ``result["iterations"]`` is a list of ``{"epoch", "i", "durations": {"S": s, ...}}`` (training
    iterations in order) and ``result["config"]["batch_size"]`` the batch size. ``epochs``:

    - ``"first"`` (default): the first *complete* epoch: its ``i`` run 0, 1, ..., n-1 without gaps and
      n is the largest iteration count of any epoch (a truncated final epoch is not complete);
    - an int: that epoch number;
    - ``"all"``: every iteration of every epoch, concatenated in order (simulated as one stream).
    """
    if not isinstance(result, Mapping):
        raise ValueError("result must be a JSON object")
    iters = result.get("iterations")
    if not isinstance(iters, list) or not iters:
        raise ValueError("result has no 'iterations' list (per-iteration stage durations)")
    try:
        batch_size = int(result["config"]["batch_size"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("result has no config.batch_size") from None

    by_epoch: dict[Any, list[Mapping[str, Any]]] = {}
    for n, it in enumerate(iters):
        if not isinstance(it, Mapping) or "durations" not in it:
            raise ValueError(f"result iterations[{n}] has no 'durations'")
        by_epoch.setdefault(it.get("epoch", 0), []).append(it)

    if epochs == "all":
        chosen, label = list(iters), "all epochs"
    elif isinstance(epochs, int) and not isinstance(epochs, bool):
        if epochs not in by_epoch:
            raise ValueError(f"result has no epoch {epochs} (epochs: {sorted(by_epoch)})")
        chosen, label = by_epoch[epochs], f"epoch {epochs}"
    elif epochs == "first":
        longest = max(len(v) for v in by_epoch.values())
        chosen = None
        for ep, its in by_epoch.items():
            idx = [it.get("i") for it in its]
            if len(its) == longest and idx == list(range(len(its))):
                chosen, label = its, f"epoch {ep} (first complete)"
                break
        if chosen is None:
            raise ValueError("result has no complete epoch (iteration indices 0..n-1 without gaps)")
    else:
        raise ValueError(f"epochs must be 'first', 'all' or an epoch number, got {epochs!r}")

    per = []
    for n, it in enumerate(chosen):
        d = it["durations"]
        what = f"result iteration (epoch {it.get('epoch')}, i {it.get('i')})"
        if not isinstance(d, Mapping):
            raise ValueError(f"{what}: durations must be an object")
        missing = [s for s in STAGES if s not in d]
        if missing:
            raise ValueError(f"{what}: missing stage {missing[0]!r}")
        per.append({s: _check_seconds(d[s], f"{what} {s}") for s in STAGES})
    return StageTimes(per, batch_size=batch_size, source=f"measured stage times, {label}")


# --------------------------------------------------------------------------------------------------------
# Profiles (what-if stage times, e.g. from a GPU machine or a paper)
# --------------------------------------------------------------------------------------------------------

PROFILE_KEYS = ("source", "units", "profiles")
ENTRY_KEYS = ("model", "dataset", "batch_size", "tau", "note")
UNITS = {"ms": 1e-3, "s": 1.0}


@dataclass
class Profile:
    """One profile entry; ``tau`` in seconds (converted from the file's units)."""

    model: str
    dataset: str
    batch_size: int
    tau: dict[str, float]
    note: str
    source: str
    units: str
    path: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "profile": self.path,
            "model": self.model,
            "dataset": self.dataset,
            "batch_size": self.batch_size,
            "tau_s": dict(self.tau),
            "units_in_file": self.units,
            "source": self.source,
            "note": self.note,
        }


def load_profile(path: str | Path) -> list[Profile]:
    """Load and validate a profile YAML (``source``, ``units`` (``ms``/``s``), ``profiles``: a list of
    ``{model, dataset, batch_size, tau: {S, F, M, T, U}, note}``). Errors raise ValueError naming the file
    and the offending key."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"profile {p} not found")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{p}: expected a mapping with keys {', '.join(PROFILE_KEYS)}")
    for key in doc:
        if key not in PROFILE_KEYS:
            raise ValueError(f"{p}: unknown key {key!r} (allowed: {', '.join(PROFILE_KEYS)})")
    for key in PROFILE_KEYS:
        if key not in doc:
            raise ValueError(f"{p}: missing key {key!r}")
    source = doc["source"]
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"{p}: key 'source' must be a non-empty text saying where the numbers come from")
    units = doc["units"]
    if units not in UNITS:
        raise ValueError(f"{p}: key 'units' must be 'ms' or 's', got {units!r}")
    entries = doc["profiles"]
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{p}: key 'profiles' must be a non-empty list")
    out = []
    for n, e in enumerate(entries):
        where = f"{p}: profiles[{n}]"
        if not isinstance(e, dict):
            raise ValueError(f"{where}: must be a mapping")
        for key in e:
            if key not in ENTRY_KEYS:
                raise ValueError(f"{where}: unknown key {key!r} (allowed: {', '.join(ENTRY_KEYS)})")
        for key in ENTRY_KEYS:
            if key not in e:
                raise ValueError(f"{where}: missing key {key!r}")
        bs = e["batch_size"]
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise ValueError(f"{where}: key 'batch_size' must be a positive integer, got {bs!r}")
        tau = e["tau"]
        if not isinstance(tau, dict):
            raise ValueError(f"{where}: key 'tau' must be a mapping stage -> time")
        for key in tau:
            if key not in STAGES:
                raise ValueError(f"{where}: unknown key 'tau.{key}' (stages are {', '.join(STAGES)})")
        for s in STAGES:
            if s not in tau:
                raise ValueError(f"{where}: missing key 'tau.{s}'")
        secs = {}
        for s in STAGES:
            v = tau[s]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{where}: key 'tau.{s}' must be a number, got {v!r}")
            if v < 0:
                raise ValueError(f"{where}: key 'tau.{s}' must be >= 0, got {v!r}")
            secs[s] = float(v) * UNITS[units]
        out.append(
            Profile(
                model=str(e["model"]),
                dataset=str(e["dataset"]),
                batch_size=bs,
                tau=secs,
                note=str(e["note"] or ""),
                source=source.strip(),
                units=units,
                path=str(p),
            )
        )
    return out


# --------------------------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------------------------


@dataclass
class SimResult:
    """Simulated run of one trainer. Every number is simulated."""

    trainer: str
    schedule: Schedule
    iterations: int
    batch_size: int
    makespan_s: float
    events_per_s: float  # iterations * batch_size / makespan (whole run)
    period_s: float  # mean T-start interval in steady state
    steady_events_per_s: float  # batch_size / period_s
    k: list[int]
    observed_staleness: list[int]
    mean_observed_staleness: float
    max_observed_staleness: int
    bubble_s: list[float]
    bubble_share: float
    timeline: list[tuple[int, str, float, float, str]]  # (i, stage, start, end, worker)
    infeasible: list[int] = field(default_factory=list)  # mspipe: iterations where no k <= cap avoided a wait
    notes: list[str] = field(default_factory=list)

    def k_summary(self, values: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "min": min(self.k),
            "max": max(self.k),
            "mean": sum(self.k) / len(self.k),
        }
        if values:
            out["values"] = list(self.k)
        return out

    def to_dict(self, timeline: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "trainer": self.trainer,
            "schedule": {
                "staleness": self.schedule.staleness,
                "max_staleness": self.schedule.max_staleness,
                "prefetch": self.schedule.prefetch,
            },
            "iterations": self.iterations,
            "batch_size": self.batch_size,
            "makespan_s": self.makespan_s,
            "events_per_s": self.events_per_s,
            "period_s": self.period_s,
            "steady_events_per_s": self.steady_events_per_s,
            "k": list(self.k),
            "observed_staleness": list(self.observed_staleness),
            "mean_observed_staleness": self.mean_observed_staleness,
            "max_observed_staleness": self.max_observed_staleness,
            "bubble_s": list(self.bubble_s),
            "bubble_share": self.bubble_share,
            "infeasible": list(self.infeasible),
            "notes": list(self.notes),
        }
        if timeline:
            d["timeline"] = [list(row) for row in self.timeline]
        return d


class _Sim:
    """State of one simulation run."""

    def __init__(self, st: StageTimes, schedule: Schedule, alpha: float, warmup: str, delayed_fetch: bool):
        self.st = st
        self.n = len(st)
        self.schedule = schedule
        self._workers = stage_workers(schedule)
        self.start: dict[tuple[str, int], float] = {}
        self.end: dict[tuple[str, int], float] = {}
        self.worker_free: dict[str, float] = {}
        self.k: list[int] = []
        self.infeasible: list[int] = []
        self.notes: list[str] = []
        self.delayed_fetch = delayed_fetch
        # mspipe: knowledge of the loader at decision moments (fed in time order)
        if schedule.adaptive:
            initial = dict(st.per_iteration[0]) if warmup == "first" else None
            self.estimator = StageEstimator(alpha=alpha, initial=initial)
            self.view = TimelineView(schedule, self.estimator.get)
            self._pending_starts: list[tuple[float, int, tuple[str, int]]] = []
            self._pending_ends: list[tuple[float, int, tuple[str, int]]] = []
            self._seq = 0
            if warmup == "first":
                if st.constant is not None:
                    self.notes.append("stage-time estimates: the given constant stage times, then EMA")
                else:
                    self.notes.append(
                        "stage-time estimates: seeded with iteration 0's stage times, then EMA of finished stages"
                    )
            self._warmup_max_used: list[int] = []

    def worker(self, stage: str) -> str:
        return self._workers[stage]

    def tau(self, stage: str, i: int) -> float:
        return self.st.per_iteration[i][stage]

    def ready_time(self, stage: str, i: int, k: int = 1) -> float:
        pre = prerequisites(self.schedule, stage, i, k)
        t = max((self.end[p] for p in pre), default=0.0)
        return max(t, self.worker_free.get(self.worker(stage), 0.0))

    def place(self, stage: str, i: int, start: float) -> None:
        key = (stage, i)
        end = start + self.tau(stage, i)
        self.start[key] = start
        self.end[key] = end
        self.worker_free[self.worker(stage)] = end
        if self.schedule.adaptive:
            self._seq += 1
            heapq.heappush(self._pending_starts, (start, self._seq, key))
            heapq.heappush(self._pending_ends, (end, self._seq, key))

    def can_place(self, stage: str, i: int) -> bool:
        return all(p in self.end for p in prerequisites(self.schedule, stage, i, 1))

    # -- mspipe knowledge ------------------------------------------------------------------------------
    def advance_view(self, now: float) -> None:
        """Make the view and the estimator know every stage started / finished no later than ``now``."""
        while self._pending_starts and self._pending_starts[0][0] <= now:
            _, _, key = heapq.heappop(self._pending_starts)
            self.view.start[key] = self.start[key]
        while self._pending_ends and self._pending_ends[0][0] <= now:
            _, _, key = heapq.heappop(self._pending_ends)
            self.view.end[key] = self.end[key]
            self.estimator.observe(key[0], self.end[key] - self.start[key])
        self.view.now = now

    def decide_m(self, i: int) -> tuple[int, float]:
        """k(i) and the planned start of M(i) (before waiting for the actual U(i-k))."""
        f_end = self.end[("F", i)]
        if not self.schedule.adaptive:
            return self.schedule.fixed_k(), f_end
        self.advance_view(f_end)
        if i > 0 and not self.estimator.ready():
            # cold start without estimates, as the executor's first epoch: the warm-up bound, no delay
            k = min(WARMUP_STALENESS, self.schedule.max_staleness)
            self._warmup_max_used.append(i)
            planned = f_end
        else:
            k, feasible = choose_staleness(self.view, i, f_end)
            if not feasible:
                self.infeasible.append(i)
            planned = (delayed_fetch_start(self.view, i, f_end, k, self.estimator.fetch_margin())
                       if self.delayed_fetch else f_end)
        self.view.k[i] = k
        return k, planned

    # -- main loop -------------------------------------------------------------------------------------
    def run(self) -> None:
        n = self.n
        nxt = {s: 0 for s in STAGES}
        while nxt["U"] < n:
            progress = True
            while progress:  # place every stage that does not depend on an undecided M
                progress = False
                for s in ("S", "F", "T", "U"):
                    j = nxt[s]
                    if j < n and self.can_place(s, j):
                        self.place(s, j, self.ready_time(s, j))
                        nxt[s] += 1
                        progress = True
            i = nxt["M"]
            if i >= n:
                continue
            assert ("F", i) in self.end, "F(i) must be placed before M(i) is decided"
            k, planned = self.decide_m(i)
            self.k.append(k)
            start = max(planned, self.ready_time("M", i, k))  # also waits for the actual U(i-k)
            self.place("M", i, start)
            nxt["M"] += 1
        if self.schedule.adaptive and self._warmup_max_used:
            self.notes.append(
                "no stage-time estimates yet for iterations "
                f"{self._warmup_max_used[0]}..{self._warmup_max_used[-1]}: k = {WARMUP_STALENESS} (cold start), fetch not delayed"
            )


def _steady_period(t_starts: Sequence[float], makespan: float) -> float:
    """Mean interval between T starts after the first quarter of the iterations (warm-up).

    The mean over the window (= its slope), not the median of the intervals: schedules that repeat every
    k iterations have alternating intervals (fixed-staleness k=2 with M+U > T: 10, 12, 10, 12, ...), whose
    median (10) is not the period (11)."""
    n = len(t_starts)
    if n < 2:
        return makespan
    first = min(max(1, n // 4), n - 2) if n > 2 else 0
    return (t_starts[-1] - t_starts[first]) / (n - 1 - first)


def simulate(
    tau: Mapping[str, Any] | StageTimes,
    schedule: Schedule,
    iterations: int | None = None,
    batch_size: int | None = None,
    *,
    alpha: float = 0.2,
    warmup: str = "first",
    delayed_fetch: bool = True,
) -> SimResult:
    """Simulate ``iterations`` iterations of ``schedule`` with stage times ``tau``.

    ``tau``: constants ``{"S": 1.0, ...}`` (seconds; ``iterations`` required), per-iteration lists, or a
    :class:`StageTimes` (e.g. from :func:`timeline_from_result`). ``batch_size`` defaults to the stage
    times' batch size, else 600. ``alpha``: EMA weight of the mspipe stage-time estimator. ``warmup``
    (mspipe): ``"first"`` seeds the estimator with iteration 0's stage times (the constants when constants
    are given); ``"max"`` starts it empty and uses ``k = max_staleness`` without delayed fetch until every
    stage kind has finished once. ``delayed_fetch=False`` (mspipe ablation) starts M(i) as early as allowed.
    """
    if warmup not in WARMUP_MODES:
        raise ValueError(f"warmup must be one of {WARMUP_MODES}, got {warmup!r}")
    st = stage_times(tau, iterations)
    if batch_size is None:
        batch_size = st.batch_size if st.batch_size is not None else 600
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    sim = _Sim(st, schedule, alpha, warmup, delayed_fetch)
    sim.run()
    n = sim.n

    observed = []
    u_ends = [sim.end[("U", j)] for j in range(n)]
    for i in range(n):
        m_start = sim.start[("M", i)]
        j = -1
        for jj in range(i - 1, -1, -1):  # U ends are non-decreasing: newest finished U
            if u_ends[jj] <= m_start:
                j = jj
                break
        obs = (i - 1) - j if i > 0 else 0
        assert obs <= sim.k[i] - 1, (schedule.trainer, i, obs, sim.k[i])
        observed.append(obs)

    t_starts = [sim.start[("T", i)] for i in range(n)]
    t_ends = [sim.end[("T", i)] for i in range(n)]
    bubbles = [0.0] + [max(0.0, t_starts[i] - t_ends[i - 1]) for i in range(1, n)]
    makespan = max(sim.end.values())
    period = _steady_period(t_starts, makespan)
    order = {s: n for n, s in enumerate(STAGES)}
    timeline = sorted(
        ((i, s, sim.start[(s, i)], sim.end[(s, i)], sim.worker(s)) for (s, i) in sim.start),
        key=lambda r: (r[2], r[0], order[r[1]]),
    )
    return SimResult(
        trainer=schedule.trainer,
        schedule=schedule,
        iterations=n,
        batch_size=batch_size,
        makespan_s=makespan,
        events_per_s=n * batch_size / makespan if makespan > 0 else math.inf,
        period_s=period,
        steady_events_per_s=batch_size / period if period > 0 else math.inf,
        k=list(sim.k),
        observed_staleness=observed,
        mean_observed_staleness=sum(observed) / n,
        max_observed_staleness=max(observed),
        bubble_s=bubbles,
        bubble_share=sum(bubbles) / makespan if makespan > 0 else 0.0,
        timeline=timeline,
        infeasible=list(sim.infeasible),
        notes=list(sim.notes),
    )


def simulate_trainers(
    tau: Mapping[str, Any] | StageTimes,
    trainers: Sequence[str] = TRAINERS,
    *,
    iterations: int | None = None,
    batch_size: int | None = None,
    staleness: int = 2,
    max_staleness: int = 4,
    prefetch: int = 2,
    **kwargs: Any,
) -> dict[str, SimResult]:
    """:func:`simulate` for each trainer (``staleness`` is the fixed-staleness bound). Always includes
    ``sequential`` (the reference for speedups)."""
    for t in trainers:
        if t not in TRAINERS:
            raise ValueError(f"trainer {t!r} is not one of {', '.join(TRAINERS)}")
    names = list(dict.fromkeys(["sequential", *trainers]))
    return {
        t: simulate(
            tau,
            make_schedule(t, staleness=staleness, max_staleness=max_staleness, prefetch=prefetch),
            iterations,
            batch_size,
            **kwargs,
        )
        for t in names
    }


def summarize(results: Mapping[str, SimResult], trainers: Sequence[str] | None = None,
              values: bool = False) -> dict[str, dict[str, Any]]:
    """Compact per-trainer summary (the ``trainers`` object of ``simulate --json``). ``speedup_vs_sequential``
    compares ``events_per_s`` (whole makespan); ``steady_speedup_vs_sequential`` compares periods."""
    seq = results.get("sequential")
    out = {}
    for name in trainers or list(results):
        r = results[name]
        d: dict[str, Any] = {
            "events_per_s": r.events_per_s,
            "period_s": r.period_s,
            "steady_events_per_s": r.steady_events_per_s,
            "speedup_vs_sequential": (r.events_per_s / seq.events_per_s) if seq else None,
            "steady_speedup_vs_sequential": (seq.period_s / r.period_s) if seq and r.period_s > 0 else None,
            "k": r.k_summary(values=values),
            "mean_observed_staleness": r.mean_observed_staleness,
            "max_observed_staleness": r.max_observed_staleness,
            "bubble_share": r.bubble_share,
            "makespan_s": r.makespan_s,
        }
        if r.infeasible:
            d["infeasible_iterations"] = len(r.infeasible)
        if values:
            d["observed_staleness"] = list(r.observed_staleness)
            d["bubble_s"] = list(r.bubble_s)
        if r.notes:
            d["notes"] = list(r.notes)
        out[name] = d
    return out
