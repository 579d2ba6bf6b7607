"""Which stage may start when: the one definition shared by the real executor and the schedule simulator.

docs/design.md §2. Every trainer is a schedule of the same five stages S, F, M, T, U over iterations
``0, 1, 2, ...``. A stage ``X(i)`` may start when all its *prerequisites* ``(Y, j)`` have finished
(pairs with ``j < 0`` are dropped). The rules:

- data order inside an iteration: S(i) -> F(i) -> M(i) -> T(i) -> U(i);
- one sampler S(i) after S(i-1); one trainer T(i) after T(i-1); in-order updates U(i) after U(i-1);
- F and M share the loading resource: F(i) after M(i-1);
- staleness bound k(i): M(i) after U(i-k(i)) (k = 1: exact sequential semantics);
- run-ahead bound (prefetch depth D): S(i) after M(i-D), so at most D sampled batches wait for M;
- ``sequential``: S(i) after U(i-1) (nothing overlaps).

Because each stage kind runs in order, "X(j) finished" is equivalent to "at least j+1 iterations of X
finished", so the executor needs only one completion counter per stage kind.

For ``mspipe`` the bound is chosen per iteration (:func:`choose_staleness`) and M(i) is delayed to the
latest start that still ends before T(i-1) ends (:func:`delayed_fetch_start`); both use predicted stage
ends (:class:`TimelineView`) computed from the same prerequisites with online stage-time estimates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

STAGES = ("S", "F", "M", "T", "U")
STAGE_NAMES = {"S": "sample", "F": "feature fetch", "M": "memory fetch", "T": "train", "U": "memory update"}
# Communication of a data-parallel run (trainers/distributed.py), timed inside the stage that issues it and
# recorded like a stage (timeline rows, per-iteration durations): T's gradient all-reduce, U's all-gather of
# the ranks' memory writes, and mspipe's agreement on k(i) (issued by the loader when it decides k(i)).
COMM_STAGES = ("AR", "AG", "KA")
COMM_NAMES = {"AR": "gradient all-reduce", "AG": "memory all-gather", "KA": "k agreement"}
# mspipe's bound before every stage has been timed once (cold start: U(0) not finished yet), fetch not
# delayed; 2 is the steady-state minimum whenever M + U < T
WARMUP_STALENESS = 2
TRAINERS = ("sequential", "presample", "fixed-staleness", "mspipe")


@dataclass(frozen=True)
class Schedule:
    """A trainer's rule parameters."""

    trainer: str
    staleness: int = 1  # fixed bound k (sequential / presample: 1)
    max_staleness: int = 4  # cap on the adaptive bound (mspipe)
    prefetch: int = 2  # run-ahead depth D of S/F (pipelined trainers)
    # mspipe delays M(i) so that it sees as many committed updates as possible; a model without node memory
    # has none to see, and the delay would only risk T(i) waiting for a late wake-up
    delay_fetch: bool = True

    def __post_init__(self) -> None:
        if self.trainer not in TRAINERS:
            raise ValueError(f"trainer {self.trainer!r} is not one of {', '.join(TRAINERS)}")
        if self.staleness < 1:
            raise ValueError(f"staleness must be >= 1, got {self.staleness}")
        if self.max_staleness < 1:
            raise ValueError(f"max_staleness must be >= 1, got {self.max_staleness}")
        if self.prefetch < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {self.prefetch}")

    @property
    def adaptive(self) -> bool:
        return self.trainer == "mspipe"

    @property
    def pipelined(self) -> bool:
        return self.trainer != "sequential"

    @property
    def exact(self) -> bool:
        """The bound is 1 at every iteration (M(i) after U(i-1)): numerics identical to sequential."""
        return not self.adaptive and self.fixed_k() == 1

    def fixed_k(self) -> int:
        if self.trainer in ("sequential", "presample"):
            return 1
        if self.trainer == "fixed-staleness":
            return self.staleness
        raise ValueError("mspipe chooses k per iteration (choose_staleness)")


# Worker threads of the pipelined trainers and the stages each runs, in iteration order. With a bound k >= 2,
# M(i) overlaps T(i-1) and U(i) overlaps T(i+1), so M (with F: they share the loading resource), T and U get
# a thread each. With k = 1 everywhere, M(i) -> T(i) -> U(i) -> M(i+1) is a chain that can never overlap, so
# one thread runs it and the critical path has no cross-thread hand-off (each costs a wake-up plus a GIL
# acquisition while the sampler runs Python). F then runs in the sampler's thread (F(i) after S(i) and M(i-1)
# either way): a third thread waking up every iteration costs the trainer its GIL too. The measurements behind
# both choices are in docs/performance.md.
PIPELINE_WORKERS = {"sampler": ("S",), "loader": ("F", "M"), "trainer": ("T",), "updater": ("U",)}
CHAIN_WORKERS = {"sampler": ("S", "F"), "trainer": ("M", "T", "U")}
SEQUENTIAL_WORKERS = {"main": STAGES}
WORKER_NAMES = frozenset(PIPELINE_WORKERS) | frozenset(CHAIN_WORKERS)
# display order of the threads that run stages (trace events, Gantt lanes): the pipeline's workers, then the
# sequential trainer's thread ("main" in a simulation, "MainThread" when measured)
THREAD_ORDER = (*PIPELINE_WORKERS, *SEQUENTIAL_WORKERS, "MainThread")


def thread_sort_key(name: str) -> tuple[int, int, str]:
    """Display order of a timeline thread: by rank (a data-parallel run names its threads ``r<rank>/<thread>``,
    one lane group per rank), then by :data:`THREAD_ORDER`."""
    rank, sep, thread = name.partition("/")
    if sep and rank[:1] == "r" and rank[1:].isdigit():
        rank_no, name = int(rank[1:]), thread
    else:
        rank_no = -1
    return rank_no, THREAD_ORDER.index(name) if name in THREAD_ORDER else len(THREAD_ORDER), name


def workers(schedule: Schedule) -> dict[str, tuple[str, ...]]:
    """Which thread runs which stages (the executor's threads, the simulator's lanes)."""
    if not schedule.pipelined:
        return SEQUENTIAL_WORKERS
    return CHAIN_WORKERS if schedule.exact else PIPELINE_WORKERS


def stage_workers(schedule: Schedule) -> dict[str, str]:
    return {stage: name for name, stages in workers(schedule).items() for stage in stages}


def make_schedule(trainer: str, staleness: int = 1, max_staleness: int = 4, prefetch: int = 2,
                  delay_fetch: bool = True) -> Schedule:
    if trainer in ("sequential", "presample"):
        staleness = 1
    return Schedule(trainer, staleness=staleness, max_staleness=max_staleness, prefetch=prefetch,
                    delay_fetch=delay_fetch)


def prerequisites(schedule: Schedule, stage: str, i: int, k: int = 1) -> list[tuple[str, int]]:
    """The (stage, iteration) pairs that must have finished before ``stage(i)`` may start.

    ``k`` is the staleness bound of iteration ``i`` (only used for M).
    """
    if stage == "S":
        pre = [("S", i - 1)]
        if schedule.pipelined:
            pre.append(("M", i - schedule.prefetch))
        else:
            pre.append(("U", i - 1))
    elif stage == "F":
        pre = [("S", i), ("M", i - 1)]
    elif stage == "M":
        pre = [("F", i), ("U", i - k)]
    elif stage == "T":
        pre = [("M", i), ("T", i - 1)]
    elif stage == "U":
        pre = [("T", i), ("U", i - 1)]
    else:
        raise ValueError(f"unknown stage {stage!r}")
    return [(s, j) for s, j in pre if j >= 0]


def k_min_steady_state(tau_m: float, tau_u: float, tau_t: float) -> int:
    """docs/design.md §2: ``k_min = 1 + ceil((tau_M + tau_U) / tau_T)`` in steady state with T the bottleneck."""
    return 1 + math.ceil((tau_m + tau_u) / tau_t - 1e-12)


class StageEstimator:
    """Online stage-time estimates: an exponential moving average per stage kind, and an EMA of the absolute
    deviation from it (how much the stage jitters)."""

    def __init__(self, alpha: float = 0.2, initial: dict[str, float] | None = None):
        self.alpha = alpha
        self.tau: dict[str, float | None] = {s: None for s in STAGES}
        self.dev: dict[str, float] = {s: 0.0 for s in STAGES}
        if initial:
            self.tau.update(initial)

    def observe(self, stage: str, seconds: float) -> None:
        old = self.tau[stage]
        if old is not None:
            self.dev[stage] = (1 - self.alpha) * self.dev[stage] + self.alpha * abs(seconds - old)
        self.tau[stage] = seconds if old is None else (1 - self.alpha) * old + self.alpha * seconds

    def fetch_margin(self) -> float:
        """Safety margin of the delayed fetch: M(i) is timed to end this long before the predicted end of
        T(i-1) — twice the typical deviation of T and of M (0 when stage times are constant), so ordinary
        jitter does not make T wait for a fetch that started too late."""
        return 2.0 * (self.dev["T"] + self.dev["M"])

    def get(self, stage: str) -> float:
        v = self.tau[stage]
        return 0.0 if v is None else v

    def ready(self) -> bool:
        return all(v is not None for v in self.tau.values())


@dataclass
class TimelineView:
    """What is known at a moment: start/end times of stages that started/finished, and the bound k chosen
    for each iteration whose M was decided. Predicts the end of any stage by the prerequisite rules."""

    schedule: Schedule
    tau: Callable[[str], float]
    start: dict[tuple[str, int], float] = field(default_factory=dict)
    end: dict[tuple[str, int], float] = field(default_factory=dict)
    k: dict[int, int] = field(default_factory=dict)
    # the moment this view describes: a stage that started but has not ended ends after ``now``, and a
    # stage that has not started starts no earlier than ``now`` (None: no such clamp)
    now: float | None = None

    def predicted_end(self, stage: str, i: int, _memo: dict | None = None) -> float:
        if i < 0:
            return -math.inf
        key = (stage, i)
        if key in self.end:
            return self.end[key]
        memo = {} if _memo is None else _memo
        if key in memo:
            return memo[key]
        if key in self.start:
            value = self.start[key] + self.tau(stage)
            if self.now is not None:
                value = max(value, self.now)
        else:
            kk = self.k.get(i, 1)
            ready = max(
                (self.predicted_end(s, j, memo) for s, j in prerequisites(self.schedule, stage, i, kk)),
                default=0.0,
            )
            if self.now is not None:
                ready = max(ready, self.now)
            value = ready + self.tau(stage)
        memo[key] = value
        return value


def choose_staleness(view: TimelineView, i: int, f_end: float) -> tuple[int, bool]:
    """docs/design.md §2: the minimal ``k`` with ``max(end F(i), end U(i-k)) + tau_M <= end T(i-1)``, capped by
    ``max_staleness``. Returns ``(k, feasible)``; when no k up to the cap avoids a wait, returns
    ``feasible=False`` (T will wait: a bubble) and the smallest k whose M(i) can start as early as with the
    cap (the cap itself when U(i-cap) is what M waits for; smaller when F(i) is the later one, e.g. when
    the loader, not the updates, is the bottleneck)."""
    if i == 0:
        return 1, True
    memo: dict = {}
    t_prev_end = view.predicted_end("T", i - 1, memo)
    tau_m = view.tau("M")
    cap = view.schedule.max_staleness
    ready = [max(f_end, view.predicted_end("U", i - k, memo)) for k in range(1, cap + 1)]
    for k in range(1, cap + 1):
        if ready[k - 1] + tau_m <= t_prev_end + 1e-9:
            return k, True
    best = ready[cap - 1]
    return next(k for k in range(1, cap + 1) if ready[k - 1] <= best + 1e-9), False


def delayed_fetch_start(view: TimelineView, i: int, f_end: float, k: int, margin: float = 0.0) -> float:
    """docs/design.md §2: start M(i) at ``max(end F(i), end U(i-k), predicted end T(i-1) - tau_M - margin)``;
    ``margin`` (:meth:`StageEstimator.fetch_margin`) absorbs the jitter of the predictions. Without
    ``schedule.delay_fetch`` (a model without memory) M(i) starts as soon as its prerequisites allow."""
    memo: dict = {}
    ready = max(f_end, view.predicted_end("U", i - k, memo))
    if not view.schedule.delay_fetch:
        return ready
    return max(ready, view.predicted_end("T", i - 1, memo) - view.tau("M") - margin)
