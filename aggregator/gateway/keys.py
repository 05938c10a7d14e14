"""Per-node uplink keys with rotation, and the operator's control queue in the state directory.

Keys. The job file's `[nodes]` table holds each node's first key. `cat-aggregator keys
rotate` gives a node a new key without stopping the job: the new key is accepted at once,
the old one while the gateway's round is below `until` (the round the rotation was applied
in plus the grace period), then refused as `key_expired`. A few retired keys are kept so
that a frame MACed with one is reported as `key_expired` (the device missed its new key)
rather than `bad_mac` (noise or forgery), and so that frames journaled before a rotation
still replay after a crash. The rotated keys live in `<state>/keyring.json` (mode 0600,
written atomically by the gateway only); for a node it lists, it overrides the job file,
unless the job file's key for that node changed since (the operator re-provisioned it).

Control queue. The CLI never writes the gateway's state: it drops a request file into
`<state>/control/` (atomic rename, mode 0600, directory 0700) and a running gateway applies
it within `security.control_poll_s`; a stopped one applies it when it next starts. Requests
carry an id, so applying one twice (a crash between applying and deleting it) is harmless.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from aggregator.errors import UserError
from aggregator.gateway import wire

KEYRING = "keyring.json"
CONTROL = "control"
RETIRED_KEPT = 2          # expired keys kept per node (for `key_expired` and journal replay)

OK = "ok"                 # verified under the current key or one still in its grace period
EXPIRED = "expired"       # verified only under a key whose grace period is over
BAD = "bad"               # verified under no key kept for the node

KEY_BYTES = 32            # HMAC 256/64 keys (docs/wire-format.md §1)


class KeyringError(UserError, ValueError):
    """keyring.json cannot be read, or a rotation the operator asked for cannot be made."""


class KeyFormatError(UserError, ValueError):
    """A key that is not 64 hex digits; the message says what is wrong, the caller says where."""


def parse_key(text: object) -> bytes:
    """A 32-byte key from its hex form: the one reader for the job file's [nodes] and
    [downlink], `keys rotate --key/--key-file`, control requests and keyring.json."""
    if not isinstance(text, str):
        raise KeyFormatError("must be a hex string")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise KeyFormatError("is not hex") from None
    if len(key) != KEY_BYTES:
        raise KeyFormatError(f"must be {KEY_BYTES} bytes ({2 * KEY_BYTES} hex digits), got {len(key)}")
    return key


def fingerprint(key: bytes) -> str:
    """A short public name for a key (for logs and `keys list`; reveals nothing usable)."""
    return hashlib.sha256(b"cat-iot key fingerprint" + key).hexdigest()[:16]


@dataclass
class KeyEntry:
    key: bytes = field(repr=False)
    since: int = 0            # round the key became valid
    until: int | None = None  # accepted while round < until; None: the current key
    rid: str = ""             # id of the rotation request that made it current
    _mac: object = field(default=None, repr=False, compare=False)  # key schedule done once

    def mac(self, payload: bytes, aad: bytes = b"") -> bytes:
        """HMAC 256/64 tag of payload with external AAD aad, as the wire format defines it
        (RFC 9052 §6.3), from a key schedule prepared once: only the MAC_structure's prefix
        and the payload are hashed."""
        if self._mac is None:
            self._mac = hmac.new(self.key, digestmod=hashlib.sha256)
        h = self._mac.copy()
        h.update(wire.mac_input_prefix(len(payload), aad))
        h.update(payload)
        return h.digest()[:wire.TAG_LEN]

    def to_json(self) -> dict:
        return {"key": self.key.hex(), "since": self.since, "until": self.until, "id": self.rid}


class Keyring:
    """Which keys authenticate which node, at which round."""

    def __init__(self, base: dict[int, bytes], state_dir: Path | None = None) -> None:
        self.base = dict(base)
        self.path = Path(state_dir) / KEYRING if state_dir is not None else None
        self.entries: dict[int, list[KeyEntry]] = {n: [KeyEntry(k, 0)] for n, k in base.items()}
        self.bases: dict[int, str] = {}    # node -> fingerprint of the job-file key rotated away from
        self.load_notes: list[str] = []
        if self.path is not None and self.path.exists():
            self._load()

    # ------------------------------------------------------------------ persistence
    def _load(self) -> None:
        try:
            raw = json.loads(self.path.read_text())
            nodes = raw["nodes"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyringError(f"{self.path}: unreadable keyring ({exc})") from None
        for text, rec in nodes.items():
            nid = int(text)
            if nid not in self.base:
                self.load_notes.append(f"node {nid} is not in the job any more; its rotated keys are ignored")
                continue
            if rec.get("base") != fingerprint(self.base[nid]):
                self.load_notes.append(f"node {nid}: the job file has a new key; rotated keys are dropped")
                continue
            try:
                ents = [KeyEntry(parse_key(e["key"]), int(e["since"]), e["until"], e.get("id", ""))
                        for e in rec["keys"]]
            except (KeyError, TypeError, ValueError) as exc:
                raise KeyringError(f"{self.path}: node {nid}: malformed key list ({exc})") from None
            if not ents or ents[0].until is not None:
                raise KeyringError(f"{self.path}: node {nid}: malformed key list")
            self.entries[nid] = ents
            self.bases[nid] = rec["base"]

    def save(self) -> None:
        """Atomically rewrite keyring.json (0600): only the nodes that were rotated."""
        if self.path is None:
            return
        nodes = {str(n): {"base": self.bases[n], "keys": [e.to_json() for e in self.entries[n]]}
                 for n in sorted(self.bases)}
        data = json.dumps({"version": 1, "nodes": nodes}, indent=1, sort_keys=True).encode()
        atomic_write(self.path, data)

    # ------------------------------------------------------------------ use
    def current(self, node: int) -> bytes:
        return self.entries[node][0].key

    def verify(self, node: int, payload: bytes, tag: bytes, rnd: int,
               any_kept: bool = False, aad: bytes = b"") -> tuple[str, bytes | None]:
        """(OK, key) if tag verifies under a key valid at round rnd; (EXPIRED, key) if only under
        an expired one (or OK for it when any_kept: journal replay of frames accepted earlier);
        (BAD, None) otherwise. Constant-time comparisons; at most 1 + grace + RETIRED_KEPT MACs."""
        ents = self.entries.get(node)
        if not ents:
            return BAD, None
        for e in ents:
            if hmac.compare_digest(e.mac(payload, aad), tag):
                if e.until is None or rnd < e.until or any_kept:
                    return OK, e.key
                return EXPIRED, e.key
        return BAD, None

    def has_rotation(self, rid: str) -> bool:
        return any(e.rid == rid for ents in self.entries.values() for e in ents)

    def rotate(self, node: int, key: bytes, rnd: int, grace_rounds: int, rid: str) -> None:
        """Make key current from round rnd; the previous current key stays valid while
        round < rnd + grace_rounds. Older retired keys beyond RETIRED_KEPT are forgotten."""
        if node not in self.entries:
            raise KeyError(f"node {node} is not in the job")
        if len(key) != KEY_BYTES:
            raise ValueError(f"keys are {KEY_BYTES} bytes")
        if grace_rounds < 0:
            raise ValueError("grace_rounds must be >= 0")
        ents = self.entries[node]
        if any(hmac.compare_digest(e.key, key) for e in ents):
            raise KeyringError(f"node {node}: that key was already used; a rotation needs a fresh key")
        old = ents[0]
        old.until = rnd + grace_rounds
        for e in ents[1:]:
            if e.until is not None and e.until > rnd:
                e.until = rnd          # only the latest old key gets a grace period
        self.bases.setdefault(node, fingerprint(self.base[node]))
        live = [e for e in ents if e.until is not None and e.until > rnd]
        dead = [e for e in ents if e.until is not None and e.until <= rnd][:RETIRED_KEPT]
        self.entries[node] = [KeyEntry(key, rnd, None, rid)] + live + dead

    def describe(self, rnd: int) -> list[dict]:
        """Per node: current key fingerprint and the old keys with their state at round rnd."""
        rows = []
        for n in sorted(self.entries):
            ents = self.entries[n]
            rows.append({"node": n, "current": fingerprint(ents[0].key), "since": ents[0].since,
                         "source": "keyring" if n in self.bases else "job file",
                         "old": [{"fingerprint": fingerprint(e.key), "until": e.until,
                                  "state": "grace" if rnd < (e.until or 0) else "expired"}
                                 for e in ents[1:]]})
        return rows


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


# ---------------------------------------------------------------------- files

def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write data to path so that a reader sees the old file or the whole new one, never a
    part (temporary file, fsync, rename, fsync of the directory); mode 0600: keys live here."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


OPS = ("rotate", "clear", "quarantine")


def control_dir(state_dir: Path) -> Path:
    return Path(state_dir) / CONTROL


def submit_request(state_dir: Path, op: str, node: int, **fields: object) -> dict:
    """Queue one operator request for the gateway of state_dir; return it (with its id)."""
    if op not in OPS:
        raise ValueError(f"unknown control op {op!r}")
    cdir = control_dir(state_dir)
    cdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    rid = f"{time.time_ns():020d}-{secrets.token_hex(4)}"
    req = {"id": rid, "op": op, "node": int(node), "at": time.time(),
           "by": os.environ.get("USER", ""), **fields}
    atomic_write(cdir / f"{rid}.json", json.dumps(req, sort_keys=True).encode())
    return req


def pending_requests(state_dir: Path) -> Iterator[tuple[Path, dict | None]]:
    """Queued requests in submission order; (path, None) for a file that is not a valid request."""
    cdir = control_dir(state_dir)
    try:
        names = sorted(p for p in os.listdir(cdir) if p.endswith(".json") and not p.startswith("."))
    except FileNotFoundError:
        return
    for name in names:
        path = cdir / name
        try:
            req = json.loads(path.read_bytes()[:1 << 16])
        except FileNotFoundError:
            continue                    # applied and removed meanwhile
        except (OSError, ValueError):
            req = None
        ok = (isinstance(req, dict) and req.get("op") in OPS and type(req.get("node")) is int
              and isinstance(req.get("id"), str))
        yield path, (req if ok else None)
