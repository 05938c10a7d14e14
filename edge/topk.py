"""Top-K candidate selection in O(K) extra memory: the kernel every edge round runs.

One pass over the gradient keeps a bounded min-heap of the K entries of largest |g_j|
as *indices* in a caller-owned array (no tuples, no list of floats), and gathers
S1 = sum |g_j| and S2 = sum g_j^2 in the same pass. A heapsort then leaves the K
candidates ordered by decreasing |g_j| in place. Ties break towards the lower index,
so the result is deterministic and equals a stable sort by -|g_j|.

Time O(d log K); on a board the only allocation is the float boxing of g[j] reads.
Runs unchanged on MicroPython (no heapq: it has no key functions there).
"""

from edge.cbor import errmsg


# Magnitudes whose squares, summed over up to 2^16 entries, stay normal floats even in single
# precision (a 32-bit board: 2^-126 .. 2^128); outside this band compress works on g * 2^-e.
_SAFE_LO = 9.094947017729282e-13    # 2^-40
_SAFE_HI = 1099511627776.0          # 2^40


def exponent(amax):
    """0 when the largest magnitude `amax` lies in [2^-40, 2^40] (so S2 = sum g_j^2 neither
    overflows nor vanishes); else the e with amax * 2^-e in [0.5, 1). The improvement measures
    are ratios of these sums, so a power-of-two scaling changes no decision, only the range."""
    if amax == 0.0 or (_SAFE_LO <= amax <= _SAFE_HI):
        return 0
    from math import frexp
    return frexp(amax)[1]


def shift(g, e):
    """g_j *= 2^e in place, exact for every entry the array can still hold (a power of two),
    so shift(g, -e) then shift(g, e) restores g bit for bit, except entries so far below the
    largest (2^-149 of it in single, 2^-1074 in double precision) that they flush to zero. ldexp
    per entry, so no factor 2^e itself has to be a float; only the rare path pays for it."""
    from math import ldexp
    for j in range(len(g)):
        g[j] = ldexp(g[j], e)


def alloc_index(k, d):
    """An index buffer of k zeros, 16-bit when d fits (halves RAM on a board); sized from
    len(range(k)), so no k-item bytes temporary doubles the allocation."""
    from array import array
    idx = array('H' if d <= 65536 else 'I', range(k))  # k <= d, so every value fits
    for i in range(k):
        idx[i] = 0
    return idx


def _sift_down(g, idx, size, i, j, a):
    # Place candidate j (|g_j| = a) at heap slot i, moving worse children up.
    # Heap order: the root is the *worst* candidate (smallest |g|, then largest index).
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        cj = idx[c]
        ac = abs(g[cj])
        c2 = c + 1
        if c2 < size:
            dj = idx[c2]
            ad = abs(g[dj])
            if ad < ac or (ad == ac and dj > cj):
                c = c2
                cj = dj
                ac = ad
        if ac < a or (ac == a and cj > j):
            idx[i] = cj
            i = c
        else:
            break
    idx[i] = j


def select(g, k, idx):
    """Fill idx[0:n] with the n = min(k, len(g)) indices of largest |g_j|, best first.

    Returns (n, s1, s2) with s1 = sum |g_j| and s2 = sum g_j^2 over *all* of g.
    Raises ValueError naming the first entry that is NaN or infinite.
    """
    d = len(g)
    if k > d:
        k = d
    if k < 1:
        raise ValueError(errmsg(135))
    if len(idx) < k:
        raise ValueError(errmsg(136, (len(idx), k)))
    n = 0
    s1 = 0.0
    s2 = 0.0
    for j in range(d):
        v = g[j]
        if v - v != 0.0:
            raise ValueError(errmsg(137, (j, v)))
        a = v if v >= 0.0 else -v
        s1 += a
        s2 += v * v
        if n < k:
            i = n
            n += 1
            while i > 0:
                p = (i - 1) >> 1
                q = idx[p]
                aq = abs(g[q])
                # j > q always (we scan in index order), so on equal |g| j is the worse one.
                if a <= aq:
                    idx[i] = q
                    i = p
                else:
                    break
            idx[i] = j
        elif a > abs(g[idx[0]]):
            # Equal magnitude never displaces the root: the root has the lower index.
            _sift_down(g, idx, k, 0, j, a)
    # Heapsort: move the worst to the back repeatedly -> best first.
    end = n - 1
    while end > 0:
        worst = idx[0]
        last = idx[end]
        idx[end] = worst
        _sift_down(g, idx, end, 0, last, abs(g[last]))
        end -= 1
    return n, s1, s2


def sort_ascending(idx, n):
    """Sort idx[0:n] ascending in place (heapsort, O(1) extra memory)."""
    # Build a max-heap, then pop to the back.
    start = (n >> 1) - 1
    while start >= 0:
        _sift_max(idx, n, start)
        start -= 1
    end = n - 1
    while end > 0:
        t = idx[0]
        idx[0] = idx[end]
        idx[end] = t
        _sift_max(idx, end, 0)
        end -= 1


def _sift_max(idx, size, i):
    v = idx[i]
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and idx[c + 1] > idx[c]:
            c += 1
        if idx[c] > v:
            idx[i] = idx[c]
            i = c
        else:
            break
    idx[i] = v
