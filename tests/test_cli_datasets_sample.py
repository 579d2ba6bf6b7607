"""``mspipe-bench datasets sample``: the sampler's neighbours per (node, time) query, compared with a brute
force over the event list, in JSON and in the human table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mspipe_bench.cli import main

# events: (src, dst, t); repeated times so queries hit exact event times
EVENTS = [
    (1, 2, 100.0),
    (1, 3, 100.0),
    (2, 3, 150.0),
    (3, 1, 200.0),
    (1, 2, 200.0),
    (2, 4, 250.0),
    (1, 4, 300.0),
    (3, 2, 300.0),
    (1, 3, 350.5),
]
NUM_NODES = 6  # node 0 and node 5 never occur


@pytest.fixture()
def npz(tmp_path):
    src, dst, t = (np.array(c) for c in zip(*EVENTS))
    path = tmp_path / "tiny.npz"
    np.savez(path, src=src.astype(np.int64), dst=dst.astype(np.int64), t=t, num_nodes=np.int64(NUM_NODES))
    return str(path)


def brute(node: int, t: float, k: int) -> list[dict]:
    hist = []
    for e, (u, v, te) in enumerate(EVENTS):
        if te < t:
            if u == node:
                hist.append({"eid": e, "nbr": v, "t": te})
            if v == node:
                hist.append({"eid": e, "nbr": u, "t": te})
    return hist[max(0, len(hist) - k):]


def run_json(capsys, *argv) -> dict:
    assert main(["datasets", "sample", *argv, "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # exactly one JSON object
    return json.loads(out)


@pytest.mark.parametrize("fanout", [1, 2, 10])
def test_json_recent_matches_brute_force(npz, capsys, fanout):
    nodes = [1, 2, 3, 4, 0, 1, 1]
    times = [100.0, 200.0, 300.0, 300.0, 400.0, 350.5, 1000.0]
    doc = run_json(capsys, npz, "--nodes", ",".join(map(str, nodes)), "--times", ",".join(map(str, times)),
                   "--fanout", str(fanout))
    assert list(doc) == ["queries"]
    assert len(doc["queries"]) == len(nodes)
    for q, v, t in zip(doc["queries"], nodes, times):
        assert q["node"] == v and q["time"] == t
        assert q["neighbors"] == brute(v, t, fanout)  # oldest first


def test_default_fanout_and_single_time_for_all_nodes(npz, capsys):
    doc = run_json(capsys, npz, "--nodes", "1,2,3", "--times", "300")
    assert [q["time"] for q in doc["queries"]] == [300.0, 300.0, 300.0]
    for q in doc["queries"]:
        assert q["neighbors"] == brute(q["node"], 300.0, 10)


def test_query_at_event_time_excludes_the_event(npz, capsys):
    doc = run_json(capsys, npz, "--nodes", "1,2", "--times", "100,150")
    assert doc["queries"][0]["neighbors"] == []  # both events of node 1 at t=100 are not earlier
    assert [n["eid"] for n in doc["queries"][1]["neighbors"]] == [0]  # event 2 at t=150 excluded


def test_uniform_strategy_is_seeded(npz, capsys):
    args = [npz, "--nodes", "1,1,1,3", "--times", "1000", "--fanout", "2", "--strategy", "uniform"]
    a = run_json(capsys, *args, "--seed", "5")
    b = run_json(capsys, *args, "--seed", "5")
    assert a == b
    for q in a["queries"]:
        hist = brute(q["node"], q["time"], 100)
        assert len(q["neighbors"]) == min(2, len(hist))
        assert all(n in hist for n in q["neighbors"])
        assert len({n["eid"] for n in q["neighbors"]}) == len(q["neighbors"])


def test_human_table(npz, capsys):
    assert main(["datasets", "sample", npz, "--nodes", "1,5", "--times", "300,300", "--fanout", "3"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("node 1 at t=300: 3 neighbours")
    assert lines[1].split() == ["eid", "nbr", "t"]
    assert set(lines[2].replace(" ", "")) == {"-"}
    rows = [line.split() for line in lines[3:6]]
    assert rows == [[str(n["eid"]), str(n["nbr"]), f"{n['t']:.0f}"] for n in brute(1, 300.0, 3)]
    assert len({len(line) for line in lines[1:6]}) == 1  # right-aligned columns
    assert lines[6].startswith("node 5 at t=300: 0 neighbours")
    assert len(lines) == 7


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--nodes", "1,2,3", "--times", "100,200"], "--nodes has 3 entries but --times has 2"),
        (["--nodes", "1,x", "--times", "100"], "'x' is not an integer node id"),
        (["--nodes", "1", "--times", "soon"], "'soon' is not a number"),
        (["--nodes", "1,,2", "--times", "100"], "empty entries"),
        (["--nodes", "6", "--times", "100"], "node id 6 is out of range"),
        (["--nodes", "1", "--times", "100", "--fanout", "-1"], "--fanout must be >= 0"),
    ],
)
def test_bad_queries_exit_2_with_a_clear_error(npz, capsys, argv, needle):
    assert main(["datasets", "sample", npz, *argv]) == 2
    captured = capsys.readouterr()
    assert needle in captured.err
    assert captured.out == ""


def test_missing_dataset_exit_2(tmp_path, capsys):
    assert main(["datasets", "sample", str(tmp_path / "nope.npz"), "--nodes", "1", "--times", "1"]) == 2
    assert "not found" in capsys.readouterr().err


def test_info_still_works(npz, capsys):
    assert main(["datasets", "info", npz, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_events"] == len(EVENTS) and info["num_nodes"] == NUM_NODES
