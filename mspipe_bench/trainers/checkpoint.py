"""Checkpoints of a training run and resuming from them (docs/design.md §6, "Checkpoints").

``run --checkpoint-dir DIR [--checkpoint-every N]`` saves, after every N training iterations inside an epoch
(segment boundaries, where the executor has drained: every started stage finished, every U committed) and
after every epoch's validation, one checkpoint directory ``DIR/e<epoch>-i<iteration>`` (the position the run
continues from: the next iteration of that epoch; ``i0000000`` = the epoch has not started):

- ``state.pt`` — parameters, optimiser state, node memory and mailbox (``MemoryStore.snapshot`` plus the
  mitigation pool's unit vectors), the torch CPU generator (dropout), numpy's and Python's global generators,
  the stage-time estimator (mspipe's k), and the train loop's running state: position, best validation AP with
  the best epoch's parameters/optimiser/memory, training events and seconds, per-epoch and per-iteration
  records and the stage timeline so far. Only tensors and plain containers: loaded with
  ``torch.load(weights_only=True)``.
- ``meta.json`` — format, position, the run spec, the model config, a fingerprint of the dataset (sizes and a
  hash of sampled event arrays), the result path, and the size and SHA-256 of ``state.pt``.

Both are written into ``DIR/.tmp-<name>-<pid>`` (``meta.json`` last, files and directory fsynced) and the
directory is renamed to its final name: **a checkpoint is complete only when its final name exists and holds
``meta.json``**; anything else (temporary directories of a killed writer, a directory without ``meta.json``) is
ignored. The newest two complete checkpoints are kept.

The sampler's generators are per (seed, phase, epoch, iteration) and carry no state, so a run resumed at an
iteration boundary draws the same negatives and neighbours; ``sequential``, ``presample`` and
``fixed-staleness K=1`` end bit-identical to an uninterrupted run. The pipelined trainers restart their threads
at each segment boundary (the overlap across a boundary is lost, nothing else changes).

A checkpoint of another run (model, dataset, trainer or any other run option, model config), a dataset whose
fingerprint differs, or a damaged file is refused with a :class:`UserError` naming the file and what differs.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import random
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from mspipe_bench.data.fetch import sha256_file
from mspipe_bench.errors import UserError

FORMAT = "mspipe-bench/checkpoint/1"
STATE, META = "state.pt", "meta.json"
KEEP = 2  # complete checkpoints kept (the newest ones)
_NAME = re.compile(r"^e(\d{4,})-i(\d{7,})$")
_FINGERPRINT_SAMPLES = 1 << 16  # events hashed per array (evenly spread, first and last included)


@dataclasses.dataclass
class LoopState:
    """The train loop's running state besides its :class:`TrainResult` (``trainers/train.py``)."""

    epoch: int = 0  # the epoch to run next (or the one in progress)
    i: int = 0  # its next training iteration (0: the epoch has not started)
    epoch_seconds: float = 0.0  # training seconds of the epoch in progress so far
    best_ap: float = -1.0
    best_state: dict | None = None  # epoch, val metrics, model, optimizer, memory of the best epoch
    train_events: float = 0.0
    train_seconds: float = 0.0
    resumes: list = dataclasses.field(default_factory=list)  # where this run was resumed from, in order


def dataset_fingerprint(graph) -> dict:
    """Sizes of the dataset and a hash of an evenly spread sample of its event arrays and feature rows."""
    n = graph.num_events
    idx = np.unique(np.linspace(0, max(n - 1, 0), num=min(n, _FINGERPRINT_SAMPLES)).astype(np.int64))
    h = hashlib.sha256()
    for arr in (graph.src, graph.dst, graph.t):
        h.update(np.ascontiguousarray(np.asarray(arr)[idx]).tobytes())
    if graph.edge_feat is not None:
        h.update(np.ascontiguousarray(np.asarray(graph.edge_feat[idx[:: max(1, len(idx) // 64)]])).tobytes())
    if graph.node_feat is not None:
        nidx = np.unique(np.linspace(0, graph.num_nodes - 1, num=min(graph.num_nodes, 64)).astype(np.int64))
        h.update(np.ascontiguousarray(np.asarray(graph.node_feat[nidx])).tobytes())
    return {"num_events": n, "num_nodes": int(graph.num_nodes), "edge_feat_dim": graph.edge_feat_dim,
            "node_feat_dim": graph.node_feat_dim, "hash": h.hexdigest()[:16]}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def complete_checkpoints(directory: str | Path) -> list[Path]:
    """The complete checkpoints in ``directory``, oldest first (by position)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / META).is_file():
            found.append(((int(m.group(1)), int(m.group(2))), p))
    return [p for _, p in sorted(found)]


def _first_difference(a: dict, b: dict, prefix: str = "") -> str | None:
    """``key: a-value vs b-value`` of the first key (depth-first, sorted) whose values differ."""
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, "<missing>"), b.get(key, "<missing>")
        if isinstance(va, dict) and isinstance(vb, dict):
            diff = _first_difference(va, vb, f"{prefix}{key}.")
            if diff:
                return diff
        elif va != vb:
            return f"{prefix}{key} is {va!r} there, {vb!r} here"
    return None


class Checkpointer:
    """Writes a run's checkpoints into ``directory`` and, with ``resume``, restores the newest complete one.

    ``every``: checkpoint every N training iterations inside an epoch (None: after each epoch only). Call
    :meth:`bind` once the run's spec, model config and dataset are known (it checks a resumed checkpoint
    against them), then the train loop calls :meth:`restore` before its first epoch and :meth:`save` at
    segment and epoch boundaries."""

    def __init__(self, directory: str | Path, every: int | None = None, resume: bool = False,
                 out: str | None = None):
        if every is not None and every < 1:
            raise UserError(f"--checkpoint-every: must be >= 1, got {every}")
        self.directory = Path(directory)
        self.every = every
        self.out = out
        self.meta: dict | None = None  # the resumed checkpoint's meta.json
        self.path: Path | None = None  # the resumed checkpoint
        self._base: dict | None = None
        self.saved = 0
        self.save_seconds = 0.0
        self.loop: LoopState | None = None  # the train loop's state (set by restore)
        if resume:
            found = complete_checkpoints(self.directory)
            if not found:
                raise UserError(f"--resume {self.directory}: no complete checkpoint there"
                                + ("" if self.directory.is_dir() else " (no such directory)"))
            self.path = found[-1]
            self.meta = self._read_meta(self.path / META)
            if self.every is None:
                self.every = self.meta.get("every")
            if self.out is None:
                self.out = self.meta.get("out")
        elif complete_checkpoints(self.directory):
            raise UserError(f"--checkpoint-dir {self.directory}: already holds checkpoints "
                            f"({complete_checkpoints(self.directory)[-1].name}); continue them with --resume "
                            f"{self.directory} or give an empty directory")

    @staticmethod
    def _read_meta(path: Path) -> dict:
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"checkpoint {path}: unreadable ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise UserError(f"checkpoint {path}: format is {got!r}, expected {FORMAT!r}")
        return meta

    def spec_values(self) -> dict:
        """The (resolved) run spec the resumed checkpoint was written by."""
        return dict(self.meta["spec"])

    # ------------------------------------------------------------------ binding
    def bind(self, spec, cfg, graph) -> None:
        """Record what this run is; when resuming, refuse a checkpoint written by another run."""
        self._base = {
            "format": FORMAT,
            "spec": spec.resolved().model_dump(mode="json"),
            "key": spec.key(),
            "label": spec.label(),
            "model_config": cfg.to_dict(),
            "dataset": dataset_fingerprint(graph),
            "every": self.every,
            "out": None if self.out is None else str(self.out),
        }
        if self.meta is None:
            return
        where = self.path / META
        for field, what in (("spec", "run option"), ("model_config", "model config"),
                            ("dataset", "dataset fingerprint")):
            diff = _first_difference(self.meta.get(field) or {}, self._base[field])
            if diff:
                raise UserError(f"checkpoint {where}: written by another run: {what} {diff}")

    # ------------------------------------------------------------------ positions
    def segments(self, n: int, start: int) -> list[tuple[int, int]]:
        """Iteration ranges ``[a, b)`` of an epoch of ``n`` iterations from ``start``: cut at the multiples of
        ``every`` (a checkpoint is saved at each cut)."""
        if not self.every:
            return [(start, n)]
        cuts = [c for c in range(start + 1, n) if c % self.every == 0] + [n]
        return list(zip([start] + cuts[:-1], cuts))

    # ------------------------------------------------------------------ restore
    def restore(self, ctx, res, loop: LoopState, estimator) -> None:
        """Load the resumed checkpoint into the run's context, result, loop state and estimator (nothing
        without ``resume``)."""
        self.loop = loop
        if self.path is None:
            return
        from mspipe_bench.trainers.executor import IterationRecord

        state_path = self.path / STATE
        size = state_path.stat().st_size if state_path.is_file() else None
        if size != self.meta.get("state_bytes"):
            raise UserError(f"checkpoint {state_path}: size {size} bytes, expected {self.meta.get('state_bytes')} "
                            "(truncated or replaced)")
        if sha256_file(state_path) != self.meta.get("state_sha256"):
            raise UserError(f"checkpoint {state_path}: SHA-256 differs from meta.json (corrupt)")
        try:
            st = torch.load(state_path, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a damaged file
            raise UserError(f"checkpoint {state_path}: cannot be loaded ({type(exc).__name__}: {exc})") from None
        ctx.model.load_state_dict(st["model"])
        ctx.optimizer.load_state_dict(st["optimizer"])
        ctx.store.restore(st["memory"])
        ctx.version_base = st["version_base"]
        torch.set_rng_state(st["torch_rng"])
        np.random.set_state(tuple(st["numpy_rng"][:1]) + (np.asarray(st["numpy_rng"][1], dtype=np.uint32),)
                            + tuple(st["numpy_rng"][2:]))
        random.setstate(st["python_rng"])
        estimator.tau.update(st["estimator"]["tau"])
        estimator.dev.update(st["estimator"]["dev"])
        for f in dataclasses.fields(LoopState):
            setattr(loop, f.name, st["loop"][f.name])
        res.epochs[:] = st["epochs"]
        res.iterations[:] = [IterationRecord(**{**r, "times": {k: tuple(v) for k, v in r["times"].items()}})
                             for r in st["iterations"]]
        # the timeline continues where the checkpointed one stopped (its times are seconds from the run start)
        ctx.timeline.rows[:] = [tuple(r) for r in st["timeline"]]
        ctx.timeline.origin = time.perf_counter() - st["elapsed"]
        loop.resumes.append({"checkpoint": str(self.path), "epoch": loop.epoch, "iteration": loop.i,
                             "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})

    # ------------------------------------------------------------------ save
    def save(self, ctx, res, loop: LoopState, estimator) -> Path:
        """Write a checkpoint of the run at ``(loop.epoch, loop.i)`` (atomically) and drop all but the newest
        :data:`KEEP`."""
        t0 = time.perf_counter()
        name = f"e{loop.epoch:04d}-i{loop.i:07d}"
        np_state = np.random.get_state()
        state = {
            "model": ctx.model.state_dict(),
            "optimizer": ctx.optimizer.state_dict(),
            "memory": ctx.store.snapshot(),
            "version_base": ctx.version_base,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python_rng": random.getstate(),
            "estimator": {"tau": dict(estimator.tau), "dev": dict(estimator.dev)},
            "loop": {f.name: getattr(loop, f.name) for f in dataclasses.fields(LoopState)},
            "epochs": res.epochs,
            "iterations": [dataclasses.asdict(r) for r in res.iterations],
            "timeline": [list(r) for r in ctx.timeline.rows],
            "elapsed": time.perf_counter() - ctx.timeline.origin,
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".tmp-{name}-{os.getpid()}"
        final = self.directory / name
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            with open(tmp / STATE, "wb") as fh:
                torch.save(state, fh)
                fh.flush()
                os.fsync(fh.fileno())
            meta = {**self._base, "epoch": loop.epoch, "iteration": loop.i,
                    "saved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "state_bytes": (tmp / STATE).stat().st_size, "state_sha256": sha256_file(tmp / STATE)}
            with open(tmp / META, "w") as fh:
                json.dump(meta, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            _fsync_dir(tmp)
            if final.exists():  # the same position written again (a resumed run repeating a save)
                shutil.rmtree(final)
            os.rename(tmp, final)
            _fsync_dir(self.directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in complete_checkpoints(self.directory)[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
        self.saved += 1
        self.save_seconds += time.perf_counter() - t0
        return final

    def record(self) -> dict:
        """What the result says about checkpoints: where, how often, and where the run was resumed from."""
        return {"dir": str(self.directory), "every": self.every, "saved": self.saved,
                "save_seconds": self.save_seconds, "resumed": list(self.loop.resumes if self.loop else [])}
