"""Command-line entry point: ``mspipe-bench`` / ``python -m mspipe_bench``.

Each subcommand lives in its own ``mspipe_bench.harness.cmd_*`` module exposing ``register(subparsers)``;
the module imports the heavy stack (torch, DGL) only inside its handler so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mspipe_bench.errors import UserError

# (module, ...) in the order shown by --help
COMMAND_MODULES = [
    "mspipe_bench.harness.cmd_bench",
    "mspipe_bench.harness.cmd_run",
    "mspipe_bench.harness.cmd_datasets",
    "mspipe_bench.harness.cmd_simulate",
    "mspipe_bench.harness.cmd_sweep",
    "mspipe_bench.harness.cmd_plot",
    "mspipe_bench.harness.cmd_compare",
    "mspipe_bench.harness.cmd_trace",
    "mspipe_bench.harness.cmd_paper",
]


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (exit 2) like every other user error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mspipe-bench",
        description="Benchmark suite for memory-based temporal GNN training pipelines "
        "(sequential, presample, fixed-staleness, MSPipe) on DGL.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command not built yet
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line, for run directories' manifests
    try:
        return int(args.func(args) or 0)
    except (UserError, FileNotFoundError) as exc:  # bad input: one line, exit 2; bugs keep their traceback
        print(f"mspipe-bench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mspipe-bench {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`: not an error of ours
        sys.stderr.close()
        return 0
