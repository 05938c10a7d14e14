"""Combining a round's updates: the paper's mean, or a coordinate-wise robust rule.

The mean (paper eq. 10) lets one node move the model anywhere: a node whose key leaked,
or a compromised board, only has to send a large, validly signed update. For fleets that
cannot be trusted that far the job can choose a coordinate-wise **trimmed mean** (drop the
k = floor(trim * n) largest and smallest values of each coordinate, average the rest) or the
coordinate-wise **median** (Yin et al., "Byzantine-robust distributed learning", ICML 2018).
Both tolerate up to k (trimmed mean) or just under n/2 (median) arbitrary updates per
coordinate, at the price of some statistical efficiency when every node is honest.

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

# Largest block of the n x |union| matrix held at once (float64 entries).
BLOCK_ENTRIES = 1 << 22


def trim_count(n: int, trim: float) -> int:
    """Values cut from each end per coordinate; at least one value is always kept."""
    k = int(math.floor(trim * n + 1e-9))
    return max(0, min(k, (n - 1) // 2))


def combine(rule: str, d: int, updates: Sequence[tuple[np.ndarray, np.ndarray]],
            trim: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Combine sparse updates (indices int64 ascending, values float32) into (idx, agg).

    `agg` (float64) is the rule applied coordinate-wise over the n dense updates, returned
    on `idx` = the union of the sent indices (ascending). The caller applies x -= agg.
    The mean is summed in the given order (callers pass node-id order, so the result does
    not depend on arrival order)."""
    if rule not in RULES:
        raise ValueError(f"unknown aggregation rule {rule!r}")
    n = len(updates)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    if rule == "mean":
        acc = np.zeros(d, dtype=np.float64)
        touched = np.zeros(d, dtype=bool)
        for idx, vals in updates:
            acc[idx] += vals.astype(np.float64)
            touched[idx] = True
        idx = np.flatnonzero(touched)
        return idx, acc[idx] / n
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
