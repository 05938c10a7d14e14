"""State-file calibration: time a deep-sleeping node's file I/O on the 32-bit MicroPython build.

    .venv/bin/python firmware_tests/statecost.py            # print the fitted figures
    .venv/bin/python firmware_tests/statecost.py --write    # and set them in cost_profiles/calibration/micropython32.toml

A node that deep-sleeps between rounds (edge/sleep.py) reads its state file at boot, checks
its SHA-256, writes it again through <state>.tmp and a rename, and rewrites a 16-byte marker
twice. The board's flash time for that is priced from the board profile's [storage] table;
the CPU's part (the interpreter moving 512-byte chunks, SHA-256 over every byte, the file
system calls) is measured here by firmware_tests/scripts/state_bench.py and fitted as

    host seconds = state_per_byte x state file bytes + state_fixed

which the whole-board budget scales to a board like the compute calibration (x anchor(board)
/ anchor(host) / board speed; the anchor is the one firmware_tests/compute.py measured, so
both figures come from the same host).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from firmware_tests import harness

# a RAM filesystem where there is one: on a disk the host's own open/rename/sync would be
# timed and scaled to the board as if it were the interpreter's work (on ext4 here they are
# ~0.8 ms of the ~0.9 ms fixed part); the per-byte slope is the same either way
SHM = "/dev/shm"
SCRIPT = Path(__file__).resolve().parent / "scripts" / "state_bench.py"
OUT = harness.REPO / "cost_profiles" / "calibration" / "micropython32.toml"
SRC = ("fitted by firmware_tests/statecost.py from timings of firmware_tests/scripts/state_bench.py "
       "(SleepState save, ACKD marker and restore of n = 1,024/4,096/16,384 floats with and without the "
       "residual)")
WHAT = {"state_per_byte": "per byte of a deep-sleeping node's state file and round: written, read back and "
                          "hashed (SHA-256) twice, through 512-byte chunks",
        "state_fixed": "per round, besides the above: opening, renaming, the two 16-byte markers"}


def measure(tmp: Path, timeout: float = 300.0) -> list[list[float]]:
    """[n, ef, bytes, us] rows from one run of the bench on the 32-bit build."""
    interp = harness.mp32()
    if not interp.available():
        raise harness.HarnessError(f"{interp.problem()} (build it: {harness.MP32_BUILD_CMD})")
    root = harness.make_device_root(tmp, "py")
    res = harness.run(interp, root, SCRIPT, heap="1m", timeout=timeout)
    if not res.ok or not res.results:
        raise harness.HarnessError(f"state bench failed: {res.describe()}")
    return res.results[-1]["rounds"]


def fit(rows: list[list[float]]) -> dict[str, float]:
    """Least squares of host seconds on file bytes (slope and intercept, both >= 0)."""
    a = np.array(rows, dtype=float)
    k = np.polyfit(a[:, 2], a[:, 3], 1)
    return {"state_per_byte": max(0.0, float(k[0])) * 1e-6, "state_fixed": max(0.0, float(k[1])) * 1e-6}


def toml_lines(f: dict[str, float]) -> list[str]:
    return [f'{k} = {{ value = {f[k] * 1e6:.6g}, unit = "us", source = "{SRC}: {WHAT[k]}" }}'
            for k in ("state_per_byte", "state_fixed")]


def write(f: dict[str, float], path: Path = OUT) -> None:
    """Set (or replace) the two keys at the end of [seconds], leaving every other line as it is."""
    text = re.sub(r"(?m)^state_(per_byte|fixed) = .*\n?", "", path.read_text())
    path.write_text(text.rstrip("\n") + "\n" + "\n".join(toml_lines(f)) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help=f"set the figures in {OUT.relative_to(harness.REPO)}")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=SHM if Path(SHM).is_dir() else None) as tmp:
        rows = measure(Path(tmp))
    for n, ef, size, us in rows:
        print(f"n = {int(n)}, error feedback {'on' if ef else 'off'}: {int(size)} B, {us / 1e3:.4g} ms per round")
    f = fit(rows)
    print(f"state_per_byte: {f['state_per_byte'] * 1e6:.4g} us, state_fixed: {f['state_fixed'] * 1e6:.4g} us")
    if args.write:
        write(f)
        print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
