"""Compressors S, S+Q and SS, error feedback, and the per-round compression step.

The update a node sends is already scaled by its step (DESIGN.md section 3), so the
aggregator only averages x <- x - (1/n) sum u:

* S:  u_j = g_j / L on the top-T entries (Lemma 1, step 1/L).
* SQ: u_j = sign(g_j) * A1(T) / (T L) on the top-T entries (Lemma 3, step sqrt(beta)/(sqrt(T) L)).
* SS: u_j = (omega/L) * g_j / p_j for entries drawn with probability p_j = min(1, c |g_j|),
      sum p_j = T (Lemma 4, appendix F). Unbiased: E[Q] = g.

Error feedback (Stich et al. 2018): compress v = g/L + e, send q, keep e <- v - q. The
improvement measures are scale-invariant, so the same code compresses v with scale 1.
Values are rounded to the wire format here so the residual matches what the gateway decodes.
"""

from array import array

from edge import topk
from edge.cat import (SCHEME_IDENTITY, SCHEME_S, SCHEME_SQ, SCHEME_SS, Rule)


class XorShift32:
    """Seedable PRNG with the same sequence on MicroPython and CPython (random.seed differs)."""

    def __init__(self, seed=1):
        s = seed & 0xFFFFFFFF
        self.s = s if s else 0x9E3779B9

    def random(self):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.s = s
        return (s >> 8) * (1.0 / 16777216.0)  # 24 random bits in [0, 1)


def _round_f16(x):
    from edge.frame import round_value
    return round_value(x, 1)


class Workspace:
    """Preallocated buffers for one node: O(K) indices and values, reused every round.

    k is the candidate cap (RAM or the link's largest frame). SS may draw a few more
    than T entries, so the value/index buffers of the result have headroom `extra`.
    """

    def __init__(self, d, k, fmt=0, extra=None):
        if k > d:
            k = d
        self.d = d
        self.k = k
        self.fmt = fmt
        if extra is None:
            extra = 8 + 4 * int(k ** 0.5)
        self.cap = k + extra
        self.idx = topk.alloc_index(self.cap, d)
        self.vals = array('f', bytes(4 * self.cap))
        self.n = 0       # entries in the last update
        self.s1 = 0.0
        self.s2 = 0.0


class Result:
    """One round's compressed update: ws.idx[0:n] ascending, ws.vals[0:n] (step-scaled)."""

    def __init__(self, scheme, n, choice, d):
        self.scheme = scheme
        self.n = n
        self.choice = choice
        self.d = d


def compress(ws, g, scheme, rule, cost, t_max, scale, rng=None, early_stop=False):
    """Select, choose T by `rule`, and write the step-scaled sparse update into ws.

    g: the gradient (or the error-feedback vector v, with scale 1.0); scale: the step
    multiplier applied to g (1/L times any step multiplier). cost(T): cost of sending T
    entries (nondecreasing). t_max: largest T whose frame fits the link.
    Returns a Result; the entries are ws.idx[0:n] (ascending) and ws.vals[0:n].
    """
    d = len(g)
    if scheme == SCHEME_IDENTITY:
        raise ValueError("identity is not sparse: send g * scale as a full update")
    if scheme == SCHEME_SS:
        t_max = ss_budget(t_max)
    need = rule.needs(d, t_max)
    k = ws.k if ws.k < need else need
    n, s1, s2 = topk.select(g, k, ws.idx)
    ws.s1 = s1
    ws.s2 = s2
    choice = rule.choose(scheme, g, ws.idx, n, s1, s2, cost, t_max, early_stop, ws.k)
    t = choice.t
    idx = ws.idx
    vals = ws.vals
    fmt = ws.fmt
    if scheme == SCHEME_S:
        topk.sort_ascending(idx, t)
        for i in range(t):
            vals[i] = g[idx[i]] * scale
        if fmt:
            for i in range(t):
                vals[i] = _round_f16(vals[i])
        return Result(scheme, t, choice, d)
    if scheme == SCHEME_SQ:
        a1 = 0.0
        for i in range(t):
            a1 += abs(g[idx[i]])
        m = a1 * scale / t
        if fmt:
            m = _round_f16(m)
        else:
            vals[0] = m
            m = vals[0]  # the float32 the wire will carry
        topk.sort_ascending(idx, t)
        for i in range(t):
            vals[i] = m if g[idx[i]] >= 0.0 else -m
        return Result(scheme, t, choice, d)
    if scheme == SCHEME_SS:
        # The drawn count varies around T: never more than the buffer or the link takes.
        limit = ws.cap if ws.cap < t_max else t_max
        return _sample_ss(ws, g, choice, s1, scale, rng, d, limit)
    raise ValueError("unknown scheme %r" % scheme)


def ss_budget(limit):
    """Largest expected count T whose draws stay within `limit` entries with 3 standard
    deviations to spare (the count is a sum of Bernoullis: variance <= T)."""
    t = limit
    while t > 1 and t + 3.0 * t ** 0.5 + 2.0 > limit:
        t -= 1 + int(0.01 * t)
    return t if t > 0 else 1


def ss_level(g, idx, ns, s1, t):
    """Water level c with p_j = min(1, c |g_j|) and sum p_j = T, given the n_s saturated
    candidates idx[0:ns] (cat.Scan found n_s). 0.0 when the saturated entries hold all mass."""
    a1s = 0.0
    for i in range(ns):
        a1s += abs(g[idx[i]])
    r = s1 - a1s
    return (t - ns) / r if r > 0.0 else 0.0


def _sample_ss(ws, g, choice, s1, scale, rng, d, limit):
    """Draw the SS sparsifier: p_j = min(1, c |g_j|), value (omega * scale) g_j / p_j."""
    if rng is None:
        raise ValueError("SS needs a random source (XorShift32)")
    t = choice.t
    ns = choice.ns
    idx = ws.idx
    c = ss_level(g, idx, ns, s1, t)
    step = choice.improvement * scale
    vals = ws.vals
    cap = limit
    fmt = ws.fmt
    for attempt in range(8):
        n = 0
        for j in range(d):
            v = g[j]
            if v == 0.0:
                continue
            a = v if v > 0.0 else -v
            if ns > 0 and c == 0.0:
                p = 1.0 if a >= abs(g[idx[ns - 1]]) else 0.0
            else:
                p = c * a
            if p >= 1.0:
                q = v
            elif p > 0.0 and rng.random() < p:
                q = v / p
            else:
                continue
            if n >= cap:
                n = -1
                break
            idx[n] = j
            vals[n] = q * step
            n += 1
        if n >= 0:
            if fmt:
                for i in range(n):
                    vals[i] = _round_f16(vals[i])
            return Result(SCHEME_SS, n, choice, d)
    # Redrawing conditions on the count, a bias that is negligible while T sits a few
    # standard deviations (sqrt(T)) below the limit; CAT's t_max keeps it there in practice.
    raise ValueError("SS drew more than %d entries 8 times; lower K or use a link with larger frames" % cap)


class Feedback:
    """Error-feedback memory: an array('f') of d on the edge (4*d bytes of RAM)."""

    def __init__(self, d):
        from edge.learner import zeros
        self.e = zeros(d)  # no 4 d-byte temporary

    def load(self, g, scale):
        """Turn g into v = scale*g + e in place; compress v with scale 1.0 afterwards."""
        e = self.e
        for j in range(len(g)):
            g[j] = g[j] * scale + e[j]

    def store(self, v, ws, res):
        """e <- v - q, where q is the sparse update just compressed from v."""
        e = self.e
        for j in range(len(v)):
            e[j] = v[j]
        idx = ws.idx
        vals = ws.vals
        for i in range(res.n):
            j = idx[i]
            e[j] = e[j] - vals[i]
