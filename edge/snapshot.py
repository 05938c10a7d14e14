"""A snapshot applied block by block (edge.frame's downlink walk over the first block of one):
a module of its own, imported by edge.node only when it syncs by snapshot (the first round, or
after missed rounds), so a board's steady rounds by delta do not hold its code. MicroPython and
CPython.
"""

import struct

from edge import cose
from edge.cbor import FrameError, const, errmsg
from edge.frame import _f32_finite, _fields, _model_keys

_SUFFIX = const(9)          # edge.cose: 48 + the 8-byte tag (as in edge.frame)
_KIND_SNAPSHOT = const(2)   # edge.frame's message kinds and keys (folded: no dict entries)
_KIND_DELTA = const(3)
_K_ROUND = const(4)
_K_MODEL = const(16)


class SnapshotSink:
    """A snapshot (kind 2) received in pieces, e.g. CoAP Block2 blocks, and applied without
    ever holding the whole message: on a board the message (4 d bytes) and its copies are the
    largest allocation of a round, next to the model and gradient themselves.

    feed(piece) for every piece, in order; finish() returns the snapshot's version. The
    model's floats go to `stage`, an array('f') of at least d entries (the edge's gradient
    buffer, idle while it syncs); the MAC is computed as the bytes pass, and `model` is
    written only after the MAC and the checks apply_model(data, key, model, -1, job) makes,
    with the same reasons. Envelope errors raise from feed, everything else from finish.
    """

    HEAD = 64  # envelope + payload map up to the model bstr's content: <= 51 bytes

    def __init__(self, key, model, stage, job=None):
        if len(stage) < len(model):
            raise ValueError(errmsg(96, (len(stage), len(model))))
        self.key = key
        self.model = model
        self.stage = stage
        self.job = job
        self.head = bytearray(self.HEAD)
        self.hlen = 0
        self.n = 0              # message bytes seen
        self.parsed = False
        self.h = None
        self.opad = None
        self.suffix = bytearray(_SUFFIX)
        self.carry = bytearray(4)
        self.nc = 0
        self.j = 0              # floats staged
        self.bad_float = -1     # first non-finite float
        self.err = None         # first payload error (raised after the MAC checks out)

    def feed(self, piece):
        mv = memoryview(piece)
        if not self.parsed:
            k = len(mv)
            room = self.HEAD - self.hlen
            if k > room:
                k = room
            self.head[self.hlen:self.hlen + k] = mv[:k]
            self.hlen += k
            self.n += k
            if self.hlen < self.HEAD:
                return
            self._parse(False)
            self._body(memoryview(self.head)[self.fs:], self.fs)
            mv = mv[k:]
        if len(mv):
            pos = self.n
            self.n += len(mv)
            self._body(mv, pos)

    def _parse(self, final):
        """Envelope (errors raise now, as cose.verify's parse does) and the payload map up
        to the model bstr (errors kept for after the MAC)."""
        data = memoryview(self.head)[:self.hlen]
        try:
            kid, off, blen = cose.parse_head(data)
        except (FrameError, IndexError) as e:
            if isinstance(e, FrameError) and (e.reason != 'not_cbor' or final):
                raise
            raise FrameError('structure', errmsg(72))
        cose.check_kid(kid, cose.KID_GW)
        self.pay = off
        self.pend = off + blen
        self.h, self.opad = cose.mac_begin(self.key, blen)
        self.parsed = True
        self._map(data, off)
        # the payload bytes already in head go through the MAC now
        end = self.hlen if self.hlen < self.pend else self.pend
        if end > self.pay:
            self.h.update(data[self.pay:end])
        self._hashed = end

    def _map(self, data, off):
        # The payload map up to the model bstr, its errors kept for after the MAC. (Each of
        # these methods is short: a board loads this module into the holes of a full heap.)
        self.f = {}
        self.fs = self.fe = self.pend   # no model bytes unless key 16 is found
        try:
            _fields(data, off, self.pend, (_KIND_SNAPSHOT, _KIND_DELTA), self.f, -1, True)
        except (FrameError, IndexError) as e:
            if not isinstance(e, FrameError) or e.reason == 'not_cbor':
                e = FrameError('structure', 'snapshot header truncated or longer than %d bytes' % self.HEAD)
            self.err = e
        m = self.f.get(_K_MODEL)
        if self.err is None and m is not None and m[1] == 4 * len(self.model):
            self.fs = m[0]
            self.fe = m[0] + m[1]

    def _body(self, mv, pos):
        """Bytes at message offset pos: MAC, floats to stage, tag."""
        end = pos + len(mv)
        pend = self.pend
        a = self._hashed if self._hashed > pos else pos
        b = end if end < pend else pend
        if b > a:
            self.h.update(mv[a - pos:b - pos])
            self._hashed = b
        a = self.fs if self.fs > pos else pos
        b = end if end < self.fe else self.fe
        if b > a:
            self._floats(mv[a - pos:b - pos])
        if end > pend:
            a = pend if pend > pos else pos
            while a < end:
                k = a - pend
                if k < _SUFFIX:
                    self.suffix[k] = mv[a - pos]
                a += 1

    def _floats(self, mv):
        c = self.carry
        nc = self.nc
        i = 0
        m = len(mv)
        while i < m:
            if nc or m - i < 4:
                c[nc] = mv[i]
                nc += 1
                i += 1
                if nc == 4:
                    self._put(c, 0)
                    nc = 0
            else:
                self._put(mv, i)
                i += 4
        self.nc = nc

    def _put(self, buf, off):
        if self.bad_float < 0 and not _f32_finite(buf, off):
            self.bad_float = self.j
        self.stage[self.j] = struct.unpack_from('<f', buf, off)[0]
        self.j += 1

    def finish(self):
        """Check everything, copy the staged model in; return the snapshot's version."""
        if not self.parsed:
            self._parse(True)
            self._body(memoryview(self.head)[self.fs:self.hlen], self.fs)
        self._check_mac()
        d = self._check_payload()
        model = self.model
        stage = self.stage
        j = 0
        while j < d:
            model[j] = stage[j]
            j += 1
        return self.f[_K_ROUND]

    def _check_mac(self):
        # the message's length, the tag's head, the tag itself
        total = self.pend + _SUFFIX
        if self.n < total:
            raise FrameError('structure', errmsg(72))
        if self.suffix[0] != 0x48:
            raise FrameError('structure', errmsg(73))
        if self.n > total:
            raise FrameError('trailing_bytes', errmsg(74, self.n - total))
        if not cose.ct_equal(cose.mac_end(self.h, self.opad), memoryview(self.suffix)[1:]):
            raise FrameError('bad_mac', errmsg(75))

    def _check_payload(self):
        # what apply_model checks after the MAC: kind, job, d, the values; returns d
        if self.err is not None:
            raise self.err
        f = self.f
        kind, d = _model_keys(f, self.job, len(self.model))
        if kind != _KIND_SNAPSHOT:
            raise FrameError('bad_kind', errmsg(97))
        n = f[_K_MODEL][1]
        if n != 4 * d:
            raise FrameError('values_length', errmsg(35, (n, 4 * d)))
        if self.bad_float >= 0:
            raise FrameError('non_finite', errmsg(41, self.bad_float))
        return d
