"""Lay out a job on disk: partitioned node data, keys, the job TOML and one config per edge.

Used by the demo, the tests and operators trying the system on one machine. Keys are fresh
random 32-byte keys (secrets.token_bytes); the job file holds them in hex, each node's
config file only its own key and the gateway's downlink key.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from aggregator.gateway.config import load_job, toml_value
from aggregator.lab import datasets


@dataclass
class Layout:
    """Where prepare() put things."""
    root: Path
    job_path: Path
    node_configs: dict[int, Path]
    data_files: dict[int, Path]
    dataset: datasets.Dataset
    L: float


def node_endpoint(job, node: int) -> dict:
    """transport, host and port of node's gateway for its cat-edge config: in a sharded job
    its shard's CoAP endpoint if the shard serves CoAP, else its broker."""
    for transport in ("coap", "mqtt"):
        ep = job.endpoint(node, transport)
        if ep is not None:
            return {"transport": transport, "host": ep[0], "port": ep[1]}
    return {}


def dump_toml(tree: dict) -> str:
    """Enough TOML for job files: nested tables of scalars and lists."""
    lines: list[str] = []

    def table(prefix: str, d: dict) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        subs = {k: v for k, v in d.items() if isinstance(v, dict)}
        if prefix and scalars:
            lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            key = k if k.replace("_", "").isalnum() else json.dumps(k)
            lines.append(f"{key} = {toml_value(v)}")
        if prefix and scalars:
            lines.append("")
        for k, v in subs.items():
            table(f"{prefix}.{k}" if prefix else k, v)

    table("", tree)
    return "\n".join(lines) + "\n"


def prepare(root: str | Path, dataset: "str | datasets.Dataset" = "breast_cancer", nodes: int = 4, rounds: int = 30,
            scheme: str = "sq", rule: str = "cat", rule_param: int = 0, k_cap: int = 16,
            profile: str = "ieee802154-6lowpan-coap", metric: str | None = None,
            error_feedback: bool = True, lam: float = 1e-3, job_id: int = 1, seed: int = 1,
            quorum: float = 1.0, deadline_s: float = 10.0, split: str = "even",
            transports: dict | None = None, step_multiplier: float = 1.0, compact: bool = False,
            shards: dict[str, dict] | None = None) -> Layout:
    """Partition `dataset` (a builtin name, a LIBSVM file or a Dataset) over `nodes` edges and
    write job.toml + node-<k>.toml under root.

    `shards` ({name: {"nodes": [...], "coap": "host:port", ...}}, the keys of a [shards.<name>]
    table but "key") makes a sharded job: each shard gets a fresh key, and each node's config
    names its shard's endpoint (transport, host, port: CoAP if the shard serves it, else MQTT)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if isinstance(dataset, datasets.Dataset):
        ds = dataset
    else:
        ds = datasets.load_builtin(dataset) if not Path(dataset).exists() else datasets.load_libsvm(dataset, normalize=True)
    kind = "logistic" if ds.classes == 2 else "softmax"
    parts = datasets.partition(ds.X, ds.y, nodes, split, seed)
    datasets.write_partition(root / "data", parts, ds.classes)
    lip = float(datasets.smoothness_np(ds.X, lam, kind))
    keys = {k: secrets.token_bytes(32) for k in range(nodes)}
    downlink = secrets.token_bytes(32)
    tree: dict = {
        "job": {"id": job_id, "rounds": rounds, "seed": seed},
        "model": {"kind": kind, "features": int(ds.X.shape[1]), "classes": int(ds.classes),
                  "lambda": lam, "L": lip},
        "training": {"scheme": scheme, "rule": rule, "rule_param": rule_param, "k_cap": k_cap,
                     "error_feedback": error_feedback, "step_multiplier": step_multiplier,
                     **({"compact": True} if compact else {})},
        "cost": {"profile": profile, **({"metric": metric} if metric else {})},
        "rounds": {"quorum": quorum, "deadline_s": deadline_s},
        "nodes": {str(k): v.hex() for k, v in keys.items()},
        "downlink": {"key": downlink.hex()},
        "state": {"dir": "state"},
    }
    if transports:
        tree["transports"] = transports
    if shards:
        tree["shards"] = {name: {**spec, "key": secrets.token_bytes(32).hex()} for name, spec in shards.items()}
    job_path = root / "job.toml"
    job_path.write_text(dump_toml(tree))
    job = load_job(job_path) if shards else None
    configs: dict[int, Path] = {}
    files: dict[int, Path] = {}
    for k in range(nodes):
        files[k] = root / "data" / f"node-{k}.catd"
        node_cfg = {"node": k, "key": keys[k].hex(), "downlink_key": downlink.hex(), "job": job_id,
                    "data": str(files[k]), "profile": profile}
        if job is not None:
            node_cfg.update(node_endpoint(job, k))
        configs[k] = root / f"node-{k}.toml"
        configs[k].write_text(dump_toml(node_cfg))
    return Layout(root, job_path, configs, files, ds, lip)
