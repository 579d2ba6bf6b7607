"""The training loop shared by every trainer: per epoch, reset the memory, run the training iterations under
the trainer's schedule (:class:`Executor`), evaluate on val (memory continues chronologically); keep the
parameters and memory of the best-validation-AP epoch; finally restore them and evaluate on test.

Throughput = training events / wall time of the training iterations (evaluation excluded).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np

from mspipe_bench.data.graph import Split
from mspipe_bench.stages.stages import StageContext
from mspipe_bench.trainers.checkpoint import Checkpointer, LoopState
from mspipe_bench.trainers.evaluate import evaluate
from mspipe_bench.trainers.executor import WORK_FIELDS, Executor, IterationRecord
from mspipe_bench.trainers.rules import STAGES, Schedule, StageEstimator


@dataclass
class TrainResult:
    metrics: dict = field(default_factory=dict)
    epochs: list = field(default_factory=list)
    iterations: list = field(default_factory=list)  # IterationRecord
    interrupted: bool = False
    error: str | None = None


def train(
    ctx: StageContext,
    schedule: Schedule,
    split: Split,
    epochs: int,
    progress: bool = False,
    max_iterations: int | None = None,
    checkpoints: Checkpointer | None = None,
) -> TrainResult:
    """Train ``epochs`` epochs (optionally only the first ``max_iterations`` iterations of each, for quick
    comparisons) and test the best epoch. KeyboardInterrupt returns the partial result marked
    ``interrupted``; a stage failure propagates as StageError (workers already stopped). ``checkpoints``:
    resume from its checkpoint (if any), run each epoch in segments and save at their boundaries and after
    each epoch (``trainers/checkpoint.py``)."""
    res = TrainResult()
    estimator = StageEstimator()
    executor = Executor(ctx, schedule, estimator)
    loop = LoopState()
    if checkpoints is not None:
        checkpoints.restore(ctx, res, loop, estimator)
    bar = None
    try:
        for epoch in range(loop.epoch, epochs):
            if loop.i == 0:  # a new epoch (not one resumed from a checkpoint inside it)
                ctx.store.reset()
                ctx.version_base = 0
                loop.epoch, loop.epoch_seconds = epoch, 0.0
            batches = ctx.batches("train", split.train.start, split.train.stop, epoch)
            if max_iterations is not None:
                batches = batches[:max_iterations]
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=len(batches), initial=loop.i, desc=f"{schedule.trainer} epoch {epoch + 1}/{epochs}",
                           leave=False)
                executor.on_iteration = lambda b: bar.update(1)
            spans = [(loop.i, len(batches))] if checkpoints is None else checkpoints.segments(len(batches), loop.i)
            for lo, hi in spans:
                t0 = time.perf_counter()
                res.iterations.extend(executor.run_epoch(batches[lo:hi]))
                loop.epoch_seconds += time.perf_counter() - t0
                loop.i = hi
                if hi < len(batches):  # a segment boundary: the executor has drained
                    checkpoints.save(ctx, res, loop, estimator)
            if bar is not None:
                bar.close()
                bar = None
            records = [r for r in res.iterations if r.epoch == epoch]
            seconds = loop.epoch_seconds
            n_events = sum(b.global_size for b in batches)  # data-parallel: every rank counts the global batch
            loop.train_events += n_events
            loop.train_seconds += seconds
            val = evaluate(ctx, "val", split.val.start, split.val.stop)
            res.epochs.append(
                {
                    "epoch": epoch,
                    "train_events_per_s": n_events / seconds,
                    "train_loss": float(np.mean([r.loss for r in records])),
                    "val_ap": val["ap"],
                    "val_auc": val["auc"],
                    "seconds": seconds,
                    "wall_end_s": time.perf_counter() - ctx.timeline.origin,
                }
            )
            if val["ap"] > loop.best_ap:
                loop.best_ap = val["ap"]
                loop.best_state = {
                    "epoch": epoch,
                    "val": val,
                    "model": copy.deepcopy(ctx.model.state_dict()),
                    "optimizer": copy.deepcopy(ctx.optimizer.state_dict()),
                    "memory": ctx.store.snapshot(),
                }
            loop.epoch, loop.i = epoch + 1, 0
            if checkpoints is not None:
                checkpoints.save(ctx, res, loop, estimator)
    except KeyboardInterrupt:
        res.interrupted = True
    except Exception:
        # a data-parallel rank being interrupted: its collectives fail as its peers are stopped
        if ctx.dist is None or not ctx.dist.interrupted:
            raise
        res.interrupted = True
    finally:
        if bar is not None:
            bar.close()
    res.metrics = summarize(res.iterations, loop.train_events, loop.train_seconds)
    best_state = loop.best_state
    if best_state is not None:
        ctx.model.load_state_dict(best_state["model"])
        ctx.store.restore(best_state["memory"])
        val = best_state["val"]
        res.metrics.update(best_epoch=best_state["epoch"], val_ap=val["ap"], val_auc=val["auc"],
                           val_ap_global=val["ap_global"], val_auc_global=val["auc_global"])
        if not res.interrupted:
            test = evaluate(ctx, "test", split.test.start, split.test.stop)
            res.metrics.update(test_ap=test["ap"], test_auc=test["auc"], test_ap_global=test["ap_global"],
                               test_auc_global=test["auc_global"])
    return res


def summarize(iterations: list[IterationRecord], train_events: float, train_seconds: float) -> dict:
    stal = [r.observed_staleness for r in iterations] or [0]
    bubble = sum(r.bubble_s for r in iterations)
    m_time = sum(r.times["M"][1] - r.times["M"][0] for r in iterations)
    return {
        "train_events_per_s": train_events / train_seconds if train_seconds else 0.0,
        "train_seconds": train_seconds,
        "mean_observed_staleness": float(np.mean(stal)),
        "max_observed_staleness": int(np.max(stal)),
        "mean_k": float(np.mean([r.k for r in iterations])) if iterations else 1.0,
        "max_k": int(max((r.k for r in iterations), default=1)),
        "bubble_share": bubble / train_seconds if train_seconds else 0.0,
        "mitigated_nodes": int(sum(r.mitigated_nodes for r in iterations)),
        "mitigation_share_of_M": (sum(r.mitigation_s for r in iterations) / m_time) if m_time else 0.0,
        "stage_seconds": {s: float(sum(r.times[s][1] - r.times[s][0] for r in iterations)) for s in STAGES},
        # work per training iteration (means): what the events/s above paid for
        **{f"mean_{k}": float(np.mean([getattr(r, k) for r in iterations])) if iterations else 0.0
           for k in WORK_FIELDS},
    }
