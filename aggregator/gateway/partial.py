"""Partials: what a shard sends the root for one round (docs/wire-format.md §3.5).

A partial is a COSE_Mac0 like every other message of the format, but between servers: HMAC
256/256 (COSE alg 5, the full 32-byte tag) under the shard's own key, and the shard's name as
the kid. Its payload names the job, the shard, the round and the nodes whose updates it
carries, and carries them in the form the job's rule needs:

* mean: their exact sum (aggregator.gateway.robust.ExactSum): the union of their indices and
  the float64 parts per bin. Exact, so the root's sum of the shards' sums is bit-identical
  to one gateway's sum over every node, whatever the shards.
* trimmed mean, median: every node's update itself (indices, float32 values), since a
  coordinate-wise order statistic cannot be assembled from per-shard summaries.

plus each node's reported loss (telemetry; NaN when it sent none) and the shard's counters.
Decoding refuses with aggregator.gateway.wire.FrameError reasons, like uplink frames.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import cbor2
import numpy as np

from aggregator.gateway import robust, wire
from aggregator.gateway.wire import FrameError

KIND_PARTIAL = 5
ALG_HMAC_256_256 = 5          # RFC 9053 §3.1, Table 2
PROTECTED = b"\xa1\x01\x05"   # {1: 5}
TAG_LEN = 32

K_SHARD = 17
K_NODES = 18
K_SUM = 19
K_UPDATES = 20
K_LOSSES = 21
K_COUNTERS = 22
K_RULE = 23

_BASE_KEYS = frozenset({wire.K_VERSION, wire.K_KIND, wire.K_JOB, wire.K_ROUND, wire.K_D, K_SHARD,
                        K_NODES, K_LOSSES, K_COUNTERS, K_RULE})


@dataclass
class Partial:
    """One shard's contribution to one round."""
    job: int
    shard: str
    round: int
    d: int
    rule: str                                  # robust.RULES
    nodes: list[int]                           # ascending
    total: robust.ExactSum | None = None       # rule "mean"
    updates: list[tuple[int, np.ndarray, np.ndarray]] | None = None  # other rules: (node, idx, vals)
    losses: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # per node, NaN: none
    counters: dict[str, int] = field(default_factory=dict)


def _mac(key: bytes, payload: bytes) -> bytes:
    """HMAC 256/256 over MAC_structure = ["MAC0", protected, h'', payload] (RFC 9052 §6.3)."""
    return hmac.new(key, cbor2.dumps(["MAC0", PROTECTED, b"", payload]), hashlib.sha256).digest()


def _u32(a: np.ndarray) -> bytes:
    return np.asarray(a, dtype="<u4").tobytes()


def encode(p: Partial, key: bytes) -> bytes:
    """The partial as a COSE_Mac0 under the shard's key (deterministic CBOR)."""
    if len(key) != 32:
        raise ValueError(f"MAC key must be 32 bytes, got {len(key)}")
    if p.rule not in robust.RULES:
        raise ValueError(f"unknown rule {p.rule!r}")
    body: dict[int, object] = {
        wire.K_VERSION: wire.VERSION, wire.K_KIND: KIND_PARTIAL, wire.K_JOB: p.job,
        wire.K_ROUND: p.round, wire.K_D: p.d, K_SHARD: p.shard,
        K_NODES: np.asarray(p.nodes, dtype="<u2").tobytes(),
        K_LOSSES: np.asarray(p.losses, dtype="<f4").tobytes(),
        K_COUNTERS: {str(k): int(v) for k, v in p.counters.items()},
        K_RULE: robust.RULES.index(p.rule),
    }
    if p.rule == "mean":
        t = p.total
        body[K_SUM] = [_u32(t.indices), {int(k): np.asarray(v, dtype="<f8").tobytes() for k, v in t.bins.items()}]
    else:
        body[K_UPDATES] = [[int(n), _u32(i), np.asarray(v, dtype="<f4").tobytes()] for n, i, v in p.updates]
    payload = cbor2.dumps(body, canonical=True)
    msg = cbor2.CBORTag(wire.COSE_MAC0_TAG, [PROTECTED, {wire.HDR_KID: p.shard.encode()}, payload,
                                             _mac(key, payload)])
    return cbor2.dumps(msg, canonical=True)


def _bstr(p: Mapping, k: int, what: str) -> bytes:
    v = p[k]
    if type(v) is not bytes:
        raise FrameError("wrong_type", f"{what} must be a bstr")
    return v


def _array(raw: object, dtype: str, what: str) -> np.ndarray:
    if type(raw) is not bytes:
        raise FrameError("wrong_type", f"{what} must be a bstr")
    size = np.dtype(dtype).itemsize
    if len(raw) % size:
        raise FrameError("values_length", f"{what}: {len(raw)} bytes is not a multiple of {size}")
    return np.frombuffer(raw, dtype=dtype)


def _indices(raw: object, d: int, what: str) -> np.ndarray:
    idx = _array(raw, "<u4", what).astype(np.int64)
    if idx.shape[0] and not bool(np.all(idx[1:] > idx[:-1])):
        raise FrameError("index_order", f"{what} not strictly ascending")
    if idx.shape[0] and idx[-1] >= d:
        raise FrameError("index_range", f"{what}: index {int(idx[-1])} >= d = {d}")
    return idx


def _finite(a: np.ndarray, what: str) -> np.ndarray:
    if not bool(np.all(np.isfinite(a))):
        raise FrameError("non_finite", f"{what} has a non-finite value")
    return a


def open_partial(data: bytes, max_bytes: int) -> tuple[str, bytes, bytes]:
    """The envelope: (shard name, payload, tag), nothing authenticated yet."""
    kid, payload, tag = wire.open_mac0(data, max_bytes, PROTECTED, TAG_LEN, "{1: 5} (HMAC 256/256)")
    if cbor2.dumps(cbor2.CBORTag(wire.COSE_MAC0_TAG, [PROTECTED, {wire.HDR_KID: kid}, payload, tag]),
                   canonical=True) != data:
        raise FrameError("not_deterministic", "envelope not in deterministic encoding")
    try:
        shard = kid.decode()
    except UnicodeDecodeError:
        raise FrameError("unknown_kid", "kid is not a shard name") from None
    return shard, payload, tag


def decode(data: bytes, keys: Mapping[str, bytes], max_bytes: int) -> Partial:
    """Verify (the kid's key in `keys`) and decode a partial; FrameError names the problem."""
    shard, payload, tag = open_partial(data, max_bytes)
    key = keys.get(shard)
    if key is None:
        raise FrameError("unknown_kid", f"no shard {shard[:64]!r}")
    if not hmac.compare_digest(_mac(key, payload), tag):
        raise FrameError("bad_mac", "MAC does not verify")
    # -- authenticated as `shard` from here on
    p = wire._load_payload(payload)
    kind = p.get(wire.K_KIND)
    if p.get(wire.K_VERSION) != wire.VERSION:
        raise FrameError("bad_version", f"version {p.get(wire.K_VERSION)!r}")
    if kind != KIND_PARTIAL:
        raise FrameError("bad_kind", f"kind {kind!r}, expected {KIND_PARTIAL}")
    for k in p:
        if k not in _BASE_KEYS | {K_SUM, K_UPDATES}:
            raise FrameError("unknown_key", f"key {k} in a partial")
    for k in _BASE_KEYS:
        if k not in p:
            raise FrameError("missing_key", f"key {k}")
    job, rnd, d, rule = p[wire.K_JOB], p[wire.K_ROUND], p[wire.K_D], p[K_RULE]
    for what, v in (("job", job), ("round", rnd), ("d", d), ("rule", rule)):
        if not wire._is_uint(v):
            raise FrameError("wrong_type", f"{what} must be a uint")
    if not 1 <= d <= wire.D_MAX:
        raise FrameError("bad_d", f"d={d}")
    if rule >= len(robust.RULES):
        raise FrameError("bad_value", f"rule {rule}")
    rule = robust.RULES[rule]
    if p[K_SHARD] != shard:
        raise FrameError("node_mismatch", "the payload's shard is not the kid")
    nodes = _array(p[K_NODES], "<u2", "nodes").astype(np.int64)
    if not nodes.shape[0]:
        raise FrameError("bad_value", "a partial carries at least one node")
    if not bool(np.all(nodes[1:] > nodes[:-1])):
        raise FrameError("index_order", "nodes not strictly ascending")
    losses = _array(p[K_LOSSES], "<f4", "losses").astype(np.float32)
    if losses.shape[0] != nodes.shape[0]:
        raise FrameError("values_length", "one loss per node")
    counters = p[K_COUNTERS]
    if not isinstance(counters, Mapping) or not all(type(k) is str and wire._is_uint(v) for k, v in counters.items()):
        raise FrameError("wrong_type", "counters must map names to uints")
    out = Partial(job, shard, rnd, d, rule, nodes.tolist(), losses=losses, counters=dict(counters))
    want = K_SUM if rule == "mean" else K_UPDATES
    if want not in p or (K_SUM if want == K_UPDATES else K_UPDATES) in p:
        raise FrameError("missing_key", f"rule {rule} needs key {want} (and only it)")
    if rule == "mean":
        s = p[K_SUM]
        if not isinstance(s, list) or len(s) != 2 or not isinstance(s[1], Mapping):
            raise FrameError("structure", "sum must be [indices, {bin: parts}]")
        idx = _indices(s[0], d, "sum indices")
        bins = {}
        for k, raw in s[1].items():
            if not wire._is_uint(k) or k >= robust.BINS:
                raise FrameError("bad_value", f"bin {k!r}")
            vals = _finite(_array(raw, "<f8", f"bin {k}").astype(np.float64), f"bin {k}")
            if vals.shape[0] != idx.shape[0]:
                raise FrameError("values_length", f"bin {k}: one part per index")
            bins[int(k)] = vals
        out.total = robust.ExactSum(idx, bins, nodes.shape[0])
    else:
        ups = p[K_UPDATES]
        if not isinstance(ups, list) or len(ups) != nodes.shape[0]:
            raise FrameError("structure", "one update per node")
        out.updates = []
        for u, want_n in zip(ups, out.nodes):
            if not isinstance(u, list) or len(u) != 3 or u[0] != want_n:
                raise FrameError("structure", "updates must be [node, indices, values] in the order of the nodes")
            n, raw_i, raw_v = u
            idx = _indices(raw_i, d, f"node {n} indices")
            vals = _finite(_array(raw_v, "<f4", f"node {n} values").astype(np.float32), f"node {n}")
            if vals.shape[0] != idx.shape[0]:
                raise FrameError("values_length", f"node {n}: one value per index")
            out.updates.append((n, idx, vals))
    return out


MQTT_MAX_PACKET = 268_435_455        # MQTT's largest packet (remaining length, 4 bytes of 7 bits)


def max_bytes(job, nodes: int) -> int:
    """The largest partial a shard of `nodes` nodes can send for `job`: for the mean, 4-byte
    indices and a part per bin on every coordinate its updates can touch; for the other
    rules, every update (4-byte indices and values, at most the T cap each). Root and
    broker (`broker-config`'s max_packet_size) size their limits by it."""
    from aggregator.gateway.pipeline import t_cap
    cap = t_cap(job)
    if job.aggregation.rule == "mean":
        body = (4 + 8 * robust.BINS) * min(job.d, nodes * cap)
    else:
        body = (8 * cap + 16) * nodes
    return min(MQTT_MAX_PACKET, body + 6 * nodes + 4096)


def digest(data: bytes) -> str:
    """What identifies a partial's content (duplicates are byte-identical)."""
    return hashlib.sha256(data).hexdigest()


def counters_of(summary: dict) -> dict[str, int]:
    """A shard's cumulative counters from its Aggregator.summary(): frames, duplicates and
    refusals by reason (`rejected.<reason>`), for the root's fleet view."""
    out = {"frames": sum(n["frames"] for n in summary["nodes"].values()),
           "duplicates": sum(n["duplicates"] for n in summary["nodes"].values())}
    for reason, n in summary["rejected"].items():
        out[f"rejected.{reason}"] = n
    return out


def loss_or_nan(telemetry: tuple | None) -> float:
    return float(telemetry[0]) if telemetry else math.nan
