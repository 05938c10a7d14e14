"""The real-peer helpers start, answer, stop cleanly, and the broker restarts on its port.

Why: every transport test builds on these; a helper that leaks processes or
reports "ready" too early makes other tests flaky."""

from __future__ import annotations

import asyncio
import queue
import socket
import subprocess
import time

import aiocoap
import paho.mqtt.client as mqtt
import pytest
from peers import (
    AiocoapServer,
    LibcoapServer,
    MosquittoBroker,
    RecordingResource,
    StaticResource,
    UdpProxy,
    coap_ping,
    free_port,
)

pytestmark = pytest.mark.e2e   # real processes and peers on loopback


def _port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _mqtt_round_trip(host: str, port: int, topic: str, payload: bytes,
                     retain: bool = False, subscribe_first: bool = True) -> bytes:
    """Publish with QoS 1 and receive it back through a subscription (paho-mqtt 2.x)."""
    got: queue.Queue[bytes] = queue.Queue()
    connected: queue.Queue[object] = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{time.monotonic_ns()}")
    c.on_connect = lambda cl, ud, flags, rc, props: connected.put(rc)
    c.on_message = lambda cl, ud, msg: got.put(msg.payload)
    c.connect(host, port, keepalive=10)
    c.loop_start()
    try:
        rc = connected.get(timeout=5)
        assert not rc.is_failure, rc
        if subscribe_first:
            assert c.subscribe(topic, qos=1)[0] == mqtt.MQTT_ERR_SUCCESS
            time.sleep(0.2)  # SUBACK before publishing
        info = c.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5)
        assert info.is_published()
        if not subscribe_first:
            c.subscribe(topic, qos=1)
        return got.get(timeout=5)
    finally:
        c.loop_stop()
        c.disconnect()


def test_free_port_both_is_free_for_tcp_and_udp() -> None:
    port = free_port("both")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        t.bind(("127.0.0.1", port))
        u.bind(("127.0.0.1", port))
    with pytest.raises(ValueError, match="kind must be"):
        free_port("sctp")


def test_mosquitto_pub_sub_round_trip(mosquitto_broker: MosquittoBroker) -> None:
    assert mosquitto_broker.running
    payload = bytes(range(256))
    assert _mqtt_round_trip("127.0.0.1", mosquitto_broker.port, "cat/job/up/n1", payload) == payload


def test_mosquitto_stops_and_restarts_on_same_port(mosquitto_broker: MosquittoBroker) -> None:
    port = mosquitto_broker.port
    mosquitto_broker.stop()
    assert not mosquitto_broker.running
    assert mosquitto_broker.proc.returncode == 0  # clean exit on SIGTERM
    assert not _port_accepts("127.0.0.1", port)
    mosquitto_broker.start()
    assert mosquitto_broker.port == port
    assert _mqtt_round_trip("127.0.0.1", port, "t/after-restart", b"again") == b"again"


def test_mosquitto_kill_and_restart(mosquitto_broker: MosquittoBroker) -> None:
    mosquitto_broker.kill()
    assert not _port_accepts("127.0.0.1", mosquitto_broker.port)
    mosquitto_broker.restart()
    assert _mqtt_round_trip("127.0.0.1", mosquitto_broker.port, "t/k", b"k") == b"k"


def test_mosquitto_persistence_keeps_retained_message_across_restart(mosquitto_factory) -> None:
    broker = mosquitto_factory(persistence=True)
    _mqtt_round_trip("127.0.0.1", broker.port, "cat/j/model", b"snapshot-1", retain=True)
    broker.restart()
    assert (broker.workdir / "mosquitto.db").exists()
    got = _mqtt_round_trip("127.0.0.1", broker.port, "cat/j/config", b"x")
    assert got == b"x"
    # a new subscriber gets the retained model that survived the restart
    q: queue.Queue[bytes] = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.on_message = lambda cl, ud, msg: q.put(msg.payload)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        c.subscribe("cat/j/model", qos=1)
        assert q.get(timeout=5) == b"snapshot-1"
    finally:
        c.loop_stop()
        c.disconnect()


def test_mosquitto_without_persistence_forgets_retained(mosquitto_broker: MosquittoBroker) -> None:
    _mqtt_round_trip("127.0.0.1", mosquitto_broker.port, "r/t", b"v", retain=True)
    mosquitto_broker.restart()
    q: queue.Queue[bytes] = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.on_message = lambda cl, ud, msg: q.put(msg.payload)
    c.connect("127.0.0.1", mosquitto_broker.port)
    c.loop_start()
    try:
        c.subscribe("r/t", qos=1)
        with pytest.raises(queue.Empty):
            q.get(timeout=1.0)
    finally:
        c.loop_stop()
        c.disconnect()


def test_mosquitto_port_in_use_is_reported(tmp_path) -> None:
    # another process listens on the port: start() refuses instead of probing the impostor
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        b = MosquittoBroker(port=s.getsockname()[1], workdir=tmp_path / "m")
        try:
            with pytest.raises(RuntimeError, match="already in use"):
                b.start()
        finally:
            b.close()


def test_mosquitto_exit_is_reported_with_log(tmp_path) -> None:
    b = MosquittoBroker(workdir=tmp_path / "m", extra_conf=["no_such_option 1"])
    try:
        with pytest.raises(RuntimeError, match="(?s)mosquitto exited.*no_such_option"):
            b.start()
    finally:
        b.close()


def test_libcoap_server_answers_and_stops(libcoap_server: LibcoapServer) -> None:
    assert coap_ping("127.0.0.1", libcoap_server.port)
    out = subprocess.run(["coap-client-notls", "-B", "5", "-m", "get",
                          f"coap://127.0.0.1:{libcoap_server.port}/"],
                         capture_output=True, timeout=10)
    assert b"libcoap" in out.stdout
    libcoap_server.stop()
    assert not libcoap_server.running
    assert not coap_ping("127.0.0.1", libcoap_server.port, 0.3)
    libcoap_server.start()
    assert coap_ping("127.0.0.1", libcoap_server.port)


def test_aiocoap_server_serves_caller_resources(aiocoap_server_factory) -> None:
    rec = RecordingResource(reply=b"ok")
    static = StaticResource(b"hello", content_format=60)
    srv = aiocoap_server_factory({"/cat/j/up": rec, "cat/j/model": static})
    assert coap_ping("127.0.0.1", srv.port)

    async def client() -> tuple[aiocoap.Message, aiocoap.Message]:
        ctx = await aiocoap.Context.create_client_context()
        try:
            base = f"coap://127.0.0.1:{srv.port}"
            r1 = await ctx.request(aiocoap.Message(code=aiocoap.POST, uri=base + "/cat/j/up",
                                                   payload=b"frame")).response
            r2 = await ctx.request(aiocoap.Message(code=aiocoap.GET,
                                                   uri=base + "/cat/j/model")).response
            return r1, r2
        finally:
            await ctx.shutdown()

    r1, r2 = asyncio.run(client())
    assert r1.code == aiocoap.CHANGED and r1.payload == b"ok"
    assert r2.code == aiocoap.CONTENT and r2.payload == b"hello"
    assert rec.calls == 1 and rec.bodies == [b"frame"]
    srv.stop()
    assert not coap_ping("127.0.0.1", srv.port, 0.3)


def test_aiocoap_server_bad_bind_is_reported() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        with pytest.raises(RuntimeError, match="failed"):
            AiocoapServer({}, port=s.getsockname()[1]).start()


def test_udp_proxy_drops_and_duplicates(aiocoap_server_factory) -> None:
    srv = aiocoap_server_factory({"/x": StaticResource(b"y")})
    with UdpProxy(srv.port, drop_up={0}, dup_up={1}) as proxy:
        assert not coap_ping("127.0.0.1", proxy.port, 0.3)  # first datagram dropped
        assert coap_ping("127.0.0.1", proxy.port, 1.0)  # second forwarded twice
        time.sleep(0.2)
        ups = [(d, i, c) for d, i, _, c in proxy.log if d == "up"]
        assert ups == [("up", 0, 0), ("up", 1, 2)]
        downs = [e for e in proxy.log if e[0] == "down"]
        assert len(downs) == 2  # both copies of the ping were answered with RST
