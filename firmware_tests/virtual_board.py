"""A virtual MicroPython board: the unix port on a pty, reachable as socket://127.0.0.1:PORT.

Why: `cat-aggregator flash` talks to boards through mpremote (pyserial underneath), and no
board is attached here. pyserial's `socket://` URL reaches a TCP port; behind it this module
relays bytes to the master side of a pty whose slave is the interpreter's console, exactly
where a board's USB-serial REPL would be.

The unix port is not a board, so a few board behaviours are emulated here, and only these:

* boot: the interpreter starts in the device root and runs `main.py` (if present) before
  its REPL, like a board after reset (`-i` plus a boot script kept outside the root, the
  way frozen firmware modules are);
* Ctrl-C while a program runs interrupts it (a board's UART driver raises
  KeyboardInterrupt; on the pty the relay sends SIGINT);
* Ctrl-D at the raw REPL prompt is a soft reset: the interpreter restarts (without
  main.py), prints "soft reboot" and comes back in the raw REPL, which is what mpremote
  waits for;
* `machine.reset()` (what `mpremote reset` runs) exits the interpreter and the relay boots
  a fresh one that runs main.py: a hard reset. The unix port has no machine.reset; the
  "firmware" directory supplies a `machine` module extending the built-in one.

`PtySocket` (a pty relayed to one TCP client at a time) is also the serial line of the
SLIP tests: the device opens the pty's slave path, the gateway's pyserial bridge connects
to socket://127.0.0.1:PORT.
"""

from __future__ import annotations

import os
import pty
import shutil
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
import tty
from pathlib import Path
from typing import Callable

from firmware_tests import harness

BOOT_PY = """\
import os, sys
sys.path[:] = %(path)r  # a board's order: the root (cwd), frozen firmware modules, /lib
def _boot():
    try:
        os.stat("main.py")
    except OSError:
        return
    try:
        exec(open("main.py").read(), {"__name__": "__main__"})
    except KeyboardInterrupt:
        print("KeyboardInterrupt")
    except SystemExit:
        raise
    except Exception as e:
        sys.print_exception(e)
if "%(mode)s" == "boot":
    _boot()
del _boot
"""

MACHINE_PY = """\
# Virtual board firmware: the unix port's machine module plus reset().
from umachine import *


def reset():
    raise SystemExit(%(code)d)
"""

RESET_EXIT = 77
RAW_PROMPTS = (b"raw REPL; CTRL-B to exit\r\n>", b"\x04>")
FRIENDLY_PROMPTS = (b">>> ", b"... ")


class PtySocket:
    """A pty whose master is relayed to one TCP client at a time on 127.0.0.1.

    `on_output(data)` sees every byte the slave side wrote; `on_input(data) -> bytes` may
    rewrite (or swallow) bytes from the client before they reach the master."""

    def __init__(self, on_output: Callable[[bytes], None] | None = None,
                 on_input: Callable[[bytes], bytes] | None = None, raw: bool = True) -> None:
        self.master, self.slave = pty.openpty()
        if raw:
            tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.on_output = on_output
        self.on_input = on_input
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.client: socket.socket | None = None
        self.connections = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._relay, name=f"pty-socket:{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def start(self) -> "PtySocket":
        self._thread.start()
        return self

    def write_master(self, data: bytes) -> None:
        """Bytes to the slave side (as if the client had sent them)."""
        with self._lock:
            os.write(self.master, data)

    def send_client(self, data: bytes) -> None:
        """Bytes to the client (as if the slave had written them)."""
        c = self.client
        if c is not None:
            try:
                c.sendall(data)
            except OSError:
                pass

    def _relay(self) -> None:
        while not self._stop.is_set():
            rl = [self.listener, self.master] + ([self.client] if self.client else [])
            try:
                ready, _, _ = select.select(rl, [], [], 0.05)
            except (OSError, ValueError):
                return
            if self.listener in ready:
                conn, _ = self.listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.client is not None:
                    self.client.close()
                self.client = conn
                self.connections += 1
            if self.master in ready:
                try:
                    data = os.read(self.master, 4096)
                except OSError:
                    data = b""
                if data:
                    if self.on_output:
                        self.on_output(data)
                    self.send_client(data)
            if self.client is not None and self.client in ready:
                try:
                    data = self.client.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    self.client.close()
                    self.client = None
                    continue
                if self.on_input:
                    data = self.on_input(data)
                if data:
                    self.write_master(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for s in (self.client, self.listener):
            if s is not None:
                s.close()
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class VirtualBoard:
    """The unix-port interpreter as a board on socket://127.0.0.1:PORT (see module doc).

    root: the board's filesystem (cwd, first on sys.path, then /lib); heap: -X heapsize."""

    def __init__(self, interp: harness.Interpreter, root: Path | str, heap: str = "256k",
                 env: dict[str, str] | None = None) -> None:
        self.interp = interp
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.heap = heap
        self.env = env or {}
        self.firmware = Path(tempfile.mkdtemp(prefix="vboard-fw-"))
        (self.firmware / "machine.py").write_text(MACHINE_PY % {"code": RESET_EXIT})
        self.console = bytearray()
        self.boots = 0
        self.soft_resets = 0
        self.hard_resets = 0
        self.proc: subprocess.Popen | None = None
        self._tail = b""
        self._host_since_prompt = 0
        self._want_raw = False
        self._mode = "boot"
        self._cond = threading.Condition()
        self._closing = False
        self.line = PtySocket(on_output=self._on_output, on_input=self._on_input)
        self._watch = threading.Thread(target=self._watchdog, name="vboard-watch", daemon=True)

    @property
    def url(self) -> str:
        return self.line.url

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 15.0) -> "VirtualBoard":
        self.line.start()
        self._spawn("boot")
        self._watch.start()
        if not self.wait_for(b">>> ", timeout):
            raise RuntimeError(f"virtual board did not reach its REPL:\n{self.text()}")
        return self

    def _spawn(self, mode: str) -> None:
        self._mode = mode
        boot = self.firmware / f"_vboot_{mode}.py"
        path = [str(self.root), str(self.firmware), str(self.root / "lib")]
        boot.write_text(BOOT_PY % {"mode": mode, "path": path})
        env = dict(os.environ)
        env.update(self.env)
        env["MICROPYPATH"] = os.pathsep.join(path)
        self._want_raw = mode == "raw"
        self.boots += 1
        self.proc = subprocess.Popen(
            [str(self.interp.path), "-X", f"heapsize={self.heap}", "-i", str(boot)],
            stdin=self.line.slave, stdout=self.line.slave, stderr=self.line.slave,
            cwd=self.root, env=env, start_new_session=True)

    def _kill(self) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(5)

    def _watchdog(self) -> None:
        """A board comes back after it stops: the interpreter exiting is a reset."""
        while not self._closing:
            with self._cond:
                p = self.proc
                if p is not None and p.poll() is not None and not self._closing:
                    if p.returncode == RESET_EXIT:
                        self.hard_resets += 1
                    self._tail = b""
                    self._spawn("boot")
            time.sleep(0.05)

    def close(self) -> None:
        self._closing = True
        with self._cond:
            self._kill()
        if self._watch.is_alive():
            self._watch.join(2)
        self.line.close()
        shutil.rmtree(self.firmware, ignore_errors=True)

    def __enter__(self) -> "VirtualBoard":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ console
    def _on_output(self, data: bytes) -> None:
        with self._cond:
            self.console += data
            self._tail = (self._tail + data)[-64:]
            if self._tail.endswith(RAW_PROMPTS):
                self._host_since_prompt = 0
            if self._want_raw and self._tail.endswith(b">>> "):
                self._want_raw = False
                self.line.write_master(b"\x01")  # back into the raw REPL after a soft reset
            self._cond.notify_all()

    def _at_prompt(self) -> bool:
        return self._tail.endswith(RAW_PROMPTS + FRIENDLY_PROMPTS)

    def _on_input(self, data: bytes) -> bytes:
        out = bytearray()
        for b in data:
            ch = bytes((b,))
            if ch == b"\x04" and self._tail.endswith(RAW_PROMPTS) and self._host_since_prompt == 0:
                # soft reset from the raw REPL: restart without main.py, back in raw mode
                self.soft_resets += 1
                if out:
                    self.line.write_master(bytes(out))
                    out.clear()
                self._restart_raw()
                continue
            if ch == b"\x03" and not self._at_prompt() and self.proc is not None and self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGINT)  # a board's UART raises KeyboardInterrupt
            self._host_since_prompt += 1
            out += ch
        return bytes(out)

    def _restart_raw(self) -> None:
        with self._cond:  # the watchdog must not reboot this one into main.py
            p = self.proc
            self.proc = None
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(5)
            self._tail = b""
            self.line.send_client(b"soft reboot\r\n")
            self._spawn("raw")

    def text(self) -> str:
        return self.console.decode("utf-8", "replace")

    def wait_for(self, needle: bytes, timeout: float = 30.0, start: int = 0) -> bool:
        """Wait until the console output (from offset start) contains needle."""
        end = time.monotonic() + timeout
        with self._cond:
            while needle not in self.console[start:]:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True
