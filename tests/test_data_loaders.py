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
