"""`cat-aggregator init`: a job laid out from the command line, private on disk, refused when
it would replace one, and the walk-through of the README run on one machine."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from aggregator.cli import main as cli_main
from aggregator.gateway.config import load_job
from aggregator.gateway.state import Store
from aggregator.lab import datasets
from aggregator.ops import broker, flash
from edge.datafile import DataFile

from peers import _stop_process, free_port
from test_access import LockedBroker

PY = sys.executable


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def write_csv(path: Path, rows: int = 40, header: bool = True) -> Path:
    """Sensor-like columns of very different scales; the label in the last column."""
    rng = np.random.default_rng(3)
    temp, hum, pres = rng.normal(21, 3, rows), rng.normal(55, 10, rows), rng.normal(1013, 8, rows)
    label = (temp + 0.1 * hum > 26.5).astype(int) * 2 + 1          # raw labels 1 and 3
    lines = ["temperature,humidity,pressure,label"] if header else []
    lines += [f"{a:.3f},{b:.3f},{c:.2f},{y}" for a, b, c, y in zip(temp, hum, pres, label)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_init_lays_out_a_private_job_from_a_csv_file(tmp_path, capsys):
    data = write_csv(tmp_path / "readings.csv")
    site = tmp_path / "site"
    rc = cli_main(["init", str(site), "--node-ids", "7,2,40", "--dataset", str(data), "--rounds", "5",
                   "--transport", "coap", "--gateway", "127.0.0.1:5699"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "3 nodes (7, 2, 40), dataset readings.csv: 40 rows, d = 3, 2 classes" in out.out
    job = load_job(site / "job.toml")
    assert job.nodes == [2, 7, 40] and job.model_kind == "logistic" and job.features == 3
    assert (job.transports["coap"].host, job.transports["coap"].port) == ("127.0.0.1", 5699)
    # Secrets owner-only, directories 0700 (the state directory too).
    for d in (site, site / "data", site / "state"):
        assert mode(d) == 0o700, d
    for k in (2, 7, 40):
        for f in (site / f"node-{k}.toml", site / f"node-{k}.json"):
            assert mode(f) == 0o600, f
    assert mode(site / "job.toml") == 0o600
    rows = 0
    for k in (2, 7, 40):
        pi = tomllib.loads((site / f"node-{k}.toml").read_text())
        assert pi["key"] == job.node_keys[k].hex() and pi["downlink_key"] == job.downlink_key.hex()
        assert (pi["node"], pi["transport"], pi["host"], pi["port"]) == (k, "coap", "127.0.0.1", 5699)
        assert Path(pi["data"]).is_absolute() and Path(pi["data"]) == (site / "data" / f"node-{k}.catd").resolve()
        df = DataFile(pi["data"])
        assert df.d == 3
        rows += df.n
        board = json.loads((site / f"node-{k}.json").read_text())
        assert board == flash.node_config(job, k, f"node-{k}.catd", "coap", "127.0.0.1", 5699)
    assert rows == 40
    # The CSV's columns were standardised and its rows scaled to unit length.
    ds = datasets.load_csv(data)
    assert np.allclose(np.linalg.norm(ds.X, axis=1), 1.0, atol=1e-6) and sorted(set(ds.y)) == [0, 1]
    assert np.allclose(datasets.load_csv(write_csv(tmp_path / "bare.csv", header=False)).X, ds.X)


def test_init_refuses_to_replace_a_job_without_force(tmp_path, capsys):
    site = tmp_path / "site"
    assert cli_main(["init", str(site), "--nodes", "2", "--dataset", "iris"]) == 0
    before = {p: p.read_bytes() for p in site.rglob("*") if p.is_file()}
    assert cli_main(["init", str(site), "--nodes", "3", "--dataset", "wine"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cat-aggregator: {site} already holds a job (job.toml, ...): pass --force")
    assert {p: p.read_bytes() for p in site.rglob("*") if p.is_file()} == before
    # --force: new keys and nodes; the old state (a trained model) is kept aside, not deleted.
    (site / "state" / "checkpoint.bin").write_bytes(b"old model")
    old_key = load_job(site / "job.toml").downlink_key
    assert cli_main(["init", str(site), "--node-ids", "5", "--dataset", "wine", "--force"]) == 0
    out = capsys.readouterr().out
    job = load_job(site / "job.toml")
    assert job.nodes == [5] and job.downlink_key != old_key and job.classes == 3
    assert sorted(p.name for p in site.glob("node-*")) == ["node-5.json", "node-5.toml"]
    assert sorted(p.name for p in (site / "data").iterdir()) == ["node-5.catd", "partition.json"]
    kept = [p for p in site.iterdir() if p.name.startswith("state.old-")]
    assert len(kept) == 1 and (kept[0] / "checkpoint.bin").read_bytes() == b"old model" and kept[0].name in out
    assert mode(site / "state") == 0o700 and not any((site / "state").iterdir())


@pytest.mark.parametrize("args, message", [
    (["--dataset", "nope"], "cannot lay out the job: unknown builtin dataset 'nope'"),
    (["--node-ids", "1,2,1"], "cannot lay out the job: node id 1 is given twice"),
    (["--node-ids", "70000"], "cannot lay out the job: node id 70000 is outside 0..65535"),
    (["--node-ids", "a,b"], "--node-ids: expected comma-separated integers, got 'a,b'"),
    (["--nodes", "0"], "cannot lay out the job: need at least one node, got 0"),
    (["--nodes", "500"], "cannot lay out the job: cannot give 500 nodes 1 rows each from 150 rows"),
    (["--scheme", "x"], "cannot lay out the job: job.toml: training.scheme: unknown scheme 'x'"),
    (["--profile", "no-such-link"], "cannot lay out the job: job.toml: cost.profile: no-such-link: name: no profile"),
    (["--gateway", "h:99999"], "--gateway: expected HOST[:PORT], got 'h:99999'"),
    (["--broker-config", "b"], "--broker-config needs --transport mqtt"),
    (["--tls"], "--tls goes with --broker-config"),
    # the job's profile must price the nodes' transport
    (["--transport", "mqtt", "--profile", "ieee802154-6lowpan-coap"], "--profile: transport mqtt, but cost profile "
     "ieee802154-6lowpan-coap prices coap messages: give the node a mqtt profile or transport coap (shipped: "
     "wifi-tcp-mqtt-esp32)"),
    (["--profile", "wifi-tcp-mqtt-esp32"], "--profile: transport coap, but cost profile wifi-tcp-mqtt-esp32 prices mqtt"),
    (["--profile", "lorawan-eu868-sf7"], "--profile: transport coap, but cost profile lorawan-eu868-sf7 prices nothing"),
])
def test_init_refuses_bad_input_and_writes_nothing(tmp_path, capsys, args, message):
    site = tmp_path / "site"
    rc = cli_main(["init", str(site), "--dataset", "iris", *args])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"cat-aggregator: {message}") and err.count("\n") == 1, err
    assert not site.exists()


def test_init_into_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "site").write_text("not a directory")
    assert cli_main(["init", str(tmp_path / "site"), "--dataset", "iris"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cat-aggregator: {tmp_path / 'site'}: cannot write the job: ") and err.count("\n") == 1


def test_gateway_state_directory_is_private(tmp_path):
    """The gateway makes its state directory 0700 (keyring.json, journals of frames live there)."""
    Store(tmp_path / "fresh" / "state")
    assert mode(tmp_path / "fresh" / "state") == 0o700


def test_walkthrough_init_broker_serve_edges(tmp_path, capsys):
    """The README's deployment on one machine: `init` with a locked-down TLS broker, `serve`
    with the line init printed, and `cat-edge --config node-<k>.toml` with nothing else: each
    edge finds the broker, its credentials and the CA to pin in its config."""
    port = free_port("tcp")
    site = tmp_path / "site"
    rc = cli_main(["init", str(site), "--node-ids", "3,8", "--dataset", "iris", "--rounds", "3",
                   "--transport", "mqtt", "--gateway", f"127.0.0.1:{port}", "--broker-config", str(site / "broker"),
                   "--tls"])
    out = capsys.readouterr().out
    assert rc == 0
    serve = next(line for line in out.splitlines() if line.startswith("run the gateway:")).split(":", 1)[1].split()
    assert serve[:3] == ["cat-aggregator", "serve", str(site / "job.toml")] and "--mqtt-cafile" in serve
    for k in (3, 8):
        pi = tomllib.loads((site / f"node-{k}.toml").read_text())
        assert pi["username"] == f"cat-1-node-{k}" and Path(pi["ca_file"]) == (site / "broker" / "ca.crt")
        assert json.loads((site / f"node-{k}.json").read_text())["password"] == pi["password"]
    # A re-run of the broker files keeps the passwords and the CA (and gives the files' paths).
    files = broker.write_broker_config(load_job(site / "job.toml"), site / "broker", ("127.0.0.1", port), tls=True)
    b = LockedBroker(files).start()
    log = open(tmp_path / "serve.log", "wb")
    procs = [subprocess.Popen([PY, "-m", "aggregator.cli", *serve[1:]], stdout=log, stderr=subprocess.STDOUT)]
    try:
        procs += [subprocess.Popen([PY, "-m", "edge.cli", "--config", str(site / f"node-{k}.toml"), "--json",
                                    "--timeout", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for k in (3, 8)]
        results = [p.communicate(timeout=120) for p in procs[1:]]
        assert procs[0].wait(60) == 0, (tmp_path / "serve.log").read_text()[-2000:]
    finally:
        for p in procs:
            _stop_process(p)
        b.stop()
    for p, (stdout, stderr) in zip(procs[1:], results):
        assert p.returncode == 0, stderr[-2000:]
        assert len(stdout.splitlines()) == 3
    assert (site / "state" / "checkpoint.bin").exists() and mode(site / "state") == 0o700
    assert "cat-1-node-3" in b.log() and "not authorised" not in b.log()
