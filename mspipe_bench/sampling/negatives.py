"""Negative destinations: uniform over the destination candidates (all nodes, or the destination side of a
bipartite graph). Training negatives come from the per-iteration generator; evaluation negatives from a
generator re-created from a fixed seed for every evaluation pass, so every epoch and every trainer scores the
same negatives."""

from __future__ import annotations

import numpy as np

from mspipe_bench.data.graph import TemporalGraph
from mspipe_bench.errors import UserError

NEGATIVE_MODES = ("all", "dst")


class NegativeSampler:
    """``mode='all'`` (default): every node (TGL's convention); ``mode='dst'``: the destination side of a
    bipartite graph (DyGLib's and the TGN paper's convention; harder: a negative is always a plausible
    destination). ``'dst'`` on a graph that is not bipartite (no destination side) is a :class:`UserError`."""

    def __init__(self, graph: TemporalGraph, mode: str = "all"):
        if mode not in NEGATIVE_MODES:
            raise UserError(f"negatives: negative sampling mode {mode!r} is not one of {', '.join(NEGATIVE_MODES)}")
        if mode == "dst" and graph.dst_candidates is None:
            raise UserError(
                f"negatives 'dst': dataset {graph.name} ({graph.source}) is not bipartite (some node is both a "
                "source and a destination), so it has no destination side to draw negatives from; use 'all'"
            )
        self.candidates = np.unique(graph.dst_candidates) if mode == "dst" else None
        self.num_nodes = graph.num_nodes

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.candidates is None:
            return rng.integers(0, self.num_nodes, size=n, dtype=np.int64)
        return self.candidates[rng.integers(0, len(self.candidates), size=n)]
