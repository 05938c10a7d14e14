"""bits-vs-T: bits to reach eps for fixed T on a grid, under the payload and the packet
model, with CAT marked (figure 1c). CAT, untuned, should land within 10 % of the best fixed T.

The fixed-T runs and GD are trained once under the payload model and priced under both
models (`common.priced`); CAT, which reads the cost, runs once per model.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from aggregator.lab import reports
from aggregator.lab.engine import Infeasible, SimConfig
from aggregator.lab.experiments.common import Runner, finish, packet_entries, priced, progress_bar, reach
from aggregator.lab.pricing import PACKET_SMALL, PAYLOAD
from aggregator.lab.results import SimResult

NAME = "bits-vs-T"
HELP = "bits to eps for fixed T, payload and packet models, CAT marked (figure 1c)"


def add_arguments(q: argparse.ArgumentParser) -> None:
    q.add_argument("--nodes", type=int, default=1)
    q.add_argument("--points", type=int, default=12, help="geometric T grid points (plus packet multiples)")
    q.add_argument("--payload-profile", default=PAYLOAD)
    q.add_argument("--packet-profile", default=PACKET_SMALL)
    q.set_defaults(rounds=4000, target=0.1)


def _train(R: Runner, args: argparse.Namespace, grid: list[int], models: dict[str, str],
           stop: float) -> tuple[dict[int, SimResult], dict[str, SimResult], SimResult]:
    """S with every fixed T on the grid, CAT under each model, and GD; each stops at the target."""
    n = args.nodes
    runs: dict[int, SimResult] = {}
    bar = progress_bar(len(grid) + 3, NAME, R.progress)
    for t in grid:
        runs[t] = R.run(n, SimConfig(scheme="s", rule="fixed", rule_param=t, profile=PAYLOAD, rounds=args.rounds,
                                     seed=args.seed, stop_gap=stop))
        bar.update()
    cat: dict[str, SimResult] = {}
    for name, prof in models.items():
        cat[name] = R.run(n, SimConfig(scheme="s", rule="cat", profile=prof, rounds=args.rounds, seed=args.seed,
                                       stop_gap=stop))
        bar.update()
    gd = R.run(n, SimConfig(scheme="identity", rule="identity", profile=PAYLOAD, rounds=args.rounds,
                            seed=args.seed, stop_gap=stop))
    bar.update()
    bar.close()
    return runs, cat, gd


def _fixed_costs(runs: dict[int, SimResult], grid: list[int], models: dict[str, str], target: float
                 ) -> tuple[list[dict], dict[str, tuple[np.ndarray, np.ndarray]], dict[str, tuple[int, float]]]:
    """Bits to the target of every fixed T under each model: table rows, the (bits, reached)
    series per model, and each model's best T and its bits (among the T that reached it)."""
    rows = []
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    best: dict[str, tuple[int, float]] = {}
    for name, prof in models.items():
        bits = np.zeros(len(grid))
        ok = np.zeros(len(grid), dtype=bool)
        for i, t in enumerate(grid):
            v, hit, rounds = reach(priced(runs[t], prof), target, "bits")
            bits[i], ok[i] = v, hit
            rows.append({"model": name, "profile": prof, "T": t, "bits_to_eps": v, "reached": hit,
                         "rounds": rounds})
        series[name] = (bits, ok)
        if ok.any():
            i = int(np.argmin(np.where(ok, bits, np.inf)))
            best[name] = (grid[i], float(bits[i]))
    return rows, series, best


def _cat_against_best(args: argparse.Namespace, models: dict[str, str], cat: dict[str, SimResult], gd: SimResult,
                      best: dict[str, tuple[int, float]], target: float
                      ) -> tuple[list[str], list[dict], dict[str, float], dict[str, float]]:
    """Per model: CAT's bits against the best fixed T (the 10 % verdict) and GD's; the result
    lines, the table rows, and CAT's and GD's bits for the plot."""
    lines = []
    cat_bits: dict[str, float] = {}
    gd_bits: dict[str, float] = {}
    table = []
    for name, prof in models.items():
        v, hit, rounds = reach(cat[name], target, "bits")
        cat_bits[name] = v
        gv, ghit, _ = reach(priced(gd, prof), target, "bits")
        gd_bits[name] = gv
        T_med = float(np.median(cat[name].T[:max(1, rounds)])) if cat[name].T.size else float("nan")
        if name in best:
            bt, bb = best[name]
            rr = v / bb
            verdict = "yes" if rr <= 1.10 and hit else "NO"
            lines.append(f"{name} model ({prof}): best fixed T = {bt} needs {bb:.4g} bits; CAT needs {v:.4g} bits"
                         f"{'' if hit else ' (not reached: lower bound)'} (median T {T_med:g}); "
                         f"CAT/best = {rr:.3f} (within 10 %: {verdict}); GD needs {gv:.4g} bits "
                         f"= {gv / bb:.3g}x the best fixed T")
        else:
            rr = math.nan
            lines.append(f"{name} model: no fixed T reached the target within {args.rounds} rounds")
        table.append({"model": name, "profile": prof, "best_fixed_T": best.get(name, (None,))[0],
                      "best_fixed_bits": best.get(name, (None, None))[1], "cat_bits": v, "cat_reached": hit,
                      "cat_median_T": T_med, "cat_over_best": rr, "gd_bits": gv, "gd_reached": ghit})
    return lines, table, cat_bits, gd_bits


def _loss_plots(out: Path, models: dict[str, str], cat: dict[str, SimResult], runs: dict[int, SimResult],
                grid: list[int], tau: int, best: dict[str, tuple[int, float]], target: float) -> list[str]:
    """Per model, CAT's loss against bits beside a few fixed T (1, one packet, the best, the
    grid's middle); a T whose frames do not fit that model's link is left out."""
    plots: list[str] = []
    for name, prof in models.items():
        show = [cat[name]]
        for t in sorted({1, tau, best.get(name, (tau,))[0], grid[len(grid) // 2]}):
            try:
                show.append(priced(runs[t], prof))
            except Infeasible:
                continue
        plots += reports.plot_runs(show, out, f"loss-{name}", gap=True, metrics=("bits", "packets"),
                                   title=f"{prof}", target=target)
    return plots


def run(args: argparse.Namespace) -> int:
    out = reports.out_dir(args.out, NAME)
    R = Runner(args)
    n = args.nodes
    p = R.problem(n)
    d = p.dim
    target = args.target * R.gap0[n]
    models = {"payload": args.payload_profile, "packet": args.packet_profile}
    tau = packet_entries(args.packet_profile, "s", d)
    geo = np.unique(np.round(np.geomspace(1, d, args.points)).astype(int))
    grid = sorted(set(int(t) for t in geo) | {tau * k for k in range(1, 9) if tau * k <= d})
    runs, cat, gd = _train(R, args, grid, models, target)
    rows, series, best = _fixed_costs(runs, grid, models, target)
    head = [f"target eps: F - f* <= {args.target:g} x (F(x0) - f*) = {target:.4g}; S, {n} node(s), "
            f"budget {args.rounds} rounds; one packet of {args.packet_profile} holds {tau} S entries"]
    result, table2, cat_bits, gd_bits = _cat_against_best(args, models, cat, gd, best, target)
    lines = R.conclude(head + result)
    md1 = reports.write_table(rows, out, "bits-vs-T", ["model", "profile", "T", "bits_to_eps", "reached", "rounds"])
    md2 = reports.write_table(table2, out, "cat-vs-best",
                              ["model", "profile", "best_fixed_T", "best_fixed_bits", "cat_bits", "cat_reached",
                               "cat_median_T", "cat_over_best", "gd_bits", "gd_reached"])
    plots = reports.plot_bits_vs_T(np.array(grid, dtype=float), series, cat_bits, gd_bits, out, "bits-vs-T",
                                   title=f"S, {p.name}, eps = {args.target:g} of the initial gap")
    plots += _loss_plots(out, models, cat, runs, grid, tau, best, target)
    return finish(args, out, "bits-vs-T: bits to reach eps for fixed T, with CAT (figure 1c)",
                  lines, {"CAT against the best fixed T": md2, "Every fixed T": md1}, plots,
                  params={"nodes": n, "rounds budget": args.rounds, "target": args.target})
