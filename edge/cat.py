"""CAT: choose T by maximising guaranteed descent per unit of communication cost.

Improvement measures (paper §3-5), from the candidates ordered by
decreasing |g| (a_1 >= a_2 >= ...), their prefix sums A1(T), A2(T), S1 = sum|g|, S2 = sum g^2:

* S   (top-T, Lemma 1):            alpha(T) = A2(T) / S2
* SQ  (top-T + sign, Lemma 3):     beta(T)  = A1(T)^2 / (T * S2)
* SS  (stochastic, Lemma 4, app. F): omega(T) = S2 / (A2(n_s) + (S1 - A1(n_s))^2 / (T - n_s)),
  where the n_s largest entries get probability 1 (water-filling).

T* = argmax_{1 <= T <= K} Improvement(T) / C(T). Ties go to the smaller T, and a tie is
any ratio within RATIO_RTOL (relative) of the maximum: differences that small are float
rounding (a flat gradient under the payload model makes every T an exact tie), and the
smaller T is the cheaper frame. So T* = min{T : ratio(T) >= (1 - RATIO_RTOL) max ratio},
which is what the brute-force definition in the tests computes too. The scan is
O(K) after selection, so CAT always evaluates every feasible T (exactly the brute-force
argmax). It stops early only where the paper proves quasi-concavity: alpha (Lemma 2 +
Proposition 1) with an affine cost. omega is increasing (Lemma 5) but not proven concave,
and beta is not even monotone, so they are always scanned in full.
"""

from edge.cbor import const, errmsg

RATIO_RTOL = 1e-6  # above float32 rounding of the prefix sums; far below any real gain

# private int constants: no dict entry on a board, public names on CPython (edge.cbor.publish)
_SCHEME_IDENTITY = const(0)
_SCHEME_S = const(1)
_SCHEME_SQ = const(2)
_SCHEME_SS = const(3)
SCHEME_NAMES = ("identity", "s", "sq", "ss")  # index = scheme number


def scheme_id(name):
    """Map 'S', 'S+Q', 'SQ', 'SS', 'identity' (any case) or an int to the scheme number."""
    if isinstance(name, int):
        if 0 <= name <= 3:
            return name
        raise ValueError(errmsg(128, name))
    key = name.lower().replace("+", "")
    if key in SCHEME_NAMES:
        return SCHEME_NAMES.index(key)
    raise ValueError(errmsg(129, name))


class Scan:
    """Incremental improvement measure over T = 1, 2, ... for one gradient.

    Call next(a) with a = |g| of the T-th candidate (decreasing order) and it returns
    Improvement(T). For SS it also needs the candidate magnitudes themselves to place
    the water level, read through mag(i) = |g| of candidate i (0-based).
    """

    def __init__(self, scheme, s1, s2, mag):
        self.scheme = scheme
        self.s1 = s1
        self.s2 = s2
        self.mag = mag
        self.t = 0
        self.a1 = 0.0
        self.a2 = 0.0
        self.ns = 0       # SS: entries with p = 1
        self.a1s = 0.0    # SS: A1(n_s)
        self.a2s = 0.0    # SS: A2(n_s)

    def next(self, a):
        self.t += 1
        t = self.t
        self.a1 += a
        self.a2 += a * a
        s2 = self.s2
        if s2 <= 0.0:
            return 0.0
        sch = self.scheme
        if sch == _SCHEME_S:
            return self.a2 / s2
        if sch == _SCHEME_SQ:
            return self.a1 * self.a1 / (t * s2)
        if sch == _SCHEME_SS:
            return self._omega(t)
        return 1.0

    def _omega(self, t):
        # Water-filling (appendix F): saturate the largest entries while c*a > 1,
        # c = (T - n_s) / (S1 - A1(n_s)). n_s never decreases as T grows.
        mag = self.mag
        s1 = self.s1
        ns = self.ns
        a1s = self.a1s
        a2s = self.a2s
        while ns < t - 1:
            an = mag(ns)
            r = s1 - a1s
            if r < 0.0:
                r = 0.0
            if an > 0.0 and (t - ns) * an > r:
                a1s += an
                a2s += an * an
                ns += 1
            else:
                break
        self.ns = ns
        self.a1s = a1s
        self.a2s = a2s
        r = s1 - a1s
        if r < 0.0:
            r = 0.0
        e = a2s + r * r / (t - ns)
        if e <= 0.0:
            return 1.0
        return self.s2 / e


class Choice:
    """What a rule decided: T, Improvement(T), Improvement/C, C(T), and whether K bound it."""

    def __init__(self, t, improvement, ratio, cost, cap_binding, ns=0):
        self.t = t
        self.improvement = improvement
        self.ratio = ratio
        self.cost = cost
        self.cap_binding = cap_binding
        self.ns = ns


def cat_choose(scheme, g, idx, n, s1, s2, cost, t_max, early_stop=False, cap=None, weight=None):
    """Exact argmax of Improvement(T)/cost(T) over 1 <= T <= min(n, t_max).

    idx[0:n] are candidate indices by decreasing |g|; cost(T) > 0 must be nondecreasing.
    early_stop may be True only for S with an affine cost (quasi-concave ratio).
    cap is the RAM cap K; Choice.cap_binding says the best T sat at K while larger T
    were allowed by the link (so a bigger K might have found a better T).
    weight(j): rule catavg's v for index j (edge.catavg, S and SQ); None: the paper's measures.
    """
    top = n if n < t_max else t_max
    if top < 1:
        raise ValueError(errmsg(130))

    def mag(i):
        return abs(g[idx[i]])

    # Pass 1: the maximum ratio. Pass 2: the first T within RATIO_RTOL of it.
    # Two O(K) scans instead of storing K ratios: RAM is the scarce thing on a board.
    if weight is not None and scheme != _SCHEME_SS:
        from edge.catavg import wchoose
        t, imp, r, c = wchoose(scheme, g, idx, top, s2, cost, weight, RATIO_RTOL)
        k = cap if cap is not None else n
        return Choice(t, imp, r, c, t == k and k < t_max and k < len(g), 0)
    stop = early_stop and scheme == _SCHEME_S
    sc = Scan(scheme, s1, s2, mag)
    best_r = -1.0
    for t in range(1, top + 1):
        r = sc.next(abs(g[idx[t - 1]])) / cost(t)
        if r > best_r:
            best_r = r
        elif stop and r < best_r:
            break
    floor = best_r * (1.0 - RATIO_RTOL)
    sc = Scan(scheme, s1, s2, mag)
    for t in range(1, top + 1):
        imp = sc.next(abs(g[idx[t - 1]]))
        c = cost(t)
        r = imp / c
        if r >= floor:
            break
    best_t = t
    best_imp = imp
    best_c = c
    best_r = r
    best_ns = sc.ns
    k = cap if cap is not None else n
    binding = best_t == k and k < t_max and k < len(g)
    return Choice(best_t, best_imp, best_r, best_c, binding, best_ns)


def improvement_at(scheme, g, idx, t, s1, s2):
    """Improvement(T) for one T, from scratch (used by fixed-T rules and tests)."""

    def mag(i):
        return abs(g[idx[i]])

    sc = Scan(scheme, s1, s2, mag)
    imp = 0.0
    for i in range(t):
        imp = sc.next(abs(g[idx[i]]))
    return imp, sc.ns


def alistarh_t(g, idx, n, s2):
    """Alistarh et al.'s dynamic S+Q rule: the smallest T with A1(T) >= ||g||_2 (capped at n)."""
    target = s2 ** 0.5
    a1 = 0.0
    for t in range(1, n + 1):
        a1 += abs(g[idx[t - 1]])
        if a1 >= target:
            return t
    return n


_RULE_CAT = const(0)
_RULE_FIXED = const(1)
_RULE_ALISTARH = const(2)
_RULE_HYBRID = const(3)
_RULE_IDENTITY = const(4)
_RULE_CATAVG = const(5)
RULE_NAMES = ("cat", "fixed", "alistarh", "hybrid", "identity", "catavg")  # index = rule number


def rule_id(name):
    if isinstance(name, int):
        if 0 <= name <= 5:
            return name
        raise ValueError(errmsg(131, name))
    key = name.lower()
    if key in RULE_NAMES:
        return RULE_NAMES.index(key)
    raise ValueError(errmsg(132, name))


class Rule:
    """A T-selection policy with its little state (hybrid-S remembers T between CAT runs).

    kind: RULE_CAT, RULE_FIXED (param = T), RULE_ALISTARH (S+Q only),
    RULE_HYBRID (param = period S: CAT every S rounds, T reused between), RULE_IDENTITY,
    RULE_CATAVG (param = the job's node count n: CAT on the averaged update, edge/catavg.py,
    with the node's Agreement, created by agree(k, d) and fed by the caller after every delta).
    """

    agreement = None    # a class default: no instance slot for the other rules (RAM on a board)

    def __init__(self, kind, param=0):
        self.kind = rule_id(kind)
        self.param = int(param)
        if self.kind in (_RULE_FIXED, _RULE_HYBRID, _RULE_CATAVG) and self.param < 1:
            raise ValueError(errmsg(133, RULE_NAMES[self.kind]))
        self.calls = 0
        self.last_t = 0

    def agree(self, k, d):
        """catavg: the node's Agreement for up to k entries of d (None for the other rules)."""
        if self.kind == _RULE_CATAVG and (self.agreement is None or len(self.agreement.idx) < k):
            from edge.catavg import Agreement  # only catavg nodes load it
            self.agreement = None
            self.agreement = Agreement(k, self.param, d)
        return self.agreement

    def needs(self, d, t_max):
        """How many candidates the selection kernel must produce for this rule."""
        if self.kind == _RULE_FIXED:
            return min(self.param, d, t_max)
        return min(d, t_max)

    def choose(self, scheme, g, idx, n, s1, s2, cost, t_max, early_stop=False, cap=None):
        kind = self.kind
        self.calls += 1
        top = n if n < t_max else t_max
        if kind == _RULE_CATAVG:
            ag = self.agreement
            ch = cat_choose(scheme, g, idx, n, s1, s2, cost, t_max, False, cap,
                            ag.weight if ag is not None else None)
            self.last_t = ch.t
            return ch
        if kind == _RULE_CAT or (kind == _RULE_HYBRID and (self.calls - 1) % self.param == 0):
            ch = cat_choose(scheme, g, idx, n, s1, s2, cost, t_max, early_stop, cap)
            self.last_t = ch.t
            return ch
        if kind == _RULE_FIXED:
            t = self.param
        elif kind == _RULE_HYBRID:
            t = self.last_t
        elif kind == _RULE_ALISTARH:
            t = alistarh_t(g, idx, top, s2)
        else:
            raise ValueError(errmsg(134))
        if t > top:
            t = top
        imp, ns = improvement_at(scheme, g, idx, t, s1, s2)
        c = cost(t)
        return Choice(t, imp, imp / c, c, False, ns)


from edge.cbor import publish  # noqa: E402
publish(globals())  # CPython: the constants by their public names
del publish
