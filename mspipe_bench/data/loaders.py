"""Offline dataset loaders: every supported on-disk format becomes a :class:`TemporalGraph`.

The formats are the entries of :data:`REGISTRY` (at the end of this module): each names its loader, how it
is recognised (a folder's file, the file name, the first data line, or a spec that is not a path) and its
help text. :data:`FORMATS`, the auto-detection of :func:`load_dataset`, the error that lists the recognised
formats and the ``datasets`` / ``run`` help all come from it: adding a format is adding one entry.

==========  =====================================================================================
format      what is recognised
==========  =====================================================================================
mspipe      the suite's own converted folder (``mspipe.json`` + ``.npy`` arrays, written by
            ``datasets fetch``, see :mod:`~mspipe_bench.data.fetch`; features memory-mapped)
tgl         a folder with ``edges.csv`` (columns ``src,dst,time``, optional ``int_roll,ext_roll``,
            an unnamed leading index column is ignored), optional ``edge_features.pt`` /
            ``node_features.pt`` (torch tensors); or an ``edges.csv`` file itself
jodie       ``user_id,item_id,timestamp,state_label,<features...>`` CSV; users and items are mapped to
            one id space (item ``j`` becomes ``num_users + j``); ``dst_candidates`` = the item ids
dyglib      ``ml_NAME.csv`` (``,u,i,ts,label,idx``) with optional ``ml_NAME.npy`` (edge features,
            row 0 is padding, event rows are looked up by ``idx``) and ``ml_NAME_node.npy``
snap        whitespace text ``src dst t [ignored columns...]`` with ``#``/``%`` comment lines
            (``.txt``, ``.tsv``, ``.edges``, ... optionally ``.gz``)
npz         ``.npz`` with ``src, dst, t`` and optional ``edge_feat, node_feat, labels, ext_roll,
            dst_candidates, num_nodes``; other arrays go to ``meta``. A folder holding
            ``events.npz`` loads it.
synthetic   the name ``synthetic`` or ``synthetic:nodes=1000,events=50000,bipartite=1,...``
==========  =====================================================================================

Node ids of a file are renumbered to ``0 .. n-1`` when they are sparse (:meth:`TemporalGraph.densify`;
``graph.node_ids`` keeps the file's ids). Bad input raises :class:`DatasetError` whose message names the
file, the 1-based line (or the field) and the offending value. Parsing uses pandas/numpy (no per-line
Python loop; pandas is imported by the parsing functions, so that ``--help`` stays fast); the file is
re-scanned line by line only on the error path, to report the exact line.
"""

from __future__ import annotations

import gzip
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .graph import _FLOAT_EXACT, _INT64_MAX, SPARSE_FACTOR, DatasetError, TemporalGraph

if TYPE_CHECKING:
    import pandas as pd



@dataclass(frozen=True)
class Format:
    """One dataset format: its loader and how it is recognised (all optional but ``load``)."""

    name: str
    help: str  # what it looks like, for --help and the "unknown format" error
    load: Callable[..., TemporalGraph]  # load(path); a spec format: load(spec, name=..., **options)
    suffixes: tuple[str, ...] = ()  # a folder holding exactly one file with such a suffix loads that file
    in_folder: Callable[[Path], Path | None] | None = None  # the file of this format inside a folder
    by_name: Callable[[Path], bool] | None = None  # the file name alone says it is this format
    by_first_line: Callable[[str], bool] | None = None  # the first data line (header) says it is this format
    by_spec: Callable[[str], bool] | None = None  # a dataset spec that is not a path (generators)


def formats_help() -> str:
    """The recognised formats in one line (``--help`` texts and the unknown-format error)."""
    return "recognised formats: " + "; ".join(f.help for f in REGISTRY.values())


def load_dataset(spec, **opts) -> TemporalGraph:
    """Load a dataset given a path, a known dataset's name (``wikipedia``: its converted copy in the data
    cache, see :func:`~mspipe_bench.data.fetch.resolve`; an existing path of that name wins), the name
    ``synthetic[:k=v,...]`` or a :class:`TemporalGraph`.

    Options: ``format`` (one of :data:`FORMATS`, to skip auto-detection), ``name`` (overrides the
    dataset name). For ``synthetic`` every other keyword goes to :func:`~mspipe_bench.data.synthetic.generate`
    (keywords override the ones in the spec string). A file's sparse node ids are renumbered
    (:meth:`TemporalGraph.densify`).
    """
    if isinstance(spec, TemporalGraph):
        return spec
    fmt = opts.pop("format", None)
    name = opts.pop("name", None)
    if fmt is not None and fmt not in REGISTRY:
        raise DatasetError(f"unknown dataset format {fmt!r}; known formats: {', '.join(FORMATS)}")
    spec_s = str(spec)
    form = REGISTRY[fmt] if fmt is not None else next(
        (f for f in REGISTRY.values() if f.by_spec and f.by_spec(spec_s)), None)
    if form is not None and form.by_spec:  # a generator
        return form.load(spec_s, name=name, **opts)
    if opts:
        raise TypeError(f"load_dataset: unexpected option(s) {sorted(opts)} for a file dataset")
    from .fetch import resolve

    path = Path(resolve(spec_s)).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset not found: {path} (no such file or directory)")
    if form is None:
        form, path = _detect(path)
    elif path.is_dir():
        inner = form.in_folder(path) if form.in_folder else None
        if inner is None:
            raise DatasetError(f"{path}: is a folder without a {fmt} dataset; expected {form.help}")
        path = inner
    graph = form.load(path)
    if graph.densify() and "item_offset" in graph.meta:  # JODIE's user/item layout in the new ids
        offset = int(np.searchsorted(graph.node_ids, graph.meta["item_offset"]))
        graph.meta.update(num_users=offset, num_items=graph.num_nodes - offset, item_offset=offset)
    if name is not None:
        graph.name = str(name)
    return graph


# ---------------------------------------------------------------------------------------------- detection
def _detect(path: Path) -> tuple[Format, Path]:
    """The format of a file or folder and the file to load."""
    if path.is_dir():
        for form in REGISTRY.values():
            inner = form.in_folder(path) if form.in_folder else None
            if inner is not None:
                return form, inner
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        suffixes = {s for f in REGISTRY.values() for s in f.suffixes}
        data = [p for p in files if p.suffix.lower() in suffixes]
        if len(data) == 1:  # e.g. a JODIE folder holding wikipedia.csv
            return _detect(data[0])
        found = ", ".join(p.name for p in files[:10]) or "nothing"
        raise DatasetError(f"{path}: no dataset recognised in this folder (found: {found}); {formats_help()}")
    for form in REGISTRY.values():
        if form.by_name and form.by_name(path):
            return form, path
    if _looks_binary(path):
        raise DatasetError(f"{path}: unknown dataset format (binary file, suffix {path.suffix!r}); {formats_help()}")
    first = _first_data_line(path)
    if first is None:
        raise DatasetError(f"{path}: empty dataset (the file has no data lines)")
    for form in REGISTRY.values():
        if form.by_first_line and form.by_first_line(first):
            return form, path
    raise DatasetError(f"{path}: unknown dataset format (first data line {first[:80]!r}); {formats_help()}")


def _header(line: str) -> list[str]:
    """The cells of a CSV header line, lower case."""
    return [c.strip().strip('"').lower() for c in line.split(",")]


def _looks_binary(path: Path) -> bool:
    try:
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as fh:
                head = fh.read(4096)
        else:
            with open(path, "rb") as fh:
                head = fh.read(4096)
    except (OSError, EOFError):
        return True
    return b"\x00" in head


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _open_text(path: Path):
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace", newline=None)
    return open(path, encoding="utf-8", errors="replace", newline=None)


def _first_data_line(path: Path, comments: str = "#%") -> str | None:
    try:
        with _open_text(path) as fh:
            for _ in range(1000):
                line = fh.readline()
                if not line:
                    return None
                s = line.strip()
                if s and s[0] not in comments:
                    return s
    except (OSError, UnicodeError) as exc:
        raise DatasetError(f"{path}: cannot read as text ({exc}); {formats_help()}") from exc
    return None


# ---------------------------------------------------------------------------------------------- tables
@dataclass
class _Table:
    """A parsed text table plus what is needed to map a data row back to its physical line."""

    path: Path
    df: pd.DataFrame
    sep: str  # "," or "ws"
    header_lines: int  # physical lines before the data (headers)
    comments: str = ""  # characters that start a comment line
    positions: dict | None = None  # field name -> column position in the raw line

    def line_of(self, row: int) -> tuple[int, str]:
        """(1-based physical line number, raw text) of data row ``row`` (error path only)."""
        data_row = -1
        with _open_text(self.path) as fh:
            for lineno, line in enumerate(fh, start=1):
                if lineno <= self.header_lines:
                    continue
                s = line.strip()
                if not s or (self.comments and s[0] in self.comments):
                    continue
                data_row += 1
                if data_row == row:
                    return lineno, line.rstrip("\r\n")
        return -1, ""

    def raw_cell(self, text: str, pos: int) -> str | None:
        if self.comments:  # pandas drops everything after the comment character
            text = text.split(self.comments[0])[0]
        cells = text.split(",") if self.sep == "," else text.split()
        return cells[pos].strip() if pos < len(cells) else None

    def fail(self, row: int, field: str, pos: int, problem: str) -> DatasetError:
        lineno, text = self.line_of(row)
        raw = self.raw_cell(text, pos)
        if raw is None or raw == "":
            what = f"field '{field}' (column {pos + 1}) is missing"
        else:
            what = f"field '{field}' (column {pos + 1}) has value {raw!r}: {problem}"
        return DatasetError(f"{self.path}, line {lineno}: {what}")

    def column(self, key, field: str, kind: str) -> np.ndarray:
        """Numeric column ``key`` of the frame, validated; ``kind`` in id/time/int/float."""
        import pandas as pd

        pos = self.positions[field]
        ser = self.df[key]
        if ser.dtype.kind in "iu":
            vals = ser.to_numpy()
            if vals.dtype.kind == "u" and len(vals) and vals.max() > _INT64_MAX:  # pandas: uint64 above 2^63
                raise self.fail(int(np.flatnonzero(vals > _INT64_MAX)[0]), field, pos,
                                f"beyond int64 (largest {_INT64_MAX})")
        elif ser.dtype.kind in "fb":
            vals = ser.to_numpy(dtype=np.float64)
        else:
            num = pd.to_numeric(ser, errors="coerce")
            bad = num.isna() & ser.notna()
            if bad.any():
                raise self.fail(int(np.flatnonzero(bad.to_numpy())[0]), field, pos, "not a number")
            vals = num.to_numpy(dtype=np.float64)
        if vals.dtype.kind == "f":
            bad = ~np.isfinite(vals)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise self.fail(i, field, pos, "NaN/inf is not allowed")
            if kind in ("id", "int"):
                frac = vals != np.round(vals)
                if frac.any():
                    raise self.fail(int(np.flatnonzero(frac)[0]), field, pos, "not an integer")
                huge = np.abs(vals) >= 2.0**63  # float(_INT64_MAX) rounds to 2^63
                if huge.any():
                    raise self.fail(int(np.flatnonzero(huge)[0]), field, pos, f"beyond int64 (largest {_INT64_MAX})")
                inexact = np.abs(vals) > _FLOAT_EXACT
                if inexact.any():
                    raise self.fail(int(np.flatnonzero(inexact)[0]), field, pos,
                                    "read as a float above 2^53, which is not exact; write it as an integer")
                vals = vals.astype(np.int64)
        if kind == "id" and len(vals) and vals.min() < 0:
            raise self.fail(int(np.flatnonzero(vals < 0)[0]), field, pos, "negative node id")
        return vals

    def features(self, keys: list, first_pos: int) -> np.ndarray:
        import pandas as pd

        block = self.df[keys]
        if not all(block.dtypes.map(lambda d: d.kind in "iufb")):
            for j, key in enumerate(keys):
                ser = block[key]
                if ser.dtype.kind not in "iufb":
                    num = pd.to_numeric(ser, errors="coerce")
                    bad = num.isna() & ser.notna()
                    if bad.any():
                        raise self.fail(int(np.flatnonzero(bad.to_numpy())[0]), f"feature {j}", first_pos + j,
                                        "not a number")
            block = block.apply(pd.to_numeric, errors="coerce")
        arr = block.to_numpy(dtype=np.float64)
        bad = ~np.isfinite(arr)
        if bad.any():
            r, c = (int(x) for x in np.argwhere(bad)[0])
            raise self.fail(r, f"feature {c}", first_pos + c, "NaN/inf is not allowed in edge features")
        return arr.astype(np.float32)


def _read_csv(path: Path, *, header: bool, sep: str = ",", comments: str = "", usecols=None,
              expect_fields: int | None = None) -> pd.DataFrame:
    import pandas as pd

    kw = dict(header=0 if header else None, skipinitialspace=True)
    if sep == "ws":
        kw["sep"] = r"\s+"
    else:
        kw["sep"] = sep
        kw["engine"] = "c"
    if usecols is not None:
        kw["usecols"] = usecols
    if comments:
        kw["comment"] = comments[0]
    src = path
    if comments and len(comments) > 1:  # pandas takes one comment char: map the others to it
        with _open_text(path) as fh:
            text = fh.read()
        pattern = "(?m)^[ \t]*[" + re.escape(comments[1:]) + "]"
        src = io.StringIO(re.sub(pattern, comments[0], text))
    try:
        df = pd.read_csv(src, **kw)
        if header and not isinstance(df.index, pd.RangeIndex):  # more data fields than header names
            raise pd.errors.ParserError("data rows have more fields than the header")
        return df
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path}: empty dataset (the file has no data lines)") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise _locate_malformed(path, header, sep, comments, expect_fields, exc) from None


def _locate_malformed(path: Path, header: bool, sep: str, comments: str, expect: int | None,
                      exc: Exception) -> DatasetError:
    """Find the first line whose field count differs from the first data line's (error path)."""
    with _open_text(path) as fh:
        n_expect = expect
        for lineno, line in enumerate(fh, start=1):
            s = line.strip()
            if not s or (comments and s[0] in comments):
                continue
            if header and lineno == 1:
                continue
            n = len(s.split(",")) if sep == "," else len(s.split())
            if n_expect is None:
                n_expect = n
            elif n != n_expect and (sep == "," or n < n_expect):
                return DatasetError(
                    f"{path}, line {lineno}: malformed line: expected {n_expect} fields, found {n} ({s[:80]!r})"
                )
    return DatasetError(f"{path}: cannot parse the file ({exc})")


def _header_cells(path: Path) -> list[str]:
    with _open_text(path) as fh:
        line = fh.readline()
    return [c.strip().strip('"') for c in line.rstrip("\r\n").split(",")]


def _require(path: Path, header: list[str], wanted: list[str], fmt: str) -> dict[str, int]:
    pos = {}
    for w in wanted:
        if w not in header:
            missing = [x for x in wanted if x not in header]
            raise DatasetError(
                f"{path}, line 1: missing column(s) {', '.join(repr(m) for m in missing)} in the {fmt} header "
                f"(found columns: {', '.join(repr(h) for h in header)})"
            )
        pos[w] = header.index(w)
    return pos


def _check_nonempty(path: Path, df: pd.DataFrame) -> None:
    if len(df) == 0:
        raise DatasetError(f"{path}: empty dataset (no events)")


def _labels(vals: np.ndarray) -> np.ndarray:
    if vals.dtype.kind == "f" and np.all(vals == np.round(vals)):
        return vals.astype(np.int64)
    return vals


# ---------------------------------------------------------------------------------------------- TGL
def _load_tgl(csv: Path) -> TemporalGraph:
    """TGL ``edges.csv``; the ``.pt`` features next to it are used when the file is named ``edges.csv``."""
    if not csv.is_file():
        raise FileNotFoundError(f"dataset not found: {csv} (a TGL folder needs edges.csv)")
    folder = csv.parent
    is_tgl_folder = csv.name == "edges.csv"
    header = _header_cells(csv)
    time_col = next((c for c in ("time", "t", "ts") if c in header), "time")
    pos = _require(csv, header, ["src", "dst", time_col], "TGL edges.csv")
    for opt in ("int_roll", "ext_roll"):
        if opt in header:
            pos[opt] = header.index(opt)
    df = _read_csv(csv, header=True, expect_fields=len(header))
    _check_nonempty(csv, df)
    # pandas names an unnamed leading column "Unnamed: 0": address columns by position
    df.columns = [str(i) for i in range(df.shape[1])]
    tab = _Table(csv, df, ",", 1, positions={"src": pos["src"], "dst": pos["dst"], "time": pos[time_col],
                                             **{k: pos[k] for k in ("int_roll", "ext_roll") if k in pos}})
    src = tab.column(str(pos["src"]), "src", "id")
    dst = tab.column(str(pos["dst"]), "dst", "id")
    t = tab.column(str(pos[time_col]), "time", "time")
    ext_roll = tab.column(str(pos["ext_roll"]), "ext_roll", "int") if "ext_roll" in pos else None
    if ext_roll is not None:
        bad = (ext_roll < 0) | (ext_roll > 2)
        if bad.any():
            raise tab.fail(int(np.flatnonzero(bad)[0]), "ext_roll", pos["ext_roll"], "expected 0, 1 or 2")
    meta = {"format": "tgl"}
    if "int_roll" in pos:
        meta["int_roll"] = tab.column(str(pos["int_roll"]), "int_roll", "int")
    n = len(src)
    num_nodes = int(max(src.max(), dst.max())) + 1
    edge_feat = node_feat = None
    ef_path, nf_path = folder / "edge_features.pt", folder / "node_features.pt"
    if is_tgl_folder and ef_path.is_file():
        edge_feat = _check_feat(ef_path, _torch_load(ef_path), "edge features")
        if edge_feat.shape[0] != n:
            raise DatasetError(
                f"{ef_path}: edge features have {edge_feat.shape[0]} rows but {csv} has {n} events"
            )
    if is_tgl_folder and nf_path.is_file():
        node_feat = _check_feat(nf_path, _torch_load(nf_path), "node features")
        if node_feat.shape[0] < num_nodes:
            raise DatasetError(
                f"{nf_path}: node features have {node_feat.shape[0]} rows but node ids in {csv} go up to "
                f"{num_nodes - 1} (need at least {num_nodes} rows)"
            )
    return TemporalGraph(src=src, dst=dst, t=t, num_nodes=num_nodes, edge_feat=edge_feat, node_feat=node_feat,
                         ext_roll=ext_roll, name=folder.resolve().name if is_tgl_folder else _stem(csv),
                         source=str(csv), meta=meta)


def _torch_load(path: Path) -> np.ndarray:
    import torch  # lazily: only TGL folders with .pt features need it

    try:
        obj = torch.load(path, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad file
        raise DatasetError(f"{path}: cannot load torch tensor ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, np.ndarray):
        return obj
    if not isinstance(obj, torch.Tensor):
        raise DatasetError(f"{path}: expected a torch tensor, found {type(obj).__name__}")
    return obj.detach().to(torch.float32).numpy() if obj.is_floating_point() or obj.dtype == torch.bool \
        else obj.detach().numpy()


def _check_feat(path: Path, arr, what: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DatasetError(f"{path}: {what} must be 2-D, got shape {arr.shape}")
    if arr.dtype.kind not in "iufb":
        raise DatasetError(f"{path}: {what} are not numeric (dtype {arr.dtype})")
    arr = arr.astype(np.float32, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        r, c = (int(x) for x in np.argwhere(bad)[0])
        raise DatasetError(f"{path}: {what} row {r}, column {c} is {float(arr[r, c])!r} (NaN/inf not allowed)")
    return arr


# ---------------------------------------------------------------------------------------------- JODIE
def _load_jodie(path: Path) -> TemporalGraph:
    header = _header_cells(path)
    if len(header) < 4:
        raise DatasetError(
            f"{path}, line 1: JODIE header needs user_id,item_id,timestamp,state_label[,features...], "
            f"found {len(header)} column(s): {', '.join(repr(h) for h in header)}"
        )
    df = _read_jodie_body(path)
    _check_nonempty(path, df)
    if df.shape[1] < 4:
        raise DatasetError(
            f"{path}, line 2: expected at least 4 fields (user_id,item_id,timestamp,state_label), "
            f"found {df.shape[1]}"
        )
    names = ["user_id", "item_id", "timestamp", "state_label"]
    tab = _Table(path, df, ",", 1, positions={n: i for i, n in enumerate(names)})
    users = tab.column(0, "user_id", "id")
    items = tab.column(1, "item_id", "id")
    t = tab.column(2, "timestamp", "time")
    labels = _labels(tab.column(3, "state_label", "float"))
    feat_cols = list(range(4, df.shape[1]))
    edge_feat = tab.features(feat_cols, 4) if feat_cols else None
    num_users = int(users.max()) + 1
    num_items = int(items.max()) + 1
    # every item id is a candidate, unless the item ids are sparse (then densify keeps only the ones that occur)
    seen = np.unique(items)
    candidates = seen if num_items > SPARSE_FACTOR * len(seen) else np.arange(num_items, dtype=np.int64)
    return TemporalGraph(
        src=users, dst=items + num_users, t=t, num_nodes=num_users + num_items, edge_feat=edge_feat,
        labels=labels, dst_candidates=candidates + num_users,
        name=_stem(path), source=str(path),
        meta={"format": "jodie", "num_users": num_users, "num_items": num_items, "item_offset": num_users},
    )


def _read_jodie_body(path: Path) -> pd.DataFrame:
    """JODIE's header names 4 columns plus one for the whole feature list: read the body without it."""
    import pandas as pd

    kw = dict(header=None, skiprows=1, sep=",", engine="c")
    try:
        return pd.read_csv(path, **kw)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path}: empty dataset (no events)") from None
    except (pd.errors.ParserError, ValueError) as exc:
        with _open_text(path) as fh:
            fh.readline()
            n_expect = None
            for lineno, line in enumerate(fh, start=2):
                s = line.strip()
                if not s:
                    continue
                n = len(s.split(","))
                if n_expect is None:
                    n_expect = n
                elif n != n_expect:
                    raise DatasetError(
                        f"{path}, line {lineno}: malformed line: expected {n_expect} fields, found {n} ({s[:80]!r})"
                    ) from None
        raise DatasetError(f"{path}: cannot parse the file ({exc})") from None


# ---------------------------------------------------------------------------------------------- DyGLib
def _load_dyglib(path: Path) -> TemporalGraph:
    header = _header_cells(path)
    pos = _require(path, header, ["u", "i", "ts"], "DyGLib ml_*.csv")
    for opt in ("label", "idx"):
        if opt in header:
            pos[opt] = header.index(opt)
    df = _read_csv(path, header=True, expect_fields=len(header))
    _check_nonempty(path, df)
    df.columns = [str(i) for i in range(df.shape[1])]
    tab = _Table(path, df, ",", 1, positions=pos)
    src = tab.column(str(pos["u"]), "u", "id")
    dst = tab.column(str(pos["i"]), "i", "id")
    t = tab.column(str(pos["ts"]), "ts", "time")
    labels = _labels(tab.column(str(pos["label"]), "label", "float")) if "label" in pos else None
    n = len(src)
    if "idx" in pos:
        idx = tab.column(str(pos["idx"]), "idx", "id")
    else:
        idx = np.arange(1, n + 1, dtype=np.int64)
    num_nodes = int(max(src.max(), dst.max())) + 1
    m = re.fullmatch(r"ml_(.+)\.csv", path.name)
    dname = m.group(1) if m else _stem(path)
    edge_feat = node_feat = None
    ef_path = path.with_name(f"ml_{dname}.npy")
    nf_path = path.with_name(f"ml_{dname}_node.npy")
    if ef_path.is_file():
        ef = _check_feat(ef_path, _np_load(ef_path), "edge features")
        if ef.shape[0] != n + 1:
            raise DatasetError(
                f"{ef_path}: edge features have {ef.shape[0]} rows but {path} has {n} events "
                f"(expected {n + 1} rows: row 0 is DyGLib's padding row)"
            )
        bad = (idx < 1) | (idx >= ef.shape[0])
        if bad.any():
            raise tab.fail(int(np.flatnonzero(bad)[0]), "idx", pos.get("idx", 0),
                           f"edge index out of range 1..{ef.shape[0] - 1} of {ef_path.name}")
        edge_feat = ef[idx]
    if nf_path.is_file():
        node_feat = _check_feat(nf_path, _np_load(nf_path), "node features")
        if node_feat.shape[0] < num_nodes:
            raise DatasetError(
                f"{nf_path}: node features have {node_feat.shape[0]} rows but node ids in {path} go up to "
                f"{num_nodes - 1} (need at least {num_nodes} rows; row 0 is DyGLib's padding row)"
            )
    meta = {"format": "dyglib", "idx": idx}
    return TemporalGraph(src=src, dst=dst, t=t, num_nodes=num_nodes, edge_feat=edge_feat, node_feat=node_feat,
                         labels=labels, name=dname, source=str(path), meta=meta)


def _np_load(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot load numpy array ({exc})") from None


# ---------------------------------------------------------------------------------------------- SNAP text
def _load_snap(path: Path) -> TemporalGraph:
    first = _first_data_line(path)
    if first is None:
        raise DatasetError(f"{path}: empty dataset (the file has no data lines)")
    sep = "," if "," in first else "ws"
    ncols = len(first.split(",")) if sep == "," else len(first.split())
    if ncols < 3:
        lineno = _Table(path, None, sep, 0, comments="#%").line_of(0)[0]
        raise DatasetError(
            f"{path}, line {lineno}: malformed line: expected at least 3 columns 'src dst t', found {ncols} "
            f"({first[:80]!r})"
        )
    df = _read_csv(path, header=False, sep=sep, comments="#%", usecols=[0, 1, 2] if sep == "ws" else None,
                   expect_fields=None if sep == "ws" else ncols)
    _check_nonempty(path, df)
    tab = _Table(path, df, sep, 0, comments="#%", positions={"src": 0, "dst": 1, "t": 2})
    src = tab.column(df.columns[0], "src", "id")
    dst = tab.column(df.columns[1], "dst", "id")
    t = tab.column(df.columns[2], "t", "time")
    return TemporalGraph(src=src, dst=dst, t=t, num_nodes=int(max(src.max(), dst.max())) + 1,
                         name=_stem(path), source=str(path), meta={"format": "snap"})


# ---------------------------------------------------------------------------------------------- npz
_NPZ_FIELDS = ("src", "dst", "t", "edge_feat", "node_feat", "labels", "ext_roll", "dst_candidates", "num_nodes")


def _load_npz(path: Path) -> TemporalGraph:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - zip/format errors of all kinds
        raise DatasetError(f"{path}: cannot read .npz archive ({type(exc).__name__}: {exc})") from None
    missing = [k for k in ("src", "dst", "t") if k not in arrays]
    if missing:
        raise DatasetError(
            f"{path}: missing field(s) {', '.join(repr(m) for m in missing)} "
            f"(found arrays: {', '.join(repr(k) for k in arrays) or 'none'})"
        )
    if len(arrays["src"]) == 0:
        raise DatasetError(f"{path}: empty dataset (no events)")
    meta = {k: v for k, v in arrays.items() if k not in _NPZ_FIELDS}
    meta["format"] = "npz"
    num_nodes = int(arrays["num_nodes"]) if "num_nodes" in arrays else None
    for key in ("src", "dst"):
        if np.asarray(arrays[key]).ndim != 1:
            raise DatasetError(f"{path}: field '{key}' must be 1-D, got shape {np.shape(arrays[key])}")
    if num_nodes is None:
        try:
            num_nodes = int(max(np.max(arrays["src"]), np.max(arrays["dst"]))) + 1
        except (TypeError, ValueError):
            num_nodes = None  # let TemporalGraph report the non-numeric field
    for key, unit in (("edge_feat", "events"), ("node_feat", "nodes")):
        if key in arrays:
            arrays[key] = np.asarray(arrays[key])
    name = path.parent.resolve().name if path.name == "events.npz" else _stem(path)
    return TemporalGraph(
        src=arrays["src"], dst=arrays["dst"], t=arrays["t"], num_nodes=num_nodes,
        edge_feat=arrays.get("edge_feat"), node_feat=arrays.get("node_feat"), labels=arrays.get("labels"),
        ext_roll=arrays.get("ext_roll"), dst_candidates=arrays.get("dst_candidates"),
        name=name, source=str(path), meta=meta,
    )


# ---------------------------------------------------------------------------------------------- synthetic
def _load_synthetic(spec: str, name=None, **opts) -> TemporalGraph:
    from . import synthetic

    kw: dict = {}
    if spec.startswith("synthetic:"):
        body = spec[len("synthetic:"):]
        for item in filter(None, (x.strip() for x in body.split(","))):
            if "=" not in item:
                raise DatasetError(f"{spec}: synthetic option {item!r} must be key=value")
            key, value = (s.strip() for s in item.split("=", 1))
            kw[key] = _parse_value(spec, key, value)
    elif spec not in ("synthetic", ""):
        raise DatasetError(f"{spec}: synthetic spec must be 'synthetic' or 'synthetic:key=value,...'")
    kw.update(opts)
    known = set(synthetic.DEFAULTS)
    unknown = sorted(set(kw) - known)
    if unknown:
        raise DatasetError(f"{spec}: unknown synthetic option(s) {unknown}; known: {', '.join(sorted(known))}")
    for key, value in kw.items():
        default = synthetic.DEFAULTS[key]
        if isinstance(default, bool):
            kw[key] = bool(value)
        elif isinstance(default, int):
            if isinstance(value, float) and value != int(value):
                raise DatasetError(f"{spec}: synthetic option {key}={value!r} must be an integer")
            kw[key] = int(value)
    graph = synthetic.generate(**kw)
    if name is not None:
        graph.name = str(name)
    return graph


def _parse_value(spec: str, key: str, value: str):
    low = value.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        raise DatasetError(f"{spec}: synthetic option {key}={value!r} is not a number") from None


def _stem(path: Path) -> str:
    name = path.name
    for suf in (".gz", ".txt", ".tsv", ".csv", ".edges", ".edgelist", ".dat", ".el", ".npz"):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
    return name or path.name


# ---------------------------------------------------------------------------------------------- registry
def _file_in(folder: Path, name: str) -> Path | None:
    return folder / name if (folder / name).is_file() else None


def _one_ml_csv(folder: Path) -> Path | None:
    found = sorted(folder.glob("ml_*.csv"))
    return found[0] if len(found) == 1 else None


def _tgl_header(line: str) -> bool:
    cells = set(_header(line))
    return {"src", "dst"} <= cells and bool({"time", "t", "ts"} & cells)


def _jodie_header(line: str) -> bool:
    cells = _header(line)
    return len(cells) >= 2 and cells[0] in ("user_id", "user", "userid") and cells[1] in ("item_id", "item", "itemid")


def _dyglib_header(line: str) -> bool:
    return {"u", "i", "ts"} <= set(_header(line))


def _all_numbers(line: str) -> bool:
    tokens = line.replace(",", " ").split()
    return len(tokens) >= 2 and all(_is_number(x) for x in tokens[:3])


def _load_mspipe(marker: Path) -> TemporalGraph:
    from .fetch import load_converted

    return load_converted(marker.parent)


# detection tries the entries in this order; FORMATS is their names
REGISTRY: dict[str, Format] = {f.name: f for f in (
    Format("mspipe", "the suite's converted folder (mspipe.json + .npy arrays, written by 'datasets fetch'; "
           "features memory-mapped)", _load_mspipe, in_folder=lambda d: _file_in(d, "mspipe.json"),
           by_name=lambda p: p.name == "mspipe.json"),
    Format("tgl", "TGL folder with edges.csv (src,dst,time[,int_roll,ext_roll]) and optional "
           "edge_features.pt/node_features.pt", _load_tgl, suffixes=(".csv",),
           in_folder=lambda d: _file_in(d, "edges.csv"), by_name=lambda p: p.name == "edges.csv",
           by_first_line=_tgl_header),
    Format("jodie", "JODIE CSV (user_id,item_id,timestamp,state_label,features...)", _load_jodie,
           suffixes=(".csv",), by_first_line=_jodie_header),
    Format("dyglib", "DyGLib ml_NAME.csv (,u,i,ts,label,idx) with optional ml_NAME.npy/ml_NAME_node.npy",
           _load_dyglib, suffixes=(".csv",), in_folder=_one_ml_csv,
           by_name=lambda p: re.fullmatch(r"ml_.+\.csv", p.name) is not None, by_first_line=_dyglib_header),
    Format("snap", "whitespace text 'src dst t' (SNAP, # or % comments, optionally .gz)", _load_snap,
           suffixes=(".txt", ".tsv", ".edges", ".gz"), by_first_line=_all_numbers),
    Format("npz", ".npz with src,dst,t (or a folder holding events.npz)", _load_npz, suffixes=(".npz",),
           in_folder=lambda d: _file_in(d, "events.npz"), by_name=lambda p: p.suffix.lower() == ".npz"),
    Format("synthetic", "'synthetic[:key=value,...]'", _load_synthetic,
           by_spec=lambda spec: spec == "synthetic" or spec.startswith("synthetic:")),
)}
FORMATS = tuple(REGISTRY)
