"""Compressors S, S+Q and SS, error feedback, and the per-round compression step.

The update a node sends is already scaled by its step (the paper's eq. 1,
x+ = x - gamma Q_T(g), with gamma from Lemmas 1, 3 and 4), so the aggregator only averages
x <- x - (1/n) sum u (eq. 10):

* S:  u_j = g_j / L on the top-T entries (Lemma 1, step 1/L).
* SQ: u_j = sign(g_j) * A1(T) / (T L) on the top-T entries (Lemma 3, step sqrt(beta)/(sqrt(T) L)).
* SS: u_j = (omega/L) * g_j / p_j for entries drawn with probability p_j = min(1, c |g_j|),
      sum p_j = T (Lemma 4, appendix F). Unbiased: E[Q] = g.

Error feedback (Stich et al. 2018): compress v = g/L + e, send q, keep e <- v - q. The
improvement measures are scale-invariant, so the same code compresses v with scale 1.
Values are rounded to the wire format here so the residual matches what the gateway decodes.

SS sampling (edge/ss.py) and the error-feedback memory (edge/feedback.py) are modules of their
own, imported when a round uses them: a board running S or S+Q never holds their code or
objects.
"""

from edge import topk
from edge.learner import zeros
from edge.cbor import const, errmsg

_SCHEME_IDENTITY = const(0)  # edge.cat's scheme numbers (folded: no dict entries on a board)
_SCHEME_S = const(1)
_SCHEME_SQ = const(2)
_SCHEME_SS = const(3)


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
    from edge.f16 import round_value  # only float16 jobs load it
    return round_value(x, 1)


def ss_headroom(k):
    """Entries beyond K that the buffers for an SS draw hold: the drawn count varies around
    T <= K (a sum of Bernoullis, standard deviation <= sqrt(T)), so 8 + 4 sqrt(K) puts their
    end more than 4 standard deviations above the largest T the candidates allow. Here, with
    the buffers, not in edge.ss: a board loads the sampler's code in compress, after the first
    round's snapshot and cost table, not when it sizes the buffers."""
    return 8 + 4 * int(k ** 0.5)


def capacity(d, k, extra=None):
    """Entries the value/index buffers of Workspace(d, k, fmt, extra) hold: the frame buffer
    is sized from it before the Workspace exists (the larger block first)."""
    if k > d:
        k = d
    if extra is None:
        extra = ss_headroom(k)
    return k + extra


class Workspace:
    """Preallocated buffers for one node: O(K) indices and values, reused every round.

    k is the candidate cap (RAM or the link's largest frame). SS may draw a few more
    than T entries, so the value/index buffers of the result have headroom `extra`
    (None: ss_headroom(k); S and S+Q need 0).
    """

    def __init__(self, d, k, fmt=0, extra=None):
        if k > d:
            k = d
        self.d = d
        self.k = k
        self.fmt = fmt
        self.cap = capacity(d, k, extra)
        self.idx = topk.alloc_index(self.cap, d)
        self.vals = zeros(self.cap)  # no 4 cap-byte temporary
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
    if scheme == _SCHEME_IDENTITY:
        raise ValueError(errmsg(138))
    if d == 0:
        raise ValueError(errmsg(139))
    link_max = t_max
    if scheme == _SCHEME_SS:
        from edge.ss import ss_t_max
        t_max = ss_t_max(t_max, d)
    need = rule.needs(d, t_max)
    k = ws.k if ws.k < need else need
    n, s1, s2 = topk.select(g, k, ws.idx)
    # Scale-safe sums: with max |g| beyond 2^+-40 the sum of squares would overflow or vanish
    # (in a board's single precision far sooner than at 1e160), so work on g * 2^-e with the
    # step scaled by 2^e (the same values come out), and give g back afterwards (topk.shift).
    e = topk.exponent(abs(g[ws.idx[0]]))
    if not e:
        return _finish(ws, g, scheme, rule, cost, t_max, link_max, scale, rng, early_stop, d, n, s1, s2)
    from math import ldexp
    topk.shift(g, -e)
    try:
        n, s1, s2 = topk.select(g, k, ws.idx)
        return _finish(ws, g, scheme, rule, cost, t_max, link_max, ldexp(scale, e), rng, early_stop, d,
                       n, s1, s2)
    finally:
        topk.shift(g, e)


def _finish(ws, g, scheme, rule, cost, t_max, link_max, scale, rng, early_stop, d, n, s1, s2):
    ws.s1 = s1
    ws.s2 = s2
    choice = rule.choose(scheme, g, ws.idx, n, s1, s2, cost, t_max, early_stop, ws.k)
    t = choice.t
    idx = ws.idx
    vals = ws.vals
    fmt = ws.fmt
    if scheme == _SCHEME_SQ:
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
    if scheme == _SCHEME_S:
        topk.sort_ascending(idx, t)
        for i in range(t):
            vals[i] = g[idx[i]] * scale
    elif scheme == _SCHEME_SS:
        if rng is None:
            raise ValueError(errmsg(149))
        from edge.ss import sample
        # The drawn count varies around T: never more than the buffer or the link takes.
        limit = ws.cap if ws.cap < link_max else link_max
        t = sample(ws, g, choice, s1, scale, rng, d, limit)
    else:
        raise ValueError(errmsg(128, scheme))
    if fmt:  # S's and SS's values as the wire carries them (S+Q rounds its one magnitude)
        for i in range(t):
            vals[i] = _round_f16(vals[i])
    return Result(scheme, t, choice, d)

