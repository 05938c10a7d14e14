"""CRC-32 (IEEE 802.3, as zlib.crc32) in pure Python: edge.datafile's fallback for ports built
without binascii.crc32, loaded only there. MicroPython and CPython.
"""

from array import array


def _crc32_table():
    t = array("I", bytes(1024))
    for i in range(256):
        c = i
        for _ in range(8):
            if c & 1:
                c = 0xEDB88320 ^ (c >> 1)
            else:
                c >>= 1
        t[i] = c
    return t


_TABLE = None


def crc32_py(buf, crc=0):
    """CRC-32 (IEEE 802.3, as zlib.crc32) in pure Python: fallback for ports
    built without binascii.crc32."""
    global _TABLE
    if _TABLE is None:
        _TABLE = _crc32_table()
    t = _TABLE
    c = crc ^ 0xFFFFFFFF
    for b in buf:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF
