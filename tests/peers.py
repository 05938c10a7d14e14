"""Real network peers for tests, started on free loopback ports and stopped afterwards.

Why: the transports are tested against independent implementations (Mosquitto,
libcoap, aiocoap), not mocks, so that a test passing means interoperating with
what a deployment runs. Everything binds to 127.0.0.1 only.

Helpers (usable without pytest):

* ``MosquittoBroker``: ``/usr/sbin/mosquitto -c <generated conf>``; ``start``,
  ``stop``, ``restart`` (same port), ``kill`` (SIGKILL, a crash), ``pause``/``resume``
  (SIGSTOP/SIGCONT, a hung broker); optional persistence.
* ``LibcoapServer``: Debian libcoap3-bin ``coap-server-notls`` with dynamic resources.
* ``AiocoapServer``: an aiocoap server in a background thread with its own event loop,
  serving resources the caller supplies; ``RecordingResource`` and ``StaticResource``
  are ready-made resources that count handler runs.
* ``UdpProxy``: forwards datagrams between one client and a UDP server and drops or
  duplicates chosen ones, for retransmission and deduplication tests.

Fixtures: ``mosquitto_broker``, ``mosquitto_factory``, ``libcoap_server``,
``aiocoap_server_factory``, ``udp_proxy_factory``.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import aiocoap
import aiocoap.resource
import pytest

MOSQUITTO = "/usr/sbin/mosquitto"
COAP_SERVER = "coap-server-notls"

_START_TIMEOUT = 10.0


# --------------------------------------------------------------------------- ports
def free_port(kind: str = "tcp", host: str = "127.0.0.1") -> int:
    """A port that is free right now on host for "tcp", "udp" or "both".

    Why "both": coap-server listens on UDP and TCP with the same number."""
    if kind not in ("tcp", "udp", "both"):
        raise ValueError(f"kind must be 'tcp', 'udp' or 'both', got {kind!r}")
    for _ in range(100):
        first = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, first) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
            if kind != "both":
                return port
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free {kind} port found on {host}")


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _stop_process(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it does not exit; always reaps the child."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
        proc.terminate()
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


# ----------------------------------------------------------------------- mosquitto
def _check_tcp_port_free(host: str, port: int, what: str) -> None:
    """Fail clearly if another process listens on the port (it would answer our probe)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            s.bind((host, port))
        except OSError as e:
            raise RuntimeError(f"cannot start {what}: {host}:{port} already in use ({e})") from None


def _mqtt_probe(host: str, port: int, timeout: float = 1.0) -> None:
    """MQTT 3.1.1 CONNECT -> CONNACK(accepted) -> DISCONNECT; OSError if not a broker.

    Packet layouts: MQTT 3.1.1 §3.1 (CONNECT), §3.2 (CONNACK), §3.14 (DISCONNECT)."""
    cid = b"peers-probe"
    var = b"\x00\x04MQTT\x04\x02\x00\x0a"  # protocol name, level 4, clean session, keepalive 10
    body = var + len(cid).to_bytes(2, "big") + cid
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(bytes([0x10, len(body)]) + body)
        ack = b""
        while len(ack) < 4:
            chunk = s.recv(4 - len(ack))
            if not chunk:
                raise OSError("connection closed before CONNACK")
            ack += chunk
        if ack != b"\x20\x02\x00\x00":
            raise OSError(f"unexpected CONNACK {ack.hex()}")
        s.sendall(b"\xe0\x00")


class MosquittoBroker:
    """A private Mosquitto broker on 127.0.0.1:<port>; restartable on the same port.

    Why a generated config: Mosquitto 2.x only listens on loopback without a
    config, refuses anonymous clients on explicit listeners unless told, and the
    Debian system broker on :1883 must not be touched."""

    def __init__(self, port: int | None = None, workdir: str | os.PathLike | None = None,
                 persistence: bool = False, extra_conf: Iterable[str] = ()) -> None:
        if not os.access(MOSQUITTO, os.X_OK):
            raise RuntimeError(f"{MOSQUITTO} not found: install Debian package mosquitto "
                               "(scripts/setup.sh)")
        self.host = "127.0.0.1"
        self.port = port or free_port("tcp")
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="mosquitto-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.persistence = persistence
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            f"persistence {'true' if persistence else 'false'}",
        ]
        if persistence:
            lines.append(f"persistence_location {self.workdir}/")  # trailing / is required
        if os.geteuid() == 0:
            # as root Mosquitto would drop to user "mosquitto", who cannot write our
            # temporary directory; stay the invoking user instead
            lines.append(f"user {getpass.getuser()}")
        lines.extend(extra_conf)
        self.conf_path.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> MosquittoBroker:
        """Start the broker and wait until it answers an MQTT CONNECT with CONNACK."""
        if self.running:
            return self
        _check_tcp_port_free(self.host, self.port, "mosquitto")
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf_path)],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        finally:
            log.close()
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode} on port "
                                   f"{self.port}:\n{_tail(self.log_path)}")
            try:
                _mqtt_probe(self.host, self.port)
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"mosquitto did not accept connections on port "
                                       f"{self.port} within {_START_TIMEOUT} s:\n"
                                       f"{_tail(self.log_path)}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Graceful stop (SIGTERM); with persistence the database is saved."""
        _stop_process(self.proc)

    def kill(self) -> None:
        """Crash the broker (SIGKILL): nothing is saved, connections drop."""
        if self.running:
            self.proc.kill()
            self.proc.wait(5)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing answers."""
        if self.running:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Continue a paused broker (SIGCONT)."""
        if self.running:
            self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> MosquittoBroker:
        """Stop and start again on the same port with the same config."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop and remove a temporary work directory this object created."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log(self) -> str:
        return _tail(self.log_path, 200)

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------- libcoap
def coap_ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """Send a CoAP ping (empty CON, RFC 7252 §4.3) and return True on a RST reply."""
    mid = int.from_bytes(os.urandom(2), "big")
    msg = bytes([0x40, 0x00, mid >> 8, mid & 0xFF])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(msg, (host, port))
            data, _ = s.recvfrom(64)
        except OSError:
            return False
    return len(data) >= 4 and (data[0] >> 4) & 3 == 3 and data[2:4] == msg[2:4]


class LibcoapServer:
    """libcoap's example server ``coap-server-notls`` on 127.0.0.1:<port>.

    ``-d N`` lets PUT/POST create up to N dynamic resources that GET then serves
    (Block2 when larger than the requested block). Block mode defaults to ``-L 3``
    (COAP_BLOCK_USE_LIBCOAP | COAP_BLOCK_SINGLE_BODY): with the default ``-L 1`` the
    example server's own per-block handling in libcoap 4.3.1 answers 2.31 without a
    Block1 option or 4.08 to the second Block1 transfer of a session (seen here)."""

    def __init__(self, port: int | None = None, dynamic: int = 32, block_mode: int = 3,
                 extra_args: Iterable[str] = (), workdir: str | os.PathLike | None = None) -> None:
        exe = shutil.which(COAP_SERVER)
        if exe is None:
            raise RuntimeError(f"{COAP_SERVER} not found: install Debian package libcoap3-bin "
                               "(scripts/setup.sh)")
        self.exe = exe
        self.host = "127.0.0.1"
        self.port = port or free_port("both")
        self.args = [exe, "-A", self.host, "-p", str(self.port), "-d", str(dynamic),
                     "-L", str(block_mode), *extra_args]
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="coap-server-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "coap-server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> LibcoapServer:
        """Start and wait until a CoAP ping is answered."""
        if self.running:
            return self
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        finally:
            log.close()
        deadline = time.monotonic() + _START_TIMEOUT
        while not coap_ping(self.host, self.port, 0.2):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{COAP_SERVER} exited with {self.proc.returncode}:\n"
                                   f"{_tail(self.log_path)}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{COAP_SERVER} did not answer a CoAP ping on port "
                                   f"{self.port}:\n{_tail(self.log_path)}")
        return self

    def stop(self) -> None:
        _stop_process(self.proc)

    def restart(self) -> LibcoapServer:
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LibcoapServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------- aiocoap
class RecordingResource(aiocoap.resource.Resource):
    """POST/PUT target that records every (reassembled) body and counts handler runs.

    Why: tests assert exactly-once delivery and byte-exact payloads after Block1,
    retransmission and duplication. ``delay`` (s) makes aiocoap send an empty ACK
    first and then a separate response (its EMPTY_ACK_DELAY is 0.1 s)."""

    def __init__(self, code: aiocoap.numbers.codes.Code = aiocoap.CHANGED,
                 reply: bytes = b"", delay: float = 0.0) -> None:
        super().__init__()
        self.code = code
        self.reply = reply
        self.delay = delay
        self.calls = 0
        self.bodies: list[bytes] = []
        self.content_formats: list[int | None] = []
        self.methods: list[str] = []

    async def _record(self, request: aiocoap.Message) -> aiocoap.Message:
        self.calls += 1
        self.bodies.append(bytes(request.payload))
        cf = request.opt.content_format
        self.content_formats.append(None if cf is None else int(cf))
        self.methods.append(str(request.code))
        if self.delay:
            await asyncio.sleep(self.delay)
        return aiocoap.Message(code=self.code, payload=self.reply)

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        return await self._record(request)

    async def render_put(self, request: aiocoap.Message) -> aiocoap.Message:
        return await self._record(request)


class StaticResource(aiocoap.resource.Resource):
    """GET resource with fixed bytes (aiocoap serves it block-wise when large)."""

    def __init__(self, payload: bytes, content_format: int | None = None,
                 delay: float = 0.0) -> None:
        super().__init__()
        self.payload = payload
        self.content_format = content_format
        self.delay = delay
        self.calls = 0

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        msg = aiocoap.Message(code=aiocoap.CONTENT, payload=self.payload)
        if self.content_format is not None:
            msg.opt.content_format = self.content_format
        return msg


def _path_tuple(path: str | tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(path, tuple):
        return path
    return tuple(p for p in path.split("/") if p)


class AiocoapServer:
    """An aiocoap server context in a background thread with its own event loop.

    Why a thread: tests (and the edge client under test) are synchronous; the
    server must keep answering while the test blocks on a request."""

    def __init__(self, resources: Mapping[str | tuple[str, ...], aiocoap.resource.Resource],
                 port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port("udp")
        self.resources = {_path_tuple(k): v for k, v in resources.items()}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.context: aiocoap.Context | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> AiocoapServer:
        if self._thread is not None:
            return self
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name=f"aiocoap:{self.port}",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError(f"aiocoap server on port {self.port} did not start")
        if self._error is not None:
            self._thread.join(5)
            self._thread = None
            raise RuntimeError(f"aiocoap server on {self.host}:{self.port} failed: "
                               f"{self._error!r}") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        try:
            site = aiocoap.resource.Site()
            for path, res in self.resources.items():
                site.add_resource(path, res)
            self.context = loop.run_until_complete(
                aiocoap.Context.create_server_context(site, bind=(self.host, self.port)))
        except BaseException as e:  # reported to start()
            self._error = e
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.context.shutdown())
            loop.close()

    def call(self, coro: object, timeout: float = 10.0) -> object:
        """Run a coroutine on the server's loop from the test thread."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self._thread is None:
            return
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> AiocoapServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------- UDP proxy
UP = "up"  # client -> server
DOWN = "down"  # server -> client


class UdpProxy:
    """Loopback UDP forwarder between one client and a server that injects faults.

    ``policy(direction, index, data) -> copies`` decides per datagram (index counts
    from 0 per direction): 0 drops it, 1 forwards it, 2 duplicates it. The
    ``drop_up``/``dup_up``/``drop_down``/``dup_down`` index sets build a policy.
    ``log`` records (direction, index, data, copies) for assertions."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1",
                 policy: Callable[[str, int, bytes], int] | None = None,
                 drop_up: Iterable[int] = (), dup_up: Iterable[int] = (),
                 drop_down: Iterable[int] = (), dup_down: Iterable[int] = ()) -> None:
        self.target = (target_host, target_port)
        sets = {UP: (set(drop_up), set(dup_up)), DOWN: (set(drop_down), set(dup_down))}

        def by_index(direction: str, index: int, data: bytes) -> int:
            drop, dup = sets[direction]
            return 0 if index in drop else 2 if index in dup else 1

        self.policy = policy or by_index
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.port = self.front.getsockname()[1]
        self.host = "127.0.0.1"
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        self.client: tuple[str, int] | None = None
        self.log: list[tuple[str, int, bytes, int]] = []
        self._count = {UP: 0, DOWN: 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"udp-proxy:{self.port}",
                                        daemon=True)

    def start(self) -> UdpProxy:
        self._thread.start()
        return self

    def _forward(self, direction: str, data: bytes) -> None:
        index = self._count[direction]
        self._count[direction] += 1
        copies = self.policy(direction, index, data)
        self.log.append((direction, index, data, copies))
        for _ in range(copies):
            if direction == UP:
                self.back.sendto(data, self.target)
            elif self.client is not None:
                self.front.sendto(data, self.client)

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.front, self.back], [], [], 0.05)
            for s in ready:
                try:
                    data, addr = s.recvfrom(65535)
                except OSError:
                    continue
                if s is self.front:
                    self.client = addr
                    self._forward(UP, data)
                elif addr == self.target:
                    self._forward(DOWN, data)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.front.close()
        self.back.close()

    def __enter__(self) -> UdpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------ fixtures
@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    """Start brokers with options (``persistence=True``, ``port=``); all stopped at teardown."""
    brokers: list[MosquittoBroker] = []

    def make(**kw: object) -> MosquittoBroker:
        kw.setdefault("workdir", tmp_path / f"mosquitto{len(brokers)}")
        b = MosquittoBroker(**kw)  # type: ignore[arg-type]
        brokers.append(b)
        return b.start()

    yield make
    for b in brokers:
        b.close()


@pytest.fixture
def mosquitto_broker(mosquitto_factory: Callable[..., MosquittoBroker]) -> MosquittoBroker:
    """A running broker on a free loopback port (``.host``, ``.port``, ``.restart()``)."""
    return mosquitto_factory()


@pytest.fixture
def libcoap_server(tmp_path: Path) -> Iterator[LibcoapServer]:
    """A running ``coap-server-notls`` with dynamic resources on a free loopback port."""
    srv = LibcoapServer(workdir=tmp_path / "coap-server")
    srv.start()
    yield srv
    srv.close()


@pytest.fixture
def aiocoap_server_factory() -> Iterator[Callable[..., AiocoapServer]]:
    """``make({"/path": resource, ...}, port=None)`` -> started AiocoapServer; stopped at teardown."""
    servers: list[AiocoapServer] = []

    def make(resources: Mapping[str | tuple[str, ...], aiocoap.resource.Resource],
             port: int | None = None) -> AiocoapServer:
        srv = AiocoapServer(resources, port=port)
        servers.append(srv)
        return srv.start()

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def udp_proxy_factory() -> Iterator[Callable[..., UdpProxy]]:
    """``make(target_port, **faults)`` -> started UdpProxy; stopped at teardown."""
    proxies: list[UdpProxy] = []

    def make(target_port: int, **kw: object) -> UdpProxy:
        p = UdpProxy(target_port, **kw)  # type: ignore[arg-type]
        proxies.append(p)
        return p.start()

    yield make
    for p in proxies:
        p.stop()
