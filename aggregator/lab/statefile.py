"""A deep-sleeping node's state file on its board's flash (edge/sleep.py): its size and the
littlefs blocks it spans (priced per round by boardbudget.state_round), whether it fits the
board's file system, and how long the flash lasts when the file is rewritten every round.

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

in rounds, times the round's period for seconds. The board profile's [storage] fs_size and
endurance give the figures; a board without them is not checked. `profile --board B
--deep-sleep` prints these lines; `flash --deep-sleep --board B` refuses a model whose state
cannot fit.
"""

from __future__ import annotations

from edge.hwprofile import YEAR_S

STATE_HEADER = 44           # edge/sleep.py: header bytes before the model
STATE_DIGEST = 32           # the SHA-256 after the frame
MARKER_BYTES = 16           # <state>.sent
# littlefs commits to the directory's metadata pair when the state's .tmp is created, when it
# is closed (its CTZ head), when it is renamed over the old file, and each time the 16-byte
# marker (an inline file) is rewritten: five commits a round. Assumption: a commit programs
# 64 bytes (tags, the marker or the file's head, CRC), at least one program unit; a metadata
# block of B bytes fills after B / 64 commits and is then compacted into its pair's other block
# (one erase), priced per round as 5 x 64 / B of a block erase.
METADATA_COMMITS = 5
METADATA_COMMIT_BYTES = 64


def state_bytes(n: int, frame: int, error_feedback: bool) -> int:
    """Bytes of edge/sleep.py's state file: header, model (and residual), frame, SHA-256."""
    return STATE_HEADER + 4 * int(n) * (2 if error_feedback else 1) + int(frame) + STATE_DIGEST


def lfs_block_use(size: int, block: int) -> list[int]:
    """Bytes used in each block of a littlefs file of `size` bytes (its CTZ skip-list: block
    i > 0 starts with ctz(i) + 1 pointers of 4 bytes; block 0 has none), so len() = blocks.
    littlefs keeps files smaller than its inline limit (at most a block / 8) in the metadata
    instead; a state file (44 + 4n + L + 32 bytes) of a real model is not one of them."""
    if size <= 0:
        return []
    block = int(block)
    use = [min(size, block)]
    left = size - use[0]
    i = 1
    while left > 0:
        ptr = 4 * ((i & -i).bit_length())            # ctz(i) + 1 pointers
        data = min(left, block - ptr)
        use.append(ptr + data)
        left -= data
        i += 1
    return use


def erased_blocks(blocks: int, block_size: float) -> float:
    """Blocks erased per round: those the rewritten file spans, and the five metadata commits'
    share of a compaction (one erase per block_size / 64 commits)."""
    return blocks + METADATA_COMMITS * METADATA_COMMIT_BYTES / block_size


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


def flash_check(storage: dict, n: int, error_feedback: bool, sleep_s: float) -> list[str]:
    """For `flash --deep-sleep SECONDS --board B`: the state file of an n-float model (frame not
    yet known: counted as 0 B, so the file is at least this) against the board's file system.
    Raises ValueError naming the shortfall when it cannot fit; else the lines to print (wear at
    one round per SECONDS at most: the flash lasts at least that)."""
    size = state_bytes(n, 0, error_feedback)
    blocks = len(lfs_block_use(size, int(storage["block_size"])))
    sp = space(storage, blocks)
    if sp is None:
        return []
    if not sp["fits"]:
        raise ValueError(f"the state file (at least {size:,} B: {n:,} floats"
                         f"{' and the residual' if error_feedback else ''}) needs {sp['need_blocks']} of the "
                         f"board's {sp['fs_blocks']} file-system blocks while it is renamed: it cannot fit")
    out = [f"state file: at least {size:,} B, {sp['need_blocks']} of the board's {sp['fs_blocks']} "
           "file-system blocks while it is renamed"]
    w = wear(storage, erased_blocks(blocks, storage["block_size"]), blocks, sleep_s)
    if w is not None:
        out.append(f"flash wear: at one round per {sleep_s:g} s at most, worn out after at least "
                   f"{_span(w['days_least'])} if other files leave it only the state's room "
                   f"({_span(w['days_most'])} with the file system otherwise empty)")
    return out
