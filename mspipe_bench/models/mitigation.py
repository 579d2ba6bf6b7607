"""Staleness mitigation (design.md §3), computed online from the current store at M(i).

Among the fetched nodes whose memory has been written before, those whose time since the last update is in
the top ``quantile`` (default: stalest 1%) get ``s_v <- (1 - λ) s_v + λ · mean(s_u, u ∈ Sim(v))`` where
``Sim(v)`` are the ``n`` most cosine-similar memories among the recently updated nodes (the ids written by
the store's last committed update; the store keeps their memory and unit vectors, computed once in U). Cost
at M: one ``[stale, recent]`` similarity matrix and a top-n.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mspipe_bench.models.memory import MemoryRows, MemoryStore


@dataclass(frozen=True)
class MitigationConfig:
    enabled: bool = True
    quantile: float = 0.01  # fraction of fetched nodes treated as stalest
    neighbors: int = 10  # n
    lam: float = 0.1  # λ

    def __post_init__(self) -> None:
        if not (0.0 < self.quantile <= 1.0):
            raise ValueError(f"mitigation quantile must be in (0, 1], got {self.quantile}")
        if self.neighbors < 1:
            raise ValueError(f"mitigation neighbours n must be >= 1, got {self.neighbors}")
        if not (0.0 <= self.lam <= 1.0):
            raise ValueError(f"mitigation lambda must be in [0, 1], got {self.lam}")


def mitigate(rows: MemoryRows, store: MemoryStore, now: float, cfg: MitigationConfig) -> int:
    """Blend the stalest fetched memories in ``rows.mem`` (in place) toward similar fresh ones.
    Returns the number of nodes mitigated."""
    cand = rows.touched.nonzero().squeeze(1)
    with store.lock:  # the pool (ids, memory, unit vectors) is replaced as a whole by each update
        recent, recent_mem, recent_unit = store.recent_ids, store.recent_mem, store.recent_unit
    if len(cand) == 0 or len(recent) == 0:
        return 0
    count = max(1, int(round(cfg.quantile * len(rows.ids))))
    count = min(count, len(cand))
    age = now - rows.mem_ts.index_select(0, cand)
    stale = cand[torch.topk(age, count).indices]
    s = rows.mem.index_select(0, stale)
    sim = torch.nn.functional.normalize(s, dim=1) @ recent_unit.T
    # a node never counts as its own neighbour
    sim = sim.masked_fill(rows.ids.index_select(0, stale)[:, None] == recent[None, :], -2.0)
    n = min(cfg.neighbors, len(recent))
    top_sim, top = torch.topk(sim, n, dim=1)
    # when fewer than n other nodes are recent, the top n still contain the node itself (sim -2): drop it
    valid = (top_sim > -1.5).to(s.dtype)
    num = valid.sum(1, keepdim=True)
    mean = (recent_mem[top] * valid[..., None]).sum(1) / num.clamp(min=1)
    has = num.squeeze(1) > 0  # a node whose only recent node is itself keeps its memory
    blended = (1 - cfg.lam) * s[has] + cfg.lam * mean[has]
    rows.mem.index_copy_(0, stale[has], blended)
    return int(has.sum())
