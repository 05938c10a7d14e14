"""CATD helpers a board's round never runs: the full check of a file and the header writer
(aggregator/lab/datasets.py writes files with it). MicroPython and CPython.
"""

import struct

from edge.datafile import DataFileError
from edge.dataheader import HEADER_FMT, MAGIC, const, crc32

# edge.dataheader's header constants (folded there on MicroPython: no module attributes to import)
_CATD_VERSION = const(1)
_HEADER_SIZE = const(48)
_HEADER_CRC_SPAN = const(44)
_LAYOUT_CSR = const(1)
_LABEL_U32 = const(1)
_VALUE_F32 = const(1)


def pack_header(layout, n, d, classes, max_nnz, total_nnz, data_crc):
    """The 48 header bytes (the writer in aggregator/lab/datasets.py uses this too)."""
    head = struct.pack(
        HEADER_FMT, MAGIC, _CATD_VERSION, _HEADER_SIZE, layout, _LABEL_U32, _VALUE_F32, 0,
        n, d, classes, max_nnz, total_nnz, data_crc & 0xFFFFFFFF, 0, 0,
    )
    hcrc = crc32(head[:_HEADER_CRC_SPAN])
    return head[:_HEADER_CRC_SPAN] + struct.pack("<I", hcrc)


def validate(df, chunk=512):
    """Full check of an open DataFile: data CRC-32, then every row's labels, indices (strictly
    ascending, < d), values (finite) and the total nnz. Raises DataFileError.
    Leaves the file rewound."""
    f = df._f
    f.seek(df.header_size)
    buf = bytearray(chunk)
    left = df.size - df.header_size
    c = 0
    while left > 0:
        k = chunk if left > chunk else left
        got = f.readinto(buf)
        if not got or got < k:
            raise DataFileError("%s: truncated while checking CRC" % df.path)
        c = crc32(buf if k == chunk else memoryview(buf)[:k], c)
        left -= k
    if c != df.data_crc:
        raise DataFileError("%s: data CRC-32 mismatch (file corrupt)" % df.path)
    total = 0
    d = df.d
    vals = df.values
    idx = df.index
    csr = df._layout_code == _LAYOUT_CSR
    df.rewind()
    while True:
        y = df.read_row()
        if y < 0:
            break
        nnz = df.nnz
        total += nnz
        prev = -1
        for k in range(nnz):
            v = vals[k]
            if v != v or v - v != 0.0:
                raise DataFileError("%s: row %d has a non-finite value" % (df.path, df.row - 1))
            if csr:
                j = idx[k]
                if j <= prev or j >= d:
                    raise DataFileError("%s: row %d has index %d out of order or >= d %d" % (df.path, df.row - 1, j, d))
                prev = j
    if total != df.total_nnz:
        raise DataFileError("%s: rows hold %d entries, header says %d" % (df.path, total, df.total_nnz))
    df.rewind()
