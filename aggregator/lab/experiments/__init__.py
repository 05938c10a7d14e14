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
                boards x links, priced on the whole board.
* grid:         CAT against Alistarh, the best fixed T and GD over nodes x links x targets x
                error feedback x seeds x sizes x splits; heatmaps and the cells where CAT loses.
* link-costs:   CAT choosing T on the old 802.15.4 CoAP and LoRaWAN costs against the corrected
                (walked, receive windows) ones, priced as the radio spends; the delta's share of a round.

Each writes tables (CSV + Markdown), PNG + SVG plots and report.md with the reproducing
command into --out (default out/<name>-<timestamp>/), and prints its ratios.

Why runs are re-priced instead of re-run: with a fixed T (or GD, or Alistarh's rule) the
trajectory does not depend on the cost profile, so one run is priced under every profile
(`common.priced`, on `engine.recost`); only CAT, which reads the cost, runs once per profile.

Default size: synthetic RCV1-like data, 45,000 rows x 3,000 features (`problem.SMALL`), so
each experiment takes a minute or two on 2 cores; `--full` is RCV1's size, `--data PATH`
a LIBSVM file.

Adding an experiment: a module here with NAME, HELP, `add_arguments(parser)` (its own flags
and defaults for --rounds / --target) and `run(args) -> int`, built on `common` (Runner,
priced, reach, prepare_out), and one entry in EXPERIMENTS below.
"""

from __future__ import annotations

import argparse

from aggregator.lab.experiments import alpha, bits_vs_t, energy_cat, grid, link_costs, memory, paper_packet, radios
from aggregator.lab.experiments.common import common_args

#: the experiments in the order `cat-aggregator experiment --help` lists them.
EXPERIMENTS = (alpha, bits_vs_t, paper_packet, radios, memory, energy_cat, grid, link_costs)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="run a named experiment (tables, plots, report.md)",
                       description=__doc__.split("\n\n")[0])
    names = p.add_subparsers(dest="experiment", metavar="NAME")
    for exp in EXPERIMENTS:
        q = names.add_parser(exp.NAME, help=exp.HELP, description=exp.HELP)
        common_args(q)
        exp.add_arguments(q)
        q.set_defaults(func=exp.run, _parser=q, _words=["experiment", exp.NAME])
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])
