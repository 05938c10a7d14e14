"""What CostModel.tabulate saves a round: CAT against walked costs vs against the table.

A node's round (edge/node.py compute) runs CAT over T = 1..K twice (edge/cat.py: the maximum
ratio, then the first T within RATIO_RTOL of it); each C(T) used to walk the CoAP exchanges,
datagrams and 802.15.4 frames (edge/onair.py) anew. The table walks them once per cost
version (edge/cost.py CostModel.tabulate). Here, in one process, the selection + CAT step
(edge.compress.compress, K = 128 as the firmware budget's rounds) with a fresh cost model each
time (the old path) and with a tabulated one, as a ratio; the table's own build time per
version; and that both choose the same T with the same improvement and cost.

    python benchmarks/cost_table.py
"""

from __future__ import annotations

import sys
import time
from array import array
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge import cat, compress  # noqa: E402
from edge.cat import SCHEME_S, SCHEME_SQ, SCHEME_SS  # noqa: E402
from edge.cost import CostModel  # noqa: E402
from edge.profile import load_profile  # noqa: E402

D, K, REPS = 4096, 128, 30


def best_of(fn, reps: int = REPS) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    prof = load_profile("ieee802154-6lowpan-coap")
    rng = np.random.default_rng(11)
    g = array("f", (rng.standard_t(1.5, D) * 1e-2).astype(np.float32))
    print(f"d = {D}, K = {K}, profile {prof['name']}, best of {REPS}")
    print("scheme  walked ms  table ms  table/walked  build ms  same T")
    for scheme, name in ((SCHEME_S, "s"), (SCHEME_SQ, "sq"), (SCHEME_SS, "ss")):
        ws = compress.Workspace(D, K, 0, None if scheme == SCHEME_SS else 0)
        plain = CostModel(prof, D, scheme, job=1, node=1, rnd=5, telemetry=True)
        tab = CostModel(prof, D, scheme, job=1, node=1, rnd=5, telemetry=True)
        tab.tabulate(ws.cap)

        def run(cm: CostModel):
            return compress.compress(ws, array("f", g), scheme, cat.Rule("cat"), cm, cm.t_max, 1.0,
                                     compress.XorShift32(5)).choice

        a, b = run(plain), run(tab)
        same = (a.t, a.improvement, a.cost) == (b.t, b.improvement, b.cost)
        tw, tt = best_of(lambda: run(plain)), best_of(lambda: run(tab))

        def build():
            tab.table = None
            tab.tabulate(ws.cap)

        tb = best_of(build, 5)
        print(f"{name:6}  {tw * 1e3:9.2f}  {tt * 1e3:8.2f}  {tt / tw:12.2f}  {tb * 1e3:8.2f}  {same}")


if __name__ == "__main__":
    main()
