"""The linear-cost rewrites for large graphs change no output: the synthetic generator's weighted draws equal
``rng.choice`` draw for draw, its graphs equal the ones the direct implementation produced (pinned hashes),
and the sampler's index and history bounds equal the ones from sorted ``node * (E + 1) + eid`` keys."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from mspipe_bench.data import synthetic
from mspipe_bench.data.graph import TemporalGraph
from mspipe_bench.sampling import TemporalSampler


def _p(kind: str, n: int, rng) -> np.ndarray:
    if kind == "uniform":
        p = np.ones(n)
    elif kind == "powerlaw":
        p = (np.arange(n) + 5.0) ** -0.8
    elif kind == "steep":
        p = (np.arange(n) + 1.0) ** -3.0
    elif kind == "zeros":  # many equal CDF values in one bucket: the binary-search fallback
        p = np.zeros(n)
        p[[0, n // 2, n - 1]] = [0.2, 0.5, 0.3]
    else:
        p = rng.lognormal(0, 2, n)
    return p / p.sum()


@pytest.mark.parametrize("kind", ["uniform", "powerlaw", "steep", "zeros", "lognormal"])
@pytest.mark.parametrize("n", [1, 4, 997, 20000])
def test_choice_equals_numpy(kind, n, monkeypatch):
    monkeypatch.setattr(synthetic, "BLOCK", 1000)  # several blocks, a partial last one
    p = _p(kind, n, np.random.default_rng(n))
    for size in (1, 2500, (30, 7, 3)):
        a, b = np.random.default_rng(7), np.random.default_rng(7)
        want = a.choice(n, size=size, p=p)
        got = synthetic.choice(b, n, size, p, dtype=np.int32)
        np.testing.assert_array_equal(got, want)
        assert got.shape == want.shape
        assert a.random() == b.random()  # the same random numbers consumed


# sha256 (first 16 hex) of src, dst, t, edge_feat, dst_candidates, is_noise as generated before the rewrite
PINNED = [
    (dict(), "9d74d83b76b5c0ef"),
    (dict(nodes=300, events=5000, seed=3), "ad7d8cc47d07f445"),
    (dict(nodes=200, events=4000, bipartite=False, edge_dim=4, seed=1), "f5a9f611d0134974"),
    (dict(nodes=50, events=3000, windows=200, num_prefs=7, drift=0.3), "0c45ce10b60abb46"),
    (dict(nodes=2000, events=20000, popularity=2.5, seed=9), "4817b0fc20f5c501"),
]


@pytest.mark.parametrize("params, digest", PINNED)
def test_generator_output_unchanged(params, digest, monkeypatch):
    monkeypatch.setattr(synthetic, "BLOCK", 4096)  # blocks of sources and draws at these small sizes too
    g = synthetic.generate(**params)
    h = hashlib.sha256()
    for a in (g.src, g.dst, g.t, g.edge_feat, g.dst_candidates, g.meta["is_noise"]):
        if a is not None:
            h.update(np.ascontiguousarray(a).tobytes())
    assert h.hexdigest()[:16] == digest


@pytest.mark.parametrize("seed", range(4))
def test_sampler_index_equals_key_sort(seed):
    rng = np.random.default_rng(seed)
    n, e = 40, 600
    src, dst = rng.integers(0, n, e), rng.integers(0, n, e)  # self-loops included
    g = TemporalGraph(src=src, dst=dst, t=np.sort(rng.integers(0, 50, e)).astype(float), num_nodes=n + 2)
    s = TemporalSampler(g)
    ends = np.concatenate([g.src, g.dst])
    eids = np.concatenate([np.arange(e)] * 2)
    key = ends * (e + 1) + eids
    order = np.argsort(key, kind="stable")
    np.testing.assert_array_equal(s.nbr, np.concatenate([g.dst, g.src])[order])
    np.testing.assert_array_equal(s.eid, eids[order])
    # history ends: the bisection inside each list equals one searchsorted over the sorted keys
    nodes = rng.integers(0, n + 2, 500)
    times = rng.integers(-1, 52, 500).astype(float)
    rank = np.searchsorted(g.t, times, side="left")
    lo, hi = s.history_bounds(nodes, times)
    np.testing.assert_array_equal(hi, np.searchsorted(key[order], nodes * (e + 1) + rank, side="left"))
    np.testing.assert_array_equal(lo, s.indptr[nodes])
    hop = s.sample(np.arange(n), np.full(n, 30.0), 5)
    np.testing.assert_array_equal(hop.ts, g.t[hop.eid])
