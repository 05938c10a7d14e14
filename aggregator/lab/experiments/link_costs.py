"""link-costs: what pricing the radio as it really works changed (`cat-aggregator experiment link-costs`).

CAT picks T by what the frame costs on the node's link, so a cost wrong in shape picks the wrong
T. Two links' costs were corrected: CoAP over 802.15.4 is walked as the client sends it (Block1
exchanges, their replies and the listening around them, exact 6LoWPAN; edge/onair.py) instead of
a packet model (cost_profiles/legacy/), and LoRaWAN counts the class A receive windows after
every uplink. The paper profiles and BLE did not change. Per link, scheme and node count CAT
runs twice: choosing T on the old cost, then on the corrected one; both runs are priced by the
corrected model, which is what the radio spends, to the same loss target. CAT with the wrong
cost is the baseline.

Beside it, the downlink: every round each node fetches the model delta (a GET with Block2 on
802.15.4, walked the same way; on LoRaWAN a downlink in its receive window), whose size grows
with the entries all nodes sent. Its joules are shown as a share of the node's round, by T: where
the share is large, the frame's cost alone understates what a larger T costs the node. A third
run lets C(T) carry that share (edge/deltacost.py: the frame plus the fetch of a delta of
min(d, n T) entries); all three are compared on the joules of updates and fetches together.
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import numpy as np

from aggregator.lab import reports
from aggregator.lab.cliargs import ArgumentError
from aggregator.lab.engine import Infeasible, SimConfig, delta_fetch
from aggregator.lab.experiments.common import Runner, finish, priced, progress_bar, reach
from aggregator.lab.pricing import profile_dict
from aggregator.lab.results import SimResult
from edge.profile import profiles_dir

NAME = "link-costs"
HELP = "CAT choosing T on the old link costs against the corrected ones, priced as the radio spends; the downlink's share"
LINKS = ("ieee802154-6lowpan-coap", "lorawan-eu868-sf7")


def old_profile(link: str) -> dict:
    """The link's cost as it was priced before the correction (a loaded profile dict)."""
    if link == "ieee802154-6lowpan-coap":
        return profile_dict(f"{profiles_dir()}/legacy/ieee802154-6lowpan-coap-packet.toml")
    prof = copy.deepcopy(profile_dict(link))
    if prof.get("lora") and prof["lora"].get("rx2_spreading_factor"):
        prof["lora"].pop("rx2_spreading_factor")  # no receive windows: edge.lora.rx_windows gives ()
        prof["name"] += " (no RX windows)"
        return prof
    raise ArgumentError(f"--links: {link}: its cost has no older form to compare with (known: {', '.join(LINKS)})")


def add_arguments(q: argparse.ArgumentParser) -> None:
    q.add_argument("--links", default=",".join(LINKS), help=f"comma-separated (default {','.join(LINKS)})")
    q.add_argument("--nodes", default="1,4", help="node counts, comma-separated (default 1,4)")
    q.add_argument("--schemes", default="s,sq,ss", help="comma-separated (default s,sq,ss)")
    q.add_argument("--rule", choices=("cat", "catavg"), default="cat",
                   help="the rule every run chooses T by (default cat, the paper's: the figures in "
                        "docs/experiments.md; catavg, the project's default, gives the same verdict)")
    q.set_defaults(rounds=400, target=0.1)


VARIANTS = ("old", "corrected", "with-delta")


def downlink_share(res: SimResult, prof: dict, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Per round: each node's joules fetching the round's delta, and that over its round (its
    update + the delta). The delta carries res.down_entries entries (the union the gateway sent)."""
    fetch = delta_fetch(prof, d, 0, "joules", max(0, res.rounds - 1))
    down = np.array([fetch(int(m)) for m in res.down_entries[: res.rounds]])
    up = res.joules[: res.rounds].mean(axis=1)
    return down, down / (up + down)


def _row(link: str, scheme: str, n: int, runs: dict[str, SimResult | str], target: float, prof: dict,
         d: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The table's row of one cell, and each run's per-round downlink share (for the plot)."""
    row: dict[str, Any] = {"link": link, "scheme": scheme, "nodes": n}
    shares: dict[str, np.ndarray] = {}
    for tag, res in runs.items():
        if isinstance(res, str):
            row[f"{tag}_note"] = res
            continue
        j, ok, rounds = reach(res, target, "joules")
        sl = slice(0, rounds)
        down, share = downlink_share(res, prof, d)
        shares[tag] = share
        row.update({f"{tag}_T_median": float(np.median(res.T[sl])), f"{tag}_rounds": rounds,
                    f"{tag}_uplink_j": j, f"{tag}_reached": ok,
                    f"{tag}_with_downlink_j": j + n * float(down[sl].sum()),
                    f"{tag}_downlink_share": float(np.median(share[sl]))})
    if "old_uplink_j" in row and "corrected_uplink_j" in row:
        row["corrected_over_old"] = row["corrected_uplink_j"] / row["old_uplink_j"]
        row["corrected_over_old_with_downlink"] = row["corrected_with_downlink_j"] / row["old_with_downlink_j"]
    if "with-delta_with_downlink_j" in row and "corrected_with_downlink_j" in row:
        row["with-delta_over_corrected"] = row["with-delta_with_downlink_j"] / row["corrected_with_downlink_j"]
    return row, shares


def _line(row: dict[str, Any]) -> str:
    head = f"{row['link']}, {row['scheme']}, {row['nodes']} node(s): "
    if "corrected_over_old" not in row:
        return head + "; ".join(f"{t}: {row[f'{t}_note']}" for t in ("old", "corrected") if f"{t}_note" in row)
    mark = "" if row["old_reached"] and row["corrected_reached"] else " (a run missed the target: joules over the budget)"
    line = (head + f"T median {row['old_T_median']:g} on the old cost, {row['corrected_T_median']:g} on the corrected; "
            f"joules to the target (corrected pricing) {row['old_uplink_j']:.4g} vs {row['corrected_uplink_j']:.4g}, "
            f"corrected/old {row['corrected_over_old']:.3g}{mark}; with every node's delta fetch "
            f"{row['corrected_over_old_with_downlink']:.3g}; the delta is {100 * row['corrected_downlink_share']:.3g} % "
            f"of a node's round")
    if "with-delta_over_corrected" in row:
        miss = "" if row["with-delta_reached"] else " (target not reached)"
        line += (f"; C(T) with the delta's share: T median {row['with-delta_T_median']:g}, updates + fetches "
                 f"{row['with-delta_with_downlink_j']:.4g} J = {row['with-delta_over_corrected']:.3g} x{miss}")
    return line


def _plots(rows: list[dict], shares: dict[str, tuple[np.ndarray, np.ndarray]], out) -> list[str]:
    plt = reports.pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    done = [r for r in rows if "corrected_over_old" in r]
    labels = [f"{r['link'].split('-')[0]} {r['scheme']} n{r['nodes']}" for r in done]
    a.bar(range(len(done)), [r["corrected_over_old"] for r in done], color="tab:blue")
    a.axhline(1.0, color="grey", lw=0.8)
    a.set_xticks(range(len(done)), labels, rotation=60, ha="right", fontsize=8)
    a.set_ylabel("joules to target: corrected T / old T")
    a.set_title("CAT on the corrected cost, against CAT on the old one")
    for i, (name, (T, share)) in enumerate(shares.items()):
        b.scatter(T, 100 * share, s=8, label=name, color=plt.cm.tab20(i % 20),
                  marker="o" if name.startswith("ieee802154") else "^")
    b.axhline(10, color="grey", lw=0.8, ls="--")
    b.set_xscale("log")
    b.set_xlabel("mean T of the round")
    b.set_ylabel("delta fetch, % of a node's round energy")
    b.set_title("the downlink's share of a round")
    b.legend(fontsize=7)
    fig.tight_layout()
    return reports.save_fig(fig, out, "link-costs")


def run(args: argparse.Namespace) -> int:
    links = [x for x in args.links.split(",") if x]
    olds = {link: old_profile(link) for link in links}  # an unknown link: one line before anything runs
    news = {link: profile_dict(link) for link in links}
    nodes = [int(x) for x in args.nodes.split(",") if x]
    schemes = [x for x in args.schemes.split(",") if x]
    out = reports.out_dir(args.out, NAME)
    R = Runner(args)
    rows: list[dict] = []
    shares: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    bar = progress_bar(len(VARIANTS) * len(links) * len(nodes) * len(schemes), NAME, R.progress)
    for n in nodes:
        p = R.problem(n)
        target = args.target * R.gap0[n]
        for link in links:
            for scheme in schemes:
                common = dict(rounds=args.rounds, seed=args.seed, stop_gap=target, scheme=scheme, metric="joules",
                              rule=args.rule)  # the same rule on every cost
                runs: dict[str, SimResult | str] = {}
                for tag, prof in (("old", olds[link]), ("corrected", link), ("with-delta", link)):
                    try:
                        res = R.run(n, SimConfig(profile=prof, delta_share=tag == "with-delta", **common))
                        runs[tag] = priced(res, link, "joules") if tag == "old" else res
                    except Infeasible as e:
                        runs[tag] = str(e)
                    bar.update(1)
                row, per_run = _row(link, scheme, n, runs, target, news[link], p.dim)
                rows.append(row)
                c = runs["corrected"]
                if "corrected" in per_run:
                    shares[f"{link} {scheme} n{n}"] = (c.T[: c.rounds].mean(axis=1), per_run["corrected"])
    bar.close()
    lines = R.conclude([_line(r) for r in rows])
    cols = ["link", "scheme", "nodes"] + [f"{t}_{c}" for t in VARIANTS for c in (
        "T_median", "rounds", "reached", "uplink_j", "with_downlink_j", "downlink_share", "note")] + [
        "corrected_over_old", "corrected_over_old_with_downlink", "with-delta_over_corrected"]
    md = reports.write_table(rows, out, NAME, cols)
    plots = _plots(rows, shares, out)
    return finish(args, out, "link-costs: CAT on the old link costs against the corrected ones", lines,
                  {"Joules to the target, priced by the corrected model": md}, plots,
                  params={"links": args.links, "nodes": args.nodes, "schemes": args.schemes, "rule": args.rule,
                          "rounds budget": args.rounds, "target": args.target},
                  notes=("old: 802.15.4 CoAP as the packet model of cost_profiles/legacy/ (104 B fragments, "
                         "no Block1, a 31 B reply, no listening); LoRaWAN without the class A RX1/RX2 windows. "
                         "corrected: the shipped profiles. Both runs' frames are priced by the corrected model.",
                         "uplink_j: the nodes' update frames to the target; with_downlink_j adds every node's "
                         "fetch of every round's delta (aggregator/lab/energy.py downlink_energy: the Block2 "
                         "walk on 802.15.4). downlink_share: the median over rounds of a node's delta fetch "
                         "over its update + fetch.",
                         "with-delta: C(T) = the frame's joules + the node's fetch of a delta of min(d, n T) "
                         "entries (edge/deltacost.py); with-delta_over_corrected compares updates + fetches."))
