"""radios: the same training priced on every shipped link profile; the T CAT picks on each
link, and how the fixed T that is best on one link does on another.

Each link's cost is in its profile's default metric (joules, seconds of airtime, bytes).
Fixed-T runs and GD are trained once and priced on every link; a T whose frame exceeds a
link's largest message does not fit there and its cell reads "infeasible"; CAT, which reads
the cost, runs once per link, and a link too small for even its smallest frame gets a note.
Where a board profile goes with the link, CAT's and GD's runs are also priced on the whole
board (`boardbudget.board_columns`): joules to the target and battery life.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aggregator.lab import boardbudget, reports
from aggregator.lab.cliargs import add_fmt_arg, fmt_code, int_list
from aggregator.lab.engine import Infeasible, SimConfig
from aggregator.lab.experiments.common import Runner, finish, link_profiles, priced, progress_bar, reach
from aggregator.lab.pricing import PAYLOAD, profile_dict
from aggregator.lab.problem import Problem
from aggregator.lab.results import SimResult

NAME = "radios"
HELP = "one training priced on every link profile; CAT's T; fixed T across links"
DEFAULT_GRID = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256, 512, 1024)
INFEASIBLE = "infeasible"
COLUMNS = ["profile", "metric", "cat_median_T", "cat_T_range", "t_max", "rounds", "reached", "bytes", "packets",
           "airtime_s", "energy_j", "cat_cost", "best_fixed_T", "best_fixed_cost", "cat_over_best", "gd_cost",
           "duty_cycle_wall_h", "board", "cat_board_j", "gd_board_j", "cat_battery_days", "gd_battery_days", "note"]

#: a fixed T on a link: (cost to the target, reached?), None where its frames do not fit the link.
Cell = tuple[float, bool] | None


def add_arguments(q: argparse.ArgumentParser) -> None:
    q.add_argument("--nodes", type=int, default=4)
    q.add_argument("--scheme", default="s")
    q.add_argument("--profiles", default=None, help="comma-separated (default: every link profile)")
    q.add_argument("--grid", default=None, help="comma-separated fixed T values")
    add_fmt_arg(q, help="value format on the wire (f16 lets T = 1 fit LoRaWAN DR0's 51 B)")
    q.set_defaults(rounds=3000, target=0.1)


@dataclass
class _Training:
    """The runs: every fixed T and GD (under the payload model, to be priced per link) and
    CAT on each link; `cat_infeasible` says why CAT could not run on a link."""

    fixed: dict[int, SimResult]
    gd: SimResult
    cat: dict[str, SimResult] = field(default_factory=dict)
    cat_infeasible: dict[str, str] = field(default_factory=dict)


def _train(R: Runner, args: argparse.Namespace, profs: list[str], grid: list[int], target: float) -> _Training:
    n = args.nodes
    common = dict(rounds=args.rounds, seed=args.seed, stop_gap=target, scheme=args.scheme, fmt=fmt_code(args.fmt))
    bar = progress_bar(len(grid) + len(profs) + 1, NAME, R.progress)
    fixed: dict[int, SimResult] = {}
    for t in grid:
        fixed[t] = R.run(n, SimConfig(rule="fixed", rule_param=t, profile=PAYLOAD, **common))
        bar.update()
    gd = R.run(n, SimConfig(scheme="identity", rule="identity", profile=PAYLOAD,
                            **{k: v for k, v in common.items() if k != "scheme"}))
    bar.update()
    tr = _Training(fixed, gd)
    for prof in profs:
        try:
            tr.cat[prof] = R.run(n, SimConfig(rule="cat", profile=prof, **common))
        except Infeasible as e:
            tr.cat_infeasible[prof] = str(e)
        bar.update()
    bar.close()
    return tr


def _fixed_costs(fixed: dict[int, SimResult], profs: list[str], target: float
                 ) -> tuple[dict[str, dict[int, Cell]], dict[str, tuple[int, float]]]:
    """Every fixed T priced on every link, and per link the best T that reached the target
    with its cost."""
    cost: dict[str, dict[int, Cell]] = {}
    best: dict[str, tuple[int, float]] = {}
    for prof in profs:
        metric = profile_dict(prof)["default_metric"]
        cost[prof] = {}
        for t, res in fixed.items():
            try:
                v, ok, _ = reach(priced(res, prof), target, metric)
            except Infeasible:
                cost[prof][t] = None
                continue
            cost[prof][t] = (v, ok)
        ok_t = [(c[0], t) for t, c in cost[prof].items() if c is not None and c[1]]
        if ok_t:
            bv, bt = min(ok_t)
            best[prof] = (bt, bv)
    return cost, best


def _cat_on_link(prof: str, c: SimResult, best: dict[str, tuple[int, float]], target: float
                 ) -> tuple[dict, list[str]]:
    """CAT's row on one link (T range, cost to the target, radio totals, duty-cycle wall-clock,
    against the link's best fixed T) and its result lines."""
    pd = profile_dict(prof)
    metric = pd["default_metric"]
    v, ok, rounds = reach(c, target, metric)
    sl = slice(0, rounds)
    row: dict[str, Any] = {
        "cat_median_T": float(np.median(c.T[sl])) if c.T.size else None,
        "cat_T_range": f"{int(c.T[sl].min())}..{int(c.T[sl].max())}" if c.T.size else "",
        "t_max": c.config["t_max"], "rounds": rounds, "reached": ok,
        "bytes": float(c.bytes[sl].sum()), "packets": float(c.packets[sl].sum()),
        "airtime_s": float(c.seconds[sl].sum()), "energy_j": float(c.joules[sl].sum()), "cat_cost": v}
    dc = (pd.get("limits") or {}).get("duty_cycle")
    if dc:
        wall = float((c.seconds[sl].max(axis=1) / dc).sum()) if rounds else 0.0
        row["duty_cycle_wall_h"] = wall / 3600.0
    head = (f"{prof}: CAT picks T {row['cat_T_range']} (median {row['cat_median_T']:g}, largest that "
            f"fits {row['t_max']}); {metric} to target: CAT {v:.4g}{'' if ok else ' (not reached: lower bound)'}")
    lines = []
    if prof in best:
        bt, bv = best[prof]
        row.update({"best_fixed_T": bt, "best_fixed_cost": bv, "cat_over_best": v / bv})
        lines.append(f"{head}, best fixed T = {bt}: {bv:.4g}; CAT/best = {v / bv:.3g}")
    else:
        lines.append(f"{head}; no fixed T on the grid reached the target")
    if dc:
        lines.append(f"  {prof}: at the {100 * dc:g} % duty cycle the CAT run needs at least "
                     f"{row['duty_cycle_wall_h']:.3g} h of wall-clock")
    return row, lines


def _gd_on_link(gd: SimResult, prof: str) -> SimResult | str:
    """GD's run priced on a link, or "infeasible" (its d values do not fit the link's largest message)."""
    try:
        return priced(gd, prof)
    except Infeasible:
        return INFEASIBLE


def _gd_cost(g: SimResult | str, prof: str, target: float) -> float | str:
    """GD's cost to the target on a link (`_gd_on_link`): a number, the cost over the budget
    marked "not reached", or "infeasible"."""
    if isinstance(g, str):
        return g
    gv, gok, _ = reach(g, target, profile_dict(prof)["default_metric"])
    return gv if gok else f"{gv:.4g} (not reached)"


def _board_on_link(prof: str, c: SimResult | str, g: SimResult | str, problem: Problem, target: float
                   ) -> tuple[dict, list[str]]:
    """The whole-board columns of a link's row (CAT's and GD's joules to the target and battery
    life on the link's default board, `boardbudget.board_columns`) and their result line."""
    row = boardbudget.board_columns(c, g, profile_dict(prof), problem, target)
    if "cat_board_j" not in row:
        return row, []
    cb, gb = row["cat_board_j"], row.get("gd_board_j", INFEASIBLE)
    both = isinstance(cb, float) and isinstance(gb, float)
    line = (f"  {prof} on {row['board']} (whole board, 2xaa, one round per 600 s): CAT "
            f"{cb if isinstance(cb, str) else f'{cb:.4g} J'}, GD "
            f"{gb if isinstance(gb, str) else f'{gb:.4g} J'} to target"
            + (f" (GD/CAT {gb / cb:.3g})" if both else "") + f"; battery life CAT "
            f"{row['cat_battery_days']:.4g} days" + (f", GD {row['gd_battery_days']:.4g} days"
                                                     if "gd_battery_days" in row else ""))
    return row, [line]


def _cross(profs: list[str], cost: dict[str, dict[int, Cell]], best: dict[str, tuple[int, float]]
           ) -> tuple[list[dict], list[str]]:
    """The fixed T best on link A (rows), priced on link B (columns), over B's own best; and
    the line naming the worst pairing."""
    cross = []
    worst = (1.0, "", "")
    for a in profs:
        if a not in best:
            continue
        ta = best[a][0]
        row: dict[str, Any] = {"tuned_on": a, "T": ta}
        for b in profs:
            if b not in best:
                row[b] = "—"
                continue
            v = cost[b].get(ta)
            if v is None:
                row[b] = INFEASIBLE
                continue
            ratio = v[0] / best[b][1]
            row[b] = f"{ratio:.3g}" + ("" if v[1] else " (lower bound)")
            if ratio > worst[0]:
                worst = (ratio, a, b)
        cross.append(row)
    lines = []
    if worst[1]:
        infeasible = sum(1 for r in cross for b in profs if r.get(b) == INFEASIBLE)
        lines.append(f"fixed T tuned on one link, used on another: worst {worst[0]:.3g}x the best fixed T there "
                     f"(tuned on {worst[1]}, used on {worst[2]}); {infeasible} pairing(s) infeasible (frame too large)")
    return cross, lines


def _plot_fixed_per_link(out: Path, profs: list[str], cost: dict[str, dict[int, Cell]],
                         best: dict[str, tuple[int, float]], cat: dict[str, SimResult], target: float) -> list[str]:
    """Each link's cost of every fixed T over its best, CAT starred at its median T."""
    plt = reports.pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for prof in profs:
        pts = [(t, v[0]) for t, v in cost[prof].items() if v is not None]
        if not pts or prof not in best:
            continue
        ts, vs = zip(*pts)
        ln = ax.plot(ts, np.array(vs) / best[prof][1], marker="o", ms=3, label=prof)
        c = cat.get(prof)
        if c is not None:
            ax.scatter([np.median(c.T)], [reach(c, target, profile_dict(prof)["default_metric"])[0]
                                          / best[prof][1]], marker="*", s=80, color=ln[0].get_color())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("fixed T (star: CAT at its median T)")
    ax.set_ylabel("cost to target / best fixed T on that link")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return reports.save_fig(fig, out, "fixed-T-per-link")


def run(args: argparse.Namespace) -> int:
    out = reports.out_dir(args.out, NAME)
    R = Runner(args)
    n = args.nodes
    p = R.problem(n)
    target = args.target * R.gap0[n]
    profs = args.profiles.split(",") if args.profiles else link_profiles()
    grid = int_list(args.grid, "--grid") if args.grid else [t for t in DEFAULT_GRID if t <= p.dim]
    tr = _train(R, args, profs, grid, target)
    cost, best = _fixed_costs(tr.fixed, profs, target)
    result = [f"scheme {args.scheme}, values {args.fmt}, {n} node(s), target F - f* <= {args.target:g} of the "
              f"initial gap, budget {args.rounds} rounds; each link's cost in its default metric"]
    table = []
    plots: list[str] = []
    for prof in profs:
        row: dict[str, Any] = {"profile": prof, "metric": profile_dict(prof)["default_metric"]}
        if prof in tr.cat_infeasible:
            row["note"] = tr.cat_infeasible[prof]
            result.append(f"{prof}: CAT cannot run: {tr.cat_infeasible[prof]}")
        else:
            c = tr.cat[prof]
            more, lines = _cat_on_link(prof, c, best, target)
            row.update(more)
            result += lines
            show = [c] + ([priced(tr.fixed[best[prof][0]], prof)] if prof in best else [])
            plots += reports.plot_runs(show, out, f"loss-{prof}", gap=True,
                                       metrics=("bytes", "packets", "seconds", "joules"), title=prof,
                                       target=target)
        g = _gd_on_link(tr.gd, prof)
        row["gd_cost"] = _gd_cost(g, prof, target)
        more, lines = _board_on_link(prof, tr.cat.get(prof, tr.cat_infeasible.get(prof, "")), g, p, target)
        row.update(more)  # whole board: radio + CPU + listen + wake-up + sleep
        result += lines
        table.append(row)
    cross, lines = _cross(profs, cost, best)
    result += lines
    cat_ok = [r["cat_over_best"] for r in table if "cat_over_best" in r]
    if cat_ok:
        result.append(f"CAT/best fixed T over {len(cat_ok)} links: median {np.median(cat_ok):.3g}, "
                      f"worst {max(cat_ok):.3g} (CAT is not tuned per link)")
    lines = R.conclude(result)
    md1 = reports.write_table(table, out, "radios", COLUMNS)
    md2 = reports.write_table(cross, out, "cross", ["tuned_on", "T"] + profs)
    fx = []
    for prof in profs:
        for t in grid:
            v = cost[prof][t]
            fx.append({"profile": prof, "T": t, "cost": None if v is None else v[0],
                       "reached": None if v is None else v[1], "note": INFEASIBLE if v is None else ""})
    md3 = reports.write_table(fx, out, "fixed-T", ["profile", "T", "cost", "reached", "note"])
    plots = _plot_fixed_per_link(out, profs, cost, best, tr.cat, target) + plots
    return finish(args, out, "radios: one training, every link", lines,
                  {"CAT on each link": md1, "Fixed T tuned on one link (rows) used on another (columns), "
                   "cost / that link's best fixed T": md2, "Every fixed T on every link": md3}, plots,
                  params={"scheme": args.scheme, "nodes": n, "rounds budget": args.rounds,
                          "target": args.target},
                  notes=["Costs are in each profile's default metric (joules, seconds of airtime, bytes).",
                         "Board columns: whole-board joules of all nodes to the target (radio + compute + "
                         "listen + wake-up + sleep, aggregator/lab/boardbudget.py) on the link's default "
                         "board, one round per 600 s, and the first node's battery life on 2xAA.",
                         "Fixed-T runs are trained once and priced on every link; a T whose frame exceeds "
                         "the link's largest message is infeasible there."])
