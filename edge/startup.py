"""What a board does once, at start-up: read and check node.json (written by `cat-aggregator
flash`), connect Wi-Fi if it says so, open the data file, make the node and its link.

node.json:

    {"node": 3, "job": 1,
     "key": "<64 hex>", "downlink_key": "<64 hex>",
     "transport": "coap",                  # coap | mqtt | serial
     "host": "192.0.2.1", "port": 5683,    # gateway (coap) or broker (mqtt)
     "block_size": 64, "ack_timeout": 2.0, # coap options (optional; block_size: the profile's)
     "username": null, "password": null,   # mqtt options (optional)
     "serial": {"uart": 1, "baud": 115200, "tx": 17, "rx": 16},   # serial on a board, or
     "serial": {"path": "/dev/ttyACM0"},   # a tty (unix port, tests)
     "wifi": {"ssid": "...", "password": "..."},                 # optional (ESP32, Pico W)
     "profile": {...},                     # the normalised cost profile (edge/profile.py)
     "board_cost": {"power_w": ..., "entry_s": ..., "round_j": ...},  # optional (edge/energycost.py)
     "data": "node-3.catd", "k_cap": null, "rounds": null, "timeout": null,
     "sleep": {"mode": "deep", "state": "state.bin", "interval": 60, "wait": 30}}  # optional

The profile travels as the normalised dict because a board cannot parse TOML; `flash`
drops what the edge never reads (text, schema, limits, empty sections) to save RAM.

A module of its own because a board runs it once: `edge.board.start` imports it and lets it go
once the node and link are made, so the rounds do not hold its code in the heap (2 KiB as
.mpy). Runs on MicroPython and CPython (where tools and tests use its checks).
"""

import json

from edge.cbor import errmsg


class BoardError(Exception):
    """The flashed config is unusable (missing field, bad key, unknown transport)."""


def transport_mismatch(profile, transport):
    """Why a node on `transport` cannot be priced by the (normalised) cost profile, or None. A
    profile prices "coap" (a walked CoAP profile's [stack]), "mqtt" or "serial" (a packet
    profile's message.transport), any transport (the paper's models: bits of a payload, no
    stack) or none a node has (bare UDP, LoRaWAN, BLE, raw 802.15.4: simulations and budgets)."""
    st = profile.get("stack")
    if profile.get("kind") == "paper":
        return None
    t = ("coap" if st["transport"] == "coap" else None) if st else (profile.get("message") or {}).get("transport")
    if t == transport:
        return None
    name = profile.get("name", "?")
    if t is None:
        return errmsg(152, (transport, name, transport))
    return errmsg(153, (transport, name, t, transport, t))


def block_size_mismatch(profile, block_size):
    """Why a CoAP client with this block size cannot be priced by the profile, or None; the
    answer names the profile that prices it: '<base>-b<B>' (edge.profile.load_profile)."""
    st = profile.get("stack")
    if not st or st["transport"] != "coap" or st["block_size"] == block_size:
        return None
    if block_size not in (16, 32, 64, 128, 256, 512, 1024):  # RFC 7959 §2.2
        return errmsg(150, (block_size,))
    name = profile["name"]
    own = "-b%d" % st["block_size"]
    base = name[:-len(own)] if name.endswith(own) else name
    return errmsg(151, (block_size, name, st["block_size"], base, block_size, st["block_size"]))


def unhex(text, what):
    """32-byte key from hex (node.json here, cat-edge's options too); binascii exists on every
    port, bytes.fromhex not on all."""
    import binascii
    try:
        key = binascii.unhexlify(text)
    except (ValueError, TypeError):
        raise BoardError(errmsg(140, what))
    if len(key) != 32:
        raise BoardError(errmsg(141, (what, len(key))))
    return key


def load_config(path="node.json"):
    """Parse and check node.json; returns the dict with keys as bytes."""
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError as e:
        raise BoardError(errmsg(142, (path, e)))
    except ValueError as e:
        raise BoardError(errmsg(143, (path, e)))
    for k in ("node", "job", "key", "downlink_key", "profile", "data"):  # the required keys
        if k not in cfg:
            raise BoardError(errmsg(144, (path, k)))
    cfg["key"] = unhex(cfg["key"], "key")
    cfg["downlink_key"] = unhex(cfg["downlink_key"], "downlink_key")
    t = cfg.get("transport", "coap")
    if t not in ("coap", "mqtt", "serial"):
        raise BoardError(errmsg(145, (path, t)))
    cfg["transport"] = t
    why = transport_mismatch(cfg["profile"], t)
    if why:
        raise BoardError("%s: %s" % (path, why))
    if cfg.get("sleep") is not None:
        from edge.sleep import check   # only a node that deep-sleeps loads it
        try:
            cfg["sleep"] = check(cfg["sleep"], cfg.get("timeout"))
        except ValueError as e:
            raise BoardError("%s: %s" % (path, e))
    return cfg


def make_link(cfg):
    """The edge link for cfg['transport'] (edge/links.py: CoAP; edge/pushlinks.py: MQTT, serial)."""
    if cfg["transport"] == "coap":
        from edge.coap import CoapClient, RX_HEADROOM
        from edge.links import CoapLink
        st = cfg["profile"].get("stack") or {}   # a walked CoAP profile: its block size and token
        bs = cfg.get("block_size") or st.get("block_size", 64)
        # the client's receive buffer is rx_size + 1 bytes: what a block can be, not 1280
        client = CoapClient(cfg["host"], cfg.get("port", 5683), ack_timeout=cfg.get("ack_timeout", 2.0),
                            block_size=bs, rx_size=cfg.get("rx_size", bs + RX_HEADROOM),
                            token_len=st.get("token_bytes", 4))
        return CoapLink(client, cfg["job"])
    from edge.pushlinks import make_push_link  # MQTT and serial nodes only load it
    return make_push_link(cfg)


def make_node(cfg):
    """EdgeNode for the flashed config (opens the data file)."""
    from edge.datafile import DataFile
    from edge.node import EdgeNode
    return EdgeNode(cfg["node"], cfg["key"], cfg["downlink_key"], cfg["job"], DataFile(cfg["data"]),
                    cfg["profile"], cfg.get("k_cap"), cfg.get("telemetry", True), cfg.get("board_cost"))


def make(cfg):
    """(node, link) for the flashed config. The node first: its model and gradient arrays,
    the largest blocks a board allocates, go into the heap before the link's small objects.
    (load_config has checked the transport against the profile.)"""
    if cfg["transport"] == "coap":
        why = block_size_mismatch(cfg["profile"], cfg.get("block_size") or (cfg["profile"].get("stack") or {}).get(
            "block_size", 64))
        if why:
            raise ValueError(why)
    node = make_node(cfg)
    return node, make_link(cfg)


def start(path="node.json"):
    """node.json read and checked, Wi-Fi connected if it asks, node and link made: returns
    (node, link, sleep, timeout, rounds), the options the rounds need (the rest of node.json,
    addresses, paths and options, is not held through them)."""
    cfg = load_config(path)
    if cfg.get("wifi"):
        from edge.wifi import connect_wifi  # Wi-Fi boards only load it
        why = connect_wifi(cfg["wifi"])
        if why:
            raise BoardError(why)
    node, link = make(cfg)
    return node, link, cfg.get("sleep"), cfg.get("timeout"), cfg.get("rounds")
