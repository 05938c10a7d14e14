"""Hostile frames through the real gateway pipeline: every one refused, named, and harmless.

Generates N hostile frames (random bytes, random CBOR, truncated / bit-flipped / spliced
valid frames, malformed envelopes, wrong and unknown keys, spoofed kids, oversize frames,
replays, wrong topics, and *validly MACed* malformed payloads from insider nodes whose keys
the fuzzer holds: wrong CBOR types, missing and unknown keys, non-deterministic encodings,
huge declared d and T, T over the cap, d mismatch, indices out of range / unsorted /
repeated / badly padded, NaN and Inf values, bad SQ magnitude and signs, bad telemetry,
node mismatch, wrong job, stale and future rounds) and feeds them to
`aggregator.gateway.pipeline.Aggregator.submit` with a real state directory (journal, checkpoints)
and metrics log. Between them, honest nodes send valid updates (a tenth of the traffic),
which must all be accepted, so rounds keep closing and the model keeps moving.

For every hostile frame it checks: no exception escapes; the outcome is a refusal (or, for a
replay of an already accepted frame, an idempotent duplicate) under a reason from
`pipeline.ALL_REASONS`; the refusal counters grew by exactly one; and the model bytes, the
round, the pending updates and the delta history are exactly as before.

Usage:
  .venv/bin/python benchmarks/fuzz.py --frames 100000 [--seed 1] [--security off|on]
  .venv/bin/python benchmarks/fuzz.py --atheris -runs=200000      (coverage-guided, needs atheris)

The last line is `frames=N crashes=C applied=A model_changed=M`.
`--security off` (default) disables rate-limiting and quarantine so every signed hostile frame
reaches the payload checks; `--security on` runs the job defaults, where the insiders soon
end up rate-limited and quarantined, and checks that no honest node ever is.
"""
from __future__ import annotations

import argparse
import gc
import inspect
import math
import os
import random
import struct
import sys
import tempfile
import time
import tracemalloc
from array import array
from collections import Counter
from pathlib import Path

import cbor2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from aggregator.gateway import pipeline, wire  # noqa: E402
from aggregator.gateway.config import Job, parse_job  # noqa: E402
from aggregator.gateway.metrics import MetricsLog  # noqa: E402
from aggregator.gateway.state import Store  # noqa: E402
from edge import f16  # noqa: E402
from edge import frame as eframe  # noqa: E402

D = 40                     # b = 6 bits per index: packed for T <= 6, bitmap above
K_CAP = 16
JOB_ID = 9
HONEST = tuple(range(6))   # send only valid updates (and get replayed by the attacker)
INSIDERS = tuple(range(100, 108))  # keys held by the fuzzer: signed hostile payloads
MAX_FRAME = 4096


class Clock:
    """Fake monotonic clock: advances a fixed step per frame, so runs are reproducible."""

    def __init__(self, step: float = 0.001) -> None:
        self.t = 0.0
        self.step = step

    def __call__(self) -> float:
        return self.t


def make_job(state_dir: Path, security: str = "off", seed: int = 1, rule: str = "mean") -> tuple[Job, dict[int, bytes]]:
    """A small S-scheme job with honest and insider nodes; quorum = the honest nodes."""
    rng = random.Random(seed)
    keys = {n: rng.randbytes(32) for n in HONEST + INSIDERS}
    raw = {"job": {"id": JOB_ID, "rounds": 10**9}, "model": {"kind": "logistic", "features": D, "L": 1.0},
           "training": {"scheme": "s", "rule": "cat", "k_cap": K_CAP},
           "cost": {"profile": "ieee802154-6lowpan-coap"},
           "rounds": {"quorum": float(len(HONEST)), "deadline_s": 1e9, "history": 4,
                      "max_frame_bytes": MAX_FRAME},
           "nodes": {str(n): k.hex() for n, k in keys.items()},
           "downlink": {"key": rng.randbytes(32).hex()}, "state": {"dir": str(state_dir)},
           "aggregation": {"rule": rule}}
    if security == "off":
        raw["security"] = {"rate_limit_after": 0, "quarantine_after": 0}
    return parse_job(raw), keys


# ----------------------------------------------------------------------------- CBOR with knobs

def _head(major: int, n: int, wide: int = 0) -> bytes:
    """A CBOR head; wide > 0 forces a longer-than-shortest argument (non-deterministic)."""
    if n < 24 and not wide:
        return bytes((major << 5 | n,))
    sizes = [(0xFF, 24, 1), (0xFFFF, 25, 2), (0xFFFFFFFF, 26, 4), (2**64 - 1, 27, 8)]
    fits = [s for s in sizes if n <= s[0]]
    _, ai, nb = fits[min(wide, len(fits) - 1)] if wide else fits[0]
    return bytes((major << 5 | ai,)) + n.to_bytes(nb, "big")


def cbor_enc(obj: object, rng: random.Random | None = None, p_wide: float = 0.0, p_indef: float = 0.0,
             shuffle: bool = False) -> bytes:
    """Minimal CBOR writer that can emit non-shortest heads, indefinite strings and unsorted maps."""
    wide = 1 if rng is not None and rng.random() < p_wide else 0
    if isinstance(obj, bool):
        return b"\xf5" if obj else b"\xf4"
    if obj is None:
        return b"\xf6"
    if isinstance(obj, int):
        return _head(0, obj, wide) if obj >= 0 else _head(1, -1 - obj, wide)
    if isinstance(obj, float):
        return b"\xfb" + struct.pack(">d", obj)
    if isinstance(obj, bytes):
        if rng is not None and len(obj) > 1 and rng.random() < p_indef:
            cut = rng.randrange(1, len(obj))
            return b"\x5f" + _head(2, cut) + obj[:cut] + _head(2, len(obj) - cut) + obj[cut:] + b"\xff"
        return _head(2, len(obj), wide) + obj
    if isinstance(obj, str):
        b = obj.encode()
        return _head(3, len(b), wide) + b
    if isinstance(obj, (list, tuple)):
        return _head(4, len(obj), wide) + b"".join(cbor_enc(x, rng, p_wide, p_indef, shuffle) for x in obj)
    if isinstance(obj, dict):
        items = list(obj.items())
        if shuffle and rng is not None:
            rng.shuffle(items)
        return _head(5, len(items), wide) + b"".join(
            cbor_enc(k, rng, p_wide, p_indef) + cbor_enc(v, rng, p_wide, p_indef, shuffle) for k, v in items)
    raise TypeError(type(obj))


def mac0(key: bytes, kid: bytes, payload: bytes) -> bytes:
    """COSE_Mac0 around payload with a correct HMAC 256/64 tag (wire's envelope helper)."""
    return wire._wrap(key, kid, payload)


def kid_of(node: int) -> bytes:
    return node.to_bytes(2, "big")


# ----------------------------------------------------------------------------- frames

def pack_indices(idx: list[int], d: int) -> tuple[int, bytes]:
    """(code key, bytes) for ascending indices under the wire rule (no validation: may be hostile)."""
    T = len(idx)
    code, nbytes = wire.index_code(d, T)
    if code == wire.K_IDX_BITMAP:
        out = bytearray(nbytes)
        for j in idx:
            if 0 <= j < nbytes * 8:
                out[j >> 3] |= 1 << (j & 7)
        return code, bytes(out)
    b = wire.index_bits(d)
    acc = 0
    for j in idx:
        acc = (acc << b) | (j & ((1 << b) - 1))
    pad = nbytes * 8 - T * b
    return code, (acc << pad).to_bytes(nbytes, "big") if nbytes else b""


class Generator:
    """Valid and hostile frames for the fuzz job."""

    def __init__(self, job: Job, keys: dict[int, bytes], seed: int) -> None:
        self.job = job
        self.keys = keys
        self.rng = random.Random(seed)
        self.buf = bytearray(eframe.buffer_size(D, max(K_CAP, D), eframe.SCHEME_SQ, 0) + 64)
        self.history: list[tuple[int, int, bytes]] = []    # (round, node, frame) of accepted valid frames
        self.retired: dict[int, bytes] = {}                # node -> expired key (after rotations)

    # -- valid -----------------------------------------------------------------------
    def valid(self, node: int, rnd: int, key: bytes | None = None) -> bytes:
        """A valid update of the job's scheme (S) and value format (f32): T <= K_CAP entries,
        small finite values."""
        r = self.rng
        T = r.randint(1, K_CAP)
        idx = array("I", sorted(r.sample(range(D), T)))
        fmt = 0
        vals = array("f", [f16.round_value(r.uniform(-0.05, 0.05), fmt) for _ in range(T)])
        tel = [r.random(), r.random(), 0.01, 0.001] if r.random() < 0.5 else None
        n = eframe.encode_update(self.buf, key or self.keys[node], JOB_ID, node, rnd, eframe.SCHEME_S, D, T,
                                 idx, vals, fmt, tel)
        return bytes(self.buf[:n])

    def payload(self, node: int, rnd: int) -> dict:
        """A valid payload map (as a dict) for mutation; scheme S, SQ, SS or identity."""
        r = self.rng
        scheme = r.choice((1, 1, 1, 2, 3, 0))
        fmt = r.choice((0, 1))
        w = 2 if fmt else 4
        T = D if scheme == 0 else r.randint(1, K_CAP)
        p: dict = {0: 2, 1: 0, 2: JOB_ID, 3: node, 4: rnd, 5: scheme, 6: D, 7: T}
        if scheme:
            idx = sorted(r.sample(range(D), T))
            code, raw = pack_indices(idx, D)
            p[code] = raw
        p[10] = fmt
        if scheme == 2:
            p[11] = struct.pack("<e" if fmt else "<f", 0.01)
            p[13] = bytes(r.getrandbits(8) for _ in range((T + 7) // 8))
            if T % 8:
                p[13] = p[13][:-1] + bytes((p[13][-1] & ((1 << (T % 8)) - 1),))
        else:
            p[11] = b"".join(struct.pack("<e" if fmt else "<f", r.uniform(-0.1, 0.1)) for _ in range(T))
        if r.random() < 0.4:
            p[14] = struct.pack("<4f", 0.5, 0.5, 0.01, 0.001)
        return dict(sorted(p.items()))

    # -- hostile ----------------------------------------------------------------------
    KINDS = (("signed_payload", 30), ("random_bytes", 6), ("random_cbor", 5), ("truncated", 6),
             ("bitflip", 8), ("splice", 4), ("envelope", 6), ("wrong_key", 5), ("unknown_kid", 3),
             ("spoofed_kid", 5), ("oversize", 2), ("replay", 8), ("topic_mismatch", 3),
             ("noncanonical", 5), ("expired_key", 2), ("signed_garbage", 2))

    def hostile(self, rnd: int) -> tuple[str, bytes, int | None]:
        """(kind, frame, topic_node) of one hostile frame for a gateway at round rnd."""
        r = self.rng
        kinds, weights = zip(*self.KINDS)
        kind = r.choices(kinds, weights)[0]
        if kind == "expired_key" and not self.retired:
            kind = "wrong_key"
        if kind == "replay" and not self.history:
            kind = "bitflip"
        topic = None
        insider = r.choice(INSIDERS)
        honest = r.choice(HONEST)
        if kind == "signed_payload":
            return kind, mac0(self.keys[insider], kid_of(insider), self.mutated_payload(insider, rnd)), None
        if kind == "signed_garbage":
            n = r.randint(0, 64)
            return kind, mac0(self.keys[insider], kid_of(insider), r.randbytes(n)), None
        if kind == "noncanonical":
            p = self.payload(insider, rnd)
            for _ in range(20):
                enc = cbor_enc(p, r, p_wide=0.3, p_indef=0.3, shuffle=r.random() < 0.5)
                if enc != cbor2.dumps(p, canonical=True):
                    break
            else:
                enc = cbor_enc(p, r, p_wide=1.0)
            return kind, mac0(self.keys[insider], kid_of(insider), enc), None
        if kind == "random_bytes":
            return kind, r.randbytes(r.choice((0, 1, 2, 8, 20, 64, 200, 1000))), None
        if kind == "random_cbor":
            obj = self.random_obj(3)
            if r.random() < 0.5:
                obj = cbor2.CBORTag(17, obj if r.random() < 0.3 else [self.random_obj(1) for _ in range(4)])
            return kind, cbor2.dumps(obj), None
        base = self.valid(honest, rnd + r.choice((0, 0, 1)))    # not submitted: a fresh honest frame
        if kind == "truncated":
            return kind, base[: r.randrange(0, len(base))], None
        if kind == "bitflip":
            b = bytearray(base)
            for _ in range(r.choice((1, 1, 2, 3, 8))):
                b[r.randrange(len(b))] ^= 1 << r.randrange(8)
            if bytes(b) == base:
                b[-1] ^= 1
            return kind, bytes(b), None
        if kind == "splice":
            b = bytearray(base)
            pos = r.randrange(len(b) + 1)
            if r.random() < 0.5 and pos < len(b):
                del b[pos:pos + r.randint(1, 4)]
            else:
                b[pos:pos] = r.randbytes(r.randint(1, 4))
            return kind, bytes(b), None
        if kind == "envelope":
            return kind, self.bad_envelope(base, honest), None
        if kind == "wrong_key":
            return kind, self.valid(honest, rnd, key=r.randbytes(32)), None
        if kind == "expired_key":
            node = r.choice(sorted(self.retired))
            return kind, self.valid(node, rnd, key=self.retired[node]), None
        if kind == "unknown_kid":
            node = r.choice((1000, 65535, 200, 7))
            return kind, self.valid(node, rnd, key=r.randbytes(32)) if node > 99 else \
                mac0(r.randbytes(32), r.choice((b"", b"\x07", b"\x00\x00\x07", b"gw")), base[30:40]), None
        if kind == "spoofed_kid":
            b = bytearray(base)            # kid bytes live at offset 7..8 of the fixed envelope
            other = r.choice([n for n in HONEST + INSIDERS if n != honest])
            b[7:9] = kid_of(other)
            return kind, bytes(b), None
        if kind == "oversize":
            p = self.payload(insider, rnd)
            p[11] = p[11] + bytes(MAX_FRAME)
            return kind, mac0(self.keys[insider], kid_of(insider), cbor2.dumps(p, canonical=True)), None
        if kind == "replay":
            rr, node, f = r.choice(self.history)
            if rr == rnd and r.random() < 0.5:
                topic = r.choice([n for n in HONEST if n != node])     # replayed onto another node's topic
            return kind, f, topic
        if kind == "topic_mismatch":
            return kind, base, r.choice([n for n in HONEST if n != honest])
        raise AssertionError(kind)

    def random_obj(self, depth: int) -> object:
        r = self.rng
        c = r.randrange(9 if depth > 0 else 6)
        if c == 0:
            return r.choice((0, 1, 23, 24, 255, 65536, 2**32, 2**64 - 1, -1, -2**63))
        if c == 1:
            return r.randbytes(r.randrange(12))
        if c == 2:
            return "".join(chr(r.randrange(32, 0x3000)) for _ in range(r.randrange(6)))
        if c == 3:
            return r.choice((0.0, -0.0, 1.5, math.inf, -math.inf, math.nan, 1e300))
        if c == 4:
            return r.choice((True, False, None))
        if c == 5:
            return cbor2.CBORSimpleValue(r.choice((0, 19, 32, 255)))
        if c == 6:
            return [self.random_obj(depth - 1) for _ in range(r.randrange(5))]
        if c == 7:
            return {self.random_obj(0) if r.random() < 0.3 else r.randrange(20): self.random_obj(depth - 1)
                    for _ in range(r.randrange(5))}
        return cbor2.CBORTag(r.choice((0, 1, 2, 17, 24, 55799, 2**32)), self.random_obj(depth - 1))

    def bad_envelope(self, base: bytes, node: int) -> bytes:
        """Valid payload and tag in a malformed COSE_Mac0."""
        r = self.rng
        obj = cbor2.loads(base)
        prot, unprot, payload, tag = obj.value
        c = r.randrange(10)
        if c == 0:
            arr = [cbor2.dumps({1: 5}), unprot, payload, tag]                # other alg
        elif c == 1:
            arr = [b"", unprot, payload, tag]                                # empty protected
        elif c == 2:
            arr = [prot, {4: kid_of(node), 1: 4}, payload, tag]              # extra unprotected label
        elif c == 3:
            arr = [prot, {4: kid_of(node)[:1]}, payload, tag]                # 1-byte kid
        elif c == 4:
            arr = [prot, unprot, payload, tag[:7]]                           # short tag
        elif c == 5:
            arr = [prot, unprot, payload.decode("latin-1"), tag]             # payload as tstr
        elif c == 6:
            arr = [prot, unprot, payload, tag, b""]                          # 5 elements
        elif c == 7:
            return cbor2.dumps(cbor2.CBORTag(r.choice((16, 18, 96, 98)), [prot, unprot, payload, tag]))
        elif c == 8:
            return cbor2.dumps([prot, unprot, payload, tag])                 # untagged
        else:
            return base + r.randbytes(r.randint(1, 3))                       # trailing bytes
        return cbor2.dumps(cbor2.CBORTag(17, arr))

    def mutated_payload(self, node: int, rnd: int) -> bytes:
        """A payload that a correct gateway must refuse, MACed later with node's real key."""
        r = self.rng
        for _ in range(50):
            p = self.payload(node, rnd)
            for _ in range(r.choice((1, 1, 1, 2, 3))):
                self.mutate(p, node, rnd)
            try:
                enc = cbor2.dumps(p, canonical=True)
            except Exception:
                continue
            if not self.plausibly_valid(p, enc, node, rnd):
                return enc
        return cbor2.dumps({0: 2}, canonical=True)

    def plausibly_valid(self, p: dict, enc: bytes, node: int, rnd: int) -> bool:
        """True if the mutation left a payload the gateway should accept (then draw another)."""
        if p.get(6) != D:
            return False      # (and the decoder would size an identity index array from d)
        try:
            up = wire.decode_update_payload(node, enc, len(enc))
        except wire.FrameError:
            return False
        return (up.job == JOB_ID and up.round == rnd and up.scheme == 1 and up.d == D and up.T <= K_CAP)

    def mutate(self, p: dict, node: int, rnd: int) -> None:
        r = self.rng
        c = r.randrange(22)
        keys = list(p)
        if c == 0:                                           # drop a key
            del p[r.choice(keys)]
        elif c == 1:                                         # unknown key
            p[r.choice((12, 15, 16, 17, 99, 255, 65536))] = r.choice((0, b"", "x"))
        elif c == 2:                                         # wrong CBOR type
            p[r.choice(keys)] = r.choice(("x", -1, 1.5, b"", [], {}, True, None, 2**70, -(2**70),
                                          cbor2.CBORTag(2, b"\x01"), math.nan))
        elif c == 3:                                         # huge or wrong d
            p[6] = r.choice((0, 1, D - 1, D + 1, 2**16, 2**32 - 1, 2**32, 2**40, 2**64 - 1))
            if r.random() < 0.5:
                p[7] = p[6]
        elif c == 4:                                         # bad T
            p[7] = r.choice((0, K_CAP + 1, D, D + 1, 2**31, 2**64 - 1))
        elif c == 5:                                         # indices out of range
            idx = sorted(r.sample(range(D), min(p.get(7, 3) if isinstance(p.get(7), int) and 0 < p.get(7, 0) <= D else 3, D)))
            idx[-1] = r.choice((D, D + 5, 63))
            code, raw = pack_indices(idx, D)
            p.pop(8, None), p.pop(9, None)
            p[code] = raw
            p[7] = len(idx)
        elif c == 6:                                         # unsorted / repeated indices (packed)
            T = r.randint(2, 6)
            idx = sorted(r.sample(range(D), T))
            if r.random() < 0.5:
                idx[0], idx[1] = idx[1], idx[0]
            else:
                idx[1] = idx[0]
            p.pop(8, None), p.pop(9, None)
            p[8] = pack_indices(idx, D)[1]
            p[7] = T
            p[5] = r.choice((1, 3))
            p[11] = bytes(4 * T) if p.get(10) == 0 else bytes(2 * T)
        elif c == 7:                                         # padding bits / wrong index length / wrong code
            code = 8 if 8 in p else 9
            raw = p.get(code, b"")
            s = r.randrange(3)
            if s == 0 and isinstance(raw, bytes) and raw:
                p[code] = raw[:-1] + bytes((raw[-1] | 1,))
            elif s == 1 and isinstance(raw, bytes):
                p[code] = raw + b"\x00" if r.random() < 0.5 else raw[:-1]
            else:
                p.pop(code, None)
                p[17 - code] = raw
        elif c == 8:                                         # NaN / Inf values
            fmt = p.get(10)
            bad = r.choice((math.nan, math.inf, -math.inf))
            raw = p.get(11)
            if isinstance(raw, bytes) and raw:
                w = 2 if fmt == 1 else 4
                k = r.randrange(max(1, len(raw) // w))
                p[11] = raw[:k * w] + struct.pack("<e" if w == 2 else "<f", bad) + raw[(k + 1) * w:]
            else:
                p[11] = struct.pack("<f", bad)
        elif c == 9:                                         # values length
            raw = p.get(11, b"")
            raw = raw if isinstance(raw, bytes) else b""
            p[11] = (raw + b"\x00" * r.choice((1, 2, 4))) if r.random() < 0.5 else raw[:-1]
        elif c == 10:
            p[10] = r.choice((2, 3, 255))
        elif c == 11:
            p[5] = r.choice((4, 5, 255))
        elif c == 12:                                        # SQ: negative magnitude / signs length
            p[5] = 2
            neg = r.random() < 0.5
            m = -0.01 if neg else 0.01
            p[11] = struct.pack("<f", m) if p.get(10) != 1 else struct.pack("<e", m)
            T = p.get(7) if type(p.get(7)) is int and 0 < p.get(7) < 4096 else 1
            p[13] = b"\x00" * (((T + 7) // 8) if neg else r.choice((0, (T + 7) // 8 + 1, 9)))
        elif c == 13:                                        # telemetry
            p[14] = r.choice((b"", b"\x00" * 15, b"\x00" * 17, struct.pack("<4f", 0, math.nan, 0, 0),
                              struct.pack("<4f", math.inf, 0, 0, 0), "tel"))
        elif c == 14:
            p[3] = r.choice([n for n in HONEST + INSIDERS if n != node] + [65535, 0x10000])
        elif c == 15:
            p[2] = r.choice((JOB_ID + 1, 0, 2**32))
        elif c == 16:
            p[4] = r.choice((rnd - 1, rnd + 1, rnd + 1000, 2**64 - 1)) if rnd > 0 else r.choice((1, 2**32))
        elif c == 17:
            p[0] = r.choice((0, 2, 255))
        elif c == 18:
            p[1] = r.choice((1, 2, 3, 4, 255))
        elif c == 19:                                        # identity for an S job, or S with T > cap
            if r.random() < 0.5:
                fmt = p.get(10, 0) if p.get(10) in (0, 1) else 0
                for k in (8, 9, 13):
                    p.pop(k, None)
                p[5], p[7] = 0, D
                p[11] = bytes((2 if fmt else 4) * D)
            else:
                T = r.randint(K_CAP + 1, D)
                idx = sorted(r.sample(range(D), T))
                for k in (8, 9, 13):
                    p.pop(k, None)
                code, raw = pack_indices(idx, D)
                p[code] = raw
                p[5], p[7], p[10], p[11] = 1, T, 0, bytes(4 * T)
        elif c == 20:                                        # huge declared T with identity
            p[5] = 0
            p[6] = p[7] = r.choice((2**20, 2**31, 2**32 - 1))
            for k in (8, 9, 13):
                p.pop(k, None)
        else:                                                # both index codes
            raw = p.get(8, p.get(9, b"\x00"))
            p[8] = raw
            p[9] = raw


# ----------------------------------------------------------------------------- the run

def fingerprint_state(agg: pipeline.Aggregator) -> tuple:
    st = agg.state
    return (st.model.tobytes(), st.round, tuple((n, id(u)) for n, u in sorted(agg.pending.items())),
            len(st.history), st.history[-1].base if st.history else None)


class Result:
    def __init__(self) -> None:
        self.frames = 0
        self.crashes = 0
        self.applied = 0
        self.model_changed = 0
        self.miscounted = 0
        self.unnamed = 0
        self.valid_sent = 0
        self.valid_accepted = 0
        self.rounds = 0
        self.reasons: Counter = Counter()
        self.kinds: Counter = Counter()
        self.examples: list[str] = []
        self.honest_flagged: list[int] = []
        self.seconds = 0.0
        self.mem_growth: int | None = None

    def line(self) -> str:
        return (f"frames={self.frames} crashes={self.crashes} applied={self.applied} "
                f"model_changed={self.model_changed}")


def run(frames: int, seed: int = 1, security: str = "off", p_valid: float = 0.1,
        state_dir: Path | None = None, trace_memory: bool = False, rotate_every: int = 5000,
        log_events: bool = True, clock_step: float = 0.001) -> Result:
    """Send `frames` hostile frames (plus valid ones) through a real Aggregator; see the module doc.
    clock_step: fake seconds per frame (rate-limiting and the strike window run on it)."""
    tmp = None
    if state_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="cat-fuzz-")
        state_dir = Path(tmp.name)
    try:
        return _run(frames, seed, security, p_valid, Path(state_dir), trace_memory, rotate_every, log_events,
                    clock_step)
    finally:
        if tmp is not None:
            tmp.cleanup()


def _run(frames: int, seed: int, security: str, p_valid: float, state_dir: Path, trace_memory: bool,
         rotate_every: int, log_events: bool, clock_step: float) -> Result:
    job, keys = make_job(state_dir / "state", security, seed)
    clock = Clock(clock_step)
    log = MetricsLog(state_dir / "metrics.jsonl") if log_events else MetricsLog()
    agg = pipeline.Aggregator(job, Store(job.state_dir), log, clock)
    gen = Generator(job, keys, seed)
    res = Result()
    known = set(pipeline.ALL_REASONS)
    rng = random.Random(seed ^ 0x5EED)
    t0 = time.perf_counter()
    mark = None
    if trace_memory:
        tracemalloc.start()
    while res.frames < frames:
        clock.t += clock.step
        st = agg.state
        if rng.random() < p_valid:
            free = [n for n in HONEST if n not in agg.pending]
            node = rng.choice(free)
            f = gen.valid(node, st.round, key=agg.keyring.current(node))
            res.valid_sent += 1
            out = agg.submit(f, "fuzz")
            if out.status == pipeline.ACCEPTED:
                res.valid_accepted += 1
                gen.history.append((out.round, node, f))
                del gen.history[:-64]
                if out.closed is not None:
                    res.rounds += 1
            elif len(res.examples) < 10:
                res.examples.append(f"valid frame of node {node} refused: {out.reason}")
            continue
        if rotate_every and res.frames and res.frames % rotate_every == 0:
            # The operator rotates an insider's key with no grace: its old key is expired from now on.
            node = rng.choice(INSIDERS)
            old = agg.keyring.current(node)
            new = rng.randbytes(32)
            agg.rotate_key(node, new, 0, f"fuzz-{res.frames}")
            gen.keys[node] = new
            gen.retired[node] = old
        kind, f, topic = gen.hostile(st.round)
        res.frames += 1
        res.kinds[kind] += 1
        before = fingerprint_state(agg)
        nrej = sum(st.rejected.values())
        try:
            out = agg.submit(f, "fuzz", topic_node=topic)
        except Exception as exc:  # noqa: BLE001 - counting is the point
            res.crashes += 1
            if len(res.examples) < 10:
                res.examples.append(f"{kind}: {exc!r}")
            continue
        if out.reason == "internal_error":
            res.crashes += 1
            if len(res.examples) < 10:
                res.examples.append(f"{kind}: internal error (see metrics log)")
        if out.status == pipeline.ACCEPTED:
            res.applied += 1
            if len(res.examples) < 10:
                res.examples.append(f"{kind}: ACCEPTED {f.hex()[:120]}")
        elif out.status == pipeline.REJECTED:
            res.reasons[out.reason] += 1
            if out.reason not in known:
                res.unnamed += 1
            if sum(agg.state.rejected.values()) != nrej + 1:
                res.miscounted += 1
        else:
            res.reasons["(duplicate)"] += 1
        if fingerprint_state(agg) != before:
            res.model_changed += 1
            if len(res.examples) < 10:
                res.examples.append(f"{kind}: state changed ({out.status}, {out.reason})")
        if trace_memory and res.frames == frames // 4:
            gc.collect()
            mark = tracemalloc.take_snapshot()
    if trace_memory:
        gc.collect()
        end = tracemalloc.take_snapshot()
        tracemalloc.stop()
        if mark is not None:
            res.mem_growth = sum(s.size_diff for s in end.compare_to(mark, "filename"))
    res.seconds = time.perf_counter() - t0
    res.honest_flagged = sorted(n for n in HONEST if n in agg.state.quarantined or n in agg._buckets)
    agg.store.close_journal()
    log.close()
    return res


def report(res: Result, security: str) -> None:
    print(f"security={security}  {res.frames} hostile frames in {res.seconds:.1f} s "
          f"({res.frames / max(res.seconds, 1e-9):,.0f}/s, valid ones included in the time)")
    print("hostile kinds: " + ", ".join(f"{k}={v}" for k, v in sorted(res.kinds.items())))
    print("outcomes by reason:")
    for reason, n in sorted(res.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {reason:<20} {n:>8}")
    print(f"valid frames: sent={res.valid_sent} accepted={res.valid_accepted} rounds_closed={res.rounds}")
    print(f"unnamed_reasons={res.unnamed} miscounted={res.miscounted} honest_nodes_flagged={len(res.honest_flagged)}"
          + (f" memory_growth_bytes={res.mem_growth}" if res.mem_growth is not None else ""))
    for e in res.examples:
        print("  example:", e)
    print(res.line())


# ----------------------------------------------------------------------------- atheris

def atheris_main(argv: list[str]) -> None:
    """Coverage-guided: libFuzzer mutates bytes; the first byte picks raw frame or signed payload."""
    import atheris

    from aggregator.gateway import keys as keymod
    for mod in (pipeline, wire, keymod):         # imported already: instrument their code in place
        for obj in list(vars(mod).values()):
            if getattr(obj, "__module__", None) != mod.__name__:
                continue
            if inspect.isfunction(obj):
                atheris.instrument_func(obj)
            elif inspect.isclass(obj):
                for meth in vars(obj).values():
                    if inspect.isfunction(meth):
                        atheris.instrument_func(meth)
    tmp = tempfile.TemporaryDirectory(prefix="cat-atheris-")
    job, keys = make_job(Path(tmp.name) / "state", "off", 1)   # every signed input reaches the payload checks
    clock = Clock()
    agg = pipeline.Aggregator(job, Store(job.state_dir), MetricsLog(), clock)
    nodes = sorted(keys)
    known = set(pipeline.ALL_REASONS)
    corpus = Path(tmp.name) / "corpus"
    corpus.mkdir()
    gen = Generator(job, keys, 1)
    for i in range(20):
        (corpus / f"raw{i}").write_bytes(b"\x00" + gen.valid(HONEST[i % len(HONEST)], 0))
        p = cbor2.dumps(gen.payload(INSIDERS[0], 0), canonical=True)
        (corpus / f"signed{i}").write_bytes(bytes((0x80, len(HONEST))) + p)

    runs = [0]

    def one(data: bytes) -> None:
        runs[0] += 1
        if runs[0] % 100000 == 0:   # libFuzzer exits without running atexit hooks: report as we go
            st = agg.state
            print(f"atheris: runs={runs[0]} rounds_closed={st.round} accepted_frames="
                  f"{sum(n.frames for n in st.nodes.values())} refused_by_reason="
                  + ",".join(f"{k}:{v}" for k, v in sorted(st.rejected.items())), file=sys.stderr)
        clock.t += 0.001
        if not data:
            return
        if data[0] & 0x80 and len(data) > 1:
            node = nodes[data[1] % len(nodes)]
            frame = mac0(agg.keyring.current(node), kid_of(node), data[2:])
        else:
            frame = data[1:]
        before = fingerprint_state(agg)
        out = agg.submit(frame, "atheris")
        if out.reason == "internal_error":
            raise RuntimeError(f"internal error on {frame.hex()}")
        if out.status == pipeline.REJECTED:
            if out.reason not in known:
                raise RuntimeError(f"unnamed reason {out.reason}")
            if fingerprint_state(agg) != before:
                raise RuntimeError(f"rejected frame changed the state: {frame.hex()}")
            if agg.state.quarantined and len(agg.state.quarantined) >= len(INSIDERS):
                for n in list(agg.state.quarantined):
                    agg.clear_quarantine(n, "fuzzer")

    atheris.Setup([sys.argv[0], *argv, str(corpus)], one)
    atheris.Fuzz()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=10000, help="hostile frames to send (default 10000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--security", choices=("off", "on"), default="off",
                    help="off: no rate-limit/quarantine, every signed frame reaches the payload checks")
    ap.add_argument("--clock-step", type=float, default=0.001, help="fake seconds per frame (default 0.001)")
    ap.add_argument("--valid", type=float, default=0.1, help="fraction of valid frames interleaved (default 0.1)")
    ap.add_argument("--trace-memory", action="store_true", help="tracemalloc growth from N/4 to N frames")
    ap.add_argument("--atheris", action="store_true", help="coverage-guided run; other args go to libFuzzer")
    args, rest = ap.parse_known_args()
    if args.atheris:
        atheris_main(rest)
        return 0
    if rest:
        ap.error(f"unknown arguments {rest}")
    res = run(args.frames, args.seed, args.security, args.valid, trace_memory=args.trace_memory,
              clock_step=args.clock_step)
    report(res, args.security)
    return 0 if res.crashes == res.applied == res.model_changed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
