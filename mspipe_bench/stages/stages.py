"""The five stage functions (docs/design.md §1), shared by every trainer and by evaluation.

Each takes the run's :class:`StageContext` and one :class:`Batch` and fills the batch's fields:

- **S** :func:`sample` — negatives, temporal neighbours, DGL blocks, unique nodes;
- **F** :func:`fetch_features` — edge features of every block edge and of the batch's events, node features;
- **M** :func:`fetch_memory` — memory rows of the unique nodes (plus observed staleness, mitigation);
- **T** :func:`train_step` — updater + embedding + predictor, loss, backward, optimizer step (forward only
  when evaluating);
- **U** :func:`update_memory` — write what the model's ``make_mails`` returns: the detached updated memory of
  the positive src/dst and their new mails (APAN: also to the sampled neighbours).

What is model-specific (whose inputs S collects, whether there is a memory, which mails U writes) the stages
ask the model (``models/model.py``, "the model API"). A model without memory (TGAT) makes M and U no-ops: the
batch keeps ``rows = None``, observed staleness 0 (there is no memory update M could miss) and no
mitigation (nothing to mitigate; asking for it is not an error, it mitigates 0 nodes).

:func:`run_stage` runs one of them with timing, the timeline record, the test hook and error wrapping; the
trainers call nothing else.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from mspipe_bench.data.graph import TemporalGraph
from mspipe_bench.models.config import ModelConfig
from mspipe_bench.models.memory import MemoryRows, MemoryStore
from mspipe_bench.models.mitigation import MitigationConfig, mitigate
from mspipe_bench.models.model import ModelOutput, TemporalModel
from mspipe_bench.sampling import NegativeSampler, SampledBlocks, TemporalSampler, sample_blocks
from mspipe_bench.trainers.rules import STAGE_NAMES

PHASE_CODE = {"train": 0, "val": 1, "test": 2}


class StageError(RuntimeError):
    """An exception inside a stage, naming the stage, phase, epoch and iteration."""

    def __init__(self, stage: str, batch: "Batch", cause: BaseException):
        self.stage, self.iteration, self.epoch, self.phase = stage, batch.i, batch.epoch, batch.phase
        super().__init__(
            f"stage {stage} ({STAGE_NAMES[stage]}) failed in {batch.phase} iteration {batch.i} "
            f"(epoch {batch.epoch}): {type(cause).__name__}: {cause}"
        )
        self.__cause__ = cause


@dataclass
class Batch:
    """Everything one iteration produces, handed from stage to stage."""

    phase: str  # train | val | test
    epoch: int
    i: int  # iteration index inside the phase
    lo: int  # event range [lo, hi)
    hi: int
    seed: int
    src: np.ndarray | None = None
    dst: np.ndarray | None = None
    t: np.ndarray | None = None
    neg: np.ndarray | None = None
    sampled: SampledBlocks | None = None  # S
    edge_feats: list = field(default_factory=list)  # F: per block
    event_feat: torch.Tensor | None = None  # F: features of the batch's events (for mails)
    node_feat: torch.Tensor | None = None  # F: per unique node
    rows: MemoryRows | None = None  # M
    k: int = 1  # staleness bound used by M
    observed_staleness: int = 0
    mitigated: int = 0
    mitigation_s: float = 0.0
    out: ModelOutput | None = None  # T
    loss: float = float("nan")
    times: dict = field(default_factory=dict)  # stage -> (start, end, thread)
    # data-parallel runs (trainers/distributed.py): [lo, hi) is this rank's contiguous share of the global
    # batch [global_lo, global_hi); None in a single-process run (the batch is its own global batch)
    global_lo: int | None = None
    global_hi: int | None = None

    @property
    def size(self) -> int:
        return self.hi - self.lo

    @property
    def global_size(self) -> int:
        return self.size if self.global_lo is None else self.global_hi - self.global_lo


@dataclass
class Timeline:
    """Wall-clock start/end of every stage of every iteration, with the thread that ran it."""

    origin: float = field(default_factory=time.perf_counter)
    rows: list = field(default_factory=list)  # (phase, epoch, i, stage, start, end, thread)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, batch: Batch, stage: str, start: float, end: float, thread: str) -> None:
        with self.lock:
            self.rows.append((batch.phase, batch.epoch, batch.i, stage, start - self.origin, end - self.origin, thread))


@dataclass
class StageContext:
    graph: TemporalGraph
    cfg: ModelConfig
    model: TemporalModel
    optimizer: torch.optim.Optimizer
    store: MemoryStore
    sampler: TemporalSampler
    negatives: NegativeSampler
    seed: int = 0
    eval_seed: int = 12345
    mitigation: MitigationConfig = field(default_factory=lambda: MitigationConfig(enabled=False))
    timeline: Timeline = field(default_factory=Timeline)
    version_base: int = 0  # store.version at the start of the current phase
    hook: Callable[[str, Batch], None] | None = None  # test-only: called at the start of each stage
    edge_feat: torch.Tensor | None = None
    node_feat: torch.Tensor | None = None
    # data-parallel rank (trainers/distributed.py: shares of each batch, gradient all-reduce); None: one process
    dist: object | None = None

    def __post_init__(self) -> None:
        if self.graph.edge_feat is not None:
            self.edge_feat = torch.from_numpy(self.graph.edge_feat)
        if self.graph.node_feat is not None:
            self.node_feat = torch.from_numpy(self.graph.node_feat)
        self.loss_fn = torch.nn.BCEWithLogitsLoss()

    def batches(self, phase: str, lo: int, hi: int, epoch: int = 0) -> list[Batch]:
        bs = self.cfg.train.batch_size
        seed = self.seed if phase == "train" else self.eval_seed
        batches = [
            Batch(phase=phase, epoch=epoch, i=i, lo=s, hi=min(s + bs, hi), seed=seed)
            for i, s in enumerate(range(lo, hi, bs))
        ]
        return batches if self.dist is None else [self.dist.shard(b) for b in batches]


def run_stage(ctx: StageContext, stage: str, batch: Batch) -> None:
    start = time.perf_counter()
    try:
        if ctx.hook is not None:
            ctx.hook(stage, batch)
        STAGE_FUNCTIONS[stage](ctx, batch)
    except StageError:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised with the stage and iteration
        raise StageError(stage, batch, exc) from exc
    end = time.perf_counter()
    batch.times[stage] = (start, end, threading.current_thread().name)
    ctx.timeline.record(batch, stage, start, end, threading.current_thread().name)
    if ctx.dist is not None:  # data-parallel: the collectives the stage issued join the timeline too
        ctx.dist.flush(ctx, batch)


# ---------------------------------------------------------------------------------------------- stages
def sample(ctx: StageContext, b: Batch) -> None:
    g = ctx.graph
    b.src, b.dst, b.t = g.src[b.lo : b.hi], g.dst[b.lo : b.hi], g.t[b.lo : b.hi]
    # one generator per (seed, phase, epoch, iteration): results never depend on which thread runs S or when
    epoch = b.epoch if b.phase == "train" else 0
    rng = np.random.default_rng([b.seed, PHASE_CODE[b.phase], epoch, b.i])
    if b.global_lo is None:
        b.neg = ctx.negatives.sample(b.size, rng)
    else:  # a rank's share: the global batch's negatives, sliced (the same draws as one process makes)
        b.neg = ctx.negatives.sample(b.global_size, rng)[b.lo - b.global_lo : b.hi - b.global_lo]
    roots = np.concatenate([b.src, b.dst, b.neg])
    ts = np.concatenate([b.t, b.t, b.t])
    s = ctx.cfg.sampling
    b.sampled = sample_blocks(ctx.sampler, roots, ts, s.fanouts, s.strategy, rng, inputs_of=ctx.model.input_nodes)


def fetch_features(ctx: StageContext, b: Batch) -> None:
    sb = b.sampled
    if ctx.edge_feat is not None:
        b.edge_feats = [ctx.edge_feat.index_select(0, blk.edata["eid"]) for blk in sb.blocks]
        b.event_feat = ctx.edge_feat[b.lo : b.hi]
    else:
        b.edge_feats = [None] * len(sb.blocks)
    if ctx.node_feat is not None:
        b.node_feat = ctx.node_feat.index_select(0, sb.unique_nid)


def fetch_memory(ctx: StageContext, b: Batch) -> None:
    if not ctx.model.has_memory:  # nothing to fetch, no update to miss (staleness 0), nothing to mitigate
        return
    b.rows = ctx.store.fetch(b.sampled.unique_nid)
    b.observed_staleness = b.i - (b.rows.version - ctx.version_base)
    if ctx.mitigation.enabled and b.phase == "train":
        t0 = time.perf_counter()
        b.mitigated = mitigate(b.rows, ctx.store, float(b.t[0]), ctx.mitigation)
        b.mitigation_s = time.perf_counter() - t0


def train_step(ctx: StageContext, b: Batch) -> None:
    model = ctx.model
    if b.size == 0:  # an empty data-parallel share (a global batch smaller than the world): no forward
        b.out = ModelOutput(torch.zeros(0), torch.zeros(0), None, None)
        if b.phase == "train":
            ctx.optimizer.zero_grad(set_to_none=True)
            b.loss = ctx.dist.reduce_gradients(model, b, None)
            ctx.optimizer.step()
        b.rows = None
        return
    if b.phase == "train":
        model.train()
        ctx.optimizer.zero_grad(set_to_none=True)
        out = model(b.sampled, b.rows, b.edge_feats, b.node_feat, b.size)
        loss = ctx.loss_fn(out.pos, torch.ones_like(out.pos)) + ctx.loss_fn(out.neg, torch.zeros_like(out.neg))
        loss.backward()
        if ctx.dist is not None:  # the global batch's gradient (and loss), averaged over the ranks' shares
            b.loss = ctx.dist.reduce_gradients(model, b, loss.detach())
        else:
            b.loss = float(loss.detach())
        ctx.optimizer.step()
    else:
        model.eval()
        with torch.no_grad():
            out = model(b.sampled, b.rows, b.edge_feats, b.node_feat, b.size)
    updated = None if out.updated is None else out.updated.detach()
    b.out = ModelOutput(out.pos.detach(), out.neg.detach(), updated, out.updated_ts)
    b.rows = None  # release the fetched rows early


def update_memory(ctx: StageContext, b: Batch) -> None:
    if ctx.model.has_memory:
        ctx.store.update(*(ctx.model.make_mails(b, b.out) if b.size else ctx.store.empty_write()))
    b.out = ModelOutput(b.out.pos, b.out.neg, None, None)  # keep scores, drop per-node tensors


STAGE_FUNCTIONS = {"S": sample, "F": fetch_features, "M": fetch_memory, "T": train_step, "U": update_memory}


def make_context(
    graph: TemporalGraph,
    cfg: ModelConfig,
    seed: int = 0,
    mitigation: MitigationConfig | None = None,
    eval_seed: int = 12345,
    negatives: str = "all",
) -> StageContext:
    """Everything the stages need, built from a graph and a model config; ``seed`` fixes the parameters,
    training negatives, sampling and dropout."""
    torch.manual_seed(seed)
    model = TemporalModel(cfg, graph.edge_feat_dim, graph.node_feat_dim)
    store = model.new_store(graph.num_nodes)
    return StageContext(
        graph=graph,
        cfg=cfg,
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=cfg.train.lr, foreach=True),
        store=store,
        sampler=TemporalSampler(graph),
        negatives=NegativeSampler(graph, negatives),
        seed=seed,
        eval_seed=eval_seed,
        mitigation=mitigation or MitigationConfig(enabled=False),
    )
