"""`cat-aggregator profile --link NAME --bytes N [--block-size B]`: what one message of N bytes
costs on a link, with a breakdown a person can hold against a sniffer trace; and
`cat-aggregator profile --block-table SIZES [--link NAME]`: every Block1 size of the walked
CoAP profiles, per byte, and the cheapest (the table in cost_profiles/README.md).

Why a separate answer from the energy budget: the budget sums whole runs; this shows one
message frame by frame (walked profiles, edge/onair.py) or packet by packet, so a wrong
assumption in a profile is visible where it is made.
"""

from __future__ import annotations


from typing import Callable

from aggregator.lab.cliargs import ArgumentError
from aggregator.lab.pricing import lorawan_region
from edge.cost import LinkCost
from edge.onair import frame_sizes, mac_overhead, nhc_udp_len
from edge.stackcheck import BLOCK_SIZES  # RFC 7959 §2.2: 2 ** (SZX + 4)
from edge.variant import block_variant

TABLE_SIZES = (64, 256, 1024, 4096, 16384)  # --block-table's default message sizes


def with_block_size(prof: dict, block_size: int | None) -> dict:
    """The profile with its CoAP block size replaced, named as load_profile names that variant
    ('<base>-b<B>', edge/variant.py builds it): the profile a node with that block size must use."""
    if block_size is None:
        return prof
    st = prof.get("stack")
    if not st or st["transport"] != "coap":
        raise ArgumentError(f"--block-size: {prof['name']} does not send CoAP block-wise (no [stack] with "
                            "transport = 'coap')")
    if block_size not in BLOCK_SIZES:
        raise ArgumentError(f"--block-size must be a power of two from 16 to 1024 (RFC 7959 §2.2), got {block_size}")
    return block_variant(prof, block_size, ArgumentError)


def _packet_lines(prof: dict, lc: LinkCost, n: int) -> list[str]:
    """Per-packet breakdown of a packet-model profile (no walk)."""
    msg, pk = prof["message"], prof["packet"]
    lines = [f"message: {n} B frame + {msg['overhead_bytes']:g} B transport overhead = {lc.message_bytes:g} B "
             f"in {lc.packets} packet(s)"]
    rest = lc.message_bytes
    for i in range(lc.packets):
        cap = pk["first_payload_bytes"] if i == 0 else pk["next_payload_bytes"]
        oh = pk["first_overhead_bytes"] if i == 0 else pk["next_overhead_bytes"]
        body = min(rest, cap)
        rest -= body
        ack = f", then a {pk['ack_bytes']:g} B link ACK back" if pk["ack_bytes"] else ""
        lines.append(f"    packet {i + 1}: overhead {oh:g} + payload {body:g} = {oh + body:g} B{ack}"
                     + _lora_airtime_note(prof, oh + body))
    if msg["extra_packets"]:
        lines.append(f"node <-: {msg['extra_packets']:g} reply packet(s) of {msg['extra_packet_bytes']:g} B")
    if prof.get("lora"):
        from edge.lora import rx_windows
        for name, (sf, n, sec) in zip(("RX1", "RX2"), rx_windows(prof["lora"])):
            lines.append(f"node listens: class A {name} window at SF{sf}, {n} symbols = {sec * 1e3:.1f} ms "
                         f"(no downlink), {sec * prof['radio']['rx_power'] * 1e6:.0f} uJ")
    return lines


def _lora_airtime_note(prof: dict, phy_bytes: float) -> str:
    """A LoRa packet's time on air, held against its region's uplink dwell time (US915, AS923: 400 ms;
    the profile's check keeps a shipped one within it, a what-if is flagged rather than priced
    as if it would arrive)."""
    if not prof.get("lora"):
        return ""
    from edge.lora import lora_airtime
    from edge.regions import uplink_dwell_s
    t = lora_airtime(prof["lora"], phy_bytes)
    region = lorawan_region(prof)
    lim = uplink_dwell_s(prof["lora"])
    if lim is None:
        return f", {t * 1e3:.1f} ms on air"
    if t <= lim:
        return f", {t * 1e3:.1f} ms on air (within {region}'s {lim * 1e3:g} ms uplink dwell time)"
    return (f", {t * 1e3:.1f} ms on air: OVER {region}'s {lim * 1e3:g} ms uplink dwell time, a network "
            "that enforces it never receives this packet")


def frame_lines(out: list[str]) -> Callable:
    """An emit callback for edge.onair's walk that appends the datagram, then its frames header
    by header, to out."""

    def emit(w, u: int, sending: bool, times: int, what: tuple, frags: tuple) -> None:
        st = w.st
        label, num, cnt, body = what
        f, c1, mid, last = frags
        if num < 0:
            name = f"CoAP {label}" if label != "UDP" else "UDP datagram"
        elif cnt == 1:
            name = f"CoAP {label} block {num}"
        else:
            name = f"CoAP {label} blocks {num}-{num + cnt - 1}"
        if body:
            name += f", {body} B {'reply text' if label == '2.04' else 'body'}"
        x = f" x{times}" if times > 1 else ""
        out.append(f"{'node ->' if sending else 'node <-'}{x}: {name}; {u} B UDP payload in {f} frame"
                   + ("s" if f > 1 else ""))
        sec, mesh = st["security_bytes"], st.get("mesh_header_bytes", 0)
        mac = mac_overhead(st) - st["phy_overhead_bytes"] - sec - mesh - 2
        head = (f"PHY {st['phy_overhead_bytes']} | MAC {mac}" + (f" | security {sec} (aux header + MIC)" if sec else "")
                + (f" | mesh {mesh}" if mesh else ""))
        hc = f"IPHC {st['iphc_bytes']} | UDP {nhc_udp_len(st['src_port'], st['dst_port'])}"
        s_first, s_mid, s_last = frame_sizes(st, u, frags)
        if f == 1:
            rows = [(1, f"frame: {head} | {hc} | UDP payload {u} | FCS 2", s_first)]
        else:
            rows = [(1, f"FRAG1: {head} | FRAG1 4 | {hc} | UDP payload {c1} | FCS 2", s_first),
                    (f - 2, f"FRAGN: {head} | FRAGN 5 | UDP payload {mid} | FCS 2", s_mid),
                    (1, f"FRAGN: {head} | FRAGN 5 | UDP payload {last} (last) | FCS 2", s_last)]
        for n, text, size in rows:
            if n > 0:
                out.append(f"    {text} = {size} B on air{f' (x{n})' if n > 1 else ''}, then a "
                           f"{st['ack_bytes']} B Imm-Ack {'back' if sending else 'sent'}")

    return emit


def describe(prof: dict, n: int, job: int | None = None) -> list[str]:
    """The `link cost:` line and the breakdown for an n-byte frame."""
    if prof["kind"] != "link":
        raise ArgumentError(f"{prof['name']} is a paper model (bits per payload), not a link: use a link profile")
    if n < 1:
        raise ArgumentError(f"--bytes must be >= 1, got {n}")
    mx = prof["message"]["max_bytes"]
    if n > mx:
        raise ArgumentError(f"--bytes {n} is over {prof['name']}'s largest message ({mx:g} B)")
    lc = LinkCost(prof, n, job)
    parts: list[str] = []
    if prof.get("stack"):
        from edge.onair import walk_up
        walk_up(prof, n, job, frame_lines(parts))
    else:
        parts = _packet_lines(prof, lc, n)
    head = (f"link cost: {n} B -> {lc.packets} frames sent, tx {lc.tx_bytes:g} B, rx {lc.rx_bytes:g} B, "
            f"{lc.seconds * 1e3:.2f} ms radio on, {lc.joules * 1e6:.0f} uJ")
    return [head] + parts + block_sizes(prof, n, job)


def block_sizes(prof: dict, n: int, job: int | None = None) -> list[str]:
    """For a walked CoAP profile: the same message at every Block1 size, and the cheapest.

    Why: larger blocks mean fewer exchanges but 6LoWPAN fragments; the board's receive buffer
    (block_size + 64 B) is what a larger block costs in RAM."""
    st = prof.get("stack")
    if not st or st["transport"] != "coap":
        return []
    row = []
    for b in BLOCK_SIZES:
        lc = LinkCost(with_block_size(prof, b), n, job)
        row.append((lc.joules, b, lc.packets))
    best = min(row, key=lambda r: (round(r[0], 12), r[1] != st["block_size"], r[1]))  # ties: the profile's
    cells = ", ".join(f"{b} B: {f} frames {j * 1e6:.0f} uJ" for j, b, f in row)
    return [f"by Block1 size: {cells}",
            f"cheapest block size for {n} B: {best[1]} B ({best[0] * 1e6:.0f} uJ; the profile's "
            f"{st['block_size']} B: {LinkCost(prof, n, job).joules * 1e6:.0f} uJ)"]


def block_table(profiles: list[dict], sizes: tuple[int, ...] = TABLE_SIZES, metric: str = "joules") -> list[str]:
    """A Markdown table: for each walked CoAP profile and message size, the cost per byte of the
    message at every Block1 size (uJ/B for joules), the cheapest in bold, and its name as a
    profile (what a node that wants it is given: '<name>-b<B>', edge/variant.py)."""
    unit, scale = {"joules": ("uJ/B", 1e6), "seconds": ("us/B", 1e6)}.get(metric, (f"{metric}/B", 1.0))
    head = ["| link | message | " + " | ".join(f"{b} B" for b in BLOCK_SIZES) + " | cheapest |",
            "|---|---:|" + "---:|" * len(BLOCK_SIZES) + "---|"]
    rows = []
    for prof in profiles:
        st = prof.get("stack")
        if not st or st["transport"] != "coap":
            raise ArgumentError(f"--block-table: {prof['name']} does not send CoAP block-wise (no [stack] with "
                                "transport = 'coap')")
        for n in sizes:
            if not 1 <= n <= prof["message"]["max_bytes"]:
                raise ArgumentError(f"--block-table: {n} B is not a message {prof['name']} carries "
                                    f"(1..{prof['message']['max_bytes']:g} B)")
            cost = [LinkCost(with_block_size(prof, b), n).metric(metric) / n * scale for b in BLOCK_SIZES]
            best = min(range(len(cost)), key=lambda i: (round(cost[i], 9), BLOCK_SIZES[i]))  # ties: the smaller block
            cells = [f"**{c:.2f}**" if i == best else f"{c:.2f}" for i, c in enumerate(cost)]
            rows.append(f"| {prof['name']} | {n} B | " + " | ".join(cells)
                        + f" | {with_block_size(prof, BLOCK_SIZES[best])['name']} |")
    return [f"cost per message byte, {unit} ({metric}), by Block1 size:"] + head + rows
