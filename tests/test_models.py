"""Models: presets forward/backward, config errors and overrides, no leakage from an event into its own
score, and the layers (TimeEncode, temporal attention) against brute-force per-destination loops."""

from __future__ import annotations

import math

import dgl
import numpy as np
import pytest
import torch
from torch import nn

from mspipe_bench.data.graph import TemporalGraph
from mspipe_bench.errors import UserError
from mspipe_bench.models.config import ModelConfig, from_dict, load_config
from mspipe_bench.models.layers import (
    TemporalAttentionLayer,
    TimeEncode,
    _CosEncode,
    _GridTimeAggregate,
    _GridTimeScores,
)
from mspipe_bench.stages import make_context, run_stage


SMALL = ["memory.dim=8", "memory.time_dim=4", "gnn.time_dim=4", "gnn.dim_out=8"]
PRESETS = ["tgn", "jodie", "apan", "tgat"]


def tiny_graph(seed: int = 0, num_events: int = 60, num_nodes: int = 12, edge_dim: int = 4,
               node_dim: int = 3, max_t: int = 20) -> TemporalGraph:
    """A general (non-bipartite) graph without self-loops and with many repeated timestamps."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, num_nodes, num_events)
    dst = (src + rng.integers(1, num_nodes, num_events)) % num_nodes
    t = np.sort(rng.integers(0, max_t, num_events)).astype(np.float64)
    ef = rng.normal(size=(num_events, edge_dim)).astype(np.float32) if edge_dim else None
    nf = rng.normal(size=(num_nodes, node_dim)).astype(np.float32) if node_dim else None
    return TemporalGraph(src=src, dst=dst, t=t, num_nodes=num_nodes, edge_feat=ef, node_feat=nf,
                         dst_candidates=None, meta={"infer_bipartite": False})


def cfg_for(preset: str, batch_size: int = 20, extra: list[str] | None = None) -> ModelConfig:
    small = [o for o in SMALL if not o.startswith("memory.")] if preset == "tgat" else SMALL  # tgat: memory none
    return load_config(preset, small + [f"train.batch_size={batch_size}"] + (extra or []))


# ---------------------------------------------------------------------------------------------- presets
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("edge_dim, node_dim", [(4, 3), (0, 0)])
def test_preset_forward_backward(preset, edge_dim, node_dim):
    g = tiny_graph(edge_dim=edge_dim, node_dim=node_dim)
    cfg = cfg_for(preset)
    ctx = make_context(g, cfg, seed=0)
    b0, b1, b2 = ctx.batches("train", 0, g.num_events)
    # two full iterations first, so memory is non-zero and nodes hold several mails (APAN): only then
    # do the recurrent weight on the memory and the mailbox attention's query receive gradients
    for b in (b0, b1):
        for st in "SFMTU":
            run_stage(ctx, st, b)
        assert math.isfinite(b.loss)
    for st in "SFM":
        run_stage(ctx, st, b2)
    model = ctx.model
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(b2.sampled, b2.rows, b2.edge_feats, b2.node_feat, b2.size)
    num_unique = len(b2.sampled.unique_nid)
    assert out.pos.shape == (b2.size,) and out.neg.shape == (b2.size,)
    if preset == "tgat":
        assert out.updated is None and out.updated_ts is None
    else:
        assert out.updated.shape == (num_unique, cfg.memory.dim) and out.updated_ts.shape == (num_unique,)
        assert out.updated.requires_grad
    loss = ctx.loss_fn(out.pos, torch.ones_like(out.pos)) + ctx.loss_fn(out.neg, torch.zeros_like(out.neg))
    assert torch.isfinite(loss)
    loss.backward()
    names = [n for n, _ in model.named_parameters()]
    if node_dim and preset != "tgat":  # tgat: the raw node features are the first layer's input
        assert any(n.startswith("node_proj.") for n in names)
    if edge_dim and preset in ("tgn", "tgat"):
        assert any("w_kv_e" in n for n in names)
    # (without node features tgat's first layer has an empty node-input weight: nothing to learn there)
    missing = [n for n, p in model.named_parameters()
               if p.numel() and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"{preset}: parameters without gradient: {missing}"
    for n, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), n
    # and the T stage itself runs (optimizer step) with a finite loss
    run_stage(ctx, "T", b2)
    assert math.isfinite(b2.loss)


def test_two_layer_tgn_forward_backward():
    g = tiny_graph()
    ctx = make_context(g, cfg_for("tgn", extra=["gnn.layers=2", "sampling.fanouts=[3,2]"]), seed=1)
    assert len(ctx.model.layers) == 2
    for b in ctx.batches("train", 0, g.num_events):
        for st in "SFMTU":
            run_stage(ctx, st, b)
        assert math.isfinite(b.loss)


# ---------------------------------------------------------------------------------------------- config
def test_presets_load_with_expected_structure():
    tgn, jodie, apan = (load_config(p) for p in ("tgn", "jodie", "apan"))  # tgat: test_model_api.py
    assert (tgn.memory.updater, tgn.gnn.arch, tgn.sampling.fanouts) == ("gru", "attention", [10])
    assert (jodie.memory.updater, jodie.gnn.arch, jodie.sampling.fanouts) == ("rnn", "time_projection", [])
    assert (apan.memory.updater, apan.gnn.arch, apan.memory.mailbox_size, apan.memory.deliver_to) == (
        "attention", "identity", 10, "neighbors")


def test_overrides():
    cfg = load_config("tgn", ["gnn.heads=4"])
    assert cfg.gnn.heads == 4
    cfg = load_config("tgn", ["gnn.layers=2", "sampling.fanouts=[10, 5]", "train.lr=0.001",
                              "sampling.strategy=uniform"])
    assert cfg.gnn.layers == 2 and cfg.sampling.fanouts == [10, 5]
    assert cfg.train.lr == 0.001 and cfg.sampling.strategy == "uniform"


@pytest.mark.parametrize(
    "overrides, needles",
    [
        (["gnn.bogus=1"], ["unknown key", "gnn.bogus"]),
        (["memroy.dim=10"], ["unknown key", "memroy"]),
        (["gnn.heads=0"], ["gnn.heads"]),
        (["memory.dim=abc"], ["memory.dim", "abc"]),
        (["sampling.strategy=newest"], ["sampling.strategy", "newest"]),
        (["gnn.dropout=1.5"], ["gnn.dropout"]),
        (["sampling.fanouts=[0]"], ["sampling.fanouts"]),
        # inconsistent: attention layers vs fanouts
        (["gnn.layers=2"], ["gnn.layers=2", "sampling.fanouts"]),
        (["sampling.fanouts=[]"], ["gnn.layers=1", "sampling.fanouts"]),
        (["gnn.dim_out=10", "gnn.heads=3"], ["gnn.dim_out=10", "gnn.heads=3"]),
        (["heads=3"], ["unknown key", "heads"]),
        (["gnn.heads"], ["section.key=value"]),
        (["name.x=1"], ["'name' is not a section"]),
    ],
)
def test_config_errors_name_the_key(overrides, needles):
    with pytest.raises(UserError) as exc:
        load_config("tgn", overrides)
    assert "\n" not in str(exc.value)
    for needle in needles:
        assert needle in str(exc.value), (needle, str(exc.value))


def test_config_errors_other_presets_and_files(tmp_path):
    with pytest.raises(UserError, match=r"gnn\.dim_out=50 must equal memory\.dim=100"):
        load_config("jodie", ["gnn.dim_out=50"])
    with pytest.raises(UserError, match="deliver_to=neighbors needs sampled neighbours"):
        load_config("apan", ["sampling.fanouts=[]"])
    with pytest.raises(UserError, match="neither a preset"):
        load_config("graphsage")
    path = tmp_path / "m.yaml"
    path.write_text("name: mine\nsampling:\n  fanouts: [5]\ngnn:\n  layers: 1\n  headz: 2\n")
    with pytest.raises(UserError, match=r"m\.yaml.*unknown key 'gnn\.headz'"):
        load_config(str(path))
    path.write_text("name: mine\nsampling: [5\n")
    with pytest.raises(UserError, match=r"m\.yaml: not valid YAML: .*line 2") as exc:
        load_config(str(path))
    assert "\n" not in str(exc.value)
    path.write_text("name: mine\nsampling:\n  fanouts: [5]\n")
    assert load_config(str(path)).sampling.fanouts == [5]
    with pytest.raises(UserError, match="mapping"):
        from_dict([1, 2])


# ---------------------------------------------------------------------------------------------- leakage
def scores_from(graph: TemporalGraph, cfg: ModelConfig, state: dict, snap: dict, lo: int, hi: int):
    """Positive and negative scores of events ``[lo, hi)`` (one evaluation batch, dropout off) from the
    given parameters and memory store contents."""
    ctx = make_context(graph, cfg, seed=0)
    ctx.model.load_state_dict(state)
    ctx.store.restore(snap)
    (b,) = ctx.batches("val", lo, hi)
    for st in "SFMT":
        run_stage(ctx, st, b)
    assert not ctx.model.training
    return b.out.pos.numpy().copy(), b


def warm(preset: str, graph: TemporalGraph, cfg: ModelConfig, upto: int):
    """Train on events ``[0, upto)`` in batches of 6 (several batches: the first one only writes mails)
    so the memory store and the parameters are non-trivial."""
    cfg = cfg.model_copy(deep=True)
    cfg.train.batch_size = 6
    ctx = make_context(graph, cfg, seed=0)
    ctx.optimizer = torch.optim.Adam(ctx.model.parameters(), lr=0.05)
    for b in ctx.batches("train", 0, upto):
        for st in "SFMTU":
            run_stage(ctx, st, b)
    assert not ctx.model.has_memory or (ctx.store.touched.any() and ctx.store.mem.abs().sum() > 0)
    return {k: v.clone() for k, v in ctx.model.state_dict().items()}, ctx.store.snapshot()


def perturbed(g: TemporalGraph, change: np.ndarray, rng: np.random.Generator, later_time: float | None,
              keep_dst: np.ndarray | None = None) -> TemporalGraph:
    """A copy of ``g`` where the events in ``change`` get a new destination and new edge features and,
    when ``later_time`` is given, the events after it are all moved to ``later_time + 0.25`` (still
    strictly later, still sorted). Events in ``keep_dst`` keep their destination."""
    src, dst, t, ef = g.src.copy(), g.dst.copy(), g.t.copy(), g.edge_feat.copy()
    for j in np.flatnonzero(change):
        if keep_dst is None or not keep_dst[j]:
            dst[j] = (src[j] + rng.integers(1, g.num_nodes)) % g.num_nodes
        ef[j] = rng.normal(size=ef.shape[1]) * 3
    if later_time is not None:
        t[t > later_time] = later_time + 0.25
    return TemporalGraph(src=src, dst=dst, t=t, num_nodes=g.num_nodes, edge_feat=ef, node_feat=g.node_feat,
                         dst_candidates=None, meta={"infer_bipartite": False})


# (tgat with recent neighbours: with uniform ones, moving later events changes which queries draw from the
# batch's generator, hence the draws of earlier roots -- a change of randomness, not of information)
LEAK_CASES = [("tgn", []), ("tgn", ["gnn.layers=2", "sampling.fanouts=[3,2]"]), ("jodie", []), ("apan", []),
              ("tgat", ["sampling.fanouts=[3,2]", "sampling.strategy=recent"])]


@pytest.mark.parametrize("preset, extra", LEAK_CASES, ids=["tgn", "tgn-2layer", "jodie", "apan", "tgat"])
def test_no_leakage_from_an_event_or_anything_at_or_after_its_time(preset, extra):
    """For a root event e at time t and an identical store before the batch: changing any event with time
    >= t — its destination, edge features or time (kept >= t) — and e's own edge features must not change
    e's positive score. Earlier events of the same batch may (and for TGN do) influence it."""
    g = tiny_graph(seed=3, num_events=48, max_t=16)
    lo, hi = 24, 48
    cfg = cfg_for(preset, batch_size=24, extra=extra)
    state, snap = warm(preset, g, cfg, lo)
    base, b = scores_from(g, cfg, state, snap, lo, hi)
    rng = np.random.default_rng(0)
    batch_times = np.unique(g.t[lo:hi])
    counts = np.array([(g.t[lo:hi] == x).sum() for x in batch_times])
    # a few cut times inside the batch, including ones shared by several events of the batch
    inner = np.arange(1, len(batch_times) - 1)
    shared = inner[counts[inner] >= 2]
    assert len(shared) >= 2
    picks = sorted({int(shared[0]), int(shared[-1]), int(inner[len(inner) // 2])})
    checked = 0
    for t_star in batch_times[picks]:
        # (a) every event strictly after t*: new destination, new features, new (later) time
        g2 = perturbed(g, g.t > t_star, rng, later_time=t_star)
        pos2, _ = scores_from(g2, cfg, state, snap, lo, hi)
        upto = np.flatnonzero(g.t[lo:hi] <= t_star)
        np.testing.assert_allclose(pos2[upto], base[upto], rtol=0, atol=1e-5)
        # (b) each event e at exactly t*: its own features, the destinations and features of the other
        # events at t*, and everything after t*
        same = np.flatnonzero(g.t == t_star)
        for e in same[(same >= lo) & (same < hi)]:
            keep = np.zeros(g.num_events, dtype=bool)
            keep[e] = True
            g3 = perturbed(g, g.t >= t_star, rng, later_time=t_star, keep_dst=keep)
            assert g3.dst[e] == g.dst[e] and not np.array_equal(g3.edge_feat[e], g.edge_feat[e])
            pos3, _ = scores_from(g3, cfg, state, snap, lo, hi)
            np.testing.assert_allclose(pos3[e - lo], base[e - lo], rtol=0, atol=1e-5)
            checked += 1
    assert checked >= 3


def test_leakage_test_is_sensitive_to_earlier_events():
    """Positive control: for TGN, changing the features of an earlier event of the *same* batch that is a
    sampled neighbour of a later root does change that root's score (so the test above can see changes)."""
    g = tiny_graph(seed=3, num_events=48, max_t=16)
    lo, hi = 24, 48
    cfg = cfg_for("tgn", batch_size=24)
    state, snap = warm("tgn", g, cfg, lo)
    base, b = scores_from(g, cfg, state, snap, lo, hi)
    hop1 = b.sampled.blocks[-1]
    eids = hop1.edata["eid"].numpy()
    e_dst = hop1.edges()[1].numpy()
    in_batch = (eids >= lo) & (e_dst < b.size)  # a src root whose neighbour is an earlier batch event
    assert in_batch.any()
    j, root = int(eids[in_batch][0]), int(e_dst[in_batch][0])
    change = np.zeros(g.num_events, dtype=bool)
    change[j] = True
    keep = change.copy()  # same endpoints, new edge features
    g2 = perturbed(g, change, np.random.default_rng(1), later_time=None, keep_dst=keep)
    pos2, _ = scores_from(g2, cfg, state, snap, lo, hi)
    assert abs(pos2[root] - base[root]) > 1e-4


# ---------------------------------------------------------------------------------------------- layers
def test_time_encode_formula():
    d = 7
    enc = TimeEncode(d)
    dt = torch.tensor([[0.0, 1.0, 2.5], [10.0, 123.25, 1e3]])
    got = enc(dt)
    assert got.shape == (2, 3, d)
    omega = np.array([10 ** (-9 * j / (d - 1)) for j in range(d)])  # ω_j = 10^(-9j/(d-1)), φ = 0
    for idx in np.ndindex(2, 3):
        ref = np.cos(float(dt[idx]) * omega)
        np.testing.assert_allclose(got[idx].detach().numpy(), ref, rtol=0, atol=1e-5)
    assert torch.equal(got[0, 0], torch.ones(d))  # φ(0) = 1
    assert enc(torch.zeros(0)).shape == (0, d)
    # (large gaps, e.g. 1e6 s, are ill-conditioned in float32 for the fast frequencies: only bounded)
    big = enc(torch.tensor([1e6, 2.6e6]))
    assert torch.isfinite(big).all() and big.abs().max() <= 1.0
    # the frequencies and phases are trainable parameters
    assert enc.w.weight.requires_grad and enc.w.bias.requires_grad


def brute_attention(layer: TemporalAttentionLayer, block, h, index, edge_feat) -> torch.Tensor:
    """TGN attention from its definition, one destination at a time."""
    H, D = layer.heads, layer.dim_out
    dh = D // H
    # the full matrices W_q, W_k, W_v over the concatenations, assembled from the layer's split parts
    W_q = torch.cat([layer.w_q_h.weight, layer.w_q_t.weight], 1)
    b_q = layer.w_q_h.bias
    W_kv_h, b_kv = layer.w_kv_h.weight, layer.w_kv_h.bias
    if hasattr(layer, "w_kv_t"):  # one [2D, T] time map (k rows first)
        W_k_t, W_v_t = layer.w_kv_t.weight[:D], layer.w_kv_t.weight[D:]
    else:  # separate k / v time maps
        W_k_t, W_v_t = layer.w_k_t.weight, layer.w_v_t.weight
    W_k = torch.cat([W_kv_h[:D]] + ([layer.w_kv_e.weight[:D]] if layer.w_kv_e is not None else []) + [W_k_t], 1)
    W_v = torch.cat([W_kv_h[D:]] + ([layer.w_kv_e.weight[D:]] if layer.w_kv_e is not None else []) + [W_v_t], 1)

    def phi(x: float) -> torch.Tensor:
        return torch.cos(layer.time_enc.w.weight[:, 0] * x + layer.time_enc.w.bias)

    e_src, e_dst = block.edges()
    dt = block.edata["dt"]
    out = []
    for v in range(block.num_dst_nodes()):
        h_v = h[index[v]]
        q = W_q @ torch.cat([h_v, phi(0.0)]) + b_q
        edges = (e_dst == v).nonzero().squeeze(1).tolist()
        z = torch.zeros(D)
        if edges:
            ks, vs = [], []
            for e in edges:
                parts = [h[index[e_src[e]]]] + ([edge_feat[e]] if edge_feat is not None else []) + [phi(float(dt[e]))]
                x = torch.cat(parts)
                ks.append(W_k @ x + b_kv[:D])
                vs.append(W_v @ x + b_kv[D:])
            K, V = torch.stack(ks), torch.stack(vs)
            for hd in range(H):
                sl = slice(hd * dh, (hd + 1) * dh)
                s = torch.nn.functional.leaky_relu(K[:, sl] @ q[sl], 0.2)
                a = torch.softmax(s, 0)
                z[sl] = (a[:, None] * V[:, sl]).sum(0)
        y = layer.w_out.weight @ torch.cat([z, h_v]) + layer.w_out.bias
        out.append(layer.norm(torch.relu(y)))
    return torch.stack(out)


@pytest.mark.parametrize("dim_edge", [3, 0])
def test_attention_layer_matches_brute_force(dim_edge):
    torch.manual_seed(0)
    dim_in, T, D, H = 5, 4, 6, 2
    layer = TemporalAttentionLayer(dim_in, dim_edge, T, D, H, dropout=0.5, attn_dropout=0.5)
    with torch.no_grad():  # random everything (biases and LayerNorm too), not just the default init
        for name, p in layer.named_parameters():
            if not name.startswith("time_enc."):
                p.normal_(0.0, 0.5)
    layer.eval()  # dropout off
    # 4 destinations with 3, 0, 1, 2 incoming edges; each edge has its own source instance
    e_dst = torch.tensor([0, 0, 0, 2, 3, 3])
    num_dst, ne = 4, len(e_dst)
    e_src = torch.arange(num_dst, num_dst + ne)
    block = dgl.create_block((e_src, e_dst), num_src_nodes=num_dst + ne, num_dst_nodes=num_dst)
    block.edata["dt"] = torch.tensor([0.5, 3.0, 40.0, 1.0, 7.0, 0.25])
    h = torch.randn(5, dim_in)  # 5 unique nodes
    index = torch.tensor([0, 1, 2, 3, 4, 1, 2, 0, 4, 3])
    ef = torch.randn(ne, dim_edge) if dim_edge else None
    with torch.no_grad():
        got = layer(block, h, index, ef)
        ref = brute_attention(layer, block, h, index, ef)
    assert got.shape == (num_dst, D)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    # gradients (to h through the index, to every parameter incl. the time encoding's ω and φ) equal
    # autograd's through the brute-force definition
    params = [h.clone().requires_grad_(True)] + list(layer.parameters())
    weights = torch.randn(num_dst, D)
    got_g = torch.autograd.grad((layer(block, params[0], index, ef) * weights).sum(), params)
    ref_g = torch.autograd.grad((brute_attention(layer, block, params[0], index, ef) * weights).sum(), params)
    for g_got, g_ref in zip(got_g, ref_g):
        torch.testing.assert_close(g_got, g_ref, rtol=1e-4, atol=1e-5)
    assert got_g[0].abs().sum() > 0 and got_g[-1].abs().sum() > 0


def test_attention_layer_rejects_edges_not_grouped_by_destination():
    layer = TemporalAttentionLayer(3, 0, 4, 6, 2, dropout=0.0, attn_dropout=0.0)
    block = dgl.create_block((torch.tensor([2, 3]), torch.tensor([1, 0])), num_src_nodes=4, num_dst_nodes=2)
    block.edata["dt"] = torch.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match="grouped by destination"):
        layer(block, torch.randn(4, 3), torch.arange(4), None)


def test_time_encode_backward_matches_autograd():
    enc = TimeEncode(5).double()
    with torch.no_grad():
        enc.w.bias.normal_()
    dt = torch.tensor([0.0, 0.5, 3.0, 17.0], dtype=torch.float64)
    torch.autograd.gradcheck(lambda w, b: _CosEncode.apply(dt, w, b), (enc.w.weight.reshape(-1), enc.w.bias))


def test_grid_time_terms_backward_matches_autograd():
    """The fused time-term functions against gradcheck (double precision, random grid, both used at once
    the way the attention layer does: the aggregate's weights depend on the scores)."""
    torch.manual_seed(0)
    V, W, T, H = 3, 4, 5, 2
    dt = torch.rand(V, W, dtype=torch.float64) * 10
    omega = torch.rand(T, dtype=torch.float64, requires_grad=True)
    phase = torch.randn(T, dtype=torch.float64, requires_grad=True)
    qk = torch.randn(V, T, H, dtype=torch.float64, requires_grad=True)

    def f(omega, phase, qk):
        grid = {}
        s = _GridTimeScores.apply(dt, omega, phase, qk, grid)
        att = torch.softmax(s, dim=1)
        return _GridTimeAggregate.apply(att, omega, phase, grid), s

    torch.autograd.gradcheck(f, (omega, phase, qk))
