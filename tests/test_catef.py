"""Rule catavg under error feedback scoring the direction sent against the gradient (edge/catef.py,
the simulator's rule `catef`): its argmax against the definition on both backends, exact ties and
the t_max boundary, without a residual the catavg measure, the scale-safe path, and the
simulator's rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from edge import cat, catef, compress, np_backend as nb, topk
from edge.cat import SCHEME_S, SCHEME_SQ
from edge.cost import CostModel
from tests.test_cat_core import AFFINE, KINDS, PACKET, PAYLOAD, as_array, gradient
from tests.test_catavg import observed


def definition(scheme, u, h, idx, n, cost, t_max, weight):
    """Every T from scratch: q = C_T(u)'s shape (S: u_j; S+Q: sign u_j), p = sum v h q,
    q2 = sum v q^2, Improvement = p^2 / (q2 ||h||^2) (0 unless p, q2 > 0); the smallest T within
    RATIO_RTOL of the best ratio. Returns (T, improvements)."""
    s2g = math.fsum(float(x) * float(x) for x in h)
    imps = []
    for t in range(1, min(n, t_max) + 1):
        p = q2 = 0.0
        for i in range(t):
            j = idx[i]
            qj = float(u[j]) if scheme == SCHEME_S else (1.0 if u[j] >= 0.0 else -1.0)
            p += weight(j) * float(h[j]) * qj
            q2 += weight(j) * qj * qj
        imps.append(p * p / (q2 * s2g) if p > 0.0 and q2 > 0.0 and s2g > 0.0 else 0.0)
    ratios = [imp / cost(t) for t, imp in enumerate(imps, 1)]
    top = max(ratios)
    return next(t for t, r in enumerate(ratios, 1) if r >= top * (1 - cat.RATIO_RTOL)), imps


def ef_rule(nodes, d, k, rng, grad):
    rule = catef.EFRule(nodes, grad)
    rule.agreement = observed(rng, d, nodes, k)
    return rule


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(KINDS), d=st.integers(1, 200),
       scheme=st.sampled_from([SCHEME_S, SCHEME_SQ]), prof=st.sampled_from([PACKET, PAYLOAD, AFFINE]),
       nodes=st.sampled_from([1, 2, 4, 16]))
def test_catef_equals_the_definition_and_numpy(seed, kind, d, scheme, prof, nodes):
    """u = h + e with a residual of every size (none, as large as h, ten times h): the pure
    kernel's T is the definition's, numpy's T, improvement and candidates are the kernel's bit for
    bit, and every improvement lies in [0, 1]."""
    rng = np.random.default_rng(seed)
    h = gradient(kind, d, rng)
    u = (h + gradient(kind, d, rng) * rng.choice([0.0, 1.0, 10.0])).astype(np.float32)
    ua, ha = as_array(u), as_array(h)
    cm = CostModel(prof, d, scheme)
    k = int(rng.integers(1, d + 1))
    rule = ef_rule(nodes, d, k, rng, ha)
    ws = compress.Workspace(d, k)
    n, s1, s2 = topk.select(ua, k, ws.idx)
    ch = rule.choose(scheme, ua, ws.idx, n, s1, s2, cm, cm.t_max, cap=k)
    t, imps = definition(scheme, ua, ha, ws.idx, n, cm, cm.t_max, rule.agreement.weight)
    assert ch.t == t
    assert ch.improvement == pytest.approx(imps[t - 1], rel=1e-9, abs=1e-300)
    rule2 = catef.EFRule(nodes, np.asarray(ha, dtype=np.float32))
    rule2.agreement = rule.agreement
    ch2, order, _, _ = nb.choose(rule2, scheme, u, nb.CostTable(cm), cm.t_max, cap=k)
    assert (ch2.t, ch2.improvement, ch2.ratio) == (ch.t, ch.improvement, ch.ratio)
    assert list(order[: ch.t]) == list(ws.idx[: ch.t])
    a = order[:k]
    imp = nb.ef_improvements(scheme, u[a].astype(np.float64), h.astype(np.float32)[a].astype(np.float64),
                             nb.weights(rule.agreement, a), float(np.sum(h.astype(np.float32).astype(np.float64) ** 2)))
    assert np.all(imp >= 0.0) and np.all(imp <= 1.0 + 1e-12)


@pytest.mark.parametrize("nodes", [1, 4])
@pytest.mark.parametrize("scheme", [SCHEME_S, SCHEME_SQ])
def test_without_a_residual_it_is_catavg(scheme, nodes):
    """u = h (error feedback's residual at 0): S gives sum v a^2 / S2 and S+Q (sum v a)^2 /
    (S2 sum v), catavg's measures, so the same T on every shape of gradient and agreement."""
    rng = np.random.default_rng(11 + nodes)
    for kind in KINDS:
        d = 150
        g = gradient(kind, d, rng)
        ga = as_array(g)
        cm = CostModel(PACKET, d, scheme)
        plain = cat.Rule("catavg", nodes)
        plain.agreement = observed(rng, d, nodes, d)
        ef = catef.EFRule(nodes, ga)
        ef.agreement = plain.agreement
        ws = compress.Workspace(d, d)
        n, s1, s2 = topk.select(ga, d, ws.idx)
        a = plain.choose(scheme, ga, ws.idx, n, s1, s2, cm, cm.t_max)
        b = ef.choose(scheme, ga, ws.idx, n, s1, s2, cm, cm.t_max)
        assert a.t == b.t, kind
        assert b.improvement == pytest.approx(a.improvement, rel=1e-12, abs=1e-300)
        c, _, _, _ = nb.choose(ef, scheme, g, nb.CostTable(cm), cm.t_max)
        assert (c.t, c.improvement) == (b.t, b.improvement)


@pytest.mark.parametrize("scheme", [SCHEME_S, SCHEME_SQ])
def test_exact_ties_go_to_the_smaller_t_and_t_max_bounds(scheme):
    """A residual that doubles every entry of a flat gradient, priced C(T) = T: every T has the
    same ratio (S: p^2 / q2 = T, S+Q: T^2 / T), so T = 1 on both backends. Priced flat, the
    ratio grows with T: the largest feasible T, t_max, and not t_max + 1 although the gradient has
    more entries; with t_max + 1 allowed, t_max + 1."""
    d = 40
    h = np.ones(d, dtype=np.float32)
    u = 2.0 * h
    ha, ua = as_array(h), as_array(u)
    for cost, t_max, want in ((lambda t: float(t), d, 1), (lambda t: 1.0, 9, 9), (lambda t: 1.0, 10, 10)):
        rule = catef.EFRule(1, ha)
        rule.agree(d, d)
        ws = compress.Workspace(d, d)
        n, s1, s2 = topk.select(ua, d, ws.idx)
        ch = rule.choose(scheme, ua, ws.idx, n, s1, s2, cost, t_max)
        assert ch.t == want == definition(scheme, ua, ha, ws.idx, n, cost, t_max, rule.agreement.weight)[0]
        rule.grad = h
        ch2, _, _, _ = nb.choose(rule, scheme, u, nb.CostTable(cost), t_max)
        assert (ch2.t, ch2.improvement) == (ch.t, ch.improvement)


def test_no_descent_along_any_t_sends_one_entry():
    """A residual that flips every sign of the gradient: no step along the sent direction
    descends, every improvement is 0, and the smallest frame (T = 1) ties with the rest."""
    d = 30
    h = np.linspace(1.0, 2.0, d).astype(np.float32)
    u = (h - 3.0 * h).astype(np.float32)
    for scheme in (SCHEME_S, SCHEME_SQ):
        rule = catef.EFRule(2, h)
        rule.agree(d, d)
        ch, _, _, _ = nb.choose(rule, scheme, u, nb.CostTable(lambda t: 1.0 + t), d)
        assert (ch.t, ch.improvement) == (1, 0.0)
        assert catef.ef_improvement(-1.0, 1.0, 1.0) == catef.ef_improvement(1.0, 0.0, 1.0) == 0.0


def test_scale_safe_path_scores_the_same():
    """A vector and gradient beyond the safe range: the vector is shifted by 2^-e for the sums,
    the gradient not (the measure does not depend on its scale), and a power of two is exact:
    the same T and improvement as the unscaled pair, on both backends, and both arrays given
    back bit for bit."""
    rng = np.random.default_rng(3)
    d = 80
    h = rng.normal(size=d)
    u = h + rng.normal(size=d)
    for scheme in (SCHEME_S, SCHEME_SQ):
        cm = CostModel(PACKET, d, scheme)
        got = []
        for f in (1.0, 2.0 ** 60):
            ha, ua = as_array(h * f), as_array(u * f)
            keep = bytes(ha), bytes(ua)
            rule = catef.EFRule(1, ha)
            rule.agree(d, d)
            res = compress.compress(compress.Workspace(d, d), ua, scheme, rule, cm, cm.t_max, 1.0)
            assert (bytes(ha), bytes(ua)) == keep
            rule2 = catef.EFRule(1, np.asarray(ha))
            rule2.agree(d, d)
            _, _, ch2 = nb.compress(np.asarray(ua), scheme, rule2, nb.CostTable(cm), cm.t_max, 1.0)
            assert (ch2.t, ch2.improvement) == (res.choice.t, res.choice.improvement)
            got.append((res.choice.t, res.choice.improvement))
        assert got[0] == got[1]


def test_simulator_rule_catef():
    """--rule catef: catavg scoring what error feedback sends; refused without error feedback;
    its first round (no residual yet) chooses as catavg; batched = node by node."""
    from aggregator.lab.engine import SimConfig, SimError, simulate
    from aggregator.lab.problem import load_data, make_problem
    data = load_data("synthetic", 400, 60, 10.0, 0, False)
    p4 = make_problem(data, 4, "even", 1e-4, None, 0, 0.5, "spectral")
    with pytest.raises(SimError, match="needs error feedback"):
        simulate(p4, SimConfig(scheme="sq", rule="catef", rounds=2), progress=False)
    a = simulate(p4, SimConfig(scheme="sq", rule="catavg", rounds=12, error_feedback=True), progress=False)
    b = simulate(p4, SimConfig(scheme="sq", rule="catef", rounds=12, error_feedback=True), progress=False)
    c = simulate(p4, SimConfig(scheme="sq", rule="catef", rounds=12, error_feedback=True), progress=False,
                 batched=False)
    assert b.label == "CATef S+Q +EF"
    assert np.array_equal(a.T[0], b.T[0])
    assert np.all(np.isfinite(b.loss)) and b.loss[-1] < b.loss[0]
    for name in ("loss", "T", "improvement", "x_final"):
        assert np.array_equal(getattr(b, name), getattr(c, name)), name


@pytest.mark.parametrize("scheme", [SCHEME_S, SCHEME_SQ])
def test_compress_rows_scores_each_row_against_its_gradient(scheme):
    """Ten rounds of error feedback on seven nodes (tied, flat, zero and out-of-range rows, one
    node without a gradient to score against): compress_rows row by row equal to compress,
    rule state included."""
    from tests.test_batched import PACKET as BPACKET, assert_same, nodes_of, observe_round, tied_rows
    n, d = 7, 64
    rng = np.random.default_rng(9)
    one = nodes_of(scheme, "catavg", d, n, BPACKET)
    batch = nodes_of(scheme, "catavg", d, n, BPACKET)
    for rules in (one[0], batch[0]):  # every node but the last scores as catef
        for k in range(n - 1):
            rules[k] = catef.EFRule(n)
            rules[k].agree(d, d)
    e = np.zeros((n, d), dtype=np.float32)
    for _ in range(10):
        g = tied_rows(n, d, rng)
        gh = g.astype(np.float64) * 0.25
        v = (gh + e).astype(np.float32)
        for k in range(n - 1):
            one[0][k].grad = gh[k]
            batch[0][k].grad = gh[k]
        want = [nb.compress(v[k], scheme, one[0][k], one[1][k], one[2][k], 1.0) for k in range(n)]
        got = nb.compress_rows(v, scheme, batch[0], batch[1], batch[2], [1.0] * n)
        for k in range(n):
            assert_same(want[k], got[k])
            e[k] = v[k]
            e[k][got[k][0]] -= got[k][1]
        observe_round(one[0], batch[0], want, got, d)
    for r1, r2 in zip(one[0], batch[0]):
        assert (r1.calls, r1.last_t) == (r2.calls, r2.last_t)


def test_simulate_cli_takes_catef_with_ef_only(tmp_path, capsys):
    from aggregator.cli import main
    base = ["simulate", "--rows", "200", "--features", "30", "--nodes", "2", "--scheme", "sq", "--rounds", "3",
            "--rule", "catef", "--quiet", "--no-plots", "--out", str(tmp_path / "s")]
    assert main(base) == 2
    err = capsys.readouterr().err.strip()
    assert err == "cat-aggregator: --rule catef scores what error feedback sends: it needs --ef"
    assert main(base + ["--ef"]) == 0
    assert "CATef S+Q +EF: 3 rounds" in capsys.readouterr().out
