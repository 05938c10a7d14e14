"""Device-side transports for the edge loop (edge/node.py): CoAP, MQTT (umqtt.simple), serial SLIP.

These run on MicroPython and on CPython. The Raspberry Pi variants built on paho-mqtt,
aiocoap and pyserial are in edge/pi.py. Topics and resources: docs/protocol.md.
"""

import time

from edge import cose
from edge.cbor import read_head, read_uint, MT_MAP

class LinkError(Exception):
    """The gateway could not be reached this time (timeout, refused, broker down): retry later."""


HELLO = b"\xf6"   # CBOR null: a board's "send me config and model" on a serial link


def peek(data):
    """(kind, round) of a downlink message without verifying it (routing only; the MAC is
    checked when the message is applied)."""
    kid, off, n = cose.parse(data)
    major, cnt, off = read_head(data, off)
    if major != MT_MAP:
        return -1, -1
    kind = -1
    i = 0
    while i < cnt and i < 5:
        k, off = read_uint(data, off, "key")
        if k > 4:
            break
        v, off = read_uint(data, off, "value")
        if k == 1:
            kind = v
        elif k == 4:
            return kind, v
        i += 1
    return kind, -1


def _sleep(s):
    if s > 0:
        time.sleep(s)


class Inbox:
    """Latest config and snapshot, and the last few deltas by base version."""

    def __init__(self, keep=4):
        self.config = None
        self.snapshot = None
        self.deltas = {}
        self.keep = keep
        self.fresh = False

    def put(self, data):
        try:
            kind, rnd = peek(data)
        except ValueError:
            return
        data = bytes(data)
        if kind == 1:
            self.config = data
        elif kind == 2:
            self.snapshot = data
        elif kind == 3 and rnd >= 0:
            self.deltas[rnd] = data
            if len(self.deltas) > self.keep:
                del self.deltas[min(self.deltas)]
        else:
            return
        self.fresh = True

    def get_delta(self, base):
        return self.deltas.get(base)

    def wait(self, seconds, pump, step=0.01):
        """Call pump() until a message arrives or `seconds` pass (no threads on a board)."""
        self.fresh = False
        waited = 0.0
        while waited < seconds:
            pump()
            if self.fresh:
                return
            _sleep(step)
            waited += step


class CoapLink:
    """CoAP to the gateway with edge.coap.CoapClient (confirmable, Block1/Block2)."""

    def __init__(self, client, job, poll=0.05):
        self.client = client
        self.base = "/cat/%d/" % job
        self.poll = poll
        self.last_code = 0
        self.last_reason = b""

    def _call(self, method, path, payload=None):
        from edge.coap import CoapError
        try:
            if payload is None:
                return method(path)
            return method(path, payload)
        except (CoapError, OSError) as exc:
            raise LinkError("CoAP %s: %s" % (path, exc))

    def _get(self, what):
        code, payload = self._call(self.client.get, self.base + what)
        self.last_code = code
        return payload if code == 0x45 else None   # 2.05 Content

    def get_config(self):
        return self._get("config")

    def get_snapshot(self):
        return self._get("model")

    def get_delta(self, base):
        return self._get("delta?r=%d" % base)

    def stream_snapshot(self, sink):
        """GET the snapshot block by block into sink (edge.frame.SnapshotSink), never holding
        the message whole; returns the snapshot's version, or None when there is none."""
        code, _ = self._call(self.client.get, self.base + "model", sink.feed)
        self.last_code = code
        if code != 0x45:
            return None
        return sink.finish()

    def send_update(self, frame):
        code, payload = self._call(self.client.post, self.base + "up", frame)
        self.last_code = code
        self.last_reason = payload
        return code == 0x44                         # 2.04 Changed

    def wait(self, seconds):
        _sleep(seconds)


class UmqttLink:
    """MQTT with micropython-lib's umqtt.simple (QoS 1 uplink, retained config and model)."""

    def __init__(self, client, job, node):
        self.client = client
        self.inbox = Inbox()
        self.up = ("cat/%d/up/%d" % (job, node)).encode()
        t = ("cat/%d/" % job).encode()
        client.set_callback(self._on_msg)
        client.subscribe(t + b"config", 1)
        client.subscribe(t + b"model", 1)
        client.subscribe(t + b"down", 1)

    def _on_msg(self, topic, msg):
        self.inbox.put(msg)

    def get_config(self):
        self.client.check_msg()
        return self.inbox.config

    def get_snapshot(self):
        return self.inbox.snapshot

    def get_delta(self, base):
        return self.inbox.get_delta(base)

    def send_update(self, frame):
        try:
            self.client.publish(self.up, bytes(frame), False, 1)
        except OSError as exc:
            raise LinkError("MQTT publish: %s" % exc)
        return True

    def wait(self, seconds):
        self.inbox.wait(seconds, self.client.check_msg)


class SlipLink:
    """Serial link: updates go out as SLIP frames; config, snapshot and deltas come in as SLIP
    frames from the gateway's bridge. `stream` has write() and readinto() (machine.UART,
    edge.slip.FdStream, or pyserial)."""

    def __init__(self, stream, max_frame=4096, rbuf_size=256):
        from edge import slip
        self.slip = slip
        self.stream = stream
        self.decoder = slip.SlipDecoder(max_frame)
        self.rbuf = bytearray(rbuf_size)
        self.scratch = None
        self.inbox = Inbox()
        self.said_hello = False

    def _pump(self):
        # Read while reads complete frames; a read with none (or the port's timeout) ends it.
        while self.slip.read_frames(self.stream, self.decoder, self.rbuf, self.inbox.put):
            pass

    def _hello(self):
        if not self.said_hello:
            self.slip.write_frame(self.stream, HELLO)
            self.said_hello = True

    def get_config(self):
        self._hello()
        self._pump()
        return self.inbox.config

    def get_snapshot(self):
        self._pump()
        return self.inbox.snapshot

    def get_delta(self, base):
        return self.inbox.get_delta(base)

    def send_update(self, frame):
        need = self.slip.encoded_len(frame)
        if self.scratch is None or len(self.scratch) < need:
            self.scratch = bytearray(need)
        self.slip.write_frame(self.stream, frame, self.scratch)
        return True

    def wait(self, seconds):
        self.inbox.wait(seconds, self._pump)
