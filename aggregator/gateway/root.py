"""The root of a sharded job: closes rounds from the shards' partials (docs/scale.md).

Each shard (aggregator.gateway.shard) verifies, deduplicates and journals its own nodes'
frames and, at its share of the quorum or its deadline, publishes one partial for the round
(aggregator.gateway.partial) on `cat/<job>/partial/<shard>`. The root takes each partial
through the same durability path as a gateway takes a frame (journal with group commit,
MQTT PUBACK after the fsync), and closes the round when the partials hold the job's quorum of
nodes, when every shard has reported, or at the job's deadline with whatever it has. It
combines the partials in a fixed order (shard name; the mean's exact sums make the order
irrelevant anyway, and the robust rules get every node's update in node-id order), applies
the result with the gateway's own code (pipeline.Rounds.apply_round) and publishes config,
model and delta exactly as a gateway does.

Refused partials are counted by reason like refused frames: forged or unknown-shard
(`bad_mac`, `unknown_kid`), replayed from an earlier round (`stale_round`), another job's
(`wrong_job`), naming a node the shard does not own (`foreign_node`), built for another rule
or d (`wrong_rule`, `wrong_d`), or a second, different partial of a shard for a round it
already sent one for (`conflict`). A byte-identical copy (QoS 1 redelivery, a shard
re-publishing after a restart) is a duplicate: acknowledged, applied once.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from aggregator.gateway import partial as partmod
from aggregator.gateway import robust
from aggregator.gateway.config import Job
from aggregator.gateway.metrics import MetricsLog
from aggregator.gateway.pipeline import ACCEPTED, DUPLICATE, Outcome, RoundClose, Rounds
from aggregator.gateway.state import Store
from aggregator.gateway.wire import FrameError

#: Reasons the root adds to those of aggregator.gateway.wire.REASONS.
ROOT_REASONS = ("wrong_job", "topic_mismatch", "stale_round", "future_round", "job_finished",
                "foreign_node", "conflict", "wrong_rule", "wrong_d", "internal_error")


class RootError(ValueError):
    """The job cannot run with a root (it has no shards)."""


class Root(Rounds):
    """Round book-keeping of the root: partials in, rounds closed, downlink out."""

    def __init__(self, job: Job, store: Store | None = None, log: MetricsLog | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not job.shards:
            raise RootError(f"{job.path}: no [shards]: run `cat-aggregator serve` (one gateway) instead")
        super().__init__(job, store, log, clock)
        self.keys = {name: sh.key for name, sh in job.shards.items()}
        self.owner = {n: name for name, sh in job.shards.items() for n in sh.nodes}
        self.pending: dict[str, partmod.Partial] = {}
        self._digests: dict[str, str] = {}
        self._seqs: dict[str, int | None] = {}
        self.quorum = job.quorum_count()
        self.max_bytes = max(partmod.max_bytes(job, len(sh.nodes)) for sh in job.shards.values())

    def submit(self, frame: bytes, source: str = "", topic_node: int | str | None = None) -> Outcome:
        """One partial (from the shard named by the MQTT topic, if given); never raises for bad input."""
        data = bytes(frame)
        try:
            out, p = self._admit(data, source, topic_node)
        except Exception as exc:   # a bug must not take the root down; counted and logged
            return self._internal_error(exc, source, len(data))
        if p is None:
            return out
        st = self.state
        dig = partmod.digest(data)
        if p.shard in self.pending:
            if self._digests[p.shard] != dig:
                return self._reject("conflict", None, source, len(data))
            self._event({"event": "duplicate", "shard": p.shard, "round": st.round, "source": source})
            return Outcome(DUPLICATE, None, None, st.round, seq=self._seqs[p.shard])
        out = Outcome(ACCEPTED, None, None, st.round)
        if self.store and not self.replaying:
            out.seq = self.store.append(st.round, data)
        self._seqs[p.shard] = out.seq
        self.pending[p.shard] = p
        self._digests[p.shard] = dig
        st.extra.setdefault("shards", {})[p.shard] = p.counters
        self._event({"event": "partial", "shard": p.shard, "round": st.round, "nodes": p.nodes,
                     "bytes": len(data), "source": source})
        if self.reported() >= self.quorum or len(self.pending) == len(self.job.shards):
            out.closed = self.close_round()
        return out

    def _admit(self, data: bytes, source: str, topic_shard: int | str | None
               ) -> tuple[Outcome | None, partmod.Partial | None]:
        st = self.state
        size = len(data)
        try:
            p = partmod.decode(data, self.keys, self.max_bytes)
        except FrameError as exc:
            return self._reject(exc.reason, None, source, size), None
        # -- authenticated as shard p.shard from here on
        if topic_shard is not None and topic_shard != p.shard:
            return self._reject("topic_mismatch", None, source, size), None
        if p.job != self.job.job_id:
            return self._reject("wrong_job", None, source, size), None
        if p.d != self.job.d:
            return self._reject("wrong_d", None, source, size), None
        if p.rule != self.job.aggregation.rule:
            return self._reject("wrong_rule", None, source, size), None
        if any(self.owner.get(n) != p.shard for n in p.nodes):
            return self._reject("foreign_node", None, source, size), None
        if self.finished:
            return self._reject("job_finished", None, source, size), None
        if p.round < st.round:
            return self._reject("stale_round", None, source, size), None
        if p.round > st.round:
            return self._reject("future_round", None, source, size), None
        return None, p

    def reported(self) -> int:
        """Nodes in the partials of the open round."""
        return sum(len(p.nodes) for p in self.pending.values())

    def tick(self) -> RoundClose | None:
        """Close the round at the job's deadline with the partials it has."""
        if self.reported() and self.clock() - self.opened_at >= self.job.deadline_s:
            return self.close_round()
        return None

    def close_round(self) -> RoundClose:
        parts = [self.pending[s] for s in sorted(self.pending)]
        nodes = sorted(n for p in parts for n in p.nodes)
        rule = self.job.aggregation.rule
        if rule == "mean":
            idx, agg = robust.mean_of(robust.ExactSum.merge([p.total for p in parts]), len(nodes))
        else:
            ups = sorted((u for p in parts for u in p.updates), key=lambda u: u[0])
            idx, agg = robust.combine(rule, self.job.d, [(i, v) for _, i, v in ups], self.job.aggregation.trim)
        loss = {n: float(x) for p in parts for n, x in zip(p.nodes, p.losses)}
        losses = [loss[n] for n in nodes if not math.isnan(loss[n])]
        rnd = self.state.round
        for n in nodes:
            ns = self.state.node(n)
            ns.frames += 1
            ns.last_round = rnd
        self._digests, self._seqs = {}, {}
        return self.apply_round(nodes, idx, agg, losses)

    def summary(self) -> dict:
        out = super().summary()
        out["shards"] = dict(sorted(self.state.extra.get("shards", {}).items()))
        return out
