"""Launching a data-parallel run (docs/design.md §7): ``run --nprocs W`` spawns W local ranks, or torchrun
started this process as one rank (``torchrun --nproc-per-node W [--nnodes N --node-rank R --rdzv-endpoint
HOST:PORT] -m mspipe_bench run ...``). Both end in :func:`train_rank`: the same code on every rank.

**Spawned ranks** (:func:`spawn`): the launcher (this process) holds the rendezvous store (a
``torch.distributed.TCPStore`` on 127.0.0.1, port chosen by the OS, so no port can be taken in between) and
starts W processes (start method ``spawn``), each in its own process group (Ctrl-C reaches the launcher only)
and killed by the kernel if the launcher dies (``PR_SET_PDEATHSIG``). A rank reports to the launcher through a
queue: its return value, a failure (rank, message with stage and iteration, traceback; a rank whose stage
fails reports and exits at once, so its peers' collectives fail instead of waiting for the timeout), or that it
was interrupted. The launcher

- on a failure: waits :data:`SETTLE_S` for other reports and exits, names the rank that failed first for a
  reason of its own (a failed collective is a consequence; a rank killed by a signal is named as such), kills
  the remaining ranks and raises :class:`RankFailure` (:class:`UserError` when the rank's error was one);
- on Ctrl-C: sends SIGINT to rank 0 only; rank 0 stops its epoch like a single-process run, tells the launcher,
  which then kills the other ranks (their pending collectives with rank 0 fail, so nothing waits for a
  timeout), and rank 0 writes the partial result from what it has (its own timeline and stage totals);
- never leaves a rank process behind.

**Under torchrun** the world comes from the environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``); a failing rank prints the failure (rank, stage, iteration) to stderr and exits non-zero, and
torchrun stops the others. Ctrl-C is torchrun's to handle (it terminates the ranks; no partial result).
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys
import time
from typing import Any, Callable

from mspipe_bench.errors import UserError

HOST = "127.0.0.1"
SETTLE_S = 2.0  # after a first failure: how long to collect other ranks' reports before choosing the cause
KILL_AFTER_S = 10.0  # after the cause is known: how long the other ranks get to exit by themselves
INTERRUPT_DEADLINE_S = 60.0  # after Ctrl-C: how long rank 0 gets to write its partial result


class RankFailure(RuntimeError):
    """A rank of a data-parallel run failed; the message names the rank, and its stage and iteration."""


class UserRankFailure(RankFailure, UserError):
    """A rank failed on bad input."""


def torchrun_world() -> tuple[int, int] | None:
    """``(rank, world_size)`` when torchrun (or another launcher following its environment convention)
    started this process, else None."""
    if "TORCHELASTIC_RUN_ID" not in os.environ and not all(
            k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")):
        return None
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def torchrun_spec(spec):
    """``spec`` with ``nprocs`` = torchrun's world size (a different explicit ``--nprocs`` is a UserError)."""
    world = torchrun_world()[1]
    if spec.nprocs not in (1, world):
        raise UserError(f"--nprocs: {spec.nprocs} conflicts with torchrun's WORLD_SIZE={world} "
                        "(under torchrun leave --nprocs out)")
    return spec.model_copy(update={"nprocs": world})


def _init_process_group(rank: int, world: int, store=None) -> None:
    import torch.distributed as dist

    from mspipe_bench.trainers.distributed import backend, timeout

    kwargs = {"store": store} if store is not None else {"init_method": "env://"}
    dist.init_process_group(backend(), rank=rank, world_size=world, timeout=timeout(), **kwargs)


# ---------------------------------------------------------------------------------------------- one rank
def train_rank(drank, spec_data: dict, out: str | None, progress: bool, hook=None) -> dict | None:
    """One rank of ``run``: train under ``spec`` with this rank's share; rank 0 writes the result to ``out``
    and returns its status, label and path."""
    from mspipe_bench.harness.run import RunSpec, run_context, write_json_atomic

    spec = RunSpec(**spec_data)
    _, result = run_context(spec, progress=progress and drank.rank == 0, hook=hook, dist=drank)
    if drank.rank != 0:
        return None
    if out is not None:
        write_json_atomic(out, result)
    return {"status": result["status"], "out": out}


def run_torchrun(spec, out: str, progress: bool) -> dict | None:
    """This process is one rank started by torchrun: train it. Rank 0 returns what :func:`train_rank` does,
    the others None."""
    import torch.distributed as dist

    from mspipe_bench.trainers.distributed import DistRank

    rank, world = torchrun_world()
    spec = torchrun_spec(spec)
    _init_process_group(rank, world)
    drank = DistRank(rank, world)
    try:
        value = train_rank(drank, spec.model_dump(), out, progress)
        dist.barrier()
    except BaseException as exc:  # noqa: BLE001 - reported with the rank, then the process exits
        drank.fail(exc)
        raise
    dist.destroy_process_group()
    return value


# ---------------------------------------------------------------------------------------------- spawned ranks
def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux/glibc: the launcher's own cleanup still ends the ranks
        pass


def _rank_main(rank: int, world: int, port: int, fn: Callable, args: tuple, queue) -> None:
    """Entry of a spawned rank: join the process group through the launcher's store, run ``fn(drank,
    *args)``, report its value (or failure) to the launcher."""
    _die_with_parent()
    os.setpgrp()  # Ctrl-C in a terminal reaches the launcher, which decides what each rank gets
    import torch.distributed as dist

    from mspipe_bench.trainers.distributed import DistRank, report_failure, timeout

    drank = None
    try:
        store = dist.TCPStore(HOST, port, world, is_master=False, timeout=timeout())
        _init_process_group(rank, world, store)
        drank = DistRank(rank, world, report=queue.put)
        if rank == 0:
            def on_sigint(signum, frame):
                if not drank.interrupted:
                    drank.interrupted = True
                    queue.put({"kind": "interrupted", "rank": 0})
                raise KeyboardInterrupt

            signal.signal(signal.SIGINT, on_sigint)
        value = fn(drank, *args)
        if not drank.interrupted:
            dist.barrier()  # nobody leaves while a peer may still be in a collective with it
        # pickled here, by value: torch's multiprocessing pickler would pass tensors as handles into this
        # process's shared memory, which ends with it
        queue.put({"kind": "done", "rank": rank, "value": pickle.dumps(value)})
    except KeyboardInterrupt:
        queue.put({"kind": "done", "rank": rank, "value": None})
    except BaseException as exc:  # noqa: BLE001 - reported, then this process exits
        if drank is None:
            report_failure(rank, world, exc, queue.put)
        drank.fail(exc)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no interpreter teardown: a peer may already be gone, and gloo's would wait for it


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def spawn(fn: Callable, world: int, args: tuple = ()) -> tuple[list[Any], bool]:
    """Run ``fn(drank, *args)`` on ``world`` spawned local ranks (``fn`` and ``args`` must pickle); return the
    ranks' values in rank order and whether the run was interrupted (then only rank 0's value, if it had one);
    see the module docstring for failures and Ctrl-C."""
    import multiprocessing.connection
    import torch.distributed as dist
    import torch.multiprocessing as mp

    from mspipe_bench.trainers.distributed import timeout

    mpctx = mp.get_context("spawn")
    store = dist.TCPStore(HOST, 0, world + 1, is_master=True, wait_for_workers=False, timeout=timeout())
    queue = mpctx.SimpleQueue()
    procs = [mpctx.Process(target=_rank_main, args=(r, world, store.port, fn, args, queue), name=f"rank{r}")
             for r in range(world)]
    values: list[Any] = [None] * world
    done: set[int] = set()
    failures: list[dict] = []
    interrupted = False
    first_failure_at = None
    interrupt_at = None
    try:
        for p in procs:
            p.start()
        while True:
            try:
                live = [p.sentinel for p in procs if p.exitcode is None]
                multiprocessing.connection.wait([queue._reader, *live], timeout=0.2)
                while not queue.empty():
                    msg = queue.get()
                    if msg["kind"] == "done":
                        values[msg["rank"]] = None if msg["value"] is None else pickle.loads(msg["value"])
                        done.add(msg["rank"])
                    elif msg["kind"] == "error" and not interrupted:
                        msg["at"] = time.monotonic()
                        failures.append(msg)
                    elif msg["kind"] == "interrupted":  # rank 0 has stopped: the others are not needed
                        for p in procs[1:]:
                            _kill(p)
                now = time.monotonic()
                for r, p in enumerate(procs):
                    if p.exitcode is not None and p.exitcode < 0 and not interrupted and r not in done and \
                            not any(f["rank"] == r for f in failures):
                        failures.append({"kind": "killed", "rank": r, "at": now, "comm": False,
                                         "message": f"rank {r} of {world} was killed by {_signal_name(p.exitcode)}"})
                    elif p.exitcode not in (None, 0) and r not in done and not interrupted and \
                            not any(f["rank"] == r for f in failures):
                        failures.append({"kind": "exit", "rank": r, "at": now, "comm": False,
                                         "message": f"rank {r} of {world} exited with status {p.exitcode}"})
                if failures and first_failure_at is None:
                    first_failure_at = now
                if first_failure_at is not None and (now - first_failure_at >= SETTLE_S or
                                                      all(p.exitcode is not None for p in procs)):
                    break
                if interrupted and (0 in done or procs[0].exitcode is not None
                                    or now - interrupt_at > INTERRUPT_DEADLINE_S):
                    break
                if not interrupted and len(done) == world:  # all values in: reap (join returns at once for exited ones)
                    for p in procs:
                        p.join(timeout=KILL_AFTER_S)
                    break
            except KeyboardInterrupt:
                if interrupted or procs[0].exitcode is not None:  # a second Ctrl-C: stop everything now
                    raise
                interrupted, interrupt_at = True, time.monotonic()
                os.kill(procs[0].pid, signal.SIGINT)
    finally:
        deadline = time.monotonic() + KILL_AFTER_S
        for p in procs:
            if p.pid is None:
                continue
            p.join(timeout=max(0.0, deadline - time.monotonic()))
            if p.exitcode is None:
                _kill(p)
                p.join()
        del store
    if failures and not interrupted:
        raise _failure(failures, world)
    return values, interrupted


def _kill(p) -> None:
    try:
        os.kill(p.pid, signal.SIGKILL)
    except (ProcessLookupError, TypeError):
        pass


def _failure(failures: list[dict], world: int) -> RankFailure:
    """The cause among the reports: the first failure of a rank's own (not a failed collective), else the first
    rank killed or exited, else the first report."""
    own = [f for f in failures if f["kind"] == "error" and not f["comm"]]
    gone = [f for f in failures if f["kind"] in ("killed", "exit")]
    cause = (own or gone or failures)[0]
    if cause["kind"] == "error":
        text = f"rank {cause['rank']} of {world} failed: {cause['message']}"
        others = sorted({f["rank"] for f in failures} - {cause["rank"]})
        if others:
            text += f" (then rank{'s' if len(others) > 1 else ''} {', '.join(map(str, others))} stopped)"
        if cause.get("user_error"):
            return UserRankFailure(text)
        return RankFailure(f"{text}\n--- traceback of rank {cause['rank']} ---\n{cause['traceback']}")
    return RankFailure(cause["message"] + "; the other ranks were stopped")


def run_spawned(spec, out: str, progress: bool, hook=None) -> tuple[dict | None, bool]:
    """``run --nprocs W``: train on W spawned ranks; rank 0 writes ``out``. Returns rank 0's value (None if it
    was interrupted before it had a result) and whether the run was interrupted."""
    values, interrupted = spawn(train_rank, spec.nprocs, (spec.model_dump(), str(out), progress, hook))
    return values[0], interrupted
