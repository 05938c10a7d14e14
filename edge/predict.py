"""Classify a reading with the synced model, on the board that helped train it.

After the edge loop (edge.node.EdgeNode.run, or any sync) the node holds the gateway's model
in `node.model`: the float32 weights `cat-aggregator model export` writes. A board can then
classify its own readings with it:

    c = predict(node.model, x)          # x: the reading's features (array('f') or list),
                                        # preprocessed as the training rows were
    c = scores(node.model, x, probs)    # the same class, and its probabilities in probs

The model's size says what it is: len(x) weights is logistic (class 1 iff w.x > 0),
classes * len(x) weights is softmax (the argmax of W x, the lowest class on ties). That is
the rule of edge.evaluate.accuracy and of the gateway's aggregator.lab.datasets.predict_np.

Keeps no buffer of its own (probs is the caller's array('f') of 2 or `classes` entries; the
only temporaries are floats), so it runs in a sensor loop on a board with little heap left.
firmware_tests/test_predict_mp.py runs it on MicroPython after a real job. MicroPython and
CPython.
"""

import math

from edge.learner import sigmoid


def classes_of(model, d):
    """1 for a logistic model over d features, else the softmax model's class count."""
    n = len(model)
    if d < 1:
        raise ValueError("the reading has no features")
    if n == d:
        return 1
    if n % d or n // d < 2:
        raise ValueError("model has %d weights: neither %d (logistic) nor a multiple (softmax)" % (n, d))
    return n // d


def _dot(model, base, x, d):
    s = 0.0
    for j in range(d):
        s += model[base + j] * x[j]
    return s


def predict(model, x):
    """The class of reading x under model (see the module doc)."""
    d = len(x)
    c = classes_of(model, d)
    if c == 1:
        return 1 if _dot(model, 0, x, d) > 0.0 else 0
    best = 0
    top = _dot(model, 0, x, d)
    for k in range(1, c):
        z = _dot(model, k * d, x, d)
        if z > top:
            best = k
            top = z
    return best


def scores(model, x, probs):
    """predict(model, x), with the class probabilities written into probs (2 entries for a
    logistic model, `classes` for softmax): sigmoid, or softmax without overflow."""
    d = len(x)
    c = classes_of(model, d)
    if len(probs) < (2 if c == 1 else c):
        raise ValueError("probs has %d entries, the model has %d classes" % (len(probs), 2 if c == 1 else c))
    if c == 1:
        z = _dot(model, 0, x, d)
        p = sigmoid(z)
        probs[0] = 1.0 - p
        probs[1] = p
        return 1 if z > 0.0 else 0
    best = 0
    top = 0.0
    for k in range(c):
        z = _dot(model, k * d, x, d)
        probs[k] = z               # (rounded if probs is array('f'); the class is chosen unrounded)
        if k == 0 or z > top:
            best = k
            top = z
    total = 0.0
    for k in range(c):
        e = math.exp(probs[k] - top)   # about 1 at most: cannot overflow
        probs[k] = e
        total += e
    for k in range(c):
        probs[k] = probs[k] / total
    return best
