"""The `simulate` and `partition` subcommands of `cat-aggregator`.

`simulate` trains n simulated nodes by eq. (10) of the paper (`engine.simulate`) and writes
the run log (`results`), a summary table, plots and report.md; `partition` splits a dataset
into the per-node CATD files the boards stream (docs/data-format.md).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from aggregator.lab import datasets as ds
from aggregator.lab import engine, reports
from aggregator.lab.cliargs import (ArgumentError, add_data_args, add_fmt_arg, data_from_args, fmt_code,
                                    problem_from_args)
from aggregator.lab.engine import SimConfig, simulate
from aggregator.lab.pricing import PACKET_SMALL
from aggregator.lab.problem import DataSpecError
from aggregator.lab.results import SimResult
from edge.cat import SCHEME_IDENTITY, rule_id, scheme_id


def _cmd_simulate(args: argparse.Namespace) -> int:
    try:
        scheme_id(args.scheme)
        rk = rule_id("catavg" if args.rule == engine.EF_RULE else args.rule)
    except ValueError as e:
        raise ArgumentError(str(e)) from None
    if args.rule == engine.EF_RULE and not args.ef:
        raise ArgumentError(f"--rule {engine.EF_RULE} scores what error feedback sends: it needs --ef")
    if scheme_id(args.scheme) == SCHEME_IDENTITY:
        args.rule = "identity"
    elif rk == rule_id("identity"):
        args.scheme = "identity"
    param = args.T if args.rule == "fixed" else args.period if args.rule == "hybrid" else 0
    if args.rule == "fixed" and not args.T:
        raise ArgumentError("--rule fixed needs --T")
    t0 = time.perf_counter()
    problem = problem_from_args(args, args.nodes)
    t_load = time.perf_counter() - t0
    print(f"data {problem.name}: {problem.rows} rows, d = {problem.d}, model size {problem.dim}, "
          f"{problem.nodes} node(s), L = {problem.L:.6g} ({t_load:.1f} s to load)")
    if args.target is not None:
        t0 = time.perf_counter()
        problem.solve()
        print(f"f* = {problem.f_star:.8g} (L-BFGS, {time.perf_counter() - t0:.1f} s)")
    cfg = SimConfig(scheme=args.scheme, rule=args.rule, rule_param=param or 0, profile=args.profile,
                    metric=args.metric, rounds=args.rounds, batch=args.batch, error_feedback=args.ef,
                    step=args.step, fmt=fmt_code(args.fmt), cap=args.cap, seed=args.seed,
                    eval_every=args.eval_every)
    res = simulate(problem, cfg, progress=not args.quiet)
    out = reports.out_dir(args.out, "simulate")
    res.save(out)
    lines = _summary_lines(res, args.target)
    for ln in lines:
        print(ln)
    plots = [] if args.no_plots else reports.plot_runs([res], out, "simulate", gap=problem.f_star is not None,
                                                        metrics=("bits", "packets", "seconds", "joules"))
    rows = [{"quantity": k, "value": v} for k, v in res.summary().items()]
    md = reports.write_table(rows, out, "summary", ["quantity", "value"])
    reports.write_report(out, f"simulate: {res.label}", reports.command_line(args), lines,
                         {"Summary": md}, plots,
                         notes=["Per-round records: rounds.csv (loss, ||grad F||, accuracy) and nodes.csv "
                                "(T, entries, frame bytes, bits, link bytes, packets, airtime, energy, "
                                "selection time per node); run.json holds the configuration."],
                         params=res.problem)
    print(f"wrote {out}")
    return 0


def _summary_lines(res: SimResult, target: float | None) -> list[str]:
    """What `simulate` prints: speed, the final model, the totals, and (with --target and a
    solved f*) the bits to that fraction of the initial gap."""
    s = res.summary()
    lines = [f"{res.label}: {res.rounds} rounds in {res.wall_s:.1f} s = {s['s_per_round']:.4f} s/round "
             f"(1,000 rounds: {1000 * s['s_per_round'] / 60:.1f} min)"]
    line = f"final loss {s['final_loss']:.6g}, ||grad F|| {s['final_grad_norm']:.3g}, accuracy {s['final_accuracy']:.4f}"
    if res.f_star is not None:
        line += f", gap {s['final_gap']:.3g}"
    lines.append(line)
    radio = "" if math.isnan(s["total_seconds"]) else \
        f", {s['total_seconds']:.4g} s airtime, {s['total_joules']:.4g} J"
    lines.append(f"total over nodes: {s['total_bits']:.4g} bits, {s['total_bytes']:.4g} bytes, "
                 f"{s['total_packets']:.4g} packets{radio}; median T {s['T_median']:.0f}; "
                 f"selection {s['select_ms_mean']:.2f} ms/node/round")
    if target is not None and res.f_star is not None:
        gap0 = float(res.loss[0] - res.f_star)
        v, ok = res.to_reach(target * gap0, "bits")
        lines.append(f"bits to {target:g} of the initial gap: {v:.4g}"
                     + ("" if ok else " (not reached: lower bound)"))
    return lines


def _cmd_partition(args: argparse.Namespace) -> int:
    data = data_from_args(args)
    if isinstance(data, list):
        raise ArgumentError("the dataset is already a partition directory")
    try:
        parts = ds.partition(data.X, data.y, args.nodes, mode=args.mode, seed=args.seed, alpha=args.alpha)
        paths = ds.write_partition(args.out, parts, data.classes, layout=args.layout,
                                   meta={"dataset": data.name, "mode": args.mode, "seed": args.seed,
                                         "alpha": args.alpha if args.mode == "skewed" else None})
    except ValueError as e:
        raise DataSpecError(str(e)) from None
    for p, (X, y) in zip(paths, parts):
        counts = np.bincount(y, minlength=data.classes)
        print(f"{p}: {X.shape[0]} rows x {X.shape[1]}, classes {counts.tolist()}")
    print(f"wrote {Path(args.out) / 'partition.json'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="simulate federated CAT training of n nodes (eq. 10)",
                       description=engine.__doc__.split("\n\n")[0])
    add_data_args(p, default="synthetic")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--scheme", default="s", help="identity, s, sq (S+Q) or ss")
    p.add_argument("--rule", default="catavg",
                   help="catavg (default: CAT on the averaged update), cat (the paper's), fixed, alistarh, hybrid, "
                        "identity, or catef (with --ef: catavg scoring the direction sent against the gradient; "
                        "simulator only)")
    p.add_argument("--T", type=int, default=0, help="fixed rule: entries per update")
    p.add_argument("--period", type=int, default=200, help="hybrid rule: CAT every S rounds")
    p.add_argument("--profile", default=PACKET_SMALL, help="cost profile name or .toml path")
    p.add_argument("--metric", default=None, help="CAT's cost metric (default: the profile's)")
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--batch", type=int, default=None, help="mini-batch rows per node (default: full)")
    p.add_argument("--ef", action="store_true", help="error feedback (memory)")
    p.add_argument("--step", type=float, default=1.0, help="step multiplier on the lemma's step")
    add_fmt_arg(p)
    p.add_argument("--cap", type=int, default=None, help="candidate cap K (board RAM)")
    p.add_argument("--eval-every", type=int, default=1, help="accuracy (and mini-batch loss) every N rounds")
    p.add_argument("--target", type=float, default=None,
                   help="solve f* and report bits to this fraction of the initial gap")
    p.add_argument("--out", default=None)
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_simulate, _parser=p, _words=["simulate"])

    q = sub.add_parser("partition", help="split a dataset over nodes into CATD files")
    q.add_argument("--dataset", "--data", dest="data", required=True,
                   help="digits, digits-binary, breast_cancer, iris, wine, synthetic, or a LIBSVM/.catd path")
    q.add_argument("--nodes", type=int, required=True)
    q.add_argument("--mode", choices=("even", "skewed"), default="even")
    q.add_argument("--alpha", type=float, default=0.5, help="skewed: Dirichlet alpha")
    q.add_argument("--full", action="store_true", help="synthetic at RCV1's size")
    q.add_argument("--rows", type=int, default=None)
    q.add_argument("--features", type=int, default=None)
    q.add_argument("--nnz", type=float, default=None)
    q.add_argument("--normalize", action="store_true")
    q.add_argument("--layout", choices=("auto", "dense", "csr"), default="auto")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--out", required=True)
    q.set_defaults(func=_cmd_partition, _parser=q, _words=["partition"])
