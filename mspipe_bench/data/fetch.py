"""The paper's datasets by name: download into a cache, verify, convert once, resolve ``--dataset NAME``.

Cache (``$MSPIPE_DATA``, default ``~/.cache/mspipe-bench``; :func:`~mspipe_bench.data.features.data_home`)::

    downloads/<name>/<file>         the verified source files (kept: a reconversion needs no download)
    downloads/<name>/<file>.part    an interrupted download, resumed by the next fetch (HTTP Range)
    datasets/<name>/                the converted dataset: mspipe.json + one .npy per array

A download goes to ``<file>.part`` and is renamed to ``<file>`` only after its size (the server's
``Content-Length``, and the registry's size where one is known) and SHA-256 (where known) match; a file that
fails verification is deleted. A server that stops mid-file leaves the ``.part`` (a prefix of the file) and
the next ``fetch`` asks for the rest with a ``Range`` request (a server that answers 200 instead sends the
whole file again). The conversion writes into a temporary folder next to ``datasets/<name>`` and renames it,
so ``datasets/<name>`` is either complete or absent.

Converted format (``mspipe`` in the loader registry): ``src.npy``, ``dst.npy`` (int64), ``t.npy``
(float64), optional ``edge_feat.npy`` / ``node_feat.npy`` (float32, loaded memory-mapped), ``labels.npy``,
``ext_roll.npy``, ``dst_candidates.npy``, ``node_ids.npy`` and ``mspipe.json`` (name, source, counts).

Name resolution (:func:`resolve`): a path that exists always wins (a local folder called ``wikipedia`` is
loaded as that folder); otherwise a known name is looked up in the cache, and a known name that is not
there is a :class:`UserError` that gives the ``fetch`` command.

Sources (:data:`KNOWN`): the JODIE project's CSVs (Kumar et al., KDD 2019, http://snap.stanford.edu/jodie/)
for wikipedia, reddit, mooc and lastfm (``user_id,item_id,timestamp,state_label,features...``), and TGL's
GDELT folder (Zhou et al., VLDB 2022, https://github.com/amazon-research/tgl, files on
``s3.us-west-2.amazonaws.com/dgl-data/dataset/tgl/GDELT/``). No checksums are published for them, so only
sizes are verified unless the registry entry gives a SHA-256.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mspipe_bench.errors import UserError

from .features import data_home

CHUNK = 1 << 20
TIMEOUT_S = 60.0
FORMAT_VERSION = 1
MARKER = "mspipe.json"
ARRAYS = ("src", "dst", "t", "edge_feat", "node_feat", "labels", "ext_roll", "dst_candidates", "node_ids")
MAPPED = ("edge_feat", "node_feat")  # loaded memory-mapped


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int | None = None  # bytes, when known
    sha256: str | None = None  # hex digest, when known
    required: bool = True


@dataclass(frozen=True)
class KnownDataset:
    name: str
    base_url: str  # the files' names are appended
    files: tuple[RemoteFile, ...]
    format: str  # loader that reads the downloaded files: jodie (one CSV) or tgl (a folder)
    about: str  # one line: what it is, published size
    extra: dict = field(default_factory=dict)


_JODIE = "http://snap.stanford.edu/jodie/"
_TGL = "https://s3.us-west-2.amazonaws.com/dgl-data/dataset/tgl/"
KNOWN: dict[str, KnownDataset] = {d.name: d for d in (
    KnownDataset("wikipedia", _JODIE, (RemoteFile("wikipedia.csv"),), "jodie",
                 "JODIE Wikipedia edits: 157,474 events, 9,227 nodes, 172-dim edge features"),
    KnownDataset("reddit", _JODIE, (RemoteFile("reddit.csv"),), "jodie",
                 "JODIE Reddit posts: 672,447 events, 10,984 nodes, 172-dim edge features"),
    KnownDataset("mooc", _JODIE, (RemoteFile("mooc.csv"),), "jodie",
                 "JODIE MOOC actions: 411,749 events, 7,144 nodes, 4-dim edge features "
                 "(TGL/MSPipe use --edge-features random:D)"),
    KnownDataset("lastfm", _JODIE, (RemoteFile("lastfm.csv"),), "jodie",
                 "JODIE LastFM listens: 1,293,103 events, 1,980 nodes, no edge features "
                 "(TGL/MSPipe use --edge-features random:D)"),
    KnownDataset("gdelt", _TGL + "GDELT/",
                 (RemoteFile("edges.csv"), RemoteFile("edge_features.pt"), RemoteFile("node_features.pt"),
                  RemoteFile("labels.csv", required=False)), "tgl",
                 "TGL's GDELT: 191,290,882 events, 16,682 nodes, 186-dim edge and 413-dim node features "
                 "(conversion loads the .pt tensors whole: needs more memory than the download)"),
)}


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks (downloads, checkpoints)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def datasets_dir(root: Path | None = None) -> Path:
    return (root or data_home()) / "datasets"


def downloads_dir(name: str, root: Path | None = None) -> Path:
    return (root or data_home()) / "downloads" / name


def cached_path(name: str, root: Path | None = None) -> Path | None:
    """The converted dataset's folder, or None when it is not (completely) in the cache."""
    folder = datasets_dir(root) / name
    return folder if (folder / MARKER).is_file() else None


def resolve(spec: str) -> str:
    """The path to load for ``--dataset spec``: ``spec`` itself when it exists (a local path wins), else the
    cached copy of a known dataset name; a known name missing from the cache is a UserError saying how to
    fetch it. Anything else is returned unchanged (the loader reports a missing path)."""
    if Path(spec).expanduser().exists() or spec not in KNOWN:
        return spec
    folder = cached_path(spec)
    if folder is None:
        raise UserError(f"dataset {spec!r} is not in the data cache ({datasets_dir()}); download it with: "
                        f"mspipe-bench datasets fetch {spec}  (or set MSPIPE_DATA to the cache that has it)")
    return str(folder)


# ---------------------------------------------------------------------------------------------- download
def file_url(base: str, name: str) -> str:
    return base if not base.endswith("/") and base.rsplit("/", 1)[-1] == name else base.rstrip("/") + "/" + name


def download(url: str, dest: Path, size: int | None = None, sha256: str | None = None, progress: bool = True,
             timeout: float = TIMEOUT_S) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part`` (resumed when present), verify, rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the .part is already whole (or longer than the file): check it as is
            return _verify_and_keep(url, part, dest, size, sha256, expected=have)
        raise UserError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"{url}: cannot connect ({reason})") from None
    with resp:
        length = resp.headers.get("Content-Length")
        length = int(length) if length is not None else None
        if have and resp.status == 206 and _range_start(resp.headers.get("Content-Range")) == have:
            mode, start = "ab", have
        else:
            mode, start = "wb", 0
        expected = start + length if length is not None else None
        if size is not None and expected is not None and expected != size:
            part.unlink(missing_ok=True)
            raise UserError(f"{url}: the server sends {expected:,} bytes, expected {size:,}; nothing kept")
        got = start
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=expected, initial=start, unit="B", unit_scale=True, desc=dest.name, leave=False)
        try:
            with open(part, mode) as fh:
                while True:
                    try:
                        chunk = resp.read(CHUNK)
                    except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError) as exc:
                        chunk = getattr(exc, "partial", b"")
                        if chunk:
                            fh.write(chunk)
                            got += len(chunk)
                        break
                    if not chunk:
                        break
                    fh.write(chunk)
                    got += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    if expected is not None and got < expected:
        raise UserError(f"{url}: the download stopped after {got:,} of {expected:,} bytes; the part is kept in "
                        f"{part} and the same command resumes it")
    return _verify_and_keep(url, part, dest, size, sha256, expected=expected)


def _range_start(header: str | None) -> int | None:
    # "bytes START-END/TOTAL"
    try:
        return int(header.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return None


def _verify_and_keep(url: str, part: Path, dest: Path, size, sha256, expected) -> Path:
    got = part.stat().st_size
    want = size if size is not None else expected
    if want is not None and got != want:
        part.unlink(missing_ok=True)
        raise UserError(f"{url}: downloaded {got:,} bytes, expected {want:,}; the file was deleted")
    if sha256 is not None:
        got_sha = sha256_file(part)
        if got_sha != sha256.lower():
            part.unlink(missing_ok=True)
            raise UserError(f"{url}: SHA-256 {got_sha} differs from the expected {sha256}; the file was deleted")
    os.replace(part, dest)
    return dest


# ---------------------------------------------------------------------------------------------- convert
def save_converted(graph, out: Path, about: dict) -> Path:
    """Write ``graph`` in the converted format into ``out`` atomically (temp folder, rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        arrays = {}
        for key in ARRAYS:
            value = getattr(graph, key)
            if value is not None:
                np.save(tmp / f"{key}.npy", np.asarray(value), allow_pickle=False)
                arrays[key] = list(np.shape(value))
        meta = {"format": "mspipe", "version": FORMAT_VERSION, "name": graph.name, "num_nodes": graph.num_nodes,
                "num_events": graph.num_events, "arrays": arrays, **about}
        for key in ("num_users", "num_items", "item_offset"):
            if key in graph.meta:
                meta[key] = int(graph.meta[key])
        (tmp / MARKER).write_text(json.dumps(meta, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_converted(folder: Path):
    """A converted dataset folder as a TemporalGraph (features memory-mapped)."""
    from .features import load_table
    from .graph import DatasetError, TemporalGraph

    marker = folder / MARKER
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{marker}: cannot read ({exc})") from None
    if meta.get("version") != FORMAT_VERSION:
        raise DatasetError(f"{marker}: field 'version' is {meta.get('version')!r}, this suite reads "
                           f"{FORMAT_VERSION}; convert again (mspipe-bench datasets fetch NAME)")
    arrays = {}
    for key in meta.get("arrays", {}):
        path = folder / f"{key}.npy"
        try:
            arrays[key] = load_table(path) if key in MAPPED else np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path}: cannot load ({exc})") from None
    node_ids = arrays.pop("node_ids", None)
    keep = {k: meta[k] for k in ("num_users", "num_items", "item_offset") if k in meta}
    graph = TemporalGraph(**arrays, num_nodes=int(meta["num_nodes"]), name=str(meta.get("name", folder.name)),
                          source=str(folder), meta={"format": "mspipe", "origin": meta.get("source"), **keep})
    graph.node_ids = node_ids
    return graph


def convert(dataset: KnownDataset, raw: Path, out: Path, url: str) -> Path:
    from .loaders import load_dataset

    path = raw / dataset.files[0].name if dataset.format == "jodie" else raw
    graph = load_dataset(str(path), format=dataset.format, name=dataset.name)
    return save_converted(graph, out, {"source": url, "downloaded_from": dataset.format})


# ---------------------------------------------------------------------------------------------- fetch
def fetch(name: str, root: Path | None = None, url: str | None = None, progress: bool = True,
          log=print) -> Path:
    """Download (or resume), verify and convert the known dataset ``name``; returns its converted folder."""
    if name not in KNOWN:
        raise UserError(f"datasets fetch: unknown dataset {name!r}; known: {', '.join(KNOWN)}")
    ds = KNOWN[name]
    root = Path(root).expanduser() if root is not None else data_home()
    done = cached_path(name, root)
    if done is not None:
        log(f"{name}: already in the cache: {done}")
        return done
    base = url or ds.base_url
    raw = downloads_dir(name, root)
    for f in ds.files:
        dest = raw / f.name
        src = file_url(base, f.name)
        if dest.is_file():
            log(f"{name}: {f.name} already downloaded")
            continue
        log(f"{name}: downloading {src}")
        try:
            download(src, dest, f.size, f.sha256, progress=progress)
        except UserError as exc:
            if f.required or "HTTP 404" not in str(exc):
                raise
            log(f"{name}: optional {f.name} not available ({exc})")
            continue
        log(f"{name}: {f.name}: {dest.stat().st_size:,} bytes, verified")
    for stale in datasets_dir(root).glob(f".{name}.*.tmp"):  # a conversion that was killed
        shutil.rmtree(stale, ignore_errors=True)
    log(f"{name}: converting {raw} ...")
    out = convert(ds, raw, datasets_dir(root) / name, base)
    log(f"{name}: ready in {out}")
    return out


def listing(root: Path | None = None) -> list[dict]:
    """Every known dataset (and any other converted one in the cache) with what the cache holds."""
    root = root or data_home()
    rows = []
    names = list(KNOWN) + sorted(p.name for p in datasets_dir(root).glob("*")
                                 if p.is_dir() and not p.name.startswith(".") and p.name not in KNOWN)
    for name in names:
        folder = cached_path(name, root)
        raw = downloads_dir(name, root)
        parts = sorted(raw.glob("*.part")) if raw.is_dir() else []
        if folder is not None:
            meta = json.loads((folder / MARKER).read_text())
            state = f"converted: {meta['num_events']:,} events, {meta['num_nodes']:,} nodes"
        elif parts:
            state = "partial download: " + ", ".join(f"{p.name} {p.stat().st_size:,} B" for p in parts)
        elif raw.is_dir() and any(raw.iterdir()):
            state = "downloaded, not converted"
        else:
            state = "not cached"
        ds = KNOWN.get(name)
        rows.append({"name": name, "cached": folder is not None, "state": state,
                     "path": str(folder) if folder else "", "about": ds.about if ds else "",
                     "source": file_url(ds.base_url, ds.files[0].name) if ds and len(ds.files) == 1
                     else (ds.base_url if ds else "")})
    return rows
