"""edge/ on real MicroPython: selection kernel, compressors, CAT rules, frame encoder, learner.

The device runs firmware_tests/scripts/kernels.py on inputs written as '<f' hex (bit-identical
on both sides); CPython runs the very same script on the same inputs as the reference.

* mp64 (doubles, like CPython): every result must be identical, frames byte for byte.
* mp32 (single precision): the selection order is exact (comparisons of float32 values);
  S1/S2 and improvement values are float32 sums, compared to 1e-5 relative; T must match
  wherever CAT's best ratio beats every other T by more than float32 noise (FLOAT32_MARGIN),
  and otherwise the device's T must be within that noise of the best; frames are compared
  decoded (indices exact, values to float32 tolerance). Frames built from float32-exact
  inputs (the encode cases) must be byte-identical on both interpreters.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from array import array
from pathlib import Path

import numpy as np
import pytest

from aggregator.gateway import wire
from edge import cat, profile as profiles
from edge.cat import SCHEME_S, SCHEME_SQ, SCHEME_SS
from firmware_tests import harness

REPO = harness.REPO
KERNELS = REPO / "firmware_tests" / "scripts" / "kernels.py"
KEY = bytes(range(1, 33))
# float32 unit roundoff; recursive summation of n nonnegative terms is off by at most
# (n - 1) u relative (Higham, Accuracy and Stability of Numerical Algorithms, eq. 4.4).
U32 = 2.0 ** -24
F32_RTOL = 64 * U32  # a handful of float32 operations
FLOAT32_MARGIN = 1e-4


def sum_rtol(n: int) -> float:
    """Relative error bound of a float32 sum of n nonnegative terms (each term rounded too)."""
    return (n + 2) * U32
LINK_PROFILES = ("ieee802154-6lowpan-coap", "lorawan-eu868-sf7", "ble5-1m-dle", "wifi-tcp-mqtt-esp32")
PAPER_PROFILES = ("paper-packet-576-64-512", "paper-payload-fpp32", "paper-affine-udp-ethernet")


def _hex(a: np.ndarray) -> str:
    return a.astype("<f4").tobytes().hex()


class _Files:
    """Gradients go to raw '<f' files (names in the case), not into the JSON."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put(self, a: np.ndarray) -> str:
        name = f"g{len(self.blobs)}.f32"
        self.blobs[name] = a.astype("<f4").tobytes()
        return name


def _grad(kind: str, d: int, rng: np.random.Generator) -> np.ndarray:
    """Gradients that break selection code: heavy tails, flat, ties, sparse, normal."""
    if kind == "heavy":
        g = rng.standard_t(1.5, d)
    elif kind == "flat":
        g = np.ones(d) * rng.choice([-1.0, 1.0], d)
    elif kind == "ties":
        g = np.round(rng.normal(size=d) * 2.0)
    elif kind == "sparse":
        g = np.zeros(d)
        g[rng.integers(0, d, max(1, d // 50))] = rng.normal(size=max(1, d // 50))
    else:
        g = rng.normal(size=d)
    return (g * 0.01).astype(np.float32)


def build_cases() -> dict:
    """Deterministic cases covering every scheme, rule, value format and both profile families."""
    rng = np.random.default_rng(20240605)
    files = _Files()
    board = {n: {k: v for k, v in profiles.load_profile(n).items() if k not in ("sources", "description")}
             for n in LINK_PROFILES + PAPER_PROFILES}
    cases: list[dict] = []
    for i, (kind, d, k) in enumerate([("heavy", 1000, 100), ("ties", 300, 300), ("flat", 64, 10),
                                      ("sparse", 65600, 20), ("normal", 1, 1), ("normal", 257, 64)]):
        cases.append({"id": f"select-{i}", "kind": "select", "g": files.put(_grad(kind, d, rng)), "k": k})
    rules = [("cat", 0), ("fixed", 7), ("hybrid", 2), ("alistarh", 0), ("catavg", 4)]
    n = 0
    for scheme in (SCHEME_S, SCHEME_SQ, SCHEME_SS):
        for ri, (rule, param) in enumerate(rules):
            if rule == "alistarh" and scheme != SCHEME_SQ:
                continue
            if rule == "catavg" and scheme == SCHEME_SS:
                continue            # SS under catavg is cat's omega
            for pi, prof in enumerate(LINK_PROFILES + PAPER_PROFILES):
                if (pi + ri + scheme) % 3:  # a third of the grid keeps the run short
                    continue
                metric = board[prof]["default_metric"]
                if board[prof]["kind"] == "link":
                    metric = ("bytes", "packets", "seconds", "joules")[(pi + scheme) % 4]
                kind = ("heavy", "normal", "ties", "sparse", "flat")[n % 5]
                d = (200, 1024, 333, 4096)[n % 4]
                rounds = 3 if rule in ("hybrid", "catavg") or n % 4 == 0 else 1
                cases.append({
                    "id": f"compress-{n}", "kind": "compress", "d": d, "k": 128 if d > 300 else 40,
                    "scheme": scheme, "rule": rule, "param": param, "profile": prof, "metric": metric,
                    "fmt": n % 2, "ef": n % 3 == 0, "seed": 1000 + n, "scale": 0.25, "rounds": rounds,
                    "job": (3, 300)[n % 2], "node": (7, 65535)[n % 2], "rnd": (0, 22, 255, 70000)[n % 4],
                    "key": KEY.hex(), "grads": [files.put(_grad(kind, d, rng)) for _ in range(rounds)]})
                n += 1
    # Encoder on float32-exact inputs: identical bytes on every interpreter.
    for i, (scheme, d, T, fmt, tel) in enumerate([(0, 12, 12, 0, True), (1, 784, 10, 0, False),
                                                  (1, 784, 100, 1, True), (2, 20, 8, 0, True),
                                                  (2, 47236, 100, 1, False), (3, 5_000_000, 17, 0, True),
                                                  (1, 16, 4, 1, False)]):
        idx = np.arange(d) if scheme == 0 else np.sort(rng.choice(d, T, replace=False))
        vals = rng.normal(size=T).astype(np.float32)
        if fmt:
            vals = vals.astype(np.float16).astype(np.float32)
        if scheme == 2:
            m = np.float32(abs(vals[0]))
            vals = np.where(rng.random(T) < 0.5, -m, m).astype(np.float32)
        cases.append({"id": f"encode-{i}", "kind": "encode", "scheme": scheme, "d": d, "T": T, "fmt": fmt,
                      "idx": [int(j) for j in idx], "vals": _hex(vals),
                      "tel": _hex(np.array([0.5, 0.25, 1.5, 2.0 ** -10])) if tel else None,
                      "job": (1, 70000)[i % 2], "node": (7, 300)[i % 2], "rnd": (1000, 3)[i % 2],
                      "key": KEY.hex(), "size": 70000})
    return {"profiles": board, "cases": cases, "files": files.blobs}


def _device_files(spec: dict) -> dict:
    """The device root's inputs: cases.jsonl, profiles.json and the gradient files."""
    out: dict = {"cases.jsonl": "".join(json.dumps(c) + "\n" for c in spec["cases"]),
                 "profiles.json": json.dumps(spec["profiles"])}
    out.update(spec["files"])
    return out


@pytest.fixture(scope="module")
def spec() -> dict:
    return build_cases()


@pytest.fixture(scope="module")
def reference(spec, tmp_path_factory) -> dict:
    """The same script under CPython, on the same edge sources and inputs."""
    root = harness.make_device_root(tmp_path_factory.mktemp("ref"), extra=_device_files(spec))
    shutil.copy(KERNELS, root / "kernels.py")
    proc = subprocess.run([sys.executable, "kernels.py"], cwd=root, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    results = [json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines()
               if line.startswith(harness.RESULT_PREFIX)]
    return {r["id"]: r["r"] for r in results if "id" in r}


def _run_device(interp: harness.Interpreter, root: Path) -> dict:
    # correctness, not RAM: room for the d = 65,600 case (index array 'I')
    r = harness.run(interp, root, KERNELS, heap="1m", timeout=240)
    assert r.ok, r.describe()[-4000:]
    assert r.result.get("done") == sum(1 for x in r.results if "id" in x)
    return {x["id"]: x["r"] for x in r.results if "id" in x}


def _close(a: float, b: float, rtol: float) -> bool:
    return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-30)


def _f32(h: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(h), dtype="<f4")


def _ratios(case: dict, grad: str, spec: dict, order: list[int], t_max: int) -> list[float]:
    """Improvement(T)/C(T) for T = 1..min(len(order), t_max), in double precision on CPython."""
    from edge.cost import CostModel
    g = array("f", spec["files"][grad])
    idx = array("I", order)
    s1 = sum(abs(v) for v in g)
    s2 = sum(v * v for v in g)
    cm = CostModel(spec["profiles"][case["profile"]], case["d"], case["scheme"], case["metric"],
                   case["fmt"], True, case["job"], case["node"], case["rnd"])
    top = min(len(order), t_max)
    return [cat.improvement_at(case["scheme"], g, idx, t, s1, s2)[0] / cm(t) for t in range(1, top + 1)]


def _check_select(ref: dict, got: dict, exact: bool) -> None:
    assert got["order"] == ref["order"] and got["asc"] == ref["asc"] and got["n"] == ref["n"]
    assert got["typecode"] == ref["typecode"]
    rtol = 1e-15 if exact else sum_rtol(ref["d"])
    assert _close(got["s1"], ref["s1"], rtol) and _close(got["s2"], ref["s2"], rtol)


def _decode(frame_hex: str, node: int) -> wire.Update:
    data = bytes.fromhex(frame_hex)
    env = wire.open_envelope(data, 1 << 22)
    assert env.node == node
    wire.verify_mac(KEY, env.payload, env.tag)
    return wire.decode_update_payload(node, env.payload, len(data))


def _check_compress_f32(case: dict, spec: dict, ref: list[dict], got: list[dict]) -> None:
    """mp32 against CPython, with float32 rounding accounted for explicitly."""
    for r, (a, b) in enumerate(zip(ref, got)):
        where = f"{case['id']} round {r}"
        assert b["t_max"] == a["t_max"], where
        tol = sum_rtol(case["d"])
        assert _close(b["s1"], a["s1"], tol) and _close(b["s2"], a["s2"], tol), where
        if case["ef"] or r > 0:
            # Error feedback (and hybrid's reused T) feed earlier rounds' rounding into later
            # ones; the round-0 comparison above is the exact one. Check the frame decodes.
            up = _decode(b["frame"], case["node"])
            assert up.T == b["n"] and list(up.indices) == b["idx"], where
            continue
        if b["t"] != a["t"]:
            # Only a float32-level tie may pick another T: its ratio must be within noise of the best.
            rs = _ratios(case, case["grads"][0], spec, _order(case, spec), a["t_max"])
            best = max(rs)
            assert rs[b["t"] - 1] >= best * (1 - FLOAT32_MARGIN), (where, a["t"], b["t"])
            continue
        # A1/A2 over <= K terms and S1/S2 over d terms, then a quotient of such sums
        assert _close(b["imp"], a["imp"], 3 * sum_rtol(case["d"] + case["k"])), where
        assert b["ns"] == a["ns"], where
        up_a = _decode(a["frame"], case["node"])
        up_b = _decode(b["frame"], case["node"])
        assert (up_b.job, up_b.round, up_b.scheme, up_b.d, up_b.T, up_b.fmt) == \
               (up_a.job, up_a.round, up_a.scheme, up_a.d, up_a.T, up_a.fmt), where
        np.testing.assert_array_equal(up_b.indices, up_a.indices, err_msg=where)
        # values: float32 (or float16) of step-scaled quantities computed in single precision
        vt = 2.0 ** -10 if case["fmt"] else 4 * sum_rtol(case["k"])
        np.testing.assert_allclose(up_b.values, up_a.values, rtol=vt, atol=1e-30, err_msg=where)
        assert len(bytes.fromhex(b["frame"])) == len(bytes.fromhex(a["frame"])), where
        np.testing.assert_allclose(up_b.telemetry, up_a.telemetry, rtol=3 * sum_rtol(case["d"] + case["k"]),
                                   err_msg=where)


def _order(case: dict, spec: dict) -> list[int]:
    """Candidates by decreasing |g| (stable), K of them, as the kernel orders them."""
    g = np.frombuffer(spec["files"][case["grads"][0]], dtype="<f4").astype(np.float64)
    k = min(case["k"], case["d"])
    return [int(j) for j in np.argsort(-np.abs(g), kind="stable")[:k]]


@pytest.fixture(scope="module")
def roots(spec, tmp_path_factory) -> dict:
    """One device root per mode, shared by both interpreters."""
    out = {}
    for mode in ("py", "mpy"):
        out[mode] = harness.make_device_root(tmp_path_factory.mktemp(f"k-{mode}"), mode=mode,
                                             extra=_device_files(spec))
    return out


def test_reference_covers_every_scheme_rule_and_format(spec, reference):
    comp = [c for c in spec["cases"] if c["kind"] == "compress"]
    assert {c["scheme"] for c in comp} == {SCHEME_S, SCHEME_SQ, SCHEME_SS}
    assert {c["rule"] for c in comp} == {"cat", "fixed", "hybrid", "alistarh", "catavg"}
    assert {c["fmt"] for c in comp} == {0, 1} and any(c["ef"] for c in comp)
    assert {spec["profiles"][c["profile"]]["kind"] for c in comp} == {"link", "paper"}
    # The reference itself is CAT's exact argmax (brute force over T) on round 0.
    for c in comp:
        if c["rule"] != "cat" or c["ef"]:
            continue
        a = reference[c["id"]][0]
        order = _order(c, spec)
        if c["scheme"] != SCHEME_SS:
            assert a["idx"] == sorted(order[: a["t"]])
        rs = _ratios(c, c["grads"][0], spec, order, a["t_max"])
        best = max(rs)
        assert a["t"] == next(t for t, r in enumerate(rs, 1) if r >= best * (1 - cat.RATIO_RTOL)), c["id"]


@pytest.mark.parametrize("mode", ["py", "mpy"])
def test_kernels_match_cpython(interp, mode, spec, reference, roots):
    got = _run_device(interp, roots[mode])
    exact = interp.float_bits == 64
    assert set(got) == set(reference)
    for case in spec["cases"]:
        ref, dev = reference[case["id"]], got[case["id"]]
        if case["kind"] == "select":
            _check_select(ref, dev, exact)
        elif case["kind"] == "encode":
            # float32-exact inputs: byte-identical on both interpreters
            assert dev == ref, case["id"]
            assert dev["n"] == dev["len"]
        elif exact:
            for r, (a, b) in enumerate(zip(ref, dev)):
                for k in a:
                    if isinstance(a[k], float):
                        assert _close(b[k], a[k], 1e-15), (case["id"], r, k)
                    else:
                        assert b[k] == a[k], (case["id"], r, k)
        else:
            _check_compress_f32(case, spec, ref, dev)


LEARNER_SCRIPT = harness.EMIT_SNIPPET + """
from binascii import hexlify
from edge import learner, evaluate
from edge.datafile import DataFile
out = {}
for kind, path in (("logistic", "bin.catd"), ("softmax", "multi.catd")):
    df = DataFile(path)
    x = evaluate.new_model(df, kind)
    g = evaluate.new_model(df, kind)
    for j in range(len(x)):
        x[j] = ((j * 7) % 11 - 5) * 0.03
    f = learner.loss_and_grad(x, df, 1e-3, g, kind)
    out[kind] = {"f": f, "g": hexlify(bytes(g)).decode(), "acc": evaluate.accuracy(x, df, kind),
                 "L": evaluate.smoothness(df, 1e-3, kind)}
    df.close()
emit(out)
"""


def test_learner_matches_numpy(interp, tmp_path):
    """Logistic and softmax loss/gradient, streamed from CATD files (dense and CSR), against numpy."""
    from aggregator.lab import datasets
    from firmware_tests.budget import make_data
    rng = np.random.default_rng(5)
    make_data(tmp_path / "bin.catd", 300, rows=64, layout="csr", nnz=20)
    X = rng.normal(size=(64, 40)).astype(np.float32)
    y = rng.integers(0, 5, 64)
    datasets.write_datafile(tmp_path / "multi.catd", X, y, 5, "dense")
    root = harness.make_device_root(tmp_path, mode="mpy", extra={
        "bin.catd": tmp_path / "bin.catd", "multi.catd": tmp_path / "multi.catd"})
    r = harness.run(interp, root, LEARNER_SCRIPT, heap="96k")
    assert r.ok, r.describe()
    rtol = 1e-12 if interp.float_bits == 64 else 1e-4
    for kind, path in (("logistic", "bin.catd"), ("softmax", "multi.catd")):
        ds = datasets.read_datafile(tmp_path / path)
        d = ds.X.shape[1] * (1 if kind == "logistic" else ds.classes)
        x = np.array([((j * 7) % 11 - 5) * 0.03 for j in range(d)], dtype=np.float32)
        f, g = datasets.loss_grad_np(ds.X, ds.y, x.astype(np.float64), 1e-3, kind)
        got = r.result[kind]
        assert math.isclose(got["f"], f, rel_tol=rtol), (kind, got["f"], f)
        gg = np.frombuffer(bytes.fromhex(got["g"]), dtype="<f4")
        np.testing.assert_allclose(gg, g.astype(np.float32), rtol=max(rtol, 1e-6) * 10, atol=1e-7)
        assert math.isclose(got["L"], datasets.smoothness_np(ds.X, 1e-3, kind), rel_tol=1e-5)


SCALE_SAFE_SCRIPT = harness.EMIT_SNIPPET + """
from array import array
from edge import cat, compress
from edge.cost import CostModel
PACKET = {"kind": "paper", "name": "paper-packet", "default_metric": "bits",
          "paper": {"model": "packet", "fpp_bytes": 8.0, "c1": 128.0, "c0": 64.0, "pmax_bytes": 128.0}}
d = 200
base = array("f", [((j * 37) % 101 - 50) / 50.0 for j in range(d)])
out = {}
for scheme in (cat.scheme_id("s"), cat.scheme_id("sq"), cat.scheme_id("ss")):
    cm = CostModel(PACKET, d, scheme)
    row = []
    for factor in (1.0, 1e20, 1e-25):
        g = array("f", [v * factor for v in base])
        keep = bytes(g)
        ws = compress.Workspace(d, d)
        res = compress.compress(ws, g, scheme, cat.Rule("cat"), cm, 120, 1.0, rng=compress.XorShift32(3))
        row.append([res.choice.t, bytes(g) == keep])
    out[str(scheme)] = row
emit(out)
"""


def test_single_precision_board_sums_survive_extreme_gradients(interp, tmp_path):
    """In single precision the squares of entries past 1.8e19 overflow and those below 1e-19
    vanish; on the board too, T of such a gradient is the T of the same one at ordinary
    scale, and the gradient is given back unchanged."""
    root = harness.make_device_root(tmp_path, mode="mpy")
    r = harness.run(interp, root, SCALE_SAFE_SCRIPT, heap="256k")
    assert r.ok, r.describe()
    for scheme, row in r.result.items():
        ts = [t for t, _ in row]
        assert ts[1] == ts[0] and ts[2] == ts[0], (interp.name, scheme, row)
        assert all(same for _, same in row), (interp.name, scheme, row)
