"""Stochastic sparsification (SS, paper eq. 4, Lemma 4 and appendix F): the water level,
the draw and how far the drawn count may exceed T, for edge.compress.compress (and the
gateway's bound on an honest edge's T). A module of its own so that a board running S or S+Q
never loads it. MicroPython and CPython.
"""

from edge.cbor import errmsg


def ss_budget(limit):
    """Largest expected count T whose draws stay within `limit` entries with 3 standard
    deviations to spare (the count is a sum of Bernoullis: variance <= T)."""
    t = limit
    while t > 1 and t + 3.0 * t ** 0.5 + 2.0 > limit:
        t -= 1 + int(0.01 * t)
    return t if t > 0 else 1


def ss_t_max(t_max, d):
    """The one rule, on every backend, for the largest expected count an SS job may choose:
    all of t_max when the link takes every entry (a draw never exceeds d), else ss_budget's
    room for the draw's spread. The draw itself is then held to the link's t_max (redrawn)."""
    if t_max >= d:
        return t_max
    return ss_budget(t_max)


def ss_level(g, idx, ns, s1, t):
    """Water level c with p_j = min(1, c |g_j|) and sum p_j = T, given the n_s saturated
    candidates idx[0:ns] (cat.Scan found n_s). 0.0 when the saturated entries hold all mass."""
    a1s = 0.0
    for i in range(ns):
        a1s += abs(g[idx[i]])
    r = s1 - a1s
    return (t - ns) / r if r > 0.0 else 0.0


def sample(ws, g, choice, s1, scale, rng, d, limit):
    """Draw the SS sparsifier: p_j = min(1, c |g_j|), value (omega * scale) g_j / p_j, into
    ws.idx / ws.vals (at most `limit` entries); returns the number drawn. rng: an
    edge.compress.XorShift32 (compress checks it is given)."""
    ns = choice.ns
    c = ss_level(g, ws.idx, ns, s1, choice.t)
    step = choice.improvement * scale
    for attempt in range(8):
        if ns > 0 and c == 0.0:  # the saturated candidates hold all the mass: p_j is 1 or 0
            n = _draw_top(ws, g, abs(g[ws.idx[ns - 1]]), step, d, limit)
        else:
            n = _draw(ws, g, c, step, rng, d, limit)
        if n >= 0:
            return n  # float16 jobs: compress rounds the values
    # Redrawing conditions on the count, a bias that is negligible while T sits a few
    # standard deviations (sqrt(T)) below the limit; CAT's t_max keeps it there in practice.
    raise ValueError(errmsg(154, limit))


def _draw(ws, g, c, step, rng, d, limit):
    # One draw into ws.idx / ws.vals: the count, or -1 when it passes `limit`. Apart from
    # sample, and the saturated case apart from it (_draw_top), so that each function's
    # bytecode fits a smaller hole in a board's heap.
    idx = ws.idx
    vals = ws.vals
    n = 0
    for j in range(d):
        v = g[j]
        p = c * abs(v)
        if p >= 1.0:
            q = v
        elif p > 0.0 and rng.random() < p:
            q = v / p
        else:
            continue
        if n >= limit:
            return -1
        idx[n] = j
        vals[n] = q * step
        n += 1
    return n


def _draw_top(ws, g, c, step, d, limit):
    # _draw when c = 0 and the saturated candidates hold all the mass: p_j is 1 for |g_j| >= c
    # (here the last saturated |g|), else 0; no random number is drawn
    idx = ws.idx
    vals = ws.vals
    n = 0
    for j in range(d):
        v = g[j]
        if v == 0.0 or abs(v) < c:
            continue
        if n >= limit:
            return -1
        idx[n] = j
        vals[n] = v * step
        n += 1
    return n
