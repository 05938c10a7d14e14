"""numpy backend for CPython edges and the simulator: the same decisions as the pure kernel.

Same T, same indices (ties to the lower index), same values as edge.topk / edge.cat /
edge.compress on CPython: prefix sums and S1, S2 are accumulated sequentially (np.cumsum),
like the pure loops, so the ratios are bit-identical. Selection uses argpartition, so it is
O(d) rather than O(d log K), and when the caller allows K = d (no RAM cap) the candidate
set grows geometrically only until a bound proves no larger T can win: every improvement
measure is <= 1 (alpha trivially, beta by Cauchy-Schwarz, omega since E||Q||^2 >= ||g||^2),
and C is nondecreasing, so no T > K beats the best ratio once best >= 1 / C(K + 1).

CPython only (imports numpy); the modules the boards run never import it.
"""

import math

import numpy as np

from edge.cat import (RATIO_RTOL, RULE_ALISTARH, RULE_CAT, RULE_CATAVG, RULE_FIXED, RULE_HYBRID, RULE_IDENTITY,
                      SCHEME_IDENTITY, SCHEME_S, SCHEME_SQ, SCHEME_SS, Choice)
from edge.compress import ss_headroom
from edge.errtext import TEXT
from edge.ss import ss_t_max
from edge.topk import exponent


def select(g, k):
    """Indices of the k largest |g| (ties: lower index first), best first; and S1, S2.

    S1, S2 are sequential sums (bit-identical to edge.topk.select on CPython).
    """
    g = np.asarray(g)
    d = g.shape[0]
    if not np.all(np.isfinite(g)):
        j = int(np.flatnonzero(~np.isfinite(g))[0])
        raise ValueError("gradient entry %d is not finite (%r)" % (j, float(g[j])))
    a64 = np.abs(g.astype(np.float64))
    s1 = float(np.cumsum(a64)[-1]) if d else 0.0
    s2 = float(np.cumsum(a64 * a64)[-1]) if d else 0.0
    return _top(a64, k), s1, s2


def _top(a, k):
    d = a.shape[0]
    k = min(k, d)
    if k >= d:
        return np.argsort(-a, kind="stable")
    part = np.argpartition(-a, k - 1)[:k]
    thr = a[part].min()
    greater = np.flatnonzero(a > thr)
    ties = np.flatnonzero(a == thr)[: k - greater.shape[0]]
    cand = np.sort(np.concatenate([greater, ties]))
    return cand[np.argsort(-a[cand], kind="stable")]


class CostTable:
    """C(T) for T = 1..n as a float64 array, computed once per cost model and extended lazily.

    The cost depends only on T (not on the gradient), so a simulation pays it once.
    """

    def __init__(self, cost):
        self.cost = cost
        self.values = np.zeros(0)
        self.version = getattr(cost, "version", 0)

    def upto(self, n):
        version = getattr(self.cost, "version", 0)
        if version != self.version:  # e.g. the round number grew a byte in the header
            self.values = np.zeros(0)
            self.version = version
        have = self.values.shape[0]
        if n > have:
            new = max(n, 2 * have)
            cost = self.cost
            ext = np.fromiter((cost(t) for t in range(have + 1, new + 1)), dtype=np.float64,
                              count=new - have)
            self.values = np.concatenate([self.values, ext])
        return self.values[:n]


def improvements(scheme, a, s1, s2):
    """Improvement(T) for T = 1..len(a), a = candidate magnitudes by decreasing size.

    Returns (imp, ns) where ns[T-1] is the SS water-filling count n_s(T) (zeros otherwise).
    The arithmetic follows edge.cat.Scan operation by operation.
    """
    n = a.shape[0]
    t = np.arange(1, n + 1, dtype=np.float64)
    ns = np.zeros(n, dtype=np.int64)
    if s2 <= 0.0:
        return np.zeros(n), ns
    if scheme == SCHEME_S:
        return np.cumsum(a * a) / s2, ns
    if scheme == SCHEME_SQ:
        a1 = np.cumsum(a)
        return a1 * a1 / (t * s2), ns
    if scheme == SCHEME_SS:
        return _omega(a, s1, s2, ns)
    return np.ones(n), ns


def _omega(a, s1, s2, ns_out):
    n = a.shape[0]
    a1 = np.concatenate([[0.0], np.cumsum(a)])        # A1(m), m = 0..n
    a2 = np.concatenate([[0.0], np.cumsum(a * a)])
    m = np.arange(n, dtype=np.int64)
    r = np.maximum(s1 - a1[:n], 0.0)                  # R_m = S1 - A1(m), clamped like the pure loop
    # t_m: smallest T with (T - m) * a[m] > R_m  (entry m+1 saturates from then on).
    big = np.iinfo(np.int64).max // 4
    pos = a > 0.0
    tm = np.full(n, big, dtype=np.int64)
    guess = np.floor(r[pos] / a[pos]).astype(np.int64) + m[pos] + 1
    ap, rp, mp = a[pos], r[pos], m[pos]
    for _ in range(4):  # fix floating-point off-by-ones against the exact float predicate
        lower = ((guess - 1 - mp) * ap > rp) & (guess - 1 > mp)
        guess = np.where(lower, guess - 1, guess)
        higher = ~((guess - mp) * ap > rp)
        guess = np.where(higher, guess + 1, guess)
    tm[pos] = guess
    reach = np.maximum.accumulate(tm)
    t_int = np.arange(1, n + 1, dtype=np.int64)
    ns = np.minimum(np.searchsorted(reach, t_int, side="right"), t_int - 1)
    ns_out[:] = ns
    rr = np.maximum(s1 - a1[ns], 0.0)
    e = a2[ns] + rr * rr / (t_int - ns)
    with np.errstate(divide="ignore", invalid="ignore"):
        imp = np.where(e <= 0.0, 1.0, s2 / e)
    return imp, ns_out


def weights(agreement, order):
    """Rule catavg's v = w^2 for the candidates `order` (edge.catavg.Agreement.weight on numpy)."""
    p = agreement.prior
    v = np.full(order.shape[0], p * p)
    m = agreement.n
    if m and not agreement.reading:
        idx = np.asarray(agreement.idx[:m], dtype=np.int64)
        w = np.asarray(agreement.w[:m], dtype=np.float64)
        pos = np.minimum(np.searchsorted(idx, order), m - 1)
        hit = idx[pos] == order
        v[hit] = w[pos[hit]] * w[pos[hit]]
    return v


def observe(agreement, idx, vals, delta):
    """edge.catavg.Agreement's begin / seen / end on numpy: the node's last update (idx
    ascending, float32 vals) against the dense averaged update `delta` it synced."""
    m = min(int(idx.shape[0]), len(agreement.idx))
    u = np.asarray(vals[:m], dtype=np.float32).astype(np.float64)
    dv = np.asarray(delta, dtype=np.float64)[idx[:m]]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(u != 0.0, dv / np.where(u != 0.0, u, 1.0), agreement.prior)
    _hold(agreement, idx[:m], np.clip(r, 0.0, 1.0))


def _hold(agreement, idx, w):
    """The Agreement holds w at the ascending indices idx (its first len(idx) entries), read."""
    m = idx.shape[0]
    np.frombuffer(agreement.idx, dtype=np.dtype(agreement.idx.typecode))[:m] = idx
    np.frombuffer(agreement.w, dtype=np.float32)[:m] = w
    agreement.n = m
    agreement.reading = False


def noise_prior(agreement, g, m1, m2, rows, lamx, nodes):
    """edge.noiseprior.compute on numpy: the Agreement's weights at the K candidates of g (the
    row the node compresses) from m1, m2 = the means over its `rows` rows of c a and (c a)^2
    (every entry: aggregator.lab.datasets.grad_moments_np) and lamx = lam x."""
    g = np.asarray(g)
    k = min(len(agreement.idx), g.shape[0])
    idx = np.sort(_top(np.abs(g.astype(np.float64)), k))
    mean = np.asarray(m1, dtype=np.float64)[idx]
    var = (np.asarray(m2, dtype=np.float64)[idx] - mean * mean) / rows
    _hold(agreement, idx, noise_weights(var, mean + np.asarray(lamx, dtype=np.float64)[idx], nodes))


def noise_weights(var, g, nodes):
    """edge.noiseprior.weight entry by entry: 1/n + (1 - 1/n) max(0, 1 - var / g^2), 1 where
    var <= 0, 1/n where g = 0 with noise or var / g^2 is not a number."""
    p = 1.0 / nodes
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        g2 = g * g
        r = var / g2
        rho = np.where((g2 > 0.0) & (r < 1.0), 1.0 - r, 0.0)
        return np.where(var <= 0.0, 1.0, p + (1.0 - p) * rho)


def weighted_improvements(scheme, a, v, s2):
    """edge.catavg.improvement for T = 1..len(a), operation by operation (sequential cumsums)."""
    n = a.shape[0]
    if scheme == SCHEME_S:
        aw = np.cumsum(v * (a * a))
        return aw / s2 if s2 > 0.0 else np.zeros(n)
    aw = np.cumsum(v * a)
    vw = np.cumsum(v)
    with np.errstate(divide="ignore", invalid="ignore"):
        imp = aw * aw / (vw * s2)
    return np.where((vw > 0.0) & (s2 > 0.0), imp, 0.0)


def ef_improvements(scheme, u, gh, v, s2g):
    """edge.catef.ef_improvement for T = 1..len(u), operation by operation (sequential
    cumsums): u the candidates' signed entries of the compressed vector (error feedback's
    step-scaled gradient + residual, by decreasing |u|), gh the step-scaled gradient at them,
    v catavg's w^2, s2g = ||gh||^2 over every entry."""
    return _ef_rows(scheme, u[None, :], gh[None, :], v[None, :], np.array([s2g]))[0]


def best_ratio(imp, costs):
    """(T*, ratio at T*, max ratio) with edge.cat's tie rule (first T within RATIO_RTOL of the max)."""
    ratio = imp / costs
    top = float(ratio.max())
    t = int(np.argmax(ratio >= top * (1.0 - RATIO_RTOL))) + 1
    return t, float(ratio[t - 1]), top


def cat_choose(scheme, g, table, t_max, cap=None, start_k=1024):
    """Exact CAT argmax over 1 <= T <= min(cap, t_max); returns (Choice, order, S1, S2).

    order: candidate indices by decreasing |g| (at least the chosen T of them).
    """
    return _cat_choose(scheme, _safe(g)[0], table, t_max, cap, start_k)


def _cat_choose(scheme, g, table, t_max, cap=None, start_k=1024, agreement=None, grad=None):
    """cat_choose on a gradient _safe has checked and scaled. With `agreement` (rule catavg,
    S and S+Q) the improvements are those of the averaged update; with `grad` too (error
    feedback: g is then the vector compressed, grad the step-scaled gradient) those of the
    direction sent, scored against grad (edge.catef.ef_improvement).
    The K growth is the same, since both are <= 1 too."""
    d = g.shape[0]
    top = min(d, t_max, cap if cap is not None else d)
    if top < 1:
        raise ValueError("CAT: no feasible T (the smallest frame exceeds the link's largest message)")
    a64 = np.abs(g.astype(np.float64))
    s1 = float(np.cumsum(a64)[-1])
    s2 = float(np.cumsum(a64 * a64)[-1])
    if grad is not None:
        gh = np.asarray(grad, dtype=np.float64)
        s2g = float(np.cumsum(gh * gh)[-1])
    k = min(top, start_k)
    while True:
        order = _top(a64, k)
        if agreement is None:
            imp, ns = improvements(scheme, a64[order], s1, s2)
        elif grad is not None:
            imp, ns = ef_improvements(scheme, g[order].astype(np.float64), gh[order], weights(agreement, order),
                                      s2g), None
        else:
            imp, ns = weighted_improvements(scheme, a64[order], weights(agreement, order), s2), None
        costs = table.upto(k)
        t, r, best = best_ratio(imp, costs)
        if k >= top or best >= 1.0 / table.upto(k + 1)[k]:
            break
        k = min(top, 4 * k)
    binding = cap is not None and t == cap and cap < min(d, t_max)
    return (Choice(t, float(imp[t - 1]), r, float(costs[t - 1]), binding, 0 if ns is None else int(ns[t - 1])),
            order, s1, s2)


def _safe(g):
    """(g as an array scaled by 2^-e, e) as edge.topk.exponent says (the sums of squares of a
    float64 gradient near 1e160 would overflow); a clear error for an empty gradient or a
    non-finite entry. One pass over g per compress or choose."""
    g = np.asarray(g)
    if g.shape[0] == 0:
        raise ValueError("CAT: empty gradient")
    amax = float(np.max(np.abs(g)))
    if not math.isfinite(amax):
        select(g, 1)  # raises with the offending index
    e = exponent(amax)
    return (np.ldexp(g, -e).astype(g.dtype) if e else g), e


def alistarh_t(a, s2):
    """Smallest T with A1(T) >= ||g||_2 given sorted magnitudes a (len(a) if never)."""
    a1 = np.cumsum(a)
    hit = np.flatnonzero(a1 >= s2 ** 0.5)
    return int(hit[0]) + 1 if hit.size else a.shape[0]


def choose(rule, scheme, g, table, t_max, cap=None):
    """Mirror of edge.cat.Rule.choose on numpy: returns (Choice, order, S1, S2)."""
    return _choose(rule, scheme, _safe(g)[0], table, t_max, cap)


def _grad(rule):
    """The step-scaled gradient an edge.catef.EFRule scores the direction sent against (None
    for the other rules). Unscaled: the measure does not depend on its scale."""
    grad = getattr(rule, "grad", None)
    return None if grad is None else np.asarray(grad, dtype=np.float64)


def _choose(rule, scheme, g, table, t_max, cap=None):
    """choose on a gradient _safe has checked and scaled."""
    if _scans(rule, scheme):  # counts the call
        ag = _agreement(rule, scheme)
        ch, order, s1, s2 = _cat_choose(scheme, g, table, t_max, cap, agreement=ag,
                                        grad=None if ag is None else _grad(rule))
        rule.last_t = ch.t
        return ch, order, s1, s2
    kind = rule.kind
    rule.calls += 1
    d = g.shape[0]
    top = min(d, t_max, cap if cap is not None else d)
    if kind == RULE_IDENTITY:
        raise ValueError("identity rule sends the full gradient; no T to choose")
    if kind == RULE_ALISTARH:
        k = min(top, 1024)
        while True:
            order, s1, s2 = select(g, k)
            a = np.abs(g[order].astype(np.float64))
            t = alistarh_t(a, s2)
            if t < k or k >= top:
                break
            k = min(top, 4 * k)
    else:
        t = _fixed_t(rule, top)
        order, s1, s2 = select(g, t)
        a = np.abs(g[order].astype(np.float64))
    t = min(t, top)
    imp, ns = improvements(scheme, a[:t], s1, s2)
    c = float(table.upto(t)[t - 1])
    return Choice(t, float(imp[t - 1]), float(imp[t - 1]) / c, c, False, int(ns[t - 1])), order, s1, s2


def _round(vals, fmt):
    return vals.astype(np.float16 if fmt else np.float32).astype(np.float32)


def compress(g, scheme, rule, table, t_max, scale, rng=None, fmt=0, cap=None):
    """Step-scaled sparse update (indices ascending int64, values float32) and the Choice.

    Same semantics as edge.compress.compress; SS draws with a numpy Generator `rng`.
    """
    g = np.asarray(g, dtype=np.float32)
    if scheme == SCHEME_IDENTITY:
        return np.arange(g.shape[0]), _round(g.astype(np.float64) * scale, fmt), None
    g, e = _safe(g)                                 # the edge's scale-safe sums (edge.topk)
    if e:
        scale = math.ldexp(scale, e)
    ch, order, s1, _ = _choose(rule, scheme, g, table, _scheme_t_max(scheme, t_max, g.shape[0]), cap)
    return _values(g, scheme, ch, order, s1, scale, rng, fmt, cap, t_max)


def _scheme_t_max(scheme, t_max, d):
    """The largest T the rule may choose: the link's, or under SS the edge's rule (edge.ss)."""
    return ss_t_max(t_max, d) if scheme == SCHEME_SS else t_max


def _values(g, scheme, ch, order, s1, scale, rng, fmt, cap, link_max):
    """compress's update for the chosen T: indices ascending, step-scaled values rounded to
    the wire's format (S: g_j, S+Q: +-m, SS: the draw)."""
    t = ch.t
    if scheme == SCHEME_S:
        idx = np.sort(order[:t])
        return idx, _round(g[idx].astype(np.float64) * scale, fmt), ch
    if scheme == SCHEME_SQ:
        a1 = float(np.cumsum(np.abs(g[order[:t]].astype(np.float64)))[-1])
        m = _round(np.array([a1 * scale / t]), fmt)[0]
        idx = np.sort(order[:t])
        return idx, np.where(g[idx] >= 0.0, m, -m).astype(np.float32), ch
    if scheme == SCHEME_SS:
        return _ss_values(g, ch, order, s1, scale, rng, fmt, cap, link_max)
    raise ValueError("unknown scheme %r" % scheme)


def _ss_values(g, ch, order, s1, scale, rng, fmt, cap, link_max):
    """SS's draw at the chosen T (water level n_s, probabilities p_j, rescaled values)."""
    if rng is None:
        raise ValueError("SS needs a random source (numpy Generator)")
    t = ch.t
    a64 = np.abs(g.astype(np.float64))
    ns = ch.ns
    a1s = float(np.cumsum(a64[order[:ns]])[-1]) if ns else 0.0
    r = s1 - a1s
    c = (t - ns) / r if r > 0.0 else 0.0
    p = np.minimum(1.0, c * a64)
    if ns and c == 0.0:
        p = (a64 >= a64[order[ns - 1]]).astype(np.float64)
    # As edge.ss.sample: the drawn count never exceeds what the link (and, with a K cap,
    # the edge's buffer of K + ss_headroom(K)) takes; redrawn up to 8 times.
    limit = link_max if cap is None else min(link_max, cap + ss_headroom(cap))
    for _ in range(8):
        keep = (p >= 1.0) | ((p > 0.0) & (rng.random(p.shape[0]) < p))
        idx = np.flatnonzero(keep)
        if idx.shape[0] <= limit:
            break
    else:
        raise ValueError(TEXT[154] % limit)  # edge.ss.sample's
    vals = g[idx].astype(np.float64) / p[idx] * (ch.improvement * scale)
    return idx, _round(vals, fmt), ch


# ----------------------------------------------------------------------------------------
# Every node of a simulated round at once. Row k of a (nodes, d) array gets exactly what
# compress gives it alone (same T, indices, values, ties and rule state): the per-row sums
# are the same sequential cumsums, argpartition's threshold and the tie rule are those of
# _top, and the scan's arithmetic is elementwise. One numpy call per step instead of one per
# node is what pays when a round has many nodes with small gradients.


def compress_rows(rows, scheme, rules, tables, t_maxes, scales, rngs=None, fmt=0, cap=None):
    """[compress(rows[k], scheme, rules[k], tables[k], t_maxes[k], scales[k], rngs[k], fmt,
    cap) for every k], with the selection and the CAT / catavg scan batched across rows."""
    rows = np.asarray(rows, dtype=np.float32)
    n, d = rows.shape
    rngs = [None] * n if rngs is None else rngs
    if scheme == SCHEME_IDENTITY or n <= 1:  # nothing to batch: one row costs less on its own
        return [compress(rows[k], scheme, rules[k], tables[k], t_maxes[k], scales[k], rngs[k], fmt, cap)
                for k in range(n)]
    rows, es = _safe_rows(rows)
    scales = [math.ldexp(s, e) if e else s for s, e in zip(scales, es)]
    limits = [_scheme_t_max(scheme, t, d) for t in t_maxes]
    picks = _choose_rows(rules, scheme, rows, tables, limits, cap)
    if scheme in (SCHEME_S, SCHEME_SQ):
        return _values_rows(rows, scheme, picks, scales, fmt)
    return [_values(rows[k], scheme, ch, order, s1, scales[k], rngs[k], fmt, cap, t_maxes[k])
            for k, (ch, order, s1, _) in enumerate(picks)]


def _values_rows(rows, scheme, picks, scales, fmt):
    """_values for S and S+Q on every row at once: the chosen entries marked in one (rows, d)
    mask read back row-major (each row's indices ascending); S+Q's A1(T) from a sequential
    cumsum of each row's first T magnitudes in the order chosen, as _values sums them."""
    n = rows.shape[0]
    ts = np.array([ch.t for ch, _, _, _ in picks], dtype=np.int64)
    who = np.repeat(np.arange(n), ts)
    cols = np.concatenate([order[:ch.t] for ch, order, _, _ in picks])
    mask = np.zeros(rows.shape, dtype=bool)
    mask[who, cols] = True
    r, c = np.nonzero(mask)
    g = rows[r, c]
    scale = np.array(scales, dtype=np.float64)
    if scheme == SCHEME_S:
        vals = _round(g.astype(np.float64) * scale[r], fmt)
    else:
        first = np.zeros((n, int(ts.max())))
        first[who, np.arange(cols.shape[0]) - np.repeat(np.cumsum(ts) - ts, ts)] = \
            np.abs(rows[who, cols].astype(np.float64))
        a1 = np.cumsum(first, axis=1)[np.arange(n), ts - 1]
        m = _round(a1 * scale / ts, fmt)
        vals = np.where(g >= 0.0, m[r], -m[r]).astype(np.float32)
    cut = np.cumsum(ts)[:-1]
    return [(i, v, ch) for i, v, (ch, _, _, _) in zip(np.split(c, cut), np.split(vals, cut), picks)]


def _safe_rows(rows):
    """_safe for every row: (rows, each row's exponent); a row outside the safe range is
    scaled on its own (rare), a non-finite entry or an empty row raises as _safe does."""
    if rows.shape[1] == 0:
        raise ValueError("CAT: empty gradient")
    amax = np.max(np.abs(rows), axis=1)
    es = [0] * rows.shape[0]
    for k in range(rows.shape[0]):
        a = float(amax[k])
        if not math.isfinite(a):
            select(rows[k], 1)  # raises with the offending index
        es[k] = exponent(a)
    if any(es):
        rows = rows.copy()
        for k, e in enumerate(es):
            if e:
                rows[k] = _safe(rows[k])[0]
    return rows, es


def _scans(rule, scheme):
    """Whether this call of `rule` is a CAT scan (cat, catavg, hybrid on its CAT rounds);
    counts the call if it is (_choose and _choose_rows count the others themselves)."""
    kind = rule.kind
    if kind not in (RULE_CAT, RULE_CATAVG, RULE_HYBRID):
        return False
    if kind == RULE_HYBRID and rule.calls % rule.param != 0:
        return False
    rule.calls += 1
    return True


def _choose_rows(rules, scheme, rows, tables, t_maxes, cap):
    """[_choose(rules[k], scheme, rows[k], ...)]: the CAT scans as one batch, the fixed T's
    (rule fixed, hybrid between its scans) as another, Alistarh's rule row by row."""
    n, d = rows.shape
    picks = [None] * n
    scan, fixed = [], []
    for k, rule in enumerate(rules):
        if _scans(rule, scheme):
            scan.append(k)
            continue
        t = _fixed_t(rule, min(d, t_maxes[k], cap if cap is not None else d))
        if t:
            rule.calls += 1
            fixed.append((k, t))
        else:
            picks[k] = _choose(rule, scheme, rows[k], tables[k], t_maxes[k], cap)
    if scan:
        agree = [_agreement(rules[k], scheme) for k in scan]
        grads = [None if ag is None else _grad(rules[k]) for k, ag in zip(scan, agree)]
        got = _cat_rows(scheme, rows[scan], [tables[k] for k in scan], [t_maxes[k] for k in scan], cap, agree,
                        grads=grads)
        for k, pick in zip(scan, got):
            rules[k].last_t = pick[0].t
            picks[k] = pick
    if fixed:
        ks = [k for k, _ in fixed]
        for k, pick in zip(ks, _fixed_rows(scheme, rows[ks], [t for _, t in fixed], [tables[k] for k in ks])):
            picks[k] = pick
    return picks


def _fixed_t(rule, top):
    """The T of a rule that sends a set number of entries this call (fixed; hybrid between
    its scans: its last T), capped at `top` as _choose caps it; 0 for the other rules."""
    if rule.kind == RULE_FIXED:
        t = rule.param
    elif rule.kind == RULE_HYBRID:
        t = rule.last_t
    else:
        return 0
    return max(0, min(t, top))


def _fixed_rows(scheme, rows, ts, tables):
    """_choose's fixed-T branch for every row (T = ts[i]): the T largest and Improvement(T);
    rows with the same T are selected together."""
    a64, s1, s2 = _sums_rows(rows)
    out = [None] * rows.shape[0]
    for t in sorted(set(ts)):
        same = [i for i, ti in enumerate(ts) if ti == t]
        order = top_rows(a64[same], t)
        a = np.take_along_axis(a64[same], order, axis=1)
        if scheme == SCHEME_SS:
            pairs = [improvements(scheme, a[j], float(s1[i]), float(s2[i])) for j, i in enumerate(same)]
        else:
            imp = _plain_rows(scheme, a, s2[same])
            pairs = [(imp[j], None) for j in range(len(same))]
        for j, i in enumerate(same):
            imp_t = float(pairs[j][0][t - 1])
            c = float(tables[i].upto(t)[t - 1])
            ns = 0 if pairs[j][1] is None else int(pairs[j][1][t - 1])
            out[i] = (Choice(t, imp_t, imp_t / c, c, False, ns), order[j], float(s1[i]), float(s2[i]))
    return out


def _sums_rows(rows):
    """|rows| in float64 and every row's S1, S2 (the sequential sums of select)."""
    a64 = np.abs(rows.astype(np.float64))
    return a64, np.cumsum(a64, axis=1)[:, -1], np.cumsum(a64 * a64, axis=1)[:, -1]


def _agreement(rule, scheme):
    """The Agreement a scan weighs its improvements by (catavg on S and S+Q), else None."""
    if rule.kind == RULE_CATAVG and rule.agreement is not None and scheme != SCHEME_SS:
        return rule.agreement
    return None


def _cat_rows(scheme, rows, tables, t_maxes, cap=None, agreements=None, start_k=1024, grads=None):
    """[_cat_choose(scheme, rows[i], tables[i], t_maxes[i], cap, start_k, agreements[i],
    grads[i])]: every row's candidate set grows as _cat_choose's does; the rows at the same K
    are scanned together."""
    n, d = rows.shape
    agreements = [None] * n if agreements is None else agreements
    ef = None
    if grads is not None and any(gr is not None for gr in grads):  # error feedback: scored against grad
        gh = np.stack([np.zeros(d) if gr is None else np.asarray(gr, dtype=np.float64) for gr in grads])
        ef = (rows, gh, np.cumsum(gh * gh, axis=1)[:, -1], [gr is not None for gr in grads])
    tops = [min(d, t, cap if cap is not None else d) for t in t_maxes]
    if min(tops) < 1:
        raise ValueError("CAT: no feasible T (the smallest frame exceeds the link's largest message)")
    a64, s1, s2 = _sums_rows(rows)
    ks = [min(top, start_k) for top in tops]
    out = [None] * n
    while True:
        todo = [i for i in range(n) if out[i] is None]
        if not todo:
            break
        k = ks[todo[0]]
        same = [i for i in todo if ks[i] == k]
        sub = None if ef is None else (ef[0][same], ef[1][same], ef[2][same], [ef[3][i] for i in same])
        for i, res in zip(same, _scan_at(scheme, a64[same], s1[same], s2[same], k,
                                         [tables[i] for i in same], [agreements[i] for i in same], sub)):
            t, imp, ns, ratio, best, order, costs = res
            if k >= tops[i] or best >= 1.0 / tables[i].upto(k + 1)[k]:
                binding = cap is not None and t == cap and cap < min(d, t_maxes[i])
                out[i] = (Choice(t, imp, ratio, costs, binding, ns), order, float(s1[i]), float(s2[i]))
            else:
                ks[i] = min(tops[i], 4 * k)
    return out


def _scan_at(scheme, a64, s1, s2, k, tables, agreements, ef=None):
    """One scan of rows whose candidate sets have K = k: per row (T*, improvement at T*,
    n_s(T*), ratio at T*, max ratio, candidate order, C(T*)). ef: (the signed rows, their
    grads, ||grad||^2, which rows have one) when some row scores the direction sent (_cat_rows)."""
    order = top_rows(a64, k)
    a = np.take_along_axis(a64, order, axis=1)
    imp, ns = _improvements_rows(scheme, a, s1, s2, order, agreements)
    if ef is not None and scheme != SCHEME_SS:
        rows, gh, s2g, has = ef
        sel = [i for i, h in enumerate(has) if h]
        if sel:
            u = np.take_along_axis(rows[sel], order[sel], axis=1).astype(np.float64)
            imp[sel] = _ef_rows(scheme, u, np.take_along_axis(gh[sel], order[sel], axis=1),
                                _weights_rows([agreements[i] for i in sel], order[sel]), s2g[sel])
    costs = np.stack([tab.upto(k) for tab in tables])
    ratio = imp / costs
    top = ratio.max(axis=1)
    t = np.argmax(ratio >= (top * (1.0 - RATIO_RTOL))[:, None], axis=1)
    res = []
    for i in range(a.shape[0]):
        ti = int(t[i])
        res.append((ti + 1, float(imp[i, ti]), 0 if ns is None else int(ns[i][ti]), float(ratio[i, ti]),
                    float(top[i]), order[i], float(costs[i, ti])))
    return res


def top_rows(a, k):
    """_top for every row of a (nonnegative magnitudes): the k largest, ties to the lower
    index, best first. The set is {a > thr} and the first of {a == thr}, thr the k-th largest,
    so it has exactly k members per row and the rows stay one array."""
    m, d = a.shape
    k = min(k, d)
    if k >= d:
        return np.argsort(-a, axis=1, kind="stable")
    thr = -np.partition(-a, k - 1, axis=1)[:, k - 1:k]
    greater = a > thr
    ties = a == thr
    need = k - np.count_nonzero(greater, axis=1)
    keep = greater | (ties & (np.cumsum(ties, axis=1) <= need[:, None]))
    cand = np.nonzero(keep)[1].reshape(m, k)
    vals = np.take_along_axis(a, cand, axis=1)
    return np.take_along_axis(cand, np.argsort(-vals, axis=1, kind="stable"), axis=1)


def _improvements_rows(scheme, a, s1, s2, order, agreements):
    """improvements (or, for rows with an Agreement, weighted_improvements) of every row's
    candidates a[i]; ns per row for SS (None otherwise)."""
    if scheme == SCHEME_SS:
        pairs = [improvements(scheme, a[i], float(s1[i]), float(s2[i])) for i in range(a.shape[0])]
        return np.stack([p[0] for p in pairs]), [p[1] for p in pairs]
    weighted = [i for i, ag in enumerate(agreements) if ag is not None]
    if weighted:
        imp = _weighted_rows(scheme, a, _weights_rows(agreements, order), s2)
        if len(weighted) < a.shape[0]:
            plain = [i for i in range(a.shape[0]) if agreements[i] is None]
            imp[plain] = _plain_rows(scheme, a[plain], s2[plain])
        return imp, None
    return _plain_rows(scheme, a, s2), None


def _weights_rows(agreements, order):
    """weights(agreements[i], order[i]) for every row with an Agreement (1 for the others),
    looked up in a dense row of v = w^2 per node instead of a search per candidate: the same
    values, since an Agreement's indices are distinct (ascending)."""
    d = int(order.max()) + 1
    dense = np.ones((order.shape[0], d))
    for i, ag in enumerate(agreements):
        if ag is None:
            continue
        p = ag.prior
        dense[i] = p * p
        m = ag.n
        if m and not ag.reading:
            idx = np.frombuffer(ag.idx, dtype=np.dtype(ag.idx.typecode))[:m]
            w = np.frombuffer(ag.w, dtype=np.float32)[:m].astype(np.float64)
            inside = idx < d
            dense[i, idx[inside]] = w[inside] * w[inside]
    return np.take_along_axis(dense, order, axis=1)


def _plain_rows(scheme, a, s2):
    """improvements for S and S+Q, row by row of a (the same operations, rows at once)."""
    col = s2[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        if scheme == SCHEME_S:
            imp = np.cumsum(a * a, axis=1) / col
        elif scheme == SCHEME_SQ:
            a1 = np.cumsum(a, axis=1)
            imp = a1 * a1 / (np.arange(1, a.shape[1] + 1, dtype=np.float64) * col)
        else:
            imp = np.ones(a.shape)
    return np.where(col > 0.0, imp, 0.0)


def _weighted_rows(scheme, a, v, s2):
    """weighted_improvements row by row of a (catavg's v per row)."""
    col = s2[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        if scheme == SCHEME_S:
            return np.where(col > 0.0, np.cumsum(v * (a * a), axis=1) / col, 0.0)
        aw = np.cumsum(v * a, axis=1)
        vw = np.cumsum(v, axis=1)
        imp = aw * aw / (vw * col)
    return np.where((vw > 0.0) & (col > 0.0), imp, 0.0)


def _ef_rows(scheme, u, gh, v, s2g):
    """ef_improvements row by row of u (signed candidates; gh the grads at them, v catavg's
    w^2, s2g each row's ||grad||^2): p and q of edge.catef.ef_improvement as sequential
    cumsums, then p^2 / (q s2g) where p, q, s2g > 0, else 0."""
    if scheme == SCHEME_S:
        p = np.cumsum(v * (gh * u), axis=1)
        q = np.cumsum(v * (u * u), axis=1)
    else:
        p = np.cumsum(v * np.where(u >= 0.0, gh, -gh), axis=1)
        q = np.cumsum(v, axis=1)
    col = s2g[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        imp = p * p / (q * col)
    return np.where((p > 0.0) & (q > 0.0) & (col > 0.0), imp, 0.0)
