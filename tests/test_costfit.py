"""Cost fitting: known models recovered from synthetic measurements; the written profile
loads and reproduces the fit; `measure` over loopback through real Mosquitto and aiocoap."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from peers import RecordingResource

from aggregator.lab import costfit
from aggregator.cli import main
from edge.cost import CostModel, LinkCost
from edge.profile import load


def _write(path, x, y) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["transport", "T", "frame_bytes", "rep", "seconds", "ack_seconds"])
        for i, (a, b) in enumerate(zip(x, y)):
            w.writerow(["synthetic", i, int(a), 0, repr(float(b)), ""])


@pytest.fixture
def sizes() -> np.ndarray:
    return np.repeat(np.arange(30, 2600, 3), 3).astype(float)


def test_recovers_affine(tmp_path, sizes) -> None:
    rng = np.random.default_rng(1)
    y = 3.2e-6 * sizes + 4.5e-4 + rng.normal(0, 5e-6, sizes.size)
    fa, fp = costfit.fit_affine(sizes, y), costfit.fit_packet(sizes, y)
    assert costfit.choose([fa, fp]) is fa
    assert fa.params["a"] == pytest.approx(3.2e-6, rel=1e-2)
    assert fa.params["b"] == pytest.approx(4.5e-4, rel=2e-2)
    assert fa.rms == pytest.approx(5e-6, rel=0.1) and fa.r2 > 0.999
    csv_path = tmp_path / "m.csv"
    _write(csv_path, sizes, y)
    out = tmp_path / "fit"
    assert main(["fit-cost", str(csv_path), "--name", "loop-affine", "--out", str(out)]) == 0
    prof = load(out / "loop-affine.toml")
    assert prof["default_metric"] == "seconds" and prof["radio"]["name"] == "none"
    assert "transport" not in prof["message"]      # measured over no node transport: prices none
    for b in (30, 500, 2500):
        assert LinkCost(prof, b).seconds == pytest.approx(fa.predict(np.array([b]))[0], rel=1e-9)
    cm = CostModel(prof, 47236, 1)  # CAT accepts it: costs grow with T, some T fit
    assert cm.t_max > 100 and cm.cost(1) < cm.cost(cm.t_max)
    assert (out / "fit.png").exists() and (out / "fits.md").exists() and (out / "report.md").exists()


def test_recovers_packet(tmp_path, sizes) -> None:
    rng = np.random.default_rng(2)
    y = 1.1e-3 * np.ceil(sizes / 127) + 6e-4 + rng.normal(0, 2e-5, sizes.size)
    fa, fp = costfit.fit_affine(sizes, y), costfit.fit_packet(sizes, y)
    assert costfit.choose([fa, fp]) is fp
    assert fp.params["P"] == 127
    assert fp.params["c1"] == pytest.approx(1.1e-3, rel=1e-2)
    assert fp.params["c0"] == pytest.approx(6e-4, rel=5e-2)
    assert fp.rms < fa.rms / 5
    text = costfit.profile_toml(fp, "six-lowpan-fit", "synthetic", 2600.0, "synthetic")
    p = tmp_path / "six-lowpan-fit.toml"
    p.write_text(text)
    prof = load(p)
    for b in (30, 127, 128, 254, 255, 2599):
        assert LinkCost(prof, b).seconds == pytest.approx(fp.predict(np.array([b]))[0], rel=1e-3)
        assert LinkCost(prof, b).packets == int(np.ceil(b / 127))


def test_exact_models_without_noise(sizes) -> None:
    fp = costfit.fit_packet(sizes, 2e-3 * np.ceil(sizes / 512) + 1e-3)
    assert fp.params["P"] == 512 and fp.rms < 1e-12
    fa = costfit.fit_affine(sizes, 1e-6 * sizes + 2e-4)
    assert fa.params["a"] == pytest.approx(1e-6) and fa.params["b"] == pytest.approx(2e-4)


def test_fit_cost_user_errors(tmp_path, capsys) -> None:
    p = tmp_path / "few.csv"
    _write(p, [10, 10, 20], [1e-3, 1e-3, 2e-3])
    assert main(["fit-cost", str(p)]) == 2
    assert main(["fit-cost", str(tmp_path / "missing.csv")]) == 2
    assert capsys.readouterr().err.count("cat-aggregator:") == 2


def _check_measurements(csv_path, Ts) -> np.ndarray:
    rows = list(csv.DictReader(open(csv_path)))
    assert len(rows) == 2 * len(Ts)
    by_t = {}
    for r in rows:
        assert float(r["seconds"]) > 0
        by_t.setdefault(int(r["T"]), set()).add(int(r["frame_bytes"]))
    sizes = [by_t[t].pop() for t in Ts]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)  # growing T, growing frames
    return np.array(sizes)


def test_measure_mqtt_loopback(tmp_path, mosquitto_broker, capsys) -> None:
    out = tmp_path / "mqtt"
    Ts = [1, 30, 900, 5000]
    assert main(["measure", "--transport", "mqtt", "--broker", f"{mosquitto_broker.host}:{mosquitto_broker.port}",
                 "--d", "47236", "--T", ",".join(map(str, Ts)), "--reps", "2", "--out", str(out), "--quiet"]) == 0
    sizes = _check_measurements(out / "measurements.csv", Ts)
    assert sizes[-1] > 5000 * 4
    rows = list(csv.DictReader(open(out / "measurements.csv")))
    assert all(float(r["ack_seconds"]) > 0 for r in rows)  # QoS 1: PUBACK timed too
    assert main(["fit-cost", str(out / "measurements.csv"), "--name", "mqtt-loopback", "--out",
                 str(tmp_path / "fit")]) == 0
    prof = load(tmp_path / "fit" / "mqtt-loopback.toml")
    assert prof["message"]["transport"] == "mqtt"  # a node on MQTT may use it (edge/startup.py transport_mismatch)


def test_measure_coap_loopback(tmp_path, aiocoap_server_factory) -> None:
    res = RecordingResource()
    srv = aiocoap_server_factory({"/cat/measure/up": res})
    out = tmp_path / "coap"
    Ts = [1, 50, 600]  # 600 entries: a 3.4 kB frame, sent block-wise (Block1)
    assert main(["measure", "--transport", "coap", "--uri", f"coap://{srv.host}:{srv.port}/cat/measure/up",
                 "--d", "3000", "--T", ",".join(map(str, Ts)), "--reps", "2", "--out", str(out), "--quiet"]) == 0
    sizes = _check_measurements(out / "measurements.csv", Ts)
    assert sorted({len(b) for b in res.bodies}) == sorted(set(sizes))  # the server got the whole frames
    assert set(res.content_formats) == {60}
