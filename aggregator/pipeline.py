"""The one ingress pipeline every transport feeds: verify, decode, validate, accumulate, close.

Transports (MQTT, CoAP, serial) hand raw bytes to `Aggregator.submit`. A frame is accepted
only if its MAC verifies under its node's key, it decodes (aggregator.wire), and it is an
update of this job, for the current round, with the job's scheme and d, T within the cap,
from a node that is not quarantined. Accepted frames are journaled (fsync) *before* the
caller acknowledges them; duplicates (QoS 1 redelivery, CoAP retransmission) are
acknowledged and counted but applied once; everything else is counted under a named reason
and changes nothing. The round closes at quorum or deadline: the averaged update of the
nodes that reported, summed in node-id order (so the result does not depend on arrival
order), is applied to the float32 model exactly as the edges will apply the delta.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from aggregator import wire
from aggregator.config import Job
from aggregator.metrics import MetricsLog
from aggregator.state import DeltaRecord, State, Store
from edge.cat import SCHEME_IDENTITY, SCHEME_SS
from edge.cost import LinkCost

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REJECTED = "rejected"

# Reasons the pipeline adds to aggregator.wire.REASONS.
PIPELINE_REASONS = ("wrong_job", "topic_mismatch", "stale_round", "future_round", "wrong_scheme",
                    "wrong_d", "t_over_cap", "quarantined", "job_finished")


@dataclass
class Outcome:
    status: str
    reason: str | None = None
    node: int | None = None
    round: int | None = None
    closed: "RoundClose | None" = None

    @property
    def ok(self) -> bool:
        """True when the sender should see success (accepted, or an already-applied duplicate)."""
        return self.status in (ACCEPTED, DUPLICATE)


@dataclass
class RoundClose:
    round: int              # the round that closed; the model is now version round + 1
    nodes: list[int]
    delta: DeltaRecord
    loss: float | None      # mean of the nodes' reported local losses (telemetry), if any


def t_cap(job: Job) -> int:
    """Largest T an honest edge can send: K, plus the SS sampler's documented headroom."""
    if job.scheme == SCHEME_IDENTITY:
        return job.d
    k = min(job.k_cap, job.d)
    if job.scheme == SCHEME_SS:
        return min(job.d, k + 8 + 4 * int(k ** 0.5))  # edge.compress.Workspace headroom
    return k


class Aggregator:
    """Round book-keeping for one job. Not thread-safe: call it from one thread (the event loop)."""

    def __init__(self, job: Job, store: Store | None = None, log: MetricsLog | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.job = job
        self.store = store
        self.log = log
        self.clock = clock
        self.cap = t_cap(job)
        self.pending: dict[int, wire.Update] = {}
        self.opened_at = clock()
        self.listeners: list[Callable[[RoundClose], None]] = []
        self.replaying = False
        self.state = self._initial_state()
        self._messages: dict[str, bytes] = {}

    # ------------------------------------------------------------------ start-up
    def _initial_state(self) -> State:
        st = self.store.load() if self.store else None
        if st is None:
            return State(job_id=self.job.job_id, round=0, model=np.zeros(self.job.d, dtype=np.float32))
        if st.job_id != self.job.job_id or st.model.shape[0] != self.job.d:
            raise ValueError(f"state in {self.store.dir} belongs to another job (id {st.job_id}, d {st.model.shape[0]})")
        return st

    def recover(self) -> int:
        """Replay the journal of the open round (frames acknowledged before a crash)."""
        if not self.store:
            return 0
        n = 0
        self.replaying = True
        try:
            for frame in list(self.store.replay(self.state.round)):
                self.submit(frame, "journal")
                n += 1
        finally:
            self.replaying = False
        return n

    @property
    def finished(self) -> bool:
        return self.state.round >= self.job.rounds

    # ------------------------------------------------------------------ ingress
    def _reject(self, reason: str, node: int | None, source: str, size: int) -> Outcome:
        st = self.state
        st.rejected[reason] = st.rejected.get(reason, 0) + 1
        if node is not None and node in self.job.node_keys:
            ns = st.node(node)
            ns.rejected[reason] = ns.rejected.get(reason, 0) + 1
        if self.log:
            self.log.write({"event": "reject", "reason": reason, "node": node, "source": source,
                            "bytes": size, "round": st.round})
        return Outcome(REJECTED, reason, node, st.round)

    def submit(self, frame: bytes, source: str = "", topic_node: int | None = None) -> Outcome:
        """Run one frame through the pipeline; never raises for bad input."""
        job = self.job
        st = self.state
        size = len(frame)
        try:
            up = wire.decode_frame(bytes(frame), job.node_keys, job.max_frame_bytes)
        except wire.FrameError as exc:
            return self._reject(exc.reason, None, source, size)
        node = up.node
        if topic_node is not None and topic_node != node:
            return self._reject("topic_mismatch", node, source, size)
        if node in st.quarantined:
            return self._reject("quarantined", node, source, size)
        if up.job != job.job_id:
            return self._reject("wrong_job", node, source, size)
        if self.finished:
            return self._reject("job_finished", node, source, size)
        if up.round < st.round:
            return self._reject("stale_round", node, source, size)
        if up.round > st.round:
            return self._reject("future_round", node, source, size)
        if up.scheme != job.scheme:
            return self._reject("wrong_scheme", node, source, size)
        if up.d != job.d:
            return self._reject("wrong_d", node, source, size)
        if up.T > self.cap:
            return self._reject("t_over_cap", node, source, size)
        ns = st.node(node)
        if node in self.pending:
            ns.duplicates += 1
            if self.log:
                self.log.write({"event": "duplicate", "node": node, "round": st.round, "source": source})
            return Outcome(DUPLICATE, None, node, st.round)
        if self.store and not self.replaying:
            self.store.append(st.round, bytes(frame))
        self.pending[node] = up
        self._count(ns, up, source)
        out = Outcome(ACCEPTED, None, node, st.round)
        if len(self.pending) >= job.quorum_count():
            out.closed = self.close_round()
        return out

    def _count(self, ns, up: wire.Update, source: str) -> None:
        prof = self.job.profile
        if prof.get("kind") == "link":
            lc = LinkCost(prof, up.wire_bytes)
            packets, airtime, energy = lc.packets, lc.seconds, lc.joules
        else:
            packets, airtime, energy = 1, 0.0, 0.0
            paper = prof.get("paper") or {}
            if paper.get("model") == "packet":
                packets = max(1, math.ceil(up.wire_bytes / paper["pmax_bytes"]))
        ns.frames += 1
        ns.bytes += up.wire_bytes
        ns.packets += packets
        ns.airtime_s += airtime
        ns.energy_j += energy
        ns.last_t = up.T
        ns.last_round = up.round
        if self.log:
            tel = up.telemetry
            self.log.write({"event": "update", "node": up.node, "round": up.round, "T": up.T,
                            "bytes": up.wire_bytes, "packets": packets, "airtime_s": airtime,
                            "energy_j": energy, "source": source,
                            "loss": tel[0] if tel else None, "improvement": tel[1] if tel else None})

    # ------------------------------------------------------------------ rounds
    def tick(self) -> RoundClose | None:
        """Close the round at its deadline if at least one node reported."""
        if self.pending and self.clock() - self.opened_at >= self.job.deadline_s:
            return self.close_round()
        return None

    def close_round(self) -> RoundClose:
        st = self.state
        d = self.job.d
        nodes = sorted(self.pending)
        acc = np.zeros(d, dtype=np.float64)
        touched = np.zeros(d, dtype=bool)
        for nid in nodes:
            up = self.pending[nid]
            acc[up.indices] += up.values.astype(np.float64)
            touched[up.indices] = True
        idx = np.flatnonzero(touched)
        delta = (-acc[idx] / len(nodes)).astype(np.float32)
        st.model[idx] = st.model[idx] + delta          # float32 + float32, as on the edges
        rec = DeltaRecord(st.round, idx.astype(np.int64), delta)
        st.history.append(rec)
        del st.history[:-self.job.history]
        losses = [u.telemetry[0] for u in self.pending.values() if u.telemetry]
        closed = RoundClose(st.round, nodes, rec, float(np.mean(losses)) if losses else None)
        st.round += 1
        self.pending = {}
        self.opened_at = self.clock()
        self._messages = {}
        if self.store:
            self.store.close_journal()
            self.store.save(st)
        if self.log:
            self.log.write({"event": "round", "round": closed.round, "nodes": nodes,
                            "delta_entries": int(idx.shape[0]), "loss": closed.loss})
        for fn in list(self.listeners):
            fn(closed)
        return closed

    # ------------------------------------------------------------------ egress
    def config_message(self) -> bytes:
        m = self._messages.get("config")
        if m is None:
            m = self._messages["config"] = wire.encode_config(
                self.job.job_id, self.state.round, self.job.wire_config(), self.job.downlink_key)
        return m

    def snapshot_message(self) -> bytes:
        m = self._messages.get("snapshot")
        if m is None:
            m = self._messages["snapshot"] = wire.encode_snapshot(
                self.job.job_id, self.state.round, self.state.model, self.job.downlink_key)
        return m

    def delta_message(self, base: int) -> bytes | None:
        """Delta base -> base + 1 if still kept, else None (the edge loads the snapshot)."""
        key = f"delta-{base}"
        m = self._messages.get(key)
        if m is None:
            rec = next((h for h in self.state.history if h.base == base), None)
            if rec is None:
                return None
            m = self._messages[key] = wire.encode_delta(
                self.job.job_id, rec.base, rec.indices, rec.values, self.job.downlink_key, d=self.job.d)
        return m

    def summary(self) -> dict:
        st = self.state
        return {"round": st.round, "rejected": dict(st.rejected),
                "nodes": {k: v.to_json() for k, v in sorted(st.nodes.items())}}
