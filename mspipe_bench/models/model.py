"""One memory-based TGNN assembled from a :class:`ModelConfig` (TGL's idea: one general model, presets in
YAML). ``memory.updater`` picks the updater, ``gnn.arch`` the embedding module; TGN, JODIE and APAN are
presets, not classes.

Forward (the T stage's computation) for a batch of ``B`` events with roots ``[src, dst, neg]``:
1. updated memory of every unique fetched node (only nodes with mail run the updater);
2. node inputs ``h = s' (+ W_n x_v)``;
3. embeddings of the roots (attention layers over the blocks / time projection / identity);
4. scores of ``(src, dst)`` and ``(src, neg)``.
"""

from __future__ import annotations

from dataclasses import dataclass

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
from mspipe_bench.models.memory import MemoryRows
from mspipe_bench.sampling.blocks import SampledBlocks


@dataclass
class ModelOutput:
    pos: torch.Tensor  # [B] logits of the true events
    neg: torch.Tensor  # [B] logits of the negatives
    updated: torch.Tensor  # [U, d_mem] updated memory of the unique fetched nodes (with grad in training)
    updated_ts: torch.Tensor  # [U] float64 time the updated memory is as of


def mail_dim(cfg: ModelConfig, edge_dim: int) -> int:
    return 2 * cfg.memory.dim + edge_dim


class TemporalModel(nn.Module):
    def __init__(self, cfg: ModelConfig, edge_dim: int = 0, node_dim: int = 0):
        super().__init__()
        self.cfg = cfg
        m, g = cfg.memory, cfg.gnn
        md = mail_dim(cfg, edge_dim)
        if m.updater in ("gru", "rnn"):
            self.updater = RecurrentUpdater(m.dim, md, m.time_dim, cell=m.updater)
        else:
            self.updater = MailboxAttentionUpdater(m.dim, md, m.time_dim, m.heads, g.dropout)
        self.node_proj = nn.Linear(node_dim, m.dim) if node_dim else None
        self.layers = nn.ModuleList()
        self.time_proj = None
        if g.arch == "attention":
            for layer in range(g.layers):
                dim_in = m.dim if layer == 0 else g.dim_out
                self.layers.append(
                    TemporalAttentionLayer(dim_in, edge_dim, g.time_dim, g.dim_out, g.heads, g.dropout, g.attn_dropout)
                )
        elif g.arch == "time_projection":
            self.time_proj = TimeProjection(m.dim)
        self.predictor = EdgePredictor(g.dim_out)

    def forward(
        self,
        sb: SampledBlocks,
        rows: MemoryRows,
        edge_feats: list[torch.Tensor | None],
        node_feat: torch.Tensor | None,
        num_events: int,
    ) -> ModelOutput:
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
