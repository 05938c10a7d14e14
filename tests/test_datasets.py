"""CATD files, dataset loaders, the RCV1-like generator, partitions and full-data references.

Why: node files are the only way data reaches an edge, so round trips and corruption
handling must be exact; the references (f*, L, loss/gradient) are what every
optimality-gap plot and simulator run is measured against.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import dump_svmlight_file
from sklearn.linear_model import LogisticRegression

from aggregator.lab import datasets as ds
from edge import dataheader, datatools
from edge.crc32 import crc32_py
from edge.datafile import DataFile, DataFileError


def _problem(n=40, d=12, classes=2, density=0.3, seed=0):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, d)) * (rng.random((n, d)) < density)).astype(np.float32)
    X[np.arange(n), rng.integers(0, d, n)] = 1.0
    y = rng.integers(0, classes, n)
    return X, y


# ---------------------------------------------------------------------------------------
# format


@pytest.mark.parametrize("layout", ["dense", "csr"])
@pytest.mark.parametrize("classes", [2, 7])
def test_round_trip(tmp_path, layout, classes):
    X, y = _problem(classes=classes)
    src = sp.csr_matrix(X) if layout == "csr" else X
    p = ds.write_datafile(tmp_path / "a.catd", src, y, classes=classes, layout=layout)
    R = ds.read_datafile(p)
    assert R.classes == classes
    got = R.X.toarray() if sp.issparse(R.X) else R.X
    assert sp.issparse(R.X) == (layout == "csr")
    np.testing.assert_array_equal(got, X)
    np.testing.assert_array_equal(R.y, y)
    with DataFile(str(p)) as df:
        assert (df.n, df.d, df.classes, df.layout) == (40, 12, classes, layout)
        nnz = np.count_nonzero(X, axis=1)
        assert df.max_nnz == (int(nnz.max()) if layout == "csr" else 12)
        assert df.total_nnz == (int(nnz.sum()) if layout == "csr" else 40 * 12)
        datatools.validate(df)
    size = p.stat().st_size
    assert size == (48 + 40 * (4 + 48) if layout == "dense" else 48 + 8 * 40 + 8 * int(nnz.sum()))


def test_header_bytes_are_as_documented(tmp_path):
    X, y = _problem(n=3, d=5)
    p = ds.write_datafile(tmp_path / "h.catd", X, y, layout="dense")
    raw = p.read_bytes()
    assert raw[:4] == b"CATD"
    ver, hsize, layout, lt, vt, _r, n, d, c, mx, tot, dcrc, _r2, hcrc = struct.unpack("<HHBBBBIIIIQIII", raw[4:48])
    assert (ver, hsize, layout, lt, vt, n, d, c, mx, tot) == (1, 48, 0, 1, 1, 3, 5, 2, 5, 15)
    assert dcrc == zlib.crc32(raw[48:]) and hcrc == zlib.crc32(raw[:44])
    # first dense row: u32 label then d float32
    assert struct.unpack_from("<I5f", raw, 48) == (y[0], *[float(v) for v in X[0]])


def test_csr_row_layout(tmp_path):
    X = sp.csr_matrix(np.array([[0, 2.5, 0, 0, -1.0], [0, 0, 0, 0, 0], [3.0, 0, 0, 0, 0]], dtype=np.float32))
    p = ds.write_datafile(tmp_path / "c.catd", X, [1, 0, 1], layout="csr")
    raw = p.read_bytes()
    assert struct.unpack_from("<II2I2f", raw, 48) == (1, 2, 1, 4, 2.5, -1.0)
    assert struct.unpack_from("<II", raw, 48 + 24) == (0, 0)  # empty row
    assert struct.unpack_from("<IIIf", raw, 48 + 32) == (1, 1, 0, 3.0)
    with DataFile(str(p)) as df:
        assert df.max_nnz == 2 and len(df.values) == 2 and len(df.index) == 2
        assert [lab for lab in df.rows()] == [1, 0, 1]


def test_auto_layout(tmp_path):
    X, y = _problem(density=0.05, d=40)
    assert DataFile(str(ds.write_datafile(tmp_path / "s.catd", X, y))).layout == "csr"
    X2 = np.ones((5, 4), np.float32)
    assert DataFile(str(ds.write_datafile(tmp_path / "d.catd", X2, [0, 1, 0, 1, 1]))).layout == "dense"


def test_crc_fallback_matches_zlib():
    rng = np.random.default_rng(0)
    for k in (0, 1, 44, 1000):
        b = rng.integers(0, 256, k, dtype=np.uint8).tobytes()
        assert crc32_py(b) == zlib.crc32(b)
        assert crc32_py(b[k // 2:], crc32_py(b[:k // 2])) == zlib.crc32(b)


@pytest.fixture
def good(tmp_path) -> Path:
    X, y = _problem(n=20, d=30, density=0.1)
    return ds.write_datafile(tmp_path / "g.catd", sp.csr_matrix(X), y, layout="csr")


def _mutate(p: Path, fn) -> Path:
    raw = bytearray(p.read_bytes())
    raw = fn(raw)
    out = p.with_name("bad.catd")
    out.write_bytes(bytes(raw))
    return out


@pytest.mark.parametrize("mutation,message", [
    (lambda b: b[:-1], "truncated: header implies"),
    (lambda b: b[:100], "truncated"),
    (lambda b: b[:20], "not a CATD file: 20 bytes"),
    (lambda b: b + b"\0\0", "2 trailing bytes"),
    (lambda b: b"XXXX" + b[4:], "not a CATD file \\(magic"),
    (lambda b: b[:12] + bytes([b[12] ^ 1]) + b[13:], "corrupt header"),
    (lambda b: bytearray(), "not a CATD file: 0 bytes"),
])
def test_corrupt_files_fail_at_open(good, mutation, message):
    bad = _mutate(good, mutation)
    with pytest.raises(DataFileError, match=message):
        DataFile(str(bad))
    with pytest.raises(DataFileError, match=message):
        ds.read_datafile(bad)


def test_wrong_version_and_types(good):
    def reheader(b, **kv):
        f = list(struct.unpack(dataheader.HEADER_FMT, bytes(b[:48])))
        names = ["magic", "version", "hsize", "layout", "ltype", "vtype", "r", "n", "d", "c", "mx", "tot", "dcrc", "r2", "hcrc"]
        for k, v in kv.items():
            f[names.index(k)] = v
        h = struct.pack(dataheader.HEADER_FMT, *f)[:44]
        return bytearray(h + struct.pack("<I", zlib.crc32(h))) + b[48:]

    for kv, msg in [({"version": 2}, "unsupported CATD version 2"), ({"layout": 3}, "unknown layout"),
                    ({"ltype": 2}, "label type"), ({"vtype": 2}, "value type"), ({"c": 1}, "classes must be >= 2"),
                    ({"mx": 31}, "max nnz 31 > d 30"), ({"mx": 1}, "total nnz")]:
        with pytest.raises(DataFileError, match=msg):
            DataFile(str(_mutate(good, lambda b: reheader(b, **kv))))


def test_corrupt_data_caught_by_crc_and_rows(good):
    # flip a value byte: size and header fine, validate() finds it by CRC
    bad = _mutate(good, lambda b: b[:-2] + bytes([b[-2] ^ 0x40]) + b[-1:])
    df = DataFile(str(bad))
    with pytest.raises(DataFileError, match="data CRC-32 mismatch"):
        datatools.validate(df)
    with pytest.raises(DataFileError, match="CRC"):
        ds.read_datafile(bad)
    # a label beyond classes is caught while streaming
    bad2 = _mutate(good, lambda b: b[:48] + struct.pack("<I", 9) + b[52:])
    with DataFile(str(bad2)) as df2, pytest.raises(DataFileError, match="label 9 >= classes 2"):
        df2.read_row()
    # nnz beyond the header's max
    bad3 = _mutate(good, lambda b: b[:52] + struct.pack("<I", 99) + b[56:])
    with DataFile(str(bad3)) as df3, pytest.raises(DataFileError, match="nnz 99 > header max"):
        df3.read_row()


def test_missing_file_and_writer_errors(tmp_path):
    with pytest.raises(DataFileError, match="cannot open"):
        DataFile(str(tmp_path / "nope.catd"))
    X, y = _problem()
    with pytest.raises(ValueError, match="out of range for classes=2"):
        ds.write_datafile(tmp_path / "x.catd", X, np.arange(40) % 3, classes=2)
    with pytest.raises(ValueError, match="labels must be >= 0"):
        ds.write_datafile(tmp_path / "x.catd", X, -np.ones(40))
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        ds.write_datafile(tmp_path / "x.catd", X, y)
    with pytest.raises(ValueError, match="layout must be"):
        ds.write_datafile(tmp_path / "x.catd", np.ones((2, 2)), [0, 1], layout="coo")
    with pytest.raises(ValueError, match="no rows"):
        ds.write_datafile(tmp_path / "x.catd", np.ones((0, 2)), [])


# ---------------------------------------------------------------------------------------
# loaders and generator


@pytest.mark.parametrize("name,shape,classes", [
    ("digits", (1797, 64), 10), ("digits-binary", (1797, 64), 2), ("breast_cancer", (569, 30), 2),
    ("breast-cancer", (569, 30), 2), ("iris", (150, 4), 3), ("wine", (178, 13), 3),
])
def test_load_builtin(name, shape, classes):
    D = ds.load_builtin(name)
    assert D.X.shape == shape and D.classes == classes and D.X.dtype == np.float32
    assert set(np.unique(D.y)) == set(range(classes))
    np.testing.assert_allclose(np.linalg.norm(D.X, axis=1), 1.0, rtol=1e-5)
    assert ds.smoothness_np(D.X, 0.0, "logistic") == pytest.approx(0.25, rel=1e-5)
    if name == "digits-binary":
        from sklearn.datasets import load_digits
        assert np.array_equal(D.y, (load_digits().target >= 5).astype(int))
    with pytest.raises(ValueError, match="unknown builtin dataset"):
        ds.load_builtin("mnist")


def test_load_libsvm(tmp_path):
    X, y = _problem(n=25, d=9)
    path = tmp_path / "toy.svm"
    dump_svmlight_file(sp.csr_matrix(X), 2 * y - 1, str(path), zero_based=True)  # labels -1/+1
    D = ds.load_libsvm(path, n_features=9)
    assert D.classes == 2 and D.X.shape == (25, 9) and sp.issparse(D.X)
    np.testing.assert_array_equal(D.y, y)
    np.testing.assert_allclose(D.X.toarray(), X, rtol=1e-6)
    Dn = ds.load_libsvm(path, n_features=9, normalize=True)
    np.testing.assert_allclose(np.sqrt(np.asarray(Dn.X.multiply(Dn.X).sum(1))).ravel(), 1.0, rtol=1e-5)
    with pytest.raises(FileNotFoundError):
        ds.load_libsvm(tmp_path / "missing.svm")


def test_synthetic_rcv1_like_statistics():
    D = ds.synthetic_rcv1_like(20000, seed=3)
    X = D.X
    assert X.shape == (20000, 47236) and sp.issparse(X) and X.dtype == np.float32 and D.classes == 2
    assert ds.density(X) == pytest.approx(0.0016, rel=0.05)
    assert X.nnz / 20000 == pytest.approx(76, rel=0.03)
    X.check_format(full_check=True)
    assert all(np.all(np.diff(X.indices[X.indptr[i]:X.indptr[i + 1]]) > 0) for i in range(0, 20000, 997))
    np.testing.assert_allclose(np.sqrt(np.asarray(X.multiply(X).sum(1))).ravel(), 1.0, rtol=1e-5)
    assert np.all(X.data > 0)
    # power law: document frequency of features sorted by rank falls like a Zipf law
    df = np.sort(np.bincount(X.indices, minlength=X.shape[1]))[::-1]
    assert df[9] > 5 * df[999] > 0 and df[0] > 0.5 * 20000
    assert 0.45 < D.y.mean() < 0.55
    # learnable but noisy: held-out accuracy far above chance, below the 5 % label-noise cap
    R = ds.solve_reference(X[:12000], D.y[:12000], 1e-5, "logistic", tol=1e-6, max_iter=300)
    assert 0.7 < ds.accuracy_np(X[12000:], D.y[12000:], R.w, "logistic") < 0.97
    # deterministic for a seed
    E = ds.synthetic_rcv1_like(500, d=3000, nnz_per_row=20, seed=1)
    F = ds.synthetic_rcv1_like(500, d=3000, nnz_per_row=20, seed=1)
    assert (E.X != F.X).nnz == 0 and np.array_equal(E.y, F.y)


@pytest.mark.slow
def test_synthetic_full_rcv1_size():
    """The paper's full size in one call (no wall-clock bound here: on 2 busy cores it takes
    minutes, not the ~40 s of an idle machine)."""
    D = ds.synthetic_rcv1_like(seed=0)
    assert D.X.shape == (697_641, 47_236)
    assert D.X.nnz / D.X.shape[0] == pytest.approx(76, rel=0.03)


def test_generator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="nnz_per_row"):
        ds.synthetic_rcv1_like(10, d=5, nnz_per_row=6)
    with pytest.raises(ValueError, match="label_noise"):
        ds.synthetic_rcv1_like(10, d=50, nnz_per_row=5, label_noise=0.7)


# ---------------------------------------------------------------------------------------
# partitions


def test_partition_even():
    X, y = _problem(n=103, classes=3)
    parts = ds.partition(sp.csr_matrix(X), y, 4, mode="even", seed=1)
    sizes = [p[0].shape[0] for p in parts]
    assert sum(sizes) == 103 and max(sizes) - min(sizes) <= 1
    rows = np.vstack([p[0].toarray() for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    # every original row appears exactly once
    key = lambda A, b: sorted(map(tuple, np.column_stack([A, b]).tolist()))
    assert key(rows, labels) == key(X, y)


def test_partition_skewed_is_label_skewed_and_reproducible():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 5)).astype(np.float32)
    y = rng.integers(0, 10, 3000)
    sk = ds.partition(X, y, 8, mode="skewed", alpha=0.1, seed=2)
    ev = ds.partition(X, y, 8, mode="even", seed=2)
    glob = np.bincount(y, minlength=10) / 3000

    def tv(parts):  # mean total-variation distance of node label mix from the global one
        return np.mean([0.5 * np.abs(np.bincount(p[1], minlength=10) / len(p[1]) - glob).sum() for p in parts])

    assert tv(sk) > 0.4 > 0.1 > tv(ev)
    assert sum(len(p[1]) for p in sk) == 3000 and min(len(p[1]) for p in sk) >= 1
    again = ds.partition(X, y, 8, mode="skewed", alpha=0.1, seed=2)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(sk, again))
    with pytest.raises(ValueError, match="mode must be"):
        ds.partition(X, y, 2, mode="iid")
    with pytest.raises(ValueError, match="cannot give 4000 nodes"):
        ds.partition(X, y, 4000)


def test_write_partition(tmp_path):
    D = ds.load_builtin("digits")
    parts = ds.partition(D.X, D.y, 3, mode="skewed", alpha=1.0, seed=0)
    paths = ds.write_partition(tmp_path / "job", parts, D.classes, meta={"dataset": "digits"})
    assert [p.name for p in paths] == ["node-0.catd", "node-1.catd", "node-2.catd"]
    man = json.loads((tmp_path / "job" / "partition.json").read_text())
    assert man["d"] == 64 and man["classes"] == 10 and man["meta"] == {"dataset": "digits"}
    for k, (Xk, yk) in enumerate(parts):
        R = ds.read_datafile(paths[k])
        assert R.classes == 10 and R.X.shape == Xk.shape
        np.testing.assert_array_equal(R.y, yk)
        assert man["nodes"][k]["rows"] == len(yk)
        assert man["nodes"][k]["class_counts"] == np.bincount(yk, minlength=10).tolist()
        assert DataFile(str(paths[k])).layout == man["layout"]


# ---------------------------------------------------------------------------------------
# references


@pytest.mark.parametrize("kind", ["logistic", "softmax"])
@pytest.mark.parametrize("sparse", [False, True])
def test_loss_grad_np_finite_differences(kind, sparse):
    X, y = _problem(n=30, d=6, classes=2 if kind == "logistic" else 4, seed=4)
    Xm = sp.csr_matrix(X) if sparse else X
    m = 6 if kind == "logistic" else 24
    w = np.random.default_rng(0).standard_normal(m)
    f, g = ds.loss_grad_np(Xm, y, w, 0.3, kind)
    h = 1e-6
    fd = np.array([(ds.loss_grad_np(Xm, y, w + h * e, 0.3, kind)[0] - ds.loss_grad_np(Xm, y, w - h * e, 0.3, kind)[0]) / (2 * h)
                   for e in np.eye(m)])
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)
    assert ds.loss_grad_np(Xm, y, np.zeros(m), 0.3, kind)[0] == pytest.approx(np.log(2 if kind == "logistic" else 4))


def test_solve_reference_matches_sklearn():
    """sklearn's LogisticRegression(C) minimises sum loss_i + ||w||^2/(2C), i.e. N f(w) with lam = 1/(C N)."""
    D = ds.load_builtin("breast_cancer")
    lam = 1e-3
    R = ds.solve_reference(D.X, D.y, lam, "logistic")
    assert R.converged and R.grad_norm < 1e-7 and R.gap_bound < 1e-10
    C = 1.0 / (lam * D.X.shape[0])
    sk = LogisticRegression(C=C, fit_intercept=False, tol=1e-12, max_iter=10000).fit(D.X.astype(np.float64), D.y)
    f_sk = ds.loss_grad_np(D.X, D.y, sk.coef_.ravel(), lam, "logistic")[0]
    assert R.f <= f_sk + 1e-12
    assert R.f == pytest.approx(f_sk, abs=1e-9)
    np.testing.assert_allclose(R.w, sk.coef_.ravel(), atol=1e-4)


def test_solve_reference_softmax_sparse():
    D = ds.load_builtin("digits")
    X = sp.csr_matrix(D.X[:500])
    R = ds.solve_reference(X, D.y[:500], 1e-2, "softmax", classes=10)
    assert R.w.shape == (640,) and R.converged and R.gap_bound < 1e-10
    rng = np.random.default_rng(0)
    for _ in range(5):  # nearby points are worse
        assert ds.loss_grad_np(X, D.y[:500], R.w + 1e-3 * rng.standard_normal(640), 1e-2, "softmax")[0] > R.f
    C = 1.0 / (1e-2 * 500)
    sk = LogisticRegression(C=C, fit_intercept=False, tol=1e-12, max_iter=10000).fit(X, D.y[:500])
    f_sk = ds.loss_grad_np(X, D.y[:500], sk.coef_.ravel(), 1e-2, "softmax")[0]
    assert R.f <= f_sk + 1e-12 and f_sk == pytest.approx(R.f, abs=1e-6)


def test_smoothness_np_methods():
    X, _ = _problem(n=50, d=8)
    for kind, k in (("logistic", 4), ("softmax", 2)):
        tr = ds.smoothness_np(X, 0.1, kind)
        sv = ds.smoothness_np(X, 0.1, kind, method="spectral")
        assert tr == pytest.approx(np.sum(X.astype(float) ** 2) / (k * 50) + 0.1)
        assert sv == pytest.approx(np.linalg.eigvalsh(X.T.astype(float) @ X)[-1] / (k * 50) + 0.1)
        assert ds.smoothness_np(sp.csr_matrix(X), 0.1, kind) == pytest.approx(tr)
        assert sv <= tr
    with pytest.raises(ValueError, match="method must be"):
        ds.smoothness_np(X, 0.1, "logistic", method="power")
