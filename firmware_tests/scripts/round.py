# One full edge round on the device, as a flashed board does it (edge/board.py):
# read node.json, open the data file, CoAP GET config, GET snapshot (model sync),
# gradient over the streamed data file, CAT, frame encode, CoAP POST.
# argv: [rounds] [naive] [sync] [frames] [portable] -- "naive" swaps the bounded-heap kernel for a
# sorted() top-T; "sync" catches up with the gateway afterwards and reports a CRC of the model;
# "frames" prints every frame as it is sent; "portable" computes exp/log without the port's libm
# (all from round_extras, a module of its own: this driver's bytecode is in RAM, so it stays
# small). Runs over any link edge/board.py makes (CoAP, serial).
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
    import round_extras
    round_extras.use_naive_select()

cfg = board.load_config("node.json")
node, link = board.make(cfg)
del cfg
if "frames" in argv:
    import round_extras
    round_extras.print_frames(node)
if "portable" in argv:
    import round_extras
    round_extras.use_portable_math()
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
        post_code = getattr(link, "last_code", None)  # CoAP response code; None on push links
        sent += 1
    elif st == "done":
        raise RuntimeError("job finished before the round")
    else:
        link.wait(0.05)
last = node.last
extra = {}
if "sync" in argv:
    import round_extras
    extra = round_extras.catch_up(link, node, last["round"])
gc.collect()
print("@@RESULT", json.dumps({
    "status": st, "round": last["round"], "T": last["T"], "bytes": last["bytes"],
    "loss": last["loss"], "compute_ms": comp, "round_ms": ms,
    "version": node.version, "snapshots": node.snapshots, "accepted": last["accepted"],
    "code": post_code, "mem_free": gc.mem_free(), "mem_alloc": gc.mem_alloc(),
    "base_alloc": base_alloc, "naive": naive, "extra": extra}))
