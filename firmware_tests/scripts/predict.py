# A board that trained with the gateway classifies its own readings with the synced model
# (edge/predict.py). The edge loop runs as a flashed board runs it (edge/board.py) until the
# job's last round, which leaves the gateway's final model in node.model; then every row of
# the node's data file is taken as a reading. Reports the classes, the probabilities of the
# first rows, and a CRC of the model the board used.
import gc
import json
from array import array
from binascii import crc32

from edge import board, predict

node, link = board.start("node.json")[:2]
sent = node.run(link, timeout=60)
data = node.data
classes = predict.classes_of(node.model, data.d)
probs = array("f", bytes(4 * (2 if classes == 1 else classes)))
pred = bytearray(data.n)
first = []
gc.collect()
data.rewind()
i = 0
while True:
    y = data.read_row()
    if y < 0:
        break
    pred[i] = predict.predict(node.model, data.values)   # a dense row: the reading's features
    if i < 3:
        if predict.scores(node.model, data.values, probs) != pred[i]:
            raise RuntimeError("scores and predict disagree on row %d" % i)
        first.append([probs[k] for k in range(len(probs))])
    i += 1
gc.collect()
print("@@RESULT", json.dumps({
    "sent": sent, "version": node.version, "crc": crc32(bytes(node.model)), "rows": i,
    "pred": list(pred), "probs": first}))
