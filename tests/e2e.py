"""End-to-end helpers: real gateway processes, real edge processes, replay of recorded frames.

Used by the gateway tests and the fault-injection tests. Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from aggregator.ops import jobs
from aggregator.gateway.config import Job, load_job
from aggregator.gateway.pipeline import Aggregator
from aggregator.gateway.state import Store

PY = sys.executable


# the job's cost profile by the transport its edges use: a node is refused a profile of another
# transport (edge/startup.py transport_mismatch); edges on both price with a paper model (any)
PROFILES = {"coap": "ieee802154-6lowpan-coap", "mqtt": "wifi-tcp-mqtt-esp32", "both": "paper-payload-fpp32"}


def make_job(root: Path, nodes: int = 4, rounds: int = 30, transports: dict | None = None, transport: str = "coap",
             **kw) -> jobs.Layout:
    """A small breast-cancer job (d = 30): fast enough for many rounds in a test. transport:
    what its edges use, "coap", "mqtt" or "both" (picks the profile)."""
    kw.setdefault("profile", PROFILES[transport])
    kw.setdefault("scheme", "sq")
    kw.setdefault("k_cap", 8)
    kw.setdefault("deadline_s", 60.0)
    return jobs.prepare(root, "breast_cancer", nodes, rounds, transports=transports, **kw)


def serve(layout: jobs.Layout, *extra: str, log: Path | None = None) -> subprocess.Popen:
    """`cat-aggregator serve` as a real process (so it can be SIGKILLed)."""
    cmd = [PY, "-m", "aggregator.cli", "serve", str(layout.job_path), *extra]
    out = open(log or layout.root / "serve.log", "ab")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def aggregator(layout: jobs.Layout, command: str, *extra: str, name: str = "serve",
               fault: str | None = None) -> subprocess.Popen:
    """A real `cat-aggregator <command> job.toml ...` (serve, serve --shard, root), its output
    appended to <name>.log; armed with CAT_FAULT=fault (log in faults-<name>.log) if given."""
    from aggregator.gateway import faults
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop(faults.ENV, None)
    if fault:
        env[faults.ENV] = fault
        env[faults.ENV_LOG] = str(layout.root / f"faults-{name}.log")
    out = open(layout.root / f"{name}.log", "ab")
    return subprocess.Popen([PY, "-m", "aggregator.cli", command, str(layout.job_path), *extra],
                            stdout=out, stderr=subprocess.STDOUT, env=env)


def started(layout: jobs.Layout, n: int = 1, state: str = "state"):
    """A condition: the process with that state directory logged its n-th start."""
    return lambda: sum(1 for e in events(layout, state) if e.get("event") == "start") >= n


def edge(layout: jobs.Layout, node: int, transport: str, host: str, port: int, *extra: str) -> subprocess.Popen:
    cmd = [PY, "-m", "edge.cli", "--config", str(layout.node_configs[node]), "--transport", transport,
           "--host", host, "--port", str(port), "--timeout", "60", "--record", str(layout.root / "frames"), *extra]
    err = open(layout.root / f"edge-{node}.log", "ab")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)


def events(layout: jobs.Layout, state: str = "state") -> list[dict]:
    path = layout.root / state / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def closed_rounds(layout: jobs.Layout, state: str = "state") -> int:
    return sum(1 for e in events(layout, state) if e.get("event") == "round")


def wait_for(cond, timeout: float, what: str, procs: list[subprocess.Popen] | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        for p in procs or []:
            if p.poll() not in (None, 0):
                raise AssertionError(f"{what}: process {p.args[:4]} exited with {p.returncode}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def stop(procs: list[subprocess.Popen], sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(sig)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


def recorded_frames(layout: jobs.Layout) -> dict[int, dict[int, bytes]]:
    """{round: {node: frame}} from the edges' --record directory."""
    out: dict[int, dict[int, bytes]] = {}
    for p in sorted((layout.root / "frames").glob("node-*-round-*.cbor")):
        parts = p.stem.split("-")
        node, rnd = int(parts[1]), int(parts[3])
        out.setdefault(rnd, {})[node] = p.read_bytes()
    return out


def replay(job: Job, frames: dict[int, dict[int, bytes]], order_seed: int = 0) -> np.ndarray:
    """An uninterrupted in-process gateway fed the same frames (in a shuffled arrival order)."""
    agg = Aggregator(job)
    rng = np.random.default_rng(order_seed)
    for rnd in sorted(frames):
        nodes = list(frames[rnd])
        rng.shuffle(nodes)
        for nid in nodes:
            out = agg.submit(frames[rnd][nid], "replay")
            assert out.ok, (rnd, nid, out.reason)
    return agg.state.model.copy()


def final_model(layout: jobs.Layout) -> np.ndarray:
    job = load_job(layout.job_path)
    st = Store(job.state_dir).load()
    assert st is not None
    return st.model
