# LoRa time on air (Semtech AN1200.13 "LoRa Modem Designer's Guide"; the same
# formula as LoRaMac-node sx1276.c SX1276GetTimeOnAir). Runs on MicroPython and CPython.
#
# `lora` is the normalised "lora" table of a cost profile (edge/profile.py):
#   spreading_factor (6..12), bandwidth (Hz), coding_rate (1..4 for 4/5..4/8),
#   preamble_symbols, explicit_header, crc, low_data_rate_optimize (bools).
#
#   T_sym = 2^SF / BW
#   n_payload = 8 + max(ceil((8 PL - 4 SF + 28 + 16 CRC - 20 IH) / (4 (SF - 2 DE))) (CR + 4), 0)
#   T = (n_preamble + 4.25) T_sym + n_payload T_sym
#
# with IH = 1 for implicit header, DE = 1 with low data rate optimisation.

MAX_PHY_PAYLOAD = 255  # bytes; LoRaMac-node LoRaMac.c LORAMAC_PHY_MAXPAYLOAD
# LoRaMac-node sx1276.c sets LowDatarateOptimize for BW125/SF11-12 and BW250/SF12:
# exactly the settings whose symbol time 2^SF/BW exceeds 16 ms
LDRO_SYMBOL_S = 0.016


def check_params(lora, packet=None):
    """Check a lora table (numbers already whole); make SF, CR, preamble ints in place.

    packet, if given, is a normalised packet table whose packets must fit one LoRa
    PHY payload. Returns None, or (dotted field, problem) for the first bad field.
    """
    for k in ("spreading_factor", "coding_rate", "preamble_symbols"):
        lora[k] = int(lora[k])
    sf = lora["spreading_factor"]
    if not 6 <= sf <= 12:
        return ("lora.spreading_factor", "must be 6..12, got %d" % sf)
    if not 1 <= lora["coding_rate"] <= 4:
        return ("lora.coding_rate", "must be 1..4 (CR 4/5..4/8), got %d" % lora["coding_rate"])
    if symbol_time(lora) > LDRO_SYMBOL_S and not lora["low_data_rate_optimize"]:
        return ("lora.low_data_rate_optimize", "must be true when 2^SF/BW exceeds 16 ms")
    for p in ("first", "next") if packet else ():
        phy = packet[p + "_payload_bytes"] + packet[p + "_overhead_bytes"]
        if phy > MAX_PHY_PAYLOAD:
            return ("packet.%s_payload_bytes" % p, "with %s_overhead_bytes %g B exceeds the %d B LoRa PHY payload"
                    % (p, phy, MAX_PHY_PAYLOAD))
    return None


def symbol_time(lora):
    """Seconds per LoRa symbol, 2^SF / BW."""
    return (1 << int(lora["spreading_factor"])) / float(lora["bandwidth"])


def payload_symbols(lora, phy_payload_bytes):
    """Symbols after the preamble (header + payload + CRC) for a PHY payload of PL bytes.

    A fractional byte count is rounded up (the radio sends whole bytes).
    """
    pl = phy_payload_bytes
    if pl != pl or pl < 0:
        raise ValueError("lora: PHY payload must be >= 0 bytes, got %r" % (pl,))
    if pl != int(pl):
        pl = int(pl) + 1
    pl = int(pl)
    if pl > MAX_PHY_PAYLOAD:
        raise ValueError("lora: PHY payload of %d B exceeds %d B" % (pl, MAX_PHY_PAYLOAD))
    sf = int(lora["spreading_factor"])
    cr = int(lora["coding_rate"])
    ih = 0 if lora["explicit_header"] else 1
    crc = 1 if lora["crc"] else 0
    de = 1 if lora["low_data_rate_optimize"] else 0
    num = 8 * pl - 4 * sf + 28 + 16 * crc - 20 * ih
    den = 4 * (sf - 2 * de)
    blocks = (num + den - 1) // den if num > 0 else 0  # integer ceil, clamped at 0
    return 8 + blocks * (cr + 4)


def lora_airtime(lora, phy_payload_bytes):
    """Time on air in seconds of one LoRa packet carrying phy_payload_bytes."""
    n = payload_symbols(lora, phy_payload_bytes)
    return (int(lora["preamble_symbols"]) + 4.25 + n) * symbol_time(lora)


def duty_cycle_off_time(airtime, duty_cycle):
    """Seconds the sub-band stays closed after a packet of `airtime` s under `duty_cycle`.

    ETSI EN 300 220 / LoRaMac-node: a band with duty cycle d is closed for t (1/d - 1)
    after a transmission of t seconds (99 t at 1 %).
    """
    if not (0 < duty_cycle <= 1):
        raise ValueError("lora: duty_cycle must be in (0, 1], got %r" % (duty_cycle,))
    return airtime * (1.0 / duty_cycle - 1.0)


def rx_window_symbols(sf, bandwidth, min_symbols, max_error_s):
    """Symbols a class A receive window listens when no downlink comes (LoRaMac-node
    RegionCommonComputeRxWindowParameters): max(ceil(((2 min - 8) T_sym + 2 err) / T_sym), min)."""
    ts = (1 << sf) / float(bandwidth)
    x = ((2 * min_symbols - 8) * ts + 2 * max_error_s) / ts
    n = int(x)
    if n < x:
        n += 1
    return n if n > min_symbols else int(min_symbols)


def rx_windows(lora):
    """((SF, symbols, seconds) of RX1, of RX2) after one uplink with no downlink, or () when
    the profile does not model them. RX1 at the uplink's SF (RX1DROffset 0), RX2 at rx2_sf,
    both at rx_bandwidth when the profile gives one (US915), else the uplink's."""
    if not lora.get("rx2_spreading_factor"):
        return ()
    bw = lora.get("rx_bandwidth") or lora["bandwidth"]  # US915 answers on 500 kHz channels
    out = ()
    for sf in (int(lora["spreading_factor"]), int(lora["rx2_spreading_factor"])):
        n = rx_window_symbols(sf, bw, lora["min_rx_symbols"], lora["max_rx_error"])
        out += ((sf, n, n * (1 << sf) / float(bw)),)
    return out
