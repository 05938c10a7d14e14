"""`cat-aggregator serve JOB.toml`: run the gateway service for one job."""

from __future__ import annotations

import argparse
from pathlib import Path

from aggregator.cli import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the gateway service for a job (MQTT, CoAP, serial)")
    p.add_argument("job", help="job TOML file")
    p.add_argument("--coap", metavar="HOST:PORT", help="serve CoAP here (overrides the job file)")
    p.add_argument("--mqtt", metavar="HOST:PORT", help="connect to this MQTT broker (overrides the job file)")
    p.add_argument("--serial", metavar="PORT", action="append", default=[], help="serial port of a board (repeatable)")
    p.add_argument("--state", metavar="DIR", help="state directory (overrides the job file)")
    p.add_argument("--log", metavar="FILE", help="metrics JSON-lines file (default: <state>/metrics.jsonl)")
    p.set_defaults(func=run)


def host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UserError(f"{what}: expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def run(args: argparse.Namespace) -> int:
    from aggregator.config import load_job
    from aggregator.metrics import format_summary
    from aggregator.service import endpoints_from_job, serve

    job = load_job(args.job)
    if args.state:
        job.state_dir = Path(args.state)
    ep = endpoints_from_job(job)
    if args.coap:
        ep.coap = host_port(args.coap, "--coap")
    if args.mqtt:
        ep.mqtt = host_port(args.mqtt, "--mqtt")
    if args.serial:
        ep.serial = [(p, 115200) for p in args.serial]
    if ep.coap is None and ep.mqtt is None and not ep.serial:
        raise UserError(f"{args.job}: no transport: add [transports.coap], [transports.mqtt] or use --coap/--mqtt/--serial")
    agg = serve(job, ep, Path(args.log) if args.log else None)
    print(format_summary(agg.summary()))
    return 0
