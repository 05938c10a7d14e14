"""Fixtures giving firmware tests real MicroPython interpreters.

Why the CI rule: a missing 32-bit build must not turn RAM-budget tests into silent
skips on CI (CI=true), so there it fails; on a developer machine it skips and says
how to build it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, NoReturn

import pytest

from firmware_tests import harness


def _on_ci() -> bool:
    """CI is set (the CI runner sets CI=true); '0'/'false' count as unset."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _require(interp: harness.Interpreter, how: str) -> harness.Interpreter:
    """Return the interpreter if it runs; else fail on CI, skip elsewhere."""
    problem = interp.problem()
    if problem is None:
        return interp
    msg = f"{problem}; build/install it with: {how}"
    if _on_ci():
        pytest.fail(f"CI is set and {msg}", pytrace=False)
    pytest.skip(msg)


# Tests that run a real MicroPython interpreter or the emulated board are end-to-end (`make
# test-fast` leaves them out); a test that picks its interpreter with request.getfixturevalue
# carries the e2e mark itself.
INTERPRETERS = {"mp64", "mp32", "mp32_frozen", "mp32_romfs", "interp", "qemu_image", "qemu_bare_image"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTERPRETERS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def mp64() -> harness.Interpreter:
    """The PyPI unix-port wheel (64-bit, double floats)."""
    return _require(harness.mp64(), "pip install -e '.[test]'")


@pytest.fixture(scope="session")
def mp32() -> harness.Interpreter:
    """The 32-bit single-precision build (fails on CI when missing, skips otherwise)."""
    return _require(harness.mp32(), harness.MP32_BUILD_CMD)


def _unavailable(msg: str) -> NoReturn:
    """Fail on CI, skip elsewhere: a build the test needs could not be made."""
    if _on_ci():
        pytest.fail(f"CI is set and {msg}", pytrace=False)
    pytest.skip(msg)


def _unix_build(interp: harness.Interpreter | None, what: str) -> harness.Interpreter:
    if interp is None:
        _unavailable(f"no MicroPython source tree for the {what} build; run {harness.MP32_BUILD_CMD}")
    return _require(interp, harness.MP32_BUILD_CMD)


@pytest.fixture(scope="session")
def mp32_frozen(mp32: harness.Interpreter) -> harness.Interpreter:
    """The 32-bit build with edge/ frozen into the firmware (firmware_tests/budget.py builds it
    from build_mp32.sh's source tree: ~1 min the first time, seconds after a change in edge/)."""
    from firmware_tests.budget import frozen_interpreter

    return _unix_build(frozen_interpreter(build=True), "frozen")


@pytest.fixture(scope="session")
def mp32_romfs(mp32: harness.Interpreter) -> harness.Interpreter:
    """The 32-bit build running edge/ as .mpy files from a ROMFS image mounted at /rom
    (firmware_tests/budget.py builds it as it builds mp32_frozen, from the same object files)."""
    from firmware_tests.budget import romfs_interpreter

    return _unix_build(romfs_interpreter(build=True), "ROMFS")


def _qemu_firmware(edge: str) -> Path:
    from firmware_tests.qemu_board import QEMU_BUILD_CMD, QemuError, firmware

    try:
        return firmware(build=True, edge=edge)
    except QemuError as exc:
        env = "" if edge == "frozen" else f"QEMU_EDGE={edge} "
        _unavailable(f"emulated board unavailable: {exc}; build it with: {env}{QEMU_BUILD_CMD}")


@pytest.fixture(scope="session")
def qemu_image() -> Path:
    """The emulated board's firmware (QEMU mps2-an385, edge/ frozen), built by build_qemu.sh:
    ~30 s the first time, a relink after a change in edge/, at once when cached. Fails on CI
    when it cannot be built, skips elsewhere (e.g. no root to install the toolchain)."""
    return _qemu_firmware("frozen")


@pytest.fixture(scope="session")
def qemu_bare_image() -> Path:
    """The same board without edge/ frozen (QEMU_EDGE=none build_qemu.sh): it gets the edge as
    .mpy files in its ROMFS partition (`mpremote romfs deploy`) or on its filesystem."""
    return _qemu_firmware("none")


@pytest.fixture(params=["mp64", "mp32"])
def interp(request: pytest.FixtureRequest) -> harness.Interpreter:
    """Each test using this runs once per interpreter."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def device_root(tmp_path: Path) -> Callable[..., Path]:
    """``device_root(mode="py"|"mpy", arch=None, extra=None, packages=(edge,))`` under tmp_path."""

    def make(**kwargs) -> Path:
        return harness.make_device_root(tmp_path, **kwargs)

    return make
