"""A board's compute on a round: seconds from the MicroPython calibration, and the numbers
energy-aware CAT needs (edge/energycost.py). Kept apart from the whole-board budget
(aggregator/lab/boardbudget.py) so the simulator can use it without the budget's imports.

A board's seconds = host seconds on the 32-bit build (cost_profiles/calibration) x the anchor
loop's time on the reference board / its time on the host / the board's mcu.speed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aggregator.errors import UserError
from edge import hwprofile
from edge.profile import ProfileError


class BoardBudgetError(UserError):
    """A board, battery or calibration profile or an option the budget cannot use."""


def load(kind: str, name: str) -> dict:
    """A validated board / battery / compute profile, or a one-line BoardBudgetError."""
    try:
        return hwprofile.load(kind, name)
    except ProfileError as e:
        raise BoardBudgetError(str(e)) from None


def host_to_board(board: dict, cal: dict) -> float:
    """Board seconds per host second of the 32-bit build: anchor(board) / anchor(host) / speed."""
    a = cal["anchor"]
    return a["board_seconds"] / a["host_seconds"] / board["mcu"]["speed"]


def compute_seconds(board: dict, cal: dict, d: int, nnz: float, k: float, t: Any) -> Any:
    """Seconds the board's MicroPython spends on a round (gradient over nnz nonzeros, selection
    over d, K candidates scanned, t entries encoded), scaled from the calibration."""
    s = cal["seconds"]
    host = s["per_nnz"] * nnz + s["per_dim"] * d + s["per_candidate"] * k + s["per_entry"] * np.asarray(t) \
        + s["fixed"]
    return host * host_to_board(board, cal)


def active_power(board: dict) -> float:
    return board["mcu"]["active_current"] * board["supply"]["voltage"]


def wake_joules(board: dict) -> float:
    sl = board["sleep"]
    return sl["wake_time"] * sl["wake_current"] * board["supply"]["voltage"]


def cat_terms(board: dict, cal: dict, d: int, nnz: float, k: float) -> dict[str, float]:
    """Numbers for edge.energycost.BoardCost: CPU power, board seconds per entry sent, and the
    per-round energy CAT's choice does not change (compute at T = 0, wake-up)."""
    p = active_power(board)
    return {"power_w": p, "entry_s": cal["seconds"]["per_entry"] * host_to_board(board, cal),
            "round_j": p * float(compute_seconds(board, cal, d, nnz, k, 0)) + wake_joules(board)}
