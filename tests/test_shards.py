"""Shards and a root in one process: the combination, the partials, sealing and following.

The processes, brokers and faults are in tests/test_scale.py; here the shards' partials and
the root's downlink are handed over directly, so every step is deterministic:

* the mean over 2 and 3 shards is bit-identical to one gateway fed the same frames (the
  exact sum), for any arrival order; trimmed mean and median too (every update shipped);
* one shard behaves like one gateway, round for round;
* partials: byte-identical copies are duplicates, a different one for the same round is a
  conflict; forged, unknown-shard, replayed, future, cross-job, foreign-node and wrong-rule
  partials are refused and counted; one flipped byte anywhere is refused;
* a shard seals at its share of the quorum or its deadline, refuses new nodes after,
  takes the next round's frames early, follows the root's delta or snapshot, serves the
  root's exact bytes, and after a restart publishes the same partial again.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import cbor2
import numpy as np
import pytest

from aggregator.gateway import partial as partmod
from aggregator.gateway.config import ConfigError, load_job, parse_job
from aggregator.gateway.pipeline import ACCEPTED, DUPLICATE, REJECTED, Aggregator
from aggregator.gateway.robust import RULES
from aggregator.gateway.root import Root
from aggregator.gateway.shard import Shard
from aggregator.gateway.state import Store
from aggregator.ops import jobs
from aggregator.ops.jobs import write_toml

from fleet import update_frame

MQTT = {"mqtt": {"host": "127.0.0.1", "port": 1883}}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def sharded(tmp: Path, nodes: int, split: list[list[int]], rounds: int = 4, rule: str = "mean",
            quorum: float = 1.0, **kw) -> jobs.Layout:
    shards = {f"s{i}": {"nodes": part} for i, part in enumerate(split)}
    layout = jobs.prepare(tmp, "breast_cancer", nodes, rounds, k_cap=8, transports=MQTT, shards=shards,
                          quorum=quorum, deadline_s=10.0, **kw)
    if rule != "mean":
        tree = tomllib.loads(layout.job_path.read_text())
        tree["aggregation"] = {"rule": rule, "trim": 0.2}
        write_toml(layout.job_path, tree)
    return layout


class Fleet:
    """A root and its shards wired by queues: partials up, the root's messages down."""

    def __init__(self, job, tmp: Path | None, clock: Clock | None = None) -> None:
        self.job = job
        self.clock = clock or Clock()
        store = (lambda name: Store(tmp / name)) if tmp else (lambda name: None)
        self.root = Root(job, store("root"), clock=self.clock)
        self.shards = {n: Shard(job, n, store(n), clock=self.clock) for n in job.shards}
        self.up: list[bytes] = []
        self.down: list[bytes] = []
        for sh in self.shards.values():
            sh.senders.append(self.up.append)
        self.root.listeners.append(self._published)

    def _published(self, closed) -> None:
        self.down += [self.root.delta_message(closed.round), self.root.config_message(),
                      self.root.snapshot_message()]

    def pump(self) -> None:
        while self.up or self.down:
            while self.up:
                out = self.root.submit(self.up.pop(0), "test")
                assert out.ok, out.reason
            while self.down:
                msg = self.down.pop(0)
                for sh in self.shards.values():
                    sh.on_downlink(msg)

    def send(self, frames: dict[int, bytes]) -> None:
        for node, data in frames.items():
            out = self.shards[self.job.shard_of(node)].submit(data, "test")
            assert out.ok, (node, out.reason)
        self.pump()


def round_frames(job, rnd: int, rng: np.random.Generator, nodes=None) -> dict[int, bytes]:
    return {k: update_frame(job.job_id, k, job.node_keys[k], rnd, job.d, int(rng.integers(1, 9)), job.scheme, rng)
            for k in (job.nodes if nodes is None else nodes)}


def single(job, frames: list[dict[int, bytes]], order_seed: int = 0) -> Aggregator:
    agg = Aggregator(job)
    rng = np.random.default_rng(order_seed)
    for fr in frames:
        nodes = list(fr)
        rng.shuffle(nodes)
        for k in nodes:
            assert agg.submit(fr[k], "single").ok
    return agg


# ----------------------------------------------------------------------------- the combination
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("split", [[[0, 1, 2], [3, 4, 5, 6]], [[6, 0], [5, 1, 4], [2, 3]]], ids=["2 shards", "3 shards"])
def test_shards_and_root_give_one_gateways_model_bit_for_bit(tmp_path, rule, split):
    job = load_job(sharded(tmp_path / "job", 7, split, rounds=5, rule=rule).job_path)
    rng = np.random.default_rng(7)
    fleet = Fleet(job, tmp_path)
    sent = []
    for rnd in range(job.rounds):
        fr = round_frames(job, rnd, rng)
        sent.append(fr)
        order = list(fr)
        rng.shuffle(order)
        fleet.send({k: fr[k] for k in order})
        assert fleet.root.state.round == rnd + 1
        assert all(sh.state.round == rnd + 1 for sh in fleet.shards.values())
    one = single(job, sent, order_seed=3)
    assert fleet.root.state.model.tobytes() == one.state.model.tobytes()
    # the shards serve the root's bytes: edges cannot tell
    for sh in fleet.shards.values():
        assert sh.state.model.tobytes() == one.state.model.tobytes()
        assert sh.config_message() == fleet.root.config_message() == one.config_message()
        assert sh.snapshot_message() == fleet.root.snapshot_message()
        assert sh.delta_message(job.rounds - 1) == fleet.root.delta_message(job.rounds - 1) == one.delta_message(job.rounds - 1)
    assert sh.finished and fleet.root.finished


def test_one_shard_behaves_like_one_gateway(tmp_path):
    job = load_job(sharded(tmp_path / "job", 5, [[0, 1, 2, 3, 4]], rounds=4, quorum=0.6).job_path)
    assert job.quorum_count(5) == job.quorum_count() == 3
    rng = np.random.default_rng(2)
    fleet = Fleet(job, tmp_path)
    one = Aggregator(job)
    for rnd in range(job.rounds):
        fr = round_frames(job, rnd, rng)
        for k, data in fr.items():            # the same arrival order for both
            a = one.submit(data, "one")
            b = fleet.shards["s0"].submit(data, "shard")
            fleet.pump()
            assert (a.status, a.reason) == (b.status, b.reason), (rnd, k)
        assert fleet.root.state.round == one.state.round == rnd + 1
        assert fleet.root.state.history[-1].indices.tolist() == one.state.history[-1].indices.tolist()
    assert fleet.root.state.model.tobytes() == one.state.model.tobytes()


def test_the_exact_sum_keeps_a_billion_to_one_cancellation_that_float64_in_node_order_loses(tmp_path):
    """Values far apart in magnitude: the plain float64 sum in node order depends on the
    order; the exact sum (one gateway or shards) does not."""
    layout = sharded(tmp_path / "job", 3, [[0], [1, 2]], rounds=1)
    tree = tomllib.loads(layout.job_path.read_text())
    tree["training"]["scheme"] = "s"
    write_toml(layout.job_path, tree)
    job = load_job(layout.job_path)
    from array import array
    from edge import frame
    vals = {0: [3e7], 1: [1.0], 2: [-3e7]}
    frames = {}
    for k, v in vals.items():
        buf = bytearray(frame.buffer_size(job.d, 1, 1, 0))
        n = frame.encode_update(buf, job.node_keys[k], job.job_id, k, 0, 1, job.d, 1, array("I", [5]),
                                array("f", v), 0)
        frames[k] = bytes(buf[:n])
    fleet = Fleet(job, None)
    fleet.send(frames)
    one = single(job, [frames])
    assert fleet.root.state.model[5] == one.state.model[5] == np.float32(-1.0 / 3)


# ----------------------------------------------------------------------------- partials
def _partial(job, who: str, rnd: int, nodes: list[int], rng, key: bytes | None = None,
             over: dict | None = None) -> bytes:
    """A partial of `who` for round rnd over `nodes`, fields replaced by `over`, MACed by key."""
    ups = [(update_frame(job.job_id, k, job.node_keys[k], rnd, job.d, 3, job.scheme, rng)) for k in nodes]
    from aggregator.gateway import wire
    dec = [wire.decode_update_payload(k, wire.open_envelope(f, 1 << 20).payload, len(f)) for k, f in zip(nodes, ups)]
    from aggregator.gateway.robust import ExactSum
    p = partmod.Partial(job.job_id, who, rnd, job.d, "mean", sorted(nodes),
                        total=ExactSum.of([(u.indices, u.values) for u in dec]),
                        losses=np.full(len(nodes), np.nan, np.float32), counters={"frames": len(nodes)})
    for k, v in (over or {}).items():
        setattr(p, k, v)
    return partmod.encode(p, key or job.shards[who].key)


def test_partials_duplicates_conflicts_and_refusals_are_counted(tmp_path):
    job = load_job(sharded(tmp_path / "job", 6, [[0, 1, 2], [3, 4, 5]], rounds=3).job_path)
    other = load_job(sharded(tmp_path / "other", 6, [[0, 1, 2], [3, 4, 5]], rounds=3, job_id=2).job_path)
    rng = np.random.default_rng(5)
    root = Root(job, Store(tmp_path / "root"), clock=Clock())
    good = _partial(job, "s0", 0, [0, 1, 2], rng)
    out = root.submit(good, "t", topic_node="s0")
    assert out.status == ACCEPTED and out.seq == 1
    again = root.submit(good, "t")
    assert again.status == DUPLICATE and again.seq == 1          # acknowledged once it is on disk
    refusals = {
        "conflict": _partial(job, "s0", 0, [0, 1, 2], rng),                       # another partial, same round
        "bad_mac": _partial(job, "s1", 0, [3, 4, 5], rng, key=bytes(32)),         # forged
        "unknown_kid": _partial(job, "s1", 0, [3], rng, over={"shard": "s9"}),             # a shard the job has not
        "foreign_node": _partial(job, "s1", 0, [2, 3], rng),                       # node 2 is s0's
        "future_round": _partial(job, "s1", 1, [3, 4, 5], rng),
        "wrong_job": _partial(other, "s1", 0, [3, 4, 5], rng, key=job.shards["s1"].key),
        "wrong_rule": _partial(job, "s1", 0, [3], rng, over={
            "rule": "median", "updates": [(3, np.array([1]), np.array([0.5], np.float32))], "total": None}),
        "topic_mismatch": _partial(job, "s1", 0, [3, 4, 5], rng),
    }
    for reason, data in refusals.items():
        out = root.submit(data, "t", topic_node="s0" if reason == "topic_mismatch" else None)
        assert (out.status, out.reason) == (REJECTED, reason)
    assert root.state.round == 0 and list(root.pending) == ["s0"]
    # one flipped byte anywhere in a good partial: refused, nothing changes
    good1 = _partial(job, "s1", 0, [3, 4, 5], rng)
    for i in range(0, len(good1), max(1, len(good1) // 97)):
        bad = bytearray(good1)
        bad[i] ^= 0x10
        assert root.submit(bytes(bad), "t").status == REJECTED, i
    assert root.state.round == 0
    assert root.submit(good1, "t").status == ACCEPTED and root.state.round == 1
    # a replay of round 0 once round 1 is open
    assert root.submit(good1, "t").reason == "stale_round"
    for reason in refusals:
        assert root.state.rejected[reason] >= 1, reason
    assert root.state.extra["shards"]["s1"] == {"frames": 3}
    assert all(root.state.nodes[k].frames == 1 for k in range(6))


def test_partial_cose_verifies_with_an_independent_implementation(tmp_path):
    from pycose.keys import SymmetricKey
    from pycose.messages import Mac0Message
    job = load_job(sharded(tmp_path / "job", 2, [[0], [1]]).job_path)
    data = _partial(job, "s1", 4, [1], np.random.default_rng(0))
    obj = cbor2.loads(data)
    # pycose 1.1 expects cbor2 5.x's types (tests/test_wire.py): hand it the parsed structure
    msg = Mac0Message.from_cose_obj([obj.value[0], dict(obj.value[1]), obj.value[2], obj.value[3]], True)
    msg.key = SymmetricKey(k=job.shards["s1"].key)
    assert msg.verify_tag() and dict(obj.value[1]) == {4: b"s1"}
    assert msg.encode(tag=True) == data
    msg.key = SymmetricKey(k=job.shards["s0"].key)
    assert not msg.verify_tag()


# ----------------------------------------------------------------------------- the shard
def test_a_shard_seals_at_its_share_then_refuses_new_nodes_and_takes_the_next_round_early(tmp_path):
    job = load_job(sharded(tmp_path / "job", 8, [[0, 1, 2, 3], [4, 5, 6, 7]], quorum=0.5).job_path)
    rng = np.random.default_rng(1)
    fleet = Fleet(job, tmp_path)
    s0 = fleet.shards["s0"]
    assert s0.quorum == 2
    fr = round_frames(job, 0, rng)
    assert s0.submit(fr[0], "t").status == ACCEPTED and not s0.sealed
    assert s0.submit(fr[1], "t").status == ACCEPTED and s0.sealed and len(fleet.up) == 1
    assert s0.submit(fr[1], "t").status == DUPLICATE
    assert s0.submit(fr[2], "t").reason == "sealed"
    nxt = round_frames(job, 1, rng, nodes=[0, 3])
    assert s0.submit(nxt[0], "t").status == ACCEPTED                # round 1 before it opened here
    assert s0.submit(nxt[0], "t").status == DUPLICATE
    assert s0.submit(round_frames(job, 2, rng, nodes=[3])[3], "t").reason == "future_round"
    fleet.pump()                                                       # the root waits for s1
    assert fleet.root.state.round == 0
    fleet.send({4: fr[4], 5: fr[5]})                                   # s1 seals, the root closes
    assert fleet.root.state.round == 1 == s0.state.round
    assert list(s0.pending) == [0] and s0.state.nodes[0].frames == 2   # counted when round 1 opened
    assert s0.submit(nxt[3], "t").status == ACCEPTED and s0.sealed     # its share again: sealed
    assert 2 not in fleet.root.state.nodes and fleet.root.state.nodes[1].frames == 1


def test_a_shard_seals_at_its_deadline_and_the_root_closes_at_the_jobs(tmp_path):
    clock = Clock()
    job = load_job(sharded(tmp_path / "job", 4, [[0, 1], [2, 3]]).job_path)
    fleet = Fleet(job, tmp_path, clock)
    rng = np.random.default_rng(3)
    fr = round_frames(job, 0, rng)
    fleet.send({0: fr[0], 2: fr[2]})
    clock.t += job.deadline_s * job.shard_deadline - 0.01
    for sh in fleet.shards.values():
        sh.tick()
    assert not fleet.up
    clock.t += 0.02
    fleet.shards["s0"].tick()                  # s0 seals with node 0; s1 stays away
    fleet.pump()
    assert fleet.root.state.round == 0 and fleet.root.tick() is None
    clock.t += job.deadline_s
    closed = fleet.root.tick()
    assert closed is not None and closed.nodes == [0]
    fleet.pump()
    # s1 missed the round: it follows the root, its frame stays out
    assert fleet.shards["s1"].state.round == 1 and not fleet.shards["s1"].pending
    assert fleet.shards["s1"].state.model.tobytes() == fleet.root.state.model.tobytes()


def test_a_shard_that_was_away_catches_up_by_snapshot(tmp_path):
    job = load_job(sharded(tmp_path / "job", 4, [[0, 1], [2, 3]], rounds=6).job_path)
    rng = np.random.default_rng(4)
    fleet = Fleet(job, tmp_path)
    away = fleet.shards.pop("s1")
    snapshots = []
    fleet.root.listeners.append(lambda c: snapshots.append(fleet.root.snapshot_message()))
    for rnd in range(3):                        # the root closes at the deadline without s1
        fleet.send(round_frames(job, rnd, rng, nodes=[0, 1]))
        fleet.root.clock.t += job.deadline_s
        fleet.root.tick()
        fleet.pump()
    assert fleet.root.state.round == 3 and away.state.round == 0
    assert not away.on_downlink(fleet.root.delta_message(1))           # not its round: ignored
    assert away.on_downlink(snapshots[-1]) and away.state.round == 3
    assert away.state.model.tobytes() == fleet.root.state.model.tobytes()
    assert away.delta_message(2) is None                                # no deltas kept: edges take the snapshot
    assert away.snapshot_message() == fleet.root.snapshot_message()


def test_a_restarted_shard_publishes_the_same_partial_again(tmp_path):
    job = load_job(sharded(tmp_path / "job", 4, [[0, 1], [2, 3]]).job_path)
    rng = np.random.default_rng(8)
    fr = round_frames(job, 0, rng)
    sh = Shard(job, "s0", Store(tmp_path / "s0"))
    sent: list[bytes] = []
    sh.senders.append(sent.append)
    for k in (0, 1):
        sh.submit(fr[k], "t")
    sh.submit(round_frames(job, 1, rng, nodes=[1])[1], "t")          # taken early for round 1
    sh.store.close_journal()
    again = Shard(job, "s0", Store(tmp_path / "s0"))
    resent: list[bytes] = []
    again.senders.append(resent.append)
    assert again.recover() == 3 and again.sealed and list(again.pending) == [0, 1]
    again.publish()
    assert resent == sent and len(sent) == 1
    assert again.submit(fr[1], "t").status == DUPLICATE
    assert again.submit(round_frames(job, 1, rng, nodes=[1])[1], "t").status == DUPLICATE
    assert all(again.state.nodes[k].frames == 1 for k in (0, 1))


# ----------------------------------------------------------------------------- the job file
@pytest.mark.parametrize("shards, message", [
    ({"a": {"nodes": [0, 1], "key": "ab" * 32}}, "shards: node 2 is in no shard (1 node(s) unassigned)"),
    ({"a": {"nodes": [0, 1, 2], "key": "ab" * 32}, "b": {"nodes": ["2-2"], "key": "ab" * 32}},
     "shards.b.nodes: node 2 is already in shard 'a'"),
    ({"a": {"nodes": [0, 1, 2, 9], "key": "ab" * 32}}, "shards.a.nodes: node 9 is not in [nodes]"),
    ({"a": {"nodes": ["2-0"], "key": "ab" * 32}}, "shards.a.nodes: '2-0' is neither a node id nor a range 'a-b' with a <= b"),
    ({"a/b": {"nodes": [0, 1, 2], "key": "ab" * 32}}, "shards.a/b: shard names are 1..64 letters, digits, '-' or '_' (they name MQTT topics)"),
    ({"a": {"nodes": [0, 1, 2], "key": "ab" * 32, "coap": "5683"}}, 'shards.a.coap: expected "host:port", got \'5683\''),
    ({"a": {"nodes": [0, 1, 2], "key": "ab" * 32, "port": 1}}, "shards.a.port: unknown key"),
    ({"a": {"nodes": [0, 1], "key": "ab" * 32, "coap": "h:1"}, "b": {"nodes": [2], "key": "ab" * 32, "coap": "h:1"}},
     "shards.b.coap: shard 'a' serves CoAP there already"),
])
def test_shard_tables_are_checked(shards, message):
    tree = {"job": {"id": 1}, "model": {"kind": "logistic", "features": 4, "L": 1.0},
            "nodes": {str(k): "cd" * 32 for k in range(3)}, "downlink": {"key": "ef" * 32},
            "transports": MQTT, "shards": shards}
    with pytest.raises(ConfigError) as exc:
        parse_job(tree)
    assert str(exc.value) == f"job.toml: {message}"


def test_shards_need_the_broker_and_name_each_nodes_endpoint(tmp_path):
    tree = {"job": {"id": 1}, "model": {"kind": "logistic", "features": 4, "L": 1.0},
            "nodes": {str(k): "cd" * 32 for k in range(3)}, "downlink": {"key": "ef" * 32},
            "shards": {"a": {"nodes": ["0-2"], "key": "ab" * 32}}}
    with pytest.raises(ConfigError, match="add \\[transports.mqtt\\]"):
        parse_job(tree)
    layout = sharded(tmp_path / "job", 4, [[0, 1], [2, 3]])
    tree = tomllib.loads(layout.job_path.read_text())
    tree["shards"]["s0"]["coap"] = "127.0.0.1:5701"
    tree["shards"]["s1"]["mqtt"] = "10.0.0.2:1884"
    write_toml(layout.job_path, tree)
    job = load_job(layout.job_path)
    assert job.endpoint(0, "coap") == ("127.0.0.1", 5701) and job.endpoint(0, "mqtt") == ("127.0.0.1", 1883)
    assert job.endpoint(2, "coap") is None and job.endpoint(2, "mqtt") == ("10.0.0.2", 1884)
    assert jobs.node_endpoint(job, 0) == {"transport": "coap", "host": "127.0.0.1", "port": 5701}
    assert jobs.node_endpoint(job, 3) == {"transport": "mqtt", "host": "10.0.0.2", "port": 1884}
    assert job.shards["s1"].state_dir == layout.root / "state-s1"


# ----------------------------------------------------------------------------- the commands
def test_serve_root_and_flash_name_the_shards(tmp_path, capsys):
    """One-line refusals for a sharded job run the wrong way; flash puts the node's shard's
    address into the board's node.json."""
    import json
    from aggregator.cli import main
    layout = sharded(tmp_path / "job", 4, [[0, 1], [2, 3]])
    tree = tomllib.loads(layout.job_path.read_text())
    tree["shards"]["s1"]["coap"] = "192.0.2.9:5700"
    write_toml(layout.job_path, tree)
    plain = jobs.prepare(tmp_path / "plain", "breast_cancer", 2, 2, transports=MQTT)
    for argv, msg in ((["serve", str(layout.job_path)], "has shards (s0, s1): run `serve --shard NAME`"),
                      (["serve", str(layout.job_path), "--shard", "s7"], "has no shard 's7' (known: s0, s1)"),
                      (["serve", str(plain.job_path), "--shard", "s0"], "(no [shards] at all)"),
                      (["root", str(plain.job_path)], "has no [shards]: one gateway serves it"),
                      (["flash", str(layout.job_path), "--node", "0", "--data", str(layout.data_files[0]),
                        "--stage", str(tmp_path / "x")], "shard 's0' of node 0 serves no CoAP")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (argv, err)
    stage = tmp_path / "board"
    assert main(["flash", str(layout.job_path), "--node", "3", "--data", str(layout.data_files[3]),
                 "--stage", str(stage)]) == 0
    cfg = json.loads((stage / "node.json").read_text())
    assert (cfg["transport"], cfg["host"], cfg["port"], cfg["node"]) == ("coap", "192.0.2.9", 5700, 3)
    mqtt = ["flash", str(layout.job_path), "--node", "0", "--transport", "mqtt", "--data", str(layout.data_files[0]),
            "--stage", str(stage)]
    assert main(mqtt) == 2      # the job's profile prices CoAP: an MQTT node would be priced for another stack
    assert "transport mqtt, but cost profile ieee802154-6lowpan-coap prices coap" in capsys.readouterr().err
    tree["cost"]["profile"] = "wifi-tcp-mqtt-esp32"
    write_toml(layout.job_path, tree)
    assert main(mqtt) == 0
    cfg = json.loads((stage / "node.json").read_text())
    assert (cfg["transport"], cfg["host"], cfg["port"]) == ("mqtt", "127.0.0.1", 1883)


@pytest.mark.parametrize("rule", RULES)
def test_the_largest_partial_fits_the_root_and_the_broker(tmp_path, rule):
    """Every node sends T = cap entries whose values span every float32 bin: the encoded
    partial stays within partial.max_bytes, which is what the root accepts and what
    broker-config gives Mosquitto's max_packet_size."""
    from aggregator.gateway.pipeline import t_cap
    from aggregator.gateway.robust import ExactSum
    from aggregator.ops.broker import conf_text
    job = load_job(sharded(tmp_path / "job", 6, [[0, 1, 2, 3, 4], [5]], rule=rule).job_path)
    nodes = job.shards["s0"].nodes
    cap = min(t_cap(job), job.d)
    rng = np.random.default_rng(0)
    ups = []
    for k in nodes:
        idx = np.sort(rng.choice(job.d, cap, replace=False)).astype(np.int64)
        vals = (rng.choice([-1, 1], cap) * 10.0 ** rng.uniform(-44, 38, cap)).astype(np.float32)
        ups.append((idx, vals))
    p = partmod.Partial(job.job_id, "s0", 0, job.d, rule, nodes, losses=np.zeros(len(nodes), np.float32),
                        counters={"frames": 10 ** 9, "rejected.bad_mac": 10 ** 9})
    if rule == "mean":
        p.total = ExactSum.of(ups)
        assert len(p.total.bins) >= 8
    else:
        p.updates = [(k, i, v) for k, (i, v) in zip(nodes, ups)]
    data = partmod.encode(p, job.shards["s0"].key)
    limit = partmod.max_bytes(job, len(nodes))
    assert len(data) <= limit and Root(job).max_bytes >= limit
    packet = int(next(l for l in conf_text(job, ("127.0.0.1", 1), {"passwd": "p", "acl": "a", "data": "d"},
                                           False).splitlines() if l.startswith("max_packet_size")).split()[1])
    assert packet >= limit + 1024


def test_operator_requests_go_to_the_nodes_shard(tmp_path, capsys):
    from aggregator.cli import main
    from aggregator.gateway import keys
    layout = sharded(tmp_path / "job", 4, [[0, 1], [2, 3]])
    job = load_job(layout.job_path)
    for s in job.shards.values():
        s.state_dir.mkdir(parents=True)
    assert main(["quarantine", "add", "3", "--job", str(layout.job_path), "--reason", "stolen"]) == 0
    assert [r["node"] for _, r in keys.pending_requests(job.shards["s1"].state_dir)] == [3]
    assert list(keys.pending_requests(job.shards["s0"].state_dir)) == []
    capsys.readouterr()
    assert main(["quarantine", "list", "--job", str(layout.job_path)]) == 2
    assert "has shards (s0, s1): give --state" in capsys.readouterr().err
    assert main(["quarantine", "list", "--state", str(job.shards["s1"].state_dir)]) == 0
    assert "queued: quarantine node 3" in capsys.readouterr().out


def test_each_process_of_a_sharded_job_writes_its_status_in_its_own_state_directory(tmp_path):
    # Shards and the root ran on one machine with one status.json (and one temporary name)
    # between them; one process's rename then removed the other's file and stopped it.
    from aggregator.gateway.live import STATUS_FILE
    from aggregator.gateway.service import Endpoints, Service
    job = load_job(sharded(tmp_path, 4, [[0, 1], [2, 3]]).job_path)
    procs = {"root": Service(job, Endpoints(), root=True)}
    procs.update({s: Service(job, Endpoints(), shard=s) for s in job.shards})
    dirs = {job.state_dir} | {job.shards[s].state_dir for s in job.shards}
    assert {p.live.path.parent for p in procs.values()} == dirs and len(dirs) == 3
    for p in procs.values():
        p.live.write()
    for name, p in procs.items():
        d = job.state_dir if name == "root" else job.shards[name].state_dir
        assert (d / STATUS_FILE).is_file()
