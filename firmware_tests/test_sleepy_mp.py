"""Sleepy boards on real MicroPython: edge/board.py with node.json's "sleep" does one round per
boot and keeps its state in a file (edge/sleep.py); on the unix port the program then ends, and
starting it again is the wake-up. Against the real gateway over CoAP on loopback.

The frames of the sleepy node are compared byte for byte with those of the same interpreter
running the same job without sleeping (its own gateway, scripts/round.py): model, residual and
sampler survive the sleeps exactly. The models are compared with the gateway's bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

from aggregator.ops.flash import node_config
from firmware_tests import harness
from firmware_tests.budget import (DRIVER_MODULES, GOAL_KIB, LAYOUT, NNZ, ROUND_SCRIPT, make_data, make_job,
                                   start_coap_gateway)

WAKE = Path(__file__).resolve().parent / "scripts" / "wake.py"
HDR = "<4sBBHIIBBBBIIiiII"
HDR_LEN = 44
K = 32
HEAP = {"mp32": "192k", "mp64": "384k"}      # edge/ as .mpy: the code is in the heap


def _lines(stdout: str, tag: str) -> list[dict]:
    return [json.loads(x.split(" ", 1)[1]) for x in stdout.splitlines() if x.startswith(tag + " ")]


class Sleepy:
    """A gateway and a device root for node 1 whose node.json asks for deep sleep; models[v] is
    the gateway's model of version v (recorded at every round close)."""

    def __init__(self, tmp: Path, d: int, scheme: str, ef: bool, frozen: bool = False, sleep: bool = True,
                 rule: str = "cat"):
        self.models: dict[int, bytes] = {}
        self.gw, self.job, port = start_coap_gateway(
            tmp, lambda st: make_job(st, d, k_cap=K, scheme=scheme, error_feedback=ef, rule=rule))
        agg = self.gw.svc.agg
        self.gw.call(lambda: self.models.__setitem__(0, agg.state.model.astype("<f4").tobytes()))
        self.gw.call(lambda: agg.listeners.append(
            lambda rc: self.models.__setitem__(rc.round + 1, agg.state.model.astype("<f4").tobytes())))
        data = make_data(tmp / f"data-{d}.catd", d, layout=LAYOUT, nnz=NNZ)
        cfg = node_config(self.job, 1, "data.catd", "coap", "127.0.0.1", port, ack_timeout=1.0)
        cfg["telemetry"] = False          # a frame is then a function of model, residual and data
        if sleep:
            cfg["sleep"] = {"mode": "deep", "state": "state.bin", "interval": 1, "wait": 30}
        pk = DRIVER_MODULES if frozen else (harness.EDGE_DIR, *DRIVER_MODULES)
        self.root = harness.make_device_root(tmp, mode="mpy", extra={"node.json": json.dumps(cfg), "data.catd": data},
                                             packages=pk)
        self.ef = ef

    def wake(self, interp: harness.Interpreter, heap: str, *args: str) -> tuple[harness.RunResult, dict]:
        r = harness.run(interp, self.root, WAKE, heap=heap, timeout=120, precompile=True, args=list(args))
        out = _lines(r.stdout, "cat-sleep")
        return r, (out[0] if out else {})

    def state(self) -> dict:
        raw = (self.root / "state.bin").read_bytes()
        h = struct.unpack(HDR, raw[:HDR_LEN])
        n, flags, version, frnd, flen = h[5], h[2], h[12], h[13], h[14]
        off = HDR_LEN + 4 * n * (2 if self.ef else 1)
        kept = 0
        if flags & 2:                   # the last update (catavg): count, 2-byte indices, float32 values
            kept = 4 + 6 * struct.unpack_from("<I", raw, off + flen)[0]
        return {"version": version, "round": frnd, "model": raw[HDR_LEN:HDR_LEN + 4 * n],
                "residual": raw[HDR_LEN + 4 * n:off], "frame": raw[off:off + flen], "size": len(raw),
                "kept": kept, "ok": hashlib.sha256(raw[:-32]).digest() == raw[-32:]}

    def node(self) -> dict:
        return self.gw.summary()["nodes"].get(1, {})

    def close(self) -> None:
        self.gw.stop()


def _reference_frames(interp, tmp: Path, d: int, scheme: str, ef: bool, rounds: int,
                      rule: str = "cat") -> dict[int, bytes]:
    """The frames of the same job on the same interpreter, one process, no sleep."""
    ref = Sleepy(tmp, d, scheme, ef, sleep=False, rule=rule)
    try:
        r = harness.run(interp, ref.root, ROUND_SCRIPT, heap=HEAP[interp.name], timeout=180, precompile=True,
                        args=[str(rounds), "frames"])
        assert r.ok, r.describe()[-3000:]
        out = {}
        for line in r.stdout.splitlines():
            if line.startswith("@@FRAME "):
                _, rnd, hx = line.split()
                out[int(rnd)] = bytes.fromhex(hx)
        return out
    finally:
        ref.close()


@pytest.mark.parametrize("scheme,ef,rule", [("sq", False, "cat"), ("sq", True, "cat"), ("ss", True, "cat"),
                                            ("sq", True, "catavg")])
def test_sleepy_rounds_equal_the_always_on_node(interp, tmp_path, scheme, ef, rule):
    """Four boots at d = 1,024, one round each (snapshot, then deltas): every frame equals the
    always-on node's, every saved model the gateway's of that version, and the gateway saw one
    frame per round, no duplicate, no refusal. Rule catavg keeps the node's last update too."""
    d, rounds = 1024, 4
    ref = _reference_frames(interp, tmp_path / "ref", d, scheme, ef, rounds, rule)
    s = Sleepy(tmp_path / "sleepy", d, scheme, ef, rule=rule)
    try:
        for r in range(rounds):
            run, out = s.wake(interp, HEAP[interp.name])
            assert run.ok and run.result["sent"] == 1, run.describe()[-3000:]
            assert out["state"]["state"] == ("fresh" if r == 0 else "resumed"), out
            assert (out["snapshots"], out["deltas"]) == ((1, 0) if r == 0 else (0, 1)), out
            st = s.state()
            assert st["ok"] and (st["version"], st["round"]) == (r, r)
            assert st["frame"] == ref[r], f"round {r}: the sleepy node's frame differs"
            assert st["model"] == s.models[r]          # float32(x + delta) on both sides
            assert s.gw.wait_round(r + 1) == r + 1
        assert st["size"] == HDR_LEN + 4 * d * (2 if ef else 1) + len(st["frame"]) + st["kept"] + 32
        assert (st["kept"] > 4) == (rule == "catavg")
        node = s.node()
        assert node["frames"] == rounds and node["duplicates"] == 0
        assert s.gw.summary()["rejected"] == {}
    finally:
        s.close()


def test_flipped_byte_and_cut_before_rename(mp32, tmp_path):
    """On the 32-bit build: a state file with one flipped byte is refused by its checksum (the
    node says so and takes the snapshot, residual from zero); a power cut between the .tmp and
    the rename leaves the old state, from which the next boot catches up by delta."""
    s = Sleepy(tmp_path, 1024, "sq", True)
    try:
        for r in range(2):
            run, out = s.wake(mp32, HEAP["mp32"])
            assert run.ok and run.result["sent"] == 1, run.describe()[-3000:]
            assert s.gw.wait_round(r + 1) == r + 1
        path = s.root / "state.bin"
        raw = bytearray(path.read_bytes())
        raw[HDR_LEN + 4 * 700 + 2] ^= 0x01
        path.write_bytes(bytes(raw))
        run, out = s.wake(mp32, HEAP["mp32"])
        assert run.ok, run.describe()[-3000:]
        assert out["state"] == {"state": "corrupt", "why": "checksum", "resume_after": 1}, out
        assert (out["snapshots"], out["deltas"], out["version"], out["sent"]) == (1, 0, 2, 1), out
        assert s.state()["model"] == s.models[2]
        assert s.gw.wait_round(3) == 3
        old = path.read_bytes()
        run, out = s.wake(mp32, HEAP["mp32"], "cut")
        assert run.returncode == 9 and not out, run.describe()[-3000:]
        assert path.read_bytes() == old and (s.root / "state.bin.tmp").is_file()
        assert s.gw.round == 3 and s.node()["frames"] == 3       # the cut round's frame never left
        run, out = s.wake(mp32, HEAP["mp32"])
        assert run.ok and out["state"]["state"] == "resumed" and out["state"]["version"] == 2, out
        assert (out["snapshots"], out["deltas"], out["version"], out["sent"]) == (0, 1, 3, 1), out
        assert s.state()["model"] == s.models[3]
        assert s.gw.wait_round(4) == 4
        node = s.node()
        assert node["frames"] == 4 and node["duplicates"] == 0 and s.gw.summary()["rejected"] == {}
    finally:
        s.close()


def test_sleepy_round_meets_the_ram_goal(mp32_frozen, tmp_path):
    """edge/ frozen, error feedback on: a boot that resumes from the state file, catches up by
    delta, computes, saves and sends fits the RAM goals (the state is written and read through
    views of the arrays, never a second d-sized buffer)."""
    for d in (1024, 4096):
        s = Sleepy(tmp_path / f"d{d}", d, "sq", True, frozen=True)
        try:
            for r in range(3):
                run, out = s.wake(mp32_frozen, f"{GOAL_KIB[d]}k")
                assert run.ok and run.result["sent"] == 1, run.describe()[-3000:]
                assert s.gw.wait_round(r + 1) == r + 1
            assert out["state"]["state"] == "resumed" and out["deltas"] == 1
            assert s.state()["model"] == s.models[2]
        finally:
            s.close()
