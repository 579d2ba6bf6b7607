"""Data-parallel training on torch.distributed (docs/design.md §7): what one rank of a W-process run does differently.

- **Shares.** ``--batch-size B`` is the global batch; rank r trains the contiguous share :func:`share` of each
  global batch (sizes differ by at most one). Its negatives are the rank's slice of the global batch's draws
  (``stages.sample``), so they equal the single-process ones.
- **Gradients** (:meth:`DistRank.reduce_gradients`, in T): each rank scales its gradient of its mean loss by
  ``b_r / B`` and one all-reduce (sum) of one flat buffer gives every rank the gradient of the global batch's
  loss (and the global loss). Parameters that got no gradient on any rank keep none (Adam skips them, as in
  one process).
- **Memory** (:class:`ReplicatedStore`, in U): every rank keeps a full replica; U all-gathers the ranks' writes
  (sizes first, then one padded byte buffer) and applies them in rank order (= event order: the shares are
  contiguous) through the store's own latest-event-wins update, so every replica holds what one process
  writes for the whole batch, and commits one version per global batch.
- **k(i)** (:meth:`DistRank.propose_k` / :meth:`DistRank.agreed_k`): mspipe's proposals are max-reduced
  asynchronously: issued when the loader decides k(i), awaited after M(i)'s delayed start (:meth:`DistRank.agree_k`
  during the warm-up, when there is no delay).
- **Process groups**: one per issuing thread, each used in iteration order (``grad``: T, ``mem``: U and the
  evaluation's score gather, ``ctrl``: mspipe's k), so collectives from different threads never interleave on
  one group.
- **Communication timing**: every collective is timed (:data:`rules.COMM_STAGES`) and recorded, in the thread
  that issued it, like a stage of its iteration (:meth:`DistRank.flush`).
- **Failures**: a rank whose stage fails reports it (rank, stage, iteration) to its launcher and exits at once
  (:meth:`DistRank.fail`), which breaks its peers' pending collectives instead of leaving them to time out.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import sys
import threading
import time
import traceback
from typing import Callable

import torch
import torch.distributed as dist

from mspipe_bench.errors import UserError
from mspipe_bench.models.memory import MemoryStore, MemoryWrite
from mspipe_bench.stages.stages import StageError
from mspipe_bench.trainers.rules import COMM_STAGES, STAGES

# How long a collective (and the rendezvous) waits for a peer: a dead or hung peer fails the others after this
# long (a peer that exits breaks its connections at once; this bounds the case where it cannot).
COLLECTIVE_TIMEOUT_S = 45.0
GROUPS = ("grad", "mem", "ctrl")


def timeout() -> _dt.timedelta:
    return _dt.timedelta(seconds=COLLECTIVE_TIMEOUT_S)


def backend() -> str:
    """The process-group backend: gloo on CPU (nccl would be the one-line change for CUDA tensors)."""
    return "gloo"


def share(lo: int, hi: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous share of the events ``[lo, hi)``: sizes differ by at most one."""
    n = hi - lo
    return lo + n * rank // world, lo + n * (rank + 1) // world


def is_comm_error(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is a failed collective, e.g. because a peer died."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, dist.DistError) or (isinstance(exc, RuntimeError) and "gloo" in str(exc).lower()):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def report_failure(rank: int, world: int, exc: BaseException, report: Callable[[dict], None] | None) -> None:
    """Report ``exc`` as rank ``rank``'s failure (to ``report``, else stderr) and exit the process at once."""
    info = {"kind": "error", "rank": rank, "world_size": world,
            "message": str(exc) if isinstance(exc, StageError) else f"{type(exc).__name__}: {exc}",
            "traceback": "".join(traceback.format_exception(exc)), "comm": is_comm_error(exc),
            "user_error": isinstance(exc, UserError)}
    if report is not None:
        report(info)
    else:
        print(f"{info['traceback']}rank {rank} of {world} failed: {info['message']}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


# write fields in packing order: the 8-byte ones first, so every field starts aligned in the byte buffer
_PACK_ORDER = ("mem_ids", "mem_ts", "mail_ids", "mail_ts", "mem", "mail")


class DistRank:
    """One rank of a data-parallel run (the process group must be initialised). ``report`` tells the launcher
    about a failure (a dict: kind, rank, message, traceback, comm)."""

    def __init__(self, rank: int, world_size: int, report: Callable[[dict], None] | None = None):
        self.rank, self.world_size = rank, world_size
        self.groups = {name: dist.new_group(backend=backend(), timeout=timeout()) for name in GROUPS}
        self.report = report
        self.interrupted = False  # set when this rank was asked to stop (Ctrl-C): failures are then expected
        self._pending = threading.local()  # per thread: the collectives timed since the last flush
        self._params: tuple | None = None  # (model, its trainable parameters)

    # ------------------------------------------------------------------ set-up
    def attach(self, ctx) -> None:
        """Make ``ctx`` (built from the same seed on every rank) one rank of the run: shares, replicated
        store, the same initial parameters everywhere, per-rank dropout streams, a common timeline origin."""
        ctx.dist = self
        if ctx.model.has_memory:
            ctx.store = ReplicatedStore(ctx.store, self)
        with torch.no_grad():
            for p in ctx.model.state_dict().values():
                dist.broadcast(p, src=0)
        if self.rank:
            torch.manual_seed(ctx.seed * 7919 + self.rank)  # dropout masks differ between the ranks' shares
        dist.barrier()
        ctx.timeline.origin = time.perf_counter()

    def shard(self, b):
        """The rank's share of the global batch ``b`` (a Batch; modified and returned)."""
        b.global_lo, b.global_hi = b.lo, b.hi
        b.lo, b.hi = share(b.lo, b.hi, self.rank, self.world_size)
        return b

    # ------------------------------------------------------------------ timing
    def _timed(self, name: str, fn):
        t0 = time.perf_counter()
        out = fn()
        rows = self._pending.__dict__.setdefault("rows", [])
        rows.append((name, t0, time.perf_counter()))
        return out

    def flush(self, ctx, b) -> None:
        """Record the collectives this thread issued since the last flush as ``b``'s communication rows."""
        rows = getattr(self._pending, "rows", None)
        if not rows:
            return
        thread = threading.current_thread().name
        for name, t0, t1 in rows:
            b.times[name] = (t0, t1, thread)
            ctx.timeline.record(b, name, t0, t1, thread)
        rows.clear()

    # ------------------------------------------------------------------ collectives
    def reduce_gradients(self, model: torch.nn.Module, b, loss: torch.Tensor | None) -> float:
        """After backward on the rank's share: every parameter's gradient becomes the gradient of the global
        batch's loss; returns the global loss."""
        if self._params is None or self._params[0] is not model:
            self._params = (model, [p for p in model.parameters() if p.requires_grad])
        params = self._params[1]
        sizes = [p.numel() for p in params]
        total = sum(sizes)
        flat = torch.zeros(total + len(params) + 1)
        offset = 0
        for j, (p, n) in enumerate(zip(params, sizes)):
            if p.grad is not None:
                flat[offset : offset + n] = p.grad.reshape(-1)
                flat[total + j] = 1.0  # this rank has a gradient for parameter j
            offset += n
        if loss is not None:
            flat[-1] = loss
        flat[:total].mul_(b.size / b.global_size)
        flat[-1:].mul_(b.size / b.global_size)
        self._timed("AR", lambda: dist.all_reduce(flat, group=self.groups["grad"]))
        offset = 0
        for j, (p, n) in enumerate(zip(params, sizes)):
            p.grad = flat[offset : offset + n].view_as(p) if flat[total + j] > 0 else None
            offset += n
        return float(flat[-1])

    def propose_k(self, k: int):
        """mspipe: issue this rank's bound for the iteration to the agreement (all-reduce max) without waiting;
        :meth:`agreed_k` returns the bound every rank uses."""
        t = torch.tensor([k], dtype=torch.int64)
        return t, dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.groups["ctrl"], async_op=True)

    def agreed_k(self, pending) -> int:
        """The max of the ranks' proposals (waits for the agreement; the wait is timed as ``KA``)."""
        t, work = pending
        self._timed("KA", work.wait)
        return int(t)

    def agree_k(self, k: int) -> int:
        return self.agreed_k(self.propose_k(k))

    def all_gather_write(self, write: MemoryWrite) -> list[MemoryWrite]:
        """Every rank's memory write of this iteration, in rank order."""
        return self._timed("AG", lambda: self._all_gather_write(write))

    def _all_gather_write(self, write: MemoryWrite) -> list[MemoryWrite]:
        group, world = self.groups["mem"], self.world_size
        fields = write._asdict()
        sizes = torch.tensor([len(write.mem_ids), len(write.mail_ids)], dtype=torch.int64)
        all_sizes = [torch.zeros(2, dtype=torch.int64) for _ in range(world)]
        dist.all_gather(all_sizes, sizes, group=group)
        # per field: bytes per row, dtype, row shape (the same on every rank)
        layout = {k: (math.prod(fields[k].shape[1:]) * fields[k].element_size(), fields[k].dtype,
                      tuple(fields[k].shape[1:])) for k in _PACK_ORDER}
        rows_of = {"mem_ids": 0, "mem_ts": 0, "mem": 0, "mail_ids": 1, "mail_ts": 1, "mail": 1}

        def nbytes(sz: torch.Tensor) -> int:
            return sum(int(sz[rows_of[k]]) * layout[k][0] for k in _PACK_ORDER)

        width = max(nbytes(sz) for sz in all_sizes)
        buf = torch.zeros(width, dtype=torch.uint8)
        mine = torch.cat([fields[k].contiguous().reshape(-1).view(torch.uint8) for k in _PACK_ORDER])
        buf[: len(mine)] = mine
        out = [torch.empty(width, dtype=torch.uint8) for _ in range(world)]
        dist.all_gather(out, buf, group=group)
        writes = []
        for sz, data in zip(all_sizes, out):
            parts, at = {}, 0
            for k in _PACK_ORDER:
                row_bytes, dtype, shape = layout[k]
                n = int(sz[rows_of[k]])
                parts[k] = data[at : at + n * row_bytes].view(dtype).reshape(n, *shape)
                at += n * row_bytes
            writes.append(MemoryWrite(**parts))
        return writes

    def all_gather_scores(self, b, pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Evaluation: the scores of the whole global batch, in event order (every rank gets them)."""
        sizes = [hi - lo for lo, hi in (share(b.global_lo, b.global_hi, r, self.world_size)
                                        for r in range(self.world_size))]
        width = max(sizes)
        mine = torch.zeros(2, width)
        mine[0, : b.size], mine[1, : b.size] = pos, neg
        out = [torch.empty(2, width) for _ in sizes]
        self._timed("AG", lambda: dist.all_gather(out, mine, group=self.groups["mem"]))
        return (torch.cat([o[0, :n] for o, n in zip(out, sizes)]),
                torch.cat([o[1, :n] for o, n in zip(out, sizes)]))

    # ------------------------------------------------------------------ failures
    def fail(self, exc: BaseException) -> None:
        """A failure on this rank: report it and exit at once, so the peers' collectives with this rank fail
        now instead of timing out. Nothing happens while the run is being interrupted (then failing
        collectives are expected) or for an interrupt itself."""
        if self.interrupted or isinstance(exc, KeyboardInterrupt):
            return
        report_failure(self.rank, self.world_size, exc, self.report)

    # ------------------------------------------------------------------ the result
    def rank_summary(self, iterations: list, timeline_rows: list) -> dict:
        """What this rank contributes to the result: its stage and communication totals, per-iteration bound
        and observed staleness, and its timeline rows (threads named ``r<rank>/<thread>``)."""
        return {
            "rank": self.rank,
            "events": int(sum(r.events for r in iterations)),
            "stages": {s: float(sum(r.times[s][1] - r.times[s][0] for r in iterations)) for s in STAGES},
            "comm": {c: float(sum(r.times[c][1] - r.times[c][0] for r in iterations if c in r.times))
                     for c in COMM_STAGES},
            "k": [r.k for r in iterations],
            "observed_staleness": [r.observed_staleness for r in iterations],
            "timeline": [[*row[:6], f"r{self.rank}/{row[6]}"] for row in timeline_rows],
        }

    def complete_result(self, result: dict, iterations: list, timeline_rows: list, interrupted: bool) -> None:
        """Rank 0's result gets every rank's summary (``ranks``) and timeline; an interrupted run has only
        rank 0's (its peers are being stopped: no collective after an interrupt)."""
        mine = self.rank_summary(iterations, timeline_rows)
        if interrupted:
            summaries = [mine]
        else:
            summaries = [None] * self.world_size if self.rank == 0 else None
            dist.gather_object(mine, summaries, dst=0)
        if self.rank != 0:
            return
        rows = [row for s in summaries for row in s.pop("timeline")]
        result["timeline"]["rows"] = rows
        result["ranks"] = summaries
        comm = summaries[0]["comm"]
        seconds = result["metrics"].get("train_seconds") or 0.0
        result["metrics"]["comm_seconds"] = comm
        result["metrics"]["comm_share"] = sum(comm.values()) / seconds if seconds else 0.0


class ReplicatedStore:
    """A rank's full replica of the node memory: reads (fetch, snapshot, version, the mitigation pool) go to
    the local :class:`MemoryStore`; :meth:`update` first all-gathers every rank's write and applies them in rank
    order as one update (latest event wins, one committed version per global batch)."""

    def __init__(self, inner: MemoryStore, rank: DistRank):
        self.inner, self.rank = inner, rank

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def update(self, mem_ids, mem, mem_ts, mail_ids, mail, mail_ts, version: int | None = None) -> None:
        writes = self.rank.all_gather_write(MemoryWrite(mem_ids, mem, mem_ts, mail_ids, mail, mail_ts))
        merged = [torch.cat(column) for column in zip(*writes)]
        self.inner.update(*merged, version=version)
