"""The five stage functions (design.md §1), shared by every trainer and by evaluation.

Each takes the run's :class:`StageContext` and one :class:`Batch` and fills the batch's fields:

- **S** :func:`sample` — negatives, temporal neighbours, DGL blocks, unique nodes;
- **F** :func:`fetch_features` — edge features of every block edge and of the batch's events, node features;
- **M** :func:`fetch_memory` — memory rows of the unique nodes (plus observed staleness, mitigation);
- **T** :func:`train_step` — updater + embedding + predictor, loss, backward, optimizer step (forward only
  when evaluating);
- **U** :func:`update_memory` — write the detached updated memory of the positive src/dst and their new mails
  (APAN: also to the sampled neighbours).

:func:`run_stage` runs one of them with timing, the timeline record, the test hook and error wrapping; the
trainers call nothing else.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from mspipe_bench.data.graph import TemporalGraph
from mspipe_bench.models.config import ModelConfig
from mspipe_bench.models.memory import MemoryRows, MemoryStore, last_occurrence
from mspipe_bench.models.mitigation import MitigationConfig, mitigate
from mspipe_bench.models.model import ModelOutput, TemporalModel
from mspipe_bench.sampling import NegativeSampler, SampledBlocks, TemporalSampler, sample_blocks

STAGE_NAMES = {"S": "sample", "F": "feature fetch", "M": "memory fetch", "T": "train", "U": "memory update"}
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

    @property
    def size(self) -> int:
        return self.hi - self.lo


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

    def __post_init__(self) -> None:
        if self.graph.edge_feat is not None:
            self.edge_feat = torch.from_numpy(self.graph.edge_feat)
        if self.graph.node_feat is not None:
            self.node_feat = torch.from_numpy(self.graph.node_feat)
        self.loss_fn = torch.nn.BCEWithLogitsLoss()

    def batches(self, phase: str, lo: int, hi: int, epoch: int = 0) -> list[Batch]:
        bs = self.cfg.train.batch_size
        seed = self.seed if phase == "train" else self.eval_seed
        return [
            Batch(phase=phase, epoch=epoch, i=i, lo=s, hi=min(s + bs, hi), seed=seed)
            for i, s in enumerate(range(lo, hi, bs))
        ]


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


# ---------------------------------------------------------------------------------------------- stages
def sample(ctx: StageContext, b: Batch) -> None:
    g = ctx.graph
    b.src, b.dst, b.t = g.src[b.lo : b.hi], g.dst[b.lo : b.hi], g.t[b.lo : b.hi]
    # one generator per (seed, phase, epoch, iteration): results never depend on which thread runs S or when
    epoch = b.epoch if b.phase == "train" else 0
    rng = np.random.default_rng([b.seed, PHASE_CODE[b.phase], epoch, b.i])
    b.neg = ctx.negatives.sample(b.size, rng)
    roots = np.concatenate([b.src, b.dst, b.neg])
    ts = np.concatenate([b.t, b.t, b.t])
    s = ctx.cfg.sampling
    # only attention layers read neighbours' memory; JODIE/APAN fetch and update the roots' memory only
    memory_of = "all" if ctx.cfg.gnn.arch == "attention" else "roots"
    b.sampled = sample_blocks(ctx.sampler, roots, ts, s.fanouts, s.strategy, rng, memory_of=memory_of)


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
    b.rows = ctx.store.fetch(b.sampled.unique_nid)
    b.observed_staleness = b.i - (b.rows.version - ctx.version_base)
    if ctx.mitigation.enabled and b.phase == "train":
        t0 = time.perf_counter()
        b.mitigated = mitigate(b.rows, ctx.store, float(b.t[0]), ctx.mitigation)
        b.mitigation_s = time.perf_counter() - t0


def train_step(ctx: StageContext, b: Batch) -> None:
    model = ctx.model
    if b.phase == "train":
        model.train()
        ctx.optimizer.zero_grad(set_to_none=True)
        out = model(b.sampled, b.rows, b.edge_feats, b.node_feat, b.size)
        loss = ctx.loss_fn(out.pos, torch.ones_like(out.pos)) + ctx.loss_fn(out.neg, torch.zeros_like(out.neg))
        loss.backward()
        ctx.optimizer.step()
        b.loss = float(loss.detach())
    else:
        model.eval()
        with torch.no_grad():
            out = model(b.sampled, b.rows, b.edge_feats, b.node_feat, b.size)
    b.out = ModelOutput(out.pos.detach(), out.neg.detach(), out.updated.detach(), out.updated_ts)
    b.rows = None  # release the fetched rows early


def update_memory(ctx: StageContext, b: Batch) -> None:
    sb, out = b.sampled, b.out
    # positive endpoints, interleaved in event order (src_0, dst_0, src_1, ...): the latest event wins
    mem_ids = torch.from_numpy(np.stack([b.src, b.dst], 1).reshape(-1))
    hop_dst = hop_nid = None
    if ctx.cfg.memory.deliver_to == "neighbors":  # the sampled neighbours of each positive endpoint
        hop1 = sb.blocks[-1]
        e_src, hop_dst = hop1.edges()
        hop_nid = hop1.srcdata["nid"].index_select(0, e_src)
    mem, mem_ts, mail_ids, mail, mail_ts = _endpoint_updates(
        sb.inverse, b.size, mem_ids, out.updated, out.updated_ts, torch.from_numpy(b.t), b.event_feat,
        hop_dst, hop_nid)
    ctx.store.update(mem_ids, mem, mem_ts, mail_ids, mail, mail_ts)
    b.out = ModelOutput(out.pos, out.neg, None, None)  # keep scores, drop per-node tensors


@torch.jit.script
def _endpoint_updates(inv: torch.Tensor, n: int, mem_ids: torch.Tensor, updated: torch.Tensor,
                      updated_ts: torch.Tensor, t: torch.Tensor, event_feat: Optional[torch.Tensor],
                      hop_dst: Optional[torch.Tensor], hop_nid: Optional[torch.Tensor]):
    """U's tensor work, as one TorchScript call (it runs without the GIL; see ``models.memory._latest_rows``):
    the new memory of the ``2n`` positive endpoints (rows ``mem_ids``) and the mails to deliver.

    Mail j (of the 2n endpoint rows) is ``[s_me', s_other', e]`` at the event's time. The mail that wins per
    receiving node is picked *before* any mail tensor is built (APAN delivers ~10x more copies than mails).
    With ``hop_dst``/``hop_nid`` (the first hop's edge destinations and source node ids) the neighbours of
    each positive endpoint also receive that endpoint's mail."""
    me_rows = torch.stack([inv[:n], inv[n : 2 * n]], 1).reshape(-1)
    other_rows = torch.stack([inv[n : 2 * n], inv[:n]], 1).reshape(-1)
    mem = updated.index_select(0, me_rows)
    mem_ts = updated_ts.index_select(0, me_rows)
    mail_ids, mail_of = mem_ids, torch.arange(2 * n)
    if hop_dst is not None and hop_nid is not None:
        keep = hop_dst < 2 * n
        q, nb = hop_dst[keep], hop_nid[keep]
        copy_of = torch.where(q < n, 2 * q, 2 * (q - n) + 1)  # index of the endpoint's own mail
        event = torch.where(q < n, q, q - n)
        # chronological by event; within an event the copies first, so an endpoint's own mail wins
        own_key = 2 * torch.arange(n).repeat_interleave(2) + 1
        order = torch.argsort(torch.cat([own_key, 2 * event]), stable=True)
        mail_ids = torch.cat([mem_ids, nb])[order]
        mail_of = torch.cat([mail_of, copy_of])[order]
    mail_ids, last = last_occurrence(mail_ids)
    mail_of = mail_of.index_select(0, last)
    parts = [mem.index_select(0, mail_of), updated.index_select(0, other_rows.index_select(0, mail_of))]
    if event_feat is not None:
        parts.append(event_feat.index_select(0, torch.div(mail_of, 2, rounding_mode="floor")))
    mail = torch.cat(parts, dim=1)
    mail_ts = t.index_select(0, torch.div(mail_of, 2, rounding_mode="floor"))
    return mem, mem_ts, mail_ids, mail, mail_ts


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
    from mspipe_bench.models.model import mail_dim

    torch.manual_seed(seed)
    model = TemporalModel(cfg, graph.edge_feat_dim, graph.node_feat_dim)
    store = MemoryStore(graph.num_nodes, cfg.memory.dim, mail_dim(cfg, graph.edge_feat_dim), cfg.memory.mailbox_size)
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
