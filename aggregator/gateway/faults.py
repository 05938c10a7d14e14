"""Fault-injection points: named places where a test may SIGKILL the gateway process.

Why: "a crash loses nothing that was acknowledged" is only believable when the process is
really killed at the dangerous instants (frame received but not journaled, journaled but
not acknowledged, checkpoint half written, checkpoint files mid-rename, a shard's partial
stored but not sent). The code calls `faults.point("name")` at those instants; the tests
start a real `cat-aggregator serve` (or `root`) with the environment variable

    CAT_FAULT=name[:count][,name[:count]...]

and the process sends itself SIGKILL the count-th time (default 1) it passes `name`.
With CAT_FAULT_LOG=FILE it first appends "name count pid" to FILE (fsynced), so a test can
tell which point fired. Unknown names in CAT_FAULT are refused at import, so a typo cannot
turn a fault test into a test of nothing.

When CAT_FAULT is unset (production) `point` is a function that returns at once: the cost
is one Python call per point passed, a few tens of nanoseconds: at most two per frame and
two per journal batch.
"""

from __future__ import annotations

import os
import signal

from aggregator.errors import UserError

#: Every point the code calls, and where it is (docs/deployment.md has the same table).
POINTS: dict[str, str] = {
    "mqtt_received": "mqtt_front: an uplink PUBLISH reached the event loop, before the pipeline",
    "mqtt_before_ack": "mqtt_front: the pipeline handled the frame (journaled, maybe closed a round), before PUBACK",
    "journal_written": "journal.Journal: a batch of accepted frames is written to the round's journal, not yet fsynced",
    "journaled": "journal.Journal: the batch is fsynced, none of its frames acknowledged yet",
    "checkpoint_torn": "state.Store.save: half of checkpoint.tmp written and flushed",
    "checkpoint_rotated": "state.Store.save: checkpoint.bin renamed to checkpoint.prev, the new one not yet in place",
    "checkpoint_saved": "state.Store.save: the new checkpoint is in place, old journals not yet pruned, nothing published",
    "partial_sealed": "shard.Shard: the round's partial is on disk (frames journaled first), not yet published to the root",
    "downlink_received": "shard.Shard: the root's message for a new round arrived, the shard has not advanced yet",
}

ENV = "CAT_FAULT"
ENV_LOG = "CAT_FAULT_LOG"


class FaultSpecError(UserError, ValueError):
    """CAT_FAULT names an unknown point or a bad count."""


def parse(spec: str) -> dict[str, int]:
    """`name[:count],...` -> {name: count}; FaultSpecError for unknown names or bad counts."""
    out: dict[str, int] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, count = part.partition(":")
        if name not in POINTS:
            raise FaultSpecError(f"{ENV}: unknown fault point {name!r} (known: {', '.join(POINTS)})")
        try:
            n = int(count) if count else 1
        except ValueError:
            raise FaultSpecError(f"{ENV}: {part!r}: count must be an integer") from None
        if n < 1:
            raise FaultSpecError(f"{ENV}: {part!r}: count must be >= 1")
        out[name] = n
    return out


_armed: dict[str, int] = parse(os.environ.get(ENV, ""))
ENABLED: bool = bool(_armed)


def _fire(name: str) -> None:
    """Record which point fired, then die the way a power cut or the OOM killer would."""
    log = os.environ.get(ENV_LOG)
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{name} {os.getpid()}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


if ENABLED:
    def point(name: str) -> None:
        """Count a pass through `name`; SIGKILL this process on the armed count."""
        left = _armed.get(name)
        if left is None:
            return
        if left <= 1:
            _fire(name)
        _armed[name] = left - 1
else:
    def point(name: str) -> None:
        """No fault injection configured: nothing to do."""
        return None
