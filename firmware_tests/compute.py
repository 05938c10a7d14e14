"""Compute calibration: time an edge round's pieces on the 32-bit MicroPython build.

    .venv/bin/python firmware_tests/compute.py            # print the fitted figures
    .venv/bin/python firmware_tests/compute.py --write    # and write cost_profiles/calibration/micropython32.toml

The whole-board energy budget (aggregator/lab/boardbudget.py) needs the seconds a board's
MicroPython spends on a round when no telemetry from a real board says it. This runs
firmware_tests/scripts/compute_bench.py on the 32-bit unix build (single-precision floats,
32-bit pointers, like a board) and fits

    host seconds = per_nnz x nonzeros + per_dim x d + per_candidate x K + per_entry x T + fixed

(gradient over the local data; selection and scaling over d; selection heap and CAT scan
over the K candidates; sorting, values, encoding and the MAC per entry sent). The same run
times the anchor loop (the published Leibniz code), whose time on the reference board is
known, so a board's seconds are host seconds x anchor(board) / anchor(host) / board speed.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from firmware_tests import harness
from firmware_tests.budget import make_data

SCRIPT = Path(__file__).resolve().parent / "scripts" / "compute_bench.py"
OUT = harness.REPO / "cost_profiles" / "calibration" / "micropython32.toml"
# (d, rows, nonzeros per row): two sizes of d and of data, so the slopes separate
DATA = ((1024, 64, 64), (4096, 64, 64), (4096, 32, 16))
ANCHOR_BOARD_S = 26.0
ANCHOR_SOURCE = ("Espruino forum, 'Float Speed: Espruino Pico vs Pyboard' (23 Dec 2017): the Leibniz loop "
                 "of 1,000,000 iterations below took 26 s on a pyboard (STM32F405, Cortex-M4F at 168 MHz) "
                 "under MicroPython of that time")
ANCHOR_CODE = ("x = 1; pi = 1; for i in range(2, 1000002): x = x * -1; pi = pi + (x / (2*i-1)) "
               "(module level)")


def measure(tmp: Path, timeout: float = 600.0) -> dict:
    """Run the timing script once on the 32-bit build; its @@RESULT dict (microseconds)."""
    interp = harness.mp32()
    if not interp.available():
        raise harness.HarnessError(f"{interp.problem()} (build it: {harness.MP32_BUILD_CMD})")
    files = {}
    args = []
    for d, rows, nnz in DATA:
        p = tmp / f"d{d}-r{rows}-n{nnz}.catd"
        make_data(p, d, rows, "csr", nnz)
        files[p.name] = p
        args.append(f"{d}:{p.name}")
    root = harness.make_device_root(tmp, "py", extra=files)
    res = harness.run(interp, root, SCRIPT, heap="2m", timeout=timeout, args=args)
    if not res.ok or not res.results:
        raise harness.HarnessError(f"compute bench failed: {res.describe()}")
    return res.results[-1]


def fit(raw: dict) -> dict[str, float]:
    """Per-unit host seconds from the raw timings (least squares on each piece)."""
    g = np.array(raw["grad"], dtype=float)                      # d, nnz, us
    a_nnz, a_d1 = np.linalg.lstsq(g[:, [1, 0]], g[:, 2], rcond=None)[0]
    s = np.array(raw["select"], dtype=float)                    # d, k, us
    a_d2, a_k1 = np.linalg.lstsq(s[:, [0, 1]], s[:, 2], rcond=None)[0]
    c = np.array(raw["scan"], dtype=float)
    a_k2 = float(np.sum(c[:, 1] * c[:, 2]) / np.sum(c[:, 1] ** 2))
    e = np.array(raw["encode"], dtype=float)                    # d, t, us (per d, two t)
    slopes, icpts = [], []
    for d in sorted(set(e[:, 0])):
        rows = e[e[:, 0] == d]
        k = np.polyfit(rows[:, 1], rows[:, 2], 1)
        slopes.append(k[0])
        icpts.append(k[1])
    us = 1e-6
    return {"per_nnz": max(0.0, a_nnz) * us, "per_dim": max(0.0, a_d1 + a_d2) * us,
            "per_candidate": max(0.0, a_k1 + a_k2) * us, "per_entry": max(0.0, float(np.mean(slopes))) * us,
            "fixed": max(0.0, float(np.mean(icpts))) * us, "anchor": raw["anchor_us"] * us}


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def toml_text(f: dict[str, float]) -> str:
    src = "fitted by firmware_tests/compute.py from timings of firmware_tests/scripts/compute_bench.py"
    lines = [
        "schema = 1", 'name = "micropython32"', 'kind = "compute"',
        'description = """Seconds the edge spends computing a round, measured on the 32-bit unix MicroPython '
        "build (single-precision floats, 32-bit pointers) on the host named below, and the anchor that "
        "turns host seconds into a board's: a board's seconds = host seconds x anchor.board_seconds / "
        'anchor.host_seconds / the board\'s mcu.speed. Regenerate with: .venv/bin/python firmware_tests/compute.py --write"""',
        "", "[host]", f'cpu = "{_cpu()}"',
        'interpreter = "MicroPython unix port, 32-bit build (firmware_tests/build_mp32.sh), .py modules"',
        "", "[anchor]", 'board = "pyboard v1.1 (STM32F405, Arm Cortex-M4F, 168 MHz)"', f'code = "{ANCHOR_CODE}"',
        f'board_seconds = {{ value = {ANCHOR_BOARD_S}, unit = "s", source = "{ANCHOR_SOURCE}" }}',
        f'host_seconds = {{ value = {f["anchor"]:.6g}, unit = "s", source = "measured: the same loop on the '
        f'32-bit build, module level, by firmware_tests/compute.py" }}',
        "", "[seconds]",
    ]
    what = {"per_nnz": "per nonzero of the local data: loss and gradient (learner.loss_and_grad)",
            "per_dim": "per model entry: gradient set-up and the selection pass over d (topk.select)",
            "per_candidate": "per candidate K: the selection heap and CAT's two scans (edge.cat.cat_choose)",
            "per_entry": "per entry sent T: sorting, values, frame encoding and the MAC (frame.encode_update)",
            "fixed": "per round, besides the above (frame header, MAC set-up)"}
    for k in ("per_nnz", "per_dim", "per_candidate", "per_entry", "fixed"):
        lines.append(f'{k} = {{ value = {f[k] * 1e6:.6g}, unit = "us", source = "{src}: {what[k]}" }}')
    return "\n".join(lines) + "\n"


def write(f: dict[str, float], path: Path = OUT) -> None:
    """Write the calibration, keeping the state-file figures firmware_tests/statecost.py set
    there (not measured here)."""
    old = path.read_text() if path.exists() else ""
    keep = [ln for ln in old.splitlines() if ln.startswith(("state_per_byte = ", "state_fixed = "))]
    path.write_text(toml_text(f) + "".join(ln + "\n" for ln in keep))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(harness.REPO)}")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        f = fit(measure(Path(tmp)))
    print(f"anchor loop on the 32-bit build: {f['anchor']:.3f} s (reference board: {ANCHOR_BOARD_S:g} s)")
    for k in ("per_nnz", "per_dim", "per_candidate", "per_entry", "fixed"):
        print(f"{k}: {f[k] * 1e6:.4g} us")
    if args.write:
        write(f)
        print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
