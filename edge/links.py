"""Device-side transports for the edge loop (edge/node.py): CoAP here; MQTT (umqtt.simple)
and serial SLIP in edge/pushlinks.py, loaded only by the boards that use them. Here too what
the links share: LinkError, job_path, pause.

These run on MicroPython and on CPython. The Raspberry Pi variants built on paho-mqtt,
aiocoap and pyserial are in edge/pi.py. Topics and resources: docs/protocol.md.
"""

import time


class LinkError(Exception):
    """The gateway could not be reached this time (timeout, refused, broker down): retry later."""


def job_path(job):
    """'cat/<job>/': how a job's CoAP resources and MQTT topics begin (docs/protocol.md)."""
    return "cat/%d/" % job


def pause(s):
    """time.sleep(s) that takes s <= 0 as no wait."""
    if s > 0:
        time.sleep(s)


class _TooLarge(Exception):
    """A message larger than the caller's buffer (ends the Block2 transfer)."""


class CoapResources:
    """The gateway's CoAP resources (docs/protocol.md), for any client with _get(relative path)."""

    def get_config(self):
        return self._get("config")

    def get_snapshot(self):
        return self._get("model")

    def get_delta(self, base):
        return self._get("delta?r=%d" % base)


class CoapLink(CoapResources):
    """CoAP to the gateway with edge.coap.CoapClient (confirmable, Block1/Block2).

    get_config_into / get_delta_into / stream_snapshot write a message into the caller's
    buffer as its blocks arrive: a board never reassembles one in a growing bytearray."""

    def __init__(self, client, job, poll=0.05):
        self.client = client
        self.base = "/" + job_path(job)
        self.poll = poll
        self.last_code = 0
        self.last_reason = b""
        self._into = None
        self._n = 0

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

    def _put(self, piece):
        n = self._n
        m = n + len(piece)
        if m > len(self._into):
            raise _TooLarge()
        self._into[n:m] = piece
        self._n = m

    def _fetch(self, what, buf):
        # the body of a 2.05 written into buf: memoryview(buf)[:n]; None for another code,
        # False when the body does not fit buf
        self._into = buf
        self._n = 0
        try:
            code, _ = self._call(self.client.get, self.base + what, self._put)
        except _TooLarge:
            return False
        finally:
            self._into = None
        self.last_code = code
        if code != 0x45:
            return None
        return memoryview(buf)[:self._n]

    def get_config_into(self, buf):
        """The config written into buf (memoryview, valid until buf changes); None when
        there is none, False when it is larger than buf."""
        return self._fetch("config", buf)

    def get_delta_into(self, base, buf):
        """The delta base -> base+1 written into buf, or None (not kept, or larger than buf:
        the caller takes the snapshot)."""
        r = self._fetch("delta?r=%d" % base, buf)
        return None if r is False else r

    def stream_snapshot(self, sink):
        """GET the snapshot block by block into sink (edge.snapshot.SnapshotSink), never holding
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
        pause(seconds)

