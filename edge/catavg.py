"""Rule catavg: CAT on the averaged update (docs/experiments.md, grid section).

The gateway applies the mean of the n nodes' updates. A node's entry j keeps w_j of its step
in that mean (1 when every node sent it alike, 1/n when it alone did, 0 when the others
cancelled it); with F's gradient there taken as w_j g_j, the descent lemma on F scores T by
`improvement` instead of alpha and beta. The node learns w from the delta it syncs after
its own update (Agreement, O(K)), and before it from its own sampling noise
(edge/noiseprior.py). Loaded only by catavg jobs, like edge/ss.py for SS: a board running
another rule never holds this code or its objects. Runs unchanged on MicroPython.
"""

from edge.cbor import const

_SCHEME_S = const(1)  # edge.cat's scheme numbers (folded: no dict entries on a board)


class Agreement:
    """What the gateway's average kept of this node's last update, entry by entry: O(K).

    w_j = Delta_j / u_j clamped to [0, 1] for the entries j the node sent last round (u its
    update, Delta the averaged update it synced: 1 when every node sent the same step, 1/n
    when it alone sent j, 0 when the others cancelled it); an entry it did not send (or sent
    as 0) gets 1/n, its own share when no other node sends it. Before any observation (n = 0
    entries held) the node fills w at its K candidates from its own sampling noise
    (edge/noiseprior.py, on several nodes); uniform weights would choose as CAT does. One
    node: Delta = u, w = 1.

    Use: begin(idx, vals, m) with the node's last update (idx ascending), then seen(j, v)
    for the delta's entries in ascending j (an entry of idx the delta lacks was cancelled),
    then end(). While reading (between the two) every weight is the prior.
    """

    def __init__(self, k, nodes, d=65536):
        from edge.learner import zeros
        from edge.topk import alloc_index
        if nodes < 1:
            raise ValueError("catavg needs the job's node count >= 1, got %r" % (nodes,))
        self.idx = alloc_index(k, d if d > k else k)
        self.w = zeros(k)
        self.n = 0
        self.prior = 1.0 / nodes
        self._p = 0
        self.reading = False

    def begin(self, idx, vals, m):
        k = len(self.idx)
        if m > k:
            m = k
        for i in range(m):
            self.idx[i] = idx[i]
            self.w[i] = vals[i]
        self.n = m
        self._p = 0
        self.reading = True

    def seen(self, j, v):
        """One delta entry (j ascending): if the node sent j, store Delta_j / u_j in [0, 1]."""
        p = self._p
        m = self.n
        idx = self.idx
        while p < m and idx[p] < j:
            self._absent(p)
            p += 1
        if p < m and idx[p] == j:
            u = self.w[p]
            r = v / u if u != 0.0 else self.prior
            self.w[p] = 0.0 if r < 0.0 else (1.0 if r > 1.0 else r)
            p += 1
        self._p = p

    def _absent(self, p):
        # the delta does not carry it: the average cancelled it (a zero the node sent says nothing)
        self.w[p] = self.prior if self.w[p] == 0.0 else 0.0

    def end(self):
        p = self._p
        while p < self.n:
            self._absent(p)
            p += 1
        self._p = p
        self.reading = False

    def forget(self):
        """No delta this round (a snapshot, a missed round): back to the prior everywhere."""
        self.n = 0
        self.reading = False

    def weight(self, j):
        """v = w^2 for index j (binary search in the last support; the prior otherwise)."""
        if self.reading:
            return self.prior * self.prior
        idx = self.idx
        lo = 0
        hi = self.n
        while lo < hi:
            mid = (lo + hi) >> 1
            if idx[mid] < j:
                lo = mid + 1
            else:
                hi = mid
        w = self.w[lo] if lo < self.n and idx[lo] == j else self.prior
        return w * w


def improvement(scheme, aw, vw, s2):
    """Improvement of the averaged update from the running sums over the first T candidates:
    S: aw = sum v a^2 -> aw / S2; S+Q: aw = sum v a, vw = sum v -> aw^2 / (S2 vw), v = w^2.

    With the node's estimate that the gateway's average keeps w_i of its entry i (and that
    F's gradient there is w_i g_i), the descent lemma on F gives these at the best step,
    normalised like alpha and beta by ||g||^2 / (2L); both <= 1 because v <= 1. Uniform v
    (one node, or a node that weighs no entry) gives alpha and beta times a constant: CAT's
    argmax.
    SS is not covered: it keeps omega (edge.cat.Scan)."""
    if scheme == _SCHEME_S:
        return aw / s2 if s2 > 0.0 else 0.0
    if s2 <= 0.0 or vw <= 0.0:
        return 0.0
    return aw * aw / (vw * s2)


def wchoose(scheme, g, idx, top, s2, cost, weight, rtol):
    """(T, Improvement, ratio, C) for edge.cat.cat_choose under catavg: the same two passes
    and tie rule (rtol = edge.cat.RATIO_RTOL), no early stop, plain locals for the sums (no
    scan object: RAM on a board)."""
    sq = scheme != _SCHEME_S
    best_r = -1.0
    aw = vw = 0.0
    for t in range(1, top + 1):
        j = idx[t - 1]
        a = abs(g[j])
        v = weight(j)
        if sq:
            aw += v * a
            vw += v
        else:
            aw += v * (a * a)
        r = improvement(scheme, aw, vw, s2) / cost(t)
        if r > best_r:
            best_r = r
    floor = best_r * (1.0 - rtol)
    aw = vw = 0.0
    for t in range(1, top + 1):
        j = idx[t - 1]
        a = abs(g[j])
        v = weight(j)
        if sq:
            aw += v * a
            vw += v
        else:
            aw += v * (a * a)
        imp = improvement(scheme, aw, vw, s2)
        c = cost(t)
        r = imp / c
        if r >= floor:
            break
    return t, imp, r, c
