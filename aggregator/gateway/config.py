"""Job configuration: one TOML file describes a training job on a gateway.

Example (every key but [job].id, [model] and [nodes] has a default):

    [job]
    id = 1
    rounds = 30
    seed = 1
    [model]
    kind = "logistic"        # or "softmax"
    features = 30
    classes = 2
    lambda = 1e-3
    L = 0.26                 # smoothness bound (trace bound of the data; `partition` prints it)
    [training]
    scheme = "sq"            # identity | s | sq | ss
    rule = "cat"             # cat | fixed | alistarh | hybrid | identity
    rule_param = 0           # T for fixed, period S for hybrid
    k_cap = 128              # candidate cap K (RAM on the boards)
    fmt = "f32"              # f32 | f16
    step_multiplier = 1.0
    error_feedback = true
    compact = false          # compact (kind 4) updates: needed on LoRaWAN SF12 (51 B payloads)
    [cost]
    profile = "ieee802154-6lowpan-coap"
    metric = "joules"
    [rounds]
    quorum = 1.0             # fraction of the nodes (<= 1.0) or a count (> 1)
    deadline_s = 10.0
    history = 16             # deltas kept for edges that fell behind
    max_frame_bytes = 65536
    [nodes]
    1 = "<64 hex digits: the node's 32-byte key>"
    [downlink]
    key = "<64 hex digits>"
    [transports.coap]  host = "127.0.0.1"  port = 5683
    [transports.mqtt]  host = "127.0.0.1"  port = 1883
    [transports.serial] ports = ["/dev/ttyUSB0"]  baud = 115200
    [state]
    dir = "state"
    [security]               # hostile-input handling (docs/security.md)
    window_s = 60.0          # sliding window for a node's rejected frames
    rate_limit_after = 3     # distinct bad frames in the window before the node is rate-limited
    rate_limit_per_s = 0.5   # frames/s a rate-limited node may still send (burst 2)
    quarantine_after = 10    # distinct bad frames in the window -> quarantined (0: never)
    control_poll_s = 0.5     # how often a running gateway reads <state>/control/
    [aggregation]
    rule = "mean"            # mean | trimmed_mean | median (coordinate-wise, untrusted fleets)
    trim = 0.2               # trimmed_mean: fraction cut from each end per coordinate
    max_abs = 0.0            # reject updates with |value| above this (0: no bound)

Errors name the file and the field: `job.toml: training.scheme: unknown scheme 'x'`.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggregator.errors import UserError
from aggregator.gateway import wire
from edge import cat, profile as profiles


class ConfigError(UserError, ValueError):
    """A bad job config; the message names the file and the first bad field."""


@dataclass
class Transport:
    kind: str
    host: str = "127.0.0.1"
    port: int = 0
    ports: list[str] = field(default_factory=list)
    baud: int = 115200
    username: str | None = None
    password: str | None = None


@dataclass
class Security:
    """Thresholds for rate-limiting and quarantining nodes that send bad frames (docs/security.md)."""
    window_s: float = 60.0
    rate_limit_after: int = 3
    rate_limit_per_s: float = 0.5
    rate_limit_burst: int = 2
    quarantine_after: int = 10
    control_poll_s: float = 0.5


AGGREGATION_RULES = ("mean", "trimmed_mean", "median")


@dataclass
class Aggregation:
    """How a round's updates are combined: the paper's mean, or a robust coordinate-wise rule."""
    rule: str = "mean"
    trim: float = 0.2
    max_abs: float = 0.0


@dataclass
class Job:
    """A validated job: what the service, the demo and the edges' config message need."""
    path: str
    job_id: int
    rounds: int
    seed: int
    model_kind: str
    features: int
    classes: int
    lam: float
    L: float
    scheme: int
    rule: int
    rule_param: int
    k_cap: int
    fmt: int
    step_multiplier: float
    error_feedback: bool
    profile_name: str
    metric: str
    quorum: float
    deadline_s: float
    history: int
    max_frame_bytes: int
    node_keys: dict[int, bytes]
    downlink_key: bytes
    transports: dict[str, Transport]
    state_dir: Path
    profile: dict[str, Any] = field(repr=False, default_factory=dict)
    security: Security = field(default_factory=Security)
    aggregation: Aggregation = field(default_factory=Aggregation)
    compact: bool = False    # edges send compact updates (kind 4, docs/wire-format.md §3.1)

    @property
    def d(self) -> int:
        """Model dimension: features for logistic, classes x features for softmax."""
        return self.features if self.model_kind == "logistic" else self.classes * self.features

    @property
    def nodes(self) -> list[int]:
        return sorted(self.node_keys)

    def quorum_count(self) -> int:
        n = len(self.node_keys)
        if self.quorum <= 1.0:
            return max(1, math.ceil(self.quorum * n - 1e-9))
        return min(n, int(self.quorum))

    def wire_config(self) -> wire.JobConfig:
        return wire.JobConfig(
            d=self.d, scheme=self.scheme, rule=self.rule, rule_param=self.rule_param,
            k_cap=self.k_cap, fmt=self.fmt, L=self.L, step=self.step_multiplier,
            error_feedback=self.error_feedback,
            model=wire.MODEL_LOGISTIC if self.model_kind == "logistic" else wire.MODEL_SOFTMAX,
            classes=self.classes, lam=self.lam, profile=self.profile_name, metric=self.metric,
            rounds=self.rounds, seed=self.seed, compact=self.compact)


class _Reader:
    """Typed access to the TOML tree that names the file and field in every error."""

    def __init__(self, name: str, raw: dict[str, Any]) -> None:
        self.name = name
        self.raw = raw

    def fail(self, fieldname: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.name}: {fieldname}: {problem}")

    def table(self, key: str, required: bool = False) -> dict[str, Any]:
        v = self.raw.get(key)
        if v is None:
            if required:
                raise self.fail(key, "missing section")
            return {}
        if not isinstance(v, dict):
            raise self.fail(key, "must be a table")
        return v

    def get(self, sec: str, key: str, kind: type | tuple, default: Any = None, required: bool = False) -> Any:
        t = self.table(sec)
        if key not in t:
            if required:
                raise self.fail(f"{sec}.{key}", "missing")
            return default
        v = t[key]
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if isinstance(v, bool) and kind is not bool:
            raise self.fail(f"{sec}.{key}", f"must be {getattr(kind, '__name__', kind)}, got a boolean")
        if not isinstance(v, kind):
            raise self.fail(f"{sec}.{key}", f"must be {getattr(kind, '__name__', kind)}, got {v!r}")
        return v

    def positive(self, sec: str, key: str, default: float | None = None, required: bool = False) -> float:
        """A float that must be finite and > 0 (steps, L, times, rates)."""
        v = self.get(sec, key, float, default, required)
        if not (v > 0.0 and math.isfinite(v)):
            raise self.fail(f"{sec}.{key}", "must be finite and > 0")
        return v


KNOWN = {
    "job": {"id", "rounds", "seed", "name"},
    "model": {"kind", "features", "classes", "lambda", "L"},
    "training": {"scheme", "rule", "rule_param", "k_cap", "fmt", "step_multiplier", "error_feedback",
                 "compact"},
    "cost": {"profile", "metric"},
    "rounds": {"quorum", "deadline_s", "history", "max_frame_bytes"},
    "downlink": {"key"},
    "state": {"dir"},
    "security": {"window_s", "rate_limit_after", "rate_limit_per_s", "rate_limit_burst",
                 "quarantine_after", "control_poll_s"},
    "aggregation": {"rule", "trim", "max_abs"},
}


def _key(r: _Reader, fieldname: str, text: Any) -> bytes:
    if not isinstance(text, str):
        raise r.fail(fieldname, "must be a hex string")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise r.fail(fieldname, "is not hex") from None
    if len(key) != 32:
        raise r.fail(fieldname, f"must be 32 bytes (64 hex digits), got {len(key)}")
    return key


def parse_job(raw: dict[str, Any], name: str = "job.toml", base_dir: Path | None = None) -> Job:
    """Validate a job tree (as tomllib gives it); relative paths resolve against base_dir."""
    r = _Reader(name, raw)
    for sec, keys in KNOWN.items():
        for k in r.table(sec):
            if k not in keys:
                raise r.fail(f"{sec}.{k}", "unknown key")
    for sec in raw:
        if sec not in KNOWN and sec not in ("nodes", "transports"):
            raise r.fail(sec, "unknown section")
    job_id = r.get("job", "id", int, required=True)
    if not 0 <= job_id < 2**32:
        raise r.fail("job.id", "must be in 0..2**32-1")
    rounds = r.get("job", "rounds", int, 30)
    if rounds < 1:
        raise r.fail("job.rounds", "must be >= 1")
    seed = r.get("job", "seed", int, 1)
    if not 0 <= seed < 2**32:
        raise r.fail("job.seed", "must be in 0..2**32-1")
    kind = r.get("model", "kind", str, required=True)
    if kind not in ("logistic", "softmax"):
        raise r.fail("model.kind", f"unknown model {kind!r} (use logistic or softmax)")
    features = r.get("model", "features", int, required=True)
    if features < 1:
        raise r.fail("model.features", "must be >= 1")
    classes = r.get("model", "classes", int, 2)
    if classes < 2 or (kind == "logistic" and classes != 2):
        raise r.fail("model.classes", "logistic needs 2 classes, softmax at least 2")
    lam = r.get("model", "lambda", float, 1e-3)
    if not (lam >= 0.0 and math.isfinite(lam)):
        raise r.fail("model.lambda", "must be finite and >= 0")
    lip = r.positive("model", "L", required=True)
    try:
        scheme = cat.scheme_id(r.get("training", "scheme", str, "sq"))
    except ValueError as exc:
        raise r.fail("training.scheme", str(exc)) from None
    try:
        rule = cat.rule_id(r.get("training", "rule", str, "cat"))
    except ValueError as exc:
        raise r.fail("training.rule", str(exc)) from None
    rule_param = r.get("training", "rule_param", int, 0)
    if rule in (cat.RULE_FIXED, cat.RULE_HYBRID) and rule_param < 1:
        raise r.fail("training.rule_param", "fixed and hybrid rules need rule_param >= 1")
    if rule == cat.RULE_ALISTARH and scheme != cat.SCHEME_SQ:
        raise r.fail("training.rule", "alistarh is the S+Q rule: set training.scheme = 'sq'")
    if (rule == cat.RULE_IDENTITY) != (scheme == cat.SCHEME_IDENTITY):
        raise r.fail("training.rule", "rule 'identity' goes with scheme 'identity' and only with it")
    k_cap = r.get("training", "k_cap", int, 128)
    if k_cap < 1:
        raise r.fail("training.k_cap", "must be >= 1")
    fmt_name = r.get("training", "fmt", str, "f32")
    if fmt_name not in ("f32", "f16"):
        raise r.fail("training.fmt", "use f32 or f16")
    step = r.positive("training", "step_multiplier", 1.0)
    ef = r.get("training", "error_feedback", bool, False)
    compact = r.get("training", "compact", bool, False)
    prof_name = r.get("cost", "profile", str, "ieee802154-6lowpan-coap")
    try:
        prof = profiles.load_profile(prof_name)
    except (ValueError, OSError) as exc:
        raise r.fail("cost.profile", str(exc)) from None
    metric = r.get("cost", "metric", str, prof["default_metric"])
    allowed = ("bytes", "bits", "packets", "seconds", "joules") if prof["kind"] == "link" else ("bits", "bytes", "packets")
    if metric not in allowed:
        raise r.fail("cost.metric", f"{metric!r} is not defined for {prof['name']} (use {', '.join(allowed)})")
    quorum = r.get("rounds", "quorum", float, 1.0)
    if not quorum > 0:
        raise r.fail("rounds.quorum", "must be > 0")
    deadline = r.get("rounds", "deadline_s", float, 10.0)
    if not deadline > 0:
        raise r.fail("rounds.deadline_s", "must be > 0")
    history = r.get("rounds", "history", int, 16)
    if history < 1:
        raise r.fail("rounds.history", "must be >= 1")
    max_frame = r.get("rounds", "max_frame_bytes", int, 1 << 20)
    if max_frame < 64:
        raise r.fail("rounds.max_frame_bytes", "must be >= 64")
    nodes_raw = r.table("nodes", required=True)
    if not nodes_raw:
        raise r.fail("nodes", "no nodes")
    node_keys: dict[int, bytes] = {}
    for k, v in nodes_raw.items():
        try:
            nid = int(k)
        except ValueError:
            raise r.fail(f"nodes.{k}", "node ids are integers") from None
        if not 0 <= nid <= 0xFFFF:
            raise r.fail(f"nodes.{k}", "node id must be in 0..65535")
        node_keys[nid] = _key(r, f"nodes.{k}", v)
    downlink_key = _key(r, "downlink.key", r.get("downlink", "key", str, required=True))
    transports: dict[str, Transport] = {}
    for tname, t in r.table("transports").items():
        if tname not in ("coap", "mqtt", "serial"):
            raise r.fail(f"transports.{tname}", "unknown transport (use coap, mqtt or serial)")
        if not isinstance(t, dict):
            raise r.fail(f"transports.{tname}", "must be a table")
        for k in t:
            if k not in ("host", "port", "ports", "baud", "username", "password"):
                raise r.fail(f"transports.{tname}.{k}", "unknown key")
        port = t.get("port", 5683 if tname == "coap" else 1883 if tname == "mqtt" else 0)
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise r.fail(f"transports.{tname}.port", "must be a port number")
        ports = t.get("ports", [])
        if not isinstance(ports, list) or not all(isinstance(p, str) for p in ports):
            raise r.fail(f"transports.{tname}.ports", "must be a list of device paths")
        transports[tname] = Transport(tname, str(t.get("host", "127.0.0.1")), port, ports,
                                      int(t.get("baud", 115200)), t.get("username"), t.get("password"))
    state_dir = Path(r.get("state", "dir", str, "state"))
    if base_dir is not None and not state_dir.is_absolute():
        state_dir = base_dir / state_dir
    return Job(name, job_id, rounds, seed, kind, features, classes, lam, lip, scheme, rule, rule_param,
               k_cap, 1 if fmt_name == "f16" else 0, step, ef, prof["name"], metric, quorum, deadline,
               history, max_frame, node_keys, downlink_key, transports, state_dir, prof,
               _security(r), _aggregation(r), compact)


def _security(r: _Reader) -> Security:
    """[security]: all optional; the defaults suit a fleet reporting every few seconds."""
    d = Security()
    window = r.positive("security", "window_s", d.window_s)
    after = r.get("security", "rate_limit_after", int, d.rate_limit_after)
    if after < 0:
        raise r.fail("security.rate_limit_after", "must be >= 0 (0: never rate-limit)")
    rate = r.positive("security", "rate_limit_per_s", d.rate_limit_per_s)
    burst = r.get("security", "rate_limit_burst", int, d.rate_limit_burst)
    if burst < 1:
        raise r.fail("security.rate_limit_burst", "must be >= 1")
    quar = r.get("security", "quarantine_after", int, d.quarantine_after)
    if quar < 0:
        raise r.fail("security.quarantine_after", "must be >= 0 (0: never quarantine)")
    poll = r.positive("security", "control_poll_s", d.control_poll_s)
    return Security(window, after, rate, burst, quar, poll)


def _aggregation(r: _Reader) -> Aggregation:
    """[aggregation]: the combining rule; robust rules need no change on the edges."""
    rule = r.get("aggregation", "rule", str, "mean")
    if rule not in AGGREGATION_RULES:
        raise r.fail("aggregation.rule", f"unknown rule {rule!r} (use {', '.join(AGGREGATION_RULES)})")
    trim = r.get("aggregation", "trim", float, 0.2)
    if not 0.0 <= trim < 0.5:
        raise r.fail("aggregation.trim", "must be in [0, 0.5)")
    max_abs = r.get("aggregation", "max_abs", float, 0.0)
    if not (max_abs >= 0 and math.isfinite(max_abs)):
        raise r.fail("aggregation.max_abs", "must be finite and >= 0 (0: no bound)")
    return Aggregation(rule, trim, max_abs)


def load_job(path: str | Path) -> Job:
    """Read and validate a job TOML file."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p.name}: not valid TOML: {exc}") from None
    return parse_job(raw, p.name, p.parent)
