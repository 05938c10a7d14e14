"""Multi-node simulation of the compressed gradient method, eq. (10) of the paper.

Every round each node k computes g_k = grad f_k(x) (full or a mini-batch) on its partition
of a `problem.Problem`, compresses it with the *edge's own* numpy backend
(`edge.np_backend.compress`, the same decisions the boards make, for every node of the round
at once as `compress_rows`; no second implementation lives here) under its own `Rule` and a
`CostTable` of its `CostModel` (with `SimConfig.board`, energy-aware CAT: the frame's joules
plus the board's CPU joules, `cat_costs`), and the gateway
applies x <- x - (1/n) sum_k u_k to a float32 model. With error feedback node k keeps e_k
and compresses v = g_k / L + e_k instead (scale 1), then e_k <- v - q.

Why vectorised numpy/scipy and not the edge's pure loops: the gradient on RCV1-sized CSR
data is the cost of a round; it is two sparse mat-vecs here. Why across nodes too: with many
nodes and small parts, one numpy or scipy call per node per step costs more than the
arithmetic, so a round's gradients are one pair of mat-vecs on the stacked parts and its
selections one `compress_rows` call, each bit-identical to the node-by-node loop
(`simulate(..., batched=False)`, kept as the reference).

Per round it records the loss, ||grad F||, accuracy, and per node: T, entries sent, the
exact wire-frame bytes, link bytes/bits/packets/airtime/energy under the profile, the
profile's CAT metric, the improvement and the wall-clock of selection (`results.SimResult`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
from tqdm import tqdm

from aggregator.errors import UserError
from aggregator.gateway.wire import delta_frame_length
from aggregator.lab import boardcompute
from aggregator.lab import datasets as ds
from aggregator.lab.pricing import COST_METRICS, PACKET_SMALL, NodeCost, link_models, profile_dict
from aggregator.lab.problem import Problem
from aggregator.lab.results import NODE_COLUMNS, SimResult
from edge import np_backend
from edge.cat import RULE_NAMES, SCHEME_IDENTITY, SCHEME_NAMES, SCHEME_SS, Rule, rule_id, scheme_id
from edge.catef import EFRule
from edge.cost import CostModel
from edge.deltacost import DeltaShare
from edge.energycost import BoardCost
from edge.frame import frame_length


#: rule catavg scoring the direction error feedback sends against the node's gradient
#: (edge/catef.py), a simulator rule: a board does not keep the gradient apart from the
#: residual (edge/feedback.py), so a job cannot select it
EF_RULE = "catef"


class SimError(UserError):
    """A simulated run that cannot happen as set up (a rule that does not go with the scheme ...)."""


class Infeasible(SimError):
    """The run cannot happen on this link (e.g. the frame exceeds the largest message)."""


class Diverged(SimError):
    """The model became non-finite: the step is too large for this problem."""


def scheme_label(scheme: str) -> str:
    """How tables and legends name a scheme: S, S+Q, SS (the paper's names), IDENTITY."""
    return SCHEME_NAMES[scheme_id(scheme)].upper().replace("SQ", "S+Q")


@dataclass
class SimConfig:
    """One simulated run. rule_param is T for `fixed` and the period S for `hybrid`."""

    scheme: str = "s"
    rule: str = "catavg"            # the project's default; "cat" is the paper's rule; EF_RULE a simulator one
    rule_param: int = 0
    profile: str = PACKET_SMALL
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
    delta_share: bool = False       # CAT counts the node's fetch of the round's delta (edge/deltacost.py)

    def name(self) -> str:
        if self.label:
            return self.label
        if scheme_id(self.scheme) == SCHEME_IDENTITY:
            return "GD"
        sch = scheme_label(self.scheme)
        r = EF_RULE if self.rule == EF_RULE else RULE_NAMES[rule_id(self.rule)]
        tag = {"cat": "CAT", "catavg": "CATavg", EF_RULE: "CATef", "alistarh": "Alistarh",
               "fixed": f"T={self.rule_param}", "hybrid": f"hybrid-{self.rule_param}"}.get(r, r)
        return f"{tag} {sch}" + (" +EF" if self.error_feedback else "") + (" +delta" if self.delta_share else "")


def delta_fetch(prof: dict, dim: int, fmt: int, metric: str, rnd: int = 0) -> Callable[[int], float]:
    """fetch(m): what fetching the round's delta of m entries costs a node on a link profile, in
    joules or seconds of radio time (aggregator/lab/energy.py downlink_energy: the Block2 walk on
    a walked profile), cached per frame size."""
    from aggregator.lab.energy import downlink_energy
    if prof["kind"] != "link" or metric not in ("joules", "seconds"):
        raise SimError("the delta's share needs a link profile and the joules or seconds metric")
    cache: dict[int, float] = {}

    def fetch(m: int) -> float:
        n = delta_frame_length(dim, m, fmt, 0, rnd)
        if n not in cache:
            e = downlink_energy(prof, n)
            cache[n] = e.tx_j + e.rx_j if metric == "joules" else e.radio_s
        return cache[n]

    return fetch


def cat_costs(cfg: SimConfig, prof: dict, metric: str, models: list[CostModel], problem: Problem) -> list:
    """What each node's CAT maximises against: its CostModel; with cfg.board (energy-aware CAT,
    edge/energycost.py) plus the board's CPU joules for its data; with cfg.delta_share
    (edge/deltacost.py) plus its fetch of the delta every node's T makes."""
    out: list = list(models)
    if cfg.board:
        if prof["kind"] != "link" or metric != "joules":
            raise SimError("energy-aware CAT (board) needs a link profile and the joules metric")
        board = boardcompute.load("board", cfg.board)
        cal = boardcompute.load("compute", "micropython32")
        out = []
        for m, nnz in zip(models, problem.nnz()):
            k = min(cfg.cap or problem.dim, m.t_max_all_rounds)
            terms = boardcompute.cat_terms(board, cal, problem.dim, nnz, k)
            if not cfg.board_round:
                terms["round_j"] = 0.0
            out.append(BoardCost(m, **terms))
    if cfg.delta_share:
        fetch = delta_fetch(prof, problem.dim, cfg.fmt, metric, max(0, int(cfg.rounds) - 1))
        out = [DeltaShare(c, problem.nodes, fetch) for c in out]
    return out


def _rules(cfg: SimConfig, scheme: int, nodes: int, t_max: int, prof: dict) -> list[Rule | None]:
    """Each node's Rule (None for GD), after checking the rule goes with the scheme and a
    fixed T fits the link (Infeasible otherwise). Alistarh's rule is applied to any scheme
    by the backend; the paper uses it for S+Q."""
    if scheme == SCHEME_IDENTITY:
        return [None] * nodes
    if cfg.rule == EF_RULE:
        if not cfg.error_feedback:
            raise SimError(f"rule {EF_RULE} scores the update error feedback sends: it needs error feedback")
        return [EFRule(nodes, np.zeros(0)) for _ in range(nodes)]  # grad: set every round (simulate)
    kind = rule_id(cfg.rule)
    if kind == rule_id("identity"):
        raise SimError("rule identity goes with scheme identity")
    if kind == rule_id("fixed") and cfg.rule_param > t_max:
        raise Infeasible(f"{prof['name']}: T={cfg.rule_param} exceeds the largest T whose frame fits "
                         f"the link ({t_max})")
    if kind == rule_id("catavg"):
        return [Rule(kind, nodes) for _ in range(nodes)]  # its parameter is the job's node count
    return [Rule(kind, cfg.rule_param) for _ in range(nodes)]


class _Records:
    """The arrays a run fills: per model (R + 1) and per round and node (R x n)."""

    def __init__(self, rounds: int, nodes: int) -> None:
        self.loss = np.full(rounds + 1, np.nan)
        self.grad_norm = np.full(rounds + 1, np.nan)
        self.accuracy = np.full(rounds + 1, np.nan)
        self.down_entries = np.zeros(rounds + 1, dtype=np.int64)
        self.round_s = np.zeros(rounds + 1)
        ints = ("T", "entries", "frame_bytes")
        self.node = {c: np.zeros((rounds, nodes), dtype=np.int64 if c in ints else np.float64)
                     for c in NODE_COLUMNS}

    def evaluate(self, r: int, problem: Problem, x64: np.ndarray, batched: bool = True) -> None:
        """Loss, ||grad F|| and accuracy at model r, on every node's full data."""
        f, g = problem.loss_grad(x64, stacked=batched)
        self.loss[r] = f
        self.grad_norm[r] = float(np.linalg.norm(g))
        self.accuracy[r] = problem.accuracy(x64, stacked=batched)

    def node_costs(self, r: int, k: int, priced: tuple) -> None:
        """Store NodeCost's (frame bytes, COST_METRICS..., CAT metric) for node k in round r."""
        fb, *metrics, c = priced
        self.node["frame_bytes"][r, k] = fb
        for name, v in zip(COST_METRICS, metrics):
            self.node[name][r, k] = v
        self.node["cost"][r, k] = c

    def arrays(self, ran: int) -> dict[str, np.ndarray]:
        """The SimResult arrays of a run that made `ran` rounds."""
        m = slice(0, ran + 1)
        return {"loss": self.loss[m], "grad_norm": self.grad_norm[m], "accuracy": self.accuracy[m],
                "down_entries": self.down_entries[m], "round_s": self.round_s[m]} | \
            {c: a[:ran] for c, a in self.node.items()}


def _gradients(problem: Problem, x64: np.ndarray, batch: int | None,
               rng_mb: list[np.random.Generator], batched: bool = True) -> tuple[np.ndarray, float | None]:
    """Every node's gradient at x64 (full data, or a mini-batch of `batch` rows) as a
    (nodes, dim) array, and F(x) when it came for free (full data). batched: all nodes in one
    computation when their parts stack (`Problem.loss_grads`), else part by part."""
    full = batch is None or batch <= 0
    rows = None
    if not full:
        rows = [rng_mb[k].choice(X.shape[0], size=min(int(batch), X.shape[0]), replace=False)
                for k, (X, _) in enumerate(problem.parts)]
    fs, grads = problem.loss_grads(x64, rows, stacked=batched)
    return grads, (sum(fs) / problem.nodes if full else None), rows


def _noise_priors(problem: Problem, x64: np.ndarray, v: np.ndarray, rows: list | None, rules: list,
                  agreements: list) -> None:
    """catavg: the weights of every node that has read no delta yet (round 0) from its own
    sampling noise (edge.noiseprior), on the rows its gradient used; one node needs none."""
    for k, ag in enumerate(agreements):
        if ag is None or ag.n or rules[k].param < 2:
            continue
        X, y = problem.parts[k]
        if rows is not None:
            X, y = X[rows[k]], y[rows[k]]
        m1, m2 = ds.grad_moments_np(X, y, x64, problem.kind)
        np_backend.noise_prior(ag, v[k], m1, m2, X.shape[0], problem.lam * x64, rules[k].param)


def simulate(problem: Problem, cfg: SimConfig, progress: bool = True,
             callback: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
             batched: bool = True) -> SimResult:
    """Run cfg.rounds rounds of eq. (10) on problem; see the module docstring.

    callback(r, x, grads) sees the model and the node gradients (one row per node) of every
    round (alpha experiment). batched: every node's gradient and selection of a round in one
    computation (`Problem.loss_grads`, `np_backend.compress_rows`); False runs them node by
    node, the reference the batched run equals array for array (select_s and the wall-clocks
    aside).
    Raises Infeasible when the scheme's smallest frame (or a fixed T) does not fit the link,
    SimError for a rule that does not go with the scheme, Diverged when the model blows up.
    """
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
        smallest = frame_length(dim, dim if scheme == SCHEME_IDENTITY else 1, scheme, cfg.fmt, cfg.telemetry,
                                0, 0, max(0, R - 1))
        raise Infeasible(f"{prof['name']}: the smallest {SCHEME_NAMES[scheme]} frame ({smallest} B) "
                         f"exceeds the link's largest message ({prof['message']['max_bytes']:.0f} B)")
    rules = _rules(cfg, scheme, n, t_max, prof)
    # catavg's Agreement per node (S and S+Q; under SS it is cat's omega)
    agreements = [r.agree(min(dim, t_max, cfg.cap or dim), dim) if r is not None and scheme != SCHEME_SS else None
                  for r in rules]
    sent: list = [None] * n
    rng_ss = [np.random.default_rng([cfg.seed, 1, k]) for k in range(n)]
    rng_mb = [np.random.default_rng([cfg.seed, 2, k]) for k in range(n)]
    x = np.zeros(dim, dtype=np.float32)
    e = np.zeros((n, dim), dtype=np.float32) if cfg.error_feedback else None
    select = _select_rows if batched else _select_each

    rec = _Records(R, n)
    node = rec.node
    mask = np.zeros(dim, dtype=bool)
    acc_sum = np.zeros(dim)
    f_star = problem.f_star
    t_start = time.perf_counter()
    ran = R
    bar = tqdm(range(R), desc=cfg.name(), disable=not progress, leave=False, unit="round",
               dynamic_ncols=True)
    for r in bar:
        t0 = time.perf_counter()
        x64 = x.astype(np.float64)
        grads, f, rows = _gradients(problem, x64, cfg.batch, rng_mb, batched)
        if f is not None:
            rec.loss[r] = f
            rec.grad_norm[r] = float(np.linalg.norm(sum(grads) / n))
            if r % cfg.eval_every == 0:
                rec.accuracy[r] = problem.accuracy(x64, stacked=batched)
        elif r % cfg.eval_every == 0:
            rec.evaluate(r, problem, x64, batched)
        if callback is not None:
            callback(r, x, grads)
        if cfg.stop_gap is not None and f_star is not None and rec.loss[r] - f_star <= cfg.stop_gap:
            ran = r
            break
        acc_sum[:] = 0.0
        if link:
            for mk in models:
                mk.set_round(r)
        g = grads.astype(np.float32)
        if e is not None:
            gh = g.astype(np.float64) * scale
            v = (gh + e).astype(np.float32)
            s = 1.0
            for k, rule in enumerate(rules):
                if isinstance(rule, EFRule):
                    rule.grad = gh[k]
        else:
            v = g
            s = scale
        if agreements[0] is not None and scheme != SCHEME_IDENTITY:
            _noise_priors(problem, x64, v, rows, rules, agreements)
        picks = select(v, scheme, rules, tables, [mk.t_max for mk in models], s, rng_ss, cfg, node["select_s"][r])
        for k, (idx, vals, ch) in enumerate(picks):
            m = int(idx.shape[0])
            if e is not None:
                e[k] = v[k]
                e[k, idx] -= vals
            acc_sum[idx] += vals
            mask[idx] = True
            sent[k] = (idx, vals)
            node["T"][r, k] = dim if ch is None else ch.t
            node["entries"][r, k] = m
            rec.node_costs(r, k, costs[k](m))
            node["improvement"][r, k] = 1.0 if ch is None else ch.improvement
        rec.down_entries[r] = int(np.count_nonzero(mask))
        mask[:] = False
        x_new = (x.astype(np.float64) - acc_sum / n).astype(np.float32)
        if agreements[0] is not None and scheme != SCHEME_IDENTITY:
            # catavg: each node reads the delta it syncs (the gateway's float32 of the mean)
            # against its own update
            synced = (acc_sum / n).astype(np.float32).astype(np.float64)
            for k, ag in enumerate(agreements):
                np_backend.observe(ag, sent[k][0], sent[k][1], synced)
        x = x_new
        rec.round_s[r] = time.perf_counter() - t0
        if not np.all(np.isfinite(x)):
            raise Diverged(f"model diverged at round {r} ({cfg.name()}); lower --step")
    else:
        rec.evaluate(R, problem, x.astype(np.float64), batched)
    bar.close()
    return SimResult(
        config=asdict(cfg) | {"metric": metric, "scale": scale, "t_max": t_max, "name": cfg.name()},
        problem={"name": problem.name, "nodes": n, "rows": problem.rows, "d": problem.d, "dim": dim,
                 "kind": problem.kind, "lam": problem.lam, "L": problem.L, "classes": problem.classes}
        | problem.meta,
        **rec.arrays(ran), f_star=f_star, wall_s=time.perf_counter() - t_start, label=cfg.name(), x_final=x,
        ef_memory=None if e is None else list(e))


def _select_rows(v: np.ndarray, scheme: int, rules: list, tables: list, t_maxes: list[int], scale: float,
                 rngs: list, cfg: SimConfig, select_s: np.ndarray) -> list:
    """Every node's compress of its row of v in one batch (np_backend.compress_rows); each
    node's select_s is the batch's wall-clock shared evenly (one call cannot be split)."""
    ts = time.perf_counter()
    out = np_backend.compress_rows(v, scheme, rules, tables, t_maxes, [scale] * v.shape[0], rngs,
                                   cfg.fmt, cfg.cap)
    select_s[:] = (time.perf_counter() - ts) / v.shape[0]
    return out


def _select_each(v: np.ndarray, scheme: int, rules: list, tables: list, t_maxes: list[int], scale: float,
                 rngs: list, cfg: SimConfig, select_s: np.ndarray) -> list:
    """Node by node (np_backend.compress per row, each timed): the reference of _select_rows."""
    out = []
    for k in range(v.shape[0]):
        ts = time.perf_counter()
        out.append(np_backend.compress(v[k], scheme, rules[k], tables[k], t_maxes[k], scale, rngs[k],
                                       cfg.fmt, cfg.cap))
        select_s[k] = time.perf_counter() - ts
    return out


def recost(res: SimResult, profile: str | dict, metric: str | None = None) -> dict[str, np.ndarray]:
    """The per-node costs of a finished run's frames under another profile (R x n arrays,
    one per COST_METRICS and `cost`, plus `feasible` and `t_max`).

    Why: with a fixed T the trajectory does not depend on the link, so one run can be
    priced on every link. Entries over the link's largest frame make `feasible` False.
    """
    prof = profile_dict(profile)
    cfg = res.config
    dim = res.problem["dim"]
    scheme = scheme_id(cfg["scheme"])
    metric = metric or prof["default_metric"]
    n = res.T.shape[1]
    names = COST_METRICS + ("cost",)
    out = {m: np.zeros(res.T.shape) for m in names}
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
            _, *values = nc[k](int(res.entries[r, k]))
            for name, v in zip(names, values):
                out[name][r, k] = v
    out["feasible"] = True  # type: ignore[assignment]
    out["t_max"] = t_max  # type: ignore[assignment]
    return out
