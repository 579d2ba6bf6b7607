"""The executor under every schedule: equivalences, the staleness bound under random stage delays, failure and
interrupt behaviour."""

from __future__ import annotations

import _thread
import random
import threading
import time

import numpy as np
import pytest
import torch

from mspipe_bench.data.loaders import load_dataset
from mspipe_bench.models.config import load_config
from mspipe_bench.models.mitigation import MitigationConfig
from mspipe_bench.stages import StageError, make_context
from mspipe_bench.trainers.executor import Executor
from mspipe_bench.trainers.rules import WORKER_NAMES, make_schedule
from mspipe_bench.trainers.train import train

GRAPH = load_dataset("synthetic:nodes=300,events=9000,seed=3")
ITERS = 30


def small_config(model: str):
    return load_config(model, ["train.batch_size=200"])


def run_iterations(model: str, trainer: str, staleness: int = 1, hook=None, iters: int = ITERS, mitigation=False):
    ctx = make_context(GRAPH, small_config(model), seed=7,
                       mitigation=MitigationConfig(enabled=mitigation))
    ctx.hook = hook
    ex = Executor(ctx, make_schedule(trainer, staleness=staleness))
    batches = ctx.batches("train", 0, GRAPH.split().train_end)[:iters]
    records = ex.run_epoch(batches)
    return ctx, records


def assert_identical(a, b):
    for (name, pa), (_, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(pa, pb), f"parameter {name} differs"
    sa, sb = a.store.snapshot(), b.store.snapshot()
    for key in ("mem", "mem_ts", "mail", "mail_ts", "mail_mask"):
        assert torch.equal(sa[key], sb[key]), f"memory {key} differs"


def no_workers_alive():
    # threading.enumerate, not is_alive(): a KeyboardInterrupt inside Thread.join can make is_alive() lie
    return not any(t.name in WORKER_NAMES for t in threading.enumerate())


@pytest.mark.parametrize("model", ["tgn", "jodie", "apan"])
def test_presample_and_k1_are_bit_identical_to_sequential(model):
    ref, rec = run_iterations(model, "sequential")
    pre, rec_p = run_iterations(model, "presample")
    k1, _ = run_iterations(model, "fixed-staleness", staleness=1)
    assert_identical(ref, pre)
    assert_identical(ref, k1)
    assert [r.loss for r in rec] == [r.loss for r in rec_p]
    assert all(r.observed_staleness == 0 for r in rec_p)
    # the stages ran in the threads rules.workers assigns (presample: the M -> T -> U chain in one)
    for r in rec_p:
        assert {s: r.times[s][2] for s in "SFMTU"} == {"S": "sampler", "F": "sampler", "M": "trainer", "T": "trainer", "U": "trainer"}


@pytest.mark.parametrize("model,fanout", [("tgn", 10), ("jodie", 0)])
def test_iteration_records_count_the_work_against_brute_force(model, fanout):
    """Each record's roots, sampled edges and unique nodes, recounted from the events: a root's sampled edges
    are its ``fanout`` most recent events strictly before its time (either endpoint); the unique nodes are the
    roots and those events' other endpoints."""
    ctx = make_context(GRAPH, small_config(model), seed=7, mitigation=MitigationConfig(enabled=False))
    batches = ctx.batches("train", 0, GRAPH.split().train_end)[:6]
    records = Executor(ctx, make_schedule("presample")).run_epoch(batches)
    src, dst, t = GRAPH.src, GRAPH.dst, GRAPH.t
    for b, r in zip(batches, records):
        roots = np.concatenate([b.src, b.dst, b.neg])
        times = np.concatenate([b.t, b.t, b.t])
        edges, nodes = 0, set(roots.tolist())
        for v, tv in zip(roots, times):
            hist = np.flatnonzero(((src == v) | (dst == v)) & (t < tv))[-fanout:] if fanout else []
            edges += len(hist)
            nodes.update(np.where(src[hist] == v, dst[hist], src[hist]).tolist())
        assert (r.roots, r.sampled_edges, r.unique_nodes) == (3 * b.size, edges, len(nodes)), (b.i, model)
    assert records[-1].sampled_edges > 0 or fanout == 0


def test_staleness_changes_numerics():
    """The equivalence test above can fail: a stale schedule gives different parameters."""
    ref, _ = run_iterations("tgn", "sequential")
    delays = {"T": 0.004}
    stale, rec = run_iterations("tgn", "fixed-staleness", staleness=3,
                                hook=lambda stage, b: time.sleep(delays.get(stage, 0.0)))
    assert max(r.observed_staleness for r in rec) >= 1
    assert not torch.equal(ref.store.snapshot()["mem"], stale.store.snapshot()["mem"])


@pytest.mark.parametrize("trainer,k", [("fixed-staleness", 2), ("fixed-staleness", 3), ("mspipe", 1)])
def test_observed_staleness_never_exceeds_bound_under_random_delays(trainer, k):
    rnd = random.Random(11)
    lock = threading.Lock()

    def hook(stage, batch):
        with lock:
            d = rnd.random() * (0.006 if stage in "TU" else 0.003)
        time.sleep(d)

    ctx, records = run_iterations("tgn", trainer, staleness=k, hook=hook, mitigation=(trainer == "mspipe"))
    assert len(records) == ITERS
    for r in records:
        assert 0 <= r.observed_staleness <= r.k - 1, (r.i, r.k, r.observed_staleness)
        assert 1 <= r.k <= 4
    if trainer == "fixed-staleness":
        assert all(r.k == k for r in records)
    assert no_workers_alive()


@pytest.mark.parametrize("stage", ["S", "F", "M", "T", "U"])
@pytest.mark.parametrize("trainer", ["presample", "mspipe"])
def test_failure_in_any_stage_surfaces_with_stage_and_iteration(stage, trainer):
    def hook(s, batch):
        if s == stage and batch.i == 5:
            raise RuntimeError("injected")
        if s == "T":
            time.sleep(0.002)

    t0 = time.perf_counter()
    with pytest.raises(StageError) as info:
        run_iterations("tgn", trainer, hook=hook, iters=20)
    assert time.perf_counter() - t0 < 20  # whole run; the failure itself is checked below
    err = info.value
    assert err.stage == stage and err.iteration == 5
    assert f"stage {stage}" in str(err) and "iteration 5" in str(err) and "injected" in str(err)
    assert no_workers_alive()


def test_failure_reaches_caller_promptly_while_other_stages_wait():
    """A failing U leaves M waiting on the memory gate; the caller must hear within 2 s."""
    failed_at = {}

    def hook(s, batch):
        if s == "U" and batch.i == 3:
            failed_at["t"] = time.perf_counter()
            raise ValueError("boom")

    with pytest.raises(StageError):
        try:
            run_iterations("tgn", "fixed-staleness", staleness=2, hook=hook, iters=25)
        finally:
            failed_at["caught"] = time.perf_counter()
    assert failed_at["caught"] - failed_at["t"] < 2.0
    assert no_workers_alive()


@pytest.mark.parametrize("trainer", ["sequential", "mspipe"])
def test_keyboard_interrupt_stops_cleanly_and_keeps_partial_result(trainer):
    ctx = make_context(GRAPH, small_config("tgn"), seed=1)
    # Ctrl-C (interrupt_main = SIGINT for the main thread) sent from inside T of the second epoch's 5th
    # iteration, so it arrives while an epoch trains: the main thread is then in the stage (sequential) or
    # waiting on the workers (pipelined). A timer could land it in a finalizer run by the main thread, where
    # CPython prints "Exception ignored" and drops it — the likely cause of this test failing once on a loaded
    # machine.
    sent = []

    def hook(s, b):
        if s == "T":
            if not sent and b.epoch == 1 and b.i == 5:
                sent.append(True)
                _thread.interrupt_main()
            time.sleep(0.002)

    ctx.hook = hook
    res = train(ctx, make_schedule(trainer), GRAPH.split(), epochs=50)
    assert sent and res.interrupted
    assert no_workers_alive()
    # the partial result is kept: the first epoch, whole (its iterations, time and validation), no test scores
    first_epoch = len(ctx.batches("train", 0, GRAPH.split().train_end, 0))
    assert [e["epoch"] for e in res.epochs] == [0] and len(res.iterations) == first_epoch
    assert res.metrics["train_seconds"] > 0 and res.metrics["best_epoch"] == 0 and "test_ap" not in res.metrics
