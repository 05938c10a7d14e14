"""The running gateway's status: one snapshot for `cat-aggregator status` and for Prometheus.

The pipeline's counters (aggregator.gateway.state.NodeStats, rejections by reason, quarantine)
are exact but live in the event loop's thread and reach disk only at a checkpoint. While the
gateway runs, `LiveStatus` builds a snapshot of them on the loop, adds what the checkpoint
does not keep (the wall-clock time each node was last heard from, the round's pending nodes)
and writes it to `<state>/status.json` at most once per `interval` seconds, at once after a
round closes, and when the gateway stops. The file is replaced atomically (write, rename),
so a reader never sees half of it; its `updated` time lets a reader tell a gateway that stopped
without saying so (killed) from one that is between heartbeats.

"Last seen" comes from the metrics log's events (aggregator.gateway.metrics.MetricsLog calls
`on_event` for each): an accepted or duplicate update, or a refusal of a frame whose MAC
verified. Refusal lines are rate-limited in the log, so under a flood of one node's bad frames
its last-seen time may lag by up to a second; the counters never do.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from aggregator.errors import UserError
from aggregator.gateway.config import Job
from aggregator.gateway.pipeline import Aggregator
from aggregator.gateway.state import NodeStats, State

STATUS_FILE = "status.json"
#: Version of the status file's layout (bumped when a field changes meaning).
STATUS_VERSION = 1
#: A running gateway rewrites the file at least this often (seconds).
HEARTBEAT_S = 1.0
#: Events that show a node is alive (MetricsLog event names with a "node").
SEEN_EVENTS = frozenset({"update", "duplicate", "reject"})


def job_description(job: Job) -> dict[str, Any]:
    """What a reader of the state directory needs to know about the job (no keys)."""
    return {"id": job.job_id, "rounds": job.rounds, "kind": job.model_kind, "features": job.features,
            "classes": job.classes, "d": job.d, "lambda": job.lam, "nodes": job.nodes,
            "quorum": job.quorum_count(), "deadline_s": job.deadline_s, "profile": job.profile_name}


def node_rows(st: State, nodes: list[int], last_seen: dict[int, float]) -> dict[str, dict[str, Any]]:
    """Per node (the job's, and any other the state has counters for): its counters, when it
    was last heard from (None: not since the gateway started) and why it is quarantined."""
    rows = {}
    for nid in sorted(set(nodes) | set(st.nodes)):
        row = (st.nodes.get(nid) or NodeStats()).to_json()
        row.update(last_seen=last_seen.get(nid), quarantined=st.quarantined.get(nid))
        rows[str(nid)] = row
    return rows


class LiveStatus:
    """Snapshots of one Aggregator, taken on its (the event loop's) thread."""

    def __init__(self, agg: Aggregator, directory: Path | None, interval: float = HEARTBEAT_S,
                 wall: Callable[[], float] = time.time) -> None:
        self.agg = agg
        self.path = Path(directory) / STATUS_FILE if directory is not None else None
        self.interval = interval
        self.wall = wall
        self.started = wall()
        self.last_seen: dict[int, float] = {}
        self.metrics_address: tuple[str, int] | None = None
        self._written = 0.0
        self._dirty = True
        self.write_error: str | None = None   # why the last write failed, if it did

    # -- hooks ------------------------------------------------------------------------
    def on_event(self, event: dict[str, Any]) -> None:
        """MetricsLog listener: note when a node was last heard from (not when the gateway
        replays its journal at start: those frames came before)."""
        node = event.get("node")
        if node is not None and event.get("event") in SEEN_EVENTS and not self.agg.replaying:
            self.last_seen[node] = self.wall()

    def on_close(self, closed: Any) -> None:
        """Aggregator listener: a round closed, so the next tick writes the file."""
        self._dirty = True

    def tick(self) -> bool:
        """Write the file if a round closed or the heartbeat is due; True if it wrote."""
        now = self.wall()
        if self.path is None or not (self._dirty or now - self._written >= self.interval):
            return False
        self.write()
        return True

    # -- the snapshot -----------------------------------------------------------------
    def snapshot(self, state: str = "running") -> dict[str, Any]:
        agg = self.agg
        st = agg.state
        job = agg.job
        nodes = node_rows(st, job.nodes, self.last_seen)
        return {
            "version": STATUS_VERSION, "state": state, "pid": os.getpid(),
            "started": self.started, "updated": self.wall(), "heartbeat_s": self.interval,
            "job": job_description(job), "round": st.round, "finished": agg.finished,
            "round_open_s": max(0.0, agg.clock() - agg.opened_at), "pending": sorted(agg.pending),
            "nodes": nodes, "rejected": dict(sorted(st.rejected.items())),
            "quarantined": {str(k): v for k, v in sorted(st.quarantined.items())},
            "metrics": list(self.metrics_address) if self.metrics_address else None,
        }

    def write(self, state: str = "running") -> None:
        """Replace <state>/status.json with a fresh snapshot (atomically)."""
        if self.path is None:
            return
        data = json.dumps(self.snapshot(state), sort_keys=True).encode()
        tmp = self.path.with_name(f"{STATUS_FILE}.{os.getpid()}.tmp")
        self._written = self.wall()
        self._dirty = False
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self.path)
        except OSError as exc:
            # The status file is a view for operators: a full disk or a removed directory must
            # not stop ingest (the journal's own failure does that). Said once per cause.
            why = f"{self.path}: {exc.strerror or exc}"
            if why != self.write_error:
                self.write_error = why
                print(f"cat-aggregator: status file not written: {why}", file=sys.stderr, flush=True)
            return
        self.write_error = None


class StatusFileError(UserError, ValueError):
    """status.json is unreadable or of another layout."""


class NoStatusFileError(StatusFileError):
    """No status.json in the state directory (no gateway has run there since they exist)."""


def read_status(directory: str | Path) -> dict[str, Any]:
    """The last snapshot a gateway wrote into this state directory."""
    path = Path(directory) / STATUS_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise NoStatusFileError(f"{path}: no status file (no gateway has run on this state directory "
                              "since status files were introduced)") from None
    except (OSError, ValueError) as exc:
        raise StatusFileError(f"{path}: unreadable: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != STATUS_VERSION:
        raise StatusFileError(f"{path}: not a version {STATUS_VERSION} status file")
    return doc
