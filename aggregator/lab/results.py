"""The records of one simulated run, and the run-log files they are saved as (docs/experiments.md).

A run directory holds
* run.json: label, config, problem, f*, wall-clock, summary;
* rounds.csv: one row per model r = 0..R (loss, ||grad F||, accuracy; the delta entries and
  wall-clock of round r for r < R);
* nodes.csv: one row per (round, node) with T, entries, frame bytes and every cost metric.

`SimResult.save` writes it and `load` reads it back (the energy budget prices saved runs),
so the format has one home.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aggregator.errors import UserError
from aggregator.lab.pricing import COST_METRICS

ROUND_COLUMNS = ("loss", "grad_norm", "accuracy", "down_entries", "round_s")
NODE_COLUMNS = ("T", "entries", "frame_bytes") + COST_METRICS + ("cost", "improvement", "select_s")
_INT_COLUMNS = ("T", "entries", "frame_bytes", "down_entries")


class RunLogError(UserError):
    """A directory that is not a readable `simulate` run (no run.json, a malformed CSV)."""


def cumulative(per_round: np.ndarray) -> np.ndarray:
    """Totals over nodes (columns) spent before the model of round r: R + 1 values from 0."""
    return np.concatenate([[0.0], np.cumsum(per_round.sum(axis=1))])


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
        return cumulative(getattr(self, metric))

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
        for m in COST_METRICS:
            s["total_" + m] = float(getattr(self, m).sum())
        return s

    def save(self, out: Path) -> None:
        """Write run.json, rounds.csv and nodes.csv into `out` (created if missing)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"label": self.label, "config": self.config, "problem": self.problem,
                "f_star": self.f_star, "wall_s": self.wall_s, "summary": self.summary(),
                "infeasible": self.infeasible}
        (out / "run.json").write_text(json.dumps(meta, indent=1, default=_json_default))
        R = self.rounds
        with open(out / "rounds.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(("round",) + ROUND_COLUMNS)
            for r in range(R + 1):
                w.writerow([r, _fmt(self.loss[r]), _fmt(self.grad_norm[r]), _fmt(self.accuracy[r]),
                            int(self.down_entries[r]) if r < R else "", _fmt(self.round_s[r]) if r < R else ""])
        with open(out / "nodes.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(("round", "node") + NODE_COLUMNS)
            arrs = [getattr(self, c) for c in NODE_COLUMNS]
            for r in range(R):
                for k in range(self.T.shape[1]):
                    w.writerow([r, k] + [_fmt(a[r, k]) for a in arrs])


def load(path: Path) -> SimResult:
    """The SimResult a run directory holds (what `save` wrote; the model itself is not saved).

    Raises RunLogError when the directory is not a run or a file is malformed.
    """
    path = Path(path)
    if not (path / "run.json").exists():
        raise RunLogError(f"{path}: not a simulate output directory (no run.json)")
    try:
        meta = json.loads((path / "run.json").read_text())
        n = int(meta["problem"]["nodes"])
        with open(path / "rounds.csv") as f:
            rounds = list(csv.DictReader(f))
        with open(path / "nodes.csv") as f:
            nodes = list(csv.DictReader(f))
        R = len(rounds) - 1
        if R < 0:
            raise ValueError("rounds.csv has no rows")
        per = {c: np.zeros((R, n), dtype=np.int64 if c in _INT_COLUMNS else np.float64) for c in NODE_COLUMNS}
        for row in nodes:
            r, k = int(row["round"]), int(row["node"])
            for c in NODE_COLUMNS:
                per[c][r, k] = _parse(row[c], c)
        col = {c: np.zeros(R + 1, dtype=np.int64 if c in _INT_COLUMNS else np.float64) for c in ROUND_COLUMNS}
        for row in rounds:
            r = int(row["round"])
            for c in ROUND_COLUMNS:
                col[c][r] = _parse(row.get(c, ""), c)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise RunLogError(f"{path}: not a readable run log: {e}") from None
    return SimResult(config=meta.get("config", {}), problem=meta["problem"], **col, **per,
                     f_star=meta.get("f_star"), wall_s=float(meta.get("wall_s", 0.0)),
                     label=meta.get("label", ""), infeasible=meta.get("infeasible", ""))


def _parse(text: str, column: str) -> float:
    """A CSV cell as written by _fmt: '' is NaN (0 in an integer column)."""
    if text in ("", None):
        return 0 if column in _INT_COLUMNS else math.nan
    return int(float(text)) if column in _INT_COLUMNS else float(text)


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
