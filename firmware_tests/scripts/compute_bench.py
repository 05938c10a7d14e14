# Time the pieces of an edge round's computation on the device (MicroPython), for the compute
# calibration (firmware_tests/compute.py). argv: data files as d:path. Prints one @@RESULT with
# microseconds per piece; the anchor loop below is the published code, run at module level as
# published (globals), because the anchor's board time was measured that way; best of three.
import json
import sys
import time

anchor_us = None
for rep in range(3):  # best of three: the host is shared
    t0 = time.ticks_us()
    iterations = 1000000
    x = 1
    pi = 1
    for i in range(2, iterations + 2):
        x = x * -1
        pi = pi + (x / (2*i-1))
    pi = pi * 4
    t0 = time.ticks_diff(time.ticks_us(), t0)
    if anchor_us is None or t0 < anchor_us:
        anchor_us = t0

from array import array
from edge import learner, topk, frame
from edge.cat import cat_choose
from edge.datafile import DataFile

REPS = 5
KEY = bytes(range(32))


def best(fn):
    b = None
    for _ in range(REPS):
        t = time.ticks_us()
        fn()
        t = time.ticks_diff(time.ticks_us(), t)
        if b is None or t < b:
            b = t
    return b


out = {"anchor_us": anchor_us, "grad": [], "select": [], "scan": [], "encode": []}
for spec in [a for a in sys.argv[1:] if ":" in a]:
    d, path = spec.split(":")
    d = int(d)
    data = DataFile(path)
    model = learner.zeros(d)
    grad = learner.zeros(d)
    out["grad"].append([d, data.total_nnz,
                        best(lambda: learner.loss_and_grad(model, data, 1e-3, grad, "logistic"))])
    for j in range(d):  # a gradient with distinct magnitudes, as a real one
        grad[j] = ((j * 2654435761) % 1000003) / 1000003.0 - 0.5
    for k in (32, 256):
        idx = topk.alloc_index(k, d)
        out["select"].append([d, k, best(lambda: topk.select(grad, k, idx))])
        n, s1, s2 = topk.select(grad, k, idx)
        out["scan"].append([d, k, best(lambda: cat_choose(2, grad, idx, n, s1, s2, lambda t: 100.0 + t, k))])
    k = 256
    idx = topk.alloc_index(k, d)
    vals = learner.zeros(k)
    buf = bytearray(frame.buffer_size(d, k, 2, 0))
    n, s1, s2 = topk.select(grad, k, idx)
    cand = topk.alloc_index(k, d)
    for i in range(k):
        cand[i] = idx[i]
    for t in (16, 256):
        def enc():
            for i in range(k):  # sort_ascending reorders idx: restore the candidates (same for every t)
                idx[i] = cand[i]
            topk.sort_ascending(idx, t)
            for i in range(t):
                vals[i] = 0.01 if grad[idx[i]] >= 0.0 else -0.01
            frame.encode_update(buf, KEY, 1, 1, 3, 2, d, t, idx, vals, 0, (0.5, 0.1, 0.2, 0.001))
        out["encode"].append([d, t, best(enc)])
print("@@RESULT", json.dumps(out))
