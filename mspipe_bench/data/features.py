"""Feature tables for stage F: seeded random features and memory-mapped ``.npy`` tables.

``--edge-features`` / ``--node-features`` take a :data:`FEATURE_SPEC_HELP` value:

- unset: the dataset's own features (if it has any);
- ``none``: drop them (F gathers nothing);
- ``random:D[:SEED]``: a ``[rows, D]`` float32 table of standard-normal values (seed 0 unless given),
  TGL's convention for datasets without features (``--rand_edge_features`` for MOOC and LASTFM). The values
  depend on the seed, the kind (edge/node), the row count and ``D`` only -- not on the run's seed, so every
  run on a dataset sees the same features. Rows are generated in fixed blocks of :data:`BLOCK_ROWS`, block
  ``j`` from ``default_rng([seed, kind, j])``, so a table is produced block by block in bounded memory.

Tables larger than :data:`MMAP_MIN_BYTES` are written once to the data cache
(``$MSPIPE_DATA/features/``, see :func:`data_home`) and memory-mapped (``np.load(mmap_mode='c')``: a
private, copy-on-write map that torch can wrap without copying; nothing ever writes to it); F's
``index_select`` then gathers only the rows a batch needs from the map. Smaller tables stay in memory.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np

from mspipe_bench.errors import UserError

FEATURE_SPEC_HELP = "none | random:D[:SEED] (unset: the dataset's own)"
BLOCK_ROWS = 65536  # rows per generator block (part of the definition of the values: do not change)
MMAP_MIN_BYTES = 64 << 20  # random tables at least this large are cached on disk and memory-mapped
_KIND_CODE = {"edge": 1, "node": 2}
_SPEC = re.compile(r"random:(\d+)(?::(\d+))?")


def data_home() -> Path:
    """The data cache: ``$MSPIPE_DATA`` or ``~/.cache/mspipe-bench``."""
    return Path(os.environ.get("MSPIPE_DATA") or "~/.cache/mspipe-bench").expanduser()


def parse_spec(text: str | None, option: str = "--edge-features") -> tuple[str, int, int] | None:
    """``None`` (keep the dataset's), ``("none", 0, 0)`` or ``("random", D, seed)``; UserError otherwise."""
    if text is None:
        return None
    if text == "none":
        return ("none", 0, 0)
    m = _SPEC.fullmatch(text)
    if m is None or int(m.group(1)) < 1:
        raise UserError(f"{option}: {text!r} is not {FEATURE_SPEC_HELP.split(' (')[0]} (D >= 1)")
    return ("random", int(m.group(1)), int(m.group(2) or 0))


def random_block(kind: str, j: int, rows: int, dim: int, seed: int) -> np.ndarray:
    """Rows ``[j * BLOCK_ROWS, min((j+1) * BLOCK_ROWS, rows))`` of the random table."""
    n = min(BLOCK_ROWS, rows - j * BLOCK_ROWS)
    rng = np.random.default_rng([seed, _KIND_CODE[kind], j])
    return rng.standard_normal((n, dim), dtype=np.float32)


def random_table(kind: str, rows: int, dim: int, seed: int = 0, mmap_min_bytes: int | None = None) -> np.ndarray:
    """The seeded random ``[rows, dim]`` float32 table (see the module docstring); memory-mapped from the
    cache when it has at least ``mmap_min_bytes`` (default :data:`MMAP_MIN_BYTES`)."""
    limit = MMAP_MIN_BYTES if mmap_min_bytes is None else mmap_min_bytes
    blocks = range((rows + BLOCK_ROWS - 1) // BLOCK_ROWS)
    if rows * dim * 4 < limit:
        return np.concatenate([random_block(kind, j, rows, dim, seed) for j in blocks]) if rows else \
            np.zeros((0, dim), np.float32)
    path = data_home() / "features" / f"random-{kind}-{rows}x{dim}-seed{seed}.npy"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows, dim))
            for j in blocks:
                out[j * BLOCK_ROWS: (j + 1) * BLOCK_ROWS] = random_block(kind, j, rows, dim, seed)
            out.flush()
            del out
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return load_table(path)


def load_table(path: str | Path) -> np.ndarray:
    """A ``.npy`` feature table, memory-mapped (copy-on-write, so torch wraps it without a copy or a
    read-only warning; nothing writes to it)."""
    return np.load(path, mmap_mode="c", allow_pickle=False)


def apply(graph, edge: str | None = None, node: str | None = None) -> None:
    """Replace ``graph``'s edge/node features as ``--edge-features`` / ``--node-features`` say (in place).
    Random tables are not re-validated (they are finite by construction)."""
    e = parse_spec(edge, "--edge-features")
    n = parse_spec(node, "--node-features")
    if e is not None:
        graph.edge_feat = None if e[0] == "none" else random_table("edge", graph.num_events, e[1], e[2])
        graph.meta["edge_features"] = edge
    if n is not None:
        graph.node_feat = None if n[0] == "none" else random_table("node", graph.num_nodes, n[1], n[2])
        graph.meta["node_features"] = node


def is_mapped(arr) -> bool:
    """True when ``arr`` (or the array it views) is a memory map."""
    while arr is not None:
        if isinstance(arr, np.memmap):
            return True
        arr = getattr(arr, "base", None)
    return False
