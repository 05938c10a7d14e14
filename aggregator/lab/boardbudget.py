"""Whole-board energy per node and round, and battery life with self-discharge.

A round of a duty-cycled node costs

* radio:   the link's transmit and receive energy of the round's messages (uplink frame,
           downlink delta), from the link model (`link_round`, the one seam to it);
* compute: the microcontroller at its run current for the round's compute seconds: the
           board's own measure (telemetry "compute seconds" in the gateway's log) when the
           log has it, else the 32-bit MicroPython calibration scaled to the board
           (`compute_seconds`: host seconds x anchor(board) / anchor(host) / board speed);
* listen:  the receiver on while the node waits for replies and the downlink, as the
           protocol waits (`listen_seconds`: CoAP polling or Observe, MQTT, LoRaWAN class A
           receive windows), plus the MCU awake while the radio works;
* wake:    the wake-up from sleep (time x current: a boot on ESP32, a clock start on nRF52);
           with --deep-sleep the board's [deep_sleep] (what machine.deepsleep does on its
           port, `deep_sleep_state`) sets this and the sleep current: the wake-up is a boot;
* state:   only for a node that deep-sleeps with a state file (`--deep-sleep`, edge/sleep.py):
           reading the file at boot, erasing and programming it again (littlefs writes a
           rewritten file into freshly erased blocks), the round marker's two rewrites, and the
           CPU's part (SHA-256 over the file, twice) from the board's [storage] table and the
           calibration's state_per_byte/state_fixed (`state_round`);
* sleep:   the sleep (or deep-sleep) current for the rest of the interval.

Battery life = usable energy / (mean power + self-discharge power), self-discharge being a
fraction of the nominal energy per year. Energy at the board is current x its supply
voltage; the battery's is mAh x 3.6 x its nominal voltage (regulator losses not modelled).
`cat-aggregator profile --board B --battery C` prints it (this module adds those options to
the profile command); aggregator/lab/boardcompute.py holds the compute model and the numbers
energy-aware CAT (edge/energycost.py) uses.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aggregator.lab import energy, reports, statefile
from aggregator.lab.statefile import (MARKER_BYTES, METADATA_COMMIT_BYTES, METADATA_COMMITS, erased_blocks,
                                      lfs_block_use, state_bytes)
from aggregator.lab.boardcompute import BoardBudgetError, compute_seconds, host_to_board, load
from aggregator.lab.problem import Problem
from aggregator.lab.results import SimResult
from edge import hwprofile
from edge.lora import symbol_time

TERMS = ("radio", "compute", "listen", "wake", "sleep")
STATE_TERMS = TERMS[:4] + ("state", "sleep")   # with --deep-sleep
WAITS = ("coap-poll", "coap-observe", "mqtt", "mqtt-keepalive", "lorawan", "request", "none")
COLORS = {"radio": "#1f77b4", "compute": "#d62728", "listen": "#ff7f0e", "wake": "#9467bd", "sleep": "#7f7f7f",
          "state": "#2ca02c"}


# ------------------------------------------------------------------------------ the link seam


@dataclass
class LinkRound:
    """Radio side of one round for one node: joules, radio-on and own-transmit seconds, and
    how many link messages each way (a frame over the link's largest message is several)."""

    tx_j: float
    rx_j: float
    radio_s: float
    airtime_s: float
    up_messages: int
    down_messages: int


def link_round(profile: dict, up_bytes: int, down_bytes: int) -> LinkRound:
    """The one place the whole-board budget asks the link model what a round's messages cost.

    Today: aggregator.lab.energy.uplink_energy / downlink_energy (edge.cost.LinkCost: packets,
    link ACKs, transport ACK, downlink with the roles reversed). A per-message breakdown of the
    link side (tx/rx bytes, frames, radio-on seconds, tx/rx energy of what the client really
    sends) plugs in here and nowhere else."""
    up = energy.uplink_energy(profile, int(up_bytes))
    dn = energy.downlink_energy(profile, int(down_bytes))
    mx = int(profile["message"]["max_bytes"])
    return LinkRound(up.tx_j + dn.tx_j, up.rx_j + dn.rx_j, up.radio_s + dn.radio_s, up.airtime_s,
                     -(-int(up_bytes) // mx) if up_bytes > 0 else 0,
                     -(-int(down_bytes) // mx) if down_bytes > 0 else 0)


# ------------------------------------------------------------------------------ listening


@dataclass
class Wait:
    """How the node waits for replies and the downlink (see listen_seconds)."""

    mode: str = "coap-poll"
    response_s: float = 0.02      # receiver on per request/response exchange, beyond the reply's airtime
    block: int = 64               # CoAP block size (node.json block_size; the board default)
    round_wait_s: float = 30.0    # Observe: from the upload to the round's notification (job deadline)
    polls: int = 0                # CoAP: extra config polls before the round is open
    rx_symbols: int = 6           # LoRaWAN: symbols a receive window stays open without a downlink
    keepalive_s: float = 60.0     # mqtt-keepalive: MQTT keep-alive interval (PINGREQ/PINGRESP)
    interval_s: float = 600.0     # mqtt-keepalive: the round interval the pings fill


@dataclass
class DeepSleep:
    """The node deep-sleeps between rounds and keeps its state in a file (edge/sleep.py):
    error_feedback puts the residual in the file too; sleep_s, when given, is the sleep after
    each round (flash --deep-sleep SECONDS), else the round interval sets it; classes
    multiplies d into the model's floats (n = classes x d)."""

    error_feedback: bool = False
    sleep_s: float | None = None
    classes: int = 1


def deep_sleep_state(board: dict) -> dict:
    """The board profile's [deep_sleep] (what machine.deepsleep does on its port: current and
    the boot it wakes with), the sleep of a node that keeps its state in a file. A ValueError
    names why there is none: no table, or the port has no timed deep sleep (nrf52840)."""
    ds = board.get("deep_sleep")
    if ds is None:
        raise ValueError(f"board {board['name']} has no [deep_sleep] table (what machine.deepsleep does on its "
                         "port: cost_profiles/README.md)")
    if "none" in ds:
        raise ValueError(f"board {board['name']} cannot deep-sleep between rounds: {ds['none']}")
    return ds


def default_wait(profile: dict) -> str:
    if profile.get("lora"):
        return "lorawan"
    name = profile["name"]
    if "mqtt" in name:
        return "mqtt"
    if "coap" in name:
        return "coap-poll"
    return "request"


def listen_seconds(w: Wait, profile: dict, lr: LinkRound, up_bytes: int, down_bytes: int) -> tuple[float, int]:
    """(seconds the receiver is on waiting, request/response exchanges) for one round.

    coap-poll: the node GETs the config, the delta block by block (Block2), POSTs its update
    block by block (Block1); each exchange waits response_s for the reply. coap-observe: the
    same upload, then the receiver stays on until the round's notification (round_wait_s).
    mqtt: a woken node reconnects with a persistent session: CONNECT/CONNACK,
    SUBSCRIBE/SUBACK, the retained config and delta pushed, PUBLISH/PUBACK: four waits.
    mqtt-keepalive: the node stays connected between rounds and pings every keepalive_s
    (PINGREQ/PINGRESP), plus its PUBLISH/PUBACK and the pushed messages: then the board does
    not deep-sleep, so give a board profile whose sleep current is its connected idle one.
    lorawan (class A): after each uplink RX1 opens (RECEIVE_DELAY1 = 1 s) and, when no downlink
    comes in it, RX2 (2 s, DR0 = SF12/125 kHz); a window with nothing for the node closes after
    rx_symbols symbols (LoRaMac-node's minimum); a delta of m downlinks needs m uplinks. A profile
    that prices the windows itself ([lora] rx2_spreading_factor: edge.lora.rx_windows, in the
    radio term) adds no listening here.
    request: one wait per link message each way."""
    mode = w.mode
    if mode == "none":
        return 0.0, 0
    if mode == "lorawan":
        lora = profile.get("lora")
        if not lora:
            raise BoardBudgetError(f"--wait lorawan needs a LoRa link profile ({profile['name']} has no [lora])")
        ups = max(lr.up_messages, lr.down_messages)
        if lora.get("rx2_spreading_factor"):
            return 0.0, ups  # the profile's link cost already listens through RX1 and RX2
        rx1 = w.rx_symbols * symbol_time(lora)
        rx2 = w.rx_symbols * symbol_time({"spreading_factor": 12, "bandwidth": 125000.0})
        return ups * rx1 + (ups - lr.down_messages) * rx2, ups
    if mode in ("coap-poll", "coap-observe"):
        ex = -(-int(up_bytes) // w.block) if up_bytes > 0 else 0
        if mode == "coap-poll":
            ex += 1 + w.polls + (-(-int(down_bytes) // w.block) if down_bytes > 0 else 0)
            return ex * w.response_s, ex
        return (ex + 1) * w.response_s + w.round_wait_s, ex + 1
    if mode == "mqtt":
        return 4 * w.response_s, 4
    if mode == "mqtt-keepalive":
        pings = int(math.ceil(w.interval_s / w.keepalive_s)) if w.keepalive_s > 0 else 0
        return (pings + 2) * w.response_s, pings + 2
    if mode == "request":
        ex = lr.up_messages + lr.down_messages
        return ex * w.response_s, ex
    raise BoardBudgetError(f"unknown wait mode {mode!r} (use {', '.join(WAITS)})")


# ------------------------------------------------------------------------------ state file

def state_round(board: dict, cal: dict, size: int) -> dict[str, float]:
    """Seconds and joules of one round's state-file I/O on the board (edge/sleep.py): read
    the file and marker at boot, erase the blocks the new file spans and program its pages,
    five metadata commits and their share of a compaction, and the CPU's part, each at its
    current:

        read    = (size + 16) / read_rate                          at read_current + active_current
        erase   = (blocks + 5 x 64 / block) x erase_time           at write_current + active_current
        program = (pages + 5 x ceil(64 / page)) x program_time     at write_current + active_current
        cpu     = (state_per_byte x size + state_fixed) x host_to_board   at active_current

    blocks and pages: lfs_block_use (each block's pages rounded up)."""
    st = board.get("storage")
    if st is None:
        raise BoardBudgetError(f"{board['name']}: --deep-sleep needs the board profile's [storage] table (the "
                               "non-volatile memory the state file lives in; cost_profiles/README.md)")
    v = board["supply"]["voltage"]
    act = board["mcu"]["active_current"]
    page = int(st["page_size"])
    use = lfs_block_use(int(size), int(st["block_size"]))
    pages = sum(-(-u // page) for u in use) + METADATA_COMMITS * max(1, -(-METADATA_COMMIT_BYTES // page))
    read_s = (int(size) + MARKER_BYTES) / st["read_rate"]
    erased = erased_blocks(len(use), st["block_size"])
    erase_s = erased * st["erase_time"]
    program_s = pages * st["program_time"]
    s = cal["seconds"]
    cpu_s = (s.get("state_per_byte", 0.0) * int(size) + s.get("state_fixed", 0.0)) * host_to_board(board, cal)
    joules = v * (read_s * (st["read_current"] + act) + (erase_s + program_s) * (st["write_current"] + act)
                  + cpu_s * act)
    return {"bytes": int(size), "blocks": len(use), "erased": erased, "pages": pages, "read_s": read_s, "erase_s": erase_s,
            "program_s": program_s, "cpu_s": cpu_s, "seconds": read_s + erase_s + program_s + cpu_s,
            "joules": joules}


# ------------------------------------------------------------------------------ battery


def battery_joules(battery: dict) -> tuple[float, float]:
    """(nominal, usable) energy of the battery in J."""
    c = battery["cell"]
    nominal = c["capacity"] * 3.6 * c["voltage"]
    return nominal, nominal * c["usable_fraction"]


def battery_life_s(p_avg_w: float, battery: dict) -> float:
    """Seconds until the usable energy is spent by the load and the self-discharge together."""
    nominal, usable = battery_joules(battery)
    p = p_avg_w + battery["cell"]["self_discharge"] * nominal / hwprofile.YEAR_S
    return usable / p if p > 0 else math.inf


# ------------------------------------------------------------------------------ budget


def board_budget(log: energy.RunLog, profile: dict, board: dict, battery: dict, interval_s: float,
                 wait: Wait, cal: dict, nnz: float, k: int | None = None,
                 deep_sleep: DeepSleep | None = None) -> dict[str, Any]:
    """Per node: each term's joules per round (R x n arrays too), totals, battery life.

    nnz: nonzeros of a node's local data (the gradient's cost); k: candidates CAT scans (default:
    the largest T the node sent). Rounds a node sent nothing in are left out of its means.
    deep_sleep: the node keeps a state file across deep sleep (adds the state term; with
    sleep_s, the node sleeps that long after each round, as `flash --deep-sleep SECONDS` makes
    it, so a round lasts its awake time + sleep_s instead of interval_s)."""
    if profile["kind"] != "link" or profile["radio"]["tx_power"] <= 0:
        raise BoardBudgetError(f"{profile['name']}: the whole-board budget needs a link profile with a radio")
    if not interval_s > 0:
        raise BoardBudgetError(f"the interval must be > 0 s, got {interval_s}")
    R, n = log.frame_bytes.shape
    v = board["supply"]["voltage"]
    mcu, sl = board["mcu"], board["sleep"]
    if deep_sleep is not None:
        try:
            sl = deep_sleep_state(board)
        except ValueError as exc:
            raise BoardBudgetError(f"--deep-sleep: {exc}") from None
    rx_w = profile["radio"]["rx_power"]
    wait_w = mcu["wait_current"] * v
    terms = STATE_TERMS if deep_sleep is not None else TERMS
    arr = {t: np.zeros((R, n)) for t in terms}
    secs = {t: np.zeros((R, n)) for t in ("compute", "listen", "radio", "awake", "state", "period")}
    if deep_sleep is not None and not log.d:
        raise BoardBudgetError("--deep-sleep: the run log does not say the model size d (give --d)")
    n_model = int(log.d or 0) * (deep_sleep.classes if deep_sleep is not None else 1)
    scache: dict[int, dict] = {}
    measured = 0
    cache: dict[tuple[int, int], LinkRound] = {}
    tel = log.compute_s if log.compute_s is not None else np.full((R, n), np.nan)
    for k_ in range(n):
        kk = int(k if k else max(1, int(log.T[:, k_].max()) if R else 1))
        for r in range(R):
            fb = int(log.frame_bytes[r, k_])
            if fb <= 0:
                continue
            db = int(log.down_bytes[r])
            lr = cache.get((fb, db))
            if lr is None:
                lr = cache[(fb, db)] = link_round(profile, fb, db)
            if np.isfinite(tel[r, k_]):
                cs = float(tel[r, k_])
                measured += 1
            else:
                cs = float(compute_seconds(board, cal, int(log.d or 0), nnz, kk, int(log.T[r, k_])))
            ls, _ = listen_seconds(wait, profile, lr, fb, db)
            awake = sl["wake_time"] + cs + lr.radio_s + ls
            if deep_sleep is not None:
                size = state_bytes(n_model, fb, deep_sleep.error_feedback)
                sr = scache.get(size)
                if sr is None:
                    sr = scache[size] = state_round(board, cal, size)
                arr["state"][r, k_] = sr["joules"]
                secs["state"][r, k_] = sr["seconds"]
                awake += sr["seconds"]
            if deep_sleep is not None and deep_sleep.sleep_s is not None:
                slept, period = deep_sleep.sleep_s, awake + deep_sleep.sleep_s
            else:
                slept, period = max(0.0, interval_s - awake), interval_s
            arr["radio"][r, k_] = lr.tx_j + lr.rx_j
            arr["compute"][r, k_] = cs * mcu["active_current"] * v
            arr["listen"][r, k_] = ls * (rx_w + wait_w) + lr.radio_s * wait_w
            arr["wake"][r, k_] = sl["wake_time"] * sl["wake_current"] * v
            arr["sleep"][r, k_] = slept * sl["current"] * v
            secs["compute"][r, k_], secs["listen"][r, k_] = cs, ls
            secs["radio"][r, k_], secs["awake"][r, k_] = lr.radio_s, awake
            secs["period"][r, k_] = period
    total = sum(arr[t] for t in terms)
    nominal, usable = battery_joules(battery)
    nodes = []
    for k_ in range(n):
        act = log.frame_bytes[:, k_] > 0
        m = max(1, int(act.sum()))
        row: dict[str, Any] = {"node": log.nodes[k_] if k_ < len(log.nodes) else k_, "rounds": int(act.sum())}
        for t in terms:
            row[f"{t}_j_per_round"] = float(arr[t][:, k_].sum()) / m
        for t in ("compute", "listen", "awake") + (("state",) if deep_sleep is not None else ()):
            row[f"{t}_s_per_round"] = float(secs[t][:, k_].sum()) / m
        e = float(total[:, k_].sum()) / m
        # a node's round lasts interval_s, or (flash --deep-sleep SECONDS) its awake time + SECONDS
        period = float(secs["period"][act, k_].mean()) if act.any() else interval_s
        row["interval_s"] = period
        row["energy_j_per_round"] = e
        row["energy_j_total"] = float(total[:, k_].sum())
        row["power_w"] = e / period
        life = battery_life_s(row["power_w"], battery)
        row["battery_life_days"] = life / 86400.0
        row["battery_rounds"] = life / period
        row["awake_over_interval"] = bool((secs["awake"][:, k_] > interval_s).any()) and \
            (deep_sleep is None or deep_sleep.sleep_s is None)
        if deep_sleep is not None:
            # the same node without the state file: its seconds asleep (a fixed interval), or a
            # shorter round (a fixed sleep)
            ss = row["state_s_per_round"]
            if deep_sleep.sleep_s is None:
                e0, p0 = e - row["state_j_per_round"] + ss * sl["current"] * v, interval_s
            else:
                e0, p0 = e - row["state_j_per_round"], period - ss
            row["battery_life_days_without_state"] = battery_life_s(e0 / p0, battery) / 86400.0
        nodes.append(row)
    notes = []
    active = int((log.frame_bytes > 0).sum())
    if measured:
        notes.append(f"compute: the boards' own measured compute seconds (telemetry) for {measured} of "
                     f"{active} node rounds" + ("; the rest estimated" if measured < active else ""))
    if measured < active:
        notes.append(f"compute: estimated on the 32-bit MicroPython build ({cal['host']['cpu']}) and scaled to "
                     f"{board['name']} by the anchor loop ({cal['anchor']['board_seconds']:g} s on the "
                     f"{cal['anchor']['board']}, {cal['anchor']['host_seconds']:.3g} s here) and the board's "
                     f"speed {board['mcu']['speed']:g} x the reference (assumption: MicroPython speed scales so); "
                     f"x{host_to_board(board, cal):.0f} the host's time; data {nnz:g} nonzeros per node")
    if any(nd["awake_over_interval"] for nd in nodes):
        notes.append(f"a round keeps the board awake longer than the {interval_s:g} s interval: it never sleeps")
    state = None
    if deep_sleep is not None:
        sizes = sorted(scache)
        st = board["storage"]
        state = {"error_feedback": deep_sleep.error_feedback, "sleep_s": deep_sleep.sleep_s, "n": n_model,
                 "storage": st["name"], "filesystem": st["filesystem"],
                 "rounds": [scache[z] for z in sizes]}
        if sizes:
            a, b_ = scache[sizes[0]], scache[sizes[-1]]
            span = f"{a['bytes']:,} B" if a is b_ else f"{a['bytes']:,}-{b_['bytes']:,} B"
            notes.append(
                f"state: a state file of {span} (n = {n_model:,} floats"
                f"{', with the error-feedback residual' if deep_sleep.error_feedback else ''}; edge/sleep.py) on "
                f"{st['name']}, {st['filesystem']}: per round {b_['blocks']} block(s) of {st['block_size']:.0f} B "
                f"erased ({1e3 * b_['erase_s']:.4g} ms), {b_['pages']} page(s) of {st['page_size']:.0f} B programmed "
                f"({1e3 * b_['program_s']:.4g} ms), read {1e3 * b_['read_s']:.3g} ms, CPU (SHA-256 and chunks, "
                f"scaled from the 32-bit build) {1e3 * b_['cpu_s']:.3g} ms; between rounds the board profile's "
                f"deep sleep: {sl['state']}")
            worst = min(nodes, key=lambda nd: nd["battery_life_days"]) if nodes else None
            if worst is not None:
                state["lines"] = statefile.summary_lines(st, b_, worst["interval_s"], worst["battery_life_days"])
            if "fs_size" not in st:
                notes.append(f"state: {board['name']}'s [storage] gives no fs_size: whether the state file fits "
                             "and how long the flash lasts are not checked")
            if "state_per_byte" not in cal["seconds"]:
                notes.append("state: the calibration has no state_per_byte/state_fixed: the CPU's part is not "
                             "priced (run firmware_tests/statecost.py --write)")
    mean_interval = float(np.mean([nd["interval_s"] for nd in nodes])) if nodes else interval_s
    return {"profile": profile["name"], "board": board["name"], "battery": battery["name"],
            "interval_s": mean_interval if deep_sleep is not None and deep_sleep.sleep_s is not None else interval_s,
            "wait": wait.mode, "battery_nominal_j": nominal, "battery_usable_j": usable, "nodes": nodes,
            "per_round": arr, "total_per_round": total, "notes": notes, "terms": terms, "state": state,
            "totals": {t: float(arr[t].sum()) for t in terms},
            "shelf_life_days": battery["cell"]["shelf_life"] / 86400.0}


def mean_per_round(b: dict) -> dict[str, float]:
    """Each term's joules per round of the mean node."""
    nodes = b["nodes"]
    return {t: float(np.mean([nd[f"{t}_j_per_round"] for nd in nodes])) for t in b.get("terms", TERMS)}


def plot_breakdown(b: dict, out: Path, stem: str = "energy-breakdown") -> list[str]:
    """Stacked bars: where each node's joules per round go (and the mean node)."""
    plt = reports.pyplot()
    labels = [f"node {nd['node']}" for nd in b["nodes"]] + ["mean"]
    mean = mean_per_round(b)
    fig, ax = plt.subplots(figsize=(max(4.5, 0.8 * len(labels) + 2.5), 3.8))
    bottom = np.zeros(len(labels))
    for t in b.get("terms", TERMS):
        vals = np.array([1e3 * nd[f"{t}_j_per_round"] for nd in b["nodes"]] + [1e3 * mean[t]])
        ax.bar(labels, vals, bottom=bottom, label=t, color=COLORS[t])
        bottom += vals
    ax.set_ylabel("mJ per round")
    ax.set_title(f"{b['board']} on {b['profile']}, one round per {b['interval_s']:g} s"
                 + (", deep sleep with a state file" if b.get("state") else ""), fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return reports.save_fig(fig, out, stem)


def summary_lines(b: dict, rounds: int) -> list[str]:
    """The figures a person reads: per node, all nodes, the mean round and the battery life."""
    mj = lambda j: f"{1e3 * j:.4g} mJ"  # noqa: E731
    terms = b.get("terms", TERMS)
    sleepy = "state" in terms
    lines = []
    for nd in b["nodes"]:
        st = (f"state file {mj(nd['state_j_per_round'])} ({nd['state_s_per_round']:.3g} s), " if sleepy else "")
        lines.append(f"node {nd['node']}: per round radio {mj(nd['radio_j_per_round'])}, compute "
                     f"{mj(nd['compute_j_per_round'])} ({nd['compute_s_per_round']:.3g} s), listen "
                     f"{mj(nd['listen_j_per_round'])} ({nd['listen_s_per_round']:.3g} s), wake-up "
                     f"{mj(nd['wake_j_per_round'])}, {st}sleep {mj(nd['sleep_j_per_round'])} = "
                     f"{mj(nd['energy_j_per_round'])}; battery life {nd['battery_life_days']:.4g} days")
    tot = b["totals"]
    lines.append(f"all {len(b['nodes'])} node(s), {rounds} round(s): " +
                 ", ".join(f"{t} {tot[t]:.4g} J" for t in terms) + f"; total {sum(tot.values()):.4g} J")
    m = mean_per_round(b)
    lines.append(f"energy per round: radio {1e3 * m['radio']:.4g} mJ, compute {1e3 * m['compute']:.4g} mJ, "
                 f"listen {1e3 * m['listen']:.4g} mJ, sleep {1e3 * m['sleep']:.4g} mJ")
    e = sum(m.values())
    lines.append(f"wake-up {1e3 * m['wake']:.4g} mJ per round; total {1e3 * e:.4g} mJ per round and node, "
                 f"{1e6 * e / b['interval_s']:.4g} uW on average")
    if sleepy:
        lines.append(f"state file (deep sleep): {1e3 * m['state']:.4g} mJ per round, {100 * m['state'] / e:.3g} % of "
                     f"the round's {1e3 * e:.4g} mJ")
    worst = min(b["nodes"], key=lambda nd: nd["battery_life_days"])
    if sleepy:
        lines.extend((b.get("state") or {}).get("lines", []))
        lines.append(f"battery life: {worst['battery_life_days']:.4g} days with the state file's "
                     f"{1e3 * worst['state_j_per_round']:.4g} mJ per round ({worst['battery_life_days_without_state']:.4g} "
                     "days without it)")
    else:
        lines.append(f"battery life: {worst['battery_life_days']:.4g} days")
    shelf = b["shelf_life_days"]
    lines.append(f"  ({b['battery']}: {b['battery_usable_j']:.4g} J usable, self-discharge included; first node "
                 f"to run out: node {worst['node']}, after {worst['battery_rounds']:.4g} rounds; the cell's shelf "
                 f"life is {shelf:.4g} days" + (", which this exceeds: the datasheet does not promise it)"
                                               if worst["battery_life_days"] > shelf else ")"))
    return lines


# ------------------------------------------------------------------------------ CLI glue


def add_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("whole board (give --board for radio + compute + listen + wake-up + sleep, "
                             "and with --deep-sleep the state file)")
    g.add_argument("--board", default=None, help="board profile (cost_profiles/boards: name or .toml)")
    g.add_argument("--battery", default=None, help="battery profile (cost_profiles/batteries; default 2xaa)")
    g.add_argument("--wait", choices=WAITS, default=None,
                   help="how the node waits for replies and the downlink (default from the link profile)")
    g.add_argument("--response-s", type=float, default=0.02,
                   help="seconds the receiver stays on per request/response exchange (default 0.02)")
    g.add_argument("--block", type=int, default=64, help="CoAP block size, B (default 64, the board default)")
    g.add_argument("--keepalive", type=float, default=60.0,
                   help="mqtt-keepalive: seconds between PINGREQs while connected (default 60)")
    g.add_argument("--round-wait", type=float, default=30.0,
                   help="coap-observe: seconds from upload to the round's notification (default 30)")
    g.add_argument("--rows", type=int, default=64, help="planned job: rows of a node's data (default 64)")
    g.add_argument("--nnz", type=float, default=64.0, help="nonzeros per data row (default 64)")
    g.add_argument("--k", type=int, default=None, help="candidates CAT scans, K (default: the largest T sent)")
    g.add_argument("--calibration", default="micropython32", help="compute calibration (cost_profiles/calibration)")
    g.add_argument("--deep-sleep", nargs="?", const="", default=None, metavar="SECONDS",
                   help="the node deep-sleeps between rounds and keeps its state in a file (flash --deep-sleep): "
                        "adds the state file's read, erase and program on the board's [storage] and its SHA-256 "
                        "(the state term). SECONDS, as flash takes them: the sleep after each round, so a round "
                        "lasts its awake time + SECONDS (instead of --interval); without SECONDS, --interval")
    g.add_argument("--error-feedback", action="store_true",
                   help="with --deep-sleep: the state file holds the error-feedback residual too (4 d bytes more; "
                        "a simulate run with --ef says so itself)")
    g.add_argument("--classes", type=int, default=None,
                   help="with --deep-sleep: classes of a multiclass model (the file holds classes x d floats; "
                        "default 1)")
    g.add_argument("--compute", choices=("auto", "telemetry", "estimate"), default="auto",
                   help="compute seconds: the log's telemetry (a real board's own measure), the calibrated "
                        "estimate, or auto (telemetry where the log has it). Use estimate for logs of edges "
                        "that ran on this host (cat-aggregator demo), whose telemetry is the host's time")


def _node_rows(args: argparse.Namespace, log: energy.RunLog) -> int:
    """Rows of a node's local data: a simulate run's rows / nodes, else --rows."""
    meta = _run_meta(log)
    if meta:
        return max(1, int(meta["problem"]["rows"]) // max(1, int(meta["problem"]["nodes"])))
    return args.rows


def _run_meta(log: energy.RunLog) -> dict:
    run = Path(log.source, "run.json") if log.source else None
    if run is not None and run.is_file():
        return json.loads(run.read_text())
    return {}


def deep_sleep_from_args(args: argparse.Namespace, log: energy.RunLog) -> DeepSleep | None:
    """--deep-sleep [SECONDS], --error-feedback, --classes as a DeepSleep (None without
    --deep-sleep); a bad value or a contradiction is a one-line BoardBudgetError."""
    raw = getattr(args, "deep_sleep", None)
    ef = bool(getattr(args, "error_feedback", False))
    classes = getattr(args, "classes", None)
    if raw is None:
        if ef or classes is not None:
            raise BoardBudgetError("--error-feedback and --classes size a deep-sleeping node's state file: "
                                   "give --deep-sleep too")
        return None
    sleep_s = None
    if raw != "":
        try:
            sleep_s = float(raw)
        except ValueError:
            sleep_s = math.nan
        if not 0 < sleep_s < 1e7:     # also refuses nan and inf, as flash --deep-sleep does
            raise BoardBudgetError(f"--deep-sleep: expected the seconds to sleep between rounds (> 0), got {raw!r}")
        if getattr(args, "interval_given", False):
            raise BoardBudgetError("give the round's timing once: --deep-sleep SECONDS (the sleep after each round, "
                                   "as flash takes it) or --deep-sleep with --interval")
    if classes is not None and classes < 1:
        raise BoardBudgetError(f"--classes must be >= 1, got {classes}")
    if (args.wait or "") == "mqtt-keepalive":
        raise BoardBudgetError("--wait mqtt-keepalive keeps the board connected between rounds: it does not "
                               "deep-sleep (drop --deep-sleep, or wait as mqtt)")
    if not ef and _run_meta(log).get("config", {}).get("error_feedback"):
        ef = True                      # a simulate run with --ef
    return DeepSleep(ef, sleep_s, classes or 1)


def from_args(args: argparse.Namespace, log: energy.RunLog, prof: dict) -> dict:
    """The whole-board budget for the profile command's options."""
    ds = deep_sleep_from_args(args, log)
    rows = _node_rows(args, log)
    board = load("board", args.board)
    battery = load("battery", args.battery or "2xaa")
    cal = load("compute", args.calibration)
    if args.response_s < 0 or args.block < 16 or args.round_wait < 0 or args.nnz < 0 or args.rows < 1 \
            or args.keepalive < 0:
        raise BoardBudgetError("--response-s, --round-wait, --keepalive and --nnz must be >= 0, --block >= 16, "
                               "--rows >= 1")
    wait = Wait(args.wait or default_wait(prof), args.response_s, args.block, args.round_wait,
                keepalive_s=args.keepalive, interval_s=args.interval)
    if args.compute == "telemetry" and (log.compute_s is None or not np.isfinite(log.compute_s).any()):
        raise BoardBudgetError("--compute telemetry: the log has no compute seconds (edges without telemetry, "
                               "or not a gateway metrics log)")
    if args.compute == "estimate":
        log.compute_s = None
    return board_budget(log, prof, board, battery, args.interval, wait, cal, rows * args.nnz, args.k, ds)


def from_metrics(path: Path, prof: dict, board: str, battery: str, interval_s: float, d: int, nnz: float,
                 k: int | None = None) -> dict:
    """The whole-board budget of a gateway metrics log, compute estimated (not the log's telemetry:
    for edges that ran on this host, whose measured seconds are not a board's)."""
    log = energy.log_from_metrics(path, d)
    log.compute_s = None
    return board_budget(log, prof, load("board", board), load("battery", battery), interval_s,
                        Wait(default_wait(prof)), load("compute", "micropython32"), nnz, k)


def report_parts(b: dict, rounds: int, out: Path) -> tuple[list[str], dict[str, str], list[str], list[str]]:
    """(lines, tables, plots, notes) of the whole-board budget for report.md."""
    lines = summary_lines(b, rounds)
    sleepy = "state" in b.get("terms", TERMS)
    cols = ["node", "rounds"] + [f"{t}_j_per_round" for t in b.get("terms", TERMS)] + [
        "energy_j_per_round", "energy_j_total", "compute_s_per_round", "listen_s_per_round", "awake_s_per_round",
        "power_w", "battery_life_days", "battery_rounds"] + (
        ["state_s_per_round", "interval_s", "battery_life_days_without_state"] if sleepy else [])
    md = reports.write_table(b["nodes"], out, "board", cols)
    plots = plot_breakdown(b, out)
    notes = list(b["notes"]) + [
        f"listening: {b['wait']} (see aggregator/lab/boardbudget.py listen_seconds); sleep: the board profile's "
        f"{'[deep_sleep]' if sleepy else '[sleep]'} current for the rest of the interval"
        f"{' and its wake-up (a boot)' if sleepy else ''}; battery life includes the cell's self-discharge."]
    if sleepy:
        notes.append("state: a deep-sleeping node's state file read at boot and written again each round "
                     "(aggregator/lab/boardbudget.py state_round, the board's [storage] table)")
    return lines, {"Whole board, per node": md}, plots, notes


def register(sub: argparse._SubParsersAction) -> None:
    """Add the whole-board options to the profile command (aggregator/lab/energy.py), which
    calls from_args before it writes anything and report_parts after its radio lines."""
    p = sub.choices["profile"]
    add_args(p)
    p.set_defaults(_whole_board=(from_args, report_parts))


# ------------------------------------------------------------------------------ simulated runs


def log_from_result(res: SimResult) -> energy.RunLog:
    """A simulated run as a run log for the budgets, with the entries each node sent as its T
    (what the board encodes), the model deltas as the downlink."""
    return dataclasses.replace(energy.log_from_result(res, res.label), T=res.entries)


def board_energy_to(res: SimResult, prof: dict, board: dict, battery: dict, cal: dict, interval: float,
                    nnz: float, target: float) -> tuple[float, bool, dict]:
    """(whole-board joules of all nodes until F - f* <= target, reached?, the budget)."""
    b = board_budget(log_from_result(res), prof, board, battery, interval, Wait(default_wait(prof)), cal, nnz,
                                 res.config.get("t_max"))
    cum = np.concatenate([[0.0], np.cumsum(b["total_per_round"].sum(axis=1))])
    r = res.first_reach(target)
    return (float(cum[r]), True, b) if r is not None else (float(cum[-1]), False, b)


def board_columns(cat_res: SimResult | str, gd_res: SimResult | str, prof: dict, problem: Problem, target: float,
                  interval: float = 600.0, battery: str = "2xaa") -> dict[str, Any]:
    """Whole-board joules to the target and battery life of CAT's and GD's runs on the link's
    default board (experiment radios' board columns); {} when no board profile fits the link."""
    from edge.hwprofile import board_for_link

    bname = board_for_link(prof["name"])
    if bname is None or prof["kind"] != "link" or prof["radio"]["tx_power"] <= 0:
        return {}
    board = load("board", bname)
    bat = load("battery", battery)
    cal = load("compute", "micropython32")
    nnz = float(np.mean(problem.nnz()))
    out: dict[str, Any] = {"board": bname}
    for tag, res in (("cat", cat_res), ("gd", gd_res)):
        if isinstance(res, str):
            continue
        e, ok, b = board_energy_to(res, prof, board, bat, cal, interval, nnz, target)
        out[f"{tag}_board_j"] = e if ok else f"{e:.4g} (not reached)"
        out[f"{tag}_battery_days"] = min(nd["battery_life_days"] for nd in b["nodes"])
    return out
