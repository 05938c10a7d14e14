"""The simulator of eq. (10): against plain GD, determinism, error feedback, costs, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from aggregator.lab import datasets as ds
from aggregator.errors import UserError
from aggregator.lab import results
from aggregator.lab.engine import Infeasible, SimConfig, recost, simulate
from aggregator.lab.pricing import COST_METRICS, messages
from aggregator.lab.problem import DataSpecError, Problem, load_data, make_problem
from aggregator.cli import main
from edge.cost import CostModel
from edge.frame import frame_length, index_bits
from edge.profile import LINK_METRICS, PAPER_METRICS, load_profile


@pytest.fixture(scope="module")
def data() -> ds.Dataset:
    return ds.synthetic_rcv1_like(n=1500, d=400, nnz_per_row=12, seed=3)


@pytest.fixture(scope="module")
def prob2(data: ds.Dataset) -> Problem:
    p = make_problem(data, nodes=2, mode="even", lam=1e-3, seed=0)
    p.solve()
    return p


def gd_direct(p: Problem, rounds: int, step: float = 1.0) -> tuple[list[float], np.ndarray]:
    """Plain GD on F = (1/n) sum f_k written out directly: x <- x - (step/L) grad F(x)."""
    x = np.zeros(p.dim)
    losses = []
    for _ in range(rounds):
        fs, gs = zip(*(ds.loss_grad_np(X, y, x, p.lam, p.kind) for X, y in p.parts))
        losses.append(float(np.mean(fs)))
        x = x - step / p.L * np.mean(gs, axis=0)
    return losses, x


def test_identity_equals_plain_gd(prob2: Problem) -> None:
    res = simulate(prob2, SimConfig(scheme="identity", rule="identity", rounds=15), progress=False)
    losses, x = gd_direct(prob2, 15)
    np.testing.assert_allclose(res.loss[:15], losses, rtol=1e-6)
    np.testing.assert_allclose(res.x_final, x, rtol=1e-4, atol=1e-6)  # float32 model
    assert (res.T == prob2.dim).all() and (res.entries == prob2.dim).all()
    # a GD round on F with step 1/L descends (L-smooth F)
    assert np.all(np.diff(res.loss) < 0)


def test_s_at_t_equal_d_is_gd(prob2: Problem) -> None:
    gd = simulate(prob2, SimConfig(scheme="identity", rule="identity", rounds=10), progress=False)
    s = simulate(prob2, SimConfig(scheme="s", rule="fixed", rule_param=prob2.dim, rounds=10),
                 progress=False)
    np.testing.assert_array_equal(s.loss, gd.loss)
    np.testing.assert_array_equal(s.x_final, gd.x_final)
    # the S frame carries indices too: more bits than GD's under the payload model of eq. (5)
    assert s.bits.sum() > gd.bits.sum()


def test_seed_determinism_ss(prob2: Problem) -> None:
    cfg = SimConfig(scheme="ss", rule="cat", rounds=8, seed=7)
    a = simulate(prob2, cfg, progress=False)
    b = simulate(prob2, cfg, progress=False)
    np.testing.assert_array_equal(a.loss, b.loss)
    np.testing.assert_array_equal(a.entries, b.entries)
    np.testing.assert_array_equal(a.bits, b.bits)
    c = simulate(prob2, SimConfig(scheme="ss", rule="cat", rounds=8, seed=8), progress=False)
    assert not np.array_equal(a.x_final, c.x_final)


def test_minibatch_determinism(prob2: Problem) -> None:
    cfg = SimConfig(scheme="s", rule="cat", rounds=6, batch=64, eval_every=2, seed=1)
    a = simulate(prob2, cfg, progress=False)
    b = simulate(prob2, cfg, progress=False)
    np.testing.assert_array_equal(a.x_final, b.x_final)
    assert np.isfinite(a.loss[[0, 2, 4, 6]]).all() and np.isnan(a.loss[[1, 3, 5]]).all()


def test_error_feedback_invariant(prob2: Problem) -> None:
    """With EF every node's sent updates plus its memory add up to its scaled gradients:
    sum_r q_kr + e_k = sum_r g_kr / L, so x_R = -(1/n) sum_k (sum_r g_kr / L - e_k)."""
    grads: list[list[np.ndarray]] = []
    cfg = SimConfig(scheme="s", rule="fixed", rule_param=5, rounds=12, error_feedback=True)
    res = simulate(prob2, cfg, progress=False, callback=lambda r, x, g: grads.append([v.copy() for v in g]))
    n = prob2.nodes
    scale = 1.0 / prob2.L
    total = [sum(gr[k] for gr in grads) * scale for k in range(n)]
    expect = -sum(total[k] - res.ef_memory[k] for k in range(n)) / n
    np.testing.assert_allclose(res.x_final, expect, atol=1e-4 * float(np.abs(expect).max()))
    assert all(np.abs(e).max() > 0 for e in res.ef_memory)
    off = simulate(prob2, SimConfig(scheme="s", rule="fixed", rule_param=5, rounds=12), progress=False)
    assert off.ef_memory is None
    assert not np.array_equal(off.x_final, res.x_final)


def test_ef_identity_is_gd(prob2: Problem) -> None:
    a = simulate(prob2, SimConfig(scheme="identity", rule="identity", rounds=5, error_feedback=True),
                 progress=False)
    b = simulate(prob2, SimConfig(scheme="identity", rule="identity", rounds=5), progress=False)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-6)


def test_ef_reaches_where_biased_stalls() -> None:
    """Four nodes: CAT top-T without memory stalls where local gradients do not vanish at x*;
    with error feedback it gets an order of magnitude closer."""
    d = ds.synthetic_rcv1_like(n=2000, d=300, nnz_per_row=10, seed=1)
    p = make_problem(d, nodes=4, mode="even", lam=1e-3, seed=0)
    p.solve()
    g0 = p.loss_grad(np.zeros(p.dim))[0] - p.f_star
    base = dict(scheme="s", rule="cat", rounds=400, profile="paper-packet-128-64-128")
    off = simulate(p, SimConfig(**base), progress=False)
    on = simulate(p, SimConfig(**base, error_feedback=True), progress=False)
    assert off.gap[-50:].min() > 0.1 * g0          # stalled: no progress over the last rounds
    assert on.gap.min() < 0.02 * g0
    assert on.gap.min() < 0.1 * off.gap.min()


def test_costs_match_profiles(prob2: Problem) -> None:
    pp = simulate(prob2, SimConfig(scheme="sq", rule="cat", rounds=5, profile="paper-packet-128-64-128"),
                  progress=False)
    d = prob2.dim
    for r in range(5):
        for k in range(2):
            t = int(pp.entries[r, k])
            payload = 64 + t * index_bits(d)                      # S+Q: one FPP + T indices (eq. 5)
            assert pp.bits[r, k] == 8 * (128 * math.ceil(payload / 1024) + 64)  # eq. (6)
            assert pp.frame_bytes[r, k] == frame_length(d, t, 2, 0, False, 0, k, r)
    link = simulate(prob2, SimConfig(scheme="s", rule="cat", rounds=30, profile="ieee802154-6lowpan-udp"),
                    progress=False)
    prof = load_profile("ieee802154-6lowpan-udp")
    cm = CostModel(prof, d, 1, None, 0, False, 0, 1, 0)
    assert (link.T <= cm.t_max).all()
    for r in (0, 29):
        cm.set_round(r)
        t = int(link.entries[r, 1])
        lc = cm.link(t)
        assert link.frame_bytes[r, 1] == cm.frame_bytes(t)
        assert link.bytes[r, 1] == lc.tx_bytes and link.packets[r, 1] == lc.packets
        assert link.joules[r, 1] == pytest.approx(lc.joules) and link.cost[r, 1] == pytest.approx(lc.joules)
    assert (link.select_s > 0).all() and np.isfinite(link.accuracy).all()


def test_recost_equals_running_there(prob2: Problem) -> None:
    a = simulate(prob2, SimConfig(scheme="s", rule="fixed", rule_param=9, rounds=6,
                                  profile="paper-payload-fpp64"), progress=False)
    b = simulate(prob2, SimConfig(scheme="s", rule="fixed", rule_param=9, rounds=6, profile="ble5-1m-dle"),
                 progress=False)
    c = recost(a, "ble5-1m-dle")
    assert c["feasible"]
    for m in ("bits", "bytes", "packets", "seconds", "joules"):
        np.testing.assert_allclose(c[m], getattr(b, m))
    np.testing.assert_array_equal(a.loss, b.loss)
    big = simulate(prob2, SimConfig(scheme="s", rule="fixed", rule_param=300, rounds=2), progress=False)
    assert not recost(big, "lorawan-eu868-sf7")["feasible"]


def test_infeasible_link(prob2: Problem) -> None:
    with pytest.raises(Infeasible):
        simulate(prob2, SimConfig(scheme="s", rule="fixed", rule_param=200, rounds=1,
                                  profile="lorawan-eu868-sf7"), progress=False)
    with pytest.raises(Infeasible):  # GD's d floats never fit one LoRa frame
        simulate(prob2, SimConfig(scheme="identity", rule="identity", rounds=1,
                                  profile="lorawan-eu868-sf7"), progress=False)


def test_softmax_and_skewed_split() -> None:
    p = make_problem(ds.load_builtin("digits"), nodes=3, mode="skewed", lam=1e-3, seed=0, alpha=0.3)
    assert p.kind == "softmax" and p.dim == 10 * 64
    sizes = [X.shape[0] for X, _ in p.parts]
    assert len(set(sizes)) > 1
    res = simulate(p, SimConfig(scheme="s", rule="hybrid", rule_param=3, rounds=20), progress=False)
    assert res.loss[-1] < res.loss[0] and res.accuracy[-1] > 0.2  # chance: 0.1
    assert (res.T[0] == res.T[1]).all() and (res.T[1] == res.T[2]).all()  # hybrid: T reused between CATs


def test_stop_gap_and_reach(prob2: Problem) -> None:
    g0 = prob2.loss_grad(np.zeros(prob2.dim))[0] - prob2.f_star
    res = simulate(prob2, SimConfig(scheme="identity", rule="identity", rounds=500, stop_gap=0.1 * g0),
                   progress=False)
    r = res.first_reach(0.1 * g0)
    assert r == res.rounds and res.gap[-1] <= 0.1 * g0 < res.gap[-2]
    v, ok = res.to_reach(0.1 * g0, "bits")
    assert ok and v == res.bits.sum()


def test_cli_simulate_and_partition(tmp_path, capsys) -> None:
    part = tmp_path / "part"
    assert main(["partition", "--dataset", "synthetic", "--rows", "800", "--features", "200", "--nnz", "8",
                 "--nodes", "2", "--mode", "skewed", "--out", str(part)]) == 0
    man = json.loads((part / "partition.json").read_text())
    assert [n["file"] for n in man["nodes"]] == ["node-0.catd", "node-1.catd"]
    out = tmp_path / "run"
    assert main(["simulate", "--data", str(part), "--nodes", "2", "--scheme", "sq", "--rule", "cat",
                 "--rounds", "12", "--target", "0.5", "--profile", "ieee802154-6lowpan-coap", "--out", str(out),
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "s/round" in text and "1,000 rounds" in text
    for f in ("run.json", "rounds.csv", "nodes.csv", "report.md", "simulate.png", "simulate.svg"):
        assert (out / f).exists(), f
    assert "cat-aggregator simulate" in (out / "report.md").read_text()
    rows = (out / "nodes.csv").read_text().splitlines()
    assert len(rows) == 1 + 12 * 2


def test_cli_user_errors(capsys) -> None:
    assert main(["simulate", "--data", "/nonexistent/file.svm", "--quiet"]) == 2
    assert main(["simulate", "--rule", "fixed", "--rows", "300", "--features", "50", "--quiet"]) == 2
    assert main(["simulate", "--profile", "no-such-profile", "--rows", "300", "--features", "50",
                 "--rounds", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("cat-aggregator:") == 3


def test_run_log_round_trip(prob2: Problem, tmp_path) -> None:
    """`results.load` reads back exactly what `SimResult.save` wrote (NaN where not evaluated)."""
    res = simulate(prob2, SimConfig(scheme="s", rule="cat", rounds=5, batch=50, eval_every=2,
                                    profile="ble5-1m-dle"), progress=False)
    res.save(tmp_path / "run")
    back = results.load(tmp_path / "run")
    assert back.rounds == 5 and back.f_star == res.f_star and back.label == res.label
    for name in results.ROUND_COLUMNS[:3]:
        np.testing.assert_array_equal(getattr(back, name), getattr(res, name))
    assert np.isnan(back.loss[1]) and np.isfinite(back.loss[2])  # mini-batch: loss every 2nd model
    np.testing.assert_array_equal(back.down_entries[:5], res.down_entries[:5])
    for name in results.NODE_COLUMNS:  # floats are written with repr: they read back exactly
        np.testing.assert_array_equal(getattr(back, name), getattr(res, name))
    assert back.T.dtype == np.int64 and back.bits.dtype == np.float64
    with pytest.raises(results.RunLogError, match="no run.json"):
        results.load(tmp_path)
    (tmp_path / "run" / "nodes.csv").write_text("round,node,T\n0,0,x\n")
    with pytest.raises(results.RunLogError, match="not a readable run log"):
        results.load(tmp_path / "run")


def test_cost_metrics_are_the_profiles() -> None:
    """The run's metric columns are edge.profile's names: every link metric, paper ones first."""
    assert set(COST_METRICS) == set(LINK_METRICS) and COST_METRICS[:len(PAPER_METRICS)] == PAPER_METRICS


def test_messages_split_at_the_largest_message() -> None:
    lora = load_profile("lorawan-eu868-sf7")
    mx = int(lora["message"]["max_bytes"])
    assert messages(lora, mx) == [mx]                 # exactly the largest: one message
    assert messages(lora, mx + 1) == [mx, 1]          # one byte over: a second message
    assert messages(lora, 2 * mx) == [mx, mx]
    assert messages(lora, 1) == [1]


def test_bad_data_specs_are_data_spec_errors(tmp_path) -> None:
    assert issubclass(DataSpecError, UserError) and issubclass(Infeasible, UserError)
    with pytest.raises(DataSpecError, match="partition.json"):
        load_data(str(tmp_path))
    bad = tmp_path / "bad.catd"
    ds.write_datafile(bad, np.eye(4, dtype=np.float32), np.array([0, 1, 0, 1]))
    bad.write_bytes(bad.read_bytes()[:-1])            # one byte short
    with pytest.raises(DataSpecError, match="truncated"):
        load_data(str(bad))
    with pytest.raises(DataSpecError, match="cannot give 5 nodes 1 rows each from 4 rows"):
        make_problem(ds.Dataset(np.eye(4, dtype=np.float32), np.array([0, 1, 0, 1]), 2, "tiny"), nodes=5)
    assert load_data("IRIS").name == "iris"            # builtin names in any case


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the diverging run's inf - inf
def test_cli_one_line_errors_past_the_limits(tmp_path, capsys) -> None:
    """Errors a user can cause print one line and exit 2: a model that diverges, a grid T over d,
    a truncated data file, a list flag that is not integers."""
    small = ["--rows", "300", "--features", "50", "--nnz", "5", "--quiet"]
    bad = tmp_path / "bad.catd"
    ds.write_datafile(bad, np.eye(4, dtype=np.float32), np.array([0, 1, 0, 1]))
    bad.write_bytes(bad.read_bytes()[:-1])
    assert main(["simulate", *small, "--rounds", "2", "--step", "inf", "--out", str(tmp_path / "a")]) == 2
    assert main(["simulate", "--data", str(bad), "--quiet", "--rounds", "1"]) == 2
    assert main(["experiment", "radios", *small, "--nodes", "1", "--rounds", "5", "--grid", "1,51",
                 "--profiles", "ble5-1m-dle", "--out", str(tmp_path / "r")]) == 2   # d = 50: T = 51 is one past
    assert main(["experiment", "memory", *small, "--nodes-list", "1,x", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all(ln.startswith("cat-aggregator: ") for ln in err), err
    assert "model diverged at round 0" in err[0] and "truncated" in err[1]
    assert "T=51 exceeds the largest T whose frame fits the link (50)" in err[2]
    assert "--nodes-list: expected comma-separated integers" in err[3]

