"""Data layer: the in-memory :class:`TemporalGraph`, offline loaders and the synthetic default dataset."""

from .graph import DatasetError, Split, TemporalGraph
from .loaders import FORMATS, load_dataset
from .synthetic import generate

__all__ = ["TemporalGraph", "Split", "DatasetError", "load_dataset", "generate", "FORMATS"]
