"""The node-memory store: dense tensors for memory ``[N, d_mem]``, memory time ``[N]``, mailbox
``[N, m, d_mail]``, mail times ``[N, m]`` and a mail-valid mask ``[N, m]``.

A mailbox of ``m > 1`` slots is a ring buffer: a new mail overwrites the node's oldest slot
(``mail_next``), so an update moves one mail per node, never the whole mailbox. Slot order carries no
meaning; consumers use the mail times and the mask (APAN's attention is permutation-invariant).

All reads and writes go through :meth:`fetch` and :meth:`update` under one lock, so the store can be used
from the pipelined trainers' loader and updater threads while the trainer thread computes. ``version`` counts
committed updates: iteration ``i``'s U commits with ``version = i + 1``, so a fetch knows which updates it
sees (observed staleness). The tensors can be moved to shared memory (``share_memory_``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import NamedTuple

import torch


@dataclass
class MemoryRows:
    """A fetch result: rows of the store for ``ids`` (unique node ids)."""

    ids: torch.Tensor
    mem: torch.Tensor  # [U, d_mem] float32
    mem_ts: torch.Tensor  # [U] float64
    mail: torch.Tensor  # [U, m, d_mail] float32
    mail_ts: torch.Tensor  # [U, m] float64
    mail_mask: torch.Tensor  # [U, m] bool
    touched: torch.Tensor  # [U] bool: memory has been written at least once
    version: int  # number of committed updates when fetched


class MemoryWrite(NamedTuple):
    """What one U writes (the arguments of :meth:`MemoryStore.update`, rows in chronological order)."""

    mem_ids: torch.Tensor  # [R] node ids whose memory is written
    mem: torch.Tensor  # [R, d_mem]
    mem_ts: torch.Tensor  # [R] float64
    mail_ids: torch.Tensor  # [Q] node ids receiving a mail
    mail: torch.Tensor  # [Q, d_mail]
    mail_ts: torch.Tensor  # [Q] float64


@torch.jit.script
def last_occurrence(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique ids (sorted) and, for each, the position of its last occurrence in ``ids``: "the latest
    wins" when rows are in chronological order. Deterministic (no scatter races)."""
    uniq, inv = torch.unique(ids, return_inverse=True)
    pos = torch.arange(ids.shape[0], dtype=torch.int64)
    last = torch.full((uniq.shape[0],), -1, dtype=torch.int64).scatter_reduce_(0, inv, pos, reduce="amax")
    return uniq, last


# The store's tensor work (M's gather, U's selection and writes, the id check) runs as TorchScript calls: the
# interpreter releases the GIL for a whole call, so a loader or updater thread no longer re-takes it for each
# op while the trainer thread needs it between its own (same aten ops, same results).
@torch.jit.script
def _latest_rows(mem_ids: torch.Tensor, mem: torch.Tensor, mem_ts: torch.Tensor, mail_ids: torch.Tensor,
                 mail: torch.Tensor, mail_ts: torch.Tensor):
    u_mem, last_mem = last_occurrence(mem_ids)
    u_mail, last_mail = last_occurrence(mail_ids)
    new_mem = mem.index_select(0, last_mem)
    return (u_mem, new_mem, mem_ts.index_select(0, last_mem), u_mail, mail.index_select(0, last_mail),
            mail_ts.index_select(0, last_mail), torch.nn.functional.normalize(new_mem, dim=1))


@torch.jit.script
def _gather_rows(ids: torch.Tensor, mem: torch.Tensor, mem_ts: torch.Tensor, mail: torch.Tensor,
                 mail_ts: torch.Tensor, mail_mask: torch.Tensor, touched: torch.Tensor):
    return (mem.index_select(0, ids), mem_ts.index_select(0, ids), mail.index_select(0, ids),
            mail_ts.index_select(0, ids), mail_mask.index_select(0, ids), touched.index_select(0, ids))


@torch.jit.script
def _first_out_of_range(ids: torch.Tensor, num_nodes: int) -> tuple[bool, int]:
    if ids.numel() == 0 or (int(ids.min()) >= 0 and int(ids.max()) < num_nodes):
        return False, 0
    return True, int(ids[(ids < 0) | (ids >= num_nodes)][0])


@torch.jit.script
def _write_rows(st_mem: torch.Tensor, st_mem_ts: torch.Tensor, st_touched: torch.Tensor, st_mail: torch.Tensor,
                st_mail_ts: torch.Tensor, st_mail_mask: torch.Tensor, st_mail_next: torch.Tensor,
                u_mem: torch.Tensor, new_mem: torch.Tensor, new_mem_ts: torch.Tensor, u_mail: torch.Tensor,
                new_mail: torch.Tensor, new_mail_ts: torch.Tensor, mailbox_size: int) -> None:
    st_mem.index_copy_(0, u_mem, new_mem)
    st_mem_ts.index_copy_(0, u_mem, new_mem_ts)
    st_touched.index_fill_(0, u_mem, 1)  # bool tensors: 1 is True (TorchScript has no bool scalar here)
    if mailbox_size == 1:
        st_mail.index_copy_(0, u_mail, new_mail.unsqueeze(1))
        st_mail_ts.index_copy_(0, u_mail, new_mail_ts.unsqueeze(1))
        st_mail_mask.index_fill_(0, u_mail, 1)
    else:
        slot = st_mail_next.index_select(0, u_mail)
        st_mail.index_put_((u_mail, slot), new_mail)
        st_mail_ts.index_put_((u_mail, slot), new_mail_ts)
        st_mail_mask.index_put_((u_mail, slot), torch.ones(u_mail.shape[0], dtype=torch.bool))
        st_mail_next.index_copy_(0, u_mail, torch.remainder(slot + 1, mailbox_size))


class MemoryStore:
    def __init__(self, num_nodes: int, dim: int, mail_dim: int, mailbox_size: int = 1):
        self.num_nodes, self.dim, self.mail_dim, self.mailbox_size = num_nodes, dim, mail_dim, mailbox_size
        self.mem = torch.zeros(num_nodes, dim)
        self.mem_ts = torch.zeros(num_nodes, dtype=torch.float64)
        self.mail = torch.zeros(num_nodes, mailbox_size, mail_dim)
        self.mail_ts = torch.zeros(num_nodes, mailbox_size, dtype=torch.float64)
        self.mail_mask = torch.zeros(num_nodes, mailbox_size, dtype=torch.bool)
        self.touched = torch.zeros(num_nodes, dtype=torch.bool)
        self.mail_next = torch.zeros(num_nodes, dtype=torch.int64)  # ring-buffer slot of the next mail
        self.version = 0
        # the "recently updated" pool used by mitigation: ids written by the most recent update, their
        # memory and its unit vectors (replaced, never mutated, by each update: readers need no copy)
        self._set_recent(torch.zeros(0, dtype=torch.int64), torch.zeros(0, dim))
        self.lock = threading.Lock()

    def _set_recent(self, ids: torch.Tensor, mem: torch.Tensor, unit: torch.Tensor | None = None) -> None:
        self.recent_ids, self.recent_mem = ids, mem
        self.recent_unit = torch.nn.functional.normalize(mem, dim=1) if unit is None else unit

    def _tensors(self) -> tuple[str, ...]:
        return ("mem", "mem_ts", "mail", "mail_ts", "mail_mask", "touched", "mail_next")

    def reset(self) -> None:
        with self.lock:
            for name in self._tensors():
                getattr(self, name).zero_()
            self.version = 0
            self._set_recent(torch.zeros(0, dtype=torch.int64), torch.zeros(0, self.dim))

    def share_memory_(self) -> "MemoryStore":
        for name in self._tensors():
            getattr(self, name).share_memory_()
        return self

    def empty_write(self) -> MemoryWrite:
        """A write of nothing (an empty share of a batch in a data-parallel run still takes part in U)."""
        ids, ts = torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.float64)
        return MemoryWrite(ids, torch.zeros(0, self.dim), ts, ids, torch.zeros(0, self.mail_dim), ts)

    def snapshot(self) -> dict:
        with self.lock:
            snap = {name: getattr(self, name).clone() for name in self._tensors()}
            snap["version"] = self.version
            snap["recent_ids"], snap["recent_mem"] = self.recent_ids, self.recent_mem
            snap["recent_unit"] = self.recent_unit  # kept, not recomputed: restore is then exact
            return snap

    def restore(self, snap: dict) -> None:
        with self.lock:
            for name in self._tensors():
                getattr(self, name).copy_(snap[name])
            self.version = snap["version"]
            self._set_recent(snap["recent_ids"], snap["recent_mem"], snap.get("recent_unit"))

    def check_ids(self, ids: torch.Tensor) -> None:
        bad, first = _first_out_of_range(ids, self.num_nodes)
        if bad:
            raise IndexError(f"node id {first} is out of range for a memory of {self.num_nodes} nodes")

    def fetch(self, ids: torch.Tensor) -> MemoryRows:
        """Gather the rows of ``ids`` (a consistent snapshot: no update is half-applied)."""
        self.check_ids(ids)
        with self.lock:
            mem, mem_ts, mail, mail_ts, mail_mask, touched = _gather_rows(
                ids, self.mem, self.mem_ts, self.mail, self.mail_ts, self.mail_mask, self.touched)
            return MemoryRows(ids, mem, mem_ts, mail, mail_ts, mail_mask, touched, version=self.version)

    def update(
        self,
        mem_ids: torch.Tensor,
        mem: torch.Tensor,
        mem_ts: torch.Tensor,
        mail_ids: torch.Tensor,
        mail: torch.Tensor,
        mail_ts: torch.Tensor,
        version: int | None = None,
    ) -> None:
        """Write memory rows and deliver mails. Rows must be in chronological order: for an id that occurs
        several times, the last row wins. A mailbox of size ``m > 1`` overwrites each node's oldest slot.
        ``version`` (if given) is the committed-update count after this write."""
        self.check_ids(mem_ids)
        self.check_ids(mail_ids)
        u_mem, new_mem, new_mem_ts, u_mail, new_mail, new_mail_ts, unit = _latest_rows(
            mem_ids, mem, mem_ts, mail_ids, mail, mail_ts)
        with self.lock:
            _write_rows(self.mem, self.mem_ts, self.touched, self.mail, self.mail_ts, self.mail_mask,
                        self.mail_next,
                        u_mem, new_mem, new_mem_ts, u_mail, new_mail, new_mail_ts, self.mailbox_size)
            self._set_recent(u_mem, new_mem, unit)
            self.version = self.version + 1 if version is None else version
