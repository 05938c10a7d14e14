"""What catavg's noise prior costs a node's round: its second pass against the gradient pass.

In a round without a delta read (round 0, after a snapshot or missed rounds) a catavg node of a
multi-node job makes a second pass over its data file (edge/noiseprior.py compute: selection,
then c a and (c a)^2 summed at the K candidates, each row walked against them). Here, in one process, the
edge's pure-Python gradient pass (edge.learner.loss_and_grad) and the noise pass on the same
file, as a ratio (best of REPS each), on the firmware budget's problem shape (d = 1,024 and
4,096, 64 stored entries a row, K = 128) and a softmax one.

    python benchmarks/noise_prior.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aggregator.lab import datasets  # noqa: E402
from cost_table import best_of  # noqa: E402  (this directory is the script's sys.path[0])
from edge import catavg, datafile, learner, noiseprior  # noqa: E402

ROWS, NNZ, K, REPS = 400, 64, 128, 5


def case(tmp: Path, d: int, classes: int) -> tuple[float, float]:
    rng = np.random.default_rng(d + classes)
    X = sp.random(ROWS, d, density=NNZ / d, random_state=rng, format="csr", dtype=np.float32)
    y = rng.integers(0, classes, ROWS)
    y[:classes] = np.arange(classes)
    data = datafile.DataFile(str(datasets.write_datafile(tmp / f"b{d}-{classes}.catd", X, y, classes, "csr")))
    kind = "logistic" if classes == 2 else "softmax"
    size = learner.model_size(d, classes, kind)
    model = learner.zeros(size)
    for j in range(size):
        model[j] = float(rng.normal(0.0, 0.1))
    grad = learner.zeros(size)
    ag = catavg.Agreement(K, 4, size)
    sums = learner.zeros(K)
    t_grad = best_of(lambda: learner.loss_and_grad(model, data, 1e-3, grad, kind), REPS)
    t_noise = best_of(lambda: noiseprior.compute(ag, sums, grad, model, data, 1e-3, kind, 4), REPS)
    return t_grad, t_noise


def main() -> None:
    print(f"{ROWS} rows, {NNZ} stored entries a row, K = {K}; CPython, pure-Python edge, best of {REPS}")
    print(f"{'model':>18} {'gradient ms':>12} {'noise pass ms':>14} {'noise/gradient':>15}")
    with tempfile.TemporaryDirectory() as t:
        for d, classes in ((1024, 2), (4096, 2), (1024, 3)):
            tg, tn = case(Path(t), d, classes)
            name = f"d={d} " + ("logistic" if classes == 2 else f"softmax C={classes}")
            print(f"{name:>18} {tg * 1e3:12.1f} {tn * 1e3:14.1f} {tn / tg:15.2f}")


if __name__ == "__main__":
    main()
