"""The edge loop: take the model, compute the gradient, let CAT choose T, send one frame.

Runs unchanged on MicroPython (boards) and CPython (Raspberry Pi). A transport is any
object with these methods (edge/links.py has the CoAP one, edge/pushlinks.py MQTT and serial):

    get_config()     -> bytes of the latest config message, or None
    get_snapshot()   -> bytes of the model snapshot, or None
    get_delta(base)  -> bytes of the delta base -> base+1, or None when not kept
    send_update(mv)  -> True when the gateway accepted (or already had) the frame
    wait(seconds)    -> block until downlink traffic may have arrived (or time passed)

and optionally (edge.links.CoapLink) the ones that spare a board the message's RAM:

    stream_snapshot(sink)      -> the snapshot block by block into an edge.snapshot.SnapshotSink
    get_config_into(buf)       -> the config written into buf, as a memoryview; None when
                                  there is none, False when it is larger than buf
    get_delta_into(base, buf)  -> the same for a delta (None also when larger than buf)

Every buffer is allocated once: the model and gradient array('f', d) first, when the node
is made (d from the data file; a config with another d replaces them), then candidate
indices and values O(K) and the frame bytearray when the first config tells K and the
scheme. Downlink messages are staged in the gradient buffer, which is idle outside
compute(). With error feedback the gradient buffer holds the residual instead (the
step-scaled gradient is accumulated into it, edge/feedback.py), so it is never idle: configs
and deltas then arrive as messages of their own, and a snapshot streamed through the buffer
restarts the residual from zero (a node that needs one has missed rounds or joined anew).

A board that deep-sleeps between rounds (RAM lost) sets `sleep` to an edge.sleep.SleepState:
the node then takes its saved state back with the first config after a boot, saves model,
residual and the frame after computing it and before it leaves, and marks it acknowledged.
"""

try:
    from time import ticks_ms, ticks_diff

    def _now():
        return ticks_ms() / 1000.0

    def _elapsed(t0):
        return ticks_diff(ticks_ms(), int(t0 * 1000)) / 1000.0
except ImportError:
    from time import perf_counter as _now

    def _elapsed(t0):
        return _now() - t0


from edge import frame, learner
from edge.cat import Rule
from edge.cbor import collect, const, drop, errmsg
from edge.compress import Workspace, XorShift32, capacity, compress
from edge.cost import CostModel
from edge.links import LinkError

_SCHEME_IDENTITY = const(0)  # edge.cat's scheme numbers (folded: no dict entries on a board)
_SCHEME_S = const(1)
_SCHEME_SQ = const(2)
_SCHEME_SS = const(3)
_RULE_CATAVG = const(5)       # edge.cat's rule number


class EdgeError(Exception):
    """A problem the edge cannot train through (wrong job, profile mismatch, bad data)."""


class EdgeNode:
    """One node's state across rounds.

    node: node id (0..65535); key: its 32-byte key; downlink_key: the gateway's key;
    job: job id; data: an edge.datafile.DataFile; profile: the normalised cost profile
    (edge.profile) of this node's link; k_cap: a local RAM cap on K (None = the job's);
    board_cost: None, or {"power_w", "entry_s", "round_j"} of this board (edge/energycost.py):
    with a job metric of joules, CAT then counts the CPU's energy besides the frame's.
    """

    sleep = None    # edge.sleep.SleepState on a board that deep-sleeps (set on the instance then)

    def __init__(self, node, key, downlink_key, job, data, profile, k_cap=None, telemetry=True,
                 board_cost=None):
        self.node = node
        self.key = key
        self.downlink_key = downlink_key
        self.job = job
        self.data = data
        self.profile = profile
        self.local_cap = k_cap
        self.telemetry = telemetry
        self.board_cost = board_cost
        self.cfg = None
        self.model = None
        self.version = -1
        self.last_sent = -1
        self.last = None           # telemetry dict of the last round
        self.snapshots = 0         # times the edge fell back to a full snapshot
        self.deltas = 0
        self.link_errors = 0
        self.frame_round = -1      # round of the frame in self.buf (resent as is on retries)
        self.buf = None
        self.frame_len = 0
        self.record = None         # optional callback(round, frame) for every frame computed
        # The model and the gradient are the largest blocks a board allocates (4 d bytes each,
        # contiguous): allocate them before the rounds' small objects fragment the heap. The
        # size assumes logistic for 2 classes (softmax otherwise); _setup fixes it if needed.
        n = data.d if data.classes == 2 else data.d * data.classes
        # A collection first, here and before the other blocks that must be contiguous (the
        # O(K) buffers, the snapshot's code): the garbage the imports left (the .mpy loader's
        # raw-code records, module-level bytecode) is free then, so the small objects made
        # next fill its holes instead of the room the large blocks need; measured 1-4 KiB
        # less heap for a board's rounds (docs/firmware.md, "What was changed in edge/").
        collect()
        self.model = learner.zeros(n)
        self.grad = learner.zeros(n)
        self.stage = learner.byte_view(self.grad)  # the gradient's bytes (None: not on this port)

    # ------------------------------------------------------------------ set-up
    def _setup(self, cfg):
        if cfg["job"] != self.job:
            raise EdgeError(errmsg(146, (cfg["job"], self.job)))
        if cfg["profile"] != self.profile["name"]:
            raise EdgeError(errmsg(147, (cfg["profile"], self.profile["name"])))
        kind = learner.KINDS[cfg["model"]]
        d = cfg["d"]
        if learner.model_size(self.data.d, cfg["classes"], kind) != d:
            raise EdgeError(errmsg(148, (d, learner.model_size(self.data.d, cfg["classes"], kind))))
        if self.cfg is not None and self.cfg["d"] == d and self.cfg["scheme"] == cfg["scheme"] \
                and self.cfg["k_cap"] == cfg["k_cap"] and self.cfg["fmt"] == cfg["fmt"] \
                and self.cfg["compact"] == cfg["compact"]:
            self.cfg = cfg
            return
        self.cfg = cfg
        self.kind = kind
        self.scheme = cfg["scheme"]
        if len(self.model) != d:
            self.model = None   # let the old arrays go before allocating
            self.grad = None
            self.stage = None
            self.model = learner.zeros(d)
            self.grad = learner.zeros(d)
            self.stage = learner.byte_view(self.grad)
        self.version = -1   # a new job or setting: take a snapshot before computing
        k = cfg["k_cap"]
        if self.local_cap is not None and self.local_cap < k:
            k = self.local_cap
        self.ws = None      # the old buffers go before the new ones are allocated
        self.buf = None
        collect()           # before the O(K) blocks (see __init__)
        if self.scheme == _SCHEME_IDENTITY:
            size = frame.buffer_size(d, d, self.scheme, cfg["fmt"])
        else:
            # only SS may draw more than K entries: S and SQ need no headroom
            extra = None if self.scheme == _SCHEME_SS else 0
            cap = capacity(d, k, extra)
            size = frame.buffer_size(d, cap, self.scheme, cfg["fmt"])
            if cfg["error_feedback"] and self.scheme == _SCHEME_SQ:
                # the frame buffer stages configs and deltas then: room for K values, as a
                # delta of this node's K entries carries (an S+Q frame carries one)
                s_size = frame.buffer_size(d, cap, _SCHEME_S, cfg["fmt"])
                if s_size > size:
                    size = s_size
        self.buf = bytearray(size)  # the frame buffer first: the largest of the O(K) blocks
        if self.scheme != _SCHEME_IDENTITY:
            self.ws = Workspace(d, k, cfg["fmt"], extra)
        self.rule = Rule(cfg["rule"], cfg["rule_param"]) if self.scheme != _SCHEME_IDENTITY else None
        self.cost = CostModel(self.profile, d, self.scheme, cfg["metric"], cfg["fmt"],
                              self.telemetry, self.job, self.node, 0, cfg["compact"])
        if self.board_cost is not None and cfg["metric"] == "joules" and self.profile["kind"] == "link":
            from edge.energycost import from_config  # only energy-aware nodes load it
            self.cost = from_config(self.cost, self.board_cost)
        self.feedback = None
        self.stage = learner.byte_view(self.grad)
        if cfg["error_feedback"] and self.scheme != _SCHEME_IDENTITY:
            from edge.feedback import Feedback  # only such jobs load it
            self.feedback = Feedback(self.grad)   # the residual lives in the gradient array
            self.stage = None                     # ... which is then never idle
        self.rng = XorShift32((cfg["seed"] * 2654435761 + self.node * 40503 + 1) & 0xFFFFFFFF)

    # ------------------------------------------------------------------ model sync
    def sync(self, link, rnd):
        """Bring the local model to version rnd: deltas while they chain, else the snapshot.

        catavg (S, S+Q): the delta that follows this node's last update (base = its round) is
        read against that update, still in ws (edge.catavg.Agreement, allocated after round
        0's snapshot: by the noise prior on several nodes, else by the first such delta); any
        other way to rnd forgets it (the next compute then weighs by the noise prior again)."""
        if self.version < rnd and self.rule is not None and self.rule.agreement is not None:
            self.rule.agreement.forget()
        while self.version < rnd:
            msg = None
            if self.version >= 0:
                into = getattr(link, "get_delta_into", None)
                if into is not None and self.stage is not None:
                    msg = into(self.version, self.stage)  # staged in the idle gradient buffer
                elif into is not None and self.buf is not None:
                    # error feedback: in the frame buffer (a new frame is computed after the
                    # sync); a delta larger than it comes as a message of its own
                    msg = into(self.version, self.buf)
                    if msg is None:
                        msg = link.get_delta(self.version)
                else:
                    msg = link.get_delta(self.version)
            if msg is not None:
                obs = self._observer()
                try:
                    self.version = frame.apply_model(msg, self.downlink_key, self.model, self.version, self.job,
                                                     obs)
                    self.deltas += 1
                    if obs is not None:
                        self.rule.agreement.end()
                    continue
                except frame.FrameError:
                    if obs is not None:
                        self.rule.agreement.forget()   # refused, perhaps half-read
                    # stale or mismatched delta (VersionMismatch is one): take the snapshot
            stream = getattr(link, "stream_snapshot", None)
            if stream is not None:
                # Block by block through the gradient buffer (idle while syncing): a board
                # never holds the 4 d-byte message, let alone the copies of a reassembly.
                collect()       # before the sink's code and buffers (see __init__)
                from edge.snapshot import SnapshotSink  # only a sync by snapshot loads it
                try:
                    v = stream(SnapshotSink(self.downlink_key, self.model, self.grad, self.job))
                finally:
                    if self.feedback is not None:
                        self.feedback.reset()      # the residual's array held the staged model
                    drop("edge.snapshot", "snapshot")  # a board's code for it goes until the next one
                if v is None:
                    return False
            else:
                msg = link.get_snapshot()
                if msg is None:
                    return False
                v = frame.apply_model(msg, self.downlink_key, self.model, -1, self.job)
            self.snapshots += 1
            if v < rnd and v <= self.version:
                return False  # the gateway has not published round rnd's model yet
            self.version = v
        return self.version == rnd

    def _observer(self):
        """catavg: Agreement.seen for the delta that follows this node's own update (in ws,
        or taken back from a sleep state: edge/sleep.py keeps it under the same condition;
        allocated after round 0's snapshot), else None."""
        rule = self.rule
        last = self.last
        if rule is None or rule.kind != _RULE_CATAVG or self.scheme == _SCHEME_SS or last is None \
                or "T" not in last or not last["round"] == self.version == self.last_sent:
            return None
        ag = rule.agree(self.ws.k, self.cfg["d"])
        ag.begin(self.ws.idx, self.ws.vals, last["T"])
        return ag.seen

    # ------------------------------------------------------------------ one round
    def step(self, link):
        """Do this round's work if there is any. Returns 'sent', 'idle', or 'done'."""
        raw = False
        into = getattr(link, "get_config_into", None)
        stage = self.stage
        if stage is None and self.buf is not None and self.last_sent >= self.frame_round:
            stage = self.buf        # error feedback: the frame buffer, while no frame awaits a resend
        if into is not None and stage is not None:
            raw = into(stage)       # staged in an idle buffer
        if raw is False:
            raw = link.get_config()
        if raw is None:
            return "idle"
        cfg = frame.decode_config(raw, self.downlink_key)
        self._setup(cfg)
        if self.sleep is not None and self.sleep.pending:
            self.sleep.restore(self, cfg)   # after a deep sleep: the state the node saved
        rnd = cfg["round"]
        if rnd >= cfg["rounds"]:
            if self.version < rnd:
                self.sync(link, rnd)
            return "done"
        if rnd <= self.last_sent:
            return "idle"
        if self.frame_round != rnd:
            if not self.sync(link, rnd):
                return "idle"
            # Computed once per round: a resend after a link error must not feed the
            # error-feedback residual (or the SS sampler) twice.
            self.frame_len = self.compute(rnd)
            self.frame_round = rnd
            if self.record is not None:
                self.record(rnd, memoryview(self.buf)[:self.frame_len])
            if self.sleep is not None:
                self.sleep.save(self)       # on the filesystem before the frame leaves
        n = self.frame_len
        ok = link.send_update(memoryview(self.buf)[:n])
        if ok:
            self.last_sent = rnd
            if self.sleep is not None:
                self.sleep.acked(self)
        self.last["accepted"] = bool(ok)
        return "sent" if ok else "idle"

    def compute(self, rnd):
        """Gradient at the current model, compression, frame; returns the frame length."""
        cfg = self.cfg
        t0 = _now()
        scale = cfg["step"] / cfg["L"]
        if self.feedback is not None:       # v = e + scale * gradient, in the one array
            loss = learner.loss_and_grad(self.model, self.data, cfg["lam"], self.grad, self.kind, scale)
            scale = 1.0
        else:
            loss = learner.loss_and_grad(self.model, self.data, cfg["lam"], self.grad, self.kind)
        d = cfg["d"]
        self.cost.set_round(rnd)
        g = self.grad
        if self.scheme == _SCHEME_IDENTITY:
            for j in range(d):
                g[j] = g[j] * scale
            t = d
            imp = 1.0
            idx = None
            vals = g
            if cfg["fmt"]:
                from edge.f16 import round_value  # only float16 jobs load it
                for j in range(d):
                    g[j] = round_value(g[j], 1)
        else:
            rule = self.rule
            if rule.kind == _RULE_CATAVG and self.scheme != _SCHEME_SS and rule.param > 1:
                ag = rule.agree(self.ws.k, d)
                if not ag.n:
                    # no delta read yet (round 0, after a snapshot or missed rounds): weights
                    # from the node's own sampling noise, a second pass over its data at the K
                    # candidates (edge/noiseprior.py; a board lets that code go after it). A
                    # node that deep-sleeps keeps its update (edge/sleep.py), so a wake that
                    # reads the delta after it makes no such pass.
                    from edge.noiseprior import compute as prior
                    prior(ag, self.ws.vals, g, self.model, self.data, cfg["lam"], self.kind, rule.param)
                    del prior
            if not self.cost.tabulated(self.ws.cap):
                # C(T) for every T CAT may try, once per cost version. The walk's code and SS's
                # sampler are never in a board's heap at once: compress loads the sampler again,
                # into the holes the walk's code left (docs/firmware.md)
                drop("edge.ss", "ss")
                self.cost.tabulate(self.ws.cap)
            res = compress(self.ws, g, self.scheme, self.rule, self.cost, self.cost.t_max, scale, self.rng)
            if self.feedback is not None:
                self.feedback.store(self.ws, res)
            t = res.n
            imp = res.choice.improvement
            idx = self.ws.idx
            vals = self.ws.vals
        compute_s = _elapsed(t0)
        energy = 0.0
        packets = 1
        if self.profile["kind"] == "link":
            energy = self.cost.joules(t)   # from the table when t is in it
            packets = self.cost.packets(t)
        tel = (loss, imp, compute_s, energy) if self.telemetry else None
        n = frame.encode_update(self.buf, self.key, self.job, self.node, rnd, self.scheme, d, t,
                                idx, vals, cfg["fmt"], tel, cfg["compact"])
        self.last = {"round": rnd, "loss": loss, "T": t, "improvement": imp, "bytes": n,
                     "packets": packets, "energy_j": energy, "compute_s": compute_s}
        return n

    def run(self, link, max_rounds=None, idle_wait=0.05, on_round=None, timeout=None):
        """Loop until the job's last round (or max_rounds sent, or timeout seconds idle)."""
        sent = 0
        idle_since = _now()
        while True:
            try:
                st = self.step(link)
            except LinkError:
                # The gateway or the radio is away (restart, outage): back off and retry.
                self.link_errors += 1
                if timeout is not None and _elapsed(idle_since) > timeout:
                    raise EdgeError("gateway unreachable for %.1f s" % timeout)
                link.wait(idle_wait * 4)
                continue
            if st == "done":
                return sent
            if st == "sent":
                sent += 1
                idle_since = _now()
                if on_round is not None:
                    on_round(self.last)
                if max_rounds is not None and sent >= max_rounds:
                    return sent
            else:
                if timeout is not None and _elapsed(idle_since) > timeout:
                    raise EdgeError("no new round for %.1f s" % timeout)
                link.wait(idle_wait)
