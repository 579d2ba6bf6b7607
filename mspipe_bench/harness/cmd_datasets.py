"""``mspipe-bench datasets``: inspect datasets (``info``; ``sample`` is added by the sampling layer)."""

from __future__ import annotations

import argparse
import json

_FORMATS = ("tgl", "jodie", "dyglib", "snap", "npz", "synthetic")  # keep in sync with data.loaders.FORMATS

_SPEC_HELP = (
    "dataset: a TGL folder (edges.csv [+ edge_features.pt, node_features.pt]), a JODIE CSV, a DyGLib "
    "ml_NAME.csv, a whitespace 'src dst t' text file (SNAP), an .npz with src/dst/t (or a folder holding "
    "events.npz), or 'synthetic[:nodes=1000,events=60000,bipartite=1,edge_dim=0,seed=0]'"
)


def register(sub) -> None:
    parser = sub.add_parser(
        "datasets",
        help="inspect datasets (info; sample)",
        description="Inspect temporal interaction datasets in any supported format.",
    )
    dsub = parser.add_subparsers(dest="datasets_command", metavar="ACTION")
    dsub.required = True
    _add_info_parser(dsub)
    _add_sample_parser(dsub)


# ---------------------------------------------------------------------------------------------- info
def _add_info_parser(dsub) -> None:
    p = dsub.add_parser(
        "info",
        help="print a dataset's size, time span, feature dims and split sizes",
        description="Load a dataset and print num_events, num_nodes, t_min, t_max, edge_feat_dim, "
        "node_feat_dim and the chronological train/val/test split sizes (ext_roll when the dataset has "
        "it, else the ratios below).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("path", metavar="PATH", help=_SPEC_HELP)
    p.add_argument("--json", action="store_true", help="print exactly one JSON object instead of a key: value list")
    p.add_argument("--val-ratio", type=float, default=0.15, help="fraction of events in the validation part")
    p.add_argument("--test-ratio", type=float, default=0.15, help="fraction of events in the test part")
    p.add_argument("--format", choices=_FORMATS, default=None, help="force a loader instead of auto-detection")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args) -> int:
    from mspipe_bench.data import load_dataset

    opts = {"format": args.format} if args.format else {}
    graph = load_dataset(args.path, **opts)
    info = graph.summary(val_ratio=args.val_ratio, test_ratio=args.test_ratio)
    if args.json:
        print(json.dumps(info, sort_keys=False))
    else:
        print(format_info(info))
    return 0


def format_info(info: dict) -> str:
    """Aligned ``key: value`` lines."""
    width = max(len(k) for k in info) + 1
    lines = []
    for key, value in info.items():
        if isinstance(value, float):
            value = repr(value) if not value.is_integer() else f"{value:.0f}"
        lines.append(f"{key + ':':<{width}} {value}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- sample
def _add_sample_parser(dsub) -> None:
    """TODO(lead): add the ``datasets sample`` sub-subcommand here (uses mspipe_bench.sampling).

    Intentionally does nothing yet.
    """
    return None
