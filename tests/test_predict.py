"""edge.predict on CPython: the gateway's prediction rule (aggregator.lab.datasets.predict_np),
ties to the lowest class, probabilities, and refusals of a model that does not fit the reading."""

from __future__ import annotations

import math
from array import array

import numpy as np
import pytest

from aggregator.lab import datasets
from edge import predict


@pytest.mark.parametrize("classes", [1, 2, 3, 10])
def test_predict_matches_the_gateway_rule(classes):
    rng = np.random.default_rng(classes)
    d = 17
    W = rng.standard_normal((classes, d)).astype(np.float32)
    X = rng.standard_normal((200, d)).astype(np.float32)
    kind = "logistic" if classes == 1 else "softmax"
    want = datasets.predict_np(X, W.ravel(), kind)
    model = array("f", W.ravel().tobytes())
    probs = array("f", bytes(4 * max(2, classes)))
    for x, c in zip(X, want):
        reading = array("f", x.tobytes())
        assert predict.predict(model, reading) == c
        assert predict.scores(model, reading, probs) == c
        assert sum(probs) == pytest.approx(1.0, abs=1e-6)
    # probabilities: sigmoid / softmax of the logits (float32 storage)
    z = (X[0].astype(np.float64) @ W.T.astype(np.float64))
    predict.scores(model, list(map(float, X[0])), probs)
    if classes == 1:
        p = 1.0 / (1.0 + math.exp(-z[0]))
        assert list(probs[:2]) == pytest.approx([1.0 - p, p], rel=1e-5)
    else:
        e = np.exp(z - z.max())
        assert list(probs[:classes]) == pytest.approx(list(e / e.sum()), rel=1e-5, abs=1e-7)


def test_exact_ties_go_to_the_lowest_class_and_zero_margin_to_class_0():
    x = [1.0, 1.0]
    tie_0_2 = array("f", [1.0, 2.0, 0.5, 0.5, 1.0, 2.0])       # logits 3, 1, 3
    assert predict.predict(tie_0_2, x) == 0
    tie_1_2 = array("f", [0.5, 0.5, 1.0, 2.0, 1.0, 2.0])       # logits 1, 3, 3
    assert predict.predict(tie_1_2, x) == 1
    probs = array("f", [0.0] * 3)
    assert predict.scores(tie_0_2, x, probs) == 0 and probs[0] == probs[2] > probs[1]
    assert predict.predict(array("f", [1.0, -1.0]), [2.0, 2.0]) == 0   # w.x == 0 is not class 1
    assert predict.predict(array("f", [1.0, -1.0]), [2.0, 1.5]) == 1


@pytest.mark.parametrize("n, d", [(7, 2), (5, 6), (3, 3 * 2 - 1), (0, 3), (3, 0)])
def test_a_model_that_does_not_fit_the_reading_is_refused(n, d):
    with pytest.raises(ValueError):
        predict.predict(array("f", [0.0] * n), [0.0] * d)


def test_scores_needs_room_for_every_class():
    model = array("f", [0.0] * 6)
    with pytest.raises(ValueError, match="probs has 2 entries, the model has 3 classes"):
        predict.scores(model, [0.0, 0.0], array("f", [0.0, 0.0]))
    with pytest.raises(ValueError):
        predict.predict(model, [])
