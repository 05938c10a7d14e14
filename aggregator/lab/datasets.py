"""Datasets for CAT experiments: CATD file writer/reader, loaders, generator, partitions, references.

CPython only (numpy, scipy.sparse, scikit-learn): this runs on the gateway or a laptop to
prepare the node files that edges stream with `edge.datafile.DataFile`, and gives the
simulator and the tests full-data references (vectorised loss/gradient, f*, L) that
must agree with `edge.learner` to float32 tolerance. Format: docs/data-format.md.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import scipy.optimize
import scipy.sparse as sp
from scipy.special import expit, logsumexp

from edge import dataheader, datatools
from edge import datafile as edf

#: files below this density are written as CSR when layout="auto" (the CSR row costs
#: 8 bytes per entry against 4 per feature for dense, so CSR wins below 0.5; 0.25
#: leaves room for the per-row nnz word and keeps dense for nearly dense data).
CSR_DENSITY_THRESHOLD = 0.25


class Dataset(NamedTuple):
    """Features (float32, dense ndarray or CSR), labels (int64 in [0, classes)), classes, name."""

    X: "np.ndarray | sp.csr_matrix"
    y: np.ndarray
    classes: int
    name: str


class Reference(NamedTuple):
    """Result of `solve_reference`: minimiser, f*, final gradient norm and a bound on f - f*."""

    w: np.ndarray
    f: float
    grad_norm: float
    gap_bound: float
    iterations: int
    converged: bool


# ----------------------------------------------------------------------------------------
# helpers


def density(X) -> float:
    """Fraction of stored nonzeros (counts explicit values in a sparse matrix)."""
    n, d = X.shape
    if n * d == 0:
        return 0.0
    nnz = X.nnz if sp.issparse(X) else int(np.count_nonzero(X))
    return nnz / float(n * d)


def _labels(y, n: int, classes: int | None) -> tuple[np.ndarray, int]:
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"y must be a vector of {n} labels, got shape {y.shape}")
    if n and not np.all(np.equal(np.mod(y, 1), 0)):
        raise ValueError("labels must be integer class indices")
    y = y.astype(np.int64)
    if n and y.min() < 0:
        raise ValueError(f"labels must be >= 0, found {int(y.min())}")
    top = int(y.max()) + 1 if n else 0
    if classes is None:
        classes = max(2, top)
    if classes < 2:
        raise ValueError(f"classes must be >= 2, got {classes}")
    if top > classes:
        raise ValueError(f"label {top - 1} out of range for classes={classes}")
    return y, int(classes)


def _as_float(X, dtype=np.float32):
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=dtype)  # may share arrays with the caller's matrix
        if not X.has_canonical_format:
            X = X.copy()
            X.sum_duplicates()  # also sorts indices
        return X
    X = np.asarray(X, dtype=dtype)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D, got shape {X.shape}")
    return X


def _check_finite(X) -> None:
    data = X.data if sp.issparse(X) else X
    if not np.all(np.isfinite(data)):
        raise ValueError("X has non-finite values (NaN or inf)")


# ----------------------------------------------------------------------------------------
# CATD writer / reader


def write_datafile(path, X, y, classes: int | None = None, layout: str = "auto",
                   chunk_rows: int = 65536) -> Path:
    """Write X (n x d, dense or scipy.sparse) and labels y to a CATD file.

    layout: "dense", "csr" or "auto" (CSR when density < CSR_DENSITY_THRESHOLD).
    Values are stored as float32; CSR drops explicit zeros and sorts indices.
    Written in row chunks so memory stays bounded for RCV1-sized inputs.
    """
    n, d = X.shape
    if n < 1:
        raise ValueError("X has no rows")
    if d < 1:
        raise ValueError("X has no features")
    if n >= 2**32 or d >= 2**32:
        raise ValueError("n and d must fit in uint32")
    y, classes = _labels(y, n, classes)
    if layout == "auto":
        layout = "csr" if density(X) < CSR_DENSITY_THRESHOLD else "dense"
    if layout not in ("dense", "csr"):
        raise ValueError(f"layout must be 'dense', 'csr' or 'auto', got {layout!r}")
    X = _as_float(sp.csr_matrix(X) if layout == "csr" else (X.toarray() if sp.issparse(X) else X))
    _check_finite(X)
    path = Path(path)
    crc = 0
    with open(path, "wb") as f:
        f.write(bytes(dataheader.HEADER_SIZE))  # placeholder, rewritten with the CRC below
        if layout == "dense":
            rec = np.dtype([("y", "<u4"), ("x", "<f4", (d,))])
            for r0 in range(0, n, chunk_rows):
                r1 = min(n, r0 + chunk_rows)
                buf = np.empty(r1 - r0, dtype=rec)
                buf["y"] = y[r0:r1]
                buf["x"] = X[r0:r1]
                b = buf.tobytes()
                crc = zlib.crc32(b, crc)
                f.write(b)
            code, max_nnz, total = dataheader.LAYOUT_DENSE, d, n * d
        else:
            if X.nnz and not np.all(X.data):  # explicit zeros: drop them from a copy
                X = X.copy()
                X.eliminate_zeros()
            indptr = X.indptr.astype(np.int64)
            row_nnz = np.diff(indptr)
            max_nnz = int(row_nnz.max())
            total = int(indptr[-1])
            vals_u32 = X.data.astype("<f4").view("<u4")
            for r0 in range(0, n, chunk_rows):
                r1 = min(n, r0 + chunk_rows)
                m = r1 - r0
                k = row_nnz[r0:r1]
                lo = indptr[r0]
                cnt = int(indptr[r1] - lo)
                local = indptr[r0:r1] - lo
                starts = 2 * np.arange(m, dtype=np.int64) + 2 * local  # in 4-byte words
                words = np.empty(2 * m + 2 * cnt, dtype="<u4")
                words[starts] = y[r0:r1]
                words[starts + 1] = k
                if cnt:
                    row_of = np.repeat(np.arange(m, dtype=np.int64), k)
                    pos = np.arange(cnt, dtype=np.int64) - local[row_of]
                    ipos = starts[row_of] + 2 + pos
                    words[ipos] = X.indices[lo:lo + cnt]
                    words[ipos + k[row_of]] = vals_u32[lo:lo + cnt]
                b = words.tobytes()
                crc = zlib.crc32(b, crc)
                f.write(b)
            code = dataheader.LAYOUT_CSR
        f.seek(0)
        f.write(datatools.pack_header(code, n, d, classes, max_nnz, total, crc))
    return path


def read_datafile(path, verify_crc: bool = True) -> Dataset:
    """Read a whole CATD file into memory (gateway side; boards stream with DataFile)."""
    path = Path(path)
    raw = path.read_bytes()
    layout, n, d, classes, max_nnz, total, dcrc, hsize = dataheader.parse_header(raw[:dataheader.HEADER_SIZE], str(path))
    exp = dataheader.expected_size(layout, n, d, total, hsize)
    if len(raw) < exp:
        raise edf.DataFileError(f"{path}: truncated: header implies {exp} bytes, file has {len(raw)}")
    if len(raw) > exp:
        raise edf.DataFileError(f"{path}: {len(raw) - exp} trailing bytes after the {exp} the header implies")
    body = memoryview(raw)[hsize:]
    if verify_crc and zlib.crc32(body) != dcrc:
        raise edf.DataFileError(f"{path}: data CRC-32 mismatch (file corrupt)")
    if layout == dataheader.LAYOUT_DENSE:
        rec = np.dtype([("y", "<u4"), ("x", "<f4", (d,))])
        arr = np.frombuffer(body, dtype=rec, count=n)
        X = np.array(arr["x"], dtype=np.float32)
        y = arr["y"].astype(np.int64)
    else:
        words = np.frombuffer(body, dtype="<u4")
        starts = np.empty(n, dtype=np.int64)
        row_nnz = np.empty(n, dtype=np.int64)
        p = 0
        nw = words.size
        for i in range(n):  # row lengths chain: one Python step per row, no copies
            if p + 2 > nw:
                raise edf.DataFileError(f"{path}: row {i} starts past the end of the data")
            k = int(words[p + 1])
            if k > max_nnz:
                raise edf.DataFileError(f"{path}: row {i} has nnz {k} > header max {max_nnz}")
            starts[i] = p
            row_nnz[i] = k
            p += 2 + 2 * k
        if p != nw:
            raise edf.DataFileError(f"{path}: rows hold {(p - 2 * n) // 2} entries, header says {total}")
        y = words[starts].astype(np.int64)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(row_nnz, out=indptr[1:])
        row_of = np.repeat(np.arange(n, dtype=np.int64), row_nnz)
        ipos = starts[row_of] + 2 + (np.arange(total, dtype=np.int64) - indptr[row_of])
        indices = words[ipos].astype(np.int32)
        data = np.array(words[ipos + row_nnz[row_of]].view("<f4"), dtype=np.float32)
        if total and int(indices.max()) >= d:
            raise edf.DataFileError(f"{path}: an index is >= d {d}")
        X = sp.csr_matrix((data, indices, indptr), shape=(n, d))
    if n and y.max() >= classes:
        raise edf.DataFileError(f"{path}: a label is >= classes {classes}")
    return Dataset(X, y, classes, path.stem)


# ----------------------------------------------------------------------------------------
# loaders


def _relabel(y_raw: np.ndarray) -> tuple[np.ndarray, int]:
    values, y = np.unique(y_raw, return_inverse=True)
    return y.astype(np.int64), max(2, len(values))


def l2_normalize_rows(X):
    """Scale every nonzero row to unit L2 norm (zero rows stay zero)."""
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float64)
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        return sp.csr_matrix(sp.diags(scale) @ X)
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1)
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return X * scale[:, None]


def load_libsvm(path, n_features: int | None = None, normalize: bool = False) -> Dataset:
    """Load a LIBSVM/SVMlight file (e.g. rcv1_train.binary, url_combined) as CSR float32.

    Labels are mapped to 0..C-1 in sorted order of their raw values (so -1/+1 -> 0/1).
    normalize=True L2-normalises rows (LIBSVM's RCV1 files already are).
    """
    from sklearn.datasets import load_svmlight_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such LIBSVM file")
    X, y_raw = load_svmlight_file(str(path), n_features=n_features, dtype=np.float64)
    if normalize:
        X = l2_normalize_rows(X)
    y, classes = _relabel(y_raw)
    return Dataset(_as_float(X), y, classes, path.name)


#: the datasets `load_builtin` knows, as users spell them ('-' and '_' are interchangeable).
BUILTIN = ("digits", "digits-binary", "breast_cancer", "iris", "wine")


def builtin_key(name: str) -> str | None:
    """The BUILTIN entry `name` spells (any case, '-' or '_'), or None."""
    key = str(name).replace("-", "_").lower()
    for b in BUILTIN:
        if b.replace("-", "_") == key:
            return b
    return None


def load_csv(path) -> Dataset:
    """Load a numeric CSV file: one row per example, the label in the last column, an
    optional header line. Columns are standardised (z-score) and rows L2-normalised, as
    for the built-in sets, so sensors with different scales weigh alike; labels are
    mapped to 0..C-1 in sorted order of their raw values."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such CSV file")
    with path.open() as fh:
        first = fh.readline()
    try:
        [float(v) for v in first.split(",")]
        skip = 0
    except ValueError:
        skip = 1                                  # a header line
    try:
        raw = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: not a numeric CSV file ({exc})") from None
    if raw.shape[0] < 1 or raw.shape[1] < 2:
        raise ValueError(f"{path}: need at least one row of features and a label column")
    if not np.all(np.isfinite(raw)):
        raise ValueError(f"{path}: non-finite values (NaN or inf)")
    X = raw[:, :-1]
    sd = X.std(axis=0)
    X = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    y, classes = _relabel(raw[:, -1])
    return Dataset(l2_normalize_rows(X).astype(np.float32), y, classes, path.name)


def load(spec: str) -> Dataset:
    """A built-in set by name, else a file: CSV (`.csv`) or LIBSVM (anything else, rows
    L2-normalised); what `cat-aggregator init` and the demo partition."""
    path = Path(spec)
    if not path.exists():
        return load_builtin(spec)
    if path.suffix.lower() == ".csv":
        return load_csv(path)
    return load_libsvm(path, normalize=True)


def load_builtin(name: str) -> Dataset:
    """Datasets shipped inside scikit-learn (no download), all with L2-normalised rows.

    * "digits": 1,797 8x8 images, 64 features, 10 classes; pixels 0..16 divided by 16,
      then each row scaled to unit norm.
    * "digits-binary": the same rows, label 1 if the digit is >= 5 else 0.
    * "breast_cancer" (alias "breast-cancer"): 569 x 30, binary (sklearn's target:
      0 malignant, 1 benign); columns standardised (z-score), then rows unit norm.
    * "iris" (150 x 4, 3 classes) and "wine" (178 x 13, 3 classes): standardised, unit rows.

    Unit rows make the trace bound L = 1/4 + lam (logistic) or 1/2 + lam (softmax).
    """
    from sklearn import datasets as skd

    key = (builtin_key(name) or name).replace("-", "_")
    if key in ("digits", "digits_binary"):
        b = skd.load_digits()
        X = l2_normalize_rows(b.data / 16.0)
        y = b.target.astype(np.int64)
        if key == "digits_binary":
            return Dataset(X.astype(np.float32), (y >= 5).astype(np.int64), 2, "digits-binary")
        return Dataset(X.astype(np.float32), y, 10, "digits")
    loaders = {"breast_cancer": skd.load_breast_cancer, "iris": skd.load_iris, "wine": skd.load_wine}
    if key not in loaders:
        raise ValueError(f"unknown builtin dataset {name!r}; choose one of {', '.join(BUILTIN)}")
    b = loaders[key]()
    X = b.data.astype(np.float64)
    sd = X.std(axis=0)
    X = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    y, classes = _relabel(b.target)
    return Dataset(l2_normalize_rows(X).astype(np.float32), y, classes, key)


# ----------------------------------------------------------------------------------------
# RCV1-like generator

RCV1_N = 697_641   # rows (paper, section 2): LIBSVM rcv1.binary train 20,242 + test 677,399
RCV1_D = 47_236    # features (paper, section 2; Lewis et al., JMLR 5:361, 2004)
RCV1_NNZ = 76      # about 0.16 % density at d = 47,236


def _powerlaw_cdf(d: int, s: float) -> np.ndarray:
    # CDF at the rank edges 1..d+1 of a continuous power law x^-s on [1, d+1): the
    # sampler takes rank = floor(x), so p_r = F(r+1) - F(r) is exact for it.
    edges = np.arange(1, d + 2, dtype=np.float64)
    if abs(s - 1.0) < 1e-12:
        return np.log(edges) / math.log(d + 1.0)
    top = (d + 1.0) ** (1.0 - s) - 1.0
    return (edges ** (1.0 - s) - 1.0) / top


def _powerlaw_ranks(rng: np.random.Generator, size: int, d: int, s: float) -> np.ndarray:
    u = rng.random(size)
    if abs(s - 1.0) < 1e-12:
        x = np.exp(u * math.log(d + 1.0))
    else:
        x = (1.0 + u * ((d + 1.0) ** (1.0 - s) - 1.0)) ** (1.0 / (1.0 - s))
    r = x.astype(np.int64)  # floor, x >= 1
    np.clip(r, 1, d, out=r)
    return r - 1


def synthetic_rcv1_like(n: int = RCV1_N, d: int = RCV1_D, nnz_per_row: float = RCV1_NNZ,
                        seed: int = 0, zipf_s: float = 1.0, nnz_spread: float = 0.6,
                        support_frac: float = 0.02, positive_frac: float = 0.5,
                        label_noise: float = 0.05, block_rows: int = 65536) -> Dataset:
    """Sparse binary classification data with RCV1-like statistics (CSR float32, L2 rows).

    Model (every choice is a parameter; defaults give d = 47,236, ~76 nnz/row, 0.16 %):
    * Feature frequencies follow a power law (Zipf's law, exponent `zipf_s`, default 1
      as for word frequencies): rank r is drawn with probability F(r+1) - F(r) of the
      continuous law x^-s on [1, d+1); ranks map to feature ids by a random permutation.
    * Row i draws m_i features with replacement and keeps the distinct ones. m_i is set
      so that the expected number of distinct features equals k_i, where k_i is
      lognormal with mean `nnz_per_row` and log-sd `nnz_spread` (document lengths are
      right-skewed), so the mean nnz per row matches `nnz_per_row` (within ~1 %).
    * Values are "ltc" tf-idf as in RCV1-v2 (Lewis et al. 2004, section 7):
      (1 + ln tf) * ln(1/q_j) with tf = 1 + Poisson(0.7) and q_j the chance a row holds
      feature j, then every row is scaled to unit L2 norm.
    * Labels: a ground-truth w* with `support_frac` of the features nonzero (N(0,1)
      weights), drawn with probability proportional to how often rows hold them (so
      labels depend on common features, as topics do on common words); y = 1 for the top `positive_frac` of X w* (ties split at random),
      then each label is flipped with probability `label_noise`.
    Vectorised per block of rows; the full 697,641 x 47,236 takes seconds.
    """
    if n < 1 or d < 1:
        raise ValueError("n and d must be >= 1")
    if not (0 < nnz_per_row <= d):
        raise ValueError(f"nnz_per_row must be in (0, d], got {nnz_per_row}")
    if not (0.0 <= label_noise < 0.5):
        raise ValueError(f"label_noise must be in [0, 0.5), got {label_noise}")
    if not (0.0 < positive_frac < 1.0):
        raise ValueError("positive_frac must be in (0, 1)")
    rng = np.random.default_rng(seed)
    cdf = _powerlaw_cdf(d, zipf_s)
    p = np.diff(cdf)
    perm = rng.permutation(d).astype(np.int32)
    # expected distinct features after m draws: U(m) = sum_j 1 - (1 - p_j)^m (increasing)
    log1mp = np.log1p(-np.minimum(p, 1 - 1e-15))
    m_grid = np.unique(np.round(np.geomspace(1, 60.0 * d, 200)))
    u_grid = np.array([np.sum(-np.expm1(m * log1mp)) for m in m_grid])
    # target distinct counts k_i (lognormal, mean nnz_per_row), clipped to [1, 0.9 * U(max)]
    sig = float(nnz_spread)
    k = rng.lognormal(math.log(nnz_per_row) - 0.5 * sig * sig, sig, size=n)
    np.clip(k, 1.0, min(float(d), 0.9 * u_grid[-1]), out=k)
    m_real = np.interp(k, u_grid, m_grid)
    m = np.floor(m_real + rng.random(n)).astype(np.int64)  # stochastic rounding
    np.maximum(m, 1, out=m)
    # q_j, the chance a row holds feature j, for the idf: mean of 1 - (1-p_j)^m_i over
    # 32 quantiles of m (the idf is a modelling choice; this is accurate enough for it)
    mq = np.quantile(m, (np.arange(32) + 0.5) / 32.0)
    q_rank = np.mean(-np.expm1(np.outer(mq, log1mp)), axis=0)
    idf = np.empty(d)
    idf[perm] = -np.log(np.maximum(q_rank, 1e-12))  # indexed by feature id

    indptr = np.zeros(n + 1, dtype=np.int64)
    ind_blocks: list[np.ndarray] = []
    val_blocks: list[np.ndarray] = []
    for r0 in range(0, n, block_rows):
        r1 = min(n, r0 + block_rows)
        mb = m[r0:r1]
        ids = perm[_powerlaw_ranks(rng, int(mb.sum()), d, zipf_s)]
        key = np.repeat(np.arange(r1 - r0, dtype=np.int64) * d, mb) + ids
        key.sort()  # by row, then feature id (the CSR order)
        keep = np.empty(key.size, dtype=bool)
        keep[0] = True
        np.not_equal(key[1:], key[:-1], out=keep[1:])
        key = key[keep]  # distinct (row, feature) pairs
        rows = key // d
        ids = (key - rows * d).astype(np.int32)
        tf = 1.0 + rng.poisson(0.7, size=key.size)
        vals = (1.0 + np.log(tf)) * idf[ids]
        counts = np.bincount(rows, minlength=r1 - r0)
        sq = np.bincount(rows, weights=vals * vals, minlength=r1 - r0)
        vals /= np.sqrt(sq)[rows]
        ind_blocks.append(ids)
        val_blocks.append(vals.astype(np.float32))
        indptr[r0 + 1:r1 + 1] = indptr[r0] + np.cumsum(counts)
    X = sp.csr_matrix((np.concatenate(val_blocks), np.concatenate(ind_blocks), indptr), shape=(n, d))
    X.has_sorted_indices = True

    # support drawn without replacement with probability proportional to q_j (topic words
    # are frequent words): labels then depend on features most rows hold
    q_id = np.empty(d)
    q_id[perm] = q_rank
    support = rng.choice(d, size=max(1, int(round(support_frac * d))), replace=False, p=q_id / q_id.sum())
    w_true = np.zeros(d)
    w_true[support] = rng.standard_normal(support.size)
    z = X @ w_true
    t = np.quantile(z, 1.0 - positive_frac)
    y = (z > t) | ((z == t) & (rng.random(n) < 0.5))
    flip = rng.random(n) < label_noise
    y = np.where(flip, ~y, y).astype(np.int64)
    return Dataset(X, y, 2, f"rcv1-like-{n}x{d}")


# ----------------------------------------------------------------------------------------
# partitions


def partition(X, y, n_nodes: int, mode: str = "even", seed: int = 0, alpha: float = 0.5,
              min_size: int = 1, classes: int | None = None) -> list[tuple]:
    """Split (X, y) over n_nodes; returns [(X_k, y_k), ...] keeping row order inside a node.

    * "even": a random permutation cut into n_nodes near-equal parts (i.i.d. nodes; the
      paper's experiment 2 splits RCV1 evenly over 4 nodes).
    * "skewed": label skew by a Dirichlet draw per class: for each class c the shares
      of its rows over the nodes are Dirichlet(alpha, ..., alpha) (Hsu, Qi and Brown,
      "Measuring the effects of non-identical data distribution for federated visual
      classification", arXiv:1909.06335, 2019). Small alpha (0.1) gives nodes with
      few classes, large alpha (100) approaches "even". Redrawn until every node has at
      least min_size rows (up to 1000 tries).
    """
    X = sp.csr_matrix(X) if sp.issparse(X) else np.asarray(X)
    n = X.shape[0]
    y, classes = _labels(y, n, classes)
    if n_nodes < 1:
        raise ValueError(f"n_nodes must be >= 1, got {n_nodes}")
    if n_nodes * max(1, min_size) > n:
        raise ValueError(f"cannot give {n_nodes} nodes {max(1, min_size)} rows each from {n} rows")
    rng = np.random.default_rng(seed)
    if mode == "even":
        parts = [np.sort(p) for p in np.array_split(rng.permutation(n), n_nodes)]
    elif mode == "skewed":
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        for _ in range(1000):
            buckets: list[list[np.ndarray]] = [[] for _ in range(n_nodes)]
            for c in range(classes):
                idx = np.flatnonzero(y == c)
                if idx.size == 0:
                    continue
                rng.shuffle(idx)
                share = rng.dirichlet(np.full(n_nodes, alpha))
                cuts = (np.cumsum(share)[:-1] * idx.size).astype(np.int64)
                for k, piece in enumerate(np.split(idx, cuts)):
                    buckets[k].append(piece)
            parts = [np.sort(np.concatenate(b)) if b else np.empty(0, np.int64) for b in buckets]
            if min(p.size for p in parts) >= max(1, min_size):
                break
        else:
            raise ValueError(f"no Dirichlet(alpha={alpha}) split gave every node >= {min_size} rows; raise alpha")
    else:
        raise ValueError(f"mode must be 'even' or 'skewed', got {mode!r}")
    return [(X[p], y[p]) for p in parts]


def write_partition(directory, parts: Sequence[tuple], classes: int, layout: str = "auto",
                    meta: dict | None = None, ids: Sequence[int] | None = None) -> list[Path]:
    """Write node files node-<k>.catd (k = ids[i], default 0..len(parts)-1) and a
    partition.json manifest.

    One layout for all nodes: with "auto" it follows the density of all parts together.
    The manifest lists rows and per-class counts of every node, plus `meta`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not parts:
        raise ValueError("no parts to write")
    d = parts[0][0].shape[1]
    if any(Xk.shape[1] != d for Xk, _ in parts):
        raise ValueError("all parts must have the same number of features")
    if layout == "auto":
        nnz = sum(Xk.nnz if sp.issparse(Xk) else int(np.count_nonzero(Xk)) for Xk, _ in parts)
        rows = sum(Xk.shape[0] for Xk, _ in parts)
        layout = "csr" if nnz / float(rows * d) < CSR_DENSITY_THRESHOLD else "dense"
    paths = []
    nodes = []
    ids = list(range(len(parts))) if ids is None else list(ids)
    if len(ids) != len(parts):
        raise ValueError(f"{len(ids)} node ids for {len(parts)} parts")
    for k, (Xk, yk) in zip(ids, parts):
        pth = write_datafile(directory / f"node-{k}.catd", Xk, yk, classes=classes, layout=layout)
        paths.append(pth)
        counts = np.bincount(np.asarray(yk, dtype=np.int64), minlength=classes)
        nodes.append({"node": k, "file": pth.name, "rows": int(Xk.shape[0]),
                      "class_counts": [int(c) for c in counts]})
    manifest = {"format": "CATD", "version": dataheader.CATD_VERSION, "d": int(d), "classes": int(classes),
                "layout": layout, "nodes": nodes, "meta": meta or {}}
    tmp = directory / "partition.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, directory / "partition.json")
    return paths


# ----------------------------------------------------------------------------------------
# full-data references


def _prep(X, y, w, kind: str):
    if kind not in ("logistic", "softmax"):
        raise ValueError(f"kind must be 'logistic' or 'softmax', got {kind!r}")
    X = sp.csr_matrix(X, dtype=np.float64) if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    n, d = X.shape
    if n < 1:
        raise ValueError("X has no rows")
    w = np.asarray(w, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.int64)
    if kind == "logistic":
        if w.size != d:
            raise ValueError(f"logistic model needs d={d} entries, got {w.size}")
        if y.size != n or y.min() < 0 or y.max() > 1:
            raise ValueError("logistic labels must be n values in {0, 1}")
    else:
        if w.size % d:
            raise ValueError(f"softmax model size {w.size} is not a multiple of d={d}")
        if y.size != n or y.min() < 0 or y.max() >= w.size // d:
            raise ValueError(f"softmax labels must be n values in [0, {w.size // d})")
    return X, y, w


def loss_grad_np(X, y, w, lam: float, kind: str) -> tuple[float, np.ndarray]:
    """f(w) = (1/N) sum loss_i + lam/2 ||w||^2 and its gradient, vectorised (float64).

    Same objective and layout as edge.learner.loss_and_grad (softmax: w is the C x d
    matrix flattened row-major, C = len(w) / d).
    """
    X, y, w = _prep(X, y, w, kind)
    n = X.shape[0]
    loss, r = _row_coefs(X, y, w, kind)
    g = _per_entry(X, r, kind) / n + lam * w
    return loss + 0.5 * lam * float(w @ w), g


def _row_coefs(X, y, w, kind: str) -> tuple[float, np.ndarray]:
    """The mean data loss and every row's dloss/dz: logistic (N,), softmax (N, C) = P - Y."""
    n, d = X.shape
    if kind == "logistic":
        s = 2.0 * y - 1.0
        z = X @ w
        return float(np.mean(np.logaddexp(0.0, -s * z))), -s * expit(-s * z)
    C = w.size // d
    Z = np.asarray(X @ w.reshape(C, d).T)
    lse = logsumexp(Z, axis=1)
    loss = float(np.mean(lse - Z[np.arange(n), y]))
    P = np.exp(Z - lse[:, None])
    P[np.arange(n), y] -= 1.0
    return loss, P


def _per_entry(X, r: np.ndarray, kind: str) -> np.ndarray:
    """sum_i r_i a_i in the model's layout (softmax: class-major, C x d flattened)."""
    if kind == "logistic":
        return np.asarray(X.T @ r).ravel()
    return np.asarray(X.T @ r).T.ravel()


def grad_moments_np(X, y, w, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Means over the rows of c_i a_ij and (c_i a_ij)^2 (c_i = dloss/dz, no L2 term), entry by
    entry in the model's layout: the sampling noise of the gradient that rule catavg's prior
    weighs (edge.noiseprior, which sums the same at its K candidates on a board)."""
    X, y, w = _prep(X, y, w, kind)
    n = X.shape[0]
    _, r = _row_coefs(X, y, w, kind)
    X2 = X.multiply(X).tocsr() if sp.issparse(X) else X * X
    return _per_entry(X, r, kind) / n, _per_entry(X2, r * r, kind) / n


def predict_np(X, w, kind: str) -> np.ndarray:
    """Predicted class per row: logistic 1 iff a.x > 0; softmax the argmax of the logits,
    lowest class on ties (the rule of edge.evaluate.accuracy and edge.predict)."""
    X = sp.csr_matrix(X, dtype=np.float64) if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64).ravel()
    d = X.shape[1]
    if kind == "logistic":
        return (np.asarray(X @ w).ravel() > 0).astype(np.int64)
    return np.argmax(np.asarray(X @ w.reshape(-1, d).T), axis=1).astype(np.int64)


def accuracy_np(X, y, w, kind: str) -> float:
    """Fraction classified correctly, same rule as edge.evaluate.accuracy."""
    X, y, w = _prep(X, y, w, kind)
    return float(np.mean(predict_np(X, w, kind) == y))



class StackedParts:
    """Every node's sparse part as one CSR matrix, part k in columns k*d..(k+1)*d, so one
    mat-vec gives every node's margins and one transposed mat-vec every node's gradient.

    Why it is exact: each output entry is summed over its own part's rows in the same order
    as loss_grad_np on the part alone (the same CSR / CSC kernels, the same operands), and
    the per-part means and scalings are the same operations, so losses, gradients and
    accuracies are bit-identical to the per-part references; one call instead of one per
    node is what a round with many small parts saves.
    """

    def __init__(self, parts: Sequence[tuple], lam: float, kind: str, dim: int) -> None:
        for X, y in parts:
            _prep(X, y, np.zeros(dim), kind)  # the references' checks, once
        d = parts[0][0].shape[1]
        n = len(parts)
        nnz = sum(int(X.nnz) for X, _ in parts)
        itype = np.int64 if max(n * d, nnz) > np.iinfo(np.int32).max else np.int32
        counts = np.array([X.shape[0] for X, _ in parts], dtype=np.int64)
        indptr = [np.zeros(1, dtype=itype)]
        base = 0
        for X, _ in parts:
            indptr.append(X.indptr[1:].astype(itype) + base)
            base += int(X.indptr[-1])
        self.X = sp.csr_matrix((np.concatenate([X.data for X, _ in parts]),
                                np.concatenate([X.indices.astype(itype) + k * d for k, (X, _) in enumerate(parts)]),
                                np.concatenate(indptr)), shape=(int(counts.sum()), n * d))
        self.XT = self.X.T
        self.y = np.concatenate([np.asarray(y, dtype=np.int64) for _, y in parts])
        self.bounds = np.concatenate([[0], np.cumsum(counts)])
        self.nodes, self.d, self.dim, self.lam, self.kind = n, d, dim, float(lam), kind

    @staticmethod
    def fits(parts: Sequence[tuple]) -> bool:
        """Whether the parts can be stacked: all sparse, with the same feature count."""
        return bool(parts) and all(sp.issparse(X) for X, _ in parts) and \
            len({X.shape[1] for X, _ in parts}) == 1

    def loss_grads(self, w: np.ndarray, rows: Sequence[np.ndarray] | None = None
                   ) -> tuple[list[float], np.ndarray]:
        """[loss_grad_np(X_k, y_k, w)[0]] and the gradients as a (nodes, dim) array; with
        `rows`, on the rows rows[k] of each part (a mini-batch, in that order)."""
        X, XT, y, bounds = self.X, self.XT, self.y, self.bounds
        if rows is not None:
            pick = np.concatenate([self.bounds[k] + np.asarray(r, dtype=np.int64) for k, r in enumerate(rows)])
            X, y = X[pick], y[pick]
            XT = X.T
            bounds = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
        w = np.asarray(w, dtype=np.float64).ravel()
        counts = np.diff(bounds)
        if self.kind == "logistic":
            s = 2.0 * y - 1.0
            z = X @ np.tile(w, self.nodes)
            each = np.logaddexp(0.0, -s * z)
            r = -s * expit(-s * z)
            g = (XT @ r).reshape(self.nodes, self.d) / counts[:, None]
        else:
            C = w.size // self.d
            Z = np.asarray(X @ np.tile(w.reshape(C, self.d).T, (self.nodes, 1)))
            lse = logsumexp(Z, axis=1)
            at = np.arange(Z.shape[0])
            each = lse - Z[at, y]
            P = np.exp(Z - lse[:, None])
            P[at, y] -= 1.0
            g = np.asarray(XT @ P).reshape(self.nodes, self.d, C).transpose(0, 2, 1).reshape(self.nodes, -1) \
                / counts[:, None]
        g = g + self.lam * w
        reg = 0.5 * self.lam * float(w @ w)
        losses = [float(np.mean(each[bounds[k]:bounds[k + 1]].copy())) + reg for k in range(self.nodes)]
        return losses, g

    def accuracies(self, w: np.ndarray) -> list[float]:
        """[accuracy_np(X_k, y_k, w)]: each part's fraction classified correctly."""
        w = np.asarray(w, dtype=np.float64).ravel()
        if self.kind == "logistic":
            pred = np.asarray(self.X @ np.tile(w, self.nodes)).ravel() > 0
        else:
            W = np.tile(w.reshape(-1, self.d).T, (self.nodes, 1))
            pred = np.argmax(np.asarray(self.X @ W), axis=1)
        hit = pred.astype(np.int64) == self.y
        b = self.bounds
        return [float(np.mean(hit[b[k]:b[k + 1]].copy())) for k in range(self.nodes)]


def minimize_lbfgs(fun_grad, x0: np.ndarray, tol: float, max_iter: int) -> scipy.optimize.OptimizeResult:
    """L-BFGS-B on fun_grad(w) -> (f, grad) with the settings every f* of the lab uses.

    Why one home: a single dataset's reference f* and a simulated federation's f* (the node
    sum) must be solved alike, or their gaps would not compare. ftol at machine level and 20
    correction pairs let gtol decide when to stop.
    """
    return scipy.optimize.minimize(fun_grad, x0, jac=True, method="L-BFGS-B",
                                   options={"maxiter": max_iter, "gtol": tol, "ftol": 1e-15, "maxcor": 20})


def solve_reference(X, y, lam: float, kind: str, classes: int | None = None, tol: float = 1e-10,
                    max_iter: int = 20000, w0=None) -> Reference:
    """Minimise f accurately (L-BFGS-B on loss_grad_np) to get f* for optimality gaps.

    With lam > 0 f is lam-strongly convex, so f(w) - f* <= ||grad f(w)||^2 / (2 lam):
    that bound is returned as gap_bound (inf when lam = 0).
    """
    n, d = X.shape
    y64 = np.asarray(y, dtype=np.int64)
    if kind == "softmax":
        C = int(classes) if classes is not None else max(2, int(y64.max()) + 1)
        size = C * d
    else:
        size = d
    X64 = sp.csr_matrix(X, dtype=np.float64) if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    _prep(X64[:1], y64[:1], np.zeros(size), kind)  # argument checks
    x0 = np.zeros(size) if w0 is None else np.asarray(w0, dtype=np.float64).ravel().copy()
    res = minimize_lbfgs(lambda w: loss_grad_np(X64, y64, w, lam, kind), x0, tol, max_iter)
    f, g = loss_grad_np(X64, y64, res.x, lam, kind)
    gn = float(np.linalg.norm(g))
    gap = gn * gn / (2.0 * lam) if lam > 0 else math.inf
    return Reference(res.x, f, gn, gap, int(res.nit), bool(gn <= max(tol, 1e-7)))


def smoothness_np(X, lam: float, kind: str, method: str = "trace") -> float:
    """Smoothness constant L of f.

    method="trace": sum ||a_i||^2 / (4N) + lam (logistic) or / (2N) (softmax), exactly
    edge.evaluate.smoothness (see its docstring for the Hessian bounds).
    method="spectral": lambda_max(X^T X) / (4N) + lam (or / 2N), the tighter bound
    from the same Hessian argument, by a sparse SVD.
    """
    if kind not in ("logistic", "softmax"):
        raise ValueError(f"kind must be 'logistic' or 'softmax', got {kind!r}")
    n = X.shape[0]
    if n < 1:
        raise ValueError("X has no rows")
    k = 4.0 if kind == "logistic" else 2.0
    if method == "trace":
        s = float(X.multiply(X).sum()) if sp.issparse(X) else float(np.sum(np.square(X, dtype=np.float64)))
        return s / (k * n) + lam
    if method == "spectral":
        if min(X.shape) <= 2 or X.shape[0] * X.shape[1] <= 4_000_000:
            A = X.toarray() if sp.issparse(X) else np.asarray(X)
            top = float(np.linalg.norm(A.astype(np.float64), 2)) ** 2
        else:
            from scipy.sparse.linalg import svds

            A = sp.csr_matrix(X, dtype=np.float64) if sp.issparse(X) else np.asarray(X, dtype=np.float64)
            top = float(svds(A, k=1, return_singular_vectors=False, random_state=0)[0]) ** 2
        return top / (k * n) + lam
    raise ValueError(f"method must be 'trace' or 'spectral', got {method!r}")
