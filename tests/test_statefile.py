"""The state file on a deep-sleeping board's flash (aggregator/lab/statefile.py): whether it
fits the file system (at its boundary), the wear arithmetic by hand, `profile --deep-sleep`'s
lines, `flash --deep-sleep --board`'s refusal, and the [storage] schema's optional fields."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import pytest

from aggregator.cli import main
from aggregator.lab import statefile
from edge import hwprofile
from edge.profile import ProfileError

REPO = Path(__file__).resolve().parents[1]


def _storage(blocks: int, endurance: float = 1000.0) -> dict:
    return {"block_size": 4096.0, "fs_size": blocks * 4096.0, "endurance": endurance}


def test_the_file_fits_with_no_block_to_spare_and_not_one_block_less() -> None:
    # a 9-block file: two copies during the rename + the metadata pair = 20 blocks
    assert statefile.space(_storage(20), 9) == {"fs_blocks": 20, "need_blocks": 20, "fits": True}
    assert statefile.space(_storage(19), 9)["fits"] is False
    # a partial last block is no block: 20 blocks and 4,095 B is still 20
    st = _storage(20)
    st["fs_size"] += 4095
    assert statefile.space(st, 10)["fits"] is False
    assert statefile.space({"block_size": 4096.0}, 9) is None


def test_wear_by_hand() -> None:
    # 1,000 cycles a block, 100 blocks, 2.5 blocks erased per round of 60 s
    w = statefile.wear(_storage(100), 2.5, 2, 60.0)
    assert w["rounds_most"] == pytest.approx(1000 * 100 / 2.5)
    assert w["least_blocks"] == 2 * 2 + 2
    assert w["rounds_least"] == pytest.approx(1000 * 6 / 2.5)
    assert w["days_most"] == pytest.approx(40000 * 60 / 86400)
    # a file that does not fit: the wear is spread over what there is
    w = statefile.wear(_storage(5), 2.5, 2, 60.0)
    assert w["least_blocks"] == 5 and w["rounds_least"] == w["rounds_most"]
    st = _storage(100)
    del st["endurance"]
    assert statefile.wear(st, 2.5, 2, 60.0) is None


def test_summary_lines_say_when_the_flash_dies_before_the_battery() -> None:
    state = {"bytes": 8300, "blocks": 3, "erased": 3.08}
    lines = statefile.summary_lines(_storage(100), state, 60.0, battery_days=1000.0)
    assert lines[0].startswith("state file space: 8 of the file system's 100 blocks of 4096 B")
    assert "NOT" not in lines[0]
    # 1,000 x 8 / 3.08 rounds of 60 s = 1.8 days: sooner than the battery
    assert re.search(r"flash wear: 3\.08 blocks erased per round at 1,000 cycles a block: worn out after "
                     r"[\d.]+ days if .* all 100 blocks, 1\.8 days if other files leave it only the state's 8 "
                     r"\(sooner than the battery's 1000 days\)", lines[1]), lines[1]
    lines = statefile.summary_lines(_storage(7), state, 60.0, battery_days=1.0)
    assert "it does NOT fit" in lines[0] and "sooner" not in lines[1]


BASE = ["profile", "--profile", "lorawan-eu868-sf7", "--board", "stm32wl", "--scheme", "sq", "--T", "32",
        "--rounds", "2", "--interval", "600", "--deep-sleep"]


def test_the_cli_refuses_nothing_but_says_a_state_file_does_not_fit(tmp_path: Path, capsys) -> None:
    # MicroPython's NUCLEO_WL55 keeps a 24 KiB file system: 12 blocks of 2 KiB. d = 1,024 with
    # error feedback is a 5-block file, which needs exactly 12; d = 2,048 a 9-block one: 20
    assert main(BASE + ["--d", "2048", "--error-feedback", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "state file space: 20 of the file system's 12 blocks of 2048 B" in out and "it does NOT fit" in out
    assert main(BASE + ["--d", "1024", "--error-feedback", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "state file space: 12 of the file system's 12 blocks" in out and "NOT" not in out
    assert re.search(r"flash wear: 5\.16 blocks erased per round at 10,000 cycles a block: worn out after", out)


def test_a_board_without_fs_size_says_it_is_not_checked(tmp_path: Path, capsys) -> None:
    raw = tomllib.loads((REPO / "cost_profiles" / "boards" / "esp32.toml").read_text())
    for k in ("fs_size", "endurance"):
        raw["storage"].pop(k)
    board = hwprofile.validate(raw, "esp32.toml", "board")
    assert "fs_size" not in board["storage"]
    p = tmp_path / "esp32.toml"
    lines = (REPO / "cost_profiles" / "boards" / "esp32.toml").read_text().splitlines()
    p.write_text("\n".join(ln for ln in lines if not ln.startswith(("fs_size", "endurance"))) + "\n")
    assert main(["profile", "--profile", "wifi-tcp-mqtt-esp32", "--board", str(p), "--d", "1024", "--rounds", "2",
                 "--scheme", "sq", "--T", "32", "--deep-sleep", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "state file space" not in out and "flash wear" not in out
    assert "gives no fs_size: whether the state file fits and how long the flash lasts are not checked" in out


@pytest.mark.parametrize("edit, message", [
    (lambda s: s["endurance"].__setitem__("unit", "cycle"), "storage.endurance: unit 'cycle' not accepted"),
    (lambda s: s["endurance"].__setitem__("value", 0), "storage.endurance: must be >0, got 0"),
    (lambda s: s["fs_size"].__setitem__("value", 0), "storage.fs_size: must be >0, got 0"),
    (lambda s: s["fs_size"].__setitem__("value", 2048.5), "storage.fs_size: must be a whole number"),
])
def test_schema_errors_name_the_field(edit, message: str) -> None:
    raw = tomllib.loads((REPO / "cost_profiles" / "boards" / "esp32.toml").read_text())
    edit(raw["storage"])
    with pytest.raises(ProfileError, match=re.escape(message)):
        hwprofile.validate(raw, "esp32.toml", "board")


def test_every_board_with_storage_gives_its_file_system_and_endurance() -> None:
    for name in ("esp32", "esp32-c6", "nrf52840", "rp2040-picow", "stm32wl"):
        st = hwprofile.load_board(name)["storage"]
        assert st["fs_size"] % st["block_size"] == 0 and st["endurance"] in (1e4, 1e5)
    st = copy.deepcopy(hwprofile.load_board("stm32wl")["storage"])
    assert st["fs_size"] == 24 * 1024    # 12 pages of 2 KiB


def _board_with_fs(tmp_path: Path, blocks: int) -> Path:
    """esp32.toml with a file system of `blocks` 4,096-byte blocks."""
    text = (REPO / "cost_profiles" / "boards" / "esp32.toml").read_text()
    text = re.sub(r'^fs_size = \{ value = 2048, unit = "KiB"', f'fs_size = {{ value = {4 * blocks}, unit = "KiB"',
                  text, flags=re.M)
    p = tmp_path / f"fs{blocks}" / "esp32.toml"
    p.parent.mkdir()
    p.write_text(text)
    return p


def test_flash_refuses_a_state_file_the_board_cannot_hold(tmp_path: Path, capsys) -> None:
    from tests import e2e
    layout = e2e.make_job(tmp_path / "job", nodes=1, rounds=5)     # d = 30 with error feedback: a one-block state file
    (k,) = layout.job.node_keys
    base = ["flash", str(layout.job_path), "--node", str(k), "--data", str(layout.data_files[k]), "--gateway",
            "127.0.0.1", "--deep-sleep", "600"]
    # two copies of the one block and the metadata pair: 4 blocks fit, 3 do not
    assert main(base + ["--board", str(_board_with_fs(tmp_path, 4)), "--stage", str(tmp_path / "ok")]) == 0
    out = capsys.readouterr().out
    assert "state file: at least 316 B, 4 of the board's 4 file-system blocks while it is renamed" in out
    assert re.search(r"flash wear: at one round per 600 s at most, worn out after at least [\d.]+ years", out)
    assert main(base + ["--board", str(_board_with_fs(tmp_path, 3)), "--stage", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("cat-aggregator: --deep-sleep on " + str(tmp_path / "fs3" / "esp32.toml") + ": the state file "
                   "(at least 316 B: 30 floats and the residual) needs 4 of the board's 3 file-system blocks while it is renamed: it "
                   "cannot fit; use a smaller model, no error feedback, or a larger file system")
    assert not (tmp_path / "bad").exists()
    # a board whose port has no timed deep sleep is refused before the state file is looked at
    assert main(base + ["--board", "nrf52840", "--stage", str(tmp_path / "nrf")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cat-aggregator: --deep-sleep on nrf52840: board nrf52840 cannot deep-sleep between "
                          "rounds: MicroPython v1.25's nrf port has no timed deep sleep") and len(err.splitlines()) == 1
    assert not (tmp_path / "nrf").exists()
    # without --deep-sleep the board's file system is not the state's concern
    assert main(base[:-2] + ["--board", str(_board_with_fs(tmp_path, 2)), "--stage", str(tmp_path / "awake")]) == 0
