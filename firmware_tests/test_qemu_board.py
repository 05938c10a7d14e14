"""The edge on an emulated microcontroller: MicroPython on QEMU's mps2-an385 (Cortex-M3), edge/
frozen into the firmware (firmware_tests/build_qemu.sh, board port in firmware_tests/qemu_mps2/).

What the board port supplies (tick source, UARTs, RAM disk, boot-time heap) is checked on its
own first; then full rounds over SLIP on the board's UART1 against the real gateway (its
pyserial serial bridge, aggregator.gateway.serial_front), compared frame by frame with the
32-bit unix build on the same inputs; then `cat-aggregator flash` through mpremote; then the
board without edge/ frozen, given the edge by `mpremote romfs deploy` into its ROMFS partition.
"""

from __future__ import annotations

import binascii
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from aggregator import cli
from aggregator.gateway import wire
from aggregator.gateway.config import Job, load_job
from aggregator.gateway.service import Endpoints
from aggregator.ops import flash
from firmware_tests import harness
from firmware_tests.budget import SERIAL_PROFILE, Gateway, SlipRun, make_data, make_job, slip_rounds
from firmware_tests.qemu_board import QemuBoard
from firmware_tests.test_flash import write_job

HEAP = "96k"

PORT_SCRIPT = harness.EMIT_SNIPPET + """\
import gc, os, sys, time, machine, mps2
out = {"heap": mps2.heap_size(), "pool": gc.mem_free() + gc.mem_alloc(), "platform": sys.platform,
       "path": sys.path, "files": sorted(os.listdir())}
t0 = time.ticks_ms(); us0 = time.ticks_us()
time.sleep_ms(30)
out["slept_ms"] = time.ticks_diff(time.ticks_ms(), t0)
out["slept_us"] = time.ticks_diff(time.ticks_us(), us0)
st = os.statvfs("/")
out["disk"] = st[0] * st[2]
errors = []
for args, kw in (((0,), {}), ((5,), {}), ((1, 115200), {"bits": 7}), ((1, 115200), {"tx": 1})):
    try:
        machine.UART(*args, **kw)
        errors.append(None)
    except ValueError as e:
        errors.append(str(e))
out["uart_errors"] = errors
u = machine.UART(1, 115200)
u.init(115200, timeout=0)
out["empty_read"] = u.readinto(bytearray(8))
from binascii import crc32
with open("blob.bin", "rb") as f:
    blob = f.read()
out["blob"] = [len(blob), crc32(blob)]
emit(out)
"""


def test_board_port_supplies_ticks_uarts_disk_and_heap(qemu_image):
    blob = os.urandom(3000)
    with QemuBoard(qemu_image, heap="48k") as board:
        board.put("blob.bin", blob)  # through the raw REPL, before run()'s soft reset
        r = board.run(PORT_SCRIPT)
        assert r.ok, r.describe()
        res = r.result
        assert res["heap"] == 48 * 1024
        assert 0.95 * 48 * 1024 < res["pool"] < 48 * 1024  # the GC tables come out of the heap
        assert res["platform"] == "qemu" and res["path"] == ["", ".frozen", "/lib"]
        assert {"blob.bin", "_harness_main.mpy"} <= set(res["files"])
        assert res["slept_ms"] >= 30 and res["slept_us"] >= 30000
        assert res["disk"] == 4 * 1024 * 1024 - 256 * 1024  # SSRAM2/3 less the ROMFS partition
        assert res["uart_errors"][0].startswith("UART(0) doesn't exist")  # UART0 is the REPL
        assert res["uart_errors"][1].startswith("UART(5) doesn't exist")
        assert res["uart_errors"][2:] == ["UART is 8N1 only", "UART pins are fixed"]
        assert res["empty_read"] is None  # timeout=0 and nothing received
        assert res["blob"] == [len(blob), binascii.crc32(blob)]  # survived the soft reset intact

        # the heap is the size asked for at boot: one byte more than the pool is a MemoryError
        r = board.run("b = bytearray(%d)\n" % (48 * 1024))
        assert not r.ok and r.memory_error, r.describe()


UART_ECHO = """\
import machine
from binascii import crc32
u = machine.UART(1, 115200, timeout=5000, timeout_char=500)
data = u.read(%d)
u.write(data)
print("@@RESULT", [len(data), crc32(data)])
"""


def test_uart1_holds_back_the_sender_when_its_ring_is_full(qemu_image):
    """3,000 bytes wait before UART1 is even opened; the 1,024-byte receive ring fills, the
    rest stays in QEMU (the CMSDK UART takes a byte only when its data register is free), and
    every byte arrives, in order, and goes back out."""
    data = os.urandom(3000)
    with QemuBoard(qemu_image, heap=HEAP) as board:
        host = socket.create_connection(("127.0.0.1", board.ports[1]), timeout=30)
        try:
            host.sendall(data)
            r = board.run(UART_ECHO % len(data))
            assert r.ok, r.describe()
            assert r.result == [len(data), binascii.crc32(data)]
            back = bytearray()
            while len(back) < len(data):
                chunk = host.recv(4096)
                assert chunk, "UART1 closed early"
                back += chunk
            assert bytes(back) == data
        finally:
            host.close()


def _frames(run: SlipRun, job: Job) -> list[tuple[int, wire.Update]]:
    """The `@@FRAME <round> <hex>` lines of a run, verified and decoded by the gateway's codec."""
    out = []
    for line in run.run.stdout.splitlines():
        if line.startswith("@@FRAME "):
            _, rnd, hexed = line.split()
            data = bytes.fromhex(hexed)
            env = wire.open_envelope(data, job.max_frame_bytes)
            wire.verify_mac(job.node_keys[env.node], env.payload, env.tag)
            out.append((int(rnd), wire.decode_update_payload(env.node, env.payload, len(data))))
    return out


def _same_update(a: wire.Update, b: wire.Update) -> None:
    """Equal in everything but the compute time in the telemetry (wall clock, not data)."""
    assert (a.node, a.job, a.round, a.scheme, a.d, a.T, a.fmt, a.compact, a.wire_bytes) == \
        (b.node, b.job, b.round, b.scheme, b.d, b.T, b.fmt, b.compact, b.wire_bytes)
    assert np.array_equal(a.indices, b.indices)
    assert a.values.astype("<f4").tobytes() == b.values.astype("<f4").tobytes()
    assert a.telemetry is not None and b.telemetry is not None
    loss, imp, _, energy = a.telemetry
    assert (loss, imp, energy) == (b.telemetry[0], b.telemetry[1], b.telemetry[3])


def _slip_job(d: int, scheme: str = "sq"):
    def make(state: Path) -> Job:
        return make_job(state, d, k_cap=32, scheme=scheme, profile=SERIAL_PROFILE)
    return make


def _check_accepted(run: SlipRun, rounds: int = 4) -> dict:
    """Every round accepted by the gateway, and the device's model (after catching up with the
    last round) bit-identical to the gateway's."""
    assert run.run.ok, run.run.describe()[-3000:]
    assert run.accepted == rounds and run.summary["rejected"] == {}
    assert run.summary["nodes"][1]["rejected"] == {}
    res = run.run.result
    assert res["round"] == rounds - 1 and res["snapshots"] == 1
    assert res["extra"]["synced"] == rounds and run.model[0] == rounds
    assert res["extra"]["crc"] == run.model[1]  # float32(x + delta) on both sides: bitwise equal
    return res


def test_rounds_over_slip_against_the_gateway(qemu_image, tmp_path):
    """Four full rounds on the emulated board, as a flashed board runs them (its own libm):
    config, snapshot, then deltas over SLIP on UART1; each frame accepted by the gateway."""
    data = make_data(tmp_path / "d.catd", 256, layout="csr", nnz=24)
    run = slip_rounds(qemu_image, tmp_path / "qemu", _slip_job(256), data, HEAP, args=("sync",))
    res = _check_accepted(run)
    assert res["code"] is None and 1 <= res["T"] <= 32  # push link: no CoAP response code


@pytest.mark.parametrize("scheme", ["s", "sq", "ss"])
def test_frames_equal_the_unix_builds(qemu_image, mp32, scheme, tmp_path):
    """Same job, keys and data on the emulated Cortex-M3 and on the 32-bit unix build: every
    frame decodes to the same update (indices, values bit for bit, loss, improvement, energy),
    and both models end equal. exp/log come from round_extras.portable_* on both: the ports'
    libms (glibc on unix, MicroPython's lib/libm on the board) round a few results differently
    in the last bit, which would otherwise show up in a value now and then."""
    data = make_data(tmp_path / "d.catd", 256, layout="csr", nnz=24)
    make = _slip_job(256, scheme)
    args = ("sync", "frames", "portable")
    q = slip_rounds(qemu_image, tmp_path / "qemu", make, data, HEAP, args=args)
    u = slip_rounds(mp32, tmp_path / "unix", make, data, "256k", args=args)
    _check_accepted(q)
    _check_accepted(u)
    assert u.model == q.model

    job = make(tmp_path / "decode-state")
    fq, fu = _frames(q, job), _frames(u, job)
    assert [r for r, _ in fq] == [0, 1, 2, 3] and [r for r, _ in fu] == [0, 1, 2, 3]
    for (_, a), (_, b) in zip(fq, fu):
        assert a.scheme == ["identity", "s", "sq", "ss"].index(scheme)
        _same_update(a, b)


def test_portable_math_is_accurate():
    """The portable exp/log of the comparison above are accurate (here in CPython's doubles,
    with the single-precision constants the boards use)."""
    import math
    import sys
    sys.path.insert(0, str(harness.REPO / "firmware_tests" / "scripts"))
    try:
        import round_extras
    finally:
        sys.path.pop(0)
    for i in range(-8700, 8801, 7):
        x = i / 100
        assert abs(round_extras.portable_exp(x) - math.exp(x)) <= 3e-7 * math.exp(x), x
    assert round_extras.portable_exp(-87.01) == 0.0
    with pytest.raises(OverflowError):
        round_extras.portable_exp(88.01)
    for i in range(1, 100000, 37):
        x = i / 997
        assert abs(round_extras.portable_log(x) - math.log(x)) <= 1e-7 * (1 + abs(math.log(x))), x
    with pytest.raises(ValueError):
        round_extras.portable_log(0.0)


def _flash_and_boot(image: Path, tmp_path: Path, capsys, extra: list[str]) -> list[str]:
    """`cat-aggregator flash` (plus `extra`) onto the emulated board through mpremote over its REPL
    UART; a soft reset from the friendly REPL then boots into main.py, which runs three rounds
    over UART1 against the gateway. (`--reset` would power the board off: on QEMU,
    machine.reset() exits the emulator and the RAM disk with it.) Returns the board's root
    files after the rounds, and where edge.board imports from."""
    job_path = write_job(tmp_path / "job.toml", 64, rounds=50)
    # the job has nodes 1 and 2; node 1 alone closes a round (else each waits for the deadline)
    job_path.write_text(job_path.read_text().replace("deadline_s = 30.0", "deadline_s = 30.0\nquorum = 0.5")
                        .replace('profile = "ieee802154-6lowpan-coap"', 'profile = "serial-slip-115200"'))  # a UART's
    data = make_data(tmp_path / "node-1.catd", 64, rows=16)
    with QemuBoard(image, heap="256k") as board:
        board.release_console()
        rc = cli.main(["flash", str(job_path), "--node", "1", "--data", str(data), "--device", board.uart_url(0),
                       "--transport", "serial", "--uart", "1", "--rounds", "3", "--timeout", "60", *extra])
        out = capsys.readouterr()
        assert rc == 0, out
        assert f"to {board.uart_url(0)}" in out.out
        board.reconnect()
        with Gateway(load_job(job_path), Endpoints(serial=[(board.uart_url(1), 115200)])) as gw:
            console = board.boot_main(b"cat-done", timeout=120)
            assert "cat-done" in console, console
            rounds = [json.loads(line.split(" ", 1)[1]) for line in console.splitlines()
                      if line.startswith("cat-round ")]
            assert [x["round"] for x in rounds] == [0, 1, 2]
            assert all(x["accepted"] and 1 <= x["T"] <= 16 for x in rounds)
            assert gw.wait_round(3) == 3
            summ = gw.summary()
            assert summ["rejected"] == {} and summ["nodes"][1]["frames"] == 3
        r = board.run(harness.EMIT_SNIPPET + "import os\nimport edge.board\n"
                      "emit([sorted(os.listdir()), edge.board.__file__])\n")
        assert r.ok, r.describe()
        return r.result


def test_cat_aggregator_flash_reaches_the_emulated_board(qemu_image, tmp_path, capsys):
    """`cat-aggregator flash` copies edge/ (.mpy), node.json, the data and main.py through
    mpremote; main.py runs the rounds with the copied edge/, which shadows the frozen one."""
    files, board_file = _flash_and_boot(qemu_image, tmp_path, capsys, [])
    assert {"main.py", "node.json", "node-1.catd", "edge"} <= set(files)
    assert board_file == "edge/board.mpy"


def test_cat_aggregator_flash_romfs_deploys_the_edge_into_the_partition(qemu_bare_image, tmp_path, capsys):
    """`flash --romfs` on a board without edge/ frozen: mpremote's `romfs deploy` writes the
    image into the ROMFS partition and no edge/ goes onto the filesystem; main.py's rounds run
    the edge from /rom."""
    files, board_file = _flash_and_boot(qemu_bare_image, tmp_path, capsys, ["--romfs"])
    assert {"main.py", "node.json", "node-1.catd"} <= set(files) and "edge" not in files
    assert board_file == "/rom/edge/board.mpy"


ROMFS_SCRIPT = harness.EMIT_SNIPPET + """\
import os, sys, gc
import edge.frame
emit({"path": sys.path, "rom": sorted(os.listdir("/rom/edge")), "file": edge.frame.__file__,
      "bits": edge.frame.index_bits(4096)})
"""


def test_romfs_deploy_puts_the_edge_in_the_partition_and_it_runs_from_there(qemu_bare_image, qemu_image, tmp_path,
                                                                             capsys):
    """`cat-aggregator firmware romfs`, then mpremote's own `romfs deploy` over the REPL UART, as
    on a board with a ROMFS partition: after a soft reset the image is mounted at /rom, edge/
    imports from it, and four rounds over SLIP end with the model of the firmware that has edge/
    frozen (same job, keys and data)."""
    rom = tmp_path / "edge.romfs"
    assert cli.main(["firmware", "romfs", "--out", str(rom)]) == 0
    capsys.readouterr()
    with QemuBoard(qemu_bare_image, heap=HEAP) as board:
        r = board.run("import sys\ntry:\n import edge\nexcept ImportError:\n print('@@RESULT', 1)\n")
        assert r.ok and r.result == 1, r.describe()  # no edge/ anywhere before the deploy
        out = board.romfs_deploy(rom)
        assert f"Image size is {rom.stat().st_size} bytes" in out
        r = board.run(ROMFS_SCRIPT)
        assert r.ok, r.describe()
        res = r.result
        assert res["path"] == ["", ".frozen", "/rom", "/rom/lib", "/lib"]
        assert res["rom"] == sorted(n[:-3] + ".mpy" for n in flash.board_modules())
        assert res["file"] == "/rom/edge/frame.mpy" and res["bits"] == 12

    data = make_data(tmp_path / "d.catd", 256, layout="csr", nnz=24)
    make = _slip_job(256, "ss")
    args = ("sync", "portable")
    fromrom = slip_rounds(qemu_bare_image, tmp_path / "rom", make, data, HEAP, args=args, romfs=rom)
    frozen = slip_rounds(qemu_image, tmp_path / "frozen", make, data, HEAP, args=args)
    _check_accepted(fromrom)
    _check_accepted(frozen)
    assert fromrom.model == frozen.model

