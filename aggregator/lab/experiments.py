"""The paper's experiments and the IoT ones, on the simulator: `cat-aggregator experiment NAME`.

* alpha:        alpha-bar(T) and SpeedUp(T) = alpha-bar(T) / (T/d) along GD (figure 1a).
* bits-vs-T:    bits to reach eps for fixed T on a grid, payload and packet models, CAT marked
                (figure 1c); CAT should land within 10 % of the best fixed T untuned.
* paper-packet: 1 and 4 nodes, S / S+Q / SS under CAT against GD, fixed T and Alistarh's rule,
                packet models 128/64/128 and 576/64/512 (figure 2, appendix I).
* radios:       the same training priced on every shipped link profile; CAT's T per link; how
                the fixed T that is best on one link does on another.
* memory:       every scheme with and without error feedback on 1 and 4 nodes: the gap each
                can reach at all, and bits to 1 % of the initial gap.
* energy-cat:   energy-aware CAT (the board's CPU joules counted) against radio-only CAT on
                boards x links, priced on the whole board (aggregator/lab/energycat.py).

Each writes tables (CSV + Markdown), PNG + SVG plots and report.md with the reproducing
command into --out (default out/<name>-<timestamp>/), and prints its ratios.

Why runs are re-priced instead of re-run: with a fixed T (or GD, or Alistarh's rule) the
trajectory does not depend on the cost profile, so one run is priced under every profile
(`simulate.recost`); only CAT, which reads the cost, runs once per profile.

Default size: synthetic RCV1-like data, 45,000 rows x 3,000 features (simulate.SMALL), so
each experiment takes a minute or two on 2 cores; `--full` is RCV1's size, `--data PATH`
a LIBSVM file.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from aggregator.lab import boardbudget, reports
from aggregator.lab import simulate as simm
from aggregator.lab.simulate import Infeasible, Problem, SimConfig, SimResult
from edge import np_backend
from edge.cat import SCHEME_S
from edge.cost import index_bits
from edge.profile import list_profiles

PAYLOAD = "paper-payload-fpp64"
PACKET_SMALL = "paper-packet-128-64-128"
PACKET_LARGE = "paper-packet-576-64-512"
PAPER_RATIOS = {(1, PACKET_SMALL): "paper: about 2x (appendix I, figure 10, RCV1)",
                (4, PACKET_LARGE): "paper: about 6x (section 6, experiment 2, RCV1, 4 nodes)"}


# ------------------------------------------------------------------------------ runner


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
        if nodes not in self.problems:
            t0 = time.perf_counter()
            if self.data is None:
                self.data = simm.data_from_args(self.args)  # generated or read once
            p = simm.problem_from_args(self.args, nodes, self.data)
            p.solve()
            f0, _ = p.loss_grad(np.zeros(p.dim))
            self.problems[nodes] = p
            self.gap0[nodes] = float(f0 - p.f_star)
            self.say(f"data {p.name}: {p.rows} rows, d = {p.d}, {nodes} node(s) ({p.meta['mode']} split), "
                     f"L = {p.L:.4g} ({p.meta['smoothness']}), f* = {p.f_star:.6g}, "
                     f"F(x0) - f* = {self.gap0[nodes]:.4g} ({time.perf_counter() - t0:.1f} s)")
        return self.problems[nodes]

    def say(self, line: str) -> None:
        self.log.append(line)
        from tqdm import tqdm

        tqdm.write(line)

    def run(self, nodes: int, cfg: SimConfig, callback: Callable | None = None) -> SimResult | str:
        """A finished run, or the reason it cannot run (infeasible on the link)."""
        try:
            return simm.simulate(self.problem(nodes), cfg, progress=self.progress, callback=callback)
        except Infeasible as e:
            return str(e)


def priced(res: SimResult, profile: str, metric: str | None = None) -> SimResult | str:
    """res with its costs re-priced under `profile` (str: why it cannot run there)."""
    c = simm.recost(res, profile, metric)
    if not c["feasible"]:
        biggest = int(res.entries.max()) if res.entries.size else 0
        return (f"{profile}: {biggest} entries per frame exceed the largest that fits the link "
                f"({c['t_max']})")
    return dataclasses.replace(res, bits=c["bits"], bytes=c["bytes"], packets=c["packets"],
                               seconds=c["seconds"], joules=c["joules"], cost=c["cost"],
                               config=res.config | {"profile": profile, "metric": metric or "default"})


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


def prepare_out(args: argparse.Namespace, name: str) -> Path:
    out = Path(args.out or reports.default_out(name))
    out.mkdir(parents=True, exist_ok=True)
    return out


def _outer(total: int, desc: str, progress: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not progress, unit="run", dynamic_ncols=True)


def packet_entries(profile: str, scheme: str, d: int) -> int:
    """Entries that fill one packet of a paper packet profile (the 'tuned' fixed T)."""
    prof = simm.profile_dict(profile)
    paper = prof["paper"]
    pmax = 8 * paper["pmax_bytes"]
    fpp = 8 * paper["fpp_bytes"]
    b = index_bits(d)
    if scheme == "sq":
        return max(1, int((pmax - fpp) // b))
    return max(1, int(pmax // (b + fpp)))


# ------------------------------------------------------------------------------ alpha


def exp_alpha(args: argparse.Namespace) -> int:
    """alpha-bar(T) = min over GD rounds (and nodes) of alpha(T) = A2(T)/S2; SpeedUp = alpha-bar/(T/d)."""
    out = prepare_out(args, "alpha")
    R = Runner(args)
    p = R.problem(args.nodes)
    d = p.dim
    track = np.unique(np.clip(np.array([1, 10, 100, max(1, d // 100), max(1, d // 10)]), 1, d))
    grid = np.unique(np.concatenate([np.round(np.geomspace(1, d, args.points)).astype(np.int64), track]))
    amin = np.full(grid.size, np.inf)
    alast = np.zeros(grid.size)
    hist: list[np.ndarray] = []

    def cb(r: int, x: np.ndarray, grads: list) -> None:
        nonlocal alast
        rows = []
        for g in grads:
            order, s1, s2 = np_backend.select(g.astype(np.float32), d)
            a = np.abs(g.astype(np.float32)[order].astype(np.float64))
            imp, _ = np_backend.improvements(SCHEME_S, a, s1, s2)  # the edge's alpha(T), T = 1..d
            rows.append(imp)
        imp = np.min(np.vstack(rows), axis=0)
        np.minimum(amin, imp[grid - 1], out=amin)
        alast = imp[grid - 1]
        hist.append(imp[track - 1])

    cfg = SimConfig(scheme="identity", rule="identity", profile=PAYLOAD, rounds=args.rounds, seed=args.seed)
    res = R.run(args.nodes, cfg, callback=cb)
    assert not isinstance(res, str)
    speed = amin / (grid / d)
    rows = [{"T": int(t), "T/d": t / d, "alpha_bar": a, "alpha_last": al, "speedup": s}
            for t, a, al, s in zip(grid, amin, alast, speed)]
    md = reports.write_table(rows, out, "alpha", ["T", "T/d", "alpha_bar", "alpha_last", "speedup"])
    lines = list(R.log)
    gap = res.gap / R.gap0[args.nodes]
    lines.append(f"GD {res.rounds} rounds: F - f* went from {R.gap0[args.nodes]:.4g} to {res.gap[-1]:.3g} "
                 f"({100 * gap[-1]:.3g} % of the initial gap)")
    for t in track:
        i = int(np.searchsorted(grid, t))
        if i < grid.size and grid[i] == t:
            lines.append(f"SpeedUp(T = {t}) = alpha-bar / (T/d) = {speed[i]:.4g} (alpha-bar {amin[i]:.4g}; "
                         f"at most d/T = {d / t:.4g})")
    k = int(np.argmax(speed))
    lines.append(f"largest speed-up {speed[k]:.4g} at T = {grid[k]} (paper, RCV1 d = 47,236: about 10^3 at small T)")
    for ln in lines[len(R.log):]:
        print(ln)
    plots = reports.plot_alpha(grid.astype(float), amin, alast, d, out, "alpha",
                               title=f"{p.name}, {args.nodes} node(s), {res.rounds} GD rounds")
    plt = reports._plt()
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
    plots += reports.save_fig(fig, out, "alpha-rounds")
    plots += reports.plot_runs([res], out, "gd", gap=True, metrics=("bits",))
    reports.write_report(out, "alpha: sparsification gain along gradient descent (figure 1a)",
                         reports.command_line(args), lines, {"alpha-bar and speed-up": md}, plots,
                         params={"rounds": args.rounds, "nodes": args.nodes, "d": d},
                         notes=["alpha-bar(T) is the minimum over all GD rounds (and nodes) of "
                                "alpha(T) = A2(T)/S2, computed by edge.np_backend.improvements.",
                                "SpeedUp(T) = alpha-bar(T) / (T/d) is at most d/T."])
    print(f"wrote {out}")
    return 0


# ------------------------------------------------------------------------------ bits-vs-T


def exp_bits_vs_t(args: argparse.Namespace) -> int:
    out = prepare_out(args, "bits-vs-T")
    R = Runner(args)
    n = args.nodes
    p = R.problem(n)
    d = p.dim
    target = args.target * R.gap0[n]
    models = {"payload": args.payload_profile, "packet": args.packet_profile}
    tau = packet_entries(args.packet_profile, "s", d)
    geo = np.unique(np.round(np.geomspace(1, d, args.points)).astype(int))
    grid = sorted(set(int(t) for t in geo) | {tau * k for k in range(1, 9) if tau * k <= d})
    stop = target
    runs: dict[int, SimResult] = {}
    bar = _outer(len(grid) + 3, "bits-vs-T", R.progress)
    for t in grid:
        res = R.run(n, SimConfig(scheme="s", rule="fixed", rule_param=t, profile=PAYLOAD, rounds=args.rounds,
                                 seed=args.seed, stop_gap=stop))
        assert not isinstance(res, str)
        runs[t] = res
        bar.update()
    cat: dict[str, SimResult] = {}
    for name, prof in models.items():
        res = R.run(n, SimConfig(scheme="s", rule="cat", profile=prof, rounds=args.rounds, seed=args.seed,
                                 stop_gap=stop))
        assert not isinstance(res, str)
        cat[name] = res
        bar.update()
    gd = R.run(n, SimConfig(scheme="identity", rule="identity", profile=PAYLOAD, rounds=args.rounds,
                            seed=args.seed, stop_gap=stop))
    assert not isinstance(gd, str)
    bar.update()
    bar.close()
    rows = []
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    best: dict[str, tuple[int, float]] = {}
    for name, prof in models.items():
        bits = np.zeros(len(grid))
        ok = np.zeros(len(grid), dtype=bool)
        for i, t in enumerate(grid):
            r = priced(runs[t], prof)
            assert not isinstance(r, str)
            v, hit, rounds = reach(r, target, "bits")
            bits[i], ok[i] = v, hit
            rows.append({"model": name, "profile": prof, "T": t, "bits_to_eps": v, "reached": hit,
                         "rounds": rounds})
        series[name] = (bits, ok)
        if ok.any():
            i = int(np.argmin(np.where(ok, bits, np.inf)))
            best[name] = (grid[i], float(bits[i]))
    lines = list(R.log)
    lines.append(f"target eps: F - f* <= {args.target:g} x (F(x0) - f*) = {target:.4g}; S, {n} node(s), "
                 f"budget {args.rounds} rounds; one packet of {args.packet_profile} holds {tau} S entries")
    cat_bits: dict[str, float] = {}
    gd_bits: dict[str, float] = {}
    table2 = []
    for name, prof in models.items():
        v, hit, rounds = reach(cat[name], target, "bits")
        cat_bits[name] = v
        g = priced(gd, prof)
        assert not isinstance(g, str)
        gv, ghit, grounds = reach(g, target, "bits")
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
        table2.append({"model": name, "profile": prof, "best_fixed_T": best.get(name, (None,))[0],
                       "best_fixed_bits": best.get(name, (None, None))[1], "cat_bits": v, "cat_reached": hit,
                       "cat_median_T": T_med, "cat_over_best": rr, "gd_bits": gv, "gd_reached": ghit})
    for ln in lines[len(R.log):]:
        print(ln)
    md1 = reports.write_table(rows, out, "bits-vs-T", ["model", "profile", "T", "bits_to_eps", "reached", "rounds"])
    md2 = reports.write_table(table2, out, "cat-vs-best",
                              ["model", "profile", "best_fixed_T", "best_fixed_bits", "cat_bits", "cat_reached",
                               "cat_median_T", "cat_over_best", "gd_bits", "gd_reached"])
    plots = reports.plot_bits_vs_T(np.array(grid, dtype=float), series, cat_bits, gd_bits, out, "bits-vs-T",
                                   title=f"S, {p.name}, eps = {args.target:g} of the initial gap")
    for name, prof in models.items():
        show = [cat[name]]
        for t in sorted({1, tau, best.get(name, (tau,))[0], grid[len(grid) // 2]}):
            r = priced(runs[t], prof)
            if not isinstance(r, str):
                show.append(r)
        plots += reports.plot_runs(show, out, f"loss-{name}", gap=True, metrics=("bits", "packets"),
                                   title=f"{prof}", target=target)
    reports.write_report(out, "bits-vs-T: bits to reach eps for fixed T, with CAT (figure 1c)",
                         reports.command_line(args), lines, {"CAT against the best fixed T": md2,
                                                             "Every fixed T": md1}, plots,
                         params={"nodes": n, "rounds budget": args.rounds, "target": args.target})
    print(f"wrote {out}")
    return 0


# ------------------------------------------------------------------------------ paper-packet


def exp_paper_packet(args: argparse.Namespace) -> int:
    out = prepare_out(args, "paper-packet")
    R = Runner(args)
    profiles = [PACKET_SMALL, PACKET_LARGE]
    node_counts = [int(v) for v in args.nodes_list.split(",")]
    rows = []
    ratio_lines = []
    plots: list[str] = []
    final_line = None
    total = len(node_counts) * (2 + len(profiles) * 4)
    bar = _outer(total, "paper-packet", R.progress)
    for n in node_counts:
        p = R.problem(n)
        target = args.target * R.gap0[n]
        stop = target
        common = dict(rounds=args.rounds, seed=args.seed, stop_gap=stop, error_feedback=False)
        gd = R.run(n, SimConfig(scheme="identity", rule="identity", profile=PACKET_SMALL, **common))
        bar.update()
        ali = R.run(n, SimConfig(scheme="sq", rule="alistarh", profile=PACKET_SMALL, **common))
        bar.update()
        for prof in profiles:
            res: dict[str, SimResult | str] = {
                "GD": priced(gd, prof) if not isinstance(gd, str) else gd,
                "Alistarh S+Q": priced(ali, prof) if not isinstance(ali, str) else ali}
            tau = packet_entries(prof, "sq", p.dim)
            for scheme, label in (("s", "CAT S"), ("sq", "CAT S+Q"), ("ss", "CAT SS")):
                res[label] = R.run(n, SimConfig(scheme=scheme, rule="cat", profile=prof, **common))
                bar.update()
            r = R.run(n, SimConfig(scheme="sq", rule="fixed", rule_param=min(tau, p.dim), profile=prof, **common))
            res[f"fixed T={min(tau, p.dim)} S+Q"] = r
            bar.update()
            reached = {k: reach(v, target, "bits") for k, v in res.items() if not isinstance(v, str)}
            cat_sq = reached.get("CAT S+Q")
            short = prof.replace("paper-packet-", "").replace("-", "/")
            for k, v in res.items():
                if isinstance(v, str):
                    rows.append({"nodes": n, "profile": prof, "method": k, "note": v})
                    continue
                b, hit, rounds = reached[k]
                rows.append({"nodes": n, "profile": prof, "method": k, "bits": b, "reached": hit, "rounds": rounds,
                             "packets": reach(v, target, "packets")[0],
                             "median_T": float(np.median(v.T[:max(1, rounds)])) if v.T.size else None,
                             "bits_over_cat_sq": ratio_text((b, hit), cat_sq[:2]) if cat_sq else None,
                             "final_gap_rel": float(v.gap[-1] / R.gap0[n]), "note": ""})
            if cat_sq and "Alistarh S+Q" in reached:
                txt = ratio_text(reached["Alistarh S+Q"][:2], cat_sq[:2])
                line = f"bits ratio alistarh/cat S+Q ({n} node{'s' if n > 1 else ''}, packet {short}): {txt}"
                ref = PAPER_RATIOS.get((n, prof))
                if n == 4 and prof == PACKET_SMALL:
                    final_line = line
                ratio_lines.append(line + (f"   [{ref}]" if ref else ""))
            if "GD" in reached and cat_sq:
                ratio_lines.append(f"bits ratio GD/cat S+Q ({n} node(s), packet {short}): "
                                   f"{ratio_text(reached['GD'][:2], cat_sq[:2])}")
            done = [v for v in res.values() if not isinstance(v, str)]
            plots += reports.plot_runs(done, out, f"loss-{n}node-{short.replace('/', '-')}", gap=True,
                                       metrics=("bits", "packets"), title=f"{n} node(s), packet {short}",
                                       target=target)
    bar.close()
    lines = list(R.log) + [f"target: F - f* <= {args.target:g} x (F(x0) - f*); error feedback off; budget "
                           f"{args.rounds} rounds; a method that does not reach the target is charged its "
                           "bits over the whole budget"] + ratio_lines
    if final_line is None:
        final_line = "bits ratio alistarh/cat S+Q (4 nodes, packet 128/64/128): n/a (4 nodes not run)"
    for ln in lines[len(R.log):]:
        print(ln)
    print(final_line)
    md = reports.write_table(rows, out, "paper-packet",
                             ["nodes", "profile", "method", "bits", "reached", "rounds", "packets", "median_T",
                              "bits_over_cat_sq", "final_gap_rel", "note"])
    reports.write_report(out, "paper-packet: CAT against GD, fixed T and Alistarh's rule (figure 2, appendix I)",
                         reports.command_line(args), lines + [final_line], {"Bits to the target": md}, plots,
                         params={"nodes": node_counts, "rounds budget": args.rounds, "target": args.target})
    print(f"wrote {out}")
    return 0


# ------------------------------------------------------------------------------ radios


def link_profiles() -> list[str]:
    names = []
    for nm in list_profiles():
        try:
            if simm.profile_dict(nm)["kind"] == "link":
                names.append(nm)
        except Exception:  # a malformed profile is another command's error
            continue
    return names


def exp_radios(args: argparse.Namespace) -> int:
    out = prepare_out(args, "radios")
    R = Runner(args)
    n = args.nodes
    p = R.problem(n)
    target = args.target * R.gap0[n]
    profs = args.profiles.split(",") if args.profiles else link_profiles()
    grid = [int(t) for t in args.grid.split(",")] if args.grid else \
        [t for t in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256, 512, 1024) if t <= p.dim]
    common = dict(rounds=args.rounds, seed=args.seed, stop_gap=target, scheme=args.scheme,
                  fmt=1 if args.fmt == "f16" else 0)
    bar = _outer(len(grid) + len(profs) + 1, "radios", R.progress)
    fixed: dict[int, SimResult] = {}
    for t in grid:
        r = R.run(n, SimConfig(rule="fixed", rule_param=t, profile=PAYLOAD, **common))
        assert not isinstance(r, str)
        fixed[t] = r
        bar.update()
    gd = R.run(n, SimConfig(scheme="identity", rule="identity", profile=PAYLOAD,
                            **{k: v for k, v in common.items() if k != "scheme"}))
    bar.update()
    cat: dict[str, SimResult | str] = {}
    for prof in profs:
        cat[prof] = R.run(n, SimConfig(rule="cat", profile=prof, **common))
        bar.update()
    bar.close()
    # cost (in each profile's own metric) of every fixed T on every profile
    table = []
    cost_fixed: dict[str, dict[int, tuple[float, bool] | str]] = {}
    best: dict[str, tuple[int, float, bool]] = {}
    lines = list(R.log)
    lines.append(f"scheme {args.scheme}, values {args.fmt}, {n} node(s), target F - f* <= {args.target:g} of the initial gap, "
                 f"budget {args.rounds} rounds; each link's cost in its default metric")
    plots: list[str] = []
    for prof in profs:
        pd = simm.profile_dict(prof)
        metric = pd["default_metric"]
        cost_fixed[prof] = {}
        for t in grid:
            r = priced(fixed[t], prof)
            if isinstance(r, str):
                cost_fixed[prof][t] = "infeasible"
                continue
            v, ok, _ = reach(r, target, metric)
            cost_fixed[prof][t] = (v, ok)
        ok_t = [(v[0], t) for t, v in cost_fixed[prof].items() if not isinstance(v, str) and v[1]]
        if ok_t:
            bv, bt = min(ok_t)
            best[prof] = (bt, bv, True)
        c = cat[prof]
        row: dict[str, Any] = {"profile": prof, "metric": metric}
        if isinstance(c, str):
            row["note"] = c
            lines.append(f"{prof}: CAT cannot run: {c}")
        else:
            v, ok, rounds = reach(c, target, metric)
            sl = slice(0, rounds)
            row.update({"cat_median_T": float(np.median(c.T[sl])) if c.T.size else None,
                        "cat_T_range": f"{int(c.T[sl].min())}..{int(c.T[sl].max())}" if c.T.size else "",
                        "t_max": c.config["t_max"], "rounds": rounds, "reached": ok,
                        "bytes": float(c.bytes[sl].sum()), "packets": float(c.packets[sl].sum()),
                        "airtime_s": float(c.seconds[sl].sum()), "energy_j": float(c.joules[sl].sum()),
                        "cat_cost": v})
            dc = (pd.get("limits") or {}).get("duty_cycle")
            if dc:
                wall = float((c.seconds[sl].max(axis=1) / dc).sum()) if rounds else 0.0
                row["duty_cycle_wall_h"] = wall / 3600.0
            head = (f"{prof}: CAT picks T {row['cat_T_range']} (median {row['cat_median_T']:g}, largest that "
                    f"fits {row['t_max']}); {metric} to target: CAT {v:.4g}{'' if ok else ' (not reached: lower bound)'}")
            if prof in best:
                bt, bv, _ = best[prof]
                row.update({"best_fixed_T": bt, "best_fixed_cost": bv, "cat_over_best": v / bv})
                lines.append(f"{head}, best fixed T = {bt}: {bv:.4g}; CAT/best = {v / bv:.3g}")
            else:
                lines.append(f"{head}; no fixed T on the grid reached the target")
            if dc:
                lines.append(f"  {prof}: at the {100 * dc:g} % duty cycle the CAT run needs at least "
                             f"{row['duty_cycle_wall_h']:.3g} h of wall-clock")
            show = [c]
            if prof in best:
                r = priced(fixed[best[prof][0]], prof)
                if not isinstance(r, str):
                    show.append(r)
            plots += reports.plot_runs(show, out, f"loss-{prof}", gap=True,
                                       metrics=("bytes", "packets", "seconds", "joules"), title=prof,
                                       target=target)
        g = priced(gd, prof) if not isinstance(gd, str) else gd
        if isinstance(g, str):
            row["gd_cost"] = "infeasible"
        else:
            gv, gok, _ = reach(g, target, metric)
            row["gd_cost"] = gv if gok else f"{gv:.4g} (not reached)"
        row.update(boardbudget.board_columns(c, g, pd, p, target))  # whole board: radio + CPU + sleep
        if "cat_board_j" in row:
            cb, gb = row["cat_board_j"], row.get("gd_board_j", "infeasible")
            both = isinstance(cb, float) and isinstance(gb, float)
            lines.append(f"  {prof} on {row['board']} (whole board, 2xaa, one round per 600 s): CAT "
                         f"{cb if isinstance(cb, str) else f'{cb:.4g} J'}, GD "
                         f"{gb if isinstance(gb, str) else f'{gb:.4g} J'} to target"
                         + (f" (GD/CAT {gb / cb:.3g})" if both else "") + f"; battery life CAT "
                         f"{row['cat_battery_days']:.4g} days" + (f", GD {row['gd_battery_days']:.4g} days"
                                                                  if "gd_battery_days" in row else ""))
        table.append(row)
    # cross: the fixed T best on link A, priced on link B, against B's own best
    cross = []
    worst = (1.0, "", "")
    for a in profs:
        if a not in best:
            continue
        ta = best[a][0]
        row = {"tuned_on": a, "T": ta}
        for b in profs:
            if b not in best:
                row[b] = "—"
                continue
            v = cost_fixed[b].get(ta)
            if isinstance(v, str) or v is None:
                row[b] = "infeasible"
                continue
            ratio = v[0] / best[b][1]
            row[b] = f"{ratio:.3g}" + ("" if v[1] else " (lower bound)")
            if ratio > worst[0]:
                worst = (ratio, a, b)
        cross.append(row)
    infeasible = sum(1 for r in cross for b in profs if r.get(b) == "infeasible")
    if worst[1]:
        lines.append(f"fixed T tuned on one link, used on another: worst {worst[0]:.3g}x the best fixed T there "
                     f"(tuned on {worst[1]}, used on {worst[2]}); {infeasible} pairing(s) infeasible (frame too large)")
    cat_ok = [r["cat_over_best"] for r in table if "cat_over_best" in r]
    if cat_ok:
        lines.append(f"CAT/best fixed T over {len(cat_ok)} links: median {np.median(cat_ok):.3g}, "
                     f"worst {max(cat_ok):.3g} (CAT is not tuned per link)")
    for ln in lines[len(R.log):]:
        print(ln)
    cols = ["profile", "metric", "cat_median_T", "cat_T_range", "t_max", "rounds", "reached", "bytes", "packets",
            "airtime_s", "energy_j", "cat_cost", "best_fixed_T", "best_fixed_cost", "cat_over_best", "gd_cost",
            "duty_cycle_wall_h", "board", "cat_board_j", "gd_board_j", "cat_battery_days", "gd_battery_days", "note"]
    md1 = reports.write_table(table, out, "radios", cols)
    md2 = reports.write_table(cross, out, "cross", ["tuned_on", "T"] + profs)
    fx = []
    for prof in profs:
        for t in grid:
            v = cost_fixed[prof][t]
            fx.append({"profile": prof, "T": t, "cost": None if isinstance(v, str) else v[0],
                       "reached": None if isinstance(v, str) else v[1], "note": v if isinstance(v, str) else ""})
    md3 = reports.write_table(fx, out, "fixed-T", ["profile", "T", "cost", "reached", "note"])
    plt = reports._plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for prof in profs:
        pts = [(t, v[0]) for t, v in cost_fixed[prof].items() if not isinstance(v, str)]
        if not pts or prof not in best:
            continue
        ts, vs = zip(*pts)
        ln = ax.plot(ts, np.array(vs) / best[prof][1], marker="o", ms=3, label=prof)
        c = cat[prof]
        if not isinstance(c, str):
            ax.scatter([np.median(c.T)], [reach(c, target, simm.profile_dict(prof)["default_metric"])[0]
                                          / best[prof][1]], marker="*", s=80, color=ln[0].get_color())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("fixed T (star: CAT at its median T)")
    ax.set_ylabel("cost to target / best fixed T on that link")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    plots = reports.save_fig(fig, out, "fixed-T-per-link") + plots
    reports.write_report(out, "radios: one training, every link", reports.command_line(args), lines,
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
    print(f"wrote {out}")
    return 0


# ------------------------------------------------------------------------------ memory


def exp_memory(args: argparse.Namespace) -> int:
    out = prepare_out(args, "memory")
    R = Runner(args)
    node_counts = [int(v) for v in args.nodes_list.split(",")]
    schemes = (("s", "S"), ("sq", "S+Q"), ("ss", "SS"))
    rows = []
    lines_extra = []
    plots: list[str] = []
    bar = _outer(len(node_counts) * len(schemes) * 2, "memory", R.progress)
    for n in node_counts:
        R.problem(n)
        g0 = R.gap0[n]
        target = args.target * g0
        runs = []
        for sch, label in schemes:
            res = {}
            for ef in (False, True):
                r = R.run(n, SimConfig(scheme=sch, rule="cat", profile=args.profile, rounds=args.rounds,
                                       seed=args.seed, error_feedback=ef, stop_gap=args.floor * g0))
                bar.update()
                assert not isinstance(r, str)
                res[ef] = r
                runs.append(r)
                b, ok, rounds = reach(r, target, "bits")
                best_gap = float(np.nanmin(r.gap)) / g0
                acc = r.accuracy[np.isfinite(r.accuracy)]
                stopped = r.first_reach(args.floor * g0) is not None
                rows.append({"nodes": n, "scheme": label, "error_feedback": ef, "best_gap_rel": best_gap,
                             "stopped_at_floor": stopped, "reached_target": ok, "bits_to_target": b,
                             "rounds_to_target": rounds, "final_accuracy": float(acc[-1]) if acc.size else None,
                             "median_T": float(np.median(r.T)) if r.T.size else None})
            off, on = (reach(res[False], target, "bits"), reach(res[True], target, "bits"))
            g_off = float(np.nanmin(res[False].gap)) / g0
            g_on = float(np.nanmin(res[True].gap)) / g0

            def desc(gap_rel: float, hit: tuple) -> str:
                if hit[1]:
                    return f"reaches {100 * args.target:g} % with {hit[0]:.4g} bits"
                return f"stalls at {100 * gap_rel:.3g} % of the gap ({100 * args.target:g} % not reached)"

            lines_extra.append(f"{label}, {n} node(s): without EF {desc(g_off, off)}; with EF {desc(g_on, on)}"
                               + (f"; bits ratio without/with EF: {ratio_text(off[:2], on[:2])}"
                                  .replace("CAT", "EF") if off[1] or on[1] else ""))
        plots += reports.plot_runs(runs, out, f"loss-{n}node", gap=True, metrics=("bits",),
                                   title=f"{n} node(s), CAT, {args.profile}", target=target)
    bar.close()
    lines = list(R.log) + [f"CAT under {args.profile}; tight target {100 * args.target:g} % of F(x0) - f*; runs "
                           f"stop at {100 * args.floor:g} % or after {args.rounds} rounds"] + lines_extra
    for ln in lines[len(R.log):]:
        print(ln)
    md = reports.write_table(rows, out, "memory", ["nodes", "scheme", "error_feedback", "best_gap_rel",
                                                   "stopped_at_floor", "reached_target", "bits_to_target",
                                                   "rounds_to_target", "final_accuracy", "median_T"])
    reports.write_report(out, "memory: error feedback on and off", reports.command_line(args), lines,
                         {"Reachable gap and bits to the target": md}, plots,
                         params={"profile": args.profile, "nodes": node_counts, "rounds budget": args.rounds,
                                 "target": args.target},
                         notes=["best_gap_rel: the smallest (F - f*) / (F(x0) - f*) seen in the run.",
                                "Error feedback: the node compresses v = g/L + e and keeps e <- v - q "
                                "(DESIGN.md section 3)."])
    print(f"wrote {out}")
    return 0


# ------------------------------------------------------------------------------ CLI

EXPERIMENTS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "alpha": (exp_alpha, "alpha-bar(T) and SpeedUp(T) along GD (figure 1a)"),
    "bits-vs-T": (exp_bits_vs_t, "bits to eps for fixed T, payload and packet models, CAT marked (figure 1c)"),
    "paper-packet": (exp_paper_packet, "CAT vs GD, fixed T, Alistarh: 1 and 4 nodes, packet models (figure 2)"),
    "radios": (exp_radios, "one training priced on every link profile; CAT's T; fixed T across links"),
    "memory": (exp_memory, "every scheme with and without error feedback, 1 and 4 nodes"),
}


def common_args(q: argparse.ArgumentParser) -> None:
    """Options every experiment takes (aggregator/lab/energycat.py adds its own experiment too)."""
    simm.add_data_args(q)
    q.add_argument("--rounds", type=int, default=None, help="round budget per run")
    q.add_argument("--target", type=float, default=None, help="target: this fraction of F(x0) - f*")
    q.add_argument("--out", default=None, help="output directory (default out/<name>-<timestamp>)")
    q.add_argument("--quiet", action="store_true", help="no progress bars")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="run a named experiment (tables, plots, report.md)",
                       description=__doc__.split("\n\n")[0])
    names = p.add_subparsers(dest="experiment", metavar="NAME")
    for name, (fn, help_) in EXPERIMENTS.items():
        q = names.add_parser(name, help=help_, description=help_)
        common_args(q)
        if name == "alpha":
            q.add_argument("--nodes", type=int, default=1)
            q.add_argument("--points", type=int, default=40, help="T grid points")
            q.set_defaults(rounds=300)
        elif name == "bits-vs-T":
            q.add_argument("--nodes", type=int, default=1)
            q.add_argument("--points", type=int, default=12, help="geometric T grid points (plus packet multiples)")
            q.add_argument("--payload-profile", default=PAYLOAD)
            q.add_argument("--packet-profile", default=PACKET_SMALL)
            q.set_defaults(rounds=4000, target=0.1)
        elif name == "paper-packet":
            q.add_argument("--nodes-list", default="1,4", help="node counts (default 1,4)")
            q.set_defaults(rounds=2000, target=0.1)
        elif name == "radios":
            q.add_argument("--nodes", type=int, default=4)
            q.add_argument("--scheme", default="s")
            q.add_argument("--profiles", default=None, help="comma-separated (default: every link profile)")
            q.add_argument("--grid", default=None, help="comma-separated fixed T values")
            q.add_argument("--fmt", choices=("f32", "f16"), default="f32",
                           help="value format on the wire (f16 lets T = 1 fit LoRaWAN DR0's 51 B)")
            q.set_defaults(rounds=3000, target=0.1)
        elif name == "memory":
            q.add_argument("--nodes-list", default="1,4")
            q.add_argument("--profile", default=PACKET_SMALL)
            q.add_argument("--floor", type=float, default=0.001,
                           help="stop a run once F - f* is this fraction of the initial gap")
            q.set_defaults(rounds=1500, target=0.01)
        q.set_defaults(func=fn, _parser=q, _words=["experiment", name])
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])
