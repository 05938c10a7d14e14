"""Energy budgets: a planned LoRa job checked by hand, run logs, the downlink, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from aggregator.lab import energy
from aggregator.gateway import wire
from aggregator.cli import main
from aggregator.gateway.metrics import MetricsLog
from edge.cost import LinkCost
from edge.frame import frame_length
from edge.profile import load_profile


def test_planned_lora_sf7_by_hand() -> None:
    """d = 1000, T = 10, S, float32, node 0, rounds < 24 (1-byte round field), no downlink.

    Frame (edge/frame.py payload_length): 15 B of small fields + d (1+3) + T (1+1) = 21;
    values 1 + 2 (bstr head of 40) + 40 = 43 -> 64; indices packed at ceil(log2 1000) = 10
    bits: 13 B + 2 -> 79 B payload; COSE_Mac0: 11 + 2 (bstr head of 79) + 79 + 9 = 101 B.
    LoRa (AN1200.13), SF7/125 kHz, CR 4/5, explicit header, CRC, no LDRO:
    PL = 101 + 13 (LoRaWAN) = 114; ceil((8*114 - 4*7 + 28 + 16) / (4*7)) = ceil(928/28) = 34;
    symbols 8 + 4.25 + 8 + 34*5 = 190.25; T_sym = 128/125 kHz = 1.024 ms -> 194.816 ms.
    Energy: 0.194816 s x 29 mA x 3.3 V (95.7 mW) = 18.6439 mJ sending, then class A RX1 (24
    symbols at SF7, 24.576 ms) and RX2 (6 symbols at SF12, 196.608 ms) with nothing in them:
    0.221184 s x 36.3 mW = 8.0290 mJ; 26.6729 mJ per round.
    1 % duty cycle at one round per 600 s: 0.194816/600 = 0.0325 % used, shortest interval
    19.4816 s, headroom x 30.80. Battery 2400 mAh x 3.6 x 3.0 V = 25,920 J:
    life = 25920 / (0.0266729/600) s = 6,748.4 days; with 5 uA sleep (15 uW): 5,045.9 days.
    """
    assert frame_length(1000, 10, 1, 0, False, 0, 0, 5) == 101
    prof = load_profile("lorawan-eu868-sf7")
    log = energy.log_planned(1000, 20, "s", 10, nodes=1, downlink="none")
    assert (log.frame_bytes == 101).all()
    b = energy.budget(log, prof, interval_s=600.0, capacity_mah=2400.0, voltage=3.0)
    nd = b["nodes"][0]
    air = 190.25 * 128 / 125000
    assert air == pytest.approx(0.194816)
    assert nd["airtime_s_per_round"] == pytest.approx(air, rel=1e-12)
    windows = 24 * 128 / 125e3 + 6 * 4096 / 125e3
    assert windows == pytest.approx(0.221184)
    e = air * 0.029 * 3.3 + windows * 0.0363
    assert nd["energy_j_per_round"] == pytest.approx(e, rel=1e-9)
    assert nd["energy_j_total"] == pytest.approx(20 * e, rel=1e-9)
    assert nd["uplink_rx_j_per_round"] == pytest.approx(windows * 0.0363, rel=1e-9)
    assert nd["downlink_rx_j_per_round"] == 0.0
    assert nd["duty_cycle_used"] == pytest.approx(air / 600)
    assert nd["duty_cycle_headroom"] == pytest.approx(0.01 - air / 600)
    assert nd["min_interval_s"] == pytest.approx(19.4816)
    assert nd["headroom_factor"] == pytest.approx(6.0 / air)
    assert b["battery_j"] == pytest.approx(25920.0)
    assert nd["battery_life_days"] == pytest.approx(6748.4, rel=1e-4)
    sleepy = energy.budget(log, prof, 600.0, 2400.0, 3.0, sleep_ua=5.0)
    assert sleepy["nodes"][0]["battery_life_days"] == pytest.approx(5045.9, rel=1e-4)
    fast = energy.budget(log, prof, 10.0, 2400.0, 3.0)
    assert fast["nodes"][0]["duty_cycle_headroom"] < 0  # one frame per 10 s breaks the 1 % limit


def test_delta_and_snapshot_lengths_match_wire() -> None:
    key = bytes(range(32))
    rng = np.random.default_rng(0)
    for d, t, rnd, fmt in [(1000, 0, 0, 0), (1000, 10, 30, 1), (47236, 400, 300, 0), (300, 290, 70000, 0)]:
        idx = np.sort(rng.choice(d, t, replace=False)).astype(np.int64)
        msg = wire.encode_delta(2, rnd, idx, np.ones(t, np.float32), key, fmt, d=d)
        assert len(msg) == energy.delta_frame_length(d, t, fmt, 2, rnd)
    snap = wire.encode_snapshot(2, 9, np.zeros(500, np.float32), key)
    assert len(snap) == energy.snapshot_frame_length(500, 2, 9)


def test_downlink_reverses_the_link() -> None:
    """A datagram to the node takes the radio as long as one from it; the node transmits only
    its link ACKs then (walked profile, one UDP datagram each way)."""
    prof = load_profile("ieee802154-6lowpan-udp")
    frame = 700
    lc = LinkCost(prof, frame)
    up = energy.uplink_energy(prof, frame)
    dn = energy.downlink_energy(prof, frame)
    r = prof["radio"]
    assert up.tx_j == pytest.approx(lc.tx_seconds * r["tx_power"])
    assert up.tx_j + up.rx_j == pytest.approx(lc.joules)
    acks = lc.packets * prof["stack"]["ack_bytes"] * 8 / r["bit_rate"]
    assert dn.airtime_s == pytest.approx(acks) and dn.tx_j == pytest.approx(acks * r["tx_power"])
    assert dn.radio_s == pytest.approx(lc.seconds)
    assert dn.rx_j == pytest.approx((lc.seconds - acks) * r["rx_power"])
    lora = load_profile("lorawan-eu868-sf7")
    big = energy.downlink_energy(lora, 600)  # over 242 B: three downlinks (242 + 242 + 116)
    parts = [LinkCost(lora, m).tx_seconds for m in (242, 242, 116)]
    assert big.rx_j == pytest.approx(sum(parts) * lora["radio"]["rx_power"])


def test_budget_from_simulated_run(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["simulate", "--rows", "600", "--features", "120", "--nnz", "8", "--nodes", "2", "--rounds", "15",
                 "--profile", "wifi-tcp-mqtt-esp32", "--out", str(run), "--quiet", "--no-plots"]) == 0
    meta = json.loads((run / "run.json").read_text())
    log = energy.log_from_sim(run, "delta")
    assert log.rounds == 15 and log.frame_bytes.shape == (15, 2) and (log.down_bytes > 0).all()
    prof = load_profile("wifi-tcp-mqtt-esp32")
    b = energy.budget(log, prof, 60.0, 1000.0, 3.3)
    up = sum(n["uplink_tx_j_per_round"] + n["uplink_rx_j_per_round"] for n in b["nodes"]) * 15
    assert up == pytest.approx(meta["summary"]["total_joules"], rel=1e-9)  # same LinkCost as the run
    assert all(n["downlink_rx_j_per_round"] > 0 for n in b["nodes"])
    out = tmp_path / "budget"
    assert main(["profile", "--log", str(run), "--profile", "wifi-tcp-mqtt-esp32", "--interval", "60",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "battery life" in text and "node 1:" in text
    for f in ("budget.csv", "budget.md", "energy.png", "energy.svg", "report.md"):
        assert (out / f).exists()


def test_budget_from_metrics_log(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for r in range(3):
        for node in (4, 9):
            log.write({"event": "update", "node": node, "round": r, "T": 5, "bytes": 80 + node, "packets": 1,
                       "airtime_s": 0.0, "energy_j": 0.0, "source": "mqtt", "loss": 0.6 - 0.1 * r,
                       "improvement": 0.1})
        log.write({"event": "round", "round": r, "nodes": [4, 9], "delta_entries": 10, "loss": 0.6 - 0.1 * r})
    log.close()
    rl = energy.log_from_metrics(path, d=1000)
    assert rl.nodes == [4, 9] and rl.frame_bytes.tolist() == [[84, 89]] * 3
    assert rl.down_bytes.tolist() == [energy.delta_frame_length(1000, 10, 0, 0, r) for r in range(3)]
    assert rl.loss[:3].tolist() == pytest.approx([0.6, 0.5, 0.4])
    b = energy.budget(rl, load_profile("ble5-1m-dle"), 30.0, 220.0, 3.0)
    assert b["nodes"][1]["node"] == 9 and b["nodes"][1]["energy_j_total"] > b["nodes"][0]["energy_j_total"]


def test_profile_cli_planned(tmp_path, capsys) -> None:
    out = tmp_path / "p"
    assert main(["profile", "--profile", "lorawan-eu868-sf12", "--d", "1000", "--rounds", "10", "--scheme", "sq",
                 "--T", "4", "--fmt", "f16", "--interval", "300", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "duty cycle" in text and "battery life" in text
    assert main(["profile", "--profile", "paper-packet-128-64-128", "--d", "10", "--rounds", "1",
                 "--scheme", "s", "--T", "1"]) == 2  # a paper model has no radio
    assert main(["profile", "--profile", "ble5-1m-dle", "--d", "100", "--rounds", "3", "--scheme", "s"]) == 2
    err = capsys.readouterr().err
    assert "paper model" in err and "--T" in err
    assert not math.isnan(float((out / "budget.csv").read_text().splitlines()[1].split(",")[7]))


def test_the_gateway_cannot_serve_a_lorawan_plan_whose_downlink_overflows_its_duty_cycle(tmp_path, capsys) -> None:
    """SF7, 10 nodes, T = 10 (S+Q), one round per 60 s: each node's RX1 gets the round's delta,
    so the gateway transmits 10 deltas per round on the 1 % sub-band: about 16 % of its time."""
    prof = load_profile("lorawan-eu868-sf7")
    log = energy.log_planned(1000, 5, "sq", 10, nodes=10)
    gw = energy.budget(log, prof, 60.0, 2400.0, 3.0)["gateway"]
    one = sum(LinkCost(prof, m).tx_seconds for m in energy.messages(prof, int(log.down_bytes[0])))
    assert gw["airtime_s_max"] == pytest.approx(10 * one)
    assert gw["used"] == pytest.approx(10 * one / 60) and 0.15 < gw["used"] < 0.17 and not gw["ok"]
    assert gw["min_interval_s"] == pytest.approx(10 * one / 0.01)
    assert energy.budget(log, prof, gw["min_interval_s"], 2400.0, 3.0)["gateway"]["ok"]
    assert main(["profile", "--profile", "lorawan-eu868-sf7", "--d", "1000", "--scheme", "sq", "--T", "10",
                 "--nodes", "10", "--rounds", "5", "--interval", "60", "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "the gateway CANNOT serve this plan" in out and "against 1 % allowed" in out
    assert energy.budget(log, load_profile("ieee802154-6lowpan-coap"), 60.0, 2400.0, 3.0)["gateway"] is None
    # RX2 instead (869.525 MHz, 10 % band) is at SF12: slower than the 10x allowance buys back
    r2 = gw["rx2"]
    assert r2["allowed"] == 0.10 and not r2["ok"] and r2["min_interval_s"] > gw["min_interval_s"]
    assert "gateway downlink in RX2 instead" in out and "it cannot either" in out


def test_an_sf12_plan_the_gateway_cannot_serve_in_rx1_fits_the_rx2_band(tmp_path, capsys) -> None:
    """SF12 uplinks: RX1 and RX2 are both SF12, so RX2's 10 % band serves what RX1's 1 % cannot,
    with the same airtime (the 8 B delta of T = 2 on d = 100 fits one 51 B RX2 downlink); at the
    RX1 limit's own shortest interval RX2 is not mentioned."""
    prof = load_profile("lorawan-eu868-sf12")
    log = energy.log_planned(100, 5, "sq", 2, nodes=2)
    gw = energy.budget(log, prof, 600.0, 2400.0, 3.0)["gateway"]
    assert not gw["ok"] and gw["rx2"]["ok"]
    assert gw["rx2"]["airtime_s_max"] == pytest.approx(gw["airtime_s_max"])
    assert main(["profile", "--profile", "lorawan-eu868-sf12", "--d", "100", "--scheme", "sq", "--T", "2",
                 "--nodes", "2", "--rounds", "5", "--interval", "600", "--out", str(tmp_path / "a")]) == 0
    assert "(it can)" in capsys.readouterr().out
    assert main(["profile", "--profile", "lorawan-eu868-sf12", "--d", "100", "--scheme", "sq", "--T", "2",
                 "--nodes", "2", "--rounds", "5", "--interval", f"{gw['min_interval_s']:.6f}",
                 "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "(OK)" in out and "RX2 instead" not in out
    us = energy.budget(log, load_profile("lorawan-us915-sf7"), 600.0, 2400.0, 3.0)["gateway"]
    assert us["duty_cycle"] is None and us["rx2"] is None and us["ok"]  # no duty cycle: one transmitter's time
