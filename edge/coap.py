"""Small CoAP client (RFC 7252) with block-wise transfer (RFC 7959).

Runs unchanged on MicroPython (1.25+) and CPython: it needs only ``socket``
(UDP: getaddrinfo, connect, settimeout, send, recv), ``os.urandom`` (or
``random.getrandbits``) for message ids and tokens, and a millisecond clock.

What it does, with the RFC sections it follows:

* confirmable requests with the retransmission rule of RFC 7252 §4.2: the first
  timeout is drawn from [ACK_TIMEOUT, ACK_TIMEOUT * ACK_RANDOM_FACTOR] and doubles
  on each of at most MAX_RETRANSMIT retransmissions (defaults from §4.8);
* the ACK is matched by message id (§4.2), the response by token (§5.3.2);
  piggy-backed (§5.2.1) and separate responses (§5.2.2) are both handled, a
  confirmable separate response is acknowledged, and so is each duplicate copy of
  it (§4.5); stale or duplicated ACKs/responses of earlier exchanges are ignored;
* Block1 (RFC 7959 §2.5) when the request payload is larger than one block, with
  2.31 Continue, the server's preferred (smaller) block size (§2.3) and a restart
  at the size a 4.13 response proposes (§2.9.3); Size1 on the first block (§4);
* Block2 (RFC 7959 §2.4) to fetch a response larger than one block, with the
  desired block size announced in the first request and an ETag consistency
  check across blocks (RFC 7252 §5.10.6);
* Uri-Path / Uri-Query options from a path string (RFC 7252 §6.4 steps 8-9) and
  Content-Format (§5.10.3; 60 = application/cbor, RFC 8949 §9.5 / RFC 7049 §7.4).

Outgoing messages are composed in one preallocated ``bytearray``. The socket is
connected to the server: the kernel drops datagrams from other endpoints (RFC 7252
§5.3.2 wants the response from the request's destination), and ``recv`` allocates
no sender address and tuple per datagram, as ``recvfrom`` does. Counters
(``datagrams_sent``, ``bytes_sent``, ``retransmissions``, ``datagrams_received``,
``bytes_received``, ``exchanges``) let the edge report what the radio carried.
"""

import socket
from array import array

from edge.cbor import errmsg

try:
    from os import urandom
except ImportError:  # ports without os.urandom: random.getrandbits (see _rand)
    urandom = None

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

try:
    from time import ticks_ms, ticks_diff  # MicroPython
except ImportError:
    from time import monotonic

    def ticks_ms():
        return int(monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b


# Integer constants are private `_NAME = const(v)`: MicroPython folds them into the bytecode
# and keeps no module-dict entry (RAM on a board); CPython gets the public names at the end.

# Message types, RFC 7252 §3
_CON = const(0)
_NON = const(1)
_ACK = const(2)
_RST = const(3)

# Method codes, RFC 7252 §12.1.1
_GET = const(1)
_POST = const(2)
_PUT = const(3)
_DELETE = const(4)

# Response codes (class << 5 | detail), RFC 7252 §12.1.2 and RFC 7959 §2.9
_CREATED = const(0x41)  # 2.01
_DELETED = const(0x42)  # 2.02
_VALID = const(0x43)  # 2.03
_CHANGED = const(0x44)  # 2.04
_CONTENT = const(0x45)  # 2.05
_CONTINUE = const(0x5F)  # 2.31
_REQUEST_ENTITY_INCOMPLETE = const(0x88)  # 4.08
_REQUEST_ENTITY_TOO_LARGE = const(0x8D)  # 4.13

# Option numbers, RFC 7252 §12.2, RFC 7959 §6
_OPT_ETAG = const(4)
_OPT_URI_PATH = const(11)
_OPT_CONTENT_FORMAT = const(12)
_OPT_URI_QUERY = const(15)
_OPT_BLOCK2 = const(23)
_OPT_BLOCK1 = const(27)
_OPT_SIZE2 = const(28)
_OPT_SIZE1 = const(60)

# Where the last parsed message's fields are in CoapClient._r
_R_TYPE = const(0)
_R_CODE = const(1)
_R_MID = const(2)
_R_TKL = const(3)
_R_PAY = const(4)
_R_BLOCK1 = const(5)
_R_BLOCK2 = const(6)
_R_CRIT = const(7)

# Content-Format registry, RFC 7252 §12.3; application/cbor = 60 (RFC 7049 §7.4)
_CF_CBOR = const(60)

# Transmission parameters, RFC 7252 §4.8
ACK_TIMEOUT = 2.0
ACK_RANDOM_FACTOR = 1.5
_MAX_RETRANSMIT = const(4)

# RFC 7252 §4.6: without knowledge of the path MTU, messages should fit 1152 bytes;
# 1280 (the IPv6 minimum MTU) bounds what we accept in one datagram by default.
# recv(n) allocates n bytes (then a copy of what arrived) for every datagram: on a
# board that is a transient contiguous block per block-wise step, so edge/startup.py asks
# for block_size + RX_HEADROOM instead (a server honouring our Block2 size never sends more).
_RX_SIZE = const(1280)
# header, token and options of a response: 14 bytes measured (64-byte blocks, the gateway); 47
# leaves room for an 8-byte token, an ETag, Block2, Size2, Content-Format and Max-Age. The
# receive buffer of a 64-byte block is then 112 bytes, 7 of a board's 16-byte GC blocks
RX_HEADROOM = 47

# Header room in the send buffer beyond the block payload: 4 header + 8 token +
# Content-Format (3) + Block1/Block2 (4 each) + Size1 (5) + marker (1), rounded up;
# Uri-Path/Uri-Query bytes are added per request.
_HDR_ROOM = const(48)


class CoapError(Exception):
    """A CoAP exchange failed (bad reply, reset, protocol violation)."""


class CoapTimeout(CoapError):
    """No acknowledgement or response arrived within the retransmission window."""


def code_str(code):
    """Format a CoAP code byte as "c.dd" (RFC 7252 §3), e.g. 0x44 -> "2.04"."""
    return "%d.%02d" % (code >> 5, code & 0x1F)


def szx_for(block_size):
    """SZX for a block size 2**(SZX+4), 16..1024 bytes (RFC 7959 §2.2)."""
    szx = 0
    while szx < 7:
        if (16 << szx) == block_size:
            return szx
        szx += 1
    raise ValueError(errmsg(98, (block_size,)))


def _uint_len(v):
    # minimal big-endian length of a uint option value (RFC 7252 §3.2)
    n = 0
    while v:
        n += 1
        v >>= 8
    return n


def _opt_head(buf, pos, delta, length):
    # Option header with extended delta/length, RFC 7252 §3.1
    if delta < 13:
        dn = delta
    elif delta < 269:
        dn = 13
    else:
        dn = 14
    if length < 13:
        ln = length
    elif length < 269:
        ln = 13
    else:
        ln = 14
    buf[pos] = (dn << 4) | ln
    pos += 1
    if dn == 13:
        buf[pos] = delta - 13
        pos += 1
    elif dn == 14:
        v = delta - 269
        buf[pos] = v >> 8
        buf[pos + 1] = v & 0xFF
        pos += 2
    if ln == 13:
        buf[pos] = length - 13
        pos += 1
    elif ln == 14:
        v = length - 269
        buf[pos] = v >> 8
        buf[pos + 1] = v & 0xFF
        pos += 2
    return pos


def _put_uint_opt(buf, pos, delta, value):
    n = _uint_len(value)
    pos = _opt_head(buf, pos, delta, n)
    while n:
        n -= 1
        buf[pos] = (value >> (8 * n)) & 0xFF
        pos += 1
    return pos


def _uint(data, pos, n):
    v = 0
    end = pos + n
    while pos < end:
        v = (v << 8) | data[pos]
        pos += 1
    return v


def _split_path(path):
    """Split "/a/b?x=1&y" into Uri-Path and Uri-Query segments (UTF-8 bytes)."""
    if not isinstance(path, str):
        raise ValueError(errmsg(99, (path,)))
    query = ""
    q = path.find("?")
    if q >= 0:
        query = path[q + 1:]
        path = path[:q]
    segs = []
    for s in path.split("/"):
        if s:
            b = s.encode()
            if len(b) > 255:  # Uri-Path length 0-255, RFC 7252 §5.10
                raise ValueError(errmsg(100, (s[:20],)))
            segs.append(b)
    qs = []
    if query:
        for s in query.split("&"):
            if s:
                b = s.encode()
                if len(b) > 255:
                    raise ValueError(errmsg(101))
                qs.append(b)
    return segs, qs


def _opts_len(segs):
    n = 0
    for s in segs:
        n += len(s) + 3  # header up to 1 + 2 extended length bytes
    return n


class CoapClient:
    """Confirmable CoAP client for one server endpoint.

    CoapClient(host, port, ack_timeout=2.0, max_retransmit=4, block_size=64, rx_size=1280)
    .post(path, payload, content_format=60) -> (code, payload)
    .put(path, payload, content_format=None) -> (code, payload)
    .get(path) -> (code, payload)
    .close()
    """

    def __init__(self, host, port=5683, ack_timeout=ACK_TIMEOUT, max_retransmit=_MAX_RETRANSMIT,
                 block_size=64, random_factor=ACK_RANDOM_FACTOR, response_timeout=None,
                 max_body=65536, token_len=4, rx_size=_RX_SIZE):
        if ack_timeout <= 0:
            raise ValueError(errmsg(102, (ack_timeout,)))
        if max_retransmit < 0:
            raise ValueError(errmsg(103, (max_retransmit,)))
        if random_factor < 1.0:
            raise ValueError(errmsg(104, (random_factor,)))
        if token_len < 1 or token_len > 8:  # TKL 0-8, RFC 7252 §3
            raise ValueError(errmsg(105, (token_len,)))
        if rx_size < 32:
            raise ValueError(errmsg(106, (rx_size,)))
        self.szx = szx_for(block_size)
        self.block_size = block_size
        self.ack_timeout = ack_timeout
        self.max_retransmit = max_retransmit
        self.random_factor = random_factor
        if response_timeout is None:
            # MAX_TRANSMIT_WAIT = ACK_TIMEOUT * (2**(MAX_RETRANSMIT+1) - 1) * ACK_RANDOM_FACTOR
            # (RFC 7252 §4.8.2): how long to wait for a separate response after an empty ACK.
            response_timeout = ack_timeout * ((2 << max_retransmit) - 1) * random_factor
        self.response_timeout = response_timeout
        self.max_body = max_body
        self.token_len = token_len
        self.rx_size = rx_size
        ai = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)
        if not ai:
            raise CoapError("cannot resolve %r" % (host,))
        ai = ai[0]
        self._addr = ai[-1]
        self._sock = socket.socket(ai[0], socket.SOCK_DGRAM)
        self._sock.connect(self._addr)
        self._buf = bytearray(_HDR_ROOM + block_size + 64)
        self._mv = memoryview(self._buf)
        self._empty = bytearray(4)  # empty ACK/RST, RFC 7252 §4.1
        self._token = bytearray(token_len)
        self._rx = None  # the response request() hands to _finish
        r = self._rand(2)
        self._mid = (r[0] << 8) | r[1]  # random initial Message ID, RFC 7252 §4.4
        self._last_sep_mid = -1
        # the last parsed message: its header fields and options in one array (_R_TYPE ...
        # _R_CRIT), one name where eight attributes would each intern a qstr and take a slot
        # in this object's dict on a board; its ETag (bytes or None) beside it
        self._r = array("i", (0, 0, 0, 0, 0, -1, -1, 0))
        self._r_etag = None
        self.reset_counters()

    # ---------------------------------------------------------------- counters
    def reset_counters(self):
        """Zero the radio-cost counters."""
        self.datagrams_sent = 0
        self.bytes_sent = 0
        self.retransmissions = 0
        self.datagrams_received = 0
        self.bytes_received = 0
        self.exchanges = 0

    def close(self):
        """Close the UDP socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------- public API
    def get(self, path, sink=None):
        """GET path; a response larger than one block is fetched with Block2.

        Returns (code, payload bytes). With sink, a successful (2.xx) response's payload is
        passed to sink(memoryview) piece by piece instead (valid during the call only) and
        the returned payload is b"": a board never holds a large body whole."""
        return self.request(_GET, path, sink=sink)

    def post(self, path, payload, content_format=_CF_CBOR):
        """POST payload (Block1 when larger than one block). Returns (code, payload)."""
        return self.request(_POST, path, payload, content_format)

    def put(self, path, payload, content_format=None):
        """PUT payload (Block1 when larger than one block). Returns (code, payload)."""
        return self.request(_PUT, path, payload, content_format)

    def request(self, method, path, payload=None, content_format=None, sink=None):
        """Run one request to completion, block-wise in both directions as needed."""
        if self._sock is None:
            raise CoapError("client is closed")
        if method not in (_GET, _POST, _PUT, _DELETE):
            raise ValueError(errmsg(107, (method,)))
        if content_format is not None and (content_format < 0 or content_format > 0xFFFF):
            raise ValueError(errmsg(108, (content_format,)))
        segs, qs = _split_path(path)
        if payload is None:
            payload = b""
        mv = memoryview(payload)
        total = len(mv)
        # Block2 in the first GET announces the size we want (RFC 7959 §2.4, early negotiation)
        first_b2 = self.szx if method == _GET else -1
        # the response goes to _finish through self._rx, not as an argument: this frame then
        # holds no reference to the first datagram while Block2 fetches the others
        if total <= self.block_size:
            self._rx = self._do(method, segs, qs, content_format, first_b2, -1, -1, mv, 0, total)
        else:
            self._rx = self._block1(method, segs, qs, content_format, mv, total)
        return self._finish(method, segs, qs, sink)

    # --------------------------------------------------------------- block-wise
    def _block1(self, method, segs, qs, cf, mv, total):
        # RFC 7959 §2.5: send the request body block by block; the server answers 2.31
        # Continue to each block but the last, and the final response to the last.
        szx = self.szx
        off = 0
        restarted = False
        while True:
            bsize = 16 << szx
            n = total - off
            if n > bsize:
                n = bsize
            more = off + n < total
            num = off >> (szx + 4)
            blk = (num << 4) | (8 if more else 0) | szx
            data = self._do(method, segs, qs, cf, -1, blk, total if off == 0 else -1, mv, off, n)
            code = self._r[_R_CODE]
            rb = self._r[_R_BLOCK1]
            if (code == _REQUEST_ENTITY_TOO_LARGE and rb >= 0 and (rb & 7) < szx
                    and not restarted):
                # §2.9.3: 4.13 with a Block1 option proposes a block size; start over with it
                szx = rb & 7
                off = 0
                restarted = True
                continue
            if not more:
                if code == _CONTINUE:
                    raise CoapError(errmsg(109))
                return data  # the final response
            if code >> 5 != 2:
                return data  # an error response (4.xx/5.xx) the caller gets to see
            if rb < 0:
                # a 2.xx without Block1 to a non-final block: the server ignored Block1 and
                # did not get the whole body; do not report that as success
                raise CoapError(errmsg(110, (code_str(code), num, total)))
            rszx = rb & 7
            if rszx == 7 or rszx > szx:
                raise CoapError(errmsg(111, (rszx, szx)))
            # the server echoes our NUM (RFC 7959 §2.3 figure 6 / aiocoap) or the NUM of the
            # same offset in its smaller size
            if (rb >> 4) != num and (rb >> 4) << (rszx + 4) != off:
                raise CoapError(errmsg(112, (rb >> 4, num)))
            off += n
            # §2.3: continue at the next offset with the server's preferred (smaller) size
            szx = rszx

    def _finish(self, method, segs, qs, sink=None):
        """Return (code, payload) of the response in self._rx; follow Block2 when it has more
        blocks."""
        data = self._rx
        self._rx = None
        r = self._r
        code = r[_R_CODE]
        if code >> 5 != 2:
            sink = None  # an error response's text is returned, not streamed
        pay = memoryview(data)[r[_R_PAY]:]  # no copy until the caller's bytes
        b2 = r[_R_BLOCK2]
        if b2 < 0 or not (b2 & 8):
            if b2 >= 0 and (b2 >> 4) != 0:
                raise CoapError(errmsg(113, b2 >> 4))
            if sink is not None:
                sink(pay)
                return code, b""
            return code, bytes(pay)
        if (b2 >> 4) != 0:
            raise CoapError(errmsg(113, b2 >> 4))
        etag = self._r_etag
        if sink is None:
            body = bytearray(pay)
            got = len(body)
        else:
            body = None
            got = len(pay)
            sink(pay)
        pay = None  # each datagram is garbage once its block is taken: a board's heap holds one
        while b2 >= 0 and (b2 & 8):
            bszx = b2 & 7
            if bszx == 7:
                raise CoapError(errmsg(114))
            off = got
            if off & ((16 << bszx) - 1):
                raise CoapError(errmsg(115))
            # RFC 7959 §2.4 / §3.3: ask for the next block, same method, no payload
            nxt = ((off >> (bszx + 4)) << 4) | bszx
            data = None
            data = self._do(method, segs, qs, None, nxt, -1, -1, None, 0, 0)
            if r[_R_CODE] >> 5 != 2:
                raise CoapError(errmsg(116, (off, code_str(r[_R_CODE]))))
            b2 = r[_R_BLOCK2]
            if b2 < 0:
                raise CoapError(errmsg(117))
            if (b2 >> 4) << ((b2 & 7) + 4) != off:
                raise CoapError(errmsg(118, ((b2 >> 4) << ((b2 & 7) + 4), off)))
            if self._r_etag != etag:  # RFC 7959 §2.4: the representation changed
                raise CoapError(errmsg(119))
            if off + len(data) - r[_R_PAY] > self.max_body:
                raise CoapError(errmsg(120, self.max_body))
            if body is None:
                sink(memoryview(data)[r[_R_PAY]:])
            else:
                body.extend(memoryview(data)[r[_R_PAY]:])
            got += len(data) - r[_R_PAY]
            code = r[_R_CODE]
        if body is None:
            return code, b""
        return code, bytes(body)

    # ------------------------------------------------------------ one exchange
    def _rand(self, n):
        if urandom is not None:
            return urandom(n)
        import random
        b = bytearray(n)
        for i in range(n):
            b[i] = random.getrandbits(8)
        return b

    def _do(self, method, segs, qs, cf, block2, block1, size1, mv, off, n):
        """Compose one CON request into the send buffer and run the exchange."""
        need = _HDR_ROOM + _opts_len(segs) + _opts_len(qs) + n
        if need > len(self._buf):
            self._buf = bytearray(need)
            self._mv = memoryview(self._buf)
        buf = self._buf
        self._mid = (self._mid + 1) & 0xFFFF
        tok = self._rand(self.token_len)  # fresh random token per exchange, RFC 7252 §5.3.1
        tkl = self.token_len
        buf[0] = 0x40 | (_CON << 4) | tkl  # Ver 1, RFC 7252 §3
        buf[1] = method
        buf[2] = self._mid >> 8
        buf[3] = self._mid & 0xFF
        pos = 4
        for i in range(tkl):
            buf[pos] = tok[i]
            self._token[i] = tok[i]
            pos += 1
        last = 0
        for s in segs:
            pos = _opt_head(buf, pos, _OPT_URI_PATH - last, len(s))
            last = _OPT_URI_PATH
            buf[pos:pos + len(s)] = s
            pos += len(s)
        if cf is not None:
            pos = _put_uint_opt(buf, pos, _OPT_CONTENT_FORMAT - last, cf)
            last = _OPT_CONTENT_FORMAT
        for s in qs:
            pos = _opt_head(buf, pos, _OPT_URI_QUERY - last, len(s))
            last = _OPT_URI_QUERY
            buf[pos:pos + len(s)] = s
            pos += len(s)
        if block2 >= 0:
            pos = _put_uint_opt(buf, pos, _OPT_BLOCK2 - last, block2)
            last = _OPT_BLOCK2
        if block1 >= 0:
            pos = _put_uint_opt(buf, pos, _OPT_BLOCK1 - last, block1)
            last = _OPT_BLOCK1
        if size1 >= 0:
            pos = _put_uint_opt(buf, pos, _OPT_SIZE1 - last, size1)
            last = _OPT_SIZE1
        if n > 0:
            buf[pos] = 0xFF  # payload marker, RFC 7252 §3
            pos += 1
            buf[pos:pos + n] = mv[off:off + n]
            pos += n
        return self._exchange(pos)

    def _send(self, data):
        try:
            self._sock.send(data)
        except OSError as e:
            # a connected UDP socket reports an earlier ICMP port-unreachable on its next
            # call (ECONNREFUSED, 111): this datagram was not sent; retransmission covers it
            if not e.args or e.args[0] != 111:
                raise
            return
        self.datagrams_sent += 1
        self.bytes_sent += len(data)

    def _send_empty(self, t, n):
        # an empty message of type t with Message ID n
        e = self._empty
        e[0] = 0x40 | (t << 4)
        e[1] = 0
        e[2] = n >> 8
        e[3] = n & 0xFF
        self._send(e)

    def _recv(self, t):
        # one datagram from the server within t ms, or None
        if t < 1:
            t = 1
        self._sock.settimeout(t / 1000)
        try:
            # one byte more than accepted: a datagram that fills it was cut by the kernel
            data = self._sock.recv(self.rx_size + 1)
        except OSError as e:
            code = e.args[0] if e.args else None
            # errnos that mean "nothing arrived in time": EAGAIN (11, unix MicroPython),
            # ETIMEDOUT (110 Linux, 116 ESP-IDF/newlib), ECONNREFUSED (111: an ICMP
            # port-unreachable, i.e. the datagram was lost; retransmission covers it)
            if not isinstance(code, int) or code in (11, 110, 111, 116):
                return None  # CPython's socket.timeout carries a str, not an errno
            raise CoapError("socket error %r" % (e,))
        if len(data) > self.rx_size:
            raise CoapError("a datagram of more than rx_size=%d bytes arrived (does the server "
                            "ignore the Block2 size?)" % self.rx_size)
        self.datagrams_received += 1
        self.bytes_received += len(data)
        return data

    def _parse(self, data):
        """Parse header and the options we use; False for a malformed message."""
        n = len(data)
        if n < 4:
            return False
        b0 = data[0]
        if b0 >> 6 != 1:  # version 1
            return False
        tkl = b0 & 0x0F
        if tkl > 8 or 4 + tkl > n:  # TKL 9-15 reserved, RFC 7252 §3
            return False
        r = self._r
        r[_R_TYPE] = (b0 >> 4) & 3
        r[_R_CODE] = data[1]
        r[_R_MID] = (data[2] << 8) | data[3]
        r[_R_TKL] = tkl
        r[_R_BLOCK1] = -1
        r[_R_BLOCK2] = -1
        r[_R_CRIT] = 0
        r[_R_PAY] = n
        self._r_etag = None
        pos = 4 + tkl
        num = 0
        try:
            while pos < n:
                b = data[pos]
                pos += 1
                if b == 0xFF:
                    if pos == n:  # marker with empty payload is a format error (§3)
                        return False
                    r[_R_PAY] = pos
                    break
                d = b >> 4
                ln = b & 0x0F
                if d == 15 or ln == 15:
                    return False
                if d == 13:
                    d = data[pos] + 13
                    pos += 1
                elif d == 14:
                    d = ((data[pos] << 8) | data[pos + 1]) + 269
                    pos += 2
                if ln == 13:
                    ln = data[pos] + 13
                    pos += 1
                elif ln == 14:
                    ln = ((data[pos] << 8) | data[pos + 1]) + 269
                    pos += 2
                if pos + ln > n:
                    return False
                num += d
                if num == _OPT_BLOCK1 or num == _OPT_BLOCK2:
                    if ln > 3:  # RFC 7959 §2.2: a Block option's value is 0-3 bytes
                        return False
                    r[_R_BLOCK1 if num == _OPT_BLOCK1 else _R_BLOCK2] = _uint(data, pos, ln)
                elif num == _OPT_ETAG:
                    self._r_etag = bytes(data[pos:pos + ln])
                elif num & 1 and not r[_R_CRIT]:
                    r[_R_CRIT] = num  # unrecognised critical option (§5.4.1)
                pos += ln
        except IndexError:
            return False
        return True

    def _token_ok(self, data):
        tkl = self.token_len
        if self._r[_R_TKL] != tkl:
            return False
        t = self._token
        for i in range(tkl):
            if data[4 + i] != t[i]:
                return False
        return True

    def _exchange(self, n):
        """Send the CON message in the buffer's first n bytes until ACKed; return the matching
        response."""
        msg = self._mv[:n]
        mid = self._mid
        r = self._r
        self.exchanges += 1
        # RFC 7252 §4.2: initial timeout random in [ACK_TIMEOUT, ACK_TIMEOUT*ACK_RANDOM_FACTOR]
        rnd = self._rand(2)
        frac = ((rnd[0] << 8) | rnd[1]) / 65536
        timeout = int(self.ack_timeout * 1000 * (1 + (self.random_factor - 1) * frac))
        if timeout < 1:
            timeout = 1
        attempt = 0
        acked = False
        self._send(msg)
        start = ticks_ms()
        limit = timeout
        while True:
            remaining = limit - ticks_diff(ticks_ms(), start)
            if remaining <= 0:
                if acked:
                    raise CoapTimeout("no separate response within %.1f s after the empty ACK"
                                      % self.response_timeout)
                if attempt >= self.max_retransmit:
                    raise CoapTimeout("no ACK from %s after %d retransmissions"
                                      % (self._addr, attempt))
                attempt += 1
                timeout *= 2  # §4.2: double the timeout on each retransmission
                self.retransmissions += 1
                self._send(msg)
                start = ticks_ms()
                limit = timeout
                continue
            data = self._recv(remaining)
            if data is None or not self._parse(data):
                continue  # timeout slice, foreign or malformed datagram: ignore (§4.2)
            t = r[_R_TYPE]
            if t == _ACK or t == _RST:
                if r[_R_MID] != mid:
                    continue  # duplicate/stale ACK of an earlier exchange
                if t == _RST:
                    raise CoapError("server reset the request (RST, mid %d)" % mid)
                if r[_R_CODE] == 0:  # empty ACK: a separate response follows (§5.2.2)
                    if not acked:
                        acked = True
                        start = ticks_ms()
                        limit = int(self.response_timeout * 1000)
                    continue
                if not self._token_ok(data):
                    continue  # piggy-backed response must echo our token (§5.3.2)
                self._check_crit()
                return data
            # CON or NON sent by the server
            if r[_R_CODE] == 0:
                if t == _CON:  # CoAP ping: answer with RST (§4.3)
                    self._send_empty(_RST, r[_R_MID])
                continue
            if r[_R_CODE] >> 5 >= 2 and self._token_ok(data):
                if t == _CON:  # acknowledge a confirmable separate response (§5.2.2)
                    self._send_empty(_ACK, r[_R_MID])
                    self._last_sep_mid = r[_R_MID]
                self._check_crit()
                return data
            if t == _CON:
                if r[_R_MID] == self._last_sep_mid:
                    self._send_empty(_ACK, r[_R_MID])  # duplicate: ACK each copy (§4.5)
                else:
                    self._send_empty(_RST, r[_R_MID])  # unexpected CON: reject (§4.2)
            # an unexpected NON is silently ignored (§4.3)

    def _check_crit(self):
        if self._r[_R_CRIT]:
            raise CoapError(errmsg(121, self._r[_R_CRIT]))


from edge.cbor import publish  # noqa: E402
publish(globals())  # CPython: the constants by their public names
del publish
