"""Combining a round's updates: the paper's mean, or a coordinate-wise robust rule.

The mean (paper eq. 10) lets one node move the model anywhere: a node whose key leaked,
or a compromised board, only has to send a large, validly signed update. For fleets that
cannot be trusted that far the job can choose a coordinate-wise **trimmed mean** (drop the
k = floor(trim * n) largest and smallest values of each coordinate, average the rest) or the
coordinate-wise **median** (Yin et al., "Byzantine-robust distributed learning", ICML 2018).
Both tolerate up to k (trimmed mean) or just under n/2 (median) arbitrary updates per
coordinate, at the price of some statistical efficiency when every node is honest.

The mean is an **exact** sum (ExactSum below): every float32 value is split, without
rounding, over fixed binary "bins", and each bin is summed exactly in float64. The sum is
then a function of the set of updates only, not of their order or grouping, which is what
lets shards add their own nodes and a root add the shards' sums with a result bit-identical
to one gateway adding every node (docs/scale.md).

The rules work on the *dense* per-node updates: a coordinate a node did not send counts as
0, exactly as eq. 10 counts it for the mean. Only the union of the sent coordinates is
materialised (every other coordinate is 0 for every node, so every rule gives 0 there), in
column blocks so that memory stays bounded for large d and many nodes.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

RULES = ("mean", "trimmed_mean", "median")

# Exact sums. Bin k holds multiples of 2**(BIN_BASE + BIN_BITS*k) below 2**BIN_BITS of them;
# bins 0..BINS-1 cover every bit a finite float32 can have (2**-149 .. 2**127). A value's 24
# significant bits fall into at most two adjacent bins, each part an integer of <= 32 bits
# times the bin's unit, so up to 2**21 parts (more than the 65,536 node ids) add up exactly
# in float64 (< 2**53 units).
BIN_BITS = 32
BIN_BASE = -160
BINS = 9
MAX_EXACT_TERMS = 1 << 21

# Largest block of the n x |union| matrix held at once (float64 entries).
BLOCK_ENTRIES = 1 << 22


def trim_count(n: int, trim: float) -> int:
    """Values cut from each end per coordinate; at least one value is always kept."""
    k = int(math.floor(trim * n + 1e-9))
    return max(0, min(k, (n - 1) // 2))


def _split(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Values (float32, or float64 holding float32 values) as hi + lo parts with their bins.

    hi is the value truncated to the unit of the bin of its top bit; lo (the rest) lies in the
    bin below. Both are exact float64 operations (power-of-two scaling, trunc, a difference
    that is representable)."""
    v = np.asarray(values, dtype=np.float64)
    _, e = np.frexp(v)                                   # v = m * 2**e, top bit 2**(e-1)
    k = np.clip((e.astype(np.int64) - 1 - BIN_BASE) // BIN_BITS, 0, BINS - 1)
    unit = np.ldexp(1.0, BIN_BASE + BIN_BITS * k)
    hi = np.trunc(v / unit) * unit
    lo = v - hi
    return hi, k, lo, np.maximum(k - 1, 0)


class ExactSum:
    """The exact sum of sparse float32 updates, kept per bin on the union of their indices.

    `indices` (int64 ascending) are the coordinates any update carried (also with value 0,
    so a delta touches what the plain sum would); `bins` maps a bin number to the float64
    parts on those coordinates. `total()` folds the bins, lowest first: the same float64 for
    the same set of updates however they were split into partial sums."""

    __slots__ = ("indices", "bins", "terms")

    def __init__(self, indices: np.ndarray, bins: dict[int, np.ndarray], terms: int) -> None:
        self.indices = indices
        self.bins = bins
        self.terms = terms                  # updates summed (bounded by MAX_EXACT_TERMS)

    @classmethod
    def _reduce(cls, idx: np.ndarray, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                terms: int) -> "ExactSum":
        """Sum parts (positions into idx's union, bin numbers, values) per (bin, coordinate)."""
        if terms > MAX_EXACT_TERMS:
            raise ValueError(f"more than {MAX_EXACT_TERMS} updates in one exact sum")
        union, pos = np.unique(idx, return_inverse=True)
        p = np.concatenate([pos[a] if a is not None else pos for a, _, _ in parts]) if parts else pos
        b = np.concatenate([k for _, k, _ in parts]) if parts else np.zeros(0, np.int64)
        v = np.concatenate([x for _, _, x in parts]) if parts else np.zeros(0)
        keep = v != 0.0
        p, b, v = p[keep], b[keep], v[keep]
        bins = {}
        for k in np.unique(b).tolist():
            sel = b == k
            bins[int(k)] = np.bincount(p[sel], weights=v[sel], minlength=union.shape[0])
        return cls(union.astype(np.int64), bins, terms)

    @classmethod
    def of(cls, updates: Sequence[tuple[np.ndarray, np.ndarray]]) -> "ExactSum":
        """The exact sum of (indices, float32 values) updates."""
        if not updates:
            return cls(np.zeros(0, np.int64), {}, 0)
        idx = np.concatenate([np.asarray(u[0], dtype=np.int64) for u in updates])
        hi, khi, lo, klo = _split(np.concatenate([np.asarray(u[1], dtype=np.float32) for u in updates]))
        return cls._reduce(idx, [(None, khi, hi), (None, klo, lo)], len(updates))

    @classmethod
    def merge(cls, sums: Sequence["ExactSum"]) -> "ExactSum":
        """The exact sum of several exact sums (a root adding its shards' partials)."""
        sums = [s for s in sums if s.indices.shape[0]]
        terms = sum(s.terms for s in sums)
        if not sums:
            return cls(np.zeros(0, np.int64), {}, terms)
        idx = np.concatenate([s.indices for s in sums])
        parts, off = [], 0
        for s in sums:
            n = s.indices.shape[0]
            at = np.arange(off, off + n)
            for k, vals in s.bins.items():
                parts.append((at, np.full(n, k, np.int64), vals))
            off += n
        return cls._reduce(idx, parts, terms)

    def total(self) -> np.ndarray:
        """The float64 sum on `indices` (bins folded in ascending order)."""
        out = np.zeros(self.indices.shape[0], dtype=np.float64)
        for k in sorted(self.bins):
            out += self.bins[k]
        return out


def combine(rule: str, d: int, updates: Sequence[tuple[np.ndarray, np.ndarray]],
            trim: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Combine sparse updates (indices int64 ascending, values float32) into (idx, agg).

    `agg` (float64) is the rule applied coordinate-wise over the n dense updates, returned
    on `idx` = the union of the sent indices (ascending). The caller applies x -= agg.
    The mean is the exact sum (ExactSum) over n, whatever the order of the updates; the
    robust rules take them in the given order (callers pass node-id order)."""
    if rule not in RULES:
        raise ValueError(f"unknown aggregation rule {rule!r}")
    n = len(updates)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    if rule == "mean":
        return mean_of(ExactSum.of(updates), n)
    union = np.unique(np.concatenate([u[0] for u in updates]))
    out = np.empty(union.shape[0], dtype=np.float64)
    k = trim_count(n, trim)
    block = max(1, BLOCK_ENTRIES // n)
    for lo in range(0, union.shape[0], block):
        cols = union[lo:lo + block]
        m = np.zeros((n, cols.shape[0]), dtype=np.float64)
        for row, (idx, vals) in enumerate(updates):
            # positions of this node's indices inside the block (both ascending)
            a, b = np.searchsorted(idx, (cols[0], cols[-1] + 1))
            if a < b:
                m[row, np.searchsorted(cols, idx[a:b])] = vals[a:b]
        if rule == "median":
            out[lo:lo + cols.shape[0]] = np.median(m, axis=0)
        else:
            m.sort(axis=0)
            out[lo:lo + cols.shape[0]] = m[k:n - k].mean(axis=0)
    return union, out


def mean_of(total: ExactSum, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, mean) of n updates from their exact sum: what combine("mean") returns."""
    return total.indices, total.total() / n
