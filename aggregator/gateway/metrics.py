"""Metrics as JSON lines: one event per accepted, duplicate or rejected frame and per round.

A JSON-lines file is what operators grep, tail and load into pandas; the `profile` command
and the demo's table read it back. Each line carries a wall-clock timestamp.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterator


class MetricsLog:
    """Append-only JSON-lines log (line-buffered, so a crash loses at most a partial line).

    `listeners` get every event as it is written (aggregator.gateway.live notes from them when
    each node was last heard from)."""

    def __init__(self, path: str | Path | None = None, stream: IO[str] | None = None) -> None:
        self.path = Path(path) if path else None
        self._fh = open(self.path, "a", buffering=1) if self.path else stream
        self.counts: dict[str, int] = {}
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    def write(self, event: dict[str, Any]) -> None:
        kind = event.get("event", "?")
        self.counts[kind] = self.counts.get(kind, 0) + 1
        for fn in self.listeners:
            fn(event)
        if self._fh is not None:
            self._fh.write(json.dumps({"t": round(time.time(), 6), **event}, sort_keys=True) + "\n")

    def close(self) -> None:
        if self.path and self._fh:
            self._fh.close()
            self._fh = None


def read_log(path: str | Path) -> Iterator[dict[str, Any]]:
    """Events of a metrics log, skipping a torn last line."""
    with open(path) as fh:
        for line in fh:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def format_summary(summary: dict[str, Any]) -> str:
    """A fixed-width table of the per-node counters (what `serve` prints on exit)."""
    rows = ["node  frames     bytes  packets  airtime_s   energy_mJ  last_T  dup  rejected"]
    for nid, ns in summary["nodes"].items():
        rej = sum(ns["rejected"].values())
        rows.append(f"{nid:>4}  {ns['frames']:>6}  {ns['bytes']:>8}  {ns['packets']:>7}  "
                    f"{ns['airtime_s']:>9.3f}  {ns['energy_j'] * 1e3:>10.3f}  {ns['last_t']:>6}  "
                    f"{ns['duplicates']:>3}  {rej:>8}")
    if summary["rejected"]:
        rows.append("rejected by reason: " + ", ".join(f"{k}={v}" for k, v in sorted(summary["rejected"].items())))
    rows.append(f"round: {summary['round']}")
    return "\n".join(rows)
