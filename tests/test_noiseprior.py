"""Rule catavg's weights before the first delta, from the node's own sampling noise
(edge/noiseprior.py): the weight at its boundaries on both backends, the board's second pass
equal to the simulator's numpy (logistic CSR and dense, softmax), scale invariance, and the
first round it changes."""

from __future__ import annotations

import math
from array import array

import numpy as np
import pytest
import scipy.sparse as sp

from aggregator.lab import datasets
from aggregator.lab import engine
from aggregator.lab.engine import SimConfig, simulate
from aggregator.lab.problem import load_data, make_problem
from edge import catavg, compress, datafile, learner, noiseprior, np_backend as nb
from edge.cat import SCHEME_S, SCHEME_SQ, Rule
from edge.cost import CostModel
from tests.test_cat_core import AFFINE, PACKET

F32_MAX = float(np.finfo(np.float32).max)

# (var, g, nodes) -> w: no noise; rounding below zero; g = 0 with and without noise; var = g^2
# exactly (the first r that is not below 1: the floor 1/n) and one float32 ulp under it;
# overflowed sums; one node (always 1)
WEIGHTS = [
    (0.0, 0.5, 4, 1.0), (0.0, 0.0, 4, 1.0), (-1e-30, 0.5, 4, 1.0), (1e-9, 0.0, 4, 0.25),
    (0.25, 0.5, 4, 0.25), (float(np.nextafter(np.float32(0.25), np.float32(0))), 0.5, 4, None),
    (0.01, 0.5, 4, 0.97), (0.01, 0.5, 1, 1.0), (0.25, 0.5, 1, 1.0), (0.01, 0.5, 16, 0.9625),
    (math.inf, 0.5, 4, 0.25), (math.inf, math.inf, 4, 0.25), (math.nan, 0.5, 4, 0.25),
]


@pytest.mark.parametrize("var,g,nodes,want", WEIGHTS)
def test_weight_at_its_boundaries_on_both_backends(var, g, nodes, want):
    w = noiseprior.weight(var, g, nodes)
    if want is None:                              # just under var = g^2: just over the floor
        assert 0.25 < w < 0.25 + 1e-6
    else:
        assert w == pytest.approx(want, abs=1e-12)
    with np.errstate(invalid="ignore"):
        assert nb.noise_weights(np.array([var]), np.array([g]), nodes)[0] == w


def _problem(kind: str, layout: str, rng: np.random.Generator, rows: int = 60, d: int = 40):
    """A small node data set (with a dense column every row has, so some entries are all
    signal) and a model, rounded to the float32 the data file and the board hold."""
    X = sp.random(rows, d, density=0.2, random_state=rng, format="csr")
    X = sp.csr_matrix(X.toarray() + np.eye(1, d, 3) * rng.normal(1.0, 0.1, (rows, 1)))
    classes = 2 if kind == "logistic" else 3
    y = rng.integers(0, classes, rows)
    x = rng.normal(0.0, 0.3, d * (1 if kind == "logistic" else classes)).astype(np.float32)
    return X.astype(np.float32), y, classes, x


@pytest.mark.parametrize("kind,layout", [("logistic", "csr"), ("logistic", "dense"), ("softmax", "csr")])
def test_board_pass_equals_numpy(tmp_path, kind, layout):
    rng = np.random.default_rng(11)
    X, y, classes, x = _problem(kind, layout, rng)
    path = datasets.write_datafile(tmp_path / "node.catd", X, y, classes, layout)
    data = datafile.DataFile(str(path))
    assert (data.index is None) == (layout == "dense")
    lam, nodes, k = 1e-3, 4, 25
    model = array("f", x)
    grad = learner.zeros(len(x))
    learner.loss_and_grad(model, data, lam, grad, kind)
    ag = catavg.Agreement(k, nodes, len(x))
    sums = learner.zeros(k)
    noiseprior.compute(ag, sums, grad, model, data, lam, kind, nodes)

    m1, m2 = datasets.grad_moments_np(X.astype(np.float64), y, x.astype(np.float64), kind)
    ref = catavg.Agreement(k, nodes, len(x))
    nb.noise_prior(ref, np.array(grad), m1, m2, X.shape[0], lam * x.astype(np.float64), nodes)
    assert ag.n == ref.n == k and not ag.reading
    assert list(ag.idx[:k]) == list(ref.idx[:k]) == sorted(ag.idx[:k])
    w, w_ref = np.array(ag.w[:k]), np.array(ref.w[:k])
    np.testing.assert_allclose(w, w_ref, rtol=1e-4, atol=1e-5)
    assert w.min() == pytest.approx(1 / nodes) and w.max() > 0.8   # entries mostly noise and mostly signal


@pytest.mark.parametrize("nodes", [2, 16])
def test_weights_are_the_definition_row_by_row(tmp_path, nodes):
    """w_j = 1/n + (1 - 1/n) max(0, 1 - s_j^2 / (N g_j^2)) from the rows' terms c_i a_ij
    written out one by one (s_j^2 their population variance, g_j their mean + lam x_j), with
    lam x large enough to matter."""
    rng = np.random.default_rng(21)
    X, y, classes, _ = _problem("logistic", "csr", rng)
    x = rng.normal(0.0, 1.0, X.shape[1]).astype(np.float32)
    lam, k = 0.5, 25
    data = datafile.DataFile(str(datasets.write_datafile(tmp_path / "n.catd", X, y, classes)))
    model = array("f", x)
    grad = learner.zeros(len(x))
    learner.loss_and_grad(model, data, lam, grad, "logistic")
    ag = catavg.Agreement(k, nodes, len(x))
    noiseprior.compute(ag, learner.zeros(k), grad, model, data, lam, "logistic", nodes)
    A = X.toarray().astype(np.float64)
    xs = x.astype(np.float64)
    N = A.shape[0]
    want = []
    for j in ag.idx[:k]:
        terms = []
        for i in range(N):
            z = float(A[i] @ xs)
            c = -1.0 / (1.0 + math.exp(z)) if y[i] else 1.0 / (1.0 + math.exp(-z))
            terms.append(c * A[i, j])
        mean = sum(terms) / N
        var = sum(t * t for t in terms) / N - mean * mean
        g = mean + lam * xs[j]
        rho = max(0.0, 1.0 - var / (N * g * g))
        want.append(1 / nodes + (1 - 1 / nodes) * rho)
    np.testing.assert_allclose(np.array(ag.w[:k]), want, rtol=1e-4, atol=1e-5)
    assert any(abs(lam * xs[j]) > abs(g - lam * xs[j]) for j, g in zip(ag.idx[:k], np.array(grad)[list(ag.idx[:k])]))


def test_weights_do_not_depend_on_how_g_is_scaled(tmp_path):
    """g may be error feedback's v = step/L g (+ a residual): the noise is that of the gradient
    the pass recomputes, so scaling g picks the same candidates and the same weights."""
    rng = np.random.default_rng(3)
    X, y, classes, x = _problem("logistic", "csr", rng)
    data = datafile.DataFile(str(datasets.write_datafile(tmp_path / "n.catd", X, y, classes)))
    model = array("f", x)
    grad = learner.zeros(len(x))
    learner.loss_and_grad(model, data, 0.0, grad, "logistic")
    out = []
    for scale in (1.0, 0.001):
        ag = catavg.Agreement(20, 8, len(x))
        noiseprior.compute(ag, learner.zeros(20), array("f", [v * scale for v in grad]), model, data, 0.0,
                         "logistic", 8)
        out.append((list(ag.idx[:20]), list(ag.w[:20])))
    assert out[0] == out[1]


def test_the_prior_changes_the_choice_only_where_the_weights_differ():
    """With the weights of a noisy node the T of the first round moves (catavg's argmax on
    them, checked on both backends); weights of 1 everywhere are cat's argmax."""
    rng = np.random.default_rng(8)
    d = 300
    g = np.where(np.arange(d) < 5, 4.0, rng.uniform(1.5, 2.5, d)).astype(np.float32)
    m1 = g.astype(np.float64)
    for scheme, prof in ((SCHEME_S, AFFINE), (SCHEME_SQ, AFFINE), (SCHEME_SQ, PACKET)):
        cm = CostModel(prof, d, scheme)
        ts = []
        for noise in (0.0, 9.0):          # per-row variance: none, then past the tail's g^2
            rule = Rule("catavg", 16)
            ag = rule.agree(d, d)
            nb.noise_prior(ag, g, m1, m1 * m1 + noise, 1, np.zeros(d), 16)
            ws = compress.Workspace(d, d)
            res = compress.compress(ws, array("f", g), scheme, rule, cm, cm.t_max, 1.0)
            ch2, _, _, _ = nb.choose(rule, scheme, g, nb.CostTable(cm), cm.t_max)
            assert res.choice.t == ch2.t
            ts.append(res.choice.t)
        cat_t = nb.choose(Rule("cat"), scheme, g, nb.CostTable(cm), cm.t_max)[0].t
        assert ts[0] == cat_t > 5 and ts[1] < cat_t    # the tail is within its noise


def test_first_round_on_sixteen_nodes_sends_fewer_entries_than_cat():
    """The simulator's round 0 (no delta yet): the nodes weigh by their noise, so on 16 nodes
    each send fewer entries than cat (about half here), and the round's descent is not smaller."""
    data = load_data("synthetic", 2000, 200, 20.0, 0, False)
    problem = make_problem(data, 16, "even", 1e-4, None, 0, 0.5, "spectral")
    runs = {rule: simulate(problem, SimConfig(scheme="sq", rule=rule, profile="ble5-1m-dle", rounds=1),
                           progress=False) for rule in ("cat", "catavg")}
    t_cat, t_avg = runs["cat"].T[0], runs["catavg"].T[0]
    assert np.all(t_avg < t_cat) and t_avg.sum() < 0.6 * t_cat.sum()
    descent = {r: res.loss[0] - res.loss[1] for r, res in runs.items()}
    assert descent["catavg"] >= descent["cat"]


class _Row:
    """What edge.noiseprior's walk reads of a DataFile's current row."""

    def __init__(self, values, index=None, d=0):
        self.values = array("f", values)
        self.index = None if index is None else array("I", index)
        self.nnz = len(values)
        self.d = d or len(values)


@pytest.mark.parametrize("index", [[1, 2, 5, 9, 41], [9, 2, 41, 5, 1], None])
def test_the_walk_finds_the_candidates_in_a_row_in_order_or_not(index):
    """Rows are ascending by the file format; one that is not restarts the walk and still
    finds every candidate; a dense row (no index) is its entries 0..d-1; base shifts a class."""
    idx = array("H", [2, 5, 9, 40, 45])
    vals = [1.0, 2.0, 3.0, 4.0, 5.0] if index is not None else [0.0] * 50
    if index is None:
        for j, v in ((2, 2.0), (5, 4.0), (9, 1.0), (41, 5.0)):
            vals[j] = v
        row = _Row(vals)
    else:
        row = _Row(vals, index, 50)
    where = {j: v for j, v in zip(range(50) if index is None else index, vals)}
    for base in (0, 3):
        sums, sq = learner.zeros(5), learner.zeros(5)
        noiseprior._gather(0.5, row, idx, 5, sums, sq, base)
        want = [0.5 * where.get(j - base, 0.0) for j in idx]
        assert list(sums) == want and list(sq) == [t * t for t in want]


def test_the_simulator_weighs_on_the_rows_the_gradient_used():
    """With mini-batches the prior's moments are the batch's rows (and N their count), as the
    gradient's; a node that has read a delta (n > 0) or a job of one node is left alone."""
    data = load_data("synthetic", 400, 60, 8.0, 3, False)
    problem = make_problem(data, 2, "even", 1e-4, None, 3, 0.5, "spectral")
    x = np.zeros(problem.dim)
    rows = [np.arange(0, 40), np.arange(10, 90)]
    _, g = problem.loss_grads(x, rows)
    out = {}
    for name, rr in (("batch", rows), ("full", None)):
        rules = [Rule("catavg", 2) for _ in range(2)]
        ags = [r.agree(20, problem.dim) for r in rules]
        engine._noise_priors(problem, x, g, rr, rules, ags)
        out[name] = [np.array(a.w[:a.n]) for a in ags]
    for k in range(2):
        X, y = problem.parts[k]
        m1, m2 = datasets.grad_moments_np(X[rows[k]], y[rows[k]], x, problem.kind)
        ref = catavg.Agreement(20, 2, problem.dim)
        nb.noise_prior(ref, g[k], m1, m2, len(rows[k]), problem.lam * x, 2)
        assert list(out["batch"][k]) == list(ref.w[:ref.n])
        assert list(out["batch"][k]) != list(out["full"][k])
    rules = [Rule("catavg", 2), Rule("catavg", 1)]
    ags = [r.agree(20, problem.dim) for r in rules]
    ags[0].n = 3                                   # read a delta already
    engine._noise_priors(problem, x, g, None, rules, ags)
    assert ags[0].n == 3 and ags[1].n == 0
