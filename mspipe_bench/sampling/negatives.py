"""Negative destinations: uniform over the destination candidates (all nodes, or the destination side of a
bipartite graph). Training negatives come from the per-iteration generator; evaluation negatives from a
generator re-created from a fixed seed for every evaluation pass, so every epoch and every trainer scores the
same negatives."""

from __future__ import annotations

import numpy as np

from mspipe_bench.data.graph import TemporalGraph


NEGATIVE_MODES = ("all", "dst")


class NegativeSampler:
    """``mode='all'`` (default): every node (TGL's convention); ``mode='dst'``: the destination side of a
    bipartite graph (DyGLib's and the TGN paper's convention; harder: a negative is always a plausible
    destination), all nodes for a graph that is not bipartite."""

    def __init__(self, graph: TemporalGraph, mode: str = "all"):
        if mode not in NEGATIVE_MODES:
            raise ValueError(f"negative sampling mode {mode!r} is not one of {', '.join(NEGATIVE_MODES)}")
        if graph.dst_candidates is not None and mode == "dst":
            self.candidates = np.unique(graph.dst_candidates)
        else:
            self.candidates = None
        self.num_nodes = graph.num_nodes

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.candidates is None:
            return rng.integers(0, self.num_nodes, size=n, dtype=np.int64)
        return self.candidates[rng.integers(0, len(self.candidates), size=n)]
