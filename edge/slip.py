"""SLIP framing (RFC 1055) for serial links, MicroPython and CPython.

A frame on the wire is END, the payload with END -> ESC ESC_END and ESC -> ESC ESC_ESC,
then END. The leading END is what RFC 1055 ("SEND_PACKET") recommends: it flushes line
noise received before the frame into a separate (bad) frame instead of the good one.

* ``encode_into(payload, out, pos=0)`` writes into a preallocated bytearray;
  ``write_frame(stream, payload, scratch)`` writes to anything with ``.write``
  (``machine.UART`` on a board, a pyserial ``Serial``, ``FdStream`` over a raw fd).
* ``SlipDecoder(max_frame)`` is incremental: feed it whatever a read returned (frames
  split across reads, several frames per read, empty frames, noise) and it returns the
  complete frames. A frame longer than ``max_frame`` is dropped up to the next END and
  counted in ``overflows``; an ESC followed by anything but ESC_END/ESC_ESC is a
  protocol violation and drops the frame (counted in ``bad_escapes``): the upper layer
  (CBOR + COSE MAC) would reject it anyway, so it is not passed on half-repaired.
"""

# RFC 1055, "SLIP special character codes"
END = 0xC0
ESC = 0xDB
ESC_END = 0xDC
ESC_ESC = 0xDD


def encoded_len(payload):
    """Bytes that ``encode_into`` writes for payload (two ENDs plus escapes)."""
    n = 2
    for b in payload:
        if b == END or b == ESC:
            n += 2
        else:
            n += 1
    return n


def encode_into(payload, out, pos=0):
    """Encode one frame into bytearray ``out`` at ``pos``; return the end position."""
    need = encoded_len(payload)
    if pos < 0 or pos + need > len(out):
        raise ValueError("SLIP buffer too small: need %d bytes at %d, have %d"
                         % (need, pos, len(out)))
    out[pos] = END
    pos += 1
    for b in payload:
        if b == END:
            out[pos] = ESC
            out[pos + 1] = ESC_END
            pos += 2
        elif b == ESC:
            out[pos] = ESC
            out[pos + 1] = ESC_ESC
            pos += 2
        else:
            out[pos] = b
            pos += 1
    out[pos] = END
    return pos + 1


def encode(payload):
    """Encode one frame into a new bytearray (convenience; allocates)."""
    out = bytearray(encoded_len(payload))
    encode_into(payload, out)
    return out


def write_all(stream, data, max_stalls=1000):
    """Write all of ``data`` to ``stream``, retrying short writes.

    ``stream.write`` may return fewer bytes, or None (a MicroPython UART or a
    non-blocking fd with nothing written); after ``max_stalls`` writes in a row that
    made no progress an OSError is raised instead of spinning forever."""
    mv = memoryview(data)
    off = 0
    n = len(mv)
    stalls = 0
    while off < n:
        w = stream.write(mv[off:])
        if w is None:
            # pyserial and io streams return the count; None means "nothing written"
            w = 0
        if w == 0:
            stalls += 1
            if stalls > max_stalls:
                raise OSError("SLIP write stalled after %d of %d bytes" % (off, n))
            continue
        stalls = 0
        off += w
    return n


def write_frame(stream, payload, scratch=None):
    """SLIP-encode payload and write it to stream; return the bytes written.

    Pass a preallocated ``scratch`` bytearray (at least ``encoded_len(payload)``) to
    avoid allocating on every frame."""
    need = encoded_len(payload)
    if scratch is None or len(scratch) < need:
        scratch = bytearray(need)
    end = encode_into(payload, scratch)
    return write_all(stream, memoryview(scratch)[:end])


class SlipDecoder:
    """Incremental SLIP decoder with a fixed-size frame buffer."""

    def __init__(self, max_frame=1024):
        if max_frame < 1:
            raise ValueError("max_frame must be >= 1, got %r" % (max_frame,))
        self.max_frame = max_frame
        self._buf = bytearray(max_frame)
        self._n = 0
        self._esc = False
        self._drop = False  # discarding until the next END (overflow or bad escape)
        self.frames = 0
        self.overflows = 0
        self.bad_escapes = 0
        self.empty = 0

    def reset(self):
        """Forget any partial frame."""
        self._n = 0
        self._esc = False
        self._drop = False

    @property
    def pending(self):
        """Bytes of the frame being received (0 between frames)."""
        return self._n

    def feed(self, data, on_frame=None):
        """Consume bytes; return the list of complete frames (bytes).

        With ``on_frame``, call ``on_frame(memoryview)`` for each frame instead and
        return how many there were; the memoryview is the decoder's own buffer and is
        valid only during the call (no copy, for small heaps)."""
        frames = None
        if on_frame is None:
            frames = []
        count = 0
        buf = self._buf
        maxf = self.max_frame
        for b in data:
            if b == END:
                if self._drop:
                    pass
                elif self._esc:
                    self.bad_escapes += 1  # ESC END: frame cut short
                elif self._n:
                    self.frames += 1
                    count += 1
                    if on_frame is None:
                        frames.append(bytes(memoryview(buf)[:self._n]))
                    else:
                        on_frame(memoryview(buf)[:self._n])
                else:
                    self.empty += 1  # back-to-back ENDs (RFC 1055): ignored
                self._n = 0
                self._esc = False
                self._drop = False
                continue
            if self._drop:
                continue
            if self._esc:
                self._esc = False
                if b == ESC_END:
                    b = END
                elif b == ESC_ESC:
                    b = ESC
                else:
                    self.bad_escapes += 1
                    self._drop = True
                    continue
            elif b == ESC:
                self._esc = True
                continue
            if self._n >= maxf:
                self.overflows += 1
                self._drop = True
                self._n = 0
                continue
            buf[self._n] = b
            self._n += 1
        if on_frame is None:
            return frames
        return count


def read_frames(stream, decoder, rbuf, on_frame=None):
    """Read once from ``stream`` into ``rbuf`` and feed the decoder.

    Returns what ``decoder.feed`` returns; a read that returned nothing (timeout)
    gives [] (or 0 with ``on_frame``)."""
    n = stream.readinto(rbuf)
    if not n:
        return [] if on_frame is None else 0
    return decoder.feed(memoryview(rbuf)[:n], on_frame)


class FdStream:
    """``read``/``readinto``/``write`` over a raw file descriptor (CPython, via os.read/os.write).

    On the MicroPython unix port (no os.read), open the tty with ``open(path, "rb")`` /
    ``open(path, "wb")`` instead, and read it with a 1-byte buffer: its
    ``FileIO.readinto`` waits until the whole buffer is filled."""

    def __init__(self, fd):
        import os

        self._os = os
        self.fd = fd

    def write(self, data):
        return self._os.write(self.fd, data)

    def read(self, n):
        return self._os.read(self.fd, n)

    def readinto(self, buf):
        try:
            data = self._os.read(self.fd, len(buf))
        except BlockingIOError:  # a non-blocking fd with nothing to read: like a UART timeout
            return 0
        n = len(data)
        buf[:n] = data
        return n
