"""`cat-aggregator serve JOB.toml [--shard NAME]`: run the gateway (or one shard) of a job."""

from __future__ import annotations

import argparse
from pathlib import Path

from aggregator.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the gateway service for a job (MQTT, CoAP, serial)")
    p.add_argument("job", help="job TOML file")
    p.add_argument("--coap", metavar="HOST:PORT", help="serve CoAP here (overrides the job file)")
    p.add_argument("--mqtt", metavar="HOST:PORT", help="connect to this MQTT broker (overrides the job file)")
    p.add_argument("--serial", metavar="PORT", action="append", default=[], help="serial port of a board (repeatable)")
    p.add_argument("--state", metavar="DIR", help="state directory (overrides the job file)")
    p.add_argument("--log", metavar="FILE", help="metrics JSON-lines file (default: <state>/metrics.jsonl)")
    p.add_argument("--shard", metavar="NAME", help="run this shard of a job with [shards] (docs/scale.md)")
    add_mqtt_options(p)
    p.add_argument("--metrics-port", metavar="PORT", type=int,
                   help="serve Prometheus metrics on http://<[metrics] host>:PORT/metrics "
                        "(overrides the job file's [metrics] port; 0: off)")
    p.add_argument("--linger", metavar="S", type=float,
                   help="keep serving S seconds after the last round (default 10 with CoAP, else 0.5)")
    p.set_defaults(func=run)


def add_mqtt_options(p: argparse.ArgumentParser) -> None:
    """Credentials and TLS of the process's MQTT client (serve and root)."""
    p.add_argument("--mqtt-username", metavar="USER", help="MQTT username (overrides the job file)")
    p.add_argument("--mqtt-password-file", metavar="FILE",
                   help="file holding the MQTT password (a file, not an argument, so `ps` does not show it)")
    p.add_argument("--mqtt-cafile", metavar="FILE", help="connect with TLS and verify the broker against this CA")
    p.add_argument("--mqtt-certfile", metavar="FILE", help="TLS client certificate (brokers that require one)")
    p.add_argument("--mqtt-keyfile", metavar="FILE", help="key of the TLS client certificate")


def host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UserError(f"{what}: expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def mqtt_security(args: argparse.Namespace, ep) -> None:
    """Credentials and TLS for the gateway's MQTT client (docs/deployment.md)."""
    if args.mqtt_password_file and not args.mqtt_username and ep.mqtt_auth is None:
        raise UserError("--mqtt-password-file needs --mqtt-username (or [transports.mqtt] username)")
    if args.mqtt_username or args.mqtt_password_file:
        user = args.mqtt_username or ep.mqtt_auth[0]
        password = ep.mqtt_auth[1] if ep.mqtt_auth else ""
        if args.mqtt_password_file:
            try:
                password = Path(args.mqtt_password_file).read_text().strip()
            except OSError as exc:
                raise UserError(f"--mqtt-password-file: {exc}") from None
        ep.mqtt_auth = (user, password)
    if args.mqtt_certfile and not args.mqtt_cafile:
        raise UserError("--mqtt-certfile needs --mqtt-cafile (TLS)")
    if args.mqtt_cafile:
        tls = {"ca_certs": args.mqtt_cafile}
        if args.mqtt_certfile:
            tls.update(certfile=args.mqtt_certfile, keyfile=args.mqtt_keyfile)
        flags = {"ca_certs": "--mqtt-cafile", "certfile": "--mqtt-certfile", "keyfile": "--mqtt-keyfile"}
        for what, path in tls.items():
            if path and not Path(path).is_file():
                raise UserError(f"{flags[what]}: {path}: no such file")
        ep.mqtt_tls = tls


def run(args: argparse.Namespace) -> int:
    from aggregator.gateway.config import load_job
    from aggregator.gateway.metrics import format_summary
    from aggregator.gateway.service import endpoints_from_job, serve

    job = load_job(args.job)
    shard = args.shard
    if shard is None and job.shards:
        raise UserError(f"{args.job} has shards ({', '.join(job.shards)}): run `serve --shard NAME` for each "
                        "and `cat-aggregator root` once")
    if shard is not None and shard not in job.shards:
        raise UserError(f"--shard: {args.job} has no shard {shard!r}"
                        + (f" (known: {', '.join(job.shards)})" if job.shards else " (no [shards] at all)"))
    if args.state:
        if shard is not None:
            job.shards[shard].state_dir = Path(args.state)
        else:
            job.state_dir = Path(args.state)
    ep = endpoints_from_job(job, shard)
    if args.coap:
        ep.coap = host_port(args.coap, "--coap")
    if args.mqtt:
        ep.mqtt = host_port(args.mqtt, "--mqtt")
    if args.serial:
        ep.serial = [(p, 115200) for p in args.serial]
    if args.metrics_port is not None:
        if not 0 <= args.metrics_port <= 65535:
            raise UserError(f"--metrics-port: {args.metrics_port} is not a port number (0: off)")
        ep.metrics = (job.metrics_host, args.metrics_port) if args.metrics_port else None
    mqtt_security(args, ep)
    if ep.coap is None and ep.mqtt is None and not ep.serial:
        raise UserError(f"{args.job}: no transport: add [transports.coap], [transports.mqtt] or use --coap/--mqtt/--serial")
    agg = serve(job, ep, Path(args.log) if args.log else None, args.linger, shard=shard)
    print(format_summary(agg.summary()))
    return 0
