"""Generate the wire-format test vectors (tests/vectors/*.cbor + *.json).

This is a third, deliberately naive implementation of docs/wire-format.md: payload maps
are built as Python dicts and encoded by cbor2 (canonical=True, RFC 8949 §4.2.1), index
and sign fields are built with big integers, and the COSE_Mac0 envelope and its HMAC
256/64 tag are made by pycose. It shares no code with edge/ or aggregator/, so the tests
that compare those against the vectors compare three independent writings of the spec.

Run from the repository root:  .venv/bin/python tests/vectors/make_vectors.py [OUT_DIR]
(default OUT_DIR: this folder). The output is deterministic (fixed seeds, fixed keys);
rerunning must not change any file, which tests/test_wire.py checks.
"""
from __future__ import annotations

import hashlib
import json
import math
import struct
import sys
from pathlib import Path

import cbor2
import numpy as np
from pycose.algorithms import HMAC25664
from pycose.headers import KID, Algorithm
from pycose.keys import SymmetricKey
from pycose.messages import Mac0Message

HERE = Path(__file__).resolve().parent
OUT = HERE


def node_key(node: int) -> bytes:
    """Test key of a node (never use outside tests)."""
    return hashlib.sha256(b"cat-iot test vector key %d" % node).digest()


GW_KEY = hashlib.sha256(b"cat-iot test vector downlink key").digest()
GW_KID = b"gw"
VERSION = 2


def mac0(key: bytes, kid: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    msg = Mac0Message(phdr={Algorithm: HMAC25664}, uhdr={KID: kid}, payload=payload,
                      external_aad=external_aad)
    msg.key = SymmetricKey(k=key)
    return msg.encode(tag=True)


def bits_per_index(d: int) -> int:
    return max(1, math.ceil(math.log2(d))) if d > 1 else 1


def index_field(d: int, idx: list[int]) -> tuple[int, bytes]:
    T = len(idx)
    b = bits_per_index(d)
    packed_len = math.ceil(T * b / 8)
    bitmap_len = math.ceil(d / 8)
    if bitmap_len < packed_len:
        acc = 0
        for j in idx:
            acc |= 1 << j          # bit j = byte j>>3, mask 1<<(j&7): little-endian integer
        return 9, acc.to_bytes(bitmap_len, "little")
    acc = 0
    for j in idx:
        acc = (acc << b) | j       # MSB first
    acc <<= packed_len * 8 - T * b
    return 8, acc.to_bytes(packed_len, "big")


def pack_vals(vals: list[float], fmt: int) -> bytes:
    return b"".join(struct.pack("<e" if fmt else "<f", v) for v in vals)


def representable(rng: np.random.Generator, n: int, fmt: int, scale: float = 1.0) -> list[float]:
    v = (rng.standard_normal(n) * scale).astype(np.float32)
    if fmt == 1:
        v = v.astype(np.float16).astype(np.float32)
    return [float(x) for x in v]


def f32hex(vals: list[float]) -> str:
    return b"".join(struct.pack("<f", v) for v in vals).hex()


def update(name: str, *, job: int, node: int, rnd: int, scheme: int, d: int, T: int, fmt: int,
           telemetry: bool, seed: int, desc: str, idx: list[int] | None = None,
           compact: bool = False) -> None:
    """compact: kind 4, whose map drops version, job, node, scheme, d and fmt (the job that
    the gateway runs implies them; node = kid). The JSON still records them, as the job's,
    and the MAC covers them as external AAD: the array [version, job, node, scheme, d, fmt]."""
    rng = np.random.default_rng(seed)
    key = node_key(node)
    if compact:
        p: dict[int, object] = {1: 4, 4: rnd, 7: T}
    else:
        p = {0: VERSION, 1: 0, 2: job, 3: node, 4: rnd, 5: scheme, 6: d, 7: T, 10: fmt}
    code = None
    if scheme == 0:
        indices = list(range(d))
        vals = representable(rng, d, fmt, 0.01)
        p[11] = pack_vals(vals, fmt)
    else:
        if idx is None:
            idx = sorted(int(x) for x in rng.choice(d, size=T, replace=False))
        indices = idx
        code, raw = index_field(d, indices)
        p[code] = raw
        if scheme == 2:
            m = representable(rng, 1, fmt, 0.01)[0]
            m = abs(m)
            signs = rng.random(T) < 0.5
            vals = [-m if s else m for s in signs]
            p[11] = pack_vals([m], fmt)
            acc = 0
            for k, s in enumerate(signs):
                if s:
                    acc |= 1 << k
            p[13] = acc.to_bytes(math.ceil(T / 8), "little")
        else:
            vals = representable(rng, T, fmt, 0.05)
            p[11] = pack_vals(vals, fmt)
    tel = None
    if telemetry:
        tel = [float(np.float32(x)) for x in (0.6931471805599453, 0.8125, 0.0123, 0.00042)]
        p[14] = struct.pack("<4f", *tel)
    payload = cbor2.dumps(p, canonical=True)
    aad = cbor2.dumps([VERSION, job, node, scheme, d, fmt], canonical=True) if compact else b""
    data = mac0(key, node.to_bytes(2, "big"), payload, aad)
    meaning = {
        "name": name, "description": desc, "kind": 4 if compact else 0, "key": key.hex(),
        "kid": node.to_bytes(2, "big").hex(), "job": job, "node": node, "round": rnd,
        "scheme": scheme, "d": d, "T": T, "fmt": fmt, "index_code": code,
        "indices": indices if scheme != 0 else None, "values": vals, "values_f32_hex": f32hex(vals),
        "magnitude": abs(vals[0]) if scheme == 2 else None,
        "telemetry": tel, "telemetry_f32_hex": f32hex(tel) if tel else None,
        "frame_bytes": len(data), "external_aad": aad.hex(),
    }
    write(name, data, meaning)


def config(name: str, *, job: int, rnd: int, cfg: dict, desc: str) -> None:
    fields = ["d", "scheme", "rule", "rule_param", "k_cap", "fmt", "L", "step", "error_feedback",
              "model", "classes", "lam", "profile", "metric", "rounds", "seed", "compact"]
    c: dict[int, object] = {}
    for k, f in enumerate(fields):
        v = cfg[f]
        if f == "compact" and not v:
            continue                   # key 16 is written only when true
        c[k] = struct.pack("<f", v) if f in ("L", "step", "lam") else v
    payload = cbor2.dumps({0: VERSION, 1: 1, 2: job, 4: rnd, 15: c}, canonical=True)
    data = mac0(GW_KEY, GW_KID, payload)
    write(name, data, {"name": name, "description": desc, "kind": 1, "key": GW_KEY.hex(),
                       "kid": GW_KID.hex(), "job": job, "round": rnd, "config": cfg,
                       "frame_bytes": len(data)})


def snapshot(name: str, *, job: int, version: int, d: int, seed: int, desc: str) -> None:
    rng = np.random.default_rng(seed)
    model = representable(rng, d, 0, 0.5)
    payload = cbor2.dumps({0: VERSION, 1: 2, 2: job, 4: version, 6: d, 16: pack_vals(model, 0)},
                          canonical=True)
    data = mac0(GW_KEY, GW_KID, payload)
    write(name, data, {"name": name, "description": desc, "kind": 2, "key": GW_KEY.hex(),
                       "kid": GW_KID.hex(), "job": job, "version": version, "d": d,
                       "model": model, "model_f32_hex": f32hex(model), "frame_bytes": len(data)})


def delta(name: str, *, job: int, base: int, d: int, T: int, fmt: int, seed: int, desc: str) -> None:
    rng = np.random.default_rng(seed)
    idx = sorted(int(x) for x in rng.choice(d, size=T, replace=False)) if T else []
    vals = representable(rng, T, fmt, 0.01)
    code, raw = index_field(d, idx)
    payload = cbor2.dumps({0: VERSION, 1: 3, 2: job, 4: base, 6: d, 7: T, code: raw, 10: fmt,
                           11: pack_vals(vals, fmt)}, canonical=True)
    data = mac0(GW_KEY, GW_KID, payload)
    write(name, data, {"name": name, "description": desc, "kind": 3, "key": GW_KEY.hex(),
                       "kid": GW_KID.hex(), "job": job, "base": base, "d": d, "T": T, "fmt": fmt,
                       "index_code": code, "indices": idx, "values": vals,
                       "values_f32_hex": f32hex(vals), "frame_bytes": len(data)})


def write(name: str, data: bytes, meaning: dict) -> None:
    (OUT / f"{name}.cbor").write_bytes(data)
    (OUT / f"{name}.json").write_text(json.dumps(meaning, indent=1, sort_keys=True) + "\n")


def main(argv: list[str]) -> int:
    global OUT
    if argv:
        OUT = Path(argv[0])
        OUT.mkdir(parents=True, exist_ok=True)
    update("update_identity_f32", job=1, node=1, rnd=0, scheme=0, d=8, T=8, fmt=0,
           telemetry=False, seed=1, desc="identity (full gradient), float32, no telemetry")
    update("update_identity_f16_tel", job=2, node=2, rnd=30, scheme=0, d=5, T=5, fmt=1,
           telemetry=True, seed=2, desc="identity, float16, telemetry, 2-byte round")
    update("update_s_f32_packed_tel", job=1, node=3, rnd=1000, scheme=1, d=784, T=5, fmt=0,
           telemetry=True, seed=3, desc="S top-T, float32, packed 10-bit indices, telemetry")
    update("update_s_f16_bitmap", job=1, node=4, rnd=7, scheme=1, d=20, T=8, fmt=1,
           telemetry=False, seed=4, desc="S, float16, bitmap (3 bytes < 5 packed)")
    update("update_sq_f32_packed_tel", job=1, node=5, rnd=12, scheme=2, d=47236, T=12, fmt=0,
           telemetry=True, seed=5, desc="SQ, float32 magnitude + 2 sign bytes, packed 16-bit indices")
    update("update_sq_f16_bitmap", job=1, node=6, rnd=3, scheme=2, d=16, T=10, fmt=1,
           telemetry=False, seed=6, desc="SQ, float16 magnitude, bitmap (2 bytes < 5 packed)")
    update("update_ss_f32_bitmap", job=1, node=7, rnd=4, scheme=3, d=10, T=6, fmt=0,
           telemetry=False, seed=7, desc="SS, float32, bitmap (2 bytes < 3 packed)")
    update("update_ss_f16_packed_tel", job=1, node=8, rnd=5, scheme=3, d=1000, T=3, fmt=1,
           telemetry=True, seed=8, desc="SS, float16, packed 10-bit indices, telemetry")
    update("update_s_tie_packed", job=1, node=9, rnd=1, scheme=1, d=16, T=4, fmt=0,
           telemetry=False, seed=9, desc="tie: bitmap 2 bytes == packed 2 bytes -> packed")
    update("update_s_d1", job=0, node=0, rnd=0, scheme=1, d=1, T=1, fmt=0,
           telemetry=False, seed=10, desc="d = 1: b = 1 bit, tie -> packed")
    update("update_ss_big_ids", job=300, node=65535, rnd=70000, scheme=3, d=70000, T=3, fmt=0,
           telemetry=True, seed=11, desc="3-byte job/node, 5-byte round and d, 17-bit indices",
           idx=[0, 65537, 69999])
    update("update_s_f16_d5m", job=1, node=10, rnd=99, scheme=1, d=5_000_000, T=3, fmt=1,
           telemetry=False, seed=12, desc="d = 5,000,000: 23-bit packed indices")
    update("update_compact_s_f32", job=1, node=11, rnd=1000, scheme=1, d=784, T=2, fmt=0,
           telemetry=False, seed=13, compact=True,
           desc="compact (kind 4) S, float32, packed 10-bit indices, 3-byte round")
    update("update_compact_sq_f16_tel", job=3, node=12, rnd=2, scheme=2, d=47236, T=12, fmt=1,
           telemetry=True, seed=14, compact=True,
           desc="compact SQ, float16 magnitude + 2 sign bytes, packed 16-bit indices, telemetry")
    update("update_compact_ss_f32_bitmap", job=1, node=13, rnd=30, scheme=3, d=20, T=8, fmt=0,
           telemetry=False, seed=15, compact=True,
           desc="compact SS, float32, bitmap (3 bytes < 5 packed), 2-byte round")
    config("config", job=1, rnd=0, desc="job config (retained on cat/<job>/config)", cfg={
        "d": 784, "scheme": 2, "rule": 0, "rule_param": 0, "k_cap": 256, "fmt": 0,
        "L": float(np.float32(0.25)), "step": float(np.float32(1.0)), "error_feedback": True,
        "model": 0, "classes": 2, "lam": float(np.float32(1e-4)), "profile": "ieee802154-6lowpan",
        "metric": "joules", "rounds": 500, "seed": 42, "compact": False})
    config("config_compact", job=3, rnd=2, desc="config of a compact job (key 16 = true)", cfg={
        "d": 47236, "scheme": 2, "rule": 0, "rule_param": 0, "k_cap": 64, "fmt": 1,
        "L": float(np.float32(0.5)), "step": float(np.float32(1.0)), "error_feedback": False,
        "model": 1, "classes": 47, "lam": float(np.float32(1e-3)), "profile": "lorawan-eu868-sf12",
        "metric": "seconds", "rounds": 40, "seed": 7, "compact": True})
    snapshot("snapshot", job=1, version=3, d=6, seed=20, desc="model snapshot, version 3, d = 6")
    delta("delta_f32_packed", job=1, base=3, d=784, T=3, fmt=0, seed=21,
          desc="delta 3 -> 4, float32, packed indices")
    delta("delta_f16_bitmap", job=1, base=4, d=12, T=5, fmt=1, seed=22,
          desc="delta 4 -> 5, float16, bitmap (2 bytes < 3 packed)")
    delta("delta_empty", job=1, base=5, d=6, T=0, fmt=0, seed=23,
          desc="delta 5 -> 6 carrying no entries (T = 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
