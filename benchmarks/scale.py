"""Scale benchmark: durable ingest with group commit, and CoAP ingest with shards.

    python benchmarks/scale.py [--frames 4000] [--repeat 5] [--coap-nodes 1200] [--coap-rounds 4]

1. Ingest through the pipeline (verify, decode, validate, accumulate, close; S+Q, T = 100,
   d = 47,236), in one process, as an event loop that takes frames and acknowledges each
   when the pipeline allows: in memory (no journal), durable with group commit (the journal
   fsyncs once per batch off the loop; each acknowledgement waits for its batch), and the
   old journal for reference (an fsync per frame before its acknowledgement).
2. CoAP ingest of real update frames (S+Q, d = 30, T <= 8: an 802.15.4 board's) from a fast
   client (tests/fleet.py: many confirmable requests in flight over a few UDP sockets)
   through one `cat-aggregator serve` process, then through 2 `serve --shard` processes on
   their own ports plus `cat-aggregator root` and Mosquitto; the nodes are split over the
   shards; every round waits for the next round's config at each endpoint.

Last lines: `durable/volatile ingest ratio: X` and `coap ingest 2 shards/1 gateway: Y`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiocoap
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT / "tests"))

from aggregator.gateway.config import load_job, parse_job  # noqa: E402
from aggregator.gateway.pipeline import Aggregator  # noqa: E402
from aggregator.gateway.state import Store  # noqa: E402
from aggregator.ops import jobs  # noqa: E402
from fleet import SCHEME_SQ, CoapBlaster, blob_dataset, update_frame  # noqa: E402
from peers import MosquittoBroker, free_port  # noqa: E402

D = 47_236
T = 100


# ----------------------------------------------------------------------------- 1. the pipeline
def pipeline_job(n: int, state: Path):
    keys = {k: os.urandom(32) for k in range(n)}
    raw = {"job": {"id": 1, "rounds": 10}, "model": {"kind": "logistic", "features": D, "L": 1.0},
           "training": {"scheme": "sq", "rule": "cat", "k_cap": 128},
           "cost": {"profile": "ieee802154-6lowpan-coap"}, "rounds": {"quorum": float(n), "deadline_s": 1e9},
           "nodes": {str(k): v.hex() for k, v in keys.items()},
           "downlink": {"key": os.urandom(32).hex()}, "state": {"dir": str(state)}}
    job = parse_job(raw)
    rng = np.random.default_rng(0)
    frames = [update_frame(1, k, keys[k], 0, D, T, SCHEME_SQ, rng) for k in range(n)]
    return job, frames


async def ingest(job, frames: list[bytes], store: Store | None, group: bool) -> tuple[float, int]:
    """Seconds until every frame is acknowledged; journal batches written."""
    loop = asyncio.get_running_loop()
    if store is not None and group:
        store.journal.start(loop, job.batch_frames, job.batch_ms / 1000.0)
    agg = Aggregator(job, store)
    acked = 0
    done = loop.create_future()

    def ack() -> None:
        nonlocal acked
        acked += 1
        if acked == len(frames) and not done.done():
            done.set_result(None)

    t0 = time.perf_counter()
    for i, f in enumerate(frames):
        out = agg.submit(f, "bench")
        agg.when_durable(out, ack)
        if i % 8 == 7:
            await asyncio.sleep(0)          # the loop serves I/O between frames
    await asyncio.wait_for(done, 120)
    dt = time.perf_counter() - t0
    assert agg.state.round == 1, "the round did not close"
    batches = store.journal.batches if store is not None else 0
    if store is not None:
        store.journal.stop()
    return dt, batches


def bench_pipeline(n: int, repeat: int) -> float:
    with tempfile.TemporaryDirectory(dir=ROOT / ".cache" if (ROOT / ".cache").is_dir() else None) as tmp:
        job, frames = pipeline_job(n, Path(tmp) / "state")
        best = {"memory": float("inf"), "group": float("inf"), "per-frame": float("inf")}
        batches = 0
        for r in range(repeat):
            for mode in best:
                state = Path(tmp) / f"state-{mode}-{r}"
                store = None if mode == "memory" else Store(state)
                dt, b = asyncio.run(ingest(job, frames, store, mode == "group"))
                if dt < best[mode]:
                    best[mode] = dt
                    if mode == "group":
                        batches = b
    size = len(frames[0])
    rate = {k: n / v for k, v in best.items()}
    print(f"frames: {n} x {size} B (S+Q, T={T}, d={D}), best of {repeat}")
    print(f"pipeline in memory:                  {rate['memory']:>9.0f} frames/s")
    print(f"pipeline durable, group commit:      {rate['group']:>9.0f} frames/s "
          f"({batches} fsyncs, {n / max(1, batches):.1f} frames each; batch <= {job.batch_frames} "
          f"frames or {job.batch_ms:g} ms)")
    print(f"pipeline durable, fsync per frame:   {rate['per-frame']:>9.0f} frames/s "
          f"(ratio {rate['per-frame'] / rate['memory']:.2f}: the journal before group commit)")
    return rate["group"] / rate["memory"]


# ----------------------------------------------------------------------------- 2. CoAP
class Deployment:
    """`cat-aggregator` processes for a job, stopped (SIGTERM) at the end."""

    def __init__(self, layout: jobs.Layout) -> None:
        self.layout = layout
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str, name: str, state: Path) -> None:
        log = open(self.layout.root / f"{name}.log", "ab")
        self.procs.append(subprocess.Popen([sys.executable, "-m", "aggregator.cli", *args], stdout=log,
                                           stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1")))
        metrics = state / "metrics.jsonl"
        end = time.monotonic() + 30
        while not (metrics.exists() and '"start"' in metrics.read_text()):
            if time.monotonic() > end or self.procs[-1].poll() is not None:
                raise RuntimeError(f"{name} did not start: {(self.layout.root / f'{name}.log').read_text()[-800:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


async def blast(job, endpoints: dict[tuple[str, int], list[int]], rounds: int, window: int) -> tuple[float, int]:
    """Send every node's frame of each round to its endpoint; wait for the next round at each."""
    rng = np.random.default_rng(1)
    clients = {ep: await CoapBlaster(*ep, sockets=8).start() for ep in endpoints}
    path = ("cat", str(job.job_id))
    sent = 0
    try:
        frames = [{k: update_frame(job.job_id, k, job.node_keys[k], r, job.d, int(rng.integers(1, 9)), job.scheme, rng)
                   for k in job.nodes} for r in range(rounds)]
        t0 = time.perf_counter()
        for r in range(rounds):
            async def site(ep, nodes: list[int]) -> int:
                c = clients[ep]
                sem = asyncio.Semaphore(window)

                async def one(k: int) -> None:
                    async with sem:
                        code, reason = await c.request(aiocoap.POST, path + ("up",), frames[r][k])
                    if code != aiocoap.CHANGED:
                        raise AssertionError(f"node {k} round {r}: {code} {reason!r}")

                await asyncio.gather(*(one(k) for k in nodes))
                while True:                      # the next round open at this endpoint
                    code, cfg = await c.request(aiocoap.GET, path + ("config",))
                    from edge.pushlinks import peek
                    if code == aiocoap.CONTENT and peek(cfg)[1] > r:
                        return len(nodes)
                    await asyncio.sleep(0.005)
            sent += sum(await asyncio.gather(*(site(ep, nodes) for ep, nodes in endpoints.items())))
        return time.perf_counter() - t0, sent
    finally:
        for c in clients.values():
            c.close()


def bench_coap(nodes: int, rounds: int, window: int) -> float:
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        ds = blob_dataset(nodes, rows_per_node=2)
        with MosquittoBroker(workdir=Path(tmp) / "broker") as broker:
            mqtt = {"mqtt": {"host": broker.host, "port": broker.port}}
            # one gateway
            port = free_port("udp")
            layout = jobs.prepare(Path(tmp) / "one", ds, nodes, rounds + 1, k_cap=8, deadline_s=600.0,
                                  transports={"coap": {"host": "127.0.0.1", "port": port}})
            job = load_job(layout.job_path)
            dep = Deployment(layout)
            try:
                dep.start("serve", str(layout.job_path), "--linger", "0", name="gateway", state=job.state_dir)
                dt, n = asyncio.run(blast(job, {("127.0.0.1", port): job.nodes}, rounds, window))
                rates["one"] = n / dt
            finally:
                dep.stop()
            # 2 shards + root
            half = nodes // 2
            ports = (free_port("udp"), free_port("udp"))
            shards = {"a": {"nodes": [f"0-{half - 1}"], "coap": f"127.0.0.1:{ports[0]}"},
                      "b": {"nodes": [f"{half}-{nodes - 1}"], "coap": f"127.0.0.1:{ports[1]}"}}
            layout = jobs.prepare(Path(tmp) / "two", ds, nodes, rounds + 1, k_cap=8, deadline_s=600.0,
                                  transports=mqtt, shards=shards)
            job = load_job(layout.job_path)
            dep = Deployment(layout)
            try:
                dep.start("root", str(layout.job_path), name="root", state=job.state_dir)
                for s in ("a", "b"):
                    dep.start("serve", str(layout.job_path), "--shard", s, "--linger", "0", name=s,
                              state=job.shards[s].state_dir)
                eps = {("127.0.0.1", ports[0]): job.shards["a"].nodes, ("127.0.0.1", ports[1]): job.shards["b"].nodes}
                dt, n = asyncio.run(blast(job, eps, rounds, window))
                rates["two"] = n / dt
            finally:
                dep.stop()
    print(f"coap: {nodes} nodes x {rounds} rounds of S+Q frames (d=30, T<=8), {window} requests in flight per endpoint")
    print(f"coap ingest, one gateway:            {rates['one']:>9.0f} frames/s (one process)")
    print(f"coap ingest, 2 shards + root:        {rates['two']:>9.0f} frames/s (2 shard processes, root, Mosquitto)")
    return rates["two"] / rates["one"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--coap-nodes", type=int, default=1200)
    ap.add_argument("--coap-rounds", type=int, default=4)
    ap.add_argument("--window", type=int, default=32, help="CoAP requests in flight per endpoint")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    durable = bench_pipeline(args.frames, args.repeat)
    coap = bench_coap(args.coap_nodes, args.coap_rounds, args.window)
    print(f"durable/volatile ingest ratio: {durable:.2f}")
    print(f"coap ingest 2 shards/1 gateway: {coap:.2f}")


if __name__ == "__main__":
    main()
