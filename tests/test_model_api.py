"""The model API the stages call (``input_nodes``, ``has_memory``, ``make_mails``) against brute force, and
the memory-less TGAT preset: its M and U touch nothing, its scores equal a brute-force two-layer TGAT
embedding computed from the event list, and every trainer runs it (all bit-identical: without memory there is
nothing to be stale)."""

from __future__ import annotations

import dgl
import numpy as np
import pytest
import torch

from mspipe_bench.errors import UserError
from mspipe_bench.models.config import from_dict, load_config
from mspipe_bench.models.mitigation import MitigationConfig
from mspipe_bench.stages import make_context, run_stage
from mspipe_bench.trainers.rules import make_schedule
from mspipe_bench.trainers.train import train

# the brute-force references and helpers of the other test files (pytest puts tests/ on sys.path)
from test_memory import last_mail_brute, run_until_update
from test_memory import tiny_graph as hand_graph
from test_models import brute_attention, cfg_for
from test_models import tiny_graph as random_tiny_graph
from test_sampler import brute_recent
from test_trainers import GRAPH, assert_identical, no_workers_alive, run_iterations


def tgat_cfg(batch_size: int = 12):
    """TGAT with small dimensions and deterministic (recent) neighbours, so brute force can pick them too."""
    return cfg_for("tgat", batch_size, ["sampling.fanouts=[3,2]", "sampling.strategy=recent"])


# ---------------------------------------------------------------------------------------------- input_nodes
def brute_inputs(g, roots, times, fanouts) -> set[int]:
    """Every node reached from the roots through ``fanouts`` hops of most-recent earlier events."""
    nodes, frontier = set(roots.tolist()), list(zip(roots.tolist(), times.tolist()))
    for fanout in fanouts:
        nxt = []
        for v, t in frontier:
            for _, u, te in brute_recent(g, v, t, fanout):
                nodes.add(u)
                nxt.append((u, te))
        frontier = nxt
    return nodes


@pytest.mark.parametrize("preset, expect", [("tgn", "all"), ("jodie", "roots"), ("apan", "roots"), ("tgat", "all")])
def test_input_nodes_are_the_nodes_s_collects_and_m_fetches(preset, expect):
    g = hand_graph()
    cfg = tgat_cfg(batch_size=6) if preset == "tgat" else cfg_for(
        preset, 6, [] if preset == "jodie" else ["sampling.fanouts=[3]"])
    ctx = make_context(g, cfg, seed=0)
    assert ctx.model.input_nodes == expect
    for b in ctx.batches("train", 0, g.num_events):
        for st in "SFM":
            run_stage(ctx, st, b)
        roots = np.concatenate([b.src, b.dst, b.neg])
        times = np.concatenate([b.t, b.t, b.t])
        want = brute_inputs(g, roots, times, cfg.sampling.fanouts) if expect == "all" else set(roots.tolist())
        assert b.sampled.unique_nid.tolist() == sorted(want), (preset, b.i)
        if ctx.model.has_memory:
            assert torch.equal(b.rows.ids, b.sampled.unique_nid)
        else:
            assert b.rows is None
        for st in "TU":
            run_stage(ctx, st, b)
    if preset != "jodie":  # the samples did reach beyond the roots (so "all" and "roots" differ here)
        assert len(brute_inputs(g, roots, times, cfg.sampling.fanouts)) > len(set(roots.tolist()))


# ---------------------------------------------------------------------------------------------- make_mails
@pytest.mark.parametrize("preset", ["tgn", "jodie", "apan"])
def test_make_mails_against_brute_force(preset):
    ctx, b, out, _ = run_until_update(preset)
    write = ctx.model.make_mails(b, out)
    n = b.size
    row = {v: r for r, v in enumerate(b.sampled.unique_nid.tolist())}
    # memory: every positive endpoint in event order (src_0, dst_0, src_1, ...) with its updated memory
    assert write.mem_ids.tolist() == [v for i in range(n) for v in (int(b.src[i]), int(b.dst[i]))]
    for j, v in enumerate(write.mem_ids.tolist()):
        assert torch.equal(write.mem[j], out.updated[row[v]]) and write.mem_ts[j] == out.updated_ts[row[v]]
    # mails: one per receiving node, the one brute force says it ends the batch with
    final = last_mail_brute(b, out, ctx, neighbours=preset == "apan")
    assert write.mail_ids.tolist() == sorted(final)
    for j, v in enumerate(write.mail_ids.tolist()):
        mail, t = final[v]
        assert torch.equal(write.mail[j], mail) and write.mail_ts[j] == t, v
    positives = set(b.src.tolist()) | set(b.dst.tolist())
    if preset == "apan":  # APAN also mails the sampled neighbours; the others only the endpoints
        assert set(final) > positives
    else:
        assert set(final) == positives


# ---------------------------------------------------------------------------------------------- TGAT
class NoStore:
    """Stands in for the memory store of a memory-less model: any use is an error."""

    def __getattr__(self, name):
        raise AssertionError(f"the store was used: .{name}")


@pytest.mark.parametrize("edge_dim, node_dim", [(4, 3), (0, 0)])
def test_tgat_m_and_u_touch_nothing(edge_dim, node_dim):
    g = random_tiny_graph(edge_dim=edge_dim, node_dim=node_dim)
    ctx = make_context(g, tgat_cfg(), seed=0, mitigation=MitigationConfig(enabled=True, quantile=1.0))
    assert not ctx.model.has_memory and ctx.model.updater is None and ctx.model.node_proj is None
    assert ctx.store.num_nodes == 0 and ctx.store.mem.numel() == 0  # no rows at all
    ctx.store = NoStore()
    for b in ctx.batches("train", 0, g.num_events):
        for st in "SFMTU":
            run_stage(ctx, st, b)
        assert b.rows is None and b.observed_staleness == 0 and b.mitigated == 0
        assert np.isfinite(b.loss) and b.out.updated is None
    # the first layer's node input is the node features, or nothing (width 0) without them
    assert ctx.model.layers[0].w_q_h.in_features == node_dim


def brute_embedding(model, g, v: int, t: float, depth: int) -> torch.Tensor:
    """TGAT's embedding of node ``v`` at time ``t`` after ``depth`` layers, from the event list: the node's
    most recent earlier events (the fanout of the hop) are its neighbours, each seen as of its event time;
    each layer is the brute-force attention of one destination over them."""
    if depth == 0:
        return torch.from_numpy(g.node_feat[v]) if g.node_feat is not None else torch.zeros(0)
    layers, fanouts = model.layers, model.cfg.sampling.fanouts
    nbrs = brute_recent(g, v, t, fanouts[len(layers) - depth])
    h = torch.stack([brute_embedding(model, g, v, t, depth - 1)]
                    + [brute_embedding(model, g, u, te, depth - 1) for _, u, te in nbrs])
    k = len(nbrs)
    block = dgl.create_block((torch.arange(1, k + 1), torch.zeros(k, dtype=torch.int64)), num_src_nodes=k + 1,
                             num_dst_nodes=1)
    block.edata["dt"] = torch.tensor([t - te for _, _, te in nbrs], dtype=torch.float32)
    ef = torch.from_numpy(g.edge_feat[[e for e, _, _ in nbrs]]) if g.edge_feat is not None else None
    return brute_attention(layers[depth - 1], block, h, torch.arange(k + 1), ef)[0]


@pytest.mark.parametrize("edge_dim, node_dim", [(4, 3), (0, 0)])
def test_tgat_scores_equal_brute_force_two_layer_embedding(edge_dim, node_dim):
    g = random_tiny_graph(seed=2, edge_dim=edge_dim, node_dim=node_dim)
    ctx = make_context(g, tgat_cfg(batch_size=15), seed=3)
    model = ctx.model
    with torch.no_grad():  # random everything, not only the default init (zero biases of a width-0 input)
        for name, p in model.named_parameters():
            if "time_enc" not in name:
                p.normal_(0.0, 0.5)
    (b,) = ctx.batches("val", 30, 45)
    for st in "SFMT":
        run_stage(ctx, st, b)
    assert not model.training
    with torch.no_grad():
        emb = {}
        for v, t in zip(np.concatenate([b.src, b.dst, b.neg]).tolist(), b.t.tolist() * 3):
            emb[v, t] = brute_embedding(model, g, v, t, depth=2)
        for i, (u, v, w, t) in enumerate(zip(b.src.tolist(), b.dst.tolist(), b.neg.tolist(), b.t.tolist())):
            pos = model.predictor(emb[u, t][None], emb[v, t][None])
            neg = model.predictor(emb[u, t][None], emb[w, t][None])
            torch.testing.assert_close(b.out.pos[i], pos[0], rtol=0, atol=1e-5)
            torch.testing.assert_close(b.out.neg[i], neg[0], rtol=0, atol=1e-5)
    assert b.out.pos.std() > 1e-3 and b.sampled.blocks[0].num_edges() > 0  # scores and hop 2 are not trivial


def test_tgat_runs_under_every_trainer_bit_identical():
    """Without memory the staleness bound changes nothing: every trainer (K=2 and mspipe too, mitigation on)
    trains the same parameters as sequential, and records observed staleness 0 and no mitigation."""
    iters = 8
    ref, rec = run_iterations("tgat", "sequential", iters=iters)
    for trainer, k in [("presample", 1), ("fixed-staleness", 2), ("mspipe", 1)]:
        ctx, records = run_iterations("tgat", trainer, staleness=k, iters=iters, mitigation=trainer == "mspipe")
        assert_identical(ref, ctx)
        assert [r.loss for r in records] == [r.loss for r in rec], trainer
        assert all(r.observed_staleness == 0 and r.mitigated_nodes == 0 for r in records), trainer
        assert no_workers_alive()


def test_tgat_train_and_evaluate_with_mspipe():
    ctx = make_context(GRAPH, load_config("tgat", ["train.batch_size=300"]), seed=1,
                       mitigation=MitigationConfig(enabled=True))
    res = train(ctx, make_schedule("mspipe"), GRAPH.split(), epochs=1, max_iterations=4)
    m = res.metrics
    assert m["mean_observed_staleness"] == 0 and m["mitigated_nodes"] == 0
    assert 0.0 <= m["test_ap"] <= 1.0 and np.isfinite(res.epochs[0]["train_loss"])


# ---------------------------------------------------------------------------------------------- config
def test_tgat_preset_is_tgls():
    c = load_config("tgat")
    assert c.memory is None
    assert (c.sampling.fanouts, c.sampling.strategy) == ([10, 10], "uniform")
    assert (c.gnn.arch, c.gnn.layers, c.gnn.heads, c.gnn.time_dim, c.gnn.dim_out) == ("attention", 2, 2, 100, 100)
    assert (c.gnn.dropout, c.gnn.attn_dropout) == (0.1, 0.1)
    assert (c.train.batch_size, c.train.lr, c.train.epochs) == (600, 1e-4, 10)
    assert from_dict(c.to_dict()) == c  # the result file's model_config loads back
    assert load_config("tgn", ["memory=none"]).memory is None


@pytest.mark.parametrize("overrides, needle", [
    (["memory=none", "gnn.arch=identity", "gnn.layers=0", "sampling.fanouts=[]"],
     "gnn.arch=identity needs a node memory"),
    (["memory=off"], "memory must be a section or 'none', got False"),
    (["memory=none", "memory.dim=8"], "override 'memory.dim=8': 'memory' is not a section"),
])
def test_memory_none_config_errors(overrides, needle):
    with pytest.raises(UserError) as exc:
        load_config("tgn", overrides)
    assert needle in str(exc.value) and "\n" not in str(exc.value)
