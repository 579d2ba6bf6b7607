"""The temporal neighbour sampler, DGL block building and negatives, checked against a brute-force reference
(plain Python loops over the event list) on small random graphs with repeated timestamps."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from mspipe_bench.data.graph import TemporalGraph
from mspipe_bench.sampling import NegativeSampler, TemporalSampler, sample_blocks

SEEDS = [0, 1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------- helpers
def random_graph(seed: int, num_nodes: int = 12, num_events: int = 80, bipartite: bool = False,
                 self_loops: bool = False) -> TemporalGraph:
    """Small random graph; timestamps drawn from few values so many events share a time."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, num_events // 3, num_events)).astype(np.float64)
    if bipartite:
        half = num_nodes // 2
        src = rng.integers(0, half, num_events)
        dst = rng.integers(half, num_nodes, num_events)
    else:
        src = rng.integers(0, num_nodes, num_events)
        dst = rng.integers(0, num_nodes, num_events)
        if not self_loops:
            dst = np.where(dst == src, (dst + 1) % num_nodes, dst)
    # one extra node id with no events at all
    return TemporalGraph(src=src, dst=dst, t=t, num_nodes=num_nodes + 1)


def brute_history(g: TemporalGraph, node: int, t: float) -> list[tuple[int, int, float]]:
    """Every incidence (event id, other end, time) of ``node`` strictly before ``t``, in event order
    (a self-loop is two incidences: once as source, once as destination)."""
    out = []
    for e in range(g.num_events):
        if g.t[e] < t:
            if g.src[e] == node:
                out.append((e, int(g.dst[e]), float(g.t[e])))
            if g.dst[e] == node:
                out.append((e, int(g.src[e]), float(g.t[e])))
    return out


def brute_recent(g: TemporalGraph, node: int, t: float, k: int) -> list[tuple[int, int, float]]:
    """The ``k`` most recent strictly-earlier incidences; ties at equal times go to the largest event id."""
    hist = brute_history(g, node, t)
    return hist[max(0, len(hist) - k):] if k else []


def rows_of(hop, q: int) -> list[tuple[int, int, float]]:
    lo, hi = int(hop.ptr[q]), int(hop.ptr[q + 1])
    assert (hop.query[lo:hi] == q).all()
    return [(int(hop.eid[r]), int(hop.nbr[r]), float(hop.ts[r])) for r in range(lo, hi)]


def queries_for(g: TemporalGraph, seed: int, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Queries at exact event times (the event itself must not come back), between them, before the first
    and after the last event, on every node including the one without history."""
    rng = np.random.default_rng(1000 + seed)
    times = np.concatenate([
        g.t[rng.integers(0, g.num_events, n)],  # exact event times
        g.t[rng.integers(0, g.num_events, n // 2)] + 0.5,
        [g.t[0] - 1.0, g.t[0], g.t[-1], g.t[-1] + 10.0],
    ])
    nodes = rng.integers(0, g.num_nodes, len(times))
    return nodes, times


# ---------------------------------------------------------------------------------------------- recent
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 3, 10])
def test_recent_equals_brute_force(seed, k):
    g = random_graph(seed, bipartite=seed % 2 == 1, self_loops=seed == 4)
    sampler = TemporalSampler(g)
    nodes, times = queries_for(g, seed)
    hop = sampler.sample(nodes, times, k, "recent")
    assert len(hop.ptr) == len(nodes) + 1
    for q, (v, t) in enumerate(zip(nodes.tolist(), times.tolist())):
        got = rows_of(hop, q)
        assert sorted(got) == sorted(brute_recent(g, v, t, k)), (v, t)
        assert all(ts < t for _, _, ts in got)


def test_recent_tie_rule_at_equal_times():
    # node 0 has five events at t=5 (ids 1..5); a query at t=6 with k=2 takes the two largest ids
    g = TemporalGraph(src=np.zeros(7, dtype=np.int64), dst=np.array([1, 2, 3, 4, 5, 6, 1]),
                      t=np.array([1.0, 5, 5, 5, 5, 5, 6]), num_nodes=7)
    hop = TemporalSampler(g).sample(np.array([0]), np.array([6.0]), 2, "recent")
    assert rows_of(hop, 0) == [(4, 5, 5.0), (5, 6, 5.0)]


def test_query_at_exact_event_time_excludes_that_event():
    g = TemporalGraph(src=np.array([0, 0, 0, 1]), dst=np.array([1, 2, 3, 2]), t=np.array([1.0, 2.0, 2.0, 3.0]),
                      num_nodes=4)
    s = TemporalSampler(g)
    hop = s.sample(np.array([0, 0, 0, 2, 2]), np.array([1.0, 2.0, 2.000001, 3.0, 3.5]), 10, "recent")
    assert rows_of(hop, 0) == []  # the event at t=1 is not strictly earlier than t=1
    assert rows_of(hop, 1) == [(0, 1, 1.0)]  # events 1 and 2 (t=2) excluded at t=2
    assert rows_of(hop, 2) == [(0, 1, 1.0), (1, 2, 2.0), (2, 3, 2.0)]
    assert rows_of(hop, 3) == [(1, 0, 2.0)]  # event 3 at t=3 excluded
    assert rows_of(hop, 4) == [(1, 0, 2.0), (3, 1, 3.0)]


def test_nodes_without_history_have_no_neighbours():
    g = random_graph(0)
    s = TemporalSampler(g)
    lonely = g.num_nodes - 1  # no events
    for strategy in ("recent", "uniform"):
        hop = s.sample(np.array([lonely, 0]), np.array([1e9, g.t[0]]), 5, strategy, np.random.default_rng(0))
        assert hop.num_edges == 0
        assert hop.ptr.tolist() == [0, 0, 0]


def test_out_of_range_node_is_a_clear_error():
    g = random_graph(0)
    s = TemporalSampler(g)
    with pytest.raises(ValueError, match=rf"node id {g.num_nodes}\b.*out of range"):
        s.sample(np.array([0, g.num_nodes]), np.array([5.0, 5.0]), 3)
    with pytest.raises(ValueError, match=r"node id -1\b"):
        s.sample(np.array([-1]), np.array([5.0]), 3)
    with pytest.raises(ValueError, match=r"node id 999\b"):
        sample_blocks(s, np.array([999]), np.array([5.0]), [2])
    with pytest.raises(ValueError, match="strategy"):
        s.sample(np.array([0]), np.array([5.0]), 3, "newest")
    with pytest.raises(ValueError, match="fanout"):
        s.sample(np.array([0]), np.array([5.0]), -1)


# ---------------------------------------------------------------------------------------------- uniform
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 4])
def test_uniform_properties(seed, k):
    g = random_graph(seed, bipartite=seed % 2 == 1)
    s = TemporalSampler(g)
    nodes, times = queries_for(g, seed)
    hop = s.sample(nodes, times, k, "uniform", np.random.default_rng(seed))
    for q, (v, t) in enumerate(zip(nodes.tolist(), times.tolist())):
        got = rows_of(hop, q)
        hist = brute_history(g, v, t)
        assert len(got) == min(k, len(hist))
        assert all(ts < t for _, _, ts in got)
        assert len({e for e, _, _ in got}) == len(got), "duplicate event"
        assert set(got) <= set(hist), "not in the node's history"
        if len(hist) <= k:
            assert sorted(got) == sorted(hist)


def test_uniform_is_seeded_and_deterministic():
    g = random_graph(3, num_events=200)
    s = TemporalSampler(g)
    nodes, times = queries_for(g, 3)
    a = s.sample(nodes, times, 3, "uniform", np.random.default_rng(7))
    b = s.sample(nodes, times, 3, "uniform", np.random.default_rng(7))
    c = s.sample(nodes, times, 3, "uniform", np.random.default_rng(8))
    for f in ("ptr", "query", "nbr", "eid", "ts"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.eid, c.eid)
    with pytest.raises(ValueError, match="rng"):
        s.sample(nodes, times, 3, "uniform", None)


def test_uniform_is_roughly_uniform():
    # node 0 has 20 events in its history; 4000 draws of k=5 -> each event expected 1000 times
    n_hist, k, draws = 20, 5, 4000
    g = TemporalGraph(src=np.zeros(n_hist + 1, dtype=np.int64), dst=np.arange(1, n_hist + 2),
                      t=np.arange(n_hist + 1, dtype=np.float64), num_nodes=n_hist + 2)
    s = TemporalSampler(g)
    hop = s.sample(np.zeros(draws, dtype=np.int64), np.full(draws, float(n_hist)), k, "uniform",
                   np.random.default_rng(0))
    assert hop.num_edges == draws * k
    assert set(hop.eid.tolist()) == set(range(n_hist))  # event n_hist is at the query time: never drawn
    counts = np.bincount(hop.eid, minlength=n_hist)
    expected = draws * k / n_hist
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 60.0, (chi2, counts)  # 19 degrees of freedom: mean 19, P(chi2 > 60) ~ 4e-6
    # subsets, not just marginals: each of the C(20,2) pairs appears about equally often
    pairs = Counter()
    for q in range(draws):
        e = sorted(hop.eid[hop.ptr[q]:hop.ptr[q + 1]].tolist())
        pairs.update((e[i], e[j]) for i in range(k) for j in range(i + 1, k))
    exp_pair = draws * (k * (k - 1) / 2) / (n_hist * (n_hist - 1) / 2)
    assert len(pairs) == n_hist * (n_hist - 1) // 2
    assert max(abs(c - exp_pair) for c in pairs.values()) < 6 * exp_pair ** 0.5


# ---------------------------------------------------------------------------------------------- blocks
def check_blocks(g: TemporalGraph, sb, roots: np.ndarray, root_ts: np.ndarray, fanouts: list[int],
                 strategy: str) -> None:
    blocks = sb.blocks
    assert len(blocks) == max(1, len(fanouts))
    assert sb.num_roots == len(roots)
    # the roots are the last block's destination nodes
    last = blocks[-1]
    assert last.num_dst_nodes() == len(roots)
    assert last.dstdata["nid"].tolist() == roots.tolist()
    assert last.dstdata["ts"].tolist() == root_ts.tolist()
    for b in blocks:
        nd = b.num_dst_nodes()
        # destination nodes are the first source nodes (same ids, same query times)
        assert torch.equal(b.srcdata["nid"][:nd], b.dstdata["nid"])
        assert torch.equal(b.srcdata["ts"][:nd], b.dstdata["ts"])
    for inner, outer in zip(blocks[1:], blocks[:-1]):  # hop h's dst nodes are hop h-1's src nodes
        assert outer.num_dst_nodes() == inner.num_src_nodes()
        assert torch.equal(outer.dstdata["nid"], inner.srcdata["nid"])
        assert torch.equal(outer.dstdata["ts"], inner.srcdata["ts"])
    # hop by hop (hop 1 = blocks[-1]): every edge strictly earlier than its destination instance
    for fanout, b in zip(fanouts, reversed(blocks)):
        nd, ne = b.num_dst_nodes(), b.num_edges()
        e_src, e_dst = (x.numpy() for x in b.edges())
        eid, dt = b.edata["eid"].numpy(), b.edata["dt"].numpy()
        src_nid, src_ts = b.srcdata["nid"].numpy(), b.srcdata["ts"].numpy()
        dst_nid, dst_ts = b.dstdata["nid"].numpy(), b.dstdata["ts"].numpy()
        assert b.num_src_nodes() == nd + ne
        assert (dt > 0).all()
        assert sorted(e_src.tolist()) == list(range(nd, nd + ne))  # one source instance per sampled edge
        for u, v, e, d in zip(e_src.tolist(), e_dst.tolist(), eid.tolist(), dt.tolist()):
            assert g.t[e] < dst_ts[v]
            assert src_ts[u] == g.t[e]  # neighbour instance queried as of the event it came through
            assert {int(g.src[e]), int(g.dst[e])} == {int(dst_nid[v]), int(src_nid[u])}
            assert d == pytest.approx(dst_ts[v] - g.t[e], rel=1e-6)
        for v in range(nd):
            mine = sorted((int(eid[j]), int(src_nid[e_src[j]]), float(src_ts[e_src[j]]))
                          for j in np.flatnonzero(e_dst == v))
            hist = brute_history(g, int(dst_nid[v]), float(dst_ts[v]))
            if strategy == "recent":
                assert mine == sorted(brute_recent(g, int(dst_nid[v]), float(dst_ts[v]), fanout))
            else:
                assert len(mine) == min(fanout, len(hist)) and set(mine) <= set(hist)
    # unique nodes for the memory fetch
    assert torch.equal(sb.unique_nid[sb.inverse], blocks[0].srcdata["nid"])
    assert torch.equal(sb.unique_nid, torch.unique(blocks[0].srcdata["nid"]))
    assert sb.num_sampled_edges == sum(b.num_edges() for b in blocks)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("strategy", ["recent", "uniform"])
def test_two_hop_blocks(seed, strategy):
    g = random_graph(seed, bipartite=seed == 1)
    s = TemporalSampler(g)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, g.num_events, 15)
    roots = np.concatenate([g.src[idx], g.dst[idx], rng.integers(0, g.num_nodes, 15)])
    root_ts = np.concatenate([g.t[idx]] * 3)
    sb = sample_blocks(s, roots, root_ts, [3, 2], strategy, np.random.default_rng(seed))
    assert sb.blocks[-1].num_edges() > 0 and sb.blocks[0].num_edges() > 0
    check_blocks(g, sb, roots, root_ts, [3, 2], strategy)


def test_blocks_at_event_times_never_contain_the_event():
    g = random_graph(5)
    s = TemporalSampler(g)
    roots = np.concatenate([g.src, g.dst])
    root_ts = np.concatenate([g.t, g.t])
    sb = sample_blocks(s, roots, root_ts, [10])
    e_dst = sb.blocks[-1].edges()[1].numpy()
    eid = sb.blocks[-1].edata["eid"].numpy()
    own = np.concatenate([np.arange(g.num_events)] * 2)
    assert (eid != own[e_dst]).all()
    assert (g.t[eid] < root_ts[e_dst]).all()


def test_jodie_style_no_fanouts_gives_no_blocks():
    g = random_graph(0)
    s = TemporalSampler(g)
    roots = np.array([3, 1, 3, 7])
    root_ts = np.array([5.0, 6.0, 7.0, 8.0])
    sb = sample_blocks(s, roots, root_ts, [])
    assert sb.blocks == [] and sb.num_roots == 4
    assert sb.root_ts.tolist() == root_ts.tolist() and sb.root_ts.dtype == torch.float64
    assert sb.unique_nid.tolist() == [1, 3, 7]
    assert torch.equal(sb.unique_nid[sb.inverse], torch.from_numpy(roots))
    assert sb.num_sampled_edges == 0


def test_inputs_of_roots_keeps_the_blocks_but_reads_only_the_roots():
    g = random_graph(1)
    s = TemporalSampler(g)
    roots, ts = np.concatenate([g.src[40:50], g.dst[40:50]]), np.concatenate([g.t[40:50]] * 2)
    every = sample_blocks(s, roots, ts, [3])
    only = sample_blocks(s, roots, ts, [3], inputs_of="roots")
    assert torch.equal(only.blocks[0].edata["eid"], every.blocks[0].edata["eid"])
    assert only.unique_nid.tolist() == sorted(set(roots.tolist())) != every.unique_nid.tolist()
    assert torch.equal(only.unique_nid[only.inverse], torch.from_numpy(roots))
    with pytest.raises(ValueError, match="inputs_of"):
        sample_blocks(s, roots, ts, [3], inputs_of="neighbours")


def test_sample_blocks_seeded_determinism():
    g = random_graph(2)
    s = TemporalSampler(g)
    roots, ts = g.src[:20], g.t[:20] + 1
    a = sample_blocks(s, roots, ts, [3, 2], "uniform", np.random.default_rng(4))
    b = sample_blocks(s, roots, ts, [3, 2], "uniform", np.random.default_rng(4))
    for x, y in zip(a.blocks, b.blocks):
        assert torch.equal(x.edata["eid"], y.edata["eid"])
        assert torch.equal(x.srcdata["nid"], y.srcdata["nid"])


# ---------------------------------------------------------------------------------------------- negatives
def test_negatives_bipartite_only_destinations():
    g = random_graph(1, bipartite=True)
    assert g.dst_candidates is not None
    ns = NegativeSampler(g, "dst")
    neg = ns.sample(5000, np.random.default_rng(0))
    dsts = set(np.unique(g.dst).tolist())
    assert set(neg.tolist()) == dsts  # only destinations, and every one of them is drawn
    assert neg.dtype == np.int64
    # the default (TGL's convention) draws from every node, bipartite or not
    assert set(NegativeSampler(g).sample(5000, np.random.default_rng(0)).tolist()) == set(range(g.num_nodes))
    with pytest.raises(ValueError, match="negative sampling mode"):
        NegativeSampler(g, "users")


def test_negatives_general_graph_all_nodes():
    g = random_graph(0)
    assert g.dst_candidates is None
    neg = NegativeSampler(g).sample(5000, np.random.default_rng(0))
    assert neg.min() >= 0 and neg.max() < g.num_nodes
    assert len(np.unique(neg)) == g.num_nodes


def test_negatives_seeded_determinism():
    for g in (random_graph(0), random_graph(1, bipartite=True)):
        ns = NegativeSampler(g)
        a = ns.sample(100, np.random.default_rng(3))
        b = ns.sample(100, np.random.default_rng(3))
        c = ns.sample(100, np.random.default_rng(4))
        assert np.array_equal(a, b)
        assert not np.array_equal(a, c)
