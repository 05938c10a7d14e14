"""IEEE 754 binary16 for the wire's fmt 1 (docs/wire-format.md): a module of its own, imported
only by jobs that send or receive float16 values, so a board on float32 does not hold its
code. MicroPython and CPython (no struct 'e' on MicroPython: the bits are computed).
"""

import struct

from edge.cbor import const

_FMT_F16 = const(1)  # edge.frame's value formats (folded: no dict entry)

_S = bytearray(4)  # scratch for float bit conversions


def _f32_halves(x):
    try:
        struct.pack_into('<f', _S, 0, x)
    except OverflowError:  # CPython refuses |x| > FLT_MAX; MicroPython gives inf
        struct.pack_into('<f', _S, 0, float('inf') if x > 0 else float('-inf'))
    return (_S[3] << 8) | _S[2], (_S[1] << 8) | _S[0]


def f16_bits(x):
    """binary16 bit pattern of x: x is first rounded to binary32, then to binary16 with
    round-to-nearest-even (IEEE 754 §4.3.1); overflow gives +-inf."""
    hi, lo = _f32_halves(x)
    sign = hi & 0x8000
    e = (hi >> 7) & 0xFF
    m = ((hi & 0x7F) << 16) | lo
    if e == 0xFF:
        return sign | 0x7C00 | (0x200 if m else 0)
    e16 = e - 112  # rebias 127 -> 15
    if e16 >= 31:
        return sign | 0x7C00
    if e16 <= 0:
        if e == 0:
            return sign
        shift = 14 - e16
        if shift > 24:
            return sign
        mm = m | 0x800000
        q = mm >> shift
        r = mm & ((1 << shift) - 1)
        half = 1 << (shift - 1)
        if r > half or (r == half and (q & 1)):
            q += 1
        return sign | q
    q = (e16 << 10) | (m >> 13)
    r = m & 0x1FFF
    if r > 0x1000 or (r == 0x1000 and (q & 1)):
        q += 1
    return sign | q


def f16_value(h):
    """The float whose binary16 bit pattern is h (exact)."""
    sign = h & 0x8000
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e == 0:
        if m == 0:
            e32 = 0
        else:
            e32 = 113
            while not (m & 0x400):
                m <<= 1
                e32 -= 1
            m &= 0x3FF
    elif e == 31:
        e32 = 0xFF
    else:
        e32 = e + 112
    f = m << 13
    struct.pack_into('<HH', _S, 0, f & 0xFFFF, sign | (e32 << 7) | (f >> 16))
    return struct.unpack_from('<f', _S, 0)[0]


def round_value(x, fmt):
    """The float the receiver decodes when x is sent in format fmt (FMT_F32 or FMT_F16).

    Compressors use it so that error-feedback residuals are exact. Out of range gives +-inf
    (which encode_update refuses)."""
    if fmt == _FMT_F16:
        return f16_value(f16_bits(x))
    try:
        struct.pack_into('<f', _S, 0, x)
    except OverflowError:
        return float('inf') if x > 0 else float('-inf')
    return struct.unpack_from('<f', _S, 0)[0]
