# One full edge round on the device, as a flashed board does it (edge/board.py):
# read node.json, open the data file, CoAP GET config, GET snapshot (model sync),
# gradient over the streamed data file, CAT, frame encode, CoAP POST.
# argv: [rounds] [naive] [sync] [frames] [portable] -- "naive" swaps the bounded-heap kernel for a
# sorted() top-T; "sync" catches up with the gateway afterwards and reports a CRC of the model;
# "frames" prints every frame as it is sent; "portable" computes exp/log without the port's libm
# (all from round_extras.run, a module of its own). Runs over any link edge/board.py makes
# (CoAP, serial).
#
# This driver stands in for a board's main.py (`from edge import board` / `board.main()`), so it
# keeps out of the heap what main.py does not put there: its code is small, and it interns as
# few names of its own as it can (each name a qstr, and MicroPython's qstr pool grows by 4.4 KiB
# when the round's 621st is interned; docs/firmware.md, "The qstr pools"): its variables are a
# function's locals (not interned), its options are round_extras' names, and its report is
# printed by round_report.report, loaded after the rounds with the node let go (its format
# string and code are not in the heap while the rounds run).
import gc
import micropython
import sys
import time


def run(argv):
    gc.collect()
    base = gc.mem_alloc()
    rounds = int(argv[0]) if argv and argv[0].isdigit() else 1
    extras = None
    if len(argv) > 1:
        import round_extras
        extras = round_extras
        extras.run(argv, None, None)  # before the node is made ("naive")
    from edge import board
    node, link = board.start("node.json")[:2]
    if extras is not None:
        extras.run(argv, node, link)  # "frames", "portable"
    gc.collect()
    sent = 0
    ms = []
    comp = []
    code = None
    while sent < rounds:
        t0 = time.ticks_ms()
        st = node.step(link)
        if st == "sent":
            ms.append(time.ticks_diff(time.ticks_ms(), t0))
            comp.append(int(node.last["compute_s"] * 1000))
            code = getattr(link, "last_code", None)  # CoAP response code; None on push links
            sent += 1
        elif st == "done":
            raise RuntimeError("job finished before the round")
        else:
            link.wait(0.05)
    # "qstr pool: n_pool=5, n_qstr=...": what the rounds interned (test_budget.py holds the
    # count below the 621st, where MicroPython allocates a 640-slot pool)
    micropython.qstr_info()
    last = node.last
    extra = {} if extras is None else extras.run(argv, node, link, last["round"])  # "sync"
    gc.collect()
    return (st, last, comp, ms, node.version, node.snapshots, code, gc.mem_free(), gc.mem_alloc(), base, extra)


def report(res):
    # run's frame is gone (MicroPython frees a call's heap-allocated state on return), and with
    # it every reference to the node: a local set to None could still be reached from a stale
    # slot of that frame's value stack, which the collector scans whole
    gc.collect()
    import round_report
    round_report.report(res)


report(run([a for a in sys.argv[1:] if a != "-c"]))
