"""The state-file calibration (firmware_tests/statecost.py) on the real 32-bit MicroPython build."""

from __future__ import annotations

import tempfile
import tomllib
from pathlib import Path

from aggregator.lab.boardbudget import state_bytes
from edge import hwprofile
from firmware_tests import compute, statecost
from firmware_tests.harness import REPO


def test_state_bench_times_edge_sleep_files_and_writes_valid_figures(tmp_path, mp32):
    shm = statecost.SHM if Path(statecost.SHM).is_dir() else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        rows = statecost.measure(Path(tmp))
    # three sizes, with and without the residual; the file is edge/sleep.py's (frame of 107 B)
    assert [(int(n), int(ef)) for n, ef, _, _ in rows] == [(n, ef) for n in (1024, 4096, 16384) for ef in (0, 1)]
    assert all(int(size) == state_bytes(int(n), 107, bool(ef)) for n, ef, size, _ in rows)
    assert all(us > 0 for *_, us in rows)
    f = statecost.fit(rows)
    assert f["state_per_byte"] >= 0 and f["state_fixed"] >= 0     # no timed assertion: the fit clamps at 0
    path = tmp_path / "micropython32.toml"
    path.write_text((REPO / "cost_profiles" / "calibration" / "micropython32.toml").read_text())
    statecost.write(f, path)
    cal = hwprofile.validate(tomllib.loads(path.read_text()), str(path), "compute")
    assert abs(cal["seconds"]["state_per_byte"] - f["state_per_byte"]) <= 1e-5 * f["state_per_byte"]


def test_compute_write_keeps_the_state_figures(tmp_path):
    path = tmp_path / "micropython32.toml"
    path.write_text((REPO / "cost_profiles" / "calibration" / "micropython32.toml").read_text())
    before = hwprofile.validate(tomllib.loads(path.read_text()), str(path), "compute")["seconds"]
    f = {k: before[k] for k in ("per_nnz", "per_dim", "per_candidate", "per_entry", "fixed")}
    compute.write({**f, "anchor": 0.3}, path)
    after = hwprofile.validate(tomllib.loads(path.read_text()), str(path), "compute")["seconds"]
    assert after["state_per_byte"] == before["state_per_byte"] and after["state_fixed"] == before["state_fixed"]
