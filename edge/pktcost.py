"""LinkCost for a profile priced packet by packet (its [message] and [packet] tables; LoRa
airtime from edge/lora.py): a module of its own, imported by edge.cost.LinkCost only for such
profiles, so a board on a walked profile (edge/onair.py) does not hold its code. MicroPython
and CPython.
"""


def packet_cost(lc, profile, frame):
    """Fill LinkCost lc for a message of `frame` bytes (the attributes LinkCost documents)."""
    radio = profile["radio"]
    msg = profile["message"]
    pk = profile["packet"]
    lc.listen_seconds = 0.0  # receive windows with nothing in them (LoRaWAN class A)
    m = frame + msg["overhead_bytes"]
    first = pk["first_payload_bytes"]
    nxt = pk["next_payload_bytes"]
    if m <= first:
        packets = 1
    else:
        packets = 1 + int((m - first + nxt - 1) // nxt)
    tx = m + pk["first_overhead_bytes"] + (packets - 1) * pk["next_overhead_bytes"]
    rx = packets * pk["ack_bytes"] + msg["extra_packets"] * msg["extra_packet_bytes"]
    lora = profile.get("lora")
    rate = radio["bit_rate"]
    if lora:
        # airtime packet by packet; then the class A RX1/RX2 windows, listened through
        from edge.lora import lora_airtime, rx_windows
        tx_s = lora_airtime(lora, min(m, first))
        rest = m - first
        while rest > 0:
            tx_s += lora_airtime(lora, min(rest, nxt))
            rest -= nxt
        rx_s = 0.0
        for w in rx_windows(lora):
            rx_s += w[2]
        lc.listen_seconds = rx_s
    else:
        tx_s = tx * 8.0 / rate
        rx_s = rx * 8.0 / rate
    fixed_s = packets * pk["fixed_seconds"]
    if msg.get("replies_acked"):
        # each reply packet is a link frame like a sent one, roles reversed: the node listens
        # through its contention, preamble and SIFS (fixed_seconds) and transmits its link ACK
        ex = msg["extra_packets"]
        tx += ex * pk["ack_bytes"]
        fixed_s += ex * pk["fixed_seconds"]
        if not lora:
            tx_s = tx * 8.0 / rate
    lc.message_bytes = m
    lc.packets = packets
    lc.tx_bytes = tx
    lc.rx_bytes = rx
    lc.tx_seconds = tx_s
    lc.seconds = tx_s + rx_s + fixed_s
    lc.joules = tx_s * radio["tx_power"] + (rx_s + fixed_s) * radio["rx_power"]
