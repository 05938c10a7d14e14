"""What every experiment shares: the problems and runs (`Runner`), re-pricing a run under
another profile (`priced`), the cost to a target (`reach`), ratios marked as bounds,
progress bars, and report.md at the end (`finish`).

A run that cannot happen on a link raises `engine.Infeasible` (from `Runner.run` or
`priced`); an experiment that tabulates many links catches it where it marks that cell as
"does not fit", and any other experiment lets it reach the CLI as a one-line message.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from aggregator.lab import reports
from aggregator.lab.cliargs import add_data_args, data_from_args, problem_from_args
from aggregator.lab.engine import Infeasible, SimConfig, recost, simulate
from aggregator.lab.pricing import CostArgumentError, profile_dict
from aggregator.lab.problem import Problem
from aggregator.lab.results import SimResult
from edge.frame import index_bits
from edge.profile import list_profiles

def common_args(q: argparse.ArgumentParser) -> None:
    """The options every experiment takes (data, round budget, target, output, progress)."""
    add_data_args(q)
    q.add_argument("--rounds", type=int, default=None, help="round budget per run")
    q.add_argument("--target", type=float, default=None, help="target: this fraction of F(x0) - f*")
    q.add_argument("--out", default=None, help="output directory (default out/<name>-<timestamp>)")
    q.add_argument("--quiet", action="store_true", help="no progress bars")


class Runner:
    """Problems (one per node count, f* solved once) and runs, with an outer progress bar."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.progress = not args.quiet
        self.problems: dict[int, Problem] = {}
        self.gap0: dict[int, float] = {}
        self.log: list[str] = []
        self.data: Any = None

    def problem(self, nodes: int) -> Problem:
        """The data split over `nodes`, with f* solved and F(x0) - f* in gap0[nodes]."""
        if nodes not in self.problems:
            t0 = time.perf_counter()
            if self.data is None:
                self.data = data_from_args(self.args)  # generated or read once
            p = problem_from_args(self.args, nodes, self.data)
            p.solve()
            f0, _ = p.loss_grad(np.zeros(p.dim))
            self.problems[nodes] = p
            self.gap0[nodes] = float(f0 - p.f_star)
            self.say(f"data {p.name}: {p.rows} rows, d = {p.d}, {nodes} node(s) ({p.meta['mode']} split), "
                     f"L = {p.L:.4g} ({p.meta['smoothness']}), f* = {p.f_star:.6g}, "
                     f"F(x0) - f* = {self.gap0[nodes]:.4g} ({time.perf_counter() - t0:.1f} s)")
        return self.problems[nodes]

    def say(self, line: str) -> None:
        """Print a line above the progress bars and keep it for report.md."""
        self.log.append(line)
        tqdm.write(line)

    def conclude(self, lines: list[str]) -> list[str]:
        """Print an experiment's result lines; return them after the data lines already said
        (the Result block of report.md)."""
        for ln in lines:
            print(ln)
        return self.log + lines

    def run(self, nodes: int, cfg: SimConfig, callback: Callable | None = None) -> SimResult:
        """A finished run on the problem of `nodes` nodes; Infeasible when it cannot run on the link."""
        return simulate(self.problem(nodes), cfg, progress=self.progress, callback=callback)


def priced(res: SimResult, profile: str, metric: str | None = None) -> SimResult:
    """res with its costs re-priced under `profile`; Infeasible when its frames do not fit there.

    Why re-price instead of re-run: with a fixed T (or GD, or Alistarh's rule) the trajectory
    does not depend on the cost profile, so one run is priced under every profile.
    """
    c = recost(res, profile, metric)
    if not c["feasible"]:
        biggest = int(res.entries.max()) if res.entries.size else 0
        raise Infeasible(f"{profile}: {biggest} entries per frame exceed the largest that fits the link "
                         f"({c['t_max']})")
    return dataclasses.replace(res, bits=c["bits"], bytes=c["bytes"], packets=c["packets"],
                               seconds=c["seconds"], joules=c["joules"], cost=c["cost"],
                               config=res.config | {"profile": profile, "metric": metric or "default"})


def finish(args: argparse.Namespace, out: Path, title: str, lines: list[str], tables: dict[str, str],
           plots: list[str], params: dict, notes: tuple[str, ...] = ()) -> int:
    """Write report.md (with the command that reproduces the run), say where, exit code 0."""
    reports.write_report(out, title, reports.command_line(args), lines, tables, plots, notes=notes, params=params)
    print(f"wrote {out}")
    return 0


def reach(res: SimResult, target: float, metric: str) -> tuple[float, bool, int]:
    """(cost to reach gap <= target or over the whole run, reached?, rounds)."""
    v, ok = res.to_reach(target, metric)
    r = res.first_reach(target)
    return v, ok, (r if r is not None else res.rounds)


def ratio_text(num: tuple[float, bool], den: tuple[float, bool]) -> str:
    """num / den, marked when a side did not reach the target within the budget."""
    r = num[0] / den[0] if den[0] > 0 else math.inf
    s = f"{r:.3g}"
    if not num[1] and den[1]:
        s += " (lower bound)"
    elif num[1] and not den[1]:
        s += " (upper bound: CAT did not reach the target)"
    elif not num[1] and not den[1]:
        s += " (neither reached the target: ratio of bits over the budget)"
    return s


def progress_bar(total: int, desc: str, progress: bool) -> Any:
    """The outer bar over an experiment's runs (each run draws its own inner bar)."""
    return tqdm(total=total, desc=desc, disable=not progress, unit="run", dynamic_ncols=True)


def packet_entries(profile: str, scheme: str, d: int) -> int:
    """Entries that fill one packet of a paper packet profile (the 'tuned' fixed T)."""
    paper = profile_dict(profile)["paper"]
    pmax = 8 * paper["pmax_bytes"]
    fpp = 8 * paper["fpp_bytes"]
    b = index_bits(d)
    if scheme == "sq":
        return max(1, int((pmax - fpp) // b))
    return max(1, int(pmax // (b + fpp)))


def link_profiles() -> list[str]:
    """The shipped link profiles (kind "link"), by name; a malformed one is skipped (it is
    `cat-aggregator profile`'s error to report, not an experiment's)."""
    names = []
    for nm in list_profiles():
        try:
            if profile_dict(nm)["kind"] == "link":
                names.append(nm)
        except CostArgumentError:
            continue
    return names
