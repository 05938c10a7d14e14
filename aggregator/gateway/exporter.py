"""Prometheus metrics of a running gateway, with prometheus_client.

`serve --metrics-port PORT` (or `[metrics] port` in the job file) serves them at
http://host:port/metrics from prometheus_client's HTTP server in a daemon thread. Nothing is
counted here: a custom collector turns a LiveStatus snapshot (aggregator.gateway.live), taken
on the event loop at scrape time, into metric families, so the values are the pipeline's own
exact counters and the exporter costs nothing between scrapes.

Names follow Prometheus conventions (base units, `_total` on counters):

    cat_round, cat_rounds, cat_job_finished, cat_round_open_seconds, cat_round_pending_nodes
    cat_node_{frames,bytes,packets,duplicates}_total{node}
    cat_node_energy_joules_total{node}, cat_node_airtime_seconds_total{node}
    cat_node_last_t{node}, cat_node_last_round{node}, cat_node_quarantined{node}
    cat_node_last_seen_timestamp_seconds{node}      (nodes heard from since the gateway started)
    cat_node_rejected_total{node,reason}, cat_rejected_total{reason}   (every reason, from 0)
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from aggregator.errors import UserError
from aggregator.gateway.pipeline import ALL_REASONS

#: (NodeStats field, metric name, help) of the per-node counters.
NODE_COUNTERS = (
    ("frames", "cat_node_frames", "updates accepted from the node"),
    ("bytes", "cat_node_bytes", "bytes of the node's accepted updates (frames on the wire)"),
    ("packets", "cat_node_packets", "link packets of the node's accepted updates under the cost profile"),
    ("energy_j", "cat_node_energy_joules", "radio energy of the node's accepted updates under the cost profile"),
    ("airtime_s", "cat_node_airtime_seconds", "airtime of the node's accepted updates under the cost profile"),
    ("duplicates", "cat_node_duplicates", "duplicate updates (retransmissions, redeliveries), applied once"),
)


class MetricsBindError(UserError, OSError):
    """The metrics endpoint cannot listen on the address asked for."""


class SnapshotCollector:
    """prometheus_client collector over a function returning a LiveStatus snapshot."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot()
        yield GaugeMetricFamily("cat_round", "current round of the job (the model's version)", value=s["round"])
        yield GaugeMetricFamily("cat_rounds", "rounds the job trains", value=s["job"]["rounds"])
        yield GaugeMetricFamily("cat_job_finished", "1 once the job's last round closed", value=int(s["finished"]))
        yield GaugeMetricFamily("cat_round_open_seconds", "seconds since the current round opened",
                                value=s["round_open_s"])
        yield GaugeMetricFamily("cat_round_pending_nodes", "updates the open round holds",
                                value=len(s["pending"]))
        nodes = s["nodes"]
        for field, name, doc in NODE_COUNTERS:
            c = CounterMetricFamily(name, doc, labels=["node"])
            for nid, row in nodes.items():
                c.add_metric([nid], row[field])
            yield c
        gauges = {
            "last_t": GaugeMetricFamily("cat_node_last_t", "T (entries sent) of the node's last update", labels=["node"]),
            "last_round": GaugeMetricFamily("cat_node_last_round", "round of the node's last update (-1: none)",
                                            labels=["node"]),
        }
        seen = GaugeMetricFamily("cat_node_last_seen_timestamp_seconds",
                                 "Unix time the gateway last heard from the node (an authenticated frame)",
                                 labels=["node"])
        quarantined = GaugeMetricFamily("cat_node_quarantined", "1 while the node is quarantined", labels=["node"])
        rejected = CounterMetricFamily("cat_node_rejected", "the node's authenticated frames refused, by reason",
                                       labels=["node", "reason"])
        for nid, row in nodes.items():
            for field, g in gauges.items():
                g.add_metric([nid], row[field])
            if row["last_seen"] is not None:
                seen.add_metric([nid], row["last_seen"])
            quarantined.add_metric([nid], int(row["quarantined"] is not None))
            for reason, n in sorted(row["rejected"].items()):
                rejected.add_metric([nid, reason], n)
        yield from gauges.values()
        yield from (seen, quarantined, rejected)
        total = CounterMetricFamily("cat_rejected", "frames refused, by reason (attributed to a node or not)",
                                    labels=["reason"])
        for reason in ALL_REASONS:
            total.add_metric([reason], s["rejected"].get(reason, 0))
        yield total


class Exporter:
    """The /metrics endpoint: start() binds and serves in a daemon thread, stop() ends it."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]], host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.registry = CollectorRegistry()
        self.registry.register(SnapshotCollector(snapshot))
        self.server: WSGIServer | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> tuple[str, int]:
        """Listen; returns the bound (host, port)."""
        try:
            self.server, self.thread = start_http_server(self.port, self.host, self.registry)
        except OSError as exc:
            raise MetricsBindError(f"metrics: cannot serve on {self.host}:{self.port}: "
                                   f"{exc.strerror or exc}") from None
        host, port = self.server.server_address[:2]
        return host, port

    def stop(self, timeout: float = 5.0) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(timeout)
            self.server = self.thread = None
