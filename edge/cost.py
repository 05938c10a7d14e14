"""Communication cost C(T) of sending T entries, from a cost profile (edge/profile.py).

Two families (the paper's §2.2; schema and sources in cost_profiles/README.md):

* paper profiles: the paper's idealised payload P(T) in bits (eq. 5) under the payload
  model C = P, the affine model C = c1 P + c0, or the packet model
  C = c1 ceil(P / Pmax) + c0 (eq. 6). Constants are the paper's.
* link profiles: the *exact* frame length L(T) in bytes from the wire encoder
  (edge.frame.frame_length), plus the transport's per-message overhead, cut into link
  packets (first and following fragment payloads, per-packet overhead, link ACKs), then
  turned into bytes, bits, packets, airtime seconds or joules for the named radio.

Every cost is nondecreasing in T, which CAT relies on (frames only grow with T).

The metric names (LINK_METRICS, PAPER_METRICS) live in edge/profile.py, which a board does
not load: here a metric is whatever LinkCost.metric and paper_cost compute, and the names
are imported only to word the error for one they do not.
"""

from edge.cbor import const, head_len
from edge.frame import frame_length, index_bits

_SCHEME_IDENTITY = const(0)  # edge.cat's scheme numbers (folded: no dict entries on a board)
_SCHEME_SQ = const(2)
_WALK = [None]  # the one edge.onair.Walk LinkCost refills (a board allocates it once)


def _no_metric(text, link):
    """The ValueError for a metric this module does not compute, naming the ones it does."""
    from edge.profile import LINK_METRICS, PAPER_METRICS
    return ValueError("%s (use %s)" % (text, ", ".join(LINK_METRICS if link else PAPER_METRICS)))


def paper_payload_bits(scheme, d, t, fpp_bits):
    """P(T) of eq. (5): S and SS send T (index, float) pairs; S+Q one float and T indices."""
    if scheme == _SCHEME_IDENTITY:
        return d * fpp_bits
    b = index_bits(d)
    if scheme == _SCHEME_SQ:
        return fpp_bits + t * b
    return t * (b + fpp_bits)


def paper_cost(paper, metric, payload_bits):
    """Cost of a payload under the paper's payload / affine / packet model (units: bits by default)."""
    model = paper["model"]
    if model == "payload":
        bits = payload_bits
        packets = 1
    elif model == "affine":
        bits = paper["c1"] * payload_bits + 8.0 * paper["c0"]
        packets = 1
    elif model == "packet":
        pmax = 8.0 * paper["pmax_bytes"]
        packets = int((payload_bits + pmax - 1) // pmax)
        if packets < 1:
            packets = 1
        bits = 8.0 * (paper["c1"] * packets + paper["c0"])
    else:
        raise ValueError("unknown paper model %r" % model)
    if metric == "bits":
        return float(bits)
    if metric == "bytes":
        return bits / 8.0
    if metric == "packets":
        return float(packets)
    raise _no_metric("metric %r is not defined for paper profiles" % metric, False)


class LinkCost:
    """What one message of `frame` bytes costs on a link profile.

    tx_bytes: bytes the node puts on air (payload + every packet's overhead, and its link ACKs
    for reply packets when the profile says message.replies_acked);
    rx_bytes: bytes it must receive (link ACKs, transport ACK packets);
    packets: link packets it transmits; seconds: radio-on time (tx + rx + fixed per-packet
    time: backoff, CCA, turnaround, inter-frame spacing); joules: tx time x tx power +
    (rx + fixed) time x rx power.
    """

    def __init__(self, profile, frame, job=None):
        radio = profile["radio"]
        if profile.get("stack"):
            # walked profile (edge/onair.py): the exchanges, datagrams and frames the client sends
            from edge.onair import walk_up
            w = _WALK[0] = walk_up(profile, frame, job, None, _WALK[0])  # read before the next walk
            self.message_bytes = w.udp_tx
            self.packets = w.frames_tx
            self.tx_bytes = w.tx_bytes
            self.rx_bytes = w.rx_bytes
            self.tx_seconds = w.tx_s
            self.seconds = w.tx_s + w.rx_s + w.idle_s
            self.joules = w.tx_s * radio["tx_power"] + (w.rx_s + w.idle_s) * radio["rx_power"]
            self.listen_seconds = 0.0  # replies are walked frames, not empty windows
            return
        msg = profile["message"]
        pk = profile["packet"]
        self.listen_seconds = 0.0  # receive windows with nothing in them (LoRaWAN class A)
        m = frame + msg["overhead_bytes"]
        first = pk["first_payload_bytes"]
        nxt = pk["next_payload_bytes"]
        if m <= first:
            packets = 1
        else:
            packets = 1 + int((m - first + nxt - 1) // nxt)
        tx = m + pk["first_overhead_bytes"] + (packets - 1) * pk["next_overhead_bytes"]
        rx = packets * pk["ack_bytes"] + msg["extra_packets"] * msg["extra_packet_bytes"]
        lora = profile.get("lora")
        rate = radio["bit_rate"]
        if lora:
            # airtime packet by packet; then the class A RX1/RX2 windows, listened through
            from edge.lora import lora_airtime, rx_windows
            tx_s = lora_airtime(lora, min(m, first))
            rest = m - first
            while rest > 0:
                tx_s += lora_airtime(lora, min(rest, nxt))
                rest -= nxt
            rx_s = 0.0
            for w in rx_windows(lora):
                rx_s += w[2]
            self.listen_seconds = rx_s
        else:
            tx_s = tx * 8.0 / rate
            rx_s = rx * 8.0 / rate
        fixed_s = packets * pk["fixed_seconds"]
        if msg.get("replies_acked"):
            # each reply packet is a link frame like a sent one, roles reversed: the node listens
            # through its contention, preamble and SIFS (fixed_seconds) and transmits its link ACK
            ex = msg["extra_packets"]
            tx += ex * pk["ack_bytes"]
            fixed_s += ex * pk["fixed_seconds"]
            if not lora:
                tx_s = tx * 8.0 / rate
        self.message_bytes = m
        self.packets = packets
        self.tx_bytes = tx
        self.rx_bytes = rx
        self.tx_seconds = tx_s
        self.seconds = tx_s + rx_s + fixed_s
        self.joules = tx_s * radio["tx_power"] + (rx_s + fixed_s) * radio["rx_power"]

    def metric(self, name):
        if name == "bytes":
            return float(self.tx_bytes)
        if name == "bits":
            return 8.0 * self.tx_bytes
        if name == "packets":
            return float(self.packets)
        if name == "seconds":
            return self.seconds
        if name == "joules":
            return self.joules
        raise _no_metric("unknown cost metric %r" % name, True)


def min_interval(profile, frame):
    """Shortest time between messages the duty-cycle limit allows (0 when there is none)."""
    dc = profile.get("limits", {}) or {}
    dc = dc.get("duty_cycle")
    if not dc:
        return 0.0
    lc = LinkCost(profile, frame)
    return lc.tx_seconds / dc


class CostModel:
    """C(T) for one (profile, metric, d, scheme, frame options) — what CAT maximises against.

    cost(T) is the metric for T entries; t_max the largest T whose frame fits the link's
    largest message (d for the paper's models); affine tells CAT whether early stopping
    is valid (only the paper's payload/affine models are affine in T).
    """

    def __init__(self, profile, d, scheme, metric=None, fmt=0, telemetry=False, job=0, node=0, rnd=0,
                 compact=False):
        self.profile = profile
        self.d = d
        self.scheme = scheme
        self.fmt = fmt
        self.telemetry = telemetry
        self.job = job
        self.node = node
        self.rnd = rnd
        self.compact = compact  # kind-4 frames (docs/wire-format.md §3.1.1): no job/node/d/... header
        self.version = 0  # bumps whenever C(T) may have changed (see set_round)
        if metric is None:
            metric = profile["default_metric"]
        self.metric = metric
        self.kind = profile["kind"]
        self.cost(1)  # a metric the profile's kind does not define raises here, not in CAT
        if self.kind == "paper":
            self.affine = profile["paper"]["model"] in ("payload", "affine")
            self.t_max = d
        else:
            self.affine = False
            self.t_max = self._largest_fitting_t()

    def set_round(self, rnd):
        """The round number is in the frame header: its CBOR head (1, 2, 3, 5 or 9 bytes) shifts
        every frame length, so C(T) changes when it crosses 24, 256, 65536, 2**32."""
        grew = head_len(rnd) != head_len(self.rnd)
        self.rnd = rnd
        if grew:
            self.version += 1
            if self.kind != "paper":
                self.t_max = self._largest_fitting_t()  # a longer header fits fewer entries

    def frame_bytes(self, t):
        """Exact bytes of the update frame carrying t entries (the wire encoder's own formula)."""
        return frame_length(self.d, t, self.scheme, self.fmt, self.telemetry, self.job, self.node, self.rnd,
                            self.compact)

    def link(self, t):
        return LinkCost(self.profile, self.frame_bytes(t), self.job)

    def cost(self, t):
        if self.kind == "paper":
            fpp = 8.0 * self.profile["paper"]["fpp_bytes"]
            return paper_cost(self.profile["paper"], self.metric,
                              paper_payload_bits(self.scheme, self.d, t, fpp))
        return LinkCost(self.profile, self.frame_bytes(t), self.job).metric(self.metric)

    def __call__(self, t):
        return self.cost(t)

    def _largest_fitting_t(self):
        limit = self.profile["message"]["max_bytes"]
        d = self.d
        if self.scheme == _SCHEME_IDENTITY:
            return d if self.frame_bytes(d) <= limit else 0
        if self.frame_bytes(1) > limit:
            return 0
        lo = 1
        hi = d
        while lo < hi:  # frame length is nondecreasing in T: bisect the last T that fits
            mid = (lo + hi + 1) >> 1
            if self.frame_bytes(mid) <= limit:
                lo = mid
            else:
                hi = mid - 1
        return lo
