"""Watching a running gateway: `cat-aggregator status` and the Prometheus endpoint.

A real `serve` process with real edge processes over CoAP; the job is held mid-round (one of
its two nodes has not started), the endpoint is scraped over HTTP and parsed with
prometheus_client's own parser, and every value is checked against what the wire carried:
the edge's recorded frame, a duplicate and a frame with one flipped byte sent by libcoap's
coap-client. Then the second node starts and `status`, left watching, follows the job to
its end by itself.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

import e2e
from aggregator.gateway.live import STATUS_FILE
from aggregator.gateway.pipeline import ALL_REASONS
from aggregator.gateway.state import State, Store
from aggregator.ops.demo import free_udp_port

CLI = [sys.executable, "-m", "aggregator.cli"]


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one GET /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def status_doc(layout) -> dict:
    path = layout.root / "state" / STATUS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def coap_post(port: int, job: int, payload: Path) -> str:
    """POST a frame with libcoap's coap-client (an independent CoAP peer); its output."""
    r = subprocess.run(["coap-client-notls", "-m", "post", "-b", "64", "-t", "60", "-B", "10", "-f", str(payload),
                        f"coap://127.0.0.1:{port}/cat/{job}/up"], capture_output=True, text=True, timeout=30)
    return r.stdout + r.stderr


def read_until(proc: subprocess.Popen, marker: bytes, timeout: float) -> bytes:
    """What proc wrote to stdout up to and including the first line holding marker."""
    import os
    import select
    fd = proc.stdout.fileno()
    data = b""
    end = time.monotonic() + timeout
    while marker not in data or not data.endswith(b"\n"):
        left = end - time.monotonic()
        assert left > 0 and proc.poll() is None, f"no {marker!r} within {timeout} s: {data!r}"
        if select.select([fd], [], [], left)[0]:
            data += os.read(fd, 4096)
    return data


def test_status_and_prometheus_follow_a_running_job(tmp_path):
    layout = e2e.make_job(tmp_path / "job", nodes=2, rounds=3, deadline_s=600.0)  # round 0 waits for node 1
    port, mport = free_udp_port(), free_tcp_port()
    gw = e2e.serve(layout, "--coap", f"127.0.0.1:{port}", "--metrics-port", str(mport), "--linger", "1")
    procs = [gw]
    watch = None
    try:
        e2e.wait_for(lambda: status_doc(layout).get("state") == "running", 30, "status.json", procs)
        procs.append(e2e.edge(layout, 0, "coap", "127.0.0.1", port))
        e2e.wait_for(lambda: status_doc(layout)["nodes"]["0"]["frames"] == 1, 60, "node 0's update", procs)
        sent = (layout.root / "frames" / "node-0-round-0.cbor").read_bytes()
        # The same frame again (a duplicate: acknowledged, applied once) and with its last byte,
        # inside the MAC tag, flipped (refused before anything is attributed to a node).
        again = tmp_path / "again.cbor"
        again.write_bytes(sent)
        coap_post(port, 1, again)
        flipped = tmp_path / "flipped.cbor"
        flipped.write_bytes(sent[:-1] + bytes([sent[-1] ^ 0x01]))
        coap_post(port, 1, flipped)
        e2e.wait_for(lambda: status_doc(layout)["rejected"].get("bad_mac") == 1, 30, "the bad MAC counted", procs)

        m = scrape(mport)
        node = lambda name, k: m[(name, (("node", str(k)),))]
        assert m[("cat_round", ())] == 0 and m[("cat_rounds", ())] == 3
        assert m[("cat_job_finished", ())] == 0 and m[("cat_round_pending_nodes", ())] == 1
        assert node("cat_node_frames_total", 0) == 1 and node("cat_node_frames_total", 1) == 0
        assert node("cat_node_bytes_total", 0) == len(sent) and node("cat_node_bytes_total", 1) == 0
        assert node("cat_node_duplicates_total", 0) == 1
        assert node("cat_node_packets_total", 0) >= 1 and node("cat_node_energy_joules_total", 0) > 0
        assert node("cat_node_last_round", 0) == 0 and node("cat_node_last_round", 1) == -1
        assert 1 <= node("cat_node_last_t", 0) <= 8                      # make_job's K
        seen = node("cat_node_last_seen_timestamp_seconds", 0)
        assert time.time() - 120 < seen <= time.time()
        assert ("cat_node_last_seen_timestamp_seconds", (("node", "1"),)) not in m
        assert node("cat_node_quarantined", 0) == 0
        rejected = {dict(k[1])["reason"]: v for k, v in m.items() if k[0] == "cat_rejected_total"}
        assert set(rejected) == set(ALL_REASONS)
        assert rejected["bad_mac"] == 1 and sum(rejected.values()) == 1
        assert not [k for k in m if k[0] == "cat_node_rejected_total"]   # bad MAC: no node blamed

        once = subprocess.run(CLI + ["status", "--state", str(layout.root / "state"), "--once"],
                              capture_output=True, text=True, timeout=60)
        assert once.returncode == 0, once.stderr
        text = once.stdout
        assert "round 0 of 3 (open" in text and "1 of 2 updates in: nodes 0)" in text
        assert f"Prometheus metrics: http://127.0.0.1:{mport}/metrics" in text
        row0 = next(l for l in text.splitlines() if l.split()[:1] == ["0"])
        assert row0.split()[5:7] == ["1", str(len(sent))]            # frames, bytes
        assert "rejected by reason: bad_mac=1" in text

        # Left watching, `status` follows the job to its end and exits by itself.
        watch = subprocess.Popen(CLI + ["status", "--state", str(layout.root / "state"), "--interval", "0.2"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        head = read_until(watch, b"rejected by reason", 60)
        procs.append(e2e.edge(layout, 1, "coap", "127.0.0.1", port))
        rest, err = watch.communicate(timeout=120)
        assert watch.returncode == 0, err
        blocks = (head + rest).decode().split("\n\n")
        assert len(blocks) >= 2 and "round 0 of 3 (open" in blocks[0]
        assert "round 3 of 3: finished" in blocks[-1]
        assert gw.wait(60) == 0
        final = status_doc(layout)
        assert final["state"] == "stopped" and final["finished"] and final["round"] == 3
        assert [final["nodes"][k]["frames"] for k in ("0", "1")] == [3, 3]
    finally:
        if watch is not None and watch.poll() is None:
            watch.kill()
            watch.wait(10)
        e2e.stop(procs)


def test_status_of_a_gateway_killed_without_stopping(tmp_path):
    """A status file that says 'running' but is no longer rewritten: shown once, exit code 1."""
    layout = e2e.make_job(tmp_path / "job", nodes=2, rounds=3)
    port = free_udp_port()
    gw = e2e.serve(layout, "--coap", f"127.0.0.1:{port}")
    try:
        e2e.wait_for(lambda: status_doc(layout).get("state") == "running", 30, "status.json", [gw])
    finally:
        e2e.stop([gw], sig=9)
    doc = status_doc(layout)
    assert doc["state"] == "running"
    r = subprocess.run(CLI + ["status", "--state", str(layout.root / "state"), "--interval", "0.5"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "it stopped without saying so" in r.stdout


def test_status_from_a_checkpoint_and_one_line_errors(tmp_path):
    state = tmp_path / "state"
    st = State(job_id=4, round=7, model=np.zeros(5, np.float32))
    st.node(2).frames = 7
    st.quarantined[2] = "operator: stolen"
    Store(state).save(st)
    r = subprocess.run(CLI + ["status", "--state", str(state)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "round 7; from the checkpoint (no status file)" in r.stdout
    assert "QUARANTINED: operator: stolen" in r.stdout
    (state / STATUS_FILE).write_text("{")
    r = subprocess.run(CLI + ["status", "--state", str(state)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("cat-aggregator: ") and r.stderr.count("\n") == 1
    r = subprocess.run(CLI + ["status", "--state", str(tmp_path / "nowhere")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and r.stderr.strip().endswith("no such state directory")


def test_serve_names_a_metrics_port_in_use(tmp_path):
    layout = e2e.make_job(tmp_path / "job", nodes=2, rounds=3)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run(CLI + ["serve", str(layout.job_path), "--coap", "127.0.0.1:0", "--metrics-port", str(port)],
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"cat-aggregator: metrics: cannot serve on 127.0.0.1:{port}: ")


def test_a_status_file_that_cannot_be_written_is_said_once_and_does_not_stop_the_gateway(tmp_path, capsys):
    from aggregator.gateway.live import LiveStatus
    from aggregator.gateway.pipeline import Aggregator
    from aggregator.ops import jobs
    from aggregator.gateway.config import load_job
    job = load_job(jobs.prepare(tmp_path / "job", "breast_cancer", 2, 2, k_cap=8).job_path)
    live = LiveStatus(Aggregator(job, None), tmp_path / "gone")      # no such directory
    live.write()
    live.write()
    err = capsys.readouterr().err
    assert err.count("status file not written") == 1 and "gone" in err
    assert live.write_error is not None
    (tmp_path / "gone").mkdir()
    live.write()
    assert live.write_error is None and (tmp_path / "gone" / STATUS_FILE).is_file()
