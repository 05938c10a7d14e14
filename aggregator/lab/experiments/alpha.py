"""alpha: alpha-bar(T) and SpeedUp(T) = alpha-bar(T) / (T/d) along gradient descent (figure 1a).

alpha(T) = A2(T)/S2 is the share of the gradient's squared norm the T largest entries hold
(the paper's descent lemma for S); alpha-bar(T) is its minimum over every GD round and node,
so a sparsified step of T entries is guaranteed alpha-bar(T) of GD's descent.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from aggregator.lab import reports
from aggregator.lab.engine import SimConfig
from aggregator.lab.experiments.common import Runner, finish
from aggregator.lab.pricing import PAYLOAD
from edge import np_backend
from edge.cat import SCHEME_S

NAME = "alpha"
HELP = "alpha-bar(T) and SpeedUp(T) along GD (figure 1a)"


def add_arguments(q: argparse.ArgumentParser) -> None:
    q.add_argument("--nodes", type=int, default=1)
    q.add_argument("--points", type=int, default=40, help="T grid points")
    q.set_defaults(rounds=300)


class _AlphaTrack:
    """The run's callback: alpha(T) of every node's gradient each round (the edge's own
    `np_backend.improvements`), its minimum over rounds on the grid, and its history at a few T."""

    def __init__(self, d: int, grid: np.ndarray, track: np.ndarray) -> None:
        self.d = d
        self.grid = grid
        self.track = track
        self.amin = np.full(grid.size, np.inf)
        self.alast = np.zeros(grid.size)
        self.hist: list[np.ndarray] = []

    def __call__(self, r: int, x: np.ndarray, grads: list) -> None:
        rows = []
        for g in grads:
            order, s1, s2 = np_backend.select(g.astype(np.float32), self.d)
            a = np.abs(g.astype(np.float32)[order].astype(np.float64))
            imp, _ = np_backend.improvements(SCHEME_S, a, s1, s2)  # the edge's alpha(T), T = 1..d
            rows.append(imp)
        imp = np.min(np.vstack(rows), axis=0)
        np.minimum(self.amin, imp[self.grid - 1], out=self.amin)
        self.alast = imp[self.grid - 1]
        self.hist.append(imp[self.track - 1])


def _plot_rounds(hist: list[np.ndarray], track: np.ndarray, out: Path, stem: str) -> list[str]:
    """alpha(T) at the tracked T, round by round."""
    plt = reports.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    H = np.array(hist)
    for j, t in enumerate(track):
        ax.plot(H[:, j], label=f"T = {t}")
    ax.set_xlabel("GD round")
    ax.set_ylabel("α(T) (min over nodes)")
    ax.set_yscale("log")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return reports.save_fig(fig, out, stem)


def run(args: argparse.Namespace) -> int:
    """alpha-bar(T) = min over GD rounds (and nodes) of alpha(T) = A2(T)/S2; SpeedUp = alpha-bar/(T/d)."""
    out = reports.out_dir(args.out, NAME)
    R = Runner(args)
    p = R.problem(args.nodes)
    d = p.dim
    track = np.unique(np.clip(np.array([1, 10, 100, max(1, d // 100), max(1, d // 10)]), 1, d))
    grid = np.unique(np.concatenate([np.round(np.geomspace(1, d, args.points)).astype(np.int64), track]))
    alpha = _AlphaTrack(d, grid, track)
    cfg = SimConfig(scheme="identity", rule="identity", profile=PAYLOAD, rounds=args.rounds, seed=args.seed)
    res = R.run(args.nodes, cfg, callback=alpha)
    amin, alast = alpha.amin, alpha.alast
    speed = amin / (grid / d)
    rows = [{"T": int(t), "T/d": t / d, "alpha_bar": a, "alpha_last": al, "speedup": s}
            for t, a, al, s in zip(grid, amin, alast, speed)]
    md = reports.write_table(rows, out, "alpha", ["T", "T/d", "alpha_bar", "alpha_last", "speedup"])
    gap = res.gap / R.gap0[args.nodes]
    result = [f"GD {res.rounds} rounds: F - f* went from {R.gap0[args.nodes]:.4g} to {res.gap[-1]:.3g} "
              f"({100 * gap[-1]:.3g} % of the initial gap)"]
    for t in track:
        i = int(np.searchsorted(grid, t))
        if i < grid.size and grid[i] == t:
            result.append(f"SpeedUp(T = {t}) = alpha-bar / (T/d) = {speed[i]:.4g} (alpha-bar {amin[i]:.4g}; "
                          f"at most d/T = {d / t:.4g})")
    k = int(np.argmax(speed))
    result.append(f"largest speed-up {speed[k]:.4g} at T = {grid[k]} (paper, RCV1 d = 47,236: about 10^3 at small T)")
    lines = R.conclude(result)
    plots = reports.plot_alpha(grid.astype(float), amin, alast, d, out, "alpha",
                               title=f"{p.name}, {args.nodes} node(s), {res.rounds} GD rounds")
    plots += _plot_rounds(alpha.hist, track, out, "alpha-rounds")
    plots += reports.plot_runs([res], out, "gd", gap=True, metrics=("bits",))
    return finish(args, out, "alpha: sparsification gain along gradient descent (figure 1a)",
                  lines, {"alpha-bar and speed-up": md}, plots,
                  params={"rounds": args.rounds, "nodes": args.nodes, "d": d},
                  notes=["alpha-bar(T) is the minimum over all GD rounds (and nodes) of "
                         "alpha(T) = A2(T)/S2, computed by edge.np_backend.improvements.",
                         "SpeedUp(T) = alpha-bar(T) / (T/d) is at most d/T."])
