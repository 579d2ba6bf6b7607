"""One temporal GNN assembled from a :class:`ModelConfig` (TGL's idea: one general model, presets in YAML).
``memory.updater`` picks the memory updater (or ``memory: none``: no memory), ``gnn.arch`` the embedding
module; TGN, JODIE, APAN and TGAT are presets, not classes.

**The model API** — everything the stages (``stages/stages.py``) ask a model; they hold no model-specific
logic. A new model is a preset YAML (``models/presets/<name>.yaml``) when the existing components cover it
(TGAT: ``memory: none`` and two attention layers); a new component is a module in ``layers.py``, a config
value in ``config.py`` and its wiring here, behind these members:

- :attr:`TemporalModel.input_nodes` (S): ``"all"`` when the embedding reads the inputs of sampled
  neighbours (attention layers), ``"roots"`` when only those of the batch's roots (JODIE, APAN). It decides
  ``SampledBlocks.unique_nid``, the nodes whose memory M fetches and whose node features F gathers.
- :attr:`TemporalModel.has_memory` (M, U): ``False`` makes M and U no-ops (nothing fetched, nothing written).
- :meth:`TemporalModel.new_store` (set-up): the :class:`MemoryStore` M reads and U writes (empty without
  memory).
- :meth:`TemporalModel.forward` (T): scores of the batch's positive and negative events and the updated
  memory of every fetched node.
- :meth:`TemporalModel.make_mails` (U): from T's output, the memory rows and mails to write
  (:class:`MemoryWrite`): which nodes get which mail (APAN: also the sampled neighbours) is the model's.

Forward for a batch of ``B`` events with roots ``[src, dst, neg]``:

1. with memory: updated memory ``s'`` of every unique fetched node (only nodes with mail run the updater);
2. node inputs ``h = s' (+ W_n x_v)``; without memory ``h = x_v``, the node features, or an empty input
   (width 0) when the dataset has none: the first attention layer then sees only the time encodings and
   edge features of each node's neighbours (TGL's TGAT without node features);
3. embeddings of the roots (attention layers over the blocks / time projection / identity);
4. scores of ``(src, dst)`` and ``(src, neg)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
from torch import nn

from mspipe_bench.models.config import ModelConfig
from mspipe_bench.models.layers import (
    EdgePredictor,
    MailboxAttentionUpdater,
    RecurrentUpdater,
    TemporalAttentionLayer,
    TimeProjection,
)
from mspipe_bench.models.memory import MemoryRows, MemoryStore, MemoryWrite, last_occurrence
from mspipe_bench.sampling.blocks import SampledBlocks

if TYPE_CHECKING:
    from mspipe_bench.stages.stages import Batch


@dataclass
class ModelOutput:
    pos: torch.Tensor  # [B] logits of the true events
    neg: torch.Tensor  # [B] logits of the negatives
    updated: torch.Tensor | None  # [U, d_mem] updated memory of the unique fetched nodes (None: no memory)
    updated_ts: torch.Tensor | None  # [U] float64 time the updated memory is as of


def mail_dim(cfg: ModelConfig, edge_dim: int) -> int:
    return 0 if cfg.memory is None else 2 * cfg.memory.dim + edge_dim


class TemporalModel(nn.Module):
    def __init__(self, cfg: ModelConfig, edge_dim: int = 0, node_dim: int = 0):
        super().__init__()
        self.cfg = cfg
        self.edge_dim = edge_dim
        m, g = cfg.memory, cfg.gnn
        self.updater = None
        if m is not None and m.updater in ("gru", "rnn"):
            self.updater = RecurrentUpdater(m.dim, mail_dim(cfg, edge_dim), m.time_dim, cell=m.updater)
        elif m is not None:
            self.updater = MailboxAttentionUpdater(m.dim, mail_dim(cfg, edge_dim), m.time_dim, m.heads, g.dropout)
        self.node_proj = nn.Linear(node_dim, m.dim) if node_dim and m is not None else None
        self.layers = nn.ModuleList()
        self.time_proj = None
        if g.arch == "attention":
            input_dim = node_dim if m is None else m.dim  # without memory: the raw node features (or none)
            for layer in range(g.layers):
                dim_in = input_dim if layer == 0 else g.dim_out
                self.layers.append(
                    TemporalAttentionLayer(dim_in, edge_dim, g.time_dim, g.dim_out, g.heads, g.dropout, g.attn_dropout)
                )
        elif g.arch == "time_projection":
            self.time_proj = TimeProjection(m.dim)
        self.predictor = EdgePredictor(g.dim_out)
        self.deliver_to_neighbors = m is not None and m.deliver_to == "neighbors"

    # ------------------------------------------------------------------ the API the stages call
    @property
    def has_memory(self) -> bool:
        return self.updater is not None

    @property
    def input_nodes(self) -> str:
        """Whose inputs a batch reads (``sampling.sample_blocks(inputs_of=...)``): every sampled node for
        attention layers, which read neighbours' inputs; only the roots for the other embeddings."""
        return "all" if len(self.layers) else "roots"

    def new_store(self, num_nodes: int) -> MemoryStore:
        """The node-memory store of this model on a graph of ``num_nodes`` nodes (no rows without memory)."""
        m = self.cfg.memory
        if m is None:
            return MemoryStore(0, 0, 0)
        return MemoryStore(num_nodes, m.dim, mail_dim(self.cfg, self.edge_dim), m.mailbox_size)

    def forward(
        self,
        sb: SampledBlocks,
        rows: MemoryRows | None,
        edge_feats: list[torch.Tensor | None],
        node_feat: torch.Tensor | None,
        num_events: int,
    ) -> ModelOutput:
        if self.updater is None:
            updated = updated_ts = None
            h = node_feat if node_feat is not None else torch.zeros(len(sb.unique_nid), 0)
        else:
            updated, updated_ts = self.updater(rows.mem, rows.mem_ts, rows.mail, rows.mail_ts, rows.mail_mask)
            h = updated
            if self.node_proj is not None:
                h = h + self.node_proj(node_feat)
        roots = sb.inverse[: sb.num_roots]
        if self.layers:
            index = sb.inverse
            for layer, block, ef in zip(self.layers, sb.blocks, edge_feats):
                h = layer(block, h, index, ef)
                index = torch.arange(len(h))
            h_roots = h
        elif self.time_proj is not None:
            h_roots = self.time_proj(h.index_select(0, roots), sb.root_ts - updated_ts.index_select(0, roots))
        else:
            h_roots = h.index_select(0, roots)
        b = num_events
        logits = self.predictor(h_roots[:b], h_roots[b:])
        return ModelOutput(pos=logits[:b], neg=logits[b:], updated=updated, updated_ts=updated_ts)

    def make_mails(self, batch: "Batch", out: ModelOutput) -> MemoryWrite:
        """U's writes after T (``out``: T's detached output for ``batch``; models with memory only): the new
        memory of the batch's positive endpoints (src, dst; negatives are never written) and their mails
        ``[s_me', s_other', e]`` stamped with the event's time, one per receiving node, the latest event
        winning; with ``memory.deliver_to: neighbors`` (APAN) each endpoint's mail also goes to its sampled
        neighbours."""
        sb = batch.sampled
        # positive endpoints, interleaved in event order (src_0, dst_0, src_1, ...): the latest event wins
        mem_ids = torch.from_numpy(np.stack([batch.src, batch.dst], 1).reshape(-1))
        hop_dst = hop_nid = None
        if self.deliver_to_neighbors:  # the sampled neighbours of each positive endpoint
            hop1 = sb.blocks[-1]
            e_src, hop_dst = hop1.edges()
            hop_nid = hop1.srcdata["nid"].index_select(0, e_src)
        mem, mem_ts, mail_ids, mail, mail_ts = _endpoint_updates(
            sb.inverse, batch.size, mem_ids, out.updated, out.updated_ts, torch.from_numpy(batch.t),
            batch.event_feat, hop_dst, hop_nid)
        return MemoryWrite(mem_ids, mem, mem_ts, mail_ids, mail, mail_ts)


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
