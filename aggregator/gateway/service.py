"""The gateway service: one Aggregator, the transports that feed it, and the round clock.

asyncio runs the pipeline on one thread; paho-mqtt and pyserial have their own reader
threads that hand frames over with call_soon_threadsafe, and aiocoap lives on the loop.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field
from pathlib import Path

from aggregator.gateway.config import Job
from aggregator.gateway.journal import JournalError
from aggregator.gateway.live import LiveStatus
from aggregator.gateway.metrics import MetricsLog
from aggregator.gateway.pipeline import Aggregator, RoundClose
from aggregator.gateway.state import Store


@dataclass
class Endpoints:
    """What to serve on; a port of 0 for CoAP means "pick a free one" (tests, the demo)."""
    coap: tuple[str, int] | None = None
    mqtt: tuple[str, int] | None = None
    mqtt_auth: tuple[str, str] | None = None
    mqtt_tls: dict | None = None
    serial: list[tuple[str, int]] = field(default_factory=list)
    metrics: tuple[str, int] | None = None    # Prometheus /metrics (aggregator.gateway.exporter)


def endpoints_from_job(job: Job, shard: str | None = None) -> Endpoints:
    """What the job file says to serve on; with `shard`, that shard's endpoints (its CoAP,
    serial devices and broker) and the job's MQTT credentials."""
    ep = Endpoints()
    if shard is not None:
        sh = job.shards[shard]
        t = job.transports["mqtt"]
        ep.coap = sh.coap
        ep.mqtt = sh.mqtt or (t.host, t.port)
        ep.mqtt_auth = (t.username, t.password or "") if t.username is not None else None
        baud = job.transports["serial"].baud if "serial" in job.transports else 115200
        ep.serial = [(p, baud) for p in sh.serial]
        return ep
    for name, t in job.transports.items():
        if name == "coap":
            ep.coap = (t.host, t.port)
        elif name == "mqtt":
            ep.mqtt = (t.host, t.port)
            if t.username is not None:
                ep.mqtt_auth = (t.username, t.password or "")
        elif name == "serial":
            ep.serial = [(p, t.baud) for p in t.ports]
    if job.metrics_port:
        ep.metrics = (job.metrics_host, job.metrics_port)
    return ep


class Service:
    """One process of a deployment: a gateway (default), a shard of a sharded job (`shard`),
    or its root (`root`; MQTT only). docs/scale.md explains shards and the root."""

    def __init__(self, job: Job, endpoints: Endpoints, log_path: Path | None = None,
                 stop_when_finished: bool = True, linger_s: float | None = None,
                 shard: str | None = None, root: bool = False) -> None:
        self.job = job
        self.endpoints = endpoints
        state_dir = job.shards[shard].state_dir if shard is not None else job.state_dir
        self.store = Store(state_dir)
        self.log = MetricsLog(log_path or state_dir / "metrics.jsonl")
        self.shard = shard
        self.root = root
        if root:
            from aggregator.gateway.root import Root
            self.agg = Root(job, self.store, self.log)
        elif shard is not None:
            from aggregator.gateway.shard import Shard
            self.agg = Shard(job, shard, self.store, self.log)
        else:
            self.agg = Aggregator(job, self.store, self.log)
        self.stop_when_finished = stop_when_finished
        # After the last round, keep answering for a while: a CoAP edge whose request for the
        # final config was lost retransmits after ACK_TIMEOUT (2 s) and again after 4 s.
        self.linger_s = linger_s if linger_s is not None else (10.0 if endpoints.coap else 0.5)
        self.started = asyncio.Event()     # set once every endpoint is bound
        self.stopped = asyncio.Event()
        self.fronts: list = []
        self.coap = None
        self.round_events: asyncio.Queue[RoundClose] = asyncio.Queue()
        self.agg.listeners.append(self.round_events.put_nowait)
        self.coap_port: int | None = None
        # <state>/status.json for `cat-aggregator status`, and the Prometheus exporter
        self.live = LiveStatus(self.agg, state_dir)      # a shard's own directory, not the root's
        self.log.listeners.append(self.live.on_event)
        self.agg.listeners.append(self.live.on_close)
        self.exporter = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        replayed = self.agg.recover()
        if replayed:
            self.log.write({"event": "recovered", "round": self.agg.state.round, "frames": replayed})
        loop = self.loop = asyncio.get_running_loop()
        self.store.journal.start(loop, self.job.batch_frames, self.job.batch_ms / 1000.0)
        ep = self.endpoints
        if ep.metrics is not None:       # first: a port in use fails before any front is up
            from aggregator.gateway.exporter import Exporter
            self.exporter = Exporter(self.snapshot_threadsafe, *ep.metrics)
            self.live.metrics_address = self.exporter.start()
            self.log.write({"event": "metrics_http", "host": self.live.metrics_address[0],
                            "port": self.live.metrics_address[1]})
        if ep.coap is not None:
            from aggregator.gateway.coap_front import CoapFront
            self.coap = CoapFront(self.agg, *ep.coap)
            await self.coap.start()
            self.coap_port = ep.coap[1]
        if ep.mqtt is not None:
            from aggregator.gateway.mqtt_front import MqttFront
            from aggregator.gateway.mqtt_roles import RootFront, ShardLink
            user, pw = ep.mqtt_auth or (None, None)
            front = RootFront if self.root else ShardLink if self.shard is not None else MqttFront
            m = front(self.agg, ep.mqtt[0], ep.mqtt[1], loop, user, pw, ep.mqtt_tls)
            await loop.run_in_executor(None, m.start)
            self.fronts.append(m)
        for port, baud in ep.serial:
            from aggregator.gateway.serial_front import SerialFront
            s = SerialFront(self.agg, port, baud, loop)
            s.start()
            self.fronts.append(s)
        self.log.write({"event": "start", "round": self.agg.state.round, "job": self.job.job_id,
                        **({"shard": self.shard} if self.shard is not None else {}),
                        **({"root": True} if self.root else {})})
        self.live.write()
        self.started.set()

    def snapshot_threadsafe(self, timeout: float = 5.0) -> dict:
        """A LiveStatus snapshot from another thread (the exporter's): taken on the event loop,
        since the pipeline is not thread-safe; waits at most timeout seconds for the loop."""

        async def take() -> dict:
            return self.live.snapshot()

        return asyncio.run_coroutine_threadsafe(take(), self.loop).result(timeout)

    async def run(self, tick: float = 0.05) -> None:
        """Serve until stop() or, by default, until the job's last round closed."""
        await self.start()
        try:
            while not self.stopped.is_set():
                failed = self.store.journal.failed
                if failed is not None:          # write or fsync failed: stop, let the supervisor restart
                    raise JournalError(f"journal write failed in {self.store.dir}: "
                                       f"{getattr(failed, 'strerror', None) or failed}")
                self.agg.tick()
                self.live.tick()
                if self.stop_when_finished and self.agg.finished:
                    await asyncio.sleep(self.linger_s)   # let edges fetch the final config/model
                    break
                try:
                    await asyncio.wait_for(self.stopped.wait(), tick)
                except asyncio.TimeoutError:
                    pass
        finally:
            await self.shutdown()

    def stop(self) -> None:
        self.stopped.set()

    async def shutdown(self) -> None:
        if self.exporter is not None:
            self.exporter.stop()
            self.exporter = None
        for f in self.fronts:
            f.stop()
        self.fronts = []
        if self.coap is not None:
            await self.coap.stop()
            self.coap = None
        try:
            self.agg.checkpoint()             # the counters since the last round close survive a stop
        except JournalError as exc:           # nothing after the failed batch was acknowledged
            self.log.write({"event": "journal_error", "error": str(exc)[:300]})
        try:
            self.store.journal.stop()         # closes the file and the worker even after a failure
        except JournalError:
            pass
        self.log.write({"event": "stop", "round": self.agg.state.round})
        self.live.write("stopped")
        self.log.close()


def serve(job: Job, endpoints: Endpoints, log_path: Path | None = None, linger_s: float | None = None,
          shard: str | None = None, root: bool = False) -> Aggregator:
    """Blocking entry point for `cat-aggregator serve` and `root`: SIGINT/SIGTERM stop cleanly."""

    async def main() -> Aggregator:
        svc = Service(job, endpoints, log_path, linger_s=linger_s, shard=shard, root=root)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, svc.stop)
        await svc.run()
        return svc.agg

    return asyncio.run(main())
