# cat-iot wire format, version 2, edge side (docs/wire-format.md is the specification).
#
# Runs unchanged on MicroPython (1.25+) and CPython. Uplink update frames are encoded
# straight into a caller's preallocated bytearray; their exact length is known in O(1)
# before encoding (frame_length), which is what CAT's cost model uses. Downlink messages
# (config, model snapshot, model delta) are verified and applied with O(1) extra memory.
#
# Every message is a COSE_Mac0 (RFC 9052 §6.2) with HMAC 256/64 (RFC 9053 §3.1) around a
# deterministically encoded CBOR map (RFC 8949 §4.2.1). No CBOR floats: floats travel in
# bstrs as little-endian IEEE 754 binary32 ('<f') or binary16 ('<e').

import struct

from edge.cbor import (FrameError, const, errmsg, head_len, put_head, put_kv_uint, read_head, read_uint,
                       read_bstr, read_tstr, read_bool)
from edge import cose

# Integer constants are private `_NAME = const(v)`: folded into the bytecode on MicroPython
# (no dict entry, RAM on a board); on CPython edge.cbor.publish adds them as NAME at the end.

_MT_UINT = const(0)     # CBOR major types (edge.cbor)
_MT_BSTR = const(2)
_MT_ARRAY = const(4)
_MT_MAP = const(5)
_SUFFIX = const(9)       # edge.cose: 48 + the 8-byte tag

_VERSION = const(2)

# kinds (key 1)
_KIND_UPDATE = const(0)
_KIND_CONFIG = const(1)
_KIND_SNAPSHOT = const(2)
_KIND_DELTA = const(3)
_KIND_COMPACT = const(4)  # update with version, job, node, scheme, d, fmt implied by the job

# payload keys (one registry for all kinds)
_K_VERSION = const(0)
_K_KIND = const(1)
_K_JOB = const(2)
_K_NODE = const(3)
_K_ROUND = const(4)
_K_SCHEME = const(5)
_K_D = const(6)
_K_T = const(7)
_K_IDX_PACKED = const(8)
_K_IDX_BITMAP = const(9)
_K_FMT = const(10)
_K_VALUES = const(11)
_K_SIGNS = const(13)
_K_TELEMETRY = const(14)
_K_CONFIG = const(15)
_K_MODEL = const(16)

# schemes (key 5)
_SCHEME_IDENTITY = const(0)
_SCHEME_S = const(1)     # top-T sparsification (paper eq. 2)
_SCHEME_SQ = const(2)    # sparsification + quantisation (paper eq. 3)
_SCHEME_SS = const(3)    # stochastic sparsification (paper eq. 4)

# value formats (key 10)
_FMT_F32 = const(0)      # IEEE 754 binary32, little-endian, 4 bytes
_FMT_F16 = const(1)      # IEEE 754 binary16, little-endian, 2 bytes

# config map keys (inside key 15)
_CFG_D = const(0)
_CFG_SCHEME = const(1)
_CFG_RULE = const(2)
_CFG_RULE_PARAM = const(3)
_CFG_K_CAP = const(4)
_CFG_FMT = const(5)
_CFG_L = const(6)
_CFG_STEP = const(7)
_CFG_ERROR_FEEDBACK = const(8)
_CFG_MODEL = const(9)
_CFG_CLASSES = const(10)
_CFG_LAMBDA = const(11)
_CFG_PROFILE = const(12)
_CFG_METRIC = const(13)
_CFG_ROUNDS = const(14)
_CFG_SEED = const(15)
_CFG_COMPACT = const(16)  # optional: absent = false

_RULE_CAT = const(0)
_RULE_FIXED = const(1)
_RULE_ALISTARH = const(2)
_RULE_HYBRID = const(3)
_RULE_IDENTITY = const(4)
_RULE_CATAVG = const(5)

_MODEL_LOGISTIC = const(0)
_MODEL_SOFTMAX = const(1)

_D_MAX = const(0xFFFFFFFF)      # indices travel in at most 32 bits
_NODE_MAX = const(0xFFFF)       # node id is the 2-byte kid
_TELEMETRY_LEN = const(16)      # 4 x '<f'
# (65504.0 is the largest finite binary16, IEEE 754-2008 Table 3.5: beyond it f16_bits gives inf)

# config field names, in key order (decode_config returns a dict with these names)
CONFIG_FIELDS = ('d', 'scheme', 'rule', 'rule_param', 'k_cap', 'fmt', 'L', 'step',
                 'error_feedback', 'model', 'classes', 'lam', 'profile', 'metric',
                 'rounds', 'seed', 'compact')


class VersionMismatch(FrameError):
    """A delta whose base is not the caller's version (or a snapshot older than it).

    The caller falls back to the retained snapshot (base > version) or ignores a
    duplicate (base < version)."""

    def __init__(self, base, version):
        super().__init__('version_mismatch', 'message base %d, local version %d' % (base, version))
        self.base = base
        self.version = version


# ---------------------------------------------------------------------------- sizes

def index_bits(d):
    """b = max(1, ceil(log2 d)) bits per packed index (paper eq. 5's ceil(log2 d))."""
    n = d - 1
    b = 0
    if n >= 0x10000:
        n >>= 16
        b = 16
    if n >= 0x100:
        n >>= 8
        b += 8
    while n:
        n >>= 1
        b += 1
    return b if b > 0 else 1


def index_code(d, T):
    """(key, nbytes) of the index field: packed (8) unless the bitmap (9) is strictly smaller."""
    packed = (T * index_bits(d) + 7) >> 3
    bitmap = (d + 7) >> 3
    if bitmap < packed:
        return _K_IDX_BITMAP, bitmap
    return _K_IDX_PACKED, packed


def payload_length(d, T, scheme, fmt, telemetry=False, job=0, node=0, rnd=0, compact=False):
    """Exact byte length of an update payload (the CBOR map), O(1).

    compact: kind 4, whose map holds only kind, round, T, indices, values, signs, telemetry."""
    w = 2 if fmt == _FMT_F16 else 4
    if compact:
        # map head (<= 7 entries) + {1: 4}: 1 + 2
        n = 3 + 1 + head_len(rnd) + 1 + head_len(T)
    else:
        # map head (<= 13 entries) + {0: 1} + {1: 0} + {5: s} + {10: f}: 1 + 2 + 2 + 2 + 2
        n = 9 + 1 + head_len(job) + 1 + head_len(node) + 1 + head_len(rnd)
        n += 1 + head_len(d) + 1 + head_len(T)
    if scheme == _SCHEME_SQ:
        vb = w
        sb = (T + 7) >> 3
        n += 1 + head_len(sb) + sb
    else:
        vb = T * w
    n += 1 + head_len(vb) + vb
    if scheme != _SCHEME_IDENTITY:
        ib = index_code(d, T)[1]
        n += 1 + head_len(ib) + ib
    if telemetry:
        n += 2 + _TELEMETRY_LEN
    return n


def frame_length(d, T, scheme, fmt, telemetry=False, job=0, node=0, rnd=0, compact=False):
    """Exact length in bytes of the complete COSE_Mac0 update frame, O(1).

    job, node and rnd change the length (shortest-form uints: 1 byte below 24, 2 below 256,
    3 below 65536, 5 below 2**32), so pass the real ones; the defaults fit values < 24.
    compact: a kind-4 frame (job and node are not sent, only rnd still counts)."""
    p = payload_length(d, T, scheme, fmt, telemetry, job, node, rnd, compact)
    return cose.overhead(p) + p


def buffer_size(d, k, scheme, fmt):
    """A bytearray size that holds any update frame with T <= k (telemetry included,
    job and round < 2**32): frame_length is non-decreasing in every argument."""
    if scheme == _SCHEME_IDENTITY:
        k = d
    return frame_length(d, k, scheme, fmt, True, _D_MAX, _NODE_MAX, _D_MAX)


# ---------------------------------------------------------------------------- floats

def _f32_finite(data, off):
    """Whether the '<f' at data[off:off+4] is finite (its exponent is not all ones)."""
    return not ((data[off + 3] & 0x7F) == 0x7F and (data[off + 2] & 0x80))


def _put_value(buf, off, v, fmt):
    """Write one value; raise ValueError if it is not finite in that format."""
    if fmt == _FMT_F16:
        from edge.f16 import f16_bits  # only float16 jobs load it
        h = f16_bits(v)
        if (h & 0x7C00) == 0x7C00:
            raise ValueError(errmsg(29, v))
        buf[off] = h & 0xFF
        buf[off + 1] = h >> 8
        return off + 2
    try:
        struct.pack_into('<f', buf, off, v)
    except OverflowError:
        raise ValueError(errmsg(30, v))
    if not _f32_finite(buf, off):
        raise ValueError(errmsg(0, v))
    return off + 4


# ---------------------------------------------------------------------------- encoder

def _emit(buf, off, acc, nb):
    while nb >= 8:
        nb -= 8
        buf[off] = (acc >> nb) & 0xFF
        off += 1
    return off, acc & ((1 << nb) - 1), nb


def _write_indices(buf, off, idx, T, d, code, nbytes, b):
    prev = -1
    if code == _K_IDX_BITMAP:
        i = 0
        while i < nbytes:
            buf[off + i] = 0
            i += 1
        k = 0
        while k < T:
            j = idx[k]
            if j <= prev or j >= d:
                raise ValueError(errmsg(31, (k, j)))
            prev = j
            buf[off + (j >> 3)] |= 1 << (j & 7)
            k += 1
        return off + nbytes
    # packed, MSB first; chunks of <= 16 bits keep acc a small int on 32-bit boards
    acc = 0
    nb = 0
    k = 0
    while k < T:
        j = idx[k]
        if j <= prev or j >= d:
            raise ValueError(errmsg(31, (k, j)))
        prev = j
        if b > 16:
            acc = (acc << (b - 16)) | (j >> 16)
            nb += b - 16
            off, acc, nb = _emit(buf, off, acc, nb)
            acc = (acc << 16) | (j & 0xFFFF)
            nb += 16
        else:
            acc = (acc << b) | j
            nb += b
        off, acc, nb = _emit(buf, off, acc, nb)
        k += 1
    if nb:
        buf[off] = (acc << (8 - nb)) & 0xFF
        off += 1
    return off


def uplink_aad(job, node, scheme, d, fmt):
    """The external AAD of an update in a compact job: the CBOR array
    [version, job, node, scheme, d, fmt] (deterministic). A compact update does not carry
    these fields, so its MAC covers them instead: it verifies only under its own job."""
    vals = (_VERSION, job, node, scheme, d, fmt)
    n = 1
    for v in vals:
        n += head_len(v)
    out = bytearray(n)
    off = put_head(out, 0, _MT_ARRAY, 6)
    for v in vals:
        off = put_head(out, off, _MT_UINT, v)
    return out


def encode_update(buf, key, job, node, rnd, scheme, d, T, idx, vals, fmt, telemetry=None, compact=False):
    """Encode a complete update frame into the bytearray buf; return the bytes written.

    idx: array('I'/'H') whose first T entries are strictly ascending indices (ignored for
    identity); vals: array('f') with the T values in the same order (identity: d values;
    SQ: vals[k] = +-m, m is sent once plus a sign bitmap); telemetry: None or 4 floats
    (loss, improvement at T, compute seconds, energy J); compact: write a kind-4 update
    (version, job, node, scheme, d and fmt are left out: the gateway takes them from the job
    and the kid, and the MAC covers them as external AAD, uplink_aad). Raises ValueError on
    bad input."""
    cose.check_key(key)
    if scheme < 0 or scheme > 3:
        raise ValueError(errmsg(1, scheme))
    if fmt != _FMT_F32 and fmt != _FMT_F16:
        raise ValueError(errmsg(2, fmt))
    if d < 1 or d > _D_MAX:
        raise ValueError(errmsg(3, d))
    if T < 1 or T > d:
        raise ValueError(errmsg(4, (T, d)))
    if scheme == _SCHEME_IDENTITY and T != d:
        raise ValueError(errmsg(5))
    if node < 0 or node > _NODE_MAX:
        raise ValueError(errmsg(6, node))
    if job < 0 or rnd < 0:
        raise ValueError(errmsg(7))
    if len(vals) < T or (scheme != _SCHEME_IDENTITY and len(idx) < T):
        raise ValueError(errmsg(8))
    if telemetry is not None and len(telemetry) != 4:
        raise ValueError(errmsg(9))
    tel = telemetry is not None
    plen = payload_length(d, T, scheme, fmt, tel, job, node, rnd, compact)
    total = cose.overhead(plen) + plen
    if len(buf) < total:
        raise ValueError(errmsg(10, (len(buf), total)))
    kid = bytes((node >> 8, node & 0xFF))
    p0 = cose.write_prefix(buf, 0, kid, plen)
    w = 2 if fmt == _FMT_F16 else 4
    nent = 4 if compact else 10  # keys 1, 4, 7, 11 (compact) or 0..7, 10, 11
    if scheme != _SCHEME_IDENTITY:
        nent += 1
    if scheme == _SCHEME_SQ:
        nent += 1
    if tel:
        nent += 1
    off = put_head(buf, p0, _MT_MAP, nent)
    if compact:
        off = put_kv_uint(buf, off, _K_KIND, _KIND_COMPACT)
        off = put_kv_uint(buf, off, _K_ROUND, rnd)
    else:
        off = put_kv_uint(buf, off, _K_VERSION, _VERSION)
        off = put_kv_uint(buf, off, _K_KIND, _KIND_UPDATE)
        off = put_kv_uint(buf, off, _K_JOB, job)
        off = put_kv_uint(buf, off, _K_NODE, node)
        off = put_kv_uint(buf, off, _K_ROUND, rnd)
        off = put_kv_uint(buf, off, _K_SCHEME, scheme)
        off = put_kv_uint(buf, off, _K_D, d)
    off = put_kv_uint(buf, off, _K_T, T)
    if scheme != _SCHEME_IDENTITY:
        code, nbytes = index_code(d, T)
        off = put_head(buf, off, _MT_UINT, code)
        off = put_head(buf, off, _MT_BSTR, nbytes)
        off = _write_indices(buf, off, idx, T, d, code, nbytes, index_bits(d))
    if not compact:
        off = put_kv_uint(buf, off, _K_FMT, fmt)
    off = put_head(buf, off, _MT_UINT, _K_VALUES)
    if scheme == _SCHEME_SQ:
        m = vals[0]
        if m < 0:
            m = -m
        off = put_head(buf, off, _MT_BSTR, w)
        off = _put_value(buf, off, m, fmt)
        sb = (T + 7) >> 3
        off = put_head(buf, off, _MT_UINT, _K_SIGNS)
        off = put_head(buf, off, _MT_BSTR, sb)
        i = 0
        while i < sb:
            buf[off + i] = 0
            i += 1
        k = 0
        while k < T:
            v = vals[k]
            if v < 0:
                if v != -m:
                    raise ValueError(errmsg(42, (k, v, m)))
                buf[off + (k >> 3)] |= 1 << (k & 7)
            elif v != m:
                raise ValueError(errmsg(42, (k, v, m)))
            k += 1
        off += sb
    else:
        off = put_head(buf, off, _MT_BSTR, T * w)
        k = 0
        while k < T:
            off = _put_value(buf, off, vals[k], fmt)
            k += 1
    if tel:
        off = put_head(buf, off, _MT_UINT, _K_TELEMETRY)
        off = put_head(buf, off, _MT_BSTR, _TELEMETRY_LEN)
        k = 0
        while k < 4:
            off = _put_value(buf, off, telemetry[k], _FMT_F32)
            k += 1
    if off - p0 != plen:  # would be a bug in payload_length
        raise ValueError(errmsg(11, (off - p0, plen)))
    aad = uplink_aad(job, node, scheme, d, fmt) if compact else None
    return cose.write_tag(buf, off, key, p0, plen, aad)


# ---------------------------------------------------------------------------- decoders
#
# Every downlink message (config, snapshot, delta) is read by one walk: _open checks the
# envelope (kid 'gw' and the MAC), _fields reads the payload map key by key and checks the
# header fields as they come, _model_keys checks which keys a model message holds and its
# job and d. decode_config, apply_model, edge.snapshot.SnapshotSink (the same walk over the first block of
# a snapshot, whose MAC is computed as the blocks pass) and peek (routing on push links)
# differ only in what they do with the fields.

def _read_f32(data, off, what):
    s, n, off = read_bstr(data, off, what)
    if n != 4:
        raise FrameError('wrong_type', errmsg(12, what))
    if not _f32_finite(data, s):
        raise FrameError('non_finite', errmsg(13, what))
    return struct.unpack_from('<f', data, s)[0], off


def _open(data, key):
    """(start, end) of a downlink message's payload: envelope, kid 'gw' and MAC checked
    (cose.verify); key None checks the envelope's structure only (peek)."""
    if key is None:
        kid, p, n = cose.parse(data)
    else:
        kid, p, n = cose.verify(data, key, cose.KID_GW)
    return p, p + n


def _next_key(data, off, n):
    # the next map key, above the previous one n (RFC 8949 §4.2.1 order)
    major, k, off = read_head(data, off)
    if major != _MT_UINT:
        raise FrameError('unknown_key', errmsg(14))
    if k <= n:
        raise FrameError('not_deterministic', errmsg(15))
    return k, off


def _fields(data, off, end, kinds, f, upto=-1, stream=False):
    """Read the payload map data[off:end] of a downlink message into the dict f: the one walk
    of every downlink payload (docs/wire-format.md §2, §3.2-§3.4). Returns the offset after it.

    Keys are uints in ascending order. kinds: the message kinds accepted here; the first
    names the keys: a config's (0, 1, 2, 4 and the config map 15) or a model message's (0,
    1, 2, 4, 6, 7, 10 and the bstrs 8, 9, 11, 16). uint fields go into f as they come,
    version checked (1) and kind (one of kinds); bstrs as (start, length); the config map as
    the dict of its fields (_config). upto >= 0: the walk stops at the first key above it
    and returns that key's offset (peek reads only the header). stream: data holds only the
    first bytes of a snapshot, so its model bstr (key 16) must be the last entry and end the
    payload; the walk returns the offset of the model's content, which data need not hold."""
    major, cnt, off = read_head(data, off)
    if major != _MT_MAP:
        raise FrameError('structure', errmsg(16))
    config = kinds[0] == _KIND_CONFIG
    prev = -1
    while cnt:
        cnt -= 1
        k, o = _next_key(data, off, prev)
        if 0 <= upto < k:
            return off
        prev = k
        off = o
        if k in (_K_VERSION, _K_KIND, _K_JOB, _K_ROUND) or (not config and k in (_K_D, _K_T, _K_FMT)):
            v, off = read_uint(data, off, 'key %d' % k)
            if k == _K_VERSION and v != _VERSION:
                raise FrameError('bad_version', errmsg(39, (v, _VERSION)))
            if k == _K_KIND and v not in kinds:
                raise FrameError('bad_kind', errmsg(40, v))
            f[k] = v
        elif config and k == _K_CONFIG:
            f[k], off = _config(data, off)
        elif not config and k in (_K_IDX_PACKED, _K_IDX_BITMAP, _K_VALUES, _K_MODEL):
            if not stream:
                s, n, off = read_bstr(data, off, 'key %d' % k)
                f[k] = (s, n)
                continue
            if k != _K_MODEL:
                raise FrameError('unknown_key', errmsg(33, (k, _KIND_SNAPSHOT)))
            major, n, off = read_head(data, off)
            if major != _MT_BSTR:
                raise FrameError('wrong_type', errmsg(44))
            if cnt:
                raise FrameError('unknown_key', errmsg(45))
            if off + n != end:
                raise FrameError('trailing_bytes', errmsg(17))
            f[k] = (off, n)
            return off
        else:
            raise FrameError('unknown_key', errmsg(43, (k, 'config' if config else 'model message')))
    if off != end:
        raise FrameError('trailing_bytes', errmsg(17))
    return off


def _config(data, off):
    """The config map (key 15) at off: (dict of CONFIG_FIELDS, offset after it)."""
    major, n, off = read_head(data, off)
    if major != _MT_MAP:
        raise FrameError('wrong_type', errmsg(18))
    out = {}
    cprev = -1
    while n:
        n -= 1
        ck, off = _next_key(data, off, cprev)
        cprev = ck
        if ck > _CFG_COMPACT:
            raise FrameError('unknown_key', errmsg(32, ck))
        name = CONFIG_FIELDS[ck]
        if ck == _CFG_L or ck == _CFG_STEP or ck == _CFG_LAMBDA:
            v, off = _read_f32(data, off, name)
        elif ck == _CFG_PROFILE or ck == _CFG_METRIC:
            v, off = read_tstr(data, off, name)
        elif ck == _CFG_ERROR_FEEDBACK or ck == _CFG_COMPACT:
            v, off = read_bool(data, off, name)
        else:
            v, off = read_uint(data, off, name)
            if ck == _CFG_SCHEME:
                lim = 3
            elif ck == _CFG_RULE:
                lim = 5
            elif ck == _CFG_FMT or ck == _CFG_MODEL:
                lim = 1
            else:
                lim = -1
            if lim >= 0 and v > lim:
                raise FrameError('bad_value', errmsg(46, (name, v, lim)))
        out[name] = v
    return out, off


def _check_d(d):
    if d < 1 or d > _D_MAX:
        raise FrameError('bad_d', errmsg(155, d))


def _model_keys(f, job, model_d):
    """The checks on a model message's fields (from _fields) before its body is looked at:
    required and allowed keys for its kind, job (unless None), d; returns (kind, d)."""
    if _K_VERSION not in f or _K_KIND not in f:
        raise FrameError('missing_key', errmsg(19))
    kind = f[_K_KIND]
    if kind == _KIND_SNAPSHOT:
        need = (_K_VERSION, _K_KIND, _K_JOB, _K_ROUND, _K_D, _K_MODEL)
    else:
        need = (_K_VERSION, _K_KIND, _K_JOB, _K_ROUND, _K_D, _K_T, _K_FMT, _K_VALUES)
    for k in need:
        if k not in f:
            raise FrameError('missing_key', 'key %d' % k)
    for k in f:
        if k not in need and (kind == _KIND_SNAPSHOT or (k != _K_IDX_PACKED and k != _K_IDX_BITMAP)):
            raise FrameError('unknown_key', errmsg(33, (k, kind)))
    if job is not None and f[_K_JOB] != job:
        raise FrameError('job_mismatch', errmsg(20, (f[_K_JOB], job)))
    d = f[_K_D]
    _check_d(d)
    if d != model_d:
        raise FrameError('d_mismatch', errmsg(21, (d, model_d)))
    return kind, d


def peek(data):
    """(kind, round) of a downlink message without its MAC checked, -1 for one it lacks:
    routing only (edge.pushlinks.Inbox); the MAC is checked when the message is applied."""
    p, end = _open(data, None)
    f = {}
    _fields(data, p, end, (_KIND_CONFIG, _KIND_SNAPSHOT, _KIND_DELTA), f, _K_ROUND)
    return f.get(_K_KIND, -1), f.get(_K_ROUND, -1)


def decode_config(data, key):
    """Verify a config message (kid 'gw') and return a dict: job, round and CONFIG_FIELDS."""
    p, end = _open(data, key)
    f = {}
    _fields(data, p, end, (_KIND_CONFIG,), f)
    if _K_VERSION not in f or _K_JOB not in f or _K_ROUND not in f or _K_CONFIG not in f:
        raise FrameError('missing_key', errmsg(22))
    out = f[_K_CONFIG]
    if 'compact' not in out:
        out['compact'] = False  # key 16 is optional (configs from before it: false)
    for name in CONFIG_FIELDS:
        if name not in out:
            raise FrameError('missing_key', errmsg(34, name))
    _check_d(out['d'])
    out['job'] = f[_K_JOB]
    out['round'] = f[_K_ROUND]
    return out


def _iter_packed(data, s, T, b):
    acc = 0
    nb = 0
    o = s
    k = 0
    while k < T:
        j = 0
        need = b
        while need:
            if nb == 0:
                acc = data[o]
                o += 1
                nb = 8
            take = need if need < nb else nb
            nb -= take
            j = (j << take) | ((acc >> nb) & ((1 << take) - 1))
            need -= take
        yield j
        k += 1
    if nb and (acc & ((1 << nb) - 1)):
        raise FrameError('padding', errmsg(23))


def _iter_bitmap(data, s, nbytes):
    i = 0
    while i < nbytes:
        byte = data[s + i]
        if byte:
            bit = 0
            while bit < 8:
                if byte & (1 << bit):
                    yield (i << 3) | bit
                bit += 1
        i += 1


def _indices(data, code, s, T, d):
    if code == _K_IDX_BITMAP:
        return _iter_bitmap(data, s, (d + 7) >> 3)
    return _iter_packed(data, s, T, index_bits(d))


def apply_model(data, key, model, version, job=None, observe=None):
    """Verify a snapshot or delta (kid 'gw') and apply it to the array('f') model in place.

    Snapshot: overwrites model, returns its version (older than `version` -> VersionMismatch;
    pass version=-1 when there is no model yet). Delta: applies only if its base == version,
    x[j] = float32(x[j] + v), and returns base + 1; otherwise raises VersionMismatch so the
    caller falls back to the snapshot. Everything is validated before model is touched.
    observe(j, -v), if given, sees every applied delta entry in ascending j: the averaged
    update the gateway subtracted there (rule catavg's edge.catavg.Agreement.seen)."""
    p, end = _open(data, key)
    f = {}
    _fields(data, p, end, (_KIND_SNAPSHOT, _KIND_DELTA), f)
    kind, d = _model_keys(f, job, len(model))
    rnd = f[_K_ROUND]
    if kind == _KIND_SNAPSHOT:
        s, n = f[_K_MODEL]
        if n != 4 * d:
            raise FrameError('values_length', errmsg(35, (n, 4 * d)))
        if version >= 0 and rnd < version:
            raise VersionMismatch(rnd, version)
        j = 0
        while j < d:
            if not _f32_finite(data, s + 4 * j):
                raise FrameError('non_finite', errmsg(41, j))
            j += 1
        j = 0
        while j < d:
            model[j] = struct.unpack_from('<f', data, s + 4 * j)[0]
            j += 1
        return rnd
    # delta
    T = f[_K_T]
    fmt = f[_K_FMT]
    if fmt > _FMT_F16:
        raise FrameError('bad_fmt', errmsg(156, fmt))
    if T > d:
        raise FrameError('t_gt_d', errmsg(24, (T, d)))
    code, nbytes = index_code(d, T)
    if (_K_IDX_PACKED in f) + (_K_IDX_BITMAP in f) != 1 or code not in f:
        raise FrameError('index_code', errmsg(25, (code, d, T)))
    s, n = f[code]
    if n != nbytes:
        raise FrameError('index_length', errmsg(26, (n, nbytes)))
    w = 2 if fmt == _FMT_F16 else 4
    vs, vn = f[_K_VALUES]
    if vn != T * w:
        raise FrameError('values_length', errmsg(27, (vn, T * w)))
    if rnd != version:
        raise VersionMismatch(rnd, version)
    # pass 1: validate indices and values
    cnt = 0
    prev = -1
    for j in _indices(data, code, s, T, d):
        if j <= prev:
            raise FrameError('index_order', errmsg(36))
        if j >= d:
            raise FrameError('index_range', errmsg(37, (j, d)))
        prev = j
        cnt += 1
    if cnt != T:
        raise FrameError('index_length', errmsg(28, (cnt, T)))
    k = 0
    while k < T:
        o = vs + w * k
        if fmt == _FMT_F16:
            ok = (data[o + 1] & 0x7C) != 0x7C
        else:
            ok = _f32_finite(data, o)
        if not ok:
            raise FrameError('non_finite', errmsg(38, k))
        k += 1
    # pass 2: apply in float32 (array('f') rounds the sum to binary32)
    if fmt == _FMT_F16:
        from edge.f16 import f16_value  # only float16 jobs load it
    k = 0
    for j in _indices(data, code, s, T, d):
        o = vs + w * k
        if fmt == _FMT_F16:
            v = f16_value(data[o] | (data[o + 1] << 8))
        else:
            v = struct.unpack_from('<f', data, o)[0]
        model[j] = model[j] + v
        if observe is not None:
            observe(j, -v)
        k += 1
    return rnd + 1


from edge.cbor import publish  # noqa: E402
publish(globals())  # CPython: the constants by their public names
del publish
