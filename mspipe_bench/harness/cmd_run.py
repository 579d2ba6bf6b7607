"""``mspipe-bench run``: one training run, one JSON result file."""

from __future__ import annotations

import argparse
import re
import types
import typing
from typing import Any, Iterable

from mspipe_bench.errors import UserError
from mspipe_bench.harness.run import RunSpec, cli_option, default, spec_from_options

# the fields a command that runs one model on one dataset with one trainer and seed takes as single values
SINGLE_FIELDS = ("model", "dataset", "trainer", "seed")


def _scalar_type(annotation) -> tuple[Any, tuple | None]:
    """(argparse type, choices) of a RunSpec field's annotation (``int | None`` -> int)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return str, typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return _scalar_type(args[0])
    return annotation, None


def add_run_arguments(p: argparse.ArgumentParser, fields: Iterable[str] | None = None,
                      defaults: dict[str, Any] | None = None, skip: Iterable[str] = ()) -> None:
    """One option per :class:`RunSpec` field (``fields``, default all but ``skip``), its help, type, choices
    and default taken from the field; ``defaults`` replaces a field's default for this command. The value
    lands in ``args.<field name>`` (``--threads`` -> ``args.torch_threads``)."""
    defaults = defaults or {}
    names = [n for n in (fields or RunSpec.model_fields) if n not in set(skip)]
    for name in names:
        info = RunSpec.model_fields[name]
        extra = info.json_schema_extra or {}
        value = defaults.get(name, default(name))
        text = info.description or name
        if name in defaults:  # this command's own default replaces the field's, also in the help
            text = re.sub(r"\s*\(default:[^)]*\)$", "", text)
        if value not in (None, []) and "default" not in text:
            text += f" (default: {value})"
        kind, choices = _scalar_type(info.annotation)
        option = cli_option(name)
        if kind is bool:  # tri-state: None means the trainer decides
            group = p.add_mutually_exclusive_group()
            group.add_argument(option, dest=name, action="store_true", default=value, help=text)
            group.add_argument("--no-" + option.removeprefix("--"), dest=name, action="store_false",
                               help=f"the opposite of {option} (ablation)")
        elif typing.get_origin(info.annotation) is list:
            p.add_argument(option, dest=name, action="append", default=list(value), metavar=extra.get("metavar"),
                           help=text)
        else:
            p.add_argument(option, dest=name, type=kind, choices=choices, default=value,
                           metavar=extra.get("metavar"), help=text)


def spec_from_args(args, **fixed) -> RunSpec:
    """The RunSpec of the parsed options (those present in ``args``) plus ``fixed`` fields; a bad value is a
    UserError naming its option."""
    values = {name: getattr(args, name) for name in RunSpec.model_fields if hasattr(args, name)}
    values.update(fixed)
    return spec_from_options(values)


def format_summary(result: dict) -> str:
    from mspipe_bench.harness.results import machine_tag, text_table

    m = result["metrics"]
    c = result["config"]
    nan = float("nan")
    total = sum(result["stages"].values()) or 1.0
    rows = [
        ("train events/s", f"{m.get('train_events_per_s', 0):,.0f}"),
        ("test AP / AUC", f"{m.get('test_ap', nan):.4f} / {m.get('test_auc', nan):.4f}  "
         f"(global {m.get('test_ap_global', nan):.4f} / {m.get('test_auc_global', nan):.4f})"),
        ("val AP (best ep.)", f"{m.get('val_ap', nan):.4f}  (epoch {m.get('best_epoch', '-')})"),
        ("staleness", f"mean {m['mean_observed_staleness']:.2f}, max {m['max_observed_staleness']}, "
         f"k mean {m['mean_k']:.2f}, max {m['max_k']}"),
        ("bubble share", f"{m['bubble_share']:.1%}"),
        ("work / iteration", f"{m['mean_roots']:,.0f} roots, {m['mean_sampled_edges']:,.0f} sampled edges, "
         f"{m['mean_unique_nodes']:,.0f} unique nodes"),
        ("stage share", "  ".join(f"{s} {v / total:.1%}" for s, v in result["stages"].items())),
        ("machine", machine_tag(result["env"])),
    ]
    return f"{c['label']}  [{result['status']}]\n" + text_table(rows)


def _checkpointer(args):
    """The run's :class:`Checkpointer` from --checkpoint-dir / --checkpoint-every / --resume, or None."""
    from mspipe_bench.trainers.checkpoint import Checkpointer

    if args.resume and args.checkpoint_dir and args.checkpoint_dir != args.resume:
        raise UserError(f"--checkpoint-dir {args.checkpoint_dir}: a resumed run keeps saving into its --resume "
                        f"directory ({args.resume}); drop --checkpoint-dir")
    if args.checkpoint_every is not None and not (args.checkpoint_dir or args.resume):
        raise UserError("--checkpoint-every: needs --checkpoint-dir DIR")
    if args.resume:
        return Checkpointer(args.resume, args.checkpoint_every, resume=True, out=args.out)
    if args.checkpoint_dir:
        return Checkpointer(args.checkpoint_dir, args.checkpoint_every, out=args.out)
    return None


def _resumed_spec(args, checkpoints) -> RunSpec:
    """The checkpointed run's spec; run options given with --resume must agree with it (checked, with the
    model config and dataset, when the checkpoint is bound to the run)."""
    given = {name: getattr(args, name) for name in RunSpec.model_fields
             if hasattr(args, name) and getattr(args, name) != default(name)}
    return spec_from_options({**checkpoints.spec_values(), **given})


def _cmd(args) -> int:
    from mspipe_bench.harness.launch import run_spawned, run_torchrun, torchrun_spec, torchrun_world
    from mspipe_bench.harness.run import check_inputs, check_output_file, default_result_path, run, write_json_atomic

    checkpoints = _checkpointer(args)
    spec = spec_from_args(args) if checkpoints is None or checkpoints.meta is None else _resumed_spec(args, checkpoints)
    under_torchrun = torchrun_world() is not None
    if under_torchrun:
        spec = torchrun_spec(spec)
    if checkpoints is not None and (under_torchrun or spec.nprocs > 1):
        raise UserError("--checkpoint-dir/--resume: not supported in data-parallel runs (--nprocs > 1, torchrun)")
    # checked before the dataset is loaded: a bad model, dataset path or output path must not cost a run
    check_inputs([spec])
    out_given = args.out or (checkpoints.out if checkpoints is not None else None)
    out = check_output_file(out_given or default_result_path(spec, args.results_dir),
                            "--out" if out_given else "--results-dir")
    if checkpoints is not None:
        checkpoints.out = str(out)
    if under_torchrun or spec.nprocs > 1:  # data-parallel (docs/design.md §7): rank 0 writes the result
        if under_torchrun:
            if run_torchrun(spec, str(out), progress=not args.quiet) is None:  # not rank 0
                return 0
        else:
            value, _ = run_spawned(spec, str(out), progress=not args.quiet)
            if value is None:
                print(f"mspipe-bench run: interrupted before rank 0 had a result; nothing written to {out}")
                return 130
        from mspipe_bench.harness.results import load_result

        result = load_result(out)
    else:
        result = run(spec, progress=not args.quiet, checkpoints=checkpoints)
        write_json_atomic(out, result)
    print(format_summary(result))
    print(f"result written to {out}")
    return 130 if result["status"] == "interrupted" else 0


def register(sub) -> None:
    p = sub.add_parser(
        "run",
        help="train one model under one trainer and write a JSON result",
        description="Train a memory-based TGNN under one trainer (schedule) and write one JSON result file "
        "with config, environment, metrics (throughput, AP/AUC, staleness, bubbles), per-epoch and "
        "per-iteration records and the stage timeline. Ctrl-C stops cleanly and keeps the partial result "
        "(status 'interrupted'). Option values are checked, and the output path tested writable, before the "
        "dataset is loaded. glibc malloc is tuned to keep freed memory (env.allocator in the result; "
        "MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ in the environment take precedence).",
    )
    add_run_arguments(p)
    p.add_argument("--out", default=None,
                   help="result file, gzip-compressed when it ends in .json.gz (default: RESULTS_DIR/<label>_<key>.json)")
    p.add_argument("--results-dir", default="runs",
                   help="directory for the default result path (default: runs, which git ignores)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--checkpoint-dir", metavar="DIR", default=None,
                   help="save checkpoints of the run into DIR (atomically; the newest two are kept): after every "
                   "epoch and, with --checkpoint-every, inside epochs. Not part of the run's key")
    p.add_argument("--checkpoint-every", metavar="N", type=int, default=None,
                   help="also checkpoint every N training iterations inside an epoch (the pipelined trainers "
                   "drain at each checkpoint)")
    p.add_argument("--resume", metavar="DIR", default=None,
                   help="continue the run checkpointed in DIR from its newest complete checkpoint (run options "
                   "come from the checkpoint; the result goes where the first run's would have, unless --out)")
    p.set_defaults(func=_cmd)
