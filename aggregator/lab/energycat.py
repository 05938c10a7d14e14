"""`cat-aggregator experiment energy-cat`: energy-aware CAT against the radio-only rule.

With the job's metric in joules, radio-only CAT maximises descent per joule of the *frame*;
energy-aware CAT (edge/energycost.py) adds what the board's CPU spends: per entry sent and
per round (gradient, selection, CAT's scan, wake-up). Both run in the simulator on the same
problem for each board x link pair, and both runs are priced with the whole-board budget
(aggregator/lab/boardbudget.py: radio + compute + listen + wake-up + sleep at one round per
interval) to the same loss target. The ratio says what counting the CPU buys. A third rule
counts only the per-entry CPU joules (no per-round constant), to show why the constant matters.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from aggregator.lab import boardbudget, energy, reports
from aggregator.lab.boardbudget import board_energy_to
from aggregator.lab.experiments import Runner, common_args, prepare_out
from aggregator.lab.simulate import SimConfig, profile_dict

VARIANTS = ("radio-only", "per-entry-only", "energy-aware")
PAIRS = "nrf52840:ieee802154-6lowpan-coap,esp32:wifi-tcp-mqtt-esp32,stm32wl:lorawan-eu868-sf7,nrf52840:ble5-1m-dle"


def exp_energy_cat(args: argparse.Namespace) -> int:
    out = prepare_out(args, "energy-cat")
    R = Runner(args)
    n = args.nodes
    p = R.problem(n)
    target = args.target * R.gap0[n]
    nnz = float(np.mean([X.nnz if hasattr(X, "nnz") else X.size for X, _ in p.parts]))
    battery = boardbudget.load("battery", args.battery)
    cal = boardbudget.load("compute", "micropython32")
    rows: list[dict[str, Any]] = []
    lines = list(R.log)
    lines.append(f"schemes {args.schemes}, {n} node(s), target F - f* <= {args.target:g} of the initial gap, budget "
                 f"{args.rounds} rounds, one round per {args.interval:g} s; every rule priced on the whole board")
    for scheme, pair in [(sc, pr) for sc in args.schemes.split(",") for pr in args.pairs.split(",")]:
        bname, link = pair.split(":")
        board = boardbudget.load("board", bname)
        prof = profile_dict(link)
        common = dict(rounds=args.rounds, seed=args.seed, stop_gap=target, scheme=scheme, profile=link,
                      metric="joules", rule="cat")
        runs = {"radio-only": R.run(n, SimConfig(**common)),
                "per-entry-only": R.run(n, SimConfig(board=bname, board_round=False, **common)),
                "energy-aware": R.run(n, SimConfig(board=bname, **common))}
        row: dict[str, Any] = {"scheme": scheme, "board": bname, "link": link}
        for tag, res in runs.items():
            if isinstance(res, str):
                row[f"{tag}_note"] = res
                continue
            e, ok, _ = board_energy_to(res, prof, board, battery, cal, args.interval, nnz, target)
            r = res.first_reach(target)
            row[f"{tag}_T_median"] = float(np.median(res.T[: r or res.rounds]))
            row[f"{tag}_rounds"] = r if r is not None else res.rounds
            row[f"{tag}_board_j"] = e
            row[f"{tag}_reached"] = ok
        base = row.get("radio-only_board_j")
        parts = []
        for tag in runs:
            if f"{tag}_board_j" not in row:
                parts.append(f"{tag}: {row.get(f'{tag}_note')}")
                continue
            if base:
                row[f"{tag}_over_radio"] = row[f"{tag}_board_j"] / base
            parts.append(f"{tag} median T {row[f'{tag}_T_median']:g}, {row[f'{tag}_rounds']} rounds, "
                         f"{row[f'{tag}_board_j']:.4g} J" + ("" if row[f"{tag}_reached"] else " (target not reached)")
                         + (f" = {row[f'{tag}_over_radio']:.3g} x radio-only" if base and tag != "radio-only" else ""))
        lines.append(f"{scheme}, {bname} on {link}: " + "; ".join(parts))
        rows.append(row)
    for ln in lines[len(R.log):]:
        print(ln)
    cols = ["scheme", "board", "link"] + [f"{t}_{c}" for t in VARIANTS
                                for c in ("T_median", "rounds", "board_j", "reached", "over_radio", "note")]
    md = reports.write_table(rows, out, "energy-cat", cols)
    reports.write_report(out, "energy-cat: energy-aware CAT against the radio-only rule", reports.command_line(args),
                         lines, {"Whole-board energy to the target": md}, [],
                         params={"schemes": args.schemes, "nodes": n, "rounds budget": args.rounds,
                                 "target": args.target, "interval_s": args.interval, "battery": args.battery},
                         notes=["Every rule uses the joules metric. radio-only: the frame's radio joules (the "
                                "plain CostModel). energy-aware: plus the board's CPU joules per entry sent and the "
                                "round's T-independent joules (gradient, selection, CAT's scan, wake-up), which is "
                                "what the edge uses (edge/energycost.py, numbers from boardcompute.cat_terms). "
                                "per-entry-only: the per-entry CPU joules without the round's constant (ablation: "
                                "a cost nearly proportional to T drives T down and the rounds up).",
                                "Whole-board energy: radio + compute + listen + wake-up + sleep (boardbudget)."])
    print(f"wrote {out}")
    return 0


def add_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("--nodes", type=int, default=4)
    q.add_argument("--schemes", default="s,sq", help="comma-separated (default s,sq)")
    q.add_argument("--pairs", default=PAIRS, help=f"board:link pairs, comma-separated (default {PAIRS})")
    q.add_argument("--interval", type=float, default=600.0, help="seconds between rounds (default 600)")
    q.add_argument("--battery", default="2xaa")
    q.set_defaults(rounds=1500, target=0.05)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `experiment energy-cat` beside the experiments of aggregator/lab/experiments.py."""
    names = next(a for a in sub.choices["experiment"]._actions if isinstance(a, argparse._SubParsersAction))
    help_ = "energy-aware CAT (CPU joules counted) against radio-only CAT, boards x links"
    q = names.add_parser("energy-cat", help=help_, description=help_)
    common_args(q)
    add_args(q)
    q.set_defaults(func=exp_energy_cat, _parser=q, _words=["experiment", "energy-cat"])
