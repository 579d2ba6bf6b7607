"""The one evaluation routine (every trainer uses it): run S, F, M, T (forward only), U over a chronological
event range, continuing the memory, with the fixed evaluation negatives; score AP and AUC both as the mean of
per-batch scores (the TGL/PyG/DyGLib convention) and over the whole range.

In a data-parallel run every rank evaluates its share of each batch (memory merged by U as in training) and
the scores of all shares are gathered in event order, so every rank computes the metrics of the whole batch:
the same definition, over the same scores, as one process."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from mspipe_bench.stages.stages import STAGE_FUNCTIONS, StageContext, run_stage


def link_metrics(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    return float(average_precision_score(labels, scores)), float(roc_auc_score(labels, scores))


def evaluate(ctx: StageContext, phase: str, lo: int, hi: int) -> dict:
    ctx.version_base = ctx.store.version
    aps, aucs, pos_all, neg_all = [], [], [], []
    for b in ctx.batches(phase, lo, hi):
        for stage in STAGE_FUNCTIONS:
            run_stage(ctx, stage, b)
        pos, neg = b.out.pos, b.out.neg
        if ctx.dist is not None:  # data-parallel: the whole global batch's scores, in event order, on every rank
            pos, neg = ctx.dist.all_gather_scores(b, pos, neg)
            ctx.dist.flush(ctx, b)
        pos, neg = pos.numpy(), neg.numpy()
        ap, auc = link_metrics(pos, neg)
        aps.append(ap)
        aucs.append(auc)
        pos_all.append(pos)
        neg_all.append(neg)
    ap_g, auc_g = link_metrics(np.concatenate(pos_all), np.concatenate(neg_all))
    return {"ap": float(np.mean(aps)), "auc": float(np.mean(aucs)), "ap_global": ap_g, "auc_global": auc_g}
