"""Temporal neighbour sampler over a time-sorted CSR of both directions of every event.

Entry ``p`` of node ``n``'s list (``indptr[n] <= p < indptr[n+1]``) is an event ``eid[p]`` that touched ``n``
(as source or destination) and its other end ``nbr[p]`` (its time is ``event_t[eid[p]]``); each list is sorted
by event id, which is chronological because events are time-sorted.

Building the index is one stable sort of the ``2E`` event ends by node: the ends are interleaved
(position ``2e`` is event ``e``'s source, ``2e+1`` its destination), so a stable sort by node alone leaves
each list in event order (a self-loop: source entry first), the event id is ``position >> 1`` and the other
end sits at ``position ^ 1``. The index holds two ``int64`` arrays of ``2E`` entries (``nbr``, ``eid``:
32 bytes per event) and ``indptr``; the build peaks at about twice that.

Strictness without float comparisons per entry: with ``r = #events with t < q`` (one ``searchsorted`` on
the event times, done once per distinct query time), event ``e`` is strictly earlier than ``q`` iff
``e < r``; the end of a query's strictly-earlier history is the first entry of its node's list with
``eid >= r``, found by a bisection inside the node's own list, vectorised over the queries (as many steps as
the longest list has bits): inside a node's list the search touches a few cache lines per query, where one
sorted array of ``2E`` keys missed the cache at every step on large graphs (docs/performance.md, "Scale"). Both strategies are vectorised over queries; ``uniform`` runs a loop
over the ``fanout`` draws of Floyd's sampling algorithm (never over roots or neighbours).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mspipe_bench.data.graph import TemporalGraph

STRATEGIES = ("recent", "uniform")


@dataclass
class NeighborSample:
    """One hop: for query ``q`` its neighbours are rows ``ptr[q]:ptr[q+1]`` of the arrays below."""

    ptr: np.ndarray  # int64 [Q+1]
    query: np.ndarray  # int64 [K] index of the query each row belongs to
    nbr: np.ndarray  # int64 [K] neighbour node id
    eid: np.ndarray  # int64 [K] event id (row of edge features)
    ts: np.ndarray  # float64 [K] event time (< the query's time)

    @property
    def num_edges(self) -> int:
        return int(len(self.nbr))


class TemporalSampler:
    """Built once per graph; ``sample(nodes, times, fanout, strategy, rng)`` for one hop."""

    def __init__(self, graph: TemporalGraph):
        n, e = graph.num_nodes, graph.num_events
        self.num_nodes = n
        self.num_events = e
        self.event_t = graph.t
        ends = np.empty(2 * e, dtype=np.int64)
        ends[0::2], ends[1::2] = graph.src, graph.dst
        order = np.argsort(ends, kind="stable")
        self.nbr = ends[order ^ 1]
        counts = np.bincount(ends, minlength=n)
        del ends
        self.eid = np.right_shift(order, 1, out=order)
        self.indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=self.indptr[1:])

    def history_bounds(self, nodes: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[lo, hi)`` CSR range of each query's events strictly before its time."""
        nodes = np.asarray(nodes, dtype=np.int64)
        if len(nodes) and (nodes.min() < 0 or nodes.max() >= self.num_nodes):
            bad = nodes[(nodes < 0) | (nodes >= self.num_nodes)][0]
            raise ValueError(f"query node id {bad} is out of range [0, {self.num_nodes})")
        times = np.asarray(times, dtype=np.float64)
        if np.isnan(times).any():
            raise ValueError("query times contain NaN")
        # a batch's queries share few distinct times: search the 10^7-entry time array once per time
        uniq_t, inv = np.unique(times, return_inverse=True)
        rank = np.searchsorted(self.event_t, uniq_t, side="left")[inv]
        start = self.indptr[nodes]
        lo, hi = start.copy(), self.indptr[nodes + 1]
        # bisection per list: the first entry with eid >= rank (lo == hi at the end)
        active = np.flatnonzero(lo < hi)
        while len(active):
            a, b = lo[active], hi[active]
            mid = (a + b) >> 1
            right = self.eid[mid] < rank[active]
            lo[active] = np.where(right, mid + 1, a)
            hi[active] = np.where(right, b, mid)
            active = active[lo[active] < hi[active]]
        return start, hi

    def sample(
        self,
        nodes: np.ndarray,
        times: np.ndarray,
        fanout: int,
        strategy: str = "recent",
        rng: np.random.Generator | None = None,
    ) -> NeighborSample:
        if strategy not in STRATEGIES:
            raise ValueError(f"sampling strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
        if fanout < 0:
            raise ValueError(f"fanout must be >= 0, got {fanout}")
        lo, hi = self.history_bounds(nodes, times)
        avail = hi - lo
        count = np.minimum(avail, fanout)
        ptr = np.zeros(len(lo) + 1, dtype=np.int64)
        np.cumsum(count, out=ptr[1:])
        total = int(ptr[-1])
        query = np.repeat(np.arange(len(lo), dtype=np.int64), count)
        offset = np.arange(total, dtype=np.int64) - ptr[:-1][query]  # 0..count-1 within each query
        if strategy == "recent":
            pos = (hi - count)[query] + offset
        else:
            if rng is None:
                raise ValueError("uniform sampling needs an rng (numpy Generator)")
            pos = lo[query] + self._uniform_offsets(avail, count, fanout, rng)[query, offset]
        eid = self.eid[pos]
        return NeighborSample(ptr=ptr, query=query, nbr=self.nbr[pos], eid=eid, ts=self.event_t[eid])

    @staticmethod
    def _uniform_offsets(avail: np.ndarray, count: np.ndarray, fanout: int, rng: np.random.Generator) -> np.ndarray:
        """``[Q, fanout]`` distinct offsets in ``[0, avail)`` per query (first ``count`` columns valid).

        Queries with ``avail <= fanout`` take all offsets in order; the others use Floyd's algorithm:
        for ``j`` in ``avail-fanout .. avail-1`` draw ``r`` in ``[0, j]``, take ``r`` unless already taken,
        else ``j`` — a uniform ``fanout``-subset. Vectorised over queries, ``fanout`` steps.
        """
        q = len(avail)
        out = np.tile(np.arange(max(fanout, 1), dtype=np.int64), (q, 1))[:, :fanout]
        big = avail > fanout
        if not big.any() or fanout == 0:
            return out
        a = avail[big]
        chosen = np.empty((len(a), fanout), dtype=np.int64)
        for step in range(fanout):
            j = a - fanout + step
            r = np.floor(rng.random(len(a)) * (j + 1)).astype(np.int64)
            r = np.minimum(r, j)
            dup = (chosen[:, :step] == r[:, None]).any(axis=1) if step else np.zeros(len(a), dtype=bool)
            chosen[:, step] = np.where(dup, j, r)
        chosen.sort(axis=1)
        out[big] = chosen
        return out
