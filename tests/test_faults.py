"""Faults a gateway meets in the field, with real processes on loopback.

* Mosquitto restarted twice mid-training: persistent sessions and QoS 1 redeliver, every
  round closes once with every node, the model equals a replay of the edges' frames.
* The gateway SIGKILLed at every fault-injection point (aggregator/gateway/faults.py), in a random
  order at random counts: each restart resumes, the final model equals the replay.
* 30 % of the edges SIGSTOPped for several rounds: rounds close at the deadline with the
  rest; the returning edges load the snapshot (history = 1) and contribute again.
* CoAP through lossy, duplicating UDP proxies: every frame reaches its round exactly once.
* A half-written and a bit-flipped checkpoint.bin on disk: the previous one is used.

The seed of the random choices is printed with every failure (CAT_FAULT_SEED=<n> repeats a run).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
import timeit

import numpy as np
import pytest

from aggregator.gateway import faults
from aggregator.ops import jobs
from aggregator.gateway.config import Job, load_job
from aggregator.ops.demo import ServiceThread, free_udp_port
from aggregator.ops.jobs import write_toml
from aggregator.gateway.pipeline import Aggregator
from aggregator.gateway.service import Endpoints
from aggregator.gateway.state import State, Store

import e2e
from peers import UdpProxy, coap_ping

pytestmark = pytest.mark.e2e   # real processes and peers on loopback

PY = sys.executable
SEED = int(os.environ.get("CAT_FAULT_SEED", str(time.time_ns() % 1_000_000)))


# ----------------------------------------------------------------------------- helpers
def serve(layout: jobs.Layout, *extra: str, fault: str | None = None) -> subprocess.Popen:
    """`cat-aggregator serve` as a real process, optionally armed with CAT_FAULT."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop(faults.ENV, None)
    if fault:
        env[faults.ENV] = fault
        env[faults.ENV_LOG] = str(layout.root / "faults.log")
    out = open(layout.root / "serve.log", "ab")
    return subprocess.Popen([PY, "-m", "aggregator.cli", "serve", str(layout.job_path), *extra],
                            stdout=out, stderr=subprocess.STDOUT, env=env)


def edge(layout: jobs.Layout, node: int, transport: str, host: str, port: int) -> subprocess.Popen:
    """A real cat-edge recording its frames; its summary line goes to edge-<k>.out."""
    cmd = [PY, "-m", "edge.cli", "--config", str(layout.node_configs[node]), "--transport", transport,
           "--host", host, "--port", str(port), "--timeout", "60", "--record", str(layout.root / "frames")]
    return subprocess.Popen(cmd, stdout=open(layout.root / f"edge-{node}.out", "wb"),
                            stderr=open(layout.root / f"edge-{node}.log", "ab"))


def edge_summary(layout: jobs.Layout, node: int) -> dict[str, int]:
    """cat-edge's last line: sent updates, model version, deltas and snapshots applied."""
    text = (layout.root / f"edge-{node}.out").read_text()
    m = re.search(r"sent (\d+) updates, model version (\d+) \((\d+) deltas, (\d+) snapshots\)", text)
    assert m, f"node {node} printed no summary: {text!r}"
    return dict(zip(("sent", "version", "deltas", "snapshots"), map(int, m.groups())))


def set_rounds_options(layout: jobs.Layout, **options: object) -> None:
    """Change [rounds] keys of a job file made by jobs.prepare (e.g. history, deadline_s)."""
    import tomllib
    tree = tomllib.loads(layout.job_path.read_text())
    tree["rounds"].update(options)
    write_toml(layout.job_path, tree)


def started(layout: jobs.Layout, n: int = 1):
    return lambda: sum(1 for e in e2e.events(layout) if e.get("event") == "start") >= n


def load_state(layout: jobs.Layout) -> State:
    st = Store(load_job(layout.job_path).state_dir).load()
    assert st is not None
    return st


def round_events(layout: jobs.Layout) -> list[dict]:
    return [e for e in e2e.events(layout) if e.get("event") == "round"]


def replay_applied(job: Job, frames: dict[int, dict[int, bytes]], applied: dict[int, list[int]]) -> np.ndarray:
    """An uninterrupted in-process gateway fed, per round, exactly the frames the gateway
    applied (the node lists of its "round" events), closing each round as the deadline did."""
    agg = Aggregator(job)
    for rnd in sorted(applied):
        assert agg.state.round == rnd, (rnd, agg.state.round)
        for nid in applied[rnd]:
            out = agg.submit(frames[rnd][nid], "replay")
            assert out.ok, (rnd, nid, out.reason)
        if agg.state.round == rnd:
            agg.close_round()
    return agg.state.model.copy()


def finish(procs: list[subprocess.Popen], timeout: float = 60.0) -> None:
    """Wait for the edges (and a gateway that stops by itself) and insist on exit code 0."""
    for p in procs:
        p.wait(timeout)
        assert p.returncode == 0, f"{p.args[:5]} exited with {p.returncode}"


# ----------------------------------------------------------------------------- fault points
def test_fault_points_cost_nothing_when_disabled_and_kill_when_armed(tmp_path):
    assert os.environ.get(faults.ENV) is None and not faults.ENABLED
    per_call = min(timeit.repeat(lambda: faults.point("journaled"), number=20000, repeat=5)) / 20000
    assert per_call < 2e-6                      # a no-op call; the hot path passes at most three
    with pytest.raises(ValueError, match="unknown fault point"):
        faults.parse("jounraled")
    with pytest.raises(ValueError, match="count"):
        faults.parse("journaled:0")
    assert faults.parse("journaled:3, checkpoint_torn") == {"journaled": 3, "checkpoint_torn": 1}
    log = tmp_path / "faults.log"
    code = ("from aggregator.gateway import faults\n"
            "faults.point('checkpoint_saved'); faults.point('journaled'); print('alive', flush=True)\n"
            "faults.point('journaled'); print('not reached', flush=True)\n")
    env = dict(os.environ, **{faults.ENV: "journaled:2", faults.ENV_LOG: str(log)})
    res = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == -signal.SIGKILL and res.stdout == "alive\n"
    assert log.read_text().split()[0] == "journaled"
    env[faults.ENV] = "no_such_point"
    res = subprocess.run([PY, "-c", "import aggregator.gateway.faults"], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode != 0 and "unknown fault point" in res.stderr


# ----------------------------------------------------------------------------- broker restart
def journaled_nodes(layout: jobs.Layout) -> tuple[int, list[int]]:
    """(open round on disk, node ids of the frames in its journal) — the kid is bytes 9..10."""
    store = Store(load_job(layout.job_path).state_dir)
    st = store.load()
    rnd = st.round if st else 0
    return rnd, sorted(int.from_bytes(f[9:11], "big") for f in store.replay(rnd))


def test_broker_restart_mid_training_loses_and_repeats_no_round(tmp_path, mosquitto_factory):
    """Mosquitto (persistence on) stopped and started twice. The second time the gateway is
    frozen (SIGSTOP) with its round waiting for node 3, whose frame is published while the
    gateway hangs and crosses the broker restart in the gateway's persistent session."""
    t0 = time.monotonic()
    broker = mosquitto_factory(persistence=True)
    rounds = 24
    layout = e2e.make_job(tmp_path / "job", nodes=4, rounds=rounds, transport="mqtt")
    host, port = broker.host, broker.port
    gw = serve(layout, "--mqtt", f"{host}:{port}")
    procs = [gw]
    try:
        e2e.wait_for(started(layout), 20, "gateway start", procs)
        procs += [edge(layout, k, "mqtt", host, port) for k in range(4)]
        e2e.wait_for(lambda: e2e.closed_rounds(layout) >= 6, 60, "6 rounds", procs)
        first = e2e.closed_rounds(layout)
        broker.stop()                          # graceful: Mosquitto saves sessions and queues
        time.sleep(1.0)                        # edges and gateway see the broker gone
        broker.start()
        e2e.wait_for(lambda: e2e.closed_rounds(layout) >= 14, 60, "14 rounds", procs)
        procs[4].send_signal(signal.SIGSTOP)   # node 3 holds the round open ...
        e2e.wait_for(lambda: journaled_nodes(layout)[1] == [0, 1, 2], 30, "a round waiting for node 3", procs[:4])
        held, _ = journaled_nodes(layout)
        gw.send_signal(signal.SIGSTOP)         # ... the gateway hangs ...
        procs[4].send_signal(signal.SIGCONT)   # ... node 3 publishes (PUBACKed by the broker)
        e2e.wait_for(lambda: (layout.root / "frames" / f"node-3-round-{held}.cbor").exists(), 20, "node 3's frame")
        time.sleep(0.5)
        broker.stop()
        time.sleep(1.0)
        broker.start()
        time.sleep(1.5)                        # the edges reconnect first
        resumed = time.time()
        gw.send_signal(signal.SIGCONT)
        e2e.wait_for(lambda: gw.poll() is not None, 90, "gateway exit after the last round", procs)
        finish(procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
        e2e.stop(procs)
    rounds_ev = round_events(layout)
    assert [e["round"] for e in rounds_ev] == list(range(rounds))     # none lost, none twice
    assert all(e["nodes"] == [0, 1, 2, 3] for e in rounds_ev)
    # Node 3's frame of the held round reached the gateway only after it resumed: through its
    # session, across the broker restart.
    late = [e for e in e2e.events(layout) if e.get("event") == "update" and (e["node"], e["round"]) == (3, held)]
    assert len(late) == 1 and late[0]["t"] >= resumed, (late, resumed)
    st = load_state(layout)
    assert st.round == rounds and all(st.nodes[k].frames == rounds for k in range(4))
    # Copies redelivered (in flight to the frozen gateway, or resent by the edges' paho after
    # reconnecting) were acknowledged and dropped: duplicates, or stale once the round closed.
    redelivered = sum(ns.duplicates for ns in st.nodes.values()) + st.rejected.get("stale_round", 0)
    # Bounded: an edge does not publish while disconnected (paho would queue a copy per retry;
    # before edge.pi.PahoLink refused that, one restart cost ~30 copies on the radio).
    assert redelivered <= 16, redelivered
    model = st.model
    assert e2e.replay(load_job(layout.job_path), e2e.recorded_frames(layout), order_seed=1).tobytes() == model.tobytes()
    print(f"broker restarts after rounds {first} and {held} (gateway frozen, round {held} waiting for node 3); "
          f"redelivered copies absorbed {redelivered}; {time.monotonic() - t0:.1f} s")


# ----------------------------------------------------------------------------- gateway SIGKILL
@pytest.mark.parametrize("transport", ["mqtt", "coap"])
def test_sigkill_at_every_fault_point_resumes_consistently(tmp_path, request, transport):
    """One run, the gateway killed once at each fault point of the transport's path, in a
    random order, at a random count; then a clean restart finishes the job."""
    t0 = time.monotonic()
    rng = random.Random(SEED)
    plan = [("journal_written", rng.randint(1, 9)), ("journaled", rng.randint(1, 9)),
            ("checkpoint_torn", rng.randint(1, 3)),
            ("checkpoint_rotated", rng.randint(1, 3)), ("checkpoint_saved", rng.randint(1, 3))]
    if transport == "mqtt":
        plan += [("mqtt_received", rng.randint(1, 9)), ("mqtt_before_ack", rng.randint(1, 9))]
        b = request.getfixturevalue("mosquitto_broker")
        host, port = b.host, b.port
    else:
        host, port = "127.0.0.1", free_udp_port()
    rng.shuffle(plan)
    ctx = f"{transport}, seed {SEED}, plan {plan}"
    rounds = 26
    layout = e2e.make_job(tmp_path / "job", nodes=3, rounds=rounds, transport=transport)
    state_dir = load_job(layout.job_path).state_dir
    where = ("--mqtt" if transport == "mqtt" else "--coap", f"{host}:{port}")
    procs: list[subprocess.Popen] = []
    kills = []
    try:
        for i, (point, count) in enumerate(plan):
            gw = serve(layout, *where, fault=f"{point}:{count}")
            if i == 0:
                e2e.wait_for(started(layout), 20, "gateway start", [gw])
                procs += [edge(layout, k, transport, host, port) for k in range(3)]
            e2e.wait_for(lambda: gw.poll() is not None, 60, f"kill at {point}:{count} ({ctx})", procs)
            assert gw.returncode == -signal.SIGKILL, (gw.returncode, ctx)
            fired = (layout.root / "faults.log").read_text().split("\n")[i].split()[0]
            assert fired == point, ctx
            st = Store(state_dir).load()
            kills.append((point, count, st.round if st else 0))
        gw = serve(layout, *where)
        procs.append(gw)
        e2e.wait_for(lambda: gw.poll() is not None, 90, f"the job to finish after the kills ({ctx})", procs)
        finish(procs)
    finally:
        e2e.stop(procs)
    st = load_state(layout)
    assert st.round == rounds, ctx
    # Counters are exact: every node's frame was accepted once per round, whatever was replayed.
    assert all(st.nodes[k].frames == rounds for k in range(3)), ({k: v.frames for k, v in st.nodes.items()}, ctx)
    fired = [line.split()[0] for line in (layout.root / "faults.log").read_text().splitlines()]
    assert fired == [p for p, _ in plan], ctx
    # A life may die while recovering (replaying a journal closes a round and checkpoints).
    in_recovery = len(plan) + 1 - sum(1 for e in e2e.events(layout) if e.get("event") == "start")
    frames = e2e.recorded_frames(layout)
    assert sorted(frames) == list(range(rounds)) and all(len(f) == 3 for f in frames.values())
    replayed = e2e.replay(load_job(layout.job_path), frames, order_seed=SEED)
    assert replayed.tobytes() == st.model.tobytes(), ctx
    print(f"{ctx}: killed at (point, count, round on disk) "
          f"{kills}, {in_recovery} of them while recovering; {time.monotonic() - t0:.1f} s")


# ----------------------------------------------------------------------------- dropouts
def test_thirty_percent_of_edges_drop_out_and_catch_up_through_the_snapshot(tmp_path):
    t0 = time.monotonic()
    n, rounds, gone = 10, 24, [7, 8, 9]
    layout = e2e.make_job(tmp_path / "job", nodes=n, rounds=rounds, quorum=0.8, deadline_s=1.0)
    set_rounds_options(layout, history=1)          # a node 2+ versions behind must take the snapshot
    port = free_udp_port()
    gw = serve(layout, "--coap", f"127.0.0.1:{port}")
    procs = [gw]
    try:
        e2e.wait_for(started(layout), 20, "gateway start", procs)
        procs += [edge(layout, k, "coap", "127.0.0.1", port) for k in range(n)]
        # 3 rounds, and every edge applied in one: on a busy machine an edge may still be
        # starting when rounds close at quorum, and one stopped before its first sync would
        # take its first snapshot only on return.
        e2e.wait_for(lambda: e2e.closed_rounds(layout) >= 3
                     and set().union(*(e["nodes"] for e in round_events(layout))) == set(range(n)),
                     90, "3 rounds with every edge in one", procs)
        for k in gone:
            procs[1 + k].send_signal(signal.SIGSTOP)
        stopped_after = e2e.closed_rounds(layout)
        e2e.wait_for(lambda: e2e.closed_rounds(layout) >= stopped_after + 5, 60, "5 rounds without them", procs)
        # Back, with the seven others held meanwhile: with quorum 8 the rounds then close at
        # the deadline with what the three send, so each of them is applied again however
        # slowly it catches up (on a busy machine a resumed edge can otherwise stay the
        # straggler whose frame arrives after every round closed at quorum).
        resumed_after = e2e.closed_rounds(layout)
        others = [k for k in range(n) if k not in gone]
        for k in others:
            procs[1 + k].send_signal(signal.SIGSTOP)
        for k in gone:
            procs[1 + k].send_signal(signal.SIGCONT)
        e2e.wait_for(lambda: all(any(k in e["nodes"] for e in round_events(layout) if e["round"] >= resumed_after)
                                 for k in gone), 60, "the three applied again", procs)
        for k in others:
            procs[1 + k].send_signal(signal.SIGCONT)
        e2e.wait_for(lambda: gw.poll() is not None, 90, "the job to finish", procs)
        finish(procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
        e2e.stop(procs)
    rounds_ev = round_events(layout)
    assert [e["round"] for e in rounds_ev] == list(range(rounds))
    # While they were away, rounds closed at the deadline with the seven others (quorum is 8).
    away = [e for e in rounds_ev if stopped_after + 1 <= e["round"] < resumed_after]
    assert len(away) >= 3
    for e in away:
        assert set(e["nodes"]).isdisjoint(gone) and len(e["nodes"]) == 7, e
    # They came back several versions behind, loaded the snapshot (deltas are kept for one
    # round only), and were applied again in later rounds.
    for k in gone:
        s = edge_summary(layout, k)
        assert s["snapshots"] >= 2 and s["version"] == rounds, (k, s)
        assert any(k in e["nodes"] for e in rounds_ev if e["round"] >= resumed_after), k
    # Same frames, same rounds, same model: an uninterrupted gateway fed what was applied.
    applied = {e["round"]: e["nodes"] for e in rounds_ev}
    model = load_state(layout).model
    assert replay_applied(load_job(layout.job_path), e2e.recorded_frames(layout), applied).tobytes() == model.tobytes()
    print(f"stopped {gone} after round {stopped_after}, resumed after {resumed_after}; "
          f"snapshots {[edge_summary(layout, k)['snapshots'] for k in gone]}; {time.monotonic() - t0:.1f} s")


# ----------------------------------------------------------------------------- lossy CoAP
class LossyPolicy:
    """Per edge: every POST (an update frame) meets one fault in turn: its first datagram
    dropped, duplicated, its response dropped (the CON is retransmitted), or its response
    duplicated; every other datagram is lost with probability `loss`."""

    FAULTS = ("drop_request", "dup_request", "drop_response", "dup_response")

    def __init__(self, rng: random.Random, offset: int, loss: float = 0.01) -> None:
        self.rng = rng
        self.offset = offset
        self.loss = loss
        self.posts: dict[bytes, str] = {}      # message id -> fault planned for it
        self.seen: dict[str, int] = {f: 0 for f in self.FAULTS}
        self.lost = 0

    def __call__(self, direction: str, index: int, data: bytes) -> int:
        if len(data) < 4:
            return 1
        mid = data[2:4]
        if direction == "up" and data[1] == 0x02:                 # POST
            fault = self.posts.get(mid)
            if fault is None:                                     # first transmission
                fault = self.posts[mid] = self.FAULTS[(len(self.posts) + self.offset) % 4]
                if fault == "drop_request":
                    self.seen[fault] += 1
                    return 0
            if fault == "dup_request":
                self.seen[fault] += 1
                self.posts[mid] = "done"
                return 2
            return 1
        if direction == "down" and mid in self.posts and (data[0] >> 4) & 3 == 2:   # piggybacked ACK
            fault = self.posts[mid]
            if fault in ("drop_response", "dup_response"):
                self.seen[fault] += 1
                self.posts[mid] = "done"
                return 0 if fault == "drop_response" else 2
            return 1
        if self.rng.random() < self.loss:
            self.lost += 1
            return 0
        return 1


def test_coap_over_a_lossy_duplicating_link_applies_every_frame_once(tmp_path):
    t0 = time.monotonic()
    rng = random.Random(SEED)
    n, rounds = 3, 6
    layout = e2e.make_job(tmp_path / "job", nodes=n, rounds=rounds)
    port = free_udp_port()
    # The gateway keeps serving after the last round (as `serve` does not: it leaves 0.5 s
    # after it, and an edge whose GET of the final config is lost would never learn the end).
    gw = ServiceThread(load_job(layout.job_path), Endpoints(coap=("127.0.0.1", port)))
    gw.start()
    e2e.wait_for(lambda: coap_ping("127.0.0.1", port, 0.2), 10, "the CoAP endpoint")
    policies = [LossyPolicy(random.Random(rng.random()), k) for k in range(n)]
    proxies = [UdpProxy(port, policy=pol).start() for pol in policies]
    procs: list[subprocess.Popen] = []
    try:
        procs += [edge(layout, k, "coap", "127.0.0.1", proxies[k].port) for k in range(n)]
        finish(procs, timeout=120)
    finally:
        e2e.stop(procs)
        gw.stop()
        for p in proxies:
            p.stop()
    seen = {f: sum(p.seen[f] for p in policies) for f in LossyPolicy.FAULTS}
    assert all(v >= 2 for v in seen.values()), seen           # every fault kind happened
    ev = e2e.events(layout)
    updates = [(e["node"], e["round"]) for e in ev if e.get("event") == "update"]
    assert sorted(updates) == sorted((k, r) for k in range(n) for r in range(rounds))   # exactly once each
    st = load_state(layout)
    assert st.round == rounds and all(st.nodes[k].frames == rounds for k in range(n))
    assert [e["round"] for e in round_events(layout)] == list(range(rounds))
    replayed = e2e.replay(load_job(layout.job_path), e2e.recorded_frames(layout), order_seed=SEED)
    assert replayed.tobytes() == st.model.tobytes()
    print(f"seed {SEED}: faults on update exchanges {seen}, other datagrams lost "
          f"{sum(p.lost for p in policies)}, pipeline duplicates {sum(ns.duplicates for ns in st.nodes.values())}; "
          f"{time.monotonic() - t0:.1f} s")


# ----------------------------------------------------------------------------- corrupt checkpoint
def _kill_with_acked_frames_open(layout: jobs.Layout, gw: subprocess.Popen, edges: list[subprocess.Popen],
                                 at_least: int, hold: int) -> int:
    """SIGKILL the gateway once `at_least` rounds closed and the open round holds two journaled,
    acknowledged frames (edge `hold` is SIGSTOPped so that the round cannot close); returns
    the round of checkpoint.bin. The caller SIGCONTs the held edge after the restart."""
    state_dir = load_job(layout.job_path).state_dir
    e2e.wait_for(lambda: e2e.closed_rounds(layout) >= at_least, 60, f"{at_least} rounds", edges)
    edges[hold].send_signal(signal.SIGSTOP)

    def two_journaled() -> bool:
        store = Store(state_dir)
        st = store.load()
        return st is not None and len(list(store.replay(st.round))) == 2
    e2e.wait_for(two_journaled, 30, "two frames journaled in the open round")
    time.sleep(0.5)                                   # their 2.04 responses reach the edges
    gw.send_signal(signal.SIGKILL)
    gw.wait(10)
    return Store(state_dir).load().round


def test_half_written_or_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path):
    t0 = time.monotonic()
    rounds = 12
    layout = e2e.make_job(tmp_path / "job", nodes=3, rounds=rounds, deadline_s=6.0)
    state_dir = load_job(layout.job_path).state_dir
    port = free_udp_port()
    gw = serve(layout, "--coap", f"127.0.0.1:{port}")
    procs = [gw]
    seen = []
    try:
        e2e.wait_for(started(layout), 20, "gateway start", procs)
        procs += [edge(layout, k, "coap", "127.0.0.1", port) for k in range(3)]
        for i, (damage, at_least) in enumerate((("half-written", 3), ("bit flip", 7))):
            hold = i % 3
            on_disk = _kill_with_acked_frames_open(layout, gw, procs[1:], at_least, hold)
            cur = state_dir / "checkpoint.bin"
            data = cur.read_bytes()
            if damage == "half-written":
                cur.write_bytes(data[:len(data) // 2])       # as a torn write after a power cut would
            else:
                cur.write_bytes(data[:100] + bytes([data[100] ^ 0x01]) + data[101:])
            gw = procs[0] = serve(layout, "--coap", f"127.0.0.1:{port}")
            e2e.wait_for(started(layout, i + 2), 20, "gateway restart", procs)
            procs[1 + hold].send_signal(signal.SIGCONT)
            start = [e for e in e2e.events(layout) if e.get("event") == "start"][-1]
            rec = [e for e in e2e.events(layout) if e.get("event") == "recovered"][-1]
            # checkpoint.prev (round on_disk - 1) + its journal replayed = round on_disk again
            assert start["round"] == on_disk, (damage, start, on_disk)
            seen.append((damage, on_disk, rec["frames"]))
        e2e.wait_for(lambda: gw.poll() is not None, 90, "the job to finish", procs)
        finish(procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
        e2e.stop(procs)
    print(f"damaged checkpoints (damage, round on disk, frames replayed) {seen}; {time.monotonic() - t0:.1f} s")
    last = {e["round"]: e["nodes"] for e in round_events(layout)}   # a replayed close is logged again
    assert sorted(last) == list(range(rounds))
    # Nothing acknowledged was lost: every round has all three nodes, counted once.
    assert all(nodes == [0, 1, 2] for nodes in last.values()), last
    st = load_state(layout)
    assert st.round == rounds and all(st.nodes[k].frames == rounds for k in range(3))
    replayed = e2e.replay(load_job(layout.job_path), e2e.recorded_frames(layout), order_seed=2)
    assert replayed.tobytes() == st.model.tobytes()


def test_both_checkpoints_corrupt_refuses_to_start(tmp_path):
    layout = e2e.make_job(tmp_path / "job", nodes=2, rounds=5)
    job = load_job(layout.job_path)
    store = Store(job.state_dir)
    for r in (1, 2):
        store.save(State(job_id=job.job_id, round=r, model=np.zeros(job.d, np.float32)))
    for p in (store.current, store.previous):
        p.write_bytes(p.read_bytes()[:-5])
    res = subprocess.run([PY, "-m", "aggregator.cli", "serve", str(layout.job_path), "--coap",
                          f"127.0.0.1:{free_udp_port()}"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "no readable checkpoint" in res.stderr, res.stderr
