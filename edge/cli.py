"""`cat-edge`: run a CPython edge (e.g. a Raspberry Pi) against a gateway.

    cat-edge --node 3 --key-file node3.key --downlink-key-file gw.key --job 1 \
             --data node-3.catd --profile ieee802154-6lowpan-coap --transport coap --host 192.0.2.1

or `cat-edge --config node.toml` with the same names as keys (key and downlink_key as hex).
Prints one JSON line per round with --json (the demo reads them for its progress bar).
"""

import argparse
import json
import sys

from edge.startup import BoardError, unhex


class CliError(Exception):
    pass


class OneLineParser(argparse.ArgumentParser):
    """argparse with a bad argument reported in one line (what was wrong, and where the usage
    is) instead of the whole usage block; subcommands inherit it (add_subparsers)."""

    def error(self, message):
        self.exit(2, "%s: %s (see %s --help)\n" % (self.prog, message, self.prog))


FIELDS = ("node", "key", "key_file", "downlink_key", "downlink_key_file", "job", "data", "profile",
          "transport", "host", "port", "serial_port", "baud", "k_cap", "rounds", "timeout",
          "username", "password", "ca_file", "no_telemetry")


def _read_key(args, name):
    hexkey = getattr(args, name)
    path = getattr(args, name + "_file")
    if hexkey is None and path is not None:
        try:
            with open(path) as fh:
                hexkey = fh.read().strip()
        except OSError as exc:
            raise CliError("--%s-file: %s" % (name.replace("_", "-"), exc))
    if hexkey is None:
        raise CliError("--%s or --%s-file is required" % (name.replace("_", "-"), name.replace("_", "-")))
    try:
        return unhex(hexkey, "--" + name.replace("_", "-"))
    except BoardError as exc:
        raise CliError(str(exc))


def build_parser():
    from edge import __version__
    p = OneLineParser(prog="cat-edge", description="Run a CPython CAT edge against a gateway.")
    p.add_argument("--version", action="version", version="%(prog)s " + __version__)
    p.add_argument("--config", help="TOML file with any of the options below (command line wins)")
    p.add_argument("--node", type=int, help="node id (0..65535)")
    p.add_argument("--key", help="this node's 32-byte key, hex")
    p.add_argument("--key-file", dest="key_file")
    p.add_argument("--downlink-key", dest="downlink_key", help="the gateway's downlink key, hex")
    p.add_argument("--downlink-key-file", dest="downlink_key_file")
    p.add_argument("--job", type=int, help="job id")
    p.add_argument("--data", help="this node's CATD data file")
    p.add_argument("--profile", help="cost profile name or .toml path")
    p.add_argument("--transport", choices=("coap", "mqtt", "serial"))
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--serial-port", dest="serial_port")
    p.add_argument("--baud", type=int)
    p.add_argument("--k-cap", dest="k_cap", type=int, help="local cap on the candidate count K")
    p.add_argument("--rounds", type=int, help="stop after sending this many updates")
    p.add_argument("--timeout", type=float, help="give up after this many seconds without a new round")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--ca-file", dest="ca_file", help="MQTT over TLS: verify the broker against this CA")
    p.add_argument("--no-telemetry", dest="no_telemetry", action="store_true", default=None,
                   help="leave the 18-byte telemetry field out of updates (LoRaWAN SF12's 51 B frames)")
    p.add_argument("--json", action="store_true", help="print one JSON line per round")
    p.add_argument("--record", metavar="DIR", help="keep a copy of every frame computed (node-<id>-round-<r>.cbor)")
    return p


def _merge_config(args):
    if not args.config:
        return
    import tomllib
    try:
        with open(args.config, "rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise CliError("--config: %s" % exc)
    except tomllib.TOMLDecodeError as exc:
        raise CliError("%s: not valid TOML: %s" % (args.config, exc))
    for k, v in raw.items():
        if k not in FIELDS:
            raise CliError("%s: unknown key %r" % (args.config, k))
        if getattr(args, k, None) is None:
            setattr(args, k, v)


def profiles_for(transport):
    """The shipped link profiles that price a node on this transport (edge.startup.transport_mismatch;
    the paper's models, which price any, left out)."""
    from edge import profile
    from edge.startup import transport_mismatch
    out = []
    for name in profile.list_profiles():
        try:
            p = profile.load_profile(name)
            if p["kind"] == "link" and transport_mismatch(p, transport) is None:
                out.append(name)
        except (ValueError, OSError):
            continue
    return out


def make_link(args, prof=None):
    """The transport args name; over CoAP, Block1/Block2 at the block size and tokens of the
    length of prof's [stack] (a walked profile prices exactly those exchanges)."""
    from edge import pi
    t = args.transport or "coap"
    if t == "coap":
        st = (prof or {}).get("stack") or {}
        return pi.AiocoapLink(args.host or "127.0.0.1", args.port or 5683, args.job,
                              block_size=st.get("block_size"), token_bytes=st.get("token_bytes", 4))
    if t == "mqtt":
        tls = {"ca_certs": args.ca_file} if args.ca_file else None
        return pi.PahoLink(args.host or "127.0.0.1", args.port or 1883, args.job, args.node,
                           args.username, args.password, tls)
    if not args.serial_port:
        raise CliError("--serial-port is required with --transport serial")
    return pi.SerialLink(args.serial_port, args.baud or 115200)


def run(args):
    from edge import datafile, profile
    from edge.node import EdgeNode
    _merge_config(args)
    for name in ("node", "job", "data", "profile"):
        if getattr(args, name) is None:
            raise CliError("--%s is required" % name.replace("_", "-"))
    key = _read_key(args, "key")
    dkey = _read_key(args, "downlink_key")
    try:
        prof = profile.load_profile(args.profile)
    except (ValueError, OSError) as exc:
        raise CliError("--profile: %s" % exc)
    from edge.startup import transport_mismatch
    t = args.transport or "coap"
    why = transport_mismatch(prof, t)
    if why:
        names = profiles_for(t)
        raise CliError("--transport: %s%s" % (why, " (shipped: %s)" % ", ".join(names) if names else ""))
    try:
        data = datafile.DataFile(args.data)
    except ValueError as exc:
        raise CliError("--data: %s" % exc)
    try:
        link = make_link(args, prof)
    except OSError as exc:
        raise CliError("cannot reach the gateway: %s" % exc)
    node = EdgeNode(args.node, key, dkey, args.job, data, prof, k_cap=args.k_cap,
                    telemetry=not args.no_telemetry)
    if args.record:
        import os
        os.makedirs(args.record, exist_ok=True)

        def record(rnd, frame):
            with open(os.path.join(args.record, "node-%d-round-%d.cbor" % (args.node, rnd)), "wb") as fh:
                fh.write(frame)

        node.record = record

    def report(last):
        if args.json:
            print(json.dumps(dict(last, node=args.node)), flush=True)

    try:
        sent = node.run(link, max_rounds=args.rounds, on_round=report, timeout=args.timeout)
    finally:
        close = getattr(link, "close", None)
        if close:
            close()
    if not args.json:
        print("node %d: sent %d updates, model version %d (%d deltas, %d snapshots)"
              % (args.node, sent, node.version, node.deltas, node.snapshots))
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except CliError as exc:
        print("cat-edge: %s" % exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # EdgeError, FrameError, transport errors: one line, not a traceback
        name = type(exc).__name__
        if name in ("EdgeError", "FrameError", "VersionMismatch", "CoapError", "CoapTimeout",
                    "ConnectionError", "DataFileError", "ProfileError", "LinkError"):
            print("cat-edge: %s: %s" % (name, exc), file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
