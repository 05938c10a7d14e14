#!/usr/bin/env bash
# Build a unix-port MicroPython with 32-bit pointers and single-precision floats.
#
# Why: the PyPI wheel is 64-bit with doubles, so it needs ~1.9x the heap a board
# needs and hides float32 rounding. This build behaves like an ESP32/RP2040 for
# RAM budgets and numerics (docs/firmware.md, "RAM").
#
# Source: Debian trixie's *source* package micropython 1.25.0+ds-1, fetched with
# an isolated apt configuration (the system's apt sources are never touched).
#
# Idempotent: when <repo>/.cache/micropython32/micropython exists and passes the
# checks below, the script exits at once. Override the cache dir with MP32_CACHE.
# Exits non-zero with a one-line "build_mp32: FAILED: <reason>" on failure.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${MP32_CACHE:-$REPO/.cache/micropython32}"
BIN="$CACHE/micropython"
SRC_PKG="micropython"
SRC_VERSION="1.25.0+ds-1"
SUITE="trixie"
MIRROR="http://deb.debian.org/debian"
JOBS="${MP32_JOBS:-2}"
LOG="$CACHE/build.log"

log() { echo "build_mp32: $*"; }
fail() { echo "build_mp32: FAILED: $*" >&2; exit 1; }
# Any unexpected command failure still ends with a one-line reason.
trap 'fail "line $LINENO: command failed: $BASH_COMMAND"' ERR

# One interpreter run checks everything the firmware tests rely on.
VERIFY_SCRIPT='
import sys, struct
assert sys.maxsize == 2**31 - 1, "sys.maxsize=%d, not 32-bit" % sys.maxsize
assert struct.calcsize("P") == 4, "pointer size %d" % struct.calcsize("P")
assert 1.0 + 2**-30 == 1.0, "floats are not single precision"
assert 1.0 + 2**-20 != 1.0, "floats lost too much precision"
import socket, select
try:
    b = bytearray(200000)
    print("no MemoryError under -X heapsize=32k")
    sys.exit(3)
except MemoryError:
    pass
print("MP32-VERIFY-OK")
'

verify() {
    # $1: binary. Prints the failure reason on stdout when it fails.
    local out
    out="$("$1" -X heapsize=32k -c "$VERIFY_SCRIPT" 2>&1)" || true
    if [[ "$out" == *MP32-VERIFY-OK* ]]; then
        return 0
    fi
    echo "${out//$'\n'/ | }"
    return 1
}

# ---- fast path -------------------------------------------------------------
if [[ -x "$BIN" ]] && verify "$BIN" >/dev/null; then
    log "ok, already built: $BIN"
    exit 0
fi

mkdir -p "$CACHE"
# Serialise concurrent runs (e.g. set-up and a test both asking for the build).
exec 9>"$CACHE/.lock"
flock 9
if [[ -x "$BIN" ]] && verify "$BIN" >/dev/null; then
    log "ok, built by a concurrent run: $BIN"
    exit 0
fi
log "building 32-bit single-precision MicroPython into $CACHE (log: $LOG)"
: >"$LOG"

# ---- build dependencies ----------------------------------------------------
need=()
for pkg in gcc-multilib make dpkg-dev xz-utils ca-certificates debian-archive-keyring; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        need+=("$pkg")
    fi
done
if ! command -v python3 >/dev/null 2>&1; then
    need+=(python3)
fi
if ((${#need[@]})); then
    [[ $(id -u) -eq 0 ]] || fail "missing Debian packages (${need[*]}) and not root to install them"
    log "installing Debian build deps: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=900 update >>"$LOG" 2>&1 ||
        fail "apt-get update failed (see $LOG)"
    apt-get -o DPkg::Lock::Timeout=900 install -y --no-install-recommends "${need[@]}" >>"$LOG" 2>&1 ||
        fail "apt-get install ${need[*]} failed (see $LOG)"
fi
PYTHON="$(command -v python3)"

# ---- source, via an isolated apt configuration ------------------------------
SRCDIR="$CACHE/src"
if [[ ! -f "$SRCDIR/.extracted" ]]; then
    APTDIR="$CACHE/apt"
    rm -rf "$APTDIR" "$SRCDIR"
    mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/sources.list.d" "$SRCDIR"
    KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
    echo "deb-src [signed-by=$KEYRING] $MIRROR $SUITE main" >"$APTDIR/sources.list"
    APT_OPTS=(
        -o "Dir::Etc::SourceList=$APTDIR/sources.list"
        -o "Dir::Etc::SourceParts=$APTDIR/sources.list.d"
        -o "Dir::State::Lists=$APTDIR/lists"
        -o "Dir::Cache=$APTDIR/cache"
        -o "APT::Sandbox::User=root"
        -o "Acquire::Languages=none"
    )
    log "fetching $SUITE source index (isolated apt config in $APTDIR)"
    apt-get "${APT_OPTS[@]}" update >>"$LOG" 2>&1 ||
        fail "apt-get update of the isolated $SUITE deb-src index failed (see $LOG)"
    log "apt-get source $SRC_PKG=$SRC_VERSION"
    if ! (cd "$SRCDIR" && apt-get "${APT_OPTS[@]}" source "$SRC_PKG=$SRC_VERSION") >>"$LOG" 2>&1; then
        log "pinned version unavailable; trying $SUITE's current $SRC_PKG source"
        (cd "$SRCDIR" && apt-get "${APT_OPTS[@]}" source "$SRC_PKG") >>"$LOG" 2>&1 ||
            fail "apt-get source $SRC_PKG from $SUITE failed (see $LOG)"
    fi
    found="$(find "$SRCDIR" -mindepth 1 -maxdepth 1 -type d -name "${SRC_PKG}-*" | head -n1)"
    [[ -n "$found" && -d "$found/ports/unix" ]] || fail "no ports/unix in the extracted source under $SRCDIR"
    touch "$SRCDIR/.extracted"
    rm -rf "$APTDIR"  # the 20+ MB source index is not needed any more
fi
TREE="$(find "$SRCDIR" -mindepth 1 -maxdepth 1 -type d -name "${SRC_PKG}-*" | head -n1)"
[[ -n "$TREE" ]] || fail "source tree missing under $SRCDIR (remove $SRCDIR/.extracted and rerun)"
log "source tree: $TREE"

# The +ds tarball drops git submodules; the build only checks that this exists.
mkdir -p "$TREE/lib/micropython-lib"
[[ -f "$TREE/lib/micropython-lib/README.md" ]] || : >"$TREE/lib/micropython-lib/README.md"

# Freeze only asyncio: the default manifest pulls micropython-lib, which is absent.
MANIFEST="$CACHE/manifest.py"
cat >"$MANIFEST" <<'EOF'
# Minimal frozen manifest for the 32-bit test build: asyncio only.
include("$(MPY_DIR)/extmod/asyncio")
EOF

# ---- build -------------------------------------------------------------------
start=$(date +%s)
log "make mpy-cross (-j$JOBS)"
make -C "$TREE/mpy-cross" -j"$JOBS" PYTHON="$PYTHON" >>"$LOG" 2>&1 ||
    { tail -n 20 "$LOG" >&2; fail "mpy-cross build failed (see $LOG)"; }
log "make ports/unix VARIANT=standard MICROPY_FORCE_32BIT=1 float (-j$JOBS)"
make -C "$TREE/ports/unix" -j"$JOBS" PYTHON="$PYTHON" \
    VARIANT=standard \
    MICROPY_FORCE_32BIT=1 \
    CFLAGS_EXTRA=-DMICROPY_FLOAT_IMPL=MICROPY_FLOAT_IMPL_FLOAT \
    LDFLAGS_EXTRA=-static \
    MICROPY_PY_FFI=0 MICROPY_PY_BTREE=0 MICROPY_PY_SSL=0 \
    FROZEN_MANIFEST="$MANIFEST" >>"$LOG" 2>&1 ||
    { tail -n 20 "$LOG" >&2; fail "ports/unix build failed (see $LOG)"; }
built="$TREE/ports/unix/build-standard/micropython"
[[ -x "$built" ]] || fail "build finished but $built is missing"
cp "$built" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
log "built in $(($(date +%s) - start)) s"

# ---- verify ------------------------------------------------------------------
if ! reason="$(verify "$BIN")"; then
    mv "$BIN" "$BIN.bad"
    fail "built binary failed verification: $reason"
fi
log "verified: sys.maxsize=2**31-1, pointer 4 bytes, single-precision floats, MemoryError at 32k heap, socket+select"
log "ok: $BIN"
