"""Sleepy boards: a node that deep-sleeps between rounds keeps its state in a file
(edge/sleep.py) and takes it back at boot. Here the node is edge/board.py in a CPython process
that does one round and exits (the unix port and CPython cannot deep-sleep: exiting and
starting again is the sleep), against the real gateway on loopback CoAP. The MicroPython side
is firmware_tests/test_sleepy_mp.py."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from aggregator.gateway.config import load_job
from aggregator.gateway.service import Endpoints
from aggregator.ops.demo import ServiceThread, free_udp_port
from aggregator.ops.flash import node_config
from edge import frame, startup
from edge.coap import CoapClient
from edge.links import CoapLink

import e2e

pytestmark = pytest.mark.e2e   # real gateway, real edge processes

REPO = Path(__file__).resolve().parent.parent
HDR = "<4sBBHIIBBBBIIiiII"     # edge/sleep.py's header (docs/firmware.md, "Sleepy boards")
HDR_LEN = 44
WAKE = "from edge import board; board.main()"


def gateway(job, on_close=None) -> tuple[ServiceThread, int]:
    port = free_udp_port()
    svc = ServiceThread(job, Endpoints(coap=("127.0.0.1", port)), on_close=on_close)
    svc.start()
    return svc, port


def ref_job(layout):
    """The same job (keys, data, settings) with a state directory of its own: a second gateway."""
    text = layout.job_path.read_text()
    assert 'dir = "state"' in text
    path = layout.root / "job-ref.toml"
    path.write_text(text.replace('dir = "state"', 'dir = "state-ref"'))
    return load_job(path)


def board_dir(root: Path, layout, job, node: int, port: int, **sleep) -> Path:
    """A board's filesystem: node.json as `flash --deep-sleep` writes it (telemetry off, so a
    frame is a function of model, residual and data alone) and the data file."""
    d = root / f"board-{node}"
    d.mkdir(parents=True, exist_ok=True)
    cfg = node_config(job, node, str(layout.data_files[node]), "coap", "127.0.0.1", port, ack_timeout=0.5)
    cfg["telemetry"] = False
    cfg["sleep"] = {"mode": "deep", "state": "state.bin", "interval": 1, "wait": 20, **sleep}
    (d / "node.json").write_text(json.dumps(cfg))
    return d


def boot(d: Path, code: str = WAKE, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Boot the board once: a CPython process in the board's root running `code`."""
    return subprocess.run([sys.executable, "-c", code], cwd=d, capture_output=True, text=True, timeout=timeout,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def wake(d: Path, timeout: float = 60.0, code: str = WAKE) -> dict:
    """Boot the board once (main.py's two lines); its cat-sleep line."""
    r = boot(d, code, timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [json.loads(x.split(" ", 1)[1]) for x in r.stdout.splitlines() if x.startswith("cat-sleep ")]
    assert len(lines) == 1, r.stdout
    return lines[0]


def read_state(path: Path) -> dict:
    """The state file's parts; `update` is the kept update (indices, values) or None, and
    `frame_at` / `update_at` where those start."""
    raw = path.read_bytes()
    h = struct.unpack(HDR, raw[:HDR_LEN])
    n, flags, version, frnd, flen = h[5], h[2], h[12], h[13], h[14]
    off = HDR_LEN + 4 * n
    model = raw[HDR_LEN:off]
    resid = raw[off:off + 4 * n] if flags & 1 else b""     # error feedback's residual
    off += len(resid)
    update = None
    if flags & 2:                          # d <= 65536 here: 2-byte indices
        (t,) = struct.unpack_from("<I", raw, off + flen)
        at = off + flen + 4
        update = (raw[at:at + 2 * t], raw[at + 2 * t:at + 6 * t])
    return {"version": version, "round": frnd, "model": model, "residual": resid,
            "frame": raw[off:off + flen], "size": len(raw), "update": update,
            "frame_at": off, "update_at": off + flen}


def kept_bytes(st: dict) -> int:
    """Bytes of the kept update in a state file: its count, 2-byte indices, float32 values."""
    return 4 + sum(len(b) for b in st["update"]) if st["update"] else 0


def reference(d: Path, job, port: int) -> tuple:
    """The always-on twin of the board in d (same node.json) on the gateway at port: node,
    link, and the frames it records by round."""
    ref = startup.make_node(startup.load_config(str(d / "node.json")))
    link = CoapLink(CoapClient("127.0.0.1", port, ack_timeout=0.5), job.job_id)
    frames: dict[int, bytes] = {}
    ref.record = lambda r, mv: frames.__setitem__(r, bytes(mv))
    return ref, link, frames


def send_round(node, link, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while node.step(link) != "sent":
        assert time.monotonic() < end, f"node {node.node} sent nothing within {timeout:.0f} s"
        time.sleep(0.01)


def model_bytes(svc) -> bytes:
    return svc.service.agg.state.model.astype("<f4").tobytes()


@pytest.mark.parametrize("scheme,ef", [("sq", False), ("sq", True), ("ss", True), ("s", True)])
def test_sleepy_node_trains_exactly_like_one_that_never_sleeps(tmp_path, scheme, ef):
    """Five boots, one round each: every frame is byte for byte the one an always-on node (same
    job, its own gateway) sends, so model, residual and sampler survive the sleeps exactly; the
    two gateways end with bit-identical models; nothing is a duplicate or refused."""
    layout = e2e.make_job(tmp_path / "job", nodes=1, rounds=20, quorum=1.0, scheme=scheme,
                          error_feedback=ef, k_cap=6)
    job = load_job(layout.job_path)
    (k,) = job.node_keys
    svc, port = gateway(job)
    ref_svc, ref_port = gateway(ref_job(layout))
    try:
        d = board_dir(tmp_path, layout, job, k, port)
        ref, ref_link, frames = reference(d, job, ref_port)
        agg = svc.service.agg
        for r in range(5):
            out = wake(d)
            assert out["status"] == "sent" and out["sent"] == 1, out
            assert out["state"]["state"] == ("fresh" if r == 0 else "resumed"), out
            assert (out["snapshots"], out["deltas"]) == ((1, 0) if r == 0 else (0, 1)), out
            st = read_state(d / "state.bin")
            assert (st["version"], st["round"]) == (r, r)
            send_round(ref, ref_link)
            assert st["frame"] == frames[r], f"round {r}: the sleepy node's frame differs"
            assert st["model"] == bytes(ref.model)
            if ef:
                assert st["residual"] == bytes(ref.grad)
            t = ref.last["T"]                  # catavg (S, S+Q) keeps the update it sent
            assert st["update"] == (bytes(ref.ws.idx[:t]), bytes(ref.ws.vals[:t])) if scheme != "ss" \
                else st["update"] is None
            e2e.wait_for(lambda: agg.state.round == r + 1, 10, f"round {r} closed")
        assert model_bytes(svc) == model_bytes(ref_svc)
        ns = agg.state.nodes[k]
        assert ns.frames == 5 and ns.duplicates == 0 and not agg.state.rejected
        if ef:
            assert np.abs(np.frombuffer(st["residual"], "<f4")).max() > 0   # unsent mass is kept
        assert st["size"] == HDR_LEN + 4 * job.d * (2 if ef else 1) + len(st["frame"]) + kept_bytes(st) + 32
    finally:
        svc.stop()
        ref_svc.stop()


@pytest.mark.parametrize("scheme", ["sq", "s"])
def test_a_sleepy_catavg_node_reads_each_delta_against_the_update_it_kept(tmp_path, scheme):
    """Rule catavg on several nodes weighs each entry by what the gateway's average kept of the
    node's last update, read from the delta that follows it; before any such delta (round 0) by
    its own sampling noise. A node that deep-sleeps keeps that update in its state file: five
    boots send byte for byte the frames of its always-on twin (a second gateway; the other nodes
    always on at both), and sync as it does, reading the delta after its update."""
    # Three nodes, K = d = 30 (no cap on T), error feedback on (a delta too large for the frame
    # buffer comes as a message of its own: every round after the first syncs by delta). Here
    # the weights move T: a node that forgets its update sends other frames from round 1 or 2 on.
    layout = e2e.make_job(tmp_path / "job", nodes=3, rounds=20, quorum=1.0, scheme=scheme, k_cap=30,
                          error_feedback=True)
    job = load_job(layout.job_path)
    a, *others = job.node_keys
    svc, port = gateway(job)
    ref_svc, ref_port = gateway(ref_job(layout))
    try:
        d = board_dir(tmp_path, layout, job, a, port)
        ref, ref_link, frames = reference(d, job, ref_port)
        peers = [[(startup.make_node(startup.load_config(str(board_dir(tmp_path, layout, job, b, port) / "node.json"))),
                   CoapLink(CoapClient("127.0.0.1", p, ack_timeout=0.5), job.job_id)) for b in others]
                 for p in (port, ref_port)]
        deltas = 0
        for r in range(5):
            for nl in peers[0]:
                send_round(*nl)                # the round then waits for the sleepy node
            out = wake(d)
            assert out["sent"] == 1 and out["state"]["state"] == ("fresh" if r == 0 else "resumed"), out
            for nl in peers[1]:
                send_round(*nl)
            synced = (ref.snapshots, ref.deltas)
            send_round(ref, ref_link)
            by = (ref.snapshots - synced[0], ref.deltas - synced[1])
            assert (out["snapshots"], out["deltas"]) == by, (r, out, by)
            if by == (0, 1):                   # the twin weighed round r by the delta after its update
                assert ref.rule.agreement.n == t, (r, ref.rule.agreement.n, t)
                deltas += 1
            t = ref.last["T"]
            st = read_state(d / "state.bin")
            assert st["frame"] == frames[r], f"round {r}: the sleepy node's frame differs"
            assert st["update"] == (bytes(ref.ws.idx[:t]), bytes(ref.ws.vals[:t]))
            for g in (svc, ref_svc):
                e2e.wait_for(lambda g=g: g.service.agg.state.round == r + 1, 10, f"round {r} closed")
        assert deltas == 4
        assert model_bytes(svc) == model_bytes(ref_svc)
        assert not svc.service.agg.state.rejected and svc.service.agg.state.nodes[a].duplicates == 0
    finally:
        svc.stop()
        ref_svc.stop()


def test_missed_rounds_resync_by_snapshot_and_few_by_delta(tmp_path):
    """The sleepy node sleeps through five rounds that another node closes; with two deltas
    kept its base is gone: it loads the snapshot (and restarts its residual). After one missed
    round it catches up by two deltas (its own round's and the missed one's). Its model equals
    the gateway's at every version it reaches."""
    layout = e2e.make_job(tmp_path / "job", nodes=2, rounds=30, quorum=0.5, scheme="sq",
                          error_feedback=True, k_cap=6)
    job = load_job(layout.job_path)
    job.history = 2
    a, b = sorted(job.node_keys)
    models: dict[int, bytes] = {}
    svc, port = gateway(job)
    svc.service.agg.listeners.append(lambda rc: models.__setitem__(rc.round + 1, model_bytes(svc)))
    try:
        d = board_dir(tmp_path, layout, job, a, port)
        other = startup.make_node(startup.load_config(str(board_dir(tmp_path, layout, job, b, port) / "node.json")))
        link = CoapLink(CoapClient("127.0.0.1", port, ack_timeout=0.5), job.job_id)
        agg = svc.service.agg
        models[0] = model_bytes(svc)
        out = wake(d)
        assert out["state"]["state"] == "fresh" and out["sent"] == 1
        for r in range(1, 6):                         # node a sleeps through rounds 1..5
            send_round(other, link)
            e2e.wait_for(lambda: agg.state.round == r + 1, 10, f"round {r} closed")
        out = wake(d)
        assert out["state"]["state"] == "resumed" and out["state"]["version"] == 0
        assert (out["snapshots"], out["deltas"], out["version"]) == (1, 0, 6), out
        st = read_state(d / "state.bin")
        assert st["round"] == 6 and st["model"] == models[6]
        e2e.wait_for(lambda: agg.state.round == 7, 10, "round 6 closed")
        send_round(other, link)                       # node a sleeps through round 7
        e2e.wait_for(lambda: agg.state.round == 8, 10, "round 7 closed")
        out = wake(d)
        assert (out["snapshots"], out["deltas"], out["version"]) == (0, 2, 8), out
        st = read_state(d / "state.bin")
        assert st["round"] == 8 and st["model"] == models[8]
        ns = agg.state.nodes[a]
        assert ns.frames == 3 and ns.duplicates == 0 and not agg.state.rejected
    finally:
        svc.stop()


@pytest.mark.parametrize("where", ["model", "residual", "frame", "header", "update", "count"])
def test_a_flipped_byte_in_the_state_file_means_a_snapshot_and_a_fresh_residual(tmp_path, where):
    """One flipped byte anywhere in a well-formed state file: the checksum catches it, the node
    says so on its console, takes the snapshot, starts the residual from zero and still sends
    this round (its round marker says the last frame it signed was for the round before)."""
    layout = e2e.make_job(tmp_path / "job", nodes=1, rounds=20, quorum=1.0, scheme="sq",
                          error_feedback=True, k_cap=6)
    job = load_job(layout.job_path)
    (k,) = job.node_keys
    models: dict[int, bytes] = {}
    svc, port = gateway(job)
    svc.service.agg.listeners.append(lambda rc: models.__setitem__(rc.round + 1, model_bytes(svc)))
    try:
        d = board_dir(tmp_path, layout, job, k, port)
        agg = svc.service.agg
        for r in range(2):
            assert wake(d)["sent"] == 1
            e2e.wait_for(lambda: agg.state.round == r + 1, 10, f"round {r} closed")
        path = d / "state.bin"
        st = read_state(path)
        raw = bytearray(path.read_bytes())
        n = job.d
        at = {"header": 30, "model": HDR_LEN + 4 * (n // 2) + 1, "residual": HDR_LEN + 4 * n + 7,
              "frame": st["frame_at"] + 20,
              "update": st["update_at"] + 4 + len(st["update"][0]) + 1,   # its first value
              "count": st["update_at"]}[where]    # T, then not the count the file's size implies
        raw[at] ^= 0x10
        path.write_bytes(bytes(raw))
        out = wake(d)
        assert out["state"]["state"] == "corrupt" and out["state"]["why"] == "checksum", out
        assert out["state"]["resume_after"] == 1          # the marker: round 1 was signed and acked
        assert (out["snapshots"], out["deltas"], out["version"], out["sent"]) == (1, 0, 2, 1), out
        st = read_state(path)
        e2e.wait_for(lambda: agg.state.round == 3, 10, "round 2 closed")
        # The residual restarted from zero: frame and residual are those of a node that never
        # had one, computing round 2 at the model of version 2.
        fresh = startup.make_node(startup.load_config(str(d / "node.json")))
        link = CoapLink(CoapClient("127.0.0.1", port, ack_timeout=0.5), job.job_id)
        fresh._setup(frame.decode_config(link.get_config(), fresh.downlink_key))
        memoryview(fresh.model).cast("B")[:] = models[2]
        fresh.version = 2
        n = fresh.compute(2)
        assert st["frame"] == bytes(fresh.buf[:n]) and st["residual"] == bytes(fresh.grad)
        out = wake(d)                                      # and the file is good again
        assert out["state"]["state"] == "resumed" and (out["snapshots"], out["deltas"]) == (0, 1)
        ns = agg.state.nodes[k]
        assert ns.frames == 4 and ns.duplicates == 0 and not agg.state.rejected
        assert st["round"] == 2
    finally:
        svc.stop()


def test_truncated_or_foreign_state_files(tmp_path):
    """A state file cut short is corrupt; one written for another setting (here another K) is
    not used either, and says so."""
    layout = e2e.make_job(tmp_path / "job", nodes=1, rounds=20, quorum=1.0, scheme="sq",
                          error_feedback=False, k_cap=6)
    job = load_job(layout.job_path)
    (k,) = job.node_keys
    svc, port = gateway(job)
    try:
        d = board_dir(tmp_path, layout, job, k, port)
        agg = svc.service.agg
        assert wake(d)["sent"] == 1
        e2e.wait_for(lambda: agg.state.round == 1, 10, "round 0 closed")
        path = d / "state.bin"
        raw = path.read_bytes()
        path.write_bytes(raw[:-100])
        out = wake(d)
        assert out["state"]["state"] == "corrupt" and out["state"]["why"] == "size", out
        assert (out["snapshots"], out["sent"]) == (1, 1)
        e2e.wait_for(lambda: agg.state.round == 2, 10, "round 1 closed")
        raw = bytearray(path.read_bytes())
        raw[20:24] = struct.pack("<I", 7)              # k_cap of another setting, checksum redone
        import hashlib
        raw[-32:] = hashlib.sha256(bytes(raw[:-32])).digest()
        path.write_bytes(bytes(raw))
        out = wake(d)
        assert out["state"]["state"] == "other" and out["snapshots"] == 1 and out["sent"] == 1, out
        assert not agg.state.rejected and agg.state.nodes[k].duplicates == 0
    finally:
        svc.stop()


KILL_BEFORE_RENAME = """
import os, signal
from edge import board, sleep
def _commit(self, tmp):
    os.kill(os.getpid(), signal.SIGKILL)      # power cut: the new state is in .tmp, not renamed
sleep.SleepState._commit = _commit
board.main()
"""


def test_a_cut_between_writing_and_renaming_keeps_the_old_state(tmp_path):
    """Killed after writing state.bin.tmp, before the rename: the next boot resumes from the
    old state.bin (version 0), catches up by delta and sends round 1 (whose first frame never
    left the node): the gateway sees exactly one frame per round, and the frames are the
    always-on node's."""
    layout = e2e.make_job(tmp_path / "job", nodes=1, rounds=20, quorum=1.0, scheme="sq",
                          error_feedback=True, k_cap=6)
    job = load_job(layout.job_path)
    (k,) = job.node_keys
    svc, port = gateway(job)
    ref_svc, ref_port = gateway(ref_job(layout))
    try:
        d = board_dir(tmp_path, layout, job, k, port)
        ref, ref_link, frames = reference(d, job, ref_port)
        agg = svc.service.agg
        assert wake(d)["sent"] == 1
        send_round(ref, ref_link)
        e2e.wait_for(lambda: agg.state.round == 1, 10, "round 0 closed")
        old = (d / "state.bin").read_bytes()
        r = boot(d, KILL_BEFORE_RENAME)
        assert r.returncode == -9, r.stdout + r.stderr
        assert (d / "state.bin").read_bytes() == old and (d / "state.bin.tmp").is_file()
        assert read_state(d / "state.bin.tmp")["round"] == 1
        assert agg.state.round == 1 and agg.state.nodes[k].frames == 1     # nothing was sent
        out = wake(d)
        assert out["state"]["state"] == "resumed" and out["state"]["version"] == 0, out
        assert (out["deltas"], out["snapshots"], out["sent"]) == (1, 0, 1)
        send_round(ref, ref_link)
        assert read_state(d / "state.bin")["frame"] == frames[1]
        e2e.wait_for(lambda: agg.state.round == 2, 10, "round 1 closed")
        assert model_bytes(svc) == model_bytes(ref_svc)
        assert agg.state.nodes[k].duplicates == 0 and not agg.state.rejected
    finally:
        svc.stop()
        ref_svc.stop()


def test_an_unacknowledged_frame_is_resent_as_is_and_an_acknowledged_one_never(tmp_path):
    """The node signed and saved round 0's frame but was cut before the gateway's answer came
    (here: before it sent anything): the next boot sends the saved bytes, not a new frame.
    A boot before the next round opens sends nothing and sleeps again."""
    layout = e2e.make_job(tmp_path / "job", nodes=2, rounds=20, quorum=1.0, scheme="sq",
                          error_feedback=True, k_cap=6)
    job = load_job(layout.job_path)
    a, b = sorted(job.node_keys)
    svc, port = gateway(job)
    try:
        d = board_dir(tmp_path, layout, job, a, port, wait=1.0)
        cut = ("import os, signal\nfrom edge import board\nfrom edge.links import CoapLink\n"
               "CoapLink.send_update = lambda self, f: os.kill(os.getpid(), signal.SIGKILL)\nboard.main()\n")
        r = boot(d, cut)
        assert r.returncode == -9, r.stdout + r.stderr
        saved = read_state(d / "state.bin")
        assert saved["round"] == 0 and (d / "state.bin.sent").read_bytes()[:4] == b"SENT"
        agg = svc.service.agg
        out = wake(d)
        assert out["state"] == {"state": "resumed", "version": 0, "frame_round": 0, "acked": False}, out
        assert out["sent"] == 1 and out["snapshots"] == 0 and out["deltas"] == 0
        assert read_state(d / "state.bin") == saved              # not computed again
        assert (d / "state.bin.sent").read_bytes()[:4] == b"ACKD"
        out = wake(d)                                  # round 0 still open: nothing to send
        assert out["state"]["acked"] and out["sent"] == 0 and out["status"] == "idle", out
        assert agg.state.nodes[a].frames == 1 and agg.state.nodes[a].duplicates == 0
        assert agg.state.round == 0 and not agg.state.rejected
        del b
    finally:
        svc.stop()


def test_node_json_sleep_setting_is_checked(tmp_path):
    from edge.profile import load_profile
    base = {"node": 1, "job": 1, "key": "00" * 32, "downlink_key": "11" * 32,
            "profile": load_profile("ieee802154-6lowpan-coap"), "data": "x"}  # a CoAP node's
    for bad, msg in [({"mode": "light"}, 'sleep.mode must be "deep"'),
                     ({"mode": "deep", "interval": 0}, "sleep.interval must be seconds > 0"),
                     ({"mode": "deep", "wait": "x"}, "sleep.wait must be seconds > 0"),
                     ({"mode": "deep", "state": "node.json"}, "sleep.state must name a file of its own"),
                     ({"mode": "deep", "every": 3}, "sleep: unknown key 'every'"),
                     ("deep", '"sleep" must be an object')]:
        p = tmp_path / "node.json"
        p.write_text(json.dumps({**base, "sleep": bad}))
        with pytest.raises(startup.BoardError, match=msg.replace("(", r"\(")):
            startup.load_config(str(p))
    p.write_text(json.dumps({**base, "sleep": {"mode": "deep"}, "timeout": 12}))
    assert startup.load_config(str(p))["sleep"] == {"mode": "deep", "state": "state.bin", "interval": 60.0,
                                                  "wait": 12.0}


def test_flash_writes_the_sleep_setting_and_names_a_bad_one(tmp_path, capsys):
    from aggregator import cli

    layout = e2e.make_job(tmp_path / "job", nodes=1, rounds=5)
    (k,) = layout.job.node_keys
    data = str(layout.data_files[k])
    base = ["flash", str(layout.job_path), "--node", str(k), "--data", data, "--gateway", "127.0.0.1"]
    out = tmp_path / "stage"
    assert cli.main(base + ["--stage", str(out), "--deep-sleep", "300", "--timeout", "20"]) == 0, capsys.readouterr()
    cfg = json.loads((out / "node.json").read_text())
    assert cfg["sleep"] == {"mode": "deep", "state": "state.bin", "interval": 300.0, "wait": 20.0}
    assert (out / "edge" / "sleep.mpy").is_file()
    assert startup.load_config(str(out / "node.json"))["sleep"] == cfg["sleep"]
    assert cli.main(base + ["--stage", str(tmp_path / "s2"), "--deep-sleep", "60", "--sleep-state", "nv.bin"]) == 0
    assert json.loads((tmp_path / "s2" / "node.json").read_text())["sleep"]["state"] == "nv.bin"
    capsys.readouterr()
    for args, msg in [(["--deep-sleep", "0"], "--deep-sleep: expected the seconds to sleep between rounds (> 0), got 0.0"),
                      (["--deep-sleep", "nan"], "--deep-sleep: expected the seconds"),
                      (["--deep-sleep", "-5"], "got -5.0"),
                      (["--deep-sleep", "60", "--sleep-state", "node.json"], "--sleep-state: 'node.json' must be"),
                      (["--deep-sleep", "60", "--sleep-state", "lib/x"], "--sleep-state: 'lib/x' must be"),
                      (["--deep-sleep", "60", "--timeout", "-1"], "--deep-sleep: sleep.wait must be seconds > 0")]:
        assert cli.main(base + ["--stage", str(tmp_path / "bad")] + args) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (args, err)
