"""The edge in MicroPython's packaging conventions: `mpremote mip install` of the repository's
package.json (from a local path) onto the virtual board, then rounds against the gateway; and
the freeze manifest of `cat-aggregator firmware manifest` read by MicroPython's own
tools/manifestfile.py. (test_budget.py builds a firmware image from the same manifest.)"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from aggregator import cli
from aggregator.gateway.config import load_job
from aggregator.gateway.service import Endpoints
from aggregator.ops import firmware, flash
from firmware_tests import harness
from firmware_tests.budget import Gateway, free_udp_port, make_data
from firmware_tests.test_flash import write_job
from firmware_tests.virtual_board import VirtualBoard

REPO = harness.REPO


def test_package_json_is_what_the_command_writes(tmp_path, capsys):
    """The committed package.json lists every board module (and only those), by relative paths
    (a local checkout and a repository URL both resolve them), at the project's version."""
    committed = (REPO / "package.json").read_text()
    assert committed == firmware.package_json_text(), "regenerate: cat-aggregator firmware package-json --out package.json"
    pkg = json.loads(committed)
    names = [dst for dst, src in pkg["urls"]]
    assert names == [src for dst, src in pkg["urls"]] == [f"edge/{m}" for m in flash.board_modules()]
    assert "edge/__init__.py" in names and "edge/node.py" in names
    assert not {f"edge/{m}" for m in flash.HOST_ONLY} & set(names)
    assert all((REPO / n).is_file() for n in names)
    from edge import __version__
    assert pkg["version"] == __version__
    assert cli.main(["firmware", "package-json", "--out", str(tmp_path / "p.json")]) == 0
    assert (tmp_path / "p.json").read_text() == committed


def test_mip_install_from_a_local_path_then_the_board_trains(tmp_path, mp64, capsys):
    """`mpremote mip install --target lib <checkout>/package.json` puts edge/ (source) into the
    board's /lib; `flash --no-edge` adds node.json, the data and main.py; after a hard reset
    the board imports the mip-installed edge and trains against the gateway over CoAP."""
    # Source modules compile on the board as they are imported: more heap than .mpy files.
    board = VirtualBoard(mp64, tmp_path / "board", heap="1m").start()
    try:
        out = flash.mip_install(board.url, [str(REPO / "package.json")])
        assert "Installing:" in out
        lib = board.root / "lib" / "edge"
        assert sorted(p.name for p in lib.iterdir()) == flash.board_modules()
        for m in flash.board_modules():
            assert (lib / m).read_bytes() == (flash.EDGE_DIR / m).read_bytes(), m
        port = free_udp_port()
        job_path = write_job(tmp_path / "job.toml", 24, coap_port=port)
        data = make_data(tmp_path / "node-1.catd", 24, rows=16, layout="dense")
        job = load_job(job_path)
        job.node_keys = {1: job.node_keys[1]}  # quorum of one: the gateway waits for node 1 only
        with Gateway(job, Endpoints(coap=("127.0.0.1", port))) as gw:
            mark = len(board.console)
            rc = cli.main(["flash", str(job_path), "--node", "1", "--data", str(data), "--device", board.url,
                           "--no-edge", "--rounds", "2", "--timeout", "20", "--reset"])
            printed = capsys.readouterr()
            assert rc == 0, printed.err
            assert "copied 3 files" in printed.out                    # node.json, data, main.py
            assert board.wait_for(b"cat-done", 120, mark), board.text()[-3000:]
            done = json.loads(board.text().split("cat-done ", 1)[1].splitlines()[0])
            assert done["node"] == 1 and done["sent"] == 2
            assert gw.wait_round(2) == 2
        assert not (board.root / "edge").exists()                      # nothing shadows lib/edge
    finally:
        board.close()


def _manifestfile():
    """MicroPython's tools/manifestfile.py from the source tree build_mp32.sh fetched."""
    src = harness.mp32_cache_dir() / "src"
    trees = sorted(src.glob("micropython-*")) if src.is_dir() else []
    if not trees or not (trees[0] / "tools" / "manifestfile.py").is_file():
        pytest.skip(f"no MicroPython source tree; run {harness.MP32_BUILD_CMD}")
    spec = importlib.util.spec_from_file_location("manifestfile", trees[0] / "tools" / "manifestfile.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, trees[0]


def test_firmware_manifest_freezes_the_board_modules(tmp_path, capsys):
    """MicroPython's own manifest reader, in freeze mode, on what `firmware manifest` wrote for
    the unix port (keeping its asyncio, as the test firmware does: Debian's source has no
    micropython-lib for the variant's manifest): asyncio plus edge/<module> for every board
    module, from here."""
    manifestfile, tree = _manifestfile()
    out = tmp_path / "manifest.py"
    assert cli.main(["firmware", "manifest", "--out", str(out), "--include", "$(MPY_DIR)/extmod/asyncio"]) == 0
    assert f"FROZEN_MANIFEST={out}" in capsys.readouterr().out
    m = manifestfile.ManifestFile(manifestfile.MODE_FREEZE, {"MPY_DIR": str(tree),
                                                            "PORT_DIR": str(tree / "ports" / "unix"),
                                                            "BOARD_DIR": "", "MPY_LIB_DIR": ""})
    m.execute(str(out))
    frozen = {f.target_path: Path(f.full_path) for f in m.files()}
    edge = {t: p for t, p in frozen.items() if t.startswith("edge/")}
    assert sorted(edge) == [f"edge/{n}" for n in flash.board_modules()]
    assert all(p == flash.EDGE_DIR / Path(t).name for t, p in edge.items())
    assert "asyncio/core.py" in frozen                                # the included manifest's
    assert cli.main(["firmware", "manifest", "--no-include", "--umqtt", "--out", str(out)]) == 0
    text = out.read_text()
    assert "include(" not in text and text.rstrip().endswith("require('umqtt.simple')")
    assert cli.main(["firmware", "manifest", "--out", str(tmp_path / "no" / "such" / "m.py")]) == 2
    assert "--out" in capsys.readouterr().err


ROMFS_READ = """\
import binascii, hashlib, json, os, sys, vfs
with open("edge.romfs", "rb") as f:
    image = f.read()
vfs.mount(vfs.VfsRom(image), "/rom")
sys.path.append("/rom")
files = {}
for name in os.listdir("/rom/edge"):
    with open("/rom/edge/" + name, "rb") as f:
        files[name] = binascii.hexlify(hashlib.sha256(f.read()).digest()).decode()
import edge.frame
print("@@RESULT", json.dumps({"files": files, "file": edge.frame.__file__,
                             "bits": edge.frame.index_bits(4096)}))
"""


def test_firmware_romfs_image_is_what_micropython_mounts(tmp_path, mp32, capsys):
    """MicroPython's own VfsRom reads the image `firmware romfs` wrote: /rom/edge holds each
    board module as the .mpy file `flash` compiles, and edge imports from there."""
    import hashlib

    out = tmp_path / "edge.romfs"
    assert cli.main(["firmware", "romfs", "--out", str(out)]) == 0
    assert f"mpremote romfs deploy {out}" in capsys.readouterr().out
    want = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in flash.compile_edge(tmp_path / "fs", "none")}
    root = harness.make_device_root(tmp_path, mode="mpy", packages=(), extra={"edge.romfs": out})
    r = harness.run(mp32, root, ROMFS_READ, heap="256k")
    assert r.ok, r.describe()[-3000:]
    assert r.result == {"files": want, "file": "/rom/edge/frame.mpy", "bits": 12}
    assert sorted(want) == sorted(n.replace(".py", ".mpy") for n in flash.board_modules())
    assert cli.main(["firmware", "romfs", "--out", str(tmp_path / "no" / "such" / "edge.romfs")]) == 2
    assert "--out" in capsys.readouterr().err
