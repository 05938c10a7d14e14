"""`cat-aggregator`: the gateway's command line.

Each subcommand lives in its own module exposing `register(subparsers)`, which adds its
parser and sets `func(args) -> int`. Errors a user can fix (bad config, bad argument, missing
file) are raised as `UserError` and printed as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from aggregator.errors import UserError
from edge import __version__
from edge.cli import OneLineParser
from edge.profile import ProfileError

# One line per subcommand module (kept in the order `--help` lists them).
COMMANDS = [
    "aggregator.lab.simulate",
    "aggregator.lab.experiments",
    "aggregator.lab.energy",
    "aggregator.lab.boardbudget",     # adds the whole-board options to `profile`
    "aggregator.lab.costfit",
    "aggregator.ops.init",
    "aggregator.ops.serve",
    "aggregator.ops.root",
    "aggregator.ops.broker",
    "aggregator.ops.admin",
    "aggregator.ops.status",
    "aggregator.ops.model",
    "aggregator.ops.demo",
    "aggregator.ops.flash",
    "aggregator.ops.firmware",
]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="cat-aggregator",
        description="Gateway for communication-aware federated learning (CAT) on IoT links.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (UserError, ProfileError) as exc:
        print(f"cat-aggregator: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
