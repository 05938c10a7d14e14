# Profile checks that edge/profile.py loads only when a profile needs them: the [stack] table
# of walked profiles (what an IEEE 802.15.4 + 6LoWPAN client puts on air, walked by
# edge/onair.py), message.replies_acked, a LoRaWAN region's payload limits, and the [paper]
# table of paper profiles. A module of
# its own so edge/profile.py still compiles inside a 64 KiB MicroPython heap. Schema and
# sources: cost_profiles/README.md.

from edge.lora import lora_airtime

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


# LoRaWAN Regional Parameters' largest FRMPayload per uplink data rate, keyed by (SF, bandwidth
# in kHz): LoRaMac-node RegionEU868.h MaxPayloadOfDatarateEU868 = {51, 51, 51, 115, 242, 242,
# 242, 242} for DR0..DR7 (SF12..SF7 at 125 kHz, SF7 at 250 kHz; DR7 is FSK), RegionUS915.h
# MaxPayloadOfDatarateUS915 = {11, 53, 125, 242, 242} for DR0..DR4 (SF10..SF7 at 125 kHz, SF8 at
# 500 kHz); without a repeater.
_REGION_MAX = {
    "EU868": {(12, 125): 51, (11, 125): 51, (10, 125): 51, (9, 125): 115, (8, 125): 242, (7, 125): 242,
              (7, 250): 242},
    "US915": {(10, 125): 11, (9, 125): 53, (8, 125): 125, (7, 125): 242, (8, 500): 242},
}

# Uplink dwell time by region: in US902-928 "FCC regulation imposes a maximum dwell time of 400ms
# on uplinks" (LoRaWAN Regional Parameters 1.0.2rB §2.2.3; its payload limits are the largest
# under it); EU863-870 has none (§2.1.3).
UPLINK_DWELL_S = {"US915": 0.4}


def check_region(c, region, lora, msg, pk):
    """[lora] region: the uplink's SF and bandwidth must be one of the region's data rates, and
    message.max_bytes at most that data rate's FRMPayload limit; the longest packet priced within
    the region's uplink dwell time (a network that enforces it never receives a longer one)."""
    rates = _REGION_MAX.get(region)
    if rates is None:
        c.fail("lora.region", "must be one of: %s, got %r" % (", ".join(sorted(_REGION_MAX)), region))
    key = (lora["spreading_factor"], int(lora["bandwidth"] / 1000))
    if key not in rates:
        c.fail("lora.spreading_factor", "SF%d at %d kHz is no %s uplink data rate" % (key[0], key[1], region))
    if msg["max_bytes"] > rates[key]:
        c.fail("message.max_bytes", "%g B exceeds the %d B FRMPayload %s allows at SF%d/%d kHz"
               % (msg["max_bytes"], rates[key], region, key[0], key[1]))
    lim = UPLINK_DWELL_S.get(region)
    if lim is None:
        return
    m = msg["max_bytes"] + msg["overhead_bytes"]
    phy = min(m, pk["first_payload_bytes"]) + pk["first_overhead_bytes"]
    if m > pk["first_payload_bytes"]:  # a following packet may be the longer one
        phy = max(phy, min(m - pk["first_payload_bytes"], pk["next_payload_bytes"]) + pk["next_overhead_bytes"])
    t = lora_airtime(lora, phy)
    if t > lim:
        c.fail("message.max_bytes", "a %g B packet takes %.1f ms on air, over the %g ms uplink dwell time of %s"
               % (phy, t * 1e3, lim * 1e3, region))
