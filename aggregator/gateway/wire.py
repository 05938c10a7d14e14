"""cat-iot wire format, version 2, gateway side (specification: docs/wire-format.md).

Decodes and verifies uplink update frames with cbor2 and the standard library's hmac, and
encodes the downlink messages (job config, model snapshot, model delta). This is an
independent implementation of the format from edge/frame.py (which must run on MicroPython);
both are checked against the shared vectors in tests/vectors/.

Uplink, in three steps (the order is part of the security argument, docs/security.md §2):
`open_envelope` (size limit, CBOR, COSE_Mac0 structure: nothing is attributed to anyone yet),
then the MAC under the kid's key (`verify_mac`; the gateway's pipeline checks against its
keyring instead, which knows key rotation), then `decode_update_payload`. Every refusal raises
FrameError(reason, detail): `reason` is one of REASONS, a short stable identifier that the
aggregator counts rejected frames by.

Sizes: `head_len`, `index_code`, `frame_length`, `delta_frame_length` and
`snapshot_frame_length` give the exact bytes of what the encoders here produce (and what
edge/frame.py produces for updates), so budgets can be planned without encoding anything.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cbor2
import numpy as np

VERSION = 2

KIND_UPDATE = 0
KIND_CONFIG = 1
KIND_SNAPSHOT = 2
KIND_DELTA = 3
KIND_COMPACT = 4   # update whose version, job, node, scheme, d, fmt are implied by the job

K_VERSION = 0
K_KIND = 1
K_JOB = 2
K_NODE = 3
K_ROUND = 4
K_SCHEME = 5
K_D = 6
K_T = 7
K_IDX_PACKED = 8
K_IDX_BITMAP = 9
K_FMT = 10
K_VALUES = 11
K_SIGNS = 13
K_TELEMETRY = 14
K_CONFIG = 15
K_MODEL = 16

SCHEME_IDENTITY = 0
SCHEME_S = 1
SCHEME_SQ = 2
SCHEME_SS = 3

FMT_F32 = 0
FMT_F16 = 1

CFG_D = 0
CFG_SCHEME = 1
CFG_RULE = 2
CFG_RULE_PARAM = 3
CFG_K_CAP = 4
CFG_FMT = 5
CFG_L = 6
CFG_STEP = 7
CFG_ERROR_FEEDBACK = 8
CFG_MODEL = 9
CFG_CLASSES = 10
CFG_LAMBDA = 11
CFG_PROFILE = 12
CFG_METRIC = 13
CFG_ROUNDS = 14
CFG_SEED = 15
CFG_COMPACT = 16   # optional bool, absent = false

RULE_CAT = 0
RULE_FIXED = 1
RULE_ALISTARH = 2
RULE_HYBRID = 3
RULE_IDENTITY = 4
RULE_CATAVG = 5

MODEL_LOGISTIC = 0
MODEL_SOFTMAX = 1

D_MAX = 0xFFFFFFFF
NODE_MAX = 0xFFFF
TELEMETRY_LEN = 16

# COSE (RFC 9052 §2, §3.1, §6.2; RFC 9053 §3.1)
COSE_MAC0_TAG = 17
ALG_HMAC_256_64 = 4
HDR_ALG = 1
HDR_KID = 4
TAG_LEN = 8
PROTECTED = b"\xa1\x01\x04"  # {1: 4}
KID_GW = b"gw"               # h'6777'
KID_LEN = 2                  # every kid: uplink node id (uint16 BE) or "gw"
# Envelope bytes besides the payload's bstr head, for a 2-byte kid: tag 17 (1), array (1),
# protected bstr (1 + 3), unprotected {4: kid} (1 + 1 + 1 + 2), MAC tag bstr (1 + 8).
ENVELOPE_FIXED = 20

# Reasons for refusal (stable identifiers; the aggregator counts rejections by these).
REASONS = (
    "oversize", "not_cbor", "trailing_bytes", "not_mac0", "structure", "bad_alg",
    "unknown_kid", "bad_mac", "not_deterministic", "unknown_key", "missing_key",
    "wrong_type", "bad_version", "bad_kind", "bad_scheme", "bad_fmt", "bad_value", "bad_d",
    "bad_t", "t_gt_d", "node_mismatch", "index_code", "index_length", "index_order",
    "index_range", "padding", "values_length", "signs_length", "bad_magnitude",
    "non_finite", "telemetry_length",
)

#: Config map key -> field name: the index is the CBOR key (docs/wire-format.md §3.3).
#: edge/frame.py states the same tuple independently; tests/test_wire.py holds them equal.
CONFIG_FIELDS = ("d", "scheme", "rule", "rule_param", "k_cap", "fmt", "L", "step",
                 "error_feedback", "model", "classes", "lam", "profile", "metric",
                 "rounds", "seed", "compact")
_CFG_F32 = {CFG_L, CFG_STEP, CFG_LAMBDA}
_CFG_TSTR = {CFG_PROFILE, CFG_METRIC}
_CFG_LIMIT = {CFG_SCHEME: 3, CFG_RULE: 5, CFG_FMT: 1, CFG_MODEL: 1}

_UPDATE_KEYS = frozenset({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14})
_COMPACT_KEYS = frozenset({1, 4, 7, 8, 9, 11, 13, 14})
_DELTA_KEYS = frozenset({0, 1, 2, 4, 6, 7, 8, 9, 10, 11})
_SNAPSHOT_KEYS = frozenset({0, 1, 2, 4, 6, 16})
_CONFIG_KEYS = frozenset({0, 1, 2, 4, 15})


class FrameError(ValueError):
    """A refused frame: `reason` (one of REASONS) for counters, `detail` for logs."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Update:
    """One verified uplink update; values are already step-scaled (SQ expanded to +-m)."""
    node: int
    job: int
    round: int
    scheme: int
    d: int
    T: int
    indices: np.ndarray      # int64, strictly ascending (identity: arange(d))
    values: np.ndarray       # float32, same order
    fmt: int
    telemetry: tuple[float, float, float, float] | None
    wire_bytes: int
    compact: bool = False    # sent as kind 4 (job, scheme, d, fmt taken from the job)


@dataclass(frozen=True)
class JobConfig:
    """The job parameters carried by a config message (key 15, docs/wire-format.md §3.3).

    Field names are those of CONFIG_FIELDS (whose order, not this class's, gives the config
    map's keys); tests/test_wire.py holds the two equal."""
    d: int
    scheme: int
    rule: int
    rule_param: int
    k_cap: int
    fmt: int
    L: float
    step: float
    error_feedback: bool
    model: int
    classes: int
    lam: float
    profile: str
    metric: str
    rounds: int
    seed: int
    compact: bool = False    # key 16: edges send compact (kind 4) updates


@dataclass(frozen=True)
class Config:
    job: int
    round: int
    config: JobConfig


@dataclass(frozen=True)
class Snapshot:
    job: int
    version: int
    model: np.ndarray  # float32, d entries


@dataclass(frozen=True)
class Delta:
    """x_{base+1}[j] = float32(x_base[j] + v) for (j, v) in zip(indices, values)."""
    job: int
    base: int
    d: int
    indices: np.ndarray
    values: np.ndarray
    fmt: int


# ----------------------------------------------------------------------------- helpers

def index_bits(d: int) -> int:
    """b = max(1, ceil(log2 d)) bits per packed index."""
    return max(1, (d - 1).bit_length())


def index_code(d: int, T: int) -> tuple[int, int]:
    """(key, nbytes): packed (8) unless the bitmap (9) is strictly smaller (ties -> packed)."""
    packed = (T * index_bits(d) + 7) // 8
    bitmap = (d + 7) // 8
    return (K_IDX_BITMAP, bitmap) if bitmap < packed else (K_IDX_PACKED, packed)


def round_values(values: np.ndarray | Sequence[float], fmt: int) -> np.ndarray:
    """float32 array of what a receiver decodes for these values in fmt (binary32 first,
    then binary16 round-to-nearest-even), so a sender can apply the same delta it sends."""
    v = np.asarray(values, dtype=np.float32)
    if fmt == FMT_F16:
        with np.errstate(over="ignore"):
            return v.astype(np.float16).astype(np.float32)
    return v.copy()


def head_len(n: int) -> int:
    """Bytes of a shortest CBOR head with argument n (RFC 8949 §3): the head of an unsigned
    integer n, or of a byte string of n bytes (deterministic encoding, RFC 8949 §4.2.1)."""
    return 1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5 if n < 2**32 else 9


def bstr_head(n: int) -> bytes:
    """The shortest CBOR head of a byte string of n bytes (major type 2, RFC 8949 §3)."""
    if n < 24:
        return bytes((0x40 | n,))
    size = head_len(n) - 1
    return bytes((0x40 | {1: 24, 2: 25, 4: 26, 8: 27}[size],)) + n.to_bytes(size, "big")


# MAC_structure = ["MAC0", protected, external_aad, payload] (RFC 9052 §6.3), encoded:
# array(4), tstr "MAC0", bstr h'A10104', bstr external_aad; then the payload's bstr head and
# bytes. external_aad is h'' except for the updates of a compact job (uplink_aad).
_MAC0_HEAD = b"\x84\x64MAC0\x43" + PROTECTED


def uplink_aad(job: int, node: int, scheme: int, d: int, fmt: int) -> bytes:
    """External AAD of every update in a compact job: [version, job, node, scheme, d, fmt] in
    deterministic CBOR. A compact update leaves these out, so its MAC covers them: it
    verifies only under its own job's parameters (docs/wire-format.md §1)."""
    return cbor2.dumps([VERSION, job, node, scheme, d, fmt], canonical=True)


def mac_input_prefix(payload_len: int, aad: bytes = b"") -> bytes:
    """The bytes HMAC runs over before the payload itself (MAC_structure up to the payload).

    Lets a verifier feed the payload to a prepared HMAC state without building the
    MAC_structure (aggregator.gateway.keys does, once per key held)."""
    return _MAC0_HEAD + bstr_head(len(aad)) + aad + bstr_head(payload_len)


def _mac(key: bytes, payload: bytes, aad: bytes = b"") -> bytes:
    """HMAC 256/64 over MAC_structure = ["MAC0", protected, aad, payload] (RFC 9052 §6.3)."""
    h = hmac.new(key, mac_input_prefix(len(payload), aad), hashlib.sha256)
    h.update(payload)
    return h.digest()[:TAG_LEN]


def _wrap(key: bytes, kid: bytes, payload: bytes, aad: bytes = b"") -> bytes:
    if len(key) != 32:
        raise ValueError(f"MAC key must be 32 bytes, got {len(key)}")
    msg = cbor2.CBORTag(COSE_MAC0_TAG, [PROTECTED, {HDR_KID: kid}, payload, _mac(key, payload, aad)])
    return cbor2.dumps(msg, canonical=True)


def _pack_indices(indices: np.ndarray, d: int) -> tuple[int, bytes]:
    T = len(indices)
    code, nbytes = index_code(d, T)
    if code == K_IDX_BITMAP:
        bits = np.zeros(nbytes * 8, dtype=np.uint8)
        bits[indices] = 1
        return code, np.packbits(bits, bitorder="little").tobytes()
    b = index_bits(d)
    if T == 0:
        return code, b""
    shifts = np.arange(b - 1, -1, -1, dtype=np.uint64)
    bits = ((indices.astype(np.uint64)[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return code, np.packbits(bits.ravel(), bitorder="big").tobytes()


_BYTE_RANGE = np.arange(8, dtype=np.int64)


def _unpack_indices(code: int, raw: bytes, d: int, T: int) -> np.ndarray:
    """Indices as int64; validates length, padding, order and range."""
    want = index_code(d, T)
    if code != want[0]:
        raise FrameError("index_code", f"d={d}, T={T} must use key {want[0]}")
    if len(raw) != want[1]:
        raise FrameError("index_length", f"{len(raw)} index bytes, needs {want[1]}")
    buf = np.frombuffer(raw, dtype=np.uint8)
    if code == K_IDX_BITMAP:
        bits = np.unpackbits(buf, bitorder="little")
        idx = np.flatnonzero(bits).astype(np.int64)
        if len(idx) and idx[-1] >= d:
            raise FrameError("index_range", f"bitmap bit {int(idx[-1])} >= d={d}")
        if len(idx) != T:
            raise FrameError("index_length", f"bitmap has {len(idx)} bits set, T={T}")
        return idx
    b = index_bits(d)
    pad = len(raw) * 8 - T * b
    if pad and raw[-1] & ((1 << pad) - 1):
        raise FrameError("padding", "packed index padding bits not zero")
    if T == 0:
        return np.zeros(0, dtype=np.int64)
    # Gather the 8 bytes that hold each b-bit field (b <= 32) as one big-endian word, then
    # shift and mask: a handful of vector operations instead of one bit per byte.
    off = np.arange(T, dtype=np.int64) * b
    padded = np.concatenate([buf, np.zeros(8, dtype=np.uint8)])
    words = padded[(off >> 3)[:, None] + _BYTE_RANGE].view(">u8").ravel()
    shift = (64 - b - (off & 7)).astype(np.uint64)
    idx = ((words >> shift) & np.uint64((1 << b) - 1)).astype(np.int64)
    if T > 1 and not (idx[1:] > idx[:-1]).all():
        raise FrameError("index_order", "indices not strictly ascending")
    if idx[-1] >= d:
        raise FrameError("index_range", f"index {int(idx[-1])} >= d={d}")
    return idx


def _values(raw: bytes, fmt: int, count: int, what: str) -> np.ndarray:
    w = 2 if fmt == FMT_F16 else 4
    if len(raw) != count * w:
        raise FrameError("values_length", f"{what}: {len(raw)} bytes, needs {count * w}")
    v = np.frombuffer(raw, dtype="<f2" if fmt == FMT_F16 else "<f4").astype(np.float32)
    if not np.isfinite(v).all():
        raise FrameError("non_finite", f"{what} has a non-finite value")
    return v


def frame_length(d: int, T: int, scheme: int, fmt: int, telemetry: bool = False,
                 job: int = 0, node: int = 0, rnd: int = 0, compact: bool = False) -> int:
    """Exact update frame length (same formula as edge.frame.frame_length, independently
    written here so the gateway can size budgets without importing edge code).
    compact: kind 4, whose map carries only kind, round, T, indices, values, signs, telemetry."""
    w = 2 if fmt == FMT_F16 else 4
    if compact:
        n = 1 + 2 + 1 + head_len(rnd) + 1 + head_len(T)
    else:
        n = 9 + 3 + head_len(job) + head_len(node) + head_len(rnd) + 2 + head_len(d) + head_len(T)
    vb = w if scheme == SCHEME_SQ else T * w
    n += 1 + head_len(vb) + vb
    if scheme == SCHEME_SQ:
        sb = (T + 7) // 8
        n += 1 + head_len(sb) + sb
    if scheme != SCHEME_IDENTITY:
        ib = index_code(d, T)[1]
        n += 1 + head_len(ib) + ib
    if telemetry:
        n += 2 + TELEMETRY_LEN
    return ENVELOPE_FIXED + head_len(n) + n


def _is_uint(v: object) -> bool:
    return type(v) is int and v >= 0


def _decode_one(fp: io.BytesIO, what: str) -> object:
    """One CBOR item from fp (duplicate keys and indefinite lengths refused)."""
    try:
        return cbor2.CBORDecoder(fp, allow_duplicate_keys=False, allow_indefinite=False).decode()
    except Exception as e:  # cbor2 raises several types for malformed input
        msg = str(e)
        if "uplicate" in msg or "ndefinite" in msg:
            raise FrameError("not_deterministic", f"{what}: {msg[:120]}") from None
        raise FrameError("not_cbor", f"{what}: {msg[:120]}") from None


class Envelope(NamedTuple):
    """An opened COSE_Mac0 whose MAC is not yet checked: nothing in it is authenticated."""
    kid: bytes
    payload: bytes
    tag: bytes

    @property
    def node(self) -> int:
        """The node an uplink kid names (2 bytes, big-endian)."""
        return int.from_bytes(self.kid, "big")


def open_envelope(data: bytes, max_bytes: int) -> Envelope:
    """First step of receiving any frame: the size limit (before any parsing), one CBOR item
    and nothing after it, the COSE_Mac0 structure with protected header exactly {1: 4}, and
    the envelope's heads in shortest form. Raises FrameError; reads nothing in the payload."""
    kid, payload, tag = open_mac0(data, max_bytes, PROTECTED, TAG_LEN, "{1: 4} (HMAC 256/64)")
    if len(kid) != KID_LEN:
        raise FrameError("structure", f"kid must be a {KID_LEN}-byte bstr")
    # every head in its shortest form <=> the length is exactly the minimal one
    if len(data) != ENVELOPE_FIXED + head_len(len(payload)) + len(payload):
        raise FrameError("not_deterministic", "envelope heads not in shortest form")
    return Envelope(kid, payload, tag)


def open_mac0(data: bytes, max_bytes: int, protected: bytes, tag_len: int, alg: str) -> Envelope:
    """A COSE_Mac0 with this exact protected header and tag length (the format's messages and
    the shards' partials, aggregator.gateway.partial): size first, then the structure."""
    if len(data) > max_bytes:
        raise FrameError("oversize", f"{len(data)} bytes > limit {max_bytes}")
    fp = io.BytesIO(data)
    obj = _decode_one(fp, "message")
    if fp.tell() != len(data):
        raise FrameError("trailing_bytes", f"{len(data) - fp.tell()} bytes after the message")
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_MAC0_TAG:
        raise FrameError("not_mac0", "not CBOR tag 17 (COSE_Mac0)")
    v = obj.value
    if not isinstance(v, (list, tuple)) or len(v) != 4:
        raise FrameError("structure", "COSE_Mac0 must be an array of 4")
    prot, unprot, payload, tag = v
    if type(prot) is not bytes:
        raise FrameError("structure", "protected header must be a bstr")
    if prot != protected:
        raise FrameError("bad_alg", f"protected header must be exactly {alg}")
    if not isinstance(unprot, Mapping) or list(unprot) != [HDR_KID] or type(unprot[HDR_KID]) is not bytes:
        raise FrameError("structure", "unprotected header must be {4: kid}")
    if type(payload) is not bytes:
        raise FrameError("structure", "payload must be a bstr")
    if type(tag) is not bytes or len(tag) != tag_len:
        raise FrameError("structure", f"tag must be a {tag_len}-byte bstr")
    return Envelope(unprot[HDR_KID], payload, tag)


def verify_mac(key: bytes, payload: bytes, tag: bytes, aad: bytes = b"") -> None:
    """Second step: the tag must be HMAC 256/64 of the payload under key, with external AAD
    aad (uplink_aad in a compact job; constant-time comparison); FrameError("bad_mac") otherwise."""
    if not hmac.compare_digest(_mac(key, payload, aad), tag):
        raise FrameError("bad_mac", "MAC does not verify")


def _load_payload(payload: bytes) -> Mapping:
    """Decode the payload map; the whole message must be in deterministic encoding."""
    fp = io.BytesIO(payload)
    p = _decode_one(fp, "payload")
    if fp.tell() != len(payload):
        raise FrameError("trailing_bytes", "payload has bytes after the map")
    if not isinstance(p, Mapping):
        raise FrameError("structure", "payload must be a map")
    for k in p:
        if not _is_uint(k):
            raise FrameError("unknown_key", f"map key {k!r}")
    try:
        again = cbor2.dumps(p, canonical=True)
    except Exception:
        again = b""
    if again != payload:
        # float or other non-format content shows up as wrong types below; test them first
        _no_floats(p)
        raise FrameError("not_deterministic", "payload is not in deterministic CBOR encoding")
    return p


def _no_floats(obj: object) -> None:
    if isinstance(obj, float):
        raise FrameError("wrong_type", "CBOR floats are not allowed (floats travel in bstrs)")
    if isinstance(obj, Mapping):
        for v in obj.values():
            _no_floats(v)
    if isinstance(obj, (list, tuple)):
        for v in obj:
            _no_floats(v)


def _head(p: Mapping, allowed: frozenset, kinds: tuple[int, ...]) -> int:
    """Check version, kind, key set; return the kind."""
    if K_VERSION not in p:
        raise FrameError("missing_key", "key 0 (version)")
    if not _is_uint(p[K_VERSION]):
        raise FrameError("wrong_type", "version must be a uint")
    if p[K_VERSION] != VERSION:
        raise FrameError("bad_version", f"version {p[K_VERSION]}, expected {VERSION}")
    if K_KIND not in p:
        raise FrameError("missing_key", "key 1 (kind)")
    kind = p[K_KIND]
    if not _is_uint(kind):
        raise FrameError("wrong_type", "kind must be a uint")
    if kind not in kinds:
        raise FrameError("bad_kind", f"kind {kind} not accepted here")
    for k in p:
        if k not in allowed:
            raise FrameError("unknown_key", f"key {k} in kind {kind}")
    return kind


def _uint(p: Mapping, k: int, what: str) -> int:
    if k not in p:
        raise FrameError("missing_key", f"key {k} ({what})")
    v = p[k]
    if not _is_uint(v):
        raise FrameError("wrong_type", f"{what} must be a uint")
    return v


def _bstr(p: Mapping, k: int, what: str) -> bytes:
    if k not in p:
        raise FrameError("missing_key", f"key {k} ({what})")
    v = p[k]
    if type(v) is not bytes:
        raise FrameError("wrong_type", f"{what} must be a bstr")
    return v


def _f32(raw: object, what: str) -> float:
    if type(raw) is not bytes or len(raw) != 4:
        raise FrameError("wrong_type", f"{what} must be a 4-byte float32 bstr")
    (x,) = struct.unpack("<f", raw)
    if not math.isfinite(x):
        raise FrameError("non_finite", f"{what} is not finite")
    return x


def _d(p: Mapping) -> int:
    d = _uint(p, K_D, "d")
    if d < 1 or d > D_MAX:
        raise FrameError("bad_d", f"d={d} not in 1..2**32-1")
    return d


def _fmt(p: Mapping) -> int:
    fmt = _uint(p, K_FMT, "fmt")
    if fmt > FMT_F16:
        raise FrameError("bad_fmt", f"fmt {fmt}")
    return fmt


def _sparse(p: Mapping, d: int, T: int) -> np.ndarray:
    has8, has9 = K_IDX_PACKED in p, K_IDX_BITMAP in p
    if has8 == has9:
        raise FrameError("index_code", "exactly one of keys 8 (packed) and 9 (bitmap) is required")
    code = K_IDX_PACKED if has8 else K_IDX_BITMAP
    return _unpack_indices(code, _bstr(p, code, "indices"), d, T)


# ----------------------------------------------------------------------------- uplink

def decode_update_payload(node: int, payload: bytes, wire_bytes: int, expect: tuple[int, int] | None = None,
                          implied: tuple[int, int, int, int] | None = None) -> Update:
    """Third step: the payload of an update whose envelope is open and whose MAC verified
    under `node`'s key (the pipeline checks the MAC against its keyring). Refuses with
    FrameError: deterministic encoding, keys, types, ranges, indices, values.

    expect = (job, d): refuse another job ("wrong_job") or another d ("wrong_d") right after
    the header is read, before anything is sized from the declared d.
    implied = (job, scheme, d, fmt): the job is compact, so compact updates (kind 4) are
    accepted and take these values (node = the kid); without it kind 4 is "bad_kind".
    Full updates (kind 0) are accepted either way."""
    p = _load_payload(payload)
    kind = p.get(K_KIND)
    if _is_uint(kind) and kind == KIND_COMPACT:
        if implied is None:
            raise FrameError("bad_kind", "compact update (kind 4), but the job is not compact")
        for k in p:
            if k not in _COMPACT_KEYS:
                raise FrameError("unknown_key", f"key {k} in kind {KIND_COMPACT}")
        job, scheme, d, fmt = implied
        # the full map, with the header the job implies; everything below checks it as usual
        p = dict(p)
        p.update({K_VERSION: VERSION, K_KIND: KIND_UPDATE, K_JOB: job, K_NODE: node,
                  K_SCHEME: scheme, K_D: d, K_FMT: fmt})
        compact = True
    else:
        _head(p, _UPDATE_KEYS, (KIND_UPDATE,))
        compact = False
    if expect is not None:
        if _uint(p, K_JOB, "job") != expect[0]:
            raise FrameError("wrong_job", f"job {p[K_JOB]}, expected {expect[0]}")
        if _d(p) != expect[1]:
            raise FrameError("wrong_d", f"d={p[K_D]}, expected {expect[1]}")
    job = _uint(p, K_JOB, "job")
    pnode = _uint(p, K_NODE, "node")
    if pnode != node:
        raise FrameError("node_mismatch", f"payload node {pnode}, kid node {node}")
    rnd = _uint(p, K_ROUND, "round")
    scheme = _uint(p, K_SCHEME, "scheme")
    if scheme > SCHEME_SS:
        raise FrameError("bad_scheme", f"scheme {scheme}")
    d = _d(p)
    T = _uint(p, K_T, "T")
    if T < 1:
        raise FrameError("bad_t", "T must be >= 1")
    if T > d:
        raise FrameError("t_gt_d", f"T={T} > d={d}")
    fmt = _fmt(p)
    raw = _bstr(p, K_VALUES, "values")
    if scheme == SCHEME_IDENTITY:
        if T != d:
            raise FrameError("bad_t", "identity needs T == d")
        if K_IDX_PACKED in p or K_IDX_BITMAP in p:
            raise FrameError("index_code", "identity carries no index field (T = d)")
        if K_SIGNS in p:
            raise FrameError("unknown_key", "key 13 (signs) only with SQ")
        vals = _values(raw, fmt, d, "values")      # length first: d alone must not size an allocation
        idx = np.arange(d, dtype=np.int64)
    else:
        idx = _sparse(p, d, T)
        if scheme == SCHEME_SQ:
            m = _values(raw, fmt, 1, "SQ magnitude")[0]
            if np.signbit(m):
                raise FrameError("bad_magnitude", "SQ magnitude must be >= +0")
            signs = _bstr(p, K_SIGNS, "signs")
            if len(signs) != (T + 7) // 8:
                raise FrameError("signs_length", f"{len(signs)} sign bytes, needs {(T + 7) // 8}")
            sbits = np.unpackbits(np.frombuffer(signs, dtype=np.uint8), bitorder="little")
            if sbits[T:].any():
                raise FrameError("padding", "sign bitmap padding bits not zero")
            vals = np.where(sbits[:T] == 1, -m, m).astype(np.float32)
        else:
            if K_SIGNS in p:
                raise FrameError("unknown_key", "key 13 (signs) only with SQ")
            vals = _values(raw, fmt, T, "values")
    telemetry = None
    if K_TELEMETRY in p:
        t = p[K_TELEMETRY]
        if type(t) is not bytes:
            raise FrameError("wrong_type", "telemetry must be a bstr")
        if len(t) != TELEMETRY_LEN:
            raise FrameError("telemetry_length", f"{len(t)} bytes, needs {TELEMETRY_LEN}")
        tv = struct.unpack("<4f", t)
        if not all(math.isfinite(x) for x in tv):
            raise FrameError("non_finite", "telemetry has a non-finite value")
        telemetry = tv
    return Update(node=node, job=job, round=rnd, scheme=scheme, d=d, T=T, indices=idx,
                  values=vals, fmt=fmt, telemetry=telemetry, wire_bytes=wire_bytes, compact=compact)


# ----------------------------------------------------------------------------- downlink

def decode_downlink(data: bytes, key: bytes, max_bytes: int) -> Config | Snapshot | Delta:
    """Verify (kid 'gw') and decode a config, snapshot or delta.

    The gateway only sends these; this is its independent reading of the downlink format,
    which tests/test_wire.py holds against the shared vectors and the encoders below."""
    kid, payload, tag = open_envelope(data, max_bytes)
    if kid != KID_GW:
        raise FrameError("unknown_kid", "downlink kid must be h'6777' ('gw')")
    verify_mac(key, payload, tag)
    p = _load_payload(payload)
    kind = _head(p, _CONFIG_KEYS | _SNAPSHOT_KEYS | _DELTA_KEYS,
                 (KIND_CONFIG, KIND_SNAPSHOT, KIND_DELTA))
    allowed = {KIND_CONFIG: _CONFIG_KEYS, KIND_SNAPSHOT: _SNAPSHOT_KEYS, KIND_DELTA: _DELTA_KEYS}[kind]
    for k in p:
        if k not in allowed:
            raise FrameError("unknown_key", f"key {k} in kind {kind}")
    job = _uint(p, K_JOB, "job")
    rnd = _uint(p, K_ROUND, "round")
    if kind == KIND_CONFIG:
        c = p.get(K_CONFIG)
        if c is None:
            raise FrameError("missing_key", "key 15 (config)")
        if not isinstance(c, Mapping):
            raise FrameError("wrong_type", "config must be a map")
        out = {}
        for ck, name in enumerate(CONFIG_FIELDS):
            if ck not in c:
                if ck == CFG_COMPACT:       # optional: configs without it are not compact
                    out[name] = False
                    continue
                raise FrameError("missing_key", f"config key {ck} ({name})")
            v = c[ck]
            if ck in _CFG_F32:
                out[name] = _f32(v, name)
            elif ck in _CFG_TSTR:
                if type(v) is not str:
                    raise FrameError("wrong_type", f"{name} must be a tstr")
                out[name] = v
            elif ck in (CFG_ERROR_FEEDBACK, CFG_COMPACT):
                if type(v) is not bool:
                    raise FrameError("wrong_type", f"{name} must be a bool")
                out[name] = v
            else:
                if not _is_uint(v):
                    raise FrameError("wrong_type", f"{name} must be a uint")
                if ck in _CFG_LIMIT and v > _CFG_LIMIT[ck]:
                    raise FrameError("bad_value", f"{name}={v} out of range 0..{_CFG_LIMIT[ck]}")
                out[name] = v
        for ck in c:
            if not (_is_uint(ck) and ck < len(CONFIG_FIELDS)):
                raise FrameError("unknown_key", f"config key {ck!r}")
        if out["d"] < 1 or out["d"] > D_MAX:
            raise FrameError("bad_d", f"d={out['d']}")
        return Config(job=job, round=rnd, config=JobConfig(**out))
    d = _d(p)
    if kind == KIND_SNAPSHOT:
        model = _values(_bstr(p, K_MODEL, "model"), FMT_F32, d, "model")
        return Snapshot(job=job, version=rnd, model=model)
    T = _uint(p, K_T, "T")
    if T > d:
        raise FrameError("t_gt_d", f"T={T} > d={d}")
    fmt = _fmt(p)
    idx = _sparse(p, d, T)
    vals = _values(_bstr(p, K_VALUES, "values"), fmt, T, "values")
    return Delta(job=job, base=rnd, d=d, indices=idx, values=vals, fmt=fmt)


def _check_job(job: int, rnd: int) -> None:
    if type(job) is not int or job < 0 or job >= 2**64:
        raise ValueError(f"job must be a uint64, got {job!r}")
    if type(rnd) is not int or rnd < 0 or rnd >= 2**64:
        raise ValueError(f"round/version must be a uint64, got {rnd!r}")


def _f32_bytes(x: float, what: str) -> bytes:
    if not math.isfinite(x):
        raise ValueError(f"{what} must be finite, got {x!r}")
    try:
        return struct.pack("<f", x)
    except OverflowError:
        raise ValueError(f"{what}={x!r} is out of float32 range") from None


def encode_config(job: int, rnd: int, cfg: JobConfig, key: bytes) -> bytes:
    """Config message (kind 1, retained on cat/<job>/config); rnd = the current round."""
    _check_job(job, rnd)
    c: dict[int, object] = {}
    for ck, name in enumerate(CONFIG_FIELDS):
        v = getattr(cfg, name)
        if ck in _CFG_F32:
            c[ck] = _f32_bytes(float(v), name)
        elif ck in _CFG_TSTR:
            if not isinstance(v, str):
                raise ValueError(f"{name} must be a str")
            c[ck] = v
        elif ck == CFG_ERROR_FEEDBACK:
            c[ck] = bool(v)
        elif ck == CFG_COMPACT:
            if v:                       # written only when true: other configs stay as before
                c[ck] = True
        else:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
            if ck in _CFG_LIMIT and v > _CFG_LIMIT[ck]:
                raise ValueError(f"{name}={v} out of range 0..{_CFG_LIMIT[ck]}")
            c[ck] = int(v)
    if not 1 <= c[CFG_D] <= D_MAX:
        raise ValueError(f"d must be in 1..2**32-1, got {c[CFG_D]}")
    payload = cbor2.dumps({K_VERSION: VERSION, K_KIND: KIND_CONFIG, K_JOB: job,
                           K_ROUND: rnd, K_CONFIG: c}, canonical=True)
    return _wrap(key, KID_GW, payload)


def encode_snapshot(job: int, version: int, model_f32: np.ndarray | Sequence[float], key: bytes) -> bytes:
    """Full model snapshot (kind 2, retained on cat/<job>/model): d float32 values."""
    _check_job(job, version)
    m = np.asarray(model_f32)
    if m.ndim != 1 or not 1 <= len(m) <= D_MAX:
        raise ValueError("model must be a 1-D array with 1..2**32-1 entries")
    if m.dtype != np.float32:
        raise ValueError(f"model must be float32 (the edges' dtype), got {m.dtype}")
    if not bool(np.all(np.isfinite(m))):
        raise ValueError("model has a non-finite value")
    payload = cbor2.dumps({K_VERSION: VERSION, K_KIND: KIND_SNAPSHOT, K_JOB: job,
                           K_ROUND: version, K_D: len(m), K_MODEL: m.astype("<f4").tobytes()},
                          canonical=True)
    return _wrap(key, KID_GW, payload)


def encode_delta(job: int, base: int, indices: np.ndarray | Sequence[int],
                 values_f32: np.ndarray | Sequence[float], key: bytes, fmt: int = FMT_F32,
                 *, d: int) -> bytes:
    """Sparse model delta (kind 3) from version base to base + 1: x[j] += v in float32.

    values must already be representable in fmt (use round_values and apply the rounded
    values to the gateway's own model), so gateway and edges stay bitwise equal."""
    _check_job(job, base)
    if fmt not in (FMT_F32, FMT_F16):
        raise ValueError(f"fmt must be 0 or 1, got {fmt!r}")
    if type(d) is not int or not 1 <= d <= D_MAX:
        raise ValueError(f"d must be in 1..2**32-1, got {d!r}")
    idx = np.asarray(indices, dtype=np.int64)
    vals = np.asarray(values_f32)
    if idx.ndim != 1 or vals.ndim != 1 or len(idx) != len(vals):
        raise ValueError("indices and values must be 1-D and of equal length")
    if vals.dtype != np.float32:
        raise ValueError(f"values must be float32, got {vals.dtype}")
    T = len(idx)
    if T > d:
        raise ValueError(f"T={T} > d={d}")
    if T and (idx[0] < 0 or idx[-1] >= d or not bool(np.all(idx[1:] > idx[:-1]))):
        raise ValueError("indices must be strictly ascending in [0, d)")
    if not bool(np.all(np.isfinite(vals))):
        raise ValueError("values must be finite")
    rounded = round_values(vals, fmt)
    if not np.array_equal(rounded.view(np.uint32), vals.view(np.uint32)):
        raise ValueError("values are not exactly representable in float16: round_values() them first")
    code, packed = _pack_indices(idx, d)
    raw = vals.astype("<f2" if fmt == FMT_F16 else "<f4").tobytes()
    payload = cbor2.dumps({K_VERSION: VERSION, K_KIND: KIND_DELTA, K_JOB: job, K_ROUND: base,
                           K_D: d, K_T: T, code: packed, K_FMT: fmt, K_VALUES: raw},
                          canonical=True)
    return _wrap(key, KID_GW, payload)


def delta_frame_length(d: int, entries: int, fmt: int = FMT_F32, job: int = 0, rnd: int = 0) -> int:
    """Exact bytes of encode_delta(job, rnd, ...) carrying `entries` values of a d-entry model.

    Map of 9 keys (0, 1, 2, 4, 6, 7, index code, 10, 11): version, kind and fmt take one
    byte each, job, base round, d and T a head each, the index field and the values a bstr."""
    w = 2 if fmt == FMT_F16 else 4
    ib = index_code(d, entries)[1]
    vb = entries * w
    p = (1 + 9 + 1 + 1 + 1 + head_len(job) + head_len(rnd) + head_len(d) + head_len(entries)
         + head_len(ib) + ib + head_len(vb) + vb)
    return ENVELOPE_FIXED + head_len(p) + p


def snapshot_frame_length(d: int, job: int = 0, rnd: int = 0) -> int:
    """Exact bytes of encode_snapshot(job, rnd, model) for a d-entry float32 model.

    Map of 6 keys (0, 1, 2, 4, 6, 16): version and kind one byte each, job, version and d a
    head each, the model a bstr of 4d bytes."""
    vb = 4 * d
    p = 1 + 6 + 1 + 1 + head_len(job) + head_len(rnd) + head_len(d) + head_len(vb) + vb
    return ENVELOPE_FIXED + head_len(p) + p
