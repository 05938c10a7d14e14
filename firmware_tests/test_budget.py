"""RAM budget of a full edge round on the 32-bit single-precision build, with a real heap limit.

ROUNDS full rounds in a row (firmware_tests/scripts/round.py, what a flashed board does: the
first syncs the model by snapshot, the others by delta, in a heap fragmented by the earlier
ones). A round: node.json, the 64-row CATD file, CoAP GET config, GET snapshot (block by block
through edge.snapshot.SnapshotSink) or delta (staged in the idle gradient buffer), logistic
gradient streamed from the file, CAT S+Q with K = 128, frame encode, CoAP POST to the
aggregator's aiocoap front.

Three deployments, all measured:

* edge/ frozen into the firmware (bytecode and qstrs in flash, as a board image ships code;
  budget.frozen_interpreter builds that interpreter): the RAM goals hold. The rounds
  complete at the goal (32 KiB at d = 1,024, 64 KiB at d = 4,096) and at the tighter
  FROZEN_BUDGET_KIB;
* edge/ as .mpy files on the device filesystem (the code a round holds is ~40 KiB of heap):
  MPY_BUDGET_KIB, well above the goals; with error feedback at d = 4,096, MPY_EF_KIB, within
  the .mpy goal of 96 KiB;
* the same .mpy files run in place from a ROMFS image (budget.romfs_interpreter): ROMFS_EF_KIB,
  within the .mpy goal of 96 KiB at d = 4,096, and the code within 32 KiB.

Each budget is asserted both ways: the rounds complete with the budget and die with a real
MemoryError MARGIN_KIB below it, so the stated budget is within MARGIN_KIB of what the rounds
really need (python firmware_tests/budget.py --frozen bisects the exact figures).
"""

from __future__ import annotations

import argparse
import re

import pytest

from firmware_tests.budget import (GOAL_KIB, K, LAYOUT, NNZ, QEMU_BUDGET_KIB, QEMU_ROMFS_BUDGET_KIB, ROUNDS, SERIAL_PROFILE, imports_kib, kib_list, make_data,
                                   make_job, round_setup, run_round, slip_rounds, start_matrix)

# Measured minimum (budget.py --frozen, bisected, KiB) for ROUNDS rounds in a row:
# frozen 31-32 (d = 1,024) and 56 (d = 4,096); .mpy 94 and 119 (100 and 126 before the code a
# round imports was cut from 73 to 65 KiB: snapshot, f16, evaluate, datatools, crc32, pktcost,
# papercost split off; docs/firmware.md "The code a round imports"); then 90 and 115 with 47
# qstrs fewer (no 640-slot qstr pool, docs/firmware.md "The qstr pools"); then 79 and 103 with
# the .mpy files built without line numbers (mpy-cross -O3) and the error texts in edge/errtext.py;
# then 30 and 55 frozen, 75 and 100 as .mpy with a gc.collect() before each of the node's
# contiguous blocks (edge/node.py: the arrays, the O(K) buffers, a snapshot sync); then 74 and
# 98 as .mpy with the round's cost table (edge/cost.py CostModel.tabulate) and edge.onair and
# edge.snapshot let go between uses; then 30 and 54 frozen, 71 and 96 as .mpy with edge.onair
# loaded only to build the table (not at start-up: edge/startup.py block_size_mismatch); then
# 29 and 53 frozen, 69 and 93 as .mpy with the start-up code let go before the rounds
# (edge/startup.py, edge/dataheader.py) and 19 qstrs fewer.
# The budgets leave 2-3 KiB for run-to-run variation (gateway state) and small changes in edge/;
# MARGIN_KIB below them the rounds must run out of memory.
FROZEN_BUDGET_KIB = {1024: 32, 4096: 57}
MPY_BUDGET_KIB = {1024: 72, 4096: 96}
MARGIN_KIB = 8


@pytest.fixture(scope="module", params=[1024, 4096], ids=["d1024", "d4096"])
def d(request):
    return request.param


@pytest.fixture(scope="module")
def frozen_setup(d, tmp_path_factory):
    s = round_setup(tmp_path_factory.mktemp(f"budget-frozen-{d}"), d, mode="frozen")
    yield s
    s.close()


@pytest.fixture(scope="module")
def mpy_setup(d, tmp_path_factory):
    s = round_setup(tmp_path_factory.mktemp(f"budget-mpy-{d}"), d, mode="mpy")
    yield s
    s.close()


def _fits(interp, s, kib):
    r = run_round(interp, s, f"{kib}k")
    assert r.ok, r.describe()[-3000:]
    res = r.result
    assert res["status"] == "sent" and res["accepted"] and res["code"] == 0x44
    assert res["snapshots"] == 1 and 1 <= res["T"] <= 128  # one snapshot, then deltas
    return res


def _dies(interp, s, kib):
    r = run_round(interp, s, f"{kib}k")
    assert not r.ok and r.memory_error, r.describe()[-3000:]
    assert r.error.startswith("MemoryError")


def test_budgets_are_within_the_goals():
    assert all(FROZEN_BUDGET_KIB[d] <= GOAL_KIB[d] for d in GOAL_KIB)


def test_frozen_round_meets_the_ram_goal(mp32_frozen, frozen_setup, d):
    """The RAM goal (docs/firmware.md), with edge/ frozen: 32 KiB of heap at d = 1,024, 64 KiB at d = 4,096."""
    _fits(mp32_frozen, frozen_setup, GOAL_KIB[d])


def test_frozen_round_fits_budget_and_fails_below(mp32_frozen, frozen_setup, d):
    _fits(mp32_frozen, frozen_setup, FROZEN_BUDGET_KIB[d])
    _dies(mp32_frozen, frozen_setup, FROZEN_BUDGET_KIB[d] - MARGIN_KIB)


# With error feedback the residual lives in the gradient array (edge/feedback.py) and configs
# and deltas are staged in the frame buffer: measured (budget.py --ef) 30-32 KiB at d = 1,024
# and 55-56 KiB at d = 4,096 for S, S+Q and SS, frozen. Below these floors a round must die.
EF_FLOOR_KIB = {1024: 24, 4096: 50}
# Where error feedback misses the goal (budget.py --ef prints the bisected heaps): nowhere now.
# SS at d = 1,024 needed 33 KiB until edge/node.py collected before its contiguous blocks (it
# died at 32 KiB streaming the first snapshot, on the 129-byte recvfrom buffer of a Block2
# datagram, with the free space in one-block holes); it needs 32 now, at the goal exactly:
# a layout-shifting change in edge/ can move it by 1 KiB (docs/firmware.md).
EF_KIB: dict[tuple[int, str], int] = {}


@pytest.mark.parametrize("scheme", ["s", "sq", "ss"])
def test_error_feedback_round_meets_the_ram_goal(mp32_frozen, d, scheme, tmp_path):
    """Error feedback costs no d-array of its own: the same RAM goals, four rounds in a row
    against the gateway (the first by snapshot), and a MemoryError well below them."""
    s = round_setup(tmp_path / "ef", d, mode="frozen", scheme=scheme, error_feedback=True)
    try:
        _fits(mp32_frozen, s, EF_KIB.get((d, scheme), GOAL_KIB[d]))
        _dies(mp32_frozen, s, EF_FLOOR_KIB[d])
    finally:
        s.close()


# MicroPython 1.25 holds the qstrs a board interns in pools of 20, 40, 80, 160 and 320 slots
# (py/qstr.c: each pool twice the last); the 621st allocates one of 640 slots, 4.4 KiB, in the
# middle of a round (docs/firmware.md, "The qstr pools"). The budget's round must leave room
# below it: for the names of a board's own main.py, and for a port with fewer of the edge's
# names built in than the unix port has.
QSTR_POOLS = 20 + 40 + 80 + 160 + 320
QSTR_SPARE = 10


def test_the_round_leaves_the_qstr_pools_room(mp32, tmp_path):
    """The budget's .mpy round (SS, error feedback, d = 4,096: the round that loads the most
    code) interns at most QSTR_POOLS - QSTR_SPARE qstrs, the round driver's own included."""
    s = round_setup(tmp_path / "qstrs", 4096, mode="mpy", scheme="ss", error_feedback=True)
    try:
        r = run_round(mp32, s, "256k")
    finally:
        s.close()
    assert r.ok, r.describe()[-3000:]
    pools = re.search(r"qstr pool: n_pool=(\d+), n_qstr=(\d+)", r.stdout)
    assert pools, r.stdout[-2000:]
    n_pool, n_qstr = int(pools[1]), int(pools[2])
    assert n_qstr <= QSTR_POOLS - QSTR_SPARE and n_pool == 5, (n_pool, n_qstr)


# The same rounds with edge/ as .mpy files at d = 4,096, against the goal of 96 KiB: measured
# (budget.py --ef, bisected) 94 for S and S+Q, 95 for SS. From fresh gateways at seven points of
# a job, across round 24 too (budget.py --starts), all three fit at 96; at 95 S and S+Q missed
# from round 22 (the table built again at 24), SS from four of the seven starts. Before the
# start-up code left the heap and the qstr cut (docs/firmware.md, "What was changed in
# edge/"): 96 96 97 bisected, SS 97-99 across the starts. The budgets are the goal.
MPY_EF_KIB = {"s": 96, "sq": 96, "ss": 96}


@pytest.mark.parametrize("scheme", ["s", "sq", "ss"])
def test_error_feedback_round_as_mpy_fits_its_budget(mp32, scheme, tmp_path):
    """.mpy files at d = 4,096 with error feedback: within the goal of 96 KiB, and a MemoryError
    MARGIN_KIB below."""
    s = round_setup(tmp_path / "efmpy", 4096, mode="mpy", scheme=scheme, error_feedback=True)
    try:
        assert MPY_EF_KIB[scheme] <= 96
        _fits(mp32, s, MPY_EF_KIB[scheme])
        _dies(mp32, s, MPY_EF_KIB[scheme] - MARGIN_KIB)
    finally:
        s.close()


# The same .mpy files run in place from a ROMFS image (`cat-aggregator firmware romfs`, mounted
# at /rom; budget.romfs_interpreter): bytecode, qstr text and constants stay in the image, and
# the heap holds the function objects, module dicts and qstr entries. Measured (budget.py --ef,
# bisected) 72-74 KiB for S, S+Q and SS at d = 4,096 with error feedback (96-97 from the
# filesystem), 47-48 at d = 1,024: the .mpy goal of 96 KiB with 22 to spare; since the start-up
# code leaves the heap, 66 66 76 (94 94 95 from the filesystem). Near the minimum the heap is
# not monotone: SS fitted from all seven starts of budget.start_matrix at 74, 76 and 78 KiB,
# from two at 77 (the cost table's 640-byte array found no room). The budgets sit above that
# window (all seven starts fit at 80 and 52, each scheme); the floors are 8 KiB below the
# lowest heap seen to fit.
ROMFS_EF_KIB = {1024: 52, 4096: 80}
ROMFS_FLOOR_KIB = {1024: 39, 4096: 58}


@pytest.mark.parametrize("scheme", ["s", "sq", "ss"])
def test_error_feedback_round_from_romfs_meets_the_mpy_goal(mp32_romfs, d, scheme, tmp_path):
    """.mpy files from a ROMFS image: within the .mpy goal (96 KiB at d = 4,096) by a wide
    margin, and a MemoryError well below the budget."""
    s = round_setup(tmp_path / "efrom", d, mode="frozen", scheme=scheme, error_feedback=True)
    try:
        assert ROMFS_EF_KIB[4096] <= 96
        _fits(mp32_romfs, s, ROMFS_EF_KIB[d])
        _dies(mp32_romfs, s, ROMFS_FLOOR_KIB[d])
    finally:
        s.close()


def test_start_matrix_runs_each_heap_from_a_fresh_gateway(mp32, tmp_path):
    """budget.py --starts: one mark per start, from real runs: SS fits its budget from round 3
    and dies MARGIN_KIB below it."""
    kib = MPY_EF_KIB["ss"]
    assert start_matrix(mp32, tmp_path, "ss", [kib, kib - MARGIN_KIB], starts=(3,)) == {kib: "+", kib - MARGIN_KIB: "-"}


def test_starts_takes_heaps_in_kib_and_names_a_bad_one():
    assert kib_list("8,96,4096") == [8, 96, 4096]
    for bad, why in (("7", "heap 7 KiB outside"), ("4097", "heap 4097 KiB outside"), ("96,x", "not a comma"),
                     ("", "not a comma")):
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            kib_list(bad)


# A node's rounds cross round 24 (and 256, 65,536): the round number's CBOR head grows by a
# byte, every frame with it, so the cost table is built again (CostModel.set_round bumps its
# version), in a heap the rounds have fragmented. It refills the arrays it has: made anew, the
# table's arrays found no room there (SS at d = 1,024 frozen needed 34 KiB across round 24, and
# died at 33; .mpy at d = 4,096 at 98).
@pytest.mark.e2e
@pytest.mark.parametrize("mode,d_,kib", [("frozen", 1024, GOAL_KIB[1024]), ("mpy", 4096, MPY_EF_KIB["ss"])],
                         ids=["frozen-d1024", "mpy-d4096"])
def test_rounds_across_round_24_fit_the_same_budget(request, mode, d_, kib, tmp_path):
    """SS with error feedback from round 22 to 25: the node's snapshot at 22, then the table is
    built again at 24, within the budget of rounds 0 to 3."""
    interp = request.getfixturevalue("mp32_frozen" if mode == "frozen" else "mp32")
    s = round_setup(tmp_path / "r24", d_, mode=mode, scheme="ss", error_feedback=True)
    try:
        r = run_round(interp, s, "512k", rounds=22)  # another node's life: the gateway at round 22
        assert r.ok and r.result["round"] == 21, r.describe()[-3000:]
        res = _fits(interp, s, kib)
        assert res["round"] == 25
    finally:
        s.close()


# The default rule, catavg, holds its Agreement (K = 128 indices and float32 weights, 768 B)
# and edge/catavg.py's objects: measured (bisected, frozen) 31 KiB at d = 1,024 against cat's
# 30, 56 KiB at d = 4,096 against 54 (32-33 and 56 before edge.onair left the start-up, when
# d = 1,024 missed the goal by 1 KiB in some runs; 33-35 and 57-59 before edge/node.py
# collected before its contiguous blocks). Both goals hold.
CATAVG_KIB = {1024: GOAL_KIB[1024], 4096: GOAL_KIB[4096]}
CATAVG_FLOOR_KIB = {1024: 24, 4096: 48}      # MARGIN_KIB below the measured need


def test_catavg_round_fits_its_budget(mp32_frozen, d, tmp_path):
    """catavg's rounds for a job of 4 nodes: the first weighs by the node's sampling noise (a
    second pass over the data, edge/noiseprior.py), every one after it reads a delta against
    the update. Measured (bisected) 32 and 56 KiB, the same as with rule_param 1 (32 and 57):
    the pass allocates nothing the later rounds do not."""
    s = round_setup(tmp_path / "catavg", d, mode="frozen", rule="catavg", rule_param=4)
    try:
        assert s.job.rule_param == 4
        _fits(mp32_frozen, s, CATAVG_KIB[d])
        _dies(mp32_frozen, s, CATAVG_FLOOR_KIB[d])
    finally:
        s.close()


def test_mpy_round_fits_budget_and_fails_below(mp32, mpy_setup, d):
    """edge/ loaded as .mpy from the device filesystem: the code is in the heap too."""
    _fits(mp32, mpy_setup, MPY_BUDGET_KIB[d])
    _dies(mp32, mpy_setup, MPY_BUDGET_KIB[d] - MARGIN_KIB)


SCALE_INTERP = {"frozen": "mp32_frozen", "mpy": "mp32", "romfs": "mp32_romfs"}
# measured: frozen 15.0 KiB + 8 d, .mpy from ROMFS 29.3, .mpy 52.0 KiB + 8 d (75.4 before the
# code diet, 71.4 before -O3 and edge/errtext.py, 56.3 before edge.onair left the start-up), at
# both d (nothing else grows with d)
SCALE_KIB = {"frozen": 16, "mpy": 55, "romfs": 31}


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["frozen", "mpy", "romfs"])
def test_the_round_scales_with_the_model_not_more(request, mode, d):
    """Beyond the code, a round holds the model and the gradient (8 bytes per d) and O(K):
    the snapshot streams through the gradient buffer, deltas and the config are staged in it,
    arrays are made without temporaries."""
    interp = request.getfixturevalue(SCALE_INTERP[mode])
    s = request.getfixturevalue(f"{'mpy' if mode == 'mpy' else 'frozen'}_setup")  # ROMFS: no edge/ in the root
    res = _fits(interp, s, 256)
    live = res["mem_alloc"] - res["base_alloc"]  # after gc, all the edge code a round uses loaded
    assert live - 8 * d < SCALE_KIB[mode] * 1024, live


def test_the_code_a_round_imports_from_romfs_fits_32_kib(mp32_romfs, tmp_path):
    """The code diet's goal: what a CoAP round imports, as .mpy, within 32 KiB of heap. Run in
    place from a ROMFS image it needs 23 KiB (bisected, a MemoryError below; 56 as .mpy files
    loaded from the filesystem, 13 frozen: budget.py prints it per interpreter)."""
    assert imports_kib(mp32_romfs, tmp_path, frozen=True) <= 32


# The emulated board (QEMU mps2-an385, Cortex-M3, edge/ frozen; firmware_tests/qemu_board.py):
# the same rounds over SLIP on its UART1, counted by the gateway. A node on serial holds more than
# one on CoAP: the SLIP decoder's 4 d + 256 byte frame buffer and each message whole (the snapshot
# is one 4 d-byte block). Measured (budget.py --qemu only, bisected 46 and 91 KiB, and heaps
# around them): d = 1,024 fits from 46 KiB up; d = 4,096 fits at 94-96 KiB and from 100 KiB up,
# but not at 98 KiB, where the snapshot's block no longer finds room (a larger heap is collected
# later, so more garbage splits it). Near the minimum it depends on timing: 90 KiB died in four
# runs and fitted in one beside a CPU hog. The budgets sit above that window; the rounds must die
# with a MemoryError at QEMU_DIES_KIB, 8 KiB below the lowest heap seen to fit at d = 4,096.
QEMU_DIES_KIB = {1024: 40, 4096: 82}


def test_emulated_board_rounds_fit_budget_and_fail_below(qemu_image, d, tmp_path):
    data = make_data(tmp_path / "d.catd", d, layout=LAYOUT, nnz=NNZ)
    fit = slip_rounds(qemu_image, tmp_path / "fit", lambda st: make_job(st, d, profile=SERIAL_PROFILE), data, QEMU_BUDGET_KIB[d] * 1024)
    assert fit.run.ok, fit.run.describe()[-3000:]
    assert fit.accepted == ROUNDS and fit.summary["rejected"] == {}
    assert fit.run.result["snapshots"] == 1 and 1 <= fit.run.result["T"] <= K
    low = slip_rounds(qemu_image, tmp_path / "low", lambda st: make_job(st, d, profile=SERIAL_PROFILE), data, QEMU_DIES_KIB[d] * 1024)
    assert not low.run.ok and low.run.memory_error, low.run.describe()[-3000:]


# The emulated board with edge/ as .mpy in its ROMFS partition (a firmware without edge/; the
# image `cat-aggregator firmware romfs` writes, put there by `mpremote romfs deploy` over the REPL
# UART): measured (budget.py --qemu only, bisected) 55-56 and 110 KiB, against 43-46 and 91-94
# frozen. At d = 4,096 it fitted at 110-114, 118-128 KiB and not at 116 (the window frozen has at
# 98); 120 fitted in four runs. The rounds must die 8 KiB below the bisected minimum.
QEMU_ROMFS_DIES_KIB = {1024: 47, 4096: 102}


def test_emulated_board_rounds_from_romfs_fit_budget_and_fail_below(qemu_bare_image, d, tmp_path):
    from aggregator.ops.flash import romfs_image

    rom = tmp_path / "edge.romfs"
    rom.write_bytes(romfs_image())
    data = make_data(tmp_path / "d.catd", d, layout=LAYOUT, nnz=NNZ)
    fit = slip_rounds(qemu_bare_image, tmp_path / "fit", lambda st: make_job(st, d, profile=SERIAL_PROFILE), data,
                      QEMU_ROMFS_BUDGET_KIB[d] * 1024, romfs=rom)
    assert fit.run.ok, fit.run.describe()[-3000:]
    assert fit.accepted == ROUNDS and fit.summary["rejected"] == {}
    low = slip_rounds(qemu_bare_image, tmp_path / "low", lambda st: make_job(st, d, profile=SERIAL_PROFILE), data,
                      QEMU_ROMFS_DIES_KIB[d] * 1024, romfs=rom)
    assert not low.run.ok and low.run.memory_error, low.run.describe()[-3000:]

