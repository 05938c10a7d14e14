# Cost profiles: validate a profile dict and normalise it; load, list and find
# the TOML files in <repo>/cost_profiles. Schema: cost_profiles/README.md.
#
# Runs unchanged on MicroPython and CPython. `validate` needs only the core
# language, so a board can receive a profile as JSON and check it; `load`
# needs tomllib (CPython) and imports it inside. Kept compact on purpose: the
# source must compile inside a 64 KiB MicroPython heap.

import os

from edge.lora import check_params as check_lora

SCHEMA = 1


# A malformed profile; the message is '<file>: <dotted.field>: <problem>'.
class ProfileError(ValueError):
    pass


# accepted units of each quantity; sizes normalise to bytes, times to s,
# rates to bit/s, powers to W, frequencies to Hz
UNITS = {
    "size": ("B", "bit"),
    "count": ("packet",),
    "time": ("s", "ms", "us"),
    "rate": ("bit/s", "kbit/s"),
    "power": ("W", "mW"),
    "freq": ("Hz", "kHz"),
    "ratio": ("1",),
    "symbol": ("symbol",),
}
# unit -> (multiplier, divisor); units not listed are already normalised
_SCALE = {"bit": (1, 8), "ms": (1, 1000), "us": (1, 1000000),
          "kbit/s": (1000, 1), "mW": (1, 1000), "kHz": (1000, 1)}

# the cost metrics CAT can maximise against (computed by edge.cost.LinkCost.metric and
# edge.papercost.paper_cost); the one list of their names
LINK_METRICS = ("bytes", "bits", "packets", "seconds", "joules")
PAPER_METRICS = ("bits", "bytes", "packets")

# "key quantity rule" in check order; rule: >=0, >0, or int>=0 / int>0 (whole numbers)
_MESSAGE = ("overhead_bytes size >=0", "max_bytes size >0",
            "extra_packets count int>=0", "extra_packet_bytes size >=0")
_PACKET = ("first_payload_bytes size >0", "next_payload_bytes size >0",
           "first_overhead_bytes size >=0", "next_overhead_bytes size >=0",
           "ack_bytes size >=0", "fixed_seconds time >=0")
_RADIO = ("bit_rate rate >0", "tx_power power >=0", "rx_power power >=0")
_LORA = ("spreading_factor ratio int>0", "bandwidth freq >0",
         "coding_rate ratio int>0", "preamble_symbols symbol int>=0")
_FLAGS = ("explicit_header", "crc", "low_data_rate_optimize")
# optional, together: the class A receive windows after each uplink (edge.lora.rx_windows)
_RXW = ("rx2_spreading_factor ratio int>0", "min_rx_symbols symbol int>0", "max_rx_error time >=0")
_ENTRY = ("value", "unit", "source")
_INFS = (float("inf"), float("-inf"))
_TOP = ("schema", "name", "kind", "description", "default_metric",
        "message", "packet", "radio", "lora", "limits", "paper", "stack")


def _keys(spec):
    return [s.split()[0] for s in spec]


class _Check:
    # units/scale: the accepted units of each quantity and their normalisation (other
    # profile kinds, e.g. board and battery profiles, pass their own tables)
    def __init__(self, label, units=None, scale=None):
        self.label = label
        self.sources = {}
        self.units = units or UNITS
        self.scale = scale or _SCALE

    def fail(self, field, problem):
        raise ProfileError("%s: %s: %s" % (self.label, field, problem))

    # raw[key] as a dict whose keys are all in allowed (None if absent and optional).
    def table(self, raw, key, field, required, allowed):
        if key not in raw:
            if required:
                self.fail(field, "missing")
            return None
        t = raw[key]
        if not isinstance(t, dict):
            self.fail(field, "must be a table of: %s; got %r" % (", ".join(allowed), t))
        for k in sorted([k for k in t]):  # no dict order on MicroPython
            if k not in allowed:
                self.fail((field + "." if key else "") + str(k),
                          "unknown key (allowed: %s)" % ", ".join(allowed))
        return t

    # Check the {value, unit, source} entry described by spec; return it normalised.
    def number(self, t, prefix, spec):
        key, qty, rule = spec.split()
        field = prefix + "." + key
        e = self.table(t, key, field, True, _ENTRY)
        for k in _ENTRY:
            if k not in e:
                self.fail(field, "missing " + k)
        v = e["value"]
        u = e["unit"]
        s = e["source"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in _INFS:
            self.fail(field, "value must be a finite number, got %r" % (v,))
        if u not in self.units[qty]:
            self.fail(field, "unit %r not accepted (use %s)" % (u, " or ".join(self.units[qty])))
        if not isinstance(s, str) or not s.strip():
            self.fail(field, "source must be a non-empty string")
        if v < 0 or (v == 0 and rule[-2:] == ">0"):
            self.fail(field, "must be %s, got %r" % (rule.replace("int", ""), v))
        if rule[:3] == "int" and v != int(v):
            self.fail(field, "must be a whole number, got %r" % (v,))
        mul, div = self.scale.get(u, (1, 1))
        self.sources[field] = s
        return float(v) * mul / div

    def numbers(self, t, prefix, specs):
        d = {}
        for spec in specs:
            d[spec.split()[0]] = self.number(t, prefix, spec)
        return d

    def text(self, t, field, key, choices=None):
        if key not in t:
            self.fail(field, "missing")
        v = t[key]
        if not isinstance(v, str) or not v.strip():
            self.fail(field, "must be a non-empty string, got %r" % (v,))
        if choices and v not in choices:
            self.fail(field, "%r is not one of: %s" % (v, ", ".join(choices)))
        return v


def _stem(path):
    base = path.replace("\\", "/").split("/")[-1]
    i = base.rfind(".")
    return base[:i] if i > 0 else base


# Check a raw profile dict (parsed TOML or JSON); return the normalised dict.
#
# filename labels errors and, when given, must have `name` as its stem.
# Raises ProfileError naming the first bad field.
def validate(raw, filename=None):
    c = _Check("<profile>" if filename is None else str(filename))
    c.table({"": raw}, "", "(top)", True, _TOP)
    name = check_head(c, raw, filename)
    kind = c.text(raw, "kind", "kind", ("link", "paper"))
    out = {"schema": SCHEMA, "name": name, "kind": kind,
           "description": c.text(raw, "description", "description"),
           "default_metric": c.text(raw, "default_metric", "default_metric",
                                    LINK_METRICS if kind == "link" else PAPER_METRICS),
           "message": None, "packet": None, "radio": None, "lora": None, "paper": None,
           "stack": None, "sources": c.sources}
    for k in ("paper",) if kind == "link" else ("message", "packet", "radio", "lora", "stack"):
        if k in raw:
            c.fail(k, "not allowed when kind = %r" % kind)
    if kind == "link":
        _link(c, raw, out)
    else:
        from edge.stackcheck import check_paper  # its module: this one must compile in 64 KiB
        check_paper(c, raw, out)
    t = c.table(raw, "limits", "limits", False, ("duty_cycle",))
    duty = None
    if t is not None and "duty_cycle" in t:
        duty = c.number(t, "limits", "duty_cycle ratio >0")
        if duty > 1:
            c.fail("limits.duty_cycle", "must be at most 1, got %r" % (duty,))
    out["limits"] = {"duty_cycle": duty}
    return out


# The schema number and the name (the file's stem when there is a file); returns the name.
# Every kind of profile starts so (edge/hwprofile.py too).
def check_head(c, raw, filename):
    v = raw.get("schema")
    if type(v) is not int or v != SCHEMA:
        c.fail("schema", "must be the integer %d, got %r" % (SCHEMA, v))
    name = c.text(raw, "name", "name")
    for ch in name:
        if not ("a" <= ch <= "z" or "0" <= ch <= "9" or ch == "-"):
            c.fail("name", "%r: use only lowercase letters, digits and '-'" % (name,))
    if filename is not None and name != _stem(c.label):
        c.fail("name", "%r must equal the file stem %r" % (name, _stem(c.label)))
    return name


def _link(c, raw, out):
    if "stack" in raw:
        # a walked profile: [stack] says what goes on air, [message] only how large a frame may be
        if "packet" in raw:
            c.fail("packet", "not allowed with [stack] (the walk counts the frames)")
        msg = c.numbers(c.table(raw, "message", "message", True, ("max_bytes",)), "message", _MESSAGE[1:2])
        pk = None
        from edge.stackcheck import check_stack  # its own module: this one must compile in 64 KiB
        out["stack"] = check_stack(c, raw)
    else:
        t = c.table(raw, "message", "message", True, _keys(_MESSAGE) + ["replies_acked", "transport"])
        msg = c.numbers(t, "message", _MESSAGE)
        if "transport" in t:  # the node transport priced (edge/startup.py transport_mismatch)
            msg["transport"] = c.text(t, "message.transport", "transport", ("coap", "mqtt", "serial"))
        if msg["extra_packets"] > 0 and msg["extra_packet_bytes"] == 0:
            c.fail("message.extra_packet_bytes", "must be > 0 when extra_packets > 0")
        if "replies_acked" in t:
            from edge.stackcheck import check_replies  # its module: this one must compile in 64 KiB
            check_replies(c, t, msg)
        pk = c.numbers(c.table(raw, "packet", "packet", True, _keys(_PACKET)), "packet", _PACKET)
    t = c.table(raw, "radio", "radio", True, ["name"] + _keys(_RADIO))
    rname = c.text(t, "radio.name", "name")
    radio = c.numbers(t, "radio", _RADIO)
    for k in ("tx_power", "rx_power"):
        if rname == "none" and radio[k] != 0:
            c.fail("radio." + k, "must be 0 when radio.name = 'none'")
        if rname != "none" and radio[k] == 0:
            c.fail("radio." + k, "must be > 0 (only radio.name = 'none' may have zero power)")
    if rname == "none" and out["default_metric"] == "joules":
        c.fail("default_metric", "'joules' needs a radio (radio.name is 'none')")
    radio["name"] = rname
    out["message"] = msg
    out["packet"] = pk
    out["radio"] = radio
    t = c.table(raw, "lora", "lora", False, _keys(_LORA) + list(_FLAGS) + _keys(_RXW) + ["rx_bandwidth", "region",
                                                                                     "uplink_dwell_time"])
    if t is None:
        return
    lora = c.numbers(t, "lora", _LORA)
    if [k for k in _keys(_RXW) if k in t]:
        lora.update(c.numbers(t, "lora", _RXW))
        if not 6 <= lora["rx2_spreading_factor"] <= 12:
            c.fail("lora.rx2_spreading_factor", "must be 6..12, got %g" % lora["rx2_spreading_factor"])
        if "rx_bandwidth" in t:  # optional: the downlink's bandwidth when not the uplink's (US915)
            lora["rx_bandwidth"] = c.number(t, "lora", "rx_bandwidth freq >0")
    for k in _FLAGS:
        if k not in t or not isinstance(t[k], bool):
            c.fail("lora." + k, "must be true or false")
        lora[k] = t[k]
    bad = check_lora(lora, pk)
    if bad:
        c.fail(bad[0], bad[1])
    if "region" in t or "uplink_dwell_time" in t:  # optional: max_bytes held to the region's limit
        from edge.regions import check_region  # its module: this one must compile in 64 KiB
        check_region(c, t, lora, out["message"], pk)
    out["lora"] = lora



# ------------------------------------------------------------------ files

# $CAT_COST_PROFILES; else the profiles installed with the package (CPython only: a
# wheel carries them as edge/cost_profiles, found through importlib.resources); else
# <repo>/cost_profiles beside the edge package (a source checkout, a board's filesystem).
def profiles_dir():
    env = os.getenv("CAT_COST_PROFILES") if hasattr(os, "getenv") else None
    if env:
        return env
    try:
        from importlib.resources import files
    except ImportError:  # MicroPython has no importlib.resources
        files = None
    if files is not None:
        packaged = files("edge") / "cost_profiles"
        if packaged.is_dir():
            return str(packaged)
    here = __file__.replace("\\", "/")
    if here[:1] != "/" and ":" not in here:
        here = os.getcwd() + "/" + here
    return here.rsplit("/", 2)[0] + "/cost_profiles"


# Sorted names (file stems) of the *.toml files in dirpath (default profiles_dir()).
def list_profiles(dirpath=None):
    d = str(dirpath or profiles_dir())
    try:
        return sorted([n[:-5] for n in os.listdir(d) if n.endswith(".toml")])
    except OSError:
        raise ProfileError("%s: (dir): cannot list the profile directory" % d)


# Path of <dirpath>/<name>.toml (default profiles_dir()), or name itself if it is a path to
# a .toml file; what names the profile kind in the error.
def find_profile(name, dirpath=None, what="profile"):
    name = str(name)
    path = name
    d = str(dirpath or profiles_dir())
    if not (name.endswith(".toml") or "/" in name or "\\" in name):
        path = d + "/" + name + ".toml"
    try:
        os.stat(path)
    except OSError:
        if path == name:
            raise ProfileError("%s: (file): no such file" % name)
        raise ProfileError("%s: name: no %s %s (known: %s)" % (name, what, path, ", ".join(list_profiles(d))))
    return path


# Parse a TOML profile (CPython: needs tomllib); return check(raw, path), validate() unless
# another kind's validator is given.
def load(path, check=None):
    import tomllib

    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise ProfileError("%s: (file): cannot read: %s" % (path, e.strerror or e))
    except tomllib.TOMLDecodeError as e:
        raise ProfileError("%s: (toml): %s" % (path, str(e).splitlines()[0]))
    return (check or validate)(raw, str(path))


# load(find_profile(name_or_path)); a name '<base>-b<B>' with no file of its own is the walked
# CoAP profile <base> with B-byte Block1 blocks (edge.variant, CPython).
def load_profile(name_or_path):
    try:
        path = find_profile(name_or_path)
    except ProfileError as e:
        from edge.variant import load_variant
        return load_variant(str(name_or_path), e, find_profile, load)
    return load(path)
