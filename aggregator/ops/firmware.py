"""`cat-aggregator firmware`: the edge in MicroPython's own packaging conventions.

* `firmware manifest` writes a freeze manifest (MicroPython's manifest.py: `include`,
  `package`, `require`) that freezes `edge/` into a port's firmware build: the bytecode then
  lives in flash, not in the heap, which is what boards with less than ~100 KiB free need
  (docs/firmware.md, RAM). Build with the port's make, e.g.
  `make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/manifest.py`.
* `firmware romfs` writes a ROMFS image (MicroPython 1.25+'s read-only filesystem) holding
  `edge/` as .mpy files, for `mpremote romfs deploy`. A board mounts its ROMFS partition at
  /rom and runs the bytecode in place from flash (py/persistentcode.c reads code, qstr text
  and constants through mp_reader_try_read_rom): the code a round imports then needs ~23 KiB
  of heap, not ~56 as .mpy files on the board's filesystem, and a code change needs no
  firmware build (docs/firmware.md, "ROMFS").
* `firmware package-json` writes the package.json that `mpremote mip install` reads (from a
  local path or a repository URL); the repository's top-level package.json is this output.

The modules are the board's set of `flash` (aggregator.ops.flash.board_modules): the
CPython-only modules and the TOML profile loader stay on the host.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aggregator.errors import UserError
from aggregator.ops.flash import ARCHES, EDGE_DIR, MPY_OPT, UMQTT_MIP, board_modules, romfs_image
from edge import __version__

#: The port's own frozen modules, kept when edge/ is added (esp32, rp2, stm32, ... keep
#: theirs in boards/manifest.py; the unix port in variants/manifest.py).
DEFAULT_INCLUDE = "$(PORT_DIR)/boards/manifest.py"


def manifest_text(include: str | None = DEFAULT_INCLUDE, umqtt: bool = False,
                  base_path: Path | None = None) -> str:
    """A freeze manifest for the edge: the port's own manifest (unless include is None), the
    package `edge` from base_path (default: where this edge/ is installed), umqtt.simple
    from micropython-lib with umqtt (MQTT boards)."""
    base = (base_path or EDGE_DIR.parent).resolve()
    files = ", ".join(repr(m) for m in board_modules())
    lines = [f"# Freezes the cat-iot edge {__version__} into a MicroPython firmware image;",
             "# written by `cat-aggregator firmware manifest`."]
    if include:
        lines.append(f"include({include!r})")
    lines.append(f"package('edge', files=({files},), base_path={str(base)!r})")
    if umqtt:
        lines.append(f"require({UMQTT_MIP!r})")
    return "\n".join(lines) + "\n"


def package_json() -> dict:
    """What `mpremote mip install` reads: every board module, by a path relative to the
    package.json (so a local checkout and a repository URL both work)."""
    return {"urls": [[f"edge/{m}", f"edge/{m}"] for m in board_modules()], "version": __version__}


def package_json_text() -> str:
    return json.dumps(package_json(), indent=2) + "\n"


def _write(out: str, text: str) -> None:
    if out == "-":
        sys.stdout.write(text)
        return
    try:
        Path(out).write_text(text)
    except OSError as exc:
        raise UserError(f"--out {out}: {exc.strerror or exc}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("firmware", help="MicroPython packaging: a freeze manifest, a ROMFS image, package.json for mip")
    fsub = p.add_subparsers(dest="firmware_command", metavar="WHAT", required=True)
    m = fsub.add_parser("manifest", help="write a manifest.py that freezes edge/ into a port's firmware")
    m.add_argument("--out", default="-", metavar="FILE", help="where to write it (default: standard output)")
    inc = m.add_mutually_exclusive_group()
    inc.add_argument("--include", default=DEFAULT_INCLUDE, metavar="MANIFEST",
                     help=f"the port's manifest to keep (default {DEFAULT_INCLUDE}; "
                          "the unix port: $(PORT_DIR)/variants/manifest.py)")
    inc.add_argument("--no-include", action="store_true", help="freeze the edge alone")
    m.add_argument("--umqtt", action="store_true", help="also freeze umqtt.simple (MQTT boards; needs micropython-lib)")
    m.set_defaults(func=run_manifest)
    r = fsub.add_parser("romfs", help="write a ROMFS image of edge/ as .mpy for `mpremote romfs deploy` "
                                      "(runs from flash: MicroPython 1.25+ boards with a ROMFS partition)")
    r.add_argument("--out", default="edge.romfs", metavar="FILE", help="where to write it (default: edge.romfs)")
    r.add_argument("--arch", default="none", choices=ARCHES, help="mpy-cross -march, as for `flash`")
    r.add_argument("--line-numbers", action="store_true",
                   help="keep source line numbers (mpy-cross -O0), as `flash --line-numbers`")
    r.set_defaults(func=run_romfs)
    j = fsub.add_parser("package-json", help="write the package.json `mpremote mip install` reads")
    j.add_argument("--out", default="-", metavar="FILE", help="where to write it (default: standard output)")
    j.set_defaults(func=run_package_json)


def run_manifest(args: argparse.Namespace) -> int:
    _write(args.out, manifest_text(None if args.no_include else args.include, args.umqtt))
    if args.out != "-":
        print(f"wrote {args.out}: build with the port's make and FROZEN_MANIFEST={Path(args.out).resolve()}, "
              "e.g. make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=...; then "
              "`cat-aggregator flash ... --no-edge` copies node.json, the data and main.py")
    return 0


def run_romfs(args: argparse.Namespace) -> int:
    image = romfs_image(args.arch, 0 if args.line_numbers else MPY_OPT)
    try:
        Path(args.out).write_bytes(image)
    except OSError as exc:
        raise UserError(f"--out {args.out}: {exc.strerror or exc}") from None
    print(f"wrote {args.out} ({len(image):,} bytes): put it on the board with `mpremote romfs deploy {args.out}`, "
          "remove an older :edge/ from its filesystem (it would come first on sys.path), then "
          "`cat-aggregator flash ... --no-edge` copies node.json, the data and main.py "
          "(`flash --romfs` does all of it)")
    return 0


def run_package_json(args: argparse.Namespace) -> int:
    _write(args.out, package_json_text())
    return 0
