"""The ingress pipeline under misbehaving nodes: strikes, rate-limiting, quarantine and its
persistence, the operator's clear (CLI, running and stopped gateway), the non-finite guard,
refusing a huge declared d before sizing anything from it, bounded metrics logging, and
configuration of the new [security] / [aggregation] sections.

Why: an honest node must never be punished for what an attacker without its key can send
(spoofed kids, replays), while a node that keeps sending authenticated garbage must stop
costing the gateway work, and none of this may change the model or the round.
"""
from __future__ import annotations

import json
import secrets
import struct
import tracemalloc
from array import array
from pathlib import Path

import cbor2
import numpy as np
import pytest

from aggregator import cli
from aggregator.gateway import keys as keymod, wire
from aggregator.gateway.config import ConfigError, parse_job
from aggregator.gateway.metrics import MetricsLog, read_log
from aggregator.gateway.pipeline import ACCEPTED, ALL_REASONS, DUPLICATE, LOG_BURST, REJECTED, Aggregator
from aggregator.gateway.state import Store
from edge import frame

D = 30


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make_job(tmp_path: Path, nodes: int = 3, security: dict | None = None, aggregation: dict | None = None,
             quorum: float = 1.0, scheme: str = "s", k_cap: int = 8):
    node_keys = {n: secrets.token_bytes(32) for n in range(nodes)}
    raw = {"job": {"id": 4, "rounds": 1000}, "model": {"kind": "logistic", "features": D, "L": 1.0},
           "training": {"scheme": scheme, "rule": "identity" if scheme == "identity" else "cat", "k_cap": k_cap},
           "cost": {"profile": "ieee802154-6lowpan-coap"},
           "rounds": {"quorum": quorum, "deadline_s": 100.0},
           "nodes": {str(n): k.hex() for n, k in node_keys.items()},
           "downlink": {"key": secrets.token_bytes(32).hex()}, "state": {"dir": str(tmp_path / "state")}}
    if security is not None:
        raw["security"] = security
    if aggregation is not None:
        raw["aggregation"] = aggregation
    return parse_job(raw), node_keys


def update(key: bytes, node: int, rnd: int, idx=(1, 5, 9), vals=None, d: int = D, job: int = 4) -> bytes:
    vals = vals if vals is not None else [0.01 * (k + 1) for k in range(len(idx))]
    buf = bytearray(frame.buffer_size(d, max(len(idx), 8), frame.SCHEME_S, 0))
    n = frame.encode_update(buf, key, job, node, rnd, frame.SCHEME_S, d, len(idx), array("I", idx),
                            array("f", vals), 0)
    return bytes(buf[:n])


def signed(key: bytes, node: int, payload: dict | bytes) -> bytes:
    p = payload if isinstance(payload, bytes) else cbor2.dumps(payload, canonical=True)
    return wire._wrap(key, node.to_bytes(2, "big"), p)


def bad_payload(node: int, rnd: int, salt: int = 0) -> dict:
    """A signed update whose indices are not ascending (index_order); salt makes it distinct."""
    b = wire.index_bits(D)
    acc = 0
    for j in (9, 3):
        acc = (acc << b) | j
    nbytes = (2 * b + 7) // 8
    raw = (acc << (nbytes * 8 - 2 * b)).to_bytes(nbytes, "big")
    return {0: 2, 1: 0, 2: 4, 3: node, 4: rnd, 5: 1, 6: D, 7: 2, 8: raw, 10: 0,
            11: struct.pack("<2f", 0.1, 0.001 * salt)}


def state_of(agg: Aggregator) -> tuple:
    return agg.state.model.tobytes(), agg.state.round, tuple(sorted(agg.pending))


# ------------------------------------------------------------------------------ strikes

def test_repeated_bad_frames_rate_limit_then_quarantine_with_reason_persisted(tmp_path):
    job, k = make_job(tmp_path, security={"rate_limit_after": 3, "quarantine_after": 6,
                                          "rate_limit_per_s": 1.0, "rate_limit_burst": 1})
    clock = Clock()
    agg = Aggregator(job, Store(job.state_dir), MetricsLog(tmp_path / "m.jsonl"), clock)
    before = state_of(agg)
    reasons = []
    for i in range(12):
        clock.t += 0.4                 # 2.5 frames/s: over the 1/s limit once rate-limited
        reasons.append(agg.submit(signed(k[2], 2, bad_payload(2, 0, i)), "t").reason)
    assert reasons[:3] == ["index_order"] * 3
    assert "rate_limited" in reasons
    assert 2 in agg.state.quarantined and reasons[-1] == "quarantined"
    assert "6 bad frames" in agg.state.quarantined[2] and "index_order x6" in agg.state.quarantined[2]
    assert state_of(agg) == before
    # persisted at once (not only at the next round close), with the reason
    assert Store(job.state_dir).load().quarantined == {2: agg.state.quarantined[2]}
    ev = [e for e in read_log(tmp_path / "m.jsonl") if e["event"] in ("quarantine", "rate_limit")]
    assert [e["event"] for e in ev] == ["rate_limit", "quarantine"] and ev[1]["node"] == 2
    # a valid frame from the quarantined node is refused too; the others are unaffected
    assert agg.submit(update(k[2], 2, 0), "t").reason == "quarantined"
    assert agg.submit(update(k[0], 0, 0), "t").status == ACCEPTED
    # a restarted gateway keeps the quarantine
    again = Aggregator(job, Store(job.state_dir), clock=Clock())
    assert again.submit(update(k[2], 2, 0), "t").reason == "quarantined"


def test_spoofed_kid_and_replays_never_count_against_an_honest_node(tmp_path):
    job, k = make_job(tmp_path, security={"rate_limit_after": 2, "quarantine_after": 3}, quorum=3.0)
    clock = Clock()
    agg = Aggregator(job, Store(job.state_dir), clock=clock)
    old = update(k[1], 1, 0)
    assert agg.submit(old, "t").status == ACCEPTED
    # attacker without node 1's key: garbage under its kid, with and without payload checks
    for i in range(500):
        clock.t += 0.001
        assert agg.submit(signed(secrets.token_bytes(32), 1, bad_payload(1, 0, i)), "t").reason == "bad_mac"
    for i in range(50):
        assert agg.submit(old, "t", topic_node=0).reason == "topic_mismatch"
        assert agg.submit(old, "t").status == DUPLICATE
    agg.submit(update(k[0], 0, 0), "t")
    agg.submit(update(k[2], 2, 0), "t")              # round 0 closes
    for i in range(50):
        assert agg.submit(old, "t").reason == "stale_round"
    assert 1 not in agg.state.quarantined and not agg._buckets and 1 not in agg._windows
    assert agg.submit(update(k[1], 1, 1), "t").status == ACCEPTED
    # bad_mac is not even attributed to the node in its per-node counters
    assert "bad_mac" not in agg.state.nodes[1].rejected


def test_a_replayed_bad_frame_counts_once(tmp_path):
    job, k = make_job(tmp_path, security={"rate_limit_after": 0, "quarantine_after": 3})
    agg = Aggregator(job, Store(job.state_dir), clock=Clock())
    bad = signed(k[0], 0, bad_payload(0, 0))
    for _ in range(100):
        assert agg.submit(bad, "t").reason == "index_order"
    assert 0 not in agg.state.quarantined and agg.state.rejected["index_order"] == 100
    for i in range(1, 3):
        agg.submit(signed(k[0], 0, bad_payload(0, 0, i)), "t")
    assert 0 in agg.state.quarantined


def test_strikes_expire_after_the_window(tmp_path):
    job, k = make_job(tmp_path, security={"window_s": 10.0, "rate_limit_after": 2, "quarantine_after": 3})
    clock = Clock()
    agg = Aggregator(job, Store(job.state_dir), clock=clock)
    for i in range(2):
        agg.submit(signed(k[0], 0, bad_payload(0, 0, i)), "t")
        clock.t += 1
    assert agg._rate_limited(0) is False and 0 in agg._buckets       # burst tokens left
    clock.t += 20
    assert agg.submit(signed(k[0], 0, bad_payload(0, 0, 7)), "t").reason == "index_order"
    assert 0 not in agg.state.quarantined and len(agg._windows[0]) == 1


# ------------------------------------------------------------------------------ operator clear

def run_cli(*argv: str) -> int:
    return cli.main(list(argv))


def test_cli_clear_on_a_stopped_gateway_applies_at_next_start(tmp_path, capsys):
    job, k = make_job(tmp_path, security={"rate_limit_after": 0, "quarantine_after": 2})
    agg = Aggregator(job, Store(job.state_dir), clock=Clock())
    for i in range(2):
        agg.submit(signed(k[1], 1, bad_payload(1, 0, i)), "t")
    agg.store.close_journal()
    del agg                                                   # "stopped"
    assert run_cli("quarantine", "list", "--state", str(job.state_dir)) == 0
    out = capsys.readouterr().out
    assert "node 1: 2 bad frames" in out and "index_order x2" in out
    assert run_cli("quarantine", "clear", "1", "--state", str(job.state_dir)) == 0
    assert "queued" in capsys.readouterr().out
    run_cli("quarantine", "list", "--state", str(job.state_dir))
    assert "queued: clear node 1" in capsys.readouterr().out
    again = Aggregator(job, Store(job.state_dir), clock=Clock())  # the next start applies it
    assert again.state.quarantined == {} and Store(job.state_dir).load().quarantined == {}
    assert again.submit(update(k[1], 1, 0), "t").status == ACCEPTED
    assert not list(keymod.control_dir(job.state_dir).glob("*.json"))
    assert run_cli("quarantine", "clear", "99", "--state", str(tmp_path / "nope")) == 2


def test_cli_clear_reaches_a_running_gateway_over_coap(tmp_path, capsys):
    from aggregator.ops.demo import ServiceThread, free_udp_port
    from aggregator.gateway.service import Endpoints
    from edge.coap import CoapClient

    job, k = make_job(tmp_path, security={"rate_limit_after": 0, "quarantine_after": 3})
    port = free_udp_port()
    svc = ServiceThread(job, Endpoints(coap=("127.0.0.1", port)))
    svc.start()
    try:
        with CoapClient("127.0.0.1", port, ack_timeout=0.5) as c:
            up = f"/cat/{job.job_id}/up"
            for i in range(3):
                code, body = c.post(up, signed(k[0], 0, bad_payload(0, 0, i)))
                assert body == b"index_order"
            code, body = c.post(up, update(k[0], 0, 0))
            assert body == b"quarantined"
            assert run_cli("quarantine", "list", "--state", str(job.state_dir)) == 0
            assert "node 0: 3 bad frames" in capsys.readouterr().out
            assert run_cli("quarantine", "clear", "0", "--state", str(job.state_dir), "--wait", "10") == 0
            assert "applied by the gateway" in capsys.readouterr().out
            code, body = c.post(up, update(k[0], 0, 0))
            assert body == b"accepted"
            # an operator can also quarantine by hand (a stolen board)
            assert run_cli("quarantine", "add", "1", "--reason", "stolen", "--state", str(job.state_dir),
                           "--wait", "10") == 0
            code, body = c.post(up, update(k[1], 1, 0))
            assert body == b"quarantined"
        assert Store(job.state_dir).load().quarantined == {1: "operator: stolen"}
    finally:
        svc.stop()


def test_bad_control_files_are_set_aside_and_logged(tmp_path):
    job, k = make_job(tmp_path)
    cdir = keymod.control_dir(job.state_dir)
    cdir.mkdir(parents=True)
    (cdir / "1.json").write_text("{not json")
    keymod.submit_request(job.state_dir, "clear", 77)                   # not a node of the job
    agg = Aggregator(job, Store(job.state_dir), MetricsLog(tmp_path / "m.jsonl"), Clock())
    assert sorted(p.suffix for p in cdir.iterdir()) == [".bad", ".bad"]
    assert [e["event"] for e in read_log(tmp_path / "m.jsonl")].count("control_error") == 2
    assert agg.submit(update(k[0], 0, 0), "t").status == ACCEPTED


# ------------------------------------------------------------------------------ crash safety

def test_mid_round_checkpoint_does_not_double_count_after_a_crash(tmp_path):
    job, k = make_job(tmp_path, security={"rate_limit_after": 0, "quarantine_after": 1})
    agg = Aggregator(job, Store(job.state_dir), clock=Clock())
    assert agg.submit(update(k[0], 0, 0), "t").status == ACCEPTED
    agg.submit(signed(k[1], 1, bad_payload(1, 0)), "t")           # quarantine: mid-round checkpoint
    assert agg.submit(update(k[2], 2, 0), "t").status == ACCEPTED
    agg.store.close_journal()
    again = Aggregator(job, Store(job.state_dir), clock=Clock())
    assert again.recover() == 2 and sorted(again.pending) == [0, 2]
    assert again.state.nodes[0].frames == 1 and again.state.nodes[2].frames == 1
    assert again.state.quarantined.keys() == {1}


# ------------------------------------------------------------------------------ model safety

def test_huge_finite_updates_cannot_make_the_model_non_finite(tmp_path):
    job, k = make_job(tmp_path, nodes=2, security={"rate_limit_after": 0, "quarantine_after": 0})
    log = MetricsLog(tmp_path / "m.jsonl")
    agg = Aggregator(job, Store(job.state_dir), log, Clock())
    big = float(np.finfo(np.float32).max)
    for rnd in range(3):
        for n in range(2):
            out = agg.submit(update(k[n], n, rnd, idx=(1, 2), vals=[-big, 0.5]), "t")
            assert out.status == ACCEPTED
    assert np.all(np.isfinite(agg.state.model))
    assert agg.state.model[2] == np.float32(-1.5)                   # ordinary coordinates still move
    wire.decode_downlink(agg.snapshot_message(), job.downlink_key, 1 << 20)   # still encodable
    assert any(e["event"] == "non_finite_delta" for e in read_log(tmp_path / "m.jsonl"))


def test_max_abs_bound_refuses_and_strikes(tmp_path):
    job, k = make_job(tmp_path, aggregation={"max_abs": 1.0},
                      security={"rate_limit_after": 0, "quarantine_after": 2})
    agg = Aggregator(job, clock=Clock())
    assert agg.submit(update(k[0], 0, 0, vals=[0.1, 2.0, 0.1]), "t").reason == "value_bound"
    assert agg.submit(update(k[0], 0, 0, vals=[0.1, -1.5, 0.1]), "t").reason == "value_bound"
    assert 0 in agg.state.quarantined


def test_signed_identity_frame_with_huge_d_is_refused_before_any_allocation(tmp_path):
    job, k = make_job(tmp_path, security={"rate_limit_after": 0, "quarantine_after": 0})
    agg = Aggregator(job, clock=Clock())
    huge = 2**32 - 1
    f = signed(k[0], 0, {0: 2, 1: 0, 2: 4, 3: 0, 4: 0, 5: 0, 6: huge, 7: huge, 10: 0, 11: b"\0" * 4})
    tracemalloc.start()
    out = agg.submit(f, "t")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.reason == "wrong_d" and peak < 1 << 20
    f = signed(k[0], 0, {0: 2, 1: 0, 2: 5, 3: 0, 4: 0, 5: 0, 6: huge, 7: huge, 10: 0, 11: b"\0" * 4})
    assert agg.submit(f, "t").reason == "wrong_job"                 # another job's frame: no strike


def test_an_internal_error_is_counted_not_raised(tmp_path, monkeypatch):
    job, k = make_job(tmp_path)
    agg = Aggregator(job, clock=Clock())

    def boom(*a, **kw):
        raise RuntimeError("bug")

    monkeypatch.setattr(wire, "decode_update_payload", boom)
    out = agg.submit(update(k[0], 0, 0), "t")
    assert out.status == REJECTED and out.reason == "internal_error" and agg.internal_errors == 1


def test_reject_lines_in_the_log_are_rate_limited_but_counters_exact(tmp_path):
    job, k = make_job(tmp_path)
    clock = Clock()
    agg = Aggregator(job, log=MetricsLog(tmp_path / "m.jsonl"), clock=clock)
    for _ in range(5000):
        agg.submit(b"\xff\x00", "t")
    clock.t += 10.0
    agg.submit(b"\xff\x00", "t")
    lines = [e for e in read_log(tmp_path / "m.jsonl") if e["event"] == "reject"]
    assert len(lines) == LOG_BURST + 1 and lines[-1]["suppressed"] == 5000 - LOG_BURST
    assert agg.state.rejected == {"not_cbor": 5001}


def test_a_transport_refusal_is_counted_and_attributed_to_no_node(tmp_path):
    """What the MQTT front does with a topic that names no node (cat/<job>/up/xyz)."""
    job, _ = make_job(tmp_path)
    agg = Aggregator(job, log=MetricsLog(tmp_path / "m.jsonl"), clock=Clock())
    before = agg.state.model.tobytes()
    out = agg.refuse("topic_mismatch", "mqtt", 40)
    assert (out.status, out.reason, out.node) == (REJECTED, "topic_mismatch", None)
    assert agg.state.rejected == {"topic_mismatch": 1} and agg.state.nodes == {}
    assert agg.state.model.tobytes() == before and agg.pending == {}
    with pytest.raises(ValueError, match="unknown refusal reason"):
        agg.refuse("made_up", "mqtt", 40)
    assert agg.state.rejected == {"topic_mismatch": 1}
    assert [e["reason"] for e in read_log(tmp_path / "m.jsonl") if e["event"] == "reject"] == ["topic_mismatch"]


def test_every_reason_is_named():
    assert len(set(ALL_REASONS)) == len(ALL_REASONS)
    assert {"key_expired", "rate_limited", "quarantined", "value_bound"} <= set(ALL_REASONS)


# ------------------------------------------------------------------------------ config

@pytest.mark.parametrize("section,body,msg", [
    ("security", {"window_s": 0}, "security.window_s"),
    ("security", {"quarantine_after": -1}, "security.quarantine_after"),
    ("security", {"bogus": 1}, "security.bogus: unknown key"),
    ("aggregation", {"rule": "mode"}, "aggregation.rule: unknown rule"),
    ("aggregation", {"trim": 0.5}, "aggregation.trim"),
    ("aggregation", {"max_abs": -1.0}, "aggregation.max_abs"),
])
def test_config_errors_name_the_field(tmp_path, section, body, msg):
    with pytest.raises(ConfigError, match=msg):
        make_job(tmp_path, **{section: body})


def test_config_defaults(tmp_path):
    job, _ = make_job(tmp_path)
    assert job.aggregation.rule == "mean" and job.security.quarantine_after == 10
    job, _ = make_job(tmp_path, aggregation={"rule": "median"}, security={"quarantine_after": 0})
    assert job.aggregation.rule == "median" and job.security.quarantine_after == 0


def test_recovery_from_the_previous_checkpoint_replays_every_later_journal(tmp_path):
    """checkpoint.bin lost: checkpoint.prev (round r-1) + journal r-1 + journal r, including a
    round that had closed at its deadline with one node missing."""
    job, k = make_job(tmp_path, quorum=3.0)
    clock = Clock()
    agg = Aggregator(job, Store(job.state_dir), clock=clock)
    for n in range(3):
        agg.submit(update(k[n], n, 0), "t")                  # round 0 closes at quorum
    for n in range(2):
        agg.submit(update(k[n], n, 1), "t")
    clock.t += 200
    assert agg.tick() is not None                             # round 1 closes at its deadline: nodes 0, 1
    agg.submit(update(k[2], 2, 2), "t")                       # acknowledged in round 2
    agg.store.close_journal()
    want = agg.state.model.tobytes()
    store = Store(job.state_dir)
    store.current.unlink()                                    # lost: only checkpoint.prev (round 1) is left
    again = Aggregator(job, Store(job.state_dir), clock=Clock())
    assert again.state.round == 1
    assert again.recover() == 3
    assert again.state.round == 2 and list(again.pending) == [2] and again.state.model.tobytes() == want
    assert [again.state.nodes[n].frames for n in range(3)] == [2, 2, 2]


# ------------------------------------------------------------------ compact updates (kind 4)

def test_config_compact_flag(tmp_path):
    job, _ = make_job(tmp_path)
    assert job.compact is False and job.wire_config().compact is False
    raw_job = {"job": {"id": 4}, "model": {"kind": "logistic", "features": D, "L": 1.0},
               "training": {"compact": True}, "nodes": {"0": "00" * 32}, "downlink": {"key": "11" * 32}}
    job = parse_job(raw_job)
    assert job.compact is True and job.wire_config().compact is True
    raw_job["training"]["compact"] = 1
    with pytest.raises(ConfigError, match="training.compact"):
        parse_job(raw_job)


class DirectLink:
    """An edge link straight into an Aggregator: the real pipeline without a transport."""

    def __init__(self, agg: Aggregator) -> None:
        self.agg = agg
        self.sent: list[bytes] = []

    def get_config(self):
        return self.agg.config_message()

    def get_snapshot(self):
        return self.agg.snapshot_message()

    def get_delta(self, base):
        return self.agg.delta_message(base)

    def send_update(self, mv) -> bool:
        data = bytes(mv)
        self.sent.append(data)
        return self.agg.submit(data, "direct").status in (ACCEPTED, DUPLICATE)

    def wait(self, seconds) -> None:
        pass


def test_compact_job_end_to_end_on_lorawan_sf12(tmp_path):
    """A compact S+Q job on LoRaWAN SF12 (51 B): the edges' frames are kind 4 and fit, the
    real pipeline accepts and applies them round after round, and edges and gateway end with
    the same model. The same frames fail their MAC in a job that is not compact."""
    import dataclasses
    import tomllib

    from aggregator.ops import jobs
    from aggregator.gateway.config import load_job
    from edge import datafile, profile
    from edge.node import EdgeNode

    layout = jobs.prepare(tmp_path / "job", "breast_cancer", nodes=2, rounds=4, scheme="sq", k_cap=8,
                          profile="lorawan-eu868-sf12", compact=True)
    job = load_job(layout.job_path)
    assert job.compact and job.profile["message"]["max_bytes"] == 51
    agg = Aggregator(job, Store(job.state_dir), clock=Clock())
    edges, links = [], []
    for k in range(2):
        c = tomllib.loads(layout.node_configs[k].read_text())
        edges.append(EdgeNode(k, bytes.fromhex(c["key"]), bytes.fromhex(c["downlink_key"]), c["job"],
                              datafile.DataFile(c["data"]), profile.load_profile(c["profile"]),
                              telemetry=False))   # 18 B of telemetry do not fit in 51 B
        links.append(DirectLink(agg))
    for r in range(4):
        for k in range(2):
            assert edges[k].step(links[k]) == "sent", (r, k)
        assert agg.state.round == r + 1
    for k in range(2):
        assert edges[k].cfg["compact"] is True and edges[k].cost.compact is True
        assert len(links[k].sent) == 4
        for data in links[k].sent:
            assert len(data) <= 51
            p = cbor2.loads(cbor2.loads(data).value[2])
            assert p[1] == wire.KIND_COMPACT and 0 not in p and 2 not in p and 6 not in p
    assert sum(n.frames for n in agg.state.nodes.values()) == 8
    assert not agg.state.rejected or not any(agg.state.rejected.values())
    assert agg.state.round == 4 and agg.finished
    for k in range(2):
        assert edges[k].step(links[k]) == "done"
        assert np.array(edges[k].model, dtype=np.float32).tobytes() == agg.state.model.tobytes()
    assert np.any(agg.state.model != 0)
    # the same frames for a job that is not compact: refused, nothing applied
    plain = dataclasses.replace(job, compact=False, state_dir=tmp_path / "plain")
    other = Aggregator(plain, Store(plain.state_dir), clock=Clock())
    before = other.state.model.tobytes()
    assert other.submit(links[0].sent[0], "direct").reason == "bad_mac"   # its MAC covers the compact job
    assert other.state.model.tobytes() == before and other.state.round == 0


def test_update_events_carry_the_boards_compute_seconds(tmp_path):
    """The whole-board budget prices compute from what the board measured (telemetry field 3)."""
    job, k = make_job(tmp_path, nodes=2)
    agg = Aggregator(job, Store(job.state_dir), MetricsLog(tmp_path / "m.jsonl"), Clock())
    buf = bytearray(frame.buffer_size(D, 8, frame.SCHEME_S, 0, ))
    n = frame.encode_update(buf, k[0], 4, 0, 0, frame.SCHEME_S, D, 2, array("I", (1, 5)), array("f", (0.1, 0.2)),
                            0, (0.6, 0.3, 1.75, 0.002))
    assert agg.submit(bytes(buf[:n]), "t").status == ACCEPTED
    assert agg.submit(update(k[1], 1, 0), "t").status == ACCEPTED     # no telemetry
    ups = {e["node"]: e for e in read_log(tmp_path / "m.jsonl") if e["event"] == "update"}
    assert ups[0]["compute_s"] == 1.75 and ups[1]["compute_s"] is None
