"""Every experiment at a tiny size: it runs, writes its table, plots and report, prints its ratios."""

from __future__ import annotations

import argparse
import re

import numpy as np
import pytest

from aggregator.cli import main
from aggregator.lab import datasets as ds
from aggregator.lab.engine import Infeasible, SimConfig, simulate
from aggregator.lab.experiments.common import priced
from aggregator.lab.pricing import PAYLOAD, link_models, profile_dict
from aggregator.lab.problem import make_problem
from edge.cat import SCHEME_S

TINY = ["--rows", "2000", "--features", "200", "--nnz", "10", "--quiet"]


def _files(out, *names):
    for n in names:
        assert (out / n).exists(), n
    text = (out / "report.md").read_text()
    assert "cat-aggregator experiment" in text
    return text


@pytest.mark.slow
def test_alpha(tmp_path, capsys) -> None:
    out = tmp_path / "alpha"
    assert main(["experiment", "alpha", *TINY, "--rounds", "30", "--points", "10", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    m = re.search(r"SpeedUp\(T = 1\) = alpha-bar / \(T/d\) = ([0-9.e+]+)", text)
    assert m and 1.0 <= float(m.group(1)) <= 250.0  # alpha(1) >= 1/d, so speed-up >= 1
    _files(out, "alpha.csv", "alpha.md", "alpha.png", "alpha.svg", "alpha-rounds.png", "report.md")
    rows = (out / "alpha.csv").read_text().splitlines()
    last = rows[-1].split(",")
    assert last[0] == "200" and float(last[4]) == pytest.approx(1.0)  # alpha-bar(d) = 1


@pytest.mark.slow
def test_bits_vs_t(tmp_path, capsys) -> None:
    out = tmp_path / "bvt"
    assert main(["experiment", "bits-vs-T", *TINY, "--rounds", "1000", "--points", "6", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    ratios = re.findall(r"CAT/best = ([0-9.]+) \(within 10 %: (yes|NO)\)", text)
    assert len(ratios) == 2
    for r, ok in ratios:
        assert ok == "yes" and float(r) <= 1.10
    _files(out, "bits-vs-T.csv", "bits-vs-T.md", "cat-vs-best.csv", "bits-vs-T.png", "bits-vs-T.svg",
           "loss-packet.png", "loss-payload.svg")


@pytest.mark.slow
def test_paper_packet(tmp_path, capsys) -> None:
    out = tmp_path / "pp"
    assert main(["experiment", "paper-packet", *TINY, "--rounds", "150", "--out", str(out)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert re.fullmatch(r"bits ratio alistarh/cat S\+Q \(4 nodes, packet 128/64/128\): [0-9.]+( \(.*\))?",
                        lines[-2]), lines[-2]  # the last line is "wrote <dir>"
    assert lines[-1].startswith("wrote ")
    assert any(ln.startswith("bits ratio alistarh/cat S+Q (1 node, packet 576/64/512)") for ln in lines)
    text = _files(out, "paper-packet.csv", "paper-packet.md", "loss-4node-128-64-128.png",
                  "loss-1node-576-64-512.svg")
    assert "paper: about 6x" in text
    table = (out / "paper-packet.md").read_text()
    for m in ("GD", "Alistarh S+Q", "CAT S", "CAT S+Q", "CAT SS", "fixed T="):
        assert m in table


@pytest.mark.slow
def test_radios(tmp_path, capsys) -> None:
    out = tmp_path / "radios"
    assert main(["experiment", "radios", *TINY, "--nodes", "2", "--rounds", "300", "--grid", "2,4,8,16,64",
                 "--profiles", "ieee802154-raw,wifi-tcp-mqtt-esp32,lorawan-eu868-sf7,ethernet-udp",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"ieee802154-raw: CAT picks T [0-9]+\.\.[0-9]+", text)
    assert "CAT/best fixed T over" in text
    assert "duty cycle" in text  # LoRa: wall-clock at 1 %
    _files(out, "radios.csv", "radios.md", "cross.md", "fixed-T.csv", "fixed-T-per-link.png",
           "loss-wifi-tcp-mqtt-esp32.png")
    fx = (out / "fixed-T.csv").read_text()
    assert "infeasible" in fx  # T = 64 does not fit an 802.15.4 frame
    # whole-board energy and battery life on each link's default board, CAT against GD
    assert re.search(r"wifi-tcp-mqtt-esp32 on esp32 \(whole board, 2xaa, one round per 600 s\): CAT [\d.e+]+ J, "
                     r"GD [\d.e+]+ J to target \(GD/CAT [\d.]+\); battery life CAT [\d.e+]+ days, GD", text)
    assert "ieee802154-raw on nrf52840 (whole board" in text
    head = (out / "radios.csv").read_text().splitlines()[0].split(",")
    assert {"board", "cat_board_j", "gd_board_j", "cat_battery_days"} <= set(head)


@pytest.mark.slow
def test_energy_cat(tmp_path, capsys) -> None:
    out = tmp_path / "ecat"
    assert main(["experiment", "energy-cat", *TINY, "--nodes", "2", "--rounds", "200", "--schemes", "s",
                 "--pairs", "nrf52840:ieee802154-6lowpan-coap,stm32wl:lorawan-eu868-sf7", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for pair in ("nrf52840 on ieee802154-6lowpan-coap", "stm32wl on lorawan-eu868-sf7"):
        assert re.search(rf"s, {pair}: radio-only median T [\d.]+, \d+ rounds, [\d.e+]+ J.*; energy-aware median "
                         rf"T [\d.]+, \d+ rounds, [\d.e+]+ J.* = [\d.]+ x radio-only", text)
    _files(out, "energy-cat.csv", "energy-cat.md")
    assert "energy-aware_over_radio" in (out / "energy-cat.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("flag, message", [
    (["--pairs", "nrf52840"], "--pairs: 'nrf52840' is not BOARD:LINK"),
    (["--pairs", "nrf52840:"], "--pairs: 'nrf52840:' is not BOARD:LINK"),
    (["--pairs", "no-such-board:ieee802154-raw"], "no board profile"),
    (["--pairs", "nrf52840:no-such-link"], "no profile"),
    (["--battery", "no-such-cell"], "no battery profile"),
])
def test_energy_cat_refuses_a_bad_pair_in_one_line_before_writing(tmp_path, capsys, flag, message) -> None:
    out = tmp_path / "ecat"
    assert main(["experiment", "energy-cat", *TINY, *flag, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cat-aggregator: ") and message in err[0]
    assert not out.exists()


@pytest.mark.slow
def test_link_costs(tmp_path, capsys) -> None:
    """Both corrected links, every scheme, 1 and 2 nodes: a line per cell with both T and the ratio
    of joules to the target, the old run re-priced by the corrected model (checked against a
    re-pricing done here), the delta's share of a round, and the run whose C(T) carries it."""
    out = tmp_path / "lc"
    assert main(["experiment", "link-costs", *TINY, "--nodes", "1,2", "--rounds", "200", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for link in ("ieee802154-6lowpan-coap", "lorawan-eu868-sf7"):
        for scheme in ("s", "sq", "ss"):
            for n in (1, 2):
                assert re.search(rf"{link}, {scheme}, {n} node\(s\): T median [\d.]+ on the old cost, [\d.]+ on the "
                                 rf"corrected; joules to the target \(corrected pricing\) [\d.e+-]+ vs [\d.e+-]+, "
                                 rf"corrected/old [\d.]+.*the delta is [\d.]+ % of a node's round; C\(T\) with the "
                                 rf"delta's share: T median [\d.]+, updates \+ fetches [\d.e+-]+ J = [\d.]+ x", text), \
                    (link, scheme, n)
    _files(out, "link-costs.csv", "link-costs.md", "link-costs.png", "link-costs.svg")
    import csv
    rows = list(csv.DictReader((out / "link-costs.csv").open()))
    assert len(rows) == 12
    for r in rows:
        assert float(r["corrected_over_old"]) == pytest.approx(float(r["corrected_uplink_j"]) / float(r["old_uplink_j"]))
        assert float(r["with-delta_over_corrected"]) == pytest.approx(
            float(r["with-delta_with_downlink_j"]) / float(r["corrected_with_downlink_j"]))
        assert 0 < float(r["corrected_downlink_share"]) < 1
        assert float(r["corrected_with_downlink_j"]) > float(r["corrected_uplink_j"])
    # the first row by hand: CAT on the legacy packet model, re-priced by the walked profile
    from aggregator.lab.experiments.link_costs import old_profile
    from aggregator.lab.cliargs import problem_from_args
    from aggregator.lab.experiments.common import common_args
    q = argparse.ArgumentParser()
    common_args(q)
    p = problem_from_args(q.parse_args(TINY), 1)
    p.solve()
    gap0 = float(p.loss_grad(np.zeros(p.dim))[0] - p.f_star)
    res = simulate(p, SimConfig(profile=old_profile("ieee802154-6lowpan-coap"), scheme="s", metric="joules",
                                rounds=200, stop_gap=0.1 * gap0), progress=False)
    j, _ = priced(res, "ieee802154-6lowpan-coap", "joules").to_reach(0.1 * gap0, "joules")
    first = next(r for r in rows if (r["link"], r["scheme"], r["nodes"]) == ("ieee802154-6lowpan-coap", "s", "1"))
    assert float(first["old_uplink_j"]) == pytest.approx(j)


def test_link_costs_old_lorawan_is_the_same_link_without_its_receive_windows() -> None:
    from aggregator.lab.experiments.link_costs import old_profile
    from edge.cost import LinkCost
    from edge.lora import rx_windows
    new = profile_dict("lorawan-eu868-sf7")
    old = old_profile("lorawan-eu868-sf7")
    assert rx_windows(old["lora"]) == () and len(rx_windows(new["lora"])) == 2
    windows_j = sum(s for _, _, s in rx_windows(new["lora"])) * new["radio"]["rx_power"]
    for n in (1, 100, 242):
        assert LinkCost(new, n).joules - LinkCost(old, n).joules == pytest.approx(windows_j)
    assert "rx2_spreading_factor" in new["lora"]          # the shipped profile is untouched


def test_link_costs_refuses_a_link_without_an_older_cost(tmp_path, capsys) -> None:
    out = tmp_path / "lc"
    assert main(["experiment", "link-costs", *TINY, "--links", "ble5-1m-dle", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ble5-1m-dle: its cost has no older form" in err[0]
    assert not out.exists()


@pytest.mark.slow
def test_memory(tmp_path, capsys) -> None:
    out = tmp_path / "mem"
    assert main(["experiment", "memory", *TINY, "--rounds", "150", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for s in ("S", "S+Q", "SS"):
        for n in (1, 4):
            assert re.search(rf"^{re.escape(s)}, {n} node\(s\): without EF .*; with EF ", text, re.M)
    _files(out, "memory.csv", "memory.md", "loss-1node.png", "loss-4node.svg")
    assert (out / "memory.csv").read_text().count("\n") == 1 + 12


def test_priced_raises_one_past_the_link() -> None:
    """A run re-priced on a link whose largest message its frames exceed raises Infeasible
    (the experiments mark that cell); at exactly the largest T that fits it is priced."""
    p = make_problem(ds.synthetic_rcv1_like(n=300, d=400, nnz_per_row=8, seed=2), nodes=1, lam=1e-3)
    rounds = 2
    t_max = link_models(profile_dict("lorawan-eu868-sf7"), p.dim, SCHEME_S, "seconds", 0, False, 1,
                        rounds)[0].t_max_all_rounds
    fits = simulate(p, SimConfig(scheme="s", rule="fixed", rule_param=t_max, rounds=rounds, profile=PAYLOAD),
                    progress=False)
    over = simulate(p, SimConfig(scheme="s", rule="fixed", rule_param=t_max + 1, rounds=rounds, profile=PAYLOAD),
                    progress=False)
    on_lora = priced(fits, "lorawan-eu868-sf7")
    assert on_lora.config["profile"] == "lorawan-eu868-sf7" and (on_lora.seconds > 0).all()
    with pytest.raises(Infeasible, match=f"{t_max + 1} entries per frame exceed the largest that fits the link "
                                         rf"\({t_max}\)"):
        priced(over, "lorawan-eu868-sf7")



def test_link_costs_rule_reaches_every_run(tmp_path, capsys, monkeypatch) -> None:
    """--rule catavg: every run (old, corrected, with the delta's share) chooses T by it, and the
    report names it; the runs themselves are real (the spy only records their configs)."""
    from aggregator.lab.experiments import common
    seen: list[str] = []
    real = common.Runner.run

    def spy(self, n, cfg):
        seen.append(cfg.rule)
        return real(self, n, cfg)

    monkeypatch.setattr(common.Runner, "run", spy)
    out = tmp_path / "lc"
    assert main(["experiment", "link-costs", *TINY, "--links", "lorawan-eu868-sf7", "--nodes", "2", "--schemes",
                 "sq", "--rounds", "60", "--rule", "catavg", "--out", str(out)]) == 0
    assert seen == ["catavg"] * 3
    assert "catavg" in (out / "report.md").read_text()
    with pytest.raises(SystemExit) as e:
        main(["experiment", "link-costs", *TINY, "--rule", "fixed", "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "argument --rule: invalid choice: 'fixed'" in err[0]
