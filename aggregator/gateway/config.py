"""Job configuration: one TOML file describes a training job on a gateway.

Every key is described once, in KEYS below (section, key, TOML type, default, meaning, check);
parsing, unknown-key detection, the defaults and this example are all read from it
(`example_toml()` prints it; tests/test_config.py holds this copy equal to it). Every key
not marked required has a default, and the example shows it:

    [job]
    id = 1                             # required: job id on the wire, 0..2**32-1
    rounds = 30                        # rounds to train
    seed = 1                           # seed of the edges' random choices, 0..2**32-1
    name = "demo"                      # a label for people; the gateway does not use it
    [model]
    kind = "logistic"                  # required: logistic | softmax
    features = 30                      # required: features per example
    classes = 2                        # 2 for logistic, >= 2 for softmax
    lambda = 0.001                     # L2 regularisation
    L = 0.26                           # required: smoothness bound of the data (`partition` prints it)
    [training]
    scheme = "sq"                      # identity | s | sq | ss
    rule = "catavg"                    # cat | fixed | alistarh | hybrid | identity | catavg
    rule_param = 0                     # T for fixed, period S for hybrid, node count for catavg (0: [nodes])
    k_cap = 128                        # candidate cap K (RAM on the boards)
    fmt = "f32"                        # f32 | f16
    step_multiplier = 1.0              # step = step_multiplier / L
    error_feedback = false             # edges keep what they did not send (on for label-skewed data)
    compact = false                    # compact (kind 4) updates: LoRaWAN SF12's 51 B payloads
    [cost]
    profile = "ieee802154-6lowpan-coap"  # cost profile (cost_profiles/)
    metric = "joules"                  # bytes | bits | packets | seconds | joules (default: the profile's)
    [rounds]
    quorum = 1.0                       # fraction of the nodes (<= 1.0) or a count (> 1)
    deadline_s = 10.0                  # s from a round's start until it closes with the updates it has
    history = 16                       # deltas kept for edges that fell behind
    shard_deadline = 0.8               # [shards]: a shard sends its partial at this fraction of deadline_s
    max_frame_bytes = 1048576          # frames above this are refused unparsed (>= 64)
    [nodes]
    1 = "<64 hex digits>"              # required: node id (0..65535) = its 32-byte key
    [downlink]
    key = "<64 hex digits>"            # required: the gateway's 32-byte key for config, model, deltas
    [transports.coap]
    host = "127.0.0.1"                 # address to bind (CoAP) or of the broker (MQTT)
    port = 5683                        # CoAP 5683, MQTT 1883
    [transports.mqtt]
    host = "127.0.0.1"                 # address to bind (CoAP) or of the broker (MQTT)
    port = 1883                        # CoAP 5683, MQTT 1883
    [transports.serial]
    ports = ["/dev/ttyUSB0"]           # serial devices of boards
    baud = 115200                      # serial line rate
    [state]
    dir = "state"                      # checkpoint, journals, keyring (relative: to the job file)
    batch_frames = 64                  # journal group commit: one fsync per this many frames ...
    batch_ms = 2.0                     # ... or once the batch's first frame waited this long, ms
    [security]
    window_s = 60.0                    # sliding window for a node's rejected frames, s
    rate_limit_after = 3               # strikes in the window before rate-limiting (0: never)
    rate_limit_per_s = 0.5             # frames/s a rate-limited node may still send
    rate_limit_burst = 2               # burst of a rate-limited node
    quarantine_after = 10              # strikes in the window before quarantine (0: never)
    control_poll_s = 0.5               # how often a running gateway reads <state>/control/, s
    [aggregation]
    rule = "mean"                      # mean | trimmed_mean | median
    trim = 0.2                         # trimmed_mean: fraction cut from each end per coordinate
    max_abs = 0.0                      # refuse updates with |value| above this (0: no bound)
    [metrics]
    host = "127.0.0.1"                 # address of the Prometheus endpoint (0.0.0.0: every interface)
    port = 0                           # serve Prometheus metrics on http://host:port/metrics (0: off)

[transports.*] also take username and password (MQTT). docs/security.md explains [security]
and [aggregation]. A fleet of several sites splits its nodes over shards, one table each
(SHARD_KEYS; docs/scale.md):

    [shards.north]
    nodes = [0, 1, "2-99"]             # node ids and ranges this shard owns (each node in one shard)
    key = "<64 hex digits>"            # the shard's key for its partials to the root
    coap = "192.0.2.10:5683"           # where it serves CoAP ("": no CoAP)
    mqtt = ""                          # its broker ("": [transports.mqtt], which the root uses)
    serial = []                        # serial devices of its boards
    state = ""                         # its state directory ("": state-<name>)

Errors name the file and the field:
`job.toml: training.scheme: unknown scheme 'x' (use identity, S, SQ or SS)`.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import tomli_w

from aggregator.errors import UserError
from aggregator.gateway import keys as keymod
from aggregator.gateway import robust, wire
from edge import cat, profile as profiles


class ConfigError(UserError, ValueError):
    """A bad job config; the message names the file and the first bad field."""


def _alternatives(names: Any) -> str:
    """'a, b or c'."""
    names = list(names)
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()   # default of a key the file must give

#: A key's reader: gets the TOML value (type already checked) and the values read so far
#: (by "section.key"), returns the value to keep, raises ValueError(problem) to refuse it.
Read = Callable[[Any, dict[str, Any]], Any]


@dataclass(frozen=True)
class Key:
    """One key of the job file."""
    section: str
    name: str
    kind: type                  # TOML type: int, float (ints accepted), str, bool, list
    default: Any                # REQUIRED, or what an absent key means (None: see doc)
    doc: str                    # unit and meaning: the comment in the documented example
    read: Read | None = None    # check and convert
    attr: str | None = None     # attribute of Job (or of Security / Aggregation) it fills
    wire: str | None = None     # field of the config message (wire.CONFIG_FIELDS) it feeds
    example: Any = None         # shown in the example instead of the default

    @property
    def path(self) -> str:
        return f"{self.section}.{self.name}"


# ------------------------------------------------------------------ checks (readers)

def _check(ok: Callable[[Any], bool], problem: str) -> Read:
    def read(v: Any, got: dict[str, Any]) -> Any:
        if not ok(v):
            raise ValueError(problem)
        return v
    return read


_UINT32 = _check(lambda v: 0 <= v < 2**32, "must be in 0..2**32-1")
_POSITIVE = _check(lambda v: v > 0.0 and math.isfinite(v), "must be finite and > 0")


def _at_least(n: int, note: str = "") -> Read:
    return _check(lambda v: v >= n, f"must be >= {n}{note}")


def _one_of(names: tuple[str, ...], what: str) -> Read:
    def read(v: str, got: dict[str, Any]) -> str:
        if v not in names:
            raise ValueError(f"unknown {what} {v!r} (use {', '.join(names)})")
        return v
    return read


MODEL_KINDS = {"logistic": wire.MODEL_LOGISTIC, "softmax": wire.MODEL_SOFTMAX}
FORMATS = {"f32": wire.FMT_F32, "f16": wire.FMT_F16}


def _model_kind(v: str, got: dict[str, Any]) -> str:
    if v not in MODEL_KINDS:
        raise ValueError(f"unknown model {v!r} (use {_alternatives(MODEL_KINDS)})")
    return v


def _classes(v: int, got: dict[str, Any]) -> int:
    if v < 2 or (got["model.kind"] == "logistic" and v != 2):
        raise ValueError("logistic needs 2 classes, softmax at least 2")
    return v


def _scheme(v: str, got: dict[str, Any]) -> int:
    return cat.scheme_id(v)                 # ValueError names the schemes


def _rule(v: str, got: dict[str, Any]) -> int:
    rule, scheme = cat.rule_id(v), got["training.scheme"]
    if rule == cat.RULE_ALISTARH and scheme != cat.SCHEME_SQ:
        raise ValueError("alistarh is the S+Q rule: set training.scheme = 'sq'")
    if (rule == cat.RULE_IDENTITY) != (scheme == cat.SCHEME_IDENTITY):
        raise ValueError("rule 'identity' goes with scheme 'identity' and only with it")
    return rule


def _rule_param(v: int, got: dict[str, Any]) -> int:
    if got["training.rule"] in (cat.RULE_FIXED, cat.RULE_HYBRID) and v < 1:
        raise ValueError("fixed and hybrid rules need rule_param >= 1")
    if v < 0:
        raise ValueError("rule_param must be >= 0")
    return v


def _fmt(v: str, got: dict[str, Any]) -> int:
    if v not in FORMATS:
        raise ValueError(f"use {_alternatives(FORMATS)}")
    return FORMATS[v]


def _profile(v: str, got: dict[str, Any]) -> dict[str, Any]:
    try:
        return profiles.load_profile(v)
    except OSError as exc:
        raise ValueError(str(exc)) from None


def _metric(v: str | None, got: dict[str, Any]) -> str:
    prof = got["cost.profile"]
    if v is None:
        return prof["default_metric"]
    allowed = profiles.LINK_METRICS if prof["kind"] == "link" else profiles.PAPER_METRICS
    if v not in allowed:
        raise ValueError(f"{v!r} is not defined for {prof['name']} (use {', '.join(allowed)})")
    return v


def _key(v: str, got: dict[str, Any]) -> bytes:
    return keymod.parse_key(v)              # KeyFormatError is a ValueError


# ------------------------------------------------------------------ the description

#: Every key of the job file, in the order they are read (and errors are found).
KEYS: tuple[Key, ...] = (
    Key("job", "id", int, REQUIRED, "job id on the wire, 0..2**32-1",
        read=_UINT32, attr="job_id", example=1),
    Key("job", "rounds", int, 30, "rounds to train",
        read=_at_least(1), attr="rounds", wire="rounds"),
    Key("job", "seed", int, 1, "seed of the edges' random choices, 0..2**32-1",
        read=_UINT32, attr="seed", wire="seed"),
    Key("job", "name", str, None, "a label for people; the gateway does not use it",
        example="demo"),
    Key("model", "kind", str, REQUIRED, " | ".join(MODEL_KINDS),
        read=_model_kind, attr="model_kind", wire="model", example="logistic"),
    Key("model", "features", int, REQUIRED, "features per example",
        read=_at_least(1), attr="features", example=30),
    Key("model", "classes", int, 2, "2 for logistic, >= 2 for softmax",
        read=_classes, attr="classes", wire="classes"),
    Key("model", "lambda", float, 1e-3, "L2 regularisation",
        read=_check(lambda v: v >= 0.0 and math.isfinite(v), "must be finite and >= 0"), attr="lam", wire="lam"),
    Key("model", "L", float, REQUIRED, "smoothness bound of the data (`partition` prints it)",
        read=_POSITIVE, attr="L", wire="L", example=0.26),
    Key("training", "scheme", str, "sq", " | ".join(cat.SCHEME_NAMES),
        read=_scheme, attr="scheme", wire="scheme"),
    Key("training", "rule", str, "catavg", " | ".join(cat.RULE_NAMES),
        read=_rule, attr="rule", wire="rule"),
    Key("training", "rule_param", int, 0, "T for fixed, period S for hybrid, node count for catavg (0: [nodes])",
        read=_rule_param, attr="rule_param", wire="rule_param"),
    Key("training", "k_cap", int, 128, "candidate cap K (RAM on the boards)",
        read=_at_least(1), attr="k_cap", wire="k_cap"),
    Key("training", "fmt", str, "f32", " | ".join(FORMATS),
        read=_fmt, attr="fmt", wire="fmt"),
    Key("training", "step_multiplier", float, 1.0, "step = step_multiplier / L",
        read=_POSITIVE, attr="step_multiplier", wire="step"),
    Key("training", "error_feedback", bool, False, "edges keep what they did not send (on for label-skewed data)",
        attr="error_feedback", wire="error_feedback"),
    Key("training", "compact", bool, False, "compact (kind 4) updates: LoRaWAN SF12's 51 B payloads",
        attr="compact", wire="compact"),
    Key("cost", "profile", str, "ieee802154-6lowpan-coap", "cost profile (cost_profiles/)",
        read=_profile, attr="profile", wire="profile"),
    Key("cost", "metric", str, None, " | ".join(profiles.LINK_METRICS) + " (default: the profile's)",
        read=_metric, attr="metric", wire="metric", example="joules"),
    Key("rounds", "quorum", float, 1.0, "fraction of the nodes (<= 1.0) or a count (> 1)",
        read=_check(lambda v: v > 0 and math.isfinite(v), "must be > 0 and finite"), attr="quorum"),
    Key("rounds", "deadline_s", float, 10.0, "s from a round's start until it closes with the updates it has",
        read=_check(lambda v: v > 0, "must be > 0"), attr="deadline_s"),
    Key("rounds", "history", int, 16, "deltas kept for edges that fell behind",
        read=_at_least(1), attr="history"),
    Key("rounds", "shard_deadline", float, 0.8, "[shards]: a shard sends its partial at this fraction of deadline_s",
        read=_check(lambda v: 0.0 < v <= 1.0, "must be in (0, 1]"), attr="shard_deadline"),
    Key("rounds", "max_frame_bytes", int, 1 << 20, "frames above this are refused unparsed (>= 64)",
        read=_at_least(64), attr="max_frame_bytes"),
    Key("downlink", "key", str, REQUIRED, "the gateway's 32-byte key for config, model, deltas",
        read=_key, attr="downlink_key", example="<64 hex digits>"),
    Key("state", "dir", str, "state", "checkpoint, journals, keyring (relative: to the job file)",
        read=lambda v, got: Path(v), attr="state_dir"),
    Key("state", "batch_frames", int, 64, "journal group commit: one fsync per this many frames ...",
        read=_at_least(1), attr="batch_frames"),
    Key("state", "batch_ms", float, 2.0, "... or once the batch's first frame waited this long, ms",
        read=_check(lambda v: 0.0 <= v <= 1000.0 and math.isfinite(v), "must be in 0..1000 ms"),
        attr="batch_ms"),
    Key("security", "window_s", float, 60.0, "sliding window for a node's rejected frames, s",
        read=_POSITIVE, attr="window_s"),
    Key("security", "rate_limit_after", int, 3, "strikes in the window before rate-limiting (0: never)",
        read=_at_least(0, " (0: never rate-limit)"), attr="rate_limit_after"),
    Key("security", "rate_limit_per_s", float, 0.5, "frames/s a rate-limited node may still send",
        read=_POSITIVE, attr="rate_limit_per_s"),
    Key("security", "rate_limit_burst", int, 2, "burst of a rate-limited node",
        read=_at_least(1), attr="rate_limit_burst"),
    Key("security", "quarantine_after", int, 10, "strikes in the window before quarantine (0: never)",
        read=_at_least(0, " (0: never quarantine)"), attr="quarantine_after"),
    Key("security", "control_poll_s", float, 0.5, "how often a running gateway reads <state>/control/, s",
        read=_POSITIVE, attr="control_poll_s"),
    Key("aggregation", "rule", str, "mean", " | ".join(robust.RULES),
        read=_one_of(robust.RULES, "rule"), attr="rule"),
    Key("aggregation", "trim", float, 0.2, "trimmed_mean: fraction cut from each end per coordinate",
        read=_check(lambda v: 0.0 <= v < 0.5, "must be in [0, 0.5)"), attr="trim"),
    Key("aggregation", "max_abs", float, 0.0, "refuse updates with |value| above this (0: no bound)",
        read=_check(lambda v: v >= 0 and math.isfinite(v), "must be finite and >= 0 (0: no bound)"),
        attr="max_abs"),
    Key("metrics", "host", str, "127.0.0.1", "address of the Prometheus endpoint (0.0.0.0: every interface)",
        attr="metrics_host"),
    Key("metrics", "port", int, 0, "serve Prometheus metrics on http://host:port/metrics (0: off)",
        read=_check(lambda v: 0 <= v <= 65535, "must be a port number (0: off)"), attr="metrics_port"),
)

#: [nodes]: node id -> key; node ids are the table's keys, so it has no fixed keys.
NODE_IDS = range(0x10000)
NODES_DOC = "node id (0..65535) = its 32-byte key"

#: [transports.<name>]: every transport takes these keys (default port per transport).
TRANSPORTS: dict[str, int] = {"coap": 5683, "mqtt": 1883, "serial": 0}
TRANSPORT_KEYS: tuple[Key, ...] = (
    Key("transports", "host", str, "127.0.0.1", "address to bind (CoAP) or of the broker (MQTT)"),
    Key("transports", "port", int, None, f"CoAP {TRANSPORTS['coap']}, MQTT {TRANSPORTS['mqtt']}",
        read=_check(lambda v: 0 <= v <= 65535, "must be a port number")),
    Key("transports", "ports", list, [], "serial devices of boards",
        read=_check(lambda v: all(isinstance(p, str) for p in v), "must be a list of device paths"),
        example=["/dev/ttyUSB0"]),
    Key("transports", "baud", int, 115200, "serial line rate"),
    Key("transports", "username", str, None, "MQTT username"),
    Key("transports", "password", str, None, "MQTT password"),
)
_EXAMPLE_TRANSPORT_KEYS = {"coap": ("host", "port"), "mqtt": ("host", "port"), "serial": ("ports", "baud")}


def _node_list(v: list, got: dict[str, Any]) -> list[int]:
    """[3, 4, "10-19"]: node ids and inclusive ranges, each id once."""
    out: list[int] = []
    for item in v:
        if isinstance(item, int) and not isinstance(item, bool):
            out.append(item)
            continue
        a, sep, b = str(item).partition("-") if isinstance(item, str) else ("", "", "")
        if not (sep and a.strip().isdigit() and b.strip().isdigit()) or int(a) > int(b):
            raise ValueError(f"{item!r} is neither a node id nor a range 'a-b' with a <= b")
        out.extend(range(int(a), int(b) + 1))
    if not out:
        raise ValueError("no nodes")
    if len(set(out)) != len(out):
        raise ValueError("a node is listed twice")
    return sorted(out)


def _endpoint(v: str, got: dict[str, Any]) -> tuple[str, int] | None:
    """"host:port" (an empty string: none)."""
    if v == "":
        return None
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected \"host:port\", got {v!r}")
    return host, int(port)


#: [shards.<name>]: the nodes a shard owns and where it serves them (docs/scale.md).
SHARD_KEYS: tuple[Key, ...] = (
    Key("shards", "nodes", list, REQUIRED, "node ids and ranges this shard owns (each node in one shard)",
        read=_node_list, attr="nodes", example=[0, 1, "2-99"]),
    Key("shards", "key", str, REQUIRED, "the shard's key for its partials to the root", read=_key, attr="key",
        example="<64 hex digits>"),
    Key("shards", "coap", str, "", "where it serves CoAP (\"\": no CoAP)", read=_endpoint,
        attr="coap", example="192.0.2.10:5683"),
    Key("shards", "mqtt", str, "", "its broker (\"\": [transports.mqtt], which the root uses)",
        read=_endpoint, attr="mqtt"),
    Key("shards", "serial", list, [], "serial devices of its boards",
        read=_check(lambda v: all(isinstance(p, str) for p in v), "must be a list of device paths"),
        attr="serial"),
    Key("shards", "state", str, "", "its state directory (\"\": state-<name>)", attr="state"),
)
SHARD_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

#: Sections in file order.
SECTIONS: tuple[str, ...] = ("job", "model", "training", "cost", "rounds", "nodes", "downlink",
                             "transports", "shards", "state", "security", "aggregation", "metrics")
#: Sections read by their own code (tables of tables), not from KEYS.
TABLES = ("nodes", "transports", "shards")
#: Sections whose keys fill a sub-object of Job rather than Job itself.
GROUPS = ("security", "aggregation")


@dataclass(kw_only=True)
class Transport:
    """One [transports.<kind>] table (TRANSPORT_KEYS)."""
    kind: str
    host: str
    port: int
    ports: list[str]
    baud: int
    username: str | None
    password: str | None


@dataclass(kw_only=True)
class Shard:
    """One [shards.<name>] table (SHARD_KEYS): a process that owns some nodes and sends the
    root one partial per round (aggregator.gateway.shard)."""
    name: str
    nodes: list[int]
    key: bytes = field(repr=False)
    coap: tuple[str, int] | None
    mqtt: tuple[str, int] | None
    serial: list[str]
    state_dir: Path


@dataclass(kw_only=True)
class Security:
    """Thresholds for rate-limiting and quarantining nodes that send bad frames (docs/security.md);
    the [security] keys of KEYS."""
    window_s: float
    rate_limit_after: int
    rate_limit_per_s: float
    rate_limit_burst: int
    quarantine_after: int
    control_poll_s: float


@dataclass(kw_only=True)
class Aggregation:
    """How a round's updates are combined: the paper's mean, or a robust coordinate-wise rule
    (aggregator.gateway.robust); the [aggregation] keys of KEYS."""
    rule: str
    trim: float
    max_abs: float


@dataclass(kw_only=True)
class Job:
    """A validated job: what the service, the demo and the edges' config message need.
    Built by parse_job from KEYS (each attribute is the `attr` of a key)."""
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
    compact: bool            # edges send compact updates (kind 4, docs/wire-format.md §3.1.1)
    profile: dict[str, Any] = field(repr=False)
    metric: str
    quorum: float
    deadline_s: float
    history: int
    shard_deadline: float    # sharded jobs (docs/scale.md)
    max_frame_bytes: int
    node_keys: dict[int, bytes] = field(repr=False)
    downlink_key: bytes = field(repr=False)
    transports: dict[str, Transport]
    shards: dict[str, "Shard"]   # empty: one gateway serves every node (the default)
    state_dir: Path
    batch_frames: int        # journal group commit (aggregator.gateway.journal)
    batch_ms: float
    security: Security
    aggregation: Aggregation
    metrics_host: str
    metrics_port: int

    @property
    def profile_name(self) -> str:
        return self.profile["name"]

    @property
    def d(self) -> int:
        """Model dimension: features for logistic, classes x features for softmax."""
        return self.features if self.model_kind == "logistic" else self.classes * self.features

    @property
    def nodes(self) -> list[int]:
        return sorted(self.node_keys)

    def quorum_count(self, n: int | None = None) -> int:
        """Updates that close a round; with n, the same share of n nodes (a shard's quorum)."""
        total = len(self.node_keys)
        n = total if n is None else n
        if self.quorum <= 1.0:
            return max(1, math.ceil(self.quorum * n - 1e-9))
        return min(n, max(1, math.ceil(min(self.quorum, total) * n / total - 1e-9)))

    def shard_of(self, node: int) -> str | None:
        """The shard that owns node (None in a job without shards)."""
        for name, sh in self.shards.items():
            if node in sh.nodes:
                return name
        return None

    def endpoint(self, node: int, transport: str) -> tuple[str, int] | None:
        """Where node reaches its gateway over transport ("coap": the CoAP server; "mqtt": the
        broker): its shard's endpoint in a sharded job, else the job's [transports]."""
        name = self.shard_of(node)
        if name is not None:
            sh = self.shards[name]
            got = sh.coap if transport == "coap" else sh.mqtt if transport == "mqtt" else None
            if got is not None or transport != "mqtt":
                return got
        t = self.transports.get(transport)
        return (t.host, t.port) if t is not None and transport != "serial" else None

    def wire_config(self) -> wire.JobConfig:
        """The config message's fields: each key's `wire` name, plus d and the enum values."""
        fields = {k.wire: getattr(self, k.attr) for k in KEYS if k.wire}
        fields.update(d=self.d, model=MODEL_KINDS[self.model_kind], profile=self.profile_name)
        return wire.JobConfig(**fields)


# ------------------------------------------------------------------ reading

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

    def value(self, t: dict[str, Any], where: str, k: Key, default: Any, got: dict[str, Any]) -> Any:
        """The value of k in table t (at `where`), type-checked, defaulted and read."""
        path = f"{where}.{k.name}"
        if k.name not in t:
            if default is REQUIRED:
                raise self.fail(path, "missing")
            v = default
        else:
            v = t[k.name]
            kind = k.kind
            if kind is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            if isinstance(v, bool) and kind is not bool:
                raise self.fail(path, f"must be {kind.__name__}, got a boolean")
            if not isinstance(v, kind):
                raise self.fail(path, f"must be {kind.__name__}, got {v!r}")
        if isinstance(v, list):
            v = list(v)                       # never share a default list between jobs
        if k.read is not None:             # defaults too: a derived default (cost.metric) is made here
            try:
                v = k.read(v, got)
            except ValueError as exc:
                raise self.fail(path, str(exc)) from None
        return v


def _check_layout(r: _Reader) -> None:
    """Unknown sections and keys are refused, so a typo cannot silently mean a default."""
    for sec in SECTIONS:
        if sec in TABLES:
            continue
        known = {k.name for k in KEYS if k.section == sec}
        for name in r.table(sec):
            if name not in known:
                raise r.fail(f"{sec}.{name}", "unknown key")
    for sec in r.raw:
        if sec not in SECTIONS:
            raise r.fail(sec, "unknown section")


def _nodes(r: _Reader) -> dict[int, bytes]:
    table = r.table("nodes", required=True)
    if not table:
        raise r.fail("nodes", "no nodes")
    out: dict[int, bytes] = {}
    for k, v in table.items():
        try:
            nid = int(k)
        except ValueError:
            raise r.fail(f"nodes.{k}", "node ids are integers") from None
        if nid not in NODE_IDS:
            raise r.fail(f"nodes.{k}", "node id must be in 0..65535")
        try:
            out[nid] = keymod.parse_key(v)
        except keymod.KeyFormatError as exc:
            raise r.fail(f"nodes.{k}", str(exc)) from None
    return out


def _transports(r: _Reader) -> dict[str, Transport]:
    out: dict[str, Transport] = {}
    known = {k.name for k in TRANSPORT_KEYS}
    for tname, t in r.table("transports").items():
        where = f"transports.{tname}"
        if tname not in TRANSPORTS:
            raise r.fail(where, f"unknown transport (use {_alternatives(TRANSPORTS)})")
        if not isinstance(t, dict):
            raise r.fail(where, "must be a table")
        for k in t:
            if k not in known:
                raise r.fail(f"{where}.{k}", "unknown key")
        vals = {k.name: r.value(t, where, k, TRANSPORTS[tname] if k.name == "port" else k.default, {})
                for k in TRANSPORT_KEYS}
        out[tname] = Transport(kind=tname, **vals)
    return out


def _shards(r: _Reader, node_keys: dict[int, bytes], transports: dict[str, Transport],
            base_dir: Path | None) -> dict[str, Shard]:
    """[shards.<name>] tables: every node in exactly one shard, and the root reachable over MQTT."""
    out: dict[str, Shard] = {}
    owner: dict[int, str] = {}
    known = {k.name for k in SHARD_KEYS}
    coap: dict[tuple[str, int], str] = {}
    for sname, t in r.table("shards").items():
        where = f"shards.{sname}"
        if not SHARD_NAME.fullmatch(sname):
            raise r.fail(where, "shard names are 1..64 letters, digits, '-' or '_' (they name MQTT topics)")
        if not isinstance(t, dict):
            raise r.fail(where, "must be a table")
        for k in t:
            if k not in known:
                raise r.fail(f"{where}.{k}", "unknown key")
        vals = {k.attr: r.value(t, where, k, k.default, {}) for k in SHARD_KEYS}
        for nid in vals["nodes"]:
            if nid not in node_keys:
                raise r.fail(f"{where}.nodes", f"node {nid} is not in [nodes]")
            if nid in owner:
                raise r.fail(f"{where}.nodes", f"node {nid} is already in shard {owner[nid]!r}")
            owner[nid] = sname
        if vals["coap"] is not None:
            if vals["coap"] in coap:
                raise r.fail(f"{where}.coap", f"shard {coap[vals['coap']]!r} serves CoAP there already")
            coap[vals["coap"]] = sname
        state = Path(vals.pop("state") or f"state-{sname}")
        if base_dir is not None and not state.is_absolute():
            state = base_dir / state
        out[sname] = Shard(name=sname, state_dir=state, **vals)
    if out:
        missing = sorted(set(node_keys) - set(owner))
        if missing:
            raise r.fail("shards", f"node {missing[0]} is in no shard ({len(missing)} node(s) unassigned)")
        if "mqtt" not in transports:
            raise r.fail("shards", "shards send their partials to the root over MQTT: add [transports.mqtt]")
    return out


def parse_job(raw: dict[str, Any], name: str = "job.toml", base_dir: Path | None = None) -> Job:
    """Validate a job tree (as tomllib gives it); relative paths resolve against base_dir."""
    r = _Reader(name, raw)
    _check_layout(r)
    got: dict[str, Any] = {}
    node_keys: dict[int, bytes] = {}
    transports: dict[str, Transport] = {}
    shards: dict[str, Shard] = {}
    for sec in SECTIONS:
        if sec == "nodes":
            node_keys = _nodes(r)
        elif sec == "transports":
            transports = _transports(r)
        elif sec == "shards":
            shards = _shards(r, node_keys, transports, base_dir)
        else:
            t = r.table(sec)
            for k in KEYS:
                if k.section == sec:
                    got[k.path] = r.value(t, sec, k, k.default, got)
    state_dir = got["state.dir"]
    if base_dir is not None and not state_dir.is_absolute():
        got["state.dir"] = base_dir / state_dir
    top = {k.attr: got[k.path] for k in KEYS if k.attr and k.section not in GROUPS}
    if top["rule"] == cat.RULE_CATAVG and top["rule_param"] == 0:
        top["rule_param"] = len(node_keys)  # catavg's parameter is the job's node count
    return Job(path=name, node_keys=node_keys, transports=transports, shards=shards,
               security=Security(**_group(got, "security")),
               aggregation=Aggregation(**_group(got, "aggregation")), **top)


def _group(got: dict[str, Any], section: str) -> dict[str, Any]:
    return {k.attr: got[k.path] for k in KEYS if k.section == section}


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


# ------------------------------------------------------------------ the documented example

_COMMENT_COLUMN = 35


def _toml_value(v: Any) -> str:
    """One value as TOML (tomli-w); a list on one line, as the example shows it."""
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return tomli_w.dumps({"v": v})[len("v = "):].rstrip("\n")


def _line(name: str, value: Any, doc: str) -> str:
    text = f"{name} = {_toml_value(value)}"
    return f"{text:<{_COMMENT_COLUMN - 1}} # {doc}" if len(text) < _COMMENT_COLUMN - 1 else f"{text}  # {doc}"


def example_toml() -> str:
    """A job file with every key at its default (required keys at an example value),
    each commented with its meaning: the example in this module's docstring."""
    lines: list[str] = []
    for sec in SECTIONS:
        if sec == "nodes":
            lines += ["[nodes]", _line("1", "<64 hex digits>", "required: " + NODES_DOC)]
            continue
        if sec == "transports":
            for tname, names in _EXAMPLE_TRANSPORT_KEYS.items():
                lines.append(f"[transports.{tname}]")
                for k in TRANSPORT_KEYS:
                    if k.name in names:
                        v = TRANSPORTS[tname] if k.name == "port" else k.example if k.example is not None else k.default
                        lines.append(_line(k.name, v, k.doc))
            continue
        if sec == "shards":                 # optional: shard_example_toml()
            continue
        lines.append(f"[{sec}]")
        for k in KEYS:
            if k.section == sec:
                v = k.example if k.example is not None else k.default
                lines.append(_line(k.name, v, ("required: " if k.default is REQUIRED else "") + k.doc))
    return "\n".join(lines) + "\n"


def shard_example_toml() -> str:
    """One [shards.<name>] table with every key (the second example in the module docstring)."""
    lines = ["[shards.north]"]
    for k in SHARD_KEYS:
        v = k.example if k.example is not None else k.default
        lines.append(_line(k.name, v, k.doc))
    return "\n".join(lines) + "\n"
