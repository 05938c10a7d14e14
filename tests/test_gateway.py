"""The gateway end to end: real Mosquitto, real aiocoap and libcoap peers, real
edge processes, a SIGKILLed gateway, and round book-keeping at the pipeline level."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from aggregator.lab import datasets
from aggregator.gateway import wire
from aggregator.gateway.config import load_job, parse_job
from aggregator.ops.demo import ServiceThread, free_udp_port
from aggregator.gateway.pipeline import ACCEPTED, DUPLICATE, REJECTED, Aggregator
from aggregator.gateway.service import Endpoints
from aggregator.gateway.state import State, Store
from edge import frame
from edge.cat import SCHEME_SQ

import e2e

pytestmark = pytest.mark.e2e   # real processes and peers on loopback

VECTORS = Path(__file__).parent / "vectors"


def full_loss(layout, model: np.ndarray) -> float:
    ds = layout.dataset
    return float(datasets.loss_grad_np(ds.X, ds.y, model.astype(np.float64), 1e-3, "logistic")[0])


def test_mqtt_end_to_end_four_edges_thirty_rounds(tmp_path, mosquitto_broker):
    layout = e2e.make_job(tmp_path / "job", nodes=4, rounds=30, transport="mqtt")
    host, port = mosquitto_broker.host, mosquitto_broker.port
    gw = e2e.serve(layout, "--mqtt", f"{host}:{port}")
    procs = [gw]
    try:
        e2e.wait_for(lambda: any(e.get("event") == "start" for e in e2e.events(layout)), 20, "gateway start", procs)
        procs += [e2e.edge(layout, k, "mqtt", host, port) for k in range(4)]
        e2e.wait_for(lambda: e2e.closed_rounds(layout) >= 30, 120, "30 rounds over MQTT", procs)
        e2e.wait_for(lambda: gw.poll() is not None, 20, "gateway exit after the last round")
        for p in procs[1:]:
            p.wait(30)
            assert p.returncode == 0
    finally:
        e2e.stop(procs)
    rounds = [e for e in e2e.events(layout) if e.get("event") == "round"]
    assert [e["round"] for e in rounds] == list(range(30))
    assert all(e["nodes"] == [0, 1, 2, 3] for e in rounds)
    losses = [e["loss"] for e in rounds]
    assert losses[-1] < 0.5 * losses[0]           # the nodes' reported local losses fall
    model = e2e.final_model(layout)
    assert full_loss(layout, model) < full_loss(layout, np.zeros_like(model)) * 0.4
    # Determinism: an in-process gateway fed the same frames in another arrival order.
    frames = e2e.recorded_frames(layout)
    assert sorted(frames) == list(range(30))
    replayed = e2e.replay(load_job(layout.job_path), frames, order_seed=3)
    assert replayed.tobytes() == model.tobytes()


def test_coap_end_to_end_with_aiocoap_edges(tmp_path):
    layout = e2e.make_job(tmp_path / "job", nodes=3, rounds=12)
    port = free_udp_port()
    gw = e2e.serve(layout, "--coap", f"127.0.0.1:{port}")
    procs = [gw]
    try:
        e2e.wait_for(lambda: any(e.get("event") == "start" for e in e2e.events(layout)), 20, "gateway start", procs)
        procs += [e2e.edge(layout, k, "coap", "127.0.0.1", port) for k in range(3)]
        e2e.wait_for(lambda: e2e.closed_rounds(layout) >= 12, 120, "12 rounds over CoAP", procs)
        for p in procs[1:]:
            p.wait(30)
            assert p.returncode == 0
    finally:
        e2e.stop(procs)
    model = e2e.final_model(layout)
    assert full_loss(layout, model) < full_loss(layout, np.zeros_like(model))
    replayed = e2e.replay(load_job(layout.job_path), e2e.recorded_frames(layout), order_seed=5)
    assert replayed.tobytes() == model.tobytes()


def test_libcoap_client_posts_a_vector_and_reads_the_model_with_block2(tmp_path):
    """libcoap's coap-client as an independent peer: Block1 POST of a test-vector frame, Block2 GET."""
    vec = json.loads((VECTORS / "update_sq_f32_packed_tel.json").read_text())
    dkey = secrets.token_bytes(32)
    raw = {"job": {"id": vec["job"], "rounds": 100}, "model": {"kind": "logistic", "features": vec["d"], "L": 1.0},
           "training": {"scheme": "sq", "rule": "cat", "k_cap": 64},
           "cost": {"profile": "ieee802154-6lowpan-coap"}, "rounds": {"quorum": 1.0},
           "nodes": {str(vec["node"]): vec["key"]}, "downlink": {"key": dkey.hex()},
           "state": {"dir": str(tmp_path / "state")}}
    job = parse_job(raw)
    Store(job.state_dir).save(State(job_id=job.job_id, round=vec["round"], model=np.zeros(job.d, np.float32)))
    port = free_udp_port()
    svc = ServiceThread(job, Endpoints(coap=("127.0.0.1", port)))
    svc.start()
    url = f"coap://127.0.0.1:{port}/cat/{vec['job']}"
    try:
        post = subprocess.run(["coap-client-notls", "-m", "post", "-b", "64", "-t", "60", "-B", "10",
                               "-f", str(VECTORS / "update_sq_f32_packed_tel.cbor"), f"{url}/up"],
                              capture_output=True, timeout=30)
        assert post.returncode == 0, post.stderr
        out = tmp_path / "model.cbor"
        get = subprocess.run(["coap-client-notls", "-m", "get", "-b", "1024", "-B", "10", "-o", str(out),
                              f"{url}/model"], capture_output=True, timeout=60)
        assert get.returncode == 0, get.stderr
        agg = svc.service.agg
        assert agg.state.round == vec["round"] + 1           # quorum of the one node: the round closed
        snap = wire.decode_downlink(out.read_bytes(), dkey, 1 << 20)
        assert snap.version == vec["round"] + 1
        assert snap.model.tobytes() == agg.state.model.tobytes()
        # The vector's S+Q update moved exactly its T entries by -m (one node: the average is the update).
        m = np.float32(vec["magnitude"])
        moved = np.flatnonzero(snap.model)
        assert list(moved) == vec["indices"]
        assert np.allclose(np.abs(snap.model[moved]), m)
    finally:
        svc.stop()


def test_sigkill_mid_run_resumes_and_matches_an_uninterrupted_run(tmp_path):
    layout = e2e.make_job(tmp_path / "job", nodes=3, rounds=20)
    port = free_udp_port()
    procs = [e2e.serve(layout, "--coap", f"127.0.0.1:{port}")]
    try:
        e2e.wait_for(lambda: any(e.get("event") == "start" for e in e2e.events(layout)), 20, "gateway start", procs)
        procs += [e2e.edge(layout, k, "coap", "127.0.0.1", port) for k in range(3)]
        e2e.wait_for(lambda: e2e.closed_rounds(layout) >= 7, 60, "7 rounds", procs)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        st = Store(load_job(layout.job_path).state_dir).load()
        killed_at = st.round
        assert killed_at >= 7
        time.sleep(0.5)                               # edges meet a dead gateway and retry
        procs[0] = e2e.serve(layout, "--coap", f"127.0.0.1:{port}")
        state_dir = load_job(layout.job_path).state_dir
        e2e.wait_for(lambda: Store(state_dir).load().round >= 20, 120, "20 rounds after restart", procs)
        for p in procs[1:]:
            p.wait(30)
            assert p.returncode == 0
    finally:
        e2e.stop(procs)
    ev = e2e.events(layout)
    starts = [e for e in ev if e.get("event") == "start"]
    # Resumed at the last closed round; if the kill hit a round whose frames were all
    # journaled but not yet closed, the journal replay closes it before serving.
    assert len(starts) == 2 and starts[1]["round"] in (killed_at, killed_at + 1)
    # The metrics log is not transactional: a kill between checkpoint and log line can drop
    # that one round's line. Every other round is logged, and the checkpoint says 20 closed.
    logged = {e["round"] for e in ev if e.get("event") == "round"}
    assert logged <= set(range(20)) and len(set(range(20)) - logged) <= 1
    assert Store(load_job(layout.job_path).state_dir).load().round == 20
    model = e2e.final_model(layout)
    replayed = e2e.replay(load_job(layout.job_path), e2e.recorded_frames(layout), order_seed=7)
    assert replayed.tobytes() == model.tobytes()


# ---------------------------------------------------------------------------- round book-keeping

class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def small_job(tmp_path: Path, nodes: int = 3, **rounds):
    keys = {k: secrets.token_bytes(32) for k in range(nodes)}
    raw = {"job": {"id": 9, "rounds": 50}, "model": {"kind": "logistic", "features": 40, "L": 1.0},
           "training": {"scheme": "sq", "rule": "cat", "k_cap": 8},
           "cost": {"profile": "ieee802154-6lowpan-coap"}, "rounds": {"deadline_s": 5.0, **rounds},
           "nodes": {str(k): v.hex() for k, v in keys.items()},
           "downlink": {"key": secrets.token_bytes(32).hex()}, "state": {"dir": str(tmp_path / "state")}}
    return parse_job(raw), keys


def update(job, keys, node: int, rnd: int, seed: int = 0) -> bytes:
    from array import array
    rng = np.random.default_rng(seed + 100 * node + rnd)
    idx = array("I", sorted(rng.choice(job.d, 5, replace=False).tolist()))
    m = float(np.float32(rng.random() * 0.1))
    vals = array("f", [m if s else -m for s in rng.integers(0, 2, 5)])
    buf = bytearray(frame.buffer_size(job.d, 8, SCHEME_SQ, 0))
    n = frame.encode_update(buf, keys[node], job.job_id, node, rnd, SCHEME_SQ, job.d, 5, idx, vals, 0)
    return bytes(buf[:n])


def test_round_closes_at_deadline_with_a_missing_node(tmp_path):
    job, keys = small_job(tmp_path)
    clock = Clock()
    agg = Aggregator(job, Store(job.state_dir), clock=clock)
    assert agg.submit(update(job, keys, 0, 0), "t").status == ACCEPTED
    assert agg.submit(update(job, keys, 1, 0), "t").status == ACCEPTED
    clock.t = 4.9
    assert agg.tick() is None and agg.state.round == 0
    clock.t = 5.0
    closed = agg.tick()
    assert closed is not None and closed.nodes == [0, 1] and agg.state.round == 1
    # The missing node's frame arrives late: dropped, counted, model untouched.
    before = agg.state.model.tobytes()
    out = agg.submit(update(job, keys, 2, 0), "t")
    assert out.status == REJECTED and out.reason == "stale_round"
    assert agg.state.rejected["stale_round"] == 1 and agg.state.nodes[2].rejected == {"stale_round": 1}
    assert agg.state.model.tobytes() == before and agg.state.round == 1


def test_duplicate_applied_once_and_quorum_closes(tmp_path):
    job, keys = small_job(tmp_path, quorum=2.0)
    agg = Aggregator(job, Store(job.state_dir), clock=Clock())
    f0 = update(job, keys, 0, 0)
    assert agg.submit(f0, "mqtt").status == ACCEPTED
    dup = agg.submit(f0, "mqtt")                  # QoS 1 redelivery
    assert dup.status == DUPLICATE and dup.ok and agg.state.round == 0
    out = agg.submit(update(job, keys, 1, 0), "mqtt")
    assert out.closed is not None and agg.state.round == 1
    assert agg.state.nodes[0].duplicates == 1 and agg.state.nodes[0].frames == 1
    # Applied once: the model equals the replay of the two distinct frames.
    ref = Aggregator(job, clock=Clock())
    ref.submit(update(job, keys, 1, 0), "x")
    ref.submit(f0, "x")
    assert ref.state.model.tobytes() == agg.state.model.tobytes()
    # A redelivery of the closed round's frame after the close is stale, not applied.
    assert agg.submit(f0, "mqtt").reason == "stale_round"


def test_restart_replays_journal_of_acknowledged_frames(tmp_path):
    job, keys = small_job(tmp_path)
    agg = Aggregator(job, Store(job.state_dir), clock=Clock())
    for n in range(3):
        agg.submit(update(job, keys, n, 0), "t")          # round 0 closes at quorum (all 3)
    agg.submit(update(job, keys, 0, 1), "t")              # acknowledged, round 1 still open
    agg.store.close_journal()
    # "Crash": a new gateway on the same state directory.
    again = Aggregator(job, Store(job.state_dir), clock=Clock())
    assert again.state.round == 1 and not again.pending
    assert again.recover() == 1 and list(again.pending) == [0]
    again.submit(update(job, keys, 1, 1), "t")
    again.submit(update(job, keys, 2, 1), "t")
    ref = Aggregator(job, clock=Clock())
    for r in (0, 1):
        for n in range(3):
            ref.submit(update(job, keys, n, r), "x")
    assert again.state.round == 2 and again.state.model.tobytes() == ref.state.model.tobytes()


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path):
    job, keys = small_job(tmp_path)
    store = Store(job.state_dir)
    agg = Aggregator(job, store, clock=Clock())
    for r in (0, 1):
        for n in range(3):
            agg.submit(update(job, keys, n, r), "t")
    assert store.current.exists() and store.previous.exists()
    data = bytearray(store.current.read_bytes())
    data[len(data) // 2] ^= 0x40
    store.current.write_bytes(bytes(data))
    st = Store(job.state_dir).load()
    assert st.round == 1                                   # the previous good checkpoint
    again = Aggregator(job, Store(job.state_dir), clock=Clock())
    assert again.recover() == 3 and again.state.round == 2   # journal of round 1 replays the lost close
    assert again.state.model.tobytes() == agg.state.model.tobytes()


def test_coap_observe_notifies_config_and_model_on_round_close(tmp_path):
    """An observer of /config and /model (RFC 7641) learns of every round without polling."""
    import asyncio

    import aiocoap

    job, keys = small_job(tmp_path, quorum=1.0)
    port = free_udp_port()
    svc = ServiceThread(job, Endpoints(coap=("127.0.0.1", port)))
    svc.start()

    async def observe() -> tuple[list[int], list[int]]:
        ctx = await aiocoap.Context.create_client_context()
        rounds: list[int] = []
        versions: list[int] = []
        try:
            base = f"coap://127.0.0.1:{port}/cat/{job.job_id}/"
            req_c = ctx.request(aiocoap.Message(code=aiocoap.GET, uri=base + "config", observe=0))
            req_m = ctx.request(aiocoap.Message(code=aiocoap.GET, uri=base + "model", observe=0))
            first = await req_c.response
            rounds.append(wire.decode_downlink(first.payload, job.downlink_key, 1 << 20).round)
            versions.append(wire.decode_downlink((await req_m.response).payload, job.downlink_key, 1 << 20).version)
            it_c = req_c.observation.__aiter__()
            it_m = req_m.observation.__aiter__()
            for r in range(3):
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, lambda: [svc.loop.call_soon_threadsafe(
                    svc.service.agg.submit, update(job, keys, n, r), "test") for n in range(3)])
                note = await asyncio.wait_for(it_c.__anext__(), 10)
                rounds.append(wire.decode_downlink(note.payload, job.downlink_key, 1 << 20).round)
                note = await asyncio.wait_for(it_m.__anext__(), 10)
                versions.append(wire.decode_downlink(note.payload, job.downlink_key, 1 << 20).version)
        finally:
            await ctx.shutdown()
        return rounds, versions

    try:
        rounds, versions = asyncio.run(observe())
    finally:
        svc.stop()
    assert rounds == [0, 1, 2, 3] and versions == [0, 1, 2, 3]
