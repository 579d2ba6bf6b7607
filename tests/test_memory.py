"""The node-memory store, the U stage's semantics through the real stage functions, and staleness
mitigation, each against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mspipe_bench.data.graph import TemporalGraph
from mspipe_bench.models.config import load_config
from mspipe_bench.models.memory import MemoryStore, last_occurrence
from mspipe_bench.models.mitigation import MitigationConfig, mitigate
from mspipe_bench.stages import make_context, run_stage


F64 = torch.float64


def ts(*v) -> torch.Tensor:
    return torch.tensor(v, dtype=F64)


def store_state(st: MemoryStore) -> dict:
    return {k: getattr(st, k).clone() for k in ("mem", "mem_ts", "mail", "mail_ts", "mail_mask", "touched", "mail_next")}


# ---------------------------------------------------------------------------------------------- MemoryStore
def test_fetch_update_round_trip():
    st = MemoryStore(6, 3, 2)
    ids = torch.tensor([4, 1])
    mem, mail = torch.randn(2, 3), torch.randn(2, 2)
    st.update(ids, mem, ts(5, 6), ids, mail, ts(7, 8))
    rows = st.fetch(torch.tensor([1, 0, 4]))
    assert torch.equal(rows.ids, torch.tensor([1, 0, 4]))
    assert torch.equal(rows.mem, torch.stack([mem[1], torch.zeros(3), mem[0]]))
    assert rows.mem_ts.tolist() == [6.0, 0.0, 5.0] and rows.mem_ts.dtype == F64
    assert torch.equal(rows.mail[:, 0], torch.stack([mail[1], torch.zeros(2), mail[0]]))
    assert rows.mail_ts[:, 0].tolist() == [8.0, 0.0, 7.0]
    assert rows.mail_mask[:, 0].tolist() == [True, False, True]
    assert rows.touched.tolist() == [True, False, True]
    assert rows.version == 1
    # a fetch is a copy: editing it does not write the store
    rows.mem.add_(100.0)
    assert torch.equal(st.fetch(torch.tensor([4])).mem[0], mem[0])


def test_latest_wins_is_deterministic():
    gen = torch.Generator().manual_seed(0)
    n, rows_n = 10, 500
    ids = torch.randint(0, n, (rows_n,), generator=gen)
    mem = torch.randn(rows_n, 4, generator=gen)
    mem_ts = torch.arange(rows_n, dtype=F64)
    mail_ids = torch.randint(0, n, (rows_n,), generator=gen)
    mail = torch.randn(rows_n, 3, generator=gen)
    expect_mem, expect_mail = {}, {}
    for r in range(rows_n):  # brute force: the last row of each id
        expect_mem[int(ids[r])] = r
        expect_mail[int(mail_ids[r])] = r
    for _ in range(3):
        st = MemoryStore(n, 4, 3)
        st.update(ids, mem, mem_ts, mail_ids, mail, mem_ts)
        for v in range(n):
            if v in expect_mem:
                assert torch.equal(st.mem[v], mem[expect_mem[v]]) and st.mem_ts[v] == expect_mem[v]
            else:
                assert not st.touched[v] and torch.equal(st.mem[v], torch.zeros(4))
            if v in expect_mail:
                assert torch.equal(st.mail[v, 0], mail[expect_mail[v]]) and st.mail_ts[v, 0] == expect_mail[v]
    uniq, last = last_occurrence(torch.tensor([3, 5, 3, 1, 5]))
    assert uniq.tolist() == [1, 3, 5] and last.tolist() == [3, 2, 4]


def test_mailbox_ring_keeps_the_newest_m_mails_and_mask():
    st = MemoryStore(4, 2, 2, mailbox_size=3)
    empty_mem = torch.zeros(0, 2)
    none = torch.zeros(0, dtype=torch.int64)
    for i in range(5):
        st.update(none, empty_mem, ts(), torch.tensor([2]), torch.full((1, 2), float(i + 1)), ts(10.0 * (i + 1)))
        k = min(i + 1, 3)
        held = sorted(st.mail[2, st.mail_mask[2], 0].tolist())
        assert held == [float(j + 1) for j in range(i + 1 - k, i + 1)]  # the newest k mails, nothing else
        assert st.mail_mask[2].sum().item() == k
        # each slot's time belongs to its mail
        assert torch.equal(st.mail_ts[2][st.mail_mask[2]], 10.0 * st.mail[2, st.mail_mask[2], 0].double())
    assert not st.mail_mask[[0, 1, 3]].any()
    assert not st.touched.any()  # mails only: no memory was written
    # several mails for one node in one update: only the latest (last row) is delivered, overwriting the oldest
    st.update(none, empty_mem, ts(), torch.tensor([2, 2]), torch.tensor([[7.0, 7.0], [8.0, 8.0]]), ts(50, 60))
    assert sorted(st.mail[2, :, 0].tolist()) == [4.0, 5.0, 8.0]
    assert sorted(st.mail_ts[2].tolist()) == [40.0, 50.0, 60.0]


def test_snapshot_restore_reset_and_versions():
    st = MemoryStore(5, 3, 2, mailbox_size=2)
    assert st.version == 0
    st.update(torch.tensor([0, 1]), torch.randn(2, 3), ts(1, 1), torch.tensor([0, 1]), torch.randn(2, 2), ts(1, 1))
    assert st.version == 1 and st.recent_ids.tolist() == [0, 1]
    snap = st.snapshot()
    before = store_state(st)
    st.update(torch.tensor([2]), torch.randn(1, 3), ts(2), torch.tensor([0]), torch.randn(1, 2), ts(2))
    assert st.version == 2 and st.fetch(torch.tensor([0])).version == 2
    assert st.recent_ids.tolist() == [2]
    assert not torch.equal(st.mail, before["mail"])
    assert torch.equal(snap["mail"], before["mail"])  # the snapshot is a copy, not a view
    st.restore(snap)
    after = store_state(st)
    for k in before:
        assert torch.equal(after[k], before[k]), k
    assert st.version == 1 and st.recent_ids.tolist() == [0, 1]
    st.update(torch.tensor([3]), torch.randn(1, 3), ts(3), torch.tensor([3]), torch.randn(1, 2), ts(3), version=7)
    assert st.version == 7
    st.reset()
    assert st.version == 0 and len(st.recent_ids) == 0
    for k, v in store_state(st).items():
        assert not v.any(), k


def test_out_of_range_ids_raise_index_error_naming_the_id():
    st = MemoryStore(5, 3, 2)
    with pytest.raises(IndexError, match=r"node id 5\b"):
        st.fetch(torch.tensor([0, 5]))
    with pytest.raises(IndexError, match=r"node id -2\b"):
        st.fetch(torch.tensor([-2]))
    before = store_state(st)
    with pytest.raises(IndexError, match=r"node id 9\b"):
        st.update(torch.tensor([1, 9]), torch.ones(2, 3), ts(1, 1), torch.tensor([1]), torch.ones(1, 2), ts(1))
    with pytest.raises(IndexError, match=r"node id 12\b"):
        st.update(torch.tensor([1]), torch.ones(1, 3), ts(1), torch.tensor([12]), torch.ones(1, 2), ts(1))
    for k, v in store_state(st).items():  # nothing half-applied
        assert torch.equal(v, before[k]), k
    assert st.version == 0


# ---------------------------------------------------------------------------------------------- U stage
# a hand-made stream over nodes 0..9 (nodes 10..15 never occur, so negatives often fall outside the batch)
EVENTS = [
    (0, 1, 1.0), (2, 3, 1.0), (0, 2, 2.0), (4, 5, 3.0), (1, 3, 3.0), (6, 7, 4.0),
    (0, 1, 5.0), (2, 1, 5.0), (3, 4, 6.0), (0, 3, 7.0), (5, 6, 7.0), (1, 0, 8.0),
    (7, 8, 9.0), (9, 0, 9.0), (2, 5, 10.0), (3, 9, 11.0), (8, 4, 11.0), (0, 1, 12.0),
]
BATCH = 6


def tiny_graph(edge_dim: int = 4) -> TemporalGraph:
    src, dst, t = (np.array(c) for c in zip(*EVENTS))
    ef = np.random.default_rng(0).normal(size=(len(EVENTS), edge_dim)).astype(np.float32) if edge_dim else None
    return TemporalGraph(src=src, dst=dst, t=t, num_nodes=16, edge_feat=ef)


def tiny_cfg(preset: str):
    over = [f"train.batch_size={BATCH}", "memory.dim=8", "memory.time_dim=4", "gnn.time_dim=4", "gnn.dim_out=8"]
    if preset != "jodie":
        over.append("sampling.fanouts=[3]")
    return load_config(preset, over)


def run_until_update(preset: str, seed: int = 0):
    """Run batch 0 fully, then S F M T of batch 1; return (ctx, batch 1, T's output, fetched rows)."""
    g = tiny_graph()
    ctx = make_context(g, tiny_cfg(preset), seed=seed)
    b0, b1 = ctx.batches("train", 0, 2 * BATCH)
    for st in "SFMTU":
        run_stage(ctx, st, b0)
    for st in "SFM":
        run_stage(ctx, st, b1)
    rows = b1.rows
    run_stage(ctx, "T", b1)
    return ctx, b1, b1.out, rows


def last_mail_brute(b, out, ctx, neighbours: bool) -> dict[int, tuple[torch.Tensor, float]]:
    """For each node, the mail it ends the batch with: events in order; per event first (APAN) the copies
    of the endpoints' mails to the sampled neighbours of the source root and of the destination root, then
    the source's own mail ``[s_u', s_v', e]`` and the destination's ``[s_v', s_u', e]``; the last one wins
    (so an endpoint's own mail beats a copy from the same event)."""
    n = b.size
    uniq = b.sampled.unique_nid.tolist()
    upd = {v: out.updated[r] for r, v in enumerate(uniq)}
    ef = ctx.edge_feat[b.lo:b.hi]
    nbrs = {q: [] for q in range(2 * n)}
    if neighbours:
        hop1 = b.sampled.blocks[-1]
        e_src, e_dst = hop1.edges()
        for u, q in zip(e_src.tolist(), e_dst.tolist()):
            if q < 2 * n:
                nbrs[q].append(int(hop1.srcdata["nid"][u]))
    final = {}
    for i in range(n):
        u, v, t = int(b.src[i]), int(b.dst[i]), float(b.t[i])
        mail_u = torch.cat([upd[u], upd[v], ef[i]])
        mail_v = torch.cat([upd[v], upd[u], ef[i]])
        for w in nbrs[i]:
            final[w] = (mail_u, t)
        for w in nbrs[n + i]:
            final[w] = (mail_v, t)
        final[u] = (mail_u, t)
        final[v] = (mail_v, t)
    return final


@pytest.mark.parametrize("preset", ["tgn", "jodie", "apan"])
def test_update_stage_semantics(preset):
    ctx, b, out, rows = run_until_update(preset)
    st = ctx.store
    before = store_state(st)
    version = st.version
    run_stage(ctx, "U", b)
    after = store_state(st)
    assert st.version == version + 1

    positives = set(b.src.tolist()) | set(b.dst.tolist())
    negatives_only = set(b.neg.tolist()) - positives
    assert negatives_only, "the test needs negatives outside the positive endpoints"
    uniq = b.sampled.unique_nid.tolist()
    row = {v: r for r, v in enumerate(uniq)}
    # the batch's updated memory really differs from the fetched one (so the checks below mean something)
    assert not torch.equal(out.updated, rows.mem)

    # memory: exactly the positive endpoints are written, with T's updated memory (detached) and its time
    assert not st.mem.requires_grad and st.mem.grad_fn is None
    for v in range(st.num_nodes):
        if v in positives:
            assert torch.equal(after["mem"][v], out.updated[row[v]])
            assert after["mem_ts"][v] == out.updated_ts[row[v]]
            assert after["touched"][v]
        else:
            assert torch.equal(after["mem"][v], before["mem"][v]), v
            assert after["mem_ts"][v] == before["mem_ts"][v] and after["touched"][v] == before["touched"][v]

    # mails: [s_u', s_v', e] stamped with the event time, latest wins; APAN also to sampled neighbours
    final = last_mail_brute(b, out, ctx, neighbours=ctx.cfg.memory.deliver_to == "neighbors")
    m = st.mailbox_size
    for v in range(st.num_nodes):
        if v in final:
            mail, t = final[v]
            slot = int(before["mail_next"][v]) if m > 1 else 0  # the ring's oldest slot is overwritten
            assert torch.equal(after["mail"][v, slot], mail), v
            assert after["mail_ts"][v, slot] == t and after["mail_mask"][v, slot]
            if m > 1:  # the other slots keep their mails; the ring pointer advances
                others = [j for j in range(m) if j != slot]
                assert torch.equal(after["mail"][v, others], before["mail"][v, others])
                assert torch.equal(after["mail_mask"][v, others], before["mail_mask"][v, others])
                assert int(after["mail_next"][v]) == (slot + 1) % m
        else:
            for k in ("mail", "mail_ts", "mail_mask"):
                assert torch.equal(after[k][v], before[k][v]), (k, v)
    if preset == "apan":
        assert set(final) - positives, "APAN must deliver mails beyond the positive endpoints"
    else:
        assert set(final) == positives
    for v in negatives_only - set(final):
        for k in after:
            assert torch.equal(after[k][v], before[k][v]), (k, v)


def test_mail_time_and_updated_ts_semantics_tgn():
    """After batch 0, a node's memory time is the time of the mail its updater consumed (0 for a first
    appearance), and its mail carries the time of its latest event in the batch."""
    ctx, b, out, rows = run_until_update("tgn")
    st = ctx.store
    for r, v in enumerate(b.sampled.unique_nid.tolist()):
        if rows.mail_mask[r, 0]:
            assert out.updated_ts[r] == rows.mail_ts[r, 0]
        else:
            assert out.updated_ts[r] == rows.mem_ts[r]
            assert torch.equal(out.updated[r], rows.mem[r])  # no mail: memory unchanged
    run_stage(ctx, "U", b)
    for v in set(b.src.tolist()) | set(b.dst.tolist()):
        last = max(i for i in range(b.size) if v in (b.src[i], b.dst[i]))
        assert st.mail_ts[v, 0] == b.t[last]


# ---------------------------------------------------------------------------------------------- mitigation
def brute_mitigate(ids, mem, mem_ts, touched, store_mem, recent, now, quantile, n, lam):
    ids, recent = ids.tolist(), recent.tolist()
    out = mem.clone()
    cand = [r for r in range(len(ids)) if touched[r]]
    count = min(max(1, int(round(quantile * len(ids)))), len(cand))
    stale = sorted(cand, key=lambda r: -(now - float(mem_ts[r])))[:count]
    done = 0
    for r in stale:
        s = mem[r]
        sims = []
        for u in recent:
            if u == ids[r]:
                continue  # never its own neighbour
            x = store_mem[u]
            sims.append((float(torch.dot(s, x) / (s.norm() * x.norm())), u))
        sims.sort(reverse=True)
        top = [u for _, u in sims[:n]]
        if top:
            out[r] = (1 - lam) * s + lam * torch.stack([store_mem[u] for u in top]).mean(0)
            done += 1
    return out, done


def hand_store(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    n, d = 30, 5
    st = MemoryStore(n, d, 2)
    # nodes 0..19 written at distinct old times, then nodes 10..24 written at t=100 (the recent pool);
    # nodes 25..29 never written
    old = torch.arange(20)
    st.update(old, torch.randn(20, d, generator=gen), torch.arange(1, 21, dtype=F64), old, torch.zeros(20, 2),
              torch.zeros(20, dtype=F64))
    rec = torch.arange(10, 25)
    st.update(rec, torch.randn(15, d, generator=gen), torch.full((15,), 100.0, dtype=F64), rec,
              torch.zeros(15, 2), torch.zeros(15, dtype=F64))
    return st


@pytest.mark.parametrize("quantile, n, lam", [(0.25, 3, 0.1), (0.5, 4, 0.3), (1.0, 20, 0.5)])
def test_mitigation_matches_brute_force(quantile, n, lam):
    st = hand_store()
    ids = torch.tensor([0, 3, 12, 27, 5, 18, 29, 7, 22, 1, 15, 9])
    rows = st.fetch(ids)
    ref, done = brute_mitigate(ids, rows.mem, rows.mem_ts, rows.touched, st.mem, st.recent_ids, 200.0,
                               quantile, n, lam)
    orig = rows.mem.clone()
    got = mitigate(rows, st, 200.0, MitigationConfig(quantile=quantile, neighbors=n, lam=lam))
    assert got == done > 0
    assert torch.allclose(rows.mem, ref, atol=1e-6, rtol=0)
    # the stalest node (id 0, written at t=1) moved toward its neighbours; never-written nodes did not move
    assert not torch.equal(rows.mem[0], orig[0])
    for r, v in enumerate(ids.tolist()):
        if v >= 25:
            assert torch.equal(rows.mem[r], orig[r]) and not rows.mem[r].any()
    assert torch.equal(st.mem, hand_store().mem)  # the store itself is never written


def test_mitigation_excludes_the_node_itself_when_few_recent_nodes():
    # the stale node is itself in the (small) recent pool: its neighbours are the *other* recent nodes
    st = MemoryStore(6, 3, 2)
    gen = torch.Generator().manual_seed(1)
    st.update(torch.arange(5), torch.randn(5, 3, generator=gen), ts(1, 1, 1, 1, 1), torch.arange(5),
              torch.zeros(5, 2), ts(1, 1, 1, 1, 1))
    st.update(torch.tensor([0, 1, 2]), torch.randn(3, 3, generator=gen), ts(5, 5, 5), torch.tensor([0, 1, 2]),
              torch.zeros(3, 2), ts(5, 5, 5))
    rows = st.fetch(torch.tensor([0, 3, 5]))
    ref, done = brute_mitigate(rows.ids, rows.mem, rows.mem_ts, rows.touched, st.mem, st.recent_ids, 10.0,
                               1.0, 10, 0.5)
    got = mitigate(rows, st, 10.0, MitigationConfig(quantile=1.0, neighbors=10, lam=0.5))
    assert got == done == 2
    assert torch.allclose(rows.mem, ref, atol=1e-6, rtol=0)
    # the only recent node is the node itself: nothing to blend with
    st2 = MemoryStore(3, 3, 2)
    st2.update(torch.tensor([1]), torch.ones(1, 3), ts(4), torch.tensor([1]), torch.zeros(1, 2), ts(4))
    rows2 = st2.fetch(torch.tensor([1]))
    assert mitigate(rows2, st2, 10.0, MitigationConfig(quantile=1.0)) == 0
    assert torch.equal(rows2.mem, torch.ones(1, 3))


def test_mitigation_untouched_and_empty_cases():
    st = MemoryStore(4, 3, 2)
    rows = st.fetch(torch.tensor([0, 1]))
    assert mitigate(rows, st, 5.0, MitigationConfig()) == 0  # nothing ever written
    st.update(torch.tensor([2]), torch.ones(1, 3), ts(1), torch.tensor([2]), torch.zeros(1, 2), ts(1))
    rows = st.fetch(torch.tensor([0, 1]))
    assert mitigate(rows, st, 5.0, MitigationConfig(quantile=1.0)) == 0  # fetched nodes never written
    assert not rows.mem.any()
    for bad in (dict(quantile=0.0), dict(quantile=1.5), dict(neighbors=0), dict(lam=-0.1), dict(lam=2.0)):
        with pytest.raises(ValueError, match="mitigation"):
            MitigationConfig(**bad)
