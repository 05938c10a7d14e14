# The @@RESULT line of firmware_tests/scripts/round.py, in a module of its own: round.py imports
# it after the rounds, with the node let go, so that its format string and code are not in the
# heap while the rounds run (a board's main.py holds neither), and it interns three names
# (round_extras would intern all of its own, and the round's qstrs are near the 621st, where
# MicroPython allocates a 640-slot pool: docs/firmware.md, "The qstr pools").
REPORT = ('@@RESULT {"status": %s, "round": %d, "T": %d, "bytes": %d, "loss": %s, "compute_ms": %s, '
          '"round_ms": %s, "version": %d, "snapshots": %d, "accepted": %s, "code": %s, "mem_free": %d, '
          '"mem_alloc": %d, "base_alloc": %d, "extra": %s}')


def report(res):
    """Print round.py's @@RESULT line from what it kept of the last round (mem_free and
    mem_alloc were read after the rounds, with the node still live)."""
    import json
    st, last, comp, ms, version, snapshots, code, free, alloc, base, extra = res
    print(REPORT % (json.dumps(st), last["round"], last["T"], last["bytes"], json.dumps(last["loss"]),
                    json.dumps(comp), json.dumps(ms), version, snapshots, json.dumps(last["accepted"]),
                    json.dumps(code), free, alloc, base, json.dumps(extra)))
