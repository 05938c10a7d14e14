"""edge.snapshot.SnapshotSink (a snapshot applied block by block, for small heaps) against
edge.frame.apply_model (the whole message at once): same model, same version, same refusal
reasons, and the model untouched on refusal. Runs on CPython; the device side runs in every
CoAP round of test_round_mp.py / test_budget.py (edge/node.py syncs through the sink there).
"""

from __future__ import annotations

from array import array

import numpy as np
import pytest

from aggregator.gateway import wire
from edge import cose, frame
from edge.snapshot import SnapshotSink
from edge.cbor import FrameError

KEY = bytes(range(100, 132))


def snapshot(d: int, version: int = 7, job: int = 3, seed: int = 0) -> bytes:
    model = np.random.default_rng(seed).normal(size=d).astype(np.float32)
    return wire.encode_snapshot(job, version, model, KEY)


def by_apply(msg: bytes, d: int, job: int | None = 3):
    model = array("f", [1.5] * d)
    try:
        v = frame.apply_model(msg, KEY, model, -1, job)
        return ("ok", v, bytes(model))
    except FrameError as e:
        return ("err", e.reason, bytes(model))


def by_sink(msg: bytes, d: int, piece: int, job: int | None = 3, stage_d: int | None = None):
    model = array("f", [1.5] * d)
    stage = array("f", [0.0] * (stage_d or d))
    sink = SnapshotSink(KEY, model, stage, job)
    try:
        for i in range(0, len(msg), piece):
            sink.feed(msg[i:i + piece])
        v = sink.finish()
        return ("ok", v, bytes(model))
    except FrameError as e:
        return ("err", e.reason, bytes(model))


@pytest.mark.parametrize("d", [1, 2, 7, 30, 1024, 4097])
@pytest.mark.parametrize("piece", [1, 3, 16, 64, 1024, 1 << 20])
def test_valid_snapshots_any_piece_size(d, piece):
    msg = snapshot(d, version=70000 if d > 1000 else 5, job=300 if d == 7 else 3)
    job = 300 if d == 7 else 3
    want = by_apply(msg, d, job)
    assert want[0] == "ok"
    assert by_sink(msg, d, piece, job) == want


def _mutations(msg: bytes) -> list[tuple[str, bytes]]:
    out = [("truncated", msg[:-1]), ("extra", msg + b"\0"), ("short", msg[:5]), ("empty", b""),
           ("one", msg[:1]), ("not_mac0", b"\xd2" + msg[1:])]
    for i in (1, 3, 8, 9, 10, 14, 17, 20, 25, 40, len(msg) // 2, len(msg) - 9, len(msg) - 1):
        b = bytearray(msg)
        b[i] ^= 0x41
        out.append((f"flip{i}", bytes(b)))
    return out


@pytest.mark.parametrize("piece", [1, 5, 64])
def test_corrupt_messages_refused_for_the_same_reason(piece):
    msg = snapshot(40)
    for name, bad in _mutations(msg):
        want = by_apply(bad, 40)
        got = by_sink(bad, 40, piece)
        assert want[0] == "err", name
        assert got == want, (name, got[:2], want[:2])


def _payload_variants() -> list[tuple[str, bytes, int | None]]:
    """Authentic (correctly MACed) messages that are still wrong."""
    import cbor2
    good = np.arange(40, dtype=np.float32)
    base = {0: 2, 1: 2, 2: 3, 4: 9, 6: 40, 16: good.tobytes()}

    def mk(p: dict) -> bytes:
        return cose.wrap(KEY, cose.KID_GW, cbor2.dumps(p, canonical=True))

    nan = good.copy()
    nan[17] = np.nan
    out = [
        ("job", mk(base), 4),
        ("d_mismatch", mk({**base, 6: 41}), 3),
        ("bad_d", mk({**base, 6: 0}), 3),
        ("values_length", mk({**base, 16: good.tobytes()[:-4]}), 3),
        ("non_finite", mk({**base, 16: nan.tobytes()}), 3),
        ("bad_version", mk({**base, 0: 1}), 3),
        ("bad_kind", mk({**base, 1: 5}), 3),
        ("delta_kind", mk({**base, 1: 3}), 3),
        ("missing_round", mk({k: v for k, v in base.items() if k != 4}), 3),
        ("missing_model", mk({k: v for k, v in base.items() if k != 16}), 3),
        ("t_key", mk({**base, 7: 3}), 3),
        ("wrong_type", mk({**base, 4: b"x"}), 3),
        ("unknown_key", mk({**base, 12: 1}), 3),
        ("after_model", mk({**base, 17: 1}), 3),
        ("model_not_bstr", mk({**base, 16: 5}), 3),
        ("not_map", cose.wrap(KEY, cose.KID_GW, cbor2.dumps([1, 2])), 3),
        ("kid", cose.wrap(KEY, b"xx", cbor2.dumps(base, canonical=True)), 3),
        ("wrong_key", cose.wrap(bytes(32), cose.KID_GW, cbor2.dumps(base, canonical=True)), 3),
    ]
    return out


@pytest.mark.parametrize("piece", [1, 7, 64, 4096])
def test_authentic_but_wrong_payloads(piece):
    reasons = set()
    for name, msg, job in _payload_variants():
        want = by_apply(msg, 40, job)
        got = by_sink(msg, 40, piece, job)
        assert got == want, (name, got[:2], want[:2])
        reasons.add(want[1])
    assert {"job_mismatch", "d_mismatch", "values_length", "non_finite", "bad_version", "bad_kind",
            "missing_key", "unknown_key", "wrong_type", "unknown_kid", "bad_mac"} <= reasons


def test_stage_must_hold_the_model():
    with pytest.raises(ValueError):
        SnapshotSink(KEY, array("f", [0.0] * 8), array("f", [0.0] * 7))
