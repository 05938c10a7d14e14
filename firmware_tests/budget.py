"""RAM budget of a full edge round on real MicroPython, and the pieces tests share.

    .venv/bin/python firmware_tests/budget.py [--quick] [--interp mp32|mp64|both] [--frozen] [--qemu no]
    .venv/bin/python firmware_tests/budget.py --phases [--frozen]
    .venv/bin/python firmware_tests/budget.py --qemu only
    .venv/bin/python firmware_tests/budget.py --ef | --modules | --starts 96,97,98

For each interpreter and d in (1,024; 4,096) it prints the smallest heap (bisected, KiB)
that completes ROUNDS full edge rounds, the time per round and the bytes of the frame; then
the same round with a naive sorted()-based top-T instead of the bounded-heap kernel
(heap and time ratio). --frozen adds the 32-bit build with edge/ frozen into the firmware,
and the one running edge/ as .mpy files from a ROMFS image (romfs_interpreter). Then one
line per RAM goal (docs/firmware.md) and deployment (met or not), then
`min heap for d=4096 on 32-bit build: N KiB` (edge/ as .mpy). Then the emulated board (QEMU
mps2-an385, edge/ frozen, and edge/ as .mpy in its ROMFS partition; firmware_tests/qemu_board.py):
its smallest boot-time heap for the same rounds over SLIP on its UART1, next to the 32-bit unix
build's (frozen, same rounds and link), and last `qemu mps2-an385 rounds accepted: A of B`
(the gateway's count of ROUNDS rounds per d and deployment at the board's heap budgets,
QEMU_BUDGET_KIB and QEMU_ROMFS_BUDGET_KIB). --phases prints instead where the heap goes, phase
by phase (scripts/phases.py); --starts, for the heaps given, from which of several points of a job
(STARTS, each on a fresh gateway) S, S+Q and SS with error feedback fit as .mpy at d = 4,096.

"A full edge round" (what a flashed board does, edge/board.py): read node.json, open the
64-row CATD data file, CoAP GET config (decode), GET snapshot (model sync), logistic
gradient streamed from the file, CAT S+Q with K = 128 under the 802.15.4/6LoWPAN/CoAP
profile, frame encode, CoAP POST to a real gateway (aggregator.gateway.service.Service with its
aiocoap front on loopback). The edge is compiled to .mpy, as `cat-aggregator flash` deploys
it, frozen into the interpreter (frozen_interpreter), or as .mpy in a ROMFS image
(romfs_interpreter, what `cat-aggregator firmware romfs` writes for `mpremote romfs deploy`).

The helpers (Gateway, make_data, make_job, round_setup, slip_rounds) are used by the firmware
tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from aggregator.lab import datasets
from aggregator.gateway.config import Job, parse_job
from aggregator.ops.firmware import manifest_text
from aggregator.ops.flash import board_modules, node_config, romfs_image
from aggregator.gateway.service import Endpoints, Service
from firmware_tests import harness

SCRIPTS = Path(__file__).resolve().parent / "scripts"
ROUND_SCRIPT = SCRIPTS / "round.py"
ROUND_EXTRAS = SCRIPTS / "round_extras.py"  # imported by round.py only for its options (naive, sync, ...)
# what a device root holds besides edge/ for round.py: its options and its report (loaded after the rounds)
DRIVER_MODULES = (ROUND_EXTRAS, SCRIPTS / "round_report.py")
PROFILE = "ieee802154-6lowpan-coap"
# a node is priced for the stack it sends on (edge/startup.py transport_mismatch): SLIP and MQTT runs
SERIAL_PROFILE = "serial-slip-115200"
MQTT_PROFILE = "wifi-tcp-mqtt-esp32"
ROWS = 64
K = 128
# The budget's data: 64 rows in CSR with 64 nonzeros each (RCV1, the paper's data set, averages
# ~76 per row). A dense row buffer would add 4 d bytes (16 KiB at d = 4,096); budget.py --layout
# dense measures that too.
LAYOUT = "csr"
NNZ = 64
DIMS = (1024, 4096)
# A board runs round after round: the budget covers the first round (model sync by snapshot)
# and the steady state after it (sync by delta), where the heap is more fragmented.
ROUNDS = 4
# The RAM goals (docs/firmware.md): a full round at d = 1,024 within 32 KiB of heap, d = 4,096 within 64 KiB.
GOAL_KIB = {1024: 32, 4096: 64}


UMQTT_VERSION = "1.3.4"
# The PyPI sdist of micropython-lib's umqtt.simple (`pip download` fetches it but then refuses
# it: the old upip layout has no setup.py), pinned by URL and SHA-256 like a lock file.
UMQTT_URL = ("https://files.pythonhosted.org/packages/bd/cf/"
             "697e3418b2f44222b3e848078b1e33ee76aedca9b6c2430ca1b1aec1ce1d/"
             f"micropython-umqtt.simple-{UMQTT_VERSION}.tar.gz")
UMQTT_SHA256 = "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f"
UMQTT_CACHE = harness.REPO / ".cache" / "umqtt"


class Offline(RuntimeError):
    """A download the tests need failed (no network)."""


def fetch_umqtt(cache: Path = UMQTT_CACHE) -> Path:
    """Directory holding umqtt/simple.py and a mip package.json for offline installs.

    Downloaded once into .cache/umqtt (checked against UMQTT_SHA256), never committed."""
    import hashlib
    import tarfile
    import urllib.request

    pkg = cache / "umqtt" / "simple.py"
    if pkg.is_file() and (cache / "package.json").is_file():
        return cache
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / UMQTT_URL.rsplit("/", 1)[1]
    if not sdist.is_file():
        try:
            with urllib.request.urlopen(UMQTT_URL, timeout=30) as resp:
                data = resp.read()
        except OSError as exc:
            raise Offline(f"cannot download {UMQTT_URL}: {exc}") from exc
        if hashlib.sha256(data).hexdigest() != UMQTT_SHA256:
            raise RuntimeError(f"{UMQTT_URL}: SHA-256 mismatch")
        sdist.write_bytes(data)
    with tarfile.open(sdist) as tf:
        member = f"micropython-umqtt.simple-{UMQTT_VERSION}/umqtt/simple.py"
        src = tf.extractfile(member)
        if src is None:
            raise RuntimeError(f"{sdist}: no {member}")
        pkg.parent.mkdir(parents=True, exist_ok=True)
        pkg.write_bytes(src.read())
    # umqtt/__init__ is absent upstream too: umqtt is a namespace-style package on MicroPython
    (cache / "package.json").write_text(json.dumps(
        {"urls": [["umqtt/simple.py", "umqtt/simple.py"]], "version": UMQTT_VERSION}))
    return cache


FROZEN_CACHE = harness.REPO / ".cache" / "micropython32-frozen"
# What a board needs of edge/ (aggregator/ops/flash.py copies the same set).
BOARD_MODULES = tuple(board_modules())


def _edge_digest() -> str:
    import hashlib
    h = hashlib.sha256()
    for name in BOARD_MODULES:
        h.update(name.encode() + b"\0" + (harness.EDGE_DIR / name).read_bytes())
    return h.hexdigest()[:16]


def frozen_interpreter(build: bool = True, jobs: int = 2) -> harness.Interpreter | None:
    """The 32-bit build with edge/ frozen into the firmware, as a board image would hold it.

    Why: on a board, bytecode frozen into flash costs no heap; the budget with .mpy files
    loaded into RAM is the other deployment. Built from the Debian source tree that
    build_mp32.sh fetched (same flags, plus a manifest freezing edge/), into
    .cache/micropython32-frozen/<digest of edge/>. The object files stay in
    .cache/micropython32-frozen/build, so after the first build (~3 min on 2 cores) a
    change in edge/ only recompiles the frozen content and relinks (seconds). None when the
    source tree is missing (run build_mp32.sh) or build is False and it is not built yet."""
    # the manifest `cat-aggregator firmware manifest` writes, on the unix port's asyncio
    return _unix_build("mp32-frozen", _edge_digest(), build, jobs, lambda _out: manifest_text(
        include="$(MPY_DIR)/extmod/asyncio", base_path=harness.REPO))


#: The start-up of a board with a ROMFS partition (MicroPython 1.25, extmod/vfs.c
#: mp_vfs_mount_romfs_protected): mount it at /rom, put /rom and /rom/lib on sys.path. The unix
#: port has no ROMFS partition (vfs.rom_ioctl is off in its standard variant), so the image is a
#: bytes constant frozen into the executable: read-only data outside the heap, as a partition
#: is flash outside a board's heap, and VfsRom runs the .mpy files in it in place.
ROMFS_BOOT = """\
import sys, vfs
vfs.mount(vfs.VfsRom(IMAGE), "/rom")
sys.path.append("/rom")
sys.path.append("/rom/lib")
"""


def romfs_interpreter(build: bool = True, jobs: int = 2) -> harness.Interpreter | None:
    """The 32-bit build with a ROMFS image of edge/ as .mpy files (`cat-aggregator firmware
    romfs`, what `mpremote romfs deploy` puts on a board) mounted at /rom before the driver
    runs (Interpreter.prelude). Built as frozen_interpreter is, from the same object files,
    with only the image frozen (module romfs_boot)."""
    def manifest(out: Path) -> str:
        boot = out / "romfs_boot.py"
        boot.write_text(f"IMAGE = {romfs_image()!r}\n" + ROMFS_BOOT)
        return f"include('$(MPY_DIR)/extmod/asyncio')\nmodule('romfs_boot.py', base_path={str(out)!r})\n"

    return _unix_build("mp32-romfs", "romfs-" + _edge_digest(), build, jobs, manifest, prelude="import romfs_boot\n")


def _unix_build(name: str, tag: str, build: bool, jobs: int, manifest: Callable[[Path], str],
                prelude: str = "") -> harness.Interpreter | None:
    """The 32-bit unix build (build_mp32.sh's flags) with a frozen manifest, cached in
    .cache/micropython32-frozen/<tag>; manifest(out) writes what it freezes and returns the
    manifest's text. The builds share one object dir: switching between them regenerates the
    frozen content and relinks."""
    import fcntl
    import shutil
    import subprocess

    out = FROZEN_CACHE / tag
    binary = out / "micropython"
    interp = harness.Interpreter(name, binary, pointer_bits=32, float_bits=32, native_arch="x86", prelude=prelude)
    if interp.available():
        return interp
    if not build:
        return None
    src = harness.mp32_cache_dir() / "src"
    trees = sorted(src.glob("micropython-*")) if src.is_dir() else []
    if not trees or not (trees[0] / "mpy-cross" / "build" / "mpy-cross").is_file():
        return None
    tree = trees[0]
    FROZEN_CACHE.mkdir(parents=True, exist_ok=True)
    with (FROZEN_CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time (parallel test workers)
        if interp.available():
            return interp
        out.mkdir(parents=True, exist_ok=True)
        objdir = FROZEN_CACHE / "build"
        manifest_py = out / "manifest.py"
        manifest_py.write_text(manifest(out))
        log = out / "build.log"
        with log.open("w") as fh:
            proc = subprocess.run(
                ["make", "-C", str(tree / "ports" / "unix"), f"-j{jobs}", f"PYTHON={sys.executable}",
                 "VARIANT=standard", "MICROPY_FORCE_32BIT=1",
                 "CFLAGS_EXTRA=-DMICROPY_FLOAT_IMPL=MICROPY_FLOAT_IMPL_FLOAT", "LDFLAGS_EXTRA=-static",
                 "MICROPY_PY_FFI=0", "MICROPY_PY_BTREE=0", "MICROPY_PY_SSL=0",
                 f"FROZEN_MANIFEST={manifest_py}", f"BUILD={objdir}"],
                stdout=fh, stderr=subprocess.STDOUT, timeout=1800)
        built = objdir / "micropython"
        if proc.returncode != 0 or not built.is_file():
            raise RuntimeError(f"{name} build failed, see {log}")
        shutil.copy2(built, binary.with_suffix(".tmp"))
        binary.with_suffix(".tmp").replace(binary)
        for old in FROZEN_CACHE.iterdir():  # builds of earlier edge/ sources
            if old.is_dir() and old != objdir and not old.name.endswith(_edge_digest()):
                shutil.rmtree(old, ignore_errors=True)
    return interp


def free_udp_port() -> int:
    """A UDP port free on loopback right now."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def key_for(i: int) -> bytes:
    """Deterministic 32-byte test keys (node i; 255 = downlink)."""
    return bytes((i * 37 + j * 11 + 1) & 0xFF for j in range(32))


def make_data(path: Path, d: int, rows: int = ROWS, layout: str = "dense", nnz: int = 64,
              seed: int = 0) -> Path:
    """A binary CATD file: unit rows (so L = 1/4 + lambda), labels from a random linear model."""
    rng = np.random.default_rng(seed)
    if layout == "dense":
        X = rng.standard_normal((rows, d)).astype(np.float32)
    else:
        import scipy.sparse as sp
        cols = np.stack([np.sort(rng.choice(d, size=min(nnz, d), replace=False)) for _ in range(rows)])
        vals = rng.standard_normal(cols.shape).astype(np.float32)
        X = sp.csr_matrix((vals.ravel(), cols.ravel(), np.arange(0, cols.size + 1, cols.shape[1])),
                          shape=(rows, d))
    X = datasets.l2_normalize_rows(X)
    w = rng.standard_normal(d)
    y = (np.asarray(X @ w).ravel() > 0).astype(np.int64)
    y[:2] = (0, 1)  # both classes present
    return datasets.write_datafile(path, X, y, 2, layout)


def make_job(state_dir: Path, d: int, nodes: int = 1, rounds: int = 10_000, k_cap: int = K,
             scheme: str = "sq", profile: str = PROFILE, lam: float = 1e-3, quorum: float = 1.0,
             deadline_s: float = 30.0, error_feedback: bool = False, job_id: int = 5,
             transports: dict | None = None, max_frame: int = 1 << 20, rule: str = "cat",
             rule_param: int = 0) -> Job:
    """A logistic job over `nodes` nodes (ids 1..nodes) with test keys; rule_param 0: the
    rule's default (catavg: the node count)."""
    raw = {
        "job": {"id": job_id, "rounds": rounds, "seed": 1},
        "model": {"kind": "logistic", "features": d, "classes": 2, "lambda": lam, "L": 0.25 + lam},
        "training": {"scheme": scheme, "rule": rule, "rule_param": rule_param, "k_cap": k_cap,
                     "error_feedback": error_feedback},
        "cost": {"profile": profile},
        "rounds": {"quorum": quorum, "deadline_s": deadline_s, "max_frame_bytes": max_frame},
        "nodes": {str(i): key_for(i).hex() for i in range(1, nodes + 1)},
        "downlink": {"key": key_for(255).hex()},
        "state": {"dir": str(state_dir)},
    }
    if transports:
        raw["transports"] = transports
    return parse_job(raw, "budget-job.toml")


class Gateway:
    """aggregator.gateway.service.Service on its own event loop in a background thread.

    Why a thread: the device interpreter is a subprocess the test drives synchronously,
    while the gateway must keep answering (CoAP retransmissions, round closes)."""

    def __init__(self, job: Job, endpoints: Endpoints) -> None:
        self.job = job
        self.endpoints = endpoints
        self.svc: Service | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="gateway", daemon=True)

    def start(self, timeout: float = 15.0) -> "Gateway":
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError(f"gateway did not start: {self._error!r}")
        return self

    def _main(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        svc = self.svc = Service(self.job, self.endpoints, stop_when_finished=False)
        await svc.start()
        self._ready.set()
        try:
            while not svc.stopped.is_set():
                svc.agg.tick()
                try:
                    await asyncio.wait_for(svc.stopped.wait(), 0.05)
                except asyncio.TimeoutError:
                    pass
        finally:
            await svc.shutdown()

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run fn on the gateway's loop (the aggregator is not thread-safe) and return its result."""
        assert self.loop is not None

        async def wrap() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout)

    @property
    def round(self) -> int:
        return self.call(lambda: self.svc.agg.state.round)

    def summary(self) -> dict:
        return self.call(lambda: self.svc.agg.summary())

    def model_crc(self) -> tuple[int, int]:
        """(round, CRC-32 of the model as little-endian float32): what a device's model is
        compared with, bit for bit."""
        import binascii

        rnd, raw = self.call(lambda: (self.svc.agg.state.round,
                                      self.svc.agg.state.model.astype("<f4").tobytes()))
        return rnd, binascii.crc32(raw)

    def wait_round(self, r: int, timeout: float = 30.0) -> int:
        """Block until the gateway's round is >= r; returns the round."""
        end = time.monotonic() + timeout
        while True:
            cur = self.round
            if cur >= r or time.monotonic() > end:
                return cur
            time.sleep(0.05)

    def stop(self) -> None:
        if self.loop is not None and self.svc is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.svc.stop)
        self._thread.join(10)

    def __enter__(self) -> "Gateway":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class RoundSetup:
    """A gateway serving CoAP on loopback, a job for one node, and that node's device root."""

    gateway: Gateway
    job: Job
    root: Path
    config: dict

    def close(self) -> None:
        self.gateway.stop()


def round_setup(tmp: Path, d: int, mode: str = "mpy", layout: str = LAYOUT, block_size: int = 64,
                k_cap: int = K, scheme: str = "sq", ack_timeout: float = 1.0,
                error_feedback: bool = False, rule: str = "cat", rule_param: int = 0) -> RoundSetup:
    """Start a gateway and lay out a device root (edge as .mpy, node.json, data) for node 1.

    mode "frozen": no edge/ in the root (the interpreter has it frozen in). The driver's
    modules (DRIVER_MODULES) go in as .mpy in both modes ("py": as source)."""
    tmp.mkdir(parents=True, exist_ok=True)
    gw, job, port = start_coap_gateway(tmp, lambda state: make_job(state, d, k_cap=k_cap, scheme=scheme,
                                                                   error_feedback=error_feedback, rule=rule,
                                                                   rule_param=rule_param))
    data = make_data(tmp / f"data-{d}.catd", d, layout=layout, nnz=NNZ)
    cfg = node_config(job, 1, "data.catd", "coap", "127.0.0.1", port, block_size=block_size,
                      ack_timeout=ack_timeout)
    root = harness.make_device_root(tmp, mode="mpy" if mode == "frozen" else mode, extra={
        "node.json": json.dumps(cfg), "data.catd": data},
        packages=DRIVER_MODULES if mode == "frozen" else (harness.EDGE_DIR, *DRIVER_MODULES))
    return RoundSetup(gw, job, root, cfg)


def start_coap_gateway(tmp: Path, make: Callable[[Path], Job], tries: int = 5) -> tuple[Gateway, Job, int]:
    """A gateway on a free loopback UDP port; retried because another process may take the
    port between the probe and aiocoap's bind (tests run in parallel on CI machines)."""
    for attempt in range(tries):
        port = free_udp_port()
        job = make(tmp / f"state-{port}")
        try:
            return Gateway(job, Endpoints(coap=("127.0.0.1", port))).start(), job, port
        except RuntimeError:
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def run_round(interp: harness.Interpreter, setup: RoundSetup, heap: str | int, naive: bool = False,
              rounds: int = ROUNDS, timeout: float = 120.0, sync: bool = False,
              precompile: bool = True) -> harness.RunResult:
    """One (or `rounds`) full edge round(s) on interp with a fixed heap."""
    args = [str(rounds)] + (["naive"] if naive else []) + (["sync"] if sync else [])
    return harness.run(interp, setup.root, ROUND_SCRIPT, heap=heap, timeout=timeout,
                       precompile=precompile, args=args)


def bisect_round(interp: harness.Interpreter, setup: RoundSetup, lo: int, hi: int,
                 naive: bool = False, rounds: int = ROUNDS) -> int:
    """Smallest heap (KiB) in [lo, hi] on which `rounds` full rounds in a row succeed
    (harness.bisect_heap: a MemoryError means "too small", any other failure raises)."""
    return harness.bisect_heap(lambda kib: run_round(interp, setup, f"{kib}k", naive, rounds=rounds),
                               lo, hi, f"{interp.name} round")


# ----------------------------------------------------------------------------- over SLIP
SERIAL_BAUD = 115200


@dataclass
class SlipRun:
    """One run of ROUND_SCRIPT over a serial link, and what the gateway saw."""

    run: harness.RunResult
    summary: dict
    model: tuple[int, int]  # the gateway's (round, model CRC) after the run

    @property
    def accepted(self) -> int:
        """Frames the gateway accepted from node 1."""
        node = self.summary["nodes"].get(1)
        return node["frames"] if node else 0


def slip_root(tmp: Path, job: Job, data: Path, serial: dict, frozen: bool) -> Path:
    """Device root for node 1 of `job` on a serial link: node.json, the data file, the driver's modules
    (and edge/ as .mpy unless the firmware has it frozen)."""
    cfg = node_config(job, 1, "data.catd", "serial", serial=serial)
    return harness.make_device_root(tmp, mode="mpy", extra={"node.json": json.dumps(cfg), "data.catd": data},
                                    packages=DRIVER_MODULES if frozen else (harness.EDGE_DIR, *DRIVER_MODULES))


def slip_rounds(target: harness.Interpreter | Path, tmp: Path, make: Callable[[Path], Job], data: Path,
                heap: str | int, args: tuple[str, ...] = (), rounds: int = ROUNDS,
                timeout: float = 240.0, romfs: Path | None = None) -> SlipRun:
    """`rounds` full rounds of ROUND_SCRIPT over SLIP against a fresh gateway (its pyserial
    serial bridge), with the job `make(state_dir)` returns.

    target: a firmware image (Path) runs on the emulated board (firmware_tests/qemu_board.py),
    whose UART1 is a TCP socket of QEMU; an Interpreter runs the unix port on a pty relayed to
    a socket (virtual_board.PtySocket), as test_round_mp.py does. Either way the gateway opens
    a socket:// URL, as it would a USB-serial adapter. romfs: an image (`cat-aggregator
    firmware romfs`) that `mpremote romfs deploy` puts in the emulated board's ROMFS partition
    first; the firmware then has no edge/ frozen (qemu_board.firmware(edge="none"))."""
    import tempfile

    from firmware_tests.qemu_board import QemuBoard
    from firmware_tests.virtual_board import PtySocket

    tmp.mkdir(parents=True, exist_ok=True)
    job = make(Path(tempfile.mkdtemp(prefix="state-", dir=tmp)))
    argv = [str(rounds), *args]
    if isinstance(target, harness.Interpreter):
        line = PtySocket().start()
        try:
            root = slip_root(tmp, job, data, {"path": line.path}, frozen=target.name.endswith("frozen"))
            with Gateway(job, Endpoints(serial=[(line.url, SERIAL_BAUD)])) as gw:
                r = harness.run(target, root, ROUND_SCRIPT, heap=heap, timeout=timeout, precompile=True,
                                args=argv)
                return _slip_done(r, gw, rounds)
        finally:
            line.close()
    root = slip_root(tmp, job, data, {"uart": 1, "baud": SERIAL_BAUD}, frozen=True)
    with QemuBoard(target, heap) as board:
        if romfs is not None:
            board.romfs_deploy(romfs)
        with Gateway(job, Endpoints(serial=[(board.uart_url(1), SERIAL_BAUD)])) as gw:
            r = board.run(ROUND_SCRIPT, argv, timeout, root=root)
            return _slip_done(r, gw, rounds)


def _slip_done(r: harness.RunResult, gw: Gateway, rounds: int) -> SlipRun:
    # The device is done when it has written its last frame; the gateway may still be reading it.
    if r.ok:
        gw.wait_round(rounds, timeout=30.0)
    return SlipRun(r, gw.summary(), gw.model_crc())


def bisect_slip(target: harness.Interpreter | Path, tmp: Path, d: int, lo: int, hi: int,
                rounds: int = ROUNDS, romfs: Path | None = None) -> int:
    """Smallest heap (KiB) in [lo, hi] in which `rounds` SLIP rounds of the budget's job (d, K,
    S+Q, PROFILE, CSR data) complete; each try has a fresh gateway (and, on the emulated
    board, a fresh power-on; with romfs, a deploy of that image first)."""
    tmp.mkdir(parents=True, exist_ok=True)
    data = make_data(tmp / f"slip-{d}.catd", d, layout=LAYOUT, nnz=NNZ)
    name = "qemu" if isinstance(target, Path) else target.name
    return harness.bisect_heap(
        lambda kib: slip_rounds(target, tmp / f"{name}-{kib}", lambda st: make_job(st, d, profile=SERIAL_PROFILE), data,
                                kib * 1024, rounds=rounds, romfs=romfs).run,
        lo, hi, f"{name} SLIP round at d={d}")


# ----------------------------------------------------------------------------- benchmark
IMPORTS_SCRIPT = """\
import gc
from edge import board, node, coap, links, frame, datafile
gc.collect()
print("@@RESULT", gc.mem_alloc())
"""


def imports_kib(interp: harness.Interpreter, tmp: Path, frozen: bool) -> int:
    """Smallest heap that imports what a CoAP round uses (the code's own cost)."""
    root = harness.make_device_root(tmp, mode="mpy", packages=() if frozen else (harness.EDGE_DIR,))
    return harness.min_heap(interp, root, IMPORTS_SCRIPT, 1, 512, precompile=True)


def _measure(interp: harness.Interpreter, tmp: Path, d: int, naive: bool, quick: bool,
             layout: str, frozen: bool) -> dict:
    setup = round_setup(tmp, d, mode="frozen" if frozen else "mpy", layout=layout)
    try:
        hi = (1024 if naive else 512) if interp.pointer_bits == 64 else (512 if naive else 256)
        kib = bisect_round(interp, setup, 8, hi, naive)
        # timing: rounds 2.. of each run are steady state (model synced by delta, not snapshot)
        ms: list[int] = []
        comp: list[int] = []
        for _ in range(1 if quick else 3):
            r = run_round(interp, setup, f"{max(kib + 16, kib * 5 // 4)}k", naive, rounds=ROUNDS)
            if not r.ok:
                raise harness.HarnessError(r.describe())
            ms += r.result["round_ms"][1:]
            comp += r.result["compute_ms"][1:]
        return {"kib": kib, "ms": sorted(ms)[len(ms) // 2], "compute_ms": sorted(comp)[len(comp) // 2],
                "bytes": r.result["bytes"], "T": r.result["T"]}
    finally:
        setup.close()


# The edge modules a CoAP round with error feedback imports (SS, d = 4,096: the budget's .mpy
# round), each after the ones it imports, so that a module's heap is its own.
ROUND_MODULES = ("__init__", "cbor", "cose", "frame", "learner", "topk", "compress", "cat", "onair", "cost",
                 "links", "coap", "datafile", "dataheader", "node", "board", "startup", "snapshot", "ss",
                 "feedback")
#: the ones a board lets go after use (edge.cbor.drop): the start-up code (node.json, the data
#: file's header) once the node and link are made, the snapshot's after each sync by snapshot,
#: the walk's after each cost table
LET_GO = ("startup", "dataheader", "snapshot", "onair")
MODULES_SCRIPT = """\
import gc, sys
class Q:
    pass
q = Q()
for i in range(1270):  # grow the qstr pools first (the 1,280-slot one): no module is charged for a pool
    setattr(q, 'q%d' % i, 0)
q = None
import struct, json, socket, math, array, hashlib, binascii, time, os, micropython
gc.collect()
for m in sys.argv[1:]:
    a = gc.mem_alloc()
    __import__("edge" if m == "__init__" else "edge." + m)
    gc.collect()
    print("@@RESULT", gc.mem_alloc() - a)
"""


def module_heaps(tmp: Path, interp: harness.Interpreter | None = None) -> list[tuple[str, int, int]]:
    """(module, .mpy bytes, heap bytes) of each of ROUND_MODULES as .mpy on the 32-bit build:
    gc.mem_alloc() around its import, after gc.collect(), its own imports already loaded.
    interp: the .mpy files on the device filesystem (None: harness.mp32()), or an interpreter
    that has them elsewhere (romfs_interpreter: in a ROMFS image)."""
    root = harness.make_device_root(tmp, mode="mpy")
    run_root = root if interp is None else harness.make_device_root(tmp, mode="mpy", packages=())
    r = harness.run(interp or harness.mp32(), run_root, MODULES_SCRIPT, heap="512k", precompile=True,
                    args=list(ROUND_MODULES))
    if not r.ok or len(r.results) != len(ROUND_MODULES):
        raise harness.HarnessError(r.describe())
    return [(m, (root / "edge" / f"{m}.mpy").stat().st_size, heap) for m, heap in zip(ROUND_MODULES, r.results)]


PHASES_SCRIPT = SCRIPTS / "phases.py"


def phases(interp: harness.Interpreter, tmp: Path, d: int, frozen: bool, rounds: int = 2) -> list[tuple]:
    """(round, phase, live bytes, churn bytes) of full rounds (scripts/phases.py): live = what
    is allocated after the phase and a gc.collect(), above the driver's start; churn = what the
    phase allocated on the way, garbage included (GC disabled during the phase)."""
    setup = round_setup(tmp, d, mode="frozen" if frozen else "mpy")
    try:
        r = harness.run(interp, setup.root, PHASES_SCRIPT, heap="2m", precompile=True,
                        args=[str(rounds)], timeout=120)
        if not r.ok:
            raise harness.HarnessError(r.describe())
    finally:
        setup.close()
    out = []
    rnd = 0
    for line in r.stdout.splitlines():
        if line.startswith("@@ROUND"):
            rnd = int(line.split()[1])
        elif line.startswith("@@PHASE"):
            name, live, churn = line[len("@@PHASE "):].split("|")
            out.append((rnd, name, int(live), int(churn)))
    return out


def print_phases(interps: list[tuple[harness.Interpreter, bool]], tmp: Path) -> None:
    for it, frozen in interps:
        tables = {d: phases(it, tmp / f"phases-{it.name}-{d}", d, frozen) for d in DIMS}
        print(f"{it.name}: heap by phase, KiB (live after the phase / allocated during it, garbage "
              f"included); round 1 syncs by snapshot, round 2 by delta")
        print(f"  {'round':5} {'phase':40}" + "".join(f" {'d=%d' % d:>15}" for d in DIMS))
        rows = tables[DIMS[0]]
        for i, (rnd, name, _, _) in enumerate(rows):
            cells = ""
            for d in DIMS:
                row = tables[d][i] if i < len(tables[d]) else None
                if row is None or row[1] != name:
                    cells += f" {'?':>15}"
                else:
                    cells += f" {row[2] / 1024:7.1f} /{row[3] / 1024:6.1f}"
            print(f"  {rnd or '-':>5} {name:40}{cells}")


def missing(interp: harness.Interpreter) -> bool:
    """True, after printing why and the command that builds it, when interp cannot run."""
    problem = interp.problem()
    if problem:
        print(f"{problem}; build it with: {harness.MP32_BUILD_CMD}", file=sys.stderr)
    return bool(problem)


def kib_list(text: str) -> list[int]:
    """argparse type for --starts: comma-separated heaps in KiB, each 8..4096."""
    try:
        heaps = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of KiB: {text!r}") from None
    bad = [k for k in heaps if not 8 <= k <= 4096]
    if bad:
        raise argparse.ArgumentTypeError(f"heap {bad[0]} KiB outside 8..4096")
    return heaps


def main(argv: list[str] | None = None) -> int:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--interp", choices=("mp32", "mp64", "both"), default="both")
    ap.add_argument("--layout", choices=("csr", "dense"), default=LAYOUT,
                    help=f"data file layout (default {LAYOUT}, {NNZ} nonzeros per row)")
    ap.add_argument("--frozen", action="store_true",
                    help="also measure the 32-bit build with edge/ frozen into the firmware, and with "
                         "edge/ as .mpy in a ROMFS image (builds them: ~3 min the first time, seconds "
                         "after a change in edge/)")
    ap.add_argument("--quick", action="store_true", help="one timing run instead of the median of three")
    ap.add_argument("--phases", action="store_true",
                    help="only print where the heap goes, phase by phase (32-bit build; with --frozen "
                         "also the frozen build)")
    ap.add_argument("--ef", action="store_true",
                    help="only the error-feedback section: S, S+Q and SS with error feedback on the "
                         "32-bit build, frozen (d = 1,024 and 4,096) and as .mpy (d = 4,096), from the "
                         "filesystem and from a ROMFS image")
    ap.add_argument("--starts", metavar="KIB,KIB", type=kib_list,
                    help="only S, S+Q and SS with error feedback as .mpy at d = 4,096 at these heaps, "
                         "each from several points of a job (fresh gateways: " + ", ".join(map(str, STARTS))
                    + "); the rounds a bisection on one gateway may miss, such as round 24's")
    ap.add_argument("--modules", action="store_true",
                    help="only the heap of each edge/ module a CoAP round imports, as .mpy (32-bit build): "
                         "loaded from the filesystem, and run from a ROMFS image")
    ap.add_argument("--qemu", choices=("yes", "no", "only"), default="yes",
                    help="the emulated board's section (QEMU mps2-an385; builds its firmware with "
                         "build_qemu.sh): yes (default), no, or only that section")
    args = ap.parse_args(argv)
    if args.qemu == "only":
        with tempfile.TemporaryDirectory(prefix="cat-budget-") as tmp:
            return qemu_section(Path(tmp))
    if args.ef:
        with tempfile.TemporaryDirectory(prefix="cat-budget-") as tmp:
            return ef_section(Path(tmp))
    if args.starts:
        with tempfile.TemporaryDirectory(prefix="cat-budget-") as tmp:
            return starts_section(Path(tmp), args.starts)
    if args.modules:
        with tempfile.TemporaryDirectory(prefix="cat-budget-") as tmp:
            rows = module_heaps(Path(tmp) / "fs")
            rom = romfs_interpreter(build=True)
            rom_heap = dict((m, h) for m, _, h in module_heaps(Path(tmp) / "rom", rom)) if rom else {}
        print("edge/ modules a CoAP round imports, as .mpy on the 32-bit build: file bytes, heap KiB loaded "
              "from the filesystem" + (", heap KiB run from a ROMFS image" if rom_heap else "")
              + "; * let go after use")
        for m, size, heap in sorted(rows, key=lambda r: -r[2]):
            print(f"{m + ('*' if m in LET_GO else ''):11} {size:7,d} {heap / 1024:6.1f}"
                  + (f" {rom_heap[m] / 1024:6.1f}" if rom_heap else ""))
        for label, keep in (("total", lambda m: True), ("held", lambda m: m not in LET_GO)):
            print(f"{label:11} {sum(r[1] for r in rows if keep(r[0])):7,d} "
                  f"{sum(r[2] for r in rows if keep(r[0])) / 1024:6.1f}"
                  + (f" {sum(h for m, h in rom_heap.items() if keep(m)) / 1024:6.1f}" if rom_heap else ""))
        return 0
    if args.phases:
        args.interp = "mp32"
    interps: list[tuple[harness.Interpreter, bool]] = []
    if args.interp in ("mp64", "both"):
        interps.append((harness.mp64(), False))
    if args.interp in ("mp32", "both"):
        interps.append((harness.mp32(), False))
    if any(missing(it) for it, _ in interps):
        return 2
    if args.frozen:
        fz = frozen_interpreter(build=True)
        if fz is None:
            print(f"no Debian source tree for the frozen build; run {harness.MP32_BUILD_CMD}", file=sys.stderr)
            return 2
        interps.append((fz, True))
        if not args.phases:
            interps.append((romfs_interpreter(build=True), True))  # built with fz (same source tree)
    if args.phases:
        with tempfile.TemporaryDirectory(prefix="cat-budget-") as tmp:
            print_phases(interps, Path(tmp))
        return 0
    print(f"full edge round: node.json, CoAP GET config + snapshot (block 64, streamed), logistic gradient "
          f"over {ROWS} rows ({args.layout}{f', {NNZ} nnz/row' if args.layout == 'csr' else ''}), "
          f"CAT S+Q K={K} ({PROFILE}), frame encode, CoAP POST; edge/ as .mpy in the device root "
          "unless frozen")
    print(f"heap KiB = smallest -X heapsize (bisected) in which {ROUNDS} rounds in a row complete (the first "
          "syncs by snapshot, the others by delta); ms/round = median of the delta-sync rounds over 3 runs "
          "at 1.25 x that heap; compute = gradient + CAT + encode")
    print(f"{'interp':11} {'d':>5} {'top-T':>7} {'heap KiB':>8} {'ms/round':>9} {'compute ms':>10} "
          f"{'frame B':>7} {'T':>4}")
    last32 = None
    kernel_kib: dict[tuple[str, int], int] = {}
    with tempfile.TemporaryDirectory(prefix="cat-budget-") as tmp:
        for it, frozen in interps:
            code = imports_kib(it, Path(tmp) / f"{it.name}-imports", frozen)
            print(f"{it.name:11} edge/ imports alone need {code} KiB", flush=True)
            for d in DIMS:
                res = {}
                for naive in (False, True):
                    r = _measure(it, Path(tmp) / f"{it.name}-{d}-{naive}", d, naive, args.quick,
                                 args.layout, frozen)
                    res[naive] = r
                    print(f"{it.name:11} {d:5d} {'sorted' if naive else 'kernel':>7} {r['kib']:8d} "
                          f"{r['ms']:9d} {r['compute_ms']:10d} {r['bytes']:7d} {r['T']:4d}", flush=True)
                k, n = res[False], res[True]
                kernel_kib[(it.name, d)] = k["kib"]
                print(f"{it.name:11} {d:5d}   sorted()/kernel: heap x{n['kib'] / k['kib']:.2f}, "
                      f"compute time x{n['compute_ms'] / max(1, k['compute_ms']):.2f}, "
                      f"round time x{n['ms'] / max(1, k['ms']):.2f}", flush=True)
                if it.name == "mp32" and d == 4096:
                    last32 = k["kib"]
    print(f"RAM goals: d=1024 within {GOAL_KIB[1024]} KiB, d=4096 within {GOAL_KIB[4096]} KiB of heap")
    for (name, d), kib in sorted(kernel_kib.items()):
        if name.startswith("mp32"):
            how = {"mp32-frozen": "edge/ frozen into the firmware",
                   "mp32-romfs": "edge/ as .mpy files in a ROMFS image"}.get(name, "edge/ as .mpy files")
            verdict = "met" if kib <= GOAL_KIB[d] else f"not met by {kib - GOAL_KIB[d]} KiB"
            print(f"goal d={d} ({GOAL_KIB[d]} KiB), {how}: {kib} KiB, {verdict}")
    if last32 is not None:
        print(f"min heap for d=4096 on 32-bit build: {last32} KiB")
    if args.qemu == "yes":
        with tempfile.TemporaryDirectory(prefix="cat-budget-") as tmp:
            return qemu_section(Path(tmp))
    return 0


EF_SCHEMES = ("s", "sq", "ss")
#: the emulated board's heap budget over SLIP (tests/test_budget.py holds it): above the
#: bisected minimum, because near it the heap is not monotone (a run that fits at N KiB can
#: fail at N + 2 when a later collection leaves the snapshot's 4 d-byte block no room)
QEMU_BUDGET_KIB = {1024: 52, 4096: 104}
#: the same with edge/ as .mpy in its ROMFS partition (bisected 55-56 and 110 KiB): the code's
#: function objects, dicts and qstr entries are in the heap, its bytecode is not
QEMU_ROMFS_BUDGET_KIB = {1024: 64, 4096: 120}


def ef_section(tmp: Path) -> int:
    """Error feedback on: the residual lives in the gradient array, so a round needs no more
    d-arrays than without it. The three lines the RAM goals name are the largest of S, S+Q and
    SS (each bisected as the rounds above, a real MemoryError just below); a fourth gives the
    .mpy files run in place from a ROMFS image."""
    mp32 = harness.mp32()
    if missing(mp32):
        return 2
    fz = frozen_interpreter(build=True)
    if fz is None:
        print(f"no Debian source tree for the frozen build; run {harness.MP32_BUILD_CMD}", file=sys.stderr)
        return 2
    rom = romfs_interpreter(build=True)
    cases = [(fz, "frozen", 1024), (fz, "frozen", 4096), (mp32, ".mpy", 4096), (rom, ".mpy from ROMFS", 4096)]
    print(f"error feedback on, {ROUNDS} rounds in a row against the gateway (the first syncs by snapshot); "
          "heap KiB bisected per scheme")
    print(f"{'interp':11} {'d':>5} " + " ".join(f"{s:>6}" for s in EF_SCHEMES))
    worst: dict[tuple[str, int], int] = {}
    for it, how, d in cases:
        kibs = []
        for scheme in EF_SCHEMES:
            setup = round_setup(tmp / f"ef-{it.name}-{d}-{scheme}", d, mode="mpy" if it is mp32 else "frozen",
                                scheme=scheme, error_feedback=True)
            try:
                kibs.append(bisect_round(it, setup, 8, 256))
            finally:
                setup.close()
        worst[(how, d)] = max(kibs)
        print(f"{it.name:11} {d:5d} " + " ".join(f"{k:6d}" for k in kibs), flush=True)
    for (how, d), kib in worst.items():
        print(f"min heap for d={d} with error feedback, {how}, 32-bit: {kib} KiB")
    return 0


#: the node's first rounds for --starts: a job's start, early and later rounds, across round 24
STARTS = (0, 3, 7, 15, 22, 30, 45)


def start_matrix(interp: harness.Interpreter, tmp: Path, scheme: str, heaps: list[int],
                 starts: tuple[int, ...] = STARTS, d: int = 4096, mode: str = "mpy") -> dict[int, str]:
    """For each heap, one character per start s: '+' when ROUNDS rounds fit from round s on a
    fresh gateway (its rounds before s run by the node at 512 KiB), '-' on a MemoryError.
    A bisection on one gateway sees whichever rounds its runs near the minimum get; this sees
    the same points of a job for every heap."""
    out = {}
    for kib in heaps:
        marks = ""
        for st in starts:
            setup = round_setup(tmp / f"starts-{scheme}-{kib}-{st}", d, mode=mode, scheme=scheme,
                                error_feedback=True)
            try:
                if st:
                    r = run_round(interp, setup, "512k", rounds=st)
                    if not r.ok:
                        raise harness.HarnessError(r.describe())
                r = run_round(interp, setup, f"{kib}k")
            finally:
                setup.close()
            if not r.ok and not r.memory_error:
                raise harness.HarnessError(r.describe())
            marks += "+" if r.ok else "-"
        out[kib] = marks
    return out


def starts_section(tmp: Path, heaps: list[int]) -> int:
    """--starts: error feedback on, .mpy at d = 4,096, S / S+Q / SS from each of STARTS."""
    mp32 = harness.mp32()
    if missing(mp32):
        return 2
    print(f"error feedback on, .mpy, d=4096: {ROUNDS} rounds from rounds {', '.join(map(str, STARTS))} "
          "of a fresh gateway each; + fits, - MemoryError")
    for scheme in EF_SCHEMES:
        row = start_matrix(mp32, tmp, scheme, heaps)
        print(f"{scheme:3} " + "  ".join(f"{kib} KiB {marks}" for kib, marks in row.items()), flush=True)
    return 0


def qemu_section(tmp: Path) -> int:
    """The emulated board (QEMU mps2-an385): its minimum heap for the budget's rounds over SLIP,
    with edge/ frozen (next to the 32-bit unix build with edge/ frozen running the same rounds
    over the same link) and with edge/ as .mpy in its ROMFS partition (a firmware without
    edge/, the image put there by `mpremote romfs deploy`); then ROUNDS rounds at the board
    budgets per d and deployment, counted by the gateway."""
    from firmware_tests.qemu_board import QemuError, firmware

    try:
        image = firmware(build=True)
        bare = firmware(build=True, edge="none")
    except QemuError as exc:
        print(f"qemu mps2-an385: not available: {exc}", file=sys.stderr)
        return 2
    unix = frozen_interpreter(build=True)
    rom = tmp / "edge.romfs"
    rom.write_bytes(romfs_image())
    print(f"emulated board: QEMU mps2-an385 (Cortex-M3, {image.name}); the rounds above over "
          f"SLIP on its UART1 to the gateway's serial bridge (a node on serial also holds a 4 d + 256 byte "
          f"frame buffer for the snapshot); heap = the board's boot-time heap size, bisected; edge/ frozen, "
          f"or as .mpy in its ROMFS partition (mpremote romfs deploy, {rom.stat().st_size:,} bytes)", flush=True)
    accepted = attempted = 0
    for d in DIMS:
        kib = bisect_slip(image, tmp / f"qemu-{d}", d, 8, 512)
        ref = f"{bisect_slip(unix, tmp / f'unix-{d}', d, 8, 512)} KiB" if unix is not None else "not built"
        print(f"qemu mps2-an385 min heap for d={d}, SLIP, frozen: {kib} KiB "
              f"(32-bit unix build, frozen, same rounds: {ref})", flush=True)
        kib = bisect_slip(bare, tmp / f"qemu-rom-{d}", d, 8, 512, romfs=rom)
        print(f"qemu mps2-an385 min heap for d={d}, SLIP, .mpy from ROMFS: {kib} KiB", flush=True)
        data = make_data(tmp / f"qemu-{d}" / f"slip-{d}.catd", d, layout=LAYOUT, nnz=NNZ)
        for fw, budgets, how in ((image, QEMU_BUDGET_KIB, "frozen"), (bare, QEMU_ROMFS_BUDGET_KIB, "ROMFS")):
            run = slip_rounds(fw, tmp / f"qemu-{d}-{how}", lambda st: make_job(st, d, profile=SERIAL_PROFILE), data,
                              budgets[d] * 1024, romfs=rom if fw is bare else None)
            if not run.run.ok:
                print(f"qemu mps2-an385 d={d} {how} at {budgets[d]} KiB failed: {run.run.error}", file=sys.stderr)
            accepted += run.accepted
            attempted += ROUNDS
    print(f"qemu mps2-an385 rounds accepted: {accepted} of {attempted} (at the board budgets: frozen "
          f"{' / '.join(f'{v} KiB' for v in QEMU_BUDGET_KIB.values())}, ROMFS "
          f"{' / '.join(f'{v} KiB' for v in QEMU_ROMFS_BUDGET_KIB.values())})")
    return 0 if accepted == attempted else 1


if __name__ == "__main__":
    sys.exit(main())
