"""Board entry point: read the node config that `cat-aggregator flash` wrote and run the edge.

A flashed board holds `main.py` (two lines: `from edge import board` / `board.main()`),
the `edge/` package as .mpy, the node's CATD data file and `node.json` (its fields:
edge/startup.py).

With "sleep" in node.json the node does one round per boot and deep-sleeps in between
(machine.deepsleep: RAM is lost, the board reboots into main.py): edge/sleep.py keeps its
state in the "state" file and takes it back at boot. `interval` is the sleep in seconds, `wait`
how long a boot waits for a new round before sleeping again. On the unix port and CPython,
which cannot deep-sleep, main() returns instead and the process exits: starting it again is
the wake-up.

This module stays in a board's heap through the rounds, so it holds only the loop's entry:
the start-up code (node.json, Wi-Fi, making the node and link) is edge/startup.py, loaded by
start() and let go after. Runs on MicroPython and CPython (where it is only imported by tests
and tools).
"""

import json

from edge.cbor import drop


def start(path="node.json"):
    """(node, link, sleep, timeout, rounds) for the flashed config (edge.startup.start); the
    start-up code is let go after, so the rounds that follow do not hold it."""
    from edge.startup import start as boot
    try:
        return boot(path)
    finally:
        drop("edge.startup", "startup")


def report(last):
    """One JSON line per round on the console (what a serial monitor shows)."""
    print("cat-round", json.dumps(last))


def main(path="node.json", max_rounds=None, quiet=False):
    """Run the edge loop until the job's last round (or max_rounds updates); returns updates sent."""
    node, link, sleep, timeout, rounds = start(path)
    if max_rounds is None:
        max_rounds = rounds
    on_round = None if quiet else report
    if sleep is not None:
        from edge.sleep import wake
        return wake(node, link, sleep, on_round)
    sent = node.run(link, max_rounds=max_rounds, on_round=on_round, timeout=timeout)
    if not quiet:
        print("cat-done", json.dumps({"node": node.node, "sent": sent, "version": node.version,
                                      "deltas": node.deltas, "snapshots": node.snapshots}))
    return sent
