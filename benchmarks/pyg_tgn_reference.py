"""Reference throughput: PyTorch Geometric's TGN example (``examples/tgn.py``) on the shared Wikipedia set.

This is a reference copy of PyG's example, NOT part of the mspipe_bench suite. Use it only to compare
our TGN's train events/s with PyG's TGN, measured in the same session on the same machine.

Install PyG into the project venv (the optional extra ``reference``: torch_geometric 2.8.0.post1, which runs on
the pinned torch 2.2.1, and ``xxhash``, which it imports):

    .venv/bin/pip install -e '.[reference]'

Run from the repository root (needs ``../shared/datasets/wikipedia``); the comparison run of our TGN uses the
same negatives (``--negatives dst``):

    .venv/bin/python benchmarks/pyg_tgn_reference.py --epochs 3 --threads 1 --json results/reference/<machine>/reference/pyg_tgn_threads1.json
    .venv/bin/mspipe-bench run --model tgn --dataset ../shared/datasets/wikipedia --trainer sequential \
        --epochs 3 --negatives dst --threads 1 --out results/reference/<machine>/reference/ours_tgn_dst_threads1.json

What is kept from the example: TGNMemory with IdentityMessage and LastAggregator, memory_dim = time_dim =
embedding_dim = 100, LastNeighborLoader(size=10), GraphAttentionEmbedding = TransformerConv(heads=2,
dropout=0.1, edge_dim=msg_dim+time_dim), LinkPredictor, Adam(lr=1e-4), BCEWithLogitsLoss, 70/15/15
chronological split (``TemporalData.train_val_test_split``), one negative destination per event drawn
uniformly from ``[min_dst_idx, max_dst_idx]`` (the destination id range of the whole stream), and the test
loop averaging per-batch AP/AUC with ``torch.manual_seed(12345)`` before each evaluation pass.

Deviations from the example (see also ``--help``):
  * data: the project's loader reads ``events.npz`` (no edge features), so ``msg`` is zeros of dim 1 instead
    of JODIE's 172-dim features; destination ids are already offset past the source ids (pages 8227..9226),
    as PyG's JODIEDataset does;
  * batch size 600 (the example uses 200) to match the suite's setting; ``--batch-size`` changes it;
  * CPU only, ``torch.set_num_threads(--threads)``, ``torch.manual_seed(--seed)`` at start, ``--epochs``
    instead of 50; batches are sliced with ``TemporalData`` indexing and negatives drawn in the loop
    (the form of the example before TemporalDataLoader(neg_sampling_ratio=1.0); same computation);
  * timing: train events / wall seconds of the train loop only (evaluation excluded);
  * work counts: per training batch, the unique nodes embedded, the attention edges and the nodes whose
    memory is updated are recorded (``work_per_batch`` in the JSON; two ``.size()`` reads per batch).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

INSTALL_CMD = ".venv/bin/pip install -e '.[reference]'"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "datasets" / "wikipedia"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--batch-size", type=int, default=600, help="events per batch (default 600; PyG's example: 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="dataset folder (default ../shared/datasets/wikipedia)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    try:
        import torch_geometric
        from torch_geometric.data import TemporalData
        from torch_geometric.nn import TGNMemory, TransformerConv
        from torch_geometric.nn.models.tgn import IdentityMessage, LastAggregator, LastNeighborLoader
    except ImportError as exc:
        sys.exit(f"pyg_tgn_reference: torch_geometric is not importable ({exc}).\n"
                 f"Install it from the repository root with:\n  {INSTALL_CMD}")
    from sklearn.metrics import average_precision_score, roc_auc_score
    from torch.nn import Linear

    data_path = Path(args.data)
    if not data_path.exists():
        sys.exit(f"pyg_tgn_reference: shared dataset not found: {data_path} "
                 f"(expected ../shared/datasets/wikipedia next to the repository, see /work/shared/datasets/README.md)")
    sys.path.insert(0, str(REPO_ROOT))
    from mspipe_bench.data import load_dataset

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device("cpu")

    g = load_dataset(str(data_path))
    src = torch.from_numpy(g.src.astype("int64"))
    dst = torch.from_numpy(g.dst.astype("int64"))
    t = torch.from_numpy(g.t.astype("int64"))  # integer seconds; TGNMemory keeps last_update as long
    msg = torch.zeros(len(src), 1)  # this copy of Wikipedia has no edge features
    data = TemporalData(src=src, dst=dst, t=t, msg=msg).to(device)
    num_nodes = max(int(g.num_nodes), data.num_nodes)

    # Ensure to only sample actual destination nodes as negatives.
    min_dst_idx, max_dst_idx = int(data.dst.min()), int(data.dst.max())

    train_data, val_data, test_data = data.train_val_test_split(val_ratio=0.15, test_ratio=0.15)

    neighbor_loader = LastNeighborLoader(num_nodes, size=10, device=device)

    class GraphAttentionEmbedding(torch.nn.Module):
        def __init__(self, in_channels, out_channels, msg_dim, time_enc):
            super().__init__()
            self.time_enc = time_enc
            edge_dim = msg_dim + time_enc.out_channels
            self.conv = TransformerConv(in_channels, out_channels // 2, heads=2, dropout=0.1, edge_dim=edge_dim)

        def forward(self, x, last_update, edge_index, t, msg):
            rel_t = last_update[edge_index[0]] - t
            rel_t_enc = self.time_enc(rel_t.to(x.dtype))
            edge_attr = torch.cat([rel_t_enc, msg], dim=-1)
            return self.conv(x, edge_index, edge_attr)

    class LinkPredictor(torch.nn.Module):
        def __init__(self, in_channels):
            super().__init__()
            self.lin_src = Linear(in_channels, in_channels)
            self.lin_dst = Linear(in_channels, in_channels)
            self.lin_final = Linear(in_channels, 1)

        def forward(self, z_src, z_dst):
            h = self.lin_src(z_src) + self.lin_dst(z_dst)
            h = h.relu()
            return self.lin_final(h)

    memory_dim = time_dim = embedding_dim = 100
    msg_dim = data.msg.size(-1)

    memory = TGNMemory(
        num_nodes, msg_dim, memory_dim, time_dim,
        message_module=IdentityMessage(msg_dim, memory_dim, time_dim),
        aggregator_module=LastAggregator(),
    ).to(device)
    gnn = GraphAttentionEmbedding(in_channels=memory_dim, out_channels=embedding_dim, msg_dim=msg_dim,
                                  time_enc=memory.time_enc).to(device)
    link_pred = LinkPredictor(in_channels=embedding_dim).to(device)

    optimizer = torch.optim.Adam(set(memory.parameters()) | set(gnn.parameters()) | set(link_pred.parameters()),
                                 lr=0.0001)
    criterion = torch.nn.BCEWithLogitsLoss()

    # Helper vector to map global node indices to local ones.
    assoc = torch.empty(num_nodes, dtype=torch.long, device=device)

    def batches(split):
        for i in range(0, split.num_events, args.batch_size):
            yield split[i:i + args.batch_size]

    work = []  # per training batch: (embedded roots, attention edges, nodes with memory) -- not in the example

    def embed(batch, count=False):
        src, pos_dst = batch.src, batch.dst
        # Sample negative destination nodes.
        neg_dst = torch.randint(min_dst_idx, max_dst_idx + 1, (src.size(0),), dtype=torch.long, device=device)
        n_id = torch.cat([src, pos_dst, neg_dst]).unique()
        num_roots = n_id.size(0)
        n_id, edge_index, e_id = neighbor_loader(n_id)
        if count:
            work.append((num_roots, edge_index.size(1), n_id.size(0)))
        assoc[n_id] = torch.arange(n_id.size(0), device=device)
        # Get updated memory of all nodes involved in the computation.
        z, last_update = memory(n_id)
        z = gnn(z, last_update, edge_index, data.t[e_id], data.msg[e_id])
        pos_out = link_pred(z[assoc[src]], z[assoc[pos_dst]])
        neg_out = link_pred(z[assoc[src]], z[assoc[neg_dst]])
        return pos_out, neg_out

    def train():
        memory.train()
        gnn.train()
        link_pred.train()
        memory.reset_state()  # Start with a fresh memory.
        neighbor_loader.reset_state()  # Start with an empty graph.
        total_loss = 0.0
        for batch in batches(train_data):
            optimizer.zero_grad()
            pos_out, neg_out = embed(batch, count=True)
            loss = criterion(pos_out, torch.ones_like(pos_out))
            loss += criterion(neg_out, torch.zeros_like(neg_out))
            # Update memory and neighbor loader with ground-truth state.
            memory.update_state(batch.src, batch.dst, batch.t, batch.msg)
            neighbor_loader.insert(batch.src, batch.dst)
            loss.backward()
            optimizer.step()
            memory.detach()
            total_loss += float(loss) * batch.num_events
        return total_loss / train_data.num_events

    @torch.no_grad()
    def test(inference_data):
        memory.eval()
        gnn.eval()
        link_pred.eval()
        torch.manual_seed(12345)  # Ensure deterministic sampling across epochs.
        aps, aucs = [], []
        for batch in batches(inference_data):
            pos_out, neg_out = embed(batch)
            y_pred = torch.cat([pos_out, neg_out], dim=0).sigmoid().cpu()
            y_true = torch.cat([torch.ones(pos_out.size(0)), torch.zeros(neg_out.size(0))], dim=0)
            aps.append(average_precision_score(y_true, y_pred))
            aucs.append(roc_auc_score(y_true, y_pred))
            memory.update_state(batch.src, batch.dst, batch.t, batch.msg)
            neighbor_loader.insert(batch.src, batch.dst)
        return float(torch.tensor(aps).mean()), float(torch.tensor(aucs).mean())

    print(f"PyG TGN reference: torch {torch.__version__}, torch_geometric {torch_geometric.__version__}, "
          f"threads {args.threads}, batch {args.batch_size}; {data_path}: {data.num_events} events, "
          f"{num_nodes} nodes, train/val/test {train_data.num_events}/{val_data.num_events}/{test_data.num_events}, "
          f"negatives from [{min_dst_idx}, {max_dst_idx}]", flush=True)
    epochs = []
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        loss = train()
        train_s = time.perf_counter() - t0
        val_ap, val_auc = test(val_data)
        test_ap, test_auc = test(test_data)
        eps = train_data.num_events / train_s
        print(f"Epoch: {epoch:02d}, Loss: {loss:.4f}, train {train_s:.2f} s = {eps:,.0f} events/s", flush=True)
        print(f" Val AP: {val_ap:.4f},  Val AUC: {val_auc:.4f}")
        print(f"Test AP: {test_ap:.4f}, Test AUC: {test_auc:.4f}", flush=True)
        w = torch.tensor(work, dtype=torch.float64).mean(0).tolist()
        print(f"work per training batch: {w[0]:,.0f} embedded roots, {w[1]:,.0f} attention edges, "
              f"{w[2]:,.0f} nodes with memory", flush=True)
        epochs.append(dict(epoch=epoch, loss=loss, train_seconds=train_s, train_events_per_s=eps,
                           val_ap=val_ap, val_auc=val_auc, test_ap=test_ap, test_auc=test_auc))

    if args.json:
        out = dict(
            reference="PyG examples/tgn.py (copy in benchmarks/pyg_tgn_reference.py)",
            dataset=str(data_path), events=data.num_events, num_nodes=num_nodes,
            train_events=train_data.num_events, val_events=val_data.num_events, test_events=test_data.num_events,
            msg_dim=msg_dim, batch_size=args.batch_size, threads=args.threads, seed=args.seed,
            neg_dst_range=[min_dst_idx, max_dst_idx], device=str(device),
            torch=torch.__version__, torch_geometric=torch_geometric.__version__,
            python=platform.python_version(), epochs=epochs,
            # work per training batch (means over all epochs), comparable with the `work / iteration` of an
            # mspipe-bench result (roots, sampled edges, unique nodes): PyG embeds each unique node of the
            # batch once, the TGL semantics embed every event's src, dst and negative at the event's time
            work_per_batch=dict(zip(("roots", "attention_edges", "memory_nodes"),
                                    [float(x) for x in torch.tensor(work, dtype=torch.float64).mean(0)])),
        )
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
