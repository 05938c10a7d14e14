"""Does a deep-sleeping node's state file fit its board's file system, and how long does the
flash last when the file is rewritten every round?

edge/sleep.py writes the new state to `<state>.tmp` and renames it over the old file, so for a
moment both copies exist: the file system must hold two state files and littlefs's root
metadata pair (blocks 0 and 1, which also carry the superblock). littlefs never rewrites a
block in place: a changed file goes to newly allocated blocks, and its allocator walks the
whole disk looking for free ones, so the erases of a round are spread over every block no
other file holds (littlefs's "dynamic wear levelling"; MicroPython sets block_cycles = 100 in
extmod/vfs_lfsx.c, so the metadata pairs move too). How many blocks that is depends on what
else is on the board, so the lifetime is given as a range:

    most  = endurance x fs_blocks / erased_per_round      (nothing else on the file system)
    least = endurance x need_blocks / erased_per_round    (other files leave only the state's room)

in rounds, times the round's period for seconds. erased_per_round is state_round's count (the
blocks the new file spans and the metadata commits' share of a compaction). The board profile's
[storage] fs_size and endurance give the figures; a board without them is not checked.
"""

from __future__ import annotations

from edge.hwprofile import YEAR_S

LFS_METADATA_BLOCKS = 2   # the root directory's metadata pair, with littlefs's superblock


def space(storage: dict, file_blocks: int) -> dict | None:
    """Blocks the state file needs at its peak (two copies and the metadata pair) against the
    file system's blocks; None when [storage] has no fs_size."""
    if "fs_size" not in storage:
        return None
    fs = int(storage["fs_size"] // storage["block_size"])
    need = 2 * int(file_blocks) + LFS_METADATA_BLOCKS
    return {"fs_blocks": fs, "need_blocks": need, "fits": need <= fs}


def wear(storage: dict, erased_per_round: float, file_blocks: int, period_s: float) -> dict | None:
    """Rounds and years until the flash's blocks reach their endurance (module docstring's
    range); None when [storage] lacks fs_size or endurance, or nothing is erased."""
    sp = space(storage, file_blocks)
    if sp is None or "endurance" not in storage or erased_per_round <= 0:
        return None
    cycles = float(storage["endurance"])
    least_blocks = min(sp["fs_blocks"], sp["need_blocks"])
    most = cycles * sp["fs_blocks"] / erased_per_round
    least = cycles * least_blocks / erased_per_round
    return {**sp, "endurance": cycles, "erased_per_round": erased_per_round, "least_blocks": least_blocks,
            "rounds_most": most, "rounds_least": least,
            "days_most": most * period_s / 86400.0, "days_least": least * period_s / 86400.0}


def _span(days: float) -> str:
    return f"{days / (YEAR_S / 86400.0):.3g} years" if days >= 365.25 else f"{days:.3g} days"


def summary_lines(storage: dict, state: dict, period_s: float, battery_days: float) -> list[str]:
    """The lines `profile --board B --deep-sleep` prints about space and wear (empty when the
    board profile does not give fs_size); `state` is boardbudget.state_round's largest file."""
    sp = space(storage, state["blocks"])
    if sp is None:
        return []
    block = int(storage["block_size"])
    out = [f"state file space: {sp['need_blocks']} of the file system's {sp['fs_blocks']} blocks of {block} B "
           f"(two copies of the {state['bytes']:,} B file while the new one is renamed over the old, and "
           f"littlefs's metadata pair)"
           + ("" if sp["fits"] else ": it does NOT fit; the node fails when it saves its state. Use a smaller "
              "model, no error feedback, or a larger file system")]
    w = wear(storage, state["erased"], state["blocks"], period_s)
    if w is None:
        return out
    line = (f"flash wear: {w['erased_per_round']:.3g} blocks erased per round at {w['endurance']:,.0f} cycles a "
            f"block: worn out after {_span(w['days_most'])} if littlefs spreads the erases over all "
            f"{w['fs_blocks']} blocks")
    if w["least_blocks"] < w["fs_blocks"]:
        line += f", {_span(w['days_least'])} if other files leave it only the state's {w['least_blocks']}"
    if w["days_least"] < battery_days:
        line += f" (sooner than the battery's {battery_days:.4g} days)"
    return out + [line]
