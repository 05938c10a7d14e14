"""LoRaWAN regional rules at their boundaries: the FRMPayload limit of each profile's data rate,
the 400 ms uplink dwell time of US915 and AS923 (AS923's with either payload table), and whether
the gateway can send a plan's deltas (EU868: RX1 on the uplink's 1 % sub-band, RX2 on the 10 %
one, both shared; US915: no duty cycle, one transmitter, RX1 on the 500 kHz downlink channels;
AS923: no duty cycle priced, RX1 on the uplink's channel, held to the dwell time)."""

from __future__ import annotations

import copy
import tomllib

import pytest

from aggregator.cli import main
from aggregator.lab import energy
from aggregator.lab.linkquery import describe
from edge.cost import LinkCost
from edge.lora import lora_airtime
from edge.regions import UPLINK_DWELL_S
from edge.profile import ProfileError, find_profile, load_profile, validate

LORAWAN = {"lorawan-eu868-sf7": 242, "lorawan-eu868-sf12": 51, "lorawan-us915-sf7": 242, "lorawan-us915-sf10": 11,
           "lorawan-as923-sf7": 242}


def _raw(name: str) -> dict:
    with open(find_profile(name), "rb") as f:
        return tomllib.load(f)


def _with(name: str, max_bytes: int, coding_rate: int | None = None, sf: int | None = None,
          dwell: object = None) -> dict:
    """The raw profile with another max_bytes (and coding rate, spreading factor, AS923
    uplink_dwell_time), validated under its own name."""
    raw = copy.deepcopy(_raw(name))
    raw["message"]["max_bytes"]["value"] = max_bytes
    if coding_rate is not None:
        raw["lora"]["coding_rate"]["value"] = coding_rate
    if sf is not None:
        raw["lora"]["spreading_factor"]["value"] = sf
        raw["lora"]["low_data_rate_optimize"] = sf >= 11
    if dwell is not None:
        raw["lora"]["uplink_dwell_time"] = dwell
    return validate(raw, f"{name}.toml")


# ------------------------------------------------------------------ payload limit per data rate

@pytest.mark.parametrize(("name", "limit"), sorted(LORAWAN.items()))
def test_max_bytes_may_be_the_data_rates_limit_and_not_one_byte_more(name: str, limit: int) -> None:
    assert load_profile(name)["message"]["max_bytes"] == limit
    assert _with(name, limit)["message"]["max_bytes"] == limit
    with pytest.raises(ProfileError) as e:
        _with(name, limit + 1)
    msg = str(e.value)
    assert "\n" not in msg and f": message.max_bytes: {limit + 1} B exceeds the {limit} B FRMPayload" in msg


# ------------------------------------------------------------------ US915 dwell time

def test_a_us915_profile_whose_longest_packet_outlasts_400_ms_is_refused() -> None:
    """At CR 4/6 (not LoRaWAN's 4/5) SF7/125 kHz carries 211 B of PHY payload in 395.5 ms and
    212 B in 401.7 ms: max_bytes 198 (+13) passes, 199 is refused though under the 242 B limit."""
    lora = dict(load_profile("lorawan-us915-sf7")["lora"], coding_rate=2)
    assert lora_airtime(lora, 211) == pytest.approx(0.39552) and lora_airtime(lora, 212) > 0.4
    assert _with("lorawan-us915-sf7", 198, coding_rate=2)["message"]["max_bytes"] == 198
    with pytest.raises(ProfileError, match=r"^lorawan-us915-sf7\.toml: message\.max_bytes: a 212 B packet takes "
                                           r"401\.7 ms on air, over the 400 ms uplink dwell time of US915$"):
        _with("lorawan-us915-sf7", 199, coding_rate=2)


def test_eu868_has_no_dwell_time() -> None:
    """EU863-870 limits airtime by duty cycle only (Regional Parameters 1.0.2rB §2.1.3): a 255 B
    SF7 packet at CR 4/8 (627 ms) is priced, as is every SF12 packet (over 1 s)."""
    p = _with("lorawan-eu868-sf7", 242, coding_rate=4)
    assert LinkCost(p, 242).tx_seconds > 0.4
    assert LinkCost(_with("lorawan-eu868-sf12", 51, coding_rate=4), 51).tx_seconds > 3.0
    assert UPLINK_DWELL_S == {"US915": 0.4, "AS923": 0.4}


def test_the_link_query_says_each_packets_airtime_against_the_dwell_time(capsys) -> None:
    assert main(["profile", "--link", "lorawan-us915-sf7", "--bytes", "242"]) == 0
    out = capsys.readouterr().out
    assert "255 B, 399.6 ms on air (within US915's 400 ms uplink dwell time)" in out
    assert main(["profile", "--link", "lorawan-us915-sf10", "--bytes", "11"]) == 0
    assert "24 B, 370.7 ms on air (within US915's 400 ms uplink dwell time)" in capsys.readouterr().out
    assert main(["profile", "--link", "lorawan-as923-sf7", "--bytes", "242"]) == 0
    out = capsys.readouterr().out
    assert "255 B, 399.6 ms on air (within AS923's 400 ms uplink dwell time)" in out
    assert "RX2 window at SF10, 7 symbols = 57.3 ms" in out
    assert all("dwell" not in ln for ln in describe(_with(AS, 242, coding_rate=4, dwell=False), 242))
    assert main(["profile", "--link", "lorawan-eu868-sf12", "--bytes", "51"]) == 0
    out = capsys.readouterr().out
    assert "64 B, 2793.5 ms on air\n" in out and "dwell" not in out
    # a what-if the profile check would refuse is flagged, not priced as if it arrived
    p = load_profile("lorawan-us915-sf7")
    p["lora"] = dict(p["lora"], coding_rate=4)
    assert any("OVER US915's 400 ms uplink dwell time" in ln for ln in describe(p, 242))


# ------------------------------------------------------------------ AS923 dwell time

AS = "lorawan-as923-sf7"
# RegionAS923.h: MaxPayloadOfDatarateDwell1AS923 (DR2..DR5 at SF10..SF7) and
# MaxPayloadOfDatarateDwell0AS923 (DR0..DR5 at SF12..SF7), all at 125 kHz
AS923_DWELL1 = {10: 11, 9: 53, 8: 125, 7: 242}
AS923_DWELL0 = {12: 51, 11: 51, 10: 115, 9: 115, 8: 242, 7: 242}


@pytest.mark.parametrize(("sf", "limit"), sorted(AS923_DWELL1.items()))
def test_as923_under_its_dwell_time_takes_the_dwell_1_table_and_not_one_byte_more(sf: int, limit: int) -> None:
    assert _with(AS, limit, sf=sf)["message"]["max_bytes"] == limit
    with pytest.raises(ProfileError, match=rf": message\.max_bytes: {limit + 1} B exceeds the {limit} B FRMPayload "
                                           rf"AS923 allows at SF{sf}/125 kHz$"):
        _with(AS, limit + 1, sf=sf)


@pytest.mark.parametrize(("sf", "limit"), sorted(AS923_DWELL0.items()))
def test_as923_without_its_dwell_time_takes_the_dwell_0_table_and_not_one_byte_more(sf: int, limit: int) -> None:
    p = _with(AS, limit, sf=sf, dwell=False)
    assert p["message"]["max_bytes"] == limit and p["lora"]["uplink_dwell_time"] is False
    with pytest.raises(ProfileError, match=rf": message\.max_bytes: {limit + 1} B exceeds the {limit} B FRMPayload"):
        _with(AS, limit + 1, sf=sf, dwell=False)


def test_as923_dr0_and_dr1_need_the_dwell_time_lifted() -> None:
    """SF12 and SF11 carry nothing under the 400 ms dwell time (LoRaMac-node: payload 0, lowest
    data rate AS923_DWELL_LIMIT_DATARATE = DR2)."""
    for sf in (12, 11):
        with pytest.raises(ProfileError, match=rf"lora\.spreading_factor: SF{sf} at 125 kHz is no AS923 uplink data "
                                               r"rate under its 400 ms dwell time \(uplink_dwell_time = false lifts it\)$"):
            _with(AS, 11, sf=sf)
        assert _with(AS, 51, sf=sf, dwell=False)["lora"]["spreading_factor"] == sf


def test_an_as923_profile_whose_longest_packet_outlasts_400_ms_is_refused_unless_the_dwell_time_is_off() -> None:
    """The US915 boundary on AS923's channels: at CR 4/6 a 211 B PHY payload takes 395.5 ms and
    212 B 401.7 ms, so max_bytes 198 (+13) passes and 199 is refused though under 242 B; with
    uplink_dwell_time = false the same packet (and 242 B at CR 4/8, 627 ms) is priced."""
    assert _with(AS, 198, coding_rate=2)["message"]["max_bytes"] == 198
    with pytest.raises(ProfileError, match=r"^lorawan-as923-sf7\.toml: message\.max_bytes: a 212 B packet takes "
                                           r"401\.7 ms on air, over the 400 ms uplink dwell time of AS923$"):
        _with(AS, 199, coding_rate=2)
    assert _with(AS, 199, coding_rate=2, dwell=False)["message"]["max_bytes"] == 199
    assert LinkCost(_with(AS, 242, coding_rate=4, dwell=False), 242).tx_seconds > 0.4


def test_uplink_dwell_time_is_an_as923_setting_and_a_boolean() -> None:
    with pytest.raises(ProfileError, match=r"lora\.uplink_dwell_time: only AS923 sets its dwell time "
                                           r"\(US915's is fixed\)$"):
        _with("lorawan-us915-sf7", 242, dwell=False)
    with pytest.raises(ProfileError, match=r"lora\.uplink_dwell_time: only AS923 sets its dwell time"):
        _with("lorawan-eu868-sf7", 242, dwell=True)
    with pytest.raises(ProfileError, match=r"lora\.uplink_dwell_time: must be true or false$"):
        _with(AS, 242, dwell=1)
    raw = copy.deepcopy(_raw(AS))
    del raw["lora"]["region"]
    with pytest.raises(ProfileError, match=r"lora\.region: must be one of: AS923, EU868, US915, got None$"):
        validate(raw, f"{AS}.toml")


# ------------------------------------------------------------------ the gateway's downlink

def _gw(name: str, log: energy.RunLog, interval: float) -> dict:
    return energy.budget(log, load_profile(name), interval, 2400.0, 3.0)["gateway"]


def _lines(name: str, log: energy.RunLog, interval: float) -> str:
    return "\n".join(energy.gateway_lines(_gw(name, log, interval), interval))


EPS = 1e-9


def test_rx1_just_inside_and_just_outside_the_1_percent_limit() -> None:
    log = energy.log_planned(1000, 5, "sq", 10, nodes=10)
    shortest = _gw("lorawan-eu868-sf7", log, 60.0)["min_interval_s"]
    assert shortest == pytest.approx(973.6, abs=0.05)
    assert _gw("lorawan-eu868-sf7", log, shortest * (1 + EPS))["ok"]
    assert not _gw("lorawan-eu868-sf7", log, shortest * (1 - EPS))["ok"]
    assert "(OK)" in _lines("lorawan-eu868-sf7", log, shortest * (1 + EPS))


def test_rx2_just_inside_and_just_outside_the_10_percent_limit() -> None:
    """SF12 uplinks (RX1 and RX2 both SF12): RX2's 10 % band serves down to a tenth of RX1's
    shortest interval, not below."""
    log = energy.log_planned(100, 5, "sq", 2, nodes=2)
    gw = _gw("lorawan-eu868-sf12", log, 600.0)
    r2 = gw["rx2"]["min_interval_s"]
    assert r2 == pytest.approx(gw["min_interval_s"] / 10)
    inside, outside = _gw("lorawan-eu868-sf12", log, r2 * (1 + EPS)), _gw("lorawan-eu868-sf12", log, r2 * (1 - EPS))
    assert not inside["ok"] and inside["rx2"]["ok"] and not outside["rx2"]["ok"]
    assert "(it can)" in _lines("lorawan-eu868-sf12", log, r2 * (1 + EPS))


def test_rx1_and_rx2_together_serve_what_neither_does_alone() -> None:
    """SF7, 10 nodes, T = 10 (S+Q): RX1 alone needs 973.6 s, RX2 alone 3,221 s; a share x of the
    deltas in RX1 fits when 0.01 I / 9.736 s + 0.10 I / 322.1 s >= 1: from 747.6 s."""
    log = energy.log_planned(1000, 5, "sq", 10, nodes=10)
    gw = _gw("lorawan-eu868-sf7", log, 60.0)
    a1, a2 = gw["airtime_s_max"], gw["rx2"]["airtime_s_max"]
    both = gw["both_min_interval_s"]
    assert both == pytest.approx(1 / (0.01 / a1 + 0.10 / a2)) and both == pytest.approx(747.6, abs=0.05)
    assert both < gw["min_interval_s"] < gw["rx2"]["min_interval_s"]
    text = _lines("lorawan-eu868-sf7", log, 60.0)
    assert "the gateway cannot serve this plan at all; the shortest interval that works is 747.6 s" in text
    just_in = _lines("lorawan-eu868-sf7", log, both * (1 + EPS))
    assert "RX1 and RX2 together (each delta in whichever band has room): it can" in just_in
    assert "cannot serve this plan at all" in _lines("lorawan-eu868-sf7", log, both * (1 - EPS))


def test_us915_gateway_has_no_duty_cycle_but_one_transmitter_and_says_the_dwell_time() -> None:
    """US915 RX1 at DR13 (SF7/500 kHz) for SF7 uplinks: 242 B per downlink, 99.9 ms for a full one.
    The gateway may transmit all the time, not more: the plan fits down to the busiest round's
    airtime as interval."""
    log = energy.log_planned(1000, 5, "sq", 10, nodes=10)
    gw = _gw("lorawan-us915-sf7", log, 60.0)
    assert gw["duty_cycle"] is None and gw["allowed"] == 1.0 and gw["ok"] and gw["rx1"] == "SF7/500 kHz"
    assert gw["longest_s"] == pytest.approx(0.099904) and gw["dwell_s"] == 0.4
    a = gw["airtime_s_max"]
    assert _gw("lorawan-us915-sf7", log, a * (1 + EPS))["ok"] and not _gw("lorawan-us915-sf7", log, a * (1 - EPS))["ok"]
    text = _lines("lorawan-us915-sf7", log, a * (1 - EPS))
    assert "against 100 % (no duty cycle" in text and "the gateway CANNOT serve this plan" in text
    assert "US915's 400 ms dwell time binds the uplinks" in text and "RX2" not in text


def test_us915_downlinks_are_priced_at_the_rx1_data_rate() -> None:
    """A DR0 (SF10/125 kHz, 11 B) node hears its delta at DR10 (SF10/500 kHz, 242 B per downlink):
    a 600 B delta is three downlinks of 242 + 242 + 116 B at a quarter of the uplink's symbol time."""
    p = load_profile("lorawan-us915-sf10")
    rx1 = energy.rx1_downlink(p)
    assert rx1["lora"]["bandwidth"] == 500e3 and rx1["lora"]["spreading_factor"] == 10
    assert rx1["message"]["max_bytes"] == 242 and rx1["packet"]["first_payload_bytes"] == 255
    dn = energy.downlink_energy(p, 600)
    parts = [lora_airtime(rx1["lora"], m + 13) for m in (242, 242, 116)]
    assert dn.rx_j == pytest.approx(sum(parts) * p["radio"]["rx_power"])
    log = energy.log_planned(1000, 2, "sq", 10, nodes=10)
    b = energy.budget(log, p, 600.0, 2400.0, 3.0)
    assert b["down_max_bytes"] == 242 and b["max_message_bytes"] == 11
    assert energy.rx1_downlink(load_profile("lorawan-eu868-sf7")) == load_profile("lorawan-eu868-sf7")


def test_as923_gateway_has_no_duty_cycle_priced_and_holds_its_downlinks_to_the_dwell_time() -> None:
    """AS923 SF7: RX1 on the uplink's channel at DR5, 242 B per downlink (399.6 ms for a full
    one, within 400 ms); no duty cycle priced, so one transmitter's time is the limit, as in
    US915; RX2 (SF10, same transmitter) adds nothing and is not priced."""
    log = energy.log_planned(1000, 5, "sq", 10, nodes=10)
    gw = _gw(AS, log, 60.0)
    assert gw["duty_cycle"] is None and gw["allowed"] == 1.0 and gw["ok"] and gw["rx1"] == "SF7/125 kHz"
    assert gw["rx2"] is None and gw["region"] == "AS923"
    assert gw["longest_s"] == pytest.approx(0.399616) and gw["dwell_s"] == 0.4 and gw["dwell_ok"]
    a = gw["airtime_s_max"]
    assert a == pytest.approx(_gw("lorawan-eu868-sf7", log, 60.0)["airtime_s_max"])  # the same SF7/125 kHz packets
    assert _gw(AS, log, a * (1 + EPS))["ok"] and not _gw(AS, log, a * (1 - EPS))["ok"]
    text = _lines(AS, log, a * (1 - EPS))
    assert "against 100 % (no duty cycle" in text and "the gateway CANNOT serve this plan" in text
    assert ("the longest downlink packet takes 399.6 ms, within AS923's 400 ms dwell time, which binds the "
            "gateway's RX1 downlinks") in text and "RX2" not in text and "500 kHz" not in text


def test_as923_dr2_downlinks_take_the_dwell_0_limit_and_outlast_the_dwell_time(capsys, tmp_path) -> None:
    """An SF10 node under the dwell time sends 11 B but is sent up to 115 B per downlink (the
    DownlinkDwellTime = 0 limit a device enforces, RP002-1.0.5 §3.10.6): a 128 B PHY payload at
    SF10 takes 1,231 ms, over the 400 ms a gateway bound by the dwell time may send; 600 B of delta
    is six downlinks (5 x 115 + 25). `profile` says so."""
    p = _with(AS, 11, sf=10)
    rx1 = energy.rx1_downlink(p)
    assert rx1["message"]["max_bytes"] == 115 and rx1["lora"]["spreading_factor"] == 10
    assert rx1["lora"]["bandwidth"] == 125e3 and rx1["packet"]["first_payload_bytes"] == 128
    dn = energy.downlink_energy(p, 600)
    parts = [lora_airtime(rx1["lora"], m + 13) for m in (115,) * 5 + (25,)]
    assert dn.rx_j == pytest.approx(sum(parts) * p["radio"]["rx_power"])
    log = energy.log_planned(1000, 2, "sq", 10, nodes=2)
    b = energy.budget(log, p, 3600.0, 2400.0, 3.0)
    gw = b["gateway"]
    assert b["down_max_bytes"] == 115 and b["max_message_bytes"] == 11
    assert gw["longest_s"] == pytest.approx(lora_airtime(rx1["lora"], 128)) and gw["longest_s"] > 0.4
    assert not gw["dwell_ok"]
    text = "\n".join(energy.gateway_lines(gw, 3600.0))
    assert "OVER AS923's 400 ms dwell time" in text and "send smaller deltas or use a faster data rate" in text
    # the shipped SF7 profile is its own RX1 profile (242 B both ways)
    assert energy.rx1_downlink(load_profile(AS)) == load_profile(AS)
    # where the network lifted the dwell time, nothing holds the downlinks to it
    free = energy.budget(log, _with(AS, 115, sf=10, dwell=False), 3600.0, 2400.0, 3.0)["gateway"]
    assert free["dwell_s"] is None and free["dwell_ok"] is None and free["longest_s"] is None
    assert "dwell" not in "\n".join(energy.gateway_lines(free, 3600.0))
