"""Energy budgets per node: radio energy per round and in total, LoRa duty cycle, battery life.

Input is either a run log (a `simulate` output directory, or the gateway's JSON-lines
metrics log from `serve`) or a planned job (d, rounds, scheme, T). Every frame is priced
under a link cost profile by `edge.cost.LinkCost`, the same model the edges' CAT uses:

* uplink (the node's update frame): transmit time x tx power, plus receiving the link
  ACKs and transport ACKs (and the per-packet fixed time: backoff, CCA, turnaround) at rx power;
* downlink (the model delta, or snapshot, the node must receive each round): the same
  link model with the roles swapped: the data packets' airtime and per-packet fixed time at
  rx power, and the node's link ACKs at tx power.

Why the downlink counts: a node that sends 20 bytes but must receive a 2 kB delta each
round spends most of its radio energy listening. Only the radio is counted here (not the MCU),
plus an optional sleep current between rounds; with --board the whole board is counted too
(aggregator/lab/boardbudget.py, which adds those options to this command).

`cat-aggregator profile` prints the budget and writes a table, a plot of cumulative
energy against loss, and report.md.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aggregator.errors import UserError
from aggregator.gateway.metrics import read_log
from aggregator.gateway.wire import delta_frame_length, snapshot_frame_length
from aggregator.lab import reports, results
from aggregator.lab.cliargs import ArgumentError, add_fmt_arg, fmt_code
from aggregator.lab.pricing import lorawan_region, messages, profile_dict
from edge.cat import SCHEME_IDENTITY, scheme_id
from edge.cost import LinkCost
from edge.frame import frame_length
from edge.lora import LDRO_SYMBOL_S
from edge.regions import AS923_NO_DWELL_MAX, uplink_dwell_s
from edge.downwalk import walk_down


class BudgetError(UserError, ValueError):
    """A run log, planned job or profile no energy budget can be made from (a paper profile,
    a radio without power figures, a log without updates, T outside 1..d)."""


# ------------------------------------------------------------------------------ run logs


@dataclass
class RunLog:
    """What a budget needs from a run: per (round, node) uplink frame bytes (0 = none sent),
    per round downlink bytes, and the loss at each round's model (NaN if unknown)."""

    frame_bytes: np.ndarray          # R x n, int
    T: np.ndarray                    # R x n, int
    down_bytes: np.ndarray           # R, int (0 = no downlink counted)
    loss: np.ndarray                 # R + 1 (model before round r; last = final), NaN if unknown
    d: int | None
    source: str
    nodes: list = field(default_factory=list)
    f_star: float | None = None
    notes: list = field(default_factory=list)
    compute_s: np.ndarray | None = None  # R x n seconds the board measured (telemetry), NaN if unknown

    @property
    def rounds(self) -> int:
        return int(self.frame_bytes.shape[0])


def log_from_sim(path: Path, downlink: str = "delta") -> RunLog:
    """A `simulate` output directory (`results.load`; RunLogError when it is not one)."""
    return log_from_result(results.load(path), str(path), downlink)


def log_from_result(run: results.SimResult, source: str, downlink: str = "delta") -> RunLog:
    """A simulated run (saved or in memory) as a run log: frames, T, downlink bytes, loss."""
    d = int(run.problem["dim"])
    fmt = int(run.config.get("fmt", 0))
    down = np.array([_down(downlink, d, int(run.down_entries[r]), fmt, r) for r in range(run.rounds)],
                    dtype=np.int64)
    return RunLog(run.frame_bytes, run.T, down, run.loss, d, source, list(range(run.T.shape[1])), run.f_star)


def _down(downlink: str, d: int | None, entries: int, fmt: int, rnd: int) -> int:
    if downlink == "none" or d is None:
        return 0
    if downlink == "snapshot":
        return snapshot_frame_length(d, 0, rnd + 1)
    return delta_frame_length(d, entries, fmt, 0, rnd)


def log_from_metrics(path: Path, d: int | None = None, fmt: int = 0, downlink: str = "delta") -> RunLog:
    """The gateway's JSON-lines metrics log (aggregator/gateway/metrics.py): `update` events give each
    node's wire bytes and T per round, `round` events the delta entries and the mean loss."""
    ups: list[dict] = []
    rounds: dict[int, dict] = {}
    for ev in read_log(path):
        if ev.get("event") == "update":
            ups.append(ev)
        elif ev.get("event") == "round":
            rounds[int(ev["round"])] = ev
    if not ups:
        raise BudgetError(f"{path}: no 'update' events")
    nodes = sorted({int(e["node"]) for e in ups})
    col = {nd: i for i, nd in enumerate(nodes)}
    r0 = min(int(e["round"]) for e in ups)
    R = max(int(e["round"]) for e in ups) - r0 + 1
    fb = np.zeros((R, len(nodes)), dtype=np.int64)
    T = np.zeros((R, len(nodes)), dtype=np.int64)
    comp = np.full((R, len(nodes)), np.nan)
    for e in ups:
        fb[int(e["round"]) - r0, col[int(e["node"])]] = int(e["bytes"])
        T[int(e["round"]) - r0, col[int(e["node"])]] = int(e.get("T") or 0)
        if e.get("compute_s") is not None:  # the board's own measure (telemetry)
            comp[int(e["round"]) - r0, col[int(e["node"])]] = float(e["compute_s"])
    loss = np.full(R + 1, np.nan)
    down = np.zeros(R, dtype=np.int64)
    notes = []
    for rnd, ev in rounds.items():
        i = rnd - r0
        if 0 <= i < R:
            if ev.get("loss") is not None:
                loss[i] = float(ev["loss"])  # mean of the nodes' telemetry losses at that round's model
            down[i] = _down(downlink, d, int(ev.get("delta_entries", 0)), fmt, rnd)
    if d is None and downlink != "none":
        notes.append("downlink not counted: pass --d to price the model deltas")
    return RunLog(fb, T, down, loss, d, str(path), nodes, None, notes, comp)


def log_planned(d: int, rounds: int, scheme: str, T: int, nodes: int = 1, fmt: int = 0,
                downlink: str = "delta", telemetry: bool = False, job: int = 0) -> RunLog:
    """A planned job: every node sends T entries every round (identity: T = d). The downlink
    delta is priced at its worst case, min(d, nodes x T) entries (no overlap between nodes)."""
    sch = scheme_id(scheme)
    if sch == SCHEME_IDENTITY:
        T = d
    if not 1 <= T <= d:
        raise BudgetError(f"T must be in 1..d={d}, got {T}")
    fb = np.zeros((rounds, nodes), dtype=np.int64)
    for r in range(rounds):
        for k in range(nodes):
            fb[r, k] = frame_length(d, T, sch, fmt, telemetry, job, k, r)
    ent = min(d, nodes * T)
    down = np.array([_down(downlink, d, ent, fmt, r) for r in range(rounds)], dtype=np.int64)
    return RunLog(fb, np.full((rounds, nodes), T, dtype=np.int64), down, np.full(rounds + 1, np.nan),
                  d, f"planned: d={d}, {rounds} rounds, scheme {scheme}, T={T}, {nodes} node(s)",
                  list(range(nodes)))


# ------------------------------------------------------------------------------ budget


def battery_joules(capacity_mah: float, voltage: float) -> float:
    """Energy of a battery: mAh x 3.6 (C per mAh) x V."""
    return capacity_mah * 3.6 * voltage


@dataclass
class FrameEnergy:
    """Radio energy and time of one message, split by who transmits."""

    tx_j: float
    rx_j: float
    airtime_s: float      # the node's own transmit time (what the duty cycle limits)
    radio_s: float        # time the radio is on for this message (tx + rx + fixed)


def uplink_energy(profile: dict, frame: int) -> FrameEnergy:
    """The node sends `frame` bytes: its packets at tx power, ACKs and fixed time at rx power."""
    out = FrameEnergy(0.0, 0.0, 0.0, 0.0)
    if frame <= 0:
        return out
    for m in messages(profile, frame):
        lc = LinkCost(profile, m)
        tx = lc.tx_seconds * profile["radio"]["tx_power"]
        out.tx_j += tx
        out.rx_j += lc.joules - tx
        out.airtime_s += lc.tx_seconds
        out.radio_s += lc.seconds
    return out


def downlink_energy(profile: dict, frame: int) -> FrameEnergy:
    """The node receives `frame` bytes: the packets' airtime and fixed time at rx power, its
    ACKs (the uplink model's rx part, reversed) at tx power. LoRa: at RX1's data rate
    (rx1_downlink: US915 answers on 500 kHz with that data rate's payload limit)."""
    out = FrameEnergy(0.0, 0.0, 0.0, 0.0)
    if frame <= 0:
        return out
    radio = profile["radio"]
    if profile.get("stack"):  # walked: the GETs and replies the client really exchanges
        w = walk_down(profile, frame)
        return FrameEnergy(w.tx_s * radio["tx_power"], (w.rx_s + w.idle_s) * radio["rx_power"], w.tx_s,
                           w.tx_s + w.rx_s + w.idle_s)
    profile = rx1_downlink(profile)  # US915: the gateway answers on a 500 kHz channel
    for m in messages(profile, frame):
        lc = LinkCost(profile, m)
        msg = profile["message"]
        frames = lc.packets + (msg["extra_packets"] if msg.get("replies_acked") else 0)  # its acked replies too
        fixed_s = frames * profile["packet"]["fixed_seconds"]
        ack_s = max(0.0, lc.seconds - lc.tx_seconds - fixed_s - lc.listen_seconds)  # windows carry it
        out.rx_j += (lc.tx_seconds + fixed_s) * radio["rx_power"]
        out.tx_j += ack_s * radio["tx_power"]
        out.airtime_s += ack_s
        out.radio_s += lc.seconds
    return out


def budget(log: RunLog, profile: dict, interval_s: float, capacity_mah: float, voltage: float,
           sleep_ua: float = 0.0) -> dict[str, Any]:
    """Per node: uplink/downlink tx/rx energy per round and total, airtime, duty-cycle
    headroom (profiles with a duty-cycle limit), battery life at one round per interval_s.

    Battery life = E_battery / (E_round / interval + P_sleep), E_round the node's mean
    radio energy per round it took part in (P_sleep = sleep current x voltage).
    """
    if profile["kind"] != "link":
        raise BudgetError(f"{profile['name']} is a paper model (bits/packets only): energy needs a link "
                          "profile with a radio")
    if profile["radio"]["tx_power"] <= 0:
        raise BudgetError(f"{profile['name']}: radio 'none' has no energy figures")
    dc = (profile.get("limits") or {}).get("duty_cycle")
    max_msg = profile["message"]["max_bytes"]
    R, n = log.frame_bytes.shape
    e_batt = battery_joules(capacity_mah, voltage)
    p_sleep = sleep_ua * 1e-6 * voltage
    down = [downlink_energy(profile, int(b)) for b in log.down_bytes]
    cache: dict[int, FrameEnergy] = {}
    nodes = []
    per_round_total = np.zeros((R, n))
    for k in range(n):
        up_tx = np.zeros(R)
        up_rx = np.zeros(R)
        air = np.zeros(R)
        radio_s = np.zeros(R)
        dn_tx = np.zeros(R)
        dn_rx = np.zeros(R)
        active = log.frame_bytes[:, k] > 0
        for r in range(R):
            fb = int(log.frame_bytes[r, k])
            if fb <= 0:
                continue
            fe = cache.get(fb)
            if fe is None:
                fe = cache[fb] = uplink_energy(profile, fb)
            up_tx[r], up_rx[r], air[r], radio_s[r] = fe.tx_j, fe.rx_j, fe.airtime_s, fe.radio_s
            dn_tx[r], dn_rx[r] = down[r].tx_j, down[r].rx_j
            radio_s[r] += down[r].radio_s
        tot = up_tx + up_rx + dn_tx + dn_rx
        per_round_total[:, k] = tot
        m = max(1, int(active.sum()))
        e_round = float(tot.sum()) / m
        p_avg = e_round / interval_s + p_sleep
        life_s = e_batt / p_avg if p_avg > 0 else math.inf
        node = {
            "node": log.nodes[k] if k < len(log.nodes) else k,
            "rounds": int(active.sum()),
            "frame_bytes_mean": float(log.frame_bytes[active, k].mean()) if active.any() else 0.0,
            "frame_bytes_max": int(log.frame_bytes[:, k].max()) if R else 0,
            "oversize_frames": int((log.frame_bytes[:, k] > max_msg).sum()),
            "uplink_tx_j_per_round": float(up_tx.sum()) / m,
            "uplink_rx_j_per_round": float(up_rx.sum()) / m,
            "downlink_rx_j_per_round": float(dn_rx[active].sum()) / m,
            "downlink_tx_j_per_round": float(dn_tx[active].sum()) / m,
            "energy_j_per_round": e_round,
            "energy_j_total": float(tot.sum()),
            "tx_j_total": float((up_tx + dn_tx).sum()),
            "rx_j_total": float((up_rx + dn_rx).sum()),
            "airtime_s_per_round": float(air.sum()) / m,
            "airtime_s_max": float(air.max()) if R else 0.0,
            "airtime_s_total": float(air.sum()),
            "radio_on_s_total": float(radio_s.sum()),
            "battery_life_days": life_s / 86400.0,
            "battery_rounds": e_batt / (e_round + p_sleep * interval_s) if e_round + p_sleep * interval_s > 0
            else math.inf,
        }
        if dc:
            a = node["airtime_s_max"]
            node["duty_cycle"] = dc
            node["duty_cycle_used"] = a / interval_s           # of the band's time, worst round
            node["duty_cycle_headroom"] = dc - a / interval_s  # > 0: the interval is allowed
            node["min_interval_s"] = a / dc
            node["headroom_factor"] = (dc * interval_s / a) if a > 0 else math.inf
        nodes.append(node)
    down_max = rx1_downlink(profile)["message"]["max_bytes"]  # US915: the RX1 downlink data rate's
    down_over = int((log.down_bytes > down_max).sum())
    gateway = gateway_downlink(profile, log, interval_s) if profile.get("lora") else None
    return {"profile": profile["name"], "interval_s": interval_s, "battery_j": e_batt,
            "battery_mah": capacity_mah, "voltage": voltage, "sleep_w": p_sleep, "duty_cycle": dc,
            "nodes": nodes, "per_round_j": per_round_total, "gateway": gateway,
            "down_bytes_mean": float(log.down_bytes.mean()) if R else 0.0,
            "down_oversize_rounds": down_over, "max_message_bytes": max_msg,
            "down_max_bytes": down_max}


def gateway_downlink(profile: dict, log: RunLog, interval_s: float) -> dict[str, Any]:
    """Can the gateway send every delta of the plan? Every node that sent in a round gets that
    round's downlink in its RX1 window. EU868: at the uplink's data rate on the uplink's sub-band,
    so the gateway transmits under the same duty-cycle limit (ETSI EN 300 220: the limit binds
    every transmitter, the gateway too); US915: on a 500 kHz downlink channel with no duty cycle,
    where its one transmitter's time is the limit. Busiest round's airtime over the interval.

    A downlink is priced as an uplink of the same size (LoRaWAN frames are the same; a downlink
    PHY carries no payload CRC, 2 B less). EU868 also prices every delta in RX2 (`rx2`: 869.525
    MHz, SF12, a 10 % band) and both windows shared (`both_min_interval_s`): the gateway may put
    each downlink in either band, so together they serve what neither serves alone. US915 says
    how long its longest downlink packet is (`longest_s`): the 400 ms dwell time binds the uplinks
    on 125 kHz channels, not the 500 kHz downlinks (`dwell_s`). AS923: no duty cycle priced (the
    profile's `[limits]` says otherwise), RX1 on the uplink's channel and data rate, so where local
    rules impose the 400 ms dwell time it binds the gateway's downlinks too: `longest_s` against
    `dwell_s`, `dwell_ok` (none with `[lora] uplink_dwell_time = false`)."""
    dc = profile["limits"]["duty_cycle"]
    rx1 = rx1_downlink(profile)
    worst = _busiest_downlink(rx1, log)
    allowed = dc or 1.0  # no duty cycle: one transmitter, one packet at a time
    out: dict[str, Any] = {"airtime_s_max": worst, "used": worst / interval_s, "allowed": allowed,
                           "ok": worst / interval_s <= allowed, "min_interval_s": worst / allowed,
                           "duty_cycle": dc, "region": lorawan_region(profile), "rx1": _rate(rx1["lora"]),
                           "rx2": None, "both_min_interval_s": None, "longest_s": None, "dwell_s": None,
                           "dwell_ok": None}
    rx2 = _eu868_rx2(profile)
    if rx2 is not None:
        w2 = _busiest_downlink(rx2, log)
        out["rx2"] = {"airtime_s_max": w2, "used": w2 / interval_s, "allowed": EU868_RX2_DUTY_CYCLE,
                      "ok": w2 / interval_s <= EU868_RX2_DUTY_CYCLE, "min_interval_s": w2 / EU868_RX2_DUTY_CYCLE}
        out["both_min_interval_s"] = _shared_min_interval(worst, dc, w2, EU868_RX2_DUTY_CYCLE)
    dwell = uplink_dwell_s(profile["lora"])  # AS923 with uplink_dwell_time = false: none
    if dwell is not None:
        out["longest_s"] = _longest_downlink(rx1, log)
        out["dwell_s"] = dwell
        out["dwell_ok"] = out["longest_s"] <= dwell
    return out


# EU868 RX2: 869.525 MHz, in ETSI EN 300 220-2's band g3 (869.4-869.65 MHz) with a 10 % duty cycle
# (LoRaMac-node RegionEU868.c: 869.4-869.65 MHz is band 3, RegionEU868.h EU868_BAND3 duty cycle 10,
# i.e. 10 %; EU868_RX_WND_2_FREQ 869525000); its default data rate DR0 (SF12/125 kHz, LoRaWAN
# Regional Parameters 1.0.2rB §2.1.7) carries at most 51 B of FRMPayload (MaxPayloadOfDatarateEU868[0]).
EU868_RX2_DUTY_CYCLE = 0.10
EU868_RX2_MAX_BYTES = 51.0
# US915 downlink data rates DR8..DR13 (SF12..SF7 at 500 kHz): largest FRMPayload without a repeater,
# LoRaWAN Regional Parameters 1.0.2rB table 15, LoRaMac-node RegionUS915.h
# MaxPayloadOfDatarateUS915[8..13] = {53, 129, 242, 242, 242, 242}; keyed by SF.
US915_DOWNLINK_MAX_BYTES = {12: 53.0, 11: 129.0, 10: 242.0, 9: 242.0, 8: 242.0, 7: 242.0}


def _at(profile: dict, sf: int, bw: float, max_bytes: float) -> dict:
    """The profile sending at SF/BW with max_bytes of FRMPayload per message (one packet each)."""
    lora = dict(profile["lora"], spreading_factor=sf, bandwidth=bw,
                low_data_rate_optimize=(1 << sf) / bw > LDRO_SYMBOL_S)
    room = max_bytes + profile["message"]["overhead_bytes"]
    return dict(profile, lora=lora, message=dict(profile["message"], max_bytes=max_bytes),
                packet=dict(profile["packet"], first_payload_bytes=room, next_payload_bytes=room))


def rx1_downlink(profile: dict) -> dict:
    """The profile as the gateway's RX1 downlinks go: US915 on its downlink channels' bandwidth
    (`[lora] rx_bandwidth`, 500 kHz: DR0 -> DR10, DR3 -> DR13 at RX1DROffset 0, the uplink's SF)
    with that data rate's payload limit; elsewhere the uplink's own data rate (RX1DROffset 0),
    in AS923 with the DownlinkDwellTime = 0 limit a device enforces on every downlink
    (RP002-1.0.5 §3.10.6: 115 B at DR2 where an uplink under the dwell time carries 11 B)."""
    lora = profile.get("lora") or {}
    region = lorawan_region(profile)
    sf = int(lora.get("spreading_factor") or 0)
    if region == "AS923":
        n = float(AS923_NO_DWELL_MAX[(sf, int(lora["bandwidth"] / 1000))])
        return profile if n == profile["message"]["max_bytes"] else _at(profile, sf, lora["bandwidth"], n)
    if region != "US915" or not lora.get("rx_bandwidth"):
        return profile
    return _at(profile, sf, lora["rx_bandwidth"], US915_DOWNLINK_MAX_BYTES[sf])


def _rate(lora: dict) -> str:
    """'SF7/500 kHz': the data rate a line names."""
    return f"SF{int(lora['spreading_factor'])}/{lora['bandwidth'] / 1e3:g} kHz"


def _shared_min_interval(a1: float, d1: float, a2: float, d2: float) -> float:
    """Shortest interval at which two bands with duty cycles d1, d2 serve a round together, the
    round's downlinks split between them (a share x takes a1 x of band 1, (1 - x) a2 of band 2):
    feasible when d1 I / a1 + d2 I / a2 >= 1."""
    if a1 <= 0 or a2 <= 0:
        return 0.0
    return 1.0 / (d1 / a1 + d2 / a2)


def _busiest_downlink(profile: dict, log: RunLog) -> float:
    """The gateway's airtime in the round whose downlinks take longest (one delta per sender)."""
    worst = 0.0
    air: dict[int, float] = {}  # downlink airtime per message size (a delta's size repeats)
    for r in range(log.rounds):
        senders = int((log.frame_bytes[r] > 0).sum())
        b = int(log.down_bytes[r])
        if senders and b > 0:
            if b not in air:
                air[b] = sum(LinkCost(profile, m).tx_seconds for m in messages(profile, b))
            worst = max(worst, senders * air[b])
    return worst


def _longest_downlink(profile: dict, log: RunLog) -> float:
    """Airtime of the longest single downlink packet of the plan (its largest message)."""
    sizes = [max(messages(profile, int(b))) for b in log.down_bytes if b > 0]
    return LinkCost(profile, max(sizes)).tx_seconds if sizes else 0.0


def _eu868_rx2(profile: dict) -> dict | None:
    """The EU868 profile at its RX2 data rate (SF12/125 kHz, 51 B per downlink), or None."""
    lora = profile.get("lora") or {}
    if lorawan_region(profile) != "EU868" or not lora.get("rx2_spreading_factor"):
        return None
    return _at(profile, int(lora["rx2_spreading_factor"]), lora["bandwidth"], EU868_RX2_MAX_BYTES)


# ------------------------------------------------------------------------------ CLI


def gateway_lines(gw: dict[str, Any], interval_s: float) -> list[str]:
    """What `profile` says about the gateway's downlink: RX1 under its limit; if RX1 cannot, RX2
    and both windows shared (EU868); which interval serves the plan when none does; US915's
    dwell time."""
    if gw["duty_cycle"]:
        limit = f"against {100 * gw['allowed']:.4g} % allowed"
        fix = "lengthen the interval to {:.4g} s or send less downlink"
    else:
        limit = "against 100 % (no duty cycle: one transmitter, one packet at a time)"
        fix = "lengthen the interval to {:.4g} s, send less downlink or add gateways"
    verdict = "OK" if gw["ok"] else "the gateway CANNOT serve this plan: " + fix.format(gw["min_interval_s"])
    lines = [f"gateway downlink: the busiest round takes {gw['airtime_s_max']:.4g} s of RX1 airtime ({gw['rx1']}), "
             f"{100 * gw['used']:.4g} % of the gateway's time {limit} ({verdict})"]
    r2 = gw["rx2"]
    if r2 is not None and not gw["ok"]:
        how = "it can" if r2["ok"] else f"it cannot either: lengthen the interval to {r2['min_interval_s']:.4g} s"
        lines.append(f"gateway downlink in RX2 instead (869.525 MHz, SF12, 51 B per downlink, "
                     f"{100 * r2['allowed']:g} % band): the busiest round takes {r2['airtime_s_max']:.4g} s, "
                     f"{100 * r2['used']:.4g} % of the gateway's time ({how})")
        both = gw["both_min_interval_s"]
        if not r2["ok"]:
            serves = ("it can" if both <= interval_s else
                      f"not at {interval_s:g} s: the gateway cannot serve this plan at all; the shortest "
                      f"interval that works is {both:.4g} s")
            lines.append(f"gateway downlink in RX1 and RX2 together (each delta in whichever band has room): "
                         f"{serves}")
    if gw["dwell_s"] is not None and gw["region"] == "AS923":
        within = "within" if gw["dwell_ok"] else "OVER"
        lines.append(f"gateway downlink dwell: the longest downlink packet takes {1e3 * gw['longest_s']:.4g} ms, "
                     f"{within} AS923's {1e3 * gw['dwell_s']:g} ms dwell time, which binds the gateway's RX1 "
                     "downlinks (the uplink's channel) where local rules impose it"
                     + ("" if gw["dwell_ok"] else ": there, send smaller deltas or use a faster data rate"))
    elif gw["dwell_s"] is not None:
        lines.append(f"gateway downlink dwell: the longest downlink packet takes {1e3 * gw['longest_s']:.4g} ms; "
                     f"{gw['region']}'s {1e3 * gw['dwell_s']:g} ms dwell time binds the uplinks on 125 kHz "
                     "channels (every priced uplink is within it), not the 500 kHz downlink channels "
                     "(DTS mode: a power density limit, no dwell time)")
    return lines


def _log_from_args(args: argparse.Namespace) -> RunLog:
    """The run log --log names (a simulate directory or a metrics .jsonl), or the planned job
    --d/--rounds/--scheme/--T describe."""
    fmt = fmt_code(args.fmt)
    if args.log:
        p = Path(args.log)
        if p.is_dir():
            return log_from_sim(p, args.downlink)
        if not p.exists():
            raise ArgumentError(f"{p}: no such run log")
        try:
            return log_from_metrics(p, args.d, fmt, args.downlink)
        except BudgetError:
            raise
        except (OSError, KeyError, TypeError, ValueError) as e:
            raise BudgetError(f"{p}: not a usable metrics log: {e}") from None
    if not (args.d and args.rounds and args.scheme):
        raise ArgumentError("give --log RUN, or a planned job: --d, --rounds, --scheme (and --T)")
    try:
        sparse = scheme_id(args.scheme) != SCHEME_IDENTITY
    except ValueError as e:
        raise ArgumentError(str(e)) from None
    if sparse and not args.T:
        raise ArgumentError("a planned sparse job needs --T (entries per update)")
    return log_planned(args.d, args.rounds, args.scheme, args.T or args.d, args.nodes, fmt, args.downlink)


def _cmd_profile(args: argparse.Namespace) -> int:
    if args.link and args.profile and args.link != args.profile:
        raise ArgumentError("give the profile once: --link or --profile")
    name = args.link or args.profile
    if args.block_table is not None:
        return _block_table(args, name)
    if not name:
        raise ArgumentError("give --profile NAME (or --link NAME --bytes N)")
    prof = profile_dict(name)
    if args.bytes is not None or args.link:
        from aggregator.lab.linkquery import describe, with_block_size
        if args.bytes is None:
            raise ArgumentError("--link asks about one message: give --bytes N")
        print("\n".join(describe(with_block_size(prof, args.block_size), args.bytes)))
        return 0
    if args.block_size is not None:
        raise ArgumentError("--block-size goes with --bytes (one message)")
    if not getattr(args, "board", None) and (getattr(args, "deep_sleep", None) is not None
                                             or getattr(args, "error_feedback", False)):
        raise ArgumentError("--deep-sleep prices a board's state file: give --board (and --battery)")
    log = _log_from_args(args)
    whole = None
    hook = getattr(args, "_whole_board", None)  # (prepare, report) from aggregator/lab/boardbudget.py
    if getattr(args, "board", None) and hook:
        whole = hook[0](args, log, prof)  # before anything is written: a bad option changes nothing
    # --deep-sleep SECONDS: a round lasts the board's awake time + SECONDS, not --interval
    interval = whole["interval_s"] if whole is not None else args.interval
    b = budget(log, prof, interval, args.battery_mah, args.voltage, args.sleep_ua)
    out = reports.out_dir(args.out, "profile")
    lines = [f"{log.source} under {prof['name']}: one round every {interval:g} s, "
             f"battery {args.battery_mah:g} mAh at {args.voltage:g} V = {b['battery_j']:.4g} J"
             + (f", sleep {args.sleep_ua:g} uA" if args.sleep_ua else "")]
    if log.down_bytes.any():
        lines.append(f"downlink ({args.downlink}): {b['down_bytes_mean']:.0f} B per round on average"
                     + (f"; {b['down_oversize_rounds']} round(s) over the link's {b['down_max_bytes']:.0f} B "
                        "message limit (costed as several packets)" if b["down_oversize_rounds"] else ""))
    gw = b["gateway"]
    if gw and gw["airtime_s_max"] > 0:
        lines += gateway_lines(gw, interval)
    for nd in b["nodes"]:
        s = (f"node {nd['node']}: {nd['rounds']} rounds, frame {nd['frame_bytes_mean']:.0f} B; per round "
             f"uplink tx {1e3 * nd['uplink_tx_j_per_round']:.4g} mJ + ack rx {1e3 * nd['uplink_rx_j_per_round']:.4g} mJ, "
             f"downlink rx {1e3 * nd['downlink_rx_j_per_round']:.4g} mJ + tx {1e3 * nd['downlink_tx_j_per_round']:.4g} mJ "
             f"= {1e3 * nd['energy_j_per_round']:.4g} mJ; total {nd['energy_j_total']:.4g} J; airtime "
             f"{1e3 * nd['airtime_s_per_round']:.4g} ms/round ({nd['airtime_s_total']:.4g} s total); "
             f"battery life {nd['battery_life_days']:.4g} days ({nd['battery_rounds']:.4g} rounds)")
        if "duty_cycle" in nd:
            ok = "OK" if nd["duty_cycle_headroom"] >= 0 else "VIOLATES the duty cycle"
            s += (f"; duty cycle: worst round uses {100 * nd['duty_cycle_used']:.4g} % of the band's time "
                  f"against {100 * nd['duty_cycle']:.4g} % allowed ({ok}, headroom x{nd['headroom_factor']:.3g}; "
                  f"shortest interval {nd['min_interval_s']:.4g} s)")
        if nd["oversize_frames"]:
            s += f"; {nd['oversize_frames']} frame(s) exceed the link's largest message"
        lines.append(s)
    tables: dict[str, str] = {}
    extra_plots: list[str] = []
    notes = ["Radio energy only (no MCU), LinkCost model of the profile; downlink priced "
             "with the link model reversed (data at rx power, the node's ACKs at tx power).",
             "Battery life = battery energy / (energy per round / interval + sleep power)."]
    if whole is None:
        lines.append("radio energy only: the battery life above leaves out the microcontroller, listening, "
                     "wake-up, sleep and self-discharge (give --board and --battery for the whole board)")
    for t in lines + log.notes:
        print(t)
    if whole is not None:
        w_lines, tables, extra_plots, w_notes = hook[1](whole, log.rounds, out)
        print(f"whole board: {whole['board']} with {whole['battery']}, listening as {whole['wait']}")
        for t in w_lines + w_notes:
            print(t)
        lines += [f"whole board: {whole['board']} with {whole['battery']}"] + w_lines
        notes = w_notes + notes
    cols = ["node", "rounds", "frame_bytes_mean", "uplink_tx_j_per_round", "uplink_rx_j_per_round",
            "downlink_rx_j_per_round", "downlink_tx_j_per_round", "energy_j_per_round", "energy_j_total",
            "airtime_s_per_round", "airtime_s_total", "battery_life_days", "battery_rounds"]
    if b["duty_cycle"]:
        cols += ["duty_cycle_used", "duty_cycle_headroom", "min_interval_s", "headroom_factor"]
    md = reports.write_table(b["nodes"], out, "budget", cols)
    cum = results.cumulative(b["per_round_j"])
    per_node = np.vstack([np.zeros(b["per_round_j"].shape[1]), np.cumsum(b["per_round_j"], axis=0)])
    loss = log.loss
    ylab = "F(x)"
    if log.f_star is not None:
        loss = loss - log.f_star
        ylab = "F(x) - f*"
    if not np.isfinite(loss).any():
        loss = np.arange(log.rounds + 1, dtype=float)
        ylab = "round"
    plots = reports.plot_energy(cum, loss, out, "energy", label="all nodes", ylabel=ylab,
                                per_node=per_node if per_node.shape[1] > 1 else None)
    reports.write_report(out, f"energy budget: {prof['name']}", reports.command_line(args), lines + log.notes,
                         {**tables, "Radio only, per node": md}, extra_plots + plots, notes=notes)
    print(f"wrote {out}")
    return 0


def _block_table(args: argparse.Namespace, name: str | None) -> int:
    """`profile --block-table SIZES [--link NAME]`: per-byte cost at every Block1 size."""
    from aggregator.lab.linkquery import block_table
    from edge.profile import list_profiles
    if args.bytes is not None or args.block_size is not None:
        raise ArgumentError("--block-table prices every block size at its own SIZES: leave out --bytes and --block-size")
    try:
        sizes = tuple(int(x) for x in args.block_table.split(",")) if args.block_table else ()
    except ValueError:
        raise ArgumentError(f"--block-table: expected message sizes like 64,256,1024, got {args.block_table!r}") from None
    if name:
        profs = [profile_dict(name)]
    else:  # every shipped walked CoAP profile
        profs = [p for p in map(profile_dict, list_profiles())
                 if p.get("stack") and p["stack"]["transport"] == "coap"]
    print("\n".join(block_table(profs, *((sizes,) if sizes else ()))))
    return 0


class _Given(argparse.Action):
    """Store the value and note that the option was given (args.<dest>_given): --deep-sleep
    SECONDS refuses a second, different round timing."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        setattr(namespace, self.dest, values)
        setattr(namespace, self.dest + "_given", True)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="energy budget per node from a run log or a planned job",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default=None, help="link cost profile (name or .toml)")
    q = p.add_argument_group("one message (instead of a budget)")
    q.add_argument("--link", default=None, help="link profile to ask about (same as --profile)")
    q.add_argument("--bytes", type=int, default=None, help="frame size, B: print what it costs, frame by frame")
    q.add_argument("--block-size", type=int, default=None, help="CoAP block size to price instead of the profile's")
    q.add_argument("--block-table", nargs="?", const="", default=None, metavar="SIZES",
                   help="cost per byte at every Block1 size for messages of SIZES bytes (default 64,256,1024,4096,"
                        "16384), the cheapest marked; of --link NAME, else of every walked CoAP profile")
    p.add_argument("--log", default=None, help="simulate output directory, or the gateway's metrics .jsonl")
    p.add_argument("--d", type=int, default=None, help="model size (planned job; JSON-lines log: for the downlink)")
    p.add_argument("--rounds", type=int, default=None, help="planned job: rounds")
    p.add_argument("--scheme", default=None, help="planned job: identity, s, sq or ss")
    p.add_argument("--T", type=int, default=None, help="planned job: entries per update")
    p.add_argument("--nodes", type=int, default=1, help="planned job: nodes (sizes the downlink delta)")
    add_fmt_arg(p)
    p.add_argument("--downlink", choices=("delta", "snapshot", "none"), default="delta",
                   help="what a node receives each round (default: the sparse model delta)")
    p.add_argument("--interval", type=float, default=600.0, action=_Given,
                   help="seconds between rounds (default 600)")
    p.add_argument("--battery-mah", type=float, default=2400.0, help="battery capacity, mAh (default 2400)")
    p.add_argument("--voltage", type=float, default=3.0, help="battery voltage, V (default 3.0)")
    p.add_argument("--sleep-ua", type=float, default=0.0, help="sleep current between rounds, uA")
    p.add_argument("--out", default=None)
    p.set_defaults(func=_cmd_profile, _parser=p, _words=["profile"])
