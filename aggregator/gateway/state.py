"""Durable gateway state: checkpoints (atomic, checksummed) and the per-round journal.

A frame is acknowledged only after it is in the journal of its round and fsynced (group
commit: aggregator.gateway.journal), so a crash loses nothing that was acknowledged: on
restart the gateway loads the newest good checkpoint (model x_r, round r, counters, recent
deltas) and replays the journal of round r through the same pipeline. Checkpoints are written to a temporary file, fsynced, and renamed
over the current one after the current one became `checkpoint.prev`; both carry a SHA-256
so a torn or corrupted file is detected and the previous good one is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from aggregator.errors import UserError
from aggregator.gateway import faults
from aggregator.gateway.journal import Journal

MAGIC = b"CATCKPT1"


@dataclass
class NodeStats:
    """Per-node counters under the job's cost profile."""
    frames: int = 0
    bytes: int = 0
    packets: int = 0
    airtime_s: float = 0.0
    energy_j: float = 0.0
    last_t: int = 0
    last_round: int = -1
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, d: dict) -> "NodeStats":
        return cls(**d)


@dataclass
class DeltaRecord:
    base: int
    indices: np.ndarray   # int64 ascending
    values: np.ndarray    # float32


@dataclass
class State:
    """Everything a restart needs: x_r, r, counters, recent deltas."""
    job_id: int
    round: int
    model: np.ndarray                       # float32
    nodes: dict[int, NodeStats] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    history: list[DeltaRecord] = field(default_factory=list)
    quarantined: dict[int, str] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def node(self, nid: int) -> NodeStats:
        st = self.nodes.get(nid)
        if st is None:
            st = self.nodes[nid] = NodeStats()
        return st


class CheckpointError(UserError):
    """No usable checkpoint (both files missing or corrupt)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode_state(st: State) -> bytes:
    blobs: list[bytes] = [st.model.astype("<f4").tobytes()]
    hist = []
    for rec in st.history:
        hist.append({"base": rec.base, "n": int(rec.indices.shape[0])})
        blobs.append(rec.indices.astype("<i8").tobytes())
        blobs.append(rec.values.astype("<f4").tobytes())
    header = {
        "job_id": st.job_id, "round": st.round, "d": int(st.model.shape[0]),
        "nodes": {str(k): v.to_json() for k, v in sorted(st.nodes.items())},
        "rejected": st.rejected, "history": hist,
        "quarantined": {str(k): v for k, v in st.quarantined.items()}, "extra": st.extra,
    }
    hb = json.dumps(header, sort_keys=True).encode()
    body = MAGIC + struct.pack("<Q", len(hb)) + hb + b"".join(blobs)
    return body + hashlib.sha256(body).digest()


def decode_state(data: bytes) -> State:
    if len(data) < len(MAGIC) + 8 + 32 or not data.startswith(MAGIC):
        raise CheckpointError("not a checkpoint")
    body, digest = data[:-32], data[-32:]
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError("checksum mismatch")
    (hlen,) = struct.unpack_from("<Q", body, len(MAGIC))
    off = len(MAGIC) + 8
    header = json.loads(body[off:off + hlen])
    off += hlen
    d = header["d"]
    model = np.frombuffer(body, dtype="<f4", count=d, offset=off).astype(np.float32)
    off += 4 * d
    history = []
    for h in header["history"]:
        n = h["n"]
        idx = np.frombuffer(body, dtype="<i8", count=n, offset=off).astype(np.int64)
        off += 8 * n
        vals = np.frombuffer(body, dtype="<f4", count=n, offset=off).astype(np.float32)
        off += 4 * n
        history.append(DeltaRecord(h["base"], idx, vals))
    return State(
        job_id=header["job_id"], round=header["round"], model=model,
        nodes={int(k): NodeStats.from_json(v) for k, v in header["nodes"].items()},
        rejected=header["rejected"], history=history,
        quarantined={int(k): v for k, v in header.get("quarantined", {}).items()},
        extra=header.get("extra", {}))


class Store:
    """The state directory: checkpoint, previous checkpoint, and journals of open rounds."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)   # keyring.json lives here: owner only
        self.current = self.dir / "checkpoint.bin"
        self.previous = self.dir / "checkpoint.prev"
        self.journal = Journal(self.dir)
        self.fallbacks = 0  # times a corrupt checkpoint was skipped

    def save(self, st: State) -> None:
        """Checkpoint st; the journal is committed first, so that journal r holds every frame
        acknowledged in round r before a checkpoint of round r + 1 can exist."""
        self.journal.commit()
        data = encode_state(st)
        tmp = self.dir / "checkpoint.tmp"
        with open(tmp, "wb") as fh:
            if faults.ENABLED:                     # a crash with the new checkpoint half written
                fh.write(data[:len(data) // 2])
                fh.flush()
                faults.point("checkpoint_torn")
                data = data[len(data) // 2:]
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if self.current.exists():
            os.replace(self.current, self.previous)
            faults.point("checkpoint_rotated")
        os.replace(tmp, self.current)
        _fsync_dir(self.dir)
        faults.point("checkpoint_saved")
        # The previous checkpoint (round r-1) may still need journal r-1; older ones never.
        keep = st.round - 1
        for p in self.dir.glob("journal-*.log"):
            try:
                r = int(p.stem.split("-")[1])
            except (IndexError, ValueError):
                continue
            if r < keep:
                p.unlink(missing_ok=True)

    def load(self) -> State | None:
        """Newest good checkpoint, or None for a fresh job; corrupt files are skipped."""
        seen = False
        for path in (self.current, self.previous):
            if not path.exists():
                continue
            seen = True
            try:
                return decode_state(path.read_bytes())
            except (CheckpointError, ValueError, KeyError, json.JSONDecodeError):
                self.fallbacks += 1
                continue
        if seen:
            raise CheckpointError(f"{self.dir}: no readable checkpoint (both corrupt)")
        return None

    def journal_path(self, rnd: int) -> Path:
        return self.journal.path(rnd)

    def append(self, rnd: int, frame: bytes) -> int:
        """Record an accepted frame of round rnd; returns the sequence number its
        acknowledgement waits for (`journal.when_durable`; aggregator.gateway.journal)."""
        return self.journal.append(rnd, frame)

    def close_journal(self) -> None:
        """Commit what the journal buffers and close the open round's file."""
        try:
            self.journal.commit()
        finally:
            self.journal.close()

    def replay(self, rnd: int) -> Iterator[bytes]:
        """Frames journaled for round rnd, stopping at a torn tail (a crash mid-append)."""
        return self.journal.replay(rnd)
