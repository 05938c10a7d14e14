"""energy-cat: energy-aware CAT against the radio-only rule (`cat-aggregator experiment energy-cat`).

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

from aggregator.lab import boardbudget, reports
from aggregator.lab.boardbudget import board_energy_to
from aggregator.lab.cliargs import ArgumentError
from aggregator.lab.engine import Infeasible, SimConfig
from aggregator.lab.experiments.common import Runner, finish
from aggregator.lab.pricing import profile_dict
from aggregator.lab.results import SimResult

NAME = "energy-cat"
HELP = "energy-aware CAT (CPU joules counted) against radio-only CAT, boards x links"
VARIANTS = ("radio-only", "per-entry-only", "energy-aware")
PAIRS = "nrf52840:ieee802154-6lowpan-coap,esp32:wifi-tcp-mqtt-esp32,stm32wl:lorawan-eu868-sf7,nrf52840:ble5-1m-dle"


def add_arguments(q: argparse.ArgumentParser) -> None:
    q.add_argument("--nodes", type=int, default=4)
    q.add_argument("--schemes", default="s,sq", help="comma-separated (default s,sq)")
    q.add_argument("--pairs", default=PAIRS, help=f"board:link pairs, comma-separated (default {PAIRS})")
    q.add_argument("--interval", type=float, default=600.0, help="seconds between rounds (default 600)")
    q.add_argument("--battery", default="2xaa")
    q.set_defaults(rounds=1500, target=0.05)


def _run(R: Runner, n: int, cfg: SimConfig) -> SimResult | str:
    """A finished run, or why it cannot happen on the link (the row notes it)."""
    try:
        return R.run(n, cfg)
    except Infeasible as e:
        return str(e)


def run(args: argparse.Namespace) -> int:
    pairs = _pairs(args.pairs)  # a bad pair, board, link or battery: one line before anything is written
    boards = {bname: boardbudget.load("board", bname) for bname, _ in pairs}
    links = {link: profile_dict(link) for _, link in pairs}
    battery = boardbudget.load("battery", args.battery)
    out = reports.out_dir(args.out, NAME)
    R = Runner(args)
    n = args.nodes
    p = R.problem(n)
    target = args.target * R.gap0[n]
    nnz = float(np.mean(p.nnz()))
    cal = boardbudget.load("compute", "micropython32")
    rows: list[dict[str, Any]] = []
    lines = [f"schemes {args.schemes}, {n} node(s), target F - f* <= {args.target:g} of the initial gap, budget "
             f"{args.rounds} rounds, one round per {args.interval:g} s; every rule priced on the whole board"]
    for scheme, (bname, link) in [(sc, pr) for sc in args.schemes.split(",") for pr in pairs]:
        board, prof = boards[bname], links[link]
        common = dict(rounds=args.rounds, seed=args.seed, stop_gap=target, scheme=scheme, profile=link,
                      metric="joules", rule="cat")
        runs = {"radio-only": _run(R, n, SimConfig(**common)),
                "per-entry-only": _run(R, n, SimConfig(board=bname, board_round=False, **common)),
                "energy-aware": _run(R, n, SimConfig(board=bname, **common))}
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
    lines = R.conclude(lines)
    cols = ["scheme", "board", "link"] + [f"{t}_{c}" for t in VARIANTS
                                for c in ("T_median", "rounds", "board_j", "reached", "over_radio", "note")]
    md = reports.write_table(rows, out, "energy-cat", cols)
    return finish(args, out, "energy-cat: energy-aware CAT against the radio-only rule", lines,
                  {"Whole-board energy to the target": md}, [],
                  params={"schemes": args.schemes, "nodes": n, "rounds budget": args.rounds,
                          "target": args.target, "interval_s": args.interval, "battery": args.battery},
                  notes=("Every rule uses the joules metric. radio-only: the frame's radio joules (the "
                         "plain CostModel). energy-aware: plus the board's CPU joules per entry sent and the "
                         "round's T-independent joules (gradient, selection, CAT's scan, wake-up), which is "
                         "what the edge uses (edge/energycost.py, numbers from boardcompute.cat_terms). "
                         "per-entry-only: the per-entry CPU joules without the round's constant (ablation: "
                         "a cost nearly proportional to T drives T down and the rounds up).",
                         "Whole-board energy: radio + compute + listen + wake-up + sleep (boardbudget)."))


def _pairs(text: str) -> list[tuple[str, str]]:
    """--pairs as (board, link) tuples; a pair without its colon is an ArgumentError."""
    out = []
    for pair in text.split(","):
        bname, sep, link = pair.partition(":")
        if not (sep and bname and link):
            raise ArgumentError(f"--pairs: {pair!r} is not BOARD:LINK")
        out.append((bname, link))
    return out
