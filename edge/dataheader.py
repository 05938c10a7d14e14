"""The CATD header (docs/data-format.md): its layout, and the checks a file passes when it is
opened (magic, version, a CRC-32 of the header, the file size against the size the header
implies, so a truncated copy fails at open, not mid-training).

A module of its own because a board reads a header once, when edge.datafile.DataFile opens its
file at start-up: DataFile lets this code go after (edge.cbor.drop), so the rounds do not hold
it in the heap. The writer (edge/datatools.py) and the gateway's reader
(aggregator/lab/datasets.py) use the same layout from here. MicroPython and CPython.
"""

import struct

from edge.cbor import DataFileError, errmsg

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# private int constants: no dict entry on a board, public names on CPython (edge.cbor.publish;
# edge.datafile and edge.datatools keep copies of the ones they use)
MAGIC = b"CATD"
_CATD_VERSION = const(1)
_HEADER_SIZE = const(48)
# magic, version, header size, layout, label type, value type, reserved,
# n, d, classes, max nnz, total nnz (u64), data crc32, reserved, header crc32
HEADER_FMT = "<4sHHBBBBIIIIQIII"
_HEADER_CRC_SPAN = const(44)  # the header CRC covers bytes [0, 44)

_LAYOUT_DENSE = const(0)
_LAYOUT_CSR = const(1)
_LABEL_U32 = const(1)  # uint32 class index in [0, classes)
_VALUE_F32 = const(1)  # IEEE-754 binary32, little-endian

try:
    import binascii

    _crc = binascii.crc32
    _crc(b"")
except (ImportError, AttributeError):  # pragma: no cover - port without crc32
    _crc = None


def crc32(buf, crc=0):
    """CRC-32 of a bytes-like object, continuing from `crc`."""
    if _crc is not None:
        return _crc(buf, crc) & 0xFFFFFFFF
    from edge.crc32 import crc32_py  # only a port without binascii.crc32 loads it
    return crc32_py(buf, crc)


def parse_header(head, where="datafile"):
    """Decode and check 48 header bytes; returns a tuple
    (layout, n, d, classes, max_nnz, total_nnz, data_crc, header_size)."""
    if len(head) < _HEADER_SIZE:
        raise DataFileError(errmsg(76, (where, len(head), _HEADER_SIZE)))
    f = struct.unpack(HEADER_FMT, head[:_HEADER_SIZE])
    if f[0] != MAGIC:
        raise DataFileError(errmsg(77, (where, f[0], MAGIC)))
    if f[1] != _CATD_VERSION:
        raise DataFileError(errmsg(78, (where, f[1], _CATD_VERSION)))
    if crc32(head[:_HEADER_CRC_SPAN]) != f[14]:
        raise DataFileError(errmsg(79, where))
    hsize, layout, ltype, vtype = f[2], f[3], f[4], f[5]
    n, d, classes, max_nnz, total = f[7], f[8], f[9], f[10], f[11]
    if hsize < _HEADER_SIZE:
        raise DataFileError(errmsg(80, (where, hsize, _HEADER_SIZE)))
    if layout != _LAYOUT_DENSE and layout != _LAYOUT_CSR:
        raise DataFileError(errmsg(81, (where, layout)))
    if ltype != _LABEL_U32:
        raise DataFileError(errmsg(82, (where, ltype)))
    if vtype != _VALUE_F32:
        raise DataFileError(errmsg(83, (where, vtype)))
    if d < 1:
        raise DataFileError(errmsg(84, (where, d)))
    if classes < 2:
        raise DataFileError(errmsg(85, (where, classes)))
    if max_nnz > d:
        raise DataFileError(errmsg(86, (where, max_nnz, d)))
    if layout == _LAYOUT_DENSE:
        if max_nnz != d or total != n * d:
            raise DataFileError(errmsg(87, where))
    elif total > n * max_nnz:
        raise DataFileError(errmsg(88, (where, total, n * max_nnz)))
    return layout, n, d, classes, max_nnz, total, f[12], hsize


def expected_size(layout, n, d, total_nnz, header_size=_HEADER_SIZE):
    """File size in bytes that a header implies."""
    if layout == _LAYOUT_DENSE:
        return header_size + n * (4 + 4 * d)
    return header_size + 8 * n + 8 * total_nnz


def read(path):
    """(file, parse_header's tuple, size) of the CATD file at path, opened for reading, its
    header and size checked; the file is closed again when a check fails."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise DataFileError(errmsg(93, (path, e)))
    try:
        h = parse_header(f.read(_HEADER_SIZE), path)
        size = f.seek(0, 2)
        if size is None:  # pragma: no cover - very old stream API
            size = f.tell()
        exp = expected_size(h[0], h[1], h[2], h[5], h[7])
        if size < exp:
            raise DataFileError(errmsg(94, (path, exp, size)))
        if size > exp:
            raise DataFileError(errmsg(89, (path, size - exp, exp)))
    except Exception:
        f.close()
        raise
    return f, h, size


from edge.cbor import publish  # noqa: E402
publish(globals())  # CPython: the constants by their public names
del publish
