"""The walked 802.15.4 profiles against independent implementations, byte for byte.

What goes on air for a UDP payload of every size from 1 B to the link's largest is built here
with scapy's own encoders (Dot15d4 MAC header, auxiliary security header and FCS, LoWPANMesh,
LoWPAN_IPHC, NHC UDP, FRAG1/FRAGN headers), cut into fragments by this file's own reading of
RFC 4944 §5.3 (not edge/onair.py's), written to a pcap with the 802.15.4 link type and decoded
by Wireshark's dissectors (tshark): every frame must decode without a malformed-packet mark, be
at most 127 B, and the reassembled datagram must give back the exact UDP payload; frame counts
and on-air bytes must equal the walk's. Thread frames are really secured (AES-CCM* with a
32-bit MIC, `cryptography`'s AESCCM) and Wireshark is given the key: it must decrypt and verify
every one before it can reassemble anything. Then the
CoAP datagrams the real edge client exchanges with the real gateway (aiocoap) are compared with
the walk's, and go through the same framing.

(scapy's `sixlowpan_fragment` ignores IPHC and cuts every fragment to 8-byte multiples, so it is
no reference for fragment sizes: fragments are cut here.)
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

scapy = pytest.importorskip("scapy")
from scapy.layers.dot15d4 import Dot15d4, Dot15d4AuxSecurityHeader, Dot15d4Data, Dot15d4FCS  # noqa: E402
from scapy.layers.inet import UDP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.layers.sixlowpan import (LoWPAN_IPHC, LoWPAN_NHC, LoWPAN_NHC_UDP,  # noqa: E402
                                    LoWPANFragmentationFirst, LoWPANFragmentationSubsequent, LoWPANMesh)
from scapy.packet import Raw  # noqa: E402
from scapy.utils import wrpcap  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESCCM  # noqa: E402

from edge.onair import walk_up  # noqa: E402
from edge.profile import load_profile  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="no tshark (apt install tshark)")

WALKED_802154 = ("ieee802154-6lowpan-udp", "ieee802154-6lowpan-coap", "ieee802154-6lowpan-coap-ext",
                 "ieee802154-thread-coap", "ieee802154-thread-coap-mesh")
LINKTYPE_IEEE802_15_4_WITHFCS = 195
PAN = 0xABCD
SHORT = (0x0002, 0x0001)                              # node, gateway
EXTENDED = (0x0212_3456_789A_BCDE, 0x0211_2233_4455_6677)
# Thread: the mesh-local prefix is 6LoWPAN context 0; a mesh-under router's frames go to its
# parent router (MAC destination) and name the border router as the mesh destination
MESH_LOCAL = "fd00:db8::"
PARENT = 0x0400
KEY = bytes(range(16))                                # the MAC key Wireshark is given
KEY_INDEX = 1
THREAD_OPTS = ("-o", f'uat:ieee802154_keys:"{KEY.hex()}","{KEY_INDEX}","No hash"',
               "-o", f'uat:802154_addresses:"0x{SHORT[0]:04x}","0x{PAN:04x}",{EXTENDED[0]:016x}',
               "-o", f"6lowpan.context0:{MESH_LOCAL}/64")


def _iid(addr: int, nbytes: int, prefix: str = "fe80::") -> str:
    """Link-local (or, for Thread, mesh-local RLOC) address whose IID comes from the MAC or mesh
    header address (RFC 6282 §3.2.2)."""
    if nbytes == 2:
        return f"{prefix}ff:fe00:{addr:x}"
    iid = addr ^ (1 << 57)                              # EUI-64 with the U/L bit inverted
    groups = [(iid >> s) & 0xFFFF for s in (48, 32, 16, 0)]
    return "fe80::" + ":".join(f"{g:x}" for g in groups)


def _mac(st: dict, seq: int, payload: bytes) -> bytes:
    """One data frame (PSDU with FCS); with security, Thread's: level 5 (ENC-MIC-32), key id mode
    1, the payload encrypted and a 4 B MIC appended by AES-CCM* (IEEE 802.15.4-2006 §7.6.3: nonce
    = the sender's extended address, frame counter, security level; the MAC header authenticated)."""
    long_ = st["address_bytes"] == 8
    src, dst = EXTENDED if long_ else SHORT
    if st.get("mesh_header_bytes"):
        dst = PARENT
    mode = 3 if long_ else 2
    fcf = dict(fcf_frametype=1, fcf_panidcompress=int(st["pan_id_compression"]), fcf_destaddrmode=mode,
               fcf_srcaddrmode=mode, fcf_ackreq=1, seqnum=seq & 0xFF)
    data = dict(dest_panid=PAN, dest_addr=dst, src_addr=src)
    if st["security_bytes"]:
        fcf.update(fcf_security=1, fcf_framever=1)
        data["aux_sec_header"] = Dot15d4AuxSecurityHeader(sec_sc_seclevel=5, sec_sc_keyidmode=1,
                                                          sec_framecounter=seq, sec_keyid_keyindex=KEY_INDEX)
        header = bytes(Dot15d4(**fcf) / Dot15d4Data(**data))
        nonce = EXTENDED[0].to_bytes(8, "big") + seq.to_bytes(4, "big") + bytes([5])
        payload = AESCCM(KEY, tag_length=4).encrypt(nonce, payload, header)
    return bytes(Dot15d4FCS(**fcf) / Dot15d4Data(**data) / Raw(payload))


def _mesh(st: dict) -> bytes:
    """The mesh header a mesh-under router puts in every frame: node -> border router."""
    if not st.get("mesh_header_bytes"):
        return b""
    return bytes(LoWPANMesh(v=1, f=1, hopsLeft=4, src=SHORT[0], dst=SHORT[1]))


def _compressed_headers(st: dict, payload: bytes) -> bytes:
    """IPHC (TF elided, NHC, hop limit 64, link-local addresses from the MAC) + NHC UDP with the
    real checksum, as scapy encodes them."""
    n = st["address_bytes"]
    src, dst = EXTENDED if n == 8 else SHORT
    sport, dport = st["src_port"], st["dst_port"]
    thread = bool(st["security_bytes"])                 # mesh-local RLOC addresses from context 0
    pre = MESH_LOCAL if thread else "fe80::"
    ip = IPv6(src=_iid(src, n, pre), dst=_iid(dst, n, pre), hlim=64) / UDP(sport=sport, dport=dport) / Raw(payload)
    csum = IPv6(bytes(ip))[UDP].chksum
    if sport >> 4 == 0xF0B and dport >> 4 == 0xF0B:
        p = 3
    elif sport >> 8 == 0xF0:
        p = 2
    elif dport >> 8 == 0xF0:
        p = 1
    else:
        p = 0
    iphc = LoWPAN_IPHC(tf=3, nh=1, hlim=2, cid=0, sac=int(thread), sam=3, m=0, dac=int(thread), dam=3)
    nhc = LoWPAN_NHC(exts=[LoWPAN_NHC_UDP(P=p, C=0, udpSourcePort=sport, udpDestPort=dport, udpChecksum=csum)])
    return bytes(iphc)[:2] + bytes(nhc)


def frames_for(st: dict, payload: bytes, tag: int, seq: int) -> list[bytes]:
    """The 802.15.4 frames (PSDU with FCS) of one datagram: unfragmented when it fits, else FRAG1
    with the compressed headers and as much data as keeps the covered uncompressed bytes (40 + 8 +
    data) a multiple of 8, then FRAGNs of 8-byte multiples, the last taking what remains."""
    mesh = _mesh(st)
    mac_room = 127 - len(_mac(st, 0, b"")) - len(mesh)
    hdr = _compressed_headers(st, payload)
    if len(hdr) + len(payload) <= mac_room:
        return [_mac(st, seq, mesh + hdr + payload)]
    size = 48 + len(payload)
    first = (mac_room - 4 - len(hdr)) // 8 * 8
    frag1 = bytes(LoWPANFragmentationFirst(datagramSize=size, datagramTag=tag))
    out = [_mac(st, seq, mesh + frag1 + hdr + payload[:first])]
    pos = first
    while pos < len(payload):
        rest = len(payload) - pos
        take = rest if rest <= mac_room - 5 else (mac_room - 5) // 8 * 8
        frag = LoWPANFragmentationSubsequent(datagramSize=size, datagramTag=tag, datagramOffset=(48 + pos) // 8)
        out.append(_mac(st, seq + len(out), mesh + bytes(frag) + payload[pos:pos + take]))
        pos += take
    return out


def _ack(seq: int) -> bytes:
    return bytes(Dot15d4FCS(fcf_frametype=2, seqnum=seq & 0xFF))


def _tshark(pcap: Path, *args: str) -> list[list[str]]:
    out = subprocess.run(["tshark", "-r", str(pcap), *args], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return [line.split("|") for line in out.stdout.splitlines()]


def tshark(pcap: Path, ports: tuple[int, ...] = (), secured: bool = False) -> list[list[str]]:
    """Per frame: length, frame type, FCS ok, reassembled UDP payload (hex); and no frame may
    be malformed or carry an error-level expert note (bad FCS, reassembly error). `ports`: UDP
    ports whose payload is shown as plain data (random bytes are no protocol's messages);
    `secured`: Thread frames, decrypted with the test's key."""
    opts: list[str] = list(THREAD_OPTS) if secured else []
    for p in ports:
        opts += ["-d", f"udp.port=={p},data"]
    bad = _tshark(pcap, *opts, "-Y", '_ws.malformed or _ws.expert.severity == "Error"')
    assert bad == [], bad[:3]
    return _tshark(pcap, *opts, "-T", "fields", "-E", "separator=|", "-e", "frame.len", "-e", "wpan.frame_type",
                   "-e", "wpan.fcs_ok", "-e", "udp.payload")


@pytest.mark.parametrize("name", WALKED_802154)
def test_every_datagram_size_frames_as_wireshark_reads_it(tmp_path: Path, name: str) -> None:
    prof = load_profile(name)
    st = prof["stack"]
    rng = random.Random(7)
    top = 1280 - 48                                      # the IPv6 minimum MTU less IPv6 and UDP headers
    packets, expect = [], []
    seq = 0
    for u in range(1, top + 1):
        payload = rng.randbytes(u)
        frames = frames_for(st, payload, tag=u, seq=seq)
        walked = walk_up(dict(prof, stack=dict(st, transport="udp")), u)
        assert walked.frames_tx == len(frames), (u, walked.frames_tx, len(frames))
        assert walked.tx_bytes == sum(6 + len(f) for f in frames), u          # SHR+PHR 6 B before each PSDU
        assert walked.rx_bytes == len(frames) * (6 + len(_ack(0))) == len(frames) * st["ack_bytes"], u
        for f in frames:
            assert len(f) <= 127, (u, len(f))
            packets.append(f)
            packets.append(_ack(seq))
            seq += 1
        expect.append(payload)
    pcap = tmp_path / f"{name}.pcap"
    wrpcap(str(pcap), [Raw(p) for p in packets], linktype=LINKTYPE_IEEE802_15_4_WITHFCS)
    rows = tshark(pcap, (st["src_port"], st["dst_port"]), secured=bool(st["security_bytes"]))
    assert len(rows) == len(packets)
    assert [int(r[0]) for r in rows] == [len(p) for p in packets]
    assert all(r[2] in ("1", "True") for r in rows), [r for r in rows if r[2] not in ("1", "True")][:3]
    assert {r[1] for r in rows[1::2]} == {"0x0002"} or {int(r[1], 0) for r in rows[1::2]} == {2}  # Imm-Acks
    got = [bytes.fromhex(r[3].replace(":", "")) for r in rows if r[3]]
    assert got == expect                                 # each datagram reassembled, byte for byte


# ------------------------------------------------------------------ the client's own datagrams

class _Tap:
    """The edge client's socket, recording every datagram it sends and receives."""

    def __init__(self, sock, log: list) -> None:
        self.sock, self.log = sock, log

    def send(self, data):
        self.log.append((True, bytes(data)))
        return self.sock.send(data)

    def recv(self, n):
        data = self.sock.recv(n)
        self.log.append((False, bytes(data)))
        return data

    def __getattr__(self, name):
        return getattr(self.sock, name)


def _interleave(runs: list[tuple[bool, int, int]]) -> list[tuple[bool, int]]:
    """The walk prices a run of equal exchanges as `times` requests then `times` replies; on
    the wire they alternate."""
    out: list[tuple[bool, int]] = []
    i = 0
    while i < len(runs):
        s, u, t = runs[i]
        if i + 1 < len(runs) and s and not runs[i + 1][0] and runs[i + 1][2] == t:
            out += [(True, u), (False, runs[i + 1][1])] * t
            i += 2
        else:
            out += [(s, u)] * t
            i += 1
    return out


def _walked(fn, *args) -> list[tuple[bool, int]]:
    """(sent by the node?, UDP payload bytes) of every datagram a walk prices, in wire order."""
    runs: list[tuple[bool, int, int]] = []
    fn(*args, lambda w, u, sending, times, what, frags: runs.append((sending, u, times)))
    return _interleave(runs)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """A real gateway (aiocoap) serving a small job on loopback, and a CoAP edge client to it."""
    import e2e
    from aggregator.gateway.config import load_job
    from aggregator.gateway.service import Endpoints
    from aggregator.ops.demo import ServiceThread, free_udp_port
    from edge.coap import CoapClient

    layout = e2e.make_job(tmp_path_factory.mktemp("onair") / "job", nodes=1, rounds=3, quorum=1.0)
    job = load_job(layout.job_path)
    port = free_udp_port()
    svc = ServiceThread(job, Endpoints(coap=("127.0.0.1", port)))
    svc.start()
    client = CoapClient("127.0.0.1", port, ack_timeout=1.0, block_size=64)
    log: list = []
    client._sock = _Tap(client._sock, log)
    try:
        yield layout, job, client, log
    finally:
        client.close()
        svc.stop()


@pytest.mark.e2e
@pytest.mark.parametrize("n", [1, 40, 64, 65, 128, 200, 500, 1000, 1025, 1100, 4000])
def test_posts_are_the_exchanges_the_walk_prices(gateway, n: int) -> None:
    """Bodies of n bytes POSTed by edge/coap.py to the real gateway: every request and every
    2.31 Continue has the size the walk gives (Block1 NUM >= 16 takes a 2-byte option value
    from 1,025 B on); the gateway refuses these bodies (they are no frames), so the last reply
    is its refusal, not the 2.04 'accepted' the walk prices, and is compared by structure."""
    _, job, client, log = gateway
    prof = load_profile("ieee802154-6lowpan-coap")
    log.clear()
    code, _ = client.post(f"/cat/{job.job_id}/up", bytes(n))
    assert code >> 5 in (2, 4)
    seen = [(sending, len(b)) for sending, b in log]
    want = _walked(lambda p, m, e: walk_up(p, m, job.job_id, e), prof, n)
    assert seen[:-1] == want[:-1]
    assert seen[-1][0] is False and want[-1][0] is False


def _payload(msg: bytes) -> bytes:
    """The payload of a CoAP message (after the 0xFF marker; RFC 7252 §3), b"" without one."""
    tkl = msg[0] & 0x0F
    pos = 4 + tkl
    while pos < len(msg) and msg[pos] != 0xFF:
        head = msg[pos]
        pos += 1
        for nib in (head >> 4, head & 0x0F):
            pos += {13: 1, 14: 2}.get(nib, 0)
        ln = head & 0x0F
        if ln == 13:
            ln = msg[pos - 1] + 13
        elif ln == 14:
            ln = (msg[pos - 2] << 8 | msg[pos - 1]) + 269
        pos += ln
    return msg[pos + 1:] if pos < len(msg) else b""


@pytest.mark.e2e
def test_a_round_is_priced_to_the_byte(gateway, tmp_path: Path) -> None:
    """A real node's round through the real gateway: the config and snapshot GETs (Block2) and
    the update's POST (Block1) have the sizes the downlink and uplink walks give, the update is
    answered 2.04 'accepted', and the datagrams go on air as Wireshark decodes them (CoAP
    dissected, nothing malformed, each reassembled byte for byte)."""
    import time
    import tomllib

    from edge import datafile
    from edge.downwalk import coap_down
    from edge.links import CoapLink
    from edge.node import EdgeNode
    from edge.onair import Walk

    layout, job, client, log = gateway
    prof = load_profile("ieee802154-6lowpan-coap")
    c = tomllib.loads(layout.node_configs[0].read_text())
    node = EdgeNode(0, bytes.fromhex(c["key"]), bytes.fromhex(c["downlink_key"]), c["job"],
                    datafile.DataFile(c["data"]), prof)
    frames: list[bytes] = []
    node.record = lambda rnd, frame: frames.append(bytes(frame))
    log.clear()
    end = time.monotonic() + 30
    while node.step(CoapLink(client, job.job_id)) != "sent":
        assert time.monotonic() < end, "the node sent nothing within 30 s"
        time.sleep(0.01)
    post = next(i for i, (s, b) in enumerate(log) if s and b[1] == 0x02)
    gets, exchange = log[:post], log[post:]
    # the GETs: split per resource by the request's last Uri-Path segment
    jl = len(str(job.job_id))
    for name in (b"config", b"model"):                    # a first round syncs by snapshot
        idx = [i for i, (s, b) in enumerate(gets) if s and name in b]
        assert idx, f"the node never fetched {name!r}"
        part = gets[idx[0]:idx[-1] + 2]
        body = sum(len(_payload(b)) for s, b in part if not s)
        w = Walk(prof["stack"], prof["radio"]["bit_rate"])
        runs: list[tuple[bool, int, int]] = []
        w.emit = lambda w_, u, sending, times, what, frags: runs.append((sending, u, times))
        coap_down(w, body, (3, jl, len(name)), ())
        assert [(s, len(b)) for s, b in part] == _interleave(runs), name
    assert frames, "the node recorded its update"
    assert [(s, len(b)) for s, b in exchange] == _walked(
        lambda p, m, e: walk_up(p, m, job.job_id, e), prof, len(frames[-1]))
    assert exchange[-1][1].endswith(b"\xffaccepted")
    packets, seq = [], 0
    for _, data in log:
        for f in frames_for(prof["stack"], data, tag=seq, seq=seq):
            packets.append(f)
            seq += 1
    pcap = tmp_path / "round.pcap"
    wrpcap(str(pcap), [Raw(p) for p in packets], linktype=LINKTYPE_IEEE802_15_4_WITHFCS)
    rows = tshark(pcap)                                   # CoAP dissected: no decode-as
    assert [bytes.fromhex(r[3].replace(":", "")) for r in rows if r[3]] == [d for _, d in log]


class _Relay:
    """A UDP relay on loopback between a client and the gateway, logging every datagram's size
    (aiocoap owns its socket: the relay is where its datagrams can be seen)."""

    def __init__(self, server_port: int) -> None:
        import socket
        import threading
        self.log: list[tuple[bool, int]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.server = ("127.0.0.1", server_port)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        client = None
        while not self.stop.is_set():
            try:
                data, addr = self.sock.recvfrom(4096)
            except OSError:
                continue
            if addr == self.server:
                self.log.append((False, len(data)))
                self.sock.sendto(data, client)
            else:
                client = addr
                self.log.append((True, len(data)))
                self.sock.sendto(data, self.server)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.mark.e2e
@pytest.mark.parametrize(("n", "name"), [(40, "ieee802154-6lowpan-coap"), (200, "ieee802154-6lowpan-coap"),
                                         (1000, "ieee802154-6lowpan-coap"), (1000, "ieee802154-6lowpan-coap-b256"),
                                         (3000, "ieee802154-thread-coap-b1024")])
def test_the_pi_client_makes_the_walks_exchanges_at_the_profiles_block_size(gateway, n: int, name: str) -> None:
    """cat-edge on a Pi (aiocoap) asks for the profile's blocks (64 B, or a variant's) and 4 B
    tokens: the same requests and replies as the walk prices, byte for byte (aiocoap's own tokens
    are 1-3 B)."""
    from edge.pi import AiocoapLink
    _, job, client, _ = gateway
    prof = load_profile(name)
    relay = _Relay(client._addr[1])
    link = AiocoapLink("127.0.0.1", relay.port, job.job_id, block_size=prof["stack"]["block_size"],
                       token_bytes=prof["stack"]["token_bytes"])
    try:
        link.send_update(bytes(n))
    finally:
        link.close()
        relay.close()
    want = _walked(lambda p, m, e: walk_up(p, m, job.job_id, e), prof, n)
    seen = relay.log
    assert [s for s, _ in seen] == [s for s, _ in want]
    assert want[:-1] == seen[:-1]                        # the last: the gateway's refusal, not 'accepted'
    assert seen[-1][0] is False


def cbor_body(rng: random.Random, n: int) -> bytes:
    """n bytes of well-formed CBOR (a byte string of random bytes, or [that, 0] where no head
    length gives exactly n): the POST says Content-Format 60, so Wireshark reassembles the Block1
    transfer and dissects it as CBOR (RFC 8949 §3: head 1, 2, 3 or 5 B)."""
    for size, lo in ((0, 0), (1, 24), (2, 256), (4, 65536)):   # length in the head, or 1/2/4 B after it
        k = n - 1 - size
        if lo <= k < (24 if size == 0 else 256 ** size):
            head = bytes([0x40 | k]) if size == 0 else bytes([0x57 + size.bit_length()]) + k.to_bytes(size, "big")
            return head + rng.randbytes(k)
    return b"\x82" + cbor_body(rng, n - 2) + b"\x00"


COAP_802154 = ("ieee802154-6lowpan-coap", "ieee802154-6lowpan-coap-ext", "ieee802154-thread-coap",
               "ieee802154-thread-coap-mesh")


@pytest.mark.e2e
@pytest.mark.parametrize("block", [16, 32, 128, 256, 512, 1024])
def test_block_size_variants_are_what_the_client_puts_on_air(gateway, tmp_path: Path, block: int) -> None:
    """The shipped block-size variants (`<profile>-b<B>`, edge/variant.py) against the real client
    at that block size: bodies at the sizes where the Block1 exchanges change (one block, one
    more byte, a second block's first byte, NUM 16's 2-byte option) and a random sample. Every
    datagram but the gateway's last reply (a refusal: these bodies are no frames) has the size
    the variant's walk gives; then, on each 802.15.4 CoAP stack, each real datagram is cut into
    frames by scapy and must be the walk's frames, byte for byte on air, and Wireshark must
    decode them all (CoAP dissected, Thread decrypted) and reassemble every datagram exactly.
    (Each datagram size 1..1232 B is framed on every stack by the test above; what a block size
    changes is which datagrams a message makes, so the variants are checked where that changes
    plus a sample, not at every size to 65,536 B.)"""
    from edge.coap import CoapClient
    from edge.onair import frame_sizes

    _, job, base_client, _ = gateway
    rng = random.Random(block)
    sizes = sorted({block - 1, block, block + 1, 2 * block + 1, 16 * block, 16 * block + 1,
                    *(rng.randint(1, 20 * block) for _ in range(3))})
    client = CoapClient("127.0.0.1", base_client._addr[1], ack_timeout=1.0, block_size=block)
    log: list = []
    client._sock = _Tap(client._sock, log)
    sent: list[list[tuple[bool, bytes]]] = []
    try:
        for n in sizes:
            log.clear()
            body = cbor_body(rng, n)
            assert len(body) == n
            code, _ = client.post(f"/cat/{job.job_id}/up", body)
            assert code >> 5 in (2, 4)
            sent.append(list(log))
    finally:
        client.close()
    for name in COAP_802154:
        prof = load_profile(f"{name}-b{block}")
        assert prof["name"] == f"{name}-b{block}" and prof["stack"]["block_size"] == block
        st = prof["stack"]
        packets, datagrams, seq = [], [], 0
        for n, exchange in zip(sizes, sent):
            runs: list[tuple[bool, int, int]] = []
            by_size: dict[tuple[bool, int], tuple] = {}   # the walk's fragments of each datagram size

            def emit(w, u, s, times, what, frags):
                runs.append((s, u, times))
                by_size[(s, u)] = frags

            walk_up(prof, n, job.job_id, emit)
            assert [(s, len(b)) for s, b in exchange][:-1] == _interleave(runs)[:-1], (name, n)
            for sending, data in exchange[:-1]:
                frames = frames_for(st, data, tag=seq, seq=seq)
                frags = by_size[(sending, len(data))]
                first, mid, last = frame_sizes(st, len(data), frags)
                expect = [first] if frags[0] == 1 else [first] + [mid] * (frags[0] - 2) + [last]
                assert [6 + len(f) for f in frames] == expect, (name, n, len(data))
                for f in frames:
                    packets += [f, _ack(seq)]
                    seq += 1
                datagrams.append(data)
        pcap = tmp_path / f"{name}-b{block}.pcap"
        wrpcap(str(pcap), [Raw(p) for p in packets], linktype=LINKTYPE_IEEE802_15_4_WITHFCS)
        rows = tshark(pcap, secured=bool(st["security_bytes"]))   # CoAP dissected: no decode-as
        assert [int(r[0]) for r in rows] == [len(p) for p in packets]
        assert [bytes.fromhex(r[3].replace(":", "")) for r in rows if r[3]] == datagrams, name
