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
not load: here a metric is whatever LinkCost.metric and edge.papercost compute, and the names
are imported only to word the error for one they do not (edge.papercost.no_metric).
"""

from array import array

from edge.cbor import collect, const, drop, head_len
from edge.frame import frame_length

_SCHEME_IDENTITY = const(0)  # edge.cat's scheme numbers (folded: no dict entries on a board)
_WALK = [None]  # the one edge.onair.Walk LinkCost refills (a board allocates it once)


class LinkCost:
    """What one message of `frame` bytes costs on a link profile.

    tx_bytes: bytes the node puts on air (payload + every packet's overhead, and its link ACKs
    for reply packets when the profile says message.replies_acked);
    rx_bytes: bytes it must receive (link ACKs, transport ACK packets);
    packets: link packets it transmits; seconds: radio-on time (tx + rx + fixed per-packet
    time: backoff, CCA, turnaround, inter-frame spacing); joules: tx time x tx power +
    (rx + fixed) time x rx power.
    """

    tx_bytes = packets = seconds = joules = 0  # what metric() reads, for LinkCost(profile, None)

    def __init__(self, profile, frame, job=None):
        if frame is not None:  # None: CostModel checks a metric's name on it, without a walk
            self.price(profile, frame, job)

    def price(self, profile, frame, job=None):
        """Fill the attributes for a message of `frame` bytes. CostModel.tabulate refills one
        LinkCost for every T: on a board its attribute table (96 bytes with the object, grown
        in steps) is then allocated once, not again for every T in the heap the round has
        filled."""
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
        from edge.pktcost import packet_cost  # only profiles priced packet by packet load it
        packet_cost(self, profile, frame)

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
        from edge.papercost import no_metric
        raise no_metric("unknown cost metric %r" % name, True)


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
        self.table = None  # (version, n, C, joules, packets) for T = 1..n (see tabulate)
        if metric is None:
            metric = profile["default_metric"]
        self.metric = metric
        self.kind = profile["kind"]
        # a metric the profile's kind does not define raises here, not in CAT; a link profile's
        # without a walk, so that a board loads the walk's code (edge.onair) only to tabulate
        if self.kind == "paper":
            self.cost(1)
            self.affine = profile["paper"]["model"] in ("payload", "affine")
            self.t_max = d
        else:
            LinkCost(profile, None).metric(metric)
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

    def tabulate(self, n):
        """C(T), and the frame's joules and link packets, for T = 1..min(n, t_max) into arrays,
        once per cost version (a link profile; a paper profile has no walk to spare; a new version
        refills the arrays when they hold n, so that a board allocates none mid-job). cost,
        joules and packets read them from then on, instead of the 2 n walks of every CAT scan;
        then the walk's code (edge.onair) is let go on a board until the next version or config
        needs it (docs/firmware.md, "What was changed in edge/"). The values are the walk's
        own floats, held exactly (array 'd', or 'f' where floats are single precision), so
        CAT chooses the same T as without the table."""
        if self.tabulated(n):
            return
        if n > self.t_max:
            n = self.t_max
        tb = self.table
        self.table = None
        if tb is not None and len(tb[4]) >= n:
            # a new version (round 24, 256, ...: a longer CBOR head, a t_max no larger): the
            # arrays it has are refilled, not made again in a heap the rounds have fragmented
            c, jl, pk = tb[2], tb[3], tb[4]
        else:
            tb = None  # the old arrays go before the new ones
            collect()  # the garbage of the import and the round so far: free room for the arrays
            # the platform's float exactly: 'f' where floats are single precision (a 32-bit
            # board), else 'd'; sized from len(range(n)), no 8 n-byte temporary
            tc = "f" if 1.0 + 2.0 ** -30 == 1.0 else "d"
            jl = array(tc, range(n))
            pk = array("H", range(n))  # a message of max_bytes is far fewer than 65,536 packets
            c = jl if self.metric == "joules" else array(tc, range(n))
        lc = LinkCost(self.profile, None)
        for t in range(1, n + 1):
            lc.price(self.profile, self.frame_bytes(t), self.job)
            jl[t - 1] = lc.joules
            pk[t - 1] = lc.packets
            if c is not jl:
                c[t - 1] = lc.metric(self.metric)
        self.table = (self.version, n, c, jl, pk)
        _WALK[0] = None  # its class holds the module
        drop("edge.onair", "onair")  # a board only; edge.pktcost (small) stays

    def tabulated(self, n):
        """Whether tabulate(n) has nothing to do: the table holds T = 1..min(n, t_max) for this
        cost version (a paper profile has none to build)."""
        if self.kind == "paper":
            return True
        tb = self.table
        return tb is not None and tb[0] == self.version and tb[1] >= (n if n < self.t_max else self.t_max)

    def joules(self, t):
        """The radio joules of the frame carrying t entries (a link profile)."""
        tb = self.table
        if tb is not None and t <= tb[1] and tb[0] == self.version:
            return tb[3][t - 1]
        return self.link(t).joules

    def packets(self, t):
        """The link packets the node transmits for the frame carrying t entries."""
        tb = self.table
        if tb is not None and t <= tb[1] and tb[0] == self.version:
            return tb[4][t - 1]
        return self.link(t).packets

    def cost(self, t):
        tb = self.table
        if tb is not None and t <= tb[1] and tb[0] == self.version:
            return tb[2][t - 1]
        if self.kind == "paper":
            from edge.papercost import paper_cost, paper_payload_bits  # only paper profiles load it
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
