"""`cat-aggregator quarantine ...` and `cat-aggregator keys ...`: operator actions on a job.

Both work against the state directory of a running or a stopped gateway. Reads (`list`)
come from the checkpoint, which the gateway rewrites whenever a node is quarantined or
cleared. Changes are queued as request files in `<state>/control/` (aggregator.gateway.keys): a
running gateway applies them within `security.control_poll_s`, a stopped one when it next
starts; `--wait S` waits until the gateway has taken the request.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from aggregator.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("quarantine", help="list, clear or add quarantined nodes")
    qs = q.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = qs.add_parser("list", help="quarantined nodes and why, plus queued requests")
    _where(p)
    p.set_defaults(func=quarantine_list)
    p = qs.add_parser("clear", help="let a quarantined node send again")
    p.add_argument("node", type=int)
    _where(p)
    _wait(p)
    p.set_defaults(func=quarantine_clear)
    p = qs.add_parser("add", help="quarantine a node by hand (e.g. a board reported stolen)")
    p.add_argument("node", type=int)
    p.add_argument("--reason", default="", help="logged and shown by `list`")
    _where(p)
    _wait(p)
    p.set_defaults(func=quarantine_add)

    k = sub.add_parser("keys", help="list or rotate the nodes' uplink keys")
    ks = k.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = ks.add_parser("list", help="key fingerprints per node, and old keys in their grace period")
    _where(p, need_job=True)
    p.set_defaults(func=keys_list)
    p = ks.add_parser("rotate", help="give a node a new key; the old one stays valid for a grace period")
    p.add_argument("node", type=int)
    _where(p, need_job=True)
    p.add_argument("--grace-rounds", type=int, default=2, metavar="N",
                   help="round closes during which the old key is still accepted (0: revoke now; default 2)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--key", metavar="HEX", help="the new 32-byte key (default: a fresh random one)")
    src.add_argument("--key-file", metavar="FILE", help="read the new key (64 hex digits) from FILE")
    p.add_argument("--key-out", metavar="FILE", help="write the new key here (mode 0600) instead of printing it")
    _wait(p)
    p.set_defaults(func=keys_rotate)


def _where(p: argparse.ArgumentParser, need_job: bool = False) -> None:
    p.add_argument("--job", metavar="JOB.toml", required=need_job, help="job file (gives the state directory)")
    p.add_argument("--state", metavar="DIR", help="state directory (overrides the job file's)")


def _wait(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds for a running gateway to apply the request")


def _state_dir(args: argparse.Namespace):
    """(job or None, state dir) from --job/--state."""
    job = None
    if args.job:
        from aggregator.gateway.config import load_job
        job = load_job(args.job)
    if args.state:
        d = Path(args.state)
    elif job is not None and job.shards:
        # each shard keeps its own nodes' state (docs/scale.md): the node's shard's directory
        shard = job.shard_of(args.node) if getattr(args, "node", None) is not None else None
        if shard is None:
            raise UserError(f"{args.job} has shards ({', '.join(job.shards)}): give --state with a shard's "
                            "state directory")
        d = job.shards[shard].state_dir
    elif job is not None:
        d = job.state_dir
    else:
        raise UserError("give --state DIR or --job JOB.toml")
    if not d.is_dir():
        raise UserError(f"{d}: no such state directory")
    return job, d


def _load_state(d: Path):
    from aggregator.gateway.state import Store
    return Store(d).load()


def _queue(args: argparse.Namespace, d: Path, op: str, node: int, what: str, **fields) -> int:
    from aggregator.gateway import keys
    req = keys.submit_request(d, op, node, **fields)
    path = keys.control_dir(d) / f"{req['id']}.json"
    if args.wait > 0:
        end = time.monotonic() + args.wait
        while path.exists() and time.monotonic() < end:
            time.sleep(0.05)
        bad = path.with_name(path.name + ".bad")
        if bad.exists():
            raise UserError(f"the gateway refused the request ({bad}); see the `control_error` event in its metrics log")
        if path.exists():
            print(f"{what}: queued as {path}; no gateway applied it within {args.wait:g} s "
                  "(it applies at the next start)")
            return 1
        print(f"{what}: applied by the gateway")
        return 0
    print(f"{what}: queued as {path} (a running gateway applies it within a second, a stopped one at its next start)")
    return 0


def _pending(d: Path, ops: tuple[str, ...]) -> list[dict]:
    from aggregator.gateway import keys
    return [r for _, r in keys.pending_requests(d) if r is not None and r["op"] in ops]


def quarantine_list(args: argparse.Namespace) -> int:
    _, d = _state_dir(args)
    st = _load_state(d)
    if st is None:
        print(f"{d}: no checkpoint yet (the gateway has not closed a round): nothing quarantined")
    elif not st.quarantined:
        print(f"no node quarantined (round {st.round})")
    else:
        print(f"round {st.round}: {len(st.quarantined)} quarantined")
        for node, why in sorted(st.quarantined.items()):
            print(f"  node {node}: {why}")
    for r in _pending(d, ("clear", "quarantine")):
        print(f"  queued: {r['op']} node {r['node']} ({r['id']})")
    return 0


def quarantine_clear(args: argparse.Namespace) -> int:
    job, d = _state_dir(args)
    if job is not None and args.node not in job.node_keys:
        raise UserError(f"node {args.node} is not in {args.job}")
    st = _load_state(d)
    if st is not None and args.node not in st.quarantined:
        print(f"note: node {args.node} is not quarantined in the last checkpoint (round {st.round})")
    return _queue(args, d, "clear", args.node, f"clear node {args.node}")


def quarantine_add(args: argparse.Namespace) -> int:
    job, d = _state_dir(args)
    if job is not None and args.node not in job.node_keys:
        raise UserError(f"node {args.node} is not in {args.job}")
    return _queue(args, d, "quarantine", args.node, f"quarantine node {args.node}", reason=args.reason)


def keys_list(args: argparse.Namespace) -> int:
    from aggregator.gateway import keys
    job, d = _state_dir(args)
    st = _load_state(d)
    rnd = st.round if st is not None else 0
    ring = keys.Keyring(job.node_keys, d)       # KeyringError is a UserError: one line
    print(f"round {rnd}")
    for row in ring.describe(rnd):
        old = "; ".join(f"{o['fingerprint']} {o['state']} (until round {o['until']})" for o in row["old"])
        print(f"  node {row['node']}: {row['current']} since round {row['since']} [{row['source']}]"
              + (f"; old: {old}" if old else ""))
    for note in ring.load_notes:
        print(f"  note: {note}")
    for r in _pending(d, ("rotate",)):
        print(f"  queued: rotate node {r['node']} ({r['id']}), grace {r.get('grace_rounds')} rounds")
    return 0


def _read_key(args: argparse.Namespace) -> bytes:
    from aggregator.gateway import keys
    if args.key_file:
        where = args.key_file
        try:
            text = Path(args.key_file).read_text().strip()
        except OSError as exc:
            raise UserError(f"{args.key_file}: {exc.strerror}") from None
    elif args.key:
        where, text = "--key", args.key.strip()
    else:
        return keys.new_key()
    try:
        return keys.parse_key(text)
    except keys.KeyFormatError as exc:
        raise UserError(f"{where}: {exc}") from None


def keys_rotate(args: argparse.Namespace) -> int:
    from aggregator.gateway import keys
    job, d = _state_dir(args)
    if args.node not in job.node_keys:
        raise UserError(f"node {args.node} is not in {args.job}")
    if args.grace_rounds < 0:
        raise UserError("--grace-rounds must be >= 0")
    key = _read_key(args)
    if args.key_out:
        out = Path(args.key_out)
        keys.atomic_write(out, (key.hex() + "\n").encode())
        print(f"node {args.node}: new key written to {out} (fingerprint {keys.fingerprint(key)})")
    elif not (args.key or args.key_file):
        print(f"node {args.node}: new key {key.hex()} (fingerprint {keys.fingerprint(key)})")
        print("  provision it on the device; it is not shown again")
    print(f"  the old key is accepted for {args.grace_rounds} more round close(s) after the gateway applies this")
    return _queue(args, d, "rotate", args.node, f"rotate key of node {args.node}",
                  key=key.hex(), grace_rounds=args.grace_rounds)
