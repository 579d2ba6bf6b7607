"""Stage S and the memory store on Wikipedia: temporal sampling + DGL block building for one mid-stream
batch of B=600 events (1,800 roots: src, dst and one negative per event, at the events' times; 10 most
recent neighbours; one layer), and the memory-store fetch / update of such a batch.

Run: ``.venv/bin/python -m pytest benchmarks/test_bench_sampling.py --benchmark-only -q``.
Skipped when ``../shared/datasets/wikipedia`` is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mspipe_bench.models.memory import MemoryStore

WIKIPEDIA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "wikipedia"
B = 600
FANOUT = 10
MEM_DIM = 100

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def wiki():
    if not (WIKIPEDIA / "events.npz").exists():
        pytest.skip(f"dataset not found: {WIKIPEDIA}")
    from mspipe_bench.data import load_dataset
    from mspipe_bench.sampling import NegativeSampler, TemporalSampler

    graph = load_dataset(str(WIKIPEDIA))
    sampler = TemporalSampler(graph)  # built once per graph: not part of the per-batch cost
    lo = (graph.num_events // 2 // B) * B  # a mid-stream batch
    hi = lo + B
    neg = NegativeSampler(graph).sample(B, np.random.default_rng(0))
    roots = np.concatenate([graph.src[lo:hi], graph.dst[lo:hi], neg])
    ts = np.concatenate([graph.t[lo:hi]] * 3)
    return graph, sampler, roots, ts, lo, hi


def _mean_seconds(benchmark) -> float | None:
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else float(stats.stats.mean)


def _report(benchmark, edges: int, roots: int) -> None:
    benchmark.extra_info["roots"] = roots
    benchmark.extra_info["sampled_edges"] = edges
    benchmark.extra_info["torch_threads"] = torch.get_num_threads()
    mean = _mean_seconds(benchmark)
    if mean:
        benchmark.extra_info["ms_per_batch"] = round(mean * 1e3, 3)
        benchmark.extra_info["sampled_edges_per_s"] = round(edges / mean)


@pytest.mark.parametrize("strategy", ["recent", "uniform"])
def test_bench_sample_blocks(benchmark, wiki, strategy):
    """S: neighbour sampling + block building + unique nodes (what stage S does after the negatives)."""
    from mspipe_bench.sampling import sample_blocks

    graph, sampler, roots, ts, lo, hi = wiki

    def run():
        return sample_blocks(sampler, roots, ts, [FANOUT], strategy, np.random.default_rng(1))

    sb = benchmark(run)
    assert sb.num_roots == 3 * B
    assert (sb.blocks[-1].edata["dt"] > 0).all()
    benchmark.extra_info["batch_events"] = f"[{lo}, {hi})"
    benchmark.extra_info["unique_nodes"] = int(len(sb.unique_nid))
    _report(benchmark, sb.num_sampled_edges, len(roots))


def test_bench_sampler_only(benchmark, wiki):
    """The neighbour sampler alone (no DGL block): the share of S spent in block building is the rest."""
    graph, sampler, roots, ts, lo, hi = wiki
    hop = benchmark(sampler.sample, roots, ts, FANOUT, "recent")
    assert (hop.ts < ts[hop.query]).all()
    _report(benchmark, hop.num_edges, len(roots))


@pytest.fixture(scope="module")
def store_and_batch(wiki):
    from mspipe_bench.models.model import mail_dim
    from mspipe_bench.models.config import load_config
    from mspipe_bench.sampling import sample_blocks

    graph, sampler, roots, ts, lo, hi = wiki
    cfg = load_config("tgn")
    md = mail_dim(cfg, graph.edge_feat_dim)
    store = MemoryStore(graph.num_nodes, cfg.memory.dim, md, cfg.memory.mailbox_size)
    gen = torch.Generator().manual_seed(0)
    store.mem.copy_(torch.randn(store.mem.shape, generator=gen))  # non-trivial contents, pages touched
    store.mail.copy_(torch.randn(store.mail.shape, generator=gen))
    sb = sample_blocks(sampler, roots, ts, [FANOUT])
    # the U stage's write: positive src/dst interleaved in event order, one mail each
    mem_ids = torch.from_numpy(np.stack([graph.src[lo:hi], graph.dst[lo:hi]], 1).reshape(-1))
    n = len(mem_ids)
    upd = dict(
        mem_ids=mem_ids,
        mem=torch.randn(n, cfg.memory.dim, generator=gen),
        mem_ts=torch.from_numpy(np.repeat(graph.t[lo:hi], 2)),
        mail_ids=mem_ids,
        mail=torch.randn(n, md, generator=gen),
        mail_ts=torch.from_numpy(np.repeat(graph.t[lo:hi], 2)),
    )
    return store, sb.unique_nid, upd


def test_bench_memory_fetch(benchmark, store_and_batch):
    """M: gather memory, memory time, mailbox, mail time and mask of the batch's unique nodes."""
    store, uniq, _ = store_and_batch
    rows = benchmark(store.fetch, uniq)
    assert rows.mem.shape == (len(uniq), store.dim)
    benchmark.extra_info["unique_nodes"] = int(len(uniq))
    benchmark.extra_info["mail_dim"] = store.mail_dim
    # index_select / index_copy_ use torch's intra-op threads: on a loaded 2-core machine 2 threads can be
    # an order of magnitude slower than 1 (OpenMP spin-waits), so the thread count is part of the result
    benchmark.extra_info["torch_threads"] = torch.get_num_threads()
    mean = _mean_seconds(benchmark)
    if mean:
        benchmark.extra_info["ms"] = round(mean * 1e3, 4)


def test_bench_memory_update(benchmark, store_and_batch):
    """U's store write: latest-wins dedup of 1,200 rows, memory + mailbox write."""
    store, _, upd = store_and_batch
    benchmark(store.update, **upd)
    benchmark.extra_info["rows"] = int(len(upd["mem_ids"]))
    benchmark.extra_info["unique_nodes"] = int(len(torch.unique(upd["mem_ids"])))
    # index_select / index_copy_ use torch's intra-op threads: on a loaded 2-core machine 2 threads can be
    # an order of magnitude slower than 1 (OpenMP spin-waits), so the thread count is part of the result
    benchmark.extra_info["torch_threads"] = torch.get_num_threads()
    mean = _mean_seconds(benchmark)
    if mean:
        benchmark.extra_info["ms"] = round(mean * 1e3, 4)
