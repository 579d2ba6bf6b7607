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
    p = dsub.add_parser(
        "sample",
        help="print the temporal neighbours the sampler returns for (node, time) queries",
        description="Load a dataset and run the temporal neighbour sampler (stage S, one hop) for each "
        "query (node, time): the events that touched the node strictly before the time (an event at "
        "exactly the query time is never returned). Prints, per query, each neighbour's event id, "
        "neighbour node id and event time, oldest first.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("path", metavar="PATH", help=_SPEC_HELP)
    p.add_argument("--nodes", required=True, help="comma-separated query node ids, e.g. 1,2,3")
    p.add_argument(
        "--times",
        required=True,
        help="comma-separated query times, one per node (same length as --nodes) or a single time for all",
    )
    p.add_argument("--fanout", type=int, default=10, help="neighbours per query (at most)")
    p.add_argument("--strategy", choices=("recent", "uniform"), default="recent",
                   help="recent: the fanout most recent events; uniform: a uniform sample without replacement")
    p.add_argument("--seed", type=int, default=0, help="seed of the uniform strategy's generator")
    p.add_argument("--json", action="store_true",
                   help='print exactly one JSON object {"queries": [{"node", "time", "neighbors": '
                   '[{"eid", "nbr", "t"}, ...]}, ...]}')
    p.add_argument("--format", choices=_FORMATS, default=None, help="force a loader instead of auto-detection")
    p.set_defaults(func=_cmd_sample)


def _parse_list(text: str, kind, option: str) -> list:
    items = [x.strip() for x in text.split(",")]
    if not text.strip() or any(x == "" for x in items):
        raise ValueError(f"{option} {text!r}: expected a comma-separated list without empty entries")
    out = []
    for x in items:
        try:
            out.append(kind(x))
        except ValueError:
            what = "an integer node id" if kind is int else "a number"
            raise ValueError(f"{option}: {x!r} is not {what}") from None
    return out


def parse_queries(nodes: str, times: str) -> tuple[list[int], list[float]]:
    """``--nodes`` / ``--times`` strings to equal-length lists (a single time applies to every node)."""
    node_list = _parse_list(nodes, int, "--nodes")
    time_list = _parse_list(times, float, "--times")
    if len(time_list) == 1 and len(node_list) > 1:
        time_list = time_list * len(node_list)
    if len(time_list) != len(node_list):
        raise ValueError(
            f"--nodes has {len(node_list)} entries but --times has {len(time_list)}; give one time per node "
            "or a single time for all nodes"
        )
    for t in time_list:
        if t != t:  # NaN
            raise ValueError("--times: NaN is not a valid query time")
    return node_list, time_list


def sample_queries(graph, nodes: list[int], times: list[float], fanout: int, strategy: str, seed: int) -> dict:
    """Run one hop of the temporal sampler and return ``{"queries": [...]}`` (the ``--json`` document)."""
    import numpy as np

    from mspipe_bench.sampling import TemporalSampler

    if fanout < 0:
        raise ValueError(f"--fanout must be >= 0, got {fanout}")
    sampler = TemporalSampler(graph)
    rng = np.random.default_rng(seed)
    hop = sampler.sample(np.asarray(nodes, dtype=np.int64), np.asarray(times, dtype=np.float64), fanout, strategy, rng)
    queries = []
    for q, (node, t) in enumerate(zip(nodes, times)):
        lo, hi = int(hop.ptr[q]), int(hop.ptr[q + 1])
        nbrs = [
            {"eid": int(hop.eid[r]), "nbr": int(hop.nbr[r]), "t": float(hop.ts[r])}
            for r in sorted(range(lo, hi), key=lambda r: int(hop.eid[r]))
        ]
        queries.append({"node": int(node), "time": float(t), "neighbors": nbrs})
    return {"queries": queries}


def _fmt_time(t: float) -> str:
    return f"{t:.0f}" if float(t).is_integer() else repr(float(t))


def format_samples(doc: dict, fanout: int, strategy: str) -> str:
    """Human view: one header line per query, then an aligned ``eid  nbr  t`` table."""
    lines = []
    for q in doc["queries"]:
        nb = q["neighbors"]
        lines.append(
            f"node {q['node']} at t={_fmt_time(q['time'])}: {len(nb)} neighbour{'s' if len(nb) != 1 else ''} "
            f"(strategy {strategy}, fanout {fanout})"
        )
        if nb:
            rows = [("eid", "nbr", "t")] + [(str(n["eid"]), str(n["nbr"]), _fmt_time(n["t"])) for n in nb]
            widths = [max(len(r[c]) for r in rows) for c in range(3)]
            for r in rows:
                lines.append("  " + "  ".join(f"{r[c]:>{widths[c]}}" for c in range(3)))
    return "\n".join(lines)


def _cmd_sample(args) -> int:
    from mspipe_bench.data import load_dataset

    nodes, times = parse_queries(args.nodes, args.times)
    opts = {"format": args.format} if args.format else {}
    graph = load_dataset(args.path, **opts)
    doc = sample_queries(graph, nodes, times, args.fanout, args.strategy, args.seed)
    if args.json:
        print(json.dumps(doc))
    else:
        print(format_samples(doc, args.fanout, args.strategy))
    return 0
