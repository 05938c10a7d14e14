"""Rule catavg before the node has read a delta: weights from its own sampling noise.

catavg weighs candidate j by v = w_j^2, w_j the share of the node's entry that the gateway's
average keeps and that is F's (edge/catavg.py). It learns w from the delta that follows its
update; before that (round 0, after a snapshot or missed rounds) it has no observation, and a
uniform w would make it `cat`, which on several nodes spends a frame on entries the average
takes away (docs/experiments.md, "Before the first delta").

What the node does know is how noisy its own gradient is. g_j is a mean over its N rows,
g_j = (1/N) sum_i c_i a_ij + lam x_j (c_i = dloss/dz of row i). With the job's n nodes holding
rows alike, F's gradient is the mean of the n nodes' gradients, and this node's entry departs
from it by (1 - 1/n) of its own sampling noise, variance (1 - 1/n) s_j^2 / N, s_j^2 the
variance of the rows' terms c_i a_ij. The share of g_j that is F's, in expectation (the
Wiener factor, signal over signal plus noise):

    w_j = max(0, 1 - (1 - 1/n) s_j^2 / (N g_j^2))

It is 1 on one node (F is f_k: `cat`), near 1 where the rows agree, near 0 where g_j is
within its noise: such an entry is sent by few nodes and with either sign, so the average
keeps little of it too. No constant to fit: N, n and the rows give it.

Cost: a second pass over the data file, made only in a round without an observation, that
sums c_i a_ij and (c_i a_ij)^2 at the K candidates (a merge walk of each row against them) into
the Agreement's weight array and the workspace's value buffer, both idle then: O(K) memory,
nothing allocated but the softmax's C logits (edge.learner's scratch). Loaded only for that
pass, which lets its code go on a board (edge.cbor.drop). `compute` is the one name the node
imports: it was a qstr of every round already (docs/firmware.md, "The qstr pools").
Runs unchanged on MicroPython.
"""

from edge import learner, topk
from edge.cbor import drop


def weight(var, g):
    """w for an entry whose node gradient is g with noise variance var (already times
    (1 - 1/n) / N): max(0, 1 - var / g^2); 1 without noise (even at g = 0: nothing to take
    away), 0 at g = 0 with noise. Also 0 when var / g^2 is not a number (an overflow)."""
    if var <= 0.0:
        return 1.0
    g2 = g * g
    if g2 <= 0.0:
        return 0.0
    r = var / g2
    if not r < 1.0:         # r >= 1, or NaN (inf / inf)
        return 0.0
    return 1.0 - r


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
    z = learner._get_scratch(cc)
    data.rewind()
    while True:
        y = data.read_row()
        if y < 0:
            break
        if soft:
            learner.softmax_row(model, data, z, cc, y)
        else:   # dloss/dz of edge.learner.loss_and_grad's logistic rows
            t = learner._dot(model, data)
            z[0] = -learner.sigmoid(-t) if y else learner.sigmoid(t)
        for c in range(cc):
            if z[c] != 0.0:
                _gather(z[c], data, idx, n, sums, m2, c * dd)
    data.rewind()
    rows = data.n
    f = (1.0 - 1.0 / nodes) / rows
    for p in range(n):
        mean = sums[p] / rows
        var = m2[p] / rows - mean * mean
        m2[p] = weight(f * var, mean + lam * model[idx[p]])
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
