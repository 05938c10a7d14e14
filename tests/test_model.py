"""The trained model out of a gateway: `model export` (npy, csv, json) and `model evaluate`.

A real job (wine: softmax, 3 classes, 13 features) runs to its end with a `serve` process
and two edge processes over CoAP; its exported weights must be the checkpoint's bit for bit
in every format, and `evaluate` must agree with the edge's own learner (edge.learner: another
implementation of the loss and of the prediction rule) on the edges' data files.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import e2e
from aggregator.gateway.config import load_job
from aggregator.gateway.live import STATUS_FILE
from aggregator.gateway.state import Store
from aggregator.lab import datasets
from aggregator.ops import jobs
from aggregator.ops.demo import free_udp_port
from edge import evaluate, learner
from edge.datafile import DataFile

CLI = [sys.executable, "-m", "aggregator.cli"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=120)


def one_line_error(*args: str) -> str:
    r = cli(*args)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, (r.stdout, r.stderr)
    return r.stderr.removeprefix("cat-aggregator: ").strip()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> jobs.Layout:
    root = tmp_path_factory.mktemp("wine")
    layout = jobs.prepare(root, "wine", nodes=2, rounds=8, scheme="sq", k_cap=8, deadline_s=60.0)
    port = free_udp_port()
    gw = e2e.serve(layout, "--coap", f"127.0.0.1:{port}", "--linger", "1")
    procs = [gw]
    try:
        e2e.wait_for(lambda: (layout.root / "state" / STATUS_FILE).exists(), 30, "gateway start", procs)
        procs += [e2e.edge(layout, k, "coap", "127.0.0.1", port) for k in range(2)]
        assert gw.wait(120) == 0
    finally:
        e2e.stop(procs)
    return layout


def checkpoint_model(layout: jobs.Layout) -> np.ndarray:
    st = Store(layout.root / "state").load()
    assert st is not None and st.round == 8
    return st.model


def test_export_writes_the_checkpoint_exactly(trained, tmp_path):
    state = str(trained.root / "state")
    w = checkpoint_model(trained)
    assert np.any(w != 0)
    for fmt in ("npy", "csv", "json"):
        out = tmp_path / f"model.{fmt}"
        r = cli("model", "export", "--state", state, "--format", fmt, "--out", str(out))
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"job 1, round 8: softmax model, 3 x 13 float32 weights -> {out} ({fmt})"
    npy = np.load(tmp_path / "model.npy")
    assert npy.dtype == np.float32 and npy.shape == (3, 13)
    assert npy.tobytes() == w.tobytes()
    lines = (tmp_path / "model.csv").read_text().splitlines()
    assert lines[0] == "class," + ",".join(f"w{j}" for j in range(13))
    rows = [l.split(",") for l in lines[1:]]
    assert [r[0] for r in rows] == ["0", "1", "2"]
    csv = np.array([[float(v) for v in r[1:]] for r in rows], dtype=np.float32)
    assert csv.tobytes() == w.tobytes()
    doc = json.loads((tmp_path / "model.json").read_text())
    assert {k: doc[k] for k in ("format", "job", "round", "kind", "features", "classes", "shape")} == {
        "format": "cat-iot-model", "job": 1, "round": 8, "kind": "softmax", "features": 13, "classes": 3,
        "shape": [3, 13]}
    assert np.array(doc["weights"], dtype=np.float32).tobytes() == w.tobytes()
    # the extension says the format when --format is left out
    r = cli("model", "export", "--state", state, "--out", str(tmp_path / "again.npy"))
    assert r.returncode == 0 and np.load(tmp_path / "again.npy").tobytes() == w.tobytes()


def test_export_from_a_job_file_when_there_is_no_status_file(trained, tmp_path):
    """An older state directory has only the checkpoint: --job says what the weights are."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "checkpoint.bin").write_bytes((trained.root / "state" / "checkpoint.bin").read_bytes())
    msg = one_line_error("model", "export", "--state", str(state), "--out", str(tmp_path / "m.npy"))
    assert msg == f"{state}: no status file tells what the model is: give --job JOB.toml"
    r = cli("model", "export", "--job", str(trained.job_path), "--state", str(state), "--out", str(tmp_path / "m.npy"))
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "m.npy").tobytes() == checkpoint_model(trained).tobytes()


def test_evaluate_agrees_with_the_edge_learner(trained, tmp_path):
    w = checkpoint_model(trained)
    job = load_job(trained.job_path)
    data = trained.data_files[1]
    plot = tmp_path / "cm.png"
    r = cli("model", "evaluate", "--state", str(trained.root / "state"), "--data", str(data), "--plot", str(plot))
    assert r.returncode == 0, r.stderr
    loss = float(re.search(r"^loss (\S+)", r.stdout, re.M).group(1))
    objective = float(re.search(r"objective with lambda \S+: (\S+)\)", r.stdout).group(1))
    acc = float(re.search(r"accuracy (\S+)", r.stdout).group(1))
    df = DataFile(str(data))
    grad = learner.zeros(w.size)
    from array import array
    model = array("f", w.tobytes())
    want_loss = learner.loss_and_grad(model, df, 0.0, grad, "softmax")
    want_obj = learner.loss_and_grad(model, df, job.lam, grad, "softmax")
    assert loss == pytest.approx(want_loss, rel=1e-5) and objective == pytest.approx(want_obj, rel=1e-5)
    assert acc == pytest.approx(evaluate.accuracy(model, df, "softmax"), abs=5e-5)   # printed to 4 places
    rows = [l.split() for l in r.stdout.splitlines()[-5:-1]]
    assert rows[0] == ["0", "1", "2"]
    cm = np.array([[int(v) for v in row[1:]] for row in rows[1:]])
    assert cm.sum() == df.n and np.trace(cm) / df.n == pytest.approx(acc, abs=5e-5)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000


def test_evaluate_reads_csv_libsvm_and_builtin_rows_alike(trained, tmp_path):
    """The same rows as a CATD file, a CSV with a header, a LIBSVM file and by built-in name
    give the same figures."""
    from sklearn.datasets import dump_svmlight_file
    state = str(trained.root / "state")
    ds = datasets.load_builtin("wine")
    X = np.asarray(ds.X)
    csv = tmp_path / "wine.csv"
    with open(csv, "w") as fh:
        fh.write(",".join([f"f{j}" for j in range(X.shape[1])] + ["label"]) + "\n")
        for row, label in zip(X, ds.y):
            fh.write(",".join(repr(float(v)) for v in row) + f",{label}\n")
    svm = tmp_path / "wine.svm"
    dump_svmlight_file(X, ds.y, str(svm))
    catd = datasets.write_datafile(tmp_path / "wine.catd", X, ds.y, 3)
    outs = []
    for data in ("wine", str(csv), str(svm), str(catd)):
        r = cli("model", "evaluate", "--state", state, "--data", data, "--plot", str(tmp_path / "p.svg"))
        assert r.returncode == 0, (data, r.stderr)
        outs.append(r.stdout.split("\n", 1)[1])        # all but the line naming the file
    assert outs[1:] == outs[:1] * 3


def test_model_errors_are_one_line(trained, tmp_path):
    state = str(trained.root / "state")
    assert one_line_error("model", "export", "--state", state, "--out", str(tmp_path / "m.txt")).startswith(
        "--format: give one of npy, csv, json")
    assert one_line_error("model", "evaluate", "--state", state, "--data", "no-such-set") == \
        "--data: no-such-set: no such file or built-in set"
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(["0.5"] * 14) + ",1\n")
    assert one_line_error("model", "evaluate", "--state", state, "--data", str(wide)) == \
        "--data: rows have 14 features, the model 13"
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(["0.5"] * 13) + ",3\n")
    assert one_line_error("model", "evaluate", "--state", state, "--data", str(bad)) == \
        "--data: labels must be 0..2, found 3..3"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert one_line_error("model", "export", "--state", str(empty), "--job", str(trained.job_path),
                          "--out", str(tmp_path / "m.npy")) == f"{empty}: no checkpoint yet: the gateway has not closed a round"
