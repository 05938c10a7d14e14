"""What the host (and the firmware tests) ask of a model and a data file besides the gradient:
accuracy, the smoothness constant L, a zero model of the right size. A module of its own,
since a board's round never runs it (the gateway sends L in the config). MicroPython and
CPython, one pass over the file like edge.learner.
"""

from edge.learner import _check, _dot, model_size, zeros
from edge.softmax import logits, scratch


def new_model(data, kind):
    """A zero model (array('f')) of the right size for this data file and kind."""
    return zeros(model_size(data.d, data.classes, kind))


def accuracy(model, data, kind):
    """Fraction of rows classified correctly (logistic: predict 1 iff a.x > 0;
    softmax: argmax of the logits, lowest class on ties)."""
    _check(model, data, kind)
    good = 0
    data.rewind()
    if kind == "logistic":
        while True:
            y = data.read_row()
            if y < 0:
                break
            p = 1 if _dot(model, data) > 0.0 else 0
            if p == y:
                good += 1
    else:
        cc = data.classes
        z = scratch(cc)
        while True:
            y = data.read_row()
            if y < 0:
                break
            logits(model, data, z, cc)
            best = 0
            for c in range(1, cc):
                if z[c] > z[best]:
                    best = c
            if best == y:
                good += 1
    data.rewind()
    return good / data.n


def sq_norm_sum(data):
    """sum_i ||a_i||^2 over the file (one pass)."""
    s = 0.0
    data.rewind()
    vals = data.values
    while True:
        y = data.read_row()
        if y < 0:
            break
        r = 0.0
        for k in range(data.nnz):
            v = vals[k]
            r += v * v
        s += r
    data.rewind()
    return s


def smoothness(data, lam, kind):
    """Smoothness constant L of f: the trace bound on the Hessian's largest eigenvalue.

    logistic: the Hessian is (1/N) sum_i s(1-s) a_i a_i^T + lam I with
      s(1-s) <= 1/4 (s the sigmoid), so lambda_max <= lambda_max(sum a_i a_i^T)/(4N) + lam
      <= trace/(4N) + lam = sum ||a_i||^2 / (4N) + lam.
    softmax: the Hessian is (1/N) sum_i (diag(p) - p p^T) (x) a_i a_i^T + lam I and
      diag(p) - p p^T has lambda_max <= 1/2 (Gershgorin: row c sums to
      2 p_c (1 - p_c) <= 1/2; Boehning 1992, Ann. Inst. Statist. Math. 44:197),
      so L <= sum ||a_i||^2 / (2N) + lam.
    The bound is cheap (one pass, O(1) memory) but can be loose by up to a factor
    of min(N, d) against the spectral value; aggregator.lab.datasets.smoothness_np
    also computes the spectral one on the gateway.
    """
    if kind != "logistic" and kind != "softmax":
        raise ValueError("kind must be 'logistic' or 'softmax', got %r" % (kind,))
    if not (lam >= 0.0):
        raise ValueError("lam must be >= 0, got %r" % (lam,))
    if data.n < 1:
        raise ValueError("data file %s has no rows" % (data.path,))
    k = 4.0 if kind == "logistic" else 2.0
    return sq_norm_sum(data) / (k * data.n) + lam
