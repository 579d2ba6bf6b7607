"""Stage-time input of the simulator: constants, per-iteration lists, ``--tau`` text and result files.

Everything a user gives the simulator as stage times is checked here; bad input raises
:class:`~mspipe_bench.errors.UserError` naming the field and the value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from mspipe_bench.errors import UserError
from mspipe_bench.trainers.rules import STAGES

# --------------------------------------------------------------------------------------------------------
# Stage-time input
# --------------------------------------------------------------------------------------------------------


def _check_seconds(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{what}: stage time must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise UserError(f"{what}: stage time must be a finite number >= 0, got {value!r}")
    return v


def _check_stage_keys(keys: Iterable[str], what: str) -> None:
    keys = list(keys)
    unknown = [k for k in keys if k not in STAGES]
    if unknown:
        raise UserError(f"{what}: unknown stage {unknown[0]!r} (stages are {', '.join(STAGES)})")
    missing = [s for s in STAGES if s not in keys]
    if missing:
        raise UserError(f"{what}: missing stage {missing[0]!r} (need all of {', '.join(STAGES)})")


@dataclass
class StageTimes:
    """Per-iteration stage times in seconds: ``per_iteration[i][stage]``."""

    per_iteration: list[dict[str, float]]
    batch_size: int | None = None
    source: str = ""
    constant: dict[str, float] | None = None  # set when every iteration has the same times

    def __len__(self) -> int:
        return len(self.per_iteration)

    def mean(self) -> dict[str, float]:
        n = max(1, len(self.per_iteration))
        return {s: sum(it[s] for it in self.per_iteration) / n for s in STAGES}

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "iterations": len(self)}
        if self.constant is not None:
            out["tau_s"] = dict(self.constant)
        else:
            out["mean_tau_s"] = self.mean()
        if self.batch_size is not None:
            out["batch_size"] = self.batch_size
        return out


def stage_times(tau: Mapping[str, Any] | StageTimes, iterations: int | None = None) -> StageTimes:
    """Normalize stage-time input to :class:`StageTimes`.

    ``tau`` is ``{"S": 1.0, ...}`` (constants; ``iterations`` required), ``{"S": [..], ...}`` (per-iteration
    lists of equal length; the first ``iterations`` are used), or a :class:`StageTimes`.
    """
    if isinstance(tau, StageTimes):
        st = tau
    else:
        if not isinstance(tau, Mapping):
            raise UserError(f"stage times must be a mapping stage -> seconds, got {type(tau).__name__}")
        _check_stage_keys(tau.keys(), "stage times")
        lists = {s: v for s, v in tau.items() if isinstance(v, (list, tuple))}
        if lists and len(lists) != len(STAGES):
            raise UserError("stage times: give either constants for every stage or lists for every stage")
        if lists:
            lengths = {s: len(v) for s, v in lists.items()}
            if len(set(lengths.values())) != 1:
                raise UserError(f"stage times: per-iteration lists differ in length: {lengths}")
            n = next(iter(lengths.values()))
            per = [
                {s: _check_seconds(tau[s][i], f"stage times {s}[{i}]") for s in STAGES} for i in range(n)
            ]
            st = StageTimes(per, source="per-iteration lists")
        else:
            const = {s: _check_seconds(tau[s], f"stage times {s}") for s in STAGES}
            if iterations is None:
                raise UserError("stage times: constants need a number of iterations")
            st = StageTimes([dict(const) for _ in range(iterations)], source="constants", constant=const)
    if iterations is not None:
        if iterations < 1:
            raise UserError(f"iterations must be >= 1, got {iterations}")
        if iterations > len(st):
            raise UserError(f"asked for {iterations} iterations but the stage times cover only {len(st)}")
        if iterations < len(st):
            st = StageTimes(st.per_iteration[:iterations], st.batch_size, st.source, st.constant)
    if len(st) < 1:
        raise UserError("stage times cover no iteration")
    if not any(v > 0 for it in st.per_iteration for v in it.values()):
        raise UserError("stage times are all zero: nothing to simulate")
    return st


def parse_durations(text: str, option: str, names, required: bool, what: str = "stage") -> dict[str, float]:
    """Parse ``"NAME=SECONDS,..."`` (each NAME a ``what``) for ``option`` (a value may end in ``ms`` or ``s``) into seconds, each of
    ``names`` at most once; with ``required`` every name must be given, otherwise a missing one is 0."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, raw = (x.strip() for x in part.partition("="))
        if not sep:
            raise UserError(f"{option}: expected {what.upper()}=SECONDS, got {part!r}")
        if key not in names:
            raise UserError(f"{option}: unknown {what} {key!r} (one of {', '.join(names)})")
        if key in out:
            raise UserError(f"{option}: {key!r} given twice")
        scale, num = (1e-3, raw[:-2]) if raw.endswith("ms") else (1.0, raw.removesuffix("s"))
        try:
            value = float(num) * scale
        except ValueError:
            raise UserError(f"{option}: {key!r} time {raw!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise UserError(f"{option}: {key!r} time must be a finite number >= 0, got {raw!r}")
        out[key] = value
    missing = [n for n in names if n not in out]
    if required and missing:
        raise UserError(f"{option}: missing {what} {missing[0]!r} (need all of {', '.join(names)})")
    return {n: out.get(n, 0.0) for n in names}


def parse_tau(text: str) -> dict[str, float]:
    """Parse ``"S=1,F=1,M=2,T=10,U=2"`` (seconds; a value may end in ``ms`` or ``s``) into seconds."""
    return parse_durations(text, "--tau", STAGES, required=True)


# --------------------------------------------------------------------------------------------------------
# Result-file input
# --------------------------------------------------------------------------------------------------------


def timeline_from_result(result: Mapping[str, Any], epochs: str | int = "first") -> StageTimes:
    """Measured per-iteration stage times of a result JSON, ready for :func:`simulate`.

    ``result["iterations"]`` is a list of ``{"epoch", "i", "durations": {"S": s, ...}}`` (training
    iterations in order) and ``result["config"]["batch_size"]`` the batch size. ``epochs``:

    - ``"first"`` (default): the first *complete* epoch: its ``i`` run 0, 1, ..., n-1 without gaps and
      n is the largest iteration count of any epoch (a truncated final epoch is not complete);
    - an int: that epoch number;
    - ``"all"``: every iteration of every epoch, concatenated in order (simulated as one stream).
    """
    if not isinstance(result, Mapping):
        raise UserError("result must be a JSON object")
    iters = result.get("iterations")
    if not isinstance(iters, list) or not iters:
        raise UserError("result has no 'iterations' list (per-iteration stage durations)")
    try:
        batch_size = int(result["config"]["batch_size"])
    except (KeyError, TypeError, ValueError):
        raise UserError("result has no config.batch_size") from None

    by_epoch: dict[Any, list[Mapping[str, Any]]] = {}
    for n, it in enumerate(iters):
        if not isinstance(it, Mapping) or "durations" not in it:
            raise UserError(f"result iterations[{n}] has no 'durations'")
        by_epoch.setdefault(it.get("epoch", 0), []).append(it)

    if epochs == "all":
        chosen, label = list(iters), "all epochs"
    elif isinstance(epochs, int) and not isinstance(epochs, bool):
        if epochs not in by_epoch:
            raise UserError(f"result has no epoch {epochs} (epochs: {sorted(by_epoch)})")
        chosen, label = by_epoch[epochs], f"epoch {epochs}"
    elif epochs == "first":
        longest = max(len(v) for v in by_epoch.values())
        chosen = None
        for ep, its in by_epoch.items():
            idx = [it.get("i") for it in its]
            if len(its) == longest and idx == list(range(len(its))):
                chosen, label = its, f"epoch {ep} (first complete)"
                break
        if chosen is None:
            raise UserError("result has no complete epoch (iteration indices 0..n-1 without gaps)")
    else:
        raise UserError(f"epochs must be 'first', 'all' or an epoch number, got {epochs!r}")

    per = []
    for n, it in enumerate(chosen):
        d = it["durations"]
        what = f"result iteration (epoch {it.get('epoch')}, i {it.get('i')})"
        if not isinstance(d, Mapping):
            raise UserError(f"{what}: durations must be an object")
        missing = [s for s in STAGES if s not in d]
        if missing:
            raise UserError(f"{what}: missing stage {missing[0]!r}")
        per.append({s: _check_seconds(d[s], f"{what} {s}") for s in STAGES})
    return StageTimes(per, batch_size=batch_size, source=f"measured stage times, {label}")



# --------------------------------------------------------------------------------------------------------
# Data-parallel prediction (simulate --nprocs; docs/design.md §7)
# --------------------------------------------------------------------------------------------------------


def parse_comm(text: str) -> dict[str, float]:
    """``--comm``: ``"AR=2ms,AG=1ms[,KA=0.1ms]"`` (seconds per iteration; a value may end in ``ms`` or ``s``;
    a missing one is 0)."""
    from mspipe_bench.trainers.rules import COMM_STAGES

    return parse_durations(text, "--comm", COMM_STAGES, required=False, what="collective")


def comm_from_result(result: Mapping[str, Any]) -> dict[str, float]:
    """Mean communication seconds per training iteration of a data-parallel result (rank 0's records)."""
    from mspipe_bench.trainers.rules import COMM_STAGES

    iters = [it for it in result.get("iterations", []) if isinstance(it, Mapping)]
    with_comm = [it["comm"] for it in iters if isinstance(it.get("comm"), Mapping)]
    if not with_comm:
        raise UserError("result has no communication times (not a data-parallel run: config.world_size 1)")
    return {c: sum(float(d.get(c, 0.0)) for d in with_comm) / len(iters) for c in COMM_STAGES}


def data_parallel(st: StageTimes, world: int, comm: Mapping[str, float]) -> StageTimes:
    """One rank's stage times in a ``world``-rank run, predicted from a single-process run's: S, F, M and T
    work on 1/``world`` of the batch (T then waits for the gradient all-reduce ``AR``; M for mspipe's k
    agreement ``KA``); U applies the merged write of the whole global batch, as one process does, after the
    all-gather ``AG``. Ignores that the ranks share the machine's cores (see ``--contention``)."""
    if world < 1:
        raise UserError(f"--nprocs must be >= 1, got {world}")
    per = [{"S": it["S"] / world, "F": it["F"] / world, "M": it["M"] / world + comm.get("KA", 0.0),
            "T": it["T"] / world + comm.get("AR", 0.0), "U": it["U"] + comm.get("AG", 0.0)}
           for it in st.per_iteration]
    const = None if st.constant is None else per[0]
    return StageTimes(per, batch_size=st.batch_size, constant=const,
                      source=f"{st.source}, predicted for {world} data-parallel ranks "
                      f"(communication per iteration: {', '.join(f'{k} {v * 1e3:.2f} ms' for k, v in comm.items())})")
