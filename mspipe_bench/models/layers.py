"""Building blocks of memory-based TGNNs, each with one job.

- :class:`TimeEncode` — ``cos(ω·Δt + φ)`` with TGL's initialisation ``ω_j = 10^{-9j/(d-1)}``.
- Memory updaters (run once per *unique* fetched node that has mail; nodes without mail keep their memory):
  :class:`RecurrentUpdater` (GRU for TGN, RNN for JODIE) and :class:`MailboxAttentionUpdater` (APAN).
  An updated memory depends only on the store's rows (memory, mails, their times), never on a query time.
- Embedding modules: :class:`TemporalAttentionLayer` (TGN, TGAT; DGL message passing on the block),
  :class:`TimeProjection` (JODIE), identity (APAN).
- :class:`EdgePredictor` — ``out(relu(W_s h_src + W_d h_dst))``.
"""

from __future__ import annotations

import math
import warnings

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
      by DGL's fused ``u_dot_v`` / ``u_mul_e_sum`` on a graph whose sources are those rows
      (:class:`_EdgeDot`, :class:`_EdgeWeightedSum`);
    - per-edge terms ``r_e = φ(Δt_e)`` (and ``x_e``) enter through the query and the aggregate instead:
      ``q·W_r r_e = (W_rᵀ q)·r_e`` and ``Σ α_e W_r r_e = W_r Σ α_e r_e``, two batched products over each
      destination's ``≤ fanout`` edges laid out in a ``[num_dst, fanout, ·]`` grid
      (:class:`_GridTimeScores`, :class:`_GridTimeAggregate` for the time encoding).

    ``α`` is DGL's ``edge_softmax`` over the block. Edges must be grouped by destination (``sampling.blocks``
    emits them so); edge ``e`` runs from source instance ``num_dst + e`` whose row of ``h`` is
    ``index[num_dst + e]``.
    """

    def __init__(self, dim_in: int, dim_edge: int, dim_time: int, dim_out: int, heads: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.heads, self.dim_out = heads, dim_out
        self.time_enc = TimeEncode(dim_time)
        self.w_q_h = _linear(dim_in, dim_out)
        self.w_q_t = nn.Linear(dim_time, dim_out, bias=False)
        self.w_kv_h = _linear(dim_in, 2 * dim_out)
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
            # node terms on a graph whose sources are the rows of h (and its reverse, for the backward)
            rows = index[num_dst:]
            nodes = (
                dgl.create_block((rows, e_dst), num_src_nodes=len(h), num_dst_nodes=num_dst),
                dgl.create_block((e_dst, rows), num_src_nodes=num_dst, num_dst_nodes=len(h)),
            )
            kv_h = self.w_kv_h(h).view(len(h), 2, H, dh)
            k_h, v_h = kv_h[:, 0].contiguous(), kv_h[:, 1].contiguous()
            # per-edge inputs on the [num_dst, width] grid (empty slots: zero attention, dropped scores)
            dt = _to_grid(block.edata["dt"], slot, num_dst, width)
            w_t, w_e = self.w_kv_t.weight, (self.w_kv_e.weight if self.w_kv_e is not None else None)
            omega, phase, time_grid = self.time_enc.w.weight.reshape(-1), self.time_enc.w.bias, {}
            score_grid = _GridTimeScores.apply(dt, omega, phase, _head_map(q, w_t[: self.dim_out]), time_grid)
            if w_e is not None:
                x = _to_grid(edge_feat, slot, num_dst, width)
                score_grid = score_grid + torch.bmm(x, _head_map(q, w_e[: self.dim_out]))
            score = _EdgeDot.apply(nodes, k_h, q).squeeze(2)  # [E, H]
            score = score + score_grid.view(num_dst * width, H).index_select(0, slot)
            att = self.attn_drop(dgl.ops.edge_softmax(block, nn.functional.leaky_relu(score, 0.2)))  # [E, H]
            z = _EdgeWeightedSum.apply(nodes, v_h, att.unsqueeze(2))  # [num_dst, H, dh]
            att_grid = _to_grid(att, slot, num_dst, width)
            z = z + _map_heads(_GridTimeAggregate.apply(att_grid, omega, phase, time_grid), w_t[self.dim_out :])
            if w_e is not None:
                z = z + _map_heads(torch.bmm(att_grid.transpose(1, 2), x), w_e[self.dim_out :])
            z = z.reshape(num_dst, self.dim_out)
        else:
            z = h.new_zeros(num_dst, self.dim_out)
        return self.norm(nn.functional.relu(self.drop(self.w_out(torch.cat([z, h_dst], dim=1)))))


def _linear(dim_in: int, dim_out: int) -> nn.Linear:
    """``nn.Linear``, also for ``dim_in = 0`` (node inputs of width 0: a model without memory or node
    features), where the map is its bias alone, initialised to 0 (torch's init warns on the empty weight)."""
    if dim_in:
        return nn.Linear(dim_in, dim_out)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return nn.Linear(0, dim_out)


class _EdgeDot(torch.autograd.Function):
    """``s[e, h] = k[src(e), h, :] · q[dst(e), h, :]`` (DGL ``u_dot_v``) with a backward that expands
    ``∂L/∂s`` over the head dimension first: DGL's own backward multiplies ``[E, H, 1]`` by ``[·, H, dh]``
    in its broadcasting SpMM, which is 4x slower on CPU than the same-shape one (measured, 11k edges)."""

    @staticmethod
    def forward(ctx, graphs, k, q):
        ctx.graphs = graphs
        ctx.save_for_backward(k, q)
        return dgl.ops.u_dot_v(graphs[0], k, q)

    @staticmethod
    def backward(ctx, g):
        k, q = ctx.saved_tensors
        fwd, rev = ctx.graphs
        ge = g.expand(-1, -1, k.shape[2]).contiguous()
        grad_k = dgl.ops.u_mul_e_sum(rev, q, ge) if ctx.needs_input_grad[1] else None
        grad_q = dgl.ops.u_mul_e_sum(fwd, k, ge) if ctx.needs_input_grad[2] else None
        return None, grad_k, grad_q


class _EdgeWeightedSum(torch.autograd.Function):
    """``z[v, h, :] = Σ_{e→v} a[e, h] · x[src(e), h, :]`` (DGL ``u_mul_e_sum``), run with ``a`` expanded to
    ``x``'s shape for the same reason as :class:`_EdgeDot`."""

    @staticmethod
    def forward(ctx, graphs, x, a):
        ctx.graphs = graphs
        ae = a.expand(-1, -1, x.shape[2]).contiguous()
        ctx.save_for_backward(x, ae)
        return dgl.ops.u_mul_e_sum(graphs[0], x, ae)

    @staticmethod
    def backward(ctx, g):
        x, ae = ctx.saved_tensors
        fwd, rev = ctx.graphs
        grad_x = dgl.ops.u_mul_e_sum(rev, g, ae) if ctx.needs_input_grad[1] else None
        grad_a = dgl.ops.u_dot_v(fwd, x, g) if ctx.needs_input_grad[2] else None
        return None, grad_x, grad_a


def _head_map(q: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``W_hᵀ q_h`` for each head: ``q`` ``[V, H, dh]``, ``w`` ``[H·dh, R]`` -> ``[V, R, H]``."""
    H, dh = q.shape[1:]
    return torch.einsum("vhd,hdr->vrh", q, w.view(H, dh, -1))


def _map_heads(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``W_h a_h`` for each head: ``a`` ``[V, H, R]``, ``w`` ``[H·dh, R]`` -> ``[V, H, dh]``."""
    H = a.shape[1]
    return torch.einsum("vhr,hdr->vhd", a, w.view(H, -1, w.shape[1]))


class _GridTimeScores(torch.autograd.Function):
    """Time part of the attention scores on the neighbour grid: ``φ = cos(Δt ⊗ ω + b)`` ``[V, W, T]`` and
    ``s[v, f, h] = Σ_t φ[v, f, t] · qk[v, t, h]``. Together with :class:`_GridTimeAggregate` (which reuses
    ``φ`` through ``time_grid``) this never materialises ``∂L/∂φ``: the gradients of ``ω`` and ``b`` are
    ``-Σ sin(x)·(…)`` contracted over the grid in one batched product per function, and ``sin(x)`` is
    computed once for both. Autograd's version materialises ``∂L/∂φ`` from each use, their sum, ``sin(x)``
    and ``∂L/∂x``, each a ``[V, W, T]`` tensor."""

    @staticmethod
    def forward(ctx, dt, omega, phase, qk, time_grid: dict):
        x = torch.addcmul(phase, dt.unsqueeze(2), omega)
        phi = torch.cos(x)
        time_grid.update(dt=dt, x=x, phi=phi)
        ctx.time_grid = time_grid
        ctx.save_for_backward(qk)
        return torch.bmm(phi, qk)

    @staticmethod
    def backward(ctx, g):
        (qk,) = ctx.saved_tensors
        t = ctx.time_grid
        grad_qk = torch.bmm(t["phi"].transpose(1, 2), g) if ctx.needs_input_grad[3] else None
        grad_omega, grad_phase = _time_param_grads(t, g, qk.transpose(1, 2))
        return None, grad_omega, grad_phase, grad_qk, None


class _GridTimeAggregate(torch.autograd.Function):
    """``zt[v, h, t] = Σ_f α[v, f, h] · φ[v, f, t]`` with the ``φ`` of the preceding :class:`_GridTimeScores`."""

    @staticmethod
    def forward(ctx, att, omega, phase, time_grid: dict):
        ctx.time_grid = time_grid
        ctx.save_for_backward(att)
        return torch.bmm(att.transpose(1, 2), time_grid["phi"])

    @staticmethod
    def backward(ctx, g):
        (att,) = ctx.saved_tensors
        t = ctx.time_grid
        grad_att = torch.bmm(t["phi"], g.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        grad_omega, grad_phase = _time_param_grads(t, att, g)
        return grad_att, grad_omega, grad_phase, None


def _time_param_grads(t: dict, a: torch.Tensor, c: torch.Tensor):
    """Gradients of ``ω``, ``b`` when ``∂L/∂φ[v, f, :] = Σ_h a[v, f, h] · c[v, h, :]``:
    ``∂b = -Σ sin(x) ∂L/∂φ = -Σ_{v,h} c[v,h,:] · (Σ_f a[v,f,h] sin x[v,f,:])`` and ``∂ω`` the same with
    ``a·Δt``; ``sin(x)`` is computed on first use and kept for the other function's backward."""
    if "sin" not in t:
        t["sin"] = torch.sin(t["x"])
    H = a.shape[2]
    a2 = torch.cat([a, a * t["dt"].unsqueeze(2)], dim=2)  # [V, W, 2H]
    s = torch.bmm(a2.transpose(1, 2), t["sin"])  # [V, 2H, T]
    grad_phase = -(s[:, :H] * c).sum((0, 1))
    grad_omega = -(s[:, H:] * c).sum((0, 1))
    return grad_omega, grad_phase


def _to_grid(values: torch.Tensor, slot: torch.Tensor, num_dst: int, width: int) -> torch.Tensor:
    """Per-edge ``values`` ``[E, ...]`` laid out on the ``[num_dst, width, ...]`` grid of :func:`_grid_slots`;
    empty slots are zero (differentiable in ``values``)."""
    grid = values.new_zeros(num_dst * width, *values.shape[1:]).index_copy_(0, slot, values)
    return grid.view(num_dst, width, *values.shape[1:])


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
