"""Serial bridge: boards on USB/UART send SLIP-framed updates; the gateway answers with SLIP
frames of config, snapshot and deltas (docs/protocol.md). pyserial does the port; a reader
thread hands complete frames to the asyncio loop, which runs the one pipeline.
"""

from __future__ import annotations

import asyncio
import threading

import serial

from aggregator.errors import UserError
from aggregator.gateway.pipeline import Aggregator
from edge import slip
from edge.pushlinks import HELLO


class SerialPortError(UserError, OSError):
    """A serial port of the job cannot be opened (no such device, busy, no permission)."""


class SerialFront:
    def __init__(self, agg: Aggregator, port: str, baud: int, loop: asyncio.AbstractEventLoop) -> None:
        self.agg = agg
        self.loop = loop
        self.port = port
        try:
            self.ser = serial.serial_for_url(port, baudrate=baud, timeout=0.05)
        except (OSError, ValueError, serial.SerialException) as exc:
            raise SerialPortError(f"serial port {port}: {exc}") from exc
        self.decoder = slip.SlipDecoder(agg.job.max_frame_bytes + 16)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._reader, name=f"serial:{port}", daemon=True)
        self.hellos = 0
        agg.listeners.append(self._on_close)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(2)
        self.ser.close()

    def _reader(self) -> None:
        buf = bytearray(4096)
        while not self.stopping.is_set():
            try:
                n = self.ser.readinto(buf)
            except (OSError, serial.SerialException):
                if self.stopping.is_set():
                    return
                continue
            if n:
                for frame in self.decoder.feed(memoryview(buf)[:n]):
                    self.loop.call_soon_threadsafe(self._handle, frame)

    def _write(self, data: bytes) -> None:
        with self.lock:
            self.ser.write(slip.encode(data))
            self.ser.flush()

    def _handle(self, frame: bytes) -> None:
        if frame == HELLO:
            self.hellos += 1
            self._write(self.agg.config_message())
            self._write(self.agg.snapshot_message())
            return
        self.agg.submit(frame, f"serial:{self.port}")

    def _on_close(self, closed) -> None:
        delta = self.agg.delta_message(closed.round)
        if delta is not None:
            self._write(delta)
        self._write(self.agg.config_message())
