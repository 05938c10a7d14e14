# Tiny CBOR (RFC 8949) writer and reader: only what the cat-iot wire format needs.
#
# Runs unchanged on MicroPython (1.25+) and CPython. Writers put bytes straight into a
# caller's preallocated bytearray at an offset and return the new offset; the reader walks
# a bytes-like object with an offset, so nothing builds a tree of the whole message.
#
# Deterministic encoding (RFC 8949 §4.2.1): arguments always in the shortest form,
# definite lengths only. The reader enforces the same rules (a non-shortest head,
# an indefinite length or a float is refused), because a frame's length must be a function
# of its meaning (docs/wire-format.md §"Determinism").

try:
    from micropython import const
    # A full collection before a block that must be in one piece: a board's heap fragments
    # (docs/firmware.md, "What was changed in edge/"). On CPython it is a no-op: its allocator
    # does not fragment that way, and a full collection of a process holding many nodes (the
    # fleet tests) costs tens of milliseconds each.
    from gc import collect
except ImportError:  # CPython
    def collect():
        pass

    def const(x):
        return x

# Integer constants are `_NAME = const(v)` in the edge modules: MicroPython folds them into
# the bytecode, so they take no entry in the module's dict (RAM on a board); publish() gives
# them their public names on CPython, where the gateway, tools and tests read them.

# Major types (RFC 8949 §3.1)
_MT_UINT = const(0)
_MT_NINT = const(1)
_MT_BSTR = const(2)
_MT_TSTR = const(3)
_MT_ARRAY = const(4)
_MT_MAP = const(5)
_MT_TAG = const(6)
_MT_SIMPLE = const(7)

_SIMPLE_FALSE = const(20)  # RFC 8949 §3.3: simple values 20/21 are false/true
_SIMPLE_TRUE = const(21)


def publish(g):
    """CPython: every private int constant `_NAME` in the module globals g also as NAME. A
    module calls it last, unguarded: on MicroPython the constants are folded away (there is
    nothing to publish), and a guard naming one of them would intern that name as a qstr."""
    import sys
    if sys.implementation.name == "micropython":
        return
    for n in list(g):
        if n[:1] == "_" and n[1:2] != "_" and n[1:].isupper() and type(g[n]) is int:
            g[n[1:]] = g[n]


def errmsg(n, args=()):
    """Message n of edge/errtext.py, formatted with args (as `text % args`).

    The messages of errors a board round never meets (malformed messages and files, bad
    arguments) live there, not as string constants in the modules that raise them: as .mpy
    each constant is a str object in a board's heap, loaded with its module (~200 of them,
    docs/firmware.md "The code a round imports"). On MicroPython errtext is imported when an
    error is raised and let go again; if that finds no memory, the error carries its number
    instead. CPython keeps it (no import races between threads)."""
    try:
        from edge.errtext import TEXT
        t = TEXT[n] % args
    except MemoryError:
        t = 'edge error %d %r' % (n, args)
    drop('edge.errtext', 'errtext')
    return t


def drop(mod, name):
    """MicroPython: forget the module mod = edge.<name> (sys.modules and the package's reference),
    so that its code is collected once nothing else holds it; the next import loads it again.
    For code a board needs rarely and briefly (errtext, snapshot, onair). Both names are given
    so that it allocates nothing (errmsg calls it with the heap full). CPython keeps it (no
    import races between threads)."""
    import sys
    if sys.implementation.name == 'micropython':
        sys.modules.pop(mod, None)
        import edge
        try:
            delattr(edge, name)    # the package's reference to its submodule
        except (AttributeError, KeyError):  # not there (MicroPython raises KeyError)
            pass


class FrameError(ValueError):
    """A message was refused. `reason` is a short stable identifier (see docs/wire-format.md)."""

    def __init__(self, reason, detail=''):
        if detail:
            super().__init__(reason + ': ' + detail)
        else:
            super().__init__(reason)
        self.reason = reason
        self.detail = detail


class DataFileError(ValueError):
    """A CATD file is missing, truncated, corrupt or not a CATD file (edge.datafile's name for
    it; here because edge.dataheader, which a board lets go after the file is open, raises it
    too, and one class must outlive both)."""


def head_len(v):
    """Bytes taken by a CBOR head whose argument is v (RFC 8949 §3: 1, 2, 3, 5 or 9)."""
    if v < 24:
        return 1
    if v < 0x100:
        return 2
    if v < 0x10000:
        return 3
    if v < 0x100000000:
        return 5
    return 9


def put_head(buf, off, major, v):
    """Write the shortest head for (major, argument v) at buf[off:]; return the new offset."""
    if v < 0:
        raise ValueError(errmsg(48))
    mt = major << 5
    if v < 24:
        buf[off] = mt | v
        return off + 1
    if v < 0x100:
        buf[off] = mt | 24
        buf[off + 1] = v
        return off + 2
    if v < 0x10000:
        buf[off] = mt | 25
        buf[off + 1] = v >> 8
        buf[off + 2] = v & 0xFF
        return off + 3
    if v < 0x100000000:
        buf[off] = mt | 26
        buf[off + 1] = (v >> 24) & 0xFF
        buf[off + 2] = (v >> 16) & 0xFF
        buf[off + 3] = (v >> 8) & 0xFF
        buf[off + 4] = v & 0xFF
        return off + 5
    if v < 0x10000000000000000:
        buf[off] = mt | 27
        s = 56
        i = 1
        while i < 9:
            buf[off + i] = (v >> s) & 0xFF
            s -= 8
            i += 1
        return off + 9
    raise ValueError(errmsg(47))


def put_uint(buf, off, v):
    return put_head(buf, off, _MT_UINT, v)


def put_kv_uint(buf, off, key, v):
    """Map entry with a small uint key and a uint value."""
    off = put_head(buf, off, _MT_UINT, key)
    return put_head(buf, off, _MT_UINT, v)


def put_bytes(buf, off, data):
    """A whole bstr (head + content)."""
    n = len(data)
    off = put_head(buf, off, _MT_BSTR, n)
    buf[off:off + n] = data
    return off + n


def read_head(data, off):
    """Read one head at data[off]: return (major, argument, new_offset).

    Refuses indefinite lengths, reserved additional information, floats and any argument
    not in its shortest form (FrameError 'not_cbor' / 'not_deterministic')."""
    n = len(data)
    if off >= n:
        raise FrameError('not_cbor', errmsg(49, off))
    ib = data[off]
    major = ib >> 5
    ai = ib & 0x1F
    off += 1
    if ai < 24:
        return major, ai, off
    if major == _MT_SIMPLE and ai >= 25:
        if ai <= 27:
            raise FrameError('wrong_type', errmsg(60, off - 1))
        raise FrameError('not_cbor', errmsg(50, off - 1))
    if ai > 27:
        raise FrameError('not_deterministic', errmsg(51, off - 1))
    w = 1 << (ai - 24)  # 1, 2, 4 or 8 bytes
    if off + w > n:
        raise FrameError('not_cbor', errmsg(52, off - 1))
    v = 0
    i = 0
    while i < w:
        v = (v << 8) | data[off + i]
        i += 1
    # shortest form: a 1-byte argument must be >= 24, a 2-byte one >= 256, ...
    if (w == 1 and v < 24) or (w > 1 and v < (1 << (4 * w))):
        raise FrameError('not_deterministic', errmsg(53, off - 1))
    if major == _MT_SIMPLE:
        raise FrameError('wrong_type', errmsg(54, off - 1))
    return major, v, off + w


def read_uint(data, off, what):
    major, v, off = read_head(data, off)
    if major != _MT_UINT:
        raise FrameError('wrong_type', errmsg(55, what))
    return v, off


def read_bstr(data, off, what):
    """Return (start, length, new_offset) of a bstr's content; the bytes stay in data."""
    major, n, off = read_head(data, off)
    if major != _MT_BSTR:
        raise FrameError('wrong_type', errmsg(56, what))
    if off + n > len(data):
        raise FrameError('not_cbor', errmsg(57, what))
    return off, n, off + n


def read_tstr(data, off, what):
    major, n, off = read_head(data, off)
    if major != _MT_TSTR:
        raise FrameError('wrong_type', errmsg(58, what))
    if off + n > len(data):
        raise FrameError('not_cbor', errmsg(57, what))
    try:
        s = bytes(data[off:off + n]).decode('utf-8')
    except Exception:
        raise FrameError('wrong_type', errmsg(61, what))
    return s, off + n


def read_bool(data, off, what):
    major, v, off = read_head(data, off)
    if major != _MT_SIMPLE or (v != _SIMPLE_TRUE and v != _SIMPLE_FALSE):
        raise FrameError('wrong_type', errmsg(59, what))
    return v == _SIMPLE_TRUE, off


publish(globals())  # CPython: the constants by their public names
