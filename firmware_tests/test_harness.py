"""The firmware harness itself: real interpreters, real heap limits, real .mpy loading.

These tests make their own tiny modules and never depend on what edge/ contains.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from firmware_tests import harness


def alloc_script(nbytes: int) -> str:
    """A driver that allocates one contiguous buffer of nbytes and reports its size."""
    return harness.EMIT_SNIPPET + f"b = bytearray({nbytes})\nemit({{'n': len(b)}})\n"


def test_results_are_parsed_from_both_interpreters(interp, tmp_path):
    root = harness.make_device_root(tmp_path, packages=())
    script = harness.EMIT_SNIPPET + (
        "import sys\n"
        "print('noise before')\n"
        "emit({'name': sys.implementation.name, 'xs': [1, 2.5, 'a'], 'none': None})\n"
        "emit(sys.maxsize)\n"
    )
    r = harness.run(interp, root, script, heap="64k")
    assert r.ok, r.describe()
    assert r.results[0] == {"name": "micropython", "xs": [1, 2.5, "a"], "none": None}
    assert r.result == 2 ** (interp.pointer_bits - 1) - 1
    assert "noise before" in r.stdout
    assert not r.memory_error and r.error is None


def test_device_root_is_first_on_sys_path(interp, tmp_path):
    # As on a board: the root (cwd) comes first, then .frozen, then /lib.
    root = harness.make_device_root(tmp_path, packages=(), extra={
        "lib/libmod.py": "WHERE = 'lib'\n",
        "data/cfg.json": b'{"k": 1}',
    })
    script = harness.EMIT_SNIPPET + (
        "import sys, os, libmod\n"
        "emit({'path': sys.path, 'cwd': os.getcwd(), 'lib': libmod.WHERE,\n"
        "      'cfg': json.loads(open('data/cfg.json').read())})\n"
    )
    r = harness.run(interp, root, script, heap="64k")
    assert r.ok, r.describe()
    assert Path(r.result["path"][0]).resolve() == root.resolve()
    assert Path(r.result["cwd"]).resolve() == root.resolve()
    assert not any(".micropython" in p for p in r.result["path"])
    assert r.result["lib"] == "lib" and r.result["cfg"] == {"k": 1}


def test_heap_limit_gives_real_memory_error(interp, tmp_path):
    root = harness.make_device_root(tmp_path, packages=())
    small = harness.run(interp, root, alloc_script(200_000), heap="32k")
    assert not small.ok
    assert small.memory_error, small.describe()
    assert small.error.startswith("MemoryError"), small.describe()
    assert small.results == []
    big = harness.run(interp, root, alloc_script(200_000), heap="1m")
    assert big.ok, big.describe()
    assert big.result == {"n": 200_000}


def test_other_failures_are_not_memory_errors(interp, tmp_path):
    root = harness.make_device_root(tmp_path, packages=())
    r = harness.run(interp, root, "raise ValueError('boom')\n", heap="64k")
    assert not r.ok and r.returncode != 0
    assert not r.memory_error
    assert r.error == "ValueError: boom"


def test_bad_result_json_is_not_ok(interp, tmp_path):
    root = harness.make_device_root(tmp_path, packages=())
    r = harness.run(interp, root, "print('@@RESULT {not json')\n", heap="64k")
    assert r.returncode == 0 and not r.ok
    assert r.bad_results == ["@@RESULT {not json"]


def test_timeout_kills_and_is_not_ok(interp, tmp_path):
    root = harness.make_device_root(tmp_path, packages=())
    t0 = time.monotonic()
    r = harness.run(interp, root, "print('@@RESULT 1')\nwhile True:\n    pass\n", timeout=1.0)
    assert time.monotonic() - t0 < 10
    assert r.timed_out and not r.ok and not r.memory_error


def _tiny_package(tmp_path: Path) -> Path:
    pkg = tmp_path / "src" / "tinypkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("VERSION = 3\n")
    (pkg / "calc.py").write_text(
        "def tri(n):\n"
        "    t = 0\n"
        "    for i in range(n + 1):\n"
        "        t += i\n"
        "    return t\n"
    )
    (pkg / "table.json").write_text("[1, 2]")
    return pkg


def test_mpy_mode_loads_compiled_module(interp, tmp_path):
    pkg = _tiny_package(tmp_path)
    root = harness.make_device_root(tmp_path, mode="mpy", packages=[pkg])
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == ["tinypkg/__init__.mpy", "tinypkg/calc.mpy", "tinypkg/table.json"]
    assert (root / "tinypkg" / "calc.mpy").read_bytes()[:1] == b"M"  # mpy magic
    script = harness.EMIT_SNIPPET + (
        "import tinypkg\n"
        "from tinypkg import calc\n"
        "emit({'v': tinypkg.VERSION, 'tri': calc.tri(100), 'file': calc.__file__})\n"
    )
    r = harness.run(interp, root, script, heap="32k")
    assert r.ok, r.describe()
    assert r.result["v"] == 3 and r.result["tri"] == 5050
    assert r.result["file"].endswith("tinypkg/calc.mpy")


def test_py_mode_copies_sources_and_extras(tmp_path):
    pkg = _tiny_package(tmp_path)
    root = harness.make_device_root(tmp_path, packages=[pkg], extra={"main.py": "print(1)\n"})
    assert (root / "tinypkg" / "calc.py").read_text() == (pkg / "calc.py").read_text()
    assert (root / "main.py").read_text() == "print(1)\n"
    # The default package set is the repo's edge/: every module of it is copied.
    default_root = harness.make_device_root(tmp_path)
    want = {p.relative_to(harness.EDGE_DIR.parent) for p in harness.EDGE_DIR.rglob("*.py")
            if "__pycache__" not in p.parts}
    got = {p.relative_to(default_root) for p in default_root.rglob("*.py")}
    assert want and want <= got


def test_mpy_mode_reports_compile_errors(tmp_path):
    bad = tmp_path / "badmod.py"
    bad.write_text("def f(x):\n    match x:\n        case 1:\n            return 2\n")
    with pytest.raises(harness.CompileError) as info:
        harness.make_device_root(tmp_path, mode="mpy", packages=[bad])
    assert len(info.value.errors) == 1 and info.value.errors[0].startswith("badmod.py:")


def test_min_heap_bisects_to_allocation_size(interp, tmp_path):
    root = harness.make_device_root(tmp_path, packages=())
    sizes = {}
    for kib in (16, 64):
        script = alloc_script(kib * 1024)
        k = harness.min_heap(interp, root, script, 1, 512)
        # Needs the buffer plus a few KiB of interpreter baseline and GC tables.
        assert kib < k <= kib * 1.1 + 8, (interp.name, kib, k)
        # The answer is tight: one KiB less really runs out of memory.
        assert harness.run(interp, root, script, heap=f"{k}k").ok
        below = harness.run(interp, root, script, heap=f"{k - 1}k")
        assert not below.ok and below.memory_error, below.describe()
        sizes[kib] = k
    assert 44 <= sizes[64] - sizes[16] <= 56


def test_min_heap_raises_on_non_memory_failure(interp, tmp_path):
    root = harness.make_device_root(tmp_path, packages=())
    with pytest.raises(harness.HarnessError, match="other than MemoryError"):
        harness.min_heap(interp, root, "import nosuchmodule_xyz\n", 1, 64)


def test_min_heap_raises_when_hi_is_too_small(interp, tmp_path):
    root = harness.make_device_root(tmp_path, packages=())
    with pytest.raises(harness.HarnessError, match="does not fit"):
        harness.min_heap(interp, root, alloc_script(100 * 1024), 1, 32)


def test_mp32_is_32bit_single_precision(mp32, mp64, tmp_path):
    root = harness.make_device_root(tmp_path, packages=())
    script = harness.EMIT_SNIPPET + (
        "import sys, struct, array\n"
        "emit({'maxsize': sys.maxsize, 'P': struct.calcsize('P'),\n"
        "      'tiny_lost': 1.0 + 2**-30 == 1.0,\n"
        "      'int24': float(16777217) == 16777216.0,\n"
        "      'third': repr(1 / 3)})\n"
    )
    r32 = harness.run(mp32, root, script)
    assert r32.ok, r32.describe()
    assert r32.result["maxsize"] == 2**31 - 1
    assert r32.result["P"] == 4
    assert r32.result["tiny_lost"] is True
    assert r32.result["int24"] is True  # float32 has a 24-bit mantissa
    assert len(r32.result["third"]) < 12  # ~7 significant digits
    r64 = harness.run(mp64, root, script)
    assert r64.ok, r64.describe()
    assert r64.result["maxsize"] == 2**63 - 1 and r64.result["P"] == 8
    assert r64.result["tiny_lost"] is False and r64.result["int24"] is False


def test_mp32_needs_less_heap_than_wheel(mp32, mp64, tmp_path):
    # Why budgets are checked on mp32: the same data takes about half the heap.
    root = harness.make_device_root(tmp_path, packages=())
    script = harness.EMIT_SNIPPET + "xs = [i * 0.5 for i in range(1000)]\nemit(len(xs))\n"
    k32 = harness.min_heap(mp32, root, script, 1, 256)
    k64 = harness.min_heap(mp64, root, script, 1, 256)
    assert 1.4 * k32 <= k64, (k32, k64)


@pytest.mark.parametrize("arch", harness.CROSS_ARCHES)
def test_cross_compile_all_collects_errors(arch, tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text("import micropython\n@micropython.native\ndef f(x):\n    return x + 1\n")
    assert harness.cross_compile_all(arch, pkg) == []
    (pkg / "bad.py").write_text("def g(a, /, b):\n    return a\n")
    errors = harness.cross_compile_all(arch, pkg)
    assert len(errors) == 1 and errors[0].startswith("pkg/bad.py:"), errors


def test_build_script_does_not_rebuild_when_built(mp32):
    env = dict(os.environ)
    proc = subprocess.run(["bash", str(harness.BUILD_SCRIPT)], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "already built" in proc.stdout
