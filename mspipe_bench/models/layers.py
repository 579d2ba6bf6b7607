"""Building blocks of memory-based TGNNs, each with one job.

- :class:`TimeEncode` — ``cos(ω·Δt + φ)`` with TGL's initialisation ``ω_j = 10^{-9j/(d-1)}``.
- Memory updaters (run once per *unique* fetched node that has mail; nodes without mail keep their memory):
  :class:`RecurrentUpdater` (GRU for TGN, RNN for JODIE) and :class:`MailboxAttentionUpdater` (APAN).
  An updated memory depends only on the store's rows (memory, mails, their times), never on a query time.
- Embedding modules: :class:`TemporalAttentionLayer` (TGN, DGL message passing on the block),
  :class:`TimeProjection` (JODIE), identity (APAN).
- :class:`EdgePredictor` — ``out(relu(W_s h_src + W_d h_dst))``.
"""

from __future__ import annotations

import math

import dgl
import numpy as np
import torch
from torch import nn


class _CosEncode(torch.autograd.Function):
    """``cos(dt ⊗ ω + b)`` with a backward that makes three passes over the ``[N, d]`` output instead of
    autograd's six (sin, neg, two muls, two sums): ``g_x = -g·sin(x)``, ``∂ω = dt·g_x``, ``∂b = Σ g_x``."""

    @staticmethod
    def forward(ctx, dt: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = torch.addcmul(b, dt.unsqueeze(1), w.unsqueeze(0))
        ctx.save_for_backward(dt, x)
        return torch.cos(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        dt, x = ctx.saved_tensors
        gx = torch.sin(x).mul_(g)  # = -∂L/∂x
        return None, -(dt @ gx), -gx.sum(0)


class TimeEncode(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.w = nn.Linear(1, dim)
        with torch.no_grad():
            self.w.weight.copy_(torch.from_numpy(1.0 / 10 ** np.linspace(0, 9, dim, dtype=np.float32)).reshape(dim, 1))
            self.w.bias.zero_()

    def forward(self, dt: torch.Tensor) -> torch.Tensor:
        w = self.w.weight.reshape(-1)
        out = _CosEncode.apply(dt.reshape(-1).to(w.dtype), w, self.w.bias)
        return out.reshape(*dt.shape, self.dim)


class RecurrentUpdater(nn.Module):
    """``s' = Cell([mail ‖ φ(t_mail − t_mem)], s)`` for nodes with a mail (TGN: GRU, JODIE: RNN)."""

    def __init__(self, mem_dim: int, mail_dim: int, time_dim: int, cell: str = "gru"):
        super().__init__()
        self.time_enc = TimeEncode(time_dim)
        cls = {"gru": nn.GRUCell, "rnn": nn.RNNCell}[cell]
        self.cell = cls(mail_dim + time_dim, mem_dim)

    def forward(self, mem, mem_ts, mail, mail_ts, mail_mask):
        has = mail_mask[:, 0]
        sel = has.nonzero().squeeze(1)
        if len(sel) == 0:
            return mem, mem_ts
        dt = (mail_ts[sel, 0] - mem_ts[sel]).float()
        x = torch.cat([mail[sel, 0], self.time_enc(dt)], dim=1)
        upd = self.cell(x, mem[sel])
        return mem.index_copy(0, sel, upd), torch.where(has, mail_ts[:, 0], mem_ts)


class MailboxAttentionUpdater(nn.Module):
    """APAN: multi-head attention of the memory over its mailbox (mails with the time encoding of their age
    relative to the newest mail), ``s' = LayerNorm(s + W_o · attn)``."""

    def __init__(self, mem_dim: int, mail_dim: int, time_dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.time_enc = TimeEncode(time_dim)
        self.w_q = nn.Linear(mem_dim, mem_dim)
        self.w_kv = nn.Linear(mail_dim + time_dim, 2 * mem_dim)
        self.w_o = nn.Linear(mem_dim, mem_dim)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(mem_dim)

    def forward(self, mem, mem_ts, mail, mail_ts, mail_mask):
        has = mail_mask.any(1)
        sel = has.nonzero().squeeze(1)
        if len(sel) == 0:
            return mem, mem_ts
        m, mts, mask = mail[sel], mail_ts[sel], mail_mask[sel]
        newest = torch.where(mask, mts, torch.full_like(mts, -math.inf)).max(1).values
        age = torch.where(mask, newest[:, None] - mts, torch.zeros_like(mts)).float()
        kv = self.w_kv(torch.cat([m, self.time_enc(age)], dim=2))  # [n, slots, 2d]
        n, slots, _ = kv.shape
        d = mem.shape[1]
        dh = d // self.heads
        k, v = kv.view(n, slots, 2, self.heads, dh).unbind(2)
        q = self.w_q(mem[sel]).view(n, 1, self.heads, dh)
        score = (q * k).sum(-1) / math.sqrt(dh)  # [n, slots, H]
        score = score.masked_fill(~mask[:, :, None], -math.inf)
        att = self.drop(torch.softmax(score, dim=1))
        out = (att[..., None] * v).sum(1).reshape(n, d)
        upd = self.norm(mem[sel] + self.drop(self.w_o(out)))
        return mem.index_copy(0, sel, upd), torch.where(has, newest.new_zeros(len(has)).index_copy(0, sel, newest), mem_ts)


class TemporalAttentionLayer(nn.Module):
    """TGN's temporal graph attention on a DGL block.

    For destination ``v`` (query time ``t_v``) with sampled neighbour edges ``(u, e, t_e)``:
    ``q = W_q [h_v ‖ φ(0)]``, ``k_e = W_k [h_u ‖ x_e ‖ φ(t_v − t_e)]``, ``v_e = W_v [h_u ‖ x_e ‖ φ(...)]``;
    ``α = edge_softmax(LeakyReLU(q·k_e))`` per head; ``z_v = Σ α v_e``;
    ``h'_v = LayerNorm(ReLU(Dropout(W_o [z_v ‖ h_v])))``.

    Computed without any per-edge GEMM (on CPU the per-edge ``[E, 2d]`` keys/values and their gradients
    were most of a TGN step). The maps over concatenations are split, ``W[a‖r] = W_a a + W_r r``:

    - node terms ``W_k h_u``, ``W_v h_u`` once per row of ``h`` (per unique node in the first layer), used
      by DGL's fused ``u_dot_v`` / ``u_mul_e_sum`` on a graph whose sources are those rows;
    - per-edge terms ``r_e = φ(Δt_e)`` (and ``x_e``) enter through the query and the aggregate instead:
      ``q·W_r r_e = (W_rᵀ q)·r_e`` and ``Σ α_e W_r r_e = W_r Σ α_e r_e``, two batched products over each
      destination's ``≤ fanout`` edges laid out in a ``[num_dst, fanout, ·]`` grid.

    ``α`` is DGL's ``edge_softmax`` over the block. Edges must be grouped by destination (``sampling.blocks``
    emits them so); edge ``e`` runs from source instance ``num_dst + e`` whose row of ``h`` is
    ``index[num_dst + e]``.
    """

    def __init__(self, dim_in: int, dim_edge: int, dim_time: int, dim_out: int, heads: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.heads, self.dim_out = heads, dim_out
        self.time_enc = TimeEncode(dim_time)
        self.w_q_h = nn.Linear(dim_in, dim_out)
        self.w_q_t = nn.Linear(dim_time, dim_out, bias=False)
        self.w_kv_h = nn.Linear(dim_in, 2 * dim_out)
        self.w_kv_t = nn.Linear(dim_time, 2 * dim_out, bias=False)
        self.w_kv_e = nn.Linear(dim_edge, 2 * dim_out, bias=False) if dim_edge else None
        self.w_out = nn.Linear(dim_out + dim_in, dim_out)
        self.drop = nn.Dropout(dropout)
        self.attn_drop = nn.Dropout(attn_dropout)
        self.norm = nn.LayerNorm(dim_out)

    def forward(self, block, h: torch.Tensor, index: torch.Tensor, edge_feat: torch.Tensor | None) -> torch.Tensor:
        """``h[index[j]]`` is the input of source node ``j`` of ``block``; returns ``[num_dst, dim_out]``."""
        num_dst, num_edges = block.num_dst_nodes(), block.num_edges()
        H, dh = self.heads, self.dim_out // self.heads
        h_dst = h.index_select(0, index[:num_dst])
        q = self.w_q_h(h_dst) + self.w_q_t(self.time_enc(h.new_zeros(1)))
        if num_edges > 0:
            q = q.view(num_dst, H, dh)
            e_dst = block.edges()[1]
            slot, width = _grid_slots(e_dst, num_dst)
            # node terms on a graph whose sources are the rows of h
            nodes = dgl.create_block((index[num_dst:], e_dst), num_src_nodes=len(h), num_dst_nodes=num_dst)
            kv_h = self.w_kv_h(h).view(len(h), 2, H, dh)
            k_h, v_h = kv_h[:, 0].contiguous(), kv_h[:, 1].contiguous()
            # per-edge inputs on the [num_dst, width] grid (empty slots: zero attention, dropped scores)
            dt = block.edata["dt"].new_zeros(num_dst * width).index_copy_(0, slot, block.edata["dt"])
            per_edge = [(self.time_enc(dt).view(num_dst, width, -1), self.w_kv_t.weight)]
            if self.w_kv_e is not None:
                x = edge_feat.new_zeros(num_dst * width, edge_feat.shape[1]).index_copy_(0, slot, edge_feat)
                per_edge.append((x.view(num_dst, width, -1), self.w_kv_e.weight))
            score = dgl.ops.u_dot_v(nodes, k_h, q).squeeze(2)  # [E, H]
            for r, w in per_edge:
                w_k = w[: self.dim_out].view(H, dh, -1)
                qk = torch.einsum("vhd,hdr->vrh", q, w_k)  # W_kᵀ q per head: [num_dst, R, H]
                score = score + torch.bmm(r, qk).view(num_dst * width, H).index_select(0, slot)
            att = self.attn_drop(dgl.ops.edge_softmax(block, nn.functional.leaky_relu(score, 0.2)))  # [E, H]
            z = dgl.ops.u_mul_e_sum(nodes, v_h, att.unsqueeze(2))  # [num_dst, H, dh]
            att_grid = att.new_zeros(num_dst * width, H).index_copy(0, slot, att).view(num_dst, width, H)
            for r, w in per_edge:
                w_v = w[self.dim_out :].view(H, dh, -1)
                z = z + torch.einsum("vhr,hdr->vhd", torch.bmm(att_grid.transpose(1, 2), r), w_v)
            z = z.reshape(num_dst, self.dim_out)
        else:
            z = h.new_zeros(num_dst, self.dim_out)
        return self.norm(nn.functional.relu(self.drop(self.w_out(torch.cat([z, h_dst], dim=1)))))


def _grid_slots(e_dst: torch.Tensor, num_dst: int) -> tuple[torch.Tensor, int]:
    """For edges grouped by destination: each edge's slot ``dst · width + rank`` in a ``[num_dst, width]``
    grid, ``width`` = the largest in-degree."""
    if len(e_dst) > 1 and bool((e_dst[1:] < e_dst[:-1]).any()):
        raise ValueError("block edges must be grouped by destination (sorted by destination id)")
    deg = torch.bincount(e_dst, minlength=num_dst)
    width = int(deg.max())
    first = torch.cumsum(deg, 0) - deg
    rank = torch.arange(len(e_dst)) - first.index_select(0, e_dst)
    return e_dst * width + rank, width


class TimeProjection(nn.Module):
    """JODIE: ``h = s ⊙ (1 + W · log1p(t_query − t_mem))`` (the log keeps the projection scale-free)."""

    def __init__(self, dim: int):
        super().__init__()
        self.w = nn.Linear(1, dim)
        nn.init.normal_(self.w.weight, 0.0, 0.1)
        nn.init.zeros_(self.w.bias)

    def forward(self, mem: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        return mem * (1 + self.w(torch.log1p(dt.clamp(min=0)).float().unsqueeze(1)))


class EdgePredictor(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.src = nn.Linear(dim, dim)
        self.dst = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, 1)

    def forward(self, h_src: torch.Tensor, h_dst: torch.Tensor) -> torch.Tensor:
        """Scores ``[len(h_dst)]``; ``h_dst`` may hold several candidates per source (``len(h_dst)`` a multiple
        of ``len(h_src)``, candidate-major): the source term is computed once per source."""
        s = self.src(h_src)
        d = self.dst(h_dst).view(-1, *s.shape)
        return self.out(nn.functional.relu(s + d)).reshape(-1)
