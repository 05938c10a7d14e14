"""`cat-aggregator flash` and mpy-cross: what goes onto a board, and a flashed board at work.

The board is firmware_tests/virtual_board.py: the unix port (the PyPI wheel: its REPL has
the raw mode mpremote needs) on a pty behind socket://127.0.0.1:PORT.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from aggregator import cli
from aggregator.ops import flash
from aggregator.gateway.service import Endpoints
from firmware_tests import harness
from firmware_tests.budget import Gateway, Offline, fetch_umqtt, free_udp_port, key_for, make_data
from firmware_tests.conftest import _on_ci
from firmware_tests.virtual_board import VirtualBoard

REPO = harness.REPO

# mpy header byte 2: (arch << 2) | flags; mpy-cross's arch numbers (py/persistentcode.h)
MPY_ARCH = {"none": 0, "x86": 1, "x64": 2, "armv6m": 4, "armv7emsp": 7, "xtensawin": 10}


@pytest.mark.parametrize("arch", harness.CROSS_ARCHES)
def test_every_edge_module_cross_compiles(arch):
    """ESP32 (xtensawin), RP2040 (armv6m), nRF52840/STM32 (armv7emsp): no mpy-cross errors."""
    modules = sorted(p.name for p in harness.EDGE_DIR.glob("*.py"))
    assert "node.py" in modules and "board.py" in modules and len(modules) >= 15
    assert harness.cross_compile_all(arch) == []


def write_job(path: Path, d: int, coap_port: int | None = None, mqtt_port: int | None = None,
              rounds: int = 50) -> Path:
    """A job TOML as a user would write it (the flash command reads the job's file)."""
    lines = [
        "[job]", "id = 9", f"rounds = {rounds}",
        "[model]", 'kind = "logistic"', f"features = {d}", "lambda = 0.001", "L = 0.251",
        "[training]", 'scheme = "sq"', 'rule = "cat"', "k_cap = 16",
        "[cost]", 'profile = "ieee802154-6lowpan-coap"',
        "[rounds]", "deadline_s = 30.0",
        "[nodes]", f'1 = "{key_for(1).hex()}"', f'2 = "{key_for(2).hex()}"',
        "[downlink]", f'key = "{key_for(255).hex()}"',
        "[state]", f'dir = "{path.parent / "state"}"',
    ]
    if coap_port:
        lines += ["[transports.coap]", 'host = "127.0.0.1"', f"port = {coap_port}"]
    if mqtt_port:
        lines += ["[transports.mqtt]", 'host = "127.0.0.1"', f"port = {mqtt_port}"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("arch", ["xtensawin", "armv6m", "armv7emsp", "none"])
def test_stage_lays_out_the_board(tmp_path, arch, capsys):
    job = write_job(tmp_path / "job.toml", 30, coap_port=5683)
    data = make_data(tmp_path / "node-1.catd", 30, rows=8)
    out = tmp_path / "stage"
    rc = cli.main(["flash", str(job), "--node", "1", "--data", str(data), "--arch", arch,
                   "--stage", str(out), "--rounds", "5"])
    assert rc == 0, capsys.readouterr()
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    mods = [f for f in files if f.startswith("edge/")]
    want = {f"edge/{p.stem}.mpy" for p in harness.EDGE_DIR.glob("*.py")} - {
        f"edge/{Path(n).stem}.mpy" for n in flash.HOST_ONLY}
    assert set(mods) == want and all(f.endswith(".mpy") for f in mods)
    assert set(files) - set(mods) == {"main.py", "node.json", "node-1.catd"}
    for m in mods:
        # mpy v6 header; mpy-cross records the arch only for modules with native code, and
        # edge/ has none, so the bytecode is portable (arch 0) whatever -march says
        head = (out / m).read_bytes()[:4]
        assert head[:2] == b"M\x06" and head[2] >> 2 in (0, MPY_ARCH[arch]) and head[3] == 31, (m, head)
    cfg = json.loads((out / "node.json").read_text())
    assert cfg["node"] == 1 and cfg["job"] == 9 and cfg["key"] == key_for(1).hex()
    assert cfg["downlink_key"] == key_for(255).hex() and cfg["transport"] == "coap"
    assert (cfg["host"], cfg["port"], cfg["rounds"], cfg["data"]) == ("127.0.0.1", 5683, 5, "node-1.catd")
    assert cfg["profile"]["name"] == "ieee802154-6lowpan-coap"
    assert "sources" not in cfg["profile"] and "description" not in cfg["profile"]
    assert "board.main()" in (out / "main.py").read_text()
    assert (out / "node-1.catd").read_bytes() == data.read_bytes()


def test_line_numbers_only_with_the_option(mp64, tmp_path, capsys):
    """The board's .mpy files drop source line numbers (mpy-cross -O3, ~4 KiB of heap); `--line-numbers`
    keeps them. Both raise the same errors: edge/ relies on no assert or __debug__ code."""
    job = write_job(tmp_path / "job.toml", 30, coap_port=5683)
    data = make_data(tmp_path / "node-1.catd", 30, rows=8)
    script = ("import sys\nfrom edge import cose\ntry:\n    cose.check_key(bytes(31))\n"
              "except ValueError as e:\n    sys.print_exception(e)\n")
    shown = {}
    for opts in ([], ["--line-numbers"]):
        out = tmp_path / f"stage{len(opts)}"
        assert cli.main(["flash", str(job), "--node", "1", "--data", str(data), "--stage", str(out)] + opts) == 0
        r = harness.run(mp64, out, script, heap="256k")
        assert r.ok, r.describe()
        shown[bool(opts)] = (r.stdout, (out / "edge" / "frame.mpy").stat().st_size)
    check_key = next(n for n in ast.walk(ast.parse((harness.EDGE_DIR / "cose.py").read_text()))
                     if isinstance(n, ast.FunctionDef) and n.name == "check_key")
    line = next(n.lineno for n in ast.walk(check_key) if isinstance(n, ast.Raise))
    assert 'File "edge/cose.mpy", line 1, in check_key' in shown[False][0]
    assert f'File "edge/cose.mpy", line {line}, in check_key' in shown[True][0]
    assert shown[False][0].endswith("ValueError: MAC key must be 32 bytes, got 31\n")
    assert shown[True][0].endswith("ValueError: MAC key must be 32 bytes, got 31\n")
    assert shown[False][1] < shown[True][1]


def test_edge_has_no_assert_or_debug_code():
    """-O1 and up compile no assert and make __debug__ False (micropython.opt_level): edge/ must not
    depend on either, or a flashed board would behave unlike the CPython reference."""
    for path in sorted(harness.EDGE_DIR.glob("*.py")):
        tree = ast.parse(path.read_text())
        bad = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Assert)
               or (isinstance(n, ast.Name) and n.id == "__debug__")]
        assert not bad, (path.name, bad)


def test_stage_with_romfs_writes_the_image_instead_of_edge(tmp_path, capsys):
    """--romfs: no edge/ among the files, the ROMFS image next to them (what `mpremote romfs
    deploy` takes), holding the .mpy files of the edge/ that --stage alone writes."""
    from mpremote.romfs import VfsRomWriter

    job = write_job(tmp_path / "job.toml", 30, coap_port=5683)
    data = make_data(tmp_path / "node-1.catd", 30, rows=8)
    plain, rom = tmp_path / "plain", tmp_path / "rom"
    for out, extra in ((plain, []), (rom, ["--romfs"])):
        assert cli.main(["flash", str(job), "--node", "1", "--data", str(data), "--stage", str(out)] + extra) == 0
    assert "edge.romfs for `mpremote romfs deploy`" in capsys.readouterr().out
    files = sorted(p.relative_to(rom).as_posix() for p in rom.rglob("*") if p.is_file())
    assert files == ["edge.romfs", "main.py", "node-1.catd", "node.json"]
    image = (rom / "edge.romfs").read_bytes()
    assert image.startswith(VfsRomWriter.ROMFS_HEADER)
    for mpy in (plain / "edge").iterdir():  # each module's bytes are in the image verbatim
        assert mpy.read_bytes() in image, mpy.name


def test_flash_refuses_user_mistakes(tmp_path, capsys):
    job = write_job(tmp_path / "job.toml", 30)
    data = make_data(tmp_path / "n.catd", 30, rows=8)
    cases = [
        (["--node", "7", "--data", str(data), "--stage", "x", "--gateway", "h:1"], "node 7 is not in the job"),
        (["--node", "1", "--data", str(tmp_path / "nope.catd"), "--stage", "x"], "no such file"),
        (["--node", "1", "--data", str(data), "--stage", "x"], "--gateway is required"),
        (["--node", "1", "--data", str(data), "--gateway", "h:99999", "--stage", "x"], "expected HOST[:PORT]"),
        (["--node", "1", "--data", str(data), "--gateway", "h"], "--device is required"),
        (["--node", "1", "--data", str(data), "--transport", "serial"], "--uart"),
        (["--node", "1", "--data", str(data), "--gateway", "h", "--stage", "x", "--block-size", "128"],
         "block_size is 128 B but cost profile ieee802154-6lowpan-coap prices 64 B blocks: use cost profile "
         "ieee802154-6lowpan-coap-b128 (or block_size 64)"),
        (["--node", "1", "--data", str(data), "--gateway", "h", "--stage", "x", "--block-size", "100"],
         "must be a power of two from 16 to 1024"),
        (["--node", "1", "--data", str(data), "--gateway", "h", "--stage", "x", "--transport", "mqtt"],
         "--transport: transport mqtt, but cost profile ieee802154-6lowpan-coap prices coap messages: give the "
         "node a mqtt profile or transport coap (shipped: wifi-tcp-mqtt-esp32)"),
        (["--node", "1", "--data", str(data), "--stage", "x", "--transport", "serial", "--uart", "1"],
         "(shipped: serial-slip-115200)"),
        (["--node", "1", "--data", str(data), "--gateway", "h", "--stage", "x", "--romfs", "--no-edge"],
         "--romfs puts edge/ on the board; --no-edge leaves it out: give one of them"),
    ]
    for args, msg in cases:
        assert cli.main(["flash", str(job)] + args) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, (args, err)


@pytest.mark.e2e
def test_flash_to_unreachable_board_is_one_line(tmp_path, capsys):
    job = write_job(tmp_path / "job.toml", 30, coap_port=5683)
    data = make_data(tmp_path / "n.catd", 30, rows=8)
    import socket
    with socket.socket() as probe:  # a TCP port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rc = cli.main(["flash", str(job), "--node", "1", "--data", str(data),
                   "--device", f"socket://127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert rc == 2 and "copy failed" in err and "Traceback" not in err


@pytest.fixture
def board(tmp_path, mp64):
    vb = VirtualBoard(mp64, tmp_path / "board", heap="256k").start()
    yield vb
    vb.close()


@pytest.mark.e2e
def test_flash_romfs_to_a_board_without_a_partition_is_one_line(tmp_path, board, capsys):
    """The unix port has VfsRom but no vfs.rom_ioctl (no partition): mpremote's `romfs deploy`
    refuses, and flash says so in one line and copies nothing."""
    job = write_job(tmp_path / "job.toml", 30, coap_port=5683)
    data = make_data(tmp_path / "n.catd", 30, rows=8)
    rc = cli.main(["flash", str(job), "--node", "1", "--data", str(data), "--device", board.url, "--romfs"])
    err = capsys.readouterr().err
    assert rc == 2 and "ROMFS is not enabled on this device" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "board" / "node.json").exists()


def _umqtt_cache() -> Path:
    try:
        return fetch_umqtt()
    except Offline as exc:
        if _on_ci():
            pytest.fail(f"CI is set and umqtt.simple could not be fetched: {exc}")
        pytest.skip(f"offline: {exc}")


@pytest.mark.e2e
def test_flashed_board_runs_rounds(tmp_path, board, capsys):
    """flash = mpy-cross + `mpremote fs cp` over socket:// + `mpremote mip install` (umqtt.simple
    from a local package.json, offline; `--umqtt` takes it from micropython-lib online) + hard
    reset; then the board's main.py trains against the gateway (CoAP). The MQTT path of
    edge/board.py runs in test_round_mp.py (umqtt.simple against Mosquitto)."""
    cache = _umqtt_cache()
    port = free_udp_port()
    job_path = write_job(tmp_path / "job.toml", 48, coap_port=port)
    data = make_data(tmp_path / "node-1.catd", 48, rows=32, layout="dense")
    from aggregator.gateway.config import load_job
    job = load_job(job_path)
    job.node_keys = {1: job.node_keys[1]}  # the gateway waits for node 1 only: quorum of one
    with Gateway(job, Endpoints(coap=("127.0.0.1", port))) as gw:
        mark = len(board.console)
        rc = cli.main(["flash", str(job_path), "--node", "1", "--data", str(data), "--device", board.url,
                       "--arch", "xtensawin", "--rounds", "3", "--timeout", "20",
                       "--mip", str(cache / "package.json"), "--reset"])
        out = capsys.readouterr()
        assert rc == 0, out.err
        n_mods = sum(1 for p in harness.EDGE_DIR.glob("*.py") if p.name not in flash.HOST_ONLY)
        assert f"copied {n_mods + 3} files" in out.out  # + data, node.json, main.py
        assert "installed" in out.out and "reset" in out.out
        assert board.hard_resets == 1
        assert board.wait_for(b"cat-done", 60, mark), board.text()[-3000:]
        done = json.loads(board.text().split("cat-done ", 1)[1].splitlines()[0])
        assert done == {"node": 1, "sent": 3, "version": 2, "deltas": 2, "snapshots": 1}
        assert gw.wait_round(3) == 3
        assert gw.summary()["nodes"][1]["frames"] == 3
    root = board.root
    assert (root / "main.py").is_file() and (root / "edge" / "node.mpy").is_file()
    assert not (root / "edge" / "node.py").exists() and not (root / "edge" / "pi.mpy").exists()
    assert not (root / "edge" / "profile.mpy").exists()
    assert (root / "lib" / "umqtt" / "simple.py").read_bytes() == (cache / "umqtt" / "simple.py").read_bytes()


def test_board_config_is_checked(tmp_path):
    """edge/startup.py refuses an unusable node.json with one clear line (CPython run of the board code)."""
    from edge import startup
    from edge.profile import load_profile
    coap = flash.board_profile(load_profile("ieee802154-6lowpan-coap"))
    good = {"node": 1, "job": 2, "key": "ab" * 32, "downlink_key": "cd" * 32, "profile": coap, "data": "x.catd"}
    cases = [
        ({k: v for k, v in good.items() if k != "key"}, "missing 'key'"),
        ({**good, "key": "zz" * 32}, "key: not hex"),
        ({**good, "downlink_key": "ab" * 31}, "downlink_key: must be 32 bytes"),
        ({**good, "transport": "lora"}, "unknown transport"),
        # a node priced for another stack than it sends on
        ({**good, "transport": "mqtt"}, "transport mqtt, but cost profile ieee802154-6lowpan-coap prices coap messages"),
        ({**good, "transport": "serial"}, "transport serial, but cost profile ieee802154-6lowpan-coap prices coap"),
        ({**good, "profile": flash.board_profile(load_profile("wifi-tcp-mqtt-esp32"))},
         "transport coap, but cost profile wifi-tcp-mqtt-esp32 prices mqtt messages"),
        ({**good, "transport": "serial", "profile": flash.board_profile(load_profile("ieee802154-6lowpan-udp"))},
         "transport serial, but cost profile ieee802154-6lowpan-udp prices nothing a node sends"),
        ({**good, "transport": "serial", "profile": flash.board_profile(load_profile("lorawan-eu868-sf7"))},
         "cost profile lorawan-eu868-sf7 prices nothing a node sends"),
    ]
    for cfg, msg in cases:
        p = tmp_path / "node.json"
        p.write_text(json.dumps(cfg))
        with pytest.raises(startup.BoardError, match=msg):
            startup.load_config(str(p))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(startup.BoardError, match="not JSON"):
        startup.load_config(str(tmp_path / "bad.json"))
    with pytest.raises(startup.BoardError, match="cannot read"):
        startup.load_config(str(tmp_path / "none.json"))
    p.write_text(json.dumps(good))
    cfg = startup.load_config(str(p))
    assert cfg["key"] == bytes.fromhex("ab" * 32) and cfg["transport"] == "coap"
    # each transport with its own profile, and the paper's models (no stack) with any
    for t, name in (("mqtt", "wifi-tcp-mqtt-esp32"), ("serial", "serial-slip-115200"), ("coap", "paper-payload-fpp32"),
                    ("mqtt", "paper-packet-128-64-128"), ("coap", "ieee802154-thread-coap-mesh-b1024")):
        p.write_text(json.dumps({**good, "transport": t, "profile": flash.board_profile(load_profile(name))}))
        assert startup.load_config(str(p))["transport"] == t


def test_stage_with_a_board_profile_writes_its_cpu_cost(tmp_path, capsys):
    """--board: node.json carries the board's CPU power, seconds per entry and per-round joules for
    this node's data (energy-aware CAT, edge/energycost.py); the validator never goes on the board."""
    from aggregator.lab import boardcompute

    job = write_job(tmp_path / "job.toml", 30, coap_port=5683)
    data = make_data(tmp_path / "node-1.catd", 30, rows=8)
    out = tmp_path / "stage"
    assert cli.main(["flash", str(job), "--node", "1", "--data", str(data), "--stage", str(out),
                     "--board", "nrf52840"]) == 0
    cfg = json.loads((out / "node.json").read_text())
    want = boardcompute.cat_terms(boardcompute.load("board", "nrf52840"), boardcompute.load("compute", "micropython32"),
                                 30, 8 * 30, 16)
    assert cfg["board_cost"] == pytest.approx(want)
    assert (out / "edge" / "energycost.mpy").exists() and not (out / "edge" / "hwprofile.mpy").exists()
    assert cli.main(["flash", str(job), "--node", "1", "--data", str(data), "--stage", str(out),
                     "--board", "nrf52999"]) == 2
    assert "no board profile" in capsys.readouterr().err
