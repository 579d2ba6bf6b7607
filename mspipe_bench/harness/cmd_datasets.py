"""``mspipe-bench datasets``: fetch the paper's datasets by name (``fetch``, ``list``) and inspect datasets
(``info``, ``sample``)."""

from __future__ import annotations

import argparse
import json

from mspipe_bench.data.loaders import FORMATS, formats_help
from mspipe_bench.errors import UserError

_SPEC_HELP = "dataset path or spec; " + formats_help().replace("%", "%%")


def register(sub) -> None:
    parser = sub.add_parser(
        "datasets",
        help="fetch the paper's datasets by name (fetch; list) and inspect datasets (info; sample)",
        description="Fetch the paper's datasets into the data cache ($MSPIPE_DATA, default "
        "~/.cache/mspipe-bench) and inspect temporal interaction datasets in any supported format.",
    )
    dsub = parser.add_subparsers(dest="datasets_command", metavar="ACTION")
    dsub.required = True
    _add_fetch_parser(dsub)
    _add_list_parser(dsub)
    _add_info_parser(dsub)
    _add_sample_parser(dsub)


# ---------------------------------------------------------------------------------------------- fetch, list
def _known_help() -> str:
    from mspipe_bench.data.fetch import KNOWN

    return "; ".join(f"{d.name}: {d.about}" for d in KNOWN.values())


def _add_fetch_parser(dsub) -> None:
    from mspipe_bench.data.fetch import KNOWN

    p = dsub.add_parser(
        "fetch",
        help="download, verify and convert one of the paper's datasets into the data cache",
        description="Download a known dataset from its public source (JODIE's CSVs from "
        "http://snap.stanford.edu/jodie/, TGL's GDELT files from s3.us-west-2.amazonaws.com/dgl-data/dataset/tgl/"
        "GDELT/) with a progress bar, resume an interrupted download (HTTP Range), verify the size (and the "
        "SHA-256 where one is known), and convert it once into the suite's format (memory-mappable .npy arrays) "
        "in ROOT/datasets/NAME; afterwards '--dataset NAME' finds it (with ROOT = $MSPIPE_DATA). "
        "Known: " + _known_help().replace("%", "%%"),
    )
    p.add_argument("name", metavar="NAME", choices=list(KNOWN), help="one of: " + ", ".join(KNOWN))
    p.add_argument("--root", default=None,
                   help="data cache (default: $MSPIPE_DATA, else ~/.cache/mspipe-bench); runs look in $MSPIPE_DATA")
    p.add_argument("--url", default=None,
                   help="fetch from this URL instead: the folder the dataset's files are in (their names are "
                   "appended), or the file itself for a one-file dataset (a mirror, a local server)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_fetch)


def _cmd_fetch(args) -> int:
    from mspipe_bench.data.fetch import fetch

    fetch(args.name, root=args.root, url=args.url, progress=not args.quiet)
    return 0


def _add_list_parser(dsub) -> None:
    p = dsub.add_parser(
        "list",
        help="the known datasets and what the data cache holds",
        description="List the datasets 'fetch' knows, their sources and whether each is converted, partly "
        "downloaded or absent in the data cache ($MSPIPE_DATA, default ~/.cache/mspipe-bench), plus any other "
        "converted dataset found there.",
    )
    p.add_argument("--root", default=None, help="data cache (default: $MSPIPE_DATA, else ~/.cache/mspipe-bench)")
    p.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    p.set_defaults(func=_cmd_list)


def _cmd_list(args) -> int:
    from pathlib import Path

    from mspipe_bench.data.features import data_home
    from mspipe_bench.data.fetch import listing
    from mspipe_bench.harness.results import text_table

    root = Path(args.root).expanduser() if args.root else data_home()
    rows = listing(root)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"data cache: {root}")
    print(text_table([(r["name"], r["state"], r["path"] or r["source"]) for r in rows],
                     ("name", "cache", "path (or source)")))
    return 0


# ---------------------------------------------------------------------------------------------- info
def _add_info_parser(dsub) -> None:
    p = dsub.add_parser(
        "info",
        help="print a dataset's size, time span, feature dims and split sizes",
        description="Load a dataset and print num_events, num_nodes, t_min, t_max, edge_feat_dim, "
        "node_feat_dim, whether the node ids were remapped (sparse ids are renumbered to 0..n-1 in increasing "
        "order; max_file_id is the largest id in the file) and the chronological train/val/test split sizes "
        "(ext_roll when the dataset has it, else the ratios below).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("path", metavar="PATH", help=_SPEC_HELP)
    p.add_argument("--json", action="store_true", help="print exactly one JSON object instead of a key: value list")
    p.add_argument("--val-ratio", type=float, default=0.15, help="fraction of events in the validation part")
    p.add_argument("--test-ratio", type=float, default=0.15, help="fraction of events in the test part")
    p.add_argument("--format", choices=FORMATS, default=None, help="force a loader instead of auto-detection")
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
        if graph.node_ids is not None:
            print(f"note: the file's node ids are sparse ({graph.num_nodes} distinct ids up to "
                  f"{info['max_file_id']}): renumbered to 0..{graph.num_nodes - 1} in increasing order")
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
        "neighbour node id and event time, oldest first. Node ids are the file's (also when the dataset's "
        "sparse ids were remapped).",
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
    p.add_argument("--format", choices=FORMATS, default=None, help="force a loader instead of auto-detection")
    p.set_defaults(func=_cmd_sample)


def _parse_list(text: str, kind, option: str) -> list:
    items = [x.strip() for x in text.split(",")]
    if not text.strip() or any(x == "" for x in items):
        raise UserError(f"{option} {text!r}: expected a comma-separated list without empty entries")
    out = []
    for x in items:
        try:
            out.append(kind(x))
        except ValueError:
            what = "an integer node id" if kind is int else "a number"
            raise UserError(f"{option}: {x!r} is not {what}") from None
    return out


def parse_queries(nodes: str, times: str) -> tuple[list[int], list[float]]:
    """``--nodes`` / ``--times`` strings to equal-length lists (a single time applies to every node)."""
    node_list = _parse_list(nodes, int, "--nodes")
    time_list = _parse_list(times, float, "--times")
    if len(time_list) == 1 and len(node_list) > 1:
        time_list = time_list * len(node_list)
    if len(time_list) != len(node_list):
        raise UserError(
            f"--nodes has {len(node_list)} entries but --times has {len(time_list)}; give one time per node "
            "or a single time for all nodes"
        )
    for t in time_list:
        if t != t:  # NaN
            raise UserError("--times: NaN is not a valid query time")
    return node_list, time_list


def sample_queries(graph, nodes: list[int], times: list[float], fanout: int, strategy: str, seed: int) -> dict:
    """Run one hop of the temporal sampler and return ``{"queries": [...]}`` (the ``--json`` document).
    ``nodes`` and the returned neighbours are the file's node ids (mapped through ``graph.node_ids``)."""
    import numpy as np

    from mspipe_bench.sampling import TemporalSampler

    if fanout < 0:
        raise UserError(f"--fanout must be >= 0, got {fanout}")
    dense = _dense_ids(graph, nodes)
    sampler = TemporalSampler(graph)
    rng = np.random.default_rng(seed)
    hop = sampler.sample(dense, np.asarray(times, dtype=np.float64), fanout, strategy, rng)
    file_id = graph.node_ids if graph.node_ids is not None else np.arange(graph.num_nodes)
    queries = []
    for q, (node, t) in enumerate(zip(nodes, times)):
        lo, hi = int(hop.ptr[q]), int(hop.ptr[q + 1])
        nbrs = [
            {"eid": int(hop.eid[r]), "nbr": int(file_id[hop.nbr[r]]), "t": float(hop.ts[r])}
            for r in sorted(range(lo, hi), key=lambda r: int(hop.eid[r]))
        ]
        queries.append({"node": int(node), "time": float(t), "neighbors": nbrs})
    return {"queries": queries}


def _dense_ids(graph, nodes: list[int]):
    """The graph's ids of the file's node ids ``nodes`` (UserError naming the first unknown one)."""
    import numpy as np

    ids = np.asarray(nodes, dtype=np.int64)
    if graph.node_ids is None:
        bad = ids[(ids < 0) | (ids >= graph.num_nodes)]
        if len(bad):
            raise UserError(f"--nodes: node id {bad[0]} is out of range [0, {graph.num_nodes}) of {graph.source}")
        return ids
    pos = np.minimum(np.searchsorted(graph.node_ids, ids), graph.num_nodes - 1)
    bad = ids[graph.node_ids[pos] != ids]
    if len(bad):
        raise UserError(f"--nodes: node id {bad[0]} does not occur in {graph.source} (its sparse ids were "
                        f"remapped; only ids that occur are nodes)")
    return pos


def _fmt_time(t: float) -> str:
    return f"{t:.0f}" if float(t).is_integer() else repr(float(t))


def format_samples(doc: dict, fanout: int, strategy: str) -> str:
    """Human view: one header line per query, then an aligned ``eid  nbr  t`` table."""
    from mspipe_bench.harness.results import text_table

    lines = []
    for q in doc["queries"]:
        nb = q["neighbors"]
        lines.append(
            f"node {q['node']} at t={_fmt_time(q['time'])}: {len(nb)} neighbour{'s' if len(nb) != 1 else ''} "
            f"(strategy {strategy}, fanout {fanout})"
        )
        if nb:
            rows = [(n["eid"], n["nbr"], _fmt_time(n["t"])) for n in nb]
            lines += ["  " + line for line in text_table(rows, ("eid", "nbr", "t"), "rrr").splitlines()]
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
