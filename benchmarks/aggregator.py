"""Gateway benchmark: pipeline cost against bare CBOR decoding, and rounds/s end to end.

    python benchmarks/aggregator.py [--frames N] [--edges 50] [--rounds 20]

1. Decode + verify (HMAC) + validate + accumulate (+ the round close that applies the average)
   of N update frames (S+Q, T = 100, d = 47,236) from N distinct nodes, against `cbor2.loads`
   alone on the same frames, in the same process. The journal's fsync is measured apart: it is
   disk latency, not pipeline CPU.
2. Rounds per second with 50 edges (real EdgeNode + paho-mqtt clients in threads) through a
   real Mosquitto on loopback.
Last line: `pipeline/decode time ratio: X`.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import threading
import time
from array import array
from pathlib import Path

import cbor2
import numpy as np

# This file is named like the package it measures: keep its own folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from aggregator.gateway.config import parse_job  # noqa: E402
from aggregator.gateway.pipeline import Aggregator  # noqa: E402
from aggregator.gateway.state import Store  # noqa: E402
from edge import frame  # noqa: E402
from edge.cat import SCHEME_SQ  # noqa: E402

D = 47_236
T = 100


def job_for(n_nodes: int, state: Path, keys: dict[int, bytes]):
    raw = {"job": {"id": 1, "rounds": 10}, "model": {"kind": "logistic", "features": D, "L": 1.0},
           "training": {"scheme": "sq", "rule": "cat", "k_cap": 128},
           "cost": {"profile": "ieee802154-6lowpan-coap"}, "rounds": {"quorum": float(n_nodes), "deadline_s": 1e9},
           "nodes": {str(k): v.hex() for k, v in keys.items()},
           "downlink": {"key": secrets.token_bytes(32).hex()}, "state": {"dir": str(state)}}
    return parse_job(raw)


def make_frames(keys: dict[int, bytes]) -> list[bytes]:
    rng = np.random.default_rng(0)
    buf = bytearray(frame.buffer_size(D, T, SCHEME_SQ, 0))
    out = []
    for node, key in keys.items():
        idx = array("I", np.sort(rng.choice(D, T, replace=False)).tolist())
        m = float(np.float32(rng.random()))
        vals = array("f", [m if s else -m for s in rng.integers(0, 2, T)])
        n = frame.encode_update(buf, key, 1, node, 0, SCHEME_SQ, D, T, idx, vals, 0, (0.5, 0.1, 0.01, 0.001))
        out.append(bytes(buf[:n]))
    return out


def bench_pipeline(n: int, repeat: int) -> float:
    keys = {k: secrets.token_bytes(32) for k in range(n)}
    frames = make_frames(keys)
    with tempfile.TemporaryDirectory() as tmp:
        job = job_for(n, Path(tmp) / "state", keys)
        best_dec = best_pipe = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            for f in frames:
                cbor2.loads(f)
            best_dec = min(best_dec, time.perf_counter() - t0)
            agg = Aggregator(job)  # no journal: CPU cost of the pipeline itself
            t0 = time.perf_counter()
            for f in frames:
                out = agg.submit(f, "bench")
            best_pipe = min(best_pipe, time.perf_counter() - t0)
            assert out.closed is not None and len(out.closed.nodes) == n
        agg = Aggregator(job, Store(Path(tmp) / "state"))
        t0 = time.perf_counter()
        for f in frames:
            agg.submit(f, "bench")
        with_journal = time.perf_counter() - t0
    size = len(frames[0])
    print(f"frames: {n} x {size} B (S+Q, T={T}, d={D}, telemetry on)")
    print(f"cbor2.loads alone:           {n / best_dec:>10.0f} frames/s")
    print(f"pipeline (verify..close):    {n / best_pipe:>10.0f} frames/s")
    print(f"pipeline + fsynced journal:  {n / with_journal:>10.0f} frames/s (disk latency bound)")
    return best_pipe / best_dec


def bench_rounds(edges: int, rounds: int) -> None:
    from aggregator.ops import jobs
    from aggregator.gateway.config import load_job
    from aggregator.ops.demo import ServiceThread
    from aggregator.gateway.service import Endpoints
    from edge import datafile, profile
    from edge.node import EdgeNode
    from edge.pi import PahoLink
    from peers import MosquittoBroker

    with tempfile.TemporaryDirectory() as tmp:
        layout = jobs.prepare(Path(tmp) / "job", "breast_cancer", edges, rounds, k_cap=8, deadline_s=30.0)
        job = load_job(layout.job_path)
        prof = profile.load_profile(job.profile_name)
        with MosquittoBroker(workdir=Path(tmp) / "broker") as broker:
            closes: list[float] = []
            svc = ServiceThread(job, Endpoints(mqtt=(broker.host, broker.port)),
                                on_close=lambda c: closes.append(time.perf_counter()))
            svc.start()
            nodes = []
            for k in range(edges):
                cfg = layout.node_configs[k]
                import tomllib
                c = tomllib.loads(cfg.read_text())
                link = PahoLink(broker.host, broker.port, job.job_id, k)
                node = EdgeNode(k, bytes.fromhex(c["key"]), bytes.fromhex(c["downlink_key"]), job.job_id,
                                datafile.DataFile(c["data"]), prof)
                nodes.append((node, link))
            threads = [threading.Thread(target=n.run, args=(l,), kwargs={"timeout": 60}, daemon=True) for n, l in nodes]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join(300)
            svc.stop()
            for _, link in nodes:
                link.close()
    if len(closes) < rounds:
        print(f"end to end: only {len(closes)} of {rounds} rounds closed")
        return
    span = closes[-1] - closes[0]
    print(f"end to end through Mosquitto: {edges} edges, {rounds} rounds in {closes[-1] - t0:.2f} s;"
          f" steady state {(len(closes) - 1) / span:.1f} rounds/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--edges", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    ratio = bench_pipeline(args.frames, args.repeat)
    bench_rounds(args.edges, args.rounds)
    print(f"pipeline/decode time ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
