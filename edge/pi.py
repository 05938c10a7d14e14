"""Raspberry Pi (CPython) transports for the edge loop: paho-mqtt 2.x, aiocoap, pyserial.

Same interface as edge/links.py and edge/pushlinks.py (get_config, get_snapshot, get_delta,
send_update, wait), built on the libraries a Linux edge has. CPython only; boards use those.
"""

import asyncio
import threading

from edge.links import CoapResources, LinkError, job_path
from edge.pushlinks import Inbox, SlipLink, mqtt_topics


class PahoLink:
    """MQTT through a broker with paho-mqtt 2.x: QoS 1 uplink, retained config/model, deltas on down."""

    def __init__(self, host, port, job, node, username=None, password=None, tls=None, client_id=None,
                 connect_timeout=10.0):
        import paho.mqtt.client as mqtt
        self.mqtt = mqtt
        self.inbox = Inbox()
        self.cond = threading.Condition()
        self.job = job
        self.node = node
        self.up, self.down = mqtt_topics(job, node)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or "cat-edge-%d-%d" % (job, node),
                                  clean_session=False)
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls is not None:
            self.client.tls_set(**tls)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.connected = threading.Event()
        self.connack = threading.Event()   # the broker answered CONNECT (accepted or refused)
        self.refused = None                # its refusal, e.g. "Not authorized"
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self.connack.wait(connect_timeout):
            self.close()
            raise ConnectionError("no MQTT CONNACK from %s:%d within %.0f s" % (host, port, connect_timeout))
        if self.refused is not None:
            self.close()
            raise ConnectionError("MQTT broker %s:%d refused the connection: %s (check username and password)"
                                  % (host, port, self.refused))

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.refused = str(reason_code)
            self.connack.set()
            return
        client.subscribe([(t, 1) for t in self.down])
        self.connected.set()
        self.connack.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected.clear()    # paho's loop reconnects; _on_connect sets it again

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.inbox.put(msg.payload)
            self.cond.notify_all()

    def get_config(self):
        with self.cond:
            return self.inbox.config

    def get_snapshot(self):
        with self.cond:
            return self.inbox.snapshot

    def get_delta(self, base):
        with self.cond:
            return self.inbox.get_delta(base)

    def send_update(self, frame):
        if not self.connected.is_set():
            # paho would queue this QoS 1 message and send it on reconnect, one more copy for
            # every retry of the edge loop while the broker is away: refuse instead.
            raise LinkError("MQTT: not connected to the broker")
        info = self.client.publish(self.up, bytes(frame), qos=1)
        try:
            info.wait_for_publish(timeout=30)
        except (RuntimeError, ValueError) as exc:  # paho: not connected / queue full
            raise LinkError("MQTT publish: %s" % exc)
        if not info.is_published():
            raise LinkError("MQTT publish not acknowledged within 30 s")
        return True

    def wait(self, seconds):
        with self.cond:
            self.inbox.fresh = False
            self.cond.wait_for(lambda: self.inbox.fresh, timeout=seconds)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


class AiocoapLink(CoapResources):
    """CoAP with aiocoap as the client (its own event loop in this thread).

    block_size: Block1/Block2 size (16..1024) asked of aiocoap, which otherwise uses 1,024 B: a
    walked profile prices the client's exchanges at its [stack] block_size.
    token_bytes: the length of every request's token (default 4, the board's edge/coap.py), a
    fresh random one per request as RFC 7252 §5.3.1 asks. aiocoap (0.4.17, tokenmanager.py)
    overwrites any token a request carries with `TokenManager.next_token()`, a counter started
    at random below 65,536 with its leading zero bytes stripped: 2 B mostly, 1 B or 3 B at times.
    The link replaces next_token on the context's token managers, so the datagrams are the
    profile's to the byte ([stack] token_bytes)."""

    def __init__(self, host, port, job, poll=0.05, block_size=None, token_bytes=4):
        import aiocoap
        from aiocoap.tokenmanager import TokenManager
        from edge.coap import szx_for
        if not 1 <= token_bytes <= 8:  # TKL 0..8, RFC 7252 §3
            raise ValueError("token_bytes must be 1..8, got %r" % (token_bytes,))
        self.aiocoap = aiocoap
        self.szx = None if block_size is None else szx_for(block_size)
        self.token_bytes = token_bytes
        self.loop = asyncio.new_event_loop()
        self.ctx = self.loop.run_until_complete(aiocoap.Context.create_client_context())
        tms = [ri for ri in getattr(self.ctx, "request_interfaces", ()) if isinstance(ri, TokenManager)]
        if not tms or not all(hasattr(tm, "next_token") for tm in tms):
            self.close()
            raise LinkError("aiocoap: no TokenManager.next_token to set the %d B token the profile prices"
                            % token_bytes)
        for tm in tms:
            tm.next_token = self._token_maker(tm)
        self.base = "coap://%s:%d/%s" % (host if ":" not in host else "[%s]" % host, port, job_path(job))
        self.poll = poll
        self.last_code = None
        self.last_reason = b""

    def _token_maker(self, tm):
        import os

        def next_token():
            # random, and not the token of a request still waiting for its response
            busy = {k[0] for k in (tm.outgoing_requests or {})}
            while True:
                tok = os.urandom(self.token_bytes)
                if tok not in busy:
                    return tok
        return next_token

    def _request(self, code, path, payload=b""):
        msg = self.aiocoap.Message(code=code, uri=self.base + path, payload=payload)
        if code == self.aiocoap.POST:
            msg.opt.content_format = 60
        if self.szx is not None:
            msg.remote.maximum_block_size_exp = self.szx  # aiocoap's way to set the block size
        try:
            resp = self.loop.run_until_complete(self.ctx.request(msg).response)
        except self.aiocoap.error.Error as exc:
            raise LinkError("CoAP %s: %s" % (path, exc))
        self.last_code = resp.code
        return resp

    def _get(self, path):
        resp = self._request(self.aiocoap.GET, path)
        return bytes(resp.payload) if resp.code == self.aiocoap.CONTENT else None


    def send_update(self, frame):
        resp = self._request(self.aiocoap.POST, "up", bytes(frame))
        self.last_reason = bytes(resp.payload)
        return resp.code == self.aiocoap.CHANGED

    def wait(self, seconds):
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def close(self):
        self.loop.run_until_complete(self.ctx.shutdown())
        self.loop.close()


class SerialLink(SlipLink):
    """A serial line (USB/UART) to the gateway's bridge through pyserial: the board's SLIP link
    (edge/pushlinks.py) over a pyserial port, whose short read timeout plays the UART's role."""

    def __init__(self, port, baud=115200, max_frame=1 << 20):
        import serial
        self.ser = serial.serial_for_url(port, baudrate=baud, timeout=0.01)
        SlipLink.__init__(self, self.ser, max_frame, 4096)

    def close(self):
        self.ser.close()
