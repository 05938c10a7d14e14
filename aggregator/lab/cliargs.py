"""Command-line arguments the lab's subcommands share: the data flags, the value format, and
the error a flag (or a combination of flags) raises when a command cannot use it."""

from __future__ import annotations

import argparse
from typing import Any

from aggregator.errors import UserError
from aggregator.lab.problem import FULL, SMALL, Problem, is_synthetic, load_data, make_problem, synthetic_size

#: `--fmt` names, index = the wire's value-format code (0: float32, 1: float16).
FMT_NAMES = ("f32", "f16")


class ArgumentError(UserError):
    """A flag value, or a combination of flags, that the command cannot use."""


def int_list(text: str, flag: str) -> list[int]:
    """A comma-separated list of integers given to `flag` (ArgumentError naming the flag if not)."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise ArgumentError(f"{flag}: expected comma-separated integers, got {text!r}") from None


def add_fmt_arg(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """`--fmt f32|f16` (default f32): the values' format on the wire."""
    p.add_argument("--fmt", choices=FMT_NAMES, default=FMT_NAMES[0], help=help)


def fmt_code(name: str) -> int:
    """The wire's value-format code of an `--fmt` name."""
    return FMT_NAMES.index(name)


def add_data_args(p: argparse.ArgumentParser, default: str = "synthetic") -> None:
    """The data group: which dataset, its synthetic size, the model and the split over nodes."""
    g = p.add_argument_group("data")
    g.add_argument("--data", "--dataset", dest="data", default=default,
                   help="builtin (digits, digits-binary, breast_cancer, iris, wine), 'synthetic' "
                        "(RCV1-like), a LIBSVM file (e.g. rcv1_train.binary), a .catd file, or a "
                        f"partition directory (default {default})")
    g.add_argument("--full", action="store_true",
                   help="synthetic at RCV1's size: 697,641 rows x 47,236 features, 76 nnz/row")
    g.add_argument("--rows", type=int, default=None,
                   help=f"synthetic: rows (default {SMALL['rows']}; RCV1 {FULL['rows']})")
    g.add_argument("--features", type=int, default=None,
                   help=f"synthetic: features (default {SMALL['features']}; RCV1 {FULL['features']}); "
                        "LIBSVM: n_features")
    g.add_argument("--nnz", type=float, default=None,
                   help=f"synthetic: mean nonzeros per row (default {SMALL['nnz']:g}; RCV1 {FULL['nnz']:g})")
    g.add_argument("--normalize", action="store_true", help="LIBSVM: L2-normalise rows")
    g.add_argument("--lam", type=float, default=1e-4, help="L2 regularisation lambda (default 1e-4)")
    g.add_argument("--model", choices=("logistic", "softmax"), default=None,
                   help="default: logistic for 2 classes, softmax otherwise")
    g.add_argument("--smoothness", choices=("trace", "spectral"), default="spectral",
                   help="L bound put in the job config: spectral (lambda_max, default; the trace "
                        "bound the boards can compute is ~100x looser on sparse data) or trace")
    g.add_argument("--mode", choices=("even", "skewed"), default="even", help="data split over nodes")
    g.add_argument("--alpha", type=float, default=0.5, help="skewed split: Dirichlet alpha")
    g.add_argument("--seed", type=int, default=0)


def data_size(args: argparse.Namespace) -> tuple[int | None, int | None, float | None]:
    """(rows, features, nnz) for the loader: the synthetic size the flags give (else --full's,
    else the small default), or the flags as they are for a file."""
    if not is_synthetic(args.data):
        return args.rows, args.features, args.nnz
    return synthetic_size(getattr(args, "full", False), args.rows, args.features, args.nnz)


def data_from_args(args: argparse.Namespace) -> Any:
    """The dataset (or partition) the data flags name."""
    rows, features, nnz = data_size(args)
    return load_data(args.data, rows, features, nnz, args.seed, args.normalize)


def problem_from_args(args: argparse.Namespace, nodes: int, data: Any = None) -> Problem:
    """The Problem the data flags describe, split over `nodes` (data: an already loaded dataset)."""
    if data is None:
        data = data_from_args(args)
    return make_problem(data, nodes, args.mode, args.lam, args.model, args.seed, args.alpha, args.smoothness)
