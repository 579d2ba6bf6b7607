"""Contention between stages that run at the same time on one device (a property of stage *durations*).

The schedule rules (:mod:`mspipe_bench.trainers.rules`) say when a stage may start; they assume nothing
about how fast it runs. Without contention a stage ``X(i)`` takes its stage time ``tau_X(i)`` whatever runs
beside it. On one GPU (shared SMs, memory bandwidth, copy engines) or on a CPU with the GIL, stages that
overlap slow each other down. The model here:

- Each stage ``X(i)`` carries ``tau_X(i)`` seconds of *work* (its duration when it runs alone).
- While ``X(i)`` runs together with a set ``R`` of other stages (any kinds, any iterations; all stages
  share the one device), its remaining work drains at rate ``1 / c(X, R)`` per second, with
  ``c(X, R) = max(c(X, Y) for Y in R)``; alone (``R`` empty) it drains at rate 1. ``c(X, Y)`` is the
  factor of the pair ``{X, Y}`` when one is given, else the global ``factor``.
- So a stage that overlaps others for its whole duration takes ``factor x tau``; one that overlaps them for
  part of it takes ``tau`` plus ``(factor - 1)`` times the work it did while overlapped.

Choices, and why: one slowdown whatever the number of co-runners (the device counts as shared as soon as
anything else runs; a pipeline of these stages rarely has more than two busy at once, and the published
per-stage GPU measurements give one contended and one uncontended number per stage, not a curve over the
number of co-runners); symmetric pair factors (``{F, T}`` is the same pair as ``{T, F}``); factors >= 1
(overlap never makes a stage faster); a pair factor of 1 says the two stages do not share a resource (e.g.
a CPU sampler beside GPU training). With every factor 1 the durations are exactly the stage times, so the
simulated schedule is exactly the contention-free one.
"""

from __future__ import annotations

import math
from typing import Iterable

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from mspipe_bench.errors import UserError, one_line
from mspipe_bench.trainers.rules import STAGES

def _pair_key(text: str) -> str:
    """``"T+F"`` -> ``"F+T"`` (stages in STAGES order); ValueError on a malformed pair."""
    parts = [p.strip() for p in text.split("+")]
    if len(parts) != 2 or any(p not in STAGES for p in parts):
        raise ValueError(f"a pair is two stages joined by '+' (stages {', '.join(STAGES)}), got {text!r}")
    if parts[0] == parts[1]:
        raise ValueError(f"a pair needs two different stages (one stage kind never overlaps itself), got {text!r}")
    a, b = sorted(parts, key=STAGES.index)
    return f"{a}+{b}"


class Contention(BaseModel):
    """Slowdown factors of overlapping stages: one global ``factor`` and optional per-pair ``pairs``
    (``{"F+T": 1.5}``). See the module docstring for the model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    factor: float = Field(1.0, ge=1.0, allow_inf_nan=False, strict=True,
                          description="slowdown of a stage while any other stage runs")
    pairs: dict[str, float] = Field(default_factory=dict,
                                    description="per pair of stage kinds ('F+T'), overriding factor")
    _table: dict[str, dict[str, float]] = PrivateAttr(default_factory=dict)

    @field_validator("factor", mode="before")
    @classmethod
    def _int_is_a_factor(cls, v):
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("pairs")
    @classmethod
    def _normal_pairs(cls, pairs: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, value in pairs.items():
            norm = _pair_key(key)
            if norm in out:
                raise ValueError(f"pair {norm!r} given twice")
            if isinstance(value, bool) or not math.isfinite(value) or value < 1:
                raise ValueError(f"pair {key!r}: a factor is a finite number >= 1, got {value!r}")
            out[norm] = float(value)
        return out

    def model_post_init(self, __context) -> None:
        self._table = {
            x: {y: self.pairs.get(_pair_key(f"{x}+{y}"), self.factor) for y in STAGES if y != x} for x in STAGES
        }

    @property
    def trivial(self) -> bool:
        """Every factor is 1: durations are the stage times (the contention-free simulator)."""
        return self.factor == 1.0 and all(v == 1.0 for v in self.pairs.values())

    def slowdown(self, stage: str, others: Iterable[str]) -> float:
        """``c(stage, R)``: how many seconds one second of ``stage``'s work takes while ``others`` run."""
        row = self._table[stage]
        return max((row[o] for o in others), default=1.0)

    def with_factor(self, factor: float) -> "Contention":
        return Contention(factor=float(factor), pairs=dict(self.pairs))

    def describe(self) -> str:
        text = f"{self.factor:g}"
        if self.pairs:
            text += " (" + ", ".join(f"{k} {v:g}" for k, v in self.pairs.items()) + ")"
        return text


def parse_contention(text: str, what: str = "--contention") -> Contention:
    """``"1.3"`` or ``"1.3,F+T=2,S+T=1"``: the global factor first, then pair factors."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise UserError(f"{what}: give a factor, e.g. 1.3 or 1.3,F+T=2")
    try:
        factor = float(parts[0])
    except ValueError:
        raise UserError(f"{what}: the first value is the global factor, got {parts[0]!r}") from None
    pairs: dict[str, float] = {}
    for part in parts[1:]:
        if "=" not in part:
            raise UserError(f"{what}: expected STAGE+STAGE=FACTOR after the global factor, got {part!r}")
        key, raw = (x.strip() for x in part.split("=", 1))
        try:
            pairs[key] = float(raw)
        except ValueError:
            raise UserError(f"{what}: pair {key!r} factor {raw!r} is not a number") from None
    try:
        return Contention(factor=factor, pairs=pairs)
    except ValueError as exc:  # pydantic's ValidationError
        raise UserError(f"{what}: {one_line(exc)} (got {text!r})") from None


def parse_factors(text: str, what: str = "--sweep-contention") -> list[float]:
    """``"1,1.2,1.5"`` -> ``[1.0, 1.2, 1.5]`` (finite, >= 1, in the given order, duplicates dropped)."""
    out: list[float] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise UserError(f"{what}: {part!r} is not a number") from None
        if not math.isfinite(v) or v < 1:
            raise UserError(f"{what}: a contention factor is a finite number >= 1, got {part!r}")
        if v not in out:
            out.append(v)
    if not out:
        raise UserError(f"{what}: give at least one factor, e.g. 1,1.2,1.5,2")
    return out
