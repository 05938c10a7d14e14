"""The compute calibration (firmware_tests/compute.py) on the real 32-bit MicroPython build."""

from __future__ import annotations

import tomllib

from edge import hwprofile
from firmware_tests import compute


def test_calibration_measures_fits_and_writes_a_valid_profile(tmp_path, mp32):
    raw = compute.measure(tmp_path)
    # every piece timed: the gradient for each data file, selection and scan for K = 32 and 256,
    # encoding for T = 16 and 256
    assert len(raw["grad"]) == len(compute.DATA) and len(raw["select"]) == 2 * len(compute.DATA)
    assert len(raw["encode"]) == 2 * len(compute.DATA) and raw["anchor_us"] > 0
    f = compute.fit(raw)
    assert set(f) == {"per_nnz", "per_dim", "per_candidate", "per_entry", "fixed", "anchor"}
    assert all(v >= 0 for v in f.values()) and f["anchor"] == raw["anchor_us"] * 1e-6
    text = compute.toml_text(f)
    path = tmp_path / "micropython32.toml"
    path.write_text(text)
    cal = hwprofile.validate(tomllib.loads(text), str(path), "compute")
    assert cal["anchor"]["board_seconds"] == compute.ANCHOR_BOARD_S
    for k in ("per_nnz", "per_dim", "per_candidate", "per_entry", "fixed"):
        assert abs(cal["seconds"][k] - f[k]) <= 1e-5 * f[k]   # written with 6 significant digits
