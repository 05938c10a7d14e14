# CPython: block-size variants of the walked CoAP profiles. `load_profile("<base>-b<B>")`
# (edge/profile.py) gives the profile <base> with B-byte Block1 blocks, without a file: only the
# block size differs, so a variant cannot drift from its base. Its own module (host only, not
# flashed) so that edge/stackcheck.py still validates a profile inside a small MicroPython heap.
# Why names and not files: cost_profiles/README.md, "Block sizes".

from edge.stackcheck import BLOCK_SIZES


def split_variant(name):
    """(base, B) when name reads '<base>-b<B>' (B digits, base not a path), else None."""
    i = name.rfind("-b")
    if i < 1 or not name[i + 2:].isdigit() or name.endswith(".toml") or "/" in name or "\\" in name:
        return None
    return name[:i], int(name[i + 2:])


def load_variant(name, missing, find_profile, load):
    """load_profile(name) for a name with no file: the variant '<base>-b<B>' of a profile <base>
    that has one, else `missing` (find_profile's ProfileError) raised again, saying how variants
    are named. find_profile, load: edge.profile's (passed in: edge.profile imports this module)."""
    err = type(missing)
    v = split_variant(name)
    try:
        base = find_profile(v[0]) if v else None
    except err:
        base = None
    if base is not None:
        return block_variant(load(base), v[1], err)
    if "known:" in str(missing):
        raise err("%s; a walked CoAP profile is also named <name>-b<B> for Block1 blocks of B = 16..1024 B"
                  % missing) from None
    raise missing


def block_variant(prof, b, err):
    """The walked CoAP profile prof with Block1 blocks of b bytes, named '<base>-b<b>' (base:
    prof's name without its own '-b<B>'; prof itself when b is its own block size): what
    `load_profile("<name>-b<b>")` returns, and `profile --block-size` prices. Only the block size differs, so the variant needs no file and cannot drift from its base. err: the
    exception class to raise (edge.profile.ProfileError; passed in: no import cycle)."""
    st = prof.get("stack")
    own = "-b%d" % st["block_size"] if st and "block_size" in st else ""
    base = prof["name"][:-len(own)] if own and prof["name"].endswith(own) else prof["name"]
    name = "%s-b%d" % (base, b)    # a variant's variant is named after the base
    if not st or st["transport"] != "coap":
        raise err("%s: name: %s sends no CoAP Block1 (no [stack] with transport = 'coap'), so it has no "
                  "-b<B> block-size variants" % (name, prof["name"]))
    if b not in BLOCK_SIZES:
        raise err("%s: name: -b%d: the block size must be one of %s B (RFC 7959 §2.2)"
                  % (name, b, ", ".join(str(x) for x in BLOCK_SIZES)))
    if b == st["block_size"]:
        return prof
    out = dict(prof)
    out["name"] = name
    out["stack"] = dict(st)
    out["stack"]["block_size"] = b
    out["sources"] = dict(prof["sources"])
    out["sources"]["stack.block_size"] = (
        "the name's -b%d: Block1 blocks of %d B (SZX %d, RFC 7959 §2.2), the block size the node's client "
        "must use (flash --block-size %d; cat-edge takes it from the profile); everything else is %s's"
        % (b, b, BLOCK_SIZES.index(b), b, prof["name"]))
    # the base's text with its block size replaced where it names it (" 64 B block")
    out["description"] = "%s with Block1 blocks of %d B instead of %d B: %s" % (
        prof["name"], b, st["block_size"], prof["description"].replace(" %d B" % st["block_size"], " %d B" % b))
    return out
