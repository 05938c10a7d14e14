"""Multi-node simulation of the compressed gradient method, eq. (10) of the paper.

F(x) = (1/n) sum_k f_k(x), f_k the L2-regularised logistic (or softmax) loss on node k's
partition. Every round each node k computes g_k = grad f_k(x) (full or a mini-batch),
compresses it with the *edge's own* numpy backend (`edge.np_backend.compress`, the same
decisions the boards make; no second implementation lives here) under its own `Rule`
and a `CostTable` of its `CostModel`, and the gateway applies x <- x - (1/n) sum_k u_k
to a float32 model. With error feedback node k keeps e_k and compresses
v = g_k / L + e_k instead (scale 1), then e_k <- v - q.

Why vectorised numpy/scipy and not the edge's pure loops: the gradient on RCV1-sized CSR
data is the cost of a round; it is two sparse mat-vecs per node here.

Per round it records the loss, ||grad F||, accuracy, and per node: T, entries sent, the
exact wire-frame bytes, link bytes/bits/packets/airtime/energy under the profile, the
profile's CAT metric, the improvement and the wall-clock of selection.

Also the `simulate` and `partition` subcommands of `cat-aggregator`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.optimize
import scipy.sparse as sp

from aggregator.lab import datasets as ds
from edge import np_backend
from edge.cat import RULE_NAMES, SCHEME_IDENTITY, SCHEME_NAMES, Rule, rule_id, scheme_id
from edge.cost import CostModel, LinkCost, paper_cost, paper_payload_bits
from edge.frame import frame_length
from edge.profile import ProfileError, load_profile
from aggregator.errors import UserError

METRICS = ("bits", "bytes", "packets", "seconds", "joules")
SYNTHETIC_NAMES = ("synthetic", "rcv1-like", "rcv1_like")


# ------------------------------------------------------------------------------ problem


@dataclass
class Problem:
    """The data of one simulated federation: node partitions and the objective's constants.

    parts: [(X_k float64 CSR or ndarray, y_k int64)]; dim: model size (d, or C*d for softmax);
    L: smoothness bound of F used for every node's step; f_star: min F (None until solved).
    """

    parts: list[tuple[Any, np.ndarray]]
    kind: str
    lam: float
    classes: int
    d: int
    dim: int
    L: float
    name: str
    f_star: float | None = None
    w_star: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def nodes(self) -> int:
        return len(self.parts)

    @property
    def rows(self) -> int:
        return int(sum(X.shape[0] for X, _ in self.parts))

    def loss_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """F(x) and grad F(x) = (1/n) sum_k grad f_k(x)."""
        f = 0.0
        g = np.zeros(self.dim)
        for X, y in self.parts:
            fk, gk = ds.loss_grad_np(X, y, x, self.lam, self.kind)
            f += fk
            g += gk
        n = len(self.parts)
        return f / n, g / n

    def accuracy(self, x: np.ndarray) -> float:
        """Fraction of all rows (every node's) classified correctly."""
        good = 0.0
        for X, y in self.parts:
            good += ds.accuracy_np(X, y, x, self.kind) * X.shape[0]
        return good / self.rows

    def solve(self, tol: float = 1e-9, max_iter: int = 5000) -> float:
        """f* = min F by L-BFGS-B on the node sum (so a skewed split's F is the one solved)."""
        if self.f_star is not None:
            return self.f_star
        res = scipy.optimize.minimize(self.loss_grad, np.zeros(self.dim), jac=True, method="L-BFGS-B",
                                      options={"maxiter": max_iter, "gtol": tol, "ftol": 1e-15,
                                               "maxcor": 20})
        f, g = self.loss_grad(res.x)
        self.f_star = float(f)
        self.w_star = res.x
        self.meta["f_star_grad_norm"] = float(np.linalg.norm(g))
        return self.f_star


def load_data(spec: str, rows: int | None = None, features: int | None = None,
              nnz: float | None = None, seed: int = 0, normalize: bool = False) -> ds.Dataset | list:
    """A dataset by name or path.

    * builtin names (digits, digits-binary, breast_cancer, iris, wine): shipped in scikit-learn;
    * synthetic / rcv1-like: `datasets.synthetic_rcv1_like` (rows, features, nnz per row);
    * a directory written by `cat-aggregator partition` (returns the node parts as a list);
    * a .catd file; anything else is read as a LIBSVM file (RCV1, URL ...).
    """

    key = spec.replace("_", "-").lower()
    if key in SYNTHETIC_NAMES or key.replace("-", "_") in SYNTHETIC_NAMES:
        kw: dict[str, Any] = {"seed": seed}
        if rows:
            kw["n"] = int(rows)
        if features:
            kw["d"] = int(features)
        if nnz:
            kw["nnz_per_row"] = float(nnz)
        return ds.synthetic_rcv1_like(**kw)
    if key in ("digits", "digits-binary", "breast-cancer", "iris", "wine"):
        return ds.load_builtin(spec)
    p = Path(spec)
    if p.is_dir():
        man = p / "partition.json"
        if not man.exists():
            raise UserError(f"{p}: a directory must hold partition.json (from `cat-aggregator partition`)")
        meta = json.loads(man.read_text())
        parts = []
        for node in meta["nodes"]:
            d = ds.read_datafile(p / node["file"])
            parts.append((d.X, d.y, d.classes))
        return parts
    if not p.exists():
        raise UserError(f"{spec}: not a builtin dataset (digits, digits-binary, breast_cancer, iris, wine), "
                        "'synthetic', nor an existing file or partition directory")
    if p.suffix == ".catd":
        return ds.read_datafile(p)
    try:
        return ds.load_libsvm(p, n_features=features, normalize=normalize)
    except ValueError as e:
        raise UserError(f"{p}: cannot read as LIBSVM: {e}") from None


def make_problem(data: ds.Dataset | list, nodes: int = 1, mode: str = "even", lam: float = 1e-4,
                 kind: str | None = None, seed: int = 0, alpha: float = 0.5,
                 smoothness: str = "spectral") -> Problem:
    """Partition a dataset over `nodes` and fix L (trace bound, as the edges compute it, or spectral).

    L is the largest of the nodes' bounds, so every f_k is L-smooth (the assumption of the
    multi-node descent lemma, appendix G), and F is too.
    """
    if isinstance(data, list):
        parts = [(X, y) for X, y, _ in data]
        classes = max(c for _, _, c in data)
        name = f"partition-{len(parts)}"
        if nodes not in (None, len(parts)):
            pass  # a partition directory fixes the node count
    else:
        classes = data.classes
        name = data.name
        parts = ds.partition(data.X, data.y, nodes, mode=mode, seed=seed, alpha=alpha) if nodes > 1 \
            else [(data.X, data.y)]
    if kind is None:
        kind = "logistic" if classes == 2 else "softmax"
    d = parts[0][0].shape[1]
    conv = []
    for X, y in parts:
        X = sp.csr_matrix(X, dtype=np.float64) if sp.issparse(X) else np.asarray(X, dtype=np.float64)
        conv.append((X, np.asarray(y, dtype=np.int64)))
    L = max(ds.smoothness_np(X, lam, kind, smoothness) for X, _ in conv)
    dim = d if kind == "logistic" else classes * d
    return Problem(conv, kind, float(lam), int(classes), int(d), int(dim), float(L), name,
                   meta={"mode": mode, "alpha": alpha, "smoothness": smoothness, "seed": seed})


# ------------------------------------------------------------------------------ config


@dataclass
class SimConfig:
    """One simulated run. rule_param is T for `fixed` and the period S for `hybrid`."""

    scheme: str = "s"
    rule: str = "cat"
    rule_param: int = 0
    profile: str = "paper-packet-128-64-128"
    metric: str | None = None
    rounds: int = 100
    batch: int | None = None
    error_feedback: bool = False
    step: float = 1.0
    fmt: int = 0
    cap: int | None = None
    telemetry: bool = False
    seed: int = 0
    eval_every: int = 1
    stop_gap: float | None = None
    label: str = ""
    board: str | None = None        # energy-aware CAT: count this board's CPU joules too (metric joules)
    board_round: bool = True        # ... and the round's T-independent joules (gradient, wake-up)

    def name(self) -> str:
        if self.label:
            return self.label
        sch = SCHEME_NAMES[scheme_id(self.scheme)].upper().replace("SQ", "S+Q")
        if scheme_id(self.scheme) == SCHEME_IDENTITY:
            return "GD"
        r = RULE_NAMES[rule_id(self.rule)]
        tag = {"cat": "CAT", "alistarh": "Alistarh", "fixed": f"T={self.rule_param}",
               "hybrid": f"hybrid-{self.rule_param}"}.get(r, r)
        return f"{tag} {sch}" + (" +EF" if self.error_feedback else "")


@dataclass
class SimResult:
    """Per-round records of one run (arrays; R = rounds run, n = nodes).

    loss, grad_norm, accuracy: R + 1 values, at the model of round r (r = R: the final one);
    NaN where not evaluated. Per node (R x n): T chosen, entries sent, frame bytes on the
    wire, and under the profile bits, bytes (link tx), packets, seconds (airtime),
    joules, cost (the profile's CAT metric), improvement, select_s (compress wall-clock).
    """

    config: dict
    problem: dict
    loss: np.ndarray
    grad_norm: np.ndarray
    accuracy: np.ndarray
    T: np.ndarray
    entries: np.ndarray
    frame_bytes: np.ndarray
    bits: np.ndarray
    bytes: np.ndarray
    packets: np.ndarray
    seconds: np.ndarray
    joules: np.ndarray
    cost: np.ndarray
    improvement: np.ndarray
    select_s: np.ndarray
    down_entries: np.ndarray
    round_s: np.ndarray
    f_star: float | None = None
    wall_s: float = 0.0
    label: str = ""
    infeasible: str = ""
    x_final: np.ndarray | None = None            # the float32 model after the last round
    ef_memory: list | None = None                # error feedback: each node's final e_k (float32)

    @property
    def rounds(self) -> int:
        return int(self.T.shape[0])

    @property
    def gap(self) -> np.ndarray:
        if self.f_star is None:
            raise ValueError("f* unknown: solve the problem first")
        return self.loss - self.f_star

    def cumulative(self, metric: str = "bits") -> np.ndarray:
        """Total over nodes spent before the model of round r: R + 1 values, starting at 0."""
        per = getattr(self, metric).sum(axis=1)
        return np.concatenate([[0.0], np.cumsum(per)])

    def first_reach(self, gap_target: float) -> int | None:
        """The first round r whose model has F - f* <= gap_target, or None."""
        hit = np.flatnonzero(self.gap <= gap_target)
        return int(hit[0]) if hit.size else None

    def to_reach(self, gap_target: float, metric: str = "bits") -> tuple[float, bool]:
        """(cost spent until F - f* <= target, True) or (cost over the whole run, False)."""
        cum = self.cumulative(metric)
        r = self.first_reach(gap_target)
        if r is None:
            return float(cum[-1]), False
        return float(cum[r]), True

    def summary(self) -> dict:
        s = {"label": self.label, "rounds": self.rounds, "wall_s": round(self.wall_s, 3),
             "s_per_round": self.wall_s / max(1, self.rounds),
             "final_loss": float(self.loss[-1]), "final_grad_norm": float(self.grad_norm[-1]),
             "final_accuracy": float(self.accuracy[np.isfinite(self.accuracy)][-1])
             if np.isfinite(self.accuracy).any() else float("nan"),
             "T_median": float(np.median(self.T)) if self.T.size else float("nan"),
             "select_ms_mean": 1e3 * float(self.select_s.mean()) if self.select_s.size else 0.0}
        if self.f_star is not None:
            s["f_star"] = self.f_star
            s["final_gap"] = float(self.loss[-1] - self.f_star)
        for m in METRICS:
            s["total_" + m] = float(getattr(self, m).sum())
        return s

    # -- persistence: run.json + rounds.csv + nodes.csv (the run-log format, docs/experiments.md)

    def save(self, out: Path) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"label": self.label, "config": self.config, "problem": self.problem,
                "f_star": self.f_star, "wall_s": self.wall_s, "summary": self.summary(),
                "infeasible": self.infeasible}
        (out / "run.json").write_text(json.dumps(meta, indent=1, default=_json_default))
        with open(out / "rounds.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["round", "loss", "grad_norm", "accuracy", "down_entries", "round_s"])
            R = self.rounds
            for r in range(R + 1):
                w.writerow([r, _fmt(self.loss[r]), _fmt(self.grad_norm[r]), _fmt(self.accuracy[r]),
                            int(self.down_entries[r]) if r < R else "", _fmt(self.round_s[r]) if r < R else ""])
        with open(out / "nodes.csv", "w", newline="") as f:
            w = csv.writer(f)
            cols = ["T", "entries", "frame_bytes", "bits", "bytes", "packets", "seconds", "joules",
                    "cost", "improvement", "select_s"]
            w.writerow(["round", "node"] + cols)
            arrs = [getattr(self, c) for c in cols]
            for r in range(self.rounds):
                for k in range(self.T.shape[1]):
                    w.writerow([r, k] + [_fmt(a[r, k]) for a in arrs])


def _fmt(v: float) -> str:
    v = float(v)
    if math.isnan(v):
        return ""
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# ------------------------------------------------------------------------------ cost


class NodeCost:
    """What a node's frame costs under one profile, for any number of entries (memoised).

    Link profiles: the exact wire frame (edge.frame.frame_length) through edge.cost.LinkCost.
    Paper profiles: the paper's P(T) through its payload/affine/packet model (no airtime or
    energy: NaN). The frame bytes are the real wire frame in both cases.
    """

    def __init__(self, profile: dict, model: CostModel) -> None:
        self.profile = profile
        self.model = model
        self.memo: dict[tuple[int, int], tuple] = {}

    def __call__(self, m: int) -> tuple[int, float, float, float, float, float, float]:
        """(frame bytes, bits, bytes, packets, seconds, joules, metric) for m entries."""
        cm = self.model
        key = (m, cm.version)
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        fb = frame_length(cm.d, m, cm.scheme, cm.fmt, cm.telemetry, cm.job, cm.node, cm.rnd)
        if self.profile["kind"] == "paper":
            paper = self.profile["paper"]
            pay = paper_payload_bits(cm.scheme, cm.d, m, 8.0 * paper["fpp_bytes"])
            bits = paper_cost(paper, "bits", pay)
            pk = paper_cost(paper, "packets", pay)
            val = (fb, bits, bits / 8.0, pk, math.nan, math.nan, paper_cost(paper, cm.metric, pay))
        else:
            # an SS frame can draw more entries than the largest that fits: it then goes as
            # several messages (priced so), rather than stopping the run
            mx = int(self.profile["message"]["max_bytes"])
            sizes = [fb] if fb <= mx else [mx] * (fb // mx) + ([fb % mx] if fb % mx else [])
            tot = [0.0] * 6
            for size in sizes:
                lc = LinkCost(self.profile, size)
                for i, v in enumerate((8.0 * lc.tx_bytes, float(lc.tx_bytes), float(lc.packets), lc.seconds,
                                       lc.joules, lc.metric(cm.metric))):
                    tot[i] += v
            val = (fb, *tot)
        self.memo[key] = val
        return val


def profile_dict(profile: str | dict) -> dict:

    if isinstance(profile, dict):
        return profile
    try:
        return load_profile(profile)
    except ProfileError as e:
        raise UserError(str(e)) from None


# ------------------------------------------------------------------------------ simulate


def link_models(prof: dict, dim: int, scheme: int, metric: str, fmt: int, telemetry: bool, nodes: int,
                rounds: int) -> list[CostModel]:
    """One CostModel per node, and (by building it at the run's last round first) the check
    that updates fit the link in every round: the round number is in the frame header, so
    a frame grows by a byte at rounds 24, 256 and 65536. set_round(r) keeps t_max right for
    each round as the run goes (compress is called with models[k].t_max)."""
    models = []
    for k in range(nodes):
        m = CostModel(prof, dim, scheme, metric, fmt, telemetry, 0, k, max(0, rounds - 1))
        m.t_max_all_rounds = m.t_max     # the longest header of the run: fits every round
        m.set_round(0)
        models.append(m)
    return models


def cat_costs(cfg: SimConfig, prof: dict, metric: str, models: list[CostModel], problem: Problem) -> list:
    """What each node's CAT maximises against: its CostModel, or with cfg.board (energy-aware
    CAT, edge/energycost.py) the frame's joules plus the board's CPU joules for its data."""
    if not cfg.board:
        return models
    from aggregator.lab import boardcompute
    from edge.energycost import BoardCost

    if prof["kind"] != "link" or metric != "joules":
        raise ValueError("energy-aware CAT (board) needs a link profile and the joules metric")
    board = boardcompute.load("board", cfg.board)
    cal = boardcompute.load("compute", "micropython32")
    out = []
    for m, (X, _) in zip(models, problem.parts):
        nnz = X.nnz if sp.issparse(X) else X.size
        k = min(cfg.cap or problem.dim, m.t_max_all_rounds)
        terms = boardcompute.cat_terms(board, cal, problem.dim, nnz, k)
        if not cfg.board_round:
            terms["round_j"] = 0.0
        out.append(BoardCost(m, **terms))
    return out


class Infeasible(ValueError):
    """The run cannot happen on this link (e.g. the frame exceeds the largest message)."""


def simulate(problem: Problem, cfg: SimConfig, progress: bool = True,
             callback: Callable[[int, np.ndarray, list], None] | None = None) -> SimResult:
    """Run cfg.rounds rounds of eq. (10) on problem; see the module docstring.

    callback(r, x, grads) sees the model and the node gradients of every round (alpha experiment).
    Raises Infeasible when the scheme's smallest frame (or a fixed T) does not fit the link.
    """
    from tqdm import tqdm

    prof = profile_dict(cfg.profile)
    scheme = scheme_id(cfg.scheme)
    n = problem.nodes
    dim = problem.dim
    R = int(cfg.rounds)
    metric = cfg.metric or prof["default_metric"]
    scale = cfg.step / problem.L
    link = prof["kind"] == "link"
    models = link_models(prof, dim, scheme, metric, cfg.fmt, cfg.telemetry, n, R)
    tables = [np_backend.CostTable(c) for c in cat_costs(cfg, prof, metric, models, problem)]
    costs = [NodeCost(prof, m) for m in models]
    t_max = min(m.t_max_all_rounds for m in models)
    if t_max < 1:
        raise Infeasible(f"{prof['name']}: the smallest {SCHEME_NAMES[scheme]} frame "
                         f"({frame_length(dim, dim if scheme == SCHEME_IDENTITY else 1, scheme, cfg.fmt)} B) "
                         f"exceeds the link's largest message ({prof['message']['max_bytes']:.0f} B)")
    if scheme != SCHEME_IDENTITY:
        kind = rule_id(cfg.rule)
        if kind == rule_id("identity"):
            raise ValueError("rule identity goes with scheme identity")
        if kind == rule_id("fixed") and cfg.rule_param > t_max:
            raise Infeasible(f"{prof['name']}: T={cfg.rule_param} exceeds the largest T whose frame fits "
                             f"the link ({t_max})")
        if kind == rule_id("alistarh") and scheme_id(cfg.scheme) != scheme_id("sq"):
            pass  # the backend applies Alistarh's rule to any scheme; the paper uses it for S+Q
        rules = [Rule(kind, cfg.rule_param) for _ in range(n)]
    else:
        rules = [None] * n
    rng_ss = [np.random.default_rng([cfg.seed, 1, k]) for k in range(n)]
    rng_mb = [np.random.default_rng([cfg.seed, 2, k]) for k in range(n)]
    x = np.zeros(dim, dtype=np.float32)
    e = [np.zeros(dim, dtype=np.float32) for _ in range(n)] if cfg.error_feedback else None

    loss = np.full(R + 1, np.nan)
    gnorm = np.full(R + 1, np.nan)
    acc = np.full(R + 1, np.nan)
    shape = (R, n)
    T = np.zeros(shape, dtype=np.int64)
    ent = np.zeros(shape, dtype=np.int64)
    fbytes = np.zeros(shape, dtype=np.int64)
    rec = {m: np.zeros(shape) for m in METRICS}
    cost = np.zeros(shape)
    imp = np.zeros(shape)
    sel = np.zeros(shape)
    down = np.zeros(R + 1, dtype=np.int64)
    round_s = np.zeros(R + 1)
    mask = np.zeros(dim, dtype=bool)
    acc_sum = np.zeros(dim)
    full = cfg.batch is None or cfg.batch <= 0
    f_star = problem.f_star
    t_start = time.perf_counter()
    ran = R
    bar = tqdm(range(R), desc=cfg.name(), disable=not progress, leave=False, unit="round",
               dynamic_ncols=True)
    for r in bar:
        t0 = time.perf_counter()
        x64 = x.astype(np.float64)
        grads = []
        fsum = 0.0
        for k, (X, y) in enumerate(problem.parts):
            if full:
                fk, gk = ds.loss_grad_np(X, y, x64, problem.lam, problem.kind)
                fsum += fk
            else:
                b = min(int(cfg.batch), X.shape[0])
                rows = rng_mb[k].choice(X.shape[0], size=b, replace=False)
                _, gk = ds.loss_grad_np(X[rows], y[rows], x64, problem.lam, problem.kind)
            grads.append(gk)
        if full:
            loss[r] = fsum / n
            gnorm[r] = float(np.linalg.norm(sum(grads) / n))
        if r % cfg.eval_every == 0:
            if not full:
                f, g = problem.loss_grad(x64)
                loss[r] = f
                gnorm[r] = float(np.linalg.norm(g))
            acc[r] = problem.accuracy(x64)
        if callback is not None:
            callback(r, x, grads)
        if cfg.stop_gap is not None and f_star is not None and loss[r] - f_star <= cfg.stop_gap:
            ran = r
            break
        acc_sum[:] = 0.0
        for k in range(n):
            if link:
                models[k].set_round(r)
            g = grads[k].astype(np.float32)
            if e is not None:
                v = (g.astype(np.float64) * scale + e[k]).astype(np.float32)
                s = 1.0
            else:
                v = g
                s = scale
            ts = time.perf_counter()
            idx, vals, ch = np_backend.compress(v, scheme, rules[k], tables[k], models[k].t_max, s,
                                                rng_ss[k], cfg.fmt, cfg.cap)
            sel[r, k] = time.perf_counter() - ts
            m = int(idx.shape[0])
            if e is not None:
                ek = v.copy()
                ek[idx] -= vals
                e[k] = ek
            acc_sum[idx] += vals
            mask[idx] = True
            t_k = dim if ch is None else ch.t
            T[r, k] = t_k
            ent[r, k] = m
            fb, bits, byt, pk, secs, joules, c = costs[k](m)
            fbytes[r, k] = fb
            rec["bits"][r, k] = bits
            rec["bytes"][r, k] = byt
            rec["packets"][r, k] = pk
            rec["seconds"][r, k] = secs
            rec["joules"][r, k] = joules
            cost[r, k] = c
            imp[r, k] = 1.0 if ch is None else ch.improvement
        down[r] = int(np.count_nonzero(mask))
        mask[:] = False
        x = (x.astype(np.float64) - acc_sum / n).astype(np.float32)
        round_s[r] = time.perf_counter() - t0
        if not np.all(np.isfinite(x)):
            raise FloatingPointError(f"model diverged at round {r} ({cfg.name()}); lower --step")
    else:
        x64 = x.astype(np.float64)
        f, g = problem.loss_grad(x64)
        loss[R] = f
        gnorm[R] = float(np.linalg.norm(g))
        acc[R] = problem.accuracy(x64)
    bar.close()
    wall = time.perf_counter() - t_start
    sl = slice(0, ran)
    res = SimResult(
        config=asdict(cfg) | {"metric": metric, "scale": scale, "t_max": t_max, "name": cfg.name()},
        problem={"name": problem.name, "nodes": n, "rows": problem.rows, "d": problem.d, "dim": dim,
                 "kind": problem.kind, "lam": problem.lam, "L": problem.L, "classes": problem.classes}
        | problem.meta,
        loss=loss[:ran + 1], grad_norm=gnorm[:ran + 1], accuracy=acc[:ran + 1],
        T=T[sl], entries=ent[sl], frame_bytes=fbytes[sl], bits=rec["bits"][sl], bytes=rec["bytes"][sl],
        packets=rec["packets"][sl], seconds=rec["seconds"][sl], joules=rec["joules"][sl],
        cost=cost[sl], improvement=imp[sl], select_s=sel[sl], down_entries=down[:ran + 1],
        round_s=round_s[:ran + 1], f_star=f_star, wall_s=wall, label=cfg.name(), x_final=x,
        ef_memory=e)
    return res


def recost(res: SimResult, profile: str | dict, metric: str | None = None) -> dict[str, np.ndarray]:
    """The per-node costs of a finished run's frames under another profile (R x n arrays).

    Why: with a fixed T the trajectory does not depend on the link, so one run can be
    priced on every link. Entries over the link's largest frame make `feasible` False.
    """
    prof = profile_dict(profile)
    cfg = res.config
    dim = res.problem["dim"]
    scheme = scheme_id(cfg["scheme"])
    metric = metric or prof["default_metric"]
    n = res.T.shape[1]
    out = {m: np.zeros(res.T.shape) for m in METRICS + ("cost",)}
    models = link_models(prof, dim, scheme, metric, cfg["fmt"], cfg["telemetry"], n, res.rounds)
    nc = [NodeCost(prof, m) for m in models]
    t_max = min(m.t_max_all_rounds for m in models)
    biggest = int(res.entries.max()) if res.entries.size else 0
    if prof["kind"] == "link" and (t_max < 1 or biggest > t_max):
        out["feasible"] = False  # type: ignore[assignment]
        out["t_max"] = t_max  # type: ignore[assignment]
        return out  # frames over the link's largest message cannot be priced (nor sent)
    for r in range(res.rounds):
        for k in range(n):
            if prof["kind"] == "link":
                models[k].set_round(r)
            fb, bits, byt, pk, secs, joules, c = nc[k](int(res.entries[r, k]))
            for name, v in zip(METRICS + ("cost",), (bits, byt, pk, secs, joules, c)):
                out[name][r, k] = v
    out["feasible"] = True  # type: ignore[assignment]
    out["t_max"] = t_max  # type: ignore[assignment]
    return out


def cumulative(per_round: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(per_round.sum(axis=1))])


# ------------------------------------------------------------------------------ CLI


#: the default small problem: RCV1-like statistics (power-law features, L2 rows, ~15 rows
#: per feature as RCV1's 697,641 / 47,236) at a size where an experiment takes a minute.
SMALL = {"rows": 45_000, "features": 3_000, "nnz": 30.0}
#: RCV1's size (paper section 2): `--full`.
FULL = {"rows": ds.RCV1_N, "features": ds.RCV1_D, "nnz": float(ds.RCV1_NNZ)}


def add_data_args(p: argparse.ArgumentParser, default: str = "synthetic") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", "--dataset", dest="data", default=default,
                   help="builtin (digits, digits-binary, breast_cancer, iris, wine), 'synthetic' "
                        "(RCV1-like), a LIBSVM file (e.g. rcv1_train.binary), a .catd file, or a "
                        f"partition directory (default {default})")
    g.add_argument("--full", action="store_true",
                   help="synthetic at RCV1's size: 697,641 rows x 47,236 features, 76 nnz/row")
    g.add_argument("--rows", type=int, default=None,
                   help=f"synthetic: rows (default {SMALL['rows']}; RCV1 {FULL['rows']})")
    g.add_argument("--features", type=int, default=None,
                   help=f"synthetic: features (default {SMALL['features']}; RCV1 {FULL['features']}); "
                        "LIBSVM: n_features")
    g.add_argument("--nnz", type=float, default=None,
                   help=f"synthetic: mean nonzeros per row (default {SMALL['nnz']:g}; RCV1 {FULL['nnz']:g})")
    g.add_argument("--normalize", action="store_true", help="LIBSVM: L2-normalise rows")
    g.add_argument("--lam", type=float, default=1e-4, help="L2 regularisation lambda (default 1e-4)")
    g.add_argument("--model", choices=("logistic", "softmax"), default=None,
                   help="default: logistic for 2 classes, softmax otherwise")
    g.add_argument("--smoothness", choices=("trace", "spectral"), default="spectral",
                   help="L bound put in the job config: spectral (lambda_max, default; the trace "
                        "bound the boards can compute is ~100x looser on sparse data) or trace")
    g.add_argument("--mode", choices=("even", "skewed"), default="even", help="data split over nodes")
    g.add_argument("--alpha", type=float, default=0.5, help="skewed split: Dirichlet alpha")
    g.add_argument("--seed", type=int, default=0)


def data_size(args: argparse.Namespace) -> tuple[int | None, int | None, float | None]:
    """(rows, features, nnz) for the synthetic generator: flags, else --full, else SMALL."""
    base = FULL if getattr(args, "full", False) else SMALL
    synth = str(args.data).replace("_", "-").lower() in SYNTHETIC_NAMES
    if not synth:
        return args.rows, args.features, args.nnz
    return (args.rows or base["rows"], args.features or base["features"], args.nnz or base["nnz"])


def problem_from_args(args: argparse.Namespace, nodes: int, data: Any = None) -> Problem:
    """The Problem the data flags describe, split over `nodes` (data: an already loaded dataset)."""

    if data is None:
        data = data_from_args(args)
    try:
        return make_problem(data, nodes, args.mode, args.lam, args.model, args.seed, args.alpha,
                            args.smoothness)
    except ValueError as e:
        raise UserError(str(e)) from None


def data_from_args(args: argparse.Namespace) -> Any:
    rows, features, nnz = data_size(args)
    return load_data(args.data, rows, features, nnz, args.seed, args.normalize)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from aggregator.lab import reports

    try:
        scheme_id(args.scheme)
        rk = rule_id(args.rule)
    except ValueError as e:
        raise UserError(str(e)) from None
    if scheme_id(args.scheme) == SCHEME_IDENTITY:
        args.rule = "identity"
    elif rk == rule_id("identity"):
        args.scheme = "identity"
    param = args.T if args.rule == "fixed" else args.period if args.rule == "hybrid" else 0
    if args.rule == "fixed" and not args.T:
        raise UserError("--rule fixed needs --T")
    t0 = time.perf_counter()
    problem = problem_from_args(args, args.nodes)
    t_load = time.perf_counter() - t0
    print(f"data {problem.name}: {problem.rows} rows, d = {problem.d}, model size {problem.dim}, "
          f"{problem.nodes} node(s), L = {problem.L:.6g} ({t_load:.1f} s to load)")
    if args.target is not None:
        t0 = time.perf_counter()
        problem.solve()
        print(f"f* = {problem.f_star:.8g} (L-BFGS, {time.perf_counter() - t0:.1f} s)")
    cfg = SimConfig(scheme=args.scheme, rule=args.rule, rule_param=param or 0, profile=args.profile,
                    metric=args.metric, rounds=args.rounds, batch=args.batch, error_feedback=args.ef,
                    step=args.step, fmt=1 if args.fmt == "f16" else 0, cap=args.cap, seed=args.seed,
                    eval_every=args.eval_every)
    try:
        res = simulate(problem, cfg, progress=not args.quiet)
    except (Infeasible, ValueError) as e:
        raise UserError(str(e)) from None
    out = Path(args.out or reports.default_out("simulate"))
    res.save(out)
    s = res.summary()
    lines: list[str] = []

    def say(t: str) -> None:
        lines.append(t)
        print(t)

    say(f"{res.label}: {res.rounds} rounds in {res.wall_s:.1f} s = {s['s_per_round']:.4f} s/round "
          f"(1,000 rounds: {1000 * s['s_per_round'] / 60:.1f} min)")
    line = f"final loss {s['final_loss']:.6g}, ||grad F|| {s['final_grad_norm']:.3g}, accuracy {s['final_accuracy']:.4f}"
    if problem.f_star is not None:
        line += f", gap {s['final_gap']:.3g}"
    say(line)
    radio = "" if math.isnan(s["total_seconds"]) else \
        f", {s['total_seconds']:.4g} s airtime, {s['total_joules']:.4g} J"
    say(f"total over nodes: {s['total_bits']:.4g} bits, {s['total_bytes']:.4g} bytes, "
        f"{s['total_packets']:.4g} packets{radio}; median T {s['T_median']:.0f}; "
        f"selection {s['select_ms_mean']:.2f} ms/node/round")
    if args.target is not None and problem.f_star is not None:
        gap0 = float(res.loss[0] - problem.f_star)
        v, ok = res.to_reach(args.target * gap0, "bits")
        say(f"bits to {args.target:g} of the initial gap: {v:.4g}" + ("" if ok else " (not reached: lower bound)"))
    plots = [] if args.no_plots else reports.plot_runs([res], out, "simulate", gap=problem.f_star is not None,
                                                        metrics=("bits", "packets", "seconds", "joules"))
    rows = [{"quantity": k, "value": v} for k, v in s.items()]
    md = reports.write_table(rows, out, "summary", ["quantity", "value"])
    reports.write_report(out, f"simulate: {res.label}", reports.command_line(args), lines,
                         {"Summary": md}, plots,
                         notes=["Per-round records: rounds.csv (loss, ||grad F||, accuracy) and nodes.csv "
                                "(T, entries, frame bytes, bits, link bytes, packets, airtime, energy, "
                                "selection time per node); run.json holds the configuration."],
                         params=res.problem)
    print(f"wrote {out}")
    return 0


def _cmd_partition(args: argparse.Namespace) -> int:

    rows, features, nnz = data_size(args)
    data = load_data(args.data, rows, features, nnz, args.seed, args.normalize)
    if isinstance(data, list):
        raise UserError("the dataset is already a partition directory")
    try:
        parts = ds.partition(data.X, data.y, args.nodes, mode=args.mode, seed=args.seed, alpha=args.alpha)
        paths = ds.write_partition(args.out, parts, data.classes, layout=args.layout,
                                   meta={"dataset": data.name, "mode": args.mode, "seed": args.seed,
                                         "alpha": args.alpha if args.mode == "skewed" else None})
    except ValueError as e:
        raise UserError(str(e)) from None
    for p, (X, y) in zip(paths, parts):
        counts = np.bincount(y, minlength=data.classes)
        print(f"{p}: {X.shape[0]} rows x {X.shape[1]}, classes {counts.tolist()}")
    print(f"wrote {Path(args.out) / 'partition.json'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="simulate federated CAT training of n nodes (eq. 10)",
                       description=__doc__.split("\n\n")[0])
    add_data_args(p, default="synthetic")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--scheme", default="s", help="identity, s, sq (S+Q) or ss")
    p.add_argument("--rule", default="cat", help="cat, fixed, alistarh, hybrid or identity")
    p.add_argument("--T", type=int, default=0, help="fixed rule: entries per update")
    p.add_argument("--period", type=int, default=200, help="hybrid rule: CAT every S rounds")
    p.add_argument("--profile", default="paper-packet-128-64-128", help="cost profile name or .toml path")
    p.add_argument("--metric", default=None, help="CAT's cost metric (default: the profile's)")
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--batch", type=int, default=None, help="mini-batch rows per node (default: full)")
    p.add_argument("--ef", action="store_true", help="error feedback (memory)")
    p.add_argument("--step", type=float, default=1.0, help="step multiplier on the lemma's step")
    p.add_argument("--fmt", choices=("f32", "f16"), default="f32")
    p.add_argument("--cap", type=int, default=None, help="candidate cap K (board RAM)")
    p.add_argument("--eval-every", type=int, default=1, help="accuracy (and mini-batch loss) every N rounds")
    p.add_argument("--target", type=float, default=None,
                   help="solve f* and report bits to this fraction of the initial gap")
    p.add_argument("--out", default=None)
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_simulate, _parser=p, _words=["simulate"])

    q = sub.add_parser("partition", help="split a dataset over nodes into CATD files")
    q.add_argument("--dataset", "--data", dest="data", required=True,
                   help="digits, digits-binary, breast_cancer, iris, wine, synthetic, or a LIBSVM/.catd path")
    q.add_argument("--nodes", type=int, required=True)
    q.add_argument("--mode", choices=("even", "skewed"), default="even")
    q.add_argument("--alpha", type=float, default=0.5, help="skewed: Dirichlet alpha")
    q.add_argument("--full", action="store_true", help="synthetic at RCV1's size")
    q.add_argument("--rows", type=int, default=None)
    q.add_argument("--features", type=int, default=None)
    q.add_argument("--nnz", type=float, default=None)
    q.add_argument("--normalize", action="store_true")
    q.add_argument("--layout", choices=("auto", "dense", "csr"), default="auto")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--out", required=True)
    q.set_defaults(func=_cmd_partition, _parser=q, _words=["partition"])
