"""Full edge rounds on real MicroPython against the real gateway, over CoAP, MQTT and SLIP.

The gateway is aggregator.gateway.service.Service (aiocoap / paho-mqtt / pyserial fronts) in a
background thread; the edge is edge/board.py as a flashed board runs it, on the unix port.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from aggregator.ops.flash import node_config
from aggregator.gateway.service import Endpoints
from firmware_tests import harness
from firmware_tests.budget import (MQTT_PROFILE, SERIAL_PROFILE, Gateway, Offline, fetch_umqtt, make_data, make_job,
                                   round_setup, run_round)
from firmware_tests.conftest import _on_ci
from firmware_tests.virtual_board import PtySocket

REPO = harness.REPO
BOARD_RUN = REPO / "firmware_tests" / "scripts" / "board_run.py"
sys.path.insert(0, str(REPO / "tests"))
from peers import MosquittoBroker  # noqa: E402


def _rounds(stdout: str) -> list[dict]:
    """The per-round JSON lines edge/board.py prints."""
    return [json.loads(line.split(" ", 1)[1]) for line in stdout.splitlines() if line.startswith("cat-round ")]


@pytest.mark.parametrize("mode", ["py", "mpy"])
def test_coap_rounds_against_gateway(interp, mode, tmp_path):
    """Three rounds at d = 1,024 (snapshot, then deltas); the device's model ends bit-identical
    to the gateway's. From .py source the compiler needs far more heap than the .mpy build."""
    setup = round_setup(tmp_path, 1024, mode=mode, layout="dense")
    try:
        heap = {("mp32", "mpy"): "192k", ("mp32", "py"): "320k",
                ("mp64", "mpy"): "384k", ("mp64", "py"): "640k"}[(interp.name, mode)]
        r = run_round(interp, setup, heap, rounds=3, sync=True, precompile=mode == "mpy")
        assert r.ok, r.describe()[-3000:]
        res = r.result
        assert res["status"] == "sent" and res["accepted"] and res["code"] == 0x44
        assert res["round"] == 2 and res["snapshots"] == 1
        assert 1 <= res["T"] <= 128 and res["bytes"] > 20
        rnd, crc = setup.gateway.model_crc()
        assert rnd == 3
        assert res["extra"]["synced"] == 3 and res["extra"]["deltas"] == 3
        assert res["extra"]["crc"] == crc  # float32(x + delta) on both sides: bitwise equal
        summ = setup.gateway.summary()
        assert summ["rejected"] == {} and summ["nodes"][1]["frames"] == 3
        assert summ["nodes"][1]["last_t"] == res["T"]
    finally:
        setup.close()


def _need_umqtt() -> Path:
    try:
        return fetch_umqtt()
    except Offline as exc:
        if _on_ci():
            pytest.fail(f"CI is set and umqtt.simple could not be fetched: {exc}")
        pytest.skip(f"offline: {exc}")


def _board_root(tmp_path: Path, cfg: dict, data: Path, lib: dict | None = None) -> Path:
    extra: dict = {"node.json": json.dumps(cfg), "data.catd": data}
    root = harness.make_device_root(tmp_path, mode="mpy", extra=extra)
    for rel, src in (lib or {}).items():
        err = harness.compile_module(src, root / rel, rel.replace(".mpy", ".py"))
        assert err is None, err
    return root


def test_mqtt_rounds_with_umqtt_simple(interp, tmp_path):
    """umqtt.simple (PyPI sdist, compiled to .mpy in lib/) against a real Mosquitto; the gateway
    is the aggregator's paho-mqtt front."""
    cache = _need_umqtt()
    with MosquittoBroker(workdir=tmp_path / "mq") as broker:
        job = make_job(tmp_path / "state", 256, k_cap=32, profile=MQTT_PROFILE)
        data = make_data(tmp_path / "d.catd", 256, layout="csr", nnz=24)
        cfg = node_config(job, 1, "data.catd", "mqtt", "127.0.0.1", broker.port)
        root = _board_root(tmp_path, cfg, data, {"lib/umqtt/simple.mpy": cache / "umqtt" / "simple.py"})
        with Gateway(job, Endpoints(mqtt=("127.0.0.1", broker.port))) as gw:
            # .mpy code in the heap, umqtt included, priced by the MQTT profile
            heap = "112k" if interp.pointer_bits == 32 else "208k"
            r = harness.run(interp, root, BOARD_RUN, heap=heap, timeout=120, precompile=True, args=["3"])
            assert r.ok, r.describe()[-3000:]
            assert r.result == {"sent": 3}
            rounds = _rounds(r.stdout)
            assert [x["round"] for x in rounds] == [0, 1, 2]
            assert all(x["accepted"] and 1 <= x["T"] <= 32 for x in rounds)
            assert gw.wait_round(3) == 3
            summ = gw.summary()
            assert summ["rejected"] == {} and summ["nodes"][1]["frames"] == 3
            done = [json.loads(line.split(" ", 1)[1]) for line in r.stdout.splitlines()
                    if line.startswith("cat-done ")][0]
            assert done["snapshots"] == 1 and done["deltas"] == 2  # deltas on cat/<job>/down


def test_slip_rounds_through_pyserial_bridge(interp, tmp_path):
    """The device writes SLIP frames to a pty; the gateway's pyserial bridge reaches the other end
    through socket://, as it would a USB-serial adapter."""
    line = PtySocket().start()
    try:
        job = make_job(tmp_path / "state", 200, k_cap=40, profile=SERIAL_PROFILE)
        data = make_data(tmp_path / "d.catd", 200, layout="dense")
        cfg = node_config(job, 1, "data.catd", "serial", serial={"path": line.path})
        root = _board_root(tmp_path, cfg, data)
        with Gateway(job, Endpoints(serial=[(line.url, 115200)])) as gw:
            # .mpy code in the heap, priced by the serial line's profile
            heap = "112k" if interp.pointer_bits == 32 else "208k"
            r = harness.run(interp, root, BOARD_RUN, heap=heap, timeout=120, precompile=True, args=["2"])
            assert r.ok, r.describe()[-3000:]
            assert r.result == {"sent": 2}
            rounds = _rounds(r.stdout)
            assert [x["round"] for x in rounds] == [0, 1]
            assert gw.wait_round(2) == 2
            summ = gw.summary()
            assert summ["rejected"] == {} and summ["nodes"][1]["frames"] == 2
            assert line.connections == 1
    finally:
        line.close()
