"""The one ingress pipeline every transport feeds: verify, decode, validate, accumulate, close.

Transports (MQTT, CoAP, serial) hand raw bytes to `Aggregator.submit`. A frame is accepted
only if its MAC verifies under a key of its node that is valid now (aggregator.gateway.keys: key
rotation with a grace period), it decodes (aggregator.gateway.wire), and it is an update of this job,
for the current round, with the job's scheme and d, T within the cap, from a node that is
neither quarantined nor rate-limited. Accepted frames are journaled *before* the caller
acknowledges them: `submit` returns an Outcome whose `seq` the transport hands to
`when_durable`, which runs the acknowledgement once the frame's journal batch is fsynced
(group commit, aggregator.gateway.journal); duplicates (QoS 1 redelivery, CoAP
retransmission) are acknowledged like the first copy and applied once; everything else is
counted under a named reason and changes nothing. The round closes at quorum or deadline:
the nodes' updates, taken in node-id order, are combined by the job's rule (the exact mean,
or a robust coordinate-wise rule: aggregator.gateway.robust) and applied to the float32
model exactly as the edges will apply the delta; a coordinate that would leave float32 range
is left unchanged, so no update can make the model (and every later message) non-finite.

`Rounds` is what a gateway shares with a shard (aggregator.gateway.shard, an Aggregator for
some nodes that sends its round to a root instead of closing it) and with the root
(aggregator.gateway.root, which closes rounds from the shards' partials).

Hostile input (docs/security.md). Nothing is attributed to a node before its MAC verifies:
an attacker who only knows a node id cannot get that node counted, rate-limited or
quarantined. A node whose *authenticated* frames keep failing content checks is first
rate-limited, then quarantined until an operator clears it; replayable refusals (stale,
future, duplicate, wrong topic or job) never count against a node, because anyone in radio
range can replay a node's old frames. Operators act through request files in
`<state>/control/` that the running gateway polls (aggregator.gateway.keys, `cat-aggregator
quarantine` / `keys`).
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from aggregator.errors import UserError
from aggregator.gateway import keys as keymod
from aggregator.gateway import robust, wire
from aggregator.gateway.config import Job
from aggregator.gateway.metrics import MetricsLog
from aggregator.gateway.state import DeltaRecord, State, Store
from edge.cat import SCHEME_IDENTITY, SCHEME_SS
from edge.cost import LinkCost

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REJECTED = "rejected"

# Reasons the pipeline adds to aggregator.gateway.wire.REASONS.
PIPELINE_REASONS = ("wrong_job", "topic_mismatch", "stale_round", "future_round", "wrong_scheme",
                    "wrong_d", "wrong_fmt", "t_over_cap", "quarantined", "job_finished", "key_expired",
                    "rate_limited", "value_bound", "internal_error", "sealed")

#: Every reason a rejected frame can be counted under.
ALL_REASONS = tuple(wire.REASONS) + PIPELINE_REASONS

#: Refusals an honest node's frame can get, or that anyone can cause by replaying a node's
#: old frames: they never count towards rate-limiting or quarantine. Every other refusal of
#: an authenticated frame (malformed payload, wrong scheme/d, T over the cap, values out of
#: bound) is a strike against the node.
NO_STRIKE = frozenset({"stale_round", "future_round", "wrong_job", "job_finished", "topic_mismatch",
                       "key_expired", "rate_limited", "quarantined", "internal_error", "sealed"})

# Reject lines in the metrics log: at most this many per second (burst LOG_BURST), so a
# flood of garbage cannot fill the disk; the counters stay exact, and the next line written
# says how many were left out.
LOG_RATE = 50.0
LOG_BURST = 200


class StateMismatchError(UserError, ValueError):
    """The state directory holds another job's state (another id or model dimension)."""


@dataclass
class Outcome:
    status: str
    reason: str | None = None
    node: int | None = None
    round: int | None = None
    closed: "RoundClose | None" = None
    seq: int | None = None  # journal sequence number to be on disk before acknowledging

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
    """Largest T an honest edge can send: K, plus the SS sampler's headroom
    (edge.compress.ss_headroom, what edge.compress.Workspace allocates for an SS draw)."""
    from edge.compress import ss_headroom

    if job.scheme == SCHEME_IDENTITY:
        return job.d
    k = min(job.k_cap, job.d)
    if job.scheme == SCHEME_SS:
        return min(job.d, k + ss_headroom(k))
    return k


class Rounds:
    """What a gateway, a shard and the root share: the model x_r and its round r, the state
    directory (checkpoint + journal), counted refusals, the round close that applies a
    combined update, and the downlink messages. Not thread-safe: use it from one thread.

    Subclasses feed `pending` (whatever one round collects, by node or by shard) through
    `submit` and combine it in `close_round`."""

    def __init__(self, job: Job, store: Store | None = None, log: MetricsLog | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.job = job
        self.store = store
        self.log = log
        self.clock = clock
        self.pending: dict = {}
        self.opened_at = clock()
        self.listeners: list[Callable[[RoundClose], None]] = []
        self.replaying = False
        self.state = self._initial_state()
        self._messages: dict[str, bytes] = {}
        self._log_tokens = float(LOG_BURST)
        self._log_last = clock()
        self._log_suppressed = 0
        self._skip_count = 0                          # replayed frames already in the checkpoint's counters
        self.internal_errors = 0

    # ------------------------------------------------------------------ start-up
    def _initial_state(self) -> State:
        st = self.store.load() if self.store else None
        if st is None:
            return State(job_id=self.job.job_id, round=0, model=np.zeros(self.job.d, dtype=np.float32))
        if st.job_id != self.job.job_id or st.model.shape[0] != self.job.d:
            raise StateMismatchError(f"state in {self.store.dir} belongs to another job "
                                     f"(id {st.job_id}, d {st.model.shape[0]})")
        return st

    def recover(self) -> int:
        """Replay the journals of the open round (frames acknowledged before a crash).

        After a fallback to checkpoint.prev (round r-1) the journal of r-1 closes that round
        again and the journal of r holds acknowledged frames too: replay continues while the
        round advances. A journal for round r+1 proves round r closed (at its deadline) with
        exactly the frames journaled for it, so that close is repeated as well."""
        if not self.store:
            return 0
        n = 0
        jc = self.state.extra.get("journal_counted") or {}
        self._skip_count = int(jc.get("n", 0)) if jc.get("round") == self.state.round else 0
        self.replaying = True
        try:
            while not self.finished:
                rnd = self.state.round
                for frame in list(self.store.replay(rnd)):
                    self.submit(frame, "journal")
                    n += 1
                self._skip_count = 0
                if self.state.round != rnd:
                    continue
                if self._close_on_replay(rnd):
                    continue
                break
        finally:
            self.replaying = False
            self._skip_count = 0
        return n

    def _close_on_replay(self, rnd: int) -> bool:
        """Repeat the close of round rnd that a journal of rnd + 1 proves happened."""
        if self.pending and self.store.journal_path(rnd + 1).exists():
            self.close_round()
            return True
        return False

    @property
    def finished(self) -> bool:
        return self.state.round >= self.job.rounds

    def submit(self, frame: bytes, source: str = "", topic_node: int | str | None = None) -> Outcome:
        raise NotImplementedError

    def close_round(self) -> RoundClose:
        raise NotImplementedError

    def when_durable(self, out: Outcome | None, callback: Callable[[], None]) -> None:
        """Run callback (an acknowledgement) once what `out` depends on is on disk; with
        out=None, once everything journaled so far is (acknowledgements in arrival order)."""
        if self.store is None:
            callback()
            return
        j = self.store.journal
        j.when_durable(j.appended if out is None else out.seq, callback)

    def checkpoint(self) -> None:
        """Checkpoint now (mid-round: a quarantine, a clean stop): the journal's frames already
        counted are noted so that a replay after a crash does not count them twice."""
        if self.store and not self.replaying:
            self.state.extra["journal_counted"] = {"round": self.state.round, "n": len(self.pending)}
            self.store.save(self.state)

    def _event(self, event: dict) -> None:
        if self.log:
            self.log.write(event)

    def _reject(self, reason: str, node: int | None, source: str, size: int) -> Outcome:
        st = self.state
        st.rejected[reason] = st.rejected.get(reason, 0) + 1
        if node is not None and node in self.job.node_keys:
            ns = st.node(node)
            ns.rejected[reason] = ns.rejected.get(reason, 0) + 1
        if self.log:
            now = self.clock()
            self._log_tokens = min(float(LOG_BURST), self._log_tokens + (now - self._log_last) * LOG_RATE)
            self._log_last = now
            if self._log_tokens >= 1.0:
                self._log_tokens -= 1.0
                ev = {"event": "reject", "reason": reason, "node": node, "source": source,
                      "bytes": size, "round": st.round}
                if self._log_suppressed:
                    ev["suppressed"] = self._log_suppressed
                    self._log_suppressed = 0
                self.log.write(ev)
            else:
                self._log_suppressed += 1
        return Outcome(REJECTED, reason, node, st.round)

    def _internal_error(self, exc: Exception, source: str, size: int) -> Outcome:
        """A bug met while checking a message: counted and logged, never raised to a front."""
        self.internal_errors += 1
        self._event({"event": "internal_error", "error": repr(exc)[:300], "source": source})
        return self._reject("internal_error", None, source, size)

    def refuse(self, reason: str, source: str, size: int) -> Outcome:
        """Count a frame that a transport refused before handing it to `submit` (an MQTT topic
        that names no node). Like every refusal before the MAC check it is attributed to no
        node; `reason` must be one of ALL_REASONS."""
        if reason not in ALL_REASONS:
            raise ValueError(f"unknown refusal reason {reason!r}")
        return self._reject(reason, None, source, size)

    # ------------------------------------------------------------------ rounds
    def tick(self) -> RoundClose | None:
        """Close the round at its deadline if anything was collected."""
        if self.pending and self.clock() - self.opened_at >= self.job.deadline_s:
            return self.close_round()
        return None

    def apply_round(self, nodes: list[int], idx: np.ndarray, agg: np.ndarray,
                    losses: list[float]) -> RoundClose:
        """Close the open round with the combined update agg (float64, on idx) of `nodes`:
        x <- float32(x - agg), exactly as the edges will apply the delta; checkpoint; tell
        the listeners. A coordinate that would leave float32 range is left unchanged."""
        st = self.state
        rule = self.job.aggregation.rule
        with np.errstate(over="ignore", invalid="ignore"):
            delta = (-agg).astype(np.float32)
            new = st.model[idx] + delta                # float32 + float32, as on the edges
        bad = ~np.isfinite(new)
        if bad.any():
            # Only validly signed updates get here, but a leaked key or a broken board can
            # still send finite values whose sum leaves float32 range: keep those coordinates.
            delta[bad] = 0.0
            new[bad] = st.model[idx][bad]
            self._event({"event": "non_finite_delta", "round": st.round, "entries": int(bad.sum()),
                         "nodes": nodes})
        if rule != "mean":
            keep = delta != 0                          # robust rules often give exact zeros
            idx, delta, new = idx[keep], delta[keep], new[keep]
        st.model[idx] = new
        rec = DeltaRecord(st.round, idx.astype(np.int64), delta)
        st.history.append(rec)
        del st.history[:-self.job.history]
        closed = RoundClose(st.round, nodes, rec, float(np.mean(losses)) if losses else None)
        st.round += 1
        self.pending = {}
        self.opened_at = self.clock()
        self._messages = {}
        st.extra.pop("journal_counted", None)
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
                "nodes": {k: v.to_json() for k, v in sorted(st.nodes.items())},
                "quarantined": dict(sorted(st.quarantined.items()))}


class Aggregator(Rounds):
    """Round book-keeping of one gateway for one job: frames in, rounds closed here.

    `nodes` limits it to some of the job's nodes (a shard: aggregator.gateway.shard); the
    others' frames are refused as `unknown_kid`."""

    def __init__(self, job: Job, store: Store | None = None, log: MetricsLog | None = None,
                 clock: Callable[[], float] = time.monotonic, nodes: list[int] | None = None) -> None:
        super().__init__(job, store, log, clock)
        self.owned = sorted(nodes) if nodes is not None else job.nodes
        self.quorum = job.quorum_count()
        self.cap = t_cap(job)
        self.pending: dict[int, wire.Update] = {}
        self._seqs: dict[int, int] = {}               # node -> journal seq of its pending frame
        self.sec = job.security
        self.keyring = keymod.Keyring({k: job.node_keys[k] for k in self.owned}, store.dir if store else None)
        for note in self.keyring.load_notes:
            self._event({"event": "keyring", "note": note})
        self._windows: dict[int, deque] = {}          # node -> (time, tag, reason) of recent strikes
        self._buckets: dict[int, list[float]] = {}    # node -> [tokens, last refill] while rate-limited
        self._next_poll = 0.0
        self.sealed = False                           # a shard that sent its partial takes no new nodes
        self.lookahead = 0                            # rounds past the open one whose frames are taken
        self.poll_control(force=True)

    # ------------------------------------------------------------------ ingress
    def _strike(self, reason: str, node: int, tag: bytes, source: str, size: int) -> Outcome:
        """Reject an authenticated frame for its content, and count it against its node."""
        out = self._reject(reason, node, source, size)
        sec = self.sec
        if self.replaying or reason in NO_STRIKE or (not sec.quarantine_after and not sec.rate_limit_after):
            return out
        w = self._window(node)
        if all(t != tag for _, t, _ in w):     # a replayed bad frame counts once
            w.append((self.clock(), tag, reason))
        if sec.quarantine_after and len(w) >= sec.quarantine_after and node not in self.state.quarantined:
            kinds: dict[str, int] = {}
            for _, _, r in w:
                kinds[r] = kinds.get(r, 0) + 1
            why = ", ".join(f"{r} x{c}" for r, c in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
            self.quarantine(node, f"{len(w)} bad frames within {sec.window_s:g} s: {why}")
        return out

    def _window(self, node: int) -> deque:
        """The node's strikes within the last window_s seconds (at most max(thresholds) kept)."""
        w = self._windows.get(node)
        if w is None:
            w = self._windows[node] = deque(maxlen=max(self.sec.quarantine_after, self.sec.rate_limit_after, 1))
        horizon = self.clock() - self.sec.window_s
        while w and w[0][0] < horizon:
            w.popleft()
        return w

    def _rate_limited(self, node: int) -> bool:
        """Token bucket for a node with rate_limit_after or more strikes in the window."""
        sec = self.sec
        if not sec.rate_limit_after or node not in self._windows:
            return False
        if len(self._window(node)) < sec.rate_limit_after:
            self._buckets.pop(node, None)
            if not self._windows[node]:
                del self._windows[node]
            return False
        now = self.clock()
        b = self._buckets.get(node)
        if b is None:
            b = self._buckets[node] = [float(sec.rate_limit_burst), now]
            self._event({"event": "rate_limit", "node": node, "round": self.state.round,
                         "strikes": len(self._windows[node])})
        b[0] = min(float(sec.rate_limit_burst), b[0] + (now - b[1]) * sec.rate_limit_per_s)
        b[1] = now
        if b[0] >= 1.0:
            b[0] -= 1.0
            return False
        return True

    def submit(self, frame: bytes, source: str = "", topic_node: int | None = None) -> Outcome:
        """Run one frame through the pipeline; never raises for bad input."""
        data = bytes(frame)
        try:
            out, up, key = self._admit(data, source, topic_node)
        except Exception as exc:  # a bug must not take the gateway down; counted and logged
            return self._internal_error(exc, source, len(data))
        if up is None:
            return out
        st = self.state
        node = up.node
        if up.round != st.round:                 # only a shard looks one round ahead
            return self._ahead(up, data, source)
        ns = st.node(node)
        if node in self.pending:
            ns.duplicates += 1
            self._event({"event": "duplicate", "node": node, "round": st.round, "source": source})
            # acknowledged like the first copy: once that one is on disk
            return Outcome(DUPLICATE, None, node, st.round, seq=self._seqs.get(node))
        if self.sealed and not self.replaying:
            return self._reject("sealed", node, source, len(data))
        out = Outcome(ACCEPTED, None, node, st.round)
        if self.store and not self.replaying:
            out.seq = self._seqs[node] = self.store.append(st.round, data)
        self.pending[node] = up
        if self._skip_count:
            self._skip_count -= 1          # already in the checkpoint's counters
        else:
            self._count(ns, up, source)
        if len(self.pending) >= self.quorum:
            out.closed = self.close_round()
        return out

    def _ahead(self, up: wire.Update, data: bytes, source: str) -> Outcome:
        """A frame for a later round that passed the checks (lookahead > 0: a shard)."""
        return self._reject("future_round", up.node, source, len(data))

    def _admit(self, data: bytes, source: str, topic_node: int | None
               ) -> tuple[Outcome | None, wire.Update | None, bytes | None]:
        """All checks, in an order that parses nothing unauthenticated beyond the envelope and
        attributes nothing to a node before its MAC verifies. Side effects: counters only."""
        job = self.job
        st = self.state
        size = len(data)
        try:
            _, payload, tag = env = wire.open_envelope(data, job.max_frame_bytes)
        except wire.FrameError as exc:
            return self._reject(exc.reason, None, source, size), None, None
        node = env.node
        if node not in self.keyring.entries:
            return self._reject("unknown_kid", None, source, size), None, None
        # In a compact job every update's MAC also covers the fields a compact update leaves out.
        aad = wire.uplink_aad(job.job_id, node, job.scheme, job.d, job.fmt) if job.compact else b""
        verdict, key = self.keyring.verify(node, payload, tag, st.round, any_kept=self.replaying, aad=aad)
        if verdict == keymod.BAD:
            return self._reject("bad_mac", None, source, size), None, None   # kid not authenticated
        if verdict == keymod.EXPIRED:
            return self._reject("key_expired", node, source, size), None, None
        # -- authenticated as `node` from here on
        if topic_node is not None and topic_node != node:
            return self._reject("topic_mismatch", node, source, size), None, None
        if not self.replaying:
            if node in st.quarantined:
                return self._reject("quarantined", node, source, size), None, None
            if self._rate_limited(node):
                return self._reject("rate_limited", node, source, size), None, None
        try:
            # Envelope and MAC are done: decode the payload once. Job and d are checked as soon
            # as the header is read, before anything is sized from the declared d.
            implied = (job.job_id, job.scheme, job.d, job.fmt) if job.compact else None
            up = wire.decode_update_payload(node, payload, size, expect=(job.job_id, job.d),
                                            implied=implied)
        except wire.FrameError as exc:
            if exc.reason == "wrong_job":   # another job's frame (a key shared across jobs): no strike
                return self._reject("wrong_job", node, source, size), None, None
            return self._strike(exc.reason, node, tag, source, size), None, None
        if self.finished:
            return self._reject("job_finished", node, source, size), None, None
        if up.round < st.round:
            return self._reject("stale_round", node, source, size), None, None
        if up.round > st.round + self.lookahead:
            return self._reject("future_round", node, source, size), None, None
        if up.scheme != job.scheme:
            return self._strike("wrong_scheme", node, tag, source, size), None, None
        if up.d != job.d:
            return self._strike("wrong_d", node, tag, source, size), None, None
        if up.fmt != job.fmt:      # the job fixes the value format; its edges never send another
            return self._strike("wrong_fmt", node, tag, source, size), None, None
        if up.T > self.cap:
            return self._strike("t_over_cap", node, tag, source, size), None, None
        bound = job.aggregation.max_abs
        if bound > 0 and up.values.shape[0] and float(np.max(np.abs(up.values))) > bound:
            return self._strike("value_bound", node, tag, source, size), None, None
        return None, up, key

    # ------------------------------------------------------------------ operator actions
    def quarantine(self, node: int, reason: str, by: str = "gateway") -> None:
        """Refuse every frame of node until an operator clears it; persisted at once."""
        self.state.quarantined[node] = reason
        self._buckets.pop(node, None)
        self._event({"event": "quarantine", "node": node, "reason": reason, "by": by,
                     "round": self.state.round})
        self.checkpoint()

    def clear_quarantine(self, node: int, by: str = "operator") -> bool:
        """Lift a quarantine (and forget the node's strikes); False if it was not quarantined."""
        was = self.state.quarantined.pop(node, None)
        self._windows.pop(node, None)
        self._buckets.pop(node, None)
        if was is None:
            return False
        self._event({"event": "quarantine_clear", "node": node, "was": was, "by": by,
                     "round": self.state.round})
        self.checkpoint()
        return True

    def rotate_key(self, node: int, key: bytes, grace_rounds: int, rid: str = "", by: str = "operator") -> None:
        """New key for node from now on; the old one is accepted for grace_rounds more round closes."""
        if rid and self.keyring.has_rotation(rid):
            return
        rnd = self.state.round
        self.keyring.rotate(node, key, rnd, grace_rounds, rid)
        self.keyring.save()
        self._event({"event": "key_rotated", "node": node, "fingerprint": keymod.fingerprint(key),
                     "round": rnd, "old_key_until_round": rnd + grace_rounds, "by": by})

    def poll_control(self, force: bool = False) -> int:
        """Apply the operator's queued requests (<state>/control/); return how many."""
        if self.store is None:
            return 0
        now = self.clock()
        if not force and now < self._next_poll:
            return 0
        self._next_poll = now + self.sec.control_poll_s
        applied = 0
        for path, req in keymod.pending_requests(self.store.dir):
            if req is None:
                self._event({"event": "control_error", "file": path.name, "error": "not a valid request"})
                os.replace(path, path.with_name(path.name + ".bad"))
                continue
            try:
                self._apply(req)
            except (KeyError, ValueError, TypeError) as exc:
                self._event({"event": "control_error", "file": path.name, "error": str(exc)[:200]})
                os.replace(path, path.with_name(path.name + ".bad"))
                continue
            path.unlink(missing_ok=True)
            applied += 1
        return applied

    def _apply(self, req: dict) -> None:
        node, op, by = req["node"], req["op"], str(req.get("by") or "operator")
        if node not in self.job.node_keys:
            raise KeyError(f"node {node} is not in the job")
        if op == "clear":
            self.clear_quarantine(node, by)
        elif op == "quarantine":
            self.quarantine(node, f"operator: {req.get('reason') or 'no reason given'}", by)
        elif op == "rotate":
            grace = req.get("grace_rounds")
            if type(grace) is not int or grace < 0:
                raise ValueError("grace_rounds must be an int >= 0")
            try:
                key = keymod.parse_key(req["key"])
            except keymod.KeyFormatError as exc:
                raise ValueError(f"key: {exc}") from None
            self.rotate_key(node, key, grace, req["id"], by)

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
                            "loss": tel[0] if tel else None, "improvement": tel[1] if tel else None,
                            "compute_s": tel[2] if tel else None})

    # ------------------------------------------------------------------ rounds
    def tick(self) -> RoundClose | None:
        """Poll the operator's control queue; close the round at its deadline if a node reported."""
        self.poll_control()
        return super().tick()

    def close_round(self) -> RoundClose:
        """Combine the round's updates, taken in node-id order, by the job's rule and apply them."""
        nodes = sorted(self.pending)
        idx, agg = robust.combine(self.job.aggregation.rule, self.job.d,
                                  [(self.pending[n].indices, self.pending[n].values) for n in nodes],
                                  self.job.aggregation.trim)
        losses = [self.pending[n].telemetry[0] for n in nodes if self.pending[n].telemetry]
        self._seqs = {}
        return self.apply_round(nodes, idx, agg, losses)
