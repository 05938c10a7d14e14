"""Rule catavg before the node has read a delta: weights from its own sampling noise.

catavg weighs candidate j by v = w_j^2, w_j the share of the node's entry that the gateway's
average keeps and that is F's (edge/catavg.py). It learns w from the delta that follows its
update; before that (round 0, after a snapshot or missed rounds) it has no observation, and a
uniform w would make it `cat`, which on several nodes spends a frame on entries the average
takes away (docs/experiments.md, "Before the first delta").

What the node does know is how noisy its own gradient is. g_j is a mean over its N rows,
g_j = (1/N) sum_i c_i a_ij + lam x_j (c_i = dloss/dz of row i), so g_j = mu_j + e_j with mu_j
what rows like these have in common and e_j its sampling noise, variance s_j^2 / N (s_j^2
the variance of the rows' terms c_i a_ij; lam x_j is the same on every node). With the job's
n nodes holding rows alike, F's gradient is the mean of the n nodes' gradients, mu_j + mean_k
e_kj, and given g_j the others' noise averages out: E[F_j | g_j] = E[mu_j | g_j] + e_j / n in
expectation, that is w_j g_j with

    w_j = 1/n + (1 - 1/n) rho_j,   rho_j = max(0, 1 - s_j^2 / (N g_j^2)),

rho_j the Wiener factor (signal over signal plus noise, the signal's variance estimated by
g_j^2 - s_j^2 / N). w_j is 1 on one node (F is f_k: `cat`) and where the rows agree, and 1/n
where g_j is within its noise: the node's own share, as catavg gives an entry only this node
sends (such an entry is sent by few nodes and with either sign, so the average keeps little
more of it). No constant to fit: N, n and the rows give it. The variance is the rows'
population variance (it understates by (N - 1)/N: 0.4 % at 250 rows a node); a file of one
row has none, w = 1.

Cost: a second pass over the data file, made only in a round without an observation, that
sums c_i a_ij and (c_i a_ij)^2 at the K candidates (a merge walk of each row against them) into
the Agreement's weight array and the workspace's value buffer, both idle then: O(K) memory,
nothing allocated but the softmax's C logits (edge.softmax's scratch; a one-entry list for
logistic). Loaded only for that pass, which lets its code go on a board (edge.cbor.drop).
`compute` is the one name the node imports: it was a qstr of every round already
(docs/firmware.md, "The qstr pools").
Runs unchanged on MicroPython.
"""

from edge import learner, topk
from edge.cbor import drop


def weight(var, g, nodes):
    """w for an entry whose node gradient is g with noise variance var (s^2 / N), on a job of
    `nodes` nodes: 1/n + (1 - 1/n) max(0, 1 - var / g^2); 1 without noise (even at g = 0:
    nothing to take away), 1/n at g = 0 with noise or when var / g^2 is not a number (an
    overflow)."""
    if var <= 0.0:
        return 1.0
    p = 1.0 / nodes
    g2 = g * g
    if g2 <= 0.0:
        return p
    r = var / g2
    if not r < 1.0:         # r >= 1, or NaN (inf / inf)
        return p
    return p + (1.0 - p) * (1.0 - r)


def compute(ag, sums, g, model, data, lam, kind, nodes):
    """Fill Agreement ag with w at the K = len(ag.idx) candidates of g (largest |g_j|, as
    edge.topk.select picks them), from a pass over `data` at `model`.

    sums: an idle array('f') of >= K entries (the workspace's values) for the sums of c a;
    the sums of (c a)^2 go into ag.w, then the weights. g is what the node compresses (the
    gradient, or error feedback's v): its candidates get the weights; the noise is that of
    the gradient recomputed here, so a residual in g does not count as signal or noise."""
    d = len(g)
    k = len(ag.idx)
    n = topk.select(g, k if k < d else d, ag.idx)[0]
    idx = ag.idx
    topk.sort_ascending(idx, n)
    m2 = ag.w
    for p in range(n):
        sums[p] = 0.0
        m2[p] = 0.0
    dd = data.d
    soft = kind != "logistic"
    cc = data.classes if soft else 1
    if soft:
        from edge.softmax import scratch, softmax_row  # only softmax models load it
        z = scratch(cc)
    else:
        z = [0.0]
    data.rewind()
    while True:
        y = data.read_row()
        if y < 0:
            break
        if soft:
            softmax_row(model, data, z, cc, y)
        else:   # dloss/dz of edge.learner.loss_and_grad's logistic rows
            t = learner._dot(model, data)
            z[0] = -learner.sigmoid(-t) if y else learner.sigmoid(t)
        for c in range(cc):
            if z[c] != 0.0:
                _gather(z[c], data, idx, n, sums, m2, c * dd)
    data.rewind()
    rows = data.n
    for p in range(n):
        mean = sums[p] / rows
        var = m2[p] / rows - mean * mean
        m2[p] = weight(var / rows, mean + lam * model[idx[p]], nodes)
    ag.n = n
    ag.reading = False
    drop("edge.noiseprior", "noiseprior")   # a board's code for it goes until the next such round


def _gather(coef, data, idx, n, sums, sq, base):
    # sums[p] += coef a_j, sq[p] += (coef a_j)^2 for the row's entries j (+ base) among the
    # candidates idx[0:n]: both ascending (the data file's rows by its format), so one merge
    # walk, O(nnz + K); an entry below the one before (a row out of order) restarts the walk
    vals = data.values
    dense = data.index is None
    nnz = data.d if dense else data.nnz
    ri = data.index
    p = 0
    last = -1
    for e in range(nnz):
        j = base + (e if dense else ri[e])
        if j < last:
            p = 0
        last = j
        while p < n and idx[p] < j:
            p += 1
        if p < n and idx[p] == j:
            t = coef * vals[e]
            sums[p] += t
            sq[p] += t * t
