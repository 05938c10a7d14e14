# Board, battery and compute-calibration profiles: validate a profile dict and normalise it;
# load, list and find the TOML files in <cost_profiles>/boards, /batteries, /calibration.
# Schema: cost_profiles/README.md ("Board, battery and compute profiles").
#
# The same validator style as edge/profile.py (link profiles), whose checker it reuses with
# its own unit table: every number is {value, unit, source}; errors name the file and the
# field. `validate` needs only the core language (runs on MicroPython too); `load` needs
# tomllib (CPython). Boards never import this module: `flash` sends them plain numbers.

from edge.profile import SCHEMA, _Check, _keys, check_head, find_profile, list_profiles, profiles_dir
from edge.profile import load as _load

KINDS = ("board", "battery", "compute")
RUNTIMES = ("micropython", "cpython")
SUBDIR = {"board": "boards", "battery": "batteries", "compute": "calibration"}

# accepted units of each quantity; currents normalise to A, voltages to V, times to s,
# frequencies to Hz, ratios to a fraction, charges to mAh, rates to a fraction per year
UNITS = {
    "current": ("A", "mA", "uA"),
    "voltage": ("V", "mV"),
    "time": ("s", "ms", "us", "h", "day", "year"),
    "freq": ("Hz", "kHz", "MHz"),
    "ratio": ("1", "%"),
    "charge": ("mAh", "Ah"),
    "rate": ("%/year", "%/month", "1/year"),
    "size": ("B", "KiB", "MiB"),
    "byterate": ("B/s", "kB/s", "MB/s", "KiB/s", "MiB/s"),
    "cycles": ("cycles",),
}
YEAR_S = 31557600  # a Julian year (365.25 days), the year of "per year" and "year"
_SCALE = {"mA": (1, 1000), "uA": (1, 1000000), "mV": (1, 1000), "ms": (1, 1000), "us": (1, 1000000),
          "h": (3600, 1), "day": (86400, 1), "year": (YEAR_S, 1), "kHz": (1000, 1), "MHz": (1000000, 1),
          "%": (1, 100), "Ah": (1000, 1), "%/year": (1, 100), "%/month": (12, 100),
          "KiB": (1024, 1), "MiB": (1048576, 1), "kB/s": (1000, 1), "MB/s": (1000000, 1),
          "KiB/s": (1024, 1), "MiB/s": (1048576, 1)}

_TOP = {"board": ("schema", "name", "kind", "description", "default_for", "mcu", "sleep", "deep_sleep", "supply",
                  "storage"),
        "battery": ("schema", "name", "kind", "description", "cell"),
        "compute": ("schema", "name", "kind", "description", "host", "anchor", "seconds")}
_MCU = ("clock freq >0", "active_current current >0", "wait_current current >=0", "speed ratio >0")
_SLEEP = ("current current >=0", "wake_time time >=0", "wake_current current >=0")
# optional [deep_sleep] of a board: what machine.deepsleep(ms) does on its MicroPython port, the
# sleep of a node that keeps its state in a file between rounds (edge/sleep.py): the same
# quantities as [sleep] (the wake-up is a reset: a boot), or `none`, saying why the port has no
# timed deep sleep (aggregator/lab/boardbudget.py deep_sleep_state refuses such a board)
_DEEP_NONE = "none"
_CELL = ("capacity charge >0", "voltage voltage >0", "usable_fraction ratio >0",
         "self_discharge rate >=0", "shelf_life time >0")
_ANCHOR = ("board_seconds time >0", "host_seconds time >0")
_SECONDS = ("per_nnz time >=0", "per_dim time >=0", "per_candidate time >=0", "per_entry time >=0",
            "fixed time >=0")
# optional: the CPU side of a deep-sleeping node's state file (firmware_tests/statecost.py)
_STATE_SECONDS = ("state_per_byte time >=0", "state_fixed time >=0")
# optional [storage] of a board: the non-volatile memory a deep-sleeping node keeps its state
# file in (edge/sleep.py), priced by aggregator/lab/boardbudget.py state_round
_STORAGE = ("block_size size int>0", "page_size size int>0", "erase_time time >0", "program_time time >0",
            "read_rate byterate >0", "write_current current >=0", "read_current current >=0")
# optional in [storage]: the file system's size and the erase cycles a block endures (whether the
# state file fits, and how long the flash lasts: aggregator/lab/statefile.py)
_STORAGE_OPT = ("fs_size size int>0", "endurance cycles >0")


def _section(c, raw, key, texts, spec, optional=()):
    t = c.table(raw, key, key, True, list(texts) + _keys(spec) + _keys(optional))
    out = c.numbers(t, key, spec)
    for o in optional:
        if o.split()[0] in t:
            out[o.split()[0]] = c.number(t, key, o)
    for k in texts:
        out[k] = c.text(t, key + "." + k, k)
    return out


# Check a raw board/battery/compute profile (parsed TOML or JSON); return the normalised dict.
# filename labels errors and, when given, must have `name` as its stem. Raises ProfileError.
def validate(raw, filename=None, kind=None):
    c = _Check("<profile>" if filename is None else str(filename), UNITS, _SCALE)
    if not isinstance(raw, dict):
        c.fail("(top)", "must be a table")
    k = c.text(raw, "kind", "kind", KINDS)
    if kind is not None and k != kind:
        c.fail("kind", "%r where a %s profile is expected" % (k, kind))
    c.table({"": raw}, "", "(top)", True, _TOP[k])
    name = check_head(c, raw, filename)
    out = {"schema": SCHEMA, "name": name, "kind": k,
           "description": c.text(raw, "description", "description"), "sources": c.sources}
    if k == "board":
        d = raw.get("default_for", [])
        if not isinstance(d, list) or [x for x in d if not isinstance(x, str) or not x]:
            c.fail("default_for", "must be a list of link profile name prefixes, got %r" % (d,))
        out["default_for"] = d
        mcu = _section(c, raw, "mcu", ("name", "runtime"), _MCU)
        if mcu["runtime"] not in RUNTIMES:
            c.fail("mcu.runtime", "%r is not one of: %s" % (mcu["runtime"], ", ".join(RUNTIMES)))
        out["mcu"] = mcu
        out["sleep"] = _section(c, raw, "sleep", ("state",), _SLEEP)
        if "deep_sleep" in raw:
            ds = raw["deep_sleep"]
            if isinstance(ds, dict) and _DEEP_NONE in ds:
                c.table(raw, "deep_sleep", "deep_sleep", True, (_DEEP_NONE,))
                out["deep_sleep"] = {_DEEP_NONE: c.text(ds, "deep_sleep." + _DEEP_NONE, _DEEP_NONE)}
            else:
                out["deep_sleep"] = _section(c, raw, "deep_sleep", ("state",), _SLEEP)
        out["supply"] = _section(c, raw, "supply", (), ("voltage voltage >0",))
        if "storage" in raw:
            st = _section(c, raw, "storage", ("name", "filesystem"), _STORAGE, _STORAGE_OPT)
            if st["page_size"] > st["block_size"]:
                c.fail("storage.page_size", "%r B is larger than the block (%r B)" % (st["page_size"], st["block_size"]))
            out["storage"] = st
    elif k == "battery":
        cell = _section(c, raw, "cell", ("chemistry",), _CELL)
        if cell["usable_fraction"] > 1:
            c.fail("cell.usable_fraction", "must be at most 1 (100 %%), got %r" % (cell["usable_fraction"],))
        if cell["self_discharge"] >= 1:
            c.fail("cell.self_discharge", "must be below 100 %% per year, got %r" % (cell["self_discharge"],))
        out["cell"] = cell
    else:
        out["host"] = _section(c, raw, "host", ("cpu", "interpreter"), ())
        out["anchor"] = _section(c, raw, "anchor", ("board", "code"), _ANCHOR)
        out["seconds"] = _section(c, raw, "seconds", (), _SECONDS, _STATE_SECONDS)
    return out


# ------------------------------------------------------------------ files

def kind_dir(kind):
    return profiles_dir() + "/" + SUBDIR[kind]


# Sorted names (file stems) of the *.toml files of one kind.
def list_kind(kind):
    return list_profiles(kind_dir(kind))


def find(kind, name):
    return find_profile(name, kind_dir(kind), kind + " profile")


# Parse a TOML board/battery/compute profile (CPython: needs tomllib); return validate()'s dict.
def load(kind, name_or_path):
    return _load(find(kind, name_or_path), lambda raw, path: validate(raw, path, kind))


def load_board(name_or_path):
    return load("board", name_or_path)


def load_battery(name_or_path):
    return load("battery", name_or_path)


def load_calibration(name_or_path="micropython32"):
    return load("compute", name_or_path)


# The board whose default_for holds the longest prefix of the link profile's name (None if none).
def board_for_link(link_name):
    best = None
    n = -1
    for b in list_kind("board"):
        for pre in load_board(b)["default_for"]:
            if link_name.startswith(pre) and len(pre) > n:
                best, n = b, len(pre)
    return best
