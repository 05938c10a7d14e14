# Profile checks that edge/profile.py loads only when a profile needs them: the [stack] table
# of walked profiles (what an IEEE 802.15.4 + 6LoWPAN client puts on air, walked by
# edge/onair.py), message.replies_acked and the [paper] table of paper profiles (a LoRaWAN
# region's: edge/regions.py). A module of its own so edge/profile.py still compiles inside a
# 64 KiB MicroPython heap. Schema and sources: cost_profiles/README.md.

_STACK = ("address_bytes size int>0", "security_bytes size int>=0", "phy_overhead_bytes size int>0",
          "max_frame_bytes size int>0", "iphc_bytes size int>0", "src_port ratio int>0",
          "dst_port ratio int>0", "ack_bytes size int>0", "csma_seconds time >=0",
          "turnaround_seconds time >=0", "sifs_seconds time >=0", "lifs_seconds time >=0")
_COAP = ("token_bytes size int>0", "block_size size int>0", "reply_payload_bytes size int>=0",
         "job_digits ratio int>0")
_TRANSPORTS = ("coap", "udp")
BLOCK_SIZES = (16, 32, 64, 128, 256, 512, 1024)  # RFC 7959 §2.2: 2 ** (SZX + 4)
PAPER_MODELS = ("payload", "affine", "packet")  # the paper's eq. (5), §2.2 affine, eq. (6)
_MESH = (0, 5, 6, 11, 12, 17, 18)


def _keys(spec):
    return [x.split()[0] for x in spec]


def check_stack(c, raw):
    """The normalised [stack] of raw (c: edge.profile's checker, which names the bad field)."""
    keys = ["transport", "pan_id_compression", "mesh_header_bytes"] + _keys(_STACK) + _keys(_COAP)
    t = c.table(raw, "stack", "stack", True, keys)
    tr = c.text(t, "stack.transport", "transport", _TRANSPORTS)
    for k in _keys(_COAP) if tr != "coap" else ():
        if k in t:
            c.fail("stack." + k, "only for transport = 'coap'")
    st = c.numbers(t, "stack", _STACK + (_COAP if tr == "coap" else ()))
    for k in st:
        if k[-8:] != "_seconds":
            st[k] = int(st[k])
    if "mesh_header_bytes" in t:  # optional (absent: none); a board's dict stays smaller without it
        m = int(c.number(t, "stack", "mesh_header_bytes size int>=0"))
        if m not in _MESH:
            c.fail("stack.mesh_header_bytes", "must be 0 (none) or 5, 6, 11, 12, 17 or 18: dispatch 1 + originator "
                   "and final addresses 2 or 8 each + 1 when hops left > 14 (RFC 4944 §5.2), got %r" % m)
        st["mesh_header_bytes"] = m
    if not isinstance(t.get("pan_id_compression"), bool):
        c.fail("stack.pan_id_compression", "must be true or false")
    st["transport"] = tr
    st["pan_id_compression"] = t["pan_id_compression"]
    if st["address_bytes"] not in (2, 8):
        c.fail("stack.address_bytes", "must be 2 (short) or 8 (extended), got %r" % st["address_bytes"])
    for k in ("src_port", "dst_port"):
        if st[k] > 65535:
            c.fail("stack." + k, "must be a UDP port (1..65535), got %r" % st[k])
    if tr == "coap":
        if st["token_bytes"] > 8:
            c.fail("stack.token_bytes", "must be 1..8 (RFC 7252 §3), got %r" % st["token_bytes"])
        b = st["block_size"]
        if b not in BLOCK_SIZES:
            c.fail("stack.block_size", "must be a power of two from 16 to 1024 (RFC 7959 §2.2), got %r" % b)
        n = str(raw.get("name", ""))
        v = n[n.rfind("-b") + 2:] if "-b" in n else ""
        if v.isdigit() and int(v) in BLOCK_SIZES and int(v) != b:  # '<base>-b<B>' promises B-byte blocks
            c.fail("stack.block_size", "%d B, but the name %r promises %s B blocks" % (b, n, v))
    from edge.onair import compressed_headers, mac_payload
    if mac_payload(st) - 4 - compressed_headers(st) < 8:
        c.fail("stack", "a frame of %d B leaves no room for a first fragment" % st["max_frame_bytes"])
    return st


def check_replies(c, t, msg):
    """message.replies_acked (optional, absent: false): each of the extra_packets replies is a
    link frame the device acknowledges, with the contention of a sent one (edge/cost.py)."""
    a = t["replies_acked"]
    if not isinstance(a, bool):
        c.fail("message.replies_acked", "must be true or false, got %r" % (a,))
    if a and not msg["extra_packets"]:
        c.fail("message.replies_acked", "needs extra_packets > 0 (no reply to acknowledge)")
    msg["replies_acked"] = a


def check_paper(c, raw, out):
    """The [paper] table of a paper profile (the paper's payload / affine / packet models)."""
    t = c.table(raw, "paper", "paper", True, ("model", "fpp", "c1", "c0", "pmax"))
    model = c.text(t, "paper.model", "model", PAPER_MODELS)
    fpp = c.number(t, "paper", "fpp size >0")
    pmax = None
    if model == "payload":
        for k in ("c1", "c0", "pmax"):
            if k in t:
                c.fail("paper." + k, "not used by model 'payload' (C(T) = P(T))")
        c1, c0 = 1.0, 0.0
        c.sources["paper.c1"] = "payload model, paper eq. (5): C(T) = P(T), so c1 = 1"
        c.sources["paper.c0"] = "payload model, paper eq. (5): C(T) = P(T), so c0 = 0"
    else:
        # affine: c1 is a multiplier of the payload; packet: c1 is a size per packet
        c1 = c.number(t, "paper", "c1 ratio >0" if model == "affine" else "c1 size >0")
        c0 = c.number(t, "paper", "c0 size >=0")
        if model == "packet" or "pmax" in t:
            pmax = c.number(t, "paper", "pmax size >0")
    if out["default_metric"] == "packets" and model != "packet":
        c.fail("default_metric", "'packets' needs paper.model = 'packet'")
    out["paper"] = {"model": model, "fpp_bytes": fpp, "c1": c1, "c0": c0, "pmax_bytes": pmax}
