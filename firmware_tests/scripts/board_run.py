# What main.py on a flashed board does (edge/board.py), with a round limit from argv.
import sys
import json
from edge import board

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else None
sent = board.main("node.json", max_rounds=rounds)
print("@@RESULT", json.dumps({"sent": sent}))
