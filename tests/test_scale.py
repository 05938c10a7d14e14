"""Shards, a root and many edges as real processes over a real Mosquitto and real CoAP.

* A short soak: a few hundred simulated edges (tests/fleet.py: the real edge loop per node,
  frames over aiocoap-served CoAP and Mosquitto) for a few rounds against one gateway and
  against 2 shards + a root, with bad frames of known kinds mixed in: every round closed
  exactly once with every acknowledged frame, refusals exactly the bad frames, the model
  bit-identical to an in-process gateway fed the same frames (benchmarks/soak.py runs the
  same for 10 minutes and more with thousands of edges).
* Real cat-edge processes reach their shard through the endpoint in their node config.
* Each shard and the root SIGKILLed at every fault point and restarted: each (node, round)
  counted once, the final model equal to the replay.
* A shard down past the deadline: the rounds close without its nodes, which catch up by
  snapshot when it is back.
* Forged, replayed and cross-job partials published on the broker: refused and counted.

The seed of the random choices is printed with every failure (CAT_FAULT_SEED=<n> repeats a run).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import time
import tomllib

import numpy as np
import pytest

from aggregator.gateway.config import load_job
from aggregator.gateway.pipeline import Aggregator
from aggregator.gateway.state import Store
from aggregator.ops import jobs

import e2e
from fleet import Fleet, blob_dataset
from peers import free_port

SEED = int(os.environ.get("CAT_FAULT_SEED", str(time.time_ns() % 1_000_000)))


# ----------------------------------------------------------------------------- helpers
def fleet_layout(tmp, nodes: int, rounds: int, broker, sharded: bool, **kw) -> tuple[jobs.Layout, dict]:
    """A job for `nodes` edges, half over CoAP and half over MQTT: to one gateway, or to shard
    a (CoAP) and shard b (MQTT) and a root. Returns the layout and the fleet's sites."""
    half = nodes // 2
    transports = {"mqtt": {"host": broker.host, "port": broker.port}}
    shards = None
    coap = free_port("udp")
    if sharded:
        shards = {"a": {"nodes": [f"0-{half - 1}"], "coap": f"127.0.0.1:{coap}"},
                  "b": {"nodes": [f"{half}-{nodes - 1}"]}}
    else:
        transports["coap"] = {"host": "127.0.0.1", "port": coap}
    kw.setdefault("deadline_s", 120.0)
    layout = jobs.prepare(tmp, blob_dataset(nodes), nodes, rounds, k_cap=8, transports=transports,
                          shards=shards, **kw)
    job = load_job(layout.job_path)
    sites = {}
    for name, ks in (("coap", range(half)), ("mqtt", range(half, nodes))):
        host, port = job.endpoint(ks[0], name)
        sites[name] = (name, host, port, list(ks))
    return layout, sites


def start(layout: jobs.Layout, sharded: bool, *extra: str, faults: dict[str, str] | None = None) -> dict:
    """The gateway, or root + shards a and b, as real processes; waits for their start."""
    faults = faults or {}
    if not sharded:
        procs = {"gateway": e2e.aggregator(layout, "serve", *extra, name="gateway", fault=faults.get("gateway"))}
        e2e.wait_for(e2e.started(layout), 30, "gateway start", list(procs.values()))
        return procs
    procs = {"root": e2e.aggregator(layout, "root", *extra, name="root", fault=faults.get("root"))}
    for s in ("a", "b"):
        procs[s] = e2e.aggregator(layout, "serve", "--shard", s, *extra, name=s, fault=faults.get(s))
    for name, state in (("root", "state"), ("a", "state-a"), ("b", "state-b")):
        e2e.wait_for(e2e.started(layout, state=state), 30, f"{name} start", list(procs.values()))
    return procs


def round_events(layout: jobs.Layout) -> list[dict]:
    return [e for e in e2e.events(layout) if e.get("event") == "round"]


def replay_applied(job, frames: dict[int, dict[int, bytes]], applied: dict[int, list[int]]) -> np.ndarray:
    """One uninterrupted in-process gateway fed, per round, exactly the frames applied."""
    agg = Aggregator(job)
    for rnd in sorted(applied):
        for nid in applied[rnd]:
            assert agg.submit(frames[rnd][nid], "replay").ok
        if agg.state.round == rnd:
            agg.close_round()
    return agg.state.model.copy()


def shard_rejected(layout: jobs.Layout, sharded: bool) -> dict[str, int]:
    """Refusals by reason, summed over the processes that take frames."""
    job = load_job(layout.job_path)
    dirs = [job.shards[s].state_dir for s in job.shards] if sharded else [job.state_dir]
    out: dict[str, int] = {}
    for d in dirs:
        for k, v in Store(d).load().rejected.items():
            out[k] = out.get(k, 0) + v
    return out


# ----------------------------------------------------------------------------- the short soak
@pytest.mark.parametrize("sharded", [False, True], ids=["one gateway", "2 shards + root"])
def test_short_soak_many_edges_every_round_once_nothing_acknowledged_lost(tmp_path, mosquitto_broker, sharded):
    t0 = time.monotonic()
    nodes, rounds = 300, 3
    layout, sites = fleet_layout(tmp_path / "job", nodes, rounds, mosquitto_broker, sharded)
    job = load_job(layout.job_path)
    procs = start(layout, sharded, "--linger", "5")
    fleet = Fleet(job, layout, sites, bad_per_round=3, seed=SEED)
    try:
        done = asyncio.run(fleet.run(rounds, timeout=90))
        for name, p in procs.items():
            p.wait(60)
            assert p.returncode == 0, (name, p.returncode, (layout.root / f"{name}.log").read_text()[-2000:])
    finally:
        e2e.stop(list(procs.values()))
    assert done == rounds
    ev = round_events(layout)
    assert [e["round"] for e in ev] == list(range(rounds))             # each round closed once
    acked = fleet.acked()
    for e in ev:                                                       # nothing acknowledged lost
        assert acked[e["round"]] <= set(e["nodes"]) and len(e["nodes"]) == nodes, e["round"]
    assert shard_rejected(layout, sharded) == fleet.bad_sent()         # refusals: the bad frames only
    assert sum(fleet.bad_sent().values()) == 3 * 2 * rounds
    if sharded:
        assert Store(job.state_dir).load().rejected == {}
    model = Store(job.state_dir).load().model
    assert e2e.replay(job, fleet.frames, order_seed=SEED).tobytes() == model.tobytes()
    print(f"{'2 shards + root' if sharded else 'one gateway'}: {nodes} edges x {rounds} rounds, "
          f"bad frames {fleet.bad_sent()}, edge compute {fleet.compute_s:.1f} s; {time.monotonic() - t0:.1f} s")


# ----------------------------------------------------------------------------- real edges
def sharded_layout(tmp, broker, nodes: int = 4, rounds: int = 8, **kw) -> jobs.Layout:
    """breast_cancer over `nodes` real edges: the first half on shard a (CoAP), the rest on
    shard b (MQTT); each node's config names its shard's endpoint."""
    half = nodes // 2
    shards = {"a": {"nodes": list(range(half)), "coap": f"127.0.0.1:{free_port('udp')}"},
              "b": {"nodes": list(range(half, nodes))}}
    return e2e.make_job(tmp, nodes=nodes, rounds=rounds, shards=shards,
                        transports={"mqtt": {"host": broker.host, "port": broker.port}}, transport="both", **kw)


def config_edge(layout: jobs.Layout, node: int) -> subprocess.Popen:
    """cat-edge with nothing but its config file (transport, host and port of its shard)."""
    cmd = [e2e.PY, "-m", "edge.cli", "--config", str(layout.node_configs[node]), "--timeout", "90",
           "--record", str(layout.root / "frames")]
    return subprocess.Popen(cmd, stdout=open(layout.root / f"edge-{node}.out", "wb"),
                            stderr=open(layout.root / f"edge-{node}.log", "ab"))


def finish(edges: list[subprocess.Popen], procs: dict[str, subprocess.Popen]) -> None:
    """Wait for the edges, then the aggregator processes (they stop after the last round); all exit 0."""
    e2e.wait_for(lambda: all(e.poll() is not None for e in edges), 120, "the edges to finish")
    for e in edges:
        assert e.returncode == 0, e.args
    for name, p in procs.items():
        p.wait(60)
        assert p.returncode == 0, (name, p.returncode)


class Spy:
    """A plain MQTT client on the job's broker: records the partials, publishes forged ones."""

    def __init__(self, broker, job_id: int) -> None:
        import paho.mqtt.client as mqtt
        self.partials: list[bytes] = []
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"spy-{time.monotonic_ns()}")
        self.c.on_message = lambda cl, ud, m: self.partials.append(bytes(m.payload))
        self.c.connect(broker.host, broker.port)
        self.c.subscribe(f"cat/{job_id}/partial/+", qos=1)
        self.c.loop_start()
        self.prefix = f"cat/{job_id}/partial/"

    def publish(self, shard: str, data: bytes) -> None:
        self.c.publish(self.prefix + shard, data, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_real_edges_train_through_two_shards_and_a_root_and_bad_partials_are_counted(tmp_path, mosquitto_broker):
    from aggregator.gateway import partial as partmod
    t0 = time.monotonic()
    rounds = 10
    layout = sharded_layout(tmp_path / "job", mosquitto_broker, rounds=rounds)
    job = load_job(layout.job_path)
    other = load_job(sharded_layout(tmp_path / "other", mosquitto_broker, job_id=job.job_id + 1).job_path)
    spy = Spy(mosquitto_broker, job.job_id)
    procs = start(layout, True, "--linger", "3")
    edges = [config_edge(layout, k) for k in range(4)]
    try:
        e2e.wait_for(lambda: e2e.closed_rounds(layout) >= 3 and spy.partials, 60, "3 rounds", edges)
        first = spy.partials[0]                                            # round 0's, long closed
        p = partmod.decode(first, {s: job.shards[s].key for s in job.shards}, 1 << 20)
        own, other_shard = p.shard, "a" if p.shard == "b" else "b"
        forged = first[:-1] + bytes([first[-1] ^ 1])
        p.job = other.job_id
        cross = partmod.encode(p, job.shards[own].key)                     # another job, the shard's key
        p.job, p.shard = job.job_id, "zz"
        unknown = partmod.encode(p, bytes(32))
        for topic, data in ((own, forged), (own, first), (other_shard, first), ("x", first),
                            (own, cross), ("zz", unknown)):
            spy.publish(topic, data)
        finish(edges, procs)
    finally:
        spy.close()
        e2e.stop(edges + list(procs.values()))
    st = Store(job.state_dir).load()
    # forged; a replay of round 0; the same on the other shard's topic and on no shard's; cross-job; unknown kid
    assert st.rejected == {"bad_mac": 1, "stale_round": 1, "topic_mismatch": 2, "wrong_job": 1,
                           "unknown_kid": 1}, st.rejected
    assert [e["round"] for e in round_events(layout)] == list(range(rounds))
    assert all(e["nodes"] == [0, 1, 2, 3] for e in round_events(layout))
    frames = e2e.recorded_frames(layout)
    assert st.model.tobytes() == e2e.replay(job, frames, order_seed=1).tobytes()
    for s in ("a", "b"):
        sst = Store(job.shards[s].state_dir).load()
        assert sst.round == rounds and sst.model.tobytes() == st.model.tobytes()
        assert all(sst.nodes[k].frames == rounds for k in job.shards[s].nodes)
    print(f"real edges via their node configs, 2 shards + root, {rounds} rounds; {time.monotonic() - t0:.1f} s")


# ----------------------------------------------------------------------------- SIGKILL
SHARD_POINTS = ("journal_written", "journaled", "checkpoint_torn", "checkpoint_rotated", "checkpoint_saved",
                "mqtt_received", "mqtt_before_ack", "partial_sealed", "downlink_received")
ROOT_POINTS = ("journal_written", "journaled", "checkpoint_torn", "checkpoint_rotated", "checkpoint_saved",
               "mqtt_received", "mqtt_before_ack")


def test_sigkill_of_shards_and_root_at_every_fault_point_counts_each_update_once(tmp_path, mosquitto_broker):
    """Shard a (CoAP edges), shard b (MQTT edges) and the root each killed at every fault
    point their code passes, in a random order and at random counts, all three at once; each
    restarts armed with its next point, then unarmed. The job finishes with every (node, round)
    counted once, by the shards and by the root, and the model of an uninterrupted gateway."""
    t0 = time.monotonic()
    rng = random.Random(SEED)
    plans = {s: [(p, rng.randint(1, 3)) for p in SHARD_POINTS] for s in ("a", "b")}
    plans["root"] = [(p, rng.randint(1, 3)) for p in ROOT_POINTS]
    for plan in plans.values():
        rng.shuffle(plan)
    ctx = f"seed {SEED}, plans {plans}"
    rounds = 40
    layout = sharded_layout(tmp_path / "job", mosquitto_broker, rounds=rounds)
    job = load_job(layout.job_path)
    args = {"root": ("root",), "a": ("serve", "--shard", "a"), "b": ("serve", "--shard", "b")}
    left = {k: list(v) for k, v in plans.items()}
    fired: dict[str, list[str]] = {k: [] for k in plans}

    def launch(name: str) -> subprocess.Popen:
        point = left[name].pop(0) if left[name] else None
        fault = f"{point[0]}:{point[1]}" if point else None
        if point:
            fired[name].append(point[0])
        return e2e.aggregator(layout, args[name][0], *args[name][1:], "--linger", "3", name=name, fault=fault)

    procs = {name: launch(name) for name in args}
    edges: list[subprocess.Popen] = []
    try:
        for name, state in (("root", "state"), ("a", "state-a"), ("b", "state-b")):
            e2e.wait_for(e2e.started(layout, state=state), 30, f"{name} start")
        edges = [config_edge(layout, k) for k in range(4)]
        end = time.monotonic() + 240
        while time.monotonic() < end:
            for name, p in procs.items():
                if p.poll() is None:
                    continue
                if p.returncode == 0:
                    continue                      # finished the job
                assert p.returncode == -signal.SIGKILL, (name, p.returncode, ctx)
                procs[name] = launch(name)
            if all(p.poll() == 0 for p in procs.values()):
                break
            for e in edges:
                assert e.poll() in (None, 0), (e.args, e.returncode, ctx)
            time.sleep(0.05)
        else:
            raise AssertionError(f"the job did not finish ({ctx}; left {left})")
        for e in edges:
            e.wait(60)
            assert e.returncode == 0, ctx
    finally:
        e2e.stop(edges + list(procs.values()))
    for name in plans:
        log = layout.root / f"faults-{name}.log"
        got = [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []
        assert got == [p for p, _ in plans[name]], (name, got, ctx)   # every point fired, in order
    st = Store(job.state_dir).load()
    assert st.round == rounds, ctx
    assert all(st.nodes[k].frames == rounds for k in range(4)), ({k: v.frames for k, v in st.nodes.items()}, ctx)
    # A replayed close is logged again; a kill between the checkpoint and the log line leaves a
    # round unlogged (the counters above are what proves it closed once).
    last = {e["round"]: e["nodes"] for e in round_events(layout)}
    assert set(last) <= set(range(rounds)) and all(v == [0, 1, 2, 3] for v in last.values()), ctx
    for s in ("a", "b"):
        sst = Store(job.shards[s].state_dir).load()
        assert all(sst.nodes[k].frames == rounds for k in job.shards[s].nodes), (s, ctx)
        assert sst.model.tobytes() == st.model.tobytes(), (s, ctx)
    frames = e2e.recorded_frames(layout)
    assert st.model.tobytes() == e2e.replay(job, frames, order_seed=SEED).tobytes(), ctx
    print(f"{ctx}: {sum(len(v) for v in plans.values())} kills; {time.monotonic() - t0:.1f} s")


# ----------------------------------------------------------------------------- a shard away
def test_a_shard_down_past_the_deadline_rounds_close_without_it_and_its_nodes_catch_up(tmp_path, mosquitto_broker):
    t0 = time.monotonic()
    rounds = 14
    layout = sharded_layout(tmp_path / "job", mosquitto_broker, rounds=rounds, deadline_s=1.5)
    tree = tomllib.loads(layout.job_path.read_text())
    tree["rounds"]["history"] = 1                       # two rounds behind: only the snapshot helps
    tree["shards"]["b"]["coap"] = f"127.0.0.1:{free_port('udp')}"   # CoAP edges: they retry until it is back
    jobs.write_toml(layout.job_path, tree)
    job = load_job(layout.job_path)
    for k in (2, 3):
        cfg = tomllib.loads(layout.node_configs[k].read_text())
        cfg.update(jobs.node_endpoint(job, k))
        jobs.write_toml(layout.node_configs[k], cfg)
    procs = start(layout, True, "--linger", "3")
    edges = [config_edge(layout, k) for k in range(4)]
    try:
        e2e.wait_for(lambda: e2e.closed_rounds(layout) >= 3, 60, "3 rounds", edges)
        procs["b"].send_signal(signal.SIGKILL)
        procs["b"].wait(10)
        gone_at = e2e.closed_rounds(layout)
        e2e.wait_for(lambda: e2e.closed_rounds(layout) >= gone_at + 3, 60, "3 rounds without shard b", edges)
        procs["b"] = e2e.aggregator(layout, "serve", "--shard", "b", "--linger", "3", name="b")
        finish(edges, procs)
    finally:
        e2e.stop(edges + list(procs.values()))
    applied = {e["round"]: e["nodes"] for e in round_events(layout)}
    assert sorted(applied) == list(range(rounds))
    without = [r for r, nodes in applied.items() if nodes == [0, 1]]
    assert len(without) >= 2 and applied[rounds - 1] == [0, 1, 2, 3], applied   # closed without b, then b is back
    for k in (2, 3):
        text = (layout.root / f"edge-{k}.out").read_text()
        m = re.search(r"\((\d+) deltas, (\d+) snapshots\)", text)
        assert m and int(m.group(2)) >= 2, text     # the first snapshot, then one to catch up
    st = Store(job.state_dir).load()
    frames = e2e.recorded_frames(layout)
    assert st.model.tobytes() == replay_applied(job, frames, applied).tobytes()
    print(f"shard b away for rounds {without}; {time.monotonic() - t0:.1f} s")


# ----------------------------------------------------------------------------- a site broker
def test_a_site_shard_behind_a_mosquitto_bridge(tmp_path, mosquitto_factory):
    """Shard a and its CoAP boards at a site with its own Mosquitto, bridged to the central
    one (partials out; config, model, delta in); shard b and the root on the central broker.
    The job trains as with one broker."""
    rounds = 6
    central = mosquitto_factory(persistence=True)
    layout = sharded_layout(tmp_path / "job", central, rounds=rounds)
    job = load_job(layout.job_path)
    t = f"cat/{job.job_id}/"
    site = mosquitto_factory(persistence=True, extra_conf=[
        "connection central", f"address {central.host}:{central.port}", "cleansession false",
        "remote_clientid bridge-site-a", f"topic {t}partial/a out 1", f"topic {t}config in 1",
        f"topic {t}model in 1", f"topic {t}down in 1"])
    tree = tomllib.loads(layout.job_path.read_text())
    tree["shards"]["a"]["mqtt"] = f"{site.host}:{site.port}"
    jobs.write_toml(layout.job_path, tree)
    procs = start(layout, True, "--linger", "3")
    edges = [config_edge(layout, k) for k in range(4)]
    try:
        finish(edges, procs)
    finally:
        e2e.stop(edges + list(procs.values()))
    assert [e["round"] for e in round_events(layout)] == list(range(rounds))
    st = Store(job.state_dir).load()
    assert st.model.tobytes() == e2e.replay(job, e2e.recorded_frames(layout), order_seed=2).tobytes()
    assert Store(job.shards["a"].state_dir).load().model.tobytes() == st.model.tobytes()
    assert "bridge-site-a" in central.log_path.read_text()
