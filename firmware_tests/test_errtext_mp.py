"""edge.cbor.errmsg on MicroPython: a board's error carries the same text as on CPython, the texts
(edge/errtext.mpy) are let go after the raise, and an error raised with too little heap to load
them carries its number instead of turning into a MemoryError (a real one: the heap filled up)."""

from __future__ import annotations

from edge import errtext
from firmware_tests import harness

SCRIPT = """\
import gc, json, sys, edge
from edge import cose
def check():
    try:
        cose.check_key(bytes(31))
    except ValueError as e:
        return e.args[0]
print("@@RESULT", json.dumps(check()))
print("@@RESULT", json.dumps("edge.errtext" in sys.modules or hasattr(edge, "errtext")))
gc.collect()
hold = [None] * 400
i = 0
try:
    while i < 400:
        hold[i] = bytearray(256)
        i += 1
except MemoryError:
    pass
hold[i - 1] = hold[i - 2] = hold[i - 3] = hold[i - 4] = None  # ~1 KiB: the error and a short text fit, errtext.mpy not
msg = check()
hold = None
gc.collect()
print("@@RESULT", json.dumps(msg))
print("@@RESULT", json.dumps(check()))
"""


def test_errmsg_on_a_board(mp32, tmp_path):
    root = harness.make_device_root(tmp_path, mode="mpy")
    r = harness.run(mp32, root, SCRIPT, heap="64k", precompile=True)
    assert r.ok, r.describe()
    full, loaded, starved, again = r.results
    assert full == "MAC key must be 32 bytes, got 31"
    assert loaded is False
    n = errtext.TEXT.index("MAC key must be 32 bytes, got %d")
    assert starved == f"edge error {n} 31"
    assert again == full  # a failed import of errtext leaves nothing behind
