"""Variant names in display order and their colours: one place for the figures and the tables."""

from __future__ import annotations

import re
from typing import Any, Iterable

from mspipe_bench.trainers.rules import TRAINERS


def _variant_sort_key(v: str) -> tuple:
    for rank, name in enumerate(TRAINERS):
        if v == name or v.startswith(name + "-"):
            k = re.search(r"-k(\d+)", v) if name == "fixed-staleness" else None
            return (rank, int(k.group(1)) if k else 0, v != name, v)
    return (9, 0, True, v)


def order_variants(variants: Iterable[str]) -> list[str]:
    return sorted(dict.fromkeys(variants), key=_variant_sort_key)


def variant_color(v: str) -> Any:
    import matplotlib

    if v == "sequential":
        return "#7f7f7f"
    if v.startswith("presample"):
        return "#1f77b4"
    if v.startswith("fixed-staleness"):
        m = re.search(r"-k(\d+)", v)
        k = int(m.group(1)) if m else 2
        return matplotlib.colormaps["Oranges"](min(0.95, 0.35 + 0.15 * k))
    if v == "mspipe":
        return "#2ca02c"
    if v.startswith("mspipe"):
        return "#98df8a" if "nomit" in v else "#17becf"
    return "#9467bd"
