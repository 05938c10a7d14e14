"""Rule catavg (CAT on the averaged update): its argmax against brute force on both backends
(ties included), the Agreement it reads from the synced delta, one node = cat, and the
simulator, config and edge node that carry it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from edge import cat, catavg, compress, np_backend as nb, topk
from edge.cat import SCHEME_S, SCHEME_SQ, SCHEME_SS
from edge.cost import CostModel
from tests.test_cat_core import AFFINE, KINDS, PACKET, PAYLOAD, as_array, gradient


def brute_force(scheme, ga, idx, n, s2, cost, t_max, weight):
    """The definition, every T from scratch: S: sum v a^2 / S2; SQ: (sum v a)^2 / (S2 sum v);
    the smallest T within RATIO_RTOL of the best ratio."""
    ratios = []
    for t in range(1, min(n, t_max) + 1):
        aw = vw = 0.0
        for i in range(t):
            a, v = abs(ga[idx[i]]), weight(idx[i])
            if scheme == SCHEME_S:
                aw += v * (a * a)
            else:
                aw += v * a
                vw += v
        if scheme == SCHEME_S:
            imp = aw / s2 if s2 > 0.0 else 0.0
        else:
            imp = aw * aw / (vw * s2) if s2 > 0.0 and vw > 0.0 else 0.0
        ratios.append(imp / cost(t))
    top = max(ratios)
    return next(t for t, r in enumerate(ratios, 1) if r >= top * (1 - cat.RATIO_RTOL))


def observed(rng, d, nodes, k):
    """An Agreement fed a random last update and delta through begin/seen/end, with every
    case of Delta_j / u_j: equal (1), alone (1/n), cancelled (absent: 0), opposite, twice,
    u_j = 0; and the same Agreement through np_backend.observe."""
    m = int(rng.integers(0, min(k, d) + 1))
    idx = np.sort(rng.choice(d, m, replace=False)).astype(np.int64)
    u = rng.normal(size=m).astype(np.float32)
    u[rng.random(m) < 0.1] = 0.0
    case = rng.integers(0, 6, m)
    delta = np.zeros(d)
    delta[idx] = np.select([case == 0, case == 1, case == 2, case == 3, case == 4],
                           [u, u / nodes, 0.0, -u, 2 * u], rng.random(m) * u)
    extra = rng.choice(d, min(d, 5), replace=False)           # entries only the others sent
    delta[extra] = np.where(np.isin(extra, idx), delta[extra], rng.normal(size=extra.shape[0]))
    ag = catavg.Agreement(k, nodes, d)
    ag.begin(idx, u, m)
    for j in np.flatnonzero(delta):
        ag.seen(int(j), float(delta[j]))
    ag.end()
    ag2 = catavg.Agreement(k, nodes, d)
    nb.observe(ag2, idx, u, delta)
    assert ag2.n == ag.n == m
    assert list(ag2.idx[:m]) == list(ag.idx[:m]) and list(ag2.w[:m]) == list(ag.w[:m])
    assert all(0.0 <= w <= 1.0 for w in ag.w[:m])
    return ag


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(KINDS), d=st.integers(1, 200),
       scheme=st.sampled_from([SCHEME_S, SCHEME_SQ]), prof=st.sampled_from([PACKET, PAYLOAD, AFFINE]),
       nodes=st.sampled_from([1, 2, 4, 16]))
def test_catavg_equals_brute_force_and_numpy(seed, kind, d, scheme, prof, nodes):
    rng = np.random.default_rng(seed)
    g = gradient(kind, d, rng)
    ga = as_array(g)
    cm = CostModel(prof, d, scheme)
    k = int(rng.integers(1, d + 1))
    rule = cat.Rule("catavg", nodes)
    rule.agreement = observed(rng, d, nodes, k)
    ws = compress.Workspace(d, k)
    n, s1, s2 = topk.select(ga, k, ws.idx)
    ch = rule.choose(scheme, ga, ws.idx, n, s1, s2, cm, cm.t_max, cap=k)
    assert ch.t == brute_force(scheme, ga, ws.idx, n, s2, cm, cm.t_max, rule.agreement.weight)
    rule2 = cat.Rule("catavg", nodes)
    rule2.agreement = rule.agreement
    ch2, order, _, _ = nb.choose(rule2, scheme, g, nb.CostTable(cm), cm.t_max, cap=k)
    assert (ch2.t, ch2.improvement) == (ch.t, ch.improvement)
    assert list(order[: ch.t]) == list(ws.idx[: ch.t])


def test_exact_ties_go_to_the_smaller_t_on_both_backends():
    """A flat gradient with uniform weights: the averaged S+Q improvement is T a^2 / S2, so on
    the packet model every T of a packet ties with its last; S ties the same way."""
    d = 200
    g = np.ones(d, dtype=np.float32)
    for scheme in (SCHEME_S, SCHEME_SQ):
        cm = CostModel(PACKET, d, scheme)
        rule = cat.Rule("catavg", 4)
        rule.agree(d, d)
        ws = compress.Workspace(d, d)
        n, s1, s2 = topk.select(as_array(g), d, ws.idx)
        ch = rule.choose(scheme, as_array(g), ws.idx, n, s1, s2, cm, cm.t_max)
        want = brute_force(scheme, as_array(g), ws.idx, n, s2, cm, cm.t_max, rule.agreement.weight)
        ch2, _, _, _ = nb.choose(rule, scheme, g, nb.CostTable(cm), cm.t_max)
        assert ch.t == want == ch2.t
        same = cat.cat_choose(scheme, as_array(g), ws.idx, n, s1, s2, cm, cm.t_max)
        assert ch.t == same.t           # uniform weights: CAT's argmax


def test_agreement_reads_the_delta_entry_by_entry():
    ag = catavg.Agreement(8, 4, 100)
    assert ag.weight(0) == ag.weight(99) == 1 / 16            # nothing observed: the prior 1/n
    ag.begin([0, 5, 9, 50, 99], [1.0, 2.0, -1.0, 0.0, 4.0], 5)
    for j, v in ((0, 1.0), (3, 7.0), (5, 0.5), (9, 1.0), (50, 3.0), (99, 8.0)):
        ag.seen(j, v)
    ag.end()
    # kept all; a quarter; opposite sign -> 0; u = 0 -> the prior; twice -> clamped to 1
    assert [ag.weight(j) for j in (0, 5, 9, 50, 99)] == [1.0, 0.0625, 0.0, 0.0625, 1.0]
    assert ag.weight(3) == ag.weight(1) == ag.weight(98) == 0.0625   # not sent: the prior
    ag.begin([2, 4], [1.0, 1.0], 2)
    ag.seen(4, 1.0)
    ag.end()
    assert (ag.weight(2), ag.weight(4)) == (0.0, 1.0)          # absent from the delta: cancelled
    ag.forget()
    assert ag.weight(4) == 0.0625
    ag.begin([1], [1.0], 1)
    assert ag.weight(1) == 0.0625                               # half-read: the prior, not the buffer
    with pytest.raises(ValueError, match="node count"):
        catavg.Agreement(4, 0)
    with pytest.raises(ValueError, match="parameter"):
        cat.Rule("catavg", 0)


def test_one_node_chooses_as_cat_and_ss_keeps_omega():
    rng = np.random.default_rng(5)
    d = 300
    for kind in KINDS:
        for scheme in (SCHEME_S, SCHEME_SQ, SCHEME_SS):
            g = gradient(kind, d, rng)
            cm = CostModel(PACKET, d, scheme)
            rule = cat.Rule("catavg", 1)
            rule.agree(d, d)
            idx, vals, ch = nb.compress(g, scheme, rule, nb.CostTable(cm), cm.t_max, 1.0, np.random.default_rng(1))
            nb.observe(rule.agreement, idx, vals, np.bincount(idx, vals, d))   # one node: Delta = u
            assert all(rule.agreement.w[i] == 1.0 for i in range(rule.agreement.n) if vals[i] != 0.0)
            g2 = gradient(kind, d, rng)
            ch_avg, _, _, _ = nb.choose(rule, scheme, g2, nb.CostTable(cm), cm.t_max)
            ch_cat, _, _, _ = nb.choose(cat.Rule("cat"), scheme, g2, nb.CostTable(cm), cm.t_max)
            assert ch_avg.t == ch_cat.t, (kind, scheme)


def test_simulator_one_node_is_cat_and_several_nodes_run():
    from aggregator.lab.engine import SimConfig, simulate
    from aggregator.lab.problem import load_data, make_problem
    data = load_data("synthetic", 400, 60, 10.0, 0, False)
    p1 = make_problem(data, 1, "even", 1e-4, None, 0, 0.5, "spectral")
    a = simulate(p1, SimConfig(scheme="sq", rule="cat", rounds=15), progress=False)
    b = simulate(p1, SimConfig(scheme="sq", rule="catavg", rounds=15), progress=False)
    assert np.array_equal(a.T, b.T) and np.array_equal(a.loss, b.loss)
    assert b.label == "CATavg S+Q"
    p4 = make_problem(data, 4, "even", 1e-4, None, 0, 0.5, "spectral")
    c = simulate(p4, SimConfig(scheme="s", rule="catavg", rounds=15), progress=False)
    assert np.all(np.isfinite(c.loss)) and c.loss[-1] < c.loss[0]
