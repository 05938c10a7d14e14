"""Reader for CATD binary data files, row by row into ONE preallocated buffer.

Format: docs/data-format.md (little-endian, 48-byte header, dense or CSR rows).
A board has tens of KiB of heap, so a node's data is never loaded at once: every
row is read with `readinto` straight into the memory of preallocated arrays
(`values`: array('f'), `index`: array('I') for CSR), sized once from the header
(d for dense, the header's max nnz per row for CSR). Reading a row allocates
nothing on MicroPython (its stream `readinto(buf, nbytes)` takes a length).

Integrity is checked early, at open (edge/dataheader.py): magic, version, a CRC-32 of the
header, and the file size against the size the header implies (so a truncated copy fails at
open, not mid-training). Each row is checked cheaply as it is read (nnz <= max nnz, label <
classes); edge.datatools.validate does a full pass (CRC-32 of the data, indices strictly
ascending and < d, finite values, total nnz).

Runs unchanged on MicroPython and CPython. Assumes a little-endian host on
MicroPython (all its ports are); CPython byte-swaps on big-endian hosts.
"""

import sys
from array import array

from edge.cbor import DataFileError, drop, errmsg

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# edge.dataheader's layout codes (folded there on MicroPython: no module attributes to import)
_LAYOUT_DENSE = const(0)
_LAYOUT_CSR = const(1)
LAYOUT_NAMES = ("dense", "csr")

_MP = sys.implementation.name == "micropython"
_SWAP = sys.byteorder != "little"


def zeros(typecode, n):
    """A zero-filled array('f') or array('I') of n items (MicroPython has no array(tc, int));
    sized from len(range(n)), so no n-item temporary doubles the peak on a board."""
    a = array(typecode, range(n))
    for i in range(n):
        a[i] = 0
    return a


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
        # the header's checks run once, at open: a board lets their code go after
        from edge.dataheader import read
        try:
            f, h, size = read(path)
        finally:
            drop("edge.dataheader", "dataheader")
        self._f = f
        layout, n, d, classes, max_nnz, total, dcrc, hsize = h
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
