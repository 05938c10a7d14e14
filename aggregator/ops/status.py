"""`cat-aggregator status --state DIR`: watch a gateway's job while it runs.

Reads `<state>/status.json`, which the gateway rewrites every second, after each round close
and when it stops (aggregator.gateway.live): round, each node's last-seen time, last T,
bytes, packets and energy, rejections by reason, quarantine. By default the view is redrawn
every --interval seconds (on a terminal in place, otherwise one block per refresh) until the
job finishes, the gateway stops, or the file goes stale (a gateway killed without stopping:
exit code 1); --once shows one snapshot. A state directory without a status file is shown
from its checkpoint (counters and quarantine; no last-seen times).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from aggregator.errors import UserError
from aggregator.ops.admin import _state_dir, _where

#: The file is stale when it is older than this many heartbeats (and at least STALE_MIN_S).
STALE_HEARTBEATS = 5
STALE_MIN_S = 5.0
CLEAR = "\x1b[H\x1b[J"   # cursor home, clear to the end of the screen (ANSI)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="round, nodes, bytes, energy, rejections and quarantine of a running job")
    _where(p)
    p.add_argument("--once", action="store_true", help="show one snapshot and exit")
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between refreshes (default 1)")
    p.set_defaults(func=run)


def _ago(t: float | None, now: float) -> str:
    return "-" if t is None else f"{max(0.0, now - t):.1f} s"


def format_status(doc: dict[str, Any], now: float) -> str:
    """The status view of one snapshot (a status.json document, or one made from a checkpoint)."""
    job = doc.get("job")
    lines = []
    if job:
        lines.append(f"job {job['id']}: {job['kind']}, d={job['d']}, {len(job['nodes'])} nodes, "
                     f"quorum {job['quorum']}, deadline {job['deadline_s']:g} s, profile {job['profile']}")
        where = f"round {doc['round']} of {job['rounds']}"
        if doc["finished"]:
            where += ": finished"
        else:
            where += (f" (open {doc['round_open_s']:.1f} s; {len(doc['pending'])} of {job['quorum']} "
                      f"updates in" + (f": nodes {', '.join(map(str, doc['pending']))})" if doc["pending"] else ")"))
    else:
        where = f"round {doc['round']}"
    gw = {"running": f"gateway running (pid {doc.get('pid')}), updated {_ago(doc.get('updated'), now)} ago",
          "stopped": f"gateway stopped {_ago(doc.get('updated'), now)} ago",
          "checkpoint": "from the checkpoint (no status file)"}[doc["state"]]
    lines.append(f"{where}; {gw}")
    if doc.get("metrics"):
        host, port = doc["metrics"]
        lines.append(f"Prometheus metrics: http://{host}:{port}/metrics")
    lines.append(f"{'node':>4}  {'last seen':>9}  {'last_round':>10}  {'last_T':>6}  {'frames':>6}  {'bytes':>9}  "
                 f"{'packets':>7}  {'energy_mJ':>10}  {'dup':>4}  {'rejected':>8}")
    for nid, ns in doc["nodes"].items():
        rej = sum(ns["rejected"].values())
        row = (f"{nid:>4}  {_ago(ns['last_seen'], now):>9}  {ns['last_round']:>10}  {ns['last_t']:>6}  "
               f"{ns['frames']:>6}  {ns['bytes']:>9}  {ns['packets']:>7}  {ns['energy_j'] * 1e3:>10.3f}  "
               f"{ns['duplicates']:>4}  {rej:>8}")
        if ns["quarantined"] is not None:
            row += f"  QUARANTINED: {ns['quarantined']}"
        lines.append(row)
    if doc["rejected"]:
        lines.append("rejected by reason: " + ", ".join(f"{k}={v}" for k, v in sorted(doc["rejected"].items())))
    else:
        lines.append("rejected: none")
    if doc["quarantined"]:
        lines.append("quarantined: " + ", ".join(f"node {k}" for k in doc["quarantined"]))
    return "\n".join(lines)


def from_checkpoint(d: Path) -> dict[str, Any]:
    """A status document from the state's checkpoint (a stopped gateway without status.json)."""
    from aggregator.gateway.live import node_rows
    from aggregator.gateway.state import Store
    st = Store(d).load()
    if st is None:
        raise UserError(f"{d}: neither a status file nor a checkpoint: no gateway has run on this state directory")
    return {"state": "checkpoint", "job": None, "round": st.round, "finished": False,
            "nodes": node_rows(st, [], {}), "rejected": st.rejected,
            "quarantined": {str(k): v for k, v in st.quarantined.items()}}


def stale(doc: dict[str, Any], now: float) -> bool:
    """True when a 'running' gateway has not rewritten the file for several heartbeats."""
    limit = max(STALE_MIN_S, STALE_HEARTBEATS * doc.get("heartbeat_s", 1.0))
    return doc["state"] == "running" and now - doc["updated"] > limit


def run(args: argparse.Namespace) -> int:
    from aggregator.gateway.live import NoStatusFileError, read_status
    if not args.interval > 0:
        raise UserError("--interval must be > 0")
    _, d = _state_dir(args)
    try:
        doc = read_status(d)
    except NoStatusFileError:
        print(format_status(from_checkpoint(d), time.time()))
        return 0
    tty = sys.stdout.isatty()
    first = True
    while True:
        now = time.time()
        if tty:
            sys.stdout.write(CLEAR)
        elif not first:
            print()
        first = False
        print(format_status(doc, now), flush=True)
        if args.once or doc["state"] != "running" or doc["finished"]:
            return 0
        if stale(doc, now):
            print(f"no update from the gateway for {now - doc['updated']:.0f} s: it stopped without "
                  "saying so (killed?) or is stuck", flush=True)
            return 1
        time.sleep(args.interval)
        doc = read_status(d)
