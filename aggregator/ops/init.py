"""`cat-aggregator init DIR`: lay out a deployment, the first step after `pip install`.

Writes, under DIR (made 0700):

    job.toml          the job: every node's key and the downlink key (0600)
    node-<k>.toml     a Raspberry Pi edge's config: `cat-edge --config node-<k>.toml` (0600)
    node-<k>.json     a board's node.json, as `cat-aggregator flash` writes it (0600)
    data/             node-<k>.catd per node and partition.json (0700)
    state/            the gateway's state directory (0700)

from a built-in data set or a LIBSVM/CSV file, for N nodes (ids 0..N-1) or a list of ids;
with --broker-config DIR also a locked-down Mosquitto (as `broker-config`) whose
credentials go into the node configs. It refuses to replace an existing job without
--force, because new keys lock the old edges out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from aggregator.errors import UserError

DEFAULT_PORTS = {"coap": 5683, "mqtt": 1883}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="lay out a job: keys, job TOML, node configs (Pi TOML, board JSON), data")
    p.add_argument("dir", metavar="DIR", help="directory for the job (made 0700)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--nodes", type=int, help="number of edges, node ids 0..N-1 (default 4)")
    who.add_argument("--node-ids", metavar="ID,ID,...", help="these node ids (0..65535), comma-separated")
    p.add_argument("--dataset", default="breast_cancer", metavar="NAME|FILE",
                   help="built-in set (breast_cancer, digits, digits-binary, iris, wine), a LIBSVM file, "
                        "or a CSV file (.csv: numbers, the label in the last column, optional header)")
    p.add_argument("--split", choices=("even", "skewed"), default="even",
                   help="rows per node: even (i.i.d.) or skewed (label skew, Dirichlet 0.5)")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--scheme", default="sq", help="s, sq or ss")
    p.add_argument("--rule", default="catavg", help="catavg (default), cat, fixed, alistarh or hybrid")
    p.add_argument("--rule-param", type=int, default=0)
    p.add_argument("--k-cap", type=int, default=16, help="candidate cap K (board RAM)")
    p.add_argument("--profile", default=None,
                   help="cost profile of the edges' link; it must price --transport (default: "
                        "ieee802154-6lowpan-coap for coap, wifi-tcp-mqtt-esp32 for mqtt)")
    p.add_argument("--job-id", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quorum", type=float, default=1.0, help="fraction (<= 1) or count of nodes a round waits for")
    p.add_argument("--deadline", type=float, default=10.0, metavar="S", help="a round closes after S seconds")
    p.add_argument("--transport", choices=("coap", "mqtt"), default="coap")
    p.add_argument("--gateway", metavar="HOST[:PORT]", default="127.0.0.1",
                   help="CoAP: the address the gateway serves and the edges reach; MQTT: the broker's "
                        "(default 127.0.0.1, port 5683 / 1883, 8883 with --tls)")
    p.add_argument("--broker-config", metavar="DIR",
                   help="with --transport mqtt: also write a Mosquitto config with per-node credentials and "
                        "ACL into DIR (as `broker-config`), and each node's credentials into its configs")
    p.add_argument("--tls", action="store_true", help="with --broker-config: TLS only, under a private CA")
    p.add_argument("--force", action="store_true",
                   help="replace a job already in DIR (new keys; its state directory is kept as state.old-<time>)")
    p.set_defaults(func=run)


def _ids(args: argparse.Namespace) -> int | list[int]:
    if args.node_ids is None:
        return 4 if args.nodes is None else args.nodes
    try:
        return [int(t) for t in args.node_ids.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--node-ids: expected comma-separated integers, got {args.node_ids!r}") from None


def _existing(root: Path) -> list[Path]:
    """The files of a job already laid out in root."""
    return [*root.glob("job.toml"), *sorted(root.glob("node-*.toml")), *sorted(root.glob("node-*.json")),
            *sorted(root.glob("data/node-*.catd")), *root.glob("data/partition.json")]


def _clear(root: Path, state_dir: Path) -> Path | None:
    """Remove the old job's files; move its state directory aside (it holds the trained model)."""
    for p in _existing(root):
        p.unlink()
    if state_dir.is_dir() and any(state_dir.iterdir()):
        kept = state_dir.with_name(f"{state_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        state_dir.rename(kept)
        return kept
    return None


def run(args: argparse.Namespace) -> int:
    from aggregator.ops import broker, flash, jobs
    from aggregator.gateway.keys import atomic_write

    root = Path(args.dir)
    if args.broker_config and args.transport != "mqtt":
        raise UserError("--broker-config needs --transport mqtt")
    if args.tls and not args.broker_config:
        raise UserError("--tls goes with --broker-config (the broker's TLS listener)")
    old = _existing(root) if root.is_dir() else []
    if old and not args.force:
        raise UserError(f"{root} already holds a job ({old[0].name}, ...): pass --force to replace it "
                        "(new keys: the old edges stop working)")
    host, port = flash.split_host_port(args.gateway, 8883 if args.tls else DEFAULT_PORTS[args.transport])
    if args.profile is None:
        args.profile = flash.DEFAULT_PROFILES[args.transport]
    try:
        plan = jobs.plan(root, args.dataset, _ids(args), args.rounds, args.scheme, args.rule, args.rule_param,
                         args.k_cap, args.profile, job_id=args.job_id, seed=args.seed, quorum=args.quorum,
                         deadline_s=args.deadline, split=args.split,
                         transports={args.transport: {"host": host, "port": port}},
                         node_extra={"transport": args.transport, "host": host, "port": port})
    except (KeyError, ValueError, OSError) as exc:
        raise UserError(f"cannot lay out the job: {exc}") from None
    from edge.startup import transport_mismatch
    why = transport_mismatch(plan.job.profile, args.transport)
    if why:  # before anything is written or an old job cleared: its nodes would all be refused
        raise UserError(f"--profile: {why}{flash.profiles_hint(args.transport)}")
    try:
        kept = _clear(root, plan.job.state_dir) if old else None
        layout = jobs.write(plan)
        for k in plan.ids:
            cfg = flash.node_config(layout.job, k, f"node-{k}.catd", args.transport, host, port)
            atomic_write(root / f"node-{k}.json", flash.board_json(cfg).encode())
    except OSError as exc:
        raise UserError(f"{root}: cannot write the job: {exc.strerror or exc}") from None
    ds = layout.dataset
    ids = ", ".join(map(str, plan.ids)) if len(plan.ids) <= 8 else f"{plan.ids[0]} ... {plan.ids[-1]}"
    print(f"job {layout.job.job_id} in {root}: {len(plan.ids)} nodes ({ids}), dataset {ds.name}: "
          f"{ds.X.shape[0]} rows, d = {ds.X.shape[1]}, {ds.classes} classes, L = {layout.L:.4g}")
    print(f"  job.toml (every key, 0600); node-<k>.toml for cat-edge, node-<k>.json for a board; "
          f"data/node-<k>.catd; state/")
    if kept is not None:
        print(f"  the old job's state directory is now {kept}")
    if args.broker_config:
        try:
            res = broker.write_broker_config(layout.job, args.broker_config, (host, port), args.tls,
                                             node_configs=layout.node_configs)
        except OSError as exc:
            raise UserError(f"--broker-config {args.broker_config}: {exc}") from None
        broker.report(res, layout.job_path, [], layout.node_configs)
    else:
        print(f"run the gateway:  cat-aggregator serve {layout.job_path}")
    k = plan.ids[0]
    print(f"run an edge:      cat-edge --config {layout.node_configs[k]}      (a Raspberry Pi)")
    print(f"                  cat-aggregator flash {layout.job_path} --node {k} --data {layout.data_files[k]} "
          f"--device PORT      (a MicroPython board)")
    return 0
