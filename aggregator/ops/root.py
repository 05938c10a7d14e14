"""`cat-aggregator root JOB.toml`: run the root of a job with [shards] (docs/scale.md).

The root talks only MQTT: partials in from the shards on `cat/<job>/partial/+`, config,
model and deltas out, on the job's [transports.mqtt] broker (or --mqtt).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aggregator.errors import UserError
from aggregator.ops.serve import add_mqtt_options, host_port, mqtt_security


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("root", help="run the root of a sharded job: combine the shards' partials, publish the model")
    p.add_argument("job", help="job TOML file with [shards]")
    p.add_argument("--mqtt", metavar="HOST:PORT", help="the broker (overrides the job file's [transports.mqtt])")
    p.add_argument("--state", metavar="DIR", help="state directory (overrides the job file's [state] dir)")
    p.add_argument("--log", metavar="FILE", help="metrics JSON-lines file (default: <state>/metrics.jsonl)")
    add_mqtt_options(p)
    p.add_argument("--linger", metavar="S", type=float, help="keep running S seconds after the last round (0.5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aggregator.gateway.config import load_job
    from aggregator.gateway.metrics import format_summary
    from aggregator.gateway.service import Endpoints, endpoints_from_job, serve

    job = load_job(args.job)
    if not job.shards:
        raise UserError(f"{args.job} has no [shards]: one gateway serves it (`cat-aggregator serve`)")
    if args.state:
        job.state_dir = Path(args.state)
    full = endpoints_from_job(job)
    ep = Endpoints(mqtt=host_port(args.mqtt, "--mqtt") if args.mqtt else full.mqtt, mqtt_auth=full.mqtt_auth)
    mqtt_security(args, ep)
    agg = serve(job, ep, Path(args.log) if args.log else None, args.linger, root=True)
    summary = agg.summary()
    print(format_summary(summary))
    for name, counters in summary["shards"].items():
        print(f"shard {name}: " + ", ".join(f"{k}={v}" for k, v in sorted(counters.items())))
    return 0
