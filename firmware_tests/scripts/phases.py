# Where the heap goes in full edge rounds (firmware_tests/budget.py --phases): the rounds of
# firmware_tests/scripts/round.py (EdgeNode.step, unchanged), with each phase wrapped to
# report, after gc.collect(), what it leaves live (gc.mem_alloc() above the driver's start)
# and what it allocated on the way, garbage included (the GC is disabled during the phase,
# so nothing is reclaimed under it: run this with a heap the phases cannot fill).
# argv: [rounds]. One "@@PHASE <name>|<live>|<churn>" line per phase and round.
import gc
import sys

gc.collect()
_base = gc.mem_alloc()
argv = [a for a in sys.argv[1:] if a != "-c"]
rounds = int(argv[0]) if argv and argv[0].isdigit() else 2
_t0 = [0]


def start():
    gc.collect()
    gc.disable()
    _t0[0] = gc.mem_alloc()


def mark(name):
    churn = gc.mem_alloc() - _t0[0]
    gc.enable()
    gc.collect()
    print("@@PHASE %s|%d|%d" % (name, gc.mem_alloc() - _base, churn))


def wrap(name, fn):
    def phase(*args):
        start()
        r = fn(*args)
        mark(name)
        return r
    return phase


start()
from edge import startup  # noqa: E402  (edge.board.start's steps, one phase each)
mark("import edge.startup")
start()
cfg = startup.load_config("node.json")
mark("read node.json")
start()
node = startup.make_node(cfg)
mark("make node (imports; model + gradient)")
start()
link = startup.make_link(cfg)
del cfg
mark("make link (imports; CoAP client)")
start()
startup = None
from edge.cbor import drop  # noqa: E402
drop("edge.startup", "startup")
mark("let the start-up code go")

from edge import frame, learner  # noqa: E402  (loaded already: no cost)
import edge.node  # noqa: E402

frame.decode_config = wrap("decode config", frame.decode_config)
frame.encode_update = wrap("encode frame", frame.encode_update)
learner.loss_and_grad = wrap("gradient (64 rows)", learner.loss_and_grad)
edge.node.compress = wrap("top-K + CAT + quantise", edge.node.compress)
node._setup = wrap("set-up (O(K) buffers)", node._setup)
link.get_config_into = wrap("GET config", link.get_config_into)
link.send_update = wrap("POST update", link.send_update)
_sync = node.sync


def sync(lk, rnd):
    snaps = node.snapshots
    start()
    ok = _sync(lk, rnd)
    mark("sync by snapshot" if node.snapshots > snaps else "sync by delta")
    return ok


node.sync = sync
sent = 0
while sent < rounds:
    print("@@ROUND", sent + 1)
    if node.step(link) == "sent":
        sent += 1
    else:
        link.wait(0.05)
print("@@RESULT {\"sent\": %d}" % sent)
