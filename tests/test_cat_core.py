"""The CAT core against the paper's statements and against brute force."""

import math
from array import array

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from edge import cat, compress, np_backend as nb, topk
from edge.feedback import Feedback
from edge.compress import ss_headroom
from edge.ss import ss_level
from edge.cat import SCHEME_S, SCHEME_SQ, SCHEME_SS
from edge.cost import CostModel

PACKET = {"kind": "paper", "name": "paper-packet", "default_metric": "bits",
          "paper": {"model": "packet", "fpp_bytes": 8.0, "c1": 128.0, "c0": 64.0, "pmax_bytes": 128.0}}
PAYLOAD = {"kind": "paper", "name": "paper-payload", "default_metric": "bits",
           "paper": {"model": "payload", "fpp_bytes": 8.0, "c1": 1.0, "c0": 0.0, "pmax_bytes": None}}
AFFINE = {"kind": "paper", "name": "paper-affine", "default_metric": "bits",
          "paper": {"model": "affine", "fpp_bytes": 4.0, "c1": 1.0, "c0": 54.0, "pmax_bytes": None}}


def gradient(kind: str, d: int, rng: np.random.Generator) -> np.ndarray:
    """Gradients of the shapes that break selection code: heavy tails, flat, ties, zeros."""
    if kind == "heavy":
        g = rng.standard_t(1.5, d)
    elif kind == "flat":
        g = np.ones(d) * rng.choice([-1.0, 1.0], d)
    elif kind == "ties":
        g = np.round(rng.normal(size=d) * 2.0)
    elif kind == "sparse":
        g = np.zeros(d)
        g[rng.integers(0, d, max(1, d // 50))] = rng.normal(size=max(1, d // 50))
    else:
        g = rng.normal(size=d)
    return g.astype(np.float32)


def as_array(g: np.ndarray) -> array:
    return array("f", g.astype(np.float32).tobytes())


def brute_force(scheme: int, ga: array, idx, n: int, s1: float, s2: float, cost, t_max: int) -> int:
    """The definition: evaluate every feasible T from scratch; the smallest T whose ratio is
    within RATIO_RTOL of the maximum wins (ties are rounding noise; the smaller frame is cheaper)."""
    ratios = [cat.improvement_at(scheme, ga, idx, t, s1, s2)[0] / cost(t)
              for t in range(1, min(n, t_max) + 1)]
    top = max(ratios)
    return next(t for t, r in enumerate(ratios, 1) if r >= top * (1 - cat.RATIO_RTOL))


KINDS = ["heavy", "flat", "ties", "sparse", "normal"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(KINDS), d=st.integers(1, 400),
       scheme=st.sampled_from([SCHEME_S, SCHEME_SQ, SCHEME_SS]),
       prof=st.sampled_from([PACKET, PAYLOAD, AFFINE]))
def test_cat_equals_brute_force_and_numpy(seed, kind, d, scheme, prof):
    rng = np.random.default_rng(seed)
    g = gradient(kind, d, rng)
    ga = as_array(g)
    cm = CostModel(prof, d, scheme)
    k = int(rng.integers(1, d + 1))
    ws = compress.Workspace(d, k)
    n, s1, s2 = topk.select(ga, k, ws.idx)
    ch = cat.cat_choose(scheme, ga, ws.idx, n, s1, s2, cm, cm.t_max, cap=k)
    assert ch.t == brute_force(scheme, ga, ws.idx, n, s1, s2, cm, cm.t_max)
    if scheme == SCHEME_S and cm.affine:
        early = cat.cat_choose(scheme, ga, ws.idx, n, s1, s2, cm, cm.t_max, early_stop=True, cap=k)
        assert early.t == ch.t
    ch2, order, s1b, s2b = nb.cat_choose(scheme, g, nb.CostTable(cm), cm.t_max, cap=k)
    assert (s1b, s2b) == (s1, s2)
    assert (ch2.t, ch2.ns) == (ch.t, ch.ns)
    assert list(order[: ch.t]) == list(ws.idx[: ch.t])


def test_cat_equals_brute_force_on_shipped_profiles():
    from edge import profile
    rng = np.random.default_rng(3)
    names = profile.list_profiles()
    assert len(names) >= 10
    for name in names:
        prof = profile.load(profile.find_profile(name))
        for kind in KINDS:
            d = 300
            g = gradient(kind, d, rng)
            ga = as_array(g)
            for scheme in (SCHEME_S, SCHEME_SQ, SCHEME_SS):
                cm = CostModel(prof, d, scheme)
                if cm.t_max < 1:
                    continue
                ws = compress.Workspace(d, d)
                n, s1, s2 = topk.select(ga, d, ws.idx)
                ch = cat.cat_choose(scheme, ga, ws.idx, n, s1, s2, cm, cm.t_max)
                assert ch.t == brute_force(scheme, ga, ws.idx, n, s1, s2, cm, cm.t_max), (name, kind, scheme)
                assert cm.frame_bytes(ch.t) <= prof["message"]["max_bytes"] if prof["kind"] == "link" else True
                ch2, _, _, _ = nb.cat_choose(scheme, g, nb.CostTable(cm), cm.t_max)
                assert ch2.t == ch.t, (name, kind, scheme)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(KINDS), d=st.integers(1, 2000),
       k=st.integers(1, 300))
def test_selection_kernel_matches_stable_sort(seed, kind, d, k):
    g = gradient(kind, d, np.random.default_rng(seed))
    ga = as_array(g)
    idx = topk.alloc_index(k, d)
    n, s1, s2 = topk.select(ga, k, idx)
    ref = sorted(range(d), key=lambda j: (-abs(float(g[j])), j))[: min(k, d)]
    assert n == min(k, d) and list(idx[:n]) == ref
    assert s1 == pytest.approx(float(np.abs(g.astype(np.float64)).sum()), rel=1e-12)
    assert s2 == pytest.approx(float((g.astype(np.float64) ** 2).sum()), rel=1e-12)
    topk.sort_ascending(idx, n)
    assert list(idx[:n]) == sorted(ref)


def test_selection_rejects_nan_and_inf():
    for bad in (float("nan"), float("inf"), -float("inf")):
        g = array("f", [1.0, 2.0, bad, 3.0])
        with pytest.raises(ValueError, match="entry 2 is not finite"):
            topk.select(g, 2, topk.alloc_index(2, 4))
        with pytest.raises(ValueError, match="entry 2 is not finite"):
            nb.select(np.array(g, dtype=np.float32), 2)


def alpha_curve(g: np.ndarray) -> np.ndarray:
    a = np.sort(np.abs(g.astype(np.float64)))[::-1]
    return np.cumsum(a * a) / np.sum(a * a)


@pytest.mark.parametrize("kind", KINDS)
def test_lemma2_alpha_increasing_concave_above_T_over_d(kind):
    rng = np.random.default_rng(5)
    g = gradient(kind, 500, rng)
    if not np.any(g):
        g[0] = 1.0
    ga = as_array(g)
    idx = topk.alloc_index(500, 500)
    n, s1, s2 = topk.select(ga, 500, idx)
    alpha = np.array([cat.improvement_at(SCHEME_S, ga, idx, t, s1, s2)[0] for t in range(1, n + 1)])
    ext = np.concatenate([[0.0], alpha])
    assert np.all(np.diff(ext) >= -1e-12)                       # increasing
    assert np.all(np.diff(ext, 2) <= 1e-12)                     # concave
    assert np.all(alpha >= np.arange(1, n + 1) / n - 1e-12)     # >= T/d
    assert alpha[-1] == pytest.approx(1.0)
    np.testing.assert_allclose(alpha, alpha_curve(g), rtol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_proposition2_payload_model_gives_T_1_for_S(kind):
    rng = np.random.default_rng(6)
    for d in (10, 784, 5000):
        g = gradient(kind, d, rng)
        cm = CostModel(PAYLOAD, d, SCHEME_S)
        ch, _, _, _ = nb.cat_choose(SCHEME_S, g, nb.CostTable(cm), cm.t_max)
        assert ch.t == 1


@pytest.mark.parametrize("kind", KINDS)
def test_proposition1_packet_model_optimum_at_last_T_of_its_packet_count(kind):
    rng = np.random.default_rng(7)
    for d in (300, 3000):
        g = gradient(kind, d, rng)
        cm = CostModel(PACKET, d, SCHEME_S)
        table = nb.CostTable(cm)
        a64 = np.abs(g.astype(np.float64))
        a = a64[np.argsort(-a64, kind="stable")]
        imp, _ = nb.improvements(SCHEME_S, a, float(a.sum()), float((a * a).sum()))
        costs = table.upto(d)
        ratio = imp / costs
        last = np.append(costs[1:] > costs[:-1], True)  # largest T of each packet count
        assert ratio[last].max() == ratio.max()
        ch, _, _, _ = nb.cat_choose(SCHEME_S, g, table, cm.t_max)
        assert ratio[ch.t - 1] >= ratio.max() * (1 - cat.RATIO_RTOL)


def quadratic_step(scheme: int, g: np.ndarray, lip: float, t: int):
    """One compressed step on F(x) = L||x||^2/2 from x = g/L (so grad F(x) = g)."""
    cm = CostModel(PACKET, g.shape[0], scheme)
    idx, vals, ch = nb.compress(g, scheme, cat.Rule("fixed", t), nb.CostTable(cm), cm.t_max, 1.0 / lip)
    x = g.astype(np.float64) / lip
    x_new = x.copy()
    x_new[idx] -= vals
    f = lambda z: lip * float(z @ z) / 2.0
    return f(x), f(x_new), ch


@pytest.mark.parametrize("t", [1, 5, 50, 200])
def test_lemma1_is_tight_on_quadratic_for_S(t):
    g = gradient("heavy", 200, np.random.default_rng(8)).astype(np.float64)
    lip = 3.0
    f0, f1, ch = quadratic_step(SCHEME_S, g.astype(np.float32), lip, t)
    s2 = float(np.sum(g.astype(np.float32).astype(np.float64) ** 2))
    assert f1 == pytest.approx(f0 - ch.improvement / (2 * lip) * s2, rel=1e-5)


@pytest.mark.parametrize("t", [1, 7, 60, 300])
def test_lemma3_descent_holds_for_SQ_on_logistic_loss(t):
    rng = np.random.default_rng(9)
    A = rng.normal(size=(80, 300)) * (rng.random(300) < 0.2)
    y = rng.choice([-1.0, 1.0], 80)
    lam = 0.01
    lip = float(np.sum(A * A)) / (4 * 80) + lam

    def f(x):
        return float(np.mean(np.logaddexp(0.0, -y * (A @ x)))) + lam / 2 * float(x @ x)

    def grad(x):
        s = -y / (1.0 + np.exp(y * (A @ x)))
        return A.T @ s / 80 + lam * x

    x = rng.normal(size=300) * 0.1
    for _ in range(5):
        g = grad(x).astype(np.float32)
        cm = CostModel(PACKET, 300, SCHEME_SQ)
        idx, vals, ch = nb.compress(g, SCHEME_SQ, cat.Rule("fixed", t), nb.CostTable(cm), cm.t_max, 1.0 / lip)
        x_new = x.copy()
        x_new[idx] -= vals
        s2 = float(np.sum(g.astype(np.float64) ** 2))
        assert f(x_new) <= f(x) - ch.improvement / (2 * lip) * s2 * (1 - 1e-4) + 1e-9
        x = x_new


def test_ss_probabilities_sum_to_T_and_estimator_is_unbiased():
    rng = np.random.default_rng(10)
    d, t = 60, 12
    g = gradient("heavy", d, rng)
    ga = as_array(g)
    ws = compress.Workspace(d, d)
    n, s1, s2 = topk.select(ga, d, ws.idx)
    imp, ns = cat.improvement_at(SCHEME_SS, ga, ws.idx, t, s1, s2)
    c = ss_level(ga, ws.idx, ns, s1, t)
    p = np.minimum(1.0, c * np.abs(g.astype(np.float64)))
    assert p.sum() == pytest.approx(t, rel=1e-9)
    assert np.all(p[g != 0] > 0.0) and np.all(p <= 1.0)
    # omega from the formula equals ||g||^2 / E||Q||^2 with these p.
    expect = float(np.sum(g.astype(np.float64) ** 2) / np.sum(g[g != 0].astype(np.float64) ** 2 / p[g != 0]))
    assert imp == pytest.approx(expect, rel=1e-9)
    # Empirical mean of Q = u / (omega * scale) over many draws of the pure sampler.
    cm = CostModel(PACKET, d, SCHEME_SS)
    rule = cat.Rule("fixed", t)
    prng = compress.XorShift32(11)
    draws = 20000
    acc = np.zeros(d)
    counts = 0
    for _ in range(draws):
        res = compress.compress(ws, ga, SCHEME_SS, rule, cm, cm.t_max, 1.0, rng=prng)
        om = res.choice.improvement
        counts += res.n
        for i in range(res.n):
            acc[ws.idx[i]] += ws.vals[i] / om
    mean = acc / draws
    # Standard error per entry is |g_j| sqrt((1-p)/p / draws); allow 5 of them.
    se = np.abs(g) * np.sqrt((1 - p) / np.maximum(p, 1e-12) / draws)
    assert np.all(np.abs(mean - g) <= 5 * se + 1e-6)
    assert counts / draws == pytest.approx(t, rel=0.02)


@pytest.mark.parametrize("scheme", [SCHEME_S, SCHEME_SQ, SCHEME_SS])
def test_error_feedback_loses_no_mass(scheme):
    rng = np.random.default_rng(12)
    d = 120
    cm = CostModel(PACKET, d, scheme)
    fb = Feedback(array("f", bytes(4 * d)))
    ws = compress.Workspace(d, d)
    rule = cat.Rule("cat")
    prng = compress.XorShift32(3)
    fed = np.zeros(d)
    sent = np.zeros(d)
    scale = 0.5
    for _ in range(30):
        g = gradient("heavy", d, rng)
        fed += g.astype(np.float64) * scale
        fb.add(as_array(g), scale)
        res = compress.compress(ws, fb.e, scheme, rule, cm, cm.t_max, 1.0, rng=prng)
        fb.store(ws, res)
        for i in range(res.n):
            sent[ws.idx[i]] += ws.vals[i]
    resid = np.array(fb.e, dtype=np.float64)
    np.testing.assert_allclose(resid + sent, fed, rtol=1e-4, atol=1e-4 * np.abs(fed).max())


def test_baseline_rules():
    rng = np.random.default_rng(13)
    d = 1000
    g = gradient("heavy", d, rng)
    ga = as_array(g)
    cm = CostModel(PACKET, d, SCHEME_SQ)
    ws = compress.Workspace(d, d)
    res = compress.compress(ws, ga, SCHEME_SQ, cat.Rule("alistarh"), cm, cm.t_max, 1.0)
    a = np.sort(np.abs(g.astype(np.float64)))[::-1]
    a1 = np.cumsum(a)
    expect = int(np.flatnonzero(a1 >= np.sqrt(np.sum(a * a)))[0]) + 1
    assert res.n == expect
    idx, vals, ch = nb.compress(g, SCHEME_SQ, cat.Rule("alistarh"), nb.CostTable(cm), cm.t_max, 1.0)
    assert ch.t == expect and list(idx) == list(ws.idx[: res.n])
    res = compress.compress(ws, ga, SCHEME_S, cat.Rule("fixed", 17), cm, cm.t_max, 1.0)
    assert res.n == 17
    hyb = cat.Rule("hybrid", 3)
    ts = []
    for r in range(7):
        g = gradient("heavy", d, rng)
        ts.append(compress.compress(ws, as_array(g), SCHEME_S, hyb, cm, cm.t_max, 1.0).n)
    assert ts[1] == ts[0] and ts[2] == ts[0] and ts[4] == ts[3] and ts[5] == ts[3]


def test_cap_binding_reported():
    g = gradient("flat", 500, np.random.default_rng(14))
    ga = as_array(g)
    cm = CostModel(AFFINE, 500, SCHEME_S)  # flat gradient: alpha = T/d, affine cost -> T = d
    ws = compress.Workspace(500, 64)
    res = compress.compress(ws, ga, SCHEME_S, cat.Rule("cat"), cm, cm.t_max, 1.0)
    assert res.n == 64 and res.choice.cap_binding
    ws = compress.Workspace(500, 500)
    res = compress.compress(ws, ga, SCHEME_S, cat.Rule("cat"), cm, cm.t_max, 1.0)
    assert res.n == 500 and not res.choice.cap_binding


def test_numpy_backend_agrees_on_values():
    rng = np.random.default_rng(15)
    for d in (7, 300, 5000):
        g = gradient("heavy", d, rng)
        for scheme in (SCHEME_S, SCHEME_SQ):
            cm = CostModel(PACKET, d, scheme)
            ws = compress.Workspace(d, d)
            res = compress.compress(ws, as_array(g), scheme, cat.Rule("cat"), cm, cm.t_max, 0.3)
            idx, vals, _ = nb.compress(g, scheme, cat.Rule("cat"), nb.CostTable(cm), cm.t_max, 0.3)
            assert list(idx) == list(ws.idx[: res.n])
            assert np.array_equal(vals, np.array(ws.vals[: res.n], dtype=np.float32))


def test_numpy_backend_exact_without_cap_on_large_d():
    """The adaptive candidate growth finds the same T as a full sort."""
    rng = np.random.default_rng(16)
    d = 200_000
    g = gradient("heavy", d, rng)
    for scheme in (SCHEME_S, SCHEME_SQ, SCHEME_SS):
        cm = CostModel(PACKET, d, scheme)
        table = nb.CostTable(cm)
        ch, _, s1, s2 = nb.cat_choose(scheme, g, table, cm.t_max)
        a64 = np.abs(g.astype(np.float64))
        a = a64[np.argsort(-a64, kind="stable")]
        imp, _ = nb.improvements(scheme, a, s1, s2)
        full = int(np.argmax(imp / table.upto(d))) + 1
        assert ch.t == full


def test_t_max_follows_the_round_number_in_the_header():
    """Round 24 grows the header by a byte: a frame at the old t_max would no longer fit."""
    from edge import profile
    prof = profile.load_profile("lorawan-eu868-sf7")
    cm = CostModel(prof, 5000, SCHEME_S, rnd=0)
    t0 = cm.t_max
    assert cm.frame_bytes(t0) <= prof["message"]["max_bytes"] < cm.frame_bytes(t0 + 1)
    cm.set_round(24)
    assert cm.frame_bytes(cm.t_max) <= prof["message"]["max_bytes"]
    assert cm.t_max <= t0


def test_ss_never_draws_more_than_the_link_takes():
    from edge import profile
    prof = profile.load_profile("ieee802154-6lowpan-coap")
    d = 2000
    g = gradient("flat", d, np.random.default_rng(20))
    cm = CostModel(prof, d, SCHEME_SS)
    ws = compress.Workspace(d, d)
    prng = compress.XorShift32(5)
    for _ in range(50):
        res = compress.compress(ws, as_array(g), SCHEME_SS, cat.Rule("cat"), cm, cm.t_max, 1.0, rng=prng)
        assert res.n <= cm.t_max


@pytest.mark.parametrize("d,k", [(1, 1), (40, 40), (40, 1000), (5000, 128), (5000, 4999), (10**6, 10**4)])
def test_ss_headroom_is_what_the_workspace_holds_and_the_gateway_accepts(tmp_path, d, k):
    """One formula (edge.compress.ss_headroom) sizes an SS draw's buffers on the edge and bounds T on
    the gateway (pipeline.t_cap); a draw of T = K entries on average stays 4 standard
    deviations (sqrt(K)) inside the buffers."""
    from aggregator.gateway.config import parse_job
    from aggregator.gateway.pipeline import t_cap

    kk = min(d, k)
    ws = compress.Workspace(d, k)
    assert ws.cap == kk + ss_headroom(kk) > kk
    assert compress.Workspace(d, k, extra=0).cap == kk      # S and S+Q: no headroom
    raw = {"job": {"id": 1, "rounds": 10}, "model": {"kind": "logistic", "features": d, "L": 1.0},
           "training": {"scheme": "ss", "rule": "cat", "k_cap": k},
           "cost": {"profile": "ieee802154-6lowpan-coap"}, "rounds": {"quorum": 1.0, "deadline_s": 10.0},
           "nodes": {"1": "11" * 32}, "downlink": {"key": "22" * 32}, "state": {"dir": str(tmp_path)}}
    assert t_cap(parse_job(raw)) == min(d, ws.cap)
    assert kk + 4.0 * kk ** 0.5 < ws.cap


# ----------------------------------------------------------------------------- one SS rule
def test_ss_one_rule_on_both_backends():
    """The pure edge and numpy choose the same SS T: on an all-equal gradient with the whole
    gradient within the link (t_max = d: a draw can never exceed it, so no budget cut) and on
    gradients whose T the link's largest frame bounds (room left for the draw's spread)."""
    from edge.ss import ss_budget, ss_t_max
    d = 200
    g = np.ones(d, dtype=np.float32)
    cm = CostModel(PACKET, d, SCHEME_SS)
    ws = compress.Workspace(d, d)
    res = compress.compress(ws, as_array(g), SCHEME_SS, cat.Rule("cat"), cm, cm.t_max, 1.0,
                            rng=compress.XorShift32(7))
    _, _, ch = nb.compress(g, SCHEME_SS, cat.Rule("cat"), nb.CostTable(cm), cm.t_max, 1.0,
                           rng=np.random.default_rng(7))
    assert cm.t_max >= d and res.choice.t == ch.t
    assert ss_t_max(d, d) == d and ss_t_max(d - 1, d) == ss_budget(d - 1) < d - 1
    rng = np.random.default_rng(3)
    for t_max in (10, 57, 150):
        for kind in KINDS:
            g = gradient(kind, d, rng)
            ws = compress.Workspace(d, d)
            res = compress.compress(ws, as_array(g), SCHEME_SS, cat.Rule("cat"), cm, t_max, 1.0,
                                    rng=compress.XorShift32(1))
            _, _, ch = nb.compress(g, SCHEME_SS, cat.Rule("cat"), nb.CostTable(cm), t_max, 1.0,
                                   rng=np.random.default_rng(1))
            assert res.choice.t == ch.t <= ss_budget(t_max), (t_max, kind)
            assert res.n <= t_max


def test_numpy_ss_draws_stay_within_the_link():
    """Over many draws on a link-bounded T the numpy sampler, like the edge's, never returns
    more entries than the link's largest frame takes."""
    d, t_max = 400, 40
    cm = CostModel(PACKET, d, SCHEME_SS)
    g = np.ones(d, dtype=np.float32)
    rng = np.random.default_rng(0)
    sizes = [nb.compress(g, SCHEME_SS, cat.Rule("fixed", 36), nb.CostTable(cm), t_max, 1.0, rng=rng)[0].shape[0]
             for _ in range(300)]
    assert max(sizes) <= t_max and min(sizes) < 36 < max(sizes)   # the draw does vary


def test_the_simulator_refuses_a_frame_over_the_link_instead_of_pricing_it():
    from aggregator.lab.pricing import FrameRefused, NodeCost, link_models, profile_dict
    prof = profile_dict("ieee802154-6lowpan-udp")  # one datagram: at most 1,232 B
    m = link_models(prof, 4000, SCHEME_S, "joules", 0, True, 1, 1)[0]
    cost = NodeCost(prof, m)
    assert cost(m.t_max)[0] <= prof["message"]["max_bytes"]
    with pytest.raises(FrameRefused, match="would refuse"):
        cost(m.t_max + 1)


# ----------------------------------------------------------------------------- extreme values
@pytest.mark.parametrize("factor", [1e160, 1e-160, 1e-310, 3e38, 1e-44])
@pytest.mark.parametrize("scheme", [SCHEME_S, SCHEME_SQ, SCHEME_SS])
def test_extreme_magnitudes_choose_as_ordinary_ones_and_g_comes_back(factor, scheme):
    """Sums of squares of entries near 1e160 overflow and of subnormals vanish; compress works
    on g * 2^-e instead, so T is the one of the same gradient at ordinary scale, the values
    are g times the step, and g itself is given back unchanged."""
    d = 300
    base = gradient("heavy", d, np.random.default_rng(9)).astype(np.float64)
    base /= np.max(np.abs(base))                       # max |g| = 1
    g = base * factor
    cm = CostModel(PACKET, d, scheme)
    ref = compress.compress(compress.Workspace(d, d), array("d", base), scheme, cat.Rule("cat"), cm, 150,
                            1.0, rng=compress.XorShift32(5))
    ga = array("d", g)
    before = bytes(ga)
    ws = compress.Workspace(d, d)
    res = compress.compress(ws, ga, scheme, cat.Rule("cat"), cm, 150, 1.0 / factor, rng=compress.XorShift32(5))
    # factor is not a power of two, so the entries round differently: equal up to that
    assert res.choice.t == ref.choice.t and math.isclose(res.choice.improvement, ref.choice.improvement, rel_tol=1e-9)
    assert bytes(ga) == before                          # given back bit for bit
    ch, _, _, _ = nb.choose(cat.Rule("cat"), scheme, g, nb.CostTable(cm), 150)
    assert ch.t == ref.choice.t
    if scheme == SCHEME_S:                               # the step-scaled values are g / factor
        got = np.array(ws.vals[: res.n])
        want = g[np.array(ws.idx[: res.n])] * (1.0 / factor)
        np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-6)


def test_ordinary_gradients_take_the_fast_path():
    assert topk.exponent(0.0) == 0 and topk.exponent(1.0) == 0
    assert topk.exponent(2.0 ** 40) == 0 and topk.exponent(2.0 ** 40 * 1.0000001) == 41
    assert topk.exponent(2.0 ** -40) == 0 and topk.exponent(2.0 ** -40 * 0.9999999) == -40


def test_an_empty_gradient_is_a_clear_error_on_both_backends():
    cm = CostModel(PACKET, 8, SCHEME_SQ)
    with pytest.raises(ValueError, match="empty gradient"):
        compress.compress(compress.Workspace(8, 8), array("f"), SCHEME_SQ, cat.Rule("cat"), cm, 8, 1.0)
    for rule in ("cat", "alistarh", "fixed"):
        with pytest.raises(ValueError, match="empty gradient"):
            nb.compress(np.zeros(0, dtype=np.float32), SCHEME_SQ, cat.Rule(rule, 3), nb.CostTable(cm), 8, 1.0)
        with pytest.raises(ValueError, match="empty gradient"):
            nb.choose(cat.Rule(rule, 3), SCHEME_SQ, np.zeros(0), nb.CostTable(cm), 8)
