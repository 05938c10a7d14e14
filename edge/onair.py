# What one message really puts on air over IEEE 802.15.4 + 6LoWPAN: the message the client
# sends is walked exchange by exchange, datagram by datagram, frame by frame. Runs on
# MicroPython and CPython in O(1) memory (closed forms per datagram, runs of equal blocks).
#
# One data frame (IEEE 802.15.4-2006 §5.5.3, §7.2.1; RFC 4944 §5.3; RFC 6282 §3, §4.3):
#   SHR+PHR 6 | FCF 2 SEQ 1 DPAN 2 DADDR 2/8 [SPAN 2] SADDR 2/8 | [aux sec hdr] | [MESH 5+] |
#   [FRAG1 4 | FRAGN 5] | [IPHC 2+ | NHC-UDP 4..7] | data | [MIC] | FCS 2        <= 127 B PSDU
# (the mesh header, RFC 4944 §5.2, rides in every frame of a datagram a mesh-under router sends
# towards a destination beyond its neighbours; the aux header and MIC, §7.6.2, in every secured one)
# acknowledged by an Imm-Ack (FCF 2 SEQ 1 FCS 2 = 5 B PSDU, 11 B on air) after aTurnaroundTime.
#
# A datagram of u UDP payload bytes has compressed headers h = IPHC + NHC-UDP. With P the room
# for them (127 - MAC header - FCS - security - mesh header):
#   h + u <= P                  one frame, no fragment header (RFC 4944 §5.3: fragment only
#                               when the datagram does not fit)
#   otherwise FRAG1             h + c1 data bytes, c1 = floor8(P - 4 - h): the uncompressed
#                               bytes it covers (40 IPv6 + 8 UDP + c1) are a multiple of 8
#             FRAGN ...         floor8(P - 5) bytes each, the last up to P - 5 (offsets are in
#                               8-byte units; the last size is free: contiki-ng sicslowpan.c)
#
# CoAP (RFC 7252 §3) as edge/coap.py sends it: a body of n <= block_size bytes is one
# confirmable request; a larger one is RFC 7959 Block1: ceil(n / block_size) requests, NUM
# 0 carrying Size1, each answered by a piggybacked 2.31 Continue echoing Block1 and the last
# by 2.04 with the gateway's reply text. A GET fetching n bytes is Block2 the other way.
#
# Time per data frame, both ends busy for all of it (the receiver listens through the
# sender's backoff): csma (mean backoff + CCA + rx->tx turnaround) + frame + turnaround +
# Imm-Ack + IFS (SIFS when the MPDU is <= 18 B, aMaxSIFSFrameSize, else LIFS). Not walked:
# retransmissions (first-try delivery), the gateway's processing time, Observe notifications.

from edge.cbor import const

_FRAG1 = const(4)          # RFC 4944 §5.3
_FRAGN = const(5)
_MAX_SIFS_MPDU = const(18)  # aMaxSIFSFrameSize, IEEE 802.15.4-2006 §7.4.1
_OPT_URI_PATH = const(11)  # RFC 7252 §5.10, RFC 7959 §2.1
_OPT_CF = const(12)
_OPT_BLOCK1 = const(27)
_OPT_SIZE1 = const(60)


def uint_len(v):
    """Bytes of a CoAP uint option value (RFC 7252 §3.2: minimal, 0 is empty)."""
    n = 0
    while v:
        n += 1
        v >>= 8
    return n


def _ext(x):
    return 0 if x < 13 else (1 if x < 269 else 2)


def opt_len(delta, length):
    """Bytes of one CoAP option with this delta and value length (RFC 7252 §3.1)."""
    return 1 + _ext(delta) + _ext(length) + length


def nhc_udp_len(src, dst):
    """NHC UDP header bytes with the checksum carried (RFC 6282 §4.3.3)."""
    if src >> 4 == 0xF0B and dst >> 4 == 0xF0B:
        return 4          # both ports 4-bit
    if src >> 8 == 0xF0 or dst >> 8 == 0xF0:
        return 6          # one port 8-bit, the other inline
    return 7              # both inline


def mac_overhead(st):
    """On-air bytes of one data frame besides its fragment header, compressed headers and data
    (PHY, MAC header, security, mesh header, FCS)."""
    a = st["address_bytes"]
    pan = 2 if st["pan_id_compression"] else 4
    return st["phy_overhead_bytes"] + 3 + pan + 2 * a + st["security_bytes"] + st.get("mesh_header_bytes", 0) + 2


def mac_payload(st):
    return st["max_frame_bytes"] + st["phy_overhead_bytes"] - mac_overhead(st)


def compressed_headers(st):
    return st["iphc_bytes"] + nhc_udp_len(st["src_port"], st["dst_port"])


def fragments(st, u):
    """(frames, data bytes in the first, in each middle one, in the last) for u UDP payload
    bytes; one frame means no fragment header."""
    p = mac_payload(st)
    h = compressed_headers(st)
    if h + u <= p:
        return 1, u, 0, 0
    c1 = (p - _FRAG1 - h) & ~7
    r = u - c1
    last = p - _FRAGN
    mid = last & ~7
    if r <= last:
        return 2, c1, 0, r
    k = 1 + (r - last + mid - 1) // mid
    return 1 + k, c1, mid, r - (k - 1) * mid


def frame_sizes(st, u, frags):
    """On-air bytes of the first, each middle and the last frame of a datagram of u UDP payload
    bytes cut as fragments(st, u) = frags says (one frame: (its size, 0, 0))."""
    f, c1, mid, last = frags
    oh = mac_overhead(st)
    h = compressed_headers(st)
    if f == 1:
        return oh + h + u, 0, 0
    return oh + _FRAG1 + h + c1, oh + _FRAGN + mid, oh + _FRAGN + last


class Walk:
    """Totals of one walked message, from the node's side.

    frames_tx / frames_rx: data frames it sends / receives; exchanges: request-reply pairs;
    tx_bytes / rx_bytes: on-air bytes it transmits / receives (its data frames and the link
    ACKs it sends / the ACKs and reply frames it receives); tx_s, rx_s: those bytes' airtime;
    idle_s: listening without a frame on air (backoff, CCA, turnarounds, IFS)."""

    def __init__(self, st, rate, emit=None):
        self.st = st
        self.byte_s = 8.0 / rate
        self.emit = emit
        self.reset()

    def reset(self):
        self.frames_tx = 0
        self.frames_rx = 0
        self.exchanges = 0
        self.udp_tx = 0
        self.tx_bytes = 0
        self.rx_bytes = 0
        self.tx_s = 0.0
        self.rx_s = 0.0
        self.idle_s = 0.0

    def datagram(self, u, sending, times, what):
        """Add `times` datagrams of u UDP payload bytes, sent by the node or to it; `what` names
        them for emit: (message label, first block NUM, blocks, body bytes per block)."""
        st = self.st
        frags = fragments(st, u)
        f = frags[0]
        first, mid, last = frame_sizes(st, u, frags)
        if f == 1:
            onair = first
            idle = self._gaps(first)
        else:
            onair = first + (f - 2) * mid + last
            idle = self._gaps(first) + (f - 2) * self._gaps(mid) + self._gaps(last)
        self._count(u, sending, times, f, onair)
        self.idle_s += times * idle
        if self.emit is not None:  # the host formats it (aggregator/lab/linkquery.py)
            self.emit(self, u, sending, times, what, frags)

    def _count(self, u, sending, times, f, onair):
        # times datagrams of u bytes in f frames, onair bytes each, and the f link-layer acks
        # (apart from datagram: shorter functions load into smaller holes of a board's heap)
        ack = times * f * self.st["ack_bytes"]
        if sending:
            self.frames_tx += times * f
            self.udp_tx += times * u
            self.tx_bytes += times * onair
            self.rx_bytes += ack
        else:
            self.frames_rx += times * f
            self.rx_bytes += times * onair
            self.tx_bytes += ack

    def posts(self, u, num, cnt, n):
        """cnt POSTs from Block1 NUM num (-1: no Block1), each u bytes of header and options and
        n of payload after its marker."""
        self.exchanges += cnt
        self.datagram(u + 1 + n, True, cnt, ("POST" if num < 0 else "POST Block1", num, cnt, n))

    def changed(self, u, num, reply):
        """The server's 2.04 Changed to a POST (to its last block, NUM num; -1: no Block1): u bytes
        of header and options, then the reply payload after its marker, if any."""
        self.datagram(u + (1 + reply if reply else 0), False, 1, ("2.04", num, 1, reply))

    def _gaps(self, size):
        # idle time around one acknowledged data frame of `size` bytes on air
        st = self.st
        mpdu = size - st["phy_overhead_bytes"]
        ifs = st["sifs_seconds"] if mpdu <= _MAX_SIFS_MPDU else st["lifs_seconds"]
        return st["csma_seconds"] + st["turnaround_seconds"] + ifs

    def finish(self):
        rate_s = self.byte_s
        self.tx_s = self.tx_bytes * rate_s
        self.rx_s = self.rx_bytes * rate_s
        return self


def digits(v):
    """Decimal digits of v >= 0 (a job or round number in a Uri-Path or Uri-Query)."""
    n = 1
    while v >= 10:
        v //= 10
        n += 1
    return n


def _up_path(st, job):
    # Uri-Path "cat" / "<job>" / "up" (edge.links.job_path + "up"), then Content-Format 60
    j = st["job_digits"] if job is None else digits(job)
    return opt_len(_OPT_URI_PATH, 3) + opt_len(0, j) + opt_len(0, 2) + opt_len(_OPT_CF - _OPT_URI_PATH, 1)


def szx_of(b):
    """SZX of a block size 2 ** (SZX + 4) (RFC 7959 §2.2; edge/coap.py szx_for checks it)."""
    s = 0
    while (16 << s) < b:
        s += 1
    return s


def block_runs(nb):
    """(first NUM, count) of the nb blocks whose Block option values have the same length:
    NUM 0 (Size1 rides on it), runs up to where NUM << 4 needs another byte, the last alone."""
    num = 0
    while num < nb:
        if num == 0 or num == nb - 1:
            cnt = 1
        else:
            edge = 16
            while edge <= num:
                edge <<= 8
            cnt = (edge if edge < nb - 1 else nb - 1) - num
        yield num, cnt
        num += cnt


def coap_up(w, n, job=None):
    """Walk a confirmable POST of an n-byte body to /cat/<job>/up (Block1 when n > block_size)."""
    st = w.st
    tk = 4 + st["token_bytes"]
    base = tk + _up_path(st, job)
    reply = st["reply_payload_bytes"]
    if n <= st["block_size"]:
        w.posts(base, -1, 1, n)
        w.changed(tk, -1, reply)
    else:
        _block1_up(w, n, tk, base, reply)
    return w.finish()


def _block1_up(w, n, tk, base, reply):
    # RFC 7959 Block1: runs of blocks whose option values have the same length, each block
    # answered by 2.31 Continue, the last by 2.04 (apart from coap_up: shorter functions load
    # into smaller holes of a board's heap)
    bs = w.st["block_size"]
    szx = szx_of(bs)
    nb = (n + bs - 1) // bs
    size1 = opt_len(_OPT_SIZE1 - _OPT_BLOCK1, uint_len(n))  # on block 0, a run of its own
    for num, cnt in block_runs(nb):
        more = num < nb - 1
        v = uint_len((num << 4) | (8 if more else 0) | szx)
        w.posts(base + opt_len(_OPT_BLOCK1 - _OPT_CF, v) + size1, num, cnt, bs if more else n - num * bs)
        size1 = 0
        u = tk + opt_len(_OPT_BLOCK1, v)
        if more:
            w.datagram(u, False, cnt, ("2.31 Continue", num, cnt, 0))
    w.changed(u, num, reply)  # to the last block


def udp_up(w, n):
    """Walk one UDP datagram carrying the n-byte frame (no reply)."""
    w.exchanges += 1
    w.datagram(n, True, 1, ("UDP", -1, 1, n))
    return w.finish()


def walk_up(profile, n, job=None, emit=None, w=None):
    """The node sends an n-byte frame on a walked profile: its Walk (w, reset and refilled,
    when given one for this profile: CAT prices many T per round without new objects)."""
    st = profile["stack"]
    if w is None or w.st is not st:
        w = Walk(st, profile["radio"]["bit_rate"], emit)
    else:
        w.reset()
        w.emit = emit
    if st["transport"] == "coap":
        return coap_up(w, n, job)
    return udp_up(w, n)
