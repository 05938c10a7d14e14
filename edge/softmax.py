"""The softmax model's rows for edge.learner.loss_and_grad, edge.evaluate and catavg's noise
pass (edge/noiseprior.py): the logits and dloss/dz of one row, in a C-sized scratch array. A
module of its own so that a board training a logistic model never holds this code.
MicroPython and CPython.
"""

import math
from array import array

_scratch = None


def scratch(c):
    # One C-sized buffer for the logits, reused across calls; double where the
    # port has it so CPython matches numpy, float elsewhere.
    global _scratch
    if _scratch is None or len(_scratch) < c:
        try:
            _scratch = array("d", bytes(8 * c))
        except ValueError:  # pragma: no cover - port without 'd'
            _scratch = array("f", bytes(4 * c))
    return _scratch


def logits(model, data, out, n):
    # out[c] = W_c . a for the current row, c < n
    d = data.d
    vals = data.values
    nnz = data.nnz
    if data.index is None:
        for c in range(n):
            b = c * d
            s = 0.0
            for j in range(d):
                s += model[b + j] * vals[j]
            out[c] = s
    else:
        idx = data.index
        for c in range(n):
            b = c * d
            s = 0.0
            for k in range(nnz):
                s += model[b + idx[k]] * vals[k]
            out[c] = s


def softmax_row(model, data, out, n, label):
    """The current row's softmax loss (returned) and dloss/dz_c = p_c - [c == label] in
    out[0:n], n classes: the gradient pass and the noise pass of rule catavg
    (edge/noiseprior.py) share it. (Parameter names that were qstrs of a round already.)"""
    logits(model, data, out, n)
    zmax = out[0]
    for c in range(1, n):
        if out[c] > zmax:
            zmax = out[c]
    zy = out[label]
    ssum = 0.0
    for c in range(n):
        e = math.exp(out[c] - zmax)  # <= 1: cannot overflow
        out[c] = e
        ssum += e
    inv = 1.0 / ssum
    for c in range(n):
        coef = out[c] * inv
        if c == label:
            coef -= 1.0
        out[c] = coef
    # loss_i = logsumexp(z) - z_y = zmax + log(ssum) - z_y, ssum in [1, C]
    return (zmax - zy) + math.log(ssum)
