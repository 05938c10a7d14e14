"""memory: every scheme under CAT with and without error feedback on 1 and 4 nodes: the gap
each can reach at all, and the bits to a tight target (1 % of the initial gap).

Why: biased compressors (S, S+Q) on several nodes stall near the optimum, because the local
gradients do not vanish there; error feedback (Stich, Cordonnier and Jaggi, "Sparsified SGD
with memory", NeurIPS 2018) lets them converge, at d floats of RAM on each board.
"""

from __future__ import annotations

import argparse

import numpy as np

from aggregator.lab import reports
from aggregator.lab.cliargs import int_list
from aggregator.lab.engine import SimConfig, scheme_label
from aggregator.lab.experiments.common import Runner, finish, progress_bar, ratio_text, reach
from aggregator.lab.pricing import PACKET_SMALL
from aggregator.lab.results import SimResult

NAME = "memory"
HELP = "every scheme with and without error feedback, 1 and 4 nodes"
SCHEMES = ("s", "sq", "ss")
COLUMNS = ["nodes", "scheme", "error_feedback", "best_gap_rel", "stopped_at_floor", "reached_target",
           "bits_to_target", "rounds_to_target", "final_accuracy", "median_T"]


def add_arguments(q: argparse.ArgumentParser) -> None:
    q.add_argument("--nodes-list", default="1,4")
    q.add_argument("--profile", default=PACKET_SMALL)
    q.add_argument("--floor", type=float, default=0.001,
                   help="stop a run once F - f* is this fraction of the initial gap")
    q.set_defaults(rounds=1500, target=0.01)


def _row(n: int, label: str, ef: bool, r: SimResult, g0: float, target: float, floor: float) -> dict:
    """One run's table row: the best gap it saw, whether it stopped at the floor, bits to the target."""
    b, ok, rounds = reach(r, target, "bits")
    acc = r.accuracy[np.isfinite(r.accuracy)]
    return {"nodes": n, "scheme": label, "error_feedback": ef, "best_gap_rel": float(np.nanmin(r.gap)) / g0,
            "stopped_at_floor": r.first_reach(floor * g0) is not None, "reached_target": ok, "bits_to_target": b,
            "rounds_to_target": rounds, "final_accuracy": float(acc[-1]) if acc.size else None,
            "median_T": float(np.median(r.T)) if r.T.size else None}


def _verdict(label: str, n: int, off: SimResult, on: SimResult, g0: float, target: float, rel: float) -> str:
    """The result line of one scheme on n nodes: where each run gets without and with EF."""
    hit_off, hit_on = reach(off, target, "bits"), reach(on, target, "bits")

    def desc(run: SimResult, hit: tuple) -> str:
        if hit[1]:
            return f"reaches {100 * rel:g} % with {hit[0]:.4g} bits"
        gap_rel = float(np.nanmin(run.gap)) / g0
        return f"stalls at {100 * gap_rel:.3g} % of the gap ({100 * rel:g} % not reached)"

    ratio = ""
    if hit_off[1] or hit_on[1]:
        ratio = f"; bits ratio without/with EF: {ratio_text(hit_off[:2], hit_on[:2])}".replace("CAT", "EF")
    return f"{label}, {n} node(s): without EF {desc(off, hit_off)}; with EF {desc(on, hit_on)}" + ratio


def run(args: argparse.Namespace) -> int:
    out = reports.out_dir(args.out, NAME)
    R = Runner(args)
    node_counts = int_list(args.nodes_list, "--nodes-list")
    rows = []
    verdicts = []
    plots: list[str] = []
    bar = progress_bar(len(node_counts) * len(SCHEMES) * 2, NAME, R.progress)
    for n in node_counts:
        R.problem(n)
        g0 = R.gap0[n]
        target = args.target * g0
        runs = []
        for sch in SCHEMES:
            label = scheme_label(sch)
            res = {}
            for ef in (False, True):
                res[ef] = R.run(n, SimConfig(scheme=sch, rule="cat", profile=args.profile, rounds=args.rounds,
                                             seed=args.seed, error_feedback=ef, stop_gap=args.floor * g0))
                bar.update()
                runs.append(res[ef])
                rows.append(_row(n, label, ef, res[ef], g0, target, args.floor))
            verdicts.append(_verdict(label, n, res[False], res[True], g0, target, args.target))
        plots += reports.plot_runs(runs, out, f"loss-{n}node", gap=True, metrics=("bits",),
                                   title=f"{n} node(s), CAT, {args.profile}", target=target)
    bar.close()
    lines = R.conclude([f"CAT under {args.profile}; tight target {100 * args.target:g} % of F(x0) - f*; runs "
                        f"stop at {100 * args.floor:g} % or after {args.rounds} rounds"] + verdicts)
    md = reports.write_table(rows, out, "memory", COLUMNS)
    return finish(args, out, "memory: error feedback on and off", lines,
                  {"Reachable gap and bits to the target": md}, plots,
                  params={"profile": args.profile, "nodes": node_counts, "rounds budget": args.rounds,
                          "target": args.target},
                  notes=["best_gap_rel: the smallest (F - f*) / (F(x0) - f*) seen in the run.",
                         "Error feedback: the node compresses v = g/L + e and keeps e <- v - q "
                         "(Stich, Cordonnier and Jaggi, \"Sparsified SGD with memory\", NeurIPS 2018)."])
