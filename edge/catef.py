"""Rule catavg under error feedback, scoring the direction sent against the gradient
(docs/experiments.md, grid section; the simulator's rule `catef`, aggregator/lab/engine.py).

With error feedback a node compresses u = h + e (h its step-scaled gradient, e its residual)
and catavg scores T by u's entries as if u were the gradient, so the residual counts as
descent of F. Here the update sent, q = C_T(u) (S: u on its top T; S+Q: sign u there, times
one magnitude), is scored by the descent lemma on F against h, with catavg's agreement
weights, at the best step along q: the scheme's own step is error feedback's (the residual
has to go out), so only the direction is scored, as `edge.catavg.improvement` scores S+Q.
The measure is invariant to the scale of h and of u, each on its own, so the scale-safe shift
edge.compress applies to u (edge.topk.exponent) needs none of h. A module of its own (EFRule,
a catavg Rule), not flashed: a board folds h into the residual's array (edge/feedback.py) and
has no h at the candidates. Runs unchanged on MicroPython.
"""

from edge.cat import RATIO_RTOL, Choice, Rule
from edge.cbor import const, errmsg

_SCHEME_S = const(1)  # edge.cat's scheme numbers (folded: no dict entries on a board)
_SCHEME_SS = const(3)


class EFRule(Rule):
    """Rule catavg (its Agreement, its number) whose CAT scan, while `grad` holds the node's
    step-scaled gradient (indexable by entry, set by the caller every round), scores the
    direction error feedback sends against it (efchoose); with grad None, or under SS, it is
    catavg."""

    def __init__(self, nodes, grad=None):
        Rule.__init__(self, "catavg", nodes)
        self.grad = grad

    def choose(self, scheme, g, idx, n, s1, s2, cost, t_max, early_stop=False, cap=None):
        ag = self.agreement
        grad = self.grad
        if grad is None or ag is None or scheme == _SCHEME_SS:
            return Rule.choose(self, scheme, g, idx, n, s1, s2, cost, t_max, early_stop, cap)
        self.calls += 1
        top = n if n < t_max else t_max
        if top < 1:
            raise ValueError(errmsg(130))
        s2g = 0.0
        for j in range(len(grad)):
            s2g += grad[j] * grad[j]
        t, imp, r, c = efchoose(scheme, g, idx, top, grad, s2g, cost, ag.weight, RATIO_RTOL)
        k = cap if cap is not None else n
        self.last_t = t
        return Choice(t, imp, r, c, t == k and k < t_max and k < len(g), 0)


def ef_improvement(p, q, s2g):
    """Improvement of the direction sent under error feedback, from running sums over the
    first T candidates (by decreasing |u|, u = h + e the compressed vector), scored against
    the step-scaled gradient h = g / L. q is the sent update's shape (S: q_j = u_j; S+Q:
    q_j = sign u_j, its one magnitude cancels) and v = w^2 catavg's weights. The averaged
    update c w_j q_j against F's gradient w_j g_j there gives, by the descent lemma at the
    best c, descent >= (sum v g q)^2 / (2L sum v q^2); normalised by ||g||^2 / (2L) like
    edge.catavg.improvement that is p^2 / (q s2g) with p = sum v h q, q = sum v q^2 and
    s2g = ||h||^2 (the step's scale cancels), and 0 when p <= 0 (no step along q descends).
    At most 1 (Cauchy-Schwarz, v <= 1), so the numpy backend's candidate growth holds.
    Without a residual (u = h) it is edge.catavg.improvement: S p = q = sum v a^2,
    S+Q p = sum v a, q = sum v."""
    if p <= 0.0 or q <= 0.0 or s2g <= 0.0:
        return 0.0
    return p * p / (q * s2g)


def _running(sq, g, idx, top, grad, s2g, weight):
    """(T, ef_improvement) for T = 1..top, from the running sums over the first T candidates."""
    p = q = 0.0
    for t in range(1, top + 1):
        j = idx[t - 1]
        u = g[j]
        v = weight(j)
        if sq:
            p += v * (grad[j] if u >= 0.0 else -grad[j])
            q += v
        else:
            p += v * (grad[j] * u)
            q += v * (u * u)
        yield t, ef_improvement(p, q, s2g)


def efchoose(scheme, g, idx, top, grad, s2g, cost, weight, rtol):
    """edge.catavg.wchoose for the update error feedback sends: g is the compressed vector,
    grad[j] the step-scaled gradient, s2g = ||grad||^2; the same two passes and tie rule."""
    sq = scheme != _SCHEME_S
    best_r = -1.0
    for t, imp in _running(sq, g, idx, top, grad, s2g, weight):
        r = imp / cost(t)
        if r > best_r:
            best_r = r
    floor = best_r * (1.0 - rtol)
    for t, imp in _running(sq, g, idx, top, grad, s2g, weight):
        c = cost(t)
        r = imp / c
        if r >= floor:
            break
    return t, imp, r, c
