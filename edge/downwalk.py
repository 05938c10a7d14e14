# The downlink walk: what fetching an n-byte message costs a node on a walked profile (the
# uplink walk and the frame diagram are in edge/onair.py). Host-side only: the gateway's
# energy budgets price the downlink, a board never does, so it does not load this.

from edge.onair import Walk, block_runs, digits, opt_len, szx_of, uint_len

_OPT_URI_PATH = 11  # RFC 7252 §5.10, RFC 7959 §2.1 (as in edge/coap.py and edge/onair.py)
_OPT_CF = 12
_OPT_URI_QUERY = 15
_OPT_BLOCK2 = 23


def path_len(segs_lens, first_delta):
    """Bytes of repeated options (Uri-Path, Uri-Query) with these value lengths."""
    n = 0
    d = first_delta
    for ln in segs_lens:
        n += opt_len(d, ln)
        d = 0
    return n


def coap_down(w, n, path_lens, query_lens, cf=60):
    """Walk a confirmable GET fetching an n-byte body (Block2 when n > block_size; the first
    request announces the block size, RFC 7959 §2.4), path and query given as segment lengths."""
    st = w.st
    tk = 4 + st["token_bytes"]
    req = tk + path_len(path_lens, _OPT_URI_PATH)
    last = _OPT_URI_PATH
    if query_lens:
        req += path_len(query_lens, _OPT_URI_QUERY - last)
        last = _OPT_URI_QUERY
    bs = st["block_size"]
    szx = szx_of(bs)
    nb = (n + bs - 1) // bs if n > bs else 1
    cfl = opt_len(_OPT_CF, uint_len(cf))
    for num, cnt in block_runs(nb):
        more = num < nb - 1
        w.exchanges += cnt
        q = req + opt_len(_OPT_BLOCK2 - last, uint_len((num << 4) | szx))
        w.datagram(q, True, cnt, ("GET Block2", num, cnt, 0))
        body = bs if more else n - num * bs
        rep = tk + cfl
        if nb > 1:
            rep += opt_len(_OPT_BLOCK2 - _OPT_CF, uint_len((num << 4) | (8 if more else 0) | szx))
        w.datagram(rep + 1 + body, False, cnt, ("2.05", num, cnt, body))
    return w.finish()


def walk_down(profile, n, job=None, emit=None):
    """The node fetches an n-byte message on a walked profile (CoAP: GET /cat/<job>/delta?r=NN
    block by block, a two-digit round assumed; UDP: one datagram to it): its Walk."""
    st = profile["stack"]
    w = Walk(st, profile["radio"]["bit_rate"], emit)
    if st["transport"] == "coap":
        j = st["job_digits"] if job is None else digits(job)
        return coap_down(w, n, (3, j, 5), (4,))
    w.exchanges += 1
    w.datagram(n, False, 1, ("UDP", -1, 1, n))
    return w.finish()
