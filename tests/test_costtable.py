"""CostModel.tabulate: the table gives exactly the walked costs, and CAT the same T."""

from __future__ import annotations

import numpy as np
import pytest

from edge.cat import cat_choose
from edge.cost import CostModel
from edge.energycost import BoardCost
from edge.profile import load_profile

SCHEME_S, SCHEME_SQ, SCHEME_SS = 1, 2, 3


def walked(m: CostModel, t: int) -> tuple[float, float, int]:
    lc = m.link(t)
    return lc.metric(m.metric), lc.joules, lc.packets


@pytest.mark.parametrize("name,metric", [
    ("ieee802154-6lowpan-coap", None),          # walked stack, joules (the table is shared)
    ("ieee802154-6lowpan-coap", "seconds"),     # a metric of its own next to the joules
    ("lorawan-eu868-sf7", None),                # priced packet by packet (edge.pktcost)
    ("serial-slip-115200", "bytes"),
])
def test_table_is_the_walk(name: str, metric: str | None) -> None:
    m = CostModel(load_profile(name), 4096, SCHEME_SQ, metric)
    n = min(m.t_max, 200)
    plain = [walked(m, t) for t in range(1, n + 1)]
    m.tabulate(n)
    assert m.table is not None and m.table[1] == n
    for t in range(1, n + 1):
        assert (m.cost(t), m.joules(t), m.packets(t)) == plain[t - 1]   # exact, not approximate
    # the first T past the table is walked, not read out of range
    if n < m.t_max:
        assert m.cost(n + 1) == walked(m, n + 1)[0]


def test_table_follows_the_cost_version() -> None:
    m = CostModel(load_profile("ieee802154-6lowpan-coap"), 1024, SCHEME_S)
    m.set_round(23)
    m.tabulate(128)
    v = m.version
    before = [m.cost(t) for t in range(1, 129)]
    m.set_round(24)  # the round's CBOR head grows from 1 to 2 bytes: every frame 1 byte longer
    assert m.version == v + 1
    assert m.cost(1) == walked(m, 1)[0]          # stale table not used
    arrays = m.table[2:]
    m.tabulate(128)
    assert m.table[0] == m.version
    assert [m.cost(t) for t in range(1, 129)] == [walked(m, t)[0] for t in range(1, 129)]
    assert [m.cost(t) for t in range(1, 129)] != before
    # refilled in place: a board allocates no new arrays in its fragmented heap at round 24
    assert all(new is old for new, old in zip(m.table[2:], arrays))
    assert [m.packets(t) for t in range(1, 129)] == [walked(m, t)[2] for t in range(1, 129)]


def test_a_new_version_with_more_entries_gets_new_arrays() -> None:
    """Refilling needs arrays that hold n entries; a larger n (a new config's K) gets new ones."""
    m = CostModel(load_profile("ieee802154-6lowpan-coap"), 1024, SCHEME_S, "seconds")
    m.set_round(23)
    m.tabulate(40)
    small = m.table[2]
    m.set_round(24)
    m.tabulate(60)
    assert m.table[1] == 60 and m.table[2] is not small and len(m.table[2]) == 60
    assert [(m.cost(t), m.joules(t), m.packets(t)) for t in range(1, 61)] == [walked(m, t) for t in range(1, 61)]


def test_table_clipped_at_t_max_and_grows() -> None:
    m = CostModel(load_profile("ieee802154-6lowpan-coap"), 4096, SCHEME_S)
    m.tabulate(m.t_max + 50)
    assert m.table[1] == m.t_max
    m = CostModel(load_profile("ieee802154-6lowpan-coap"), 4096, SCHEME_S)
    m.tabulate(10)
    first = m.table
    m.tabulate(10)
    assert m.table is first                      # same version, same n: kept
    m.tabulate(11)
    assert m.table[1] == 11


def test_paper_profile_has_no_table() -> None:
    m = CostModel(load_profile("paper-packet-128-64-128"), 1024, SCHEME_S)
    assert m.tabulated(128)                      # nothing to build: no walk, no table
    m.tabulate(128)
    assert m.table is None


def test_tabulated_says_when_tabulate_would_walk() -> None:
    """The node lets SS's sampler go only before a walk: tabulated(n) is False exactly when
    tabulate(n) has work (no table, a new cost version, more entries), True at t_max."""
    m = CostModel(load_profile("ieee802154-6lowpan-coap"), 4096, SCHEME_S)
    m.set_round(23)
    assert not m.tabulated(10)
    m.tabulate(10)
    assert m.tabulated(10) and m.tabulated(9) and not m.tabulated(11)
    m.set_round(24)                              # a new version: the table must be walked again
    assert not m.tabulated(10)
    m.tabulate(10)
    assert m.tabulated(10)
    m.tabulate(m.t_max)
    assert m.tabulated(m.t_max + 1)              # clipped at t_max: nothing more to walk
    bc = BoardCost(m, 0.1, 1e-5, 0.002)          # the energy-aware model forwards it
    assert bc.tabulated(m.t_max)
    bc.set_round(256)
    assert not bc.tabulated(1)


@pytest.mark.parametrize("scheme", [SCHEME_S, SCHEME_SQ, SCHEME_SS])
def test_cat_chooses_the_same_t(scheme: int) -> None:
    rng = np.random.default_rng(7)
    prof = load_profile("ieee802154-6lowpan-coap")
    for trial in range(20):
        g = rng.standard_normal(4096).astype(np.float32) * rng.uniform(0.01, 10)
        idx = np.argsort(-np.abs(g))[:128]
        s1 = float(np.sum(np.abs(g)))
        s2 = float(np.sum(g.astype(np.float64) ** 2))
        plain = CostModel(prof, 4096, scheme)
        tab = CostModel(prof, 4096, scheme)
        tab.tabulate(128)
        a = cat_choose(scheme, g, idx, 128, s1, s2, plain.cost, plain.t_max)
        b = cat_choose(scheme, g, idx, 128, s1, s2, tab.cost, tab.t_max)
        assert (a.t, a.improvement, a.cost) == (b.t, b.improvement, b.cost)


def test_board_cost_reads_the_table() -> None:
    m = CostModel(load_profile("ieee802154-6lowpan-coap"), 1024, SCHEME_S)
    bc = BoardCost(m, 0.1, 1e-5, 0.002)
    plain = [bc.cost(t) for t in range(1, 65)]
    bc.tabulate(64)
    assert m.table is not None
    assert [bc.cost(t) for t in range(1, 65)] == plain
    assert bc.joules(5) == m.link(5).joules and bc.packets(5) == m.link(5).packets
