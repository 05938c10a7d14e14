"""C(T) with the node's share of the delta (edge/deltacost.py), and the simulator option."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aggregator.gateway.wire import delta_frame_length
from aggregator.lab import datasets as ds
from aggregator.lab.energy import downlink_energy
from aggregator.lab.engine import SimConfig, SimError, delta_fetch, simulate
from aggregator.lab.problem import make_problem
from edge import cat, compress, np_backend as nb, topk
from edge.cat import SCHEME_S, SCHEME_SQ
from edge.cost import CostModel
from edge.deltacost import DeltaShare
from edge.profile import load_profile
from test_cat_core import as_array, brute_force
from test_profiles import needs_micropython, run_micropython

LINK = "ieee802154-6lowpan-coap"


def _share(d: int = 300, nodes: int = 4, scheme: int = SCHEME_S) -> tuple[DeltaShare, CostModel, dict]:
    prof = load_profile(LINK)
    cm = CostModel(prof, d, scheme, "joules", job=1)
    return DeltaShare(cm, nodes, delta_fetch(prof, d, 0, "joules")), cm, prof


def test_the_cost_is_the_frame_plus_the_fetch_of_n_t_entries_up_to_d() -> None:
    """n T entries while n T < d; at T = d / n exactly the delta is the whole model, one past it
    too (the delta never has more than d entries)."""
    ds_, cm, prof = _share(d=300, nodes=4)
    for t in (1, 2, 74, 75, 76):
        m = min(300, 4 * t)
        e = downlink_energy(prof, delta_frame_length(300, m, 0, 0, 0))
        assert ds_.delta_entries(t) == m
        assert ds_.cost(t) == pytest.approx(cm.cost(t) + e.tx_j + e.rx_j)
    assert ds_.delta_entries(75) == ds_.delta_entries(76) == 300
    assert ds_(7) == ds_.cost(7) and ds_.t_max == cm.t_max and ds_.frame_bytes(7) == cm.frame_bytes(7)


@pytest.mark.parametrize("scheme", [SCHEME_S, SCHEME_SQ])
def test_cat_on_the_delta_share_is_the_exact_argmax(scheme: int) -> None:
    """CAT's scan against the wrapped cost picks the T a brute force over every T picks, on both
    backends: the fetch term is a cost like any other."""
    rng = np.random.default_rng(5)
    for _ in range(5):
        d = 300
        ds_, _, _ = _share(d=d, nodes=4, scheme=scheme)
        g = rng.standard_t(2.0, d)
        ga = as_array(g)
        ws = compress.Workspace(d, d)
        n, s1, s2 = topk.select(ga, d, ws.idx)
        ch = cat.cat_choose(scheme, ga, ws.idx, n, s1, s2, ds_, ds_.t_max)
        assert ch.t == brute_force(scheme, ga, ws.idx, n, s1, s2, ds_, ds_.t_max)
        ch2, _, _, _ = nb.cat_choose(scheme, g, nb.CostTable(ds_), ds_.t_max)
        assert ch2.t == ch.t


def test_the_fetch_makes_a_larger_t_dearer_on_several_nodes() -> None:
    """On 4 nodes the share grows 4 entries per entry sent: CAT sends fewer entries than on the
    frame's cost alone (a heavy-tailed gradient, where the frame alone favours a larger T)."""
    rng = np.random.default_rng(1)
    g = rng.standard_t(1.5, 300)
    ds_, cm, _ = _share(d=300, nodes=4)
    t_frame = nb.cat_choose(SCHEME_S, g, nb.CostTable(cm), cm.t_max)[0].t
    t_share = nb.cat_choose(SCHEME_S, g, nb.CostTable(ds_), ds_.t_max)[0].t
    assert t_share < t_frame


def test_nodes_below_one_are_refused() -> None:
    _, cm, prof = _share()
    with pytest.raises(ValueError, match="nodes must be >= 1, got 0"):
        DeltaShare(cm, 0, delta_fetch(prof, 300, 0, "joules"))


def test_the_simulator_option_records_what_it_ran_and_refuses_what_it_cannot_price() -> None:
    p = make_problem(ds.synthetic_rcv1_like(n=600, d=60, nnz_per_row=6, seed=3), 2)
    p.solve()
    res = simulate(p, SimConfig(profile=LINK, metric="joules", rounds=5, delta_share=True), progress=False)
    assert res.config["delta_share"] and res.label.endswith("+delta")
    assert (res.down_entries[:5] > 0).all()
    with pytest.raises(SimError, match="needs a link profile and the joules or seconds metric"):
        simulate(p, SimConfig(profile=LINK, metric="bytes", rounds=2, delta_share=True), progress=False)
    with pytest.raises(SimError, match="needs a link profile"):
        simulate(p, SimConfig(profile="paper-packet-128-64-128", rounds=2, delta_share=True), progress=False)


@needs_micropython
def test_both_costs_on_top_of_a_model_run_on_micropython() -> None:
    """BoardCost (flashed with energy-aware jobs) and DeltaShare share CostOnTop's forwarding;
    on the board's interpreter they price what CPython prices."""
    prof = json.dumps(load_profile(LINK))
    code = f"""
import json
from edge.cost import CostModel
from edge.energycost import from_config
from edge.deltacost import DeltaShare
m = CostModel(json.loads({prof!r}), 1024, 2, "joules")
b = from_config(m, {{"power_w": 0.01, "entry_s": 1e-4, "round_j": 0.002}})
s = DeltaShare(b, 4, lambda e: 1e-6 * e)
b.set_round(3)
print(b.t_max == m.t_max, b.version == m.version, b.frame_bytes(5) == m.frame_bytes(5))
print(repr(b(5) - m.link(5).joules), repr(s(5) - b(5)), s.delta_entries(300))
"""
    flags, diffs = run_micropython(code, heap="512k").splitlines()
    assert flags.split() == ["True", "True", "True"]
    board, share, entries = diffs.split()
    assert float(board) == pytest.approx(0.01 * 1e-4 * 5 + 0.002, rel=1e-5)
    assert float(share) == pytest.approx(20e-6, rel=1e-5) and entries == "1024"
