"""Local learner: L2-regularised logistic and softmax regression, streamed from a CATD file.

Objective on a node holding N rows (a_i, y_i):

    f(x) = (1/N) sum_i loss_i(x) + (lam/2) ||x||^2

* "logistic": binary, labels {0,1} in the file, s_i = 2 y_i - 1 in {-1,+1},
  loss_i = log(1 + exp(-s_i a_i.x)), x has d entries.
* "softmax": C classes, x is the C x d weight matrix W flattened row-major
  (W[c][j] = x[c*d + j]), loss_i = logsumexp_c(W_c.a_i) - W_{y_i}.a_i.

Every call makes one pass over the file through the DataFile's single row buffer,
so memory is O(1) beyond the caller's model and gradient arrays (softmax keeps one
C-sized scratch array, allocated once and reused; its per-row code is edge/softmax.py,
which a board training a logistic model never loads). Numerically stable: softplus and
the sigmoid never exponentiate a positive number, softmax subtracts the max logit,
and log(1+e) uses Goldberg's log1p trick (MicroPython has no math.log1p), so nothing
overflows on single-precision boards either (math.exp overflows past ~88 there).

Runs unchanged on MicroPython and CPython.
"""

import math
from array import array

from edge.cbor import errmsg

KINDS = ("logistic", "softmax")  # index = the config's model number (docs/wire-format.md §3.2)


def log1p_small(e):
    """log(1 + e) for e >= 0, accurate to a few ulps also for tiny e
    (D. Goldberg, "What every computer scientist should know about
    floating-point arithmetic", 1991, theorem 4)."""
    u = 1.0 + e
    if u == 1.0:
        return e
    return math.log(u) * e / (u - 1.0)


def softplus(t):
    """log(1 + exp(t)) without overflow: max(t, 0) + log1p(exp(-|t|))."""
    if t > 0.0:
        return t + log1p_small(math.exp(-t))
    return log1p_small(math.exp(t))


def sigmoid(t):
    """1 / (1 + exp(-t)) without overflow."""
    if t >= 0.0:
        return 1.0 / (1.0 + math.exp(-t))
    e = math.exp(t)
    return e / (1.0 + e)


def model_size(d, classes, kind):
    """Number of model entries: d for logistic, classes*d for softmax."""
    if kind == "logistic":
        return d
    if kind == "softmax":
        return classes * d
    raise ValueError(errmsg(122, (kind,)))


def zeros(n):
    """array('f') of n zeros without a temporary: array('f', bytes(4 n)) holds the 4 n-byte
    bytes object too, doubling the peak on a board (array() sizes itself from len(range))."""
    a = array("f", range(n))
    for j in range(n):
        a[j] = 0.0
    return a


def byte_view(a):
    """The bytes of an array('f') as a writable buffer, without a copy (CPython: a memoryview
    cast; MicroPython: uctypes.bytearray_at), or None on a port with neither. Valid while `a`
    lives. The edge stages downlink messages in its idle gradient buffer through it."""
    try:
        return memoryview(a).cast("B")
    except AttributeError:  # MicroPython: no memoryview.cast
        pass
    try:
        import uctypes
    except ImportError:
        return None
    return uctypes.bytearray_at(uctypes.addressof(a), 4 * len(a))


def _check(model, data, kind, grad_out=None, lam=0.0):
    if kind != "logistic" and kind != "softmax":
        raise ValueError(errmsg(122, (kind,)))
    if kind == "logistic" and data.classes != 2:
        raise ValueError(errmsg(123, data.classes))
    m = model_size(data.d, data.classes, kind)
    if len(model) != m:
        raise ValueError(errmsg(124, (len(model), kind, data.d, data.classes, m)))
    if grad_out is not None and len(grad_out) != m:
        raise ValueError(errmsg(125, (len(grad_out), m)))
    if not (lam >= 0.0):
        raise ValueError(errmsg(126, (lam,)))
    if data.n < 1:
        raise ValueError(errmsg(127, (data.path,)))


def _dot(model, data):
    vals = data.values
    s = 0.0
    if data.index is None:
        for j in range(data.d):
            s += model[j] * vals[j]
    else:
        idx = data.index
        for k in range(data.nnz):
            s += model[idx[k]] * vals[k]
    return s


def _axpy(v, data, out, base):
    # out[base + j] += v * a_j over the current row
    vals = data.values
    if data.index is None:
        for j in range(data.d):
            out[base + j] += v * vals[j]
    else:
        idx = data.index
        for k in range(data.nnz):
            j = base + idx[k]
            out[j] += v * vals[k]


def loss_and_grad(model, data, lam, grad_out, kind, add=0.0):
    """Local objective f(x) (returned) and its gradient (written into grad_out).

    model, grad_out: array('f') of model_size(d, classes, kind) entries.
    data: an edge.datafile.DataFile (rewound and streamed once).
    lam: L2 weight, f includes (lam/2)||x||^2.
    kind: "logistic" or "softmax".
    add: when not 0, grad_out += add * gradient instead (error feedback: the step-scaled
    gradient goes straight into the residual, so no second d-array holds the gradient).
    """
    _check(model, data, kind, grad_out, lam)
    m = len(grad_out)
    if add == 0.0:
        for j in range(m):
            grad_out[j] = 0.0
        row = 1.0
    else:
        row = add / data.n          # each row's term, already divided by n and step-scaled
    total = 0.0
    d = data.d
    data.rewind()
    if kind == "logistic":
        while True:
            y = data.read_row()
            if y < 0:
                break
            z = _dot(model, data)
            if y:  # s = +1: loss softplus(-z), dloss/dz = -sigmoid(-z)
                total += softplus(-z)
                coef = -sigmoid(-z)
            else:  # s = -1: loss softplus(z), dloss/dz = sigmoid(z)
                total += softplus(z)
                coef = sigmoid(z)
            if coef != 0.0:
                _axpy(coef if add == 0.0 else coef * row, data, grad_out, 0)
    else:
        from edge.softmax import scratch, softmax_row  # only softmax models load it
        cc = data.classes
        z = scratch(cc)
        while True:
            y = data.read_row()
            if y < 0:
                break
            total += softmax_row(model, data, z, cc, y)
            for c in range(cc):
                coef = z[c]
                if coef != 0.0:
                    _axpy(coef if add == 0.0 else coef * row, data, grad_out, c * d)
    inv_n = 1.0 / data.n
    reg = 0.0
    if add == 0.0:
        for j in range(m):
            w = model[j]
            reg += w * w
            grad_out[j] = grad_out[j] * inv_n + lam * w
    else:
        lam_add = lam * add
        for j in range(m):
            w = model[j]
            reg += w * w
            grad_out[j] += lam_add * w
    data.rewind()
    return total * inv_n + 0.5 * lam * reg
