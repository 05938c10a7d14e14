"""grid: CAT against every baseline over nodes x links x targets x error feedback x seeds x
problem sizes x splits, so that where CAT loses shows up as a pattern, not an anecdote.

A *cell* is (nodes, link, target, error feedback, seed, size, split). In each cell every
method's cost to the target is the bits on air until the first round whose gap is at most
the target (a fraction of that problem's initial gap); a method that never gets there is
charged its bits over the whole round budget and marked `reached = False` (its ratio is a
bound). A method whose frames do not fit the link is `n/a` there (GD on LoRa).

Methods: CAT S, S+Q and SS under the project's default rule (`catavg`: CAT on the averaged
update, edge/cat.py), CAT S+Q under the paper's rule (`cat`) (cost-aware: trained once per
link); Alistarh's S+Q rule, GD and
fixed T on a grid (cost-blind: trained once per problem and priced on every link, as
`common.priced` explains); the best fixed T of the cell is an oracle no user has (it is chosen
after the fact, per cell, from the grid).

Output: grid.csv (one row per cell and method), one heatmap per comparison (median ratio over
seeds, sizes, splits and error feedback, per link and nodes x target), report.md with the
command, and the two lines the project tracks:
`cells where rule catavg (default) needs more bits than Alistarh S+Q: N of M` and
`cells where rule catavg (default) needs more than 1.1x the best fixed T: N of M` (CAT S+Q under
the project's default rule; M counts the cells where both sides fit the link), then the same two
lines for the other CAT rule (`OTHER_RULE`: the paper's `cat`, S+Q only), side by side, and on
cells with error feedback for rule `catef` (`EF_RULE`, S+Q: catavg scoring the direction error
feedback sends against the node's gradient; not run, and no lines, without error feedback).
"""

from __future__ import annotations

import argparse
import itertools
import math
from dataclasses import dataclass

import numpy as np

from aggregator.lab import reports
from aggregator.lab.cliargs import ArgumentError
from aggregator.lab.engine import EF_RULE, Infeasible, SimConfig, scheme_label, simulate
from aggregator.lab.experiments.common import finish, priced, progress_bar, reach
from aggregator.lab.pricing import PACKET_LARGE, PACKET_SMALL
from aggregator.lab.problem import load_data, make_problem
from aggregator.lab.results import SimResult

NAME = "grid"
HELP = "CAT vs Alistarh, best fixed T and GD on nodes x links x targets x EF x seeds x sizes x splits"
LINKS = (PACKET_SMALL, PACKET_LARGE, "ieee802154-6lowpan-coap", "lorawan-eu868-sf7", "ble5-1m-dle")
LINK_LABELS = {PACKET_SMALL: "packet 128/64/128", PACKET_LARGE: "packet 576/64/512",
               "ieee802154-6lowpan-coap": "802.15.4 CoAP", "lorawan-eu868-sf7": "LoRa SF7",
               "ble5-1m-dle": "BLE 5"}
NODES = (1, 4, 16)
TARGETS = (0.5, 0.1, 0.01)
FIXED_T = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CAT_SCHEMES = ("s", "sq", "ss")
#: (rows, features) of the synthetic RCV1-like problems; the quick grid runs the first.
SIZES = ((4000, 400), (12000, 1200))
NNZ = 20.0
#: the rule every CAT scheme here runs with (the project's one default: edge.cat's `catavg`)
DEFAULT_RULE = "catavg"
#: the other CAT rule, run with S+Q beside the default (the paper's `cat`)
OTHER_RULE = "cat"
#: how rows and tables name a rule's CAT (`CATavg S+Q`, `CAT S+Q`)
RULE_TAGS = {"cat": "CAT", "catavg": "CATavg", EF_RULE: "CATef"}
SLACK = 1.1
#: what names a cell in grid.csv's rows
CELL_KEYS = ("nodes", "link", "target", "ef", "seed", "size", "split")


@dataclass(frozen=True)
class Group:
    """The runs that share one problem: everything of a cell but the link and the target."""
    nodes: int
    ef: bool
    seed: int
    size: tuple[int, int]
    split: str


def add_arguments(q: argparse.ArgumentParser) -> None:
    q.add_argument("--quick", action="store_true",
                   help="1 problem size, even split, error feedback off, 2 seeds: 90 cells in minutes")
    q.add_argument("--seeds", type=int, default=3, help="seeds per cell (default 3; --quick: 2)")
    q.add_argument("--ef", choices=("off", "on"), default=None,
                   help="only the cells with error feedback off or on (default both; --quick: off)")
    q.add_argument("--split", choices=("even", "skewed"), default=None,
                   help="only the cells of this data split (default both; --quick: even)")
    q.set_defaults(rounds=600)


def groups(args: argparse.Namespace) -> list[Group]:
    """The problems to train on: --quick's or the full grid's, narrowed by --ef and --split
    (`--quick --ef on` is the quick grid with error feedback: what a rule for it iterates on)."""
    if args.quick:
        seeds, sizes, splits, efs = range(min(args.seeds, 2)), SIZES[:1], ("even",), (False,)
    else:
        seeds, sizes, splits, efs = range(args.seeds), SIZES, ("even", "skewed"), (False, True)
    if args.ef is not None:
        efs = (args.ef == "on",)
    if args.split is not None:
        splits = (args.split,)
    return [Group(n, ef, s, size, split)
            for size, split, s, ef, n in itertools.product(sizes, splits, seeds, efs, NODES)]


def _train(g: Group, problem, rounds: int, stop: float, bar) -> dict[str, dict[str, SimResult | None]]:
    """{method: {link: run or None (does not fit)}} for one group."""
    common = dict(rounds=rounds, seed=g.seed, stop_gap=stop, error_feedback=g.ef)
    out: dict[str, dict[str, SimResult | None]] = {}

    def blind(label: str, cfg: SimConfig) -> None:
        res = simulate(problem, cfg, progress=False)
        bar.update()
        out[label] = {}
        for link in LINKS:
            try:
                out[label][link] = priced(res, link)
            except Infeasible:
                out[label][link] = None

    blind("GD", SimConfig(scheme="identity", rule="identity", profile=PACKET_SMALL,
                          **(common | {"error_feedback": False})))
    blind("Alistarh S+Q", SimConfig(scheme="sq", rule="alistarh", profile=PACKET_SMALL, **common))
    for t in FIXED_T:
        if t <= problem.dim:
            blind(f"T={t} S+Q", SimConfig(scheme="sq", rule="fixed", rule_param=t, profile=PACKET_SMALL, **common))
        else:
            bar.update()
    for rule, scheme in [(DEFAULT_RULE, s) for s in CAT_SCHEMES] + [(OTHER_RULE, "sq")] + \
            ([(EF_RULE, "sq")] if g.ef else []):
        label = cat_label(rule, scheme)
        out[label] = {}
        for link in LINKS:
            try:
                out[label][link] = simulate(problem, SimConfig(scheme=scheme, rule=rule, profile=link,
                                                               **common), progress=False)
            except Infeasible:
                out[label][link] = None
            bar.update()
    return out


def cat_label(rule: str, scheme: str) -> str:
    """A CAT method's name in grid.csv: `CATavg S+Q` (rule catavg), `CAT S+Q` (rule cat)."""
    return f"{RULE_TAGS[rule]} {scheme_label(scheme)}"


def descent(res: SimResult) -> dict:
    """Achieved descent per round against what CAT guaranteed, for the analysis: the nodes'
    mean Improvement(T) times ||grad F||^2 / (2L) is the descent each node's own update is
    promised on F when its gradient is F's; the averaged update achieves F(x_r) - F(x_r+1)."""
    L = float(res.problem["L"])
    r = np.arange(res.rounds)
    promised = res.improvement.mean(axis=1) * res.grad_norm[r] ** 2 / (2.0 * L)
    achieved = res.loss[r] - res.loss[r + 1]
    ok = np.isfinite(promised) & np.isfinite(achieved) & (promised > 0)
    ratio = achieved[ok] / promised[ok]
    return {"achieved/guaranteed (median over rounds)": float(np.median(ratio)) if ratio.size else math.nan,
            "median T": float(np.median(res.T)), "mean Improvement(T)": float(np.mean(res.improvement))}


def runs_per_group(ef: bool = False) -> int:
    return 2 + len(FIXED_T) + (len(CAT_SCHEMES) + 1 + ef) * len(LINKS)


def _cell_rows(g: Group, link: str, frac: float, gap0: float, runs: dict) -> list[dict]:
    """One row per method of one cell, plus the best fixed T (chosen after the fact)."""
    rows = []
    target = frac * gap0
    fixed = []
    for method, per_link in runs.items():
        res = per_link.get(link)
        row = {"nodes": g.nodes, "link": link, "target": frac, "ef": g.ef, "seed": g.seed,
               "size": f"{g.size[0]}x{g.size[1]}", "split": g.split, "method": method}
        if res is None:
            row.update(bits=None, reached=None, rounds=None, note="does not fit the link")
        else:
            bits, hit, rounds = reach(res, target, "bits")
            row.update(bits=bits, reached=hit, rounds=rounds, final_gap=float(res.gap[-1] / gap0),
                       note="" if hit else "budget: not reached")
            if method.startswith("T="):
                fixed.append(row)
        rows.append(row)
    if fixed:
        best = min(fixed, key=closer)
        rows.append(best | {"method": "best fixed T S+Q", "note": f"oracle: {best['method']}"
                            + ("" if best["reached"] else "; budget: not reached")})
    return rows


def closer(r: dict) -> tuple:
    """Sort key, best first: reached before not; among those that reached, fewer bits; among
    those that did not, the smaller final gap (their budget bits say nothing about progress)."""
    return (not r["reached"], r["bits"] if r["reached"] else r["final_gap"])


def worse(a: dict, b: dict, slack: float = 1.0) -> bool:
    """Does `a` need more than slack x b's bits to the target? Not reaching it when the other
    does is worse whatever the bits; when neither reaches it (both charged their budget bits),
    the one left further from it is worse."""
    if a["reached"] != b["reached"]:
        return not a["reached"]
    if not a["reached"]:
        return a["final_gap"] > b["final_gap"]
    return a["bits"] > slack * b["bits"]


def compare(rows: list[dict], a: str, b: str, slack: float = 1.0) -> tuple[int, int, list[dict]]:
    """(cells where method a is worse than method b by more than `slack`, cells compared,
    per-cell ratios) over every cell where both fit the link."""
    cells: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        key = tuple(r[k] for k in CELL_KEYS)
        cells.setdefault(key, {})[r["method"]] = r
    n = m = 0
    ratios = []
    for key, by in cells.items():
        ra, rb = by.get(a), by.get(b)
        if not ra or not rb or ra["bits"] is None or rb["bits"] is None:
            continue
        m += 1
        n += worse(ra, rb, slack)
        ratios.append(dict(zip(CELL_KEYS, key))
                      | {"ratio": ra["bits"] / rb["bits"] if rb["bits"] > 0 else math.inf})
    return n, m, ratios


def heatmap(ratios: list[dict], out, stem: str, title: str) -> list[str]:
    """Median ratio per link (rows) and nodes x target (columns), log colour scale around 1."""
    plt = reports.pyplot()
    cols = [(n, t) for n in NODES for t in TARGETS]
    grid = np.full((len(LINKS), len(cols)), np.nan)
    for i, link in enumerate(LINKS):
        for j, (n, t) in enumerate(cols):
            v = [r["ratio"] for r in ratios if r["link"] == link and r["nodes"] == n and r["target"] == t]
            if v:
                grid[i, j] = float(np.median(v))
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 2.5, 0.6 * len(LINKS) + 1.8))
    lim = max(1.0, float(np.nanmax(np.abs(np.log2(grid))))) if np.isfinite(grid).any() else 1.0
    im = ax.imshow(np.log2(grid), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(cols)), [f"{n}n {t:g}" for n, t in cols], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(LINKS)), [LINK_LABELS[k] for k in LINKS], fontsize=8)
    ax.set_xlabel("nodes, target (fraction of the initial gap)")
    ax.set_title(title + " (median; > 1: the first needs more)", fontsize=9)
    fig.colorbar(im, ax=ax, label="log2 ratio")
    fig.tight_layout()
    return reports.save_fig(fig, out, stem)


DEF_TAG, OTHER_TAG = RULE_TAGS[DEFAULT_RULE], RULE_TAGS[OTHER_RULE]
DEFAULT, OTHER = cat_label(DEFAULT_RULE, "sq"), cat_label(OTHER_RULE, "sq")
DEF_STEM, OTHER_STEM = DEF_TAG.lower(), OTHER_TAG.lower()
#: rule catef, run with S+Q on the cells with error feedback only (catavg scoring the direction
#: error feedback sends against the node's gradient, edge/catef.py; a simulator rule)
EF = cat_label(EF_RULE, "sq")
EF_STEM = RULE_TAGS[EF_RULE].lower()


def _cmp(a: str, b: str, slack: float, stem: str) -> tuple:
    return (a, b, slack, stem, f"bits {a} / {b if b != 'best fixed T S+Q' else 'best fixed T'}")


COMPARISONS = (_cmp(DEFAULT, "Alistarh S+Q", 1.0, f"{DEF_STEM}-sq-vs-alistarh"),
               _cmp(DEFAULT, "best fixed T S+Q", SLACK, f"{DEF_STEM}-sq-vs-best-fixed"),
               _cmp(OTHER, "Alistarh S+Q", 1.0, f"{OTHER_STEM}-sq-vs-alistarh"),
               _cmp(OTHER, "best fixed T S+Q", SLACK, f"{OTHER_STEM}-sq-vs-best-fixed"),
               _cmp(DEFAULT, OTHER, 1.0, f"{DEF_STEM}-sq-vs-{OTHER_STEM}-sq"),
               _cmp(DEFAULT, "GD", 1.0, f"{DEF_STEM}-sq-vs-gd"),
               _cmp(f"{DEF_TAG} S", DEFAULT, 1.0, f"{DEF_STEM}-s-vs-sq"),
               _cmp(f"{DEF_TAG} SS", DEFAULT, 1.0, f"{DEF_STEM}-ss-vs-sq"),
               _cmp(EF, "Alistarh S+Q", 1.0, f"{EF_STEM}-sq-vs-alistarh"),
               _cmp(EF, "best fixed T S+Q", SLACK, f"{EF_STEM}-sq-vs-best-fixed"),
               _cmp(EF, DEFAULT, 1.0, f"{EF_STEM}-sq-vs-{DEF_STEM}-sq"))


def headline(counts: dict[str, tuple[int, int]]) -> list[str]:
    """The two tracked lines for the default rule, then for the other rule, then for catef when
    it ran (cells with error feedback), from compare's (worse, compared) per COMPARISONS stem."""
    lines = []
    for rule, stem, note in ((DEFAULT_RULE, DEF_STEM, " (default)"), (OTHER_RULE, OTHER_STEM, ""),
                             (EF_RULE, EF_STEM, " (error feedback only)")):
        if f"{stem}-sq-vs-alistarh" not in counts:
            continue
        n1, m1 = counts[f"{stem}-sq-vs-alistarh"]
        n2, m2 = counts[f"{stem}-sq-vs-best-fixed"]
        lines += [f"cells where rule {rule}{note} needs more bits than Alistarh S+Q: {n1} of {m1}",
                  f"cells where rule {rule}{note} needs more than {SLACK:g}x the best fixed T: {n2} of {m2}"]
    return lines


def run(args: argparse.Namespace) -> int:
    if args.data != "synthetic" or args.target is not None or args.rows or args.features or args.full:
        raise ArgumentError("grid: its problems (synthetic RCV1-like, sizes "
                            f"{', '.join(f'{r}x{f}' for r, f in SIZES)}) and targets ({', '.join(map(str, TARGETS))} "
                            "of the initial gap) are part of the grid; --data, --rows, --features, --full and "
                            "--target are not used")
    out = reports.out_dir(args.out, NAME)
    todo = groups(args)
    bar = progress_bar(sum(runs_per_group(g.ef) for g in todo), NAME, not args.quiet)
    rows: list[dict] = []
    data_lines: list[str] = []
    data_cache: dict[tuple, object] = {}
    analysis: list[dict] = []
    for g in todo:
        key = (g.size, g.seed)
        if key not in data_cache:
            data_cache[key] = load_data("synthetic", g.size[0], g.size[1], NNZ, g.seed, False)
        problem = make_problem(data_cache[key], g.nodes, g.split, args.lam, None, g.seed, args.alpha, "spectral")
        problem.solve()
        f0, _ = problem.loss_grad(np.zeros(problem.dim))
        gap0 = float(f0 - problem.f_star)
        runs = _train(g, problem, args.rounds, min(TARGETS) * gap0, bar)
        for method in (DEFAULT, OTHER, "Alistarh S+Q"):
            res = runs[method].get(PACKET_SMALL)
            if res is not None and g.seed == 0 and not g.ef and g.split == "even" and g.size == SIZES[0]:
                analysis.append({"nodes": g.nodes, "method": method} | descent(res))
        for link in LINKS:
            for frac in TARGETS:
                rows += _cell_rows(g, link, frac, gap0, runs)
        data_lines.append(f"{g.nodes} node(s), {g.split}, {g.size[0]}x{g.size[1]}, seed {g.seed}, "
                          f"EF {'on' if g.ef else 'off'}: d = {problem.dim}, F(x0) - f* = {gap0:.4g}")
    bar.close()
    columns = [*CELL_KEYS, "method", "bits", "reached", "rounds", "final_gap", "note"]
    reports.write_table(rows, out, "grid", columns)
    plots: list[str] = []
    summary = []
    counts: dict[str, tuple[int, int]] = {}
    for a, b, slack, stem, title in COMPARISONS:
        n, m, ratios = compare(rows, a, b, slack)
        if not m and EF in (a, b):
            continue  # no cell with error feedback: rule catef did not run
        counts[stem] = (n, m)
        plots += heatmap(ratios, out, stem, title)
        med = float(np.median([r["ratio"] for r in ratios])) if ratios else math.nan
        summary.append({"comparison": f"{a} vs {b}", "cells where worse": n, "by more than": f"{slack:g}x",
                        "cells": m, "median bits ratio": med})
    lines = headline(counts)
    for ln in lines:
        print(ln)
    md = reports.markdown_table(summary, list(summary[0]))
    tables = {"Comparisons (every cell where both fit the link)": md}
    if analysis:
        tables[f"Why: descent achieved against guaranteed, {LINK_LABELS[PACKET_SMALL]}, seed 0, EF off"] = \
            reports.write_table(analysis, out, "descent", list(analysis[0]))
    return finish(args, out, "grid: CAT against Alistarh, the best fixed T and GD, cell by cell",
                  [f"cells: {len({tuple(r[k] for k in CELL_KEYS) for r in rows})}; round budget "
                   f"{args.rounds}; targets {', '.join(f'{t:g}' for t in TARGETS)} of the initial gap; "
                   "a method that never reaches a target is charged its bits over the whole budget"]
                  + data_lines + lines,
                  tables, plots,
                  params={"quick": args.quick, "error feedback": args.ef or ("off" if args.quick else "off, on"),
                          "split": args.split or ("even" if args.quick else "even, skewed"),
                          "rounds budget": args.rounds, "nodes": list(NODES),
                          "links": list(LINKS), "fixed T grid": list(FIXED_T)})
