"""Simulator profiles: what-if stage times from a YAML file that says where they come from.

A profile file (``mspipe_bench/harness/profiles/*.yaml``) is validated by the pydantic models below::

    source:                      # required: where the numbers come from
      kind: published measurement   # or: hand-made
      reference: GNNFlow pull request #102 "feat: pre-sampling" (2023-02-21)
      repository: jasperzhong/GNNFlow          # optional
      table: TGN's cumulative time             # optional
      url: https://github.com/...              # optional
    hardware: 4x NVIDIA A100                    # required
    units: s                                    # ms or s
    stage_times: per-epoch sums                 # or: per iteration (default)
    caveats: [...]                              # required (may be empty)
    contention: {factor: 1.0, pairs: {F+T: 1.5}}   # optional, see contention.py
    profiles:
      - model: tgn
        dataset: gdelt
        variant: without pre-sampling           # optional: how these times were measured
        batch_size: 4000                        # events per batch, or null when unknown
        tau: {S: 107.81, F: 40.05, M: 55.89, T: 133.27, U: 29.52}
        note: ...

Errors raise :class:`~mspipe_bench.errors.UserError` with one line naming the file, the field and the value.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mspipe_bench.errors import UserError, read_yaml
from mspipe_bench.trainers.rules import STAGES
from mspipe_bench.trainers.simulator.contention import Contention

UNITS = {"ms": 1e-3, "s": 1.0}
STAGE_TIME_KINDS = ("per iteration", "per-epoch sums")

Text = typing.Annotated[str, Field(min_length=1, strict=True)]
Seconds = typing.Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Source(_Strict):
    """Where the numbers come from."""

    kind: Literal["published measurement", "hand-made"]
    reference: Text = Field(description="pull request, paper or other document, with its date")
    repository: Text | None = None
    table: Text | None = None
    url: Text | None = None

    def text(self) -> str:
        """One line, e.g. ``published measurement: GNNFlow pull request #102 (...), jasperzhong/GNNFlow,
        table "TGN's cumulative time"``; hand-made profiles say ``hand-made, not a measurement``."""
        head = "published measurement" if self.kind == "published measurement" else "hand-made, not a measurement"
        parts = [f"{head}: {self.reference}"]
        if self.repository:
            parts.append(f"repository {self.repository}")
        if self.table:
            parts.append(f"table {self.table!r}")
        if self.url:
            parts.append(self.url)
        return "; ".join(parts)


class Tau(_Strict):
    S: Seconds
    F: Seconds
    M: Seconds
    T: Seconds
    U: Seconds


class Entry(_Strict):
    model: Text
    dataset: Text
    variant: str = ""
    batch_size: typing.Annotated[int, Field(ge=1, strict=True)] | None
    tau: Tau
    note: str = ""


class ProfileFile(_Strict):
    source: Source
    hardware: Text
    units: Literal["ms", "s"]
    stage_times: Literal["per iteration", "per-epoch sums"] = "per iteration"
    caveats: list[Text]
    contention: Contention | None = None
    profiles: list[Entry] = Field(min_length=1)


@dataclass
class Profile:
    """One profile entry ready for the simulator: ``tau`` in seconds (converted from the file's units)."""

    model: str
    dataset: str
    batch_size: int | None
    tau: dict[str, float]
    note: str
    source: str  # one line (Source.text())
    units: str
    path: str = ""
    variant: str = ""
    hardware: str = ""
    stage_times: str = "per iteration"
    caveats: list[str] = field(default_factory=list)
    contention: Contention | None = None
    source_detail: dict[str, Any] = field(default_factory=dict)

    @property
    def per_epoch_sums(self) -> bool:
        return self.stage_times == "per-epoch sums"

    def title(self) -> str:
        return f"{self.model} / {self.dataset}" + (f" ({self.variant})" if self.variant else "")

    def describe(self) -> dict[str, Any]:
        return {
            "profile": self.path,
            "model": self.model,
            "dataset": self.dataset,
            "variant": self.variant,
            "batch_size": self.batch_size,
            "tau_s": dict(self.tau),
            "units_in_file": self.units,
            "stage_times": self.stage_times,
            "source": self.source,
            "source_detail": dict(self.source_detail),
            "hardware": self.hardware,
            "caveats": list(self.caveats),
            "contention_in_file": self.contention.model_dump() if self.contention is not None else None,
            "note": self.note,
        }


# -------------------------------------------------------------------------------- error messages

_HINTS = {
    "source": "where the numbers come from: kind (published measurement / hand-made), reference, "
              "and repository, table, url when known",
    "hardware": "the machine the stage times were taken on ('none' for a hand-made profile)",
    "caveats": "a list of what to keep in mind about the numbers (may be empty: [])",
}


def _loc_text(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model whose field ``loc[-1]`` is (for listing the allowed fields)."""
    model: type[BaseModel] | None = ProfileFile
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part) if model else None
        if info is None:
            return None
        model = _inner_model(info.annotation)
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _user_error(path: Path, exc: ValidationError) -> UserError:
    errors = exc.errors()
    e = errors[0]
    loc = _loc_text(tuple(e["loc"]))
    if e["type"] == "missing":
        text = f"missing field {loc!r}"
        if loc in _HINTS:
            text += f" ({_HINTS[loc]})"
        elif e["loc"][-1] in STAGES:
            text += f" (stage times need all of {', '.join(STAGES)})"
    elif e["type"] == "extra_forbidden":
        model = _model_at(tuple(e["loc"]))
        allowed = f" (allowed: {', '.join(model.model_fields)})" if model is not None else ""
        text = f"unknown field {loc!r}{allowed}"
    else:
        what = f"field {loc!r}" if loc else "the file"
        text = f"{what}: {e['msg'].removeprefix('Value error, ')}, got {e['input']!r}"
        if loc in _HINTS:
            text += f" ({_HINTS[loc]})"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return UserError(f"{path}: {text}")


# -------------------------------------------------------------------------------- loading


def load_profile(path: str | Path) -> list[Profile]:
    """Load and validate a profile YAML (see the module docstring): one :class:`Profile` per entry."""
    p = Path(path)
    doc = read_yaml(p, "profile")
    if not isinstance(doc, dict):
        raise UserError(f"{p}: expected a mapping with fields {', '.join(ProfileFile.model_fields)}, "
                        f"got {type(doc).__name__}")
    try:
        pf = ProfileFile.model_validate(doc)
    except ValidationError as exc:
        raise _user_error(p, exc) from None
    scale = UNITS[pf.units]
    source = pf.source.text()
    return [
        Profile(
            model=e.model,
            dataset=e.dataset,
            batch_size=e.batch_size,
            tau={s: getattr(e.tau, s) * scale for s in STAGES},
            note=e.note,
            source=source,
            units=pf.units,
            path=str(p),
            variant=e.variant,
            hardware=pf.hardware,
            stage_times=pf.stage_times,
            caveats=list(pf.caveats),
            contention=pf.contention,
            source_detail=pf.source.model_dump(exclude_none=True),
        )
        for e in pf.profiles
    ]
