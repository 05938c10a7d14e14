"""Group commit (aggregator/gateway/journal.py): acknowledgements wait for their batch.

* Under an event loop, frames are committed in batches (fewer fsyncs than frames), and no
  acknowledgement runs before its frame is in the journal file; waiting acknowledgements run
  in sequence order; a duplicate waits for its first copy.
* Without a loop every append is on disk when it returns (tools, tests, benchmarks).
* A journal on a full device (/dev/full): nothing is acknowledged, appends fail, and a real
  `cat-aggregator serve` stops with one line and exit code 2 instead of answering 2.04.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import numpy as np
import pytest

from aggregator.gateway.config import load_job
from aggregator.gateway.journal import Journal, JournalError, read_records
from aggregator.gateway.pipeline import ACCEPTED, DUPLICATE, Aggregator
from aggregator.gateway.state import Store
from aggregator.ops.demo import free_udp_port

import e2e
from fleet import CoapBlaster, update_frame


def frames_on_disk(j: Journal, rnd: int) -> list[bytes]:
    return list(read_records(j.path(rnd).read_bytes())) if j.path(rnd).exists() else []


def test_batches_commit_many_frames_per_fsync_and_no_ack_precedes_its_frame_on_disk(tmp_path):
    j = Journal(tmp_path)
    acks: list[tuple[int, int]] = []          # (seq acknowledged, frames on disk at that moment)
    frames = [os.urandom(40 + i % 7) for i in range(500)]

    async def main() -> None:
        j.start(asyncio.get_running_loop(), max_frames=64, max_wait_s=0.002)
        for i, f in enumerate(frames):
            seq = j.append(0, f)
            j.when_durable(seq, lambda s=seq: acks.append((s, len(frames_on_disk(j, 0)))))
            if i % 50 == 49:
                await asyncio.sleep(0)
        while len(acks) < len(frames):
            await asyncio.sleep(0.001)
        j.stop()

    asyncio.run(asyncio.wait_for(main(), 30))
    assert [s for s, _ in acks] == list(range(1, len(frames) + 1))      # in sequence order
    assert all(on_disk >= s for s, on_disk in acks)                      # never before its frame
    assert 1 < j.batches < len(frames) // 4, j.batches                   # grouped
    assert frames_on_disk(j, 0) == frames


def test_without_a_loop_every_append_is_on_disk_when_it_returns(tmp_path):
    j = Journal(tmp_path)
    for i in range(3):
        assert j.append(5, bytes([i]) * 9) == i + 1
        assert j.durable == i + 1 and len(frames_on_disk(j, 5)) == i + 1
    called = []
    j.when_durable(2, lambda: called.append(2))
    j.when_durable(None, lambda: called.append(None))
    assert called == [2, None] and j.batches == 3
    j.append(6, b"next round")                  # a round change commits and opens the next file
    assert frames_on_disk(j, 6) == [b"next round"]


def test_a_duplicate_is_acknowledged_once_its_first_copy_is_on_disk(tmp_path):
    job = load_job(e2e.make_job(tmp_path / "job", nodes=3, rounds=2).job_path)
    rng = np.random.default_rng(0)
    frame = update_frame(job.job_id, 1, job.node_keys[1], 0, job.d, 4, job.scheme, rng)
    seen: list[str] = []

    async def main() -> None:
        agg = Aggregator(job, Store(job.state_dir))
        j = agg.store.journal
        j.start(asyncio.get_running_loop(), max_frames=64, max_wait_s=0.05)
        first = agg.submit(frame, "t")
        dup = agg.submit(frame, "t")
        assert (first.status, dup.status, dup.seq) == (ACCEPTED, DUPLICATE, first.seq)
        agg.when_durable(dup, lambda: seen.append(f"dup on disk={len(frames_on_disk(j, 0))}"))
        assert seen == []                        # the batch waits up to 50 ms
        await asyncio.sleep(0.2)
        j.stop()

    asyncio.run(main())
    assert seen == ["dup on disk=1"]


def test_a_journal_on_a_full_device_acknowledges_nothing(tmp_path):
    (tmp_path / "journal-0.log").symlink_to("/dev/full")
    j = Journal(tmp_path)
    acked = []

    async def main() -> None:
        j.start(asyncio.get_running_loop(), max_frames=1, max_wait_s=0.0)
        j.when_durable(j.append(0, b"frame"), lambda: acked.append(1))
        await asyncio.sleep(0.3)
        assert j.failed is not None
        with pytest.raises(JournalError):
            j.append(0, b"another")
        with pytest.raises(JournalError):
            j.stop()

    asyncio.run(main())
    assert acked == []


def test_serve_stops_with_one_line_when_its_journal_cannot_be_written(tmp_path):
    layout = e2e.make_job(tmp_path / "job", nodes=2, rounds=3)
    job = load_job(layout.job_path)
    port = free_udp_port()
    proc = subprocess.Popen([sys.executable, "-m", "aggregator.cli", "serve", str(layout.job_path),
                             "--coap", f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    frame = update_frame(job.job_id, 0, job.node_keys[0], 0, job.d, 4, job.scheme, np.random.default_rng(1))

    async def post() -> object:
        c = await CoapBlaster("127.0.0.1", port, sockets=1, ack_timeout=0.5, max_retransmit=3).start()
        try:
            return await c.request(__import__("aiocoap").POST, ("cat", str(job.job_id), "up"), frame)
        except TimeoutError as exc:
            return exc
        finally:
            c.close()

    try:
        e2e.wait_for(e2e.started(layout), 30, "gateway start", [proc])
        (job.state_dir / "journal-0.log").symlink_to("/dev/full")     # the disk is full from now on
        got = asyncio.run(post())
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert isinstance(got, TimeoutError), got                           # no 2.04 for an unwritten frame
    assert proc.returncode == 2 and "journal" in err and "No space left" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
