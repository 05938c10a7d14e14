"""The simulator's batched round against its node-by-node reference: np_backend.compress_rows
row by row equal to np_backend.compress (T, indices, values, ties, rule state), the stacked
parts equal to the per-part losses, gradients and accuracies, and whole runs array for array."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator.lab import datasets as ds
from aggregator.lab.engine import SimConfig, simulate
from aggregator.lab.problem import make_problem
from edge import cat, np_backend as nb
from edge.cat import SCHEME_S, SCHEME_SQ, SCHEME_SS
from edge.cost import CostModel

PACKET = {"kind": "paper", "name": "paper-packet", "default_metric": "bits",
          "paper": {"model": "packet", "fpp_bytes": 8.0, "c1": 128.0, "c0": 64.0, "pmax_bytes": 128.0}}
#: a large fixed cost per message: CAT wants many entries, so a small cap binds
AFFINE = {"kind": "paper", "name": "paper-affine", "default_metric": "bits",
          "paper": {"model": "affine", "fpp_bytes": 4.0, "c1": 1.0, "c0": 10000.0, "pmax_bytes": None}}
SCHEMES = {"s": SCHEME_S, "sq": SCHEME_SQ, "ss": SCHEME_SS}


def tied_rows(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Rows that break selection code: integer-valued (ties everywhere, also at the K-th
    magnitude), all equal, all zero, one non-zero, and one beyond the safe range (scaled)."""
    rows = np.round(rng.normal(size=(n, d)) * 2.0)
    rows[1] = 1.0
    rows[2] = 0.0
    rows[3] = 0.0
    rows[3, d // 2] = -4.0
    rows[4] *= 1e30
    return rows.astype(np.float32)


def nodes_of(scheme: int, rule: str, d: int, n: int, prof: dict) -> tuple[list, list, list]:
    """Per node: its Rule (catavg with its Agreement, as the simulator makes them), CostTable, t_max."""
    rules, tables, t_maxes = [], [], []
    for _ in range(n):
        cm = CostModel(prof, d, scheme)
        r = cat.Rule(rule, n if rule == "catavg" else 3)
        if scheme != SCHEME_SS:
            r.agree(min(d, cm.t_max), d)
        rules.append(r)
        tables.append(nb.CostTable(cm))
        t_maxes.append(cm.t_max)
    return rules, tables, t_maxes


def observe_round(one: list, batch: list, want: list, got: list, d: int) -> None:
    """Both copies of the nodes (rules `one` and `batch`, their updates `want` and `got`) read
    the round's averaged delta, as the gateway sends it (float32), into their agreements."""
    n = len(got)
    delta = np.zeros(d)
    for idx, vals, _ in got:
        delta[idx] += vals
    synced = (delta / n).astype(np.float32).astype(np.float64)
    for k in range(n):
        nb.observe(one[k].agreement, want[k][0], want[k][1], synced)
        nb.observe(batch[k].agreement, got[k][0], got[k][1], synced)


def assert_same(one: tuple, row: tuple) -> None:
    (i1, v1, c1), (i2, v2, c2) = one, row
    assert np.array_equal(i1, i2)
    assert v1.dtype == v2.dtype and np.array_equal(v1, v2)
    fields = ("t", "improvement", "ratio", "cost", "cap_binding", "ns")
    assert (c1 is None) == (c2 is None)
    if c1 is not None:
        assert [getattr(c1, f) for f in fields] == [getattr(c2, f) for f in fields]
        assert all(type(getattr(c1, f)) is type(getattr(c2, f)) for f in fields)


@pytest.mark.parametrize("k", [1, 2, 7, 8, 9, 31, 32])
def test_top_rows_is_top_row_by_row_on_ties(k):
    rng = np.random.default_rng(k)
    a = np.abs(np.round(rng.normal(size=(6, 32)) * 1.5))
    a[0] = 0.0
    a[1] = 2.0
    got = nb.top_rows(a, k)
    for i in range(a.shape[0]):
        assert np.array_equal(got[i], nb._top(a[i], k))


@pytest.mark.parametrize("ef", [False, True])
@pytest.mark.parametrize("rule", ["cat", "catavg", "fixed", "hybrid", "alistarh"])
@pytest.mark.parametrize("scheme", ["s", "sq", "ss"])
def test_compress_rows_is_compress_row_by_row(scheme, rule, ef):
    """Ten rounds on two copies of the same nodes, one compressed row by row, one in a batch:
    every round the same update and Choice per node, and the rules end in the same state.
    With error feedback each node compresses v = g + e and keeps e = v - q, as the simulator.
    (fixed: T = 3; hybrid: a scan every 3 rounds, its last T between them.)"""
    sch = SCHEMES[scheme]
    n, d = 7, 64
    rng = np.random.default_rng(7)
    one = nodes_of(sch, rule, d, n, PACKET)
    batch = nodes_of(sch, rule, d, n, PACKET)
    rng_one = [np.random.default_rng([3, k]) for k in range(n)]
    rng_batch = [np.random.default_rng([3, k]) for k in range(n)]
    e = np.zeros((n, d), dtype=np.float32)
    for _ in range(10):
        g = tied_rows(n, d, rng)
        v = (g.astype(np.float64) * 0.25 + e).astype(np.float32) if ef else g
        scale = 1.0 if ef else 0.25
        want = [nb.compress(v[k], sch, one[0][k], one[1][k], one[2][k], scale, rng_one[k]) for k in range(n)]
        got = nb.compress_rows(v, sch, batch[0], batch[1], batch[2], [scale] * n, rng_batch)
        for k in range(n):
            assert_same(want[k], got[k])
            if ef:
                e[k] = v[k]
                e[k][got[k][0]] -= got[k][1]
        if rule == "catavg" and sch != SCHEME_SS:
            observe_round(one[0], batch[0], want, got, d)
    for r1, r2 in zip(one[0], batch[0]):
        assert (r1.calls, r1.last_t) == (r2.calls, r2.last_t)


@pytest.mark.parametrize("scheme", ["s", "sq", "ss"])
def test_compress_rows_grows_candidates_per_row_and_keeps_caps(scheme):
    """d above the first candidate set (1,024) on a link that takes every T: rows whose T is
    proven early stop at K = 1,024 while others grow; each row's t_max differs, a cap binds on
    some rows; and rules that do not scan (fixed T, Alistarh, hybrid between its scans) mixed
    into the same batch."""
    sch = SCHEMES[scheme]
    n, d = 6, 5000
    rng = np.random.default_rng(11)
    g = rng.standard_t(1.5, size=(n, d)).astype(np.float32)
    g[1] = np.round(g[1])
    g[2] = rng.normal(size=d)
    kinds = [("cat", 0), ("cat", 0), ("cat", 0), ("fixed", 40), ("alistarh", 0), ("hybrid", 2)]
    for cap in (None, 300):
        rules = [[cat.Rule(kind, p) for kind, p in kinds] for _ in range(2)]
        cms = [CostModel(AFFINE, d, sch) for _ in range(n)]
        t_maxes = [min(cm.t_max, 2000 + 500 * k) for k, cm in enumerate(cms)]
        tables = [[nb.CostTable(cm) for cm in cms] for _ in range(2)]
        rngs = [[np.random.default_rng([5, k]) for k in range(n)] for _ in range(2)]
        for rnd in range(3):
            x = g * (1.0 + rnd)
            want = [nb.compress(x[k], sch, rules[0][k], tables[0][k], t_maxes[k], 0.5, rngs[0][k], 0, cap)
                    for k in range(n)]
            got = nb.compress_rows(x, sch, rules[1], tables[1], t_maxes, [0.5] * n, rngs[1], 0, cap)
            for w, h in zip(want, got):
                assert_same(w, h)
            ts = [h[2].t for h in got[:3]]
            assert min(ts) < 1024 < max(ts) if cap is None else max(ts) == cap
        for r1, r2 in zip(*rules):
            assert (r1.calls, r1.last_t) == (r2.calls, r2.last_t)


def test_compress_rows_fp16_and_a_cap_that_binds():
    rng = np.random.default_rng(2)
    n, d = 5, 200
    g = tied_rows(n, d, rng)
    g[4] = 7.0  # binary16 holds it
    for sch in (SCHEME_S, SCHEME_SQ):
        a = nodes_of(sch, "cat", d, n, AFFINE)
        b = nodes_of(sch, "cat", d, n, AFFINE)
        want = [nb.compress(g[k], sch, a[0][k], a[1][k], a[2][k], 0.1, None, 1, 3) for k in range(n)]
        got = nb.compress_rows(g, sch, b[0], b[1], b[2], [0.1] * n, None, 1, 3)
        for w, h in zip(want, got):
            assert_same(w, h)
        assert any(h[2].cap_binding for h in got)


def test_compress_rows_refuses_as_compress_does():
    g = np.ones((3, 10), dtype=np.float32)
    g[1, 4] = np.nan
    rules, tables, t_maxes = nodes_of(SCHEME_SQ, "cat", 10, 3, PACKET)
    with pytest.raises(ValueError, match="gradient entry 4 is not finite"):
        nb.compress_rows(g, SCHEME_SQ, rules, tables, t_maxes, [1.0] * 3)
    with pytest.raises(ValueError, match="CAT: no feasible T"):
        nb.compress_rows(np.ones((2, 10), dtype=np.float32), SCHEME_SQ, rules[:2], tables[:2], [0, 5], [1.0] * 2)
    with pytest.raises(ValueError, match="empty gradient"):
        nb.compress_rows(np.zeros((2, 0), dtype=np.float32), SCHEME_SQ, rules[:2], tables[:2], [5, 5], [1.0] * 2)


@pytest.fixture(scope="module")
def data() -> ds.Dataset:
    return ds.synthetic_rcv1_like(n=900, d=120, nnz_per_row=9, seed=4)


@pytest.mark.parametrize("nodes", [1, 5])
def test_stacked_parts_equal_the_per_part_references(data, nodes):
    p = make_problem(data, nodes=nodes, mode="skewed", lam=1e-3, seed=1)
    x = np.random.default_rng(0).normal(size=p.dim)
    fs, gs = p.loss_grads(x)
    for k, (X, y) in enumerate(p.parts):
        f, g = ds.loss_grad_np(X, y, x, p.lam, p.kind)
        assert fs[k] == f and np.array_equal(gs[k], g)
    assert p.accuracy(x) == p.accuracy(x, stacked=False)
    assert p.loss_grad(x)[0] == p.loss_grad(x, stacked=False)[0]
    rows = [np.random.default_rng(k).choice(X.shape[0], size=min(17, X.shape[0]), replace=False)
            for k, (X, _) in enumerate(p.parts)]
    fb, gb = p.loss_grads(x, rows)
    for k, (X, y) in enumerate(p.parts):
        f, g = ds.loss_grad_np(X[rows[k]], y[rows[k]], x, p.lam, p.kind)
        assert fb[k] == f and np.array_equal(gb[k], g)


def test_stacked_parts_equal_the_references_on_softmax():
    digits = ds.load_builtin("digits")  # dense in scikit-learn: stacked as CSR
    p = make_problem(ds.Dataset(ds.sp.csr_matrix(digits.X), digits.y, digits.classes, "digits-csr"),
                     nodes=3, mode="even", lam=1e-3, seed=0)
    assert p.kind == "softmax" and p.stacked is not None
    x = np.random.default_rng(1).normal(size=p.dim) * 0.5
    fs, gs = p.loss_grads(x)
    ref_f, ref_g = p.loss_grads(x, stacked=False)
    assert fs == ref_f and np.array_equal(gs, ref_g)
    assert p.accuracy(x) == p.accuracy(x, stacked=False)


def test_dense_parts_are_not_stacked():
    p = make_problem(ds.load_builtin("digits-binary"), nodes=2, lam=1e-3)
    assert p.stacked is None
    x = np.random.default_rng(2).normal(size=p.dim)
    assert np.array_equal(p.loss_grads(x)[1], p.loss_grads(x, stacked=False)[1])


RUNS = [dict(scheme="sq", rule="catavg"), dict(scheme="s", rule="cat", error_feedback=True),
        dict(scheme="ss", rule="catavg"), dict(scheme="ss", rule="cat", error_feedback=True),
        dict(scheme="sq", rule="cat", batch=40), dict(scheme="s", rule="catavg", error_feedback=True, fmt=1),
        dict(scheme="sq", rule="alistarh"), dict(scheme="sq", rule="fixed", rule_param=8, error_feedback=True),
        dict(scheme="identity", rule="identity"), dict(scheme="sq", rule="cat", profile="ieee802154-6lowpan-coap")]


@pytest.mark.parametrize("kw", RUNS, ids=lambda kw: "-".join(f"{v}" for v in kw.values()))
def test_a_batched_run_equals_the_node_by_node_run(data, kw):
    """Every SimResult array but the wall-clocks (select_s, round_s), bit for bit."""
    p = make_problem(data, nodes=5, mode="skewed", lam=1e-3, seed=2)
    cfg = SimConfig(rounds=25, seed=3, **kw)
    a = simulate(p, cfg, progress=False, batched=False)
    b = simulate(p, cfg, progress=False, batched=True)
    for name in ("loss", "grad_norm", "accuracy", "T", "entries", "frame_bytes", "bits", "bytes", "packets",
                 "seconds", "joules", "cost", "improvement", "down_entries", "x_final"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
    if cfg.error_feedback:
        assert all(np.array_equal(u, v) for u, v in zip(a.ef_memory, b.ef_memory))
    assert (b.select_s > 0).all()
