"""The edge loop against a real gateway: model sync by deltas and by snapshot, the
serial link through the gateway's pyserial bridge on a real pty, and the cat-edge CLI."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
import tty

import numpy as np
import pytest

from aggregator.gateway.config import load_job
from aggregator.ops.demo import ServiceThread, free_udp_port
from aggregator.gateway.service import Endpoints
from aggregator.lab import datasets
from edge import catavg, datafile, learner, np_backend as nb, profile, sleep, slip
from edge.coap import CoapClient
from edge.links import CoapLink
from edge.pushlinks import SlipLink
from edge.node import EdgeError, EdgeNode

import e2e

pytestmark = pytest.mark.e2e   # real processes and peers on loopback


def node_for(layout, k: int, prof=None) -> EdgeNode:
    import tomllib
    c = tomllib.loads(layout.node_configs[k].read_text())
    return EdgeNode(k, bytes.fromhex(c["key"]), bytes.fromhex(c["downlink_key"]), c["job"],
                    datafile.DataFile(c["data"]), prof or profile.load_profile(c["profile"]))


def coap_gateway(job, links: int) -> tuple[ServiceThread, list[CoapLink]]:
    """A gateway thread serving the job over CoAP on loopback, and `links` edge links to it."""
    port = free_udp_port()
    svc = ServiceThread(job, Endpoints(coap=("127.0.0.1", port)))
    svc.start()
    return svc, [CoapLink(CoapClient("127.0.0.1", port, ack_timeout=0.5), job.job_id) for _ in range(links)]


def send_round(node: EdgeNode, link, timeout: float = 30.0) -> None:
    """Step the node until it has sent this round's frame (the round may not be open yet)."""
    end = time.monotonic() + timeout
    while node.step(link) != "sent":
        assert time.monotonic() < end, f"node {node.node} sent nothing within {timeout:.0f} s"
        time.sleep(0.01)


def test_edges_catch_up_by_delta_and_fall_back_to_snapshot(tmp_path):
    layout = e2e.make_job(tmp_path / "job", nodes=3, rounds=12, quorum=2.0)
    job = load_job(layout.job_path)
    job.history = 2
    svc, links = coap_gateway(job, 3)
    try:
        fast = [node_for(layout, k) for k in (0, 1)]
        slow = node_for(layout, 2)
        agg = svc.service.agg
        assert slow.step(links[2]) == "sent"                 # round 0, model from the snapshot
        assert fast[0].step(links[0]) == "sent"              # quorum 2: round 0 closes
        assert agg.state.round == 1
        for r in range(1, 6):                                # the fast nodes go on, the slow one sleeps
            for k in (0, 1):
                send_round(fast[k], links[k])
            assert agg.state.round == r + 1
        assert (fast[0].snapshots, fast[0].deltas) == (1, 5)   # version 0 -> 5 by deltas
        assert (fast[1].snapshots, fast[1].deltas) == (1, 4)   # joined at version 1
        # Six versions behind with two deltas kept: the slow node loads the snapshot.
        assert slow.step(links[2]) == "sent"
        assert (slow.snapshots, slow.deltas, slow.version) == (2, 0, 6)
        assert np.array(slow.model, dtype=np.float32).tobytes() == agg.state.model.tobytes()
        # One version behind: the delta.
        assert fast[0].step(links[0]) == "sent"
        assert (fast[0].deltas, fast[0].version) == (6, 6) and agg.state.round == 7
    finally:
        svc.stop()


def test_edge_refuses_a_job_for_another_profile(tmp_path):
    layout = e2e.make_job(tmp_path / "job", nodes=1, rounds=3)
    job = load_job(layout.job_path)
    port = free_udp_port()
    svc = ServiceThread(job, Endpoints(coap=("127.0.0.1", port)))
    svc.start()
    try:
        n = node_for(layout, 0, profile.load_profile("lorawan-eu868-sf12"))
        with pytest.raises(EdgeError, match="cost profile ieee802154-6lowpan-coap"):
            n.step(CoapLink(CoapClient("127.0.0.1", port, ack_timeout=0.5), job.job_id))
    finally:
        svc.stop()


def test_one_round_over_serial_through_the_pyserial_bridge(tmp_path):
    """Edge SLIP link on one end of a real pty, the gateway's pyserial bridge on the other."""
    layout = e2e.make_job(tmp_path / "job", nodes=1, rounds=2)
    job = load_job(layout.job_path)
    master, slave = os.openpty()
    tty.setraw(master)
    os.set_blocking(master, False)
    svc = ServiceThread(job, Endpoints(serial=[(os.ttyname(slave), 115200)]))
    svc.start()
    try:
        n = node_for(layout, 0)
        link = SlipLink(slip.FdStream(master), max_frame=8192)
        sent = n.run(link, timeout=20)
        assert sent == 2
        agg = svc.service.agg
        e2e.wait_for(lambda: agg.state.round == 2, 10, "two rounds over serial")
        assert agg.state.nodes[0].frames == 2 and not agg.state.rejected
        assert np.array(n.model, dtype=np.float32).tobytes() == agg.state.model.tobytes()
    finally:
        svc.stop()
        os.close(master)
        os.close(slave)


def test_cat_edge_cli_reports_bad_arguments_in_one_line(tmp_path):
    base = [sys.executable, "-m", "edge.cli", "--node", "1", "--job", "1", "--data", str(tmp_path / "none.catd"),
            "--profile", "ieee802154-6lowpan-coap", "--downlink-key", "00" * 32]
    r = subprocess.run(base + ["--key", "zz"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == "cat-edge: --key: not hex"
    r = subprocess.run(base + ["--key", "00" * 31], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "must be 32 bytes" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(base + ["--key", "00" * 32], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("cat-edge: --data:") and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run(base[:-4] + ["--profile", "no-such-link", "--downlink-key", "00" * 32, "--key", "00" * 32],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("cat-edge: --profile:")


@pytest.mark.parametrize(("args", "err"), [
    # a node priced for another stack than it sends on: refused before anything is opened
    (["--profile", "wifi-tcp-mqtt-esp32"], "cat-edge: --transport: transport coap, but cost profile wifi-tcp-mqtt-esp32 "
     "prices mqtt messages: give the node a coap profile or transport mqtt (shipped: ieee802154-6lowpan-coap, "
     "ieee802154-6lowpan-coap-ext, ieee802154-thread-coap, ieee802154-thread-coap-mesh)"),
    (["--profile", "ieee802154-6lowpan-coap", "--transport", "mqtt"], "cat-edge: --transport: transport mqtt, but "
     "cost profile ieee802154-6lowpan-coap prices coap messages: give the node a mqtt profile or transport coap "
     "(shipped: wifi-tcp-mqtt-esp32)"),
    (["--profile", "ieee802154-raw", "--transport", "serial"], "cat-edge: --transport: transport serial, but cost "
     "profile ieee802154-raw prices nothing a node sends (no coap, mqtt or serial): give the node a serial profile "
     "(shipped: serial-slip-115200)"),
    # each with its own transport's profile (a block-size variant too, a paper model with any): on to --data
    (["--profile", "ieee802154-6lowpan-coap-b256"], "cat-edge: --data:"),
    (["--profile", "wifi-tcp-mqtt-esp32", "--transport", "mqtt"], "cat-edge: --data:"),
    (["--profile", "serial-slip-115200", "--transport", "serial"], "cat-edge: --data:"),
    (["--profile", "paper-payload-fpp32", "--transport", "serial"], "cat-edge: --data:"),
])
def test_cat_edge_refuses_a_profile_of_another_transport(tmp_path, args, err):
    r = subprocess.run([sys.executable, "-m", "edge.cli", "--node", "1", "--job", "1", "--data", str(tmp_path / "none.catd"),
                        "--key", "00" * 32, "--downlink-key", "00" * 32, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith(err) and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("scheme", ["s", "sq", "ss"])
def test_error_feedback_keeps_its_residual_in_the_gradient_array(tmp_path, scheme):
    """With error feedback the residual is the gradient array itself (no second d-array):
    rounds run against a real gateway with configs and deltas staged in the frame buffer, the
    gateway's model is the replay of the nodes' frames and the nodes' models equal it bit for
    bit; a snapshot sync, staged through that array, starts the residual again from zero."""
    layout = e2e.make_job(tmp_path / "job", nodes=2, rounds=8, quorum=2.0, scheme=scheme,
                          error_feedback=True)
    job = load_job(layout.job_path)
    svc, links = coap_gateway(job, 2)
    try:
        nodes = [node_for(layout, k) for k in (0, 1)]
        frames: dict[int, dict[int, bytes]] = {}
        for k, nd in enumerate(nodes):
            nd.record = lambda r, mv, k=k: frames.setdefault(r, {}).__setitem__(k, bytes(mv))
        agg = svc.service.agg
        for r in range(5):
            for k, nd in enumerate(nodes):
                send_round(nd, links[k])
                assert nd.feedback is not None and nd.feedback.e is nd.grad and nd.stage is None
        assert agg.state.round == 5 and nodes[0].deltas >= 3
        assert e2e.replay(job, frames).tobytes() == agg.state.model.tobytes()
        assert np.abs(np.array(nodes[0].grad)).max() > 0.0        # unsent mass is kept
        nd = nodes[1]
        nd.version = -1                                           # only a snapshot brings it back
        assert nd.sync(links[1], agg.state.round)
        assert nd.snapshots == 2 and np.abs(np.array(nd.grad)).max() == 0.0
        assert np.array(nd.model, dtype=np.float32).tobytes() == agg.state.model.tobytes()
    finally:
        svc.stop()


def test_catavg_nodes_read_each_delta_against_their_own_update(tmp_path):
    """Rule catavg on real nodes: the job fills its node count in, round 0 weighs by each node's
    sampling noise (the simulator's weights), and the delta that follows a node's update is
    read against it (w = Delta_j / u_j in [0, 1], Delta = the model's step)."""
    layout = e2e.make_job(tmp_path / "job", nodes=3, rounds=4, rule="catavg")
    job = load_job(layout.job_path)
    assert job.rule == 5 and job.rule_param == 3
    svc, links = coap_gateway(job, 3)
    try:
        nodes = [node_for(layout, k) for k in range(3)]
        for k in range(3):
            send_round(nodes[k], links[k])                       # round 0
        sent = [(list(nd.ws.idx[:nd.last["T"]]), list(nd.ws.vals[:nd.last["T"]])) for nd in nodes]
        x0 = np.array(nodes[0].model, dtype=np.float64)
        for nd in nodes:     # no delta yet: the weights of the noise prior, as the simulator's
            ag = nd.rule.agreement
            data = datasets.read_datafile(nd.data.path)
            m1, m2 = datasets.grad_moments_np(data.X, data.y, x0, job.model_kind)
            v = learner.zeros(len(x0))   # what the node compressed (its grad array holds the residual now)
            learner.loss_and_grad(nd.model, nd.data, job.lam, v, job.model_kind,
                                  nd.cfg["step"] / nd.cfg["L"] if nd.feedback is not None else 0.0)
            ref = catavg.Agreement(nd.ws.k, 3, len(x0))
            nb.noise_prior(ref, np.array(v), m1, m2, data.X.shape[0], job.lam * x0, 3)
            assert ag.n == ref.n == nd.ws.k and list(ag.idx[:ag.n]) == list(ref.idx[:ref.n])
            np.testing.assert_allclose(ag.w[:ag.n], ref.w[:ref.n], rtol=1e-4, atol=1e-5)
        for k in range(3):
            send_round(nodes[k], links[k])                       # round 1: synced by the delta 0 -> 1
        x1 = np.array(nodes[0].model, dtype=np.float64)
        for nd, (idx, vals) in zip(nodes, sent):
            ag = nd.rule.agreement
            assert nd.deltas == 1 and ag.n == len(idx) > 0
            assert list(ag.idx[:ag.n]) == idx
            for j, u, w in zip(idx, vals, ag.w[:ag.n]):
                want = 1 / 3 if u == 0.0 else min(1.0, max(0.0, (x0[j] - x1[j]) / u))
                assert w == pytest.approx(want, abs=1e-4)
    finally:
        svc.stop()


def test_a_node_that_deep_sleeps_makes_the_noise_pass_where_an_awake_one_does(tmp_path):
    """Round 0 of a catavg job on two nodes: no delta read yet, so both weigh by their own
    sampling noise (edge/noiseprior.py), the one that deep-sleeps too: its state file keeps the
    update it sends, and after a wake it reads the next delta against it as an awake node does
    (tests/test_sleepy.py compares their frames round by round)."""
    layout = e2e.make_job(tmp_path / "job", nodes=2, rounds=3, rule="catavg")
    job = load_job(layout.job_path)
    svc, links = coap_gateway(job, 2)
    try:
        nodes = [node_for(layout, k) for k in range(2)]
        nodes[0].sleep = sleep.SleepState(str(tmp_path / "state.bin"))
        for k in range(2):
            send_round(nodes[k], links[k])
        assert nodes[0].sleep.saves == 1
        for nd in nodes:
            assert nd.rule.agreement.n == nd.ws.k
    finally:
        svc.stop()
