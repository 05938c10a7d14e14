"""Many edges in one process: real frames from the edge code, sent over real CoAP and MQTT.

Used by tests/test_scale.py (a few hundred edges, a few rounds) and by benchmarks/soak.py
and benchmarks/scale.py (thousands of edges, minutes). Everything binds to 127.0.0.1.

* `update_frame`: one update encoded by edge.frame (random sparse values of the job's scheme),
  for tests and benchmarks that need many valid frames without training.
* `CoapBlaster`: a CoAP client for many requests in flight over a few UDP sockets: messages
  are encoded and decoded by aiocoap's message layer (aiocoap.Message), confirmable, with
  retransmission; the server side is the gateway's aiocoap.
"""

from __future__ import annotations

import asyncio
import random
from array import array

import aiocoap
import numpy as np

from edge import frame

SCHEME_SQ = 2


def update_frame(job_id: int, node: int, key: bytes, rnd: int, d: int, T: int, scheme: int,
                 rng: np.random.Generator, telemetry: bool = True) -> bytes:
    """A valid update of `scheme` (S, SQ or SS) with T random entries, encoded by the edge."""
    buf = bytearray(frame.buffer_size(d, T, scheme, 0))
    idx = array("I", np.sort(rng.choice(d, T, replace=False)).tolist())
    if scheme == SCHEME_SQ:
        m = float(np.float32(rng.random() * 0.1))
        vals = array("f", [m if s else -m for s in rng.integers(0, 2, T)])
    else:
        vals = array("f", (rng.standard_normal(T) * 0.1).astype(np.float32).tolist())
    tel = (float(rng.random()), 0.5, 0.001, 0.0001) if telemetry else None
    n = frame.encode_update(buf, key, job_id, node, rnd, scheme, d, T, idx, vals, 0, tel)
    return bytes(buf[:n])


class _Endpoint(asyncio.DatagramProtocol):
    """One UDP socket with its own message-id space (aiocoap deduplicates by (peer, mid))."""

    def __init__(self, owner: "CoapBlaster") -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None
        self.mid = random.randrange(0x10000)
        self.waiting: dict[int, tuple[asyncio.Future, bytes, int]] = {}

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            msg = aiocoap.Message.decode(data)
        except Exception:
            return
        if msg.mtype == aiocoap.CON:            # a separate response: acknowledge it
            self.transport.sendto(aiocoap.Message(mtype=aiocoap.ACK, mid=msg.mid, code=aiocoap.EMPTY).encode())
        if msg.code == aiocoap.EMPTY:           # the empty ACK before a separate response
            return
        got = self.waiting.pop(int.from_bytes(msg.token, "big"), None)
        if got is not None and not got[0].done():
            got[0].set_result((msg.code, bytes(msg.payload)))


class CoapBlaster:
    """Confirmable CoAP requests, many in flight, over `sockets` UDP sockets to host:port."""

    def __init__(self, host: str, port: int, sockets: int = 8, ack_timeout: float = 2.0,
                 max_retransmit: int = 6) -> None:
        self.addr = (host, port)
        self.n = sockets
        self.ack_timeout = ack_timeout
        self.max_retransmit = max_retransmit
        self.eps: list[_Endpoint] = []
        self._token = random.randrange(1 << 32)
        self._next = 0
        self.retransmissions = 0

    async def start(self) -> "CoapBlaster":
        loop = asyncio.get_running_loop()
        for _ in range(self.n):
            _, ep = await loop.create_datagram_endpoint(lambda: _Endpoint(self), remote_addr=self.addr)
            self.eps.append(ep)
        return self

    def close(self) -> None:
        for ep in self.eps:
            if ep.transport is not None:
                ep.transport.close()

    async def request(self, code, path: tuple[str, ...], payload: bytes = b"",
                      query: tuple[str, ...] = ()) -> tuple[aiocoap.numbers.codes.Code, bytes]:
        """One request; (response code, payload). Raises TimeoutError after the retransmissions."""
        ep = self.eps[self._next % self.n]
        self._next += 1
        ep.mid = (ep.mid + 1) & 0xFFFF
        self._token = tok = (self._token + 1) & 0xFFFFFFFF
        msg = aiocoap.Message(mtype=aiocoap.CON, code=code, mid=ep.mid, token=tok.to_bytes(4, "big"),
                              payload=payload)
        msg.opt.uri_path = path
        if query:
            msg.opt.uri_query = query
        if code == aiocoap.POST:
            msg.opt.content_format = 60
        data = msg.encode()
        fut = asyncio.get_running_loop().create_future()
        ep.waiting[tok] = (fut, data, ep.mid)
        timeout = self.ack_timeout
        try:
            for attempt in range(self.max_retransmit + 1):
                ep.transport.sendto(data)
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), timeout)
                except asyncio.TimeoutError:
                    self.retransmissions += 1
                    timeout *= 2
            raise TimeoutError(f"CoAP {'/'.join(path)}: no response after {self.max_retransmit} retransmissions")
        finally:
            ep.waiting.pop(tok, None)
