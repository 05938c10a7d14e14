"""Plots (matplotlib, PNG + SVG) and Markdown/CSV tables for simulations and experiments.

Why a module of its own: every experiment writes the same kinds of output (a table as CSV
and Markdown, loss-against-cost plots, T per round, a report.md that names the command
that reproduces it), and they should look alike.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import math
import platform
import shlex
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

COST_LABELS = {"bits": "bits sent (all nodes)", "bytes": "link bytes sent (all nodes)",
               "packets": "packets sent (all nodes)", "seconds": "airtime, s (all nodes)",
               "joules": "radio energy, J (all nodes)"}


def out_dir(out: str | Path | None, name: str) -> Path:
    """The output directory of a command, created: `out` (its --out), else
    out/<name>-<YYYYmmdd-HHMMSS>/ relative to the working directory."""
    path = Path(out or Path("out") / f"{name}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, for a figure `save_fig` writes.

    Why a function: matplotlib is imported on the first plot, not when the CLI starts, and
    always with Agg, so plotting works on a headless gateway and never opens a window.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_fig(fig: Any, out: Path, stem: str) -> list[str]:
    """Write <stem>.png and <stem>.svg; returns the file names."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for ext in ("png", "svg"):
        p = out / f"{stem}.{ext}"
        fig.savefig(p, dpi=110)
        names.append(p.name)
    pyplot().close(fig)
    return names


def command_line(args: argparse.Namespace, prog: str = "cat-aggregator") -> str:
    """The command that reproduces a run: the subcommand and every option not at its default."""
    parser = getattr(args, "_parser", None)
    words = [prog] + list(getattr(args, "_words", []))
    if parser is None:
        return " ".join(words)
    for act in parser._actions:
        if not act.option_strings or act.dest in ("help",):
            continue
        v = getattr(args, act.dest, None)
        if act.dest.startswith("_") or v == act.default:
            continue
        opt = max(act.option_strings, key=len)
        if isinstance(act, argparse._StoreTrueAction):
            if v:
                words.append(opt)
            continue
        if isinstance(act, argparse._StoreFalseAction):
            if not v:
                words.append(opt)
            continue
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            words.append(opt)
            words.extend(str(x) for x in v)
        else:
            words.extend([opt, str(v)])
    for act in parser._actions:  # positionals
        if not act.option_strings and act.dest not in ("help",) and hasattr(args, act.dest):
            v = getattr(args, act.dest)
            if v is not None and not isinstance(v, argparse.Namespace):
                words.append(str(v))
    return shlex.join(words)


# ------------------------------------------------------------------------------ tables


def fmt_num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if math.isnan(v):
        return "—"
    if math.isinf(v):
        return "inf"
    if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def write_table(rows: Sequence[dict], out: Path, stem: str, columns: Sequence[str] | None = None) -> str:
    """Write <stem>.csv and <stem>.md; returns the Markdown text."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if columns is None:
        columns = []
        for r in rows:
            for k in r:
                if k not in columns:
                    columns.append(k)
    with open(out / f"{stem}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
    md = markdown_table(rows, columns)
    (out / f"{stem}.md").write_text(md)
    return md


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt_num(r.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, name: str, command: str, ratio_lines: Iterable[str], tables: dict[str, str],
                 plots: Sequence[str], notes: Sequence[str] = (), params: dict | None = None) -> Path:
    """report.md: what ran, the reproducing command, the ratio lines, tables and plots."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# {name}", "",
             f"Generated {_dt.datetime.now().isoformat(timespec='seconds')} on {platform.node()} "
             f"(Python {platform.python_version()}).", "",
             "Reproduce with:", "", "```", command, "```", ""]
    if params:
        lines += ["## Setup", ""]
        lines += [f"- {k}: {fmt_num(v, 6) if not isinstance(v, (list, dict)) else v}" for k, v in params.items()]
        lines.append("")
    ratio_lines = list(ratio_lines)
    if ratio_lines:
        lines += ["## Result", "", "```"] + ratio_lines + ["```", ""]
    for title, md in tables.items():
        lines += [f"## {title}", "", md, ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    if plots:
        lines += ["## Plots", ""]
        for p in plots:
            if p.endswith(".png"):
                lines.append(f"![{p}]({p})")
                lines.append("")
    p = out / "report.md"
    p.write_text("\n".join(lines))
    return p


# ------------------------------------------------------------------------------ plots


def _gap_or_loss(res: Any, gap: bool) -> tuple[np.ndarray, str]:
    if gap and res.f_star is not None:
        g = np.maximum(res.loss - res.f_star, 1e-16)
        return g, "F(x) - f*"
    return res.loss, "F(x)"


def plot_runs(results: Sequence[Any], out: Path, stem: str, gap: bool = True,
              metrics: Sequence[str] = ("bits", "packets", "joules"), title: str = "",
              target: float | None = None) -> list[str]:
    """One figure <stem>.png/.svg: loss (or gap) against the cumulative cost in each metric
    (bits, packets, energy ... whichever the runs have), against rounds, and T per round."""
    plt = pyplot()
    metrics = [m for m in metrics if any(getattr(r, m).size and np.isfinite(getattr(r, m)).all()
                                         and getattr(r, m).sum() > 0 for r in results)]
    panels = list(metrics) + ["rounds", "T"]
    cols = min(3, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[len(panels):]:
        ax.axis("off")
    for ax, m in zip(flat, panels):
        for res in results:
            if m == "T":
                if res.T.size:
                    ax.plot(np.arange(res.rounds), np.median(res.T, axis=1), label=res.label, lw=1.0)
                continue
            y, ylab = _gap_or_loss(res, gap)
            ok = np.isfinite(y)
            if m == "rounds":
                xs = np.arange(y.shape[0])
            else:
                per = getattr(res, m)
                if not np.isfinite(per).all() or per.sum() <= 0:
                    continue
                xs = res.cumulative(m)
            ax.plot(xs[ok], y[ok], label=res.label, lw=1.3)
        if m == "T":
            ax.set_xlabel("round")
            ax.set_ylabel("T (median over nodes)")
            ax.set_yscale("log")
        else:
            ax.set_xlabel("round" if m == "rounds" else COST_LABELS.get(m, m))
            ax.set_ylabel(ylab)
            if gap:
                ax.set_yscale("log")
            if m != "rounds":
                ax.set_xscale("log")
            if target is not None:
                ax.axhline(target, color="k", ls=":", lw=0.8)
        ax.grid(True, which="major", alpha=0.3)
    flat[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_fig(fig, out, stem)


def plot_alpha(T: np.ndarray, alpha_bar: np.ndarray, alpha_last: np.ndarray, d: int, out: Path,
               stem: str = "alpha", title: str = "") -> list[str]:
    """Figure 1a: alpha-bar(T) against T/d, and SpeedUp(T) = alpha-bar(T) / (T/d)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    ax = axes[0]
    ax.plot(T, alpha_bar, label="ᾱ(T) (min over rounds)")
    ax.plot(T, alpha_last, label="α(T), last round", ls="--")
    ax.plot(T, T / d, label="T/d (worst case)", color="k", ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("T")
    ax.set_ylabel("α")
    ax.legend(fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    ax = axes[1]
    ax.plot(T, alpha_bar / (T / d))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("T")
    ax.set_ylabel("SpeedUp(T) = ᾱ(T) / (T/d)")
    ax.grid(True, which="major", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_fig(fig, out, stem)


def plot_bits_vs_T(T: np.ndarray, series: dict[str, tuple[np.ndarray, np.ndarray]],
                   cat: dict[str, float], gd: dict[str, float], out: Path, stem: str = "bits-vs-T",
                   ylabel: str = "bits to reach ε", title: str = "") -> list[str]:
    """Figure 1c: bits to reach eps for fixed T, one line per cost model; CAT as a horizontal mark.

    series[name] = (bits, reached); unreached points (lower bounds) are drawn hollow.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, (bits, reached)) in enumerate(series.items()):
        c = colors[i % len(colors)]
        ls = "-" if "packet" in name else "--"
        ax.plot(T, bits, ls=ls, color=c, lw=1.2, label=f"fixed T, {name}")
        ax.scatter(T[reached], bits[reached], color=c, s=14)
        ax.scatter(T[~reached], bits[~reached], facecolors="none", edgecolors=c, s=22,
                   label=f"not reached (lower bound), {name}" if (~reached).any() else None)
        if name in cat:
            ax.axhline(cat[name], color=c, ls=":", lw=1.2, label=f"CAT, {name}")
        if name in gd:
            ax.axhline(gd[name], color=c, ls="-.", lw=0.8, alpha=0.6, label=f"GD, {name}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("T (fixed)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_fig(fig, out, stem)


def plot_energy(cum_energy: np.ndarray, loss: np.ndarray, out: Path, stem: str = "energy",
                label: str = "", ylabel: str = "F(x)", per_node: np.ndarray | None = None) -> list[str]:
    """Cumulative radio energy (J) against loss (or gap)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ok = np.isfinite(loss)
    ax.plot(cum_energy[ok], loss[ok], label=label or "all nodes")
    if per_node is not None:
        for k in range(per_node.shape[1]):
            ax.plot(per_node[ok, k], loss[ok], lw=0.7, alpha=0.6, label=f"node {k}")
    ax.set_xlabel("cumulative radio energy, J")
    ax.set_ylabel(ylabel)
    if ylabel.startswith("F(x) -"):
        ax.set_yscale("log")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_fig(fig, out, stem)


def plot_fit(x: np.ndarray, y: np.ndarray, fits: dict[str, np.ndarray], out: Path, stem: str = "fit",
             xlabel: str = "frame bytes", ylabel: str = "delivery time, s", title: str = "") -> list[str]:
    """Measurements (mean and spread per size) and each fitted model (appendix H, figure 3)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.scatter(x, y, s=6, alpha=0.35, label="measurements")
    xs = np.unique(x)
    means = np.array([np.mean(y[x == v]) for v in xs])
    ax.plot(xs, means, "o", ms=3, label="mean per size")
    order = np.argsort(xs)
    for name, pred in fits.items():
        ax.plot(xs[order], pred[order], lw=1.3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_fig(fig, out, stem)
