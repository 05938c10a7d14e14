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
import time
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
            ack = aiocoap.Message(code=aiocoap.EMPTY)
            ack.mtype, ack.mid = aiocoap.ACK, msg.mid
            self.transport.sendto(ack.encode())
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
        msg = aiocoap.Message(code=code, payload=payload)
        # our own message layer: message id, token and type set here, not by aiocoap's client
        msg.mtype, msg.mid, msg.token = aiocoap.CON, ep.mid, tok.to_bytes(4, "big")
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


# ----------------------------------------------------------------------------- the fleet
def blob_dataset(nodes: int, rows_per_node: int = 12, features: int = 30, seed: int = 0):
    """A two-class dataset large enough for thousands of nodes (breast_cancer has 569 rows)."""
    from aggregator.lab import datasets
    rng = np.random.default_rng(seed)
    n = nodes * rows_per_node
    w = rng.standard_normal(features)
    X = rng.standard_normal((n, features)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = (X @ w + 0.1 * rng.standard_normal(n) > 0).astype(np.int64)
    return datasets.Dataset(X, y, 2, "blobs")


class MemLink:
    """The edge loop's link (edge/node.py) over a site's shared downlink; it keeps the frame."""

    def __init__(self, site: "Site") -> None:
        self.site = site
        self.frame: bytes | None = None

    def get_config(self):
        return self.site.inbox.config

    def get_snapshot(self):
        return self.site.inbox.snapshot

    def get_delta(self, base):
        return self.site.inbox.get_delta(base)

    def send_update(self, mv) -> bool:
        self.frame = bytes(mv)
        return True

    def wait(self, seconds) -> None:
        return None


class Site:
    """The edges that share one endpoint: a CoAP server (a gateway or a shard) or a broker."""

    def __init__(self, name: str, transport: str, host: str, port: int, nodes: list, job_id: int) -> None:
        from edge.pushlinks import Inbox
        self.name = name
        self.transport = transport
        self.host, self.port = host, port
        self.nodes = nodes                 # node ids; [(node id, EdgeNode)] once the fleet runs
        self.job_id = job_id
        self.inbox = Inbox(keep=64)
        self.prefix = f"cat/{job_id}/"
        self.coap: CoapBlaster | None = None
        self.mqtt = None
        self.changed: asyncio.Event | None = None
        self.acked: dict[int, list[int]] = {}     # round -> nodes whose valid frame was acknowledged
        self.bad: dict[str, int] = {}             # reason -> bad frames sent
        self.opened: dict[int, float] = {}        # round -> when this site saw it open
        self.finished: dict[int, float] = {}      # round -> when its last frame was answered
        self.sent = 0

    # downlink -----------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.changed = asyncio.Event()
        if self.transport == "coap":
            self.coap = await CoapBlaster(self.host, self.port, sockets=8).start()
            return
        import paho.mqtt.client as mqtt
        self.pending: dict[int, asyncio.Future] = {}
        c = self.mqtt = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fleet-{self.name}-{random.random()}")
        c.max_inflight_messages_set(256)
        c.max_queued_messages_set(0)
        ready = asyncio.Event()

        def on_connect(cl, ud, fl, rc, pr):
            cl.subscribe([(self.prefix + t, 1) for t in ("config", "model", "down")])
            loop.call_soon_threadsafe(ready.set)

        def on_message(cl, ud, msg):
            data = bytes(msg.payload)
            loop.call_soon_threadsafe(self._downlink, data)

        def on_publish(cl, ud, mid, rc, pr):
            loop.call_soon_threadsafe(self._puback, mid)

        c.on_connect, c.on_message, c.on_publish = on_connect, on_message, on_publish
        c.connect(self.host, self.port, keepalive=30)
        c.loop_start()
        await asyncio.wait_for(ready.wait(), 20)

    def _downlink(self, data: bytes) -> None:
        self.inbox.put(data)
        self.changed.set()

    def _puback(self, mid: int) -> None:
        # runs on the loop after send() registered the future (it does not yield in between)
        fut = self.pending.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(True)

    async def refresh(self, need_round: int, timeout: float) -> int:
        """Wait until the site's config says round >= need_round; returns it."""
        from edge.pushlinks import peek
        end = time.monotonic() + timeout
        while True:
            cfg = self.inbox.config
            rnd = peek(cfg)[1] if cfg else -1
            if rnd >= need_round:
                return rnd
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"site {self.name}: no round {need_round} within {timeout:.0f} s (at {rnd})")
            if self.coap is not None:
                try:                                 # within this wait's own deadline
                    code, data = await asyncio.wait_for(
                        self.coap.request(aiocoap.GET, ("cat", str(self.job_id), "config")), left)
                except (asyncio.TimeoutError, TimeoutError):
                    continue                         # the deadline check above says how far it got
                if code == aiocoap.CONTENT:
                    self.inbox.put(data)
                    if peek(data)[1] >= need_round:
                        continue
                await asyncio.sleep(0.02)
            else:
                self.changed.clear()
                try:
                    await asyncio.wait_for(self.changed.wait(), min(left, 0.5))
                except asyncio.TimeoutError:
                    pass

    async def fetch_model(self, rnd: int, wait_push: float = 0.0) -> None:
        """CoAP: the delta into rnd and the snapshot, for the edges to sync with. MQTT: the
        gateway pushes them after the config, so wait up to `wait_push` s for the next push."""
        if self.coap is None:
            if wait_push > 0:
                self.changed.clear()
                try:
                    await asyncio.wait_for(self.changed.wait(), wait_push)
                except asyncio.TimeoutError:
                    pass
            return
        if wait_push > 0:
            await asyncio.sleep(0.05)           # a retry: give the gateway a moment
        if rnd > 0:
            code, data = await self.coap.request(aiocoap.GET, ("cat", str(self.job_id), "delta"),
                                                 query=(f"r={rnd - 1}",))
            if code == aiocoap.CONTENT:
                self.inbox.put(data)
        code, data = await self.coap.request(aiocoap.GET, ("cat", str(self.job_id), "model"))
        if code == aiocoap.CONTENT:
            self.inbox.put(data)

    # uplink -------------------------------------------------------------------------
    async def send(self, node: int, data: bytes) -> bool:
        """One frame; True when the gateway acknowledged it (CoAP 2.04, MQTT PUBACK)."""
        self.sent += 1
        if self.coap is not None:
            code, _ = await self.coap.request(aiocoap.POST, ("cat", str(self.job_id), "up"), data)
            return code == aiocoap.CHANGED
        info = self.mqtt.publish(f"{self.prefix}up/{node}", data, qos=1)
        fut = asyncio.get_running_loop().create_future()
        self.pending[info.mid] = fut
        await asyncio.wait_for(fut, 120)
        return True

    def close(self) -> None:
        if self.coap is not None:
            self.coap.close()
        if self.mqtt is not None:
            self.mqtt.disconnect()
            self.mqtt.loop_stop()


class Fleet:
    """Thousands of edges in one process (edge.node.EdgeNode each, real training) driven
    round by round over their sites; a few bad frames of known kinds mixed in every round."""

    BAD_KINDS = ("bad_mac", "unknown_kid", "future_round", "topic_mismatch")

    def __init__(self, job, layout, sites: dict[str, tuple[str, str, int, list[int]]],
                 bad_per_round: int = 2, window: int = 64, seed: int = 0, keep_frames: bool = True) -> None:
        self.job = job
        self.layout = layout
        self.sites = [Site(name, transport, host, port, nodes, job.job_id)
                      for name, (transport, host, port, nodes) in sites.items()]
        self.bad_per_round = bad_per_round
        self.window = window
        self.rng = random.Random(seed)
        self.compute_s = 0.0
        self.keep_frames = keep_frames
        self.frames: dict[int, dict[int, bytes]] = {}   # round -> node -> frame (for the replay)

    async def run(self, rounds: int, timeout: float = 120.0, stop_after_s: float | None = None) -> int:
        """Train until `rounds` rounds closed (or stop_after_s passed); returns rounds done."""
        from edge import datafile, profile
        from edge.node import EdgeNode
        for s in self.sites:           # sockets first: paho's select() takes no descriptor >= 1024
            await s.start()
        prof = profile.load_profile(self.job.profile_name)
        for s in self.sites:           # each edge holds its data file open, as a Pi does
            s.nodes = [(k, EdgeNode(k, self.job.node_keys[k], self.job.downlink_key, self.job.job_id,
                                    datafile.DataFile(str(self.layout.data_files[k])), prof)) for k in s.nodes]
        t0 = time.monotonic()
        done = 0
        try:
            for rnd in range(rounds):
                await asyncio.gather(*(self._round(s, rnd, timeout) for s in self.sites))
                done = rnd + 1
                if stop_after_s is not None and time.monotonic() - t0 >= stop_after_s:
                    break
            await asyncio.gather(*(s.refresh(done, timeout) for s in self.sites))
        finally:
            for s in self.sites:
                s.close()
        return done

    async def _round(self, site: Site, rnd: int, timeout: float) -> None:
        got = await site.refresh(rnd, timeout)
        if got != rnd:
            raise AssertionError(f"site {site.name}: round {got} open, expected {rnd}")
        site.opened[rnd] = time.monotonic()
        await site.fetch_model(rnd)
        t = time.perf_counter()
        out: list[tuple[int, bytes]] = []
        for k, node in site.nodes:
            link = MemLink(site)
            end = time.monotonic() + timeout
            while node.step(link) != "sent":         # the model of the round was not there yet
                if time.monotonic() >= end:
                    raise AssertionError(f"node {k} could not sync to round {rnd} within {timeout:.0f} s")
                await site.fetch_model(rnd, wait_push=1.0)
            out.append((k, link.frame))
            if self.keep_frames:
                self.frames.setdefault(rnd, {})[k] = link.frame
        self.compute_s += time.perf_counter() - t
        bad = self._bad_frames(site, rnd, out)
        sem = asyncio.Semaphore(self.window)
        acked = site.acked.setdefault(rnd, [])

        async def one(k: int, data: bytes, valid: bool) -> None:
            async with sem:
                ok = await site.send(k, data)
            if valid and ok:
                acked.append(k)

        # The bad frames go mixed into the first half of the good ones, and the second half
        # only after all of those were answered: a bad frame can never arrive after the round
        # (or the job) closed, where it would be refused for that instead of its own fault.
        half = len(out) // 2
        first = [one(k, d, True) for k, d in out[:half]] + [one(k, d, False) for k, d in bad]
        self.rng.shuffle(first)
        await asyncio.gather(*first)
        await asyncio.gather(*(one(k, d, True) for k, d in out[half:]))
        site.finished[rnd] = time.monotonic()

    def _bad_frames(self, site: Site, rnd: int, good: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        """Frames the gateway must refuse, each counted under the reason it must give, with the
        node whose uplink topic (MQTT) carries them: a node of the site, so its shard gets them."""
        out = []
        kinds = [k for k in self.BAD_KINDS if k != "topic_mismatch" or site.transport == "mqtt"]
        for i in range(self.bad_per_round):
            kind = kinds[(rnd * self.bad_per_round + i) % len(kinds)]
            k, data = good[self.rng.randrange(len(good))]
            if kind == "bad_mac":
                data = data[:-1] + bytes([data[-1] ^ 0x01])
            elif kind == "unknown_kid":
                data = update_frame(self.job.job_id, 65000, bytes(32), rnd, self.job.d, 3, self.job.scheme,
                                    np.random.default_rng(rnd))
            elif kind == "future_round":
                data = update_frame(self.job.job_id, k, self.job.node_keys[k], rnd + 2, self.job.d, 3,
                                    self.job.scheme, np.random.default_rng(rnd))
            else:                                    # a node's frame on another node's topic
                others = [j for j, _ in good if j != k]
                if not others:
                    continue
                out.append((others[0], data))
                site.bad[kind] = site.bad.get(kind, 0) + 1
                continue
            out.append((k, data))
            site.bad[kind] = site.bad.get(kind, 0) + 1
        return out

    def bad_sent(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sites:
            for k, v in s.bad.items():
                out[k] = out.get(k, 0) + v
        return out

    def acked(self) -> dict[int, set[int]]:
        out: dict[int, set[int]] = {}
        for s in self.sites:
            for rnd, nodes in s.acked.items():
                out.setdefault(rnd, set()).update(nodes)
        return out
