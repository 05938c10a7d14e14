"""Downlink messages written into a caller's buffer (CPython, against the real gateway).

Why: on a board the config and the deltas are staged in the node's idle gradient buffer
(edge.links.CoapLink.get_config_into / get_delta_into) instead of being reassembled in a
growing bytearray and copied; a message that does not fit must fall back cleanly (the config
through get_config, a delta through the snapshot) and leave the CoAP client usable.
"""

from __future__ import annotations

import numpy as np

from edge import startup
from firmware_tests.budget import round_setup


def test_coap_link_writes_messages_into_a_buffer(tmp_path):
    s = round_setup(tmp_path, 256)
    try:
        cfg = startup.load_config(str(s.root / "node.json"))
        cfg["data"] = str(s.root / "data.catd")
        node, link = startup.make(cfg)
        raw = link.get_config()
        assert raw is not None and len(raw) > 64   # more than one Block2 block
        assert bytes(link.get_config_into(bytearray(4096))) == raw
        assert bytes(link.get_config_into(bytearray(len(raw)))) == raw        # exactly fits
        assert link.get_config_into(bytearray(len(raw) - 1)) is False         # does not fit
        assert link.get_config() == raw          # the aborted Block2 transfer left no trace

        assert node.step(link) == "sent"         # round 0: snapshot, update
        assert s.gateway.wait_round(1) == 1
        delta = link.get_delta(0)
        assert delta is not None
        assert bytes(link.get_delta_into(0, bytearray(4096))) == delta
        assert link.get_delta_into(0, bytearray(len(delta) - 1)) is None       # snapshot instead
        assert link.get_delta_into(7, bytearray(4096)) is None                # not kept
    finally:
        s.close()


def test_node_stages_in_the_gradient_buffer_and_falls_back(tmp_path):
    s = round_setup(tmp_path, 256)
    try:
        cfg = startup.load_config(str(s.root / "node.json"))
        cfg["data"] = str(s.root / "data.catd")
        node, link = startup.make(cfg)
        assert len(node.stage) == 4 * len(node.grad)   # the gradient's bytes, no copy
        assert node.step(link) == "sent"
        assert (node.snapshots, node.deltas) == (1, 0)
        s.gateway.wait_round(1)
        stage = node.stage
        node.stage = memoryview(bytearray(16))  # holds neither the config nor the delta
        assert node.step(link) == "sent"
        assert (node.snapshots, node.deltas) == (2, 0)   # config by get_config, model by snapshot
        s.gateway.wait_round(2)
        node.stage = stage
        assert node.step(link) == "sent"
        assert (node.snapshots, node.deltas, node.version) == (2, 1, 2)
        assert s.gateway.wait_round(3) == 3
        assert node.sync(link, 3) and node.deltas == 2
        model = s.gateway.call(lambda: s.gateway.svc.agg.state.model.astype("<f4").tobytes())
        assert np.array(node.model, dtype=np.float32).tobytes() == model   # bit for bit
    finally:
        s.close()
