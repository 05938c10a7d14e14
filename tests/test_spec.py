"""The points where the written spec (docs/wire-format.md, docs/protocol.md) had to decide
what the code does: downlink publish order, the round's arithmetic, the value format of a
job, the kid and topic spellings, the compact update's binding to its job, and the list of
reasons the gateway counts. Each test holds code and doc to the same answer.
"""
from __future__ import annotations

import re
import secrets
import struct
import threading
from array import array
from pathlib import Path

import cbor2
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from aggregator.gateway import pipeline, wire
from aggregator.gateway.config import parse_job
from aggregator.gateway.mqtt_front import topic_node
from aggregator.gateway.pipeline import ACCEPTED, REJECTED, Aggregator
from aggregator.gateway.service import Endpoints
from aggregator.ops.demo import ServiceThread
from edge import frame

ROOT = Path(__file__).resolve().parent.parent
D = 40


def make_job(tmp_path: Path, nodes: int = 3, fmt: str = "f32", compact: bool = False, job_id: int = 4,
             node_keys: dict[int, bytes] | None = None, scheme: str = "s", mqtt_at=None):
    node_keys = node_keys or {n: secrets.token_bytes(32) for n in range(nodes)}
    raw = {"job": {"id": job_id, "rounds": 100}, "model": {"kind": "logistic", "features": D, "L": 1.0},
           "training": {"scheme": scheme, "rule": "cat", "k_cap": 8, "fmt": fmt, "compact": compact},
           "cost": {"profile": "ieee802154-6lowpan-coap"},
           "rounds": {"quorum": 1.0, "deadline_s": 100.0},
           "nodes": {str(n): k.hex() for n, k in node_keys.items()},
           "downlink": {"key": secrets.token_bytes(32).hex()}, "state": {"dir": str(tmp_path / f"state{job_id}")}}
    if mqtt_at:
        raw["transports"] = {"mqtt": {"host": mqtt_at[0], "port": mqtt_at[1]}}
    return parse_job(raw), node_keys


def update(job, key: bytes, node: int, rnd: int, idx, vals, fmt: int = 0, scheme: int = frame.SCHEME_S) -> bytes:
    """A real edge-encoded update of `job` (compact when the job is)."""
    T = len(idx)
    buf = bytearray(frame.buffer_size(job.d, max(T, 8), scheme, fmt))
    n = frame.encode_update(buf, key, job.job_id, node, rnd, scheme, job.d, T, array("I", idx),
                            array("f", vals), fmt, None, job.compact)
    return bytes(buf[:n])


# ------------------------------------------------------------ the round's arithmetic

def test_round_close_is_the_documented_two_roundings(tmp_path):
    """wire-format §3.4: sum in float64 in node order, / n in float64, round to float32 (v),
    then x <- float32(x + v); deltas travel as float32 even in a float16 job."""
    job, keys = make_job(tmp_path, fmt="f16")
    agg = Aggregator(job)
    agg.state.model[:] = np.float32(1.0) / np.float32(3.0)     # not exact in binary16
    before = agg.state.model.copy()
    sent = {0: ([1, 5, 9], [0.1, 0.2, 0.3]), 1: ([5, 9, 30], [1 / 3, 1e-3, 7.0]), 2: ([1, 2, 39], [2.0, -0.5, 0.25])}
    for node in (2, 0, 1):                                     # arrival order is not node order
        idx, vals = sent[node]
        out = agg.submit(update(job, keys[node], node, 0, idx, vals, fmt=1), "t")
        assert out.status == ACCEPTED
    assert out.closed is not None
    # the independent computation, from the doc
    s = np.zeros(D, np.float64)
    touched = np.zeros(D, bool)
    for node in sorted(sent):
        idx, vals = sent[node]
        f16 = np.array(vals, np.float32).astype(np.float16).astype(np.float64)   # as decoded
        s[idx] += f16
        touched[idx] = True
    j = np.flatnonzero(touched)
    v = (-(s[j] / 3)).astype(np.float32)                       # first rounding
    want = before.copy()
    want[j] = (before[j] + v).astype(np.float32)               # second rounding, in float32
    assert agg.state.model.tobytes() == want.tobytes()
    assert out.closed.delta.values.tobytes() == v.tobytes()
    # the delta message carries exactly v, as float32 (format 0), in this float16 job
    p = cbor2.loads(cbor2.loads(agg.delta_message(0)).value[2])
    assert p[10] == wire.FMT_F32 and p[11] == v.astype("<f4").tobytes()
    assert not np.array_equal(agg.state.model, agg.state.model.astype(np.float16).astype(np.float32))


# ------------------------------------------------------------ value format

def test_an_update_in_the_other_format_is_refused_and_counted_as_a_strike(tmp_path):
    job, keys = make_job(tmp_path, fmt="f16")
    agg = Aggregator(job)
    before = agg.state.model.tobytes()
    out = agg.submit(update(job, keys[0], 0, 0, [1, 2], [0.5, 0.25], fmt=0), "t")
    assert (out.status, out.reason, out.node) == (REJECTED, "wrong_fmt", 0)
    assert "wrong_fmt" not in pipeline.NO_STRIKE
    assert agg.state.model.tobytes() == before and not agg.pending
    assert agg.submit(update(job, keys[0], 0, 0, [1, 2], [0.5, 0.25], fmt=1), "t").status == ACCEPTED


# ------------------------------------------------------------ kid and topic spellings

@pytest.mark.parametrize("kid", [b"", b"\x01", b"\x00\x01\x02"])
def test_a_kid_that_is_not_two_bytes_is_a_structure_error_on_both_sides(tmp_path, kid):
    job, keys = make_job(tmp_path)
    good = update(job, keys[1], 1, 0, [3], [0.5])
    env = cbor2.loads(good)
    bad = cbor2.dumps(cbor2.CBORTag(17, [env.value[0], {4: kid}, env.value[2], env.value[3]]))
    assert Aggregator(job).submit(bad, "t").reason == "structure"
    with pytest.raises(ValueError, match="structure"):          # the edge's downlink parser
        frame.peek(bad)


@pytest.mark.parametrize("tail,node", [("0", 0), ("2", 2), ("65535", 65535), ("02", None), ("00", None),
                                       ("+2", None), ("2 ", None), ("\u0662", None), ("65536", None),
                                       ("", None), ("2/x", None)])
def test_only_the_canonical_topic_spelling_names_a_node(tail, node):
    assert topic_node(f"cat/4/up/{tail}", "cat/4/") == node
    assert topic_node(f"cat/5/up/{tail}", "cat/4/") is None


# ------------------------------------------------------------ compact updates bound to their job

def test_a_compact_frame_verifies_only_in_its_own_job(tmp_path):
    """One node key shared by two compact jobs with equal lengths (the case the external AAD
    closes): a frame of job 4 replayed into job 5 fails its MAC and changes nothing."""
    keys = {n: secrets.token_bytes(32) for n in range(2)}
    job4, _ = make_job(tmp_path, nodes=2, compact=True, job_id=4, node_keys=keys)
    job5, _ = make_job(tmp_path, nodes=2, compact=True, job_id=5, node_keys=keys)
    plain, _ = make_job(tmp_path, nodes=2, compact=False, job_id=6, node_keys=keys)
    data = update(job4, keys[0], 0, 0, [1, 7], [0.5, -0.25])
    assert cbor2.loads(cbor2.loads(data).value[2])[1] == 4        # kind 4, carries no job
    assert Aggregator(job4).submit(data, "t").status == ACCEPTED
    for other in (job5, plain):
        agg = Aggregator(other)
        out = agg.submit(data, "t")
        assert (out.status, out.reason) == (REJECTED, "bad_mac")
        assert not agg.pending and not agg.state.model.any()


# ------------------------------------------------------------ every counted reason is in the spec

def _reason_table(doc: str, heading: str) -> set[str]:
    part = doc.split(heading, 1)[1]
    rows = []
    for line in part.splitlines()[1:]:
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    return {m.group(1) for r in rows[2:] if (m := re.match(r"\| `([a-z0-9_]+)` \|", r))}


def test_the_spec_lists_exactly_the_reasons_the_gateway_counts():
    doc = (ROOT / "docs" / "wire-format.md").read_text()
    decoder = _reason_table(doc, "Decoder (`wire.REASONS`)")
    rounds = _reason_table(doc, "Round logic (`pipeline.PIPELINE_REASONS`)")
    assert decoder == set(wire.REASONS)
    assert rounds == set(pipeline.PIPELINE_REASONS)
    strikes = {m.group(1) for m in re.finditer(r"\| `([a-z0-9_]+)` \|[^\n]*\| yes \|", doc)}
    assert strikes == set(pipeline.PIPELINE_REASONS) - pipeline.NO_STRIKE


# ------------------------------------------------------------ downlink publish order

@pytest.mark.e2e
def test_mqtt_downlink_goes_out_delta_model_then_config(tmp_path, mosquitto_broker):
    """protocol.md: on close the gateway publishes the delta, the snapshot and last the config
    (the go signal); a subscriber of the real broker sees them in that order. A frame on a
    non-canonical topic (up/01) is refused as topic_mismatch."""
    host, port = mosquitto_broker.host, mosquitto_broker.port
    job, keys = make_job(tmp_path, nodes=2, mqtt_at=(host, port))
    seen: list[tuple[str, int, bool]] = []
    got_config_1 = threading.Event()
    sub_ready = threading.Event()

    def on_message(client, userdata, msg):
        p = cbor2.loads(cbor2.loads(msg.payload).value[2])
        seen.append((msg.topic.rsplit("/", 1)[1], p[4], bool(msg.retain)))
        if msg.topic.endswith("config") and p[4] == 1:
            got_config_1.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="order-observer")
    sub.on_message = on_message
    sub.on_subscribe = lambda *a: sub_ready.set()
    sub.connect(host, port, keepalive=30)
    sub.loop_start()
    svc = ServiceThread(job, Endpoints(mqtt=(host, port)))
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="order-edges")
    try:
        svc.start(timeout=20)
        sub.subscribe("cat/4/#", qos=1)
        assert sub_ready.wait(10)
        pub.connect(host, port, keepalive=30)
        pub.loop_start()
        pub.publish("cat/4/up/01", update(job, keys[1], 1, 0, [2], [0.5]), qos=1).wait_for_publish(10)
        for node in (0, 1):
            pub.publish(f"cat/4/up/{node}", update(job, keys[node], node, 0, [node + 1], [0.5]),
                        qos=1).wait_for_publish(10)
        assert got_config_1.wait(20), f"no config of round 1; saw {seen}"
        assert svc.service.agg.state.rejected.get("topic_mismatch") == 1
    finally:
        pub.loop_stop()
        pub.disconnect()
        sub.loop_stop()
        sub.disconnect()
        svc.stop()
    live = [(topic, rnd) for topic, rnd, retained in seen if not retained]
    assert live[-3:] == [("down", 0), ("model", 1), ("config", 1)], seen
