# A LoRaWAN profile's [lora] region, which edge/profile.py loads only for a profile that names
# one: the region's uplink data rates, their FRMPayload limits and its uplink dwell time. A module
# of its own (host only, never flashed) so edge/profile.py and edge/stackcheck.py still compile
# inside a small MicroPython heap. Schema and sources: cost_profiles/README.md, "LoRaWAN regions".

from edge.lora import lora_airtime


# LoRaWAN Regional Parameters' largest FRMPayload per uplink data rate, keyed by (SF, bandwidth
# in kHz): LoRaMac-node RegionEU868.h MaxPayloadOfDatarateEU868 = {51, 51, 51, 115, 242, 242,
# 242, 242} for DR0..DR7 (SF12..SF7 at 125 kHz, SF7 at 250 kHz; DR7 is FSK), RegionUS915.h
# MaxPayloadOfDatarateUS915 = {11, 53, 125, 242, 242} for DR0..DR4 (SF10..SF7 at 125 kHz, SF8 at
# 500 kHz); AS923 (RegionAS923.h, DataratesAS923 = {12, 11, 10, 9, 8, 7, 7, 50}, DR6 at 250 kHz)
# with its uplink dwell time (UplinkDwellTime = 1, AS923_DEFAULT_UPLINK_DWELL_TIME):
# MaxPayloadOfDatarateDwell1AS923 = {0, 0, 11, 53, 125, 242, 242, 242}, DR0/DR1 not allowed
# (AS923_DWELL_LIMIT_DATARATE DR_2); without a repeater.
_REGION_MAX = {
    "EU868": {(12, 125): 51, (11, 125): 51, (10, 125): 51, (9, 125): 115, (8, 125): 242, (7, 125): 242,
              (7, 250): 242},
    "US915": {(10, 125): 11, (9, 125): 53, (8, 125): 125, (7, 125): 242, (8, 500): 242},
    "AS923": {(10, 125): 11, (9, 125): 53, (8, 125): 125, (7, 125): 242, (7, 250): 242},
}
# AS923 with UplinkDwellTime = 0 (`[lora] uplink_dwell_time = false`, where the network has
# lifted it with TxParamSetupReq): RegionAS923.h MaxPayloadOfDatarateDwell0AS923 = {51, 51, 115,
# 115, 242, 242, 242, 242}, the N column of RP002-1.0.5 table 73. DR2 is 115 B since the RP002
# tables (LoRaMac-node commit 886df95b, "according to LoRaWAN Specification 1.0.4", then 2420a977
# "using N values instead of M values"); LoRaMac-node's table before them had 51 B. The RX1
# downlinks' limits too: a device enforces the DownlinkDwellTime = 0 sizes whatever its setting
# (RP002-1.0.5 §3.10.6).
AS923_NO_DWELL_MAX = {(12, 125): 51, (11, 125): 51, (10, 125): 115, (9, 125): 115, (8, 125): 242,
                      (7, 125): 242, (7, 250): 242}

# Uplink dwell time by region: in US902-928 "FCC regulation imposes a maximum dwell time of 400ms
# on uplinks" (LoRaWAN Regional Parameters 1.0.2rB §2.2.3; its payload limits are the largest
# under it); EU863-870 has none (§2.1.3); AS923 has 400 ms where local rules ask for it, set by
# TxParamSetupReq (RP002-1.0.5 §3.10; LoRaMac-node starts with it on: RegionAS923.h
# AS923_DEFAULT_UPLINK_DWELL_TIME 1), off with `[lora] uplink_dwell_time = false`.
UPLINK_DWELL_S = {"US915": 0.4, "AS923": 0.4}


def uplink_dwell_s(lora):
    """The uplink dwell time a normalised [lora] is held to, in seconds, or None."""
    if lora.get("uplink_dwell_time") is False:
        return None
    return UPLINK_DWELL_S.get(lora.get("region"))


def check_region(c, t, lora, msg, pk):
    """[lora] region (and uplink_dwell_time, AS923 only): the uplink's SF and bandwidth must be
    one of the region's data rates, and message.max_bytes at most that data rate's FRMPayload
    limit; the longest packet priced within the region's uplink dwell time (a network that
    enforces it never receives a longer one). Records both in lora."""
    region = t.get("region")
    rates = _REGION_MAX.get(region)
    if rates is None:
        c.fail("lora.region", "must be one of: %s, got %r" % (", ".join(sorted(_REGION_MAX)), region))
    lora["region"] = region
    if "uplink_dwell_time" in t:
        if region != "AS923":
            c.fail("lora.uplink_dwell_time", "only AS923 sets its dwell time (%s's is fixed)" % region)
        if not isinstance(t["uplink_dwell_time"], bool):
            c.fail("lora.uplink_dwell_time", "must be true or false")
        lora["uplink_dwell_time"] = t["uplink_dwell_time"]
        if not t["uplink_dwell_time"]:
            rates = AS923_NO_DWELL_MAX
    key = (lora["spreading_factor"], int(lora["bandwidth"] / 1000))
    if key not in rates:
        why = ""
        if region == "AS923" and key in AS923_NO_DWELL_MAX:  # DR0/DR1 under the dwell time
            why = " under its 400 ms dwell time (uplink_dwell_time = false lifts it)"
        c.fail("lora.spreading_factor", "SF%d at %d kHz is no %s uplink data rate%s" % (key[0], key[1], region, why))
    if msg["max_bytes"] > rates[key]:
        c.fail("message.max_bytes", "%g B exceeds the %d B FRMPayload %s allows at SF%d/%d kHz"
               % (msg["max_bytes"], rates[key], region, key[0], key[1]))
    lim = uplink_dwell_s(lora)
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
