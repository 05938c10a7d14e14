"""RAM budget of a full edge round on the 32-bit single-precision build, with a real heap limit.

ROUNDS full rounds in a row (firmware_tests/scripts/round.py, what a flashed board does: the
first syncs the model by snapshot, the others by delta, in a heap fragmented by the earlier
ones). A round: node.json, the
64-row CATD file, CoAP GET config + snapshot (block by block through edge.frame.SnapshotSink),
logistic gradient streamed from the file, CAT S+Q with K = 128, frame encode, CoAP POST to
the aggregator's aiocoap front; edge/ as .mpy files loaded from the device root.

Each budget is asserted both ways: the round completes with BUDGET_KIB of heap and dies with
a real MemoryError MARGIN_KIB below it, so the stated budget is within MARGIN_KIB of what the
round really needs (python firmware_tests/budget.py bisects the exact figures).

The issue's goals (32 KiB at d = 1,024, 64 KiB at d = 4,096) are NOT met with the edge loaded
as .mpy: importing edge/ alone takes ~72 KiB of heap on this build (bytecode, qstrs and
function objects). The goal tests below are strict xfails that record this: if the edge
ever fits, they fail and must be turned into plain tests. With edge/ frozen into the
firmware (budget.py --frozen) the same rounds need ~43 KiB and ~68 KiB.
"""

from __future__ import annotations

import pytest

from firmware_tests.budget import GOAL_KIB, round_setup, run_round

# Measured minimum (budget.py, bisected, KiB) for ROUNDS rounds in a row: 108 at d = 1,024 and
# 133 at d = 4,096. The budgets leave ~6 KiB for run-to-run variation (gateway state) and small
# changes in edge/; MARGIN_KIB below them the rounds must run out of memory.
BUDGET_KIB = {1024: 114, 4096: 140}
MARGIN_KIB = 12


@pytest.fixture(scope="module", params=[1024, 4096], ids=["d1024", "d4096"])
def setup(request, tmp_path_factory):
    s = round_setup(tmp_path_factory.mktemp(f"budget-{request.param}"), request.param)
    yield request.param, s
    s.close()


def test_full_round_fits_budget_and_fails_below(mp32, setup):
    d, s = setup
    ok = run_round(mp32, s, f"{BUDGET_KIB[d]}k")
    assert ok.ok, ok.describe()[-3000:]
    res = ok.result
    assert res["status"] == "sent" and res["accepted"] and res["code"] == 0x44
    assert res["snapshots"] == 1 and 1 <= res["T"] <= 128
    low = BUDGET_KIB[d] - MARGIN_KIB
    below = run_round(mp32, s, f"{low}k")
    assert not below.ok and below.memory_error, below.describe()[-3000:]
    assert below.error.startswith("MemoryError")


def test_the_round_scales_with_the_model_not_more(mp32, setup):
    """Beyond the code, a round holds the model and the gradient (8 bytes per d) and O(K):
    the snapshot streams through the gradient buffer, arrays are made without temporaries."""
    d, s = setup
    r = run_round(mp32, s, "256k")
    assert r.ok, r.describe()[-2000:]
    live = r.result["mem_alloc"] - r.result["base_alloc"]  # after gc, all of edge/ loaded
    # measured: ~77 KiB + 8 d at both d (the code and O(K) buffers do not grow with d)
    assert live - 8 * d < 80 * 1024, live


class GoalUnmet(AssertionError):
    """The round ran out of heap at the issue's goal (and failed for no other reason)."""


@pytest.mark.xfail(strict=True, raises=GoalUnmet,
                   reason="goal unmet: edge/ as .mpy takes ~72 KiB of heap by itself; measured "
                          "108 KiB (d=1024) and 133 KiB (d=4096); frozen into the firmware 43 / 68 KiB")
def test_issue_goal(mp32, setup):
    d, s = setup
    r = run_round(mp32, s, f"{GOAL_KIB[d]}k")
    if r.memory_error:
        raise GoalUnmet(f"MemoryError at the {GOAL_KIB[d]} KiB goal for d={d}")
    assert r.ok, r.describe()[-1000:]
