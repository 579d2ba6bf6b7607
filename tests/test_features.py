"""Random edge/node features (``--edge-features random:D``), memory-mapped feature tables and F gathering
from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mspipe_bench.data import features
from mspipe_bench.data.synthetic import generate
from mspipe_bench.errors import UserError


@pytest.fixture(autouse=True)
def data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MSPIPE_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("text, want", [(None, None), ("none", ("none", 0, 0)), ("random:172", ("random", 172, 0)),
                                        ("random:8:3", ("random", 8, 3))])
def test_parse_spec(text, want):
    assert features.parse_spec(text) == want


@pytest.mark.parametrize("text", ["random", "random:0", "random:-1", "random:x", "rand:4", "random:4:", "file"])
def test_parse_spec_rejects(text):
    with pytest.raises(UserError, match="--node-features"):
        features.parse_spec(text, "--node-features")


def test_random_table_seeded_and_mapped_when_large(data_home, monkeypatch):
    rows = features.BLOCK_ROWS + 77  # two generator blocks
    small = features.random_table("edge", rows, 5, seed=1, mmap_min_bytes=1 << 40)
    assert not features.is_mapped(small)
    mapped = features.random_table("edge", rows, 5, seed=1, mmap_min_bytes=0)
    assert features.is_mapped(mapped) and mapped.dtype == np.float32 and mapped.shape == (rows, 5)
    np.testing.assert_array_equal(small, mapped)  # the same values in memory and on disk
    files = sorted(p.name for p in (data_home / "features").iterdir())
    assert files == [f"random-edge-{rows}x5-seed1.npy"]  # no temp file left behind
    # other seed / kind: other values; the same spec again: the same values (from the cached file)
    assert not np.array_equal(small, features.random_table("edge", rows, 5, seed=2, mmap_min_bytes=1 << 40))
    assert not np.array_equal(small, features.random_table("node", rows, 5, seed=1, mmap_min_bytes=1 << 40))
    np.testing.assert_array_equal(features.random_table("edge", rows, 5, seed=1, mmap_min_bytes=0), small)
    # a prefix of the rows does not depend on the table's length (fixed blocks)
    np.testing.assert_array_equal(features.random_table("edge", 10, 5, seed=1)[:10], small[:10])


def test_interrupted_write_leaves_no_table(data_home, monkeypatch):
    calls = {"n": 0}
    real = features.random_block

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(features, "random_block", failing)
    with pytest.raises(KeyboardInterrupt):
        features.random_table("edge", features.BLOCK_ROWS + 1, 3, mmap_min_bytes=0)
    assert list((data_home / "features").iterdir()) == []


def test_apply_replaces_and_drops():
    g = generate(nodes=50, events=400, edge_dim=3)
    assert g.edge_feat_dim == 3
    features.apply(g, "random:7", "random:4")
    assert (g.edge_feat_dim, g.node_feat_dim) == (7, 4)
    assert g.node_feat.shape == (50, 4)
    features.apply(g, "none", None)
    assert g.edge_feat is None and g.node_feat_dim == 4


def test_f_gathers_rows_from_the_map(monkeypatch):
    """F's edge features of every block edge and of the batch's events are the table's rows, read from the
    memory map (no copy of the table in the context)."""
    from mspipe_bench.models.config import load_config
    from mspipe_bench.stages import make_context
    from mspipe_bench.stages.stages import run_stage

    monkeypatch.setattr(features, "MMAP_MIN_BYTES", 0)
    g = generate(nodes=60, events=900)
    features.apply(g, "random:6", "random:5")
    assert features.is_mapped(g.edge_feat) and features.is_mapped(g.node_feat)
    ctx = make_context(g, load_config("tgn", ["train.batch_size=100"]), seed=0)
    assert ctx.edge_feat.data_ptr() == g.edge_feat.ctypes.data  # the tensor wraps the map
    b = ctx.batches("train", 0, 600)[3]
    for stage in "SF":
        run_stage(ctx, stage, b)
    table = np.asarray(g.edge_feat)
    assert len(b.edge_feats) == len(b.sampled.blocks) and len(b.edge_feats) > 0
    for blk, ef in zip(b.sampled.blocks, b.edge_feats):
        np.testing.assert_array_equal(ef.numpy(), table[blk.edata["eid"].numpy()])
    np.testing.assert_array_equal(b.event_feat.numpy(), table[b.lo:b.hi])
    np.testing.assert_array_equal(b.node_feat.numpy(), np.asarray(g.node_feat)[b.sampled.unique_nid.numpy()])
    for stage in "MTU":  # the model takes the feature dims
        run_stage(ctx, stage, b)
    assert np.isfinite(b.loss)


def test_run_with_172_dim_edge_features():
    """The paper's setting runs end to end; the features change the model's inputs (and the result)."""
    from mspipe_bench.harness.run import RunSpec, run_context

    base = dict(model="apan", dataset="synthetic:nodes=80,events=1500", epochs=1, max_iterations=2,
                batch_size=200)
    ctx, res = run_context(RunSpec(**base, edge_features="random:172"))
    assert res["dataset"]["edge_feat_dim"] == 172 and res["status"] == "complete"
    assert res["config"]["edge_features"] == "random:172"
    assert ctx.model.edge_dim == 172
    plain = RunSpec(**base)
    assert RunSpec(**base, edge_features="random:172").key() != plain.key()
    assert "_efrandom172_" in RunSpec(**base, edge_features="random:172").label()


def test_keys_of_runs_without_features_unchanged():
    """Keys of earlier runs (baselines, run directories) do not move: values computed before the feature
    options existed."""
    from mspipe_bench.harness.run import RunSpec

    assert RunSpec().key() == "14053fabf761"
    assert RunSpec(model="apan", trainer="mspipe", dataset="x/y").key() == "7a3c9c23a1f6"


def test_cli_rejects_bad_feature_spec(capsys):
    from mspipe_bench.cli import main

    assert main(["run", "--edge-features", "random:0", "--quiet"]) == 2
    assert "--edge-features" in capsys.readouterr().err


def test_torch_wraps_mapped_table_without_copy(monkeypatch):
    monkeypatch.setattr(features, "MMAP_MIN_BYTES", 0)
    table = features.random_table("edge", 1000, 4)
    t = torch.from_numpy(table)
    assert t.data_ptr() == table.ctypes.data
