"""Stage T (one training step: updater, embedding, predictor, loss, backward, Adam step) per model, and the
staleness mitigation at M, on a mid-stream Wikipedia batch of B=600 events with the presets' defaults.

Run: ``.venv/bin/python -m pytest benchmarks/ --benchmark-only -q --benchmark-json results/reference/<machine>/benchmarks/benchmarks.json``.
Skipped when ``../shared/datasets/wikipedia`` is absent. One torch intra-op thread (the suite's default), glibc
malloc tuned as in runs (``harness.run.tune_allocator``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mspipe_bench.models.mitigation import MitigationConfig, mitigate

WIKIPEDIA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "wikipedia"
WARM_BATCHES = 40  # fill the memory with a realistic state before the measured batch

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def wiki_graph():
    if not (WIKIPEDIA / "events.npz").exists():
        pytest.skip(f"dataset not found: {WIKIPEDIA}")
    from mspipe_bench.data import load_dataset
    from mspipe_bench.harness.run import tune_allocator

    torch.set_num_threads(1)
    tune_allocator()  # as mspipe-bench run does
    return load_dataset(str(WIKIPEDIA))


def _context_at_batch(graph, model: str):
    """A context whose memory went through WARM_BATCHES batches, and the next batch after S, F, M."""
    from mspipe_bench.models.config import load_config
    from mspipe_bench.stages import make_context, run_stage

    ctx = make_context(graph, load_config(model), seed=0)
    batches = ctx.batches("train", 0, graph.split().train_end)
    for b in batches[:WARM_BATCHES]:
        for s in "SFMTU":
            run_stage(ctx, s, b)
    b = batches[WARM_BATCHES]
    for s in "SFM":
        run_stage(ctx, s, b)
    return ctx, b


@pytest.mark.parametrize("model", ["tgn", "jodie", "apan"])
def test_bench_training_step(benchmark, wiki_graph, model):
    from mspipe_bench.stages.stages import train_step

    ctx, b = _context_at_batch(wiki_graph, model)
    rows = b.rows

    def step():
        b.rows = rows  # train_step releases the rows after use
        train_step(ctx, b)

    benchmark.pedantic(step, rounds=15, warmup_rounds=2)
    benchmark.extra_info.update(model=model, events=b.size, unique_nodes=len(b.sampled.unique_nid),
                                sampled_edges=b.sampled.num_sampled_edges, torch_threads=torch.get_num_threads())
    assert torch.isfinite(torch.tensor(b.loss))


def test_bench_mitigation(benchmark, wiki_graph):
    """The stalest 1% of a batch's fetched nodes blended toward their 10 most similar fresh nodes."""
    ctx, b = _context_at_batch(wiki_graph, "tgn")
    rows, cfg = b.rows, MitigationConfig()
    mem = rows.mem.clone()

    def run():
        rows.mem.copy_(mem)
        return mitigate(rows, ctx.store, float(b.t[0]), cfg)

    count = benchmark(run)
    benchmark.extra_info.update(fetched_nodes=len(rows.ids), mitigated=count, recent_pool=len(ctx.store.recent_ids))
    assert count >= 1
