"""Links where the gateway pushes its messages and the edge keeps the latest ones in an Inbox:
MQTT with micropython-lib's umqtt.simple, and serial SLIP (with the board's serial port:
open_serial, PollStream). MicroPython and CPython.

Apart from edge/links.py (CoAP, and what the links share: LinkError, job_path, pause)
so that a CoAP board never loads them. HELLO is the serial link's first message (the gateway's
serial bridge, aggregator/gateway/serial_front.py, answers it; SlipLink sends it).
"""

from edge.cbor import const
from edge.frame import peek
from edge.links import LinkError, job_path, pause

HELLO = b"\xf6"   # CBOR null: a board's "send me config and model" on a serial link
_KIND_CONFIG = const(1)  # edge.frame's message kinds (folded: no dict entries on a board)
_KIND_SNAPSHOT = const(2)
_KIND_DELTA = const(3)


def mqtt_topics(job, node):
    """(uplink topic, downlink topics) of a node in a job (docs/protocol.md): the same for
    UmqttLink and edge.pi.PahoLink."""
    t = job_path(job)
    return "%sup/%d" % (t, node), (t + "config", t + "model", t + "down")


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
        if kind == _KIND_CONFIG:
            self.config = data
        elif kind == _KIND_SNAPSHOT:
            self.snapshot = data
        elif kind == _KIND_DELTA and rnd >= 0:
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
            pause(step)
            waited += step


class UmqttLink:
    """MQTT with micropython-lib's umqtt.simple (QoS 1 uplink, retained config and model)."""

    def __init__(self, client, job, node):
        self.client = client
        self.inbox = Inbox()
        up, down = mqtt_topics(job, node)
        self.up = up.encode()
        client.set_callback(self._on_msg)
        for t in down:
            client.subscribe(t.encode(), 1)

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


class PollStream:
    """A tty opened by path, read without blocking: what a UART with timeout=0 gives.

    The unix port's FileIO.readinto waits until the whole buffer is filled, so this
    reads byte by byte while select.poll says data is waiting (unix port and tests)."""

    def __init__(self, path):
        import select
        self.f = open(path, "r+b")
        self.poll = select.poll()
        self.poll.register(self.f, select.POLLIN)
        self.one = bytearray(1)

    def readinto(self, buf):
        n = 0
        size = len(buf)
        f = self.f
        one = self.one
        while n < size and self.poll.poll(0):
            if not f.readinto(one):
                break
            buf[n] = one[0]
            n += 1
        return n

    def write(self, data):
        n = self.f.write(data)
        try:
            self.f.flush()
        except (AttributeError, OSError):
            pass
        return n


def open_serial(s):
    """machine.UART from {"uart", "baud", "tx", "rx"}, or a PollStream on {"path"}."""
    if "path" in s:
        return PollStream(s["path"])
    import machine
    uart = machine.UART(s.get("uart", 1), s.get("baud", 115200))
    if "tx" in s and "rx" in s:
        uart.init(s.get("baud", 115200), tx=machine.Pin(s["tx"]), rx=machine.Pin(s["rx"]), timeout=0)
    else:
        uart.init(s.get("baud", 115200), timeout=0)
    return uart


def make_push_link(cfg):
    """The link of a node.json whose transport is "mqtt" or "serial" (edge/startup.py makes
    CoAP links itself: a CoAP board never loads this module)."""
    job = cfg["job"]
    if cfg["transport"] == "mqtt":
        from umqtt.simple import MQTTClient
        cid = "cat-%d-%d" % (job, cfg["node"])
        # keepalive 0 by default: umqtt.simple never pings by itself, so a broker would drop a
        # node that waits longer than 1.5 keepalives for the next round
        c = MQTTClient(cid, cfg["host"], cfg.get("port", 1883), cfg.get("username"), cfg.get("password"),
                       keepalive=cfg.get("keepalive", 0))
        c.connect()
        return UmqttLink(c, job, cfg["node"])
    # max_frame must hold the largest downlink message, the snapshot: flash writes 4 d + 256
    return SlipLink(open_serial(cfg["serial"]), cfg.get("max_frame", 4352), cfg.get("rbuf", 64))
