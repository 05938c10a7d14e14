"""Where a simulated round's time goes, node by node against batched: the nodes' gradients and
their selections (CAT's compress on the numpy backend), at 1, 4 and 16 nodes, measured in one
process on the grid's quick problem (synthetic RCV1-like, 4,000 x 400). Ratios, not seconds:
the machine is shared.

    python benchmarks/sim_round.py [--rounds N] [--rule catavg|cat] [--scheme sq|s|ss]

The node-by-node run (`simulate(..., batched=False)`: one `loss_grad_np` and one
`np_backend.compress` per node) is the baseline of the batched one (`Problem.loss_grads` on
the stacked parts, `np_backend.compress_rows`); both give the same arrays
(tests/test_batched.py). Last lines: `selection/gradient time per round at 16 nodes: X (node
by node), Y (batched)` and `batched/node-by-node time per round at 16 nodes: Z`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

# benchmarks/aggregator.py would shadow the package when this runs as a script from here;
# the checkout this file is in is what gets measured (not an installed copy)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregator.lab.engine import SimConfig, _gradients, simulate  # noqa: E402
from aggregator.lab.experiments.grid import NNZ, SIZES  # noqa: E402
from aggregator.lab.problem import load_data, make_problem  # noqa: E402

MODES = (("node by node", False), ("batched", True))


def gradient_s(p, batched: bool, repeats: int) -> float:
    """Median wall-clock of every node's gradient at x = 0 (the same gradients, timed alone)."""
    x = np.zeros(p.dim)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _gradients(p, x, None, [], batched)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--rule", default="catavg")
    ap.add_argument("--scheme", default="sq")
    args = ap.parse_args()
    rows, features = SIZES[0]
    data = load_data("synthetic", rows, features, NNZ, 0, False)
    print(f"{args.rule} {args.scheme}, {args.rounds} rounds; ms per round (median), ratios in one process")
    print(f"{'nodes':>5} {'mode':>13} {'gradients':>10} {'selection':>10} {'round':>8} {'sel/grad':>9}")
    last: dict[str, tuple[float, float]] = {}
    for n in (1, 4, 16):
        p = make_problem(data, n, "even", 1e-4, None, 0, 0.5, "spectral")
        for name, batched in MODES:
            cfg = SimConfig(scheme=args.scheme, rule=args.rule, rounds=args.rounds, seed=0)
            res = simulate(p, cfg, progress=False, batched=batched)
            sel = float(np.median(res.select_s.sum(axis=1)))       # all nodes' compress, per round
            rnd = float(np.median(res.round_s[:-1]))
            grad = gradient_s(p, batched, max(5, args.rounds // 10))
            last[name] = (sel / grad, rnd)
            print(f"{n:5d} {name:>13} {grad * 1e3:10.3f} {sel * 1e3:10.3f} {rnd * 1e3:8.3f} {sel / grad:9.3f}")
    loop, batch = last["node by node"], last["batched"]
    print(f"selection/gradient time per round at 16 nodes: {loop[0]:.3f} (node by node), {batch[0]:.3f} (batched)")
    print(f"batched/node-by-node time per round at 16 nodes: {batch[1] / loop[1]:.3f}")


if __name__ == "__main__":
    main()
