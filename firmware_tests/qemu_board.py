"""The emulated board: MicroPython on QEMU's mps2-an385 (Cortex-M3), edge/ frozen in.

Why: the unix port runs the edge but is not a board. This is a bare-metal MicroPython with a
fixed GC heap, a SysTick tick source, CMSDK UARTs and a littlefs filesystem on a RAM disk (the
board port in firmware_tests/qemu_mps2/, built by build_qemu.sh), run by qemu-system-arm.

Its UARTs are loopback TCP servers of QEMU (`-serial tcp:127.0.0.1:PORT,server=on`):

* UART0 is the REPL. The host reaches it with mpremote's SerialTransport over pyserial's
  socket:// URL (raw REPL, raw-paste), exactly as mpremote reaches a board on /dev/ttyACM0;
* UART1 is `machine.UART(1)`, what edge/board.py opens for `"serial": {"uart": 1}`. The
  gateway's pyserial serial bridge connects to `uart_url(1)` as it would open a USB-serial
  adapter, and the two exchange SLIP frames.

Files go onto the RAM disk through the raw REPL (as `cat-aggregator flash` puts them on a real
board); `run` then soft-resets (a clean heap, files kept: the RAM disk is outside the heap) and
imports a precompiled driver, as harness.run does on the unix port, returning the same
RunResult. The heap size is set at boot (`heap=N` on QEMU's semihosting command line, the
board's equivalent of the unix port's -X heapsize). QEMU is always killed on close().
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Sequence

from firmware_tests import harness

BUILD_SCRIPT = harness.REPO / "firmware_tests" / "build_qemu.sh"
QEMU_BUILD_CMD = f"bash {BUILD_SCRIPT.relative_to(harness.REPO)}"
MACHINE = "mps2-an385"
UARTS = 2  # UART0: REPL, UART1: the edge's serial link
CHUNK = 768  # bytes per raw-REPL write: small enough to compile in a 16 KiB heap


class QemuError(RuntimeError):
    """The emulated board could not be built, started or talked to."""


def firmware(build: bool = True, timeout: float = 1800.0, edge: str = "frozen") -> Path:
    """The firmware image, built (or found up to date) by build_qemu.sh; QemuError with the
    script's one-line reason when it cannot be built. build=False: the cached image or error.
    edge="none": the same board without edge/ frozen (it gets the .mpy files on its filesystem
    or in its ROMFS partition)."""
    env = dict(os.environ, QEMU_EDGE=edge)
    default = harness.REPO / ".cache" / ("qemu-mps2" if edge == "frozen" else "qemu-mps2-noedge")
    cached = Path(env.get("QEMU_CACHE") or default) / "firmware.elf"
    if not build:
        if cached.is_file():
            return cached
        raise QemuError(f"{cached} not built; run QEMU_EDGE={edge} {QEMU_BUILD_CMD}")
    try:
        proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, env=env)
    except subprocess.TimeoutExpired:
        raise QemuError(f"{QEMU_BUILD_CMD} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        reason = [ln for ln in proc.stderr.splitlines() if "FAILED" in ln] or proc.stderr.splitlines()[-1:]
        raise QemuError(" ".join(reason) or f"{QEMU_BUILD_CMD} exit {proc.returncode}")
    path = Path(proc.stdout.strip().splitlines()[-1])
    if not path.is_file():
        raise QemuError(f"{QEMU_BUILD_CMD} reported {path}, which does not exist")
    return path


def _free_tcp_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _heap_bytes(heap: str | int) -> int:
    text = harness._heap_arg(heap)
    if isinstance(heap, int) or text.isdigit():
        return int(text)
    return int(text[:-1]) * (1024 if text.endswith("k") else 1024 * 1024)


class QemuBoard:
    """One power-on of the emulated board (see the module doc). Use as a context manager."""

    def __init__(self, image: Path, heap: str | int = "256k") -> None:
        self.image = Path(image)
        self.heap = _heap_bytes(heap)
        self.ports: list[int] = []
        self.proc: subprocess.Popen | None = None
        self.transport = None
        self._log = tempfile.TemporaryFile()
        self.console = bytearray()  # everything the REPL printed to run() calls

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 30.0, tries: int = 5) -> "QemuBoard":
        """Power on and take the REPL into raw mode. Retried with other ports when another
        process takes one between the probe and QEMU's bind."""
        qemu = shutil.which("qemu-system-arm")
        if qemu is None:
            raise QemuError(f"qemu-system-arm not found; {QEMU_BUILD_CMD} installs it")
        for attempt in range(tries):
            self.ports = _free_tcp_ports(UARTS)
            cmd = [qemu, "-machine", MACHINE, "-nographic", "-monitor", "null", "-nic", "none",
                   "-semihosting-config", f"enable=on,target=native,arg=firmware,arg=heap={self.heap}",
                   "-serial", f"tcp:127.0.0.1:{self.ports[0]},server=on,wait=on,nodelay=on"]
            for port in self.ports[1:]:
                cmd += ["-serial", f"tcp:127.0.0.1:{port},server=on,wait=off,nodelay=on"]
            cmd += ["-kernel", str(self.image)]
            self._log.seek(0)
            self._log.truncate()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
            try:
                self._connect(timeout)
                return self
            except QemuError:
                busy = "in use" in self.qemu_output()
                self.close(keep_log=True)
                if not busy or attempt == tries - 1:
                    raise
        raise AssertionError("unreachable")

    def _connect(self, timeout: float) -> None:
        from mpremote.transport import TransportError

        self._open_console(timeout)
        try:
            self.transport.enter_raw_repl(soft_reset=False, timeout_overall=timeout)
        except TransportError as exc:
            raise QemuError(f"raw REPL: {exc}") from None

    def _open_console(self, timeout: float) -> None:
        """Connect to UART0 (QEMU listens from power-on, and again after a client leaves)."""
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        end = time.monotonic() + timeout
        while self.transport is None:
            if self.proc is None or self.proc.poll() is not None:
                raise QemuError(f"qemu exited: {self.qemu_output()[-500:]}")
            if time.monotonic() > end:
                raise QemuError(f"no REPL on {self.uart_url(0)} after {timeout:.0f} s")
            try:
                self.transport = SerialTransport(self.uart_url(0), baudrate=115200)
            except TransportError:
                time.sleep(0.05)
        # pyserial leaves Nagle on: every raw-REPL exchange would wait for a delayed ACK
        self.transport.serial._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def release_console(self) -> None:
        """Leave UART0 free for another client (mpremote, `cat-aggregator flash`)."""
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def reconnect(self, timeout: float = 30.0) -> None:
        """Take UART0 back after release_console() (the board keeps running)."""
        self._open_console(timeout)

    def romfs_deploy(self, image: Path, timeout: float = 300.0) -> str:
        """`mpremote romfs deploy IMAGE` on UART0, the command a user runs on a board with a
        ROMFS partition; returns its output. The board keeps running: a soft reset mounts the
        image at /rom."""
        from aggregator.ops.flash import mpremote_cmd

        self.release_console()
        try:
            proc = subprocess.run([*mpremote_cmd(), "connect", self.uart_url(0), "romfs", "deploy", str(image)],
                                  capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise QemuError(f"mpremote romfs deploy did not finish within {timeout:.0f} s") from None
        finally:
            self.reconnect()
        if proc.returncode != 0 or "ROMFS image deployed" not in proc.stdout:
            raise QemuError(f"mpremote romfs deploy: exit {proc.returncode}: {(proc.stdout + proc.stderr)[-500:]}")
        return proc.stdout

    def boot_main(self, until: bytes, timeout: float = 120.0) -> str:
        """Ctrl-D at the friendly REPL, as in a terminal: a soft reset that runs _boot.py and
        then main.py. Returns the console output up to `until` (all of it on a timeout)."""
        t = self.transport
        if t is None:
            raise QemuError("console released; reconnect() first")
        t.exit_raw_repl()
        t.read_until(1, b">>> ", timeout=10)
        t.serial.write(b"\x04")
        data = t.read_until(1, until, timeout=None, timeout_overall=timeout)
        return data.decode("utf-8", "replace")

    def qemu_output(self) -> str:
        """What QEMU itself printed (errors, warnings)."""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def close(self, keep_log: bool = False) -> None:
        """Disconnect and kill QEMU (always; it is only RAM)."""
        if self.transport is not None:
            try:
                self.transport.close()
            except OSError:
                pass
            self.transport = None
        p = self.proc
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(10)
        self.proc = None
        if not keep_log:
            self._log.close()

    def __enter__(self) -> "QemuBoard":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def uart_url(self, n: int) -> str:
        """pyserial URL of UART n (0: the REPL, 1: machine.UART(1))."""
        return f"socket://127.0.0.1:{self.ports[n]}"

    # ------------------------------------------------------------------ raw REPL
    def exec(self, code: str, timeout: float = 30.0) -> tuple[str, str, bool]:
        """Run code through the raw REPL: (stdout, error output, timed out)."""
        from mpremote.transport import TransportError

        t = self.transport
        if t is None:
            raise QemuError("board not started, or console released")
        try:
            if not t.in_raw_repl:
                t.enter_raw_repl(soft_reset=False)
            t.exec_raw_no_follow(code)
        except TransportError as exc:
            raise QemuError(f"raw REPL: {exc}; qemu: {self.qemu_output()[-300:]}") from None
        end = time.monotonic() + timeout
        parts = []
        for _ in range(2):  # stdout up to \x04, then the error output up to \x04
            left = max(0.0, end - time.monotonic())
            data = t.read_until(1, b"\x04", timeout=None, timeout_overall=left)
            if not data.endswith(b"\x04"):
                parts.append(data)
                out = [p.decode("utf-8", "replace") for p in parts] + [""]
                return out[0], out[1], True
            parts.append(data[:-1])
        self.console += parts[0]
        return parts[0].decode("utf-8", "replace"), parts[1].decode("utf-8", "replace"), False

    def _exec_ok(self, code: str, what: str, timeout: float = 30.0) -> str:
        out, err, timed_out = self.exec(code, timeout)
        if err or timed_out:
            raise BoardRunError(what, out, err, timed_out)
        return out

    def put(self, path: str, data: bytes) -> None:
        """Write one file onto the board's filesystem (parent directories made)."""
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self._exec_ok("import os\ntry:\n os.mkdir(%r)\nexcept OSError:\n pass" % "/".join(parts[:i]),
                          f"mkdir for {path}")
        self._exec_ok("from binascii import a2b_base64 as a\nf=open(%r,'wb')\nw=f.write" % path, f"open {path}")
        for i in range(0, len(data), CHUNK):
            self._exec_ok("w(a(%r))" % base64.b64encode(data[i:i + CHUNK]), f"write {path}")
        self._exec_ok("f.close()\ndel a, f, w", f"close {path}")

    def put_root(self, root: Path | str) -> list[str]:
        """Copy a device root (harness.make_device_root) onto the board; returns the paths."""
        root = Path(root)
        paths = []
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = f.relative_to(root).as_posix()
            if rel.startswith(harness.DRIVER_NAME + "."):
                continue
            self.put(rel, f.read_bytes())
            paths.append(rel)
        return paths

    def soft_reset(self, timeout: float = 20.0) -> None:
        """Ctrl-D at the raw REPL: a fresh interpreter and heap; the RAM disk keeps its files."""
        from mpremote.transport import TransportError

        try:
            self.transport.enter_raw_repl(soft_reset=True, timeout_overall=timeout)
        except TransportError as exc:
            raise QemuError(f"soft reset: {exc}") from None

    def run(self, script: str | Path, args: Sequence[str] = (), timeout: float = 120.0,
            root: Path | str | None = None) -> harness.RunResult:
        """Run a driver as harness.run(precompile=True) does on the unix port: compiled to
        _harness_main.mpy on the board, then, after a soft reset, `import _harness_main` with
        sys.argv = [name] + args. `root`: a device root to copy onto the board first. Errors
        on the board (a MemoryError too, also while copying) come back in the RunResult."""
        source = script.read_text() if isinstance(script, Path) else script
        with tempfile.TemporaryDirectory(prefix="qemu-driver-") as tmp:
            src = Path(tmp) / f"{harness.DRIVER_NAME}.py"
            src.write_text(source)
            mpy = src.with_suffix(".mpy")
            err = harness.compile_module(src, mpy, src.name)
            if err:
                raise harness.CompileError([err])
            start = time.monotonic()
            try:
                if root is not None:
                    self.put_root(root)
                self.put(mpy.name, mpy.read_bytes())
                self.soft_reset()
                argv = [harness.DRIVER_NAME] + [str(a) for a in args]
                out, err_out, timed_out = self.exec(
                    f"import sys\nsys.argv[:] = {argv!r}\nimport {harness.DRIVER_NAME}", timeout)
            except BoardRunError as exc:
                out, err_out, timed_out = exc.stdout, exc.stderr, exc.timed_out
        results, bad = harness._parse_results(out)
        rc = None if timed_out else (1 if err_out else 0)
        return harness.RunResult(rc, out, err_out, results, bad, timed_out, time.monotonic() - start,
                                 f"{self.heap}")


class BoardRunError(QemuError):
    """Code sent through the raw REPL failed on the board (its traceback is in stderr)."""

    def __init__(self, what: str, stdout: str, stderr: str, timed_out: bool) -> None:
        super().__init__(f"{what}: {'timed out' if timed_out else stderr.strip().splitlines()[-1:]}")
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timed_out
