"""Measure what a real transport costs per frame size, and fit a cost profile to it.

`cat-aggregator measure` sends real update frames (edge.frame.encode_update, random
indices and values) of growing T over MQTT (through a broker: publisher -> broker ->
subscriber, both in this process so one clock times both ends) or CoAP (confirmable POST,
Block1 when large, until the response), many repetitions each, in shuffled order so drift
does not masquerade as a size effect (paper appendix H, figure 3). It writes one CSV row
per message.

`cat-aggregator fit-cost` fits, by least squares on the exact frame bytes x,
* affine:  t = a x + b                   (the paper's affine model, appendix H), and
* packet:  t = c1 ceil(x / P) + c0       (the paper's packet model, eq. 6; P searched),
reports residuals, picks the better model by BIC (the packet model has a third parameter,
P, so a smaller residual alone does not earn it), and writes a link cost profile TOML that
`edge.profile.load` accepts, with default metric `seconds`.

Profile encoding (the schema has no per-message time constant): affine -> bit_rate = 8/a,
fixed_seconds = b, one packet per message. packet -> payload P per packet,
fixed_seconds = c1, and c0 as `first_overhead_bytes` = c0 / a_eff "equivalent bytes" at
a per-byte time a_eff = max(a, 1e-4 c1 / P) that adds at most 0.01 % of a packet's cost.
So the profile's `seconds` reproduce the fit; its `bytes` do not mean link bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import math
import os
import random
import threading
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from aggregator.errors import UserError
from aggregator.lab import reports
from aggregator.lab.cliargs import ArgumentError, add_fmt_arg, fmt_code, int_list
from edge.cat import SCHEME_IDENTITY, SCHEME_SQ, scheme_id
from edge.frame import buffer_size, encode_update
from edge.profile import ProfileError, load


class MeasurementError(UserError, ValueError):
    """Measurements that cannot be taken (the transport failed) or fitted (no rows, too few sizes)."""


# ------------------------------------------------------------------------------ frames


def make_frame(d: int, T: int, scheme: int, fmt: int = 0, key: bytes | None = None, node: int = 0,
               rnd: int = 0, seed: int = 0) -> bytes:
    """A real, MAC'd update frame with T random entries (identity: T = d)."""
    rng = random.Random(seed * 1_000_003 + T)
    key = key or bytes(range(32))
    if scheme == SCHEME_IDENTITY:
        T = d
        idx = array("I", range(d))
    else:
        idx = array("I", sorted(rng.sample(range(d), T)))
    if scheme == SCHEME_SQ:
        m = 0.25
        vals = array("f", [m if rng.random() < 0.5 else -m for _ in range(T)])
    else:
        vals = array("f", [rng.uniform(-1.0, 1.0) for _ in range(T)])
    buf = bytearray(buffer_size(d, T, scheme, fmt))
    n = encode_update(buf, key, 0, node, rnd, scheme, d, T, idx, vals, fmt)
    return bytes(buf[:n])


def t_grid(d: int, t_min: int, t_max: int, steps: int) -> list[int]:
    """Geometric grid of T from t_min to t_max (distinct integers)."""
    t_max = min(t_max, d)
    t_min = max(1, min(t_min, t_max))
    g = np.unique(np.round(np.geomspace(t_min, t_max, steps)).astype(int))
    return [int(v) for v in g]


# ------------------------------------------------------------------------------ measure


@dataclass
class Sample:
    transport: str
    T: int
    frame_bytes: int
    rep: int
    seconds: float          # end to end: MQTT publish -> subscriber; CoAP POST -> response
    ack_seconds: float      # MQTT: publish -> PUBACK (NaN for CoAP: same as seconds)


def measure_mqtt(host: str, port: int, frames: dict[int, bytes], reps: int, topic: str = "cat/measure/up/0",
                 qos: int = 1, timeout: float = 10.0, warmup: int = 3, progress: bool = True,
                 seed: int = 0) -> list[Sample]:
    """Publish every frame `reps` times through the broker and time its arrival at a subscriber."""
    import paho.mqtt.client as mqtt
    from tqdm import tqdm

    got = threading.Event()
    acked = threading.Event()
    stamp: dict[str, float] = {}
    tag = f"{os.getpid()}-{time.monotonic_ns()}"

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        stamp["rx"] = time.perf_counter()
        stamp["len"] = len(msg.payload)
        got.set()

    def on_publish(client: Any, userdata: Any, mid: int, rc: Any = None, props: Any = None) -> None:
        stamp["ack"] = time.perf_counter()
        acked.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"cat-measure-sub-{tag}")
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"cat-measure-pub-{tag}")
    subscribed = threading.Event()
    sub.on_message = on_message
    sub.on_subscribe = lambda *a, **k: subscribed.set()
    pub.on_publish = on_publish
    for c in (sub, pub):
        c.connect(host, port, keepalive=60)
        c.loop_start()
    try:
        sub.subscribe(topic, qos=qos)
        if not subscribed.wait(timeout):
            raise TimeoutError(f"MQTT broker {host}:{port} did not acknowledge the subscription")
        order = [(rep, t) for rep in range(reps) for t in frames]
        random.Random(seed).shuffle(order)
        warm = [(-1, t) for t in list(frames)[:1]] * warmup
        out: list[Sample] = []
        for rep, t in tqdm(warm + order, desc="mqtt", disable=not progress, leave=False):
            data = frames[t]
            got.clear()
            acked.clear()
            stamp.clear()
            t0 = time.perf_counter()
            info = pub.publish(topic, data, qos=qos)
            if not got.wait(timeout):
                raise TimeoutError(f"MQTT: a {len(data)} B frame did not arrive within {timeout} s")
            if qos > 0:
                acked.wait(timeout)
            if stamp.get("len") != len(data):
                raise RuntimeError("MQTT: received a different message (is something else publishing?)")
            if rep >= 0:
                out.append(Sample("mqtt", t, len(data), rep, stamp["rx"] - t0,
                                  stamp.get("ack", math.nan) - t0 if qos > 0 else math.nan))
            del info
        return out
    finally:
        for c in (sub, pub):
            c.loop_stop()
            c.disconnect()


def measure_coap(uri: str, frames: dict[int, bytes], reps: int, timeout: float = 30.0, warmup: int = 3,
                 progress: bool = True, seed: int = 0) -> list[Sample]:
    """POST every frame `reps` times (content-format 60, CBOR) and time until the response."""

    async def run() -> list[Sample]:
        import aiocoap
        from tqdm import tqdm

        ctx = await aiocoap.Context.create_client_context()
        try:
            order = [(rep, t) for rep in range(reps) for t in frames]
            random.Random(seed).shuffle(order)
            warm = [(-1, t) for t in list(frames)[:1]] * warmup
            out: list[Sample] = []
            for rep, t in tqdm(warm + order, desc="coap", disable=not progress, leave=False):
                data = frames[t]
                msg = aiocoap.Message(code=aiocoap.POST, uri=uri, payload=data, content_format=60)
                t0 = time.perf_counter()
                resp = await asyncio.wait_for(ctx.request(msg).response, timeout)
                dt = time.perf_counter() - t0
                if not resp.code.is_successful():
                    raise RuntimeError(f"CoAP POST {uri} answered {resp.code}")
                if rep >= 0:
                    out.append(Sample("coap", t, len(data), rep, dt, math.nan))
            return out
        finally:
            await ctx.shutdown()

    return asyncio.run(run())


def write_samples(samples: Sequence[Sample], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["transport", "T", "frame_bytes", "rep", "seconds", "ack_seconds"])
        for s in sorted(samples, key=lambda s: (s.T, s.rep)):
            w.writerow([s.transport, s.T, s.frame_bytes, s.rep, repr(s.seconds),
                        "" if math.isnan(s.ack_seconds) else repr(s.ack_seconds)])


def read_samples(path: Path, column: str = "seconds") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame_bytes, T, time) arrays from a measurement CSV (rows with an empty value skipped)."""
    xs, ts, ys = [], [], []
    with open(path) as f:
        for r in csv.DictReader(f):
            v = r.get(column, "")
            if v in ("", None):
                continue
            xs.append(float(r["frame_bytes"]))
            ts.append(float(r.get("T") or 0))
            ys.append(float(v))
    if not xs:
        raise MeasurementError(f"{path}: no '{column}' measurements")
    return np.array(xs), np.array(ts), np.array(ys)


def read_transport(path: Path) -> str | None:
    """The node transport every row of a measurement CSV was taken over ("coap" or "mqtt"), or
    None (mixed, absent): what the fitted profile's message.transport says it prices."""
    with open(path) as f:
        seen = {r.get("transport") for r in csv.DictReader(f)}
    return seen.pop() if len(seen) == 1 and seen <= {"coap", "mqtt"} else None


# ------------------------------------------------------------------------------ fit


@dataclass
class Fit:
    model: str
    params: dict
    rss: float
    rms: float
    r2: float
    bic: float
    n: int

    def predict(self, x: np.ndarray) -> np.ndarray:
        p = self.params
        if self.model == "affine":
            return p["a"] * x + p["b"]
        return p["c1"] * np.ceil(x / p["P"]) + p["c0"]


def _stats(model: str, params: dict, x: np.ndarray, y: np.ndarray, k: int) -> Fit:
    f = Fit(model, params, 0.0, 0.0, 0.0, 0.0, len(x))
    r = y - f.predict(x)
    rss = float(r @ r)
    n = len(x)
    tss = float(((y - y.mean()) ** 2).sum())
    f.rss = rss
    f.rms = math.sqrt(rss / n)
    f.r2 = 1.0 - rss / tss if tss > 0 else 1.0
    floor = 1e-300 + 1e-24 * float(y @ y)  # an exact fit would give -inf
    f.bic = n * math.log(max(rss, floor) / n) + k * math.log(n)
    return f


def fit_affine(x: np.ndarray, y: np.ndarray) -> Fit:
    """t = a x + b with a, b >= 0 (non-negative least squares: a profile needs them so)."""
    from scipy.optimize import nnls

    A = np.column_stack([x, np.ones_like(x)])
    (a, b), _ = nnls(A, y)
    return _stats("affine", {"a": float(a), "b": float(b)}, x, y, 2)


def fit_packet(x: np.ndarray, y: np.ndarray, p_min: int = 8, p_max: int | None = None) -> Fit:
    """t = c1 ceil(x/P) + c0, c1 > 0, c0 >= 0; P searched over every integer in [p_min, p_max].

    Fits the per-size means weighted by counts (the same minimiser as all points, far fewer
    rows), all candidate P at once by the 2x2 normal equations; the best few are refitted
    with non-negativity. Ties (the same packet counts for every size) go to the largest P.
    """
    from scipy.optimize import nnls

    xs, inv, cnt = np.unique(x, return_inverse=True, return_counts=True)
    ym = np.bincount(inv, weights=y) / cnt
    top = int(min(p_max or xs.max(), xs.max(), 1 << 20))
    lo = int(max(1, min(p_min, top)))
    cands = np.arange(lo, top + 1, dtype=np.float64)
    best: list[tuple[float, float]] = []
    w = cnt.astype(np.float64)
    sw = w.sum()
    for c0 in range(0, cands.size, 4096):
        P = cands[c0:c0 + 4096]
        k = np.ceil(xs[None, :] / P[:, None])                 # packets per size, per candidate
        sk = k @ w
        skk = (k * k) @ w
        sky = (k * ym) @ w
        sy = float(ym @ w)
        det = skk * sw - sk * sk
        with np.errstate(divide="ignore", invalid="ignore"):
            c1 = np.where(det > 0, (sky * sw - sk * sy) / det, 0.0)
            cc = np.where(det > 0, (sy - c1 * sk) / sw, sy / sw)
        pred = c1[:, None] * k + cc[:, None]
        rss = ((pred - ym[None, :]) ** 2) @ w
        best.extend(zip(rss.tolist(), P.tolist()))
    best.sort(key=lambda t: (t[0], -t[1]))
    scored = []
    for _, P in best[:40]:
        k = np.ceil(xs / P)
        A = np.column_stack([k, np.ones_like(k)]) * np.sqrt(w)[:, None]
        (c1, c0), _ = nnls(A, ym * np.sqrt(w))
        r = c1 * k + c0 - ym
        scored.append((float((r * r) @ w), -P, float(c1), float(c0)))
    scored.sort()
    rss_best = scored[0][0]
    tie = [s for s in scored if s[0] <= rss_best * (1 + 1e-9) + 1e-30]
    _, negP, c1, c0 = max(tie, key=lambda s: -s[1])  # largest P among exact ties
    return _stats("packet", {"c1": c1, "c0": c0, "P": int(-negP)}, x, y, 3)


def choose(fits: Sequence[Fit]) -> Fit:
    """Lower BIC wins (n ln(RSS/n) + k ln n)."""
    return min(fits, key=lambda f: f.bic)


def profile_toml(fit: Fit, name: str, description: str, max_bytes: float, source: str,
                 transport: str | None = None) -> str:
    """A link cost profile (schema 1) whose `seconds` metric reproduces the fit."""
    p = fit.params
    if fit.model == "affine":
        a = p["a"] if p["a"] > 0 else 1e-12
        rate = 8.0 / a
        first = nxt = max_bytes
        fixed = p["b"]
        first_oh = 0.0
        rate_src = f"fitted: 8 / a, a = {p['a']:.6g} s per frame byte (affine least squares, {source})"
        fixed_src = f"fitted: b = {p['b']:.6g} s per message (affine intercept; one packet per message)"
        oh_src = "none: the affine intercept is fixed_seconds"
        pay_src = "one packet per message (affine model): the largest message"
    else:
        P = float(p["P"])
        a = max(1e-4 * p["c1"] / P, 1e-15)
        rate = 8.0 / a
        first = nxt = P
        fixed = p["c1"]
        first_oh = p["c0"] / a
        rate_src = (f"encoding: a per-byte time {a:.6g} s/B, at most 0.01 % of a packet's fitted cost c1 "
                    "(the packet model has no per-byte term; the schema needs a rate)")
        fixed_src = f"fitted: c1 = {p['c1']:.6g} s per packet (packet least squares, {source})"
        oh_src = (f"encoding: c0 = {p['c0']:.6g} s per message as equivalent bytes c0 / a (the schema "
                  "has no per-message time); not real link bytes")
        pay_src = f"fitted: P = {p['P']} B per packet (searched, least squares)"

    def e(v: float, unit: str, src: str) -> str:
        return f'{{ value = {float(v)!r}, unit = "{unit}", source = "{_esc(src)}" }}'

    lines = [
        f"# Fitted by `cat-aggregator fit-cost` from {source}.",
        f"# model: {fit.model} {fit.params}; RMS residual {fit.rms:.4g} s, R^2 {fit.r2:.5f}, n = {fit.n}.",
        "schema = 1",
        f'name = "{name}"',
        'kind = "link"',
        f'description = "{_esc(description)}"',
        'default_metric = "seconds"',
        "",
        "[message]",
        *([f'transport = "{transport}"          # measured over it: a node on it may use this profile']
          if transport else []),
        "overhead_bytes = " + e(0, "B", "none: the fit is on the whole frame"),
        "max_bytes = " + e(max_bytes, "B", "largest frame measured (the fit is not validated beyond it)"
                           if max_bytes else "given"),
        "extra_packets = " + e(0, "packet", "none: acknowledgements are inside the measured time"),
        "extra_packet_bytes = " + e(0, "B", "none"),
        "",
        "[packet]",
        "first_payload_bytes = " + e(first, "B", pay_src),
        "next_payload_bytes = " + e(nxt, "B", pay_src),
        "first_overhead_bytes = " + e(first_oh, "B", oh_src),
        "next_overhead_bytes = " + e(0, "B", "none"),
        "ack_bytes = " + e(0, "B", "none: inside the measured time"),
        "fixed_seconds = " + e(fixed, "s", fixed_src),
        "",
        "[radio]",
        'name = "none"',
        "bit_rate = " + e(rate, "bit/s", rate_src),
        "tx_power = " + e(0, "W", "not measured (time only)"),
        "rx_power = " + e(0, "W", "not measured (time only)"),
        "",
    ]
    return "\n".join(lines)


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


# ------------------------------------------------------------------------------ CLI


def _cmd_measure(args: argparse.Namespace) -> int:
    try:
        sch = scheme_id(args.scheme)
    except ValueError as e:
        raise ArgumentError(str(e)) from None
    Ts = int_list(args.T, "--T") if args.T else t_grid(args.d, args.t_min, args.t_max or args.d, args.steps)
    if any(not 1 <= t <= args.d for t in Ts):
        raise ArgumentError(f"every T must be in 1..d = {args.d}")
    frames = {t: make_frame(args.d, t, sch, fmt_code(args.fmt), seed=args.seed) for t in Ts}
    try:
        if args.transport == "mqtt":
            host, _, port = args.broker.rpartition(":")
            if not port.isdigit():
                raise ArgumentError(f"--broker: expected HOST:PORT, got {args.broker!r}")
            samples = measure_mqtt(host or "127.0.0.1", int(port), frames, args.reps, args.topic, args.qos,
                                   args.timeout, progress=not args.quiet, seed=args.seed)
        else:
            if not args.uri:
                raise ArgumentError("--transport coap needs --uri coap://HOST:PORT/PATH")
            samples = measure_coap(args.uri, frames, args.reps, args.timeout, progress=not args.quiet,
                                   seed=args.seed)
    except (OSError, TimeoutError, RuntimeError) as e:
        raise MeasurementError(f"{args.transport}: {e}") from None
    out = reports.out_dir(args.out, "measure")
    csv_path = out / "measurements.csv"
    write_samples(samples, csv_path)
    rows = []
    for t in Ts:
        v = np.array([s.seconds for s in samples if s.T == t])
        rows.append({"T": t, "frame_bytes": len(frames[t]), "n": v.size, "mean_s": float(v.mean()),
                     "median_s": float(np.median(v)), "std_s": float(v.std()), "min_s": float(v.min())})
    md = reports.write_table(rows, out, "summary", ["T", "frame_bytes", "n", "mean_s", "median_s", "std_s", "min_s"])
    print(md)
    x = np.array([s.frame_bytes for s in samples], dtype=float)
    y = np.array([s.seconds for s in samples])
    plots = reports.plot_fit(x, y, {}, out, "measurements", title=f"{args.transport}: delivery time per frame")
    reports.write_report(out, f"measure: {args.transport}", reports.command_line(args),
                         [f"{len(samples)} messages, {len(Ts)} sizes x {args.reps} repetitions"],
                         {"Delivery time per T": md}, plots,
                         notes=["Fit a cost profile with: cat-aggregator fit-cost " + str(csv_path)])
    print(f"wrote {csv_path}")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    try:
        x, T, y = read_samples(Path(args.measurements), args.column)
    except (OSError, ValueError, KeyError) as e:
        raise MeasurementError(f"{args.measurements}: {e}") from None
    if len(np.unique(x)) < 3:
        raise MeasurementError("need measurements at 3 or more frame sizes to fit")
    fits = [fit_affine(x, y), fit_packet(x, y, args.p_min, args.p_max)]
    best = choose(fits) if args.model == "auto" else next(f for f in fits if f.model == args.model)
    lines = []
    for f in fits:
        mark = "  <- chosen" if f is best else ""
        if f.model == "affine":
            desc = f"affine: t = {f.params['a']:.6g} s/B * bytes + {f.params['b']:.6g} s"
        else:
            desc = f"packet: t = {f.params['c1']:.6g} s * ceil(bytes / {f.params['P']}) + {f.params['c0']:.6g} s"
        lines.append(f"{desc}; RMS residual {f.rms:.4g} s, R^2 {f.r2:.5f}, BIC {f.bic:.1f}{mark}")
    for t in lines:
        print(t)
    name = args.name
    if not all("a" <= c <= "z" or "0" <= c <= "9" or c == "-" for c in name):
        raise ArgumentError(f"--name {name!r}: use lowercase letters, digits and '-'")
    out = reports.out_dir(args.out, "fit-cost")
    max_bytes = float(args.max_bytes or x.max())
    text = profile_toml(best, name, args.description or
                        f"Fitted {best.model} delivery-time model from {Path(args.measurements).name} "
                        f"({len(x)} measurements, frames {int(x.min())}..{int(x.max())} B).",
                        max_bytes, Path(args.measurements).name, read_transport(Path(args.measurements)))
    path = out / f"{name}.toml"
    path.write_text(text)
    try:
        load(path)
    except ProfileError as e:  # would be a bug here
        raise MeasurementError(f"the written profile does not validate: {e}") from None
    rows = [{"model": f.model, **{k: v for k, v in f.params.items()}, "rms_s": f.rms, "r2": f.r2, "bic": f.bic,
             "chosen": f is best} for f in fits]
    md = reports.write_table(rows, out, "fits", ["model", "a", "b", "c1", "c0", "P", "rms_s", "r2", "bic", "chosen"])
    plots = reports.plot_fit(x, y, {f"{f.model} fit": f.predict(np.unique(x)) for f in fits}, out, "fit",
                             title="delivery time against frame bytes")
    reports.write_report(out, f"fit-cost: {name}", reports.command_line(args), lines, {"Fits": md}, plots,
                         notes=[f"Profile written to {path.name}; it loads with edge.profile.load."])
    print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("measure", help="time real update frames of growing T over MQTT or CoAP")
    p.add_argument("--transport", choices=("mqtt", "coap"), required=True)
    p.add_argument("--broker", default="127.0.0.1:1883", help="MQTT broker HOST:PORT")
    p.add_argument("--topic", default="cat/measure/up/0", help="MQTT topic (not a live job's)")
    p.add_argument("--qos", type=int, choices=(0, 1, 2), default=1)
    p.add_argument("--uri", default=None, help="CoAP resource, e.g. coap://127.0.0.1:5683/cat/measure/up")
    p.add_argument("--d", type=int, default=47236, help="model size in the frames (default RCV1's)")
    p.add_argument("--scheme", default="s", help="s, sq, ss or identity")
    add_fmt_arg(p)
    p.add_argument("--T", default=None, help="comma-separated T values (default: geometric grid)")
    p.add_argument("--t-min", type=int, default=1)
    p.add_argument("--t-max", type=int, default=None, help="default d")
    p.add_argument("--steps", type=int, default=12, help="grid points")
    p.add_argument("--reps", type=int, default=10, help="repetitions per T (appendix H: 10)")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_measure, _parser=p, _words=["measure"])

    q = sub.add_parser("fit-cost", help="fit affine and packet cost models; write a cost profile")
    q.add_argument("measurements", help="CSV from `measure` (frame_bytes, seconds columns)")
    q.add_argument("--name", default="fitted-link", help="profile name (lowercase, digits, '-')")
    q.add_argument("--description", default=None)
    q.add_argument("--column", default="seconds", help="time column to fit (seconds or ack_seconds)")
    q.add_argument("--model", choices=("auto", "affine", "packet"), default="auto")
    q.add_argument("--p-min", type=int, default=8, help="packet model: smallest P searched (bytes)")
    q.add_argument("--p-max", type=int, default=None, help="packet model: largest P searched")
    q.add_argument("--max-bytes", type=float, default=None, help="profile max message (default: largest measured)")
    q.add_argument("--out", default=None)
    q.set_defaults(func=_cmd_fit, _parser=q, _words=["fit-cost"])
