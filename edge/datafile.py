"""Reader for CATD binary data files, row by row into ONE preallocated buffer.

Format: docs/data-format.md (little-endian, 48-byte header, dense or CSR rows).
A board has tens of KiB of heap, so a node's data is never loaded at once: every
row is read with `readinto` straight into the memory of preallocated arrays
(`values`: array('f'), `index`: array('I') for CSR), sized once from the header
(d for dense, the header's max nnz per row for CSR). Reading a row allocates
nothing on MicroPython (its stream `readinto(buf, nbytes)` takes a length).

Integrity is checked early: magic, version, a CRC-32 of the header, and the file
size against the size the header implies (so a truncated copy fails at open, not
mid-training). Each row is checked cheaply as it is read (nnz <= max nnz, label <
classes); edge.datatools.validate does a full pass (CRC-32 of the data, indices strictly
ascending and < d, finite values, total nnz).

Runs unchanged on MicroPython and CPython. Assumes a little-endian host on
MicroPython (all its ports are); CPython byte-swaps on big-endian hosts.
"""

import struct
import sys
from array import array

from edge.cbor import errmsg

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# private int constants: no dict entry on a board, public names on CPython (edge.cbor.publish;
# edge.datatools, the writer, keeps its own copies)
MAGIC = b"CATD"
_CATD_VERSION = const(1)
_HEADER_SIZE = const(48)
# magic, version, header size, layout, label type, value type, reserved,
# n, d, classes, max nnz, total nnz (u64), data crc32, reserved, header crc32
HEADER_FMT = "<4sHHBBBBIIIIQIII"
_HEADER_CRC_SPAN = const(44)  # the header CRC covers bytes [0, 44)

_LAYOUT_DENSE = const(0)
_LAYOUT_CSR = const(1)
LAYOUT_NAMES = ("dense", "csr")
_LABEL_U32 = const(1)  # uint32 class index in [0, classes)
_VALUE_F32 = const(1)  # IEEE-754 binary32, little-endian

_MP = sys.implementation.name == "micropython"
_SWAP = sys.byteorder != "little"


class DataFileError(ValueError):
    """A CATD file is missing, truncated, corrupt or not a CATD file."""


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


def zeros(typecode, n):
    """A zero-filled array of n items (MicroPython has no array(tc, int)); sized from
    len(range(n)), so no n-item temporary doubles the peak on a board."""
    if typecode in "bBhH":  # range(n) would overflow these; they are never d-sized here
        return array(typecode, bytes((1 if typecode in "bB" else 2) * n))
    a = array(typecode, range(n))
    for i in range(n):
        a[i] = 0
    return a


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


class DataFile:
    """A CATD file opened for streaming.

    Attributes: n, d, classes, layout ("dense"|"csr"), max_nnz, total_nnz.
    Row buffers (reused for every row): `values` array('f') of d (dense) or
    max_nnz (csr) items, `index` array('I') of max_nnz items (csr; None for
    dense). After `read_row()` the current row is values[:nnz] (and index[:nnz]).

        df = DataFile("node-0.catd")
        df.rewind()
        while True:
            y = df.read_row()      # class label, or -1 after the last row
            if y < 0:
                break
            ...  df.nnz, df.values, df.index
    """

    def __init__(self, path):
        self.path = path
        try:
            f = open(path, "rb")
        except OSError as e:
            raise DataFileError(errmsg(93, (path, e)))
        self._f = f
        try:
            head = f.read(_HEADER_SIZE)
            h = parse_header(head, path)
            size = f.seek(0, 2)
            if size is None:  # pragma: no cover - very old stream API
                size = f.tell()
        except Exception:
            f.close()
            raise
        layout, n, d, classes, max_nnz, total, dcrc, hsize = h
        exp = expected_size(layout, n, d, total, hsize)
        if size != exp:
            f.close()
            if size < exp:
                raise DataFileError(errmsg(94, (path, exp, size)))
            raise DataFileError(errmsg(89, (path, size - exp, exp)))
        self._layout_code = layout
        self.layout = LAYOUT_NAMES[layout]
        self.n = n
        self.d = d
        self.classes = classes
        self.max_nnz = max_nnz
        self.total_nnz = total
        self.data_crc = dcrc
        self.header_size = hsize
        self.size = size
        self.values = zeros("f", max_nnz if layout == _LAYOUT_CSR else d)
        self.index = zeros("I", max_nnz) if layout == _LAYOUT_CSR else None
        self._hdr = zeros("I", 2)
        if _MP:
            self._vv = self._iv = self._hv = None
        else:  # CPython file readinto takes no length: byte views to slice
            self._vv = memoryview(self.values).cast("B")
            self._iv = memoryview(self.index).cast("B") if self.index is not None else None
            self._hv = memoryview(self._hdr).cast("B")
        self.nnz = 0
        self.label = -1
        self.row = 0
        self.rewind()

    # -- context manager / lifetime --------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None

    def rewind(self):
        """Go back to the first row."""
        if self._f is None:
            raise DataFileError(errmsg(90, self.path))
        self._f.seek(self.header_size)
        self.row = 0
        self.nnz = 0
        self.label = -1

    # -- reading -----------------------------------------------------------
    def _fill(self, buf, view, nbytes):
        f = self._f
        if _MP:
            got = f.readinto(buf, nbytes)
        else:
            got = f.readinto(view[:nbytes])
        if got is None:
            got = 0
        # A CPython buffered file may return short reads; finish them. On
        # MicroPython a file read only comes back short at end of file (its VFS
        # drivers loop until the count is met), so that is a truncation.
        while got < nbytes and not _MP:
            more = f.readinto(view[got:nbytes])
            if not more:
                break
            got += more
        if got < nbytes:
            raise DataFileError(errmsg(91, (self.path, self.row)))
        if _SWAP:  # pragma: no cover - big-endian CPython only
            buf.byteswap()

    def read_row(self):
        """Read the next row into the buffers; return its label, or -1 after the
        last row. Sets self.nnz (number of entries) and self.label."""
        if self.row >= self.n:
            return -1
        hdr = self._hdr
        if self._layout_code == _LAYOUT_DENSE:
            self._fill(hdr, self._hv, 4)
            y = hdr[0]
            nnz = self.d
            self._fill(self.values, self._vv, 4 * nnz)
        else:
            self._fill(hdr, self._hv, 8)
            y = hdr[0]
            nnz = hdr[1]
            if nnz > self.max_nnz:
                raise DataFileError(errmsg(95, (self.path, self.row, nnz, self.max_nnz)))
            if nnz:
                self._fill(self.index, self._iv, 4 * nnz)
                self._fill(self.values, self._vv, 4 * nnz)
        if y >= self.classes:
            raise DataFileError(errmsg(92, (self.path, self.row, y, self.classes)))
        self.row += 1
        self.nnz = nnz
        self.label = y
        return y

    def rows(self):
        """Generator over the labels of all rows from the first (rewinds first);
        the row itself is in self.values / self.index / self.nnz."""
        self.rewind()
        while True:
            y = self.read_row()
            if y < 0:
                return
            yield y


if not _MP:  # CPython: the constants by their public names (no edge.cbor on a board's reader)
    from edge.cbor import publish
    publish(globals())
    del publish
