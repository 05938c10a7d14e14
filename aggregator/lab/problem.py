"""The data side of a simulated federation: which dataset, split how, and the objective's constants.

F(x) = (1/n) sum_k f_k(x), f_k the L2-regularised logistic (or softmax) loss on node k's
partition (eq. 10 of the paper). A `Problem` holds the node partitions, the model size and
the smoothness bound L every node's step uses; `load_data` turns what a user names (a
builtin, 'synthetic', a LIBSVM or CATD file, a partition directory) into data, and
`make_problem` splits it over the nodes.

The losses, gradients and L bounds themselves live in `aggregator.lab.datasets` (vectorised
references that agree with `edge.learner`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from aggregator.errors import UserError
from aggregator.lab import datasets as ds

#: names that select `datasets.synthetic_rcv1_like` (any case, '-' or '_').
SYNTHETIC_NAMES = ("synthetic", "rcv1-like")
#: the default synthetic size: RCV1-like statistics (power-law features, L2 rows, ~15 rows
#: per feature as RCV1's 697,641 / 47,236) at a size where an experiment takes a minute.
SMALL = {"rows": 45_000, "features": 3_000, "nnz": 30.0}
#: RCV1's size (paper section 2).
FULL = {"rows": ds.RCV1_N, "features": ds.RCV1_D, "nnz": float(ds.RCV1_NNZ)}


class DataSpecError(UserError, ValueError):
    """The data a user named cannot be loaded or split as asked (unknown name, unreadable
    file, a directory without partition.json, more nodes than rows ...)."""


def is_synthetic(spec: str) -> bool:
    """Whether `spec` names the RCV1-like generator rather than a dataset or a file."""
    return str(spec).replace("_", "-").lower() in SYNTHETIC_NAMES


def synthetic_size(full: bool = False, rows: int | None = None, features: int | None = None,
                   nnz: float | None = None) -> tuple[int, int, float]:
    """(rows, features, nnz per row) for the generator: each given value, else FULL's (full)
    or SMALL's."""
    base = FULL if full else SMALL
    return (rows or base["rows"], features or base["features"], nnz or base["nnz"])


@dataclass
class Problem:
    """The data of one simulated federation: node partitions and the objective's constants.

    parts: [(X_k float64 CSR or ndarray, y_k int64)]; dim: model size (d, or C*d for softmax);
    L: smoothness bound of F used for every node's step; f_star: min F (None until solved).
    """

    parts: list[tuple[Any, np.ndarray]]
    kind: str
    lam: float
    classes: int
    d: int
    dim: int
    L: float
    name: str
    f_star: float | None = None
    w_star: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    _stacked: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def nodes(self) -> int:
        return len(self.parts)

    @property
    def stacked(self) -> ds.StackedParts | None:
        """The parts as one matrix (`datasets.StackedParts`: every node's loss, gradient and
        accuracy in one call, bit-identical to the per-part references), built on first use;
        None when they cannot be stacked (a dense part)."""
        if self._stacked is None and ds.StackedParts.fits(self.parts):
            self._stacked = ds.StackedParts(self.parts, self.lam, self.kind, self.dim)
        return self._stacked

    def loss_grads(self, x: np.ndarray, rows: list | None = None,
                   stacked: bool = True) -> tuple[list[float], np.ndarray]:
        """Every node's f_k(x) and grad f_k(x) (a (nodes, dim) array); with `rows`, on the rows
        rows[k] of each part (a mini-batch). stacked=False: part by part (the reference)."""
        st = self.stacked if stacked else None
        if st is not None:
            return st.loss_grads(x, rows)
        fs, gs = [], []
        for k, (X, y) in enumerate(self.parts):
            if rows is not None:
                X, y = X[rows[k]], y[rows[k]]
            fk, gk = ds.loss_grad_np(X, y, x, self.lam, self.kind)
            fs.append(fk)
            gs.append(gk)
        return fs, np.stack(gs)

    @property
    def rows(self) -> int:
        return int(sum(X.shape[0] for X, _ in self.parts))

    def nnz(self) -> list[int]:
        """Stored entries of each node's data: what its gradient costs a board (the whole-board
        compute model); a dense part counts every entry."""
        return [int(X.nnz) if sp.issparse(X) else int(X.size) for X, _ in self.parts]

    def loss_grad(self, x: np.ndarray, stacked: bool = True) -> tuple[float, np.ndarray]:
        """F(x) and grad F(x) = (1/n) sum_k grad f_k(x)."""
        fs, gs = self.loss_grads(x, stacked=stacked)
        f = 0.0
        g = np.zeros(self.dim)
        for fk, gk in zip(fs, gs):
            f += fk
            g += gk
        n = len(self.parts)
        return f / n, g / n

    def accuracy(self, x: np.ndarray, stacked: bool = True) -> float:
        """Fraction of all rows (every node's) classified correctly."""
        st = self.stacked if stacked else None
        each = st.accuracies(x) if st is not None else \
            [ds.accuracy_np(X, y, x, self.kind) for X, y in self.parts]
        good = 0.0
        for acc, (X, _) in zip(each, self.parts):
            good += acc * X.shape[0]
        return good / self.rows

    def solve(self, tol: float = 1e-9, max_iter: int = 5000) -> float:
        """f* = min F by L-BFGS-B on the node sum (so a skewed split's F is the one solved)."""
        if self.f_star is not None:
            return self.f_star
        res = ds.minimize_lbfgs(self.loss_grad, np.zeros(self.dim), tol, max_iter)
        f, g = self.loss_grad(res.x)
        self.f_star = float(f)
        self.w_star = res.x
        self.meta["f_star_grad_norm"] = float(np.linalg.norm(g))
        return self.f_star


def load_data(spec: str, rows: int | None = None, features: int | None = None,
              nnz: float | None = None, seed: int = 0, normalize: bool = False) -> ds.Dataset | list:
    """A dataset by name or path.

    * builtin names (datasets.BUILTIN): shipped in scikit-learn;
    * synthetic / rcv1-like: `datasets.synthetic_rcv1_like` (rows, features, nnz per row);
    * a directory written by `cat-aggregator partition` (returns the node parts as a list of
      (X, y, classes));
    * a .catd file; anything else is read as a LIBSVM file (RCV1, URL ...).

    Raises DataSpecError when the spec names nothing loadable.
    """
    if is_synthetic(spec):
        kw: dict[str, Any] = {"seed": seed}
        if rows:
            kw["n"] = int(rows)
        if features:
            kw["d"] = int(features)
        if nnz:
            kw["nnz_per_row"] = float(nnz)
        try:
            return ds.synthetic_rcv1_like(**kw)
        except ValueError as e:
            raise DataSpecError(f"synthetic data: {e}") from None
    builtin = ds.builtin_key(spec)
    if builtin is not None:
        return ds.load_builtin(builtin)
    p = Path(spec)
    if p.is_dir():
        return _load_partition(p)
    if not p.exists():
        raise DataSpecError(f"{spec}: not a builtin dataset ({', '.join(ds.BUILTIN)}), "
                            "'synthetic', nor an existing file or partition directory")
    if p.suffix == ".catd":
        try:
            return ds.read_datafile(p)
        except (ValueError, OSError) as e:
            raise DataSpecError(str(e)) from None
    try:
        return ds.load_libsvm(p, n_features=features, normalize=normalize)
    except ValueError as e:
        raise DataSpecError(f"{p}: cannot read as LIBSVM: {e}") from None


def _load_partition(p: Path) -> list:
    """The node files a partition directory's partition.json lists, as [(X, y, classes)]."""
    man = p / "partition.json"
    if not man.exists():
        raise DataSpecError(f"{p}: a directory must hold partition.json (from `cat-aggregator partition`)")
    try:
        meta = json.loads(man.read_text())
        parts = []
        for node in meta["nodes"]:
            d = ds.read_datafile(p / node["file"])
            parts.append((d.X, d.y, d.classes))
    except (ValueError, OSError, KeyError, TypeError) as e:
        raise DataSpecError(f"{man}: not a usable partition: {e}") from None
    return parts


def make_problem(data: ds.Dataset | list, nodes: int = 1, mode: str = "even", lam: float = 1e-4,
                 kind: str | None = None, seed: int = 0, alpha: float = 0.5,
                 smoothness: str = "spectral") -> Problem:
    """Partition a dataset over `nodes` and fix L (trace bound, as the edges compute it, or spectral).

    L is the largest of the nodes' bounds, so every f_k is L-smooth (the assumption of the
    multi-node descent lemma, appendix G), and F is too. A partition directory (a list from
    `load_data`) fixes the node count itself: `nodes` is then not used.
    Raises DataSpecError when the split cannot be made (more nodes than rows, a bad mode ...).
    """
    try:
        if isinstance(data, list):
            parts = [(X, y) for X, y, _ in data]
            classes = max(c for _, _, c in data)
            name = f"partition-{len(parts)}"
        else:
            classes = data.classes
            name = data.name
            parts = ds.partition(data.X, data.y, nodes, mode=mode, seed=seed, alpha=alpha) if nodes > 1 \
                else [(data.X, data.y)]
        if kind is None:
            kind = "logistic" if classes == 2 else "softmax"
        d = parts[0][0].shape[1]
        conv = []
        for X, y in parts:
            X = sp.csr_matrix(X, dtype=np.float64) if sp.issparse(X) else np.asarray(X, dtype=np.float64)
            conv.append((X, np.asarray(y, dtype=np.int64)))
        L = max(ds.smoothness_np(X, lam, kind, smoothness) for X, _ in conv)
    except ValueError as e:
        raise DataSpecError(str(e)) from None
    dim = d if kind == "logistic" else classes * d
    return Problem(conv, kind, float(lam), int(classes), int(d), int(dim), float(L), name,
                   meta={"mode": mode, "alpha": alpha, "smoothness": smoothness, "seed": seed})
