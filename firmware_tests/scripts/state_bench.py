# Time a deep-sleeping node's state file on the device (MicroPython): SleepState.save (the file
# through <state>.tmp and the rename, and the SENT marker), the ACKD marker, and restore (read,
# checksum, marker), i.e. the CPU side of one round's file I/O (edge/sleep.py), for
# firmware_tests/statecost.py. Prints one @@RESULT: [n, error feedback 0/1, file bytes, us]
# per size, best of REPS (the host is shared); the files live in the host's filesystem, whose
# time is small next to the interpreter's: the flash's own erase/program/read time is priced
# separately from the board profile's [storage] table (aggregator/lab/boardbudget.py).
import json
import os
import time
from array import array

from edge.compress import XorShift32
from edge.feedback import Feedback
from edge.sleep import SleepState

REPS = 5
L = 107   # the frame bytes measured at d = 4,096 (docs/firmware.md, "The state file")


class Node:
    pass


def node(n, ef):
    nd = Node()
    nd.cfg = {"fmt": 0, "compact": False, "k_cap": 32, "seed": 7, "round": 3}
    nd.node = 1
    nd.job = 2
    nd.scheme = 3
    nd.rule = None   # SS keeps no last update in the file (catavg on S and S+Q does)
    nd.model = array("f", [0.25] * n)
    nd.grad = array("f", [0.5] * n)
    nd.feedback = Feedback(nd.grad) if ef else None
    nd.version = 3
    nd.frame_round = 3
    nd.frame_len = L
    nd.buf = bytearray(L + 16)
    nd.rng = XorShift32(7)
    nd.last_sent = -1
    return nd


def best(fn):
    b = None
    for _ in range(REPS):
        t = time.ticks_us()
        fn()
        t = time.ticks_diff(time.ticks_us(), t)
        if b is None or t < b:
            b = t
    return b


out = {"rounds": []}
for n in (1024, 4096, 16384):
    for ef in (0, 1):
        nd = node(n, ef)
        st = SleepState("bench.bin")

        def one_round():
            st.save(nd)
            st.acked(nd)
            st.restore(nd, nd.cfg)

        one_round()
        if st.status["state"] != "resumed":
            raise SystemExit("state not resumed: %r" % (st.status,))
        size = os.stat("bench.bin")[6]
        out["rounds"].append([n, ef, size, best(one_round)])
print("@@RESULT", json.dumps(out))
