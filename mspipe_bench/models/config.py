"""Model configs: YAML with TGL-like sections (``sampling``, ``memory``, ``gnn``, ``train``) loaded into typed
objects. Unknown keys and bad values are :class:`~mspipe_bench.errors.UserError` s naming the file, key and
value. Presets ``apan``, ``jodie``, ``tgat``, ``tgn`` ship in ``mspipe_bench/models/presets``; any field can be
overridden with ``section.key=value`` strings.

``memory: none`` (TGL's ``type: none``; ``cfg.memory`` is then ``None``) is a model without node memory
(TGAT): its stages M and U do nothing, and it needs ``gnn.arch: attention`` (the other embeddings only
transform a memory)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mspipe_bench.errors import UserError, one_line, read_yaml

PRESET_DIR = Path(__file__).parent / "presets"
PRESETS = tuple(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SamplingConfig(_Strict):
    fanouts: list[int] = Field(default_factory=lambda: [10])  # per hop, hop 1 first; [] = no sampling
    strategy: Literal["recent", "uniform"] = "recent"

    @model_validator(mode="after")
    def _check(self):
        for f in self.fanouts:
            if f < 1:
                raise ValueError(f"sampling.fanouts entries must be >= 1, got {f}")
        return self


class MemoryConfig(_Strict):
    dim: int = Field(100, ge=1)
    time_dim: int = Field(100, ge=1)
    mailbox_size: int = Field(1, ge=1)
    updater: Literal["gru", "rnn", "attention"] = "gru"
    deliver_to: Literal["self", "neighbors"] = "self"
    heads: int = Field(2, ge=1)  # attention updater


class GNNConfig(_Strict):
    arch: Literal["attention", "time_projection", "identity"] = "attention"
    layers: int = Field(1, ge=0)
    heads: int = Field(2, ge=1)
    dim_out: int = Field(100, ge=1)
    time_dim: int = Field(100, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    attn_dropout: float = Field(0.1, ge=0.0, lt=1.0)


class TrainConfig(_Strict):
    batch_size: int = Field(600, ge=1)
    lr: float = Field(1e-4, gt=0.0)
    epochs: int = Field(10, ge=1)


class ModelConfig(_Strict):
    name: str = "custom"
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    memory: MemoryConfig | None = Field(default_factory=MemoryConfig)  # None: no node memory (``memory: none``)
    gnn: GNNConfig = Field(default_factory=GNNConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("memory", mode="before")
    @classmethod
    def _no_memory(cls, value):
        if value == "none":
            return None
        if value is not None and not isinstance(value, (dict, MemoryConfig)):
            raise ValueError(f"memory must be a section or 'none', got {value!r}")
        return value

    @model_validator(mode="after")
    def _check(self):
        if self.memory is None:
            if self.gnn.arch != "attention":
                raise ValueError(f"gnn.arch={self.gnn.arch} needs a node memory to embed (memory: none); "
                                 "use gnn.arch=attention")
        if self.gnn.arch == "attention":
            if self.gnn.layers < 1:
                raise ValueError("gnn.layers must be >= 1 for gnn.arch=attention")
            if self.gnn.layers != len(self.sampling.fanouts):
                raise ValueError(
                    f"gnn.layers={self.gnn.layers} needs one sampling.fanouts entry per layer, "
                    f"got {self.sampling.fanouts}"
                )
            if self.gnn.dim_out % self.gnn.heads:
                raise ValueError(f"gnn.dim_out={self.gnn.dim_out} must be divisible by gnn.heads={self.gnn.heads}")
        else:
            if self.gnn.dim_out != self.memory.dim:
                raise ValueError(
                    f"gnn.dim_out={self.gnn.dim_out} must equal memory.dim={self.memory.dim} for gnn.arch={self.gnn.arch}"
                )
        if self.memory is None:
            return self
        if self.memory.deliver_to == "neighbors" and not self.sampling.fanouts:
            raise ValueError("memory.deliver_to=neighbors needs sampled neighbours (sampling.fanouts is empty)")
        if self.memory.updater == "attention" and self.memory.dim % self.memory.heads:
            raise ValueError(f"memory.dim={self.memory.dim} must be divisible by memory.heads={self.memory.heads}")
        return self

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


def _format_error(exc: ValidationError, where: str) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}'")
        elif err["type"] == "value_error":  # our validators' messages name the keys and values themselves
            parts.append(str(err["ctx"]["error"]))
        else:
            parts.append(f"'{key}': {err['msg']} (got {err.get('input')!r})")
    return f"{where}: invalid model config: " + "; ".join(parts)


def from_dict(data: dict, where: str = "config") -> ModelConfig:
    if not isinstance(data, dict):
        raise UserError(f"{where}: a model config must be a mapping, got {type(data).__name__}")
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError(_format_error(exc, where)) from None


def load_config(name_or_path: str, overrides: list[str] | None = None) -> ModelConfig:
    """Load a preset name (:data:`PRESETS`) or a YAML path, then apply ``section.key=value``
    overrides (values parsed as YAML: ``gnn.heads=4``, ``sampling.fanouts=[10,10]``)."""
    path = PRESET_DIR / f"{name_or_path}.yaml" if name_or_path in PRESETS else Path(name_or_path)
    if not path.exists():
        raise UserError(f"model {name_or_path!r} is neither a preset ({', '.join(PRESETS)}) nor a YAML file")
    data = read_yaml(path, "model config") or {}
    where = str(path)
    for item in overrides or []:
        if "=" not in item:
            raise UserError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"override {item!r}: '{p}' is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise UserError(f"override {item!r}: value is not valid YAML: {one_line(exc)}") from None
        where = f"{path} (with overrides)"
    return from_dict(data, where)
