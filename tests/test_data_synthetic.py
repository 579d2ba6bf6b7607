"""The synthetic default dataset: determinism, id layout, ordering and learnable temporal structure."""

from __future__ import annotations

from collections import defaultdict, deque

import numpy as np
import pytest

from mspipe_bench.data import DatasetError, TemporalGraph, generate, load_dataset


def average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    """AP with ties broken pessimistically-neutrally (random order within equal scores)."""
    scores = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    perm = np.random.default_rng(123).permutation(len(y))
    scores, y = scores[perm], y[perm]
    y = y[np.argsort(-scores, kind="stable")]
    precision = np.cumsum(y) / np.arange(1, len(y) + 1)
    return float((precision * y).sum() / y.sum())


def recent_partner_scores(g: TemporalGraph, start: int, neg: np.ndarray, k: int = 10):
    """Score (src, dst) by a recency-weighted count of dst among src's last k partners."""
    hist: dict[int, deque] = defaultdict(lambda: deque(maxlen=k))
    pos_s, neg_s = [], []
    for i, (u, v) in enumerate(zip(g.src.tolist(), g.dst.tolist())):
        if i >= start:
            h = list(hist[u])
            w = {x: 0.0 for x in h}
            for j, x in enumerate(h):
                w[x] += 0.9 ** (len(h) - 1 - j)
            pos_s.append(w.get(v, 0.0))
            neg_s.append(w.get(int(neg[i]), 0.0))
        hist[u].append(v)
    return np.array(pos_s), np.array(neg_s)


@pytest.fixture(scope="module")
def small():
    return generate(nodes=500, events=20000, seed=0)


def test_default_size_and_layout():
    g = generate()
    assert g.num_events == 60000 and g.num_nodes == 1000 and g.name == "synthetic"
    users = g.meta["num_sources"]
    assert users == 800
    assert g.src.max() < users and g.dst.min() >= users and g.dst.max() < 1000
    np.testing.assert_array_equal(g.dst_candidates, np.arange(users, 1000))
    assert np.all(np.diff(g.t) >= 0) and g.t.dtype == np.float64
    assert g.edge_feat is None
    assert g.source.startswith("synthetic:") and "events=60000" in g.source


def test_deterministic_for_a_seed_and_seeds_differ():
    a = generate(nodes=300, events=5000, edge_dim=3, seed=7)
    b = generate(nodes=300, events=5000, edge_dim=3, seed=7)
    c = generate(nodes=300, events=5000, edge_dim=3, seed=8)
    for field in ("src", "dst", "t", "edge_feat"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.dst, c.dst) and not np.array_equal(a.t, c.t)


def test_exact_event_count_sorted_and_bursty():
    for events in (1, 37, 4999):
        g = generate(nodes=50, events=events, seed=3)
        assert g.num_events == events and np.all(np.diff(g.t) >= 0)
    g = generate(nodes=400, events=20000, seed=1)
    # bursts: a source's consecutive events are much closer than the global per-source average gap
    order = np.lexsort((g.t, g.src))
    s, t = g.src[order], g.t[order]
    same = s[1:] == s[:-1]
    gaps = np.diff(t)[same]
    mean_gap = (g.t[-1] - g.t[0]) / (g.num_events / len(np.unique(g.src)))
    assert np.median(gaps) < 0.05 * mean_gap


def test_non_bipartite_has_no_self_loops():
    g = generate(nodes=200, events=5000, bipartite=False, seed=2)
    assert g.dst_candidates is None
    assert not np.any(g.src == g.dst)
    assert g.src.max() < 200 and g.dst.max() < 200
    assert len(np.intersect1d(g.src, g.dst)) > 50  # one id space for both roles


def test_edge_features_informative_but_noisy():
    g = generate(nodes=300, events=20000, edge_dim=8, seed=4)
    assert g.edge_feat.shape == (20000, 8) and g.edge_feat.dtype == np.float32
    # the per-destination mean explains a good part of the variance, but not all of it
    means = np.zeros((g.num_nodes, 8))
    np.add.at(means, g.dst, g.edge_feat)
    counts = np.bincount(g.dst, minlength=g.num_nodes)[:, None]
    means = means / np.maximum(counts, 1)
    resid = g.edge_feat - means[g.dst]
    explained = 1.0 - resid.var() / g.edge_feat.var()
    assert 0.3 < explained < 0.8


def test_temporal_structure_beats_random_but_not_perfect(small):
    g = small
    start = int(g.num_events * 0.85)
    rng = np.random.default_rng(0)
    neg = g.dst_candidates[rng.integers(0, len(g.dst_candidates), g.num_events)]
    pos_s, neg_s = recent_partner_scores(g, start, neg)
    ap = average_precision(pos_s, neg_s)
    chance = average_precision(rng.random(len(pos_s)), rng.random(len(neg_s)))
    assert 0.45 < chance < 0.55
    assert 0.75 < ap < 0.97, ap
    # the noise events are the ones memory cannot predict
    noise = g.meta["is_noise"][start:]
    assert pos_s[~noise].mean() > 2 * pos_s[noise].mean()


def test_load_dataset_synthetic_matches_generate():
    g = load_dataset("synthetic")
    ref = generate()
    np.testing.assert_array_equal(g.src, ref.src)
    np.testing.assert_array_equal(g.dst, ref.dst)
    np.testing.assert_array_equal(g.t, ref.t)


def test_bad_parameters_are_reported():
    with pytest.raises(DatasetError, match="noise=1.5"):
        generate(noise=1.5)
    with pytest.raises(DatasetError, match="nodes=1"):
        generate(nodes=1)
