# Optional parts of firmware_tests/scripts/round.py, in their own module so that the budget
# runs (round.py without them) do not carry their bytecode: budget.round_setup compiles
# this file to .mpy into the device root.


def use_naive_select():
    """Swap the bounded-heap kernel of edge/topk.py for a sorted() top-T."""
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


def catch_up(link, node, last_round):
    """Catch up with the gateway (delta) and report the model's CRC: the test compares it
    with the gateway's model bit for bit."""
    from binascii import crc32
    from edge import frame
    while True:
        raw = link.get_config()
        rnd = frame.decode_config(raw, node.downlink_key)["round"]
        if rnd > last_round:
            break
        link.wait(0.05)
    node.sync(link, rnd)
    return {"synced": node.version, "crc": crc32(bytes(node.model)), "deltas": node.deltas}
