"""Staleness mitigation (docs/design.md §3), computed online from the current store at M(i).

Among the fetched nodes whose memory has been written before, those whose time since the last update is in
the top ``quantile`` (default: stalest 1%) get ``s_v <- (1 - λ) s_v + λ · mean(s_u, u ∈ Sim(v))`` where
``Sim(v)`` are the ``n`` most cosine-similar memories among the recently updated nodes (the ids written by
the store's last committed update; the store keeps their memory and unit vectors, computed once in U). Cost
at M: one ``[stale, recent]`` similarity matrix and a top-n. A model without memory (TGAT) has nothing to
mitigate: M skips it (0 nodes mitigated), whether or not it was asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mspipe_bench.errors import UserError
from mspipe_bench.models.memory import MemoryRows, MemoryStore


@dataclass(frozen=True)
class MitigationConfig:
    enabled: bool = True
    quantile: float = 0.01  # fraction of fetched nodes treated as stalest
    neighbors: int = 10  # n
    lam: float = 0.1  # λ

    def __post_init__(self) -> None:
        if not (0.0 < self.quantile <= 1.0):
            raise UserError(f"--mitigation-quantile (mitigation_quantile) must be in (0, 1], got {self.quantile}")
        if self.neighbors < 1:
            raise UserError(f"--mitigation-neighbors (mitigation_neighbors) must be >= 1, got {self.neighbors}")
        if not (0.0 <= self.lam <= 1.0):
            raise UserError(f"--mitigation-lambda (mitigation_lambda) must be in [0, 1], got {self.lam}")


def mitigate(rows: MemoryRows, store: MemoryStore, now: float, cfg: MitigationConfig) -> int:
    """Blend the stalest fetched memories in ``rows.mem`` (in place) toward similar fresh ones.
    Returns the number of nodes mitigated."""
    cand = rows.touched.nonzero().squeeze(1)
    with store.lock:  # the pool (ids, memory, unit vectors) is replaced as a whole by each update
        recent, recent_mem, recent_unit = store.recent_ids, store.recent_mem, store.recent_unit
    if len(cand) == 0 or len(recent) == 0:
        return 0
    count = min(max(1, int(round(cfg.quantile * len(rows.ids)))), len(cand))
    return _blend_stalest(cand, rows.mem, rows.mem_ts, rows.ids, recent, recent_mem, recent_unit, float(now),
                          count, min(cfg.neighbors, len(recent)), float(cfg.lam))


# TorchScript: one call from Python runs all ~20 ops without the GIL (the interpreter releases it), instead of
# ~20 Python-dispatched ops that each re-take it while the trainer thread needs it between its own ops (see
# docs/performance.md, "Threads and the GIL"). Same aten ops, same results as the eager code.
@torch.jit.script
def _blend_stalest(cand: torch.Tensor, mem: torch.Tensor, mem_ts: torch.Tensor, ids: torch.Tensor,
                   recent: torch.Tensor, recent_mem: torch.Tensor, recent_unit: torch.Tensor, now: float,
                   count: int, n: int, lam: float) -> int:
    """The ``count`` stalest of the candidate rows ``cand`` of ``mem`` get ``(1-λ) s + λ · mean of their n
    most cosine-similar recent memories`` (never themselves)."""
    age = now - mem_ts.index_select(0, cand)
    stale = cand[torch.topk(age, count).indices]
    s = mem.index_select(0, stale)
    sim = torch.nn.functional.normalize(s, dim=1) @ recent_unit.T
    # a node never counts as its own neighbour
    sim = sim.masked_fill(ids.index_select(0, stale)[:, None] == recent[None, :], -2.0)
    top_sim, top = torch.topk(sim, n, dim=1)
    # when fewer than n other nodes are recent, the top n still contain the node itself (sim -2): drop it
    valid = (top_sim > -1.5).to(s.dtype)
    num = valid.sum(1, keepdim=True)
    mean = (recent_mem[top] * valid[..., None]).sum(1) / num.clamp(min=1)
    has = num.squeeze(1) > 0  # a node whose only recent node is itself keeps its memory
    blended = (1 - lam) * s[has] + lam * mean[has]
    mem.index_copy_(0, stale[has], blended)
    return int(has.sum())
