"""``datasets fetch`` against a local HTTP server on 127.0.0.1 that the tests start (no dataset host is
reachable here): a good download, a resumed partial download, a wrong size or checksum, a 404, a server that
stops mid-file, a server that ignores Range; name resolution and ``datasets list``. After every failure the
cache holds no half-written file: at most the ``.part`` of an interrupted download (a prefix of the file),
which the next fetch resumes."""

from __future__ import annotations

import dataclasses
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from mspipe_bench.data import fetch as F
from mspipe_bench.data.features import is_mapped
from mspipe_bench.data.loaders import load_dataset
from mspipe_bench.errors import UserError


# ---------------------------------------------------------------------------------------------- server
class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` (name -> bytes). Path prefixes choose a behaviour: ``/ok/`` honours Range,
    ``/cut/`` announces the whole length but stops after half, ``/norange/`` ignores Range."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        _, mode, name = self.path.split("/", 2)
        srv.requests.append((mode, name, self.headers.get("Range")))
        data = srv.files.get(name)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and mode == "ok":
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "cut":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.files, srv.requests = {}, []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = lambda mode="ok": f"http://127.0.0.1:{srv.server_address[1]}/{mode}/"
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("MSPIPE_DATA", str(root))
    monkeypatch.setattr(F, "TIMEOUT_S", 10.0)
    return root


def jodie_csv(n: int = 300, dim: int = 3, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    lines = ["user_id,item_id,timestamp,state_label,comma_separated_list_of_features"]
    t = np.sort(rng.integers(0, 5000, n)).astype(float)
    for i in range(n):
        feats = ",".join(f"{x:.6f}" for x in rng.standard_normal(dim))
        lines.append(f"{rng.integers(0, 20)},{rng.integers(0, 8)},{t[i]},{int(rng.random() < 0.05)},{feats}")
    return ("\n".join(lines) + "\n").encode()


def files_in(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def assert_same_graph(a, b):
    for key in ("src", "dst", "t", "edge_feat", "node_feat", "labels", "dst_candidates"):
        x, y = getattr(a, key), getattr(b, key)
        assert (x is None) == (y is None), key
        if x is not None:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=key)
    assert a.num_nodes == b.num_nodes


# ---------------------------------------------------------------------------------------------- tests
def test_good_download_converts_and_resolves_by_name(server, cache, tmp_path):
    data = jodie_csv()
    server.files["wikipedia.csv"] = data
    out = F.fetch("wikipedia", url=server.url(), progress=False, log=lambda *_: None)
    assert out == cache / "datasets" / "wikipedia"
    assert (cache / "downloads" / "wikipedia" / "wikipedia.csv").read_bytes() == data
    assert not [f for f in files_in(cache) if f.endswith((".part", ".tmp"))]
    # --dataset wikipedia: the converted copy, equal to loading the CSV itself, features memory-mapped
    (tmp_path / "direct.csv").write_bytes(data)
    direct = load_dataset(str(tmp_path / "direct.csv"))
    graph = load_dataset("wikipedia")
    assert_same_graph(graph, direct)
    assert graph.edge_feat_dim == 3 and is_mapped(graph.edge_feat)
    assert graph.meta["item_offset"] == direct.meta["item_offset"]
    # a second fetch does nothing
    n = len(server.requests)
    F.fetch("wikipedia", url=server.url(), progress=False, log=lambda *_: None)
    assert len(server.requests) == n


def test_resumes_a_partial_download_with_range(server, cache):
    data = jodie_csv(seed=1)
    server.files["reddit.csv"] = data
    part = cache / "downloads" / "reddit" / "reddit.csv.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:1000])
    F.fetch("reddit", url=server.url(), progress=False, log=lambda *_: None)
    assert server.requests == [("ok", "reddit.csv", "bytes=1000-")]
    assert (cache / "downloads" / "reddit" / "reddit.csv").read_bytes() == data
    assert not part.exists()


def test_server_stops_mid_file_then_resume(server, cache):
    data = jodie_csv(seed=2)
    server.files["mooc.csv"] = data
    with pytest.raises(UserError, match="stopped after .* the same command resumes it"):
        F.fetch("mooc", url=server.url("cut"), progress=False, log=lambda *_: None)
    part = cache / "downloads" / "mooc" / "mooc.csv.part"
    assert files_in(cache) == ["downloads/mooc/mooc.csv.part"]  # no dataset, no final file
    kept = part.read_bytes()
    assert 0 < len(kept) < len(data) and data.startswith(kept)
    F.fetch("mooc", url=server.url(), progress=False, log=lambda *_: None)
    assert server.requests[-1] == ("ok", "mooc.csv", f"bytes={len(kept)}-")
    assert (cache / "downloads" / "mooc" / "mooc.csv").read_bytes() == data
    assert F.cached_path("mooc") is not None


def test_server_ignoring_range_restarts_from_zero(server, cache):
    data = jodie_csv(seed=3)
    server.files["lastfm.csv"] = data
    part = cache / "downloads" / "lastfm" / "lastfm.csv.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage that is not a prefix")
    F.fetch("lastfm", url=server.url("norange"), progress=False, log=lambda *_: None)
    assert (cache / "downloads" / "lastfm" / "lastfm.csv").read_bytes() == data


@pytest.mark.parametrize("field, value, match", [("size", 1, "sends [0-9,]+ bytes, expected 1; nothing kept"),
                                                 ("sha256", "0" * 64, "SHA-256 .* differs")])
def test_wrong_size_or_checksum_keeps_nothing(server, cache, monkeypatch, field, value, match):
    data = jodie_csv(seed=4)
    server.files["wikipedia.csv"] = data
    known = F.KNOWN["wikipedia"]
    bad = dataclasses.replace(known.files[0], **{field: value})
    monkeypatch.setitem(F.KNOWN, "wikipedia", dataclasses.replace(known, files=(bad,)))
    with pytest.raises(UserError, match=match):
        F.fetch("wikipedia", url=server.url(), progress=False, log=lambda *_: None)
    assert files_in(cache) == []


def test_right_checksum_passes(server, cache, monkeypatch):
    import hashlib

    data = jodie_csv(seed=5)
    server.files["wikipedia.csv"] = data
    known = F.KNOWN["wikipedia"]
    good = dataclasses.replace(known.files[0], size=len(data), sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(F.KNOWN, "wikipedia", dataclasses.replace(known, files=(good,)))
    F.fetch("wikipedia", url=server.url(), progress=False, log=lambda *_: None)
    assert F.cached_path("wikipedia") is not None


def test_404_is_a_user_error_and_keeps_nothing(server, cache):
    with pytest.raises(UserError, match="HTTP 404"):
        F.fetch("wikipedia", url=server.url(), progress=False, log=lambda *_: None)
    assert files_in(cache) == []


def test_unreachable_host_is_a_user_error(cache):
    with pytest.raises(UserError, match="cannot connect"):
        F.fetch("wikipedia", url="http://127.0.0.1:9/", progress=False, log=lambda *_: None)


def test_gdelt_tgl_folder(server, cache, tmp_path):
    """TGL's folder layout (edges.csv with ext_roll, .pt features; labels.csv optional)."""
    rng = np.random.default_rng(0)
    n, nodes = 200, 30
    src, dst = rng.integers(0, nodes, n), rng.integers(0, nodes, n)
    t = np.sort(rng.integers(0, 1000, n))
    roll = np.repeat([0, 1, 2], [140, 30, 30])
    csv = ",src,dst,time,int_roll,ext_roll\n" + "".join(
        f"{i},{s},{d},{tt},0,{r}\n" for i, (s, d, tt, r) in enumerate(zip(src, dst, t, roll)))
    folder = tmp_path / "tgl"
    folder.mkdir()
    (folder / "edges.csv").write_text(csv)
    torch.save(torch.randn(n, 6), folder / "edge_features.pt")
    torch.save(torch.randn(nodes, 4), folder / "node_features.pt")
    for f in folder.iterdir():
        server.files[f.name] = f.read_bytes()
    F.fetch("gdelt", url=server.url(), progress=False, log=lambda *_: None)  # labels.csv: 404, optional
    graph = load_dataset("gdelt")
    assert_same_graph(graph, load_dataset(str(folder)))
    np.testing.assert_array_equal(graph.ext_roll, roll)
    assert (graph.edge_feat_dim, graph.node_feat_dim) == (6, 4)


def test_name_resolution(cache, tmp_path, monkeypatch):
    from mspipe_bench.harness.run import RunSpec, check_inputs

    with pytest.raises(UserError, match="mspipe-bench datasets fetch wikipedia"):
        load_dataset("wikipedia")
    with pytest.raises(UserError, match="datasets fetch reddit"):
        check_inputs([RunSpec(dataset="reddit")])
    # a local path named like a dataset wins over the cache
    monkeypatch.chdir(tmp_path)
    Path("wikipedia").mkdir()
    np.savez(Path("wikipedia") / "events.npz", src=np.array([0, 1]), dst=np.array([1, 2]), t=np.array([1, 2]))
    assert load_dataset("wikipedia").num_events == 2
    check_inputs([RunSpec(dataset="wikipedia")])


def test_cli_list_and_fetch(server, cache, capsys):
    from mspipe_bench.cli import main

    server.files["wikipedia.csv"] = jodie_csv(seed=6)
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert "wikipedia" in out and "gdelt" in out and "not cached" in out
    assert main(["datasets", "fetch", "wikipedia", "--url", server.url() + "wikipedia.csv", "--quiet"]) == 0
    assert main(["datasets", "list", "--json"]) == 0
    import json

    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out.strip().splitlines()[-1])}
    assert rows["wikipedia"]["cached"] and rows["wikipedia"]["state"].startswith("converted: 300 events")
    assert not rows["reddit"]["cached"]
    assert main(["run", "--dataset", "reddit", "--quiet"]) == 2
    assert "datasets fetch reddit" in capsys.readouterr().err
    assert main(["datasets", "info", "wikipedia", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["edge_feat_dim"] == 3
