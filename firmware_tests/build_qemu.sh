#!/usr/bin/env bash
# Build MicroPython for QEMU's mps2-an385 (Cortex-M3) with edge/ frozen in: the emulated board
# of the firmware tests (firmware_tests/qemu_board.py, test_qemu_board.py, budget.py).
#
# Why: the unix port is not a board. This firmware runs the edge on a bare-metal Cortex-M3
# with a fixed GC heap, SysTick ticks, CMSDK UARTs and a littlefs RAM disk (the board port in
# firmware_tests/qemu_mps2/, built out of tree against MicroPython's source), under
# qemu-system-arm, talking SLIP to the gateway over an emulated UART.
#
# Source: the Debian trixie micropython 1.25.0+ds source tree and its mpy-cross, fetched and
# built by build_mp32.sh (run first; it exits at once when its build is cached). Toolchain:
# Debian bookworm's gcc-arm-none-eabi + libnewlib-arm-none-eabi; emulator: qemu-system-arm
# (installed with apt when missing and running as root).
#
# Cached: <repo>/.cache/qemu-mps2/firmware.elf with firmware.key, a SHA-256 over everything
# the image is built from (the port directory, edge/'s board modules, this script, the
# MicroPython tree and the compiler version). Same key: exit at once. Another key: rebuild in
# the kept object directory (a change in edge/ only refreezes and relinks). Override the cache
# dir with QEMU_CACHE. Prints the firmware path last. Exits non-zero with a one-line
# "build_qemu: FAILED: <reason>" on failure.
#
# QEMU_EDGE=none builds the same board without edge/ frozen (cached in .cache/qemu-mps2-noedge):
# the board that gets the edge as .mpy files, on its filesystem or in its ROMFS partition
# (`cat-aggregator firmware romfs`, then `mpremote romfs deploy`).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="$REPO/firmware_tests/qemu_mps2"
EDGE="${QEMU_EDGE:-frozen}"
case "$EDGE" in
    frozen) CACHE="${QEMU_CACHE:-$REPO/.cache/qemu-mps2}" ;;
    none) CACHE="${QEMU_CACHE:-$REPO/.cache/qemu-mps2-noedge}" ;;
    *) echo "build_qemu: FAILED: QEMU_EDGE must be frozen or none, not $EDGE" >&2; exit 1 ;;
esac
ELF="$CACHE/firmware.elf"
KEYFILE="$CACHE/firmware.key"
MP32_CACHE="${MP32_CACHE:-$REPO/.cache/micropython32}"
JOBS="${QEMU_JOBS:-2}"
LOG="$CACHE/build.log"
APT_PKGS=(qemu-system-arm gcc-arm-none-eabi libnewlib-arm-none-eabi)

log() { echo "build_qemu: $*" >&2; }
fail() { echo "build_qemu: FAILED: $*" >&2; exit 1; }
trap 'fail "line $LINENO: command failed: $BASH_COMMAND"' ERR

mkdir -p "$CACHE"

# ---- toolchain and emulator ---------------------------------------------------
need=()
for pkg in "${APT_PKGS[@]}" make python3; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        need+=("$pkg")
    fi
done
if ((${#need[@]})); then
    [[ $(id -u) -eq 0 ]] || fail "missing Debian packages (${need[*]}) and not root to install them"
    log "installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=900 update >>"$LOG" 2>&1 || fail "apt-get update failed (see $LOG)"
    apt-get -o DPkg::Lock::Timeout=900 install -y --no-install-recommends "${need[@]}" >>"$LOG" 2>&1 ||
        fail "apt-get install ${need[*]} failed (see $LOG)"
fi

# ---- MicroPython source tree and mpy-cross (build_mp32.sh's cache) ---------------
MP32_CACHE="$MP32_CACHE" bash "$REPO/firmware_tests/build_mp32.sh" >&2 ||
    fail "build_mp32.sh failed (it fetches the MicroPython source this build uses)"
TREE="$(find "$MP32_CACHE/src" -mindepth 1 -maxdepth 1 -type d -name 'micropython-*' | head -n1)"
[[ -n "$TREE" && -d "$TREE/ports/qemu" && -d "$TREE/lib/cmsis/inc" ]] ||
    fail "no ports/qemu or lib/cmsis/inc in the MicroPython source under $MP32_CACHE/src"
[[ -x "$TREE/mpy-cross/build/mpy-cross" ]] || fail "mpy-cross missing in $TREE (rerun build_mp32.sh)"

# ---- what gets frozen: edge/ as `cat-aggregator flash` deploys it, and _boot.py ----
MODULES=""
if [[ "$EDGE" == frozen ]]; then
    MODULES="$(cd "$REPO" && python3 -c '
from pathlib import Path
from aggregator.ops.flash import HOST_ONLY
print(" ".join(sorted(p.name for p in Path("edge").glob("*.py") if p.name not in HOST_ONLY)))')" ||
        fail "cannot list edge/ modules (aggregator.ops.flash.HOST_ONLY)"
fi
MANIFEST="$CACHE/manifest.py"
{
    echo "# Written by firmware_tests/build_qemu.sh: the board's _boot.py and edge/ (board modules, unless QEMU_EDGE=none)."
    echo "freeze(\"\$(BOARD_DIR)\", \"_boot.py\")"
    if [[ -n "$MODULES" ]]; then
        printf 'package("edge", files=('
        for m in $MODULES; do printf '"%s", ' "$m"; done
        printf '), base_path="%s")\n' "$REPO"
    fi
} >"$MANIFEST.new"

port_key() {
    {
        (cd "$PORT" && for f in $(ls | sort); do [[ -f "$f" ]] && { echo "$f"; cat "$f"; }; done)
        basename "$TREE"
        arm-none-eabi-gcc --version | head -n1
    } | sha256sum | cut -c1-16
}
key() {
    {
        port_key
        for m in $MODULES; do echo "edge/$m"; cat "$REPO/edge/$m"; done
        cat "$MANIFEST.new" "${BASH_SOURCE[0]}"
    } | sha256sum | cut -c1-16
}
KEY="$(key)"

if [[ -f "$ELF" && -f "$KEYFILE" && "$(cat "$KEYFILE")" == "$KEY" ]]; then
    log "ok, already built: $ELF (key $KEY)"
    echo "$ELF"
    exit 0
fi

# Serialise concurrent runs (make test and a pytest fixture both asking for the build).
exec 9>"$CACHE/.lock"
flock 9
if [[ -f "$ELF" && -f "$KEYFILE" && "$(cat "$KEYFILE")" == "$KEY" ]]; then
    log "ok, built by a concurrent run: $ELF"
    echo "$ELF"
    exit 0
fi
mv "$MANIFEST.new" "$MANIFEST"
: >"$LOG"

# ---- build ---------------------------------------------------------------------
start=$(date +%s)
log "make firmware for mps2-an385, edge/ $EDGE (-j$JOBS, objects in $CACHE/build, log $LOG)"
# A change in the port (or the tree, or the compiler) starts from an empty object dir: the qstr
# header is an order-only prerequisite in MicroPython's makefiles, so objects built before a
# change that adds qstrs would keep the old numbering (frozen imports then fail with a wrong
# name). A change in edge/ alone keeps the objects (refreeze and relink).
PORT_KEY="$(port_key)"
if [[ "$(cat "$CACHE/build/.port-key" 2>/dev/null)" != "$PORT_KEY" ]]; then
    rm -rf "$CACHE/build"
    mkdir -p "$CACHE/build"
    echo "$PORT_KEY" >"$CACHE/build/.port-key"
fi
make -C "$PORT" -j"$JOBS" MPY_DIR="$TREE" BUILD="$CACHE/build" FROZEN_MANIFEST="$MANIFEST" \
    PYTHON="$(command -v python3)" >>"$LOG" 2>&1 ||
    { tail -n 20 "$LOG" >&2; fail "firmware build failed (see $LOG)"; }
built="$CACHE/build/firmware.elf"
[[ -f "$built" ]] || fail "build finished but $built is missing"
log "built in $(($(date +%s) - start)) s"

# ---- verify: boot it, check the board features the tests rely on, power off -------------
VERIFY='import gc, time, os, sys, machine, mps2
t = time.ticks_ms(); time.sleep_ms(20); dt = time.ticks_diff(time.ticks_ms(), t)
IMPORTS
u = machine.UART(1, 115200); u.init(115200, timeout=0)
ok = ok0 and dt >= 20 and mps2.heap_size() == 65536 and gc.mem_free() + gc.mem_alloc() > 60000 and "/lib" in sys.path and u.readinto(bytearray(4)) is None
f = open("v.txt", "w"); f.write("x"); f.close(); os.remove("v.txt")
print("QEMU-VERIFY-" + ("OK" if ok else "BAD %d" % dt))
machine.reset()'
if [[ "$EDGE" == frozen ]]; then
    VERIFY="${VERIFY/IMPORTS/from edge import board, node, frame, pushlinks, slip; ok0 = True}"
else  # no edge/, and the ROMFS partition answers (blank: nothing mounted at /rom)
    VERIFY="${VERIFY/IMPORTS/import vfs; ok0 = vfs.rom_ioctl(1) == 1 and len(vfs.rom_ioctl(2, 0)) == 262144 and \"edge\" not in sys.modules}"
fi
out="$(printf '%s\n' "$VERIFY" | sed 's/$/\r/' |
    timeout 30 qemu-system-arm -machine mps2-an385 -nographic -monitor null \
        -semihosting-config enable=on,target=native,arg=firmware,arg=heap=64k \
        -serial stdio -kernel "$built" 2>&1 || true)"
if [[ "$out" != *QEMU-VERIFY-OK* ]]; then
    fail "built firmware failed verification: $(echo "$out" | tail -n 5 | tr '\n' '|')"
fi
cp "$built" "$ELF.tmp" && mv "$ELF.tmp" "$ELF"
echo "$KEY" >"$KEYFILE"
log "verified: boots, time, machine.UART, littlefs RAM disk, edge/ $EDGE, ROMFS partition, heap=64k honoured"
log "ok: $ELF (key $KEY)"
echo "$ELF"
