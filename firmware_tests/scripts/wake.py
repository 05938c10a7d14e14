# One boot of a board that deep-sleeps between rounds: main.py's two lines (edge/board.py reads
# node.json, whose "sleep" makes it take its state back, do one round and "sleep": on the unix
# port the program ends). argv "cut": a power cut between writing the state's .tmp and the
# rename (edge/sleep.py SleepState._commit).
import sys
import json
import gc

gc.collect()
base_alloc = gc.mem_alloc()
if "cut" in sys.argv:
    from edge import sleep

    def _cut(self, tmp):
        raise SystemExit(9)

    sleep.SleepState._commit = _cut
from edge import board

sent = board.main("node.json")
gc.collect()
print("@@RESULT", json.dumps({"sent": sent, "mem_alloc": gc.mem_alloc(), "base_alloc": base_alloc}))
