"""Discrete-event model of the five stages S, F, M, T, U under each trainer's rules (docs/design.md).

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
  (M, T, U); ``sequential`` runs everything on one ``main`` thread. Each worker runs one stage at a time,
  in a fixed order: each stage kind in iteration order, a stage queued on its worker as soon as its
  prerequisites are queued (M(i) once k(i) is chosen), independent of the times.
  ``X(i)`` starts at ``max(end of its prerequisites, moment its worker is free)``.
- Durations: a stage runs for its stage time, unless a :class:`~.contention.Contention` slows the stages
  that overlap (see that module: while others run, a stage's work drains at ``1 / factor`` per second).
  The simulation is event-driven (stage ends and mspipe's planned fetch starts) so that a stage's end can
  depend on stages that start after it; with every factor 1 each stage ends at exactly start + stage time.
- ``mspipe``: when F(i) ends the loader picks ``k(i)`` (``choose_staleness``) and the start of M(i)
  (``delayed_fetch_start``) from a :class:`TimelineView` holding only what is known at that moment (stages
  started / finished no later than the end of F(i); the rest predicted from their prerequisites), with stage
  times from a :class:`StageEstimator` (EMA) fed with the durations of the stages finished so far (as
  slowed by contention, if any). M(i) also waits for its actual prerequisite U(i-k). Other trainers use
  ``Schedule.fixed_k()``.
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
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from mspipe_bench.errors import UserError
from mspipe_bench.trainers.rules import (
    STAGES,
    TRAINERS,
    WARMUP_STALENESS,
    Schedule,
    StageEstimator,
    TimelineView,
    choose_staleness,
    delayed_fetch_start,
    make_schedule,
    prerequisites,
    stage_workers,
)
from mspipe_bench.trainers.simulator.contention import Contention
from mspipe_bench.trainers.simulator.inputs import StageTimes, stage_times

WARMUP_MODES = ("first", "cold")

Key = tuple[str, int]


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
    contention: Contention | None = None

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
            "contention": self.contention.model_dump() if self.contention is not None else None,
        }
        if timeline:
            d["timeline"] = [list(row) for row in self.timeline]
        return d


class _Sim:
    """State of one simulation run.

    Stages are *queued* on their worker in a time-independent order (:meth:`run`), then an event loop
    (:meth:`_advance`) moves the clock from one stage end or planned start to the next. A running stage
    holds ``[anchor time, work left at the anchor, slowdown]``: it ends at ``anchor + work x slowdown``
    unless the set of stages beside it changes, which re-anchors it (never when the slowdown stays the same,
    so without contention every stage ends at exactly ``start + tau``)."""

    def __init__(self, st: StageTimes, schedule: Schedule, alpha: float, warmup: str, delayed_fetch: bool,
                 contention: Contention | None):
        self.st = st
        self.n = len(st)
        self.schedule = schedule
        self._workers = stage_workers(schedule)
        self.contention = contention if contention is not None and not contention.trivial else None
        self.start: dict[Key, float] = {}
        self.end: dict[Key, float] = {}
        self.k: list[int] = []
        self.infeasible: list[int] = []
        self.notes: list[str] = []
        self.delayed_fetch = delayed_fetch
        # the event loop
        self.now = 0.0
        self._program: dict[str, deque[Key]] = {w: deque() for w in dict.fromkeys(self._workers.values())}
        self._busy: dict[str, Key | None] = {w: None for w in self._program}
        self._queued: set[Key] = set()
        self._seq: dict[Key, int] = {}
        self._k_of: dict[int, int] = {}  # bound of M(i), for its prerequisites
        self._not_before: dict[Key, float] = {}  # mspipe's planned start of M(i)
        self._running: dict[Key, list[float]] = {}
        # mspipe: knowledge of the loader at decision moments (fed in time order)
        if schedule.adaptive:
            initial = dict(st.per_iteration[0]) if warmup == "first" else None
            self.estimator = StageEstimator(alpha=alpha, initial=initial)
            self.view = TimelineView(schedule, self.estimator.get)
            self._pending_starts: list[tuple[float, int, Key]] = []
            self._pending_ends: list[tuple[float, int, Key]] = []
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

    # -- queueing (time-independent order) -------------------------------------------------------------
    def queue(self, stage: str, i: int, not_before: float | None = None) -> None:
        key = (stage, i)
        self._seq[key] = len(self._seq)
        self._queued.add(key)
        self._program[self.worker(stage)].append(key)
        if not_before is not None:
            self._not_before[key] = not_before

    def can_queue(self, stage: str, i: int) -> bool:
        return all(p in self._queued for p in prerequisites(self.schedule, stage, i, 1))

    # -- event loop ------------------------------------------------------------------------------------
    def _can_start(self, key: Key) -> bool:
        stage, i = key
        if self._not_before.get(key, -math.inf) > self.now:
            return False
        return all(p in self.end for p in prerequisites(self.schedule, stage, i, self._k_of.get(i, 1)))

    def _finish(self, key: Key) -> None:
        self.end[key] = self.now
        self._busy[self.worker(key[0])] = None
        self._running.pop(key, None)
        if self.schedule.adaptive:
            heapq.heappush(self._pending_ends, (self.now, self._seq[key], key))

    def _start_ready(self) -> None:
        """Start every worker's next stage that may start now (zero-length stages end at once, which may let
        further stages start at the same moment)."""
        started = True
        while started:
            started = False
            for w, program in self._program.items():
                if self._busy[w] is not None or not program or not self._can_start(program[0]):
                    continue
                key = program.popleft()
                self.start[key] = self.now
                if self.schedule.adaptive:
                    heapq.heappush(self._pending_starts, (self.now, self._seq[key], key))
                work = self.tau(*key)
                if work > 0:
                    self._running[key] = [self.now, work, 1.0]
                    self._busy[w] = key
                else:
                    self._finish(key)
                started = True

    def _update_rates(self) -> None:
        """Re-anchor the running stages whose slowdown changed (the set beside them changed)."""
        if self.contention is None:
            return
        for key, run in self._running.items():
            slow = self.contention.slowdown(key[0], (k[0] for k in self._running if k != key))
            if slow != run[2]:
                run[1] = max(0.0, run[1] - (self.now - run[0]) / run[2])
                run[0], run[2] = self.now, slow

    def _next_event(self) -> float:
        times = [run[0] + run[1] * run[2] for run in self._running.values()]
        for w, program in self._program.items():
            if self._busy[w] is None and program:
                nb = self._not_before.get(program[0])
                if nb is not None and nb > self.now:
                    times.append(nb)
        if not times:
            raise RuntimeError(f"simulation stalled at t={self.now} ({self.schedule.trainer}): nothing runs or "
                               f"waits for a time, queued heads {[p[0] for p in self._program.values() if p]}")
        return min(times)

    def _advance(self) -> None:
        """Move the clock to the next event; end the stages that end then, start what may start."""
        self.now = self._next_event()
        for key in [k for k, run in self._running.items() if run[0] + run[1] * run[2] <= self.now]:
            self._finish(key)
        self._start_ready()
        self._update_rates()

    def _run_until(self, done: Callable[[], bool]) -> None:
        self._start_ready()
        self._update_rates()
        while not done():
            self._advance()

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
        while True:
            progress = True
            while progress:  # queue every stage that does not depend on an undecided M
                progress = False
                for s in ("S", "F", "T", "U"):
                    j = nxt[s]
                    if j < n and self.can_queue(s, j):
                        self.queue(s, j)
                        nxt[s] += 1
                        progress = True
            i = nxt["M"]
            if i >= n:
                break
            assert ("F", i) in self._queued, "F(i) must be queued before M(i) is decided"
            # M(i) is decided when F(i) ends: run the clock to that moment (every stage that may start then
            # has started), no further, since M(i) may start at once
            self._run_until(lambda: ("F", i) in self.end)
            k, planned = self.decide_m(i)
            self.k.append(k)
            self._k_of[i] = k
            self.queue("M", i, not_before=planned)  # also waits for the actual U(i-k)
            nxt["M"] += 1
        self._run_until(lambda: len(self.end) == len(STAGES) * n)
        if self.schedule.adaptive and self._warmup_max_used:
            self.notes.append(
                "no stage-time estimates yet for iterations "
                f"{self._warmup_max_used[0]}..{self._warmup_max_used[-1]}: k = {WARMUP_STALENESS} (cold start), "
                "fetch not delayed"
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


def _contention(value: Contention | float | None) -> Contention | None:
    if value is None or isinstance(value, Contention):
        return value
    return Contention(factor=float(value))


def simulate(
    tau: Mapping[str, Any] | StageTimes,
    schedule: Schedule,
    iterations: int | None = None,
    batch_size: int | None = None,
    *,
    alpha: float = 0.2,
    warmup: str = "first",
    delayed_fetch: bool = True,
    contention: Contention | float | None = None,
) -> SimResult:
    """Simulate ``iterations`` iterations of ``schedule`` with stage times ``tau``.

    ``tau``: constants ``{"S": 1.0, ...}`` (seconds; ``iterations`` required), per-iteration lists, or a
    :class:`StageTimes` (e.g. from :func:`timeline_from_result`). ``batch_size`` defaults to the stage
    times' batch size, else 600. ``alpha``: EMA weight of the mspipe stage-time estimator. ``warmup``
    (mspipe): ``"first"`` seeds the estimator with iteration 0's stage times (the constants when constants
    are given); ``"cold"`` starts it empty and uses ``k = 2`` without delayed fetch until every
    stage kind has finished once. ``delayed_fetch=False`` (mspipe ablation) starts M(i) as early as allowed.
    ``contention``: slowdown of overlapping stages (:class:`Contention`, or one global factor); None or
    factor 1: stages take exactly their stage times.
    """
    if warmup not in WARMUP_MODES:
        raise ValueError(f"warmup must be one of {WARMUP_MODES}, got {warmup!r}")
    st = stage_times(tau, iterations)
    if batch_size is None:
        batch_size = st.batch_size if st.batch_size is not None else 600
    if batch_size < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}")
    contention = _contention(contention)
    sim = _Sim(st, schedule, alpha, warmup, delayed_fetch, contention)
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
        contention=contention,
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
            raise UserError(f"trainer {t!r} is not one of {', '.join(TRAINERS)}")
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


# --------------------------------------------------------------------------------------------------------
# Contention sweeps
# --------------------------------------------------------------------------------------------------------


def sweep_contention(
    tau: Mapping[str, Any] | StageTimes,
    factors: Sequence[float],
    trainers: Sequence[str] = ("presample", "fixed-staleness", "mspipe"),
    *,
    base: Contention | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Speedup over sequential (whole makespan, as :func:`summarize`) of each trainer at each global
    contention factor; pair factors of ``base`` are kept. ``kwargs`` go to :func:`simulate_trainers`.
    Sequential runs one stage at a time, so contention never changes it: it is the reference at every factor."""
    base = base or Contention()
    rows = []
    for f in factors:
        c = base.with_factor(f)
        res = simulate_trainers(tau, trainers, contention=c, **kwargs)
        seq = res["sequential"].events_per_s
        rows.append({"factor": float(f), **{t: res[t].events_per_s / seq for t in trainers}})
    return rows


def contention_for_speedup(
    tau: Mapping[str, Any] | StageTimes,
    trainer: str,
    target: float,
    *,
    base: Contention | None = None,
    hi: float = 8.0,
    tol: float = 1e-4,
    **kwargs: Any,
) -> float | None:
    """The global contention factor in ``[1, hi]`` at which ``trainer``'s simulated speedup over sequential
    falls to ``target`` (bisection; the speedup falls as the factor grows). None when ``target`` is above
    the speedup at factor 1 or below the one at ``hi``."""

    def speedup(f: float) -> float:
        return sweep_contention(tau, [f], [trainer], base=base, **kwargs)[0][trainer]

    lo_s, hi_s = speedup(1.0), speedup(hi)
    if target > lo_s + 1e-12 or target < hi_s - 1e-12:
        return None
    lo = 1.0
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if speedup(mid) >= target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
