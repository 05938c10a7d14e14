"""Soak: thousands of simulated edges for minutes against one gateway and against 2 shards + root.

    python benchmarks/soak.py [--edges 3000] [--minutes 10] [--only gateway|shards] [--out out/soak]

Each edge is the real edge loop (edge.node.EdgeNode: gradient on its own data, CAT, the frame
encoder) run round by round in one process (tests/fleet.py); half send over CoAP (to the
gateway, or to shard a) and half over MQTT through a real Mosquitto (to the gateway, or to
shard b); the downlink is the real config, snapshot and deltas each edge verifies and applies.
Every round each site also sends a few frames the gateway must refuse (a bad MAC, an unknown
kid, a round too far ahead, on MQTT a node's frame on another node's topic).

Checked at the end: every round closed exactly once, every acknowledged frame in its round,
refusals exactly the bad frames sent, the model bit-identical to an in-process gateway fed the
same frames, RSS and open file descriptors of every server process flat after warm-up.
Printed: frames/s, round time and close latency percentiles, RSS/fd growth; a plot of RSS
and descriptors over time goes to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/aggregator.py is named like the package: keep this folder off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT / "tests"))

from aggregator.gateway.config import load_job  # noqa: E402
from aggregator.gateway.state import Store  # noqa: E402
from aggregator.ops import jobs  # noqa: E402
from aggregator.ops.broker import queue_settings  # noqa: E402
from fleet import Fleet, blob_dataset  # noqa: E402
from peers import MosquittoBroker, free_port  # noqa: E402

import e2e  # noqa: E402


class Sampler(threading.Thread):
    """RSS (MiB) and open file descriptors of some processes, every `every` seconds."""

    def __init__(self, pids: dict[str, int], every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.every = every
        self.rows: list[tuple[float, str, float, int]] = []
        self.halt = threading.Event()
        self.t0 = time.monotonic()

    def sample(self) -> None:
        t = time.monotonic() - self.t0
        for name, pid in self.pids.items():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                rss = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024
                fds = len(os.listdir(f"/proc/{pid}/fd"))
            except (OSError, StopIteration):
                continue
            self.rows.append((t, name, rss, fds))

    def run(self) -> None:
        while not self.halt.wait(self.every):
            self.sample()

    def growth(self, name: str) -> tuple[float, float, float, int, int]:
        """Over the second half of the run (warm-up: a CoAP server keeps every exchange for
        EXCHANGE_LIFETIME = 247 s, RFC 7252 §4.8.2, so its RSS climbs for about 4 minutes):
        RSS at its start and at the end (medians of a minute, MiB), the fitted slope (MiB/min),
        and the fewest and most open descriptors."""
        rows = [r for r in self.rows if r[1] == name]
        if len(rows) < 10:
            raise RuntimeError(f"too few samples of {name}: {len(rows)}")
        t = np.array([r[0] for r in rows]) / 60
        rss = np.array([r[2] for r in rows])
        half = t[-1] / 2
        second = t >= half
        start = float(np.median(rss[second & (t < half + 1)]))
        end = float(np.median(rss[t >= t[-1] - 1]))
        slope = float(np.polyfit(t[second], rss[second], 1)[0])
        fds = [r[3] for r in rows if r[0] / 60 >= half]
        return start, end, slope, min(fds), max(fds)


def percentiles(xs: list[float]) -> str:
    a = np.asarray(xs)
    return " ".join(f"p{q}={np.percentile(a, q) * 1e3:.0f}ms" for q in (50, 90, 99)) + f" max={a.max() * 1e3:.0f}ms"


def run_one(kind: str, edges: int, minutes: float, out: Path, bad: int, window: int) -> dict:
    work = out / kind
    shutil.rmtree(work, ignore_errors=True)      # a broker's persisted retained messages of an older job
    work.mkdir(parents=True)
    broker = MosquittoBroker(workdir=work / "broker", persistence=True, extra_conf=queue_settings(edges)).start()
    half = edges // 2
    coap = free_port("udp")
    transports = {"mqtt": {"host": broker.host, "port": broker.port}}
    shards = None
    if kind == "shards":
        shards = {"a": {"nodes": [f"0-{half - 1}"], "coap": f"127.0.0.1:{coap}"}, "b": {"nodes": [f"{half}-{edges - 1}"]}}
    else:
        transports["coap"] = {"host": "127.0.0.1", "port": coap}
    layout = jobs.prepare(work / "job", blob_dataset(edges), edges, 1_000_000, k_cap=8, deadline_s=600.0,
                          transports=transports, shards=shards)
    job = load_job(layout.job_path)
    procs: dict[str, subprocess.Popen] = {}
    if kind == "shards":
        procs["root"] = e2e.aggregator(layout, "root", name="root")
        for s in ("a", "b"):
            procs[f"shard {s}"] = e2e.aggregator(layout, "serve", "--shard", s, name=s)
        states = ["state", "state-a", "state-b"]
    else:
        procs["gateway"] = e2e.aggregator(layout, "serve", name="gateway")
        states = ["state"]
    for st in states:
        e2e.wait_for(e2e.started(layout, state=st), 60, f"{st} start", list(procs.values()))
    sites = {}
    for name, ks in (("coap", range(half)), ("mqtt", range(half, edges))):
        host, port = job.endpoint(ks[0], name)
        sites[name] = (name, host, port, list(ks))
    fleet = Fleet(job, layout, sites, bad_per_round=bad, window=window, seed=1)
    sampler = Sampler({**{n: p.pid for n, p in procs.items()}, "mosquitto": broker.proc.pid, "fleet": os.getpid()})
    sampler.sample()
    sampler.start()
    t0 = time.monotonic()
    try:
        done = asyncio.run(fleet.run(1_000_000, timeout=300, stop_after_s=minutes * 60))
    finally:
        elapsed = time.monotonic() - t0
        sampler.halt.set()
        sampler.join()
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            p.wait(60)
        broker.stop()
    # ---- checks
    ev = [e for e in e2e.events(layout) if e.get("event") == "round"]
    closes = [e["round"] for e in ev]
    assert closes == list(range(done)), "a round closed twice or not at all"
    acked = fleet.acked()
    lost = sum(len(acked.get(e["round"], set()) - set(e["nodes"])) for e in ev)
    assert lost == 0, f"{lost} acknowledged frames not applied"
    rejected: dict[str, int] = {}
    for d in ([job.shards[s].state_dir for s in job.shards] if shards else [job.state_dir]):
        for k, v in Store(d).load().rejected.items():
            rejected[k] = rejected.get(k, 0) + v
    assert rejected == fleet.bad_sent(), (rejected, fleet.bad_sent())
    st = Store(job.state_dir).load()
    replayed = e2e.replay(job, {r: f for r, f in fleet.frames.items() if r < done}, order_seed=1)
    assert replayed.tobytes() == st.model.tobytes(), "model differs from the replay"
    valid = sum(len(v) for v in acked.values())
    round_t = np.diff([e["t"] for e in ev]).tolist()
    close = []
    for r in range(done - 1):
        finished = max(s.finished.get(r, 0.0) for s in fleet.sites)
        opened = min(s.opened.get(r + 1, float("inf")) for s in fleet.sites)
        if finished and opened < float("inf"):
            close.append(opened - finished)
    res = {"kind": kind, "edges": edges, "rounds": done, "seconds": elapsed, "frames": valid,
           "bad": sum(fleet.bad_sent().values()), "fps": valid / elapsed, "round_t": round_t, "close": close,
           "sampler": sampler, "compute_s": fleet.compute_s, "dups": sum(
               sum(n.duplicates for n in Store(d).load().nodes.values())
               for d in ([job.shards[s].state_dir for s in job.shards] if shards else [job.state_dir]))}
    return res


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, len(results), figsize=(6 * len(results), 6), squeeze=False, sharex="col")
    for col, res in enumerate(results):
        s = res["sampler"]
        for name in dict.fromkeys(r[1] for r in s.rows):
            if name == "fleet":                 # the simulated edges' process: numbers in the text
                continue
            rows = [r for r in s.rows if r[1] == name]
            axes[0][col].plot([r[0] / 60 for r in rows], [r[2] for r in rows], label=name)
            axes[1][col].plot([r[0] / 60 for r in rows], [r[3] for r in rows], label=name)
        title = "one gateway" if res["kind"] == "gateway" else "2 shards + root"
        axes[0][col].set_title(f"{title}: {res['edges']} edges, {res['rounds']} rounds")
        axes[0][col].set_ylabel("RSS (MiB)")
        axes[0][col].set_ylim(bottom=0)
        axes[1][col].set_ylim(bottom=0)
        axes[1][col].set_ylabel("open file descriptors")
        axes[1][col].set_xlabel("minutes")
        axes[0][col].legend(fontsize=8)
        axes[0][col].grid(alpha=0.3)
        axes[1][col].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edges", type=int, default=3000)
    ap.add_argument("--minutes", type=float, default=10.0, help="per configuration (at least 10 for the soak)")
    ap.add_argument("--only", choices=("gateway", "shards"))
    ap.add_argument("--bad", type=int, default=2, help="bad frames per round per site")
    ap.add_argument("--window", type=int, default=64, help="frames in flight per site")
    ap.add_argument("--out", default=str(ROOT / "out" / "soak"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    results = []
    for kind in (args.only,) if args.only else ("gateway", "shards"):
        res = run_one(kind, args.edges, args.minutes, out, args.bad, args.window)
        results.append(res)
        label = "one gateway" if kind == "gateway" else "2 shards + root"
        print(f"{label}: {res['edges']} edges, {res['rounds']} rounds in {res['seconds'] / 60:.1f} min; "
              f"{res['frames']} frames acknowledged ({res['fps']:.0f} frames/s), {res['bad']} bad frames refused "
              f"as sent, {res['dups']} duplicates; edge simulation {res['compute_s']:.0f} s of CPU")
        print(f"  round time (close to close) {percentiles(res['round_t'])}")
        print(f"  close latency (last frame acknowledged -> next round open at every site) {percentiles(res['close'])}")
        print("  second half of the run (after the CoAP exchange lifetime of 247 s):")
        for name in dict.fromkeys(r[1] for r in res["sampler"].rows):
            start, end, slope, fmin, fmax = res["sampler"].growth(name)
            print(f"  {name:>10}: RSS {start:.1f} -> {end:.1f} MiB ({(end - start) / start * 100:+.1f} %, "
                  f"{slope:+.2f} MiB/min), open descriptors {fmin}..{fmax}")
        print("  checks: every round closed once, no acknowledged frame lost, refusals = bad frames, "
              "model = replay: ok")
    png = out / "soak-rss.png"
    plot(results, png)
    (out / "soak.json").write_text(json.dumps(
        [{k: v for k, v in r.items() if k != "sampler"} | {"samples": r["sampler"].rows} for r in results]))
    print(f"plot: {png}")


if __name__ == "__main__":
    main()
