"""MQTT ingress/egress with paho-mqtt 2.x: cat/<job>/up/<node> in, config/model/down out.

The gateway subscribes with QoS 1 on a persistent session and acknowledges a PUBLISH only
after the pipeline has journaled it and the journal batch is fsynced (paho's manual_ack;
PUBACKs in PUBLISH order), so a crash between receipt and fsync makes the broker redeliver;
redelivered duplicates are idempotent per (node, round). paho runs its network loop in its
own thread; frames are handed to the asyncio loop. A shard and the root use this class with
other topics (aggregator.gateway.mqtt_roles).
"""

from __future__ import annotations

import asyncio
import threading

import paho.mqtt.client as mqtt

from aggregator.errors import UserError
from aggregator.gateway import faults
from aggregator.gateway.pipeline import Rounds


class BrokerError(UserError, ConnectionError):
    """The MQTT broker did not accept the gateway's connection in time (down, wrong address,
    refused credentials or TLS)."""


def topic_node(topic: str, prefix: str) -> int | None:
    """The node of an uplink topic `<prefix>up/<node>`, or None when the topic is not one.

    Only the canonical spelling names a node: ASCII decimal without leading zeros, 0..65535,
    as `cat-edge`, the boards and `broker-config`'s ACL write it (`up/2`, never `up/02`)."""
    if not topic.startswith(prefix + "up/"):
        return None
    tail = topic[len(prefix) + 3:]
    if not tail or not tail.isascii() or not tail.isdigit() or (tail[0] == "0" and tail != "0"):
        return None
    node = int(tail)
    return node if node <= 0xFFFF else None


class MqttFront:
    def __init__(self, agg: Rounds, host: str, port: int, loop: asyncio.AbstractEventLoop,
                 username: str | None = None, password: str | None = None, tls: dict | None = None,
                 client_id: str | None = None) -> None:
        self.agg = agg
        self.loop = loop
        self.host = host
        self.port = port
        self.job = agg.job.job_id
        self.prefix = f"cat/{self.job}/"
        self.connected = threading.Event()
        self.connack = threading.Event()      # the broker answered CONNECT (accepted or refused)
        self.refused: str | None = None       # its refusal, e.g. "Not authorized"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"cat-aggregator-{self.job}",
                                  clean_session=False, manual_ack=True)
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(**tls)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 5)
        agg.listeners.append(self._on_close)

    def start(self, timeout: float = 10.0) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self.connack.wait(timeout):
            raise BrokerError(f"no CONNACK from MQTT broker {self.host}:{self.port} within {timeout:.0f} s")
        if self.refused is not None:
            self.stop()
            raise BrokerError(f"MQTT broker {self.host}:{self.port} refused the gateway's connection: "
                              f"{self.refused} (check --mqtt-username / --mqtt-password-file)")
        if not self.connected.wait(timeout):
            raise BrokerError(f"MQTT broker {self.host}:{self.port} did not confirm the subscription to "
                              f"{self.prefix}up/+ within {timeout:.0f} s")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    # paho thread ---------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.refused = str(reason_code)
            self.connack.set()
            return
        self._subscribe(client)
        self.loop.call_soon_threadsafe(self._publish_state)
        self.connack.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        # Ready only once the broker holds the subscription: a frame an edge publishes after
        # start() returned is then delivered (or kept in the persistent session), never dropped.
        self.connected.set()

    def _subscribe(self, client: mqtt.Client) -> None:
        client.subscribe(self.prefix + "up/+", qos=1)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        self.loop.call_soon_threadsafe(self._handle, msg.topic, bytes(msg.payload), msg.mid, msg.qos)

    # event loop ----------------------------------------------------------------
    def _handle(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        faults.point("mqtt_received")
        try:
            self._route(topic, payload)
        finally:
            # only once the frame is on disk (or rejected), and behind every frame before it
            self.agg.when_durable(None, lambda: self._ack(mid, qos))

    def _route(self, topic: str, payload: bytes) -> None:
        """An uplink frame: cat/<job>/up/<node>, <node> the frame's kid (topic_node)."""
        node = topic_node(topic, self.prefix)
        if node is None:
            self.agg.refuse("topic_mismatch", "mqtt", len(payload))
        else:
            self.agg.submit(payload, "mqtt", topic_node=node)

    def _ack(self, mid: int, qos: int) -> None:
        faults.point("mqtt_before_ack")
        if qos > 0:
            self.client.ack(mid, qos)

    def _publish_state(self) -> None:
        # The config is the edges' "go" signal (docs/protocol.md): the model goes out first, so
        # an edge that sees round r+1 in the config finds the snapshot of version r+1 retained.
        self.client.publish(self.prefix + "model", self.agg.snapshot_message(), qos=1, retain=True)
        self.client.publish(self.prefix + "config", self.agg.config_message(), qos=1, retain=True)

    def _on_close(self, closed) -> None:
        delta = self.agg.delta_message(closed.round)
        if delta is not None:
            self.client.publish(self.prefix + "down", delta, qos=1)
        self._publish_state()
