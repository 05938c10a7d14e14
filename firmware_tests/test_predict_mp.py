"""Prediction on the edge (edge/predict.py) on real MicroPython, with the model it trained.

A board (the unix port with a fixed heap, edge/ as .mpy, node.json as `flash` writes it)
trains a softmax job (wine: 3 classes, 13 features) with the real gateway over CoAP until the
job's last round, then classifies the rows of its own data file with the synced model. The
board's model must be the gateway's bit for bit, and its classes those of the gateway's rule
(aggregator.lab.datasets.predict_np) wherever the top two logits are apart by more than the
rounding of a float32 dot product (mp32); on mp64 (doubles) everywhere.
"""

from __future__ import annotations

import binascii
import json

import numpy as np
import pytest

from aggregator.gateway.config import load_job
from aggregator.lab import datasets
from aggregator.ops import jobs
from aggregator.ops.flash import node_config
from edge.datafile import DataFile
from firmware_tests import harness
from firmware_tests.budget import start_coap_gateway

SCRIPT = harness.REPO / "firmware_tests" / "scripts" / "predict.py"
ROUNDS = 6


def test_board_classifies_its_readings_with_the_synced_model(interp, tmp_path):
    layout = jobs.prepare(tmp_path / "job", "wine", nodes=1, rounds=ROUNDS, scheme="sq", k_cap=8)
    data = layout.data_files[0]
    assert DataFile(str(data)).index is None          # dense rows: each one is a reading

    def make(state):
        job = load_job(layout.job_path)
        job.state_dir = state
        return job

    gw, job, port = start_coap_gateway(tmp_path, make)
    try:
        cfg = node_config(job, 0, "data.catd", "coap", "127.0.0.1", port, ack_timeout=1.0)
        root = harness.make_device_root(tmp_path, mode="mpy", extra={"node.json": json.dumps(cfg), "data.catd": data})
        heap = "100k" if interp.pointer_bits == 32 else "192k"   # catavg (the default rule) and its code: +4 KiB
        r = harness.run(interp, root, SCRIPT, heap=heap, timeout=180, precompile=True)
        assert r.ok, r.describe()[-3000:]
        res = r.result
        rnd, model = gw.call(lambda: (gw.svc.agg.state.round, gw.svc.agg.state.model.copy()))
    finally:
        gw.stop()
    assert res["sent"] == ROUNDS and res["version"] == rnd == ROUNDS
    assert res["crc"] == binascii.crc32(model.astype("<f4").tobytes())
    ds = datasets.read_datafile(data)
    X = np.asarray(ds.X, dtype=np.float64)
    assert res["rows"] == X.shape[0]
    want = datasets.predict_np(X, model, "softmax")
    W = model.astype(np.float64).reshape(3, -1)
    Z = X @ W.T
    top2 = np.sort(Z, axis=1)[:, -2:]
    # float32 dot product of 13 terms: error below (d + 2) u sum |w x| (Higham, eq. 3.5)
    bound = (X.shape[1] + 2) * 2.0 ** -24 * (np.abs(X) @ np.abs(W).T).max(axis=1) * 2
    clear = (top2[:, 1] - top2[:, 0]) > (bound if interp.float_bits == 32 else 1e-9)
    got = np.array(res["pred"])
    assert clear.mean() > 0.9
    assert (got[clear] == want[clear]).all()
    for i in np.flatnonzero(~clear):                   # near-ties: one of the top two
        assert Z[i, got[i]] >= top2[i, 0] - bound[i]
    for i, probs in enumerate(res["probs"]):
        e = np.exp(Z[i] - Z[i].max())
        assert probs == pytest.approx(list(e / e.sum()), rel=1e-4, abs=1e-6)
