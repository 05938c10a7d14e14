"""paper-packet: 1 and 4 nodes, S / S+Q / SS under CAT against GD, a packet-filling fixed T
and Alistarh's rule, under the packet models 128/64/128 and 576/64/512 (figure 2, appendix I).

Its last line is the paper's headline ratio: bits Alistarh's rule needs over CAT S+Q's on
4 nodes under 128/64/128. GD and Alistarh's rule do not read the cost, so each is trained
once per node count and priced under both models.
"""

from __future__ import annotations

import argparse

import numpy as np

from aggregator.lab import reports
from aggregator.lab.cliargs import int_list
from aggregator.lab.engine import SimConfig, scheme_label
from aggregator.lab.experiments.common import Runner, finish, packet_entries, priced, progress_bar, ratio_text, reach
from aggregator.lab.pricing import PACKET_LARGE, PACKET_SMALL
from aggregator.lab.results import SimResult

NAME = "paper-packet"
HELP = "CAT vs GD, fixed T, Alistarh: 1 and 4 nodes, packet models (figure 2)"
PROFILES = (PACKET_SMALL, PACKET_LARGE)
PAPER_RATIOS = {(1, PACKET_SMALL): "paper: about 2x (appendix I, figure 10, RCV1)",
                (4, PACKET_LARGE): "paper: about 6x (section 6, experiment 2, RCV1, 4 nodes)"}
CAT_SCHEMES = ("s", "sq", "ss")


def add_arguments(q: argparse.ArgumentParser) -> None:
    q.add_argument("--nodes-list", default="1,4", help="node counts (default 1,4)")
    q.set_defaults(rounds=2000, target=0.1)


def _methods(R: Runner, n: int, prof: str, gd: SimResult, ali: SimResult, common: dict,
             bar) -> dict[str, SimResult]:
    """Every method's run under one packet model: GD and Alistarh priced there, CAT with
    each scheme and the packet-filling fixed T trained there."""
    p = R.problem(n)
    res = {"GD": priced(gd, prof), "Alistarh S+Q": priced(ali, prof)}
    tau = min(packet_entries(prof, "sq", p.dim), p.dim)
    for scheme in CAT_SCHEMES:
        res[f"CAT {scheme_label(scheme)}"] = R.run(n, SimConfig(scheme=scheme, rule="cat", profile=prof, **common))
        bar.update()
    res[f"fixed T={tau} S+Q"] = R.run(n, SimConfig(scheme="sq", rule="fixed", rule_param=tau, profile=prof,
                                                   **common))
    bar.update()
    return res


def _rows(n: int, prof: str, res: dict[str, SimResult], target: float, gap0: float) -> list[dict]:
    """The table rows of one (node count, model): bits and packets to the target, against CAT S+Q."""
    reached = {k: reach(v, target, "bits") for k, v in res.items()}
    cat_sq = reached.get("CAT S+Q")
    rows = []
    for k, v in res.items():
        b, hit, rounds = reached[k]
        rows.append({"nodes": n, "profile": prof, "method": k, "bits": b, "reached": hit, "rounds": rounds,
                     "packets": reach(v, target, "packets")[0],
                     "median_T": float(np.median(v.T[:max(1, rounds)])) if v.T.size else None,
                     "bits_over_cat_sq": ratio_text((b, hit), cat_sq[:2]) if cat_sq else None,
                     "final_gap_rel": float(v.gap[-1] / gap0), "note": ""})
    return rows


def _ratio_lines(n: int, prof: str, res: dict[str, SimResult], target: float) -> tuple[str, list[str]]:
    """Alistarh's bits over CAT S+Q's (the headline), and the result lines: that ratio with
    the paper's figure where it gives one, and GD's bits over CAT S+Q's."""
    cat_sq = reach(res["CAT S+Q"], target, "bits")[:2]
    short = prof.replace("paper-packet-", "").replace("-", "/")
    headline = (f"bits ratio alistarh/cat S+Q ({n} node{'s' if n > 1 else ''}, packet {short}): "
                f"{ratio_text(reach(res['Alistarh S+Q'], target, 'bits')[:2], cat_sq)}")
    ref = PAPER_RATIOS.get((n, prof))
    return headline, [headline + (f"   [{ref}]" if ref else ""),
                      f"bits ratio GD/cat S+Q ({n} node(s), packet {short}): "
                      f"{ratio_text(reach(res['GD'], target, 'bits')[:2], cat_sq)}"]


def run(args: argparse.Namespace) -> int:
    out = reports.out_dir(args.out, NAME)
    R = Runner(args)
    node_counts = int_list(args.nodes_list, "--nodes-list")
    rows = []
    ratio_lines = []
    plots: list[str] = []
    final_line = "bits ratio alistarh/cat S+Q (4 nodes, packet 128/64/128): n/a (4 nodes not run)"
    bar = progress_bar(len(node_counts) * (2 + len(PROFILES) * 4), NAME, R.progress)
    for n in node_counts:
        R.problem(n)
        target = args.target * R.gap0[n]
        common = dict(rounds=args.rounds, seed=args.seed, stop_gap=target, error_feedback=False)
        gd = R.run(n, SimConfig(scheme="identity", rule="identity", profile=PACKET_SMALL, **common))
        bar.update()
        ali = R.run(n, SimConfig(scheme="sq", rule="alistarh", profile=PACKET_SMALL, **common))
        bar.update()
        for prof in PROFILES:
            res = _methods(R, n, prof, gd, ali, common, bar)
            rows += _rows(n, prof, res, target, R.gap0[n])
            headline, more = _ratio_lines(n, prof, res, target)
            ratio_lines += more
            if n == 4 and prof == PACKET_SMALL:
                final_line = headline
            short = prof.replace("paper-packet-", "").replace("-", "/")
            plots += reports.plot_runs(list(res.values()), out, f"loss-{n}node-{short.replace('/', '-')}", gap=True,
                                       metrics=("bits", "packets"), title=f"{n} node(s), packet {short}",
                                       target=target)
    bar.close()
    lines = R.conclude([f"target: F - f* <= {args.target:g} x (F(x0) - f*); error feedback off; budget "
                        f"{args.rounds} rounds; a method that does not reach the target is charged its "
                        "bits over the whole budget"] + ratio_lines)
    print(final_line)
    md = reports.write_table(rows, out, "paper-packet",
                             ["nodes", "profile", "method", "bits", "reached", "rounds", "packets", "median_T",
                              "bits_over_cat_sq", "final_gap_rel", "note"])
    return finish(args, out, "paper-packet: CAT against GD, fixed T and Alistarh's rule (figure 2, appendix I)",
                  lines + [final_line], {"Bits to the target": md}, plots,
                  params={"nodes": node_counts, "rounds budget": args.rounds, "target": args.target})
