"""Where a simulated round's time goes: the nodes' gradients against their selections (CAT's
compress on the numpy backend), at 1, 4 and 16 nodes, measured in one process on the grid's
quick problem (synthetic RCV1-like, 4,000 x 400). Ratios, not seconds: the machine is shared.

    python benchmarks/sim_round.py [--rounds N]

Last line: `selection/gradient time per round at 16 nodes: X`. Above 1 the selection would be
the part to vectorise across nodes; below, the gradients are.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

# benchmarks/aggregator.py would shadow the package when this runs as a script from here
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from aggregator.lab.engine import SimConfig, _gradients, simulate  # noqa: E402
from aggregator.lab.experiments.grid import NNZ, SIZES  # noqa: E402
from aggregator.lab.problem import load_data, make_problem  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=100)
    args = ap.parse_args()
    rows, features = SIZES[0]
    data = load_data("synthetic", rows, features, NNZ, 0, False)
    ratio = 0.0
    print(f"{'nodes':>5} {'gradients ms/round':>19} {'selection ms/round':>19} {'selection/gradient':>19}")
    for n in (1, 4, 16):
        p = make_problem(data, n, "even", 1e-4, None, 0, 0.5, "spectral")
        res = simulate(p, SimConfig(scheme="sq", rule="cat", rounds=args.rounds, seed=0), progress=False)
        sel = float(np.median(res.select_s.sum(axis=1)))           # all nodes' compress, per round
        x = np.zeros(p.dim)
        times = []
        for _ in range(max(5, args.rounds // 10)):                  # the same gradients, timed alone
            t0 = time.perf_counter()
            _gradients(p, x, None, [])
            times.append(time.perf_counter() - t0)
        grad = float(np.median(times))
        ratio = sel / grad
        print(f"{n:5d} {grad * 1e3:19.2f} {sel * 1e3:19.2f} {ratio:19.3f}")
    print(f"selection/gradient time per round at 16 nodes: {ratio:.3f}")


if __name__ == "__main__":
    main()
