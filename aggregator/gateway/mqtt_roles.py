"""The MQTT clients of a sharded job's processes: a shard's and the root's (docs/scale.md).

Both are the gateway's MqttFront (persistent session, QoS 1, PUBACK after the journal batch
is on disk) with other topics:

* the shard subscribes to its own nodes' uplink topics `cat/<job>/up/<k>` (the broker's ACL
  lets node k publish only there, and only its shard read it) and to the root's downlink
  `cat/<job>/config|model|down`, which moves it on; it publishes its partials on
  `cat/<job>/partial/<shard>` and never publishes downlink messages (the root does);
* the root subscribes to `cat/<job>/partial/+` and publishes config, model and delta as a
  gateway does.

One connection each: with `broker-config`'s `use_username_as_clientid` a second connection
of the same user would take the first one's session over.
"""

from __future__ import annotations

import paho.mqtt.client as mqtt

from aggregator.gateway.mqtt_front import MqttFront
from aggregator.gateway.shard import Shard

DOWNLINK = ("config", "model", "down")
# Topic filters per SUBSCRIBE packet: a shard of thousands of nodes subscribes in chunks.
SUBSCRIBE_CHUNK = 500


class ShardLink(MqttFront):
    """A shard's one MQTT client: its nodes' uplinks and the root's downlink in, partials out."""

    def __init__(self, shard: Shard, *args, **kwargs) -> None:
        kwargs.setdefault("client_id", f"cat-shard-{shard.job.job_id}-{shard.name}")
        super().__init__(shard, *args, **kwargs)
        self.shard = shard
        self.partial_topic = f"{self.prefix}partial/{shard.name}"
        self._downlink = {self.prefix + t for t in DOWNLINK}
        shard.senders.append(self.send_partial)

    def _subscribe(self, client: mqtt.Client) -> None:
        topics = [(f"{self.prefix}up/{k}", 1) for k in self.shard.owned]
        for i in range(0, len(topics), SUBSCRIBE_CHUNK):
            client.subscribe(topics[i:i + SUBSCRIBE_CHUNK])
        client.subscribe([(t, 1) for t in sorted(self._downlink)])

    def _route(self, topic: str, payload: bytes) -> None:
        if topic in self._downlink:
            self.shard.on_downlink(payload)
        else:
            super()._route(topic, payload)

    def send_partial(self, data: bytes) -> None:
        self.client.publish(self.partial_topic, data, qos=1)

    def _publish_state(self) -> None:
        """On (re)connect: the sealed partial again (the root drops a copy it has)."""
        self.shard.publish()

    def _on_close(self, closed) -> None:
        """The shard moved on: nothing to publish (the root published the downlink)."""


class RootFront(MqttFront):
    """The root's MQTT client: partials in, downlink out (MqttFront's)."""

    def __init__(self, root, *args, **kwargs) -> None:
        kwargs.setdefault("client_id", f"cat-root-{root.job.job_id}")
        super().__init__(root, *args, **kwargs)

    def _subscribe(self, client: mqtt.Client) -> None:
        client.subscribe(self.prefix + "partial/+", qos=1)

    def _route(self, topic: str, payload: bytes) -> None:
        name = topic[len(self.prefix) + 8:] if topic.startswith(self.prefix + "partial/") else ""
        if name:
            self.agg.submit(payload, "mqtt", topic_node=name)
        else:
            self.agg.refuse("topic_mismatch", "mqtt", len(payload))
