# One full edge round on the device, as a flashed board does it (edge/board.py):
# read node.json, open the data file, CoAP GET config, GET snapshot (model sync),
# gradient over the streamed data file, CAT, frame encode, CoAP POST.
# argv: [rounds] [naive] [sync] -- "naive" swaps the bounded-heap kernel for a sorted() top-T;
# "sync" catches up with the gateway afterwards and reports a CRC of the model.
import gc
import sys
import json
import time

gc.collect()
base_alloc = gc.mem_alloc()

argv = [a for a in sys.argv[1:] if a != "-c"]
rounds = int(argv[0]) if argv and argv[0].isdigit() else 1
naive = "naive" in argv

from edge import board

if naive:
    from edge import topk

    def naive_select(g, k, idx):
        # What the kernel replaces: sort all d indices by |g| (sorted() builds a list of
        # d ints; MicroPython calls the key per comparison), then take the first k.
        d = len(g)
        if k > d:
            k = d
        s1 = 0.0
        s2 = 0.0
        for j in range(d):
            v = g[j]
            s1 += abs(v)
            s2 += v * v
        order = sorted(range(d), key=lambda j: -abs(g[j]))
        for i in range(k):
            idx[i] = order[i]
        return k, s1, s2

    topk.select = naive_select

cfg = board.load_config("node.json")
link = board.make_link(cfg)
node = board.make_node(cfg)
del cfg
gc.collect()
sent = 0
ms = []
comp = []
while sent < rounds:
    t0 = time.ticks_ms()
    st = node.step(link)
    if st == "sent":
        ms.append(time.ticks_diff(time.ticks_ms(), t0))
        comp.append(int(node.last["compute_s"] * 1000))
        post_code = link.last_code
        sent += 1
    elif st == "done":
        raise RuntimeError("job finished before the round")
    else:
        link.wait(0.05)
last = node.last
extra = {}
if "sync" in argv:
    # catch up with the gateway (delta) and report the model's CRC: the test compares it
    # with the gateway's model bit for bit
    from binascii import crc32
    from edge import frame
    while True:
        raw = link.get_config()
        rnd = frame.decode_config(raw, node.downlink_key)["round"]
        if rnd > last["round"]:
            break
        link.wait(0.05)
    node.sync(link, rnd)
    extra = {"synced": node.version, "crc": crc32(bytes(node.model)), "deltas": node.deltas}
gc.collect()
print("@@RESULT", json.dumps({
    "status": st, "round": last["round"], "T": last["T"], "bytes": last["bytes"],
    "loss": last["loss"], "compute_ms": comp, "round_ms": ms,
    "version": node.version, "snapshots": node.snapshots, "accepted": last["accepted"],
    "code": post_code, "mem_free": gc.mem_free(), "mem_alloc": gc.mem_alloc(),
    "base_alloc": base_alloc, "naive": naive, "extra": extra}))
