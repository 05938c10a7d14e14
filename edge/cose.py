# HMAC-SHA-256 (RFC 2104) on hashlib.sha256, and COSE_Mac0 (RFC 9052 §6.2) with
# alg 4 = HMAC 256/64 (RFC 9053 §3.1), for MicroPython (which has no `hmac` module) and CPython.
#
# Envelope, always exactly (docs/wire-format.md):
#   D1                      tag 17 (COSE_Mac0, RFC 9052 §2)
#   84                      array(4)
#   43 A1 01 04             protected = bstr .cbor {1: 4}   (alg: HMAC 256/64)
#   A1 04 42 kk kk          unprotected = {4: kid}, kid a 2-byte bstr
#   <bstr head> <payload>
#   48 <8 bytes>            tag = first 8 bytes of HMAC-SHA-256 over MAC_structure
# MAC_structure (RFC 9052 §6.3) = ["MAC0", protected, external_aad, payload], i.e. the bytes
#   84 64 4D 41 43 30 43 A1 01 04 <bstr external_aad> <bstr head of payload> <payload>
# external_aad is h'' (byte 40) for every message but the updates of a compact job, whose
# MAC also covers the fields such an update leaves out (edge.frame.uplink_aad). The bytes are
# hashed in two pieces (the short head, then the payload slice through a memoryview) so no
# copy of the payload is ever made.

import hashlib

from edge.cbor import FrameError, const, errmsg, head_len, put_head, read_head

_MT_UINT = const(0)          # CBOR major types (edge.cbor)
_MT_BSTR = const(2)
_MT_MAP = const(5)

# private int constants: no dict entry on a board, public names on CPython (edge.cbor.publish)
_ALG_HMAC_256_64 = const(4)  # RFC 9053 §3.1, Table 2
_TAG_LEN = const(8)          # 64-bit truncated tag
_HDR_ALG = const(1)          # RFC 9052 §3.1 common header labels
_HDR_KID = const(4)
_COSE_MAC0_TAG = const(17)   # RFC 9052 §2, CBOR tag for COSE_Mac0
PROTECTED = b'\xa1\x01\x04'  # bstr content: {1: 4}
_KID_LEN = const(2)
KID_GW = b'gw'               # h'6777', downlink (aggregator -> edges)
# Envelope bytes before the payload's bstr head: D1 84 43 A1 01 04 A1 04 42 kid(2)
_PREFIX_LEN = const(11)
_SUFFIX_LEN = const(9)       # 48 + the 8-byte tag
_MAC0_HEAD = b'\xd1\x84\x43\xa1\x01\x04\xa1\x04\x42'
# MAC_structure up to (not including) the external_aad bstr
_MACSTRUCT_HEAD = b'\x84\x64MAC0\x43\xa1\x01\x04'
_BLOCK = const(64)           # SHA-256 block size, RFC 2104 "B"


def _pads(key):
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    ipad = bytearray(_BLOCK)
    opad = bytearray(_BLOCK)
    i = 0
    n = len(key)
    while i < _BLOCK:
        k = key[i] if i < n else 0
        ipad[i] = k ^ 0x36
        opad[i] = k ^ 0x5C
        i += 1
    return ipad, opad


def hmac_sha256(key, data, data2=None):
    """HMAC-SHA-256 (RFC 2104) of data (+ data2, hashed as if concatenated)."""
    ipad, opad = _pads(key)
    h = hashlib.sha256(ipad)
    h.update(data)
    if data2 is not None:
        h.update(data2)
    inner = h.digest()
    h = hashlib.sha256(opad)
    h.update(inner)
    return h.digest()


def overhead(payload_len):
    """Envelope bytes around a payload of payload_len bytes (20 + bstr head)."""
    return _PREFIX_LEN + head_len(payload_len) + _SUFFIX_LEN


def check_key(key):
    if len(key) != 32:
        raise ValueError(errmsg(62, len(key)))


def _mac_head(payload_len, aad):
    """MAC_structure's bytes before the payload: fixed head, bstr(aad), the payload's bstr head."""
    na = len(aad) if aad else 0
    h0 = len(_MACSTRUCT_HEAD)
    head = bytearray(h0 + head_len(na) + na + head_len(payload_len))
    head[0:h0] = _MACSTRUCT_HEAD
    off = put_head(head, h0, _MT_BSTR, na)
    if na:
        head[off:off + na] = aad
        off += na
    put_head(head, off, _MT_BSTR, payload_len)
    return head


def mac_tag(key, payload, aad=None):
    """The 8-byte tag of COSE_Mac0 for this payload (bytes or memoryview slice); aad: the
    external AAD (None or b'' for h'')."""
    return hmac_sha256(key, _mac_head(len(payload), aad), payload)[:_TAG_LEN]


def mac_begin(key, payload_len):
    """mac_tag in pieces, for a payload that is never held whole (a snapshot arriving block
    by block): feed the payload to the returned hash's update(), then call mac_end."""
    ipad, opad = _pads(key)
    h = hashlib.sha256(ipad)
    h.update(_mac_head(payload_len, None))
    return h, opad


def mac_end(h, opad):
    """The 8-byte tag from mac_begin's hash after the whole payload went through it."""
    o = hashlib.sha256(opad)
    o.update(h.digest())
    return o.digest()[:_TAG_LEN]


def write_prefix(buf, off, kid, payload_len):
    """Write the envelope up to and including the payload's bstr head; return the payload offset."""
    if len(kid) != _KID_LEN:
        raise ValueError(errmsg(63))
    buf[off:off + 9] = _MAC0_HEAD
    buf[off + 9] = kid[0]
    buf[off + 10] = kid[1]
    return put_head(buf, off + _PREFIX_LEN, _MT_BSTR, payload_len)


def write_tag(buf, off, key, payload_off, payload_len, aad=None):
    """Write 48 + tag after the payload ending at off; return the end offset."""
    mv = memoryview(buf)
    tag = mac_tag(key, mv[payload_off:payload_off + payload_len], aad)
    buf[off] = 0x48
    buf[off + 1:off + 1 + _TAG_LEN] = tag
    return off + _SUFFIX_LEN


def wrap(key, kid, payload):
    """A complete COSE_Mac0 message around payload bytes (convenience; allocates)."""
    check_key(key)
    n = len(payload)
    buf = bytearray(overhead(n) + n)
    off = write_prefix(buf, 0, kid, n)
    buf[off:off + n] = payload
    end = write_tag(buf, off + n, key, off, n)
    return bytes(buf[:end])


def ct_equal(a, b):
    """a == b in time independent of where they differ (a MAC tag compare must not leak the
    length of the matching prefix)."""
    if len(a) != len(b):
        return False
    r = 0
    i = 0
    while i < len(a):
        r |= a[i] ^ b[i]
        i += 1
    return r == 0


def check_kid(got, want):
    """Refuse ('unknown_kid') a message whose kid is not the one expected."""
    if got != want:
        raise FrameError('unknown_kid', errmsg(64, (got[0], got[1])))


def parse_head(data):
    """Parse the envelope up to the payload's head: (kid_bytes, payload_off, payload_len).

    Shared by parse() (a whole message) and snapshot.SnapshotSink (the first block of one)."""
    n = len(data)
    if n < 1 or data[0] != 0xD1:
        raise FrameError('not_mac0', errmsg(65))
    if n < 2 or data[1] != 0x84:
        raise FrameError('structure', errmsg(66))
    major, plen, off = read_head(data, 2)
    if major != _MT_BSTR:
        raise FrameError('structure', errmsg(67))
    if bytes(data[off:off + plen]) != PROTECTED:
        raise FrameError('bad_alg', errmsg(68))
    off += plen
    major, cnt, off = read_head(data, off)
    if major != _MT_MAP or cnt != 1:
        raise FrameError('structure', errmsg(69))
    major, lab, off = read_head(data, off)
    if major != _MT_UINT or lab != _HDR_KID:
        raise FrameError('structure', errmsg(69))
    major, klen, off = read_head(data, off)
    if major != _MT_BSTR or klen != _KID_LEN or off + klen > n:
        raise FrameError('structure', errmsg(70))
    kid = bytes(data[off:off + klen])
    off += klen
    major, blen, off = read_head(data, off)
    if major != _MT_BSTR:
        raise FrameError('structure', errmsg(71))
    return kid, off, blen


def parse(data):
    """Parse the envelope: return (kid_bytes, payload_off, payload_len). No MAC check."""
    n = len(data)
    kid, off, blen = parse_head(data)
    pay = off
    off += blen
    if off + _SUFFIX_LEN > n:
        raise FrameError('structure', errmsg(72))
    if data[off] != 0x48:
        raise FrameError('structure', errmsg(73))
    off += _SUFFIX_LEN
    if off != n:
        raise FrameError('trailing_bytes', errmsg(74, n - off))
    return kid, pay, blen


def verify(data, key, kid=None):
    """Check envelope and MAC (constant-time compare); return (kid, payload_off, payload_len).

    kid, if given, must match the message's kid ('unknown_kid' otherwise)."""
    got_kid, pay, plen = parse(data)
    if kid is not None:
        check_kid(got_kid, kid)
    mv = memoryview(data)
    want = mac_tag(key, mv[pay:pay + plen])
    tag_off = pay + plen + 1
    if not ct_equal(want, mv[tag_off:tag_off + _TAG_LEN]):
        raise FrameError('bad_mac', errmsg(75))
    return got_kid, pay, plen


from edge.cbor import publish  # noqa: E402
publish(globals())  # CPython: the constants by their public names
del publish
