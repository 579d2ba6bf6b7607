"""Loaders: round trips for every on-disk format, one test per kind of bad input, the real .npz sets and
the ``datasets info`` CLI."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from mspipe_bench.cli import main as cli_main
from mspipe_bench.data import DatasetError, TemporalGraph, generate, load_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"

# a tiny graph with known values (node ids not dense, timestamps with a tie)
SRC = np.array([0, 2, 1, 0, 5, 2])
DST = np.array([3, 4, 3, 4, 1, 0])
T = np.array([1.0, 2.0, 2.0, 3.5, 7.0, 9.0])
EFEAT = np.arange(12, dtype=np.float32).reshape(6, 2) / 4
NFEAT = np.arange(18, dtype=np.float32).reshape(6, 3) - 5
LABELS = np.array([0, 1, 0, 0, 1, 0])
EXT_ROLL = np.array([0, 0, 0, 0, 1, 2])


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def tgl_csv(src=SRC, dst=DST, t=T, ext_roll=EXT_ROLL, index=True) -> str:
    head = (",src,dst,time,int_roll,ext_roll" if index else "src,dst,time,int_roll,ext_roll") + "\n"
    rows = [
        (f"{i}," if index else "") + f"{s},{d},{tt},{r},{r}" for i, (s, d, tt, r) in enumerate(zip(src, dst, t, ext_roll))
    ]
    return head + "\n".join(rows) + "\n"


def jodie_csv(users, items, t, labels, feats, header="user_id,item_id,timestamp,state_label,comma_separated_list_of_features") -> str:
    rows = []
    for u, i, tt, lab, f in zip(users, items, t, labels, feats):
        rows.append(",".join([str(u), str(i), repr(float(tt)), str(lab)] + [repr(float(x)) for x in f]))
    return header + "\n" + "\n".join(rows) + "\n"


def dyglib_files(folder: Path, src, dst, t, labels, efeat=None, nfeat=None, name="tiny") -> Path:
    rows = [",u,i,ts,label,idx"]
    for k, (s, d, tt, lab) in enumerate(zip(src, dst, t, labels)):
        rows.append(f"{k},{s},{d},{tt},{float(lab)},{k + 1}")
    csv = write(folder / f"ml_{name}.csv", "\n".join(rows) + "\n")
    if efeat is not None:
        np.save(folder / f"ml_{name}.npy", efeat)
    if nfeat is not None:
        np.save(folder / f"ml_{name}_node.npy", nfeat)
    return csv


@pytest.fixture(scope="module")
def torch():
    """torch is only needed for TGL's .pt feature files; imported once, outside the timed test calls."""
    return pytest.importorskip("torch")


def assert_msg(exc_info, *parts) -> None:
    msg = str(exc_info.value)
    for part in parts:
        assert str(part) in msg, f"{part!r} not in message {msg!r}"


# ============================================================================================ round trips
def test_tgl_folder_roundtrip(tmp_path, torch):
    folder = tmp_path / "TINY"
    folder.mkdir()
    write(folder / "edges.csv", tgl_csv())
    torch.save(torch.from_numpy(EFEAT), folder / "edge_features.pt")
    torch.save(torch.from_numpy(NFEAT), folder / "node_features.pt")
    g = load_dataset(str(folder))
    np.testing.assert_array_equal(g.src, SRC)
    np.testing.assert_array_equal(g.dst, DST)
    np.testing.assert_array_equal(g.t, T)
    np.testing.assert_array_equal(g.edge_feat, EFEAT)
    np.testing.assert_array_equal(g.node_feat, NFEAT)
    np.testing.assert_array_equal(g.ext_roll, EXT_ROLL)
    np.testing.assert_array_equal(g.meta["int_roll"], EXT_ROLL)
    assert g.num_nodes == 6 and g.name == "TINY" and g.source == str(folder / "edges.csv")
    assert g.split().sizes() == {"train": 4, "val": 1, "test": 1}  # from ext_roll
    # the edges.csv file itself loads the folder too
    g2 = load_dataset(folder / "edges.csv")
    np.testing.assert_array_equal(g2.edge_feat, EFEAT)


def test_tgl_without_index_column_or_features(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    write(folder / "edges.csv", "src,dst,time\n" + "\n".join(f"{s},{d},{t}" for s, d, t in zip(SRC, DST, T)) + "\n")
    g = load_dataset(folder)
    np.testing.assert_array_equal(g.src, SRC)
    np.testing.assert_array_equal(g.t, T)
    assert g.edge_feat is None and g.node_feat is None and g.ext_roll is None


def test_jodie_roundtrip_bipartite_mapping(tmp_path):
    users = np.array([0, 2, 1, 0])
    items = np.array([1, 0, 1, 0])
    t = np.array([0.0, 1.5, 2.0, 10.0])
    labels = np.array([0, 0, 1, 0])
    feats = np.array([[0.5, -1.0, 2.0], [0.0, 0.25, 1.0], [3.0, 4.0, 5.0], [-0.5, 0.125, 9.0]])
    path = write(tmp_path / "wikipedia.csv", jodie_csv(users, items, t, labels, feats))
    g = load_dataset(path)
    num_users = 3
    np.testing.assert_array_equal(g.src, users)
    np.testing.assert_array_equal(g.dst, items + num_users)
    np.testing.assert_array_equal(g.t, t)
    np.testing.assert_array_equal(g.labels, labels)
    np.testing.assert_array_equal(g.edge_feat, feats.astype(np.float32))
    np.testing.assert_array_equal(g.dst_candidates, [3, 4])
    assert g.num_nodes == 5 and g.meta["num_users"] == 3 and g.meta["num_items"] == 2
    assert g.name == "wikipedia" and g.summary(val_ratio=0.25, test_ratio=0.25)["bipartite"]
    g2 = load_dataset(tmp_path)  # a folder holding one data file
    np.testing.assert_array_equal(g2.dst, g.dst)


def test_jodie_without_features_and_odd_header(tmp_path):
    text = "user_id,item_id,timestamp,state_label\n0,0,1,0\n1,2,2,1\n"
    g = load_dataset(write(tmp_path / "mooc.csv", text))
    np.testing.assert_array_equal(g.dst, [2, 4])
    assert g.edge_feat is None
    odd = "user_id,item_id,timestamp,state_label,f0;f1\n0,0,1,0,0.5,1.5\n1,2,2,1,2.5,3.5\n"
    g = load_dataset(write(tmp_path / "odd.csv", odd))
    np.testing.assert_array_equal(g.edge_feat, [[0.5, 1.5], [2.5, 3.5]])


def test_dyglib_roundtrip_padding_rows(tmp_path):
    src, dst = SRC + 1, DST + 1  # DyGLib ids start at 1
    efeat = np.vstack([np.full((1, 2), 999.0), EFEAT])  # row 0 = padding
    nfeat = np.vstack([np.full((1, 3), 999.0), NFEAT])  # node 0 = padding
    csv = dyglib_files(tmp_path, src, dst, T, LABELS, efeat, nfeat, name="uci")
    g = load_dataset(csv)
    np.testing.assert_array_equal(g.src, src)
    np.testing.assert_array_equal(g.dst, dst)
    np.testing.assert_array_equal(g.t, T)
    np.testing.assert_array_equal(g.labels, LABELS)
    np.testing.assert_array_equal(g.edge_feat, EFEAT)  # event k <- row idx = k + 1
    np.testing.assert_array_equal(g.node_feat, nfeat.astype(np.float32))
    assert g.num_nodes == 7 and g.name == "uci"
    g2 = load_dataset(tmp_path)  # the folder holding one ml_*.csv
    np.testing.assert_array_equal(g2.edge_feat, EFEAT)


def test_snap_text_comments_and_extra_columns(tmp_path):
    lines = ["# SNAP temporal graph", "% another comment", ""]
    lines += [f"{s} {d}\t{int(t)} 42 extra" for s, d, t in zip(SRC, DST, T)]
    path = write(tmp_path / "CollegeMsg.txt", "\n".join(lines) + "\n")
    g = load_dataset(path)
    np.testing.assert_array_equal(g.src, SRC)
    np.testing.assert_array_equal(g.dst, DST)
    np.testing.assert_array_equal(g.t, np.floor(T))
    assert g.name == "CollegeMsg" and g.num_nodes == 6
    gz = tmp_path / "c.txt.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    np.testing.assert_array_equal(load_dataset(gz).dst, DST)


def test_npz_roundtrip_and_folder(tmp_path):
    etype = np.array([0, 1, 2, 0, 1, 2], dtype=np.int8)
    folder = tmp_path / "mini"
    folder.mkdir()
    np.savez_compressed(folder / "events.npz", src=SRC.astype(np.int32), dst=DST.astype(np.int32), t=T,
                        edge_feat=EFEAT, node_feat=NFEAT, labels=LABELS, ext_roll=EXT_ROLL, etype=etype)
    for spec in (folder, folder / "events.npz"):
        g = load_dataset(spec)
        np.testing.assert_array_equal(g.src, SRC)
        np.testing.assert_array_equal(g.dst, DST)
        np.testing.assert_array_equal(g.t, T)
        np.testing.assert_array_equal(g.edge_feat, EFEAT)
        np.testing.assert_array_equal(g.node_feat, NFEAT)
        np.testing.assert_array_equal(g.labels, LABELS)
        np.testing.assert_array_equal(g.ext_roll, EXT_ROLL)
        np.testing.assert_array_equal(g.meta["etype"], etype)
        assert g.name == "mini" and g.source == str(folder / "events.npz")


def test_synthetic_spec_and_passthrough():
    g = load_dataset("synthetic:nodes=200,events=3000,bipartite=0,edge_dim=4,seed=1")
    ref = generate(nodes=200, events=3000, bipartite=False, edge_dim=4, seed=1)
    np.testing.assert_array_equal(g.src, ref.src)
    np.testing.assert_array_equal(g.edge_feat, ref.edge_feat)
    assert g.dst_candidates is None and g.edge_feat_dim == 4
    assert load_dataset(g) is g
    g3 = load_dataset("synthetic", nodes=100, events=500)
    assert g3.num_events == 500 and g3.num_nodes == 100
    with pytest.raises(DatasetError) as e:
        load_dataset("synthetic:nodez=3")
    assert_msg(e, "nodez", "known")


def test_missing_path_and_unknown_format(tmp_path):
    missing = tmp_path / "nope" / "edges.csv"
    with pytest.raises(FileNotFoundError) as e:
        load_dataset(missing)
    assert_msg(e, missing)
    weird = write(tmp_path / "weird.csv", "alpha,beta\nfoo,bar\n")
    with pytest.raises(DatasetError) as e:
        load_dataset(weird)
    assert_msg(e, weird, "recognised formats", "TGL", "JODIE", "DyGLib", "npz")
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\x00\x01\x02")
    with pytest.raises(DatasetError) as e:
        load_dataset(binary)
    assert_msg(e, binary, "recognised formats")


# ============================================================================================ bad input
def test_bad_missing_column(tmp_path):
    folder = tmp_path / "tgl"
    folder.mkdir()
    csv = write(folder / "edges.csv", "src,dst,when\n0,1,2\n")
    with pytest.raises(DatasetError) as e:
        load_dataset(folder)
    assert_msg(e, csv, "line 1", "'time'", "'when'")


def test_bad_malformed_line(tmp_path):
    folder = tmp_path / "tgl"
    folder.mkdir()
    csv = write(folder / "edges.csv", "src,dst,time\n0,1,2\n1,2,3\n2,3,4,5,6\n")
    with pytest.raises(DatasetError) as e:
        load_dataset(folder)
    assert_msg(e, csv, "line 4", "expected 3 fields, found 5", "2,3,4,5,6")


def test_bad_non_numeric_field(tmp_path):
    path = write(tmp_path / "g.txt", "# header comment\n% another\n0 1 10\n\n1 x 11\n2 3 12\n")
    with pytest.raises(DatasetError) as e:
        load_dataset(path)
    assert_msg(e, path, "line 5", "'dst'", "'x'", "not a number")


def test_bad_nan_timestamp(tmp_path):
    folder = tmp_path / "tgl"
    folder.mkdir()
    csv = write(folder / "edges.csv", ",src,dst,time\n0,0,1,2\n1,1,2,nan\n")
    with pytest.raises(DatasetError) as e:
        load_dataset(folder)
    assert_msg(e, csv, "line 3", "'time'", "'nan'", "NaN/inf")


def test_bad_inf_feature(tmp_path):
    text = "user_id,item_id,timestamp,state_label,features\n0,0,1,0,0.5,1.0\n1,1,2,0,inf,2.0\n"
    path = write(tmp_path / "jodie.csv", text)
    with pytest.raises(DatasetError) as e:
        load_dataset(path)
    assert_msg(e, path, "line 3", "feature 0", "'inf'", "NaN/inf")


def test_bad_negative_id(tmp_path):
    csv = dyglib_files(tmp_path, [1, -3, 2], [2, 3, 1], [1.0, 2.0, 3.0], [0, 0, 0])
    with pytest.raises(DatasetError) as e:
        load_dataset(csv)
    assert_msg(e, csv, "line 3", "'u'", "'-3'", "negative node id")


def test_bad_edge_feature_rows(tmp_path, torch):
    folder = tmp_path / "tgl"
    folder.mkdir()
    write(folder / "edges.csv", tgl_csv())
    torch.save(torch.zeros(5, 2), folder / "edge_features.pt")
    with pytest.raises(DatasetError) as e:
        load_dataset(folder)
    assert_msg(e, folder / "edge_features.pt", "5 rows", "6 events")


def test_bad_node_feature_rows(tmp_path):
    csv = dyglib_files(tmp_path, SRC + 1, DST + 1, T, LABELS, nfeat=np.zeros((4, 3)))
    with pytest.raises(DatasetError) as e:
        load_dataset(csv)
    assert_msg(e, tmp_path / "ml_tiny_node.npy", "4 rows", "6", "need at least 7 rows")


def test_bad_empty_file(tmp_path):
    path = write(tmp_path / "empty.txt", "# only a comment\n\n")
    with pytest.raises(DatasetError) as e:
        load_dataset(path)
    assert_msg(e, path, "empty dataset")
    folder = tmp_path / "tgl"
    folder.mkdir()
    write(folder / "edges.csv", ",src,dst,time\n")
    with pytest.raises(DatasetError) as e:
        load_dataset(folder)
    assert_msg(e, folder / "edges.csv", "empty dataset")


def test_bad_split_leaves_part_empty(tmp_path):
    path = write(tmp_path / "three.txt", "0 1 1\n1 2 2\n2 3 3\n")
    g = load_dataset(path)
    with pytest.raises(DatasetError) as e:
        g.split(val_ratio=0.1, test_ratio=0.1)
    assert_msg(e, path, "val", "empty", "val_ratio=0.1")


def test_unsorted_timestamps_are_stably_sorted_with_warning(tmp_path):
    t = np.array([5.0, 1.0, 3.0, 1.0])
    users, items = np.array([0, 1, 2, 3]), np.array([0, 1, 0, 1])
    feats = np.array([[0.0], [1.0], [2.0], [3.0]])
    labels = np.array([1, 0, 1, 0])
    path = write(tmp_path / "unsorted.csv", jodie_csv(users, items, t, labels, feats))
    with pytest.warns(UserWarning, match="not sorted") as rec:
        g = load_dataset(path)
    assert str(path) in str(rec[0].message)
    order = [1, 3, 2, 0]  # stable: the two t=1 events keep their file order
    np.testing.assert_array_equal(g.t, t[order])
    np.testing.assert_array_equal(g.src, users[order])
    np.testing.assert_array_equal(g.edge_feat[:, 0], feats[order, 0])
    np.testing.assert_array_equal(g.labels, labels[order])


# ============================================================================================ real data
@pytest.mark.shared_data
def test_real_npz_collegemsg():
    folder = SHARED / "CollegeMsg"
    if not (folder / "events.npz").is_file():
        pytest.skip(f"{folder} not present")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sorted already: no warning
        g = load_dataset(folder)
    assert g.num_events == 59835
    assert int(g.src.min()) >= 1 and max(int(g.src.max()), int(g.dst.max())) == 1899
    assert g.num_nodes == 1900 and g.name == "CollegeMsg"
    assert np.all(np.diff(g.t) >= 0)
    assert 193 < (g.t[-1] - g.t[0]) / 86400 < 194.5


# ============================================================================================ CLI
def test_cli_info_json(tmp_path, capsys):
    path = write(tmp_path / "g.txt", "\n".join(f"{i} {i + 1} {10 * i}" for i in range(20)) + "\n")
    assert cli_main(["datasets", "info", str(path), "--json", "--val-ratio", "0.1", "--test-ratio", "0.2"]) == 0
    out = capsys.readouterr().out
    info = json.loads(out)
    assert info["num_events"] == 20 and info["num_nodes"] == 21
    assert info["t_min"] == 0.0 and info["t_max"] == 190.0
    assert info["edge_feat_dim"] == 0 and info["node_feat_dim"] == 0
    assert (info["train_events"], info["val_events"], info["test_events"]) == (14, 2, 4)


def test_cli_info_human(tmp_path, capsys):
    path = write(tmp_path / "g.txt", "\n".join(f"{i} {i + 1} {10 * i}" for i in range(20)) + "\n")
    assert cli_main(["datasets", "info", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    keys = {line.split(":")[0]: line for line in lines}
    for key in ("num_events", "num_nodes", "t_min", "t_max", "edge_feat_dim", "node_feat_dim",
                "train_events", "val_events", "test_events"):
        assert key in keys
    assert keys["num_events"].split()[-1] == "20"
    assert len({line.index(line.split(":", 1)[1].strip()) for line in lines}) == 1  # values aligned


def test_cli_info_bad_file(tmp_path, capsys):
    path = write(tmp_path / "bad.txt", "0 1 10\n1 2 oops\n")
    assert cli_main(["datasets", "info", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert str(path) in captured.err and "line 2" in captured.err and "oops" in captured.err
    assert cli_main(["datasets", "info", str(tmp_path / "missing.npz")]) == 2
    assert "missing.npz" in capsys.readouterr().err


# ============================================================================================ format registry
def test_formats_help_and_detection_come_from_the_registry(tmp_path, monkeypatch, capsys):
    from mspipe_bench.data import loaders

    assert loaders.FORMATS == tuple(loaders.REGISTRY) == ("mspipe", "tgl", "jodie", "dyglib", "snap", "npz", "synthetic")
    help_text = loaders.formats_help()
    for form in loaders.REGISTRY.values():
        assert form.help in help_text
    with pytest.raises(SystemExit):
        cli_main(["datasets", "info", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "{" + ",".join(loaders.FORMATS) + "}" in out and "JODIE CSV" in out

    # a new format is one registry entry: detected by its file name, listed in the unknown-format error
    def load_pairs(path: Path) -> TemporalGraph:
        rows = [line.split("->") for line in path.read_text().split()]
        return TemporalGraph(src=[int(a) for a, _ in rows], dst=[int(b) for _, b in rows],
                             t=np.arange(len(rows), dtype=float), num_nodes=None, source=str(path))

    monkeypatch.setitem(loaders.REGISTRY, "pairs", loaders.Format(
        "pairs", "PAIRS file a->b per line", load_pairs, suffixes=(".pairs",),
        by_name=lambda p: p.suffix == ".pairs"))
    g = load_dataset(write(tmp_path / "x.pairs", "0->1\n1->2\n2->0\n"))
    np.testing.assert_array_equal(g.dst, [1, 2, 0])
    assert load_dataset(tmp_path).num_events == 3  # a folder holding one file with the format's suffix
    assert load_dataset(tmp_path / "x.pairs", format="pairs").num_events == 3
    with pytest.raises(DatasetError) as e:
        load_dataset(write(tmp_path / "weird.csv", "alpha,beta\nfoo,bar\n"))
    assert_msg(e, "PAIRS file a->b per line")


def test_forced_format_on_a_folder_without_it(tmp_path):
    write(tmp_path / "g.txt", "0 1 1\n")
    with pytest.raises(DatasetError) as e:
        load_dataset(tmp_path, format="npz")
    assert_msg(e, tmp_path, "folder without a npz dataset")


# ============================================================================================ sparse node ids
HUGE = 2**40


def huge_snap(path: Path, n_nodes: int = 50, n_events: int = 400, seed: int = 0) -> tuple[Path, np.ndarray]:
    """A SNAP file whose n_nodes distinct ids are spread up to 2^40 (not bipartite)."""
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(HUGE, size=n_nodes, replace=False)) + 7
    ids[-1] = HUGE
    pairs = rng.integers(0, n_nodes, size=(n_events, 2))
    pairs[:, 1] = np.where(pairs[:, 1] == pairs[:, 0], (pairs[:, 0] + 1) % n_nodes, pairs[:, 1])
    lines = [f"{ids[a]} {ids[b]} {1000 + 10 * k}" for k, (a, b) in enumerate(pairs)]
    write(path, "# sparse ids\n" + "\n".join(lines) + "\n")
    return path, ids


def test_sparse_huge_ids_are_remapped_and_info_says_so(tmp_path, capsys):
    path, ids = huge_snap(tmp_path / "huge.txt")
    g = load_dataset(path)
    assert g.num_nodes == 50
    np.testing.assert_array_equal(g.node_ids, ids)  # dense id -> the file's id, in increasing order
    raw = np.loadtxt(path, dtype=np.int64)
    np.testing.assert_array_equal(g.node_ids[g.src], raw[:, 0])
    np.testing.assert_array_equal(g.node_ids[g.dst], raw[:, 1])
    assert cli_main(["datasets", "info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_nodes"] == 50 and info["ids_remapped"] is True and info["max_file_id"] == HUGE
    assert cli_main(["datasets", "info", str(path)]) == 0
    assert f"50 distinct ids up to {HUGE}): renumbered to 0..49" in capsys.readouterr().out
    # `datasets sample` takes and prints the file's ids
    assert cli_main(["datasets", "sample", str(path), "--nodes", str(ids[3]), "--times", "1e9", "--json"]) == 0
    nbrs = json.loads(capsys.readouterr().out)["queries"][0]["neighbors"]
    assert nbrs and {n["nbr"] for n in nbrs} <= set(ids.tolist())
    assert cli_main(["datasets", "sample", str(path), "--nodes", "5", "--times", "1e9"]) == 2
    assert "node id 5 does not occur" in capsys.readouterr().err


def test_remapped_dataset_trains(tmp_path):
    from mspipe_bench.harness.run import RunSpec, run

    path, _ = huge_snap(tmp_path / "huge.txt")
    result = run(RunSpec(dataset=str(path), epochs=1, max_iterations=2, batch_size=100, torch_threads=1))
    assert result["status"] == "complete" and result["dataset"]["num_nodes"] == 50
    assert len(result["iterations"]) == 2
    assert 0.0 <= result["metrics"]["test_ap"] <= 1.0


def test_remap_keeps_node_features_and_candidates_consistent(tmp_path):
    src, dst = np.array([0, 30, 10, 30]), np.array([40, 50, 40, 60])
    nfeat = np.arange(71 * 2, dtype=np.float32).reshape(71, 2)  # rows indexed by the file's ids
    np.savez(tmp_path / "s.npz", src=src, dst=dst, t=np.arange(4.0), node_feat=nfeat,
             dst_candidates=np.array([40, 50, 60, 70]))
    g = load_dataset(tmp_path / "s.npz")
    np.testing.assert_array_equal(g.node_ids, [0, 10, 30, 40, 50, 60, 70])  # 71 > 2 x 7 ids
    np.testing.assert_array_equal(g.node_ids[g.src], src)
    np.testing.assert_array_equal(g.node_ids[g.dst_candidates], [40, 50, 60, 70])
    np.testing.assert_array_equal(g.node_feat, nfeat[g.node_ids])
    np.savez(tmp_path / "c.npz", src=src, dst=dst, t=np.arange(4.0), dst_candidates=np.array([40, 99]))
    with pytest.raises(DatasetError) as e:
        load_dataset(tmp_path / "c.npz")
    assert_msg(e, "c.npz", "'dst_candidates'", "99", "num_nodes 61")


def test_jodie_sparse_user_and_item_ids(tmp_path):
    users, items = np.array([0, 10**12, 5]), np.array([3, 0, 10**9])
    path = write(tmp_path / "j.csv", jodie_csv(users, items, [1.0, 2.0, 3.0], [0, 0, 0], [[0.0]] * 3))
    g = load_dataset(path)
    assert g.num_nodes == 6 and g.meta["num_users"] == 3 and g.meta["item_offset"] == 3
    assert g.src.max() < 3 and g.dst.min() >= 3
    np.testing.assert_array_equal(g.dst_candidates, [3, 4, 5])
    np.testing.assert_array_equal(g.node_ids[g.src], users)


def test_dense_ids_are_not_remapped(tmp_path):
    # ids 1..n (id 0 unused, like CollegeMsg and DyGLib) and ids with a few gaps keep their values
    g = load_dataset(write(tmp_path / "g.txt", "1 2 1\n2 3 2\n3 1 3\n"))
    assert g.node_ids is None and g.num_nodes == 4
    g = load_dataset(write(tmp_path / "gaps.txt", "0 2 1\n2 5 2\n"))  # 6 ids for 3 distinct: exactly 2x
    assert g.node_ids is None and g.num_nodes == 6


@pytest.mark.parametrize("cell, problem", [
    ("9223372036854775808", "beyond int64"),  # 2^63: pandas reads uint64
    ("18446744073709551616", "beyond int64"),  # 2^64: not even uint64
    ("1e20", "beyond int64"),
    ("1.5", "not an integer"),
    ("-4", "negative node id"),
    ("abc", "not a number"),
])
def test_ids_that_cannot_be_remapped_are_refused(tmp_path, capsys, cell, problem):
    path = write(tmp_path / "bad.txt", f"0 1 1\n1 {cell} 2\n2 0 3\n")
    assert cli_main(["datasets", "info", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    for part in (str(path), "line 2", "'dst'", repr(cell), problem):
        assert part in err, (part, err)


def test_npz_ids_beyond_int64_refused(tmp_path):
    np.savez(tmp_path / "u.npz", src=np.array([0, 2**63], dtype=np.uint64), dst=np.array([1, 2], dtype=np.uint64),
             t=np.arange(2.0))
    with pytest.raises(DatasetError) as e:
        load_dataset(tmp_path / "u.npz")
    assert_msg(e, "u.npz", "'src'", str(2**63), "beyond int64")


@pytest.mark.shared_data
def test_real_npz_remapping_decisions():
    """Wikipedia (ids 0..9226) and CollegeMsg (1..1899) keep their ids; sx-mathoverflow (24,818 nodes with
    ids up to 88,580) is renumbered to 0..24,817."""
    for name, remapped, nodes in (("wikipedia", False, 9227), ("CollegeMsg", False, 1900),
                                  ("sx-mathoverflow", True, 24818)):
        folder = SHARED / name
        if not (folder / "events.npz").is_file():
            pytest.skip(f"{folder} not present")
        g = load_dataset(folder)
        assert (g.node_ids is not None) is remapped and g.num_nodes == nodes, name
        if remapped:
            assert int(g.node_ids[-1]) == 88580


# ============================================================================================ negatives
def test_negatives_dst_refused_on_a_graph_that_is_not_bipartite(tmp_path):
    from mspipe_bench.errors import UserError
    from mspipe_bench.harness.run import RunSpec, run
    from mspipe_bench.sampling import NegativeSampler

    path = write(tmp_path / "social.txt", "\n".join(f"{i % 7} {(i * 3 + 1) % 7} {i}" for i in range(60)) + "\n")
    g = load_dataset(path)
    assert g.dst_candidates is None
    with pytest.raises(UserError) as e:
        NegativeSampler(g, "dst")
    assert_msg(e, "negatives 'dst'", "social", str(path), "not bipartite")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="not bipartite"):  # refused before any training
        run(RunSpec(dataset=str(path), negatives="dst", epochs=1, max_iterations=1, torch_threads=1))
    bip = generate(nodes=50, events=200)
    np.testing.assert_array_equal(NegativeSampler(bip, "dst").candidates, bip.dst_candidates)
