"""DGL blocks from temporal neighbour samples (the output of stage S).

For roots ``(nid, ts)`` and fanouts ``[f1, f2, ...]`` (hop 1 first), hop ``h`` has as destination nodes the
source nodes of hop ``h-1`` (the roots for hop 1) and as source nodes those destination nodes followed by
every sampled neighbour, each an *instance* with its own query time = the time of the event it was sampled
through (TGL's convention; a neighbour is only ever seen as of that event). ``blocks`` is ordered input layer
first, so ``blocks[-1].dstdata`` are the roots and ``blocks[0].srcdata`` covers every node instance.
Edge ``e`` of a block always runs from source instance ``num_dst + e`` to its query (the models rely on
this to add per-edge terms to per-instance features).

Without fanouts (JODIE) there are no blocks: the roots and their times
are all there is (an edgeless DGL block cost ~0.3 ms of Python per iteration in S, which a pipelined trainer's
sampler thread takes from the trainer's GIL time).

Block fields: ``srcdata['nid']`` / ``dstdata['nid']`` node ids (int64), ``srcdata['ts']`` / ``dstdata['ts']``
query times (float64), ``edata['eid']`` event ids (int64, rows of edge features), ``edata['dt']`` time gap
query time − event time (float32, always > 0: no leakage).
A node's inputs (memory, node features) are read once per unique node: ``unique_nid`` and ``inverse``
(``unique_nid[inverse] == blocks[0].srcdata['nid']``). With ``inputs_of="roots"`` (models whose embedding
never reads a neighbour's inputs: JODIE, APAN; the model's ``input_nodes``) they cover only the roots
(``unique_nid[inverse] == roots``); the blocks still carry the neighbours (APAN delivers mails to them).
"""

from __future__ import annotations

from dataclasses import dataclass

import dgl
import numpy as np
import torch

from mspipe_bench.sampling.sampler import TemporalSampler


@dataclass
class SampledBlocks:
    blocks: list  # list[dgl.DGLBlock], input layer first; empty without neighbour sampling
    unique_nid: torch.Tensor  # int64 [U]
    inverse: torch.Tensor  # int64 [num src nodes of blocks[0]] (the roots' count without blocks)
    num_roots: int
    root_ts: torch.Tensor  # float64 [num_roots] query times of the roots

    @property
    def num_sampled_edges(self) -> int:
        return int(sum(b.num_edges() for b in self.blocks))


def sample_blocks(
    sampler: TemporalSampler,
    root_nid: np.ndarray,
    root_ts: np.ndarray,
    fanouts: list[int],
    strategy: str = "recent",
    rng: np.random.Generator | None = None,
    inputs_of: str = "all",
) -> SampledBlocks:
    roots, roots_ts = np.asarray(root_nid, dtype=np.int64), np.asarray(root_ts, dtype=np.float64)
    dst_nid, dst_ts = roots, roots_ts
    blocks = []
    for fanout in fanouts:
        hop = sampler.sample(dst_nid, dst_ts, fanout, strategy, rng)
        num_dst = len(dst_nid)
        src_nid = np.concatenate([dst_nid, hop.nbr])
        src_ts = np.concatenate([dst_ts, hop.ts])
        e_src = torch.from_numpy(np.arange(num_dst, num_dst + hop.num_edges, dtype=np.int64))
        e_dst = torch.from_numpy(hop.query)
        block = dgl.create_block((e_src, e_dst), num_src_nodes=len(src_nid), num_dst_nodes=num_dst)
        block.srcdata["nid"] = torch.from_numpy(src_nid)
        block.srcdata["ts"] = torch.from_numpy(src_ts)
        block.dstdata["nid"] = torch.from_numpy(dst_nid)  # DGL keeps dst frames apart from src frames
        block.dstdata["ts"] = torch.from_numpy(dst_ts)
        block.edata["eid"] = torch.from_numpy(hop.eid)
        block.edata["dt"] = torch.from_numpy((dst_ts[hop.query] - hop.ts).astype(np.float32))
        blocks.append(block)
        dst_nid, dst_ts = src_nid, src_ts
    blocks.reverse()
    if inputs_of not in ("all", "roots"):
        raise ValueError(f"inputs_of must be 'all' or 'roots', got {inputs_of!r}")
    nodes = blocks[0].srcdata["nid"].numpy() if inputs_of == "all" and blocks else roots
    uniq, inv = unique_inverse(nodes, sampler.num_nodes)
    return SampledBlocks(
        blocks=blocks,
        unique_nid=torch.from_numpy(uniq),
        inverse=torch.from_numpy(inv),
        num_roots=len(roots),
        root_ts=torch.from_numpy(roots_ts),
    )


def unique_inverse(ids: np.ndarray, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(ids, return_inverse=True)`` in O(len(ids) + num_nodes) with a counting pass instead of a
    sort (ids are node ids below ``num_nodes``); on a graph with many more nodes than ``ids`` (a batch of a
    1 M-node graph) the sort, whose cost does not grow with the graph."""
    if num_nodes > 32 * len(ids):
        uniq, inv = np.unique(ids, return_inverse=True)
        return uniq.astype(np.int64, copy=False), inv.astype(np.int64, copy=False)
    present = np.bincount(ids, minlength=num_nodes) > 0
    uniq = np.flatnonzero(present).astype(np.int64)
    pos = np.empty(num_nodes, dtype=np.int64)
    pos[uniq] = np.arange(len(uniq), dtype=np.int64)
    return uniq, pos[ids]
