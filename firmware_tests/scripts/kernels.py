# Device side of firmware_tests/test_edge_mp.py: the selection kernel, every compressor,
# every CAT rule, error feedback and the frame encoder, on inputs the test wrote:
# cases.jsonl (one case per line, so only one is in RAM at a time), profiles.json, and
# gradients as raw '<f' files (bit-identical inputs on both sides). Results come back as
# hex of '<f' bytes (exact) plus a few floats as JSON (for tolerances).
import gc
import json
from array import array
from binascii import hexlify, unhexlify

from edge import topk, frame
from edge.cat import Rule
from edge.compress import Workspace, XorShift32, compress
from edge.feedback import Feedback
from edge.learner import zeros
from edge.cost import CostModel


def emit(obj):
    print("@@RESULT", json.dumps(obj))


def f32(h):
    return array("f", unhexlify(h))


def load(name):
    with open(name, "rb") as f:
        return array("f", f.read())


def hx(arr, n):
    # MicroPython arrays have no itemsize; every array hexed here is 'f'
    return hexlify(bytes(arr)[: n * 4]).decode()


def run_select(c):
    g = load(c["g"])
    idx = topk.alloc_index(c["k"], len(g))
    n, s1, s2 = topk.select(g, c["k"], idx)
    order = [idx[i] for i in range(n)]
    topk.sort_ascending(idx, n)
    return {"n": n, "d": len(g), "s1": s1, "s2": s2, "order": order, "asc": [idx[i] for i in range(n)],
            "typecode": "H" if len(bytes(idx)) == 2 * len(idx) else "I"}


def run_compress(c, profiles):
    d = c["d"]
    prof = profiles[c["profile"]]
    scheme = c["scheme"]
    fmt = c["fmt"]
    ws = Workspace(d, c["k"], fmt)
    rule = Rule(c["rule"], c["param"])
    ag = rule.agree(c["k"], d) if scheme != 3 else None   # catavg: fed a made-up delta below
    cost = CostModel(prof, d, scheme, c["metric"], fmt, True, c["job"], c["node"], c["rnd"])
    rng = XorShift32(c["seed"])
    fb = Feedback(zeros(d)) if c["ef"] else None
    buf = bytearray(frame.buffer_size(d, ws.cap, scheme, fmt))
    out = []
    for r in range(c["rounds"]):
        g = load(c["grads"][r])
        scale = c["scale"]
        cost.set_round(c["rnd"] + r)
        if fb is not None:
            fb.add(g, scale)
            g = fb.e
            scale = 1.0
        res = compress(ws, g, scheme, rule, cost, cost.t_max, scale, rng)
        if fb is not None:
            fb.store(ws, res)
        if ag is not None:
            # Delta_j / u_j = 1, 1/2, -1 (clamped to 0), 2 (clamped to 1), every third entry absent
            ag.begin(ws.idx, ws.vals, res.n)
            for i in range(res.n):
                if i % 3 != 2:
                    ag.seen(ws.idx[i], ws.vals[i] * (1.0, 0.5, -1.0, 2.0)[i % 4])
            ag.end()
        ch = res.choice
        tel = (0.25, ch.improvement, 0.5, 0.125)  # float32-exact except the improvement
        nb = frame.encode_update(buf, unhexlify(c["key"]), c["job"], c["node"], c["rnd"] + r, scheme, d,
                                 res.n, ws.idx, ws.vals, fmt, tel)
        o = {"n": res.n, "t": ch.t, "ns": ch.ns, "imp": ch.improvement, "ratio": ch.ratio,
             "cost": ch.cost, "binding": ch.cap_binding, "t_max": cost.t_max,
             "idx": [ws.idx[i] for i in range(res.n)], "vals": hx(ws.vals, res.n),
             "s1": ws.s1, "s2": ws.s2, "frame": hexlify(memoryview(buf)[:nb]).decode(),
             "rng": rng.s}
        if fb is not None:
            o["e"] = hx(fb.e, d)
        out.append(o)
    return out


def run_encode(c):
    idx = array("I", c["idx"])
    vals = f32(c["vals"])
    tel = None
    if c["tel"] is not None:
        t = f32(c["tel"])
        tel = (t[0], t[1], t[2], t[3])
    buf = bytearray(c["size"])
    n = frame.encode_update(buf, unhexlify(c["key"]), c["job"], c["node"], c["rnd"], c["scheme"], c["d"],
                            c["T"], idx, vals, c["fmt"], tel)
    return {"n": n, "len": frame.frame_length(c["d"], c["T"], c["scheme"], c["fmt"], tel is not None,
                                              c["job"], c["node"], c["rnd"]),
            "frame": hexlify(memoryview(buf)[:n]).decode()}


with open("profiles.json") as f:
    profiles = json.load(f)
count = 0
for line in open("cases.jsonl"):
    case = json.loads(line)
    kind = case["kind"]
    if kind == "select":
        r = run_select(case)
    elif kind == "compress":
        r = run_compress(case, profiles)
    else:
        r = run_encode(case)
    emit({"id": case["id"], "r": r})
    count += 1
    del case, r
    gc.collect()
emit({"done": count})
