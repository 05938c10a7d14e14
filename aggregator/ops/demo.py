"""`cat-aggregator demo`: the whole system on one machine, no broker or board needed.

It partitions a dataset that ships with scikit-learn over N edges (by default the 8x8 digits:
10 classes, a softmax model of d = 640 weights, where a full gradient is 2.5 KiB on the wire
and CAT picks at most --k-cap entries per round), starts the gateway with its CoAP endpoint on
loopback (or, with --transport mqtt, through its own Mosquitto with TLS, passwords and a
per-node ACL, or a broker given with --broker), starts N real `cat-edge` processes running the
real edge code, trains with CAT, then runs full-gradient descent for the same rounds, and ends
with a table (loss, accuracy, bytes, packets, radio energy per node under the chosen cost
profile), the whole-board energy and battery life of each node on a board
(aggregator/lab/boardbudget.py) and a plot of loss against bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aggregator.errors import UserError


# Below Linux's ephemeral range (net.ipv4.ip_local_port_range, 32768-60999 by default): a port
# probed free there is not handed to some other process's client socket before the gateway binds it.
_PROBE_PORTS = (20000, 32000)


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port free on host, for a gateway started right after."""
    for _ in range(64):
        port = secrets.randbelow(_PROBE_PORTS[1] - _PROBE_PORTS[0]) + _PROBE_PORTS[0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServiceThread:
    """The gateway service on its own event loop in a background thread."""

    def __init__(self, job, endpoints, on_close=None) -> None:
        from aggregator.gateway.service import Service
        self.job = job
        self.endpoints = endpoints
        self.on_close = on_close
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.service: Service | None = None
        self.thread = threading.Thread(target=self._run, name="cat-gateway", daemon=True)

    def _run(self) -> None:
        from aggregator.gateway.service import Service

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.service = Service(self.job, self.endpoints, stop_when_finished=False)
            if self.on_close:
                self.service.agg.listeners.append(self.on_close)
            task = asyncio.create_task(self.service.run())
            started = asyncio.create_task(self.service.started.wait())
            await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
            started.cancel()
            if task.done():
                task.result()  # raises what stopped the service during start-up
            self.ready.set()
            await task

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by start()/stop()
            self.error = exc
        finally:
            self.ready.set()

    def start(self, timeout: float = 20.0) -> None:
        self.thread.start()
        if not self.ready.wait(timeout) or self.error:
            raise UserError(f"gateway did not start: {self.error or 'timeout'}")

    def stop(self) -> None:
        if self.loop and self.service:
            self.loop.call_soon_threadsafe(self.service.stop)
        self.thread.join(15)
        if self.error:
            raise self.error


@dataclass
class Session:
    label: str
    rounds: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    cum_bytes: list[int] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    seconds: float = 0.0


def edge_command(cfg: Path, transport: str, host: str, port: int, ca: Path | None = None,
                 job_id: int | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "edge.cli", "--config", str(cfg), "--transport", transport,
           "--host", host, "--port", str(port), "--json", "--timeout", "120"]
    return cmd + (["--ca-file", str(ca)] if ca else []) + (["--job", str(job_id)] if job_id is not None else [])


class SecureBroker:
    """The demo's own Mosquitto: passwords, a per-node ACL and TLS, from `broker-config`.

    Used for `--transport mqtt` without `--broker`, so the demo shows the deployment the
    docs recommend (docs/deployment.md) rather than an anonymous plain-text broker.
    """

    def __init__(self, layout) -> None:
        from aggregator.ops.broker import write_broker_config
        from aggregator.gateway.config import load_job
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.files = write_broker_config(load_job(layout.job_path), layout.root / "broker", ("127.0.0.1", port),
                                         tls=True, sans=["localhost", "127.0.0.1"],
                                         node_configs=layout.node_configs)
        self.address = ("127.0.0.1", port)
        self.log_path = layout.root / "broker" / "mosquitto.log"
        if os.geteuid() == 0:
            # As root Mosquitto drops to user "mosquitto", who may not read the 0600 secrets
            # the demo just wrote as root; the demo's broker stays the invoking user.
            import getpass
            with open(self.files.conf, "a") as fh:
                fh.write(f"user {getpass.getuser()}\n")
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self, timeout: float = 10.0) -> None:
        """Start Mosquitto and wait (at most timeout s) until it accepts connections."""
        exe = "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else "mosquitto"
        with open(self.log_path, "ab") as log:
            try:
                self.proc = subprocess.Popen([exe, "-c", str(self.files.conf)], stdout=log,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            except OSError as exc:
                raise UserError(f"cannot start Mosquitto ({exc}): install it (scripts/setup.sh) or pass --broker") from None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise UserError(f"Mosquitto exited at start; see {self.log_path}")
            try:
                socket.create_connection(self.address, 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise UserError(f"Mosquitto did not open its port within {timeout:g} s")

    def restart(self) -> None:
        """The same broker with nothing remembered: its persistence file (retained config and
        model, the clients' sessions and queued messages) goes while it is stopped, so a
        session never sees the previous session's final config or model."""
        self.stop()
        for f in (self.files.out / "data").glob("*"):
            f.unlink()
        self.start()

    def endpoints(self):
        from aggregator.gateway.service import Endpoints
        return Endpoints(mqtt=self.address, mqtt_auth=self.files.gateway, mqtt_tls=self.files.gateway_tls())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def run_session(layout, label: str, scheme: str, rule: str, transport: str, broker: tuple[str, int] | None,
                progress: bool = True, secure: SecureBroker | None = None, job_id: int | None = None,
                timeout_s: float = 600.0) -> Session:
    """Train once with real edge processes; returns the per-round curve and the gateway's counters.

    job_id (default: the job file's) names the session's topics and MQTT client ids: two
    sessions on one broker must not share them, or the second one's edges read the first
    one's retained final config ("job done") or model and sit out its rounds."""
    from tqdm import tqdm

    from aggregator.lab import datasets
    from aggregator.gateway.config import load_job
    from aggregator.gateway.service import Endpoints
    from edge import cat

    job = load_job(layout.job_path)
    job.scheme = cat.scheme_id(scheme)
    job.rule = cat.rule_id(rule)
    if job_id is not None:
        job.job_id = job_id
    job.state_dir = layout.root / f"state-{label}"
    shutil.rmtree(job.state_dir, ignore_errors=True)   # an earlier demo's state in the same --out
    ds = layout.dataset
    kind = job.model_kind
    sess = Session(label)
    events: queue.Queue = queue.Queue()
    bytes_so_far = [0]

    def on_close(closed) -> None:
        # Runs on the gateway's thread: copy what the main thread needs.
        svc = thread.service
        total = sum(ns.bytes for ns in svc.agg.state.nodes.values())
        events.put((closed.round, svc.agg.state.model.copy(), total))

    if transport == "coap":
        host, port = "127.0.0.1", free_udp_port()
        ep = Endpoints(coap=(host, port))
    else:
        if secure is not None:
            host, port = secure.address
            ep = secure.endpoints()
        elif broker is not None:
            host, port = broker
            ep = Endpoints(mqtt=broker)
        else:
            raise UserError("--transport mqtt needs a broker")
    thread = ServiceThread(job, ep, on_close)
    t0 = time.perf_counter()
    thread.start()
    procs = []
    logs: list[Path] = []
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for nid in sorted(layout.node_configs):
        ca = secure.files.ca if secure is not None else None
        # stderr to a file, not a pipe nobody reads while the edge runs: a full pipe would
        # block the edge mid-round.
        logs.append(layout.root / f"edge-{label}-{nid}.log")
        with open(logs[-1], "wb") as err:
            procs.append(subprocess.Popen(edge_command(layout.node_configs[nid], transport, host, port, ca, job_id),
                                          stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, env=env))
    bar = tqdm(total=job.rounds, desc=f"{label:>4}", unit="round", disable=not progress, leave=True)
    try:
        done = 0
        while done < job.rounds:
            try:
                rnd, model, total = events.get(timeout=1.0)
            except queue.Empty:
                dead = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
                if dead:
                    err = logs[dead[0]].read_text(errors="replace").strip().splitlines()
                    raise UserError(f"an edge exited early: {err[-1] if err else procs[dead[0]].returncode}")
                if all(p.poll() is not None for p in procs):
                    # Every edge said the job is done while the gateway still waits for round
                    # `done`: nothing can close it any more.
                    raise UserError(f"{label}: every edge exited at round {done} of {job.rounds}")
                if time.perf_counter() - t0 > timeout_s:
                    raise UserError(f"{label}: timed out after {timeout_s:g} s at round {done} of {job.rounds}")
                continue
            w = model.astype(np.float64)
            loss, _ = datasets.loss_grad_np(ds.X, ds.y, w, job.lam, kind)
            acc = datasets.accuracy_np(ds.X, ds.y, w, kind)
            sess.rounds.append(rnd + 1)
            sess.loss.append(float(loss))
            sess.accuracy.append(float(acc))
            sess.cum_bytes.append(int(total))
            bytes_so_far[0] = int(total)
            done = rnd + 1
            bar.set_postfix(loss=f"{loss:.4f}", bytes=total)
            bar.update(1)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    finally:
        bar.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        thread.stop()
    sess.seconds = time.perf_counter() - t0
    sess.summary = thread.service.agg.summary()
    return sess


def initial_loss(layout, lam: float, kind: str) -> float:
    from aggregator.lab import datasets
    d = layout.dataset.X.shape[1] * (1 if kind == "logistic" else layout.dataset.classes)
    loss, _ = datasets.loss_grad_np(layout.dataset.X, layout.dataset.y, np.zeros(d), lam, kind)
    return float(loss)


def board_lines(sessions: list[Session], layout, profile: str, board: str | None, battery: str,
                interval: float) -> list[str]:
    """Whole-board energy and battery life of each session's nodes (aggregator/lab/boardbudget.py),
    from the gateway's metrics log; compute estimated for the board (these edges ran on this host)."""
    from aggregator.lab import boardbudget
    from aggregator.lab.pricing import profile_dict
    from edge.hwprofile import board_for_link

    prof = profile_dict(profile)
    if prof["kind"] != "link" or prof["radio"]["tx_power"] <= 0:
        return [f"whole board: {profile} has no radio energy figures"]
    board = board or board_for_link(profile)
    if board is None:
        return [f"whole board: no board profile is the default for {profile}; give --board"]
    ds = layout.dataset
    d = int(ds.X.shape[1]) * (1 if ds.classes == 2 else int(ds.classes))
    nnz = float(ds.X.nnz if hasattr(ds.X, "nnz") else np.count_nonzero(ds.X)) / max(1, len(layout.node_configs))
    lines = [f"whole board ({board}, {battery}, one round per {interval:g} s; compute estimated for the board):",
             f"{'method':<8} {'node':<9} {'radio_mJ':>9} {'compute_mJ':>10} {'listen_mJ':>9} {'sleep_mJ':>9} "
             f"{'total_mJ':>9} {'battery_days':>12}"]
    per = {}
    for s in sessions:
        b = boardbudget.from_metrics(layout.root / f"state-{s.label}" / "metrics.jsonl", prof, board, battery,
                                     interval, d, nnz)
        for nd in b["nodes"]:
            lines.append(f"{s.label:<8} {'node ' + str(nd['node']):<9} {1e3 * nd['radio_j_per_round']:>9.3f} "
                         f"{1e3 * nd['compute_j_per_round']:>10.3f} {1e3 * nd['listen_j_per_round']:>9.3f} "
                         f"{1e3 * nd['sleep_j_per_round']:>9.3f} {1e3 * nd['energy_j_per_round']:>9.3f} "
                         f"{nd['battery_life_days']:>12.4g}")
        per[s.label] = (sum(nd["energy_j_total"] for nd in b["nodes"]),
                        min(nd["battery_life_days"] for nd in b["nodes"]))
    if len(per) == 2:
        (la, (ea, da)), (lb, (eb, db)) = per.items()
        lines.append(f"{lb} / {la}: whole-board energy {eb / max(ea, 1e-30):.2f}x; battery life {la} {da:.4g} days, "
                     f"{lb} {db:.4g} days (first node to run out)")
    return lines


def table(sessions: list[Session], profile: str) -> str:
    lines = [f"cost profile: {profile}",
             f"{'method':<8} {'loss':>8} {'acc':>6} {'node':>4} {'bytes':>8} {'packets':>8} {'energy_mJ':>10} {'airtime_s':>10}"]
    for s in sessions:
        for i, (nid, ns) in enumerate(sorted(s.summary["nodes"].items())):
            head = f"{s.label:<8} {s.loss[-1]:>8.4f} {s.accuracy[-1]:>6.3f}" if i == 0 else " " * 24
            lines.append(f"{head} {nid:>4} {ns['bytes']:>8} {ns['packets']:>8} {ns['energy_j'] * 1e3:>10.3f} {ns['airtime_s']:>10.4f}")
        tot = {k: sum(ns[k] for ns in s.summary["nodes"].values()) for k in ("bytes", "packets", "energy_j", "airtime_s")}
        lines.append(f"{'':<24} {'all':>4} {tot['bytes']:>8} {tot['packets']:>8} {tot['energy_j'] * 1e3:>10.3f} {tot['airtime_s']:>10.4f}")
    if len(sessions) == 2:
        a, b = sessions
        ba = sum(ns["bytes"] for ns in a.summary["nodes"].values())
        bb = sum(ns["bytes"] for ns in b.summary["nodes"].values())
        ea = sum(ns["energy_j"] for ns in a.summary["nodes"].values())
        eb = sum(ns["energy_j"] for ns in b.summary["nodes"].values())
        lines.append(f"{b.label} / {a.label}: bytes {bb / max(ba, 1):.2f}x, energy {eb / max(ea, 1e-30):.2f}x, "
                     f"final loss {a.loss[-1]:.4f} vs {b.loss[-1]:.4f}")
    return "\n".join(lines)


def plot(sessions: list[Session], f0: float, out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for s in sessions:
        ax.plot([0] + s.cum_bytes, [f0] + s.loss, marker=".", label=s.label)
    ax.set_xscale("symlog", linthresh=100)
    ax.set_xlabel("bytes sent by all edges (frames on the wire)")
    ax.set_ylabel("training loss F(x)")
    ax.set_title("loss against bytes")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths = [out / "loss_vs_bytes.png", out / "loss_vs_bytes.svg"]
    for p in paths:
        fig.savefig(p)
    plt.close(fig)
    return paths


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train on one machine with real edge processes (CAT vs full gradient)")
    p.add_argument("--dataset", default="digits",
                   help="digits (default: 10 classes, d = 640, where sparsification has much to choose "
                        "from), breast_cancer (d = 30), digits-binary, iris, wine or a LIBSVM file")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--scheme", default="sq", help="s, sq or ss")
    p.add_argument("--rule", default="catavg", help="catavg (default), cat, fixed, alistarh or hybrid")
    p.add_argument("--rule-param", type=int, default=0)
    p.add_argument("--k-cap", type=int, default=16)
    p.add_argument("--profile", default=None,
                   help="cost profile of the edges' link; it must price --transport (default: "
                        "ieee802154-6lowpan-coap for coap, wifi-tcp-mqtt-esp32 for mqtt)")
    p.add_argument("--no-error-feedback", action="store_true")
    p.add_argument("--transport", choices=("coap", "mqtt"), default="coap")
    p.add_argument("--broker", metavar="HOST:PORT",
                   help="with --transport mqtt: use this broker (anonymous) instead of the demo's own "
                        "Mosquitto with TLS, passwords and a per-node ACL")
    p.add_argument("--out", help="output directory (default out/demo-<time>)")
    p.add_argument("--no-baseline", action="store_true", help="skip the full-gradient run")
    p.add_argument("--board", default=None, help="board profile for the whole-board table (default: the link's)")
    p.add_argument("--battery", default="2xaa", help="battery profile for the battery life (default 2xaa)")
    p.add_argument("--interval", type=float, default=600.0,
                   help="seconds between rounds a deployed node would keep (battery life; default 600)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aggregator.lab.pricing import profile_dict
    from aggregator.ops import flash, jobs
    from aggregator.ops.serve import host_port
    from edge.startup import transport_mismatch
    if args.nodes < 1 or args.rounds < 1:
        raise UserError("--nodes and --rounds must be >= 1")
    broker = host_port(args.broker, "--broker") if args.broker else None
    if args.profile is None:
        args.profile = flash.DEFAULT_PROFILES[args.transport]
    why = transport_mismatch(profile_dict(args.profile), args.transport)
    if why:  # each cat-edge would refuse it: say so once, before anything is laid out
        raise UserError(f"--profile: {why}{flash.profiles_hint(args.transport)}")
    out = Path(args.out or f"out/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        layout = jobs.prepare(out, args.dataset, args.nodes, args.rounds, args.scheme, args.rule,
                              args.rule_param, args.k_cap, args.profile,
                              error_feedback=not args.no_error_feedback)
    except (KeyError, ValueError, OSError) as exc:
        raise UserError(f"cannot prepare the job: {exc}") from None
    kind = "logistic" if layout.dataset.classes == 2 else "softmax"
    n, features = layout.dataset.X.shape
    d = features * (1 if kind == "logistic" else layout.dataset.classes)
    print(f"dataset {args.dataset}: {n} rows, {features} features, {layout.dataset.classes} classes "
          f"({kind}, d={d}); {args.nodes} edges, {args.rounds} rounds, {args.transport}, "
          f"profile {args.profile}; files in {out}")
    secure = SecureBroker(layout) if args.transport == "mqtt" and broker is None else None
    if secure is not None:
        print(f"MQTT: the demo's own Mosquitto on {secure.address[0]}:{secure.address[1]} with TLS, "
              f"passwords and a per-node ACL ({secure.files.out})")
    runs = [("cat", args.scheme, args.rule)] + ([] if args.no_baseline else [("gd", "identity", "identity")])
    # Each session is a job of its own on the broker: on a given broker, fresh random job ids
    # (so neither the other session nor an earlier demo run left retained messages or client
    # sessions on its topics), drawn from 256..65535, where every id is a 3-byte CBOR uint, so
    # frame sizes do not change with the draw; the demo's own broker forgets everything
    # between sessions.
    first_id = 256 + secrets.randbelow(65535 - 256) if broker is not None else None
    sessions = []
    try:
        for i, (label, scheme, rule) in enumerate(runs):
            if secure is not None and i:
                secure.restart()
            sessions.append(run_session(layout, label, scheme, rule, args.transport, broker, not args.quiet,
                                        secure, None if first_id is None else first_id + i))
    finally:
        if secure is not None:
            secure.stop()
    text = table(sessions, args.profile) + "\n" + "\n".join(
        board_lines(sessions, layout, args.profile, args.board, args.battery, args.interval))
    print(text)
    f0 = initial_loss(layout, 1e-3, kind)
    paths = plot(sessions, f0, out)
    (out / "summary.txt").write_text(text + "\n")
    (out / "curves.json").write_text(json.dumps([s.__dict__ for s in sessions], default=str))
    print(f"plot: {paths[0]}")
    return 0
