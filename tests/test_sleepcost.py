"""The state term of a node that deep-sleeps with a state file (aggregator/lab/boardbudget.py
state_round, `profile --board --deep-sleep`): hand computations at littlefs block boundaries,
the option's and the [storage] schema's one-line errors, and no change without --deep-sleep."""

from __future__ import annotations

import copy
import math
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

from aggregator.cli import main
from aggregator.lab import boardbudget, energy, reports
from aggregator.lab.boardcompute import host_to_board
from edge import hwprofile
from edge.profile import ProfileError
from firmware_tests import statecost

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "cost_profiles"
V = 3.3
ACT = 44e-3


def _board(**storage) -> dict:
    """The esp32 profile with round numbers in [storage] (hand-checkable)."""
    b = copy.deepcopy(hwprofile.load_board("esp32"))
    b["storage"] = {"name": "test flash", "filesystem": "littlefs", "block_size": 4096.0, "page_size": 256.0,
                    "erase_time": 0.045, "program_time": 0.0004, "read_rate": 5e6, "write_current": 0.02,
                    "read_current": 0.01, **storage}
    return b


def _cal(per_byte: float = 1e-8, fixed: float = 5e-5) -> dict:
    c = copy.deepcopy(hwprofile.load_calibration())
    c["seconds"]["state_per_byte"], c["seconds"]["state_fixed"] = per_byte, fixed
    return c


def _hand(board: dict, cal: dict, size: int, blocks: int, pages: int) -> float:
    st = board["storage"]
    read = (size + 16) / st["read_rate"]
    write = (blocks + 5 * 64 / st["block_size"]) * st["erase_time"] + pages * st["program_time"]
    cpu = (cal["seconds"]["state_per_byte"] * size + cal["seconds"]["state_fixed"]) * host_to_board(board, cal)
    return V * (read * (st["read_current"] + ACT) + write * (st["write_current"] + ACT) + cpu * ACT)


# ------------------------------------------------------------------------------ arithmetic


def test_state_file_bytes_as_edge_sleep_writes_them() -> None:
    # docs/firmware.md: 44 + 4n + L + 32, and 4n more with error feedback
    assert boardbudget.state_bytes(1024, 99, False) == 4172 + 99
    assert boardbudget.state_bytes(1024, 99, True) == 8268 + 99
    assert boardbudget.state_bytes(4096, 107, True) == 32844 + 107


@pytest.mark.parametrize("size, blocks, data_pages", [
    (4096, 1, 16),          # exactly one erase block: 16 pages of 256 B
    (4097, 2, 16 + 1),      # one byte more: a second block with its 4-byte pointer and the byte
    (4096 + 4092, 2, 32),   # block 1 holds 4,092 data bytes after its pointer: still two blocks
    (4096 + 4093, 3, 33),   # one more: block 2 (ctz(2) + 1 = 2 pointers, 8 bytes) and 1 byte
])
def test_state_round_by_hand_at_block_boundaries(size: int, blocks: int, data_pages: int) -> None:
    board, cal = _board(), _cal()
    use = boardbudget.lfs_block_use(size, 4096)
    assert len(use) == blocks and sum(use) - size == 4 * sum((i & -i).bit_length() for i in range(1, blocks))
    r = boardbudget.state_round(board, cal, size)
    pages = data_pages + 5          # five metadata commits of 64 B: one 256-byte page each
    assert (r["blocks"], r["pages"]) == (blocks, pages)
    assert r["erase_s"] == pytest.approx((blocks + 320 / 4096) * 0.045)
    assert r["program_s"] == pytest.approx(pages * 0.0004)
    assert r["joules"] == pytest.approx(_hand(board, cal, size, blocks, pages), rel=1e-12)


def test_small_program_units_price_every_word() -> None:
    # nRF52840-like: 4-byte words; a 64-byte metadata commit is 16 words
    board = _board(page_size=4.0, block_size=4096.0, write_current=0.0)
    r = boardbudget.state_round(board, _cal(), 4097)
    assert r["pages"] == 1024 + 2 + 5 * 16    # block 1: a 4-byte pointer + 1 byte = 2 words


def _log(frame: int, d: int, rounds: int = 3) -> energy.RunLog:
    return energy.RunLog(np.full((rounds, 1), frame, dtype=np.int64), np.full((rounds, 1), 4, dtype=np.int64),
                         np.zeros(rounds, dtype=np.int64), np.full(rounds + 1, np.nan), d, "test", [0])


def _budget(board: dict, cal: dict, log: energy.RunLog, ds=None, interval: float = 600.0) -> dict:
    prof = energy.profile_dict("wifi-tcp-mqtt-esp32")
    return boardbudget.board_budget(log, prof, board, hwprofile.load_battery("2xaa"), interval,
                                    boardbudget.Wait("mqtt"), cal, 4096.0, 32, ds)


@pytest.mark.parametrize("frame, blocks", [(20, 1), (21, 2)])
def test_the_budget_prices_a_file_of_one_block_and_one_byte_more(frame: int, blocks: int) -> None:
    # n = 1,000 floats, L = 20: 44 + 4,000 + 20 + 32 = 4,096 B, exactly one block; L = 21: one byte more
    board, cal = _board(), _cal()
    size = 4096 + frame - 20
    b = _budget(board, cal, _log(frame, 1000), boardbudget.DeepSleep())
    nd = b["nodes"][0]
    pages = (16 if blocks == 1 else 17) + 5
    assert nd["state_j_per_round"] == pytest.approx(_hand(board, cal, size, blocks, pages), rel=1e-12)
    assert b["terms"] == ("radio", "compute", "listen", "wake", "state", "sleep")
    # the state's seconds are awake seconds, taken from the sleep
    plain = _budget(board, cal, _log(frame, 1000))["nodes"][0]
    ss = boardbudget.state_round(board, cal, size)["seconds"]
    assert nd["awake_s_per_round"] == pytest.approx(plain["awake_s_per_round"] + ss)
    sl = board["sleep"]["current"] * V
    assert nd["sleep_j_per_round"] == pytest.approx(plain["sleep_j_per_round"] - ss * sl)
    assert nd["energy_j_per_round"] == pytest.approx(plain["energy_j_per_round"] + nd["state_j_per_round"] - ss * sl)
    assert nd["battery_life_days_without_state"] == pytest.approx(plain["battery_life_days"])
    assert nd["battery_life_days"] < plain["battery_life_days"]


def test_error_feedback_and_classes_size_the_file() -> None:
    board, cal = _board(), _cal()
    st = _budget(board, cal, _log(99, 1024), boardbudget.DeepSleep(error_feedback=True))["state"]
    assert st["rounds"][0]["bytes"] == 8268 + 99 and st["n"] == 1024
    st = _budget(board, cal, _log(99, 1024), boardbudget.DeepSleep(classes=3))["state"]
    assert st["rounds"][0]["bytes"] == 44 + 4 * 3072 + 99 + 32


def test_a_fixed_sleep_makes_the_round_awake_time_plus_the_sleep() -> None:
    board, cal = _board(), _cal()
    b = _budget(board, cal, _log(99, 1024), boardbudget.DeepSleep(sleep_s=300.0), interval=600.0)
    nd = b["nodes"][0]
    assert nd["interval_s"] == pytest.approx(300.0 + nd["awake_s_per_round"])
    assert nd["sleep_j_per_round"] == pytest.approx(300.0 * board["sleep"]["current"] * V)
    assert nd["power_w"] == pytest.approx(nd["energy_j_per_round"] / nd["interval_s"])
    assert b["interval_s"] == pytest.approx(nd["interval_s"])


def test_deep_sleep_prices_the_deep_sleep_table_not_the_light_sleep() -> None:
    # rp2040-picow: its [sleep] is machine.lightsleep (1 ms wake-up), its [deep_sleep] the rp2
    # port's lightsleep-then-reset: the same 1.3 mA, and a boot of 0.5 s at 25 mA, at 5 V
    board, cal = copy.deepcopy(hwprofile.load_board("rp2040-picow")), _cal()
    assert board["sleep"]["wake_time"] == pytest.approx(1e-3)
    plain = _budget(board, cal, _log(99, 1024))["nodes"][0]
    deep = _budget(board, cal, _log(99, 1024), boardbudget.DeepSleep())["nodes"][0]
    assert plain["wake_j_per_round"] == pytest.approx(1e-3 * 25e-3 * 5.0)
    assert deep["wake_j_per_round"] == pytest.approx(0.5 * 25e-3 * 5.0)
    assert deep["awake_s_per_round"] == pytest.approx(plain["awake_s_per_round"] + 0.5 - 1e-3
                                                      + deep["state_s_per_round"])
    # a different deep-sleep current is the one the sleep term uses
    board["deep_sleep"]["current"] = 2e-6
    deep = _budget(board, cal, _log(99, 1024), boardbudget.DeepSleep(sleep_s=100.0))["nodes"][0]
    assert deep["sleep_j_per_round"] == pytest.approx(100.0 * 2e-6 * 5.0)


def test_a_board_without_a_timed_deep_sleep_is_refused_in_one_line() -> None:
    board, cal = copy.deepcopy(hwprofile.load_board("nrf52840")), _cal()
    with pytest.raises(boardbudget.BoardBudgetError, match=r"^--deep-sleep: board nrf52840 cannot deep-sleep "
                       r"between rounds: MicroPython v1\.25's nrf port has no timed deep sleep: "
                       r"machine\.deepsleep\(\) calls mp_machine_reset\(\) at once"):
        _budget(board, cal, _log(99, 1024), boardbudget.DeepSleep())
    _budget(board, cal, _log(99, 1024))      # awake between rounds: priced with its [sleep]
    board = _board()
    board.pop("deep_sleep")
    with pytest.raises(boardbudget.BoardBudgetError, match=r"board esp32 has no \[deep_sleep\] table"):
        _budget(board, cal, _log(99, 1024), boardbudget.DeepSleep())


def test_no_calibration_figures_leaves_the_cpu_out_and_says_so() -> None:
    board, cal = _board(), _cal()
    del cal["seconds"]["state_per_byte"], cal["seconds"]["state_fixed"]
    b = _budget(board, cal, _log(99, 1024), boardbudget.DeepSleep())
    assert b["state"]["rounds"][0]["cpu_s"] == 0.0
    assert any("no state_per_byte" in n for n in b["notes"])


def test_the_breakdown_plot_shows_the_state_term(tmp_path: Path, monkeypatch) -> None:
    seen = {}

    def keep(fig, out, stem):
        seen["labels"] = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        return []

    monkeypatch.setattr(reports, "save_fig", keep)
    board, cal = _board(), _cal()
    boardbudget.plot_breakdown(_budget(board, cal, _log(99, 1024), boardbudget.DeepSleep()), tmp_path)
    assert seen["labels"] == ["radio", "compute", "listen", "wake", "state", "sleep"]
    boardbudget.plot_breakdown(_budget(board, cal, _log(99, 1024)), tmp_path)
    assert seen["labels"] == ["radio", "compute", "listen", "wake", "sleep"]


# ------------------------------------------------------------------------------ the option

BASE = ["profile", "--profile", "wifi-tcp-mqtt-esp32", "--d", "1024", "--rounds", "2", "--scheme", "sq",
        "--T", "32"]


@pytest.mark.parametrize("extra, message", [
    (["--board", "esp32", "--deep-sleep", "0"], "--deep-sleep: expected the seconds to sleep between rounds (> 0), got '0'"),
    (["--board", "esp32", "--deep-sleep", "-5"], "got '-5'"),
    (["--board", "esp32", "--deep-sleep", "nan"], "got 'nan'"),
    (["--board", "esp32", "--deep-sleep", "inf"], "got 'inf'"),
    (["--board", "esp32", "--deep-sleep", "soon"], "got 'soon'"),
    (["--board", "esp32", "--deep-sleep", "300", "--interval", "600"], "give the round's timing once"),
    (["--board", "esp32", "--error-feedback"], "give --deep-sleep too"),
    (["--board", "esp32", "--deep-sleep", "--classes", "0"], "--classes must be >= 1, got 0"),
    (["--deep-sleep"], "--deep-sleep prices a board's state file: give --board"),
    (["--board", "raspberry-pi", "--deep-sleep"], "--deep-sleep: board raspberry-pi cannot deep-sleep between rounds"),
    (["--board", "nrf52840", "--deep-sleep"], "board nrf52840 cannot deep-sleep between rounds: MicroPython v1.25's "
                                              "nrf port has no timed deep sleep"),
    (["--board", "esp32", "--deep-sleep", "--wait", "mqtt-keepalive"], "it does not deep-sleep"),
])
def test_bad_deep_sleep_options_are_one_line_errors(tmp_path: Path, capsys, extra: list, message: str) -> None:
    assert main(BASE + extra + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "o").exists()


def test_the_cli_prints_the_state_term_and_both_battery_lives(tmp_path: Path, capsys) -> None:
    assert main(BASE + ["--board", "esp32", "--deep-sleep", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    m = re.search(r"state file \(deep sleep\): ([\d.]+) mJ per round, ([\d.]+) % of the round's ([\d.]+) mJ", out)
    assert m and float(m.group(1)) / float(m.group(3)) == pytest.approx(float(m.group(2)) / 100, rel=1e-2)
    assert re.search(r"battery life: [\d.]+ days with the state file's [\d.]+ mJ per round \([\d.]+ days without it\)",
                     out)
    assert "state_j_per_round" in (tmp_path / "o" / "board.csv").read_text()
    assert main(BASE + ["--board", "esp32", "--deep-sleep", "600", "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert re.search(r"one round every 60[0-9]\.[0-9]+ s", first), first   # awake time + 600 s
    # report.md's command reproduces the run: the round's timing given once
    cmd = [ln for ln in (tmp_path / "p" / "report.md").read_text().splitlines() if ln.startswith("cat-aggregator")]
    assert cmd and "--deep-sleep 600" in cmd[0] and "--interval" not in cmd[0]


def test_without_deep_sleep_the_documented_figures_are_unchanged(tmp_path: Path, capsys) -> None:
    # docs/experiments.md, the whole-board example; these are the figures the code printed before
    # the state term existed (the same command on the parent commit)
    assert main(["profile", "--profile", "ieee802154-6lowpan-coap", "--board", "nrf52840", "--battery", "cr2032",
                 "--d", "4096", "--scheme", "sq", "--T", "100", "--nodes", "4", "--rounds", "1000", "--interval",
                 "600", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "energy per round: radio 24.32 mJ, compute 20.11 mJ, listen 58.37 mJ, sleep 5.658 mJ" in out
    assert "wake-up 0.003564 mJ per round; total 108.5 mJ per round and node, 180.8 uW on average" in out
    assert "battery life: 123.9 days\n" in out and "state" not in out
    head = (tmp_path / "o" / "board.csv").read_text().splitlines()[0]
    assert "state" not in head and "interval_s" not in head


# ------------------------------------------------------------------------------ the schema


def _raw() -> dict:
    return tomllib.loads((PROFILES / "boards" / "esp32.toml").read_text())


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("erase_time"), "esp32.toml: storage.erase_time: missing"),
    (lambda s: s.pop("filesystem"), "esp32.toml: storage.filesystem: missing"),
    (lambda s: s["program_time"].__setitem__("value", -0.4), "storage.program_time: must be >0, got -0.4"),
    (lambda s: s["erase_time"].__setitem__("value", 0), "storage.erase_time: must be >0, got 0"),
    (lambda s: s["write_current"].__setitem__("value", -1), "storage.write_current: must be >=0, got -1"),
    (lambda s: s["block_size"].__setitem__("value", 4096.5), "storage.block_size: must be a whole number"),
    (lambda s: s["page_size"].__setitem__("value", 8192), "storage.page_size: 8192.0 B is larger than the block"),
    (lambda s: s["read_rate"].__setitem__("unit", "MB"), "storage.read_rate: unit 'MB' not accepted"),
    (lambda s: s["read_rate"].__setitem__("source", ""), "storage.read_rate: source must be a non-empty string"),
    (lambda s: s.__setitem__("erase_current", s["write_current"]), "storage.erase_current: unknown key"),
])
def test_storage_schema_errors_name_the_field(tmp_path: Path, edit, message: str) -> None:
    raw = _raw()
    edit(raw["storage"])
    with pytest.raises(ProfileError, match=re.escape(message)):
        hwprofile.validate(raw, str(tmp_path / "esp32.toml"), "board")


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["deep_sleep"].pop("wake_time"), "esp32.toml: deep_sleep.wake_time: missing"),
    (lambda r: r["deep_sleep"]["current"].__setitem__("value", -1), "deep_sleep.current: must be >=0, got -1"),
    (lambda r: r["deep_sleep"].pop("state"), "deep_sleep.state: missing"),
    (lambda r: r.__setitem__("deep_sleep", {"none": "no timer", "current": r["sleep"]["current"]}),
     "deep_sleep.current: unknown key (allowed: none)"),
    (lambda r: r.__setitem__("deep_sleep", {"none": ""}), "deep_sleep.none: must be a non-empty string"),
    (lambda r: r.__setitem__("deep_sleep", "none"), "deep_sleep: must be a table"),
])
def test_deep_sleep_schema_errors_name_the_field(tmp_path: Path, edit, message: str) -> None:
    raw = _raw()
    edit(raw)
    with pytest.raises(ProfileError, match=re.escape(message)):
        hwprofile.validate(raw, str(tmp_path / "esp32.toml"), "board")


def test_every_shipped_board_says_what_its_deep_sleep_is() -> None:
    none = {b for b in hwprofile.list_kind("board") if "none" in hwprofile.load_board(b)["deep_sleep"]}
    assert none == {"nrf52840", "raspberry-pi"}
    for b in ("esp32", "esp32-c6"):            # their [sleep] is machine.deepsleep already
        bd = hwprofile.load_board(b)
        assert {k: bd["deep_sleep"][k] for k in ("current", "wake_time", "wake_current")} == \
            {k: bd["sleep"][k] for k in ("current", "wake_time", "wake_current")}


def test_storage_is_optional_and_units_normalise() -> None:
    raw = _raw()
    raw["storage"]["block_size"] = {"value": 4, "unit": "KiB", "source": "x"}
    raw["storage"]["read_rate"] = {"value": 2, "unit": "MiB/s", "source": "x"}
    st = hwprofile.validate(copy.deepcopy(raw), "esp32.toml", "board")["storage"]
    assert st["block_size"] == 4096 and st["read_rate"] == 2 * 1048576
    raw.pop("storage")
    assert "storage" not in hwprofile.validate(raw, "esp32.toml", "board")
    assert "storage" not in hwprofile.load_board("raspberry-pi")
    for b in ("esp32", "esp32-c6", "nrf52840", "rp2040-picow", "stm32wl"):
        assert hwprofile.load_board(b)["storage"]["block_size"] in (2048, 4096)
    cal = hwprofile.load_calibration()["seconds"]
    assert cal["state_per_byte"] > 0 and cal["state_fixed"] > 0


def test_statecost_write_replaces_only_its_two_lines(tmp_path: Path) -> None:
    p = tmp_path / "micropython32.toml"
    p.write_text((PROFILES / "calibration" / "micropython32.toml").read_text())
    before = [ln for ln in p.read_text().splitlines() if not ln.startswith("state_")]
    statecost.write({"state_per_byte": 2e-8, "state_fixed": 1e-4}, p)
    statecost.write({"state_per_byte": 3e-8, "state_fixed": 2e-4}, p)
    lines = p.read_text().splitlines()
    assert [ln for ln in lines if not ln.startswith("state_")] == before
    s = hwprofile.validate(tomllib.loads(p.read_text()), str(p), "compute")["seconds"]
    assert s["state_per_byte"] == pytest.approx(3e-8) and s["state_fixed"] == pytest.approx(2e-4)
    assert statecost.fit([[1, 0, 1000, 10.0], [1, 1, 3000, 30.0]])["state_per_byte"] == pytest.approx(1e-8)
    assert not math.isnan(statecost.fit([[1, 0, 1000, 10.0], [1, 1, 3000, 30.0]])["state_fixed"])
