"""The gateway's command line and job files: one-line errors naming the field, and the demo."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from aggregator.ops import jobs
from aggregator.gateway.config import ConfigError, load_job, parse_job

CLI = [sys.executable, "-m", "aggregator.cli"]


def good_tree(tmp_path: Path) -> dict:
    return {"job": {"id": 1}, "model": {"kind": "logistic", "features": 4, "L": 0.3},
            "nodes": {"1": "11" * 32}, "downlink": {"key": "22" * 32}, "state": {"dir": str(tmp_path)}}


@pytest.mark.parametrize("path, value, message", [
    (("training", "scheme"), "zz", "job.toml: training.scheme: unknown scheme 'zz'"),
    (("training", "rule"), "identity", "job.toml: training.rule: rule 'identity' goes with scheme 'identity'"),
    (("training", "k_cap"), 0, "job.toml: training.k_cap: must be >= 1"),
    (("model", "L"), -1.0, "job.toml: model.L: must be finite and > 0"),
    (("model", "kind"), "svm", "job.toml: model.kind: unknown model 'svm'"),
    (("cost", "profile"), "no-such-radio", "job.toml: cost.profile:"),
    (("cost", "metric"), "joules", None),
    (("nodes", "1"), "abcd", "job.toml: nodes.1: must be 32 bytes"),
    (("rounds", "quorum"), 0.0, "job.toml: rounds.quorum: must be > 0"),
    (("training", "k_capp"), 3, "job.toml: training.k_capp: unknown key"),
    (("model", "features"), "4", "job.toml: model.features: must be int"),
])
def test_job_errors_name_the_field(tmp_path, path, value, message):
    tree = good_tree(tmp_path)
    tree.setdefault(path[0], {})[path[1]] = value
    if message is None:
        parse_job(tree)        # accepted
        return
    with pytest.raises(ConfigError) as exc:
        parse_job(tree)
    assert str(exc.value).startswith(message)
    assert "\n" not in str(exc.value)


def test_metric_must_exist_for_the_profile(tmp_path):
    tree = good_tree(tmp_path)
    tree["cost"] = {"profile": "paper-packet-128-64-128", "metric": "joules"}
    with pytest.raises(ConfigError, match="cost.metric: 'joules' is not defined for paper-packet-128-64-128"):
        parse_job(tree)


@pytest.mark.e2e
def test_serve_prints_one_line_for_a_bad_job(tmp_path):
    bad = tmp_path / "job.toml"
    bad.write_text('[job]\nid = 1\n[model]\nkind = "logistic"\nfeatures = 3\nL = 1.0\n[training]\nscheme = "q"\n')
    r = subprocess.run(CLI + ["serve", str(bad)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == "cat-aggregator: job.toml: training.scheme: unknown scheme 'q' (use identity, S, SQ or SS)"
    bad.write_text("not = [toml")
    r = subprocess.run(CLI + ["serve", str(bad)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("cat-aggregator: job.toml: not valid TOML")
    r = subprocess.run(CLI + ["demo", "--broker", "nope"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "cat-aggregator: --broker: expected HOST:PORT, got 'nope'"


def test_prepared_job_loads(tmp_path):
    layout = jobs.prepare(tmp_path, "digits", nodes=3, rounds=5, scheme="ss", k_cap=32)
    job = load_job(layout.job_path)
    assert job.model_kind == "softmax" and job.d == 10 * 64 and job.nodes == [0, 1, 2]
    assert job.state_dir == tmp_path / "state"
    assert all(p.exists() for p in layout.data_files.values())


def run_demo(out: Path, *extra: str) -> subprocess.CompletedProcess:
    r = subprocess.run(CLI + ["demo", "--nodes", "2", "--rounds", "4", "--quiet", "--out", str(out), *extra],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def round_nodes(state: Path) -> list[list[int]]:
    """The nodes each closed round of a demo session had (from its metrics log)."""
    import json
    events = [json.loads(line) for line in (state / "metrics.jsonl").read_text().splitlines()]
    return [e["nodes"] for e in events if e["event"] == "round"]


@pytest.mark.e2e
@pytest.mark.parametrize("transport", ["coap", "mqtt-own-tls-broker", "mqtt-given-broker"])
def test_demo_runs_and_writes_table_and_plot(tmp_path, transport, request):
    """CoAP runs the default problem (digits, softmax, d = 640); the MQTT runs take the small
    breast-cancer set. Every round of both sessions has every node: a session that read the
    previous session's retained final config or model would sit out its rounds, which then
    closed only at their deadline (tens of seconds) with the other node alone."""
    out = tmp_path / "out"
    args: list[str] = []
    if transport == "mqtt-given-broker":
        broker = request.getfixturevalue("mosquitto_broker")
        args += ["--transport", "mqtt", "--broker", f"{broker.host}:{broker.port}", "--dataset", "breast_cancer"]
    elif transport == "mqtt-own-tls-broker":
        args += ["--transport", "mqtt", "--dataset", "breast_cancer"]
    r = run_demo(out, *args)
    assert "gd / cat: bytes" in r.stdout
    if transport == "coap":
        assert "dataset digits: 1797 rows, 64 features, 10 classes (softmax, d=640)" in r.stdout
    lines = [l for l in r.stdout.splitlines() if re.match(r"(cat|gd)\s+\d", l)]
    assert len(lines) == 2
    # the whole board too: a row per method and node, and CAT against full gradients on it; the
    # board is the link's (MQTT: the Wi-Fi profile's ESP32, the profile an MQTT node must have)
    assert f"whole board ({'nrf52840' if transport == 'coap' else 'esp32'}, 2xaa" in r.stdout
    rows = [l.split()[0] for l in r.stdout.splitlines() if re.match(r"(cat|gd)\s+node \d", l)]
    assert "cat" in rows and "gd" in rows  # one row per node the gateway logged
    assert re.search(r"gd / cat: whole-board energy [\d.]+x; battery life cat [\d.e+]+ days", r.stdout)
    assert (tmp_path / "out" / "loss_vs_bytes.png").stat().st_size > 1000
    assert (tmp_path / "out" / "loss_vs_bytes.svg").exists()
    assert (out / "loss_vs_bytes.png").stat().st_size > 1000
    assert (out / "loss_vs_bytes.svg").exists()
    for label in ("cat", "gd"):
        assert round_nodes(out / f"state-{label}") == [[0, 1]] * 4, label
    if transport == "mqtt-own-tls-broker":
        conf = (out / "broker" / "mosquitto.conf").read_text()
        assert "allow_anonymous false" in conf and "certfile" in conf and "acl_file" in conf
    if transport == "mqtt-given-broker":
        # Again on the same broker and into the same directory: the first run's retained
        # messages (other keys) and checkpoints (a finished job) must not reach this one.
        run_demo(out, *args)
        for label in ("cat", "gd"):
            assert round_nodes(out / f"state-{label}") == [[0, 1]] * 4, label


def serve_error(*args: str) -> str:
    """stderr of a `cat-aggregator serve` that must fail with one line and exit code 2."""
    r = subprocess.run(CLI + ["serve", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    return r.stderr


@pytest.mark.e2e
def test_serve_prints_one_line_when_the_gateway_cannot_start(tmp_path):
    """What a user can get wrong at start-up is a UserError of the module that finds it
    (CoapBindError, SerialPortError, BrokerError, StateMismatchError): one line, exit 2."""
    import socket

    import numpy as np

    from aggregator.gateway.state import State, Store

    layout = jobs.prepare(tmp_path / "a", "breast_cancer", nodes=2, rounds=2)
    job = str(layout.job_path)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        err = serve_error(job, "--coap", f"127.0.0.1:{port}")
    assert err.startswith(f"cat-aggregator: CoAP: cannot serve on 127.0.0.1:{port}: ")
    err = serve_error(job, "--serial", str(tmp_path / "no-tty"))
    assert err.startswith(f"cat-aggregator: serial port {tmp_path / 'no-tty'}: ")
    with socket.socket() as closed:               # a TCP port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        err = serve_error(job, "--mqtt", f"127.0.0.1:{port}")
    assert err.startswith(f"cat-aggregator: no CONNACK from MQTT broker 127.0.0.1:{port}")
    other = load_job(layout.job_path)
    Store(other.state_dir).save(State(job_id=other.job_id + 1, round=3, model=np.zeros(other.d, np.float32)))
    err = serve_error(job, "--coap", "127.0.0.1:0")
    assert err.startswith(f"cat-aggregator: state in {other.state_dir} belongs to another job")


@pytest.mark.parametrize(("args", "msg"), [
    (["--transport", "mqtt", "--profile", "ieee802154-6lowpan-coap"],
     "--profile: transport mqtt, but cost profile ieee802154-6lowpan-coap prices coap messages"),
    (["--profile", "serial-slip-115200"], "--profile: transport coap, but cost profile serial-slip-115200 prices serial"),
])
def test_demo_refuses_a_profile_of_another_transport_before_it_starts(tmp_path, capsys, args, msg):
    from aggregator.cli import main
    assert main(["demo", "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists(), err


@pytest.mark.parametrize("cmd, message", [
    (CLI + ["simulate", "--nodes", "x"],
     "cat-aggregator simulate: argument --nodes: invalid int value: 'x' (see cat-aggregator simulate --help)"),
    (CLI + ["experiment", "link-costs", "--rule", "fixed"],
     "cat-aggregator experiment link-costs: argument --rule: invalid choice: 'fixed' (choose from 'cat', 'catavg') "
     "(see cat-aggregator experiment link-costs --help)"),
    (CLI + ["profile", "--bytes"], "cat-aggregator profile: argument --bytes: expected one argument "
                                   "(see cat-aggregator profile --help)"),
    ([sys.executable, "-m", "edge.cli", "--transport", "ftp"],
     "cat-edge: argument --transport: invalid choice: 'ftp' (choose from 'coap', 'mqtt', 'serial') "
     "(see cat-edge --help)"),
])
def test_a_bad_argument_is_one_line_not_the_usage_block(cmd, message):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == message and r.stdout == ""
