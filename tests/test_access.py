"""Access control: a real Mosquitto running the config `cat-aggregator
broker-config` writes refuses clients without credentials, with wrong ones, without TLS or
trusting another CA, and a node publishing on another node's topic or a downlink topic; the
gateway and the edges train through it. The CoAP endpoint is protected by the frames' own
COSE_Mac0 (docs/deployment.md says why): forged, tampered, cross-node and replayed frames
are refused and change nothing."""

from __future__ import annotations

import asyncio
import getpass
import os
import queue
import socket
import ssl
import subprocess
import threading
import time
import tomllib
from array import array
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from aggregator.ops import broker
from aggregator.cli import main as cli_main
from aggregator.gateway.config import load_job
from aggregator.ops.demo import ServiceThread, free_udp_port
from aggregator.gateway.pipeline import Aggregator
from aggregator.gateway.service import Endpoints
from edge import frame
from edge.cat import SCHEME_SQ

import e2e
from peers import MOSQUITTO, _stop_process, _tail, coap_ping, free_port

pytestmark = pytest.mark.e2e   # real processes and peers on loopback


# ----------------------------------------------------------------------------- helpers
class LockedBroker:
    """Mosquitto with a generated config (the peers.MosquittoBroker probe would be refused)."""

    def __init__(self, files: broker.BrokerFiles) -> None:
        self.files = files
        self.host, self.port = files.listen
        self.log_path = files.out / "mosquitto.log"
        self.proc: subprocess.Popen | None = None
        if os.geteuid() == 0:       # as root Mosquitto would switch to user "mosquitto"
            with files.conf.open("a") as fh:
                fh.write(f"user {getpass.getuser()}\n")

    def start(self) -> "LockedBroker":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.files.conf)], stdin=subprocess.DEVNULL,
                                     stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT)
        end = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited {self.proc.returncode}:\n{_tail(self.log_path)}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return self
            except OSError:
                if time.monotonic() > end:
                    raise RuntimeError(f"mosquitto not listening:\n{_tail(self.log_path)}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        _stop_process(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def locked_broker(tmp_path: Path, nodes: int = 3, tls: bool = True, rounds: int = 5):
    layout = e2e.make_job(tmp_path / "job", nodes=nodes, rounds=rounds, transport="mqtt")
    files = broker.write_broker_config(load_job(layout.job_path), tmp_path / "broker",
                                       ("127.0.0.1", free_port("tcp")), tls=tls, node_configs=layout.node_configs)
    return layout, files, LockedBroker(files).start()


class Client:
    """A paho 2.x client whose callbacks land in one queue, for step-by-step assertions."""

    def __init__(self, b: LockedBroker, user: str | None = None, password: str | None = None,
                 ca: str | Path | None = "default", protocol=mqtt.MQTTv5, client_id: str = "") -> None:
        self.q: queue.Queue = queue.Queue()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"t{time.monotonic_ns()}",
                             protocol=protocol)
        if user is not None:
            self.c.username_pw_set(user, password)
        if ca == "default":
            ca = b.files.ca
        if ca is not None:
            self.c.tls_set(ca_certs=str(ca))
        self.c.on_connect = lambda cl, ud, fl, rc, pr: self.q.put(("connect", rc))
        self.c.on_disconnect = lambda cl, ud, fl, rc, pr: self.q.put(("disconnect", rc))
        self.c.on_publish = lambda cl, ud, mid, rc, pr: self.q.put(("puback", mid, rc))
        self.c.on_subscribe = lambda cl, ud, mid, rcs, pr: self.q.put(("suback", mid, rcs))
        self.c.on_message = lambda cl, ud, m: self.q.put(("message", m.topic, bytes(m.payload)))
        self.c.connect(b.host, b.port, keepalive=10)
        self.c.loop_start()

    def next(self, kind: str, timeout: float = 5.0):
        """The next callback of `kind` (others of other kinds are kept in order), or None."""
        end = time.monotonic() + timeout
        skipped = []
        try:
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    return None
                try:
                    ev = self.q.get(timeout=left)
                except queue.Empty:
                    return None
                if ev[0] == kind:
                    return ev
                skipped.append(ev)
        finally:
            for ev in skipped:
                self.q.put(ev)

    def publish(self, topic: str, payload: bytes):
        mid = self.c.publish(topic, payload, qos=1).mid
        while True:
            ev = self.next("puback")
            assert ev is not None, f"no PUBACK for {topic}"
            if ev[1] == mid:
                return ev[2]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def update(job, node: int, rnd: int, key: bytes | None = None, claim: int | None = None) -> bytes:
    """A valid S+Q update of `node` for round `rnd` (MACed with `key`, claiming node `claim`)."""
    rng = np.random.default_rng(100 * node + rnd)
    idx = array("I", sorted(rng.choice(job.d, 5, replace=False).tolist()))
    m = float(np.float32(0.01 + rng.random() * 0.1))
    vals = array("f", [m if s else -m for s in rng.integers(0, 2, 5)])
    buf = bytearray(frame.buffer_size(job.d, 8, SCHEME_SQ, 0))
    nid = node if claim is None else claim
    n = frame.encode_update(buf, key or job.node_keys[node], job.job_id, nid, rnd, SCHEME_SQ, job.d, 5, idx, vals, 0)
    return bytes(buf[:n])


# ----------------------------------------------------------------------------- the generator
def test_password_hashes_match_mosquitto_passwd(tmp_path):
    pw = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "u", "s3cret"], check=True, capture_output=True, timeout=60)
    theirs = pw.read_text().strip().split(":", 1)[1]
    assert broker.check_mosquitto_hash("s3cret", theirs) and not broker.check_mosquitto_hash("s3cre", theirs)
    ours = broker.mosquitto_hash("s3cret")
    assert ours.startswith("$7$") and broker.check_mosquitto_hash("s3cret", ours)
    assert not broker.check_mosquitto_hash("other", ours)


def test_broker_config_command_writes_locked_down_files_and_reuses_secrets(tmp_path, capsys):
    layout = e2e.make_job(tmp_path / "job", nodes=3, rounds=3)
    out = tmp_path / "broker"
    argv = ["broker-config", "--job", str(layout.job_path), "--out", str(out), "--tls",
            "--listen", "127.0.0.1:18883", "--update-node-configs"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "--mqtt-username cat-1-gateway" in printed and "--mqtt-cafile" in printed
    for name in ("passwd", "credentials.toml", "gateway.password", "ca.key", "server.key"):
        assert (out / name).stat().st_mode & 0o077 == 0, name          # secrets: owner only
    conf = (out / "mosquitto.conf").read_text().splitlines()
    assert "allow_anonymous false" in conf and "listener 18883 127.0.0.1" in conf
    # Listener options after `listener`, or Mosquitto opens a default plain-text :1883 too.
    assert conf.index("use_username_as_clientid true") > conf.index("listener 18883 127.0.0.1")
    assert "tls_version tlsv1.2" in conf
    acl = (out / "acl").read_text()
    assert "user cat-1-node-2\ntopic write cat/1/up/2\ntopic read cat/1/config\n" in acl
    assert "user cat-1-gateway\ntopic read cat/1/up/+\n" in acl and "readwrite" not in acl
    creds = tomllib.loads((out / "credentials.toml").read_text())
    hashes = dict(line.split(":", 1) for line in (out / "passwd").read_text().splitlines())
    assert broker.check_mosquitto_hash(creds["gateway"]["password"], hashes["cat-1-gateway"])
    for k in range(3):
        node_cfg = tomllib.loads(layout.node_configs[k].read_text())
        assert (node_cfg["username"], node_cfg["password"]) == (creds["nodes"][str(k)]["username"],
                                                                creds["nodes"][str(k)]["password"])
        assert node_cfg["key"] == load_job(layout.job_path).node_keys[k].hex()   # other keys kept
    # cat-edge takes the credentials from its config file.
    from edge import cli as edge_cli
    args = edge_cli.build_parser().parse_args(["--config", str(layout.node_configs[1])])
    edge_cli._merge_config(args)
    assert args.username == "cat-1-node-1" and args.password == creds["nodes"]["1"]["password"]
    v = subprocess.run(["openssl", "verify", "-CAfile", str(out / "ca.crt"), str(out / "server.crt")],
                       capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stderr
    san = subprocess.run(["openssl", "x509", "-in", str(out / "server.crt"), "-noout", "-ext", "subjectAltName"],
                         capture_output=True, text=True, timeout=60).stdout
    assert "IP Address:127.0.0.1" in san and "DNS:localhost" in san
    # Re-running keeps passwords and the CA (edges pin it); --new-passwords replaces passwords.
    ca = (out / "ca.crt").read_bytes()
    assert cli_main(argv) == 0
    assert tomllib.loads((out / "credentials.toml").read_text()) == creds and (out / "ca.crt").read_bytes() == ca
    assert cli_main(argv + ["--new-passwords"]) == 0
    fresh = tomllib.loads((out / "credentials.toml").read_text())
    assert fresh["gateway"]["password"] != creds["gateway"]["password"] and (out / "ca.crt").read_bytes() == ca
    # Other names: a new server certificate under the same CA.
    crt = (out / "server.crt").read_bytes()
    assert cli_main(argv + ["--san", "gw.site.example", "--san", "192.0.2.7"]) == 0
    assert (out / "server.crt").read_bytes() != crt and (out / "ca.crt").read_bytes() == ca
    san = subprocess.run(["openssl", "x509", "-in", str(out / "server.crt"), "-noout", "-ext", "subjectAltName"],
                         capture_output=True, text=True, timeout=60).stdout
    assert "DNS:gw.site.example" in san and "IP Address:192.0.2.7" in san


# ----------------------------------------------------------------------------- the broker refuses
def test_locked_broker_refuses_strangers_wrong_credentials_and_foreign_topics(tmp_path):
    layout, files, b = locked_broker(tmp_path)
    creds = tomllib.loads(files.credentials.read_text())
    gw_user, gw_pw = files.gateway
    n = {k: tuple(v) for k, v in files.nodes.items()}
    clients = []
    try:
        # Only the configured TLS listener is open (no default plain-text :1883).
        assert [line.split()[-1] for line in b.log().splitlines() if "listen socket on port" in line] == \
            [f"{files.listen[1]}."]
        for user, pw in ((None, None), (n[1][0], "wrong"), (n[1][0], n[2][1]), ("cat-1-node-9", "x")):
            c = Client(b, user, pw)
            clients.append(c)
            ev = c.next("connect")
            assert ev is not None and ev[1].is_failure and ev[1].getName() == "Not authorized", (user, ev)
        # Right credentials without TLS, or trusting another CA: no connection at all.
        c = Client(b, *n[1], ca=None)
        clients.append(c)
        assert c.next("connect", 3) is None
        other = tmp_path / "other-ca"
        other.mkdir()
        other_ca, _, _ = broker.make_tls(other, ["localhost", "127.0.0.1"])
        with pytest.raises(ssl.SSLCertVerificationError):
            Client(b, *n[1], ca=other_ca)

        gw = Client(b, gw_user, gw_pw)
        clients.append(gw)
        assert not gw.next("connect")[1].is_failure
        gw.c.subscribe("cat/1/up/+", qos=1)
        assert gw.next("suback") is not None
        n1 = Client(b, *n[1])
        clients.append(n1)
        assert not n1.next("connect")[1].is_failure
        # MQTT 5 says why: PUBACK 0x87 Not authorized for every topic but its own uplink.
        assert n1.publish("cat/1/up/1", b"mine").getName() == "Success"
        for topic in ("cat/1/up/2", "cat/1/up/0", "cat/1/config", "cat/1/model", "cat/1/down", "cat/2/up/1"):
            rc = n1.publish(topic, b"forged " + topic.encode())
            assert rc.value == 0x87 and rc.getName() == "Not authorized", topic
        got = gw.next("message")
        assert got == ("message", "cat/1/up/1", b"mine") and gw.next("message", 1.0) is None
        # A node may subscribe to up/+, but the broker delivers it nobody else's uplink.
        n1.c.subscribe("cat/1/up/+", qos=1)
        assert n1.next("suback") is not None
        # MQTT 3.1.1 has no reason codes: the broker acknowledges a refused publish and drops it.
        n2 = Client(b, *n[2], protocol=mqtt.MQTTv311)
        clients.append(n2)
        assert not n2.next("connect")[1].is_failure
        assert n2.publish("cat/1/up/1", b"forged by 2").getName() == "Success"
        assert n2.publish("cat/1/up/2", b"mine, after the forgery").getName() == "Success"
        assert gw.next("message") == ("message", "cat/1/up/2", b"mine, after the forgery")
        assert gw.next("message", 1.0) is None                      # the forgery never arrived
        assert n1.next("message", 0.5) is None                      # nor did node 2's uplink
        # The gateway alone writes the downlink; nodes read it.
        n1.c.subscribe("cat/1/config", qos=1)
        assert n1.next("suback") is not None
        assert gw.publish("cat/1/config", b"cfg").getName() == "Success"
        assert n1.next("message") == ("message", "cat/1/config", b"cfg")
        assert gw.publish("cat/1/up/1", b"x").value == 0x87
        # A node cannot take over another's (persistent) session: the client id is the username.
        n2.close()
        n1_again = Client(b, *n[2], client_id=n[1][0])
        clients.append(n1_again)
        assert not n1_again.next("connect")[1].is_failure
        assert n1.next("disconnect", 1.0) is None
        logins = [line.split(" as ")[1].split()[0] for line in b.log().splitlines() if "New client connected" in line]
        assert logins.count(n[2][0]) == 2 and logins.count(n[1][0]) == 1, logins
        assert creds["gateway"]["username"] == gw_user
    finally:
        for c in clients:
            c.close()
        b.stop()


# ----------------------------------------------------------------------------- training through it
def test_gateway_and_edges_train_through_the_locked_tls_broker(tmp_path):
    """`serve --mqtt-username --mqtt-password-file --mqtt-cafile` and Pi edges (PahoLink) with TLS
    and their own credentials; a node replaying another node's frame on its own topic is refused
    by the gateway (topic and kid must agree), one with a bad MAC too."""
    from edge import datafile, profile
    from edge.node import EdgeNode
    from edge.pi import PahoLink

    rounds = 6
    layout, files, b = locked_broker(tmp_path, nodes=3, rounds=rounds)
    job = load_job(layout.job_path)
    host, port = files.listen
    gw = e2e.serve(layout, "--mqtt", f"{host}:{port}", "--mqtt-username", files.gateway[0],
                   "--mqtt-password-file", str(files.gateway_password_file), "--mqtt-cafile", str(files.ca))
    results: dict[int, object] = {}
    recorded: dict[int, dict[int, bytes]] = {}

    def run_edge(k: int) -> None:
        try:
            cfg = tomllib.loads(layout.node_configs[k].read_text())
            node = EdgeNode(k, bytes.fromhex(cfg["key"]), bytes.fromhex(cfg["downlink_key"]), job.job_id,
                            datafile.DataFile(cfg["data"]), profile.load_profile(cfg["profile"]))
            node.record = lambda r, f: recorded.setdefault(r, {}).__setitem__(k, bytes(f))
            link = PahoLink(host, port, job.job_id, k, cfg["username"], cfg["password"], tls=files.gateway_tls())
            try:
                results[k] = node.run(link, timeout=60)
            finally:
                link.close()
        except BaseException as exc:  # reported by the main thread
            results[k] = exc

    threads = [threading.Thread(target=run_edge, args=(k,), daemon=True) for k in range(3)]
    intruder = None
    try:
        e2e.wait_for(lambda: any(e.get("event") == "start" for e in e2e.events(layout)), 20, "gateway start", [gw])
        intruder = Client(b, *files.nodes[0])
        assert not intruder.next("connect")[1].is_failure
        forged = update(job, 1, 0)                                   # node 1's valid frame ...
        assert intruder.publish("cat/1/up/0", forged).getName() == "Success"   # ... on node 0's topic
        bad = bytearray(update(job, 0, 0))
        bad[-1] ^= 0xFF
        assert intruder.publish("cat/1/up/0", bytes(bad)).getName() == "Success"
        e2e.wait_for(lambda: sum(e.get("event") == "reject" for e in e2e.events(layout)) >= 2, 10, "two refusals", [gw])
        intruder.close()
        intruder = None
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        e2e.wait_for(lambda: gw.poll() is not None, 20, "gateway exit")
        assert gw.returncode == 0
    finally:
        if intruder is not None:
            intruder.close()
        e2e.stop([gw])
        b.stop()
    assert results == {0: rounds, 1: rounds, 2: rounds}, results
    st = e2e.final_model(layout)
    rejected = [(e["reason"], e["node"]) for e in e2e.events(layout) if e.get("event") == "reject"]
    assert ("topic_mismatch", 1) in rejected and ("bad_mac", None) in rejected
    rounds_ev = [e for e in e2e.events(layout) if e.get("event") == "round"]
    assert [e["round"] for e in rounds_ev] == list(range(rounds)) and all(e["nodes"] == [0, 1, 2] for e in rounds_ev)
    assert e2e.replay(job, recorded).tobytes() == st.tobytes()
    assert "cat-1-gateway" in b.log()


def test_cat_edge_processes_log_in_with_the_credentials_broker_config_wrote(tmp_path):
    """Plain-text variant (cat-edge has no CA option yet): real cat-edge processes read their
    username/password from the node configs that `broker-config --update-node-configs` wrote."""
    rounds = 4
    layout, files, b = locked_broker(tmp_path, nodes=2, tls=False, rounds=rounds)
    host, port = files.listen
    gw = e2e.serve(layout, "--mqtt", f"{host}:{port}", "--mqtt-username", files.gateway[0],
                   "--mqtt-password-file", str(files.gateway_password_file))
    procs = [gw]
    try:
        e2e.wait_for(lambda: any(e.get("event") == "start" for e in e2e.events(layout)), 20, "gateway start", procs)
        procs += [e2e.edge(layout, k, "mqtt", host, port) for k in range(2)]
        e2e.wait_for(lambda: gw.poll() is not None, 60, f"{rounds} rounds", procs)
        for p in procs:
            p.wait(30)
            assert p.returncode == 0
    finally:
        e2e.stop(procs)
        b.stop()
    assert e2e.closed_rounds(layout) == rounds
    for k in range(2):
        assert f"u'cat-1-node-{k}'" in b.log()
    assert "not authorised" not in b.log()


def test_sharded_job_broker_lets_each_node_publish_only_where_its_shard_listens(tmp_path):
    """broker-config for a job with [shards]: a root and a user per shard instead of the
    gateway. Shard a reads only its own nodes' uplinks and writes only its partial topic; the
    root reads the partials and writes the downlink. Then the root, both shards and real
    cat-edge processes (credentials and their shard's endpoint from their node configs) train
    through the locked broker."""
    rounds = 4
    port = free_port("tcp")
    shards = {"a": {"nodes": [0, 1]}, "b": {"nodes": [2, 3]}}
    layout = e2e.make_job(tmp_path / "job", nodes=4, rounds=rounds, shards=shards,
                          transports={"mqtt": {"host": "127.0.0.1", "port": port}}, transport="mqtt")
    job = load_job(layout.job_path)
    files = broker.write_broker_config(job, tmp_path / "broker", ("127.0.0.1", port), tls=False,
                                       node_configs=layout.node_configs)
    assert files.gateway[0] == "cat-1-root" and set(files.shards) == {"a", "b"}
    assert "cat-1-gateway" not in files.acl.read_text()
    b = LockedBroker(files).start()
    clients: list[Client] = []
    procs: list[subprocess.Popen] = []

    def client(user_pw) -> Client:
        c = Client(b, *user_pw, ca=None)
        clients.append(c)
        assert not c.next("connect")[1].is_failure
        return c

    try:
        root, sa, n0, n2 = client(files.gateway), client(files.shards["a"]), client(files.nodes[0]), client(files.nodes[2])
        sa.c.subscribe("cat/1/up/+", qos=1)
        root.c.subscribe("cat/1/partial/+", qos=1)
        assert sa.next("suback") and root.next("suback")
        assert n0.publish("cat/1/up/0", b"to a").getName() == "Success"
        assert n2.publish("cat/1/up/2", b"to b").getName() == "Success"
        assert sa.next("message") == ("message", "cat/1/up/0", b"to a") and sa.next("message", 1.0) is None
        for c, topic in ((n0, "cat/1/partial/a"), (n0, "cat/1/up/2"), (sa, "cat/1/partial/b"), (sa, "cat/1/config"),
                         (sa, "cat/1/up/0"), (root, "cat/1/up/0")):
            assert c.publish(topic, b"forged").value == 0x87, topic
        assert sa.publish("cat/1/partial/a", b"p").getName() == "Success"
        assert root.next("message") == ("message", "cat/1/partial/a", b"p") and root.next("message", 1.0) is None
        assert root.publish("cat/1/config", b"cfg").getName() == "No matching subscribers"   # allowed (not 0x87)
        for c in clients:
            c.close()
        clients = []
        host = f"127.0.0.1:{port}"
        procs.append(e2e.aggregator(layout, "root", "--mqtt", host, "--mqtt-username", files.gateway[0],
                                    "--mqtt-password-file", str(files.gateway_password_file), name="root"))
        for s in ("a", "b"):
            procs.append(e2e.aggregator(layout, "serve", "--shard", s, "--mqtt-username", files.shards[s][0],
                                        "--mqtt-password-file", str(files.out / f"shard-{s}.password"),
                                        "--linger", "1", name=s))
        for state in ("state", "state-a", "state-b"):
            e2e.wait_for(e2e.started(layout, state=state), 30, f"{state} start", procs)
        procs += [subprocess.Popen([e2e.PY, "-m", "edge.cli", "--config", str(layout.node_configs[k]), "--timeout", "60"],
                                   stdout=subprocess.DEVNULL, stderr=open(layout.root / f"edge-{k}.log", "ab"))
                  for k in range(4)]
        for p in procs:
            p.wait(90)
            assert p.returncode == 0, p.args
    finally:
        for c in clients:
            c.close()
        e2e.stop(procs)
        b.stop()
    assert e2e.closed_rounds(layout) == rounds and "not authorised" not in b.log()
    assert all(e["nodes"] == [0, 1, 2, 3] for e in e2e.events(layout) if e.get("event") == "round")


def test_serve_refuses_a_missing_password_file(tmp_path):
    layout = e2e.make_job(tmp_path / "job", nodes=1, rounds=1)
    res = subprocess.run([e2e.PY, "-m", "aggregator.cli", "serve", str(layout.job_path), "--mqtt", "127.0.0.1:1",
                          "--mqtt-username", "u", "--mqtt-password-file", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--mqtt-password-file" in res.stderr


def test_wrong_mqtt_credentials_name_the_brokers_refusal(tmp_path):
    """A wrong password is the broker's refusal (CONNACK "Not authorized"), named at once by
    the gateway and by cat-edge: not a broker that seems not to answer."""
    layout, files, b = locked_broker(tmp_path, nodes=1, tls=False, rounds=1)
    host, port = files.listen
    wrong = tmp_path / "wrong.password"
    wrong.write_text("wrong\n")
    try:
        gw = subprocess.run([e2e.PY, "-m", "aggregator.cli", "serve", str(layout.job_path), "--mqtt", f"{host}:{port}",
                             "--mqtt-username", files.gateway[0], "--mqtt-password-file", str(wrong)],
                            capture_output=True, text=True, timeout=60)
        edge = subprocess.run([e2e.PY, "-m", "edge.cli", "--config", str(layout.node_configs[0]), "--transport",
                               "mqtt", "--host", host, "--port", str(port), "--password", "wrong"],
                              capture_output=True, text=True, timeout=60)
    finally:
        b.stop()
    assert gw.returncode == 2 and gw.stderr.count("\n") == 1, gw.stderr
    assert gw.stderr.startswith(f"cat-aggregator: MQTT broker {host}:{port} refused the gateway's connection: "
                                "Not authorized"), gw.stderr
    assert edge.returncode == 2 and edge.stderr.count("\n") == 1, edge.stderr
    assert edge.stderr.startswith(f"cat-edge: cannot reach the gateway: MQTT broker {host}:{port} refused the "
                                  "connection: Not authorized"), edge.stderr
    assert b.log().count("not authorised") >= 2


# ----------------------------------------------------------------------------- CoAP: frame MACs
def test_coap_endpoint_refuses_forged_tampered_cross_node_and_replayed_frames(tmp_path):
    import aiocoap

    layout = e2e.make_job(tmp_path / "job", nodes=2, rounds=5)
    job = load_job(layout.job_path)
    port = free_udp_port()
    svc = ServiceThread(job, Endpoints(coap=("127.0.0.1", port)))
    svc.start()
    # ServiceThread reports ready once the CoAP front exists, a moment before it is bound.
    e2e.wait_for(lambda: coap_ping("127.0.0.1", port, 0.2), 10, "the CoAP endpoint")
    base = f"coap://127.0.0.1:{port}/cat/{job.job_id}/"

    async def exchange(requests: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        ctx = await aiocoap.Context.create_client_context()
        out = []
        try:
            for what, payload in requests:
                if what == "GET":
                    msg = aiocoap.Message(code=aiocoap.GET, uri=base + payload.decode())
                else:
                    msg = aiocoap.Message(code=aiocoap.POST, uri=base + "up", payload=payload, content_format=60)
                resp = await ctx.request(msg).response
                out.append((str(resp.code), bytes(resp.payload)))
        finally:
            await ctx.shutdown()
        return out

    f0, f1 = update(job, 0, 0), update(job, 1, 0)
    tampered = bytearray(f0)
    tampered[30] ^= 0x01                                   # a bit of the payload
    stranger = update(job, 0, 0, key=os.urandom(32), claim=77)            # a kid the job does not know
    as_node1 = update(job, 0, 0, key=job.node_keys[0], claim=1)           # node 0's key, node 1's id
    try:
        res = asyncio.run(exchange([("POST", bytes(tampered)), ("POST", stranger), ("POST", as_node1),
                                    ("POST", update(job, 0, 1)), ("POST", f0), ("POST", f0), ("POST", f1),
                                    ("POST", f0), ("GET", b"model")]))
        model_after = svc.service.agg.state.model.copy()
        summary = svc.service.agg.summary()
    finally:
        svc.stop()
    codes = [(c.split()[0], p) for c, p in res[:-1]]
    assert codes == [("4.01", b"bad_mac"), ("4.01", b"unknown_kid"), ("4.01", b"bad_mac"),
                     ("4.00", b"future_round"), ("2.04", b"accepted"), ("2.04", b"duplicate"),
                     ("2.04", b"accepted"), ("4.00", b"stale_round")], codes
    # Only the two genuine frames moved the model, once each.
    ref = Aggregator(job)
    for f in (f1, f0):
        ref.submit(f, "ref")
    assert ref.state.round == 1 and ref.state.model.tobytes() == model_after.tobytes()
    assert summary["nodes"][0]["frames"] == 1 and summary["nodes"][0]["duplicates"] == 1
    # The model is readable by anyone who can reach the endpoint (no confidentiality: see
    # docs/deployment.md); what an edge applies must verify under the downlink key.
    code, snap = res[-1]
    assert code.startswith("2.05")
    model = array("f", bytes(4 * job.d))
    assert frame.apply_model(snap, job.downlink_key, model, -1, job.job_id) == 1
    assert np.frombuffer(model, np.float32).tobytes() == model_after.tobytes()
    forged = bytearray(snap)
    forged[-12] ^= 0x01
    with pytest.raises(frame.FrameError):
        frame.apply_model(bytes(forged), job.downlink_key, model, -1, job.job_id)
    with pytest.raises(frame.FrameError):
        frame.apply_model(snap, os.urandom(32), model, -1, job.job_id)
