"""The one in-memory representation of a continuous-time dynamic graph.

A :class:`TemporalGraph` is a chronological stream of events ``(src[i], dst[i], t[i])`` with optional edge
features ``[E, d_e]``, node features ``[N, d_n]`` and per-event labels. Node ids live in one id space
``0 .. num_nodes-1`` (not necessarily dense: ids without events are nodes that never interact).
Timestamps are ``float64`` (exact for integer unix seconds).

Every table of per-node state (memory, mailbox, the sampler's index) has ``num_nodes`` rows, so a file whose
ids are sparse (a few nodes with ids up to 2^40) cannot be used as it is: :meth:`TemporalGraph.densify`
renumbers the ids to ``0 .. n-1`` when more than half of the id space is unused (``num_nodes >``
:data:`SPARSE_FACTOR` ``x`` the distinct ids), keeping the increasing order of the original ids and the
original id of each node in ``node_ids``. Afterwards the id space is at most twice the number of nodes that
occur; ids that are dense but do not start at 0 (CollegeMsg's ``1..1899``, DyGLib's padding id 0) stay as
they are.

The train/val/test split is chronological by event position: three contiguous index ranges.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from mspipe_bench.errors import UserError


class DatasetError(UserError):
    """Bad dataset input. The message names the file, the field/line and the offending value."""


# ids are renumbered when the id space is larger than this many times the number of distinct ids
SPARSE_FACTOR = 2
_INT64_MAX = np.iinfo(np.int64).max
_FLOAT_EXACT = 2.0**53  # larger float ids may have been rounded when they were written


@dataclass(frozen=True)
class Split:
    """Contiguous chronological event ranges: train ``[0, train_end)``, val ``[train_end, val_end)``,
    test ``[val_end, num_events)``."""

    train_end: int
    val_end: int
    num_events: int

    @property
    def train(self) -> range:
        return range(0, self.train_end)

    @property
    def val(self) -> range:
        return range(self.train_end, self.val_end)

    @property
    def test(self) -> range:
        return range(self.val_end, self.num_events)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


@dataclass
class TemporalGraph:
    src: np.ndarray  # int64 [E]
    dst: np.ndarray  # int64 [E]
    t: np.ndarray  # float64 [E], non-decreasing
    num_nodes: int
    edge_feat: np.ndarray | None = None  # float32 [E, d_e]
    node_feat: np.ndarray | None = None  # float32 [N, d_n]
    labels: np.ndarray | None = None  # [E]
    ext_roll: np.ndarray | None = None  # int [E]: 0 train, 1 val, 2 test (TGL's column)
    dst_candidates: np.ndarray | None = None  # int64 ids negatives are drawn from (None: all nodes)
    node_ids: np.ndarray | None = None  # int64 [N]: the file's id of each node after densify (None: same ids)
    name: str = "graph"
    source: str = "<memory>"  # file or generator spec it came from, used in error messages
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check shapes, dtypes and values; stably sort unsorted timestamps (with a warning).

        Raises :class:`DatasetError` naming ``self.source``, the field and the first offending value.
        """
        where = self.source
        self.src = _as_ids(self.src, where, "src")
        self.dst = _as_ids(self.dst, where, "dst")
        t = np.asarray(self.t)
        if t.dtype.kind not in "iuf":
            raise DatasetError(f"{where}: field 't' is not numeric (dtype {t.dtype})")
        self.t = t.astype(np.float64, copy=False)
        n = len(self.src)
        if n == 0:
            raise DatasetError(f"{where}: empty dataset (no events)")
        for name, arr in (("dst", self.dst), ("t", self.t)):
            if arr.ndim != 1 or len(arr) != n:
                raise DatasetError(f"{where}: field '{name}' has shape {arr.shape}, expected ({n},) like 'src'")
        bad = ~np.isfinite(self.t)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DatasetError(f"{where}: timestamp of event {i} is {self.t[i]!r} (NaN/inf timestamps are not allowed)")
        max_id = int(max(self.src.max(), self.dst.max()))
        if self.num_nodes is None:
            self.num_nodes = max_id + 1
        self.num_nodes = int(self.num_nodes)
        if max_id >= self.num_nodes:
            fld = "src" if self.src.max() == max_id else "dst"
            raise DatasetError(f"{where}: field '{fld}' has node id {max_id} >= num_nodes {self.num_nodes}")
        if self.edge_feat is not None:
            self.edge_feat = _as_features(self.edge_feat, n, where, "edge features", "events")
        if self.node_feat is not None:
            if self.node_feat.ndim == 2 and self.node_feat.shape[0] > self.num_nodes:
                self.num_nodes = int(self.node_feat.shape[0])
            self.node_feat = _as_features(self.node_feat, self.num_nodes, where, "node features", "nodes")
        if self.labels is not None:
            self.labels = np.asarray(self.labels)
            if len(self.labels) != n:
                raise DatasetError(f"{where}: labels have {len(self.labels)} rows but there are {n} events")
        if self.ext_roll is not None:
            self.ext_roll = np.asarray(self.ext_roll).astype(np.int64)
            if len(self.ext_roll) != n:
                raise DatasetError(f"{where}: ext_roll has {len(self.ext_roll)} rows but there are {n} events")
            bad = (self.ext_roll < 0) | (self.ext_roll > 2)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DatasetError(f"{where}: ext_roll of event {i} is {self.ext_roll[i]} (expected 0, 1 or 2)")
        if self.dst_candidates is not None:
            self.dst_candidates = _as_ids(self.dst_candidates, where, "dst_candidates")
            if len(self.dst_candidates) and self.dst_candidates.max() >= self.num_nodes:
                raise DatasetError(f"{where}: field 'dst_candidates' has node id {self.dst_candidates.max()} >= "
                                   f"num_nodes {self.num_nodes}")
        elif self.meta.get("infer_bipartite", True):
            # sources and destinations never overlap: a bipartite graph; negatives come from the destinations
            dst_ids = np.unique(self.dst)
            if not np.isin(dst_ids, self.src, assume_unique=False).any():
                self.dst_candidates = dst_ids
        if np.any(np.diff(self.t) < 0):
            i = int(np.flatnonzero(np.diff(self.t) < 0)[0])
            warnings.warn(
                f"{where}: timestamps are not sorted (event {i + 1} at t={self.t[i + 1]!r} comes after "
                f"t={self.t[i]!r}); events were stably sorted by time (features and labels follow)",
                stacklevel=3,
            )
            self._reorder(np.argsort(self.t, kind="stable"))

    def densify(self) -> bool:
        """Renumber sparse node ids to ``0 .. n-1`` (see the module docstring); True when renumbered.

        The distinct ids are those of the events and of ``dst_candidates``; node features, ``dst_candidates``
        and ``node_ids`` follow the renumbering (nodes that occur nowhere are dropped with their features).
        """
        parts = [self.src, self.dst] + ([self.dst_candidates] if self.dst_candidates is not None else [])
        used = np.unique(np.concatenate(parts))
        if self.num_nodes <= SPARSE_FACTOR * len(used):
            return False
        self.src = np.searchsorted(used, self.src).astype(np.int64)
        self.dst = np.searchsorted(used, self.dst).astype(np.int64)
        if self.dst_candidates is not None:
            self.dst_candidates = np.searchsorted(used, self.dst_candidates).astype(np.int64)
        if self.node_feat is not None:
            self.node_feat = self.node_feat[used]
        self.node_ids = used if self.node_ids is None else self.node_ids[used]
        self.num_nodes = int(len(used))
        return True

    def _reorder(self, order: np.ndarray) -> None:
        self.src, self.dst, self.t = self.src[order], self.dst[order], self.t[order]
        if self.edge_feat is not None:
            self.edge_feat = self.edge_feat[order]
        if self.labels is not None:
            self.labels = self.labels[order]
        if self.ext_roll is not None:
            self.ext_roll = self.ext_roll[order]

    # ------------------------------------------------------------------ accessors
    @property
    def num_events(self) -> int:
        return int(len(self.src))

    @property
    def edge_feat_dim(self) -> int:
        return 0 if self.edge_feat is None else int(self.edge_feat.shape[1])

    @property
    def node_feat_dim(self) -> int:
        return 0 if self.node_feat is None else int(self.node_feat.shape[1])

    def split(self, val_ratio: float = 0.15, test_ratio: float = 0.15) -> Split:
        """Chronological split. Uses ``ext_roll`` when present, else event-position ratios."""
        n = self.num_events
        if self.ext_roll is not None:
            if np.any(np.diff(self.ext_roll) < 0):
                i = int(np.flatnonzero(np.diff(self.ext_roll) < 0)[0])
                raise DatasetError(
                    f"{self.source}: ext_roll is not chronological (event {i + 1} has ext_roll "
                    f"{self.ext_roll[i + 1]} after {self.ext_roll[i]})"
                )
            train_end = int(np.searchsorted(self.ext_roll, 1, side="left"))
            val_end = int(np.searchsorted(self.ext_roll, 2, side="left"))
        else:
            for name, r in (("val_ratio", val_ratio), ("test_ratio", test_ratio)):
                if not (0.0 <= r < 1.0):
                    raise DatasetError(f"{self.source}: split {name}={r!r} must be in [0, 1)")
            if val_ratio + test_ratio >= 1.0:
                raise DatasetError(
                    f"{self.source}: split val_ratio + test_ratio = {val_ratio + test_ratio!r} leaves no training events"
                )
            train_end = int(round(n * (1.0 - val_ratio - test_ratio)))
            val_end = int(round(n * (1.0 - test_ratio)))
        split = Split(train_end, val_end, n)
        for part, size in split.sizes().items():
            if size == 0:
                raise DatasetError(
                    f"{self.source}: the split leaves the {part} part empty "
                    f"({n} events, val_ratio={val_ratio}, test_ratio={test_ratio})"
                )
        return split

    def summary(self, val_ratio: float = 0.15, test_ratio: float = 0.15) -> dict:
        sizes = self.split(val_ratio, test_ratio).sizes()
        return {
            "name": self.name,
            "source": self.source,
            "num_events": self.num_events,
            "num_nodes": self.num_nodes,
            "t_min": float(self.t[0]),
            "t_max": float(self.t[-1]),
            "edge_feat_dim": self.edge_feat_dim,
            "node_feat_dim": self.node_feat_dim,
            "has_labels": self.labels is not None,
            "bipartite": self.dst_candidates is not None,
            # ids renumbered by densify; the largest id in the file (num_nodes - 1 or less otherwise)
            "ids_remapped": self.node_ids is not None,
            "max_file_id": int(self.node_ids[-1]) if self.node_ids is not None
            else int(max(self.src.max(), self.dst.max())),
            "train_events": sizes["train"],
            "val_events": sizes["val"],
            "test_events": sizes["test"],
        }


def _as_ids(arr, where: str, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            i = int(np.flatnonzero(~np.isfinite(arr))[0])
            raise DatasetError(f"{where}: field '{name}' has non-finite node id {arr[i]!r} at row {i}")
        if np.any(arr != np.round(arr)):
            i = int(np.flatnonzero(arr != np.round(arr))[0])
            raise DatasetError(f"{where}: field '{name}' has non-integer node id {arr[i]!r} at row {i}")
        if len(arr) and np.abs(arr).max() > _FLOAT_EXACT:
            i = int(np.flatnonzero(np.abs(arr) > _FLOAT_EXACT)[0])
            raise DatasetError(f"{where}: field '{name}' has node id {arr[i]!r} at row {i}, stored as a float "
                               f"above 2^53 (not exact); store node ids as integers")
    elif arr.dtype.kind == "u" and len(arr) and arr.max() > _INT64_MAX:
        i = int(np.flatnonzero(arr > _INT64_MAX)[0])
        raise DatasetError(f"{where}: field '{name}' has node id {int(arr[i])} at row {i}, beyond int64 "
                           f"(largest {_INT64_MAX})")
    elif arr.dtype.kind not in "iu":
        raise DatasetError(f"{where}: field '{name}' is not numeric (dtype {arr.dtype})")
    arr = arr.astype(np.int64, copy=False)
    if arr.ndim != 1:
        raise DatasetError(f"{where}: field '{name}' must be 1-D, got shape {arr.shape}")
    if len(arr) and arr.min() < 0:
        i = int(np.flatnonzero(arr < 0)[0])
        raise DatasetError(f"{where}: field '{name}' has negative node id {arr[i]} at row {i}")
    return arr


def _as_features(arr, rows: int, where: str, what: str, unit: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DatasetError(f"{where}: {what} must be 2-D, got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise DatasetError(f"{where}: {what} are not numeric (dtype {arr.dtype})")
    if arr.shape[0] != rows:
        raise DatasetError(f"{where}: {what} have {arr.shape[0]} rows but there are {rows} {unit}")
    arr = arr.astype(np.float32, copy=False)
    # checked in blocks of rows: a memory-mapped table is read once, never held whole or doubled in memory
    step = max(1, (32 << 20) // max(1, arr.shape[1] * arr.itemsize))
    for lo in range(0, arr.shape[0], step):
        bad = ~np.isfinite(arr[lo:lo + step])
        if bad.any():
            r, c = np.argwhere(bad)[0]
            r += lo
            raise DatasetError(f"{where}: {what} row {r}, column {c} is {arr[r, c]!r} (NaN/inf not allowed)")
    return arr
