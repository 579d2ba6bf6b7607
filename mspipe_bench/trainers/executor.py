"""The executor: runs one epoch's training iterations under a trainer's schedule (docs/design.md §2).

``sequential`` runs S, F, M, T, U of each iteration in the calling thread. The pipelined trainers run the
same stage functions in worker threads (``rules.workers``), each taking iterations in order: with a bound
k >= 2 four of them — ``sampler`` (S), ``loader`` (F and M, alternating, so F(i) follows M(i-1)), ``trainer``
(T), ``updater`` (U); with k = 1 (presample, fixed-staleness K=1) two — ``sampler`` (S and F), ``trainer``
(the chain M, T, U, which cannot overlap itself). Before starting ``X(i)`` a worker waits (on its own
condition variable over one shared lock) until every prerequisite of ``rules.prerequisites`` has finished:
one completion counter per stage kind (stages of a kind finish in order), so the memory gate "M(i) after
U(i-k)" is ``done['U'] >= i-k+1``; a completion wakes only the threads whose wait it ends. Batch objects are
handed over by iteration index (tickets); the run-ahead is bounded by the prefetch depth (S(i) after M(i-D))
and by k.

``mspipe`` decides, when F(i) has finished, the minimal bound k(i) and the delayed start of M(i)
(``rules.choose_staleness`` / ``rules.delayed_fetch_start``) from what is known at that moment and the
online stage-time estimates (EMA, carried across epochs). Until every stage has been timed once it uses
k = 2 without delay.

A failure in any stage stops every worker at its next wait and reaches the caller as :class:`StageError`
(stage, phase, iteration); KeyboardInterrupt in the caller stops the workers the same way. No thread
outlives :meth:`Executor.run_epoch`.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

import torch

from mspipe_bench.stages.stages import Batch, StageContext, StageError, run_stage
from mspipe_bench.trainers.rules import (
    COMM_STAGES,
    STAGES,
    WARMUP_STALENESS,
    Schedule,
    StageEstimator,
    TimelineView,
    choose_staleness,
    delayed_fetch_start,
    prerequisites,
    workers,
)

# A waiting worker is woken when a completion ends its wait (its own condition) or on a failure; the caller
# when a worker exits or fails. The timeout is only a safety net.
POLL_S = 0.1
# While pipelined, the interpreter asks a thread holding the GIL to drop it after 0.5 ms instead of 5 ms:
# the trainer thread re-acquires the GIL between torch ops instead of waiting out the sampler's and
# updater's pure-Python stretches (docs/performance.md, "Threads and the GIL").
GIL_SWITCH_S = 0.0005
# How long the caller waits for workers that have finished their loops to return (they only have to
# release a lock and return, so this is only reached if the process is starved of CPU).
JOIN_DEADLINE_S = 30.0


class _Abort(Exception):
    """Raised inside a worker when another worker failed or the run was interrupted."""


WORK_FIELDS = ("roots", "sampled_edges", "unique_nodes")  # an iteration's work, in IterationRecord


@dataclass
class IterationRecord:
    epoch: int
    i: int
    k: int
    observed_staleness: int
    mitigated_nodes: int
    mitigation_s: float
    bubble_s: float
    loss: float
    times: dict  # stage -> (start, end, thread), perf_counter seconds
    # the iteration's work: embedded roots (src, dst, negatives), sampled block edges, unique fetched nodes
    roots: int
    sampled_edges: int
    unique_nodes: int
    events: int = 0  # events trained (a data-parallel rank: its share)

    def to_dict(self) -> dict:
        comm = {c: self.times[c][1] - self.times[c][0] for c in COMM_STAGES if c in self.times}
        return {
            "epoch": self.epoch,
            "i": self.i,
            "k": self.k,
            "observed_staleness": self.observed_staleness,
            "mitigated_nodes": self.mitigated_nodes,
            "mitigation_s": self.mitigation_s,
            "bubble_s": self.bubble_s,
            "loss": self.loss,
            "durations": {s: self.times[s][1] - self.times[s][0] for s in STAGES},
            **{k: getattr(self, k) for k in WORK_FIELDS},
            **({"comm": comm} if comm else {}),  # data-parallel runs: collectives of this iteration (seconds)
        }


class Executor:
    def __init__(self, ctx: StageContext, schedule: Schedule, estimator: StageEstimator | None = None):
        self.ctx = ctx
        self.schedule = schedule
        self.estimator = estimator or StageEstimator()
        self.on_iteration = None  # optional callback(IterationRecord) from the updater side (progress bars)

    # ------------------------------------------------------------------ public
    def run_epoch(self, batches: list[Batch]) -> list[IterationRecord]:
        if not batches:
            return []
        if self.schedule.pipelined:
            self._run_pipelined(batches)
        else:
            for b in batches:
                for stage in STAGES:
                    run_stage(self.ctx, stage, b)
                    if stage == "M":
                        self._check_staleness(b)
                self._finish(b)
        # the first iteration of a segment (a run resumed or checkpointed inside an epoch) records no bubble:
        # the drain and the checkpoint before it are not the schedule's
        records = [self._record(b, batches[n - 1] if n else None) for n, b in enumerate(batches)]
        for b in batches:  # release blocks and tensors, keep nothing per batch but the record
            b.sampled = b.edge_feats = b.node_feat = b.event_feat = None
        return records

    # ------------------------------------------------------------------ helpers
    def _check_staleness(self, b: Batch) -> None:
        if b.observed_staleness > b.k - 1 or b.observed_staleness < 0:
            raise StageError(
                "M",
                b,
                AssertionError(f"observed staleness {b.observed_staleness} violates the bound k={b.k}"),
            )

    def _finish(self, b: Batch) -> None:
        for stage in STAGES:
            start, end, _ = b.times[stage]
            self.estimator.observe(stage, end - start)
        if self.on_iteration is not None:
            self.on_iteration(b)

    @staticmethod
    def _record(b: Batch, prev: Batch | None) -> IterationRecord:
        bubble = 0.0 if prev is None else max(0.0, b.times["T"][0] - prev.times["T"][1])
        return IterationRecord(
            epoch=b.epoch,
            i=b.i,
            k=b.k,
            observed_staleness=b.observed_staleness,
            mitigated_nodes=b.mitigated,
            mitigation_s=b.mitigation_s,
            bubble_s=bubble,
            loss=b.loss,
            times=dict(b.times),
            roots=b.sampled.num_roots,
            sampled_edges=b.sampled.num_sampled_edges,
            unique_nodes=len(b.sampled.unique_nid),
            events=b.size,
        )

    # ------------------------------------------------------------------ pipelined
    def _run_pipelined(self, batches: list[Batch]) -> None:
        self._batches = batches
        # One lock guards the counters; each thread waits on its own condition over it and is woken only
        # when what it waits for has happened (or on a failure): every wake-up takes the GIL from the trainer
        # thread, so waking all threads on each of the five completions per iteration cost T measurably
        # (docs/performance.md).
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # the caller's: workers exiting, failures
        thread_stages = workers(self.schedule)
        self._conds = {name: threading.Condition(self._lock) for name in thread_stages}  # one per worker thread
        # worker -> the prerequisites it is waiting for, and the start it is delayed to (mspipe's M) or None
        self._waiting: dict[str, tuple[list, float | None]] = {}
        # ``batches`` may be a segment of an epoch starting at iteration a = batches[0].i > 0 (checkpoints,
        # trainers/checkpoint.py): Batch.i stays the epoch's iteration index (sampling seed, observed staleness,
        # records), and every stage of the iterations before a has finished (the executor drained)
        a = batches[0].i
        self._done = {s: a for s in STAGES}
        self._error: BaseException | None = None
        self._view = TimelineView(self.schedule, tau=self.estimator.get)
        if a:  # the predictions of mspipe's k reach back at most this far; earlier stages ended by now
            now = time.perf_counter()
            reach = max(self.schedule.staleness, self.schedule.max_staleness, self.schedule.prefetch)
            for j in range(max(0, a - reach), a):
                for s in STAGES:
                    self._view.end[(s, j)] = now
        self._threads = torch.get_num_threads()
        old_switch = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_S)
        threads = [
            threading.Thread(target=self._worker, args=(stages,), name=name, daemon=True)
            for name, stages in thread_stages.items()
        ]
        # Completion is tracked with our own counter, not Thread.join: a KeyboardInterrupt that lands inside
        # Thread.join can leave the thread marked finished while it still runs (CPython's tstate lock).
        self._running = 0
        try:
            for th in threads:  # inside the try: an interrupt between two starts still stops the first
                with self._cond:
                    self._running += 1
                th.start()
            with self._cond:
                while self._running and self._error is None:
                    self._cond.wait(POLL_S)
        except BaseException as exc:  # KeyboardInterrupt in the caller: stop the workers
            self._fail(exc)
            raise
        finally:
            self._wait_all_stopped()
            # They have left their loops; this only reaps them. Not a 1 s timeout: on a loaded machine a thread
            # can take longer than that to return after its last statement, and must not outlive the epoch.
            deadline = time.perf_counter() + JOIN_DEADLINE_S
            for th in threads:
                th.join(timeout=max(0.0, deadline - time.perf_counter()))
            sys.setswitchinterval(old_switch)
        if self._error is not None:
            raise self._error

    def _wait_all_stopped(self) -> None:
        """Wait until every started worker has left its loop, even if another interrupt arrives."""
        interrupted = None
        while True:
            try:
                with self._cond:
                    while self._running:
                        self._cond.wait(POLL_S)
                break
            except BaseException as exc:  # a second Ctrl-C: keep stopping the workers, re-raise after
                self._fail(exc)
                interrupted = exc
        if interrupted is not None:
            raise interrupted

    def _fail(self, exc: BaseException) -> None:
        if self.ctx.dist is not None:  # a data-parallel rank reports a failure and exits at once (peers stop)
            self.ctx.dist.fail(exc)
        with self._cond:
            if self._error is None:
                self._error = exc
            self._cond.notify_all()
            for cond in self._conds.values():
                cond.notify()

    def _worker(self, stages: tuple[str, ...]) -> None:
        try:
            # a new thread does not inherit the caller's intra-op thread count in every library torch uses:
            # without this, a train step runs measurably slower in a worker thread than in the caller
            # (docs/performance.md, "Threads and the GIL")
            torch.set_num_threads(self._threads)
            for b in self._batches:
                for stage in stages:
                    self._run_one(stage, b)
        except _Abort:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            self._fail(exc)
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    def _satisfied(self, pre: list[tuple[str, int]]) -> bool:
        return all(self._done[s] > j for s, j in pre)

    def _wait(self, pre: list[tuple[str, int]], until: float | None = None) -> None:
        name = threading.current_thread().name
        with self._lock:
            self._waiting[name] = (pre, until)
            try:
                while True:
                    if self._error is not None:
                        raise _Abort()
                    now = time.perf_counter()
                    if self._satisfied(pre) and (until is None or now >= until):
                        return
                    timeout = POLL_S if until is None else max(0.0, min(POLL_S, until - now))
                    self._conds[name].wait(timeout=timeout)
            finally:
                del self._waiting[name]

    def _wake_satisfied(self) -> None:
        """Called with the lock held after a completion: wake the workers whose prerequisites now hold. A
        worker delayed to a later start (mspipe's M) is left to its timed wait until then: waking it on every
        completion doubled the loader's wake-ups (JODIE, 840 iterations: 1,726 waits instead of 839)."""
        now = time.perf_counter()
        for name, (pre, until) in self._waiting.items():
            if (until is None or now >= until) and self._satisfied(pre):
                self._conds[name].notify()

    def _decide_k(self, b: Batch) -> tuple[int, float | None, object | None]:
        """Bound and earliest start of M(b.i): fixed trainers k, no delay; mspipe per docs/design.md §2."""
        if not self.schedule.adaptive:
            return self.schedule.fixed_k(), None, None
        i = b.i
        if i == 0:
            return 1, None, None
        dist = self.ctx.dist
        if not self.estimator.ready():  # warm-up: no estimate of every stage yet (U(0) not finished)
            k = min(WARMUP_STALENESS, self.schedule.max_staleness)
            return (k if dist is None else dist.agree_k(k)), None, None
        with self._cond:
            f_end = self._view.end[("F", i)]
            self._view.now = time.perf_counter()  # running stages end, pending ones start, no earlier than now
            k, _ = choose_staleness(self._view, i, f_end)
        # data-parallel: every rank will use the largest of the ranks' bounds; proposed now, awaited after the
        # delay (outside the lock)
        pending = None if dist is None else dist.propose_k(k)
        with self._cond:
            self._view.k[i] = k
            return k, delayed_fetch_start(self._view, i, f_end, k, self.estimator.fetch_margin()), pending

    def _run_one(self, stage: str, b: Batch) -> None:
        until = None
        if stage == "M":
            b.k, until, pending = self._decide_k(b)
            if pending is not None:  # the ranks' bound, agreed while M(i) was delayed (a larger k waits less)
                self._wait([], until)
                b.k, until = self.ctx.dist.agreed_k(pending), None
                with self._cond:
                    self._view.k[b.i] = b.k
        self._wait(prerequisites(self.schedule, stage, b.i, b.k), until)
        with self._cond:
            self._view.start[(stage, b.i)] = time.perf_counter()
        run_stage(self.ctx, stage, b)
        if stage == "M":
            self._check_staleness(b)
        start, end, _ = b.times[stage]
        with self._cond:
            self._view.start[(stage, b.i)] = start
            self._view.end[(stage, b.i)] = end
            self.estimator.observe(stage, end - start)
            self._done[stage] += 1
            self._wake_satisfied()
        if stage == "U" and self.on_iteration is not None:
            self.on_iteration(b)
