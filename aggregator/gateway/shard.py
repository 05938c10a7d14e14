"""A shard: a gateway for the nodes of one site, whose rounds the root closes (docs/scale.md).

Ownership is static: the job file's [shards.<name>] lists the nodes a shard owns, and only
their keys are in its keyring (another shard's node is `unknown_kid` here). For those nodes
a shard does everything a gateway does (pipeline.Aggregator: MAC, decode, validate, dedup,
journal with group commit, counters, quarantine, rate limits), but instead of closing a round
it **seals** it: at its share of the job's quorum (`Job.quorum_count(len(nodes))`) or at
`shard_deadline` x `deadline_s` with at least one frame, it commits the journal, stores the
partial (aggregator.gateway.partial) in its state directory, and publishes it to the root.
After that it refuses new nodes for that round (`sealed`; duplicates are still acknowledged).

The shard follows the root's downlink (config, model, delta on the broker): a delta for its
open round moves its copy of the model on exactly as an edge does (float32 additions) and
opens the next round; a snapshot newer than its round replaces the copy (it was away). Its
CoAP resources and serial bridge then serve config, model and deltas encoded from that copy
with the job's downlink key: byte for byte the root's messages (deterministic CBOR), so
edges cannot tell a shard from a gateway.

MQTT edges read the root's retained config directly and may send the next round's frame
before the root's delta reached their shard. So a shard takes frames **one round ahead**:
journaled (in that round's journal) and acknowledged, counted and used once it advances.

A restart replays the open round's journal (and the next one's); a partial already stored
for the round is published again (the root takes a byte-identical copy as a duplicate), so
a shard never sends two different partials for one round.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np

from aggregator.gateway import faults
from aggregator.gateway import partial as partmod
from aggregator.gateway import robust, wire
from aggregator.gateway.config import Job
from aggregator.gateway.metrics import MetricsLog
from aggregator.gateway.pipeline import ACCEPTED, DUPLICATE, Aggregator, Outcome, RoundClose
from aggregator.gateway.state import DeltaRecord, Store, _fsync_dir


class Shard(Aggregator):
    """Round book-keeping of one shard (see the module doc)."""

    def __init__(self, job: Job, name: str, store: Store | None = None, log: MetricsLog | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = job.shards[name]
        self.name = name
        super().__init__(job, store, log, clock, nodes=self.spec.nodes)
        self.quorum = job.quorum_count(len(self.spec.nodes))
        self.lookahead = 1
        self.deadline_s = job.deadline_s * job.shard_deadline
        self.partial_bytes: bytes | None = None      # the open round's sealed partial
        self.senders: list[Callable[[bytes], None]] = []   # publish a partial (the MQTT link)
        self._next: dict[int, int | None] = {}       # node -> journal seq of its next-round frame
        self._load_sealed()

    # ------------------------------------------------------------------ start-up
    def _partial_path(self, rnd: int):
        return self.store.dir / f"partial-{rnd}.cbor"

    def _load_sealed(self) -> None:
        if self.store is not None and self._partial_path(self.state.round).exists():
            self.partial_bytes = self._partial_path(self.state.round).read_bytes()
            self.sealed = True

    def recover(self) -> int:
        """Replay the open round's journal, then the frames taken for the next round."""
        n = super().recover()
        if self.store is None:
            return n
        self.replaying = True
        try:
            for frame in list(self.store.replay(self.state.round + 1)):
                self.submit(frame, "journal")
                n += 1
        finally:
            self.replaying = False
        return n

    def _close_on_replay(self, rnd: int) -> bool:
        return False          # only the root's downlink moves a shard on

    # ------------------------------------------------------------------ ingress
    def _ahead(self, up: wire.Update, data: bytes, source: str) -> Outcome:
        """A verified frame for the next round: journal it there, count it when the round opens."""
        node = up.node
        if node in self._next:
            self.state.node(node).duplicates += 1
            return Outcome(DUPLICATE, None, node, up.round, seq=self._next[node])
        out = Outcome(ACCEPTED, None, node, up.round)
        if self.store and not self.replaying:
            out.seq = self.store.append(up.round, data)
        self._next[node] = out.seq
        self._event({"event": "ahead", "node": node, "round": up.round, "source": source})
        return out

    # ------------------------------------------------------------------ sealing
    def close_round(self) -> RoundClose | None:
        """At the shard's quorum: seal (the root closes the round)."""
        self.seal()
        return None

    def tick(self) -> RoundClose | None:
        self.poll_control()
        if not self.sealed and self.pending and self.clock() - self.opened_at >= self.deadline_s:
            self.seal()
        return None

    def build_partial(self) -> partmod.Partial:
        """The open round's partial: the exact sum (mean) or every update (robust rules)."""
        nodes = sorted(self.pending)
        rule = self.job.aggregation.rule
        ups = [(self.pending[n].indices, self.pending[n].values) for n in nodes]
        p = partmod.Partial(self.job.job_id, self.name, self.state.round, self.job.d, rule, nodes,
                            losses=np.array([partmod.loss_or_nan(self.pending[n].telemetry) for n in nodes],
                                            dtype=np.float32),
                            counters=partmod.counters_of(self.summary()))
        if rule == "mean":
            p.total = robust.ExactSum.of(ups)
        else:
            p.updates = [(n, i, v) for n, (i, v) in zip(nodes, ups)]
        return p

    def seal(self) -> bytes:
        """Store the round's partial (once) and publish it; no new nodes for this round after."""
        if self.partial_bytes is None:
            data = partmod.encode(self.build_partial(), self.spec.key)
            if self.store is not None:
                self.store.journal.commit()          # every frame in the partial is on disk
                path = self._partial_path(self.state.round)
                tmp = path.with_suffix(".tmp")
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
                _fsync_dir(self.store.dir)
            self.partial_bytes = data
            self._event({"event": "partial", "round": self.state.round, "nodes": sorted(self.pending),
                         "bytes": len(data)})
            faults.point("partial_sealed")
        self.sealed = True
        self.publish()
        return self.partial_bytes

    def publish(self) -> None:
        """(Re)send the sealed partial of the open round, if any, to the root."""
        if self.partial_bytes is not None and not self.replaying:
            for send in self.senders:
                send(self.partial_bytes)

    # ------------------------------------------------------------------ the root's downlink
    def on_downlink(self, data: bytes) -> bool:
        """A config, model or delta message of the root; True if the shard moved on."""
        try:
            msg = wire.decode_downlink(data, self.job.downlink_key, max(self.job.max_frame_bytes,
                                                                        wire.snapshot_frame_length(self.job.d) + 64))
        except wire.FrameError as exc:
            self._event({"event": "downlink_refused", "reason": exc.reason})
            return False
        if msg.job != self.job.job_id:
            return False
        st = self.state
        if isinstance(msg, wire.Delta) and msg.base == st.round and msg.d == self.job.d:
            faults.point("downlink_received")
            self._advance(msg.base + 1, delta=msg)
            return True
        if isinstance(msg, wire.Snapshot) and msg.model.shape[0] == self.job.d:
            if msg.version > st.round:
                faults.point("downlink_received")
                self._advance(msg.version, snapshot=msg.model)
                return True
            if msg.version == st.round and msg.model.tobytes() != st.model.tobytes():
                # a copy that went wrong (it should not): the root's model wins
                self._event({"event": "model_resync", "round": st.round})
                st.model = msg.model.astype(np.float32)
                st.history = []
                self._messages = {}
        return False

    def _advance(self, rnd: int, delta: wire.Delta | None = None, snapshot: np.ndarray | None = None) -> None:
        """The root closed the open round (and maybe more): move the model copy on, open rnd."""
        st = self.state
        old = st.round
        if delta is not None:
            new = st.model[delta.indices] + delta.values     # float32 + float32, as on the edges
            st.model[delta.indices] = new
            st.history.append(DeltaRecord(delta.base, delta.indices.astype(np.int64),
                                          delta.values.astype(np.float32)))
            del st.history[:-self.job.history]
        else:
            st.model = np.asarray(snapshot, dtype=np.float32).copy()
            st.history = []
        if self.pending and not self.sealed:
            # the root closed without this shard's partial (deadline or quorum first)
            self._event({"event": "round_missed", "round": old, "nodes": sorted(self.pending)})
        st.round = rnd
        self.pending, self._seqs, self._next = {}, {}, {}
        self.sealed, self.partial_bytes = False, None
        self.opened_at = self.clock()
        self._messages = {}
        st.extra.pop("journal_counted", None)
        if self.store is not None:
            self.store.close_journal()
            self.store.save(st)
            for p in self.store.dir.glob("partial-*.cbor"):
                p.unlink(missing_ok=True)
        self._event({"event": "advance", "round": rnd, "from": old,
                     "how": "delta" if delta is not None else "snapshot"})
        if self.store is not None:
            # frames journaled for the new round before it opened here: now they count
            self.replaying = True
            try:
                for frame in list(self.store.replay(rnd)):
                    self.submit(frame, "journal")
            finally:
                self.replaying = False
        closed = RoundClose(rnd - 1, [], st.history[-1] if delta is not None else None, None)
        for fn in list(self.listeners):
            fn(closed)
        if len(self.pending) >= self.quorum:
            self.seal()

    def summary(self) -> dict:
        out = super().summary()
        out["shard"] = self.name
        return out
