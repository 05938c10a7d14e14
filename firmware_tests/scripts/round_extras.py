# Optional parts of firmware_tests/scripts/round.py, in their own module so that the budget
# runs (round.py without them) do not carry their bytecode or their names: budget.round_setup
# compiles this file to .mpy into the device root.


def run(argv, node, link, last_round=None):
    """round.py's options: before the node is made (node None) "naive"; after it "frames" and
    "portable"; after the rounds (last_round given) "sync", whose report this returns."""
    if node is None:
        if "naive" in argv:
            use_naive_select()
        return None
    if last_round is None:
        if "frames" in argv:
            print_frames(node)
        if "portable" in argv:
            use_portable_math()
        return None
    return catch_up(link, node, last_round) if "sync" in argv else {}


def use_naive_select():
    """Swap the bounded-heap kernel of edge/topk.py for a sorted() top-T."""
    from edge import topk

    def naive_select(g, k, idx):
        # What the kernel replaces: sort all d indices by |g| (sorted() builds a list of
        # d ints; MicroPython calls the key per comparison), then take the first k.
        d = len(g)
        if k > d:
            k = d
        s1 = 0.0
        s2 = 0.0
        for j in range(d):
            v = g[j]
            s1 += abs(v)
            s2 += v * v
        order = sorted(range(d), key=lambda j: -abs(g[j]))
        for i in range(k):
            idx[i] = order[i]
        return k, s1, s2

    topk.select = naive_select


def catch_up(link, node, last_round):
    """Catch up with the gateway (delta) and report the model's CRC: the test compares it
    with the gateway's model bit for bit."""
    from binascii import crc32
    from edge import frame
    while True:
        raw = link.get_config()
        rnd = frame.decode_config(raw, node.downlink_key)["round"]
        if rnd > last_round:
            break
        link.wait(0.05)
    node.sync(link, rnd)
    return {"synced": node.version, "crc": crc32(bytes(node.model)), "deltas": node.deltas}


def print_frames(node):
    """Print each frame the node computes as `@@FRAME <round> <hex>` (tests decode and compare
    them across interpreters)."""
    from binascii import hexlify

    def show(rnd, frame):
        print("@@FRAME", rnd, hexlify(frame).decode())

    node.record = show


# exp and log from +, -, *, / alone: IEEE-754 rounds those the same on every build, while the
# elementary functions come from each port's libm (glibc's expf/logf in the 32-bit unix build,
# MicroPython's lib/libm on bare-metal ports such as the emulated mps2-an385) and can differ in
# the last bit. use_portable_math() makes two builds' rounds comparable bit for bit. Constants
# come from bit patterns, not decimal literals (parsing those can use the libm's pow too).
def _f32(bits):
    import struct
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def _bits(x):
    import struct
    return struct.unpack("<I", struct.pack("<f", x))[0]


def portable_exp(x):
    """e**x to a few ulps: x = k ln2 + r, |r| <= ln2 / 2, e**r by its Taylor series to r**8."""
    if x < -87.0:
        return 0.0  # below the normal range (what a board's expf gives there, to 1e-38)
    if x > 88.0:
        raise OverflowError("math range error")
    ln2 = _f32(0x3F317218)
    t = x / ln2
    k = int(t + 0.5) if t >= 0.0 else -int(0.5 - t)  # -126 <= k <= 127 here
    r = x - k * ln2
    p = 1.0
    term = 1.0
    for n in range(1, 9):
        term = term * r / n
        p = p + term
    return p * _f32((k + 127) << 23)


def portable_log(x):
    """Natural log of x > 0: x = m 2**e with m in [sqrt(2)/2, sqrt(2)), then
    log m = 2 atanh(s), s = (m - 1) / (m + 1), by its series to s**11."""
    if x <= 0.0:
        raise ValueError("math domain error")
    b = _bits(x)
    e = ((b >> 23) & 0xFF) - 127
    m = _f32((b & 0x7FFFFF) | 0x3F800000)
    if m > _f32(0x3FB504F3):  # sqrt(2)
        m = m * 0.5
        e += 1
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    acc = 0.0
    for n in (11, 9, 7, 5, 3):
        acc = (acc + 1.0 / n) * s2
    return e * _f32(0x3F317218) + 2.0 * s * (1.0 + acc)


def use_portable_math():
    """Make edge.learner use portable_exp/portable_log instead of the port's math module."""
    from edge import learner

    class PortableMath:
        exp = staticmethod(portable_exp)
        log = staticmethod(portable_log)

    learner.math = PortableMath
