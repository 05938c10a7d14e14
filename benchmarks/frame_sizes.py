"""Print exact update frame sizes against the paper's idealised payload P(T).

The paper (eq. 5) counts S/SS payload as T*(ceil(log2 d) + FPP) bits and SQ as
FPP + T*ceil(log2 d) bits, FPP = 32. Here each is rounded up to whole bytes and given a
20-byte header, and compared with the exact COSE_Mac0 frame that edge.frame emits
(docs/wire-format.md): "saved" = paper bytes - frame bytes (negative: the real frame is
larger). The frame is measured by encoding it, and checked against frame_length.

Usage: .venv/bin/python benchmarks/frame_sizes.py [--job J --node N --round R]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from array import array

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from edge import frame  # noqa: E402

HEADER = 20
FPP = 32
KEY = bytes(32)
SCHEMES = ((frame.SCHEME_S, "S"), (frame.SCHEME_SQ, "SQ"), (frame.SCHEME_SS, "SS"))


def paper_bytes(d: int, T: int, scheme: int) -> int:
    """ceil(P(T)/8) + 20 with P from the paper's eq. 5."""
    lg = math.ceil(math.log2(d))
    bits = FPP + T * lg if scheme == frame.SCHEME_SQ else T * (lg + FPP)
    return (bits + 7) // 8 + HEADER


def encoded_bytes(d: int, T: int, scheme: int, fmt: int, tel: bool, job: int, node: int, rnd: int) -> int:
    """Encode a real frame (evenly spread indices) and return its length."""
    step = d // T
    idx = array("I", [k * step for k in range(T)])
    vals = array("f", [(0.25 if k % 2 else -0.25) for k in range(T)])
    buf = bytearray(frame.buffer_size(d, T, scheme, fmt))
    n = frame.encode_update(buf, KEY, job, node, rnd, scheme, d, T, idx, vals, fmt,
                            (1.0, 0.5, 0.01, 0.001) if tel else None)
    assert n == frame.frame_length(d, T, scheme, fmt, tel, job, node, rnd)
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", type=int, default=1)
    ap.add_argument("--node", type=int, default=7)
    ap.add_argument("--round", type=int, default=1000)
    a = ap.parse_args()
    print(f"update frames, job={a.job} node={a.node} round={a.round}, no telemetry "
          f"(telemetry adds 18 bytes); paper = ceil(P(T)/8) + {HEADER}")
    print(f"{'d':>7} {'scheme':>6} {'T':>4} {'index':>6} {'f32':>6} {'paper':>6} {'saved':>6}"
          f" {'f16':>6} {'saved':>6}")
    for d in (784, 47236):
        for scheme, name in SCHEMES:
            for T in (1, 10, 100):
                f32 = encoded_bytes(d, T, scheme, frame.FMT_F32, False, a.job, a.node, a.round)
                f16 = encoded_bytes(d, T, scheme, frame.FMT_F16, False, a.job, a.node, a.round)
                p = paper_bytes(d, T, scheme)
                code = "bitmap" if frame.index_code(d, T)[0] == frame.K_IDX_BITMAP else "packed"
                print(f"{d:>7} {name:>6} {T:>4} {code:>6} {f32:>6} {p:>6} {p - f32:>6} {f16:>6} {p - f16:>6}")
        full = encoded_bytes(d, d, frame.SCHEME_IDENTITY, frame.FMT_F32, False, a.job, a.node, a.round)
        print(f"{d:>7} {'ident':>6} {'d':>4} {'-':>6} {full:>6} {d * FPP // 8 + HEADER:>6}"
              f" {d * FPP // 8 + HEADER - full:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
