"""edge/noiseprior.py (rule catavg's weights before the first delta) on MicroPython: the second
pass over a real data file gives the CPython edge's candidates and weights, bit for bit on the
64-bit build (IEEE doubles), and to single precision on the 32-bit board build."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import scipy.sparse as sp

from aggregator.lab import datasets
from firmware_tests import harness

SCRIPT = """\
import json, struct, binascii
from array import array
from edge import catavg, learner, noiseprior
from edge.compress import XorShift32
from edge.datafile import DataFile

out = []
for name, kind in (('logistic.catd', 'logistic'), ('softmax.catd', 'softmax')):
    data = DataFile(name)
    size = learner.model_size(data.d, data.classes, kind)
    rng = XorShift32(5)
    model = array('f', [rng.random() - 0.5 for _ in range(size)])
    grad = learner.zeros(size)
    learner.loss_and_grad(model, data, 0.001, grad, kind)
    ag = catavg.Agreement(30, 4, size)
    noiseprior.compute(ag, learner.zeros(30), grad, model, data, 0.001, kind, 4)
    out.append([ag.n, list(ag.idx[:ag.n]),
                binascii.hexlify(struct.pack('<%df' % ag.n, *ag.w[:ag.n])).decode()])
print("@@RESULT", json.dumps(out))
"""


def _files(tmp_path) -> dict:
    rng = np.random.default_rng(4)
    out = {}
    for name, classes in (("logistic.catd", 2), ("softmax.catd", 3)):
        X = sp.random(80, 50, density=0.15, random_state=rng, format="csr", dtype=np.float32)
        y = rng.integers(0, classes, 80)
        y[:classes] = np.arange(classes)
        out[name] = datasets.write_datafile(tmp_path / name, X, y, classes, "csr")
    return out


def _cpython(root) -> list:
    env = dict(os.environ, PYTHONPATH=str(harness.REPO))
    cpy = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60,
                         cwd=root, env=env, check=True)
    return json.loads(cpy.stdout.split("@@RESULT", 1)[1])


def _weights(hexed: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(hexed), dtype="<f4")


def test_noise_prior_on_micropython_equals_cpython(mp64, tmp_path):
    root = harness.make_device_root(tmp_path, extra=_files(tmp_path))
    r = harness.run(mp64, root, SCRIPT, heap="256k")
    assert r.ok, r.describe()
    want = _cpython(root)
    assert r.result == want
    w = np.concatenate([_weights(w) for _, _, w in want])
    assert [m for m, _, _ in want] == [30, 30] and w.min() == 0.25 and w.max() > 0.8   # the floor 1/n and more


def test_noise_prior_on_the_32_bit_board_build(mp32, tmp_path):
    root = harness.make_device_root(tmp_path, extra=_files(tmp_path))
    r = harness.run(mp32, root, SCRIPT, heap="128k")
    assert r.ok, r.describe()
    want = _cpython(root)
    for (m, idx, w), (m2, idx2, w2) in zip(r.result, want):
        assert (m, idx) == (m2, idx2)
        np.testing.assert_allclose(_weights(w), _weights(w2), rtol=1e-3, atol=1e-3)
