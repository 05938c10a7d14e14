"""edge/catef.py (rule catef, a simulator rule today) on MicroPython: EFRule chooses the same T
with the same improvement, bit for bit, as on CPython (the 64-bit build: IEEE doubles), so a
board that kept its gradient apart from the residual could run it unchanged."""

from __future__ import annotations

import json
import subprocess
import sys

from firmware_tests import harness

SCRIPT = """\
import json, struct, binascii
from array import array
from edge import topk
from edge.catef import EFRule
from edge.compress import XorShift32

def hexf(x):
    return binascii.hexlify(struct.pack('<d', x)).decode()

rng = XorShift32(7)
out = []
for case in range(12):
    d = 20 + 7 * case
    h = array('f', [rng.random() - 0.5 for _ in range(d)])
    u = array('f', [h[j] + (rng.random() - 0.5) * (case % 4) for j in range(d)])
    for scheme in (1, 2):
        rule = EFRule(1 + case % 3, h)
        ag = rule.agree(d, d)
        if case % 2:  # a last update and the delta that followed it: weights in [0, 1]
            m = d // 3
            idx = list(range(0, 3 * m, 3))
            ag.begin(idx, array('f', [1.0] * m), m)
            for i in range(m):
                if i % 4:
                    ag.seen(idx[i], (i % 5) * 0.25)
            ag.end()
        k = d - case
        ix = topk.alloc_index(k, d)
        n, s1, s2 = topk.select(u, k, ix)
        ch = rule.choose(scheme, u, ix, n, s1, s2, lambda t: 64.0 + 8.0 * ((t + 9) // 10), d - 2, cap=k)
        out.append([ch.t, hexf(ch.improvement), hexf(ch.ratio), ch.cap_binding])
print("@@RESULT", json.dumps(out))
"""


def test_catef_on_micropython_equals_cpython(mp64, tmp_path):
    root = harness.make_device_root(tmp_path)
    r = harness.run(mp64, root, SCRIPT, heap="256k")
    assert r.ok, r.describe()
    cpy = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60,
                         cwd=harness.REPO, check=True)
    want = json.loads(cpy.stdout.split("@@RESULT", 1)[1])
    assert r.result == want
    assert len({t for t, *_ in want}) > 3      # the cases choose different T
