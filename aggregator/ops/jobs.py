"""Lay out a job on disk: partitioned node data, keys, the job TOML and one config per edge.

Used by `cat-aggregator init`, the demo, the tests and operators trying the system on one
machine. Keys are fresh random 32-byte keys (secrets.token_bytes); the job file holds them
all in hex, each node's config file only its own key and the gateway's downlink key. So
every file that holds a key is written 0600 (atomically, never briefly readable by others)
and every directory made here is 0700, the state directory included.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import tomli_w

from aggregator.gateway.config import NODE_IDS, Job, parse_job
from aggregator.gateway.keys import atomic_write
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
    job: Job


def private_dir(path: Path) -> Path:
    """Make path (and its parents) and leave it 0700: the job's directories hold keys."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_toml(path: Path, tree: dict[str, Any], header: str = "") -> None:
    """A TOML file only its owner can read (tomli-w; `header` is a leading comment block)."""
    atomic_write(path, (header + tomli_w.dumps(tree)).encode())


def node_ids(nodes: int | Sequence[int]) -> list[int]:
    """0..n-1 for a count, else the given ids (each in 0..65535, no repeats)."""
    if isinstance(nodes, int):
        if nodes < 1:
            raise ValueError(f"need at least one node, got {nodes}")
        ids = list(range(nodes))
    else:
        ids = [int(k) for k in nodes]
        if not ids:
            raise ValueError("need at least one node id")
    bad = [k for k in ids if k not in NODE_IDS]
    if bad:
        raise ValueError(f"node id {bad[0]} is outside 0..65535")
    if len(set(ids)) != len(ids):
        raise ValueError(f"node id {next(k for k in ids if ids.count(k) > 1)} is given twice")
    return ids


def node_endpoint(job: Job, node: int) -> dict:
    """transport, host and port of node's gateway for its cat-edge config: in a sharded job
    its shard's CoAP endpoint if the shard serves CoAP, else its broker."""
    for transport in ("coap", "mqtt"):
        ep = job.endpoint(node, transport)
        if ep is not None:
            return {"transport": transport, "host": ep[0], "port": ep[1]}
    return {}


@dataclass
class Plan:
    """A job checked and ready to write: what plan() decided, before anything is on disk."""
    root: Path
    ids: list[int]
    dataset: datasets.Dataset
    parts: list[tuple]
    tree: dict[str, Any]
    keys: dict[int, bytes]
    downlink: bytes
    job: Job
    L: float
    node_extra: dict[str, Any]


def plan(root: str | Path, dataset: "str | datasets.Dataset" = "breast_cancer", nodes: int | Sequence[int] = 4, rounds: int = 30,
         scheme: str = "sq", rule: str = "catavg", rule_param: int = 0, k_cap: int = 16,
         profile: str = "ieee802154-6lowpan-coap", metric: str | None = None,
         error_feedback: bool = True, lam: float = 1e-3, job_id: int = 1, seed: int = 1,
         quorum: float = 1.0, deadline_s: float = 10.0, split: str = "even",
         transports: dict | None = None, step_multiplier: float = 1.0, compact: bool = False,
         node_extra: dict[str, Any] | None = None, shards: dict[str, dict] | None = None) -> Plan:
    """Load and partition `dataset` (a built-in name, a LIBSVM or a CSV file) over `nodes`
    edges (a count, or a list of node ids), make the keys and check the whole job as the
    gateway reads it. Raises ValueError (data, ids) or ConfigError (the job); writes nothing.
    node_extra: keys added to every node's cat-edge config (transport, host, port).
    shards ({name: {"nodes": [...], "coap": "host:port", ...}}, the keys of a [shards.<name>]
    table but "key") makes a sharded job: each shard gets a fresh key, and each node's config
    names its shard's endpoint (CoAP if the shard serves it, else MQTT; docs/scale.md)."""
    root = Path(root)
    ids = node_ids(nodes)
    ds = dataset if isinstance(dataset, datasets.Dataset) else datasets.load(dataset)
    kind = "logistic" if ds.classes == 2 else "softmax"
    parts = datasets.partition(ds.X, ds.y, len(ids), split, seed)
    lip = float(datasets.smoothness_np(ds.X, lam, kind))
    keys = {k: secrets.token_bytes(32) for k in ids}
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
    job = parse_job(tree, "job.toml", root)
    return Plan(root, ids, ds, parts, tree, keys, downlink, job, lip, dict(node_extra or {}))


def write(p: Plan) -> Layout:
    """Write a planned job: data/ (node-<k>.catd, partition.json), job.toml, node-<k>.toml
    and the state directory, directories 0700 and key files 0600."""
    private_dir(p.root)
    data_dir = private_dir(p.root / "data")
    datasets.write_partition(data_dir, p.parts, p.dataset.classes, ids=p.ids)
    private_dir(p.job.state_dir)
    job_path = p.root / "job.toml"
    write_toml(job_path, p.tree)
    configs: dict[int, Path] = {}
    files: dict[int, Path] = {}
    for k in p.ids:
        # absolute: cat-edge reads the path as given, from wherever it runs
        files[k] = (data_dir / f"node-{k}.catd").resolve()
        node_cfg = {"node": k, "key": p.keys[k].hex(), "downlink_key": p.downlink.hex(),
                    "job": p.job.job_id, "data": str(files[k]), "profile": p.tree["cost"]["profile"],
                    **p.node_extra, **(node_endpoint(p.job, k) if p.job.shards else {})}
        configs[k] = p.root / f"node-{k}.toml"
        write_toml(configs[k], node_cfg)
    return Layout(p.root, job_path, configs, files, p.dataset, p.L, p.job)


def prepare(root: str | Path, *args: Any, **kwargs: Any) -> Layout:
    """plan() then write(): the demo's and the tests' one call (same arguments as plan)."""
    return write(plan(root, *args, **kwargs))
